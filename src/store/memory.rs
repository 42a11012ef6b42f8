//! A storage driver in memory: the registry's store, its collector and the
//! driver conformance suite run on it in unit tests with no disk, and it keeps
//! the [`Driver`] contract honest beside [`super::Filesystem`] (directories
//! are only prefixes here, as in an object store).

use super::{BlobReader, Driver, FileWriter, Stat};
use crate::error::{Error, Kind, Result};
use std::collections::BTreeMap;
use std::io::{self, Write};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

type Files = Arc<Mutex<BTreeMap<String, (Vec<u8>, SystemTime)>>>;

/// Files by path; a directory is any prefix ending in `/` of a file's path.
#[derive(Default, Clone)]
pub struct Memory {
    files: Files,
}

fn not_found(path: &str) -> Error {
    Error::new(Kind::NotFound, format!("{path}: no such file"))
}

/// The same checks as the filesystem driver: absolute, no empty, `.` or `..`
/// component, no NUL.
fn check(path: &str) -> Result<String> {
    let rel = path
        .strip_prefix('/')
        .ok_or_else(|| Error::internal(format!("storage path {path:?} is not absolute")))?;
    if rel
        .split('/')
        .any(|c| c.is_empty() || c == "." || c == ".." || c.contains('\0'))
    {
        return Err(Error::invalid(format!(
            "storage path {path:?} has an unsafe component"
        )));
    }
    Ok(path.to_string())
}

impl Memory {
    pub fn new() -> Memory {
        Memory::default()
    }

    /// Set a file's mtime (tests of the collector's grace).
    pub fn set_modified(&self, path: &str, t: SystemTime) -> Result<()> {
        let mut f = self.files.lock().unwrap();
        let e = f.get_mut(path).ok_or_else(|| not_found(path))?;
        e.1 = t;
        Ok(())
    }
}

struct MemWriter {
    files: Files,
    path: String,
    size: u64,
}

impl Write for MemWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut f = self.files.lock().unwrap();
        let e = f
            .entry(self.path.clone())
            .or_insert_with(|| (Vec::new(), SystemTime::now()));
        e.0.extend_from_slice(buf);
        e.1 = SystemTime::now();
        self.size = e.0.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl FileWriter for MemWriter {
    fn size(&self) -> u64 {
        self.size
    }
    fn commit(&mut self) -> Result<()> {
        Ok(())
    }
}

impl Driver for Memory {
    fn get(&self, path: &str) -> Result<Vec<u8>> {
        let p = check(path)?;
        self.files
            .lock()
            .unwrap()
            .get(&p)
            .map(|e| e.0.clone())
            .ok_or_else(|| not_found(path))
    }

    fn put(&self, path: &str, data: &[u8]) -> Result<()> {
        let p = check(path)?;
        self.files
            .lock()
            .unwrap()
            .insert(p, (data.to_vec(), SystemTime::now()));
        Ok(())
    }

    fn reader(&self, path: &str, offset: u64) -> Result<(BlobReader, u64)> {
        let data = self.get(path)?;
        let size = data.len() as u64;
        let start = (offset as usize).min(data.len());
        Ok((Box::new(io::Cursor::new(data[start..].to_vec())), size))
    }

    fn writer(&self, path: &str, append: bool) -> Result<Box<dyn FileWriter>> {
        let p = check(path)?;
        let mut f = self.files.lock().unwrap();
        let e = f
            .entry(p.clone())
            .or_insert_with(|| (Vec::new(), SystemTime::now()));
        if !append {
            e.0.clear();
        }
        let size = e.0.len() as u64;
        Ok(Box::new(MemWriter {
            files: self.files.clone(),
            path: p,
            size,
        }))
    }

    fn stat(&self, path: &str) -> Result<Stat> {
        let p = check(path)?;
        let f = self.files.lock().unwrap();
        if let Some((d, t)) = f.get(&p) {
            return Ok(Stat {
                size: d.len() as u64,
                modified: *t,
                is_dir: false,
            });
        }
        let prefix = format!("{p}/");
        match f.range(prefix.clone()..).next() {
            Some((k, (_, t))) if k.starts_with(&prefix) => Ok(Stat {
                size: 0,
                modified: *t,
                is_dir: true,
            }),
            _ => Err(not_found(path)),
        }
    }

    fn list(&self, path: &str) -> Result<Vec<String>> {
        let p = check(path)?;
        let prefix = format!("{p}/");
        let f = self.files.lock().unwrap();
        let mut out: Vec<String> = Vec::new();
        for k in f.range(prefix.clone()..).map(|(k, _)| k) {
            let Some(rest) = k.strip_prefix(&prefix) else {
                break;
            };
            let child = rest.split('/').next().unwrap_or(rest);
            // Hidden names stay hidden, as on the filesystem.
            if !child.starts_with('.') && out.last().is_none_or(|l| l != child) {
                out.push(child.to_string());
            }
        }
        Ok(out)
    }

    fn rename(&self, from: &str, to: &str) -> Result<()> {
        let (f, t) = (check(from)?, check(to)?);
        let mut files = self.files.lock().unwrap();
        if let Some(e) = files.remove(&f) {
            files.insert(t, e);
            return Ok(());
        }
        let prefix = format!("{f}/");
        let moved: Vec<String> = files
            .range(prefix.clone()..)
            .map(|(k, _)| k.clone())
            .take_while(|k| k.starts_with(&prefix))
            .collect();
        if moved.is_empty() {
            return Err(not_found(from));
        }
        for k in moved {
            let e = files.remove(&k).expect("listed");
            files.insert(format!("{t}/{}", &k[prefix.len()..]), e);
        }
        Ok(())
    }

    fn delete(&self, path: &str) -> Result<()> {
        let p = check(path)?;
        let mut files = self.files.lock().unwrap();
        files.remove(&p);
        let prefix = format!("{p}/");
        let gone: Vec<String> = files
            .range(prefix.clone()..)
            .map(|(k, _)| k.clone())
            .take_while(|k| k.starts_with(&prefix))
            .collect();
        for k in gone {
            files.remove(&k);
        }
        Ok(())
    }

    fn touch(&self, path: &str) -> Result<()> {
        let p = check(path)?;
        let mut f = self.files.lock().unwrap();
        let e = f.get_mut(&p).ok_or_else(|| not_found(path))?;
        e.1 = SystemTime::now();
        Ok(())
    }

    fn truncate(&self, path: &str, len: u64) -> Result<()> {
        let p = check(path)?;
        let mut f = self.files.lock().unwrap();
        let e = f.get_mut(&p).ok_or_else(|| not_found(path))?;
        e.0.truncate(len as usize);
        Ok(())
    }
}

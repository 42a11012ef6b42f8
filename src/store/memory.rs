//! A storage driver in memory: the registry's store, its collector and the
//! driver conformance suite run on it in unit tests with no disk, and it keeps
//! the [`Driver`] contract honest beside [`super::Filesystem`] (directories
//! are only prefixes here, as in an object store).

use super::{BlobReader, Driver, Stat};
use crate::error::{Error, Kind, Result};
use std::collections::BTreeMap;
use std::io::{self, Read};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

type Files = Arc<Mutex<BTreeMap<String, (Vec<u8>, SystemTime)>>>;

/// Files by path; a directory is any prefix ending in `/` of a file's path.
#[derive(Default, Clone)]
pub struct Memory {
    files: Files,
    /// Behave as storage other hosts share (replicas on one bucket).
    shared: bool,
}

fn not_found(path: &str) -> Error {
    Error::new(Kind::NotFound, format!("{path}: no such file"))
}

/// The same checks as the filesystem driver: absolute, no empty, `.` or `..`
/// component, no NUL.
pub(crate) fn check_path(path: &str) -> Result<String> {
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

    /// A memory store that says it is shared, so the store takes the paths
    /// it takes on a bucket (leases, markers, catalog marks).
    pub fn new_shared() -> Memory {
        Memory {
            shared: true,
            ..Memory::default()
        }
    }

    /// Set a file's mtime (tests of the collector's grace).
    pub fn set_modified(&self, path: &str, t: SystemTime) -> Result<()> {
        let mut f = self.files.lock().unwrap();
        let e = f.get_mut(path).ok_or_else(|| not_found(path))?;
        e.1 = t;
        Ok(())
    }
}

impl Driver for Memory {
    fn get(&self, path: &str) -> Result<Vec<u8>> {
        let p = check_path(path)?;
        self.files
            .lock()
            .unwrap()
            .get(&p)
            .map(|e| e.0.clone())
            .ok_or_else(|| not_found(path))
    }

    fn put(&self, path: &str, data: &[u8]) -> Result<()> {
        let p = check_path(path)?;
        self.files
            .lock()
            .unwrap()
            .insert(p, (data.to_vec(), SystemTime::now()));
        Ok(())
    }

    fn swap(&self, path: &str, old: &[u8], new: &[u8]) -> Result<bool> {
        let p = check_path(path)?;
        let mut f = self.files.lock().unwrap();
        match f.get_mut(&p) {
            Some(e) if e.0 == old => {
                *e = (new.to_vec(), SystemTime::now());
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    fn reader(&self, path: &str, offset: u64) -> Result<(BlobReader, u64)> {
        let data = self.get(path)?;
        let size = data.len() as u64;
        let start = (offset as usize).min(data.len());
        Ok((Box::new(io::Cursor::new(data[start..].to_vec())), size))
    }

    fn create_new(&self, path: &str, data: &[u8]) -> Result<bool> {
        let p = check_path(path)?;
        let mut f = self.files.lock().unwrap();
        if f.contains_key(&p) {
            return Ok(false);
        }
        f.insert(p, (data.to_vec(), SystemTime::now()));
        Ok(true)
    }

    fn stat(&self, path: &str) -> Result<Stat> {
        let p = check_path(path)?;
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
        let p = check_path(path)?;
        let prefix = format!("{p}/");
        let f = self.files.lock().unwrap();
        let mut out: Vec<String> = Vec::new();
        for k in f.range(prefix.clone()..).map(|(k, _)| k) {
            let Some(rest) = k.strip_prefix(&prefix) else {
                break;
            };
            let child = rest.split('/').next().unwrap_or(rest);
            if out.last().is_none_or(|l| l != child) {
                out.push(child.to_string());
            }
        }
        Ok(out)
    }

    fn rename(&self, from: &str, to: &str) -> Result<()> {
        let (f, t) = (check_path(from)?, check_path(to)?);
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
        let p = check_path(path)?;
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
        let p = check_path(path)?;
        let mut f = self.files.lock().unwrap();
        let e = f.get_mut(&p).ok_or_else(|| not_found(path))?;
        e.1 = SystemTime::now();
        Ok(())
    }

    fn stage(&self, path: &str) -> Result<()> {
        self.put(path, b"")
    }

    fn staged_size(&self, path: &str) -> Result<u64> {
        Ok(self.stat(path)?.size)
    }

    fn append(&self, path: &str, at: u64, body: &mut dyn Read) -> Result<u64> {
        let size = self.staged_size(path)?;
        if size != at {
            return Err(Error::new(
                Kind::Conflict,
                format!("{path} holds {size} bytes, not {at}"),
            ));
        }
        // Read whole first: a body that fails midway adds nothing.
        let mut more = Vec::new();
        body.read_to_end(&mut more)
            .map_err(|e| Error::with_source(Kind::Network, "reading upload body", e))?;
        let mut f = self.files.lock().unwrap();
        let e = f.get_mut(path).ok_or_else(|| not_found(path))?;
        e.0.extend_from_slice(&more);
        e.1 = SystemTime::now();
        Ok(more.len() as u64)
    }

    fn seal(&self, path: &str) -> Result<()> {
        self.touch(path)
    }

    fn shared(&self) -> bool {
        self.shared
    }
}

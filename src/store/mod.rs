//! Storage: a small driver interface and the content-addressed stores built on it.
//!
//! [`Driver`] is the only thing that touches the disk (get/put/reader/writer/stat/
//! list/rename/delete on slash-separated paths), so an object-store driver can come
//! later for sites that outgrow one disk. [`Filesystem`] is the driver for a local
//! directory. [`registry::RegistryStore`] lays repositories out on a driver exactly
//! as Docker Distribution does (`docker/registry/v2/...`), so berth can serve a
//! directory Distribution filled, and Distribution can serve one berth filled.
//!
//! Two rules hold everywhere: content becomes visible only by an atomic rename after
//! its digest was checked and its bytes were fsynced; and every path handed to a
//! driver is built from validated names, digests and upload ids (the driver checks
//! again and refuses `..`, empty or absolute components).

#[doc(hidden)]
pub mod conformance;
pub mod gc;
pub mod local;
pub mod memory;
pub mod registry;

use crate::error::{Context, Error, Result};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// What `stat` reports.
#[derive(Debug, Clone, Copy)]
pub struct Stat {
    pub size: u64,
    pub modified: SystemTime,
    pub is_dir: bool,
}

/// A writer that makes its bytes durable on `commit`.
pub trait FileWriter: Write + Send {
    /// Bytes in the file now (including what was there before an append).
    fn size(&self) -> u64;
    /// Flush and fsync: after this returns the bytes survive a crash.
    fn commit(&mut self) -> Result<()>;
}

/// A readable blob with its total size.
pub type BlobReader = Box<dyn Read + Send>;

/// The storage driver interface (paths are `/`-separated and start with `/`).
pub trait Driver: Send + Sync {
    /// Whole content of a small file.
    fn get(&self, path: &str) -> Result<Vec<u8>>;
    /// Atomically replace a small file, creating parents.
    fn put(&self, path: &str, data: &[u8]) -> Result<()>;
    /// A reader positioned at `offset`, and the file's total size.
    fn reader(&self, path: &str, offset: u64) -> Result<(BlobReader, u64)>;
    /// A writer that creates the file or appends to it.
    fn writer(&self, path: &str, append: bool) -> Result<Box<dyn FileWriter>>;
    fn stat(&self, path: &str) -> Result<Stat>;
    /// Names of the direct children of a directory (empty if it does not exist).
    fn list(&self, path: &str) -> Result<Vec<String>>;
    /// Atomically move a file or directory, creating the target's parents.
    fn rename(&self, from: &str, to: &str) -> Result<()>;
    /// Delete a file or a directory tree (no error if missing).
    fn delete(&self, path: &str) -> Result<()>;
    /// Set a file's modification time to now (garbage collection's lease).
    fn touch(&self, path: &str) -> Result<()>;
    /// Cut a file back to `len` bytes (a failed append is undone this way).
    fn truncate(&self, path: &str, len: u64) -> Result<()>;
    /// Remove a directory if it is empty (object stores have none: a no-op).
    fn remove_empty_dir(&self, _path: &str) -> Result<()> {
        Ok(())
    }
}

/// Local-directory driver.
pub struct Filesystem {
    root: PathBuf,
}

impl Filesystem {
    pub fn new(root: impl Into<PathBuf>) -> Result<Filesystem> {
        let root = root.into();
        fs::create_dir_all(&root)
            .with_context(|| format!("create storage root {}", root.display()))?;
        Ok(Filesystem { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Map a driver path into the root, refusing anything that could leave it.
    pub fn full(&self, path: &str) -> Result<PathBuf> {
        let rel = path
            .strip_prefix('/')
            .ok_or_else(|| Error::internal(format!("storage path {path:?} is not absolute")))?;
        let mut p = self.root.clone();
        for c in rel.split('/') {
            if c.is_empty() || c == "." || c == ".." || c.contains('\0') {
                return Err(Error::invalid(format!(
                    "storage path {path:?} has an unsafe component"
                )));
            }
            p.push(c);
        }
        Ok(p)
    }
}

struct FsWriter {
    file: io::BufWriter<File>,
    size: u64,
}

impl Write for FsWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.size += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl FileWriter for FsWriter {
    fn size(&self) -> u64 {
        self.size
    }
    fn commit(&mut self) -> Result<()> {
        self.file.flush()?;
        self.file.get_ref().sync_data()?;
        Ok(())
    }
}

fn not_found_is_none<T>(r: io::Result<T>) -> io::Result<Option<T>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

impl Driver for Filesystem {
    fn get(&self, path: &str) -> Result<Vec<u8>> {
        let p = self.full(path)?;
        fs::read(&p).with_context(|| p.display().to_string())
    }

    fn put(&self, path: &str, data: &[u8]) -> Result<()> {
        let p = self.full(path)?;
        if let Some(dir) = p.parent() {
            crate::fsutil::create_dir_all_durable(dir)?;
        }
        crate::fsutil::atomic_write(&p, data)
    }

    fn reader(&self, path: &str, offset: u64) -> Result<(BlobReader, u64)> {
        let p = self.full(path)?;
        let mut f = File::open(&p).with_context(|| p.display().to_string())?;
        let size = f.metadata()?.len();
        if offset > 0 {
            f.seek(SeekFrom::Start(offset))?;
        }
        Ok((Box::new(f), size))
    }

    fn writer(&self, path: &str, append: bool) -> Result<Box<dyn FileWriter>> {
        let p = self.full(path)?;
        if let Some(dir) = p.parent() {
            crate::fsutil::create_dir_all_durable(dir)?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(append)
            .write(true)
            .truncate(!append)
            .open(&p)
            .with_context(|| p.display().to_string())?;
        let size = file.metadata()?.len();
        Ok(Box::new(FsWriter {
            file: io::BufWriter::with_capacity(1 << 20, file),
            size,
        }))
    }

    fn stat(&self, path: &str) -> Result<Stat> {
        let p = self.full(path)?;
        let m = fs::metadata(&p).with_context(|| p.display().to_string())?;
        Ok(Stat {
            size: m.len(),
            modified: m.modified()?,
            is_dir: m.is_dir(),
        })
    }

    fn list(&self, path: &str) -> Result<Vec<String>> {
        let p = self.full(path)?;
        let Some(rd) =
            not_found_is_none(fs::read_dir(&p)).with_context(|| p.display().to_string())?
        else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for e in rd {
            let e = e?;
            if let Some(n) = e.file_name().to_str()
                && !n.starts_with('.')
            {
                out.push(n.to_string());
            }
        }
        Ok(out)
    }

    fn rename(&self, from: &str, to: &str) -> Result<()> {
        let (f, t) = (self.full(from)?, self.full(to)?);
        let dir = t
            .parent()
            .ok_or_else(|| Error::internal("rename to root"))?;
        // The collector removes emptied blob directories: one may go between
        // our mkdir and our rename, so a vanished parent is made again.
        let mut tries = 0;
        loop {
            crate::fsutil::create_dir_all_durable(dir)?;
            match fs::rename(&f, &t) {
                Err(e) if e.kind() == io::ErrorKind::NotFound && tries < 3 && f.exists() => {
                    tries += 1;
                }
                r => {
                    r.with_context(|| format!("rename {} to {}", f.display(), t.display()))?;
                    break;
                }
            }
        }
        crate::fsutil::fsync_dir(dir)
    }

    fn remove_empty_dir(&self, path: &str) -> Result<()> {
        let p = self.full(path)?;
        // Only an empty one: anything that arrived meanwhile stays.
        let _ = fs::remove_dir(&p);
        Ok(())
    }

    fn delete(&self, path: &str) -> Result<()> {
        let p = self.full(path)?;
        let r = match fs::symlink_metadata(&p) {
            Ok(m) if m.is_dir() => fs::remove_dir_all(&p),
            Ok(_) => fs::remove_file(&p),
            Err(e) => Err(e),
        };
        not_found_is_none(r).with_context(|| format!("delete {}", p.display()))?;
        Ok(())
    }

    fn touch(&self, path: &str) -> Result<()> {
        let p = self.full(path)?;
        let f = OpenOptions::new()
            .append(true)
            .open(&p)
            .with_context(|| p.display().to_string())?;
        f.set_modified(SystemTime::now())
            .with_context(|| format!("touch {}", p.display()))
    }

    fn truncate(&self, path: &str, len: u64) -> Result<()> {
        let p = self.full(path)?;
        let f = OpenOptions::new()
            .write(true)
            .open(&p)
            .with_context(|| p.display().to_string())?;
        f.set_len(len)?;
        f.sync_data()
            .with_context(|| format!("truncate {}", p.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn driver_refuses_escapes() {
        let d = Filesystem::new(
            std::env::temp_dir().join(format!("berth-drv-{}", crate::util::uuid4())),
        )
        .unwrap();
        for bad in ["/../x", "/a/../../x", "relative", "/a//b", "/a/./b"] {
            assert!(d.full(bad).is_err(), "{bad}");
        }
        d.put("/a/b/c", b"x").unwrap();
        assert_eq!(d.get("/a/b/c").unwrap(), b"x");
        assert_eq!(d.list("/a/b").unwrap(), vec!["c".to_string()]);
        assert!(d.list("/missing").unwrap().is_empty());
        let mut w = d.writer("/a/u", false).unwrap();
        w.write_all(b"12").unwrap();
        w.commit().unwrap();
        drop(w);
        let mut w = d.writer("/a/u", true).unwrap();
        assert_eq!(w.size(), 2);
        w.write_all(b"3").unwrap();
        w.commit().unwrap();
        drop(w);
        let (mut r, size) = d.reader("/a/u", 1).unwrap();
        let mut s = String::new();
        r.read_to_string(&mut s).unwrap();
        assert_eq!((s.as_str(), size), ("23", 3));
        d.rename("/a/u", "/z/y/u").unwrap();
        assert_eq!(d.stat("/z/y/u").unwrap().size, 3);
        d.delete("/z").unwrap();
        d.delete("/z").unwrap();
        fs::remove_dir_all(d.root()).unwrap();
    }
}

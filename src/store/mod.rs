//! Storage: a small driver interface and the content-addressed stores built on it.
//!
//! [`Driver`] is the only thing that touches storage (get/put/reader/stat/list/
//! rename/delete and staged files on slash-separated paths). [`Filesystem`] is the
//! driver for a local directory, [`s3::S3`] the one for a bucket that registry
//! replicas on several hosts share, [`memory::Memory`] the one for unit tests. [`registry::RegistryStore`] lays repositories out on a driver exactly
//! as Docker Distribution does (`docker/registry/v2/...`), so berth can serve a
//! directory Distribution filled, and Distribution can serve one berth filled.
//!
//! Two rules hold everywhere: content becomes visible only by an atomic rename
//! (or server-side copy) after its digest was checked and its bytes were durable; and every path handed to a
//! driver is built from validated names, digests and upload ids (the driver checks
//! again and refuses `..`, empty or absolute components).

#[doc(hidden)]
pub mod conformance;
pub mod gc;
pub mod lease;
pub mod local;
pub mod memory;
pub mod registry;
pub mod s3;

use crate::error::{Context, Error, Result};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// What `stat` reports.
#[derive(Debug, Clone, Copy)]
pub struct Stat {
    pub size: u64,
    pub modified: SystemTime,
    pub is_dir: bool,
}

/// A readable blob with its total size.
pub type BlobReader = Box<dyn Read + Send>;

/// The storage driver interface (paths are `/`-separated and start with `/`).
///
/// Shaped so an object store fits as well as a disk: no append to ordinary
/// files, no truncate, no directory renames. Bytes that grow (an upload
/// session's) are a *staged* file: started empty, appended to at a known size,
/// then sealed into an ordinary file; the filesystem appends to a file, S3
/// collects multipart-upload parts.
pub trait Driver: Send + Sync {
    /// Whole content of a small file.
    fn get(&self, path: &str) -> Result<Vec<u8>>;
    /// Atomically replace a small file, creating parents.
    fn put(&self, path: &str, data: &[u8]) -> Result<()>;
    /// Create a small file only if nothing is at `path`: false when something
    /// is (locks and leases shared by processes on other hosts).
    fn create_new(&self, path: &str, data: &[u8]) -> Result<bool>;
    /// Replace a small file's content only if it is still `old`: false when it
    /// changed or went meanwhile (a lease renewed, or taken over from a holder
    /// that died, by exactly one process).
    fn swap(&self, path: &str, old: &[u8], new: &[u8]) -> Result<bool>;
    /// A reader positioned at `offset`, and the file's total size.
    fn reader(&self, path: &str, offset: u64) -> Result<(BlobReader, u64)>;
    fn stat(&self, path: &str) -> Result<Stat>;
    /// Names of the direct children of a directory (empty if it does not
    /// exist). Nothing is hidden: a dotfile is a name like any other.
    fn list(&self, path: &str) -> Result<Vec<String>>;
    /// Move a file, creating the target's parents: the target appears whole or
    /// not at all (an object store copies, then deletes the source).
    fn rename(&self, from: &str, to: &str) -> Result<()>;
    /// Delete a file or a directory tree (no error if missing).
    fn delete(&self, path: &str) -> Result<()>;
    /// Set a file's modification time to now (garbage collection's lease).
    fn touch(&self, path: &str) -> Result<()>;
    /// Remove a directory if it is empty (object stores have none: a no-op).
    fn remove_empty_dir(&self, _path: &str) -> Result<()> {
        Ok(())
    }
    /// Start an empty staged file (replacing one at `path`).
    fn stage(&self, path: &str) -> Result<()>;
    /// Bytes a staged file holds (NotFound when there is none).
    fn staged_size(&self, path: &str) -> Result<u64>;
    /// Append all `body` yields to the staged file at `path`, which must hold
    /// `at` bytes (Conflict otherwise), durably; returns the bytes added. When
    /// it fails, the staged file holds its `at` bytes again.
    fn append(&self, path: &str, at: u64, body: &mut dyn Read) -> Result<u64>;
    /// Turn a staged file into an ordinary file at the same path, modified
    /// now. Sealing a file sealed already (a retry) succeeds.
    fn seal(&self, path: &str) -> Result<()>;
    /// A URL a client may fetch the file from itself for `ttl` (a presigned
    /// URL), or None when the driver has no such thing.
    fn redirect_url(&self, _path: &str, _ttl: Duration) -> Result<Option<String>> {
        Ok(None)
    }
    /// True when processes on other hosts may share this storage (replicas on
    /// one bucket): in-process state is then only a cache.
    fn shared(&self) -> bool {
        false
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

    fn swap(&self, path: &str, old: &[u8], new: &[u8]) -> Result<bool> {
        let p = self.full(path)?;
        let dir = p.parent().ok_or_else(|| Error::internal("swap at root"))?;
        // Compare and replace under a lock of the directory, which every
        // swapper on this host takes (the file itself is replaced, so its own
        // lock would not hold).
        let d = File::open(dir).with_context(|| dir.display().to_string())?;
        nix::fcntl::Flock::lock(d, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, e)| Error::from(io::Error::from(e)).context(dir.display()))
            .and_then(|_guard| match fs::read(&p) {
                Ok(cur) if cur == old => crate::fsutil::atomic_write(&p, new).map(|_| true),
                Ok(_) => Ok(false),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
                Err(e) => Err(Error::from(e).context(p.display())),
            })
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

    fn create_new(&self, path: &str, data: &[u8]) -> Result<bool> {
        let p = self.full(path)?;
        let dir = p
            .parent()
            .ok_or_else(|| Error::internal("create at root"))?;
        crate::fsutil::create_dir_all_durable(dir)?;
        // Written whole aside, then linked: a reader never sees half of it.
        let tmp = crate::fsutil::temp_path(&p);
        let res = (|| -> Result<bool> {
            let mut f = File::create(&tmp).with_context(|| tmp.display().to_string())?;
            f.write_all(data)?;
            f.sync_all()?;
            match fs::hard_link(&tmp, &p) {
                Ok(()) => Ok(true),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
                Err(e) => Err(Error::from(e).context(p.display())),
            }
        })();
        let _ = fs::remove_file(&tmp);
        if matches!(res, Ok(true)) {
            crate::fsutil::fsync_dir(dir)?;
        }
        res
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
            // Only our own half-written temp files are left out.
            if let Some(n) = e.file_name().to_str()
                && !crate::fsutil::is_temp_name(n)
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

    fn stage(&self, path: &str) -> Result<()> {
        let p = self.full(path)?;
        let dir = p.parent().ok_or_else(|| Error::internal("stage at root"))?;
        crate::fsutil::create_dir_all_durable(dir)?;
        File::create(&p)
            .and_then(|f| f.sync_all())
            .with_context(|| p.display().to_string())?;
        crate::fsutil::fsync_dir(dir)
    }

    fn staged_size(&self, path: &str) -> Result<u64> {
        Ok(self.stat(path)?.size)
    }

    fn append(&self, path: &str, at: u64, body: &mut dyn Read) -> Result<u64> {
        let p = self.full(path)?;
        let mut f = OpenOptions::new()
            .append(true)
            .open(&p)
            .with_context(|| p.display().to_string())?;
        let size = f.metadata()?.len();
        if size != at {
            return Err(Error::new(
                crate::error::Kind::Conflict,
                format!("{path} holds {size} bytes, not {at}"),
            ));
        }
        let mut buf = vec![0u8; 256 * 1024];
        let mut added = 0u64;
        let res = (|| -> Result<()> {
            loop {
                let n = match body.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        return Err(Error::with_source(
                            crate::error::Kind::Network,
                            "reading upload body",
                            e,
                        ));
                    }
                };
                f.write_all(&buf[..n])
                    .with_context(|| format!("write {}", p.display()))?;
                added += n as u64;
            }
            f.sync_data()
                .with_context(|| format!("fsync {}", p.display()))
        })();
        if let Err(e) = res {
            // Back to the last good size: the session stays consistent.
            if let Err(t) = f.set_len(at).and_then(|_| f.sync_data()) {
                log::warn!("{}: cannot cut back to {at} bytes: {t}", p.display());
            }
            return Err(e);
        }
        Ok(added)
    }

    fn seal(&self, path: &str) -> Result<()> {
        // The appended bytes were fsynced: the file is whole already.
        self.touch(path)
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
        d.stage("/a/u").unwrap();
        assert_eq!(d.append("/a/u", 0, &mut &b"12"[..]).unwrap(), 2);
        let late = d.append("/a/u", 3, &mut &b"x"[..]).unwrap_err();
        assert_eq!(late.kind(), crate::error::Kind::Conflict);
        assert_eq!(d.append("/a/u", 2, &mut &b"3"[..]).unwrap(), 1);
        d.seal("/a/u").unwrap();
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

//! Crash-safe file primitives: write to a temporary file beside the target, fsync,
//! rename, fsync the directory. After a crash a reader sees the old file or the new
//! one, never a torn one. [`confined`] resolves and changes paths inside an image
//! root as if it were `/`; [`glob`] matches shell-style path patterns.

pub mod confined;
pub mod glob;
pub mod mountinfo;

use crate::error::{Context, Result};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Open the directory `rel` under `root` one component at a time, never
/// following a symlink: if anything on the way is a symlink (or not a
/// directory), this fails rather than leave `root`. Kernels older than 5.6 (the
/// site's SL6 and SL7) have no `openat2(RESOLVE_BENEATH)`; this is its user-space
/// form for trees nobody else changes meanwhile.
pub fn open_dir_beneath(root: &Path, rel: &Path) -> std::io::Result<std::os::fd::OwnedFd> {
    use nix::fcntl::{OFlag, openat};
    use nix::sys::stat::Mode;
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let mut fd: std::os::fd::OwnedFd = File::open(root)?.into();
    for c in rel.components() {
        let std::path::Component::Normal(name) = c else {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("{}: only plain names may follow the root", rel.display()),
            ));
        };
        fd = openat(&fd, name, flags, Mode::empty()).map_err(std::io::Error::from)?;
    }
    Ok(fd)
}

/// A temporary path next to `target` (same filesystem, so rename is atomic).
pub fn temp_path(target: &Path) -> PathBuf {
    let mut r = [0u8; 6];
    crate::util::random_bytes(&mut r);
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    target.with_file_name(format!(".{name}.tmp-{}", crate::digest::to_hex(&r)))
}

/// True for a name [`temp_path`] made (`.NAME.tmp-` and 12 hex digits): a write
/// in flight or one a crash left, never content.
pub fn is_temp_name(n: &str) -> bool {
    n.starts_with('.')
        && n.rsplit_once(".tmp-")
            .is_some_and(|(_, h)| h.len() == 12 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// fsync a directory so a rename or create inside it survives a crash.
pub fn fsync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("fsync {}", dir.display()))
}

/// syncfs(2) the filesystem holding `path`: every file, directory and attribute
/// written there reaches the disk. For a whole unpacked tree this is one call
/// where fsyncing each file would be thousands, each its own journal commit.
pub fn sync_filesystem(path: &Path) -> Result<()> {
    use std::os::fd::AsRawFd;
    let f = File::open(path).with_context(|| format!("open {}", path.display()))?;
    // SAFETY: syncfs on a descriptor we own for the duration of the call.
    if unsafe { libc::syncfs(f.as_raw_fd()) } != 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::ENOSYS) {
            // SL6's 2.6.32 has no syncfs (2.6.39): sync every filesystem,
            // slower but as durable
            // SAFETY: sync(2) takes nothing and cannot fail.
            unsafe { libc::sync() };
            return Ok(());
        }
        return Err(crate::error::Error::from(e)
            .context(format!("sync the filesystem of {}", path.display())));
    }
    Ok(())
}

/// Atomically replace `path` with `data` (mode 0644), durable when this returns.
pub fn atomic_write(path: &Path, data: &[u8]) -> Result<()> {
    atomic_write_mode(path, data, 0o644)
}

/// Atomically replace `path` with `data` (write, rename), without waiting for
/// the disk: a reader sees the old or the new content, never a mix, and a
/// killed process leaves one of the two. For state rewritten many times a
/// second whose loss on a power cut costs little (logcollect's offsets).
pub fn replace_file(path: &Path, data: &[u8]) -> Result<()> {
    let tmp = temp_path(path);
    let res = fs::write(&tmp, data)
        .with_context(|| format!("write {}", tmp.display()))
        .and_then(|_| {
            fs::rename(&tmp, path).with_context(|| format!("rename into {}", path.display()))
        });
    if res.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    res
}

/// Atomically replace `path` with `data` and the given mode.
pub fn atomic_write_mode(path: &Path, data: &[u8], mode: u32) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let tmp = temp_path(path);
    let res = (|| -> Result<()> {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)
            .with_context(|| format!("create {}", tmp.display()))?;
        f.write_all(data)
            .with_context(|| format!("write {}", tmp.display()))?;
        f.sync_all()
            .with_context(|| format!("fsync {}", tmp.display()))?;
        fs::rename(&tmp, path).with_context(|| format!("rename into {}", path.display()))?;
        Ok(())
    })();
    if res.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    res?;
    fsync_dir(dir)
}

/// Create all directories of `dir`, fsyncing each new one's parent, so a file later
/// made durable inside it cannot vanish with its directory after a crash.
pub fn create_dir_all_durable(dir: &Path) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        create_dir_all_durable(parent)?;
    }
    match fs::create_dir(dir) {
        Ok(()) => {
            if let Some(parent) = dir.parent() {
                fsync_dir(parent)?;
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e).with_context(|| format!("create {}", dir.display())),
    }
}

/// A held flock(2); released on drop.
pub struct Lock(#[allow(dead_code)] File);

/// Free bytes for an unprivileged writer on the filesystem holding `p`.
pub fn free_space(p: &Path) -> Option<u64> {
    let st = nix::sys::statvfs::statvfs(p).ok()?;
    Some(st.blocks_available() * st.fragment_size())
}

/// Copy the tree under `from` into the existing directory `to`: directories,
/// regular files and symlinks (as links, never followed), with their modes,
/// owners and modification times; other kinds (devices, sockets, fifos) are
/// skipped, and another filesystem mounted inside `from` is not entered. Hard
/// links become separate files. For filling a new volume from an image.
pub fn copy_tree(from: &Path, to: &Path) -> Result<u64> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let dev = fs::symlink_metadata(from)
        .with_context(|| format!("read {}", from.display()))?
        .dev();
    let mut copied = 0;
    let mut stack = vec![(from.to_path_buf(), to.to_path_buf())];
    while let Some((src_dir, dst_dir)) = stack.pop() {
        for entry in
            fs::read_dir(&src_dir).with_context(|| format!("read {}", src_dir.display()))?
        {
            let entry = entry.with_context(|| format!("read {}", src_dir.display()))?;
            let src = entry.path();
            let dst = dst_dir.join(entry.file_name());
            let m =
                fs::symlink_metadata(&src).with_context(|| format!("read {}", src.display()))?;
            let ft = m.file_type();
            if ft.is_dir() {
                fs::create_dir(&dst).with_context(|| format!("create {}", dst.display()))?;
                if m.dev() == dev {
                    stack.push((src.clone(), dst.clone()));
                }
            } else if ft.is_file() {
                fs::copy(&src, &dst).with_context(|| format!("copy {}", src.display()))?;
            } else if ft.is_symlink() {
                let target =
                    fs::read_link(&src).with_context(|| format!("read {}", src.display()))?;
                std::os::unix::fs::symlink(&target, &dst)
                    .with_context(|| format!("create {}", dst.display()))?;
            } else {
                continue;
            }
            std::os::unix::fs::lchown(&dst, Some(m.uid()), Some(m.gid()))
                .with_context(|| format!("chown {}", dst.display()))?;
            if !ft.is_symlink() {
                fs::set_permissions(&dst, fs::Permissions::from_mode(m.mode() & 0o7777))
                    .with_context(|| format!("chmod {}", dst.display()))?;
                let mtime = std::time::UNIX_EPOCH
                    + std::time::Duration::new(m.mtime().max(0) as u64, m.mtime_nsec() as u32);
                let f = File::open(&dst).with_context(|| format!("open {}", dst.display()))?;
                let _ = f.set_modified(mtime);
            }
            copied += 1;
        }
    }
    Ok(copied)
}

/// The bytes of the files under `root` as `ls -l` counts them (a symlink its
/// target's length), each hard-linked file once, links never followed and no
/// other filesystem entered: what dockerd reports as a layer's size. Entries
/// that vanish while counting are skipped (a running container writes on).
pub fn tree_bytes(root: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(top) = fs::symlink_metadata(root) else {
        return 0;
    };
    let mut seen = std::collections::HashSet::new();
    let mut total = 0;
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(rd) = fs::read_dir(&dir) else { continue };
        for entry in rd.flatten() {
            let Ok(m) = entry.path().symlink_metadata() else {
                continue;
            };
            if m.is_dir() {
                if m.dev() == top.dev() {
                    stack.push(entry.path());
                }
            } else if m.nlink() < 2 || seen.insert((m.dev(), m.ino())) {
                total += m.size();
            }
        }
    }
    total
}

/// flock(2) on `path` (created if missing): shared or exclusive, waiting or not
/// (`Ok(None)`: someone else holds it).
pub fn flock(path: &Path, exclusive: bool, wait: bool) -> Result<Option<Lock>> {
    use std::os::fd::AsRawFd;
    let f = OpenOptions::new()
        .create(true)
        .read(true)
        .write(true)
        .truncate(false)
        .open(path)
        .with_context(|| format!("open {}", path.display()))?;
    let mut op = if exclusive {
        libc::LOCK_EX
    } else {
        libc::LOCK_SH
    };
    if !wait {
        op |= libc::LOCK_NB;
    }
    loop {
        // SAFETY: flock on a descriptor we own; the lock lives as long as the File.
        if unsafe { libc::flock(f.as_raw_fd(), op) } == 0 {
            return Ok(Some(Lock(f)));
        }
        let e = std::io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EWOULDBLOCK) if !wait => return Ok(None),
            _ => {
                return Err(
                    crate::error::Error::from(e).context(format!("lock {}", path.display()))
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp() {
        let d = std::env::temp_dir().join(format!("berth-fsutil-{}", crate::util::uuid4()));
        let p = d.join("a/b/file");
        atomic_write(&p, b"one").unwrap();
        atomic_write(&p, b"two").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        let names: Vec<_> = fs::read_dir(p.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
        fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn copy_tree_keeps_modes_and_links_and_follows_none() {
        use std::os::unix::fs::PermissionsExt;
        let d = std::env::temp_dir().join(format!("berth-fsutil-{}", crate::util::uuid4()));
        let (from, to, outside) = (d.join("from"), d.join("to"), d.join("outside"));
        fs::create_dir_all(from.join("sub")).unwrap();
        fs::create_dir_all(&to).unwrap();
        fs::create_dir_all(&outside).unwrap();
        fs::write(outside.join("secret"), "x").unwrap();
        fs::write(from.join("sub/run.sh"), "#!/bin/sh\n").unwrap();
        fs::set_permissions(from.join("sub/run.sh"), fs::Permissions::from_mode(0o750)).unwrap();
        std::os::unix::fs::symlink(&outside, from.join("escape")).unwrap();
        assert_eq!(copy_tree(&from, &to).unwrap(), 3);
        let m = fs::metadata(to.join("sub/run.sh")).unwrap();
        assert_eq!(m.permissions().mode() & 0o7777, 0o750);
        // the link is copied as a link, its target's content is not
        assert_eq!(fs::read_link(to.join("escape")).unwrap(), outside);
        assert!(
            fs::symlink_metadata(to.join("escape"))
                .unwrap()
                .file_type()
                .is_symlink()
        );
        fs::remove_dir_all(d).unwrap();
    }
}

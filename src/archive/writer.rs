//! A reproducible tar writer: the same tree gives the same bytes, whoever packs
//! it, whenever.
//!
//! Entries come in the order of a [`Tree`](super::tree::Tree) snapshot (sorted by
//! path). Headers are POSIX ustar with numeric owners only (no user or group
//! names), the mtime in whole seconds clamped to an epoch (`SOURCE_DATE_EPOCH`
//! style), and no atime or ctime. A PAX extended header is written only when
//! ustar cannot hold a value — a long name or link target, a size of 8 GiB or more,
//! an id above 2097151 — and then holds only those records, in a fixed order,
//! under a fixed name. Hard links are recorded as links to the first path (in
//! archive order) of the same inode within one archive. Sockets are skipped.
//!
//! Content is read with `O_NOFOLLOW` from the path the snapshot saw; a file whose
//! size changed since the snapshot is an error, not a silently different layer.

use super::tree::{Change, Entry, EntryKind};
use crate::error::{Context, Error, Kind, Result};
use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

const BLOCK: usize = 512;

/// Writes entries of one archive.
pub struct TarWriter<W: Write> {
    out: W,
    clamp: Option<i64>,
    links: HashMap<(u64, u64), Vec<u8>>,
    buf: Vec<u8>,
    entries: u64,
}

fn octal(field: &mut [u8], v: u64) -> bool {
    let digits = field.len() - 1;
    let s = format!("{v:0digits$o}");
    if s.len() > digits {
        return false;
    }
    field[..digits].copy_from_slice(s.as_bytes());
    field[digits] = 0;
    true
}

/// A ustar header with fixed fields set; name fields are written by the caller.
#[allow(clippy::too_many_arguments)]
fn header(
    kind: u8,
    mode: u32,
    uid: u64,
    gid: u64,
    size: u64,
    mtime: u64,
    major: u64,
    minor: u64,
) -> [u8; BLOCK] {
    let mut h = [0u8; BLOCK];
    octal(&mut h[100..108], mode as u64);
    // Too large values go in PAX records; the header then holds 0.
    if !octal(&mut h[108..116], uid) {
        octal(&mut h[108..116], 0);
    }
    if !octal(&mut h[116..124], gid) {
        octal(&mut h[116..124], 0);
    }
    if !octal(&mut h[124..136], size) {
        octal(&mut h[124..136], 0);
    }
    octal(&mut h[136..148], mtime);
    h[156] = kind;
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    if kind == b'3' || kind == b'4' {
        octal(&mut h[329..337], major);
        octal(&mut h[337..345], minor);
    }
    h
}

fn checksum(h: &mut [u8; BLOCK]) {
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|&b| b as u32).sum();
    let s = format!("{sum:06o}\0 ");
    h[148..156].copy_from_slice(s.as_bytes());
}

/// Put `name` into ustar's name (and prefix) fields; false if it does not fit.
fn set_name(h: &mut [u8; BLOCK], name: &[u8]) -> bool {
    if name.len() <= 100 {
        h[..name.len()].copy_from_slice(name);
        return true;
    }
    // prefix '/' name, split at a slash, prefix <= 155, name <= 100 and not empty
    let limit = name.len().min(156);
    for i in (1..limit).rev() {
        let rest = name.len() - i - 1;
        if name[i] == b'/' && rest > 0 && rest <= 100 {
            h[345..345 + i].copy_from_slice(&name[..i]);
            h[..rest].copy_from_slice(&name[i + 1..]);
            return true;
        }
    }
    false
}

fn pax_record(out: &mut Vec<u8>, key: &str, value: &[u8]) {
    // "LEN key=value\n", LEN counting itself
    let rest = key.len() + value.len() + 3;
    let mut len = rest + 1;
    while len != rest + len.to_string().len() {
        len = rest + len.to_string().len();
    }
    out.extend_from_slice(len.to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(key.as_bytes());
    out.push(b'=');
    out.extend_from_slice(value);
    out.push(b'\n');
}

impl<W: Write> TarWriter<W> {
    /// A writer whose mtimes are clamped to `clamp` (seconds) when given.
    pub fn new(out: W, clamp: Option<i64>) -> Self {
        TarWriter {
            out,
            clamp,
            links: HashMap::new(),
            buf: vec![0u8; 1 << 20],
            entries: 0,
        }
    }

    /// Entries written so far.
    pub fn entries(&self) -> u64 {
        self.entries
    }

    fn mtime(&self, t: i64) -> u64 {
        let t = match self.clamp {
            Some(c) if t > c => c,
            _ => t,
        };
        t.max(0) as u64
    }

    fn io(&self, e: std::io::Error, what: &Path) -> Error {
        Error::with_source(Kind::Io, format!("archive {}", what.display()), e)
    }

    // Write a header, preceded by a PAX header when a value does not fit.
    #[allow(clippy::too_many_arguments)]
    fn emit(
        &mut self,
        kind: u8,
        name: &[u8],
        link: &[u8],
        mode: u32,
        uid: u64,
        gid: u64,
        size: u64,
        mtime: u64,
        dev: (u64, u64),
    ) -> std::io::Result<()> {
        let mut h = header(kind, mode, uid, gid, size, mtime, dev.0, dev.1);
        let mut pax = Vec::new();
        if !set_name(&mut h, name) {
            h[..100].copy_from_slice(&name[..100]);
            pax_record(&mut pax, "path", name);
        }
        if link.len() > 100 {
            h[157..257].copy_from_slice(&link[..100]);
            pax_record(&mut pax, "linkpath", link);
        } else {
            h[157..157 + link.len()].copy_from_slice(link);
        }
        if size > 0o777_7777_7777 {
            pax_record(&mut pax, "size", size.to_string().as_bytes());
        }
        if uid > 0o777_7777 {
            pax_record(&mut pax, "uid", uid.to_string().as_bytes());
        }
        if gid > 0o777_7777 {
            pax_record(&mut pax, "gid", gid.to_string().as_bytes());
        }
        if !pax.is_empty() {
            let base = Path::new(std::ffi::OsStr::from_bytes(name))
                .file_name()
                .map(|n| n.as_bytes().to_vec())
                .unwrap_or_default();
            let mut pname = b"PaxHeaders/".to_vec();
            pname.extend_from_slice(&base[..base.len().min(100 - pname.len())]);
            let mut ph = header(b'x', 0o644, 0, 0, pax.len() as u64, mtime, 0, 0);
            ph[..pname.len()].copy_from_slice(&pname);
            checksum(&mut ph);
            self.out.write_all(&ph)?;
            self.out.write_all(&pax)?;
            self.pad(pax.len() as u64)?;
        }
        checksum(&mut h);
        self.out.write_all(&h)
    }

    fn pad(&mut self, size: u64) -> std::io::Result<()> {
        let rem = (size % BLOCK as u64) as usize;
        if rem != 0 {
            self.out.write_all(&[0u8; BLOCK][..BLOCK - rem])?;
        }
        Ok(())
    }

    /// Archive one entry of the tree at `root`.
    pub fn append(&mut self, root: &Path, e: &Entry) -> Result<()> {
        let m = &e.meta;
        let mut name = e.path.as_os_str().as_bytes().to_vec();
        if name.is_empty() {
            return Err(Error::internal("tar entry without a name"));
        }
        // In a layer such a name deletes what it names: a real file may not carry it.
        if e.path
            .file_name()
            .is_some_and(|f| f.as_bytes().starts_with(b".wh."))
        {
            return Err(Error::invalid(format!(
                "{}: a file named .wh.* would act as a whiteout in the layer; rename or remove it",
                e.path.display()
            )));
        }
        let mtime = self.mtime(m.mtime);
        let (uid, gid) = (m.uid as u64, m.gid as u64);
        let r = match m.kind {
            EntryKind::Socket => {
                log::debug!("{}: socket, not archived", e.path.display());
                return Ok(());
            }
            EntryKind::Dir => {
                name.push(b'/');
                self.emit(b'5', &name, b"", m.mode, uid, gid, 0, mtime, (0, 0))
            }
            EntryKind::Symlink => {
                let t = m.target.as_deref().unwrap_or(Path::new(""));
                let t = t.as_os_str().as_bytes().to_vec();
                self.emit(b'2', &name, &t, m.mode, uid, gid, 0, mtime, (0, 0))
            }
            EntryKind::Fifo => self.emit(b'6', &name, b"", m.mode, uid, gid, 0, mtime, (0, 0)),
            EntryKind::Char | EntryKind::Block => {
                let kind = if m.kind == EntryKind::Char {
                    b'3'
                } else {
                    b'4'
                };
                let dev = (libc::major(m.rdev) as u64, libc::minor(m.rdev) as u64);
                self.emit(kind, &name, b"", m.mode, uid, gid, 0, mtime, dev)
            }
            EntryKind::File => {
                if m.nlink > 1 {
                    let key = (m.dev, m.ino);
                    if let Some(first) = self.links.get(&key).cloned() {
                        let r = self.emit(b'1', &name, &first, m.mode, uid, gid, 0, mtime, (0, 0));
                        self.entries += 1;
                        return r.map_err(|err| self.io(err, &e.path));
                    }
                    self.links.insert(key, name.clone());
                }
                return self.file(root, e, &name, mtime);
            }
        };
        self.entries += 1;
        r.map_err(|err| self.io(err, &e.path))
    }

    fn file(&mut self, root: &Path, e: &Entry, name: &[u8], mtime: u64) -> Result<()> {
        let m = &e.meta;
        let path = root.join(&e.path);
        let mut f = File::options()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .with_context(|| format!("open {}", path.display()))?;
        self.emit(
            b'0',
            name,
            b"",
            m.mode,
            m.uid as u64,
            m.gid as u64,
            m.size,
            mtime,
            (0, 0),
        )
        .map_err(|err| self.io(err, &e.path))?;
        let mut left = m.size;
        while left > 0 {
            let want = (self.buf.len() as u64).min(left) as usize;
            let n = match f.read(&mut self.buf[..want]) {
                Ok(0) => {
                    return Err(Error::new(
                        Kind::Conflict,
                        format!(
                            "{} shrank while it was archived (from {} bytes)",
                            path.display(),
                            m.size
                        ),
                    ));
                }
                Ok(n) => n,
                Err(err) if err.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(err) => {
                    return Err(Error::from(err).context(format!("read {}", path.display())));
                }
            };
            self.out
                .write_all(&self.buf[..n])
                .map_err(|err| Error::with_source(Kind::Io, "write archive", err))?;
            left -= n as u64;
        }
        if f.read(&mut self.buf[..1]).map(|n| n > 0).unwrap_or(false) {
            return Err(Error::new(
                Kind::Conflict,
                format!(
                    "{} grew while it was archived (beyond {} bytes)",
                    path.display(),
                    m.size
                ),
            ));
        }
        self.pad(m.size)
            .map_err(|err| Error::with_source(Kind::Io, "write archive", err))?;
        self.entries += 1;
        Ok(())
    }

    /// An OCI whiteout entry at `path` (`dir/.wh.NAME`): an empty file, mode 0,
    /// owned by root, dated at the clamp (or 0).
    pub fn whiteout(&mut self, path: &Path) -> Result<()> {
        let mtime = self.mtime(self.clamp.unwrap_or(0));
        let name = path.as_os_str().as_bytes().to_vec();
        self.emit(b'0', &name, b"", 0, 0, 0, 0, mtime, (0, 0))
            .map_err(|err| self.io(err, path))?;
        self.entries += 1;
        Ok(())
    }

    /// Archive a list of changes (a layer) from the tree at `root`.
    pub fn append_changes(&mut self, root: &Path, changes: &[Change]) -> Result<()> {
        for c in changes {
            match c {
                Change::Entry(e) => self.append(root, e)?,
                Change::Whiteout(p) => self.whiteout(p)?,
            }
        }
        Ok(())
    }

    /// End the archive (two zero blocks) and return the writer, flushed.
    pub fn finish(mut self) -> Result<W> {
        self.out
            .write_all(&[0u8; 2 * BLOCK])
            .and_then(|_| self.out.flush())
            .map_err(|e| Error::with_source(Kind::Io, "finish archive", e))?;
        Ok(self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::super::tree::walk;
    use super::*;
    use std::fs;

    fn pack(root: &Path, clamp: Option<i64>) -> Vec<u8> {
        let t = walk(root).unwrap();
        let mut w = TarWriter::new(Vec::new(), clamp);
        w.append_changes(root, &t.all()).unwrap();
        w.finish().unwrap()
    }

    #[test]
    fn same_tree_same_bytes_and_tar_reads_it_back() {
        let d = std::env::temp_dir().join(format!("berth-tarw-{}", crate::util::uuid4()));
        let long = "d".repeat(120);
        fs::create_dir_all(d.join("etc").join(&long)).unwrap();
        fs::write(d.join("etc/passwd"), "root:x:0:0::/root:/bin/sh\n").unwrap();
        fs::write(d.join("etc").join(&long).join("f".repeat(99)), "deep").unwrap();
        fs::write(d.join("big"), vec![7u8; 70_000]).unwrap();
        fs::hard_link(d.join("big"), d.join("big2")).unwrap();
        std::os::unix::fs::symlink("x".repeat(150), d.join("longlink")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", d.join("pw")).unwrap();
        let a = pack(&d, Some(1_490_616_000));
        // new inodes and mtimes, same content: same bytes
        let d2 = std::env::temp_dir().join(format!("berth-tarw-{}", crate::util::uuid4()));
        let o = std::process::Command::new("cp")
            .args(["-a", d.to_str().unwrap(), d2.to_str().unwrap()])
            .status()
            .unwrap();
        assert!(o.success());
        let b = pack(&d2, Some(1_490_616_000));
        assert_eq!(a, b);
        assert_eq!(a.len() % 512, 0);

        let mut ar = tar::Archive::new(&a[..]);
        let mut seen = Vec::new();
        for e in ar.entries().unwrap() {
            let mut e = e.unwrap();
            let p = e.path().unwrap().display().to_string();
            let h = e.header();
            assert_eq!(h.mtime().unwrap(), 1_490_616_000, "{p}");
            assert_eq!(h.username_bytes(), Some(&b""[..]));
            let kind = h.entry_type();
            let link = e.link_name().unwrap().map(|l| l.display().to_string());
            let mut data = Vec::new();
            e.read_to_end(&mut data).unwrap();
            seen.push((p, kind, link, data.len()));
        }
        let names: Vec<String> = seen
            .iter()
            .map(|s| s.0.trim_end_matches('/').to_string())
            .collect();
        let expected = [
            "big".to_string(),
            "big2".into(),
            "etc".into(),
            format!("etc/{long}"),
            format!("etc/{long}/{}", "f".repeat(99)),
            "etc/passwd".into(),
            "longlink".into(),
            "pw".into(),
        ];
        assert_eq!(names, expected);
        assert_eq!(seen[0].3, 70_000);
        assert!(seen[1].1.is_hard_link());
        assert_eq!(seen[1].2.as_deref(), Some("big"));
        assert_eq!(seen[6].2.as_deref(), Some("x".repeat(150).as_str()));
        assert_eq!(seen[7].2.as_deref(), Some("/etc/passwd"));
        fs::remove_dir_all(&d).unwrap();
        fs::remove_dir_all(&d2).unwrap();
    }

    #[test]
    fn whiteouts_and_clamping() {
        let d = std::env::temp_dir().join(format!("berth-tarw-{}", crate::util::uuid4()));
        fs::create_dir_all(&d).unwrap();
        fs::write(d.join("old"), "x").unwrap();
        let f = File::options().write(true).open(d.join("old")).unwrap();
        f.set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(1000))
            .unwrap();
        let t = walk(&d).unwrap();
        let mut w = TarWriter::new(Vec::new(), Some(5000));
        w.append_changes(
            &d,
            &[
                Change::Whiteout("etc/.wh.gone".into()),
                Change::Entry(&t.entries[0]),
            ],
        )
        .unwrap();
        let bytes = w.finish().unwrap();
        let mut ar = tar::Archive::new(&bytes[..]);
        let hs: Vec<(String, u64)> = ar
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.path().unwrap().display().to_string(),
                    e.header().mtime().unwrap(),
                )
            })
            .collect();
        // an older mtime is kept, the whiteout gets the clamp
        assert_eq!(
            hs,
            [
                ("etc/.wh.gone".to_string(), 5000),
                ("old".to_string(), 1000)
            ]
        );
        fs::remove_dir_all(&d).unwrap();
    }
}

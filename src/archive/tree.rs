//! A directory tree as data: every entry's path and metadata, in the order a
//! reproducible tar wants (sorted by path, a directory right before its content),
//! and the difference between two such snapshots as a layer sees it.
//!
//! Change detection compares recorded metadata — type, mode, owner, size, mtime
//! and ctime to the nanosecond, inode, device numbers, link target — rather than
//! hashing content: any write or chmod moves ctime, and a file replaced by rename
//! has a new inode, so a gigabyte root is compared in the time of one `lstat` per
//! entry. Deletions become OCI whiteouts (`.wh.NAME`), only for the topmost deleted
//! entry: a removed directory is one whiteout, not one per file.
//!
//! Walks never leave the root's filesystem: a directory on another device (a
//! `/proc` or bind mount some stage left behind) is recorded but not entered.

use crate::error::{Context, Error, Result};
use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

/// Type of an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    File,
    Dir,
    Symlink,
    Char,
    Block,
    Fifo,
    /// Sockets are recorded (they count as files) but never archived.
    Socket,
}

/// What a snapshot records about an entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta {
    pub kind: EntryKind,
    /// Permission bits with set-id and sticky (`st_mode & 07777`).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub mtime: i64,
    pub mtime_nsec: i64,
    pub ctime: i64,
    pub ctime_nsec: i64,
    pub ino: u64,
    pub dev: u64,
    pub nlink: u64,
    pub rdev: u64,
    pub target: Option<PathBuf>,
}

impl Meta {
    /// Metadata of `path` (not following a final symlink) as a snapshot records it.
    pub fn read(path: &Path) -> Result<Meta> {
        let m = fs::symlink_metadata(path).with_context(|| format!("lstat {}", path.display()))?;
        let ft = m.file_type();
        let kind = if ft.is_file() {
            EntryKind::File
        } else if ft.is_dir() {
            EntryKind::Dir
        } else if ft.is_symlink() {
            EntryKind::Symlink
        } else if ft.is_char_device() {
            EntryKind::Char
        } else if ft.is_block_device() {
            EntryKind::Block
        } else if ft.is_fifo() {
            EntryKind::Fifo
        } else {
            EntryKind::Socket
        };
        let target = if kind == EntryKind::Symlink {
            Some(fs::read_link(path).with_context(|| format!("read link {}", path.display()))?)
        } else {
            None
        };
        Ok(Meta {
            kind,
            mode: m.mode() & 0o7777,
            uid: m.uid(),
            gid: m.gid(),
            size: if kind == EntryKind::File { m.size() } else { 0 },
            mtime: m.mtime(),
            mtime_nsec: m.mtime_nsec(),
            ctime: m.ctime(),
            ctime_nsec: m.ctime_nsec(),
            ino: m.ino(),
            dev: m.dev(),
            nlink: m.nlink(),
            rdev: m.rdev(),
            target,
        })
    }
}

/// One entry: its path relative to the root (no leading `/`) and metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub path: PathBuf,
    pub meta: Meta,
    /// Content digest of a regular file whose ctime was within a second of the
    /// walk: on coarse clocks a same-size rewrite in that tick leaves the
    /// metadata as it was, so such files are compared by content (git's "racy"
    /// rule).
    pub racy: Option<crate::digest::Digest>,
}

/// A snapshot of a tree, in archive order. The root itself is not an entry.
#[derive(Debug, Clone, Default)]
pub struct Tree {
    pub entries: Vec<Entry>,
}

/// One item of a layer: an entry to archive, or a whiteout for a deleted one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change<'a> {
    Entry(&'a Entry),
    /// The whiteout's own path (`dir/.wh.NAME`).
    Whiteout(PathBuf),
}

impl Change<'_> {
    pub fn path(&self) -> &Path {
        match self {
            Change::Entry(e) => &e.path,
            Change::Whiteout(p) => p,
        }
    }
}

/// Snapshot `root`: every entry below it, directories before their content and
/// siblings sorted by name (bytes), without entering other filesystems.
pub fn walk(root: &Path) -> Result<Tree> {
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let top = fs::symlink_metadata(root).with_context(|| format!("lstat {}", root.display()))?;
    if !top.is_dir() {
        return Err(Error::invalid(format!(
            "{} is not a directory",
            root.display()
        )));
    }
    let mut entries = Vec::new();
    walk_dir(
        root,
        &mut PathBuf::new(),
        top.dev(),
        started - 1,
        &mut entries,
    )?;
    Ok(Tree { entries })
}

fn content_digest(path: &Path) -> Result<crate::digest::Digest> {
    let mut r = crate::digest::HashingReader::new(
        fs::File::open(path).with_context(|| format!("read {}", path.display()))?,
        crate::digest::Algorithm::Sha256,
    );
    std::io::copy(&mut r, &mut std::io::sink())
        .with_context(|| format!("read {}", path.display()))?;
    Ok(r.finish().0)
}

fn walk_dir(
    root: &Path,
    rel: &mut PathBuf,
    dev: u64,
    racy_from: i64,
    out: &mut Vec<Entry>,
) -> Result<()> {
    let dir = root.join(&*rel);
    let mut names: Vec<OsString> = fs::read_dir(&dir)
        .with_context(|| format!("read {}", dir.display()))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<std::io::Result<_>>()
        .with_context(|| format!("read {}", dir.display()))?;
    names.sort();
    for n in names {
        rel.push(&n);
        let meta = Meta::read(&root.join(&*rel))?;
        let descend = meta.kind == EntryKind::Dir && meta.dev == dev;
        let racy = if meta.kind == EntryKind::File && meta.ctime >= racy_from {
            Some(content_digest(&root.join(&*rel))?)
        } else {
            None
        };
        out.push(Entry {
            path: rel.clone(),
            meta,
            racy,
        });
        if descend {
            walk_dir(root, rel, dev, racy_from, out)?;
        }
        rel.pop();
    }
    Ok(())
}

impl Tree {
    /// Number of entries (of every type).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Bytes of regular files, each hard-linked file counted once: what the tar
    /// of this tree carries as content.
    pub fn bytes(&self) -> u64 {
        let mut seen = HashSet::new();
        self.entries
            .iter()
            .filter(|e| e.meta.kind == EntryKind::File)
            .filter(|e| e.meta.nlink < 2 || seen.insert((e.meta.dev, e.meta.ino)))
            .map(|e| e.meta.size)
            .sum()
    }

    /// Every entry, as a layer holding the whole tree.
    pub fn all(&self) -> Vec<Change<'_>> {
        self.entries.iter().map(Change::Entry).collect()
    }

    /// What changed from `self` (the lower state) to `new`, a walk of `root`:
    /// entries that are new or whose metadata differs — or, for files that were
    /// racy when `self` was taken, whose content differs — and whiteouts for the
    /// topmost deleted entries, in archive order.
    pub fn diff<'a>(&self, new: &'a Tree, root: &Path) -> Vec<Change<'a>> {
        let old: HashMap<&Path, &Entry> =
            self.entries.iter().map(|e| (e.path.as_path(), e)).collect();
        let now: HashMap<&Path, &Meta> = new
            .entries
            .iter()
            .map(|e| (e.path.as_path(), &e.meta))
            .collect();
        let changed = |e: &Entry| match old.get(e.path.as_path()) {
            None => true,
            Some(o) if o.meta != e.meta => true,
            // same metadata: a racy file may still have been rewritten in its tick
            Some(o) => match (&o.racy, &e.racy) {
                (None, _) => false,
                (Some(a), Some(b)) => a != b,
                (Some(a), None) => content_digest(&root.join(&e.path)).map_or(true, |b| *a != b),
            },
        };
        let mut out: Vec<Change<'a>> = new
            .entries
            .iter()
            .filter(|e| changed(e))
            .map(Change::Entry)
            .collect();
        for e in &self.entries {
            if now.contains_key(e.path.as_path()) {
                continue;
            }
            let parent = e.path.parent().unwrap_or(Path::new(""));
            // Only where the parent still is a directory: a deleted parent has its
            // own whiteout, a parent replaced by a non-directory hides it anyway.
            let parent_is_dir = parent.as_os_str().is_empty()
                || now.get(parent).is_some_and(|m| m.kind == EntryKind::Dir);
            if parent_is_dir {
                let mut name = OsString::from(".wh.");
                name.push(e.path.file_name().unwrap_or_default());
                out.push(Change::Whiteout(parent.join(name)));
            }
        }
        out.sort_by(|a, b| a.path().cmp(b.path()));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(c: &[Change]) -> Vec<String> {
        c.iter()
            .map(|c| match c {
                Change::Entry(e) => e.path.display().to_string(),
                Change::Whiteout(p) => format!("-{}", p.display()),
            })
            .collect()
    }

    #[test]
    fn walk_order_and_diff() {
        let d = std::env::temp_dir().join(format!("berth-tree-{}", crate::util::uuid4()));
        fs::create_dir_all(d.join("a/b")).unwrap();
        fs::create_dir_all(d.join("gone/deep")).unwrap();
        fs::write(d.join("a-b"), "1").unwrap();
        fs::write(d.join("a/b/c"), "22").unwrap();
        fs::write(d.join("a/x"), "333").unwrap();
        fs::write(d.join("gone/deep/f"), "4444").unwrap();
        fs::hard_link(d.join("a/x"), d.join("a/y")).unwrap();
        std::os::unix::fs::symlink("a/x", d.join("link")).unwrap();
        let t1 = walk(&d).unwrap();
        let order: Vec<String> = t1
            .entries
            .iter()
            .map(|e| e.path.display().to_string())
            .collect();
        assert_eq!(
            order,
            [
                "a",
                "a/b",
                "a/b/c",
                "a/x",
                "a/y",
                "a-b",
                "gone",
                "gone/deep",
                "gone/deep/f",
                "link"
            ]
        );
        assert_eq!(t1.bytes(), 1 + 2 + 3 + 4, "hard link counted once");
        assert_eq!(t1.entries[9].meta.target.as_deref(), Some(Path::new("a/x")));
        assert!(t1.diff(&t1, &d).is_empty());

        // change content, mode only, delete a tree and a file, add one
        fs::write(d.join("a/b/c"), "23").unwrap();
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(d.join("a-b"), fs::Permissions::from_mode(0o600)).unwrap();
        fs::remove_dir_all(d.join("gone")).unwrap();
        fs::remove_file(d.join("link")).unwrap();
        fs::write(d.join("new"), "n").unwrap();
        let t2 = walk(&d).unwrap();
        assert_eq!(
            paths(&t1.diff(&t2, &d)),
            ["-.wh.gone", "-.wh.link", "a/b/c", "a-b", "new"]
        );
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_same_size_rewrite_in_the_same_tick_is_seen() {
        let d = std::env::temp_dir().join(format!("berth-racy-{}", crate::util::uuid4()));
        fs::create_dir_all(&d).unwrap();
        fs::write(d.join("vars"), "KEY=a\n").unwrap();
        let t1 = walk(&d).unwrap();
        assert!(
            t1.entries[0].racy.is_some(),
            "a file written just now is racy"
        );
        // same size, and put its times back: metadata can no longer tell
        let m = fs::metadata(d.join("vars")).unwrap();
        fs::write(d.join("vars"), "KEY=b\n").unwrap();
        let f = fs::File::options()
            .write(true)
            .open(d.join("vars"))
            .unwrap();
        f.set_modified(m.modified().unwrap()).unwrap();
        let mut t2 = walk(&d).unwrap();
        t2.entries[0].meta = t1.entries[0].meta.clone();
        assert_eq!(paths(&t1.diff(&t2, &d)), ["vars"]);
        // a later walk that no longer finds it racy reads the content to decide
        t2.entries[0].racy = None;
        assert_eq!(paths(&t1.diff(&t2, &d)), ["vars"]);
        let t3 = walk(&d).unwrap();
        assert!(t3.diff(&t3, &d).is_empty());
        fs::remove_dir_all(&d).unwrap();
    }
}

//! File operations confined to a root directory, as if it were `/`.
//!
//! An image root is built by package managers and scripts we do not control: it is
//! full of symlinks, and some point to absolute paths (`/etc/localtime ->
//! /usr/share/zoneinfo/UTC`) that mean the *image's* `/`, not the host's. Code that
//! writes into the root on the host (mkimage's copy, append, set, remove, devices)
//! must therefore never hand a root-relative path with symlinks in it to the
//! kernel. [`Root::resolve`] walks a path component by component with `lstat`,
//! following a symlink only as the image would see it: an absolute target restarts
//! at the root, and `..` never climbs above it. The host path it returns has no
//! symlink in any existing component but (optionally) the last, so using it cannot
//! leave the root — as long as nobody changes the tree meanwhile (mkimage runs its
//! file operations between stages, when nothing else writes there).
//!
//! Kernels the site runs (SL6's 2.6.32, SL7's 3.10) lack `openat2(RESOLVE_IN_ROOT)`,
//! which is why this is done in user space.
//!
//! Removal ([`Root::remove_matching`]) never follows symlinks at all and never
//! crosses into another filesystem mounted inside the root.

use super::glob::Glob;
use crate::error::{Context, Error, Kind, Result};
use std::ffi::OsString;
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

/// Symlinks followed while resolving one path before giving up (Linux's limit).
const MAX_LINKS: usize = 40;

/// A directory treated as `/` for the paths given to it.
#[derive(Debug, Clone)]
pub struct Root {
    dir: PathBuf,
}

/// What [`Root::remove_matching`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Removed {
    /// Entries removed (a removed directory counts with everything in it).
    pub entries: u64,
    /// Bytes of regular files removed.
    pub bytes: u64,
}

fn parts(p: &Path) -> Vec<OsString> {
    p.components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some(OsString::from("..")),
            _ => None,
        })
        .collect()
}

/// `/a/b` for messages, from components.
fn shown(stack: &[OsString]) -> String {
    let mut s = String::new();
    for c in stack {
        s.push('/');
        s.push_str(&c.to_string_lossy());
    }
    if s.is_empty() {
        s.push('/');
    }
    s
}

impl Root {
    pub fn new(dir: impl Into<PathBuf>) -> Root {
        Root { dir: dir.into() }
    }

    /// The root's host path.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// The host path of `p` (absolute or relative, both taken from the root),
    /// with every symlink on the way resolved inside the root; a symlink in the
    /// last component is followed only with `follow_last`. Components that do not
    /// exist yet are kept as they are (for creating them).
    pub fn resolve(&self, p: &Path, follow_last: bool) -> Result<PathBuf> {
        Ok(self.dir.join(self.resolve_rel(p, follow_last)?))
    }

    /// Like [`Root::resolve`], but the path relative to the root.
    pub fn resolve_rel(&self, p: &Path, follow_last: bool) -> Result<PathBuf> {
        let mut stack: Vec<OsString> = Vec::new();
        let mut todo: std::collections::VecDeque<OsString> = parts(p).into();
        let mut links = 0;
        while let Some(c) = todo.pop_front() {
            if c == ".." {
                stack.pop();
                continue;
            }
            let last = todo.is_empty();
            let mut host = self.dir.clone();
            host.extend(&stack);
            host.push(&c);
            match fs::symlink_metadata(&host) {
                Ok(m) if m.file_type().is_symlink() && (!last || follow_last) => {
                    links += 1;
                    if links > MAX_LINKS {
                        return Err(Error::invalid(format!(
                            "{}: too many levels of symbolic links",
                            p.display()
                        )));
                    }
                    let target = fs::read_link(&host)
                        .with_context(|| format!("read link {}", host.display()))?;
                    if target.is_absolute() {
                        stack.clear();
                    }
                    let mut next: std::collections::VecDeque<OsString> = parts(&target).into();
                    next.extend(todo);
                    todo = next;
                }
                Ok(m) if !last && !m.is_dir() => {
                    stack.push(c);
                    return Err(Error::invalid(format!(
                        "{}: {} is not a directory in the root",
                        p.display(),
                        shown(&stack)
                    )));
                }
                Ok(_) => stack.push(c),
                Err(e) if e.kind() == io::ErrorKind::NotFound => stack.push(c),
                Err(e) => {
                    return Err(Error::from(e).context(format!("lstat {}", host.display())));
                }
            }
        }
        Ok(stack.iter().collect())
    }

    /// Open the regular file `p` for reading, every symlink on the way resolved
    /// inside the root; a path that is missing, or is not a regular file once
    /// resolved, is an error naming `p`. The resolved path is opened with
    /// `O_NOFOLLOW`, so nothing swapped in meanwhile leads out either.
    pub fn open_file(&self, p: &Path) -> Result<fs::File> {
        use std::os::unix::fs::OpenOptionsExt;
        let host = self.resolve(p, true)?;
        let f = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&host)
            .map_err(|e| Error::from(e).context(p.display().to_string()))?;
        if !f.metadata()?.is_file() {
            return Err(Error::invalid(format!(
                "{}: not a regular file",
                p.display()
            )));
        }
        Ok(f)
    }

    /// True when `p` resolves (inside the root) to a regular file.
    pub fn is_file(&self, p: &Path) -> bool {
        self.resolve(p, true)
            .and_then(|h| Ok(fs::symlink_metadata(h)?))
            .is_ok_and(|m| m.is_file())
    }

    /// Make the directory `p` and its missing parents (with `mode`, root-owned as
    /// whoever runs this), resolving symlinks inside the root; its host path.
    pub fn create_dir_all(&self, p: &Path, mode: u32) -> Result<PathBuf> {
        use std::os::unix::fs::DirBuilderExt;
        let rel = self.resolve_rel(p, true)?;
        let mut host = self.dir.clone();
        for c in rel.components() {
            host.push(c);
            match fs::symlink_metadata(&host) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => {
                    return Err(Error::new(
                        Kind::Conflict,
                        format!(
                            "{}: /{} exists and is not a directory",
                            p.display(),
                            host.strip_prefix(&self.dir).unwrap_or(&host).display()
                        ),
                    ));
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    fs::DirBuilder::new()
                        .mode(mode)
                        .create(&host)
                        .with_context(|| format!("create {}", host.display()))?;
                }
                Err(e) => return Err(Error::from(e).context(host.display())),
            }
        }
        Ok(host)
    }

    /// The host path for a new or replaced entry `p`: its parent is made (0755)
    /// and resolved inside the root; the last component is not followed.
    pub fn prepare_parent(&self, p: &Path) -> Result<PathBuf> {
        let name = p.file_name().ok_or_else(|| {
            Error::invalid(format!("{}: names no file inside the root", p.display()))
        })?;
        let parent = p.parent().unwrap_or(Path::new("/"));
        Ok(self.create_dir_all(parent, 0o755)?.join(name))
    }

    /// Remove every entry matching one of `remove` unless it matches one of
    /// `keep`. A directory that matches but holds something to keep is emptied
    /// of the rest and stays. Symlinks are never followed (a matching symlink is
    /// itself removed) and other filesystems mounted inside are never entered.
    pub fn remove_matching(&self, remove: &[Glob], keep: &[Glob]) -> Result<Removed> {
        let dev = fs::symlink_metadata(&self.dir)
            .with_context(|| format!("lstat {}", self.dir.display()))?
            .dev();
        let mut out = Removed::default();
        self.remove_in(&mut Vec::new(), false, remove, keep, dev, &mut out)?;
        Ok(out)
    }

    fn remove_in(
        &self,
        rel: &mut Vec<OsString>,
        inherited: bool,
        remove: &[Glob],
        keep: &[Glob],
        dev: u64,
        out: &mut Removed,
    ) -> Result<()> {
        let mut host = self.dir.clone();
        host.extend(rel.iter());
        let mut names: Vec<OsString> = match fs::read_dir(&host) {
            Ok(rd) => rd
                .map(|e| e.map(|e| e.file_name()))
                .collect::<io::Result<_>>()
                .with_context(|| format!("read {}", host.display()))?,
            Err(e) => return Err(Error::from(e).context(format!("read {}", host.display()))),
        };
        names.sort();
        for name in names {
            rel.push(name);
            let path = host.join(rel.last().unwrap());
            let m =
                fs::symlink_metadata(&path).with_context(|| format!("lstat {}", path.display()))?;
            let real_dir = m.is_dir() && m.dev() == dev;
            if keep.iter().any(|k| k.matches(rel)) {
                rel.pop();
                continue;
            }
            let hit = inherited || remove.iter().any(|g| g.matches(rel));
            if hit {
                if real_dir && keep.iter().any(|k| k.may_match_below(rel)) {
                    self.remove_in(rel, true, remove, keep, dev, out)?;
                } else {
                    remove_tree(&path, &m, dev, out)?;
                }
            } else if real_dir && remove.iter().any(|g| g.may_match_below(rel)) {
                self.remove_in(rel, false, remove, keep, dev, out)?;
            }
            rel.pop();
        }
        Ok(())
    }
}

// Remove a file, link or directory tree without following symlinks, refusing to
// descend into another filesystem (a bind mount left inside the root).
fn remove_tree(path: &Path, m: &fs::Metadata, dev: u64, out: &mut Removed) -> Result<()> {
    if m.is_dir() {
        if m.dev() != dev {
            return Err(Error::new(
                Kind::Conflict,
                format!(
                    "{} is a mount point inside the root: unmount it first",
                    path.display()
                ),
            ));
        }
        for e in fs::read_dir(path).with_context(|| format!("read {}", path.display()))? {
            let e = e.with_context(|| format!("read {}", path.display()))?;
            let p = e.path();
            let cm = fs::symlink_metadata(&p).with_context(|| format!("lstat {}", p.display()))?;
            remove_tree(&p, &cm, dev, out)?;
        }
        fs::remove_dir(path).with_context(|| format!("remove {}", path.display()))?;
    } else {
        if m.is_file() {
            out.bytes += m.len();
        }
        fs::remove_file(path).with_context(|| format!("remove {}", path.display()))?;
    }
    out.entries += 1;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn tmp(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("berth-confined-{tag}-{}", crate::util::uuid4()));
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn symlinks_resolve_as_if_the_root_were_slash() {
        let outside = tmp("outside");
        let d = tmp("root");
        let r = Root::new(&d);
        fs::create_dir_all(d.join("usr/share/zoneinfo")).unwrap();
        fs::write(d.join("usr/share/zoneinfo/UTC"), "tz").unwrap();
        fs::create_dir_all(d.join("etc")).unwrap();
        symlink("/usr/share/zoneinfo/UTC", d.join("etc/localtime")).unwrap();
        symlink(&outside, d.join("escape")).unwrap();
        symlink("../../../../..", d.join("etc/up")).unwrap();
        symlink("loop", d.join("loop")).unwrap();
        assert_eq!(
            r.resolve(Path::new("/etc/localtime"), true).unwrap(),
            d.join("usr/share/zoneinfo/UTC")
        );
        assert_eq!(
            r.resolve(Path::new("/etc/localtime"), false).unwrap(),
            d.join("etc/localtime")
        );
        // an absolute host path in a link means the same path inside the root
        let inside = r.resolve(Path::new("/escape/passwd"), true).unwrap();
        assert!(inside.starts_with(&d), "{}", inside.display());
        assert_eq!(
            inside,
            d.join(outside.strip_prefix("/").unwrap()).join("passwd")
        );
        // .. stops at the root, both literal and through links
        assert_eq!(
            r.resolve(Path::new("../../etc/../../x"), true).unwrap(),
            d.join("x")
        );
        assert_eq!(
            r.resolve(Path::new("/etc/up/etc/hosts"), true).unwrap(),
            d.join("etc/hosts")
        );
        let e = r.resolve(Path::new("/loop/x"), true).unwrap_err();
        assert!(e.to_string().contains("too many levels"), "{e}");
        fs::write(d.join("file"), "").unwrap();
        let e = r.resolve(Path::new("/file/x"), true).unwrap_err();
        assert!(e.to_string().contains("/file is not a directory"), "{e}");
        // creating through the escaping link stays inside
        let made = r.create_dir_all(Path::new("/escape/sub"), 0o755).unwrap();
        assert!(made.starts_with(&d) && made.is_dir());
        assert!(!outside.join("sub").exists());
        fs::remove_dir_all(&d).unwrap();
        fs::remove_dir_all(&outside).unwrap();
    }

    #[test]
    fn remove_matching_keeps_and_never_follows_links() {
        let outside = tmp("outside");
        fs::write(outside.join("precious"), "x").unwrap();
        let d = tmp("root");
        for p in [
            "usr/share/locale/de/LC_MESSAGES",
            "usr/share/locale/en_US/LC_MESSAGES",
            "usr/share/locale/en/LC_MESSAGES",
            "usr/share/man/man1",
            "usr/share/doc/pkg",
        ] {
            fs::create_dir_all(d.join(p)).unwrap();
        }
        fs::write(d.join("usr/share/locale/de/LC_MESSAGES/a.mo"), "de").unwrap();
        fs::write(d.join("usr/share/locale/en_US/LC_MESSAGES/a.mo"), "us").unwrap();
        fs::write(d.join("usr/share/locale/locale.alias"), "alias").unwrap();
        fs::write(d.join("usr/share/man/man1/ls.1"), "man").unwrap();
        fs::write(d.join("usr/share/doc/pkg/README"), "doc").unwrap();
        symlink(&outside, d.join("usr/share/doc/link")).unwrap();
        symlink(&outside, d.join("usr/share/man/man1/evil")).unwrap();
        let r = Root::new(&d);
        let g = |s: &str| Glob::parse(s).unwrap();
        let out = r
            .remove_matching(
                &[
                    g("/usr/share/locale/*"),
                    g("/usr/share/man"),
                    g("/usr/share/doc/**"),
                ],
                &[g("/usr/share/locale/en_US"), g("/usr/share/locale/*.alias")],
            )
            .unwrap();
        assert!(!d.join("usr/share/locale/de").exists());
        assert!(!d.join("usr/share/locale/en").exists());
        assert!(d.join("usr/share/locale/en_US/LC_MESSAGES/a.mo").exists());
        assert!(d.join("usr/share/locale/locale.alias").exists());
        assert!(!d.join("usr/share/man").exists());
        assert!(d.join("usr/share/doc").is_dir());
        assert_eq!(fs::read_dir(d.join("usr/share/doc")).unwrap().count(), 0);
        assert!(outside.join("precious").exists(), "followed a symlink out");
        assert_eq!(out.bytes, 2 + 3 + 3);
        fs::remove_dir_all(&d).unwrap();
        fs::remove_dir_all(&outside).unwrap();
    }
}

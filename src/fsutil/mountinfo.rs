//! The mount table as the kernel shows it in `/proc/PID/mountinfo`: what is
//! mounted where, with which filesystem and options. mkimage refuses to remove a
//! root with something still mounted in it, the engine checks that a container
//! left no mount behind, and the cgroup code finds its hierarchies here.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

/// One line of mountinfo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub id: u32,
    pub parent: u32,
    /// The path inside the filesystem that is mounted (`/` for a whole one).
    pub root: PathBuf,
    pub mount_point: PathBuf,
    /// Per-mount options (`rw,nosuid,relatime`).
    pub options: String,
    pub fstype: String,
    pub source: String,
    /// Per-filesystem options (for cgroup v1: the controllers).
    pub super_options: String,
}

impl Mount {
    pub fn read_only(&self) -> bool {
        self.options.split(',').any(|o| o == "ro")
    }
}

/// Undo mountinfo's octal escapes (`\040` for a space, also tab, newline, `\`).
pub fn unescape(s: &str) -> PathBuf {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    PathBuf::from(OsString::from_vec(out))
}

/// Parse mountinfo text; lines that do not parse are skipped.
pub fn parse(text: &str) -> Vec<Mount> {
    text.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<Mount> {
    // id parent major:minor root mount_point options [optional fields...] - fstype source super
    let (head, tail) = line.split_once(" - ")?;
    let h: Vec<&str> = head.split(' ').collect();
    let t: Vec<&str> = tail.splitn(3, ' ').collect();
    if h.len() < 6 || t.len() < 2 {
        return None;
    }
    Some(Mount {
        id: h[0].parse().ok()?,
        parent: h[1].parse().ok()?,
        root: unescape(h[3]),
        mount_point: unescape(h[4]),
        options: h[5].to_string(),
        fstype: t[0].to_string(),
        source: t[1].to_string(),
        super_options: t.get(2).copied().unwrap_or("").to_string(),
    })
}

/// The calling process's mount table.
pub fn read() -> Vec<Mount> {
    parse(&std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default())
}

/// Mount points at or below `dir`, in the calling process's mount namespace.
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    read()
        .into_iter()
        .map(|m| m.mount_point)
        .filter(|p| p.starts_with(dir))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_and_escapes() {
        assert_eq!(unescape("/a\\040b/c"), PathBuf::from("/a b/c"));
        assert_eq!(unescape("/plain"), PathBuf::from("/plain"));
        assert_eq!(unescape("/x\\"), PathBuf::from("/x\\"));
        let text = "36 35 98:0 /mnt1 /mnt\\040two rw,noatime master:1 - ext3 /dev/root rw,errors=continue\n\
                    27 22 0:23 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid - cgroup cgroup rw,cpu,cpuacct\n\
                    broken line\n";
        let m = parse(text);
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].mount_point, PathBuf::from("/mnt two"));
        assert_eq!(m[0].root, PathBuf::from("/mnt1"));
        assert_eq!(m[0].fstype, "ext3");
        assert_eq!(m[1].super_options, "rw,cpu,cpuacct");
        assert!(!m[1].read_only());
        assert!(read().iter().any(|m| m.mount_point == Path::new("/")));
    }
}

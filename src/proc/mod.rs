//! Process plumbing shared by init, mkimage and the engine: signals on the
//! kernel's own 64-bit set ([`sig`]), the shell's exit-status rule, waiting for a
//! child and leaving with its status, the process tree from /proc, and output
//! that is safe between fork and exec (no allocation, no locks).
//!
//! Privileged steps (namespaces, mounts) are not here: they are `Op`s of the
//! [`crate::sys`] seam, which these helpers apply in forked children.

pub mod pty;
pub mod sig;

use std::collections::HashMap;

/// The exit code a shell reports for a wait(2) status: the code itself, or
/// 128 + the signal that ended the process (and 125 for anything else).
pub fn status_code(status: i32) -> i32 {
    if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else if libc::WIFSIGNALED(status) {
        128 + libc::WTERMSIG(status)
    } else {
        125
    }
}

/// In a forked child that only waits: close every descriptor, wait for `pid`
/// (retrying on EINTR) and `_exit` with its [`status_code`]. Used where a
/// process must stay between its parent and a command (the first process of a
/// new PID namespace is the command, its parent reports the status).
pub fn wait_and_exit(pid: libc::pid_t) -> ! {
    // SAFETY: plain syscalls in a single-threaded forked child; never returns.
    unsafe {
        for fd in 0..1024 {
            libc::close(fd);
        }
        let mut status = 0;
        loop {
            let r = libc::waitpid(pid, &mut status, 0);
            if r == pid {
                break;
            }
            if r < 0 && errno() != libc::EINTR {
                libc::_exit(125);
            }
        }
        libc::_exit(status_code(status))
    }
}

/// The calling thread's errno.
pub fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// strerror without allocating (safe after fork).
pub fn strerror(e: i32, buf: &mut [u8; 128]) -> &[u8] {
    // SAFETY: the XSI strerror_r (what the libc crate binds for glibc and musl)
    // writes a NUL-terminated message into buf.
    unsafe { libc::strerror_r(e, buf.as_mut_ptr() as *mut libc::c_char, buf.len()) };
    let n = buf.iter().position(|&b| b == 0).unwrap_or(0);
    &buf[..n]
}

/// A non-negative number in decimal, without allocating (safe after fork).
pub fn decimal(mut n: i32, buf: &mut [u8; 12]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n <= 0 {
            break;
        }
    }
    &buf[i..]
}

/// Write the parts to stderr with write(2) (safe after fork).
pub fn raw_write(parts: &[&[u8]]) {
    raw_write_fd(2, parts)
}

/// Write the parts to `fd` with write(2) (safe after fork).
pub fn raw_write_fd(fd: i32, parts: &[&[u8]]) {
    for p in parts {
        // SAFETY: writing a live buffer; a short or failed write of a
        // diagnostic is not worth handling.
        unsafe { libc::write(fd, p.as_ptr() as *const libc::c_void, p.len()) };
    }
}

/// Every descendant of `me`, from /proc. `None` when /proc is not this PID
/// namespace's: its numbers would name other processes.
pub fn descendants(me: i32) -> Option<Vec<i32>> {
    let own = std::fs::read_link("/proc/self").ok()?;
    if own.as_os_str() != me.to_string().as_str() {
        return None;
    }
    let mut children: HashMap<i32, Vec<i32>> = HashMap::new();
    for e in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        if let Some(ppid) = parent_of(&stat) {
            children.entry(ppid).or_default().push(pid);
        }
    }
    let mut out = Vec::new();
    let mut todo = vec![me];
    while let Some(p) = todo.pop() {
        if let Some(kids) = children.get(&p) {
            for &k in kids {
                out.push(k);
                todo.push(k);
            }
        }
    }
    Some(out)
}

/// The parent pid from a /proc/PID/stat line; the command name in parentheses
/// may itself hold spaces and parentheses, so read after the last ')'.
pub fn parent_of(stat: &str) -> Option<i32> {
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// Drop this process's page-table entries for its own binary's read-only,
/// never-written pages (code and constants), returning the KiB let go.
///
/// A long-lived helper re-executed from the one static binary (the engine's
/// per-container shim) touches code all over it while it starts — and the
/// kernel maps 64 KiB around every fault — then spends days in a small loop.
/// The pages stay in the page cache, shared by every process of the binary; a
/// page the loop needs again is mapped back by a minor fault. Pages written
/// since the mapping was made (copy-on-write: `Anonymous` in smaps) are never
/// dropped, as that would lose the write.
pub fn trim_image_pages() -> usize {
    use std::os::unix::fs::MetadataExt;
    let Ok(exe) = std::fs::metadata("/proc/self/exe") else {
        return 0;
    };
    let Ok(smaps) = std::fs::read_to_string("/proc/self/smaps") else {
        return 0;
    };
    let mut kib = 0;
    for (start, end, rss) in clean_image_ranges(&smaps, exe.ino()) {
        // SAFETY: the range is a whole read-only private file mapping of our
        // own binary with no private (anonymous) pages: dropping it loses
        // nothing, the next access maps the page cache's copy again.
        if unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED) }
            == 0
        {
            kib += rss;
        }
    }
    kib
}

/// From /proc/self/smaps: `(start, end, rss KiB)` of every read-only private
/// mapping of inode `ino` that holds no anonymous (copied-on-write) page.
fn clean_image_ranges(smaps: &str, ino: u64) -> Vec<(usize, usize, usize)> {
    let mut out = Vec::new();
    let mut cur: Option<(usize, usize)> = None;
    let mut rss = 0;
    for line in smaps.lines() {
        let mut f = line.split_whitespace();
        let first = f.next().unwrap_or("");
        if let Some((a, b)) = first.split_once('-').filter(|_| !first.ends_with(':')) {
            // A mapping header: range perms offset dev inode [path]
            let perms = f.next().unwrap_or("");
            let inode = f.nth(2).and_then(|i| i.parse::<u64>().ok()).unwrap_or(0);
            cur = match (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16)) {
                (Ok(a), Ok(b))
                    if inode == ino
                        && ino != 0
                        && perms.starts_with('r')
                        && perms.ends_with('p')
                        && !perms.contains('w') =>
                {
                    Some((a, b))
                }
                _ => None,
            };
            rss = 0;
            continue;
        }
        let value = || f.clone().next().and_then(|v| v.parse::<usize>().ok());
        match first {
            "Rss:" => rss = value().unwrap_or(0),
            "Anonymous:" => {
                if let (Some(range), Some(0)) = (cur.take(), value()) {
                    out.push((range.0, range.1, rss));
                }
            }
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_clean_read_only_mappings_of_the_binary_are_trimmed() {
        let smaps = "\
00400000-00401000 r--p 00000000 00:2a 77 /usr/bin/berth
Rss:                   4 kB
Anonymous:             0 kB
00401000-00b30000 r-xp 00001000 00:2a 77 /usr/bin/berth
Rss:                3772 kB
Anonymous:             0 kB
00b30000-00d3c000 r--p 00730000 00:2a 77 /usr/bin/berth
Rss:                 640 kB
Anonymous:            12 kB
00d3c000-00d41000 rw-p 0093c000 00:2a 77 /usr/bin/berth
Rss:                  20 kB
Anonymous:             4 kB
7f0000000000-7f0000001000 r-xp 00000000 00:2a 99 /lib/other.so
Rss:                   4 kB
Anonymous:             0 kB
7fff545ab000-7fff545cc000 rw-p 00000000 00:00 0 [stack]
Rss:                  96 kB
Anonymous:            96 kB
";
        assert_eq!(
            clean_image_ranges(smaps, 77),
            vec![(0x400000, 0x401000, 4), (0x401000, 0xb30000, 3772)]
        );
        assert!(clean_image_ranges(smaps, 0).is_empty());
    }

    #[test]
    fn trimming_keeps_the_process_running() {
        // Dropping our own code pages must only cost minor faults.
        let _ = trim_image_pages();
        assert_eq!(decimal(1234, &mut [0; 12]), b"1234");
        let _ = trim_image_pages();
        assert_eq!(parent_of("1 (x) S 0"), Some(0));
    }

    #[test]
    fn numbers_print_without_allocating() {
        assert_eq!(decimal(0, &mut [0; 12]), b"0");
        assert_eq!(decimal(25, &mut [0; 12]), b"25");
        assert_eq!(decimal(i32::MAX, &mut [0; 12]), b"2147483647");
        assert_eq!(
            strerror(libc::ENOENT, &mut [0; 128]),
            b"No such file or directory"
        );
    }

    #[test]
    fn parent_pid_is_read_after_the_command_name() {
        assert_eq!(parent_of("42 (sh) S 7 42 42 0 -1"), Some(7));
        assert_eq!(parent_of("42 (a) b (c) R 9 1 1"), Some(9));
        assert_eq!(parent_of("garbage"), None);
    }

    #[test]
    fn exit_status_rule() {
        assert_eq!(status_code(3 << 8), 3);
        assert_eq!(status_code(libc::SIGKILL), 137);
        assert_eq!(status_code(libc::SIGTERM), 143);
    }
}

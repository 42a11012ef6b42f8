//! Linux capabilities by name, Docker's default set, and setting a process's
//! sets before it execs (bounding, permitted, effective, inheritable; ambient
//! cleared). A set is a bitmask of capability numbers (`1 << CAP_X`).

use crate::error::{Error, Result};

/// Every capability the kernel headers of 5.x–6.x define, by number.
pub const NAMES: [&str; 41] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

/// Docker's default capabilities (moby's `oci/caps/defaults.go`).
pub const DOCKER_DEFAULT: [&str; 14] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "FSETID",
    "FOWNER",
    "MKNOD",
    "NET_RAW",
    "SETGID",
    "SETUID",
    "SETFCAP",
    "SETPCAP",
    "NET_BIND_SERVICE",
    "SYS_CHROOT",
    "KILL",
    "AUDIT_WRITE",
];

/// The highest capability this kernel knows (from /proc), else the table's.
pub fn last_cap() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(NAMES.len() as u32 - 1)
}

/// Every capability as a mask.
pub fn all() -> u64 {
    let last = last_cap().min(63);
    if last == 63 {
        u64::MAX
    } else {
        (1u64 << (last + 1)) - 1
    }
}

/// A capability's number from `SYS_ADMIN`, `CAP_SYS_ADMIN` or `sys_admin`.
pub fn number(name: &str) -> Option<u32> {
    let n = name.trim().to_ascii_uppercase();
    let n = n.strip_prefix("CAP_").unwrap_or(&n);
    NAMES.iter().position(|c| *c == n).map(|i| i as u32)
}

/// `CAP_X` names of a mask, in number order.
pub fn names(mask: u64) -> Vec<String> {
    (0..64)
        .filter(|i| mask & (1u64 << i) != 0)
        .map(|i| match NAMES.get(i) {
            Some(n) => format!("CAP_{n}"),
            None => format!("CAP_{i}"),
        })
        .collect()
}

/// Docker's rule: start from the default set (everything when privileged), add
/// `add`, remove `drop`; `ALL` stands for every capability in either list. An
/// unknown name is an error in Docker's words.
pub fn effective_set(add: &[String], drop: &[String], privileged: bool) -> Result<u64> {
    if privileged {
        return Ok(all());
    }
    let parse = |list: &[String], what: &str| -> Result<(bool, u64)> {
        let mut all_of = false;
        let mut m = 0u64;
        for c in list {
            if c.eq_ignore_ascii_case("ALL") || c.eq_ignore_ascii_case("CAP_ALL") {
                all_of = true;
                continue;
            }
            let n = number(c).ok_or_else(|| {
                Error::invalid(format!("invalid {what}: unknown capability: {c:?}"))
            })?;
            m |= 1u64 << n;
        }
        Ok((all_of, m))
    };
    let (add_all, add_m) = parse(add, "CapAdd")?;
    let (drop_all, drop_m) = parse(drop, "CapDrop")?;
    let mut set = DOCKER_DEFAULT
        .iter()
        .filter_map(|c| number(c))
        .fold(0u64, |m, n| m | (1u64 << n));
    if drop_all {
        set = 0;
    }
    set &= !drop_m;
    if add_all {
        set = all();
    }
    set |= add_m;
    Ok(set & all())
}

#[repr(C)]
struct Header {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct Data {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const VERSION_3: u32 = 0x2008_0522;

/// Shrink the bounding set to `keep`: no exec after this can gain what is not
/// in it.
pub fn bound(keep: u64) -> std::io::Result<()> {
    for c in 0..=last_cap() {
        if keep & (1u64 << c) == 0 {
            // SAFETY: prctl with integer arguments.
            let rc = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, c as libc::c_ulong, 0, 0, 0) };
            if rc != 0 {
                let e = std::io::Error::last_os_error();
                // EINVAL: the kernel does not know this capability.
                if e.raw_os_error() != Some(libc::EINVAL) {
                    return Err(e);
                }
            }
        }
    }
    Ok(())
}

/// Set permitted, effective and inheritable to `keep` (they can only shrink
/// from what the process has) and clear the ambient set. Run in the process
/// about to exec. Capabilities the process does not hold itself are left out,
/// as runc leaves out what is unavailable: a host whose own bounding set lacks
/// one (a node run inside another container) still runs `--privileged` with
/// everything it has, and a process that became another user than root holds
/// none.
pub fn restrict(keep: u64) -> std::io::Result<()> {
    let keep = keep & current().map(|c| c.1)?;
    // SAFETY: prctl with integer arguments; older kernels without ambient
    // capabilities answer EINVAL, which leaves nothing to clear.
    unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        );
    }
    let lo = keep as u32;
    let hi = (keep >> 32) as u32;
    let data = [
        Data {
            effective: lo,
            permitted: lo,
            inheritable: lo,
        },
        Data {
            effective: hi,
            permitted: hi,
            inheritable: hi,
        },
    ];
    let mut h = Header {
        version: VERSION_3,
        pid: 0,
    };
    // SAFETY: capset with a v3 header and two data records, as the ABI says.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &mut h as *mut Header, data.as_ptr()) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The effective set of the calling process (for tests and diagnostics).
pub fn current_effective() -> std::io::Result<u64> {
    current().map(|c| c.0)
}

/// The capabilities the calling process holds (its permitted set): all a
/// process it starts can keep.
pub fn held() -> std::io::Result<u64> {
    current().map(|c| c.1)
}

/// The calling process's (effective, permitted) sets.
fn current() -> std::io::Result<(u64, u64)> {
    let mut h = Header {
        version: VERSION_3,
        pid: 0,
    };
    let mut data = [Data::default(); 2];
    // SAFETY: capget fills two data records for a v3 header.
    let rc = unsafe { libc::syscall(libc::SYS_capget, &mut h as *mut Header, data.as_mut_ptr()) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let both = |f: fn(&Data) -> u32| f(&data[0]) as u64 | ((f(&data[1]) as u64) << 32);
    Ok((both(|d| d.effective), both(|d| d.permitted)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> u64 {
        1u64 << number(s).unwrap()
    }

    #[test]
    fn docker_rules_for_add_and_drop() {
        let def = effective_set(&[], &[], false).unwrap();
        assert_eq!(names(def).len(), 14);
        assert_eq!(def & n("SYS_ADMIN"), 0);
        let s = effective_set(&["CAP_SYS_ADMIN".into()], &["net_raw".into()], false).unwrap();
        assert_ne!(s & n("SYS_ADMIN"), 0);
        assert_eq!(s & n("NET_RAW"), 0);
        assert_eq!(effective_set(&[], &["ALL".into()], false).unwrap(), 0);
        assert_eq!(
            effective_set(&["CHOWN".into()], &["ALL".into()], false).unwrap(),
            n("CHOWN")
        );
        assert_eq!(effective_set(&["ALL".into()], &[], false).unwrap(), all());
        let e = effective_set(&["CAP_FOO".into()], &[], false).unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid CapAdd: unknown capability: \"CAP_FOO\""
        );
        assert_eq!(number("cap_net_admin"), Some(12));
        assert_eq!(names(n("KILL")), vec!["CAP_KILL".to_string()]);
    }

    #[test]
    fn restrict_in_a_child_leaves_only_what_was_kept() {
        // In a forked child, so the test process keeps its capabilities.
        let keep = n("KILL") | n("CHOWN");
        // SAFETY: the child only makes system calls and exits.
        match unsafe { libc::fork() } {
            0 => {
                let ok = bound(keep).is_ok()
                    && restrict(keep).is_ok()
                    && current_effective().ok() == Some(keep);
                unsafe { libc::_exit(if ok { 0 } else { 1 }) }
            }
            pid => {
                let mut st = 0;
                unsafe { libc::waitpid(pid, &mut st, 0) };
                assert_eq!(crate::proc::status_code(st), 0);
            }
        }
    }

    #[test]
    fn everything_is_what_the_process_holds() {
        // `--privileged` on a host whose bounding set lacks some capability
        // (this machine's lacks SYS_RESOURCE): all that is held, no error.
        let (_, held) = current().unwrap();
        // SAFETY: the child only makes system calls and exits.
        match unsafe { libc::fork() } {
            0 => {
                let ok = bound(all()).is_ok()
                    && restrict(all()).is_ok()
                    && current_effective().ok() == Some(held);
                unsafe { libc::_exit(if ok { 0 } else { 1 }) }
            }
            pid => {
                let mut st = 0;
                unsafe { libc::waitpid(pid, &mut st, 0) };
                assert_eq!(crate::proc::status_code(st), 0);
            }
        }
    }
}

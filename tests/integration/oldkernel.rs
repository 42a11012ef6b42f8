//! Playing an old kernel: a seccomp filter, installed between fork and exec
//! of every berth process a test starts, that answers `ENOSYS` to each system
//! call newer than the target kernel and `EINVAL` to flags it did not know
//! (`O_TMPFILE`, `CLONE_NEWCGROUP`) — what SL7's 3.10 and SL6's 2.6.32 would
//! answer. The filter is inherited by everything berth starts (shims,
//! containers), so the whole engine plays the old kernel too.
//!
//! x86_64 numbers: 3.10's last call is finit_module (313); 314 onwards
//! (sched_setattr, renameat2, seccomp, getrandom, memfd_create, bpf, execveat,
//! userfaultfd, membarrier, mlock2, copy_file_range, preadv2, pkey_*, statx,
//! io_pgetevents, rseq) and 424 onwards (pidfd_*, io_uring_*, clone3,
//! close_range, openat2, faccessat2, epoll_pwait2, …) came later. 2.6.32's
//! last is perf_event_open (298): recvmmsg (299) and everything after it did
//! not exist.

use std::cell::Cell;
use std::process::Command;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernel {
    /// SL7
    V3_10,
    /// SL6
    V2_6_32,
}

thread_local! {
    static PLAYING: Cell<Option<Kernel>> = const { Cell::new(None) };
}

/// Run `f` with every berth process it starts (from this thread) under `k`'s
/// system-call table.
pub fn under<T>(k: Kernel, f: impl FnOnce() -> T) -> T {
    PLAYING.with(|p| p.set(Some(k)));
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            PLAYING.with(|p| p.set(None));
        }
    }
    let _r = Reset;
    f()
}

/// Called by the harness on every berth command.
pub fn apply(c: &mut Command) {
    let Some(k) = PLAYING.with(|p| p.get()) else {
        return;
    };
    let prog = program(k);
    use std::os::unix::process::CommandExt;
    // SAFETY: between fork and exec only prctl is called, on memory made
    // before the fork (the program is moved into the closure).
    unsafe {
        c.pre_exec(move || {
            let fprog = libc::sock_fprog {
                len: prog.len() as u16,
                filter: prog.as_ptr() as *mut libc::sock_filter,
            };
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
                || libc::prctl(
                    libc::PR_SET_SECCOMP,
                    libc::SECCOMP_MODE_FILTER,
                    &fprog as *const libc::sock_fprog,
                ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
const RET_ALLOW: u32 = 0x7fff_0000;
const RET_ERRNO: u32 = 0x0005_0000;
const O_TMPFILE_BIT: u32 = 0o2000_0000;
const CLONE_NEWCGROUP: u32 = 0x0200_0000;

fn stmt(code: u16, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(code: u16, k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

/// The BPF program for kernel `k`.
pub fn program(k: Kernel) -> Vec<libc::sock_filter> {
    const LD_W_ABS: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
    const JEQ: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
    const JGE: u16 = 0x35; // BPF_JMP | BPF_JGE | BPF_K
    const JSET: u16 = 0x45; // BPF_JMP | BPF_JSET | BPF_K
    const RET: u16 = 0x06; // BPF_RET | BPF_K
    let first_missing = match k {
        Kernel::V3_10 => 314,
        Kernel::V2_6_32 => 299,
    };
    // arg n's low 32 bits (little endian)
    let arg = |n: u32| 16 + 8 * n;
    let mut p = vec![
        stmt(LD_W_ABS, 4),                          // 0: arch
        jump(JEQ, AUDIT_ARCH_X86_64, 1, 0),         // 1
        stmt(RET, RET_ALLOW),                       // 2: another arch: not ours to judge
        stmt(LD_W_ABS, 0),                          // 3: nr
        jump(JGE, first_missing, 11, 0),            // 4 -> 16 ENOSYS
        jump(JEQ, libc::SYS_openat as u32, 4, 0),   // 5 -> 10
        jump(JEQ, libc::SYS_open as u32, 5, 0),     // 6 -> 12
        jump(JEQ, libc::SYS_clone as u32, 6, 0),    // 7 -> 14
        jump(JEQ, libc::SYS_unshare as u32, 5, 0),  // 8 -> 14
        stmt(RET, RET_ALLOW),                       // 9
        stmt(LD_W_ABS, arg(2)),                     // 10: openat flags
        jump(JSET, O_TMPFILE_BIT, 6, 5),            // 11 -> 18 EINVAL / 17 ALLOW
        stmt(LD_W_ABS, arg(1)),                     // 12: open flags
        jump(JSET, O_TMPFILE_BIT, 4, 3),            // 13 -> 18 / 17
        stmt(LD_W_ABS, arg(0)),                     // 14: clone/unshare flags
        jump(JSET, CLONE_NEWCGROUP, 2, 1),          // 15 -> 18 / 17
        stmt(RET, RET_ERRNO | libc::ENOSYS as u32), // 16
        stmt(RET, RET_ALLOW),                       // 17
        stmt(RET, RET_ERRNO | libc::EINVAL as u32), // 18
    ];
    // x32 calls (bit 30 set) are past the limit too
    p.truncate(19);
    p
}

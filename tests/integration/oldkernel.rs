//! Playing an old kernel: a seccomp filter, installed between fork and exec
//! of every berth process a test starts, that answers `ENOSYS` to each system
//! call newer than the target kernel and `EINVAL` to flags it did not know
//! (`O_TMPFILE`, `CLONE_NEWCGROUP`), to `prctl` options and to namespaces of
//! `clone`, `unshare` and `setns` — what SL7's 3.10 and SL6's 2.6.32 would
//! answer (`PR_SET_CHILD_SUBREAPER`, `PR_SET_NO_NEW_PRIVS`, seccomp filters,
//! `CLONE_NEWUSER` and `unshare(CLONE_NEWPID)` under 2.6.32; `PR_CAP_AMBIENT`
//! and `CLONE_NEWCGROUP` under both). The filter is inherited by everything
//! berth starts (shims, containers), so the whole engine plays the old kernel
//! too.
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
            // Root may install a filter without no_new_privs; leaving it off
            // keeps set-id programs working as they would on the old host.
            if (libc::geteuid() != 0 && libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
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
const CLONE_NEWUSER: u32 = 0x1000_0000;
const PR_SET_PTRACER: u32 = 0x5961_6d61;

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

const LD_W_ABS: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
const JEQ: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
const JGE: u16 = 0x35; // BPF_JMP | BPF_JGE | BPF_K
const JSET: u16 = 0x45; // BPF_JMP | BPF_JSET | BPF_K
const RET: u16 = 0x06; // BPF_RET | BPF_K

/// One answer for one system call whose argument `arg` (its low 32 bits)
/// passes `test` against `k`: JEQ equal, JGE at least, JSET any bit of.
struct Rule {
    nr: i64,
    arg: u32,
    test: u16,
    k: u32,
    ret: u32,
}

/// What kernel `k` said to arguments it did not know. Checked in order, so an
/// ALLOW can carve an exception out of a later range.
fn rules(k: Kernel) -> Vec<Rule> {
    let einval = RET_ERRNO | libc::EINVAL as u32;
    let rule = |nr: i64, arg: u32, test: u16, k: u32, ret: u32| Rule {
        nr,
        arg,
        test,
        k,
        ret,
    };
    // clone, unshare: namespaces the kernel had not got (2.6.32 had a
    // CLONE_NEWUSER flag, but no user namespace anyone could use: SL6 answers
    // EINVAL)
    let clone_flags = match k {
        Kernel::V3_10 => CLONE_NEWCGROUP,
        Kernel::V2_6_32 => CLONE_NEWCGROUP | CLONE_NEWUSER,
    };
    // unshare(CLONE_NEWPID) came in 3.8 (clone had it since 2.6.24)
    let unshare_flags = match k {
        Kernel::V3_10 => clone_flags,
        Kernel::V2_6_32 => clone_flags | libc::CLONE_NEWPID as u32,
    };
    let mut v = vec![
        rule(libc::SYS_openat, 2, JSET, O_TMPFILE_BIT, einval),
        rule(libc::SYS_open, 1, JSET, O_TMPFILE_BIT, einval),
        rule(libc::SYS_clone, 0, JSET, clone_flags, einval),
        rule(libc::SYS_unshare, 0, JSET, unshare_flags, einval),
    ];
    match k {
        Kernel::V3_10 => {
            // setns came in 3.0, its cgroup namespace in 4.6
            v.push(rule(libc::SYS_setns, 1, JSET, CLONE_NEWCGROUP, einval));
            // prctl: 3.10 knew options up to PR_GET_TID_ADDRESS (40) and
            // PR_SET_PTRACER (3.4); PR_SET_THP_DISABLE (41), PR_CAP_AMBIENT
            // (47), … came later
            v.push(rule(libc::SYS_prctl, 0, JEQ, PR_SET_PTRACER, RET_ALLOW));
            v.push(rule(libc::SYS_prctl, 0, JGE, 41, einval));
        }
        Kernel::V2_6_32 => {
            // setns is past 2.6.32's table. prctl: up to PR_MCE_KILL_GET
            // (34); PR_SET_MM (35), PR_SET_CHILD_SUBREAPER (36, 3.4),
            // PR_SET_NO_NEW_PRIVS (38, 3.5), PR_SET_PTRACER, … came later
            v.push(rule(libc::SYS_prctl, 0, JGE, 35, einval));
            // and seccomp filters (mode 2) in 3.5
            v.push(Rule {
                nr: libc::SYS_prctl,
                arg: 0,
                test: JEQ,
                k: libc::PR_SET_SECCOMP as u32,
                ret: u32::MAX,
            });
        }
    }
    v
}

/// The BPF program for kernel `k`.
pub fn program(k: Kernel) -> Vec<libc::sock_filter> {
    let first_missing = match k {
        Kernel::V3_10 => 314,
        Kernel::V2_6_32 => 299,
    };
    // arg n's low 32 bits (little endian)
    let arg = |n: u32| 16 + 8 * n;
    let einval = RET_ERRNO | libc::EINVAL as u32;
    let mut p = vec![
        stmt(LD_W_ABS, 4),                          // arch
        jump(JEQ, AUDIT_ARCH_X86_64, 1, 0),         //
        stmt(RET, RET_ALLOW),                       // another arch: not ours to judge
        stmt(LD_W_ABS, 0),                          // nr; x32 calls (bit 30) too
        jump(JGE, first_missing, 0, 1),             //
        stmt(RET, RET_ERRNO | libc::ENOSYS as u32), //
    ];
    for r in rules(k) {
        if r.ret == u32::MAX {
            // prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER): option and mode both
            p.extend([
                stmt(LD_W_ABS, 0),
                jump(JEQ, r.nr as u32, 0, 5),
                stmt(LD_W_ABS, arg(0)),
                jump(JEQ, r.k, 0, 3),
                stmt(LD_W_ABS, arg(1)),
                jump(JEQ, libc::SECCOMP_MODE_FILTER, 0, 1),
                stmt(RET, einval),
            ]);
            continue;
        }
        // not this call: on to the next rule; the test fails: likewise
        p.extend([
            stmt(LD_W_ABS, 0),
            jump(JEQ, r.nr as u32, 0, 3),
            stmt(LD_W_ABS, arg(r.arg)),
            jump(r.test, r.k, 0, 1),
            stmt(RET, r.ret),
        ]);
    }
    p.push(stmt(RET, RET_ALLOW));
    p
}

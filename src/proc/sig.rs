//! The few signal system calls init makes, on the kernel's own 64-bit signal set.
//!
//! libc's sigset functions hide the signals libc reserves for itself (32–34 in
//! musl, 32–33 in glibc): through them init could neither block those nor wait
//! for them, and a `kill -34` would end a musl-built init. So the mask and the
//! wait use `rt_sigprocmask` and `rt_sigtimedwait` directly. init stays
//! single-threaded while it handles signals (the optional DNS helper thread
//! inherits the full mask), so libc's reserved signals have no other user here.

use std::time::Duration;

/// Every signal; the kernel silently leaves out SIGKILL and SIGSTOP.
pub const ALL: u64 = !0;

/// Size of the kernel's sigset_t, which the rt_* calls insist on.
const SIGSET_BYTES: libc::size_t = 8;

pub fn bit(sig: i32) -> u64 {
    1u64 << (sig - 1)
}

/// Block `set`; returns the mask as it was.
pub fn block(set: u64) -> u64 {
    let mut old: u64 = 0;
    // SAFETY: both pointers are to live u64s of the size passed.
    unsafe {
        libc::syscall(
            libc::SYS_rt_sigprocmask,
            libc::SIG_BLOCK,
            &set as *const u64,
            &mut old as *mut u64,
            SIGSET_BYTES,
        );
    }
    old
}

/// Replace the mask (the child's way back to what init inherited).
pub fn set_mask(mask: u64) {
    // SAFETY: as in `block`; async-signal-safe, used between fork and exec.
    unsafe {
        libc::syscall(
            libc::SYS_rt_sigprocmask,
            libc::SIG_SETMASK,
            &mask as *const u64,
            std::ptr::null_mut::<u64>(),
            SIGSET_BYTES,
        );
    }
}

/// Signals pending for the process right now.
pub fn pending() -> u64 {
    let mut set: u64 = 0;
    // SAFETY: one live u64 of the size passed.
    unsafe {
        libc::syscall(libc::SYS_rt_sigpending, &mut set as *mut u64, SIGSET_BYTES);
    }
    set
}

/// Take one signal of `set` off the pending list, waiting at most `timeout`
/// (forever with `None`). `None` back means the time ran out.
pub fn wait(set: u64, timeout: Option<Duration>) -> Option<i32> {
    loop {
        // SAFETY: siginfo_t is plain data the kernel fills in; the timespec, when
        // given, lives across the call.
        let rc = unsafe {
            let mut info: libc::siginfo_t = std::mem::zeroed();
            match timeout {
                Some(t) => {
                    let ts = libc::timespec {
                        tv_sec: t.as_secs() as _,
                        tv_nsec: t.subsec_nanos() as _,
                    };
                    libc::syscall(
                        libc::SYS_rt_sigtimedwait,
                        &set as *const u64,
                        &mut info as *mut libc::siginfo_t,
                        &ts as *const libc::timespec,
                        SIGSET_BYTES,
                    )
                }
                None => libc::syscall(
                    libc::SYS_rt_sigtimedwait,
                    &set as *const u64,
                    &mut info as *mut libc::siginfo_t,
                    std::ptr::null::<libc::timespec>(),
                    SIGSET_BYTES,
                ),
            }
        };
        if rc > 0 {
            return Some(rc as i32);
        }
        match std::io::Error::last_os_error().raw_os_error() {
            Some(libc::EAGAIN) => return None,
            // A stop and continue (our own SIGSTOP) interrupts the wait.
            _ => continue,
        }
    }
}

/// Give every signal its default action. A parent's SIG_IGN survives exec; init
/// resets all of them (as dumb-init's catch-all handlers do) so the child starts
/// clean, and SIGCHLD must not be ignored in init itself or the kernel would
/// reap children before init can learn their status.
pub fn default_action(sig: i32) {
    // SAFETY: a zeroed sigaction with SIG_DFL is valid; errors (SIGKILL, libc's
    // reserved signals) change nothing and are fine to ignore.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = libc::SIG_DFL;
        libc::sigaction(sig, &sa, std::ptr::null_mut());
    }
}

/// Whether `sig` is currently ignored.
pub fn is_ignored(sig: i32) -> bool {
    // SAFETY: reading the current action into a zeroed struct.
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        libc::sigaction(sig, std::ptr::null(), &mut old) == 0 && old.sa_sigaction == libc::SIG_IGN
    }
}

/// kill(2), errno as an io::Error.
pub fn kill(pid: i32, sig: i32) -> std::io::Result<()> {
    // SAFETY: a plain system call.
    if unsafe { libc::kill(pid, sig) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_blocked_signal_waits_until_taken_and_the_mask_comes_back() {
        // Threads of the test harness may run this concurrently with others; the
        // mask is per thread, and the signal is sent to this thread only.
        let old = block(bit(libc::SIGUSR2));
        // SAFETY: plain system calls.
        unsafe {
            libc::syscall(
                libc::SYS_tgkill,
                libc::getpid(),
                libc::gettid(),
                libc::SIGUSR2,
            );
        }
        assert_ne!(pending() & bit(libc::SIGUSR2), 0);
        assert_eq!(
            wait(bit(libc::SIGUSR2), Some(Duration::from_secs(60))),
            Some(libc::SIGUSR2)
        );
        assert_eq!(
            wait(bit(libc::SIGUSR2), Some(Duration::from_millis(10))),
            None
        );
        set_mask(old);
    }
}

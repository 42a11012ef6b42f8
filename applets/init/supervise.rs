//! Start the child and look after it: one synchronous loop takes every signal
//! off the pending list (all are blocked; no handler runs), forwards it, reaps
//! whatever exited, and ends with the child's status.
//!
//! The rules are dumb-init's: in setsid mode the child leads a new session and
//! signals go to its process group; in single-child mode only to the child.
//! TSTP/TTIN/TTOU are forwarded (as SIGSTOP by default in setsid mode), then init
//! stops itself, so a shell's job control sees the whole tree stop and continue.
//! When the child exits, the rest of its group gets SIGTERM and init exits with
//! the child's status (128+N for a signal). `--wait-all` stays on until every
//! descendant is gone.

use super::Say;
use super::args::Opts;
use berth::proc::sig;
use berth::proc::{decimal, descendants, errno, raw_write, strerror};
use std::ffi::CString;
use std::time::{Duration, Instant};

/// A child ready to fork: everything prepared before `fork`, so the child only
/// makes system calls between fork and exec.
pub struct Spawn {
    argv: Vec<CString>,
    /// `[name] COMMAND: ` for an exec failure.
    exec_err: Vec<u8>,
    /// `[name] ` for the child's debug lines.
    prefix: Vec<u8>,
    debug: bool,
    setsid: bool,
    mask: u64,
}

impl Spawn {
    pub fn new(o: &Opts, say: &Say, mask: u64) -> Spawn {
        use std::os::unix::ffi::OsStrExt;
        // argv words come from the kernel's argv, which cannot hold a NUL.
        let argv: Vec<CString> = o
            .command
            .iter()
            .map(|a| CString::new(a.as_bytes()).unwrap_or_default())
            .collect();
        let mut exec_err = say.debug_prefix().into_bytes();
        exec_err.extend_from_slice(o.command[0].as_bytes());
        exec_err.extend_from_slice(b": ");
        Spawn {
            argv,
            exec_err,
            prefix: say.debug_prefix().into_bytes(),
            debug: o.verbose,
            setsid: o.setsid,
            mask,
        }
    }

    /// fork; in the child set up and exec (never returns there).
    pub fn start(&self) -> std::io::Result<i32> {
        let mut ptrs: Vec<*const libc::c_char> = self.argv.iter().map(|a| a.as_ptr()).collect();
        ptrs.push(std::ptr::null());
        // SAFETY: init is single-threaded here, or its only other thread is a
        // stuck resolver that the child never touches; the child uses only the
        // prepared buffers and async-signal-safe calls before exec or _exit.
        match unsafe { libc::fork() } {
            -1 => Err(std::io::Error::last_os_error()),
            0 => unsafe { self.child(&ptrs) },
            pid => Ok(pid),
        }
    }

    unsafe fn child(&self, argv: &[*const libc::c_char]) -> ! {
        for s in 1..=64 {
            if s != libc::SIGKILL && s != libc::SIGSTOP {
                sig::default_action(s);
            }
        }
        if self.setsid {
            // SAFETY: plain system calls on our own process and stdin.
            if unsafe { libc::setsid() } == -1 {
                let e = errno();
                raw_write(&[
                    &self.prefix,
                    b"Unable to setsid (errno=",
                    decimal(e, &mut [0; 12]),
                    b" ",
                    strerror(e, &mut [0; 128]),
                    b"). Exiting.\n",
                ]);
                unsafe { libc::_exit(1) };
            }
            // Take stdin's terminal as the new session's controlling tty (init
            // gave it up with TIOCNOTTY), so job control works in the child.
            if unsafe { libc::ioctl(0, libc::TIOCSCTTY, 0) } == -1 && self.debug {
                let e = errno();
                raw_write(&[
                    &self.prefix,
                    b"Unable to attach to controlling tty (errno=",
                    decimal(e, &mut [0; 12]),
                    b" ",
                    strerror(e, &mut [0; 128]),
                    b").\n",
                ]);
            }
            if self.debug {
                raw_write(&[&self.prefix, b"setsid complete.\n"]);
            }
        }
        sig::set_mask(self.mask);
        // SAFETY: argv is NUL-terminated and its strings outlive the call.
        unsafe { libc::execvp(argv[0], argv.as_ptr()) };
        let e = errno();
        raw_write(&[&self.exec_err, strerror(e, &mut [0; 128]), b"\n"]);
        // SAFETY: leave without running the parent's exit handlers.
        unsafe { libc::_exit(2) }
    }
}

/// The supervising side: what to forward where, and how the child ended.
pub struct Supervisor<'a> {
    o: &'a Opts,
    say: &'a Say,
    me: i32,
    child: i32,
    /// Set when the main child has exited (`--wait-all` keeps going then).
    status: Option<u8>,
    /// In `--wait-all`: when the next SIGKILL round is due.
    deadline: Option<Instant>,
    killed: bool,
}

/// Job-control signals after which init stops itself too.
fn is_tty_stop(s: i32) -> bool {
    matches!(s, libc::SIGTSTP | libc::SIGTTIN | libc::SIGTTOU)
}

impl<'a> Supervisor<'a> {
    pub fn new(o: &'a Opts, say: &'a Say, child: i32) -> Self {
        Supervisor {
            o,
            say,
            // SAFETY: getpid cannot fail.
            me: unsafe { libc::getpid() },
            child,
            status: None,
            deadline: None,
            killed: false,
        }
    }

    /// The loop: returns init's exit code.
    pub fn run(&mut self) -> u8 {
        loop {
            let timeout = self
                .deadline
                .map(|d| d.saturating_duration_since(Instant::now()));
            match sig::wait(sig::ALL, timeout) {
                None => self.deadline_passed(),
                Some(libc::SIGCHLD) => {
                    self.say
                        .debug(format_args!("Received signal {}.", libc::SIGCHLD));
                    if let Some(code) = self.reap() {
                        return code;
                    }
                }
                Some(s) => self.received(s),
            }
        }
    }

    fn translate(&self, s: i32) -> i32 {
        match self.o.rewrite.get(s as usize) {
            Some(&r) if r >= 0 => {
                self.say
                    .debug(format_args!("Translating signal {s} to {r}."));
                r
            }
            _ => s,
        }
    }

    /// Send to the child, or to its process group in setsid mode.
    fn forward(&self, s: i32) {
        let s = self.translate(s);
        if s == 0 {
            self.say
                .debug(format_args!("Not forwarding signal to children (ignored)."));
            return;
        }
        if self.o.setsid {
            // Right after fork the child may not lead its group yet: then the
            // signal goes to the child itself, which is the whole group anyway.
            if sig::kill(-self.child, s).is_err() {
                let _ = sig::kill(self.child, s);
            }
        } else {
            let _ = sig::kill(self.child, s);
        }
        self.say
            .debug(format_args!("Forwarded signal {s} to children."));
    }

    fn received(&mut self, s: i32) {
        self.say.debug(format_args!("Received signal {s}."));
        if self.status.is_some() {
            // --wait-all: the child is gone, what is left gets the signal.
            let t = self.translate(s);
            if t != 0 {
                self.signal_rest(t);
            }
            return;
        }
        self.forward(s);
        if is_tty_stop(s) {
            self.say
                .debug(format_args!("Suspending self due to TTY signal."));
            let _ = sig::kill(self.me, libc::SIGSTOP);
        }
    }

    /// Reap everything that has exited. `Some(code)` when init should exit.
    fn reap(&mut self) -> Option<u8> {
        loop {
            let mut st: libc::c_int = 0;
            // SAFETY: a plain system call with a live status pointer.
            let pid = unsafe { libc::waitpid(-1, &mut st, libc::WNOHANG) };
            if pid == 0 {
                return None;
            }
            if pid < 0 {
                match errno() {
                    libc::EINTR => continue,
                    // No children at all: --wait-all is done (without it, init
                    // left when the main child was reaped).
                    _ => return Some(self.status.unwrap_or(0)),
                }
            }
            let code = if libc::WIFEXITED(st) {
                let c = libc::WEXITSTATUS(st);
                self.say.debug(format_args!(
                    "A child with PID {pid} exited with exit status {c}."
                ));
                c
            } else if libc::WIFSIGNALED(st) {
                let s = libc::WTERMSIG(st);
                self.say.debug(format_args!(
                    "A child with PID {pid} was terminated by signal {s}."
                ));
                128 + s
            } else {
                continue;
            };
            if pid == self.child {
                if let Some(done) = self.child_exited(code as u8) {
                    return Some(done);
                }
            } else if self.o.warn_on_reap {
                self.say.warn(format_args!(
                    "reaped zombie process {pid} (exit status {code})"
                ));
            }
        }
    }

    /// The main child is gone: tell the rest, then exit or (--wait-all) wait.
    fn child_exited(&mut self, code: u8) -> Option<u8> {
        let code = if self.o.expects(code) { 0 } else { code };
        let s = self.translate(libc::SIGTERM);
        let Some(grace) = self.o.wait_all else {
            // dumb-init's farewell: SIGTERM (or its rewrite) to the child's group.
            // In single-child mode the pid is already reaped; signalling it could
            // hit an unrelated process that reused it.
            if self.o.setsid && s != 0 {
                let _ = sig::kill(-self.child, s);
                self.say
                    .debug(format_args!("Forwarded signal {s} to children."));
            }
            self.say
                .debug(format_args!("Child exited with status {code}. Goodbye."));
            return Some(code);
        };
        self.status = Some(code);
        if s != 0 {
            self.signal_rest(s);
            // A stopped process would sit on its SIGTERM until continued.
            self.signal_rest(libc::SIGCONT);
        }
        self.say.debug(format_args!(
            "Child exited with status {code}. Waiting for the other descendants."
        ));
        self.deadline = Some(Instant::now() + grace);
        None
    }

    fn deadline_passed(&mut self) {
        if !self.killed {
            self.say.warn(format_args!(
                "descendants still running {} s after the child exited: sending SIGKILL",
                self.o.wait_all.unwrap_or_default().as_secs_f64()
            ));
            self.killed = true;
        }
        self.signal_rest(libc::SIGKILL);
        // Anything forked between the scan and the kill gets the next round.
        self.deadline = Some(Instant::now() + Duration::from_millis(200));
    }

    /// Signal every remaining descendant of init.
    fn signal_rest(&self, s: i32) {
        if self.me == 1 {
            // As a PID namespace's init, kill(-1) reaches exactly the namespace.
            let _ = sig::kill(-1, s);
            return;
        }
        match descendants(self.me) {
            Some(pids) => {
                for p in pids {
                    let _ = sig::kill(p, s);
                }
            }
            None => {
                // No usable /proc: the child's group is all we can name.
                let _ = sig::kill(-self.child, s);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descendants_of_this_process_include_a_grandchild() {
        // sh runs sleep as its child and says its pid once it has forked it:
        // both are our descendants from then on.
        use std::io::BufRead;
        use std::os::unix::process::CommandExt;
        let c = std::process::Command::new("sh")
            .args(["-c", "sleep 600 & echo $!; wait"])
            .process_group(0)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // Other tests run beside this one: kill only our own group, whatever happens.
        struct Group(std::process::Child);
        impl Drop for Group {
            fn drop(&mut self) {
                let _ = sig::kill(-(self.0.id() as i32), libc::SIGKILL);
                let _ = self.0.wait();
            }
        }
        let mut c = Group(c);
        let mut line = String::new();
        std::io::BufReader::new(c.0.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let grandchild: i32 = line.trim().parse().unwrap();
        let me = std::process::id() as i32;
        let found = descendants(me).expect("/proc is ours");
        assert!(found.contains(&(c.0.id() as i32)), "{found:?}");
        assert!(found.contains(&grandchild), "{grandchild} not in {found:?}");
    }
}

//! `init` (and `dumb-init`, its alias): a PID 1 for containers that behaves as
//! dumb-init 1.2.5 — same options, environment, signal rules and exit codes — so
//! images made for dumb-init (`#!/usr/bin/dumb-init /bin/bash`) run unchanged
//! through a `dumb-init` link to berth. On top: tini's subreaper, expected exit
//! codes and reap warnings; `--wait-all` to outlive the child until every
//! descendant is gone; and `--hostname-from-dns`, which does what the site's
//! launch script did with `ip route`, `host` and `hostname` before the child
//! starts.
//!
//! Start-up is on the hot path of every container: no logger, no config files,
//! no lookups unless asked. Signals are all blocked before the fork and taken
//! synchronously by one loop (see `supervise`); no handler does any work.
//!
//! Messages: dumb-init's debug lines and errors keep its `[dumb-init] ` form, with
//! the name init was called by (`[init] ` as `berth init`); berth's own warnings
//! are `NAME: message`. Under the `dumb-init` name init prints nothing dumb-init
//! would not, except for the berth options it is given.

mod args;
mod hostname;
mod supervise;

use args::{Opts, Stop};
use berth::proc::sig;
use std::ffi::OsString;
use std::fmt;
use std::io::Write;

/// init's voice on stderr. Each line goes out in one write, so lines from init
/// and its child do not interleave mid-line.
pub struct Say {
    name: String,
    debug: bool,
}

impl Say {
    fn debug_prefix(&self) -> String {
        format!("[{}] ", self.name)
    }
    fn line(&self, s: &str) {
        // A closed or broken stderr must never take init down.
        let _ = std::io::stderr().write_all(s.as_bytes());
    }
    fn debug(&self, m: fmt::Arguments) {
        if self.debug {
            self.line(&format!("[{}] {m}\n", self.name));
        }
    }
    fn warn(&self, m: fmt::Arguments) {
        self.line(&format!("{}: {m}\n", self.name));
    }
    /// dumb-init itself stays quiet about things tini warns of.
    fn as_dumb_init(&self) -> bool {
        self.name == "dumb-init"
    }
}

pub fn main(name: &str, args: &[String]) -> berth::Result<u8> {
    let argv = os_args(args);
    let mut o = match args::parse(name, &argv) {
        Ok(o) => o,
        Err(stop) => {
            let (text, code) = match stop {
                Stop::Help => (args::help(name), 0),
                Stop::Version => (version(name), 0),
                Stop::Error(m) => (m, 1),
            };
            // dumb-init prints help and version on stderr too.
            let _ = std::io::stderr().write_all(text.as_bytes());
            return Ok(code);
        }
    };
    let (notes, warnings) = args::apply_env(name, &mut o, |k| std::env::var_os(k));
    let say = Say {
        name: name.to_string(),
        debug: o.verbose,
    };
    for n in notes {
        say.debug(format_args!("{n}"));
    }
    for w in warnings {
        say.line(&(w + "\n"));
    }
    Ok(run(&o, &say))
}

fn version(name: &str) -> String {
    if name == "dumb-init" {
        format!(
            "dumb-init v{} (berth {})\n",
            args::DUMB_INIT_VERSION,
            berth::VERSION
        )
    } else {
        format!(
            "{name} (berth {}), dumb-init {} compatible\n",
            berth::VERSION,
            args::DUMB_INIT_VERSION
        )
    }
}

/// The arguments as the kernel gave them. The applet table hands applets lossy
/// UTF-8 `String`s, but init must pass its command's argv on byte for byte; the
/// table's words are the tail of the process's argv, so take that tail when it
/// matches.
fn os_args(args: &[String]) -> Vec<OsString> {
    let all: Vec<OsString> = std::env::args_os().collect();
    if let Some(tail) = all.get(all.len().saturating_sub(args.len())..)
        && tail.len() == args.len()
        && tail
            .iter()
            .zip(args)
            .all(|(o, s)| o.to_string_lossy() == *s)
    {
        return tail.to_vec();
    }
    args.iter().map(OsString::from).collect()
}

fn run(o: &Opts, say: &Say) -> u8 {
    let mask = sig::block(sig::ALL);
    if sig::is_ignored(libc::SIGCHLD) {
        sig::default_action(libc::SIGCHLD);
    }
    // SAFETY: getpid cannot fail.
    let pid1 = unsafe { libc::getpid() } == 1;
    if !pid1 {
        if o.subreaper || o.wait_all.is_some() {
            // SAFETY: a plain prctl on our own process.
            if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } == -1 {
                let e = std::io::Error::last_os_error();
                // Linux before 3.4 (SL6's 2.6.32) has no subreapers: init goes
                // on, reaping its child as any parent does, while the child's
                // orphans go to the host's PID 1. As PID 1 of a container's PID
                // namespace (no subreaper needed) it reaps them all.
                let why = if e.raw_os_error() == Some(libc::EINVAL) {
                    "the kernel has none before 3.4".to_string()
                } else {
                    e.to_string()
                };
                say.warn(format_args!(
                    "cannot register as a child subreaper ({why}): only the child is reaped here, its orphans go to the host's init"
                ));
            }
        } else if say.as_dumb_init() {
            say.debug(format_args!(
                "Not PID 1 and not a subreaper: orphans are reaped elsewhere."
            ));
        } else {
            say.warn(format_args!(
                "not running as PID 1 and not a child subreaper: orphaned processes \
                 will not be reaped here (use -s)"
            ));
        }
    }
    if let Some(form) = o.hostname {
        name_host(o, say, form);
    }
    if o.setsid {
        hand_over_tty(say);
    }
    let spawn = supervise::Spawn::new(o, say, mask);
    let child = match spawn.start() {
        Ok(pid) => pid,
        Err(e) => {
            say.line(&format!(
                "[{}] Unable to fork ({}). Exiting.\n",
                say.name,
                errno_text(&e)
            ));
            return 1;
        }
    };
    say.debug(format_args!("Child spawned with PID {child}."));
    // Hold no directory busy, so the container's filesystems can be unmounted.
    if let Err(e) = std::env::set_current_dir("/") {
        say.debug(format_args!("Unable to chdir(\"/\") ({e})"));
    }
    supervise::Supervisor::new(o, say, child).run()
}

fn name_host(o: &Opts, say: &Say, form: args::Hostname) {
    let timeout = o.dns_timeout;
    match hostname::set(&berth::sys::Linux, form, || hostname::discover(timeout)) {
        Ok((name, ip)) => say.debug(format_args!(
            "Hostname set to {name} (reverse DNS of {ip})."
        )),
        Err(e) => say.warn(format_args!(
            "hostname unchanged: {e}; starting {} anyway",
            o.command[0].to_string_lossy()
        )),
    }
}

/// Give up stdin's terminal so the child's new session can take it (dumb-init's
/// TIOCNOTTY). When init led the terminal's session, the kernel answers with
/// SIGHUP and SIGCONT to the foreground group — init itself — and they are
/// pending by the time the ioctl returns: they are about the hand-over, not for
/// the child, so take them off here rather than ignore "the next" ones later.
fn hand_over_tty(say: &Say) {
    // SAFETY: an ioctl without argument on fd 0; failure is only reported.
    if unsafe { libc::ioctl(0, libc::TIOCNOTTY) } == -1 {
        say.debug(format_args!(
            "Unable to detach from controlling tty ({}).",
            errno_text(&std::io::Error::last_os_error())
        ));
        return;
    }
    // SAFETY: plain system calls about ourselves.
    let leader = unsafe { libc::getsid(0) == libc::getpid() };
    if !leader {
        say.debug(format_args!(
            "Detached from controlling tty, but was not session leader."
        ));
        return;
    }
    let pending = sig::pending();
    for s in [libc::SIGHUP, libc::SIGCONT] {
        if pending & sig::bit(s) != 0 {
            sig::wait(sig::bit(s), Some(std::time::Duration::ZERO));
        }
    }
    say.debug(format_args!(
        "Detached from controlling tty, dropped the SIGHUP and SIGCONT it caused."
    ));
}

/// dumb-init's way of naming an error: `errno=25 Inappropriate ioctl for device`.
fn errno_text(e: &std::io::Error) -> String {
    let text = e.to_string();
    let text = text.split(" (os error ").next().unwrap_or_default();
    format!("errno={} {text}", e.raw_os_error().unwrap_or(0))
}

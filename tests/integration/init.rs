//! `berth init` / `dumb-init` through the real binary, each test in its own
//! process tree: signal forwarding (every catchable signal, group or single
//! child, rewrites), job control, exit codes, reaping, `--wait-all`, the terminal
//! hand-over under a pty, exec failure, and the hostname from DNS inside network,
//! UTS and mount namespaces the test makes (the host's name and files are never
//! touched).
//!
//! The child that reports signals is a small python3 program: it catches every
//! signal it can and writes `TAG:N` on stdout for each, so the test sees exactly
//! what arrived.

use crate::harness::*;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

const HELPER: &str = r#"
import os, signal, sys
tag = sys.argv[1]
def say(s):
    os.write(1, f"{tag}:{s}\n".encode())
def on(n, frame):
    say(n)
    if n == signal.SIGTERM:
        os._exit(int(os.environ.get("EXIT_ON_TERM", "0")))
# SIGCHLD is left alone: init never forwards it, and a helper's own child
# exiting would add noise.
for n in range(1, signal.NSIG):
    if n in (signal.SIGKILL, signal.SIGSTOP, signal.SIGCHLD):
        continue
    try:
        signal.signal(n, on)
    except (OSError, ValueError, RuntimeError):
        pass
try:
    fg = int(os.tcgetpgrp(0) == os.getpgrp())
except OSError:
    fg = 0
say(f"ready {os.getpid()} {int(os.getsid(0) == os.getpid())} {fg}")
while True:
    signal.pause()
"#;

fn python() -> String {
    // Debian's interpreter starts fastest; a version manager's shim may be first on PATH.
    if std::path::Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3".into()
    } else {
        need("python3");
        "python3".into()
    }
}

/// `python3 -c HELPER TAG` as a shell word list.
fn helper(tag: &str) -> Vec<String> {
    vec![python(), "-c".into(), HELPER.into(), tag.into()]
}

/// The helper as a shell command line (for `sh -c`).
fn helper_sh(tag: &str) -> String {
    format!("{} -c '{}' {tag}", python(), HELPER.replace('\'', "'\\''"))
}

fn kill(pid: i32, sig: i32) {
    // SAFETY: a plain system call.
    unsafe { libc::kill(pid, sig) };
}

fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| state(&s) != Some('Z'))
        .unwrap_or(false)
}

fn state(stat: &str) -> Option<char> {
    stat[stat.rfind(')')? + 1..].trim_start().chars().next()
}

fn proc_state(pid: i32) -> Option<char> {
    state(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// Zombies whose parent is `parent`.
fn zombies_of(parent: i32) -> Vec<i32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let rest = &stat[stat.rfind(')').unwrap() + 1..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        if f[0] == "Z" && f[1] == parent.to_string() {
            out.push(pid);
        }
    }
    out
}

/// How long a test waits for something that should happen: generous, so a
/// loaded machine makes a test slower, never failing.
const PATIENCE: Duration = Duration::from_secs(120);

/// A running init with its child's stdout as lines and its stderr in a file.
/// Dropping it kills whatever of the tree is left.
struct Init {
    child: Child,
    lines: Receiver<String>,
    /// stderr goes to a file, not a pipe: what init wrote is all there once it
    /// has exited, however long orphans keep their copy open.
    err: TempDir,
    /// Process groups and pids to kill on drop (the child's own group in setsid mode).
    reap: Vec<i32>,
}

impl Init {
    fn start(args: &[&str], env: &[(&str, &str)]) -> Init {
        let mut c = berth(&["init"]);
        c.args(args);
        for (k, v) in env {
            c.env(k, v);
        }
        c.process_group(0).stdin(Stdio::null());
        Init::spawn(c)
    }

    fn spawn(mut c: Command) -> Init {
        let err = TempDir::new("init-stderr");
        let file = std::fs::File::create(err.join("stderr")).unwrap();
        c.stdout(Stdio::piped()).stderr(file);
        let mut child = c.spawn().expect("start init");
        let out = child.stdout.take().unwrap();
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines() {
                let Ok(l) = l else { break };
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        let pid = child.id() as i32;
        Init {
            child,
            lines,
            err,
            reap: vec![-pid],
        }
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    fn stderr(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(self.err.join("stderr")).unwrap()).into_owned()
    }

    fn line(&self, t: Duration) -> Option<String> {
        self.lines.recv_timeout(t).ok()
    }

    /// The next line must be `want`.
    fn expect(&self, want: &str) {
        match self.line(PATIENCE) {
            Some(l) => assert_eq!(l, want, "stderr: {}", self.stderr()),
            None => panic!("no line (wanted {want}); stderr: {}", self.stderr()),
        }
    }

    /// Wait for `TAG:ready PID SESSION_LEADER FOREGROUND`; gives the fields.
    fn ready(&mut self, tag: &str) -> (i32, bool, bool) {
        let l = self
            .line(PATIENCE)
            .unwrap_or_else(|| panic!("{tag} never got ready; stderr: {}", self.stderr()));
        let rest = l
            .strip_prefix(&format!("{tag}:ready "))
            .unwrap_or_else(|| panic!("unexpected {l}"));
        let f: Vec<&str> = rest.split(' ').collect();
        let pid: i32 = f[0].parse().unwrap();
        self.reap.push(-pid);
        self.reap.push(pid);
        (pid, f[1] == "1", f[2] == "1")
    }

    /// Nothing more arrives within `d`.
    fn quiet(&self, d: Duration) {
        if let Some(l) = self.line(d) {
            panic!("unexpected {l}; stderr: {}", self.stderr());
        }
    }

    fn signal(&self, s: i32) {
        kill(self.pid(), s);
    }

    /// Wait for init to exit: its exit code (or 128+signal) and its stderr.
    fn wait(&mut self) -> (i32, String) {
        let start = Instant::now();
        let st = loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                break st;
            }
            assert!(
                start.elapsed() < PATIENCE,
                "init still running after {PATIENCE:?}; stderr: {}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(5));
        };
        use std::os::unix::process::ExitStatusExt;
        let code = st.code().unwrap_or_else(|| 128 + st.signal().unwrap_or(0));
        (code, self.stderr())
    }
}

impl Drop for Init {
    fn drop(&mut self) {
        for &p in &self.reap {
            kill(p, libc::SIGKILL);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn args_with<'a>(opts: &[&'a str], cmd: &'a [String]) -> Vec<&'a str> {
    let mut v: Vec<&str> = opts.to_vec();
    v.push("--");
    v.extend(cmd.iter().map(String::as_str));
    v
}

#[test]
pub(crate) fn init_forwards_every_catchable_signal_to_the_child() {
    let h = helper("main");
    let mut init = Init::start(&args_with(&[], &h), &[]);
    let (child, leader, _) = init.ready("main");
    assert!(leader, "in setsid mode the child leads its own session");
    assert_ne!(child, init.pid());
    // Everything but what no one can catch (KILL, STOP), what init keeps for
    // itself (CHLD), the job-control stops (their own test) and TERM (the end).
    // Realtime signals from 34 up: 32 and 33 belong to glibc in the helper.
    let skip = [
        libc::SIGKILL,
        libc::SIGSTOP,
        libc::SIGCHLD,
        libc::SIGTSTP,
        libc::SIGTTIN,
        libc::SIGTTOU,
        libc::SIGTERM,
    ];
    let signals: Vec<i32> = (1..=31)
        .filter(|s| !skip.contains(s))
        .chain(34..=64)
        .collect();
    for s in &signals {
        init.signal(*s);
        init.expect(&format!("main:{s}"));
    }
    init.signal(libc::SIGTERM);
    init.expect("main:15");
    let (code, err) = init.wait();
    assert_eq!(code, 0, "{err}");
    assert_eq!(signals.len(), 24 + 31);
}

#[test]
fn init_signals_the_whole_group_or_only_the_single_child() {
    let cmd = format!("{} & exec {}", helper_sh("bg"), helper_sh("main"));
    let sh = vec!["sh".to_string(), "-c".to_string(), cmd];
    let ready_both = |init: &mut Init| {
        let mut seen = Vec::new();
        for _ in 0..2 {
            let l = init
                .line(PATIENCE)
                .unwrap_or_else(|| panic!("helpers not ready: {}", init.stderr()));
            let tag = l.split(':').next().unwrap().to_string();
            let pid: i32 = l.split(' ').nth(1).unwrap().parse().unwrap();
            init.reap.push(pid);
            seen.push(tag);
        }
        seen.sort();
        assert_eq!(seen, ["bg", "main"]);
    };
    let two = |init: &Init| {
        let mut got = vec![init.line(PATIENCE).unwrap(), init.line(PATIENCE).unwrap()];
        got.sort();
        got
    };

    // setsid mode: the group gets it, and the farewell SIGTERM reaches bg too.
    let mut init = Init::start(&args_with(&[], &sh), &[]);
    ready_both(&mut init);
    init.signal(libc::SIGUSR1);
    assert_eq!(two(&init), ["bg:10", "main:10"]);
    init.signal(libc::SIGTERM);
    assert_eq!(two(&init), ["bg:15", "main:15"]);
    assert_eq!(init.wait().0, 0);

    // -c: only the direct child.
    let mut init = Init::start(&args_with(&["-c"], &sh), &[]);
    ready_both(&mut init);
    init.signal(libc::SIGUSR1);
    init.expect("main:10");
    init.quiet(Duration::from_millis(300));
    init.signal(libc::SIGTERM);
    init.expect("main:15");
    assert_eq!(init.wait().0, 0);
    init.quiet(Duration::from_millis(200));

    // DUMB_INIT_SETSID=0 is -c.
    let mut init = Init::start(&args_with(&[], &sh), &[("DUMB_INIT_SETSID", "0")]);
    ready_both(&mut init);
    init.signal(libc::SIGUSR2);
    init.expect("main:12");
    init.quiet(Duration::from_millis(300));
}

#[test]
fn init_rewrites_and_drops_signals() {
    let h = helper("main");
    let mut init = Init::start(
        &args_with(&["-r", "10:12", "--rewrite=14:0", "-r15:3"], &h),
        &[],
    );
    let (child, _, _) = init.ready("main");
    init.signal(libc::SIGUSR1);
    init.expect("main:12");
    // ALRM is dropped: the next thing the child sees is the HUP sent after it.
    init.signal(libc::SIGALRM);
    init.signal(libc::SIGHUP);
    init.expect("main:1");
    init.signal(libc::SIGTERM);
    init.expect("main:3");
    // the child itself still ends on a real SIGTERM; init reports its status
    kill(child, libc::SIGTERM);
    init.expect("main:15");
    assert_eq!(init.wait().0, 0);
}

#[test]
fn init_stops_with_the_child_on_tstp_and_continues_on_cont() {
    for single in [false, true] {
        let h = helper("main");
        let opts: &[&str] = if single { &["-c"] } else { &[] };
        let mut init = Init::start(&args_with(opts, &h), &[]);
        let (child, _, _) = init.ready("main");
        init.signal(libc::SIGTSTP);
        if single {
            // -c forwards TSTP as it is (the helper catches it) ...
            init.expect("main:20");
        } else {
            // ... setsid mode sends SIGSTOP, which stops the child outright.
            wait_for("the child to stop", || {
                (proc_state(child) == Some('T')).then_some(())
            });
        }
        // init stops itself either way
        wait_for("init to stop", || {
            (proc_state(init.pid()) == Some('T')).then_some(())
        });
        init.signal(libc::SIGCONT);
        init.expect("main:18");
        wait_for("the child to run", || {
            (proc_state(child) != Some('T') && proc_state(init.pid()) != Some('T')).then_some(())
        });
        init.signal(libc::SIGUSR1);
        init.expect("main:10");
        init.signal(libc::SIGTERM);
        init.expect("main:15");
        assert_eq!(init.wait().0, 0);
    }
}

#[test]
pub(crate) fn init_exits_with_the_childs_status() {
    let run = |opts: &[&str], script: &str| {
        let sh = vec!["sh".to_string(), "-c".to_string(), script.to_string()];
        let mut init = Init::start(&args_with(opts, &sh), &[]);
        init.wait()
    };
    assert_eq!(run(&[], "exit 0").0, 0);
    assert_eq!(run(&[], "exit 3").0, 3);
    assert_eq!(run(&["-c"], "exit 42").0, 42);
    assert_eq!(run(&[], "kill -KILL $$").0, 128 + 9);
    assert_eq!(run(&["-c"], "kill -TERM $$").0, 128 + 15);
    // tini's -e maps an expected code (also 128+N) to 0, and only that one
    assert_eq!(run(&["-e", "3"], "exit 3").0, 0);
    assert_eq!(run(&["-e143", "-e", "3"], "kill -TERM $$").0, 0);
    assert_eq!(run(&["--expect-exit=3"], "exit 4").0, 4);
}

#[test]
pub(crate) fn init_reaps_orphans_as_a_subreaper() {
    // The main child starts a grandchild and leaves it orphaned; the main child
    // runs on until the orphan is reaped (its /proc entry gone), so only init
    // can reap it.
    let script = "o=$(sh -c 'sleep 0.2 >/dev/null 2>&1 & echo $!'); echo $o; \
                  while [ -e /proc/$o ]; do sleep 0.01; done";
    let sh = vec!["sh".to_string(), "-c".to_string(), script.to_string()];
    let mut init = Init::start(&args_with(&["-s", "-w"], &sh), &[]);
    let orphan: i32 = init.line(PATIENCE).expect("orphan pid").parse().unwrap();
    wait_for("the orphan to end", || (!alive(orphan)).then_some(()));
    wait_for("init to reap its zombies", || {
        zombies_of(init.pid()).is_empty().then_some(())
    });
    assert!(
        std::fs::metadata(format!("/proc/{orphan}")).is_err(),
        "the orphan was not reaped"
    );
    let (code, err) = init.wait();
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains(&format!(
            "init: reaped zombie process {orphan} (exit status 0)"
        )),
        "{err}"
    );
    assert!(!err.contains("not running as PID 1"), "{err}");

    // Without -s (and not PID 1) init says orphans go elsewhere; dumb-init is silent.
    let mut init = Init::start(&["true"], &[]);
    let (_, err) = init.wait();
    assert!(err.contains("init: not running as PID 1"), "{err}");
    let d = TempDir::new("init-name");
    let link = d.join("dumb-init");
    std::os::unix::fs::symlink(bin(), &link).unwrap();
    let o = Command::new(&link).arg("true").output().unwrap();
    assert!(o.status.success());
    assert_eq!(stderr(&o), "");
}

/// Where the kernel has no subreapers (before 3.4: SL6), init says so in one
/// line and goes on: its child is reaped and its status comes out, while the
/// child's orphans belong to the host's init, never to this one.
pub(crate) fn init_without_a_subreaper_reaps_its_child_only() {
    // The orphan outlives its parent shell by far, so its parent can be read.
    let script = "o=$(sh -c 'sleep 30 >/dev/null 2>&1 & echo $!'); echo $o; \
                  while [ ! -e \"$GO\" ]; do sleep 0.02; done; kill $o";
    let sh = vec!["sh".to_string(), "-c".to_string(), script.to_string()];
    let d = TempDir::new("init-nosub");
    let go = d.join("go");
    let mut init = Init::start(
        &args_with(&["-s", "-w"], &sh),
        &[("GO", go.to_str().unwrap())],
    );
    let orphan: i32 = init.line(PATIENCE).expect("orphan pid").parse().unwrap();
    let ppid = |pid: i32| -> Option<i32> {
        let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        s.rsplit_once(") ")?.1.split(' ').nth(1)?.parse().ok()
    };
    assert_ne!(
        ppid(orphan),
        Some(init.pid()),
        "the orphan went to init, a subreaper the kernel cannot have"
    );
    std::fs::write(&go, "").unwrap();
    let (code, err) = init.wait();
    assert_eq!(code, 0, "{err}");
    let fallback: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("child subreaper"))
        .collect();
    assert_eq!(fallback.len(), 1, "{err}");
    assert!(
        fallback[0].contains("before 3.4") && fallback[0].contains("only the child is reaped"),
        "{err}"
    );
    assert!(!err.contains(&format!("zombie process {orphan}")), "{err}");
}

#[test]
fn init_as_pid_1_of_a_pid_namespace() {
    need("unshare");
    // Inside: an orphan to reap, a SIGTERM to PID 1 that must come back to the
    // child's group, and the exit status out through init.
    let script = r#"
trap 'echo term; exit 7' TERM
o=$(sh -c 'sleep 0.1 >/dev/null 2>&1 & echo $!')
# wait (a minute at least) for the orphan's /proc entry to go: init reaped it
i=0
while [ -e /proc/$o ] && [ $i -lt 3000 ]; do sleep 0.02; i=$((i+1)); done
[ -e /proc/$o ] && reaped=no || reaped=yes
echo "reaped=$reaped zombies=$(cat /proc/[0-9]*/stat 2>/dev/null | awk '$3=="Z"' | wc -l) pid1=$(cat /proc/1/comm)"
kill -TERM 1
sleep 600 & wait $!
echo "not reached"
"#;
    let mut c = Command::new("unshare");
    c.args(["--pid", "--fork", "--mount-proc", "--"])
        .arg(bin())
        .args(["init", "--", "sh", "-c", script])
        .process_group(0);
    let mut init = Init::spawn(c);
    let l = init.line(PATIENCE).expect("report");
    assert_eq!(l, "reaped=yes zombies=0 pid1=berth", "{}", init.stderr());
    init.expect("term");
    let (code, err) = init.wait();
    assert_eq!(code, 7, "{err}");
    assert!(!err.contains("not running as PID 1"), "{err}");
}

/// A main child that leaves a grandchild in a session of its own (so the
/// group's farewell SIGTERM misses it) and exits 3.
fn lingering(dir: &TempDir, trap: &str) -> Vec<String> {
    let pidf = dir.join("pid");
    let script = format!(
        "setsid sh -c 'echo $$ > {pid}; trap \"{trap}\" TERM; while :; do sleep 0.05; done' & \
         while [ ! -s {pid} ]; do sleep 0.01; done; exit 3",
        pid = pidf.display()
    );
    vec!["sh".into(), "-c".into(), script]
}

#[test]
fn init_wait_all_waits_for_a_lingering_grandchild() {
    let d = TempDir::new("waitall");
    let log = d.join("log");
    let trap = format!("sleep 0.4; echo cleaned >> {}; exit 0", log.display());
    let sh = lingering(&d, &trap);
    // A grace far longer than the cleanup takes: init must leave as soon as the
    // grandchild is gone, long before SIGKILL would be due.
    let mut init = Init::start(&args_with(&["-v", "--wait-all=120"], &sh), &[]);
    let (code, err) = init.wait();
    let gc: i32 = std::fs::read_to_string(d.join("pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    init.reap.push(gc);
    assert_eq!(code, 3, "the main child's status: {err}");
    // init stayed until the grandchild had finished its cleanup
    assert_eq!(
        std::fs::read_to_string(&log).unwrap_or_default(),
        "cleaned\n"
    );
    assert!(!alive(gc));
    // init reaped the grandchild itself, after its cleanup ended it ...
    assert!(
        err.contains(&format!("A child with PID {gc} exited with exit status 0.")),
        "{err}"
    );
    // ... and left then, not at the end of the grace
    assert!(!err.contains("SIGKILL"), "{err}");

    // Without --wait-all, init leaves at once and the grandchild lives on.
    let d = TempDir::new("nowait");
    let sh = lingering(&d, "exit 0");
    let mut init = Init::start(&args_with(&[], &sh), &[]);
    assert_eq!(init.wait().0, 3);
    let gc: i32 = std::fs::read_to_string(d.join("pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    init.reap.push(gc);
    assert!(
        alive(gc),
        "dumb-init's behaviour: the other session is not signalled"
    );
}

#[test]
fn init_wait_all_kills_what_ignores_sigterm_after_the_grace() {
    let d = TempDir::new("waitkill");
    // `trap "" TERM` ignores SIGTERM in the shell and in its sleeps.
    let sh = lingering(&d, "");
    let mut init = Init::start(&args_with(&["--wait-all=1"], &sh), &[]);
    let t = Instant::now();
    let (code, err) = init.wait();
    let took = t.elapsed();
    let gc: i32 = std::fs::read_to_string(d.join("pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    init.reap.push(gc);
    assert_eq!(code, 3, "{err}");
    // The grace was waited out: init's own deadline fired (the only place that
    // says so), and not before the grace (a lower bound: a slow machine only
    // makes it longer).
    assert!(
        err.contains("descendants still running 1 s after the child exited: sending SIGKILL"),
        "{err}"
    );
    assert!(took >= Duration::from_millis(900), "{took:?}");
    assert!(!alive(gc), "the grandchild survived");
}

#[test]
fn init_hands_the_terminal_to_the_child_under_a_pty() {
    let pty = nix::pty::openpty(None, None).unwrap();
    use std::os::fd::{AsRawFd, OwnedFd};
    let slave: OwnedFd = pty.slave;
    let mut master = std::fs::File::from(pty.master);
    let h = helper("main");
    let mut c = berth(&["init", "-v", "--"]);
    c.args(&h).stdin(Stdio::from(slave.try_clone().unwrap()));
    // init leads a session whose controlling terminal is the pty, as in
    // `docker run -t`.
    // SAFETY: setsid and ioctl are async-signal-safe.
    unsafe {
        c.pre_exec(|| {
            if libc::setsid() == -1 || libc::ioctl(0, libc::TIOCSCTTY, 0) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut init = Init::spawn(c);
    drop(slave);
    let (_, leader, foreground) = init.ready("main");
    assert!(leader && foreground, "the child owns the terminal");
    // The hand-over's SIGHUP and SIGCONT stay with init.
    init.quiet(Duration::from_millis(400));
    let err = init.stderr();
    assert!(
        err.contains("[init] Detached from controlling tty, dropped the SIGHUP and SIGCONT"),
        "{err}"
    );
    // ^C on the terminal reaches the child's group directly.
    master.write_all(b"\x03").unwrap();
    init.expect("main:2");
    // a real SIGHUP later is forwarded
    init.signal(libc::SIGHUP);
    init.expect("main:1");
    init.signal(libc::SIGTERM);
    init.expect("main:15");
    let (code, err) = init.wait();
    assert_eq!(code, 0, "{err}");
    let _ = master.as_raw_fd();
}

#[test]
fn init_exec_failure_exits_2_with_a_message() {
    let mut init = Init::start(&["/nonexistent/cmd", "arg"], &[]);
    let (code, err) = init.wait();
    assert_eq!(code, 2);
    assert!(
        err.contains("[init] /nonexistent/cmd: No such file or directory\n"),
        "{err}"
    );
    let d = TempDir::new("init-exec");
    let link = d.join("dumb-init");
    std::os::unix::fs::symlink(bin(), &link).unwrap();
    let noexec = d.join("noexec");
    std::fs::write(&noexec, "#!/bin/sh\n").unwrap();
    let o = Command::new(&link).arg(&noexec).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(
        stderr(&o),
        format!("[dumb-init] {}: Permission denied\n", noexec.display())
    );
}

#[test]
fn init_dumb_init_link_options_and_shebang() {
    let d = TempDir::new("init-link");
    let link = d.join("dumb-init");
    std::os::unix::fs::symlink(bin(), &link).unwrap();
    let o = run(&["--list"]);
    let names = stdout(&o);
    assert!(names.lines().any(|l| l == "init") && names.lines().any(|l| l == "dumb-init"));
    let o = Command::new(&link).arg("-V").output().unwrap();
    assert!(o.status.success());
    assert!(stderr(&o).starts_with("dumb-init v1.2.5"), "{}", stderr(&o));
    let o = Command::new(&link).arg("--help").output().unwrap();
    assert!(o.status.success());
    assert!(stderr(&o).contains("--single-child") && stderr(&o).contains("--hostname-from-dns"));
    let o = Command::new(&link).output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).starts_with("Usage: dumb-init [option] program"));
    let o = Command::new(&link).args(["-x", "true"]).output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(stderr(&o), "dumb-init: invalid option -- 'x'\n");
    let o = Command::new(&link)
        .args(["-r", "40:1", "true"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    // The site's scripts start with `#!/usr/bin/dumb-init /bin/bash`.
    let script = d.join("script");
    std::fs::write(
        &script,
        format!("#!{} /bin/sh\necho \"args: $*\"\nexit 5\n", link.display()),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let o = Command::new(&script).args(["a b", "-v"]).output().unwrap();
    assert_eq!(o.status.code(), Some(5), "{}", stderr(&o));
    assert_eq!(stdout(&o), "args: a b -v\n");
    assert_eq!(stderr(&o), "");
    // DUMB_INIT_DEBUG=1 is -v
    let o = Command::new(&link)
        .arg("true")
        .env("DUMB_INIT_DEBUG", "1")
        .output()
        .unwrap();
    assert!(
        stderr(&o).contains("[dumb-init] Child spawned with PID"),
        "{}",
        stderr(&o)
    );
    // non-UTF-8 arguments reach the command byte for byte
    use std::os::unix::ffi::OsStrExt;
    let raw = std::ffi::OsStr::from_bytes(b"caf\xe9");
    let o = Command::new(&link)
        .args(["sh", "-c", "printf %s \"$1\" | od -An -tx1", "sh"])
        .arg(raw)
        .output()
        .unwrap();
    assert_eq!(
        stdout(&o).split_whitespace().collect::<Vec<_>>(),
        ["63", "61", "66", "e9"]
    );
}

// --- hostname from DNS, inside namespaces the test makes -----------------------

const TEST_IP: &str = "10.9.0.2";

/// Run `inner` (a shell command line) in fresh UTS, mount and network namespaces
/// where the outbound address is TEST_IP (a veth with a default route through a
/// gateway that never answers) and /etc/hosts and /etc/resolv.conf are bind-mounted
/// from `hosts` and `resolv`. `$BERTH` is the binary, `$DUMB_INIT` a link to it.
/// Gives the exit code, stdout and stderr.
fn in_namespaces(hosts: &str, resolv: &str, inner: &str) -> (Option<i32>, String, String) {
    need("unshare");
    need("ip");
    let d = TempDir::new("init-dns");
    std::fs::write(d.join("hosts"), hosts).unwrap();
    std::fs::write(d.join("resolv.conf"), resolv).unwrap();
    std::os::unix::fs::symlink(bin(), d.join("dumb-init")).unwrap();
    let setup = format!(
        "set -e
ip link set lo up
ip link add v0 type veth peer name v1
ip addr add {TEST_IP}/24 dev v0
ip link set v0 up
ip link set v1 up
ip route add default via 10.9.0.1
mount --bind {dir}/hosts /etc/hosts
mount --bind {dir}/resolv.conf /etc/resolv.conf
set +e
{inner}",
        dir = d.path().display()
    );
    let o = Command::new("unshare")
        .args(["--uts", "--mount", "--net", "--", "sh", "-c", &setup])
        .env("BERTH", bin())
        .env("DUMB_INIT", d.join("dumb-init"))
        .output()
        .unwrap();
    (o.status.code(), stdout(&o), stderr(&o))
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_string()
}

#[test]
fn init_sets_the_hostname_from_dns_in_a_namespace() {
    let before = host_name();
    let hosts = format!("127.0.0.1 localhost\n{TEST_IP} node7.grid.example.org node7\n");
    // A resolver on the namespace's own loopback, where nothing listens.
    let resolv = "nameserver 127.0.0.1\n";
    let (code, out, err) = in_namespaces(
        &hosts,
        resolv,
        "\"$BERTH\" init --hostname-from-dns -- sh -c 'hostname; cat /proc/sys/kernel/hostname'",
    );
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(
        out, "node7.grid.example.org\nnode7.grid.example.org\n",
        "{err}"
    );
    // --hostname-short, and the environment variable for shebang users
    let (code, out, err) = in_namespaces(
        &hosts,
        resolv,
        "BERTH_INIT_HOSTNAME=dns-short \"$DUMB_INIT\" hostname",
    );
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out, "node7\n", "{err}");
    assert_eq!(err, "");
    let (_, out, err) = in_namespaces(
        &hosts,
        resolv,
        "\"$BERTH\" init --hostname-short -- hostname",
    );
    assert_eq!(out, "node7\n", "{err}");
    assert_eq!(host_name(), before, "the host's own name must not change");
}

#[test]
fn init_gives_up_on_a_silent_resolver_and_starts_the_child() {
    let before = host_name();
    // No hosts entry; the only nameserver is the gateway, which never answers.
    let (code, out, err) = in_namespaces(
        "127.0.0.1 localhost\n",
        "nameserver 10.9.0.1\noptions timeout:5 attempts:2\n",
        "\"$BERTH\" init --hostname-from-dns --dns-timeout 1 -- sh -c 'echo child ran; hostname'",
    );
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out, format!("child ran\n{before}\n"));
    // "no answer ... within 1 s" is said only when init abandons the lookup at
    // its own deadline (the resolver alone would try for 10 s), so the child
    // was started without waiting for the resolver.
    let lines: Vec<&str> = err.lines().filter(|l| l.contains("hostname")).collect();
    assert_eq!(lines.len(), 1, "{err}");
    assert!(
        lines[0].starts_with("init: hostname unchanged: no answer for 10.9.0.2 within 1 s"),
        "{err}"
    );
    assert_eq!(host_name(), before);
}

#[test]
fn init_without_cap_sys_admin_warns_and_starts_the_child() {
    need("setpriv");
    let before = host_name();
    let hosts = format!("{TEST_IP} node7.grid.example.org\n");
    let (code, out, err) = in_namespaces(
        &hosts,
        "nameserver 127.0.0.1\n",
        "exec setpriv --inh-caps=-sys_admin --bounding-set=-sys_admin -- \"$BERTH\" init --hostname-from-dns -- sh -c 'echo child ran; hostname'",
    );
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out, format!("child ran\n{before}\n"));
    let lines: Vec<&str> = err.lines().filter(|l| l.contains("hostname")).collect();
    assert_eq!(lines.len(), 1, "{err}");
    assert!(
        lines[0].contains("sethostname node7.grid.example.org")
            && lines[0].contains("CAP_SYS_ADMIN")
            && lines[0].contains("Operation not permitted"),
        "{err}"
    );
    assert_eq!(host_name(), before);
}

//! `berth engined-shim`: one per running container, re-executed from the berth
//! binary by engined (which never forks without exec).
//!
//! The shim creates the container (cgroup, namespaces through [`runtime`], veth),
//! holds its stdio (a pty with `-t`), writes its json-file log, runs its port
//! proxies, restarts it per its restart policy and records every change in the
//! container's `state.json`. It is one thread around one poll(2), so a node pays
//! about a megabyte of memory per container, and it runs in its own session:
//! engined can die and come back without touching it.
//!
//! engined talks to it on `EXEC_ROOT/shims/ID.sock`, one command line per
//! connection: `start` (then `started PID` or `error MESSAGE`, and the connection
//! stays open for events), `watch` (a status line, then events), `attach
//! stdin=0|1 stdout=0|1 stderr=0|1` (then the container's output, framed as
//! Docker's stream when there is no tty, and its input), `stop SIGNAL SECONDS`,
//! `kill SIGNAL`, `resize ROWS COLS`, `status`. Events are lines: `running PID`,
//! `restarting`, `exit CODE`.

use super::runtime::{self, Spec};
use super::state::{self, Record, State};
use berth::error::{Context, Error, Kind, Result};
use berth::sys::Op;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// What engined tells the shim beyond the container's record (daemon settings).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShimConfig {
    pub graph: PathBuf,
    /// The control socket (under engined's --exec-root).
    pub sock: PathBuf,
    /// Use a user namespace with an identity mapping (see runtime).
    pub userns: bool,
    pub cgroup_parent: String,
    /// The berth binary (bound at /dev/init for `--init`).
    pub init_binary: PathBuf,
    pub log_rotation: (u64, u32),
    /// False with `--log-driver none`.
    pub log_json: bool,
    /// The root is a private copy of the image, not an overlay (engined's
    /// pre-flight found no overlay on the graph root).
    #[serde(default)]
    pub copy_rootfs: bool,
}

/// Most bytes kept for a client that reads slower than the container writes;
/// past that it is disconnected (the log keeps everything).
const CLIENT_BUFFER: usize = 4 << 20;

pub fn main(name: &str, args: &[String]) -> Result<u8> {
    match args {
        [cmd, rest @ ..] if cmd == "exec" => super::nsexec::main(rest),
        [dir] => run(Path::new(dir)),
        _ => Err(Error::usage(format!(
            "{name} is engined's per-container helper: {name} CONTAINER_DIR"
        ))),
    }
}

fn run(dir: &Path) -> Result<u8> {
    // Its own session: a terminal or process group engined had is not ours.
    let _ = nix::unistd::setsid();
    // SAFETY: setting a signal disposition to SIG_IGN has no preconditions.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
    let mut shim = Shim::open(dir)?;
    // engined waits for this line (its pipe is our stdout), then stdout is
    // /dev/null so engined's end may close.
    berth::proc::raw_write_fd(1, &[b"ready\n"]);
    if let Ok(null) = File::options().write(true).open("/dev/null") {
        // SAFETY: replacing our own stdout with a descriptor we own.
        unsafe { libc::dup2(null.as_raw_fd(), 1) };
    }
    let code = shim.serve();
    Ok(code)
}

/// A connection on the control socket.
struct Client {
    sock: UnixStream,
    kind: ClientKind,
    inbuf: Vec<u8>,
    out: VecDeque<u8>,
    /// Close once `out` is flushed.
    closing: bool,
    /// The client closed its side: read no more.
    eof: bool,
}

#[derive(PartialEq, Eq)]
enum ClientKind {
    /// Its command line has not arrived yet.
    New,
    Watch,
    Attach {
        stdin: bool,
        stdout: bool,
        stderr: bool,
    },
    /// Gets its reply, then the connection closes.
    Reply,
    Done,
}

/// The container while it runs.
struct Running {
    pid: i32,
    stdin: Option<File>,
    stdout: Option<File>,
    stderr: Option<File>,
    /// The pty master with `-t` (output and input).
    pty: Option<File>,
    started: Instant,
}

struct Shim {
    dir: PathBuf,
    record: Record,
    cfg: ShimConfig,
    states: state::Dir,
    state: State,
    listener: UnixListener,
    signals: nix::sys::signalfd::SignalFd,
    clients: Vec<Client>,
    run: Option<Running>,
    stdin_buf: Vec<u8>,
    log: Option<berth::logfile::Writer>,
    proxies: super::ports::Proxies,
    cgroup: Option<berth::cgroup::Cgroup>,
    /// SIGKILL at this time (a stop's timeout).
    kill_at: Option<Instant>,
    restart_at: Option<Instant>,
    /// Let go of the binary's pages the start touched, once things are quiet:
    /// a node runs one shim per job for days.
    trim_at: Option<Instant>,
    /// Backoff of the next restart, docker's: 100 ms doubling, 1 min at most.
    backoff: Duration,
    done: bool,
    /// What the last start fell back from, one line each: for shim.log and,
    /// as `note` lines before `started`, engined's log.
    notes: Vec<String>,
}

impl Shim {
    fn open(dir: &Path) -> Result<Shim> {
        let graph_dir = dir
            .parent()
            .and_then(Path::parent)
            .ok_or_else(|| Error::usage("container dir must be GRAPH/containers/ID"))?;
        let states = state::Dir::open(graph_dir)?;
        let id = dir
            .file_name()
            .and_then(|n| n.to_str())
            .filter(|n| state::valid_id(n))
            .ok_or_else(|| Error::usage("container dir must end in a container id"))?
            .to_string();
        let record = states.load_record(&id)?;
        let cfg: ShimConfig = state::read_json(&dir.join("shim.json"))?;
        let mut st = states.load_state(&id)?;
        st.shim_pid = std::process::id() as i32;
        let sock = cfg.sock.clone();
        let _ = std::fs::remove_file(&sock);
        let listener =
            UnixListener::bind(&sock).with_context(|| format!("listen on {}", sock.display()))?;
        listener.set_nonblocking(true)?;
        use nix::sys::signal::{SigSet, Signal};
        let mut mask = SigSet::empty();
        for s in [
            Signal::SIGCHLD,
            Signal::SIGTERM,
            Signal::SIGINT,
            Signal::SIGHUP,
        ] {
            mask.add(s);
        }
        mask.thread_block()
            .map_err(|e| Error::from(e).context("block signals"))?;
        let signals = nix::sys::signalfd::SignalFd::with_flags(
            &mask,
            nix::sys::signalfd::SfdFlags::SFD_NONBLOCK | nix::sys::signalfd::SfdFlags::SFD_CLOEXEC,
        )
        .map_err(|e| Error::from(e).context("signalfd"))?;
        let log = if cfg.log_json {
            Some(berth::logfile::Writer::open(
                &dir.join(format!("{id}-json.log")),
                berth::logfile::Rotation {
                    max_size: cfg.log_rotation.0,
                    max_file: cfg.log_rotation.1,
                },
            )?)
        } else {
            None
        };
        Ok(Shim {
            dir: dir.to_path_buf(),
            record,
            cfg,
            states,
            state: st,
            listener,
            signals,
            clients: Vec::new(),
            run: None,
            stdin_buf: Vec::new(),
            log,
            proxies: super::ports::Proxies::default(),
            cgroup: None,
            kill_at: None,
            restart_at: None,
            trim_at: None,
            backoff: Duration::from_millis(100),
            done: false,
            notes: Vec::new(),
        })
    }

    // A fallback of this start: one line in shim.log now, one in engined's log
    // when the start is answered.
    fn note(&mut self, line: &str) {
        eprintln!("shim: {line}");
        self.notes.push(line.to_string());
    }

    fn save(&self) {
        if let Err(e) = self.states.save_state(&self.record.id, &self.state) {
            eprintln!("shim: cannot record the state: {e}");
        }
    }

    fn event(&mut self, line: &str) {
        for c in self
            .clients
            .iter_mut()
            .filter(|c| c.kind == ClientKind::Watch)
        {
            c.out.extend(line.as_bytes());
            c.out.push_back(b'\n');
        }
    }

    /// The main loop: until the container has ended for good and every client has
    /// what it was owed. Returns the shim's exit code.
    fn serve(&mut self) -> u8 {
        // engined connects (attachments first, then `start`) within moments; a
        // shim nobody talks to for a minute ends.
        let idle_since = Instant::now();
        loop {
            if self.done && self.clients.iter().all(|c| c.out.is_empty()) {
                break;
            }
            if self.run.is_none()
                && self.restart_at.is_none()
                && self.state.status == "created"
                && self.clients.is_empty()
                && idle_since.elapsed() > Duration::from_secs(60)
            {
                break;
            }
            let timeout = self.next_timeout();
            self.poll_once(timeout);
            self.timers();
        }
        self.cleanup();
        0
    }

    fn next_timeout(&self) -> Duration {
        let now = Instant::now();
        [self.kill_at, self.restart_at, self.trim_at]
            .iter()
            .flatten()
            .map(|t| t.saturating_duration_since(now))
            .min()
            .unwrap_or(Duration::from_secs(1))
            .min(Duration::from_secs(1))
    }

    fn timers(&mut self) {
        let now = Instant::now();
        if self.trim_at.is_some_and(|t| t <= now) {
            self.trim_at = None;
            berth::proc::trim_image_pages();
        }
        if self.kill_at.is_some_and(|t| t <= now) {
            self.kill_at = None;
            self.kill_everything();
        }
        if self.restart_at.is_some_and(|t| t <= now) {
            self.restart_at = None;
            self.state.restart_count += 1;
            match self.start() {
                Ok(pid) => {
                    let ev = format!("running {pid}");
                    self.event(&ev);
                }
                Err(e) => {
                    eprintln!("shim: restart failed: {e}");
                    self.finish(127, &e.to_string());
                }
            }
        }
    }

    fn poll_once(&mut self, timeout: Duration) {
        use nix::poll::{PollFd, PollFlags, poll};
        // Index plan of the poll set: signals, listener, container fds, clients, proxies.
        let mut fds: Vec<(RawFd, PollFlags)> = vec![
            (self.signals.as_raw_fd(), PollFlags::POLLIN),
            (self.listener.as_raw_fd(), PollFlags::POLLIN),
        ];
        let mut out_fds: Vec<(RawFd, u8)> = Vec::new();
        if let Some(r) = &self.run {
            if let Some(p) = &r.pty {
                out_fds.push((p.as_raw_fd(), 1));
            }
            if let Some(o) = &r.stdout {
                out_fds.push((o.as_raw_fd(), 1));
            }
            if let Some(e) = &r.stderr {
                out_fds.push((e.as_raw_fd(), 2));
            }
        }
        for (fd, _) in &out_fds {
            fds.push((*fd, PollFlags::POLLIN));
        }
        let stdin_fd = self.run.as_ref().and_then(|r| {
            r.pty
                .as_ref()
                .map(|p| p.as_raw_fd())
                .or(r.stdin.as_ref().map(|s| s.as_raw_fd()))
        });
        let want_stdin_write = !self.stdin_buf.is_empty() && stdin_fd.is_some();
        if want_stdin_write {
            fds.push((stdin_fd.unwrap_or(-1), PollFlags::POLLOUT));
        }
        let client_base = fds.len();
        for c in &self.clients {
            let mut f = if c.eof {
                PollFlags::empty()
            } else {
                PollFlags::POLLIN
            };
            if !c.out.is_empty() {
                f |= PollFlags::POLLOUT;
            }
            fds.push((c.sock.as_raw_fd(), f));
        }
        let proxy_base = fds.len();
        let proxy_fds = self.proxies.poll_fds();
        fds.extend(proxy_fds.iter().copied());
        // SAFETY: every raw fd above is owned by `self` and stays open for the call.
        let borrowed: Vec<std::os::fd::BorrowedFd> = fds
            .iter()
            .map(|(fd, _)| unsafe { std::os::fd::BorrowedFd::borrow_raw(*fd) })
            .collect();
        let mut pfds: Vec<PollFd> = borrowed
            .iter()
            .zip(&fds)
            .map(|(b, (_, f))| PollFd::new(*b, *f))
            .collect();
        let ms = timeout.as_millis().min(60_000) as u16;
        if poll(&mut pfds, ms).is_err() {
            return;
        }
        let ready: Vec<PollFlags> = pfds
            .iter()
            .map(|p| p.revents().unwrap_or(PollFlags::empty()))
            .collect();
        drop(pfds);
        drop(borrowed);
        if !ready[0].is_empty() {
            self.on_signals();
        }
        if !ready[1].is_empty() {
            self.accept();
        }
        for (i, (fd, stream)) in out_fds.iter().enumerate() {
            if !ready[2 + i].is_empty() {
                self.on_output(*fd, *stream);
            }
        }
        if want_stdin_write {
            self.flush_stdin();
        }
        let n_clients = proxy_base - client_base;
        for i in 0..n_clients {
            let r = ready[client_base + i];
            if r.is_empty() {
                continue;
            }
            self.on_client(i, r);
        }
        let proxy_ready: Vec<PollFlags> = ready[proxy_base..].to_vec();
        let target = self.record.net.ip;
        self.proxies.on_ready(&proxy_ready, target);
        self.clients
            .retain(|c| c.kind != ClientKind::Done && !(c.closing && c.out.is_empty()));
    }

    fn accept(&mut self) {
        while let Ok((sock, _)) = self.listener.accept() {
            if sock.set_nonblocking(true).is_ok() {
                self.clients.push(Client {
                    sock,
                    kind: ClientKind::New,
                    inbuf: Vec::new(),
                    out: VecDeque::new(),
                    closing: false,
                    eof: false,
                });
            }
        }
    }

    fn on_client(&mut self, i: usize, r: nix::poll::PollFlags) {
        use nix::poll::PollFlags;
        if r.contains(PollFlags::POLLOUT) {
            let c = &mut self.clients[i];
            while !c.out.is_empty() {
                let (a, _) = c.out.as_slices();
                match c.sock.write(a) {
                    Ok(0) => break,
                    Ok(n) => {
                        c.out.drain(..n);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(_) => {
                        c.kind = ClientKind::Done;
                        return;
                    }
                }
            }
            if c.out.is_empty() && c.closing {
                c.kind = ClientKind::Done;
                return;
            }
        }
        if r.intersects(PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR) {
            let mut buf = [0u8; 16 * 1024];
            let n = match self.clients[i].sock.read(&mut buf) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(_) => 0,
            };
            if n == 0 {
                self.client_eof(i);
                return;
            }
            let data = buf[..n].to_vec();
            match self.clients[i].kind {
                ClientKind::New => {
                    self.clients[i].inbuf.extend_from_slice(&data);
                    if let Some(nl) = self.clients[i].inbuf.iter().position(|&b| b == b'\n') {
                        let line =
                            String::from_utf8_lossy(&self.clients[i].inbuf[..nl]).into_owned();
                        let rest = self.clients[i].inbuf[nl + 1..].to_vec();
                        self.clients[i].inbuf.clear();
                        self.command(i, &line);
                        if !rest.is_empty() {
                            self.client_input(i, &rest);
                        }
                    } else if self.clients[i].inbuf.len() > 4096 {
                        self.clients[i].kind = ClientKind::Done;
                    }
                }
                _ => self.client_input(i, &data),
            }
        }
    }

    fn client_input(&mut self, i: usize, data: &[u8]) {
        if let ClientKind::Attach { stdin: true, .. } = self.clients[i].kind
            && self.run.is_some()
        {
            self.stdin_buf.extend_from_slice(data);
            self.flush_stdin();
        }
    }

    fn client_eof(&mut self, i: usize) {
        let stdin_once = self.record.config.stdin_once;
        let c = &mut self.clients[i];
        c.eof = true;
        match c.kind {
            // An attached client that closed its input may still read output.
            ClientKind::Attach {
                stdin,
                stdout,
                stderr,
            } => {
                c.kind = if stdout || stderr {
                    ClientKind::Attach {
                        stdin: false,
                        stdout,
                        stderr,
                    }
                } else {
                    ClientKind::Done
                };
                if stdin && stdin_once {
                    self.close_stdin();
                }
            }
            ClientKind::Reply => {}
            _ => c.kind = ClientKind::Done,
        }
    }

    fn close_stdin(&mut self) {
        self.flush_stdin();
        if let Some(r) = &mut self.run {
            if r.pty.is_none() {
                r.stdin = None;
                self.stdin_buf.clear();
            } else if let Some(p) = &r.pty {
                // With a tty, end of input is ^D at the line discipline.
                let _ = (&*p).write(&[4]);
            }
        }
    }

    fn flush_stdin(&mut self) {
        let Some(r) = &mut self.run else {
            self.stdin_buf.clear();
            return;
        };
        let target = r.pty.as_mut().or(r.stdin.as_mut());
        let Some(f) = target else {
            self.stdin_buf.clear();
            return;
        };
        while !self.stdin_buf.is_empty() {
            match f.write(&self.stdin_buf) {
                Ok(0) => break,
                Ok(n) => {
                    self.stdin_buf.drain(..n);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(_) => {
                    self.stdin_buf.clear();
                    break;
                }
            }
        }
    }

    fn reply(&mut self, i: usize, text: &str, keep: bool) {
        let c = &mut self.clients[i];
        c.out.extend(text.as_bytes());
        c.out.push_back(b'\n');
        if !keep {
            c.closing = true;
            c.kind = ClientKind::Reply;
        }
    }

    fn command(&mut self, i: usize, line: &str) {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["attach", opts @ ..] => {
                let on = |k: &str| opts.iter().any(|o| *o == format!("{k}=1"));
                self.clients[i].kind = ClientKind::Attach {
                    stdin: on("stdin"),
                    stdout: on("stdout"),
                    stderr: on("stderr"),
                };
                // One byte before any output: engined waits for it, so a start
                // that follows can never run ahead of this attachment.
                self.clients[i].out.push_back(b'+');
            }
            ["start"] => {
                if self.run.is_some() {
                    let pid = self.state.pid;
                    self.clients[i].kind = ClientKind::Watch;
                    self.reply(i, &format!("started {pid}"), true);
                    return;
                }
                self.state.stopped_by_user = false;
                match self.start() {
                    Ok(pid) => {
                        self.clients[i].kind = ClientKind::Watch;
                        for n in std::mem::take(&mut self.notes) {
                            self.reply(i, &format!("note {n}"), true);
                        }
                        self.reply(i, &format!("started {pid}"), true);
                    }
                    Err(e) => {
                        let msg = e.to_string().replace('\n', " ");
                        self.state.status = "created".into();
                        self.state.error = msg.clone();
                        self.save();
                        self.reply(i, &format!("error {msg}"), false);
                        self.done = true;
                    }
                }
            }
            ["watch"] => {
                self.clients[i].kind = ClientKind::Watch;
                let s = serde_json::to_string(&self.state).unwrap_or_default();
                self.reply(i, &format!("status {s}"), true);
            }
            ["status"] => {
                let s = serde_json::to_string(&self.state).unwrap_or_default();
                self.reply(i, &s, false);
            }
            ["stop", sig, secs] => {
                let sig = signal_number(sig).unwrap_or(libc::SIGTERM);
                let secs: i64 = secs.parse().unwrap_or(10);
                self.state.stopped_by_user = true;
                self.restart_at = None;
                if let Some(r) = &self.run {
                    let _ = berth::proc::sig::kill(r.pid, sig);
                    self.kill_at = Some(if secs < 0 {
                        Instant::now() + Duration::from_secs(365 * 86400)
                    } else {
                        Instant::now() + Duration::from_secs(secs as u64)
                    });
                } else if self.state.status == "restarting" {
                    self.finish(self.state.exit_code, "");
                }
                self.save();
                self.reply(i, "ok", false);
            }
            ["kill", sig] => match (signal_number(sig), &self.run) {
                (Some(s), Some(r)) => {
                    let r = berth::proc::sig::kill(r.pid, s);
                    self.reply(
                        i,
                        if r.is_ok() {
                            "ok"
                        } else {
                            "error cannot signal the container"
                        },
                        false,
                    );
                }
                (None, _) => self.reply(i, &format!("error invalid signal: {sig}"), false),
                (_, None) => self.reply(i, "error the container is not running", false),
            },
            ["resize", rows, cols] => {
                if let (Some(r), Ok(rows), Ok(cols)) =
                    (&self.run, rows.parse::<u16>(), cols.parse::<u16>())
                    && let Some(p) = &r.pty
                {
                    let ws = libc::winsize {
                        ws_row: rows,
                        ws_col: cols,
                        ws_xpixel: 0,
                        ws_ypixel: 0,
                    };
                    // SAFETY: TIOCSWINSZ with a live winsize on our pty master.
                    unsafe { libc::ioctl(p.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
                }
                self.reply(i, "ok", false);
            }
            _ => self.reply(i, &format!("error unknown command {line:?}"), false),
        }
    }

    /// Container output: to the log and to every attached client that wants it.
    fn on_output(&mut self, fd: RawFd, stream: u8) {
        let mut buf = vec![0u8; 32 * 1024];
        // SAFETY: fd is one of our container pipes or the pty master, open.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            if n == 0 || berth::proc::errno() != libc::EAGAIN {
                // EOF (or EIO from a pty whose slave closed): stop polling it.
                if let Some(r) = &mut self.run {
                    for f in [&mut r.stdout, &mut r.stderr, &mut r.pty] {
                        if f.as_ref().is_some_and(|x| x.as_raw_fd() == fd) {
                            *f = None;
                        }
                    }
                }
            }
            return;
        }
        let data = &buf[..n as usize];
        let s = if stream == 2 {
            berth::logfile::Stream::Stderr
        } else {
            berth::logfile::Stream::Stdout
        };
        if let Some(l) = &mut self.log
            && let Err(e) = l.write(s, data, std::time::SystemTime::now())
        {
            eprintln!("shim: log: {e}");
        }
        let tty = self.record.config.tty;
        let mut framed = Vec::new();
        if !tty {
            berth::logfile::frame(stream, data, &mut framed);
        }
        for c in &mut self.clients {
            if let ClientKind::Attach { stdout, stderr, .. } = c.kind {
                let wants = if stream == 2 { stderr } else { stdout };
                if !wants || c.closing {
                    continue;
                }
                if c.out.len() > CLIENT_BUFFER {
                    c.kind = ClientKind::Done;
                    continue;
                }
                c.out.extend(if tty { data } else { &framed[..] });
            }
        }
    }

    fn on_signals(&mut self) {
        while let Ok(Some(si)) = self.signals.read_signal() {
            let sig = si.ssi_signo as i32;
            if sig == libc::SIGCHLD {
                self.reap();
            } else if let Some(r) = &self.run {
                // The host is going down (or someone asked the shim to go):
                // stop the container the way a stop would.
                let _ = berth::proc::sig::kill(r.pid, libc::SIGTERM);
                self.state.stopped_by_user = true;
                self.kill_at
                    .get_or_insert(Instant::now() + Duration::from_secs(10));
            } else {
                self.done = true;
            }
        }
    }

    fn reap(&mut self) {
        loop {
            let mut status = 0;
            // SAFETY: waitpid with a live status pointer.
            let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
            if pid <= 0 {
                break;
            }
            if self.run.as_ref().is_some_and(|r| r.pid == pid) {
                let code = berth::proc::status_code(status);
                self.exited(code);
            }
        }
    }

    /// The container's init ended.
    fn exited(&mut self, code: i32) {
        // Drain what is still in the pipes before closing them.
        if let Some(r) = self.run.as_ref() {
            let fds: Vec<(RawFd, u8)> = [(&r.pty, 1), (&r.stdout, 1), (&r.stderr, 2)]
                .iter()
                .filter_map(|(f, s)| f.as_ref().map(|f| (f.as_raw_fd(), *s)))
                .collect();
            for (fd, s) in fds {
                for _ in 0..64 {
                    let before = self.run.as_ref().map(|r| {
                        r.stdout.is_some() as u8 + r.stderr.is_some() as u8 + r.pty.is_some() as u8
                    });
                    self.on_output(fd, s);
                    let after = self.run.as_ref().map(|r| {
                        r.stdout.is_some() as u8 + r.stderr.is_some() as u8 + r.pty.is_some() as u8
                    });
                    if before != after || !readable(fd) {
                        break;
                    }
                }
            }
        }
        if let Some(l) = &mut self.log {
            let _ = l.flush_partial();
        }
        let ran = self
            .run
            .as_ref()
            .map(|r| r.started.elapsed())
            .unwrap_or_default();
        self.run = None;
        self.kill_at = None;
        // Whatever the init left behind goes with it.
        if let Some(cg) = &self.cgroup {
            let _ = cg.kill_all(nix::sys::signal::Signal::SIGKILL);
        }
        self.state.exit_code = code;
        self.state.pid = 0;
        self.state.oom_killed = code == 137 && self.oom_happened();
        self.state.finished_at = Some(state::now_nanos());
        // Attached clients get the end of the stream now.
        for c in &mut self.clients {
            if matches!(c.kind, ClientKind::Attach { .. }) {
                c.closing = true;
                c.kind = ClientKind::Reply;
            }
        }
        if self.should_restart(code) {
            if ran >= Duration::from_secs(10) {
                self.backoff = Duration::from_millis(100);
            }
            self.state.status = "restarting".into();
            self.save();
            self.event(&format!("exit {code}"));
            self.event("restarting");
            self.restart_at = Some(Instant::now() + self.backoff);
            self.backoff = (self.backoff * 2).min(Duration::from_secs(60));
        } else {
            self.finish(code, "");
        }
    }

    fn oom_happened(&self) -> bool {
        self.cgroup
            .as_ref()
            .is_some_and(|cg| cg.oom_kills().unwrap_or(0) > 0)
    }

    fn should_restart(&self, code: i32) -> bool {
        if self.state.stopped_by_user {
            return false;
        }
        let p = &self.record.host_config.restart_policy;
        match p.name.as_str() {
            "always" | "unless-stopped" => true,
            "on-failure" => {
                code != 0
                    && (p.maximum_retry_count <= 0
                        || (self.state.restart_count as i64) < p.maximum_retry_count)
            }
            _ => false,
        }
    }

    /// The container is over (no restart): record it and let the loop end.
    fn finish(&mut self, code: i32, error: &str) {
        self.restart_at = None;
        self.state.status = "exited".into();
        self.state.exit_code = code;
        if !error.is_empty() {
            self.state.error = error.to_string();
        }
        self.state.shim_pid = 0;
        self.save();
        self.event(&format!("exit {code}"));
        // Watchers (engined's monitor) keep their connection until the process
        // ends, after cleanup: their EOF then says "done with the directory", so
        // a --rm removal follows at once instead of polling for the socket.
        for c in self
            .clients
            .iter_mut()
            .filter(|c| c.kind != ClientKind::Watch)
        {
            c.closing = true;
        }
        self.done = true;
    }

    fn kill_everything(&mut self) {
        if let Some(r) = &self.run {
            let _ = berth::proc::sig::kill(r.pid, libc::SIGKILL);
        }
        if let Some(cg) = &self.cgroup {
            let _ = cg.kill_all(nix::sys::signal::Signal::SIGKILL);
        }
    }

    fn cleanup(&mut self) {
        self.proxies.close_all();
        if let Some(cg) = self.cgroup.take()
            && let Err(e) = cg.destroy(Duration::from_secs(2))
        {
            eprintln!("shim: {e}");
        }
        if self.state.shim_pid != 0 && self.run.is_none() {
            self.state.shim_pid = 0;
            self.save();
        }
        // Last: engined takes a socket that no longer answers for "the shim is
        // done with the container's directory".
        let _ = std::fs::remove_file(&self.cfg.sock);
    }

    /// Create and start the container; its pid.
    fn start(&mut self) -> Result<i32> {
        let r = &self.record;
        let dir = &self.dir;
        for d in ["rootfs", "upper", "work", "empty"] {
            std::fs::create_dir_all(dir.join(d))
                .with_context(|| format!("create {}", dir.join(d).display()))?;
        }
        // A stale overlay work dir from a killed run refuses the next mount.
        let _ = std::fs::remove_dir_all(dir.join("work"));
        std::fs::create_dir_all(dir.join("work"))?;
        if self.cfg.copy_rootfs {
            copy_root(&self.cfg.graph, &r.manifest, dir)?;
        }
        if self.proxies.is_empty() && r.net.mode == "bridge" {
            self.proxies = super::ports::Proxies::bind(&r.host_config)?;
            self.state.ports = self.proxies.published();
        }
        let tty = r.config.tty;
        let open_stdin = r.config.open_stdin;
        // stdio: a pty, or pipes (stdin only when the client keeps it open)
        let mut child_stdio: [Option<OwnedFd>; 3] = [None, None, None];
        let mut run = Running {
            pid: 0,
            stdin: None,
            stdout: None,
            stderr: None,
            pty: None,
            started: Instant::now(),
        };
        // With a tty the init opens it inside (the container's own devpts) and
        // hands the master over this socket.
        let mut pty_sock: Option<(UnixStream, UnixStream)> = None;
        if tty {
            pty_sock = Some(UnixStream::pair().context("socketpair")?);
        } else {
            if open_stdin {
                let (rd, wr) = pipe()?;
                set_nonblocking(wr.as_raw_fd());
                child_stdio[0] = Some(rd);
                run.stdin = Some(File::from(wr));
            } else {
                child_stdio[0] = Some(File::open("/dev/null")?.into());
            }
            let (rd, wr) = pipe()?;
            set_nonblocking(rd.as_raw_fd());
            child_stdio[1] = Some(wr);
            run.stdout = Some(File::from(rd));
            let (rd, wr) = pipe()?;
            set_nonblocking(rd.as_raw_fd());
            child_stdio[2] = Some(wr);
            run.stderr = Some(File::from(rd));
        }
        let spec = self.spec(tty)?;
        let kind = |p: &Path| -> Option<bool> {
            // /proc inside is a new instance of the same kernel's procfs: the
            // host's /proc tells what exists.
            let rel = p.strip_prefix(&spec.rootfs).ok()?;
            std::fs::symlink_metadata(Path::new("/").join(rel))
                .ok()
                .map(|m| m.is_dir())
        };
        self.notes.clear();
        if !spec.privileged && !spec.no_new_privs {
            self.note(
                "no_new_privs: the kernel has none (before 3.5): the container starts without it, so set-id programs in it can gain privileges",
            );
        }
        let overlay = runtime::overlay_plan(&spec);
        let root = runtime::root_plan(&spec, &kind);
        let (to_child_r, to_child_w) = pipe()?;
        let (from_child_r, from_child_w) = pipe()?;
        let userns = spec.userns;
        let mut stack = vec![0u8; 256 * 1024];
        let child_fds = ChildFds {
            stdio: [
                child_stdio[0].as_ref().map(|f| f.as_raw_fd()).unwrap_or(-1),
                child_stdio[1].as_ref().map(|f| f.as_raw_fd()).unwrap_or(-1),
                child_stdio[2].as_ref().map(|f| f.as_raw_fd()).unwrap_or(-1),
            ],
            go: to_child_r.as_raw_fd(),
            report: from_child_w.as_raw_fd(),
            tty,
            pty_sock: pty_sock.as_ref().map(|(_, t)| t.as_raw_fd()).unwrap_or(-1),
        };
        let flags = nix::sched::CloneFlags::CLONE_NEWPID | nix::sched::CloneFlags::CLONE_NEWNS;
        let cb = Box::new(|| container_init(&spec, &overlay, &root, &child_fds) as isize);
        // SAFETY: the shim is single-threaded; the child gets its own copy of the
        // address space (no CLONE_VM) and a stack of its own, runs the init set-up
        // and execs or _exits.
        let pid = unsafe { nix::sched::clone(cb, &mut stack, flags, Some(libc::SIGCHLD)) }
            .map_err(|e| Error::from(e).context("clone the container's init (needs root)"))?
            .as_raw();
        drop(to_child_r);
        drop(from_child_w);
        drop(child_stdio);
        run.pid = pid;
        let fail = |this: &mut Shim, e: Error| -> Error {
            let _ = berth::proc::sig::kill(pid, libc::SIGKILL);
            let mut st = 0;
            // SAFETY: reaping our own child.
            unsafe { libc::waitpid(pid, &mut st, 0) };
            let _ = this;
            e
        };
        let mut go = File::from(to_child_w);
        let mut report = File::from(from_child_r);
        let mut fell_back = false;
        if let Err(e) = go.write_all(b"G") {
            return Err(fail(
                self,
                Error::from(e).context("start the container's init"),
            ));
        }
        // The init mounts its root meanwhile: the first write to cgroup.procs
        // waits out an RCU grace period (10-20 ms), the longest step of a start.
        // The init cannot run the command before it: it waits for a "G" after
        // its namespaces, which comes only after this.
        if let Err(e) = self.join_cgroup(pid) {
            return Err(fail(self, e));
        }
        loop {
            let mut b = [0u8; 1];
            match report.read(&mut b) {
                // The pipe closes on exec: the command runs.
                Ok(0) => break,
                Ok(_) => match b[0] {
                    b'U' if userns => {
                        let maps = || -> std::io::Result<()> {
                            std::fs::write(format!("/proc/{pid}/uid_map"), "0 0 4294967295\n")?;
                            std::fs::write(format!("/proc/{pid}/gid_map"), "0 0 4294967295\n")
                        };
                        if let Err(e) = maps() {
                            return Err(fail(
                                self,
                                Error::from(e).context("write the user namespace's id maps"),
                            ));
                        }
                        let _ = go.write_all(b"G");
                    }
                    b'u' if userns => {
                        // The init could not make the user namespace: why,
                        // up to a newline, then it goes on without one.
                        let mut why = Vec::new();
                        let mut c = [0u8; 1];
                        while why.len() < 256
                            && matches!(report.read(&mut c), Ok(1))
                            && c[0] != b'\n'
                        {
                            why.push(c[0]);
                        }
                        self.note(&format!(
                            "user namespace: {}: the container runs without one, so its mounts are not locked (SYS_ADMIN could remount a read-only bind read-write)",
                            String::from_utf8_lossy(&why)
                        ));
                        fell_back = true;
                        let _ = go.write_all(b"G");
                    }
                    b'T' => {
                        let Some((ours, _)) = &pty_sock else { continue };
                        match berth::proc::pty::recv_fd(ours.as_raw_fd()) {
                            Ok(m) => {
                                set_nonblocking(m.as_raw_fd());
                                run.pty = Some(File::from(m));
                            }
                            Err(e) => {
                                return Err(fail(
                                    self,
                                    Error::from(e).context("receive the container's terminal"),
                                ));
                            }
                        }
                    }
                    b'N' => {
                        if let Err(e) = self.host_network(pid) {
                            return Err(fail(self, e));
                        }
                        let _ = go.write_all(b"G");
                    }
                    b'E' => {
                        let mut msg = String::new();
                        let _ = report.read_to_string(&mut msg);
                        return Err(fail(
                            self,
                            Error::new(exec_kind(&msg), msg.trim().to_string()),
                        ));
                    }
                    _ => {}
                },
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(fail(self, Error::from(e).context("the container's init"))),
            }
        }
        if !self.cfg.userns && !self.record.host_config.privileged && !fell_back {
            eprintln!(
                "shim: user namespaces are off on this host: the container's mounts are not locked (SYS_ADMIN could remount a read-only bind read-write)"
            );
        }
        self.run = Some(run);
        self.state.status = "running".into();
        self.state.pid = pid;
        self.state.started_at = Some(state::now_nanos());
        self.state.error.clear();
        self.save();
        self.trim_at = Some(Instant::now() + Duration::from_millis(500));
        Ok(pid)
    }

    /// Make the container's cgroup (once: a restart reuses it) and move `pid` in.
    fn join_cgroup(&mut self, pid: i32) -> Result<()> {
        if self.cgroup.is_none() {
            let hc = &self.record.host_config;
            let limits = berth::cgroup::Limits {
                memory: (hc.memory > 0).then_some(hc.memory as u64),
                nano_cpus: (hc.nano_cpus > 0).then_some(hc.nano_cpus as u64),
                pids: hc.pids_limit.filter(|p| *p > 0),
                privileged: hc.privileged,
            };
            let layout = berth::cgroup::Layout::detect()?;
            self.cgroup = Some(berth::cgroup::Cgroup::create(
                &layout,
                &self.cfg.cgroup_parent,
                &self.record.id,
                &limits,
            )?);
        }
        match &self.cgroup {
            Some(cg) => cg.add_pid(pid),
            None => Ok(()),
        }
    }

    /// The host end of the container's veth, once its network namespace exists.
    fn host_network(&self, pid: i32) -> Result<()> {
        let n = &self.record.net;
        if n.mode != "bridge" {
            return Ok(());
        }
        let names = berth::net::bridge::veth_names(&self.record.id)?;
        // A veth of a run killed before it could clean up.
        let _ = berth::sys::apply(
            &berth::sys::Linux,
            &[Op::LinkDel {
                name: names.host.clone(),
            }],
        );
        let plan = berth::net::bridge::plan_host_side(
            &names,
            &n.bridge,
            n.mtu.unwrap_or(1500),
            pid as u32,
        );
        berth::sys::apply(&berth::sys::Linux, &plan)
    }

    fn spec(&self, tty: bool) -> Result<Spec> {
        let r = &self.record;
        let hc = &r.host_config;
        let mut binds = Vec::new();
        for b in hc.binds.iter().flatten() {
            binds.push(super::containers::parse_bind(b)?);
        }
        for m in hc.mounts.iter().flatten() {
            binds.push(runtime::Bind {
                source: PathBuf::from(&m.source),
                target: PathBuf::from(&m.target),
                read_only: m.read_only,
                copy_up: false,
            });
        }
        for v in &r.volumes {
            binds.push(runtime::Bind {
                source: v.data(&self.cfg.graph),
                target: PathBuf::from(&v.target),
                read_only: false,
                copy_up: true,
            });
        }
        if let (Some(d), Some(target)) = (&r.log_dir, &r.log_target) {
            binds.push(runtime::Bind {
                source: d.clone(),
                target: PathBuf::from(target),
                read_only: false,
                copy_up: false,
            });
        }
        let net = match r.net.mode.as_str() {
            "host" => runtime::Net::Host,
            "none" => runtime::Net::None,
            _ => {
                let (Some(ip), Some(gw)) = (r.net.ip, r.net.gateway) else {
                    return Err(Error::internal("bridge network without an address"));
                };
                runtime::Net::Bridge(berth::net::bridge::plan_container_side(
                    ip,
                    r.net.prefix,
                    gw,
                ))
            }
        };
        let caps = berth::sys::caps::effective_set(
            hc.cap_add.as_deref().unwrap_or_default(),
            hc.cap_drop.as_deref().unwrap_or_default(),
            hc.privileged,
        )?;
        let mut argv = vec![r.path.clone()];
        argv.extend(r.args.iter().cloned());
        let init = hc.init == Some(true);
        if init {
            argv.splice(0..0, ["/dev/init".to_string(), "--".to_string()]);
        }
        Ok(Spec {
            rootfs: self.dir.join("rootfs"),
            copy_root: self.cfg.copy_rootfs,
            lowerdirs: r.lowerdirs.clone(),
            upper: self.dir.join("upper"),
            work: self.dir.join("work"),
            empty: self.dir.join("empty"),
            binds,
            etc_files: vec![
                (self.dir.join("hostname"), "/etc/hostname"),
                (self.dir.join("hosts"), "/etc/hosts"),
                (self.dir.join("resolv.conf"), "/etc/resolv.conf"),
            ],
            init_binary: init.then(|| self.cfg.init_binary.clone()),
            tty,
            hostname: super::containers::hostname_of(r),
            userns: self.cfg.userns && !hc.privileged,
            privileged: hc.privileged,
            no_new_privs: !hc.privileged && berth::sys::has_no_new_privs(),
            readonly_rootfs: hc.readonly_rootfs,
            shm_size: hc.shm_size.max(0) as u64,
            net,
            caps,
            user: r.config.user.clone(),
            env: r.config.env.clone().unwrap_or_default(),
            workdir: r.config.working_dir.clone(),
            argv,
        })
    }
}

/// The container's own copy of its image at `DIR/rootfs`, made once: it is the
/// container's writable layer from then on, kept across restarts. The marker
/// is written only after a complete copy, so a copy cut short is made anew.
fn copy_root(graph: &Path, manifest: &berth::digest::Digest, dir: &Path) -> Result<()> {
    let root = dir.join("rootfs");
    let marker = dir.join("rootfs.copied");
    if marker.exists() {
        return Ok(());
    }
    if berth::fsutil::mountinfo::mounts_under(&root).is_empty() {
        let _ = std::fs::remove_dir_all(&root);
    }
    let store = berth::store::local::LocalStore::open(graph)?;
    let n = store
        .materialize(manifest, &root)
        .map_err(|e| e.context("copy the image for the container's root"))?;
    berth::fsutil::atomic_write(&marker, format!("{n} entries\n").as_bytes())
}

fn exec_kind(msg: &str) -> Kind {
    if msg.contains("executable file not found") || msg.contains("no such file") {
        Kind::NotFound
    } else if msg.contains("permission denied") {
        Kind::Denied
    } else {
        Kind::Invalid
    }
}

fn readable(fd: RawFd) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one live pollfd, no wait.
    unsafe { libc::poll(&mut p, 1, 0) == 1 && p.revents & libc::POLLIN != 0 }
}

fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| Error::from(e).context("pipe"))
}

fn set_nonblocking(fd: RawFd) {
    // SAFETY: fcntl on an fd we own.
    unsafe {
        let fl = libc::fcntl(fd, libc::F_GETFL);
        libc::fcntl(fd, libc::F_SETFL, fl | libc::O_NONBLOCK);
    }
}

/// A signal by number or name (`9`, `KILL`, `SIGKILL`).
pub fn signal_number(s: &str) -> Option<i32> {
    if let Ok(n) = s.parse::<i32>() {
        return (1..=64).contains(&n).then_some(n);
    }
    let up = s.to_ascii_uppercase();
    let name = up.strip_prefix("SIG").unwrap_or(&up);
    let full = format!("SIG{name}");
    full.parse::<nix::sys::signal::Signal>()
        .ok()
        .map(|s| s as i32)
}

/// The descriptors the init works with (raw numbers, valid in the clone).
struct ChildFds {
    stdio: [RawFd; 3],
    go: RawFd,
    report: RawFd,
    tty: bool,
    /// The socket the pty master goes back on (with a tty).
    pty_sock: RawFd,
}

/// Report a failure to the shim and end.
fn die(fds: &ChildFds, msg: &str) -> i32 {
    berth::proc::raw_write_fd(fds.report, &[b"E", msg.as_bytes()]);
    127
}

fn wait_go(fds: &ChildFds) -> bool {
    let mut b = [0u8; 1];
    // SAFETY: reading one byte from our pipe.
    unsafe { libc::read(fds.go, b.as_mut_ptr().cast(), 1) == 1 }
}

fn tell(fds: &ChildFds, what: u8) -> bool {
    berth::proc::raw_write_fd(fds.report, &[&[what]]);
    wait_go(fds)
}

/// The container's init, in the clone (PID 1 of the new PID namespace).
fn container_init(spec: &Spec, overlay: &[Op], root: &[Op], fds: &ChildFds) -> i32 {
    // Signals as a fresh process has them: the shim's blocked set is not ours.
    berth::proc::sig::set_mask(0);
    for s in 1..=64 {
        if s != libc::SIGKILL && s != libc::SIGSTOP {
            berth::proc::sig::default_action(s);
        }
    }
    // SAFETY: plain system calls on our own process and descriptors.
    unsafe {
        libc::setsid();
        for (i, fd) in fds.stdio.iter().enumerate() {
            if *fd >= 0 {
                libc::dup2(*fd, i as i32);
            }
        }
    }
    let sys = berth::sys::Linux;
    // The container ends with its shim, as a node's reboot would end it: no
    // job runs on unwatched, holding its cgroup, IP and ports. (A shim that died
    // before this leaves the pipe closed: wait_go fails.)
    if let Err(e) = berth::sys::apply(&sys, &[Op::ParentDeathSignal(libc::SIGKILL)]) {
        return die(fds, &e.to_string());
    }
    if !wait_go(fds) {
        return 1;
    }
    if let Err(e) = berth::sys::apply(&sys, overlay) {
        return die(fds, &format!("set up the root: {e}"));
    }
    if let Err(e) = prepare_mount_points(spec) {
        return die(fds, &e.to_string());
    }
    if let Err(e) = berth::sys::apply(&sys, root) {
        return die(fds, &format!("set up the root: {e}"));
    }
    if fds.tty
        && let Err(e) = container_tty(fds)
    {
        return die(fds, &format!("the container's terminal: {e}"));
    }
    // A kernel without usable user namespaces (SL6's 2.6.32, SL7's with them
    // switched off at boot: EINVAL), or with none at all (ENOSYS): the
    // container runs without one, and the shim says so. A refusal by policy or
    // a spent limit (EPERM, ENOSPC) stops the start instead: running on with
    // unlocked mounts there would let another container's namespaces, or an
    // LSM, quietly take away what keeps a read-only bind read-only. (A host
    // with user.max_user_namespaces=0 is known before: engined says so once
    // and asks for no user namespace.)
    let fallback;
    let spec = if spec.userns {
        // SAFETY: unshare on our own process.
        if unsafe { libc::unshare(libc::CLONE_NEWUSER) } == 0 {
            if !tell(fds, b'U') {
                return 1;
            }
            spec
        } else {
            let e = std::io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EINVAL | libc::ENOSYS) => {
                    let name = match e.raw_os_error() {
                        Some(libc::EINVAL) => "EINVAL",
                        _ => "ENOSYS",
                    };
                    let why = format!("unshare(CLONE_NEWUSER) failed with {name}\n");
                    berth::proc::raw_write_fd(fds.report, &[b"u", why.as_bytes()]);
                    if !wait_go(fds) {
                        return 1;
                    }
                    fallback = Spec {
                        userns: false,
                        ..spec.clone()
                    };
                    &fallback
                }
                _ => {
                    return die(
                        fds,
                        &format!(
                            "user namespace: {e} (a limit spent or a policy refusing it; \
                             raise user.max_user_namespaces, or set it to 0 to run containers without one)"
                        ),
                    );
                }
            }
        }
    } else {
        spec
    };
    if let Err(e) = berth::sys::apply(&sys, &[runtime::namespaces(spec)]) {
        return die(fds, &format!("namespaces: {e}"));
    }
    if !tell(fds, b'N') {
        return 1;
    }
    if let Err(e) = berth::sys::apply(&sys, &runtime::inner_plan(spec)) {
        return die(fds, &format!("set up the container: {e}"));
    }
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let group = std::fs::read_to_string("/etc/group").unwrap_or_default();
    let ids = match runtime::resolve_user(&spec.user, &passwd, &group) {
        Ok(i) => i,
        Err(e) => return die(fds, &e),
    };
    let env = runtime::environment(&spec.env, &spec.hostname, &ids.home, spec.tty_env());
    let exists = |p: &Path| -> Option<bool> {
        let m = std::fs::metadata(p).ok()?;
        use std::os::unix::fs::PermissionsExt;
        Some(m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    let Some(cmd) = spec.argv.first() else {
        return die(fds, "no command: the image has none and none was given");
    };
    let path = match runtime::find_executable(cmd, &env, &exists) {
        Ok(p) => p,
        Err(e) => return die(fds, &e),
    };
    if let Err(e) = berth::sys::apply(&sys, &runtime::final_plan(spec, &ids, &spec.workdir)) {
        return die(fds, &format!("set up the process: {e}"));
    }
    let c = |s: &str| std::ffi::CString::new(s).unwrap_or_default();
    let argv: Vec<std::ffi::CString> = spec.argv.iter().map(|a| c(a)).collect();
    let envp: Vec<std::ffi::CString> = env.iter().map(|a| c(a)).collect();
    let prog = c(&path.to_string_lossy());
    let e = nix::unistd::execve(&prog, &argv, &envp).unwrap_err();
    die(
        fds,
        &format!("exec: \"{cmd}\": {}", e.desc().to_lowercase()),
    )
}

/// Mount points the root plan needs inside the (mounted) overlay: bind targets
/// of the same kind as their sources, /proc, /dev, /sys, the /etc files, the
/// working directory — made through the confined root, so a symlink in the image
/// never sends them out of it.
fn prepare_mount_points(spec: &Spec) -> Result<()> {
    let root = berth::fsutil::confined::Root::new(&spec.rootfs);
    for d in ["/proc", "/dev", "/sys", "/etc"] {
        root.create_dir_all(Path::new(d), 0o755)?;
    }
    let touch = |p: &Path| -> Result<()> {
        let host = root.prepare_parent(p)?;
        if std::fs::symlink_metadata(&host).is_err() {
            File::create(&host).with_context(|| format!("create {}", p.display()))?;
        }
        Ok(())
    };
    for (_, target) in &spec.etc_files {
        touch(Path::new(target))?;
    }
    for b in &spec.binds {
        let is_dir = std::fs::metadata(&b.source)
            .with_context(|| format!("bind source {}", b.source.display()))?
            .is_dir();
        if is_dir {
            let inside = root.create_dir_all(&b.target, 0o755)?;
            if b.copy_up && dir_is_empty(&b.source)? {
                berth::fsutil::copy_tree(&inside, &b.source).with_context(|| {
                    format!("fill the volume at {} from the image", b.target.display())
                })?;
            }
        } else {
            touch(&b.target)?;
        }
    }
    if !spec.workdir.is_empty() {
        root.create_dir_all(Path::new(&spec.workdir), 0o755)?;
    }
    // Bind targets are resolved inside the root now; the plan's paths must match.
    Ok(())
}

fn dir_is_empty(p: &Path) -> Result<bool> {
    Ok(std::fs::read_dir(p)
        .with_context(|| format!("read {}", p.display()))?
        .next()
        .is_none())
}

impl Spec {
    fn tty_env(&self) -> bool {
        self.tty
    }
}

/// A pty from the container's devpts: its slave becomes stdio and /dev/console,
/// its master goes to the shim.
fn container_tty(fds: &ChildFds) -> Result<()> {
    let (master, slave, path) = berth::proc::pty::open_pty()?;
    berth::sys::apply(
        &berth::sys::Linux,
        &[Op::Mount {
            source: Some(path),
            target: PathBuf::from("/dev/console"),
            fstype: None,
            flags: libc::MS_BIND,
            data: None,
        }],
    )?;
    // SAFETY: plain system calls on descriptors we own.
    unsafe {
        for i in 0..3 {
            libc::dup2(slave.as_raw_fd(), i);
        }
        libc::ioctl(0, libc::TIOCSCTTY, 0);
    }
    berth::proc::pty::send_fd(fds.pty_sock, master.as_raw_fd())?;
    berth::proc::raw_write_fd(fds.report, &[b"T"]);
    Ok(())
}

//! The front every TCP listener of a berth daemon goes through: TLS termination
//! (rustls), HTTP/1.1 message framing, limits, and the real client address, in
//! front of tiny_http listening on a private unix socket.
//!
//! Why a front at all: tiny_http's TLS pins an old rustls and its listener type is
//! closed; it has no handshake or idle timeouts and no connection cap; and when a
//! request body is left unread it drains it into a buffer of the *declared* length,
//! so one `Content-Length: 999999999999` from anyone would abort the process on an
//! allocation failure. The front reads each request head with httparse, refuses
//! bodies over the configured limit with 413 before tiny_http sees them, follows
//! Content-Length and chunked framing to find the next head, and adds an
//! `X-Berth-Peer` header (after removing any the client sent) naming the client,
//! and an `X-Berth-Conn` header naming the connection, through which the server
//! tells the front what it learnt (the client authenticated; stop reading this
//! connection). tiny_http listens on a unix socket in a 0700 directory, so no other
//! local user can reach it and forge those headers.
//!
//! What a client that never authenticates can hold: a connection slot, for the
//! short head timeout when idle (not the long idle timeout of authenticated
//! clients), and a worker only while its request is being answered — the server
//! never waits for a body it did not read (it asks the front to stop reading and
//! closes the connection instead), and a body that stalls is cut off by the body
//! timeout. An upgrade request (`Connection: Upgrade`) turns the rest of the
//! connection into raw bytes for the handler that takes it over; nothing else
//! waits on them.

use rustls::{ServerConfig, ServerConnection};
use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Shutdown, TcpListener, TcpStream};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Header the front sets to the client's address.
pub const PEER_HEADER: &str = "X-Berth-Peer";
/// Header the front sets to its connection id (see [`mark_authenticated`], [`stop_reading`]).
pub const CONN_HEADER: &str = "X-Berth-Conn";
/// Largest request head accepted.
const MAX_HEAD: usize = 64 * 1024;

/// Limits of the front.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Whole TLS handshake, start to end (a deadline, not a per-read timeout).
    pub handshake_timeout: Duration,
    /// A request head must be complete this long after its first byte.
    pub head_timeout: Duration,
    /// Idle time allowed between requests once a client has authenticated (before
    /// that, `head_timeout` is the limit).
    pub idle_timeout: Duration,
    /// A request body that sends nothing for this long is cut off.
    pub body_timeout: Duration,
    pub max_connections: usize,
    /// Connections one client address may hold, so one host cannot take them all.
    pub max_per_ip: usize,
    /// Largest `Content-Length` accepted (chunked bodies are streamed and not capped).
    pub max_body: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            handshake_timeout: Duration::from_secs(10),
            head_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(300),
            body_timeout: Duration::from_secs(60),
            max_connections: 1024,
            max_per_ip: 256,
            max_body: default_max_body(),
        }
    }
}

impl Limits {
    /// Defaults, overridden by `BERTH_HANDSHAKE_TIMEOUT`, `BERTH_IDLE_TIMEOUT`
    /// (seconds) and `BERTH_MAX_CONNECTIONS`: Distribution's config has no keys for
    /// these, and a site rarely needs to touch them.
    pub fn from_env() -> Limits {
        let mut l = Limits::default();
        let num = |k: &str| {
            std::env::var(k)
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        if let Some(s) = num("BERTH_HANDSHAKE_TIMEOUT") {
            l.handshake_timeout = Duration::from_secs(s.max(1));
        }
        if let Some(s) = num("BERTH_IDLE_TIMEOUT") {
            l.idle_timeout = Duration::from_secs(s.max(1));
        }
        if let Some(s) = num("BERTH_HEAD_TIMEOUT") {
            l.head_timeout = Duration::from_secs(s.max(1));
        }
        if let Some(s) = num("BERTH_BODY_TIMEOUT") {
            l.body_timeout = Duration::from_secs(s.max(1));
        }
        if let Some(n) = num("BERTH_MAX_CONNECTIONS") {
            l.max_connections = n.max(1) as usize;
            l.max_per_ip = l.max_per_ip.min(l.max_connections);
        }
        if let Some(n) = num("BERTH_MAX_CONNECTIONS_PER_IP") {
            l.max_per_ip = n.max(1) as usize;
        }
        l
    }
}

/// Half of physical memory, at most 64 GiB: comfortably below what the kernel's
/// overcommit heuristic refuses, whatever tiny_http does with a declared length.
pub fn default_max_body() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let (pages, size) = unsafe {
        (
            libc::sysconf(libc::_SC_PHYS_PAGES),
            libc::sysconf(libc::_SC_PAGESIZE),
        )
    };
    let ram = if pages > 0 && size > 0 {
        pages as u64 * size as u64
    } else {
        1 << 32
    };
    (ram / 2).min(64 << 30)
}

/// What the framer decided about the bytes it was fed.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Forward,
    /// Stop: answer with this status and close.
    Reject(u16, String),
}

#[derive(Debug)]
enum State {
    Head,
    /// A Content-Length body, re-chunked for tiny_http: bytes still to come.
    Body(u64),
    ChunkSize,
    ChunkData(u64),
    ChunkEnd,
    Trailer,
    /// The declared body of an upgrade request, passed on as it is.
    UpgradeBody(u64),
    /// After an upgrade request: raw bytes for whoever takes the connection over.
    Raw,
}

/// Header the front sets to a request's declared Content-Length: bodies reach
/// tiny_http chunked (see [`Framer`]), so handlers learn the length here.
pub const LENGTH_HEADER: &str = "X-Berth-Content-Length";

/// Incremental HTTP/1.1 request framing over a plaintext stream.
///
/// The framer is the single authority on where each request starts and ends, and
/// tiny_http must agree with it byte for byte, or a body could be read as a
/// request the framer never checked. So heads are rebuilt from httparse's fields
/// (bare LF, bare CR, obs-fold and CL+TE together are refused), chunk-size lines
/// are rewritten plainly, trailers are refused, and every Content-Length body is
/// passed on *chunked*: tiny_http then never builds its Content-Length reader,
/// whose drop drains the unread rest into a buffer of the declared size.
pub struct Framer {
    state: State,
    buf: Vec<u8>,
    peer: String,
    conn: u64,
    max_body: u64,
    /// When the current head began to arrive (for the head deadline).
    head_since: Option<std::time::Instant>,
    /// Bytes after an upgrade request's body: not for tiny_http, for the
    /// handler that takes the connection over (see [`take_raw`]).
    pub raw: Vec<u8>,
}

fn bad(msg: &str) -> Verdict {
    Verdict::Reject(400, msg.to_string())
}

// Every LF in a head ends a CRLF, and every CR starts one.
fn strict_line_ends(b: &[u8]) -> bool {
    b.iter().enumerate().all(|(i, &c)| match c {
        b'\n' => i > 0 && b[i - 1] == b'\r',
        b'\r' => b.get(i + 1).is_none_or(|&n| n == b'\n'),
        _ => true,
    })
}

impl Framer {
    pub fn new(peer: &str, conn: u64, max_body: u64) -> Framer {
        Framer {
            state: State::Head,
            buf: Vec::new(),
            peer: peer.to_string(),
            conn,
            max_body,
            head_since: None,
            raw: Vec::new(),
        }
    }

    /// Since when a request head has been arriving without completing.
    pub fn head_pending_since(&self) -> Option<std::time::Instant> {
        self.head_since
    }

    /// True while the client owes bytes of a request body.
    pub fn in_body(&self) -> bool {
        !matches!(self.state, State::Head | State::Raw | State::UpgradeBody(_))
    }

    /// True once an upgrade request handed the connection over.
    pub fn is_raw(&self) -> bool {
        matches!(self.state, State::Raw)
    }

    // Take bytes up to and including the next LF into `self.buf`; true when a
    // whole line is there.
    fn take_line(&mut self, input: &mut &[u8]) -> Result<bool, Verdict> {
        let nl = input.iter().position(|&b| b == b'\n');
        let take = nl.map(|i| i + 1).unwrap_or(input.len());
        self.buf.extend_from_slice(&input[..take]);
        *input = &input[take..];
        if self.buf.len() > 4096 {
            return Err(bad("chunk line too long"));
        }
        if nl.is_none() {
            return Ok(false);
        }
        if self.buf.len() < 2
            || self.buf[self.buf.len() - 2] != b'\r'
            || !strict_line_ends(&self.buf)
        {
            return Err(bad("chunk lines must end in CRLF"));
        }
        Ok(true)
    }

    /// Feed client bytes; what tiny_http should see is appended to `out`.
    pub fn feed(&mut self, mut input: &[u8], out: &mut Vec<u8>) -> Verdict {
        while !input.is_empty() {
            match self.state {
                State::Raw => {
                    self.raw.extend_from_slice(input);
                    return Verdict::Forward;
                }
                State::UpgradeBody(n) => {
                    let k = (n as usize).min(input.len());
                    out.extend_from_slice(&input[..k]);
                    input = &input[k..];
                    self.state = if n == k as u64 {
                        State::Raw
                    } else {
                        State::UpgradeBody(n - k as u64)
                    };
                }
                State::Head => {
                    if self.buf.is_empty() {
                        self.head_since = Some(std::time::Instant::now());
                    }
                    let old = self.buf.len();
                    self.buf.extend_from_slice(input);
                    // Not HTTP at all (a TLS ClientHello on a plain port): say so now
                    // instead of waiting for a head that never comes.
                    let lead = self
                        .buf
                        .iter()
                        .position(|b| !b.is_ascii_uppercase())
                        .unwrap_or(self.buf.len());
                    if (lead < self.buf.len() && (lead == 0 || self.buf[lead] != b' ')) || lead > 16
                    {
                        return bad("not an HTTP request (TLS to a plain HTTP port?)");
                    }
                    let scan_from = old.saturating_sub(3);
                    match find(&self.buf[scan_from..], b"\r\n\r\n") {
                        None => {
                            if self.buf.len() > MAX_HEAD {
                                return Verdict::Reject(431, "request head too large".into());
                            }
                            return Verdict::Forward;
                        }
                        Some(i) => {
                            let end = scan_from + i + 4;
                            input = &input[end - old..];
                            let head = std::mem::take(&mut self.buf);
                            self.head_since = None;
                            if let Err(v) = self.head(&head[..end], out) {
                                return v;
                            }
                        }
                    }
                }
                State::Body(n) => {
                    let k = (n as usize).min(input.len());
                    out.extend_from_slice(format!("{k:x}\r\n").as_bytes());
                    out.extend_from_slice(&input[..k]);
                    out.extend_from_slice(b"\r\n");
                    input = &input[k..];
                    let left = n - k as u64;
                    if left == 0 {
                        out.extend_from_slice(b"0\r\n\r\n");
                        self.state = State::Head;
                    } else {
                        self.state = State::Body(left);
                    }
                }
                State::ChunkSize => {
                    match self.take_line(&mut input) {
                        Ok(true) => {}
                        Ok(false) => return Verdict::Forward,
                        Err(v) => return v,
                    }
                    let line = std::mem::take(&mut self.buf);
                    let text = String::from_utf8_lossy(&line[..line.len() - 2]).into_owned();
                    // extensions are dropped: tiny_http's decoder does not read them
                    let hex = text.split(';').next().unwrap_or("").trim();
                    let size = match u64::from_str_radix(hex, 16) {
                        Ok(v) if !hex.is_empty() && hex.len() <= 15 => v,
                        _ => return bad(&format!("bad chunk size {hex:?}")),
                    };
                    out.extend_from_slice(format!("{size:x}\r\n").as_bytes());
                    self.state = if size == 0 {
                        State::Trailer
                    } else {
                        State::ChunkData(size)
                    };
                }
                State::ChunkData(n) => {
                    let k = (n as usize).min(input.len());
                    out.extend_from_slice(&input[..k]);
                    input = &input[k..];
                    let left = n - k as u64;
                    self.state = if left == 0 {
                        State::ChunkEnd
                    } else {
                        State::ChunkData(left)
                    };
                }
                State::ChunkEnd | State::Trailer => {
                    match self.take_line(&mut input) {
                        Ok(true) => {}
                        Ok(false) => return Verdict::Forward,
                        Err(v) => return v,
                    }
                    let line = std::mem::take(&mut self.buf);
                    if line != b"\r\n" {
                        // after data: the chunk's CRLF; after the last chunk: no trailers
                        return bad("malformed chunked body (trailers are not accepted)");
                    }
                    out.extend_from_slice(b"\r\n");
                    self.state = if matches!(self.state, State::Trailer) {
                        State::Head
                    } else {
                        State::ChunkSize
                    };
                }
            }
        }
        Verdict::Forward
    }

    fn head(&mut self, head: &[u8], out: &mut Vec<u8>) -> Result<(), Verdict> {
        if !strict_line_ends(head) {
            return Err(bad("request head lines must end in CRLF"));
        }
        let mut headers = [httparse::EMPTY_HEADER; 128];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(head) {
            Ok(httparse::Status::Complete(n)) if n == head.len() => {}
            _ => return Err(bad("malformed request head")),
        }
        let (Some(method), Some(path), Some(version)) = (req.method, req.path, req.version) else {
            return Err(bad("malformed request line"));
        };
        let mut length: Option<u64> = None;
        let mut chunked = false;
        let mut upgrade = false;
        let mut keep: Vec<(&str, &[u8])> = Vec::new();
        for h in req.headers.iter() {
            if h.value.iter().any(|&b| b >= 0x7f) {
                // tiny_http reads headers as ASCII and would drop the connection
                return Err(bad(&format!(
                    "header {} holds non-ASCII bytes; send ASCII only",
                    h.name
                )));
            }
            if h.name.eq_ignore_ascii_case("connection")
                && h.value
                    .split(|&b| b == b',')
                    .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"upgrade"))
            {
                upgrade = true;
            }
            if h.name.eq_ignore_ascii_case("content-length") {
                let v = std::str::from_utf8(h.value)
                    .ok()
                    .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()));
                match (v.and_then(|s| s.parse::<u64>().ok()), length) {
                    (None, _) => return Err(bad("bad Content-Length")),
                    (Some(v), Some(l)) if v != l => return Err(bad("conflicting Content-Length")),
                    (Some(v), _) => length = Some(v),
                }
            } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                if !h.value.eq_ignore_ascii_case(b"chunked") || chunked {
                    return Err(bad("only Transfer-Encoding: chunked is accepted"));
                }
                chunked = true;
            } else if h.name.eq_ignore_ascii_case(PEER_HEADER)
                || h.name.eq_ignore_ascii_case(LENGTH_HEADER)
                || h.name.eq_ignore_ascii_case(CONN_HEADER)
            {
                // ours to set, never the client's
            } else if h.value.iter().any(|&b| b < 0x20 && b != b'\t') {
                return Err(bad("control characters in a header"));
            } else {
                keep.push((h.name, h.value));
            }
        }
        if chunked && length.is_some() {
            return Err(bad("Content-Length and Transfer-Encoding together"));
        }
        if chunked && upgrade {
            return Err(bad("an upgrade request cannot have a chunked body"));
        }
        if let Some(l) = length
            && l > self.max_body
        {
            return Err(Verdict::Reject(
                413,
                format!(
                    "request body of {l} bytes exceeds this server's limit of {} bytes; send it in chunks",
                    self.max_body
                ),
            ));
        }
        // The head tiny_http sees, rebuilt from what was parsed.
        out.extend_from_slice(
            format!(
                "{method} {path} HTTP/1.{version}\r\n{PEER_HEADER}: {}\r\n{CONN_HEADER}: {}\r\n",
                self.peer, self.conn
            )
            .as_bytes(),
        );
        for (n, v) in keep {
            out.extend_from_slice(n.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(v);
            out.extend_from_slice(b"\r\n");
        }
        if upgrade {
            // tiny_http reads everything after this head as it is: the declared
            // body goes to it unchanged, what follows waits for the handler that
            // takes the connection over, and no request follows.
            let l = length.unwrap_or(0);
            if l > 0 {
                out.extend_from_slice(
                    format!("Content-Length: {l}\r\n{LENGTH_HEADER}: {l}\r\n").as_bytes(),
                );
            }
            out.extend_from_slice(b"\r\n");
            self.state = if l > 0 {
                State::UpgradeBody(l)
            } else {
                State::Raw
            };
            return Ok(());
        }
        let body = chunked || length.is_some_and(|l| l > 0);
        if let Some(l) = length.filter(|l| *l > 0) {
            out.extend_from_slice(format!("{LENGTH_HEADER}: {l}\r\n").as_bytes());
        }
        if body {
            out.extend_from_slice(b"Transfer-Encoding: chunked\r\n");
        }
        out.extend_from_slice(b"\r\n");
        self.state = match (chunked, length) {
            (true, _) => State::ChunkSize,
            (false, Some(n)) if n > 0 => State::Body(n),
            _ => State::Head,
        };
        Ok(())
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn reject_response(status: u16, msg: &str) -> Vec<u8> {
    let reason = match status {
        413 => "Payload Too Large",
        431 => "Request Header Fields Too Large",
        _ => "Bad Request",
    };
    let code = if status == 413 {
        "SIZE_INVALID"
    } else {
        "UNSUPPORTED"
    };
    let body = serde_json::json!({"errors": [{"code": code, "message": msg}]}).to_string();
    format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// A client's socket: TCP (maybe with TLS over it) or a local unix socket (the
/// engine's API).
enum Sock {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Sock {
    fn try_clone(&self) -> io::Result<Sock> {
        Ok(match self {
            Sock::Tcp(s) => Sock::Tcp(s.try_clone()?),
            Sock::Unix(s) => Sock::Unix(s.try_clone()?),
        })
    }
    fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        match self {
            Sock::Tcp(s) => s.set_read_timeout(t),
            Sock::Unix(s) => s.set_read_timeout(t),
        }
    }
    fn set_write_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        match self {
            Sock::Tcp(s) => s.set_write_timeout(t),
            Sock::Unix(s) => s.set_write_timeout(t),
        }
    }
    fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        match self {
            Sock::Tcp(s) => s.shutdown(how),
            Sock::Unix(s) => s.shutdown(how),
        }
    }
}

impl Read for Sock {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Sock::Tcp(s) => s.read(buf),
            Sock::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Sock {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Sock::Tcp(s) => s.write(buf),
            Sock::Unix(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Sock::Tcp(s) => s.flush(),
            Sock::Unix(s) => s.flush(),
        }
    }
}

/// What the server may tell the front about one of its connections.
struct ConnCtl {
    id: u64,
    /// The front's end of the relay socket, to stop feeding tiny_http.
    backend: UnixStream,
    authenticated: AtomicBool,
    stopped: AtomicBool,
    /// The client still owes bytes of the body of its latest request.
    in_body: AtomicBool,
    /// Raw bytes after an upgrade request, for the handler that takes them.
    inbox: Mutex<Option<std::sync::mpsc::Receiver<Vec<u8>>>>,
    /// A handler took the connection over: no idle timeout, it ends the stream.
    hijacked: AtomicBool,
    /// A response body the front sends itself (see [`hand_body`]).
    direct: Mutex<Option<DirectBody>>,
}

/// A body handed to the front: sent right after the response head that carries
/// `token`, straight from its reader to the client.
struct DirectBody {
    token: Vec<u8>,
    body: Box<dyn Read + Send>,
    len: u64,
    done: std::sync::mpsc::SyncSender<io::Result<()>>,
}

/// Header line by which the front finds the head a handed-over body follows
/// (removed before the head goes out).
pub const DIRECT_HEADER: &str = "X-Berth-Direct";

/// Hand the body of the response about to be written on connection `id` to
/// the front, which sends it to the client itself — the bytes skip the relay
/// socket (two copies and two system calls per piece on bulk blob GETs). The
/// response head the caller writes next must carry `X-Berth-Direct: TOKEN`;
/// the caller then waits on the returned channel for the outcome and writes
/// nothing else meanwhile. Err gives the body back when the connection is not
/// the front's.
#[allow(clippy::type_complexity)]
pub fn hand_body(
    id: u64,
    token: &str,
    body: Box<dyn Read + Send>,
    len: u64,
) -> Result<std::sync::mpsc::Receiver<io::Result<()>>, Box<dyn Read + Send>> {
    let Some(c) = conn(id) else {
        return Err(body);
    };
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    *c.direct.lock().unwrap() = Some(DirectBody {
        token: format!("{DIRECT_HEADER}: {token}\r\n").into_bytes(),
        body,
        len,
        done: tx,
    });
    Ok(rx)
}

fn conns() -> &'static Mutex<HashMap<u64, Arc<ConnCtl>>> {
    static CONNS: OnceLock<Mutex<HashMap<u64, Arc<ConnCtl>>>> = OnceLock::new();
    CONNS.get_or_init(Default::default)
}

fn conn(id: u64) -> Option<Arc<ConnCtl>> {
    conns().lock().unwrap().get(&id).cloned()
}

/// The client on connection `id` authenticated: it may now stay idle for the
/// idle timeout instead of the head timeout.
pub fn mark_authenticated(id: u64) {
    if let Some(c) = conn(id) {
        c.authenticated.store(true, Ordering::Relaxed);
    }
}

/// True while the client of connection `id` has not sent all of a request body:
/// reading that body to its end may wait on the client.
pub fn body_in_flight(id: u64) -> bool {
    conn(id).is_some_and(|c| c.in_body.load(Ordering::Acquire))
}

/// Forward nothing more of connection `id` to the server: what was sent stays
/// readable, then the server sees the end of the stream, answers the request in
/// hand and closes. A server that will not read a body calls this instead of
/// waiting for bytes a client may never send.
pub fn stop_reading(id: u64) {
    if let Some(c) = conn(id) {
        c.stopped.store(true, Ordering::Release);
        // Raw bytes nobody will take: the front stops queueing them.
        c.inbox.lock().unwrap().take();
        let _ = c.backend.shutdown(Shutdown::Write);
    }
}

/// Take over connection `id` after its upgrade request: what the client sends
/// from now on (after the request's declared body), ending when the client
/// closes its side. The answer goes out through the request's own response
/// writer, so it stays in order with what the server sent before.
pub fn take_raw(id: u64) -> Option<Box<dyn Read + Send>> {
    let c = conn(id)?;
    let rx = c.inbox.lock().unwrap().take()?;
    c.hijacked.store(true, Ordering::Release);
    Some(Box::new(Inbox {
        rx,
        cur: Vec::new(),
        pos: 0,
    }))
}

struct Inbox {
    rx: std::sync::mpsc::Receiver<Vec<u8>>,
    cur: Vec<u8>,
    pos: usize,
}

impl Read for Inbox {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos >= self.cur.len() {
            match self.rx.recv() {
                Ok(v) => {
                    self.cur = v;
                    self.pos = 0;
                }
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.cur.len() - self.pos);
        buf[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Connection slots in use: all of them, and per client address.
#[derive(Clone, Default)]
struct Slots {
    active: Arc<AtomicUsize>,
    per_ip: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

/// A taken slot, given back when dropped (whatever happens to the thread).
struct Slot(Slots, Option<IpAddr>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
        if let Some(ip) = self.1 {
            let mut m = self.0.per_ip.lock().unwrap();
            if let Some(n) = m.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    m.remove(&ip);
                }
            }
        }
    }
}

impl Slots {
    /// A slot for a client at `ip` (None: a local socket), or why not.
    fn take(&self, ip: Option<IpAddr>, limits: &Limits) -> Result<Slot, String> {
        if self.active.load(Ordering::Relaxed) >= limits.max_connections {
            return Err(format!(
                "connection limit of {} reached; refusing new connections",
                limits.max_connections
            ));
        }
        if let Some(ip) = ip {
            let mut m = self.per_ip.lock().unwrap();
            let n = m.entry(ip).or_insert(0);
            if *n >= limits.max_per_ip {
                return Err(format!(
                    "{ip} holds {} connections (the per-client limit); refusing more",
                    limits.max_per_ip
                ));
            }
            *n += 1;
        }
        self.active.fetch_add(1, Ordering::Relaxed);
        Ok(Slot(self.clone(), ip))
    }
}

fn accept_loop<L: Send + 'static>(
    listener: L,
    accept: impl Fn(&L) -> io::Result<(Sock, String, Option<IpAddr>)> + Send + 'static,
    tls: Option<Arc<ServerConfig>>,
    backend: PathBuf,
    limits: Limits,
) -> io::Result<()> {
    let slots = Slots::default();
    std::thread::Builder::new()
        .name("front-accept".into())
        .spawn(move || {
            let mut last_full_warning: Option<Instant> = None;
            loop {
                let (sock, peer, ip) = match accept(&listener) {
                    Ok(x) => x,
                    Err(e) => {
                        log::warn!("accept: {e}");
                        std::thread::sleep(Duration::from_millis(50));
                        continue;
                    }
                };
                let slot = match slots.take(ip, &limits) {
                    Ok(s) => s,
                    Err(why) => {
                        if last_full_warning.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                            log::warn!("{why}");
                            last_full_warning = Some(Instant::now());
                        }
                        continue;
                    }
                };
                let (tls, backend) = (tls.clone(), backend.clone());
                let spawned = std::thread::Builder::new()
                    .name("front-conn".into())
                    .stack_size(256 * 1024)
                    .spawn(move || {
                        let _slot = slot;
                        if let Err(e) = connection(sock, &peer, tls, &backend, limits) {
                            log::debug!("connection from {peer}: {e}");
                        }
                    });
                if let Err(e) = spawned {
                    log::error!("cannot start a connection thread: {e}");
                }
            }
        })?;
    Ok(())
}

/// Accept connections on `listener` and relay them to the tiny_http unix socket at
/// `backend`, with TLS when `tls` is given. Returns once the accept thread runs.
pub fn spawn(
    listener: TcpListener,
    tls: Option<Arc<ServerConfig>>,
    backend: PathBuf,
    limits: Limits,
) -> io::Result<()> {
    accept_loop(
        listener,
        |l: &TcpListener| {
            let (s, peer) = l.accept()?;
            s.set_nodelay(true)?;
            Ok((Sock::Tcp(s), peer.to_string(), Some(peer.ip())))
        },
        tls,
        backend,
        limits,
    )
}

/// The same for a local unix socket (the engine's API): plain HTTP, the peer is
/// `unix`, and the per-address cap does not apply (access is the socket's mode).
pub fn spawn_unix(listener: UnixListener, backend: PathBuf, limits: Limits) -> io::Result<()> {
    accept_loop(
        listener,
        |l: &UnixListener| {
            let (s, _) = l.accept()?;
            Ok((Sock::Unix(s), "unix".to_string(), None))
        },
        None,
        backend,
        limits,
    )
}

fn handshake(sock: &mut Sock, conn: &mut ServerConnection, limit: Duration) -> io::Result<()> {
    // A deadline for the whole handshake: a byte every few seconds must not keep
    // a connection slot forever.
    let deadline = Instant::now() + limit;
    let too_long = || io::Error::new(io::ErrorKind::TimedOut, "TLS handshake took too long");
    while conn.is_handshaking() {
        while conn.wants_write() {
            conn.write_tls(sock)?;
        }
        if !conn.is_handshaking() {
            break;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(too_long());
        }
        sock.set_read_timeout(Some(left))?;
        let n = match conn.read_tls(sock) {
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Err(too_long());
            }
            Err(e) => return Err(e),
        };
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "closed during handshake",
            ));
        }
        if let Err(e) = conn.process_new_packets() {
            // Tell the client why (an alert), then give up.
            while conn.wants_write() {
                if conn.write_tls(sock).is_err() {
                    break;
                }
            }
            return Err(io::Error::new(io::ErrorKind::InvalidData, e));
        }
    }
    while conn.wants_write() {
        conn.write_tls(sock)?;
    }
    Ok(())
}

// Move every plaintext byte rustls has decrypted into `out`; true at close_notify.
fn drain_plaintext(conn: &mut ServerConnection, out: &mut Vec<u8>) -> io::Result<bool> {
    let mut tmp = [0u8; 16 * 1024];
    loop {
        match conn.reader().read(&mut tmp) {
            Ok(0) => return Ok(true),
            Ok(n) => out.extend_from_slice(&tmp[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) => return Err(e),
        }
    }
}

/// The client side of a connection: plain TCP or TLS over it.
struct Client {
    tls: Option<Mutex<ServerConnection>>,
    writer: Mutex<Sock>,
}

impl Client {
    /// Turn raw bytes read from the socket into plaintext; true when the client
    /// closed its side (close_notify).
    fn decode(&self, raw: &[u8], plain: &mut Vec<u8>) -> io::Result<bool> {
        let Some(tls) = &self.tls else {
            plain.extend_from_slice(raw);
            return Ok(false);
        };
        let (res, wants) = {
            let mut c = tls.lock().unwrap();
            let mut rd = raw;
            let mut closed = false;
            let mut res = Ok(());
            while !rd.is_empty() {
                if let Err(e) = c.read_tls(&mut rd) {
                    res = Err(e);
                    break;
                }
                if let Err(e) = c.process_new_packets() {
                    res = Err(io::Error::new(io::ErrorKind::InvalidData, e));
                    break;
                }
                match drain_plaintext(&mut c, plain) {
                    Ok(cl) => closed |= cl,
                    Err(e) => {
                        res = Err(e);
                        break;
                    }
                }
            }
            (res.map(|_| closed), c.wants_write())
        };
        if wants {
            // Records leave in the order they were sealed: every drain of rustls'
            // queue happens under the writer lock (taken before the TLS lock).
            self.flush_tls()?;
        }
        res
    }

    fn flush_tls(&self) -> io::Result<()> {
        let Some(tls) = &self.tls else { return Ok(()) };
        let mut w = self.writer.lock().unwrap();
        let mut out = Vec::new();
        {
            let mut c = tls.lock().unwrap();
            while c.wants_write() {
                c.write_tls(&mut out)?;
            }
        }
        w.write_all(&out)
    }

    /// Send plaintext to the client. The records go from rustls's buffer
    /// straight to the socket (no copy through a scratch buffer: on bulk blob
    /// GETs that copy was a tenth of the work); the TLS state stays locked
    /// while they do, which only holds up the reading side of this connection.
    fn send(&self, data: &[u8], _out: &mut Vec<u8>) -> io::Result<()> {
        let Some(tls) = &self.tls else {
            return self.writer.lock().unwrap().write_all(data);
        };
        let mut w = self.writer.lock().unwrap();
        let mut c = tls.lock().unwrap();
        c.writer().write_all(data)?;
        while c.wants_write() {
            c.write_tls(&mut *w)?;
        }
        Ok(())
    }

    /// Nothing more to send: close_notify and FIN, reading side left open so a
    /// client still sending a body gets to read the answer.
    fn finish(&self) {
        if let Some(tls) = &self.tls {
            tls.lock().unwrap().send_close_notify();
            let _ = self.flush_tls();
        }
        let _ = self.writer.lock().unwrap().shutdown(Shutdown::Write);
    }

    fn close(&self) {
        self.finish();
        let _ = self.writer.lock().unwrap().shutdown(Shutdown::Both);
    }
}

/// How long a connection the server stopped reading is still drained (bytes read
/// and dropped) so its client can finish sending and read the answer.
const LINGER: Duration = Duration::from_secs(5);

fn connection(
    mut sock: Sock,
    peer: &str,
    tls: Option<Arc<ServerConfig>>,
    backend: &Path,
    limits: Limits,
) -> io::Result<()> {
    sock.set_write_timeout(Some(limits.idle_timeout))?;
    let mut first = Vec::new();
    let tls_conn = match tls {
        Some(cfg) => {
            let mut conn = ServerConnection::new(cfg).map_err(io::Error::other)?;
            conn.set_buffer_limit(None);
            handshake(&mut sock, &mut conn, limits.handshake_timeout)?;
            // Bytes that came with the handshake are already decrypted: keep them.
            if drain_plaintext(&mut conn, &mut first)? {
                return Ok(());
            }
            Some(Mutex::new(conn))
        }
        None => None,
    };
    let client = Arc::new(Client {
        tls: tls_conn,
        writer: Mutex::new(sock.try_clone()?),
    });
    let mut be = UnixStream::connect(backend)?;
    static NEXT_ID: AtomicU64 = AtomicU64::new(1);
    let ctl = Arc::new(ConnCtl {
        id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
        backend: be.try_clone()?,
        authenticated: AtomicBool::new(false),
        stopped: AtomicBool::new(false),
        in_body: AtomicBool::new(false),
        inbox: Mutex::new(None),
        hijacked: AtomicBool::new(false),
        direct: Mutex::new(None),
    });
    // Raw bytes of a taken-over connection wait here, a bounded queue: a
    // handler that reads slowly slows the client down.
    let (inbox_tx, inbox_rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(16);
    *ctl.inbox.lock().unwrap() = Some(inbox_rx);
    let mut inbox_tx = Some(inbox_tx);
    conns().lock().unwrap().insert(ctl.id, ctl.clone());
    struct Unregister(u64);
    impl Drop for Unregister {
        fn drop(&mut self) {
            conns().lock().unwrap().remove(&self.0);
        }
    }
    let _unregister = Unregister(ctl.id);
    let reject: Arc<Mutex<Option<Vec<u8>>>> = Arc::new(Mutex::new(None));
    let backend_done = Arc::new(AtomicBool::new(false));
    let last = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let touch = move |last: &AtomicU64| last.store(start.elapsed().as_secs(), Ordering::Relaxed);

    // backend -> client
    let out_thread = {
        let (client, reject, last, done) = (
            client.clone(),
            reject.clone(),
            last.clone(),
            backend_done.clone(),
        );
        let mut be_r = be.try_clone()?;
        let ctl = ctl.clone();
        std::thread::Builder::new()
            .name("front-out".into())
            .stack_size(256 * 1024)
            .spawn(move || {
                // 128 KiB: big enough that a bulk GET is not syscall-bound,
                // small enough that hundreds of slow pullers stay cheap.
                let mut buf = vec![0u8; 128 * 1024];
                let mut out = Vec::new();
                // Bytes held back while the head of a handed-over body comes in.
                let mut carry: Vec<u8> = Vec::new();
                'relay: loop {
                    let n = match be_r.read(&mut buf) {
                        Ok(n) => n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(_) => 0,
                    };
                    if n == 0 {
                        break;
                    }
                    let mut direct = ctl.direct.lock().unwrap();
                    let Some(d) = direct.as_mut() else {
                        drop(direct);
                        if client.send(&buf[..n], &mut out).is_err() {
                            break;
                        }
                        touch(&last);
                        continue;
                    };
                    carry.extend_from_slice(&buf[..n]);
                    let Some(at) = find(&carry, &d.token) else {
                        continue;
                    };
                    let Some(end) = find(&carry[at..], b"\r\n\r\n").map(|e| at + e + 4) else {
                        continue;
                    };
                    let d = direct.take().expect("checked above");
                    drop(direct);
                    // The head without our line, then the body from its reader.
                    let mut res = client
                        .send(&carry[..at], &mut out)
                        .and_then(|_| client.send(&carry[at + d.token.len()..end], &mut out));
                    let rest = carry.split_off(end);
                    carry.clear();
                    let (mut body, mut left) = (d.body, d.len);
                    while res.is_ok() && left > 0 {
                        let want = buf.len().min(left as usize);
                        res = match body.read(&mut buf[..want]) {
                            Ok(0) => Err(io::Error::new(
                                io::ErrorKind::UnexpectedEof,
                                format!("body ended {left} bytes early"),
                            )),
                            Ok(k) => {
                                left -= k as u64;
                                touch(&last);
                                client.send(&buf[..k], &mut out)
                            }
                            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(()),
                            Err(e) => Err(e),
                        };
                    }
                    let failed = res.is_err();
                    let _ = d.done.send(res);
                    if failed || (!rest.is_empty() && client.send(&rest, &mut out).is_err()) {
                        break 'relay;
                    }
                }
                if let Some(r) = reject.lock().unwrap().take() {
                    let _ = client.send(&r, &mut out);
                }
                client.finish();
                done.store(true, Ordering::Release);
            })?
    };

    let mut framer = Framer::new(peer, ctl.id, limits.max_body);
    let mut fwd = Vec::with_capacity(80 * 1024);
    let mut feed = |framer: &mut Framer,
                    plain: &[u8],
                    be: &mut UnixStream,
                    inbox: &Option<std::sync::mpsc::SyncSender<Vec<u8>>>|
     -> io::Result<bool> {
        fwd.clear();
        let v = framer.feed(plain, &mut fwd);
        ctl.in_body.store(framer.in_body(), Ordering::Release);
        be.write_all(&fwd)?;
        if !framer.raw.is_empty() {
            let chunk = std::mem::take(&mut framer.raw);
            // Waits while the handler is behind; fails once nobody will read.
            if let Some(tx) = inbox {
                let _ = tx.send(chunk);
            }
        }
        if let Verdict::Reject(status, msg) = v {
            log::warn!("{peer}: refused request: {status} {msg}");
            *reject.lock().unwrap() = Some(reject_response(status, &msg));
            return Ok(false);
        }
        Ok(true)
    };
    let mut result = if first.is_empty() {
        Ok(())
    } else {
        feed(&mut framer, &first, &mut be, &inbox_tx).map(|_| ())
    };

    // client -> backend, on this thread
    sock.set_read_timeout(Some(Duration::from_secs(1)))?;
    let mut buf = vec![0u8; 64 * 1024];
    let mut plain = Vec::with_capacity(80 * 1024);
    let mut last_byte = Instant::now();
    while result.is_ok() && reject.lock().unwrap().is_none() {
        if ctl.stopped.load(Ordering::Acquire) || backend_done.load(Ordering::Acquire) {
            break;
        }
        if let Some(why) = overdue(&framer, &ctl, &limits, last_byte, || {
            start
                .elapsed()
                .as_secs()
                .saturating_sub(last.load(Ordering::Relaxed))
        }) {
            log::debug!("closing connection from {peer}: {why}");
            break;
        }
        let n = match sock.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e)
                if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::TimedOut =>
            {
                continue;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                result = Err(e);
                break;
            }
        };
        touch(&last);
        last_byte = Instant::now();
        plain.clear();
        let closed = match client.decode(&buf[..n], &mut plain) {
            Ok(c) => c,
            Err(e) => {
                result = Err(e);
                break;
            }
        };
        match feed(&mut framer, &plain, &mut be, &inbox_tx) {
            Ok(true) => {}
            Ok(false) => break,
            // The server stopped reading on purpose: let its answer through.
            Err(_) if ctl.stopped.load(Ordering::Acquire) => break,
            Err(e) => {
                result = Err(e);
                break;
            }
        }
        if closed {
            break;
        }
    }
    // A handler that took the connection over sees the end of the client's input.
    inbox_tx = None;
    let _ = &inbox_tx;
    // No more requests: let tiny_http finish the last response, then the out thread
    // sends FIN.
    let _ = be.shutdown(Shutdown::Write);
    if result.is_err() {
        let _ = be.shutdown(Shutdown::Both);
    } else if ctl.stopped.load(Ordering::Acquire) || reject.lock().unwrap().is_some() {
        // Read and drop what the client still sends, for a short while, so it
        // is not cut off (a reset) before it reads the answer.
        let until = Instant::now() + LINGER;
        let mut drained = 0u64;
        while Instant::now() < until && drained < limits.max_body.min(1 << 30) {
            match sock.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    drained += n as u64;
                    plain.clear();
                    if client.decode(&buf[..n], &mut plain).is_err() {
                        break;
                    }
                }
                Err(e)
                    if e.kind() == io::ErrorKind::WouldBlock
                        || e.kind() == io::ErrorKind::TimedOut
                        || e.kind() == io::ErrorKind::Interrupted =>
                {
                    if backend_done.load(Ordering::Acquire) && drained == 0 {
                        break;
                    }
                }
                Err(_) => break,
            }
        }
    }
    let _ = out_thread.join();
    client.close();
    result
}

/// Why a connection must be closed now, if it must: a head trickling in, a body
/// that stalled, or an idle client past its allowance (short until it
/// authenticated). `idle_secs` is the time since anything moved either way.
fn overdue(
    framer: &Framer,
    ctl: &ConnCtl,
    limits: &Limits,
    last_byte: Instant,
    idle_secs: impl Fn() -> u64,
) -> Option<String> {
    if framer
        .head_pending_since()
        .is_some_and(|t| t.elapsed() > limits.head_timeout)
    {
        // A head arriving a byte at a time would hold the slot for days.
        return Some(format!(
            "request head not complete in {:?}",
            limits.head_timeout
        ));
    }
    if framer.in_body() && last_byte.elapsed() > limits.body_timeout {
        return Some(format!(
            "request body stalled for {:?}",
            limits.body_timeout
        ));
    }
    if framer.is_raw() && ctl.hijacked.load(Ordering::Acquire) {
        // A taken-over stream (an attached terminal) is quiet as long as the
        // container is: its handler ends it.
        return None;
    }
    if framer.is_raw() {
        // An upgrade nobody took: the idle rule holds.
        return (idle_secs() >= limits.idle_timeout.as_secs()).then(|| "idle".to_string());
    }
    let allowance = if ctl.authenticated.load(Ordering::Relaxed) {
        limits.idle_timeout
    } else {
        limits.head_timeout.min(limits.idle_timeout)
    };
    (framer.head_pending_since().is_none() && idle_secs() >= allowance.as_secs())
        .then(|| format!("idle for {allowance:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(f: &mut Framer, input: &[u8]) -> (Verdict, String) {
        let mut out = Vec::new();
        let v = f.feed(input, &mut out);
        (v, String::from_utf8_lossy(&out).into_owned())
    }

    fn peer() -> &'static str {
        "10.0.3.145:40000"
    }

    fn reject(input: &[u8]) -> u16 {
        match run(&mut Framer::new(peer(), 7, 100), input).0 {
            Verdict::Reject(code, _) => code,
            Verdict::Forward => 0,
        }
    }

    #[test]
    fn rebuilds_heads_with_peer_and_strips_forged_ones() {
        let mut f = Framer::new(peer(), 7, 100);
        let (v, out) = run(&mut f, b"GET /v2/ HTTP/1.1\r\nHost: x\r\nx-berth-peer: 1.2.3.4:5\r\nX-Berth-Content-Length: 9\r\nX-Berth-Conn: 1\r\n\r\n");
        assert_eq!(v, Verdict::Forward);
        assert_eq!(
            out,
            "GET /v2/ HTTP/1.1\r\nX-Berth-Peer: 10.0.3.145:40000\r\nX-Berth-Conn: 7\r\nHost: x\r\n\r\n"
        );
    }

    #[test]
    fn an_upgrade_hands_the_rest_over_raw_and_high_bytes_are_refused() {
        let mut f = Framer::new(peer(), 7, 100);
        let (v, out) = run(
            &mut f,
            b"POST /exec/x/start HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: tcp\r\nContent-Length: 2\r\n\r\n{}raw\r\n\r\nGET / HTTP/1.1\r\n\r\n",
        );
        assert_eq!(v, Verdict::Forward);
        assert!(out.contains("Content-Length: 2\r\n"), "{out}");
        assert!(!out.contains("Transfer-Encoding"), "{out}");
        // the declared body goes to tiny_http, the rest waits for the handler
        assert!(out.ends_with("\r\n\r\n{}"), "{out}");
        assert_eq!(f.raw, b"raw\r\n\r\nGET / HTTP/1.1\r\n\r\n");
        assert_eq!(out.matches("X-Berth-Peer").count(), 1, "{out}");
        assert!(f.is_raw() && !f.in_body());
        assert_eq!(reject(b"GET / HTTP/1.1\r\nX: caf\xc3\xa9\r\n\r\n"), 400);
        assert_eq!(
            reject(b"GET / HTTP/1.1\r\nConnection: upgrade\r\nTransfer-Encoding: chunked\r\n\r\n"),
            400
        );
    }

    #[test]
    fn content_length_bodies_reach_tiny_http_chunked() {
        let mut f = Framer::new(peer(), 7, 100);
        let input = b"PUT /a HTTP/1.1\r\nContent-Length: 5\r\n\r\nhelloGET /b HTTP/1.1\r\n\r\n";
        let mut all = String::new();
        for b in input.iter() {
            let (v, out) = run(&mut f, std::slice::from_ref(b));
            assert_eq!(v, Verdict::Forward);
            all += &out;
        }
        assert_eq!(all.matches("X-Berth-Peer").count(), 2, "{all}");
        assert!(
            all.contains("X-Berth-Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"),
            "{all}"
        );
        assert!(!all.contains("Content-Length: 5\r\nX"), "{all}");
        // one chunk per byte fed, then the terminator, then the next request
        assert!(
            all.contains(
                "1\r\nh\r\n1\r\ne\r\n1\r\nl\r\n1\r\nl\r\n1\r\no\r\n0\r\n\r\nGET /b HTTP/1.1\r\n"
            ),
            "{all}"
        );
    }

    #[test]
    fn follows_chunked_bodies_and_normalises_them() {
        let mut f = Framer::new(peer(), 7, 100);
        let (v, out) = run(&mut f, b"PATCH /u HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n005;ext=1\r\nhello\r\n0\r\n\r\nGET /n HTTP/1.1\r\n\r\n");
        assert_eq!(v, Verdict::Forward);
        assert_eq!(out.matches("X-Berth-Peer").count(), 2);
        assert!(
            out.contains("\r\n\r\n5\r\nhello\r\n0\r\n\r\nGET /n"),
            "{out}"
        );
        // a chunk whose data looks like a request head is not taken for one
        let (_, out) = run(&mut Framer::new(peer(), 7, 100), b"PATCH /u HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n14\r\nGET / HTTP/1.1\r\n\r\n\r\n\r\n0\r\n\r\n");
        assert_eq!(out.matches("X-Berth-Peer").count(), 1);
    }

    #[test]
    fn refuses_what_could_desynchronise_tiny_http() {
        assert_eq!(
            reject(b"PUT /a HTTP/1.1\r\nContent-Length: 999999999999\r\n\r\n"),
            413
        );
        assert_eq!(
            reject(b"PUT /a HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"),
            400
        );
        assert_eq!(
            reject(b"PUT /a HTTP/1.1\r\nContent-Length: +5\r\n\r\n"),
            400
        );
        assert_eq!(
            reject(b"PUT /a HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"),
            400
        );
        assert_eq!(
            reject(b"PUT /a HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"),
            400
        );
        // bare LF inside a head (httparse accepts it, tiny_http would not split there)
        assert_eq!(
            reject(b"GET /v2/ HTTP/1.1\r\nHost: x\r\nA: b\nContent-Length: 60\r\n\r\n"),
            400
        );
        assert_eq!(reject(b"GET /v2/ HTTP/1.1\r\nA: b\rc\r\n\r\n"), 400);
        // a chunk-size line smuggling a request line, and trailers
        assert_eq!(
            reject(
                b"POST /nope HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3a;x /v2/ HTTP/1.1\n"
            ),
            400
        );
        assert_eq!(
            reject(b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"),
            400
        );
        assert_eq!(
            reject(b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nab\r\n"),
            400
        );
        assert_eq!(
            reject(
                b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX-Trailer: 1\r\n\r\n"
            ),
            400
        );
        assert_eq!(reject(b"\x00\x01garbage\r\n\r\n"), 400);
        // a TLS ClientHello on a plain port is refused at its first byte
        assert_eq!(reject(b"\x16\x03\x01\x02\x00"), 400);
        // a head arriving a byte at a time is not refused early
        let mut f = Framer::new(peer(), 7, 100);
        for b in b"GET / HTTP/1.1\r\n\r\n" {
            assert_eq!(run(&mut f, std::slice::from_ref(b)).0, Verdict::Forward);
        }
    }
}

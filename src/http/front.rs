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
//! `X-Berth-Peer` header (after removing any the client sent) naming the client.
//! tiny_http listens on a unix socket in a 0700 directory, so no other local user can
//! reach it and forge that header.

use rustls::{ServerConfig, ServerConnection};
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Header the front sets to the client's address.
pub const PEER_HEADER: &str = "X-Berth-Peer";
/// Largest request head accepted.
const MAX_HEAD: usize = 64 * 1024;

/// Limits of the front.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub handshake_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
    /// Largest `Content-Length` accepted (chunked bodies are streamed and not capped).
    pub max_body: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(300),
            max_connections: 1024,
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
        if let Some(n) = num("BERTH_MAX_CONNECTIONS") {
            l.max_connections = n.max(1) as usize;
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
    Body(u64),
    ChunkSize,
    ChunkData(u64),
    ChunkEnd,
    Trailer,
}

/// Incremental HTTP/1.1 request framing over a plaintext stream.
pub struct Framer {
    state: State,
    buf: Vec<u8>,
    peer: String,
    max_body: u64,
}

impl Framer {
    pub fn new(peer: SocketAddr, max_body: u64) -> Framer {
        Framer {
            state: State::Head,
            buf: Vec::new(),
            peer: peer.to_string(),
            max_body,
        }
    }

    /// Feed client bytes; what tiny_http should see is appended to `out`.
    pub fn feed(&mut self, mut input: &[u8], out: &mut Vec<u8>) -> Verdict {
        while !input.is_empty() {
            match self.state {
                State::Head => {
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
                        return Verdict::Reject(
                            400,
                            "not an HTTP request (TLS to a plain HTTP port?)".into(),
                        );
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
                            let consumed_from_input = end - old;
                            input = &input[consumed_from_input..];
                            let head = std::mem::take(&mut self.buf);
                            if let Err(v) = self.head(&head[..end], out) {
                                return v;
                            }
                        }
                    }
                }
                State::Body(n) => {
                    let k = (n as usize).min(input.len());
                    out.extend_from_slice(&input[..k]);
                    input = &input[k..];
                    self.state = if n - k as u64 == 0 {
                        State::Head
                    } else {
                        State::Body(n - k as u64)
                    };
                }
                State::ChunkSize | State::Trailer => {
                    let nl = input.iter().position(|&b| b == b'\n');
                    let take = nl.map(|i| i + 1).unwrap_or(input.len());
                    self.buf.extend_from_slice(&input[..take]);
                    out.extend_from_slice(&input[..take]);
                    input = &input[take..];
                    if self.buf.len() > 8192 {
                        return Verdict::Reject(400, "chunk header line too long".into());
                    }
                    if nl.is_none() {
                        return Verdict::Forward;
                    }
                    let line = std::mem::take(&mut self.buf);
                    let line = String::from_utf8_lossy(&line);
                    let line = line.trim_end_matches(['\r', '\n']);
                    if matches!(self.state, State::Trailer) {
                        if line.is_empty() {
                            self.state = State::Head;
                        }
                        continue;
                    }
                    let hex = line.split(';').next().unwrap_or("").trim();
                    let Ok(size) = u64::from_str_radix(hex, 16) else {
                        return Verdict::Reject(400, format!("bad chunk size {hex:?}"));
                    };
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
                    self.state = if n - k as u64 == 0 {
                        State::ChunkEnd
                    } else {
                        State::ChunkData(n - k as u64)
                    };
                }
                State::ChunkEnd => {
                    // the CRLF after chunk data: pass through up to the newline
                    let nl = input.iter().position(|&b| b == b'\n');
                    let take = nl.map(|i| i + 1).unwrap_or(input.len());
                    out.extend_from_slice(&input[..take]);
                    input = &input[take..];
                    if nl.is_some() {
                        self.state = State::ChunkSize;
                    }
                }
            }
        }
        Verdict::Forward
    }

    fn head(&mut self, head: &[u8], out: &mut Vec<u8>) -> Result<(), Verdict> {
        let mut headers = [httparse::EMPTY_HEADER; 128];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(head) {
            Ok(httparse::Status::Complete(_)) => {}
            _ => return Err(Verdict::Reject(400, "malformed request head".into())),
        }
        let mut length: Option<u64> = None;
        let mut chunked = false;
        for h in req.headers.iter() {
            if h.name.eq_ignore_ascii_case("content-length") {
                let v = std::str::from_utf8(h.value)
                    .ok()
                    .and_then(|s| s.trim().parse::<u64>().ok());
                match (v, length) {
                    (None, _) => return Err(Verdict::Reject(400, "bad Content-Length".into())),
                    (Some(v), Some(l)) if v != l => {
                        return Err(Verdict::Reject(400, "conflicting Content-Length".into()));
                    }
                    (Some(v), _) => length = Some(v),
                }
            } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                let v = String::from_utf8_lossy(h.value).to_ascii_lowercase();
                if !v.trim().ends_with("chunked") {
                    return Err(Verdict::Reject(400, "unsupported Transfer-Encoding".into()));
                }
                chunked = true;
            }
        }
        if let Some(l) = length {
            if !chunked && l > self.max_body {
                return Err(Verdict::Reject(
                    413,
                    format!(
                        "request body of {l} bytes exceeds this server's limit of {} bytes; send it in chunks",
                        self.max_body
                    ),
                ));
            }
        }
        // Rewrite: request line, the client's headers minus any peer header, ours.
        let mut lines = head.split(|&b| b == b'\n');
        if let Some(first) = lines.next() {
            out.extend_from_slice(first);
            out.push(b'\n');
        }
        out.extend_from_slice(format!("{PEER_HEADER}: {}\r\n", self.peer).as_bytes());
        for line in lines {
            let is_peer = line.len() > PEER_HEADER.len()
                && line[..PEER_HEADER.len()].eq_ignore_ascii_case(PEER_HEADER.as_bytes())
                && line[PEER_HEADER.len()] == b':';
            if !is_peer && !line.is_empty() {
                out.extend_from_slice(line);
                out.push(b'\n');
            }
        }
        // the split dropped the final empty line's newline; `head` ends in \r\n\r\n,
        // so the last "line" emitted was "\r" and the head is already terminated.
        self.state = if chunked {
            State::ChunkSize
        } else {
            match length {
                Some(0) | None => State::Head,
                Some(n) => State::Body(n),
            }
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

/// Accept connections on `listener` and relay them to the tiny_http unix socket at
/// `backend`, with TLS when `tls` is given. Returns once the accept thread runs.
pub fn spawn(
    listener: TcpListener,
    tls: Option<Arc<ServerConfig>>,
    backend: PathBuf,
    limits: Limits,
) -> io::Result<()> {
    let active = Arc::new(AtomicUsize::new(0));
    std::thread::Builder::new()
        .name("front-accept".into())
        .spawn(move || {
            let mut last_full_warning: Option<Instant> = None;
            for sock in listener.incoming() {
                let sock = match sock {
                    Ok(s) => s,
                    Err(e) => {
                        log::warn!("accept: {e}");
                        std::thread::sleep(Duration::from_millis(50));
                        continue;
                    }
                };
                if active.load(Ordering::Relaxed) >= limits.max_connections {
                    if last_full_warning.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                        log::warn!(
                            "connection limit of {} reached; refusing new connections",
                            limits.max_connections
                        );
                        last_full_warning = Some(Instant::now());
                    }
                    continue;
                }
                active.fetch_add(1, Ordering::Relaxed);
                let (tls, backend, active) = (tls.clone(), backend.clone(), active.clone());
                let spawned = std::thread::Builder::new()
                    .name("front-conn".into())
                    .stack_size(256 * 1024)
                    .spawn(move || {
                        let peer = sock.peer_addr().ok();
                        if let Err(e) = connection(sock, tls, &backend, limits) {
                            log::debug!("connection from {peer:?}: {e}");
                        }
                        active.fetch_sub(1, Ordering::Relaxed);
                    });
                if let Err(e) = spawned {
                    log::error!("cannot start a connection thread: {e}");
                }
            }
        })?;
    Ok(())
}

fn handshake(sock: &mut TcpStream, conn: &mut ServerConnection) -> io::Result<()> {
    while conn.is_handshaking() {
        while conn.wants_write() {
            conn.write_tls(sock)?;
        }
        if !conn.is_handshaking() {
            break;
        }
        if conn.read_tls(sock)? == 0 {
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
    writer: Mutex<TcpStream>,
}

impl Client {
    /// Turn raw bytes read from the socket into plaintext; true when the client
    /// closed its side (close_notify).
    fn decode(&self, raw: &[u8], plain: &mut Vec<u8>) -> io::Result<bool> {
        let Some(tls) = &self.tls else {
            plain.extend_from_slice(raw);
            return Ok(false);
        };
        let mut out = Vec::new();
        let res = {
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
            while c.wants_write() {
                if c.write_tls(&mut out).is_err() {
                    break;
                }
            }
            res.map(|_| closed)
        };
        if !out.is_empty() {
            self.writer.lock().unwrap().write_all(&out)?;
        }
        res
    }

    /// Send plaintext to the client; `out` is scratch space for TLS records.
    fn send(&self, data: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
        let Some(tls) = &self.tls else {
            return self.writer.lock().unwrap().write_all(data);
        };
        out.clear();
        {
            let mut c = tls.lock().unwrap();
            c.writer().write_all(data)?;
            while c.wants_write() {
                c.write_tls(out)?;
            }
        }
        self.writer.lock().unwrap().write_all(out)
    }

    fn close(&self) {
        if let Some(tls) = &self.tls {
            let mut out = Vec::new();
            {
                let mut c = tls.lock().unwrap();
                c.send_close_notify();
                while c.wants_write() {
                    if c.write_tls(&mut out).is_err() {
                        break;
                    }
                }
            }
            let _ = self.writer.lock().unwrap().write_all(&out);
        }
        let _ = self.writer.lock().unwrap().shutdown(Shutdown::Both);
    }
}

fn connection(
    mut sock: TcpStream,
    tls: Option<Arc<ServerConfig>>,
    backend: &Path,
    limits: Limits,
) -> io::Result<()> {
    let peer = sock.peer_addr()?;
    sock.set_nodelay(true)?;
    sock.set_write_timeout(Some(limits.idle_timeout))?;
    let mut first = Vec::new();
    let tls_conn = match tls {
        Some(cfg) => {
            sock.set_read_timeout(Some(limits.handshake_timeout))?;
            let mut conn = ServerConnection::new(cfg).map_err(io::Error::other)?;
            conn.set_buffer_limit(None);
            handshake(&mut sock, &mut conn)?;
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
    let reject: Arc<Mutex<Option<Vec<u8>>>> = Arc::new(Mutex::new(None));
    let last = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let touch = move |last: &AtomicU64| last.store(start.elapsed().as_secs(), Ordering::Relaxed);

    // backend -> client
    let out_thread = {
        let (client, reject, last) = (client.clone(), reject.clone(), last.clone());
        let mut be_r = be.try_clone()?;
        std::thread::Builder::new()
            .name("front-out".into())
            .stack_size(256 * 1024)
            .spawn(move || {
                let mut buf = vec![0u8; 256 * 1024];
                let mut out = Vec::with_capacity(260 * 1024);
                loop {
                    let n = match be_r.read(&mut buf) {
                        Ok(n) => n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(_) => 0,
                    };
                    if n == 0 {
                        break;
                    }
                    if client.send(&buf[..n], &mut out).is_err() {
                        break;
                    }
                    touch(&last);
                }
                if let Some(r) = reject.lock().unwrap().take() {
                    let _ = client.send(&r, &mut out);
                }
                client.close();
            })?
    };

    let mut framer = Framer::new(peer, limits.max_body);
    let mut fwd = Vec::with_capacity(80 * 1024);
    let mut feed = |plain: &[u8], be: &mut UnixStream| -> io::Result<bool> {
        fwd.clear();
        let v = framer.feed(plain, &mut fwd);
        be.write_all(&fwd)?;
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
        feed(&first, &mut be).map(|_| ())
    };

    // client -> backend, on this thread
    sock.set_read_timeout(Some(Duration::from_secs(5).min(limits.idle_timeout)))?;
    let mut buf = vec![0u8; 64 * 1024];
    let mut plain = Vec::with_capacity(80 * 1024);
    while result.is_ok() && reject.lock().unwrap().is_none() {
        let n = match sock.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e)
                if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::TimedOut =>
            {
                let idle = start
                    .elapsed()
                    .as_secs()
                    .saturating_sub(last.load(Ordering::Relaxed));
                if idle >= limits.idle_timeout.as_secs() {
                    log::debug!("closing idle connection from {peer}");
                    break;
                }
                continue;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                result = Err(e);
                break;
            }
        };
        touch(&last);
        plain.clear();
        let closed = match client.decode(&buf[..n], &mut plain) {
            Ok(c) => c,
            Err(e) => {
                result = Err(e);
                break;
            }
        };
        match feed(&plain, &mut be) {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => {
                result = Err(e);
                break;
            }
        }
        if closed {
            break;
        }
    }
    // No more requests: let tiny_http finish the last response, then the out thread closes.
    let _ = be.shutdown(Shutdown::Write);
    if result.is_err() {
        let _ = be.shutdown(Shutdown::Both);
    }
    let _ = out_thread.join();
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(f: &mut Framer, input: &[u8]) -> (Verdict, String) {
        let mut out = Vec::new();
        let v = f.feed(input, &mut out);
        (v, String::from_utf8_lossy(&out).into_owned())
    }

    fn peer() -> SocketAddr {
        "10.0.3.145:40000".parse().unwrap()
    }

    #[test]
    fn adds_peer_and_strips_forged_one() {
        let mut f = Framer::new(peer(), 100);
        let (v, out) = run(
            &mut f,
            b"GET /v2/ HTTP/1.1\r\nHost: x\r\nx-berth-peer: 1.2.3.4:5\r\n\r\n",
        );
        assert_eq!(v, Verdict::Forward);
        assert_eq!(
            out,
            "GET /v2/ HTTP/1.1\r\nX-Berth-Peer: 10.0.3.145:40000\r\nHost: x\r\n\r\n"
        );
    }

    #[test]
    fn follows_bodies_byte_by_byte() {
        let mut f = Framer::new(peer(), 100);
        let input = b"PUT /a HTTP/1.1\r\nContent-Length: 5\r\n\r\nhelloGET /b HTTP/1.1\r\n\r\n";
        let mut all = String::new();
        for b in input.iter() {
            let (v, out) = run(&mut f, std::slice::from_ref(b));
            assert_eq!(v, Verdict::Forward);
            all += &out;
        }
        assert_eq!(all.matches("X-Berth-Peer").count(), 2, "{all}");
        assert!(all.contains("\r\n\r\nhelloGET /b"));
    }

    #[test]
    fn follows_chunked_and_refuses_oversize() {
        let mut f = Framer::new(peer(), 100);
        let (v, out) = run(&mut f, b"PATCH /u HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\nGET /n HTTP/1.1\r\n\r\n");
        assert_eq!(v, Verdict::Forward);
        assert_eq!(out.matches("X-Berth-Peer").count(), 2);
        // a chunk whose data looks like a request head is not taken for one
        let mut f = Framer::new(peer(), 100);
        let (_, out) = run(&mut f, b"PATCH /u HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n14\r\nGET / HTTP/1.1\r\n\r\n\r\n\r\n0\r\n\r\n");
        assert_eq!(out.matches("X-Berth-Peer").count(), 1);
        let mut f = Framer::new(peer(), 100);
        let (v, out) = run(
            &mut f,
            b"PUT /a HTTP/1.1\r\nContent-Length: 999999999999\r\n\r\n",
        );
        assert!(matches!(v, Verdict::Reject(413, _)));
        assert!(out.is_empty());
        let mut f = Framer::new(peer(), 100);
        assert!(matches!(
            run(
                &mut f,
                b"PUT /a HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"
            )
            .0,
            Verdict::Reject(400, _)
        ));
        let mut f = Framer::new(peer(), 100);
        assert!(matches!(
            run(&mut f, b"\x00\x01garbage\r\n\r\n").0,
            Verdict::Reject(400, _)
        ));
        // a TLS ClientHello on a plain port is refused at its first byte
        let mut f = Framer::new(peer(), 100);
        assert!(matches!(
            run(&mut f, b"\x16\x03\x01\x02\x00").0,
            Verdict::Reject(400, _)
        ));
        // a head arriving a byte at a time is not refused early
        let mut f = Framer::new(peer(), 100);
        for b in b"GET / HTTP/1.1\r\n\r\n" {
            assert_eq!(run(&mut f, std::slice::from_ref(b)).0, Verdict::Forward);
        }
    }
}

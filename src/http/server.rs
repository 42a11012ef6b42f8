//! The HTTP server on tiny_http: listeners, workers, responses, access log.
//!
//! TCP listeners always go through [`super::front`] (TLS, framing, limits), with
//! tiny_http on a unix socket in a private directory; a unix-socket listener (the
//! engine's API socket) is served by tiny_http directly. A pool of worker threads
//! takes requests; a handler that panics costs its request a 500, not the daemon.

use super::front;
use crate::error::{Context, Error, Kind, Result};
use std::io::{self, Read};
use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

/// Where to listen.
#[derive(Debug, Clone)]
pub enum Listen {
    /// `host:port`, `:port` (all addresses) or `[v6]:port`.
    Tcp(String),
    Unix(PathBuf),
}

/// Server settings.
pub struct ServerOptions {
    pub listen: Listen,
    pub tls: Option<Arc<rustls::ServerConfig>>,
    pub limits: front::Limits,
    /// Workers kept ready; more are started while every one is busy, up to the
    /// connection cap, so no client (one address holds at most
    /// `limits.max_per_ip` connections) can take them all.
    pub workers: usize,
    /// When set, a connection counts as authenticated (and gets the long idle
    /// timeout) only after a request the handler attributed to a user.
    pub auth_required: bool,
    pub access_log: bool,
    /// Headers added to every response (Distribution's `http.headers`).
    pub headers: Vec<(String, String)>,
}

/// A request being handled.
pub struct Request {
    rq: tiny_http::Request,
    pub method: String,
    /// Path part of the URL, still percent-encoded.
    pub path: String,
    pub query: Vec<(String, String)>,
    /// Client address as the front saw it (`unix` on a unix socket).
    pub peer: String,
    /// Authenticated user, set by the handler for the access log.
    pub user: Option<String>,
    pub secure: bool,
    /// Behind the front: its headers are trustworthy, bodies arrive chunked.
    behind_front: bool,
    /// `Connection: Upgrade`: after the declared body, the stream is raw bytes.
    upgrade: bool,
    /// The body was read to its end.
    body_done: bool,
    /// Body bytes read so far (an upgrade request's body stops at its length).
    body_read: u64,
}

/// A request's body, read through [`Request::body`].
pub struct BodyReader<'a> {
    inner: &'a mut dyn Read,
    done: &'a mut bool,
    read: &'a mut u64,
    /// Where the body ends, when the stream goes on after it (upgrade).
    limit: Option<u64>,
}

impl Read for BodyReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if *self.done {
            return Ok(0);
        }
        let want = match self.limit {
            Some(l) => buf.len().min(l.saturating_sub(*self.read) as usize),
            None => buf.len(),
        };
        if want == 0 && !buf.is_empty() {
            *self.done = true;
            return Ok(0);
        }
        let n = self.inner.read(&mut buf[..want])?;
        *self.read += n as u64;
        if n == 0 && want > 0 {
            *self.done = true;
        }
        Ok(n)
    }
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.rq
            .headers()
            .iter()
            .find(|h| h.field.as_str().as_str().eq_ignore_ascii_case(name))
            .map(|h| h.value.as_str())
    }
    pub fn query(&self, key: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
    /// Declared body length (None for chunked bodies). Behind the front every
    /// body reaches tiny_http chunked; the client's Content-Length comes in the
    /// front's own header.
    pub fn body_length(&self) -> Option<u64> {
        if self.behind_front {
            return self
                .header(front::LENGTH_HEADER)
                .and_then(|v| v.parse().ok());
        }
        if self.upgrade {
            return self.header("Content-Length").and_then(|v| v.parse().ok());
        }
        self.rq.body_length().map(|l| l as u64)
    }
    /// True when the client asked to take the connection over (`Connection: Upgrade`).
    pub fn is_upgrade(&self) -> bool {
        self.upgrade
    }
    /// The request body (sends `100 Continue` if the client waits for it).
    pub fn body(&mut self) -> BodyReader<'_> {
        let limit = if self.upgrade {
            Some(self.body_length().unwrap_or(0))
        } else {
            None
        };
        BodyReader {
            inner: self.rq.as_reader(),
            done: &mut self.body_done,
            read: &mut self.body_read,
            limit,
        }
    }
    /// Read a whole body up to `limit` bytes.
    pub fn read_body(&mut self, limit: usize) -> Result<Vec<u8>> {
        let mut v = Vec::new();
        let n = self
            .body()
            .take(limit as u64 + 1)
            .read_to_end(&mut v)
            .map_err(|e| Error::with_source(Kind::Network, "reading request body", e))?;
        if n > limit {
            return Err(Error::new(
                Kind::Unsupported,
                format!("request body exceeds {limit} bytes"),
            ));
        }
        Ok(v)
    }
    pub fn host(&self) -> Option<&str> {
        self.header("Host")
    }
    // Whether reading the rest of the body could wait on the client.
    fn body_pending(&self, conn: Option<u64>) -> bool {
        if self.body_done {
            return false;
        }
        match conn {
            Some(c) => front::body_in_flight(c),
            None => {
                self.rq.body_length() != Some(0)
                    && (self.header("Content-Length").is_some()
                        || self.header("Transfer-Encoding").is_some())
            }
        }
    }
}

/// A connection taken over by a handler after `101 Switching Protocols`: what
/// the client sends from now on, and a writer to it. Two halves, so one thread
/// can relay input while another writes output (docker attach and exec).
pub struct Upgraded {
    pub reader: Box<dyn Read + Send>,
    pub writer: Box<dyn std::io::Write + Send>,
}

/// A response body.
pub enum Body {
    Empty,
    Bytes(Vec<u8>),
    /// A stream of exactly this many bytes.
    Reader(Box<dyn Read + Send>, u64),
    /// A stream of unknown length, sent chunked and flushed piece by piece as the
    /// reader yields it (followed logs, events, pull progress). It runs on its own
    /// thread, so a stream that lasts hours holds no worker.
    Chunked(Box<dyn Read + Send>),
    /// Take the connection over (HTTP upgrade, docker's attach and exec): the
    /// response goes out as `101` with these headers, then the function runs on
    /// its own thread with the raw connection. Only for upgrade requests; others
    /// get the status given.
    Upgrade(Box<dyn FnOnce(Upgraded) + Send>),
}

/// A response to send.
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Body,
}

impl Response {
    pub fn new(status: u16) -> Response {
        Response {
            status,
            headers: Vec::new(),
            body: Body::Empty,
        }
    }
    pub fn header(mut self, k: impl Into<String>, v: impl Into<String>) -> Response {
        self.headers.push((k.into(), v.into()));
        self
    }
    pub fn bytes(mut self, content_type: &str, body: Vec<u8>) -> Response {
        self.headers
            .push(("Content-Type".into(), content_type.into()));
        self.body = Body::Bytes(body);
        self
    }
    pub fn json(self, v: &serde_json::Value) -> Response {
        self.bytes("application/json", v.to_string().into_bytes())
    }
    pub fn stream(mut self, r: Box<dyn Read + Send>, len: u64) -> Response {
        self.body = Body::Reader(r, len);
        self
    }
    /// A body of unknown length, streamed chunked off the worker pool.
    pub fn chunked(mut self, r: Box<dyn Read + Send>) -> Response {
        self.body = Body::Chunked(r);
        self
    }
    /// Take the connection over once `101` is sent (see [`Body::Upgrade`]).
    pub fn upgrade(mut self, f: impl FnOnce(Upgraded) + Send + 'static) -> Response {
        self.status = 101;
        self.body = Body::Upgrade(Box::new(f));
        self
    }
    /// Bytes in the body, when known in advance.
    pub fn len(&self) -> u64 {
        match &self.body {
            Body::Empty | Body::Chunked(_) | Body::Upgrade(_) => 0,
            Body::Bytes(b) => b.len() as u64,
            Body::Reader(_, n) => *n,
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Something that answers requests.
pub trait Handler: Send + Sync + 'static {
    fn handle(&self, req: &mut Request) -> Response;
    /// What a request gets when its handler panicked (in the API's own error shape).
    fn on_panic(&self) -> Response {
        Response::new(500).json(
            &serde_json::json!({"errors": [{"code": "UNKNOWN", "message": "internal error"}]}),
        )
    }
}

impl<F: Fn(&mut Request) -> Response + Send + Sync + 'static> Handler for F {
    fn handle(&self, req: &mut Request) -> Response {
        self(req)
    }
}

/// A running server.
pub struct Server {
    addr: Option<SocketAddr>,
    workers: Vec<std::thread::JoinHandle<()>>,
    private_dir: Option<PathBuf>,
}

fn resolve(addr: &str) -> Result<Vec<SocketAddr>> {
    // ":5000" is Go's "every address": try IPv6 dual-stack, then IPv4 (IPv6 may be off).
    if let Some(port) = addr.strip_prefix(':') {
        let p: u16 = port
            .parse()
            .map_err(|_| Error::config(format!("bad port in {addr:?}")))?;
        return Ok(vec![
            SocketAddr::from(([0u16; 8], p)),
            SocketAddr::from(([0u8; 4], p)),
        ]);
    }
    addr.to_socket_addrs()
        .map(|a| a.collect())
        .map_err(|e| Error::config(format!("cannot resolve listen address {addr:?}: {e}")))
}

/// Bind a TCP listener with a one-line error an admin can act on.
pub fn bind_tcp(addr: &str) -> Result<TcpListener> {
    let mut last = None;
    for a in resolve(addr)? {
        match TcpListener::bind(a) {
            Ok(l) => return Ok(l),
            Err(e) => last = Some(e),
        }
    }
    let e = last.unwrap_or_else(|| io::Error::other("no address"));
    let hint = match e.kind() {
        io::ErrorKind::AddrInUse => " (another process listens there; stop it or change http.addr)",
        io::ErrorKind::PermissionDenied => " (ports below 1024 need root or CAP_NET_BIND_SERVICE)",
        io::ErrorKind::AddrNotAvailable => " (no interface has this address)",
        _ => "",
    };
    Err(Error::with_source(
        Kind::Io,
        format!("cannot listen on {addr}{hint}"),
        e,
    ))
}

// Remove private socket directories left by daemons that died.
fn clean_stale_dirs(base: &Path) {
    let Ok(rd) = std::fs::read_dir(base) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix("berth-http-") else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<i32>().ok()) else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// Bind a unix socket the way dockerd does: refuse when a live daemon answers
/// there, replace only a stale socket, and leave it 0660 (group `docker` when
/// that group exists).
pub fn bind_unix(p: &Path) -> Result<UnixListener> {
    use std::os::unix::fs::FileTypeExt;
    if let Ok(m) = std::fs::symlink_metadata(p) {
        if !m.file_type().is_socket() {
            return Err(Error::new(
                Kind::Conflict,
                format!(
                    "{} exists and is not a socket; remove it or choose another path",
                    p.display()
                ),
            ));
        }
        if std::os::unix::net::UnixStream::connect(p).is_ok() {
            return Err(Error::new(
                Kind::Conflict,
                format!(
                    "another daemon is listening on {}; stop it first",
                    p.display()
                ),
            ));
        }
        std::fs::remove_file(p).with_context(|| format!("remove stale socket {}", p.display()))?;
    }
    if let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    }
    let l = UnixListener::bind(p).with_context(|| format!("cannot listen on {}", p.display()))?;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o660))
        .with_context(|| format!("chmod {}", p.display()))?;
    if let Ok(Some(g)) = nix::unistd::Group::from_name("docker")
        && let Err(e) = nix::unistd::chown(p, None, Some(g.gid))
    {
        log::warn!("{}: cannot give it to group docker: {e}", p.display());
    }
    Ok(l)
}

/// tiny_http on a unix socket in a fresh private (0700) directory, which only
/// the front reaches: (server, directory, socket).
fn private_backend() -> Result<(tiny_http::Server, PathBuf, PathBuf)> {
    let base = std::env::temp_dir();
    clean_stale_dirs(&base);
    let dir = base.join(format!(
        "berth-http-{}-{}",
        std::process::id(),
        &crate::util::uuid4()[..8]
    ));
    std::fs::create_dir(&dir).with_context(|| format!("create {}", dir.display()))?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
    let sock = dir.join("http.sock");
    let l = UnixListener::bind(&sock).with_context(|| format!("listen on {}", sock.display()))?;
    let http = tiny_http::Server::from_listener(l, None)
        .map_err(|e| Error::new(Kind::Io, format!("{}: {e}", sock.display())))?;
    Ok((http, dir, sock))
}

/// The workers: some kept ready, more started on demand up to `max`.
struct Pool {
    http: Arc<tiny_http::Server>,
    handler: Arc<dyn Handler>,
    headers: Arc<Vec<tiny_http::Header>>,
    secure: bool,
    behind_front: bool,
    auth_required: bool,
    access_log: bool,
    min: usize,
    max: usize,
    total: std::sync::atomic::AtomicUsize,
    idle: std::sync::atomic::AtomicUsize,
}

impl Pool {
    fn spawn(self: &Arc<Pool>) -> io::Result<std::thread::JoinHandle<()>> {
        use std::sync::atomic::Ordering::SeqCst;
        self.total.fetch_add(1, SeqCst);
        self.idle.fetch_add(1, SeqCst);
        let pool = self.clone();
        let n = self.total.load(SeqCst);
        let spawned = std::thread::Builder::new()
            .name(format!("http-{n}"))
            .stack_size(512 * 1024)
            .spawn(move || pool.work());
        if spawned.is_err() {
            self.total.fetch_sub(1, SeqCst);
            self.idle.fetch_sub(1, SeqCst);
        }
        spawned
    }

    fn work(self: Arc<Pool>) {
        use std::sync::atomic::Ordering::SeqCst;
        loop {
            let rq = match self.http.recv_timeout(std::time::Duration::from_secs(30)) {
                Ok(Some(rq)) => rq,
                Ok(None) => {
                    // Idle: extra workers leave, the ready ones stay.
                    let total = self.total.load(SeqCst);
                    if total > self.min
                        && self
                            .total
                            .compare_exchange(total, total - 1, SeqCst, SeqCst)
                            .is_ok()
                    {
                        self.idle.fetch_sub(1, SeqCst);
                        return;
                    }
                    continue;
                }
                Err(_) => {
                    self.total.fetch_sub(1, SeqCst);
                    self.idle.fetch_sub(1, SeqCst);
                    return;
                }
            };
            if self.idle.fetch_sub(1, SeqCst) == 1
                && self.total.load(SeqCst) < self.max
                && let Err(e) = self.spawn()
            {
                log::error!("cannot start another worker: {e}");
            }
            serve_one(rq, &self);
            self.idle.fetch_add(1, SeqCst);
        }
    }
}

impl Server {
    /// Bind, start the workers, and return; requests are served until the process ends.
    pub fn start(opts: ServerOptions, handler: Arc<dyn Handler>) -> Result<Server> {
        let (http, addr, private_dir, behind_front) = match &opts.listen {
            Listen::Unix(p) => {
                let l = bind_unix(p)?;
                let (http, dir, sock) = private_backend()?;
                front::spawn_unix(l, sock, opts.limits)
                    .map_err(|e| Error::with_source(Kind::Io, "start listener", e))?;
                (http, None, Some(dir), true)
            }
            Listen::Tcp(a) => {
                let tcp = bind_tcp(a)?;
                let addr = tcp.local_addr()?;
                let (http, dir, sock) = private_backend()?;
                front::spawn(tcp, opts.tls.clone(), sock, opts.limits)
                    .map_err(|e| Error::with_source(Kind::Io, "start listener", e))?;
                (http, Some(addr), Some(dir), true)
            }
        };
        let headers: Arc<Vec<tiny_http::Header>> = Arc::new(
            opts.headers
                .iter()
                .filter_map(|(k, v)| tiny_http::Header::from_bytes(k.as_bytes(), v.as_bytes()).ok())
                .chain(
                    tiny_http::Header::from_bytes(
                        &b"Server"[..],
                        format!("berth/{}", env!("CARGO_PKG_VERSION")).as_bytes(),
                    )
                    .ok(),
                )
                .collect(),
        );
        let min = opts.workers.max(1);
        let pool = Arc::new(Pool {
            http: Arc::new(http),
            handler,
            headers,
            secure: opts.tls.is_some(),
            behind_front,
            auth_required: opts.auth_required,
            access_log: opts.access_log,
            min,
            // Each connection has at most one request in a worker at a time.
            max: min.max(opts.limits.max_connections + 1),
            total: Default::default(),
            idle: Default::default(),
        });
        let mut workers = Vec::new();
        for _ in 0..min {
            workers.push(
                pool.spawn()
                    .map_err(|e| Error::with_source(Kind::Io, "start worker", e))?,
            );
        }
        Ok(Server {
            addr,
            workers,
            private_dir,
        })
    }

    /// The TCP address bound (with the real port when 0 was asked).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.addr
    }

    /// Block until the workers stop (they do not, short of process exit).
    pub fn wait(mut self) {
        for w in std::mem::take(&mut self.workers) {
            let _ = w.join();
        }
        // Extra workers come and go; the first ones never return.
        loop {
            std::thread::park();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(d) = &self.private_dir {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_default()
}

fn serve_one(rq: tiny_http::Request, pool: &Pool) {
    let started = Instant::now();
    let url = rq.url().to_string();
    let (path, query) = match url.split_once('?') {
        Some((p, q)) => (p.to_string(), super::parse_query(q)),
        None => (url.clone(), Vec::new()),
    };
    let behind_front = pool.behind_front;
    let find = |name: &'static str| {
        rq.headers()
            .iter()
            .find(|h| h.field.equiv(name))
            .map(|h| h.value.as_str().to_string())
    };
    let (peer, conn) = if behind_front {
        (
            find(front::PEER_HEADER).unwrap_or_else(|| "-".into()),
            find(front::CONN_HEADER).and_then(|c| c.parse::<u64>().ok()),
        )
    } else {
        (
            rq.remote_addr()
                .map(|a| a.to_string())
                .unwrap_or_else(|| "unix".into()),
            None,
        )
    };
    let upgrade = find("Connection").is_some_and(|v| {
        v.split(',')
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
    });
    let method = rq.method().as_str().to_ascii_uppercase();
    let mut req = Request {
        rq,
        method,
        path,
        query,
        peer,
        user: None,
        secure: pool.secure,
        behind_front,
        upgrade,
        body_done: false,
        body_read: 0,
    };
    let handler = &*pool.handler;
    let mut resp =
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| handler.handle(&mut req))) {
            Ok(r) => r,
            Err(p) => {
                log::error!(
                    "handler panicked on {} {}: {}",
                    req.method,
                    req.path,
                    panic_text(&*p)
                );
                handler.on_panic()
            }
        };
    let refused = matches!(resp.status, 401 | 403 | 429);
    if let Some(c) = conn
        && !refused
        && (req.user.is_some() || !pool.auth_required)
    {
        front::mark_authenticated(c);
    }
    let hijack = req.upgrade && matches!(resp.body, Body::Upgrade(_));
    // tiny_http drops a handler's Connection header; these responses are written
    // by hand when the connection closes after them.
    let mut close = false;
    if !hijack {
        if let Body::Upgrade(_) = resp.body {
            // Asked to upgrade a request that did not ask for it.
            resp = handler.on_panic();
        }
        if req.upgrade {
            // The rest of this connection would be the handler's; none took it.
            // tiny_http reads no request after this one, so stop the front too.
            if let Some(c) = conn {
                front::stop_reading(c);
            }
            close = true;
        } else {
            if req.body_pending(conn)
                && let Some(c) = conn
            {
                // Never wait for a body the handler did not read: whoever
                // sent it (unauthenticated, perhaps) could keep this worker
                // forever. Stop the front; what it passed already is read
                // below, then the connection closes.
                front::stop_reading(c);
                close = true;
            }
            // tiny_http finds the next request where this body ends.
            if let Err(e) = io::copy(&mut req.body(), &mut io::sink()) {
                log::debug!(
                    "{} {} {}: request body ended early: {e}",
                    req.peer,
                    req.method,
                    req.path
                );
            }
        }
    }
    let status = resp.status;
    let len = resp.len();
    let is_head = req.method == "HEAD";
    let Request {
        rq,
        method,
        peer,
        user,
        ..
    } = req;
    let mut headers: Vec<tiny_http::Header> = pool.headers.to_vec();
    for (k, v) in &resp.headers {
        if let Ok(h) = tiny_http::Header::from_bytes(k.as_bytes(), v.as_bytes()) {
            headers.push(h);
        }
    }
    let access_log = pool.access_log;
    let log_line = move |status: u16, sent: u64, res: &io::Result<()>| {
        if access_log {
            access(
                &peer,
                user.as_deref(),
                &method,
                &url,
                status,
                if res.is_err() { 0 } else { sent },
                started.elapsed(),
            );
        }
        if let Err(e) = res {
            log::debug!("{peer} {method} {url}: response not delivered: {e}");
        }
    };
    // Streams that may last run on their own thread: a slow or endless reader
    // must not hold a worker.
    let off_pool = |name: &str, f: Box<dyn FnOnce() + Send>| {
        if let Err(e) = std::thread::Builder::new()
            .name(name.into())
            .stack_size(256 * 1024)
            .spawn(f)
        {
            log::error!("cannot start a {name} thread: {e}");
        }
    };
    match resp.body {
        Body::Upgrade(f) if hijack => {
            // Output goes through the request's own writer (in order with what
            // the connection carried before); input comes from the front.
            let reader = conn.and_then(front::take_raw);
            let mut writer = rq.into_writer();
            let mut head =
                "HTTP/1.1 101 UPGRADED\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n".to_string();
            for h in &headers {
                if !h.field.equiv("Connection") && !h.field.equiv("Upgrade") {
                    head.push_str(&format!("{}: {}\r\n", h.field, h.value));
                }
            }
            head.push_str("\r\n");
            use std::io::Write;
            let res = writer
                .write_all(head.as_bytes())
                .and_then(|_| writer.flush());
            log_line(101, 0, &res);
            if res.is_ok() {
                let up = Upgraded {
                    reader: reader.unwrap_or_else(|| Box::new(io::empty())),
                    writer,
                };
                off_pool("http-upgraded", Box::new(move || f(up)));
            }
        }
        Body::Chunked(r) if !is_head => {
            off_pool(
                "http-stream",
                Box::new(move || {
                    let res = stream_chunked(rq, status, &headers, r);
                    log_line(status, res.as_ref().copied().unwrap_or(0), &res.map(|_| ()));
                }),
            );
        }
        // Large streams bypass tiny_http's body copy, which moves 8 KiB per syscall.
        Body::Reader(r, n) if n >= STREAM_DIRECT && !is_head => {
            off_pool(
                "http-stream",
                Box::new(move || {
                    let res = stream_direct(rq, status, &headers, r, n, close, conn);
                    log_line(status, n, &res);
                }),
            );
        }
        body if close => {
            let (reader, n): (Box<dyn Read + Send>, u64) = match body {
                Body::Bytes(b) => (Box::new(io::Cursor::new(b)), len),
                Body::Reader(r, n) => (r, n),
                Body::Empty | Body::Chunked(_) | Body::Upgrade(_) => (Box::new(io::empty()), 0),
            };
            let (reader, n) = if is_head {
                (Box::new(io::empty()) as Box<dyn Read + Send>, 0)
            } else {
                (reader, n)
            };
            let res = stream_direct(rq, status, &headers, reader, n, true, None);
            log_line(status, n, &res);
        }
        body => {
            let (reader, n): (Box<dyn Read + Send>, u64) = match body {
                Body::Bytes(b) => (Box::new(io::Cursor::new(b)), len),
                Body::Reader(r, n) => (r, n),
                Body::Empty | Body::Chunked(_) | Body::Upgrade(_) => (Box::new(io::empty()), 0),
            };
            let response = tiny_http::Response::new(
                tiny_http::StatusCode(status),
                headers,
                reader,
                Some(n as usize),
                None,
            )
            // Content-Length, never chunked: registry clients check blob sizes against it.
            .with_chunked_threshold(usize::MAX);
            let res = rq.respond(response);
            log_line(status, if is_head { 0 } else { len }, &res);
        }
    }
}

/// Send a body of unknown length: chunked on HTTP/1.1, each piece flushed as
/// soon as it is read; returns the bytes sent.
fn stream_chunked(
    rq: tiny_http::Request,
    status: u16,
    headers: &[tiny_http::Header],
    mut body: Box<dyn Read + Send>,
) -> io::Result<u64> {
    use std::io::Write;
    let chunked = *rq.http_version() >= tiny_http::HTTPVersion(1, 1);
    let mut head = format!(
        "HTTP/1.1 {status} {}\r\nDate: {}\r\n",
        tiny_http::StatusCode(status).default_reason_phrase(),
        crate::util::http_date(crate::util::now_unix())
    );
    for h in headers {
        if !h.field.equiv("Content-Length") && !h.field.equiv("Transfer-Encoding") {
            head.push_str(&format!("{}: {}\r\n", h.field, h.value));
        }
    }
    head.push_str(if chunked {
        "Transfer-Encoding: chunked\r\n\r\n"
    } else {
        "Connection: close\r\n\r\n"
    });
    let mut w = rq.into_writer();
    w.write_all(head.as_bytes())?;
    w.flush()?;
    let mut buf = vec![0u8; 64 * 1024];
    let mut sent = 0u64;
    loop {
        let n = match body.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if n == 0 {
            break;
        }
        if chunked {
            w.write_all(format!("{n:x}\r\n").as_bytes())?;
            w.write_all(&buf[..n])?;
            w.write_all(b"\r\n")?;
        } else {
            w.write_all(&buf[..n])?;
        }
        w.flush()?;
        sent += n as u64;
    }
    if chunked {
        w.write_all(b"0\r\n\r\n")?;
    }
    w.flush()?;
    Ok(sent)
}

/// Bodies at least this long are streamed by [`stream_direct`].
const STREAM_DIRECT: u64 = 256 * 1024;

/// Write the response head ourselves and send the body: handed to the front
/// when the connection is the front's (the bytes go from the reader to the
/// client without crossing the relay), else copied in 128 KiB pieces.
fn stream_direct(
    rq: tiny_http::Request,
    status: u16,
    headers: &[tiny_http::Header],
    body: Box<dyn Read + Send>,
    len: u64,
    close: bool,
    conn: Option<u64>,
) -> io::Result<()> {
    use std::io::Write;
    let mut head = format!(
        "HTTP/1.1 {status} {}\r\nDate: {}\r\n",
        tiny_http::StatusCode(status).default_reason_phrase(),
        crate::util::http_date(crate::util::now_unix())
    );
    for h in headers {
        if !h.field.equiv("Content-Length") {
            head.push_str(&format!("{}: {}\r\n", h.field, h.value));
        }
    }
    if close {
        head.push_str("Connection: close\r\n");
    }
    let (handed, mut body) = match conn.filter(|_| len > 0) {
        Some(id) => {
            let token = crate::util::uuid4();
            match front::hand_body(id, &token, body, len) {
                Ok(rx) => {
                    head.push_str(&format!("{}: {token}\r\n", front::DIRECT_HEADER));
                    (Some(rx), Box::new(io::empty()) as Box<dyn Read + Send>)
                }
                Err(body) => (None, body),
            }
        }
        None => (None, body),
    };
    head.push_str(&format!("Content-Length: {len}\r\n\r\n"));
    let mut w = rq.into_writer();
    w.write_all(head.as_bytes())?;
    if let Some(rx) = handed {
        w.flush()?;
        // The front sends the body; nothing more is written here until it did.
        return rx.recv().unwrap_or_else(|_| {
            Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the connection closed before the body went out",
            ))
        });
    }
    let mut buf = vec![0u8; 128 * 1024];
    let mut left = len;
    while left > 0 {
        let want = buf.len().min(left as usize);
        let n = body.read(&mut buf[..want])?;
        if n == 0 {
            // The content ended early: the client sees a short body and drops it.
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("body ended {left} bytes early"),
            ));
        }
        w.write_all(&buf[..n])?;
        left -= n as u64;
    }
    w.flush()
}

/// One access-log line (text or JSON, per the logger's format).
fn access(
    peer: &str,
    user: Option<&str>,
    method: &str,
    url: &str,
    status: u16,
    bytes: u64,
    took: std::time::Duration,
) {
    let ms = took.as_secs_f64() * 1000.0;
    if crate::log::json() {
        log::info!(target: "access", "{}", serde_json::json!({
            "remote": peer, "user": user.unwrap_or("-"), "method": method, "path": url,
            "status": status, "bytes": bytes, "duration_ms": (ms * 1000.0).round() / 1000.0,
        }));
    } else {
        log::info!(target: "access", "{peer} {} \"{method} {url}\" {status} {bytes} {ms:.3}ms", user.unwrap_or("-"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    /// Panics on `/boom`; its own error shape, as engined's differs from the
    /// registry's.
    struct Boom;
    impl Handler for Boom {
        fn handle(&self, req: &mut Request) -> Response {
            if req.path == "/boom" {
                panic!("a handler's bug");
            }
            Response::new(200).json(&serde_json::json!({"ok": true}))
        }
        fn on_panic(&self) -> Response {
            Response::new(500).json(&serde_json::json!({"message": "internal error"}))
        }
    }

    fn get(sock: &Path, path: &str) -> String {
        let mut s = std::os::unix::net::UnixStream::connect(sock).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    }

    #[test]
    fn a_handler_panic_answers_in_the_handlers_error_shape_and_serving_goes_on() {
        let dir = std::env::temp_dir().join(format!("berth-panic-{}", crate::util::uuid4()));
        std::fs::create_dir(&dir).unwrap();
        let sock = dir.join("api.sock");
        let opts = ServerOptions {
            listen: Listen::Unix(sock.clone()),
            tls: None,
            limits: front::Limits::default(),
            workers: 1,
            auth_required: false,
            access_log: false,
            headers: Vec::new(),
        };
        let _server = Server::start(opts, Arc::new(Boom)).unwrap();
        let out = get(&sock, "/boom");
        assert!(out.starts_with("HTTP/1.1 500"), "{out}");
        assert!(out.ends_with(r#"{"message":"internal error"}"#), "{out}");
        // the one worker survived its handler's panic
        for _ in 0..3 {
            let out = get(&sock, "/fine");
            assert!(
                out.starts_with("HTTP/1.1 200") && out.ends_with(r#"{"ok":true}"#),
                "{out}"
            );
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}

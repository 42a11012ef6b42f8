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
    pub workers: usize,
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
        self.rq.body_length().map(|l| l as u64)
    }
    /// The request body (sends `100 Continue` if the client waits for it).
    pub fn body(&mut self) -> &mut dyn Read {
        self.rq.as_reader()
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
}

/// A response body.
pub enum Body {
    Empty,
    Bytes(Vec<u8>),
    /// A stream of exactly this many bytes.
    Reader(Box<dyn Read + Send>, u64),
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
    pub fn len(&self) -> u64 {
        match &self.body {
            Body::Empty => 0,
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

impl Server {
    /// Bind, start the workers, and return; requests are served until the process ends.
    pub fn start(opts: ServerOptions, handler: Arc<dyn Handler>) -> Result<Server> {
        let (http, addr, private_dir, behind_front) = match &opts.listen {
            Listen::Unix(p) => {
                let _ = std::fs::remove_file(p);
                let l = UnixListener::bind(p)
                    .with_context(|| format!("cannot listen on {}", p.display()))?;
                let http = tiny_http::Server::from_listener(l, None)
                    .map_err(|e| Error::new(Kind::Io, format!("{}: {e}", p.display())))?;
                (http, None, None, false)
            }
            Listen::Tcp(a) => {
                let tcp = bind_tcp(a)?;
                let addr = tcp.local_addr()?;
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
                let l = UnixListener::bind(&sock)
                    .with_context(|| format!("listen on {}", sock.display()))?;
                let http = tiny_http::Server::from_listener(l, None)
                    .map_err(|e| Error::new(Kind::Io, format!("{}: {e}", sock.display())))?;
                front::spawn(tcp, opts.tls.clone(), sock, opts.limits)
                    .map_err(|e| Error::with_source(Kind::Io, "start listener", e))?;
                (http, Some(addr), Some(dir), true)
            }
        };
        let http = Arc::new(http);
        let secure = opts.tls.is_some();
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
        let mut workers = Vec::new();
        for i in 0..opts.workers.max(1) {
            let (http, handler, headers) = (http.clone(), handler.clone(), headers.clone());
            let access_log = opts.access_log;
            workers.push(
                std::thread::Builder::new()
                    .name(format!("http-{i}"))
                    .stack_size(512 * 1024)
                    .spawn(move || {
                        while let Ok(rq) = http.recv() {
                            serve_one(rq, &*handler, &headers, secure, behind_front, access_log);
                        }
                    })
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
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(d) = &self.private_dir {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

fn serve_one(
    rq: tiny_http::Request,
    handler: &dyn Handler,
    extra: &[tiny_http::Header],
    secure: bool,
    behind_front: bool,
    access_log: bool,
) {
    let started = Instant::now();
    let url = rq.url().to_string();
    let (path, query) = match url.split_once('?') {
        Some((p, q)) => (p.to_string(), super::parse_query(q)),
        None => (url.clone(), Vec::new()),
    };
    let peer = if behind_front {
        rq.headers()
            .iter()
            .find(|h| h.field.equiv(front::PEER_HEADER))
            .map(|h| h.value.as_str().to_string())
            .unwrap_or_else(|| "-".into())
    } else {
        rq.remote_addr()
            .map(|a| a.to_string())
            .unwrap_or_else(|| "unix".into())
    };
    let method = rq.method().as_str().to_ascii_uppercase();
    let mut req = Request {
        rq,
        method,
        path,
        query,
        peer,
        user: None,
        secure,
        behind_front,
    };
    let resp =
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| handler.handle(&mut req))) {
            Ok(r) => r,
            Err(p) => {
                let what = p
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| p.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                log::error!("handler panicked on {} {}: {what}", req.method, req.path);
                Response::new(500).json(
                &serde_json::json!({"errors": [{"code": "UNKNOWN", "message": "internal error"}]}),
            )
            }
        };
    // Read what the handler left of the body before answering: tiny_http starts the
    // next request where this body ends, and must not take the rest of it for one.
    if let Err(e) = io::copy(req.body(), &mut io::sink()) {
        log::debug!(
            "{} {} {}: request body ended early: {e}",
            req.peer,
            req.method,
            req.path
        );
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
    let mut headers: Vec<tiny_http::Header> = extra.to_vec();
    for (k, v) in &resp.headers {
        if let Ok(h) = tiny_http::Header::from_bytes(k.as_bytes(), v.as_bytes()) {
            headers.push(h);
        }
    }
    let res = match resp.body {
        // Large streams bypass tiny_http's body copy, which moves 8 KiB per syscall.
        Body::Reader(r, n) if n >= STREAM_DIRECT && !is_head => {
            stream_direct(rq, status, &headers, r, n)
        }
        body => {
            let (reader, n): (Box<dyn Read + Send>, u64) = match body {
                Body::Empty => (Box::new(io::empty()), 0),
                Body::Bytes(b) => (Box::new(io::Cursor::new(b)), len),
                Body::Reader(r, n) => (r, n),
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
            rq.respond(response)
        }
    };
    if access_log {
        let sent = if is_head || res.is_err() { 0 } else { len };
        access(
            &peer,
            user.as_deref(),
            &method,
            &url,
            status,
            sent,
            started.elapsed(),
        );
    }
    if let Err(e) = res {
        log::debug!("{peer} {method} {url}: response not delivered: {e}");
    }
}

/// Bodies at least this long are streamed by [`stream_direct`].
const STREAM_DIRECT: u64 = 256 * 1024;

/// Write the response head ourselves and copy the body in 256 KiB pieces.
fn stream_direct(
    rq: tiny_http::Request,
    status: u16,
    headers: &[tiny_http::Header],
    mut body: Box<dyn Read + Send>,
    len: u64,
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
    head.push_str(&format!("Content-Length: {len}\r\n\r\n"));
    let mut w = rq.into_writer();
    w.write_all(head.as_bytes())?;
    let mut buf = vec![0u8; 256 * 1024];
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

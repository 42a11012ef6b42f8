//! RFC 5424 messages, and the senders that take them from the spool to each
//! syslog sink over TCP or TLS (RFC 6587 octet counting, RFC 5425 for TLS).
//!
//! Plain syslog over TCP has no acknowledgement, so "sent" is decided with the
//! kernel's help: a batch counts as delivered once the socket's unacknowledged
//! bytes (SIOCOUTQ) reach zero — the peer's TCP stack has it; if they never
//! do, the batch is sent again. The position is saved as soon as the batch is
//! in the kernel (a killed process's socket still sends what it holds), and
//! taken back if the peer does not acknowledge. Before writing on a connection that sat idle the sender
//! checks whether the peer has closed it (a syslog server never writes, so
//! anything readable is an EOF): the first write after a server restart would
//! otherwise vanish into a dead connection.

use super::config::Sink;
use super::spool::{self, Pos};
use berth::error::{Error, Kind, Result};
use std::io::Write;
use std::net::{TcpStream, ToSocketAddrs};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// What one line carries besides its text.
pub struct Meta<'a> {
    pub time: std::time::SystemTime,
    pub name: &'a str,
    pub id: &'a str,
    pub image: &'a str,
    /// stdout, stderr or file.
    pub stream: &'a str,
    /// The file inside the log directory, for stream "file".
    pub file: &'a str,
    /// This is a piece of a longer line (more follows).
    pub cont: bool,
    /// A last line sent without its newline after a wait: more may follow.
    pub partial: bool,
}

fn sd_escape(s: &str, out: &mut String) {
    for c in s.chars() {
        if matches!(c, '"' | '\\' | ']') {
            out.push('\\');
        }
        out.push(c);
    }
}

/// `bytes` as UTF-8 with every invalid byte written `\xNN` (the local copy
/// keeps the bytes themselves).
pub fn escape_invalid(bytes: &[u8], out: &mut String) {
    let mut rest = bytes;
    loop {
        match std::str::from_utf8(rest) {
            Ok(s) => {
                out.push_str(s);
                return;
            }
            Err(e) => {
                let (ok, bad) = rest.split_at(e.valid_up_to());
                out.push_str(std::str::from_utf8(ok).unwrap_or_default());
                let n = e.error_len().unwrap_or(bad.len());
                for b in &bad[..n] {
                    out.push_str(&format!("\\x{b:02X}"));
                }
                rest = &bad[n..];
            }
        }
    }
}

/// One octet-counted RFC 5424 frame, appended to `out`.
pub fn frame(out: &mut Vec<u8>, facility: u8, hostname: &str, app: &str, m: &Meta, line: &[u8]) {
    let severity = if m.stream == "stderr" { 3 } else { 6 };
    let mut msg = String::with_capacity(line.len() + 200);
    msg.push_str(&format!(
        "<{}>1 {} {} {} - {} [berth@32473 name=\"",
        facility as u32 * 8 + severity,
        berth::util::rfc3339_micros(m.time),
        hostname,
        app,
        m.stream,
    ));
    sd_escape(m.name, &mut msg);
    msg.push_str("\" id=\"");
    sd_escape(m.id, &mut msg);
    msg.push_str("\" image=\"");
    sd_escape(m.image, &mut msg);
    msg.push_str("\" stream=\"");
    msg.push_str(m.stream);
    if !m.file.is_empty() {
        msg.push_str("\" file=\"");
        sd_escape(m.file, &mut msg);
    }
    if m.partial {
        msg.push_str("\" split=\"partial");
    } else if m.cont {
        msg.push_str("\" split=\"continues");
    }
    msg.push_str("\"] ");
    let text = line.strip_suffix(b"\n").unwrap_or(line);
    escape_invalid(text, &mut msg);
    out.extend_from_slice(format!("{} ", msg.len()).as_bytes());
    out.extend_from_slice(msg.as_bytes());
}

/// Wakes the senders when the collector spooled something.
#[derive(Default)]
pub struct Bell {
    m: Mutex<u64>,
    cv: Condvar,
}

impl Bell {
    pub fn ring(&self) {
        *self.m.lock().unwrap() += 1;
        self.cv.notify_all();
    }
    /// Wait for a ring after `seen` (at most `limit`); the count now.
    pub fn wait_for(&self, seen: u64, limit: Duration) -> u64 {
        let g = self.m.lock().unwrap();
        let (g, _) = self
            .cv
            .wait_timeout_while(g, limit, |n| *n == seen)
            .unwrap();
        *g
    }
    fn now(&self) -> u64 {
        *self.m.lock().unwrap()
    }
}

enum Conn {
    Tcp(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Conn {
    fn tcp(&self) -> &TcpStream {
        match self {
            Conn::Tcp(s) => s,
            Conn::Tls(s) => s.get_ref(),
        }
    }
    fn write_all(&mut self, b: &[u8]) -> std::io::Result<()> {
        match self {
            Conn::Tcp(s) => s.write_all(b),
            Conn::Tls(s) => {
                s.write_all(b)?;
                s.flush()
            }
        }
    }
    /// The peer closed (or reset) the connection: anything to read means so.
    fn peer_gone(&self) -> bool {
        let fd = self.tcp().as_raw_fd();
        let mut p = libc::pollfd {
            fd,
            events: libc::POLLIN | libc::POLLRDHUP,
            revents: 0,
        };
        // SAFETY: one pollfd on a descriptor we own, no timeout.
        let n = unsafe { libc::poll(&mut p, 1, 0) };
        n > 0 && p.revents != 0
    }
    /// Room in the send buffer (half of SO_SNDBUF, as the kernel counts its
    /// overhead in it, less what is queued).
    fn free_space(&self) -> usize {
        let mut buf: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: getsockopt writes one int into `buf`.
        let r = unsafe {
            libc::getsockopt(
                self.tcp().as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_SNDBUF,
                &mut buf as *mut libc::c_int as *mut libc::c_void,
                &mut len,
            )
        };
        if r < 0 {
            return 16 << 10;
        }
        let queued = self.unacked().max(0) as usize;
        (buf as usize / 2).saturating_sub(queued)
    }

    /// Bytes written but not yet acknowledged by the peer's TCP.
    fn unacked(&self) -> i32 {
        let mut n: libc::c_int = 0;
        // SAFETY: SIOCOUTQ (TIOCOUTQ) writes one int.
        let r = unsafe { libc::ioctl(self.tcp().as_raw_fd(), libc::TIOCOUTQ, &mut n) };
        if r < 0 { -1 } else { n }
    }
}

fn connect(s: &Sink, tls: Option<&Arc<rustls::ClientConfig>>) -> Result<Conn> {
    let addrs: Vec<_> = (s.host.as_str(), s.port)
        .to_socket_addrs()
        .map_err(|e| Error::new(Kind::Network, format!("resolve {}: {e}", s.host)))?
        .collect();
    let mut last = None;
    for a in addrs {
        match TcpStream::connect_timeout(&a, Duration::from_secs(5)) {
            Ok(t) => {
                let _ = t.set_nodelay(true);
                let _ = t.set_write_timeout(Some(Duration::from_secs(30)));
                let Some(cfg) = tls else {
                    return Ok(Conn::Tcp(t));
                };
                let name = rustls::pki_types::ServerName::try_from(s.host.clone())
                    .map_err(|e| Error::config(format!("{}: {e}", s.url)))?;
                let c = rustls::ClientConnection::new(cfg.clone(), name)
                    .map_err(|e| Error::with_source(Kind::Tls, "TLS", e))?;
                let mut st = rustls::StreamOwned::new(c, t);
                // finish the handshake now, so a refusal is told as such
                let _ = st.sock.set_read_timeout(Some(Duration::from_secs(10)));
                while st.conn.is_handshaking() {
                    st.conn
                        .complete_io(&mut st.sock)
                        .map_err(|e| Error::new(Kind::Tls, format!("TLS with {}: {e}", s.url)))?;
                }
                return Ok(Conn::Tls(Box::new(st)));
            }
            Err(e) => last = Some(e),
        }
    }
    Err(Error::new(
        Kind::Network,
        format!(
            "connect {}: {}",
            s.url,
            last.map(|e| e.to_string())
                .unwrap_or_else(|| "no address".into())
        ),
    ))
}

/// One sink's sender, forever: spool → sink, position saved after each
/// acknowledged batch.
pub fn run(
    sink: Sink,
    spool_dir: PathBuf,
    pos_file: PathBuf,
    bell: Arc<Bell>,
    committed: Arc<Mutex<Pos>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
) {
    use std::sync::atomic::Ordering;
    let tls = if sink.tls {
        let client = match (&sink.cert, &sink.key) {
            (Some(c), Some(k)) => Some((c.as_path(), k.as_path())),
            _ => None,
        };
        match berth::tls::client_config(sink.ca.as_deref(), client) {
            Ok(c) => Some(c),
            Err(e) => {
                log::error!("sink {}: {e}; its lines stay in the spool", sink.url);
                None
            }
        }
    } else {
        None
    };
    if sink.tls && tls.is_none() {
        return;
    }
    let pf = match spool::PosFile::open(&pos_file) {
        Ok(p) => p,
        Err(e) => {
            log::error!("sink {}: {e}; its lines stay in the spool", sink.url);
            return;
        }
    };
    let mut pos = pf.load().unwrap_or_else(|| Pos {
        seq: spool::segments(&spool_dir).first().copied().unwrap_or(1),
        offset: 0,
    });
    let mut conn: Option<Conn> = None;
    let mut down_since: Option<Instant> = None;
    let mut backoff = Duration::from_millis(100);
    let mut seen = bell.now();
    while !stop.load(Ordering::Relaxed) {
        let end = *committed.lock().unwrap();
        let (batch, next) = match spool::read_from(&spool_dir, pos, 128 << 10, end) {
            Ok(x) => x,
            Err(e) => {
                log::warn!("sink {}: spool: {e}", sink.url);
                (Vec::new(), pos)
            }
        };
        if batch.is_empty() {
            if next != pos {
                pos = next;
                pf.store(pos);
            }
            seen = bell.wait_for(seen, Duration::from_millis(500));
            continue;
        }
        if conn.as_ref().is_some_and(|c| c.peer_gone()) {
            log::info!(
                "sink {}: the server closed the connection; reconnecting",
                sink.url
            );
            conn = None;
        }
        if conn.is_none() {
            match connect(&sink, tls.as_ref()) {
                Ok(c) => {
                    if let Some(t) = down_since.take() {
                        log::info!(
                            "sink {}: back after {:.1} s; sending what was spooled",
                            sink.url,
                            t.elapsed().as_secs_f64()
                        );
                    }
                    backoff = Duration::from_millis(100);
                    conn = Some(c);
                }
                Err(e) => {
                    if down_since.is_none() {
                        log::warn!("sink {}: {e}; spooling until it is back", sink.url);
                        down_since = Some(Instant::now());
                    }
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                    continue;
                }
            }
        }
        let c = conn.as_mut().expect("connected");
        // Whole frames, only as many as the send buffer takes without
        // blocking, the position stored before each write: what sits in the
        // kernel's buffer still goes out if this process is killed (close
        // sends it before its FIN), so a restart resends nothing twice, and no
        // frame is ever cut by a kill in the middle of a long write. If the
        // peer then does not acknowledge (it went away), the position goes
        // back to what it acknowledged.
        let start = next.offset - batch.len() as u64;
        let frames = spool::frames(&batch);
        let mut i = 0;
        let mut failed = None;
        while i < frames.len() {
            let free = c.free_space();
            let mut j = i;
            while j < frames.len() && frames[j].1 - frames[i].0 <= free {
                j += 1;
            }
            if j == i {
                if c.unacked() == 0 {
                    j = i + 1; // one frame larger than the whole buffer
                } else if c.peer_gone() {
                    failed = Some("the server closed the connection".to_string());
                    break;
                } else {
                    std::thread::sleep(Duration::from_millis(1));
                    continue;
                }
            }
            // Stored first: the write below has room in the buffer, so it
            // completes even if a kill arrives during it (see PosFile).
            pf.store(Pos {
                seq: next.seq,
                offset: start + frames[j - 1].1 as u64,
            });
            if let Err(e) = c.write_all(&batch[frames[i].0..frames[j - 1].1]) {
                failed = Some(e.to_string());
                break;
            }
            i = j;
        }
        if let Some(e) = failed {
            log::warn!(
                "sink {}: {e}; resending from the last acknowledged line",
                sink.url
            );
            pf.store(pos);
            conn = None;
            down_since.get_or_insert_with(Instant::now);
            continue;
        }
        // delivered once the peer's TCP has acknowledged every byte
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut acked = false;
        while Instant::now() < deadline {
            match c.unacked() {
                0 => {
                    acked = true;
                    break;
                }
                n if n < 0 => break,
                _ => std::thread::sleep(Duration::from_millis(1)),
            }
            if c.peer_gone() {
                break;
            }
        }
        if !acked {
            log::warn!(
                "sink {}: not acknowledged; resending from the last acknowledged line",
                sink.url
            );
            pf.store(pos);
            conn = None;
            continue;
        }
        pos = next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_rfc5424_octet_counted_with_escaped_bytes() {
        let m = Meta {
            time: std::time::UNIX_EPOCH + Duration::from_micros(1_500_000),
            name: "vn0317",
            id: "abc",
            image: "sl6:\"x\"]",
            stream: "stderr",
            file: "",
            cont: false,
            partial: false,
        };
        let mut out = Vec::new();
        frame(&mut out, 16, "wn024", "berth", &m, b"bad \xff byte\n");
        let s = String::from_utf8(out).unwrap();
        let (n, msg) = s.split_once(' ').unwrap();
        assert_eq!(n.parse::<usize>().unwrap(), msg.len());
        assert_eq!(
            msg,
            "<131>1 1970-01-01T00:00:01.500000Z wn024 berth - stderr [berth@32473 name=\"vn0317\" id=\"abc\" image=\"sl6:\\\"x\\\"\\]\" stream=\"stderr\"] bad \\xFF byte"
        );
    }
}

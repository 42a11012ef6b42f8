//! Published ports (`-p [IP:]HOST:CTR[/tcp|udp]`) as a userland proxy in the
//! shim: the host port is bound by the shim before the container starts (a port
//! in use is an error then, in Docker's words), and every connection (or UDP
//! peer) is relayed to the container's address. No iptables: a mapping on
//! 127.0.0.1 works, and the port is free again the moment the shim ends.
//!
//! Everything is non-blocking and driven by the shim's one poll loop.

use super::model::HostConfig;
use berth::error::{Error, Kind, Result};
use nix::poll::PollFlags;
use serde::{Deserialize, Serialize};
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

/// One published port as it is bound.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortMap {
    pub proto: String,
    pub container_port: u16,
    pub host_ip: String,
    pub host_port: u16,
}

/// The `-p` requests of a HostConfig: (proto, container port, host ip, host port; 0 = any).
pub fn requests(hc: &HostConfig) -> Result<Vec<(String, u16, String, u16)>> {
    let mut out = Vec::new();
    for (key, bindings) in hc.port_bindings.iter().flatten() {
        let (port, proto) = key.split_once('/').unwrap_or((key, "tcp"));
        let proto = proto.to_ascii_lowercase();
        if proto != "tcp" && proto != "udp" {
            return Err(Error::invalid(format!(
                "invalid port {key:?}: only tcp and udp can be published"
            )));
        }
        let cport: u16 = port
            .parse()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| Error::invalid(format!("invalid container port {key:?}")))?;
        for b in bindings.iter().flatten() {
            let hport: u16 = if b.host_port.is_empty() {
                0
            } else {
                b.host_port.parse().map_err(|_| {
                    Error::invalid(format!("invalid host port {:?} for {key}", b.host_port))
                })?
            };
            let ip = if b.host_ip.is_empty() {
                "0.0.0.0".to_string()
            } else {
                b.host_ip.clone()
            };
            ip.parse::<IpAddr>().map_err(|_| {
                Error::invalid(format!("invalid host IP {:?} for {key}", b.host_ip))
            })?;
            out.push((proto.clone(), cport, ip, hport));
        }
    }
    Ok(out)
}

struct Pair {
    client: TcpStream,
    upstream: TcpStream,
    /// client -> container, container -> client
    bufs: [Vec<u8>; 2],
    /// Each side's reading ended.
    eof: [bool; 2],
    dead: bool,
}

struct Udp {
    sock: UdpSocket,
    container_port: u16,
    /// Per peer: a socket connected to the container, and when it was used.
    peers: Vec<(SocketAddr, UdpSocket, Instant)>,
}

/// The proxies of one container.
#[derive(Default)]
pub struct Proxies {
    tcp: Vec<(TcpListener, u16)>,
    udp: Vec<Udp>,
    pairs: Vec<Pair>,
    published: Vec<PortMap>,
}

fn in_use(ip: &str, port: u16, e: std::io::Error) -> Error {
    if e.kind() == std::io::ErrorKind::AddrInUse {
        Error::new(
            Kind::Conflict,
            format!("Bind for {ip}:{port} failed: port is already allocated"),
        )
    } else {
        Error::from(e).context(format!("bind {ip}:{port}"))
    }
}

impl Proxies {
    /// Bind every published port of `hc`.
    pub fn bind(hc: &HostConfig) -> Result<Proxies> {
        let mut p = Proxies::default();
        for (proto, cport, ip, hport) in requests(hc)? {
            let addr = SocketAddr::new(
                ip.parse::<IpAddr>().unwrap_or(Ipv4Addr::UNSPECIFIED.into()),
                hport,
            );
            let bound = if proto == "tcp" {
                let l = TcpListener::bind(addr).map_err(|e| in_use(&ip, hport, e))?;
                l.set_nonblocking(true)?;
                let port = l.local_addr()?.port();
                p.tcp.push((l, cport));
                port
            } else {
                let s = UdpSocket::bind(addr).map_err(|e| in_use(&ip, hport, e))?;
                s.set_nonblocking(true)?;
                let port = s.local_addr()?.port();
                p.udp.push(Udp {
                    sock: s,
                    container_port: cport,
                    peers: Vec::new(),
                });
                port
            };
            p.published.push(PortMap {
                proto,
                container_port: cport,
                host_ip: ip,
                host_port: bound,
            });
        }
        Ok(p)
    }

    pub fn is_empty(&self) -> bool {
        self.tcp.is_empty() && self.udp.is_empty()
    }

    pub fn published(&self) -> Vec<PortMap> {
        self.published.clone()
    }

    /// The descriptors to poll, in the order [`Proxies::on_ready`] expects.
    pub fn poll_fds(&self) -> Vec<(RawFd, PollFlags)> {
        let mut v = Vec::new();
        for (l, _) in &self.tcp {
            v.push((l.as_raw_fd(), PollFlags::POLLIN));
        }
        for u in &self.udp {
            v.push((u.sock.as_raw_fd(), PollFlags::POLLIN));
            for (_, s, _) in &u.peers {
                v.push((s.as_raw_fd(), PollFlags::POLLIN));
            }
        }
        for p in &self.pairs {
            for (side, sock) in [&p.client, &p.upstream].into_iter().enumerate() {
                let mut f = PollFlags::empty();
                // read when there is room to keep what comes
                if !p.eof[side] && p.bufs[side].len() < 64 * 1024 {
                    f |= PollFlags::POLLIN;
                }
                // write what the other side sent
                if !p.bufs[1 - side].is_empty() {
                    f |= PollFlags::POLLOUT;
                }
                v.push((sock.as_raw_fd(), f));
            }
        }
        v
    }

    /// Act on what poll reported for [`Proxies::poll_fds`].
    pub fn on_ready(&mut self, ready: &[PollFlags], target: Option<Ipv4Addr>) {
        let mut i = 0;
        let mut new_pairs = Vec::new();
        for (l, cport) in &self.tcp {
            if ready.get(i).is_some_and(|r| !r.is_empty()) {
                while let Ok((client, _)) = l.accept() {
                    let Some(ip) = target else { continue };
                    let to = SocketAddr::new(IpAddr::V4(ip), *cport);
                    // The container is on a local bridge: connecting takes
                    // microseconds, or fails at once.
                    let Ok(up) = TcpStream::connect_timeout(&to, Duration::from_secs(2)) else {
                        continue;
                    };
                    let _ = client.set_nonblocking(true);
                    let _ = up.set_nonblocking(true);
                    let _ = client.set_nodelay(true);
                    let _ = up.set_nodelay(true);
                    new_pairs.push(Pair {
                        client,
                        upstream: up,
                        bufs: [Vec::new(), Vec::new()],
                        eof: [false, false],
                        dead: false,
                    });
                }
            }
            i += 1;
        }
        for u in &mut self.udp {
            let mut buf = [0u8; 65536];
            if ready.get(i).is_some_and(|r| !r.is_empty()) {
                while let Ok((n, from)) = u.sock.recv_from(&mut buf) {
                    let Some(ip) = target else { continue };
                    let pos = u.peers.iter().position(|(a, _, _)| *a == from);
                    let idx = match pos {
                        Some(p) => p,
                        None => {
                            if u.peers.len() >= 256 {
                                // the oldest peer makes room
                                let oldest = (0..u.peers.len())
                                    .min_by_key(|j| u.peers[*j].2)
                                    .unwrap_or(0);
                                u.peers.remove(oldest);
                            }
                            let Ok(s) = UdpSocket::bind("0.0.0.0:0") else {
                                continue;
                            };
                            if s.connect((ip, u.container_port)).is_err() {
                                continue;
                            }
                            let _ = s.set_nonblocking(true);
                            u.peers.push((from, s, Instant::now()));
                            u.peers.len() - 1
                        }
                    };
                    u.peers[idx].2 = Instant::now();
                    let _ = u.peers[idx].1.send(&buf[..n]);
                }
            }
            i += 1;
            for (peer, s, used) in &mut u.peers {
                if ready.get(i).is_some_and(|r| !r.is_empty()) {
                    while let Ok(n) = s.recv(&mut buf) {
                        *used = Instant::now();
                        let _ = u.sock.send_to(&buf[..n], *peer);
                    }
                }
                i += 1;
            }
        }
        for p in &mut self.pairs {
            let (rc, ru) = (ready.get(i).copied(), ready.get(i + 1).copied());
            i += 2;
            if rc.is_none_or(|r| r.is_empty()) && ru.is_none_or(|r| r.is_empty()) {
                continue;
            }
            p.pump();
        }
        self.pairs.retain(|p| !p.dead);
        self.pairs.extend(new_pairs);
    }

    pub fn close_all(&mut self) {
        self.pairs.clear();
        self.tcp.clear();
        self.udp.clear();
    }
}

impl Pair {
    fn pump(&mut self) {
        for side in 0..2 {
            // read from `side` into bufs[side]
            if !self.eof[side] && self.bufs[side].len() < 64 * 1024 {
                let mut tmp = [0u8; 16 * 1024];
                let sock = if side == 0 {
                    &mut self.client
                } else {
                    &mut self.upstream
                };
                match sock.read(&mut tmp) {
                    Ok(0) => self.eof[side] = true,
                    Ok(n) => self.bufs[side].extend_from_slice(&tmp[..n]),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(_) => {
                        self.dead = true;
                        return;
                    }
                }
            }
            // write bufs[side] to the other side
            let other = if side == 0 {
                &mut self.upstream
            } else {
                &mut self.client
            };
            while !self.bufs[side].is_empty() {
                match other.write(&self.bufs[side]) {
                    Ok(0) => break,
                    Ok(n) => {
                        self.bufs[side].drain(..n);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(_) => {
                        self.dead = true;
                        return;
                    }
                }
            }
            if self.eof[side] && self.bufs[side].is_empty() {
                let _ = other.shutdown(std::net::Shutdown::Write);
            }
        }
        if self.eof[0] && self.eof[1] && self.bufs[0].is_empty() && self.bufs[1].is_empty() {
            self.dead = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::model::PortBinding;
    use super::*;

    #[test]
    fn requests_parse_and_bad_ones_are_named() {
        let mut hc = HostConfig::default();
        let mut m = std::collections::BTreeMap::new();
        m.insert(
            "4080/tcp".to_string(),
            Some(vec![PortBinding {
                host_ip: "127.0.0.1".into(),
                host_port: "4081".into(),
            }]),
        );
        m.insert(
            "53/udp".to_string(),
            Some(vec![PortBinding {
                host_ip: String::new(),
                host_port: String::new(),
            }]),
        );
        hc.port_bindings = Some(m);
        let r = requests(&hc).unwrap();
        assert_eq!(
            r[0],
            ("tcp".to_string(), 4080, "127.0.0.1".to_string(), 4081)
        );
        assert_eq!(r[1], ("udp".to_string(), 53, "0.0.0.0".to_string(), 0));
        let mut bad = hc.clone();
        bad.port_bindings
            .as_mut()
            .unwrap()
            .insert("x/sctp".into(), None);
        assert!(
            requests(&bad)
                .unwrap_err()
                .to_string()
                .contains("only tcp and udp")
        );
        // a port in use is Docker's error
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let mut m = std::collections::BTreeMap::new();
        m.insert(
            "80/tcp".to_string(),
            Some(vec![PortBinding {
                host_ip: "127.0.0.1".into(),
                host_port: port.to_string(),
            }]),
        );
        let hc = HostConfig {
            port_bindings: Some(m),
            ..Default::default()
        };
        let e = Proxies::bind(&hc).err().unwrap();
        assert_eq!(
            e.to_string(),
            format!("Bind for 127.0.0.1:{port} failed: port is already allocated")
        );
    }

    /// A datagram to the published port reaches the container's port and the
    /// answer comes back to the sender, through the real proxy and sockets (the
    /// container here is a socket on loopback answering `pong:`).
    #[test]
    fn udp_datagrams_go_both_ways() {
        let ctr = UdpSocket::bind("127.0.0.1:0").unwrap();
        let cport = ctr.local_addr().unwrap().port();
        std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            while let Ok((n, from)) = ctr.recv_from(&mut buf) {
                let mut out = b"pong:".to_vec();
                out.extend_from_slice(&buf[..n]);
                let _ = ctr.send_to(&out, from);
            }
        });
        let mut m = std::collections::BTreeMap::new();
        m.insert(
            format!("{cport}/udp"),
            Some(vec![PortBinding {
                host_ip: "127.0.0.1".into(),
                host_port: "0".into(),
            }]),
        );
        let hc = HostConfig {
            port_bindings: Some(m),
            ..Default::default()
        };
        let mut p = Proxies::bind(&hc).unwrap();
        let published = p.published()[0].host_port;
        assert_ne!(published, 0);
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        client.set_nonblocking(true).unwrap();
        let mut got = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        while got.is_empty() {
            assert!(Instant::now() < deadline, "no answer through the proxy");
            client.send_to(b"ping", ("127.0.0.1", published)).unwrap();
            // the shim's loop, as it runs: poll, then act on what is ready
            for _ in 0..3 {
                let fds = p.poll_fds();
                let mut pfds: Vec<nix::poll::PollFd> = fds
                    .iter()
                    .map(|(fd, f)| {
                        // SAFETY: the proxies own these descriptors for the test's length.
                        nix::poll::PollFd::new(
                            unsafe { std::os::fd::BorrowedFd::borrow_raw(*fd) },
                            *f,
                        )
                    })
                    .collect();
                let _ = nix::poll::poll(&mut pfds, 100u16);
                let ready: Vec<PollFlags> = pfds
                    .iter()
                    .map(|f| f.revents().unwrap_or(PollFlags::empty()))
                    .collect();
                p.on_ready(&ready, Some(Ipv4Addr::LOCALHOST));
            }
            let mut buf = [0u8; 512];
            if let Ok(n) = client.recv(&mut buf) {
                got = buf[..n].to_vec();
            }
        }
        assert_eq!(got, b"pong:ping");
    }
}

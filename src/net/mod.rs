//! The node's network: the bridge network engined gives its containers (IPAM in
//! [`ipam`], the plans of links, addresses and routes and the bridge's setup in
//! [`bridge`], the queries re-exported from the netlink seam), and two questions a
//! node asks about itself: which address the kernel would use to reach the
//! outside, and what the system resolver calls an address.
//!
//! Those two go through the system's own machinery on purpose. The route choice is the
//! kernel's (as `ip route get` shows it), learnt from a connected UDP socket: a UDP
//! `connect` only picks a route and a source address, it sends nothing. The name comes
//! from libc's `getnameinfo`, so it honours /etc/hosts and /etc/resolv.conf exactly
//! as every other program on the node does (the static musl build has no nsswitch and
//! reads those two files; glibc follows nsswitch.conf).

pub mod bridge;
pub mod ipam;

pub use crate::sys::netlink::{link_index, link_ipv4, link_is_bridge, link_mtu};
pub use ipam::{Ipv4Cidr, allocate};

use crate::error::{Error, Kind, Result};
use std::ffi::CStr;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::sync::mpsc;
use std::time::Duration;

/// The address `ip -4 route get 1` reports as `src`: the source address of the
/// kernel's route towards 1.0.0.0. No packet leaves the host.
pub fn outbound_ipv4() -> Result<Ipv4Addr> {
    let sock = UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0))
        .map_err(|e| Error::from(e).context("udp socket"))?;
    sock.connect(SocketAddrV4::new(Ipv4Addr::new(1, 0, 0, 0), 53))
        .map_err(|e| {
            let hint = if e.raw_os_error() == Some(libc::ENETUNREACH) {
                " (no IPv4 default route)"
            } else {
                ""
            };
            Error::new(Kind::Network, format!("route to 1.0.0.0{hint}: {e}"))
        })?;
    match sock.local_addr()? {
        SocketAddr::V4(a) if !a.ip().is_unspecified() => Ok(*a.ip()),
        other => Err(Error::new(
            Kind::Network,
            format!("the kernel picked no source address ({other})"),
        )),
    }
}

/// The name the system resolver gives `ip` (a PTR record or an /etc/hosts line),
/// without a trailing dot. Gives up after `timeout`: libc's resolver has its own,
/// much longer retry schedule (resolv.conf's `timeout` × `attempts` per server), so
/// the lookup runs on a helper thread that is abandoned if it does not answer in
/// time; it ends by itself when the resolver does.
pub fn reverse_lookup(ip: IpAddr, timeout: Duration) -> Result<String> {
    within(timeout, move || getnameinfo(ip)).unwrap_or_else(|| {
        Err(Error::new(
            Kind::Network,
            format!("no answer for {ip} within {} s", timeout.as_secs_f64()),
        ))
    })
}

/// Run `f` on a helper thread and wait at most `timeout` for its result. `None` when
/// it did not finish in time (the thread is left to finish on its own).
pub fn within<T: Send + 'static>(
    timeout: Duration,
    f: impl FnOnce() -> T + Send + 'static,
) -> Option<T> {
    let (tx, rx) = mpsc::channel();
    // A resolver is happy with a small stack; the default 2 MiB is only reserved,
    // but a small one keeps a long-lived stuck lookup cheap.
    let spawned = std::thread::Builder::new()
        .name("berth-lookup".into())
        .stack_size(256 * 1024)
        .spawn(move || {
            let _ = tx.send(f());
        });
    if spawned.is_err() {
        return None;
    }
    rx.recv_timeout(timeout).ok()
}

fn getnameinfo(ip: IpAddr) -> Result<String> {
    // SAFETY: plain C calls on buffers we own; sockaddr_storage is large enough for
    // both families and zeroed before use.
    unsafe {
        let mut ss: libc::sockaddr_storage = std::mem::zeroed();
        let len = match ip {
            IpAddr::V4(v4) => {
                let sin = &mut *(&mut ss as *mut _ as *mut libc::sockaddr_in);
                sin.sin_family = libc::AF_INET as _;
                sin.sin_addr.s_addr = u32::from_ne_bytes(v4.octets());
                std::mem::size_of::<libc::sockaddr_in>()
            }
            IpAddr::V6(v6) => {
                let sin6 = &mut *(&mut ss as *mut _ as *mut libc::sockaddr_in6);
                sin6.sin6_family = libc::AF_INET6 as _;
                sin6.sin6_addr.s6_addr = v6.octets();
                std::mem::size_of::<libc::sockaddr_in6>()
            }
        };
        let mut host = [0 as libc::c_char; 1025];
        let rc = libc::getnameinfo(
            &ss as *const _ as *const libc::sockaddr,
            len as libc::socklen_t,
            host.as_mut_ptr(),
            host.len() as _,
            std::ptr::null_mut(),
            0,
            libc::NI_NAMEREQD,
        );
        if rc != 0 {
            return Err(gai_error(rc, ip));
        }
        let name = CStr::from_ptr(host.as_ptr()).to_string_lossy();
        Ok(name.trim_end_matches('.').to_string())
    }
}

fn gai_error(rc: i32, ip: IpAddr) -> Error {
    match rc {
        libc::EAI_NONAME => Error::new(Kind::NotFound, format!("no name for {ip}")),
        libc::EAI_AGAIN => Error::new(
            Kind::Network,
            format!("no name for {ip}: the resolver did not answer"),
        ),
        libc::EAI_SYSTEM => {
            Error::from(std::io::Error::last_os_error()).context(format!("reverse lookup of {ip}"))
        }
        _ => {
            // SAFETY: gai_strerror returns a pointer to a static string.
            let msg = unsafe { CStr::from_ptr(libc::gai_strerror(rc)) }.to_string_lossy();
            Error::new(Kind::Network, format!("reverse lookup of {ip}: {msg}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn within_returns_a_quick_result_and_abandons_a_slow_one() {
        assert_eq!(within(Duration::from_secs(120), || 7), Some(7));
        // The slow one cannot finish before the test lets it go, which it does
        // only once `within` has given up: `within` did not wait for it.
        let (release, gate) = mpsc::channel::<()>();
        let (done_tx, done) = mpsc::channel();
        let r = within(Duration::from_millis(100), move || {
            // (a safety net, so a `within` that waited would fail, not hang)
            let released = gate.recv_timeout(Duration::from_secs(120)).is_ok();
            let _ = done_tx.send(released);
            1
        });
        assert_eq!(r, None);
        assert!(done.try_recv().is_err(), "the slow one already ended");
        release.send(()).unwrap();
        // it was left running, and finishes on its own once let go
        assert_eq!(done.recv_timeout(Duration::from_secs(120)), Ok(true));
    }

    #[test]
    fn resolver_errors_read_as_what_happened() {
        let ip: IpAddr = "10.9.0.2".parse().unwrap();
        let e = gai_error(libc::EAI_NONAME, ip);
        assert_eq!(e.kind(), Kind::NotFound);
        assert_eq!(e.to_string(), "no name for 10.9.0.2");
        assert!(
            gai_error(libc::EAI_AGAIN, ip)
                .to_string()
                .contains("did not answer")
        );
        assert_eq!(gai_error(libc::EAI_FAIL, ip).kind(), Kind::Network);
    }
}

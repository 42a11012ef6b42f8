//! IPv4 address management for the bridge network: CIDR arithmetic and picking a
//! container's address, as pure functions (the engine keeps the set of addresses
//! in use; nothing here touches the system).
//!
//! The rules are dockerd's: a `--fixed-cidr` range must lie inside the bridge's
//! network; the network's own network and broadcast addresses and the gateway are
//! never handed out, while a range's first and last addresses are (10.0.3.144 is a
//! container's address under `--fixed-cidr=10.0.3.144/28` in 10.0.3.0/24). A /31
//! or /32 network has no network or broadcast address (RFC 3021).

use crate::error::{Error, Kind, Result};
use std::collections::BTreeSet;
use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

/// An IPv4 address with a prefix length, as written `10.0.3.144/28`. The address
/// keeps its host bits: `172.18.0.1/16` is a bridge's address and its network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ipv4Cidr {
    addr: Ipv4Addr,
    prefix: u8,
}

impl Ipv4Cidr {
    /// An error when `prefix` is above 32.
    pub fn new(addr: Ipv4Addr, prefix: u8) -> Result<Self> {
        if prefix > 32 {
            return Err(Error::invalid(format!(
                "bad CIDR {addr}/{prefix}: the prefix length must be 0 to 32"
            )));
        }
        Ok(Ipv4Cidr { addr, prefix })
    }

    pub fn addr(&self) -> Ipv4Addr {
        self.addr
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// The netmask as a number (`/28` is 0xffff_fff0).
    pub fn mask(&self) -> u32 {
        // A shift by 32 overflows; /0 has no network bits.
        u32::MAX.checked_shl(32 - self.prefix as u32).unwrap_or(0)
    }

    pub fn network(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) & self.mask())
    }

    /// The last address (all host bits set).
    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) | !self.mask())
    }

    /// The same network written with its network address (`10.0.3.150/28` ->
    /// `10.0.3.144/28`).
    pub fn trunc(&self) -> Ipv4Cidr {
        Ipv4Cidr {
            addr: self.network(),
            prefix: self.prefix,
        }
    }

    /// How many addresses the network spans (2^(32-prefix)).
    pub fn size(&self) -> u64 {
        1u64 << (32 - self.prefix as u32)
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == u32::from(self.network())
    }

    /// True when all of `other` lies inside this network.
    pub fn covers(&self, other: &Ipv4Cidr) -> bool {
        other.prefix >= self.prefix && self.contains(other.network())
    }

    /// True when the network has a network and a broadcast address that are
    /// not for hosts (every prefix but /31 and /32).
    fn has_reserved_ends(&self) -> bool {
        self.prefix < 31
    }
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl FromStr for Ipv4Cidr {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let Some((a, p)) = s.split_once('/') else {
            return Err(Error::invalid(format!(
                "bad CIDR {s:?}: write it as ADDRESS/PREFIX, e.g. 10.0.3.144/28"
            )));
        };
        let addr: Ipv4Addr = a
            .parse()
            .map_err(|_| Error::invalid(format!("bad CIDR {s:?}: {a:?} is not an IPv4 address")))?;
        let prefix = if !p.is_empty() && p.len() <= 2 && p.bytes().all(|b| b.is_ascii_digit()) {
            p.parse::<u8>().ok().filter(|&n| n <= 32)
        } else {
            None
        };
        let Some(prefix) = prefix else {
            return Err(Error::invalid(format!(
                "bad CIDR {s:?}: the prefix length must be a number from 0 to 32"
            )));
        };
        Ok(Ipv4Cidr { addr, prefix })
    }
}

/// The lowest free address for a container: inside `range` (a `--fixed-cidr`) or
/// else the whole `subnet`; never the subnet's network or broadcast address, never
/// `gateway`, never one in `used`.
///
/// Errors: a `range` not inside `subnet` (dockerd refuses such a --fixed-cidr too),
/// and a range with nothing left (saying how many addresses it has).
pub fn allocate(
    subnet: Ipv4Cidr,
    range: Option<Ipv4Cidr>,
    gateway: Ipv4Addr,
    used: &BTreeSet<Ipv4Addr>,
) -> Result<Ipv4Addr> {
    let pool = match range {
        Some(r) if !subnet.covers(&r) => {
            return Err(Error::new(
                Kind::Config,
                format!(
                    "--fixed-cidr {r} is not inside the bridge's network {}: \
                     pick a range inside it",
                    subnet.trunc()
                ),
            ));
        }
        Some(r) => r,
        None => subnet,
    };
    let reserved = |ip: Ipv4Addr| {
        ip == gateway
            || (subnet.has_reserved_ends() && (ip == subnet.network() || ip == subnet.broadcast()))
    };
    let first = u32::from(pool.network());
    let last = u32::from(pool.broadcast());
    let mut ip = first;
    loop {
        let a = Ipv4Addr::from(ip);
        if !reserved(a) && !used.contains(&a) {
            return Ok(a);
        }
        if ip == last {
            break;
        }
        ip += 1;
    }
    let n = pool.size();
    Err(Error::new(
        Kind::Conflict,
        format!(
            "no free address in {}: all {n} address{} taken (network, broadcast, gateway \
             or containers'); widen the range or remove containers",
            pool.trunc(),
            if n == 1 { " is" } else { "es are" }
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(s: &str) -> Ipv4Cidr {
        s.parse().unwrap()
    }
    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }
    fn set(ips: &[&str]) -> BTreeSet<Ipv4Addr> {
        ips.iter().map(|s| ip(s)).collect()
    }

    #[test]
    fn parses_and_computes_a_28() {
        let r = c("10.0.3.144/28");
        assert_eq!(r.addr(), ip("10.0.3.144"));
        assert_eq!(r.prefix(), 28);
        assert_eq!(r.mask(), 0xffff_fff0);
        assert_eq!(r.network(), ip("10.0.3.144"));
        assert_eq!(r.broadcast(), ip("10.0.3.159"));
        assert_eq!(r.size(), 16);
        assert!(r.contains(ip("10.0.3.144")) && r.contains(ip("10.0.3.159")));
        assert!(!r.contains(ip("10.0.3.143")) && !r.contains(ip("10.0.3.160")));
        assert_eq!(r.to_string(), "10.0.3.144/28");
        // Host bits stay in the address and leave the network alone.
        let b = c("172.18.0.1/16");
        assert_eq!(b.to_string(), "172.18.0.1/16");
        assert_eq!(b.network(), ip("172.18.0.0"));
        assert_eq!(b.broadcast(), ip("172.18.255.255"));
        assert_eq!(b.trunc().to_string(), "172.18.0.0/16");
        assert!(!b.covers(&r.trunc()) && c("10.0.3.1/24").covers(&r));
        assert!(
            !r.covers(&c("10.0.3.0/24")),
            "a smaller network covers no larger one"
        );
    }

    #[test]
    fn edge_prefixes_31_32_and_0() {
        let p31 = c("10.0.3.6/31");
        assert_eq!(
            (p31.network(), p31.broadcast(), p31.size()),
            (ip("10.0.3.6"), ip("10.0.3.7"), 2)
        );
        let p32 = c("10.0.3.9/32");
        assert_eq!(
            (p32.network(), p32.broadcast(), p32.size()),
            (ip("10.0.3.9"), ip("10.0.3.9"), 1)
        );
        assert!(p32.contains(ip("10.0.3.9")) && !p32.contains(ip("10.0.3.8")));
        let all = c("0.0.0.0/0");
        assert_eq!(all.mask(), 0);
        assert_eq!(all.broadcast(), ip("255.255.255.255"));
        assert_eq!(all.size(), 1 << 32);
        assert!(all.contains(ip("203.0.113.5")));
        assert!(Ipv4Cidr::new(ip("10.0.0.0"), 33).is_err());
    }

    #[test]
    fn bad_cidrs_say_what_is_wrong() {
        let e = |s: &str| s.parse::<Ipv4Cidr>().unwrap_err().to_string();
        assert_eq!(
            e("10.0.3.144"),
            "bad CIDR \"10.0.3.144\": write it as ADDRESS/PREFIX, e.g. 10.0.3.144/28"
        );
        assert_eq!(
            e("10.0.3.300/28"),
            "bad CIDR \"10.0.3.300/28\": \"10.0.3.300\" is not an IPv4 address"
        );
        assert_eq!(
            e("fd00::/64"),
            "bad CIDR \"fd00::/64\": \"fd00::\" is not an IPv4 address"
        );
        for bad in [
            "10.0.3.0/33",
            "10.0.3.0/",
            "10.0.3.0/x",
            "10.0.3.0/+8",
            "10.0.3.0/008",
            "10.0.3.0/24/1",
        ] {
            assert_eq!(
                e(bad),
                format!("bad CIDR {bad:?}: the prefix length must be a number from 0 to 32"),
            );
        }
        assert_eq!(c("10.0.0.0/0").prefix(), 0);
        assert_eq!(c("10.0.0.7/32").prefix(), 32);
        assert_eq!(
            "1.2.3.4".parse::<Ipv4Cidr>().unwrap_err().kind(),
            Kind::Invalid
        );
    }

    #[test]
    fn allocate_skips_network_gateway_and_used() {
        let net = c("10.0.3.1/24");
        let gw = ip("10.0.3.1");
        assert_eq!(allocate(net, None, gw, &set(&[])).unwrap(), ip("10.0.3.2"));
        assert_eq!(
            allocate(net, None, gw, &set(&["10.0.3.2", "10.0.3.3"])).unwrap(),
            ip("10.0.3.4")
        );
        // A gateway elsewhere frees .1; .0 stays the network's.
        assert_eq!(
            allocate(net, None, ip("10.0.3.254"), &set(&[])).unwrap(),
            ip("10.0.3.1")
        );
        // The broadcast address is never given out, even as the last one left.
        let small = c("10.0.3.0/30"); // .0 net, .1 gw, .2 host, .3 broadcast
        assert_eq!(
            allocate(small, None, gw, &set(&[])).unwrap(),
            ip("10.0.3.2")
        );
        let e = allocate(small, None, gw, &set(&["10.0.3.2"])).unwrap_err();
        assert_eq!(e.kind(), Kind::Conflict);
        assert!(
            e.to_string()
                .starts_with("no free address in 10.0.3.0/30: all 4 addresses are taken"),
            "{e}"
        );
    }

    #[test]
    fn allocate_respects_the_fixed_cidr_range() {
        let net = c("10.0.3.1/24");
        let gw = ip("10.0.3.1");
        let range = Some(c("10.0.3.144/28"));
        // The range's own first address is a host address of the bridge's network.
        assert_eq!(
            allocate(net, range, gw, &set(&[])).unwrap(),
            ip("10.0.3.144")
        );
        assert_eq!(
            allocate(net, range, gw, &set(&["10.0.3.144"])).unwrap(),
            ip("10.0.3.145")
        );
        let all: Vec<String> = (144..=159).map(|i| format!("10.0.3.{i}")).collect();
        let used: BTreeSet<Ipv4Addr> = all.iter().map(|s| ip(s)).collect();
        let e = allocate(net, range, gw, &used).unwrap_err();
        assert_eq!(
            e.to_string(),
            "no free address in 10.0.3.144/28: all 16 addresses are taken (network, \
             broadcast, gateway or containers'); widen the range or remove containers"
        );
        // A range at the end of the network loses its last address to the broadcast.
        let tail = Some(c("10.0.3.252/30"));
        let used = set(&["10.0.3.252", "10.0.3.253", "10.0.3.254"]);
        assert!(allocate(net, tail, gw, &used).is_err());
        // A range holding the gateway skips it.
        let head = Some(c("10.0.3.0/30"));
        assert_eq!(allocate(net, head, gw, &set(&[])).unwrap(), ip("10.0.3.2"));
    }

    #[test]
    fn allocate_refuses_a_range_outside_the_subnet() {
        let net = c("10.0.3.1/24");
        for r in ["10.0.4.0/28", "10.0.0.0/16", "10.0.2.255/32"] {
            let e = allocate(net, Some(c(r)), ip("10.0.3.1"), &set(&[])).unwrap_err();
            assert_eq!(e.kind(), Kind::Config);
            assert_eq!(
                e.to_string(),
                format!(
                    "--fixed-cidr {r} is not inside the bridge's network 10.0.3.0/24: pick a range inside it"
                )
            );
        }
    }

    #[test]
    fn allocate_on_31_and_32_networks() {
        // RFC 3021: both addresses of a /31 are hosts; one is the gateway.
        let p31 = c("10.0.3.6/31");
        assert_eq!(
            allocate(p31, None, ip("10.0.3.6"), &set(&[])).unwrap(),
            ip("10.0.3.7")
        );
        assert_eq!(
            allocate(p31, None, ip("10.0.3.7"), &set(&[])).unwrap(),
            ip("10.0.3.6")
        );
        let e = allocate(p31, None, ip("10.0.3.6"), &set(&["10.0.3.7"])).unwrap_err();
        assert!(e.to_string().contains("all 2 addresses are taken"), "{e}");
        // A /32 network is its gateway alone: full.
        let p32 = c("10.0.3.9/32");
        let e = allocate(p32, None, ip("10.0.3.9"), &set(&[])).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("no free address in 10.0.3.9/32: all 1 address is taken"),
            "{e}"
        );
        // A /32 range inside a /24 is that one address, unless it is reserved.
        let net = c("10.0.3.1/24");
        assert_eq!(
            allocate(net, Some(c("10.0.3.77/32")), ip("10.0.3.1"), &set(&[])).unwrap(),
            ip("10.0.3.77")
        );
        assert!(allocate(net, Some(c("10.0.3.255/32")), ip("10.0.3.1"), &set(&[])).is_err());
        assert!(allocate(net, Some(c("10.0.3.0/32")), ip("10.0.3.1"), &set(&[])).is_err());
    }
}

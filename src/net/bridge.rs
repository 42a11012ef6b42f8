//! The bridge network as plans: what engined applies to give a container its
//! `eth0` on a bridge, and to make sure the bridge is there.
//!
//! A container in bridge mode gets a veth pair. The shim, in the host's network
//! namespace, applies [`plan_host_side`]: create the pair with its peer born as
//! `eth0` in the container's namespace, enslave the host end to the bridge, bring
//! it up. The container's init, inside that namespace and before it execs,
//! applies [`plan_container_side`]: address `eth0`, bring up `lo` and `eth0`,
//! route by default via the gateway. Both are plain data ([`Op`]s), so
//! their order is tested without root; `sys::Linux` carries them out.
//!
//! The bridge follows dockerd: `--bridge=NAME` names the site's bridge, which is
//! used as it is (no address added; the gateway is its own address); without it
//! engined keeps its own bridge `berth0`, created, addressed and brought up when
//! missing ([`ensure_bridge_plan`]).

use super::ipam::Ipv4Cidr;
use crate::error::{Error, Kind, Result};
use crate::sys::Op;
use crate::sys::netlink::{self, IFNAME_MAX};
use std::net::{IpAddr, Ipv4Addr};

/// engined's own bridge, when no `--bridge` is given.
pub const DEFAULT_BRIDGE: &str = "berth0";
/// The address (gateway/prefix) of engined's own bridge, when no `--bip` is given.
pub const DEFAULT_BRIDGE_CIDR: &str = "172.18.0.1/16";
/// The MTU when neither `--mtu` nor the bridge says otherwise.
pub const DEFAULT_MTU: u32 = 1500;
/// The container's end of its veth pair, once inside.
pub const CONTAINER_IFNAME: &str = "eth0";

/// The name of the host end of a container's veth pair (the other end is eth0,
/// made in the container's namespace).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VethNames {
    pub host: String,
}

/// How many hex digits of the container id a veth name carries: Docker's
/// `vethXXXXXXX` look. Two live containers sharing 28 bits of id is a 1 in 10^5
/// event on a node with 100 containers, and then VethAdd fails with a clear error.
const ID_CHARS: usize = 7;

/// The veth name of container `id` (its hex id, as engined makes them): `veth` +
/// 7 hex digits (11 bytes, within the kernel's 15).
pub fn veth_names(id: &str) -> Result<VethNames> {
    let short = id.get(..ID_CHARS).filter(|s| {
        s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    });
    let Some(short) = short else {
        return Err(Error::invalid(format!(
            "container id {id:?} does not start with {ID_CHARS} lowercase hex digits"
        )));
    };
    let names = VethNames {
        host: format!("veth{short}"),
    };
    debug_assert!(names.host.len() <= IFNAME_MAX);
    Ok(names)
}

/// The shim's half, in the host's namespace: a veth pair with `mtu` on both ends
/// (the bridge's, so frames are not dropped at the port), its host end enslaved to
/// `bridge` and up, its peer born as eth0 in the network namespace of `pid` (the
/// container's init, which waits for it) — made there rather than moved there,
/// which would cost a network-wide synchronisation per container.
pub fn plan_host_side(names: &VethNames, bridge: &str, mtu: u32, pid: u32) -> Vec<Op> {
    vec![
        Op::VethAdd {
            name: names.host.clone(),
            peer: CONTAINER_IFNAME.to_string(),
            mtu: Some(mtu),
            peer_pid: Some(pid),
        },
        Op::LinkSetMaster {
            name: names.host.clone(),
            master: bridge.to_string(),
        },
        Op::LinkUp {
            name: names.host.clone(),
        },
    ]
}

/// The container init's half, inside the container's network namespace once
/// eth0 has arrived: no IPv6 on eth0 (engined's networks are IPv4, as the
/// site's `--ipv6=false`; set before the link is up, so not even a link-local
/// address appears), `addr`/`prefix` on it, `lo` and eth0 up, and the default
/// route via `gateway` (after eth0 is up: the kernel only accepts a gateway it can
/// reach on an up link).
pub fn plan_container_side(addr: Ipv4Addr, prefix: u8, gateway: Ipv4Addr) -> Vec<Op> {
    vec![
        Op::LinkNoIpv6 {
            name: CONTAINER_IFNAME.to_string(),
        },
        Op::AddrAdd {
            link: CONTAINER_IFNAME.to_string(),
            addr: IpAddr::V4(addr),
            prefix,
        },
        Op::LinkUp { name: "lo".into() },
        Op::LinkUp {
            name: CONTAINER_IFNAME.to_string(),
        },
        Op::RouteAddDefault { via: gateway },
    ]
}

/// What engined was told about its bridge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BridgeConfig {
    /// `--bridge=NAME`: the site's bridge, used as it is. The gateway is its own
    /// (first) IPv4 address; `mtu` is `--mtu` if given.
    Given { name: String, mtu: Option<u32> },
    /// engined's own bridge: `cidr` is its address and network (`--bip`, default
    /// [`DEFAULT_BRIDGE_CIDR`]), `mtu` is `--mtu` if given.
    Own {
        name: String,
        cidr: Ipv4Cidr,
        mtu: Option<u32>,
    },
}

impl BridgeConfig {
    pub fn name(&self) -> &str {
        match self {
            BridgeConfig::Given { name, .. } | BridgeConfig::Own { name, .. } => name,
        }
    }
}

/// What the kernel says about a link, as [`observe`] reads it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LinkState {
    pub exists: bool,
    pub is_bridge: bool,
    pub mtu: Option<u32>,
    pub ipv4: Vec<(Ipv4Addr, u8)>,
}

/// Read link `name`'s state in the calling thread's network namespace.
pub fn observe(name: &str) -> Result<LinkState> {
    if netlink::link_index(name)?.is_none() {
        return Ok(LinkState::default());
    }
    Ok(LinkState {
        exists: true,
        is_bridge: netlink::link_is_bridge(name)?,
        mtu: netlink::link_mtu(name)?,
        ipv4: netlink::link_ipv4(name)?,
    })
}

/// The bridge network engined will use, and the plan that makes it ready.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeNet {
    /// Ops to apply in the host's namespace (empty or just `LinkUp` when the
    /// bridge is ready).
    pub plan: Vec<Op>,
    /// The bridge's name.
    pub bridge: String,
    /// The gateway (the bridge's address) with the network's prefix: the subnet
    /// [`super::ipam::allocate`] works in.
    pub subnet: Ipv4Cidr,
    /// The MTU for the containers' veths.
    pub mtu: u32,
}

impl BridgeNet {
    pub fn gateway(&self) -> Ipv4Addr {
        self.subnet.addr()
    }
}

/// Decide what to do about the bridge, from the configuration and what
/// [`observe`] saw. A given bridge must exist, be a bridge and have an IPv4
/// address; it is only brought up. engined's own bridge is created, addressed and
/// brought up as far as it is missing; one that has another address is an error
/// (dockerd's "bridge IP does not match"), not silently re-addressed.
pub fn ensure_bridge_plan(cfg: &BridgeConfig, state: &LinkState) -> Result<BridgeNet> {
    let name = cfg.name();
    netlink::check_ifname(name)?;
    if state.exists && !state.is_bridge {
        return Err(Error::invalid(format!(
            "{name} is not a bridge: name a bridge with --bridge, or delete the link \
             (ip link del {name})"
        )));
    }
    let up = Op::LinkUp {
        name: name.to_string(),
    };
    match cfg {
        BridgeConfig::Given { mtu, .. } => {
            if !state.exists {
                return Err(Error::not_found(format!(
                    "bridge {name} does not exist: create it (the site's Ansible role does) \
                     or drop --bridge"
                )));
            }
            let Some(&(gw, prefix)) = state.ipv4.first() else {
                return Err(Error::new(
                    Kind::Config,
                    format!(
                        "bridge {name} has no IPv4 address, and the containers' gateway is \
                         the bridge's address: give it one (the site's Ansible role does) \
                         or drop --bridge"
                    ),
                ));
            };
            Ok(BridgeNet {
                plan: vec![up],
                bridge: name.to_string(),
                subnet: Ipv4Cidr::new(gw, prefix)?,
                mtu: mtu.or(state.mtu).unwrap_or(DEFAULT_MTU),
            })
        }
        BridgeConfig::Own { cidr, mtu, .. } => {
            let mut plan = Vec::new();
            if !state.exists {
                plan.push(Op::BridgeAdd {
                    name: name.to_string(),
                    mtu: *mtu,
                });
            }
            let ours = (cidr.addr(), cidr.prefix());
            if !state.ipv4.contains(&ours) {
                if let Some((a, p)) = state.ipv4.first() {
                    return Err(Error::new(
                        Kind::Conflict,
                        format!(
                            "bridge {name} has address {a}/{p}, not {cidr} as configured: \
                             delete the bridge (ip link del {name}) for engined to make it \
                             anew, or configure {a}/{p}"
                        ),
                    ));
                }
                plan.push(Op::AddrAdd {
                    link: name.to_string(),
                    addr: IpAddr::V4(cidr.addr()),
                    prefix: cidr.prefix(),
                });
            }
            plan.push(up);
            Ok(BridgeNet {
                plan,
                bridge: name.to_string(),
                subnet: *cidr,
                mtu: mtu.or(state.mtu).unwrap_or(DEFAULT_MTU),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::ipam::allocate;
    use super::*;
    use crate::sys::netlink::{NetNs, link_index, link_ipv4, link_is_bridge, link_mtu};
    use crate::sys::{Linux, Recorder, apply};
    use std::collections::BTreeSet;
    use std::io::{Read, Write};
    use std::net::{SocketAddr, TcpListener, TcpStream};

    const ID: &str = "4f3c2b1a0e9d8c7b6a5f4e3d2c1b0a99887766554433221100ffeeddccbbaa99";

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn names_in(plan: &[Op]) -> Vec<String> {
        let mut out = Vec::new();
        for op in plan {
            match op {
                Op::BridgeAdd { name, .. }
                | Op::LinkUp { name }
                | Op::LinkDel { name }
                | Op::LinkSetMtu { name, .. }
                | Op::LinkSetNetns { name, .. } => out.push(name.clone()),
                Op::VethAdd { name, peer, .. } => out.extend([name.clone(), peer.clone()]),
                Op::LinkSetMaster { name, master } => out.extend([name.clone(), master.clone()]),
                Op::LinkRename { name, new } => out.extend([name.clone(), new.clone()]),
                Op::AddrAdd { link, .. } => out.push(link.clone()),
                _ => {}
            }
        }
        out
    }

    #[test]
    fn veth_names_come_from_the_id_and_fit_ifnamsiz() {
        let n = veth_names(ID).unwrap();
        assert_eq!(n.host, "veth4f3c2b1");
        for bad in ["", "4f3c2b", "4F3C2B1A", "4f3c2b/..", "zzzzzzzz"] {
            let e = veth_names(bad).unwrap_err();
            assert!(
                e.to_string().contains("7 lowercase hex digits"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn host_side_plan_in_order() {
        let n = veth_names(ID).unwrap();
        let plan = plan_host_side(&n, "br0", 1450, 4242);
        let r = Recorder::new();
        apply(&r, &plan).unwrap();
        assert_eq!(
            r.taken(),
            vec![
                Op::VethAdd {
                    name: "veth4f3c2b1".into(),
                    peer: "eth0".into(),
                    mtu: Some(1450),
                    peer_pid: Some(4242),
                },
                Op::LinkSetMaster {
                    name: "veth4f3c2b1".into(),
                    master: "br0".into()
                },
                Op::LinkUp {
                    name: "veth4f3c2b1".into()
                },
            ]
        );
        for name in names_in(&plan) {
            assert!(name.len() <= IFNAME_MAX, "{name}");
        }
        // A failure is reported at its step, and nothing after it runs.
        let r = Recorder::failing_at(1);
        let e = apply(&r, &plan).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("step 2 (set veth4f3c2b1 master br0)"),
            "{e}"
        );
        assert_eq!(r.taken().len(), 1);
    }

    #[test]
    fn container_side_plan_in_order() {
        let plan = plan_container_side(ip("10.0.3.144"), 24, ip("10.0.3.1"));
        let r = Recorder::new();
        apply(&r, &plan).unwrap();
        assert_eq!(
            r.taken(),
            vec![
                Op::LinkNoIpv6 {
                    name: "eth0".into()
                },
                Op::AddrAdd {
                    link: "eth0".into(),
                    addr: "10.0.3.144".parse().unwrap(),
                    prefix: 24
                },
                Op::LinkUp { name: "lo".into() },
                Op::LinkUp {
                    name: "eth0".into()
                },
                Op::RouteAddDefault {
                    via: ip("10.0.3.1")
                },
            ]
        );
        for name in names_in(&plan) {
            assert!(name.len() <= IFNAME_MAX, "{name}");
        }
    }

    #[test]
    fn own_bridge_is_made_as_far_as_it_is_missing() {
        let cidr: Ipv4Cidr = DEFAULT_BRIDGE_CIDR.parse().unwrap();
        let cfg = BridgeConfig::Own {
            name: DEFAULT_BRIDGE.into(),
            cidr,
            mtu: Some(1450),
        };
        let add = Op::BridgeAdd {
            name: "berth0".into(),
            mtu: Some(1450),
        };
        let addr = Op::AddrAdd {
            link: "berth0".into(),
            addr: "172.18.0.1".parse().unwrap(),
            prefix: 16,
        };
        let up = Op::LinkUp {
            name: "berth0".into(),
        };

        let net = ensure_bridge_plan(&cfg, &LinkState::default()).unwrap();
        assert_eq!(net.plan, vec![add, addr.clone(), up.clone()]);
        assert_eq!(
            (net.gateway(), net.subnet.prefix(), net.mtu),
            (ip("172.18.0.1"), 16, 1450)
        );

        let bare = LinkState {
            exists: true,
            is_bridge: true,
            mtu: Some(1500),
            ipv4: vec![],
        };
        assert_eq!(
            ensure_bridge_plan(&cfg, &bare).unwrap().plan,
            vec![addr, up.clone()]
        );

        let ready = LinkState {
            ipv4: vec![(ip("172.18.0.1"), 16)],
            ..bare.clone()
        };
        assert_eq!(ensure_bridge_plan(&cfg, &ready).unwrap().plan, vec![up]);

        let other = LinkState {
            ipv4: vec![(ip("10.9.0.1"), 24)],
            ..bare.clone()
        };
        let e = ensure_bridge_plan(&cfg, &other).unwrap_err();
        assert_eq!(e.kind(), Kind::Conflict);
        assert!(
            e.to_string()
                .starts_with("bridge berth0 has address 10.9.0.1/24, not 172.18.0.1/16"),
            "{e}"
        );

        let not_bridge = LinkState {
            is_bridge: false,
            ..ready
        };
        let e = ensure_bridge_plan(&cfg, &not_bridge).unwrap_err();
        assert!(e.to_string().starts_with("berth0 is not a bridge"), "{e}");
    }

    #[test]
    fn given_bridge_is_used_as_it_is() {
        let cfg = BridgeConfig::Given {
            name: "br0".into(),
            mtu: None,
        };
        let e = ensure_bridge_plan(&cfg, &LinkState::default()).unwrap_err();
        assert_eq!(e.kind(), Kind::NotFound);
        assert_eq!(
            e.to_string(),
            "bridge br0 does not exist: create it (the site's Ansible role does) or drop --bridge"
        );
        let bare = LinkState {
            exists: true,
            is_bridge: true,
            mtu: Some(9000),
            ipv4: vec![],
        };
        let e = ensure_bridge_plan(&cfg, &bare).unwrap_err();
        assert!(
            e.to_string().starts_with("bridge br0 has no IPv4 address"),
            "{e}"
        );

        let site = LinkState {
            ipv4: vec![(ip("10.0.3.1"), 24), (ip("10.0.9.1"), 24)],
            ..bare
        };
        let net = ensure_bridge_plan(&cfg, &site).unwrap();
        // No address added: only brought up.
        assert_eq!(net.plan, vec![Op::LinkUp { name: "br0".into() }]);
        assert_eq!((net.gateway(), net.subnet.prefix()), (ip("10.0.3.1"), 24));
        assert_eq!(net.mtu, 9000, "the bridge's MTU without --mtu");
        let cfg = BridgeConfig::Given {
            name: "br0".into(),
            mtu: Some(1400),
        };
        assert_eq!(
            ensure_bridge_plan(&cfg, &site).unwrap().mtu,
            1400,
            "--mtu wins"
        );
    }

    /// The whole path on real links: engined's bridge in one namespace (the
    /// "host"), a container's namespace in another, the plans applied through
    /// `Linux`, and TCP both ways over the veth.
    #[test]
    fn a_container_reaches_and_is_reached_over_the_bridge() {
        let host = NetNs::new();
        let ctr = NetNs::new();
        let names = veth_names(ID).unwrap();

        // The host: engined's own bridge, made from nothing, with an MTU.
        let cfg = BridgeConfig::Own {
            name: "brt0".into(),
            cidr: "10.0.3.1/24".parse().unwrap(),
            mtu: Some(1450),
        };
        let net = host.run(move || {
            let net = ensure_bridge_plan(&cfg, &observe("brt0").unwrap()).unwrap();
            assert_eq!(net.plan.len(), 3, "created, addressed, up: {:?}", net.plan);
            apply(&Linux, &net.plan).unwrap();
            let seen = observe("brt0").unwrap();
            assert!(seen.is_bridge);
            assert_eq!(seen.ipv4, vec![(ip("10.0.3.1"), 24)]);
            assert_eq!(seen.mtu, Some(1450));
            // Applying again is a no-op plan, not an error.
            assert_eq!(
                ensure_bridge_plan(&cfg, &seen).unwrap().plan,
                vec![Op::LinkUp {
                    name: "brt0".into()
                }]
            );
            // Something for the container to reach through its default route.
            apply(
                &Linux,
                &[
                    Op::AddrAdd {
                        link: "lo".into(),
                        addr: "10.99.0.1".parse().unwrap(),
                        prefix: 32,
                    },
                    Op::LinkUp { name: "lo".into() },
                ],
            )
            .unwrap();
            net
        });

        // engined's IPAM: the site's --fixed-cidr inside the bridge's network.
        let used: BTreeSet<Ipv4Addr> = [ip("10.0.3.144")].into();
        let addr = allocate(
            net.subnet,
            Some("10.0.3.144/28".parse().unwrap()),
            net.gateway(),
            &used,
        )
        .unwrap();
        assert_eq!(addr, ip("10.0.3.145"));

        // The shim's half, its peer born in the container's namespace.
        let plan = plan_host_side(&names, &net.bridge, net.mtu, ctr.tid());
        let host_end = names.host.clone();
        host.run(move || {
            apply(&Linux, &plan).unwrap();
            assert_eq!(link_index("eth0").unwrap(), None, "the peer is not here");
            assert_eq!(link_mtu(&host_end).unwrap(), Some(1450));
            assert_eq!(
                link_mtu("brt0").unwrap(),
                Some(1450),
                "the bridge kept its MTU"
            );
        });

        // The init's half, inside.
        let (gw, prefix) = (net.gateway(), net.subnet.prefix());
        let listener = ctr.run(move || {
            assert!(link_index("eth0").unwrap().is_some(), "eth0 is there");
            apply(&Linux, &plan_container_side(addr, prefix, gw)).unwrap();
            assert_eq!(link_ipv4("eth0").unwrap(), vec![(addr, prefix)]);
            assert_eq!(link_mtu("eth0").unwrap(), Some(1450));
            assert!(!link_is_bridge("eth0").unwrap());
            TcpListener::bind((addr, 0)).unwrap()
        });
        let port = listener.local_addr().unwrap().port();

        // Host -> container, on the assigned address; the container sees the
        // bridge's address as the peer, so the packets went over the bridge.
        let client = host.run(move || {
            let mut s = TcpStream::connect(SocketAddr::from((addr, port))).unwrap();
            s.write_all(b"ping").unwrap();
            s
        });
        let (mut conn, from) = listener.accept().unwrap();
        assert_eq!(from.ip(), IpAddr::V4(ip("10.0.3.1")));
        let mut buf = [0u8; 4];
        conn.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"ping");
        drop((conn, client));

        // Container -> an address beyond the subnet: only the default route via
        // the gateway gets it there.
        let far = host.run(|| TcpListener::bind(("10.99.0.1", 0)).unwrap());
        let far_port = far.local_addr().unwrap().port();
        let mut out = ctr.run(move || TcpStream::connect(("10.99.0.1", far_port)).unwrap());
        let (mut conn, from) = far.accept().unwrap();
        assert_eq!(from.ip(), IpAddr::V4(addr), "the container's own address");
        out.write_all(b"pong").unwrap();
        conn.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"pong");
        drop((conn, out));

        // Deleting the host end takes eth0 with it.
        let host_end = names.host.clone();
        host.run(move || {
            apply(
                &Linux,
                &[Op::LinkDel {
                    name: host_end.clone(),
                }],
            )
            .unwrap();
            assert_eq!(link_index(&host_end).unwrap(), None);
        });
        assert_eq!(ctr.run(|| link_index("eth0").unwrap()), None);

        // Nothing of this reached the test's own (the host's) namespace.
        for name in ["brt0", names.host.as_str()] {
            assert_eq!(link_index(name).unwrap(), None, "{name} leaked");
        }
    }
}

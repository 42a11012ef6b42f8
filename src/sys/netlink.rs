//! The network half of the Sys seam: links, addresses and routes over rtnetlink
//! (netlink-packet-route messages on a netlink-sys socket), never by running `ip`.
//!
//! Every request opens its own NETLINK_ROUTE socket. A netlink socket belongs to the
//! network namespace its creating thread was in, so one socket per request makes
//! each operation act in the namespace of the thread that asks, which is what the
//! container's init (inside the new namespace) and the shim (in the host's) need.
//! A socket costs one syscall; the engine makes a handful of requests per container.
//!
//! The privileged operations are `pub(super)`: only [`super::Linux`] calls them, so
//! everything else goes through an [`Op`](super::Op) plan. The read-only queries
//! ([`link_index`], [`link_mtu`], [`link_ipv4`], [`link_is_bridge`]) are public.
//!
//! Requests ask for an ACK and for the kernel's extended ACK text (NETLINK_EXT_ACK),
//! so an error can quote the kernel's own reason where it gives one; kernels without
//! extended ACKs (SL6's 2.6.32, SL7's 3.10) simply give none.

use crate::error::{Error, Kind, Result};
use netlink_packet_core::{
    NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_MULTIPART, NLM_F_REQUEST, NetlinkBuffer,
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NlasIterator,
};
use netlink_packet_route::AddressFamily;
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::address::{AddressAttribute, AddressMessage, AddressScope};
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};
use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicU32, Ordering};

/// The longest interface name the kernel takes (IFNAMSIZ less the NUL).
pub const IFNAME_MAX: usize = 15;

/// Refuse a name the kernel would refuse, with a reason a person can act on.
pub fn check_ifname(name: &str) -> Result<()> {
    let why = if name.is_empty() {
        "it is empty"
    } else if name.len() > IFNAME_MAX {
        "it is longer than 15 bytes (the kernel's IFNAMSIZ)"
    } else if name == "." || name == ".." {
        "the kernel reserves . and .."
    } else if name
        .bytes()
        .any(|b| b == b'/' || b == b':' || b.is_ascii_whitespace() || b.is_ascii_control())
    {
        "it has a '/', ':', blank or control character"
    } else {
        return Ok(());
    };
    Err(Error::invalid(format!(
        "bad interface name {name:?}: {why}"
    )))
}

// ---------------------------------------------------------------------------
// Queries (unprivileged).

/// The index of link `name` in the calling thread's network namespace, `None` when
/// there is no such link.
pub fn link_index(name: &str) -> Result<Option<u32>> {
    Ok(get_link(name)?.map(|m| m.header.index))
}

/// The MTU of link `name`, `None` when there is no such link.
pub fn link_mtu(name: &str) -> Result<Option<u32>> {
    Ok(get_link(name)?.and_then(|m| {
        m.attributes.iter().find_map(|a| match a {
            LinkAttribute::Mtu(mtu) => Some(*mtu),
            _ => None,
        })
    }))
}

/// True when link `name` is a bridge; false when it is another kind of link or
/// there is no such link (ask [`link_index`] to tell those apart).
pub fn link_is_bridge(name: &str) -> Result<bool> {
    Ok(get_link(name)?.is_some_and(|m| {
        m.attributes.iter().any(|a| match a {
            LinkAttribute::LinkInfo(infos) => infos
                .iter()
                .any(|i| matches!(i, LinkInfo::Kind(InfoKind::Bridge))),
            _ => false,
        })
    }))
}

/// The IPv4 addresses on link `name`, each with its prefix length, in the order
/// the kernel lists them (the primary address first). An error when there is no
/// such link.
pub fn link_ipv4(name: &str) -> Result<Vec<(Ipv4Addr, u8)>> {
    let index = link_index(name)?.ok_or_else(|| no_link(name))?;
    let mut m = AddressMessage::default();
    m.header.family = AddressFamily::Inet;
    let replies = Rtnl::open()?
        .request(RouteNetlinkMessage::GetAddress(m), NLM_F_DUMP)
        .map_err(|e| e.into_error(format!("list the addresses of {name}")))?;
    let mut out = Vec::new();
    for r in replies {
        let RouteNetlinkMessage::NewAddress(a) = r else {
            continue;
        };
        if a.header.index != index || a.header.family != AddressFamily::Inet {
            continue;
        }
        // IFA_LOCAL is the interface's own address; IFA_ADDRESS is the peer's on a
        // point-to-point link and equal to it elsewhere.
        let local = a.attributes.iter().find_map(|x| match x {
            AddressAttribute::Local(IpAddr::V4(v4)) => Some(*v4),
            _ => None,
        });
        let addr = local.or_else(|| {
            a.attributes.iter().find_map(|x| match x {
                AddressAttribute::Address(IpAddr::V4(v4)) => Some(*v4),
                _ => None,
            })
        });
        if let Some(v4) = addr {
            out.push((v4, a.header.prefix_len));
        }
    }
    Ok(out)
}

fn get_link(name: &str) -> Result<Option<LinkMessage>> {
    check_ifname(name)?;
    let mut m = LinkMessage::default();
    m.attributes.push(LinkAttribute::IfName(name.to_string()));
    match Rtnl::open()?.request(RouteNetlinkMessage::GetLink(m), 0) {
        Ok(replies) => Ok(replies.into_iter().find_map(|r| match r {
            RouteNetlinkMessage::NewLink(l) => Some(l),
            _ => None,
        })),
        Err(e) if e.errno() == Some(libc::ENODEV) => Ok(None),
        Err(e) => Err(e.into_error(format!("look up link {name}"))),
    }
}

// ---------------------------------------------------------------------------
// Privileged operations: only `Linux::run` calls these.

pub(super) fn bridge_add(name: &str, mtu: Option<u32>) -> Result<()> {
    check_ifname(name)?;
    let mut m = LinkMessage::default();
    m.attributes.push(LinkAttribute::IfName(name.to_string()));
    if let Some(mtu) = mtu {
        m.attributes.push(LinkAttribute::Mtu(mtu));
    }
    m.attributes
        .push(LinkAttribute::LinkInfo(vec![LinkInfo::Kind(
            InfoKind::Bridge,
        )]));
    change(RouteNetlinkMessage::NewLink(m), NLM_F_CREATE | NLM_F_EXCL).map_err(|e| {
        match e.errno() {
            Some(libc::EEXIST) => Error::new(
                Kind::Conflict,
                format!(
                    "cannot create bridge {name}: a link named {name} exists already; \
                     use it with --bridge={name} or delete it (ip link del {name})"
                ),
            ),
            Some(libc::EOPNOTSUPP) => no_driver("bridge", "bridge"),
            _ => e.into_error(format!("create bridge {name}")),
        }
    })
}

pub(super) fn veth_add(
    name: &str,
    peer: &str,
    mtu: Option<u32>,
    peer_pid: Option<u32>,
) -> Result<()> {
    check_ifname(name)?;
    check_ifname(peer)?;
    // Both ends get the MTU at birth, so the bridge never sees a port larger than
    // itself (a bridge that did would shrink or drop frames).
    let mut p = LinkMessage::default();
    p.attributes.push(LinkAttribute::IfName(peer.to_string()));
    if let Some(pid) = peer_pid {
        p.attributes.push(LinkAttribute::NetNsPid(pid));
    }
    let mut m = LinkMessage::default();
    m.attributes.push(LinkAttribute::IfName(name.to_string()));
    if let Some(mtu) = mtu {
        p.attributes.push(LinkAttribute::Mtu(mtu));
        m.attributes.push(LinkAttribute::Mtu(mtu));
    }
    m.attributes.push(LinkAttribute::LinkInfo(vec![
        LinkInfo::Kind(InfoKind::Veth),
        LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(p))),
    ]));
    change(RouteNetlinkMessage::NewLink(m), NLM_F_CREATE | NLM_F_EXCL).map_err(|e| {
        match e.errno() {
            Some(libc::EEXIST) => Error::new(
                Kind::Conflict,
                format!(
                    "cannot create veth {name} (peer {peer}): a link of that name exists \
                     already; delete the stale one (ip link del {name}; ip link del {peer})"
                ),
            ),
            Some(libc::EOPNOTSUPP) => no_driver("veth", "veth"),
            _ => e.into_error(format!("create veth {name} with peer {peer}")),
        }
    })
}

pub(super) fn link_set_master(name: &str, master: &str) -> Result<()> {
    let index = existing(name)?;
    let Some(master_index) = link_index(master)? else {
        return Err(Error::not_found(format!(
            "bridge {master} does not exist: create it (the site's Ansible role does) \
             or drop --bridge"
        )));
    };
    let mut m = link_msg(index);
    m.attributes.push(LinkAttribute::Controller(master_index));
    change(RouteNetlinkMessage::SetLink(m), 0).map_err(|e| match e.errno() {
        Some(libc::EOPNOTSUPP) | Some(libc::EINVAL) if !link_is_bridge(master).unwrap_or(true) => {
            Error::new(
                Kind::Invalid,
                format!("cannot attach {name} to {master}: {master} is not a bridge"),
            )
        }
        _ => e.into_error(format!("attach {name} to bridge {master}")),
    })
}

pub(super) fn link_up(name: &str) -> Result<()> {
    let mut m = link_msg(existing(name)?);
    m.header.flags = LinkFlags::Up;
    m.header.change_mask = LinkFlags::Up;
    change(RouteNetlinkMessage::SetLink(m), 0).map_err(|e| e.into_error(format!("bring {name} up")))
}

pub(super) fn link_no_ipv6(name: &str) -> Result<()> {
    use netlink_packet_route::link::{AfSpecInet6, AfSpecUnspec, In6AddrGenMode};
    let mut m = link_msg(existing(name)?);
    m.attributes
        .push(LinkAttribute::AfSpecUnspec(vec![AfSpecUnspec::Inet6(
            vec![AfSpecInet6::AddrGenMode(In6AddrGenMode::None)],
        )]));
    match change(RouteNetlinkMessage::SetLink(m), 0) {
        Err(e) if e.errno() == Some(libc::EAFNOSUPPORT) => Ok(()),
        r => r.map_err(|e| e.into_error(format!("turn IPv6 off on {name}"))),
    }
}

pub(super) fn link_del(name: &str) -> Result<()> {
    let m = link_msg(existing(name)?);
    change(RouteNetlinkMessage::DelLink(m), 0)
        .map_err(|e| e.into_error(format!("delete link {name}")))
}

pub(super) fn link_set_netns(name: &str, pid: u32) -> Result<()> {
    let mut m = link_msg(existing(name)?);
    m.attributes.push(LinkAttribute::NetNsPid(pid));
    change(RouteNetlinkMessage::SetLink(m), 0).map_err(|e| match e.errno() {
        Some(libc::ESRCH) => Error::not_found(format!(
            "cannot move {name}: there is no process {pid} (did the container exit?)"
        )),
        Some(libc::EEXIST) => Error::new(
            Kind::Conflict,
            format!(
                "cannot move {name} into the network namespace of process {pid}: \
                 a link of that name is there already"
            ),
        ),
        _ => e.into_error(format!(
            "move {name} into the network namespace of process {pid}"
        )),
    })
}

pub(super) fn link_rename(name: &str, new: &str) -> Result<()> {
    check_ifname(new)?;
    let mut m = link_msg(existing(name)?);
    m.attributes.push(LinkAttribute::IfName(new.to_string()));
    change(RouteNetlinkMessage::SetLink(m), 0).map_err(|e| match e.errno() {
        Some(libc::EEXIST) => Error::new(
            Kind::Conflict,
            format!("cannot rename {name} to {new}: a link named {new} exists already"),
        ),
        // Kernels before 6.9 refuse to rename a link that is up.
        Some(libc::EBUSY) => Error::new(
            Kind::Conflict,
            format!(
                "cannot rename {name} to {new}: {name} is up (rename it before bringing it up)"
            ),
        ),
        _ => e.into_error(format!("rename {name} to {new}")),
    })
}

pub(super) fn link_set_mtu(name: &str, mtu: u32) -> Result<()> {
    let mut m = link_msg(existing(name)?);
    m.attributes.push(LinkAttribute::Mtu(mtu));
    change(RouteNetlinkMessage::SetLink(m), 0).map_err(|e| match e.errno() {
        Some(libc::EINVAL) => Error::invalid(format!(
            "cannot set the MTU of {name} to {mtu}: the link does not take it \
             (too small or above its maximum); pick an MTU such as 1500{}",
            e.ext_suffix()
        )),
        _ => e.into_error(format!("set the MTU of {name} to {mtu}")),
    })
}

pub(super) fn addr_add(link: &str, addr: IpAddr, prefix: u8) -> Result<()> {
    let max = if addr.is_ipv4() { 32 } else { 128 };
    if prefix > max {
        return Err(Error::invalid(format!(
            "bad address {addr}/{prefix}: the prefix length must be 0 to {max}"
        )));
    }
    let index = existing(link)?;
    let mut m = AddressMessage::default();
    m.header.family = match addr {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    };
    m.header.prefix_len = prefix;
    m.header.scope = AddressScope::Universe;
    m.header.index = index;
    // As `ip addr add` does: IFA_LOCAL is the address, IFA_ADDRESS the same on a
    // link without a peer.
    m.attributes.push(AddressAttribute::Local(addr));
    m.attributes.push(AddressAttribute::Address(addr));
    if let IpAddr::V4(v4) = addr
        && prefix < 31
    {
        // `ip addr add … brd +`: the subnet's broadcast, as Docker sets it.
        let host_bits = u32::MAX >> prefix;
        m.attributes
            .push(AddressAttribute::Broadcast(Ipv4Addr::from(
                u32::from(v4) | host_bits,
            )));
    }
    change(
        RouteNetlinkMessage::NewAddress(m),
        NLM_F_CREATE | NLM_F_EXCL,
    )
    .map_err(|e| match e.errno() {
        Some(libc::EEXIST) => Error::new(
            Kind::Conflict,
            format!("cannot add {addr}/{prefix} to {link}: it is there already"),
        ),
        _ => e.into_error(format!("add address {addr}/{prefix} to {link}")),
    })
}

pub(super) fn route_add_default(via: Ipv4Addr) -> Result<()> {
    let mut m = RouteMessage::default();
    m.header = RouteHeader {
        address_family: AddressFamily::Inet,
        destination_prefix_length: 0,
        table: RouteHeader::RT_TABLE_MAIN,
        // RTPROT_BOOT, as `ip route add` marks a route set up by hand or script.
        protocol: RouteProtocol::Boot,
        scope: RouteScope::Universe,
        kind: RouteType::Unicast,
        ..RouteHeader::default()
    };
    m.attributes
        .push(RouteAttribute::Gateway(RouteAddress::Inet(via)));
    change(RouteNetlinkMessage::NewRoute(m), NLM_F_CREATE | NLM_F_EXCL).map_err(|e| {
        match e.errno() {
            Some(libc::EEXIST) => Error::new(
                Kind::Conflict,
                format!("cannot add a default route via {via}: there is a default route already"),
            ),
            Some(libc::ENETUNREACH) | Some(libc::ENETDOWN) => Error::new(
                Kind::Network,
                format!(
                    "cannot add a default route via {via}: no link that is up has an \
                     address in {via}'s subnet (add the address and bring the link up first)"
                ),
            ),
            _ => e.into_error(format!("add a default route via {via}")),
        }
    })
}

/// The index of `name`, or an error saying it is not in this namespace.
fn existing(name: &str) -> Result<u32> {
    link_index(name)?.ok_or_else(|| no_link(name))
}

fn no_link(name: &str) -> Error {
    Error::not_found(format!("no link {name} in this network namespace"))
}

fn no_driver(kind: &str, module: &str) -> Error {
    Error::new(
        Kind::Unsupported,
        format!("the kernel has no {kind} driver: load it (modprobe {module})"),
    )
}

fn link_msg(index: u32) -> LinkMessage {
    let mut m = LinkMessage::default();
    m.header.index = index;
    m
}

/// Send a change request and wait for its ACK.
fn change(msg: RouteNetlinkMessage, flags: u16) -> std::result::Result<(), NlError> {
    Rtnl::open()
        .map_err(NlError::Local)?
        .request(msg, flags | NLM_F_ACK)
        .map(drop)
}

// ---------------------------------------------------------------------------
// The request/ACK helper.

/// A failed netlink request.
#[derive(Debug)]
enum NlError {
    /// The kernel's NACK (or the socket's errno), with the kernel's extended-ACK
    /// text when it sent one.
    Os { io: io::Error, ext: Option<String> },
    /// Our side failed before there was an answer to read.
    Local(Error),
}

impl NlError {
    fn os(io: io::Error) -> Self {
        NlError::Os { io, ext: None }
    }

    fn errno(&self) -> Option<i32> {
        match self {
            NlError::Os { io, .. } => io.raw_os_error(),
            NlError::Local(_) => None,
        }
    }

    fn ext_suffix(&self) -> String {
        match self {
            NlError::Os { ext: Some(t), .. } => format!(" (kernel: {t})"),
            _ => String::new(),
        }
    }

    /// One line: what failed, the kernel's reason, and a hint where one helps.
    fn into_error(self, what: String) -> Error {
        let hint = match self.errno() {
            Some(libc::EPERM) => " (needs root or CAP_NET_ADMIN in this network namespace)",
            _ => "",
        };
        let ext = self.ext_suffix();
        match self {
            NlError::Os { io, .. } => Error::from(io).context(format!("{what}{hint}{ext}")),
            NlError::Local(e) => e.context(what),
        }
    }
}

/// One NETLINK_ROUTE socket, opened in the calling thread's network namespace.
struct Rtnl {
    sock: Socket,
}

static SEQ: AtomicU32 = AtomicU32::new(1);

const NETLINK_EXT_ACK_ATTR_MSG: u16 = 1;
const NLM_F_CAPPED: u16 = 0x100;
const NLM_F_ACK_TLVS: u16 = 0x200;

impl Rtnl {
    fn open() -> Result<Rtnl> {
        let mut sock = Socket::new(NETLINK_ROUTE)
            .map_err(|e| Error::from(e).context("open a netlink socket"))?;
        sock.bind_auto()
            .map_err(|e| Error::from(e).context("bind a netlink socket"))?;
        sock.connect(&SocketAddr::new(0, 0))
            .map_err(|e| Error::from(e).context("connect a netlink socket"))?;
        // Best effort: older kernels lack both options and still answer.
        let _ = sock.set_ext_ack(true);
        let _ = sock.set_cap_ack(true);
        Ok(Rtnl { sock })
    }

    /// Send `msg` with NLM_F_REQUEST|`flags` and collect the kernel's answers:
    /// up to the ACK (NLM_F_ACK), the end of a dump (NLM_F_DUMP), or the single
    /// reply of a plain get.
    fn request(
        &self,
        msg: RouteNetlinkMessage,
        flags: u16,
    ) -> std::result::Result<Vec<RouteNetlinkMessage>, NlError> {
        let seq = SEQ.fetch_add(1, Ordering::Relaxed);
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | flags;
        header.sequence_number = seq;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(msg));
        packet.finalize();
        let mut buf = vec![0u8; packet.buffer_len()];
        packet.serialize(&mut buf);
        self.sock.send(&buf, 0).map_err(NlError::os)?;

        let wants_ack = flags & NLM_F_ACK != 0;
        let mut out = Vec::new();
        loop {
            let (data, _) = self.sock.recv_from_full().map_err(NlError::os)?;
            let mut off = 0;
            while off + 16 <= data.len() {
                let len = match NetlinkBuffer::new_checked(&data[off..]) {
                    Ok(b) => b.length() as usize,
                    Err(_) => break,
                };
                if len < 16 || off + len > data.len() {
                    break;
                }
                let raw = &data[off..off + len];
                off += (len + 3) & !3;
                let parsed = NetlinkMessage::<RouteNetlinkMessage>::deserialize(raw);
                let m = match parsed {
                    Ok(m) => m,
                    Err(e) => {
                        return Err(NlError::Local(Error::new(
                            Kind::Internal,
                            format!("unreadable netlink answer: {e}"),
                        )));
                    }
                };
                if m.header.sequence_number != seq {
                    // An answer to someone else's request: not ours to read.
                    continue;
                }
                let reply_flags = m.header.flags;
                match m.payload {
                    NetlinkPayload::Error(err) => {
                        let Some(code) = err.code else {
                            return Ok(out);
                        };
                        return Err(NlError::Os {
                            io: io::Error::from_raw_os_error(code.get().abs()),
                            ext: ext_ack_text(reply_flags, &err.header),
                        });
                    }
                    NetlinkPayload::Done(_) => return Ok(out),
                    NetlinkPayload::InnerMessage(inner) => {
                        out.push(inner);
                        if reply_flags & NLM_F_MULTIPART == 0 && !wants_ack {
                            return Ok(out);
                        }
                    }
                    _ => {}
                }
            }
        }
    }
}

/// The kernel's extended-ACK message in an NLMSG_ERROR's payload: after the
/// echoed request (only its header when the ACK is capped) come attributes, of
/// which NLMSGERR_ATTR_MSG is a NUL-terminated reason.
fn ext_ack_text(flags: u16, payload: &[u8]) -> Option<String> {
    if flags & NLM_F_ACK_TLVS == 0 || payload.len() < 16 {
        return None;
    }
    let echoed = if flags & NLM_F_CAPPED != 0 {
        16
    } else {
        let len = u32::from_ne_bytes(payload[0..4].try_into().ok()?) as usize;
        (len + 3) & !3
    };
    let tlvs = payload.get(echoed..)?;
    for nla in NlasIterator::new(tlvs) {
        let nla = nla.ok()?;
        if nla.kind() == NETLINK_EXT_ACK_ATTR_MSG {
            let v = nla.value();
            let end = v.iter().position(|&b| b == 0).unwrap_or(v.len());
            let text = String::from_utf8_lossy(&v[..end]).trim().to_string();
            return (!text.is_empty()).then_some(text);
        }
    }
    None
}

// ---------------------------------------------------------------------------
// Test support: threads in network namespaces of their own.

/// A thread that has unshared its network namespace (through the Sys seam) and
/// runs closures there. Links made inside vanish with the namespace when the
/// thread ends, so tests never touch the host's network. Its thread id is a valid
/// `LinkSetNetns` pid: the kernel looks the id up as a task, and a thread is one.
#[cfg(test)]
pub(crate) struct NetNs {
    jobs: Option<std::sync::mpsc::Sender<Box<dyn FnOnce() + Send>>>,
    tid: u32,
    thread: Option<std::thread::JoinHandle<()>>,
}

#[cfg(test)]
impl NetNs {
    pub(crate) fn new() -> NetNs {
        use std::sync::mpsc;
        let (jobs, rx) = mpsc::channel::<Box<dyn FnOnce() + Send>>();
        let (ready_tx, ready) = mpsc::channel();
        let thread = std::thread::spawn(move || {
            let r = super::apply(&super::Linux, &[super::Op::Unshare(libc::CLONE_NEWNET)])
                .map(|()| nix::unistd::gettid().as_raw() as u32);
            let ok = r.is_ok();
            let _ = ready_tx.send(r);
            if ok {
                for job in rx {
                    job();
                }
            }
        });
        let tid = ready
            .recv_timeout(std::time::Duration::from_secs(120))
            .expect("the namespace thread answered")
            .expect("unshare(CLONE_NEWNET) (the tests run as root)");
        NetNs {
            jobs: Some(jobs),
            tid,
            thread: Some(thread),
        }
    }

    pub(crate) fn tid(&self) -> u32 {
        self.tid
    }

    /// Run `f` in the namespace and return its result (a panic in `f` is re-raised
    /// here, so assertions inside fail the test).
    pub(crate) fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let (tx, rx) = std::sync::mpsc::channel();
        let job = Box::new(move || {
            let _ = tx.send(std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)));
        });
        self.jobs
            .as_ref()
            .unwrap()
            .send(job)
            .expect("namespace thread alive");
        match rx
            .recv_timeout(std::time::Duration::from_secs(120))
            .expect("the namespace thread finished the job")
        {
            Ok(v) => v,
            Err(p) => std::panic::resume_unwind(p),
        }
    }
}

#[cfg(test)]
impl Drop for NetNs {
    fn drop(&mut self) {
        self.jobs.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Linux, Op, apply};
    use super::*;

    fn run(ops: &[Op]) -> Result<()> {
        apply(&Linux, ops)
    }

    #[test]
    fn interface_names_are_checked_like_the_kernel_does() {
        check_ifname("eth0").unwrap();
        check_ifname("veth0123456789a").unwrap();
        let e = check_ifname("veth0123456789ab").unwrap_err();
        assert_eq!(
            e.to_string(),
            "bad interface name \"veth0123456789ab\": it is longer than 15 bytes (the kernel's IFNAMSIZ)"
        );
        assert_eq!(e.kind(), Kind::Invalid);
        for bad in ["", ".", "..", "a/b", "a b", "a:1", "a\n"] {
            assert!(check_ifname(bad).is_err(), "{bad:?} accepted");
        }
        // A bad name never reaches the kernel.
        let ns = NetNs::new();
        let e = ns
            .run(|| {
                run(&[Op::BridgeAdd {
                    name: "a-very-long-bridge".into(),
                    mtu: None,
                }])
            })
            .unwrap_err();
        assert!(e.to_string().contains("longer than 15 bytes"), "{e}");
    }

    #[test]
    fn bridge_add_makes_a_bridge_with_the_mtu_and_refuses_a_second() {
        let ns = NetNs::new();
        ns.run(|| {
            assert_eq!(link_index("br-t1").unwrap(), None);
            assert!(!link_is_bridge("br-t1").unwrap());
            run(&[Op::BridgeAdd {
                name: "br-t1".into(),
                mtu: Some(1450),
            }])
            .unwrap();
            assert!(link_index("br-t1").unwrap().is_some());
            assert!(link_is_bridge("br-t1").unwrap());
            assert_eq!(link_mtu("br-t1").unwrap(), Some(1450));
            assert!(!link_is_bridge("lo").unwrap(), "lo is no bridge");

            let e = run(&[Op::BridgeAdd {
                name: "br-t1".into(),
                mtu: None,
            }])
            .unwrap_err();
            assert_eq!(e.kind(), Kind::Conflict);
            assert!(
                e.to_string()
                    .contains("cannot create bridge br-t1: a link named br-t1 exists already"),
                "{e}"
            );
        });
        // The host's namespace never saw it.
        assert_eq!(link_index("br-t1").unwrap(), None);
    }

    #[test]
    fn attaching_to_a_missing_bridge_says_what_to_do() {
        let ns = NetNs::new();
        ns.run(|| {
            run(&[Op::VethAdd {
                name: "vt-a".into(),
                peer: "vt-b".into(),
                mtu: None,
                peer_pid: None,
            }])
            .unwrap();
            let e = run(&[Op::LinkSetMaster {
                name: "vt-a".into(),
                master: "br0".into(),
            }])
            .unwrap_err();
            assert_eq!(e.kind(), Kind::NotFound);
            assert_eq!(
                e.to_string(),
                "step 1 (set vt-a master br0): bridge br0 does not exist: create it \
                 (the site's Ansible role does) or drop --bridge"
            );
            // A master that is not a bridge is named as such.
            let e = run(&[Op::LinkSetMaster {
                name: "vt-a".into(),
                master: "vt-b".into(),
            }])
            .unwrap_err();
            assert!(e.to_string().contains("vt-b is not a bridge"), "{e}");
            // Ops on a link that is not there name it and the namespace.
            let e = run(&[Op::LinkUp {
                name: "nope0".into(),
            }])
            .unwrap_err();
            assert_eq!(e.kind(), Kind::NotFound);
            assert!(
                e.to_string()
                    .ends_with("no link nope0 in this network namespace"),
                "{e}"
            );
        });
    }

    #[test]
    fn link_del_removes_both_ends_of_a_veth() {
        let ns = NetNs::new();
        ns.run(|| {
            run(&[Op::VethAdd {
                name: "vd-a".into(),
                peer: "vd-b".into(),
                mtu: Some(1400),
                peer_pid: None,
            }])
            .unwrap();
            assert_eq!(link_mtu("vd-a").unwrap(), Some(1400));
            assert_eq!(link_mtu("vd-b").unwrap(), Some(1400));
            run(&[Op::LinkDel {
                name: "vd-a".into(),
            }])
            .unwrap();
            assert_eq!(link_index("vd-a").unwrap(), None);
            assert_eq!(link_index("vd-b").unwrap(), None);
            let e = run(&[Op::LinkDel {
                name: "vd-a".into(),
            }])
            .unwrap_err();
            assert!(e.to_string().contains("no link vd-a"), "{e}");
        });
    }

    #[test]
    fn rename_mtu_address_and_route_read_back() {
        let ns = NetNs::new();
        ns.run(|| {
            run(&[
                Op::VethAdd {
                    name: "vr-a".into(),
                    peer: "vr-b".into(),
                    mtu: None,
                    peer_pid: None,
                },
                Op::LinkRename {
                    name: "vr-b".into(),
                    new: "eth0".into(),
                },
                Op::LinkSetMtu {
                    name: "eth0".into(),
                    mtu: 1380,
                },
                Op::AddrAdd {
                    link: "eth0".into(),
                    addr: "10.0.7.9".parse().unwrap(),
                    prefix: 24,
                },
                Op::AddrAdd {
                    link: "eth0".into(),
                    addr: "10.0.8.9".parse().unwrap(),
                    prefix: 25,
                },
            ])
            .unwrap();
            assert_eq!(link_index("vr-b").unwrap(), None);
            assert_eq!(link_mtu("eth0").unwrap(), Some(1380));
            assert_eq!(
                link_ipv4("eth0").unwrap(),
                vec![
                    ("10.0.7.9".parse().unwrap(), 24),
                    ("10.0.8.9".parse().unwrap(), 25)
                ]
            );
            assert!(link_ipv4("vr-a").unwrap().is_empty());
            // The kernel's own reason comes along (extended ACKs, Linux 4.12 on).
            let e = run(&[Op::LinkSetMtu {
                name: "eth0".into(),
                mtu: 10,
            }])
            .unwrap_err();
            assert_eq!(e.kind(), Kind::Invalid);
            assert!(
                e.to_string().contains("cannot set the MTU of eth0 to 10")
                    && e.to_string().contains("(kernel: "),
                "{e}"
            );
            assert_eq!(link_mtu("eth0").unwrap(), Some(1380));
            assert_eq!(link_ipv4("nope0").unwrap_err().kind(), Kind::NotFound);

            // Renaming onto an existing name, a duplicate address, and a route whose
            // gateway is on no up link all say what is wrong.
            let e = run(&[Op::LinkRename {
                name: "eth0".into(),
                new: "vr-a".into(),
            }])
            .unwrap_err();
            assert!(
                e.to_string().contains("a link named vr-a exists already"),
                "{e}"
            );
            let e = run(&[Op::AddrAdd {
                link: "eth0".into(),
                addr: "10.0.7.9".parse().unwrap(),
                prefix: 24,
            }])
            .unwrap_err();
            assert!(
                e.to_string()
                    .contains("cannot add 10.0.7.9/24 to eth0: it is there already"),
                "{e}"
            );
            let e = run(&[Op::RouteAddDefault {
                via: "10.0.7.1".parse().unwrap(),
            }])
            .unwrap_err();
            assert!(e.to_string().contains("no link that is up"), "{e}");

            // Up (the peer too, for carrier), then the default route goes in.
            run(&[
                Op::LinkUp {
                    name: "eth0".into(),
                },
                Op::LinkUp {
                    name: "vr-a".into(),
                },
                Op::RouteAddDefault {
                    via: "10.0.7.1".parse().unwrap(),
                },
            ])
            .unwrap();
            let e = run(&[Op::RouteAddDefault {
                via: "10.0.7.1".parse().unwrap(),
            }])
            .unwrap_err();
            assert!(
                e.to_string().contains("there is a default route already"),
                "{e}"
            );
            // The kernel now routes an outside address through the gateway: a UDP
            // connect picks the route and sends nothing.
            let s = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
            s.connect("192.0.2.1:9").unwrap();
            assert_eq!(
                s.local_addr().unwrap().ip(),
                "10.0.7.9".parse::<IpAddr>().unwrap()
            );
        });
    }

    #[test]
    fn link_set_netns_moves_a_link_into_another_namespace() {
        let a = NetNs::new();
        let b = NetNs::new();
        let to = b.tid();
        a.run(move || {
            run(&[
                Op::VethAdd {
                    name: "vn-a".into(),
                    peer: "vn-b".into(),
                    mtu: Some(1420),
                    peer_pid: None,
                },
                Op::LinkSetNetns {
                    name: "vn-b".into(),
                    pid: to,
                },
            ])
            .unwrap();
            assert_eq!(link_index("vn-b").unwrap(), None, "gone from here");
            assert!(link_index("vn-a").unwrap().is_some());
        });
        b.run(|| {
            assert!(link_index("vn-b").unwrap().is_some(), "arrived there");
            assert_eq!(link_mtu("vn-b").unwrap(), Some(1420), "with its MTU");
            assert_eq!(link_index("vn-a").unwrap(), None);
        });
    }

    #[test]
    fn moving_a_link_to_a_process_that_is_gone_names_it() {
        let ns = NetNs::new();
        ns.run(|| {
            run(&[Op::VethAdd {
                name: "vm-a".into(),
                peer: "vm-b".into(),
                mtu: None,
                peer_pid: None,
            }])
            .unwrap();
            // pid_max is at most 2^22: this pid cannot exist.
            let e = run(&[Op::LinkSetNetns {
                name: "vm-b".into(),
                pid: 1 << 23,
            }])
            .unwrap_err();
            assert_eq!(e.kind(), Kind::NotFound);
            assert!(e.to_string().contains("there is no process 8388608"), "{e}");
        });
    }

    #[test]
    fn ext_ack_text_is_read_after_the_echoed_header() {
        // A capped NACK: 16 bytes of echoed header, then NLMSGERR_ATTR_MSG.
        let mut p = vec![0u8; 16];
        let msg = b"Unknown device type\0";
        let len = 4 + msg.len();
        p.extend_from_slice(&(len as u16).to_ne_bytes());
        p.extend_from_slice(&NETLINK_EXT_ACK_ATTR_MSG.to_ne_bytes());
        p.extend_from_slice(msg);
        while !p.len().is_multiple_of(4) {
            p.push(0);
        }
        assert_eq!(
            ext_ack_text(NLM_F_CAPPED | NLM_F_ACK_TLVS, &p).as_deref(),
            Some("Unknown device type")
        );
        assert_eq!(ext_ack_text(NLM_F_CAPPED, &p), None, "no TLV flag, no text");
    }
}

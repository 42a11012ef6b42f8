//! The Sys seam: every privileged system call berth makes (mount, pivot_root,
//! unshare/setns, sethostname, mknod, chroot, chown, and the network's netlink
//! requests) goes through [`Sys`].
//!
//! Code that sets up a root filesystem or a container builds a *plan* — a list of
//! [`Op`]s — and applies it in a dumb loop with [`apply`]. Unit tests check plans
//! as data with [`Recorder`], without root; the integration tests run the real
//! thing through [`Linux`]. This is youki's pattern: the interesting decisions
//! are in plain functions, the syscalls in one small, boring place.

pub mod caps;
pub mod netlink;

use crate::error::{Context, Error, Result};
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Kind of device node for mknod.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeKind {
    Char,
    Block,
    Fifo,
}

/// One privileged operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    SetHostname(String),
    Mknod {
        path: PathBuf,
        kind: NodeKind,
        mode: u32,
        major: u64,
        minor: u64,
    },
    Chown {
        path: PathBuf,
        uid: u32,
        gid: u32,
    },
    Chroot(PathBuf),
    /// mount(2): `source`, `target`, filesystem type, flags (MS_*), data.
    Mount {
        source: Option<PathBuf>,
        target: PathBuf,
        fstype: Option<String>,
        flags: u64,
        data: Option<String>,
    },
    Umount {
        target: PathBuf,
        detach: bool,
    },
    PivotRoot {
        new_root: PathBuf,
        put_old: PathBuf,
    },
    /// unshare(2) with CLONE_* flags.
    Unshare(i32),
    /// setns(2) into the namespace file at `path` (CLONE_* `nstype`, 0 for any).
    Setns {
        path: PathBuf,
        nstype: i32,
    },
    /// chdir(2): part of plans because pivot_root works on the current directory.
    Chdir(PathBuf),
    /// setgroups, setgid, setuid, in that order (a process about to exec).
    SetIds {
        uid: u32,
        gid: u32,
        groups: Vec<u32>,
    },
    /// Shrink the bounding set to these capabilities (a mask, see [`caps`]).
    /// Before [`Op::SetIds`]: dropping needs CAP_SETPCAP, which a change to
    /// another user takes away.
    BoundingSet(u64),
    /// Keep only these capabilities in the effective, permitted and
    /// inheritable sets and clear the ambient one. After [`Op::SetIds`]:
    /// setgroups and setgid need CAP_SETGID, which the container may not keep
    /// (runc's order: bounding set, user, capabilities).
    Capabilities(u64),
    /// prctl(PR_SET_NO_NEW_PRIVS): exec can never gain privileges again.
    NoNewPrivs,
    /// prctl(PR_SET_PDEATHSIG): this signal when the parent ends (kept across
    /// exec of an ordinary binary).
    ParentDeathSignal(i32),

    /// mkdir(2) with this mode (existing directories are fine); for mount
    /// points in file systems a plan has just mounted.
    Mkdir {
        path: PathBuf,
        mode: u32,
    },
    /// symlink(2) (an existing entry is an error).
    Symlink {
        target: PathBuf,
        link: PathBuf,
    },
    // The network ops act in the network namespace of the calling thread.
    /// Create a bridge; an error naming it if a link of that name exists.
    BridgeAdd {
        name: String,
        mtu: Option<u32>,
    },
    /// Create a veth pair `name` <-> `peer`, both ends with `mtu`; with
    /// `peer_pid` the peer is born in that process's network namespace (no move
    /// afterwards, which costs the kernel a network-wide synchronisation).
    VethAdd {
        name: String,
        peer: String,
        mtu: Option<u32>,
        peer_pid: Option<u32>,
    },
    /// Enslave link `name` to bridge `master`.
    LinkSetMaster {
        name: String,
        master: String,
    },
    LinkUp {
        name: String,
    },
    /// No IPv6 address on the link, not even a link-local one (address
    /// generation mode "none"; nothing to do on a kernel without IPv6). Set
    /// before the link comes up.
    LinkNoIpv6 {
        name: String,
    },
    /// Delete a link (for a veth, both ends go).
    LinkDel {
        name: String,
    },
    /// Move link `name` into the network namespace of process `pid`.
    LinkSetNetns {
        name: String,
        pid: u32,
    },
    /// Rename a link (it must be down).
    LinkRename {
        name: String,
        new: String,
    },
    LinkSetMtu {
        name: String,
        mtu: u32,
    },
    /// Add `addr`/`prefix` to `link` (for IPv4 with the subnet's broadcast).
    AddrAdd {
        link: String,
        addr: IpAddr,
        prefix: u8,
    },
    /// Add the IPv4 default route via a gateway on an up link's subnet.
    RouteAddDefault {
        via: Ipv4Addr,
    },
}

/// The seam.
pub trait Sys: Send + Sync {
    fn run(&self, op: &Op) -> Result<()>;
}

/// Whether the kernel has no_new_privs (Linux 3.5; not SL6's 2.6.32): an
/// older one answers EINVAL to the option. Any other answer counts as having
/// it, so setting it then fails loudly rather than being skipped.
pub fn has_no_new_privs() -> bool {
    // SAFETY: prctl with integer arguments, reading a flag of our own process.
    let rc = unsafe { libc::prctl(libc::PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) };
    rc >= 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::EINVAL)
}

/// Apply a plan in order, stopping at the first failure (named with its step).
pub fn apply(sys: &dyn Sys, plan: &[Op]) -> Result<()> {
    for (i, op) in plan.iter().enumerate() {
        sys.run(op)
            .map_err(|e| e.context(format!("step {} ({})", i + 1, describe(op))))?;
    }
    Ok(())
}

/// A short human description of an operation, for errors and logs.
pub fn describe(op: &Op) -> String {
    match op {
        Op::SetHostname(h) => format!("sethostname {h}"),
        Op::Mknod { path, .. } => format!("mknod {}", path.display()),
        Op::Chown { path, uid, gid } => format!("chown {uid}:{gid} {}", path.display()),
        Op::Chroot(p) => format!("chroot {}", p.display()),
        Op::Mount {
            source,
            target,
            fstype,
            ..
        } => format!(
            "mount {} on {} ({})",
            source
                .as_deref()
                .map(|s| s.display().to_string())
                .unwrap_or_else(|| "none".into()),
            target.display(),
            fstype.as_deref().unwrap_or("bind")
        ),
        Op::Umount { target, .. } => format!("umount {}", target.display()),
        Op::PivotRoot { new_root, .. } => format!("pivot_root {}", new_root.display()),
        Op::Unshare(f) => format!("unshare {f:#x}"),
        Op::Setns { path, .. } => format!("setns {}", path.display()),
        Op::Chdir(p) => format!("chdir {}", p.display()),
        Op::SetIds { uid, gid, groups } => format!("set uid {uid} gid {gid} groups {groups:?}"),
        Op::BoundingSet(m) => format!("bounding set {}", caps::names(*m).join(",")),
        Op::Capabilities(m) => format!("capabilities {}", caps::names(*m).join(",")),
        Op::NoNewPrivs => "no_new_privs".to_string(),
        Op::ParentDeathSignal(s) => format!("signal {s} on the parent's death"),
        Op::Mkdir { path, .. } => format!("mkdir {}", path.display()),
        Op::Symlink { target, link } => {
            format!("symlink {} -> {}", link.display(), target.display())
        }
        Op::BridgeAdd { name, mtu } => match mtu {
            Some(m) => format!("add bridge {name} mtu {m}"),
            None => format!("add bridge {name}"),
        },
        Op::VethAdd {
            name,
            peer,
            mtu,
            peer_pid,
        } => {
            let mut d = format!("add veth {name} peer {peer}");
            if let Some(m) = mtu {
                d.push_str(&format!(" mtu {m}"));
            }
            if let Some(p) = peer_pid {
                d.push_str(&format!(" (peer in the netns of pid {p})"));
            }
            d
        }
        Op::LinkSetMaster { name, master } => format!("set {name} master {master}"),
        Op::LinkUp { name } => format!("set {name} up"),
        Op::LinkNoIpv6 { name } => format!("no IPv6 addresses on {name}"),
        Op::LinkDel { name } => format!("delete link {name}"),
        Op::LinkSetNetns { name, pid } => format!("move {name} to the netns of pid {pid}"),
        Op::LinkRename { name, new } => format!("rename {name} to {new}"),
        Op::LinkSetMtu { name, mtu } => format!("set {name} mtu {mtu}"),
        Op::AddrAdd { link, addr, prefix } => format!("add address {addr}/{prefix} to {link}"),
        Op::RouteAddDefault { via } => format!("add default route via {via}"),
    }
}

/// The real system.
pub struct Linux;

impl Sys for Linux {
    fn run(&self, op: &Op) -> Result<()> {
        use nix::sys::stat::{Mode, SFlag, makedev, mknod};
        match op {
            Op::SetHostname(h) => nix::unistd::sethostname(h).map_err(|e| errno("sethostname", e)),
            Op::Mknod {
                path,
                kind,
                mode,
                major,
                minor,
            } => {
                let k = match kind {
                    NodeKind::Char => SFlag::S_IFCHR,
                    NodeKind::Block => SFlag::S_IFBLK,
                    NodeKind::Fifo => SFlag::S_IFIFO,
                };
                mknod(
                    path.as_path(),
                    k,
                    Mode::from_bits_truncate(*mode),
                    makedev(*major, *minor),
                )
                .map_err(|e| errno(&format!("mknod {}", path.display()), e))?;
                // mknod applies the umask; the plan's mode is what we want.
                std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(*mode))
                    .context(path.display())
            }
            Op::Chown { path, uid, gid } => std::os::unix::fs::lchown(path, Some(*uid), Some(*gid))
                .with_context(|| format!("chown {}", path.display())),
            Op::Chroot(p) => {
                nix::unistd::chroot(p.as_path())
                    .map_err(|e| errno(&format!("chroot {}", p.display()), e))?;
                std::env::set_current_dir("/").context("chdir /")
            }
            Op::Mount {
                source,
                target,
                fstype,
                flags,
                data,
            } => nix::mount::mount(
                source.as_deref(),
                target.as_path(),
                fstype.as_deref(),
                nix::mount::MsFlags::from_bits_truncate(*flags as _),
                data.as_deref(),
            )
            .map_err(|e| errno(&describe(op), e)),
            Op::Umount { target, detach } => {
                let f = if *detach {
                    nix::mount::MntFlags::MNT_DETACH
                } else {
                    nix::mount::MntFlags::empty()
                };
                nix::mount::umount2(target.as_path(), f).map_err(|e| errno(&describe(op), e))
            }
            Op::PivotRoot { new_root, put_old } => {
                nix::unistd::pivot_root(new_root.as_path(), put_old.as_path())
                    .map_err(|e| errno(&describe(op), e))
            }
            Op::Unshare(flags) => {
                nix::sched::unshare(nix::sched::CloneFlags::from_bits_truncate(*flags))
                    .map_err(|e| errno("unshare", e))
            }
            Op::Setns { path, nstype } => {
                let f = std::fs::File::open(path)
                    .with_context(|| format!("open {}", path.display()))?;
                nix::sched::setns(f, nix::sched::CloneFlags::from_bits_truncate(*nstype))
                    .map_err(|e| errno(&describe(op), e))
            }
            Op::Chdir(p) => std::env::set_current_dir(p).with_context(|| describe(op)),
            Op::SetIds { uid, gid, groups } => {
                let gs: Vec<nix::unistd::Gid> = groups
                    .iter()
                    .map(|g| nix::unistd::Gid::from_raw(*g))
                    .collect();
                nix::unistd::setgroups(&gs).map_err(|e| errno("setgroups", e))?;
                nix::unistd::setgid(nix::unistd::Gid::from_raw(*gid))
                    .map_err(|e| errno("setgid", e))?;
                nix::unistd::setuid(nix::unistd::Uid::from_raw(*uid))
                    .map_err(|e| errno("setuid", e))
            }
            Op::BoundingSet(m) => caps::bound(*m).map_err(|e| Error::from(e).context(describe(op))),
            Op::Capabilities(m) => {
                caps::restrict(*m).map_err(|e| Error::from(e).context(describe(op)))
            }
            Op::ParentDeathSignal(sig) => {
                // SAFETY: prctl with integer arguments.
                if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, *sig as libc::c_ulong, 0, 0, 0) }
                    != 0
                {
                    return Err(Error::from(std::io::Error::last_os_error()).context(describe(op)));
                }
                Ok(())
            }
            Op::NoNewPrivs => {
                // SAFETY: prctl with integer arguments.
                if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
                    return Err(
                        Error::from(std::io::Error::last_os_error()).context("no_new_privs")
                    );
                }
                Ok(())
            }
            Op::Mkdir { path, mode } => {
                use std::os::unix::fs::DirBuilderExt;
                match std::fs::DirBuilder::new().mode(*mode).create(path) {
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && path.is_dir() => {
                        Ok(())
                    }
                    r => r.with_context(|| describe(op)),
                }
            }
            Op::Symlink { target, link } => {
                std::os::unix::fs::symlink(target, link).with_context(|| describe(op))
            }
            Op::BridgeAdd { name, mtu } => netlink::bridge_add(name, *mtu),
            Op::VethAdd {
                name,
                peer,
                mtu,
                peer_pid,
            } => netlink::veth_add(name, peer, *mtu, *peer_pid),
            Op::LinkSetMaster { name, master } => netlink::link_set_master(name, master),
            Op::LinkUp { name } => netlink::link_up(name),
            Op::LinkNoIpv6 { name } => netlink::link_no_ipv6(name),
            Op::LinkDel { name } => netlink::link_del(name),
            Op::LinkSetNetns { name, pid } => netlink::link_set_netns(name, *pid),
            Op::LinkRename { name, new } => netlink::link_rename(name, new),
            Op::LinkSetMtu { name, mtu } => netlink::link_set_mtu(name, *mtu),
            Op::AddrAdd { link, addr, prefix } => netlink::addr_add(link, *addr, *prefix),
            Op::RouteAddDefault { via } => netlink::route_add_default(*via),
        }
    }
}

fn errno(what: &str, e: nix::Error) -> Error {
    let hint = match e {
        nix::Error::EPERM => " (needs root or CAP_SYS_ADMIN)",
        _ => "",
    };
    Error::from(e).context(format!("{what}{hint}"))
}

/// A fake that records operations instead of running them; optionally fails the
/// operation at a given index, to test error paths.
#[derive(Default)]
pub struct Recorder {
    pub ops: Mutex<Vec<Op>>,
    pub fail_at: Option<usize>,
}

impl Recorder {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn failing_at(i: usize) -> Self {
        Recorder {
            ops: Mutex::new(Vec::new()),
            fail_at: Some(i),
        }
    }
    pub fn taken(&self) -> Vec<Op> {
        self.ops.lock().unwrap().clone()
    }
}

impl Sys for Recorder {
    fn run(&self, op: &Op) -> Result<()> {
        let mut ops = self.ops.lock().unwrap();
        if self.fail_at == Some(ops.len()) {
            return Err(Error::new(crate::error::Kind::Denied, "injected failure"));
        }
        ops.push(op.clone());
        Ok(())
    }
}

/// True when the process runs as root (effective uid 0).
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Convenience for paths in plans.
pub fn p(s: impl AsRef<Path>) -> PathBuf {
    s.as_ref().to_path_buf()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apply_stops_at_the_failing_step_and_names_it() {
        let plan = vec![
            Op::SetHostname("a".into()),
            Op::Chroot(p("/r")),
            Op::SetHostname("b".into()),
        ];
        let r = Recorder::failing_at(1);
        let e = apply(&r, &plan).unwrap_err();
        assert_eq!(r.taken(), vec![Op::SetHostname("a".into())]);
        assert!(e.to_string().starts_with("step 2 (chroot /r)"), "{e}");
        let r = Recorder::new();
        apply(&r, &plan).unwrap();
        assert_eq!(r.taken(), plan);
    }
}

//! The container init: what runs between the shim's clone and the command's exec.
//!
//! Everything it does is a plan of [`Op`]s built by pure functions here, so the
//! plans are unit-tested as data; the init applies them in order and reports the
//! first failure to the shim, naming the step. The order matters:
//!
//! 1. In the host's user namespace (the clone gave a new PID and mount
//!    namespace): make `/` private, mount the overlay, the binds (read-only ones
//!    remounted read-only), `/proc` with runc's masked and read-only paths, a
//!    minimal `/dev`, the engine's `/etc` files; pivot_root.
//! 2. A new user namespace with an identity mapping (the shim writes the maps),
//!    then new mount, UTS, IPC and network namespaces owned by it. The mounts of
//!    step 1 came from a more privileged namespace, so the kernel locks them: not
//!    even SYS_ADMIN in the container can remount a read-only bind read-write,
//!    while SYS_ADMIN still sets the container's own hostname.
//! 3. The network (after the shim moved the veth in), hostname, `/sys`
//!    (read-only) and `/dev/mqueue`.
//! 4. User and groups, capabilities, no_new_privs, working directory, exec.
//!
//! Without user namespaces (privileged containers, hosts that have them off),
//! step 2 creates the namespaces in the host's user namespace.

use berth::sys::Op;
use std::path::{Path, PathBuf};

const MS_RDONLY: u64 = libc::MS_RDONLY;
const MS_NOSUID: u64 = libc::MS_NOSUID;
const MS_NODEV: u64 = libc::MS_NODEV;
const MS_NOEXEC: u64 = libc::MS_NOEXEC;
const MS_BIND: u64 = libc::MS_BIND;
const MS_REC: u64 = libc::MS_REC;
const MS_REMOUNT: u64 = libc::MS_REMOUNT;
const MS_PRIVATE: u64 = libc::MS_PRIVATE;
const MS_SLAVE: u64 = libc::MS_SLAVE;
const MS_STRICTATIME: u64 = libc::MS_STRICTATIME;

/// runc's default masked paths: unreadable in the container.
pub const MASKED: [&str; 10] = [
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
];

/// runc's default read-only paths.
pub const READ_ONLY: [&str; 5] = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// The standard device nodes: name, major, minor.
pub const DEVICES: [(&str, u64, u64); 6] = [
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("random", 1, 8),
    ("urandom", 1, 9),
    ("tty", 5, 0),
];

/// One bind mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bind {
    pub source: PathBuf,
    /// Inside the container.
    pub target: PathBuf,
    pub read_only: bool,
    /// An anonymous volume: when still empty it is filled from what the image
    /// has at `target` before the bind (Docker's copy-up).
    pub copy_up: bool,
}

/// How the container is networked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Net {
    /// The host's network namespace.
    Host,
    /// Its own namespace with only `lo`.
    None,
    /// Its own namespace with `eth0` from the shim: the in-namespace plan.
    Bridge(Vec<Op>),
}

/// Everything the init needs, prepared by the shim before the clone.
#[derive(Debug, Clone)]
pub struct Spec {
    /// Where the overlay is mounted (`CONTAINER_DIR/rootfs`).
    pub rootfs: PathBuf,
    /// `rootfs` already holds a private copy of the image: bind it, no overlay.
    pub copy_root: bool,
    /// Layer directories, top first; empty for an image without layers.
    pub lowerdirs: Vec<PathBuf>,
    pub upper: PathBuf,
    pub work: PathBuf,
    /// An empty directory, the lowerdir of an image without layers.
    pub empty: PathBuf,
    pub binds: Vec<Bind>,
    /// Host files bind-mounted over `/etc/hostname`, `/etc/hosts`, `/etc/resolv.conf`.
    pub etc_files: Vec<(PathBuf, &'static str)>,
    /// The berth binary, bound at `/dev/init` for `--init`.
    pub init_binary: Option<PathBuf>,
    /// `-t`: the init opens a pty in the container's own devpts and binds its
    /// slave over `/dev/console` (the root plan makes the mount point).
    pub tty: bool,
    pub hostname: String,
    pub userns: bool,
    pub privileged: bool,
    /// no_new_privs for the command: unprivileged, where the kernel has it.
    pub no_new_privs: bool,
    pub readonly_rootfs: bool,
    pub shm_size: u64,
    pub net: Net,
    pub caps: u64,
    /// `User` as the API gives it (name, uid, uid:gid, name:group).
    pub user: String,
    pub env: Vec<String>,
    pub workdir: String,
    pub argv: Vec<String>,
}

fn mount(
    source: Option<&str>,
    target: PathBuf,
    fstype: Option<&str>,
    flags: u64,
    data: Option<String>,
) -> Op {
    Op::Mount {
        source: source.map(PathBuf::from),
        target,
        fstype: fstype.map(str::to_string),
        flags,
        data,
    }
}

fn bind(source: impl Into<PathBuf>, target: PathBuf, recursive: bool) -> Op {
    Op::Mount {
        source: Some(source.into()),
        target,
        fstype: None,
        flags: MS_BIND | if recursive { MS_REC } else { 0 },
        data: None,
    }
}

fn remount_ro(target: PathBuf, extra: u64) -> Op {
    mount(
        None,
        target,
        None,
        MS_REMOUNT | MS_BIND | MS_RDONLY | extra,
        None,
    )
}

/// A path inside the root on the host side, before pivot_root.
pub fn inside(rootfs: &Path, p: &str) -> PathBuf {
    rootfs.join(p.trim_start_matches('/'))
}

/// The overlay's mount options.
pub fn overlay_data(spec: &Spec) -> String {
    let lowers: Vec<String> = if spec.lowerdirs.is_empty() {
        vec![spec.empty.display().to_string()]
    } else {
        spec.lowerdirs
            .iter()
            .map(|p| p.display().to_string())
            .collect()
    };
    format!(
        "lowerdir={},upperdir={},workdir={}",
        lowers.join(":"),
        spec.upper.display(),
        spec.work.display()
    )
}

/// Step 1a: a private mount namespace and the overlay. The init then makes the
/// mount points the binds and the engine's files need inside it.
pub fn overlay_plan(spec: &Spec) -> Vec<Op> {
    if spec.copy_root {
        // pivot_root wants a mount point: the copy bound onto itself.
        return vec![
            mount(None, PathBuf::from("/"), None, MS_REC | MS_PRIVATE, None),
            bind(spec.rootfs.clone(), spec.rootfs.clone(), false),
        ];
    }
    vec![
        mount(None, PathBuf::from("/"), None, MS_REC | MS_PRIVATE, None),
        mount(
            Some("overlay"),
            spec.rootfs.clone(),
            Some("overlay"),
            0,
            Some(overlay_data(spec)),
        ),
    ]
}

/// Step 1b: everything else in the host's user namespace, ending with
/// pivot_root. `kind(path)` says what a /proc path is (`Some(true)` directory,
/// `Some(false)` other, `None` missing): masked directories get an empty
/// read-only tmpfs, masked files /dev/null.
pub fn root_plan(spec: &Spec, kind: &dyn Fn(&Path) -> Option<bool>) -> Vec<Op> {
    let r = &spec.rootfs;
    let mut plan = Vec::new();
    for b in &spec.binds {
        let t = inside(r, &b.target.to_string_lossy());
        plan.push(bind(&b.source, t.clone(), true));
        if b.read_only {
            plan.push(remount_ro(t, MS_REC));
        }
    }
    plan.push(mount(
        Some("proc"),
        inside(r, "/proc"),
        Some("proc"),
        MS_NOSUID | MS_NODEV | MS_NOEXEC,
        None,
    ));
    if !spec.privileged {
        for m in MASKED.iter().filter(|m| m.starts_with("/proc/")) {
            let t = inside(r, m);
            match kind(&t) {
                Some(true) => plan.push(mount(Some("tmpfs"), t, Some("tmpfs"), MS_RDONLY, None)),
                Some(false) => plan.push(bind("/dev/null", t, false)),
                None => {}
            }
        }
        for ro in READ_ONLY {
            let t = inside(r, ro);
            if kind(&t).is_some() {
                plan.push(bind(t.clone(), t.clone(), true));
                plan.push(remount_ro(t, MS_REC | MS_NOSUID | MS_NODEV | MS_NOEXEC));
            }
        }
    }
    let dev = inside(r, "/dev");
    plan.push(mount(
        Some("tmpfs"),
        dev.clone(),
        Some("tmpfs"),
        MS_NOSUID | MS_STRICTATIME,
        Some("mode=755,size=65536k".into()),
    ));
    for (name, major, minor) in DEVICES {
        plan.push(Op::Mknod {
            path: dev.join(name),
            kind: berth::sys::NodeKind::Char,
            mode: 0o666,
            major,
            minor,
        });
    }
    for (link, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("ptmx", "pts/ptmx"),
    ] {
        plan.push(Op::Symlink {
            target: PathBuf::from(target),
            link: dev.join(link),
        });
    }
    for d in ["pts", "shm", "mqueue"] {
        plan.push(Op::Mkdir {
            path: dev.join(d),
            mode: 0o755,
        });
    }
    plan.push(mount(
        Some("devpts"),
        dev.join("pts"),
        Some("devpts"),
        MS_NOSUID | MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=0620,gid=5".into()),
    ));
    let shm = if spec.shm_size > 0 {
        spec.shm_size
    } else {
        64 << 20
    };
    plan.push(mount(
        Some("shm"),
        dev.join("shm"),
        Some("tmpfs"),
        MS_NOSUID | MS_NODEV | MS_NOEXEC,
        Some(format!("mode=1777,size={shm}")),
    ));
    if spec.tty {
        plan.push(Op::Mknod {
            path: dev.join("console"),
            kind: berth::sys::NodeKind::Fifo,
            mode: 0o600,
            major: 0,
            minor: 0,
        });
    }
    if let Some(init) = &spec.init_binary {
        plan.push(Op::Mknod {
            path: dev.join("init"),
            kind: berth::sys::NodeKind::Fifo,
            mode: 0o755,
            major: 0,
            minor: 0,
        });
        plan.push(bind(init, dev.join("init"), false));
        plan.push(remount_ro(dev.join("init"), 0));
    }
    for (host, target) in &spec.etc_files {
        plan.push(bind(host, inside(r, target), false));
    }
    // The host's /sys, read-only and locked. With a network namespace of its
    // own the container mounts a fresh sysfs over it (step 3): the kernel lets a
    // user namespace mount sysfs only where one is already fully visible.
    plan.push(bind("/sys", inside(r, "/sys"), false));
    plan.push(remount_ro(
        inside(r, "/sys"),
        MS_NOSUID | MS_NODEV | MS_NOEXEC,
    ));
    if matches!(spec.net, Net::Host) && !spec.privileged {
        // (the host's /sys stays: mask here, where the mask is locked too)
        plan.push(mount(
            Some("tmpfs"),
            inside(r, "/sys/firmware"),
            Some("tmpfs"),
            MS_RDONLY,
            None,
        ));
    }
    // runc's way into the root: pivot_root(".", ".") stacks the old root on the
    // new one; detaching it leaves only the container's.
    plan.push(Op::Chdir(r.clone()));
    plan.push(Op::PivotRoot {
        new_root: PathBuf::from("."),
        put_old: PathBuf::from("."),
    });
    plan.push(mount(
        None,
        PathBuf::from("."),
        None,
        MS_SLAVE | MS_REC,
        None,
    ));
    plan.push(Op::Umount {
        target: PathBuf::from("."),
        detach: true,
    });
    plan.push(Op::Chdir(PathBuf::from("/")));
    if spec.readonly_rootfs {
        plan.push(remount_ro(PathBuf::from("/"), 0));
    }
    plan
}

/// Step 2: the namespaces the container lives in, created inside the user
/// namespace when there is one. A host-networked container keeps the host's
/// network namespace.
pub fn namespaces(spec: &Spec) -> Op {
    let mut flags = libc::CLONE_NEWUTS | libc::CLONE_NEWIPC;
    if spec.userns {
        flags |= libc::CLONE_NEWNS;
    }
    if !matches!(spec.net, Net::Host) {
        flags |= libc::CLONE_NEWNET;
    }
    Op::Unshare(flags)
}

/// Step 3: inside the container's namespaces.
pub fn inner_plan(spec: &Spec) -> Vec<Op> {
    let mut plan = Vec::new();
    match &spec.net {
        Net::Host => {}
        Net::None => plan.push(berth::sys::Op::LinkUp { name: "lo".into() }),
        Net::Bridge(ops) => plan.extend(ops.iter().cloned()),
    }
    plan.push(Op::SetHostname(spec.hostname.clone()));
    if !matches!(spec.net, Net::Host) {
        let flags = MS_NOSUID | MS_NODEV | MS_NOEXEC | if spec.privileged { 0 } else { MS_RDONLY };
        plan.push(mount(
            Some("sysfs"),
            PathBuf::from("/sys"),
            Some("sysfs"),
            flags,
            None,
        ));
        if !spec.privileged {
            plan.push(mount(
                Some("tmpfs"),
                PathBuf::from("/sys/firmware"),
                Some("tmpfs"),
                MS_RDONLY,
                None,
            ));
        }
    }
    plan.push(mount(
        Some("mqueue"),
        PathBuf::from("/dev/mqueue"),
        Some("mqueue"),
        MS_NOSUID | MS_NODEV | MS_NOEXEC,
        None,
    ));
    plan
}

/// Step 4: who the command runs as and with what.
pub fn final_plan(spec: &Spec, ids: &Ids, workdir: &str) -> Vec<Op> {
    let mut plan = vec![Op::Chdir(PathBuf::from(if workdir.is_empty() {
        "/"
    } else {
        workdir
    }))];
    plan.push(Op::BoundingSet(spec.caps));
    plan.push(Op::SetIds {
        uid: ids.uid,
        gid: ids.gid,
        groups: ids.groups.clone(),
    });
    plan.push(Op::Capabilities(spec.caps));
    // A change of user clears the parent-death signal the init set first.
    plan.push(Op::ParentDeathSignal(libc::SIGKILL));
    if spec.no_new_privs {
        plan.push(Op::NoNewPrivs);
    }
    plan
}

/// A user resolved in the container's passwd and group files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ids {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
    pub home: String,
}

/// Resolve `user` (`name`, `uid`, `uid:gid`, `name:group`; empty is root) as
/// docker does: names through the image's /etc/passwd and /etc/group, numbers as
/// they are even when the files lack them, supplementary groups from /etc/group.
pub fn resolve_user(user: &str, passwd: &str, group: &str) -> Result<Ids, String> {
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let u = if u.is_empty() { "0" } else { u };
    let pw: Vec<Vec<&str>> = passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .filter(|f| f.len() >= 7)
        .collect();
    let gr: Vec<Vec<&str>> = group
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .filter(|f| f.len() >= 4)
        .collect();
    let entry = match u.parse::<u32>() {
        Ok(uid) => pw.iter().find(|f| f[2].parse() == Ok(uid)),
        Err(_) => pw.iter().find(|f| f[0] == u),
    };
    let (uid, mut gid, name, home) = match (u.parse::<u32>(), entry) {
        (_, Some(f)) => (
            f[2].parse::<u32>()
                .map_err(|_| format!("bad uid for user {}", f[0]))?,
            f[3].parse::<u32>().unwrap_or(0),
            Some(f[0]),
            f[5].to_string(),
        ),
        (Ok(uid), None) => (uid, 0, None, "/".to_string()),
        (Err(_), None) => {
            return Err(format!(
                "unable to find user {u}: no matching entries in passwd file"
            ));
        }
    };
    if let Some(g) = g {
        gid = match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => gr
                .iter()
                .find(|f| f[0] == g)
                .and_then(|f| f[2].parse().ok())
                .ok_or_else(|| {
                    format!("unable to find group {g}: no matching entries in group file")
                })?,
        };
    }
    let mut groups = vec![gid];
    if let Some(name) = name {
        for f in &gr {
            if f[3].split(',').any(|m| m == name)
                && let Ok(n) = f[2].parse::<u32>()
                && !groups.contains(&n)
            {
                groups.push(n);
            }
        }
    }
    Ok(Ids {
        uid,
        gid,
        groups,
        home,
    })
}

/// Find `cmd` the way exec*p does, in the container's PATH; the error is
/// docker's wording (the CLI shows it and exits 127 or 126).
pub fn find_executable(
    cmd: &str,
    env: &[String],
    exists: &dyn Fn(&Path) -> Option<bool>,
) -> Result<PathBuf, String> {
    if cmd.contains('/') {
        return match exists(Path::new(cmd)) {
            Some(true) => Ok(PathBuf::from(cmd)),
            Some(false) => Err(format!("exec: \"{cmd}\": permission denied")),
            None => Err(format!(
                "exec: \"{cmd}\": stat {cmd}: no such file or directory"
            )),
        };
    }
    let path = env
        .iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or(DEFAULT_PATH);
    let mut denied = false;
    for dir in path.split(':').filter(|d| !d.is_empty()) {
        let p = Path::new(dir).join(cmd);
        match exists(&p) {
            Some(true) => return Ok(p),
            Some(false) => denied = true,
            None => {}
        }
    }
    if denied {
        Err(format!("exec: \"{cmd}\": permission denied"))
    } else {
        Err(format!(
            "exec: \"{cmd}\": executable file not found in $PATH"
        ))
    }
}

/// Docker's PATH when the image sets none.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The environment a container's command gets: docker's PATH unless the image
/// or the client set one, HOSTNAME, HOME from passwd unless set, TERM with a tty.
pub fn environment(env: &[String], hostname: &str, home: &str, tty: bool) -> Vec<String> {
    let has = |k: &str| env.iter().any(|e| e.split('=').next() == Some(k));
    let mut out = Vec::new();
    if !has("PATH") {
        out.push(format!("PATH={DEFAULT_PATH}"));
    }
    out.push(format!("HOSTNAME={hostname}"));
    if tty && !has("TERM") {
        out.push("TERM=xterm".to_string());
    }
    out.extend(env.iter().filter(|e| !e.starts_with("HOSTNAME=")).cloned());
    if !has("HOME") {
        out.push(format!("HOME={home}"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> Spec {
        Spec {
            rootfs: PathBuf::from("/g/c/rootfs"),
            copy_root: false,
            lowerdirs: vec![PathBuf::from("/g/l/b"), PathBuf::from("/g/l/a")],
            upper: PathBuf::from("/g/c/upper"),
            work: PathBuf::from("/g/c/work"),
            empty: PathBuf::from("/g/c/empty"),
            binds: vec![
                Bind {
                    source: "/etc/grid-security".into(),
                    target: "/etc/grid-security".into(),
                    read_only: true,
                    copy_up: false,
                },
                Bind {
                    source: "/home".into(),
                    target: "/home".into(),
                    read_only: false,
                    copy_up: false,
                },
            ],
            etc_files: vec![(PathBuf::from("/g/c/hostname"), "/etc/hostname")],
            init_binary: None,
            tty: false,
            hostname: "wn1".into(),
            userns: true,
            privileged: false,
            no_new_privs: true,
            readonly_rootfs: false,
            shm_size: 0,
            net: Net::None,
            caps: 0,
            user: String::new(),
            env: vec![],
            workdir: String::new(),
            argv: vec!["/root/init".into()],
        }
    }

    #[test]
    fn a_copied_root_is_bound_onto_itself_instead_of_an_overlay() {
        let mut s = spec();
        s.copy_root = true;
        let o = overlay_plan(&s);
        assert_eq!(o.len(), 2);
        assert!(
            matches!(&o[1], Op::Mount { source: Some(src), target, fstype: None, flags, .. }
            if src == target && target == Path::new("/g/c/rootfs") && flags & MS_BIND != 0)
        );
        assert!(
            !o.iter()
                .any(|op| matches!(op, Op::Mount { fstype: Some(t), .. } if t == "overlay"))
        );
    }

    #[test]
    fn the_root_plan_mounts_binds_masks_and_pivots_in_order() {
        let s = spec();
        let plan = root_plan(&s, &|p| {
            let p = p.to_string_lossy();
            if p.ends_with("/proc/kcore") || p.ends_with("/proc/sysrq-trigger") {
                Some(false)
            } else if p.ends_with("/proc/acpi") || p.ends_with("/proc/sys") {
                Some(true)
            } else {
                None
            }
        });
        let d: Vec<String> = plan.iter().map(berth::sys::describe).collect();
        let o = overlay_plan(&s);
        assert_eq!(berth::sys::describe(&o[0]), "mount none on / (bind)");
        assert!(matches!(&o[1], Op::Mount { data: Some(x), .. }
            if x == "lowerdir=/g/l/b:/g/l/a,upperdir=/g/c/upper,workdir=/g/c/work"));
        // the read-only bind is remounted read-only right after it is made
        assert!(matches!(&plan[0], Op::Mount { source: Some(s), flags, .. }
            if s == Path::new("/etc/grid-security") && flags & MS_BIND != 0));
        assert!(matches!(&plan[1], Op::Mount { target, flags, .. }
            if target == Path::new("/g/c/rootfs/etc/grid-security") && flags & MS_RDONLY != 0 && flags & MS_REMOUNT != 0));
        assert!(matches!(&plan[2], Op::Mount { flags, .. } if flags & MS_RDONLY == 0));
        // masked: a file gets /dev/null, a directory an empty read-only tmpfs
        assert!(
            plan.iter()
                .any(|o| matches!(o, Op::Mount { source: Some(s), target, .. }
            if s == Path::new("/dev/null") && target == Path::new("/g/c/rootfs/proc/kcore")))
        );
        assert!(plan.iter().any(|o| matches!(o, Op::Mount { fstype: Some(f), target, flags, .. }
            if f == "tmpfs" && target == Path::new("/g/c/rootfs/proc/acpi") && flags & MS_RDONLY != 0)));
        assert!(
            plan.iter()
                .any(|o| matches!(o, Op::Mount { target, flags, .. }
            if target == Path::new("/g/c/rootfs/proc/sys") && flags & MS_RDONLY != 0))
        );
        // missing masked paths are skipped, not errors
        assert!(!d.iter().any(|x| x.contains("timer_stats")));
        let n = plan.len();
        assert_eq!(plan[n - 5], Op::Chdir(PathBuf::from("/g/c/rootfs")));
        assert!(matches!(&plan[n - 4], Op::PivotRoot { .. }));
        assert_eq!(plan[n - 1], Op::Chdir(PathBuf::from("/")));
        // privileged: no masks
        let mut p = spec();
        p.privileged = true;
        let plan = root_plan(&p, &|_| Some(false));
        assert!(!plan.iter().any(
            |o| matches!(o, Op::Mount { source: Some(s), .. } if s == Path::new("/dev/null"))
        ));
    }

    #[test]
    fn namespaces_follow_the_network_mode_and_userns() {
        let mut s = spec();
        assert_eq!(
            namespaces(&s),
            Op::Unshare(
                libc::CLONE_NEWUTS | libc::CLONE_NEWIPC | libc::CLONE_NEWNS | libc::CLONE_NEWNET
            )
        );
        s.net = Net::Host;
        s.userns = false;
        assert_eq!(
            namespaces(&s),
            Op::Unshare(libc::CLONE_NEWUTS | libc::CLONE_NEWIPC)
        );
        let inner = inner_plan(&s);
        assert!(
            !inner
                .iter()
                .any(|o| matches!(o, Op::Mount { fstype: Some(f), .. } if f == "sysfs"))
        );
    }

    #[test]
    fn the_last_steps_keep_the_parent_death_signal_after_the_user_change() {
        let mut s = spec();
        let ids = Ids {
            uid: 64,
            gid: 64,
            groups: vec![10],
            home: "/var/lib/condor".into(),
        };
        let d: Vec<String> = final_plan(&s, &ids, "/tmp")
            .iter()
            .map(berth::sys::describe)
            .collect();
        let at = |what: &str| d.iter().position(|x| x.starts_with(what)).unwrap();
        assert_eq!(d[0], "chdir /tmp");
        assert!(
            at("set uid 64") < at("signal 9 on the parent's death"),
            "{d:?}"
        );
        // runc's order: the bounding set while CAP_SETPCAP is there, the user
        // while CAP_SETGID is, then the sets the command keeps
        assert!(
            at("bounding set") < at("set uid 64") && at("set uid 64") < at("capabilities"),
            "{d:?}"
        );
        assert_eq!(d.last().unwrap(), "no_new_privs");
        s.privileged = true;
        s.no_new_privs = false;
        let d: Vec<String> = final_plan(&s, &ids, "")
            .iter()
            .map(berth::sys::describe)
            .collect();
        assert!(!d.contains(&"no_new_privs".to_string()), "{d:?}");
        assert_eq!(d[0], "chdir /");
    }

    #[test]
    fn users_resolve_like_docker() {
        let pw = "root:x:0:0:root:/root:/bin/sh\ncondor:x:64:64::/var/lib/condor:/sbin/nologin\n";
        let gr = "root:x:0:\ncondor:x:64:\nwheel:x:10:condor,alice\n";
        assert_eq!(
            resolve_user("", pw, gr).unwrap(),
            Ids {
                uid: 0,
                gid: 0,
                groups: vec![0],
                home: "/root".into()
            }
        );
        let c = resolve_user("condor", pw, gr).unwrap();
        assert_eq!(
            (c.uid, c.gid, c.groups.clone(), c.home.as_str()),
            (64, 64, vec![64, 10], "/var/lib/condor")
        );
        assert_eq!(resolve_user("1000:1000", pw, gr).unwrap().gid, 1000);
        assert_eq!(resolve_user("64:wheel", pw, gr).unwrap().gid, 10);
        assert!(
            resolve_user("nobody", pw, gr)
                .unwrap_err()
                .contains("unable to find user nobody")
        );
        assert!(resolve_user("0:nogroup", pw, gr).is_err());
    }

    #[test]
    fn executables_and_environment() {
        let have = |p: &Path| match p.to_str().unwrap() {
            "/bin/sh" => Some(true),
            "/usr/bin/noexec" => Some(false),
            _ => None,
        };
        assert_eq!(
            find_executable("sh", &[], &have).unwrap(),
            PathBuf::from("/bin/sh")
        );
        assert_eq!(
            find_executable("nope", &[], &have).unwrap_err(),
            "exec: \"nope\": executable file not found in $PATH"
        );
        assert!(
            find_executable("/bin/nope", &[], &have)
                .unwrap_err()
                .contains("no such file")
        );
        assert!(
            find_executable("noexec", &[], &have)
                .unwrap_err()
                .contains("permission denied")
        );
        let env = environment(&["A=1".into(), "PATH=/x".into()], "h", "/root", true);
        assert_eq!(
            env,
            vec!["HOSTNAME=h", "TERM=xterm", "A=1", "PATH=/x", "HOME=/root"]
        );
    }
}

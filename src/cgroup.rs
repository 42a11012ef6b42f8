//! Control groups for the engine's containers, on cgroup v1 (the site's SL7 hosts),
//! pure v2 (newer hosts) and the hybrid layout (v1 controllers plus an empty
//! cgroup2 at /sys/fs/cgroup/unified).
//!
//! Everything here is plain file operations on the cgroup filesystems: no
//! privileged system call, so nothing goes through the `Sys` seam. Where the
//! hierarchies are mounted is data ([`Layout`]), found once from
//! /proc/self/mountinfo by a pure parser, so the file-writing logic also runs
//! against a temp dir laid out like /sys/fs/cgroup.
//!
//! A container's cgroup is `<parent>/<name>` under the root of every hierarchy
//! (`berth/<id>` by default), as docker's cgroupfs driver makes `docker/<id>`. On
//! v1 it is made in every mounted hierarchy, named ones (`name=systemd`) and the
//! hybrid's unified one included, as runc does: a container left in engined's
//! systemd unit would die with it when the unit restarts. Limits follow docker's
//! arithmetic for `--memory` (swap allowed up to the same amount again),
//! `--cpus` (CFS quota over a 100 ms period) and `--pids-limit`. A limit whose
//! controller is missing is an error, never silently dropped: a grid job that
//! asked for 2 GB must not get the whole node.
//!
//! Device access is restricted on v1 with the devices controller (docker's default
//! rules). v2 has no devices files (it needs an eBPF program, which berth does
//! not load): there the container relies on its user namespace, which cannot
//! create device nodes, and on its own /dev with only the standard nodes.

use crate::error::{Error, Kind, Result};
use nix::sys::signal::Signal;
use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The parent cgroup engined puts its containers under, in each hierarchy.
pub const DEFAULT_PARENT: &str = "berth";

/// The CFS period docker uses for `--cpus`, in microseconds.
pub const CFS_PERIOD_US: u64 = 100_000;

/// The smallest CFS quota the kernel accepts (1 ms), so `--cpus 0.01` at least.
const MIN_CFS_QUOTA_US: u64 = 1_000;

/// v1 controllers the kernel knows; anything else in a cgroup mount's options
/// (`rw`, `xattr`, `release_agent=…`) is not a controller.
const V1_CONTROLLERS: &[&str] = &[
    "blkio",
    "cpu",
    "cpuacct",
    "cpuset",
    "debug",
    "devices",
    "freezer",
    "hugetlb",
    "memory",
    "misc",
    "net_cls",
    "net_prio",
    "perf_event",
    "pids",
    "rdma",
];

/// v2 controllers engined enables down to its containers: the ones its limits
/// and its stats (`docker stats`, `docker top`) read.
const V2_CONTROLLERS: &[&str] = &["cpu", "memory", "pids"];

/// Docker's default device rules (moby's default spec plus runc's allowed
/// devices), written after denying everything: mknod of any node, and read/write
/// on null, zero, full, random, urandom, tty, console, ptmx and the ptys.
pub const DEFAULT_DEVICE_RULES: &[&str] = &[
    "c *:* m",
    "b *:* m",
    "c 1:3 rwm",
    "c 1:5 rwm",
    "c 1:7 rwm",
    "c 1:8 rwm",
    "c 1:9 rwm",
    "c 5:0 rwm",
    "c 5:1 rwm",
    "c 5:2 rwm",
    "c 136:* rwm",
];

/// How long a freeze may take before signals go out anyway (a task stuck in
/// uninterruptible sleep can keep a cgroup FREEZING for ever).
const FREEZE_WAIT: Duration = Duration::from_secs(10);

/// Where the cgroup hierarchies are mounted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layout {
    /// cgroup v1: each controller (or named hierarchy, `name=systemd`) to the
    /// mount point of its hierarchy. Co-mounted controllers (`cpu,cpuacct`)
    /// share one. `unified` is the hybrid layout's empty cgroup2 mount.
    V1 {
        mounts: BTreeMap<String, PathBuf>,
        unified: Option<PathBuf>,
    },
    /// cgroup v2: one hierarchy.
    V2 { root: PathBuf },
}

impl Layout {
    /// The layout of this host, from /proc/self/mountinfo.
    pub fn detect() -> Result<Layout> {
        let mountinfo = fs::read_to_string("/proc/self/mountinfo")
            .map_err(|e| io_error("read", Path::new("/proc/self/mountinfo"), e))?;
        let filesystems = fs::read_to_string("/proc/filesystems").unwrap_or_default();
        Layout::parse(&mountinfo, &filesystems)
    }

    /// The layout a mountinfo text describes. v1 wins when any v1 hierarchy holds
    /// a controller (a hybrid host keeps its controllers there); otherwise the
    /// cgroup2 mount, /sys/fs/cgroup preferred. `filesystems` (/proc/filesystems)
    /// only sharpens the error when nothing is mounted.
    pub fn parse(mountinfo: &str, filesystems: &str) -> Result<Layout> {
        let mut mounts: BTreeMap<String, PathBuf> = BTreeMap::new();
        let mut v2_mounts: Vec<PathBuf> = Vec::new();
        for line in mountinfo.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // id parent major:minor root mountpoint options [optional…] - fstype source superoptions
            let Some(sep) = fields.iter().position(|f| *f == "-") else {
                continue;
            };
            if sep < 5 || fields.len() < sep + 3 {
                continue;
            }
            let point = PathBuf::from(unescape_mountinfo(fields[4]));
            match fields[sep + 1] {
                "cgroup" => {
                    let opts = fields.get(sep + 3).copied().unwrap_or("");
                    for opt in opts.split(',') {
                        let is_controller =
                            V1_CONTROLLERS.contains(&opt) || opt.starts_with("name=");
                        // A hierarchy bind-mounted twice: the first mount serves.
                        if is_controller && !mounts.contains_key(opt) {
                            mounts.insert(opt.to_string(), point.clone());
                        }
                    }
                }
                "cgroup2" => v2_mounts.push(point),
                _ => {}
            }
        }
        let v2_root = v2_mounts
            .iter()
            .find(|p| p.as_path() == Path::new("/sys/fs/cgroup"))
            .or(v2_mounts.first())
            .cloned();
        let has_v1_controller = mounts.keys().any(|k| !k.starts_with("name="));
        match v2_root {
            Some(root) if !has_v1_controller => Ok(Layout::V2 { root }),
            unified if !mounts.is_empty() => Ok(Layout::V1 { mounts, unified }),
            _ => {
                let known = filesystems
                    .lines()
                    .filter_map(|l| l.split_whitespace().last())
                    .any(|fs| fs == "cgroup" || fs == "cgroup2");
                let hint = if known {
                    "mount cgroup2 on /sys/fs/cgroup (or the v1 hierarchies) before starting engined"
                } else {
                    "this kernel offers no cgroup filesystem: engined needs one to limit containers"
                };
                Err(Error::new(
                    Kind::Unsupported,
                    format!("no cgroup hierarchy is mounted: {hint}"),
                ))
            }
        }
    }

    /// True for a pure cgroup v2 host.
    pub fn is_v2(&self) -> bool {
        matches!(self, Layout::V2 { .. })
    }

    /// Every hierarchy as (mount point, controllers mounted there), each once.
    fn hierarchies(&self) -> Vec<(PathBuf, Vec<String>)> {
        match self {
            Layout::V2 { root } => vec![(root.clone(), Vec::new())],
            Layout::V1 { mounts, unified } => {
                let mut by_point: BTreeMap<&PathBuf, Vec<String>> = BTreeMap::new();
                for (c, p) in mounts {
                    by_point.entry(p).or_default().push(c.clone());
                }
                let mut out: Vec<(PathBuf, Vec<String>)> = by_point
                    .into_iter()
                    .map(|(p, cs)| (p.clone(), cs))
                    .collect();
                if let Some(u) = unified {
                    out.push((u.clone(), Vec::new()));
                }
                out
            }
        }
    }
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// What a container may use. `None` (and docker's "unset" values: 0, and -1 for
/// pids) means no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    /// Memory in bytes (HostConfig.Memory); swap up to as much again, as docker
    /// does when MemorySwap is unset.
    pub memory: Option<u64>,
    /// CPUs in billionths (HostConfig.NanoCpus).
    pub nano_cpus: Option<u64>,
    /// Most processes at once (HostConfig.PidsLimit).
    pub pids: Option<i64>,
    /// `--privileged`: no device rules (v1), as docker.
    pub privileged: bool,
}

impl Limits {
    fn memory_bytes(&self) -> Option<u64> {
        self.memory.filter(|m| *m > 0)
    }
    fn cpu_nanos(&self) -> Option<u64> {
        self.nano_cpus.filter(|n| *n > 0)
    }
    fn pids_max(&self) -> Option<i64> {
        self.pids.filter(|p| *p > 0)
    }
}

/// The CFS quota (µs per [`CFS_PERIOD_US`]) for `nano_cpus`, docker's
/// `NanoCpus * period / 1e9`. Below 0.01 CPU the kernel refuses the quota.
pub fn cfs_quota(nano_cpus: u64) -> Result<u64> {
    let quota = (nano_cpus as u128 * CFS_PERIOD_US as u128 / 1_000_000_000) as u64;
    if quota < MIN_CFS_QUOTA_US {
        return Err(Error::invalid(format!(
            "--cpus {} is below the smallest CPU share the kernel can enforce: use --cpus 0.01 or more",
            nano_cpus as f64 / 1e9
        )));
    }
    Ok(quota)
}

/// Check `parent` and `name` and give the cgroup's path relative to each
/// hierarchy's root. `parent` may have several components (`berth/ci`), `name`
/// is one; neither may hold empty, `.` or `..` components, a leading `/`, or
/// anything but letters, digits and `-_.@`: the result never leaves the
/// hierarchy and never names a control file.
pub fn relative_path(parent: &str, name: &str) -> Result<String> {
    let bad = |what: &str, v: &str| {
        Error::invalid(format!(
            "cgroup {what} {v:?} is not allowed: use plain names (letters, digits, -_.@) without '..', a leading '/' or empty parts"
        ))
    };
    let ok = |c: &str| {
        !c.is_empty()
            && c != "."
            && c != ".."
            && c.chars()
                .all(|ch| ch.is_ascii_alphanumeric() || "-_.@".contains(ch))
    };
    if !parent.split('/').all(ok) {
        return Err(bad("parent", parent));
    }
    // A name that looks like a control file ("cgroup.procs") would write to it.
    if !ok(name) || name.starts_with("cgroup.") {
        return Err(bad("name", name));
    }
    Ok(format!("{parent}/{name}"))
}

/// One hierarchy's directory for this cgroup.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Hier {
    dir: PathBuf,
    /// v1 controllers of this hierarchy; empty for a cgroup2 hierarchy.
    controllers: Vec<String>,
}

/// One container's cgroup, in every hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cgroup {
    rel: String,
    v2: bool,
    hiers: Vec<Hier>,
}

impl Cgroup {
    /// Make `<parent>/<name>` in every hierarchy and apply `limits`. An existing
    /// cgroup of that name is reused (a crash may leave one behind). On failure
    /// the new cgroup is removed again and the error names the file and the limit.
    pub fn create(layout: &Layout, parent: &str, name: &str, limits: &Limits) -> Result<Cgroup> {
        let rel = relative_path(parent, name)?;
        let cg = Cgroup {
            hiers: layout
                .hierarchies()
                .into_iter()
                .map(|(root, controllers)| Hier {
                    dir: root.join(&rel),
                    controllers,
                })
                .collect(),
            v2: layout.is_v2(),
            rel,
        };
        let made = match layout {
            Layout::V2 { root } => cg.make_v2(root),
            Layout::V1 { .. } => cg.make_v1(),
        };
        let applied = made.and_then(|()| {
            if cg.v2 {
                cg.limit_v2(limits)
            } else {
                cg.limit_v1(limits)
            }
        });
        match applied {
            Ok(()) => Ok(cg),
            Err(e) => {
                let _ = cg.remove();
                Err(e)
            }
        }
    }

    /// The existing cgroup `<parent>/<name>` (engined re-adopting a running
    /// container), in every hierarchy where it exists.
    pub fn open(layout: &Layout, parent: &str, name: &str) -> Result<Cgroup> {
        let rel = relative_path(parent, name)?;
        let hiers: Vec<Hier> = layout
            .hierarchies()
            .into_iter()
            .map(|(root, controllers)| Hier {
                dir: root.join(&rel),
                controllers,
            })
            .filter(|h| h.dir.is_dir())
            .collect();
        if hiers.is_empty() {
            return Err(Error::not_found(format!(
                "cgroup {rel} does not exist in any hierarchy: the container's cgroup is gone, remove the container"
            )));
        }
        Ok(Cgroup {
            rel,
            v2: layout.is_v2(),
            hiers,
        })
    }

    /// `<parent>/<name>`, as given.
    pub fn name(&self) -> &str {
        &self.rel
    }

    /// The cgroup's directory in each hierarchy.
    pub fn dirs(&self) -> Vec<&Path> {
        self.hiers.iter().map(|h| h.dir.as_path()).collect()
    }

    /// The directory of the hierarchy holding `controller` (v2: the one directory).
    fn dir_of(&self, controller: &str) -> Option<&Path> {
        if self.v2 {
            return self.hiers.first().map(|h| h.dir.as_path());
        }
        self.hiers
            .iter()
            .find(|h| h.controllers.iter().any(|c| c == controller))
            .map(|h| h.dir.as_path())
    }

    fn make_v1(&self) -> Result<()> {
        for h in &self.hiers {
            let cpuset = h.controllers.iter().any(|c| c == "cpuset");
            for dir in levels(&h.dir, &self.rel) {
                mkdir(&dir)?;
                // A new cpuset has no CPUs and no memory nodes, and the kernel
                // refuses tasks until both are set: inherit the parent's.
                if cpuset {
                    let up = dir.parent().unwrap_or(&dir);
                    for f in ["cpuset.cpus", "cpuset.mems"] {
                        if read(&dir.join(f))?.trim().is_empty() {
                            let v = read(&up.join(f))?;
                            write(&dir.join(f), v.trim())?;
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn make_v2(&self, root: &Path) -> Result<()> {
        let leaf = &self.hiers[0].dir;
        let mut up = root.to_path_buf();
        for dir in levels(leaf, &self.rel) {
            enable_controllers(&up);
            mkdir(&dir)?;
            up = dir;
        }
        Ok(())
    }

    fn need(&self, controller: &str, limit: &str) -> Result<&Path> {
        self.dir_of(controller).ok_or_else(|| {
            Error::new(
                Kind::Unsupported,
                format!(
                    "the {controller} cgroup controller is not mounted: {limit} cannot be honoured on this host"
                ),
            )
        })
    }

    fn limit_v1(&self, limits: &Limits) -> Result<()> {
        if let Some(m) = limits.memory_bytes() {
            let dir = self.need("memory", "--memory")?;
            let mem = dir.join("memory.limit_in_bytes");
            let memsw = dir.join("memory.memsw.limit_in_bytes");
            let value = m.to_string();
            if memsw.exists() {
                // The kernel keeps memsw at or above the memory limit: a reused
                // cgroup whose memsw is lower gets memsw raised first.
                let swap = m.saturating_mul(2).to_string();
                let current = read(&memsw)?.trim().parse::<u64>().unwrap_or(u64::MAX);
                if current < m {
                    set(&memsw, &swap, "--memory")?;
                    set(&mem, &value, "--memory")?;
                } else {
                    set(&mem, &value, "--memory")?;
                    set(&memsw, &swap, "--memory")?;
                }
            } else {
                set(&mem, &value, "--memory")?;
            }
        }
        if let Some(n) = limits.cpu_nanos() {
            let quota = cfs_quota(n)?;
            let dir = self.need("cpu", "--cpus")?;
            set(
                &dir.join("cpu.cfs_period_us"),
                &CFS_PERIOD_US.to_string(),
                "--cpus",
            )?;
            set(&dir.join("cpu.cfs_quota_us"), &quota.to_string(), "--cpus")?;
        }
        if let Some(p) = limits.pids_max() {
            let dir = self.need("pids", "--pids-limit")?;
            set(&dir.join("pids.max"), &p.to_string(), "--pids-limit")?;
        }
        if !limits.privileged {
            let dir = self.need(
                "devices",
                "device isolation (which only --privileged goes without)",
            )?;
            set(&dir.join("devices.deny"), "a", "device isolation")?;
            for rule in DEFAULT_DEVICE_RULES {
                set(&dir.join("devices.allow"), rule, "device isolation")?;
            }
        }
        Ok(())
    }

    fn limit_v2(&self, limits: &Limits) -> Result<()> {
        let dir = &self.hiers[0].dir;
        let enabled = read(&dir.join("cgroup.controllers")).unwrap_or_default();
        let need = |controller: &str, limit: &str| -> Result<()> {
            if enabled.split_whitespace().any(|c| c == controller) {
                return Ok(());
            }
            Err(Error::new(
                Kind::Unsupported,
                format!(
                    "the {controller} cgroup controller is not enabled for {}: {limit} cannot be honoured; enable it in cgroup.subtree_control of the parents (systemd: Delegate=yes for engined)",
                    dir.display()
                ),
            ))
        };
        if let Some(m) = limits.memory_bytes() {
            need("memory", "--memory")?;
            set(&dir.join("memory.max"), &m.to_string(), "--memory")?;
            // Kernels built without swap accounting have no memory.swap.max;
            // there is no swap to limit then.
            let swap = dir.join("memory.swap.max");
            if swap.exists() {
                set(&swap, &m.to_string(), "--memory")?;
            }
        }
        if let Some(n) = limits.cpu_nanos() {
            let quota = cfs_quota(n)?;
            need("cpu", "--cpus")?;
            set(
                &dir.join("cpu.max"),
                &format!("{quota} {CFS_PERIOD_US}"),
                "--cpus",
            )?;
        }
        if let Some(p) = limits.pids_max() {
            need("pids", "--pids-limit")?;
            set(&dir.join("pids.max"), &p.to_string(), "--pids-limit")?;
        }
        Ok(())
    }

    /// Move process `pid` (all its threads) into this cgroup in every hierarchy.
    pub fn add_pid(&self, pid: i32) -> Result<()> {
        if pid <= 0 {
            return Err(Error::invalid(format!("{pid} is not a process id")));
        }
        for h in &self.hiers {
            let procs = h.dir.join("cgroup.procs");
            match write_raw(&procs, &pid.to_string()) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {
                    return Err(Error::not_found(format!(
                        "cannot move process {pid} into {}: the process has exited",
                        h.dir.display()
                    )));
                }
                // Linux before 3.0 (SL6) cannot write cgroup.procs: move each thread.
                Err(e)
                    if !self.v2
                        && matches!(e.raw_os_error(), Some(libc::EINVAL | libc::EACCES))
                        && h.dir.join("tasks").exists() =>
                {
                    let tasks = fs::read_dir(format!("/proc/{pid}/task")).map_err(|e| {
                        io_error("read", Path::new(&format!("/proc/{pid}/task")), e)
                    })?;
                    for t in tasks.flatten() {
                        let tid = t.file_name().to_string_lossy().into_owned();
                        write_raw(&h.dir.join("tasks"), &tid)
                            .map_err(|e| io_error("write to", &h.dir.join("tasks"), e))?;
                    }
                }
                Err(e) => return Err(io_error("write to", &procs, e)),
            }
        }
        Ok(())
    }

    /// Every process in the cgroup and the cgroups below it, sorted.
    pub fn pids(&self) -> Result<Vec<i32>> {
        let dir = if self.v2 {
            self.hiers.first().map(|h| h.dir.as_path())
        } else {
            ["pids", "freezer", "memory", "cpu"]
                .iter()
                .find_map(|c| self.dir_of(c))
                .or(self.hiers.first().map(|h| h.dir.as_path()))
        };
        let Some(dir) = dir else {
            return Ok(Vec::new());
        };
        let mut out = BTreeSet::new();
        collect_pids(dir, &mut out)?;
        Ok(out.into_iter().collect())
    }

    /// True when no process is left in the cgroup (or below it).
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.pids()?.is_empty())
    }

    /// Send `signal` to every process in the cgroup and give how many got it.
    /// The cgroup is frozen meanwhile so nothing forks away between listing and
    /// signalling, then thawed (a frozen process acts on its signal only then). On
    /// v2, SIGKILL goes through `cgroup.kill` where the kernel has it (5.14+).
    /// Processes may still be exiting when this returns: poll [`Cgroup::is_empty`].
    pub fn kill_all(&self, signal: Signal) -> Result<usize> {
        if self.v2 && signal == Signal::SIGKILL {
            let kill = self.hiers[0].dir.join("cgroup.kill");
            if kill.exists() {
                let n = self.pids()?.len();
                set(&kill, "1", "docker kill")?;
                return Ok(n);
            }
        }
        let frozen = self.freeze()?;
        let sent = self.signal_all(signal, frozen);
        let thawed = self.thaw();
        let sent = sent?;
        thawed?;
        Ok(sent)
    }

    /// Signal every listed process once. Unfrozen, list again until a pass finds
    /// no process not signalled yet, so children forked meanwhile get it too.
    fn signal_all(&self, signal: Signal, frozen: bool) -> Result<usize> {
        let mut seen = BTreeSet::new();
        let mut sent = 0;
        for _ in 0..100 {
            let fresh: Vec<i32> = self
                .pids()?
                .into_iter()
                .filter(|p| *p > 0 && !seen.contains(p))
                .collect();
            if fresh.is_empty() {
                break;
            }
            for p in fresh {
                seen.insert(p);
                match nix::sys::signal::kill(nix::unistd::Pid::from_raw(p), signal) {
                    Ok(()) => sent += 1,
                    Err(nix::errno::Errno::ESRCH) => {}
                    Err(e) => {
                        return Err(Error::from(e).context(format!(
                            "cannot send {signal} to process {p} of cgroup {}",
                            self.rel
                        )));
                    }
                }
            }
            if frozen {
                break;
            }
        }
        Ok(sent)
    }

    /// The freezer's control file and the values that freeze and thaw.
    fn freezer(&self) -> Option<(PathBuf, &'static str, &'static str)> {
        if self.v2 {
            let f = self.hiers.first()?.dir.join("cgroup.freeze");
            // Linux before 5.2 has no v2 freezer.
            f.exists().then_some((f, "1", "0"))
        } else {
            let d = self.dir_of("freezer")?;
            Some((d.join("freezer.state"), "FROZEN", "THAWED"))
        }
    }

    fn is_frozen(&self) -> Result<bool> {
        if self.v2 {
            let events = read(&self.hiers[0].dir.join("cgroup.events"))?;
            Ok(events.lines().any(|l| l.trim() == "frozen 1"))
        } else {
            match self.dir_of("freezer") {
                Some(d) => Ok(read(&d.join("freezer.state"))?.trim() == "FROZEN"),
                None => Ok(false),
            }
        }
    }

    /// Freeze the cgroup; false when this host has no freezer or the freeze did
    /// not complete in time (the caller signals anyway).
    fn freeze(&self) -> Result<bool> {
        let Some((file, freeze, _)) = self.freezer() else {
            return Ok(false);
        };
        let deadline = Instant::now() + FREEZE_WAIT;
        let mut pause = Duration::from_millis(1);
        loop {
            // v1 stays FREEZING while a task resists; writing FROZEN again retries it.
            set(&file, freeze, "freezing the container")?;
            if self.is_frozen()? {
                return Ok(true);
            }
            if Instant::now() >= deadline {
                log::warn!(
                    "cgroup {} did not freeze within {} s: signalling its processes anyway",
                    self.rel,
                    FREEZE_WAIT.as_secs()
                );
                return Ok(false);
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(50));
        }
    }

    fn thaw(&self) -> Result<()> {
        match self.freezer() {
            Some((file, _, thaw)) => set(&file, thaw, "thawing the container"),
            None => Ok(()),
        }
    }

    /// Memory in use by the cgroup in bytes (page cache included), when the
    /// memory controller is there.
    pub fn memory_usage(&self) -> Option<u64> {
        let file = if self.v2 {
            self.dir_of("memory")?.join("memory.current")
        } else {
            self.dir_of("memory")?.join("memory.usage_in_bytes")
        };
        fs::read_to_string(file).ok()?.trim().parse().ok()
    }

    /// How many processes the kernel's OOM killer took in this cgroup (docker's
    /// `OOMKilled`): `oom_kill` of memory.oom_control (v1) or memory.events (v2).
    pub fn oom_kills(&self) -> Option<u64> {
        let file = if self.v2 {
            self.dir_of("memory")?.join("memory.events")
        } else {
            self.dir_of("memory")?.join("memory.oom_control")
        };
        fs::read_to_string(file).ok()?.lines().find_map(|l| {
            l.strip_prefix("oom_kill ")
                .and_then(|n| n.trim().parse().ok())
        })
    }

    /// Kill everything in the cgroup, wait (up to `patience`) for the kernel to
    /// reap it, then remove the cgroup: a container's end, whoever noticed it.
    pub fn destroy(&self, patience: Duration) -> Result<()> {
        let deadline = Instant::now() + patience;
        while !self.is_empty()? {
            if Instant::now() >= deadline {
                break;
            }
            self.kill_all(Signal::SIGKILL)?;
            std::thread::sleep(Duration::from_millis(10));
        }
        self.remove()
    }

    /// Remove the cgroup (and any cgroup a container made below it) from every
    /// hierarchy. Refused while a process is left in it.
    pub fn remove(&self) -> Result<()> {
        let left = self.pids()?.len();
        if left > 0 {
            return Err(Error::new(
                Kind::Conflict,
                format!(
                    "cgroup {} still has {left} process{}: kill them (docker kill) before removing it",
                    self.rel,
                    if left == 1 { "" } else { "es" }
                ),
            ));
        }
        for h in &self.hiers {
            rmdir_tree(&h.dir)?;
        }
        Ok(())
    }
}

/// The directories from the first component of `rel` down to `leaf`, in order.
fn levels(leaf: &Path, rel: &str) -> Vec<PathBuf> {
    let depth = rel.split('/').count();
    let mut out: Vec<PathBuf> = leaf
        .ancestors()
        .take(depth)
        .map(Path::to_path_buf)
        .collect();
    out.reverse();
    out
}

/// Enable engined's v2 controllers for the children of `dir`, as far as `dir`
/// has them: failures are left for the limit that needs the controller to report.
fn enable_controllers(dir: &Path) {
    let available = read(&dir.join("cgroup.controllers")).unwrap_or_default();
    let enabled = read(&dir.join("cgroup.subtree_control")).unwrap_or_default();
    let missing: Vec<&str> = V2_CONTROLLERS
        .iter()
        .copied()
        .filter(|c| available.split_whitespace().any(|a| a == *c))
        .filter(|c| !enabled.split_whitespace().any(|a| a == *c))
        .collect();
    if missing.is_empty() {
        return;
    }
    let file = dir.join("cgroup.subtree_control");
    let all: Vec<String> = missing.iter().map(|c| format!("+{c}")).collect();
    // The kernel takes the whole line or nothing; one by one, the others still go in.
    if write_raw(&file, &all.join(" ")).is_err() {
        for c in &all {
            if let Err(e) = write_raw(&file, c) {
                log::debug!("{}: cannot write {c}: {e}", file.display());
            }
        }
    }
}

fn collect_pids(dir: &Path, out: &mut BTreeSet<i32>) -> Result<()> {
    let procs = dir.join("cgroup.procs");
    let text = match fs::read_to_string(&procs) {
        Ok(t) => t,
        // Removed meanwhile: nothing left in it.
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_error("read", &procs, e)),
    };
    out.extend(text.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
    let entries = fs::read_dir(dir).map_err(|e| io_error("read", dir, e))?;
    for e in entries.flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            collect_pids(&e.path(), out)?;
        }
    }
    Ok(())
}

/// rmdir `dir` after the cgroups below it. The kernel may report a cgroup busy
/// for a moment after its last process exited, so EBUSY is retried briefly.
fn rmdir_tree(dir: &Path) -> Result<()> {
    match fs::read_dir(dir) {
        Ok(entries) => {
            for e in entries.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    rmdir_tree(&e.path())?;
                }
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_error("read", dir, e)),
    }
    let mut pause = Duration::from_millis(10);
    let mut attempts = 0;
    loop {
        match fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && attempts < 6 => {
                attempts += 1;
                std::thread::sleep(pause);
                pause *= 2;
            }
            Err(e) => return Err(io_error("remove", dir, e)),
        }
    }
}

fn mkdir(dir: &Path) -> Result<()> {
    match fs::create_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(io_error("create", dir, e)),
    }
}

fn read(path: &Path) -> Result<String> {
    fs::read_to_string(path).map_err(|e| io_error("read", path, e))
}

/// Write `value` to a control file. No O_CREAT: a missing file means the kernel
/// does not offer that knob, which must not turn into a plain file.
fn write_raw(path: &Path, value: &str) -> io::Result<()> {
    let mut f = OpenOptions::new().write(true).truncate(true).open(path)?;
    f.write_all(value.as_bytes())
}

fn write(path: &Path, value: &str) -> Result<()> {
    write_raw(path, value).map_err(|e| io_error("write to", path, e))
}

/// Write a control file for `purpose` (a docker option or an action), naming
/// both in the error.
fn set(path: &Path, value: &str, purpose: &str) -> Result<()> {
    write_raw(path, value).map_err(|e| {
        let p = path.display();
        match e.raw_os_error() {
            Some(libc::EACCES | libc::EPERM | libc::EROFS) => read_only(&format!("write {p}")),
            Some(libc::ENOENT) => Error::new(
                Kind::Unsupported,
                format!("{p} does not exist: the kernel does not offer it, so {purpose} cannot be honoured on this host"),
            ),
            _ => Error::new(
                Kind::Io,
                format!(
                    "writing {value:?} to {p} for {purpose} failed: {}",
                    Error::from(e).message()
                ),
            ),
        }
    })
}

fn read_only(what: &str) -> Error {
    Error::new(
        Kind::Denied,
        format!(
            "cannot {what}: cgroup filesystem is read-only here: run engined as root on the host, not in a container"
        ),
    )
}

/// One line for a failed file operation, with what to do where there is
/// something to do.
fn io_error(action: &str, path: &Path, e: io::Error) -> Error {
    let p = path.display();
    match e.raw_os_error() {
        Some(libc::EACCES | libc::EPERM | libc::EROFS) => read_only(&format!("{action} {p}")),
        _ => {
            let kind = Error::from(e);
            Error::new(
                kind.kind(),
                format!("cannot {action} {p}: {}", kind.message()),
            )
        }
    }
}

#[cfg(test)]
mod tests;

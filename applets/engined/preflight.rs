//! Pre-flight: what this host gives the engine, checked before the first
//! container rather than discovered by it. `engined --check` prints the report
//! and exits 1 on a blocker; every start logs it.
//!
//! The overlay check mounts a real overlay with its upper layer on the graph
//! root's filesystem: /proc/filesystems listing overlay says nothing about the
//! filesystem under it (XFS formatted with ftype=0, as old SL7 installs are,
//! has no d_type and overlay refuses it; so does an overlay as upper layer).
//! Where it fails, containers get a private copy of their image instead, which
//! works on any filesystem at the price of disk and start time.

use super::Settings;
use berth::error::Result;
use berth::sys::Op;
use std::path::Path;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Ok,
    Warn,
    /// The engine cannot run as configured.
    Fail,
}

#[derive(Debug, Clone)]
pub struct Check {
    pub level: Level,
    pub what: &'static str,
    pub detail: String,
}

#[derive(Debug, Default)]
pub struct Report {
    pub checks: Vec<Check>,
    /// Containers' roots are copies, not overlays.
    pub copy_rootfs: bool,
}

impl Report {
    fn add(&mut self, level: Level, what: &'static str, detail: impl Into<String>) {
        self.checks.push(Check {
            level,
            what,
            detail: detail.into(),
        });
    }
    pub fn blockers(&self) -> Vec<&Check> {
        self.checks
            .iter()
            .filter(|c| c.level == Level::Fail)
            .collect()
    }
    /// One line per check, as `--check` prints them.
    pub fn lines(&self) -> Vec<String> {
        self.checks
            .iter()
            .map(|c| {
                let tag = match c.level {
                    Level::Ok => "ok  ",
                    Level::Warn => "warn",
                    Level::Fail => "FAIL",
                };
                format!("{tag} {:<11} {}", c.what, c.detail)
            })
            .collect()
    }
}

/// Run every check. Needs root (the overlay trial is a real mount).
pub fn run(s: &Settings) -> Report {
    let mut r = Report::default();
    let release = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    r.add(Level::Ok, "kernel", release);
    storage(s, &mut r);
    namespaces(s, &mut r);
    cgroups(&mut r);
    bridge(s, &mut r);
    space(&mut r, "graph", &s.graph);
    if let Some(t) = &s.tmpdir {
        space(&mut r, "tmpdir", t);
    }
    r
}

fn storage(s: &Settings, r: &mut Report) {
    let base = s.graph.join("tmp");
    let dir = base.join(format!("preflight-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    if let Err(e) = std::fs::create_dir_all(&dir) {
        r.add(
            Level::Fail,
            "graph",
            format!("cannot create {}: {e}", dir.display()),
        );
        return;
    }
    let mut why = String::new();
    match d_type(&dir) {
        Ok(true) => r.add(
            Level::Ok,
            "d_type",
            format!("{} reports file types", s.graph.display()),
        ),
        Ok(false) => {
            r.copy_rootfs = true;
            why = "its filesystem does not report file types".to_string();
            r.add(
                Level::Warn,
                "d_type",
                format!(
                    "{}: the filesystem does not report file types (XFS with ftype=0?): overlay cannot use it",
                    s.graph.display()
                ),
            );
        }
        Err(e) => r.add(Level::Warn, "d_type", format!("cannot tell: {e}")),
    }
    let overlay_known = std::fs::read_to_string("/proc/filesystems")
        .map(|f| {
            f.lines()
                .any(|l| l.split_whitespace().last() == Some("overlay"))
        })
        .unwrap_or(false);
    if !overlay_known && !r.copy_rootfs {
        // The module may load on the first mount: the trial decides.
        r.add(
            Level::Warn,
            "overlay",
            "not in /proc/filesystems yet (module not loaded?)",
        );
    }
    if !r.copy_rootfs {
        match overlay_trial(&dir) {
            Ok(()) => r.add(
                Level::Ok,
                "overlay",
                format!(
                    "an overlay with its upper layer on {} mounts",
                    s.graph.display()
                ),
            ),
            Err(e) => {
                r.copy_rootfs = true;
                why = format!("overlay refuses an upper layer there ({e})");
                r.add(
                    Level::Warn,
                    "overlay",
                    format!(
                        "no overlay with its upper layer on {} ({e})",
                        s.graph.display()
                    ),
                );
            }
        }
    }
    if r.copy_rootfs {
        r.add(
            Level::Warn,
            "rootfs",
            format!(
                "containers get a private copy of their image's layers, as {why} (slower starts, more disk): put {} on ext4 or XFS with ftype=1 for overlay",
                s.graph.display()
            ),
        );
    } else {
        r.add(Level::Ok, "rootfs", "overlay over the layer cache");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Whether readdir on `dir`'s filesystem says what a file is.
fn d_type(dir: &Path) -> Result<bool> {
    std::fs::create_dir_all(dir.join("d"))?;
    std::fs::write(dir.join("f"), b"")?;
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| berth::error::Error::invalid("a path with a NUL byte"))?;
    // SAFETY: opendir/readdir/closedir on a valid C string; each entry is read
    // before the next readdir call, and the stream is closed once.
    let known = unsafe {
        let d = libc::opendir(c.as_ptr());
        if d.is_null() {
            return Err(std::io::Error::last_os_error().into());
        }
        let mut known = true;
        loop {
            let e = libc::readdir(d);
            if e.is_null() {
                break;
            }
            let name = std::ffi::CStr::from_ptr((*e).d_name.as_ptr()).to_bytes();
            if (name == b"d" || name == b"f") && (*e).d_type == libc::DT_UNKNOWN {
                known = false;
            }
        }
        libc::closedir(d);
        known
    };
    Ok(known)
}

fn overlay_trial(dir: &Path) -> Result<()> {
    for d in ["lower", "upper", "work", "merged"] {
        std::fs::create_dir_all(dir.join(d))?;
    }
    std::fs::write(dir.join("lower/f"), b"lower")?;
    let merged = dir.join("merged");
    use berth::sys::Sys;
    berth::sys::Linux.run(&Op::Mount {
        source: Some("overlay".into()),
        target: merged.clone(),
        fstype: Some("overlay".into()),
        flags: 0,
        data: Some(format!(
            "lowerdir={},upperdir={},workdir={}",
            dir.join("lower").display(),
            dir.join("upper").display(),
            dir.join("work").display()
        )),
    })?;
    // A write through it must land in the upper layer.
    let wrote = std::fs::write(merged.join("f"), b"upper");
    let _ = berth::sys::Linux.run(&Op::Umount {
        target: merged,
        detach: true,
    });
    wrote?;
    Ok(())
}

fn namespaces(s: &Settings, r: &mut Report) {
    let mut have = Vec::new();
    let mut missing = Vec::new();
    for ns in ["mnt", "pid", "uts", "ipc", "net"] {
        if Path::new(&format!("/proc/self/ns/{ns}")).exists() {
            have.push(ns);
        } else {
            missing.push(ns);
        }
    }
    if missing.is_empty() {
        r.add(Level::Ok, "namespaces", have.join(" "));
    } else {
        r.add(
            Level::Fail,
            "namespaces",
            format!(
                "the kernel lacks {}: containers cannot run",
                missing.join(" ")
            ),
        );
    }
    if s.userns {
        r.add(
            Level::Ok,
            "userns",
            "on: even with SYS_ADMIN a container cannot remount its read-only binds",
        );
    } else {
        r.add(
            Level::Warn,
            "userns",
            "off (user.max_user_namespaces = 0 or an old kernel): a container given SYS_ADMIN could remount a read-only bind",
        );
    }
}

fn cgroups(r: &mut Report) {
    match berth::cgroup::Layout::detect() {
        Ok(l) => {
            let (version, controllers) = match &l {
                berth::cgroup::Layout::V1 { mounts, unified } => (
                    if unified.is_some() {
                        "v1 (hybrid)"
                    } else {
                        "v1"
                    },
                    mounts
                        .keys()
                        .filter(|k| !k.starts_with("name="))
                        .cloned()
                        .collect::<Vec<_>>(),
                ),
                berth::cgroup::Layout::V2 { root } => (
                    "v2",
                    std::fs::read_to_string(root.join("cgroup.controllers"))
                        .unwrap_or_default()
                        .split_whitespace()
                        .map(String::from)
                        .collect(),
                ),
            };
            let lacking: Vec<&str> = ["memory", "cpu", "pids"]
                .into_iter()
                .filter(|c| !controllers.iter().any(|x| x == c))
                .collect();
            let detail = format!("{version}: {}", controllers.join(" "));
            if lacking.is_empty() {
                r.add(Level::Ok, "cgroups", detail);
            } else {
                r.add(
                    Level::Warn,
                    "cgroups",
                    format!(
                        "{detail}; no {} controller: containers asking for those limits are refused",
                        lacking.join(", ")
                    ),
                );
            }
        }
        Err(e) => r.add(
            Level::Warn,
            "cgroups",
            format!("{e}: containers run without limits"),
        ),
    }
}

fn bridge(s: &Settings, r: &mut Report) {
    let Some(cfg) = &s.bridge else {
        r.add(
            Level::Ok,
            "bridge",
            "none (--bridge=none): containers get no network by default",
        );
        return;
    };
    let observed = match berth::net::bridge::observe(cfg.name()) {
        Ok(o) => o,
        Err(e) => {
            r.add(Level::Fail, "bridge", format!("{}: {e}", cfg.name()));
            return;
        }
    };
    match berth::net::bridge::ensure_bridge_plan(cfg, &observed) {
        Ok(n) => {
            let range = match s.fixed_cidr {
                Some(f) => match berth::net::ipam::allocate(
                    n.subnet,
                    Some(f),
                    n.gateway(),
                    &Default::default(),
                ) {
                    Ok(_) => format!(", containers from {f}"),
                    Err(e) => {
                        r.add(Level::Fail, "bridge", format!("--fixed-cidr {f}: {e}"));
                        return;
                    }
                },
                None => String::new(),
            };
            let made = if observed.exists {
                ""
            } else {
                " (engined creates it)"
            };
            r.add(
                Level::Ok,
                "bridge",
                format!(
                    "{}{made}: gateway {}, network {}{range}, MTU {}",
                    n.bridge,
                    n.gateway(),
                    n.subnet,
                    n.mtu
                ),
            );
        }
        Err(e) => r.add(Level::Fail, "bridge", e.to_string()),
    }
}

fn space(r: &mut Report, what: &'static str, p: &Path) {
    let probe = std::iter::successors(Some(p), |p| p.parent()).find(|p| p.exists());
    let Some(probe) = probe else {
        return;
    };
    let Some(free) = berth::fsutil::free_space(probe) else {
        r.add(
            Level::Warn,
            what,
            format!("{}: cannot tell the free space", p.display()),
        );
        return;
    };
    let gib = free as f64 / (1u64 << 30) as f64;
    let detail = format!("{}: {gib:.1} GiB free", p.display());
    if free < 100 << 20 {
        r.add(
            Level::Fail,
            what,
            format!("{detail}: free some space first"),
        );
    } else if free < 2 << 30 {
        r.add(
            Level::Warn,
            what,
            format!("{detail}: images and logs will not fit long"),
        );
    } else {
        r.add(Level::Ok, what, detail);
    }
}

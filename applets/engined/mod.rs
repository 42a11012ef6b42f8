//! `engined`: the container engine. It speaks the Docker Engine API v1.41 on a
//! unix socket (and TCP), so the stock docker CLI and Ansible drive it; each
//! container is looked after by its own shim process (see `shim.rs`), so engined
//! can stop, crash and start again without touching a running job.
//!
//! The design, the on-disk layout and the runtime's steps: docs/engined.md.

mod api;
mod containers;
mod events;
mod exec;
mod images;
mod model;
mod nsexec;
mod pattern;
mod ports;
mod runtime;
pub mod shim;
mod state;

use argh::FromArgs;
use berth::error::{Context, Error, Kind, Result};
use berth::http::{Listen, Server, ServerOptions};
use berth::net::bridge::{BridgeConfig, BridgeNet};
use berth::net::ipam::Ipv4Cidr;
use berth::store::local::LocalStore;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex};

#[derive(FromArgs)]
/// The container engine: Docker Engine API v1.41 for the stock docker CLI.
///
/// Flags keep dockerd's names. SELinux labels are out of scope
/// (--selinux-enabled is accepted and must be false).
struct Args {
    /// socket to listen on: unix:///run/berth/engined.sock (default), tcp://ADDR:PORT; repeatable
    #[argh(option, short = 'H')]
    host: Vec<String>,
    /// graph root: images, layers and containers (default /var/lib/berth)
    #[argh(option, short = 'g')]
    data_root: Option<PathBuf>,
    /// the same as --data-root (dockerd's old name)
    #[argh(option)]
    graph: Option<PathBuf>,
    /// pid file (default /run/berth/engined.pid)
    #[argh(option, short = 'p')]
    pidfile: Option<PathBuf>,
    /// directory of the containers' control sockets (default /run/berth)
    #[argh(option)]
    exec_root: Option<PathBuf>,
    /// attach containers to this existing bridge (add no address to it); "none" for no bridge network
    #[argh(option, short = 'b')]
    bridge: Option<String>,
    /// address and network of engined's own bridge berth0 (default 172.18.0.1/16)
    #[argh(option)]
    bip: Option<String>,
    /// give containers addresses from this range only (inside the bridge's network)
    #[argh(option)]
    fixed_cidr: Option<String>,
    /// MTU of the containers' interfaces (default: the bridge's)
    #[argh(option)]
    mtu: Option<u32>,
    /// log driver: json-file (default) or none
    #[argh(option)]
    log_driver: Option<String>,
    /// log driver option KEY=VALUE (max-size=10m, max-file=3); repeatable
    #[argh(option)]
    log_opt: Vec<String>,
    /// parent cgroup of the containers' cgroups (default berth)
    #[argh(option)]
    cgroup_parent: Option<String>,
    /// registries searched for short names; repeatable
    #[argh(option)]
    add_registry: Vec<String>,
    /// registries never contacted; repeatable
    #[argh(option)]
    block_registry: Vec<String>,
    /// registries allowed over plain HTTP or unverified TLS; repeatable
    #[argh(option)]
    insecure_registry: Vec<String>,
    /// accepted for dockerd's command lines; SELinux labels are not supported, so only false
    #[argh(option)]
    selinux_enabled: Option<String>,
    /// accepted; IPv6 is not configured by berth (only false)
    #[argh(option)]
    ipv6: Option<String>,
    /// more log lines
    #[argh(switch, short = 'D')]
    debug: bool,
}

/// What engined runs with.
pub struct Settings {
    pub graph: PathBuf,
    /// Where the shims' sockets live: a short path (a unix socket's path has
    /// 108 bytes at most), on tmpfs like dockerd's --exec-root.
    pub exec_root: PathBuf,
    pub hosts: Vec<String>,
    pub pidfile: PathBuf,
    /// None: no bridge network (`--bridge=none`).
    pub bridge: Option<BridgeConfig>,
    pub fixed_cidr: Option<Ipv4Cidr>,
    pub log_json: bool,
    pub log_rotation: berth::logfile::Rotation,
    pub cgroup_parent: String,
    pub userns: bool,
    pub registries: berth::registry::settings::Settings,
}

/// A container's life as engined follows it: exits seen and removal, for `wait`.
#[derive(Default)]
pub struct Life {
    m: Mutex<LifeState>,
    cv: Condvar,
}

#[derive(Default, Clone)]
pub struct LifeState {
    pub exits: u64,
    pub code: i32,
    pub running: bool,
    pub removed: bool,
}

impl Life {
    pub fn get(&self) -> LifeState {
        self.m.lock().unwrap().clone()
    }
    pub fn update(&self, f: impl FnOnce(&mut LifeState)) {
        f(&mut self.m.lock().unwrap());
        self.cv.notify_all();
    }
    /// Wait until `done` holds (re-checked at every change), at most `limit`.
    pub fn wait(&self, limit: std::time::Duration, done: impl Fn(&LifeState) -> bool) -> LifeState {
        let deadline = std::time::Instant::now() + limit;
        let mut g = self.m.lock().unwrap();
        while !done(&g) {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                break;
            }
            g = self.cv.wait_timeout(g, left).unwrap().0;
        }
        g.clone()
    }
}

/// The engine's shared state.
pub struct Engine {
    pub s: Settings,
    pub store: LocalStore,
    pub dir: state::Dir,
    pub net: Option<BridgeNet>,
    pub events: events::Bus,
    /// Held while containers are created, renamed and removed (names and
    /// addresses stay unique).
    pub lock: Mutex<()>,
    pub lives: Mutex<HashMap<String, Arc<Life>>>,
    /// Attachments made before their container started.
    pub pending: Mutex<HashMap<String, Vec<Arc<containers::Slot>>>>,
    pub execs: Mutex<HashMap<String, Arc<exec::Exec>>>,
    /// The berth binary, re-executed for shims and execs.
    pub exe: PathBuf,
}

impl Engine {
    pub fn life(&self, id: &str) -> Arc<Life> {
        self.lives
            .lock()
            .unwrap()
            .entry(id.to_string())
            .or_default()
            .clone()
    }
}

/// dockerd lets `--flag=value` and bare boolean flags through; argh wants
/// `--flag value`. Rewrite the first into the second, and give the boolean
/// flags dockerd users write bare an explicit `true`.
fn normalise(args: &[String]) -> Vec<String> {
    const BOOLS: [&str; 2] = ["--selinux-enabled", "--ipv6"];
    let mut out = Vec::new();
    let mut it = args.iter().peekable();
    while let Some(a) = it.next() {
        if let Some((k, v)) = a.split_once('=').filter(|(k, _)| k.starts_with("--")) {
            out.push(k.to_string());
            out.push(v.to_string());
        } else if BOOLS.contains(&a.as_str())
            && !it.peek().is_some_and(|n| *n == "true" || *n == "false")
        {
            out.push(a.clone());
            out.push("true".into());
        } else {
            out.push(a.clone());
        }
    }
    out
}

fn settings(a: &Args) -> Result<Settings> {
    if a.selinux_enabled.as_deref().is_some_and(|v| v != "false") {
        return Err(Error::config(
            "--selinux-enabled: SELinux labels are not supported by berth; use --selinux-enabled=false",
        ));
    }
    if a.ipv6.as_deref().is_some_and(|v| v != "false") {
        return Err(Error::config(
            "--ipv6: IPv6 networking is not configured by berth; use --ipv6=false",
        ));
    }
    let graph = a
        .data_root
        .clone()
        .or(a.graph.clone())
        .unwrap_or_else(|| berth::store::local::root_from(None));
    let bridge = match a.bridge.as_deref() {
        Some("none") => None,
        Some(name) => Some(BridgeConfig::Given {
            name: name.to_string(),
            mtu: a.mtu,
        }),
        None => Some(BridgeConfig::Own {
            name: "berth0".into(),
            cidr: a
                .bip
                .as_deref()
                .unwrap_or("172.18.0.1/16")
                .parse()
                .map_err(|e: Error| e.context("--bip"))?,
            mtu: a.mtu,
        }),
    };
    let fixed_cidr = a
        .fixed_cidr
        .as_deref()
        .map(|c| c.parse::<Ipv4Cidr>().map_err(|e| e.context("--fixed-cidr")))
        .transpose()?;
    let log_json = match a.log_driver.as_deref().unwrap_or("json-file") {
        "json-file" => true,
        "none" => false,
        other => {
            return Err(Error::config(format!(
                "--log-driver {other}: berth writes json-file logs (or none)"
            )));
        }
    };
    let mut opts = Vec::new();
    for o in &a.log_opt {
        let (k, v) = o
            .split_once('=')
            .ok_or_else(|| Error::config(format!("--log-opt {o:?}: expected KEY=VALUE")))?;
        opts.push((k.to_string(), v.to_string()));
    }
    let log_rotation = berth::logfile::Rotation::from_opts(opts)?;
    let userns = std::fs::read_to_string("/proc/sys/user/max_user_namespaces")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .is_some_and(|n| n > 0);
    let registries = berth::registry::settings::Settings::load(None)?.with_flags(
        &a.add_registry,
        &a.block_registry,
        &a.insecure_registry,
    )?;
    Ok(Settings {
        hosts: if a.host.is_empty() {
            vec!["unix:///run/berth/engined.sock".into()]
        } else {
            a.host.clone()
        },
        pidfile: a
            .pidfile
            .clone()
            .unwrap_or_else(|| PathBuf::from("/run/berth/engined.pid")),
        graph,
        exec_root: a
            .exec_root
            .clone()
            .unwrap_or_else(|| PathBuf::from("/run/berth")),
        bridge,
        fixed_cidr,
        log_json,
        log_rotation,
        cgroup_parent: a.cgroup_parent.clone().unwrap_or_else(|| "berth".into()),
        userns,
        registries,
    })
}

pub fn main(name: &str, args: &[String]) -> Result<u8> {
    let args = normalise(args);
    let a: Args = match crate::applets::parse_args(name, &args) {
        Ok(a) => a,
        Err(code) => return Ok(code),
    };
    berth::log::init(
        if a.debug {
            log::LevelFilter::Debug
        } else {
            log::LevelFilter::Info
        },
        berth::log::Format::Text,
        &[],
    );
    if !berth::sys::is_root() {
        return Err(Error::new(
            Kind::Denied,
            "engined runs containers and must run as root",
        ));
    }
    let s = settings(&a)?;
    let store = LocalStore::open(&s.graph)?;
    let dir = state::Dir::open(&s.graph)?;
    let shims = s.exec_root.join("shims");
    std::fs::create_dir_all(&shims).with_context(|| format!("create {}", shims.display()))?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&shims, std::fs::Permissions::from_mode(0o700))?;
    }
    let net = match &s.bridge {
        None => None,
        Some(cfg) => {
            let observed = berth::net::bridge::observe(cfg.name())?;
            let n = berth::net::bridge::ensure_bridge_plan(cfg, &observed)?;
            berth::sys::apply(&berth::sys::Linux, &n.plan)?;
            if let Some(r) = &s.fixed_cidr {
                // Refused now rather than at the first container.
                berth::net::ipam::allocate(n.subnet, Some(*r), n.gateway(), &Default::default())?;
            }
            Some(n)
        }
    };
    let exe = std::env::current_exe().context("find the berth binary")?;
    let engine = Arc::new(Engine {
        s,
        store,
        dir,
        net,
        events: events::Bus::default(),
        lock: Mutex::new(()),
        lives: Mutex::new(HashMap::new()),
        pending: Mutex::new(HashMap::new()),
        execs: Mutex::new(HashMap::new()),
        exe,
    });
    // One daemon per graph root: two would adopt, restart and remove the same
    // containers under each other.
    let lock_path = engine.s.graph.join("engined.lock");
    let Some(_graph_lock) = berth::fsutil::flock(&lock_path, true, false)? else {
        let holder = std::fs::read_to_string(engine.s.graph.join("engined.pid"))
            .map(|p| format!(" (pid {})", p.trim()))
            .unwrap_or_default();
        return Err(Error::new(
            Kind::Conflict,
            format!(
                "another engined uses {}{holder}: stop it first, or give this one its own --data-root",
                engine.s.graph.display()
            ),
        ));
    };
    let _ = berth::fsutil::atomic_write(
        &engine.s.graph.join("engined.pid"),
        format!("{}\n", std::process::id()).as_bytes(),
    );
    write_pidfile(&engine.s.pidfile)?;
    containers::adopt_all(&engine);
    let handler = Arc::new(api::Api::new(engine.clone()));
    let mut servers = Vec::new();
    for h in engine.s.hosts.clone() {
        let listen = if let Some(p) = h.strip_prefix("unix://") {
            Listen::Unix(PathBuf::from(p))
        } else if let Some(a) = h.strip_prefix("tcp://") {
            log::warn!(
                "listening on tcp://{a} without TLS: anyone who reaches it controls this host (client certificates are the engine-site configuration)"
            );
            Listen::Tcp(a.to_string())
        } else if h.starts_with('/') {
            Listen::Unix(PathBuf::from(&h))
        } else {
            return Err(Error::config(format!(
                "-H {h}: expected unix:///PATH or tcp://ADDR:PORT"
            )));
        };
        let opts = ServerOptions {
            listen,
            tls: None,
            limits: berth::http::front::Limits::from_env(),
            workers: 16,
            auth_required: false,
            access_log: true,
            headers: Vec::new(),
        };
        let server = Server::start(opts, handler.clone())?;
        log::info!("API listening on {h}");
        servers.push(server);
    }
    log::info!(
        "engined ready: graph {}, {} containers, network {}, user namespaces {}",
        engine.s.graph.display(),
        engine.dir.ids().len(),
        engine
            .net
            .as_ref()
            .map(|n| format!("bridge {} ({})", n.bridge, n.subnet))
            .unwrap_or_else(|| "none".into()),
        if engine.s.userns { "on" } else { "off" }
    );
    wait_for_termination();
    log::info!("engined stopping; containers keep running and are adopted at the next start");
    let _ = std::fs::remove_file(&engine.s.pidfile);
    drop(servers);
    Ok(0)
}

fn write_pidfile(p: &std::path::Path) -> Result<()> {
    if let Ok(old) = std::fs::read_to_string(p)
        && let Ok(pid) = old.trim().parse::<i32>()
        && pid != std::process::id() as i32
        && std::path::Path::new(&format!("/proc/{pid}")).exists()
    {
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        if comm.trim() == "engined" || comm.trim() == "berth" {
            return Err(Error::new(
                Kind::Conflict,
                format!("{}: engined {pid} is running; stop it first", p.display()),
            ));
        }
    }
    if let Some(d) = p.parent() {
        std::fs::create_dir_all(d).with_context(|| format!("create {}", d.display()))?;
    }
    berth::fsutil::atomic_write(p, format!("{}\n", std::process::id()).as_bytes())
}

/// Block until SIGTERM or SIGINT.
fn wait_for_termination() {
    use berth::proc::sig;
    let set = sig::bit(libc::SIGTERM) | sig::bit(libc::SIGINT);
    sig::block(set);
    let _ = sig::wait(set, None);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dockerd_style_flags_are_normalised() {
        let a: Vec<String> = [
            "--fixed-cidr=10.0.3.144/28",
            "--ipv6",
            "-g",
            "/docker",
            "--selinux-enabled=false",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(
            normalise(&a),
            [
                "--fixed-cidr",
                "10.0.3.144/28",
                "--ipv6",
                "true",
                "-g",
                "/docker",
                "--selinux-enabled",
                "false"
            ]
        );
    }
}

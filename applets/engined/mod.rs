//! `engined`: the container engine. It speaks the Docker Engine API v1.41 on a
//! unix socket (and TCP), so the stock docker CLI and Ansible drive it; each
//! container is looked after by its own shim process (see `shim.rs`), so engined
//! can stop, crash and start again without touching a running job.
//!
//! The design, the on-disk layout and the runtime's steps: docs/engined.md.

mod api;
mod config;
mod containers;
mod events;
mod exec;
mod images;
mod model;
mod nsexec;
mod pattern;
mod ports;
mod preflight;
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
use std::path::{Path, PathBuf};
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
    /// serve TCP hosts with TLS (no client certificates: only with --tlsverify off loopback)
    #[argh(option)]
    tls: Option<String>,
    /// serve TCP hosts with TLS and require client certificates signed by --tlscacert
    #[argh(option)]
    tlsverify: Option<String>,
    /// CA of the client certificates (default ca.pem in DOCKER_CERT_PATH, from sysconfig or the environment, or ~/.docker)
    #[argh(option)]
    tlscacert: Option<PathBuf>,
    /// server certificate (default cert.pem beside the CA)
    #[argh(option)]
    tlscert: Option<PathBuf>,
    /// server key (default key.pem beside the CA)
    #[argh(option)]
    tlskey: Option<PathBuf>,
    /// dockerd's daemon.json to read (its keys: data-root, bridge, fixed-cidr, mtu, hosts, tls…)
    #[argh(option)]
    config_file: Option<PathBuf>,
    /// a /etc/sysconfig/docker* file to read (OPTIONS=, DOCKER_NETWORK_OPTIONS=, ADD_REGISTRY=, …; a missing one is skipped); repeatable
    #[argh(option)]
    sysconfig: Vec<PathBuf>,
    /// name containers after the reverse DNS of the address they get (also per container: label berth.hostname-from-dns=true)
    #[argh(option)]
    hostname_from_dns: Option<String>,
    /// give every container a log directory on the host, bound at this path inside (per container: label berth.log-dir=PATH)
    #[argh(option)]
    log_dir: Option<String>,
    /// where the containers' log directories are made (default /var/log/berth; logcollect's --log-root)
    #[argh(option)]
    log_root: Option<PathBuf>,
    /// containers-policy.json that pulls and runs must satisfy (default /etc/containers/policy.json when it exists)
    #[argh(option)]
    signature_policy: Option<PathBuf>,
    /// accepted and ignored: berth uses overlay (or a copy where overlay cannot work)
    #[argh(option)]
    storage_driver: Option<String>,
    /// accepted and ignored, as --storage-driver; repeatable
    #[argh(option)]
    storage_opt: Vec<String>,
    /// print the pre-flight report (overlay, namespaces, cgroups, bridge, space) and exit: 1 on a blocker
    #[argh(switch)]
    check: bool,
    /// read every source (flags, --sysconfig, --config-file), print the settings with where each came from, and exit
    #[argh(switch)]
    validate: bool,
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
    /// TLS of the TCP hosts (`--tls`, `--tlsverify`).
    pub tls: Option<berth::tls::ServerSettings>,
    /// Name containers after the reverse DNS of their address.
    pub hostname_from_dns: bool,
    /// `DOCKER_TMPDIR`.
    pub tmpdir: Option<PathBuf>,
    /// Containers' roots are private copies of their layers (the pre-flight
    /// found no overlay on the graph root).
    pub copy_rootfs: bool,
    /// `--log-dir`: the default in-container path of a log directory.
    pub log_dir_target: Option<String>,
    /// `--log-root`.
    pub log_root: PathBuf,
    /// `--signature-policy`: images pulled and run must satisfy it.
    pub policy: Option<berth::signing::Policy>,
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

fn settings(r: &config::Resolved) -> Result<Settings> {
    use config::bad;
    if r.flag("selinux-enabled")? == Some(true) {
        return Err(bad(
            r.get("selinux-enabled").unwrap(),
            "SELinux labels are not supported by berth; use --selinux-enabled=false",
        ));
    }
    if r.flag("ipv6")? == Some(true) {
        return Err(bad(
            r.get("ipv6").unwrap(),
            "IPv6 networking is not configured by berth; use --ipv6=false",
        ));
    }
    let graph = r
        .value("data-root")
        .map(PathBuf::from)
        .unwrap_or_else(|| berth::store::local::root_from(None));
    let mtu = match r.get("mtu") {
        None => None,
        Some(i) => Some(
            i.value
                .parse::<u32>()
                .ok()
                .filter(|m| (68..=65535).contains(m))
                .ok_or_else(|| bad(i, "expected an MTU from 68 to 65535"))?,
        ),
    };
    let bridge = match r.value("bridge") {
        Some("none") => None,
        Some(name) => Some(BridgeConfig::Given {
            name: name.to_string(),
            mtu,
        }),
        None => Some(BridgeConfig::Own {
            name: "berth0".into(),
            cidr: match r.get("bip") {
                None => "172.18.0.1/16".parse()?,
                Some(i) => i
                    .value
                    .parse()
                    .map_err(|e: Error| bad(i, &format!("expected ADDRESS/LENGTH: {e}")))?,
            },
            mtu,
        }),
    };
    let fixed_cidr = r
        .get("fixed-cidr")
        .map(|i| {
            i.value
                .parse::<Ipv4Cidr>()
                .map_err(|e| bad(i, &format!("expected NETWORK/LENGTH: {e}")))
        })
        .transpose()?;
    let log_json = match r.get("log-driver") {
        None => true,
        Some(i) => match i.value.as_str() {
            "json-file" => true,
            "none" => false,
            _ => return Err(bad(i, "berth writes json-file logs (or none)")),
        },
    };
    let mut opts = Vec::new();
    for i in r.list("log-opt") {
        let (k, v) = i
            .value
            .split_once('=')
            .ok_or_else(|| bad(i, "expected KEY=VALUE"))?;
        // each option alone first, so a bad one is named with its file:line
        berth::logfile::Rotation::from_opts(vec![(k.to_string(), v.to_string())])
            .map_err(|e| bad(i, &e.to_string()))?;
        opts.push((k.to_string(), v.to_string()));
    }
    let log_rotation = berth::logfile::Rotation::from_opts(opts)
        .map_err(|e| Error::config(format!("--log-opt: {e}")))?;
    let userns = std::fs::read_to_string("/proc/sys/user/max_user_namespaces")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .is_some_and(|n| n > 0);
    let values = |k: &str| -> Vec<String> { r.list(k).iter().map(|i| i.value.clone()).collect() };
    for k in ["add-registry", "block-registry", "insecure-registry"] {
        for i in r.list(k) {
            berth::registry::settings::Settings::default()
                .with_flags(std::slice::from_ref(&i.value), &[], &[])
                .map_err(|_| bad(i, "expected a registry as HOST[:PORT]"))?;
        }
    }
    for i in r.list("host") {
        let ok = match i.value.split_once("://") {
            Some(("unix", p)) => p.starts_with('/'),
            Some(("tcp", a)) => a
                .rsplit_once(':')
                .is_some_and(|(_, p)| p.parse::<u16>().is_ok()),
            _ => false,
        };
        if !ok {
            return Err(bad(i, "expected unix:///PATH or tcp://ADDR:PORT"));
        }
    }
    let registries = berth::registry::settings::Settings::load(None)?.with_flags(
        &values("add-registry"),
        &values("block-registry"),
        &values("insecure-registry"),
    )?;
    let hosts = if r.list("host").is_empty() {
        vec!["unix:///run/berth/engined.sock".into()]
    } else {
        values("host")
    };
    let tls = tls_settings(r, &hosts)?;
    Ok(Settings {
        hosts,
        tls,
        pidfile: r
            .value("pidfile")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/run/berth/engined.pid")),
        graph,
        exec_root: r
            .value("exec-root")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/run/berth")),
        bridge,
        fixed_cidr,
        log_json,
        log_rotation,
        cgroup_parent: r.value("cgroup-parent").unwrap_or("berth").to_string(),
        userns,
        registries,
        hostname_from_dns: r.flag("hostname-from-dns")?.unwrap_or(false),
        tmpdir: r.value("tmpdir").map(PathBuf::from),
        copy_rootfs: false,
        log_dir_target: r.value("log-dir").map(str::to_string),
        log_root: r
            .value("log-root")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/var/log/berth")),
        policy: berth::signing::Policy::from_flag(r.value("signature-policy").map(Path::new))?,
    })
}

/// TLS for the TCP hosts, as dockerd: `--tlsverify` requires client
/// certificates signed by `--tlscacert`; `--tls` encrypts only. A TCP host off
/// loopback without client certificates is refused: whoever reaches the API
/// owns the node.
fn tls_settings(
    r: &config::Resolved,
    hosts: &[String],
) -> Result<Option<berth::tls::ServerSettings>> {
    let verify = r.flag("tlsverify")?.unwrap_or(false);
    let tls = verify || r.flag("tls")?.unwrap_or(false);
    for h in hosts {
        let Some(a) = h.strip_prefix("tcp://") else {
            continue;
        };
        let loopback = a
            .rsplit_once(':')
            .map(|(host, _)| host.trim_matches(['[', ']']))
            .is_some_and(|host| {
                host == "localhost"
                    || host
                        .parse::<std::net::IpAddr>()
                        .is_ok_and(|ip| ip.is_loopback())
            });
        if !verify && !loopback {
            return Err(Error::config(format!(
                "-H {h}: the remote API needs client certificates: add --tlsverify --tlscacert CA --tlscert CERT --tlskey KEY"
            )));
        }
    }
    if !tls {
        return Ok(None);
    }
    let dir = r
        .value("cert-path")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("DOCKER_CERT_PATH").map(PathBuf::from))
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into()))
                .join(".docker")
        });
    let file = |k: &str, default: &str| {
        r.value(k)
            .map(PathBuf::from)
            .unwrap_or_else(|| dir.join(default))
    };
    Ok(Some(berth::tls::ServerSettings {
        certificate: file("tlscert", "cert.pem"),
        key: file("tlskey", "key.pem"),
        client_cas: if verify {
            vec![file("tlscacert", "ca.pem")]
        } else {
            Vec::new()
        },
        tls13_only: false,
    }))
}

pub fn main(name: &str, args: &[String]) -> Result<u8> {
    let args = config::normalise(args);
    let a: Args = match crate::applets::parse_args(name, &args) {
        Ok(a) => a,
        Err(code) => return Ok(code),
    };
    berth::log::init_daemon(a.debug);
    let (resolved, warnings) = config::gather(&a)?;
    for w in &warnings {
        log::warn!("{w}");
    }
    if a.validate {
        settings(&resolved)?;
        for i in resolved.items() {
            println!("{}={}\t# {}", i.key, i.value, i.at);
        }
        return Ok(0);
    }
    if !berth::sys::is_root() {
        return Err(Error::new(
            Kind::Denied,
            "engined runs containers and must run as root",
        ));
    }
    let mut s = settings(&resolved)?;
    if let Some(t) = &s.tmpdir {
        // dockerd's DOCKER_TMPDIR: where `docker load` archives are unpacked
        // before their blobs are checked and stored.
        std::fs::create_dir_all(t).with_context(|| format!("DOCKER_TMPDIR {}", t.display()))?;
    }
    let store = LocalStore::open(&s.graph)?;
    let dir = state::Dir::open(&s.graph)?;
    let report = preflight::run(&s);
    if a.check {
        for l in report.lines() {
            println!("{l}");
        }
        return Ok(if report.blockers().is_empty() { 0 } else { 1 });
    }
    for (c, l) in report.checks.iter().zip(report.lines()) {
        match c.level {
            preflight::Level::Ok => log::info!("pre-flight: {l}"),
            _ => log::warn!("pre-flight: {l}"),
        }
    }
    if let Some(b) = report.blockers().first() {
        return Err(Error::config(format!("{}: {}", b.what, b.detail)));
    }
    s.copy_rootfs = report.copy_rootfs;
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
            if engine.s.tls.is_none() {
                log::warn!(
                    "listening on tcp://{a} without TLS: any local user who reaches it controls this host"
                );
            }
            Listen::Tcp(a.to_string())
        } else if h.starts_with('/') {
            Listen::Unix(PathBuf::from(&h))
        } else {
            return Err(Error::config(format!(
                "-H {h}: expected unix:///PATH or tcp://ADDR:PORT"
            )));
        };
        let tls = match (&listen, &engine.s.tls) {
            (Listen::Tcp(_), Some(t)) => Some(berth::tls::server_config(t)?),
            _ => None,
        };
        let opts = ServerOptions {
            listen,
            tls,
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

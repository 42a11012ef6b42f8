//! Containers: create, start, stop, kill, restart, wait, rename, remove, list,
//! inspect, top, logs, attach and resize, as the Docker Engine API v1.41 has them.
//!
//! engined decides (names, addresses, the command, the image's layers and its
//! lease) and records; the container's shim does (namespaces, stdio, logs,
//! ports, restarts). engined follows each running container through one
//! connection to its shim (the monitor): exits arrive there, and `wait`,
//! `--rm` and events are driven from them.

use super::model::{CreateBody, HostConfig};
use super::runtime::Bind;
use super::shim::ShimConfig;
use super::state::{self, NetAssign, Record, State};
use super::{Engine, LifeState};
use berth::error::{Context, Error, Kind, Result};
use berth::http::server::Upgraded;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// An attach made before its container started.
pub struct Pending {
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub up: Upgraded,
}

/// An attachment registered while its request is answered: the connection
/// arrives a moment later (once the 101 has gone out), possibly after the
/// client's next request, `start`, which must wait for it. docker attaches
/// before it starts precisely so no output is missed.
pub struct Slot {
    stdin: bool,
    stdout: bool,
    stderr: bool,
    up: std::sync::Mutex<Option<Upgraded>>,
    cv: std::sync::Condvar,
}

impl Slot {
    pub fn fill(&self, up: Upgraded) {
        *self.up.lock().unwrap() = Some(up);
        self.cv.notify_all();
    }

    fn take(&self, limit: Duration) -> Option<Pending> {
        let mut g = self.up.lock().unwrap();
        let deadline = std::time::Instant::now() + limit;
        while g.is_none() {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return None;
            }
            g = self.cv.wait_timeout(g, left).unwrap().0;
        }
        g.take().map(|up| Pending {
            stdin: self.stdin,
            stdout: self.stdout,
            stderr: self.stderr,
            up,
        })
    }
}

/// What a state-changing call did.
pub enum Outcome {
    Done,
    /// Already in that state (the API answers 304).
    NotModified,
}

// ------------------------------------------------------------------ lookups

/// The container an id, a unique id prefix or a name stands for.
pub fn resolve(e: &Engine, what: &str) -> Result<String> {
    let what = what.trim_start_matches('/');
    let ids = e.dir.ids();
    if ids.iter().any(|i| i == what) {
        return Ok(what.to_string());
    }
    for id in &ids {
        if let Ok(r) = e.dir.load_record(id)
            && r.name == what
        {
            return Ok(id.clone());
        }
    }
    if !what.is_empty() && what.bytes().all(|b| b.is_ascii_hexdigit()) {
        let m: Vec<&String> = ids.iter().filter(|i| i.starts_with(what)).collect();
        match m.len() {
            1 => return Ok(m[0].clone()),
            n if n > 1 => {
                return Err(Error::invalid(format!(
                    "multiple IDs found with provided prefix: {what}"
                )));
            }
            _ => {}
        }
    }
    Err(Error::not_found(format!("No such container: {what}")))
}

/// How long a create waits for the reverse DNS of a container's address.
const DNS_TIMEOUT: Duration = Duration::from_secs(3);

/// Whether the container is to be named after its address's reverse DNS: the
/// daemon's `--hostname-from-dns`, or the label `berth.hostname-from-dns`,
/// which also turns it off for one container.
fn wants_dns_name(e: &Engine, c: &super::model::Config) -> bool {
    match c
        .labels
        .as_ref()
        .and_then(|l| l.get("berth.hostname-from-dns"))
        .map(String::as_str)
    {
        Some("true") | Some("1") => true,
        Some(_) => false,
        None => e.s.hostname_from_dns,
    }
}

/// `Config.Volumes` (`-v /path`, Ansible's `volumes: [/path]`) that no bind
/// or mount covers: an anonymous volume each, as Docker makes them. berth has
/// no volume API, so they go with their container.
fn anonymous_volumes(
    e: &Engine,
    config: &super::model::Config,
    hc: &super::model::HostConfig,
) -> Result<Vec<super::state::Volume>> {
    let mut bound: Vec<PathBuf> = Vec::new();
    for b in hc.binds.iter().flatten() {
        bound.push(parse_bind(b)?.target);
    }
    for m in hc.mounts.iter().flatten() {
        bound.push(PathBuf::from(&m.target));
    }
    let mut out: Vec<super::state::Volume> = Vec::new();
    for target in config.volumes.iter().flat_map(|v| v.keys()) {
        if !target.starts_with('/') {
            return Err(Error::invalid(format!(
                "invalid volume {target:?}: the container path must be absolute"
            )));
        }
        let clean = |p: &Path| p.components().collect::<PathBuf>();
        if bound.iter().any(|b| clean(b) == clean(Path::new(target))) {
            continue;
        }
        let v = super::state::Volume {
            name: random_id(),
            target: target.clone(),
        };
        let data = v.data(&e.s.graph);
        if let Err(err) = std::fs::create_dir_all(&data) {
            for made in &out {
                let _ = std::fs::remove_dir_all(e.s.graph.join("volumes").join(&made.name));
            }
            return Err(Error::from(err).context(format!("create volume {}", data.display())));
        }
        out.push(v);
    }
    Ok(out)
}

fn remove_volumes(e: &Engine, r: &Record) {
    remove_volumes_of(e, &r.volumes);
}

fn remove_volumes_of(e: &Engine, volumes: &[super::state::Volume]) {
    for v in volumes {
        let dir = e.s.graph.join("volumes").join(&v.name);
        if let Err(err) = std::fs::remove_dir_all(&dir) {
            log::warn!("volume {}: {err}", dir.display());
        }
    }
}

pub fn hostname_of(r: &Record) -> String {
    if r.config.hostname.is_empty() {
        r.id[..12].to_string()
    } else {
        r.config.hostname.clone()
    }
}

/// `-v HOST:CTR[:ro|rw]` (and Docker's other mode words, which berth has no use
/// for). A name instead of a host path would be a named volume: not supported.
pub fn parse_bind(s: &str) -> Result<Bind> {
    let parts: Vec<&str> = s.split(':').collect();
    let (src, dst, mode) = match parts.as_slice() {
        [a] => {
            return Err(Error::invalid(format!(
                "invalid bind {a:?}: anonymous volumes are not supported by berth; bind a host directory (-v /host/path:{a})"
            )));
        }
        [a, b] => (*a, *b, ""),
        [a, b, m] => (*a, *b, *m),
        _ => {
            return Err(Error::invalid(format!(
                "invalid bind {s:?}: expected HOST:CONTAINER[:ro|rw]"
            )));
        }
    };
    if !src.starts_with('/') {
        return Err(Error::invalid(format!(
            "invalid bind {s:?}: named volumes are not supported by berth; bind a host directory (-v /host/path:{dst})"
        )));
    }
    if !dst.starts_with('/') {
        return Err(Error::invalid(format!(
            "invalid bind {s:?}: the container path must be absolute"
        )));
    }
    let mut read_only = false;
    for m in mode.split(',').filter(|m| !m.is_empty()) {
        match m {
            "ro" => read_only = true,
            "rw" | "z" | "Z" | "rprivate" | "private" | "rslave" | "slave" | "rshared"
            | "shared" | "nocopy" | "delegated" | "cached" | "consistent" => {}
            other => {
                return Err(Error::invalid(format!(
                    "invalid bind {s:?}: unknown mode {other:?}"
                )));
            }
        }
    }
    Ok(Bind {
        source: PathBuf::from(src),
        target: PathBuf::from(dst),
        read_only,
        copy_up: false,
    })
}

fn valid_name(n: &str) -> bool {
    let mut b = n.bytes();
    b.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && n.len() >= 2
        && n.bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'.' || c == b'-')
}

/// A name like docker's `adjective_scientist`.
fn random_name(e: &Engine) -> String {
    const A: [&str; 16] = [
        "brave", "calm", "eager", "fervent", "gentle", "happy", "jolly", "keen", "lucid", "merry",
        "nifty", "quirky", "serene", "sharp", "vibrant", "wizardly",
    ];
    const B: [&str; 16] = [
        "bohr",
        "curie",
        "dirac",
        "einstein",
        "fermi",
        "feynman",
        "heisenberg",
        "higgs",
        "meitner",
        "noether",
        "pauli",
        "planck",
        "rutherford",
        "schrodinger",
        "wu",
        "yukawa",
    ];
    for _ in 0..100 {
        let mut r = [0u8; 2];
        berth::util::random_bytes(&mut r);
        let n = format!("{}_{}", A[r[0] as usize % 16], B[r[1] as usize % 16]);
        if resolve(e, &n).is_err() {
            return n;
        }
    }
    format!("berth_{}", &berth::util::uuid4()[..8])
}

fn random_id() -> String {
    let mut b = [0u8; 32];
    berth::util::random_bytes(&mut b);
    berth::digest::to_hex(&b)
}

// ------------------------------------------------------------------ create

/// `POST /containers/create?name=`: the id and docker's warnings.
/// With a signature policy, a container is made only from an image whose kept
/// signatures satisfy it, under the name it is run by (the image may have been
/// loaded, tagged or pulled before the policy was set).
fn check_policy(e: &Engine, image: &str, manifest: &berth::digest::Digest) -> Result<()> {
    let Some(policy) = &e.s.policy else {
        return Ok(());
    };
    let named = berth::reference::Reference::parse(image)
        .ok()
        .filter(|r| !image.starts_with("sha256:") && r.repository.len() != 64);
    let Some(r) = named else {
        return Err(Error::new(
            berth::error::Kind::Denied,
            format!(
                "{image}: a signature policy is set ({}): run images by name, not by id",
                policy.source
            ),
        ));
    };
    let mut r = super::images::as_typed(&r);
    let refs = e.store.refs()?;
    if r.registry.is_none() {
        // A short name is the image as an add-registry stored it.
        let tag = r.tag.clone().unwrap_or_else(|| "latest".into());
        let suffix = format!("/{}:{tag}", r.repository);
        if let Some(full) = refs
            .tags
            .iter()
            .find(|(k, m)| *m == manifest && k.ends_with(&suffix))
            .and_then(|(k, _)| berth::reference::Reference::parse(k).ok())
        {
            r = full;
        }
    }
    let identity = berth::signing::Identity::of(&r).tagged_or_latest();
    berth::registry::transfer::check_local(&e.store, policy, &identity, manifest)
}

pub fn create(
    e: &Engine,
    name: Option<&str>,
    mut body: CreateBody,
) -> Result<(String, Vec<String>)> {
    let mut warnings = Vec::new();
    let image = body.config.image.clone();
    if image.is_empty() {
        return Err(Error::invalid("config: no image given"));
    }
    let manifest = super::images::resolve_local(e, &image)?.ok_or_else(|| {
        Error::not_found(format!(
            "No such image: {}",
            berth::store::local::tagged(&image)
        ))
    })?;
    check_policy(e, &image, &manifest)?;
    let img = e.store.image(&manifest)?;
    let hc = &body.host_config;
    validate_host_config(hc)?;
    let icfg = img.config.config.clone().unwrap_or_default();
    // The command, docker's way: an entrypoint given drops the image's Cmd.
    let entry_given = body.config.entrypoint.is_some();
    let entrypoint = match &body.config.entrypoint {
        Some(v) => v.clone(),
        None => icfg.entrypoint.clone().unwrap_or_default(),
    };
    let cmd = match &body.config.cmd {
        Some(v) if !v.is_empty() => v.clone(),
        _ if entry_given => Vec::new(),
        _ => icfg.cmd.clone().unwrap_or_default(),
    };
    let mut full: Vec<String> = entrypoint.into_iter().chain(cmd).collect();
    if full.is_empty() {
        return Err(Error::invalid("No command specified"));
    }
    let path = full.remove(0);
    // The environment: the image's, then the client's (same key: the client's).
    let mut env: Vec<String> = icfg.env.clone().unwrap_or_default();
    for v in body.config.env.clone().unwrap_or_default() {
        let k = v.split('=').next().unwrap_or("").to_string();
        env.retain(|x| x.split('=').next() != Some(k.as_str()));
        env.push(v);
    }
    body.config.env = Some(env);
    if body.config.working_dir.is_empty() {
        body.config.working_dir = icfg.working_dir.clone().unwrap_or_default();
    }
    if body.config.user.is_empty() {
        body.config.user = icfg.user.clone().unwrap_or_default();
    }
    let mut labels = icfg.labels.clone().unwrap_or_default();
    labels.extend(body.config.labels.clone().unwrap_or_default());
    body.config.labels = Some(labels);
    if body.config.stop_signal.is_none() {
        body.config.stop_signal = icfg.stop_signal.clone();
    }
    let networking = body.config.extra.remove("NetworkingConfig");
    let _ = networking;
    let mode = match hc.network_mode.as_str() {
        "" | "default" | "bridge" => "bridge",
        "host" => "host",
        "none" => "none",
        other => {
            return Err(Error::invalid(format!(
                "network mode {other:?} is not supported by berth: use bridge, host or none"
            )));
        }
    };
    let _g = e.lock.lock().unwrap();
    let name = match name.filter(|n| !n.is_empty()) {
        Some(n) => {
            let n = n.trim_start_matches('/');
            if !valid_name(n) {
                return Err(Error::invalid(format!(
                    "Invalid container name ({n}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"
                )));
            }
            if let Ok(other) = resolve(e, n)
                && e.dir.load_record(&other).is_ok_and(|r| r.name == n)
            {
                return Err(Error::new(
                    Kind::Conflict,
                    format!(
                        "Conflict. The container name \"/{n}\" is already in use by container \"{other}\". You have to remove (or rename) that container to be able to reuse that name."
                    ),
                ));
            }
            n.to_string()
        }
        None => random_name(e),
    };
    let id = random_id();
    let net = if mode == "bridge" {
        match &e.net {
            Some(n) => {
                let used = used_addresses(e);
                let ip = berth::net::ipam::allocate(n.subnet, e.s.fixed_cidr, n.gateway(), &used)?;
                NetAssign {
                    mode: "bridge".into(),
                    bridge: n.bridge.clone(),
                    ip: Some(ip),
                    prefix: n.subnet.prefix(),
                    gateway: Some(n.gateway()),
                    mtu: Some(n.mtu),
                }
            }
            None => {
                warnings.push(
                    "engined runs without a bridge (--bridge=none): the container has no network"
                        .into(),
                );
                NetAssign {
                    mode: "none".into(),
                    ..Default::default()
                }
            }
        }
    } else {
        if mode == "host" && hc.port_bindings.as_ref().is_some_and(|p| !p.is_empty()) {
            warnings.push("Published ports are discarded when using host network mode".into());
        }
        NetAssign {
            mode: mode.into(),
            ..Default::default()
        }
    };
    // The layers unpacked (once, shared) and held for as long as the container is.
    e.store.lease(&id, std::slice::from_ref(&manifest))?;
    let lowerdirs = match e.store.layer_dirs(&manifest) {
        Ok(l) => l,
        Err(err) => {
            let _ = e.store.release_lease(&id);
            return Err(err);
        }
    };
    let mut config = body.config;
    if let Some(ip) = net.ip
        && wants_dns_name(e, &config)
    {
        // The site's /root/init did this inside the container, which needed
        // CAP_SYS_ADMIN; the engine knows the address before the start.
        match berth::net::reverse_lookup(ip.into(), DNS_TIMEOUT) {
            Ok(name) if !name.is_empty() && name != ip.to_string() => {
                log::info!("container {name}: hostname {name} from the reverse DNS of {ip}");
                config.hostname = name;
            }
            Ok(_) => warnings.push(format!(
                "hostname-from-dns: {ip} has no name in DNS; the hostname stays {}",
                if config.hostname.is_empty() {
                    &id[..12]
                } else {
                    &config.hostname
                }
            )),
            Err(x) => warnings.push(format!(
                "hostname-from-dns: {x}; the hostname stays {}",
                if config.hostname.is_empty() {
                    &id[..12]
                } else {
                    &config.hostname
                }
            )),
        }
    }
    let volumes = match anonymous_volumes(e, &config, &body.host_config) {
        Ok(v) => v,
        Err(err) => {
            let _ = e.store.release_lease(&id);
            return Err(err);
        }
    };
    // The site's per-container log directory (logcollect keeps it and ships
    // it): the label, else the daemon's --log-dir.
    let log_target = config
        .labels
        .as_ref()
        .and_then(|l| l.get("berth.log-dir").cloned())
        .or_else(|| e.s.log_dir_target.clone())
        .filter(|t| !t.is_empty());
    let created = state::now_nanos();
    let log_dir = match &log_target {
        Some(t) if !t.starts_with('/') => {
            let _ = e.store.release_lease(&id);
            remove_volumes_of(e, &volumes);
            return Err(Error::invalid(format!(
                "berth.log-dir {t:?}: the container path must be absolute"
            )));
        }
        Some(_) => {
            let d =
                e.s.log_root
                    .join(berth::logfile::container_dir_name(&name, &created));
            if let Err(err) = std::fs::create_dir_all(&d) {
                let _ = e.store.release_lease(&id);
                remove_volumes_of(e, &volumes);
                return Err(Error::from(err).context(format!("create {}", d.display())));
            }
            Some(d)
        }
        None => None,
    };
    let record = Record {
        id: id.clone(),
        name: name.clone(),
        created,
        image: image.clone(),
        image_id: img.config_digest.clone(),
        manifest,
        lowerdirs,
        path,
        args: full,
        config,
        host_config: body.host_config,
        net,
        log_dir,
        log_target,
        volumes,
    };
    let save = || -> Result<()> {
        e.dir.save_record(&record)?;
        e.dir.save_state(&id, &State::created())?;
        write_etc_files(e, &record)
    };
    if let Err(err) = save() {
        let _ = std::fs::remove_dir_all(e.dir.path(&id));
        remove_volumes(e, &record);
        let _ = e.store.release_lease(&id);
        return Err(err);
    }
    e.life(&id);
    emit(e, "create", &record, vec![]);
    Ok((id, warnings))
}

fn validate_host_config(hc: &HostConfig) -> Result<()> {
    use berth::sys::caps;
    let add = hc.cap_add.as_deref().unwrap_or_default();
    caps::effective_set(
        add,
        hc.cap_drop.as_deref().unwrap_or_default(),
        hc.privileged,
    )?;
    // `--privileged` and ALL mean what engined holds; a capability asked for
    // by name that engined lacks would be dropped without a word at start.
    if let Ok(held) = caps::held() {
        for c in add {
            if let Some(n) = caps::number(c)
                && held & (1u64 << n) == 0
            {
                return Err(Error::invalid(format!(
                    "invalid CapAdd: {c} is not available on this host (engined itself does not hold it)"
                )));
            }
        }
    }
    for b in hc.binds.iter().flatten() {
        let b = parse_bind(b)?;
        if !b.source.exists() {
            return Err(Error::invalid(format!(
                "invalid mount config: bind source path does not exist: {}",
                b.source.display()
            )));
        }
    }
    for m in hc.mounts.iter().flatten() {
        if m.kind != "bind" {
            return Err(Error::invalid(format!(
                "mount type {:?} is not supported by berth: use type=bind with a host path",
                m.kind
            )));
        }
        if !Path::new(&m.source).exists() {
            return Err(Error::invalid(format!(
                "invalid mount config for type \"bind\": bind source path does not exist: {}",
                m.source
            )));
        }
        if !m.target.starts_with('/') {
            return Err(Error::invalid(format!(
                "invalid mount config: the target {:?} must be absolute",
                m.target
            )));
        }
    }
    match hc.restart_policy.name.as_str() {
        "" | "no" | "always" | "unless-stopped" | "on-failure" => {}
        other => {
            return Err(Error::invalid(format!(
                "invalid restart policy {other:?}: use no, always, on-failure[:N] or unless-stopped"
            )));
        }
    }
    if hc.restart_policy.maximum_retry_count != 0 && hc.restart_policy.name != "on-failure" {
        return Err(Error::invalid(format!(
            "maximum retry count cannot be used with restart policy '{}'",
            hc.restart_policy.name
        )));
    }
    if hc.auto_remove && !matches!(hc.restart_policy.name.as_str(), "" | "no") {
        return Err(Error::invalid(
            "can't create 'AutoRemove' container with restart policy",
        ));
    }
    if hc.memory > 0 && hc.memory < 6 * 1024 * 1024 {
        return Err(Error::invalid("Minimum memory limit allowed is 6MB"));
    }
    if hc.nano_cpus > 0 {
        let n = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1) as i64;
        if hc.nano_cpus < 10_000_000 || hc.nano_cpus > n * 1_000_000_000 {
            return Err(Error::invalid(format!(
                "Range of CPUs is from 0.01 to {n}.00, as there are only {n} CPUs available"
            )));
        }
    }
    match hc.log_config.kind.as_str() {
        "" | "json-file" | "none" => {}
        other => {
            return Err(Error::invalid(format!(
                "log driver {other:?} is not supported by berth: use json-file or none"
            )));
        }
    }
    super::ports::requests(hc)?;
    Ok(())
}

fn used_addresses(e: &Engine) -> std::collections::BTreeSet<std::net::Ipv4Addr> {
    e.dir
        .ids()
        .iter()
        .filter_map(|id| e.dir.load_record(id).ok())
        .filter_map(|r| r.net.ip)
        .collect()
}

/// /etc/hostname, /etc/hosts and /etc/resolv.conf as the container sees them.
fn write_etc_files(e: &Engine, r: &Record) -> Result<()> {
    let dir = e.dir.path(&r.id);
    let host = hostname_of(r);
    let full = if r.config.domainname.is_empty() {
        host.clone()
    } else {
        format!("{host}.{}", r.config.domainname)
    };
    berth::fsutil::atomic_write(&dir.join("hostname"), format!("{host}\n").as_bytes())?;
    let mut hosts = String::from(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n",
    );
    if let Some(ip) = r.net.ip {
        // A name from DNS is a full one: list its first label too.
        let short = host.split('.').next().unwrap_or(&host);
        if short != host && full == host {
            hosts.push_str(&format!("{ip}\t{full} {short}\n"));
        } else {
            hosts.push_str(&format!("{ip}\t{full} {host}\n"));
        }
    }
    for h in r.host_config.extra_hosts.iter().flatten() {
        if let Some((name, ip)) = h.split_once(':') {
            hosts.push_str(&format!("{ip}\t{name}\n"));
        }
    }
    berth::fsutil::atomic_write(&dir.join("hosts"), hosts.as_bytes())?;
    // The host's resolvers, without loopback ones (unreachable from the
    // container's network), unless the client named its own.
    let host_conf = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let mut out = String::new();
    let dns = r.host_config.dns.clone().unwrap_or_default();
    let search = r.host_config.dns_search.clone().unwrap_or_default();
    let options = r.host_config.dns_options.clone().unwrap_or_default();
    if dns.is_empty() {
        for l in host_conf.lines() {
            let w: Vec<&str> = l.split_whitespace().collect();
            match w.as_slice() {
                ["nameserver", ip]
                    if r.net.mode == "host" || !(ip.starts_with("127.") || *ip == "::1") =>
                {
                    out.push_str(&format!("nameserver {ip}\n"));
                }
                ["search", ..] | ["domain", ..] if search.is_empty() => {
                    out.push_str(l);
                    out.push('\n');
                }
                ["options", ..] if options.is_empty() => {
                    out.push_str(l);
                    out.push('\n');
                }
                _ => {}
            }
        }
    } else {
        for d in &dns {
            out.push_str(&format!("nameserver {d}\n"));
        }
    }
    if !search.is_empty() {
        out.push_str(&format!("search {}\n", search.join(" ")));
    }
    if !options.is_empty() {
        out.push_str(&format!("options {}\n", options.join(" ")));
    }
    berth::fsutil::atomic_write(&dir.join("resolv.conf"), out.as_bytes())
}

pub fn emit(e: &Engine, action: &str, r: &Record, extra: Vec<(String, String)>) {
    let mut attrs = vec![
        ("image".to_string(), r.image.clone()),
        ("name".to_string(), r.name.clone()),
    ];
    for (k, v) in r.config.labels.iter().flatten() {
        attrs.push((k.clone(), v.clone()));
    }
    attrs.extend(extra);
    e.events.emit("container", action, &r.id, attrs);
}

// ------------------------------------------------------------------ shims

/// The shim's control socket: a short path, as unix sockets need.
pub fn shim_sock(e: &Engine, id: &str) -> PathBuf {
    e.s.exec_root
        .join("shims")
        .join(format!("{}.sock", &id[..16]))
}

/// One command to the shim, its one-line answer.
fn shim_call(e: &Engine, id: &str, cmd: &str) -> Result<String> {
    let mut s = UnixStream::connect(shim_sock(e, id))
        .map_err(|err| Error::from(err).context("the container's shim does not answer"))?;
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    s.write_all(format!("{cmd}\n").as_bytes())?;
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line)?;
    Ok(line.trim_end().to_string())
}

/// `POST /containers/{id}/start`.
pub fn start(e: &Arc<Engine>, id: &str) -> Result<Outcome> {
    let r = e.dir.load_record(id)?;
    let st = e.dir.load_state(id)?;
    if st.running() && UnixStream::connect(shim_sock(e, id)).is_ok() {
        return Ok(Outcome::NotModified);
    }
    // Attachments made before the start get everything from the first byte;
    // if the start fails they end with it (dropping them closes them).
    let pending = e.pending.lock().unwrap().remove(id).unwrap_or_default();
    let res = start_shim(e, id, &r, pending);
    if res.is_err() && r.host_config.auto_remove {
        // docker removes an --rm container whose start failed
        if let Err(x) = remove(e, id, true) {
            log::warn!("remove {id} after its failed start: {x}");
        }
    }
    res
}

fn start_shim(e: &Arc<Engine>, id: &str, r: &Record, pending: Vec<Arc<Slot>>) -> Result<Outcome> {
    let dir = e.dir.path(id);
    let cfg = ShimConfig {
        graph: e.s.graph.clone(),
        sock: shim_sock(e, id),
        userns: e.s.userns,
        cgroup_parent: e.s.cgroup_parent.clone(),
        init_binary: e.exe.clone(),
        log_rotation: log_rotation(e, r)?,
        log_json: log_json(e, r),
        copy_rootfs: e.s.copy_rootfs,
    };
    state::write_json(&dir.join("shim.json"), &cfg)?;
    write_etc_files(e, r)?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("shim.log"))?;
    use std::os::unix::process::CommandExt;
    let mut child = std::process::Command::new(&e.exe)
        .arg0("berth")
        .arg("engined-shim")
        .arg(&dir)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(log)
        .spawn()
        .context("start the container's shim")?;
    // The shim says "ready" on this pipe once its socket listens, or closes it
    // by dying: no polling for the socket to appear.
    let ready = child.stdout.take().map(|o| shim_ready(o.into()));
    // Reap it when it ends (engined is its parent while engined lives).
    std::thread::Builder::new()
        .name("shim-reaper".into())
        .stack_size(64 * 1024)
        .spawn(move || {
            let _ = child.wait();
        })
        .context("thread")?;
    let sock = shim_sock(e, id);
    let up = match ready {
        Some(Ok(true)) => UnixStream::connect(&sock).map_err(|err| err.to_string()),
        Some(Ok(false)) => Err("it exited".to_string()),
        Some(Err(err)) => Err(err.to_string()),
        None => Err("no pipe to it".to_string()),
    };
    let mut monitor = match up {
        Ok(s) => s,
        Err(err) => {
            let log = std::fs::read_to_string(dir.join("shim.log")).unwrap_or_default();
            return Err(Error::internal(format!(
                "the container's shim did not come up ({err}): {}",
                log.lines().last().unwrap_or("")
            )));
        }
    };
    for slot in pending {
        // The connection is on its way (its 101 was sent before this start).
        if let Some(p) = slot.take(Duration::from_secs(30)) {
            connect_attach(e, id, p)?;
        }
    }
    monitor.write_all(b"start\n")?;
    let mut reader = BufReader::new(monitor.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    // What the start fell back from (an old kernel's missing features), one
    // line each before its answer.
    while let Some(note) = line.trim_end().strip_prefix("note ") {
        log::warn!("container {}: {note}", &id[..id.len().min(12)]);
        line.clear();
        reader.read_line(&mut line)?;
    }
    let line = line.trim_end().to_string();
    if let Some(msg) = line.strip_prefix("error ") {
        let kind = if msg.contains("executable file not found")
            || msg.contains("no such file or directory")
        {
            Kind::NotFound
        } else if msg.contains("port is already allocated") {
            Kind::Conflict
        } else if msg.contains("permission denied") {
            Kind::Denied
        } else {
            Kind::Internal
        };
        emit(e, "die", r, vec![("exitCode".into(), "127".into())]);
        return Err(Error::new(
            kind,
            format!("failed to create task for container: {msg}"),
        ));
    }
    if !line.starts_with("started ") {
        return Err(Error::internal(format!(
            "the container's shim said {line:?}"
        )));
    }
    let life = e.life(id);
    life.update(|l| l.running = true);
    emit(e, "start", r, vec![]);
    spawn_monitor(e.clone(), id.to_string(), reader);
    Ok(Outcome::Done)
}

/// Wait (a minute at most) for the shim's "ready" line: true once it listens,
/// false if it ended first.
fn shim_ready(pipe: std::os::fd::OwnedFd) -> std::io::Result<bool> {
    use std::os::fd::AsFd;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut got = Vec::new();
    let mut f = std::fs::File::from(pipe);
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "no word from it in a minute",
            ));
        }
        let mut fds = [nix::poll::PollFd::new(
            f.as_fd(),
            nix::poll::PollFlags::POLLIN,
        )];
        let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
        match nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(ms)) {
            Ok(0) => continue,
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(err) => return Err(err.into()),
        }
        let mut b = [0u8; 64];
        match f.read(&mut b) {
            Ok(0) => return Ok(false),
            Ok(n) => {
                got.extend_from_slice(&b[..n]);
                if got.contains(&b'\n') {
                    return Ok(got.starts_with(b"ready"));
                }
            }
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
}

fn log_json(e: &Engine, r: &Record) -> bool {
    match r.host_config.log_config.kind.as_str() {
        "none" => false,
        "json-file" => true,
        _ => e.s.log_json,
    }
}

fn log_rotation(e: &Engine, r: &Record) -> Result<(u64, u32)> {
    let rot = if r.host_config.log_config.config.is_empty() {
        e.s.log_rotation
    } else {
        berth::logfile::Rotation::from_opts(r.host_config.log_config.config.clone())?
    };
    Ok((rot.max_size, rot.max_file))
}

/// Follow a running container through its shim: exits, restarts, the end.
fn spawn_monitor(e: Arc<Engine>, id: String, mut reader: BufReader<UnixStream>) {
    let name = id.clone();
    let spawned = std::thread::Builder::new()
        .name("monitor".into())
        .stack_size(128 * 1024)
        .spawn(move || {
            let life = e.life(&id);
            let mut line = String::new();
            loop {
                line.clear();
                match reader.read_line(&mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
                let l = line.trim_end();
                if let Some(code) = l.strip_prefix("exit ") {
                    let code: i32 = code.parse().unwrap_or(-1);
                    life.update(|s| {
                        s.exits += 1;
                        s.code = code;
                        s.running = false;
                    });
                    if let Ok(r) = e.dir.load_record(&id) {
                        emit(&e, "die", &r, vec![("exitCode".into(), code.to_string())]);
                    }
                } else if l.starts_with("running ") {
                    life.update(|s| s.running = true);
                    if let Ok(r) = e.dir.load_record(&id) {
                        emit(&e, "start", &r, vec![]);
                    }
                }
            }
            // The shim is gone: the container ended for good (or the shim died).
            let mut st = e.dir.load_state(&id).unwrap_or_default();
            if st.running() {
                st.status = "exited".into();
                st.error = "the container's shim ended unexpectedly".into();
                st.shim_pid = 0;
                st.pid = 0;
                let _ = e.dir.save_state(&id, &st);
            }
            life.update(|s| s.running = false);
            if let Ok(r) = e.dir.load_record(&id)
                && r.host_config.auto_remove
            {
                let _ = remove(&e, &id, true);
            }
        });
    if let Err(err) = spawned {
        log::error!("cannot follow container {name}: {err}");
    }
}

/// At engined's start: follow every container whose shim still runs, record
/// the end of those whose shim is gone.
pub fn adopt_all(e: &Arc<Engine>) {
    let mut restart = Vec::new();
    for id in e.dir.ids() {
        let Ok(r) = e.dir.load_record(&id) else {
            log::warn!("container {id}: unreadable record, skipped");
            continue;
        };
        let life = e.life(&id);
        match UnixStream::connect(shim_sock(e, &id)) {
            Ok(mut s) => {
                if s.write_all(b"watch\n").is_err() {
                    continue;
                }
                let Ok(rd) = s.try_clone() else { continue };
                let mut reader = BufReader::new(rd);
                let mut line = String::new();
                let _ = reader.read_line(&mut line);
                let running = e.dir.load_state(&id).map(|s| s.running()).unwrap_or(false);
                life.update(|l| l.running = running);
                log::info!("re-adopted container {} ({})", r.name, &id[..12]);
                spawn_monitor(e.clone(), id.clone(), reader);
            }
            Err(_) => {
                let mut st = e.dir.load_state(&id).unwrap_or_default();
                let was_running = st.running();
                if was_running {
                    // The host rebooted, or the shim was killed (its container
                    // died with it): nothing of the run may linger.
                    reap_leftovers(e, &id);
                    st.status = "exited".into();
                    st.error = "the container's shim ended while engined was down".into();
                    st.pid = 0;
                    st.shim_pid = 0;
                    let _ = e.dir.save_state(&id, &st);
                }
                if r.host_config.auto_remove && st.status == "exited" {
                    let _ = remove(e, &id, true);
                    continue;
                }
                // dockerd's rule at its start: always, and unless-stopped
                // unless a user stopped it, come back.
                let policy = r.host_config.restart_policy.name.as_str();
                if policy == "always" || (policy == "unless-stopped" && !st.stopped_by_user) {
                    restart.push((id.clone(), r.name.clone()));
                }
            }
        }
    }
    if restart.is_empty() {
        return;
    }
    let e = e.clone();
    let spawned = std::thread::Builder::new()
        .name("restart-policies".into())
        .spawn(move || {
            for (id, name) in restart {
                match start(&e, &id) {
                    Ok(_) => log::info!("started container {name} again (its restart policy)"),
                    Err(x) => log::warn!("container {name}: restart policy: start failed: {x}"),
                }
            }
        });
    if let Err(x) = spawned {
        log::warn!("cannot start the restart-policy thread: {x}");
    }
}

/// A run whose shim is gone: kill what is left in its cgroup and remove the
/// cgroup (its mounts, network namespace and veth went with its processes).
fn reap_leftovers(e: &Engine, id: &str) {
    let Ok(layout) = berth::cgroup::Layout::detect() else {
        return;
    };
    if let Ok(cg) = berth::cgroup::Cgroup::open(&layout, &e.s.cgroup_parent, id)
        && let Err(x) = cg.destroy(Duration::from_secs(5))
    {
        log::warn!("container {}: {x}", &id[..12]);
    }
}

// ------------------------------------------------------------------ stop, kill

fn stop_signal(r: &Record) -> String {
    r.config
        .stop_signal
        .clone()
        .unwrap_or_else(|| "SIGTERM".into())
}

/// `POST /containers/{id}/stop?t=`.
pub fn stop(e: &Engine, id: &str, timeout: Option<i64>) -> Result<Outcome> {
    let r = e.dir.load_record(id)?;
    let st = e.dir.load_state(id)?;
    let life = e.life(id);
    if !st.running() || UnixStream::connect(shim_sock(e, id)).is_err() {
        return Ok(Outcome::NotModified);
    }
    let t = timeout.or(r.config.stop_timeout).unwrap_or(10);
    let before = life.get().exits;
    let was_restarting = st.status == "restarting";
    let answer = shim_call(e, id, &format!("stop {} {t}", stop_signal(&r)))?;
    if answer != "ok" {
        return Err(Error::internal(answer));
    }
    emit(e, "kill", &r, vec![("signal".into(), "15".into())]);
    let limit = Duration::from_secs(t.max(0) as u64 + 60);
    let l = life.wait(limit, |l| {
        l.exits > before || (was_restarting && !l.running) || l.removed
    });
    if l.exits == before && !was_restarting && !l.removed {
        return Err(Error::internal("the container did not stop"));
    }
    emit(e, "stop", &r, vec![]);
    Ok(Outcome::Done)
}

/// `POST /containers/{id}/kill?signal=`.
pub fn kill(e: &Engine, id: &str, signal: &str) -> Result<()> {
    let r = e.dir.load_record(id)?;
    let st = e.dir.load_state(id)?;
    if !st.running() {
        return Err(Error::new(
            Kind::Conflict,
            format!("Cannot kill container: {id}: Container {id} is not running"),
        ));
    }
    let sig = super::shim::signal_number(signal)
        .ok_or_else(|| Error::invalid(format!("Invalid signal: {signal}")))?;
    let answer = shim_call(e, id, &format!("kill {sig}"))?;
    if let Some(m) = answer.strip_prefix("error ") {
        return Err(Error::new(Kind::Conflict, m.to_string()));
    }
    emit(e, "kill", &r, vec![("signal".into(), sig.to_string())]);
    Ok(())
}

/// `POST /containers/{id}/wait?condition=`: the exit code once the condition holds.
pub fn wait(e: &Engine, id: &str, condition: &str) -> Result<Box<dyn FnOnce() -> Value + Send>> {
    let life = e.life(id);
    let now = life.get();
    let running = e.dir.load_state(id).map(|s| s.running()).unwrap_or(false);
    let cond = condition.to_string();
    let forever = Duration::from_secs(u64::MAX / 4);
    Ok(Box::new(move || {
        let l: LifeState = match cond.as_str() {
            "removed" => life.wait(forever, |l| l.removed),
            "next-exit" => life.wait(forever, |l| l.exits > now.exits || l.removed),
            _ if !running => now.clone(),
            _ => life.wait(forever, |l| l.exits > now.exits || l.removed || !l.running),
        };
        json!({"StatusCode": l.code, "Error": Value::Null})
    }))
}

/// `DELETE /containers/{id}?force=`.
pub fn remove(e: &Engine, id: &str, force: bool) -> Result<()> {
    let r = e.dir.load_record(id)?;
    let st = e.dir.load_state(id)?;
    if st.running() && UnixStream::connect(shim_sock(e, id)).is_ok() {
        if !force {
            return Err(Error::new(
                Kind::Conflict,
                format!(
                    "You cannot remove a running container {id}. Stop the container before attempting removal or force remove"
                ),
            ));
        }
        let life = e.life(id);
        let before = life.get().exits;
        let _ = shim_call(e, id, "stop SIGKILL 0");
        life.wait(Duration::from_secs(60), |l| l.exits > before || !l.running);
        // The shim leaves once it has recorded the end.
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while UnixStream::connect(shim_sock(e, id)).is_ok() && std::time::Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    // A shim that is still finishing (a start that failed just now) writes
    // its last state before its socket goes: wait for that.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while UnixStream::connect(shim_sock(e, id)).is_ok() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(2));
    }
    let _g = e.lock.lock().unwrap();
    let dir = e.dir.path(id);
    if !dir.exists() {
        return Ok(());
    }
    // A mount left behind (a crash) would make removing the tree remove what is
    // mounted there: refuse instead.
    if let Some(m) = berth::fsutil::mountinfo::mounts_under(&dir).first() {
        return Err(Error::new(
            Kind::Conflict,
            format!(
                "{} is still mounted: unmount it, then remove the container",
                m.display()
            ),
        ));
    }
    std::fs::remove_dir_all(&dir).with_context(|| format!("remove {}", dir.display()))?;
    remove_volumes(e, &r);
    let _ = e.store.release_lease(id);
    e.life(id).update(|l| {
        l.removed = true;
        l.running = false;
    });
    e.lives.lock().unwrap().remove(id);
    emit(e, "destroy", &r, vec![]);
    Ok(())
}

/// `POST /containers/{id}/rename?name=`.
pub fn rename(e: &Engine, id: &str, new: &str) -> Result<()> {
    let new = new.trim_start_matches('/');
    if !valid_name(new) {
        return Err(Error::invalid(format!(
            "Invalid container name ({new}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"
        )));
    }
    let _g = e.lock.lock().unwrap();
    let mut r = e.dir.load_record(id)?;
    if r.name == new {
        return Err(Error::new(
            Kind::Conflict,
            "Renaming a container with the same name as its current name".to_string(),
        ));
    }
    if let Ok(other) = resolve(e, new)
        && e.dir.load_record(&other).is_ok_and(|o| o.name == new)
    {
        return Err(Error::new(
            Kind::Conflict,
            format!(
                "Conflict. The container name \"/{new}\" is already in use by container \"{other}\". You have to remove (or rename) that container to be able to reuse that name."
            ),
        ));
    }
    let old = std::mem::replace(&mut r.name, new.to_string());
    e.dir.save_record(&r)?;
    emit(e, "rename", &r, vec![("oldName".into(), format!("/{old}"))]);
    Ok(())
}

// ------------------------------------------------------------------ views

fn status_text(st: &State) -> String {
    let ago = |t: &Option<String>| {
        t.as_deref()
            .and_then(state::parse_time)
            .map(|s| human_duration(berth::util::now_unix() - s))
            .unwrap_or_default()
    };
    match st.status.as_str() {
        "running" => format!("Up {}", ago(&st.started_at)),
        "restarting" => format!("Restarting ({}) {} ago", st.exit_code, ago(&st.finished_at)),
        "exited" if st.finished_at.is_some() => {
            format!("Exited ({}) {} ago", st.exit_code, ago(&st.finished_at))
        }
        "exited" => format!("Exited ({})", st.exit_code),
        _ => "Created".to_string(),
    }
}

/// docker's units: "Less than a second", "5 seconds", "About a minute", …
pub fn human_duration(secs: i64) -> String {
    let s = secs.max(0);
    match s {
        0 => "Less than a second".into(),
        1 => "1 second".into(),
        2..=59 => format!("{s} seconds"),
        60..=119 => "About a minute".into(),
        120..=3599 => format!("{} minutes", s / 60),
        3600..=7199 => "About an hour".into(),
        7200..=172_799 => format!("{} hours", s / 3600),
        _ => format!("{} days", s / 86400),
    }
}

fn ports_json(st: &State, r: &Record) -> Value {
    let mut v: Vec<Value> = st
        .ports
        .iter()
        .map(|p| {
            json!({"IP": p.host_ip, "PrivatePort": p.container_port, "PublicPort": p.host_port, "Type": p.proto})
        })
        .collect();
    for k in r.config.exposed_ports.iter().flatten().map(|(k, _)| k) {
        let (port, proto) = k.split_once('/').unwrap_or((k, "tcp"));
        let port: u16 = port.parse().unwrap_or(0);
        if !st
            .ports
            .iter()
            .any(|p| p.container_port == port && p.proto == proto)
        {
            v.push(json!({"PrivatePort": port, "Type": proto}));
        }
    }
    Value::Array(v)
}

fn command_line(r: &Record) -> String {
    let mut parts = vec![r.path.clone()];
    parts.extend(r.args.iter().cloned());
    parts.join(" ")
}

/// One row of `GET /containers/json`.
fn summary(e: &Engine, r: &Record, st: &State) -> Value {
    json!({
        "Id": r.id,
        "Names": [format!("/{}", r.name)],
        "Image": r.image,
        "ImageID": r.image_id.to_string(),
        "Command": command_line(r),
        "Created": state::parse_time(&r.created).unwrap_or(0),
        "Ports": ports_json(st, r),
        "Labels": r.config.labels.clone().unwrap_or_default(),
        "State": st.status,
        "Status": status_text(st),
        "HostConfig": {"NetworkMode": if r.host_config.network_mode.is_empty() { "default".to_string() } else { r.host_config.network_mode.clone() }},
        "NetworkSettings": {"Networks": networks_json(e, r)},
        "Mounts": mounts_json(r, &e.s.graph),
    })
}

/// `(SizeRw, SizeRootFs)` as `ps -s` shows them: what the container wrote
/// (its upper layer; on a copied root, what the copy grew by) and that plus
/// its image's unpacked size.
fn sizes(e: &Engine, r: &Record) -> (u64, u64) {
    let dir = e.dir.path(&r.id);
    let image: u64 = r
        .lowerdirs
        .iter()
        .map(|l| berth::fsutil::tree_bytes(l))
        .sum();
    let rw = if e.s.copy_rootfs {
        berth::fsutil::tree_bytes(&dir.join("rootfs")).saturating_sub(image)
    } else {
        berth::fsutil::tree_bytes(&dir.join("upper"))
    };
    (rw, image + rw)
}

fn networks_json(e: &Engine, r: &Record) -> Value {
    let name = r.net.mode.as_str();
    let _ = e;
    json!({ name: {
        "IPAMConfig": Value::Null, "Links": Value::Null, "Aliases": Value::Null,
        "NetworkID": "", "EndpointID": "",
        "Gateway": r.net.gateway.map(|g| g.to_string()).unwrap_or_default(),
        "IPAddress": r.net.ip.map(|g| g.to_string()).unwrap_or_default(),
        "IPPrefixLen": if r.net.ip.is_some() { r.net.prefix } else { 0 },
        "IPv6Gateway": "", "GlobalIPv6Address": "", "GlobalIPv6PrefixLen": 0,
        "MacAddress": "", "DriverOpts": Value::Null,
    }})
}

fn mounts_json(r: &Record, graph: &Path) -> Value {
    let mut v = Vec::new();
    for b in r.host_config.binds.iter().flatten() {
        if let Ok(b) = parse_bind(b) {
            v.push(json!({"Type": "bind", "Source": b.source, "Destination": b.target,
                "Mode": if b.read_only { "ro" } else { "" }, "RW": !b.read_only, "Propagation": "rprivate"}));
        }
    }
    for m in r.host_config.mounts.iter().flatten() {
        v.push(
            json!({"Type": "bind", "Source": m.source, "Destination": m.target,
            "Mode": "", "RW": !m.read_only, "Propagation": "rprivate"}),
        );
    }
    for vol in &r.volumes {
        v.push(json!({"Type": "volume", "Name": vol.name, "Source": vol.data(graph),
            "Destination": vol.target, "Driver": "local", "Mode": "", "RW": true, "Propagation": ""}));
    }
    Value::Array(v)
}

/// A `filters` query: `{"name":["x"],"status":["running"]}` (or docker's old
/// `{"name":{"x":true}}`).
pub fn filters(q: Option<&str>) -> Result<Vec<(String, Vec<String>)>> {
    let Some(q) = q.filter(|q| !q.is_empty()) else {
        return Ok(Vec::new());
    };
    let v: Value =
        serde_json::from_str(q).map_err(|e| Error::invalid(format!("invalid filters: {e}")))?;
    let mut out = Vec::new();
    for (k, vals) in v.as_object().into_iter().flatten() {
        let list: Vec<String> = match vals {
            Value::Array(a) => a
                .iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect(),
            Value::Object(o) => o.keys().cloned().collect(),
            Value::String(s) => vec![s.clone()],
            _ => Vec::new(),
        };
        out.push((k.clone(), list));
    }
    Ok(out)
}

/// `GET /containers/json`.
pub fn list(
    e: &Engine,
    all: bool,
    limit: Option<usize>,
    size: bool,
    filt: &[(String, Vec<String>)],
) -> Result<Value> {
    let mut rows: Vec<(Record, State)> = e
        .dir
        .ids()
        .into_iter()
        .filter_map(|id| Some((e.dir.load_record(&id).ok()?, e.dir.load_state(&id).ok()?)))
        .collect();
    rows.sort_by(|a, b| b.0.created.cmp(&a.0.created));
    for (k, _) in filt {
        if !["name", "id", "status", "label", "ancestor"].contains(&k.as_str()) {
            return Err(Error::invalid(format!("invalid filter '{k}'")));
        }
    }
    let has_status = filt.iter().any(|(k, _)| k == "status");
    // dockerd matches names as Go regexps against "/NAME".
    let names = filt
        .iter()
        .filter(|(k, _)| k == "name")
        .flat_map(|(_, v)| v)
        .map(|p| {
            super::pattern::Pattern::parse(p)
                .map_err(|e| Error::invalid(format!("invalid filter 'name={p}': {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    let ancestors: Vec<berth::digest::Digest> = filt
        .iter()
        .filter(|(k, _)| k == "ancestor")
        .flat_map(|(_, v)| v.iter())
        .filter_map(|a| e.store.resolve(a).ok().flatten())
        .filter_map(|m| e.store.image(&m).ok())
        .map(|i| i.config_digest.clone())
        .collect();
    let keep = |r: &Record, st: &State| -> bool {
        let slash_name = format!("/{}", r.name);
        filt.iter().all(|(k, vals)| {
            // As dockerd: every label must be there, any of the other values does.
            if k == "label" {
                let labels = r.config.labels.clone().unwrap_or_default();
                return vals.iter().all(|v| match v.split_once('=') {
                    Some((lk, lv)) => labels.get(lk).is_some_and(|x| x == lv),
                    None => labels.contains_key(v),
                });
            }
            vals.is_empty()
                || vals.iter().any(|v| match k.as_str() {
                    "name" => names.iter().any(|p| p.is_match(&slash_name)),
                    "id" => r.id.starts_with(v),
                    "status" => st.status == *v,
                    "ancestor" => ancestors.contains(&r.image_id) || r.image == *v,
                    _ => false,
                })
        })
    };
    let out: Vec<Value> = rows
        .iter()
        .filter(|(_, st)| all || has_status || st.running() || limit.is_some())
        .filter(|(r, st)| keep(r, st))
        .take(limit.unwrap_or(usize::MAX))
        .map(|(r, st)| {
            let mut v = summary(e, r, st);
            if size {
                let (rw, root) = sizes(e, r);
                v["SizeRw"] = json!(rw);
                v["SizeRootFs"] = json!(root);
            }
            v
        })
        .collect();
    Ok(Value::Array(out))
}

/// `GET /containers/{id}/json`.
pub fn inspect(e: &Engine, id: &str) -> Result<Value> {
    let r = e.dir.load_record(id)?;
    let st = e.dir.load_state(id)?;
    let dir = e.dir.path(id);
    let running = st.running();
    let mut hc =
        serde_json::to_value(&r.host_config).map_err(|x| Error::internal(x.to_string()))?;
    if r.host_config.log_config.kind.is_empty() {
        // the CLI leaves the driver to the daemon but sends --log-opt as given
        hc["LogConfig"]["Type"] = json!(if log_json(e, &r) { "json-file" } else { "none" });
    }
    hc["MaskedPaths"] = json!(super::runtime::MASKED);
    hc["ReadonlyPaths"] = json!(super::runtime::READ_ONLY);
    let mut config = serde_json::to_value(&r.config).map_err(|x| Error::internal(x.to_string()))?;
    config["Hostname"] = Value::from(hostname_of(&r));
    let ports: serde_json::Map<String, Value> = st
        .ports
        .iter()
        .map(|p| {
            (
                format!("{}/{}", p.container_port, p.proto),
                json!([{"HostIp": p.host_ip, "HostPort": p.host_port.to_string()}]),
            )
        })
        .collect();
    let exec_ids: Vec<String> = e
        .execs
        .lock()
        .unwrap()
        .values()
        .filter(|x| x.container == id)
        .map(|x| x.id.clone())
        .collect();
    Ok(json!({
        "Id": r.id,
        "Created": r.created,
        "Path": r.path,
        "Args": r.args,
        "State": {
            "Status": st.status,
            "Running": running,
            "Paused": false,
            "Restarting": st.status == "restarting",
            "OOMKilled": st.oom_killed,
            "Dead": st.status == "dead",
            "Pid": if running { st.pid } else { 0 },
            "ExitCode": st.exit_code,
            "Error": st.error,
            "StartedAt": st.started_at.clone().unwrap_or_else(|| "0001-01-01T00:00:00Z".into()),
            "FinishedAt": st.finished_at.clone().unwrap_or_else(|| "0001-01-01T00:00:00Z".into()),
        },
        "Image": r.image_id.to_string(),
        "ResolvConfPath": dir.join("resolv.conf"),
        "HostnamePath": dir.join("hostname"),
        "HostsPath": dir.join("hosts"),
        "LogPath": if log_json(e, &r) { dir.join(format!("{}-json.log", r.id)).display().to_string() } else { String::new() },
        "Name": format!("/{}", r.name),
        "RestartCount": st.restart_count,
        // dockerd names its copying driver vfs
        "Driver": if e.s.copy_rootfs { "vfs" } else { "overlay" },
        "Platform": "linux",
        "MountLabel": "",
        "ProcessLabel": "",
        "AppArmorProfile": "",
        "ExecIDs": if exec_ids.is_empty() { Value::Null } else { json!(exec_ids) },
        "HostConfig": hc,
        "GraphDriver": {"Name": if e.s.copy_rootfs { "vfs" } else { "overlay" }, "Data": {
            "LowerDir": r.lowerdirs.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(":"),
            "UpperDir": dir.join("upper"), "WorkDir": dir.join("work"), "MergedDir": dir.join("rootfs"),
        }},
        "Mounts": mounts_json(&r, &e.s.graph),
        "Config": config,
        "NetworkSettings": {
            "Bridge": r.net.bridge,
            "SandboxID": "",
            "HairpinMode": false,
            "LinkLocalIPv6Address": "",
            "LinkLocalIPv6PrefixLen": 0,
            "Ports": ports,
            "SandboxKey": if running { format!("/proc/{}/ns/net", st.pid) } else { String::new() },
            "SecondaryIPAddresses": Value::Null,
            "SecondaryIPv6Addresses": Value::Null,
            "EndpointID": "",
            "Gateway": r.net.gateway.map(|g| g.to_string()).unwrap_or_default(),
            "GlobalIPv6Address": "",
            "GlobalIPv6PrefixLen": 0,
            "IPAddress": r.net.ip.map(|g| g.to_string()).unwrap_or_default(),
            "IPPrefixLen": if r.net.ip.is_some() { r.net.prefix } else { 0 },
            "IPv6Gateway": "",
            "MacAddress": "",
            "Networks": networks_json(e, &r),
        },
    }))
}

/// `GET /containers/{id}/top`: `ps -ef`'s columns for the container's processes.
pub fn top(e: &Engine, id: &str) -> Result<Value> {
    let st = e.dir.load_state(id)?;
    if !st.running() {
        return Err(Error::new(
            Kind::Conflict,
            format!("Container {id} is not running"),
        ));
    }
    let layout = berth::cgroup::Layout::detect()?;
    let cg = berth::cgroup::Cgroup::open(&layout, &e.s.cgroup_parent, id)?;
    let mut rows = Vec::new();
    let clk = 100u64;
    for pid in cg.pids()? {
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let close = stat.rfind(')').unwrap_or(0);
        let f: Vec<&str> = stat[close + 2..].split_whitespace().collect();
        let ppid = f.get(1).copied().unwrap_or("0");
        let utime: u64 = f.get(11).and_then(|x| x.parse().ok()).unwrap_or(0);
        let stime: u64 = f.get(12).and_then(|x| x.parse().ok()).unwrap_or(0);
        let t = (utime + stime) / clk;
        let uid = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("Uid:"))
                    .and_then(|l| l.split_whitespace().nth(1).map(str::to_string))
            })
            .unwrap_or_default();
        let user = if uid == "0" { "root".to_string() } else { uid };
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline"))
            .map(|b| {
                String::from_utf8_lossy(&b)
                    .trim_end_matches('\0')
                    .replace('\0', " ")
            })
            .unwrap_or_default();
        rows.push(json!([
            user,
            pid.to_string(),
            ppid,
            "0",
            "",
            "?",
            format!("{:02}:{:02}:{:02}", t / 3600, t / 60 % 60, t % 60),
            cmd
        ]));
    }
    Ok(
        json!({"Titles": ["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"], "Processes": rows}),
    )
}

// ------------------------------------------------------------------ logs

/// Options of `GET /containers/{id}/logs`.
pub struct LogsQuery {
    pub follow: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tail: Option<usize>,
    pub timestamps: bool,
    pub since: Option<std::time::SystemTime>,
    pub until: Option<std::time::SystemTime>,
}

/// The log as the API streams it: framed without a tty, raw with one.
pub fn logs(e: &Arc<Engine>, id: &str, q: LogsQuery) -> Result<Box<dyn Read + Send>> {
    let r = e.dir.load_record(id)?;
    if !log_json(e, &r) {
        return Err(Error::invalid(
            "configured logging driver does not support reading",
        ));
    }
    let path = e.dir.path(id).join(format!("{id}-json.log"));
    let life = e.life(id);
    let stop: Option<Arc<dyn Fn() -> bool + Send + Sync>> = if q.follow {
        let life = life.clone();
        Some(Arc::new(move || {
            let l = life.get();
            !l.running || l.removed
        }))
    } else {
        None
    };
    let reader = berth::logfile::read(
        &path,
        berth::logfile::ReadOptions {
            tail: q.tail,
            since: q.since,
            until: q.until,
            stdout: q.stdout,
            stderr: q.stderr,
            follow: q.follow,
            follow_until: stop,
        },
    )?;
    Ok(Box::new(LogStream {
        entries: reader,
        tty: r.config.tty,
        timestamps: q.timestamps,
        buf: Vec::new(),
        pos: 0,
    }))
}

struct LogStream {
    entries: berth::logfile::Reader,
    tty: bool,
    timestamps: bool,
    buf: Vec<u8>,
    pos: usize,
}

impl Read for LogStream {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.pos >= self.buf.len() {
            self.buf.clear();
            self.pos = 0;
            match self.entries.next() {
                None => return Ok(0),
                Some(Err(_)) => continue,
                Some(Ok(en)) => {
                    let mut payload = Vec::new();
                    if self.timestamps {
                        payload.extend_from_slice(state::rfc3339_nanos(en.time).as_bytes());
                        payload.push(b' ');
                    }
                    payload.extend_from_slice(&en.bytes);
                    if self.tty {
                        self.buf = payload;
                    } else {
                        berth::logfile::frame(en.stream.frame_byte(), &payload, &mut self.buf);
                    }
                }
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

// ------------------------------------------------------------------ attach

/// `POST /containers/{id}/attach`: relay the taken-over connection to the shim,
/// or park it until the container starts.
/// An attach to a container that is not running yet: registered now, while the
/// request is answered, and connected by `start`. None: the container runs,
/// attach with [`attach_running`].
pub fn attach_later(
    e: &Engine,
    id: &str,
    stdin: bool,
    stdout: bool,
    stderr: bool,
) -> Result<Option<Arc<Slot>>> {
    let st = e.dir.load_state(id)?;
    let r = e.dir.load_record(id)?;
    emit(e, "attach", &r, vec![]);
    if st.running() && UnixStream::connect(shim_sock(e, id)).is_ok() {
        return Ok(None);
    }
    let slot = Arc::new(Slot {
        stdin,
        stdout,
        stderr,
        up: std::sync::Mutex::new(None),
        cv: std::sync::Condvar::new(),
    });
    e.pending
        .lock()
        .unwrap()
        .entry(id.to_string())
        .or_default()
        .push(slot.clone());
    Ok(Some(slot))
}

/// Attach to a running container.
pub fn attach_running(e: &Engine, id: &str, p: Pending) -> Result<()> {
    connect_attach(e, id, p)
}

fn connect_attach(e: &Engine, id: &str, p: Pending) -> Result<()> {
    let mut s = UnixStream::connect(shim_sock(e, id))
        .map_err(|err| Error::from(err).context("the container's shim does not answer"))?;
    s.write_all(
        format!(
            "attach stdin={} stdout={} stderr={}\n",
            p.stdin as u8, p.stdout as u8, p.stderr as u8
        )
        .as_bytes(),
    )?;
    // The shim's acknowledgement: registered before anything else happens.
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut ack = [0u8; 1];
    s.read_exact(&mut ack).map_err(|err| {
        Error::from(err).context("the container's shim did not take the attachment")
    })?;
    s.set_read_timeout(None)?;
    relay(s, p.up, p.stdin);
    Ok(())
}

/// Two threads: the client's input to `s`, `s`'s output to the client.
pub fn relay(s: UnixStream, up: Upgraded, stdin: bool) {
    let Upgraded {
        mut reader,
        mut writer,
    } = up;
    if stdin {
        if let Ok(mut to) = s.try_clone() {
            let _ = std::thread::Builder::new()
                .name("attach-in".into())
                .stack_size(64 * 1024)
                .spawn(move || {
                    let _ = std::io::copy(&mut reader, &mut to);
                    let _ = to.shutdown(std::net::Shutdown::Write);
                });
        }
    } else {
        // The client's input is not wanted; the shim must not wait for it.
        let _ = s.shutdown(std::net::Shutdown::Write);
    }
    let mut from = s;
    let _ = std::thread::Builder::new()
        .name("attach-out".into())
        .stack_size(64 * 1024)
        .spawn(move || {
            let mut buf = vec![0u8; 32 * 1024];
            loop {
                match from.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if writer.write_all(&buf[..n]).is_err() || writer.flush().is_err() {
                            break;
                        }
                    }
                }
            }
        });
}

/// `POST /containers/{id}/resize?h=&w=`.
pub fn resize(e: &Engine, id: &str, h: u16, w: u16) -> Result<()> {
    let st = e.dir.load_state(id)?;
    if !st.running() {
        return Err(Error::new(
            Kind::Conflict,
            format!("Container {id} is not running"),
        ));
    }
    shim_call(e, id, &format!("resize {h} {w}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binds_parse_like_docker_and_named_volumes_are_refused() {
        let b = parse_bind("/etc/grid-security:/etc/grid-security:ro").unwrap();
        assert!(b.read_only);
        assert_eq!(b.target, PathBuf::from("/etc/grid-security"));
        assert!(!parse_bind("/home:/home").unwrap().read_only);
        assert!(parse_bind("/home:/home:rw,z").is_ok());
        let e = parse_bind("data:/var/lib/x").unwrap_err().to_string();
        assert!(e.contains("named volumes are not supported"), "{e}");
        assert!(parse_bind("/a:rel").is_err());
        assert!(parse_bind("/a:/b:bogus").is_err());
        assert!(parse_bind("/only").is_err());
    }

    #[test]
    fn names_and_durations() {
        assert!(valid_name("vn0317"));
        assert!(!valid_name("-x"));
        assert!(!valid_name("a/b"));
        assert_eq!(human_duration(0), "Less than a second");
        assert_eq!(human_duration(90), "About a minute");
        assert_eq!(human_duration(7200), "2 hours");
        let f = filters(Some(r#"{"name":{"wn":true},"status":["running"]}"#)).unwrap();
        assert_eq!(f[0], ("name".to_string(), vec!["wn".to_string()]));
    }
}

//! `registryd [serve] CONFIG`: the site's private registry. Reads Distribution's
//! config.yml, serves the OCI distribution API v1.1 and Docker's registry API v2
//! (plus `/v1/search`) from a Distribution-layout store on a directory or an S3
//! bucket (replicas may share one), over TLS with
//! htpasswd users when configured.

mod api;
mod config;
mod page;
mod signatures;

use argh::FromArgs;
use berth::error::{Error, Kind, Result};
use berth::http::{Listen, Server, ServerOptions};
use berth::store::registry::RegistryStore;
use berth::store::{Driver, Filesystem};
use std::path::PathBuf;
use std::sync::Arc;

#[derive(FromArgs)]
/// Serve an OCI/Docker v2 registry configured by Distribution's config.yml.
///
/// registryd CONFIG or registryd serve CONFIG. REGISTRY_<SECTION>_<KEY>
/// environment variables override the file (REGISTRY_HTTP_ADDR=127.0.0.1:5000).
/// registryd garbage-collect [--dry-run] [--delete-untagged] CONFIG collects
/// unreferenced blobs (safe while registries serve the same storage).
struct Args {
    /// check the configuration and exit
    #[argh(switch)]
    check: bool,
    /// garbage-collect: say what would be removed, remove nothing
    #[argh(switch, short = 'd')]
    dry_run: bool,
    /// garbage-collect: also remove manifests no tag, index or kept subject refers to
    #[argh(switch, short = 'm')]
    delete_untagged: bool,
    /// worker threads kept ready (default 64; more start while all are busy)
    #[argh(option, default = "64")]
    workers: usize,
    /// the config file, optionally after "serve" (Distribution's form)
    #[argh(positional, greedy)]
    rest: Vec<String>,
}

pub fn main(name: &str, args: &[String]) -> Result<u8> {
    let a: Args = match crate::applets::parse_args(name, args) {
        Ok(a) => a,
        Err(code) => return Ok(code),
    };
    // Distribution's order (`garbage-collect --dry-run CONFIG`): the greedy
    // positionals took the flags after the subcommand.
    let mut a = a;
    if a.rest.first().is_some_and(|s| s == "garbage-collect") {
        let mut rest = Vec::new();
        for w in std::mem::take(&mut a.rest) {
            match w.as_str() {
                "--dry-run" | "-d" => a.dry_run = true,
                "--delete-untagged" | "-m" => a.delete_untagged = true,
                _ => rest.push(w),
            }
        }
        a.rest = rest;
    }
    let (file, collect) = match a.rest.as_slice() {
        [f] if f != "serve" && f != "garbage-collect" => (PathBuf::from(f), false),
        [s, f] if s == "serve" => (PathBuf::from(f), false),
        [s, f] if s == "garbage-collect" => (PathBuf::from(f), true),
        _ => {
            return Err(Error::usage(
                "usage: registryd [serve] CONFIG, or registryd garbage-collect [--dry-run] [--delete-untagged] CONFIG  (see registryd --help)",
            ));
        }
    };
    if (a.dry_run || a.delete_untagged) && !collect {
        return Err(Error::usage(
            "--dry-run and --delete-untagged go with garbage-collect",
        ));
    }
    let cfg = config::Config::load(&file)?;
    if collect {
        return garbage_collect(&cfg, a.dry_run, a.delete_untagged);
    }
    // Check everything that can fail before anything is served.
    let tls = cfg
        .tls
        .as_ref()
        .map(berth::tls::server_config)
        .transpose()?;
    let auth = cfg
        .htpasswd
        .as_ref()
        .map(|(_, p)| berth::auth::htpasswd::Htpasswd::open(p))
        .transpose()?;
    if a.check {
        for w in &cfg.warnings {
            eprintln!("{name}: warning: {w}");
        }
        println!("{}: configuration OK", cfg.file);
        return Ok(0);
    }
    berth::log::init(cfg.level, cfg.format, &cfg.fields);
    for w in &cfg.warnings {
        log::warn!("{w}");
    }
    let driver = open_driver(&cfg)?;
    let store = Arc::new(RegistryStore::open(driver)?);
    store.set_immutable(cfg.immutable.clone());
    // What a collection killed mid-sweep left aside comes back first.
    match berth::store::gc::restore_trash(&store) {
        Ok(0) => {}
        Ok(n) => log::warn!("{n} blobs an interrupted garbage collection set aside are back"),
        Err(e) => log::error!("restoring the collector's trash: {e}"),
    }
    if cfg.purging.enabled {
        spawn_purger(store.clone(), cfg.purging.clone());
    }
    if let Some(g) = &cfg.gc {
        spawn_collector(store.clone(), cfg.clone(), g.clone());
    }
    spawn_catalog_refresh(store.clone());
    let listen = match cfg.net {
        config::Net::Tcp => Listen::Tcp(cfg.addr.clone()),
        config::Net::Unix => Listen::Unix(PathBuf::from(&cfg.addr)),
    };
    let opts = ServerOptions {
        listen,
        tls,
        limits: berth::http::front::Limits::from_env(),
        workers: a.workers,
        auth_required: cfg.htpasswd.is_some(),
        access_log: cfg.access_log,
        headers: cfg.headers.clone(),
    };
    let registry = api::Registry::new(store.clone(), cfg.clone(), auth);
    let server = Server::start(opts, Arc::new(registry))?;
    let scheme = if cfg.tls.is_some() { "https" } else { "http" };
    log::info!(
        "listening on {scheme}://{}, storage {}, {} repositories, delete {}, auth {}",
        server
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_else(|| cfg.addr.clone()),
        cfg.storage.describe(),
        store.repositories().len(),
        if cfg.delete_enabled {
            "enabled"
        } else {
            "disabled"
        },
        if cfg.htpasswd.is_some() {
            "htpasswd"
        } else {
            "none"
        },
    );
    server.wait();
    Ok(0)
}

/// The configured storage's driver: a directory, or a bucket (created on
/// first start when the gateway has none).
fn open_driver(cfg: &config::Config) -> Result<Arc<dyn Driver>> {
    match &cfg.storage {
        config::Storage::Filesystem(root) => {
            let fs = Filesystem::new(root).map_err(|e| {
                Error::new(
                    Kind::Config,
                    format!("{}: storage.filesystem.rootdirectory: {e}", cfg.file),
                )
            })?;
            Ok(Arc::new(fs))
        }
        config::Storage::S3(settings) => {
            let s3 = berth::store::s3::S3::new(settings.clone())
                .map_err(|e| Error::config(format!("{}: storage.s3: {e}", cfg.file)))?;
            s3.ensure_bucket().map_err(|e| {
                e.context(format!(
                    "{}: storage.s3 ({})",
                    cfg.file,
                    cfg.storage.describe()
                ))
            })?;
            Ok(Arc::new(s3))
        }
    }
}

/// Where a collector's lease lives on shared storage.
const GC_LEASE: &str = "/docker/registry/v2/_berth_locks/gc";

/// The right to collect: a lock file beside a directory store, a lease in
/// the bucket (kept renewed while held) on shared storage.
enum GcHold {
    File(#[allow(dead_code)] berth::fsutil::Lock),
    /// The renewer's stop channel, and the flag it raises if the lease is lost.
    Lease(
        std::sync::mpsc::Sender<()>,
        Arc<std::sync::atomic::AtomicBool>,
    ),
}

impl GcHold {
    /// Options that stop the collection when the hold is lost.
    fn options(&self, mut o: berth::store::gc::Options) -> berth::store::gc::Options {
        if let GcHold::Lease(_, lost) = self {
            o.stop = Some(lost.clone());
        }
        o
    }
}

impl Drop for GcHold {
    fn drop(&mut self) {
        if let GcHold::Lease(stop, _) = self {
            let _ = stop.send(());
        }
    }
}

/// One collector at a time per storage, across processes and replicas:
/// None when another one is running.
fn gc_hold(cfg: &config::Config, d: &Arc<dyn Driver>) -> Result<Option<GcHold>> {
    match &cfg.storage {
        config::Storage::Filesystem(root) => {
            Ok(berth::fsutil::flock(&root.join(".berth-gc.lock"), true, false)?.map(GcHold::File))
        }
        config::Storage::S3(_) => {
            let ttl = std::time::Duration::from_secs(60);
            let Some(lease) = berth::store::lease::Lease::try_acquire(d, GC_LEASE, ttl)? else {
                return Ok(None);
            };
            let (tx, rx) = std::sync::mpsc::channel::<()>();
            let lost = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let flag = lost.clone();
            std::thread::Builder::new()
                .name("gc-lease".into())
                .spawn(move || {
                    // Renewed at a third of its life; dropped (released) on stop.
                    while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                        rx.recv_timeout(ttl / 3)
                    {
                        match lease.renew() {
                            Ok(true) => {}
                            Ok(false) => {
                                log::error!("garbage collection: the collector's lease was lost");
                                flag.store(true, std::sync::atomic::Ordering::Release);
                                break;
                            }
                            Err(e) => log::warn!("garbage collection: renewing the lease: {e}"),
                        }
                    }
                })?;
            Ok(Some(GcHold::Lease(tx, lost)))
        }
    }
}

/// Where the last collection's report is kept (the page shows it): beside the
/// data, in the directory or the bucket.
pub const REPORT: &str = "/.berth-gc-report.json";

fn gc_options(cfg: &config::Config, dry_run: bool, untagged: bool) -> berth::store::gc::Options {
    berth::store::gc::Options {
        dry_run,
        delete_untagged: untagged,
        grace: cfg.gc_grace,
        retention: cfg.retention.clone(),
        stop: None,
    }
}

fn save_report(d: &Arc<dyn Driver>, r: &berth::store::gc::Report) {
    if let Ok(b) = serde_json::to_vec_pretty(r)
        && let Err(e) = d.put(REPORT, &b)
    {
        log::warn!("saving the collection report: {e}");
    }
}

/// `registryd garbage-collect`: Distribution's command, safe beside live registries.
fn garbage_collect(cfg: &config::Config, dry_run: bool, untagged: bool) -> Result<u8> {
    let driver = open_driver(cfg)?;
    let store = RegistryStore::open(driver.clone())?;
    store.set_immutable(cfg.immutable.clone());
    // A dry run changes nothing, so it needs no lock (nor leaves a lock file).
    let _hold = if dry_run {
        None
    } else {
        Some(gc_hold(cfg, &driver)?.ok_or_else(|| {
            Error::new(
                Kind::Conflict,
                format!(
                    "a garbage collection is running on {} already",
                    cfg.storage.describe()
                ),
            )
        })?)
    };
    let mut opts = gc_options(cfg, dry_run, untagged);
    if let Some(h) = &_hold {
        opts = h.options(opts);
    }
    let report = berth::store::gc::collect(&store, &opts, &mut |l| println!("{l}"))?;
    if !dry_run {
        save_report(&driver, &report);
    }
    Ok(0)
}

/// The online collector: on the configured interval, skipping a round another
/// process (a `garbage-collect`, another replica) is running.
fn spawn_collector(store: Arc<RegistryStore>, cfg: config::Config, g: config::Gc) {
    let spawned = std::thread::Builder::new()
        .name("gc".into())
        .spawn(move || {
            loop {
                std::thread::sleep(g.interval);
                let hold = match gc_hold(&cfg, store.driver()) {
                    Ok(Some(h)) => h,
                    Ok(None) => {
                        log::info!("garbage collection: another collector is running; skipped");
                        continue;
                    }
                    Err(e) => {
                        log::error!("garbage collection: {e}");
                        continue;
                    }
                };
                let opts = hold.options(gc_options(&cfg, false, g.untagged));
                match berth::store::gc::collect(&store, &opts, &mut |l| log::info!("gc: {l}")) {
                    Ok(r) => save_report(store.driver(), &r),
                    Err(e) => log::error!("garbage collection: {e}"),
                }
                drop(hold);
            }
        });
    if let Err(e) = spawned {
        log::error!("cannot start the garbage collector: {e}");
    }
}

/// Re-read the catalog from storage every ten minutes: it heals anything a race
/// left stale and picks up what another process wrote to the same storage
/// (sooner on shared storage, see below).
fn spawn_catalog_refresh(store: Arc<RegistryStore>) {
    let spawned = std::thread::Builder::new()
        .name("catalog-refresh".into())
        .spawn(move || {
            // On shared storage the changes other replicas record are listed
            // every two seconds and only the repositories they name re-read.
            let tick = if store.driver().shared() { 2 } else { 600 };
            let mut since_full = 0;
            loop {
                std::thread::sleep(std::time::Duration::from_secs(tick));
                since_full += tick;
                let r = if since_full >= 600 {
                    since_full = 0;
                    store.refresh_catalog()
                } else {
                    store.refresh_if_changed().map(|_| ())
                };
                if let Err(e) = r {
                    log::error!("catalog refresh: {e}");
                }
            }
        });
    if let Err(e) = spawned {
        log::error!("cannot start the catalog refresh: {e}");
    }
}

/// Remove upload sessions older than the configured age: now, then every interval.
fn spawn_purger(store: Arc<RegistryStore>, p: config::Purging) {
    std::thread::Builder::new()
        .name("upload-purge".into())
        .spawn(move || {
            loop {
                match store.purge_uploads(p.age, p.dryrun) {
                    Ok(0) => log::debug!("upload purging: nothing older than {:?}", p.age),
                    Ok(n) if p.dryrun => log::info!(
                        "upload purging (dry run): {n} sessions older than {:?}",
                        p.age
                    ),
                    Ok(n) => log::info!(
                        "upload purging: removed {n} sessions older than {:?}",
                        p.age
                    ),
                    Err(e) => log::error!("upload purging: {e}"),
                }
                std::thread::sleep(p.interval);
            }
        })
        .expect("start upload purger");
}

//! `registryd [serve] CONFIG`: the site's private registry. Reads Distribution's
//! config.yml, serves the OCI distribution API v1.1 and Docker's registry API v2
//! (plus `/v1/search`) from a Distribution-layout filesystem store, over TLS with
//! htpasswd users when configured.

mod api;
mod config;
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
struct Args {
    /// check the configuration and exit
    #[argh(switch)]
    check: bool,
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
    let file = match a.rest.as_slice() {
        [f] if f != "serve" => PathBuf::from(f),
        [s, f] if s == "serve" => PathBuf::from(f),
        _ => {
            return Err(Error::usage(
                "usage: registryd [serve] CONFIG  (see registryd --help)",
            ));
        }
    };
    let cfg = config::Config::load(&file)?;
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
    let fs = Filesystem::new(&cfg.root).map_err(|e| {
        Error::new(
            Kind::Config,
            format!("{}: storage.filesystem.rootdirectory: {e}", cfg.file),
        )
    })?;
    let driver: Arc<dyn Driver> = Arc::new(fs);
    let store = Arc::new(RegistryStore::open(driver)?);
    if cfg.purging.enabled {
        spawn_purger(store.clone(), cfg.purging.clone());
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
        cfg.root.display(),
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

/// Re-read the catalog from storage every ten minutes: it heals anything a race
/// left stale and picks up what another process wrote to the same storage.
fn spawn_catalog_refresh(store: Arc<RegistryStore>) {
    let spawned = std::thread::Builder::new()
        .name("catalog-refresh".into())
        .spawn(move || {
            loop {
                std::thread::sleep(std::time::Duration::from_secs(600));
                if let Err(e) = store.refresh_catalog() {
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

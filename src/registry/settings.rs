//! Client-side registry settings, like the site's docker daemon options
//! (`/etc/sysconfig/docker`, site document §4.1.3): registries searched for short
//! names (`--add-registry`), blocked registries (`--block-registry docker.io`),
//! registries allowed over plain HTTP or unverified TLS (`--insecure-registry`),
//! and where per-registry certificates live (`/etc/docker/certs.d`).
//!
//! Read from `/etc/berth/client.yml` (or `BERTH_CLIENT_CONFIG`, or `--config`):
//!
//! ```yaml
//! registries:
//!   search: [pps04.lcg.triumf.ca:5000]
//!   block: [docker.io]
//!   insecure: [pps04.lcg.triumf.ca:5000]
//! certs.d: /etc/docker/certs.d
//! ```
//! Command-line flags add to what the file says.

use crate::config::Doc;
use crate::error::{Error, Result};
use crate::reference::{DOCKER_HUB, Reference, validate_host};
use std::path::{Path, PathBuf};

pub const DEFAULT_FILE: &str = "/etc/berth/client.yml";
pub const DEFAULT_CERTS_D: &str = "/etc/docker/certs.d";

#[derive(Debug, Clone)]
pub struct Settings {
    pub search: Vec<String>,
    pub block: Vec<String>,
    pub insecure: Vec<String>,
    pub certs_d: PathBuf,
    /// Credentials given with the request (the Engine API's X-Registry-Auth),
    /// used instead of config.json's.
    pub credentials: Option<(String, String)>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            search: Vec::new(),
            block: Vec::new(),
            insecure: Vec::new(),
            certs_d: std::env::var_os("BERTH_CERTS_D")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(DEFAULT_CERTS_D)),
            credentials: None,
        }
    }
}

fn norm_host(h: &str) -> String {
    let h = h
        .trim()
        .trim_start_matches("https://")
        .trim_start_matches("http://")
        .trim_end_matches('/');
    match h {
        "index.docker.io" | "registry-1.docker.io" => DOCKER_HUB.to_string(),
        _ => h.to_string(),
    }
}

/// The registry a login's server address names, as docker's clients write it
/// (`host:port`, `https://host:port/`, `https://index.docker.io/v1/`): the
/// host and port alone, Docker Hub's aliases (and nothing) as `docker.io`.
pub fn server_host(addr: &str) -> String {
    let a = addr.trim();
    let a = a.split_once("://").map_or(a, |x| x.1);
    match norm_host(a.split('/').next().unwrap_or("")).as_str() {
        "" => DOCKER_HUB.to_string(),
        h => h.to_string(),
    }
}

impl Settings {
    /// Load the settings file: `explicit`, else `BERTH_CLIENT_CONFIG`, else the
    /// default path if it exists.
    pub fn load(explicit: Option<&Path>) -> Result<Settings> {
        let path = explicit
            .map(Path::to_path_buf)
            .or_else(|| std::env::var_os("BERTH_CLIENT_CONFIG").map(PathBuf::from))
            .or_else(|| {
                Path::new(DEFAULT_FILE)
                    .exists()
                    .then(|| PathBuf::from(DEFAULT_FILE))
            });
        let mut s = Settings::default();
        let Some(path) = path else { return Ok(s) };
        let doc = Doc::load(&path)?;
        for w in doc.unknown_keys(&[
            "registries.search",
            "registries.block",
            "registries.insecure",
            "certs.d",
        ]) {
            log::warn!("{w}");
        }
        let hosts = |k: &str| -> Result<Vec<String>> {
            doc.str_list(k)?
                .into_iter()
                .map(|h| {
                    let n = norm_host(&h);
                    validate_host(&n)
                        .map_err(|_| doc.error(k, format!("{h:?} is not HOST[:PORT]")))?;
                    Ok(n)
                })
                .collect()
        };
        s.search = hosts("registries.search")?;
        s.block = hosts("registries.block")?;
        s.insecure = hosts("registries.insecure")?;
        if let Some(c) = doc.str("certs.d")? {
            s.certs_d = PathBuf::from(c);
        }
        Ok(s)
    }

    /// Add command-line values.
    pub fn with_flags(
        mut self,
        add: &[String],
        block: &[String],
        insecure: &[String],
    ) -> Result<Settings> {
        for (list, vals) in [
            (&mut self.search, add),
            (&mut self.block, block),
            (&mut self.insecure, insecure),
        ] {
            for v in vals {
                let n = norm_host(v);
                validate_host(&n).map_err(|_| Error::usage(format!("{v:?} is not HOST[:PORT]")))?;
                if !list.contains(&n) {
                    list.push(n);
                }
            }
        }
        Ok(self)
    }

    /// Insecure registries: those listed, and — as docker has it — any on
    /// 127.0.0.0/8, where TLS protects nothing.
    pub fn is_insecure(&self, host: &str) -> bool {
        let h = norm_host(host);
        let ip = h.rsplit_once(':').map(|(a, _)| a).unwrap_or(&h);
        if ip
            .parse::<std::net::Ipv4Addr>()
            .is_ok_and(|a| a.is_loopback())
        {
            return true;
        }
        self.insecure.contains(&h)
    }

    fn is_blocked(&self, host: &str) -> bool {
        let h = norm_host(host);
        self.block.iter().any(|b| *b == h || b == "all")
    }

    /// An error naming the block when `host` is blocked: every connection
    /// (pull, push, login, search) asks this first, so a blocked registry is
    /// never contacted whatever the verb.
    pub fn refuse_blocked(&self, host: &str) -> Result<()> {
        if self.is_blocked(host) {
            return Err(Error::new(
                crate::error::Kind::Denied,
                format!("registry {host} is blocked (block-registry)"),
            ));
        }
        Ok(())
    }

    /// The fully qualified references to try for `r`, in order: `r` itself when it
    /// names a registry, else each search registry, then Docker Hub, blocked ones
    /// left out. An error when nothing is left.
    pub fn candidates(&self, r: &Reference) -> Result<Vec<Reference>> {
        if let Some(host) = &r.registry {
            if self.is_blocked(host) {
                return Err(Error::new(
                    crate::error::Kind::Denied,
                    format!("registry {host} is blocked (block-registry); {r} cannot be used"),
                ));
            }
            return Ok(vec![r.clone()]);
        }
        let mut out: Vec<Reference> = self
            .search
            .iter()
            .filter(|h| !self.is_blocked(h))
            .map(|h| r.with_registry(h))
            .collect();
        if !self.is_blocked(DOCKER_HUB) {
            out.push(r.with_registry(DOCKER_HUB));
        }
        if out.is_empty() {
            return Err(Error::new(
                crate::error::Kind::Denied,
                format!(
                    "{r} names no registry and every registry to search is blocked; use HOST[:PORT]/{}",
                    r.repository
                ),
            ));
        }
        Ok(out)
    }

    /// Where certificates for `host` live (`certs.d/HOST:PORT`).
    pub fn certs_dir(&self, host: &str) -> PathBuf {
        self.certs_d.join(host)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_addresses_name_their_registry() {
        for (given, host) in [
            ("pps04.lcg.triumf.ca:5000", "pps04.lcg.triumf.ca:5000"),
            (
                "https://pps04.lcg.triumf.ca:5000/",
                "pps04.lcg.triumf.ca:5000",
            ),
            ("https://index.docker.io/v1/", "docker.io"),
            ("registry-1.docker.io", "docker.io"),
            ("", "docker.io"),
        ] {
            assert_eq!(server_host(given), host, "{given}");
        }
    }

    #[test]
    fn short_names_follow_search_and_block() {
        let s = Settings::default()
            .with_flags(
                &["pps04.lcg.triumf.ca:5000".into()],
                &["docker.io".into()],
                &[],
            )
            .unwrap();
        let c = s
            .candidates(&Reference::parse("sl6:umd3condv4").unwrap())
            .unwrap();
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].to_string(), "pps04.lcg.triumf.ca:5000/sl6:umd3condv4");
        let e = s
            .candidates(&Reference::parse("docker.io/library/busybox").unwrap())
            .unwrap_err();
        assert!(e.to_string().contains("blocked"));
        // every verb, not only pulls: the client refuses before any socket
        let e = crate::registry::client::Registry::new("docker.io", &s).err();
        assert!(e.unwrap().to_string().contains("docker.io is blocked"));
        assert!(crate::registry::client::Registry::new("pps04.lcg.triumf.ca:5000", &s).is_ok());
        let open = Settings::default();
        assert_eq!(
            open.candidates(&Reference::parse("busybox").unwrap())
                .unwrap()[0]
                .registry
                .as_deref(),
            Some("docker.io")
        );
        let none = Settings::default()
            .with_flags(&[], &["docker.io".into()], &[])
            .unwrap();
        assert!(
            none.candidates(&Reference::parse("busybox").unwrap())
                .is_err()
        );
    }
}

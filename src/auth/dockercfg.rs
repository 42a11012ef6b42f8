//! Docker's client credentials file, `~/.docker/config.json` (or
//! `$DOCKER_CONFIG/config.json`): `{"auths": {"HOST": {"auth": base64("user:pass")}}}`.
//!
//! Read and written in docker's own format, mode 0600, keeping every other key of
//! the file as it was (credsStore, proxies, …). Keys are matched the way docker
//! does: `host:port`, `https://host:port`, and `https://index.docker.io/v1/` for
//! Docker Hub.

use crate::error::{Context, Error, Result};
use base64::Engine;
use serde_json::{Map, Value};
use std::path::PathBuf;

/// Docker Hub's historical key in config.json.
const HUB_KEY: &str = "https://index.docker.io/v1/";

/// Where config.json lives: `$DOCKER_CONFIG`, else `~/.docker`.
pub fn config_path() -> PathBuf {
    let dir = std::env::var_os("DOCKER_CONFIG")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let home = std::env::var_os("HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("/root"));
            home.join(".docker")
        });
    dir.join("config.json")
}

fn key_matches(key: &str, host: &str) -> bool {
    let k = key
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let k = k.split('/').next().unwrap_or(k);
    if k == host {
        return true;
    }
    let hub = |h: &str| matches!(h, "docker.io" | "index.docker.io" | "registry-1.docker.io");
    hub(k) && hub(host)
}

fn load() -> Result<Map<String, Value>> {
    let p = config_path();
    match std::fs::read(&p) {
        Ok(b) if b.iter().all(u8::is_ascii_whitespace) => Ok(Map::new()),
        Ok(b) => match serde_json::from_slice::<Value>(&b) {
            Ok(Value::Object(m)) => Ok(m),
            Ok(_) => Err(Error::config(format!("{}: not a JSON object", p.display()))),
            Err(e) => Err(Error::config(format!("{}:{}: {e}", p.display(), e.line()))),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Map::new()),
        Err(e) => Err(Error::from(e).context(p.display())),
    }
}

/// Credentials stored for a registry host.
pub fn credentials(host: &str) -> Result<Option<(String, String)>> {
    let cfg = load()?;
    let Some(Value::Object(auths)) = cfg.get("auths") else {
        return Ok(None);
    };
    for (k, v) in auths {
        if !key_matches(k, host) {
            continue;
        }
        if let Some(a) = v.get("auth").and_then(Value::as_str) {
            let raw = base64::engine::general_purpose::STANDARD
                .decode(a.trim())
                .map_err(|_| {
                    Error::config(format!(
                        "{}: auths.{k}.auth is not base64",
                        config_path().display()
                    ))
                })?;
            let raw = String::from_utf8_lossy(&raw).into_owned();
            if let Some((u, p)) = raw.split_once(':') {
                return Ok(Some((u.to_string(), p.to_string())));
            }
        }
        if let (Some(u), Some(p)) = (
            v.get("username").and_then(Value::as_str),
            v.get("password").and_then(Value::as_str),
        ) {
            return Ok(Some((u.to_string(), p.to_string())));
        }
    }
    Ok(None)
}

fn save(cfg: Map<String, Value>) -> Result<PathBuf> {
    let p = config_path();
    let dir = p.parent().unwrap();
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let mut text = serde_json::to_vec_pretty(&Value::Object(cfg))
        .map_err(|e| Error::internal(e.to_string()))?;
    text.push(b'\n');
    crate::fsutil::atomic_write_mode(&p, &text, 0o600)?;
    Ok(p)
}

/// Store credentials for a host (replacing any entry docker would match).
pub fn store(host: &str, user: &str, password: &str) -> Result<PathBuf> {
    let mut cfg = load()?;
    let auths = cfg
        .entry("auths")
        .or_insert_with(|| Value::Object(Map::new()));
    let Value::Object(auths) = auths else {
        return Err(Error::config(format!(
            "{}: auths is not an object",
            config_path().display()
        )));
    };
    auths.retain(|k, _| !key_matches(k, host));
    let key = if key_matches(HUB_KEY, host) {
        HUB_KEY.to_string()
    } else {
        host.to_string()
    };
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    auths.insert(key, serde_json::json!({ "auth": auth }));
    save(cfg)
}

/// Remove credentials for a host; false if there were none.
pub fn remove(host: &str) -> Result<bool> {
    let mut cfg = load()?;
    let Some(Value::Object(auths)) = cfg.get_mut("auths") else {
        return Ok(false);
    };
    let before = auths.len();
    auths.retain(|k, _| !key_matches(k, host));
    if auths.len() == before {
        return Ok(false);
    }
    save(cfg)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_match_like_docker() {
        assert!(key_matches(
            "https://roc-policy-sb.triumf.ca:5000",
            "roc-policy-sb.triumf.ca:5000"
        ));
        assert!(key_matches(
            "roc-policy-sb.triumf.ca:5000",
            "roc-policy-sb.triumf.ca:5000"
        ));
        assert!(key_matches("https://index.docker.io/v1/", "docker.io"));
        assert!(!key_matches("other:5000", "roc-policy-sb.triumf.ca:5000"));
    }
}

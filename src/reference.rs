//! Repository names, tags and image references (`[host[:port]/]path[:tag][@digest]`).
//!
//! Names are validated against the distribution spec's grammar before they are used
//! anywhere — in particular before they become filesystem paths — so `..`, absolute
//! paths and empty components can never reach storage.

use crate::digest::Digest;
use crate::error::{Error, Result};
use std::fmt;

/// Longest repository name accepted (clients limit host/name to 255 bytes).
pub const MAX_NAME: usize = 255;

/// Check one path component: `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`.
fn valid_component(c: &str) -> bool {
    let b = c.as_bytes();
    if b.is_empty() || !is_alnum(b[0]) || !is_alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if is_alnum(b[i]) {
            i += 1;
            continue;
        }
        // a separator: ".", "_", "__" or a run of "-"
        let start = i;
        match b[i] {
            b'.' => i += 1,
            b'_' => {
                i += 1;
                if i < b.len() && b[i] == b'_' {
                    i += 1;
                }
            }
            b'-' => {
                while i < b.len() && b[i] == b'-' {
                    i += 1;
                }
            }
            _ => return false,
        }
        if i == start || i >= b.len() || !is_alnum(b[i]) {
            return false;
        }
    }
    true
}

fn is_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

/// Validate a repository name (`library/sl6`, `sl6-umd3condv4`).
pub fn validate_name(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > MAX_NAME || !name.split('/').all(valid_component) {
        return Err(Error::invalid(format!(
            "invalid repository name {name:?}: use lowercase letters, digits and . _ - separators, components joined by /"
        )));
    }
    Ok(())
}

/// Validate a tag: `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`.
pub fn validate_tag(tag: &str) -> Result<()> {
    let b = tag.as_bytes();
    let ok = !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|&c| c.is_ascii_alphanumeric() || c == b'_' || c == b'.' || c == b'-');
    if !ok {
        return Err(Error::invalid(format!(
            "invalid tag {tag:?}: up to 128 of letters, digits, _ . - (not starting with . or -)"
        )));
    }
    Ok(())
}

/// The default registry for names without a host, as docker resolves them.
pub const DOCKER_HUB: &str = "docker.io";

/// A parsed image reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// Registry host (with port), or `None` for a short name.
    pub registry: Option<String>,
    /// Repository path within the registry.
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<Digest>,
}

impl Reference {
    /// Parse `[host[:port]/]path[:tag][@digest]`. A first component counts as a host
    /// when it contains `.` or `:` or is `localhost`, as docker decides.
    pub fn parse(s: &str) -> Result<Reference> {
        let (rest, digest) = match s.split_once('@') {
            Some((r, d)) => (
                r,
                Some(
                    d.parse::<Digest>()
                        .map_err(|e| e.context(format!("reference {s:?}")))?,
                ),
            ),
            None => (s, None),
        };
        let (registry, path) = match rest.split_once('/') {
            Some((first, p))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (Some(first.to_string()), p)
            }
            _ => (None, rest),
        };
        // a tag is after the last ':' that comes after the last '/'
        let (repository, tag) = match path.rfind(':') {
            Some(i) if !path[i..].contains('/') => (&path[..i], Some(path[i + 1..].to_string())),
            _ => (path, None),
        };
        if let Some(r) = &registry {
            validate_host(r).map_err(|e| e.context(format!("reference {s:?}")))?;
        }
        validate_name(repository).map_err(|e| e.context(format!("reference {s:?}")))?;
        if let Some(t) = &tag {
            validate_tag(t).map_err(|e| e.context(format!("reference {s:?}")))?;
        }
        Ok(Reference {
            registry,
            repository: repository.to_string(),
            tag,
            digest,
        })
    }

    /// Registry host, docker.io for short names.
    pub fn registry_or_default(&self) -> &str {
        self.registry.as_deref().unwrap_or(DOCKER_HUB)
    }

    /// Repository path as the registry's API wants it (`library/` added on Docker Hub).
    pub fn api_repository(&self) -> String {
        if self.registry_or_default() == DOCKER_HUB && !self.repository.contains('/') {
            format!("library/{}", self.repository)
        } else {
            self.repository.clone()
        }
    }

    /// Tag or digest to ask the registry for (`latest` when neither is given).
    pub fn api_reference(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => "latest".into(),
        }
    }

    /// The reference with another registry host.
    pub fn with_registry(&self, host: &str) -> Reference {
        Reference {
            registry: Some(host.to_string()),
            ..self.clone()
        }
    }

    /// `registry/repository` without tag or digest.
    pub fn name(&self) -> String {
        match &self.registry {
            Some(r) => format!("{r}/{}", self.repository),
            None => self.repository.clone(),
        }
    }
}

/// A name as docker shows it locally: Docker Hub's `docker.io/` and
/// `docker.io/library/` prefixes dropped, everything else as it is.
pub fn familiar(name: &str) -> String {
    for hub in [
        "docker.io/library/",
        "index.docker.io/library/",
        "docker.io/",
        "index.docker.io/",
    ] {
        if let Some(rest) = name.strip_prefix(hub) {
            return rest.to_string();
        }
    }
    name.to_string()
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

/// Validate `host[:port]` as it may appear in a reference.
pub fn validate_host(h: &str) -> Result<()> {
    let (host, port) = match h.rsplit_once(':') {
        Some((a, p)) if !a.ends_with(']') || h.starts_with('[') => (a, Some(p)),
        _ => (h, None),
    };
    let host_ok = !host.is_empty()
        && (host.starts_with('[') && host.ends_with(']')
            || host.split('.').all(|l| {
                !l.is_empty()
                    && l.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-')
                    && !l.starts_with('-')
                    && !l.ends_with('-')
            }));
    let port_ok =
        port.is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|c| c.is_ascii_digit()));
    if !host_ok || !port_ok {
        return Err(Error::invalid(format!("invalid registry host {h:?}")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in [
            "a",
            "library/sl6",
            "sl6-umd3condv4",
            "a.b_c__d--e/f",
            "0/1/2",
        ] {
            validate_name(ok).unwrap();
        }
        for bad in [
            "", "A", "..", "a/../b", "/a", "a/", "a//b", "a_", "-a", "a___b", "a/./b", "a b", "a\0",
        ] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
        assert!(validate_name(&"a".repeat(256)).is_err());
    }

    #[test]
    fn tags() {
        validate_tag("latest").unwrap();
        validate_tag("_x.Y-1").unwrap();
        validate_tag(&"t".repeat(128)).unwrap();
        for bad in ["", ".a", "-a", "a/b", "a:b", &"t".repeat(129)] {
            assert!(validate_tag(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn references() {
        let r = Reference::parse("pps04.lcg.triumf.ca:5000/sl6-umd3condv4").unwrap();
        assert_eq!(r.registry.as_deref(), Some("pps04.lcg.triumf.ca:5000"));
        assert_eq!(r.repository, "sl6-umd3condv4");
        assert_eq!(r.api_reference(), "latest");
        let r = Reference::parse("sl6:umd3condv4").unwrap();
        assert_eq!(
            (r.registry.clone(), r.tag.as_deref()),
            (None, Some("umd3condv4"))
        );
        assert_eq!(r.api_repository(), "library/sl6");
        let r = Reference::parse("localhost:5000/a/b:t@sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855").unwrap();
        assert_eq!(
            r.to_string(),
            "localhost:5000/a/b:t@sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert!(Reference::parse("UPPER/x").is_err());
        assert_eq!(
            familiar("docker.io/library/busybox:latest"),
            "busybox:latest"
        );
        assert_eq!(familiar("docker.io/site/sl6:t"), "site/sl6:t");
        assert_eq!(
            familiar("pps04.lcg.triumf.ca:5000/sl6"),
            "pps04.lcg.triumf.ca:5000/sl6"
        );
        assert!(Reference::parse("host:99999999/x").is_err());
    }
}

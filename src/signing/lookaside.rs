//! containers-registries.d(5): where signatures live when a registry does not
//! carry them itself. Every `*.yaml` in the directory is merged (a scope may be
//! configured once only); the most specific `docker` scope for an image wins,
//! then `default-docker`, then the built-in `file:///var/lib/containers/sigstore`.
//! Signature `n` (from 1) of manifest `algo:hex` of `host/ns/name` is at
//! `BASE/ns/name@algo=hex/signature-n`; readers stop at the first missing index.

use super::policy::Identity;
use crate::config::{Doc, Node};
use crate::digest::Digest;
use crate::error::{Error, Kind, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The system-wide directory.
pub const DEFAULT_DIR: &str = "/etc/containers/registries.d";
/// containers/image's built-in signature storage for root.
pub const DEFAULT_LOOKASIDE: &str = "file:///var/lib/containers/sigstore";

/// One configuration section.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Section {
    pub lookaside: Option<String>,
    pub lookaside_staging: Option<String>,
}

/// The merged directory.
#[derive(Debug, Clone, Default)]
pub struct RegistriesD {
    default_docker: Option<Section>,
    docker: BTreeMap<String, Section>,
}

fn section(doc: &Doc, n: &Node, what: &str) -> Result<Section> {
    let mut s = Section::default();
    for (k, v) in n.entries() {
        let val = || {
            v.scalar_string().ok_or_else(|| {
                Error::config(format!("{}: {what}.{k} must be a URL", doc.origin(v)))
            })
        };
        match k.as_str() {
            // `sigstore*` are the old names of the same keys.
            "lookaside" | "sigstore" => s.lookaside = Some(val()?),
            "lookaside-staging" | "sigstore-staging" => s.lookaside_staging = Some(val()?),
            "use-sigstore-attachments" => {}
            _ => {
                return Err(Error::config(format!(
                    "{}: {what}: unknown key {k:?}",
                    doc.origin(v)
                )));
            }
        }
    }
    for u in [&s.lookaside, &s.lookaside_staging].into_iter().flatten() {
        if !(u.starts_with("file:///") || u.starts_with("http://") || u.starts_with("https://")) {
            return Err(Error::config(format!(
                "{}: {what}: {u:?} is not a file:///, http:// or https:// URL",
                doc.file
            )));
        }
    }
    Ok(s)
}

impl RegistriesD {
    /// Read every `*.yaml` of `dir` (a missing directory is an empty config).
    pub fn load(dir: &Path) -> Result<RegistriesD> {
        let mut out = RegistriesD::default();
        let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
            Ok(rd) => rd
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(Error::from(e).context(dir.display())),
        };
        files.sort();
        let mut seen: BTreeMap<String, String> = BTreeMap::new();
        for f in files {
            let doc = Doc::load(&f)?;
            for (k, v) in doc.root.entries() {
                match k.as_str() {
                    "default-docker" => {
                        if let Some(prev) = seen.insert("default-docker".into(), doc.origin(v)) {
                            return Err(Error::config(format!(
                                "{}: default-docker is configured already at {prev}",
                                doc.origin(v)
                            )));
                        }
                        out.default_docker = Some(section(&doc, v, "default-docker")?);
                    }
                    "docker" => {
                        for (scope, s) in v.entries() {
                            if let Some(prev) =
                                seen.insert(format!("docker {scope}"), doc.origin(s))
                            {
                                return Err(Error::config(format!(
                                    "{}: docker scope {scope:?} is configured already at {prev}",
                                    doc.origin(s)
                                )));
                            }
                            out.docker.insert(
                                scope.clone(),
                                section(&doc, s, &format!("docker.{scope}"))?,
                            );
                        }
                    }
                    _ => {
                        return Err(Error::config(format!(
                            "{}: unknown key {k:?} (default-docker and docker are known)",
                            doc.origin(v)
                        )));
                    }
                }
            }
        }
        Ok(out)
    }

    /// The directory a `--registries-d` flag names, else the system one.
    pub fn from_flag(flag: Option<&Path>) -> Result<RegistriesD> {
        RegistriesD::load(flag.unwrap_or(Path::new(DEFAULT_DIR)))
    }

    /// The section for an image: most specific docker scope, default-docker, built-in.
    pub fn section_for(&self, image: &Identity) -> Section {
        for s in image.scopes() {
            if let Some(sec) = self.docker.get(&s) {
                return sec.clone();
            }
        }
        self.default_docker.clone().unwrap_or(Section {
            lookaside: Some(DEFAULT_LOOKASIDE.into()),
            lookaside_staging: None,
        })
    }
}

/// `BASE/ns/name@algo=hex/signature-n` for image `repository` (host/ns/name).
pub fn signature_url(base: &str, repository: &str, digest: &Digest, n: usize) -> String {
    let path = repository
        .split_once('/')
        .map(|(_, p)| p)
        .unwrap_or(repository);
    format!(
        "{}/{path}@{}={}/signature-{n}",
        base.trim_end_matches('/'),
        digest.algorithm().as_str(),
        digest.hex()
    )
}

/// Read signatures 1, 2, … from a `file://` store until one is missing.
pub fn read_file_store(base: &str, repository: &str, digest: &Digest) -> Result<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    for n in 1.. {
        let url = signature_url(base, repository, digest, n);
        let path = url.strip_prefix("file://").unwrap_or(&url);
        match std::fs::read(path) {
            Ok(b) => out.push(b),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
            Err(e) => return Err(Error::from(e).context(path)),
        }
        if n > 1000 {
            return Err(Error::new(
                Kind::Invalid,
                format!("{base}: more than 1000 signatures"),
            ));
        }
    }
    Ok(out)
}

/// Add a signature to a `file://` store at the first free index (unless the same
/// bytes are there already). Returns the index.
pub fn write_file_store(
    base: &str,
    repository: &str,
    digest: &Digest,
    sig: &[u8],
) -> Result<usize> {
    let existing = read_file_store(base, repository, digest)?;
    if let Some(i) = existing.iter().position(|s| s == sig) {
        return Ok(i + 1);
    }
    let n = existing.len() + 1;
    let url = signature_url(base, repository, digest, n);
    let path = PathBuf::from(url.strip_prefix("file://").unwrap_or(&url));
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| Error::from(e).context(dir.display()))?;
    }
    crate::fsutil::replace_file(&path, sig)?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_scopes() {
        let d = Digest::sha256(b"x");
        let id = Identity::parse("docker.io/library/busybox:latest").unwrap();
        assert_eq!(
            signature_url("https://example.com/lookaside/", &id.repository, &d, 1),
            format!(
                "https://example.com/lookaside/library/busybox@sha256={}/signature-1",
                d.hex()
            )
        );
        let dir = std::env::temp_dir().join(format!("berth-regd-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("a.yaml"),
            "docker:\n  reg.example:\n    lookaside: https://one\n  reg.example/grid:\n    lookaside: https://two\n",
        )
        .unwrap();
        std::fs::write(
            dir.join("b.yaml"),
            "default-docker:\n  sigstore: file:///srv/sigs\n",
        )
        .unwrap();
        let r = RegistriesD::load(&dir).unwrap();
        let at = |s: &str| {
            r.section_for(&Identity::parse(s).unwrap())
                .lookaside
                .unwrap()
        };
        assert_eq!(at("reg.example/grid/worker:1"), "https://two");
        assert_eq!(at("reg.example/other:1"), "https://one");
        assert_eq!(at("elsewhere.example/x:1"), "file:///srv/sigs");
        std::fs::write(
            dir.join("c.yaml"),
            "docker:\n  reg.example:\n    lookaside: https://three\n",
        )
        .unwrap();
        let e = RegistriesD::load(&dir).unwrap_err();
        assert!(e.to_string().contains("configured already"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn file_store_round_trip() {
        let dir = std::env::temp_dir().join(format!("berth-sigstore-{}", std::process::id()));
        let base = format!("file://{}", dir.display());
        let d = Digest::sha256(b"m");
        assert_eq!(
            write_file_store(&base, "r.example/a/b", &d, b"one").unwrap(),
            1
        );
        assert_eq!(
            write_file_store(&base, "r.example/a/b", &d, b"two").unwrap(),
            2
        );
        assert_eq!(
            write_file_store(&base, "r.example/a/b", &d, b"one").unwrap(),
            1
        );
        assert_eq!(
            read_file_store(&base, "r.example/a/b", &d).unwrap(),
            vec![b"one".to_vec(), b"two".to_vec()]
        );
        assert!(
            dir.join(format!("a/b@sha256={}/signature-2", d.hex()))
                .exists()
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

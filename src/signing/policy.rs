//! containers-policy.json(5): which images a node accepts, for the `docker`
//! transport (the one berth pulls through; other transports' sections are read
//! and left alone). Scopes go from the most specific (`host/ns/repo:tag`) through
//! repository, namespaces, host and `*.domain` wildcards to the transport's `""`
//! and the global `default`; only the most specific match applies, and every
//! requirement of it must hold.
//!
//! Requirements: `insecureAcceptAnything`, `reject`, and `signedBy` with GPG keys
//! (`keyPath`, `keyPaths` or `keyData`) and a `signedIdentity` rule. A signature
//! counts for `signedBy` when it verifies with one of its keys, names the image's
//! manifest digest, and claims an identity the rule accepts. `sigstoreSigned`
//! (and anything else) parses but is never satisfied, so a policy berth cannot
//! fully check refuses rather than accepts. Keyrings are read when the policy is,
//! so a broken policy is reported at once with its file.

use super::openpgp::Keyring;
use super::payload::Payload;
use crate::digest::Digest;
use crate::error::{Error, Kind, Result};
use crate::reference::Reference;
use base64::Engine;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Where containers tools (and berth) look by default.
pub const DEFAULT_POLICY: &str = "/etc/containers/policy.json";

/// A reference in the fully expanded form the format compares: `host/path`
/// (`docker.io/library/` added for Docker Hub short names) with a tag or digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<Digest>,
}

impl Identity {
    pub fn of(r: &Reference) -> Identity {
        Identity {
            repository: format!("{}/{}", r.registry_or_default(), r.api_repository()),
            // A digest wins over a tag: it names exactly what is pulled.
            tag: if r.digest.is_some() {
                None
            } else {
                r.tag.clone()
            },
            digest: r.digest.clone(),
        }
    }

    /// Parse a reference and expand it.
    pub fn parse(s: &str) -> Result<Identity> {
        Ok(Identity::of(&Reference::parse(s)?))
    }

    /// The same identity with a tag (`latest` if it had neither tag nor digest).
    pub fn tagged_or_latest(mut self) -> Identity {
        if self.tag.is_none() && self.digest.is_none() {
            self.tag = Some("latest".into());
        }
        self
    }

    pub fn host(&self) -> &str {
        self.repository.split('/').next().unwrap_or("")
    }

    /// Scopes naming this image, most specific first: the reference itself
    /// (with its tag or digest), the repository, each enclosing namespace, the
    /// host — how policy.json and registries.d both look an image up.
    pub fn scopes(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.tag.is_some() || self.digest.is_some() {
            out.push(self.to_string());
        }
        let mut repo = self.repository.as_str();
        loop {
            out.push(repo.to_string());
            match repo.rfind('/') {
                Some(i) => repo = &repo[..i],
                None => break,
            }
        }
        out
    }
}

impl std::fmt::Display for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.repository)?;
        if let Some(d) = &self.digest {
            write!(f, "@{d}")
        } else if let Some(t) = &self.tag {
            write!(f, ":{t}")
        } else {
            Ok(())
        }
    }
}

/// How a signature's claimed identity must relate to the image's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdentityRule {
    MatchExact,
    MatchRepoDigestOrExact,
    MatchRepository,
    ExactReference(Identity),
    ExactRepository(String),
    RemapIdentity {
        prefix: String,
        signed_prefix: String,
    },
}

/// One requirement of a scope.
#[derive(Debug, Clone)]
pub enum Requirement {
    InsecureAcceptAnything,
    Reject,
    SignedBy {
        keys: Keyring,
        /// Where the keys came from, for messages.
        source: String,
        identity: IdentityRule,
    },
    /// A requirement berth cannot check (sigstoreSigned, a future type).
    Unsupported(String),
}

impl Requirement {
    fn describe(&self) -> String {
        match self {
            Requirement::InsecureAcceptAnything => "insecureAcceptAnything".into(),
            Requirement::Reject => "reject".into(),
            Requirement::SignedBy { source, .. } => format!("signedBy {source}"),
            Requirement::Unsupported(t) => t.clone(),
        }
    }
}

/// A loaded policy.
#[derive(Debug, Clone)]
pub struct Policy {
    /// The file it came from (or a description), for messages.
    pub source: String,
    default: Vec<Requirement>,
    docker: BTreeMap<String, Vec<Requirement>>,
}

/// A signature that satisfied a signedBy requirement.
#[derive(Debug, Clone)]
pub struct Accepted {
    pub key: String,
    pub user: String,
    pub identity: String,
    pub created: Option<i64>,
}

/// Why and by what an image was accepted.
#[derive(Debug, Clone)]
pub struct Decision {
    /// The scope whose requirements applied (`default` for the global one).
    pub scope: String,
    /// The signatures that satisfied signedBy requirements (empty when none was asked).
    pub signatures: Vec<Accepted>,
}

fn config_err(source: &str, msg: impl std::fmt::Display) -> Error {
    Error::new(Kind::Config, format!("{source}: {msg}"))
}

fn only_keys(v: &Value, allowed: &[&str], source: &str, what: &str) -> Result<()> {
    let m = v
        .as_object()
        .ok_or_else(|| config_err(source, format!("{what} must be an object")))?;
    if let Some(k) = m.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(config_err(source, format!("{what}: unknown key {k:?}")));
    }
    Ok(())
}

fn str_of<'a>(v: &'a Value, key: &str, source: &str, what: &str) -> Result<&'a str> {
    v.get(key)
        .and_then(Value::as_str)
        .ok_or_else(|| config_err(source, format!("{what}: {key} must be a string")))
}

/// A repository or namespace prefix as remapIdentity and exactRepository take it.
fn valid_prefix(p: &str) -> bool {
    if p.is_empty() || p.contains('@') {
        return false;
    }
    match p.split_once('/') {
        None => true,
        Some((_, path)) => !path.contains(':'),
    }
}

impl Policy {
    /// Load a policy file; relative key paths are taken from the policy's directory.
    pub fn load(path: &Path) -> Result<Policy> {
        let data = std::fs::read(path)
            .map_err(|e| Error::from(e).context(format!("policy {}", path.display())))?;
        Policy::parse(&data, &path.display().to_string(), path.parent())
    }

    /// The policy to apply for `--policy`: that file, else the default one if it
    /// exists, else None (no policy configured: nothing is checked, as before).
    pub fn from_flag(flag: Option<&Path>) -> Result<Option<Policy>> {
        match flag {
            Some(p) => Policy::load(p).map(Some),
            None if Path::new(DEFAULT_POLICY).exists() => {
                Policy::load(Path::new(DEFAULT_POLICY)).map(Some)
            }
            None => Ok(None),
        }
    }

    pub fn parse(data: &[u8], source: &str, base: Option<&Path>) -> Result<Policy> {
        let v: Value = serde_json::from_slice(data)
            .map_err(|e| config_err(source, format!("not valid JSON: {e}")))?;
        only_keys(&v, &["default", "transports"], source, "the policy")?;
        let default = v
            .get("default")
            .ok_or_else(|| config_err(source, "the global \"default\" requirements are missing"))?;
        let default = parse_requirements(default, source, base, "default")?;
        let mut docker = BTreeMap::new();
        if let Some(t) = v.get("transports") {
            let t = t
                .as_object()
                .ok_or_else(|| config_err(source, "transports must be an object"))?;
            for (name, scopes) in t {
                let scopes = scopes.as_object().ok_or_else(|| {
                    config_err(source, format!("transports.{name} must be an object"))
                })?;
                for (scope, reqs) in scopes {
                    let what = format!("transports.{name}[{scope:?}]");
                    let reqs = parse_requirements(reqs, source, base, &what)?;
                    if name == "docker" {
                        if !scope.is_empty() {
                            check_docker_scope(scope)
                                .map_err(|e| config_err(source, format!("{what}: {e}")))?;
                        }
                        docker.insert(scope.clone(), reqs);
                    }
                }
            }
        }
        Ok(Policy {
            source: source.to_string(),
            default,
            docker,
        })
    }

    /// The scope and requirements that apply to `image`.
    pub fn requirements_for(&self, image: &Identity) -> (String, &[Requirement]) {
        for scope in docker_scopes(image) {
            if let Some(r) = self.docker.get(&scope) {
                let label = if scope.is_empty() {
                    "docker default".to_string()
                } else {
                    scope
                };
                return (label, r);
            }
        }
        ("default".into(), &self.default)
    }

    /// True when the applicable requirements ask for nothing at all, so callers
    /// need not fetch signatures.
    pub fn accepts_anything(&self, image: &Identity) -> bool {
        self.requirements_for(image)
            .1
            .iter()
            .all(|r| matches!(r, Requirement::InsecureAcceptAnything))
    }

    /// Decide on `image` (the reference it is known by), whose top manifest has
    /// `digest`, given the signature blobs found for it, at time `now`.
    pub fn evaluate(
        &self,
        image: &Identity,
        digest: &Digest,
        signatures: &[Vec<u8>],
        now: i64,
    ) -> Result<Decision> {
        let (scope, reqs) = self.requirements_for(image);
        let mut accepted = Vec::new();
        for (i, req) in reqs.iter().enumerate() {
            let fail = |why: String| {
                Error::new(
                    Kind::Denied,
                    format!(
                        "{image} is refused by {} (scope {scope}, requirement {} {}): {why}",
                        self.source,
                        i + 1,
                        req.describe()
                    ),
                )
            };
            match req {
                Requirement::InsecureAcceptAnything => {}
                Requirement::Reject => return Err(fail("images here are rejected".into())),
                Requirement::Unsupported(t) => {
                    return Err(fail(format!("berth cannot check {t} requirements")));
                }
                Requirement::SignedBy { keys, identity, .. } => {
                    if signatures.is_empty() {
                        return Err(fail("the image has no signature".into()));
                    }
                    let mut why = Vec::new();
                    let mut ok = None;
                    for (n, sig) in signatures.iter().enumerate() {
                        match check_signature(keys, identity, image, digest, sig, now) {
                            Ok(a) => {
                                ok = Some(a);
                                break;
                            }
                            Err(e) => why.push(format!("signature {}: {}", n + 1, e.message())),
                        }
                    }
                    match ok {
                        Some(a) => accepted.push(a),
                        None => return Err(fail(why.join("; "))),
                    }
                }
            }
        }
        Ok(Decision {
            scope,
            signatures: accepted,
        })
    }
}

/// One signature against one signedBy requirement.
pub fn check_signature(
    keys: &Keyring,
    rule: &IdentityRule,
    image: &Identity,
    digest: &Digest,
    sig: &[u8],
    now: i64,
) -> Result<Accepted> {
    let v = keys.verify(sig, now)?;
    // Only now, with the signature checked, is the payload read.
    let p = Payload::parse(&v.payload)?;
    if &p.manifest_digest != digest {
        return Err(Error::new(
            Kind::Digest,
            format!(
                "it signs manifest {}, not {digest} (the tag may have moved)",
                p.manifest_digest
            ),
        ));
    }
    let claimed = Identity::parse(&p.docker_reference)?;
    if !identity_matches(rule, image, &claimed) {
        return Err(Error::new(
            Kind::Denied,
            format!("it claims identity {claimed}, which does not match {image} ({rule:?})"),
        ));
    }
    Ok(Accepted {
        key: v.key,
        user: v.user,
        identity: claimed.to_string(),
        created: p.timestamp.or(v.created),
    })
}

fn exact(a: &Identity, b: &Identity) -> bool {
    a.repository == b.repository
        && (a.tag.is_some() || a.digest.is_some())
        && a.tag == b.tag
        && a.digest == b.digest
}

fn repo_digest_or_exact(image: &Identity, claimed: &Identity) -> bool {
    if image.digest.is_some() {
        image.repository == claimed.repository
    } else {
        exact(image, claimed)
    }
}

/// Whether `claimed` (from a verified signature) is acceptable for `image`.
pub fn identity_matches(rule: &IdentityRule, image: &Identity, claimed: &Identity) -> bool {
    match rule {
        IdentityRule::MatchExact => exact(image, claimed),
        IdentityRule::MatchRepoDigestOrExact => repo_digest_or_exact(image, claimed),
        IdentityRule::MatchRepository => image.repository == claimed.repository,
        IdentityRule::ExactReference(r) => exact(r, claimed),
        IdentityRule::ExactRepository(r) => *r == claimed.repository,
        IdentityRule::RemapIdentity {
            prefix,
            signed_prefix,
        } => {
            let repo = &image.repository;
            let remapped = match repo.strip_prefix(prefix.as_str()) {
                Some(rest) if rest.is_empty() || rest.starts_with('/') => Identity {
                    repository: format!("{signed_prefix}{rest}"),
                    ..image.clone()
                },
                _ => image.clone(),
            };
            repo_digest_or_exact(&remapped, claimed)
        }
    }
}

/// Scopes to try for an image, most specific first (the transport default last).
fn docker_scopes(image: &Identity) -> Vec<String> {
    let mut out = image.scopes();
    // *.example.com matches every subdomain (never the port).
    let host = image.host();
    if !host.contains(':') {
        let mut rest = host;
        while let Some((_, parent)) = rest.split_once('.') {
            out.push(format!("*.{parent}"));
            rest = parent;
        }
    }
    out.push(String::new());
    out
}

fn check_docker_scope(scope: &str) -> Result<()> {
    if let Some(domain) = scope.strip_prefix("*.") {
        if domain.is_empty() || domain.contains(['*', '/', ':']) {
            return Err(Error::invalid(format!(
                "invalid wildcard scope {scope:?}: only *.domain is allowed"
            )));
        }
        return Ok(());
    }
    if scope.contains('*') {
        return Err(Error::invalid(format!(
            "invalid scope {scope:?}: a wildcard must be the whole first label (*.example.com)"
        )));
    }
    // A host alone, or a fully expanded reference or prefix of one.
    if !scope.contains('/') {
        return crate::reference::validate_host(scope);
    }
    let r = Reference::parse(scope)?;
    if r.registry.is_none() {
        return Err(Error::invalid(format!(
            "scope {scope:?} is not in the fully expanded form (host/namespace/repository)"
        )));
    }
    Ok(())
}

fn parse_requirements(
    v: &Value,
    source: &str,
    base: Option<&Path>,
    what: &str,
) -> Result<Vec<Requirement>> {
    let list = v
        .as_array()
        .ok_or_else(|| config_err(source, format!("{what} must be a list of requirements")))?;
    if list.is_empty() {
        return Err(config_err(
            source,
            format!("{what}: a requirement list may not be empty (use insecureAcceptAnything)"),
        ));
    }
    list.iter()
        .enumerate()
        .map(|(i, r)| parse_requirement(r, source, base, &format!("{what} requirement {}", i + 1)))
        .collect()
}

fn parse_requirement(
    v: &Value,
    source: &str,
    base: Option<&Path>,
    what: &str,
) -> Result<Requirement> {
    let ty = str_of(v, "type", source, what)?;
    match ty {
        "insecureAcceptAnything" => {
            only_keys(v, &["type"], source, what)?;
            Ok(Requirement::InsecureAcceptAnything)
        }
        "reject" => {
            only_keys(v, &["type"], source, what)?;
            Ok(Requirement::Reject)
        }
        "signedBy" => {
            only_keys(
                v,
                &[
                    "type",
                    "keyType",
                    "keyPath",
                    "keyPaths",
                    "keyData",
                    "signedIdentity",
                ],
                source,
                what,
            )?;
            let kt = str_of(v, "keyType", source, what)?;
            if kt != "GPGKeys" {
                return Err(config_err(
                    source,
                    format!("{what}: keyType {kt:?} is not supported (GPGKeys is)"),
                ));
            }
            let given = ["keyPath", "keyPaths", "keyData"]
                .iter()
                .filter(|k| v.get(**k).is_some())
                .count();
            if given != 1 {
                return Err(config_err(
                    source,
                    format!("{what}: exactly one of keyPath, keyPaths and keyData is needed"),
                ));
            }
            let resolve = |p: &str| -> PathBuf {
                let p = PathBuf::from(p);
                match base {
                    Some(b) if p.is_relative() => b.join(p),
                    _ => p,
                }
            };
            let (keys, desc) = if let Some(p) = v.get("keyPath") {
                let p = p.as_str().ok_or_else(|| {
                    config_err(source, format!("{what}: keyPath must be a string"))
                })?;
                (
                    Keyring::load(&resolve(p)).map_err(|e| e.context(source))?,
                    p.to_string(),
                )
            } else if let Some(ps) = v.get("keyPaths") {
                let ps = ps.as_array().filter(|a| !a.is_empty()).ok_or_else(|| {
                    config_err(source, format!("{what}: keyPaths must be a non-empty list"))
                })?;
                let mut ring = Keyring::default();
                let mut names = Vec::new();
                for p in ps {
                    let p = p.as_str().ok_or_else(|| {
                        config_err(source, format!("{what}: keyPaths holds a non-string"))
                    })?;
                    ring.extend(Keyring::load(&resolve(p)).map_err(|e| e.context(source))?);
                    names.push(p.to_string());
                }
                (ring, names.join(","))
            } else {
                let d = str_of(v, "keyData", source, what)?;
                let raw = base64::engine::general_purpose::STANDARD
                    .decode(d.trim())
                    .map_err(|e| {
                        config_err(source, format!("{what}: keyData is not base64: {e}"))
                    })?;
                (
                    Keyring::parse(&raw, &format!("{source}: {what} keyData"))?,
                    "keyData".to_string(),
                )
            };
            let identity = match v.get("signedIdentity") {
                None => IdentityRule::MatchRepoDigestOrExact,
                Some(i) => parse_identity(i, source, &format!("{what} signedIdentity"))?,
            };
            Ok(Requirement::SignedBy {
                keys,
                source: desc,
                identity,
            })
        }
        other => Ok(Requirement::Unsupported(other.to_string())),
    }
}

fn parse_identity(v: &Value, source: &str, what: &str) -> Result<IdentityRule> {
    let ty = str_of(v, "type", source, what)?;
    let rule = match ty {
        "matchExact" => {
            only_keys(v, &["type"], source, what)?;
            IdentityRule::MatchExact
        }
        "matchRepoDigestOrExact" => {
            only_keys(v, &["type"], source, what)?;
            IdentityRule::MatchRepoDigestOrExact
        }
        "matchRepository" => {
            only_keys(v, &["type"], source, what)?;
            IdentityRule::MatchRepository
        }
        "exactReference" => {
            only_keys(v, &["type", "dockerReference"], source, what)?;
            let r = str_of(v, "dockerReference", source, what)?;
            let id = Identity::parse(r)
                .map_err(|e| config_err(source, format!("{what}: dockerReference: {e}")))?;
            if id.tag.is_none() && id.digest.is_none() {
                return Err(config_err(
                    source,
                    format!("{what}: dockerReference {r:?} needs a tag or digest"),
                ));
            }
            IdentityRule::ExactReference(id)
        }
        "exactRepository" => {
            only_keys(v, &["type", "dockerRepository"], source, what)?;
            let r = str_of(v, "dockerRepository", source, what)?;
            let id = Identity::parse(r)
                .map_err(|e| config_err(source, format!("{what}: dockerRepository: {e}")))?;
            if id.tag.is_some() || id.digest.is_some() {
                return Err(config_err(
                    source,
                    format!("{what}: dockerRepository {r:?} must not carry a tag or digest"),
                ));
            }
            IdentityRule::ExactRepository(id.repository)
        }
        "remapIdentity" => {
            only_keys(v, &["type", "prefix", "signedPrefix"], source, what)?;
            let prefix = str_of(v, "prefix", source, what)?;
            let signed_prefix = str_of(v, "signedPrefix", source, what)?;
            for p in [prefix, signed_prefix] {
                if !valid_prefix(p) {
                    return Err(config_err(
                        source,
                        format!("{what}: {p:?} is not a host, namespace or repository prefix"),
                    ));
                }
            }
            IdentityRule::RemapIdentity {
                prefix: prefix.to_string(),
                signed_prefix: signed_prefix.to_string(),
            }
        }
        other => {
            return Err(config_err(
                source,
                format!("{what}: unknown signedIdentity type {other:?}"),
            ));
        }
    };
    Ok(rule)
}

#[cfg(test)]
mod tests {
    use super::super::openpgp::SigningKey;
    use super::*;

    fn id(s: &str) -> Identity {
        Identity::parse(s).unwrap()
    }

    #[test]
    fn expansion_and_scopes() {
        assert_eq!(id("busybox:1").to_string(), "docker.io/library/busybox:1");
        assert_eq!(
            docker_scopes(&id("reg.site.example:5000/a/b:1")),
            vec![
                "reg.site.example:5000/a/b:1",
                "reg.site.example:5000/a/b",
                "reg.site.example:5000/a",
                "reg.site.example:5000",
                ""
            ]
        );
        assert!(docker_scopes(&id("reg.site.example/a:1")).contains(&"*.site.example".to_string()));
    }

    #[test]
    fn identity_rules() {
        let img = id("r.example/a/b:1");
        let by_digest = id(&format!("r.example/a/b@{}", Digest::sha256(b"x")));
        use IdentityRule::*;
        assert!(identity_matches(&MatchExact, &img, &id("r.example/a/b:1")));
        assert!(!identity_matches(&MatchExact, &img, &id("r.example/a/b:2")));
        assert!(!identity_matches(
            &MatchExact,
            &by_digest,
            &id("r.example/a/b:1")
        ));
        assert!(identity_matches(
            &MatchRepoDigestOrExact,
            &by_digest,
            &id("r.example/a/b:1")
        ));
        assert!(!identity_matches(
            &MatchRepoDigestOrExact,
            &img,
            &id("r.example/a/b:2")
        ));
        assert!(identity_matches(
            &MatchRepository,
            &img,
            &id("r.example/a/b:2")
        ));
        assert!(!identity_matches(
            &MatchRepository,
            &img,
            &id("r.example/a/c:1")
        ));
        assert!(identity_matches(
            &ExactReference(id("up.example/x:1")),
            &img,
            &id("up.example/x:1")
        ));
        assert!(identity_matches(
            &ExactRepository("up.example/x".into()),
            &img,
            &id("up.example/x:7")
        ));
        let remap = RemapIdentity {
            prefix: "r.example/a".into(),
            signed_prefix: "up.example/z".into(),
        };
        assert!(identity_matches(&remap, &img, &id("up.example/z/b:1")));
        assert!(!identity_matches(&remap, &img, &id("r.example/a/b:1")));
        // A prefix matches at a path boundary only.
        let img2 = id("r.example/ab/b:1");
        assert!(identity_matches(&remap, &img2, &id("r.example/ab/b:1")));
    }

    #[test]
    fn parse_errors_name_the_file_and_place() {
        let bad = [
            (r#"{}"#, "default"),
            (r#"{"default":[]}"#, "may not be empty"),
            (
                r#"{"default":[{"type":"insecureAcceptAnything","x":1}]}"#,
                "unknown key",
            ),
            (
                r#"{"default":[{"type":"signedBy","keyType":"GPGKeys"}]}"#,
                "exactly one",
            ),
            (
                r#"{"default":[{"type":"signedBy","keyType":"X509","keyData":""}]}"#,
                "keyType",
            ),
            (
                r#"{"default":[{"type":"reject"}],"transports":{"docker":{"ex*ample.com":[{"type":"reject"}]}}}"#,
                "wildcard",
            ),
            (
                r#"{"default":[{"type":"reject"}],"transports":{"docker":{"library/busybox:1":[{"type":"reject"}]}}}"#,
                "ex",
            ),
        ];
        for (doc, want) in bad {
            let e = Policy::parse(doc.as_bytes(), "/etc/containers/policy.json", None).unwrap_err();
            assert!(e.to_string().contains("/etc/containers/policy.json"), "{e}");
            assert!(e.to_string().contains(want), "{doc}: {e}");
        }
    }

    fn policy_for(key: &SigningKey, scope: &str) -> Policy {
        let data = base64::engine::general_purpose::STANDARD.encode(key.public_armored().unwrap());
        let doc = serde_json::json!({
            "default": [{"type": "reject"}],
            "transports": {"docker": {
                scope: [{"type": "signedBy", "keyType": "GPGKeys", "keyData": data}],
                "open.example": [{"type": "insecureAcceptAnything"}],
            }}
        });
        Policy::parse(&serde_json::to_vec(&doc).unwrap(), "test policy", None).unwrap()
    }

    #[test]
    fn evaluate_signed_unsigned_moved_and_foreign() {
        let site = SigningKey::generate("Site", "s@example.org").unwrap();
        let other = SigningKey::generate("Other", "o@example.org").unwrap();
        let p = policy_for(&site, "reg.example/grid");
        let img = id("reg.example/grid/worker:1");
        let d = Digest::sha256(b"manifest");
        let sign = |k: &SigningKey, d: &Digest, who: &str| {
            k.sign(&Payload::new(d.clone(), who.into(), 1).to_json())
                .unwrap()
        };
        let good = sign(&site, &d, "reg.example/grid/worker:1");
        let dec = p
            .evaluate(&img, &d, std::slice::from_ref(&good), 2)
            .unwrap();
        assert_eq!(dec.scope, "reg.example/grid");
        assert_eq!(dec.signatures[0].key, site.fingerprint());
        // Unsigned.
        let e = p.evaluate(&img, &d, &[], 2).unwrap_err();
        assert!(e.to_string().contains("no signature"), "{e}");
        // The tag moved to another manifest.
        let moved = Digest::sha256(b"other manifest");
        let e = p
            .evaluate(&img, &moved, std::slice::from_ref(&good), 2)
            .unwrap_err();
        assert!(e.to_string().contains("tag may have moved"), "{e}");
        // Signed by a key the policy does not trust, and one good among bad.
        let foreign = sign(&other, &d, "reg.example/grid/worker:1");
        let e = p
            .evaluate(&img, &d, std::slice::from_ref(&foreign), 2)
            .unwrap_err();
        assert!(e.to_string().contains("does not verify"), "{e}");
        p.evaluate(&img, &d, &[foreign, good.clone()], 2).unwrap();
        // Wrong identity.
        let elsewhere = sign(&site, &d, "reg.example/grid/other:1");
        assert!(p.evaluate(&img, &d, &[elsewhere], 2).is_err());
        // Outside the scope: default rejects, the open host accepts.
        assert!(p.evaluate(&id("reg.example/x:1"), &d, &[good], 2).is_err());
        assert!(p.accepts_anything(&id("open.example/any:1")));
    }
}

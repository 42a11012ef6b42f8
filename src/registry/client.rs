//! A client for the distribution API (v2) of one registry host, on ureq.
//!
//! Transport: TLS with the system CA bundle plus `certs.d/HOST:PORT/*.crt`, and a
//! client certificate from `client.cert`/`client.key` there, as docker does. An
//! insecure registry (`--insecure-registry`) gets unverified TLS, or plain HTTP if
//! it does not speak TLS — for that host only.
//!
//! Auth: requests go out bare (or with what worked before); a 401 with a `Basic`
//! challenge is answered with the credentials from config.json, a `Bearer`
//! challenge by fetching a token for the request's scope from the realm (with the
//! credentials, if any). Errors say what to do: which certs.d file to create, or to
//! run `berth login HOST`.

use super::settings::Settings;
use crate::auth::challenge::{self, Challenge};
use crate::digest::Digest;
use crate::error::{Error, Kind, Result};
use crate::oci::MediaType;
use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;
use ureq::http;

/// Accept header for manifests: every type berth understands.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json";

/// Largest manifest read from a registry.
const MAX_MANIFEST: u64 = 8 << 20;

/// A manifest as fetched (bytes verified against the digest asked for, if any).
#[derive(Debug, Clone)]
pub struct FetchedManifest {
    pub bytes: Vec<u8>,
    pub media_type: MediaType,
    pub digest: Digest,
}

/// Body of a request.
pub enum Body<'a> {
    None,
    Bytes(&'a [u8]),
    /// A stream of this many bytes (cannot be replayed after a 401).
    Stream(&'a mut dyn Read, u64),
}

/// One search hit.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct SearchHit {
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub star_count: u64,
    #[serde(default)]
    pub is_official: bool,
    #[serde(default)]
    pub is_automated: bool,
}

/// A session on one registry host.
pub struct Registry {
    /// The host as references name it (`docker.io`, `pps04.lcg.triumf.ca:5000`).
    pub host: String,
    base: String,
    agent: ureq::Agent,
    creds: Option<(String, String)>,
    tokens: Mutex<HashMap<String, String>>,
    basic: Mutex<bool>,
    certs_dir: PathBuf,
    insecure: bool,
}

/// Certificates and client identity from `certs.d/HOST` (`*.crt` CAs, a
/// `*.cert` + `*.key` pair), as docker reads them.
fn certs_d(
    dir: &std::path::Path,
) -> Result<(
    Vec<ureq::tls::Certificate<'static>>,
    Option<ureq::tls::ClientCert>,
)> {
    let mut cas = Vec::new();
    let mut client = None;
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Ok((cas, client));
    };
    let mut names: Vec<PathBuf> = rd.flatten().map(|e| e.path()).collect();
    names.sort();
    for p in &names {
        let ext = p.extension().and_then(|e| e.to_str()).unwrap_or("");
        if ext == "crt" {
            let pem = std::fs::read(p).map_err(|e| Error::from(e).context(p.display()))?;
            for item in ureq::tls::parse_pem(&pem) {
                if let Ok(ureq::tls::PemItem::Certificate(c)) = item {
                    cas.push(c);
                }
            }
        } else if ext == "cert" {
            let key = p.with_extension("key");
            let cert_pem = std::fs::read(p).map_err(|e| Error::from(e).context(p.display()))?;
            let key_pem = std::fs::read(&key).map_err(|_| {
                Error::config(format!(
                    "{}: missing {} for this client certificate",
                    p.display(),
                    key.display()
                ))
            })?;
            let chain: Vec<_> = ureq::tls::parse_pem(&cert_pem)
                .filter_map(|i| match i {
                    Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
                    _ => None,
                })
                .collect();
            let key = ureq::tls::PrivateKey::from_pem(&key_pem)
                .map_err(|e| Error::config(format!("{}: {e}", key.display())))?;
            client = Some(ureq::tls::ClientCert::new_with_certs(&chain, key));
        }
    }
    Ok((cas, client))
}

/// TLS for `host` (HOST[:PORT]) as docker sets it up: the system CA bundle plus
/// `certs.d/HOST:PORT/*.crt`, a client certificate from there, and no
/// verification only for an insecure registry. Never web-PKI roots compiled in:
/// an air-gapped site trusts what its files say.
pub fn tls_for(host: &str, settings: &Settings) -> Result<ureq::tls::TlsConfig> {
    crate::tls::provider();
    let (mut roots, client) = certs_d(&settings.certs_dir(host))?;
    roots.extend(crate::tls::ureq_system_roots());
    Ok(ureq::tls::TlsConfig::builder()
        .provider(ureq::tls::TlsProvider::Rustls)
        .root_certs(ureq::tls::RootCerts::new_with_certs(&roots))
        .client_cert(client)
        .disable_verification(settings.is_insecure(host))
        .build())
}

/// An agent to download `url` (import's URL source): the same trust as a
/// registry on that host, redirects followed.
pub fn download_agent(url: &str, settings: &Settings) -> Result<ureq::Agent> {
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = host.rsplit_once('@').map(|(_, h)| h).unwrap_or(host);
    Ok(agent(tls_for(host, settings)?, 10))
}

fn agent(tls: ureq::tls::TlsConfig, redirects: u32) -> ureq::Agent {
    ureq::Agent::new_with_config(
        ureq::config::Config::builder()
            .tls_config(tls)
            .http_status_as_error(false)
            .max_redirects(redirects)
            .timeout_connect(Some(Duration::from_secs(15)))
            .timeout_recv_response(Some(Duration::from_secs(300)))
            .user_agent(format!("berth/{}", crate::VERSION))
            .build(),
    )
}

fn join_url(base: &str, location: &str) -> String {
    if location.starts_with("http://") || location.starts_with("https://") {
        location.to_string()
    } else if location.starts_with('/') {
        format!("{base}{location}")
    } else {
        format!("{base}/{location}")
    }
}

/// A Location header resolved against the URL it answered.
fn resolve_location(current: &str, loc: &str) -> String {
    if loc.starts_with("http://") || loc.starts_with("https://") {
        return loc.to_string();
    }
    let scheme_end = current.find("://").map(|i| i + 3).unwrap_or(0);
    let host_end = current[scheme_end..]
        .find('/')
        .map(|i| scheme_end + i)
        .unwrap_or(current.len());
    if loc.starts_with('/') {
        return format!("{}{loc}", &current[..host_end]);
    }
    let path = current[..current.find('?').unwrap_or(current.len())].to_string();
    let dir_end = path
        .rfind('/')
        .filter(|&i| i >= host_end)
        .map(|i| i + 1)
        .unwrap_or(path.len());
    format!("{}{loc}", &path[..dir_end])
}

fn with_query(url: &str, k: &str, v: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{k}={}", crate::http::percent_encode(v))
}

pub(super) fn header(r: &http::Response<ureq::Body>, k: &str) -> Option<String> {
    r.headers()
        .get(k)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// Read a JSON response body of at most `limit` bytes.
fn read_json(r: &mut http::Response<ureq::Body>, limit: u64) -> Result<serde_json::Value> {
    let b = r
        .body_mut()
        .with_config()
        .limit(limit)
        .read_to_vec()
        .map_err(|e| Error::new(Kind::Network, e.to_string()))?;
    serde_json::from_slice(&b).map_err(|e| {
        Error::new(
            Kind::Network,
            format!("invalid JSON from the registry: {e}"),
        )
    })
}

/// Read a response's error body into a short message.
fn error_text(r: &mut http::Response<ureq::Body>) -> String {
    let status = r.status().as_u16();
    let body = r
        .body_mut()
        .with_config()
        .limit(64 * 1024)
        .read_to_vec()
        .unwrap_or_default();
    let detail = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| {
            let e = v.get("errors")?.get(0)?.clone();
            Some(format!(
                "{} {}",
                e.get("code")?.as_str()?,
                e.get("message").and_then(|m| m.as_str()).unwrap_or("")
            ))
        })
        .unwrap_or_else(|| String::from_utf8_lossy(&body).chars().take(200).collect());
    format!("HTTP {status}: {}", detail.trim())
}

impl Registry {
    /// Open a session with `host` (e.g. from a reference), choosing TLS settings
    /// from `settings`.
    pub fn new(host: &str, settings: &Settings) -> Result<Registry> {
        settings.refuse_blocked(host)?;
        crate::tls::provider();
        let api_host = if host == crate::reference::DOCKER_HUB {
            "registry-1.docker.io"
        } else {
            host
        };
        let certs_dir = settings.certs_dir(host);
        let insecure = settings.is_insecure(host);
        let agent = agent(tls_for(host, settings)?, 0);
        let creds = match &settings.credentials {
            Some(c) => Some(c.clone()),
            None => crate::auth::dockercfg::credentials(host)?,
        };
        let mut r = Registry {
            host: host.to_string(),
            base: format!("https://{api_host}"),
            agent,
            creds,
            tokens: Mutex::new(HashMap::new()),
            basic: Mutex::new(false),
            certs_dir,
            insecure,
        };
        if insecure {
            // Plain HTTP when the registry does not speak TLS (the site's first
            // setup) — only then: a host that is down stays an error about the host.
            if let Err(e) = r.agent.get(format!("{}/v2/", r.base)).call() {
                let t = e.to_string();
                let tls_failed = matches!(e, ureq::Error::Rustls(_) | ureq::Error::Tls(_))
                    || [
                        "InvalidContentType",
                        "corrupt message",
                        "handshake",
                        "HandshakeFailure",
                    ]
                    .iter()
                    .any(|k| t.contains(k));
                if tls_failed {
                    r.base = format!("http://{api_host}");
                    log::debug!("{host}: no TLS ({t}), using plain HTTP (insecure registry)");
                }
            }
        }
        Ok(r)
    }

    /// Use these credentials instead of config.json's (login).
    pub fn with_credentials(mut self, user: &str, pass: &str) -> Registry {
        self.creds = Some((user.to_string(), pass.to_string()));
        self
    }

    pub fn has_credentials(&self) -> bool {
        self.creds.is_some()
    }

    fn transport_error(&self, e: ureq::Error) -> Error {
        let text = e.to_string();
        let unknown_ca = match &e {
            ureq::Error::Rustls(re) => {
                crate::tls::is_unknown_ca(re) || text.contains("UnknownIssuer")
            }
            _ => text.contains("UnknownIssuer") || text.contains("unknown issuer"),
        };
        if unknown_ca {
            return Error::new(
                Kind::Tls,
                format!(
                    "{}: TLS certificate signed by an unknown authority. If you have the registry's CA certificate, place it at {}/ca.crt; \
                     if the registry supports only HTTP or HTTPS with an unknown CA, use --insecure-registry {}",
                    self.host,
                    self.certs_dir.display(),
                    self.host
                ),
            );
        }
        if text.contains("InvalidContentType") || text.contains("corrupt message") {
            return Error::new(
                Kind::Tls,
                format!(
                    "{}: the registry does not speak TLS; if it serves plain HTTP, use --insecure-registry {}",
                    self.host, self.host
                ),
            );
        }
        if matches!(e, ureq::Error::Rustls(_) | ureq::Error::Tls(_)) {
            return Error::new(Kind::Tls, format!("{}: TLS failed: {text}", self.host));
        }
        if matches!(e, ureq::Error::HostNotFound) {
            return Error::new(Kind::Network, format!("{}: host not found", self.host));
        }
        Error::new(Kind::Network, format!("{}: {text}", self.host))
    }

    fn auth_header(&self, scope: &str) -> Option<String> {
        if let Some(t) = self.tokens.lock().unwrap().get(scope) {
            return Some(format!("Bearer {t}"));
        }
        if *self.basic.lock().unwrap()
            && let Some((u, p)) = &self.creds
        {
            use base64::Engine;
            return Some(format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
            ));
        }
        None
    }

    fn fetch_token(&self, realm: &str, service: Option<&str>, scope: &str) -> Result<String> {
        let mut url = realm.to_string();
        if let Some(s) = service {
            url = with_query(&url, "service", s);
        }
        // One `scope` parameter per resource, as the token spec's GET form wants.
        for sc in scope.split_whitespace() {
            url = with_query(&url, "scope", sc);
        }
        let mut req = self.agent.get(&url);
        // Credentials go in the clear only to a registry the site marked insecure.
        let may_send = realm.starts_with("https://") || self.insecure;
        if !may_send && self.creds.is_some() {
            log::warn!(
                "{}: token service {realm} is not HTTPS; not sending credentials there",
                self.host
            );
        }
        if let (true, Some((u, p))) = (may_send, &self.creds) {
            use base64::Engine;
            req = req.header(
                "Authorization",
                format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
                ),
            );
        }
        let mut resp = req.call().map_err(|e| self.transport_error(e))?;
        if resp.status().as_u16() == 401 {
            return Err(self.denied());
        }
        if !resp.status().is_success() {
            return Err(Error::new(
                Kind::Auth,
                format!(
                    "{}: token service {realm}: {}",
                    self.host,
                    error_text(&mut resp)
                ),
            ));
        }
        let v = read_json(&mut resp, 1 << 20).map_err(|e| {
            Error::new(
                Kind::Auth,
                format!("{}: token service answered badly: {e}", self.host),
            )
        })?;
        v.get("token")
            .or_else(|| v.get("access_token"))
            .and_then(|t| t.as_str())
            .map(str::to_string)
            .ok_or_else(|| {
                Error::new(
                    Kind::Auth,
                    format!("{}: token service sent no token", self.host),
                )
            })
    }

    fn denied(&self) -> Error {
        if self.creds.is_some() {
            Error::new(
                Kind::Auth,
                format!(
                    "{}: login failed: the registry refused the user name or password (run `berth login {}` again)",
                    self.host, self.host
                ),
            )
        } else {
            Error::new(
                Kind::Auth,
                format!(
                    "{}: authentication required: run `berth login {}` first",
                    self.host, self.host
                ),
            )
        }
    }

    /// Send a request, answering one auth challenge. `scope` is the token scope
    /// (`repository:NAME:pull`). A 401 that survives is an auth error.
    pub fn send(
        &self,
        method: &str,
        url: &str,
        scope: &str,
        headers: &[(&str, String)],
        mut body: Body<'_>,
        follow: bool,
    ) -> Result<http::Response<ureq::Body>> {
        for attempt in 0..2 {
            let mut b = http::Request::builder().method(method).uri(url);
            for (k, v) in headers {
                b = b.header(*k, v.as_str());
            }
            if let Some(a) = self.auth_header(scope) {
                b = b.header("Authorization", a);
            }
            let res = match &mut body {
                Body::None => {
                    let req = b.body(()).map_err(|e| Error::internal(e.to_string()))?;
                    self.agent.run(req)
                }
                Body::Bytes(d) => {
                    let req = b
                        .header("Content-Length", d.len().to_string())
                        .body(d.to_vec())
                        .map_err(|e| Error::internal(e.to_string()))?;
                    self.agent.run(req)
                }
                Body::Stream(r, len) => {
                    let req = b
                        .header("Content-Length", len.to_string())
                        .body(ureq::SendBody::from_reader(*r))
                        .map_err(|e| Error::internal(e.to_string()))?;
                    self.agent.run(req)
                }
            };
            let resp = res.map_err(|e| self.transport_error(e))?;
            let status = resp.status().as_u16();
            if follow && (300..400).contains(&status) && header(&resp, "Location").is_some() {
                return self.follow_redirects(method, url, resp);
            }
            if status != 401 || attempt == 1 {
                if status == 401 {
                    return Err(self.denied());
                }
                return Ok(resp);
            }
            if matches!(body, Body::Stream(..)) && self.auth_header(scope).is_some() {
                return Err(self.denied());
            }
            let Some(ch) = header(&resp, "WWW-Authenticate").and_then(|h| challenge::parse(&h))
            else {
                return Err(self.denied());
            };
            match ch {
                Challenge::Basic { .. } => {
                    if self.creds.is_none() {
                        return Err(self.denied());
                    }
                    *self.basic.lock().unwrap() = true;
                }
                Challenge::Bearer {
                    realm,
                    service,
                    scope: ch_scope,
                } => {
                    let want = if scope.is_empty() {
                        ch_scope.unwrap_or_default()
                    } else {
                        scope.to_string()
                    };
                    let token = self.fetch_token(&realm, service.as_deref(), &want)?;
                    self.tokens.lock().unwrap().insert(scope.to_string(), token);
                }
            }
            if matches!(body, Body::Stream(..)) {
                // A stream cannot be sent twice; the caller retries with auth in place.
                return Err(Error::new(
                    Kind::Auth,
                    format!("{}: authentication needed before upload; retry", self.host),
                ));
            }
        }
        unreachable!("the loop returns on its second pass")
    }

    /// Blob redirects (object storage, CDNs) are followed — a few hops, each
    /// relative to the last — without our Authorization header.
    fn follow_redirects(
        &self,
        method: &str,
        from: &str,
        mut resp: http::Response<ureq::Body>,
    ) -> Result<http::Response<ureq::Body>> {
        let mut at = from.to_string();
        for _ in 0..5 {
            let status = resp.status().as_u16();
            let Some(loc) = header(&resp, "Location").filter(|_| (300..400).contains(&status))
            else {
                return Ok(resp);
            };
            at = resolve_location(&at, &loc);
            let req = http::Request::builder()
                .method(method)
                .uri(&at)
                .body(())
                .map_err(|e| Error::internal(e.to_string()))?;
            resp = self.agent.run(req).map_err(|e| self.transport_error(e))?;
        }
        Err(Error::new(
            Kind::Network,
            format!("{}: too many redirects for {from}", self.host),
        ))
    }

    pub(super) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub(super) fn fail(&self, what: &str, r: &mut http::Response<ureq::Body>) -> Error {
        let status = r.status().as_u16();
        let kind = match status {
            404 => Kind::NotFound,
            401 | 403 => Kind::Auth,
            400 | 405 | 413 | 416 => Kind::Invalid,
            _ => Kind::Network,
        };
        Error::new(kind, format!("{}: {what}: {}", self.host, error_text(r)))
    }

    /// `GET /v2/`: the registry speaks the API and our credentials are accepted.
    pub fn ping(&self) -> Result<()> {
        let mut r = self.send("GET", &self.url("/v2/"), "", &[], Body::None, false)?;
        if r.status().is_success() {
            Ok(())
        } else {
            Err(self.fail("GET /v2/", &mut r))
        }
    }

    /// Fetch a manifest by tag or digest; None if the registry does not have it.
    pub fn manifest(&self, repo: &str, reference: &str) -> Result<Option<FetchedManifest>> {
        let scope = format!("repository:{repo}:pull");
        let mut r = self.send(
            "GET",
            &self.url(&format!("/v2/{repo}/manifests/{reference}")),
            &scope,
            &[("Accept", MANIFEST_ACCEPT.into())],
            Body::None,
            false,
        )?;
        if r.status().as_u16() == 404 {
            return Ok(None);
        }
        if !r.status().is_success() {
            return Err(self.fail(&format!("manifest {repo}:{reference}"), &mut r));
        }
        let ct = header(&r, "Content-Type");
        let claimed = header(&r, "Docker-Content-Digest");
        let bytes = r
            .body_mut()
            .with_config()
            .limit(MAX_MANIFEST)
            .read_to_vec()
            .map_err(|e| {
                Error::new(
                    Kind::Network,
                    format!("{}: reading manifest {repo}:{reference}: {e}", self.host),
                )
            })?;
        let digest = Digest::sha256(&bytes);
        if let Ok(want) = reference.parse::<Digest>()
            && Digest::of(want.algorithm(), &bytes) != want
        {
            return Err(Error::new(
                Kind::Digest,
                format!(
                    "{}: manifest {repo}@{want} has another digest: refusing it",
                    self.host
                ),
            ));
        }
        if let Some(c) = claimed.and_then(|c| c.parse::<Digest>().ok())
            && Digest::of(c.algorithm(), &bytes) != c
        {
            return Err(Error::new(
                Kind::Digest,
                format!(
                    "{}: manifest {repo}:{reference} does not match its Docker-Content-Digest {c}",
                    self.host
                ),
            ));
        }
        let parsed = crate::oci::Parsed::parse(&bytes, ct.as_deref())?;
        Ok(Some(FetchedManifest {
            bytes,
            media_type: parsed.media_type,
            digest,
        }))
    }

    /// Size of a blob in `repo`, or None.
    pub fn blob_size(&self, repo: &str, d: &Digest, push: bool) -> Result<Option<u64>> {
        let scope = format!(
            "repository:{repo}:{}",
            if push { "pull,push" } else { "pull" }
        );
        let mut r = self.send(
            "HEAD",
            &self.url(&format!("/v2/{repo}/blobs/{d}")),
            &scope,
            &[],
            Body::None,
            true,
        )?;
        match r.status().as_u16() {
            200 => Ok(header(&r, "Content-Length")
                .and_then(|l| l.parse().ok())
                .or(Some(0))),
            404 => Ok(None),
            _ => Err(self.fail(&format!("HEAD blob {d}"), &mut r)),
        }
    }

    /// A blob's bytes as a stream (not yet verified: wrap it in a VerifyingReader).
    pub fn blob(&self, repo: &str, d: &Digest) -> Result<(ureq::Body, Option<u64>)> {
        let scope = format!("repository:{repo}:pull");
        let mut r = self.send(
            "GET",
            &self.url(&format!("/v2/{repo}/blobs/{d}")),
            &scope,
            &[],
            Body::None,
            true,
        )?;
        if !r.status().is_success() {
            return Err(self.fail(&format!("blob {d}"), &mut r));
        }
        let len = header(&r, "Content-Length").and_then(|l| l.parse().ok());
        Ok((r.into_body(), len))
    }

    /// Start an upload; with `mount`, first try to mount the blob from another
    /// repository. Returns None when the mount succeeded, else the upload URL.
    pub fn start_upload(
        &self,
        repo: &str,
        mount: Option<(&Digest, &str)>,
    ) -> Result<Option<String>> {
        let mut scope = format!("repository:{repo}:pull,push");
        let mut url = self.url(&format!("/v2/{repo}/blobs/uploads/"));
        if let Some((d, from)) = mount {
            url = with_query(&with_query(&url, "mount", &d.to_string()), "from", from);
            scope = format!("{scope} repository:{from}:pull");
        }
        let mut r = self.send("POST", &url, &scope, &[], Body::Bytes(&[]), false)?;
        match r.status().as_u16() {
            201 if mount.is_some() => Ok(None),
            202 => {
                let loc = header(&r, "Location").ok_or_else(|| {
                    Error::new(
                        Kind::Network,
                        format!("{}: upload started without a Location", self.host),
                    )
                })?;
                Ok(Some(join_url(&self.base, &loc)))
            }
            _ => Err(self.fail("start upload", &mut r)),
        }
    }

    /// Upload a whole blob in the closing PUT.
    pub fn upload_monolithic(
        &self,
        repo: &str,
        location: &str,
        d: &Digest,
        body: &mut dyn Read,
        len: u64,
    ) -> Result<()> {
        let scope = format!("repository:{repo}:pull,push");
        let url = with_query(location, "digest", &d.to_string());
        let mut r = self.send(
            "PUT",
            &url,
            &scope,
            &[("Content-Type", "application/octet-stream".into())],
            Body::Stream(body, len),
            false,
        )?;
        if r.status().as_u16() != 201 {
            return Err(self.fail(&format!("upload {d}"), &mut r));
        }
        Ok(())
    }

    /// Where a session stands: (next offset, current location).
    pub fn upload_status(&self, repo: &str, location: &str) -> Result<(u64, String)> {
        let scope = format!("repository:{repo}:pull,push");
        let mut r = self.send("GET", location, &scope, &[], Body::None, false)?;
        if r.status().as_u16() != 204 && !r.status().is_success() {
            return Err(self.fail("upload status", &mut r));
        }
        let loc = header(&r, "Location")
            .map(|l| join_url(&self.base, &l))
            .unwrap_or_else(|| location.to_string());
        // "0-0" is what registries say for an empty session (one byte is never a
        // state berth's chunks leave); "0-N" means N+1 bytes are there.
        let off = match header(&r, "Range").as_deref() {
            None | Some("0-0") => 0,
            Some(rg) => rg
                .rsplit('-')
                .next()
                .and_then(|e| e.parse::<u64>().ok())
                .map(|e| e + 1)
                .unwrap_or(0),
        };
        Ok((off, loc))
    }

    /// Upload a blob from a seekable source in `chunk`-byte PATCHes; a failed chunk
    /// is retried from the offset the registry reports. `on_progress` gets bytes sent.
    // The blob's identity (repo, location, digest, len) and the transfer's knobs
    // read better side by side than bundled into a one-use struct.
    #[allow(clippy::too_many_arguments)]
    pub fn upload_chunked<F: Read + Seek>(
        &self,
        repo: &str,
        location: &str,
        d: &Digest,
        src: &mut F,
        len: u64,
        chunk: u64,
        on_progress: &dyn Fn(u64),
    ) -> Result<()> {
        let scope = format!("repository:{repo}:pull,push");
        let mut loc = location.to_string();
        let mut off = 0u64;
        let mut failures = 0;
        while off < len {
            let n = chunk.min(len - off);
            src.seek(SeekFrom::Start(off))?;
            let mut piece = (&mut *src).take(n);
            let range = format!("{off}-{}", off + n - 1);
            let res = self.send(
                "PATCH",
                &loc,
                &scope,
                &[
                    ("Content-Type", "application/octet-stream".into()),
                    ("Content-Range", range),
                ],
                Body::Stream(&mut piece, n),
                false,
            );
            let ok = match res {
                Ok(r) if r.status().as_u16() == 202 => {
                    if let Some(l) = header(&r, "Location") {
                        loc = join_url(&self.base, &l);
                    }
                    off += n;
                    on_progress(n);
                    true
                }
                Ok(mut r) => {
                    log::warn!(
                        "{}: chunk at {off} refused: {}",
                        self.host,
                        error_text(&mut r)
                    );
                    false
                }
                Err(e) if e.kind() == Kind::Auth && failures > 0 => return Err(e),
                Err(e) => {
                    log::warn!("{}: chunk at {off} failed: {e}", self.host);
                    false
                }
            };
            if !ok {
                failures += 1;
                if failures > 5 {
                    return Err(Error::new(
                        Kind::Network,
                        format!("{}: upload of {d} keeps failing at byte {off}", self.host),
                    ));
                }
                std::thread::sleep(Duration::from_millis(200 * failures));
                // Resume where the registry says it is.
                let (at, l) = self.upload_status(repo, &loc)?;
                loc = l;
                if at > off {
                    on_progress(at - off);
                }
                off = at.min(len);
            }
        }
        let url = with_query(&loc, "digest", &d.to_string());
        let mut r = self.send("PUT", &url, &scope, &[], Body::Bytes(&[]), false)?;
        if r.status().as_u16() != 201 {
            return Err(self.fail(&format!("finish upload of {d}"), &mut r));
        }
        Ok(())
    }

    /// Put a manifest; returns the digest the registry reports (checked against ours).
    pub fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        bytes: &[u8],
        media_type: &MediaType,
    ) -> Result<Digest> {
        let scope = format!("repository:{repo}:pull,push");
        let mut r = self.send(
            "PUT",
            &self.url(&format!("/v2/{repo}/manifests/{reference}")),
            &scope,
            &[("Content-Type", media_type.to_string())],
            Body::Bytes(bytes),
            false,
        )?;
        if r.status().as_u16() != 201 {
            return Err(self.fail(&format!("manifest {repo}:{reference}"), &mut r));
        }
        let ours = Digest::sha256(bytes);
        if let Some(theirs) =
            header(&r, "Docker-Content-Digest").and_then(|d| d.parse::<Digest>().ok())
            && theirs != ours
        {
            return Err(Error::new(
                Kind::Digest,
                format!(
                    "{}: registry stored manifest as {theirs}, we sent {ours}",
                    self.host
                ),
            ));
        }
        Ok(ours)
    }

    /// All tags of a repository (following `Link` pages).
    pub fn tags(&self, repo: &str) -> Result<Vec<String>> {
        let scope = format!("repository:{repo}:pull");
        let mut url = self.url(&format!("/v2/{repo}/tags/list"));
        let mut out = Vec::new();
        loop {
            let mut r = self.send("GET", &url, &scope, &[], Body::None, false)?;
            if !r.status().is_success() {
                return Err(self.fail(&format!("tags of {repo}"), &mut r));
            }
            let link = header(&r, "Link");
            let v = read_json(&mut r, 16 << 20)?;
            out.extend(
                v["tags"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|t| t.as_str().map(str::to_string)),
            );
            match link.and_then(|l| {
                l.split('<')
                    .nth(1)
                    .and_then(|x| x.split('>').next())
                    .map(str::to_string)
            }) {
                Some(next) => url = join_url(&self.base, &next),
                None => return Ok(out),
            }
        }
    }

    /// Docker's v1 search on this registry.
    pub fn search(&self, term: &str, limit: usize) -> Result<Vec<SearchHit>> {
        let url = with_query(
            &with_query(&self.url("/v1/search"), "q", term),
            "n",
            &limit.to_string(),
        );
        let mut r = self.send("GET", &url, "", &[], Body::None, false)?;
        if !r.status().is_success() {
            return Err(self.fail("search", &mut r));
        }
        let v = read_json(&mut r, 16 << 20)?;
        let hits: Vec<SearchHit> =
            serde_json::from_value(v.get("results").cloned().unwrap_or_default())
                .unwrap_or_default();
        Ok(hits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_resolve_against_the_url_they_answered() {
        let at = "https://r.example:5000/v2/a/blobs/sha256:ab?x=1";
        assert_eq!(
            resolve_location(at, "https://cdn.example/o/1"),
            "https://cdn.example/o/1"
        );
        assert_eq!(resolve_location(at, "/v2/b"), "https://r.example:5000/v2/b");
        assert_eq!(
            resolve_location(at, "data?sig=2"),
            "https://r.example:5000/v2/a/blobs/data?sig=2"
        );
        assert_eq!(
            with_query("https://a/token?service=x", "scope", "repository:a/b:pull"),
            "https://a/token?service=x&scope=repository%3Aa%2Fb%3Apull"
        );
    }
}

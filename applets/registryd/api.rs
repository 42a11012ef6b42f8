//! The registry's HTTP API: routing, authentication and the handlers of every
//! endpoint of the OCI distribution spec v1.1 (end-1 … end-13), Docker's registry
//! API v2 headers, and Docker's v1 search.

use super::config::Config;
use berth::auth::htpasswd::{Check, FAIL_DELAY, Htpasswd, Throttle};
use berth::digest::Digest;
use berth::error::{Error, Kind};
use berth::http::server::{Handler, Request, Response};
use berth::http::{Range, parse_range, percent_decode, percent_encode};
use berth::oci::{Index, MediaType};
use berth::reference::validate_name;
use berth::store::registry::{ManifestRef, RegistryStore, page};
use serde_json::json;
use std::sync::Arc;

pub struct Registry {
    store: Arc<RegistryStore>,
    cfg: Config,
    auth: Option<Htpasswd>,
    throttle: Throttle,
    totals: super::page::TotalsCache,
}

/// The endpoint a path names.
#[derive(Debug, PartialEq)]
enum Route {
    Base,
    Catalog,
    Tags(String),
    Manifest(String, String),
    Blob(String, String),
    UploadStart(String),
    Upload(String, String),
    Referrers(String, String),
    Signatures(String, String),
    Lookaside(String),
    Home,
    RepoPage(String),
    Ping,
    Search,
    NotFound,
}

fn tail_split<'a>(rest: &'a str, sep: &str) -> Option<(&'a str, &'a str)> {
    let (a, b) = rest.rsplit_once(sep)?;
    (!b.contains('/')).then_some((a, b))
}

fn route(path: &str) -> Route {
    match path {
        "/v2" | "/v2/" => return Route::Base,
        "/v2/_catalog" => return Route::Catalog,
        "/v1/_ping" => return Route::Ping,
        "/v1/search" => return Route::Search,
        _ => {}
    }
    if let Some(rest) = path.strip_prefix("/extensions/v2/") {
        return match tail_split(rest, "/signatures/") {
            Some((n, d)) => Route::Signatures(n.into(), d.into()),
            None => Route::NotFound,
        };
    }
    if let Some(rest) = path.strip_prefix("/sigstore/") {
        return Route::Lookaside(rest.into());
    }
    if path == "/" || path == "/ui" || path == "/ui/" {
        return Route::Home;
    }
    if let Some(name) = path.strip_prefix("/ui/") {
        return Route::RepoPage(name.trim_end_matches('/').into());
    }
    let Some(rest) = path.strip_prefix("/v2/") else {
        return Route::NotFound;
    };
    if let Some(name) = rest.strip_suffix("/tags/list") {
        return Route::Tags(name.into());
    }
    if let Some(name) = rest
        .strip_suffix("/blobs/uploads/")
        .or_else(|| rest.strip_suffix("/blobs/uploads"))
    {
        return Route::UploadStart(name.into());
    }
    if let Some((n, id)) = tail_split(rest, "/blobs/uploads/") {
        return Route::Upload(n.into(), id.into());
    }
    if let Some((n, d)) = tail_split(rest, "/blobs/") {
        return Route::Blob(n.into(), d.into());
    }
    if let Some((n, r)) = tail_split(rest, "/manifests/") {
        return Route::Manifest(n.into(), r.into());
    }
    if let Some((n, d)) = tail_split(rest, "/referrers/") {
        return Route::Referrers(n.into(), d.into());
    }
    Route::NotFound
}

/// A spec error response: `{"errors":[{"code","message","detail"}]}`.
pub(super) fn error(
    status: u16,
    code: &str,
    message: impl Into<String>,
    detail: serde_json::Value,
) -> Response {
    Response::new(status)
        .json(&json!({"errors": [{"code": code, "message": message.into(), "detail": detail}]}))
}

pub(super) fn internal(e: &Error) -> Response {
    log::error!("{e}");
    error(500, "UNKNOWN", "internal server error", json!({}))
}

fn range_header(offset: u64) -> String {
    // Distribution (and every docker client) reports an empty session as 0-0.
    format!("0-{}", offset.saturating_sub(1))
}

impl Registry {
    pub fn new(store: Arc<RegistryStore>, cfg: Config, auth: Option<Htpasswd>) -> Registry {
        Registry {
            store,
            cfg,
            auth,
            throttle: Throttle::default(),
            totals: Default::default(),
        }
    }

    pub(super) fn store(&self) -> &RegistryStore {
        &self.store
    }

    pub(super) fn config(&self) -> &Config {
        &self.cfg
    }

    pub(super) fn totals_cache(&self) -> &super::page::TotalsCache {
        &self.totals
    }

    fn url(&self, path: &str) -> String {
        match (&self.cfg.host, self.cfg.relative_urls) {
            (Some(h), false) => format!("{h}{path}"),
            _ => path.to_string(),
        }
    }

    fn authenticate(&self, req: &mut Request) -> Option<Response> {
        let auth = self.auth.as_ref()?;
        let ip = req
            .peer
            .parse::<std::net::SocketAddr>()
            .ok()
            .map(|a| a.ip());
        if ip.is_some_and(|ip| self.throttle.blocked(ip)) && req.header("Authorization").is_some() {
            return Some(
                error(
                    429,
                    "TOOMANYREQUESTS",
                    "too many failed logins from this address; wait a minute",
                    json!({}),
                )
                .header("Retry-After", "60"),
            );
        }
        match auth.check(req.header("Authorization")) {
            Check::Ok(user) => {
                req.user = Some(user);
                None
            }
            check => {
                if check == Check::Failed {
                    log::warn!("{}: failed login for {} {}", req.peer, req.method, req.path);
                    if let Some(ip) = ip {
                        self.throttle.failed(ip);
                    }
                    std::thread::sleep(FAIL_DELAY);
                }
                let realm = self
                    .cfg
                    .htpasswd
                    .as_ref()
                    .map(|(r, _)| r.as_str())
                    .unwrap_or("basic-realm");
                Some(
                    error(401, "UNAUTHORIZED", "authentication required", json!({}))
                        .header("WWW-Authenticate", format!("Basic realm=\"{realm}\"")),
                )
            }
        }
    }

    fn writable(&self) -> Option<Response> {
        self.cfg.read_only.then(|| {
            error(
                405,
                "UNSUPPORTED",
                "the registry is in read-only mode",
                json!({}),
            )
        })
    }

    fn dispatch(&self, req: &mut Request) -> Response {
        let Some(path) = percent_decode(&req.path, false) else {
            return error(400, "NAME_INVALID", "undecodable path", json!({}));
        };
        let route = route(&path);
        if route == Route::Ping {
            return Response::new(200).json(&json!({"standalone": true}));
        }
        if route == Route::NotFound {
            return error(
                404,
                "UNSUPPORTED",
                format!("no such endpoint: {path}"),
                json!({}),
            );
        }
        if let Some(denied) = self.authenticate(req) {
            // containers/image learns of the signature extension from its
            // first, unauthenticated, GET /v2/.
            if route == Route::Base {
                return denied.header("X-Registry-Supports-Signatures", "1");
            }
            return denied;
        }
        let name = match &route {
            Route::Tags(n)
            | Route::Manifest(n, _)
            | Route::Blob(n, _)
            | Route::UploadStart(n)
            | Route::Upload(n, _)
            | Route::Referrers(n, _)
            | Route::Signatures(n, _)
            | Route::RepoPage(n) => {
                if let Err(e) = validate_name(n) {
                    return error(400, "NAME_INVALID", e.to_string(), json!({"name": n}));
                }
                n.clone()
            }
            _ => String::new(),
        };
        let m = req.method.clone();
        match (m.as_str(), route) {
            ("GET" | "HEAD", Route::Base) => Response::new(200)
                .header("X-Registry-Supports-Signatures", "1")
                .json(&json!({})),
            ("GET", Route::Catalog) => self.catalog(req),
            ("GET", Route::Search) => self.search(req),
            ("GET", Route::Tags(_)) => self.tags(req, &name),
            ("GET" | "HEAD", Route::Manifest(_, r)) => self.get_manifest(req, &name, &r),
            ("PUT", Route::Manifest(_, r)) => self
                .writable()
                .unwrap_or_else(|| self.put_manifest(req, &name, &r)),
            ("DELETE", Route::Manifest(_, r)) => self
                .writable()
                .unwrap_or_else(|| self.delete_manifest(req, &name, &r)),
            ("GET" | "HEAD", Route::Blob(_, d)) => self.get_blob(req, &name, &d),
            ("DELETE", Route::Blob(_, d)) => self
                .writable()
                .unwrap_or_else(|| self.delete_blob(&name, &d)),
            ("POST", Route::UploadStart(_)) => self
                .writable()
                .unwrap_or_else(|| self.start_upload(req, &name)),
            ("GET", Route::Upload(_, id)) => self.upload_status(&name, &id),
            ("PATCH", Route::Upload(_, id)) => self
                .writable()
                .unwrap_or_else(|| self.patch_upload(req, &name, &id)),
            ("PUT", Route::Upload(_, id)) => self
                .writable()
                .unwrap_or_else(|| self.put_upload(req, &name, &id)),
            ("DELETE", Route::Upload(_, id)) => self.cancel_upload(&name, &id),
            ("GET", Route::Referrers(_, d)) => self.referrers(req, &name, &d),
            ("GET", Route::Signatures(_, d)) => self.get_signatures(&name, &d),
            ("PUT", Route::Signatures(_, d)) => self
                .writable()
                .unwrap_or_else(|| self.put_signature(req, &name, &d)),
            ("GET" | "HEAD", Route::Lookaside(rest)) => self.lookaside(req, &rest),
            ("GET", Route::Home) => self.home(req),
            ("GET", Route::RepoPage(_)) => self.repo_page(&name),
            _ => error(
                405,
                "UNSUPPORTED",
                format!("{m} is not allowed here"),
                json!({}),
            ),
        }
    }

    // ------------------------------------------------------------------ blobs

    fn get_blob(&self, req: &Request, name: &str, d: &str) -> Response {
        let digest: Digest = match d.parse() {
            Ok(d) => d,
            Err(e) => return error(400, "DIGEST_INVALID", e.to_string(), json!({"digest": d})),
        };
        let unknown = || {
            error(
                404,
                "BLOB_UNKNOWN",
                "blob unknown to registry",
                json!({"digest": d}),
            )
        };
        let size = match self.store.blob_size(name, &digest) {
            Ok(Some(s)) => s,
            Ok(None) => return unknown(),
            Err(e) => return internal(&e),
        };
        let base = |r: Response| {
            r.header("Docker-Content-Digest", digest.to_string())
                .header("ETag", format!("\"{digest}\""))
                .header("Accept-Ranges", "bytes")
                .header("Content-Type", "application/octet-stream")
                .header("Cache-Control", "max-age=31536000")
        };
        // Object storage serves the bytes itself: a presigned URL, valid as
        // long as Distribution makes them (20 minutes). The use counts for the
        // collector all the same.
        if req.method == "GET" && self.cfg.redirect {
            match self
                .store
                .blob_redirect(&digest, std::time::Duration::from_secs(1200))
            {
                Ok(Some(url)) => {
                    if let Err(e) = self.store.touch_blob(&digest) {
                        log::debug!("refresh {digest}: {e}");
                    }
                    return Response::new(307)
                        .header("Location", url)
                        .header("Docker-Content-Digest", digest.to_string());
                }
                Ok(None) => {}
                Err(e) => log::warn!("presigning {digest}: {e}; serving it directly"),
            }
        }
        let (status, first, len) = match parse_range(req.header("Range"), size) {
            Range::Full => (200, 0, size),
            Range::Part(a, b) => (206, a, b - a + 1),
            Range::Unsatisfiable => {
                return error(
                    416,
                    "BLOB_UNKNOWN",
                    "requested range not satisfiable",
                    json!({"size": size}),
                )
                .header("Content-Range", format!("bytes */{size}"));
            }
        };
        let mut r = base(Response::new(status));
        if status == 206 {
            r = r.header(
                "Content-Range",
                format!("bytes {first}-{}/{size}", first + len - 1),
            );
        }
        // A client that saw the blob may name it in a manifest next: a use
        // (the collector spares it).
        if let Err(e) = self.store.touch_blob(&digest) {
            log::debug!("refresh {digest}: {e}");
        }
        if req.method == "HEAD" {
            return r.stream(Box::new(std::io::empty()), len);
        }
        match self.store.open_blob(name, &digest, first) {
            Ok(Some((reader, _))) => {
                use std::io::Read;
                r.stream(Box::new(reader.take(len)), len)
            }
            Ok(None) => unknown(),
            Err(e) => internal(&e),
        }
    }

    fn delete_blob(&self, name: &str, d: &str) -> Response {
        if !self.cfg.delete_enabled {
            return error(
                405,
                "UNSUPPORTED",
                "deletion is disabled (storage.delete.enabled)",
                json!({}),
            );
        }
        let digest: Digest = match d.parse() {
            Ok(d) => d,
            Err(e) => return error(400, "DIGEST_INVALID", e.to_string(), json!({"digest": d})),
        };
        match self.store.unlink_blob(name, &digest) {
            Ok(true) => Response::new(202).header("Docker-Content-Digest", digest.to_string()),
            Ok(false) => error(
                404,
                "BLOB_UNKNOWN",
                "blob unknown to registry",
                json!({"digest": d}),
            ),
            Err(e) => internal(&e),
        }
    }

    // ---------------------------------------------------------------- uploads

    fn upload_location(&self, name: &str, id: &str) -> String {
        self.url(&format!("/v2/{name}/blobs/uploads/{id}"))
    }

    fn session_response(&self, status: u16, name: &str, id: &str, offset: u64) -> Response {
        Response::new(status)
            .header("Location", self.upload_location(name, id))
            .header("Range", range_header(offset))
            .header("Docker-Upload-UUID", id)
    }

    fn created_blob(&self, name: &str, d: &Digest) -> Response {
        Response::new(201)
            .header("Location", self.url(&format!("/v2/{name}/blobs/{d}")))
            .header("Docker-Content-Digest", d.to_string())
    }

    fn start_upload(&self, req: &mut Request, name: &str) -> Response {
        if let (Some(m), from) = (
            req.query("mount").map(str::to_string),
            req.query("from").map(str::to_string),
        ) {
            match m.parse::<Digest>() {
                Ok(d) => {
                    let from_ok = from.as_deref().map(validate_name).transpose().is_ok();
                    if let (Some(from), true) = (from.as_deref(), from_ok) {
                        match self.store.mount_blob(name, from, &d) {
                            Ok(true) => return self.created_blob(name, &d),
                            Ok(false) => {}
                            Err(e) => return internal(&e),
                        }
                    }
                    // Unknown blob or no `from`: fall back to an upload session (spec: 202).
                }
                Err(e) => return error(400, "DIGEST_INVALID", e.to_string(), json!({"digest": m})),
            }
        }
        let digest = match req.query("digest").map(|s| s.parse::<Digest>()) {
            None => None,
            Some(Ok(d)) => Some(d),
            Some(Err(e)) => return error(400, "DIGEST_INVALID", e.to_string(), json!({})),
        };
        let id = match self.store.start_upload(name) {
            Ok(id) => id,
            Err(e) => return internal(&e),
        };
        let Some(digest) = digest else {
            return self.session_response(202, name, &id, 0);
        };
        // Monolithic upload in the POST itself.
        let len = req.body_length();
        if let Err(e) = self
            .store
            .append_upload(name, &id, None, &mut req.body(), len)
        {
            let _ = self.store.cancel_upload(name, &id);
            return upload_error(&e, name, &id);
        }
        match self.store.finish_upload(name, &id, &digest) {
            Ok(_) => self.created_blob(name, &digest),
            Err(e) => upload_error(&e, name, &id),
        }
    }

    fn upload_status(&self, name: &str, id: &str) -> Response {
        match self.store.upload_offset(name, id) {
            Ok(off) => self.session_response(204, name, id, off),
            Err(e) => upload_error(&e, name, id),
        }
    }

    /// Parse `Content-Range: <start>-<end>` (a `bytes ` prefix is tolerated) into
    /// the chunk's start and length; every sum is checked, so no range wraps.
    fn content_range(req: &Request) -> Result<Option<(u64, u64)>, Response> {
        let Some(h) = req.header("Content-Range") else {
            return Ok(None);
        };
        match berth::http::parse_content_range(h) {
            Some(r) => Ok(Some(r)),
            None => Err(error(
                416,
                "BLOB_UPLOAD_INVALID",
                format!("bad Content-Range {h:?}: expected START-END with START <= END"),
                json!({}),
            )),
        }
    }

    fn append(&self, req: &mut Request, name: &str, id: &str) -> Result<u64, Response> {
        let range = Self::content_range(req)?;
        let declared = match (range, req.body_length()) {
            (Some((_, len)), Some(cl)) if cl != len => {
                return Err(error(
                    400,
                    "SIZE_INVALID",
                    "Content-Length does not match Content-Range",
                    json!({}),
                ));
            }
            (Some((_, len)), _) => Some(len),
            (None, cl) => cl,
        };
        let start = range.map(|(a, _)| a);
        self.store
            .append_upload(name, id, start, &mut req.body(), declared)
            .map_err(|e| {
                if e.kind() == Kind::Conflict {
                    let off = self.store.upload_offset(name, id).unwrap_or(0);
                    error(416, "BLOB_UPLOAD_INVALID", e.to_string(), json!({}))
                        .header("Location", self.upload_location(name, id))
                        .header("Range", range_header(off))
                        .header("Docker-Upload-UUID", id)
                } else {
                    upload_error(&e, name, id)
                }
            })
    }

    fn patch_upload(&self, req: &mut Request, name: &str, id: &str) -> Response {
        match self.append(req, name, id) {
            Ok(off) => self.session_response(202, name, id, off),
            Err(r) => r,
        }
    }

    fn put_upload(&self, req: &mut Request, name: &str, id: &str) -> Response {
        let digest = match req.query("digest").map(|s| s.parse::<Digest>()) {
            Some(Ok(d)) => d,
            Some(Err(e)) => return error(400, "DIGEST_INVALID", e.to_string(), json!({})),
            None => {
                return error(
                    400,
                    "DIGEST_INVALID",
                    "the closing PUT needs ?digest=",
                    json!({}),
                );
            }
        };
        let has_body =
            req.body_length().is_none_or(|l| l > 0) || req.header("Content-Range").is_some();
        if has_body && let Err(r) = self.append(req, name, id) {
            return r;
        }
        match self.store.finish_upload(name, id, &digest) {
            Ok(_) => self.created_blob(name, &digest),
            Err(e) => upload_error(&e, name, id),
        }
    }

    fn cancel_upload(&self, name: &str, id: &str) -> Response {
        match self.store.cancel_upload(name, id) {
            Ok(()) => Response::new(204),
            Err(e) => upload_error(&e, name, id),
        }
    }

    // -------------------------------------------------------------- manifests

    fn get_manifest(&self, req: &Request, name: &str, r: &str) -> Response {
        let mref = match ManifestRef::parse(r) {
            Ok(m) => m,
            Err(e) if r.contains(':') => {
                return error(400, "DIGEST_INVALID", e.to_string(), json!({"digest": r}));
            }
            // No manifest can have an invalid tag: unknown, as the distribution
            // spec's conformance tests and clients expect (a PUT stays 400).
            Err(e) => return error(404, "MANIFEST_UNKNOWN", e.to_string(), json!({"tag": r})),
        };
        match self.store.get_manifest(name, &mref) {
            Ok(Some(m)) => {
                let len = m.bytes.len() as u64;
                let resp = Response::new(200)
                    .header("Docker-Content-Digest", m.digest.to_string())
                    .header("ETag", format!("\"{}\"", m.digest))
                    .header("Content-Type", m.media_type.to_string());
                if req.method == "HEAD" {
                    resp.stream(Box::new(std::io::empty()), len)
                } else {
                    resp.stream(Box::new(std::io::Cursor::new(m.bytes)), len)
                }
            }
            Ok(None) => match self.store.repo_exists(name) {
                Ok(false) => error(
                    404,
                    "NAME_UNKNOWN",
                    "repository name not known to registry",
                    json!({"name": name}),
                ),
                _ => error(
                    404,
                    "MANIFEST_UNKNOWN",
                    "manifest unknown",
                    json!({"reference": r}),
                ),
            },
            Err(e) => internal(&e),
        }
    }

    fn put_manifest(&self, req: &mut Request, name: &str, r: &str) -> Response {
        let mref = match ManifestRef::parse(r) {
            Ok(m) => m,
            Err(e) if r.contains(':') => {
                return error(400, "DIGEST_INVALID", e.to_string(), json!({"digest": r}));
            }
            Err(e) => return error(400, "TAG_INVALID", e.to_string(), json!({"tag": r})),
        };
        let max = berth::store::registry::MAX_MANIFEST;
        if req.body_length().is_some_and(|l| l > max as u64) {
            return error(
                413,
                "SIZE_INVALID",
                format!("manifests are limited to {max} bytes"),
                json!({}),
            );
        }
        let body = match req.read_body(max) {
            Ok(b) => b,
            Err(e) if e.kind() == Kind::Unsupported => {
                return error(413, "SIZE_INVALID", e.to_string(), json!({}));
            }
            Err(e) => return error(400, "MANIFEST_INVALID", e.to_string(), json!({})),
        };
        let ct = req.header("Content-Type").map(str::to_string);
        match self.store.put_manifest(name, &mref, &body, ct.as_deref()) {
            Ok(p) => {
                log::info!(
                    "{} pushed {name}:{r} ({})",
                    req.user.as_deref().unwrap_or("-"),
                    p.digest
                );
                let mut resp = Response::new(201)
                    .header(
                        "Location",
                        self.url(&format!("/v2/{name}/manifests/{}", p.digest)),
                    )
                    .header("Docker-Content-Digest", p.digest.to_string());
                if let Some(s) = p.subject {
                    resp = resp.header("OCI-Subject", s.to_string());
                }
                resp
            }
            Err(e) => match e.kind() {
                Kind::Digest => error(400, "DIGEST_INVALID", e.to_string(), json!({})),
                Kind::NotFound => error(
                    400,
                    "MANIFEST_BLOB_UNKNOWN",
                    format!("manifest references {} which is not in {name}", e.message()),
                    json!({"digest": e.message()}),
                ),
                Kind::Invalid => error(400, "MANIFEST_INVALID", e.to_string(), json!({})),
                Kind::Unsupported => error(413, "SIZE_INVALID", e.to_string(), json!({})),
                Kind::Conflict => {
                    log::warn!(
                        "{}: refused {name}:{r}: {e}",
                        req.user.as_deref().unwrap_or("-")
                    );
                    error(400, "TAG_INVALID", e.to_string(), json!({"tag": r}))
                }
                _ => internal(&e),
            },
        }
    }

    /// An immutable tag in the way of deleting `r`, unless the request overrides.
    fn immutable_block(&self, req: &Request, name: &str, r: &ManifestRef) -> Option<Response> {
        if req.query("override") == Some("immutable") {
            return None;
        }
        let tags: Vec<String> = match r {
            ManifestRef::Tag(t) => vec![t.clone()],
            ManifestRef::Digest(d) => self
                .store
                .tags(name)
                .ok()
                .flatten()
                .unwrap_or_default()
                .into_iter()
                .filter(|t| {
                    self.store
                        .resolve(name, &ManifestRef::Tag(t.clone()))
                        .ok()
                        .flatten()
                        .as_ref()
                        == Some(d)
                })
                .collect(),
        };
        let (tag, rule) = tags
            .iter()
            .find_map(|t| self.store.immutable_rule(name, t).map(|r| (t, r)))?;
        Some(error(
            403,
            "DENIED",
            format!(
                "tag {tag} of {name} is immutable (tagpolicy.immutable: repository {}, tags {}); to delete it anyway add ?override=immutable",
                rule.repository,
                rule.tags.join(",")
            ),
            json!({"tag": tag}),
        ))
    }

    fn delete_manifest(&self, req: &Request, name: &str, r: &str) -> Response {
        if !self.cfg.delete_enabled {
            return error(
                405,
                "UNSUPPORTED",
                "deletion is disabled (storage.delete.enabled)",
                json!({}),
            );
        }
        if let Ok(m) = ManifestRef::parse(r)
            && let Some(blocked) = self.immutable_block(req, name, &m)
        {
            return blocked;
        }
        let res = match ManifestRef::parse(r) {
            Ok(ManifestRef::Tag(t)) => self.store.delete_tag(name, &t),
            Ok(ManifestRef::Digest(d)) => self.store.delete_manifest(name, &d),
            Err(e) => {
                return error(
                    400,
                    "DIGEST_INVALID",
                    e.to_string(),
                    json!({"reference": r}),
                );
            }
        };
        match res {
            Ok(true) => {
                log::info!("deleted {name}:{r}");
                Response::new(202)
            }
            Ok(false) => error(
                404,
                "MANIFEST_UNKNOWN",
                "manifest unknown",
                json!({"reference": r}),
            ),
            Err(e) => internal(&e),
        }
    }

    fn referrers(&self, req: &Request, name: &str, d: &str) -> Response {
        let digest: Digest = match d.parse() {
            Ok(d) => d,
            Err(e) => return error(400, "DIGEST_INVALID", e.to_string(), json!({"digest": d})),
        };
        let mut list = match self.store.referrers(name, &digest) {
            Ok(l) => l,
            Err(e) => return internal(&e),
        };
        let filter = req
            .query("artifactType")
            .filter(|s| !s.is_empty())
            .map(str::to_string);
        if let Some(f) = &filter {
            list.retain(|x| x.artifact_type.as_deref() == Some(f.as_str()));
        }
        let idx = Index::new(MediaType::OciIndex, list);
        let body = serde_json::to_vec(&idx).unwrap_or_default();
        let mut resp = Response::new(200).bytes(MediaType::OciIndex.as_str(), body);
        if filter.is_some() {
            resp = resp.header("OCI-Filters-Applied", "artifactType");
        }
        resp
    }

    // -------------------------------------------------------------- discovery

    fn paging(req: &Request) -> Result<(Option<usize>, Option<String>), Response> {
        let n = match req.query("n") {
            None | Some("") => None,
            Some(s) => match s.parse::<usize>() {
                Ok(n) => Some(n),
                Err(_) => {
                    return Err(error(
                        400,
                        "UNSUPPORTED",
                        format!("n must be a number, got {s:?}"),
                        json!({}),
                    ));
                }
            },
        };
        Ok((
            n,
            req.query("last")
                .filter(|s| !s.is_empty())
                .map(str::to_string),
        ))
    }

    fn link(path: &str, n: usize, last: &str) -> String {
        format!("<{path}?n={n}&last={}>; rel=\"next\"", percent_encode(last))
    }

    fn tags(&self, req: &Request, name: &str) -> Response {
        let (n, last) = match Self::paging(req) {
            Ok(p) => p,
            Err(r) => return r,
        };
        let all = match self.store.tags(name) {
            Ok(Some(t)) => t,
            Ok(None) => {
                return error(
                    404,
                    "NAME_UNKNOWN",
                    "repository name not known to registry",
                    json!({"name": name}),
                );
            }
            Err(e) => return internal(&e),
        };
        let (items, more) = page(&all, n, last.as_deref(), true);
        let mut resp = Response::new(200).json(&json!({"name": name, "tags": items}));
        if let (true, Some(n), Some(l)) = (more, n, items.last()) {
            resp = resp.header("Link", Self::link(&format!("/v2/{name}/tags/list"), n, l));
        }
        resp
    }

    fn catalog(&self, req: &Request) -> Response {
        let (n, last) = match Self::paging(req) {
            Ok(p) => p,
            Err(r) => return r,
        };
        let all = self.store.repositories();
        let (items, more) = page(&all, n, last.as_deref(), false);
        let mut resp = Response::new(200).json(&json!({"repositories": items}));
        if let (true, Some(n), Some(l)) = (more, n, items.last()) {
            resp = resp.header("Link", Self::link("/v2/_catalog", n, l));
        }
        resp
    }

    /// Docker's v1 search, which Distribution never had: `docker search HOST/TERM`.
    fn search(&self, req: &Request) -> Response {
        let q = req.query("q").unwrap_or("").trim().to_ascii_lowercase();
        // `docker search host/library/x` sends the path; match on what follows a host.
        let q = q.strip_prefix("library/").unwrap_or(&q).to_string();
        let n = req
            .query("n")
            .and_then(|s| s.parse::<usize>().ok())
            .filter(|n| *n > 0)
            .unwrap_or(25)
            .min(100);
        let page_no = req
            .query("page")
            .and_then(|s| s.parse::<usize>().ok())
            .filter(|p| *p > 0)
            .unwrap_or(1);
        let hits: Vec<(String, Vec<String>)> = self
            .store
            .catalog_snapshot()
            .into_iter()
            .filter(|(name, _)| name.contains(&q))
            .collect();
        let total = hits.len();
        let results: Vec<_> = hits
            .iter()
            .skip((page_no - 1) * n)
            .take(n)
            .map(|(name, tags)| {
                json!({
                    "name": name,
                    "description": if tags.is_empty() { String::new() } else { format!("tags: {}", tags.join(", ")) },
                    "star_count": 0, "is_official": false, "is_automated": false, "is_trusted": false,
                })
            })
            .collect();
        Response::new(200).json(&json!({
            "query": q, "num_results": total, "num_pages": total.div_ceil(n).max(1), "page": page_no, "page_size": n,
            "results": results,
        }))
    }
}

fn upload_error(e: &Error, name: &str, id: &str) -> Response {
    match e.kind() {
        Kind::NotFound => error(
            404,
            "BLOB_UPLOAD_UNKNOWN",
            "blob upload unknown to registry",
            json!({"uuid": id, "name": name}),
        ),
        Kind::Digest => error(400, "DIGEST_INVALID", e.to_string(), json!({})),
        Kind::Invalid => error(400, "SIZE_INVALID", e.to_string(), json!({})),
        Kind::Network => {
            log::warn!("upload {id} to {name}: {e}");
            error(400, "BLOB_UPLOAD_INVALID", e.to_string(), json!({}))
        }
        _ => internal(e),
    }
}

impl Handler for Registry {
    fn handle(&self, req: &mut Request) -> Response {
        let resp = self.dispatch(req);
        resp.header("Docker-Distribution-API-Version", "registry/2.0")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(route("/v2/"), Route::Base);
        assert_eq!(route("/v2/a/b/tags/list"), Route::Tags("a/b".into()));
        assert_eq!(
            route("/v2/a/manifests/manifests/latest"),
            Route::Manifest("a/manifests".into(), "latest".into())
        );
        assert_eq!(
            route("/v2/x/blobs/uploads/"),
            Route::UploadStart("x".into())
        );
        assert_eq!(
            route("/v2/x/blobs/uploads/abc"),
            Route::Upload("x".into(), "abc".into())
        );
        assert_eq!(
            route("/v2/x/blobs/uploads/blobs/sha256:00"),
            Route::Blob("x/blobs/uploads".into(), "sha256:00".into())
        );
        assert_eq!(
            route("/v2/x/referrers/sha256:00"),
            Route::Referrers("x".into(), "sha256:00".into())
        );
        assert_eq!(route("/v3/x"), Route::NotFound);
    }
}

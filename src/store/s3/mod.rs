//! The S3 driver: the registry's files as objects in one bucket of an S3 service
//! (Ceph's RADOS gateway at a grid site), keyed as Distribution's `s3-aws` driver
//! keys them (`<rootdirectory>/docker/registry/v2/...`), so a site can move
//! between the two on the same bucket.
//!
//! S3 has no append, truncate or rename; the driver gives the store what it
//! needs from what S3 has:
//! - A staged file (an upload session's bytes) is a multipart upload. Bytes
//!   arrive in parts of `chunksize`; a tail shorter than a part waits in a
//!   `.pending-N` object until more comes or the upload ends (every part but the
//!   last must be at least 5 MiB). The `.multipart` state object (upload id,
//!   part ETags, pending key) is written last, so an append that fails leaves
//!   the previous state in force: its stray parts are overwritten by number or
//!   left out of the completion. Nothing is readable under the staged key until
//!   `seal` completes the upload.
//! - A rename is a server-side copy (multipart copy above
//!   `multipartcopythresholdsize`), then a delete: the target appears whole or
//!   not at all.
//! - A touch copies an object onto itself with its metadata replaced: a new
//!   Last-Modified, the collector's clock. A rename keeps the source's time in
//!   `x-amz-meta-berth-mtime`, as a filesystem rename keeps an mtime, so the
//!   collector's second look at a blob it parked sees the blob's own age.
//! - `create_new` is a PUT with `If-None-Match: *`, the bucket's compare-and-swap
//!   for leases.
//! - Directories are key prefixes; listing hides nothing.
//!
//! Credentials go into signatures only: never into logs, errors or `Debug`.

pub mod sigv4;

use super::{BlobReader, Driver, Stat};
use crate::error::{Error, Kind, Result};
use serde::{Deserialize, Serialize};
use sigv4::Credentials;
use std::io::{self, Read};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};
use ureq::http;

/// Smallest part S3 accepts, but for the last.
pub const MIN_PART: usize = 5 << 20;
/// Largest object a single CopyObject may copy.
const MAX_SINGLE_COPY: u64 = 5 << 30;

/// The driver's settings (Distribution's `storage.s3` keys).
#[derive(Clone, Debug)]
pub struct Settings {
    pub credentials: Credentials,
    /// `http[s]://host[:port]`, no trailing slash.
    pub endpoint: String,
    pub bucket: String,
    /// `rootdirectory` without leading or trailing slashes.
    pub root: String,
    pub path_style: bool,
    pub skip_verify: bool,
    pub chunk_size: usize,
    pub copy_threshold: u64,
    pub copy_chunk: u64,
    pub copy_concurrency: usize,
    pub storage_class: Option<String>,
}

impl Settings {
    /// Defaults as Distribution has them; the endpoint from the region when
    /// none is given.
    pub fn new(credentials: Credentials, bucket: &str) -> Settings {
        let endpoint = format!("https://s3.{}.amazonaws.com", credentials.region);
        Settings {
            credentials,
            endpoint,
            bucket: bucket.to_string(),
            root: String::new(),
            path_style: false,
            skip_verify: false,
            chunk_size: 10 << 20,
            copy_threshold: 32 << 20,
            copy_chunk: 32 << 20,
            copy_concurrency: 8,
            storage_class: Some("STANDARD".into()),
        }
    }
}

/// The staged file's state object.
#[derive(Serialize, Deserialize, Default, Clone)]
struct Staged {
    upload_id: Option<String>,
    parts: Vec<Part>,
    pending: Option<String>,
    pending_size: u64,
}

#[derive(Serialize, Deserialize, Clone)]
struct Part {
    etag: String,
    size: u64,
}

impl Staged {
    fn total(&self) -> u64 {
        self.parts.iter().map(|p| p.size).sum::<u64>() + self.pending_size
    }
}

pub struct S3 {
    s: Settings,
    agent: ureq::Agent,
    /// `Host` as signed and sent.
    host: String,
    /// `scheme://host[:port]`.
    base: String,
    /// `/bucket` in path style, empty in virtual-host style.
    bucket_path: String,
}

type Resp = http::Response<ureq::Body>;

/// A request's parts: decoded query pairs and extra headers to sign.
struct Req<'a> {
    method: &'a str,
    key: &'a str,
    query: Vec<(String, String)>,
    headers: Vec<(String, String)>,
    body: &'a [u8],
    /// Sign the body's hash (small bodies) or send it unsigned (parts).
    sign_body: bool,
}

impl<'a> Req<'a> {
    fn new(method: &'a str, key: &'a str) -> Req<'a> {
        Req {
            method,
            key,
            query: Vec::new(),
            headers: Vec::new(),
            body: &[],
            sign_body: true,
        }
    }
    fn q(mut self, k: &str, v: &str) -> Self {
        self.query.push((k.into(), v.into()));
        self
    }
    fn h(mut self, k: &str, v: &str) -> Self {
        self.headers.push((k.to_ascii_lowercase(), v.into()));
        self
    }
    fn body(mut self, b: &'a [u8]) -> Self {
        self.body = b;
        self
    }
}

/// Text of every `<tag>…</tag>` in `xml` (no nesting of the same tag).
fn xml_all<'x>(xml: &'x str, tag: &str) -> Vec<&'x str> {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(i) = rest.find(&open) {
        let after = &rest[i + open.len()..];
        let Some(j) = after.find(&close) else { break };
        out.push(&after[..j]);
        rest = &after[j + close.len()..];
    }
    out
}

fn xml_one<'x>(xml: &'x str, tag: &str) -> Option<&'x str> {
    xml_all(xml, tag).into_iter().next()
}

fn xml_unescape(s: &str) -> String {
    s.replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&#34;", "\"")
        .replace("&amp;", "&")
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn header(r: &Resp, k: &str) -> Option<String> {
    r.headers()
        .get(k)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

fn read_text(r: &mut Resp, limit: u64) -> Result<String> {
    let mut s = String::new();
    r.body_mut()
        .as_reader()
        .take(limit)
        .read_to_string(&mut s)
        .map_err(|e| Error::with_source(Kind::Io, "reading an S3 answer", e))?;
    Ok(s)
}

fn read_bytes(r: &mut Resp, limit: u64) -> Result<Vec<u8>> {
    let mut v = Vec::new();
    r.body_mut()
        .as_reader()
        .take(limit)
        .read_to_end(&mut v)
        .map_err(|e| Error::with_source(Kind::Io, "reading an S3 answer", e))?;
    Ok(v)
}

impl S3 {
    pub fn new(s: Settings) -> Result<S3> {
        let (scheme, rest) = s
            .endpoint
            .split_once("://")
            .filter(|(sc, _)| *sc == "http" || *sc == "https")
            .ok_or_else(|| {
                Error::config(format!(
                    "S3 endpoint {:?} is not an http:// or https:// URL",
                    s.endpoint
                ))
            })?;
        let hostport = rest.trim_end_matches('/');
        if hostport.is_empty() || hostport.contains('/') {
            return Err(Error::config(format!(
                "S3 endpoint {:?}: expected scheme://host[:port]",
                s.endpoint
            )));
        }
        if s.bucket.is_empty()
            || !s
                .bucket
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-._".contains(&b))
        {
            return Err(Error::config(format!(
                "S3 bucket {:?}: expected lowercase letters, digits, '-', '.'",
                s.bucket
            )));
        }
        if s.chunk_size < MIN_PART {
            return Err(Error::config(format!(
                "S3 chunksize {} is below S3's 5 MiB part minimum",
                s.chunk_size
            )));
        }
        let (host, bucket_path) = if s.path_style {
            (hostport.to_string(), format!("/{}", s.bucket))
        } else {
            (format!("{}.{hostport}", s.bucket), String::new())
        };
        crate::tls::provider();
        let tls = ureq::tls::TlsConfig::builder()
            .provider(ureq::tls::TlsProvider::Rustls)
            .root_certs(ureq::tls::RootCerts::new_with_certs(
                &crate::tls::ureq_system_roots(),
            ))
            .disable_verification(s.skip_verify)
            .build();
        let agent = ureq::Agent::new_with_config(
            ureq::config::Config::builder()
                .tls_config(tls)
                .http_status_as_error(false)
                .max_redirects(0)
                .max_idle_connections(256)
                .max_idle_connections_per_host(64)
                .timeout_connect(Some(Duration::from_secs(15)))
                .timeout_recv_response(Some(Duration::from_secs(300)))
                .user_agent(format!("berth/{}", crate::VERSION))
                .build(),
        );
        Ok(S3 {
            base: format!("{scheme}://{host}"),
            host,
            bucket_path,
            agent,
            s,
        })
    }

    pub fn settings(&self) -> &Settings {
        &self.s
    }

    /// The object key of a driver path.
    fn key(&self, path: &str) -> Result<String> {
        super::memory::check_path(path)?;
        let root = &self.s.root;
        Ok(if root.is_empty() {
            path[1..].to_string()
        } else {
            format!("{root}{path}")
        })
    }

    fn url_path(&self, key: &str) -> String {
        format!("{}/{}", self.bucket_path, sigv4::uri_encode(key, true))
    }

    fn send(&self, r: Req<'_>) -> Result<Resp> {
        let path = self.url_path(r.key);
        let mut last = None;
        for attempt in 0..3 {
            if attempt > 0 {
                std::thread::sleep(Duration::from_millis(100 << attempt));
            }
            let date = sigv4::amz_date(crate::util::now_unix());
            let payload = if r.sign_body {
                sigv4::sha256_hex(r.body)
            } else {
                sigv4::UNSIGNED.to_string()
            };
            let mut h = r.headers.clone();
            h.push(("host".into(), self.host.clone()));
            h.push(("x-amz-date".into(), date.clone()));
            h.push(("x-amz-content-sha256".into(), payload.clone()));
            let auth = self
                .s
                .credentials
                .authorization(r.method, &path, &r.query, &h, &date, &payload);
            let q = sigv4::canonical_query(&r.query);
            let url = if q.is_empty() {
                format!("{}{path}", self.base)
            } else {
                format!("{}{path}?{q}", self.base)
            };
            let mut b = http::Request::builder().method(r.method).uri(&url);
            for (k, v) in &h {
                if k != "host" {
                    b = b.header(k.as_str(), v.as_str());
                }
            }
            b = b.header("authorization", auth);
            let res = if matches!(r.method, "GET" | "HEAD" | "DELETE") && r.body.is_empty() {
                self.agent
                    .run(b.body(()).map_err(|e| Error::internal(e.to_string()))?)
            } else {
                self.agent.run(
                    b.header("content-length", r.body.len().to_string())
                        .body(r.body)
                        .map_err(|e| Error::internal(e.to_string()))?,
                )
            };
            match res {
                Ok(resp) if resp.status().as_u16() >= 500 && attempt < 2 => {
                    last = Some(Error::new(
                        Kind::Io,
                        format!("S3 {} {}: {}", r.method, r.key, resp.status()),
                    ));
                }
                Ok(resp) => return Ok(resp),
                Err(e) => {
                    last = Some(Error::new(
                        Kind::Io,
                        format!("S3 {} at {}: {e}", self.s.bucket, self.s.endpoint),
                    ));
                }
            }
        }
        Err(last.expect("tried"))
    }

    /// The error an S3 answer carries, as ours.
    fn fail(&self, what: &str, key: &str, mut resp: Resp) -> Error {
        let status = resp.status().as_u16();
        let body = read_text(&mut resp, 64 << 10).unwrap_or_default();
        let code = xml_one(&body, "Code").unwrap_or("").to_string();
        // Failures of the storage are the registry's (5xx to clients), not
        // the client's: Io, never Network (a client's broken body).
        let kind = match (status, code.as_str()) {
            (_, "NoSuchBucket") => Kind::Config,
            (404, _) | (_, "NoSuchKey") | (_, "NoSuchUpload") => Kind::NotFound,
            (412, _) => Kind::Conflict,
            (403, _) | (401, _) => Kind::Auth,
            _ => Kind::Io,
        };
        let msg = xml_one(&body, "Message")
            .map(xml_unescape)
            .unwrap_or_default();
        let detail = match (code.is_empty(), msg.is_empty()) {
            (true, _) => format!("HTTP {status}"),
            (false, true) => format!("{code} (HTTP {status})"),
            (false, false) => format!("{code}: {msg} (HTTP {status})"),
        };
        let hint = match code.as_str() {
            "NoSuchBucket" => format!("; create bucket {} first", self.s.bucket),
            "SignatureDoesNotMatch" | "InvalidAccessKeyId" => {
                "; check storage.s3.accesskey, secretkey and region".to_string()
            }
            _ => String::new(),
        };
        Error::new(
            kind,
            format!("S3 {what} {}/{key}: {detail}{hint}", self.s.bucket),
        )
    }

    fn ok(&self, what: &str, key: &str, resp: Resp) -> Result<Resp> {
        if resp.status().is_success() {
            Ok(resp)
        } else {
            Err(self.fail(what, key, resp))
        }
    }

    /// The XML document of a successful answer. Copies and completions may
    /// fail with 200 and an error document, so that counts as a failure.
    fn ok_document(&self, what: &str, key: &str, resp: Resp) -> Result<String> {
        let mut resp = self.ok(what, key, resp)?;
        let body = read_text(&mut resp, 64 << 10)?;
        if body.contains("<Error>") {
            return Err(Error::new(
                Kind::Io,
                format!(
                    "S3 {what} {}/{key}: {}",
                    self.s.bucket,
                    xml_one(&body, "Code").unwrap_or("failed")
                ),
            ));
        }
        Ok(body)
    }

    fn storage_class<'a>(&self, r: Req<'a>) -> Req<'a> {
        match &self.s.storage_class {
            Some(c) => r.h("x-amz-storage-class", c),
            None => r,
        }
    }

    /// Create the bucket unless it exists (tests, first start on a fresh gateway).
    pub fn ensure_bucket(&self) -> Result<()> {
        let resp = self.send(Req::new("HEAD", ""))?;
        if resp.status().is_success() {
            return Ok(());
        }
        let resp = self.send(Req::new("PUT", ""))?;
        let status = resp.status().as_u16();
        if resp.status().is_success() || status == 409 {
            return Ok(());
        }
        Err(self.fail("create bucket", "", resp))
    }

    fn head(&self, key: &str) -> Result<Option<(u64, SystemTime)>> {
        let resp = self.send(Req::new("HEAD", key))?;
        if resp.status().as_u16() == 404 {
            return Ok(None);
        }
        let resp = self.ok("HEAD", key, resp)?;
        let size = header(&resp, "content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        // A renamed object keeps its source's time (a copy alone would not).
        let modified = header(&resp, "x-amz-meta-berth-mtime")
            .and_then(|v| v.parse::<i64>().ok())
            .or_else(|| {
                header(&resp, "last-modified").and_then(|v| crate::util::parse_http_date(&v))
            })
            .map(|t| SystemTime::UNIX_EPOCH + Duration::from_secs(t.max(0) as u64))
            .unwrap_or(SystemTime::UNIX_EPOCH);
        Ok(Some((size, modified)))
    }

    /// One page of a listing: (keys with LastModified, common prefixes, next token).
    #[allow(clippy::type_complexity)]
    fn list_page(
        &self,
        prefix: &str,
        delimiter: bool,
        token: Option<&str>,
        max: usize,
    ) -> Result<(Vec<(String, SystemTime)>, Vec<String>, Option<String>)> {
        let mut r = Req::new("GET", "")
            .q("list-type", "2")
            .q("prefix", prefix)
            .q("encoding-type", "url")
            .q("max-keys", &max.to_string());
        if delimiter {
            r = r.q("delimiter", "/");
        }
        if let Some(t) = token {
            r = r.q("continuation-token", t);
        }
        let resp = self.send(r)?;
        let mut resp = self.ok("list", prefix, resp)?;
        let body = read_text(&mut resp, 64 << 20)?;
        let dec = |s: &str| {
            crate::http::percent_decode(&xml_unescape(s), true)
                .ok_or_else(|| Error::new(Kind::Io, format!("S3 listing: bad key {s:?}")))
        };
        let mut keys = Vec::new();
        for c in xml_all(&body, "Contents") {
            let k = dec(xml_one(c, "Key").unwrap_or(""))?;
            let t = xml_one(c, "LastModified")
                .and_then(crate::util::parse_rfc3339_time)
                .unwrap_or(SystemTime::UNIX_EPOCH);
            keys.push((k, t));
        }
        let mut prefixes = Vec::new();
        for c in xml_all(&body, "CommonPrefixes") {
            prefixes.push(dec(xml_one(c, "Prefix").unwrap_or(""))?);
        }
        let next = (xml_one(&body, "IsTruncated") == Some("true"))
            .then(|| xml_one(&body, "NextContinuationToken").map(xml_unescape))
            .flatten();
        Ok((keys, prefixes, next))
    }

    /// Every key under `prefix`, recursively.
    fn list_all(&self, prefix: &str) -> Result<Vec<(String, SystemTime)>> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let (keys, _, next) = self.list_page(prefix, false, token.as_deref(), 1000)?;
            out.extend(keys);
            match next {
                Some(t) => token = Some(t),
                None => return Ok(out),
            }
        }
    }

    fn delete_key(&self, key: &str) -> Result<()> {
        let resp = self.send(Req::new("DELETE", key))?;
        if resp.status().is_success() || resp.status().as_u16() == 404 {
            Ok(())
        } else {
            Err(self.fail("DELETE", key, resp))
        }
    }

    fn get_key(&self, key: &str) -> Result<Vec<u8>> {
        let resp = self.send(Req::new("GET", key))?;
        let mut resp = self.ok("GET", key, resp)?;
        read_bytes(&mut resp, u64::MAX)
    }

    fn put_key(&self, key: &str, data: &[u8]) -> Result<()> {
        let r = self.storage_class(Req::new("PUT", key).body(data));
        let resp = self.send(r)?;
        self.ok("PUT", key, resp).map(|_| ())
    }

    fn copy_source(&self, key: &str) -> String {
        format!("/{}/{}", self.s.bucket, sigv4::uri_encode(key, true))
    }

    /// CopyObject; it may fail with 200 and an error document.
    /// `mtime`: keep this time as the target's (a rename); None with
    /// `replace_meta` gives the target a fresh time (a touch).
    fn copy_object(
        &self,
        from: &str,
        to: &str,
        replace_meta: bool,
        mtime: Option<i64>,
    ) -> Result<()> {
        let mut r = Req::new("PUT", to).h("x-amz-copy-source", &self.copy_source(from));
        if replace_meta || mtime.is_some() {
            r = r.h("x-amz-metadata-directive", "REPLACE");
        }
        if let Some(t) = mtime {
            r = r.h("x-amz-meta-berth-mtime", &t.to_string());
        }
        let resp = self.send(self.storage_class(r))?;
        self.ok_document("copy to", to, resp).map(|_| ())
    }

    fn create_multipart(&self, key: &str, mtime: Option<i64>) -> Result<String> {
        let mut r = self.storage_class(Req::new("POST", key).q("uploads", ""));
        if let Some(t) = mtime {
            r = r.h("x-amz-meta-berth-mtime", &t.to_string());
        }
        let resp = self.send(r)?;
        let body = self.ok_document("start multipart upload", key, resp)?;
        xml_one(&body, "UploadId")
            .map(xml_unescape)
            .ok_or_else(|| Error::new(Kind::Io, format!("S3 multipart {key}: no UploadId")))
    }

    fn upload_part(&self, key: &str, upload: &str, n: usize, data: &[u8]) -> Result<String> {
        let mut r = Req::new("PUT", key)
            .q("partNumber", &n.to_string())
            .q("uploadId", upload)
            .body(data);
        r.sign_body = false;
        let resp = self.send(r)?;
        let resp = self.ok("upload part of", key, resp)?;
        header(&resp, "etag")
            .ok_or_else(|| Error::new(Kind::Io, format!("S3 part of {key}: no ETag")))
    }

    fn complete_multipart(&self, key: &str, upload: &str, etags: &[String]) -> Result<()> {
        let mut xml = String::from("<CompleteMultipartUpload>");
        for (i, e) in etags.iter().enumerate() {
            xml.push_str(&format!(
                "<Part><PartNumber>{}</PartNumber><ETag>{}</ETag></Part>",
                i + 1,
                xml_escape(e)
            ));
        }
        xml.push_str("</CompleteMultipartUpload>");
        let r = Req::new("POST", key)
            .q("uploadId", upload)
            .body(xml.as_bytes());
        let resp = self.send(r)?;
        self.ok_document("complete multipart upload", key, resp)
            .map(|_| ())
    }

    /// Multipart uploads in progress under `prefix`: (key, upload id). A
    /// replica killed mid-append leaves one no state object names.
    pub fn multipart_uploads(&self, prefix: &str) -> Result<Vec<(String, String)>> {
        let mut out = Vec::new();
        let mut marker: Option<(String, String)> = None;
        loop {
            let mut r = Req::new("GET", "").q("uploads", "").q("prefix", prefix);
            if let Some((k, u)) = &marker {
                r = r.q("key-marker", k).q("upload-id-marker", u);
            }
            let resp = self.send(r)?;
            let mut resp = self.ok("list multipart uploads", prefix, resp)?;
            let body = read_text(&mut resp, 64 << 20)?;
            for u in xml_all(&body, "Upload") {
                if let (Some(k), Some(id)) = (xml_one(u, "Key"), xml_one(u, "UploadId")) {
                    out.push((xml_unescape(k), xml_unescape(id)));
                }
            }
            if xml_one(&body, "IsTruncated") != Some("true") {
                return Ok(out);
            }
            match (
                xml_one(&body, "NextKeyMarker"),
                xml_one(&body, "NextUploadIdMarker"),
            ) {
                (Some(k), Some(u)) => marker = Some((xml_unescape(k), xml_unescape(u))),
                _ => return Ok(out),
            }
        }
    }

    /// The driver path's multipart uploads in progress (tests, `delete`).
    pub fn uploads_under(&self, path: &str) -> Result<Vec<(String, String)>> {
        self.multipart_uploads(&format!("{}/", self.key(path)?))
    }

    fn abort_multipart(&self, key: &str, upload: &str) {
        let r = Req::new("DELETE", key).q("uploadId", upload);
        match self.send(r) {
            Ok(resp) if resp.status().is_success() || resp.status().as_u16() == 404 => {}
            Ok(resp) => log::warn!("{}", self.fail("abort multipart upload", key, resp)),
            Err(e) => log::warn!("abort multipart upload {key}: {e}"),
        }
    }

    /// Copy above the single-copy threshold: parts copied server-side, several
    /// at a time.
    fn multipart_copy(&self, from: &str, to: &str, size: u64, mtime: Option<i64>) -> Result<()> {
        let upload = self.create_multipart(to, mtime)?;
        let chunk = self.s.copy_chunk.max(MIN_PART as u64);
        let n = size.div_ceil(chunk) as usize;
        let next = AtomicUsize::new(0);
        let etags = std::sync::Mutex::new(vec![String::new(); n]);
        let failed = std::sync::Mutex::new(None::<Error>);
        std::thread::scope(|sc| {
            for _ in 0..self.s.copy_concurrency.clamp(1, 32).min(n) {
                sc.spawn(|| {
                    loop {
                        let i = next.fetch_add(1, Ordering::SeqCst);
                        if i >= n || failed.lock().unwrap().is_some() {
                            return;
                        }
                        let a = i as u64 * chunk;
                        let b = (a + chunk).min(size) - 1;
                        let r = Req::new("PUT", to)
                            .q("partNumber", &(i + 1).to_string())
                            .q("uploadId", &upload)
                            .h("x-amz-copy-source", &self.copy_source(from))
                            .h("x-amz-copy-source-range", &format!("bytes={a}-{b}"));
                        let res = self.send(r).and_then(|resp| {
                            let body = self.ok_document("copy part to", to, resp)?;
                            xml_one(&body, "ETag").map(xml_unescape).ok_or_else(|| {
                                Error::new(Kind::Io, format!("S3 copy part {to}: no ETag"))
                            })
                        });
                        match res {
                            Ok(e) => etags.lock().unwrap()[i] = e,
                            Err(e) => {
                                *failed.lock().unwrap() = Some(e);
                                return;
                            }
                        }
                    }
                });
            }
        });
        if let Some(e) = failed.into_inner().unwrap() {
            self.abort_multipart(to, &upload);
            return Err(e);
        }
        let etags = etags.into_inner().unwrap();
        if let Err(e) = self.complete_multipart(to, &upload, &etags) {
            self.abort_multipart(to, &upload);
            return Err(e);
        }
        Ok(())
    }

    fn copy(&self, from: &str, to: &str, size: u64, mtime: Option<i64>) -> Result<()> {
        if size > self.s.copy_threshold.min(MAX_SINGLE_COPY) {
            self.multipart_copy(from, to, size, mtime)
        } else {
            self.copy_object(from, to, false, mtime)
        }
    }

    fn staged_key(&self, path: &str) -> Result<String> {
        Ok(format!("{}.multipart", self.key(path)?))
    }

    fn load_staged(&self, path: &str) -> Result<Staged> {
        let k = self.staged_key(path)?;
        let b = self.get_key(&k)?;
        serde_json::from_slice(&b)
            .map_err(|e| Error::new(Kind::Invalid, format!("S3 staged state {k}: {e}")))
    }

    fn save_staged(&self, path: &str, st: &Staged) -> Result<()> {
        let b = serde_json::to_vec(st).expect("serializable");
        self.put_key(&self.staged_key(path)?, &b)
    }

    /// A blob's bytes straight off the gateway's socket, for a plain-HTTP
    /// endpoint: the reader is the connection itself, so bulk GETs skip the
    /// HTTP client's buffers (a copy of every byte). Only a 200 or 206 is
    /// taken; anything else, or any trouble, answers None and the caller asks
    /// again through the client, which reports errors properly.
    fn plain_get(&self, key: &str, offset: u64) -> Option<(BlobReader, u64)> {
        let addr = self.base.strip_prefix("http://")?;
        let path = self.url_path(key);
        let date = sigv4::amz_date(crate::util::now_unix());
        let mut h = vec![
            ("host".to_string(), self.host.clone()),
            ("x-amz-date".into(), date.clone()),
            ("x-amz-content-sha256".into(), sigv4::EMPTY_SHA256.into()),
        ];
        if offset > 0 {
            h.push(("range".into(), format!("bytes={offset}-")));
        }
        let auth =
            self.s
                .credentials
                .authorization("GET", &path, &[], &h, &date, sigv4::EMPTY_SHA256);
        let mut req = format!("GET {path} HTTP/1.1\r\n");
        for (k, v) in &h {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str(&format!(
            "authorization: {auth}\r\nuser-agent: berth/{}\r\nconnection: close\r\n\r\n",
            crate::VERSION
        ));
        let mut sock = std::net::TcpStream::connect(addr).ok()?;
        let _ = sock.set_nodelay(true);
        let _ = sock.set_read_timeout(Some(Duration::from_secs(300)));
        io::Write::write_all(&mut sock, req.as_bytes()).ok()?;
        // The head, and whatever of the body came with it.
        let mut buf = vec![0u8; 16 << 10];
        let mut have = 0;
        let (len, total, head_len) = loop {
            let n = sock.read(&mut buf[have..]).ok()?;
            if n == 0 {
                return None;
            }
            have += n;
            let mut hs = [httparse::EMPTY_HEADER; 64];
            let mut resp = httparse::Response::new(&mut hs);
            match resp.parse(&buf[..have]).ok()? {
                httparse::Status::Complete(head_len) => {
                    let get = |k: &str| {
                        resp.headers
                            .iter()
                            .find(|x| x.name.eq_ignore_ascii_case(k))
                            .and_then(|x| std::str::from_utf8(x.value).ok())
                    };
                    let len: u64 = get("content-length")?.trim().parse().ok()?;
                    let total = match resp.code? {
                        200 if offset == 0 => len,
                        206 => get("content-range")?
                            .rsplit_once('/')
                            .and_then(|(_, t)| t.trim().parse().ok())?,
                        _ => return None,
                    };
                    break (len, total, head_len);
                }
                httparse::Status::Partial if have < buf.len() => continue,
                httparse::Status::Partial => return None,
            }
        };
        let early = buf[head_len..have].to_vec();
        let rest = len.checked_sub(early.len() as u64)?;
        Some((
            Box::new(io::Cursor::new(early).chain(sock.take(rest))),
            total,
        ))
    }

    /// Presigned GET of a driver path, valid `ttl`.
    pub fn presigned_get(&self, path: &str, ttl: Duration) -> Result<String> {
        let key = self.key(path)?;
        let up = self.url_path(&key);
        let q = self.s.credentials.presign_query(
            "GET",
            &self.host,
            &up,
            &sigv4::amz_date(crate::util::now_unix()),
            ttl.as_secs().clamp(1, 7 * 24 * 3600),
        );
        Ok(format!("{}{up}?{q}", self.base))
    }
}

impl Driver for S3 {
    fn get(&self, path: &str) -> Result<Vec<u8>> {
        self.get_key(&self.key(path)?)
    }

    fn put(&self, path: &str, data: &[u8]) -> Result<()> {
        self.put_key(&self.key(path)?, data)
    }

    fn create_new(&self, path: &str, data: &[u8]) -> Result<bool> {
        let key = self.key(path)?;
        let r = Req::new("PUT", &key).h("if-none-match", "*").body(data);
        let resp = self.send(r)?;
        match resp.status().as_u16() {
            200..=299 => Ok(true),
            412 | 409 => Ok(false),
            _ => Err(self.fail("create", &key, resp)),
        }
    }

    fn swap(&self, path: &str, old: &[u8], new: &[u8]) -> Result<bool> {
        let key = self.key(path)?;
        let resp = self.send(Req::new("GET", &key))?;
        if resp.status().as_u16() == 404 {
            return Ok(false);
        }
        let mut resp = self.ok("GET", &key, resp)?;
        let etag = header(&resp, "etag");
        if read_bytes(&mut resp, 1 << 20)? != old {
            return Ok(false);
        }
        let Some(etag) = etag else {
            return Err(Error::new(
                Kind::Unsupported,
                format!("S3 GET {key}: the gateway sent no ETag to compare"),
            ));
        };
        // The gateway compares and writes in one step. Ceph's radosgw (16)
        // matches only the bare tag, without HTTP's quotes; AWS takes both.
        let r = Req::new("PUT", &key)
            .h("if-match", etag.trim_matches('"'))
            .body(new);
        let resp = self.send(r)?;
        match resp.status().as_u16() {
            200..=299 => Ok(true),
            412 | 404 | 409 => Ok(false),
            _ => Err(self.fail("swap", &key, resp)),
        }
    }

    fn reader(&self, path: &str, offset: u64) -> Result<(BlobReader, u64)> {
        let key = self.key(path)?;
        if let Some(direct) = self.plain_get(&key, offset) {
            return Ok(direct);
        }
        let mut r = Req::new("GET", &key);
        if offset > 0 {
            r = r.h("range", &format!("bytes={offset}-"));
        }
        let resp = self.send(r)?;
        if resp.status().as_u16() == 416 {
            // At or past the end: nothing to read, but the size is wanted.
            let (size, _) = self
                .head(&key)?
                .ok_or_else(|| Error::not_found(format!("{path}: no such object")))?;
            if offset == size {
                return Ok((Box::new(io::empty()), size));
            }
            return Err(Error::invalid(format!(
                "{path}: offset {offset} past {size}"
            )));
        }
        let resp = self.ok("GET", &key, resp)?;
        let size = if resp.status().as_u16() == 206 {
            header(&resp, "content-range")
                .and_then(|v| v.rsplit_once('/').and_then(|(_, t)| t.parse().ok()))
                .ok_or_else(|| Error::new(Kind::Io, format!("S3 GET {key}: no total size")))?
        } else {
            let len: u64 = header(&resp, "content-length")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            if offset > 0 {
                // A gateway that ignored the range: skip to the offset ourselves.
                let mut body = resp.into_body().into_reader();
                io::copy(&mut (&mut body).take(offset), &mut io::sink())?;
                return Ok((Box::new(body), len));
            }
            len
        };
        Ok((Box::new(resp.into_body().into_reader()), size))
    }

    fn stat(&self, path: &str) -> Result<Stat> {
        let key = self.key(path)?;
        if let Some((size, modified)) = self.head(&key)? {
            return Ok(Stat {
                size,
                modified,
                is_dir: false,
            });
        }
        let (keys, _, _) = self.list_page(&format!("{key}/"), false, None, 1)?;
        match keys.first() {
            Some((_, t)) => Ok(Stat {
                size: 0,
                modified: *t,
                is_dir: true,
            }),
            None => Err(Error::not_found(format!("{path}: no such object"))),
        }
    }

    fn list(&self, path: &str) -> Result<Vec<String>> {
        let key = if path == "/" {
            self.s.root.clone()
        } else {
            self.key(path)?
        };
        let prefix = if key.is_empty() {
            String::new()
        } else {
            format!("{key}/")
        };
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let (keys, prefixes, next) = self.list_page(&prefix, true, token.as_deref(), 1000)?;
            for (k, _) in keys {
                out.push(k[prefix.len()..].to_string());
            }
            for p in prefixes {
                out.push(p[prefix.len()..].trim_end_matches('/').to_string());
            }
            match next {
                Some(t) => token = Some(t),
                None => break,
            }
        }
        out.retain(|n| !n.is_empty());
        out.sort();
        out.dedup();
        Ok(out)
    }

    fn rename(&self, from: &str, to: &str) -> Result<()> {
        let (f, t) = (self.key(from)?, self.key(to)?);
        let (size, modified) = self
            .head(&f)?
            .ok_or_else(|| Error::not_found(format!("rename {from}: no such object")))?;
        let secs = modified
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        self.copy(&f, &t, size, Some(secs))?;
        self.delete_key(&f)
    }

    fn delete(&self, path: &str) -> Result<()> {
        let key = self.key(path)?;
        self.delete_key(&key)?;
        let children = self.list_all(&format!("{key}/"))?;
        for (k, _) in &children {
            self.delete_key(k)?;
        }
        // A staged file's parts live in the gateway until aborted, those its
        // state names and those of an append that died before saving it.
        if !children.is_empty() {
            for (k, id) in self.multipart_uploads(&format!("{key}/"))? {
                self.abort_multipart(&k, &id);
            }
        }
        Ok(())
    }

    fn touch(&self, path: &str) -> Result<()> {
        let key = self.key(path)?;
        let size = match self.head(&key)? {
            Some((size, _)) => size,
            None => return Err(Error::not_found(format!("{path}: no such object"))),
        };
        // Onto itself with the metadata replaced: a new Last-Modified, and a
        // kept rename time dropped. Past a single copy's limit, in parts.
        if size > MAX_SINGLE_COPY {
            return self.multipart_copy(&key, &key, size, None);
        }
        match self.copy_object(&key, &key, true, None) {
            Err(e) if e.kind() == Kind::NotFound => {
                Err(Error::not_found(format!("{path}: no such object")))
            }
            r => r,
        }
    }

    fn stage(&self, path: &str) -> Result<()> {
        self.save_staged(path, &Staged::default())
    }

    fn staged_size(&self, path: &str) -> Result<u64> {
        Ok(self.load_staged(path)?.total())
    }

    fn append(&self, path: &str, at: u64, body: &mut dyn Read) -> Result<u64> {
        let key = self.key(path)?;
        let old = self.load_staged(path)?;
        if old.total() != at {
            return Err(Error::new(
                Kind::Conflict,
                format!("{path} holds {} bytes, not {at}", old.total()),
            ));
        }
        let mut st = old.clone();
        let chunk = self.s.chunk_size;
        let mut buf = match &old.pending {
            Some(p) => self.get_key(p)?,
            None => Vec::new(),
        };
        if buf.len() as u64 != old.pending_size {
            return Err(Error::internal(format!(
                "{path}: pending bytes are {} long, state says {}",
                buf.len(),
                old.pending_size
            )));
        }
        let mut filled = buf.len();
        // A pending tail from before a smaller chunksize goes out as one part.
        let chunk = chunk.max(filled + 1);
        buf.resize(chunk, 0);
        let mut added = 0u64;
        loop {
            let n = match body.read(&mut buf[filled..]) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::with_source(Kind::Network, "reading upload body", e)),
            };
            filled += n;
            added += n as u64;
            if filled == chunk {
                let id = match &st.upload_id {
                    Some(id) => id.clone(),
                    None => {
                        let id = self.create_multipart(&key, None)?;
                        st.upload_id = Some(id.clone());
                        id
                    }
                };
                let etag = self.upload_part(&key, &id, st.parts.len() + 1, &buf[..filled])?;
                st.parts.push(Part {
                    etag,
                    size: filled as u64,
                });
                filled = 0;
            }
            if n == 0 {
                break;
            }
        }
        st.pending_size = filled as u64;
        st.pending = None;
        if filled > 0 {
            let p = format!("{key}.pending-{}", st.total());
            if old.pending.as_deref() != Some(p.as_str()) {
                self.put_key(&p, &buf[..filled])?;
            }
            st.pending = Some(p);
        }
        if added > 0 || st.upload_id != old.upload_id {
            self.save_staged(path, &st)?;
        }
        // The bytes count now; a leftover pending object only costs space
        // until the session's directory goes.
        if let Some(p) = &old.pending
            && st.pending.as_ref() != Some(p)
            && let Err(e) = self.delete_key(p)
        {
            log::warn!("{e}");
        }
        Ok(added)
    }

    fn seal(&self, path: &str) -> Result<()> {
        let key = self.key(path)?;
        let st = match self.load_staged(path) {
            Ok(st) => st,
            // Sealed by an earlier try that got as far as its cleanup.
            Err(e) if e.kind() == Kind::NotFound && self.head(&key)?.is_some() => return Ok(()),
            Err(e) => return Err(e),
        };
        let done = self.head(&key)?.is_some_and(|(s, _)| s == st.total());
        match &st.upload_id {
            // Completed by an earlier try that died before cleaning up.
            _ if done && st.upload_id.is_some() => {}
            None => match &st.pending {
                Some(p) => self.copy_object(p, &key, false, None)?,
                None => self.put_key(&key, &[])?,
            },
            Some(id) => {
                let mut etags: Vec<String> = st.parts.iter().map(|p| p.etag.clone()).collect();
                if let Some(p) = &st.pending {
                    let tail = self.get_key(p)?;
                    etags.push(self.upload_part(&key, id, etags.len() + 1, &tail)?);
                }
                if let Err(e) = self.complete_multipart(&key, id, &etags) {
                    // Completed by an earlier try that died before cleaning up.
                    let done = e.kind() == Kind::NotFound
                        && self.head(&key)?.is_some_and(|(s, _)| s == st.total());
                    if !done {
                        return Err(e);
                    }
                }
            }
        }
        if let Some(p) = &st.pending
            && let Err(e) = self.delete_key(p)
        {
            log::warn!("{e}");
        }
        self.delete_key(&self.staged_key(path)?)
    }

    fn redirect_url(&self, path: &str, ttl: Duration) -> Result<Option<String>> {
        self.presigned_get(path, ttl).map(Some)
    }

    fn shared(&self) -> bool {
        true
    }
}

/// For callers holding the driver behind an `Arc<dyn Driver>`.
pub fn new_driver(s: Settings) -> Result<Arc<dyn Driver>> {
    Ok(Arc::new(S3::new(s)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_listing_xml() {
        let x = "<ListBucketResult><IsTruncated>true</IsTruncated><Contents><Key>a%2Fb</Key><LastModified>2026-12-01T10:00:00.000Z</LastModified></Contents><Contents><Key>c</Key></Contents><NextContinuationToken>t&amp;1</NextContinuationToken></ListBucketResult>";
        let c = xml_all(x, "Contents");
        assert_eq!(c.len(), 2);
        assert_eq!(xml_one(c[0], "Key"), Some("a%2Fb"));
        assert_eq!(
            xml_unescape(xml_one(x, "NextContinuationToken").unwrap()),
            "t&1"
        );
        assert_eq!(xml_escape("\"e&t\""), "&quot;e&amp;t&quot;");
    }

    #[test]
    fn settings_are_checked_and_keys_keep_distributions_layout() {
        let c = Credentials {
            access_key: "a".into(),
            secret_key: "s".into(),
            region: "us-east-1".into(),
        };
        let mut s = Settings::new(c, "registry");
        s.endpoint = "http://127.0.0.1:5301".into();
        s.path_style = true;
        s.root = "site/reg".into();
        let d = S3::new(s.clone()).unwrap();
        assert_eq!(
            d.key("/docker/registry/v2/blobs").unwrap(),
            "site/reg/docker/registry/v2/blobs"
        );
        assert!(d.key("/a/../b").is_err());
        assert_eq!(d.url_path("k y"), "/registry/k%20y");
        let mut bad = s.clone();
        bad.chunk_size = 1 << 20;
        assert!(S3::new(bad).is_err());
        let mut bad = s.clone();
        bad.endpoint = "ftp://x".into();
        assert!(S3::new(bad).is_err());
        let mut vhost = s;
        vhost.path_style = false;
        vhost.root = String::new();
        let d = S3::new(vhost).unwrap();
        assert_eq!(d.host, "registry.127.0.0.1:5301");
        assert_eq!(d.key("/x").unwrap(), "x");
        let url = d.presigned_get("/x", Duration::from_secs(60)).unwrap();
        assert!(url.starts_with("http://registry.127.0.0.1:5301/x?X-Amz-Algorithm="));
        assert!(!url.contains("\"s\""));
    }
}

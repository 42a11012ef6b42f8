//! registryd's configuration: Docker Distribution's config.yml, read as it is.
//!
//! Supported keys do what Distribution does. Keys that only tune Distribution's
//! internals (caches, redis, health checks, debug server) are accepted quietly:
//! berth has no such parts. Keys that would change behaviour berth does not have
//! (notifications, proxy mode, prefixes) are named in a warning with their line, as
//! is every unknown key. Settings berth cannot honour safely (token auth, storage
//! drivers other than filesystem and s3, S3 signature v2 or server-side
//! encryption) stop the start with an error naming the line.
//! `REGISTRY_<SECTION>_<KEY>` environment variables override the file.

use berth::config::{Doc, parse_duration};
use berth::error::{Error, Result};
use berth::log::Format;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// `storage.s3` keys berth implements, settable from the environment too
/// (`REGISTRY_STORAGE_S3_BUCKET`, …): Distribution's.
const S3_KEYS: &[&str] = &[
    "storage.s3.accesskey",
    "storage.s3.secretkey",
    "storage.s3.region",
    "storage.s3.regionendpoint",
    "storage.s3.bucket",
    "storage.s3.rootdirectory",
    "storage.s3.secure",
    "storage.s3.skipverify",
    "storage.s3.v4auth",
    "storage.s3.chunksize",
    "storage.s3.multipartcopythresholdsize",
    "storage.s3.multipartcopychunksize",
    "storage.s3.multipartcopymaxconcurrency",
    "storage.s3.forcepathstyle",
    "storage.s3.storageclass",
];

/// Keys berth implements (and [`S3_KEYS`]).
const SUPPORTED: &[&str] = &[
    "version",
    "log.level",
    "log.formatter",
    "log.fields.*",
    "log.accesslog.disabled",
    "loglevel",
    "storage.filesystem.rootdirectory",
    "storage.s3.encrypt",
    "storage.redirect.disable",
    "storage.delete.enabled",
    "storage.maintenance.uploadpurging.enabled",
    "storage.maintenance.uploadpurging.age",
    "storage.maintenance.uploadpurging.interval",
    "storage.maintenance.uploadpurging.dryrun",
    "storage.maintenance.readonly.enabled",
    "http.addr",
    "http.net",
    "http.host",
    "http.relativeurls",
    "http.headers.*",
    "http.tls.certificate",
    "http.tls.key",
    "http.tls.clientcas",
    "http.tls.minimumtls",
    "auth.htpasswd.realm",
    "auth.htpasswd.path",
    "gc.interval",
    "gc.grace",
    "gc.untagged",
    "tagpolicy.immutable.*",
    "tagpolicy.retention.*",
];

/// Distribution internals with no counterpart in berth: accepted without a word.
const QUIET: &[&str] = &[
    "storage.cache.*",
    "storage.filesystem.maxthreads",
    "storage.tag.*",
    "http.secret",
    "http.draintimeout",
    "http.debug.*",
    "http.http2.*",
    "http.tls.ciphersuites",
    "health.*",
    "redis.*",
    "validation.*",
    "compatibility.*",
    "log.hooks.*",
    "reporting.*",
];

/// Paths that environment variables may set (and [`S3_KEYS`]).
const ENV_KEYS: &[&str] = &[
    "log.level",
    "log.formatter",
    "log.accesslog.disabled",
    "storage.filesystem.rootdirectory",
    "storage.redirect.disable",
    "storage.delete.enabled",
    "storage.maintenance.readonly.enabled",
    "http.addr",
    "http.net",
    "http.host",
    "http.relativeurls",
    "http.tls.certificate",
    "http.tls.key",
    "http.tls.minimumtls",
    "http.tls.clientcas",
    "auth.htpasswd.realm",
    "auth.htpasswd.path",
];

#[derive(Debug, Clone)]
pub enum Net {
    Tcp,
    Unix,
}

#[derive(Debug, Clone)]
pub struct Purging {
    pub enabled: bool,
    pub age: Duration,
    pub interval: Duration,
    pub dryrun: bool,
}

/// The online collector (`gc:`; Distribution ignores the key).
#[derive(Debug, Clone)]
pub struct Gc {
    pub interval: Duration,
    pub untagged: bool,
}

/// Where the registry keeps its data.
#[derive(Debug, Clone)]
pub enum Storage {
    Filesystem(PathBuf),
    S3(berth::store::s3::Settings),
}

impl Storage {
    /// For logs and errors: never the credentials.
    pub fn describe(&self) -> String {
        match self {
            Storage::Filesystem(p) => p.display().to_string(),
            Storage::S3(s) => format!("s3://{}/{} at {}", s.bucket, s.root, s.endpoint),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    pub file: String,
    pub level: log::LevelFilter,
    pub format: Format,
    pub fields: Vec<(String, String)>,
    pub access_log: bool,
    pub storage: Storage,
    /// Blob GETs answered with a presigned URL of the object store
    /// (`storage.redirect.disable: false`, Distribution's default).
    pub redirect: bool,
    pub delete_enabled: bool,
    pub read_only: bool,
    pub purging: Purging,
    pub addr: String,
    pub net: Net,
    /// Base URL for absolute Location headers (`http.host`).
    pub host: Option<String>,
    pub relative_urls: bool,
    pub headers: Vec<(String, String)>,
    pub tls: Option<berth::tls::ServerSettings>,
    pub htpasswd: Option<(String, PathBuf)>,
    /// `gc:` present: collect online on this schedule.
    pub gc: Option<Gc>,
    /// The collector's grace also when run as a command (`gc.grace`, default 1h).
    pub gc_grace: Duration,
    pub immutable: Vec<berth::store::registry::Immutable>,
    pub retention: Vec<berth::store::gc::Retention>,
    /// Warnings to log once logging is set up.
    pub warnings: Vec<String>,
}

// Relative paths are relative to the working directory, as in Distribution.
fn resolve_path(doc: &Doc, path: &str) -> Result<Option<PathBuf>> {
    Ok(doc.str(path)?.map(PathBuf::from))
}

impl Config {
    /// Load a file and the environment's overrides.
    pub fn load(path: &Path) -> Result<Config> {
        let mut doc = Doc::load(path)?;
        let env_warnings =
            doc.apply_env("REGISTRY_", std::env::vars(), &[ENV_KEYS, S3_KEYS].concat());
        let mut c = Config::from_doc(&doc)?;
        c.warnings.extend(env_warnings);
        Ok(c)
    }

    pub fn from_doc(doc: &Doc) -> Result<Config> {
        let mut warnings = Vec::new();
        let mut known: Vec<&str> = [SUPPORTED, S3_KEYS].concat();
        known.extend_from_slice(QUIET);
        for w in doc.unknown_keys(&known) {
            let unsupported = [
                "notifications",
                "proxy",
                "http.prefix",
                "middleware",
                "auth.token",
                "auth.silly",
            ]
            .iter()
            .any(|p| w.contains(&format!("\"{p}")));
            warnings.push(if unsupported {
                w.replace("unknown key", "not supported by berth: key")
            } else {
                w
            });
        }
        if let Some(v) = doc.str("version")?
            && v != "0.1"
        {
            return Err(doc.error("version", format!("expected 0.1, got {v}")));
        }
        for bad in ["auth.token", "auth.silly"] {
            if doc.node(bad).is_some() {
                return Err(doc.error(
                    bad,
                    "this auth scheme is not supported by berth; use auth.htpasswd",
                ));
            }
        }
        if let Some(storage) = doc.node("storage") {
            for (k, _) in storage.entries() {
                if ![
                    "filesystem",
                    "s3",
                    "delete",
                    "maintenance",
                    "cache",
                    "redirect",
                    "tag",
                ]
                .contains(&k.as_str())
                {
                    return Err(doc.error(
                        &format!("storage.{k}"),
                        "storage driver not supported by berth; use storage.filesystem or storage.s3",
                    ));
                }
            }
        }
        let level_s = doc
            .str("log.level")?
            .or(doc.str("loglevel")?)
            .unwrap_or_else(|| "info".into());
        let level = berth::log::parse_level(&level_s).ok_or_else(|| {
            doc.error(
                "log.level",
                format!("expected error, warn, info or debug, got {level_s:?}"),
            )
        })?;
        let format = match doc.str("log.formatter")?.as_deref() {
            None | Some("text") => Format::Text,
            Some("json") | Some("logstash") => Format::Json,
            Some(o) => {
                return Err(doc.error("log.formatter", format!("expected text or json, got {o:?}")));
            }
        };
        let fields = doc
            .node("log.fields")
            .map(|n| {
                n.entries()
                    .iter()
                    .map(|(k, _)| {
                        Ok((
                            k.clone(),
                            doc.str(&format!("log.fields.{k}"))?.unwrap_or_default(),
                        ))
                    })
                    .collect::<Result<Vec<_>>>()
            })
            .transpose()?
            .unwrap_or_default();
        let access_log = !doc.bool("log.accesslog.disabled")?.unwrap_or(false);
        let storage = storage(doc)?;
        let redirect = !doc.bool("storage.redirect.disable")?.unwrap_or(false);
        let delete_enabled = doc.bool("storage.delete.enabled")?.unwrap_or(false);
        let read_only = doc
            .bool("storage.maintenance.readonly.enabled")?
            .unwrap_or(false);
        let dur = |p: &str, default: Duration| -> Result<Duration> {
            match doc.str(p)? {
                None => Ok(default),
                Some(s) => parse_duration(&s).ok_or_else(|| {
                    doc.error(
                        p,
                        format!("expected a duration like 168h or 30m, got {s:?}"),
                    )
                }),
            }
        };
        let purging = Purging {
            enabled: doc
                .bool("storage.maintenance.uploadpurging.enabled")?
                .unwrap_or(true),
            age: dur(
                "storage.maintenance.uploadpurging.age",
                Duration::from_secs(168 * 3600),
            )?,
            interval: dur(
                "storage.maintenance.uploadpurging.interval",
                Duration::from_secs(24 * 3600),
            )?,
            dryrun: doc
                .bool("storage.maintenance.uploadpurging.dryrun")?
                .unwrap_or(false),
        };
        if purging.enabled && purging.interval.is_zero() {
            return Err(doc.error(
                "storage.maintenance.uploadpurging.interval",
                "must be more than 0",
            ));
        }
        let net = match doc.str("http.net")?.as_deref() {
            None | Some("tcp") | Some("tcp4") | Some("tcp6") => Net::Tcp,
            Some("unix") => Net::Unix,
            Some(o) => {
                return Err(doc.error("http.net", format!("expected tcp or unix, got {o:?}")));
            }
        };
        let addr = doc.str("http.addr")?.unwrap_or_else(|| ":5000".into());
        if matches!(net, Net::Tcp) {
            let port_ok = addr
                .rsplit_once(':')
                .is_some_and(|(_, p)| p.parse::<u16>().is_ok());
            if !port_ok {
                return Err(doc.error(
                    "http.addr",
                    format!("expected HOST:PORT or :PORT, got {addr:?}"),
                ));
            }
        }
        let host = doc
            .str("http.host")?
            .map(|h| h.trim_end_matches('/').to_string());
        if let Some(h) = &host
            && !(h.starts_with("http://") || h.starts_with("https://"))
        {
            return Err(doc.error(
                "http.host",
                format!("expected a URL like https://registry.example:5000, got {h:?}"),
            ));
        }
        let relative_urls = doc.bool("http.relativeurls")?.unwrap_or(false);
        let mut headers = Vec::new();
        if let Some(n) = doc.node("http.headers") {
            for (k, _) in n.entries() {
                for v in doc.str_list(&format!("http.headers.{k}"))? {
                    headers.push((k.clone(), v));
                }
            }
        }
        let cert = resolve_path(doc, "http.tls.certificate")?;
        let key = resolve_path(doc, "http.tls.key")?;
        let tls = match (cert, key) {
            (Some(certificate), Some(key)) => {
                let tls13_only = match doc.str("http.tls.minimumtls")?.as_deref() {
                    None | Some("tls1.2") => false,
                    Some("tls1.3") => true,
                    Some("tls1.0") | Some("tls1.1") => {
                        return Err(doc.error(
                            "http.tls.minimumtls",
                            "TLS before 1.2 is not offered; use tls1.2 or tls1.3",
                        ));
                    }
                    Some(o) => {
                        return Err(doc.error(
                            "http.tls.minimumtls",
                            format!("expected tls1.2 or tls1.3, got {o:?}"),
                        ));
                    }
                };
                let mut client_cas = Vec::new();
                for c in doc.str_list("http.tls.clientcas")? {
                    client_cas.push(PathBuf::from(c));
                }
                Some(berth::tls::ServerSettings {
                    certificate,
                    key,
                    client_cas,
                    tls13_only,
                })
            }
            (Some(_), None) => {
                return Err(doc.error("http.tls.certificate", "http.tls.key is missing"));
            }
            (None, Some(_)) => {
                return Err(doc.error("http.tls.key", "http.tls.certificate is missing"));
            }
            (None, None) => None,
        };
        let htpasswd = match (
            doc.str("auth.htpasswd.realm")?,
            resolve_path(doc, "auth.htpasswd.path")?,
        ) {
            (realm, Some(path)) => Some((realm.unwrap_or_else(|| "basic-realm".into()), path)),
            (Some(_), None) => {
                return Err(doc.error("auth.htpasswd", "auth.htpasswd.path is missing"));
            }
            (None, None) => None,
        };
        let gc_grace = dur("gc.grace", Duration::from_secs(3600))?;
        if gc_grace < Duration::from_secs(1) {
            return Err(doc.error(
                "gc.grace",
                "must be at least 1s: it must outlast the longest manifest push",
            ));
        }
        let gc = match doc.node("gc") {
            None => None,
            Some(_) => {
                let interval = dur("gc.interval", Duration::from_secs(24 * 3600))?;
                if interval < Duration::from_secs(1) {
                    return Err(doc.error("gc.interval", "must be at least 1s"));
                }
                Some(Gc {
                    interval,
                    untagged: doc.bool("gc.untagged")?.unwrap_or(false),
                })
            }
        };
        let (immutable, retention) = tag_policies(doc)?;
        if htpasswd.is_some() && tls.is_none() {
            warnings.push(format!(
                "{}: auth.htpasswd without http.tls sends passwords in clear text",
                doc.file
            ));
        }
        Ok(Config {
            file: doc.file.clone(),
            level,
            format,
            fields,
            access_log,
            storage,
            redirect,
            delete_enabled,
            read_only,
            purging,
            addr,
            net,
            host,
            relative_urls,
            headers,
            tls,
            htpasswd,
            gc,
            gc_grace,
            immutable,
            retention,
            warnings,
        })
    }
}

/// `storage.filesystem` or `storage.s3` (Distribution's keys and defaults),
/// exactly one of them.
fn storage(doc: &Doc) -> Result<Storage> {
    let fs = resolve_path(doc, "storage.filesystem.rootdirectory")?;
    if doc.node("storage.s3").is_none() {
        return fs.map(Storage::Filesystem).ok_or_else(|| {
            Error::config(format!(
                "{}: storage.filesystem.rootdirectory: not set; say where the registry keeps its data",
                doc.file
            ))
        });
    }
    if doc.node("storage.filesystem").is_some() {
        return Err(doc.error(
            "storage.s3",
            "storage.filesystem is set too; a registry has one storage driver",
        ));
    }
    let need = |k: &str| -> Result<String> {
        doc.str(&format!("storage.s3.{k}"))?
            .filter(|v| !v.is_empty())
            .ok_or_else(|| {
                doc.error(
                    "storage.s3",
                    format!(
                        "storage.s3.{k} is not set (or REGISTRY_STORAGE_S3_{} in the environment)",
                        k.to_ascii_uppercase()
                    ),
                )
            })
    };
    let size = |k: &str, default: u64, min: u64| -> Result<u64> {
        let p = format!("storage.s3.{k}");
        match doc.int(&p)? {
            None => Ok(default),
            Some(v) if v >= min as i64 => Ok(v as u64),
            Some(v) => Err(doc.error(&p, format!("expected at least {min}, got {v}"))),
        }
    };
    if doc.bool("storage.s3.v4auth")? == Some(false) {
        return Err(doc.error(
            "storage.s3.v4auth",
            "signature version 2 is not offered; remove v4auth or set it to true",
        ));
    }
    if doc.bool("storage.s3.encrypt")? == Some(true) {
        return Err(doc.error(
            "storage.s3.encrypt",
            "server-side encryption is not supported by berth's S3 driver; set encrypt: false",
        ));
    }
    // Only what the file says: stray AWS_* variables meant for other tools
    // never reach the driver.
    let credentials = berth::store::s3::sigv4::Credentials {
        access_key: need("accesskey")?,
        secret_key: need("secretkey")?,
        region: need("region")?,
    };
    let mut s = berth::store::s3::Settings::new(credentials, &need("bucket")?);
    let secure = doc.bool("storage.s3.secure")?.unwrap_or(true);
    let endpoint = doc
        .str("storage.s3.regionendpoint")?
        .filter(|e| !e.is_empty());
    if let Some(e) = &endpoint {
        let e = e.trim_end_matches('/');
        s.endpoint = if e.contains("://") {
            e.to_string()
        } else if secure {
            format!("https://{e}")
        } else {
            format!("http://{e}")
        };
    } else if !secure {
        s.endpoint = s.endpoint.replacen("https://", "http://", 1);
    }
    s.root = doc
        .str("storage.s3.rootdirectory")?
        .unwrap_or_default()
        .trim_matches('/')
        .to_string();
    // Distribution forces path style whenever an endpoint is given.
    s.path_style = doc
        .bool("storage.s3.forcepathstyle")?
        .unwrap_or(endpoint.is_some());
    s.skip_verify = doc.bool("storage.s3.skipverify")?.unwrap_or(false);
    s.chunk_size = size("chunksize", 10 << 20, berth::store::s3::MIN_PART as u64)? as usize;
    s.copy_threshold = size("multipartcopythresholdsize", 32 << 20, 0)?;
    s.copy_chunk = size(
        "multipartcopychunksize",
        32 << 20,
        berth::store::s3::MIN_PART as u64,
    )?;
    s.copy_concurrency = size("multipartcopymaxconcurrency", 100, 1)? as usize;
    s.storage_class = match doc.str("storage.s3.storageclass")?.as_deref() {
        None => Some("STANDARD".into()),
        Some("NONE") => None,
        Some(c) => Some(c.to_string()),
    };
    berth::store::s3::S3::new(s.clone()).map_err(|e| doc.error("storage.s3", e.message()))?;
    Ok(Storage::S3(s))
}

/// `tagpolicy.immutable` and `tagpolicy.retention`: lists of rules, each key
/// checked, errors at the rule's line.
fn tag_policies(
    doc: &Doc,
) -> Result<(
    Vec<berth::store::registry::Immutable>,
    Vec<berth::store::gc::Retention>,
)> {
    let rules = |list: &str, allowed: &[&str]| -> Result<usize> {
        let Some(n) = doc.node(list) else {
            return Ok(0);
        };
        if matches!(n.value, berth::config::Value::Null) {
            return Ok(0);
        }
        let items = n.items();
        if items.is_empty() {
            return Err(doc.error(list, "expected a list of rules (- repository: PATTERN …)"));
        }
        for (i, item) in items.iter().enumerate() {
            if item.entries().is_empty() {
                return Err(doc.error(&format!("{list}.{i}"), "expected a rule (repository: …)"));
            }
            for (k, _) in item.entries() {
                if !allowed.contains(&k.as_str()) {
                    return Err(doc.error(
                        &format!("{list}.{i}.{k}"),
                        format!("unknown key; a rule has {}", allowed.join(", ")),
                    ));
                }
            }
            if doc.str(&format!("{list}.{i}.repository"))?.is_none() {
                return Err(doc.error(
                    &format!("{list}.{i}"),
                    "repository is missing (a pattern such as sl6-* or test/*)",
                ));
            }
        }
        Ok(items.len())
    };
    let mut immutable = Vec::new();
    for i in 0..rules("tagpolicy.immutable", &["repository", "tags"])? {
        let at = format!("tagpolicy.immutable.{i}");
        let tags = doc.str_list(&format!("{at}.tags"))?;
        immutable.push(berth::store::registry::Immutable {
            repository: doc.str(&format!("{at}.repository"))?.unwrap_or_default(),
            tags: if tags.is_empty() {
                vec!["*".into()]
            } else {
                tags
            },
        });
    }
    let mut retention = Vec::new();
    for i in 0..rules(
        "tagpolicy.retention",
        &["repository", "keep", "maxage", "except"],
    )? {
        let at = format!("tagpolicy.retention.{i}");
        let keep = match doc.int(&format!("{at}.keep"))? {
            None => None,
            Some(k) if k >= 0 => Some(k as usize),
            Some(k) => {
                return Err(doc.error(
                    &format!("{at}.keep"),
                    format!("expected 0 or more, got {k}"),
                ));
            }
        };
        let max_age = match doc.str(&format!("{at}.maxage"))? {
            None => None,
            Some(s) => Some(parse_duration(&s).ok_or_else(|| {
                doc.error(
                    &format!("{at}.maxage"),
                    format!("expected a duration like 720h, got {s:?}"),
                )
            })?),
        };
        if keep.is_none() && max_age.is_none() {
            return Err(doc.error(&at, "a retention rule needs keep, maxage or both"));
        }
        retention.push(berth::store::gc::Retention {
            repository: doc.str(&format!("{at}.repository"))?.unwrap_or_default(),
            keep,
            max_age,
            except: doc.str_list(&format!("{at}.except"))?,
        });
    }
    Ok((immutable, retention))
}

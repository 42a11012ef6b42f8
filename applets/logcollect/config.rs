//! logcollect's settings: flags and a YAML file say the same things (the file's
//! keys are the flags' names with `_`), flags win over the file, and a bad
//! value in the file is named with its line.
//!
//! ```yaml
//! graph: /var/lib/berth
//! log_root: /var/log/berth
//! engine: unix:///run/berth/engined.sock
//! app_name: berth
//! facility: local0
//! forward:
//!   - tcp://loghost.example:514
//!   - url: tls://loghost.example:6514
//!     ca: /etc/pki/tls/certs/site-ca.pem
//!     cert: /etc/pki/tls/certs/node.pem
//!     key: /etc/pki/tls/private/node.key
//! spool_max: 256M
//! max_file_size: 10M
//! max_files: 5
//! max_dir_size: 200M
//! gone_days: 7
//! partial_after: 5
//! ```

use berth::config::Doc;
use berth::error::{Error, Result};
use std::path::{Path, PathBuf};

/// One syslog sink.
#[derive(Debug, Clone, PartialEq)]
pub struct Sink {
    /// `tcp://HOST:PORT` or `tls://HOST:PORT`, as given.
    pub url: String,
    pub host: String,
    pub port: u16,
    pub tls: bool,
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

impl Sink {
    pub fn parse(url: &str) -> std::result::Result<Sink, String> {
        let (tls, rest) = if let Some(r) = url.strip_prefix("tcp://") {
            (false, r)
        } else if let Some(r) = url.strip_prefix("tls://") {
            (true, r)
        } else {
            return Err("expected tcp://HOST:PORT or tls://HOST:PORT".into());
        };
        let (host, port) = rest
            .rsplit_once(':')
            .ok_or("expected HOST:PORT after the scheme")?;
        let port: u16 = port
            .parse()
            .map_err(|_| format!("{port:?} is not a port number"))?;
        let host = host.trim_matches(['[', ']']);
        if host.is_empty() {
            return Err("no host".into());
        }
        Ok(Sink {
            url: url.to_string(),
            host: host.to_string(),
            port,
            tls,
            ca: None,
            cert: None,
            key: None,
        })
    }
}

/// Everything logcollect runs with.
#[derive(Debug, Clone)]
pub struct Settings {
    pub graph: PathBuf,
    pub log_root: PathBuf,
    /// engined's socket, for its event stream.
    pub engine: PathBuf,
    pub app_name: String,
    /// syslog facility number (local0 = 16).
    pub facility: u8,
    pub sinks: Vec<Sink>,
    pub spool_max: u64,
    pub max_file_size: u64,
    pub max_files: u32,
    pub max_dir_size: u64,
    pub gone_days: u64,
    /// Seconds a last line without its newline waits before it is sent.
    pub partial_after: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            graph: PathBuf::from("/var/lib/berth"),
            log_root: PathBuf::from("/var/log/berth"),
            engine: PathBuf::from("/run/berth/engined.sock"),
            app_name: "berth".into(),
            facility: 16,
            sinks: Vec::new(),
            spool_max: 256 << 20,
            max_file_size: 10 << 20,
            max_files: 5,
            max_dir_size: 200 << 20,
            gone_days: 7,
            partial_after: 5,
        }
    }
}

/// syslog facility by name (RFC 5424 table) or number.
pub fn facility(s: &str) -> std::result::Result<u8, String> {
    const NAMES: [&str; 24] = [
        "kern",
        "user",
        "mail",
        "daemon",
        "auth",
        "syslog",
        "lpr",
        "news",
        "uucp",
        "cron",
        "authpriv",
        "ftp",
        "ntp",
        "security",
        "console",
        "solaris-cron",
        "local0",
        "local1",
        "local2",
        "local3",
        "local4",
        "local5",
        "local6",
        "local7",
    ];
    if let Ok(n) = s.parse::<u8>() {
        return if n < 24 {
            Ok(n)
        } else {
            Err("a facility number is 0 to 23".into())
        };
    }
    NAMES
        .iter()
        .position(|n| *n == s)
        .map(|i| i as u8)
        .ok_or_else(|| format!("unknown facility {s:?} (local0 … local7, daemon, user, …)"))
}

/// RFC 5424's APP-NAME: 1 to 48 printable US-ASCII characters, no space
/// (a receiver parses the header by spaces).
fn app_name(a: &str) -> std::result::Result<(), String> {
    if a.is_empty() || a.len() > 48 {
        return Err(format!("{a:?}: an app-name is 1 to 48 characters"));
    }
    if let Some(c) = a.chars().find(|c| !c.is_ascii_graphic()) {
        return Err(format!(
            "{a:?}: {c:?} is not allowed (printable US-ASCII without space only)"
        ));
    }
    Ok(())
}

fn size(s: &str) -> std::result::Result<u64, String> {
    berth::util::parse_size(s).ok_or_else(|| format!("{s:?} is not a size (10M, 1G, …)"))
}

/// The flags, as `mod.rs` parsed them.
#[derive(Debug, Default, Clone)]
pub struct Flags {
    pub graph: Option<PathBuf>,
    pub log_root: Option<PathBuf>,
    pub engine: Option<String>,
    pub app_name: Option<String>,
    pub facility: Option<String>,
    pub forward: Vec<String>,
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub spool_max: Option<String>,
    pub max_file_size: Option<String>,
    pub max_files: Option<u32>,
    pub max_dir_size: Option<String>,
    pub gone_days: Option<u64>,
    pub partial_after: Option<u64>,
}

const KEYS: &[&str] = &[
    "graph",
    "log_root",
    "engine",
    "app_name",
    "facility",
    "forward",
    "spool_max",
    "max_file_size",
    "max_files",
    "max_dir_size",
    "gone_days",
    "partial_after",
];

/// The file (if any), then the flags over it.
pub fn resolve(file: Option<&Path>, f: &Flags) -> Result<Settings> {
    let mut s = Settings::default();
    if let Some(path) = file {
        let doc = Doc::load(path)?;
        apply_doc(&doc, &mut s)?;
    }
    let flag = |name: &str, why: String| Error::config(format!("--{name}: {why}"));
    if let Some(g) = &f.graph {
        s.graph = g.clone();
    }
    if let Some(r) = &f.log_root {
        s.log_root = r.clone();
    }
    if let Some(e) = &f.engine {
        s.engine = PathBuf::from(e.strip_prefix("unix://").unwrap_or(e));
    }
    if let Some(a) = &f.app_name {
        app_name(a).map_err(|w| flag("app-name", w))?;
        s.app_name = a.clone();
    }
    if let Some(x) = &f.facility {
        s.facility = facility(x).map_err(|w| flag("facility", w))?;
    }
    for u in &f.forward {
        let mut sink = Sink::parse(u).map_err(|w| flag("forward", format!("{u}: {w}")))?;
        sink.ca = f.ca.clone();
        sink.cert = f.cert.clone();
        sink.key = f.key.clone();
        if !s.sinks.iter().any(|x| x.url == sink.url) {
            s.sinks.push(sink);
        }
    }
    if let Some(x) = &f.spool_max {
        s.spool_max = size(x).map_err(|w| flag("spool-max", w))?;
    }
    if let Some(x) = &f.max_file_size {
        s.max_file_size = size(x).map_err(|w| flag("max-file-size", w))?;
    }
    if let Some(n) = f.max_files {
        s.max_files = n;
    }
    if let Some(x) = &f.max_dir_size {
        s.max_dir_size = size(x).map_err(|w| flag("max-dir-size", w))?;
    }
    if let Some(n) = f.gone_days {
        s.gone_days = n;
    }
    if let Some(n) = f.partial_after {
        s.partial_after = n;
    }
    for k in &s.sinks {
        if k.cert.is_some() != k.key.is_some() {
            return Err(Error::config(format!(
                "{}: a client certificate needs both cert and key",
                k.url
            )));
        }
    }
    if s.max_files == 0 {
        return Err(Error::config("max_files: keep at least 1 rotated file"));
    }
    Ok(s)
}

fn apply_doc(doc: &Doc, s: &mut Settings) -> Result<()> {
    for (k, _) in doc.root.entries() {
        if !KEYS.contains(&k.as_str()) {
            return Err(doc.error(k, format!("unknown key (known: {})", KEYS.join(", "))));
        }
    }
    if let Some(g) = doc.str("graph")? {
        s.graph = PathBuf::from(g);
    }
    if let Some(r) = doc.str("log_root")? {
        s.log_root = PathBuf::from(r);
    }
    if let Some(e) = doc.str("engine")? {
        s.engine = PathBuf::from(e.strip_prefix("unix://").unwrap_or(&e));
    }
    if let Some(a) = doc.str("app_name")? {
        app_name(&a).map_err(|w| doc.error("app_name", w))?;
        s.app_name = a;
    }
    if let Some(x) = doc.str("facility")? {
        s.facility = facility(&x).map_err(|w| doc.error("facility", w))?;
    }
    if let Some(list) = doc.node("forward") {
        for (i, item) in list.items().iter().enumerate() {
            let at = format!("forward.{i}");
            let (url, ca, cert, key) = match item.scalar_string() {
                Some(u) => (u, None, None, None),
                None => {
                    let get = |k: &str| doc.str(&format!("{at}.{k}"));
                    for (k, _) in item.entries() {
                        if !["url", "ca", "cert", "key"].contains(&k.as_str()) {
                            return Err(
                                doc.error(&format!("{at}.{k}"), "unknown key (url, ca, cert, key)")
                            );
                        }
                    }
                    let url = get("url")?.ok_or_else(|| doc.error(&at, "needs url"))?;
                    (
                        url,
                        get("ca")?.map(PathBuf::from),
                        get("cert")?.map(PathBuf::from),
                        get("key")?.map(PathBuf::from),
                    )
                }
            };
            let mut sink = Sink::parse(&url).map_err(|w| doc.error(&at, format!("{url}: {w}")))?;
            sink.ca = ca;
            sink.cert = cert;
            sink.key = key;
            s.sinks.push(sink);
        }
    }
    let sized = |k: &str, v: &mut u64| -> Result<()> {
        if let Some(x) = doc.str(k)? {
            *v = size(&x).map_err(|w| doc.error(k, w))?;
        }
        Ok(())
    };
    sized("spool_max", &mut s.spool_max)?;
    sized("max_file_size", &mut s.max_file_size)?;
    sized("max_dir_size", &mut s.max_dir_size)?;
    if let Some(n) = doc.int("max_files")? {
        s.max_files = u32::try_from(n).map_err(|_| doc.error("max_files", "expected a count"))?;
    }
    if let Some(n) = doc.int("gone_days")? {
        s.gone_days = u64::try_from(n).map_err(|_| doc.error("gone_days", "expected days"))?;
    }
    if let Some(n) = doc.int("partial_after")? {
        s.partial_after =
            u64::try_from(n).map_err(|_| doc.error("partial_after", "expected seconds"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_and_flags_say_the_same_things() {
        let d = std::env::temp_dir().join(format!("berth-lc-{}", berth::util::uuid4()));
        std::fs::create_dir_all(&d).unwrap();
        let f = d.join("logcollect.yml");
        std::fs::write(
            &f,
            "log_root: /srv/logs\npartial_after: 2\nfacility: local3\nforward:\n  - tcp://a:514\n  - url: tls://b:6514\n    ca: /ca.pem\nmax_file_size: 1M\n",
        )
        .unwrap();
        let s = resolve(Some(&f), &Flags::default()).unwrap();
        assert_eq!(s.log_root, PathBuf::from("/srv/logs"));
        assert_eq!(s.facility, 19);
        assert_eq!(s.sinks.len(), 2);
        assert!(s.sinks[1].tls && s.sinks[1].ca == Some(PathBuf::from("/ca.pem")));
        assert_eq!(s.max_file_size, 1 << 20);
        assert_eq!(s.partial_after, 2);
        let flags = Flags {
            log_root: Some("/x".into()),
            forward: vec!["tcp://c:1".into()],
            ..Flags::default()
        };
        let s = resolve(Some(&f), &flags).unwrap();
        assert_eq!(s.log_root, PathBuf::from("/x"));
        assert_eq!(s.sinks.len(), 3);
        std::fs::write(&f, "graph: /g\n\nfacility: local9\n").unwrap();
        let e = resolve(Some(&f), &Flags::default())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("logcollect.yml:3") && e.contains("facility"),
            "{e}"
        );
        std::fs::write(&f, "graph: /g\nforwards: []\n").unwrap();
        let e = resolve(Some(&f), &Flags::default())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("logcollect.yml:2") && e.contains("unknown key"),
            "{e}"
        );
        std::fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn app_names_are_rfc5424s() {
        let d = std::env::temp_dir().join(format!("berth-lc-{}", berth::util::uuid4()));
        std::fs::create_dir_all(&d).unwrap();
        let f = d.join("logcollect.yml");
        std::fs::write(&f, "graph: /g\napp_name: \"condor startd\"\n").unwrap();
        let e = resolve(Some(&f), &Flags::default())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("logcollect.yml:2") && e.contains("app_name"),
            "{e}"
        );
        std::fs::write(&f, "app_name: t1wn-startd\n").unwrap();
        assert_eq!(
            resolve(Some(&f), &Flags::default()).unwrap().app_name,
            "t1wn-startd"
        );
        for bad in ["", "caf\u{e9}", &"x".repeat(49), "a\tb"] {
            let flags = Flags {
                app_name: Some(bad.to_string()),
                ..Flags::default()
            };
            let e = resolve(None, &flags).unwrap_err().to_string();
            assert!(e.contains("--app-name"), "{bad:?}: {e}");
        }
        let ok = Flags {
            app_name: Some("x".repeat(48)),
            ..Flags::default()
        };
        assert!(resolve(None, &ok).is_ok());
        std::fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn sink_urls() {
        assert!(Sink::parse("tls://h:6514").unwrap().tls);
        assert_eq!(Sink::parse("tcp://127.0.0.1:514").unwrap().port, 514);
        assert!(Sink::parse("udp://h:514").is_err());
        assert!(Sink::parse("tcp://h").is_err());
    }
}

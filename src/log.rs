//! Logging setup shared by applets: env_logger on stderr, text or JSON lines.
//!
//! Text: `2017-03-27T12:00:00.123Z info registryd: message`. JSON: one object per line
//! with `time`, `level`, `msg` and any static fields from the config (Distribution's
//! `log.fields`). Records on the `access` target carry their own fields: in JSON mode
//! their message is a JSON object that is merged into the line.
//! `BERTH_LOG` (env_logger syntax) overrides the configured level.

use std::io::Write;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
}

static FIELDS: OnceLock<String> = OnceLock::new();
static JSON: AtomicBool = AtomicBool::new(false);

/// True when the installed logger writes JSON lines.
pub fn json() -> bool {
    JSON.load(Ordering::Relaxed)
}

/// Parse a level name as Distribution's config spells them.
pub fn parse_level(s: &str) -> Option<log::LevelFilter> {
    Some(match s.to_ascii_lowercase().as_str() {
        "panic" | "fatal" | "error" => log::LevelFilter::Error,
        "warn" | "warning" => log::LevelFilter::Warn,
        "info" => log::LevelFilter::Info,
        "debug" => log::LevelFilter::Debug,
        "trace" => log::LevelFilter::Trace,
        "off" | "none" => log::LevelFilter::Off,
        _ => return None,
    })
}

/// Install the logger once; later calls are ignored (tests start several servers).
pub fn init(level: log::LevelFilter, format: Format, fields: &[(String, String)]) {
    let extra: String = fields
        .iter()
        .map(|(k, v)| {
            format!(
                ",{}:{}",
                serde_json::Value::from(k.as_str()),
                serde_json::Value::from(v.as_str())
            )
        })
        .collect();
    let _ = FIELDS.set(extra);
    if b_is_first_init() {
        JSON.store(format == Format::Json, Ordering::Relaxed);
    }
    let mut b = env_logger::Builder::new();
    b.filter_level(level);
    // Our dependencies are chatty at debug; keep them at warn unless asked.
    for noisy in ["rustls", "tiny_http", "ureq", "ureq_proto"] {
        b.filter_module(noisy, log::LevelFilter::Warn.min(level));
    }
    if let Ok(spec) = std::env::var("BERTH_LOG") {
        b.parse_filters(&spec);
    }
    b.target(env_logger::Target::Stderr);
    b.format(move |buf, rec| {
        let time = crate::util::rfc3339_millis(std::time::SystemTime::now());
        let level = rec.level().as_str().to_ascii_lowercase();
        match format {
            Format::Text => writeln!(buf, "{time} {level} {}: {}", short_target(rec.target()), rec.args()),
            Format::Json => {
                let fields = FIELDS.get().map(String::as_str).unwrap_or("");
                let msg = rec.args().to_string();
                if rec.target() == "access" && msg.starts_with('{') {
                    writeln!(buf, "{{\"time\":\"{time}\",\"level\":\"{level}\",\"msg\":\"access\"{fields},{}", &msg[1..])
                } else {
                    writeln!(
                        buf,
                        "{{\"time\":\"{time}\",\"level\":\"{level}\",\"target\":{},\"msg\":{}{fields}}}",
                        serde_json::Value::from(rec.target()),
                        serde_json::Value::from(msg)
                    )
                }
            }
        }
    });
    let _ = b.try_init();
}

fn b_is_first_init() -> bool {
    static DONE: AtomicBool = AtomicBool::new(false);
    !DONE.swap(true, Ordering::Relaxed)
}

// "berth::applets::registryd::api" reads better as "registryd".
fn short_target(t: &str) -> &str {
    let t = t.strip_prefix("berth::applets::").unwrap_or(t);
    t.split("::").next().unwrap_or(t)
}

/// Logging for command-line applets: warnings and errors only, plain text,
/// unless BERTH_LOG says otherwise.
pub fn init_cli() {
    init(log::LevelFilter::Warn, Format::Text, &[]);
}

/// Logging for a daemon with a `-D/--debug` switch: info, or debug with it.
pub fn init_daemon(debug: bool) {
    let level = if debug {
        log::LevelFilter::Debug
    } else {
        log::LevelFilter::Info
    };
    init(level, Format::Text, &[]);
}

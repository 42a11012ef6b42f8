//! `logcollect`: every container's logs kept on the host and shipped to the
//! site's syslog at the same time, nothing lost.
//!
//! The daemon (`logcollect -g GRAPH [--forward tcp://H:P]…`) follows engined's
//! containers: their json-file logs (stdout, stderr) and the files they write
//! into their log directory (`LOG_ROOT/NAME_YYYYmmddTHHMMSS/`, bound into the
//! container by engined with `--log-dir` or the label `berth.log-dir`). It keeps
//! `stdout.log` and `stderr.log` in that directory, so one directory holds
//! everything a container wrote and outlives it, and forwards every line as
//! RFC 5424 syslog to each sink through a bounded disk spool.
//!
//! Threads: the collector (`collect.rs`, one round whenever engined reports an
//! event and at least every 250 ms, so it works the same with engined down),
//! one sender per sink (`sink.rs`), and the event listener. `ls` and `tail`
//! read the local copies.

mod collect;
mod config;
mod sink;
mod spool;

use argh::FromArgs;
use berth::error::{Error, Result};
use std::io::{BufRead, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

#[derive(FromArgs)]
/// Keep every container's logs on the host and ship them to syslog.
///
/// Without a subcommand, runs the daemon. Flags and --config say the same
/// things (the file's keys are the flags' names with _); flags win.
struct Args {
    /// engined's graph root (default /var/lib/berth)
    #[argh(option, short = 'g')]
    graph: Option<PathBuf>,
    /// where the containers' log directories live (default /var/log/berth)
    #[argh(option)]
    log_root: Option<PathBuf>,
    /// a syslog sink: tcp://HOST:PORT or tls://HOST:PORT (RFC 5424, octet-counted); repeatable
    #[argh(option)]
    forward: Vec<String>,
    /// CA bundle for tls:// sinks (default: the system's)
    #[argh(option)]
    ca: Option<PathBuf>,
    /// client certificate for tls:// sinks
    #[argh(option)]
    cert: Option<PathBuf>,
    /// client key for tls:// sinks
    #[argh(option)]
    key: Option<PathBuf>,
    /// syslog APP-NAME (default berth)
    #[argh(option)]
    app_name: Option<String>,
    /// syslog facility: local0 (default) … local7, daemon, user, or a number
    #[argh(option)]
    facility: Option<String>,
    /// engined's socket, for its event stream (default unix:///run/berth/engined.sock)
    #[argh(option, short = 'H')]
    host: Option<String>,
    /// most the spool keeps while a sink is down (default 256M); past it the oldest lines go, counted
    #[argh(option)]
    spool_max: Option<String>,
    /// rotate stdout.log and stderr.log at this size (default 10M), gzipped
    #[argh(option)]
    max_file_size: Option<String>,
    /// rotated copies kept per file (default 5)
    #[argh(option)]
    max_files: Option<u32>,
    /// cap of one container's directory (default 200M): its oldest read and idle files go first
    #[argh(option)]
    max_dir_size: Option<String>,
    /// remove the directory of a container gone this many days (default 7)
    #[argh(option)]
    gone_days: Option<u64>,
    /// send a last line still without its newline after this many seconds without growth (default 5)
    #[argh(option)]
    partial_after: Option<u64>,
    /// a YAML file with the same settings
    #[argh(option)]
    config: Option<PathBuf>,
    /// more log lines
    #[argh(switch, short = 'D')]
    debug: bool,
    #[argh(subcommand)]
    cmd: Option<Cmd>,
}

#[derive(FromArgs)]
#[argh(subcommand)]
enum Cmd {
    Ls(Ls),
    Tail(Tail),
}

#[derive(FromArgs)]
#[argh(subcommand, name = "ls")]
/// The containers' log directories, their state and sizes.
struct Ls {}

#[derive(FromArgs)]
#[argh(subcommand, name = "tail")]
/// Print a container's logs from the local copy.
struct Tail {
    /// container name (its newest directory) or directory name
    #[argh(positional)]
    name: String,
    /// lines from the end (default 10)
    #[argh(option, short = 'n', default = "10")]
    lines: usize,
    /// keep printing what comes
    #[argh(switch, short = 'f')]
    follow: bool,
    /// which file: stdout.log (default), stderr.log, or one the container wrote
    #[argh(option, default = "String::from(\"stdout.log\")")]
    file: String,
}

pub fn main(name: &str, args: &[String]) -> Result<u8> {
    let a: Args = match crate::applets::parse_args(name, args) {
        Ok(a) => a,
        Err(code) => return Ok(code),
    };
    berth::log::init_daemon(a.debug);
    let flags = config::Flags {
        graph: a.graph.clone(),
        log_root: a.log_root.clone(),
        engine: a.host.clone(),
        app_name: a.app_name.clone(),
        facility: a.facility.clone(),
        forward: a.forward.clone(),
        ca: a.ca.clone(),
        cert: a.cert.clone(),
        key: a.key.clone(),
        spool_max: a.spool_max.clone(),
        max_file_size: a.max_file_size.clone(),
        max_files: a.max_files,
        max_dir_size: a.max_dir_size.clone(),
        gone_days: a.gone_days,
        partial_after: a.partial_after,
    };
    let s = config::resolve(a.config.as_deref(), &flags)?;
    match a.cmd {
        None => daemon(s),
        Some(Cmd::Ls(_)) => ls(&s),
        Some(Cmd::Tail(t)) => tail(&s, &t),
    }
}

fn daemon(s: config::Settings) -> Result<u8> {
    std::fs::create_dir_all(&s.log_root)
        .map_err(|e| Error::from(e).context(format!("create {}", s.log_root.display())))?;
    let dir = collect::state_dir(&s);
    std::fs::create_dir_all(&dir)?;
    let Some(_lock) = berth::fsutil::flock(&dir.join("lock"), true, false)? else {
        return Err(Error::new(
            berth::error::Kind::Conflict,
            format!(
                "another logcollect keeps {}: stop it first",
                s.log_root.display()
            ),
        ));
    };
    let mut c = collect::Collector::open(s.clone())?;
    let bell = Arc::new(sink::Bell::default());
    let stop = Arc::new(AtomicBool::new(false));
    let wake = Arc::new(sink::Bell::default());
    let mut pos_files = Vec::new();
    for (i, k) in s.sinks.iter().enumerate() {
        let pos = dir.join(format!("sink-{i}.pos"));
        // a sink list that changed order must not reuse another sink's position
        let named = dir.join(format!("sink-{i}.url"));
        if std::fs::read_to_string(&named).ok().as_deref() != Some(k.url.as_str()) {
            let _ = std::fs::remove_file(&pos);
            berth::fsutil::atomic_write(&named, k.url.as_bytes())?;
        }
        pos_files.push(pos.clone());
        let (k, spool_dir, bell, stop) = (k.clone(), dir.join("spool"), bell.clone(), stop.clone());
        let committed = c.committed.clone();
        std::thread::Builder::new()
            .name("sink".into())
            .stack_size(256 << 10)
            .spawn(move || sink::run(k, spool_dir, pos, bell, committed, stop))
            .map_err(|e| Error::internal(format!("start a sender: {e}")))?;
    }
    {
        let (engine, wake) = (s.engine.clone(), wake.clone());
        let _ = std::thread::Builder::new()
            .name("events".into())
            .stack_size(128 << 10)
            .spawn(move || events(&engine, &wake));
    }
    {
        let stop = stop.clone();
        let wake = wake.clone();
        let _ = std::thread::Builder::new()
            .name("signals".into())
            .stack_size(64 << 10)
            .spawn(move || {
                use berth::proc::sig;
                let set = sig::bit(libc::SIGTERM) | sig::bit(libc::SIGINT);
                let _ = sig::wait(set, None);
                stop.store(true, Ordering::Relaxed);
                wake.ring();
            });
        berth::proc::sig::block(
            berth::proc::sig::bit(libc::SIGTERM) | berth::proc::sig::bit(libc::SIGINT),
        );
    }
    log::info!(
        "logcollect: graph {}, logs in {}, {} sink(s){}",
        s.graph.display(),
        s.log_root.display(),
        s.sinks.len(),
        s.sinks
            .iter()
            .map(|k| format!(" {}", k.url))
            .collect::<String>()
    );
    let mut seen = 0;
    let mut rounds: u64 = 0;
    while !stop.load(Ordering::Relaxed) {
        let busy = match c.round() {
            Ok(true) => {
                bell.ring();
                true
            }
            Ok(false) => false,
            Err(e) => {
                log::warn!("{e}");
                false
            }
        };
        rounds += 1;
        if rounds == 20 {
            // the start-up code's pages are not needed again (as engined's shim)
            berth::proc::trim_image_pages();
        }
        if rounds.is_multiple_of(40) && !pos_files.is_empty() {
            let oldest = pos_files
                .iter()
                .map(|p| spool::load_pos(p).map(|x| x.seq).unwrap_or(0))
                .min()
                .unwrap_or(0);
            c.collect_spool(oldest);
        }
        // more may be waiting when a round read something
        if !busy {
            seen = wake.wait_for(seen, Duration::from_millis(250));
        }
    }
    log::info!("logcollect stopping");
    Ok(0)
}

/// engined's event stream: each event wakes the collector, so a short-lived
/// container's log is opened before its removal takes the file. When engined
/// is down, the collector's own 250 ms rounds carry on.
fn events(sock: &Path, wake: &sink::Bell) {
    loop {
        if let Ok(mut s) = std::os::unix::net::UnixStream::connect(sock) {
            let req = "GET /v1.41/events?filters=%7B%22type%22%3A%5B%22container%22%5D%7D HTTP/1.1\r\nHost: engine\r\n\r\n";
            if s.write_all(req.as_bytes()).is_ok() {
                let mut buf = [0u8; 4096];
                while let Ok(n) = s.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    wake.ring();
                }
            }
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

fn ls(s: &config::Settings) -> Result<u8> {
    let state: collect::State = std::fs::read(collect::state_dir(s).join("state.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&s.log_root)
        .map_err(|e| Error::from(e).context(format!("read {}", s.log_root.display())))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.is_dir()
                && !p
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        })
        .collect();
    dirs.sort();
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "{:<20} {:<12} {:<9} {:>10}  DIRECTORY",
        "CONTAINER", "ID", "STATE", "SIZE"
    );
    for d in dirs {
        let found = state.containers.iter().find(|(_, c)| c.dir == d);
        let (name, id, st) = match found {
            Some((id, c)) => {
                let running =
                    std::fs::read_to_string(s.graph.join("containers").join(id).join("state.json"))
                        .ok()
                        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
                        .and_then(|v| v["status"].as_str().map(str::to_string))
                        .unwrap_or_else(|| "?".into());
                (c.name.clone(), id[..12.min(id.len())].to_string(), running)
            }
            None => {
                let n = d
                    .file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned();
                let name = n.rsplit_once('_').map(|x| x.0.to_string()).unwrap_or(n);
                (name, "-".into(), "gone".into())
            }
        };
        let _ = writeln!(
            out,
            "{name:<20} {id:<12} {st:<9} {:>10}  {}",
            berth::fsutil::tree_bytes(&d),
            d.display()
        );
    }
    Ok(0)
}

fn find_dir(s: &config::Settings, name: &str) -> Result<PathBuf> {
    let direct = s.log_root.join(name);
    if direct.is_dir() {
        return Ok(direct);
    }
    let prefix = format!("{name}_");
    let mut found: Vec<PathBuf> = std::fs::read_dir(&s.log_root)
        .map_err(|e| Error::from(e).context(format!("read {}", s.log_root.display())))?
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .map(|e| e.path())
        .collect();
    found.sort();
    found.pop().ok_or_else(|| {
        Error::not_found(format!(
            "no log directory for {name} in {} (logcollect ls lists them)",
            s.log_root.display()
        ))
    })
}

fn tail(s: &config::Settings, t: &Tail) -> Result<u8> {
    let dir = find_dir(s, &t.name)?;
    let path = berth::fsutil::confined::Root::new(&dir).resolve(Path::new(&t.file), true)?;
    let mut f = std::fs::File::open(&path)
        .map_err(|e| Error::from(e).context(format!("open {}", path.display())))?;
    // the last N lines: read back from the end in blocks
    let len = f.metadata()?.len();
    let mut start = len;
    let mut newlines = 0;
    let mut block = vec![0u8; 64 << 10];
    while start > 0 && newlines <= t.lines {
        let n = (start as usize).min(block.len());
        start -= n as u64;
        f.seek(SeekFrom::Start(start))?;
        f.read_exact(&mut block[..n])?;
        newlines += block[..n].iter().filter(|b| **b == b'\n').count();
    }
    f.seek(SeekFrom::Start(start))?;
    let mut all = Vec::new();
    f.read_to_end(&mut all)?;
    // just rotated: the rest of the N lines are in the gzipped copies
    let mut older: Vec<Vec<u8>> = Vec::new();
    let mut have = all.split_inclusive(|b| *b == b'\n').count();
    let mut i = 1;
    while have < t.lines {
        let gz = dir.join(format!("{}.{i}.gz", t.file));
        let Ok(f) = std::fs::File::open(&gz) else {
            break;
        };
        let mut text = Vec::new();
        flate2::read::GzDecoder::new(f)
            .read_to_end(&mut text)
            .map_err(|e| Error::from(e).context(format!("read {}", gz.display())))?;
        have += text.split_inclusive(|b| *b == b'\n').count();
        older.push(text);
        i += 1;
    }
    let mut lines: Vec<&[u8]> = Vec::new();
    for o in older.iter().rev() {
        lines.extend(o.split_inclusive(|b| *b == b'\n'));
    }
    lines.extend(all.split_inclusive(|b| *b == b'\n'));
    let skip = lines.len().saturating_sub(t.lines);
    let mut out = std::io::stdout().lock();
    for l in &lines[skip..] {
        if out.write_all(l).is_err() {
            return Ok(0);
        }
    }
    let _ = out.flush();
    if !t.follow {
        return Ok(0);
    }
    let mut pos = len;
    let mut r = std::io::BufReader::new(f);
    loop {
        // rotated or truncated: start over on what is there now
        let now = std::fs::metadata(&path).ok();
        use std::os::unix::fs::MetadataExt;
        let cur = r.get_ref().metadata()?;
        if now
            .as_ref()
            .is_some_and(|m| m.ino() != cur.ino() || m.len() < pos)
        {
            if now.as_ref().is_some_and(|m| m.ino() == cur.ino()) {
                pos = 0;
                r.seek(SeekFrom::Start(0))?;
            } else {
                // drain the old file, then the new one from its start
                let mut rest = Vec::new();
                r.read_to_end(&mut rest)?;
                if out.write_all(&rest).is_err() {
                    return Ok(0);
                }
                r = std::io::BufReader::new(std::fs::File::open(&path)?);
                pos = 0;
            }
        }
        let mut line = Vec::new();
        let n = r.read_until(b'\n', &mut line)?;
        if n == 0 {
            std::thread::sleep(Duration::from_millis(200));
            continue;
        }
        pos += n as u64;
        if out.write_all(&line).and_then(|_| out.flush()).is_err() {
            return Ok(0);
        }
    }
}

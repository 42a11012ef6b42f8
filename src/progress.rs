//! Progress of pulls and pushes, told in Docker's words to one of two sinks.
//!
//! `registry::transfer` reports every step the way dockerd names it (`Pulling fs
//! layer`, `Downloading` with byte counts, `Pull complete`, `Pushed`, …); each sink
//! decides what to show:
//!
//! - [`Terminal`] is what the client applets print on stderr (stdout stays for
//!   results): per-item bars with rate on a terminal (indicatif), otherwise one line
//!   per finished item, so output stays readable in logs, CI and Ansible.
//! - [`DockerJson`] writes the JSON messages dockerd streams from `POST
//!   /images/create` and `/images/{name}/push`, one per line, flushed each, which the
//!   docker CLI renders: per-item messages carry `id` and `progressDetail` (the CLI
//!   keeps one line per id for those), byte counts are sent at most every 100 ms per
//!   item plus the last, and a failure is an `errorDetail` message.

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Where a transfer reports. Items are named by `id` (a layer's short digest);
/// statuses are docker's strings.
pub trait Progress: Send + Sync {
    /// A message of its own; with an id docker shows `id: text`
    /// (`latest: Pulling from site/sl6`).
    fn line(&self, id: Option<&str>, text: &str);
    /// An item's state without byte counts: `Pulling fs layer`, `Preparing`,
    /// `Waiting`, `Verifying Checksum`, `Download complete`.
    fn state(&self, id: &str, status: &str);
    /// Bytes moved for an item under `action` (`Downloading`, `Pushing`,
    /// `Extracting`): `current` of `total` (0 when unknown).
    fn moved(&self, id: &str, action: &str, current: u64, total: u64);
    /// An item's last word: `Pull complete`, `Already exists`, `Pushed`,
    /// `Layer already exists`, `Mounted from REPO`, `Failed`.
    fn done(&self, id: &str, status: &str);
    /// The operation failed; `message` is the error's one line.
    fn error(&self, message: &str);
}

/// A sink that shows nothing (a blob docker does not show, such as an image's config).
pub struct Silent;

impl Progress for Silent {
    fn line(&self, _: Option<&str>, _: &str) {}
    fn state(&self, _: &str, _: &str) {}
    fn moved(&self, _: &str, _: &str, _: u64, _: u64) {}
    fn done(&self, _: &str, _: &str) {}
    fn error(&self, _: &str) {}
}

/// One item's transfer: counts the bytes and reports the running total.
pub struct Task<'a> {
    sink: &'a dyn Progress,
    id: String,
    action: String,
    total: u64,
    moved: AtomicU64,
}

impl<'a> Task<'a> {
    /// `total` bytes (0 if unknown) of item `id` about to move under `action`.
    pub fn new(sink: &'a dyn Progress, id: &str, action: &str, total: u64) -> Task<'a> {
        Task {
            sink,
            id: id.to_string(),
            action: action.to_string(),
            total,
            moved: AtomicU64::new(0),
        }
    }

    pub fn inc(&self, n: u64) {
        if n == 0 {
            return;
        }
        let current = self.moved.fetch_add(n, Ordering::Relaxed) + n;
        self.sink.moved(&self.id, &self.action, current, self.total);
    }

    /// Bytes moved so far.
    pub fn moved(&self) -> u64 {
        self.moved.load(Ordering::Relaxed)
    }
}

/// A reader that reports what passes through to a task.
pub struct Counted<'a, R> {
    pub inner: R,
    pub task: &'a Task<'a>,
}

impl<R: std::io::Read> std::io::Read for Counted<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.task.inc(n as u64);
        Ok(n)
    }
}

/// The client applets' output on stderr: bars on a terminal, else a line per
/// finished item. Only transfers and outcomes are shown; intermediate states are
/// docker's business.
pub struct Terminal {
    multi: Option<MultiProgress>,
    quiet: bool,
    items: Mutex<HashMap<String, Item>>,
}

struct Item {
    bar: Option<ProgressBar>,
    moved: u64,
    started: Instant,
}

impl Terminal {
    /// Bars when stderr is a terminal (and `BERTH_NO_PROGRESS` is unset) and `quiet`
    /// is off; nothing at all when `quiet`.
    pub fn new(quiet: bool) -> Terminal {
        let tty =
            std::io::stderr().is_terminal() && std::env::var_os("BERTH_NO_PROGRESS").is_none();
        let multi = (!quiet && tty)
            .then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(8)));
        Terminal {
            multi,
            quiet,
            items: Mutex::new(HashMap::new()),
        }
    }

    fn bar(&self, m: &MultiProgress, id: &str, action: &str, total: u64) -> ProgressBar {
        let b = m.add(ProgressBar::new(total));
        let style = ProgressStyle::with_template(
            "{prefix}: {msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
        b.set_style(style);
        b.set_prefix(id.to_string());
        b.set_message(action.to_string());
        b
    }
}

impl Progress for Terminal {
    fn line(&self, id: Option<&str>, text: &str) {
        if self.quiet {
            return;
        }
        let s = match id {
            Some(id) => format!("{id}: {text}"),
            None => text.to_string(),
        };
        match &self.multi {
            Some(m) => {
                let _ = m.println(s);
            }
            None => eprintln!("{s}"),
        }
    }

    fn state(&self, _: &str, _: &str) {}

    fn moved(&self, id: &str, action: &str, current: u64, total: u64) {
        if self.quiet {
            return;
        }
        let mut items = self.items.lock().unwrap_or_else(|e| e.into_inner());
        let item = items.entry(id.to_string()).or_insert_with(|| Item {
            bar: self.multi.as_ref().map(|m| self.bar(m, id, action, total)),
            moved: 0,
            started: Instant::now(),
        });
        item.moved = current;
        if let Some(b) = &item.bar {
            b.set_position(current);
        }
    }

    fn done(&self, id: &str, status: &str) {
        if self.quiet {
            return;
        }
        let item = self
            .items
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
        let (bar, moved, started) = match item {
            Some(i) => (i.bar, i.moved, Some(i.started)),
            None => (None, 0, None),
        };
        if let Some(m) = &self.multi {
            let b = bar.unwrap_or_else(|| self.bar(m, id, "", 0));
            b.set_style(
                ProgressStyle::with_template("{prefix}: {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            b.finish_with_message(status.to_string());
            return;
        }
        // Bytes and rate only for what was really transferred.
        let secs = started.map_or(0.0, |s| s.elapsed().as_secs_f64());
        if moved > 0 && secs > 0.0 {
            eprintln!(
                "{id}: {status} ({}, {}/s)",
                crate::util::human_size(moved),
                crate::util::human_size((moved as f64 / secs) as u64)
            );
        } else {
            eprintln!("{id}: {status}");
        }
    }

    /// Nothing: the applet prints its error as its one last line.
    fn error(&self, _: &str) {}
}

/// Docker's JSON progress messages, one per line, for the Engine API.
pub struct DockerJson<W: Write + Send> {
    out: Mutex<W>,
    /// Per item: when byte counts were last sent, and counts held back since.
    rates: Mutex<HashMap<String, Rate>>,
    interval: Duration,
}

struct Rate {
    sent: Instant,
    held: Option<(String, u64, u64)>,
}

#[derive(serde::Serialize)]
struct Message<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<&'a str>,
    #[serde(rename = "progressDetail", skip_serializing_if = "Option::is_none")]
    progress_detail: Option<Detail>,
    #[serde(skip_serializing_if = "String::is_empty")]
    progress: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    #[serde(rename = "errorDetail", skip_serializing_if = "Option::is_none")]
    error_detail: Option<ErrorDetail<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
}

#[derive(serde::Serialize, Default)]
struct Detail {
    #[serde(skip_serializing_if = "is_zero")]
    current: u64,
    #[serde(skip_serializing_if = "is_zero")]
    total: u64,
}

#[derive(serde::Serialize)]
struct ErrorDetail<'a> {
    message: &'a str,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl<'a> Message<'a> {
    fn status(status: &'a str, id: Option<&'a str>) -> Message<'a> {
        Message {
            status: Some(status),
            progress_detail: None,
            progress: String::new(),
            id,
            error_detail: None,
            error: None,
        }
    }
}

/// The bar dockerd puts in `progress` (moby's `JSONProgress.String` at its default
/// width of 200): `[=====>     ]  1.024kB/8.192kB`. Old clients print it as is.
fn progress_bar(current: u64, total: u64) -> String {
    use crate::util::human_size;
    if total == 0 {
        return if current == 0 {
            String::new()
        } else {
            format!("{:>8}", human_size(current))
        };
    }
    let filled = ((current as f64 / total as f64 * 100.0) as usize / 2).min(50);
    let counts = if current > total {
        format!("{:>8}", human_size(current))
    } else {
        format!("{:>8}/{}", human_size(current), human_size(total))
    };
    format!(
        "[{}>{}] {counts}",
        "=".repeat(filled),
        " ".repeat(50 - filled)
    )
}

impl<W: Write + Send> DockerJson<W> {
    /// Byte counts at most every 100 ms per item, as dockerd sends them.
    pub fn new(out: W) -> DockerJson<W> {
        DockerJson::with_interval(out, Duration::from_millis(100))
    }

    /// Byte counts at most every `interval` per item (plus each item's last).
    pub fn with_interval(out: W, interval: Duration) -> DockerJson<W> {
        DockerJson {
            out: Mutex::new(out),
            rates: Mutex::new(HashMap::new()),
            interval,
        }
    }

    /// The writer back (for a test, or to end a chunked body).
    pub fn into_inner(self) -> W {
        self.out.into_inner().unwrap_or_else(|e| e.into_inner())
    }

    /// One message as a line. A client that went away is not the transfer's
    /// problem: write errors are dropped and the pull or push goes on.
    fn send(&self, m: &Message) {
        let Ok(mut line) = serde_json::to_vec(m) else {
            return;
        };
        line.push(b'\n');
        let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        let _ = out.write_all(&line).and_then(|()| out.flush());
    }

    fn send_moved(&self, id: &str, action: &str, current: u64, total: u64) {
        self.send(&Message {
            progress_detail: Some(Detail { current, total }),
            progress: progress_bar(current, total),
            ..Message::status(action, Some(id))
        });
    }

    /// Counts held back for `id` go out before its next state, so the last count is
    /// never lost.
    fn item_status(&self, id: &str, status: &str, last: bool) {
        let mut rates = self.rates.lock().unwrap_or_else(|e| e.into_inner());
        let held = if last {
            rates.remove(id).and_then(|r| r.held)
        } else {
            rates.get_mut(id).and_then(|r| r.held.take())
        };
        if let Some((action, current, total)) = held {
            self.send_moved(id, &action, current, total);
        }
        self.send(&Message {
            progress_detail: Some(Detail::default()),
            ..Message::status(status, Some(id))
        });
    }
}

impl<W: Write + Send> Progress for DockerJson<W> {
    fn line(&self, id: Option<&str>, text: &str) {
        self.send(&Message::status(text, id));
    }

    fn state(&self, id: &str, status: &str) {
        self.item_status(id, status, false);
    }

    fn moved(&self, id: &str, action: &str, current: u64, total: u64) {
        let now = Instant::now();
        let mut rates = self.rates.lock().unwrap_or_else(|e| e.into_inner());
        let due = match rates.get(id) {
            None => true,
            Some(r) => current == total || now.duration_since(r.sent) >= self.interval,
        };
        if due {
            rates.insert(
                id.to_string(),
                Rate {
                    sent: now,
                    held: None,
                },
            );
            self.send_moved(id, action, current, total);
        } else if let Some(r) = rates.get_mut(id) {
            r.held = Some((action.to_string(), current, total));
        }
    }

    fn done(&self, id: &str, status: &str) {
        self.item_status(id, status, true);
    }

    fn error(&self, message: &str) {
        self.send(&Message {
            status: None,
            error_detail: Some(ErrorDetail { message }),
            error: Some(message),
            ..Message::status("", None)
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn messages(sink: DockerJson<Vec<u8>>) -> Vec<Value> {
        let out = String::from_utf8(sink.into_inner()).unwrap();
        assert!(out.ends_with('\n'));
        out.lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn json_sink_speaks_dockerds_pull() {
        // An interval no test run reaches: what is sent does not depend on timing.
        let sink = DockerJson::with_interval(Vec::new(), Duration::from_secs(3600));
        let p: &dyn Progress = &sink;
        // The calls transfer::pull makes for one layer present and one downloaded.
        p.line(Some("latest"), "Pulling from site/sl6");
        p.done("a3ed95caeb02", "Already exists");
        p.state("2d4dc4e96366", "Pulling fs layer");
        let task = Task::new(p, "2d4dc4e96366", "Downloading", 8192);
        let mut r = Counted {
            inner: &[0u8; 8192][..],
            task: &task,
        };
        let mut chunk = [0u8; 1024];
        while std::io::Read::read(&mut r, &mut chunk).unwrap() > 0 {}
        assert_eq!(task.moved(), 8192);
        p.state("2d4dc4e96366", "Verifying Checksum");
        p.state("2d4dc4e96366", "Download complete");
        p.done("2d4dc4e96366", "Pull complete");
        p.line(None, "Digest: sha256:abc");
        p.line(
            None,
            "Status: Downloaded newer image for host:5000/site/sl6:latest",
        );
        let m = messages(sink);
        let id = "2d4dc4e96366";
        let empty = json!({});
        assert_eq!(
            m[0],
            json!({"status": "Pulling from site/sl6", "id": "latest"})
        );
        assert_eq!(
            m[1],
            json!({"status": "Already exists", "progressDetail": {}, "id": "a3ed95caeb02"})
        );
        assert_eq!(
            m[2],
            json!({"status": "Pulling fs layer", "progressDetail": {}, "id": id})
        );
        // Eight reads within the interval: the first count and the last only.
        assert_eq!(
            m[3],
            json!({
                "status": "Downloading",
                "progressDetail": {"current": 1024, "total": 8192},
                "progress": format!("[======>{}]  1.024kB/8.192kB", " ".repeat(44)),
                "id": id
            })
        );
        assert_eq!(m[4]["status"], "Downloading");
        assert_eq!(
            m[4]["progressDetail"],
            json!({"current": 8192, "total": 8192})
        );
        assert_eq!(
            m[4]["progress"],
            format!("[{}>]  8.192kB/8.192kB", "=".repeat(50))
        );
        let tail: Vec<(&str, &Value)> = m[5..8]
            .iter()
            .map(|v| (v["status"].as_str().unwrap(), &v["progressDetail"]))
            .collect();
        assert_eq!(
            tail,
            [
                ("Verifying Checksum", &empty),
                ("Download complete", &empty),
                ("Pull complete", &empty)
            ]
        );
        assert!(m[5..8].iter().all(|v| v["id"] == id));
        assert_eq!(m[8], json!({"status": "Digest: sha256:abc"}));
        assert_eq!(
            m[9],
            json!({"status": "Status: Downloaded newer image for host:5000/site/sl6:latest"})
        );
        assert_eq!(m.len(), 10);
    }

    #[test]
    fn json_sink_speaks_dockerds_push_and_errors() {
        let sink = DockerJson::with_interval(Vec::new(), Duration::from_secs(3600));
        let p: &dyn Progress = &sink;
        p.line(None, "The push refers to repository [host:5000/site/sl6]");
        p.state("5f70bf18a086", "Preparing");
        p.state("d7a2a3f8b3c1", "Preparing");
        p.done("5f70bf18a086", "Layer already exists");
        // Counts held back by the rate limit go out before the item's next word.
        p.moved("d7a2a3f8b3c1", "Pushing", 100, 0);
        p.moved("d7a2a3f8b3c1", "Pushing", 2_500_000, 0);
        p.done("d7a2a3f8b3c1", "Pushed");
        p.line(
            None,
            "latest: digest: sha256:0d3e9513b60c064c29889b51b9b3ca7d359536a74f4fc4273a9ecf302e9aa016 size: 427",
        );
        p.error("blob upload unknown to registry");
        let m = messages(sink);
        assert_eq!(
            m[0],
            json!({"status": "The push refers to repository [host:5000/site/sl6]"})
        );
        assert_eq!(
            m[1],
            json!({"status": "Preparing", "progressDetail": {}, "id": "5f70bf18a086"})
        );
        assert_eq!(m[3]["status"], "Layer already exists");
        // An unknown total: a count without a bar, as dockerd prints it.
        assert_eq!(
            m[4],
            json!({"status": "Pushing", "progressDetail": {"current": 100}, "progress": "    100B", "id": "d7a2a3f8b3c1"})
        );
        assert_eq!(
            m[5],
            json!({"status": "Pushing", "progressDetail": {"current": 2_500_000}, "progress": "   2.5MB", "id": "d7a2a3f8b3c1"})
        );
        assert_eq!(
            m[6],
            json!({"status": "Pushed", "progressDetail": {}, "id": "d7a2a3f8b3c1"})
        );
        assert!(
            m[7]["status"]
                .as_str()
                .unwrap()
                .starts_with("latest: digest: sha256:")
        );
        assert_eq!(
            m[8],
            json!({"errorDetail": {"message": "blob upload unknown to registry"}, "error": "blob upload unknown to registry"})
        );
        assert_eq!(m.len(), 9);
    }

    #[test]
    fn with_no_interval_every_count_is_sent() {
        let sink = DockerJson::with_interval(Vec::new(), Duration::ZERO);
        for n in 1..=5 {
            sink.moved("x", "Extracting", n * 10, 100);
        }
        sink.done("x", "Pull complete");
        let counts: Vec<Value> = messages(sink)
            .iter()
            .map(|m| m["progressDetail"]["current"].clone())
            .collect();
        assert_eq!(
            counts,
            [
                json!(10),
                json!(20),
                json!(30),
                json!(40),
                json!(50),
                Value::Null
            ]
        );
    }

    #[test]
    fn json_lines_keep_dockers_field_order() {
        // jsonmessage's field order, for clients that compare text.
        let sink = DockerJson::new(Vec::new());
        sink.moved("2d4dc4e96366", "Downloading", 1024, 8192);
        sink.error("boom");
        let out = String::from_utf8(sink.into_inner()).unwrap();
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(
            lines[0],
            format!(
                "{{\"status\":\"Downloading\",\"progressDetail\":{{\"current\":1024,\"total\":8192}},\"progress\":\"[======>{}]  1.024kB/8.192kB\",\"id\":\"2d4dc4e96366\"}}",
                " ".repeat(44)
            )
        );
        assert_eq!(
            lines[1],
            "{\"errorDetail\":{\"message\":\"boom\"},\"error\":\"boom\"}"
        );
    }

    #[test]
    fn progress_bars_read_like_moby() {
        assert_eq!(progress_bar(0, 0), "");
        assert_eq!(
            progress_bar(0, 10),
            format!("[>{}]       0B/10B", " ".repeat(50))
        );
        assert_eq!(progress_bar(1_445_000, 0), " 1.445MB");
        // A count past the total drops the total.
        assert_eq!(
            progress_bar(20, 10),
            format!("[{}>]      20B", "=".repeat(50))
        );
    }
}

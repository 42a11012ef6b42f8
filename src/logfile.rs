//! Docker's json-file log driver, and Docker's stream framing.
//!
//! The engine's shim writes each container's stdout and stderr here; `docker logs`
//! (through the engine), logcollect and any log shipper that knows Docker's files
//! read them back. So the files are byte for byte what dockerd writes: one JSON
//! object per line, `{"log":"hello\n","stream":"stdout","time":"2026-12-01T16:34:49.831920668Z"}`,
//! with Go's escaping (`<`, `>`, `&` and control bytes as `\u00XX`, every byte that is
//! not UTF-8 as `\ufffd`), lines longer than 16 KiB cut into several entries that
//! share the first one's time (only the last carries the `\n`), and rotation the way
//! Docker rotates: when the file has reached `max-size`, the next entry first moves
//! `path` to `path.1`, `path.1` to `path.2`, … keeping `max-file - 1` old files
//! (`max-file=1` truncates in place).
//!
//! One addition: an entry whose bytes are not UTF-8 also carries them, base64,
//! in `"attrs":{"berth.raw":"…"}` — where dockerd writes `--log-opt labels`, so
//! Docker's readers and any shipper see the usual `\ufffd` text and one more
//! attribute, while berth's reader (`docker logs` through engined, logcollect)
//! gives back the bytes the container wrote. Not lone surrogates (`\udcXX`,
//! PEP 383's way): strict JSON readers, serde_json among them, reject a line
//! holding one, and I-JSON forbids them.
//!
//! The writer never leaves half an entry followed by another: each entry is one
//! `write_all` on an `O_APPEND` file, and a line torn by a crash or a full disk is
//! ended before the next entry, so a reader loses only the torn one. No fsync: the
//! shim writes every chunk, and a log is not a record.
//!
//! The reader walks the rotated files oldest first, can start `tail` entries from
//! the end, filters by time and stream, and with `follow` waits for more, following
//! the file across rotation (by inode: the old file is read to its end first) and
//! truncation; it ends when the caller's stop condition says so, after draining what
//! was written before.
//!
//! [`frame`] and [`Demux`] are Docker's "stdcopy" framing, which the Engine API uses
//! for the output of non-TTY containers: an 8-byte header (stream, three zero bytes,
//! big-endian length) before each payload.

use crate::error::{Context, Error, Kind, Result};
use crate::util::{parse_rfc3339_time, parse_size, rfc3339_nano};
use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// Docker's copier reads into a 16 KiB buffer: a longer line becomes several entries.
pub const MAX_LINE: usize = 16 * 1024;
/// The attribute holding, base64, the bytes of an entry that is not UTF-8.
const RAW_ATTR: &str = "berth.raw";

/// A line longer than this in a file is not ours (an entry is at most ~100 KiB even
/// with every byte escaped): the reader skips it instead of buffering it.
const MAX_ENTRY: usize = 1 << 20;

/// How often a following reader looks for more.
const POLL: Duration = Duration::from_millis(150);

/// Which output of the container an entry came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    /// `stdout` or `stderr`, as the file says.
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }

    pub fn from_name(s: &str) -> Option<Stream> {
        match s {
            "stdout" => Some(Stream::Stdout),
            "stderr" => Some(Stream::Stderr),
            _ => None,
        }
    }

    /// The stream byte of Docker's framing ([`STDOUT`] or [`STDERR`]).
    pub fn frame_byte(self) -> u8 {
        match self {
            Stream::Stdout => STDOUT,
            Stream::Stderr => STDERR,
        }
    }

    fn index(self) -> usize {
        match self {
            Stream::Stdout => 0,
            Stream::Stderr => 1,
        }
    }
}

/// When to rotate: Docker's `max-size` and `max-file`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rotation {
    /// Rotate once the file has reached this many bytes.
    pub max_size: u64,
    /// Files kept, the live one included (1: truncate in place).
    pub max_file: u32,
}

impl Default for Rotation {
    /// Rotation is on by default (Docker's is off, and a chatty grid job then fills
    /// the node's disk): 10m and 3 files, the values sites usually set.
    fn default() -> Self {
        Rotation {
            max_size: 10 << 20,
            max_file: 3,
        }
    }
}

impl Rotation {
    /// The defaults with the json-file driver's `--log-opt KEY=VALUE` pairs applied.
    /// Sizes are `10m`, `1g` or plain bytes, in binary multiples as everywhere in
    /// berth (Docker reads `10m` as 10 MB here; it only moves the rotation point).
    /// The options Docker accepts that only add attributes (`labels`, `env`, `tag`,
    /// …) are accepted and have no effect: berth's only `attrs` is `berth.raw`.
    pub fn from_opts<K: AsRef<str>, V: AsRef<str>>(
        opts: impl IntoIterator<Item = (K, V)>,
    ) -> Result<Rotation> {
        let mut r = Rotation::default();
        for (k, v) in opts {
            let (k, v) = (k.as_ref(), v.as_ref());
            match k {
                "max-size" => {
                    r.max_size = parse_size(v).filter(|n| *n > 0).ok_or_else(|| {
                        Error::invalid(format!(
                            "log-opt max-size={v:?}: use a positive size such as 10m, 1g or a number of bytes"
                        ))
                    })?;
                }
                "max-file" => {
                    r.max_file = v.trim().parse().ok().filter(|n| *n >= 1).ok_or_else(|| {
                        Error::invalid(format!(
                            "log-opt max-file={v:?}: use a whole number of files, at least 1"
                        ))
                    })?;
                }
                "compress" => match v {
                    "false" | "0" => {}
                    "true" | "1" => {
                        return Err(Error::new(
                            Kind::Unsupported,
                            "log-opt compress=true: berth keeps rotated logs uncompressed; drop the option",
                        ));
                    }
                    _ => {
                        return Err(Error::invalid(format!(
                            "log-opt compress={v:?}: use true or false"
                        )));
                    }
                },
                "labels" | "labels-regex" | "env" | "env-regex" | "tag" => {}
                _ => {
                    return Err(Error::invalid(format!(
                        "unknown log opt '{k}' for json-file log driver"
                    )));
                }
            }
        }
        Ok(r)
    }
}

/// `path.N`, the N-th rotated file.
fn rotated(path: &Path, n: u32) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

fn open_append(path: &Path) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .mode(0o640)
        .open(path)
        .with_context(|| format!("opening log {}", path.display()))
}

/// A line of one stream not yet written.
#[derive(Default)]
struct Partial {
    bytes: Vec<u8>,
    /// When its bytes last arrived (the time of an entry flushed without its end).
    last: Option<SystemTime>,
    /// The time of its first piece, once a 16 KiB piece of it has been written:
    /// every piece of one line carries it, as Docker's do.
    first: Option<SystemTime>,
}

/// Appends a container's output to its json-file log.
pub struct Writer {
    path: PathBuf,
    file: File,
    size: u64,
    rotation: Rotation,
    partial: [Partial; 2],
    /// The file ends inside an entry (a crash or a failed write): end that line first.
    torn: bool,
    buf: Vec<u8>,
}

impl Writer {
    /// Open (or create, mode 0640) the live file at `path` for appending.
    pub fn open(path: &Path, rotation: Rotation) -> Result<Writer> {
        if rotation.max_file == 0 || rotation.max_size == 0 {
            return Err(Error::invalid(
                "log rotation needs max-size above 0 and max-file of at least 1",
            ));
        }
        let file = open_append(path)?;
        let size = file
            .metadata()
            .with_context(|| format!("reading log {}", path.display()))?
            .len();
        let mut last = [0u8];
        let torn = size > 0
            && file
                .read_exact_at(&mut last, size - 1)
                .map(|()| last[0] != b'\n')
                .with_context(|| format!("reading log {}", path.display()))?;
        Ok(Writer {
            path: path.to_path_buf(),
            file,
            size,
            rotation,
            partial: Default::default(),
            torn,
            buf: Vec::new(),
        })
    }

    /// The live file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Log `bytes` that `stream` produced at `time`. Bytes come as a pipe or pty
    /// gives them: a line may span calls (the unfinished end waits for the next call
    /// or [`Writer::flush_partial`]). Every complete line is written even when one
    /// fails; the first error is returned.
    pub fn write(&mut self, stream: Stream, mut bytes: &[u8], time: SystemTime) -> Result<()> {
        let i = stream.index();
        let mut first_err = None;
        while !bytes.is_empty() {
            let room = MAX_LINE - self.partial[i].bytes.len();
            let window = &bytes[..bytes.len().min(room)];
            let (take, entry_time) = match window.iter().position(|&b| b == b'\n') {
                Some(n) => {
                    let p = &mut self.partial[i];
                    (n + 1, Some(p.first.take().unwrap_or(time)))
                }
                // A full buffer without a newline: Docker logs it as a piece of its own.
                None if window.len() == room => {
                    (room, Some(*self.partial[i].first.get_or_insert(time)))
                }
                None => (window.len(), None),
            };
            self.partial[i].bytes.extend_from_slice(&bytes[..take]);
            self.partial[i].last = Some(time);
            bytes = &bytes[take..];
            if let Some(t) = entry_time {
                let line = std::mem::take(&mut self.partial[i].bytes);
                if let Err(e) = self.entry(stream, &line, t) {
                    first_err.get_or_insert(e);
                }
                // Keep the buffer's allocation for the next line.
                self.partial[i].bytes = line;
                self.partial[i].bytes.clear();
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// Write what is left of unfinished lines as entries without a newline, as
    /// Docker does when the container's output closes.
    pub fn flush_partial(&mut self) -> Result<()> {
        let mut first_err = None;
        for stream in [Stream::Stdout, Stream::Stderr] {
            let p = &mut self.partial[stream.index()];
            if p.bytes.is_empty() {
                continue;
            }
            let line = std::mem::take(&mut p.bytes);
            let t = p
                .first
                .take()
                .or(p.last.take())
                .unwrap_or_else(SystemTime::now);
            if let Err(e) = self.entry(stream, &line, t) {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// Flush unfinished lines and close the file.
    pub fn close(mut self) -> Result<()> {
        self.flush_partial()
    }

    /// Append one entry, rotating first if the file is full. A failed rotation still
    /// writes the entry (to the old file): losing output is worse than a big file.
    fn entry(&mut self, stream: Stream, log: &[u8], time: SystemTime) -> Result<()> {
        let rotate_err = if self.size >= self.rotation.max_size {
            self.rotate().err()
        } else {
            None
        };
        self.buf.clear();
        if self.torn {
            self.buf.push(b'\n');
        }
        encode_entry(&mut self.buf, log, stream, time);
        match self.file.write_all(&self.buf) {
            Ok(()) => {
                self.size += self.buf.len() as u64;
                self.torn = false;
            }
            Err(e) => {
                self.torn = true;
                self.size = self.file.metadata().map_or(self.size, |m| m.len());
                return Err(Error::from(e).context(format!(
                    "writing log {} (is the disk full?)",
                    self.path.display()
                )));
            }
        }
        rotate_err.map_or(Ok(()), Err)
    }

    fn rotate(&mut self) -> Result<()> {
        let what = || format!("rotating log {}", self.path.display());
        if self.rotation.max_file <= 1 {
            self.file.set_len(0).with_context(what)?;
        } else {
            for n in (1..self.rotation.max_file - 1).rev() {
                match std::fs::rename(rotated(&self.path, n), rotated(&self.path, n + 1)) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                        return Err(Error::from(e).context(what()));
                    }
                    _ => {}
                }
            }
            std::fs::rename(&self.path, rotated(&self.path, 1)).with_context(what)?;
            self.file = open_append(&self.path)?;
        }
        self.size = 0;
        self.torn = false;
        Ok(())
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        let _ = self.flush_partial();
    }
}

/// One entry line exactly as dockerd's json-file driver writes it.
fn encode_entry(out: &mut Vec<u8>, log: &[u8], stream: Stream, time: SystemTime) {
    out.extend_from_slice(b"{\"log\":");
    json_string(out, log);
    out.extend_from_slice(b",\"stream\":\"");
    out.extend_from_slice(stream.as_str().as_bytes());
    if std::str::from_utf8(log).is_err() {
        // where dockerd puts --log-opt labels: Docker's readers take it as such
        use base64::Engine;
        out.extend_from_slice(b"\",\"attrs\":{\"");
        out.extend_from_slice(RAW_ATTR.as_bytes());
        out.extend_from_slice(b"\":\"");
        out.extend_from_slice(
            base64::engine::general_purpose::STANDARD
                .encode(log)
                .as_bytes(),
        );
        out.extend_from_slice(b"\"}");
        out.extend_from_slice(b",\"time\":\"");
    } else {
        out.extend_from_slice(b"\",\"time\":\"");
    }
    out.extend_from_slice(rfc3339_nano(time).as_bytes());
    out.extend_from_slice(b"\"}\n");
}

/// Bytes as a JSON string the way Go's encoders write one: HTML-sensitive bytes and
/// controls as `\u00XX`, each byte that does not start valid UTF-8 as `\ufffd`, and
/// U+2028/U+2029 escaped (they end lines in JavaScript).
fn json_string(out: &mut Vec<u8>, s: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    let (mut i, mut start) = (0, 0);
    while i < s.len() {
        let b = s[i];
        if b < 0x80 {
            if b >= 0x20 && !matches!(b, b'\\' | b'"' | b'<' | b'>' | b'&') {
                i += 1;
                continue;
            }
            out.extend_from_slice(&s[start..i]);
            match b {
                b'\\' | b'"' => out.extend_from_slice(&[b'\\', b]),
                b'\n' => out.extend_from_slice(b"\\n"),
                b'\r' => out.extend_from_slice(b"\\r"),
                _ => out.extend_from_slice(&[
                    b'\\',
                    b'u',
                    b'0',
                    b'0',
                    HEX[usize::from(b >> 4)],
                    HEX[usize::from(b & 0xf)],
                ]),
            }
            i += 1;
            start = i;
            continue;
        }
        let n = utf8_len(&s[i..]);
        if n == 0 {
            out.extend_from_slice(&s[start..i]);
            out.extend_from_slice(b"\\ufffd");
            i += 1;
            start = i;
            continue;
        }
        if matches!(&s[i..i + n], [0xe2, 0x80, 0xa8 | 0xa9]) {
            out.extend_from_slice(&s[start..i]);
            out.extend_from_slice(b"\\u202");
            out.push(if s[i + 2] == 0xa8 { b'8' } else { b'9' });
            i += n;
            start = i;
            continue;
        }
        i += n;
    }
    out.extend_from_slice(&s[start..]);
    out.push(b'"');
}

/// Length of the UTF-8 sequence at the start of `s`, 0 if it is not a valid one
/// (like Go's `utf8.DecodeRune` returning `RuneError, 1`).
fn utf8_len(s: &[u8]) -> usize {
    let want = match s[0] {
        0xc2..=0xdf => 2,
        0xe0..=0xef => 3,
        0xf0..=0xf4 => 4,
        _ => return 0,
    };
    match s.get(..want) {
        Some(seq) if std::str::from_utf8(seq).is_ok() => want,
        _ => 0,
    }
}

/// A container's log directory name, shared by engined (which makes the
/// directory it binds) and logcollect (which finds it, or makes it for a
/// container without a bind): `NAME_YYYYmmddTHHMMSS` from the container's
/// creation time as the engine records it (RFC 3339, UTC).
pub fn container_dir_name(name: &str, created_rfc3339: &str) -> String {
    let stamp: String = created_rfc3339
        .chars()
        .take(19)
        .filter(|c| *c != '-' && *c != ':')
        .collect();
    format!("{}_{stamp}", name.trim_start_matches('/'))
}

/// One log entry read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub stream: Stream,
    pub time: SystemTime,
    /// The line with its `\n` (none on a piece of a long line or a last unfinished line).
    pub bytes: Vec<u8>,
}

#[derive(serde::Deserialize)]
struct RawEntry {
    #[serde(default)]
    log: String,
    stream: String,
    time: String,
    #[serde(default)]
    attrs: std::collections::BTreeMap<String, String>,
}

/// One line of a json-file log, as the writer makes it; None for a torn or
/// foreign line. A line that was not UTF-8 comes back as its bytes.
pub fn parse_entry(line: &[u8]) -> Option<Entry> {
    let raw: RawEntry = serde_json::from_slice(line).ok()?;
    let bytes = match raw.attrs.get(RAW_ATTR) {
        Some(b64) => {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD.decode(b64).ok()?
        }
        None => raw.log.into_bytes(),
    };
    Some(Entry {
        stream: Stream::from_name(&raw.stream)?,
        time: parse_rfc3339_time(&raw.time)?,
        bytes,
    })
}

/// What to read.
#[derive(Clone)]
pub struct ReadOptions {
    /// Start this many entries before the end (counted over all streams, before the
    /// time and stream filters, as Docker counts); `None` reads everything.
    pub tail: Option<usize>,
    /// Skip entries older than this.
    pub since: Option<SystemTime>,
    /// End at the first entry newer than this (and, following, once it has passed).
    pub until: Option<SystemTime>,
    pub stdout: bool,
    pub stderr: bool,
    /// After the end, wait for more.
    pub follow: bool,
    /// With `follow`: asked whenever the reader has caught up. Once it answers true
    /// (say "the container has stopped"), the reader reads what was written until
    /// then and ends. `None` follows until the reader is dropped.
    pub follow_until: Option<Arc<dyn Fn() -> bool + Send + Sync>>,
}

impl Default for ReadOptions {
    fn default() -> Self {
        ReadOptions {
            tail: None,
            since: None,
            until: None,
            stdout: true,
            stderr: true,
            follow: false,
            follow_until: None,
        }
    }
}

/// A file's identity, which survives renames: (device, inode).
type FileId = (u64, u64);

fn file_id(f: &File) -> Result<FileId> {
    let m = f.metadata()?;
    Ok((m.dev(), m.ino()))
}

/// One open file of the log, being read.
struct Source {
    file: BufReader<File>,
    id: FileId,
    /// Bytes consumed so far.
    offset: u64,
    /// The start of a line whose end has not been written yet.
    pending: Vec<u8>,
    /// Inside an over-long line, dropping bytes up to its end.
    skipping: bool,
    /// The file's first line as this reader saw it: if it changes, the file was
    /// truncated and written again (max-file=1) even if it has grown past `offset`.
    first_line: Vec<u8>,
}

impl Source {
    fn new(mut file: File, id: FileId, offset: u64) -> Result<Source> {
        let mut first_line = Vec::new();
        if offset > 0 {
            let mut buf = vec![0u8; (offset as usize).min(MAX_ENTRY)];
            let n = file.read_at(&mut buf, 0)?;
            if let Some(end) = buf[..n].iter().position(|&b| b == b'\n') {
                buf.truncate(end);
                first_line = buf;
            }
        }
        file.seek(SeekFrom::Start(offset))?;
        Ok(Source {
            file: BufReader::with_capacity(64 << 10, file),
            id,
            offset,
            pending: Vec::new(),
            skipping: false,
            first_line,
        })
    }

    /// The next complete line (without its newline), or None at the current end.
    fn next_line(&mut self) -> Result<Option<Vec<u8>>> {
        loop {
            let buf = self.file.fill_buf()?;
            if buf.is_empty() {
                return Ok(None);
            }
            let (n, complete) = match buf.iter().position(|&b| b == b'\n') {
                Some(i) => (i, true),
                None => (buf.len(), false),
            };
            let start = self.offset - self.pending.len() as u64;
            if !self.skipping {
                self.pending.extend_from_slice(&buf[..n]);
            }
            let used = n + usize::from(complete);
            self.file.consume(used);
            self.offset += used as u64;
            if !complete {
                if self.pending.len() > MAX_ENTRY {
                    self.pending.clear();
                    self.skipping = true;
                }
                continue;
            }
            if std::mem::take(&mut self.skipping) {
                self.pending.clear();
                continue;
            }
            let line = std::mem::take(&mut self.pending);
            if start == 0 && self.first_line.is_empty() {
                self.first_line = line.clone();
            }
            return Ok(Some(line));
        }
    }

    /// The unfinished last line, if it holds a whole entry (only its newline lost).
    fn take_pending(&mut self) -> Option<Entry> {
        let line = std::mem::take(&mut self.pending);
        (!self.skipping && !line.is_empty())
            .then(|| parse_entry(&line))
            .flatten()
    }

    /// Whether the file was truncated since this reader read it.
    fn truncated(&self) -> Result<bool> {
        let f = self.file.get_ref();
        if f.metadata()?.len() < self.offset {
            return Ok(true);
        }
        if self.first_line.is_empty() {
            return Ok(false);
        }
        let mut now = vec![0u8; self.first_line.len()];
        match f.read_exact_at(&mut now, 0) {
            Ok(()) => Ok(now != self.first_line),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(true),
            Err(e) => Err(e.into()),
        }
    }

    fn restart(&mut self) -> Result<()> {
        self.file.seek(SeekFrom::Start(0))?;
        self.offset = 0;
        self.pending.clear();
        self.skipping = false;
        self.first_line.clear();
        Ok(())
    }
}

/// The highest N of the `path.N` files in the directory now.
fn highest_rotated(path: &Path) -> u32 {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return 0;
    };
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(|e| {
            let e = e.ok()?;
            let n = e.file_name();
            let n = n.to_str()?.strip_prefix(name)?.strip_prefix('.')?;
            n.parse::<u32>().ok()
        })
        .max()
        .unwrap_or(0)
}

/// The files of the log newer than the one identified by `after` (all of them
/// without it), oldest first.
///
/// A rotation renames `.N-1` to `.N` down to `.1`, so while it runs one name is
/// briefly missing: the scan goes on past a missing name up to the highest one
/// listed before it started. It goes newest first, against the renames, so a file
/// that moves while it is scanned is met again (a copy, dropped by identity)
/// rather than skipped.
fn open_newer(path: &Path, after: Option<FileId>) -> Result<Vec<(File, FileId)>> {
    let highest = highest_rotated(path);
    let mut found: Vec<(File, FileId)> = Vec::new();
    for n in 0u32.. {
        let p = if n == 0 {
            path.to_path_buf()
        } else {
            rotated(path, n)
        };
        let f = match File::open(&p) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && n <= highest => continue,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
            Err(e) => return Err(Error::from(e).context(format!("opening log {}", p.display()))),
        };
        let id = file_id(&f)?;
        if Some(id) == after {
            break;
        }
        if !found.iter().any(|(_, i)| *i == id) {
            found.push((f, id));
        }
    }
    found.reverse();
    Ok(found)
}

/// Where the last `n` entries start: (index into `files`, offset).
fn tail_start(files: &[(File, FileId)], n: usize) -> Result<(usize, u64)> {
    const CHUNK: u64 = 64 << 10;
    let Some(last) = files.len().checked_sub(1) else {
        return Ok((0, 0));
    };
    if n == 0 {
        return Ok((last, files[last].0.metadata()?.len()));
    }
    let mut count = 0;
    for (i, (f, _)) in files.iter().enumerate().rev() {
        // `buf` holds the file's bytes from `pos` to the start of the last line counted.
        let mut pos = f.metadata()?.len();
        let mut buf: Vec<u8> = Vec::new();
        loop {
            if pos > 0 {
                let start = pos.saturating_sub(CHUNK);
                let mut chunk = vec![0u8; (pos - start) as usize];
                f.read_exact_at(&mut chunk, start)?;
                chunk.extend_from_slice(&buf);
                buf = chunk;
                pos = start;
            }
            // Count the complete lines at the end of `buf`, newest first.
            loop {
                let body = buf.len() - usize::from(buf.last() == Some(&b'\n'));
                let line_start = match buf[..body].iter().rposition(|&b| b == b'\n') {
                    Some(q) => q + 1,
                    None if pos == 0 => 0,
                    None => break,
                };
                if body > line_start && parse_entry(&buf[line_start..body]).is_some() {
                    count += 1;
                    if count == n {
                        return Ok((i, pos + line_start as u64));
                    }
                }
                buf.truncate(line_start);
                if line_start == 0 {
                    break;
                }
            }
            if pos == 0 {
                break;
            }
        }
    }
    Ok((0, 0))
}

/// Entries of a json-file log, oldest first; see [`read`].
pub struct Reader {
    path: PathBuf,
    opts: ReadOptions,
    /// Open files still to read, oldest first; the last is the newest known.
    sources: VecDeque<Source>,
    /// The stop condition said yes: one more look, then the end.
    stopping: bool,
    done: bool,
}

/// Read the log whose live file is `path` (rotated files `path.1`, `path.2`, …
/// first). A missing log reads as empty, or, following, is waited for.
pub fn read(path: &Path, opts: ReadOptions) -> Result<Reader> {
    let files = open_newer(path, None)?;
    let (first, offset) = match opts.tail {
        Some(n) => {
            tail_start(&files, n).with_context(|| format!("reading log {}", path.display()))?
        }
        None => (0, 0),
    };
    let mut sources = VecDeque::new();
    for (i, (f, id)) in files.into_iter().enumerate().skip(first) {
        let at = if i == first { offset } else { 0 };
        sources.push_back(Source::new(f, id, at)?);
    }
    Ok(Reader {
        path: path.to_path_buf(),
        opts,
        sources,
        stopping: false,
        done: false,
    })
}

impl Reader {
    /// The entry if the filters keep it; past `until` the reader is done.
    fn keep(&mut self, e: Entry) -> Option<Entry> {
        if self.opts.until.is_some_and(|u| e.time > u) {
            self.done = true;
            return None;
        }
        if self.opts.since.is_some_and(|s| e.time < s) {
            return None;
        }
        let wanted = match e.stream {
            Stream::Stdout => self.opts.stdout,
            Stream::Stderr => self.opts.stderr,
        };
        wanted.then_some(e)
    }

    /// Look for what changed behind the newest file: a rotation (newer files are
    /// queued after it), a truncation (it is read again from the start), or a log
    /// that appeared. True if there may be more to read.
    fn check_files(&mut self) -> Result<bool> {
        let Some(cur) = self.sources.back_mut() else {
            let found = open_newer(&self.path, None)?;
            let any = !found.is_empty();
            for (f, id) in found {
                self.sources.push_back(Source::new(f, id, 0)?);
            }
            return Ok(any);
        };
        match std::fs::metadata(&self.path) {
            Ok(m) if (m.dev(), m.ino()) == cur.id => {
                if cur.truncated()? {
                    cur.restart()?;
                    return Ok(true);
                }
                Ok(false)
            }
            Ok(_) => {
                let cur = cur.id;
                let newer = open_newer(&self.path, Some(cur))?;
                let any = !newer.is_empty();
                for (f, id) in newer {
                    self.sources.push_back(Source::new(f, id, 0)?);
                }
                Ok(any)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(Error::from(e).context(format!("reading log {}", self.path.display()))),
        }
    }

    fn advance(&mut self) -> Result<Option<Entry>> {
        loop {
            if self.done {
                return Ok(None);
            }
            if let Some(src) = self.sources.front_mut() {
                if let Some(line) = src.next_line()? {
                    // A corrupt line (a crash mid-write) is skipped.
                    if let Some(e) = parse_entry(&line).and_then(|e| self.keep(e)) {
                        return Ok(Some(e));
                    }
                    continue;
                }
                if self.sources.len() > 1 {
                    // A newer file exists, so nothing more comes to this one.
                    let mut old = self.sources.pop_front().expect("a source");
                    if let Some(e) = old.take_pending().and_then(|e| self.keep(e)) {
                        return Ok(Some(e));
                    }
                    continue;
                }
            }
            let expired = self.opts.until.is_some_and(|u| SystemTime::now() > u);
            if !self.opts.follow || expired || (self.stopping && !self.check_files()?) {
                self.done = true;
                let last = self.sources.back_mut().and_then(Source::take_pending);
                return Ok(last.and_then(|e| self.keep(e)));
            }
            if self.stopping {
                continue;
            }
            // Asked before looking, so whatever was written before it said yes is
            // read by the pass that follows.
            let stop = self.opts.follow_until.as_ref().is_some_and(|f| f());
            let changed = self.check_files()?;
            if stop {
                self.stopping = true;
            } else if !changed {
                std::thread::sleep(POLL);
            }
        }
    }
}

impl Iterator for Reader {
    type Item = Result<Entry>;

    fn next(&mut self) -> Option<Result<Entry>> {
        match self.advance() {
            Ok(e) => e.map(Ok),
            Err(e) => {
                self.done = true;
                Some(Err(
                    e.context(format!("reading log {}", self.path.display()))
                ))
            }
        }
    }
}

/// Stream bytes of Docker's framing.
pub const STDIN: u8 = 0;
pub const STDOUT: u8 = 1;
pub const STDERR: u8 = 2;
/// The engine's own error, sent in place of output (docker prints it and fails).
pub const SYSTEMERR: u8 = 3;

/// Append `payload` to `out` as frames of `stream` ([`STDOUT`], [`STDERR`], …):
/// header `[stream, 0, 0, 0, len as u32 big-endian]`, then the bytes. An empty
/// payload adds nothing.
pub fn frame(stream: u8, payload: &[u8], out: &mut Vec<u8>) {
    for chunk in payload.chunks(u32::MAX as usize) {
        out.extend_from_slice(&[stream, 0, 0, 0]);
        out.extend_from_slice(&(chunk.len() as u32).to_be_bytes());
        out.extend_from_slice(chunk);
    }
}

/// Turns framed bytes, arriving in pieces of any size, back into (stream, bytes).
/// Payload is handed out as it arrives, so a frame never has to fit in memory.
#[derive(Debug, Default)]
pub struct Demux {
    header: [u8; 8],
    /// Header bytes received of the next frame.
    have: usize,
    stream: u8,
    /// Payload bytes of the current frame still to come.
    left: u64,
}

impl Demux {
    pub fn new() -> Demux {
        Demux::default()
    }

    /// Feed the next bytes; returns the payload they carry, in order, one piece per
    /// frame (or part of a frame) they contain. After an error the input is not a
    /// framed stream and the demux should not be fed again.
    pub fn push(&mut self, mut data: &[u8]) -> Result<Vec<(u8, Vec<u8>)>> {
        let mut out = Vec::new();
        while !data.is_empty() {
            if self.left == 0 {
                let n = (8 - self.have).min(data.len());
                self.header[self.have..self.have + n].copy_from_slice(&data[..n]);
                self.have += n;
                data = &data[n..];
                if self.have < 8 {
                    break;
                }
                self.have = 0;
                let h = self.header;
                if h[0] > SYSTEMERR || h[1..4] != [0, 0, 0] {
                    return Err(Error::invalid(format!(
                        "stream framing: bad header {h:02x?}; the peer sends raw bytes (a TTY container) or the stream is corrupt"
                    )));
                }
                self.stream = h[0];
                self.left = u32::from_be_bytes([h[4], h[5], h[6], h[7]]).into();
                continue;
            }
            let n = data
                .len()
                .min(usize::try_from(self.left).unwrap_or(usize::MAX));
            out.push((self.stream, data[..n].to_vec()));
            self.left -= n as u64;
            data = &data[n..];
        }
        Ok(out)
    }

    /// True when the input so far ends between frames (an end of input elsewhere
    /// cut a frame short).
    pub fn at_boundary(&self) -> bool {
        self.have == 0 && self.left == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::time::{Instant, UNIX_EPOCH};

    /// A directory removed when the test ends.
    struct Dir(PathBuf);

    impl Dir {
        fn new(tag: &str) -> Dir {
            let d =
                std::env::temp_dir().join(format!("berth-logfile-{tag}-{}", crate::util::uuid4()));
            std::fs::create_dir_all(&d).unwrap();
            Dir(d)
        }
        fn log(&self) -> PathBuf {
            self.0.join("c-json.log")
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// 2026-12-01T16:34:49.831920668Z plus `ms` milliseconds.
    fn at(ms: u64) -> SystemTime {
        UNIX_EPOCH + Duration::new(1_796_142_889, 831_920_668) + Duration::from_millis(ms)
    }

    fn all(path: &Path, opts: ReadOptions) -> Vec<Entry> {
        read(path, opts).unwrap().map(Result::unwrap).collect()
    }

    fn logs(entries: &[Entry]) -> Vec<String> {
        entries
            .iter()
            .map(|e| String::from_utf8(e.bytes.clone()).unwrap())
            .collect()
    }

    fn lines(path: &Path) -> Vec<serde_json::Value> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// Poll `check` until it holds, failing after a generous deadline.
    fn wait_until(what: &str, check: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(90);
        while !check() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    #[test]
    fn an_entry_is_byte_for_byte_what_dockerd_writes() {
        let d = Dir::new("format");
        let mut w = Writer::open(&d.log(), Rotation::default()).unwrap();
        w.write(Stream::Stdout, b"hello\n", at(0)).unwrap();
        w.write(
            Stream::Stderr,
            b"oops\n",
            at(1000) - Duration::from_nanos(668),
        )
        .unwrap();
        assert_eq!(
            std::fs::read_to_string(d.log()).unwrap(),
            "{\"log\":\"hello\\n\",\"stream\":\"stdout\",\"time\":\"2026-12-01T16:34:49.831920668Z\"}\n\
             {\"log\":\"oops\\n\",\"stream\":\"stderr\",\"time\":\"2026-12-01T16:34:50.83192Z\"}\n"
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(d.log()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o640);
    }

    #[test]
    fn lines_split_across_writes_are_joined_per_stream() {
        let d = Dir::new("split");
        let mut w = Writer::open(&d.log(), Rotation::default()).unwrap();
        w.write(Stream::Stdout, b"hel", at(0)).unwrap();
        w.write(Stream::Stderr, b"err", at(1)).unwrap();
        w.write(Stream::Stdout, b"lo\nwor", at(2)).unwrap();
        w.write(Stream::Stderr, b"or\n", at(3)).unwrap();
        w.write(Stream::Stdout, b"ld\n\nlast", at(4)).unwrap();
        // Nothing of the unfinished line is in the file yet.
        assert_eq!(lines(&d.log()).len(), 4);
        w.close().unwrap();
        let got = all(&d.log(), ReadOptions::default());
        assert_eq!(logs(&got), ["hello\n", "error\n", "world\n", "\n", "last"]);
        let streams: Vec<Stream> = got.iter().map(|e| e.stream).collect();
        use Stream::*;
        assert_eq!(streams, [Stdout, Stderr, Stdout, Stdout, Stdout]);
        // A line's time is when it was completed; a flushed rest keeps its last write's.
        let times: Vec<SystemTime> = got.iter().map(|e| e.time).collect();
        assert_eq!(times, [at(2), at(3), at(4), at(4), at(4)]);
    }

    #[test]
    fn long_lines_are_cut_at_16k_and_share_the_first_pieces_time() {
        let d = Dir::new("long");
        let mut w = Writer::open(&d.log(), Rotation::default()).unwrap();
        let line: Vec<u8> = (0..40_000u32).map(|i| b'a' + (i % 26) as u8).collect();
        for (i, piece) in line.chunks(1000).enumerate() {
            w.write(Stream::Stdout, piece, at(i as u64)).unwrap();
        }
        w.write(Stream::Stdout, b"\n", at(99)).unwrap();
        // Exactly 16 KiB and then the newline: Docker logs the newline on its own.
        w.write(Stream::Stderr, &vec![b'x'; MAX_LINE], at(200))
            .unwrap();
        w.write(Stream::Stderr, b"\n", at(201)).unwrap();
        drop(w);
        let got = all(&d.log(), ReadOptions::default());
        let sizes: Vec<usize> = got.iter().map(|e| e.bytes.len()).collect();
        assert_eq!(
            sizes,
            [MAX_LINE, MAX_LINE, 40_000 - 2 * MAX_LINE + 1, MAX_LINE, 1]
        );
        assert!(got[..2].iter().all(|e| !e.bytes.ends_with(b"\n")));
        let joined: Vec<u8> = got[..3].iter().flat_map(|e| e.bytes.clone()).collect();
        assert_eq!(joined[..40_000], line[..]);
        assert_eq!(joined[40_000], b'\n');
        // The first piece was cut by the write that filled 16 KiB (the 17th).
        assert!(got[..3].iter().all(|e| e.time == at(16)));
        assert_eq!((got[3].time, got[4].time), (at(200), at(200)));
        assert_eq!(got[4].bytes, b"\n");
    }

    #[test]
    fn bytes_that_are_not_utf8_are_written_as_go_writes_them() {
        let d = Dir::new("utf8");
        let mut w = Writer::open(&d.log(), Rotation::default()).unwrap();
        // A stray byte, a cut sequence, an encoded surrogate, then HTML-sensitive
        // bytes, a control, a line separator and ordinary non-ASCII text.
        w.write(Stream::Stdout, b"a\xffb\xe2\x82c\xed\xa0\x80\n", at(0))
            .unwrap();
        w.write(
            Stream::Stdout,
            "<b>&\t\"\\\r\u{2028}\u{2029}\u{1}é€😀\n".as_bytes(),
            at(1),
        )
        .unwrap();
        let text = std::fs::read_to_string(d.log()).unwrap();
        let raw: Vec<&str> = text.lines().collect();
        assert!(
            raw[0].starts_with(r#"{"log":"a\ufffdb\ufffd\ufffdc\ufffd\ufffd\ufffd\n","#),
            "{}",
            raw[0]
        );
        assert!(
            raw[1].starts_with(
                r#"{"log":"\u003cb\u003e\u0026\u0009\"\\\r\u2028\u2029\u0001é€😀\n","#
            ),
            "{}",
            raw[1]
        );
        // and the bytes themselves where dockerd puts attributes, so Docker's
        // readers show the text above and berth's give back the bytes
        let v: serde_json::Value = serde_json::from_str(raw[0]).unwrap();
        assert_eq!(
            v["log"],
            "a\u{fffd}b\u{fffd}\u{fffd}c\u{fffd}\u{fffd}\u{fffd}\n"
        );
        assert_eq!(v["attrs"]["berth.raw"], "Yf9i4oJj7aCACg==");
        assert!(raw[0].contains(r#""stdout","attrs":{"#), "{}", raw[0]);
        assert!(!raw[1].contains("attrs"), "{}", raw[1]);
        let got = all(&d.log(), ReadOptions::default());
        assert_eq!(got[0].bytes, b"a\xffb\xe2\x82c\xed\xa0\x80\n");
    }

    #[test]
    fn every_byte_value_round_trips_through_serde_json() {
        let d = Dir::new("roundtrip");
        let mut w = Writer::open(&d.log(), Rotation::default()).unwrap();
        let ascii: String = (0u8..0x80)
            .filter(|&b| b != b'\n')
            .map(char::from)
            .collect();
        let texts = [
            ascii.as_str(),
            "ünïcödé – ✓ 😀 \u{2028}x\u{2029}",
            "</script><!-- & -->",
        ];
        for (i, t) in texts.iter().enumerate() {
            w.write(Stream::Stderr, format!("{t}\n").as_bytes(), at(i as u64))
                .unwrap();
        }
        let parsed = lines(&d.log());
        assert_eq!(parsed.len(), texts.len());
        for (i, (v, t)) in parsed.iter().zip(texts).enumerate() {
            assert_eq!(v["log"], format!("{t}\n"));
            assert_eq!(v["stream"], "stderr");
            let time = parse_rfc3339_time(v["time"].as_str().unwrap()).unwrap();
            assert_eq!(time, at(i as u64));
        }
    }

    #[test]
    fn rotation_keeps_max_file_files_newest_in_the_live_one() {
        let d = Dir::new("rotate");
        // Every entry is over 100 bytes, so each fills a file.
        let r = Rotation {
            max_size: 100,
            max_file: 3,
        };
        let mut w = Writer::open(&d.log(), r).unwrap();
        let msg = |i: usize| format!("entry {i} {}\n", "x".repeat(40));
        for i in 1..=5 {
            w.write(Stream::Stdout, msg(i).as_bytes(), at(i as u64))
                .unwrap();
        }
        let in_file = |p: PathBuf| -> Vec<String> {
            lines(&p)
                .iter()
                .map(|v| v["log"].as_str().unwrap().to_string())
                .collect()
        };
        assert_eq!(in_file(d.log()), [msg(5)]);
        assert_eq!(in_file(rotated(&d.log(), 1)), [msg(4)]);
        assert_eq!(in_file(rotated(&d.log(), 2)), [msg(3)]);
        assert!(!rotated(&d.log(), 3).exists());
        let got = all(&d.log(), ReadOptions::default());
        assert_eq!(logs(&got), [msg(3), msg(4), msg(5)]);

        // Several entries per file: a file passes max_size by its last entry only.
        let d = Dir::new("rotate-many");
        let r = Rotation {
            max_size: 250,
            max_file: 2,
        };
        let mut w = Writer::open(&d.log(), r).unwrap();
        for i in 1..=10 {
            w.write(Stream::Stdout, msg(i).as_bytes(), at(i as u64))
                .unwrap();
        }
        let live = in_file(d.log());
        let old = in_file(rotated(&d.log(), 1));
        assert_eq!(old.len(), 3);
        assert!(!rotated(&d.log(), 2).exists());
        let mut both = old.clone();
        both.extend(live);
        let expected: Vec<String> = (11 - both.len()..=10).map(msg).collect();
        assert_eq!(both, expected);
        let old_size = std::fs::metadata(rotated(&d.log(), 1)).unwrap().len();
        let entry_size = old_size / 3;
        assert!(old_size >= 250 && old_size - entry_size < 250, "{old_size}");
    }

    #[test]
    fn max_file_one_truncates_in_place() {
        let d = Dir::new("truncate");
        let r = Rotation {
            max_size: 100,
            max_file: 1,
        };
        let mut w = Writer::open(&d.log(), r).unwrap();
        for i in 1..=3 {
            let line = format!("entry {i} {}\n", "y".repeat(90));
            w.write(Stream::Stdout, line.as_bytes(), at(i)).unwrap();
        }
        let got = all(&d.log(), ReadOptions::default());
        assert_eq!(logs(&got), [format!("entry 3 {}\n", "y".repeat(90))]);
        assert!(!rotated(&d.log(), 1).exists());
    }

    #[test]
    fn a_torn_or_corrupt_line_is_skipped_and_the_rest_read() {
        let d = Dir::new("corrupt");
        let mut w = Writer::open(&d.log(), Rotation::default()).unwrap();
        w.write(Stream::Stdout, b"one\n", at(0)).unwrap();
        drop(w);
        // A corrupt line in the middle, then a crash in the middle of an entry.
        let mut f = OpenOptions::new().append(true).open(d.log()).unwrap();
        f.write_all(b"{\"log\":\"bad\\n\",\"stream\":\"stdout\",\"time\":\"yesterday\"}\n")
            .unwrap();
        f.write_all(b"\x00\x00garbage\n").unwrap();
        f.write_all(b"{\"log\":\"torn").unwrap();
        drop(f);
        let mut w = Writer::open(&d.log(), Rotation::default()).unwrap();
        w.write(Stream::Stdout, b"two\n", at(1)).unwrap();
        drop(w);
        let got = all(&d.log(), ReadOptions::default());
        assert_eq!(logs(&got), ["one\n", "two\n"]);
        // The torn entry was ended by a newline before the next one.
        assert!(
            std::fs::read_to_string(d.log())
                .unwrap()
                .contains("{\"log\":\"torn\n{\"log\":\"two")
        );
        // tail counts entries, not lines.
        let tail = all(
            &d.log(),
            ReadOptions {
                tail: Some(2),
                ..Default::default()
            },
        );
        assert_eq!(logs(&tail), ["one\n", "two\n"]);
    }

    /// A log of 9 entries over three files (3 each), entry i at `at(i)`, streams
    /// alternating stdout (even) and stderr (odd).
    fn nine(d: &Dir) -> Vec<String> {
        let r = Rotation {
            max_size: 250,
            max_file: 3,
        };
        let mut w = Writer::open(&d.log(), r).unwrap();
        let msgs: Vec<String> = (0..9)
            .map(|i| format!("line {i} {}\n", "z".repeat(40)))
            .collect();
        for (i, m) in msgs.iter().enumerate() {
            let s = if i % 2 == 0 {
                Stream::Stdout
            } else {
                Stream::Stderr
            };
            w.write(s, m.as_bytes(), at(i as u64)).unwrap();
        }
        assert_eq!(lines(&rotated(&d.log(), 2)).len(), 3);
        assert_eq!(lines(&rotated(&d.log(), 1)).len(), 3);
        assert_eq!(lines(&d.log()).len(), 3);
        msgs
    }

    #[test]
    fn tail_counts_from_the_end_across_rotated_files() {
        let d = Dir::new("tail");
        let msgs = nine(&d);
        let tail = |n| {
            logs(&all(
                &d.log(),
                ReadOptions {
                    tail: Some(n),
                    ..Default::default()
                },
            ))
        };
        assert_eq!(tail(2), msgs[7..]);
        assert_eq!(tail(4), msgs[5..]);
        assert_eq!(tail(6), msgs[3..]);
        assert_eq!(tail(7), msgs[2..]);
        assert_eq!(tail(100), msgs);
        assert!(tail(0).is_empty());
        assert_eq!(logs(&all(&d.log(), ReadOptions::default())), msgs);
        let missing = Dir::new("missing");
        assert!(all(&missing.log(), ReadOptions::default()).is_empty());
    }

    #[test]
    fn since_until_and_stream_filters() {
        let d = Dir::new("filters");
        let msgs = nine(&d);
        let read_with = |o: ReadOptions| logs(&all(&d.log(), o));
        let since = read_with(ReadOptions {
            since: Some(at(3)),
            ..Default::default()
        });
        assert_eq!(since, msgs[3..]);
        let until = read_with(ReadOptions {
            until: Some(at(5)),
            ..Default::default()
        });
        assert_eq!(until, msgs[..=5]);
        let window = read_with(ReadOptions {
            since: Some(at(2)),
            until: Some(at(4) + Duration::from_micros(1)),
            ..Default::default()
        });
        assert_eq!(window, msgs[2..=4]);
        let stdout = read_with(ReadOptions {
            stderr: false,
            ..Default::default()
        });
        assert_eq!(stdout, [0, 2, 4, 6, 8].map(|i| msgs[i].clone()));
        let stderr = read_with(ReadOptions {
            stdout: false,
            ..Default::default()
        });
        assert_eq!(stderr, [1, 3, 5, 7].map(|i| msgs[i].clone()));
        // Docker's order: the tail is taken first, then filtered.
        let tail_err = read_with(ReadOptions {
            tail: Some(3),
            stdout: false,
            ..Default::default()
        });
        assert_eq!(tail_err, [msgs[7].clone()]);
    }

    /// Follow `path` on a thread, publishing how many entries it has seen.
    fn follower(
        path: &Path,
        stop: Arc<AtomicBool>,
        seen: Arc<AtomicUsize>,
    ) -> std::thread::JoinHandle<Vec<Entry>> {
        let path = path.to_path_buf();
        std::thread::spawn(move || {
            let opts = ReadOptions {
                follow: true,
                follow_until: Some(Arc::new(move || stop.load(Ordering::SeqCst))),
                ..Default::default()
            };
            let mut got = Vec::new();
            for e in read(&path, opts).unwrap() {
                got.push(e.unwrap());
                seen.store(got.len(), Ordering::SeqCst);
            }
            got
        })
    }

    fn follow_while_writing(tag: &str, rotation: Rotation, n: usize, ahead: Option<usize>) {
        let d = Dir::new(tag);
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(AtomicUsize::new(0));
        // The reader starts before the log exists, as `docker logs -f` can.
        let reader = follower(&d.log(), stop.clone(), seen.clone());
        let mut w = Writer::open(&d.log(), rotation).unwrap();
        let msgs: Vec<String> = (0..n)
            .map(|i| format!("entry {i:04} {}\n", "w".repeat(50)))
            .collect();
        for (i, m) in msgs.iter().enumerate() {
            if let Some(ahead) = ahead {
                // Never more than the kept files hold ahead of the reader.
                wait_until("the reader to catch up", || {
                    seen.load(Ordering::SeqCst) + ahead >= i
                });
            }
            w.write(Stream::Stdout, m.as_bytes(), SystemTime::now())
                .unwrap();
        }
        drop(w);
        stop.store(true, Ordering::SeqCst);
        let got = logs(&reader.join().unwrap());
        let first_wrong = got.iter().zip(&msgs).position(|(a, b)| a != b);
        assert!(
            got.len() == msgs.len() && first_wrong.is_none(),
            "read {} of {} entries, first wrong at {first_wrong:?}: {:?}",
            got.len(),
            msgs.len(),
            first_wrong.map(|i| &got[i])
        );
    }

    #[test]
    fn follow_reads_every_entry_once_across_rotations() {
        // Three entries per file, three files: the writer stays within what is kept.
        let r = Rotation {
            max_size: 200,
            max_file: 3,
        };
        follow_while_writing("follow-rotate", r, 150, Some(4));
    }

    #[test]
    fn follow_catches_up_over_many_rotations_at_once() {
        // The writer runs free: many rotations may happen between two looks.
        let r = Rotation {
            max_size: 200,
            max_file: 1000,
        };
        follow_while_writing("follow-burst", r, 600, None);
    }

    #[test]
    fn follow_starts_over_when_the_file_is_truncated() {
        let r = Rotation {
            max_size: 150,
            max_file: 1,
        };
        follow_while_writing("follow-truncate", r, 40, Some(0));
    }

    #[test]
    fn follow_notices_a_truncated_file_that_grew_past_the_offset() {
        let d = Dir::new("follow-regrow");
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(AtomicUsize::new(0));
        let r = Rotation {
            max_size: 1,
            max_file: 1,
        };
        let mut w = Writer::open(&d.log(), r).unwrap();
        w.write(Stream::Stdout, b"a\n", at(0)).unwrap();
        let reader = follower(&d.log(), stop.clone(), seen.clone());
        wait_until("the first entry", || seen.load(Ordering::SeqCst) == 1);
        // Truncated, then longer than before: only the first line tells.
        let long = format!("{}\n", "b".repeat(500));
        w.write(Stream::Stdout, long.as_bytes(), at(1)).unwrap();
        wait_until("the second entry", || seen.load(Ordering::SeqCst) == 2);
        stop.store(true, Ordering::SeqCst);
        let got = reader.join().unwrap();
        assert_eq!(logs(&got), ["a\n".to_string(), long]);
    }

    #[test]
    fn follow_ends_only_after_draining_what_was_written_before_the_stop() {
        let d = Dir::new("follow-drain");
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(AtomicUsize::new(0));
        let mut w = Writer::open(&d.log(), Rotation::default()).unwrap();
        w.write(Stream::Stdout, b"before\n", at(0)).unwrap();
        let reader = follower(&d.log(), stop.clone(), seen.clone());
        wait_until("the first entry", || seen.load(Ordering::SeqCst) == 1);
        // Written while the reader waits, then the stop: both entries must come.
        w.write(Stream::Stdout, b"last words\n", at(1)).unwrap();
        w.write(Stream::Stderr, b"unfinished", at(2)).unwrap();
        drop(w);
        stop.store(true, Ordering::SeqCst);
        let got = reader.join().unwrap();
        assert_eq!(logs(&got), ["before\n", "last words\n", "unfinished"]);
    }

    #[test]
    fn log_opts_parse_like_dockers_with_errors_naming_the_option() {
        assert_eq!(
            Rotation::from_opts::<&str, &str>([]).unwrap(),
            Rotation {
                max_size: 10 << 20,
                max_file: 3
            }
        );
        assert_eq!(
            Rotation::from_opts([("max-size", "1g"), ("max-file", "5"), ("tag", "{{.Name}}")])
                .unwrap(),
            Rotation {
                max_size: 1 << 30,
                max_file: 5
            }
        );
        assert_eq!(
            Rotation::from_opts([("max-size", "4096")])
                .unwrap()
                .max_size,
            4096
        );
        for (k, v, says) in [
            ("max-size", "ten", "max-size=\"ten\""),
            ("max-size", "0", "max-size=\"0\""),
            ("max-file", "0", "max-file=\"0\""),
            ("max-file", "2.5", "max-file=\"2.5\""),
            ("compress", "true", "compress=true"),
            ("mode", "non-blocking", "unknown log opt 'mode'"),
        ] {
            let e = Rotation::from_opts([(k, v)]).unwrap_err();
            assert!(e.to_string().contains(says), "{e}");
        }
    }

    #[test]
    fn frames_are_dockers_and_demux_takes_them_in_any_pieces() {
        let mut out = Vec::new();
        frame(STDOUT, b"hello", &mut out);
        assert_eq!(out, [1, 0, 0, 0, 0, 0, 0, 5, b'h', b'e', b'l', b'l', b'o']);
        frame(STDERR, b"", &mut out);
        assert_eq!(out.len(), 13);
        let big = vec![7u8; 70_000];
        frame(STDERR, &big, &mut out);
        frame(STDOUT, b"bye\n", &mut out);
        assert_eq!(&out[13..21], &[2, 0, 0, 0, 0, 1, 0x11, 0x70]);
        for piece in [1, 3, 8, 4096, out.len()] {
            let mut d = Demux::new();
            let (mut o, mut e) = (Vec::new(), Vec::new());
            for chunk in out.chunks(piece) {
                for (s, bytes) in d.push(chunk).unwrap() {
                    match s {
                        STDOUT => o.extend(bytes),
                        STDERR => e.extend(bytes),
                        _ => panic!("stream {s}"),
                    }
                }
            }
            assert!(d.at_boundary());
            assert_eq!(o, b"hellobye\n");
            assert_eq!(e, big);
        }
        let mut d = Demux::new();
        d.push(&out[..10]).unwrap();
        assert!(!d.at_boundary());
        let e = Demux::new().push(b"hello, raw tty output").unwrap_err();
        assert!(e.to_string().contains("stream framing"), "{e}");
    }
}

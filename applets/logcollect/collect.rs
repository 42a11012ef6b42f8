//! The collector: finds the containers, reads what each wrote since last time
//! (its json-file log and the files in its log directory), keeps a local copy
//! and spools frames for the sinks, then records how far it got.
//!
//! Nothing lost, nothing repeated, across a kill -9: one state file
//! (`LOG_ROOT/.logcollect/state.json`, replaced atomically) holds, together,
//! every source's offset (files are known by device and inode, so a renamed or
//! rotated file is still the same source), the length of every local copy and
//! the spool's end. At start the local copies and the spool are cut back to
//! those lengths and the sources resume at those offsets: whatever a crash
//! half-did is done again exactly once. A round that fails (a full disk, a
//! read error) is undone the same way without a restart: offsets back to the
//! saved state, local copies and the spool cut back to its lengths. Only
//! whole lines are counted: a line still being written is read again next time.
//!
//! A file the container wrote whose last line has no newline yet: that line
//! waits (more of it may come), and is sent as it is, marked
//! `split="partial"`, once the file has not grown for `partial_after` (5 s
//! unless set: long enough for a writer between two writes of one line,
//! short enough for a reader waiting on it) or the container
//! is no longer running (or gone). The offset then moves past it, so if the
//! rest does come it is sent as a line of its own: a line cut in two, never
//! one sent twice. (The container's stdout and stderr need none of this: the
//! engine writes an unfinished last line into the json-file log when the
//! container's output closes, sent marked `split="continues"`.)
//!
//! Retention: stdout.log and stderr.log rotate at max_file_size into gzipped
//! copies (max_files kept). Each container's directory as a whole, the files
//! the container writes there included, is held to max_dir_size: when over
//! it (checked after a rotation and every 10 s), files go oldest (by mtime)
//! first, counted in a warning, among those that are removable: one of our
//! rotated copies (`stdout.log.N.gz`, `stderr.log.N.gz`) other than the newest
//! (`.1.gz`), or a file the container wrote that logcollect has read to its end
//! (its lines are in the spool and the local copies, counted by the saved
//! state) and that nothing wrote to for 5 minutes. Never the live stdout.log /
//! stderr.log, the newest rotated copy, a `.gz` the container wrote (never
//! read), a file being written or one with unread lines: a directory that
//! stays over its cap because of those is reported once. The directory is
//! bound into the container, so removal never follows a link on its way
//! (see `remove_beneath`).
//!
//! A json-file log rotates by renames: the old file keeps its inode and is
//! read to its end (oldest first) before the new one. A file whose size drops
//! below the offset was truncated and is read from the start, with a warning.

use super::config::Settings;
use super::sink::{self, Meta};
use super::spool;
use berth::error::{Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// Longest line forwarded whole; longer ones go in pieces marked as such.
pub const MAX_LINE: usize = 64 << 10;
/// Most bytes taken from one source in one round (the rest next round).
const ROUND: u64 = 512 << 10;
/// A file the container wrote within this long is live: the cap leaves it.
const LIVE: Duration = Duration::from_secs(300);

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Source {
    pub path: PathBuf,
    pub offset: u64,
    /// The file's first bytes (up to 64): an inode the system reused for a new
    /// file after a rotation deleted the old one is told apart by them.
    #[serde(default)]
    pub head: Vec<u8>,
    /// Rounds in a row the file was not found. A json-file log renamed by a
    /// rotation between the listing and the open is missed once; only a file
    /// missed for many rounds is gone.
    #[serde(default)]
    pub missed: u32,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Container {
    pub name: String,
    pub image: String,
    pub dir: PathBuf,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct State {
    /// "dev:ino" → source.
    pub sources: BTreeMap<String, Source>,
    /// Local copy path → its length.
    pub locals: BTreeMap<PathBuf, u64>,
    /// The spool's end: segment and length.
    pub spool: Option<(u64, u64)>,
    /// Container id → where its logs go.
    pub containers: BTreeMap<String, Container>,
    /// Lines the spool bound has dropped, all time.
    #[serde(default)]
    pub dropped: u64,
}

pub fn state_dir(s: &Settings) -> PathBuf {
    s.log_root.join(".logcollect")
}

fn key(m: &fs::Metadata) -> String {
    format!("{}:{}", m.dev(), m.ino())
}

/// The engine's record of a container, as much as logcollect needs.
#[derive(Deserialize)]
struct Record {
    id: String,
    name: String,
    image: String,
    created: String,
    #[serde(default)]
    log_dir: Option<PathBuf>,
}

pub struct Collector {
    pub s: Settings,
    pub state: State,
    hostname: String,
    spool: Option<spool::Writer>,
    /// Unreadable files already reported (reported once, retried always).
    reported: BTreeSet<PathBuf>,
    last_retention: Option<std::time::Instant>,
    /// The spool's end as the saved state counts it: what the sinks may send.
    pub committed: std::sync::Arc<std::sync::Mutex<spool::Pos>>,
    /// Local copies this round wrote to (undone if the round fails).
    written: Vec<PathBuf>,
    /// Cuts a failed round still owes: local copies and the spool's end.
    undo: Undo,
    last_cap: Option<std::time::Instant>,
    /// Directories reported as over their cap with nothing left to remove.
    over_cap: BTreeSet<PathBuf>,
    /// Sources ending in a line without its newline: the file's length and
    /// since when it has not changed.
    tails: BTreeMap<String, (u64, std::time::Instant)>,
}

#[derive(Default)]
struct Undo {
    locals: BTreeMap<PathBuf, u64>,
    spool: Option<(u64, u64)>,
}

impl Collector {
    pub fn open(s: Settings) -> Result<Collector> {
        let dir = state_dir(&s);
        fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        let state: State = match fs::read(dir.join("state.json")) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| {
                berth::error::Error::config(format!(
                    "{}: unreadable state ({e}): move it away to start afresh",
                    dir.join("state.json").display()
                ))
            })?,
            Err(_) => State::default(),
        };
        // cut back what a crash wrote after the last recorded state
        for (p, len) in &state.locals {
            if let Ok(m) = fs::metadata(p)
                && m.len() > *len
            {
                let f = OpenOptions::new().write(true).open(p)?;
                f.set_len(*len)?;
            }
        }
        let spool = if s.sinks.is_empty() {
            None
        } else {
            Some(spool::Writer::open(
                &dir.join("spool"),
                state.spool,
                s.spool_max,
            )?)
        };
        let hostname = nix::unistd::gethostname()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_else(|_| "-".into());
        let committed = match state.spool {
            Some((seq, offset)) => spool::Pos { seq, offset },
            None => spool::Pos { seq: 0, offset: 0 },
        };
        Ok(Collector {
            s,
            state,
            hostname,
            spool,
            reported: BTreeSet::new(),
            last_retention: None,
            committed: std::sync::Arc::new(std::sync::Mutex::new(committed)),
            written: Vec::new(),
            undo: Undo::default(),
            last_cap: None,
            over_cap: BTreeSet::new(),
            tails: BTreeMap::new(),
        })
    }

    fn save(&mut self) -> Result<()> {
        if let Some(w) = &self.spool {
            self.state.spool = Some((w.seq, w.len));
        }
        let p = state_dir(&self.s).join("state.json");
        // written and renamed, not fsynced: a kill -9 leaves the old or the new
        // state whole (what "nothing lost" is about); a power cut may repeat
        // or lose the last moment's lines, as the unsynced copies would anyway
        berth::fsutil::replace_file(&p, &serde_json::to_vec(&self.state).unwrap_or_default())?;
        if let Some((seq, offset)) = self.state.spool {
            *self.committed.lock().unwrap() = spool::Pos { seq, offset };
        }
        Ok(())
    }

    /// The containers the engine has now, by id.
    fn containers(&self) -> Vec<Record> {
        let dir = self.s.graph.join("containers");
        let Ok(rd) = fs::read_dir(&dir) else {
            return Vec::new();
        };
        rd.flatten()
            .filter_map(|e| {
                let b = fs::read(e.path().join("config.json")).ok()?;
                serde_json::from_slice::<Record>(&b).ok()
            })
            .collect()
    }

    /// One round; whether anything was read. A round that fails part way is
    /// undone whole (offsets, local copies, spool back to the last saved
    /// state), so its lines are read again next round: never dropped because
    /// offsets advanced in memory were saved by a later round, never written
    /// twice because a local copy or the spool kept half of them.
    pub fn round(&mut self) -> Result<bool> {
        self.finish_undo()?;
        let records = self.containers();
        let live: BTreeSet<String> = records.iter().map(|r| r.id.clone()).collect();
        for r in &records {
            if !self.state.containers.contains_key(&r.id) {
                let dir = r.log_dir.clone().unwrap_or_else(|| {
                    self.s
                        .log_root
                        .join(berth::logfile::container_dir_name(&r.name, &r.created))
                });
                log::info!(
                    "following {} ({}) into {}",
                    r.name,
                    &r.id[..12.min(r.id.len())],
                    dir.display()
                );
                self.state.containers.insert(
                    r.id.clone(),
                    Container {
                        name: r.name.clone(),
                        image: r.image.clone(),
                        dir,
                    },
                );
            }
            if let Some(c) = self.state.containers.get_mut(&r.id) {
                c.name = r.name.clone();
            }
        }
        // rotation of the local copies happens only right after a saved state,
        // so a rotated file never holds lines the state does not count
        self.rotate_locals()?;
        let before = self.state.clone();
        let spool_at = self.spool.as_ref().map(|w| (w.seq, w.len));
        match self.read_round(live) {
            Ok(any) => {
                self.written.clear();
                if self
                    .last_retention
                    .is_none_or(|t| t.elapsed() > Duration::from_secs(600))
                {
                    self.last_retention = Some(std::time::Instant::now());
                    self.remove_gone_dirs();
                }
                Ok(any)
            }
            Err(e) => {
                self.roll_back(before, spool_at);
                Err(e)
            }
        }
    }

    /// Put local copies and the spool back where `before` (the saved state)
    /// counts them. What cannot be cut back now is kept in `undo` and done
    /// before the next round reads anything.
    fn roll_back(&mut self, mut before: State, spool_at: Option<(u64, u64)>) {
        // lines the bound dropped are gone whatever happened after
        before.dropped = self.state.dropped;
        for p in std::mem::take(&mut self.written) {
            let len = before.locals.get(&p).copied().unwrap_or(0);
            self.undo.locals.insert(p, len);
        }
        self.state = before;
        self.undo.spool = spool_at;
        if let Err(e) = self.finish_undo() {
            log::warn!("undoing a failed round: {e} (trying again next round)");
        }
    }

    fn finish_undo(&mut self) -> Result<()> {
        while let Some((p, len)) = self.undo.locals.pop_first() {
            let cut = match OpenOptions::new().write(true).open(&p) {
                Ok(f) => f.set_len(len),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(e),
            };
            if let Err(e) = cut {
                let err = berth::error::Error::from(e).context(format!("cut back {}", p.display()));
                self.undo.locals.insert(p, len);
                return Err(err);
            }
        }
        if let (Some((seq, len)), Some(w)) = (self.undo.spool, &mut self.spool) {
            w.roll_back(seq, len)?;
            self.undo.spool = None;
        }
        Ok(())
    }

    fn read_round(&mut self, live: BTreeSet<String>) -> Result<bool> {
        let mut frames = Vec::new();
        let mut any = false;
        let ids: Vec<String> = self.state.containers.keys().cloned().collect();
        let mut seen_keys: BTreeSet<String> = BTreeSet::new();
        for id in &ids {
            let c = self.state.containers[id].clone();
            if let Err(e) = fs::create_dir_all(&c.dir) {
                self.report(&c.dir, &e.to_string());
                continue;
            }
            // the engine's json-file log: rotated ones (oldest first), then the current
            let cdir = self.s.graph.join("containers").join(id);
            let base = format!("{id}-json.log");
            let mut logs: Vec<(u32, PathBuf)> = fs::read_dir(&cdir)
                .map(|rd| {
                    rd.flatten()
                        .filter_map(|e| {
                            let n = e.file_name().to_string_lossy().into_owned();
                            let rank = if n == base {
                                0
                            } else {
                                n.strip_prefix(&format!("{base}."))?.parse::<u32>().ok()?
                            };
                            Some((rank, e.path()))
                        })
                        .collect()
                })
                .unwrap_or_default();
            logs.sort_by_key(|l| std::cmp::Reverse(l.0));
            for (_, p) in logs {
                any |= self.follow(&p, &c, id, Kind::Json, &mut frames, &mut seen_keys)?;
                // the newer file waits until this one is read to its end: lines
                // go out in the order they were written
                let left = fs::metadata(&p).ok().and_then(|m| {
                    let s = self.state.sources.get(&key(&m))?;
                    Some(m.len() > s.offset)
                });
                if left == Some(true) {
                    for (_, newer) in logs_rest(&cdir, &base, &p) {
                        if let Ok(m) = fs::metadata(&newer) {
                            seen_keys.insert(key(&m));
                        }
                    }
                    break;
                }
            }
            // what the container writes into its log directory
            let mut files = Vec::new();
            walk(&c.dir, &c.dir, &mut files);
            for rel in files {
                let p = c.dir.join(&rel);
                any |= self.follow(&p, &c, id, Kind::File(rel), &mut frames, &mut seen_keys)?;
            }
        }
        // sources no longer seen for a while were deleted (or rotated away)
        for (k, src) in self.state.sources.iter_mut() {
            if seen_keys.contains(k) {
                src.missed = 0;
            } else {
                src.missed += 1;
            }
        }
        self.state.sources.retain(|_, s| s.missed < 40);
        self.tails.retain(|k, _| seen_keys.contains(k));
        // containers gone from the engine: nothing more will come
        self.state.containers.retain(|id, _| live.contains(id));
        if let Some(w) = &mut self.spool {
            w.append(&frames)?;
        }
        self.save()?;
        // only after the save: a failed round is rolled back to the segment
        // it started in, which the bound must not have dropped meanwhile (the
        // count is saved with the next round's state)
        if let Some(w) = &self.spool {
            let dropped = w.enforce_bound();
            if dropped > 0 {
                self.state.dropped += dropped;
                log::warn!(
                    "spool over its bound ({} bytes): dropped the {dropped} oldest lines ({} in all)",
                    self.s.spool_max,
                    self.state.dropped
                );
            }
        }
        Ok(any)
    }

    fn report(&mut self, p: &Path, why: &str) {
        if self.reported.insert(p.to_path_buf()) {
            log::warn!("{}: {why} (retrying)", p.display());
        }
    }

    /// Read one source from its offset; local copy and frames for what is new.
    fn follow(
        &mut self,
        path: &Path,
        c: &Container,
        id: &str,
        kind: Kind,
        frames: &mut Vec<u8>,
        seen: &mut BTreeSet<String>,
    ) -> Result<bool> {
        let mut f = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => {
                self.report(path, &e.to_string());
                return Ok(false);
            }
        };
        self.reported.remove(path);
        let m = f.metadata()?;
        if !m.is_file() {
            return Ok(false);
        }
        let k = key(&m);
        seen.insert(k.clone());
        let k2 = k.clone();
        let mut head = vec![0u8; 64.min(m.len() as usize)];
        {
            use std::os::unix::fs::FileExt;
            let n = f.read_at(&mut head, 0).unwrap_or(0);
            head.truncate(n);
        }
        let src = self.state.sources.entry(k2).or_default();
        src.path = path.to_path_buf();
        if !head.starts_with(&src.head) || src.head.is_empty() && src.offset > 0 {
            // not the file the state knew under this inode
            src.offset = 0;
            src.head.clear();
        }
        if src.head.len() < head.len() {
            src.head = head;
        }
        if m.len() < src.offset {
            log::warn!(
                "{}: truncated (from {} to {} bytes); reading it from the start",
                path.display(),
                src.offset,
                m.len()
            );
            src.offset = 0;
        }
        if m.len() == src.offset {
            return Ok(false);
        }
        f.seek(SeekFrom::Start(src.offset))?;
        // a round takes at most a local file's worth, so the copies rotate
        // near their size (rotation happens between rounds)
        let mut buf = Vec::new();
        (&mut f)
            .take(ROUND.min(self.s.max_file_size.max(MAX_LINE as u64)))
            .read_to_end(&mut buf)?;
        // whole lines only, unless one line alone is longer than the cap
        // (whole pieces of it: the rest waits for more or for its newline)
        let mut used = match buf.iter().rposition(|b| *b == b'\n') {
            Some(i) => i + 1,
            None if buf.len() >= MAX_LINE && matches!(kind, Kind::File(_)) => {
                buf.len() / MAX_LINE * MAX_LINE
            }
            None => 0,
        };
        // a last line without its newline, at the end of a file the container
        // wrote: sent as it is once nothing was added for partial_after or the
        // container has stopped (see the module doc)
        let mut partial = false;
        let at_end = src.offset + buf.len() as u64 >= m.len();
        if matches!(kind, Kind::File(_)) && used < buf.len() && at_end {
            let now = std::time::Instant::now();
            let since = match self.tails.get(&k) {
                Some((len, t)) if *len == m.len() => *t,
                _ => {
                    self.tails.insert(k.clone(), (m.len(), now));
                    now
                }
            };
            let idle = Duration::from_secs(self.s.partial_after);
            if now.duration_since(since) >= idle || !running(&self.s.graph, id) {
                used = buf.len();
                partial = true;
                self.tails.remove(&k);
            }
        } else {
            self.tails.remove(&k);
        }
        if used == 0 {
            return Ok(false);
        }
        let data = &buf[..used];
        let start = src.offset;
        let mut local_out: BTreeMap<&'static str, Vec<u8>> = BTreeMap::new();
        let mut out_frames = Vec::new();
        match &kind {
            Kind::Json => {
                for line in data.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                    let Some(e) = berth::logfile::parse_entry(line) else {
                        continue;
                    };
                    let stream = e.stream.as_str();
                    local_out
                        .entry(if stream == "stderr" {
                            "stderr.log"
                        } else {
                            "stdout.log"
                        })
                        .or_default()
                        .extend_from_slice(&e.bytes);
                    self.frames_of(
                        &mut out_frames,
                        c,
                        (id, stream, ""),
                        e.time,
                        &e.bytes,
                        false,
                    );
                }
            }
            Kind::File(rel) => {
                let rel = rel.to_string_lossy().into_owned();
                let now = SystemTime::now();
                let mut rest = data;
                while !rest.is_empty() {
                    let end = rest
                        .iter()
                        .position(|b| *b == b'\n')
                        .map(|i| i + 1)
                        .unwrap_or(rest.len());
                    let last = end == rest.len();
                    self.frames_of(
                        &mut out_frames,
                        c,
                        (id, "file", &rel),
                        now,
                        &rest[..end],
                        partial && last,
                    );
                    rest = &rest[end..];
                }
            }
        }
        for (name, bytes) in local_out {
            let p = c.dir.join(name);
            // before the write: a write that fails half way is cut back too
            self.written.push(p.clone());
            let mut f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&p)
                .with_context(|| format!("open {}", p.display()))?;
            f.write_all(&bytes)
                .with_context(|| format!("write {}", p.display()))?;
            let len = f.metadata()?.len();
            self.state.locals.insert(p, len);
        }
        frames.extend_from_slice(&out_frames);
        if let Some(s) = self.state.sources.get_mut(&key(&m)) {
            s.offset = start + used as u64;
        }
        Ok(true)
    }

    /// Frames for one line (pieces of MAX_LINE for a longer one), unless no
    /// sink is configured. `partial`: a last line sent without its newline.
    fn frames_of(
        &self,
        out: &mut Vec<u8>,
        c: &Container,
        (id, stream, file): (&str, &str, &str),
        time: SystemTime,
        line: &[u8],
        partial: bool,
    ) {
        if self.spool.is_none() {
            return;
        }
        let pieces: Vec<&[u8]> = line.chunks(MAX_LINE).collect();
        let n = pieces.len();
        for (i, p) in pieces.into_iter().enumerate() {
            let m = Meta {
                time,
                name: &c.name,
                id,
                image: &c.image,
                stream,
                file,
                // more of this line follows: the next piece, or (a json-file
                // entry without its newline) the next entry
                cont: i + 1 < n || !p.ends_with(b"\n"),
                partial: partial && i + 1 == n,
            };
            sink::frame(
                out,
                self.s.facility,
                &self.hostname,
                &self.s.app_name,
                &m,
                p,
            );
        }
    }

    /// stdout.log / stderr.log past max_file_size: renamed, gzipped, the oldest
    /// beyond max_files removed; then the directory's cap.
    fn rotate_locals(&mut self) -> Result<()> {
        let locals: Vec<(PathBuf, u64)> = self
            .state
            .locals
            .iter()
            .map(|(p, l)| (p.clone(), *l))
            .collect();
        let mut dirs = BTreeSet::new();
        for (p, len) in locals {
            if len < self.s.max_file_size {
                continue;
            }
            let name = p
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            let dir = p.parent().unwrap_or(Path::new("/")).to_path_buf();
            for i in (1..self.s.max_files).rev() {
                let from = dir.join(format!("{name}.{i}.gz"));
                if from.exists() {
                    let _ = fs::rename(&from, dir.join(format!("{name}.{}.gz", i + 1)));
                }
            }
            let _ = fs::remove_file(dir.join(format!("{name}.{}.gz", self.s.max_files + 1)));
            let gz = dir.join(format!("{name}.1.gz"));
            if let Err(e) = gzip_to(&p, &gz) {
                log::warn!("{}: rotation: {e}", p.display());
                continue;
            }
            let f = OpenOptions::new().write(true).open(&p)?;
            f.set_len(0)?;
            self.state.locals.insert(p.clone(), 0);
            dirs.insert(dir);
        }
        // every directory now and then: the container's own files grow it too
        if self
            .last_cap
            .is_none_or(|t| t.elapsed() > Duration::from_secs(10))
        {
            self.last_cap = Some(std::time::Instant::now());
            dirs.extend(self.state.containers.values().map(|c| c.dir.clone()));
        }
        for d in dirs {
            self.cap_dir(&d);
        }
        Ok(())
    }

    /// While the directory is over its cap, remove its oldest removable files
    /// (the rule is in the module doc); one counted warning per pass.
    fn cap_dir(&mut self, d: &Path) {
        let mut all = Vec::new();
        walk_all(d, &mut all);
        let mut total: u64 = all.iter().map(|(_, m)| m.len()).sum();
        if total <= self.s.max_dir_size {
            self.over_cap.remove(d);
            return;
        }
        let now = SystemTime::now();
        let mut removable: Vec<(SystemTime, PathBuf, fs::Metadata)> = all
            .into_iter()
            .filter(|(p, m)| {
                let name = p
                    .file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned();
                let top = p.parent() == Some(d);
                if top && (name == "stdout.log" || name == "stderr.log") {
                    return false;
                }
                if top
                    && (name.starts_with("stdout.log.") || name.starts_with("stderr.log."))
                    && name.ends_with(".gz")
                {
                    // our own rotated copies; the newest of each stays: it
                    // holds the last lines before the live file
                    return !name.ends_with(".1.gz");
                }
                if name.ends_with(".gz") {
                    // the container's own archives are never read, so never
                    // known to be forwarded: kept
                    return false;
                }
                let idle = m
                    .modified()
                    .ok()
                    .and_then(|t| now.duration_since(t).ok())
                    .is_some_and(|a| a >= LIVE);
                let read = self
                    .state
                    .sources
                    .get(&key(m))
                    .is_some_and(|s| s.offset >= m.len());
                idle && read
            })
            .map(|(p, m)| (m.modified().unwrap_or(SystemTime::UNIX_EPOCH), p, m))
            .collect();
        removable.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
        let (mut n, mut bytes, mut names) = (0u64, 0u64, Vec::new());
        for (_, p, m) in removable {
            if total <= self.s.max_dir_size {
                break;
            }
            let len = m.len();
            match remove_beneath(d, &p, &m) {
                Ok(()) => {
                    total = total.saturating_sub(len);
                    n += 1;
                    bytes += len;
                    if names.len() < 5 {
                        names.push(p.strip_prefix(d).unwrap_or(&p).display().to_string());
                    }
                }
                Err(e) => log::warn!("{}: {e}", p.display()),
            }
        }
        if n > 0 {
            log::warn!(
                "{} is over {} bytes: removed its {n} oldest forwarded files ({bytes} bytes: {}{})",
                d.display(),
                self.s.max_dir_size,
                names.join(", "),
                if n as usize > names.len() {
                    ", …"
                } else {
                    ""
                }
            );
        }
        if total > self.s.max_dir_size {
            if self.over_cap.insert(d.to_path_buf()) {
                log::warn!(
                    "{} is still over {} bytes ({total}): the rest is live or not yet read",
                    d.display(),
                    self.s.max_dir_size
                );
            }
        } else {
            self.over_cap.remove(d);
        }
    }

    /// Directories of containers gone for gone_days.
    fn remove_gone_dirs(&mut self) {
        let keep: BTreeSet<PathBuf> = self
            .state
            .containers
            .values()
            .map(|c| c.dir.clone())
            .collect();
        let Ok(rd) = fs::read_dir(&self.s.log_root) else {
            return;
        };
        let limit = Duration::from_secs(self.s.gone_days * 86400);
        for e in rd.flatten() {
            let p = e.path();
            if e.file_name().to_string_lossy().starts_with('.') || keep.contains(&p) || !p.is_dir()
            {
                continue;
            }
            let newest = newest_mtime(&p);
            if newest.elapsed().unwrap_or_default() > limit {
                match fs::remove_dir_all(&p) {
                    Ok(()) => log::info!(
                        "removed {} (its container is gone, nothing new for {} days)",
                        p.display(),
                        self.s.gone_days
                    ),
                    Err(err) => log::warn!("{}: {err}", p.display()),
                }
                self.state.locals.retain(|l, _| !l.starts_with(&p));
            }
        }
    }

    /// The oldest segment a sink still needs, so older ones can go.
    pub fn collect_spool(&self, oldest_needed: u64) {
        if let Some(w) = &self.spool {
            w.collect(oldest_needed);
        }
    }
}

/// Whether the engine records the container as running (a container that
/// stopped will not finish its last line).
fn running(graph: &Path, id: &str) -> bool {
    fs::read(graph.join("containers").join(id).join("state.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .is_some_and(|v| v["status"] == "running")
}

/// The json-file logs newer than `p` (rotated ones with a smaller number, and
/// the current one): still known, only not read this round.
fn logs_rest(cdir: &Path, base: &str, p: &Path) -> Vec<(u32, PathBuf)> {
    let rank = |n: &str| -> Option<u32> {
        if n == base {
            Some(0)
        } else {
            n.strip_prefix(&format!("{base}."))?.parse().ok()
        }
    };
    let Some(mine) = p.file_name().and_then(|n| rank(&n.to_string_lossy())) else {
        return Vec::new();
    };
    fs::read_dir(cdir)
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| {
                    let r = rank(&e.file_name().to_string_lossy())?;
                    (r < mine).then(|| (r, e.path()))
                })
                .collect()
        })
        .unwrap_or_default()
}

#[derive(Clone)]
enum Kind {
    Json,
    File(PathBuf),
}

/// Regular files under `dir` (relative paths), not ours (stdout.log,
/// stderr.log and their rotations).
fn walk(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        let Ok(ft) = e.file_type() else {
            continue;
        };
        let rel = p.strip_prefix(root).unwrap_or(&p).to_path_buf();
        if ft.is_dir() {
            walk(root, &p, out);
        } else if ft.is_file() {
            let name = rel.to_string_lossy();
            if dir == root && (name.starts_with("stdout.log") || name.starts_with("stderr.log")) {
                continue;
            }
            if name.ends_with(".gz") {
                continue;
            }
            out.push(rel);
        }
    }
}

/// Every regular file under `dir`, ours included, with its metadata.
/// Remove `p`, listed under `d` as `was`, without following a symlink on the
/// way: the directory is bound into the container, which may swap one of its
/// subdirectories for a link to the host's /etc between the listing and the
/// removal. Each directory is opened beneath `d` with O_NOFOLLOW, and only
/// the very file listed (same device and inode, still a regular file) goes.
fn remove_beneath(d: &Path, p: &Path, was: &fs::Metadata) -> std::io::Result<()> {
    use nix::fcntl::AtFlags;
    use nix::unistd::{UnlinkatFlags, unlinkat};
    use std::os::unix::fs::MetadataExt;
    let rel = p
        .strip_prefix(d)
        .map_err(|_| std::io::Error::other("not under its directory"))?;
    let (Some(parent), Some(name)) = (rel.parent(), rel.file_name()) else {
        return Err(std::io::Error::other("no file name"));
    };
    let dir = berth::fsutil::open_dir_beneath(d, parent)?;
    let now = nix::sys::stat::fstatat(&dir, name, AtFlags::AT_SYMLINK_NOFOLLOW)
        .map_err(std::io::Error::from)?;
    let regular = now.st_mode & libc::S_IFMT == libc::S_IFREG;
    if !regular || now.st_dev != was.dev() || now.st_ino != was.ino() {
        return Err(std::io::Error::other(
            "changed since it was listed; left alone",
        ));
    }
    unlinkat(&dir, name, UnlinkatFlags::NoRemoveDir).map_err(std::io::Error::from)
}

fn walk_all(dir: &Path, out: &mut Vec<(PathBuf, fs::Metadata)>) {
    let Ok(rd) = fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let Ok(m) = e.metadata() else {
            continue;
        };
        if m.is_dir() {
            walk_all(&e.path(), out);
        } else if m.is_file() {
            out.push((e.path(), m));
        }
    }
}

fn newest_mtime(p: &Path) -> SystemTime {
    let mut newest = fs::metadata(p)
        .and_then(|m| m.modified())
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let mut files = Vec::new();
    walk(p, p, &mut files);
    for f in files {
        if let Ok(t) = fs::metadata(p.join(f)).and_then(|m| m.modified()) {
            newest = newest.max(t);
        }
    }
    newest
}

fn gzip_to(from: &Path, to: &Path) -> Result<()> {
    let tmp = berth::fsutil::temp_path(to);
    {
        let mut input = File::open(from).with_context(|| format!("open {}", from.display()))?;
        let out = File::create(&tmp).with_context(|| format!("create {}", tmp.display()))?;
        let mut gz = flate2::write::GzEncoder::new(out, flate2::Compression::default());
        std::io::copy(&mut input, &mut gz)?;
        gz.finish()?.sync_all()?;
    }
    fs::rename(&tmp, to).with_context(|| format!("rename to {}", to.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth::logfile::{Rotation, Stream};

    /// An engine's graph with containers "a" and "b", each with a json-file log.
    struct Fixture {
        root: PathBuf,
        c: Collector,
    }

    impl Fixture {
        fn new() -> Fixture {
            let root = std::env::temp_dir().join(format!("berth-lc-{}", berth::util::uuid4()));
            let mut s = Settings {
                graph: root.join("graph"),
                log_root: root.join("logs"),
                ..Settings::default()
            };
            s.sinks
                .push(super::super::config::Sink::parse("tcp://127.0.0.1:9").unwrap());
            for n in ["a", "b"] {
                let id = n.repeat(64);
                let d = s.graph.join("containers").join(&id);
                fs::create_dir_all(&d).unwrap();
                let rec = serde_json::json!({
                    "id": id, "name": n, "image": "img",
                    "created": "2026-12-01T00:00:00Z",
                    "log_dir": s.log_root.join(n),
                });
                fs::write(d.join("config.json"), rec.to_string()).unwrap();
            }
            let c = Collector::open(s).unwrap();
            Fixture { root, c }
        }

        fn write(&self, n: &str, lines: std::ops::Range<u32>) {
            let id = n.repeat(64);
            let p = self
                .c
                .s
                .graph
                .join("containers")
                .join(&id)
                .join(format!("{id}-json.log"));
            let mut w = berth::logfile::Writer::open(&p, Rotation::default()).unwrap();
            for i in lines {
                w.write(
                    Stream::Stdout,
                    format!("{n}-{i}\n").as_bytes(),
                    SystemTime::now(),
                )
                .unwrap();
            }
            w.close().unwrap();
        }

        /// Every line text in the spool up to its committed end, in order.
        fn spooled(&self) -> Vec<String> {
            let at = *self.c.committed.lock().unwrap();
            let dir = state_dir(&self.c.s).join("spool");
            let first = spool::segments(&dir)[0];
            let (b, _) = spool::read_from(
                &dir,
                spool::Pos {
                    seq: first,
                    offset: 0,
                },
                1 << 30,
                at,
            )
            .unwrap();
            spool::frames(&b)
                .into_iter()
                .map(|(s, e)| {
                    let f = String::from_utf8_lossy(&b[s..e]).into_owned();
                    f.rsplit("] ").next().unwrap().to_string()
                })
                .collect()
        }

        fn local(&self, n: &str) -> String {
            fs::read_to_string(self.c.s.log_root.join(n).join("stdout.log")).unwrap_or_default()
        }
    }

    impl Drop for Fixture {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.root);
        }
    }

    fn names(n: &str, r: std::ops::Range<u32>) -> Vec<String> {
        r.map(|i| format!("{n}-{i}")).collect()
    }

    #[test]
    fn a_last_line_without_newline_goes_once_the_container_stops() {
        let mut f = Fixture::new();
        let id = "a".repeat(64);
        let state = f.c.s.graph.join("containers").join(&id).join("state.json");
        fs::write(&state, r#"{"status":"running"}"#).unwrap();
        let dir = f.c.s.log_root.join("a");
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("job.log"), "one\ntwo, still being writ").unwrap();
        f.c.round().unwrap();
        assert_eq!(f.spooled(), ["one"]);
        // stopped: the engine will write no more of it
        fs::write(&state, r#"{"status":"exited"}"#).unwrap();
        f.c.round().unwrap();
        assert_eq!(f.spooled(), ["one", "two, still being writ"]);
        let all = fs::read_dir(state_dir(&f.c.s).join("spool"))
            .unwrap()
            .flatten()
            .map(|e| fs::read_to_string(e.path()).unwrap())
            .collect::<String>();
        assert!(all.contains("split=\"partial\"] two"), "{all}");
        // the rest, if it comes after all, is a line of its own
        let mut j = OpenOptions::new()
            .append(true)
            .open(dir.join("job.log"))
            .unwrap();
        j.write_all(b"ten\n").unwrap();
        f.c.round().unwrap();
        assert_eq!(f.spooled(), ["one", "two, still being writ", "ten"]);
    }

    #[test]
    fn a_round_that_fails_part_way_is_done_again_whole() {
        let mut f = Fixture::new();
        f.write("a", 0..3);
        f.write("b", 0..2);
        // b's local copy cannot be written ("a" is read first, its offset
        // advanced, its local copy written): the round fails
        let blocked = f.c.s.log_root.join("b").join("stdout.log");
        fs::create_dir_all(&blocked).unwrap();
        assert!(f.c.round().is_err());
        assert!(f.c.round().is_err());
        fs::remove_dir(&blocked).unwrap();
        f.c.round().unwrap();
        let mut want = names("a", 0..3);
        want.extend(names("b", 0..2));
        assert_eq!(f.spooled(), want);
        assert_eq!(f.local("a"), "a-0\na-1\na-2\n");
        assert_eq!(f.local("b"), "b-0\nb-1\n");

        // the spool's write fails half way (a full disk): the same
        f.write("a", 3..5);
        f.c.spool.as_mut().unwrap().fail_after = Some(10);
        assert!(f.c.round().is_err());
        f.c.round().unwrap();
        want.extend(names("a", 3..5));
        assert_eq!(f.spooled(), want);
        assert_eq!(f.local("a"), "a-0\na-1\na-2\na-3\na-4\n");
        // and what a restart takes up is the same
        let s = f.c.s.clone();
        f.c = Collector::open(s).unwrap();
        f.c.round().unwrap();
        assert_eq!(f.spooled(), want);
        assert_eq!(f.local("a"), "a-0\na-1\na-2\na-3\na-4\n");
    }

    #[test]
    fn the_cap_removes_only_what_it_listed_never_through_a_link() {
        let t = std::env::temp_dir().join(format!("berth-cap-{}", berth::util::uuid4()));
        let (d, victim) = (t.join("ctr"), t.join("host-etc"));
        fs::create_dir_all(d.join("sub")).unwrap();
        fs::create_dir_all(&victim).unwrap();
        fs::write(d.join("sub/f"), "old log").unwrap();
        fs::write(victim.join("f"), "host file").unwrap();
        let listed = fs::symlink_metadata(d.join("sub/f")).unwrap();
        // the container swaps its subdirectory for a link after the listing
        fs::rename(d.join("sub"), d.join("was-sub")).unwrap();
        std::os::unix::fs::symlink(&victim, d.join("sub")).unwrap();
        assert!(remove_beneath(&d, &d.join("sub/f"), &listed).is_err());
        assert_eq!(fs::read_to_string(victim.join("f")).unwrap(), "host file");
        // a file replaced by another of the same name is left too
        fs::remove_file(d.join("sub")).unwrap();
        fs::rename(d.join("was-sub"), d.join("sub")).unwrap();
        // (made before the old one goes, so it cannot get its inode number)
        fs::write(d.join("sub/f2"), "new").unwrap();
        fs::rename(d.join("sub/f2"), d.join("sub/f")).unwrap();
        assert!(remove_beneath(&d, &d.join("sub/f"), &listed).is_err());
        // what was listed goes
        let now = fs::symlink_metadata(d.join("sub/f")).unwrap();
        remove_beneath(&d, &d.join("sub/f"), &now).unwrap();
        assert!(!d.join("sub/f").exists());
        let _ = fs::remove_dir_all(&t);
    }
}

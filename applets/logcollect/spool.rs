//! The on-disk queue between the collector and the syslog sinks.
//!
//! Segments `SPOOL/<seq, 16 digits>.seg` hold syslog frames exactly as they go
//! on the wire (RFC 6587 octet counting: `LEN SP MSG`), so a sink sends bytes
//! it reads, and a frame boundary is always findable. The collector appends to
//! the newest segment and records its length in its state file in the same
//! step as the source offsets (see `collect.rs`); at start the segment is cut
//! back to that length, so what a crash half-wrote is written again once, not
//! twice. Each sink keeps its own position (`sink-<n>.pos`: seq and offset,
//! in a mapped file, see [`PosFile`]), stored as a batch goes into the
//! socket and taken back to the last acknowledged one when the peer's TCP
//! stack does not acknowledge the bytes.
//!
//! Bounded: when the segments exceed the bound, the oldest is dropped and the
//! lines in it counted in a warning — only then is anything lost.

use berth::error::{Context, Result};
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// A new segment once the current one is this big.
const SEGMENT: u64 = 4 << 20;

pub fn seg_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:016}.seg"))
}

/// The segments present, oldest first.
pub fn segments(dir: &Path) -> Vec<u64> {
    let mut v: Vec<u64> = fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| {
                    e.file_name()
                        .to_str()?
                        .strip_suffix(".seg")?
                        .parse::<u64>()
                        .ok()
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort_unstable();
    v
}

/// The collector's end.
pub struct Writer {
    dir: PathBuf,
    pub seq: u64,
    pub len: u64,
    file: File,
    max: u64,
    /// Tests: the next append writes this many bytes, then fails.
    #[cfg(test)]
    pub fail_after: Option<usize>,
}

impl Writer {
    /// Open at the position the collector's state recorded (cutting off what
    /// a crash wrote after it), or at a fresh segment.
    pub fn open(dir: &Path, at: Option<(u64, u64)>, max: u64) -> Result<Writer> {
        fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        let (seq, len) = match at {
            Some(p) => p,
            None => (segments(dir).last().map(|s| s + 1).unwrap_or(1), 0),
        };
        let path = seg_path(dir, seq);
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("open {}", path.display()))?;
        file.set_len(len)
            .with_context(|| format!("truncate {}", path.display()))?;
        // segments after ours were written after the state we resume from
        for s in segments(dir).into_iter().filter(|s| *s > seq) {
            let _ = fs::remove_file(seg_path(dir, s));
        }
        Ok(Writer {
            dir: dir.to_path_buf(),
            seq,
            len,
            file,
            max,
            #[cfg(test)]
            fail_after: None,
        })
    }

    /// Append frames (already octet-counted): all of them or, on an error,
    /// none (the segment is cut back to where it ended, so `len` stays the
    /// file's length).
    pub fn append(&mut self, frames: &[u8]) -> Result<()> {
        if frames.is_empty() {
            return Ok(());
        }
        if self.len >= SEGMENT {
            let path = seg_path(&self.dir, self.seq + 1);
            self.file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .with_context(|| format!("open {}", path.display()))?;
            self.seq += 1;
            self.len = 0;
        } else if self.file.metadata().map(|m| m.len()).ok() != Some(self.len) {
            // an earlier failed write could not be cut back then
            self.file
                .set_len(self.len)
                .with_context(|| format!("cut back {}", seg_path(&self.dir, self.seq).display()))?;
        }
        if let Err(e) = self.write_frames(frames) {
            let cut = self.file.set_len(self.len);
            let e = berth::error::Error::from(e)
                .context(format!("write {}", seg_path(&self.dir, self.seq).display()));
            return Err(match cut {
                Ok(()) => e,
                // the next append or roll_back cuts again; until then the
                // state never counts past `len`
                Err(c) => e.context(format!("and cutting it back: {c}")),
            });
        }
        self.len += frames.len() as u64;
        Ok(())
    }

    #[cfg(not(test))]
    fn write_frames(&mut self, frames: &[u8]) -> std::io::Result<()> {
        self.file.write_all(frames)
    }

    /// A write that stops after `fail_after` bytes, as on a full disk.
    #[cfg(test)]
    fn write_frames(&mut self, frames: &[u8]) -> std::io::Result<()> {
        match self.fail_after.take() {
            Some(n) => {
                self.file.write_all(&frames[..n.min(frames.len())])?;
                Err(std::io::Error::from_raw_os_error(libc::ENOSPC))
            }
            None => self.file.write_all(frames),
        }
    }

    /// Back to an earlier end (the last saved state's): later segments go,
    /// that segment is cut to `len`.
    pub fn roll_back(&mut self, seq: u64, len: u64) -> Result<()> {
        if seq != self.seq {
            let path = seg_path(&self.dir, seq);
            if !path.exists() {
                // the bound dropped it (its lines counted): the segments
                // after it hold only what is undone, so the current one is
                // emptied rather than a segment of zeros made up
                self.file.set_len(0).with_context(|| {
                    format!("cut back {}", seg_path(&self.dir, self.seq).display())
                })?;
                self.len = 0;
                return Ok(());
            }
            self.file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .with_context(|| format!("open {}", path.display()))?;
            for s in segments(&self.dir).into_iter().filter(|s| *s > seq) {
                let _ = fs::remove_file(seg_path(&self.dir, s));
            }
            self.seq = seq;
        }
        self.file
            .set_len(len)
            .with_context(|| format!("cut back {}", seg_path(&self.dir, seq).display()))?;
        self.len = len;
        Ok(())
    }

    /// Drop whole old segments past the bound; the number of lines dropped.
    pub fn enforce_bound(&self) -> u64 {
        let segs = segments(&self.dir);
        let mut total: u64 = segs
            .iter()
            .map(|s| {
                fs::metadata(seg_path(&self.dir, *s))
                    .map(|m| m.len())
                    .unwrap_or(0)
            })
            .sum();
        let mut dropped = 0;
        for s in segs {
            if total <= self.max || s == self.seq {
                break;
            }
            let p = seg_path(&self.dir, s);
            let data = fs::read(&p).unwrap_or_default();
            dropped += frames(&data).len() as u64;
            total = total.saturating_sub(data.len() as u64);
            let _ = fs::remove_file(&p);
        }
        dropped
    }

    /// Remove segments every sink has sent.
    pub fn collect(&self, oldest_needed: u64) {
        for s in segments(&self.dir) {
            if s < oldest_needed && s < self.seq {
                let _ = fs::remove_file(seg_path(&self.dir, s));
            }
        }
    }
}

/// The frames in `data` (whole ones only): (start, end) byte ranges.
pub fn frames(data: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < data.len() {
        let Some(sp) = data[i..].iter().position(|b| *b == b' ') else {
            break;
        };
        let Some(n) = std::str::from_utf8(&data[i..i + sp])
            .ok()
            .and_then(|s| s.parse::<usize>().ok())
        else {
            break;
        };
        let end = i + sp + 1 + n;
        if end > data.len() {
            break;
        }
        out.push((i, end));
        i = end;
    }
    out
}

/// A sink's position.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Pos {
    pub seq: u64,
    pub offset: u64,
}

/// Bytes of a position file: the active slot's number, then two slots of
/// (seq, offset), little-endian u64s.
const POS_LEN: usize = 40;

fn decode_pos(b: &[u8]) -> Option<Pos> {
    if b.len() != POS_LEN {
        // The JSON of earlier versions.
        return serde_json::from_slice(b).ok();
    }
    let u = |i: usize| u64::from_le_bytes(b[i * 8..i * 8 + 8].try_into().unwrap());
    let slot = (u(0) & 1) as usize;
    Some(Pos {
        seq: u(1 + 2 * slot),
        offset: u(2 + 2 * slot),
    })
}

/// A sink's position as it was last stored (either format).
pub fn load_pos(path: &Path) -> Option<Pos> {
    decode_pos(&fs::read(path).ok()?)
}

/// A sink's position file, mapped shared into memory: storing a position is
/// a few memory writes, which the kernel keeps once made even if the process
/// is killed the next instant. So a sink stores where it will be *before* it
/// writes a batch to a socket whose buffer has room (such a write completes
/// even when a kill -9 arrives during it), and a restart neither repeats nor
/// skips a line; only the nanoseconds between the store and the write's
/// entry remain. A power cut loses what the page cache had not written, and
/// then lines are sent again, never lost.
pub struct PosFile {
    map: std::ptr::NonNull<u8>,
    _file: File,
}

// SAFETY: the mapping is only touched through atomics, and lives as long as
// the PosFile that owns it.
unsafe impl Send for PosFile {}

impl PosFile {
    pub fn open(path: &Path) -> Result<PosFile> {
        use std::os::fd::AsRawFd;
        let old = fs::read(path).ok().and_then(|b| decode_pos(&b));
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .with_context(|| path.display().to_string())?;
        if f.metadata()?.len() != POS_LEN as u64 {
            f.set_len(0)?;
            f.set_len(POS_LEN as u64)?;
        }
        // SAFETY: a fresh shared mapping of POS_LEN bytes of a file we hold
        // open with read and write access; unmapped in Drop.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                POS_LEN,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                f.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(berth::error::Error::from(std::io::Error::last_os_error())
                .context(format!("map {}", path.display())));
        }
        let pf = PosFile {
            map: std::ptr::NonNull::new(p.cast()).expect("mmap gave a pointer"),
            _file: f,
        };
        if let Some(o) = old {
            pf.store(o);
        }
        Ok(pf)
    }

    fn word(&self, i: usize) -> &std::sync::atomic::AtomicU64 {
        // SAFETY: i < 5, the mapping is page-aligned, so every word is
        // aligned and inside it; AtomicU64 has u64's layout.
        unsafe { &*(self.map.as_ptr().add(i * 8) as *const std::sync::atomic::AtomicU64) }
    }

    pub fn load(&self) -> Option<Pos> {
        use std::sync::atomic::Ordering::Acquire;
        let slot = (u64::from_le(self.word(0).load(Acquire)) & 1) as usize;
        let p = Pos {
            seq: u64::from_le(self.word(1 + 2 * slot).load(Acquire)),
            offset: u64::from_le(self.word(2 + 2 * slot).load(Acquire)),
        };
        (p.seq != 0).then_some(p)
    }

    /// Store a position: the idle slot first, then the switch to it, so a
    /// kill between the two leaves the previous position whole.
    pub fn store(&self, p: Pos) {
        use std::sync::atomic::Ordering::{Acquire, Release};
        let active = u64::from_le(self.word(0).load(Acquire));
        let next = (active + 1) & 1;
        self.word(1 + 2 * next as usize)
            .store(p.seq.to_le(), Release);
        self.word(2 + 2 * next as usize)
            .store(p.offset.to_le(), Release);
        self.word(0).store(next.to_le(), Release);
    }
}

impl Drop for PosFile {
    fn drop(&mut self) {
        // SAFETY: the mapping made in open, of POS_LEN bytes.
        unsafe {
            libc::munmap(self.map.as_ptr().cast(), POS_LEN);
        }
    }
}

/// Up to `max` bytes of whole frames from `pos`: (bytes, the position after
/// them). Moves to the next segment when this one is done and a newer exists;
/// skips segments dropped by the bound.
pub fn read_from(dir: &Path, mut pos: Pos, max: usize, committed: Pos) -> Result<(Vec<u8>, Pos)> {
    loop {
        // only what the collector's state counts: past it, a crash may yet
        // cut the segment back and write the same lines again
        if pos.seq > committed.seq || (pos.seq == committed.seq && pos.offset >= committed.offset) {
            return Ok((Vec::new(), pos));
        }
        let segs = segments(dir);
        if !segs.contains(&pos.seq) {
            match segs.iter().find(|s| **s > pos.seq) {
                Some(s) => {
                    pos = Pos { seq: *s, offset: 0 };
                    continue;
                }
                None => return Ok((Vec::new(), pos)),
            }
        }
        let path = seg_path(dir, pos.seq);
        let mut f = File::open(&path).with_context(|| format!("open {}", path.display()))?;
        let mut len = f.metadata()?.len();
        if pos.seq == committed.seq {
            len = len.min(committed.offset);
        }
        if pos.offset < len {
            f.seek(SeekFrom::Start(pos.offset))?;
            let mut buf = vec![0u8; (len - pos.offset).min(max as u64) as usize];
            f.read_exact(&mut buf)?;
            let whole = frames(&buf).last().map(|(_, e)| *e).unwrap_or(0);
            if whole == 0 && buf.len() == max {
                // one frame larger than the batch: take it whole
                let mut rest = Vec::new();
                f.seek(SeekFrom::Start(pos.offset))?;
                f.read_to_end(&mut rest)?;
                let end = frames(&rest).first().map(|(_, e)| *e).unwrap_or(0);
                rest.truncate(end);
                let next = Pos {
                    seq: pos.seq,
                    offset: pos.offset + end as u64,
                };
                return Ok((rest, next));
            }
            buf.truncate(whole);
            let next = Pos {
                seq: pos.seq,
                offset: pos.offset + whole as u64,
            };
            return Ok((buf, next));
        }
        // this segment is read to its end: on to a newer one, if any
        match segs.iter().find(|s| **s > pos.seq) {
            Some(s) => pos = Pos { seq: *s, offset: 0 },
            None => return Ok((Vec::new(), pos)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_in_the_file_the_moment_they_are_stored() {
        let dir = std::env::temp_dir().join(format!("berth-pos-{}", berth::util::uuid4()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("sink-0.pos");
        // A file of an earlier version (JSON) is taken over as it says.
        fs::write(&path, br#"{"seq":3,"offset":77}"#).unwrap();
        let pf = PosFile::open(&path).unwrap();
        assert_eq!(pf.load(), Some(Pos { seq: 3, offset: 77 }));
        for k in 0..5u64 {
            let p = Pos {
                seq: 4 + k,
                offset: 1000 * k,
            };
            pf.store(p);
            // No write(2), no msync: the page is the file; a process started
            // after a kill reads exactly this.
            assert_eq!(load_pos(&path), Some(p));
        }
        drop(pf);
        assert_eq!(
            PosFile::open(&path).unwrap().load(),
            Some(Pos {
                seq: 8,
                offset: 4000
            })
        );
        let fresh = PosFile::open(&dir.join("new.pos")).unwrap();
        assert_eq!(fresh.load(), None);
        fs::remove_dir_all(&dir).unwrap();
    }

    const ALL: Pos = Pos {
        seq: u64::MAX,
        offset: 0,
    };

    #[test]
    fn frames_are_found_whole_and_writers_resume_at_their_recorded_end() {
        let d = std::env::temp_dir().join(format!("berth-spool-{}", berth::util::uuid4()));
        let mut w = Writer::open(&d, None, 1 << 30).unwrap();
        w.append(b"5 hello3 abc").unwrap();
        let at = (w.seq, w.len);
        w.append(b"4 torn").unwrap();
        drop(w);
        // a crash after the state said `at`: the torn frame goes
        let w = Writer::open(&d, Some(at), 1 << 30).unwrap();
        assert_eq!(w.len, 12);
        let (got, next) = read_from(
            &d,
            Pos {
                seq: at.0,
                offset: 0,
            },
            1 << 20,
            ALL,
        )
        .unwrap();
        assert_eq!(got, b"5 hello3 abc");
        // nothing past what the collector committed
        let (none, _) = read_from(
            &d,
            Pos {
                seq: at.0,
                offset: 0,
            },
            1 << 20,
            Pos {
                seq: at.0,
                offset: 0,
            },
        )
        .unwrap();
        assert!(none.is_empty());
        let (part, _) = read_from(
            &d,
            Pos {
                seq: at.0,
                offset: 0,
            },
            1 << 20,
            Pos {
                seq: at.0,
                offset: 7,
            },
        )
        .unwrap();
        assert_eq!(part, b"5 hello");
        assert_eq!(next.offset, 12);
        assert_eq!(frames(b"5 hello3 ab"), vec![(0, 7)]);
        std::fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn a_failed_append_leaves_nothing_behind() {
        let d = std::env::temp_dir().join(format!("berth-spool-{}", berth::util::uuid4()));
        let mut w = Writer::open(&d, None, 1 << 30).unwrap();
        w.append(b"5 hello").unwrap();
        w.fail_after = Some(2);
        assert!(w.append(b"3 abc").is_err());
        assert_eq!(w.len, 7);
        assert_eq!(fs::metadata(seg_path(&d, w.seq)).unwrap().len(), 7);
        w.append(b"3 xyz").unwrap();
        let at = (w.seq, w.len);
        w.append(b"1 z").unwrap();
        w.roll_back(at.0, at.1).unwrap();
        let (got, _) = read_from(
            &d,
            Pos {
                seq: w.seq,
                offset: 0,
            },
            1 << 20,
            ALL,
        )
        .unwrap();
        assert_eq!(got, b"5 hello3 xyz");
        std::fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn the_bound_drops_the_oldest_and_counts() {
        let d = std::env::temp_dir().join(format!("berth-spool-{}", berth::util::uuid4()));
        let mut w = Writer::open(&d, None, 10).unwrap();
        let first = w.seq;
        w.append(&b"1 x".repeat(2_000_000)).unwrap(); // 6 MB: the next write opens a segment
        w.append(b"1 y").unwrap();
        assert_eq!(w.enforce_bound(), 2_000_000);
        assert!(!seg_path(&d, first).exists());
        let (got, _) = read_from(
            &d,
            Pos {
                seq: first,
                offset: 0,
            },
            100,
            ALL,
        )
        .unwrap();
        assert_eq!(got, b"1 y");
        std::fs::remove_dir_all(d).unwrap();
    }
}

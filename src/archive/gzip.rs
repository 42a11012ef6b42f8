//! Deterministic, parallel gzip.
//!
//! The input is cut into 1 MiB blocks; each block is deflated on its own (primed
//! with the previous block's last 32 KiB as a dictionary, as pigz does, so the
//! ratio stays within a fraction of a percent of single-stream gzip) and ends on a
//! byte boundary with a sync flush; the last block is final. The pieces are
//! concatenated into ONE gzip member with a combined CRC-32, so every gzip reader
//! — Go's, docker's, zlib's — reads it as ordinary gzip. Block boundaries depend
//! only on the input, so the output is byte-identical whatever the thread count:
//! the same layer always gets the same digest. The header carries no name and
//! mtime 0.

use flate2::{Compress, Compression, Crc, FlushCompress, Status};
use std::io::{self, Write};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

const BLOCK: usize = 1 << 20;
const DICT: usize = 32 * 1024;

/// gzip level used for layers. zlib-rs at 6 writes ~3% more than GNU gzip -6 on
/// system files; at 9 it is slightly smaller than gzip -6, and with the blocks
/// compressed in parallel still faster on two cores. Layers are built once and
/// pulled by every worker node, so size wins.
pub const DEFAULT_LEVEL: u32 = 9;

/// The level to use: `BERTH_GZIP_LEVEL` (1–9) if set, else [`DEFAULT_LEVEL`]. The
/// level is part of a build's inputs: another level gives other layer digests.
pub fn level() -> u32 {
    std::env::var("BERTH_GZIP_LEVEL")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .filter(|l| (1..=9).contains(l))
        .unwrap_or(DEFAULT_LEVEL)
}

struct Job {
    seq: u64,
    dict: Vec<u8>,
    data: Vec<u8>,
    last: bool,
}

struct Done {
    seq: u64,
    out: io::Result<Vec<u8>>,
    crc: Crc,
}

fn deflate_block(level: u32, dict: &[u8], data: &[u8], last: bool) -> io::Result<Vec<u8>> {
    let mut c = Compress::new(Compression::new(level), false);
    if !dict.is_empty() {
        c.set_dictionary(dict).map_err(io::Error::other)?;
    }
    let mut out = Vec::with_capacity(data.len() / 2 + 1024);
    let flush = if last {
        FlushCompress::Finish
    } else {
        FlushCompress::Sync
    };
    let mut input = data;
    loop {
        if out.capacity() - out.len() < 64 * 1024 {
            out.reserve(256 * 1024);
        }
        let before_in = c.total_in();
        let st = c
            .compress_vec(input, &mut out, flush)
            .map_err(io::Error::other)?;
        input = &input[(c.total_in() - before_in) as usize..];
        match st {
            Status::StreamEnd => break,
            Status::Ok | Status::BufError => {
                // Sync flush is complete when all input is consumed and output did not fill up.
                if !last && input.is_empty() && out.capacity() > out.len() {
                    break;
                }
            }
        }
    }
    Ok(out)
}

/// A writer producing one gzip member, compressing on `threads` worker threads.
pub struct ParallelGzip<W: Write> {
    out: W,
    level: u32,
    buf: Vec<u8>,
    prev_tail: Vec<u8>,
    seq: u64,
    next_out: u64,
    pending: std::collections::BTreeMap<u64, (Vec<u8>, Crc)>,
    crc: Crc,
    jobs: Option<SyncSender<Job>>,
    done: Receiver<Done>,
    workers: Vec<JoinHandle<()>>,
    in_flight: usize,
    max_in_flight: usize,
    header_written: bool,
    finished: bool,
}

impl<W: Write> ParallelGzip<W> {
    pub fn new(out: W, level: u32, threads: usize) -> Self {
        let threads = threads.max(1);
        let (job_tx, job_rx) = sync_channel::<Job>(threads * 2);
        let (done_tx, done_rx) = sync_channel::<Done>(threads * 4);
        let job_rx = std::sync::Arc::new(std::sync::Mutex::new(job_rx));
        let workers = (0..threads)
            .map(|i| {
                let (rx, tx) = (job_rx.clone(), done_tx.clone());
                std::thread::Builder::new()
                    .name(format!("gzip-{i}"))
                    .spawn(move || {
                        loop {
                            let job = match rx.lock().unwrap().recv() {
                                Ok(j) => j,
                                Err(_) => return,
                            };
                            let mut crc = Crc::new();
                            crc.update(&job.data);
                            let out = deflate_block(level, &job.dict, &job.data, job.last);
                            if tx
                                .send(Done {
                                    seq: job.seq,
                                    out,
                                    crc,
                                })
                                .is_err()
                            {
                                return;
                            }
                        }
                    })
                    .expect("start gzip worker")
            })
            .collect();
        ParallelGzip {
            out,
            level,
            buf: Vec::with_capacity(BLOCK),
            prev_tail: Vec::new(),
            seq: 0,
            next_out: 0,
            pending: Default::default(),
            crc: Crc::new(),
            jobs: Some(job_tx),
            done: done_rx,
            workers,
            in_flight: 0,
            max_in_flight: threads * 2,
            header_written: false,
            finished: false,
        }
    }

    /// Threads worth using on this machine.
    pub fn default_threads() -> usize {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .min(8)
    }

    fn write_header(&mut self) -> io::Result<()> {
        if !self.header_written {
            // magic, deflate, no flags, mtime 0, xfl per level, OS unix
            let xfl = match self.level {
                9 => 2,
                0 | 1 => 4,
                _ => 0,
            };
            self.out
                .write_all(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, xfl, 3])?;
            self.header_written = true;
        }
        Ok(())
    }

    fn submit(&mut self, last: bool) -> io::Result<()> {
        let data = std::mem::replace(&mut self.buf, Vec::with_capacity(BLOCK));
        let dict = std::mem::take(&mut self.prev_tail);
        self.prev_tail = data[data.len().saturating_sub(DICT)..].to_vec();
        while self.in_flight >= self.max_in_flight {
            self.collect_one()?;
        }
        let job = Job {
            seq: self.seq,
            dict,
            data,
            last,
        };
        self.seq += 1;
        self.jobs
            .as_ref()
            .unwrap()
            .send(job)
            .map_err(|_| io::Error::other("gzip worker died"))?;
        self.in_flight += 1;
        Ok(())
    }

    fn collect_one(&mut self) -> io::Result<()> {
        let d = self
            .done
            .recv()
            .map_err(|_| io::Error::other("gzip worker died"))?;
        self.in_flight -= 1;
        let out = d.out?;
        self.pending.insert(d.seq, (out, d.crc));
        self.write_ready()
    }

    fn write_ready(&mut self) -> io::Result<()> {
        while let Some((out, crc)) = self.pending.remove(&self.next_out) {
            self.write_header()?;
            self.out.write_all(&out)?;
            self.crc.combine(&crc);
            self.next_out += 1;
        }
        Ok(())
    }

    /// Finish the stream and return the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.finish_inner()?;
        let ParallelGzip {
            out, jobs, workers, ..
        } = self;
        // Workers exit when the job channel closes.
        drop(jobs);
        for w in workers {
            let _ = w.join();
        }
        Ok(out)
    }

    fn finish_inner(&mut self) -> io::Result<()> {
        if self.finished {
            return Ok(());
        }
        self.submit(true)?;
        while self.in_flight > 0 {
            self.collect_one()?;
        }
        self.write_header()?;
        let mut trailer = [0u8; 8];
        trailer[..4].copy_from_slice(&self.crc.sum().to_le_bytes());
        trailer[4..].copy_from_slice(&self.crc.amount().to_le_bytes());
        self.out.write_all(&trailer)?;
        self.out.flush()?;
        self.finished = true;
        Ok(())
    }
}

impl<W: Write> Write for ParallelGzip<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let mut rest = data;
        while !rest.is_empty() {
            let room = BLOCK - self.buf.len();
            let k = room.min(rest.len());
            self.buf.extend_from_slice(&rest[..k]);
            rest = &rest[k..];
            if self.buf.len() == BLOCK {
                self.submit(false)?;
            }
        }
        Ok(data.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Compress a whole buffer (small layers, tests).
pub fn gzip_bytes(data: &[u8], level: u32) -> Vec<u8> {
    let mut g = ParallelGzip::new(Vec::new(), level, 1);
    g.write_all(data).expect("in-memory gzip");
    g.finish().expect("in-memory gzip")
}

/// True when `head` starts like a gzip stream.
pub fn is_gzip(head: &[u8]) -> bool {
    head.len() >= 2 && head[0] == 0x1f && head[1] == 0x8b
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn sample(n: usize) -> Vec<u8> {
        // compressible but not trivial
        (0..n)
            .map(|i| ((i * 7 + i / 1000) % 61) as u8 ^ (i as u8 >> 3))
            .collect()
    }

    #[test]
    fn round_trips_and_is_thread_count_independent() {
        for n in [0, 1, 100, BLOCK - 1, BLOCK, BLOCK + 1, 3 * BLOCK + 12345] {
            let data = sample(n);
            let one = {
                let mut g = ParallelGzip::new(Vec::new(), 6, 1);
                g.write_all(&data).unwrap();
                g.finish().unwrap()
            };
            let four = {
                let mut g = ParallelGzip::new(Vec::new(), 6, 4);
                for c in data.chunks(7777) {
                    g.write_all(c).unwrap();
                }
                g.finish().unwrap()
            };
            assert_eq!(one, four, "size {n}");
            let mut back = Vec::new();
            flate2::read::GzDecoder::new(&one[..])
                .read_to_end(&mut back)
                .unwrap();
            assert_eq!(back, data, "size {n}");
            // a single member: MultiGzDecoder reads the same
            let mut multi = Vec::new();
            flate2::read::MultiGzDecoder::new(&one[..])
                .read_to_end(&mut multi)
                .unwrap();
            assert_eq!(multi, data);
        }
    }

    #[test]
    fn ratio_close_to_single_stream() {
        let data = sample(4 * BLOCK);
        let ours = gzip_bytes(&data, 6);
        let mut e = flate2::write::GzEncoder::new(Vec::new(), Compression::new(6));
        e.write_all(&data).unwrap();
        let single = e.finish().unwrap();
        assert!(
            (ours.len() as f64) <= single.len() as f64 * 1.02,
            "{} vs {}",
            ours.len(),
            single.len()
        );
    }
}

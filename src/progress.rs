//! Progress for long transfers: per-item bars with rate on a terminal (indicatif),
//! one line per finished item otherwise (logs, CI, Ansible), so output stays
//! readable wherever it goes. Output goes to stderr; stdout stays for results.

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// A set of concurrent tasks (layers of one pull or push).
pub struct Progress {
    multi: Option<MultiProgress>,
    quiet: bool,
}

/// One task (one layer).
pub struct Task {
    bar: Option<ProgressBar>,
    label: String,
    moved: AtomicU64,
    started: Instant,
    quiet: bool,
}

impl Progress {
    /// Bars when stderr is a terminal and `quiet` is off.
    pub fn new(quiet: bool) -> Progress {
        let tty =
            std::io::stderr().is_terminal() && std::env::var_os("BERTH_NO_PROGRESS").is_none();
        let multi = (!quiet && tty)
            .then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(8)));
        Progress { multi, quiet }
    }

    /// A task of `total` bytes (0 if unknown) labelled like docker (`2d4dc4e96366`).
    pub fn task(&self, label: &str, total: u64, verb: &str) -> Task {
        let bar = self.multi.as_ref().map(|m| {
            let b = m.add(ProgressBar::new(total));
            let style = ProgressStyle::with_template(
                "{prefix}: {msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
            b.set_style(style);
            b.set_prefix(label.to_string());
            b.set_message(verb.to_string());
            b
        });
        Task {
            bar,
            label: label.to_string(),
            moved: AtomicU64::new(0),
            started: Instant::now(),
            quiet: self.quiet,
        }
    }

    /// A line of its own (above the bars on a terminal).
    pub fn line(&self, s: &str) {
        if self.quiet {
            return;
        }
        match &self.multi {
            Some(m) => {
                let _ = m.println(s);
            }
            None => eprintln!("{s}"),
        }
    }
}

impl Task {
    pub fn inc(&self, n: u64) {
        self.moved.fetch_add(n, Ordering::Relaxed);
        if let Some(b) = &self.bar {
            b.inc(n);
        }
    }

    /// Finish with a status (`Pull complete`, `Already exists`, `Pushed`).
    pub fn finish(&self, status: &str) {
        match &self.bar {
            Some(b) => {
                b.set_style(
                    ProgressStyle::with_template("{prefix}: {msg}")
                        .unwrap_or_else(|_| ProgressStyle::default_bar()),
                );
                b.finish_with_message(status.to_string());
            }
            None if !self.quiet => {
                // Bytes and rate only for what was really transferred.
                let secs = self.started.elapsed().as_secs_f64();
                let moved = self.moved.load(Ordering::Relaxed);
                if moved > 0 && secs > 0.0 {
                    eprintln!(
                        "{}: {status} ({}, {}/s)",
                        self.label,
                        crate::util::human_size(moved),
                        crate::util::human_size((moved as f64 / secs) as u64)
                    );
                } else {
                    eprintln!("{}: {status}", self.label);
                }
            }
            None => {}
        }
    }
}

/// A reader that reports what passes through to a task.
pub struct Counted<'a, R> {
    pub inner: R,
    pub task: &'a Task,
}

impl<R: std::io::Read> std::io::Read for Counted<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.task.inc(n as u64);
        Ok(n)
    }
}

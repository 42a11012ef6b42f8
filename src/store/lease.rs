//! Leases in storage: a lock that processes on several hosts sharing one bucket
//! agree on, with an expiry so a holder that died frees it. Made with the one
//! atomic steps every driver has: create-if-absent (`If-None-Match: *` on S3,
//! a hard link on a disk) and compare-and-swap. The garbage collector elects its runner this way, and
//! replicas serialise a repository's manifest writes.
//!
//! An expired lease is taken over, and a held one renewed, by a compare and
//! swap on its record (`If-Match` on S3), so of two takers exactly one wins;
//! a holder still checks the lease is its own before a write that matters
//! ([`Lease::check`]), and long work renews it as it goes ([`Lease::keep`]).

use super::Driver;
use crate::error::{Error, Kind, Result};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Serialize, Deserialize)]
struct Record {
    holder: String,
    token: String,
    /// Unix seconds after which the lease is free.
    expires: i64,
}

/// A held lease; released on drop.
pub struct Lease {
    d: Arc<dyn Driver>,
    path: String,
    token: String,
    holder: String,
    ttl: Duration,
    renewed: std::sync::Mutex<Instant>,
}

/// Who this process is, for the lease's record (host and pid).
pub fn this_holder() -> String {
    let host = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "unknown".into());
    format!("{host}:{}", std::process::id())
}

fn record(holder: &str, token: &str, ttl: Duration) -> Vec<u8> {
    serde_json::to_vec(&Record {
        holder: holder.to_string(),
        token: token.to_string(),
        expires: crate::util::now_unix() + ttl.as_secs().max(1) as i64,
    })
    .expect("serializable")
}

impl Lease {
    /// Take the lease at `path` for `ttl` unless someone holds it: Ok(None)
    /// with the holder's name logged at debug.
    pub fn try_acquire(d: &Arc<dyn Driver>, path: &str, ttl: Duration) -> Result<Option<Lease>> {
        let token = crate::util::uuid4();
        let holder = this_holder();
        let lease = |token: String| Lease {
            d: d.clone(),
            path: path.to_string(),
            token,
            holder: holder.clone(),
            ttl,
            renewed: std::sync::Mutex::new(Instant::now()),
        };
        for _ in 0..3 {
            let mine = record(&holder, &token, ttl);
            if d.create_new(path, &mine)? {
                return Ok(Some(lease(token)));
            }
            let cur = match d.get(path) {
                Ok(b) => b,
                // Released between our create and our read: try again.
                Err(e) if e.kind() == Kind::NotFound => continue,
                Err(e) => return Err(e),
            };
            match serde_json::from_slice::<Record>(&cur) {
                // Ours: the create went through and only its answer was lost.
                Ok(r) if r.token == token => return Ok(Some(lease(token))),
                Ok(r) if r.expires >= crate::util::now_unix() => {
                    log::debug!("lease {path} is held by {}", r.holder);
                    return Ok(None);
                }
                other => {
                    let who = other.map(|r| r.holder).unwrap_or_else(|_| "?".into());
                    // Compare and swap: of several takers exactly one wins.
                    if d.swap(path, &cur, &mine)? {
                        log::info!("lease {path} of {who} expired: taken over");
                        return Ok(Some(lease(token)));
                    }
                    return Ok(None);
                }
            }
        }
        Ok(None)
    }

    /// Take the lease, waiting up to `wait` for its holder.
    pub fn acquire(
        d: &Arc<dyn Driver>,
        path: &str,
        ttl: Duration,
        wait: Duration,
    ) -> Result<Lease> {
        let deadline = Instant::now() + wait;
        let mut pause = Duration::from_millis(10);
        loop {
            if let Some(l) = Lease::try_acquire(d, path, ttl)? {
                return Ok(l);
            }
            if Instant::now() >= deadline {
                return Err(Error::new(
                    Kind::Io,
                    format!("{path} is held by another process; try again"),
                ));
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(250));
        }
    }

    fn current(&self) -> Result<Option<Vec<u8>>> {
        match self.d.get(&self.path) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == Kind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn is_ours(&self, b: &[u8]) -> bool {
        serde_json::from_slice::<Record>(b).is_ok_and(|r| r.token == self.token)
    }

    /// True while the lease in storage is still this one.
    pub fn held(&self) -> Result<bool> {
        Ok(self.current()?.is_some_and(|b| self.is_ours(&b)))
    }

    /// Push the expiry on by another ttl; false when the lease was lost.
    pub fn renew(&self) -> Result<bool> {
        let Some(cur) = self.current()? else {
            return Ok(false);
        };
        if !self.is_ours(&cur) {
            return Ok(false);
        }
        let ok = self.d.swap(
            &self.path,
            &cur,
            &record(&self.holder, &self.token, self.ttl),
        )?;
        if ok {
            *self.renewed.lock().unwrap() = Instant::now();
        }
        Ok(ok)
    }

    /// For long work under the lease: renew once a third of its life has
    /// passed; an error when it was lost (the work must stop).
    pub fn keep(&self) -> Result<()> {
        if self.renewed.lock().unwrap().elapsed() < self.ttl / 3 {
            return Ok(());
        }
        if self.renew()? {
            Ok(())
        } else {
            Err(Error::new(
                Kind::Io,
                format!("lease {} was lost to another process", self.path),
            ))
        }
    }

    /// Before a write that must happen under the lease: an error if it is no
    /// longer ours.
    pub fn check(&self) -> Result<()> {
        if self.held()? {
            Ok(())
        } else {
            Err(Error::new(
                Kind::Io,
                format!("lease {} was lost to another process", self.path),
            ))
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if matches!(self.held(), Ok(true))
            && let Err(e) = self.d.delete(&self.path)
        {
            log::warn!("releasing lease {}: {e}", self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_holder_at_a_time_and_expired_ones_are_taken_over() {
        let d: Arc<dyn Driver> = Arc::new(super::super::memory::Memory::new());
        let a = Lease::try_acquire(&d, "/l/gc", Duration::from_secs(60))
            .unwrap()
            .unwrap();
        assert!(
            Lease::try_acquire(&d, "/l/gc", Duration::from_secs(60))
                .unwrap()
                .is_none()
        );
        assert!(a.renew().unwrap());
        drop(a);
        let b = Lease::try_acquire(&d, "/l/gc", Duration::from_secs(60)).unwrap();
        assert!(b.is_some());
        drop(b);
        // A holder that died: its record says it expired a minute ago.
        let dead = serde_json::to_vec(&Record {
            holder: "gone:1".into(),
            token: "t".into(),
            expires: crate::util::now_unix() - 60,
        })
        .unwrap();
        d.put("/l/gc", &dead).unwrap();
        let c = Lease::try_acquire(&d, "/l/gc", Duration::from_secs(60))
            .unwrap()
            .expect("expired lease taken over");
        // Someone took it from us: we notice and do not delete theirs.
        d.put("/l/gc", &dead).unwrap();
        assert!(!c.held().unwrap());
        assert!(!c.renew().unwrap());
        drop(c);
        assert!(d.get("/l/gc").is_ok());
        let e = Lease::acquire(&d, "/l/x", Duration::from_secs(5), Duration::ZERO).unwrap();
        let busy = Lease::acquire(
            &d,
            "/l/x",
            Duration::from_secs(5),
            Duration::from_millis(30),
        );
        assert_eq!(busy.err().unwrap().kind(), Kind::Io);
        drop(e);
    }
}

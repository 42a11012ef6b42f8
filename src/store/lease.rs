//! Leases in storage: a lock that processes on several hosts sharing one bucket
//! agree on, with an expiry so a holder that died frees it. Made with the one
//! atomic step both drivers have, create-if-absent (`If-None-Match: *` on S3, a
//! hard link on a disk). The garbage collector elects its runner this way, and
//! replicas serialise a repository's manifest writes.
//!
//! An expired lease is taken over by deleting it and creating a fresh one; two
//! takers racing there could both win, so a holder checks its lease is still
//! its own before anything that matters ([`Lease::held`]).

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
}

/// Who this process is, for the lease's record (host and pid).
pub fn this_holder() -> String {
    let host = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "unknown".into());
    format!("{host}:{}", std::process::id())
}

impl Lease {
    /// Take the lease at `path` for `ttl` unless someone holds it: Ok(None)
    /// with the holder's name logged at debug.
    pub fn try_acquire(d: &Arc<dyn Driver>, path: &str, ttl: Duration) -> Result<Option<Lease>> {
        let token = crate::util::uuid4();
        let holder = this_holder();
        let rec = |token: &str| {
            serde_json::to_vec(&Record {
                holder: holder.clone(),
                token: token.to_string(),
                expires: crate::util::now_unix() + ttl.as_secs().max(1) as i64,
            })
            .expect("serializable")
        };
        for _ in 0..2 {
            if d.create_new(path, &rec(&token))? {
                let l = Lease {
                    d: d.clone(),
                    path: path.to_string(),
                    token,
                    holder,
                    ttl,
                };
                return Ok(l.held()?.then_some(l));
            }
            match d.get(path) {
                Ok(b) => match serde_json::from_slice::<Record>(&b) {
                    Ok(r) if r.expires >= crate::util::now_unix() => {
                        log::debug!("lease {path} is held by {}", r.holder);
                        return Ok(None);
                    }
                    Ok(r) => {
                        log::info!("lease {path} of {} expired: taking it over", r.holder);
                        d.delete(path)?;
                    }
                    Err(_) => {
                        log::warn!("lease {path} is unreadable: taking it over");
                        d.delete(path)?;
                    }
                },
                // Released between our create and our read: try again.
                Err(e) if e.kind() == Kind::NotFound => {}
                Err(e) => return Err(e),
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
                    Kind::Conflict,
                    format!("{path} is held by another process; try again"),
                ));
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(250));
        }
    }

    /// True while the lease in storage is still this one.
    pub fn held(&self) -> Result<bool> {
        match self.d.get(&self.path) {
            Ok(b) => Ok(serde_json::from_slice::<Record>(&b).is_ok_and(|r| r.token == self.token)),
            Err(e) if e.kind() == Kind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Push the expiry on by another ttl; false when the lease was lost.
    pub fn renew(&self) -> Result<bool> {
        if !self.held()? {
            return Ok(false);
        }
        let rec = serde_json::to_vec(&Record {
            holder: self.holder.clone(),
            token: self.token.clone(),
            expires: crate::util::now_unix() + self.ttl.as_secs().max(1) as i64,
        })
        .expect("serializable");
        self.d.put(&self.path, &rec)?;
        Ok(true)
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
        assert_eq!(busy.err().unwrap().kind(), Kind::Conflict);
        drop(e);
    }
}

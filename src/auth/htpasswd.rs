//! htpasswd files with bcrypt entries, as Distribution's `auth.htpasswd` reads them.
//!
//! Only bcrypt (`$2y$`, `$2a$`, `$2b$`) is accepted: any other line is an error that
//! names the file and line, because a silently ignored user is worse than a failed
//! start. The file is re-read when its size, mtime or inode change. Verified
//! credentials are cached for a short time under a SHA-256 of the Authorization
//! header, so bcrypt (tens of milliseconds by design) runs once per client, not per
//! request. A wrong password costs the caller a short delay.

use crate::digest::Digest;
use crate::error::{Error, Result};
use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

/// How long a verified Authorization header is trusted without bcrypt.
pub const CACHE_TTL: Duration = Duration::from_secs(60);
/// How often the file is checked for changes.
const CHECK_EVERY: Duration = Duration::from_secs(1);
/// Delay before answering a failed login.
pub const FAIL_DELAY: Duration = Duration::from_millis(300);

/// Parse htpasswd text: `user:bcrypt-hash` per line, `#` comments and blank lines
/// allowed.
pub fn parse(file: &str, text: &str) -> Result<HashMap<String, String>> {
    let mut users = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((user, hash)) = line.split_once(':') else {
            return Err(Error::config(format!(
                "{file}:{}: expected USER:HASH",
                i + 1
            )));
        };
        if user.is_empty() {
            return Err(Error::config(format!("{file}:{}: empty user name", i + 1)));
        }
        let is_bcrypt =
            ["$2y$", "$2a$", "$2b$"].iter().any(|p| hash.starts_with(p)) && hash.len() == 60;
        if !is_bcrypt {
            return Err(Error::config(format!(
                "{file}:{}: user {user:?} does not have a bcrypt hash; recreate it with `berth htpasswd {file} {user}` (or htpasswd -B)",
                i + 1
            )));
        }
        users.insert(user.to_string(), hash.to_string());
    }
    Ok(users)
}

#[derive(PartialEq, Eq, Clone, Copy)]
struct FileId {
    ino: u64,
    size: u64,
    mtime_ns: i128,
}

fn file_id(path: &Path) -> Option<FileId> {
    let m = std::fs::metadata(path).ok()?;
    Some(FileId {
        ino: m.ino(),
        size: m.size(),
        mtime_ns: m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128,
    })
}

struct Users {
    id: Option<FileId>,
    users: HashMap<String, String>,
    checked: Instant,
    dummy: String,
}

/// An htpasswd file kept current, with a cache of verified credentials.
pub struct Htpasswd {
    path: PathBuf,
    state: RwLock<Users>,
    cache: Mutex<HashMap<Digest, (String, Instant)>>,
    /// Headers that just failed: answered without another bcrypt.
    failed: Mutex<HashMap<Digest, Instant>>,
    /// bcrypt runs at most this many at once, so bad logins cannot eat every core.
    bcrypt_slots: (Mutex<usize>, std::sync::Condvar),
}

/// How long a failed Authorization header is refused without bcrypt.
const FAILED_TTL: Duration = Duration::from_secs(10);

/// Failed logins one client may make per window before it is told to wait.
pub const MAX_FAILURES: u32 = 20;
const FAILURE_WINDOW: Duration = Duration::from_secs(60);

/// Counts failed logins per client address, so a guesser is slowed to
/// [`MAX_FAILURES`] tries a minute instead of tying up workers and CPU.
#[derive(Default)]
pub struct Throttle {
    seen: Mutex<HashMap<std::net::IpAddr, (u32, Instant)>>,
}

impl Throttle {
    /// True when `ip` has used up its failures for now.
    pub fn blocked(&self, ip: std::net::IpAddr) -> bool {
        let m = self.seen.lock().unwrap();
        m.get(&ip)
            .is_some_and(|(n, since)| *n >= MAX_FAILURES && since.elapsed() < FAILURE_WINDOW)
    }
    pub fn failed(&self, ip: std::net::IpAddr) {
        let mut m = self.seen.lock().unwrap();
        if m.len() > 100_000 {
            m.retain(|_, (_, since)| since.elapsed() < FAILURE_WINDOW);
        }
        let e = m.entry(ip).or_insert((0, Instant::now()));
        if e.1.elapsed() >= FAILURE_WINDOW {
            *e = (0, Instant::now());
        }
        e.0 += 1;
    }
}

/// Result of checking credentials.
#[derive(Debug, PartialEq, Eq)]
pub enum Check {
    /// Authenticated as this user.
    Ok(String),
    /// No credentials given.
    Missing,
    /// Credentials given and wrong.
    Failed,
}

impl Htpasswd {
    /// Load a file; errors (missing file, non-bcrypt line) are config errors.
    pub fn open(path: &Path) -> Result<Htpasswd> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::config(format!(
                "{}: cannot read htpasswd file: {}",
                path.display(),
                Error::from(e)
            ))
        })?;
        let users = parse(&path.display().to_string(), &text)?;
        if users.is_empty() {
            log::warn!(
                "{}: no users: every request will be refused",
                path.display()
            );
        }
        Ok(Htpasswd {
            path: path.to_path_buf(),
            state: RwLock::new(Users {
                id: file_id(path),
                dummy: dummy_for(&users),
                users,
                checked: Instant::now(),
            }),
            cache: Mutex::new(HashMap::new()),
            failed: Mutex::new(HashMap::new()),
            bcrypt_slots: (
                Mutex::new(
                    std::thread::available_parallelism()
                        .map(|n| n.get())
                        .unwrap_or(1),
                ),
                std::sync::Condvar::new(),
            ),
        })
    }

    fn maybe_reload(&self) {
        {
            let s = self.state.read().unwrap();
            if s.checked.elapsed() < CHECK_EVERY {
                return;
            }
        }
        let mut s = self.state.write().unwrap();
        if s.checked.elapsed() < CHECK_EVERY {
            return;
        }
        s.checked = Instant::now();
        let id = file_id(&self.path);
        if id == s.id {
            return;
        }
        match std::fs::read_to_string(&self.path)
            .map_err(Error::from)
            .and_then(|t| parse(&self.path.display().to_string(), &t))
        {
            Ok(users) => {
                log::info!("{}: reloaded, {} users", self.path.display(), users.len());
                s.dummy = dummy_for(&users);
                s.users = users;
                s.id = id;
                self.cache.lock().unwrap().clear();
                self.failed.lock().unwrap().clear();
            }
            Err(e) => {
                // Keep serving with the users we had; say why the new file was refused.
                log::error!("{}: not reloaded: {e}", self.path.display());
                s.id = id;
            }
        }
    }

    /// Check an `Authorization` header value.
    pub fn check(&self, header: Option<&str>) -> Check {
        self.maybe_reload();
        let Some(h) = header else {
            return Check::Missing;
        };
        let Some(b64) = h
            .strip_prefix("Basic ")
            .or_else(|| h.strip_prefix("basic "))
        else {
            return Check::Missing;
        };
        let key = Digest::sha256(h.as_bytes());
        {
            let mut c = self.cache.lock().unwrap();
            if let Some((user, at)) = c.get(&key) {
                if at.elapsed() < CACHE_TTL {
                    return Check::Ok(user.clone());
                }
                c.remove(&key);
            }
        }
        {
            let mut f = self.failed.lock().unwrap();
            if let Some(at) = f.get(&key) {
                if at.elapsed() < FAILED_TTL {
                    return Check::Failed;
                }
                f.remove(&key);
            }
        }
        let ok = self.verify(b64);
        if ok.is_none() {
            let mut f = self.failed.lock().unwrap();
            if f.len() > 10_000 {
                f.retain(|_, at| at.elapsed() < FAILED_TTL);
            }
            f.insert(key, Instant::now());
            return Check::Failed;
        }
        let user = ok.unwrap_or_default();
        let mut c = self.cache.lock().unwrap();
        if c.len() > 10_000 {
            c.retain(|_, (_, at)| at.elapsed() < CACHE_TTL);
        }
        c.insert(key, (user.clone(), Instant::now()));
        Check::Ok(user)
    }

    // Decode and bcrypt-check `user:password`; the user on success.
    fn verify(&self, b64: &str) -> Option<String> {
        use base64::Engine;
        let Ok(raw) = base64::engine::general_purpose::STANDARD.decode(b64.trim()) else {
            return None;
        };
        let raw = String::from_utf8(raw).ok()?;
        let (user, pass) = raw.split_once(':')?;
        let (hash, dummy) = {
            let st = self.state.read().unwrap();
            (st.users.get(user).cloned(), st.dummy.clone())
        };
        let _slot = self.bcrypt_slot();
        // Unknown users cost a bcrypt of the file's own cost too, so timing does
        // not tell who exists.
        let ok = match &hash {
            Some(h) => bcrypt::verify(pass, h).unwrap_or(false),
            None => {
                let _ = bcrypt::verify(pass, &dummy);
                false
            }
        };
        ok.then(|| user.to_string())
    }

    fn bcrypt_slot(&self) -> impl Drop + '_ {
        struct Slot<'a>(&'a (Mutex<usize>, std::sync::Condvar));
        impl Drop for Slot<'_> {
            fn drop(&mut self) {
                *self.0.0.lock().unwrap() += 1;
                self.0.1.notify_one();
            }
        }
        let (m, cv) = &self.bcrypt_slots;
        let mut free = m.lock().unwrap();
        while *free == 0 {
            free = cv.wait(free).unwrap();
        }
        *free -= 1;
        Slot(&self.bcrypt_slots)
    }
}

/// A bcrypt hash of a throw-away password at the cost the file's users have.
fn dummy_for(users: &HashMap<String, String>) -> String {
    let cost = users
        .values()
        .next()
        .and_then(|h| h.get(4..6))
        .and_then(|c| c.parse::<u32>().ok())
        .unwrap_or(10);
    bcrypt::hash("berth-dummy", cost.clamp(4, 31)).unwrap_or_default()
}

/// One htpasswd line for `user` with a bcrypt hash of `password` (cost 10).
pub fn entry(user: &str, password: &str) -> Result<String> {
    if user.is_empty() || user.contains(':') || user.contains('\n') {
        return Err(Error::usage(
            "user names must be non-empty and contain no ':'",
        ));
    }
    let h = bcrypt::hash_with_result(password, 10)
        .map_err(|e| Error::invalid(format!("bcrypt: {e}")))?;
    Ok(format!(
        "{user}:{}",
        h.format_for_version(bcrypt::Version::TwoY)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

    fn basic(u: &str, p: &str) -> String {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
        )
    }

    #[test]
    fn rejects_non_bcrypt_with_line() {
        let e = parse("pw", "# c\nalice:{SHA}abc\n").unwrap_err();
        assert!(e.to_string().starts_with("pw:2: user \"alice\""), "{e}");
        assert!(
            parse("pw", "bob\n")
                .unwrap_err()
                .to_string()
                .starts_with("pw:1:")
        );
    }

    #[test]
    fn verifies_caches_and_reloads() {
        let dir = std::env::temp_dir().join(format!("berth-ht-{}", crate::util::uuid4()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("htpasswd");
        std::fs::write(&p, entry("t1user", "secret").unwrap() + "\n").unwrap();
        let h = Htpasswd::open(&p).unwrap();
        assert_eq!(
            h.check(Some(&basic("t1user", "secret"))),
            Check::Ok("t1user".into())
        );
        // second time from cache
        let t = Instant::now();
        assert_eq!(
            h.check(Some(&basic("t1user", "secret"))),
            Check::Ok("t1user".into())
        );
        assert!(t.elapsed() < Duration::from_millis(5));
        assert_eq!(h.check(Some(&basic("t1user", "wrong"))), Check::Failed);
        assert_eq!(h.check(Some(&basic("nobody", "secret"))), Check::Failed);
        assert_eq!(h.check(None), Check::Missing);
        // replace the file: old password stops working after reload
        std::fs::write(&p, entry("t1user", "other").unwrap() + "\n").unwrap();
        std::thread::sleep(CHECK_EVERY + Duration::from_millis(50));
        assert_eq!(h.check(Some(&basic("t1user", "secret"))), Check::Failed);
        assert_eq!(
            h.check(Some(&basic("t1user", "other"))),
            Check::Ok("t1user".into())
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}

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

/// Highest bcrypt cost accepted. Each step doubles the work: cost 17 is about
/// 10 s on a node's core already, and a line with cost 31 would keep one core
/// busy for days at every login (or at `registryd --check`).
pub const MAX_COST: u32 = 17;

/// Check a bcrypt hash's form: `$2a$`, `$2b$`, `$2x$` or `$2y$`, a two-digit
/// cost from 4 to [`MAX_COST`], `$`, then 53 characters of bcrypt's base64.
pub fn validate_hash(hash: &str) -> std::result::Result<(), String> {
    let b = hash.as_bytes();
    let prefix_ok = b.len() == 60
        && b[0] == b'$'
        && b[1] == b'2'
        && matches!(b[2], b'a' | b'b' | b'x' | b'y')
        && b[3] == b'$'
        && b[6] == b'$';
    if !prefix_ok {
        return Err("is not a bcrypt hash ($2y$NN$ and 53 characters)".into());
    }
    let cost = std::str::from_utf8(&b[4..6])
        .ok()
        .and_then(|c| c.parse::<u32>().ok())
        .ok_or("has no numeric bcrypt cost")?;
    if !(4..=MAX_COST).contains(&cost) {
        return Err(format!(
            "has bcrypt cost {cost}; use a cost from 4 to {MAX_COST} (htpasswd -B -C 10)"
        ));
    }
    if !b[7..]
        .iter()
        .all(|c| c.is_ascii_alphanumeric() || *c == b'.' || *c == b'/')
    {
        return Err("has characters bcrypt never writes".into());
    }
    Ok(())
}

/// Parse htpasswd text: `user:bcrypt-hash` per line, `#` comments and blank lines
/// allowed. The users of every good line, and an error naming file and line for
/// each bad one.
pub fn parse_lenient(file: &str, text: &str) -> (HashMap<String, String>, Vec<Error>) {
    let mut users = HashMap::new();
    let mut first_line: HashMap<String, usize> = HashMap::new();
    let mut errors = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        let mut err = |msg: String| errors.push(Error::config(format!("{file}:{n}: {msg}")));
        if n == 1 && line.starts_with('\u{feff}') {
            err("starts with a byte-order mark; save the file as plain text (no BOM)".into());
            continue;
        }
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((user, hash)) = line.split_once(':') else {
            err("expected USER:HASH".into());
            continue;
        };
        if user.is_empty() {
            err("empty user name".into());
            continue;
        }
        if let Err(why) = validate_hash(hash) {
            err(format!(
                "user {user:?}: the hash {why}; recreate it with `berth htpasswd {file} {user}` (or htpasswd -B)"
            ));
            continue;
        }
        if let Some(first) = first_line.get(user) {
            err(format!(
                "user {user:?} is listed again (first on line {first}); keep one line per user"
            ));
            // Neither line counts: which one was meant is not ours to guess.
            users.remove(user);
            continue;
        }
        first_line.insert(user.to_string(), n);
        users.insert(user.to_string(), hash.to_string());
    }
    (users, errors)
}

/// Parse htpasswd text strictly: the first bad line is the error.
pub fn parse(file: &str, text: &str) -> Result<HashMap<String, String>> {
    let (users, mut errors) = parse_lenient(file, text);
    if errors.is_empty() {
        Ok(users)
    } else {
        Err(errors.remove(0))
    }
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
    /// bcrypt verifications done (what the cache is there to save).
    bcrypt_runs: std::sync::atomic::AtomicU64,
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
            bcrypt_runs: Default::default(),
        })
    }

    /// How many bcrypt verifications have run.
    pub fn bcrypt_runs(&self) -> u64 {
        self.bcrypt_runs.load(std::sync::atomic::Ordering::Relaxed)
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
        s.id = id;
        self.cache.lock().unwrap().clear();
        self.failed.lock().unwrap().clear();
        let text = match std::fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) => {
                // Unreadable (mid-replace, or removed): nobody gets in until it is back.
                log::error!(
                    "{}: cannot read it ({}); refusing every login until it can be read",
                    self.path.display(),
                    Error::from(e)
                );
                s.users.clear();
                return;
            }
        };
        let (users, errors) = parse_lenient(&self.path.display().to_string(), &text);
        if errors.is_empty() {
            log::info!("{}: reloaded, {} users", self.path.display(), users.len());
            s.dummy = dummy_for(&users);
            s.users = users;
            return;
        }
        // A broken edit must not keep a removed user in, nor let a half-written
        // one in: only users unchanged in both the old list and the good lines
        // of the new file stay.
        for e in &errors {
            log::error!("{e}");
        }
        let before = s.users.len();
        s.users
            .retain(|user, hash| users.get(user).is_some_and(|h| h == hash));
        log::error!(
            "{}: not fully reloaded ({} bad lines): {} of {before} users keep access until the file is fixed",
            self.path.display(),
            errors.len(),
            s.users.len()
        );
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
        self.bcrypt_runs
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
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
    bcrypt::hash("berth-dummy", cost.clamp(4, MAX_COST)).unwrap_or_default()
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

    fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !f() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(20));
        }
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
        // the second time comes from the cache: no bcrypt
        let runs = h.bcrypt_runs();
        assert_eq!(
            h.check(Some(&basic("t1user", "secret"))),
            Check::Ok("t1user".into())
        );
        assert_eq!(h.bcrypt_runs(), runs);
        assert_eq!(h.check(Some(&basic("t1user", "wrong"))), Check::Failed);
        assert_eq!(h.check(Some(&basic("nobody", "secret"))), Check::Failed);
        assert_eq!(h.check(None), Check::Missing);
        // replace the file: the old password stops working once it is re-read
        std::fs::write(&p, entry("t1user", "other").unwrap() + "\n").unwrap();
        wait_until("the reload", || {
            h.check(Some(&basic("t1user", "secret"))) == Check::Failed
        });
        assert_eq!(
            h.check(Some(&basic("t1user", "other"))),
            Check::Ok("t1user".into())
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn refuses_costly_fake_bom_and_duplicate_lines() {
        let good = entry("a", "pw").unwrap();
        let hash = good.split_once(':').unwrap().1.to_string();
        let cost31 = format!("a:$2y$31${}", &hash[7..]);
        let e = parse("pw", &cost31).unwrap_err().to_string();
        assert!(e.starts_with("pw:1:") && e.contains("cost 31"), "{e}");
        let fake = format!("a:$2y$10${}", "!".repeat(53));
        let e = parse("pw", &fake).unwrap_err().to_string();
        assert!(e.starts_with("pw:1:"), "{e}");
        let e = parse("pw", &format!("\u{feff}{good}\n"))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("pw:1:") && e.contains("byte-order mark"),
            "{e}"
        );
        let e = parse("pw", &format!("{good}\n# x\n{good}\n"))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("pw:3:") && e.contains("line 1"), "{e}");
        assert!(validate_hash(&hash).is_ok());
    }

    #[test]
    fn a_removed_user_loses_access_even_when_the_new_file_is_broken() {
        let dir = std::env::temp_dir().join(format!("berth-ht-{}", crate::util::uuid4()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("htpasswd");
        let alice = entry("alice", "a-pw").unwrap();
        let bob = entry("bob", "b-pw").unwrap();
        std::fs::write(&p, format!("{alice}\n{bob}\n")).unwrap();
        let h = Htpasswd::open(&p).unwrap();
        assert_eq!(
            h.check(Some(&basic("bob", "b-pw"))),
            Check::Ok("bob".into())
        );
        // bob removed, and a bad line added in the same edit
        std::fs::write(&p, format!("{alice}\ncarol:plaintext\n")).unwrap();
        wait_until("bob to lose access", || {
            h.check(Some(&basic("bob", "b-pw"))) == Check::Failed
        });
        assert_eq!(
            h.check(Some(&basic("alice", "a-pw"))),
            Check::Ok("alice".into())
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}

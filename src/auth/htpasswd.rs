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
}

/// An htpasswd file kept current, with a cache of verified credentials.
pub struct Htpasswd {
    path: PathBuf,
    state: RwLock<Users>,
    cache: Mutex<HashMap<Digest, (String, Instant)>>,
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
                users,
                checked: Instant::now(),
            }),
            cache: Mutex::new(HashMap::new()),
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
                s.users = users;
                s.id = id;
                self.cache.lock().unwrap().clear();
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
        use base64::Engine;
        let Ok(raw) = base64::engine::general_purpose::STANDARD.decode(b64.trim()) else {
            return Check::Failed;
        };
        let Ok(raw) = String::from_utf8(raw) else {
            return Check::Failed;
        };
        let Some((user, pass)) = raw.split_once(':') else {
            return Check::Failed;
        };
        let hash = self.state.read().unwrap().users.get(user).cloned();
        // Unknown users cost a bcrypt too, so timing does not reveal who exists.
        static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
        let ok = match &hash {
            Some(h) => bcrypt::verify(pass, h).unwrap_or(false),
            None => {
                let d = DUMMY.get_or_init(|| bcrypt::hash("berth-dummy", 10).unwrap_or_default());
                let _ = bcrypt::verify(pass, d);
                false
            }
        };
        if !ok {
            return Check::Failed;
        }
        let mut c = self.cache.lock().unwrap();
        if c.len() > 10_000 {
            c.retain(|_, (_, at)| at.elapsed() < CACHE_TTL);
        }
        c.insert(key, (user.to_string(), Instant::now()));
        Check::Ok(user.to_string())
    }
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

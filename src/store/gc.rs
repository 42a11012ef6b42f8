//! Garbage collection of a registry's storage: tag retention, untagged
//! manifests, then blobs no kept manifest needs — online, beside pushes and
//! pulls, in registryd or in `registryd garbage-collect` on the same storage.
//!
//! Safety comes from the store's rule (see [`super::registry`]): every use of a
//! blob refreshes its mtime before it returns. The collector
//!
//! 1. restores whatever an interrupted collection left in the trash;
//! 2. takes its epoch T, then applies retention (tags only);
//! 3. marks: per repository, the manifests kept (tagged, pushed since T minus
//!    the grace, every revision unless untagged ones go, children of kept
//!    indexes, referrers of kept subjects), and every blob they name;
//! 4. removes untagged manifests that are not kept (under the repository's
//!    lock, after checking again that no tag came and the revision is old);
//! 5. sweeps unmarked blobs older than T minus the grace: each is renamed
//!    into the trash, its mtime read again there (a use that raced the rename
//!    puts it back), and the trash is emptied last.
//!
//! A crash anywhere leaves every image that was served whole: a kept blob is
//! never renamed, and one in the trash is brought back by the next lookup.
//! `dry_run` decides everything and changes nothing.

use super::registry::{ManifestRef, RegistryStore, blob_data_path, trash_path};
use crate::digest::Digest;
use crate::error::{Error, Kind, Result};
use crate::oci::{AnyManifest, Parsed};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime};

/// A retention rule for the repositories matching `repository` (a glob).
#[derive(Debug, Clone, PartialEq)]
pub struct Retention {
    pub repository: String,
    /// Keep the newest N tags (by when they were last pushed).
    pub keep: Option<usize>,
    /// Keep tags pushed within this age.
    pub max_age: Option<Duration>,
    /// Tags (globs) never removed by this rule.
    pub except: Vec<String>,
}

/// What a collection does.
#[derive(Debug, Clone, Default)]
pub struct Options {
    pub dry_run: bool,
    pub delete_untagged: bool,
    /// Blobs and manifests used within this span before the epoch are spared.
    pub grace: Duration,
    pub retention: Vec<Retention>,
    /// Set when the right to collect was lost (the lease on a bucket): the
    /// collection stops before its next removal.
    pub stop: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
}

/// What a collection did (or, dry, would do).
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Report {
    pub started: i64,
    pub finished: i64,
    pub dry_run: bool,
    /// `repository:tag` and the rule that removed it.
    pub tags_removed: Vec<(String, String)>,
    /// `repository@digest`.
    pub manifests_removed: Vec<String>,
    pub blobs_removed: usize,
    pub bytes_freed: u64,
    pub blobs_kept: usize,
    pub bytes_kept: u64,
    /// Unreferenced blobs spared because they were used within the grace.
    pub blobs_spared: usize,
}

/// Shell-style glob: `*` any run (including `/`), `?` one character.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti, mut star, mut mark) = (0, 0, None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

/// Tags that `rules` remove from a repository whose tags were pushed at the
/// given times, with the rule's description. The first matching rule applies.
pub fn retention_victims(
    rules: &[Retention],
    repo: &str,
    tags: &[(String, SystemTime)],
    now: SystemTime,
) -> Vec<(String, String)> {
    let Some(rule) = rules.iter().find(|r| glob_match(&r.repository, repo)) else {
        return Vec::new();
    };
    let mut candidates: Vec<&(String, SystemTime)> = tags
        .iter()
        .filter(|(t, _)| !rule.except.iter().any(|e| glob_match(e, t)))
        .collect();
    // Newest first; ties by name, so the choice is stable.
    candidates.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let mut out = Vec::new();
    for (i, (tag, at)) in candidates.iter().enumerate() {
        let too_many = rule.keep.is_some_and(|k| i >= k);
        let too_old = rule
            .max_age
            .is_some_and(|m| now.duration_since(*at).unwrap_or_default() > m);
        if too_many || too_old {
            let why = match (too_many, too_old) {
                (true, _) => format!(
                    "retention {}: keep {}",
                    rule.repository,
                    rule.keep.unwrap_or(0)
                ),
                _ => format!(
                    "retention {}: older than {}s",
                    rule.repository,
                    rule.max_age.map(|d| d.as_secs()).unwrap_or(0)
                ),
            };
            out.push((tag.clone(), why));
        }
    }
    out
}

/// One repository's manifests as the mark sees them.
struct RepoState {
    /// digest -> (parsed, revision link mtime)
    revisions: BTreeMap<Digest, (Option<Parsed>, SystemTime)>,
    tagged: BTreeSet<Digest>,
}

/// Run a collection. `say` gets one line per removal (and the summary).
pub fn collect(store: &RegistryStore, opts: &Options, say: &mut dyn FnMut(&str)) -> Result<Report> {
    let mut report = Report {
        started: crate::util::now_unix(),
        dry_run: opts.dry_run,
        ..Report::default()
    };
    let verb = if opts.dry_run {
        "would remove"
    } else {
        "removed"
    };
    if !opts.dry_run {
        restore_trash(store)?;
    }
    let epoch = SystemTime::now();
    let cutoff = epoch
        .checked_sub(opts.grace)
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let mut marked: BTreeSet<Digest> = BTreeSet::new();
    for repo in store.all_repositories()? {
        // Retention first: it decides which tags the mark sees.
        let tags = store.tag_times(&repo)?;
        // Immutable tags are never removed by retention.
        let tags: Vec<(String, SystemTime)> = tags
            .into_iter()
            .filter(|(t, _)| store.immutable_rule(&repo, t).is_none())
            .collect();
        let victims = retention_victims(&opts.retention, &repo, &tags, epoch);
        // What the removed tags pointed at, read before they go.
        let retired: BTreeSet<Digest> = victims
            .iter()
            .filter_map(|(t, _)| {
                store
                    .resolve(&repo, &ManifestRef::Tag(t.clone()))
                    .ok()
                    .flatten()
            })
            .collect();
        let mut removed_tags = BTreeSet::new();
        for (tag, why) in victims {
            say(&format!("{verb} tag {repo}:{tag} ({why})"));
            if !opts.dry_run {
                store.delete_tag(&repo, &tag)?;
            }
            removed_tags.insert(tag.clone());
            report.tags_removed.push((format!("{repo}:{tag}"), why));
        }
        let st = repo_state(store, &repo, &removed_tags)?;
        // Roots: tagged, fresh, and (unless untagged ones go) every revision
        // that lost no tag to retention now.
        let mut kept: BTreeSet<Digest> = BTreeSet::new();
        for (d, (_, at)) in &st.revisions {
            let fresh = *at >= cutoff;
            let root =
                st.tagged.contains(d) || fresh || (!opts.delete_untagged && !retired.contains(d));
            if root {
                kept.insert(d.clone());
            }
        }
        // Closure: children of kept indexes, referrers of kept subjects.
        loop {
            let mut grew = false;
            for (d, (p, _)) in &st.revisions {
                let Some(p) = p else { continue };
                if kept.contains(d) {
                    for m in p.manifest_refs() {
                        if st.revisions.contains_key(&m.digest) && kept.insert(m.digest.clone()) {
                            grew = true;
                        }
                    }
                } else if let Some(s) = p.subject()
                    && kept.contains(&s.digest)
                {
                    kept.insert(d.clone());
                    grew = true;
                }
            }
            if !grew {
                break;
            }
        }
        // A referrer whose subject is gone goes too (signatures, SBOMs).
        let orphan = |p: &Option<Parsed>| {
            p.as_ref()
                .and_then(|p| p.subject())
                .is_some_and(|s| !st.revisions.contains_key(&s.digest) || !kept.contains(&s.digest))
        };
        let mut doomed = Vec::new();
        for (d, (p, at)) in &st.revisions {
            if kept.contains(d) && !(orphan(p) && *at < cutoff && !st.tagged.contains(d)) {
                continue;
            }
            doomed.push(d.clone());
        }
        for d in &doomed {
            kept.remove(d);
        }
        for d in &kept {
            let Some((p, _)) = st.revisions.get(d) else {
                continue;
            };
            let p = p.as_ref().ok_or_else(|| {
                Error::new(
                    Kind::Digest,
                    format!(
                        "{repo}@{d}: the manifest cannot be read; refusing to collect (its blobs could not be told)"
                    ),
                )
            })?;
            marked.insert(d.clone());
            marked.extend(needs(p));
        }
        for d in doomed {
            if opts.dry_run || store.delete_untagged_revision(&repo, &d, cutoff)? {
                say(&format!("{verb} manifest {repo}@{d}"));
                report.manifests_removed.push(format!("{repo}@{d}"));
            } else {
                // It came back into use while we looked: keep what it names.
                if let Some((Some(p), _)) = st.revisions.get(&d) {
                    marked.insert(d.clone());
                    marked.extend(needs(p));
                }
            }
        }
    }
    // Sweep.
    let shared = store.driver().shared();
    let mut parked: Vec<(Digest, u64)> = Vec::new();
    for (d, stat) in store.all_blobs()? {
        if marked.contains(&d) {
            report.blobs_kept += 1;
            report.bytes_kept += stat.size;
            continue;
        }
        if stat.modified >= cutoff {
            report.blobs_spared += 1;
            report.blobs_kept += 1;
            report.bytes_kept += stat.size;
            continue;
        }
        if opts.dry_run {
            say(&format!("{verb} blob {d} ({} bytes)", stat.size));
            report.blobs_removed += 1;
            report.bytes_freed += stat.size;
            continue;
        }
        if opts
            .stop
            .as_ref()
            .is_some_and(|s| s.load(std::sync::atomic::Ordering::Acquire))
        {
            return Err(Error::new(
                Kind::Io,
                "the collector's lease was lost to another process; stopped",
            ));
        }
        let driver = store.driver();
        // On shared storage a move is a copy and a delete: a use landing
        // between the two would be lost. A marker announces the move first;
        // a use that sees it waits for it and looks again (see
        // RegistryStore::touch_blob), and a use before it shows in the stat
        // just below.
        let marker = shared.then(|| doomed_path(&d));
        if let Some(m) = &marker {
            // Done by then, at a copy rate any gateway beats; a use waits
            // for the marker at most until this time.
            let until = crate::util::now_unix() + 120 + (stat.size >> 20) as i64 / 20;
            driver.put(m, until.to_string().as_bytes())?;
            match driver.stat(&blob_data_path(&d)) {
                Ok(s) if s.modified < cutoff => {}
                Ok(_) => {
                    driver.delete(m)?;
                    report.blobs_spared += 1;
                    report.blobs_kept += 1;
                    report.bytes_kept += stat.size;
                    continue;
                }
                Err(e) if e.kind() == Kind::NotFound => {
                    driver.delete(m)?;
                    continue;
                }
                Err(e) => return Err(e),
            }
        }
        let moved = driver.rename(&blob_data_path(&d), &trash_path(&d));
        let again = match moved {
            Ok(()) => driver.stat(&trash_path(&d)).map(Some),
            Err(e) if e.kind() == Kind::NotFound => Ok(None),
            Err(e) => Err(e.context(format!("moving blob {d} aside"))),
        };
        let again = match again {
            Ok(a) => a,
            // Brought back already by a use that found it gone.
            Err(e) if e.kind() == Kind::NotFound => None,
            Err(e) => {
                if let Some(m) = &marker {
                    let _ = driver.delete(m);
                }
                return Err(e);
            }
        };
        let keep = match again {
            None => true,
            // A use between our stat and the move refreshed it: it stays.
            Some(a) if a.modified >= cutoff => {
                store.restore_from_trash(&d);
                true
            }
            Some(_) => false,
        };
        if let Some(m) = &marker {
            driver.delete(m)?;
        }
        if keep {
            report.blobs_spared += 1;
            continue;
        }
        parked.push((d, stat.size));
    }
    for (d, size) in parked {
        store.driver().delete(&trash_path(&d))?;
        let data = blob_data_path(&d);
        if let Some((dir, _)) = data.rsplit_once('/') {
            store.driver().remove_empty_dir(dir)?;
        }
        say(&format!("{verb} blob {d} ({size} bytes)"));
        report.blobs_removed += 1;
        report.bytes_freed += size;
    }
    if !opts.dry_run {
        store.refresh_catalog()?;
    }
    report.finished = crate::util::now_unix();
    say(&format!(
        "{}: {verb} {} tags, {} manifests and {} blobs ({} bytes); {} blobs ({} bytes) kept, {} of them spared as recently used",
        if opts.dry_run {
            "dry run"
        } else {
            "garbage collection"
        },
        report.tags_removed.len(),
        report.manifests_removed.len(),
        report.blobs_removed,
        report.bytes_freed,
        report.blobs_kept,
        report.bytes_kept,
        report.blobs_spared,
    ));
    Ok(report)
}

/// Every blob a manifest needs kept: config and layers, the manifests an index
/// lists, and the layers of an old schema 1 manifest (sites still have them).
fn needs(p: &Parsed) -> Vec<Digest> {
    let mut v: Vec<Digest> = p.blob_refs().iter().map(|b| b.digest.clone()).collect();
    v.extend(p.manifest_refs().iter().map(|m| m.digest.clone()));
    if let AnyManifest::Schema1 { layers } = &p.manifest {
        v.extend(layers.iter().cloned());
    }
    v
}

fn repo_state(store: &RegistryStore, repo: &str, removed: &BTreeSet<String>) -> Result<RepoState> {
    let mut revisions = BTreeMap::new();
    for (d, at) in store.revision_times(repo)? {
        let parsed = store
            .manifest_bytes(&d)
            .ok()
            .and_then(|b| Parsed::parse(&b, None).ok());
        revisions.insert(d, (parsed, at));
    }
    let mut tagged = BTreeSet::new();
    for t in store.tags(repo)?.unwrap_or_default() {
        if removed.contains(&t) {
            continue;
        }
        if let Some(d) = store.resolve(repo, &ManifestRef::Tag(t))? {
            tagged.insert(d);
        }
    }
    Ok(RepoState { revisions, tagged })
}

/// Put back whatever an interrupted collection left in the trash.
/// berth: where the collector announces, on shared storage, that it is moving
/// blob `d` aside.
pub(super) fn doomed_path(d: &Digest) -> String {
    format!(
        "/docker/registry/v2/_berth_locks/blobs/{}-{}",
        d.algorithm().as_str(),
        d.hex()
    )
}

pub fn restore_trash(store: &RegistryStore) -> Result<usize> {
    let mut n = 0;
    for name in store.driver().list("/docker/registry/v2/_berth_trash")? {
        let Some((algo, hex)) = name.split_once('-') else {
            continue;
        };
        if let Ok(d) = format!("{algo}:{hex}").parse::<Digest>()
            && store.restore_from_trash(&d)
        {
            n += 1;
        }
    }
    Ok(n)
}

/// Seconds since the epoch of a report time, for pages.
pub fn when(t: i64) -> String {
    crate::util::rfc3339(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_collection_whose_lease_was_lost_removes_nothing_more() {
        let m = std::sync::Arc::new(super::super::memory::Memory::new());
        let s = RegistryStore::open(m.clone()).unwrap();
        let id = s.start_upload("x/y").unwrap();
        s.append_upload("x/y", &id, None, &mut &b"garbage"[..], None)
            .unwrap();
        let d = Digest::sha256(b"garbage");
        s.finish_upload("x/y", &id, &d).unwrap();
        s.unlink_blob("x/y", &d).unwrap();
        m.set_modified(
            &blob_data_path(&d),
            SystemTime::now() - Duration::from_secs(7200),
        )
        .unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let opts = Options {
            grace: Duration::from_secs(60),
            stop: Some(stop.clone()),
            ..Options::default()
        };
        let e = collect(&s, &opts, &mut |_| {}).unwrap_err();
        assert!(e.to_string().contains("lease was lost"), "{e}");
        assert!(s.global_blob_size(&d).unwrap().is_some());
        stop.store(false, std::sync::atomic::Ordering::Release);
        assert_eq!(collect(&s, &opts, &mut |_| {}).unwrap().blobs_removed, 1);
    }

    /// On shared storage a move aside is a copy and a delete. A use that lands
    /// between them (the blob is still there, so the use succeeds) must not be
    /// swallowed by the delete: it sees the collector's marker, waits, and
    /// brings the blob back from the trash.
    #[test]
    fn a_use_between_copy_and_delete_keeps_the_blob_on_shared_storage() {
        use super::super::Driver;
        use super::super::memory::Memory;
        let m = std::sync::Arc::new(Memory::new_shared());
        let s = std::sync::Arc::new(RegistryStore::open(m.clone()).unwrap());
        let data = b"a layer nobody used for hours";
        let id = s.start_upload("x/y").unwrap();
        s.append_upload("x/y", &id, None, &mut &data[..], None)
            .unwrap();
        let d = Digest::sha256(data);
        s.finish_upload("x/y", &id, &d).unwrap();
        let old = SystemTime::now() - Duration::from_secs(7200);
        m.set_modified(&blob_data_path(&d), old).unwrap();
        // The collector: announce, copy into the trash (keeping the old time)...
        let until = crate::util::now_unix() + 600;
        m.put(&doomed_path(&d), until.to_string().as_bytes())
            .unwrap();
        m.put(&trash_path(&d), data).unwrap();
        m.set_modified(&trash_path(&d), old).unwrap();
        // ...a use arrives while the blob is still in place...
        let toucher = {
            let s = s.clone();
            let d = d.clone();
            std::thread::spawn(move || s.touch_blob(&d).unwrap())
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while m.stat(&blob_data_path(&d)).unwrap().modified == old {
            assert!(std::time::Instant::now() < deadline, "the use never came");
            std::thread::sleep(Duration::from_millis(5));
        }
        // ...then the collector deletes the original, parks the copy (old)
        // and takes its marker away.
        m.delete(&blob_data_path(&d)).unwrap();
        assert!(
            m.stat(&trash_path(&d)).unwrap().modified
                < SystemTime::now() - Duration::from_secs(3600)
        );
        m.delete(&doomed_path(&d)).unwrap();
        assert!(toucher.join().unwrap(), "the use said the blob is gone");
        // The parked copy's deletion comes later and takes nothing the use saw.
        m.delete(&trash_path(&d)).unwrap();
        assert_eq!(s.global_blob_size(&d).unwrap(), Some(data.len() as u64));
    }

    #[test]
    fn globs() {
        assert!(glob_match("site/*", "site/a/b"));
        assert!(glob_match("v*", "v1.2"));
        assert!(!glob_match("v*", "latest"));
        assert!(glob_match("sl?-*", "sl6-umd3"));
        assert!(glob_match("*", ""));
        assert!(!glob_match("a", "ab"));
    }

    #[test]
    fn retention_keeps_newest_and_exceptions() {
        let t = |s: u64| SystemTime::UNIX_EPOCH + Duration::from_secs(s);
        let tags: Vec<(String, SystemTime)> =
            [("a", 10), ("b", 20), ("c", 30), ("latest", 5), ("v1", 1)]
                .iter()
                .map(|(n, s)| (n.to_string(), t(*s)))
                .collect();
        let rules = vec![Retention {
            repository: "test/*".into(),
            keep: Some(2),
            max_age: None,
            except: vec!["latest".into(), "v*".into()],
        }];
        let gone: Vec<String> = retention_victims(&rules, "test/x", &tags, t(100))
            .into_iter()
            .map(|(t, _)| t)
            .collect();
        assert_eq!(gone, vec!["a"]);
        assert!(retention_victims(&rules, "prod/x", &tags, t(100)).is_empty());
        let aged = vec![Retention {
            repository: "*".into(),
            keep: None,
            max_age: Some(Duration::from_secs(75)),
            except: vec![],
        }];
        let mut gone: Vec<String> = retention_victims(&aged, "x", &tags, t(100))
            .into_iter()
            .map(|(t, _)| t)
            .collect();
        gone.sort();
        assert_eq!(gone, vec!["a", "b", "latest", "v1"]);
    }
}

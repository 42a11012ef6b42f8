//! A registry's repositories on a [`Driver`], in Docker Distribution's on-disk layout:
//!
//! ```text
//! docker/registry/v2/blobs/sha256/ab/<hex>/data                    the bytes, once, globally
//! docker/registry/v2/repositories/<name>/_layers/sha256/<hex>/link blob is in <name>
//! .../<name>/_manifests/revisions/sha256/<hex>/link                manifest is in <name>
//! .../<name>/_manifests/tags/<tag>/current/link                    tag -> digest
//! .../<name>/_manifests/tags/<tag>/index/sha256/<hex>/link         tag history
//! .../<name>/_uploads/<uuid>/{data,startedat}                      upload sessions
//! .../<name>/_referrers/sha256/<subject>/sha256/<hex>/link         berth: OCI 1.1 referrers
//! ```
//!
//! A site can point berth at the directory its Distribution filled and keep going.
//!
//! Crash safety: upload bytes are fsynced, hashed and only then renamed into
//! `blobs/`; links and tags are replaced atomically. A kill at any moment leaves
//! either no blob or a whole, verified one.
//!
//! Garbage collection ([`super::gc`]) runs beside pushes, pulls and deletes, in
//! this process or another one on the same storage, by one rule that every
//! path here keeps: **whatever makes a blob reachable, or tells a client that
//! a blob exists, refreshes the blob's mtime before it returns** — a manifest
//! PUT for each blob and child manifest it names (before its revision link is
//! written), a finished upload (its bytes get a fresh mtime before they become
//! visible), a layer link and a cross-repository mount, a blob HEAD or GET.
//! The collector takes its epoch T before it marks and removes only unmarked
//! blobs whose mtime is older than T minus the grace, so anything used since is
//! spared. A blob leaves in two steps: renamed into `_berth_trash/`, its mtime
//! checked again there (a refresh that raced the rename brings it back), and
//! only then deleted. A refresh that finds the blob gone looks in the trash and
//! renames it back, so a client that saw a blob never has it vanish under a
//! manifest PUT; a crash mid-sweep leaves blobs in the trash, which the next
//! lookup or collection restores. Upload sessions live in `_uploads/`, which
//! the collector never touches.
//!
//! On storage other hosts share (an S3 bucket), a move is a copy and a delete,
//! so a refresh landing between the two would be lost with the original. The
//! collector announces each move with a marker under `_berth_locks/blobs/`
//! and looks at the blob's time once more after writing it; a refresh that
//! finds a marker waits for it to go and refreshes again, finding the blob in
//! place or in the trash. Upload sessions keep their hash state in storage
//! (`hashstates/sha256/<offset>`, as Distribution does), and manifest writes
//! to one repository take a lease, so replicas continue each other's uploads
//! and never interleave a tag with a delete.

use super::{BlobReader, Driver};
use crate::digest::{Algorithm, Digest, ResumableSha256};
use crate::error::{Error, Kind, Result};
use crate::oci::{Descriptor, Index, MediaType, Parsed};
use crate::reference::{validate_name, validate_tag};
use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

const V2: &str = "/docker/registry/v2";
/// berth: on shared storage, one small object per catalog change, named
/// `<unix millis>-<uuid>` and holding the repository's name, so replicas
/// re-read only what changed; kept ten minutes.
const CATALOG_CHANGES: &str = "/docker/registry/v2/_berth_catalog";
const CHANGE_KEEP_MS: u128 = 600_000;

/// Largest manifest accepted (the spec asks for at least 4 MB).
pub const MAX_MANIFEST: usize = 4 * 1024 * 1024;

/// A manifest reference: tag or digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ManifestRef {
    Tag(String),
    Digest(Digest),
}

impl ManifestRef {
    pub fn parse(s: &str) -> Result<ManifestRef> {
        if s.contains(':') {
            Ok(ManifestRef::Digest(s.parse()?))
        } else {
            validate_tag(s)?;
            Ok(ManifestRef::Tag(s.to_string()))
        }
    }
}

/// A stored manifest as served.
pub struct StoredManifest {
    pub bytes: Vec<u8>,
    pub digest: Digest,
    pub media_type: MediaType,
}

/// An immutable-tag rule: tags (globs) of repositories (a glob) that never move
/// to another manifest once pushed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Immutable {
    pub repository: String,
    pub tags: Vec<String>,
}

impl Immutable {
    pub fn covers(&self, name: &str, tag: &str) -> bool {
        super::gc::glob_match(&self.repository, name)
            && self.tags.iter().any(|t| super::gc::glob_match(t, tag))
    }
}

/// A signature kept beside a manifest: its id (the part after `DIGEST@`) and blob.
pub type StoredSignature = (String, Vec<u8>);

/// What a manifest PUT did.
#[derive(Debug)]
pub struct PutManifest {
    pub digest: Digest,
    pub subject: Option<Digest>,
}

struct UploadState {
    hasher: ResumableSha256,
    offset: u64,
    /// Finished, cancelled or purged: a PATCH that waited for the lock must not
    /// bring the session back.
    closed: bool,
}

/// A session: its state (locked while a chunk is written) and the offset, which
/// status requests read without waiting for a slow chunk.
struct Session {
    state: Mutex<UploadState>,
    offset: std::sync::atomic::AtomicU64,
}

impl Session {
    fn new(hasher: ResumableSha256, offset: u64) -> Arc<Session> {
        Arc::new(Session {
            state: Mutex::new(UploadState {
                hasher,
                offset,
                closed: false,
            }),
            offset: std::sync::atomic::AtomicU64::new(offset),
        })
    }
}

/// An upload body on its way to the driver: hashed and counted as it passes,
/// held to the length the client declared. Its own faults are kept in `err`, so
/// they are told rather than the driver's I/O error they cause.
struct Feed<'a> {
    inner: &'a mut dyn Read,
    hasher: ResumableSha256,
    n: u64,
    declared: Option<u64>,
    err: Option<Error>,
    /// Called with the final hash at the end of a good body, before the
    /// driver makes the bytes count: the saved hash state is never behind.
    on_end: &'a mut dyn FnMut(&ResumableSha256) -> Result<()>,
    /// The session's lease on shared storage, renewed as the body flows.
    lease: Option<&'a super::lease::Lease>,
}

impl Feed<'_> {
    fn fail(&mut self, e: Error) -> std::io::Error {
        let msg = e.to_string();
        self.err = Some(e);
        std::io::Error::other(msg)
    }
}

impl Read for Feed<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = match self.inner.read(buf) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => return Err(e),
            Err(e) => {
                let msg = e.to_string();
                self.err = Some(Error::with_source(Kind::Network, "reading upload body", e));
                return Err(std::io::Error::other(msg));
            }
        };
        self.n += n as u64;
        if let Some(len) = self.declared
            && (self.n > len || (n == 0 && self.n != len))
        {
            let e = Error::new(
                Kind::Invalid,
                format!(
                    "chunk is {}{} bytes, Content-Length/Content-Range said {len}",
                    if self.n > len { "over " } else { "" },
                    if self.n > len { len } else { self.n }
                ),
            );
            let msg = e.to_string();
            self.err = Some(e);
            return Err(std::io::Error::other(msg));
        }
        self.hasher.update(&buf[..n]);
        if let Some(l) = self.lease
            && let Err(e) = l.keep()
        {
            return Err(self.fail(e));
        }
        if n == 0
            && let Err(e) = (self.on_end)(&self.hasher)
        {
            return Err(self.fail(e));
        }
        Ok(n)
    }
}

/// Repositories, blobs and uploads of one registry.
pub struct RegistryStore {
    d: Arc<dyn Driver>,
    /// Live sessions by (repository, id): a session belongs to the repository it
    /// was started in, and a request naming another repository never meets it.
    uploads: Mutex<HashMap<(String, String), Arc<Session>>>,
    /// Per-repository locks: manifest puts and deletes of one repository do not
    /// interleave (a tag must never point at a revision deleted under it).
    repo_locks: (Mutex<std::collections::HashSet<String>>, std::sync::Condvar),
    /// Live repositories (at least one manifest) -> tags; serves the catalog and search.
    catalog: RwLock<BTreeMap<String, Vec<String>>>,
    /// Catalog changes on shared storage already applied here.
    catalog_seen: Mutex<std::collections::HashSet<String>>,
    immutable: RwLock<Vec<Immutable>>,
}

fn blob_dir(d: &Digest) -> String {
    format!(
        "{V2}/blobs/{}/{}/{}",
        d.algorithm().as_str(),
        &d.hex()[..2],
        d.hex()
    )
}
fn blob_path(d: &Digest) -> String {
    format!("{}/data", blob_dir(d))
}
/// Where the collector parks a blob between its two checks.
pub(super) fn trash_path(d: &Digest) -> String {
    format!("{V2}/_berth_trash/{}-{}", d.algorithm().as_str(), d.hex())
}
pub(super) fn blob_data_path(d: &Digest) -> String {
    blob_path(d)
}
fn repo_path(name: &str) -> String {
    format!("{V2}/repositories/{name}")
}
fn layer_link(name: &str, d: &Digest) -> String {
    format!(
        "{}/_layers/{}/{}/link",
        repo_path(name),
        d.algorithm().as_str(),
        d.hex()
    )
}
fn revision_dir(name: &str, d: &Digest) -> String {
    format!(
        "{}/_manifests/revisions/{}/{}",
        repo_path(name),
        d.algorithm().as_str(),
        d.hex()
    )
}
/// berth: simple-signing signatures of a revision, `NNNNNN-<id>` in the order they
/// came (the lookaside layout numbers them this way). Inside the revision, so a
/// manifest delete takes its signatures along.
fn signatures_dir(name: &str, d: &Digest) -> String {
    format!("{}/atomic-signatures", revision_dir(name, d))
}
/// A manifest carries at most this many signatures (keys of a site, not a flood).
pub const MAX_SIGNATURES: usize = 256;
fn tags_dir(name: &str) -> String {
    format!("{}/_manifests/tags", repo_path(name))
}
fn upload_dir(name: &str, id: &str) -> String {
    format!("{}/_uploads/{id}", repo_path(name))
}
/// Distribution's place for a session's saved hash state at `offset` bytes.
fn hashstate_path(name: &str, id: &str, offset: u64) -> String {
    format!("{}/hashstates/sha256/{offset}", upload_dir(name, id))
}
fn referrers_dir(name: &str, subject: &Digest) -> String {
    format!(
        "{}/_referrers/{}/{}",
        repo_path(name),
        subject.algorithm().as_str(),
        subject.hex()
    )
}

/// Upload ids are uuids we issued; anything else is refused before it meets a path.
pub fn valid_upload_id(id: &str) -> bool {
    id.len() == 36
        && id.bytes().enumerate().all(|(i, b)| {
            if [8, 13, 18, 23].contains(&i) {
                b == b'-'
            } else {
                b.is_ascii_hexdigit() && !b.is_ascii_uppercase()
            }
        })
}

fn tag_order(a: &str, b: &str) -> std::cmp::Ordering {
    a.to_ascii_lowercase()
        .cmp(&b.to_ascii_lowercase())
        .then_with(|| a.cmp(b))
}

impl RegistryStore {
    /// Open a store and index its repositories.
    pub fn open(d: Arc<dyn Driver>) -> Result<RegistryStore> {
        let s = RegistryStore {
            d,
            uploads: Mutex::new(HashMap::new()),
            repo_locks: Default::default(),
            catalog: RwLock::new(BTreeMap::new()),
            catalog_seen: Mutex::new(Default::default()),
            immutable: RwLock::new(Vec::new()),
        };
        if s.d.shared() {
            // The full read below covers every change recorded so far.
            *s.catalog_seen.lock().unwrap() = s.d.list(CATALOG_CHANGES)?.into_iter().collect();
        }
        s.refresh_catalog()?;
        Ok(s)
    }

    pub fn driver(&self) -> &Arc<dyn Driver> {
        &self.d
    }

    /// Tags that never move (config `tagpolicy.immutable`).
    pub fn set_immutable(&self, rules: Vec<Immutable>) {
        *self.immutable.write().unwrap() = rules;
    }

    /// The immutable rule covering `name:tag`, if any.
    pub fn immutable_rule(&self, name: &str, tag: &str) -> Option<Immutable> {
        self.immutable
            .read()
            .unwrap()
            .iter()
            .find(|r| r.covers(name, tag))
            .cloned()
    }

    fn read_link(&self, path: &str) -> Result<Option<Digest>> {
        match self.d.get(path) {
            Ok(b) => {
                let s = String::from_utf8_lossy(&b);
                Ok(Some(s.trim().parse().map_err(|e: Error| {
                    e.context(format!("corrupt link {path}"))
                })?))
            }
            Err(e) if e.kind() == Kind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn exists(&self, path: &str) -> Result<bool> {
        match self.d.stat(path) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == Kind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// True when the repository has any content or sessions.
    pub fn repo_exists(&self, name: &str) -> Result<bool> {
        validate_name(name)?;
        self.exists(&repo_path(name))
    }

    // ---------------------------------------------------------------- blobs

    /// Size of a blob stored anywhere in the registry.
    pub fn global_blob_size(&self, d: &Digest) -> Result<Option<u64>> {
        match self.d.stat(&blob_path(d)) {
            Ok(s) => Ok(Some(s.size)),
            Err(e) if e.kind() == Kind::NotFound => {
                if self.restore_from_trash(d) {
                    return self.global_blob_size(d);
                }
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Bring a blob the collector parked back; true if it was there.
    pub(super) fn restore_from_trash(&self, d: &Digest) -> bool {
        match self.d.rename(&trash_path(d), &blob_path(d)) {
            Ok(()) => {
                log::info!("blob {d} was in use: brought back from the collector's trash");
                true
            }
            Err(_) => false,
        }
    }

    /// Size of a blob if it is linked into `name`.
    pub fn blob_size(&self, name: &str, d: &Digest) -> Result<Option<u64>> {
        validate_name(name)?;
        if !self.exists(&layer_link(name, d))?
            && !self.exists(&format!("{}/link", revision_dir(name, d)))?
        {
            return Ok(None);
        }
        self.global_blob_size(d)
    }

    /// Open a blob of `name` at `offset`: reader and total size.
    pub fn open_blob(
        &self,
        name: &str,
        d: &Digest,
        offset: u64,
    ) -> Result<Option<(BlobReader, u64)>> {
        if self.blob_size(name, d)?.is_none() {
            return Ok(None);
        }
        match self.d.reader(&blob_path(d), offset) {
            Ok(r) => Ok(Some(r)),
            Err(e) if e.kind() == Kind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// A URL the client may fetch blob `d` from itself for `ttl` (object
    /// storage's presigned URL); None when the driver serves no such URLs.
    pub fn blob_redirect(&self, d: &Digest, ttl: Duration) -> Result<Option<String>> {
        self.d.redirect_url(&blob_path(d), ttl)
    }

    /// Bytes of a blob stored anywhere (manifests, configs): small reads only.
    fn read_blob(&self, d: &Digest) -> Result<Vec<u8>> {
        self.d.get(&blob_path(d))
    }

    /// Make a stored blob part of `name`.
    pub fn link_blob(&self, name: &str, d: &Digest) -> Result<()> {
        validate_name(name)?;
        if !self.touch_blob(d)? {
            return Err(Error::not_found(format!("blob {d} is not in the registry")));
        }
        self.d.put(&layer_link(name, d), d.to_string().as_bytes())
    }

    /// Refresh a blob's mtime (the collector's rule, see the module doc): false
    /// when the blob is not stored, after looking in the collector's trash.
    pub fn touch_blob(&self, d: &Digest) -> Result<bool> {
        let found = self.touch_blob_once(d)?;
        if !found || !self.d.shared() {
            return Ok(found);
        }
        // Shared storage: a collector on another host may be moving the blob
        // aside right now (copy, then delete), which could swallow this touch.
        // It announces that first, with the time by which it will be done;
        // wait for it to finish (or for that time to pass: it died) and look
        // again.
        let marker = super::gc::doomed_path(d);
        let mut waited = false;
        loop {
            let until = match self.d.get(&marker) {
                Ok(b) => String::from_utf8_lossy(&b)
                    .trim()
                    .parse::<i64>()
                    .unwrap_or(0),
                Err(e) if e.kind() == Kind::NotFound => break,
                Err(e) => return Err(e),
            };
            if crate::util::now_unix() > until {
                break;
            }
            waited = true;
            std::thread::sleep(Duration::from_millis(50));
        }
        // A collector that finished between our touch and our look may have
        // taken the blob aside: then it is in the trash, and comes back.
        if waited || !self.exists(&blob_path(d))? {
            return self.touch_blob_once(d);
        }
        Ok(true)
    }

    fn touch_blob_once(&self, d: &Digest) -> Result<bool> {
        match self.d.touch(&blob_path(d)) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == Kind::NotFound => {
                if self.restore_from_trash(d) {
                    self.d.touch(&blob_path(d))?;
                    Ok(true)
                } else {
                    Ok(false)
                }
            }
            Err(e) => Err(e),
        }
    }

    /// Remove a blob from `name` (its bytes stay until garbage collection).
    pub fn unlink_blob(&self, name: &str, d: &Digest) -> Result<bool> {
        validate_name(name)?;
        let link = layer_link(name, d);
        if !self.exists(&link)? {
            return Ok(false);
        }
        let dir = link.trim_end_matches("/link");
        self.d.delete(dir)?;
        Ok(true)
    }

    /// Mount a blob from another repository into `name`; false if `from` lacks it.
    pub fn mount_blob(&self, name: &str, from: &str, d: &Digest) -> Result<bool> {
        validate_name(from)?;
        if self.blob_size(from, d)?.is_none() {
            return Ok(false);
        }
        self.link_blob(name, d)?;
        Ok(true)
    }

    // -------------------------------------------------------------- uploads

    /// Start an upload session; returns its id.
    pub fn start_upload(&self, name: &str) -> Result<String> {
        validate_name(name)?;
        let id = crate::util::uuid4();
        let dir = upload_dir(name, &id);
        self.d.put(
            &format!("{dir}/startedat"),
            crate::util::rfc3339(crate::util::now_unix()).as_bytes(),
        )?;
        self.d.stage(&format!("{dir}/data"))?;
        self.uploads.lock().unwrap().insert(
            (name.to_string(), id.clone()),
            Session::new(ResumableSha256::new(), 0),
        );
        Ok(id)
    }

    /// The hash of a session's first `size` bytes: the state saved beside it
    /// (by this process, a replica, or Distribution), else the bytes hashed
    /// again where the driver can read a staged file.
    fn load_hash(&self, name: &str, id: &str, size: u64) -> Result<ResumableSha256> {
        if size == 0 {
            return Ok(ResumableSha256::new());
        }
        match self.d.get(&hashstate_path(name, id, size)) {
            Ok(b) => {
                if let Some(h) = ResumableSha256::restore(&b)
                    && h.len() == size
                {
                    return Ok(h);
                }
                log::warn!("upload {id}: saved hash state at {size} is unusable; hashing again");
            }
            Err(e) if e.kind() == Kind::NotFound => {}
            Err(e) => return Err(e),
        }
        let data = format!("{}/data", upload_dir(name, id));
        let mut hasher = ResumableSha256::new();
        let (mut r, _) = self.d.reader(&data, 0).map_err(|e| {
            Error::internal(format!(
                "upload {id} cannot be resumed: no hash state at {size} bytes and its bytes are unreadable ({e})"
            ))
        })?;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = r.read(&mut buf)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
        if hasher.len() != size {
            return Err(Error::internal(format!(
                "upload {id} changed while it was read ({size} then {} bytes)",
                hasher.len()
            )));
        }
        Ok(hasher)
    }

    /// The session's state, in step with storage: another replica (or a
    /// process before a restart) may have moved it on.
    fn upload_state(&self, name: &str, id: &str) -> Result<Arc<Session>> {
        validate_name(name)?;
        if !valid_upload_id(id) {
            return Err(Error::not_found(format!("upload {id:?} unknown")));
        }
        let key = (name.to_string(), id.to_string());
        if let Some(s) = self.uploads.lock().unwrap().get(&key) {
            return Ok(s.clone());
        }
        // Not in memory: a session from before a restart, another replica's,
        // or none. A session is taken out of the map only after its file is
        // gone (finished, cancelled, purged), so whatever is rebuilt here can
        // never share a file with a session still writing here.
        let size = self.staged_size(name, id)?;
        let hasher = self.load_hash(name, id, size)?;
        let mut map = self.uploads.lock().unwrap();
        Ok(map
            .entry(key)
            .or_insert_with(|| Session::new(hasher, size))
            .clone())
    }

    fn staged_size(&self, name: &str, id: &str) -> Result<u64> {
        match self
            .d
            .staged_size(&format!("{}/data", upload_dir(name, id)))
        {
            Ok(s) => Ok(s),
            Err(e) if e.kind() == Kind::NotFound => Err(Self::gone(id)),
            Err(e) => Err(e),
        }
    }

    /// Catch a session up with storage when a replica appended meanwhile
    /// (the caller holds the session's lock).
    fn sync_session(&self, name: &str, id: &str, st: &mut UploadState) -> Result<()> {
        if !self.d.shared() {
            return Ok(());
        }
        let size = self.staged_size(name, id)?;
        if size != st.offset {
            st.hasher = self.load_hash(name, id, size)?;
            st.offset = size;
        }
        Ok(())
    }

    fn gone(id: &str) -> Error {
        Error::not_found(format!("upload {id} unknown"))
    }

    /// Bytes received so far in a session (without waiting for a chunk in flight).
    pub fn upload_offset(&self, name: &str, id: &str) -> Result<u64> {
        let st = self.upload_state(name, id)?;
        let local = st.offset.load(std::sync::atomic::Ordering::Acquire);
        if self.d.shared()
            && let Ok(mut g) = st.state.try_lock()
        {
            // No chunk in flight here: storage has the truth.
            self.sync_session(name, id, &mut g)?;
            st.offset
                .store(g.offset, std::sync::atomic::Ordering::Release);
            return Ok(g.offset);
        }
        Ok(local)
    }

    /// Append a chunk. `start` is where the client says it begins (Content-Range);
    /// a chunk that does not start at the current offset is refused with
    /// `Kind::Conflict` and nothing is written. Returns the new offset.
    pub fn append_upload(
        &self,
        name: &str,
        id: &str,
        start: Option<u64>,
        body: &mut dyn Read,
        declared_len: Option<u64>,
    ) -> Result<u64> {
        let session = self.upload_state(name, id)?;
        let mut st = session.state.lock().unwrap();
        if st.closed {
            return Err(Self::gone(id));
        }
        let lease = self.upload_lease(id)?;
        self.sync_session(name, id, &mut st)?;
        if let Some(s) = start
            && s != st.offset
        {
            return Err(Error::new(
                Kind::Conflict,
                format!("chunk starts at {s}, upload is at {}", st.offset),
            ));
        }
        let data = format!("{}/data", upload_dir(name, id));
        let before = st.offset;
        // Saved for whoever takes the session up next (a replica, or this
        // registry after a restart), before the bytes count. One at a later
        // offset left by an append that failed after it is simply overwritten.
        let mut save = |h: &ResumableSha256| -> Result<()> {
            if h.len() == before {
                return Ok(());
            }
            self.d.put(&hashstate_path(name, id, h.len()), &h.save())
        };
        let mut feed = Feed {
            inner: body,
            hasher: st.hasher.clone(),
            n: 0,
            declared: declared_len,
            err: None,
            on_end: &mut save,
            lease: lease.as_ref(),
        };
        let res = self.d.append(&data, st.offset, &mut feed);
        if let Some(e) = feed.err.take() {
            // The driver rolled back; the body's own fault is the one to tell.
            return Err(e);
        }
        match res {
            Ok(added) => {
                debug_assert_eq!(added, feed.n);
                st.hasher = feed.hasher;
                st.offset += added;
                session
                    .offset
                    .store(st.offset, std::sync::atomic::Ordering::Release);
                if added > 0 && before > 0 {
                    let _ = self.d.delete(&hashstate_path(name, id, before));
                }
                Ok(st.offset)
            }
            Err(e) if e.kind() == Kind::NotFound => Err(Self::gone(id)),
            Err(e) => Err(e),
        }
    }

    /// Close a session: the whole content must hash to `expected`. On success the
    /// blob is stored, linked into `name`, and its size returned. On a mismatch the
    /// session is removed and nothing is stored.
    pub fn finish_upload(&self, name: &str, id: &str, expected: &Digest) -> Result<u64> {
        let session = self.upload_state(name, id)?;
        let mut st = session.state.lock().unwrap();
        if st.closed {
            return Err(Self::gone(id));
        }
        let lease = self.upload_lease(id)?;
        self.sync_session(name, id, &mut st)?;
        let dir = upload_dir(name, id);
        let data = format!("{dir}/data");
        let got = if expected.algorithm() == Algorithm::Sha256 {
            st.hasher.clone().finish()
        } else {
            // Other algorithms: hash the sealed bytes (still under the upload).
            self.d.seal(&data)?;
            let (mut r, _) = self.d.reader(&data, 0)?;
            let mut h = expected.hasher();
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let n = r.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                h.update(&buf[..n]);
            }
            h.finish()
        };
        let size = st.offset;
        let key = (name.to_string(), id.to_string());
        if &got != expected {
            st.closed = true;
            self.d.delete(&dir)?;
            self.uploads.lock().unwrap().remove(&key);
            return Err(Error::new(
                Kind::Digest,
                format!("upload content has digest {got}, not {expected}"),
            ));
        }
        // The bytes hashed are the bytes stored only while no replica could
        // append: the session's lease must still be ours.
        if let Some(l) = &lease {
            l.keep()?;
            l.check()?;
        }
        if !self.touch_blob(expected)? {
            // Fresh before visible (sealing sets the time): a collection
            // running now spares it. The bytes are durable; the move makes
            // them visible whole.
            if expected.algorithm() == Algorithm::Sha256 {
                self.d.seal(&data)?;
            } else {
                self.d.touch(&data)?;
            }
            if let Some(l) = &lease {
                l.keep()?;
            }
            self.d.rename(&data, &blob_path(expected))?;
        }
        // Closed under the lock every writer of this session holds: a PATCH
        // that waited for it finds the session gone, never the moved file.
        st.closed = true;
        self.d.delete(&dir)?;
        // Only now, with the file gone, may a lookup miss the session.
        self.uploads.lock().unwrap().remove(&key);
        drop(st);
        self.link_blob(name, expected)?;
        Ok(size)
    }

    /// Abort a session and delete its bytes.
    pub fn cancel_upload(&self, name: &str, id: &str) -> Result<()> {
        let session = self.upload_state(name, id)?;
        let mut st = session.state.lock().unwrap();
        if st.closed {
            return Err(Self::gone(id));
        }
        let _lease = self.upload_lease(id)?;
        st.closed = true;
        self.d.delete(&upload_dir(name, id))?;
        self.uploads
            .lock()
            .unwrap()
            .remove(&(name.to_string(), id.to_string()));
        Ok(())
    }

    /// On shared storage, the session's lease: one replica at a time appends
    /// to or finishes a session (a client does not do otherwise; a broken
    /// balancer must not corrupt a blob).
    fn upload_lease(&self, id: &str) -> Result<Option<super::lease::Lease>> {
        if !self.d.shared() {
            return Ok(None);
        }
        super::lease::Lease::acquire(
            &self.d,
            &format!("{V2}/_berth_locks/uploads/{id}"),
            // Short: a replica that died mid-chunk blocks its session only
            // this long; a live one renews it as the body flows.
            Duration::from_secs(30),
            Duration::from_secs(45),
        )
        .map(Some)
    }

    /// Store a small blob given whole (manifests) under its digest of `algo`:
    /// a driver's put is atomic, so it appears whole or not at all.
    fn put_blob_bytes(&self, bytes: &[u8], algo: Algorithm) -> Result<Digest> {
        let d = Digest::of(algo, bytes);
        if !self.touch_blob(&d)? {
            self.d.put(&blob_path(&d), bytes)?;
        }
        Ok(d)
    }

    /// Delete upload sessions older than `max_age` in every repository (or, with
    /// `dry_run`, only count them); returns how many.
    pub fn purge_uploads(&self, max_age: Duration, dry_run: bool) -> Result<usize> {
        let now = SystemTime::now();
        let mut n = 0;
        for repo in self.walk_repositories(false)? {
            for id in self.d.list(&format!("{}/_uploads", repo_path(&repo)))? {
                let dir = upload_dir(&repo, &id);
                let started = self
                    .d
                    .get(&format!("{dir}/startedat"))
                    .ok()
                    .and_then(|b| crate::util::parse_rfc3339(String::from_utf8_lossy(&b).trim()))
                    .map(|t| SystemTime::UNIX_EPOCH + Duration::from_secs(t.max(0) as u64))
                    .or_else(|| self.d.stat(&dir).ok().map(|s| s.modified));
                let old =
                    started.is_none_or(|t| now.duration_since(t).unwrap_or_default() > max_age);
                if old && dry_run {
                    log::info!("upload purging (dry run): would remove {repo} upload {id}");
                    n += 1;
                } else if old {
                    // A session being written to is not stale, whatever startedat says.
                    let key = (repo.clone(), id.clone());
                    let live = self.uploads.lock().unwrap().get(&key).cloned();
                    match live {
                        Some(session) => match session.state.try_lock() {
                            Ok(mut st) if !st.closed => {
                                st.closed = true;
                                self.d.delete(&dir)?;
                            }
                            _ => continue,
                        },
                        None => self.d.delete(&dir)?,
                    }
                    self.uploads.lock().unwrap().remove(&key);
                    n += 1;
                }
            }
        }
        if !dry_run {
            // Leftovers of manifest writes that died; a write in progress is seconds old.
            for f in self.d.list(&format!("{V2}/_tmp"))? {
                let p = format!("{V2}/_tmp/{f}");
                if self.d.stat(&p).is_ok_and(|s| {
                    now.duration_since(s.modified).unwrap_or_default() > Duration::from_secs(3600)
                }) {
                    let _ = self.d.delete(&p);
                }
            }
        }
        Ok(n)
    }

    // ------------------------------------------------------------ manifests

    /// Digest a reference points to in `name`, if any.
    pub fn resolve(&self, name: &str, r: &ManifestRef) -> Result<Option<Digest>> {
        validate_name(name)?;
        let d = match r {
            ManifestRef::Digest(d) => d.clone(),
            ManifestRef::Tag(t) => {
                match self.read_link(&format!("{}/{t}/current/link", tags_dir(name)))? {
                    Some(d) => d,
                    None => return Ok(None),
                }
            }
        };
        if self.exists(&format!("{}/link", revision_dir(name, &d)))? {
            Ok(Some(d))
        } else {
            Ok(None)
        }
    }

    /// A manifest of `name` by tag or digest.
    pub fn get_manifest(&self, name: &str, r: &ManifestRef) -> Result<Option<StoredManifest>> {
        let Some(digest) = self.resolve(name, r)? else {
            return Ok(None);
        };
        let bytes = match self.read_blob(&digest) {
            Ok(b) => b,
            Err(e) if e.kind() == Kind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        // Stored bytes are trusted only after they hash right (disk rot, tampering).
        if Digest::of(digest.algorithm(), &bytes) != digest {
            return Err(Error::new(
                Kind::Digest,
                format!("stored manifest {digest} is corrupt"),
            ));
        }
        let media_type = Parsed::parse(&bytes, None)
            .map(|p| p.media_type)
            .unwrap_or(MediaType::OciManifest);
        Ok(Some(StoredManifest {
            bytes,
            digest,
            media_type,
        }))
    }

    /// Held while a repository's manifests and tags change: in this process,
    /// and on shared storage across replicas too (a lease in the bucket).
    fn repo_lock(&self, name: &str) -> Result<RepoGuard<'_>> {
        let mut busy = self.repo_locks.0.lock().unwrap();
        while busy.contains(name) {
            busy = self.repo_locks.1.wait(busy).unwrap();
        }
        busy.insert(name.to_string());
        drop(busy);
        let mut guard = RepoGuard {
            busy: &self.repo_locks,
            name: name.to_string(),
            lease: None,
        };
        if self.d.shared() {
            guard.lease = Some(super::lease::Lease::acquire(
                &self.d,
                &format!("{V2}/_berth_locks/repositories/{name}/_lock"),
                Duration::from_secs(30),
                Duration::from_secs(60),
            )?);
        }
        Ok(guard)
    }

    /// Store a manifest under a tag or its digest after checking it: valid JSON of
    /// a known kind, digest matching a digest reference, every blob and child
    /// manifest present in `name`. The bytes are kept exactly as given.
    pub fn put_manifest(
        &self,
        name: &str,
        r: &ManifestRef,
        bytes: &[u8],
        content_type: Option<&str>,
    ) -> Result<PutManifest> {
        validate_name(name)?;
        if bytes.len() > MAX_MANIFEST {
            return Err(Error::new(
                Kind::Unsupported,
                format!(
                    "manifest is {} bytes; the limit is {MAX_MANIFEST}",
                    bytes.len()
                ),
            ));
        }
        let parsed = Parsed::parse(bytes, content_type)?;
        let digest = match r {
            ManifestRef::Digest(d) => {
                let got = Digest::of(d.algorithm(), bytes);
                if &got != d {
                    return Err(Error::new(
                        Kind::Digest,
                        format!("manifest digest is {got}, not {d}"),
                    ));
                }
                // The client's digest is the manifest's name here (sha512 too).
                d.clone()
            }
            ManifestRef::Tag(_) => Digest::sha256(bytes),
        };
        for b in parsed.blob_refs() {
            // Checked and refreshed: a collection running now spares it. A
            // refresh may be a long copy on S3, so it is done before the
            // repository's lock is taken.
            if self.blob_size(name, &b.digest)?.is_none() || !self.touch_blob(&b.digest)? {
                return Err(Error::not_found(b.digest.to_string()));
            }
        }
        let repo = self.repo_lock(name)?;
        for m in parsed.manifest_refs() {
            if self
                .resolve(name, &ManifestRef::Digest(m.digest.clone()))?
                .is_none()
            {
                return Err(Error::not_found(m.digest.to_string()));
            }
            if !self.touch_blob(&m.digest)? {
                return Err(Error::not_found(m.digest.to_string()));
            }
        }
        if let ManifestRef::Tag(t) = r
            && let Some(rule) = self.immutable_rule(name, t)
            && let Some(cur) = self.read_link(&format!("{}/{t}/current/link", tags_dir(name)))?
            && cur != digest
        {
            return Err(Error::new(
                Kind::Conflict,
                format!(
                    "tag {t} of {name} is immutable (tagpolicy.immutable: repository {}, tags {}) and points at {cur}; push under a new tag",
                    rule.repository,
                    rule.tags.join(",")
                ),
            ));
        }
        repo.check()?;
        self.put_blob_bytes(bytes, digest.algorithm())?;
        self.d.put(
            &format!("{}/link", revision_dir(name, &digest)),
            digest.to_string().as_bytes(),
        )?;
        if let ManifestRef::Tag(t) = r {
            let td = format!("{}/{t}", tags_dir(name));
            self.d.put(
                &format!(
                    "{td}/index/{}/{}/link",
                    digest.algorithm().as_str(),
                    digest.hex()
                ),
                digest.to_string().as_bytes(),
            )?;
            self.d
                .put(&format!("{td}/current/link"), digest.to_string().as_bytes())?;
        }
        let subject = parsed.subject().map(|s| s.digest.clone());
        if let Some(s) = &subject {
            self.d.put(
                &format!(
                    "{}/{}/{}/link",
                    referrers_dir(name, s),
                    digest.algorithm().as_str(),
                    digest.hex()
                ),
                digest.to_string().as_bytes(),
            )?;
        }
        self.catalog_update(name)?;
        Ok(PutManifest { digest, subject })
    }

    /// Delete a tag only. False if it did not exist.
    pub fn delete_tag(&self, name: &str, tag: &str) -> Result<bool> {
        validate_name(name)?;
        validate_tag(tag)?;
        let _repo = self.repo_lock(name)?;
        let td = format!("{}/{tag}", tags_dir(name));
        if !self.exists(&td)? {
            return Ok(false);
        }
        self.d.delete(&td)?;
        self.catalog_update(name)?;
        Ok(true)
    }

    /// Tags of `name` whose current link names `d`.
    fn tags_at(&self, name: &str, d: &Digest) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for t in self.d.list(&tags_dir(name))? {
            if self
                .read_link(&format!("{}/{t}/current/link", tags_dir(name)))?
                .as_ref()
                == Some(d)
            {
                out.push(t);
            }
        }
        Ok(out)
    }

    /// Remove revision `d` of `name` with its signatures and its referrer entry
    /// (the caller holds the repository's lock).
    fn remove_revision(&self, name: &str, d: &Digest) -> Result<()> {
        if let Ok(bytes) = self.read_blob(d)
            && let Ok(p) = Parsed::parse(&bytes, None)
            && let Some(s) = p.subject()
        {
            self.d.delete(&format!(
                "{}/{}/{}",
                referrers_dir(name, &s.digest),
                d.algorithm().as_str(),
                d.hex()
            ))?;
        }
        self.d.delete(&revision_dir(name, d))?;
        self.catalog_update(name)
    }

    /// Delete a manifest revision and every tag pointing at it. False if unknown.
    pub fn delete_manifest(&self, name: &str, d: &Digest) -> Result<bool> {
        validate_name(name)?;
        let repo = self.repo_lock(name)?;
        if self
            .resolve(name, &ManifestRef::Digest(d.clone()))?
            .is_none()
        {
            return Ok(false);
        }
        let tags = self.tags_at(name, d)?;
        repo.check()?;
        for t in tags {
            self.d.delete(&format!("{}/{t}", tags_dir(name)))?;
        }
        self.remove_revision(name, d)?;
        Ok(true)
    }

    /// Signatures of manifest `d` in `name` as (id, blob), oldest first; None when
    /// the repository does not hold that manifest.
    pub fn signatures(&self, name: &str, d: &Digest) -> Result<Option<Vec<StoredSignature>>> {
        validate_name(name)?;
        if self
            .resolve(name, &ManifestRef::Digest(d.clone()))?
            .is_none()
        {
            return Ok(None);
        }
        let dir = signatures_dir(name, d);
        let mut files = self.d.list(&dir)?;
        files.sort();
        let mut out = Vec::new();
        for f in files {
            let Some((_, id)) = f.split_once('-') else {
                continue;
            };
            match self.d.get(&format!("{dir}/{f}")) {
                Ok(b) => out.push((id.to_string(), b)),
                // Deleted with its manifest while we listed.
                Err(e) if e.kind() == Kind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(Some(out))
    }

    /// Add a signature blob (checked by the caller) to manifest `d` of `name`.
    /// Ok(false) when that id or those exact bytes are there already; NotFound
    /// when the manifest is unknown.
    pub fn put_signature(&self, name: &str, d: &Digest, id: &str, blob: &[u8]) -> Result<bool> {
        validate_name(name)?;
        if id.is_empty()
            || !id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(Error::invalid(format!("invalid signature id {id:?}")));
        }
        let _repo = self.repo_lock(name)?;
        let Some(existing) = self.signatures(name, d)? else {
            return Err(Error::not_found(format!("manifest {d} is not in {name}")));
        };
        if existing.iter().any(|(i, b)| i == id || b == blob) {
            return Ok(false);
        }
        if existing.len() >= MAX_SIGNATURES {
            return Err(Error::new(
                Kind::Conflict,
                format!("manifest {d} has {MAX_SIGNATURES} signatures already"),
            ));
        }
        let dir = signatures_dir(name, d);
        let next = self
            .d
            .list(&dir)?
            .iter()
            .filter_map(|f| f.split_once('-').and_then(|(n, _)| n.parse::<u64>().ok()))
            .max()
            .map_or(1, |n| n + 1);
        self.d.put(&format!("{dir}/{next:06}-{id}"), blob)?;
        Ok(true)
    }

    /// Tags of `name` in the spec's lexical order; None if the repository is unknown.
    pub fn tags(&self, name: &str) -> Result<Option<Vec<String>>> {
        validate_name(name)?;
        if !self.exists(&repo_path(name))? {
            return Ok(None);
        }
        let mut tags: Vec<String> = Vec::new();
        for t in self.d.list(&tags_dir(name))? {
            if validate_tag(&t).is_ok()
                && self.exists(&format!("{}/{t}/current/link", tags_dir(name)))?
            {
                tags.push(t);
            }
        }
        tags.sort_by(|a, b| tag_order(a, b));
        Ok(Some(tags))
    }

    /// Descriptors of manifests in `name` whose subject is `subject`.
    pub fn referrers(&self, name: &str, subject: &Digest) -> Result<Vec<Descriptor>> {
        validate_name(name)?;
        let mut out: Vec<Descriptor> = Vec::new();
        let mut candidates: Vec<Digest> = Vec::new();
        for alg in self.d.list(&referrers_dir(name, subject))? {
            for hex in self
                .d
                .list(&format!("{}/{alg}", referrers_dir(name, subject)))?
            {
                if let Ok(d) = format!("{alg}:{hex}").parse() {
                    candidates.push(d);
                }
            }
        }
        // Referrers pushed by clients that kept the tag schema (`sha256-<hex>`) count too.
        let schema_tag = format!("{}-{}", subject.algorithm().as_str(), subject.hex());
        if let Some(m) = self.get_manifest(name, &ManifestRef::Tag(schema_tag))?
            && let Ok(idx) = serde_json::from_slice::<Index>(&m.bytes)
        {
            candidates.extend(idx.manifests.into_iter().map(|d| d.digest));
        }
        candidates.sort();
        candidates.dedup();
        for d in candidates {
            let Some(m) = self.get_manifest(name, &ManifestRef::Digest(d))? else {
                continue;
            };
            let Ok(p) = Parsed::parse(&m.bytes, None) else {
                continue;
            };
            if p.subject().map(|s| &s.digest) != Some(subject) {
                continue;
            }
            let mut desc =
                Descriptor::new(p.media_type.clone(), m.digest.clone(), m.bytes.len() as u64);
            desc.artifact_type = p.artifact_type();
            desc.annotations = p.annotations().cloned();
            out.push(desc);
        }
        Ok(out)
    }

    // -------------------------------------------------------------- catalog

    fn walk_repositories(&self, live_only: bool) -> Result<Vec<String>> {
        let mut out = Vec::new();
        let mut stack = vec![String::new()];
        while let Some(prefix) = stack.pop() {
            let dir = if prefix.is_empty() {
                format!("{V2}/repositories")
            } else {
                repo_path(&prefix)
            };
            for child in self.d.list(&dir)? {
                if child.starts_with('_') {
                    continue;
                }
                let name = if prefix.is_empty() {
                    child
                } else {
                    format!("{prefix}/{child}")
                };
                if validate_name(&name).is_err() {
                    continue;
                }
                let is_repo = if live_only {
                    self.is_live(&name)?
                } else {
                    self.exists(&format!("{}/_uploads", repo_path(&name)))?
                        || self.exists(&format!("{}/_manifests", repo_path(&name)))?
                };
                if is_repo {
                    out.push(name.clone());
                }
                stack.push(name);
            }
        }
        out.sort();
        Ok(out)
    }

    fn is_live(&self, name: &str) -> Result<bool> {
        let revs = format!("{}/_manifests/revisions", repo_path(name));
        for alg in self.d.list(&revs)? {
            for hex in self.d.list(&format!("{revs}/{alg}"))? {
                if self.exists(&format!("{revs}/{alg}/{hex}/link"))? {
                    return Ok(true);
                }
            }
        }
        Ok(false)
    }

    /// Rebuild the in-memory catalog from storage (at start and periodically, so
    /// writes by another process on the same storage show up).
    pub fn refresh_catalog(&self) -> Result<()> {
        let mut fresh = BTreeMap::new();
        for name in self.walk_repositories(true)? {
            let tags = self.tags(&name)?.unwrap_or_default();
            fresh.insert(name, tags);
        }
        *self.catalog.write().unwrap() = fresh;
        Ok(())
    }

    fn catalog_update(&self, name: &str) -> Result<()> {
        self.catalog_apply(name)?;
        if self.d.shared() {
            // Tell the replicas which repository changed.
            let now = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default()
                .as_millis();
            let key = format!("{now:016}-{}", crate::util::uuid4());
            self.d
                .put(&format!("{CATALOG_CHANGES}/{key}"), name.as_bytes())?;
            self.catalog_seen.lock().unwrap().insert(key);
        }
        Ok(())
    }

    /// Bring one repository's catalog entry in line with storage.
    fn catalog_apply(&self, name: &str) -> Result<()> {
        let live = self.is_live(name)?;
        let tags = if live {
            self.tags(name)?.unwrap_or_default()
        } else {
            Vec::new()
        };
        let mut c = self.catalog.write().unwrap();
        if live {
            c.insert(name.to_string(), tags);
        } else {
            c.remove(name);
        }
        Ok(())
    }

    /// On shared storage, apply the catalog changes other replicas recorded
    /// since we last looked (one listing, then only the repositories named);
    /// returns how many were applied. Changes older than ten minutes are
    /// removed by whichever replica sees them first.
    pub fn refresh_if_changed(&self) -> Result<usize> {
        if !self.d.shared() {
            return Ok(0);
        }
        let keys = self.d.list(CATALOG_CHANGES)?;
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis();
        let mut applied = 0;
        for k in &keys {
            if self.catalog_seen.lock().unwrap().contains(k) {
                continue;
            }
            let path = format!("{CATALOG_CHANGES}/{k}");
            match self.d.get(&path) {
                Ok(name) => {
                    let name = String::from_utf8_lossy(&name).into_owned();
                    if validate_name(&name).is_ok() {
                        self.catalog_apply(&name)?;
                        applied += 1;
                    }
                }
                Err(e) if e.kind() == Kind::NotFound => {}
                Err(e) => return Err(e),
            }
            self.catalog_seen.lock().unwrap().insert(k.clone());
        }
        for k in &keys {
            let old = k
                .split_once('-')
                .and_then(|(t, _)| t.parse::<u128>().ok())
                .is_none_or(|t| t + CHANGE_KEEP_MS < now);
            if old {
                let _ = self.d.delete(&format!("{CATALOG_CHANGES}/{k}"));
            }
        }
        // Forget what storage forgot.
        let listed: std::collections::HashSet<&String> = keys.iter().collect();
        self.catalog_seen.lock().unwrap().retain(|k| {
            listed.contains(k)
                || k.split_once('-')
                    .and_then(|(t, _)| t.parse::<u128>().ok())
                    .is_some_and(|t| t + CHANGE_KEEP_MS >= now)
        });
        Ok(applied)
    }

    // ------------------------------------------------------ for the collector

    /// Every repository with content or sessions.
    pub(super) fn all_repositories(&self) -> Result<Vec<String>> {
        self.walk_repositories(false)
    }

    /// Tags of `name` with when they were last pushed (their current link's mtime).
    pub fn tag_times(&self, name: &str) -> Result<Vec<(String, SystemTime)>> {
        let mut out = Vec::new();
        for t in self.tags(name)?.unwrap_or_default() {
            if let Ok(st) = self.d.stat(&format!("{}/{t}/current/link", tags_dir(name))) {
                out.push((t, st.modified));
            }
        }
        Ok(out)
    }

    /// Manifest revisions of `name` with their link's mtime.
    pub(super) fn revision_times(&self, name: &str) -> Result<Vec<(Digest, SystemTime)>> {
        let mut out = Vec::new();
        let base = format!("{}/_manifests/revisions", repo_path(name));
        for algo in self.d.list(&base)? {
            for hex in self.d.list(&format!("{base}/{algo}"))? {
                let Ok(d) = format!("{algo}:{hex}").parse::<Digest>() else {
                    continue;
                };
                if let Ok(st) = self.d.stat(&format!("{}/link", revision_dir(name, &d))) {
                    out.push((d, st.modified));
                }
            }
        }
        Ok(out)
    }

    /// A stored manifest's bytes, checked against its digest.
    pub(super) fn manifest_bytes(&self, d: &Digest) -> Result<Vec<u8>> {
        let b = self.read_blob(d)?;
        if Digest::of(d.algorithm(), &b) != *d {
            return Err(Error::new(
                Kind::Digest,
                format!("stored manifest {d} is corrupt"),
            ));
        }
        Ok(b)
    }

    /// Every stored blob with its size and mtime.
    pub(super) fn all_blobs(&self) -> Result<Vec<(Digest, super::Stat)>> {
        let mut out = Vec::new();
        let base = format!("{V2}/blobs");
        for algo in self.d.list(&base)? {
            for prefix in self.d.list(&format!("{base}/{algo}"))? {
                for hex in self.d.list(&format!("{base}/{algo}/{prefix}"))? {
                    let Ok(d) = format!("{algo}:{hex}").parse::<Digest>() else {
                        continue;
                    };
                    if let Ok(st) = self.d.stat(&blob_path(&d)) {
                        out.push((d, st));
                    }
                }
            }
        }
        Ok(out)
    }

    /// Delete an untagged revision unless, checked again under the repository's
    /// lock, a tag points at it now or it was pushed since `cutoff`. True if removed.
    pub(super) fn delete_untagged_revision(
        &self,
        name: &str,
        d: &Digest,
        cutoff: SystemTime,
    ) -> Result<bool> {
        let _repo = self.repo_lock(name)?;
        match self.d.stat(&format!("{}/link", revision_dir(name, d))) {
            Ok(st) if st.modified < cutoff => {}
            _ => return Ok(false),
        }
        if !self.tags_at(name, d)?.is_empty() {
            return Ok(false);
        }
        self.remove_revision(name, d)?;
        Ok(true)
    }

    /// Live repositories, sorted.
    pub fn repositories(&self) -> Vec<String> {
        self.catalog.read().unwrap().keys().cloned().collect()
    }

    /// Live repositories with their tags, for search.
    pub fn catalog_snapshot(&self) -> Vec<(String, Vec<String>)> {
        self.catalog
            .read()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

/// Held while one repository's manifests and tags change; released on drop.
struct RepoGuard<'a> {
    busy: &'a (Mutex<std::collections::HashSet<String>>, std::sync::Condvar),
    name: String,
    lease: Option<super::lease::Lease>,
}

impl RepoGuard<'_> {
    /// Before the writes: the repository's lease is still ours (shared storage).
    fn check(&self) -> Result<()> {
        match &self.lease {
            Some(l) => l.check(),
            None => Ok(()),
        }
    }
}

impl Drop for RepoGuard<'_> {
    fn drop(&mut self) {
        drop(self.lease.take());
        self.busy.0.lock().unwrap().remove(&self.name);
        self.busy.1.notify_all();
    }
}

/// A page of a sorted list after `last`, at most `n` long; and whether more follow.
pub fn page<'a>(
    items: &'a [String],
    n: Option<usize>,
    last: Option<&str>,
    tag_sort: bool,
) -> (&'a [String], bool) {
    let start = match last {
        Some(l) => items.partition_point(|x| {
            if tag_sort {
                tag_order(x, l).is_le()
            } else {
                x.as_str() <= l
            }
        }),
        None => 0,
    };
    let rest = &items[start..];
    match n {
        Some(n) if n < rest.len() => (&rest[..n], true),
        _ => (rest, false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Filesystem;

    fn store() -> (RegistryStore, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("berth-reg-{}", crate::util::uuid4()));
        let fs = Filesystem::new(&dir).unwrap();
        (RegistryStore::open(Arc::new(fs)).unwrap(), dir)
    }

    fn push_blob(s: &RegistryStore, name: &str, data: &[u8]) -> Digest {
        let id = s.start_upload(name).unwrap();
        s.append_upload(
            name,
            id.as_str(),
            Some(0),
            &mut &data[..],
            Some(data.len() as u64),
        )
        .unwrap();
        let d = Digest::sha256(data);
        s.finish_upload(name, &id, &d).unwrap();
        d
    }

    #[test]
    fn upload_mount_manifest_tag_delete() {
        let (s, dir) = store();
        let cfg = push_blob(&s, "a/b", b"{}");
        let layer = push_blob(&s, "a/b", b"layer");
        assert_eq!(s.blob_size("a/b", &layer).unwrap(), Some(5));
        assert_eq!(s.blob_size("c", &layer).unwrap(), None);
        assert!(s.mount_blob("c", "a/b", &layer).unwrap());
        assert!(!s.mount_blob("c", "nope", &layer).unwrap());
        let m = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json","config":{{"mediaType":"application/vnd.docker.container.image.v1+json","digest":"{cfg}","size":2}},"layers":[{{"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip","digest":"{layer}","size":5}}]}}"#
        );
        let put = s
            .put_manifest("a/b", &ManifestRef::Tag("v1".into()), m.as_bytes(), None)
            .unwrap();
        let got = s
            .get_manifest("a/b", &ManifestRef::Tag("v1".into()))
            .unwrap()
            .unwrap();
        assert_eq!(got.bytes, m.as_bytes());
        assert_eq!(got.digest, put.digest);
        assert_eq!(got.media_type, MediaType::DockerManifest);
        // missing blob in another repo
        let e = s
            .put_manifest("c", &ManifestRef::Tag("v1".into()), m.as_bytes(), None)
            .unwrap_err();
        assert_eq!(e.kind(), Kind::NotFound);
        assert_eq!(s.repositories(), vec!["a/b".to_string()]);
        assert!(s.delete_tag("a/b", "v1").unwrap());
        assert!(
            s.get_manifest("a/b", &ManifestRef::Tag("v1".into()))
                .unwrap()
                .is_none()
        );
        assert!(
            s.get_manifest("a/b", &ManifestRef::Digest(put.digest.clone()))
                .unwrap()
                .is_some()
        );
        assert!(s.delete_manifest("a/b", &put.digest).unwrap());
        assert!(s.repositories().is_empty());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn wrong_digest_stores_nothing_and_out_of_order_is_refused() {
        let (s, dir) = store();
        let id = s.start_upload("x").unwrap();
        s.append_upload("x", &id, Some(0), &mut &b"abc"[..], None)
            .unwrap();
        let e = s
            .append_upload("x", &id, Some(5), &mut &b"def"[..], None)
            .unwrap_err();
        assert_eq!(e.kind(), Kind::Conflict);
        assert_eq!(s.upload_offset("x", &id).unwrap(), 3);
        let e = s
            .finish_upload("x", &id, &Digest::sha256(b"abcd"))
            .unwrap_err();
        assert_eq!(e.kind(), Kind::Digest);
        assert_eq!(s.global_blob_size(&Digest::sha256(b"abc")).unwrap(), None);
        assert!(s.upload_offset("x", &id).is_err());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn restart_rebuilds_upload_state() {
        let (s, dir) = store();
        let id = s.start_upload("x").unwrap();
        s.append_upload("x", &id, Some(0), &mut &b"hello "[..], None)
            .unwrap();
        drop(s);
        let s2 = RegistryStore::open(Arc::new(Filesystem::new(&dir).unwrap())).unwrap();
        assert_eq!(s2.upload_offset("x", &id).unwrap(), 6);
        s2.append_upload("x", &id, Some(6), &mut &b"world"[..], None)
            .unwrap();
        s2.finish_upload("x", &id, &Digest::sha256(b"hello world"))
            .unwrap();
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_closed_session_stays_closed() {
        let (s, dir) = store();
        let id = s.start_upload("x").unwrap();
        s.append_upload("x", &id, Some(0), &mut &b"abc"[..], None)
            .unwrap();
        s.finish_upload("x", &id, &Digest::sha256(b"abc")).unwrap();
        // a PATCH that was waiting for the lock must not bring the session back
        assert_eq!(
            s.append_upload("x", &id, None, &mut &b"more"[..], None)
                .unwrap_err()
                .kind(),
            Kind::NotFound
        );
        assert!(
            !dir.join(format!("docker/registry/v2/repositories/x/_uploads/{id}"))
                .exists()
        );
        let id2 = s.start_upload("x").unwrap();
        s.cancel_upload("x", &id2).unwrap();
        assert_eq!(
            s.cancel_upload("x", &id2).unwrap_err().kind(),
            Kind::NotFound
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn sha512_manifests_are_found_by_their_digest() {
        let (s, dir) = store();
        let cfg = push_blob(&s, "m", b"{}");
        let m = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{cfg}","size":2}},"layers":[]}}"#
        );
        let d512 = Digest::of(Algorithm::Sha512, m.as_bytes());
        let put = s
            .put_manifest("m", &ManifestRef::Digest(d512.clone()), m.as_bytes(), None)
            .unwrap();
        assert_eq!(put.digest, d512);
        let got = s
            .get_manifest("m", &ManifestRef::Digest(d512.clone()))
            .unwrap()
            .unwrap();
        assert_eq!(got.bytes, m.as_bytes());
        assert_eq!(got.digest, d512);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn paging() {
        let v: Vec<String> = ["a", "B", "c", "d"].iter().map(|s| s.to_string()).collect();
        let mut v2 = v.clone();
        v2.sort_by(|a, b| tag_order(a, b));
        assert_eq!(v2, ["a", "B", "c", "d"]);
        assert_eq!(page(&v2, Some(2), None, true), (&v2[..2], true));
        assert_eq!(page(&v2, Some(2), Some("B"), true), (&v2[2..], false));
        assert_eq!(page(&v2, Some(0), None, true).0.len(), 0);
    }
}

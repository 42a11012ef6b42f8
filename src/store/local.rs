//! The local image store under a graph root (default `/var/lib/berth`, `-g DIR` or
//! `BERTH_ROOT`), shared by the client applets and the engine.
//!
//! ```text
//! ROOT/blobs/sha256/<hex>   manifests, indexes, configs, compressed layers (CAS)
//! ROOT/refs.json            name:tag -> manifest, repo digests, image metadata
//! ROOT/layers/sha256/<hex>/ unpacked layers by diff_id, overlay form (layers/ is 0700)
//! ROOT/leases/<holder>      manifest digests in use (containers); rmi refuses them
//! ROOT/tmp/                 blobs being written, layers being unpacked
//! ROOT/signatures/sha256/<manifest hex>/<blob sha256 hex>  simple-signing signatures
//! ROOT/refs.lock            flock for read-modify-write of refs.json
//! ROOT/gc.lock              shared by writers, exclusive for blob removal
//! ```
//!
//! Blobs are written to `tmp/`, hashed on the way, fsynced, checked against the
//! expected digest and only then renamed into `blobs/`, so a crash leaves the
//! previous state. refs.json is replaced atomically under an exclusive flock, so
//! several applets (and the engine) can update it at once. Blob removal (after
//! rmi) takes `gc.lock` exclusively; every writer holds it shared from its first
//! blob to its ref update, so nothing being pulled is ever swept.
//!
//! The layer cache is what the engine's overlay mounts stack as lowerdirs: each
//! layer unpacked once, on its own, shared by every image that has it. A layer
//! is unpacked in `tmp/`, checked against the diff_id the image config promises,
//! synced and renamed into place, so a directory under its final name is always
//! whole; it is removed the same way round (renamed out, then deleted). Leases
//! are the containers' hold: a lease file is written under `gc.lock` (shared),
//! so no collection runs between the engine choosing an image and the lease
//! existing, and the collector spares every blob and layer a lease names.

use crate::digest::{Algorithm, Digest, Hasher};
use crate::error::{Context, Error, Kind, Result};
use crate::oci::{AnyManifest, ImageConfig, MediaType, Parsed};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

/// Default graph root.
pub const DEFAULT_ROOT: &str = "/var/lib/berth";

/// Graph root from the command line, else `BERTH_ROOT`, else the default.
pub fn root_from(flag: Option<&Path>) -> PathBuf {
    flag.map(Path::to_path_buf)
        .or_else(|| std::env::var_os("BERTH_ROOT").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_ROOT))
}

/// Per-image facts kept beside the refs.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ImageMeta {
    /// Uncompressed size of all layers, when known (import, load, mkimage).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// The index this manifest was selected from, if it was pulled through one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<Digest>,
}

/// The references file.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Refs {
    /// `name:tag` -> manifest digest.
    #[serde(default)]
    pub tags: BTreeMap<String, Digest>,
    /// `name` -> digests the name was pulled or pushed by (shown as repo digests).
    #[serde(default)]
    pub digests: BTreeMap<String, BTreeSet<Digest>>,
    /// manifest digest -> facts.
    #[serde(default)]
    pub images: BTreeMap<Digest, ImageMeta>,
}

impl Refs {
    /// Manifest digests referenced by any tag or repo digest.
    pub fn referenced(&self) -> BTreeSet<Digest> {
        let mut s: BTreeSet<Digest> = self.tags.values().cloned().collect();
        for ds in self.digests.values() {
            for d in ds {
                if let Some(m) = self
                    .images
                    .iter()
                    .find(|(m, meta)| *m == d || meta.index.as_ref() == Some(d))
                    .map(|(m, _)| m)
                {
                    s.insert(m.clone());
                }
            }
        }
        s
    }
}

/// An image as the store knows it.
#[derive(Debug, Clone)]
pub struct LocalImage {
    pub manifest_digest: Digest,
    pub manifest_bytes: Vec<u8>,
    pub media_type: MediaType,
    pub parsed: Parsed,
    pub config_digest: Digest,
    pub config_bytes: Vec<u8>,
    pub config: ImageConfig,
}

impl LocalImage {
    /// Layer descriptors in order.
    pub fn layers(&self) -> &[crate::oci::Descriptor] {
        match &self.parsed.manifest {
            AnyManifest::Image(m) => &m.layers,
            _ => &[],
        }
    }
    /// Docker's image id: the config digest.
    pub fn id(&self) -> &Digest {
        &self.config_digest
    }
}

pub use crate::fsutil::Lock;
use crate::fsutil::flock;

/// Hashes what passes through it: a layer's diff_id while it is applied.
struct HashingReader<R> {
    inner: R,
    hasher: Hasher,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// The store.
#[derive(Debug, Clone)]
pub struct LocalStore {
    root: PathBuf,
}

/// A blob being written: hashed as it goes, visible only after [`BlobWriter::commit`].
pub struct BlobWriter {
    store: LocalStore,
    tmp: PathBuf,
    file: io::BufWriter<File>,
    hasher: Hasher,
    size: u64,
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl BlobWriter {
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Make the blob visible. With `expected`, a mismatch is a `Kind::Digest`
    /// error and nothing is kept.
    pub fn commit(mut self, expected: Option<&Digest>) -> Result<(Digest, u64)> {
        self.file.flush()?;
        let got = std::mem::replace(&mut self.hasher, Hasher::new(Algorithm::Sha256)).finish();
        if let Some(e) = expected {
            if e.algorithm() != Algorithm::Sha256 {
                return Err(Error::new(
                    Kind::Unsupported,
                    format!("{e}: the local store keeps sha256 content only"),
                ));
            }
            if &got != e {
                return Err(Error::new(
                    Kind::Digest,
                    format!("content has digest {got}, expected {e}"),
                ));
            }
        }
        self.file.get_ref().sync_data().context("fsync blob")?;
        let dest = self.store.blob_path(&got);
        fs::rename(&self.tmp, &dest).with_context(|| format!("store blob {got}"))?;
        crate::fsutil::fsync_dir(dest.parent().unwrap())?;
        self.tmp = PathBuf::new();
        Ok((got, self.size))
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        if !self.tmp.as_os_str().is_empty() {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

impl LocalStore {
    /// Open (creating) a store; a clear error if the root is not usable.
    pub fn open(root: &Path) -> Result<LocalStore> {
        for d in ["blobs/sha256", "tmp", "leases", "layers/sha256"] {
            let p = root.join(d);
            fs::create_dir_all(&p).map_err(|e| {
                Error::from(e).context(format!(
                    "image store {}: cannot create {} (use -g DIR or BERTH_ROOT for another root)",
                    root.display(),
                    p.display()
                ))
            })?;
        }
        // Half-written blobs, build roots and unpacked archives live in tmp/: no
        // one else may walk in (an image's set-id binaries are in there mid-build).
        // So do unpacked layers: set-id binaries and device nodes live there.
        use std::os::unix::fs::PermissionsExt;
        for private in [root.join("tmp"), root.join("layers")] {
            if fs::metadata(&private).is_ok_and(|m| m.permissions().mode() & 0o077 != 0) {
                fs::set_permissions(&private, fs::Permissions::from_mode(0o700))
                    .with_context(|| format!("chmod {}", private.display()))?;
            }
        }
        Ok(LocalStore {
            root: root.to_path_buf(),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn blob_path(&self, d: &Digest) -> PathBuf {
        self.root
            .join("blobs")
            .join(d.algorithm().as_str())
            .join(d.hex())
    }

    /// Size of a stored blob.
    pub fn has_blob(&self, d: &Digest) -> Option<u64> {
        fs::metadata(self.blob_path(d))
            .ok()
            .filter(|m| m.is_file())
            .map(|m| m.len())
    }

    /// A small blob, checked against its digest on the way in.
    pub fn read_blob(&self, d: &Digest) -> Result<Vec<u8>> {
        let b =
            fs::read(self.blob_path(d)).map_err(|e| Error::from(e).context(format!("blob {d}")))?;
        if Digest::of(d.algorithm(), &b) != *d {
            return Err(Error::new(
                Kind::Digest,
                format!("stored blob {d} is corrupt: remove it with `rmi` and pull again"),
            ));
        }
        Ok(b)
    }

    pub fn open_blob(&self, d: &Digest) -> Result<File> {
        File::open(self.blob_path(d)).map_err(|e| Error::from(e).context(format!("blob {d}")))
    }

    /// Start writing a blob.
    pub fn writer(&self) -> Result<BlobWriter> {
        let tmp = self
            .root
            .join("tmp")
            .join(format!("blob-{}", crate::util::uuid4()));
        let f = File::create(&tmp).with_context(|| format!("create {}", tmp.display()))?;
        Ok(BlobWriter {
            store: self.clone(),
            tmp,
            file: io::BufWriter::with_capacity(1 << 20, f),
            hasher: Hasher::new(Algorithm::Sha256),
            size: 0,
        })
    }

    /// Store bytes (idempotent).
    pub fn put_bytes(&self, data: &[u8]) -> Result<Digest> {
        let d = Digest::sha256(data);
        if self.has_blob(&d).is_none() {
            let mut w = self.writer()?;
            w.write_all(data)?;
            w.commit(Some(&d))?;
        }
        Ok(d)
    }

    /// Copy a stream into the store, verifying it against `expected`.
    pub fn put_stream(&self, r: &mut dyn Read, expected: Option<&Digest>) -> Result<(Digest, u64)> {
        let mut w = self.writer()?;
        io::copy(r, &mut w).map_err(|e| Error::with_source(Kind::Io, "writing blob", e))?;
        w.commit(expected)
    }

    /// A private (0700) working directory under `tmp/`, removed when dropped. Its
    /// name carries this process's id, so [`LocalStore::clean_stale_staging`]
    /// can tell the leftovers of a process that was killed.
    pub fn staging_dir(&self, kind: &str) -> Result<Staging> {
        Self::staging_dir_in(&self.root.join("tmp"), kind)
    }

    /// A staging directory under another base (dockerd's `DOCKER_TMPDIR`):
    /// for what is unpacked before it is checked and copied into the store.
    pub fn staging_dir_in(base: &Path, kind: &str) -> Result<Staging> {
        use std::os::unix::fs::DirBuilderExt;
        let dir = base.join(format!(
            "{kind}-{}-{}",
            std::process::id(),
            &crate::util::uuid4()[..8]
        ));
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .with_context(|| format!("create {}", dir.display()))?;
        Ok(Staging(dir))
    }

    /// Remove `kind` staging directories whose process is gone (killed mid-way).
    pub fn clean_stale_staging(&self, kind: &str) {
        Self::clean_stale_staging_in(&self.root.join("tmp"), kind)
    }

    /// [`LocalStore::clean_stale_staging`] under another base.
    pub fn clean_stale_staging_in(base: &Path, kind: &str) {
        let Ok(rd) = fs::read_dir(base) else {
            return;
        };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(pid) = name
                .strip_prefix(kind)
                .and_then(|r| r.strip_prefix('-'))
                .and_then(|r| r.split('-').next())
                .and_then(|p| p.parse::<u32>().ok())
            else {
                continue;
            };
            if !Path::new(&format!("/proc/{pid}")).exists() {
                match fs::remove_dir_all(e.path()) {
                    Ok(()) => log::info!("removed {} left by a killed process", e.path().display()),
                    Err(err) => log::warn!("cannot remove {}: {err}", e.path().display()),
                }
            }
        }
    }

    /// Hold this from the first blob of an operation to its ref update.
    pub fn writer_lease(&self) -> Result<Lock> {
        Ok(flock(&self.root.join("gc.lock"), false, true)?.expect("blocking lock"))
    }

    /// Current references.
    pub fn refs(&self) -> Result<Refs> {
        let p = self.root.join("refs.json");
        match fs::read(&p) {
            Ok(b) => serde_json::from_slice(&b)
                .map_err(|e| Error::invalid(format!("{}: {e}", p.display()))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Refs::default()),
            Err(e) => Err(Error::from(e).context(p.display())),
        }
    }

    /// Change references atomically under the store's lock.
    pub fn update_refs<T>(&self, f: impl FnOnce(&mut Refs) -> Result<T>) -> Result<T> {
        let _l = flock(&self.root.join("refs.lock"), true, true)?;
        let mut refs = self.refs()?;
        let v = f(&mut refs)?;
        let text = serde_json::to_vec_pretty(&refs).map_err(|e| Error::internal(e.to_string()))?;
        crate::fsutil::atomic_write(&self.root.join("refs.json"), &text)?;
        Ok(v)
    }

    /// Load an image by manifest digest, checking that its config is present.
    pub fn image(&self, manifest: &Digest) -> Result<LocalImage> {
        let bytes = self.read_blob(manifest)?;
        let parsed = Parsed::parse(&bytes, None)?;
        let AnyManifest::Image(m) = &parsed.manifest else {
            return Err(Error::invalid(format!(
                "{manifest} is not an image manifest"
            )));
        };
        let config_digest = m.config.digest.clone();
        let config_bytes = self.read_blob(&config_digest)?;
        let config: ImageConfig = serde_json::from_slice(&config_bytes)
            .map_err(|e| Error::invalid(format!("image config {config_digest}: {e}")))?;
        Ok(LocalImage {
            manifest_digest: manifest.clone(),
            media_type: parsed.media_type.clone(),
            manifest_bytes: bytes,
            parsed,
            config_digest,
            config_bytes,
            config,
        })
    }

    /// Find an image by `name[:tag]`, `name@digest`, a digest, or an image-id prefix.
    pub fn resolve(&self, what: &str) -> Result<Option<Digest>> {
        let refs = self.refs()?;
        if let Some((_, d)) = what.split_once('@') {
            let d: Digest = d.parse()?;
            return Ok(self.manifest_for(&refs, &d));
        }
        if let Ok(d) = what.parse::<Digest>()
            && let Some(m) = self.manifest_for(&refs, &d)
        {
            return Ok(Some(m));
        }
        let key = tagged(what);
        if let Some(d) = refs.tags.get(&key) {
            return Ok(Some(d.clone()));
        }
        // image id (config digest) or a prefix of it, as docker accepts
        let hex = what.strip_prefix("sha256:").unwrap_or(what);
        if hex.len() >= 4 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            let mut found: BTreeSet<Digest> = BTreeSet::new();
            for m in refs.images.keys() {
                if m.hex().starts_with(hex) {
                    found.insert(m.clone());
                } else if let Ok(img) = self.image(m)
                    && img.config_digest.hex().starts_with(hex)
                {
                    found.insert(m.clone());
                }
            }
            if found.len() > 1 {
                return Err(Error::invalid(format!(
                    "{what} matches several images: give more digits"
                )));
            }
            return Ok(found.into_iter().next());
        }
        Ok(None)
    }

    // A manifest digest for a digest that may be of a manifest or of an index.
    fn manifest_for(&self, refs: &Refs, d: &Digest) -> Option<Digest> {
        if refs.images.contains_key(d) {
            return Some(d.clone());
        }
        refs.images
            .iter()
            .find(|(_, meta)| meta.index.as_ref() == Some(d))
            .map(|(m, _)| m.clone())
    }

    /// Whether an image and all its blobs are present.
    pub fn complete(&self, manifest: &Digest) -> bool {
        match self.image(manifest) {
            Ok(img) => img
                .layers()
                .iter()
                .all(|l| l.media_type.is_foreign() || self.has_blob(&l.digest) == Some(l.size)),
            Err(_) => false,
        }
    }

    /// Record an image and point `names` (each `name:tag`) at it.
    pub fn tag(&self, manifest: &Digest, names: &[String], meta: ImageMeta) -> Result<()> {
        self.update_refs(|r| {
            let e = r.images.entry(manifest.clone()).or_default();
            if meta.size.is_some() {
                e.size = meta.size;
            }
            if meta.index.is_some() {
                e.index = meta.index.clone();
            }
            for n in names {
                r.tags.insert(tagged(n), manifest.clone());
            }
            Ok(())
        })
    }

    /// Remember that `name` is known by `digest` on its registry.
    pub fn add_repo_digest(&self, name: &str, digest: &Digest) -> Result<()> {
        self.update_refs(|r| {
            r.digests
                .entry(crate::reference::familiar(name))
                .or_default()
                .insert(digest.clone());
            Ok(())
        })
    }

    fn signatures_dir(&self, d: &Digest) -> PathBuf {
        self.root
            .join("signatures")
            .join(d.algorithm().as_str())
            .join(d.hex())
    }

    /// Signature blobs kept for manifest (or index) `d`, oldest first.
    pub fn signatures(&self, d: &Digest) -> Result<Vec<Vec<u8>>> {
        let dir = self.signatures_dir(d);
        let mut files: Vec<(std::time::SystemTime, PathBuf)> = match fs::read_dir(&dir) {
            Ok(rd) => rd
                .flatten()
                .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
                .map(|e| {
                    let t = e
                        .metadata()
                        .and_then(|m| m.modified())
                        .unwrap_or(std::time::UNIX_EPOCH);
                    (t, e.path())
                })
                .collect(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::from(e).context(dir.display())),
        };
        files.sort();
        files
            .into_iter()
            .map(|(_, p)| fs::read(&p).with_context(|| format!("read {}", p.display())))
            .collect()
    }

    /// Keep a signature blob for `d` (the caller checked it is one). False when
    /// those bytes are kept already. Written whole and synced before it appears.
    pub fn add_signature(&self, d: &Digest, blob: &[u8]) -> Result<bool> {
        let dir = self.signatures_dir(d);
        let path = dir.join(Digest::sha256(blob).hex());
        if path.exists() {
            return Ok(false);
        }
        fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        crate::fsutil::atomic_write(&path, blob)?;
        Ok(true)
    }

    /// Manifest digests held by leases (containers using images).
    pub fn leased(&self) -> Result<BTreeSet<Digest>> {
        Ok(self
            .leases()?
            .into_iter()
            .flat_map(|l| l.manifests)
            .collect())
    }

    /// Every lease, by holder.
    pub fn leases(&self) -> Result<Vec<Lease>> {
        let dir = self.root.join("leases");
        let mut out = Vec::new();
        for e in fs::read_dir(&dir)
            .with_context(|| format!("read {}", dir.display()))?
            .flatten()
        {
            let holder = e.file_name().to_string_lossy().into_owned();
            // `.NAME.tmp-…`: a lease being written, not a lease yet.
            if holder.starts_with('.') {
                continue;
            }
            let text = fs::read_to_string(e.path()).unwrap_or_default();
            let manifests = text.lines().filter_map(|l| l.trim().parse().ok()).collect();
            out.push(Lease { holder, manifests });
        }
        out.sort_by(|a, b| a.holder.cmp(&b.holder));
        Ok(out)
    }

    /// Hold `manifests` for `holder` (a container id): until
    /// [`LocalStore::release_lease`], `rmi` refuses them (without force) and
    /// [`LocalStore::collect_garbage`] keeps their blobs and cached layers. The
    /// lease file is written atomically under `gc.lock` (shared), after checking
    /// that every image is still whole: a collection that ran between the caller
    /// choosing the image and this call makes it fail here, never leaves a lease
    /// on what is gone. A holder's lease is replaced by its next one.
    pub fn lease(&self, holder: &str, manifests: &[Digest]) -> Result<Lease> {
        let path = self.lease_path(holder)?;
        let _gc = self.writer_lease()?;
        for m in manifests {
            if !self.complete(m) {
                return Err(Error::not_found(format!(
                    "cannot lease image {m} for {holder}: it is not (or no longer) whole in the store; pull it again"
                )));
            }
        }
        let text: String = manifests.iter().map(|m| format!("{m}\n")).collect();
        crate::fsutil::atomic_write(&path, text.as_bytes())
            .map_err(|e| e.context(format!("lease for {holder}")))?;
        Ok(Lease {
            holder: holder.to_string(),
            manifests: manifests.to_vec(),
        })
    }

    /// Drop `holder`'s lease; false if it had none.
    pub fn release_lease(&self, holder: &str) -> Result<bool> {
        let path = self.lease_path(holder)?;
        match fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(Error::from(e).context(format!("release the lease of {holder}"))),
        }
    }

    // A holder names one file in leases/: a plain name, nothing that could climb.
    fn lease_path(&self, holder: &str) -> Result<PathBuf> {
        let ok = !holder.is_empty()
            && holder.len() <= 128
            && !holder.starts_with('.')
            && holder
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.');
        if !ok {
            return Err(Error::invalid(format!(
                "lease holder {holder:?}: use 1-128 letters, digits, '_', '-' or '.', not starting with '.'"
            )));
        }
        Ok(self.root.join("leases").join(holder))
    }

    /// Where the layer with this diff_id is (or would be) unpacked.
    pub fn layer_path(&self, diff_id: &Digest) -> PathBuf {
        self.root
            .join("layers")
            .join(diff_id.algorithm().as_str())
            .join(diff_id.hex())
    }

    /// The layer cache entry for `diff_id`, unpacking the blob `blob` (gzip or
    /// plain tar) into it if it is not there yet. The uncompressed stream must
    /// hash to `diff_id`, or nothing is kept. Holds `gc.lock` shared meanwhile.
    pub fn unpack_layer(
        &self,
        blob: &Digest,
        media_type: &MediaType,
        diff_id: &Digest,
    ) -> Result<PathBuf> {
        if diff_id.algorithm() != Algorithm::Sha256 {
            return Err(Error::new(
                Kind::Unsupported,
                format!(
                    "layer {blob}: diff_id {diff_id}: the layer cache keeps sha256 layers only"
                ),
            ));
        }
        let dest = self.layer_path(diff_id);
        let _gc = self.writer_lease()?;
        if fs::symlink_metadata(&dest).is_ok_and(|m| m.is_dir()) {
            return Ok(dest);
        }
        if media_type.as_str().contains("zstd") {
            return Err(Error::new(
                Kind::Unsupported,
                format!(
                    "layer {blob} is compressed with zstd ({media_type}), which berth cannot unpack: use an image with gzip layers"
                ),
            ));
        }
        if self.has_blob(blob).is_none() {
            return Err(Error::not_found(format!(
                "layer {blob} is not in the store: pull the image again"
            )));
        }
        self.clean_stale_staging("layer");
        let staging = self.staging_dir("layer")?;
        let tree = staging.path().join("root");
        let file = self.open_blob(blob)?;
        let input = crate::archive::decompressed(io::BufReader::with_capacity(1 << 20, file))
            .map_err(|e| e.context(format!("layer {blob}")))?;
        let got = crate::archive::extract_overlay(input, &tree)
            .map_err(|e| e.context(format!("unpack layer {blob}")))?;
        if got.diff_id != *diff_id {
            return Err(Error::new(
                Kind::Digest,
                format!(
                    "layer {blob} unpacks to diff_id {}, but the image config promises {diff_id}: the layer is corrupt or not this image's; remove the image and pull it again",
                    got.diff_id
                ),
            ));
        }
        crate::fsutil::sync_filesystem(&tree)?;
        if let Err(e) = fs::rename(&tree, &dest) {
            // Another process unpacked the same layer meanwhile: theirs is as
            // good as ours (same diff_id), and ours goes with the staging dir.
            if !fs::symlink_metadata(&dest).is_ok_and(|m| m.is_dir()) {
                return Err(Error::from(e).context(format!("store layer {diff_id}")));
            }
        }
        crate::fsutil::fsync_dir(dest.parent().expect("layer path has a parent"))?;
        Ok(dest)
    }

    /// An image's layers, bottom first, each with the diff_id its config
    /// promises; a manifest and config that disagree on the count are refused.
    fn layers_and_diff_ids(
        &self,
        manifest: &Digest,
    ) -> Result<Vec<(crate::oci::Descriptor, Digest)>> {
        let img = self.image(manifest)?;
        let layers = img.layers();
        let diff_ids = &img.config.rootfs.diff_ids;
        if layers.len() != diff_ids.len() {
            return Err(Error::invalid(format!(
                "image {manifest}: the manifest has {} layers but the config lists {} diff_ids",
                layers.len(),
                diff_ids.len()
            )));
        }
        Ok(layers
            .iter()
            .cloned()
            .zip(diff_ids.iter().cloned())
            .collect())
    }

    /// The overlay lowerdirs of an image, top layer first (as `lowerdir=` wants
    /// them), unpacking the layers not cached yet; the diff_ids are the image
    /// config's. A layer the image has twice is listed once, at its top place:
    /// overlayfs refuses a directory twice, and the lower copy can show nothing
    /// the upper does not cover. Take a [`LocalStore::lease`] first: a cached
    /// layer is safe from collection only while an image in refs.json or a
    /// lease needs it.
    pub fn layer_dirs(&self, manifest: &Digest) -> Result<Vec<PathBuf>> {
        let mut dirs: Vec<PathBuf> = Vec::new();
        for (l, d) in self.layers_and_diff_ids(manifest)?.iter().rev() {
            let dir = self
                .unpack_layer(&l.digest, &l.media_type, d)
                .map_err(|e| e.context(format!("image {manifest}")))?;
            if !dirs.contains(&dir) {
                dirs.push(dir);
            }
        }
        Ok(dirs)
    }

    /// The image's root as one plain directory tree at `dest` (missing or
    /// empty): every layer applied bottom first, whiteouts deleting, each layer's
    /// stream checked against its diff_id. For hosts whose graph root cannot
    /// carry an overlay (XFS with ftype=0): a container then runs on its own
    /// copy. A layer that does not match leaves the partial tree for the caller
    /// to remove.
    pub fn materialize(&self, manifest: &Digest, dest: &Path) -> Result<u64> {
        let layers = self.layers_and_diff_ids(manifest)?;
        fs::create_dir_all(dest).with_context(|| format!("create {}", dest.display()))?;
        let mut entries = 0;
        for (l, diff_id) in &layers {
            if l.media_type.as_str().contains("zstd") {
                return Err(Error::new(
                    Kind::Unsupported,
                    format!(
                        "layer {} is compressed with zstd, which berth cannot unpack",
                        l.digest
                    ),
                ));
            }
            let file = self.open_blob(&l.digest)?;
            let input = crate::archive::decompressed(io::BufReader::with_capacity(1 << 20, file))
                .map_err(|e| e.context(format!("layer {}", l.digest)))?;
            let mut hashing = HashingReader {
                inner: input,
                hasher: Hasher::new(diff_id.algorithm()),
            };
            entries += crate::archive::extract(&mut hashing, dest)
                .map_err(|e| e.context(format!("apply layer {}", l.digest)))?;
            io::copy(&mut hashing, &mut io::sink()).context("reading the end of the layer")?;
            let got = hashing.hasher.finish();
            if got != *diff_id {
                return Err(Error::new(
                    Kind::Digest,
                    format!(
                        "layer {} unpacks to diff_id {got}, but the image config promises {diff_id}: remove the image and pull it again",
                        l.digest
                    ),
                ));
            }
        }
        crate::fsutil::sync_filesystem(dest)?;
        Ok(entries)
    }

    /// docker's rmi: `name:tag` untags; an id or digest untags every name of the
    /// image (only with `force` when there are several). The image itself goes
    /// with its last name — not while a container holds it, unless `force`.
    /// Returns docker's report lines (`Untagged: …`, `Deleted: …`); blobs are
    /// freed by [`LocalStore::collect_garbage`].
    pub fn remove_image(&self, what: &str, force: bool) -> Result<Vec<String>> {
        let leased = self.leased()?;
        self.update_refs(|refs| {
            let key = tagged(what);
            let by_tag = refs.tags.contains_key(&key);
            let m = match refs.tags.get(&key) {
                Some(m) => m.clone(),
                None => self.resolve(what)?.ok_or_else(|| Error::not_found(format!("no such image: {what}")))?,
            };
            let names: Vec<String> = refs.tags.iter().filter(|(_, v)| **v == m).map(|(k, _)| k.clone()).collect();
            let last_name = names.len() <= 1 || !by_tag;
            if last_name && leased.contains(&m) && !force {
                return Err(Error::new(Kind::Conflict, format!("unable to remove {what}: the image is in use by a container (use -f)")));
            }
            if !by_tag && names.len() > 1 && !force {
                return Err(Error::new(
                    Kind::Conflict,
                    format!("unable to remove {what}: it is referenced by {} names ({}); remove them by name or use -f", names.len(), names.join(", ")),
                ));
            }
            let mut out = Vec::new();
            for k in if by_tag { vec![key.clone()] } else { names } {
                refs.tags.remove(&k);
                out.push(format!("Untagged: {k}"));
            }
            if !refs.tags.values().any(|v| *v == m) {
                let meta = refs.images.remove(&m).unwrap_or_default();
                for ds in refs.digests.values_mut() {
                    ds.retain(|d| *d != m && Some(d) != meta.index.as_ref());
                }
                refs.digests.retain(|_, ds| !ds.is_empty());
                if let Ok(img) = self.image(&m) {
                    out.push(format!("Deleted: {}", img.config_digest));
                }
            }
            Ok(out)
        })
    }

    /// Delete blobs and cached layers no image and no lease needs. Skipped
    /// (returns None) while any writer holds its lease, so a pull in progress
    /// never loses what it fetched. Returns the blobs removed and their bytes.
    pub fn collect_garbage(&self) -> Result<Option<(usize, u64)>> {
        let Some(gc) = self.gc_lock(false)? else {
            return Ok(None);
        };
        self.sweep(&gc).map(Some)
    }

    fn gc_lock(&self, wait: bool) -> Result<Option<Lock>> {
        flock(&self.root.join("gc.lock"), true, wait)
    }

    // The collection proper; `_held` is the exclusive gc.lock.
    fn sweep(&self, _held: &Lock) -> Result<(usize, u64)> {
        let refs = self.refs()?;
        let leased = self.leased()?;
        let mut keep: BTreeSet<Digest> = BTreeSet::new();
        let mut keep_layers: BTreeSet<Digest> = BTreeSet::new();
        let mut live: BTreeSet<Digest> = refs.images.keys().cloned().collect();
        live.extend(leased.iter().cloned());
        for m in &live {
            keep.insert(m.clone());
            if let Some(meta) = refs.images.get(m)
                && let Some(i) = &meta.index
            {
                keep.insert(i.clone());
            }
            match self.image(m) {
                Ok(img) => {
                    keep.insert(img.config_digest.clone());
                    keep.extend(img.layers().iter().map(|l| l.digest.clone()));
                    keep_layers.extend(img.config.rootfs.diff_ids.iter().cloned());
                }
                // What a leased image needs cannot be told without it: a
                // running container's layers are worth more than the space.
                Err(e) if leased.contains(m) => {
                    log::warn!("garbage collection skipped: leased image {m} is unreadable: {e}");
                    return Ok((0, 0));
                }
                Err(_) => {}
            }
        }
        let (mut n, mut bytes) = (0, 0);
        // Signatures go with the manifest (or index) they sign.
        if let Ok(rd) = fs::read_dir(self.root.join("signatures/sha256")) {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if let Ok(d) = format!("sha256:{name}").parse::<Digest>()
                    && !keep.contains(&d)
                {
                    fs::remove_dir_all(e.path())
                        .with_context(|| format!("remove signatures of {d}"))?;
                }
            }
        }
        let layers = self.root.join("layers/sha256");
        for e in fs::read_dir(&layers)
            .with_context(|| format!("read {}", layers.display()))?
            .flatten()
        {
            let name = e.file_name().to_string_lossy().into_owned();
            let Ok(d) = format!("sha256:{name}").parse::<Digest>() else {
                continue;
            };
            if !keep_layers.contains(&d) {
                // Out of its final name first: a crash half-way through the
                // removal must not leave a partial layer that looks cached.
                let staging = self.staging_dir("layer")?;
                fs::rename(e.path(), staging.path().join("old"))
                    .with_context(|| format!("remove cached layer {d}"))?;
                log::debug!("removed cached layer {d}");
            }
        }
        for e in fs::read_dir(self.root.join("blobs/sha256"))?.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Ok(d) = format!("sha256:{name}").parse::<Digest>() else {
                continue;
            };
            if !keep.contains(&d) {
                bytes += e.metadata().map(|m| m.len()).unwrap_or(0);
                fs::remove_file(e.path())?;
                n += 1;
            }
        }
        Ok((n, bytes))
    }
}

/// A holder's lease: the manifests it keeps from `rmi` and garbage collection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub holder: String,
    pub manifests: Vec<Digest>,
}

/// A working directory removed with everything in it when dropped.
pub struct Staging(PathBuf);

impl Staging {
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// `name` with `:latest` added when it has no tag.
pub fn tagged(name: &str) -> String {
    // docker's familiar form: Docker Hub prefixes dropped
    let name = crate::reference::familiar(name);
    let last = name.rsplit('/').next().unwrap_or(&name);
    if last.contains(':') {
        name
    } else {
        format!("{name}:latest")
    }
}

/// Split `name:tag` into its parts.
pub fn split_tag(key: &str) -> (&str, &str) {
    match key.rfind(':') {
        Some(i) if !key[i..].contains('/') => (&key[..i], &key[i + 1..]),
        _ => (key, "latest"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blobs_refs_and_gc() {
        let root = std::env::temp_dir().join(format!("berth-local-{}", crate::util::uuid4()));
        let s = LocalStore::open(&root).unwrap();
        let d = s.put_bytes(b"hello").unwrap();
        assert_eq!(s.has_blob(&d), Some(5));
        let mut w = s.writer().unwrap();
        w.write_all(b"abc").unwrap();
        let e = w.commit(Some(&Digest::sha256(b"abd"))).unwrap_err();
        assert_eq!(e.kind(), Kind::Digest);
        assert!(s.has_blob(&Digest::sha256(b"abc")).is_none());
        assert_eq!(
            fs::read_dir(root.join("tmp")).unwrap().count(),
            0,
            "temp file left behind"
        );
        s.update_refs(|r| {
            r.tags.insert("x:latest".into(), d.clone());
            Ok(())
        })
        .unwrap();
        assert_eq!(s.refs().unwrap().tags["x:latest"], d);
        // "hello" is not an image: GC removes it
        let (n, _) = s.collect_garbage().unwrap().unwrap();
        assert_eq!(n, 1);
        // a writer's lease blocks GC
        let lease = s.writer_lease().unwrap();
        assert!(s.collect_garbage().unwrap().is_none());
        drop(lease);
        assert!(s.collect_garbage().unwrap().is_some());
        fs::remove_dir_all(root).unwrap();
    }

    /// Layers written entry by entry, as hostile or as ordinary as a test needs.
    struct Layer(tar::Builder<Vec<u8>>);

    impl Layer {
        fn new() -> Layer {
            Layer(tar::Builder::new(Vec::new()))
        }
        fn header(kind: tar::EntryType, mode: u32) -> tar::Header {
            let mut h = tar::Header::new_ustar();
            h.set_entry_type(kind);
            h.set_mode(mode);
            h.set_size(0);
            h.set_mtime(1_000_000);
            h
        }
        fn file(mut self, name: &str, data: &[u8], mode: u32, owner: (u64, u64)) -> Layer {
            let mut h = Self::header(tar::EntryType::Regular, mode);
            h.set_size(data.len() as u64);
            h.set_uid(owner.0);
            h.set_gid(owner.1);
            self.0.append_data(&mut h, name, data).unwrap();
            self
        }
        fn dir(mut self, name: &str) -> Layer {
            let mut h = Self::header(tar::EntryType::Directory, 0o755);
            self.0.append_data(&mut h, name, io::empty()).unwrap();
            self
        }
        fn hard_link(mut self, name: &str, to: &str) -> Layer {
            let mut h = Self::header(tar::EntryType::Link, 0o644);
            self.0.append_link(&mut h, name, to).unwrap();
            self
        }
        fn fifo(mut self, name: &str) -> Layer {
            let mut h = Self::header(tar::EntryType::Fifo, 0o600);
            self.0.append_data(&mut h, name, io::empty()).unwrap();
            self
        }
        fn xattrs(mut self, attrs: &[(&str, &[u8])]) -> Layer {
            let keys: Vec<(String, &[u8])> = attrs
                .iter()
                .map(|(k, v)| (format!("SCHILY.xattr.{k}"), *v))
                .collect();
            self.0
                .append_pax_extensions(keys.iter().map(|(k, v)| (k.as_str(), *v)))
                .unwrap();
            self
        }
        fn done(self) -> Vec<u8> {
            self.0.into_inner().unwrap()
        }
    }

    fn temp_store() -> (PathBuf, LocalStore) {
        let root = std::env::temp_dir().join(format!("berth-layers-{}", crate::util::uuid4()));
        let s = LocalStore::open(&root).unwrap();
        (root, s)
    }

    /// An image of `layers` (bottom first) tagged `name`; returns the manifest.
    fn image_of(s: &LocalStore, name: &str, layers: &[&[u8]]) -> Digest {
        let parts: Vec<_> = layers
            .iter()
            .map(|t| {
                let gz = crate::archive::gzip::gzip_bytes(t, 1);
                let d = s.put_bytes(&gz).unwrap();
                (d, gz.len() as u64, Digest::sha256(t), Default::default())
            })
            .collect();
        let (m, _) =
            crate::image::assemble(s, crate::image::Format::Oci, 0, Default::default(), &parts)
                .unwrap();
        s.tag(&m, &[name.to_string()], ImageMeta::default())
            .unwrap();
        m
    }

    fn xattr(p: &Path, key: &str) -> Option<Vec<u8>> {
        use std::os::unix::ffi::OsStrExt;
        let cp = std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap();
        let ck = std::ffi::CString::new(key).unwrap();
        let mut buf = vec![0u8; 256];
        // SAFETY: NUL-terminated strings and a buffer of the length given.
        let n = unsafe {
            libc::lgetxattr(cp.as_ptr(), ck.as_ptr(), buf.as_mut_ptr().cast(), buf.len())
        };
        (n >= 0).then(|| buf[..n as usize].to_vec())
    }

    fn gzip_layer(s: &LocalStore, tar: &[u8]) -> Digest {
        s.put_bytes(&crate::archive::gzip::gzip_bytes(tar, 1))
            .unwrap()
    }

    #[test]
    fn a_layer_unpacks_in_overlay_form_with_everything_a_root_needs() {
        use std::os::unix::fs::{FileTypeExt, MetadataExt};
        let (root, s) = temp_store();
        // cap_net_raw, permitted and effective (VFS_CAP_REVISION_2)
        let cap: &[u8] = &[
            1, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        ];
        let t = Layer::new()
            .dir("etc/")
            .file("etc/.wh.motd", b"", 0o644, (0, 0))
            .dir("opt/")
            .file("opt/.wh..wh..opq", b"", 0o644, (0, 0))
            .file("opt/new", b"upper", 0o644, (0, 0))
            .xattrs(&[
                ("security.capability", cap),
                ("trusted.overlay.origin", b"from the build host"),
            ])
            .file("bin/ping", b"\x7fELF", 0o755, (0, 0))
            .file("bin/su", b"su", 0o4755, (0, 0))
            .file("home/u/data", b"mine", 0o2640, (1234, 5678))
            .hard_link("bin/su-again", "bin/su")
            .fifo("run/fifo")
            .file("deep/implied/file", b"x", 0o644, (0, 0))
            .done();
        let diff_id = Digest::sha256(&t);
        let blob = gzip_layer(&s, &t);
        let dir = s
            .unpack_layer(&blob, &MediaType::OciLayerGzip, &diff_id)
            .unwrap();
        assert_eq!(dir, root.join("layers/sha256").join(diff_id.hex()));
        assert_eq!(
            fs::metadata(root.join("layers")).unwrap().mode() & 0o777,
            0o700
        );
        // a whiteout is a character device 0/0 under the hidden name
        let wh = fs::symlink_metadata(dir.join("etc/motd")).unwrap();
        assert!(wh.file_type().is_char_device());
        assert_eq!(wh.rdev(), 0);
        assert!(!dir.join("etc/.wh.motd").exists());
        // an opaque directory carries the xattr and keeps its own entries
        assert_eq!(
            xattr(&dir.join("opt"), "trusted.overlay.opaque").as_deref(),
            Some(&b"y"[..])
        );
        assert!(fs::symlink_metadata(dir.join("opt/.wh..wh..opq")).is_err());
        assert_eq!(fs::read(dir.join("opt/new")).unwrap(), b"upper");
        // file capabilities survive chown; the build host's overlay notes do not
        let ping = dir.join("bin/ping");
        assert_eq!(xattr(&ping, "security.capability").as_deref(), Some(cap));
        assert_eq!(xattr(&ping, "trusted.overlay.origin"), None);
        // set-id bits, numeric owners, times
        let su = fs::metadata(dir.join("bin/su")).unwrap();
        assert_eq!(su.mode() & 0o7777, 0o4755);
        let data = fs::metadata(dir.join("home/u/data")).unwrap();
        assert_eq!((data.uid(), data.gid()), (1234, 5678));
        assert_eq!(data.mode() & 0o7777, 0o2640);
        assert_eq!(data.mtime(), 1_000_000);
        assert_eq!(fs::metadata(dir.join("etc")).unwrap().mtime(), 1_000_000);
        // a hard link is the same inode
        let again = fs::metadata(dir.join("bin/su-again")).unwrap();
        assert_eq!(again.ino(), su.ino());
        let fifo = fs::symlink_metadata(dir.join("run/fifo")).unwrap();
        assert!(fifo.file_type().is_fifo());
        assert_eq!(fifo.mtime(), 1_000_000);
        // a directory the layer only implies is open to the container's users
        assert_eq!(
            fs::metadata(dir.join("deep/implied")).unwrap().mode() & 0o777,
            0o755
        );
        assert_eq!(fs::read_dir(root.join("tmp")).unwrap().count(), 0);
        fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn a_wrong_diff_id_keeps_nothing_and_names_both_digests() {
        let (root, s) = temp_store();
        let t = Layer::new().file("a", b"a", 0o644, (0, 0)).done();
        let blob = gzip_layer(&s, &t);
        let promised = Digest::sha256(b"something else");
        let e = s
            .unpack_layer(&blob, &MediaType::OciLayerGzip, &promised)
            .unwrap_err();
        assert_eq!(e.kind(), Kind::Digest);
        let msg = e.to_string();
        assert!(
            msg.contains(&promised.to_string()) && msg.contains(&Digest::sha256(&t).to_string()),
            "{msg}"
        );
        assert_eq!(fs::read_dir(root.join("layers/sha256")).unwrap().count(), 0);
        assert_eq!(fs::read_dir(root.join("tmp")).unwrap().count(), 0);
        // zstd is refused by name, before anything is written
        let e = s
            .unpack_layer(&blob, &MediaType::OciLayerZstd, &Digest::sha256(&t))
            .unwrap_err();
        assert_eq!(e.kind(), Kind::Unsupported);
        assert!(e.to_string().contains("zstd"), "{e}");
        fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn unpacking_again_returns_the_cached_layer() {
        let (root, s) = temp_store();
        let t = Layer::new().file("a", b"a", 0o644, (0, 0)).done();
        let blob = gzip_layer(&s, &t);
        let diff_id = Digest::sha256(&t);
        // plain tar is a layer too
        let plain = s.put_bytes(&t).unwrap();
        let dir = s
            .unpack_layer(&plain, &MediaType::OciLayer, &diff_id)
            .unwrap();
        fs::write(dir.join("marker"), "still here").unwrap();
        // the blob is not even read: the directory under its name is the layer
        fs::remove_file(s.blob_path(&blob)).unwrap();
        fs::remove_file(s.blob_path(&plain)).unwrap();
        let again = s
            .unpack_layer(&blob, &MediaType::OciLayerGzip, &diff_id)
            .unwrap();
        assert_eq!(again, dir);
        assert_eq!(fs::read(dir.join("marker")).unwrap(), b"still here");
        fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn layer_dirs_are_top_first_and_each_once() {
        let (root, s) = temp_store();
        let base = Layer::new().file("base", b"1", 0o644, (0, 0)).done();
        let mid = Layer::new().file("mid", b"2", 0o644, (0, 0)).done();
        let top = Layer::new().file("top", b"3", 0o644, (0, 0)).done();
        let m = image_of(&s, "three:1", &[&base, &mid, &top]);
        let dirs = s.layer_dirs(&m).unwrap();
        let want: Vec<PathBuf> = [&top, &mid, &base]
            .iter()
            .map(|t| s.layer_path(&Digest::sha256(t)))
            .collect();
        assert_eq!(dirs, want);
        assert!(dirs[0].join("top").is_file() && dirs[2].join("base").is_file());
        // the same layer twice is listed once, at its upper place
        let m2 = image_of(&s, "twice:1", &[&base, &mid, &base, &top]);
        let dirs = s.layer_dirs(&m2).unwrap();
        let want: Vec<PathBuf> = [&top, &base, &mid]
            .iter()
            .map(|t| s.layer_path(&Digest::sha256(t)))
            .collect();
        assert_eq!(dirs, want);
        fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn gc_removes_layers_nothing_needs_and_keeps_leased_ones() {
        let (root, s) = temp_store();
        let shared = Layer::new().file("shared", b"s", 0o644, (0, 0)).done();
        let own_a = Layer::new().file("a", b"a", 0o644, (0, 0)).done();
        let own_b = Layer::new().file("b", b"b", 0o644, (0, 0)).done();
        let own_c = Layer::new().file("c", b"c", 0o644, (0, 0)).done();
        let a = image_of(&s, "a:1", &[&shared, &own_a]);
        let b = image_of(&s, "b:1", &[&shared, &own_b]);
        let c = image_of(&s, "c:1", &[&shared, &own_c]);
        for m in [&a, &b, &c] {
            s.layer_dirs(m).unwrap();
        }
        s.lease("ctr-b", std::slice::from_ref(&b)).unwrap();
        // rmi refuses the leased image; forced, it goes from refs but stays held
        let e = s.remove_image("b:1", false).unwrap_err();
        assert_eq!(e.kind(), Kind::Conflict);
        s.remove_image("b:1", true).unwrap();
        s.remove_image("c:1", false).unwrap();
        let layer = |t: &[u8]| s.layer_path(&Digest::sha256(t));
        s.collect_garbage().unwrap().unwrap();
        assert!(layer(&shared).is_dir() && layer(&own_a).is_dir());
        assert!(layer(&own_b).is_dir(), "a leased layer was collected");
        assert!(s.complete(&b), "a leased image lost blobs");
        assert!(!layer(&own_c).exists(), "an unneeded layer stayed");
        assert!(!s.complete(&c));
        // the lease goes: so does what only it held
        assert!(s.release_lease("ctr-b").unwrap());
        assert!(!s.release_lease("ctr-b").unwrap());
        s.collect_garbage().unwrap().unwrap();
        assert!(!layer(&own_b).exists());
        assert!(s.has_blob(&b).is_none());
        assert!(layer(&shared).is_dir() && layer(&own_a).is_dir());
        assert_eq!(fs::read_dir(root.join("tmp")).unwrap().count(), 0);
        fs::remove_dir_all(root).unwrap();
    }

    // Until `tid` sits in flock(2): the only way it can wait for the gc.lock.
    fn wait_in_flock(tid: i32) {
        let file = format!("/proc/self/task/{tid}/syscall");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        loop {
            let now = fs::read_to_string(&file).unwrap_or_default();
            if now.split_whitespace().next() == Some(&libc::SYS_flock.to_string()) {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "thread {tid} never waited on a lock: {now}"
            );
            std::thread::yield_now();
        }
    }

    #[test]
    fn a_lease_waits_for_a_running_collection() {
        let (root, s) = temp_store();
        let t = Layer::new().file("a", b"a", 0o644, (0, 0)).done();
        let m = image_of(&s, "gone:1", &[&t]);
        // The engine has chosen the image; before its lease, the image is
        // removed and a collection starts.
        s.remove_image("gone:1", false).unwrap();
        let gc = s.gc_lock(true).unwrap().unwrap();
        let (s2, m2) = (s.clone(), m.clone());
        let (tx, rx) = std::sync::mpsc::channel();
        let taker = std::thread::spawn(move || {
            tx.send(nix::unistd::gettid().as_raw()).unwrap();
            s2.lease("ctr-1", &[m2])
        });
        wait_in_flock(rx.recv().unwrap());
        assert!(
            !root.join("leases/ctr-1").exists(),
            "lease made during a GC"
        );
        let (n, _) = s.sweep(&gc).unwrap();
        assert!(n >= 3, "the collection removed {n} blobs");
        drop(gc);
        let e = taker.join().unwrap().unwrap_err();
        assert_eq!(e.kind(), Kind::NotFound);
        assert!(e.to_string().contains(&m.to_string()), "{e}");
        assert!(s.leases().unwrap().is_empty(), "a lease on what is gone");
        // the same with the image still there: the lease comes after the sweep,
        // which kept the image, and holds it from then on
        let m = image_of(&s, "kept:1", &[&t]);
        let gc = s.gc_lock(true).unwrap().unwrap();
        let (s2, m2) = (s.clone(), m.clone());
        let (tx, rx) = std::sync::mpsc::channel();
        let taker = std::thread::spawn(move || {
            tx.send(nix::unistd::gettid().as_raw()).unwrap();
            s2.lease("ctr-2", &[m2])
        });
        wait_in_flock(rx.recv().unwrap());
        s.sweep(&gc).unwrap();
        drop(gc);
        let lease = taker.join().unwrap().unwrap();
        assert_eq!(lease.manifests, vec![m.clone()]);
        assert_eq!(s.leases().unwrap(), vec![lease]);
        s.remove_image("kept:1", true).unwrap();
        s.collect_garbage().unwrap().unwrap();
        assert!(s.complete(&m));
        fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn a_lease_holder_names_one_file_in_leases() {
        let (root, s) = temp_store();
        for bad in ["../escape", "a/b", "", ".hidden", "x\n"] {
            let e = s.lease(bad, &[]).unwrap_err();
            assert_eq!(e.kind(), Kind::Invalid, "{bad:?}");
            assert!(s.release_lease(bad).is_err());
        }
        assert!(!root.join("escape").exists());
        assert!(s.leases().unwrap().is_empty());
        fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn tag_names() {
        assert_eq!(tagged("sl6"), "sl6:latest");
        assert_eq!(tagged("host:5000/sl6"), "host:5000/sl6:latest");
        assert_eq!(tagged("host:5000/sl6:v1"), "host:5000/sl6:v1");
        assert_eq!(split_tag("host:5000/sl6:v1"), ("host:5000/sl6", "v1"));
    }
}

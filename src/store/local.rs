//! The local image store under a graph root (default `/var/lib/berth`, `-g DIR` or
//! `BERTH_ROOT`), shared by the client applets and the engine.
//!
//! ```text
//! ROOT/blobs/sha256/<hex>   manifests, indexes, configs, compressed layers (CAS)
//! ROOT/refs.json            name:tag -> manifest, repo digests, image metadata
//! ROOT/leases/<holder>      manifest digests in use (containers); rmi refuses them
//! ROOT/tmp/                 blobs being written
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

use crate::digest::{Algorithm, Digest, Hasher};
use crate::error::{Context, Error, Kind, Result};
use crate::oci::{AnyManifest, ImageConfig, MediaType, Parsed};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, OpenOptions};
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

/// A held flock; released on drop.
pub struct Lock(#[allow(dead_code)] File);

fn flock(path: &Path, exclusive: bool, wait: bool) -> Result<Option<Lock>> {
    use std::os::fd::AsRawFd;
    let f = OpenOptions::new()
        .create(true)
        .read(true)
        .write(true)
        .truncate(false)
        .open(path)
        .with_context(|| format!("open {}", path.display()))?;
    let mut op = if exclusive {
        libc::LOCK_EX
    } else {
        libc::LOCK_SH
    };
    if !wait {
        op |= libc::LOCK_NB;
    }
    loop {
        // SAFETY: flock on a descriptor we own; the lock lives as long as the File.
        if unsafe { libc::flock(f.as_raw_fd(), op) } == 0 {
            return Ok(Some(Lock(f)));
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EWOULDBLOCK) if !wait => return Ok(None),
            _ => return Err(Error::from(e).context(format!("lock {}", path.display()))),
        }
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
        for d in ["blobs/sha256", "tmp", "leases"] {
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
        use std::os::unix::fs::PermissionsExt;
        let tmp = root.join("tmp");
        if fs::metadata(&tmp).is_ok_and(|m| m.permissions().mode() & 0o077 != 0) {
            fs::set_permissions(&tmp, fs::Permissions::from_mode(0o700))
                .with_context(|| format!("chmod {}", tmp.display()))?;
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
        use std::os::unix::fs::DirBuilderExt;
        let dir = self.root.join("tmp").join(format!(
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
        let Ok(rd) = fs::read_dir(self.root.join("tmp")) else {
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

    /// Manifest digests held by leases (containers using images).
    pub fn leased(&self) -> Result<BTreeSet<Digest>> {
        let mut s = BTreeSet::new();
        for e in fs::read_dir(self.root.join("leases"))?.flatten() {
            let text = fs::read_to_string(e.path()).unwrap_or_default();
            for line in text.lines() {
                if let Ok(d) = line.trim().parse() {
                    s.insert(d);
                }
            }
        }
        Ok(s)
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

    /// Delete blobs no image needs. Skipped (returns None) while any writer holds
    /// its lease, so a pull in progress never loses what it fetched.
    pub fn collect_garbage(&self) -> Result<Option<(usize, u64)>> {
        let Some(_gc) = flock(&self.root.join("gc.lock"), true, false)? else {
            return Ok(None);
        };
        let refs = self.refs()?;
        let mut keep: BTreeSet<Digest> = BTreeSet::new();
        let mut live: BTreeSet<Digest> = refs.images.keys().cloned().collect();
        live.extend(self.leased()?);
        for m in &live {
            keep.insert(m.clone());
            if let Some(meta) = refs.images.get(m)
                && let Some(i) = &meta.index
            {
                keep.insert(i.clone());
            }
            if let Ok(img) = self.image(m) {
                keep.insert(img.config_digest.clone());
                keep.extend(img.layers().iter().map(|l| l.digest.clone()));
            }
        }
        let (mut n, mut bytes) = (0, 0);
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
        Ok(Some((n, bytes)))
    }
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

    #[test]
    fn tag_names() {
        assert_eq!(tagged("sl6"), "sl6:latest");
        assert_eq!(tagged("host:5000/sl6"), "host:5000/sl6:latest");
        assert_eq!(tagged("host:5000/sl6:v1"), "host:5000/sl6:v1");
        assert_eq!(split_tag("host:5000/sl6:v1"), ("host:5000/sl6", "v1"));
    }
}

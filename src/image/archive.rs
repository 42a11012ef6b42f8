//! Images as files, the air-gap path: `save` and `load`.
//!
//! `save` writes a docker-archive that is at the same time an OCI image layout (as
//! docker 25+ does): `manifest.json` (Config, RepoTags, Layers) and `repositories`
//! for `docker load` and skopeo's `docker-archive:`, and `oci-layout`,
//! `index.json`, `blobs/sha256/…` with every blob exactly as stored — so loading it
//! back keeps manifest digests, and the repo digests travel as index annotations.
//! `--format oci` writes only the OCI layout, and [`save_dir`] the same layout as a
//! directory (mkimage's `--oci DIR`).
//!
//! `load` reads either format (plain or gzip'd). An OCI index is preferred, since
//! it keeps manifests byte-exact; a plain docker-archive (docker save, skopeo) gets
//! a new schema2 manifest over its config, with each layer kept if it is
//! compressed already and gzip'd deterministically if not. Every blob, and every
//! layer's diff_id against the config, is verified before anything is recorded.
//!
//! Image signatures travel too: `berth-signatures/sha256/HEX/signature-N` (the
//! lookaside layout) for the manifest and the index it came through, whose blob
//! is carried with an `io.berth.index` annotation, so an air-gapped node can
//! check the policy on what it loaded.

use super::Format;
use crate::archive::gzip::{ParallelGzip, is_gzip};
use crate::digest::{Digest, HashingReader};
use crate::error::{Context, Error, Kind, Result};
use crate::fsutil::confined::Root;
use crate::oci::{AnyManifest, Descriptor, ImageConfig, Index, Manifest, MediaType, Parsed};
use crate::store::local::{ImageMeta, LocalStore, split_tag};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::path::Path;

/// Annotations on index.json entries.
const REF_NAME: &str = "org.opencontainers.image.ref.name";
const IMAGE_NAME: &str = "io.containerd.image.name";
const REPO_DIGESTS: &str = "io.berth.repo-digests";
/// The index a manifest was pulled through (its blob travels too), so signatures
/// made over the index still check on the far side.
const INDEX: &str = "io.berth.index";
/// Signatures, laid out as a lookaside store: `DIR/sha256/HEX/signature-N`.
const SIGNATURES: &str = "berth-signatures";

/// One `manifest.json` entry of a docker-archive.
#[derive(Debug, Serialize, Deserialize)]
struct ArchiveEntry {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags", default)]
    repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers")]
    layers: Vec<String>,
}

/// An image to save: the manifest and the names it goes by.
pub struct SaveItem {
    pub manifest: Digest,
    pub tags: Vec<String>,
}

fn blob_name(d: &Digest) -> String {
    format!("blobs/{}/{}", d.algorithm().as_str(), d.hex())
}

fn append_bytes<W: Write>(
    b: &mut tar::Builder<W>,
    name: &str,
    data: &[u8],
    mode: u32,
) -> Result<()> {
    let mut h = tar::Header::new_ustar();
    h.set_size(data.len() as u64);
    h.set_mode(mode);
    h.set_mtime(0);
    h.set_entry_type(tar::EntryType::Regular);
    b.append_data(&mut h, name, data).context(name)
}

fn append_dir<W: Write>(b: &mut tar::Builder<W>, name: &str) -> Result<()> {
    let mut h = tar::Header::new_ustar();
    h.set_size(0);
    h.set_mode(0o755);
    h.set_mtime(0);
    h.set_entry_type(tar::EntryType::Directory);
    b.append_data(&mut h, name, std::io::empty()).context(name)
}

/// One file of an image archive, in writing order.
enum Part {
    Dir,
    Bytes(Vec<u8>),
    /// A blob copied from the store as it is.
    Blob(Digest),
}

/// The files of a docker-archive (+ OCI layout) or, with `Format::Oci`, of an OCI
/// layout only, in a fixed order.
fn layout(store: &LocalStore, items: &[SaveItem], format: Format) -> Result<Vec<(String, Part)>> {
    let refs = store.refs()?;
    let mut blobs: BTreeSet<Digest> = BTreeSet::new();
    let mut entries = Vec::new();
    let mut index = Vec::new();
    let mut repositories: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    // Manifests rewritten for an OCI-only layout (not in the store, only in the file).
    let mut converted: BTreeMap<Digest, Vec<u8>> = BTreeMap::new();
    let mut signatures: BTreeMap<Digest, Vec<Vec<u8>>> = BTreeMap::new();
    for it in items {
        let img = store.image(&it.manifest)?;
        // skopeo's oci: transport (and the image-layout spec's spirit) wants OCI
        // manifests in an OCI layout: convert schema2 ones there; the config and
        // layers keep their digests.
        let (mdigest, mtype, mlen, original) = match (&img.parsed.manifest, format, &img.media_type)
        {
            (AnyManifest::Image(m), Format::Oci, MediaType::DockerManifest) => {
                let bytes =
                    serde_json::to_vec(&m.to_oci()).map_err(|e| Error::internal(e.to_string()))?;
                let d = Digest::sha256(&bytes);
                let len = bytes.len() as u64;
                converted.insert(d.clone(), bytes);
                (d, MediaType::OciManifest, len, false)
            }
            _ => {
                blobs.insert(it.manifest.clone());
                (
                    it.manifest.clone(),
                    img.media_type.clone(),
                    img.manifest_bytes.len() as u64,
                    true,
                )
            }
        };
        blobs.insert(img.config_digest.clone());
        for l in img.layers() {
            if store.has_blob(&l.digest).is_none() {
                return Err(Error::not_found(format!(
                    "layer {} of {} is not in the store",
                    l.digest, it.manifest
                )));
            }
            blobs.insert(l.digest.clone());
        }
        entries.push(ArchiveEntry {
            config: blob_name(&img.config_digest),
            repo_tags: (!it.tags.is_empty()).then(|| it.tags.clone()),
            layers: img.layers().iter().map(|l| blob_name(&l.digest)).collect(),
        });
        let top = img
            .layers()
            .last()
            .map(|l| l.digest.hex().to_string())
            .unwrap_or_default();
        for t in &it.tags {
            let (n, tag) = split_tag(t);
            repositories
                .entry(n.to_string())
                .or_default()
                .insert(tag.to_string(), top.clone());
        }
        let repo_digests: Vec<String> = refs
            .digests
            .iter()
            .flat_map(|(n, ds)| {
                ds.iter()
                    .filter(|d| **d == it.manifest)
                    .map(move |d| format!("{n}@{d}"))
            })
            .collect();
        // Signatures name the stored manifest (or its index): a converted
        // manifest has another digest, so none of them would hold there.
        let index_digest = refs
            .images
            .get(&it.manifest)
            .and_then(|m| m.index.clone())
            .filter(|i| original && store.has_blob(i).is_some());
        if original {
            for d in index_digest.iter().chain([&it.manifest]) {
                let sigs = store.signatures(d)?;
                if !sigs.is_empty() {
                    signatures.insert(d.clone(), sigs);
                }
            }
        }
        if let Some(i) = &index_digest {
            blobs.insert(i.clone());
        }
        let names: Vec<Option<&String>> = if it.tags.is_empty() {
            vec![None]
        } else {
            it.tags.iter().map(Some).collect()
        };
        for name in names {
            let mut d = Descriptor::new(mtype.clone(), mdigest.clone(), mlen);
            let mut ann = BTreeMap::new();
            if let Some(n) = name {
                ann.insert(IMAGE_NAME.to_string(), n.clone());
                ann.insert(REF_NAME.to_string(), split_tag(n).1.to_string());
            }
            // Repo digests name the stored manifest; a converted one has another.
            if !repo_digests.is_empty() && original {
                ann.insert(REPO_DIGESTS.to_string(), repo_digests.join(","));
            }
            if let Some(i) = &index_digest {
                ann.insert(INDEX.to_string(), i.to_string());
            }
            if !ann.is_empty() {
                d.annotations = Some(ann);
            }
            index.push(d);
        }
    }
    let mut parts = vec![
        (
            "oci-layout".to_string(),
            Part::Bytes(br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec()),
        ),
        ("blobs/".to_string(), Part::Dir),
        ("blobs/sha256/".to_string(), Part::Dir),
    ];
    for (d, bytes) in converted {
        parts.push((blob_name(&d), Part::Bytes(bytes)));
    }
    for d in blobs {
        parts.push((blob_name(&d), Part::Blob(d)));
    }
    if !signatures.is_empty() {
        parts.push((format!("{SIGNATURES}/"), Part::Dir));
        parts.push((format!("{SIGNATURES}/sha256/"), Part::Dir));
        for (d, sigs) in signatures {
            parts.push((format!("{SIGNATURES}/sha256/{}/", d.hex()), Part::Dir));
            for (n, s) in sigs.into_iter().enumerate() {
                parts.push((
                    format!("{SIGNATURES}/sha256/{}/signature-{}", d.hex(), n + 1),
                    Part::Bytes(s),
                ));
            }
        }
    }
    let idx = Index::new(MediaType::OciIndex, index);
    parts.push(("index.json".to_string(), Part::Bytes(json(&idx)?)));
    if format == Format::Docker {
        parts.push(("manifest.json".to_string(), Part::Bytes(json(&entries)?)));
        parts.push((
            "repositories".to_string(),
            Part::Bytes(json(&repositories)?),
        ));
    }
    Ok(parts)
}

fn json<T: Serialize>(v: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(v).map_err(|e| Error::internal(e.to_string()))
}

/// Write `items` as a docker-archive (+ OCI layout) or, with `Format::Oci`, as an
/// OCI layout only. Entries are in a fixed order with zero mtimes, so the same
/// images give the same file.
pub fn save<W: Write>(store: &LocalStore, items: &[SaveItem], format: Format, out: W) -> Result<W> {
    let mut b = tar::Builder::new(out);
    b.mode(tar::HeaderMode::Deterministic);
    for (name, part) in layout(store, items, format)? {
        match part {
            Part::Dir => append_dir(&mut b, &name)?,
            Part::Bytes(bytes) => append_bytes(&mut b, &name, &bytes, 0o644)?,
            Part::Blob(d) => {
                let mut f = store.open_blob(&d)?;
                let len = f.metadata()?.len();
                let mut h = tar::Header::new_ustar();
                h.set_size(len);
                h.set_mode(0o644);
                h.set_mtime(0);
                h.set_entry_type(tar::EntryType::Regular);
                b.append_data(&mut h, &name, &mut f)
                    .with_context(|| format!("write {d}"))?;
            }
        }
    }
    b.into_inner().context("finish archive")
}

/// Write `items` as an OCI image layout directory (what skopeo's `oci:DIR` and
/// umoci read). `dir` must not exist or be empty: a layout is written whole, never
/// merged into another.
pub fn save_dir(store: &LocalStore, items: &[SaveItem], dir: &Path) -> Result<()> {
    if std::fs::read_dir(dir).is_ok_and(|mut rd| rd.next().is_some()) {
        return Err(Error::new(
            Kind::Conflict,
            format!(
                "{}: exists and is not empty; give a new directory for the OCI layout",
                dir.display()
            ),
        ));
    }
    let parts = layout(store, items, Format::Oci)?;
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    for (name, part) in parts {
        let path = dir.join(&name);
        match part {
            Part::Dir => std::fs::create_dir_all(&path)
                .with_context(|| format!("create {}", path.display()))?,
            Part::Bytes(bytes) => crate::fsutil::atomic_write(&path, &bytes)?,
            // A copy, not a hard link: nothing done to the layout may change the store.
            Part::Blob(d) => {
                std::fs::copy(store.blob_path(&d), &path)
                    .with_context(|| format!("copy blob {d} to {}", path.display()))?;
            }
        }
    }
    crate::fsutil::fsync_dir(dir)
}

/// What `load` recorded: `(name or None, manifest digest, config digest)`.
pub type Loaded = Vec<(Option<String>, Digest, Digest)>;

/// Limits of a load.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// Most bytes the archive may unpack to; None: what the store's filesystem
    /// has free (a 10 MB gzip can unpack to terabytes).
    pub max_unpacked: Option<u64>,
    /// Where the archive is unpacked before its blobs are checked and stored
    /// (dockerd's `DOCKER_TMPDIR`); None: the store's own tmp/.
    pub tmpdir: Option<std::path::PathBuf>,
}

/// A reader that fails once more than `left` bytes came through.
struct Bounded<R> {
    inner: R,
    left: u64,
    limit: u64,
    hit: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl<R: Read> Read for Bounded<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n as u64 > self.left {
            self.hit.store(true, std::sync::atomic::Ordering::Relaxed);
            return Err(std::io::Error::new(
                std::io::ErrorKind::FileTooLarge,
                format!("the archive unpacks to more than {} bytes", self.limit),
            ));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// Read an archive (either format, plain or gzip) into the store.
///
/// The archive is unpacked into a private staging directory, bounded by
/// `opts.max_unpacked`, and every file load opens there is resolved inside it
/// as if it were `/` — symlinks and hard links included — so no name in an
/// archive can make load read a file of the host.
pub fn load(store: &LocalStore, input: Box<dyn Read + Send>, opts: &LoadOptions) -> Result<Loaded> {
    let _lease = store.writer_lease()?;
    let staging = match &opts.tmpdir {
        Some(t) => {
            LocalStore::clean_stale_staging_in(t, "berth-load");
            LocalStore::staging_dir_in(t, "berth-load")?
        }
        None => {
            store.clean_stale_staging("load");
            store.staging_dir("load")?
        }
    };
    let limit = match opts.max_unpacked {
        Some(n) => n,
        None => crate::fsutil::free_space(staging.path()).unwrap_or(u64::MAX),
    };
    let plain = crate::archive::decompressed(input)?;
    let hit = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let bounded = Bounded {
        inner: plain,
        left: limit,
        limit,
        hit: hit.clone(),
    };
    crate::archive::extract_files(bounded, staging.path(), Some(limit)).map_err(|e| {
        if hit.load(std::sync::atomic::Ordering::Relaxed) {
            Error::new(
                Kind::Unsupported,
                format!(
                    "the archive unpacks to more than {limit} bytes ({}); refused (the limit is the free space of {}, or --max-size)",
                    crate::util::human_size(limit),
                    store.root().display()
                ),
            )
        } else {
            e.context("reading the archive")
        }
    })?;
    let root = Root::new(staging.path());
    if root.is_file(Path::new("index.json")) && root.is_file(Path::new("oci-layout")) {
        load_oci(store, &root)
    } else if root.is_file(Path::new("manifest.json")) {
        load_docker(store, &root)
    } else {
        Err(Error::invalid(
            "not an image archive: neither manifest.json (docker-archive) nor index.json + oci-layout (OCI layout)",
        ))
    }
}

fn read_in(root: &Root, name: &str) -> Result<Vec<u8>> {
    let mut f = root
        .open_file(Path::new(name))
        .map_err(|e| e.context(format!("archive lacks {name}")))?;
    let mut v = Vec::new();
    f.read_to_end(&mut v)?;
    Ok(v)
}

// Put a file of the staging dir into the store, checking its digest.
fn ingest(store: &LocalStore, root: &Root, expected: &Digest) -> Result<u64> {
    if let Some(n) = store.has_blob(expected) {
        return Ok(n);
    }
    let name = blob_name(expected);
    let mut f = root
        .open_file(Path::new(&name))
        .map_err(|e| e.context(format!("archive lacks {name}")))?;
    let (_, n) = store
        .put_stream(&mut f, Some(expected))
        .map_err(|e| e.context(format!("blob {expected} in the archive")))?;
    Ok(n)
}

fn load_oci(store: &LocalStore, dir: &Root) -> Result<Loaded> {
    let idx: Index = serde_json::from_slice(&read_in(dir, "index.json")?)
        .map_err(|e| Error::invalid(format!("index.json: {e}")))?;
    let mut out = Vec::new();
    for entry in &idx.manifests {
        ingest(store, dir, &entry.digest)?;
        let bytes = store.read_blob(&entry.digest)?;
        let parsed = Parsed::parse(&bytes, Some(entry.media_type.as_str()))?;
        let (mdigest, index_digest, mparsed) = if parsed.media_type.is_index() {
            let choice = crate::registry::transfer::select_platform(&parsed)?;
            ingest(store, dir, &choice.digest)?;
            let mb = store.read_blob(&choice.digest)?;
            (
                choice.digest.clone(),
                Some(entry.digest.clone()),
                Parsed::parse(&mb, Some(choice.media_type.as_str()))?,
            )
        } else {
            (entry.digest.clone(), None, parsed)
        };
        let AnyManifest::Image(m) = &mparsed.manifest else {
            continue;
        };
        ingest(store, dir, &m.config.digest)?;
        for l in m.layers.iter().filter(|l| !l.media_type.is_foreign()) {
            ingest(store, dir, &l.digest)?;
        }
        let ann = entry.annotations.clone().unwrap_or_default();
        // The index berth saved beside a manifest: kept only if it lists it.
        let index_digest = match (index_digest, ann.get(INDEX)) {
            (None, Some(i)) => {
                let i: Digest = i
                    .parse()
                    .map_err(|e: Error| e.context(format!("index.json annotation {INDEX}")))?;
                ingest(store, dir, &i)?;
                let ib = store.read_blob(&i)?;
                let lists = Parsed::parse(&ib, None).is_ok_and(|p| {
                    matches!(&p.manifest, AnyManifest::Index(x) if x.manifests.iter().any(|m| m.digest == mdigest))
                });
                if !lists {
                    return Err(Error::invalid(format!(
                        "index.json: {i} is named as the index of {mdigest} but does not list it"
                    )));
                }
                Some(i)
            }
            (i, _) => i,
        };
        load_signatures(store, dir, index_digest.iter().chain([&mdigest]))?;
        let name = ann.get(IMAGE_NAME).cloned().or_else(|| {
            // A bare OCI layout names only a tag; a full reference there is a name.
            ann.get(REF_NAME)
                .filter(|r| r.contains('/') || r.contains(':'))
                .cloned()
        });
        let tags: Vec<String> = name.iter().cloned().collect();
        store.tag(
            &mdigest,
            &tags,
            ImageMeta {
                size: None,
                index: index_digest,
            },
        )?;
        if let Some(rd) = ann.get(REPO_DIGESTS) {
            for item in rd.split(',') {
                if let Some((n, d)) = item.split_once('@')
                    && let Ok(d) = d.parse::<Digest>()
                {
                    store.add_repo_digest(n, &d)?;
                }
            }
        }
        out.push((name, mdigest, m.config.digest.clone()));
    }
    Ok(out)
}

/// Keep the archive's signatures of `digests` that are signatures of them (a
/// well-formed signed message naming that digest); others are dropped with a
/// warning. Trust is decided later, by the policy, as for pulled ones.
fn load_signatures<'a>(
    store: &LocalStore,
    dir: &Root,
    digests: impl Iterator<Item = &'a Digest>,
) -> Result<()> {
    for d in digests {
        for n in 1..=256 {
            let name = format!("{SIGNATURES}/sha256/{}/signature-{n}", d.hex());
            if !dir.is_file(Path::new(&name)) {
                break;
            }
            let mut blob = Vec::new();
            dir.open_file(Path::new(&name))?
                .take(crate::signing::MAX_SIGNATURE as u64 + 1)
                .read_to_end(&mut blob)?;
            match crate::signing::check_blob(&blob, d) {
                Ok(()) => {
                    store.add_signature(d, &blob)?;
                }
                Err(e) => log::warn!("{name}: not kept: {e}"),
            }
        }
    }
    Ok(())
}

fn load_docker(store: &LocalStore, dir: &Root) -> Result<Loaded> {
    let entries: Vec<ArchiveEntry> = serde_json::from_slice(&read_in(dir, "manifest.json")?)
        .map_err(|e| Error::invalid(format!("manifest.json: {e}")))?;
    let mut out = Vec::new();
    for e in entries {
        let cfg_bytes = read_in(dir, &e.config)?;
        let config: ImageConfig = serde_json::from_slice(&cfg_bytes)
            .map_err(|err| Error::invalid(format!("{}: {err}", e.config)))?;
        let config_digest = store.put_bytes(&cfg_bytes)?;
        // docker-archive names the config by its digest: hold it to that.
        let stem = Path::new(&e.config)
            .file_name()
            .and_then(|s| s.to_str())
            .unwrap_or("")
            .trim_end_matches(".json")
            .to_string();
        if stem.len() == 64 && stem != config_digest.hex() {
            return Err(Error::new(
                Kind::Digest,
                format!("{} does not hash to its name", e.config),
            ));
        }
        if config.rootfs.diff_ids.len() != e.layers.len() {
            return Err(Error::invalid(format!(
                "{}: {} layers listed, config has {} diff_ids",
                e.config,
                e.layers.len(),
                config.rootfs.diff_ids.len()
            )));
        }
        let mut descs = Vec::new();
        for (i, l) in e.layers.iter().enumerate() {
            descs.push(
                layer_blob(store, dir, l, &config.rootfs.diff_ids[i])
                    .map_err(|err| err.context(l))?,
            );
        }
        let manifest = Manifest {
            schema_version: 2,
            media_type: Some(MediaType::DockerManifest),
            artifact_type: None,
            config: Descriptor::new(
                MediaType::DockerConfig,
                config_digest.clone(),
                cfg_bytes.len() as u64,
            ),
            layers: descs,
            subject: None,
            annotations: None,
            extra: Default::default(),
        };
        let mbytes =
            serde_json::to_vec(&manifest).map_err(|err| Error::internal(err.to_string()))?;
        let mdigest = store.put_bytes(&mbytes)?;
        let tags: Vec<String> = e
            .repo_tags
            .clone()
            .unwrap_or_default()
            .iter()
            .map(|t| crate::store::local::tagged(t))
            .collect();
        store.tag(&mdigest, &tags, ImageMeta::default())?;
        if tags.is_empty() {
            out.push((None, mdigest.clone(), config_digest.clone()));
        }
        for t in tags {
            out.push((Some(t), mdigest.clone(), config_digest.clone()));
        }
    }
    Ok(out)
}

// A layer file of a docker-archive as a stored gzip blob whose content has the
// expected diff_id: gzip'd files are kept as they are, plain tars compressed.
fn layer_blob(store: &LocalStore, dir: &Root, name: &str, diff_id: &Digest) -> Result<Descriptor> {
    let open = || {
        dir.open_file(Path::new(name))
            .map_err(|e| e.context(format!("archive lacks {name}")))
    };
    let mut head = [0u8; 2];
    let mut f = open()?;
    let n = f.read(&mut head)?;
    drop(f);
    if is_gzip(&head[..n]) {
        let mut r = HashingReader::new(
            flate2::read::MultiGzDecoder::new(open()?),
            diff_id.algorithm(),
        );
        std::io::copy(&mut r, &mut std::io::sink())
            .map_err(|e| Error::with_source(Kind::Invalid, "corrupt gzip layer", e))?;
        let (got, _) = r.finish();
        if &got != diff_id {
            return Err(Error::new(
                Kind::Digest,
                format!("layer content has diff_id {got}, the config says {diff_id}"),
            ));
        }
        let mut f = open()?;
        let (d, size) = store.put_stream(&mut f, None)?;
        return Ok(Descriptor::new(MediaType::DockerLayerGzip, d, size));
    }
    let gz = ParallelGzip::new(
        store.writer()?,
        crate::archive::gzip::level(),
        ParallelGzip::<Vec<u8>>::default_threads(),
    );
    let mut r = HashingReader::new(open()?, diff_id.algorithm());
    let mut gz = gz;
    std::io::copy(&mut r, &mut gz)?;
    let (got, _) = r.finish();
    if &got != diff_id {
        return Err(Error::new(
            Kind::Digest,
            format!("layer content has diff_id {got}, the config says {diff_id}"),
        ));
    }
    let (d, size) = gz.finish()?.commit(None)?;
    Ok(Descriptor::new(MediaType::DockerLayerGzip, d, size))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_dir_writes_an_oci_layout_and_refuses_a_used_directory() {
        let base = std::env::temp_dir().join(format!("berth-savedir-{}", crate::util::uuid4()));
        let store = LocalStore::open(&base.join("store")).unwrap();
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_ustar();
        h.set_size(2);
        h.set_mode(0o644);
        b.append_data(&mut h, "etc/hostname", &b"x\n"[..]).unwrap();
        let tarball = b.into_inner().unwrap();
        let opts = crate::image::ImportOptions {
            changes: vec![],
            message: None,
            created: 0,
            format: Format::Docker,
        };
        let img = crate::image::import(&store, Box::new(std::io::Cursor::new(tarball)), "t", &opts)
            .unwrap();
        let item = SaveItem {
            manifest: img.manifest.clone(),
            tags: vec!["site/wn:v1".into()],
        };
        let dir = base.join("layout");
        save_dir(&store, std::slice::from_ref(&item), &dir).unwrap();
        let idx: Index =
            serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
        assert_eq!(idx.manifests.len(), 1);
        let m = &idx.manifests[0];
        assert_eq!(m.media_type, MediaType::OciManifest);
        assert_eq!(m.annotations.as_ref().unwrap()[REF_NAME], "v1");
        let mbytes = std::fs::read(dir.join(blob_name(&m.digest))).unwrap();
        assert_eq!(Digest::sha256(&mbytes), m.digest);
        for d in [&img.config, &img.layer] {
            let bytes = std::fs::read(dir.join(blob_name(d))).unwrap();
            assert_eq!(&Digest::sha256(&bytes), d);
        }
        assert!(dir.join("oci-layout").is_file());
        assert!(!dir.join("manifest.json").exists());
        let e = save_dir(&store, &[item], &dir).unwrap_err();
        assert!(e.to_string().contains("not empty"), "{e}");
        std::fs::remove_dir_all(&base).unwrap();
    }
}

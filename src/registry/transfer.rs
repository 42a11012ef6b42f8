//! Pull and push between a registry and the local image store.
//!
//! Pull: content negotiation for OCI and Docker manifests and indexes, the
//! platform's manifest picked from an index, every blob streamed through a
//! digest check into the store (nothing is kept that does not match), up to three
//! layers at a time; a reference by digest that the store already has needs no
//! network at all.
//!
//! Push: each blob is HEADed first and skipped if the registry has it; if another
//! repository of the same registry is known to hold it, a cross-repository mount is
//! tried; otherwise it is uploaded in one PUT, or in `--chunk-size` PATCHes with
//! retries from the registry's reported offset. The manifest goes last, with its
//! own media type.
//!
//! Signatures: a pull fetches the image's signatures (registry extension or
//! registries.d lookaside) and, when a policy applies, decides on the top
//! manifest's digest before any layer moves, so a refused image is never stored;
//! the signatures found are kept in the local store beside the image. A push
//! carries the image's kept signatures along and can add a new one.
//!
//! Both report to a [`Progress`] sink in dockerd's words and order (every layer
//! announced before bytes move, then counts, then its outcome; the final `Status:`
//! or digest line, or the error), so the engine can stream them to the docker CLI
//! and the client applets print what they always printed.

use super::client::{FetchedManifest, Registry};
use super::settings::Settings;
use crate::digest::{Digest, VerifyingReader};
use crate::error::{Error, Kind, Result};
use crate::oci::{AnyManifest, Descriptor, Parsed};
use crate::progress::{Counted, Progress, Silent, Task};
use crate::reference::Reference;
use crate::signing::lookaside::RegistriesD;
use crate::signing::{Identity, Payload, Policy, SigningKey};
use crate::store::local::{ImageMeta, LocalStore, split_tag};
use std::collections::BTreeSet;
use std::sync::Mutex;

/// Layers transferred at once, as docker does.
const PARALLEL: usize = 3;

/// The platform pulled from an index.
pub const OS: &str = "linux";
pub const ARCH: &str = "amd64";

/// What a pull did.
#[derive(Debug, Clone)]
pub struct Pulled {
    /// The fully qualified reference that was found.
    pub reference: Reference,
    /// The image manifest stored.
    pub manifest: Digest,
    /// The digest the registry knows the reference by (index or manifest).
    pub repo_digest: Digest,
    /// False when everything was already local.
    pub downloaded: bool,
}

fn short(d: &Digest) -> &str {
    d.short()
}

/// Pick the linux/amd64 entry of an index.
pub fn select_platform(index: &Parsed) -> Result<Descriptor> {
    let AnyManifest::Index(i) = &index.manifest else {
        return Err(Error::internal("not an index"));
    };
    i.manifests
        .iter()
        .find(|m| {
            m.platform
                .as_ref()
                .is_some_and(|p| p.os == OS && p.architecture == ARCH)
        })
        .or_else(|| {
            i.manifests
                .iter()
                .find(|m| m.platform.is_none() && m.media_type.is_image_manifest())
        })
        .cloned()
        .ok_or_else(|| Error::not_found(format!("no {OS}/{ARCH} image in this index")))
}

/// How a pull treats signatures.
#[derive(Debug, Clone, Default)]
pub struct PullOptions {
    /// containers-policy.json to enforce; None: accept anything (signatures are
    /// still fetched and kept when the registry has them).
    pub policy: Option<Policy>,
    /// Lookaside configuration for registries without the signature extension.
    pub registries_d: RegistriesD,
}

/// Pull `r` into the store (trying search registries for short names). Progress
/// goes to `progress` in docker's order, ending with `Status: …` or the error.
pub fn pull(
    store: &LocalStore,
    settings: &Settings,
    r: &Reference,
    progress: &dyn Progress,
) -> Result<Pulled> {
    pull_with(store, settings, r, &PullOptions::default(), progress)
}

/// [`pull`] under a signature policy.
pub fn pull_with(
    store: &LocalStore,
    settings: &Settings,
    r: &Reference,
    opts: &PullOptions,
    progress: &dyn Progress,
) -> Result<Pulled> {
    let res = pull_any(store, settings, r, opts, progress);
    match &res {
        Ok(p) => {
            let what = if p.downloaded {
                "Downloaded newer image for"
            } else {
                "Image is up to date for"
            };
            progress.line(None, &format!("Status: {what} {}", p.reference));
        }
        Err(e) => progress.error(&e.to_string()),
    }
    res
}

/// Decide on an image already in the store from the signatures kept with it.
pub fn check_local(
    store: &LocalStore,
    policy: &Policy,
    image: &Identity,
    top: &Digest,
) -> Result<()> {
    let sigs = store.signatures(top)?;
    policy
        .evaluate(image, top, &sigs, crate::util::now_unix())
        .map(|_| ())
}

fn pull_any(
    store: &LocalStore,
    settings: &Settings,
    r: &Reference,
    opts: &PullOptions,
    progress: &dyn Progress,
) -> Result<Pulled> {
    let candidates = settings.candidates(r)?;
    let _lease = store.writer_lease()?;
    // Known by digest already: no network (moby#43570), unless the policy wants
    // signatures the store does not have.
    if let Some(d) = &r.digest
        && let Some(m) = store.resolve(&format!("x@{d}"))?
        && store.complete(&m)
        && opts
            .policy
            .as_ref()
            .is_none_or(|p| check_local(store, p, &Identity::of(&candidates[0]), d).is_ok())
    {
        let full = candidates[0].clone();
        if let Some(t) = &full.tag {
            store.tag(&m, &[format!("{}:{t}", full.name())], ImageMeta::default())?;
        }
        store.add_repo_digest(&full.name(), d)?;
        return Ok(Pulled {
            reference: full,
            manifest: m,
            repo_digest: d.clone(),
            downloaded: false,
        });
    }
    let mut last_err: Option<Error> = None;
    for cand in &candidates {
        let host = cand.registry_or_default();
        let repo = cand.api_repository();
        let reference = cand.api_reference();
        let reg = match Registry::new(host, settings) {
            Ok(reg) => reg,
            Err(e) => {
                last_err = Some(e);
                continue;
            }
        };
        let fetched = match reg.manifest(&repo, &reference) {
            Ok(Some(m)) => m,
            Ok(None) => {
                last_err = Some(Error::not_found(format!("{cand}: not found on {host}")));
                continue;
            }
            Err(e)
                if candidates.len() > 1 && matches!(e.kind(), Kind::Network | Kind::NotFound) =>
            {
                log::warn!("{e}");
                last_err = Some(e);
                continue;
            }
            Err(e) => return Err(e),
        };
        progress.line(
            Some(cand.tag.as_deref().unwrap_or(&reference)),
            &format!("Pulling from {}", cand.name()),
        );
        return pull_from(store, settings, &reg, cand, &repo, fetched, opts, progress);
    }
    Err(last_err.unwrap_or_else(|| Error::not_found(format!("{r}: not found"))))
}

/// Fetch the signatures of `top` and hold them against the policy. Without a
/// policy (or one that asks nothing here) a registry that cannot list
/// signatures is no reason to fail the pull.
fn signatures_for(
    settings: &Settings,
    reg: &Registry,
    cand: &Reference,
    repo: &str,
    top: &Digest,
    opts: &PullOptions,
    progress: &dyn Progress,
) -> Result<Vec<Vec<u8>>> {
    let image = Identity::of(cand).tagged_or_latest();
    let needed = opts
        .policy
        .as_ref()
        .is_some_and(|p| !p.accepts_anything(&image));
    let sigs = match super::signatures::fetch(reg, repo, &image, top, settings, &opts.registries_d)
    {
        Ok(s) => s,
        Err(e) if !needed => {
            log::debug!("{}: no signatures read for {image}: {e}", reg.host);
            Vec::new()
        }
        Err(e) => {
            return Err(e.context(format!("reading the signatures of {image}")));
        }
    };
    if let Some(p) = &opts.policy {
        let d = p.evaluate(&image, top, &sigs, crate::util::now_unix())?;
        for a in &d.signatures {
            progress.line(
                None,
                &format!(
                    "Signature accepted: {} by {} ({})",
                    a.identity, a.key, a.user
                ),
            );
        }
    }
    Ok(sigs)
}

#[allow(clippy::too_many_arguments)]
fn pull_from(
    store: &LocalStore,
    settings: &Settings,
    reg: &Registry,
    cand: &Reference,
    repo: &str,
    top: FetchedManifest,
    opts: &PullOptions,
    progress: &dyn Progress,
) -> Result<Pulled> {
    let top_parsed = Parsed::parse(&top.bytes, Some(top.media_type.as_str()))?;
    // Decided before any byte of the image is stored.
    let signatures = signatures_for(settings, reg, cand, repo, &top.digest, opts, progress)?;
    let (manifest, index) = if top_parsed.media_type.is_index() {
        let choice = select_platform(&top_parsed)?;
        let m = reg
            .manifest(repo, &choice.digest.to_string())?
            .ok_or_else(|| {
                Error::not_found(format!(
                    "{}: {} lists {} which the registry does not have",
                    reg.host, top.digest, choice.digest
                ))
            })?;
        (m, Some(top.clone()))
    } else {
        (top.clone(), None)
    };
    let parsed = Parsed::parse(&manifest.bytes, Some(manifest.media_type.as_str()))?;
    let AnyManifest::Image(img) = &parsed.manifest else {
        return Err(Error::new(
            Kind::Unsupported,
            format!(
                "{}: {cand} uses a manifest format berth cannot store (schema 1)",
                reg.host
            ),
        ));
    };
    let mut blobs: Vec<&Descriptor> = vec![&img.config];
    blobs.extend(img.layers.iter().filter(|l| !l.media_type.is_foreign()));
    // Every layer's fate is told before any transfer starts, as dockerd does, so
    // the docker CLI can lay out one line per layer. Docker never shows the config.
    let mut todo = Vec::new();
    for b in blobs {
        let is_config = b.digest == img.config.digest;
        let have = store.has_blob(&b.digest) == Some(b.size);
        match (is_config, have) {
            (false, true) => progress.done(short(&b.digest), "Already exists"),
            (false, false) => progress.state(short(&b.digest), "Pulling fs layer"),
            _ => {}
        }
        if !have {
            todo.push(b);
        }
    }
    let downloaded = Mutex::new(false);
    let errors: Mutex<Vec<Error>> = Mutex::new(Vec::new());
    // Popped from the end: the config, then the layers in the manifest's order.
    todo.reverse();
    let workers = PARALLEL.min(todo.len());
    let queue = Mutex::new(todo);
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| {
                loop {
                    let Some(b) = queue.lock().unwrap().pop() else {
                        return;
                    };
                    if !errors.lock().unwrap().is_empty() {
                        return;
                    }
                    let is_config = b.digest == img.config.digest;
                    let sink: &dyn Progress = if is_config { &Silent } else { progress };
                    let id = short(&b.digest);
                    let task = Task::new(sink, id, "Downloading", b.size);
                    let res = (|| -> Result<()> {
                        let (body, _) = reg.blob(repo, &b.digest)?;
                        let mut r = VerifyingReader::new(
                            Counted {
                                inner: body.into_reader(),
                                task: &task,
                            },
                            b.digest.clone(),
                            Some(b.size),
                        );
                        store.put_stream(&mut r, Some(&b.digest)).map_err(|e| {
                            if e.to_string().contains("digest mismatch")
                                || e.to_string().contains("bytes, expected")
                                || e.kind() == Kind::Digest
                            {
                                Error::new(
                                    Kind::Digest,
                                    format!(
                                        "{}: blob {} failed verification ({e}); nothing was stored",
                                        reg.host, b.digest
                                    ),
                                )
                            } else {
                                e
                            }
                        })?;
                        Ok(())
                    })();
                    match res {
                        Ok(()) => {
                            *downloaded.lock().unwrap() = true;
                            // The digest was checked as the body ended.
                            sink.state(id, "Verifying Checksum");
                            sink.state(id, "Download complete");
                            sink.done(id, "Pull complete");
                        }
                        Err(e) => {
                            sink.done(id, "Failed");
                            errors.lock().unwrap().push(e);
                        }
                    }
                }
            });
        }
    });
    if let Some(e) = errors.into_inner().unwrap().into_iter().next() {
        return Err(e);
    }
    // Manifests last: an image is only recorded once everything it needs is here.
    let mdigest = store.put_bytes(&manifest.bytes)?;
    let index_digest = match &index {
        Some(i) => Some(store.put_bytes(&i.bytes)?),
        None => None,
    };
    let repo_digest = index_digest.clone().unwrap_or_else(|| mdigest.clone());
    let name = cand.name();
    let mut tags = Vec::new();
    if cand.digest.is_none() || cand.tag.is_some() {
        tags.push(format!(
            "{name}:{}",
            cand.tag.as_deref().unwrap_or("latest")
        ));
    }
    store.tag(
        &mdigest,
        &tags,
        ImageMeta {
            size: None,
            index: index_digest,
        },
    )?;
    store.add_repo_digest(&name, &repo_digest)?;
    for sig in &signatures {
        match crate::signing::check_blob(sig, &repo_digest) {
            Ok(()) => {
                store.add_signature(&repo_digest, sig)?;
            }
            Err(e) => log::warn!("{}: a signature of {name} is not kept: {e}", reg.host),
        }
    }
    let downloaded = downloaded.into_inner().unwrap();
    progress.line(None, &format!("Digest: {repo_digest}"));
    Ok(Pulled {
        reference: cand.clone(),
        manifest: mdigest,
        repo_digest,
        downloaded,
    })
}

/// Options of a push.
#[derive(Debug, Clone, Default)]
pub struct PushOptions {
    /// Upload in PATCHes of this many bytes (registries behind body-capping proxies).
    pub chunk_size: Option<u64>,
    /// Sign the pushed manifest as the target reference with this key.
    pub sign_key: Option<std::sync::Arc<SigningKey>>,
    /// Where signatures go when the registry does not take them.
    pub registries_d: RegistriesD,
}

/// Repositories on `host` that the store knows to hold `blob` (for mounts).
fn mount_sources(store: &LocalStore, host: &str, blob: &Digest, except: &str) -> Vec<String> {
    let Ok(refs) = store.refs() else {
        return Vec::new();
    };
    let mut out = BTreeSet::new();
    let names = refs
        .tags
        .iter()
        .map(|(k, m)| (split_tag(k).0.to_string(), m.clone()))
        .chain(
            refs.digests
                .iter()
                .flat_map(|(n, ds)| ds.iter().map(move |d| (n.clone(), d.clone()))),
        );
    for (name, m) in names {
        let Some(rest) = name.strip_prefix(&format!("{host}/")) else {
            continue;
        };
        if rest == except {
            continue;
        }
        let Ok(Some(md)) = store.resolve(&format!("x@{m}")) else {
            continue;
        };
        if let Ok(img) = store.image(&md)
            && (img.config_digest == *blob || img.layers().iter().any(|l| &l.digest == blob))
        {
            out.insert(rest.to_string());
        }
    }
    out.into_iter().collect()
}

/// Push the local image `local` to `target` (which names the registry). Progress
/// goes to `progress` in docker's order, ending with `TAG: digest: … size: …` or
/// the error.
pub fn push(
    store: &LocalStore,
    settings: &Settings,
    local: &str,
    target: &Reference,
    opts: &PushOptions,
    progress: &dyn Progress,
) -> Result<Digest> {
    let res = push_image(store, settings, local, target, opts, progress);
    if let Err(e) = &res {
        progress.error(&e.to_string());
    }
    res
}

fn push_image(
    store: &LocalStore,
    settings: &Settings,
    local: &str,
    target: &Reference,
    opts: &PushOptions,
    progress: &dyn Progress,
) -> Result<Digest> {
    let md = store
        .resolve(local)?
        .ok_or_else(|| Error::not_found(format!("no such image: {local}")))?;
    let img = store.image(&md)?;
    let host = target.registry_or_default().to_string();
    let repo = target.api_repository();
    let reg = Registry::new(&host, settings)?;
    progress.line(
        None,
        &format!("The push refers to repository [{}]", target.name()),
    );
    let mut blobs: Vec<Descriptor> = img
        .layers()
        .iter()
        .filter(|l| !l.media_type.is_foreign())
        .cloned()
        .collect();
    if let AnyManifest::Image(m) = &img.parsed.manifest {
        blobs.push(m.config.clone());
    }
    for b in &blobs {
        progress.state(short(&b.digest), "Preparing");
    }
    let errors: Mutex<Vec<Error>> = Mutex::new(Vec::new());
    let queue = Mutex::new(blobs.iter().collect::<Vec<_>>());
    // Make sure auth is settled for this scope before streams go out.
    reg.blob_size(&repo, &img.config_digest, true)?;
    std::thread::scope(|s| {
        for _ in 0..PARALLEL.min(blobs.len()) {
            s.spawn(|| {
                loop {
                    let Some(b) = queue.lock().unwrap().pop() else {
                        return;
                    };
                    if !errors.lock().unwrap().is_empty() {
                        return;
                    }
                    if let Err(e) = push_blob(store, &reg, &host, &repo, b, opts, progress) {
                        errors.lock().unwrap().push(e);
                    }
                }
            });
        }
    });
    if let Some(e) = errors.into_inner().unwrap().into_iter().next() {
        return Err(e);
    }
    let tag = target.tag.clone().unwrap_or_else(|| "latest".into());
    let digest = reg.put_manifest(&repo, &tag, &img.manifest_bytes, &img.media_type)?;
    store.add_repo_digest(&target.name(), &digest)?;
    progress.line(
        None,
        &format!("{tag}: digest: {digest} size: {}", img.manifest_bytes.len()),
    );
    push_signatures(store, &reg, &repo, target, &digest, opts, progress)?;
    Ok(digest)
}

/// After the manifest: the signatures kept with the image go along (when the
/// registry takes them), then a new one if a key was given.
fn push_signatures(
    store: &LocalStore,
    reg: &Registry,
    repo: &str,
    target: &Reference,
    digest: &Digest,
    opts: &PushOptions,
    progress: &dyn Progress,
) -> Result<()> {
    let image = Identity::of(target).tagged_or_latest();
    let kept = store.signatures(digest)?;
    if !kept.is_empty() {
        if reg.supports_signatures()? {
            for s in &kept {
                reg.put_extension_signature(repo, digest, s)?;
            }
            progress.line(None, &format!("Copied {} signature(s)", kept.len()));
        } else {
            log::warn!(
                "{}: the registry does not store signatures; {} kept signature(s) of {image} stay local",
                reg.host,
                kept.len()
            );
        }
    }
    if let Some(key) = &opts.sign_key {
        let sig = sign_image(key, &image, digest)?;
        let at = super::signatures::store(reg, repo, &image, digest, &sig, &opts.registries_d)?;
        store.add_signature(digest, &sig)?;
        let place = match at {
            super::signatures::Stored::Extension => "the registry".to_string(),
            super::signatures::Stored::Lookaside(u) => u,
        };
        progress.line(
            None,
            &format!(
                "Signed {image} with key {} (stored in {place})",
                key.fingerprint()
            ),
        );
    }
    Ok(())
}

/// A simple-signing signature of `digest` as `image`, made now.
pub fn sign_image(key: &SigningKey, image: &Identity, digest: &Digest) -> Result<Vec<u8>> {
    let payload = Payload::new(digest.clone(), image.to_string(), crate::util::now_unix());
    key.sign(&payload.to_json())
}

fn push_blob(
    store: &LocalStore,
    reg: &Registry,
    host: &str,
    repo: &str,
    b: &Descriptor,
    opts: &PushOptions,
    progress: &dyn Progress,
) -> Result<()> {
    let label = short(&b.digest).to_string();
    if reg.blob_size(repo, &b.digest, true)?.is_some() {
        progress.done(&label, "Layer already exists");
        return Ok(());
    }
    let sources = mount_sources(store, host, &b.digest, repo);
    let mut location = None;
    for from in sources.iter().take(3) {
        // A registry that refuses the mount (or its token) still takes an upload.
        let tried = match reg.start_upload(repo, Some((&b.digest, from))) {
            Ok(t) => t,
            Err(e) if e.kind() != Kind::Network && e.kind() != Kind::Tls => {
                log::debug!("{}: mount from {from} refused: {e}", reg.host);
                continue;
            }
            Err(e) => return Err(e),
        };
        match tried {
            None => {
                progress.done(&label, &format!("Mounted from {from}"));
                return Ok(());
            }
            Some(loc) => {
                location = Some(loc);
                break;
            }
        }
    }
    let location = match location {
        Some(l) => l,
        None => reg
            .start_upload(repo, None)?
            .ok_or_else(|| Error::internal("upload without a location"))?,
    };
    let size = store.has_blob(&b.digest).ok_or_else(|| {
        Error::not_found(format!("blob {} is missing from the local store", b.digest))
    })?;
    let task = Task::new(progress, &label, "Pushing", size);
    let mut file = store.open_blob(&b.digest)?;
    let res = match opts.chunk_size {
        Some(chunk) if chunk > 0 => {
            reg.upload_chunked(repo, &location, &b.digest, &mut file, size, chunk, &|n| {
                task.inc(n)
            })
        }
        _ => {
            let mut r = Counted {
                inner: &mut file,
                task: &task,
            };
            reg.upload_monolithic(repo, &location, &b.digest, &mut r, size)
        }
    };
    match res {
        Ok(()) => {
            progress.done(&label, "Pushed");
            Ok(())
        }
        Err(e) => {
            progress.done(&label, "Failed");
            Err(e)
        }
    }
}

//! Images through the Engine API: list, inspect, history, pull and import
//! (`POST /images/create`), tag, push, remove, load and save — over the same
//! local store the client applets use, so `berth pull` and `docker pull` against
//! engined fill one store.

use super::Engine;
use berth::digest::Digest;
use berth::error::{Error, Kind, Result};
use berth::reference::Reference;
use berth::store::local::{LocalImage, split_tag, tagged};
use serde_json::{Value, json};
use std::fs::File;
use std::io::{Read, Write};
use std::sync::Arc;

/// A reference as the user meant it. The CLI writes every name typed without
/// a registry as `docker.io/NAME` (`docker.io/library/NAME` for one word), so
/// engined cannot tell whether docker.io was typed: such names are taken as
/// short ones and go through the add-registry list (docker.io last, unless
/// blocked), as RHEL's docker did with its own CLI.
pub fn as_typed(r: &Reference) -> Reference {
    if r.registry.as_deref() != Some("docker.io") {
        return r.clone();
    }
    let repository = match r.repository.strip_prefix("library/") {
        Some(one) if !one.contains('/') => one.to_string(),
        _ => r.repository.clone(),
    };
    Reference {
        registry: None,
        repository,
        ..r.clone()
    }
}

/// A local image by name or id; a short name is also looked up as each
/// add-registry would have stored it (`docker run worker` after a pull that
/// found `pps04:5000/worker`).
pub fn resolve_local(e: &Engine, name: &str) -> Result<Option<Digest>> {
    if let Some(m) = e.store.resolve(name)? {
        return Ok(Some(m));
    }
    let Ok(r) = Reference::parse(name) else {
        return Ok(None);
    };
    let short = as_typed(&r);
    if short.registry.is_some() {
        return Ok(None);
    }
    for host in &e.s.registries.search {
        if let Some(m) = e.store.resolve(&short.with_registry(host).to_string())? {
            return Ok(Some(m));
        }
    }
    Ok(None)
}

fn image_of(e: &Engine, name: &str) -> Result<(Digest, LocalImage)> {
    let m = resolve_local(e, name)?
        .ok_or_else(|| Error::not_found(format!("No such image: {name}")))?;
    let img = e.store.image(&m)?;
    Ok((m, img))
}

fn created_unix(img: &LocalImage) -> i64 {
    img.config
        .created
        .as_deref()
        .and_then(super::state::parse_time)
        .unwrap_or(0)
}

fn size_of(e: &Engine, m: &Digest, img: &LocalImage) -> u64 {
    e.store
        .refs()
        .ok()
        .and_then(|r| r.images.get(m).and_then(|x| x.size))
        .unwrap_or_else(|| img.layers().iter().map(|l| l.size).sum())
}

fn names_of(e: &Engine, m: &Digest) -> (Vec<String>, Vec<String>) {
    let Ok(refs) = e.store.refs() else {
        return (vec![], vec![]);
    };
    let tags: Vec<String> = refs
        .tags
        .iter()
        .filter(|(_, v)| *v == m)
        .map(|(k, _)| k.clone())
        .collect();
    let index = refs.images.get(m).and_then(|x| x.index.clone());
    let digests: Vec<String> = refs
        .digests
        .iter()
        .flat_map(|(n, ds)| {
            ds.iter()
                .filter(|d| *d == m || Some(*d) == index.as_ref())
                .map(move |d| format!("{n}@{d}"))
        })
        .collect();
    (tags, digests)
}

/// `GET /images/json`.
pub fn list(e: &Engine, filters: &[(String, Vec<String>)]) -> Result<Value> {
    let refs = e.store.refs()?;
    let mut seen = std::collections::BTreeSet::new();
    let mut out = Vec::new();
    let manifests: Vec<Digest> = refs
        .images
        .keys()
        .cloned()
        .chain(refs.tags.values().cloned())
        .collect();
    for (k, _) in filters {
        if k != "reference" && k != "dangling" && k != "label" {
            return Err(Error::invalid(format!("invalid filter '{k}'")));
        }
    }
    for m in manifests {
        if !seen.insert(m.clone()) {
            continue;
        }
        let Ok(img) = e.store.image(&m) else { continue };
        let (mut tags, mut digests) = names_of(e, &m);
        // As dockerd: an image is listed under the references that match any
        // of the patterns, and only under those.
        let patterns: Vec<&String> = filters
            .iter()
            .filter(|(k, _)| k == "reference")
            .flat_map(|(_, v)| v)
            .collect();
        if !patterns.is_empty() {
            let any = |r: &String| patterns.iter().any(|p| reference_matches(p, r));
            tags.retain(any);
            digests.retain(any);
            if tags.is_empty() && digests.is_empty() {
                continue;
            }
        }
        let keep = filters.iter().all(|(k, vals)| {
            vals.iter().all(|v| match k.as_str() {
                "dangling" => (v == "true") == tags.is_empty(),
                "label" => {
                    let labels = img
                        .config
                        .config
                        .as_ref()
                        .and_then(|c| c.labels.clone())
                        .unwrap_or_default();
                    match v.split_once('=') {
                        Some((a, b)) => labels.get(a).is_some_and(|x| x == b),
                        None => labels.contains_key(v),
                    }
                }
                _ => true,
            })
        });
        if !keep {
            continue;
        }
        let size = size_of(e, &m, &img);
        out.push(json!({
            "Containers": -1,
            "Created": created_unix(&img),
            "Id": img.config_digest.to_string(),
            "Labels": img.config.config.as_ref().and_then(|c| c.labels.clone()),
            "ParentId": "",
            "RepoDigests": if digests.is_empty() { Value::Null } else { json!(digests) },
            "RepoTags": if tags.is_empty() { Value::Null } else { json!(tags) },
            "SharedSize": -1,
            "Size": size,
            "VirtualSize": size,
        }));
    }
    out.sort_by_key(|v| std::cmp::Reverse(v["Created"].as_i64().unwrap_or(0)));
    Ok(Value::Array(out))
}

/// docker's reference filter: `name`, `name:tag`, with `*` wildcards.
/// moby's `reference.FamiliarMatch`: the pattern against the whole reference
/// (`name:tag`, `name@digest`) or against its name alone.
fn reference_matches(pattern: &str, reference: &str) -> bool {
    let name = match reference.split_once('@') {
        Some((n, _)) => n,
        None => split_tag(reference).0,
    };
    glob(pattern, reference) || glob(pattern, name)
}

/// Go's `path.Match` for `*` and `?`: neither matches a '/'.
fn glob(p: &str, s: &str) -> bool {
    let mut pc = p.chars();
    match pc.next() {
        None => s.is_empty(),
        Some('*') => {
            let rest = pc.as_str();
            let mut t = s;
            loop {
                if glob(rest, t) {
                    return true;
                }
                let mut tc = t.chars();
                match tc.next() {
                    Some(c) if c != '/' => t = tc.as_str(),
                    _ => return false,
                }
            }
        }
        Some('?') => {
            let mut sc = s.chars();
            matches!(sc.next(), Some(c) if c != '/') && glob(pc.as_str(), sc.as_str())
        }
        Some(c) => {
            let mut sc = s.chars();
            sc.next() == Some(c) && glob(pc.as_str(), sc.as_str())
        }
    }
}

/// `GET /images/{name}/json`.
pub fn inspect(e: &Engine, name: &str) -> Result<Value> {
    let (m, img) = image_of(e, name)?;
    let (tags, digests) = names_of(e, &m);
    let size = size_of(e, &m, &img);
    Ok(json!({
        "Id": img.config_digest.to_string(),
        "RepoTags": tags,
        "RepoDigests": digests,
        "Parent": "",
        "Comment": img.config.history.last().and_then(|h| h.comment.clone()).unwrap_or_default(),
        "Created": img.config.created.clone().unwrap_or_default(),
        "Container": "",
        "ContainerConfig": {},
        "DockerVersion": "",
        "Author": img.config.author.clone().unwrap_or_default(),
        "Config": img.config.config.clone(),
        "Architecture": img.config.architecture,
        "Os": img.config.os,
        "Size": size,
        "VirtualSize": size,
        "GraphDriver": {"Name": "overlay", "Data": Value::Null},
        "RootFS": {"Type": "layers", "Layers": img.config.rootfs.diff_ids.iter().map(|d| d.to_string()).collect::<Vec<_>>()},
        "Metadata": {"LastTagTime": "0001-01-01T00:00:00Z"},
    }))
}

/// `GET /images/{name}/history`: newest first.
pub fn history(e: &Engine, name: &str) -> Result<Value> {
    let (m, img) = image_of(e, name)?;
    let (tags, _) = names_of(e, &m);
    let layers = img.layers();
    let mut li = 0;
    let mut out = Vec::new();
    for h in &img.config.history {
        let size = if h.empty_layer == Some(true) {
            0
        } else {
            let s = layers.get(li).map(|l| l.size).unwrap_or(0);
            li += 1;
            s
        };
        out.push(json!({
            "Id": "<missing>",
            "Created": h.created.as_deref().and_then(super::state::parse_time).unwrap_or(0),
            "CreatedBy": h.created_by.clone().unwrap_or_default(),
            "Tags": Value::Null,
            "Size": size,
            "Comment": h.comment.clone().unwrap_or_default(),
        }));
    }
    out.reverse();
    if let Some(first) = out.first_mut() {
        first["Id"] = Value::from(img.config_digest.to_string());
        first["Tags"] = json!(tags);
    }
    Ok(Value::Array(out))
}

/// A stream fed by a thread: the worker answers at once, the work goes on.
fn streamed(work: impl FnOnce(&mut File) + Send + 'static) -> Result<Box<dyn Read + Send>> {
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|err| Error::from(err).context("pipe"))?;
    let mut w = File::from(w);
    std::thread::Builder::new()
        .name("api-stream".into())
        .spawn(move || work(&mut w))
        .map_err(|err| Error::from(err).context("thread"))?;
    Ok(Box::new(File::from(r)))
}

/// Credentials from `X-Registry-Auth` (base64url JSON, docker's AuthConfig).
pub fn registry_auth(header: Option<&str>) -> Option<(String, String)> {
    use base64::Engine as _;
    let h = header?.trim();
    if h.is_empty() {
        return None;
    }
    let raw = base64::engine::general_purpose::URL_SAFE
        .decode(h)
        .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(h))
        .or_else(|_| base64::engine::general_purpose::STANDARD.decode(h))
        .ok()?;
    let v: Value = serde_json::from_slice(&raw).ok()?;
    let user = v.get("username").and_then(|x| x.as_str()).unwrap_or("");
    let pass = v.get("password").and_then(|x| x.as_str()).unwrap_or("");
    (!user.is_empty()).then(|| (user.to_string(), pass.to_string()))
}

/// `POST /images/create?fromImage=&tag=`: pull, progress streamed as docker's
/// JSON messages.
pub fn pull(
    e: &Arc<Engine>,
    image: &str,
    tag: Option<&str>,
    auth: Option<(String, String)>,
) -> Result<Box<dyn Read + Send>> {
    let full = match tag.filter(|t| !t.is_empty()) {
        Some(t) if t.starts_with("sha256:") => format!("{image}@{t}"),
        Some(t) => format!("{image}:{t}"),
        None => image.to_string(),
    };
    let r = as_typed(&Reference::parse(&full)?);
    let e = e.clone();
    streamed(move |w| {
        let sink = berth::progress::DockerJson::new(&mut *w);
        let mut settings = e.s.registries.clone();
        settings.credentials = auth;
        let opts = berth::registry::transfer::PullOptions {
            policy: e.s.policy.clone(),
            registries_d: Default::default(),
        };
        match berth::registry::transfer::pull_with(&e.store, &settings, &r, &opts, &sink) {
            Ok(p) => {
                e.events.emit(
                    "image",
                    "pull",
                    &p.reference.to_string(),
                    vec![("name".into(), p.reference.to_string())],
                );
            }
            Err(err) => {
                use berth::progress::Progress;
                sink.error(&err.to_string());
            }
        }
    })
}

/// `POST /images/{name}/push?tag=`.
pub fn push(
    e: &Arc<Engine>,
    name: &str,
    tag: Option<&str>,
    auth: Option<(String, String)>,
) -> Result<Box<dyn Read + Send>> {
    let full = match tag.filter(|t| !t.is_empty()) {
        Some(t) => format!("{name}:{t}"),
        None => name.to_string(),
    };
    if e.store.resolve(&full)?.is_none() {
        return Err(Error::not_found(format!(
            "An image does not exist locally with the tag: {name}"
        )));
    }
    let target = Reference::parse(&full)?;
    let e = e.clone();
    streamed(move |w| {
        let sink = berth::progress::DockerJson::new(&mut *w);
        let mut settings = e.s.registries.clone();
        settings.credentials = auth;
        match berth::registry::transfer::push(
            &e.store,
            &settings,
            &full,
            &target,
            &Default::default(),
            &sink,
        ) {
            Ok(_) => e
                .events
                .emit("image", "push", &full, vec![("name".into(), full.clone())]),
            Err(err) => {
                use berth::progress::Progress;
                sink.error(&err.to_string());
            }
        }
    })
}

/// `POST /images/create?fromSrc=-`: import the request body.
pub fn import(
    e: &Engine,
    body: Box<dyn Read + Send>,
    repo: Option<&str>,
    tag: Option<&str>,
    message: Option<&str>,
    changes: Vec<String>,
) -> Result<Value> {
    let opts = berth::image::ImportOptions {
        changes,
        message: message.filter(|m| !m.is_empty()).map(str::to_string),
        created: berth::image::default_created()?,
        format: berth::image::Format::Docker,
    };
    let img = berth::image::import(&e.store, body, "-", &opts)?;
    if let Some(repo) = repo.filter(|r| !r.is_empty()) {
        let name = match tag.filter(|t| !t.is_empty()) {
            Some(t) => format!("{repo}:{t}"),
            None => tagged(repo),
        };
        Reference::parse(&name)?;
        e.store
            .tag(&img.manifest, &[tagged(&name)], Default::default())?;
        e.events.emit(
            "image",
            "tag",
            &img.config.to_string(),
            vec![("name".into(), name)],
        );
    }
    e.events
        .emit("image", "import", &img.config.to_string(), vec![]);
    Ok(json!({"status": img.config.to_string()}))
}

/// `POST /images/{name}/tag?repo=&tag=`.
pub fn tag(e: &Engine, name: &str, repo: &str, tag: Option<&str>) -> Result<()> {
    let (m, img) = image_of(e, name)?;
    let target = match tag.filter(|t| !t.is_empty()) {
        Some(t) => format!("{repo}:{t}"),
        None => tagged(repo),
    };
    Reference::parse(&target)?;
    e.store.tag(&m, &[tagged(&target)], Default::default())?;
    e.events.emit(
        "image",
        "tag",
        &img.config_digest.to_string(),
        vec![("name".into(), target)],
    );
    Ok(())
}

/// `DELETE /images/{name}?force=`.
pub fn remove(e: &Engine, name: &str, force: bool) -> Result<Value> {
    let lines = e.store.remove_image(name, force).map_err(|err| {
        if err.kind() == Kind::Conflict {
            Error::new(Kind::Conflict, format!("conflict: {err}"))
        } else {
            err
        }
    })?;
    let out: Vec<Value> = lines
        .iter()
        .map(|l| match l.split_once(": ") {
            Some(("Untagged", v)) => json!({"Untagged": v}),
            Some(("Deleted", v)) => json!({"Deleted": v}),
            _ => json!({"Untagged": l}),
        })
        .collect();
    for l in &lines {
        if let Some(v) = l.strip_prefix("Untagged: ") {
            e.events
                .emit("image", "untag", v, vec![("name".into(), v.to_string())]);
        } else if let Some(v) = l.strip_prefix("Deleted: ") {
            e.events.emit("image", "delete", v, vec![]);
        }
    }
    if let Err(err) = e.store.collect_garbage() {
        log::warn!("image store garbage collection: {err}");
    }
    Ok(Value::Array(out))
}

/// `POST /images/load`: what `docker load` prints.
pub fn load(e: &Engine, body: Box<dyn Read + Send>) -> Result<Value> {
    let opts = berth::image::archive::LoadOptions {
        tmpdir: e.s.tmpdir.clone(),
        ..Default::default()
    };
    let loaded = berth::image::archive::load(&e.store, body, &opts)?;
    let mut text = String::new();
    for (n, _, cfg) in &loaded {
        match n {
            Some(n) => text.push_str(&format!("Loaded image: {n}\n")),
            None => text.push_str(&format!("Loaded image ID: {cfg}\n")),
        }
        e.events.emit("image", "load", &cfg.to_string(), vec![]);
    }
    Ok(json!({"stream": text}))
}

/// `GET /images/get?names=`: a docker-archive of the named images.
pub fn save(e: &Arc<Engine>, names: Vec<String>) -> Result<Box<dyn Read + Send>> {
    let mut items = Vec::new();
    for n in &names {
        let (m, _) = image_of(e, n)?;
        let tags = if n.contains('@') || !e.store.refs()?.tags.contains_key(&tagged(n)) {
            vec![]
        } else {
            vec![tagged(n)]
        };
        items.push(berth::image::archive::SaveItem { manifest: m, tags });
    }
    let e = e.clone();
    streamed(move |w| {
        if let Err(err) =
            berth::image::archive::save(&e.store, &items, berth::image::Format::Docker, &mut *w)
        {
            log::error!("docker save: {err}");
        }
        let _ = w.flush();
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clis_docker_io_names_are_taken_as_short_ones() {
        let t = |s: &str| as_typed(&Reference::parse(s).unwrap()).to_string();
        assert_eq!(t("docker.io/site/worker:1"), "site/worker:1");
        assert_eq!(t("docker.io/library/busybox:latest"), "busybox:latest");
        assert_eq!(t("docker.io/library/a/b"), "library/a/b");
        assert_eq!(
            t("pps04.lcg.triumf.ca:5000/sl6:umd3"),
            "pps04.lcg.triumf.ca:5000/sl6:umd3"
        );
    }

    #[test]
    fn reference_filter_and_auth_header() {
        assert!(reference_matches("busybox", "busybox:latest"));
        assert!(reference_matches("busy*", "busybox:latest"));
        assert!(reference_matches("busybox:lat*", "busybox:latest"));
        assert!(!reference_matches("sl6", "busybox:latest"));
        // path.Match: '*' and '?' stop at '/'
        assert!(reference_matches("site/*", "site/worker:1"));
        assert!(!reference_matches("*", "site/worker:1"));
        assert!(reference_matches("*/*", "site/worker:1"));
        assert!(reference_matches("site/worke?", "site/worker:1"));
        assert!(reference_matches(
            "127.0.0.1:5000/sl6",
            "127.0.0.1:5000/sl6@sha256:aa"
        ));
        assert!(!reference_matches("sl6:x*", "sl6:latest"));
        use base64::Engine as _;
        let h = base64::engine::general_purpose::URL_SAFE
            .encode(r#"{"username":"u","password":"p","serveraddress":"h"}"#);
        assert_eq!(registry_auth(Some(&h)), Some(("u".into(), "p".into())));
        assert_eq!(registry_auth(Some("")), None);
    }
}

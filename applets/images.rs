//! Local image management with docker's output: `images`, `tag`, `rmi`.

use argh::FromArgs;
use berth::digest::Digest;
use berth::error::{Error, Result};
use berth::reference::Reference;
use berth::store::local::{LocalStore, root_from, split_tag, tagged};
use berth::util::{human_ago, human_size, now_unix, parse_rfc3339};
use std::collections::BTreeSet;
use std::path::PathBuf;

#[derive(FromArgs)]
/// List images in the local store (REPOSITORY TAG IMAGE ID CREATED SIZE).
struct ImagesArgs {
    /// show repo digests
    #[argh(switch)]
    digests: bool,
    /// only print image ids
    #[argh(switch, short = 'q')]
    quiet: bool,
    /// do not truncate ids
    #[argh(switch)]
    no_trunc: bool,
    /// graph root of the local image store (default /var/lib/berth or BERTH_ROOT)
    #[argh(option, short = 'g')]
    graph: Option<PathBuf>,
    /// only images of this repository (and tag)
    #[argh(positional)]
    filter: Option<String>,
}

pub fn images(name: &str, args: &[String]) -> Result<u8> {
    let a: ImagesArgs = match crate::applets::parse_args(name, args) {
        Ok(a) => a,
        Err(code) => return Ok(code),
    };
    let store = LocalStore::open(&root_from(a.graph.as_deref()))?;
    let refs = store.refs()?;
    let now = now_unix();
    let id = |d: &Digest| {
        if a.no_trunc {
            d.to_string()
        } else {
            d.short().to_string()
        }
    };
    let mut rows = vec![];
    let mut header = vec!["REPOSITORY".to_string(), "TAG".into()];
    if a.digests {
        header.push("DIGEST".into());
    }
    header.extend(["IMAGE ID".into(), "CREATED".into(), "SIZE".into()]);
    rows.push(header);
    let mut seen_ids = BTreeSet::new();
    let mut lines: Vec<(String, String, Digest)> = refs
        .tags
        .iter()
        .map(|(k, m)| {
            let (n, t) = split_tag(k);
            (n.to_string(), t.to_string(), m.clone())
        })
        .collect();
    for m in refs.images.keys() {
        if !refs.tags.values().any(|t| t == m) {
            lines.push(("<none>".into(), "<none>".into(), m.clone()));
        }
    }
    for (repo, tag, m) in lines {
        if let Some(f) = &a.filter {
            let full = tagged(f);
            let (fr, ft) = split_tag(&full);
            if repo != fr || (f.contains(':') && ft != tag) {
                continue;
            }
        }
        let Ok(img) = store.image(&m) else { continue };
        if a.quiet {
            if seen_ids.insert(img.config_digest.clone()) {
                println!("{}", id(&img.config_digest));
            }
            continue;
        }
        let created = img
            .config
            .created
            .as_deref()
            .and_then(parse_rfc3339)
            .map(|t| human_ago(t, now))
            .unwrap_or_else(|| "N/A".into());
        let size = refs
            .images
            .get(&m)
            .and_then(|x| x.size)
            .unwrap_or_else(|| img.layers().iter().map(|l| l.size).sum());
        let mut row = vec![repo.clone(), tag];
        if a.digests {
            let d = refs.digests.get(&repo).and_then(|ds| {
                ds.iter()
                    .find(|d| {
                        **d == m || refs.images.get(&m).and_then(|x| x.index.as_ref()) == Some(*d)
                    })
                    .cloned()
            });
            row.push(d.map(|d| d.to_string()).unwrap_or_else(|| "<none>".into()));
        }
        row.extend([id(&img.config_digest), created, human_size(size)]);
        rows.push(row);
    }
    if !a.quiet {
        print!("{}", berth::util::table(&rows));
    }
    Ok(0)
}

#[derive(FromArgs)]
/// Give an image another name: tag SOURCE[:TAG] TARGET[:TAG].
struct TagArgs {
    /// graph root of the local image store (default /var/lib/berth or BERTH_ROOT)
    #[argh(option, short = 'g')]
    graph: Option<PathBuf>,
    /// existing image (name, name:tag, image id or digest)
    #[argh(positional)]
    source: String,
    /// new name, [HOST[:PORT]/]NAME[:TAG]
    #[argh(positional)]
    target: String,
}

pub fn tag(name: &str, args: &[String]) -> Result<u8> {
    let a: TagArgs = match crate::applets::parse_args(name, args) {
        Ok(a) => a,
        Err(code) => return Ok(code),
    };
    let store = LocalStore::open(&root_from(a.graph.as_deref()))?;
    let m = store
        .resolve(&a.source)?
        .ok_or_else(|| Error::not_found(format!("no such image: {}", a.source)))?;
    let r = Reference::parse(&a.target)?;
    if r.digest.is_some() {
        return Err(Error::usage("a tag target cannot contain a digest"));
    }
    store.tag(
        &m,
        &[format!(
            "{}:{}",
            r.name(),
            r.tag.as_deref().unwrap_or("latest")
        )],
        Default::default(),
    )?;
    Ok(0)
}

#[derive(FromArgs)]
/// Remove images: untag names, delete images no name refers to.
struct RmiArgs {
    /// remove even if in use by a container or named several times
    #[argh(switch, short = 'f')]
    force: bool,
    /// graph root of the local image store (default /var/lib/berth or BERTH_ROOT)
    #[argh(option, short = 'g')]
    graph: Option<PathBuf>,
    /// images (name:tag, image id or digest)
    #[argh(positional)]
    images: Vec<String>,
}

pub fn rmi(name: &str, args: &[String]) -> Result<u8> {
    let a: RmiArgs = match crate::applets::parse_args(name, args) {
        Ok(a) => a,
        Err(code) => return Ok(code),
    };
    if a.images.is_empty() {
        return Err(Error::usage("rmi needs at least one image"));
    }
    let store = LocalStore::open(&root_from(a.graph.as_deref()))?;
    let mut failed = false;
    for what in &a.images {
        match store.remove_image(what, a.force) {
            Ok(lines) => lines.iter().for_each(|l| println!("{l}")),
            Err(e) => {
                eprintln!("{name}: {e}");
                failed = true;
            }
        }
    }
    match store.collect_garbage()? {
        Some((n, bytes)) if n > 0 => log::debug!("removed {n} blobs, {}", human_size(bytes)),
        _ => {}
    }
    Ok(if failed { 1 } else { 0 })
}

//! Local image management with docker's output: `images`, `tag`, `rmi`.

use argh::FromArgs;
use berth::digest::Digest;
use berth::error::{Error, Kind, Result};
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

fn table(rows: &[Vec<String>]) -> String {
    let n = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..n)
        .map(|i| {
            rows.iter()
                .map(|r| r.get(i).map_or(0, |c| c.chars().count()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut s = String::new();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, c)| {
                if i + 1 == r.len() {
                    c.clone()
                } else {
                    format!("{c:<w$}", w = widths[i])
                }
            })
            .collect();
        s.push_str(line.join("   ").trim_end());
        s.push('\n');
    }
    s
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
    let mut tagged_images = BTreeSet::new();
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
        tagged_images.insert(m.clone());
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
        print!("{}", table(&rows));
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
    let leased = store.leased()?;
    let mut failed = false;
    for what in &a.images {
        let res = store.update_refs(|refs| {
            let key = tagged(what);
            let by_tag = refs.tags.contains_key(&key);
            let m = if by_tag { refs.tags[&key].clone() } else {
                store.resolve(what)?.ok_or_else(|| Error::not_found(format!("no such image: {what}")))?
            };
            let names: Vec<String> = refs.tags.iter().filter(|(_, v)| **v == m).map(|(k, _)| k.clone()).collect();
            let last_name = names.len() <= 1 || !by_tag;
            if last_name && leased.contains(&m) && !a.force {
                return Err(Error::new(Kind::Conflict, format!("unable to remove {what}: the image is in use by a container (use -f)")));
            }
            if !by_tag && names.len() > 1 && !a.force {
                return Err(Error::new(Kind::Conflict, format!("unable to remove {what}: it is referenced by {} names ({}); remove them by name or use -f", names.len(), names.join(", "))));
            }
            let mut out = Vec::new();
            let untag: Vec<String> = if by_tag { vec![key.clone()] } else { names.clone() };
            for k in &untag {
                refs.tags.remove(k);
                out.push(format!("Untagged: {k}"));
            }
            if !refs.tags.values().any(|v| *v == m) {
                let meta = refs.images.remove(&m).unwrap_or_default();
                for ds in refs.digests.values_mut() {
                    ds.retain(|d| *d != m && Some(d) != meta.index.as_ref());
                }
                refs.digests.retain(|_, ds| !ds.is_empty());
                if let Ok(img) = store.image(&m) {
                    out.push(format!("Deleted: {}", img.config_digest));
                }
            }
            Ok(out)
        });
        match res {
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

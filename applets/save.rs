//! `save -o FILE IMAGE…` / `load -i FILE`: images as files for air-gapped nodes,
//! in docker-archive format (read by `docker load` and skopeo's `docker-archive:`,
//! and at the same time an OCI layout) or, with `--format oci`, an OCI layout tar.

use argh::FromArgs;
use berth::error::{Error, Result};
use berth::image::Format;
use berth::image::archive::{SaveItem, load as load_archive, save as save_archive};
use berth::store::local::{LocalStore, root_from, tagged};
use std::io::IsTerminal;
use std::path::PathBuf;

#[derive(FromArgs)]
/// Write images to a tar archive (docker-archive, or --format oci).
struct SaveArgs {
    /// output file (default stdout, unless it is a terminal)
    #[argh(option, short = 'o')]
    output: Option<PathBuf>,
    /// docker (docker-archive + OCI layout, default) or oci (OCI layout only)
    #[argh(option, default = "String::from(\"docker\")")]
    format: String,
    /// graph root of the local image store (default /var/lib/berth or BERTH_ROOT)
    #[argh(option, short = 'g')]
    graph: Option<PathBuf>,
    /// images (name:tag, image id or digest)
    #[argh(positional)]
    images: Vec<String>,
}

pub fn save(name: &str, args: &[String]) -> Result<u8> {
    let a: SaveArgs = match crate::applets::parse_args(name, args) {
        Ok(a) => a,
        Err(code) => return Ok(code),
    };
    if a.images.is_empty() {
        return Err(Error::usage("save needs at least one image"));
    }
    let format = Format::parse(&a.format)?;
    let store = LocalStore::open(&root_from(a.graph.as_deref()))?;
    let refs = store.refs()?;
    let mut items: Vec<SaveItem> = Vec::new();
    for what in &a.images {
        let m = store
            .resolve(what)?
            .ok_or_else(|| Error::not_found(format!("no such image: {what}")))?;
        let key = tagged(what);
        let tag = refs.tags.contains_key(&key).then_some(key);
        match items.iter_mut().find(|i| i.manifest == m) {
            Some(i) => i.tags.extend(tag),
            None => items.push(SaveItem {
                manifest: m,
                tags: tag.into_iter().collect(),
            }),
        }
    }
    match &a.output {
        Some(path) => {
            // Written beside the target and renamed: a failed save leaves no half file.
            let tmp = berth::fsutil::temp_path(path);
            let f =
                std::fs::File::create(&tmp).map_err(|e| Error::from(e).context(tmp.display()))?;
            let res = save_archive(
                &store,
                &items,
                format,
                std::io::BufWriter::with_capacity(1 << 20, f),
            )
            .and_then(|w| w.into_inner().map_err(|e| Error::from(e.into_error())))
            .and_then(|f| f.sync_all().map_err(Error::from))
            .and_then(|_| std::fs::rename(&tmp, path).map_err(Error::from));
            if res.is_err() {
                let _ = std::fs::remove_file(&tmp);
            }
            res.map_err(|e| e.context(path.display()))?;
        }
        None => {
            if std::io::stdout().is_terminal() {
                return Err(Error::usage(
                    "refusing to write an archive to a terminal: use -o FILE or redirect",
                ));
            }
            save_archive(
                &store,
                &items,
                format,
                std::io::BufWriter::new(std::io::stdout().lock()),
            )?;
        }
    }
    Ok(0)
}

#[derive(FromArgs)]
/// Load images from a docker-archive or OCI layout tar (plain or gzip).
struct LoadArgs {
    /// input file (default stdin)
    #[argh(option, short = 'i')]
    input: Option<PathBuf>,
    /// print nothing
    #[argh(switch, short = 'q')]
    quiet: bool,
    /// graph root of the local image store (default /var/lib/berth or BERTH_ROOT)
    #[argh(option, short = 'g')]
    graph: Option<PathBuf>,
    /// refuse archives that unpack to more than this (e.g. 20G; default: the
    /// free space of the store's filesystem)
    #[argh(option)]
    max_size: Option<String>,
}

pub fn load(name: &str, args: &[String]) -> Result<u8> {
    let a: LoadArgs = match crate::applets::parse_args(name, args) {
        Ok(a) => a,
        Err(code) => return Ok(code),
    };
    let store = LocalStore::open(&root_from(a.graph.as_deref()))?;
    let input: Box<dyn std::io::Read + Send> = match &a.input {
        Some(p) => {
            Box::new(std::fs::File::open(p).map_err(|e| Error::from(e).context(p.display()))?)
        }
        None => {
            if std::io::stdin().is_terminal() {
                return Err(Error::usage("no input: use -i FILE or pipe an archive in"));
            }
            Box::new(std::io::stdin())
        }
    };
    let max_unpacked = a
        .max_size
        .as_deref()
        .map(|s| {
            berth::util::parse_size(s)
                .ok_or_else(|| Error::usage(format!("--max-size {s:?}: use a size like 20G")))
        })
        .transpose()?;
    let loaded = load_archive(
        &store,
        input,
        &berth::image::archive::LoadOptions {
            max_unpacked,
            ..Default::default()
        },
    )?;
    if !a.quiet {
        for (n, _, cfg) in loaded {
            match n {
                Some(n) => println!("Loaded image: {n}"),
                None => println!("Loaded image ID: {cfg}"),
            }
        }
    }
    Ok(0)
}

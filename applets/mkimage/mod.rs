//! `mkimage [-g GRAPHROOT] [--tag NAME:TAG] [--tar FILE] [--oci DIR] [--keep-root] RECIPE`:
//! build an image from a recipe, as the site's modified mkimage-yum.sh did, for
//! any package manager.
//!
//! The stages run in order into a fresh root under `GRAPHROOT/tmp` (same disk as
//! the store). After each stage the root is snapshotted (metadata only): that
//! gives the size table — size, delta, files, seconds per stage, like the site
//! document's list — and, at the end of each layer, the layer's changes, packed
//! at once into the store as a reproducible tar+gzip. So a site layer stacks on an
//! untouched generic one, and the generic layer's digest does not move when only
//! the site part changes. Outputs: the whole final root as a gzip'd tarball for
//! `import` (`--tar`), a layered image in the local store (`--tag`), an OCI layout
//! directory (`--oci`).
//!
//! Reproducible: the same root gives the same bytes (see `berth::archive::writer`);
//! mtimes are clamped to the recipe's `epoch` or `SOURCE_DATE_EPOCH`, which is also
//! the image's date. Stage timings are printed but kept out of the image, so two
//! builds of the same root give the same manifest digest.

mod stage;

use argh::FromArgs;
use berth::archive::gzip::ParallelGzip;
use berth::archive::tree::{Change, Tree, walk};
use berth::archive::writer::TarWriter;
use berth::digest::{Algorithm, Digest, HashingWriter};
use berth::error::{Context, Error, Kind, Result};
use berth::fsutil::confined::Root;
use berth::image::recipe::Recipe;
use berth::image::{Format, assemble, default_created};
use berth::oci::{History, RunConfig};
use berth::store::local::{ImageMeta, LocalStore, root_from};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(FromArgs)]
/// Build an image from a recipe: stages run into a root, packed reproducibly into layers.
struct Args {
    /// graph root of the local image store; the build root is made under its tmp/
    /// (default /var/lib/berth or BERTH_ROOT)
    #[argh(option, short = 'g')]
    graph: Option<PathBuf>,
    /// put the image in the local store under NAME:TAG
    #[argh(option)]
    tag: Option<String>,
    /// write the final root as a gzip'd tarball (for import)
    #[argh(option)]
    tar: Option<PathBuf>,
    /// write the image as an OCI layout into this new directory
    #[argh(option)]
    oci: Option<PathBuf>,
    /// keep the build root afterwards (also after a failure), for inspection
    #[argh(switch)]
    keep_root: bool,
    /// build in this existing directory instead of a fresh root (never removed);
    /// with no stages, this packs the directory as it is
    #[argh(option)]
    root: Option<PathBuf>,
    /// set a recipe variable, KEY=VALUE (repeatable; overrides the recipe's env)
    #[argh(option, short = 'e')]
    env: Vec<String>,
    /// manifest format: docker (schema2, default) or oci
    #[argh(option)]
    format: Option<String>,
    /// gzip level of layers and tarball, 1-9 (default 9, or BERTH_GZIP_LEVEL: as
    /// small as gzip -6 and still faster on two cores; digests depend on it)
    #[argh(option, default = "berth::archive::gzip::level()")]
    level: u32,
    /// only read and check the recipe, then exit (needs no root)
    #[argh(switch)]
    check: bool,
    /// the recipe (YAML)
    #[argh(positional)]
    recipe: PathBuf,
}

/// One line of the size table.
#[derive(Debug, Clone)]
struct Row {
    stage: String,
    kind: &'static str,
    size: u64,
    delta: i64,
    files: usize,
    secs: f64,
}

/// A layer packed into the store.
#[derive(Debug, Clone)]
struct Packed {
    digest: Digest,
    size: u64,
    diff_id: Digest,
    tar_size: u64,
    entries: u64,
    secs: f64,
}

/// Outputs after command line and recipe are merged.
struct Outputs {
    tag: Option<String>,
    tar: Option<PathBuf>,
    oci: Option<PathBuf>,
    format: Format,
    level: u32,
}

impl Outputs {
    fn image(&self) -> bool {
        self.tag.is_some() || self.oci.is_some()
    }
}

fn signed(n: i64) -> String {
    if n < 0 {
        format!("-{}", berth::util::human_size(n.unsigned_abs()))
    } else {
        format!("+{}", berth::util::human_size(n as u64))
    }
}

// The recipe's stages as the image's label: names and kinds only. Sizes of the
// stages between the first and the last depend on the build host (a warm or cold
// package cache, say) and would make two builds of the same image differ.
fn stages_label(rows: &[Row]) -> String {
    let v: Vec<serde_json::Value> = rows
        .iter()
        .map(|r| serde_json::json!({"stage": r.stage, "kind": r.kind}))
        .collect();
    serde_json::Value::Array(v).to_string()
}

fn print_table(out: &mut impl Write, rows: &[Row]) -> std::io::Result<()> {
    let w = rows.iter().map(|r| r.stage.len()).max().unwrap_or(5).max(5);
    writeln!(
        out,
        "{:<w$}  {:<7}  {:>9}  {:>10}  {:>8}  {:>8}",
        "STAGE", "KIND", "SIZE", "DELTA", "FILES", "SECONDS"
    )?;
    for r in rows {
        writeln!(
            out,
            "{:<w$}  {:<7}  {:>9}  {:>10}  {:>8}  {:>8.1}",
            r.stage,
            r.kind,
            berth::util::human_size(r.size),
            signed(r.delta),
            r.files,
            r.secs
        )?;
    }
    Ok(())
}

// Pack changes of the tree at `root` into a stored layer blob.
fn pack_layer(
    store: &LocalStore,
    root: &Path,
    changes: &[Change],
    clamp: i64,
    level: u32,
) -> Result<Packed> {
    let t = Instant::now();
    let gz = ParallelGzip::new(
        store.writer()?,
        level,
        ParallelGzip::<Vec<u8>>::default_threads(),
    );
    let mut tw = TarWriter::new(HashingWriter::new(gz, Algorithm::Sha256), Some(clamp));
    tw.append_changes(root, changes)?;
    let entries = tw.entries();
    let (gz, diff_id, tar_size) = tw.finish()?.finish();
    let (digest, size) = gz.finish().context("compress layer")?.commit(None)?;
    Ok(Packed {
        digest,
        size,
        diff_id,
        tar_size,
        entries,
        secs: t.elapsed().as_secs_f64(),
    })
}

// Write the whole tree as a gzip'd tarball at `dest` (atomically).
fn pack_file(dest: &Path, root: &Path, tree: &Tree, clamp: i64, level: u32) -> Result<u64> {
    let tmp = berth::fsutil::temp_path(dest);
    let res = (|| -> Result<u64> {
        let f = std::fs::File::create(&tmp).with_context(|| format!("create {}", tmp.display()))?;
        let gz = ParallelGzip::new(
            std::io::BufWriter::with_capacity(1 << 20, f),
            level,
            ParallelGzip::<Vec<u8>>::default_threads(),
        );
        let mut tw = TarWriter::new(gz, Some(clamp));
        tw.append_changes(root, &tree.all())?;
        let buf = tw
            .finish()?
            .finish()
            .with_context(|| format!("write {}", dest.display()))?;
        let f = buf.into_inner().map_err(|e| {
            Error::from(e.into_error()).context(format!("write {}", dest.display()))
        })?;
        f.sync_all()
            .with_context(|| format!("fsync {}", dest.display()))?;
        let size = f.metadata()?.len();
        std::fs::rename(&tmp, dest).with_context(|| format!("rename to {}", dest.display()))?;
        Ok(size)
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res
}

fn copy_out(src: &Path, dest: &Path) -> Result<u64> {
    let tmp = berth::fsutil::temp_path(dest);
    let res = std::fs::copy(src, &tmp)
        .with_context(|| format!("write {}", dest.display()))
        .and_then(|n| {
            std::fs::File::open(&tmp)
                .and_then(|f| f.sync_all())
                .with_context(|| format!("fsync {}", dest.display()))?;
            std::fs::rename(&tmp, dest).with_context(|| format!("rename to {}", dest.display()))?;
            Ok(n)
        });
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res
}

/// The build root and what happens to it at the end.
struct WorkRoot {
    path: PathBuf,
    /// Made by this run (so it may be removed), not given with --root.
    ours: bool,
    keep: bool,
}

impl WorkRoot {
    /// Remove it unless kept or given; a sentence for messages either way.
    fn finish(&self) -> String {
        if !self.ours {
            return format!("the root {} is left as it is", self.path.display());
        }
        if self.keep {
            return format!("the root is kept for inspection at {}", self.path.display());
        }
        let mounts = berth::fsutil::mountinfo::mounts_under(&self.path);
        if !mounts.is_empty() {
            return format!(
                "the root is left at {}: {} is still mounted under it (unmount, then remove it)",
                self.path.display(),
                mounts[0].display()
            );
        }
        match std::fs::remove_dir_all(&self.path) {
            Ok(()) => "the root was removed (--keep-root keeps it for inspection)".to_string(),
            Err(e) => format!(
                "the root {} could not be removed: {}",
                self.path.display(),
                Error::from(e)
            ),
        }
    }
}

fn parse_env(list: &[String]) -> Result<Vec<(String, String)>> {
    list.iter()
        .map(|s| {
            s.split_once('=')
                .filter(|(k, _)| !k.is_empty())
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .ok_or_else(|| Error::usage(format!("--env {s:?}: expected KEY=VALUE")))
        })
        .collect()
}

pub fn main(name: &str, args: &[String]) -> Result<u8> {
    let a: Args = match crate::applets::parse_args(name, args) {
        Ok(a) => a,
        Err(code) => return Ok(code),
    };
    berth::log::init_cli();
    let overrides = parse_env(&a.env)?;
    let recipe = Recipe::load(&a.recipe, &overrides)?;
    let format = match (&a.format, recipe.output.format) {
        (Some(f), _) => Format::parse(f)?,
        (None, Some(f)) => f,
        (None, None) => Format::Docker,
    };
    let tag = a.tag.clone().or(recipe.output.tag.clone());
    let tag = match tag {
        Some(t) => {
            let r = berth::reference::Reference::parse(&t)?;
            Some(format!(
                "{}:{}",
                r.name(),
                r.tag.as_deref().unwrap_or("latest")
            ))
        }
        None => None,
    };
    let out = Outputs {
        tag,
        tar: a.tar.clone().or(recipe.output.tar.clone()),
        oci: a.oci.clone().or(recipe.output.oci.clone()),
        format,
        level: a.level,
    };
    if !(1..=9).contains(&out.level) {
        return Err(Error::usage(format!(
            "--level {}: gzip levels are 1 to 9",
            out.level
        )));
    }
    let missing = recipe.missing_sources();
    if a.check {
        for m in &missing {
            eprintln!("note: {m} (here)");
        }
        let s = &recipe.stages;
        let layers: Vec<String> = recipe
            .layers
            .iter()
            .map(|l| match l.stages.len() {
                1 => format!("{} ({})", l.name, s[l.stages.start].name),
                _ => format!(
                    "{} ({}..{})",
                    l.name,
                    s[l.stages.start].name,
                    s[l.stages.end - 1].name
                ),
            })
            .collect();
        let plural = |n: usize, w: &str| format!("{n} {w}{}", if n == 1 { "" } else { "s" });
        println!(
            "{}: ok: {:?}, {} in {}{}{}",
            a.recipe.display(),
            recipe.name,
            plural(s.len(), "stage"),
            plural(layers.len(), "layer"),
            if layers.is_empty() {
                String::new()
            } else {
                format!(": {}", layers.join(", "))
            },
            recipe
                .base
                .as_deref()
                .map(|b| format!(", on {b}"))
                .unwrap_or_default()
        );
        return Ok(0);
    }
    if !berth::sys::is_root() {
        return Err(Error::new(
            Kind::Denied,
            "must run as root (it makes device nodes, sets owners and runs chroot stages)",
        ));
    }
    if let Some(m) = missing.first() {
        return Err(Error::new(Kind::NotFound, m.clone()));
    }
    if !out.image() && out.tar.is_none() {
        return Err(Error::usage(
            "nothing to write: give --tag NAME:TAG, --tar FILE or --oci DIR (or output: in the recipe)",
        ));
    }
    if a.root.is_some() && recipe.base.is_some() {
        return Err(Error::usage(
            "--root builds in an existing directory: it cannot start from a base image too",
        ));
    }
    // Outputs are written at the end: a wrong path must not cost the build.
    if let Some(t) = &out.tar {
        let dir = t
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        if !dir.is_dir() {
            return Err(Error::usage(format!(
                "--tar {}: the directory {} does not exist",
                t.display(),
                dir.display()
            )));
        }
    }
    if let Some(o) = &out.oci
        && std::fs::read_dir(o).is_ok_and(|mut d| d.next().is_some())
    {
        return Err(Error::new(
            Kind::Conflict,
            format!(
                "--oci {}: exists and is not empty; give a new directory",
                o.display()
            ),
        ));
    }
    // Modes of what stages create must not depend on the caller's umask.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o022));
    let store = LocalStore::open(&root_from(a.graph.as_deref()))?;
    let created = match recipe.epoch {
        Some(e) => e,
        None => {
            if std::env::var_os("SOURCE_DATE_EPOCH").is_none() {
                eprintln!(
                    "note: no epoch in the recipe and no SOURCE_DATE_EPOCH: the image is dated now and will not be reproducible"
                );
            }
            default_created()?
        }
    };
    let work = match &a.root {
        Some(r) => {
            let p = std::fs::canonicalize(r).with_context(|| format!("--root {}", r.display()))?;
            if !p.is_dir() {
                return Err(Error::usage(format!(
                    "--root {}: not a directory",
                    r.display()
                )));
            }
            WorkRoot {
                path: p,
                ours: false,
                keep: true,
            }
        }
        None => {
            let p = store
                .root()
                .join("tmp")
                .join(format!("mkimage-{}", berth::util::uuid4()));
            {
                use std::os::unix::fs::DirBuilderExt;
                std::fs::DirBuilder::new()
                    .mode(0o755)
                    .create(&p)
                    .with_context(|| format!("create {}", p.display()))?;
            }
            let p = std::fs::canonicalize(&p).with_context(|| format!("{}", p.display()))?;
            WorkRoot {
                path: p,
                ours: true,
                keep: a.keep_root,
            }
        }
    };
    let res = build(&recipe, &store, &work.path, &out, created);
    let note = work.finish();
    match res {
        Ok(()) => {
            if work.ours && work.keep {
                eprintln!("{note}");
            }
            Ok(0)
        }
        Err(e) => {
            let kind = e.kind();
            Err(Error::new(kind, format!("{e}\n{note}")))
        }
    }
}

fn build(
    recipe: &Recipe,
    store: &LocalStore,
    root_dir: &Path,
    out: &Outputs,
    created: i64,
) -> Result<()> {
    let started = Instant::now();
    // Held from the first blob to the tag, so an rmi's garbage collection
    // never sweeps a layer of this build.
    let _lease = if out.image() {
        Some(store.writer_lease()?)
    } else {
        None
    };
    let root = Root::new(root_dir);
    let mut rows: Vec<Row> = Vec::new();
    let mut base_layers: Vec<(Digest, u64, Digest, History)> = Vec::new();
    let mut run = RunConfig::default();
    if let Some(b) = &recipe.base {
        let t = Instant::now();
        let d = store.resolve(b)?.ok_or_else(|| {
            Error::not_found(format!(
                "base image {b} is not in the local store: pull or import it first"
            ))
        })?;
        let img = store.image(&d)?;
        eprintln!("==> base {b}: {} layers", img.layers().len());
        let hist: Vec<History> = img
            .config
            .history
            .iter()
            .filter(|h| h.empty_layer != Some(true))
            .cloned()
            .collect();
        berth::image::unpack_flat(store, &img, &format!("base image {b}"), root_dir)?;
        for (i, l) in img.layers().iter().enumerate() {
            let diff_id = img.config.rootfs.diff_ids[i].clone();
            let h = if hist.len() == img.layers().len() {
                hist[i].clone()
            } else {
                History {
                    created_by: Some(format!("layer {} of {b}", i + 1)),
                    ..Default::default()
                }
            };
            base_layers.push((l.digest.clone(), l.size, diff_id, h));
        }
        run = img.config.config.clone().unwrap_or_default();
        let tree = walk(root_dir)?;
        rows.push(Row {
            stage: format!("(base {b})"),
            kind: "base",
            size: tree.bytes(),
            delta: tree.bytes() as i64,
            files: tree.len(),
            secs: t.elapsed().as_secs_f64(),
        });
    }
    // What the first layer is measured against: the base image's tree, or
    // nothing — a --root directory's own contents belong in the image too.
    let mut current = walk(root_dir)?;
    let mut lower = if recipe.base.is_some() {
        current.clone()
    } else {
        Tree::default()
    };
    let mut stage_env = recipe.env.clone();
    stage_env.push(("SOURCE_DATE_EPOCH".into(), created.to_string()));
    let ctx = stage::Ctx {
        root: &root,
        recipe_dir: &recipe.dir,
        env: &stage_env,
        sys: &berth::sys::Linux,
    };
    let total = recipe.stages.len();
    // (layer name, the stages it holds, the packed layer)
    let mut packed: Vec<(String, String, Packed)> = Vec::new();
    for layer in &recipe.layers {
        for si in layer.stages.clone() {
            let st = &recipe.stages[si];
            let kind = st.action.kind();
            eprintln!(
                "==> [{}/{total}] {} ({kind}, {})",
                si + 1,
                st.name,
                st.origin
            );
            let t = Instant::now();
            stage::run(&ctx, st).map_err(|e| {
                let kind = e.kind();
                Error::new(
                    kind,
                    format!(
                        "stage {:?} ({kind_s} at {}) {e}",
                        st.name,
                        st.origin,
                        kind_s = st.action.kind()
                    ),
                )
            })?;
            let secs = t.elapsed().as_secs_f64();
            // A mount left inside the root (a bind of the host's yum cache, say) would
            // be packed, or have its host files removed by a later stage: stop here.
            if let Some(m) = berth::fsutil::mountinfo::mounts_under(root_dir)
                .into_iter()
                .find(|m| m != root_dir)
            {
                return Err(Error::invalid(format!(
                    "stage {:?} ({}) left {} mounted inside the root; unmount it in that stage",
                    st.name,
                    st.origin,
                    m.display()
                )));
            }
            let prev = current.bytes();
            current =
                walk(root_dir).map_err(|e| e.context(format!("after stage {:?}", st.name)))?;
            let row = Row {
                stage: st.name.clone(),
                kind,
                size: current.bytes(),
                delta: current.bytes() as i64 - prev as i64,
                files: current.len(),
                secs,
            };
            eprintln!(
                "<== {}: {} ({}), {} files, {:.1}s",
                row.stage,
                berth::util::human_size(row.size),
                signed(row.delta),
                row.files,
                row.secs
            );
            rows.push(row);
        }
        if out.image() {
            let changes = lower.diff(&current, root_dir);
            let p = pack_layer(store, root_dir, &changes, created, out.level)
                .map_err(|e| e.context(format!("packing layer {:?}", layer.name)))?;
            eprintln!(
                "==> layer {}: {} entries, {} tar, {} gzip, {} ({:.1}s)",
                layer.name,
                p.entries,
                berth::util::human_size(p.tar_size),
                berth::util::human_size(p.size),
                p.digest,
                p.secs
            );
            let stages: Vec<&str> = recipe.stages[layer.stages.clone()]
                .iter()
                .map(|s| s.name.as_str())
                .collect();
            packed.push((layer.name.clone(), stages.join(", "), p));
        }
        lower = current.clone();
    }
    if recipe.layers.is_empty() && out.image() {
        // No stages (packing a --root as it is): one layer holds the whole tree.
        let changes = lower.diff(&current, root_dir);
        let p = pack_layer(store, root_dir, &changes, created, out.level)
            .map_err(|e| e.context("packing the root"))?;
        packed.push((recipe.name.clone(), "the root as it is".into(), p));
    }
    let mut report = Vec::new();
    // The whole root for import: the layer itself when it is the only one.
    let mut tar_line = None;
    if let Some(dest) = &out.tar {
        let t = Instant::now();
        let size = match packed.as_slice() {
            [(_, _, only)] if base_layers.is_empty() => {
                copy_out(&store.blob_path(&only.digest), dest)?
            }
            _ => pack_file(dest, root_dir, &current, created, out.level)?,
        };
        tar_line = Some(format!(
            "tar {}: {}, {} entries, {:.1}s",
            dest.display(),
            berth::util::human_size(size),
            current.len(),
            t.elapsed().as_secs_f64()
        ));
    }
    if out.image() {
        let mut labels = run.labels.take().unwrap_or_default();
        labels.extend(recipe.config.labels.clone().unwrap_or_default());
        labels.insert("io.berth.mkimage.recipe".into(), recipe.name.clone());
        labels.insert("io.berth.mkimage.stages".into(), stages_label(&rows));
        merge_config(&mut run, &recipe.config);
        run.labels = Some(labels);
        let mut layers = base_layers.clone();
        for (lname, stages, p) in &packed {
            layers.push((
                p.digest.clone(),
                p.size,
                p.diff_id.clone(),
                History {
                    created: Some(berth::util::rfc3339(created)),
                    created_by: Some(format!("berth mkimage {}: {stages}", recipe.name)),
                    comment: Some(format!("layer {lname}")),
                    ..Default::default()
                },
            ));
        }
        let (manifest, config) = assemble(store, out.format, created, run, &layers)?;
        let size: u64 = packed.iter().map(|(_, _, p)| p.tar_size).sum::<u64>()
            + recipe
                .base
                .as_ref()
                .and_then(|b| store.resolve(b).ok().flatten())
                .and_then(|d| store.refs().ok()?.images.get(&d)?.size)
                .unwrap_or(0);
        let names: Vec<String> = out.tag.iter().cloned().collect();
        store.tag(
            &manifest,
            &names,
            ImageMeta {
                size: Some(size),
                index: None,
            },
        )?;
        if let Some(dir) = &out.oci {
            berth::image::archive::save_dir(
                store,
                &[berth::image::archive::SaveItem {
                    manifest: manifest.clone(),
                    tags: names.clone(),
                }],
                dir,
            )?;
            report.push(format!("oci {}: written", dir.display()));
        }
        report.push(format!(
            "image {}: manifest {manifest}, id {config}",
            out.tag.as_deref().unwrap_or("(untagged)")
        ));
    }
    let stdout = std::io::stdout();
    let mut o = stdout.lock();
    print_table(&mut o, &rows)?;
    if !packed.is_empty() {
        writeln!(o)?;
        let w = packed
            .iter()
            .map(|(n, _, _)| n.len())
            .max()
            .unwrap_or(5)
            .max(5);
        writeln!(
            o,
            "{:<w$}  {:>8}  {:>9}  {:>9}  {:<19}  {:>8}",
            "LAYER", "ENTRIES", "TAR", "GZIP", "DIGEST", "SECONDS"
        )?;
        for (name, _, p) in &packed {
            writeln!(
                o,
                "{:<w$}  {:>8}  {:>9}  {:>9}  {:<19}  {:>8.1}",
                name,
                p.entries,
                berth::util::human_size(p.tar_size),
                berth::util::human_size(p.size),
                &p.digest.to_string()[..19],
                p.secs
            )?;
        }
    }
    writeln!(o)?;
    if let Some(l) = tar_line {
        writeln!(o, "{l}")?;
    }
    for l in report {
        writeln!(o, "{l}")?;
    }
    writeln!(o, "built in {:.1}s", started.elapsed().as_secs_f64())?;
    Ok(())
}

// The recipe's config over the base's: set fields replace, Env merges by name.
fn merge_config(run: &mut RunConfig, r: &RunConfig) {
    if r.cmd.is_some() {
        run.cmd = r.cmd.clone();
    }
    if r.entrypoint.is_some() {
        run.entrypoint = r.entrypoint.clone();
        // as docker: a new entrypoint drops the base's command unless given
        if r.cmd.is_none() {
            run.cmd = None;
        }
    }
    if let Some(env) = &r.env {
        let list = run.env.get_or_insert_with(Vec::new);
        for e in env {
            let k = e.split('=').next().unwrap_or("");
            list.retain(|x| x.split('=').next() != Some(k));
            list.push(e.clone());
        }
    }
    for (dst, src) in [
        (&mut run.working_dir, &r.working_dir),
        (&mut run.user, &r.user),
        (&mut run.stop_signal, &r.stop_signal),
    ] {
        if src.is_some() {
            *dst = src.clone();
        }
    }
    if let Some(p) = &r.exposed_ports {
        run.exposed_ports
            .get_or_insert_with(Default::default)
            .extend(p.clone());
    }
    if let Some(v) = &r.volumes {
        run.volumes
            .get_or_insert_with(Default::default)
            .extend(v.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_merges_over_the_base() {
        let mut base = RunConfig {
            cmd: Some(vec!["/bin/sh".into()]),
            env: Some(vec!["PATH=/bin".into(), "A=1".into()]),
            ..Default::default()
        };
        let r = RunConfig {
            entrypoint: Some(vec!["/usr/bin/dumb-init".into()]),
            env: Some(vec!["A=2".into()]),
            user: Some("condor".into()),
            ..Default::default()
        };
        merge_config(&mut base, &r);
        assert_eq!(base.cmd, None);
        assert_eq!(base.env.unwrap(), ["PATH=/bin", "A=2"]);
        assert_eq!(base.user.as_deref(), Some("condor"));
    }

    #[test]
    fn label_has_stage_names_and_kinds_only() {
        let rows = [Row {
            stage: "a".into(),
            kind: "run",
            size: 10,
            delta: 10,
            files: 2,
            secs: 1.5,
        }];
        // no seconds, and no sizes or counts: those depend on the build host
        assert_eq!(stages_label(&rows), r#"[{"stage":"a","kind":"run"}]"#);
    }
}

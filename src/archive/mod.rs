//! Layer archives: deterministic gzip ([`gzip`]), a validating pass-through that
//! turns an untrusted rootfs tarball into a layer, a safe extractor, and the
//! writing side: directory snapshots and their differences ([`tree`]) packed into
//! reproducible tars ([`writer`]).
//!
//! The extractor has three uses and one copy of the rules: layers flattened one
//! over another into a root ([`extract`], mkimage), image archives of plain files
//! ([`extract_files`], load), and one layer on its own in overlayfs' form for the
//! engine's layer cache ([`extract_overlay`]).
//!
//! Safety rule for every tar berth reads: no entry may leave its root — no `..`
//! component, no write through a symlink, no hard link to outside. A violation is
//! an error naming the entry, never a silent skip.

pub mod gzip;
pub mod tree;
pub mod writer;

use crate::digest::{Algorithm, Digest, Hasher};
use crate::error::{Context, Error, Kind, Result};
use std::io::{self, Read, Write};
use std::path::{Component, Path, PathBuf};

/// What a pass over a tar stream found.
#[derive(Debug, Clone)]
pub struct TarSummary {
    /// sha256 of the uncompressed tar bytes (the layer's diff_id).
    pub diff_id: Digest,
    /// Uncompressed size in bytes.
    pub size: u64,
    pub entries: u64,
}

/// What GNU sparse entries may claim together. A sparse entry's apparent size
/// costs almost nothing in the archive or, unpacked, on disk (the tar crate
/// re-creates the holes), but every later reader of the file — a copy, a
/// commit, a `save` — meets the full size: a 1 TiB claim is a disk bomb one
/// step later. So the claims of one archive, summed, must fit the limit of the
/// unpack they are part of (free space where it lands, or the caller's bound).
struct SparseBudget {
    left: u64,
    limit: u64,
    why: &'static str,
}

impl SparseBudget {
    fn new(limit: u64, why: &'static str) -> Self {
        SparseBudget {
            left: limit,
            limit,
            why,
        }
    }

    // Where nothing is unpacked yet, the free space of the nearest existing
    // directory above `dest` is the one that will be filled.
    fn free_at(dest: &Path) -> u64 {
        dest.ancestors()
            .find_map(crate::fsutil::free_space)
            .unwrap_or(u64::MAX)
    }

    fn take(&mut self, entry: &Path, size: u64) -> Result<()> {
        if size > self.left {
            return Err(Error::new(
                Kind::Unsupported,
                format!(
                    "tar entry {}: a sparse file claiming {} ({size} bytes) is more than the {} ({} bytes) {}; refused",
                    entry.display(),
                    crate::util::human_size(size),
                    crate::util::human_size(self.limit),
                    self.limit,
                    self.why
                ),
            ));
        }
        self.left -= size;
        Ok(())
    }
}

/// Most components an entry name may have (so a file may sit 255 directories
/// down, a directory be the 256th). Every directory above an entry
/// is looked up, created and remembered, each by its whole path: a name 2000
/// deep costs millions of lookups and megabytes, and a layer of such names
/// hours and gigabytes. Real trees (npm's deepest included) stay far below.
pub const MAX_DEPTH: usize = 256;

/// Normalise an entry path to a relative path inside the root, or refuse it.
pub fn safe_relative(p: &Path) -> Result<PathBuf> {
    let mut out = PathBuf::new();
    let mut depth = 0;
    for c in p.components() {
        match c {
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
            Component::Normal(n) => {
                depth += 1;
                if depth > MAX_DEPTH {
                    let shown: String = p.to_string_lossy().chars().take(80).collect();
                    return Err(Error::invalid(format!(
                        "tar entry {shown:?}…: more than {MAX_DEPTH} directories deep"
                    )));
                }
                out.push(n)
            }
            Component::ParentDir => {
                return Err(Error::invalid(format!(
                    "tar entry {:?} leaves its root (..)",
                    p.display().to_string()
                )));
            }
        }
    }
    Ok(out)
}

/// What an entry of a layer was, for checking the entries after it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Seen {
    Dir,
    Symlink,
    Other,
}

/// The extractor's rules, checked on a tar stream alone: what passes here
/// unpacks (into an empty root) without an error, so a layer that would be
/// refused later is never stored in the first place.
#[derive(Default)]
struct Policy {
    seen: std::collections::HashMap<PathBuf, Seen>,
}

impl Policy {
    fn check(&mut self, rel: &Path, kind: tar::EntryType, link: Option<&Path>) -> Result<()> {
        let mut cur = PathBuf::new();
        let comps: Vec<_> = rel.components().collect();
        for c in &comps[..comps.len().saturating_sub(1)] {
            cur.push(c);
            match self.seen.get(&cur) {
                Some(Seen::Symlink) => {
                    return Err(Error::invalid(format!(
                        "tar entry {} would be written through the symlink {}",
                        rel.display(),
                        cur.display()
                    )));
                }
                Some(Seen::Other) => {
                    return Err(Error::invalid(format!(
                        "tar entry {} needs {} to be a directory",
                        rel.display(),
                        cur.display()
                    )));
                }
                _ => {}
            }
        }
        let name = rel
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if let Some(victim) = name.strip_prefix(".wh.") {
            if name != ".wh..wh..opq"
                && (victim.is_empty() || victim == "." || victim == ".." || victim.contains('/'))
            {
                return Err(Error::invalid(format!(
                    "tar entry {}: a whiteout of {victim:?} is not allowed",
                    rel.display()
                )));
            }
            return Ok(());
        }
        if kind.is_hard_link() {
            let target = link.ok_or_else(|| {
                Error::invalid(format!("hard link {} without target", rel.display()))
            })?;
            let t = safe_relative(target)
                .map_err(|e| e.context(format!("hard link {}", rel.display())))?;
            match self.seen.get(&t) {
                Some(Seen::Other) | Some(Seen::Symlink) => {}
                _ => {
                    return Err(Error::invalid(format!(
                        "hard link {} to {}, which is not a file earlier in the archive",
                        rel.display(),
                        t.display()
                    )));
                }
            }
        }
        let seen = if kind.is_dir() {
            Seen::Dir
        } else if kind.is_symlink() {
            Seen::Symlink
        } else {
            Seen::Other
        };
        // A directory named again stays a directory; anything else replaces.
        if !(seen == Seen::Dir && self.seen.get(rel) == Some(&Seen::Dir)) {
            if self.seen.get(rel) == Some(&Seen::Dir) {
                // Replacing a directory drops what was under it.
                self.seen.retain(|p, _| !p.starts_with(rel) || p == rel);
            }
            self.seen.insert(rel.to_path_buf(), seen);
        }
        Ok(())
    }
}

/// Reads from `inner` and copies everything read into `out` and a hasher.
struct Tee<R, W> {
    inner: R,
    out: W,
    hasher: Hasher,
    count: u64,
}

impl<R: Read, W: Write> Read for Tee<R, W> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.out.write_all(&buf[..n])?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

/// Copy a tar stream to `out` byte for byte while checking that it is a complete,
/// well-formed tar whose entries stay inside their root. Errors name the entry or
/// say the archive is truncated. GNU sparse entries may claim `max_sparse`
/// bytes of apparent size between them (what they would unpack to).
pub fn copy_validated<R: Read, W: Write>(
    input: R,
    out: W,
    max_sparse: u64,
) -> Result<(TarSummary, W)> {
    let tee = Tee {
        inner: input,
        out,
        hasher: Hasher::new(Algorithm::Sha256),
        count: 0,
    };
    let mut ar = tar::Archive::new(tee);
    let mut entries = 0u64;
    let mut policy = Policy::default();
    let mut sparse = SparseBudget::new(max_sparse, "this layer may unpack to");
    let saw_end;
    {
        let iter = ar
            .entries()
            .map_err(|e| Error::with_source(Kind::Invalid, "not a tar archive", e))?;
        for e in iter {
            let mut e = e.map_err(|e| {
                Error::with_source(
                    Kind::Invalid,
                    format!("corrupt or truncated tar archive after {entries} entries"),
                    e,
                )
            })?;
            let path = e
                .path()
                .map_err(|err| {
                    Error::with_source(Kind::Invalid, "tar entry with an unreadable name", err)
                })?
                .into_owned();
            let rel = safe_relative(&path)?;
            if !rel.as_os_str().is_empty() {
                let link = e.link_name().ok().flatten().map(|l| l.into_owned());
                policy.check(&rel, e.header().entry_type(), link.as_deref())?;
            }
            if e.header().entry_type().is_gnu_sparse() {
                sparse.take(&path, e.size())?;
                // Its holes read as zeros: reading them through would be
                // reading the whole claim. The archive skips the stored part,
                // and a short archive fails at the next header instead.
                entries += 1;
                continue;
            }
            // Read the data through, so a short archive fails here and not later.
            let want = e.size();
            let got = io::copy(&mut e, &mut io::sink()).map_err(|err| {
                Error::with_source(
                    Kind::Invalid,
                    format!("truncated tar archive in entry {}", path.display()),
                    err,
                )
            })?;
            if got != want {
                return Err(Error::invalid(format!(
                    "truncated tar archive: entry {} has {got} of {want} bytes",
                    path.display()
                )));
            }
            entries += 1;
        }
        saw_end = true;
    }
    let mut tee = ar.into_inner();
    // The end-of-archive blocks and any padding after them belong to the layer
    // too, but nothing else may: tools that read past the marker (GNU tar -i,
    // some layer appliers) would unpack entries no check here has seen.
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = tee
            .read(&mut buf)
            .context("reading the end of the tar archive")?;
        if n == 0 {
            break;
        }
        if buf[..n].iter().any(|&b| b != 0) {
            return Err(Error::invalid(format!(
                "data after the tar end-of-archive marker (after {entries} entries): two archives concatenated? Give one archive"
            )));
        }
    }
    if !saw_end || (entries == 0 && tee.count < 1024) {
        return Err(Error::invalid(
            "not a tar archive (no entries and no end-of-archive marker)",
        ));
    }
    let summary = TarSummary {
        diff_id: tee.hasher.finish(),
        size: tee.count,
        entries,
    };
    Ok((summary, tee.out))
}

/// Unpack a tar stream under `dest`, refusing anything that would leave it.
/// Handles OCI whiteouts (`.wh.NAME` deletes NAME, `.wh..wh..opq` empties the
/// directory). Ownership and device nodes are applied only when running as root.
pub fn extract<R: Read>(input: R, dest: &Path) -> Result<u64> {
    unpack(input, dest, Mode::Flatten, None)
}

/// Unpack an archive of plain files (an image archive for `load`): directories,
/// regular files, hard links and symlinks that stay inside `dest`; no devices,
/// no whiteouts, no owners, no set-id or world-writable modes. What cannot be in
/// such an archive is an error naming the entry. Sparse files may claim at
/// most `max_sparse` bytes between them (and no more than `dest` has free).
pub fn extract_files<R: Read>(input: R, dest: &Path, max_sparse: Option<u64>) -> Result<u64> {
    unpack(input, dest, Mode::Files, max_sparse)
}

/// Unpack one layer on its own into the empty (or missing) directory `dest`, in
/// the form overlayfs reads as a lowerdir: `.wh.NAME` becomes a character device
/// 0/0 named NAME, `.wh..wh..opq` sets `trusted.overlay.opaque=y` on its
/// directory, and nothing is ever removed for a whiteout (the lower layers are
/// other directories). Owners, modes with set-id bits, times, device nodes,
/// hard links to earlier entries of the layer and extended attributes from PAX
/// `SCHILY.xattr.*` records (file capabilities among them) are kept. Needs root.
///
/// Returns the sha256 of the whole uncompressed stream (its diff_id), hashed on
/// the way: the caller compares it with what the image config promises.
pub fn extract_overlay<R: Read>(input: R, dest: &Path) -> Result<TarSummary> {
    if !nix::unistd::geteuid().is_root() {
        return Err(Error::new(
            Kind::Denied,
            format!(
                "unpacking a layer into {} needs root (owners, device nodes and whiteouts): run as root",
                dest.display()
            ),
        ));
    }
    // Everything under `dest` must be this layer's: whiteouts and hard links
    // rely on it, and a cached layer must not mix with another's leftovers.
    match std::fs::read_dir(dest) {
        Ok(mut rd) => {
            if rd.next().is_some() {
                return Err(Error::invalid(format!(
                    "{}: a layer is unpacked into an empty directory only",
                    dest.display()
                )));
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::from(e).context(format!("read {}", dest.display()))),
    }
    let mut tee = Tee {
        inner: input,
        out: io::sink(),
        hasher: Hasher::new(Algorithm::Sha256),
        count: 0,
    };
    let entries = unpack(&mut tee, dest, Mode::Overlay, None)?;
    // The end-of-archive blocks and any padding are part of the diff_id too.
    io::copy(&mut tee, &mut io::sink()).context("reading the end of the layer")?;
    Ok(TarSummary {
        diff_id: tee.hasher.finish(),
        size: tee.count,
        entries,
    })
}

// `..` from a symlink's directory must not climb above the root.
fn symlink_stays_inside(rel: &Path, target: &Path) -> bool {
    if target.is_absolute() {
        return false;
    }
    // Leading `..` only: after a name, `..` could climb through another link
    // (`q/a -> ..` makes `q/a/..` leave q), which a lexical count cannot see.
    let mut depth = rel.components().count() as i64 - 1;
    let mut seen_name = false;
    for c in target.components() {
        match c {
            Component::ParentDir if seen_name => return false,
            Component::ParentDir => depth -= 1,
            Component::Normal(_) => seen_name = true,
            _ => {}
        }
        if depth < 0 {
            return false;
        }
    }
    true
}

/// How [`unpack`] treats a stream: one set of safety rules, three uses.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Layers applied one over another into one root: whiteouts delete.
    Flatten,
    /// An image archive: plain files only.
    Files,
    /// One layer on its own, in overlayfs' form (see [`extract_overlay`]).
    Overlay,
}

fn unpack<R: Read>(input: R, dest: &Path, mode: Mode, max_sparse: Option<u64>) -> Result<u64> {
    let rootfs = mode != Mode::Files;
    let free = SparseBudget::free_at(dest);
    let mut sparse = match max_sparse {
        Some(n) if n < free => SparseBudget::new(n, "this archive may unpack to"),
        _ => SparseBudget::new(free, "free where it is unpacked"),
    };
    let overlay = mode == Mode::Overlay;
    if overlay {
        if let Some(p) = dest.parent() {
            std::fs::create_dir_all(p).with_context(|| format!("create {}", p.display()))?;
        }
        make_dirs(dest, Path::new(""))?;
    } else {
        std::fs::create_dir_all(dest).with_context(|| format!("create {}", dest.display()))?;
    }
    let root = rootfs && nix::unistd::geteuid().is_root();
    let mut ar = tar::Archive::new(input);
    ar.set_preserve_permissions(true);
    ar.set_preserve_mtime(true);
    // Extended attributes are written by hand, after chown: chown drops file
    // capabilities, and the tar crate would set them before it.
    ar.set_unpack_xattrs(false);
    let mut n = 0u64;
    let mut dir_times: Vec<(PathBuf, u64)> = Vec::new();
    // What this layer has put in place so far (whiteouts must spare it).
    let mut created: std::collections::HashSet<PathBuf> = std::collections::HashSet::new();
    for e in ar
        .entries()
        .map_err(|e| Error::with_source(Kind::Invalid, "not a tar archive", e))?
    {
        let mut e = e.map_err(|e| {
            Error::with_source(Kind::Invalid, "corrupt or truncated tar archive", e)
        })?;
        let raw = e
            .path()
            .map_err(|err| Error::with_source(Kind::Invalid, "unreadable entry name", err))?
            .into_owned();
        // A global PAX header describes the archive, it is no file.
        if overlay && e.header().entry_type().is_pax_global_extensions() {
            continue;
        }
        let rel = safe_relative(&raw)?;
        if rel.as_os_str().is_empty() {
            continue;
        }
        if overlay {
            reopen_whiteouts(dest, &rel)?;
        }
        check_no_symlink_parents(dest, &rel)?;
        let target = dest.join(&rel);
        let name = rel
            .file_name()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        // Whiteouts hide what lower layers have, never what this layer brings
        // (OCI image spec, layer.md).
        if rootfs && name == ".wh..wh..opq" {
            let dir = rel.parent().unwrap_or(Path::new(""));
            if overlay {
                mark_opaque(dest, dir)?;
                mark_created(&mut created, dir);
            } else {
                clear_lower(dest, dir, &created)?;
            }
            continue;
        }
        if let Some(victim) = name.strip_prefix(".wh.").filter(|_| rootfs) {
            if victim.is_empty() || victim == "." || victim == ".." || victim.contains('/') {
                return Err(Error::invalid(format!(
                    "tar entry {}: a whiteout of {victim:?} is not allowed",
                    rel.display()
                )));
            }
            let hidden = target.with_file_name(victim);
            if overlay {
                // What this layer already put there stays, hiding the lower
                // layers' entry by itself; its own directory of that name
                // shows only its own entries. A later entry of that name
                // replaces the whiteout as it would any file.
                match hidden.symlink_metadata() {
                    Err(_) => make_whiteout(dest, &rel.with_file_name(victim))?,
                    Ok(m) if m.is_dir() => mark_opaque(dest, &rel.with_file_name(victim))?,
                    Ok(_) => {}
                }
            } else if !created.contains(&rel.with_file_name(victim)) {
                remove_any(&hidden)?;
            }
            continue;
        }
        let kind = e.header().entry_type();
        if kind.is_gnu_sparse() {
            sparse.take(&rel, e.size())?;
        }
        if !rootfs {
            let allowed = kind.is_dir()
                || kind.is_file()
                || kind.is_hard_link()
                || kind.is_symlink()
                || kind == tar::EntryType::Continuous
                || kind.is_gnu_sparse();
            if !allowed {
                return Err(Error::invalid(format!(
                    "{}: an image archive holds only files and directories",
                    rel.display()
                )));
            }
            if kind.is_symlink() {
                let t = e
                    .link_name()
                    .ok()
                    .flatten()
                    .map(|t| t.into_owned())
                    .unwrap_or_default();
                if !symlink_stays_inside(&rel, &t) {
                    return Err(Error::invalid(format!(
                        "{}: symlink to {} leaves the archive",
                        rel.display(),
                        t.display()
                    )));
                }
            }
        }
        let xattrs = if overlay {
            pax_xattrs(&mut e, &rel)?
        } else {
            Vec::new()
        };
        let existing = target.symlink_metadata().ok();
        // A directory where this layer put a whiteout: the lower layers'
        // directory stays hidden, as the whiteout said.
        let over_whiteout = overlay && kind.is_dir() && existing.as_ref().is_some_and(is_whiteout);
        if existing.is_some() && !(kind.is_dir() && existing.as_ref().is_some_and(|m| m.is_dir())) {
            remove_any(&target)?;
        }
        if overlay {
            if let Some(p) = rel.parent() {
                make_dirs(dest, p)?;
            }
        } else if let Some(p) = target.parent() {
            std::fs::create_dir_all(p).with_context(|| format!("create {}", p.display()))?;
        }
        match kind {
            k if k.is_hard_link() => {
                let link = e.link_name().ok().flatten().ok_or_else(|| {
                    Error::invalid(format!("hard link {} without target", rel.display()))
                })?;
                let lrel = safe_relative(&link)
                    .map_err(|err| err.context(format!("hard link {}", rel.display())))?;
                check_no_symlink_parents(dest, &lrel)
                    .map_err(|err| err.context(format!("hard link {}", rel.display())))?;
                if overlay && !created.contains(&lrel) {
                    // One layer's directory holds that layer alone: a link to
                    // anything else is a link to nothing or to a whiteout.
                    return Err(Error::invalid(format!(
                        "hard link {} to {}, which is not an earlier entry of this layer",
                        rel.display(),
                        lrel.display()
                    )));
                }
                if !rootfs
                    && dest
                        .join(&lrel)
                        .symlink_metadata()
                        .is_ok_and(|m| m.file_type().is_symlink())
                {
                    // A second name for a symlink keeps its target, which may
                    // climb out from the new name's depth.
                    return Err(Error::invalid(format!(
                        "{}: a hard link to the symlink {} is not allowed in an image archive",
                        rel.display(),
                        lrel.display()
                    )));
                }
                if dest.join(&lrel).symlink_metadata().is_err() {
                    return Err(Error::invalid(format!(
                        "hard link {} to {}, which is in neither this layer nor one below it",
                        rel.display(),
                        lrel.display()
                    )));
                }
                std::fs::hard_link(dest.join(&lrel), &target)
                    .with_context(|| format!("link {}", rel.display()))?;
            }
            k if k.is_character_special() || k.is_block_special() || k.is_fifo() => {
                if !root && !k.is_fifo() {
                    log::debug!("skipping device node {} (not root)", rel.display());
                    continue;
                }
                let h = e.header();
                let node = if k.is_fifo() {
                    crate::sys::NodeKind::Fifo
                } else if k.is_block_special() {
                    crate::sys::NodeKind::Block
                } else {
                    crate::sys::NodeKind::Char
                };
                let op = crate::sys::Op::Mknod {
                    path: target.clone(),
                    kind: node,
                    mode: h.mode().unwrap_or(0o644) & 0o7777,
                    major: h.device_major().ok().flatten().unwrap_or(0) as u64,
                    minor: h.device_minor().ok().flatten().unwrap_or(0) as u64,
                };
                crate::sys::apply(&crate::sys::Linux, &[op])?;
                if overlay && let Ok(m) = h.mtime() {
                    use nix::sys::stat::{UtimensatFlags, utimensat};
                    use nix::sys::time::TimeSpec;
                    let t = TimeSpec::new(m as i64, 0);
                    utimensat(
                        nix::fcntl::AT_FDCWD,
                        &target,
                        &t,
                        &t,
                        UtimensatFlags::NoFollowSymlink,
                    )
                    .map_err(|err| {
                        Error::from(err).context(format!("set the time of {}", rel.display()))
                    })?;
                }
            }
            _ => {
                e.set_preserve_permissions(rootfs);
                e.unpack(&target).map_err(|err| {
                    Error::with_source(Kind::Io, format!("unpack {}", rel.display()), err)
                })?;
                if !rootfs && !kind.is_symlink() {
                    // no set-id bits or world-writable files from an untrusted archive
                    use std::os::unix::fs::PermissionsExt;
                    let exec = e.header().mode().unwrap_or(0) & 0o111 != 0;
                    let mode = if kind.is_dir() || exec { 0o755 } else { 0o644 };
                    let _ =
                        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(mode));
                }
                if kind.is_dir()
                    && let Ok(m) = e.header().mtime()
                {
                    dir_times.push((rel.clone(), m));
                }
            }
        }
        if over_whiteout {
            mark_opaque(dest, &rel)?;
        }
        // A hard link shares the inode its first name already set up; and what is
        // a symlink now must never be chmodded (chmod follows it, out of the root).
        let is_link_now = target
            .symlink_metadata()
            .is_ok_and(|m| m.file_type().is_symlink());
        if root && !kind.is_hard_link() {
            let h = e.header();
            if let (Ok(uid), Ok(gid)) = (h.uid(), h.gid()) {
                crate::sys::apply(
                    &crate::sys::Linux,
                    &[crate::sys::Op::Chown {
                        path: target.clone(),
                        uid: uid as u32,
                        gid: gid as u32,
                    }],
                )?;
                // chown clears set-id bits: put the mode back.
                if !is_link_now && let Ok(mode) = h.mode() {
                    use std::os::unix::fs::PermissionsExt;
                    let _ = std::fs::set_permissions(
                        &target,
                        std::fs::Permissions::from_mode(mode & 0o7777),
                    );
                }
            }
        }
        // Last: chown above drops `security.capability`.
        if !kind.is_hard_link() {
            for (key, value) in &xattrs {
                set_xattr(&target, key, value).map_err(|err| {
                    Error::from(err).context(format!(
                        "tar entry {}: set extended attribute {}",
                        rel.display(),
                        String::from_utf8_lossy(key)
                    ))
                })?;
            }
        }
        // The entry and, implicitly, every directory above it are this layer's.
        mark_created(&mut created, &rel);
        n += 1;
    }
    // Directory mtimes last: creating entries inside them changed them. Each
    // directory is reached component by component without following a symlink:
    // a later entry may have replaced it, or a parent, by a link out of the root.
    for (d, m) in dir_times.into_iter().rev() {
        use nix::sys::time::TimeSpec;
        let t = TimeSpec::new(m as i64, 0);
        if let Ok(fd) = crate::fsutil::open_dir_beneath(dest, &d) {
            let _ = nix::sys::stat::futimens(&fd, &t, &t);
        }
    }
    Ok(n)
}

// `rel` and every directory above it are this layer's.
fn mark_created(created: &mut std::collections::HashSet<PathBuf>, rel: &Path) {
    for a in rel.ancestors().filter(|a| !a.as_os_str().is_empty()) {
        if !created.insert(a.to_path_buf()) {
            break;
        }
    }
}

/// The overlay xattr namespace: the layer's own `trusted.overlay.*` records are
/// bookkeeping of the overlay it was built on (impure, origin, redirect, …) and
/// would make ours misread the layer, so they are dropped, as umoci does.
const OVERLAY_XATTRS: &[u8] = b"trusted.overlay.";

// The entry's extended attributes from its PAX `SCHILY.xattr.NAME` records.
fn pax_xattrs<R: Read>(e: &mut tar::Entry<'_, R>, rel: &Path) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let Some(exts) = e.pax_extensions().map_err(|err| {
        Error::with_source(
            Kind::Invalid,
            format!("tar entry {}: unreadable PAX records", rel.display()),
            err,
        )
    })?
    else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for x in exts {
        let x = x.map_err(|err| {
            Error::with_source(
                Kind::Invalid,
                format!("tar entry {}: malformed PAX record", rel.display()),
                err,
            )
        })?;
        let Some(key) = x.key_bytes().strip_prefix(b"SCHILY.xattr.") else {
            continue;
        };
        if key.starts_with(OVERLAY_XATTRS) {
            log::debug!(
                "tar entry {}: dropped {}",
                rel.display(),
                String::from_utf8_lossy(key)
            );
            continue;
        }
        if key.is_empty() || key.contains(&0) {
            return Err(Error::invalid(format!(
                "tar entry {}: an extended attribute with an empty or NUL name",
                rel.display()
            )));
        }
        out.push((key.to_vec(), x.value_bytes().to_vec()));
    }
    Ok(out)
}

// lsetxattr(2): on the link itself, never through it.
fn set_xattr(path: &Path, key: &[u8], value: &[u8]) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let p = std::ffi::CString::new(path.as_os_str().as_bytes())?;
    let k = std::ffi::CString::new(key)?;
    // SAFETY: both strings are NUL-terminated and outlive the call; the value
    // is read for exactly its length.
    let r = unsafe {
        libc::lsetxattr(
            p.as_ptr(),
            k.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

// Create `rel` under `dest` and any directory above it that is missing, as
// 0755 whatever the umask: a directory a layer implies without an entry of its
// own is seen in the container, where a 0700 one would lock its users out.
fn make_dirs(dest: &Path, rel: &Path) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let mut cur = dest.to_path_buf();
    let comps = std::iter::once(None).chain(rel.components().map(Some));
    for c in comps {
        if let Some(c) = c {
            cur.push(c);
        }
        match std::fs::symlink_metadata(&cur) {
            Ok(m) if m.is_dir() => continue,
            Ok(_) => {
                return Err(Error::invalid(format!(
                    "{} needs {} to be a directory",
                    rel.display(),
                    cur.display()
                )));
            }
            Err(_) => {}
        }
        std::fs::DirBuilder::new()
            .mode(0o755)
            .create(&cur)
            .with_context(|| format!("create {}", cur.display()))?;
        std::fs::set_permissions(&cur, std::fs::Permissions::from_mode(0o755))
            .with_context(|| format!("chmod {}", cur.display()))?;
    }
    Ok(())
}

fn is_whiteout(m: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    m.file_type().is_char_device() && m.rdev() == 0
}

// Directories above `rel` that this layer whited out earlier become its own
// directories again, opaque: the lower layers' stay hidden, as the whiteout said.
fn reopen_whiteouts(dest: &Path, rel: &Path) -> Result<()> {
    let mut cur = PathBuf::new();
    let comps: Vec<_> = rel.components().collect();
    for c in &comps[..comps.len().saturating_sub(1)] {
        cur.push(c);
        let host = dest.join(&cur);
        // Down real directories only, so no lookup here passes a symlink:
        // whatever else is on the way is for check_no_symlink_parents to refuse.
        match std::fs::symlink_metadata(&host) {
            Ok(m) if is_whiteout(&m) => {
                std::fs::remove_file(&host)
                    .with_context(|| format!("remove {}", host.display()))?;
                mark_opaque(dest, &cur)?;
            }
            Ok(m) if m.is_dir() => {}
            _ => break,
        }
    }
    Ok(())
}

// Overlay's whiteout: a character device 0/0 where the hidden entry's name is.
fn make_whiteout(dest: &Path, rel: &Path) -> Result<()> {
    if let Some(p) = rel.parent() {
        make_dirs(dest, p)?;
    }
    crate::sys::apply(
        &crate::sys::Linux,
        &[crate::sys::Op::Mknod {
            path: dest.join(rel),
            kind: crate::sys::NodeKind::Char,
            mode: 0,
            major: 0,
            minor: 0,
        }],
    )
    .map_err(|e| e.context(format!("whiteout of {}", rel.display())))
}

// Overlay's opaque directory: the xattr set on the directory itself, reached
// without following a symlink (a layer may have put one on the way).
fn mark_opaque(dest: &Path, dir: &Path) -> Result<()> {
    use std::os::fd::AsRawFd;
    make_dirs(dest, dir)?;
    let fd = crate::fsutil::open_dir_beneath(dest, dir)
        .with_context(|| format!("open {} to make it opaque", dir.display()))?;
    let (k, v) = (c"trusted.overlay.opaque", b"y");
    // SAFETY: a descriptor we own, a NUL-terminated name, a value of its length.
    let r = unsafe { libc::fsetxattr(fd.as_raw_fd(), k.as_ptr(), v.as_ptr().cast(), v.len(), 0) };
    if r != 0 {
        return Err(Error::from(io::Error::last_os_error()).context(format!(
            "mark {} opaque (trusted.overlay.opaque needs root and a filesystem with xattrs)",
            if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            }
            .display()
        )));
    }
    Ok(())
}

// Empty the directory `dir` (relative to `dest`) of everything lower layers put
// there, keeping what this layer created (and, in directories it created or
// kept, going on below).
fn clear_lower(
    dest: &Path,
    dir: &Path,
    created: &std::collections::HashSet<PathBuf>,
) -> Result<()> {
    let host = dest.join(dir);
    if !std::fs::symlink_metadata(&host).is_ok_and(|m| m.is_dir()) {
        return Ok(());
    }
    let Ok(rd) = std::fs::read_dir(&host) else {
        return Ok(());
    };
    for c in rd.flatten() {
        let rel = dir.join(c.file_name());
        if !created.contains(&rel) {
            remove_any(&c.path())?;
        } else if c.file_type().is_ok_and(|t| t.is_dir()) {
            clear_lower(dest, &rel, created)?;
        }
    }
    Ok(())
}

fn remove_any(p: &Path) -> Result<()> {
    match std::fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => {
            std::fs::remove_dir_all(p).with_context(|| format!("remove {}", p.display()))
        }
        Ok(_) => std::fs::remove_file(p).with_context(|| format!("remove {}", p.display())),
        Err(_) => Ok(()),
    }
}

// Every existing parent of `rel` under `root` must be a real directory: writing
// through a symlink planted by an earlier entry could land anywhere.
fn check_no_symlink_parents(root: &Path, rel: &Path) -> Result<()> {
    let mut cur = root.to_path_buf();
    let comps: Vec<_> = rel.components().collect();
    for c in &comps[..comps.len().saturating_sub(1)] {
        cur.push(c);
        match std::fs::symlink_metadata(&cur) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(Error::invalid(format!(
                    "tar entry {} would be written through the symlink {}",
                    rel.display(),
                    cur.display()
                )));
            }
            Ok(m) if !m.is_dir() => {
                return Err(Error::invalid(format!(
                    "tar entry {} needs {} to be a directory",
                    rel.display(),
                    cur.display()
                )));
            }
            _ => {}
        }
    }
    Ok(())
}

/// Open a possibly gzip-compressed stream as plain bytes (detected by content).
pub fn decompressed<R: Read + Send + 'static>(mut r: R) -> Result<Box<dyn Read + Send>> {
    let mut head = [0u8; 6];
    let mut got = 0;
    while got < head.len() {
        let n = r.read(&mut head[got..])?;
        if n == 0 {
            break;
        }
        got += n;
    }
    let prefix = io::Cursor::new(head[..got].to_vec());
    let chained = prefix.chain(r);
    if gzip::is_gzip(&head[..got]) {
        return Ok(Box::new(flate2::read::MultiGzDecoder::new(chained)));
    }
    if head[..got].starts_with(b"BZh")
        || head[..got].starts_with(&[0xfd, b'7', b'z', b'X', b'Z'])
        || head[..got].starts_with(&[0x28, 0xb5, 0x2f, 0xfd])
    {
        return Err(Error::new(
            Kind::Unsupported,
            "bzip2, xz and zstd input are not supported: decompress it or use gzip",
        ));
    }
    Ok(Box::new(chained))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, data) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_entry_type(tar::EntryType::Regular);
            // set_path refuses "..": write the raw name to test hostile archives
            let bytes = name.as_bytes();
            h.as_old_mut().name[..bytes.len()].copy_from_slice(bytes);
            h.set_cksum();
            b.append(&h, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn validated_copy_is_byte_exact_and_refuses_escapes() {
        let t = tar_of(&[("etc/hosts", b"127.0.0.1 localhost\n"), ("./bin/sh", b"x")]);
        let (s, out) = copy_validated(&t[..], Vec::new(), u64::MAX).unwrap();
        assert_eq!(out, t);
        assert_eq!(s.diff_id, Digest::sha256(&t));
        assert_eq!(s.entries, 2);
        let bad = tar_of(&[("../../etc/passwd", b"x")]);
        let e = copy_validated(&bad[..], Vec::new(), u64::MAX).unwrap_err();
        assert!(e.to_string().contains("leaves its root"), "{e}");
        let truncated = &t[..700];
        assert!(copy_validated(truncated, Vec::new(), u64::MAX).is_err());
        assert!(
            copy_validated(&b"definitely not a tar archive"[..], Vec::new(), u64::MAX).is_err()
        );
    }

    #[test]
    fn extract_refuses_symlink_tricks_and_applies_whiteouts() {
        let dir = std::env::temp_dir().join(format!("berth-x-{}", crate::util::uuid4()));
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        h.set_mode(0o777);
        b.append_link(&mut h, "evil", "/tmp").unwrap();
        let mut h = tar::Header::new_gnu();
        h.set_size(1);
        h.set_mode(0o644);
        b.append_data(&mut h, "evil/planted", &b"x"[..]).unwrap();
        let hostile = b.into_inner().unwrap();
        let e = extract(&hostile[..], &dir).unwrap_err();
        assert!(e.to_string().contains("through the symlink"), "{e}");
        assert!(!Path::new("/tmp/planted").exists());
        let _ = std::fs::remove_dir_all(&dir);

        let base = tar_of(&[("a/keep", b"1"), ("a/gone", b"2"), ("b/x", b"3")]);
        extract(&base[..], &dir).unwrap();
        let upper = tar_of(&[("a/.wh.gone", b""), ("b/.wh..wh..opq", b""), ("b/y", b"4")]);
        extract(&upper[..], &dir).unwrap();
        assert!(dir.join("a/keep").exists());
        assert!(!dir.join("a/gone").exists());
        assert!(!dir.join("b/x").exists());
        assert!(dir.join("b/y").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn whiteouts_cannot_name_the_parent_and_archives_hold_only_files() {
        // nested, so a regression could only ever empty this test's own directory
        let base = std::env::temp_dir().join(format!("berth-wh-{}", crate::util::uuid4()));
        let dir = base.join("root");
        let sibling = base.join("keep");
        std::fs::create_dir_all(&sibling).unwrap();
        let evil = tar_of(&[(".wh...", b"")]);
        assert!(extract(&evil[..], &dir).is_err());
        assert!(sibling.exists(), "a whiteout reached outside its root");
        // image archives: no devices, no links out, no set-id modes
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        b.append_link(&mut h, "a/out", "../../etc").unwrap();
        let out = b.into_inner().unwrap();
        let e = extract_files(&out[..], &dir.join("files"), None).unwrap_err();
        assert!(e.to_string().contains("leaves the archive"), "{e}");
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Block);
        h.set_size(0);
        h.set_mode(0o666);
        b.append_data(&mut h, "sda", std::io::empty()).unwrap();
        let dev = b.into_inner().unwrap();
        assert!(extract_files(&dev[..], &dir.join("files2"), None).is_err());
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(1);
        h.set_mode(0o4777);
        b.append_data(&mut h, "suid", &b"x"[..]).unwrap();
        let suid = b.into_inner().unwrap();
        extract_files(&suid[..], &dir.join("files3"), None).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(dir.join("files3/suid"))
                .unwrap()
                .permissions()
                .mode()
                & 0o7777,
            0o755
        );
        assert!(symlink_stays_inside(
            Path::new("a/b/link"),
            Path::new("../c")
        ));
        assert!(!symlink_stays_inside(Path::new("link"), Path::new("../c")));
        let _ = std::fs::remove_dir_all(&base);
    }

    #[test]
    fn a_hard_link_to_a_symlink_never_chmods_outside() {
        use std::os::unix::fs::PermissionsExt;
        let base = std::env::temp_dir().join(format!("berth-hl-{}", crate::util::uuid4()));
        let outside = base.join("outside-file");
        std::fs::create_dir_all(&base).unwrap();
        std::fs::write(&outside, "secret").unwrap();
        std::fs::set_permissions(&outside, std::fs::Permissions::from_mode(0o600)).unwrap();
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        h.set_mode(0o777);
        b.append_link(&mut h, "etc/tz", &outside).unwrap();
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Link);
        h.set_size(0);
        h.set_mode(0o666);
        b.append_link(&mut h, "x", "etc/tz").unwrap();
        let t = b.into_inner().unwrap();
        let _ = extract(&t[..], &base.join("root"));
        assert_eq!(
            std::fs::metadata(&outside).unwrap().permissions().mode() & 0o777,
            0o600,
            "host file re-moded"
        );
        // chains of links cannot climb out of an archive either
        assert!(!symlink_stays_inside(
            Path::new("p/x"),
            Path::new("q/a/../..")
        ));
        std::fs::remove_dir_all(&base).unwrap();
    }

    fn dir_entry(b: &mut tar::Builder<Vec<u8>>, name: &str, mtime: u64) {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_size(0);
        h.set_mode(0o755);
        h.set_mtime(mtime);
        b.append_data(&mut h, name, std::io::empty()).unwrap();
    }

    #[test]
    fn directory_times_never_reach_through_a_replaced_directory() {
        use std::os::unix::fs::MetadataExt;
        let base = std::env::temp_dir().join(format!("berth-dt-{}", crate::util::uuid4()));
        let outside = base.join("outside");
        std::fs::create_dir_all(outside.join("b")).unwrap();
        let before = std::fs::metadata(outside.join("b")).unwrap().mtime();
        let mut b = tar::Builder::new(Vec::new());
        dir_entry(&mut b, "a/", 1000);
        dir_entry(&mut b, "a/b/", 1000);
        // `a` becomes a symlink to a directory outside the root
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        h.set_mode(0o777);
        b.append_link(&mut h, "a", &outside).unwrap();
        let t = b.into_inner().unwrap();
        extract(&t[..], &base.join("root")).unwrap();
        assert_eq!(
            std::fs::metadata(outside.join("b")).unwrap().mtime(),
            before,
            "a directory outside the root got a layer's time"
        );
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn an_overlay_layer_goes_into_an_empty_directory_and_hashes_all_it_read() {
        let dir = std::env::temp_dir().join(format!("berth-ov-{}", crate::util::uuid4()));
        let t = tar_of(&[("a/.wh.b", b""), ("c", b"c")]);
        // padding after the end-of-archive marker is part of the diff_id
        let mut padded = t.clone();
        padded.extend_from_slice(&[0u8; 10240]);
        let s = extract_overlay(&padded[..], &dir.join("one")).unwrap();
        assert_eq!(s.diff_id, Digest::sha256(&padded));
        assert_eq!(s.size, padded.len() as u64);
        assert_eq!(s.entries, 1);
        let e = extract_overlay(&t[..], &dir.join("one")).unwrap_err();
        assert!(e.to_string().contains("empty directory"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn whiteouts_spare_their_own_layer() {
        let dir = std::env::temp_dir().join(format!("berth-op-{}", crate::util::uuid4()));
        let lower = tar_of(&[("d/old", b"1"), ("d/sub/old", b"2"), ("f", b"3")]);
        extract(&lower[..], &dir).unwrap();
        // the opaque marker and the whiteout come after this layer's own entries
        let upper = tar_of(&[
            ("d/new", b"4"),
            ("d/sub/new", b"5"),
            ("d/.wh..wh..opq", b""),
            ("g", b"6"),
            (".wh.g", b""),
            (".wh.f", b""),
        ]);
        extract(&upper[..], &dir).unwrap();
        assert!(dir.join("d/new").exists());
        assert!(dir.join("d/sub/new").exists());
        assert!(!dir.join("d/old").exists());
        assert!(
            !dir.join("d/sub/old").exists(),
            "lower content under a kept dir"
        );
        assert!(
            dir.join("g").exists(),
            "a whiteout removed its own layer's file"
        );
        assert!(!dir.join("f").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    // An old-GNU sparse entry: `data` at the end of a file of `real` bytes.
    fn sparse_tar(name: &str, real: u64, data: &[u8]) -> Vec<u8> {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::GNUSparse);
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        h.set_path(name).unwrap();
        let g = h.as_gnu_mut().unwrap();
        g.sparse[0].set_offset(real - data.len() as u64);
        g.sparse[0].set_length(data.len() as u64);
        g.set_real_size(real);
        h.set_cksum();
        let mut b = tar::Builder::new(Vec::new());
        b.append(&h, data).unwrap();
        b.into_inner().unwrap()
    }

    #[test]
    fn sparse_claims_past_the_unpack_limit_are_refused_by_name_everywhere() {
        use std::os::unix::fs::MetadataExt;
        let dir = std::env::temp_dir().join(format!("berth-sp-{}", crate::util::uuid4()));
        let small = sparse_tar("holey", 1 << 20, b"tail");
        extract(&small[..], &dir.join("ok")).unwrap();
        let m = std::fs::metadata(dir.join("ok/holey")).unwrap();
        assert_eq!(m.len(), 1 << 20);
        assert!(m.blocks() * 512 < 1 << 20, "the hole was written out");
        copy_validated(&small[..], Vec::new(), 1 << 20).unwrap();
        let bomb = sparse_tar("big", 1 << 50, b"tail");
        let named = |e: Error, entry: &str| {
            let e = e.to_string();
            assert!(
                e.contains(&format!("tar entry {entry}: a sparse file")),
                "{e}"
            );
            assert!(!e.contains('\n'), "{e}");
        };
        named(extract(&bomb[..], &dir.join("a")).unwrap_err(), "big");
        named(
            extract_overlay(&bomb[..], &dir.join("b")).unwrap_err(),
            "big",
        );
        named(
            extract_files(&bomb[..], &dir.join("c"), None).unwrap_err(),
            "big",
        );
        let e = extract_files(&small[..], &dir.join("d"), Some(1 << 19)).unwrap_err();
        named(e, "holey");
        named(
            copy_validated(&bomb[..], Vec::new(), 1 << 40).unwrap_err(),
            "big",
        );
        for d in ["a", "b", "c", "d"] {
            assert!(!dir.join(d).join("big").exists(), "{d}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn names_deeper_than_the_limit_are_refused_before_any_directory() {
        let dir = std::env::temp_dir().join(format!("berth-dp-{}", crate::util::uuid4()));
        let deep = "d/".repeat(MAX_DEPTH) + "f";
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(1);
        h.set_mode(0o644);
        b.append_data(&mut h, &deep, &b"x"[..]).unwrap();
        let t = b.into_inner().unwrap();
        let e = extract(&t[..], &dir).unwrap_err().to_string();
        assert!(e.contains("directories deep") && e.contains("d/d/"), "{e}");
        assert!(!dir.join("d").exists());
        let e = copy_validated(&t[..], Vec::new(), u64::MAX).unwrap_err();
        assert!(e.to_string().contains("directories deep"), "{e}");
        let ok = "d/".repeat(MAX_DEPTH - 1) + "f";
        let mut b = tar::Builder::new(Vec::new());
        b.append_data(&mut h, &ok, &b"x"[..]).unwrap();
        extract(&b.into_inner().unwrap()[..], &dir).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_validated_layer_has_nothing_after_its_end_and_nothing_the_extractor_refuses() {
        let good = tar_of(&[("etc/hosts", b"x")]);
        let evil = tar_of(&[("../../etc/passwd", b"y")]);
        let mut both = good.clone();
        both.extend_from_slice(&evil);
        let e = copy_validated(&both[..], Vec::new(), u64::MAX).unwrap_err();
        assert!(
            e.to_string().contains("after the tar end-of-archive"),
            "{e}"
        );
        // zero padding after the end is fine (and kept: it is part of the layer)
        let mut padded = good.clone();
        padded.extend_from_slice(&[0u8; 4096]);
        let (_, out) = copy_validated(&padded[..], Vec::new(), u64::MAX).unwrap();
        assert_eq!(out, padded);
        // a file through a symlink of the same archive, a hard link to nothing
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        b.append_link(&mut h, "lib", "/").unwrap();
        let mut h = tar::Header::new_gnu();
        h.set_size(1);
        h.set_mode(0o644);
        b.append_data(&mut h, "lib/x", &b"x"[..]).unwrap();
        let t = b.into_inner().unwrap();
        let e = copy_validated(&t[..], Vec::new(), u64::MAX).unwrap_err();
        assert!(e.to_string().contains("through the symlink"), "{e}");
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Link);
        h.set_size(0);
        b.append_link(&mut h, "x", "missing").unwrap();
        let t = b.into_inner().unwrap();
        let e = copy_validated(&t[..], Vec::new(), u64::MAX).unwrap_err();
        assert!(e.to_string().contains("not a file earlier"), "{e}");
        let bad_wh = tar_of(&[("a/.wh...", b"")]);
        assert!(copy_validated(&bad_wh[..], Vec::new(), u64::MAX).is_err());
    }
}

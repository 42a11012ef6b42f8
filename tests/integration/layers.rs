//! The engine's layer cache through the real store: hostile layers change nothing
//! outside their own directory, two cached layers mount as an overlay with the
//! whiteout and opaque semantics the image meant, and a leased image survives
//! `rmi` and garbage collection until its lease goes.

use crate::harness::*;
use berth::digest::Digest;
use berth::oci::MediaType;
use berth::store::local::{ImageMeta, LocalStore};
use std::collections::BTreeMap;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

/// A store beside a sentinel directory that hostile layers aim at.
struct Fixture {
    dir: TempDir,
    store: LocalStore,
    sentinel: PathBuf,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = TempDir::new("layers");
        let store = LocalStore::open(&dir.join("store")).unwrap();
        let sentinel = dir.join("sentinel");
        std::fs::create_dir_all(sentinel.join("sub")).unwrap();
        std::fs::write(sentinel.join("file"), "precious").unwrap();
        std::fs::write(sentinel.join("sub/inner"), "also precious").unwrap();
        std::os::unix::fs::symlink("file", sentinel.join("link")).unwrap();
        // times in the past, so any write or touch shows
        for p in ["sub/inner", "file", "sub", ""] {
            let t = nix::sys::time::TimeSpec::new(1_000_000_000, 0);
            nix::sys::stat::utimensat(
                nix::fcntl::AT_FDCWD,
                &sentinel.join(p),
                &t,
                &t,
                nix::sys::stat::UtimensatFlags::NoFollowSymlink,
            )
            .unwrap();
        }
        Fixture {
            dir,
            store,
            sentinel,
        }
    }

    /// The sentinel's path as a name inside a layer (no leading `/`).
    fn s(&self) -> String {
        self.sentinel
            .to_str()
            .unwrap()
            .trim_start_matches('/')
            .into()
    }

    /// Unpack `tar` as a layer through the cache, with its true diff_id.
    fn unpack(&self, tar: &[u8]) -> berth::error::Result<PathBuf> {
        let blob = self
            .store
            .put_bytes(&berth::archive::gzip::gzip_bytes(tar, 1))
            .unwrap();
        self.store
            .unpack_layer(&blob, &MediaType::OciLayerGzip, &Digest::sha256(tar))
    }

    /// Unpack a hostile layer and check that nothing outside the layer changed
    /// and nothing was left half-done; an error must name `entry`.
    fn hostile(&self, tar: &[u8], entry: Option<&str>) -> Option<PathBuf> {
        let before = snapshot(&self.sentinel);
        let res = self.unpack(tar);
        assert_eq!(
            snapshot(&self.sentinel),
            before,
            "a layer changed something outside its directory"
        );
        let tmp: Vec<_> = std::fs::read_dir(self.store.root().join("tmp"))
            .unwrap()
            .collect();
        assert!(tmp.is_empty(), "left in tmp/: {tmp:?}");
        let layer = self.store.layer_path(&Digest::sha256(tar));
        match (res, entry) {
            (Err(e), Some(name)) => {
                assert!(
                    e.to_string().contains(name),
                    "error does not name {name}: {e}"
                );
                assert!(!layer.exists(), "a refused layer is cached");
                None
            }
            (Ok(dir), None) => {
                assert_eq!(dir, layer);
                Some(dir)
            }
            (Err(e), None) => panic!("layer refused: {e}"),
            (Ok(_), Some(name)) => panic!("a layer with {name} was accepted"),
        }
    }
}

/// Every entry under `root` (root included), never following a link: kind,
/// mode, owner, times, size, content or link target, extended attributes.
fn snapshot(root: &Path) -> BTreeMap<String, String> {
    fn walk(root: &Path, p: &Path, out: &mut BTreeMap<String, String>) {
        let m = std::fs::symlink_metadata(p).unwrap();
        let what = if m.file_type().is_symlink() {
            format!("-> {}", std::fs::read_link(p).unwrap().display())
        } else if m.is_file() {
            format!("{:?}", std::fs::read(p).unwrap())
        } else {
            String::new()
        };
        let rel = p.strip_prefix(root).unwrap().display().to_string();
        out.insert(
            rel,
            format!(
                "{:o} {}:{} mtime {}.{} size {} {what} xattrs {:?}",
                m.mode(),
                m.uid(),
                m.gid(),
                m.mtime(),
                m.mtime_nsec(),
                m.size(),
                xattr_names(p)
            ),
        );
        if m.is_dir() {
            let mut names: Vec<_> = std::fs::read_dir(p)
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
            names.sort();
            for n in names {
                walk(root, &n, out);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

fn xattr_names(p: &Path) -> Vec<u8> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap();
    let mut buf = vec![0u8; 4096];
    // SAFETY: a NUL-terminated path and a buffer of the length given.
    let n = unsafe { libc::llistxattr(c.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    buf.truncate(n.max(0) as usize);
    buf
}

/// Tar entries written header by header, names and link targets raw (the tar
/// crate's own setters refuse `..` and absolute names, which these tests need).
struct Tar(tar::Builder<Vec<u8>>);

impl Tar {
    fn new() -> Tar {
        Tar(tar::Builder::new(Vec::new()))
    }
    fn entry(mut self, kind: tar::EntryType, name: &str, link: &str, data: &[u8]) -> Tar {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(kind);
        h.set_mode(if kind.is_dir() { 0o755 } else { 0o644 });
        h.set_mtime(2_000);
        h.set_size(data.len() as u64);
        // ustar: up to 100 bytes of name, the directories above in the prefix
        let (prefix, base) = if name.len() <= 100 {
            ("", name)
        } else {
            let cut = (0..name.len())
                .find(|&i| name.as_bytes()[i] == b'/' && name.len() - i - 1 <= 100)
                .unwrap();
            (&name[..cut], &name[cut + 1..])
        };
        let u = h.as_ustar_mut().unwrap();
        u.name[..base.len()].copy_from_slice(base.as_bytes());
        u.prefix[..prefix.len()].copy_from_slice(prefix.as_bytes());
        u.linkname[..link.len()].copy_from_slice(link.as_bytes());
        h.set_cksum();
        self.0.append(&h, data).unwrap();
        self
    }
    fn file(self, name: &str, data: &[u8]) -> Tar {
        self.entry(tar::EntryType::Regular, name, "", data)
    }
    fn dir(self, name: &str) -> Tar {
        self.entry(tar::EntryType::Directory, name, "", b"")
    }
    fn symlink(self, name: &str, to: &str) -> Tar {
        self.entry(tar::EntryType::Symlink, name, to, b"")
    }
    fn hard_link(self, name: &str, to: &str) -> Tar {
        self.entry(tar::EntryType::Link, name, to, b"")
    }
    fn node(mut self, kind: tar::EntryType, name: &str, major: u32, minor: u32) -> Tar {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(kind);
        h.set_mode(0o660);
        h.set_size(0);
        h.set_device_major(major).unwrap();
        h.set_device_minor(minor).unwrap();
        self.0.append_data(&mut h, name, std::io::empty()).unwrap();
        self
    }
    fn done(self) -> Vec<u8> {
        self.0.into_inner().unwrap()
    }
}

#[test]
fn a_directory_replaced_by_a_symlink_to_root_reaches_nothing() {
    let fx = Fixture::new();
    let s = fx.s();
    // times set, after the fact, on directories that became a link to `/`
    let t = Tar::new()
        .dir("a/")
        .dir(&format!("a/{s}/"))
        .dir(&format!("a/{s}/sub/"))
        .symlink("a", "/")
        .done();
    let dir = fx.hostile(&t, None).unwrap();
    assert_eq!(std::fs::read_link(dir.join("a")).unwrap(), Path::new("/"));
    // writes through it: a new file, an existing one, a hard link, whiteouts
    let planted = format!("a/{s}/planted");
    let t = Tar::new()
        .dir("a/")
        .symlink("a", "/")
        .file(&planted, b"x")
        .done();
    fx.hostile(&t, Some(&planted));
    let overwrite = format!("a/{s}/file");
    let t = Tar::new()
        .symlink("a", "/")
        .file(&overwrite, b"gotcha")
        .done();
    fx.hostile(&t, Some(&overwrite));
    let t = Tar::new()
        .file("x", b"x")
        .symlink("a", "/")
        .hard_link(&planted, "x")
        .done();
    fx.hostile(&t, Some(&planted));
    let wh = format!("a/{s}/.wh.file");
    let t = Tar::new().symlink("a", "/").file(&wh, b"").done();
    fx.hostile(&t, Some(&wh));
    let opq = format!("a/{s}/sub/.wh..wh..opq");
    let t = Tar::new().symlink("a", "/").file(&opq, b"").done();
    fx.hostile(&t, Some(&opq));
}

#[test]
fn hard_links_stay_inside_their_layer() {
    let fx = Fixture::new();
    let s = fx.s();
    let t = Tar::new().hard_link("outlink", "../sentinel/file").done();
    fx.hostile(&t, Some("hard link outlink"));
    // an absolute target is a name inside the layer, where nothing is
    let t = Tar::new()
        .hard_link("outlink", &format!("/{s}/file"))
        .done();
    fx.hostile(&t, Some("hard link outlink"));
    // a second name for a symlink out: kept as a link, never chmodded or
    // written through, and replaced (not followed) by a later file of its name
    let t = Tar::new()
        .symlink("s", &format!("/{s}/file"))
        .hard_link("h", "s")
        .file("h", b"replaced")
        .symlink("d", &fx.sentinel.display().to_string())
        .hard_link("hd", "d")
        .done();
    let dir = fx.hostile(&t, None).unwrap();
    assert_eq!(std::fs::read(dir.join("h")).unwrap(), b"replaced");
    assert!(
        std::fs::symlink_metadata(dir.join("hd"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    let t = Tar::new()
        .symlink("d", &fx.sentinel.display().to_string())
        .hard_link("hd", "d")
        .file("hd/planted", b"x")
        .done();
    fx.hostile(&t, Some("hd/planted"));
}

#[test]
fn dot_dot_and_absolute_names_stay_inside() {
    let fx = Fixture::new();
    let s = fx.s();
    let t = Tar::new().file("../escape", b"x").done();
    fx.hostile(&t, Some("../escape"));
    let t = Tar::new().file("a/../../escape", b"x").done();
    fx.hostile(&t, Some("a/../../escape"));
    let up = format!("a/../../../../../../../../{s}/file");
    let t = Tar::new().file(&up, b"x").done();
    fx.hostile(&t, Some(&up));
    let t = Tar::new().file(&format!("/{s}/abs"), b"inside").done();
    let dir = fx.hostile(&t, None).unwrap();
    assert_eq!(std::fs::read(dir.join(&s).join("abs")).unwrap(), b"inside");
}

#[test]
fn whiteouts_that_climb_are_refused() {
    let fx = Fixture::new();
    for name in [".wh...", "a/.wh..", ".wh.", "sub/.wh..."] {
        let t = Tar::new().dir("sub/").file(name, b"").done();
        fx.hostile(&t, Some(name));
    }
    // an opaque marker at the top marks the layer's own root, nothing above
    let t = Tar::new().file(".wh..wh..opq", b"").file("f", b"f").done();
    let store_root = fx.store.root().to_path_buf();
    let layers_before = xattr_names(&store_root.join("layers/sha256"));
    let dir = fx.hostile(&t, None).unwrap();
    assert_eq!(xattr_names(&dir), b"trusted.overlay.opaque\0");
    assert_eq!(
        xattr_names(&store_root.join("layers/sha256")),
        layers_before
    );
}

#[test]
fn device_nodes_are_kept_in_a_root_only_cache() {
    let fx = Fixture::new();
    let t = Tar::new()
        .node(tar::EntryType::Char, "dev/null", 1, 3)
        .node(tar::EntryType::Block, "dev/sda", 8, 0)
        .done();
    let dir = fx.hostile(&t, None).unwrap();
    let null = std::fs::symlink_metadata(dir.join("dev/null")).unwrap();
    assert!(null.file_type().is_char_device());
    assert_eq!(null.rdev(), nix::sys::stat::makedev(1, 3));
    let sda = std::fs::symlink_metadata(dir.join("dev/sda")).unwrap();
    assert!(sda.file_type().is_block_device());
    assert_eq!(sda.rdev(), nix::sys::stat::makedev(8, 0));
    assert_eq!(sda.mode() & 0o777, 0o660);
    let cache = std::fs::metadata(fx.store.root().join("layers")).unwrap();
    assert_eq!(
        cache.mode() & 0o777,
        0o700,
        "the layer cache is open to all"
    );
}

#[test]
fn duplicate_entries_replace_without_following() {
    let fx = Fixture::new();
    let s = fx.s();
    let t = Tar::new()
        .file("f", b"one")
        .symlink("f", &format!("/{s}/file"))
        .file("f", b"two")
        .dir("d/")
        .file("d/x", b"x")
        .file("d", b"now a file")
        .dir("d/")
        .file("d/y", b"y")
        .symlink("l", &fx.sentinel.display().to_string())
        .dir("l/")
        .file("l/z", b"z")
        .done();
    let dir = fx.hostile(&t, None).unwrap();
    assert_eq!(std::fs::read(dir.join("f")).unwrap(), b"two");
    assert!(!dir.join("d/x").exists() && dir.join("d/y").is_file());
    assert!(std::fs::symlink_metadata(dir.join("l")).unwrap().is_dir());
    assert_eq!(std::fs::read(dir.join("l/z")).unwrap(), b"z");
}

/// An image of `layers` (bottom first) tagged `name`; returns its manifest.
fn image_of(store: &LocalStore, name: &str, layers: &[&[u8]]) -> Digest {
    let parts: Vec<_> = layers
        .iter()
        .map(|t| {
            let gz = berth::archive::gzip::gzip_bytes(t, 1);
            let d = store.put_bytes(&gz).unwrap();
            (d, gz.len() as u64, Digest::sha256(t), Default::default())
        })
        .collect();
    let (m, _) = berth::image::assemble(
        store,
        berth::image::Format::Docker,
        0,
        Default::default(),
        &parts,
    )
    .unwrap();
    store
        .tag(&m, &[name.to_string()], ImageMeta::default())
        .unwrap();
    m
}

#[test]
fn two_cached_layers_mount_as_the_image_meant() {
    need("unshare");
    let fx = Fixture::new();
    let lower = Tar::new()
        .file("keep", b"kept\n")
        .file("gone", b"hidden")
        .dir("d/")
        .file("d/old", b"old")
        .file("d/sub/old2", b"old")
        .file("x/old", b"old")
        .file("y/old", b"old")
        .file("z/old", b"old")
        .done();
    // x, y, z: a whiteout and a directory of the same name in one layer, in
    // any order, hide the lower directory and show the layer's own
    let upper = Tar::new()
        .file(".wh.gone", b"")
        .dir("d/")
        .file("d/.wh..wh..opq", b"")
        .file("d/new", b"new")
        .file(".wh.x", b"")
        .file("x/new", b"new")
        .file("y/new", b"new")
        .file(".wh.y", b"")
        .file(".wh.z", b"")
        .dir("z/")
        .file("z/new", b"new")
        .done();
    let m = image_of(&fx.store, "ovl:1", &[&lower, &upper]);
    let dirs = fx.store.layer_dirs(&m).unwrap();
    assert_eq!(dirs.len(), 2);
    let cached: Vec<_> = dirs.iter().map(|d| snapshot(d)).collect();
    let mnt = fx.dir.join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let lowerdir = dirs
        .iter()
        .map(|d| d.display().to_string())
        .collect::<Vec<_>>()
        .join(":");
    // a private mount namespace: the mount goes with the shell
    let script = format!(
        "mount -t overlay overlay -o lowerdir={lowerdir} {m} && ls -A {m} && echo -- && ls -A {m}/d {m}/x {m}/y {m}/z && cat {m}/keep",
        m = mnt.display()
    );
    let o = std::process::Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", &script])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        stdout(&o),
        format!(
            "d\nkeep\nx\ny\nz\n--\n{m}/d:\nnew\n\n{m}/x:\nnew\n\n{m}/y:\nnew\n\n{m}/z:\nnew\nkept\n",
            m = mnt.display()
        )
    );
    let after: Vec<_> = dirs.iter().map(|d| snapshot(d)).collect();
    assert_eq!(after, cached, "mounting changed the cache");
    assert_eq!(
        std::fs::read_dir(&mnt).unwrap().count(),
        0,
        "mount leaked out"
    );
}

#[test]
fn a_leased_image_survives_rmi_and_gc_until_released() {
    let fx = Fixture::new();
    let base = Tar::new().file("etc/os-release", b"NAME=test\n").done();
    let m = image_of(&fx.store, "leased:1", &[&base]);
    let dirs = fx.store.layer_dirs(&m).unwrap();
    fx.store.lease("ctr-1", std::slice::from_ref(&m)).unwrap();
    let rmi = |args: &[&str]| {
        berth(args)
            .env("BERTH_ROOT", fx.store.root())
            .output()
            .unwrap()
    };
    let o = rmi(&["rmi", "leased:1"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("in use by a container"),
        "{}",
        stderr(&o)
    );
    assert!(dirs[0].is_dir() && fx.store.complete(&m));
    // forced, the name goes; the lease still holds blobs and layers
    let o = rmi(&["rmi", "-f", "leased:1"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(dirs[0].is_dir() && fx.store.complete(&m));
    assert!(fx.store.release_lease("ctr-1").unwrap());
    // the next collection (any rmi runs one) frees them
    let other = image_of(&fx.store, "other:1", &[b"not even a tar"]);
    let o = rmi(&["rmi", "other:1"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!dirs[0].exists(), "a released layer stayed cached");
    assert!(!fx.store.complete(&m) && !fx.store.complete(&other));
}

//! The hostile-layer corpus (`tests/fixtures/hostile/`, made by its make.py)
//! through every path that takes a layer in: `import` (validated as a rootfs
//! tarball), `load` (a docker-archive holding it as its layer, unpacked
//! into staging), `mkimage` on it as a base image (its layers unpacked into
//! the build root), the engine (`docker load`, then `docker run`, which
//! unpacks it into the layer cache) and `pull` (pushed to registryd, pulled
//! back through the engine and run). Each archive aims at
//! /tmp/berth-hostile-victim or at the disk: afterwards the victim is as it
//! was, nothing is left in the stores' staging, and a refusal is one clear
//! line.

use crate::harness::*;
use sha2::{Digest as _, Sha256};
use std::io::Read;
use std::path::{Path, PathBuf};

const VICTIM: &str = "/tmp/berth-hostile-victim";

fn corpus() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hostile");
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.to_string_lossy().ends_with(".tar") || p.to_string_lossy().ends_with(".tar.gz")
        })
        .collect();
    v.sort();
    assert!(v.len() >= 12, "{v:?}");
    v
}

/// The victim: one file, which nothing may change or join.
fn victim_state() -> Vec<(String, Vec<u8>, u32)> {
    use std::os::unix::fs::MetadataExt;
    let mut v: Vec<_> = std::fs::read_dir(VICTIM)
        .map(|rd| {
            rd.flatten()
                .map(|e| {
                    let m = std::fs::symlink_metadata(e.path()).unwrap();
                    (
                        e.file_name().to_string_lossy().into_owned(),
                        std::fs::read(e.path()).unwrap_or_default(),
                        m.mode(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn sha256_hex(r: &mut dyn Read) -> String {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = r.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// A docker-archive whose one layer is `layer` (as it is, gzip or not).
fn docker_archive(layer: &Path, tag: &str, out: &Path) {
    let raw = std::fs::File::open(layer).unwrap();
    let diff_id = if layer.to_string_lossy().ends_with(".gz") {
        sha256_hex(&mut flate2::read::GzDecoder::new(raw))
    } else {
        sha256_hex(&mut std::io::BufReader::new(raw))
    };
    let config = format!(
        r#"{{"architecture":"amd64","os":"linux","config":{{"Cmd":["/bin/true"]}},"rootfs":{{"type":"layers","diff_ids":["sha256:{diff_id}"]}}}}"#
    );
    let manifest =
        format!(r#"[{{"Config":"config.json","RepoTags":["{tag}"],"Layers":["layer.tar"]}}]"#);
    let f = std::fs::File::create(out).unwrap();
    let mut b = tar::Builder::new(f);
    let add = |b: &mut tar::Builder<std::fs::File>, name: &str, data: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, name, data).unwrap();
    };
    add(&mut b, "config.json", config.as_bytes());
    add(&mut b, "manifest.json", manifest.as_bytes());
    b.append_path_with_name(layer, "layer.tar").unwrap();
    b.finish().unwrap();
}

/// A refusal is one line (beside progress lines and the hints docker's CLI
/// and mkimage add on lines of their own) and, where an archive has an
/// offending entry, names it.
fn one_clear_line(err: &str, what: &str, archive: &str) {
    let err = err.trim();
    assert!(!err.is_empty(), "{what}: failed without a word");
    assert!(
        !err.contains("panicked") && !err.contains("RUST_BACKTRACE"),
        "{what}: {err}"
    );
    let lines: Vec<&str> = err
        .lines()
        .filter(|l| !l.trim().is_empty())
        // progress, and hints on what to do next, are not the error
        .filter(|l| !l.starts_with("==> "))
        .filter(|l| !(l.starts_with("See 'docker") || l.starts_with("Run 'docker")))
        .filter(|l| !l.starts_with("the root was removed (--keep-root"))
        .collect();
    assert_eq!(lines.len(), 1, "{what}: not one line: {err}");
    if let Some(names) = offenders(archive) {
        assert!(
            names.iter().any(|n| lines[0].contains(n)),
            "{what}: the error names none of {names:?}: {err}"
        );
    }
}

/// What an error about each archive must name: its offending entry (any one
/// of these spellings of it). None: the archive has nothing to refuse by name
/// (a bomb refused for its size, or entries that are only unusual).
fn offenders(archive: &str) -> Option<&'static [&'static str]> {
    Some(match archive {
        "dotdot" => &["../berth-hostile-victim/sentinel"],
        "symlink-then-file" => &["link/sentinel"],
        "dir-replaced-by-symlink" => &["d/sentinel"],
        "hardlink-out" => &["hard link h", "berth-hostile-victim/sentinel"],
        "whiteout-climb" => &["sub/.wh..", ".wh..."],
        "long-pax-name" => &["berth-hostile-victim/sentinel", "directories deep"],
        "sparse-bomb" => &["gnu-big"],
        "duplicates" => &["f/", "tar entry f"],
        _ => return None,
    })
}

/// Relative climbs land one level above the root they start from: beside
/// the staging and build directories, under each store's tmp/. Those must
/// stay empty, and no directory of the victim's name may appear anywhere in
/// the test's trees except where an absolute name was (rightly) kept inside
/// a root, as its own tmp/berth-hostile-victim.
fn climbed(trees: &[&Path], tmps: &[PathBuf]) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack: Vec<PathBuf> = trees.iter().map(|p| p.to_path_buf()).collect();
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if e.file_name() == "berth-hostile-victim"
                && (d.file_name().is_none_or(|n| n != "tmp") || tmps.contains(&d))
            {
                found.push(p.clone());
            }
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(p);
            }
        }
    }
    found
}

/// Device nodes (overlay's 0/0 whiteouts aside) and set-id files under `top`.
fn specials(top: &Path) -> Vec<PathBuf> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let mut found = Vec::new();
    let mut stack = vec![top.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let Ok(m) = std::fs::symlink_metadata(e.path()) else {
                continue;
            };
            let t = m.file_type();
            if ((t.is_char_device() || t.is_block_device()) && m.rdev() != 0)
                || (t.is_file() && m.mode() & 0o6000 != 0)
            {
                found.push(e.path());
            }
            if t.is_dir() {
                stack.push(e.path());
            }
        }
    }
    found
}

/// Whether a user other than root is kept from `p` by a directory between
/// `top` and it that others may not search.
fn out_of_others_reach(top: &Path, p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.ancestors()
        .skip(1)
        .take_while(|a| a.starts_with(top))
        .any(|a| {
            std::fs::symlink_metadata(a)
                .is_ok_and(|m| m.is_dir() && m.permissions().mode() & 0o001 == 0)
        })
}

/// A run whose layer unpacked: it ran, or found no /bin/true in what it
/// unpacked (the corpus' layers hold no programs).
fn unpacked(o: &std::process::Output) -> bool {
    o.status.success() || stderr(o).contains("exec: \"/bin/true\": stat /bin/true: no such file")
}

fn staging_empty(graph: &Path) -> bool {
    std::fs::read_dir(graph.join("tmp"))
        .map(|rd| rd.flatten().count() == 0)
        .unwrap_or(true)
}

#[test]
fn the_hostile_corpus_changes_nothing_outside_through_every_path() {
    let _ = std::fs::remove_dir_all(VICTIM);
    std::fs::create_dir_all(VICTIM).unwrap();
    std::fs::write(Path::new(VICTIM).join("sentinel"), "safe\n").unwrap();
    let before = victim_state();
    let dir = TempDir::new("hostile");
    let graph = dir.join("graph");
    let e = Engined::start();
    let reg = Registryd::start(RegOpts {
        tls: false,
        auth: false,
        ..RegOpts::default()
    });
    let mut seen = Vec::new();
    let tmps = [graph.join("tmp"), e.graph.join("tmp")];
    let check = |what: &str| {
        assert_eq!(victim_state(), before, "{what} reached the victim");
        let c = climbed(&[&dir.0, &e.dir.0], &tmps);
        assert!(c.is_empty(), "{what} climbed out of its root: {c:?}");
        assert!(staging_empty(&graph), "{what} left the client's staging");
        assert!(staging_empty(&e.graph), "{what} left the engine's staging");
    };
    for layer in corpus() {
        let name = layer
            .file_name()
            .unwrap()
            .to_string_lossy()
            .trim_end_matches(".gz")
            .trim_end_matches(".tar")
            .to_string();
        let tag = format!("hostile:{name}");
        // Every path runs for every archive: a refusal earlier on must not
        // spare the later ones (each takes the layer in by itself).
        let mut ran = Vec::new();
        let mut refused = Vec::new();
        // import: a rootfs tarball, validated as it is stored
        let o = run(&[
            "import",
            "-g",
            graph.to_str().unwrap(),
            layer.to_str().unwrap(),
            &format!("imported:{name}"),
        ]);
        if !o.status.success() {
            one_clear_line(&stderr(&o), &format!("import {name}"), &name);
            refused.push("import");
        }
        check(&format!("import {name}"));
        ran.push("import");
        // load: a docker-archive with it as the layer, bounded by --max-size;
        // the layer is a file in it, so the load itself must succeed
        let archive = dir.join(&format!("{name}.archive.tar"));
        docker_archive(&layer, &tag, &archive);
        let o = run(&[
            "load",
            "-g",
            graph.to_str().unwrap(),
            "-i",
            archive.to_str().unwrap(),
            "--max-size",
            "64M",
        ]);
        assert!(o.status.success(), "load {name}: {}", stderr(&o));
        check(&format!("load {name}"));
        ran.push("load");
        // mkimage on it as a base: its layers unpacked into the build root
        let recipe = dir.join(&format!("{name}.yml"));
        std::fs::write(
            &recipe,
            format!(
                "name: on-{name}\nepoch: 1490616000\nbase: {tag}\nstages:\n  - name: motd\n    append: {{file: /etc/motd, lines: [\"x\"]}}\n"
            ),
        )
        .unwrap();
        let m = run(&[
            "mkimage",
            "-g",
            graph.to_str().unwrap(),
            "--tag",
            &format!("derived:{name}"),
            recipe.to_str().unwrap(),
        ]);
        if !m.status.success() {
            one_clear_line(&stderr(&m), &format!("mkimage on {name}"), &name);
            refused.push("mkimage");
        }
        check(&format!("mkimage on {name}"));
        ran.push("mkimage");
        // the engine: loaded, then unpacked into the layer cache to run
        let o = e.run(&["load", "-i", archive.to_str().unwrap()]);
        assert!(o.status.success(), "docker load {name}: {}", stderr(&o));
        ran.push("docker load");
        let r = e.run(&["run", "--rm", &tag]);
        if !unpacked(&r) {
            one_clear_line(&stderr(&r), &format!("run {name}"), &name);
            refused.push("run");
        }
        check(&format!("run {name}"));
        ran.push("run");
        // pull: through a registry, then unpacked again from what came
        let remote = format!("127.0.0.1:{}/hostile/{name}:1", reg.port);
        e.ok(&["tag", &tag, &remote]);
        e.ok(&["push", &remote]);
        let _ = e.run(&["rmi", "-f", &remote, &tag]);
        let p = e.run(&["pull", &remote]);
        assert!(p.status.success(), "pull {name}: {}", stderr(&p));
        ran.push("pull");
        let r = e.run(&["run", "--rm", &remote]);
        if !unpacked(&r) {
            one_clear_line(&stderr(&r), &format!("run pulled {name}"), &name);
            refused.push("run pulled");
        }
        check(&format!("run pulled {name}"));
        ran.push("run pulled");
        let _ = e.run(&["rmi", "-f", &remote]);
        assert_eq!(
            ran,
            [
                "import",
                "load",
                "mkimage",
                "docker load",
                "run",
                "pull",
                "run pulled"
            ],
            "{name}"
        );
        // the 1 TiB claim is refused wherever the layer would be unpacked
        if name == "sparse-bomb" {
            assert_eq!(refused, ["import", "mkimage", "run", "run pulled"]);
        }
        seen.push(name);
    }
    // the bombs never grew a store past real content (the gzip bomb's 512 MiB
    // is one unpacked copy in the engine's cache; the sparse one's 1 TiB none)
    let used = crate::harness::du(&e.graph);
    assert!(used < 600 << 20, "the engine's store holds {used} bytes");
    let used = crate::harness::du(&graph);
    assert!(used < 64 << 20, "the client store holds {used} bytes");
    // and nothing claims more than it holds: a sparse file's hole costs no
    // blocks, but a copy or a save of it writes every byte
    let claimed = crate::harness::apparent_size(&e.graph);
    assert!(
        claimed < 600 << 20,
        "the engine's store claims {claimed} bytes"
    );
    let claimed = crate::harness::apparent_size(&graph);
    assert!(
        claimed < 64 << 20,
        "the client store claims {claimed} bytes"
    );
    assert!(seen.contains(&"gzip-bomb".to_string()));
    assert!(seen.contains(&"sparse-bomb".to_string()));
    // devices and set-id files: the client's store keeps blobs and nothing
    // unpacked (load drops set-id bits and refuses devices; mkimage's build
    // root is gone); the engine's layer cache keeps them as the image has
    // them (a container needs its /usr/bin/passwd), but out of reach of the
    // host's other users, so no one there can use a device node or set-id
    // program a layer brought
    let client = specials(&graph);
    assert!(client.is_empty(), "the client store holds {client:?}");
    let engine = specials(&e.graph);
    let reachable: Vec<_> = engine
        .iter()
        .filter(|p| !out_of_others_reach(&e.graph, p))
        .collect();
    assert!(
        reachable.is_empty(),
        "device nodes or set-id files other users can reach: {reachable:?}"
    );
    let _ = std::fs::remove_dir_all(VICTIM);
}

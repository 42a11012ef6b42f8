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

fn one_clear_line(err: &str, what: &str) {
    let err = err.trim();
    assert!(!err.is_empty(), "{what}: failed without a word");
    assert!(
        !err.contains("panicked") && !err.contains("RUST_BACKTRACE"),
        "{what}: {err}"
    );
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
    for layer in corpus() {
        let name = layer
            .file_name()
            .unwrap()
            .to_string_lossy()
            .trim_end_matches(".gz")
            .trim_end_matches(".tar")
            .to_string();
        let tag = format!("hostile:{name}");
        // import: a rootfs tarball, validated as it is stored
        let o = run(&[
            "import",
            "-g",
            graph.to_str().unwrap(),
            layer.to_str().unwrap(),
            &tag,
        ]);
        if !o.status.success() {
            one_clear_line(&stderr(&o), &format!("import {name}"));
        }
        assert_eq!(victim_state(), before, "import {name} reached the victim");
        // load: a docker-archive with it as the layer, bounded by --max-size
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
        if !o.status.success() {
            one_clear_line(&stderr(&o), &format!("load {name}"));
        }
        assert_eq!(victim_state(), before, "load {name} reached the victim");
        assert!(staging_empty(&graph), "load {name} left staging behind");
        // mkimage on it as a base: its layers unpacked into the build root
        if o.status.success() {
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
                one_clear_line(&stderr(&m), &format!("mkimage on {name}"));
            }
            assert_eq!(
                victim_state(),
                before,
                "mkimage on {name} reached the victim"
            );
        }
        // the engine: loaded, then unpacked into the layer cache to run
        let o = e.run(&["load", "-i", archive.to_str().unwrap()]);
        if o.status.success() {
            let r = e.run(&["run", "--rm", &tag]);
            if !r.status.success() {
                one_clear_line(&stderr(&r), &format!("run {name}"));
            }
            // pull: through a registry, then unpacked again from what came
            let remote = format!("127.0.0.1:{}/hostile/{name}:1", reg.port);
            e.ok(&["tag", &tag, &remote]);
            e.ok(&["push", &remote]);
            let _ = e.run(&["rmi", "-f", &remote, &tag]);
            let p = e.run(&["pull", &remote]);
            if p.status.success() {
                let r = e.run(&["run", "--rm", &remote]);
                if !r.status.success() {
                    one_clear_line(&stderr(&r), &format!("run pulled {name}"));
                }
            } else {
                one_clear_line(&stderr(&p), &format!("pull {name}"));
            }
            let _ = e.run(&["rmi", "-f", &remote]);
        } else {
            one_clear_line(&stderr(&o), &format!("docker load {name}"));
        }
        assert_eq!(
            victim_state(),
            before,
            "the engine's {name} reached the victim"
        );
        assert!(
            staging_empty(&e.graph),
            "the engine's {name} left staging behind"
        );
        seen.push(name);
    }
    // the bombs never grew a store past real content (the gzip bomb's 512 MiB
    // is one unpacked copy in the engine's cache; the sparse one's 1 TiB none)
    let used = crate::harness::du(&e.graph);
    assert!(used < 600 << 20, "the engine's store holds {used} bytes");
    let used = crate::harness::du(&graph);
    assert!(used < 64 << 20, "the client store holds {used} bytes");
    assert!(seen.contains(&"gzip-bomb".to_string()));
    let _ = std::fs::remove_dir_all(VICTIM);
}

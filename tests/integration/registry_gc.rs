//! registryd's garbage collection and tag policies through the real binary:
//! the online collector running every second while clients push images that
//! share layers with images being deleted (skopeo pulls and verifies every
//! tagged image at the end, nothing unreferenced survives), a collector
//! killed with -9 mid-sweep, a dry run that leaves the tree byte-identical,
//! untagged manifests and their referrers, immutable tags and retention rules,
//! and config.yml's gc and tagpolicy keys checked with line numbers.

use crate::harness::*;
use crate::registry_skopeo::{make_layer, skopeo};
use berth::digest::Digest;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// Push one image (config + layers, pushed blob by blob as clients do:
/// HEAD, then upload only what is missing) and tag it. Returns the manifest digest.
fn push_image(
    r: &Registryd,
    c: &Client,
    repo: &str,
    tag: &str,
    layers: &[Vec<u8>],
    seed: &str,
) -> Result<String, String> {
    let mut descs = Vec::new();
    let mut diff_ids = Vec::new();
    for l in layers {
        let d = Digest::sha256(l).to_string();
        let head = c.req("HEAD", &r.url(&format!("/v2/{repo}/blobs/{d}")), &[], None);
        if head.status != 200 {
            let resp = c.req(
                "POST",
                &r.url(&format!("/v2/{repo}/blobs/uploads/?digest={d}")),
                &[("Content-Type", "application/octet-stream")],
                Some(l),
            );
            if resp.status != 201 {
                return Err(format!("upload {d}: {} {}", resp.status, resp.text()));
            }
        }
        descs.push((d, l.len()));
        let mut gz = flate2::read::GzDecoder::new(&l[..]);
        let mut raw = Vec::new();
        std::io::Read::read_to_end(&mut gz, &mut raw).unwrap();
        diff_ids.push(Digest::sha256(&raw));
    }
    let cfg = format!(
        r#"{{"architecture":"amd64","os":"linux","config":{{"Labels":{{"seed":"{seed}"}}}},"rootfs":{{"type":"layers","diff_ids":[{}]}}}}"#,
        diff_ids
            .iter()
            .map(|d| format!("\"{d}\""))
            .collect::<Vec<_>>()
            .join(",")
    );
    let cd = Digest::sha256(cfg.as_bytes()).to_string();
    let head = c.req("HEAD", &r.url(&format!("/v2/{repo}/blobs/{cd}")), &[], None);
    if head.status != 200 {
        let resp = c.req(
            "POST",
            &r.url(&format!("/v2/{repo}/blobs/uploads/?digest={cd}")),
            &[],
            Some(cfg.as_bytes()),
        );
        if resp.status != 201 {
            return Err(format!("upload config: {} {}", resp.status, resp.text()));
        }
    }
    let layer_refs: Vec<(&str, usize)> = descs.iter().map(|(d, s)| (d.as_str(), *s)).collect();
    let m = manifest_json(
        DOCKER_MANIFEST,
        (DOCKER_CONFIG, &cd, cfg.len()),
        &layer_refs,
        "",
    );
    let resp = c.req(
        "PUT",
        &r.url(&format!("/v2/{repo}/manifests/{tag}")),
        &[("Content-Type", DOCKER_MANIFEST)],
        Some(m.as_bytes()),
    );
    if resp.status != 201 {
        return Err(format!(
            "manifest {repo}:{tag}: {} {}",
            resp.status,
            resp.text()
        ));
    }
    Ok(Digest::sha256(m.as_bytes()).to_string())
}

fn gz_layer(name: &str, content: &[u8]) -> Vec<u8> {
    make_layer(&[(name, content)]).0
}

fn delete(r: &Registryd, c: &Client, repo: &str, reference: &str) -> u16 {
    c.req(
        "DELETE",
        &r.url(&format!("/v2/{repo}/manifests/{reference}")),
        &[],
        None,
    )
    .status
}

/// Every blob a stored manifest names (manifests of every repository), and
/// every blob stored.
fn referenced_and_stored(root: &Path) -> (BTreeSet<String>, BTreeSet<String>) {
    let v2 = root.join("docker/registry/v2");
    let mut stored = BTreeSet::new();
    if let Ok(rd) = std::fs::read_dir(v2.join("blobs/sha256")) {
        for p in rd.flatten() {
            for b in std::fs::read_dir(p.path()).unwrap().flatten() {
                if b.path().join("data").exists() {
                    stored.insert(format!("sha256:{}", b.file_name().to_string_lossy()));
                }
            }
        }
    }
    let mut referenced = BTreeSet::new();
    let mut stack = vec![v2.join("repositories")];
    while let Some(dir) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.ends_with("_manifests/revisions/sha256") {
                for rev in std::fs::read_dir(&p).unwrap().flatten() {
                    let d = format!("sha256:{}", rev.file_name().to_string_lossy());
                    referenced.insert(d.clone());
                    let hex = rev.file_name().to_string_lossy().into_owned();
                    let data = v2.join(format!("blobs/sha256/{}/{hex}/data", &hex[..2]));
                    if let Ok(b) = std::fs::read(&data) {
                        let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
                        if let Some(cd) = v["config"]["digest"].as_str() {
                            referenced.insert(cd.to_string());
                        }
                        for l in v["layers"].as_array().cloned().unwrap_or_default() {
                            referenced.insert(l["digest"].as_str().unwrap().to_string());
                        }
                        for m in v["manifests"].as_array().cloned().unwrap_or_default() {
                            referenced.insert(m["digest"].as_str().unwrap().to_string());
                        }
                    }
                }
            } else if p.is_dir() {
                stack.push(p);
            }
        }
    }
    (referenced, stored)
}

fn gc_cmd(r: &Registryd, extra: &[&str]) -> std::process::Output {
    let mut args = vec!["registryd", "garbage-collect"];
    args.extend_from_slice(extra);
    let cfg = r.config.to_str().unwrap().to_string();
    args.push(&cfg);
    berth(&args).output().unwrap()
}

fn tagged_images(r: &Registryd, c: &Client) -> Vec<(String, String)> {
    let cat = c.get(&r.url("/v2/_catalog")).json();
    let mut out = Vec::new();
    for repo in cat["repositories"].as_array().unwrap() {
        let repo = repo.as_str().unwrap();
        let tags = c.get(&r.url(&format!("/v2/{repo}/tags/list"))).json();
        for t in tags["tags"].as_array().cloned().unwrap_or_default() {
            out.push((repo.to_string(), t.as_str().unwrap().to_string()));
        }
    }
    out
}

fn skopeo_pulls(r: &Registryd, d: &TempDir, repo: &str, tag: &str) {
    let out = d.join(&format!("pull-{}-{tag}", repo.replace('/', "_")));
    let o = skopeo(&[
        "copy",
        "--src-creds",
        &format!("{USER}:{PASS}"),
        "--src-cert-dir",
        pki().ca_dir.to_str().unwrap(),
        &format!("docker://{}/{repo}:{tag}", r.host()),
        &format!("dir:{}", out.display()),
    ]);
    assert!(
        o.status.success(),
        "skopeo pull of {repo}:{tag} after collections: {}",
        stderr(&o)
    );
}

#[test]
pub(crate) fn online_gc_beside_concurrent_pushes_and_deletes() {
    let r = Arc::new(Registryd::start(RegOpts {
        extra: "gc:\n  interval: 1s\n  grace: 2s\n  untagged: true\n".into(),
        ..RegOpts::default()
    }));
    let base = Arc::new(gz_layer("base.txt", b"the shared base layer\n"));
    let stop = Arc::new(AtomicBool::new(false));
    let pushed = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    // Pushers: images sharing the base layer with the images being deleted.
    for w in 0..3 {
        let (r, base, stop, pushed) = (r.clone(), base.clone(), stop.clone(), pushed.clone());
        workers.push(std::thread::spawn(move || -> Result<(), String> {
            let c = r.client();
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let own = gz_layer("own.txt", format!("worker {w} image {i}\n").as_bytes());
                push_image(
                    &r,
                    &c,
                    &format!("site/w{w}"),
                    &format!("t{i}"),
                    &[(*base).clone(), own],
                    &format!("{w}-{i}"),
                )?;
                pushed.fetch_add(1, Ordering::Relaxed);
                i += 1;
            }
            Ok(())
        }));
    }
    // A deleter: old tags and their manifests go, so the base layer keeps
    // dropping out of use while the pushers keep naming it.
    {
        let (r, stop) = (r.clone(), stop.clone());
        workers.push(std::thread::spawn(move || -> Result<(), String> {
            let c = r.client();
            let mut round = 0;
            while !stop.load(Ordering::Relaxed) {
                round += 1;
                // Now and then every tag goes: the base layer is then named
                // only by pushes in flight.
                let keep = if round % 5 == 0 { 0 } else { 2 };
                for w in 0..3 {
                    let repo = format!("site/w{w}");
                    let tags = c.get(&r.url(&format!("/v2/{repo}/tags/list")));
                    if tags.status != 200 {
                        continue;
                    }
                    let mut tags: Vec<String> = tags.json()["tags"]
                        .as_array()
                        .cloned()
                        .unwrap_or_default()
                        .iter()
                        .map(|t| t.as_str().unwrap().to_string())
                        .collect();
                    tags.sort_by_key(|t| t[1..].parse::<u64>().unwrap_or(0));
                    for t in tags.iter().take(tags.len().saturating_sub(keep)) {
                        let status = delete(&r, &c, &repo, t);
                        if status != 202 && status != 404 {
                            return Err(format!("delete {repo}:{t}: {status}"));
                        }
                    }
                }
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            Ok(())
        }));
    }
    // Many rounds of the collector (one a second) while all that runs.
    wait_for("six collections beside the pushes", || {
        let rounds = r.logs().matches("garbage collection: ").count();
        (rounds >= 6 && pushed.load(Ordering::Relaxed) >= 30).then_some(())
    });
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join()
            .unwrap()
            .unwrap_or_else(|e| panic!("a client was refused: {e}\n{}", r.logs()));
    }
    let logs = r.logs();
    assert!(
        logs.contains("gc: removed blob sha256:"),
        "the collector removed nothing: {}",
        logs.lines()
            .filter(|l| l.contains("gc:"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    // Every tagged image pulls and verifies.
    let c = r.client();
    let d = TempDir::new("gc-pulls");
    let images = tagged_images(&r, &c);
    for (repo, tag) in &images {
        skopeo_pulls(&r, &d, repo, tag);
    }
    // Once quiet and past the grace, nothing unreferenced is left.
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let o = gc_cmd(&r, &["--delete-untagged"]);
    assert!(
        o.status.success() || stderr(&o).contains("running"),
        "{}",
        stderr(&o)
    );
    wait_for("a collection with nothing left to take", || {
        let o = gc_cmd(&r, &["--dry-run", "--delete-untagged"]);
        // Nothing left to take and nothing merely spared for now (which the
        // online collector would take a moment later, under our checks).
        let said = stdout(&o);
        (said.contains("would remove 0 tags, 0 manifests and 0 blobs")
            && said.contains(" 0 of them spared"))
        .then_some(())
    });
    let (referenced, stored) = referenced_and_stored(&r.root);
    let unreferenced: Vec<_> = stored.difference(&referenced).collect();
    assert!(
        unreferenced.is_empty(),
        "unreferenced blobs survived: {unreferenced:?}"
    );
    assert_blobs_intact(&r.root);
    for (repo, tag) in tagged_images(&r, &c) {
        skopeo_pulls(&r, &d, &repo, &tag);
    }
}

#[test]
pub(crate) fn gc_killed_mid_sweep_leaves_every_image() {
    let mut r = Registryd::start(RegOpts {
        extra: "gc:\n  interval: 1000h\n  grace: 1s\n".into(),
        ..RegOpts::default()
    });
    let c = r.client();
    let base = gz_layer("base.txt", b"kept\n");
    let mut kept = Vec::new();
    for i in 0..5 {
        let own = gz_layer("own", format!("kept {i}").as_bytes());
        push_image(
            &r,
            &c,
            "site/kept",
            &format!("v{i}"),
            &[base.clone(), own],
            &format!("k{i}"),
        )
        .unwrap();
        kept.push(format!("v{i}"));
    }
    let d = TempDir::new("gc-kill");
    let trash = r.root.join("docker/registry/v2/_berth_trash");
    let mut caught = false;
    for round in 0..10 {
        // Garbage: blobs uploaded and never named by a manifest.
        for i in 0..3000 {
            push_blob(&r, &c, "site/junk", format!("junk {round} {i}").as_bytes());
        }
        std::thread::sleep(std::time::Duration::from_millis(1100));
        let mut child = berth(&["registryd", "garbage-collect", r.config.to_str().unwrap()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // Killed as soon as blobs sit in the trash, mid-sweep.
        loop {
            if std::fs::read_dir(&trash).is_ok_and(|mut rd| rd.next().is_some()) {
                let _ = child.kill();
                let _ = child.wait();
                // Caught only if blobs are still parked after the kill.
                caught = std::fs::read_dir(&trash).is_ok_and(|mut rd| rd.next().is_some());
                break;
            }
            if child.try_wait().unwrap().is_some() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_micros(200));
        }
        let _ = child.wait();
        if caught {
            break;
        }
    }
    assert!(caught, "the collector was never caught mid-sweep");
    // Every image served before still pulls, before and after a restart.
    for t in &kept {
        skopeo_pulls(&r, &d, "site/kept", t);
    }
    r.crash_and_restart();
    assert!(
        r.logs().contains("interrupted garbage collection"),
        "{}",
        r.logs()
    );
    for t in &kept {
        skopeo_pulls(&r, &d, "site/kept", t);
    }
    // A full collection afterwards takes the rest.
    let o = gc_cmd(&r, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        std::fs::read_dir(&trash)
            .map(|mut rd| rd.next().is_none())
            .unwrap_or(true)
    );
    let (referenced, stored) = referenced_and_stored(&r.root);
    assert!(stored.difference(&referenced).next().is_none());
    assert_blobs_intact(&r.root);
}

/// Paths, contents and mtimes of every file under `root`.
fn snapshot(root: &Path) -> BTreeMap<String, (Vec<u8>, std::time::SystemTime)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let md = std::fs::metadata(&p).unwrap();
                out.insert(
                    p.strip_prefix(root).unwrap().display().to_string(),
                    (std::fs::read(&p).unwrap(), md.modified().unwrap()),
                );
            }
        }
    }
    out
}

#[test]
pub(crate) fn dry_run_untagged_referrers_and_retention() {
    let r = Registryd::start(RegOpts {
        extra: "gc:\n  interval: 1000h\n  grace: 1s\ntagpolicy:\n  retention:\n    - repository: test/*\n      keep: 2\n      except: [latest, \"v*\"]\n".into(),
        ..RegOpts::default()
    });
    let c = r.client();
    let base = gz_layer("b", b"base");
    let mut digests = BTreeMap::new();
    for (i, t) in ["a", "b", "c", "d", "latest", "v1"].iter().enumerate() {
        let own = gz_layer("o", format!("test {t}").as_bytes());
        let dg = push_image(&r, &c, "test/app", t, &[base.clone(), own], t).unwrap();
        digests.insert(t.to_string(), dg);
        // pushes a moment apart, so "newest" is well defined
        if i < 5 {
            std::thread::sleep(std::time::Duration::from_millis(1100));
        }
    }
    // An untagged manifest with a referrer, and a tagged one with a referrer.
    let gone = push_image(&r, &c, "site/x", "temp", &[gz_layer("g", b"gone")], "gone").unwrap();
    let stays = push_image(
        &r,
        &c,
        "site/x",
        "stays",
        &[gz_layer("s", b"stays")],
        "stays",
    )
    .unwrap();
    let empty = push_blob(&r, &c, "site/x", b"{}");
    let referrer = |subject: &str, n: &str| {
        let layer = push_blob(&r, &c, "site/x", n.as_bytes());
        let m = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","artifactType":"application/vnd.example.sbom","config":{{"mediaType":"application/vnd.oci.empty.v1+json","digest":"{empty}","size":2}},"layers":[{{"mediaType":"text/plain","digest":"{layer}","size":{}}}],"subject":{{"mediaType":"{DOCKER_MANIFEST}","digest":"{subject}","size":1}}}}"#,
            n.len()
        );
        let d = Digest::sha256(m.as_bytes()).to_string();
        let resp = c.req(
            "PUT",
            &r.url(&format!("/v2/site/x/manifests/{d}")),
            &[("Content-Type", OCI_MANIFEST)],
            Some(m.as_bytes()),
        );
        assert_eq!(resp.status, 201, "{}", resp.text());
        d
    };
    let gone_ref = referrer(&gone, "sbom of gone");
    let stays_ref = referrer(&stays, "sbom of stays");
    assert_eq!(delete(&r, &c, "site/x", "temp"), 202);
    std::thread::sleep(std::time::Duration::from_millis(1100));

    // Dry run: says it all, changes nothing (contents and mtimes).
    let before = snapshot(&r.root);
    let o = gc_cmd(&r, &["--dry-run", "--delete-untagged"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let said = stdout(&o);
    assert_eq!(snapshot(&r.root), before, "the dry run changed the storage");
    for want in [
        format!("would remove manifest site/x@{gone}"),
        format!("would remove manifest site/x@{gone_ref}"),
        "would remove tag test/app:a".to_string(),
        "would remove tag test/app:b".to_string(),
    ] {
        assert!(said.contains(&want), "{want} not in: {said}");
    }
    assert!(!said.contains(&format!("site/x@{stays_ref}")), "{said}");
    assert!(
        !said.contains("test/app:c") && !said.contains("test/app:latest"),
        "{said}"
    );

    // The real thing.
    let o = gc_cmd(&r, &["--delete-untagged"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let tags = c.get(&r.url("/v2/test/app/tags/list")).json();
    let mut tags: Vec<String> = tags["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().to_string())
        .collect();
    tags.sort();
    assert_eq!(
        tags,
        vec!["c", "d", "latest", "v1"],
        "retention keeps the newest two and the exceptions"
    );
    let head = |repo: &str, d: &str| {
        c.req(
            "HEAD",
            &r.url(&format!("/v2/{repo}/manifests/{d}")),
            &[("Accept", "*/*")],
            None,
        )
        .status
    };
    assert_eq!(head("site/x", &gone), 404);
    assert_eq!(
        head("site/x", &gone_ref),
        404,
        "a referrer goes with its subject"
    );
    assert_eq!(head("site/x", &stays), 200);
    assert_eq!(
        head("site/x", &stays_ref),
        200,
        "a kept subject keeps its referrer"
    );
    assert_eq!(head("test/app", &digests["a"]), 404);
    assert_eq!(head("test/app", &digests["c"]), 200);
    let (referenced, stored) = referenced_and_stored(&r.root);
    assert!(stored.difference(&referenced).next().is_none());
    // The report is kept for the page.
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(r.root.join(".berth-gc-report.json")).unwrap())
            .unwrap();
    assert!(report["bytes_freed"].as_u64().unwrap() > 0, "{report}");
    // A GET of a manifest by an invalid tag is unknown, a PUT stays invalid.
    let resp = c.get(&r.url("/v2/test/app/manifests/not!valid"));
    assert_eq!(
        (resp.status, resp.code()),
        (404, "MANIFEST_UNKNOWN".to_string())
    );
    let resp = c.req(
        "PUT",
        &r.url("/v2/test/app/manifests/not!valid"),
        &[("Content-Type", DOCKER_MANIFEST)],
        Some(b"{}"),
    );
    assert_eq!((resp.status, resp.code()), (400, "TAG_INVALID".to_string()));
}

#[test]
pub(crate) fn immutable_tags_refused_over_the_api_and_skopeo() {
    let r = Registryd::start(RegOpts {
        extra: "tagpolicy:\n  immutable:\n    - repository: sl6-*\n      tags: [\"v*\"]\n".into(),
        ..RegOpts::default()
    });
    let c = r.client();
    let first = push_image(&r, &c, "sl6-worker", "v1", &[gz_layer("a", b"one")], "one").unwrap();
    // The same digest again is fine; another digest under the tag is not.
    assert_eq!(
        push_image(&r, &c, "sl6-worker", "v1", &[gz_layer("a", b"one")], "one").unwrap(),
        first
    );
    let e = push_image(&r, &c, "sl6-worker", "v1", &[gz_layer("a", b"two")], "two").unwrap_err();
    assert!(
        e.contains("TAG_INVALID") && e.contains("immutable") && e.contains("sl6-*"),
        "{e}"
    );
    // Tags outside the rule move as usual.
    push_image(
        &r,
        &c,
        "sl6-worker",
        "latest",
        &[gz_layer("a", b"one")],
        "one",
    )
    .unwrap();
    push_image(
        &r,
        &c,
        "sl6-worker",
        "latest",
        &[gz_layer("a", b"two")],
        "two",
    )
    .unwrap();
    push_image(&r, &c, "other", "v1", &[gz_layer("a", b"one")], "one").unwrap();
    push_image(&r, &c, "other", "v1", &[gz_layer("a", b"two")], "two").unwrap();
    // skopeo sees the refusal.
    let d = TempDir::new("immutable");
    let img = d.join("img");
    crate::registry_skopeo::docker_dir(&img);
    let o = skopeo(&[
        "copy",
        "--dest-creds",
        &format!("{USER}:{PASS}"),
        "--dest-cert-dir",
        pki().ca_dir.to_str().unwrap(),
        &format!("dir:{}", img.display()),
        &format!("docker://{}/sl6-worker:v1", r.host()),
    ]);
    assert!(!o.status.success(), "skopeo moved an immutable tag");
    assert!(stderr(&o).contains("immutable"), "{}", stderr(&o));
    // Deleting needs the override.
    let resp = c.req("DELETE", &r.url("/v2/sl6-worker/manifests/v1"), &[], None);
    assert_eq!(resp.status, 403);
    assert!(
        resp.text().contains("override=immutable"),
        "{}",
        resp.text()
    );
    let resp = c.req(
        "DELETE",
        &r.url(&format!("/v2/sl6-worker/manifests/{first}")),
        &[],
        None,
    );
    assert_eq!(resp.status, 403);
    let resp = c.req(
        "DELETE",
        &r.url("/v2/sl6-worker/manifests/v1?override=immutable"),
        &[],
        None,
    );
    assert_eq!(resp.status, 202);
}

#[test]
pub(crate) fn gc_and_tagpolicy_config_checked_with_lines() {
    let d = TempDir::new("gccfg");
    let check = |extra: &str| {
        let p = d.join("c.yml");
        std::fs::write(
            &p,
            format!(
                "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:5000\n{extra}",
                d.join("data").display()
            ),
        )
        .unwrap();
        berth(&["registryd", "--check", p.to_str().unwrap()])
            .output()
            .unwrap()
    };
    // The site's config with gc keys: accepted without a warning.
    let site = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("config/site-registry.yml"),
    )
    .unwrap();
    // Its paths made local: the certificate, key, htpasswd and storage it names.
    let pw = d.join("registry_passwd");
    std::fs::write(
        &pw,
        berth::auth::htpasswd::entry(USER, PASS).unwrap() + "\n",
    )
    .unwrap();
    let site = site
        .replace(
            "/etc/grid-security/hostcert.pem",
            pki().cert.to_str().unwrap(),
        )
        .replace(
            "/etc/grid-security/hostkey.pem",
            pki().key.to_str().unwrap(),
        )
        .replace(
            "/etc/docker-distribution/registry/registry_passwd",
            pw.to_str().unwrap(),
        )
        .replace(
            "/data/docker/registry",
            d.join("site-data").to_str().unwrap(),
        );
    let p = d.join("site.yml");
    std::fs::write(
        &p,
        format!("{site}gc:\n  interval: 24h\n  grace: 1h\n  untagged: false\n"),
    )
    .unwrap();
    let o = berth(&["registryd", "--check", p.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!stderr(&o).contains("warning"), "{}", stderr(&o));
    let o = check("gc:\n  interval: 24h\n  grace: soon\n");
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("c.yml:11") && stderr(&o).contains("gc.grace"),
        "{}",
        stderr(&o)
    );
    let o = check("gc:\n  untagged: maybe\n");
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("c.yml:10") && stderr(&o).contains("gc.untagged"),
        "{}",
        stderr(&o)
    );
    let o = check("tagpolicy:\n  retention:\n    - repository: test/*\n      kepp: 3\n");
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("c.yml:12") && stderr(&o).contains("kepp"),
        "{}",
        stderr(&o)
    );
    let o = check("tagpolicy:\n  retention:\n    - repository: test/*\n");
    assert!(!o.status.success());
    assert!(stderr(&o).contains("keep, maxage"), "{}", stderr(&o));
    let o = check("tagpolicy:\n  immutable:\n    - tags: [v*]\n");
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("repository is missing"),
        "{}",
        stderr(&o)
    );
    let o = check(
        "tagpolicy:\n  immutable:\n    - repository: sl6-*\n  retention:\n    - repository: test/*\n      keep: 5\n      maxage: 720h\n      except: [latest]\n",
    );
    assert!(o.status.success(), "{}", stderr(&o));
    // garbage-collect takes Distribution's flags, in Distribution's order.
    let c = d.join("c.yml");
    let o = berth(&[
        "registryd",
        "garbage-collect",
        "--dry-run",
        "--delete-untagged",
        c.to_str().unwrap(),
    ])
    .output()
    .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("dry run"), "{}", stdout(&o));
    let o = berth(&["registryd", "serve", "--dry-run", c.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!o.status.success(), "--dry-run outside garbage-collect");
}

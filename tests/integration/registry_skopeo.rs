//! registryd with a real client: Debian's skopeo pushes an OCI image layout and a
//! Docker schema2 image over TLS with basic auth, pulls them back byte-identical,
//! lists tags, inspects and deletes.

use crate::harness::*;
use berth::digest::Digest;
use std::path::Path;
use std::process::Command;

/// A gzip'd tar layer with a few files; returns (compressed bytes, diff_id).
pub fn make_layer(files: &[(&str, &[u8])]) -> (Vec<u8>, Digest) {
    let mut tar_bytes = Vec::new();
    {
        let mut b = tar::Builder::new(&mut tar_bytes);
        for (name, data) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_mtime(1_490_616_000);
            h.set_cksum();
            b.append_data(&mut h, name, *data).unwrap();
        }
        b.finish().unwrap();
    }
    let diff_id = Digest::sha256(&tar_bytes);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut gz, &tar_bytes).unwrap();
    (gz.finish().unwrap(), diff_id)
}

pub fn config_json(diff_id: &Digest) -> Vec<u8> {
    format!(
        r#"{{"architecture":"amd64","os":"linux","config":{{"Cmd":["/bin/sh"]}},"rootfs":{{"type":"layers","diff_ids":["{diff_id}"]}},"history":[{{"created":"2017-03-27T12:00:00Z","created_by":"berth test"}}]}}"#
    )
    .into_bytes()
}

/// An OCI image layout with one image tagged `tag`; returns the manifest digest.
pub fn oci_layout(dir: &Path, tag: &str) -> String {
    let (layer, diff) = make_layer(&[
        ("hello.txt", b"hello from the OCI layout\n"),
        ("etc/os-release", b"NAME=test\n"),
    ]);
    let cfg = config_json(&diff);
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let put = |b: &[u8]| {
        let d = Digest::sha256(b);
        std::fs::write(blobs.join(d.hex()), b).unwrap();
        d
    };
    let (ld, cd) = (put(&layer), put(&cfg));
    let m = manifest_json(
        OCI_MANIFEST,
        (OCI_CONFIG, &cd.to_string(), cfg.len()),
        &[(&ld.to_string(), layer.len())],
        "",
    );
    let md = put(m.as_bytes());
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    std::fs::write(
        dir.join("index.json"),
        format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"{OCI_MANIFEST}","digest":"{md}","size":{},"annotations":{{"org.opencontainers.image.ref.name":"{tag}"}}}}]}}"#,
            m.len()
        ),
    )
    .unwrap();
    md.to_string()
}

/// A Docker schema2 image in skopeo's `dir:` format; returns the manifest digest.
pub fn docker_dir(dir: &Path) -> String {
    let (layer, diff) = make_layer(&[("hello.txt", b"hello from schema2\n")]);
    let cfg = config_json(&diff);
    std::fs::create_dir_all(dir).unwrap();
    let put = |b: &[u8]| {
        let d = Digest::sha256(b);
        std::fs::write(dir.join(d.hex()), b).unwrap();
        d
    };
    let (ld, cd) = (put(&layer), put(&cfg));
    let m = manifest_json(
        DOCKER_MANIFEST,
        (DOCKER_CONFIG, &cd.to_string(), cfg.len()),
        &[(&ld.to_string(), layer.len())],
        "",
    );
    std::fs::write(dir.join("manifest.json"), &m).unwrap();
    std::fs::write(dir.join("version"), "Directory Transport Version: 1.1\n").unwrap();
    Digest::sha256(m.as_bytes()).to_string()
}

pub fn skopeo(args: &[&str]) -> std::process::Output {
    need("skopeo");

    Command::new("skopeo")
        .arg("--insecure-policy")
        .args(args)
        .output()
        .expect("run skopeo")
}

fn ok(o: std::process::Output, what: &str) -> String {
    assert!(
        o.status.success(),
        "{what}: {}\n{}",
        String::from_utf8_lossy(&o.stderr),
        String::from_utf8_lossy(&o.stdout)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|e| e.path().is_file())
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
pub(crate) fn skopeo_round_trips_oci_and_schema2() {
    skopeo_round_trips_oci_and_schema2_on(RegOpts::default());
}

/// The round trip on any storage (the S3 tests run it on a bucket).
pub(crate) fn skopeo_round_trips_oci_and_schema2_on(o: RegOpts) {
    let on_disk = o.storage.is_none();
    let r = Registryd::start(o);
    let d = TempDir::new("skopeo");
    let creds = format!("{USER}:{PASS}");
    let certs = pki().ca_dir.display().to_string();
    let host = r.host();

    // OCI layout -> registry -> OCI layout
    let layout = d.join("layout");
    let oci_digest = oci_layout(&layout, "v1");
    ok(
        skopeo(&[
            "copy",
            "--dest-creds",
            &creds,
            "--dest-cert-dir",
            &certs,
            &format!("oci:{}:v1", layout.display()),
            &format!("docker://{host}/site/oci-img:v1"),
        ]),
        "push OCI",
    );
    let back = d.join("back");
    ok(
        skopeo(&[
            "copy",
            "--src-creds",
            &creds,
            "--src-cert-dir",
            &certs,
            &format!("docker://{host}/site/oci-img:v1"),
            &format!("oci:{}:v1", back.display()),
        ]),
        "pull OCI",
    );
    assert_eq!(
        files(&layout.join("blobs/sha256")),
        files(&back.join("blobs/sha256")),
        "OCI blobs differ after the round trip"
    );

    // Docker schema2 (dir:) -> registry -> dir:, manifest kept byte-exact
    let dk = d.join("dk");
    let dk_digest = docker_dir(&dk);
    ok(
        skopeo(&[
            "copy",
            "--dest-creds",
            &creds,
            "--dest-cert-dir",
            &certs,
            &format!("dir:{}", dk.display()),
            &format!("docker://{host}/site/docker-img:v1"),
        ]),
        "push schema2",
    );
    let dk_back = d.join("dk-back");
    ok(
        skopeo(&[
            "copy",
            "--src-creds",
            &creds,
            "--src-cert-dir",
            &certs,
            &format!("docker://{host}/site/docker-img:v1"),
            &format!("dir:{}", dk_back.display()),
        ]),
        "pull schema2",
    );
    assert_eq!(
        std::fs::read(dk.join("manifest.json")).unwrap(),
        std::fs::read(dk_back.join("manifest.json")).unwrap()
    );
    for (name, data) in files(&dk) {
        if name != "version" {
            assert_eq!(
                std::fs::read(dk_back.join(&name)).unwrap(),
                data,
                "{name} differs"
            );
        }
    }

    // a second tag, then list-tags and inspect
    ok(
        skopeo(&[
            "copy",
            "--dest-creds",
            &creds,
            "--dest-cert-dir",
            &certs,
            &format!("oci:{}:v1", layout.display()),
            &format!("docker://{host}/site/oci-img:v2"),
        ]),
        "push second tag",
    );
    let tags: serde_json::Value = serde_json::from_str(&ok(
        skopeo(&[
            "list-tags",
            "--creds",
            &creds,
            "--cert-dir",
            &certs,
            &format!("docker://{host}/site/oci-img"),
        ]),
        "list-tags",
    ))
    .unwrap();
    assert_eq!(tags["Tags"], serde_json::json!(["v1", "v2"]));
    let insp: serde_json::Value = serde_json::from_str(&ok(
        skopeo(&[
            "inspect",
            "--creds",
            &creds,
            "--cert-dir",
            &certs,
            &format!("docker://{host}/site/oci-img:v1"),
        ]),
        "inspect",
    ))
    .unwrap();
    assert_eq!(insp["Digest"], serde_json::json!(oci_digest));
    assert_eq!(insp["Architecture"], "amd64");
    let raw = ok(
        skopeo(&[
            "inspect",
            "--raw",
            "--creds",
            &creds,
            "--cert-dir",
            &certs,
            &format!("docker://{host}/site/docker-img:v1"),
        ]),
        "inspect --raw",
    );
    assert_eq!(
        raw.as_bytes(),
        std::fs::read(dk.join("manifest.json")).unwrap()
    );
    assert_eq!(Digest::sha256(raw.as_bytes()).to_string(), dk_digest);

    // delete, then it is gone
    ok(
        skopeo(&[
            "delete",
            "--creds",
            &creds,
            "--cert-dir",
            &certs,
            &format!("docker://{host}/site/docker-img:v1"),
        ]),
        "delete",
    );
    let gone = skopeo(&[
        "inspect",
        "--creds",
        &creds,
        "--cert-dir",
        &certs,
        &format!("docker://{host}/site/docker-img:v1"),
    ]);
    assert!(!gone.status.success());
    if on_disk {
        // On a bucket the S3 tests check every blob object instead.
        assert_blobs_intact(&r.root);
    }
}

#[test]
fn skopeo_without_credentials_or_ca_fails() {
    let r = Registryd::start(RegOpts::default());
    let d = TempDir::new("skopeo-deny");
    let layout = d.join("layout");
    oci_layout(&layout, "v1");
    let certs = pki().ca_dir.display().to_string();
    let o = skopeo(&[
        "copy",
        "--dest-cert-dir",
        &certs,
        &format!("oci:{}:v1", layout.display()),
        &format!("docker://{}/x:v1", r.host()),
    ]);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("unauthorized")
            || String::from_utf8_lossy(&o.stderr).contains("authentication required"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let o = skopeo(&[
        "copy",
        "--dest-creds",
        &format!("{USER}:{PASS}"),
        &format!("oci:{}:v1", layout.display()),
        &format!("docker://{}/x:v1", r.host()),
    ]);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("certificate"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

//! The image client applets through the real binary: import, images, tag, rmi,
//! push, pull, login, search, save, load — against berth's registryd and Debian's
//! Distribution over TLS with basic auth, checked with skopeo.

use crate::harness::*;
use crate::registry_skopeo::skopeo;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// An isolated client environment: its own image store, docker config, certs.d.
pub struct Env {
    pub dir: TempDir,
    pub root: PathBuf,
}

impl Env {
    pub fn new() -> Env {
        let dir = TempDir::new("client");
        let root = dir.join("store");
        std::fs::create_dir_all(dir.join("docker")).unwrap();
        std::fs::create_dir_all(dir.join("certs.d")).unwrap();
        std::fs::write(dir.join("client.yml"), "").unwrap();
        Env { root, dir }
    }

    /// Trust the test CA for `host` the docker way: certs.d/HOST/ca.crt.
    pub fn trust(&self, host: &str) {
        let d = self.dir.join(&format!("certs.d/{host}"));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::copy(&pki().ca, d.join("ca.crt")).unwrap();
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = berth(args);
        c.env("BERTH_ROOT", &self.root)
            .env("DOCKER_CONFIG", self.dir.join("docker"))
            .env("BERTH_CERTS_D", self.dir.join("certs.d"))
            .env("BERTH_CLIENT_CONFIG", self.dir.join("client.yml"))
            .env_remove("SOURCE_DATE_EPOCH");
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }

    /// Run and require success; stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(
            o.status.success(),
            "berth {args:?} failed: {}{}",
            stderr(&o),
            stdout(&o)
        );
        stdout(&o)
    }

    /// Run with `input` on stdin.
    pub fn run_with_input(&self, args: &[&str], input: &str) -> Output {
        let mut c = self
            .cmd(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // the command may exit before reading (a refused login): a closed pipe is fine
        let _ = c.stdin.take().unwrap().write_all(input.as_bytes());
        c.wait_with_output().unwrap()
    }

    /// `berth login` with the test user; `extra` goes before the server.
    pub fn login_with(&self, r: &Registryd, extra: &[&str]) {
        let host = r.host();
        let mut args = vec!["login"];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["-u", USER, "--password-stdin", &host]);
        let o = self.run_with_input(&args, &format!("{PASS}\n"));
        assert!(o.status.success(), "login: {}", stderr(&o));
        assert!(stdout(&o).contains("Login Succeeded"));
    }

    pub fn login(&self, r: &Registryd) {
        self.login_with(r, &[]);
    }

    pub fn blob_count(&self) -> usize {
        std::fs::read_dir(self.root.join("blobs/sha256"))
            .map(|r| r.count())
            .unwrap_or(0)
    }
}

/// A busybox-static root filesystem as a tarball; returns its path.
pub fn busybox_tarball(dir: &Path, gzip: bool) -> PathBuf {
    need("busybox");
    let root = dir.join("rootfs");
    if !root.exists() {
        std::fs::create_dir_all(root.join("bin")).unwrap();
        std::fs::create_dir_all(root.join("etc")).unwrap();
        let bb = ["/bin/busybox", "/usr/bin/busybox"]
            .iter()
            .find(|p| Path::new(p).exists())
            .expect("busybox-static");
        std::fs::copy(bb, root.join("bin/busybox")).unwrap();
        for l in ["sh", "ls", "cat", "echo", "hostname"] {
            std::os::unix::fs::symlink("busybox", root.join("bin").join(l)).unwrap();
        }
        std::fs::write(
            root.join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\ncondor:x:64:64::/var/lib/condor:/sbin/nologin\n",
        )
        .unwrap();
    }
    let out = dir.join(if gzip { "rootfs.tar.gz" } else { "rootfs.tar" });
    let flag = if gzip { "-czf" } else { "-cf" };
    let o = Command::new("tar")
        .args([
            "-C",
            root.to_str().unwrap(),
            "--numeric-owner",
            "--sort=name",
            "--mtime=@1490616000",
            flag,
            out.to_str().unwrap(),
            ".",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    out
}

pub fn json_of(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// Manifest digest an image name resolves to in an env's store.
pub fn manifest_of(env: &Env, name: &str) -> String {
    let refs = json_of(&env.root.join("refs.json"));
    let key = if name.rsplit('/').next().unwrap().contains(':') {
        name.to_string()
    } else {
        format!("{name}:latest")
    };
    refs["tags"][&key]
        .as_str()
        .unwrap_or_else(|| panic!("{key} not in {refs}"))
        .to_string()
}

#[test]
pub(crate) fn import_is_reproducible_and_applies_changes() {
    let env = Env::new();
    let tgz = busybox_tarball(env.dir.path(), true);
    let tar = busybox_tarball(env.dir.path(), false);
    let a = env.ok(&[
        "import",
        "--created",
        "2017-03-27T12:00:00Z",
        "-c",
        "CMD [\"/bin/sh\"]",
        "-c",
        "ENV SITE=triumf",
        "-m",
        "site image",
        tgz.to_str().unwrap(),
        "sl6:umd3condv4",
    ]);
    let b = env.ok(&[
        "import",
        "--created",
        "2017-03-27T12:00:00Z",
        "-c",
        "CMD [\"/bin/sh\"]",
        "-c",
        "ENV SITE=triumf",
        "-m",
        "site image",
        tar.to_str().unwrap(),
        "sl6:again",
    ]);
    assert_eq!(a, b, "same tree, plain or gzip, gives the same image id");
    assert!(a.trim().starts_with("sha256:") && a.trim().len() == 71);
    assert_eq!(
        manifest_of(&env, "sl6:umd3condv4"),
        manifest_of(&env, "sl6:again")
    );
    // SOURCE_DATE_EPOCH pins the time the same way
    let o = env
        .cmd(&["import", tar.to_str().unwrap()])
        .env("SOURCE_DATE_EPOCH", "1490616000")
        .output()
        .unwrap();
    let c = env
        .cmd(&["import", tar.to_str().unwrap()])
        .env("SOURCE_DATE_EPOCH", "1490616000")
        .output()
        .unwrap();
    assert_eq!(stdout(&o), stdout(&c));
    // the config says what --change and -m said, and the manifest is schema2
    let m = manifest_of(&env, "sl6:umd3condv4");
    let manifest = json_of(&env.root.join(format!("blobs/sha256/{}", &m[7..])));
    assert_eq!(manifest["mediaType"], DOCKER_MANIFEST);
    assert_eq!(
        manifest["layers"][0]["mediaType"],
        "application/vnd.docker.image.rootfs.diff.tar.gzip"
    );
    let cfg = json_of(&env.root.join(format!("blobs/sha256/{}", &a.trim()[7..])));
    assert_eq!(cfg["config"]["Cmd"], serde_json::json!(["/bin/sh"]));
    assert_eq!(cfg["config"]["Env"], serde_json::json!(["SITE=triumf"]));
    assert_eq!(cfg["created"], "2017-03-27T12:00:00Z");
    assert_eq!(cfg["history"][0]["comment"], "site image");
    // the diff_id is the tar exactly as given
    let tar_bytes = std::fs::read(&tar).unwrap();
    assert_eq!(
        cfg["rootfs"]["diff_ids"][0],
        berth::digest::Digest::sha256(&tar_bytes).to_string()
    );
    // --format oci
    env.ok(&[
        "import",
        "--format",
        "oci",
        "--created",
        "0",
        tar.to_str().unwrap(),
        "sl6:oci",
    ]);
    let om = json_of(&env.root.join(format!(
        "blobs/sha256/{}",
        &manifest_of(&env, "sl6:oci")[7..]
    )));
    assert_eq!(om["mediaType"], OCI_MANIFEST);
    assert_eq!(om["config"]["mediaType"], OCI_CONFIG);
    // images shows them like docker does
    let images = env.ok(&["images"]);
    let first = images.lines().next().unwrap();
    assert!(
        first.starts_with("REPOSITORY")
            && first.contains("IMAGE ID")
            && first.contains("CREATED")
            && first.ends_with("SIZE"),
        "{images}"
    );
    let line = images.lines().find(|l| l.contains("umd3condv4")).unwrap();
    assert!(
        line.starts_with("sl6 ") && line.contains(&a.trim()[7..19]),
        "{images}"
    );
    let q = env.ok(&["images", "-q"]);
    assert!(q.lines().any(|l| l == &a.trim()[7..19]));
}

#[test]
fn import_refuses_bad_tarballs_and_leaves_the_store_unchanged() {
    let env = Env::new();
    let tgz = busybox_tarball(env.dir.path(), true);
    env.ok(&["import", tgz.to_str().unwrap(), "good:1"]);
    let refs_before = std::fs::read(env.root.join("refs.json")).unwrap();
    let blobs_before = env.blob_count();
    let data = std::fs::read(&tgz).unwrap();
    let tar = busybox_tarball(env.dir.path(), false);
    let tar_data = std::fs::read(&tar).unwrap();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("truncated.tar.gz", data[..data.len() / 2].to_vec()),
        ("truncated.tar", tar_data[..tar_data.len() / 3].to_vec()),
        (
            "garbage.tar",
            b"this is not a tarball at all, just some text".repeat(20),
        ),
    ];
    for (name, bytes) in cases {
        let p = env.dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        let o = env.run(&["import", p.to_str().unwrap(), "bad:1"]);
        assert!(!o.status.success(), "{name} was accepted");
        let err = stderr(&o);
        assert!(
            err.starts_with("import: ") && err.lines().count() == 1,
            "{name}: {err}"
        );
        assert!(
            err.contains("truncated") || err.contains("not a tar") || err.contains("corrupt"),
            "{name}: {err}"
        );
        assert_eq!(
            std::fs::read(env.root.join("refs.json")).unwrap(),
            refs_before,
            "{name} changed the refs"
        );
        assert_eq!(env.blob_count(), blobs_before, "{name} left a blob");
        assert_eq!(
            std::fs::read_dir(env.root.join("tmp")).unwrap().count(),
            0,
            "{name} left a temp file"
        );
    }
    let o = env.run(&["import", "/nonexistent/rootfs.tar"]);
    assert!(stderr(&o).contains("/nonexistent/rootfs.tar"));
}

fn push_pull_roundtrip(distribution: bool) {
    let r = Registryd::start(RegOpts {
        distribution,
        ..RegOpts::default()
    });
    let env = Env::new();
    env.trust(&r.host());
    env.login(&r);
    // config.json in docker's format, private
    let cfgp = env.dir.join("docker/config.json");
    let cfg = json_of(&cfgp);
    use base64::Engine;
    let auth = cfg["auths"][&r.host()]["auth"].as_str().unwrap();
    assert_eq!(
        base64::engine::general_purpose::STANDARD
            .decode(auth)
            .unwrap(),
        format!("{USER}:{PASS}").as_bytes()
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&cfgp).unwrap().permissions().mode() & 0o777,
        0o600
    );

    let tgz = busybox_tarball(env.dir.path(), true);
    let id = env.ok(&[
        "import",
        "--created",
        "2017-03-27T12:00:00Z",
        tgz.to_str().unwrap(),
        "sl6:umd3condv4",
    ]);
    let target = format!("{}/sl6-umd3condv4", r.host());
    env.ok(&["tag", "sl6:umd3condv4", &target]);
    let push = env.run(&["push", &target]);
    assert!(push.status.success(), "{}", stderr(&push));
    assert!(stderr(&push).contains("Pushed"), "{}", stderr(&push));
    let pushed = stdout(&push).trim().rsplit('@').next().unwrap().to_string();
    assert_eq!(pushed, manifest_of(&env, &target));

    // skopeo sees exactly what we pushed
    let creds = format!("{USER}:{PASS}");
    let certs = pki().ca_dir.display().to_string();
    let insp: serde_json::Value = serde_json::from_slice(
        &skopeo(&[
            "inspect",
            "--creds",
            &creds,
            "--cert-dir",
            &certs,
            &format!("docker://{target}"),
        ])
        .stdout,
    )
    .unwrap();
    assert_eq!(insp["Digest"], pushed);
    let oci = env.dir.join("skopeo-oci");
    let o = skopeo(&[
        "copy",
        "--src-creds",
        &creds,
        "--src-cert-dir",
        &certs,
        &format!("docker://{target}"),
        &format!("oci:{}:x", oci.display()),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // oci: converts the schema2 manifest, so compare what it must keep: config and layers
    let idx = json_of(&oci.join("index.json"));
    let sk_manifest = json_of(&oci.join(format!(
        "blobs/sha256/{}",
        &idx["manifests"][0]["digest"].as_str().unwrap()[7..]
    )));
    let ours = json_of(&env.root.join(format!("blobs/sha256/{}", &pushed[7..])));
    assert_eq!(
        sk_manifest["config"]["digest"],
        id.trim(),
        "config digest changed"
    );
    assert_eq!(
        sk_manifest["layers"][0]["digest"], ours["layers"][0]["digest"],
        "layer digest changed"
    );

    // a second push skips what is there; another repository mounts
    let again = env.run(&["push", &target]);
    assert!(
        stderr(&again).contains("Layer already exists"),
        "{}",
        stderr(&again)
    );
    let other = format!("{}/site/other:v1", r.host());
    env.ok(&["tag", "sl6:umd3condv4", &other]);
    let mounted = env.run(&["push", &other]);
    assert!(mounted.status.success(), "{}", stderr(&mounted));
    assert!(
        stderr(&mounted).contains("Mounted from sl6-umd3condv4"),
        "{}",
        stderr(&mounted)
    );

    // pull into an empty store
    let fresh = Env::new();
    fresh.trust(&r.host());
    std::fs::copy(&cfgp, fresh.dir.join("docker/config.json")).unwrap();
    let pull = fresh.run(&["pull", &target]);
    assert!(pull.status.success(), "{}", stderr(&pull));
    assert!(stderr(&pull).contains("Pull complete"), "{}", stderr(&pull));
    assert!(stderr(&pull).contains(&format!("Digest: {pushed}")));
    assert_eq!(manifest_of(&fresh, &target), pushed);
    let imgs = fresh.ok(&["images", "--digests"]);
    assert!(
        imgs.contains(&pushed) && imgs.contains(&id.trim()[7..19]),
        "{imgs}"
    );
    // tags via the registry, and by digest
    let by_digest = format!("{}/sl6-umd3condv4@{pushed}", r.host());
    fresh.ok(&["pull", &by_digest]);
}

#[test]
pub(crate) fn push_pull_with_registryd() {
    push_pull_roundtrip(false);
}

#[test]
fn push_pull_with_distribution() {
    push_pull_roundtrip(true);
}

#[test]
pub(crate) fn save_and_load_with_skopeo_both_ways() {
    let r = Registryd::start(RegOpts::default());
    let env = Env::new();
    env.trust(&r.host());
    env.login(&r);
    let tgz = busybox_tarball(env.dir.path(), true);
    let id = env.ok(&[
        "import",
        "--created",
        "2017-03-27T12:00:00Z",
        tgz.to_str().unwrap(),
        &format!("{}/sl6:v1", r.host()),
    ]);
    env.ok(&["push", &format!("{}/sl6:v1", r.host())]);
    let manifest = manifest_of(&env, &format!("{}/sl6:v1", r.host()));
    let archive = env.dir.join("sl6.tar");
    env.ok(&[
        "save",
        "-o",
        archive.to_str().unwrap(),
        &format!("{}/sl6:v1", r.host()),
    ]);
    // skopeo reads it as a docker-archive…
    let insp = skopeo(&[
        "inspect",
        "--raw",
        "--config",
        &format!("docker-archive:{}", archive.display()),
    ]);
    assert!(
        insp.status.success(),
        "{}",
        String::from_utf8_lossy(&insp.stderr)
    );
    assert_eq!(
        berth::digest::Digest::sha256(&insp.stdout).to_string(),
        id.trim(),
        "config differs in skopeo's view"
    );
    let out = env.dir.join("from-archive");
    let o = skopeo(&[
        "copy",
        &format!("docker-archive:{}", archive.display()),
        &format!("oci:{}:x", out.display()),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // …and as an OCI layout
    let o = skopeo(&[
        "inspect",
        "--raw",
        &format!("oci-archive:{}", archive.display()),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        berth::digest::Digest::sha256(&o.stdout).to_string(),
        manifest
    );
    // load into an empty store keeps the manifest and the repo digest
    let fresh = Env::new();
    let l = fresh.ok(&["load", "-i", archive.to_str().unwrap()]);
    assert_eq!(l.trim(), format!("Loaded image: {}/sl6:v1", r.host()));
    assert_eq!(
        manifest_of(&fresh, &format!("{}/sl6:v1", r.host())),
        manifest
    );
    let imgs = fresh.ok(&["images", "--digests"]);
    assert!(imgs.contains(&manifest), "repo digest lost: {imgs}");
    // gzip'd archives load too, and --format oci writes a plain OCI layout
    let oci_tar = env.dir.join("sl6-oci.tar");
    env.ok(&[
        "save",
        "--format",
        "oci",
        "-o",
        oci_tar.to_str().unwrap(),
        &format!("{}/sl6:v1", r.host()),
    ]);
    let layout = env.dir.join("sl6-oci");
    std::fs::create_dir_all(&layout).unwrap();
    let untar = Command::new("tar")
        .args([
            "-C",
            layout.to_str().unwrap(),
            "-xf",
            oci_tar.to_str().unwrap(),
        ])
        .status();
    assert!(untar.unwrap().success());
    // schema2 is converted for an OCI layout; config and layers keep their digests
    let o = skopeo(&["inspect", "--raw", &format!("oci:{}:v1", layout.display())]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let om: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(om["mediaType"], OCI_MANIFEST);
    assert_eq!(om["config"]["digest"], id.trim());
    let gz = env.dir.join("sl6.tar.gz");
    let st = Command::new("sh")
        .arg("-c")
        .arg(format!("gzip -c {} > {}", archive.display(), gz.display()))
        .status()
        .unwrap();
    assert!(st.success());
    let third = Env::new();
    third.ok(&["load", "-i", gz.to_str().unwrap()]);
    assert_eq!(
        manifest_of(&third, &format!("{}/sl6:v1", r.host())),
        manifest
    );

    // skopeo writes a docker-archive (uncompressed layers): berth loads it
    let sk_archive = env.dir.join("skopeo.tar");
    let o = skopeo(&[
        "copy",
        "--src-creds",
        &format!("{USER}:{PASS}"),
        "--src-cert-dir",
        &pki().ca_dir.display().to_string(),
        &format!("docker://{}/sl6:v1", r.host()),
        &format!(
            "docker-archive:{}:site/sl6:from-skopeo",
            sk_archive.display()
        ),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let fourth = Env::new();
    let l = fourth.ok(&["load", "-i", sk_archive.to_str().unwrap()]);
    assert!(l.contains("Loaded image: site/sl6:from-skopeo"), "{l}");
    let q = fourth.ok(&["images", "-q", "--no-trunc"]);
    assert_eq!(
        q.trim(),
        id.trim(),
        "image id (config digest) not preserved"
    );
    // and what it loaded can be saved and read again
    let round = env.dir.join("round.tar");
    fourth.ok(&[
        "save",
        "-o",
        round.to_str().unwrap(),
        "site/sl6:from-skopeo",
    ]);
    let o = skopeo(&["inspect", &format!("docker-archive:{}", round.display())]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn pull_by_present_digest_needs_no_network() {
    let mut r = Registryd::start(RegOpts::default());
    let env = Env::new();
    env.trust(&r.host());
    env.login(&r);
    let tgz = busybox_tarball(env.dir.path(), true);
    env.ok(&[
        "import",
        tgz.to_str().unwrap(),
        &format!("{}/x:v1", r.host()),
    ]);
    let pushed = env.ok(&["push", &format!("{}/x:v1", r.host())]);
    let digest = pushed.trim().rsplit('@').next().unwrap().to_string();
    let fresh = Env::new();
    fresh.trust(&r.host());
    std::fs::copy(
        env.dir.join("docker/config.json"),
        fresh.dir.join("docker/config.json"),
    )
    .unwrap();
    fresh.ok(&["pull", &format!("{}/x@{digest}", r.host())]);
    // the registry goes away; the digest is still served from the store
    let _ = r.child.kill();
    let _ = r.child.wait();
    let o = fresh.run(&["pull", &format!("{}/x@{digest}", r.host())]);
    assert!(o.status.success(), "needed the network: {}", stderr(&o));
    // while a tag needs the registry
    let o = fresh.run(&["pull", &format!("{}/x:v1", r.host())]);
    assert!(!o.status.success());
}

/// A registry that lies: serves a manifest whose layer bytes do not match.
fn evil_registry(layer_claimed: &str, layer_sent: Vec<u8>, manifest: String) -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let claimed = layer_claimed.to_string();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let mut buf = vec![0u8; 8192];
            let n = s.read(&mut buf).unwrap_or(0);
            let req = String::from_utf8_lossy(&buf[..n]).to_string();
            let path = req.split_whitespace().nth(1).unwrap_or("").to_string();
            let (ct, body): (&str, Vec<u8>) = if path.contains("/manifests/") {
                (DOCKER_MANIFEST, manifest.clone().into_bytes())
            } else if path.contains(&format!("/blobs/{claimed}")) {
                ("application/octet-stream", layer_sent.clone())
            } else if path.contains("/blobs/") {
                ("application/octet-stream", b"{}".to_vec())
            } else {
                ("application/json", b"{}".to_vec())
            };
            let head = req.starts_with("HEAD");
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Type: {ct}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            if !head {
                let _ = s.write_all(&body);
            }
        }
    });
    port
}

#[test]
fn pull_refuses_a_blob_whose_digest_mismatches() {
    let good = b"the real layer".to_vec();
    let claimed = berth::digest::Digest::sha256(&good).to_string();
    let cfg_d = berth::digest::Digest::sha256(b"{}").to_string();
    let manifest = manifest_json(
        DOCKER_MANIFEST,
        (DOCKER_CONFIG, &cfg_d, 2),
        &[(&claimed, good.len())],
        "",
    );
    let port = evil_registry(&claimed, b"tampered layer".to_vec(), manifest);
    let env = Env::new();
    let host = format!("127.0.0.1:{port}");
    let o = env.run(&[
        "pull",
        "--insecure-registry",
        &host,
        &format!("{host}/evil:latest"),
    ]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("failed verification") || stderr(&o).contains("digest"),
        "{}",
        stderr(&o)
    );
    assert!(
        !env.root
            .join(format!("blobs/sha256/{}", &claimed[7..]))
            .exists()
    );
    let refs = std::fs::read_to_string(env.root.join("refs.json")).unwrap_or_default();
    assert!(!refs.contains("evil"), "a ref was recorded: {refs}");
    assert_eq!(std::fs::read_dir(env.root.join("tmp")).unwrap().count(), 0);
}

#[test]
fn errors_say_what_to_do() {
    let r = Registryd::start(RegOpts::default());
    let env = Env::new();
    // unknown CA: the message names the certs.d file to create
    let o = env.run(&["pull", &format!("{}/x:v1", r.host())]);
    assert!(!o.status.success());
    let want = format!("{}/{}/ca.crt", env.dir.join("certs.d").display(), r.host());
    assert!(stderr(&o).contains(&want), "{}", stderr(&o));
    // trusted, but not logged in: say how to log in
    env.trust(&r.host());
    let o = env.run(&["pull", &format!("{}/x:v1", r.host())]);
    assert!(
        stderr(&o).contains(&format!("berth login {}", r.host())),
        "{}",
        stderr(&o)
    );
    // wrong password: login fails and stores nothing
    let o = env.run_with_input(
        &["login", "-u", USER, "--password-stdin", &r.host()],
        "wrong\n",
    );
    assert!(!o.status.success());
    assert!(stderr(&o).contains("login failed"), "{}", stderr(&o));
    assert!(!env.dir.join("docker/config.json").exists());
    // unknown images
    env.login(&r);
    let o = env.run(&["pull", &format!("{}/never/pushed:v1", r.host())]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("not found"), "{}", stderr(&o));
    let o = env.run(&["push", &format!("{}/not-local:v1", r.host())]);
    assert!(stderr(&o).contains("no such image"), "{}", stderr(&o));
    for args in [
        vec!["rmi", "nosuch:tag"],
        vec!["tag", "nosuch", "x"],
        vec!["save", "-o", "/dev/null", "nosuch"],
    ] {
        let o = env.run(&args);
        assert!(
            !o.status.success() && stderr(&o).contains("no such image"),
            "{args:?}: {}",
            stderr(&o)
        );
    }
    let o = env.run(&["pull", "Bad/UPPER"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("invalid repository name"),
        "{}",
        stderr(&o)
    );
    // --insecure-registry: unverified TLS for that host only
    let open = Env::new();
    open.login_with(&r, &["--insecure-registry", &r.host()]);
}

#[test]
pub(crate) fn insecure_plain_http_registry_and_defaults_file() {
    let r = Registryd::start(RegOpts {
        tls: false,
        auth: false,
        ..RegOpts::default()
    });
    let env = Env::new();
    let tgz = busybox_tarball(env.dir.path(), true);
    env.ok(&[
        "import",
        tgz.to_str().unwrap(),
        &format!("{}/site/wn:v1", r.host()),
    ]);
    // without the flag, plain HTTP is not used, and the error says what to do
    let o = env.run(&["push", &format!("{}/site/wn:v1", r.host())]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains(&format!("--insecure-registry {}", r.host())),
        "{}",
        stderr(&o)
    );
    // the site's daemon settings in the client file: search, block, insecure
    std::fs::write(
        env.dir.join("client.yml"),
        format!(
            "registries:\n  search: [{h}]\n  block: [docker.io]\n  insecure: [{h}]\n",
            h = r.host()
        ),
    )
    .unwrap();
    env.ok(&["push", &format!("{}/site/wn:v1", r.host())]);
    let fresh = Env::new();
    std::fs::copy(env.dir.join("client.yml"), fresh.dir.join("client.yml")).unwrap();
    let o = fresh.run(&["pull", "site/wn:v1"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o).trim(), format!("{}/site/wn:v1", r.host()));
    // docker.io is blocked: a short name that is nowhere fails naming the block
    let o = fresh.run(&[
        "pull",
        "--add-registry",
        "localhost:1",
        "--block-registry",
        &r.host(),
        "busybox",
    ]);
    assert!(!o.status.success());
    // a short name is pushed to the first search registry…
    fresh.ok(&["tag", &format!("{}/site/wn:v1", r.host()), "wn2:v1"]);
    fresh.ok(&["push", "wn2:v1"]);
    assert_eq!(
        r.client().get(&r.url("/v2/wn2/tags/list")).json()["tags"],
        serde_json::json!(["v1"])
    );
    // …and nowhere when every registry is blocked
    let o = fresh.run(&["push", "--block-registry", &r.host(), "wn2:v1"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("tag it for a registry first"),
        "{}",
        stderr(&o)
    );
    // search across the configured registry
    let s = fresh.ok(&["search", "wn"]);
    assert!(s.lines().next().unwrap().starts_with("NAME"));
    assert!(s.contains(&format!("{}/site/wn", r.host())), "{s}");
    let s = fresh.ok(&["search", &format!("{}/site", r.host())]);
    assert!(s.contains("site/wn"), "{s}");
}

/// A proxy that drops the connection of the `nth` PATCH it sees, once.
fn flaky_proxy(backend: u16, nth: usize) -> (u16, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let patches = std::sync::Arc::new(AtomicUsize::new(0));
    let p2 = patches.clone();
    std::thread::spawn(move || {
        for c in l.incoming() {
            let Ok(mut c) = c else { continue };
            let patches = p2.clone();
            std::thread::spawn(move || {
                let Ok(mut b) = std::net::TcpStream::connect(("127.0.0.1", backend)) else {
                    return;
                };
                let mut b2 = b.try_clone().unwrap();
                let mut c2 = c.try_clone().unwrap();
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut b2, &mut c2);
                    let _ = c2.shutdown(std::net::Shutdown::Both);
                });
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    let n = match c.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    if buf[..n].starts_with(b"PATCH ")
                        && patches.fetch_add(1, Ordering::SeqCst) + 1 == nth
                    {
                        // forward half the chunk, then cut both sides
                        let _ = b.write_all(&buf[..n / 2]);
                        let _ = b.shutdown(std::net::Shutdown::Both);
                        let _ = c.shutdown(std::net::Shutdown::Both);
                        return;
                    }
                    if b.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
                let _ = b.shutdown(std::net::Shutdown::Write);
            });
        }
    });
    (port, patches)
}

#[test]
fn chunked_push_retries_a_failed_chunk_from_the_reported_offset() {
    let r = Registryd::start(RegOpts {
        tls: false,
        auth: false,
        ..RegOpts::default()
    });
    let (port, patches) = flaky_proxy(r.port, 3);
    let host = format!("127.0.0.1:{port}");
    let env = Env::new();
    // a layer of a few hundred KiB of incompressible bytes
    let d = env.dir.join("rnd");
    std::fs::create_dir_all(&d).unwrap();
    let mut rnd = vec![0u8; 600 * 1024];
    berth::util::random_bytes(&mut rnd);
    std::fs::write(d.join("data.bin"), &rnd).unwrap();
    let tar = env.dir.join("rnd.tar");
    assert!(
        Command::new("tar")
            .args(["-C", d.to_str().unwrap(), "-cf", tar.to_str().unwrap(), "."])
            .status()
            .unwrap()
            .success()
    );
    env.ok(&[
        "import",
        tar.to_str().unwrap(),
        &format!("{host}/chunky:v1"),
    ]);
    let o = env.run(&[
        "push",
        "--insecure-registry",
        &host,
        "--chunk-size",
        "64k",
        &format!("{host}/chunky:v1"),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        patches.load(std::sync::atomic::Ordering::SeqCst) > 8,
        "not chunked"
    );
    // the registry has every byte right: pull it back through the registry directly
    let fresh = Env::new();
    let direct = format!("{}/chunky:v1", r.host());
    fresh.ok(&["pull", "--insecure-registry", &r.host(), &direct]);
    let orig = manifest_of(&env, &format!("{host}/chunky:v1"));
    assert_eq!(manifest_of(&fresh, &direct), orig);
    assert_blobs_intact(&r.root);
}

#[test]
pub(crate) fn rmi_refuses_images_in_use_and_frees_blobs() {
    let env = Env::new();
    let tgz = busybox_tarball(env.dir.path(), true);
    let id = env.ok(&["import", tgz.to_str().unwrap(), "sl6:a"]);
    env.ok(&["tag", "sl6:a", "sl6:b"]);
    assert!(env.blob_count() >= 3);
    // removing one of two names only untags
    let o = env.ok(&["rmi", "sl6:b"]);
    assert_eq!(o.trim(), "Untagged: sl6:b");
    // a container holds the image (the engine's lease file)
    let m = manifest_of(&env, "sl6:a");
    std::fs::write(env.root.join("leases/container-1"), format!("{m}\n")).unwrap();
    let o = env.run(&["rmi", "sl6:a"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("in use by a container"),
        "{}",
        stderr(&o)
    );
    let o = env.ok(&["rmi", "-f", "sl6:a"]);
    assert!(
        o.contains("Untagged: sl6:a") && o.contains(&format!("Deleted: {}", id.trim())),
        "{o}"
    );
    // the lease still pins the blobs; once it goes, an rmi sweep frees them
    std::fs::remove_file(env.root.join("leases/container-1")).unwrap();
    env.ok(&["import", tgz.to_str().unwrap(), "other:1"]);
    env.ok(&["rmi", "other:1"]);
    assert_eq!(env.blob_count(), 0, "blobs left after removing every image");
    assert!(env.ok(&["images", "-q"]).trim().is_empty());
}

/// Push a config + layer to `r` (raw HTTP) and return (config digest, layer digest, sizes).
fn push_image_parts(r: &Registryd, c: &Client, repo: &str) -> (String, usize, String, usize) {
    let (layer, diff) = crate::registry_skopeo::make_layer(&[("hello.txt", b"from an index\n")]);
    let cfg = crate::registry_skopeo::config_json(&diff);
    let cd = push_blob(r, c, repo, &cfg);
    let ld = push_blob(r, c, repo, &layer);
    (cd, cfg.len(), ld, layer.len())
}

#[test]
fn pull_selects_linux_amd64_from_an_index() {
    let r = Registryd::start(RegOpts {
        tls: false,
        auth: false,
        ..RegOpts::default()
    });
    let c = r.client();
    let (cd, cs, ld, ls) = push_image_parts(&r, &c, "multi");
    let amd64 = manifest_json(OCI_MANIFEST, (OCI_CONFIG, &cd, cs), &[(&ld, ls)], "");
    let arm = manifest_json(
        OCI_MANIFEST,
        (OCI_CONFIG, &cd, cs),
        &[(&ld, ls)],
        r#","annotations":{"arch":"arm64"}"#,
    );
    for m in [&amd64, &arm] {
        let d = berth::digest::Digest::sha256(m.as_bytes()).to_string();
        assert_eq!(
            c.req(
                "PUT",
                &r.url(&format!("/v2/multi/manifests/{d}")),
                &[("Content-Type", OCI_MANIFEST)],
                Some(m.as_bytes())
            )
            .status,
            201
        );
    }
    let d = |m: &str| berth::digest::Digest::sha256(m.as_bytes()).to_string();
    let index = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[{{"mediaType":"{OCI_MANIFEST}","digest":"{}","size":{},"platform":{{"architecture":"arm64","os":"linux"}}}},{{"mediaType":"{OCI_MANIFEST}","digest":"{}","size":{},"platform":{{"architecture":"amd64","os":"linux"}}}}]}}"#,
        d(&arm),
        arm.len(),
        d(&amd64),
        amd64.len()
    );
    assert_eq!(
        c.req(
            "PUT",
            &r.url("/v2/multi/manifests/v1"),
            &[("Content-Type", OCI_INDEX)],
            Some(index.as_bytes())
        )
        .status,
        201
    );
    let env = Env::new();
    let o = env.run(&[
        "pull",
        "--insecure-registry",
        &r.host(),
        &format!("{}/multi:v1", r.host()),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        manifest_of(&env, &format!("{}/multi:v1", r.host())),
        d(&amd64),
        "not the amd64 manifest"
    );
    // the repo digest is the index's, as docker records it
    let imgs = env.ok(&["images", "--digests"]);
    assert!(imgs.contains(&d(&index)), "{imgs}");
    // pulling the index by digest again needs nothing new
    env.ok(&[
        "pull",
        "--insecure-registry",
        &r.host(),
        &format!("{}/multi@{}", r.host(), d(&index)),
    ]);
}

/// A registry that wants bearer tokens from its own token service.
fn token_registry(
    manifest: Vec<u8>,
    blobs: Vec<(String, Vec<u8>)>,
) -> (u16, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen2 = seen.clone();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let mut buf = vec![0u8; 16384];
            let n = s.read(&mut buf).unwrap_or(0);
            let req = String::from_utf8_lossy(&buf[..n]).to_string();
            let line = req.lines().next().unwrap_or("").to_string();
            let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
            let auth = req
                .lines()
                .find(|l| l.to_ascii_lowercase().starts_with("authorization:"))
                .map(|l| l[14..].trim().to_string());
            seen2
                .lock()
                .unwrap()
                .push(format!("{path} {}", auth.clone().unwrap_or_default()));
            let (status, extra, body): (&str, String, Vec<u8>) = if path.starts_with("/token") {
                if auth.as_deref() == Some(basic(USER, PASS).as_str())
                    && path.contains("scope=repository%3Atok%2Fimg%3Apull")
                {
                    ("200 OK", String::new(), br#"{"token":"tok-123"}"#.to_vec())
                } else {
                    ("401 Unauthorized", String::new(), b"{}".to_vec())
                }
            } else if auth.as_deref() != Some("Bearer tok-123") {
                let ch = format!(
                    "WWW-Authenticate: Bearer realm=\"http://127.0.0.1:{port}/token\",service=\"test-registry\",scope=\"repository:tok/img:pull\"\r\n"
                );
                (
                    "401 Unauthorized",
                    ch,
                    br#"{"errors":[{"code":"UNAUTHORIZED","message":"token needed"}]}"#.to_vec(),
                )
            } else if path.contains("/manifests/") {
                (
                    "200 OK",
                    format!("Content-Type: {OCI_MANIFEST}\r\n"),
                    manifest.clone(),
                )
            } else if let Some((_, b)) = blobs.iter().find(|(d, _)| path.ends_with(d.as_str())) {
                ("200 OK", String::new(), b.clone())
            } else {
                ("404 Not Found", String::new(), b"{}".to_vec())
            };
            let _ = write!(
                s,
                "HTTP/1.1 {status}\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            if !line.starts_with("HEAD") {
                let _ = s.write_all(&body);
            }
        }
    });
    (port, seen)
}

#[test]
pub(crate) fn bearer_token_flow_and_logout() {
    let (layer, diff) = crate::registry_skopeo::make_layer(&[("t.txt", b"token protected\n")]);
    let cfg = crate::registry_skopeo::config_json(&diff);
    let (cd, ld) = (
        berth::digest::Digest::sha256(&cfg).to_string(),
        berth::digest::Digest::sha256(&layer).to_string(),
    );
    let m = manifest_json(
        OCI_MANIFEST,
        (OCI_CONFIG, &cd, cfg.len()),
        &[(&ld, layer.len())],
        "",
    );
    let (port, seen) = token_registry(m.clone().into_bytes(), vec![(cd, cfg), (ld, layer)]);
    let host = format!("127.0.0.1:{port}");
    let env = Env::new();
    // no credentials: the token service refuses, and the message says to log in
    let o = env.run(&[
        "pull",
        "--insecure-registry",
        &host,
        &format!("{host}/tok/img:v1"),
    ]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains(&format!("berth login {host}")),
        "{}",
        stderr(&o)
    );
    // credentials in docker's config.json are sent to the token service, the token to the registry
    use base64::Engine;
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASS}"));
    std::fs::write(
        env.dir.join("docker/config.json"),
        format!(r#"{{"auths":{{"https://{host}":{{"auth":"{auth}","email":""}}}}}}"#),
    )
    .unwrap();
    let o = env.run(&[
        "pull",
        "--insecure-registry",
        &host,
        &format!("{host}/tok/img:v1"),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        manifest_of(&env, &format!("{host}/tok/img:v1")),
        berth::digest::Digest::sha256(m.as_bytes()).to_string()
    );
    let log = seen.lock().unwrap().clone();
    assert!(
        log.iter()
            .any(|l| l.starts_with("/token") && l.contains("Basic")),
        "{log:?}"
    );
    assert!(
        log.iter()
            .any(|l| l.contains("/manifests/v1 Bearer tok-123")),
        "{log:?}"
    );
    assert!(
        !log.iter()
            .any(|l| !l.starts_with("/token") && l.contains("Basic")),
        "basic credentials went to the registry: {log:?}"
    );
    // logout removes the site-style https:// entry
    let o = env.ok(&["logout", &host]);
    assert!(
        o.contains(&format!("Removing login credentials for {host}")),
        "{o}"
    );
    let cfg = json_of(&env.dir.join("docker/config.json"));
    assert_eq!(cfg["auths"], serde_json::json!({}));
}

#[test]
fn client_certificates_from_certs_d() {
    // a registry that requires client certificates signed by the test CA
    let p = pki();
    let r = Registryd::start(RegOpts {
        auth: false,
        env: vec![(
            "REGISTRY_HTTP_TLS_CLIENTCAS".into(),
            p.ca.display().to_string(),
        )],
        ..RegOpts::default()
    });
    let env = Env::new();
    env.trust(&r.host());
    let tgz = busybox_tarball(env.dir.path(), true);
    env.ok(&[
        "import",
        tgz.to_str().unwrap(),
        &format!("{}/mtls:v1", r.host()),
    ]);
    let o = env.run(&["push", &format!("{}/mtls:v1", r.host())]);
    assert!(!o.status.success(), "pushed without a client certificate");
    let d = env.dir.join(&format!("certs.d/{}", r.host()));
    std::fs::copy(&p.cert, d.join("client.cert")).unwrap();
    std::fs::copy(&p.key, d.join("client.key")).unwrap();
    let o = env.run(&["push", &format!("{}/mtls:v1", r.host())]);
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn import_from_url_and_progress_on_a_terminal() {
    need("script");
    let env = Env::new();
    let tgz = busybox_tarball(env.dir.path(), true);
    let data = std::fs::read(&tgz).unwrap();
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in l.incoming().take(1) {
            let mut s = s.unwrap();
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                data.len()
            );
            let _ = s.write_all(&data);
        }
    });
    // the history names the source unless -m says otherwise: same message, same image
    let from_url = env.ok(&[
        "import",
        "--created",
        "0",
        "-m",
        "rootfs",
        &format!("http://127.0.0.1:{port}/rootfs.tar.gz"),
        "fromurl:v1",
    ]);
    let from_file = env.ok(&[
        "import",
        "--created",
        "0",
        "-m",
        "rootfs",
        tgz.to_str().unwrap(),
        "fromfile:v1",
    ]);
    assert_eq!(from_url, from_file);
    // on a terminal, pull draws bars; elsewhere it prints one line per layer (seen above)
    let r = Registryd::start(RegOpts {
        tls: false,
        auth: false,
        ..RegOpts::default()
    });
    env.ok(&["tag", "fromfile:v1", &format!("{}/tty:v1", r.host())]);
    env.ok(&[
        "push",
        "--insecure-registry",
        &r.host(),
        &format!("{}/tty:v1", r.host()),
    ]);
    let fresh = Env::new();
    let cmdline = format!(
        "{} pull --insecure-registry {h} {h}/tty:v1",
        bin().display(),
        h = r.host()
    );
    let o = fresh.cmd(&["--version"]).output().unwrap();
    assert!(o.status.success());
    let o = Command::new("script")
        .args(["-qec", &cmdline, "/dev/null"])
        .env("BERTH_ROOT", &fresh.root)
        .env("BERTH_CLIENT_CONFIG", fresh.dir.join("client.yml"))
        .env("TERM", "xterm")
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{out}");
    assert!(
        out.contains("Pull complete") && out.contains('\u{1b}'),
        "no terminal progress: {out:?}"
    );
}

#[test]
fn concurrent_applets_share_one_store() {
    let env = Env::new();
    let tgz = busybox_tarball(env.dir.path(), true);
    // several imports, tags and rmis at once on one store: every ref update lands
    std::thread::scope(|s| {
        for i in 0..6 {
            let (env, tgz) = (&env, &tgz);
            s.spawn(move || {
                let created = format!("{}", 1_490_616_000 + i);
                env.ok(&[
                    "import",
                    "--created",
                    &created,
                    tgz.to_str().unwrap(),
                    &format!("par/img:{i}"),
                ]);
                env.ok(&["tag", &format!("par/img:{i}"), &format!("par/alias:{i}")]);
                env.ok(&["tag", &format!("par/img:{i}"), &format!("par/gone:{i}")]);
                // the image keeps two other names: rmi only untags this one
                let out = env.ok(&["rmi", &format!("par/gone:{i}")]);
                assert_eq!(out.trim(), format!("Untagged: par/gone:{i}"));
            });
        }
    });
    let refs = json_of(&env.root.join("refs.json"));
    for i in 0..6 {
        assert!(
            refs["tags"][format!("par/img:{i}")].is_string(),
            "par/img:{i} lost: {refs}"
        );
        assert!(
            refs["tags"][format!("par/alias:{i}")].is_string(),
            "par/alias:{i} lost: {refs}"
        );
        assert!(
            refs["tags"].get(format!("par/gone:{i}")).is_none(),
            "par/gone:{i} came back: {refs}"
        );
    }
    assert_eq!(std::fs::read_dir(env.root.join("tmp")).unwrap().count(), 0);
}

/// The engine streams pull and push progress as dockerd's JSON messages: the same
/// transfer code, against a real registryd, through the JSON sink.
#[test]
fn pull_and_push_progress_as_dockers_json_messages() {
    use berth::progress::DockerJson;
    use berth::reference::Reference;
    use berth::registry::{Settings, transfer};
    use berth::store::local::LocalStore;
    use serde_json::{Value, json};

    fn messages(sink: DockerJson<Vec<u8>>) -> Vec<Value> {
        String::from_utf8(sink.into_inner())
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
    fn statuses<'a>(m: &'a [Value], id: &str) -> Vec<&'a str> {
        m.iter()
            .filter(|v| v["id"] == id)
            .map(|v| v["status"].as_str().unwrap())
            .collect()
    }

    let r = Registryd::start(RegOpts {
        tls: false,
        auth: false,
        ..RegOpts::default()
    });
    let env = Env::new();
    let tgz = busybox_tarball(env.dir.path(), true);
    let config = env.ok(&["import", tgz.to_str().unwrap(), "img:1"]);
    let config_id = &config.trim()[7..19];
    let settings = Settings {
        insecure: vec![r.host()],
        certs_d: env.dir.join("certs.d"),
        ..Settings::default()
    };
    let store = LocalStore::open(&env.root).unwrap();
    let layer_id = store
        .image(&store.resolve("img:1").unwrap().unwrap())
        .unwrap()
        .layers()[0]
        .digest
        .short()
        .to_string();
    let target = Reference::parse(&format!("{}/site/x:1", r.host())).unwrap();

    let sink = DockerJson::new(Vec::new());
    let pushed = transfer::push(
        &store,
        &settings,
        "img:1",
        &target,
        &Default::default(),
        &sink,
    )
    .unwrap();
    let m = messages(sink);
    assert_eq!(
        m[0],
        json!({"status": format!("The push refers to repository [{}/site/x]", r.host())})
    );
    // Every item is announced before any byte moves, with the fields the CLI needs.
    let first_push = m.iter().position(|v| v["status"] == "Pushing").unwrap();
    assert!(
        m[1..first_push]
            .iter()
            .all(|v| v["status"] == "Preparing" && v["progressDetail"] == json!({}))
    );
    assert!(
        m.iter()
            .filter(|v| v["status"] == "Pushing")
            .all(|v| v["id"].is_string()
                && v["progressDetail"]["total"].as_u64().unwrap() > 0
                && v["progress"].as_str().unwrap().starts_with('['))
    );
    let layer = statuses(&m, &layer_id);
    assert_eq!((layer[0], *layer.last().unwrap()), ("Preparing", "Pushed"));
    let last_count = m
        .iter()
        .rfind(|v| v["id"] == layer_id.as_str() && v["status"] == "Pushing")
        .unwrap();
    assert_eq!(
        last_count["progressDetail"]["current"],
        last_count["progressDetail"]["total"]
    );
    let manifest_size = store.read_blob(&pushed).unwrap().len();
    assert_eq!(
        m.last().unwrap(),
        &json!({"status": format!("1: digest: {pushed} size: {manifest_size}")})
    );

    let fresh = Env::new();
    let store2 = LocalStore::open(&fresh.root).unwrap();
    let sink = DockerJson::new(Vec::new());
    transfer::pull(&store2, &settings, &target, &sink).unwrap();
    let m = messages(sink);
    assert_eq!(
        m[0],
        json!({"status": format!("Pulling from {}/site/x", r.host()), "id": "1"})
    );
    let layer = statuses(&m, &layer_id);
    let n = layer.len();
    assert!(n >= 5, "{layer:?}");
    assert_eq!(layer[0], "Pulling fs layer");
    assert!(
        layer[1..n - 3].iter().all(|s| *s == "Downloading"),
        "{layer:?}"
    );
    assert_eq!(
        layer[n - 3..],
        ["Verifying Checksum", "Download complete", "Pull complete"]
    );
    // docker never shows the config blob
    assert!(statuses(&m, config_id).is_empty(), "{m:?}");
    assert_eq!(
        m[m.len() - 2..],
        [
            json!({"status": format!("Digest: {pushed}")}),
            json!({"status": format!("Status: Downloaded newer image for {}/site/x:1", r.host())})
        ]
    );

    let sink = DockerJson::new(Vec::new());
    transfer::pull(&store2, &settings, &target, &sink).unwrap();
    let m = messages(sink);
    assert_eq!(
        m[1],
        json!({"status": "Already exists", "progressDetail": {}, "id": layer_id})
    );
    assert_eq!(
        m.last().unwrap(),
        &json!({"status": format!("Status: Image is up to date for {}/site/x:1", r.host())})
    );

    // A failure ends the stream as an error message, in the shape the CLI reports.
    let sink = DockerJson::new(Vec::new());
    let missing = Reference::parse(&format!("{}/site/nope:1", r.host())).unwrap();
    let e = transfer::pull(&store2, &settings, &missing, &sink).unwrap_err();
    let m = messages(sink);
    assert_eq!(
        m,
        [json!({"errorDetail": {"message": e.to_string()}, "error": e.to_string()})]
    );
}

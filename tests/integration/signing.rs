//! Image signing end to end, against real peers: berth signs at push and skopeo
//! and podman verify under a policy.json; skopeo (GnuPG) signs and berth pull
//! verifies, refusing unsigned images, moved tags, tampered signatures and
//! untrusted keys; standalone signatures cross both ways; registryd refuses
//! junk signatures and keeps serving; save/load carries signatures to a node
//! with no registry; engined refuses to pull or run what the policy refuses.

use crate::client::{Env, busybox_tarball};
use crate::harness::*;
use crate::registry_skopeo::docker_dir;
use base64::Engine as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn ok(o: Output, what: &str) -> String {
    assert!(
        o.status.success(),
        "{what} failed: {}\n{}",
        stderr(&o),
        stdout(&o)
    );
    stdout(&o)
}

fn failed(o: Output, what: &str) -> String {
    assert!(
        !o.status.success(),
        "{what} succeeded but should have been refused: {}",
        stdout(&o)
    );
    format!("{}{}", stderr(&o), stdout(&o))
}

/// `berth verify` of one standalone signature, as skopeo standalone-verify.
fn standalone_verify(sig: &Path, manifest: &Path, ring: &Path, reference: &str) -> Output {
    berth(&[
        "verify",
        "--signature",
        sig.to_str().unwrap(),
        "--manifest",
        manifest.to_str().unwrap(),
        "--keyring",
        ring.to_str().unwrap(),
        reference,
    ])
    .output()
    .unwrap()
}

/// A berth key pair made by `berth sign --generate-key`: (secret, public).
fn berth_key(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let key = dir.join(format!("{name}.asc"));
    ok(
        berth(&[
            "sign",
            "--generate-key",
            name,
            &format!("{name}@example.org"),
            "--key",
            key.to_str().unwrap(),
        ])
        .output()
        .unwrap(),
        "generate key",
    );
    let public = PathBuf::from(format!("{}.pub", key.display()));
    (key, public)
}

/// policy.json: `scope` needs a signature by the keys in `keyring`, the rest
/// is rejected; local destinations (skopeo's dir:) accept anything.
fn policy(dir: &Path, name: &str, scope: &str, keyring: &Path) -> PathBuf {
    let p = dir.join(name);
    let doc = serde_json::json!({
        "default": [{"type": "reject"}],
        "transports": {
            "docker": {scope: [{"type": "signedBy", "keyType": "GPGKeys", "keyPath": keyring}]},
            "dir": {"": [{"type": "insecureAcceptAnything"}]},
            "oci": {"": [{"type": "insecureAcceptAnything"}]}
        }
    });
    std::fs::write(&p, serde_json::to_vec_pretty(&doc).unwrap()).unwrap();
    p
}

fn skopeo_cmd(gnupg: Option<&Path>) -> Command {
    need("skopeo");
    let mut c = Command::new("skopeo");
    if let Some(g) = gnupg {
        c.env("GNUPGHOME", g);
    }
    c
}

/// A GnuPG home with one RSA signing key (no passphrase); its fingerprint.
fn gnupg_home(dir: &Path, name: &str) -> (PathBuf, String) {
    need("gpg");
    let home = dir.join(format!("gnupg-{name}"));
    std::fs::create_dir_all(&home).unwrap();
    std::fs::set_permissions(&home, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    let gpg = |args: &[&str]| {
        let o = Command::new("gpg")
            .env("GNUPGHOME", &home)
            .args(["--batch", "--yes", "--pinentry-mode", "loopback"])
            .args(args)
            .output()
            .unwrap();
        ok(o, &format!("gpg {args:?}"))
    };
    gpg(&[
        "--passphrase",
        "",
        "--quick-gen-key",
        &format!("{name} <{name}@example.org>"),
        "rsa2048",
        "sign",
        "never",
    ]);
    let listing = gpg(&["--with-colons", "--list-keys"]);
    let fpr = listing
        .lines()
        .find(|l| l.starts_with("fpr:"))
        .and_then(|l| l.split(':').nth(9))
        .expect("a fingerprint")
        .to_string();
    (home, fpr)
}

fn gpg_export(home: &Path, out: &Path) {
    let o = Command::new("gpg")
        .env("GNUPGHOME", home)
        .args(["--batch", "--export", "-o"])
        .arg(out)
        .output()
        .unwrap();
    ok(o, "gpg --export");
}

/// A signed registry (TLS, basic auth) and a client trusting and logged in to it.
fn setup() -> (Registryd, Env) {
    let r = Registryd::start(RegOpts::default());
    let env = Env::new();
    env.trust(&r.host());
    env.login(&r);
    (r, env)
}

fn import(env: &Env, name: &str, msg: &str) {
    let tar = busybox_tarball(env.dir.path(), true);
    env.ok(&["import", "-m", msg, tar.to_str().unwrap(), name]);
}

/// The digest the registry serves `repo:tag` under.
fn remote_digest(r: &Registryd, repo: &str, tag: &str) -> String {
    let resp = r.client().req(
        "HEAD",
        &r.url(&format!("/v2/{repo}/manifests/{tag}")),
        &[(
            "Accept",
            "application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json",
        )],
        None,
    );
    resp.header("Docker-Content-Digest")
        .unwrap_or_else(|| panic!("no digest for {repo}:{tag}"))
        .to_string()
}

fn extension_list(r: &Registryd, repo: &str, digest: &str) -> Vec<serde_json::Value> {
    let resp = r
        .client()
        .get(&r.url(&format!("/extensions/v2/{repo}/signatures/{digest}")));
    assert_eq!(resp.status, 200, "{}", resp.text());
    resp.json()["signatures"].as_array().cloned().unwrap()
}

fn creds() -> String {
    format!("{USER}:{PASS}")
}

#[test]
pub(crate) fn berth_signs_at_push_skopeo_and_podman_verify() {
    let (r, env) = setup();
    let d = env.dir.path();
    let host = r.host();
    let (site_key, site_pub) = berth_key(d, "site");
    let (_, other_pub) = berth_key(d, "other");
    let signed = format!("{host}/site/worker:1");
    let unsigned = format!("{host}/site/plain:1");
    import(&env, &signed, "signed");
    import(&env, &unsigned, "unsigned");
    let out = env.ok(&["push", "--sign-key", site_key.to_str().unwrap(), &signed]);
    assert!(
        out.contains(&format!("{host}/site/worker@sha256:")),
        "{out}"
    );
    env.ok(&["push", &unsigned]);
    let v2 = r.client().get(&r.url("/v2/"));
    assert_eq!(v2.header("X-Registry-Supports-Signatures"), Some("1"));
    let digest = remote_digest(&r, "site/worker", "1");
    let sigs = extension_list(&r, "site/worker", &digest);
    assert_eq!(sigs.len(), 1, "{sigs:?}");
    assert!(
        sigs[0]["name"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{digest}@"))
    );
    // Signing again with the same key adds nothing; another key adds one.
    let again = env.ok(&[
        "sign",
        "--remote",
        "--key",
        site_key.to_str().unwrap(),
        &signed,
    ]);
    assert!(again.contains("already"), "{again}");
    assert_eq!(extension_list(&r, "site/worker", &digest).len(), 1);
    // The lookaside layout serves the same bytes, read-only.
    let blob = base64::engine::general_purpose::STANDARD
        .decode(sigs[0]["content"].as_str().unwrap())
        .unwrap();
    let hex = digest.trim_start_matches("sha256:");
    let la = r
        .client()
        .get(&r.url(&format!("/sigstore/site/worker@sha256={hex}/signature-1")));
    assert_eq!(la.status, 200);
    assert_eq!(la.body, blob);
    let la2 = r
        .client()
        .get(&r.url(&format!("/sigstore/site/worker@sha256={hex}/signature-2")));
    assert_eq!(la2.status, 404);

    let certs = d.join("certs.d").join(&host);
    let trusted = policy(d, "trusted.json", &format!("{host}/site"), &site_pub);
    let foreign = policy(d, "foreign.json", &format!("{host}/site"), &other_pub);
    let copy = |pol: &Path, image: &str, out: &str| {
        skopeo_cmd(None)
            .arg("--policy")
            .arg(pol)
            .args(["copy", "--src-creds", &creds(), "--src-cert-dir"])
            .arg(&certs)
            .arg(format!("docker://{image}"))
            .arg(format!("dir:{}", d.join(out).display()))
            .output()
            .unwrap()
    };
    ok(
        copy(&trusted, &signed, "s1"),
        "skopeo copy of the signed image",
    );
    let e = failed(
        copy(&foreign, &signed, "s2"),
        "skopeo copy under another key",
    );
    assert!(e.contains("signature"), "{e}");
    let e = failed(
        copy(&trusted, &unsigned, "s3"),
        "skopeo copy of an unsigned image",
    );
    assert!(e.contains("signature") || e.contains("rejected"), "{e}");

    // podman, the same policy.
    need("podman");
    // podman wants a run root of at most 50 characters.
    let short = TempDir(PathBuf::from(format!(
        "/tmp/bpd-{}",
        &berth::util::uuid4()[..8]
    )));
    let podman = |pol: &Path, image: &str, tag: &str| {
        Command::new("podman")
            .arg("--root")
            .arg(d.join(format!("podman-{tag}")))
            .arg("--runroot")
            .arg(short.join(tag))
            .args(["--storage-driver", "vfs", "pull", "--signature-policy"])
            .arg(pol)
            .args(["--creds", &creds(), "--cert-dir"])
            .arg(&certs)
            .arg(format!("docker://{image}"))
            .output()
            .unwrap()
    };
    ok(
        podman(&trusted, &signed, "a"),
        "podman pull of the signed image",
    );
    let e = failed(
        podman(&trusted, &unsigned, "b"),
        "podman pull of an unsigned image",
    );
    assert!(e.contains("signature") || e.contains("rejected"), "{e}");
    let e = failed(
        podman(&foreign, &signed, "c"),
        "podman pull under another key",
    );
    assert!(e.contains("signature"), "{e}");
}

#[test]
pub(crate) fn skopeo_signs_berth_pull_verifies_and_refuses() {
    let (r, env) = setup();
    let d = env.dir.path();
    let host = r.host();
    let certs = d.join("certs.d").join(&host);
    let (home, fpr) = gnupg_home(d, "skopeo");
    let ring = d.join("skopeo-ring.gpg");
    gpg_export(&home, &ring);
    let push = |src: &Path, dest: &str, sign: bool| {
        let mut c = skopeo_cmd(Some(&home));
        c.args([
            "--insecure-policy",
            "copy",
            "--dest-creds",
            &creds(),
            "--dest-cert-dir",
        ])
        .arg(&certs);
        if sign {
            c.args(["--sign-by", &fpr]);
        }
        c.arg(format!("dir:{}", src.display()))
            .arg(format!("docker://{host}/{dest}"));
        ok(c.output().unwrap(), &format!("skopeo copy to {dest}"));
    };
    let img = d.join("img");
    docker_dir(&img);
    push(&img, "site/grid:1", true);
    push(&img, "site/bare:1", false);
    let digest = remote_digest(&r, "site/grid", "1");
    assert_eq!(extension_list(&r, "site/grid", &digest).len(), 1);
    let pol = policy(d, "policy.json", &format!("{host}/site"), &ring);
    let pull = |image: &str| env.run(&["pull", "--policy", pol.to_str().unwrap(), image]);
    let o = pull(&format!("{host}/site/grid:1"));
    let out = format!(
        "{}{}",
        ok(o.clone(), "berth pull of a skopeo-signed image"),
        stderr(&o)
    );
    assert!(out.contains("Signature accepted"), "{out}");
    assert!(out.contains(&fpr), "{out}");
    // Unsigned: refused, and nothing of it is stored.
    let e = failed(
        pull(&format!("{host}/site/bare:1")),
        "pull of an unsigned image",
    );
    assert!(e.contains("no signature"), "{e}");
    assert!(!env.ok(&["images"]).contains("site/bare"));
    // Signed by a key the policy does not name.
    let (other_key, _) = berth_key(d, "intruder");
    let intruded = format!("{host}/site/intruded:1");
    import(&env, &intruded, "intruder");
    env.ok(&["push", "--sign-key", other_key.to_str().unwrap(), &intruded]);
    env.ok(&["rmi", &intruded]);
    let e = failed(
        pull(&intruded),
        "pull of an image signed by an untrusted key",
    );
    assert!(e.contains("does not verify"), "{e}");
    // A tampered signature: made with the trusted (GnuPG) key, then its
    // identity changed; still well formed, so the registry stores it, but the
    // signature no longer checks.
    push(&img, "site/moved:1", false);
    let md = remote_digest(&r, "site/moved", "1");
    let exported = Command::new("gpg")
        .env("GNUPGHOME", &home)
        .args(["--batch", "--pinentry-mode", "loopback", "--passphrase", ""])
        .args(["--export-secret-keys", "--armor", &fpr])
        .output()
        .unwrap();
    let secret = ok(exported, "gpg --export-secret-keys");
    let trusted = berth::signing::SigningKey::parse(secret.as_bytes(), None, "gpg key").unwrap();
    let identity = format!("{host}/site/moved:1");
    let payload = berth::signing::Payload::new(md.parse().unwrap(), identity.clone(), 1).to_json();
    let mut blob = trusted.sign(&payload).unwrap();
    let at = blob
        .windows(identity.len())
        .position(|w| w == identity.as_bytes())
        .expect("the identity in the payload");
    blob[at + identity.len() - 1] = b'2';
    let entry = serde_json::json!({
        "schemaVersion": 2,
        "name": format!("{md}@0123456789abcdef0123456789abcdef"),
        "type": "atomic",
        "content": base64::engine::general_purpose::STANDARD.encode(&blob),
    });
    let put = r.client().req(
        "PUT",
        &r.url(&format!("/extensions/v2/site/moved/signatures/{md}")),
        &[("Content-Type", "application/json")],
        Some(&serde_json::to_vec(&entry).unwrap()),
    );
    assert_eq!(put.status, 201, "{}", put.text());
    let e = failed(
        pull(&format!("{host}/site/moved:1")),
        "pull with a tampered signature",
    );
    assert!(
        e.contains("does not verify") || e.contains("signature"),
        "{e}"
    );
    assert!(!env.ok(&["images"]).contains("site/moved"));
}

/// A registry without the extension (Debian's Distribution), signatures in a
/// lookaside directory from registries.d: berth writes and reads them there,
/// and a tag moved to another image is refused although a signature file sits
/// at its place.
#[test]
pub(crate) fn lookaside_signatures_and_a_moved_tag() {
    let r = Registryd::start(RegOpts {
        distribution: true,
        ..RegOpts::default()
    });
    let env = Env::new();
    env.trust(&r.host());
    env.login(&r);
    let d = env.dir.path();
    let host = r.host();
    let store_dir = d.join("sigstore");
    let regd = d.join("registries.d");
    std::fs::create_dir_all(&regd).unwrap();
    std::fs::write(
        regd.join("site.yaml"),
        format!(
            "docker:\n  {host}:\n    lookaside: file://{}\n",
            store_dir.display()
        ),
    )
    .unwrap();
    let (key, public) = berth_key(d, "site");
    let image = format!("{host}/site/la:1");
    import(&env, &image, "first");
    env.ok(&[
        "push",
        "--registries-d",
        regd.to_str().unwrap(),
        "--sign-key",
        key.to_str().unwrap(),
        &image,
    ]);
    let first = remote_digest(&r, "site/la", "1");
    let hex = first.trim_start_matches("sha256:");
    let sig = store_dir.join(format!("site/la@sha256={hex}/signature-1"));
    assert!(sig.is_file(), "no lookaside signature at {}", sig.display());
    let pol = policy(d, "policy.json", &format!("{host}/site"), &public);
    let fresh = Env::new();
    fresh.trust(&host);
    fresh.login(&r);
    let pull = |e: &Env| {
        e.run(&[
            "pull",
            "--policy",
            pol.to_str().unwrap(),
            "--registries-d",
            regd.to_str().unwrap(),
            &image,
        ])
    };
    ok(pull(&fresh), "pull with a lookaside signature");
    // Move the tag to another image and put the old signature at its place.
    env.ok(&["rmi", &image]);
    import(&env, &image, "second, not signed");
    env.ok(&["push", &image]);
    let second = remote_digest(&r, "site/la", "1");
    assert_ne!(first, second);
    let moved = store_dir.join(format!(
        "site/la@sha256={}/signature-1",
        second.trim_start_matches("sha256:")
    ));
    std::fs::create_dir_all(moved.parent().unwrap()).unwrap();
    std::fs::copy(&sig, &moved).unwrap();
    let other = Env::new();
    other.trust(&host);
    other.login(&r);
    let e = failed(pull(&other), "pull after the tag moved");
    assert!(e.contains("tag may have moved"), "{e}");
}

#[test]
pub(crate) fn standalone_signatures_cross_both_ways() {
    let d = TempDir::new("standalone");
    let (home, fpr) = gnupg_home(d.path(), "alone");
    let ring = d.join("ring.gpg");
    gpg_export(&home, &ring);
    let img = d.join("img");
    let digest = docker_dir(&img);
    let manifest = img.join("manifest.json");
    let reference = "reg.example.org:5000/site/worker:1";
    // skopeo (GnuPG) signs, berth verifies.
    let sig = d.join("skopeo.sig");
    ok(
        skopeo_cmd(Some(&home))
            .args([
                "standalone-sign",
                manifest.to_str().unwrap(),
                reference,
                &fpr,
                "-o",
            ])
            .arg(&sig)
            .output()
            .unwrap(),
        "skopeo standalone-sign",
    );
    let out = ok(
        standalone_verify(&sig, &manifest, &ring, reference),
        "berth verify of a skopeo signature",
    );
    assert!(out.contains(&fpr) && out.contains(&digest), "{out}");
    // Against another identity it fails.
    failed(
        standalone_verify(&sig, &manifest, &ring, "reg.example.org:5000/site/other:1"),
        "berth verify with the wrong identity",
    );

    // berth signs (a key of its own, and GnuPG's RSA key with a passphrase),
    // skopeo verifies.
    let env = Env::new();
    let (key, public) = berth_key(d.path(), "berthkey");
    ok(
        Command::new("gpg")
            .env("GNUPGHOME", &home)
            .args(["--batch", "--import"])
            .arg(&public)
            .output()
            .unwrap(),
        "gpg --import",
    );
    let gpg_secret = d.join("gpg-secret.asc");
    // Protect a copy of the RSA key with a passphrase, as sites keep them.
    let pass = d.join("pass");
    std::fs::write(&pass, "grid-signing\n").unwrap();
    let prot_home = d.join("gnupg-prot");
    std::fs::create_dir_all(&prot_home).unwrap();
    std::fs::set_permissions(
        &prot_home,
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    let gpg_in = |home: &Path, args: &[&str]| {
        Command::new("gpg")
            .env("GNUPGHOME", home)
            .args(["--batch", "--yes", "--pinentry-mode", "loopback"])
            .args(args)
            .output()
            .unwrap()
    };
    ok(
        gpg_in(
            &prot_home,
            &[
                "--passphrase",
                "grid-signing",
                "--quick-gen-key",
                "Protected <p@example.org>",
                "rsa2048",
                "sign",
                "never",
            ],
        ),
        "protected key",
    );
    let exported = gpg_in(
        &prot_home,
        &[
            "--passphrase",
            "grid-signing",
            "--export-secret-keys",
            "--armor",
        ],
    );
    let exported = ok(exported, "export secret key");
    std::fs::write(&gpg_secret, exported).unwrap();
    import(&env, "reg.example.org:5000/site/worker:1", "to sign");
    // Without the passphrase: one clear line.
    let o = env.run(&[
        "sign",
        "--key",
        gpg_secret.to_str().unwrap(),
        "reg.example.org:5000/site/worker:1",
    ]);
    let e = failed(o, "sign without the passphrase");
    assert!(e.contains("passphrase"), "{e}");
    for (k, extra) in [
        (key.as_path(), vec![]),
        (
            gpg_secret.as_path(),
            vec!["--passphrase-file", pass.to_str().unwrap()],
        ),
    ] {
        let mut args = vec!["sign", "--key", k.to_str().unwrap()];
        args.extend(extra);
        args.push("reg.example.org:5000/site/worker:1");
        env.ok(&args);
    }
    let m = crate::client::manifest_of(&env, "reg.example.org:5000/site/worker:1");
    let sigdir = env
        .root
        .join("signatures/sha256")
        .join(m.trim_start_matches("sha256:"));
    let sigs: Vec<PathBuf> = std::fs::read_dir(&sigdir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(sigs.len(), 2, "two keys, two signatures");
    // On a terminal the passphrase is asked for (here through script's pty);
    // the key unlocks and, having signed already, adds nothing.
    need("script");
    let mut c = Command::new("script");
    c.args(["-qec"])
        .arg(format!(
            "{} sign --key {} reg.example.org:5000/site/worker:1",
            bin().display(),
            gpg_secret.display()
        ))
        .arg("/dev/null")
        .env("BERTH_ROOT", &env.root)
        .env_remove("BERTH_SIGN_PASSPHRASE")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = c.spawn().unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), b"grid-signing\n").unwrap();
    let o = child.wait_with_output().unwrap();
    let out = ok(o, "sign with the passphrase typed at the prompt");
    assert!(out.contains("Passphrase for"), "{out}");
    assert!(out.contains("already"), "{out}");
    let mf = d.join("local-manifest.json");
    std::fs::copy(
        env.root
            .join("blobs/sha256")
            .join(m.trim_start_matches("sha256:")),
        &mf,
    )
    .unwrap();
    // skopeo's keyring needs the protected key's public half too.
    let prot_pub = d.join("prot.gpg");
    gpg_export(&prot_home, &prot_pub);
    ok(
        Command::new("gpg")
            .env("GNUPGHOME", &home)
            .args(["--batch", "--import"])
            .arg(&prot_pub)
            .output()
            .unwrap(),
        "import protected public key",
    );
    // skopeo wants the signer's fingerprint: each signature checks with one.
    let listing = ok(
        Command::new("gpg")
            .env("GNUPGHOME", &home)
            .args(["--batch", "--with-colons", "--list-keys"])
            .output()
            .unwrap(),
        "gpg --list-keys",
    );
    let fprs: Vec<String> = listing
        .lines()
        .filter(|l| l.starts_with("fpr:"))
        .filter_map(|l| l.split(':').nth(9).map(str::to_string))
        .collect();
    let mut verified = 0;
    for s in &sigs {
        let mut why = String::new();
        for f in &fprs {
            let o = skopeo_cmd(Some(&home))
                .args([
                    "standalone-verify",
                    mf.to_str().unwrap(),
                    "reg.example.org:5000/site/worker:1",
                    f,
                ])
                .arg(s)
                .output()
                .unwrap();
            if o.status.success() && stdout(&o).contains("Signature verified") {
                verified += 1;
                break;
            }
            why += &stderr(&o);
        }
        assert!(verified > 0, "no key verifies {}: {why}", s.display());
    }
    assert_eq!(verified, 2, "both berth signatures verify with skopeo");

    // A key that has expired (made in GnuPG's faked past, valid for a day):
    // its signature, made now, is refused and the reason said.
    let old_home = d.join("gnupg-old");
    std::fs::create_dir_all(&old_home).unwrap();
    std::fs::set_permissions(
        &old_home,
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    ok(
        gpg_in(
            &old_home,
            &[
                "--faked-system-time",
                "20200101T000000",
                "--passphrase",
                "",
                "--quick-gen-key",
                "Old <old@example.org>",
                "rsa2048",
                "sign",
                "1d",
            ],
        ),
        "expiring key",
    );
    let old_secret = d.join("old.asc");
    let exported = ok(
        gpg_in(
            &old_home,
            &["--passphrase", "", "--export-secret-keys", "--armor"],
        ),
        "export old key",
    );
    std::fs::write(&old_secret, exported).unwrap();
    let old_ring = d.join("old.gpg");
    gpg_export(&old_home, &old_ring);
    let old_sig = d.join("old.sig");
    ok(
        berth(&[
            "sign",
            "--key",
            old_secret.to_str().unwrap(),
            "--manifest",
            mf.to_str().unwrap(),
            "--output",
            old_sig.to_str().unwrap(),
            "reg.example.org:5000/site/worker:1",
        ])
        .output()
        .unwrap(),
        "standalone sign with the old key",
    );
    let e = failed(
        standalone_verify(
            &old_sig,
            &mf,
            &old_ring,
            "reg.example.org:5000/site/worker:1",
        ),
        "verify with an expired key",
    );
    assert!(e.contains("expired"), "{e}");

    // A revoked key: GnuPG's own revocation certificate imported, the ring
    // exported again; a signature made with the key is refused as revoked.
    let rev = old_home.join("openpgp-revocs.d");
    let cert = std::fs::read_dir(&rev)
        .unwrap()
        .flatten()
        .next()
        .unwrap()
        .path();
    // GnuPG guards the certificate against a careless import with a leading ':'.
    let text = std::fs::read_to_string(&cert)
        .unwrap()
        .replace(":-----BEGIN", "-----BEGIN");
    let armed = d.join("revoke.asc");
    std::fs::write(&armed, text).unwrap();
    ok(
        gpg_in(&old_home, &["--import", armed.to_str().unwrap()]),
        "import the revocation",
    );
    let revoked_ring = d.join("revoked.gpg");
    gpg_export(&old_home, &revoked_ring);
    let e = failed(
        standalone_verify(
            &old_sig,
            &mf,
            &revoked_ring,
            "reg.example.org:5000/site/worker:1",
        ),
        "verify with a revoked key",
    );
    assert!(e.contains("revoked"), "{e}");
}

#[test]
pub(crate) fn registryd_refuses_bad_signatures_and_keeps_serving() {
    let (r, env) = setup();
    let d = env.dir.path();
    let (key, _) = berth_key(d, "site");
    let image = format!("{}/site/b:1", r.host());
    import(&env, &image, "b");
    env.ok(&["push", "--sign-key", key.to_str().unwrap(), &image]);
    let digest = remote_digest(&r, "site/b", "1");
    let good = extension_list(&r, "site/b", &digest);
    assert_eq!(good.len(), 1);
    let good_blob = base64::engine::general_purpose::STANDARD
        .decode(good[0]["content"].as_str().unwrap())
        .unwrap();
    let put = |repo: &str, dg: &str, name: &str, content: &[u8]| {
        let entry = serde_json::json!({
            "schemaVersion": 2,
            "name": name,
            "type": "atomic",
            "content": base64::engine::general_purpose::STANDARD.encode(content),
        });
        r.client().req(
            "PUT",
            &r.url(&format!("/extensions/v2/{repo}/signatures/{dg}")),
            &[("Content-Type", "application/json")],
            Some(&serde_json::to_vec(&entry).unwrap()),
        )
    };
    let id = "0123456789abcdef0123456789abcdef";
    let named = format!("{digest}@{id}");
    // Malformed OpenPGP packets.
    let resp = put(
        "site/b",
        &digest,
        &named,
        &[0xc4, 0x0d, 0x03, 0x00, 0xff, 0x01],
    );
    assert_eq!(resp.status, 400, "{}", resp.text());
    assert_eq!(resp.code(), "SIGNATURE_INVALID");
    // A real signed message whose payload is not JSON.
    let signer =
        berth::signing::SigningKey::parse(&std::fs::read(&key).unwrap(), None, "k").unwrap();
    let resp = put(
        "site/b",
        &digest,
        &named,
        &signer.sign(b"not json").unwrap(),
    );
    assert_eq!(resp.status, 400, "{}", resp.text());
    assert!(resp.text().contains("not JSON"), "{}", resp.text());
    // Over 64 KiB.
    let resp = put("site/b", &digest, &named, &vec![0xa3; 70 * 1024]);
    assert!(resp.status == 400 || resp.status == 413, "{}", resp.text());
    // The body itself over the limit.
    let resp = put("site/b", &digest, &named, &vec![0xa3; 200 * 1024]);
    assert_eq!(resp.status, 413, "{}", resp.text());
    // A signature of another manifest filed under this one.
    let other = format!("sha256:{}", "ab".repeat(32));
    let payload = berth::signing::Payload::new(other.parse().unwrap(), image.clone(), 1).to_json();
    let resp = put("site/b", &digest, &named, &signer.sign(&payload).unwrap());
    assert_eq!(resp.status, 400, "{}", resp.text());
    assert!(resp.text().contains("not sha256"), "{}", resp.text());
    // A name that does not start with the digest.
    let resp = put("site/b", &digest, &format!("{other}@{id}"), &good_blob);
    assert_eq!(resp.status, 400, "{}", resp.text());
    // An unknown manifest (with a signature that names it).
    let resp = put(
        "site/b",
        &other,
        &format!("{other}@{id}"),
        &signer.sign(&payload).unwrap(),
    );
    assert_eq!(resp.status, 404, "{}", resp.text());
    assert_eq!(resp.code(), "MANIFEST_UNKNOWN");
    // Not JSON at all.
    let resp = r.client().req(
        "PUT",
        &r.url(&format!("/extensions/v2/site/b/signatures/{digest}")),
        &[],
        Some(b"{"),
    );
    assert_eq!(resp.status, 400);
    // Without credentials.
    let resp = r
        .anonymous()
        .get(&r.url(&format!("/extensions/v2/site/b/signatures/{digest}")));
    assert_eq!(resp.status, 401);
    // Nothing was stored, and the registry goes on serving.
    assert_eq!(extension_list(&r, "site/b", &digest).len(), 1);
    assert_eq!(r.client().get(&r.url("/v2/")).status, 200);
    assert_eq!(remote_digest(&r, "site/b", "1"), digest);
    // Deleting the manifest takes its signatures along.
    let del = r.client().req(
        "DELETE",
        &r.url(&format!("/v2/site/b/manifests/{digest}")),
        &[],
        None,
    );
    assert_eq!(del.status, 202);
    let gone = r
        .client()
        .get(&r.url(&format!("/extensions/v2/site/b/signatures/{digest}")));
    assert_eq!(gone.status, 404);
}

/// Pulled on a connected node, saved, loaded on one with no registry: the
/// policy still decides there, with the signatures that came in the archive;
/// and engined refuses to pull or run what the policy refuses.
#[test]
pub(crate) fn signatures_travel_by_archive_and_engined_enforces() {
    let (mut r, env) = setup();
    let d = env.dir.path();
    let host = r.host();
    let (key, public) = berth_key(d, "site");
    let signed = format!("{host}/site/air:1");
    let unsigned = format!("{host}/site/open:1");
    import(&env, &signed, "air");
    import(&env, &unsigned, "open");
    env.ok(&["push", "--sign-key", key.to_str().unwrap(), &signed]);
    env.ok(&["push", &unsigned]);
    let pol = policy(d, "policy.json", &format!("{host}/site"), &public);
    let node = Env::new();
    node.trust(&host);
    node.login(&r);
    node.ok(&["pull", "--policy", pol.to_str().unwrap(), &signed]);
    node.ok(&["pull", &unsigned]);
    let archive = d.join("images.tar");
    node.ok(&["save", "-o", archive.to_str().unwrap(), &signed, &unsigned]);
    // The air-gapped node: no registry at all.
    let _ = r.child.kill();
    let _ = r.child.wait();
    let gap = Env::new();
    gap.ok(&["load", "-i", archive.to_str().unwrap()]);
    let out = gap.ok(&["verify", "--policy", pol.to_str().unwrap(), &signed]);
    assert!(out.contains("accepted by"), "{out}");
    let e = failed(
        gap.run(&["verify", "--policy", pol.to_str().unwrap(), &unsigned]),
        "verify of the unsigned image",
    );
    assert!(e.contains("no signature"), "{e}");

    // engined with the policy: the archive's images are loaded through the
    // docker CLI, the signed one runs, the unsigned one does not.
    let e = Engined::start_with(&["--signature-policy", pol.to_str().unwrap()]);
    let o = e
        .docker(&["load", "-i", archive.to_str().unwrap()])
        .output()
        .unwrap();
    ok(o, "docker load");
    let out = e.ok(&["run", "--rm", &signed, "echo", "signed-runs"]);
    assert!(out.contains("signed-runs"), "{out}");
    let o = e
        .docker(&["run", "--rm", &unsigned, "echo", "unsigned-runs"])
        .output()
        .unwrap();
    let err = failed(o, "docker run of an unsigned image");
    assert!(err.contains("no signature"), "{err}");
    // A pull through engined is decided before anything is stored: a plain
    // registry on loopback outside the policy's scope falls to its default.
    let plain = Registryd::start(RegOpts {
        tls: false,
        auth: false,
        ..RegOpts::default()
    });
    let elsewhere = format!("127.0.0.1:{}/other/open:1", plain.port);
    e.ok(&["tag", &unsigned, &elsewhere]);
    e.ok(&["push", &elsewhere]);
    e.ok(&["rmi", &elsewhere]);
    let o = e.docker(&["pull", &elsewhere]).output().unwrap();
    let err = failed(o, "docker pull outside the policy's scope");
    assert!(err.contains("rejected"), "{err}");
    let images = e.ok(&["images", "--format", "{{.Repository}}:{{.Tag}}"]);
    assert!(!images.contains("other/open:1"), "{images}");
}

//! Attacks on the image client applets that once worked, kept as regression
//! tests: load reading host files, load without a bound or a cleanup, import
//! storing a second archive after the first's end, import of an HTTPS URL.

use crate::client::{Env, busybox_tarball};
use crate::harness::*;
use std::io::Write;
use std::process::{Command, Stdio};

fn entry(b: &mut tar::Builder<Vec<u8>>, kind: tar::EntryType, name: &str, link: &str, data: &[u8]) {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_size(data.len() as u64);
    h.set_mode(if kind.is_symlink() { 0o777 } else { 0o644 });
    if kind.is_symlink() || kind.is_hard_link() {
        b.append_link(&mut h, name, link).unwrap();
    } else {
        b.append_data(&mut h, name, data).unwrap();
    }
}

/// A symlink as deep as its `../` climbs passed the "stays inside" check; a hard
/// link to it at the top kept the target and pointed out of the archive, and
/// manifest.json naming it made load read (and store) a host file.
#[test]
fn load_opens_nothing_outside_the_archive() {
    let env = Env::new();
    // the store's staging dir is STORE/tmp/load-…: three levels below env.dir
    let secret = env.dir.join("secret.json");
    std::fs::write(
        &secret,
        r#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]},"config":{}}"#,
    )
    .unwrap();
    let mut b = tar::Builder::new(Vec::new());
    entry(&mut b, tar::EntryType::Directory, "a/b/c/", "", b"");
    entry(
        &mut b,
        tar::EntryType::Symlink,
        "a/b/c/l",
        "../../../secret.json",
        b"",
    );
    // the same target from the top climbs out of the staging dir
    entry(&mut b, tar::EntryType::Link, "cfg.json", "a/b/c/l", b"");
    let manifest = br#"[{"Config":"cfg.json","RepoTags":["evil:1"],"Layers":[]}]"#;
    entry(
        &mut b,
        tar::EntryType::Regular,
        "manifest.json",
        "",
        manifest,
    );
    let archive = env.dir.join("evil.tar");
    std::fs::write(&archive, b.into_inner().unwrap()).unwrap();
    let o = env.run(&["load", "-i", archive.to_str().unwrap()]);
    assert!(!o.status.success(), "{}", stdout(&o));
    assert!(
        stderr(&o).contains("hard link to the symlink"),
        "{}",
        stderr(&o)
    );
    // a symlink that climbs further than its depth is refused as it is unpacked
    let mut b = tar::Builder::new(Vec::new());
    entry(&mut b, tar::EntryType::Directory, "a/b/", "", b"");
    entry(
        &mut b,
        tar::EntryType::Symlink,
        "a/b/c",
        "../../../../secret.json",
        b"",
    );
    let manifest = br#"[{"Config":"a/b/c","RepoTags":["evil:2"],"Layers":[]}]"#;
    entry(
        &mut b,
        tar::EntryType::Regular,
        "manifest.json",
        "",
        manifest,
    );
    std::fs::write(&archive, b.into_inner().unwrap()).unwrap();
    let o = env.run(&["load", "-i", archive.to_str().unwrap()]);
    assert!(!o.status.success(), "{}", stdout(&o));
    assert!(stderr(&o).contains("leaves the archive"), "{}", stderr(&o));
    assert!(
        !env.root.join("refs.json").exists()
            || !std::fs::read_to_string(env.root.join("refs.json"))
                .unwrap()
                .contains("evil")
    );
}

/// A 10 MB gzip unpacked to gigabytes, and a killed load left its staging dir.
#[test]
fn load_is_bounded_and_a_killed_load_is_cleaned_up() {
    let env = Env::new();
    // 64 MiB of zeros in one member: a few dozen KiB gzip'd
    let bomb = env.dir.join("bomb.tar.gz");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    {
        let mut b = tar::Builder::new(&mut gz);
        let mut h = tar::Header::new_gnu();
        h.set_size(64 << 20);
        h.set_mode(0o644);
        b.append_data(
            &mut h,
            "zeros",
            std::io::Read::take(std::io::repeat(0), 64 << 20),
        )
        .unwrap();
        b.finish().unwrap();
    }
    std::fs::write(&bomb, gz.finish().unwrap()).unwrap();
    let o = env.run(&["load", "--max-size", "8M", "-i", bomb.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("unpacks to more than 8388608 bytes"),
        "{}",
        stderr(&o)
    );
    assert_eq!(std::fs::read_dir(env.root.join("tmp")).unwrap().count(), 0);
    // a load killed with -9 mid-archive leaves its staging dir; the next cleans it
    let mut child = env
        .cmd(&["load"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut b = tar::Builder::new(Vec::new());
    entry(&mut b, tar::EntryType::Regular, "partial", "", &[7u8; 4096]);
    let mut bytes = b.into_inner().unwrap();
    bytes.truncate(512 + 4096); // no end marker: load waits for more
    stdin.write_all(&bytes).unwrap();
    stdin.flush().unwrap();
    let stale = wait_for("load to stage the archive", || {
        std::fs::read_dir(env.root.join("tmp"))
            .ok()?
            .flatten()
            .map(|e| e.path())
            .find(|p| p.join("partial").exists())
    });
    child.kill().unwrap();
    child.wait().unwrap();
    drop(stdin);
    assert!(stale.exists());
    let o = env.run(&["load", "-i", bomb.to_str().unwrap(), "--max-size", "1k"]);
    assert!(!o.status.success());
    assert!(
        !stale.exists(),
        "a killed load's staging dir was not cleaned"
    );
}

/// `cat good.tar evil.tar | berth import -`: the second archive's `../` entries
/// ended up in the stored layer.
#[test]
fn import_refuses_a_second_archive_after_the_end_marker() {
    let env = Env::new();
    let good = busybox_tarball(env.dir.path(), false);
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(4);
    h.set_mode(0o644);
    h.set_entry_type(tar::EntryType::Regular);
    let name = b"../../etc/cron.d/evil";
    h.as_old_mut().name[..name.len()].copy_from_slice(name);
    h.set_cksum();
    b.append(&h, &b"evil"[..]).unwrap();
    let evil = b.into_inner().unwrap();
    let mut both = std::fs::read(&good).unwrap();
    both.extend_from_slice(&evil);
    let cat = env.dir.join("both.tar");
    std::fs::write(&cat, &both).unwrap();
    let o = env.run(&["import", cat.to_str().unwrap(), "cat:1"]);
    assert!(!o.status.success(), "{}", stdout(&o));
    assert!(
        stderr(&o).contains("after the tar end-of-archive marker"),
        "{}",
        stderr(&o)
    );
    assert_eq!(env.blob_count(), 0, "something was stored");
    // the good archive alone imports
    env.ok(&["import", good.to_str().unwrap(), "good:1"]);
}

/// `berth import https://…` panicked: its agent wanted web-PKI roots the build
/// does not carry. It uses the registry client's trust: the system bundle and
/// certs.d/HOST:PORT.
#[test]
fn import_from_an_https_url_trusts_certs_d() {
    need("openssl");
    let env = Env::new();
    let tgz = busybox_tarball(env.dir.path(), true);
    let port = free_port();
    let p = pki();
    let mut server = Command::new("openssl")
        .args([
            "s_server",
            "-quiet",
            "-WWW",
            "-accept",
            &format!("127.0.0.1:{port}"),
            "-cert",
            p.cert.to_str().unwrap(),
            "-key",
            p.key.to_str().unwrap(),
        ])
        .current_dir(env.dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for("openssl s_server to listen", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).ok()
    });
    let url = format!(
        "https://localhost:{port}/{}",
        tgz.file_name().unwrap().to_str().unwrap()
    );
    // without the CA: a clear error that says where the CA goes
    let o = env.run(&["import", &url, "web:1"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("certs.d/HOST:PORT/ca.crt"),
        "{}",
        stderr(&o)
    );
    assert!(!stderr(&o).contains("panicked"), "{}", stderr(&o));
    env.trust(&format!("localhost:{port}"));
    let id = env.ok(&["import", "--created", "0", "-m", "rootfs", &url, "web:1"]);
    let local = env.ok(&[
        "import",
        "--created",
        "0",
        "-m",
        "rootfs",
        tgz.to_str().unwrap(),
        "file:1",
    ]);
    assert_eq!(id, local, "the image from the URL differs from the file's");
    let _ = server.kill();
    let _ = server.wait();
}

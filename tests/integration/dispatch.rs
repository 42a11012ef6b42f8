//! The multi-call binary: dispatch by argv[0] and argv[1], --list, --install,
//! unknown applets, and that the shipped binary is really static.

use crate::harness::*;
use std::os::unix::process::CommandExt;
use std::process::Command;

#[test]
fn list_version_and_help() {
    let o = run(&["--list"]);
    assert!(o.status.success());
    let names: Vec<String> = stdout(&o).lines().map(str::to_string).collect();
    for a in ["registryd", "htpasswd"] {
        assert!(names.iter().any(|n| n == a), "{a} missing from {names:?}");
    }
    let v = run(&["--version"]);
    assert_eq!(
        stdout(&v).trim(),
        format!("berth {}", env!("CARGO_PKG_VERSION"))
    );
    let h = run(&["--help"]);
    assert!(h.status.success() && stdout(&h).contains("registryd"));
    let none = run(&[]);
    assert_eq!(none.status.code(), Some(2));
    assert!(stderr(&none).contains("Usage"));
}

#[test]
fn unknown_applet_exits_127() {
    let o = run(&["frobnicate"]);
    assert_eq!(o.status.code(), Some(127));
    assert_eq!(stderr(&o).trim(), "frobnicate: applet not found");
    let d = TempDir::new("argv0");
    let link = d.join("nosuch");
    std::os::unix::fs::symlink(bin(), &link).unwrap();
    let o = Command::new(&link).output().unwrap();
    assert_eq!(o.status.code(), Some(127));
    assert_eq!(stderr(&o).trim(), "nosuch: applet not found");
}

#[test]
fn argv0_dispatch_and_applet_help() {
    let d = TempDir::new("argv0");
    let link = d.join("registryd");
    std::os::unix::fs::symlink(bin(), &link).unwrap();
    let o = Command::new(&link).arg("--help").output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("Usage: registryd"), "{}", stdout(&o));
    // a login shell style argv[0] ("-registryd") and `berth APPLET`
    let o = Command::new(bin())
        .arg0("-registryd")
        .arg("--help")
        .output()
        .unwrap();
    assert!(stdout(&o).contains("Usage: registryd"));
    let o = run(&["htpasswd", "--help"]);
    assert!(o.status.success() && stdout(&o).contains("Usage: htpasswd"));
    // usage errors exit 2 with a message
    let o = run(&["registryd"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("registryd: usage"), "{}", stderr(&o));
}

#[test]
fn install_makes_links_and_skips_existing() {
    let d = TempDir::new("install");
    let hard = d.join("hard");
    let soft = d.join("soft");
    std::fs::create_dir_all(&hard).unwrap();
    std::fs::create_dir_all(&soft).unwrap();
    std::fs::write(hard.join("htpasswd"), "mine").unwrap();
    // Copy the binary into the same filesystem so hard links work.
    let exe = d.join("berth");
    std::fs::copy(bin(), &exe).unwrap();
    let o = Command::new(&exe)
        .args(["--install", hard.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("htpasswd: exists, skipped"));
    assert_eq!(
        std::fs::read_to_string(hard.join("htpasswd")).unwrap(),
        "mine"
    );
    use std::os::unix::fs::MetadataExt;
    let ino = std::fs::metadata(&exe).unwrap().ino();
    assert_eq!(
        std::fs::metadata(hard.join("registryd")).unwrap().ino(),
        ino
    );
    let o = Command::new(&exe)
        .args(["--install", "-s", soft.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let target = std::fs::read_link(soft.join("registryd")).unwrap();
    assert_eq!(target, exe.canonicalize().unwrap());
    // no `init` link: on a host's PATH it would shadow /sbin/init; dumb-init is linked
    assert!(!hard.join("init").exists() && !soft.join("init").exists());
    assert!(soft.join("dumb-init").exists());
    // the installed link runs the applet
    let o = Command::new(soft.join("registryd"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(stdout(&o).contains("Usage: registryd"));
}

/// Parse just enough ELF64 to list program header types.
fn program_headers(data: &[u8]) -> Vec<u32> {
    assert_eq!(&data[..4], b"\x7fELF", "not an ELF file");
    assert_eq!(data[4], 2, "not ELF64");
    let u16at = |o: usize| u16::from_le_bytes([data[o], data[o + 1]]) as usize;
    let u64at = |o: usize| u64::from_le_bytes(data[o..o + 8].try_into().unwrap()) as usize;
    let (phoff, phentsize, phnum) = (u64at(0x20), u16at(0x36), u16at(0x38));
    (0..phnum)
        .map(|i| {
            u32::from_le_bytes(
                data[phoff + i * phentsize..phoff + i * phentsize + 4]
                    .try_into()
                    .unwrap(),
            )
        })
        .collect()
}

#[test]
fn shipped_binary_is_static() {
    // make static leaves the musl build at dist/berth; make test builds it first.
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("dist/berth");
    let data = std::fs::read(&p)
        .unwrap_or_else(|e| panic!("{}: {e}: run `make static` first", p.display()));
    let types = program_headers(&data);
    const PT_DYNAMIC: u32 = 2;
    const PT_INTERP: u32 = 3;
    assert!(
        !types.contains(&PT_INTERP),
        "dist/berth has an interpreter: {types:?}"
    );
    assert!(
        !types.contains(&PT_DYNAMIC),
        "dist/berth has a dynamic section: {types:?}"
    );
    let o = Command::new(&p).arg("--version").output().unwrap();
    assert!(o.status.success());
}

#[test]
pub(crate) fn htpasswd_applet_writes_bcrypt_users() {
    use std::io::Write;
    let d = TempDir::new("htpw");
    let f = d.join("registry_passwd");
    let run_with = |args: &[&str], input: &str| {
        use std::io::Write;
        let mut c = berth(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // the applet may exit before reading (a bad argument): a closed pipe is fine
        let _ = c.stdin.take().unwrap().write_all(input.as_bytes());
        c.wait_with_output().unwrap()
    };
    let o = run_with(
        &["htpasswd", "-c", f.to_str().unwrap(), "t1user"],
        "pw-one\n",
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("Adding password for user t1user"));
    let o = run_with(&["htpasswd", f.to_str().unwrap(), "other"], "pw-two\n");
    assert!(o.status.success());
    let text = std::fs::read_to_string(&f).unwrap();
    assert_eq!(text.lines().count(), 2);
    assert!(
        text.lines()
            .all(|l| l.split_once(':').unwrap().1.starts_with("$2y$"))
    );
    // the written file is what registryd's parser accepts, and the passwords verify
    let h = berth::auth::htpasswd::Htpasswd::open(&f).unwrap();
    assert_eq!(
        h.check(Some(&basic("t1user", "pw-one"))),
        berth::auth::htpasswd::Check::Ok("t1user".into())
    );
    assert_eq!(
        h.check(Some(&basic("other", "pw-one"))),
        berth::auth::htpasswd::Check::Failed
    );
    let o = run_with(&["htpasswd", "-D", f.to_str().unwrap(), "other"], "");
    assert!(o.status.success());
    assert_eq!(std::fs::read_to_string(&f).unwrap().lines().count(), 1);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&f).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // a relative path (as an admin types it in /etc/docker-distribution/registry)
    let mut c = berth(&["htpasswd", "-c", "-i", "registry_passwd", "t1user"])
        .current_dir(d.path())
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin.take().unwrap().write_all(b"pw\n").unwrap();
    let o = c.wait_with_output().unwrap();
    assert!(o.status.success(), "relative path: {}", stderr(&o));
    // a missing file without -c is an error that says what to do
    let o = run_with(&["htpasswd", d.join("none").to_str().unwrap(), "x"], "p\n");
    assert!(!o.status.success());
    assert!(stderr(&o).contains("use -c"));
}

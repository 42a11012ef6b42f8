//! mkimage through the real binary, as root (CI is root): the shipped busybox
//! recipe builds reproducibly, its tarball imports and its image goes through
//! registryd; layers stack so the generic one survives a site change; remove
//! honours keep-lists and leaves whiteouts; file stages never follow a symlink
//! out of the root; a failing stage is reported; recipe errors carry file:line.

use crate::client::{Env, json_of, manifest_of};
use crate::harness::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn shipped(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("config/mkimage")
        .join(name)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Layer digests of a tagged image in an env's store.
fn layers(env: &Env, name: &str) -> Vec<String> {
    let m = manifest_of(env, name);
    let manifest = json_of(&env.root.join(format!("blobs/sha256/{}", &m[7..])));
    manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_string())
        .collect()
}

fn blob(env: &Env, digest: &str) -> PathBuf {
    env.root.join(format!("blobs/sha256/{}", &digest[7..]))
}

/// `tar -tv` of a gzip'd tarball: (type char, name, link target or device).
fn listing(tgz: &Path) -> Vec<String> {
    let o = Command::new("tar")
        .args(["--numeric-owner", "-tvzf", s(tgz)])
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "tar -t {}: {}",
        tgz.display(),
        stderr(&o)
    );
    stdout(&o).lines().map(str::to_string).collect()
}

fn names(tgz: &Path) -> Vec<String> {
    let o = Command::new("tar").args(["-tzf", s(tgz)]).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    stdout(&o)
        .lines()
        .map(|l| l.trim_end_matches('/').to_string())
        .collect()
}

fn ok(o: &Output, what: &str) {
    assert!(
        o.status.success(),
        "{what} failed: {}{}",
        stderr(o),
        stdout(o)
    );
}

fn mkimage(env: &Env, args: &[&str]) -> Output {
    let mut a = vec!["mkimage"];
    a.extend_from_slice(args);
    env.run(&a)
}

fn mkimage_dirs(env: &Env) -> Vec<PathBuf> {
    std::fs::read_dir(env.root.join("tmp"))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .unwrap()
                        .to_string_lossy()
                        .starts_with("mkimage-")
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
pub(crate) fn busybox_is_reproducible_and_round_trips_through_registryd() {
    need("busybox");
    let env = Env::new();
    let recipe = shipped("busybox.yml");
    let (tar1, tar2) = (env.dir.join("a.tar.gz"), env.dir.join("b.tar.gz"));
    let oci = env.dir.join("oci");
    let o = mkimage(
        &env,
        &[
            "--tag",
            "bb:a",
            "--tar",
            s(&tar1),
            "--oci",
            s(&oci),
            s(&recipe),
        ],
    );
    ok(&o, "mkimage");
    // the size table lists every stage, in order, with size, delta, files, seconds
    let out = stdout(&o);
    let table: Vec<&str> = out.lines().take_while(|l| !l.is_empty()).collect();
    assert!(
        table[0].starts_with("STAGE") && table[0].contains("SECONDS"),
        "{out}"
    );
    let stages: Vec<&str> = table[1..]
        .iter()
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    assert_eq!(
        stages,
        ["skeleton", "busybox", "applets", "devices", "users"]
    );
    let delta = table[2].split_whitespace().nth(3).unwrap();
    assert!(
        delta.starts_with('+') && delta.ends_with("MB"),
        "busybox adds megabytes: {}",
        table[2]
    );
    // progress on stderr, stage by stage
    let err = stderr(&o);
    assert!(err.contains("==> [3/5] applets (chroot"), "{err}");
    assert!(err.contains("<== applets:"), "{err}");
    assert!(mkimage_dirs(&env).is_empty(), "build root left behind");

    // the same recipe again: the same bytes, layer by layer, and the same manifest
    let o = mkimage(&env, &["--tag", "bb:b", "--tar", s(&tar2), s(&recipe)]);
    ok(&o, "second mkimage");
    assert_eq!(manifest_of(&env, "bb:a"), manifest_of(&env, "bb:b"));
    let l = layers(&env, "bb:a");
    assert_eq!(l.len(), 2, "generic + site");
    assert_eq!(l, layers(&env, "bb:b"));
    assert_eq!(std::fs::read(&tar1).unwrap(), std::fs::read(&tar2).unwrap());

    // the image's config: the recipe's settings and the size table as a label
    let m = manifest_of(&env, "bb:a");
    let manifest = json_of(&blob(&env, &m));
    assert_eq!(manifest["mediaType"], DOCKER_MANIFEST);
    let cfg = json_of(&blob(&env, manifest["config"]["digest"].as_str().unwrap()));
    assert_eq!(cfg["created"], "2017-03-27T12:00:00Z");
    assert_eq!(cfg["config"]["Cmd"], serde_json::json!(["/bin/sh"]));
    let labels = &cfg["config"]["Labels"];
    assert_eq!(labels["org.opencontainers.image.title"], "busybox");
    let report: serde_json::Value =
        serde_json::from_str(labels["io.berth.mkimage.stages"].as_str().unwrap()).unwrap();
    assert_eq!(report.as_array().unwrap().len(), 5);
    assert_eq!(report[1]["stage"], "busybox");
    assert_eq!(report[1]["kind"], "copy");

    // the rootfs tarball: numeric owners, clamped times, devices, links
    let list = listing(&tar1);
    let line = |name: &str| {
        list.iter()
            .find(|l| l.split_whitespace().nth(5) == Some(name))
            .unwrap_or_else(|| panic!("{name} not in {list:?}"))
            .clone()
    };
    assert!(
        line("dev/null").starts_with("crw-rw-rw- 0/0"),
        "{}",
        line("dev/null")
    );
    assert!(line("dev/null").contains("1,3"), "{}", line("dev/null"));
    assert!(line("dev/ptmx").contains("5,2"));
    assert!(line("dev/fd").ends_with("-> /proc/self/fd"));
    assert!(line("bin/sh").starts_with('l'));
    assert!(line("bin/busybox").starts_with("-rwxr-xr-x 0/0"));
    assert!(
        list.iter().all(|l| l.contains("2017-03-27 12:00")),
        "{list:?}"
    );
    assert!(line("etc/passwd").contains("0/0"));

    // OCI layout: skopeo reads it, with the same layers
    let sk = crate::registry_skopeo::skopeo(&["inspect", &format!("oci:{}:a", oci.display())]);
    assert!(
        sk.status.success(),
        "{}",
        String::from_utf8_lossy(&sk.stderr)
    );
    let insp: serde_json::Value = serde_json::from_slice(&sk.stdout).unwrap();
    let sk_layers: Vec<String> = insp["Layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert_eq!(sk_layers, l);

    // the tarball imports as docker import would take it
    let id = env.ok(&[
        "import",
        "--created",
        "2017-03-27T12:00:00Z",
        s(&tar1),
        "bb:imported",
    ]);
    assert!(id.trim().starts_with("sha256:"));

    // both images through registryd and back into an empty store
    let r = Registryd::start(RegOpts {
        tls: false,
        auth: false,
        ..Default::default()
    });
    let fresh = Env::new();
    for (local, remote) in [
        ("bb:a", "site/bb:layered"),
        ("bb:imported", "site/bb:imported"),
    ] {
        let target = format!("{}/{remote}", r.host());
        env.ok(&["tag", local, &target]);
        env.ok(&["push", "--insecure-registry", &r.host(), &target]);
        fresh.ok(&["pull", "--insecure-registry", &r.host(), &target]);
        assert_eq!(
            manifest_of(&fresh, &target),
            manifest_of(&env, local),
            "{local}"
        );
    }
    assert_eq!(
        layers(&fresh, &format!("{}/site/bb:layered", r.host())),
        l,
        "layers changed on the way"
    );
    assert_blobs_intact(&r.root);
}

#[test]
fn generic_layer_survives_a_site_change() {
    need("busybox");
    let env = Env::new();
    let recipe = shipped("busybox.yml");
    ok(&mkimage(&env, &["--tag", "bb:one", s(&recipe)]), "mkimage");
    let text = std::fs::read_to_string(&recipe).unwrap();
    let changed = text.replace("Owner of Condor Daemons", "Condor at the Tier-1");
    assert_ne!(text, changed);
    let other = env.dir.join("site-changed.yml");
    std::fs::write(&other, changed).unwrap();
    ok(&mkimage(&env, &["--tag", "bb:two", s(&other)]), "mkimage");
    let (a, b) = (layers(&env, "bb:one"), layers(&env, "bb:two"));
    assert_eq!(a[0], b[0], "the generic layer moved");
    assert_ne!(a[1], b[1], "the site layer did not change");
    // the site layer holds only what the site stage touched
    let site: Vec<String> = names(&blob(&env, &b[1]));
    assert_eq!(site, ["etc/group", "etc/passwd"]);
}

const EXPUNGE: &str = r#"name: expunge
epoch: 1490616000
stages:
  - name: files
    run: |
      for d in usr/share/locale/de/LC_MESSAGES usr/share/locale/en_US/LC_MESSAGES \
               usr/share/locale/fr usr/share/man/man1 usr/share/doc/pkg \
               usr/share/icons/hicolor var/cache/yum/x; do
        mkdir -p "$ROOT/$d"
      done
      echo de >"$ROOT/usr/share/locale/de/LC_MESSAGES/a.mo"
      echo us >"$ROOT/usr/share/locale/en_US/LC_MESSAGES/a.mo"
      echo alias >"$ROOT/usr/share/locale/locale.alias"
      echo man >"$ROOT/usr/share/man/man1/ls.1"
      echo doc >"$ROOT/usr/share/doc/pkg/README"
      echo icon >"$ROOT/usr/share/icons/hicolor/a.png"
      echo cache >"$ROOT/var/cache/yum/x/y"
  - name: expunge
    remove:
      - /usr/share/locale/*
      - /usr/share/man
      - /usr/share/doc/**
      - /usr/share/icons
      - /var/cache/yum/*
    keep: [/usr/share/locale/en_US, /usr/share/locale/*.alias]
layers:
  installed: [files]
  slim: [expunge]
"#;

#[test]
fn remove_expunges_with_keep_lists_and_layers_get_whiteouts() {
    let env = Env::new();
    let recipe = env.dir.join("expunge.yml");
    std::fs::write(&recipe, EXPUNGE).unwrap();
    let tgz = env.dir.join("ex.tar.gz");
    let o = mkimage(&env, &["--tag", "ex:1", "--tar", s(&tgz), s(&recipe)]);
    ok(&o, "mkimage");
    let all = names(&tgz);
    for kept in [
        "usr/share/locale/en_US/LC_MESSAGES/a.mo",
        "usr/share/locale/locale.alias",
        "usr/share/doc",
        "var/cache/yum",
    ] {
        assert!(all.iter().any(|n| n == kept), "{kept} missing: {all:?}");
    }
    for gone in [
        "usr/share/locale/de",
        "usr/share/locale/fr",
        "usr/share/man",
        "usr/share/doc/pkg",
        "usr/share/icons",
        "var/cache/yum/x",
    ] {
        assert!(
            !all.iter().any(|n| n.starts_with(gone)),
            "{gone} left: {all:?}"
        );
    }
    // the expunge row shrinks the root
    let row = stdout(&o)
        .lines()
        .find(|l| l.starts_with("expunge "))
        .unwrap()
        .to_string();
    assert!(row.contains(" -"), "{row}");
    // the second layer deletes with whiteouts, only the topmost of each tree
    let l = layers(&env, "ex:1");
    let slim = names(&blob(&env, &l[1]));
    let wh: Vec<&String> = slim.iter().filter(|n| n.contains(".wh.")).collect();
    assert_eq!(
        wh,
        [
            "usr/share/.wh.icons",
            "usr/share/.wh.man",
            "usr/share/doc/.wh.pkg",
            "usr/share/locale/.wh.de",
            "usr/share/locale/.wh.fr",
            "var/cache/yum/.wh.x",
        ],
        "{slim:?}"
    );
    assert!(!slim.iter().any(|n| n.ends_with("a.mo")), "{slim:?}");
}

#[test]
fn file_stages_never_follow_a_symlink_out_of_the_root() {
    let env = Env::new();
    let outside = TempDir::new("outside");
    std::fs::write(outside.join("passwd"), "host-passwd\n").unwrap();
    std::fs::create_dir(outside.join("sub")).unwrap();
    std::fs::write(outside.join("sub/keep"), "x").unwrap();
    let host_file = env.dir.join("site.conf");
    std::fs::write(&host_file, "site=triumf\n").unwrap();
    let root = TempDir::new("root");
    let out = outside.path().display().to_string();
    let recipe = env.dir.join("confined.yml");
    std::fs::write(
        &recipe,
        format!(
            r#"name: confined
epoch: 1490616000
env: {{OUT: "{out}", CONF: "{conf}"}}
stages:
  - name: plant
    run: |
      ln -s "$OUT" "$ROOT/etc"
      ln -s "../../../../../../../../../..$OUT" "$ROOT/up"
      mkdir "$ROOT/data" && ln -s "$OUT/sub" "$ROOT/data/sub"
  - name: users
    append: {{file: /etc/passwd, lines: ["t1user:x:5000:5000::/home/t1user:/bin/bash"]}}
  - name: profile
    copy: {{src: "${{CONF}}", dest: /up/, mode: "0600"}}
  - name: mirror
    set: {{file: /etc/yum/vars/t1mirror, value: "http://mirror.example/"}}
  - name: expunge
    remove: [/up/*, /data/**, /etc/passwd-]
"#,
            conf = host_file.display()
        ),
    )
    .unwrap();
    let tgz = env.dir.join("c.tar.gz");
    let o = mkimage(
        &env,
        &["--root", s(root.path()), "--tar", s(&tgz), s(&recipe)],
    );
    ok(&o, "mkimage");
    // the host is untouched
    assert_eq!(
        std::fs::read_to_string(outside.join("passwd")).unwrap(),
        "host-passwd\n"
    );
    assert!(outside.join("sub/keep").exists(), "removed through a link");
    assert!(!outside.join("site.conf").exists(), "copied through a link");
    assert!(!outside.join("yum").exists(), "set through a link");
    // the links were followed as the image sees them: inside the root
    let inside = root.path().join(outside.path().strip_prefix("/").unwrap());
    assert_eq!(
        std::fs::read_to_string(inside.join("passwd")).unwrap(),
        "t1user:x:5000:5000::/home/t1user:/bin/bash\n"
    );
    assert_eq!(
        std::fs::read_to_string(inside.join("yum/vars/t1mirror")).unwrap(),
        "http://mirror.example/\n"
    );
    use std::os::unix::fs::PermissionsExt;
    let copied = std::fs::metadata(inside.join("site.conf")).unwrap();
    assert_eq!(copied.permissions().mode() & 0o7777, 0o600);
    // a matching symlink is removed itself, never what it points to
    assert!(root.path().join("data").is_dir());
    assert!(root.path().join("data/sub").symlink_metadata().is_err());
    assert!(root.path().join("up").symlink_metadata().is_ok());
    // --root is never removed
    assert!(root.path().join("etc").symlink_metadata().is_ok());
}

const FAILING: &str = r#"name: failing
stages:
  - name: fine
    run: "true"
  - name: boom
    run: |
      i=1
      while [ $i -le 30 ]; do echo "output line $i"; i=$((i+1)); done
      echo "to stderr" >&2
      exit 3
  - name: never
    run: touch "$ROOT/never"
"#;

#[test]
fn a_failing_stage_is_named_with_its_exit_code_and_output() {
    let env = Env::new();
    let recipe = env.dir.join("failing.yml");
    std::fs::write(&recipe, FAILING).unwrap();
    let tgz = env.dir.join("f.tar.gz");
    let o = mkimage(&env, &["--tar", s(&tgz), s(&recipe)]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let err = stderr(&o);
    let report = &err[err.find("mkimage: ").expect(&err)..];
    assert!(
        report.starts_with(&format!(
            "mkimage: stage \"boom\" (run at {}:5) failed with exit code 3; the last 20 lines of its output:\n",
            recipe.display()
        )),
        "{report}"
    );
    assert!(report.contains("    output line 30\n"), "{report}");
    assert!(report.contains("    output line 12\n"), "{report}");
    assert!(!report.contains("output line 11\n"), "{report}");
    assert!(report.contains("    to stderr\n"), "{report}");
    assert!(
        report
            .trim_end()
            .ends_with("the root was removed (--keep-root keeps it for inspection)"),
        "{report}"
    );
    assert!(
        !err.contains("[3/3] never"),
        "ran on after a failure: {err}"
    );
    assert!(!tgz.exists());
    assert!(mkimage_dirs(&env).is_empty());

    // --keep-root keeps it and says where
    let o = mkimage(&env, &["--keep-root", "--tar", s(&tgz), s(&recipe)]);
    assert!(!o.status.success());
    let kept = mkimage_dirs(&env);
    assert_eq!(kept.len(), 1);
    assert!(
        stderr(&o).contains(&format!(
            "the root is kept for inspection at {}",
            std::fs::canonicalize(&kept[0]).unwrap().display()
        )),
        "{}",
        stderr(&o)
    );
    std::fs::remove_dir_all(&kept[0]).unwrap();
}

#[test]
fn recipe_errors_name_file_and_line_and_shipped_recipes_check() {
    let env = Env::new();
    let bad = env.dir.join("bad.yml");
    std::fs::write(
        &bad,
        "name: x\nstages:\n  - name: a\n    run: 'true'\n  - name: b\n    run: 'true'\nlayers:\n  one: [b]\n  two: [a]\n",
    )
    .unwrap();
    let o = mkimage(&env, &["--tar", "/nonexistent/x.tar.gz", s(&bad)]);
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(
        stderr(&o),
        format!(
            "mkimage: {}:8: layers.one.0: layers take the stages in recipe order: \"a\" comes next, not \"b\"\n",
            bad.display()
        )
    );
    std::fs::write(&bad, "name: x\nstages:\n  - name: a\n    run: [unclosed\n").unwrap();
    let o = mkimage(&env, &["--check", s(&bad)]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).starts_with(&format!("mkimage: {}:", bad.display())),
        "{}",
        stderr(&o)
    );
    let o = mkimage(
        &env,
        &[
            "--level",
            "10",
            "--tar",
            "/tmp/x",
            s(&shipped("busybox.yml")),
        ],
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("gzip levels are 1 to 9"),
        "{}",
        stderr(&o)
    );
    let o = mkimage(
        &env,
        &[
            "--tar",
            "/nonexistent/dir/x.tar.gz",
            s(&shipped("busybox.yml")),
        ],
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("the directory /nonexistent/dir does not exist"),
        "{}",
        stderr(&o)
    );
    assert!(mkimage_dirs(&env).is_empty());
    // no output asked for: said before anything runs
    let o = mkimage(&env, &[s(&shipped("busybox.yml"))]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--tag NAME:TAG, --tar FILE or --oci DIR"));
    // every shipped recipe parses and validates (yum and debootstrap ones too)
    for r in [
        "busybox.yml",
        "debian-minimal.yml",
        "sl6-worker.yml",
        "sl7-worker.yml",
    ] {
        let o = mkimage(&env, &["--check", s(&shipped(r))]);
        ok(&o, r);
        assert!(stdout(&o).contains(": ok: "), "{}", stdout(&o));
    }
}

#[test]
fn refuses_to_run_without_root() {
    need("setpriv");
    let dir = TempDir::new("nonroot");
    // a copy anyone can execute: the build tree may sit under a private home
    let exe = dir.join("berth");
    std::fs::copy(bin(), &exe).unwrap();
    let recipe = dir.join("busybox.yml");
    std::fs::copy(shipped("busybox.yml"), &recipe).unwrap();
    use std::os::unix::fs::PermissionsExt;
    for p in [dir.path(), &recipe] {
        let mode = if p.is_dir() { 0o755 } else { 0o644 };
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    let o = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(&exe)
        .args(["mkimage", "--tar", "/tmp/never.tar.gz", s(&recipe)])
        .env("BERTH_ROOT", dir.join("store"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert_eq!(
        stderr(&o),
        "mkimage: must run as root (it makes device nodes, sets owners and runs chroot stages)\n"
    );
    assert!(!dir.join("store").exists());
}

#[test]
fn a_recipe_on_a_base_image_stacks_its_layer_on_the_base_layers() {
    need("busybox");
    let env = Env::new();
    ok(
        &mkimage(&env, &["--tag", "bb:base", s(&shipped("busybox.yml"))]),
        "mkimage busybox",
    );
    let recipe = env.dir.join("on-base.yml");
    std::fs::write(
        &recipe,
        "name: on-base\nepoch: 1490616000\nbase: bb:base\nstages:\n  - name: motd\n    append: {file: /etc/motd, lines: [\"Tier-1 worker\"]}\n  - name: slim\n    remove: [/bin/vi]\nconfig:\n  User: nobody\n  Labels: {tier: \"1\"}\n",
    )
    .unwrap();
    let tgz = env.dir.join("on-base.tar.gz");
    let o = mkimage(&env, &["--tag", "bb:derived", "--tar", s(&tgz), s(&recipe)]);
    ok(&o, "mkimage on base");
    assert!(stdout(&o).starts_with("STAGE"), "{}", stdout(&o));
    assert!(stdout(&o).contains("(base bb:base)"), "{}", stdout(&o));
    let (base, derived) = (layers(&env, "bb:base"), layers(&env, "bb:derived"));
    assert_eq!(derived.len(), base.len() + 1);
    assert_eq!(
        derived[..base.len()],
        base[..],
        "base layers are reused as they are"
    );
    // the new layer: the new file and a whiteout, nothing of the base's content
    let top = names(&blob(&env, derived.last().unwrap()));
    assert!(top.contains(&"etc/motd".to_string()), "{top:?}");
    assert!(top.contains(&"bin/.wh.vi".to_string()), "{top:?}");
    assert!(!top.iter().any(|n| n == "bin/busybox"), "{top:?}");
    // config: the base's, with the recipe's over it
    let m = json_of(&blob(&env, &manifest_of(&env, "bb:derived")));
    let cfg = json_of(&blob(&env, m["config"]["digest"].as_str().unwrap()));
    assert_eq!(cfg["config"]["Cmd"], serde_json::json!(["/bin/sh"]));
    assert_eq!(cfg["config"]["User"], "nobody");
    assert_eq!(cfg["config"]["Labels"]["tier"], "1");
    assert_eq!(
        cfg["config"]["Labels"]["io.berth.mkimage.recipe"],
        "on-base"
    );
    assert_eq!(cfg["rootfs"]["diff_ids"].as_array().unwrap().len(), 3);
    assert_eq!(cfg["history"].as_array().unwrap().len(), 3);
    // the tarball is the whole final root
    let all = names(&tgz);
    assert!(all.contains(&"bin/busybox".to_string()));
    assert!(all.contains(&"etc/motd".to_string()));
    assert!(!all.contains(&"bin/vi".to_string()));
    assert!(!all.iter().any(|n| n.contains(".wh.")));
    // an unknown base is named
    std::fs::write(&recipe, "name: x\nbase: nosuch:image\n").unwrap();
    let o = mkimage(&env, &["--tar", s(&tgz), s(&recipe)]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("base image nosuch:image is not in the local store"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn a_root_directory_is_packed_whole_into_images_and_tarballs() {
    let env = Env::new();
    let root = TempDir::new("mkroot");
    std::fs::create_dir_all(root.join("opt/site")).unwrap();
    std::fs::write(root.join("opt/site/data.txt"), "already there\n").unwrap();
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::write(root.join("etc/passwd"), "root:x:0:0::/root:/bin/sh\n").unwrap();
    // no stages: the directory as it is
    let plain = env.dir.join("plain.yml");
    std::fs::write(&plain, "name: packed\nepoch: 1490616000\n").unwrap();
    let tgz = env.dir.join("plain.tar.gz");
    ok(
        &mkimage(
            &env,
            &[
                "--root",
                s(root.path()),
                "--tag",
                "packed:v1",
                "--tar",
                s(&tgz),
                s(&plain),
            ],
        ),
        "pack",
    );
    let l = layers(&env, "packed:v1");
    assert_eq!(l.len(), 1, "one layer for a root without stages");
    let in_layer = names(&blob(&env, &l[0]));
    assert!(
        in_layer.iter().any(|n| n.ends_with("opt/site/data.txt")),
        "{in_layer:?}"
    );
    assert!(names(&tgz).iter().any(|n| n.ends_with("opt/site/data.txt")));
    // with a stage: what was there before it is in the image too
    let staged = env.dir.join("staged.yml");
    std::fs::write(&staged, "name: staged\nepoch: 1490616000\nstages:\n  - name: users\n    append:\n      file: /etc/passwd\n      lines: ['condor:x:64:64::/var/lib/condor:/sbin/nologin']\n").unwrap();
    let tgz2 = env.dir.join("staged.tar.gz");
    ok(
        &mkimage(
            &env,
            &[
                "--root",
                s(root.path()),
                "--tag",
                "staged:v1",
                "--tar",
                s(&tgz2),
                s(&staged),
            ],
        ),
        "staged",
    );
    let l = layers(&env, "staged:v1");
    let all: Vec<String> = l.iter().flat_map(|d| names(&blob(&env, d))).collect();
    assert!(
        all.iter().any(|n| n.ends_with("opt/site/data.txt")),
        "pre-existing content missing: {all:?}"
    );
    assert!(
        names(&tgz2)
            .iter()
            .any(|n| n.ends_with("opt/site/data.txt"))
    );
}

#[test]
fn chroot_stages_run_in_their_own_namespaces() {
    need("busybox");
    let env = Env::new();
    let root = TempDir::new("mkns");
    let recipe = env.dir.join("ns.yml");
    std::fs::write(
        &recipe,
        "name: ns\nepoch: 1490616000\nstages:\n  - name: shell\n    run: |\n      mkdir -p \"$ROOT\"/bin \"$ROOT\"/proc\n      cp /bin/busybox \"$ROOT\"/bin/busybox\n      ln -s busybox \"$ROOT\"/bin/sh\n  - name: probe\n    chroot: |\n      /bin/busybox hostname scriptlet-renamed-me\n      echo $$ > /pid\n      /bin/busybox ls /proc | /bin/busybox grep -c '^[0-9]' > /nprocs\n      /bin/busybox hostname > /uts\n",
    )
    .unwrap();
    let before = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let tgz = env.dir.join("ns.tar.gz");
    ok(
        &mkimage(
            &env,
            &["--root", s(root.path()), "--tar", s(&tgz), s(&recipe)],
        ),
        "ns build",
    );
    assert_eq!(
        std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap(),
        before,
        "a chroot stage renamed the build host"
    );
    assert_eq!(
        std::fs::read_to_string(root.join("uts")).unwrap().trim(),
        "scriptlet-renamed-me"
    );
    assert_eq!(
        std::fs::read_to_string(root.join("pid")).unwrap().trim(),
        "1",
        "the command is not PID 1 of its own namespace"
    );
    let n: u32 = std::fs::read_to_string(root.join("nprocs"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(
        n <= 4,
        "/proc in the chroot shows {n} processes: the host's"
    );
    // and nothing stays mounted in the root
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(root.path().to_str().unwrap()),
        "a mount outlived the stage"
    );
}

#[test]
fn copy_modes_do_not_depend_on_the_checkout_and_mounts_left_behind_stop_the_build() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::new();
    let root = TempDir::new("mkmodes");
    std::fs::create_dir_all(root.join("etc/profile.d")).unwrap();
    std::fs::set_permissions(
        root.join("etc/profile.d"),
        std::fs::Permissions::from_mode(0o750),
    )
    .unwrap();
    std::fs::write(root.join("etc/shadow"), "root:*:1::::::\n").unwrap();
    std::fs::set_permissions(
        root.join("etc/shadow"),
        std::fs::Permissions::from_mode(0o000),
    )
    .unwrap();
    // a checkout with a group-writable umask and a private directory
    let site = env.dir.join("site/profile.d");
    std::fs::create_dir_all(&site).unwrap();
    std::fs::write(site.join("t1.sh"), "export SITE=t1\n").unwrap();
    std::fs::set_permissions(site.join("t1.sh"), std::fs::Permissions::from_mode(0o664)).unwrap();
    std::fs::set_permissions(&site, std::fs::Permissions::from_mode(0o700)).unwrap();
    let recipe = env.dir.join("modes.yml");
    std::fs::write(
        &recipe,
        format!(
            "name: modes\nepoch: 1490616000\nstages:\n  - name: profile\n    copy: {{src: {}, dest: /etc/}}\n  - name: conf\n    copy: {{src: {}, dest: /opt/site/conf/t1.sh}}\n  - name: users\n    append: {{file: /etc/shadow, lines: ['condor:!!:1::::::']}}\n",
            site.display(),
            site.join("t1.sh").display()
        ),
    )
    .unwrap();
    let tgz = env.dir.join("m.tar.gz");
    ok(
        &mkimage(
            &env,
            &["--root", s(root.path()), "--tar", s(&tgz), s(&recipe)],
        ),
        "modes",
    );
    let mode = |p: &str| {
        std::fs::metadata(root.join(p))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777
    };
    assert_eq!(
        mode("etc/profile.d"),
        0o750,
        "an existing directory was re-moded"
    );
    assert_eq!(
        mode("etc/profile.d/t1.sh"),
        0o644,
        "the checkout's umask leaked in"
    );
    assert_eq!(
        mode("opt/site"),
        0o755,
        "a new parent took the source's mode"
    );
    assert_eq!(
        mode("etc/shadow"),
        0o000,
        "append loosened an existing file"
    );
    // a stage that leaves a bind mount in the root stops the build there
    // (the "host cache" is a directory of this test's own, so a regression costs nothing real)
    let host_cache = env.dir.join("host-cache");
    std::fs::create_dir_all(&host_cache).unwrap();
    std::fs::write(host_cache.join("keep-me.rpm"), "host data").unwrap();
    let mounted = env.dir.join("mounts.yml");
    std::fs::write(
        &mounted,
        format!(
            "name: mounts\nepoch: 1490616000\nstages:\n  - name: cache\n    run: mkdir -p \"$ROOT/var/cache/yum\" && mount --bind {} \"$ROOT/var/cache/yum\"\n  - name: expunge\n    remove: ['/var/cache/yum/**']\n",
            host_cache.display()
        ),
    )
    .unwrap();
    let root2 = TempDir::new("mkmount");
    let o = mkimage(
        &env,
        &[
            "--root",
            s(root2.path()),
            "--tar",
            s(&env.dir.join("x.tar.gz")),
            s(&mounted),
        ],
    );
    let _ = Command::new("umount")
        .arg(root2.join("var/cache/yum"))
        .status();
    assert!(!o.status.success(), "a build went on over a mount");
    assert!(
        stderr(&o).contains("left") && stderr(&o).contains("mounted inside the root"),
        "{}",
        stderr(&o)
    );
    assert!(
        host_cache.join("keep-me.rpm").exists(),
        "the expunge ran over the host's files"
    );
}

/// The shipped Debian recipe, for real (debootstrap from Debian's mirror): two
/// builds give the same digests (ldconfig's aux-cache once differed), and the
/// image berth saves loads and runs in Debian's Docker Engine.
#[test]
fn debian_recipe_is_reproducible_and_runs_in_docker_engine() {
    need("debootstrap");
    let env = Env::new();
    let recipe = shipped("debian-minimal.yml");
    // downloads are kept between the two builds (and between runs of the suite)
    let cache = Path::new(env!("CARGO_TARGET_TMPDIR")).join("debootstrap-cache");
    std::fs::create_dir_all(&cache).unwrap();
    let opts = format!("DEBOOTSTRAP_OPTS=--cache-dir={}", cache.display());
    for tag in ["deb:a", "deb:b"] {
        let o = mkimage(&env, &["-e", &opts, "--tag", tag, s(&recipe)]);
        ok(&o, tag);
    }
    assert_eq!(layers(&env, "deb:a"), layers(&env, "deb:b"));
    assert_eq!(manifest_of(&env, "deb:a"), manifest_of(&env, "deb:b"));
    let archive = env.dir.join("deb.tar");
    env.ok(&["save", "-o", s(&archive), "deb:a"]);
    let d = Dockerd::start();
    let o = d.docker(&["load", "-i", s(&archive)]).output().unwrap();
    assert!(
        o.status.success(),
        "docker load: {}{}",
        stderr(&o),
        d.logs()
    );
    let o = d
        .docker(&[
            "run",
            "--rm",
            "--network",
            "none",
            "deb:a",
            "/bin/sh",
            "-c",
            "cat /etc/debian_version; test ! -e /var/cache/ldconfig/aux-cache && echo clean",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "docker run: {}{}", stderr(&o), d.logs());
    let out = stdout(&o);
    assert!(out.starts_with("12."), "{out}");
    assert!(out.contains("clean"), "{out}");
}

//! engined as the site runs its engines: the sysconfig files of the document
//! read as they are, the site's bridge with its fixed /28 (in a network
//! namespace of the test's own, so the site's very addresses can be used),
//! names from reverse DNS without SYS_ADMIN, the add/block registry lists, the
//! remote API behind client certificates, and the pre-flight report with the
//! copy-rootfs fallback on a graph root overlay cannot use.

use crate::engine::image;
use crate::harness::*;
use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn validate(args: &[&str]) -> std::process::Output {
    let mut a = vec!["engined", "--validate"];
    a.extend_from_slice(args);
    run(&a)
}

#[test]
fn the_sites_sysconfig_files_are_read_as_they_are() {
    let docker = fixture("sysconfig/docker");
    let network = fixture("sysconfig/docker-network");
    let storage = fixture("sysconfig/docker-storage-setup");
    let (d, n, s) = (
        docker.to_str().unwrap(),
        network.to_str().unwrap(),
        storage.to_str().unwrap(),
    );
    let o = validate(&["--sysconfig", d, "--sysconfig", n, "--sysconfig", s]);
    assert!(o.status.success(), "{}", stderr(&o));
    let got: BTreeSet<String> = stdout(&o).lines().map(str::to_string).collect();
    for want in [
        format!("data-root=/docker\t# {d}:5"),
        format!("selinux-enabled=false\t# {d}:5"),
        format!("add-registry=pps04.lcg.triumf.ca:5000\t# {d}:13"),
        format!("block-registry=docker.io\t# {d}:19"),
        format!("insecure-registry=pps04.lcg.triumf.ca:5000\t# {d}:24"),
        format!("tmpdir=/var/tmp\t# {d}:33"),
        format!("cert-path=/etc/docker\t# {d}:7"),
        // the document's `--fixed-` / `cidr=` line break, joined
        format!("fixed-cidr=10.0.3.144/28\t# {n}:3"),
        format!("bridge=br0\t# {n}:3"),
        format!("mtu=9000\t# {n}:3"),
        format!("ipv6=false\t# {n}:3"),
    ] {
        assert!(got.contains(&want), "missing {want:?} in {got:#?}");
    }
    // the storage-setup file is for devicemapper: said, not fatal
    assert!(
        stderr(&o).contains(&format!("{s}:3: VG has no effect on engined")),
        "{}",
        stderr(&o)
    );

    // daemon.json and the sysconfig disagree: one line naming both places
    let dir = TempDir::new("daemon-json");
    let json = dir.join("daemon.json");
    std::fs::write(
        &json,
        "{\n  \"mtu\": 9000,\n  \"data-root\": \"/srv/docker\"\n}\n",
    )
    .unwrap();
    let j = json.to_str().unwrap();
    let o = validate(&["--sysconfig", d, "--config-file", j]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains(&format!("{d}:5")) && err.contains(&format!("{j}:3")),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    // agreeing sources are fine; an unknown key and a bad value name their line
    std::fs::write(&json, "{\n  \"mtu\": 9000,\n  \"live-restore\": true\n}\n").unwrap();
    let err = stderr(&validate(&["--config-file", j]));
    assert!(
        err.contains(&format!("{j}:3")) && err.contains("unknown key \"live-restore\""),
        "{err}"
    );
    let bad = dir.join("docker-network");
    std::fs::write(&bad, "# x\nDOCKER_NETWORK_OPTIONS='--mtu=jumbo'\n").unwrap();
    let b = bad.to_str().unwrap();
    let o = validate(&["--sysconfig", b]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains(&format!("{b}:2")) && err.contains("mtu"),
        "{err}"
    );
    std::fs::write(&bad, "DOCKER_NETWORK_OPTIONS='--mtu=90000'\n").unwrap();
    let err = stderr(&validate(&["--sysconfig", b]));
    assert!(
        err.contains(&format!("{b}:1")) && err.contains("68 to 65535"),
        "{err}"
    );
    // every bad value stops with the file, the line and what is expected
    for (opts, key, expect) in [
        ("--log-opt max-size=zz", "log-opt", "positive size"),
        ("--log-opt max-file=0", "log-opt", "max-file"),
        ("--log-opt colour", "log-opt", "KEY=VALUE"),
        ("--log-driver journald", "log-driver", "json-file"),
        ("-H foo://x", "host", "unix:///PATH or tcp://ADDR:PORT"),
        ("-H tcp://127.0.0.1", "host", "tcp://ADDR:PORT"),
        ("--add-registry a/b", "add-registry", "HOST[:PORT]"),
        ("--block-registry x@y", "block-registry", "HOST[:PORT]"),
        (
            "--insecure-registry :5000",
            "insecure-registry",
            "HOST[:PORT]",
        ),
        ("--fixed-cidr 10.0.3.144", "fixed-cidr", "NETWORK/LENGTH"),
        ("--bip 300.1.1.1/24", "bip", "ADDRESS/LENGTH"),
        ("--ipv6=true", "ipv6", "--ipv6=false"),
        (
            "--selinux-enabled=true",
            "selinux-enabled",
            "--selinux-enabled=false",
        ),
        ("--tlsverify=maybe", "tlsverify", "true or false"),
    ] {
        std::fs::write(&bad, format!("# site\n\nOPTIONS=\"{opts}\"\n")).unwrap();
        let o = validate(&["--sysconfig", b]);
        let err = stderr(&o);
        assert!(!o.status.success(), "{opts}: {err}");
        assert_eq!(err.lines().count(), 1, "{opts}: {err}");
        assert!(
            err.contains(&format!("{b}:3: --{key} ")) && err.contains(expect),
            "{opts}: {err}"
        );
    }
    // every key of a daemon.json the site may carry, each with its line
    let pki = pki();
    std::fs::write(
        &json,
        format!(
            r#"{{
  "data-root": "/docker",
  "bridge": "br0",
  "fixed-cidr": "10.0.3.144/28",
  "mtu": 9000,
  "ipv6": false,
  "insecure-registries": ["pps04.lcg.triumf.ca:5000"],
  "log-driver": "json-file",
  "log-opts": {{"max-size": "20m", "max-file": "4"}},
  "hosts": ["unix:///run/berth/engined.sock", "tcp://0.0.0.0:2376"],
  "tlsverify": true,
  "tlscacert": "{ca}",
  "tlscert": "{cert}",
  "tlskey": "{key}"
}}
"#,
            ca = pki.ca.display(),
            cert = pki.cert.display(),
            key = pki.key.display()
        ),
    )
    .unwrap();
    let o = validate(&["--config-file", j]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    for (n, item) in [
        (2, "data-root=/docker".to_string()),
        (3, "bridge=br0".into()),
        (4, "fixed-cidr=10.0.3.144/28".into()),
        (5, "mtu=9000".into()),
        (6, "ipv6=false".into()),
        (7, "insecure-registry=pps04.lcg.triumf.ca:5000".into()),
        (8, "log-driver=json-file".into()),
        (9, "log-opt=max-size=20m".into()),
        (9, "log-opt=max-file=4".into()),
        (10, "host=tcp://0.0.0.0:2376".into()),
        (11, "tlsverify=true".into()),
        (12, format!("tlscacert={}", pki.ca.display())),
        (14, format!("tlskey={}", pki.key.display())),
    ] {
        assert!(
            out.contains(&format!("{item}\t# {j}:{n}\n")),
            "{item}:\n{out}"
        );
    }
    // the remote API only with client certificates
    let err = stderr(&validate(&["-H", "tcp://0.0.0.0:2376"]));
    assert!(err.contains("--tlsverify"), "{err}");
    // dockerd's old and new names for the graph root must agree
    let err = stderr(&validate(&["-g", "/docker", "--graph", "/var/lib/docker"]));
    assert!(
        err.contains("--data-root") && err.contains("keep one"),
        "{err}"
    );
    assert!(
        validate(&["-g", "/docker", "--graph", "/docker"])
            .status
            .success()
    );
    // --help says what is out of scope
    let help = stdout(&run(&["engined", "--help"]));
    assert!(help.contains("SELinux labels are out of scope"), "{help}");
}

/// `engined --check` prints its report and fails on a blocker.
#[test]
fn check_fails_on_a_blocker() {
    let g = TempDir::new("check");
    let graph = g.join("graph");
    let gs = graph.to_str().unwrap();
    let o = run(&["engined", "--check", "-g", gs, "--bridge", "none"]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("ok   overlay"), "{}", stdout(&o));
    let o = run(&["engined", "--check", "-g", gs, "--bridge", "nosuch0"]);
    assert_eq!(o.status.code(), Some(1), "{}{}", stdout(&o), stderr(&o));
    let out = stdout(&o);
    assert!(
        out.lines()
            .any(|l| l.starts_with("FAIL bridge") && l.contains("nosuch0 does not exist")),
        "{out}"
    );
    // the other checks still ran and were reported
    assert!(out.contains("d_type") && out.contains("graph "), "{out}");
}

fn ip_of(e: &Engined, id: &str) -> Ipv4Addr {
    e.ok(&["inspect", "--format", "{{.NetworkSettings.IPAddress}}", id])
        .trim()
        .parse()
        .unwrap()
}

/// The site's network file on the site's addresses: br0 at 10.0.3.1/24 with
/// MTU 9000, containers from 10.0.3.144/28 only.
#[test]
fn the_sites_bridge_fixed_cidr_mtu_and_no_ipv6() {
    let ns = NetNs::new();
    let net = fixture("sysconfig/docker-network");
    let e = Engined::start_in(
        &ns,
        "br0",
        "10.0.3.1/24",
        9000,
        None,
        &["--sysconfig", net.to_str().unwrap()],
    );
    let img = image(&e);
    let server = e.ok(&[
        "run",
        "-d",
        &img,
        "sh",
        "-c",
        "mkdir -p /www && echo served > /www/index.html && httpd -f -p 8080 -h /www",
    ]);
    let server = server.trim();
    let range = (144u8..=159)
        .map(|i| Ipv4Addr::new(10, 0, 3, i))
        .collect::<BTreeSet<_>>();
    let sip = ip_of(&e, server);
    assert!(range.contains(&sip), "{sip}");
    // MTU from the file, no IPv6 address at all, the route via the bridge
    let probe = e.ok(&[
        "run",
        "--rm",
        &img,
        "sh",
        "-c",
        "cat /sys/class/net/eth0/mtu; grep -c eth0 /proc/net/if_inet6 || true; ip route",
    ]);
    let mut l = probe.lines();
    assert_eq!(l.next(), Some("9000"), "{probe}");
    assert_eq!(l.next(), Some("0"), "{probe}");
    assert!(probe.contains("default via 10.0.3.1"), "{probe}");
    // two containers on the bridge reach each other
    let got = wait_for("the first container to serve", || {
        let o = e.run(&[
            "run",
            "--rm",
            &img,
            "wget",
            "-q",
            "-O",
            "-",
            &format!("http://{sip}:8080/"),
        ]);
        o.status.success().then(|| stdout(&o))
    });
    assert_eq!(got, "served\n");
    // the /28 is used up: the next container is told so
    let mut seen = BTreeSet::from([sip]);
    loop {
        let o = e.run(&["create", &img, "true"]);
        if !o.status.success() {
            let err = stderr(&o);
            assert!(err.contains("no free address in 10.0.3.144/28"), "{err}");
            break;
        }
        let ip = ip_of(&e, stdout(&o).trim());
        assert!(range.contains(&ip) && seen.insert(ip), "{ip} {seen:?}");
        assert!(seen.len() <= range.len());
    }
    // neither the gateway nor the subnet's ends are in the range: all of it is used
    assert_eq!(seen, range);
}

/// Names from a resolver the test runs on loopback in the namespace: the
/// engine looks the address up and the container needs no SYS_ADMIN.
#[test]
fn hostnames_from_reverse_dns_without_sys_admin() {
    need("python3");
    let ns = NetNs::new();
    let dir = TempDir::new("dns");
    // every other address of the range has a name: the rest show the fallback
    let names: Vec<(Ipv4Addr, String)> = (144u8..=159)
        .filter(|i| i % 2 == 0)
        .map(|i| (Ipv4Addr::new(10, 0, 3, i), format!("vn03{i}.t1.example")))
        .collect();
    let mut args = vec![
        fixture("ptr-dns.py").display().to_string(),
        "127.0.0.1".into(),
        "53".into(),
    ];
    args.extend(names.iter().map(|(ip, n)| format!("{ip}={n}")));
    let mut dns = Command::new("ip")
        .args(["netns", "exec", &ns.name, "python3"])
        .args(&args)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::BufRead;
        let mut line = String::new();
        std::io::BufReader::new(dns.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line, "ready\n");
    }
    let resolv = dir.join("resolv.conf");
    std::fs::write(
        &resolv,
        "nameserver 127.0.0.1\noptions timeout:1 attempts:2\n",
    )
    .unwrap();
    let e = Engined::start_in(
        &ns,
        "br0",
        "10.0.3.1/24",
        1500,
        Some(&resolv),
        &["--fixed-cidr", "10.0.3.144/28", "--hostname-from-dns"],
    );
    let img = image(&e);
    let (mut named, mut fallback) = (0, 0);
    for n in 0..3 {
        let o = e.run(&[
            "run",
            "-d",
            "--hostname",
            &format!("given{n}"),
            &img,
            "sleep",
            "600",
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        let id = stdout(&o).trim().to_string();
        let ip = ip_of(&e, &id);
        let host = e.ok(&["exec", &id, "hostname"]);
        let hosts = e.ok(&["exec", &id, "cat", "/etc/hosts"]);
        match names.iter().find(|(a, _)| *a == ip) {
            Some((_, name)) => {
                named += 1;
                assert_eq!(host.trim(), name);
                let short = name.split('.').next().unwrap();
                assert!(hosts.contains(&format!("{ip}\t{name} {short}")), "{hosts}");
            }
            None => {
                fallback += 1;
                assert_eq!(host.trim(), format!("given{n}"));
                assert!(stderr(&o).contains("hostname-from-dns"), "{}", stderr(&o));
            }
        }
        // the container has no SYS_ADMIN: it could not have named itself
        let o = e.run(&["exec", &id, "hostname", "other"]);
        assert!(!o.status.success());
    }
    assert!(
        named >= 1 && fallback >= 1,
        "{named} named, {fallback} fallback"
    );
    // the label turns it off for one container
    let o = e.ok(&[
        "run",
        "--rm",
        "--label",
        "berth.hostname-from-dns=false",
        "--hostname",
        "plain",
        &img,
        "hostname",
    ]);
    assert_eq!(o, "plain\n");
    drop(e);
    // a daemon without the flag: the label asks for one container
    ns.sh("ip link del br0");
    let e = Engined::start_in(
        &ns,
        "br0",
        "10.0.3.1/24",
        1500,
        Some(&resolv),
        &["--fixed-cidr", "10.0.3.144/28"],
    );
    let img = image(&e);
    let o = e.ok(&["run", "--rm", "--hostname", "plain", &img, "hostname"]);
    assert_eq!(o, "plain\n");
    let named = (0..4).find_map(|_| {
        let id = e.ok(&[
            "run",
            "-d",
            "--label",
            "berth.hostname-from-dns=true",
            "--hostname",
            "given",
            &img,
            "sleep",
            "600",
        ]);
        let id = id.trim().to_string();
        let ip = ip_of(&e, &id);
        let host = e.ok(&["exec", &id, "hostname"]);
        match names.iter().find(|(a, _)| *a == ip) {
            Some((_, name)) => {
                assert_eq!(host.trim(), name);
                Some(())
            }
            None => {
                assert_eq!(host.trim(), "given");
                None
            }
        }
    });
    assert!(named.is_some(), "no labelled container got its DNS name");
    drop(e);
    let _ = dns.kill();
    let _ = dns.wait();
}

/// Short names go through the add-registry list in order; a blocked registry
/// is never contacted.
#[test]
fn add_and_block_registries_against_local_registryds() {
    let plain = || {
        Registryd::start(RegOpts {
            tls: false,
            auth: false,
            ..RegOpts::default()
        })
    };
    let (first, second, blocked) = (plain(), plain(), plain());
    let e = Engined::start_with(&[
        "--add-registry",
        &first.host(),
        "--add-registry",
        &second.host(),
        "--block-registry",
        &blocked.host(),
        "--insecure-registry",
        &first.host(),
        "--insecure-registry",
        &second.host(),
        "--insecure-registry",
        &blocked.host(),
    ]);
    let img = image(&e);
    // blocked: pull and push refused before any request
    let before = blocked.logs().lines().count();
    let on_blocked = format!("{}/site/worker:1", blocked.host());
    let o = e.run(&["pull", &on_blocked]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("blocked"), "{}", stderr(&o));
    e.ok(&["tag", &img, &on_blocked]);
    let o = e.run(&["push", &on_blocked]);
    let said = format!("{}{}", stdout(&o), stderr(&o));
    assert!(!o.status.success(), "{said}");
    assert!(
        said.contains(&format!("registry {} is blocked", blocked.host())),
        "{said}"
    );
    assert_eq!(blocked.logs().lines().count(), before, "{}", blocked.logs());
    // the image only in the second, and nowhere on the node
    let full = format!("{}/site/worker:1", second.host());
    e.ok(&["tag", &img, &full]);
    e.ok(&["push", &full]);
    e.ok(&["rmi", &full, &on_blocked, &img]);
    let out = e.ok(&["pull", "site/worker:1"]);
    assert!(out.contains(&second.host()), "{out}");
    // the CLI rendered dockerd's per-layer progress
    assert!(
        out.contains(": Pull complete") && out.contains("Digest: sha256:"),
        "{out}"
    );
    assert_eq!(
        e.ok(&["run", "--rm", "site/worker:1", "echo", "pulled"]),
        "pulled\n"
    );
    assert!(
        first.logs().contains("/v2/site/worker/manifests/1"),
        "the first registry was asked first"
    );
    // a name nowhere: the error says so
    let o = e.run(&["pull", "site/nowhere:1"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("site/nowhere"), "{}", stderr(&o));
}

/// `-H tcp://… --tlsverify`: the docker CLI with a client certificate runs a
/// container over TLS (attach included); without one the handshake fails.
#[test]
fn the_remote_api_wants_client_certificates() {
    need("curl");
    let p = pki();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let e = Engined::start_with(&[
        "-H",
        &format!("tcp://{addr}"),
        "--tlsverify",
        "--tlscacert",
        p.ca.to_str().unwrap(),
        "--tlscert",
        p.cert.to_str().unwrap(),
        "--tlskey",
        p.key.to_str().unwrap(),
    ]);
    let img = image(&e);
    let certs = e.dir.join("client-certs");
    std::fs::create_dir_all(&certs).unwrap();
    std::fs::copy(&p.ca, certs.join("ca.pem")).unwrap();
    std::fs::copy(&p.cert, certs.join("cert.pem")).unwrap();
    std::fs::copy(&p.key, certs.join("key.pem")).unwrap();
    for cli in ["docker", "/usr/bin/docker"] {
        if !Path::new(cli).exists() && cli.starts_with('/') {
            continue;
        }
        let o = Command::new(cli)
            .args(["run", "--rm", &img, "echo", "over tls"])
            .env("DOCKER_HOST", format!("tcp://{addr}"))
            .env("DOCKER_TLS_VERIFY", "1")
            .env("DOCKER_CERT_PATH", &certs)
            .env("DOCKER_CONFIG", e.dir.join("cli"))
            .output()
            .unwrap();
        assert!(o.status.success(), "{cli}: {}", stderr(&o));
        assert_eq!(stdout(&o), "over tls\n");
    }
    let curl = |with_cert: bool| {
        let mut c = Command::new("curl");
        c.args(["-sS", "--cacert"]).arg(&p.ca);
        if with_cert {
            c.arg("--cert").arg(&p.cert).arg("--key").arg(&p.key);
        }
        c.arg(format!("https://localhost:{port}/_ping"));
        c.output().unwrap()
    };
    let o = curl(true);
    assert_eq!(stdout(&o), "OK", "{}", stderr(&o));
    let o = curl(false);
    assert!(
        !o.status.success() && stdout(&o).is_empty(),
        "{}",
        stdout(&o)
    );
}

/// The pre-flight on this machine, and on a graph root that cannot carry an
/// overlay's upper layer (an overlay itself: the kernel refuses it, as it
/// refuses XFS with ftype=0): engined falls back to copies and still runs the
/// site's container.
#[test]
fn preflight_and_the_copy_rootfs_fallback() {
    let check = |graph: &Path| {
        let o = run(&[
            "engined",
            "--check",
            "-g",
            graph.to_str().unwrap(),
            "--bridge",
            "none",
        ]);
        (o.status.code(), stdout(&o))
    };
    let here = TempDir::new("preflight");
    let (code, report) = check(&here.join("graph"));
    assert_eq!(code, Some(0), "{report}");
    for want in ["ok   overlay", "ok   namespaces", "cgroups", "ok   graph"] {
        assert!(report.contains(want), "{want}: {report}");
    }

    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
    let mut e = Engined::prepare(&[]);
    let ovl = e.dir.join("ovl");
    for d in ["lower", "upper", "work"] {
        std::fs::create_dir_all(ovl.join(d)).unwrap();
    }
    let o = Command::new("mount")
        .args(["-t", "overlay", "overlay", "-o"])
        .arg(format!(
            "lowerdir={0}/lower,upperdir={0}/upper,workdir={0}/work",
            ovl.display()
        ))
        .arg(&e.graph)
        .output()
        .unwrap();
    assert!(o.status.success(), "mount: {}", stderr(&o));
    let _unmount = Unmount(e.graph.clone());
    let (code, report) = check(&e.graph);
    assert_eq!(code, Some(0), "{report}");
    assert!(report.contains("warn overlay"), "{report}");
    // the choice and its reason in one line
    assert!(
        report.lines().any(|l| l.starts_with("warn rootfs")
            && l.contains("private copy")
            && l.contains("overlay refuses an upper layer there")),
        "{report}"
    );
    e.spawn();
    assert!(e.logs().contains("private copy"), "{}", e.logs());
    let img = image(&e);
    assert_eq!(e.ok(&["info", "--format", "{{.Driver}}"]).trim(), "vfs");
    let ro = TempDir::new("ro-bind");
    std::fs::write(ro.join("grid"), "host\n").unwrap();
    let port = free_port();
    let id = e.ok(&[
        "run",
        "-d",
        "--cap-add",
        "SYS_ADMIN",
        "-v",
        &format!("{}:/etc/grid-security:ro", ro.path().display()),
        "-p",
        &format!("127.0.0.1:{port}:4080"),
        &img,
        "sh",
        "-c",
        "mkdir -p /www && cat /etc/grid-security/grid > /www/index.html && httpd -f -p 4080 -h /www",
    ]);
    let id = id.trim();
    let got = wait_for("the port to answer", || {
        let o = Command::new("busybox")
            .args([
                "wget",
                "-q",
                "-O",
                "-",
                &format!("http://127.0.0.1:{port}/"),
            ])
            .output()
            .ok()?;
        o.status.success().then(|| stdout(&o))
    });
    assert_eq!(got, "host\n");
    // the root is the container's own copy: writes stay, across a restart
    e.ok(&["exec", id, "sh", "-c", "echo kept > /root/note"]);
    e.ok(&["restart", "-t", "1", id]);
    assert_eq!(e.ok(&["exec", id, "cat", "/root/note"]), "kept\n");
    // a read-only bind stays read-only, SYS_ADMIN or not
    let o = e.run(&[
        "exec",
        id,
        "sh",
        "-c",
        "mount -o remount,rw /etc/grid-security; echo x > /etc/grid-security/grid",
    ]);
    assert!(!o.status.success());
    assert_eq!(std::fs::read_to_string(ro.join("grid")).unwrap(), "host\n");
    e.ok(&["rm", "-f", id]);
    assert!(!e.graph.join("containers").join(id).exists());
}

/// The site's playbook (document 9.2) through Ansible's community.docker
/// against engined: created and started, then nothing to change, then removed,
/// then nothing to remove; with the API version Debian's CLI speaks (1.41)
/// and with the SDK negotiating, as the newer CLI does.
#[test]
fn the_sites_ansible_playbook_is_idempotent() {
    let venv = PathBuf::from(
        std::env::var("BERTH_ANSIBLE_VENV").unwrap_or_else(|_| "/opt/berth-ansible".into()),
    );
    let playbook_bin = venv.join("bin/ansible-playbook");
    assert!(
        playbook_bin.exists(),
        "{} missing: run scripts/need.sh test (or .ci/run)",
        playbook_bin.display()
    );
    let e = Engined::start();
    // the site's image runs /root/init
    let root = e.dir.join("rootfs");
    std::fs::create_dir_all(root.join("root")).unwrap();
    std::fs::write(root.join("root/init"), "#!/bin/sh\nexec sleep 100000\n").unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            root.join("root/init"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
    }
    let img = image(&e);
    let r = Registryd::start(RegOpts {
        tls: false,
        auth: false,
        ..RegOpts::default()
    });
    // the site's registry by IP: plain HTTP on loopback needs no flag
    let site_img = format!("127.0.0.1:{}/sl6-umd3condv4:latest", r.port);
    e.ok(&["tag", &img, &site_img]);
    e.ok(&["push", &site_img]);
    e.ok(&["rmi", &site_img]);
    let port = free_port();
    let play = |file: &str, api: &str, extra: &[&str]| -> String {
        let mut c = Command::new(&playbook_bin);
        c.arg("-i")
            .arg("localhost,")
            .arg(fixture(&format!("ansible/{file}")))
            .args([
                "-e",
                "target=localhost ansible_connection=local is_docker_server=true",
            ])
            .arg("-e")
            .arg(format!(
                "ansible_python_interpreter={}",
                venv.join("bin/python").display()
            ))
            .arg("-e")
            .arg(format!(
                "thisname=vn0317 image={site_img} port=4080 external_port={port}"
            ));
        for x in extra {
            c.args(["-e", x]);
        }
        c.env("DOCKER_HOST", e.host())
            .env("ANSIBLE_HOME", e.dir.join("ansible"))
            .env("ANSIBLE_NOCOLOR", "1")
            .env("ANSIBLE_HOST_KEY_CHECKING", "0");
        if api != "auto" {
            c.env("DOCKER_API_VERSION", api);
        }
        let o = c.output().unwrap();
        let out = stdout(&o);
        assert!(
            o.status.success(),
            "{file} {extra:?} (API {api}) failed:\n{out}\n{}\nengined:\n{}",
            stderr(&o),
            e.logs_tail()
        );
        out
    };
    let changed = |out: &str| -> u32 {
        let recap = out.rsplit("PLAY RECAP").next().unwrap();
        let n = recap
            .split_whitespace()
            .find_map(|w| w.strip_prefix("changed="))
            .unwrap_or_else(|| panic!("no recap in {out}"));
        n.parse().unwrap()
    };
    for api in ["1.41", "auto"] {
        let out = play("site-ops.yml", api, &["op=pull"]);
        assert_eq!(changed(&out), 1, "pull (API {api}):\n{out}");
        let out = play("condor-container.yml", api, &[]);
        assert_eq!(changed(&out), 1, "first run (API {api}):\n{out}");
        let id = e.ok(&["inspect", "--format", "{{.Id}}", "vn0317"]);
        // the playbook's volumes are anonymous ones, as Docker makes them
        let mounts = e.ok(&[
            "inspect",
            "--format",
            "{{range .Mounts}}{{.Type}}:{{.Destination}} {{end}}",
            "vn0317",
        ]);
        for v in [
            "/etc/grid-security",
            "/etc/localtime",
            "/cvmfs",
            "/home",
            "/opt/glite",
        ] {
            assert!(mounts.contains(&format!("volume:{v} ")), "{mounts}");
        }
        let out = play("condor-container.yml", api, &[]);
        assert_eq!(changed(&out), 0, "second run (API {api}):\n{out}");
        assert_eq!(
            e.ok(&["inspect", "--format", "{{.Id}}", "vn0317"]),
            id,
            "the re-run kept the container"
        );
        assert_eq!(
            e.ok(&["inspect", "--format", "{{.State.Status}}", "vn0317"])
                .trim(),
            "running"
        );
        // the published port on every host address
        let got = wait_for("the published port", || {
            std::net::TcpStream::connect(("127.0.0.1", port)).ok()
        });
        drop(got);
        let out = play("site-ops.yml", api, &["op=info"]);
        assert!(
            out.contains("exists=True") && out.contains("SYS_ADMIN"),
            "{out}"
        );
        let out = play("site-ops.yml", api, &["op=absent"]);
        assert_eq!(changed(&out), 1, "absent (API {api}):\n{out}");
        let out = play("site-ops.yml", api, &["op=absent"]);
        assert_eq!(changed(&out), 0, "absent again (API {api}):\n{out}");
        assert!(!e.run(&["inspect", "vn0317"]).status.success());
        e.ok(&["rmi", &site_img]);
    }
}

/// SL6's init script starts engined with the site's files (missing ones
/// skipped), stops at a pre-flight blocker, reports the daemon, and stops it
/// while its containers go on.
#[test]
fn the_sl6_init_script_starts_reports_and_stops_engined() {
    need("docker");
    let dir = TempDir::new("sysvinit");
    let sock = dir.join("engined.sock");
    let pidfile = dir.join("engined.pid");
    let log = dir.join("engined.log");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/sysvinit/berth-engined");
    let net = fixture("sysconfig/docker-network");
    let missing = dir.join("no-such-docker");
    let svc = |action: &str, sysconfig: &str, bridge: &str| {
        Command::new("sh")
            .arg(&script)
            .arg(action)
            .env("BIN", format!("{} engined", bin().display()))
            .env("PIDFILE", &pidfile)
            .env("LOG", &log)
            .env("SYSCONFIG", sysconfig)
            .env(
                "ENGINED_OPTS",
                format!(
                    "-H unix://{} -g {} --exec-root {} --cgroup-parent berth-test-init {bridge}",
                    sock.display(),
                    dir.join("graph").display(),
                    dir.join("run").display()
                ),
            )
            .output()
            .unwrap()
    };
    // the site's network file names br0, which this host has not: the
    // pre-flight stops the start before any daemon runs, naming it
    let both = format!(
        "--sysconfig {} --sysconfig {}",
        missing.display(),
        net.display()
    );
    let o = svc("start", &both, "");
    assert!(!o.status.success(), "{}", stdout(&o));
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("no-such-docker: no such file, skipped"),
        "{text}"
    );
    assert!(text.contains("bridge br0 does not exist"), "{text}");
    assert!(!pidfile.exists());
    // without it, on no bridge: started, reported, stopped; the container lives on
    let tmp = dir.join("tmp");
    let docker_file = dir.join("docker");
    std::fs::write(
        &docker_file,
        format!(
            "OPTIONS='--selinux-enabled=false'\nDOCKER_TMPDIR={}\n",
            tmp.display()
        ),
    )
    .unwrap();
    let one = format!(
        "--sysconfig {} --sysconfig {}",
        missing.display(),
        docker_file.display()
    );
    // a failed assertion must not leave the daemon running
    struct Stop(PathBuf);
    impl Drop for Stop {
        fn drop(&mut self) {
            if let Ok(p) = std::fs::read_to_string(&self.0)
                && let Ok(pid) = p.trim().parse::<i32>()
            {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGTERM,
                );
            }
        }
    }
    let _stop = Stop(pidfile.clone());
    let o = svc("start", &one, "--bridge none");
    assert!(
        o.status.success(),
        "{}{}",
        stdout(&o),
        std::fs::read_to_string(&log).unwrap()
    );
    assert!(stdout(&svc("status", &one, "")).contains("running"));
    let docker = |args: &[&str]| {
        let o = Command::new("docker")
            .args(args)
            .env("DOCKER_HOST", format!("unix://{}", sock.display()))
            .env("DOCKER_CONFIG", dir.join("cli"))
            .output()
            .unwrap();
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
        stdout(&o)
    };
    wait_for("engined to answer", || {
        Command::new("docker")
            .args(["version"])
            .env("DOCKER_HOST", format!("unix://{}", sock.display()))
            .env("DOCKER_CONFIG", dir.join("cli"))
            .output()
            .ok()
            .filter(|o| o.status.success())
    });
    let root = dir.join("rootfs");
    std::fs::create_dir_all(root.join("bin")).unwrap();
    let bb = ["/bin/busybox", "/usr/bin/busybox"]
        .iter()
        .find(|p| Path::new(p).exists())
        .expect("busybox-static");
    std::fs::copy(bb, root.join("bin/busybox")).unwrap();
    std::os::unix::fs::symlink("busybox", root.join("bin/sleep")).unwrap();
    let tar = dir.join("root.tar");
    let o = Command::new("tar")
        .arg("-C")
        .arg(&root)
        .arg("-cf")
        .arg(&tar)
        .arg(".")
        .output()
        .unwrap();
    assert!(o.status.success());
    docker(&["import", tar.to_str().unwrap(), "init-test:1"]);
    // DOCKER_TMPDIR: checked by the pre-flight, made, and used by load
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains(&format!("tmpdir      {}", tmp.display())),
        "{text}"
    );
    let saved = dir.join("saved.tar");
    docker(&["save", "-o", saved.to_str().unwrap(), "init-test:1"]);
    docker(&["rmi", "init-test:1"]);
    assert!(docker(&["load", "-i", saved.to_str().unwrap()]).contains("init-test:1"));
    let left: Vec<_> = std::fs::read_dir(&tmp)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "load left {left:?} in DOCKER_TMPDIR");
    let id = docker(&["run", "-d", "init-test:1", "sleep", "600"]);
    let id = id.trim();
    let o = svc("stop", &one, "");
    assert!(o.status.success(), "{}", stdout(&o));
    let o = svc("status", &one, "");
    assert_eq!(o.status.code(), Some(3), "{}", stdout(&o));
    let o = svc("start", &one, "--bridge none");
    assert!(o.status.success(), "{}", stdout(&o));
    let state = wait_for("engined to answer again", || {
        Command::new("docker")
            .args(["inspect", "--format", "{{.State.Status}}", id])
            .env("DOCKER_HOST", format!("unix://{}", sock.display()))
            .env("DOCKER_CONFIG", dir.join("cli"))
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| stdout(&o))
    });
    assert_eq!(state.trim(), "running", "the container outlived the stop");
    docker(&["rm", "-f", id]);
    let o = svc("stop", &one, "");
    assert!(o.status.success());
    for h in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
        let _ = std::fs::remove_dir(h.path().join("berth-test-init"));
    }
}

/// The shipped systemd units pass `systemd-analyze verify` (with berth where
/// they expect the applet links), and engined's command lines in its unit,
/// fed the document's sysconfig files, are what the site means.
#[test]
fn the_systemd_units_verify_and_engineds_command_line_reads_the_site() {
    need("systemd-analyze");
    let dir = TempDir::new("units");
    let units = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/systemd");
    let bin = bin();
    for unit in ["berth-engined.service", "berth-registryd.service"] {
        let text = std::fs::read_to_string(units.join(unit)).unwrap();
        let text = text
            .replace(
                "/usr/local/bin/engined",
                &format!("{} engined", bin.display()),
            )
            .replace(
                "/usr/local/bin/registryd",
                &format!("{} registryd", bin.display()),
            );
        let path = dir.join(unit);
        std::fs::write(&path, &text).unwrap();
        let o = Command::new("systemd-analyze")
            .arg("verify")
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            o.status.success() && stderr(&o).trim().is_empty(),
            "{unit}: {}",
            stderr(&o)
        );
    }
    // ExecStart and ExecStartPre of engined's unit, the document's files put
    // where the unit reads them
    let text = std::fs::read_to_string(units.join("berth-engined.service")).unwrap();
    let joined = text.replace("\\\n", " ");
    for key in ["ExecStartPre=", "ExecStart="] {
        let line = joined
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .unwrap_or_else(|| panic!("no {key}"));
        let mut args: Vec<String> = line.split_whitespace().map(str::to_string).collect();
        assert_eq!(args[0], "/usr/local/bin/engined");
        args[0] = "engined".into();
        for a in args.iter_mut() {
            if let Some(name) = a.strip_prefix("/etc/sysconfig/") {
                let f = match name {
                    // what docker-storage-setup writes on an overlay host
                    "docker-storage" => {
                        let f = dir.join("docker-storage");
                        std::fs::write(
                            &f,
                            "DOCKER_STORAGE_OPTIONS=\"--storage-driver overlay2\"\n",
                        )
                        .unwrap();
                        f
                    }
                    n => fixture(&format!("sysconfig/{n}")),
                };
                *a = f.display().to_string();
            }
        }
        args.retain(|a| a != "--check");
        args.push("--validate".into());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let o = run(&args);
        assert!(o.status.success(), "{key}: {}", stderr(&o));
        let out = stdout(&o);
        for want in [
            "bridge=br0",
            "fixed-cidr=10.0.3.144/28",
            "mtu=9000",
            "data-root=/docker",
        ] {
            assert!(out.contains(want), "{key}: {want}:\n{out}");
        }
    }
}

/// engined trusts a registry's CA from certs.d as the client applets do
/// (`certs.d/HOST:PORT/ca.crt`, the directory named by the client settings'
/// `certs.d`), and refuses the registry without it.
#[test]
fn engined_trusts_registries_through_certs_d() {
    let r = Registryd::start(RegOpts {
        tls: true,
        auth: false,
        ..RegOpts::default()
    });
    let mut e = Engined::prepare(&[]);
    let certs = e.dir.join("certs.d");
    let ca_dir = certs.join(r.host());
    std::fs::create_dir_all(&ca_dir).unwrap();
    std::fs::copy(&pki().ca, ca_dir.join("ca.crt")).unwrap();
    std::fs::write(
        e.dir.join("client.yml"),
        format!("certs.d: {}\n", certs.display()),
    )
    .unwrap();
    e.spawn();
    let img = image(&e);
    let target = format!("{}/site/tls:1", r.host());
    e.ok(&["tag", &img, &target]);
    let out = e.ok(&["push", &target]);
    assert!(out.contains("1: digest: sha256:"), "{out}");
    e.ok(&["rmi", &target, &img]);
    let out = e.ok(&["pull", &target]);
    assert!(out.contains(": Pull complete"), "{out}");
    e.ok(&["rmi", &target]);
    // without the CA the registry's certificate is refused
    std::fs::remove_file(ca_dir.join("ca.crt")).unwrap();
    let o = e.run(&["pull", &target]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).to_lowercase().contains("certificate"),
        "{}",
        stderr(&o)
    );
}

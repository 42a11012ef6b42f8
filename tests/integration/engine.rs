//! engined through the stock docker CLI (the machine's docker 28 and Debian's
//! 20.10), as root: the site's run pattern (ports, binds, SYS_ADMIN for the
//! hostname), ps/inspect/top/logs/exec/attach, stop and kill, restart policies,
//! rename and rm, images in use, pull and push against registryd, engined
//! killed under a running container, bad inputs that leave nothing behind, and
//! escape probes.

use crate::harness::*;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A busybox root with every applet linked, a passwd with condor, imported
/// through engined (`docker import`); its name.
pub(crate) fn image(e: &Engined) -> String {
    need("busybox");
    let root = e.dir.join("rootfs");
    for d in ["bin", "etc", "tmp", "root", "var/lib/condor"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    let bb = ["/bin/busybox", "/usr/bin/busybox"]
        .iter()
        .find(|p| Path::new(p).exists())
        .expect("busybox-static");
    std::fs::copy(bb, root.join("bin/busybox")).unwrap();
    let list = Command::new(bb).arg("--list").output().unwrap();
    for a in stdout(&list).lines() {
        if a != "busybox" {
            let _ = std::os::unix::fs::symlink("busybox", root.join("bin").join(a));
        }
    }
    std::fs::write(
        root.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\ncondor:x:64:64::/var/lib/condor:/bin/sh\n",
    )
    .unwrap();
    std::fs::write(
        root.join("etc/group"),
        "root:x:0:\ncondor:x:64:\nwheel:x:10:condor\n",
    )
    .unwrap();
    let mut tar = Command::new("tar")
        .args(["-C", root.to_str().unwrap(), "-c", "."])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let o = e
        .docker(&["import", "-", "bb:eng"])
        .stdin(tar.stdout.take().unwrap())
        .output()
        .unwrap();
    assert!(
        tar.wait().unwrap().success(),
        "tar of the test rootfs failed"
    );
    assert!(o.status.success(), "docker import: {}", stderr(&o));
    assert!(stdout(&o).starts_with("sha256:"), "{}", stdout(&o));
    "bb:eng".to_string()
}

pub(crate) fn inspect(e: &Engined, what: &str) -> serde_json::Value {
    let out = e.ok(&["inspect", what]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v[0].clone()
}

/// Nothing of container `id` is left on the host: mounts, its veth, cgroups,
/// processes.
pub(crate) fn assert_nothing_left(e: &Engined, id: &str) {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(id), "a mount of {id} is left:\n{mounts}");
    // The kernel frees a veth pair with its namespace, asynchronously: poll.
    let veth = format!("veth{}", &id[..7]);
    wait_for(&format!("the veth of {id} to go"), || {
        let links = Command::new("ip").args(["-o", "link"]).output().unwrap();
        (!stdout(&links).contains(&veth)).then_some(())
    });
    let left: Vec<PathBuf> = cgroup_parents(e)
        .into_iter()
        .map(|p| p.join(id))
        .filter(|p| p.exists())
        .collect();
    assert!(left.is_empty(), "cgroups of {id} are left: {left:?}");
    let ps = Command::new("ps").args(["-eo", "args"]).output().unwrap();
    assert!(
        !stdout(&ps).contains(
            &e.dir
                .join("graph/containers")
                .join(id)
                .display()
                .to_string()
        ),
        "the shim of {id} is still running"
    );
}

/// Where this engined's container cgroups live: `<parent>` in every v1
/// hierarchy, and in the unified tree (v2, or hybrid's `unified`).
fn cgroup_parents(e: &Engined) -> Vec<PathBuf> {
    let root = Path::new("/sys/fs/cgroup");
    let mut out = vec![root.join(&e.cgroup_parent)];
    if let Ok(rd) = std::fs::read_dir(root) {
        out.extend(rd.flatten().map(|h| h.path().join(&e.cgroup_parent)));
    }
    out
}

/// engined holds exactly the containers `ids` and nothing of any other: no
/// record, mount, veth on its bridge, cgroup or shim of a container that is
/// gone or never came to be.
fn assert_holds_only(e: &Engined, ids: &[&str]) {
    let kept = |s: &str| ids.iter().any(|id| s.contains(id));
    let records: Vec<String> = std::fs::read_dir(e.graph.join("containers"))
        .unwrap()
        .flatten()
        .map(|d| d.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        records.iter().all(|r| kept(r)) && records.len() == ids.len(),
        "{records:?}"
    );
    let graph = e.graph.display().to_string();
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    for m in mounts.lines().filter(|l| l.contains(&graph)) {
        assert!(kept(m), "a mount is left: {m}");
    }
    wait_for("only kept containers' veths on the bridge", || {
        let o = Command::new("ip")
            .args(["-o", "link", "show", "master", &e.bridge])
            .output()
            .unwrap();
        stdout(&o)
            .lines()
            .all(|l| {
                ids.iter()
                    .any(|id| l.contains(&format!("veth{}", &id[..7])))
            })
            .then_some(())
    });
    for parent in cgroup_parents(e) {
        for c in std::fs::read_dir(&parent).into_iter().flatten().flatten() {
            if c.file_type().unwrap().is_dir() {
                let n = c.file_name().to_string_lossy().into_owned();
                assert!(kept(&n), "a cgroup is left: {}", c.path().display());
            }
        }
    }
    let ps = Command::new("ps").args(["-eo", "args"]).output().unwrap();
    let shims = format!("{graph}/containers/");
    for l in stdout(&ps).lines().filter(|l| l.contains(&shims)) {
        assert!(kept(l), "a shim is left: {l}");
    }
}

/// The machine's docker CLI (28.x) and Debian's docker.io one (20.10): the
/// site's nodes may carry either.
const CLIS: [&str; 2] = ["docker", "/usr/bin/docker"];

fn cli_path(cli: &str) -> String {
    if cli.starts_with('/') && !Path::new(cli).exists() {
        panic!("{cli} missing: install Debian's docker.io (CI does)");
    }
    cli.to_string()
}

#[test]
pub(crate) fn run_prints_exits_and_cleans_up_with_both_clis() {
    let mut e = Engined::start();
    let img = image(&e);
    for cli in CLIS {
        e.cli = cli_path(cli);
        let out = e.ok(&["run", "--rm", &img, "echo", "hi"]);
        assert_eq!(out, "hi\n", "{cli}");
        let o = e.run(&["run", "--rm", &img, "sh", "-c", "exit 3"]);
        assert_eq!(o.status.code(), Some(3), "{cli}: {}", stderr(&o));
        let o = e.run(&["run", "--rm", &img, "no-such-command"]);
        assert_eq!(o.status.code(), Some(127), "{cli}: {}", stderr(&o));
        assert!(
            stderr(&o).contains("executable file not found"),
            "{}",
            stderr(&o)
        );
        // stdout and stderr stay apart
        let o = e.run(&["run", "--rm", &img, "sh", "-c", "echo out; echo err >&2"]);
        assert_eq!(
            (stdout(&o).as_str(), stderr(&o).as_str()),
            ("out\n", "err\n")
        );
    }
    // --rm removed them all
    assert_eq!(e.ok(&["ps", "-aq"]), "");
    assert!(
        e.dir
            .join("graph/containers")
            .read_dir()
            .unwrap()
            .next()
            .is_none()
    );
}

#[test]
pub(crate) fn the_sites_run_pattern_ports_binds_and_hostname() {
    let mut e = Engined::start();
    let img = image(&e);
    for cli in CLIS {
        e.cli = cli_path(cli);
        let home = TempDir::new("home");
        let grid = TempDir::new("grid");
        std::fs::write(grid.join("hostcert.pem"), "cert\n").unwrap();
        let port = free_port();
        // the site's /root/init: set the hostname (needs SYS_ADMIN), then serve
        let script = "hostname vn0317.example; mkdir -p /www; echo condor-ok > /www/index.html; \
                      echo started; exec httpd -f -p 4080 -h /www";
        let id = e
            .ok(&[
                "run",
                "-d",
                "-it",
                "--cap-add",
                "SYS_ADMIN",
                "-v",
                &format!("{}:/home", home.path().display()),
                "-v",
                &format!("{}:/etc/grid-security:ro", grid.path().display()),
                "-p",
                &format!("127.0.0.1:{port}:4080"),
                "--name",
                "vn0317",
                &img,
                "sh",
                "-c",
                script,
            ])
            .trim()
            .to_string();
        assert_eq!(id.len(), 64, "{id}");
        // the published port answers (the container starts serving at once; the
        // proxy takes connections from the start)
        let body = wait_for("the published port to answer", || {
            let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
            s.write_all(b"GET /index.html HTTP/1.0\r\n\r\n").ok()?;
            let mut out = String::new();
            s.read_to_string(&mut out).ok()?;
            out.contains("condor-ok").then_some(out)
        });
        assert!(
            body.starts_with("HTTP/1.") && body.contains(" 200 "),
            "{body}"
        );
        assert_eq!(e.ok(&["exec", "vn0317", "hostname"]), "vn0317.example\n");
        // rw bind: the host sees what the container writes
        e.ok(&["exec", "vn0317", "sh", "-c", "echo from-ctr > /home/f"]);
        assert_eq!(
            std::fs::read_to_string(home.join("f")).unwrap(),
            "from-ctr\n"
        );
        // ro bind: not writable, and SYS_ADMIN cannot remount it read-write
        let o = e.run(&[
            "exec",
            "vn0317",
            "sh",
            "-c",
            "echo x > /etc/grid-security/hostcert.pem",
        ]);
        assert!(!o.status.success());
        let o = e.run(&[
            "exec",
            "vn0317",
            "mount",
            "-o",
            "remount,rw",
            "/etc/grid-security",
        ]);
        assert!(!o.status.success(), "remount rw worked: {}", stdout(&o));
        let o = e.run(&[
            "exec",
            "vn0317",
            "sh",
            "-c",
            "echo x > /etc/grid-security/hostcert.pem",
        ]);
        assert!(!o.status.success());
        assert_eq!(
            std::fs::read_to_string(grid.join("hostcert.pem")).unwrap(),
            "cert\n"
        );
        // ps, inspect, top, logs
        let ps = e.ok(&["ps"]);
        assert!(
            ps.contains("vn0317") && ps.contains(&format!("127.0.0.1:{port}->4080/tcp")),
            "{ps}"
        );
        let v = inspect(&e, "vn0317");
        assert_eq!(v["Id"], id);
        assert_eq!(v["Name"], "/vn0317");
        assert_eq!(v["State"]["Running"], true);
        assert!(v["State"]["Pid"].as_i64().unwrap() > 0);
        assert_eq!(v["Config"]["Tty"], true);
        // docker 28 sends CAP_SYS_ADMIN, 20.10 SYS_ADMIN: kept as given
        assert!(
            v["HostConfig"]["CapAdd"][0]
                .as_str()
                .unwrap()
                .ends_with("SYS_ADMIN")
        );
        assert_eq!(
            v["NetworkSettings"]["Ports"]["4080/tcp"][0]["HostPort"],
            port.to_string()
        );
        assert!(
            v["NetworkSettings"]["IPAddress"]
                .as_str()
                .unwrap()
                .starts_with(&e.subnet)
        );
        let grid_mount = v["Mounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["Destination"] == "/etc/grid-security")
            .unwrap();
        assert_eq!(grid_mount["RW"], false);
        let top = e.ok(&["top", "vn0317"]);
        assert!(top.contains("httpd -f -p 4080"), "{top}");
        let logs = wait_for("the log line", || {
            let l = e.ok(&["logs", "vn0317"]);
            l.contains("started").then_some(l)
        });
        assert!(logs.contains("started"), "{logs}");
        e.ok(&["stop", "vn0317"]);
        let v = inspect(&e, "vn0317");
        assert_eq!(v["State"]["Running"], false);
        // the port is free again
        wait_for("the port to be released", || {
            std::net::TcpListener::bind(("127.0.0.1", port)).ok()
        });
        e.ok(&["rm", "vn0317"]);
        assert_nothing_left(&e, &id);
    }
}

#[test]
fn hostname_env_workdir_and_user() {
    let e = Engined::start();
    let img = image(&e);
    let o = e.run(&["run", "--rm", &img, "hostname", "elsewhere"]);
    assert!(!o.status.success(), "hostname changed without SYS_ADMIN");
    assert!(
        stderr(&o).contains("Operation not permitted"),
        "{}",
        stderr(&o)
    );
    let out = e.ok(&[
        "run",
        "--rm",
        "--cap-add",
        "CAP_SYS_ADMIN",
        &img,
        "sh",
        "-c",
        "hostname mine && hostname",
    ]);
    assert_eq!(out, "mine\n");
    let out = e.ok(&["run", "--rm", "--hostname", "wn24", &img, "hostname"]);
    assert_eq!(out, "wn24\n");
    let out = e.ok(&[
        "run",
        "--rm",
        "-e",
        "SITE=triumf",
        "-w",
        "/srv/work",
        "-u",
        "condor",
        &img,
        "sh",
        "-c",
        "echo $SITE; pwd; id -u; id -G; echo $HOME",
    ]);
    assert_eq!(out, "triumf\n/srv/work\n64\n64 10\n/var/lib/condor\n");
    let out = e.ok(&["run", "--rm", "-u", "1000:1000", &img, "id"]);
    assert!(out.starts_with("uid=1000 gid=1000"), "{out}");
    // --entrypoint and --init
    let out = e.ok(&[
        "run",
        "--rm",
        "--entrypoint",
        "echo",
        &img,
        "from",
        "entrypoint",
    ]);
    assert_eq!(out, "from entrypoint\n");
    let out = e.ok(&[
        "run",
        "--rm",
        "--init",
        &img,
        "sh",
        "-c",
        "cat /proc/1/cmdline | tr '\\0' ' '",
    ]);
    assert!(out.starts_with("/dev/init --"), "{out}");
}

#[test]
fn logs_exec_and_attach() {
    let mut e = Engined::start();
    let img = image(&e);
    for cli in CLIS {
        e.cli = cli_path(cli);
        e.ok(&[
            "run",
            "-d",
            "--name",
            "talker",
            &img,
            "sh",
            "-c",
            "for i in 1 2 3; do echo line$i; echo err$i >&2; done; while true; do sleep 1; done",
        ]);
        wait_for("three lines", || {
            let o = e.run(&["logs", "talker"]);
            stdout(&o).contains("line3").then_some(())
        });
        let o = e.run(&["logs", "talker"]);
        assert_eq!(stdout(&o), "line1\nline2\nline3\n");
        assert!(stderr(&o).contains("err3"));
        let o = e.run(&["logs", "--tail", "2", "talker"]);
        let both = format!("{}{}", stdout(&o), stderr(&o));
        assert_eq!(both.lines().count(), 2, "{both}");
        let o = e.run(&["logs", "--timestamps", "talker"]);
        let first = stdout(&o).lines().next().unwrap().to_string();
        assert!(
            first.ends_with(" line1") && first.starts_with("20"),
            "{first}"
        );
        // logs -f follows what comes next and ends when the container stops
        let mut f = e
            .docker(&["logs", "-f", "--tail", "0", "talker"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        // The CLI may not be following yet when a line is written (--tail 0 then
        // never shows it): write until one comes through.
        let got = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let reader = {
            let got = got.clone();
            let mut out = f.stdout.take().unwrap();
            std::thread::spawn(move || {
                let mut buf = [0u8; 256];
                loop {
                    match out.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => got
                            .lock()
                            .unwrap()
                            .push_str(&String::from_utf8_lossy(&buf[..n])),
                    }
                }
            })
        };
        wait_for("logs -f to show a new line", || {
            e.ok(&["exec", "talker", "sh", "-c", "echo later > /proc/1/fd/1"]);
            got.lock().unwrap().contains("later").then_some(())
        });
        assert!(
            !got.lock().unwrap().contains("line1"),
            "--tail 0 showed old lines"
        );
        e.ok(&["stop", "-t", "1", "talker"]);
        assert!(f.wait().unwrap().success());
        reader.join().unwrap();
        // exec: exit codes, stdin, a tty
        e.ok(&["start", "talker"]);
        let o = e.run(&["exec", "talker", "sh", "-c", "exit 5"]);
        assert_eq!(o.status.code(), Some(5));
        let mut c = e
            .docker(&["exec", "-i", "talker", "sh", "-c", "read x; echo got:$x"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        c.stdin.take().unwrap().write_all(b"hello\n").unwrap();
        let o = c.wait_with_output().unwrap();
        assert_eq!(stdout(&o), "got:hello\n");
        need("script");
        let cmd = format!("{} exec -t talker sh -c 'tty; echo $TERM'", e.cli);
        let o = Command::new("script")
            .args(["-qec", &cmd, "/dev/null"])
            .env("DOCKER_HOST", e.host())
            .env("DOCKER_CONFIG", e.dir.join("cli"))
            .output()
            .unwrap();
        let out = stdout(&o);
        assert!(out.contains("/dev/pts/") && out.contains("xterm"), "{out}");
        // attach: a container reading stdin, attached to, answering
        e.ok(&[
            "run",
            "-d",
            "-i",
            "--name",
            "reader",
            &img,
            "sh",
            "-c",
            "while read l; do echo echo:$l; done",
        ]);
        let mut a = e
            .docker(&["attach", "reader"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut ain = a.stdin.take().unwrap();
        ain.write_all(b"ping\n").unwrap();
        let mut aout = a.stdout.take().unwrap();
        let mut got = String::new();
        let mut buf = [0u8; 256];
        while !got.contains("echo:ping") {
            let n = aout.read(&mut buf).unwrap();
            assert!(n > 0, "attach ended early: {got}");
            got.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
        drop(ain);
        e.ok(&["rm", "-f", "reader"]);
        let _ = a.wait();
        e.ok(&["rm", "-f", "talker"]);
    }
}

#[test]
fn stop_kill_and_restart_policies() {
    let e = Engined::start();
    let img = image(&e);
    let marks = TempDir::new("marks");
    let m = format!("{}:/marks", marks.path().display());
    // stop: SIGTERM reaches the command, which can clean up
    e.ok(&[
        "run",
        "-d",
        "--name",
        "term",
        "-v",
        &m,
        &img,
        "sh",
        "-c",
        "trap 'echo TERM > /marks/got; exit 0' TERM; while true; do sleep 1; done",
    ]);
    e.ok(&["stop", "term"]);
    assert_eq!(
        std::fs::read_to_string(marks.join("got")).unwrap(),
        "TERM\n"
    );
    assert_eq!(inspect(&e, "term")["State"]["ExitCode"], 0);
    // a command that ignores TERM is killed after the timeout: 137
    e.ok(&[
        "run",
        "-d",
        "--name",
        "stubborn",
        &img,
        "sh",
        "-c",
        "trap '' TERM; while true; do sleep 1; done",
    ]);
    e.ok(&["stop", "-t", "1", "stubborn"]);
    assert_eq!(inspect(&e, "stubborn")["State"]["ExitCode"], 137);
    // kill with a signal: the command's handler gets it (the kernel ignores
    // signals without a handler for a PID namespace's first process, as with
    // dockerd), and plain kill is SIGKILL
    e.ok(&[
        "run",
        "-d",
        "--name",
        "killme",
        &img,
        "sh",
        "-c",
        "trap 'exit 7' USR1; while true; do sleep 1; done",
    ]);
    e.ok(&["kill", "-s", "USR1", "killme"]);
    wait_for("the kill", || {
        (inspect(&e, "killme")["State"]["Running"] == false).then_some(())
    });
    assert_eq!(inspect(&e, "killme")["State"]["ExitCode"], 7);
    e.ok(&["start", "killme"]);
    e.ok(&["kill", "killme"]);
    wait_for("the SIGKILL", || {
        (inspect(&e, "killme")["State"]["Running"] == false).then_some(())
    });
    assert_eq!(inspect(&e, "killme")["State"]["ExitCode"], 137);
    // on-failure:2 restarts twice, then stays down
    e.ok(&[
        "run",
        "-d",
        "--name",
        "flaky",
        "--restart",
        "on-failure:2",
        &img,
        "sh",
        "-c",
        "exit 1",
    ]);
    wait_for("two restarts", || {
        let v = inspect(&e, "flaky");
        (v["RestartCount"] == 2 && v["State"]["Status"] == "exited").then_some(())
    });
    // Docker's back-off between restarts: 100 ms, doubled after each quick exit
    let t0 = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        - 1;
    e.ok(&[
        "run",
        "-d",
        "--name",
        "crashy",
        "--restart",
        "always",
        &img,
        "sh",
        "-c",
        "exit 1",
    ]);
    wait_for("five restarts", || {
        (inspect(&e, "crashy")["RestartCount"].as_u64()? >= 5).then_some(())
    });
    let starts = e.ok(&[
        "events",
        "--since",
        &t0.to_string(),
        "--until",
        "0s",
        "--filter",
        "container=crashy",
        "--filter",
        "event=start",
        "--format",
        "{{.TimeNano}}",
    ]);
    let t: Vec<i64> = starts.lines().map(|l| l.parse().unwrap()).collect();
    assert!(t.len() >= 5, "{starts}");
    for k in 1..5 {
        // (a lower bound only: a loaded machine makes the gaps longer)
        let least = 100_000_000i64 << (k - 1);
        assert!(t[k] - t[k - 1] >= least * 9 / 10, "start {k}: {t:?}");
    }
    e.ok(&["rm", "-f", "crashy"]);
    // unless-stopped: restarted after a kill, not after a stop
    e.ok(&[
        "run",
        "-d",
        "--name",
        "us",
        "--restart",
        "unless-stopped",
        &img,
        "sleep",
        "1000",
    ]);
    e.ok(&["kill", "us"]);
    wait_for("the restart after the kill", || {
        let v = inspect(&e, "us");
        (v["RestartCount"] == 1 && v["State"]["Running"] == true).then_some(())
    });
    e.ok(&["stop", "-t", "1", "us"]);
    let v = inspect(&e, "us");
    assert_eq!(
        (v["State"]["Status"].clone(), v["RestartCount"].clone()),
        ("exited".into(), 1.into())
    );
    e.ok(&["rm", "us"]);
    // always: restarted after it exits
    e.ok(&[
        "run",
        "-d",
        "--name",
        "always",
        "--restart",
        "always",
        "-v",
        &m,
        &img,
        "sh",
        "-c",
        "echo x >> /marks/always; sleep 1000",
    ]);
    wait_for("the first run", || {
        std::fs::read_to_string(marks.join("always"))
            .ok()
            .filter(|s| s.len() == 2)
    });
    e.ok(&["kill", "always"]);
    wait_for("the restart", || {
        std::fs::read_to_string(marks.join("always"))
            .ok()
            .filter(|s| s.len() == 4)
    });
    // a stop is final, whatever the policy
    e.ok(&["stop", "-t", "1", "always"]);
    assert_eq!(inspect(&e, "always")["State"]["Status"], "exited");
    // restart
    e.ok(&["restart", "-t", "1", "always"]);
    assert_eq!(inspect(&e, "always")["State"]["Running"], true);
    e.ok(&["rm", "-f", "always"]);
}

#[test]
fn rename_rm_and_images_in_use() {
    let e = Engined::start();
    let img = image(&e);
    e.ok(&["run", "-d", "--name", "first", &img, "sleep", "1000"]);
    e.ok(&["rename", "first", "second"]);
    assert_eq!(inspect(&e, "second")["Name"], "/second");
    let o = e.run(&["rm", "second"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("Stop the container before attempting removal"),
        "{}",
        stderr(&o)
    );
    let o = e.run(&["rmi", &img]);
    assert!(!o.status.success(), "rmi of an image in use worked");
    assert!(stderr(&o).contains("in use"), "{}", stderr(&o));
    let id = inspect(&e, "second")["Id"].as_str().unwrap().to_string();
    e.ok(&["rm", "-f", "second"]);
    assert_nothing_left(&e, &id);
    e.ok(&["rmi", &img]);
    assert!(!e.ok(&["images"]).contains("bb"));
}

#[test]
fn bad_inputs_give_api_errors_and_leave_nothing() {
    let e = Engined::start();
    let img = image(&e);
    // (the harness blocks docker.io, as the site does: nothing leaves the host)
    let o = e.run(&["run", "--rm", "no-such-image:1"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("blocked"), "{}", stderr(&o));
    assert_holds_only(&e, &[]);
    let (status, body) = e.api(
        "POST",
        "/v1.41/containers/create",
        Some(r#"{"Image":"no-such-image:1"}"#),
    );
    assert_eq!(status, 404, "{body}");
    let o = e.run(&["run", "--rm", "-v", "/no/such/dir:/x", &img, "true"]);
    assert!(
        stderr(&o).contains("bind source path does not exist: /no/such/dir"),
        "{}",
        stderr(&o)
    );
    assert_holds_only(&e, &[]);
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port();
    let o = e.run(&[
        "run",
        "-d",
        "--name",
        "porty",
        "-p",
        &format!("127.0.0.1:{port}:80"),
        &img,
        "sleep",
        "100",
    ]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("port is already allocated"),
        "{}",
        stderr(&o)
    );
    // the failed start left its container created, with nothing running
    let porty = inspect(&e, "porty");
    let id = porty["Id"].as_str().unwrap().to_string();
    assert_eq!(porty["State"]["Running"], false);
    assert_holds_only(&e, &[&id]);
    let o = e.run(&["run", "--rm", "--cap-add", "CAP_FOO", &img, "true"]);
    assert!(
        stderr(&o).contains("unknown capability: \"CAP_FOO\""),
        "{}",
        stderr(&o)
    );
    assert_holds_only(&e, &[&id]);
    let taken = e.ok(&["create", "--name", "taken", &img, "true"]);
    let taken = taken.trim();
    let o = e.run(&["create", "--name", "taken", &img, "true"]);
    assert!(stderr(&o).contains("is already in use"), "{}", stderr(&o));
    let (status, body) = e.api(
        "POST",
        "/v1.41/containers/create?name=taken",
        Some(&format!(r#"{{"Image":"{img}","Cmd":["true"]}}"#)),
    );
    assert_eq!(status, 409, "{body}");
    let (status, body) = e.api("POST", "/v1.41/containers/create", Some("{not json"));
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("\"message\""), "{body}");
    let (status, body) = e.api("GET", "/v1.41/containers/nope/json", None);
    assert_eq!(
        (status, body.contains("No such container: nope")),
        (404, true),
        "{body}"
    );
    assert_holds_only(&e, &[&id, taken]);
    e.ok(&["rm", "porty", "taken"]);
    assert_nothing_left(&e, &id);
    assert_holds_only(&e, &[]);
}

#[test]
fn escape_probes_with_and_without_sys_admin() {
    let e = Engined::start();
    let img = image(&e);
    let ro = TempDir::new("ro");
    std::fs::write(ro.join("f"), "host\n").unwrap();
    let bind = format!("{}:/ro:ro", ro.path().display());
    for caps in [vec![], vec!["--cap-add", "SYS_ADMIN"]] {
        let mut args = vec!["run", "--rm", "-v", &bind];
        args.extend(caps.iter().copied());
        args.push(&img);
        args.extend(["sh", "-c"]);
        let probe = |script: &str| -> (bool, String) {
            let mut a = args.clone();
            a.push(script);
            let o = e.run(&a);
            (o.status.success(), format!("{}{}", stdout(&o), stderr(&o)))
        };
        let label = if caps.is_empty() {
            "default"
        } else {
            "SYS_ADMIN"
        };
        for (what, script) in [
            ("sysrq", "echo h > /proc/sysrq-trigger"),
            ("/proc/sys", "echo 1 > /proc/sys/kernel/panic"),
            (
                "/sys",
                "echo 1 > /sys/kernel/uevent_helper || echo x > /sys/class/net/lo/mtu",
            ),
            (
                "kcore",
                "test -s /proc/kcore && head -c 1 /proc/kcore | od | grep -q .",
            ),
            ("mount", "mount -t tmpfs none /tmp"),
            ("ro bind", "echo x > /ro/f"),
            ("ro remount", "mount -o remount,rw /ro && echo x > /ro/f"),
            (
                "proc remount",
                "mount -o remount,rw /proc/sys && echo 1 > /proc/sys/kernel/panic",
            ),
            ("block devices", "ls /dev | grep -E '^(sd|vd|nvme|xvd)'"),
            ("mknod", "mknod /tmp/vda b 254 0 && head -c 1 /tmp/vda"),
            ("host pids", "grep -l 'engi[n]ed' /proc/[0-9]*/cmdline"),
            // (an address on lo: this kernel has no dummy links to add)
            ("net admin", "ip addr add 10.9.9.9/32 dev lo"),
        ] {
            let (ok, out) = probe(script);
            let allowed = label == "SYS_ADMIN" && what == "mount";
            if !allowed {
                assert!(!ok, "{label}: {what} worked: {out}");
            }
        }
        let (ok, out) = probe("hostname probe");
        assert_eq!(ok, label == "SYS_ADMIN", "{label}: hostname: {out}");
    }
    assert_eq!(std::fs::read_to_string(ro.join("f")).unwrap(), "host\n");
}

#[test]
fn engined_killed_under_a_running_container() {
    let mut e = Engined::start();
    let img = image(&e);
    e.ok(&[
        "run",
        "-d",
        "--name",
        "job",
        &img,
        "sh",
        "-c",
        "echo before; while true; do sleep 1; done",
    ]);
    let pid = inspect(&e, "job")["State"]["Pid"].as_i64().unwrap();
    e.kill_daemon();
    // the socket outlives the crash: the next start removes it as stale
    assert!(e.sock.exists());
    e.start_daemon();
    assert!(
        Path::new(&format!("/proc/{pid}")).exists(),
        "the container died with engined"
    );
    assert!(e.ok(&["ps"]).contains("job"));
    assert!(e.ok(&["logs", "job"]).contains("before"));
    e.ok(&["exec", "job", "true"]);
    e.ok(&["stop", "-t", "1", "job"]);
    assert_eq!(inspect(&e, "job")["State"]["Running"], false);
    let id = inspect(&e, "job")["Id"].as_str().unwrap().to_string();
    e.ok(&["rm", "job"]);
    assert_nothing_left(&e, &id);
}

#[test]
fn pull_and_push_through_engined_against_registryd() {
    let e = Engined::start();
    let img = image(&e);
    let r = Registryd::start(RegOpts {
        tls: false,
        auth: false,
        ..RegOpts::default()
    });
    // 127.0.0.1: plain HTTP to a loopback registry, as dockerd allows
    let target = format!("127.0.0.1:{}/site/bb:v1", r.port);
    e.ok(&["tag", &img, &target]);
    let out = e.ok(&["push", &target]);
    assert!(out.contains("v1: digest: sha256:"), "{out}");
    e.ok(&["rmi", &target, &img]);
    let out = e.ok(&["pull", &target]);
    assert!(
        out.contains("Downloaded newer image") || out.contains("Status:"),
        "{out}"
    );
    assert_eq!(
        e.ok(&["run", "--rm", &target, "echo", "pulled"]),
        "pulled\n"
    );
    // with htpasswd: docker login checks through engined (POST /auth), and
    // the CLI's X-Registry-Auth carries the credentials to each push and pull
    let a = Registryd::start(RegOpts {
        tls: false,
        auth: true,
        ..RegOpts::default()
    });
    let reg = format!("127.0.0.1:{}", a.port);
    let private = format!("{reg}/site/private:v1");
    e.ok(&["tag", &target, &private]);
    let o = e.run(&["push", &private]);
    assert!(!o.status.success(), "pushed without credentials");
    let o = e.run(&["login", "-u", USER, "-p", "wrong", &reg]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("refused the user name or password"),
        "{}",
        stderr(&o)
    );
    let o = e.run(&["login", "-u", USER, "-p", PASS, &reg]);
    assert!(
        o.status.success(),
        "{}\n{}\n{}",
        stderr(&o),
        a.logs(),
        e.logs_tail()
    );
    assert!(stdout(&o).contains("Login Succeeded"), "{}", stdout(&o));
    let out = e.ok(&["push", &private]);
    assert!(out.contains("v1: digest: sha256:"), "{out}");
    e.ok(&["rmi", &private]);
    e.ok(&["pull", &private]);
    e.ok(&["logout", &reg]);
    e.ok(&["rmi", &private]);
    let o = e.run(&["pull", &private]);
    assert!(!o.status.success(), "pulled after logout");
}

/// A layer that replaces a directory with a symlink to / and then writes and
/// sets times through it reaches the layer cache only through `docker load`:
/// running it must fail cleanly and change nothing outside.
#[test]
fn a_hostile_layer_changes_nothing_outside_the_cache() {
    let e = Engined::start();
    let victim = TempDir::new("victim");
    std::fs::write(victim.join("keep"), "safe\n").unwrap();
    let before = std::fs::metadata(victim.path())
        .unwrap()
        .modified()
        .unwrap();
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Directory);
    h.set_size(0);
    h.set_mode(0o755);
    h.set_mtime(1);
    b.append_data(&mut h, "a/", std::io::empty()).unwrap();
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_size(0);
    h.set_mode(0o777);
    b.append_link(&mut h, "a", victim.path()).unwrap();
    let mut h = tar::Header::new_gnu();
    h.set_size(5);
    h.set_mode(0o644);
    b.append_data(&mut h, "a/planted", &b"evil\n"[..]).unwrap();
    let layer = b.into_inner().unwrap();
    let archive = hostile_archive(&e.dir.join("hostile.tar"), &layer);
    let o = e.run(&["load", "-i", archive.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = e.run(&["run", "--rm", "hostile:1", "true"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("symlink"), "{}", stderr(&o));
    assert!(!victim.join("planted").exists());
    assert_eq!(
        std::fs::metadata(victim.path())
            .unwrap()
            .modified()
            .unwrap(),
        before
    );
    assert_eq!(
        std::fs::read_to_string(victim.join("keep")).unwrap(),
        "safe\n"
    );
}

/// A docker-archive of one image with `layer` as its only layer.
fn hostile_archive(path: &Path, layer: &[u8]) -> PathBuf {
    let diff = berth::digest::Digest::sha256(layer);
    let cfg = format!(
        r#"{{"architecture":"amd64","os":"linux","config":{{"Cmd":["true"]}},"rootfs":{{"type":"layers","diff_ids":["{diff}"]}}}}"#
    );
    let cfg_name = format!(
        "{}.json",
        berth::digest::Digest::sha256(cfg.as_bytes()).hex()
    );
    let manifest =
        format!(r#"[{{"Config":"{cfg_name}","RepoTags":["hostile:1"],"Layers":["l/layer.tar"]}}]"#);
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in [
        (cfg_name.as_str(), cfg.as_bytes()),
        ("l/layer.tar", layer),
        ("manifest.json", manifest.as_bytes()),
    ] {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        b.append_data(&mut h, name, data).unwrap();
    }
    std::fs::write(path, b.into_inner().unwrap()).unwrap();
    path.to_path_buf()
}

/// Terminal sizes through `/containers/{id}/resize` and `/exec/{id}/resize`,
/// `logs --since/--until` through the CLI, and more followers than engined has
/// workers: long-lived streams hold none, so the API keeps answering.
#[test]
fn resizes_log_windows_and_many_followers() {
    let e = Engined::start();
    let img = image(&e);
    e.ok(&[
        "run",
        "-d",
        "-t",
        "--name",
        "sized",
        &img,
        "sh",
        "-c",
        "echo early; while [ ! -e /tmp/go ]; do sleep 0.1; done; echo late; \
         while true; do stty size <&1; sleep 0.2; done",
    ]);
    wait_for("the first line", || {
        e.ok(&["logs", "sized"]).contains("early").then_some(())
    });
    // a time between the two lines, on the host's clock as the shim's
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    let cut = format!("{}.{:09}", t.as_secs(), t.subsec_nanos());
    e.ok(&["exec", "sized", "touch", "/tmp/go"]);
    wait_for("the second line", || {
        e.ok(&["logs", "sized"]).contains("late").then_some(())
    });
    let since = e.ok(&["logs", "--since", &cut, "sized"]);
    assert!(
        since.contains("late") && !since.contains("early"),
        "{since}"
    );
    let until = e.ok(&["logs", "--until", &cut, "sized"]);
    assert_eq!(until.trim_end(), "early", "{until}");
    let (status, body) = e.api("POST", "/v1.41/containers/sized/resize?h=41&w=123", None);
    assert_eq!(status, 200, "{body}");
    wait_for("the container's tty to be 41x123", || {
        e.ok(&["logs", "--tail", "2", "sized"])
            .contains("41 123")
            .then_some(())
    });
    // an exec with a tty of its own, resized while it runs
    let (status, body) = e.api(
        "POST",
        "/v1.41/containers/sized/exec",
        Some(
            r#"{"AttachStdout":true,"Tty":true,"Cmd":["sh","-c","while true; do stty size <&1 > /tmp/es; sleep 0.2; done"]}"#,
        ),
    );
    assert_eq!(status, 201, "{body}");
    let xid = serde_json::from_str::<serde_json::Value>(&body).unwrap()["Id"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, body) = e.api(
        "POST",
        &format!("/v1.41/exec/{xid}/start"),
        Some(r#"{"Detach":true,"Tty":true}"#),
    );
    assert_eq!(status, 200, "{body}");
    let (status, body) = e.api("POST", &format!("/v1.41/exec/{xid}/resize?h=33&w=77"), None);
    assert_eq!(status, 200, "{body}");
    wait_for("the exec's tty to be 33x77", || {
        let o = e.run(&["exec", "sized", "cat", "/tmp/es"]);
        (stdout(&o) == "33 77\n").then_some(())
    });
    let (_, body) = e.api("GET", &format!("/v1.41/exec/{xid}/json"), None);
    let x: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (x["Running"].clone(), x["ProcessConfig"]["tty"].clone()),
        (true.into(), true.into()),
        "{x}"
    );
    // a resize of a stopped container is a conflict
    e.ok(&["run", "-d", "--name", "quiet", &img, "sleep", "1000"]);
    // 24 followers, more than the 16 workers engined keeps
    let followers: Vec<_> = (0..24)
        .map(|_| {
            let mut c = e
                .docker(&["logs", "-f", "--tail", "0", "quiet"])
                .stdout(Stdio::piped())
                .spawn()
                .unwrap();
            let out = c.stdout.take().unwrap();
            let got = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
            let g = got.clone();
            std::thread::spawn(move || {
                let mut out = out;
                let mut buf = [0u8; 256];
                while let Ok(n) = out.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    g.lock()
                        .unwrap()
                        .push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            });
            (c, got)
        })
        .collect();
    wait_for("every follower to see a new line", || {
        e.ok(&["exec", "quiet", "sh", "-c", "echo tick > /proc/1/fd/1"]);
        followers
            .iter()
            .all(|(_, g)| g.lock().unwrap().contains("tick"))
            .then_some(())
    });
    // with all of them open the API still answers everything else
    assert!(e.ok(&["ps"]).contains("quiet"));
    e.ok(&["stop", "-t", "1", "quiet"]);
    let (status, body) = e.api("POST", "/v1.41/containers/quiet/resize?h=1&w=1", None);
    assert_eq!(status, 409, "{body}");
    for (mut c, _) in followers {
        // the stop ended every follow
        assert!(c.wait().unwrap().success());
    }
}

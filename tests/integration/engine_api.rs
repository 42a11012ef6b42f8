//! engined's API past the site's run pattern, through the docker CLI: image
//! listing filters, history, save and load; container listing filters, labels,
//! --env-file and events; --memory/--cpus/--pids-limit in the cgroup tree and
//! in effect; the bridge, host and none network modes; json-file rotation by
//! --log-opt; restart policies across a node's reboot; what is refused
//! (named volumes, a second daemon on a socket in use).

use crate::engine::{assert_nothing_left, image, inspect};
use crate::harness::*;
use std::io::BufRead;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};

fn lines(s: &str) -> Vec<String> {
    let mut v: Vec<String> = s.lines().map(str::to_string).collect();
    v.sort();
    v
}

#[test]
fn images_filters_history_save_and_load() {
    let e = Engined::start();
    let img = image(&e);
    e.ok(&["tag", &img, "site/worker:1"]);
    e.ok(&["tag", &img, "site/worker:2"]);
    let refs = |filter: &str| {
        lines(&e.ok(&[
            "images",
            "--format",
            "{{.Repository}}:{{.Tag}}",
            "--filter",
            filter,
        ]))
    };
    // an image is listed under the matching names only; '*' stops at '/'
    assert_eq!(refs("reference=site/*"), ["site/worker:1", "site/worker:2"]);
    assert_eq!(refs("reference=site/worker:2"), ["site/worker:2"]);
    assert_eq!(refs("reference=bb"), ["bb:eng"]);
    assert!(refs("reference=*").iter().all(|r| !r.starts_with("site/")));
    // dangling: an image that lost its last name to a newer import
    let tarball = e.dir.join("one.tar");
    let files = e.dir.join("one");
    std::fs::create_dir_all(&files).unwrap();
    std::fs::write(files.join("a"), "first").unwrap();
    let tar = |out: &Path| {
        let o = std::process::Command::new("tar")
            .arg("-C")
            .arg(&files)
            .arg("-cf")
            .arg(out)
            .arg(".")
            .output()
            .unwrap();
        assert!(o.status.success(), "tar: {}", stderr(&o));
    };
    tar(&tarball);
    let first = e.ok(&["import", tarball.to_str().unwrap(), "tmp:x"]);
    std::fs::write(files.join("a"), "second").unwrap();
    tar(&tarball);
    let second = e.ok(&["import", tarball.to_str().unwrap(), "tmp:x"]);
    assert_ne!(first, second);
    let dangling = e.ok(&["images", "-q", "--no-trunc", "--filter", "dangling=true"]);
    assert_eq!(dangling.trim(), first.trim());
    assert!(
        !e.ok(&["images", "-q", "--no-trunc", "--filter", "dangling=false"])
            .contains(first.trim())
    );
    // history: the import is the image's only step
    let hist = e.ok(&[
        "history",
        "--no-trunc",
        "--format",
        "{{.ID}} {{.Comment}}",
        &img,
    ]);
    let id = e.ok(&["image", "inspect", "--format", "{{.Id}}", &img]);
    assert_eq!(hist.lines().count(), 1, "{hist}");
    assert!(hist.starts_with(id.trim()), "{hist} vs {id}");
    assert!(hist.contains("Imported from"), "{hist}");
    let facts = e.ok(&[
        "image",
        "inspect",
        "--format",
        "{{len .RootFS.Layers}} {{.Os}} {{.Architecture}}",
        "site/worker:1",
    ]);
    assert_eq!(facts.trim(), "1 linux amd64");
    // save, remove, load, run
    let saved = e.dir.join("saved.tar");
    e.ok(&["save", "-o", saved.to_str().unwrap(), "site/worker:1"]);
    let listing = std::process::Command::new("tar")
        .arg("-tf")
        .arg(&saved)
        .output()
        .unwrap();
    assert!(
        stdout(&listing).lines().any(|l| l == "manifest.json"),
        "{}",
        stdout(&listing)
    );
    e.ok(&["rmi", "site/worker:1", "site/worker:2", &img]);
    assert!(
        !e.run(&["image", "inspect", "site/worker:1"])
            .status
            .success()
    );
    let loaded = e.ok(&["load", "-i", saved.to_str().unwrap()]);
    assert!(loaded.contains("site/worker:1"), "{loaded}");
    assert_eq!(
        e.ok(&["run", "--rm", "site/worker:1", "echo", "back"]),
        "back\n"
    );
}

#[test]
fn ps_filters_labels_env_file_and_events() {
    let e = Engined::start();
    let img = image(&e);
    // events as they happen, from before the first container
    let mut events = e
        .docker(&[
            "events",
            "--format",
            "{{.Type}} {{.Action}} {{.Actor.Attributes.name}}",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let seen = Arc::new(Mutex::new(Vec::<String>::new()));
    let out = events.stdout.take().unwrap();
    let sink = seen.clone();
    std::thread::spawn(move || {
        for l in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            sink.lock().unwrap().push(l);
        }
    });
    // the events stream is open once it delivers: a container's create
    e.ok(&["create", "--name", "probe", &img, "true"]);
    wait_for("the events stream", || {
        seen.lock()
            .unwrap()
            .iter()
            .any(|l| l == "container create probe")
            .then_some(())
    });
    e.ok(&["rm", "probe"]);

    let envf = e.dir.join("job.env");
    std::fs::write(&envf, "# the site's job settings\nSITE=tier1\nQUEUE=grid\n").unwrap();
    e.ok(&[
        "run",
        "-d",
        "--name",
        "w1",
        "-l",
        "site=tier1",
        "-l",
        "role=worker",
        "--env-file",
        envf.to_str().unwrap(),
        &img,
        "sleep",
        "600",
    ]);
    e.ok(&[
        "run",
        "--name",
        "done1",
        "-l",
        "role=batch",
        &img,
        "sh",
        "-c",
        "exit 0",
    ]);
    e.ok(&["create", "--name", "new1", &img, "true"]);
    let names = |filter: &[&str]| {
        let mut a = vec!["ps", "-a", "--format", "{{.Names}}"];
        a.extend_from_slice(filter);
        lines(&e.ok(&a))
    };
    assert_eq!(names(&["--filter", "label=site=tier1"]), ["w1"]);
    assert_eq!(names(&["--filter", "label=role"]), ["done1", "w1"]);
    assert_eq!(names(&["--filter", "status=exited"]), ["done1"]);
    assert_eq!(names(&["--filter", "status=created"]), ["new1"]);
    assert_eq!(names(&["--filter", "status=running"]), ["w1"]);
    // docker's name filter is a regexp, unanchored, on "/NAME"
    assert_eq!(names(&["--filter", "name=w"]), ["new1", "w1"]);
    assert_eq!(names(&["--filter", "name=^/w"]), ["w1"]);
    assert!(names(&["--filter", "name=^w"]).is_empty());
    assert_eq!(
        names(&["--filter", "name=^/[a-z]+1$"]),
        ["done1", "new1", "w1"]
    );
    assert_eq!(
        names(&["--filter", "name=^/w1$", "--filter", "name=done"]),
        ["done1", "w1"]
    );
    let o = e.run(&["ps", "--filter", "name=(a|b)"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("do not support"), "{}", stderr(&o));
    // labels: all of them
    assert_eq!(
        names(&["--filter", "label=role", "--filter", "label=site=tier1"]),
        ["w1"]
    );
    assert_eq!(
        names(&["--filter", &format!("ancestor={img}")]),
        ["done1", "new1", "w1"]
    );
    let id = inspect(&e, "w1")["Id"].as_str().unwrap().to_string();
    assert_eq!(names(&["--filter", &format!("id={}", &id[..10])]), ["w1"]);
    assert_eq!(
        names(&["--filter", "label=role", "--filter", "status=exited"]),
        ["done1"]
    );
    // without -a: running only; -n: the newest; -s: a size column
    assert_eq!(e.ok(&["ps", "--format", "{{.Names}}"]), "w1\n");
    assert_eq!(
        e.ok(&["ps", "-a", "-n", "1", "--format", "{{.Names}}"]),
        "new1\n"
    );
    // -s: what the container wrote, and that plus its image
    e.ok(&["exec", "w1", "sh", "-c", "head -c 300000 /dev/zero > /big"]);
    let (status, body) = e.api("GET", "/v1.41/containers/json?size=1", None);
    assert_eq!(status, 200, "{body}");
    let rows: serde_json::Value = serde_json::from_str(&body).unwrap();
    let w1 = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["Names"][0] == "/w1")
        .unwrap();
    let rw = w1["SizeRw"].as_u64().unwrap();
    let root = w1["SizeRootFs"].as_u64().unwrap();
    assert!((300_000..400_000).contains(&rw), "{w1}");
    // busybox alone is over a megabyte
    assert!(root > rw + 1_000_000, "{w1}");
    let (_, plain) = e.api("GET", "/v1.41/containers/json", None);
    assert!(!plain.contains("SizeRw"), "{plain}");
    let sized = e.ok(&["ps", "-s", "--format", "{{.Names}} {{.Size}}"]);
    assert!(
        sized.starts_with("w1 ") && sized.contains("kB (virtual "),
        "{sized}"
    );
    // --env-file (read by the CLI) and labels reach the container
    assert_eq!(
        e.ok(&["exec", "w1", "sh", "-c", "echo $SITE/$QUEUE"]),
        "tier1/grid\n"
    );
    let v = inspect(&e, "w1");
    assert_eq!(v["Config"]["Labels"]["role"], "worker");
    assert_eq!(v["Config"]["Labels"]["site"], "tier1");
    // the lifecycle, streamed
    e.ok(&["stop", "-t", "1", "w1"]);
    e.ok(&["rm", "w1"]);
    let want = [
        "container create w1",
        "container start w1",
        "container die done1",
        "container create new1",
        "container kill w1",
        "container die w1",
        "container stop w1",
        "container destroy w1",
    ];
    wait_for("the lifecycle events", || {
        let got = seen.lock().unwrap();
        want.iter()
            .all(|w| got.iter().any(|l| l == w))
            .then_some(())
    });
    let got = seen.lock().unwrap().clone();
    let at = |w: &str| got.iter().position(|l| l == w).unwrap();
    assert!(
        at("container create w1") < at("container start w1"),
        "{got:?}"
    );
    assert!(
        at("container die w1") < at("container destroy w1"),
        "{got:?}"
    );
    let _ = events.kill();
    let _ = events.wait();
    // and replayed for a time range
    let replay = e.ok(&[
        "events",
        "--since",
        "0",
        "--until",
        &format!("{}", now_unix() + 1),
        "--filter",
        "container=done1",
        "--format",
        "{{.Action}}",
    ]);
    let replay: Vec<&str> = replay.lines().collect();
    assert!(
        replay.first() == Some(&"create") && replay.contains(&"start") && replay.contains(&"die"),
        "{replay:?}"
    );
}

fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A control file of the container's cgroup, v1 (HIER/PARENT/ID/FILE) or v2.
fn cgroup_file(e: &Engined, id: &str, v1: (&str, &str), v2: &str) -> String {
    let base = Path::new("/sys/fs/cgroup");
    let p = if base.join("cgroup.controllers").exists() {
        base.join(&e.cgroup_parent).join(id).join(v2)
    } else {
        base.join(v1.0).join(&e.cgroup_parent).join(id).join(v1.1)
    };
    std::fs::read_to_string(&p)
        .unwrap_or_else(|err| panic!("{}: {err}", p.display()))
        .trim()
        .to_string()
}

#[test]
fn memory_cpu_and_pids_limits_reach_the_cgroups_and_hold() {
    let e = Engined::start();
    let img = image(&e);
    let id = e.ok(&[
        "run",
        "-d",
        "--memory",
        "64m",
        "--cpus",
        "0.5",
        "--pids-limit",
        "40",
        &img,
        "sleep",
        "600",
    ]);
    let id = id.trim();
    let mem = cgroup_file(&e, id, ("memory", "memory.limit_in_bytes"), "memory.max");
    assert_eq!(mem, "67108864");
    let v2 = Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    if v2 {
        assert_eq!(cgroup_file(&e, id, ("", ""), "cpu.max"), "50000 100000");
    } else {
        assert_eq!(
            cgroup_file(&e, id, ("cpu", "cpu.cfs_quota_us"), ""),
            "50000"
        );
        assert_eq!(
            cgroup_file(&e, id, ("cpu", "cpu.cfs_period_us"), ""),
            "100000"
        );
    }
    assert_eq!(cgroup_file(&e, id, ("pids", "pids.max"), "pids.max"), "40");
    let v = inspect(&e, id);
    assert_eq!(v["HostConfig"]["Memory"], 67108864);
    assert_eq!(v["HostConfig"]["NanoCpus"], 500000000);
    assert_eq!(v["HostConfig"]["PidsLimit"], 40);
    e.ok(&["rm", "-f", id]);
    // and they hold: a process that keeps growing is killed (137, OOMKilled)...
    let o = e.run(&[
        "run",
        "--name",
        "hog",
        "--memory",
        "32m",
        &img,
        "sh",
        "-c",
        "tail /dev/zero",
    ]);
    assert_eq!(o.status.code(), Some(137), "{}", stderr(&o));
    let v = inspect(&e, "hog");
    assert_eq!(v["State"]["ExitCode"], 137, "{}", v["State"]);
    assert_eq!(v["State"]["OOMKilled"], true, "{}", v["State"]);
    // ...and forks past the limit fail inside
    let o = e.run(&[
        "run",
        "--rm",
        "--pids-limit",
        "8",
        &img,
        "sh",
        "-c",
        "for i in 1 2 3 4 5 6 7 8 9 10 11 12; do sleep 30 & done; echo all forked",
    ]);
    assert!(!stdout(&o).contains("all forked"), "{}", stdout(&o));
    assert!(stderr(&o).contains("can't fork"), "{}", stderr(&o));
}

#[test]
fn network_modes_bridge_host_and_none() {
    let e = Engined::start();
    let img = image(&e);
    // none: loopback only
    let none = e.ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        &img,
        "cat",
        "/proc/net/dev",
    ]);
    assert!(none.contains("lo:") && !none.contains("eth0"), "{none}");
    // host: the host's interfaces, the test's bridge among them
    let host = e.ok(&[
        "run",
        "--rm",
        "--network",
        "host",
        &img,
        "cat",
        "/proc/net/dev",
    ]);
    assert!(host.contains(&format!("{}:", e.bridge)), "{host}");
    // bridge: an address of the bridge's subnet, a default route through it,
    // the gateway and the other containers reachable
    e.ok(&[
        "run",
        "-d",
        "--name",
        "web",
        &img,
        "sh",
        "-c",
        "mkdir -p /www && echo served > /www/index.html && httpd -f -p 8080 -h /www",
    ]);
    let ip = inspect(&e, "web")["NetworkSettings"]["IPAddress"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(ip.starts_with(&format!("{}.", e.subnet)), "{ip}");
    let route = e.ok(&["exec", "web", "ip", "route"]);
    assert!(
        route.contains(&format!("default via {}.1 dev eth0", e.subnet)),
        "{route}"
    );
    e.ok(&[
        "exec",
        "web",
        "ping",
        "-c",
        "1",
        "-W",
        "10",
        &format!("{}.1", e.subnet),
    ]);
    let got = wait_for("the web container to serve", || {
        let o = e.run(&[
            "run",
            "--rm",
            &img,
            "wget",
            "-q",
            "-O",
            "-",
            &format!("http://{ip}:8080/"),
        ]);
        o.status.success().then(|| stdout(&o))
    });
    assert_eq!(got, "served\n");
}

#[test]
fn json_logs_rotate_by_log_opts() {
    // the daemon's defaults (the site's --log-opt), which a container's own
    // options override
    let e = Engined::start_with(&["--log-opt", "max-size=3k", "--log-opt", "max-file=2"]);
    let img = image(&e);
    // a container that writes 300 lines, with `opts` of its own; its id once
    // the last is in its log
    let chatty = |opts: &[&str]| -> String {
        let mut args = vec!["run", "-d"];
        args.extend_from_slice(opts);
        args.extend([
            img.as_str(),
            "sh",
            "-c",
            "i=0; while [ $i -lt 300 ]; do echo line-$i; i=$((i+1)); done; sleep 600",
        ]);
        let id = e.ok(&args).trim().to_string();
        wait_for("the last line", || {
            e.ok(&["logs", "--tail", "1", &id])
                .contains("line-299")
                .then_some(())
        });
        id
    };
    let id = chatty(&["--log-opt", "max-size=2k", "--log-opt", "max-file=3"]);
    let dir = e.graph.join("containers").join(&id);
    let log = |n: &str| dir.join(format!("{id}-json.log{n}"));
    for n in ["", ".1", ".2"] {
        let len = std::fs::metadata(log(n)).unwrap().len();
        // as docker's json-file: a file rotates once it has reached max-size,
        // so it passes it by at most the one entry that reached it
        assert!(len < 2048 + 100, "{}: {len} bytes", log(n).display());
    }
    let rotated = std::fs::metadata(log(".1")).unwrap().len();
    assert!(rotated >= 2048, "rotated early: {rotated} bytes");
    assert!(!log(".3").exists(), "max-file=3 keeps three files");
    // docker logs reads the kept files in order: an unbroken run up to the end
    let all = e.ok(&["logs", &id]);
    let nums: Vec<u32> = all
        .lines()
        .map(|l| l.strip_prefix("line-").unwrap().parse().unwrap())
        .collect();
    assert_eq!(*nums.last().unwrap(), 299);
    assert!(nums[0] > 0, "the oldest lines were rotated away");
    assert!(nums.windows(2).all(|w| w[1] == w[0] + 1), "{nums:?}");
    assert_eq!(
        inspect(&e, &id)["HostConfig"]["LogConfig"]["Config"]["max-size"],
        "2k"
    );
    // no options of its own: the daemon's
    let id = chatty(&[]);
    let dir = e.graph.join("containers").join(&id);
    let log = |n: &str| dir.join(format!("{id}-json.log{n}"));
    let rotated = std::fs::metadata(log(".1")).unwrap().len();
    assert!((3072..3072 + 100).contains(&rotated), "{rotated} bytes");
    assert!(
        !log(".2").exists(),
        "the daemon's max-file=2 keeps two files"
    );
    // --log-driver none: nothing kept, and logs says why
    let id = e.ok(&[
        "run",
        "-d",
        "--log-driver",
        "none",
        &img,
        "sh",
        "-c",
        "echo gone; sleep 600",
    ]);
    let id = id.trim().to_string();
    let o = e.run(&["logs", &id]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("does not support reading"),
        "{}",
        stderr(&o)
    );
    let dir = e.graph.join("containers").join(&id);
    assert!(!dir.join(format!("{id}-json.log")).exists());
    assert_eq!(inspect(&e, &id)["HostConfig"]["LogConfig"]["Type"], "none");
}

#[test]
fn after_a_reboot_always_and_unless_stopped_come_back() {
    let mut e = Engined::start();
    let img = image(&e);
    for (name, policy) in [
        ("al", "always"),
        ("us", "unless-stopped"),
        ("us-stopped", "unless-stopped"),
        ("no", "no"),
    ] {
        e.ok(&[
            "run",
            "-d",
            "--name",
            name,
            "--restart",
            policy,
            &img,
            "sleep",
            "600",
        ]);
    }
    e.ok(&["stop", "-t", "1", "us-stopped"]);
    let no_id = inspect(&e, "no")["Id"].as_str().unwrap().to_string();
    let pids: Vec<i64> = ["al", "us", "no"]
        .iter()
        .map(|n| inspect(&e, n)["State"]["Pid"].as_i64().unwrap())
        .collect();
    // a reboot, as far as the containers know: engined and every shim die
    e.kill_daemon();
    let ps = std::process::Command::new("pgrep")
        .args(["-f", &format!("engined-shim {}", e.graph.display())])
        .output()
        .unwrap();
    let shims: Vec<i32> = stdout(&ps)
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    assert_eq!(shims.len(), 3, "{}", stdout(&ps));
    for s in shims {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(s),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    // a container dies with its shim
    for p in &pids {
        wait_for("the container to die with its shim", || {
            let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default();
            (stat.is_empty() || stat.contains(") Z ")).then_some(())
        });
    }
    e.start_daemon();
    wait_for("always and unless-stopped to run again", || {
        (inspect(&e, "al")["State"]["Running"] == true
            && inspect(&e, "us")["State"]["Running"] == true)
            .then_some(())
    });
    assert_eq!(inspect(&e, "us-stopped")["State"]["Running"], false);
    let no = inspect(&e, "no");
    assert_eq!(no["State"]["Running"], false);
    assert!(
        no["State"]["Error"]
            .as_str()
            .unwrap()
            .contains("shim ended"),
        "{}",
        no["State"]
    );
    // nothing of the dead run is left, and it starts again by hand
    assert_nothing_left(&e, &no_id);
    e.ok(&["start", "no"]);
    assert_eq!(inspect(&e, "no")["State"]["Running"], true);
    assert_eq!(e.ok(&["exec", "al", "echo", "up"]), "up\n");
}

/// `-v /path` (Ansible's `volumes: [/path]`): an anonymous volume, filled from
/// the image's content there, kept across restarts, gone with the container.
#[test]
fn anonymous_volumes_are_filled_from_the_image_and_go_with_the_container() {
    let e = Engined::start();
    let img = image(&e);
    let id = e.ok(&[
        "run", "-d", "-v", "/etc", "-v", "/scratch", &img, "sleep", "600",
    ]);
    let id = id.trim();
    let mounts = inspect(&e, id)["Mounts"].clone();
    let vols: Vec<&serde_json::Value> = mounts
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["Type"] == "volume")
        .collect();
    assert_eq!(vols.len(), 2, "{mounts}");
    let etc = vols.iter().find(|m| m["Destination"] == "/etc").unwrap();
    let data = std::path::PathBuf::from(etc["Source"].as_str().unwrap());
    assert!(
        data.starts_with(e.graph.join("volumes")),
        "{}",
        data.display()
    );
    // copied up from the image: the container still knows its users
    assert!(
        std::fs::read_to_string(data.join("passwd"))
            .unwrap()
            .contains("condor")
    );
    assert_eq!(e.ok(&["exec", "-u", "condor", id, "id", "-un"]), "condor\n");
    e.ok(&[
        "exec",
        id,
        "sh",
        "-c",
        "echo kept > /scratch/f && echo more >> /etc/passwd",
    ]);
    e.ok(&["restart", "-t", "1", id]);
    assert_eq!(e.ok(&["exec", id, "cat", "/scratch/f"]), "kept\n");
    assert!(
        e.ok(&["exec", id, "tail", "-1", "/etc/passwd"])
            .contains("more")
    );
    // a bind on the same path wins over the volume
    let host = TempDir::new("vol-bind");
    std::fs::write(host.join("f"), "host\n").unwrap();
    let out = e.ok(&[
        "run",
        "--rm",
        "-v",
        "/scratch",
        "-v",
        &format!("{}:/scratch", host.path().display()),
        &img,
        "cat",
        "/scratch/f",
    ]);
    assert_eq!(out, "host\n");
    e.ok(&["rm", "-f", id]);
    assert!(!data.exists(), "the volume outlived its container");
    let left: Vec<_> = std::fs::read_dir(e.graph.join("volumes"))
        .unwrap()
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn named_volumes_and_a_second_daemon_are_refused_clearly() {
    let e = Engined::start();
    let img = image(&e);
    let o = e.run(&["run", "--rm", "-v", "data:/data", &img, "true"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("named volumes are not supported"),
        "{}",
        stderr(&o)
    );
    // a second engined stops at once, saying why, and the first goes on:
    // on the same graph root...
    let other = TempDir::new("engined2");
    let second = |replace: &str, with: String| {
        let mut args = e.daemon_args();
        let i = args.iter().position(|a| a == replace).unwrap();
        args[i + 1] = with;
        args.push("--pidfile".into());
        args.push(other.join("engined.pid").display().to_string());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let o = berth(&args).output().unwrap();
        assert!(!o.status.success(), "a second engined started");
        stderr(&o)
    };
    let sock2 = other.join("engined.sock");
    let err = second("-H", format!("unix://{}", sock2.display()));
    assert!(
        err.contains(&format!("another engined uses {}", e.graph.display())),
        "{err}"
    );
    assert!(!sock2.exists(), "the refused daemon made its socket");
    // ...and on the same socket
    let err = second("--data-root", other.join("graph").display().to_string());
    assert!(
        err.contains(&format!(
            "another daemon is listening on {}",
            e.sock.display()
        )),
        "{err}"
    );
    assert_eq!(e.ok(&["run", "--rm", &img, "echo", "still"]), "still\n");
    // the socket as dockerd makes it: 0660, group docker where it exists
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let m = std::fs::metadata(&e.sock).unwrap();
    assert!(m.file_type().is_socket());
    assert_eq!(m.mode() & 0o777, 0o660);
    let docker = nix::unistd::Group::from_name("docker").unwrap();
    assert_eq!(m.gid(), docker.map_or(0, |g| g.gid.as_raw()));
}

/// The rest of `docker run`'s surface the site may reach for: `--mount
/// type=bind`, `--privileged`, `--cap-drop ALL`, `--stop-signal`, ports on
/// every host address, id prefixes and `docker info`.
#[test]
fn mounts_privileges_stop_signals_prefixes_and_info() {
    use std::io::{Read, Write};
    let e = Engined::start();
    let img = image(&e);
    let data = TempDir::new("mount");
    std::fs::write(data.join("f"), "host\n").unwrap();
    let m = format!(
        "type=bind,source={},target=/m,readonly",
        data.path().display()
    );
    let o = e.run(&[
        "run",
        "--rm",
        "--mount",
        &m,
        &img,
        "sh",
        "-c",
        "cat /m/f; echo x > /m/f",
    ]);
    assert_eq!(stdout(&o), "host\n");
    assert!(!o.status.success(), "a readonly --mount was written");
    assert_eq!(std::fs::read_to_string(data.join("f")).unwrap(), "host\n");
    let m = format!("type=bind,source={},target=/m", data.path().display());
    e.ok(&[
        "run",
        "--rm",
        "--mount",
        &m,
        &img,
        "sh",
        "-c",
        "echo ctr > /m/g",
    ]);
    assert_eq!(std::fs::read_to_string(data.join("g")).unwrap(), "ctr\n");
    // --privileged: every capability (NET_ADMIN, mounts), as dockerd gives
    let out = e.ok(&[
        "run",
        "--rm",
        "--privileged",
        &img,
        "sh",
        "-c",
        "ip addr add 10.9.9.9/32 dev lo && mount -t tmpfs none /tmp && echo all",
    ]);
    assert_eq!(out, "all\n");
    // --cap-drop ALL takes even the defaults; --cap-add gives one back
    let o = e.run(&[
        "run",
        "--rm",
        "--cap-drop",
        "ALL",
        &img,
        "chown",
        "64",
        "/tmp",
    ]);
    assert!(!o.status.success(), "chown without CAP_CHOWN");
    e.ok(&[
        "run",
        "--rm",
        "--cap-drop",
        "ALL",
        "--cap-add",
        "CHOWN",
        &img,
        "chown",
        "64",
        "/tmp",
    ]);
    e.ok(&["run", "--rm", &img, "ping", "-c", "1", "127.0.0.1"]);
    let o = e.run(&[
        "run",
        "--rm",
        "--cap-drop",
        "NET_RAW",
        &img,
        "ping",
        "-c",
        "1",
        "127.0.0.1",
    ]);
    assert!(!o.status.success(), "ping without NET_RAW");
    // a capability the host does not give engined is refused by name (this
    // machine's bounding set lacks SYS_RESOURCE; elsewhere it is granted)
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let bnd = status
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .map(|h| u64::from_str_radix(h.trim(), 16).unwrap())
        .unwrap();
    let o = e.run(&["run", "--rm", "--cap-add", "SYS_RESOURCE", &img, "true"]);
    if bnd & (1 << 24) == 0 {
        assert!(
            stderr(&o).contains("SYS_RESOURCE is not available on this host"),
            "{}",
            stderr(&o)
        );
    } else {
        assert!(o.status.success(), "{}", stderr(&o));
    }
    // the stop signal the container was given, not SIGTERM
    let marks = TempDir::new("marks");
    let mv = format!("{}:/marks", marks.path().display());
    e.ok(&[
        "run",
        "-d",
        "--name",
        "usr2",
        "--stop-signal",
        "USR2",
        "-v",
        &mv,
        &img,
        "sh",
        "-c",
        "trap 'echo USR2 > /marks/s; exit 0' USR2; trap 'echo TERM > /marks/s; exit 1' TERM; \
         while true; do sleep 1; done",
    ]);
    e.ok(&["stop", "usr2"]);
    assert_eq!(std::fs::read_to_string(marks.join("s")).unwrap(), "USR2\n");
    assert_eq!(inspect(&e, "usr2")["State"]["ExitCode"], 0);
    assert_eq!(inspect(&e, "usr2")["Config"]["StopSignal"], "USR2");
    // a port published without an address answers on every host address
    let port = free_port();
    let id = e.ok(&[
        "run",
        "-d",
        "-p",
        &format!("{port}:4080"),
        &img,
        "sh",
        "-c",
        "mkdir /w; echo any > /w/i; exec httpd -f -p 4080 -h /w",
    ]);
    let id = id.trim().to_string();
    for addr in ["127.0.0.1", "127.0.0.2"] {
        let body = wait_for(&format!("the port on {addr}"), || {
            let mut s = std::net::TcpStream::connect((addr, port)).ok()?;
            s.write_all(b"GET /i HTTP/1.0\r\n\r\n").ok()?;
            let mut out = String::new();
            s.read_to_string(&mut out).ok()?;
            out.contains("any").then_some(out)
        });
        assert!(body.contains(" 200 "), "{body}");
    }
    // id prefixes are names too
    let v = inspect(&e, &id[..12]);
    assert_eq!(v["Id"], id.as_str());
    assert_eq!(
        v["NetworkSettings"]["Ports"]["4080/tcp"][0]["HostIp"],
        "0.0.0.0"
    );
    assert_eq!(
        v["HostConfig"]["PortBindings"]["4080/tcp"][0]["HostPort"],
        port.to_string()
    );
    e.ok(&["stop", "-t", "1", &id[..5]]);
    // docker info counts what is there
    let info = e.ok(&[
        "info",
        "--format",
        "{{.Containers}} {{.ContainersStopped}} {{.Images}} {{.OSType}} {{.Driver}}",
    ]);
    assert_eq!(info.trim(), "2 2 1 linux overlay", "{info}");
}

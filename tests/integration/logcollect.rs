//! logcollect against a real rsyslog (Debian's, started here on loopback with
//! its own config, writing what it receives to a file): every line of a
//! container's stdout and of its log directory arrives once with its metadata
//! and is kept locally, across an rsyslog outage, a kill -9 of logcollect and
//! json-file rotation; the retention cap (the container's own files too);
//! oversize and non-UTF-8 lines (kept as bytes locally and by `docker logs`,
//! escaped on the wire); a last line without its newline; TLS through
//! rsyslog's gtls driver, which requires a client certificate.

use crate::engine::image;
use crate::harness::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

struct Rsyslog {
    dir: TempDir,
    port: u16,
    conf: PathBuf,
    child: Option<Child>,
}

impl Rsyslog {
    fn start(tls: bool) -> Rsyslog {
        need("rsyslogd");
        let dir = TempDir::new("rsyslog");
        let port = free_port();
        let d = dir.path().display().to_string();
        let (global_tls, module) = if tls {
            let p = pki();
            (
                format!(
                    " DefaultNetstreamDriver=\"gtls\" DefaultNetstreamDriverCAFile=\"{}\" DefaultNetstreamDriverCertFile=\"{}\" DefaultNetstreamDriverKeyFile=\"{}\"",
                    p.ca.display(),
                    p.cert.display(),
                    p.key.display()
                ),
                // a client certificate the CA signed is required
                "module(load=\"imtcp\" StreamDriver.Name=\"gtls\" StreamDriver.Mode=\"1\" StreamDriver.AuthMode=\"x509/certvalid\")",
            )
        } else {
            (String::new(), "module(load=\"imtcp\")")
        };
        let conf = dir.join("rsyslog.conf");
        std::fs::write(
            &conf,
            format!(
                "global(workDirectory=\"{d}\" maxMessageSize=\"256k\"{global_tls})\n{module}\ninput(type=\"imtcp\" port=\"{port}\" address=\"127.0.0.1\")\ntemplate(name=\"raw\" type=\"string\" string=\"%rawmsg%\\n\")\n*.* action(type=\"omfile\" file=\"{d}/received.log\" template=\"raw\" flushOnTXEnd=\"on\" asyncWriting=\"off\")\n"
            ),
        )
        .unwrap();
        let mut r = Rsyslog {
            dir,
            port,
            conf,
            child: None,
        };
        r.up();
        r
    }

    fn up(&mut self) {
        let out = std::fs::File::create(self.dir.join("rsyslogd.out")).unwrap();
        let child = Command::new("rsyslogd")
            .arg("-n")
            .arg("-f")
            .arg(&self.conf)
            .arg("-i")
            .arg(self.dir.join("rsyslogd.pid"))
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let port = self.port;
        wait_for("rsyslogd to listen", || {
            std::net::TcpStream::connect(("127.0.0.1", port)).ok()
        });
    }

    fn down(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let _ = c.wait();
        }
    }

    fn received(&self) -> String {
        std::fs::read_to_string(self.dir.join("received.log")).unwrap_or_default()
    }
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        self.down();
    }
}

struct Collector {
    child: Option<Child>,
    args: Vec<String>,
    log: PathBuf,
    /// Run without the capabilities that let root read any file, so a file
    /// can be made unreadable to it.
    no_dac: bool,
}

impl Collector {
    fn start(args: Vec<String>, log: PathBuf) -> Collector {
        let mut c = Collector {
            child: None,
            args,
            log,
            no_dac: false,
        };
        c.spawn();
        c
    }
    fn start_no_dac(args: Vec<String>, log: PathBuf) -> Collector {
        need("setpriv");
        let mut c = Collector {
            child: None,
            args,
            log,
            no_dac: true,
        };
        c.spawn();
        c
    }
    fn spawn(&mut self) {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let mut a = vec!["logcollect"];
        a.extend(self.args.iter().map(String::as_str));
        let mut cmd = if self.no_dac {
            let mut c = Command::new("setpriv");
            c.arg("--bounding-set=-dac_override,-dac_read_search")
                .arg(bin())
                .args(&a);
            c
        } else {
            berth(&a)
        };
        let child = cmd
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
    }
    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
    fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// How many times each message text (after the structured data) arrived,
/// for messages whose text starts with `prefix`.
fn counts(received: &str, prefix: &str) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for l in received.lines() {
        if let Some((_, text)) = l.split_once("] ")
            && text.starts_with(prefix)
        {
            *m.entry(text.to_string()).or_insert(0) += 1;
        }
    }
    m
}

/// Wait until every `prefix` line 0..n arrived once; say what is wrong if not.
fn wait_once(rs: &Rsyslog, lc: &Collector, prefix: &str, n: usize) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let r = rs.received();
        if exactly_once(&r, prefix, n) {
            return;
        }
        if std::time::Instant::now() > deadline {
            let c = counts(&r, prefix);
            let dup: Vec<_> = c.iter().filter(|(_, v)| **v > 1).take(5).collect();
            let missing: Vec<usize> = (0..n)
                .filter(|i| !c.contains_key(&format!("{prefix}{i}")))
                .take(10)
                .collect();
            let l = lc.logs();
            let tail: Vec<&str> = l.lines().rev().take(15).collect();
            panic!(
                "{prefix}: {} of {n} arrived; repeated {dup:?}; missing {missing:?}\nlogcollect:\n{}",
                c.len(),
                tail.join("\n")
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

fn exactly_once(received: &str, prefix: &str, n: usize) -> bool {
    let c = counts(received, prefix);
    c.len() == n && c.values().all(|v| *v == 1)
}

fn log_dir(root: &Path, name: &str) -> PathBuf {
    std::fs::read_dir(root)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(&format!("{name}_"))
        })
        .unwrap_or_else(|| panic!("no log directory for {name} in {}", root.display()))
}

/// logcollect's arguments for engined `e`'s containers, kept under `root`,
/// then `more`.
fn following(e: &Engined, root: &Path, more: Vec<String>) -> Vec<String> {
    let mut a = vec![
        "-g".into(),
        e.graph.display().to_string(),
        "--log-root".into(),
        root.display().to_string(),
        "-H".into(),
        e.host(),
    ];
    a.extend(more);
    a
}

#[test]
fn every_line_arrives_once_and_stays_local_through_outages_and_kills() {
    let roots = TempDir::new("logroot");
    let log_root = roots.join("logs");
    let e = Engined::start_with(&["--log-root", log_root.to_str().unwrap()]);
    let img = image(&e);
    let mut rs = Rsyslog::start(false);
    let mut lc = Collector::start(
        following(
            &e,
            &log_root,
            vec![
                "--forward".into(),
                format!("tcp://127.0.0.1:{}", rs.port),
                "--max-file-size".into(),
                "16k".into(),
                "--max-files".into(),
                "2".into(),
            ],
        ),
        roots.join("logcollect.log"),
    );
    // stdout (its json-file log rotating under it) and a file in the log directory
    e.ok(&[
        "run",
        "-d",
        "--name",
        "vn0317",
        "--label",
        "berth.log-dir=/var/log/condor",
        // rotating while the stream is written, yet keeping more than one
        // burst: a collector cannot read what the engine already deleted
        "--log-opt",
        "max-size=64k",
        "--log-opt",
        "max-file=5",
        &img,
        "sh",
        "-c",
        "i=0; while [ $i -lt 300 ]; do echo out-$i; echo file-$i >> /var/log/condor/MasterLog; i=$((i+1)); done; echo err-0 >&2; sleep 600",
    ]);
    wait_for("the first lines at rsyslog", || {
        let r = rs.received();
        (exactly_once(&r, "out-", 300) && exactly_once(&r, "file-", 300)).then_some(())
    });
    let r = rs.received();
    let line = r.lines().find(|l| l.ends_with("] out-7")).unwrap();
    assert!(
        line.contains("name=\"vn0317\"")
            && line.contains("stream=\"stdout\"")
            && line.contains("berth@32473"),
        "{line}"
    );
    assert!(line.starts_with("<134>1 "), "local0.info: {line}");
    let id = e.ok(&["inspect", "--format", "{{.Id}}", "vn0317"]);
    assert!(
        line.contains(&format!("id=\"{}\"", id.trim()))
            && line.contains(&format!("image=\"{img}\"")),
        "{line}"
    );
    let eline = wait_for("the stderr line", || {
        rs.received()
            .lines()
            .find(|l| l.ends_with("] err-0"))
            .map(str::to_string)
    });
    assert!(
        eline.contains("stream=\"stderr\"") && eline.starts_with("<131>1 "),
        "local0.err: {eline}"
    );
    let fline = r.lines().find(|l| l.ends_with("] file-7")).unwrap();
    assert!(
        fline.contains("file=\"MasterLog\"") && fline.contains("stream=\"file\""),
        "{fline}"
    );
    let dir = log_dir(&log_root, "vn0317");
    let local = std::fs::read_to_string(dir.join("stdout.log")).unwrap_or_default();
    // the local copy rotates at 16k: the newest lines are in stdout.log
    assert!(local.contains("out-299\n"), "{local}");
    assert!(dir.join("MasterLog").exists());

    // rsyslog down: lines spool; back: every one arrives, once
    rs.down();
    e.ok(&[
        "exec",
        "vn0317",
        "sh",
        "-c",
        "i=0; while [ $i -lt 200 ]; do echo down-$i > /proc/1/fd/1; i=$((i+1)); done",
    ]);
    wait_for("the outage's lines in the local copy", || {
        std::fs::read_to_string(dir.join("stdout.log"))
            .ok()?
            .contains("down-199\n")
            .then_some(())
    });
    rs.up();
    wait_once(&rs, &lc, "down-", 200);
    let r = rs.received();
    let order: Vec<&str> = r
        .lines()
        .filter_map(|l| l.split_once("] down-").map(|x| x.1))
        .collect();
    let want: Vec<String> = (0..200).map(|i| i.to_string()).collect();
    assert_eq!(order, want, "the spooled lines arrive in order");

    // logcollect killed with -9 in the middle of a stream, started again
    e.ok(&[
        "exec",
        "-d",
        "vn0317",
        "sh",
        "-c",
        "i=0; while [ $i -lt 3000 ]; do echo kill-$i > /proc/1/fd/1; i=$((i+1)); done",
    ]);
    wait_for("some of the stream at rsyslog", || {
        (!counts(&rs.received(), "kill-").is_empty()).then_some(())
    });
    lc.kill9();
    lc.spawn();
    wait_once(&rs, &lc, "kill-", 3000);
    let r = rs.received();
    for p in ["out-", "file-", "down-"] {
        assert!(
            counts(&r, p).values().all(|v| *v == 1),
            "{p} repeated after the restart"
        );
    }
    // retention: rotated copies gzipped, no more than --max-files
    wait_for("the local copy's rotation", || {
        dir.join("stdout.log.1.gz").exists().then_some(())
    });
    assert!(!dir.join("stdout.log.3.gz").exists());
    // ls and tail read the local copy
    let o = run(&[
        "logcollect",
        "--log-root",
        log_root.to_str().unwrap(),
        "-g",
        e.graph.to_str().unwrap(),
        "ls",
    ]);
    let row = stdout(&o)
        .lines()
        .find(|l| l.starts_with("vn0317 "))
        .map(str::to_string)
        .unwrap_or_else(|| panic!("{}", stdout(&o)));
    let size: u64 = row.split_whitespace().nth(3).unwrap().parse().unwrap();
    assert!(
        size > 16 * 1024,
        "the size of what the directory holds: {row}"
    );
    // (a rotation may be under way: ask until the copy has settled)
    wait_for("tail to show the last lines", || {
        let o = run(&[
            "logcollect",
            "--log-root",
            log_root.to_str().unwrap(),
            "tail",
            "-n",
            "2",
            "vn0317",
        ]);
        (stdout(&o) == "kill-2998\nkill-2999\n").then_some(())
    });
    // the directory outlives the container
    e.ok(&["rm", "-f", "vn0317"]);
    wait_for("ls to show the container gone", || {
        let o = run(&[
            "logcollect",
            "--log-root",
            log_root.to_str().unwrap(),
            "-g",
            e.graph.to_str().unwrap(),
            "ls",
        ]);
        stdout(&o)
            .lines()
            .any(|l| l.starts_with("vn0317 ") && l.contains(" gone "))
            .then_some(())
    });
    assert!(
        std::fs::read_to_string(dir.join("stdout.log"))
            .unwrap()
            .contains("kill-2999\n")
    );
    assert!(dir.join("MasterLog").exists());
    let _ = lc.logs();
}

#[test]
pub(crate) fn oversize_and_non_utf8_lines_and_tls() {
    let roots = TempDir::new("logroot");
    let log_root = roots.join("logs");
    let e = Engined::start_with(&["--log-root", log_root.to_str().unwrap()]);
    let img = image(&e);
    let rs = Rsyslog::start(true);
    let p = pki();
    let lc = Collector::start(
        following(
            &e,
            &log_root,
            vec![
                "--forward".into(),
                format!("tls://localhost:{}", rs.port),
                "--ca".into(),
                p.ca.display().to_string(),
                // the test CA's server certificate is good for client auth too
                "--cert".into(),
                p.cert.display().to_string(),
                "--key".into(),
                p.key.display().to_string(),
                "--app-name".into(),
                "t1wn".into(),
                "--facility".into(),
                "local3".into(),
                "--partial-after".into(),
                "1".into(),
            ],
        ),
        roots.join("logcollect.log"),
    );
    e.ok(&[
        "run",
        "-d",
        "--name",
        "odd",
        "--label",
        "berth.log-dir=/var/log/condor",
        &img,
        "sh",
        "-c",
        "printf 'bad\\377byte\\n' >> /var/log/condor/bin.log; printf 'std\\377out\\n'; printf no-newline-yet >> /var/log/condor/part.log; head -c 100000 /dev/zero | tr '\\0' x >> /var/log/condor/big.log; echo >> /var/log/condor/big.log; echo tls-done; sleep 600",
    ]);
    wait_for("the lines over TLS", || {
        let r = rs.received();
        (r.contains("] tls-done")
            && r.contains("] bad\\xFFbyte")
            && r.contains("] std\\xFFout")
            && r.matches("file=\"big.log\"").count() >= 2)
            .then_some(())
    });
    let r = rs.received();
    assert!(r.contains(" t1wn - "), "app-name: {r:.300}");
    let std = r.lines().find(|l| l.ends_with("] std\\xFFout")).unwrap();
    assert!(
        std.starts_with("<158>1 ") && std.contains("stream=\"stdout\""),
        "local3.info: {std}"
    );
    let big: Vec<&str> = r
        .lines()
        .filter(|l| l.contains("file=\"big.log\""))
        .collect();
    assert_eq!(big.len(), 2, "a 100 kB line goes in two pieces");
    assert!(big[0].contains("split=\"continues\""));
    let xs: usize = big
        .iter()
        .map(|l| l.rsplit("] ").next().unwrap().len())
        .sum();
    assert_eq!(xs, 100_000);
    // the local file keeps the bytes themselves
    let dir = log_dir(&log_root, "odd");
    assert_eq!(
        std::fs::read(dir.join("bin.log")).unwrap(),
        b"bad\xffbyte\n"
    );
    // a last line without its newline goes once idle, marked; the rest, when
    // it comes, as a line of its own
    let part = wait_for("the unfinished line", || {
        rs.received()
            .lines()
            .find(|l| l.ends_with("] no-newline-yet"))
            .map(str::to_string)
    });
    assert!(part.contains("split=\"partial\""), "{part}");
    // (written on the host's side of the bind: `docker exec` needs setns,
    // which SL6's kernel, played by the kernel tests, does not have)
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(dir.join("part.log"))
            .unwrap();
        f.write_all(b"-rest\n").unwrap();
    }
    wait_for("the rest of it", || {
        rs.received().contains("] -rest\n").then_some(())
    });
    assert_eq!(rs.received().matches("no-newline-yet").count(), 1);
    // and so do stdout.log and docker logs (the json-file log carries them)
    assert_eq!(
        std::fs::read(dir.join("stdout.log")).unwrap(),
        b"std\xffout\ntls-done\n"
    );
    let o = e.docker(&["logs", "odd"]).output().unwrap();
    assert_eq!(o.stdout, b"std\xffout\ntls-done\n");
    drop(lc);

    // without a client certificate rsyslog will not take the lines
    let lc3 = Collector::start(
        following(
            &e,
            &roots.join("logs3"),
            vec![
                "--forward".into(),
                format!("tls://localhost:{}", rs.port),
                "--ca".into(),
                p.ca.display().to_string(),
                "--app-name".into(),
                "nocert".into(),
            ],
        ),
        roots.join("logcollect3.log"),
    );
    wait_for("rsyslog to refuse the client", || {
        std::fs::read_to_string(rs.dir.join("rsyslogd.out"))
            .ok()?
            .contains("peer did not provide a certificate")
            .then_some(())
    });
    assert!(!rs.received().contains(" nocert "));
    drop(lc3);

    // a sink whose certificate is not trusted is reported with the reason
    let other = TempDir::new("other-ca");
    let o = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=other",
        ])
        .arg("-keyout")
        .arg(other.join("k.pem"))
        .arg("-out")
        .arg(other.join("ca.pem"))
        .output()
        .unwrap();
    assert!(o.status.success());
    let lc2 = Collector::start(
        following(
            &e,
            &roots.join("logs2"),
            vec![
                "--forward".into(),
                format!("tls://localhost:{}", rs.port),
                "--ca".into(),
                other.join("ca.pem").display().to_string(),
            ],
        ),
        roots.join("logcollect2.log"),
    );
    wait_for("the TLS refusal reported", || {
        let l = lc2.logs();
        (l.contains("TLS with tls://localhost") && l.contains("spooling")).then_some(())
    });
}

/// Retention on by default, here made small: the local copy rotates and is
/// gzipped, the directory stays under its cap, and the directory of a
/// container gone for longer than --gone-days goes.
#[test]
fn retention_caps_directories_and_removes_old_ones() {
    let roots = TempDir::new("logroot");
    let log_root = roots.join("logs");
    let e = Engined::start_with(&["--log-root", log_root.to_str().unwrap()]);
    let img = image(&e);
    // a directory left by a container removed long ago
    let old = log_root.join("gone_20250101T000000");
    std::fs::create_dir_all(&old).unwrap();
    std::fs::write(old.join("stdout.log"), "old\n").unwrap();
    for p in [old.join("stdout.log"), old.clone()] {
        let o = Command::new("touch")
            .args(["-m", "-d", "10 days ago"])
            .arg(&p)
            .output()
            .unwrap();
        assert!(o.status.success());
    }
    // and one of a container gone yesterday: kept
    let recent = log_root.join("recent_20261130T000000");
    std::fs::create_dir_all(&recent).unwrap();
    let lc = Collector::start(
        following(
            &e,
            &log_root,
            vec![
                "--max-file-size".into(),
                "4k".into(),
                "--max-files".into(),
                "50".into(),
                "--max-dir-size".into(),
                "12k".into(),
                "--gone-days".into(),
                "7".into(),
            ],
        ),
        roots.join("logcollect.log"),
    );
    wait_for("the old directory to go", || (!old.exists()).then_some(()));
    assert!(recent.exists());
    e.ok(&[
        "run",
        "-d",
        "--name",
        "chatty",
        "--label",
        "berth.log-dir=/var/log/app",
        &img,
        "sh",
        "-c",
        // random text, so the gzipped copies stay big enough to meet the cap;
        // files of its own in its log directory count toward the cap too
        "for f in old1 old2 live; do head -c 4500 /dev/urandom | base64 > /var/log/app/$f.log; done; head -c 60000 /dev/urandom | base64; echo chatty-line-3999-end; sleep 600",
    ]);
    let dir = wait_for("the directory", || {
        std::fs::read_dir(&log_root)
            .ok()?
            .flatten()
            .map(|e| e.path())
            .find(|p| {
                p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with("chatty_")
            })
    });
    wait_for("the last line kept", || {
        let t = run(&[
            "logcollect",
            "--log-root",
            log_root.to_str().unwrap(),
            "tail",
            "-n",
            "1",
            "chatty",
        ]);
        stdout(&t).contains("chatty-line-3999-").then_some(())
    });
    // one more round after the last rotation
    wait_for("the cap to hold", || {
        let ours: u64 = std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("stdout.log"))
            .map(|e| e.metadata().unwrap().len())
            .sum();
        // the cap, give or take the newest rotated copy (always kept) and the
        // live file growing toward its rotation (a round reads up to 64 KiB)
        let newest = std::fs::metadata(dir.join("stdout.log.1.gz"))
            .map(|m| m.len())
            .unwrap_or(0);
        let live = std::fs::metadata(dir.join("stdout.log"))
            .map(|m| m.len())
            .unwrap_or(0);
        (ours - newest - live <= 12 * 1024).then_some(())
    });
    assert!(dir.join("stdout.log.1.gz").exists());
    assert!(lc.logs().contains("over 12288 bytes"), "{}", lc.logs());
    // the container's files no one wrote to for a while go, oldest first, once
    // read; the one still written to stays even over the cap
    for (f, ago) in [("old1.log", "2 hours ago"), ("old2.log", "1 hour ago")] {
        let o = Command::new("touch")
            .args(["-m", "-d", ago])
            .arg(dir.join(f))
            .output()
            .unwrap();
        assert!(o.status.success());
    }
    wait_for("the idle files removed", || {
        (!dir.join("old1.log").exists() && !dir.join("old2.log").exists()).then_some(())
    });
    assert!(dir.join("live.log").exists());
    // (the warning follows the removal: wait for it rather than race it)
    wait_for("the removal's warning", || {
        let l = lc.logs();
        (l.contains("oldest forwarded files") && l.contains("old1.log")).then_some(())
    });
    wait_for("the rest reported once", || {
        (lc.logs().matches("still over 12288 bytes").count() == 1).then_some(())
    });
}

/// With a small --spool-max and rsyslog down, the oldest lines go with a
/// counted warning and the rest arrive once, in order; a truncated file is
/// read again from its start; a file logcollect cannot open is reported once
/// and read when it can be; `tail -f` follows; with engined down the
/// collector follows the running container through the state directory.
#[test]
fn a_small_spool_drops_the_oldest_and_the_rest_follows() {
    let roots = TempDir::new("logroot");
    let log_root = roots.join("logs");
    let mut e = Engined::start_with(&["--log-root", log_root.to_str().unwrap()]);
    let img = image(&e);
    let mut rs = Rsyslog::start(false);
    rs.down();
    let lc = Collector::start_no_dac(
        following(
            &e,
            &log_root,
            vec![
                "--forward".into(),
                format!("tcp://127.0.0.1:{}", rs.port),
                "--spool-max".into(),
                "1M".into(),
            ],
        ),
        roots.join("logcollect.log"),
    );
    e.ok(&[
        "run",
        "-d",
        "--name",
        "burst",
        "--label",
        "berth.log-dir=/var/log/app",
        &img,
        "sh",
        "-c",
        // a file made unreadable from its creation; 40,000 lines (about
        // 12 MB of frames); then a tick a second
        "(umask 777; echo locked-line > /var/log/app/locked.log); \
         awk 'BEGIN { for (i = 0; i < 40000; i++) printf \"sp-%d %s\\n\", i, \"padding-padding-padding-padding-padding-padding-padding-padding\" }'; \
         i=0; while true; do echo tick-$i; i=$((i+1)); sleep 1; done",
    ]);
    wait_for("the unreadable file reported", || {
        lc.logs()
            .contains("locked.log: Permission denied")
            .then_some(())
    });
    let dir = log_dir(&log_root, "burst");
    wait_for("the burst in the local copy", || {
        std::fs::read_to_string(dir.join("stdout.log"))
            .ok()?
            .contains("sp-39999 ")
            .then_some(())
    });
    wait_for("the spool's warning", || {
        lc.logs().contains("spool over its bound").then_some(())
    });
    rs.up();
    wait_for("the newest lines at rsyslog", || {
        rs.received().contains("] sp-39999 ").then_some(())
    });
    // (the last warning's total: the burst is all spooled by now)
    let l = lc.logs();
    let w = l
        .lines()
        .rfind(|l| l.contains("spool over its bound"))
        .unwrap();
    let dropped: usize = w
        .rsplit_once(" in all)")
        .and_then(|x| x.0.rsplit_once('('))
        .and_then(|x| x.1.parse().ok())
        .unwrap_or_else(|| panic!("{w}"));
    let r = rs.received();
    let got: Vec<usize> = r
        .lines()
        .filter_map(|l| l.split_once("] sp-")?.1.split_once(' ')?.0.parse().ok())
        .collect();
    let first = got[0];
    assert!(first > 0, "the oldest were dropped");
    assert_eq!(
        got,
        (first..40000).collect::<Vec<_>>(),
        "the rest once, in order"
    );
    assert_eq!(dropped, first, "the count in the warning");

    // truncated and written again: read from its start
    e.ok(&[
        "exec",
        "burst",
        "sh",
        "-c",
        "for i in 1 2 3; do echo trunc-a-$i >> /var/log/app/t.log; done",
    ]);
    wait_for("the lines before the truncation", || {
        rs.received().contains("] trunc-a-3\n").then_some(())
    });
    e.ok(&[
        "exec",
        "burst",
        "sh",
        "-c",
        ": > /var/log/app/t.log; echo trunc-b >> /var/log/app/t.log",
    ]);
    wait_for("the line after the truncation", || {
        rs.received().contains("] trunc-b\n").then_some(())
    });
    assert_eq!(rs.received().matches("] trunc-a-1\n").count(), 1);

    // readable now: read, and it was reported once
    std::fs::set_permissions(
        dir.join("locked.log"),
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .unwrap();
    wait_for("the file once readable", || {
        rs.received().contains("] locked-line\n").then_some(())
    });
    assert_eq!(
        lc.logs().matches("locked.log: Permission denied").count(),
        1
    );

    // tail -f prints the lines as they come
    let out = roots.join("tail.out");
    let mut tail = berth(&[
        "logcollect",
        "--log-root",
        log_root.to_str().unwrap(),
        "tail",
        "-f",
        "-n",
        "1",
        "burst",
    ])
    .stdout(std::fs::File::create(&out).unwrap())
    .spawn()
    .unwrap();
    wait_for("tail -f to follow", || {
        let t = std::fs::read_to_string(&out).ok()?;
        (t.lines().filter(|l| l.starts_with("tick-")).count() >= 3).then_some(())
    });
    let _ = tail.kill();
    let _ = tail.wait();

    // engined down: the running container's lines still come
    let ticks = |r: &str| {
        r.lines()
            .filter_map(|l| l.split_once("] tick-")?.1.parse::<u64>().ok())
            .max()
            .unwrap_or(0)
    };
    let before = ticks(&rs.received());
    e.kill_daemon();
    wait_for("ticks while engined is down", || {
        (ticks(&rs.received()) >= before + 3).then_some(())
    });
    e.start_daemon();
    e.ok(&["rm", "-f", "burst"]);
}

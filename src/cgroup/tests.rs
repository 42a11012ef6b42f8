//! Tests of the cgroup module: the mountinfo parser on fixtures of the site's
//! layouts, the limit arithmetic and name checks, the file-writing logic on fake
//! trees laid out like /sys/fs/cgroup, and (module `kernel`) the real thing on
//! this host's hierarchies, under a `berth-test-<random>` parent that a guard
//! empties and removes whatever happens.

use super::*;
use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Command, Stdio};

const PLAIN: &str = "22 27 0:21 / /proc rw,relatime - proc proc rw\n\
23 27 0:22 / /sys rw,relatime - sysfs sysfs rw\n\
27 1 254:0 / / rw,relatime - ext4 /dev/vda rw,discard\n";

/// This machine: one v1 hierarchy per controller, name=systemd, and an empty
/// cgroup2 at /sys/fs/cgroup/unified.
const THIS_HOST: &str = "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n\
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n\
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct\n\
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset\n\
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n\
36 31 0:33 / /sys/fs/cgroup/devices rw,relatime - cgroup cgroup rw,devices\n\
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer\n\
38 31 0:35 / /sys/fs/cgroup/blkio rw,relatime - cgroup cgroup rw,blkio\n\
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids\n\
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd\n\
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n";

/// SL7 (systemd 219): co-mounted cpu,cpuacct and net_cls,net_prio, no cgroup2.
const SL7: &str = "24 18 0:20 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:7 - tmpfs tmpfs ro,mode=755\n\
25 24 0:21 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime shared:8 - cgroup cgroup rw,xattr,release_agent=/usr/lib/systemd/systemd-cgroups-agent,name=systemd\n\
27 24 0:23 / /sys/fs/cgroup/net_cls,net_prio rw,nosuid,nodev,noexec,relatime shared:9 - cgroup cgroup rw,net_prio,net_cls\n\
28 24 0:24 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:10 - cgroup cgroup rw,cpuacct,cpu\n\
29 24 0:25 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:11 - cgroup cgroup rw,memory\n\
30 24 0:26 / /sys/fs/cgroup/cpuset rw,nosuid,nodev,noexec,relatime shared:12 - cgroup cgroup rw,cpuset\n\
31 24 0:27 / /sys/fs/cgroup/pids rw,nosuid,nodev,noexec,relatime shared:13 - cgroup cgroup rw,pids\n\
32 24 0:28 / /sys/fs/cgroup/freezer rw,nosuid,nodev,noexec,relatime shared:14 - cgroup cgroup rw,freezer\n\
33 24 0:29 / /sys/fs/cgroup/devices rw,nosuid,nodev,noexec,relatime shared:15 - cgroup cgroup rw,devices\n\
34 24 0:30 / /sys/fs/cgroup/blkio rw,nosuid,nodev,noexec,relatime shared:16 - cgroup cgroup rw,blkio\n\
35 24 0:31 / /sys/fs/cgroup/hugetlb rw,nosuid,nodev,noexec,relatime shared:17 - cgroup cgroup rw,hugetlb\n\
36 24 0:32 / /sys/fs/cgroup/perf_event rw,nosuid,nodev,noexec,relatime shared:18 - cgroup cgroup rw,perf_event\n";

/// systemd's hybrid mode (Ubuntu 20.04), with the memory hierarchy bind-mounted a
/// second time somewhere else.
const HYBRID: &str = "35 24 0:30 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755\n\
36 35 0:31 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw,nsdelegate\n\
37 35 0:32 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime shared:11 - cgroup cgroup rw,xattr,name=systemd\n\
40 35 0:35 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:15 - cgroup cgroup rw,cpu,cpuacct\n\
41 35 0:36 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:16 - cgroup cgroup rw,memory\n\
42 35 0:37 / /sys/fs/cgroup/pids rw,nosuid,nodev,noexec,relatime shared:17 - cgroup cgroup rw,pids\n\
90 27 0:36 /job /var/lib/other/memory rw,relatime - cgroup cgroup rw,memory\n";

/// A pure v2 host (EL9).
const V2: &str = "35 24 0:31 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,seclabel,nsdelegate,memory_recursiveprot\n";

fn p(s: &str) -> PathBuf {
    PathBuf::from(s)
}

#[test]
fn parses_this_hosts_v1_layout_with_its_unified_mount() {
    let l = Layout::parse(&format!("{PLAIN}{THIS_HOST}"), "nodev\tcgroup\n").unwrap();
    let Layout::V1 { mounts, unified } = &l else {
        panic!("expected v1, got {l:?}")
    };
    for c in [
        "cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "blkio", "pids",
    ] {
        assert_eq!(mounts[c], p(&format!("/sys/fs/cgroup/{c}")), "{c}");
    }
    assert_eq!(mounts["name=systemd"], p("/sys/fs/cgroup/systemd"));
    assert_eq!(
        mounts.len(),
        9,
        "no mount option taken for a controller: {mounts:?}"
    );
    assert_eq!(
        unified.as_deref(),
        Some(Path::new("/sys/fs/cgroup/unified"))
    );
    assert!(!l.is_v2());
    // 9 v1 hierarchies and the unified one.
    assert_eq!(l.hierarchies().len(), 10);
}

#[test]
fn parses_sl7_co_mounted_hierarchies_once_each() {
    let l = Layout::parse(SL7, "").unwrap();
    let Layout::V1 { mounts, unified } = &l else {
        panic!("expected v1, got {l:?}")
    };
    assert_eq!(*unified, None);
    assert_eq!(mounts["cpu"], p("/sys/fs/cgroup/cpu,cpuacct"));
    assert_eq!(mounts["cpuacct"], p("/sys/fs/cgroup/cpu,cpuacct"));
    assert_eq!(mounts["net_cls"], mounts["net_prio"]);
    assert_eq!(mounts["name=systemd"], p("/sys/fs/cgroup/systemd"));
    assert!(
        !mounts.contains_key("xattr") && !mounts.keys().any(|k| k.starts_with("release_agent"))
    );
    let h = l.hierarchies();
    let cpu: Vec<_> = h
        .iter()
        .filter(|(point, _)| point == Path::new("/sys/fs/cgroup/cpu,cpuacct"))
        .collect();
    assert_eq!(cpu.len(), 1, "one directory per hierarchy: {h:?}");
    assert_eq!(cpu[0].1, vec!["cpu".to_string(), "cpuacct".to_string()]);
    assert_eq!(h.len(), 11);
}

#[test]
fn parses_hybrid_as_v1_noting_the_unified_mount() {
    let l = Layout::parse(HYBRID, "").unwrap();
    let Layout::V1 { mounts, unified } = &l else {
        panic!("expected v1, got {l:?}")
    };
    assert_eq!(
        unified.as_deref(),
        Some(Path::new("/sys/fs/cgroup/unified"))
    );
    assert_eq!(
        mounts["memory"],
        p("/sys/fs/cgroup/memory"),
        "first mount wins"
    );
    assert_eq!(mounts["cpu"], p("/sys/fs/cgroup/cpu,cpuacct"));
}

#[test]
fn parses_pure_v2_and_escaped_mount_points() {
    let l = Layout::parse(&format!("{PLAIN}{V2}"), "").unwrap();
    assert_eq!(
        l,
        Layout::V2 {
            root: p("/sys/fs/cgroup")
        }
    );
    assert!(l.is_v2());
    // A named v1 hierarchy beside cgroup2 holds no controller: still v2.
    let named = "50 27 0:40 / /run/cg\\040sys rw - cgroup2 cgroup2 rw\n\
                 51 27 0:41 / /run/systemd rw - cgroup cgroup rw,name=systemd\n";
    assert_eq!(
        Layout::parse(named, "").unwrap(),
        Layout::V2 {
            root: p("/run/cg sys")
        }
    );
}

#[test]
fn no_cgroup_mount_is_an_error_that_says_what_to_do() {
    let e = Layout::parse(PLAIN, "nodev\tcgroup\nnodev\tcgroup2\n").unwrap_err();
    assert_eq!(e.kind(), Kind::Unsupported);
    assert!(
        e.to_string().contains("mount cgroup2 on /sys/fs/cgroup"),
        "{e}"
    );
    let e = Layout::parse(PLAIN, "nodev\tproc\n").unwrap_err();
    assert!(e.to_string().contains("no cgroup filesystem"), "{e}");
}

#[test]
fn detects_this_hosts_hierarchies() {
    let l = Layout::detect().unwrap();
    for (point, _) in l.hierarchies() {
        assert!(
            point.join("cgroup.procs").is_file(),
            "{} is not a cgroup hierarchy",
            point.display()
        );
    }
}

#[test]
fn cpus_become_docker_quota() {
    assert_eq!(cfs_quota(1_500_000_000).unwrap(), 150_000);
    assert_eq!(cfs_quota(1_000_000_000).unwrap(), 100_000);
    assert_eq!(cfs_quota(10_000_000).unwrap(), 1_000); // --cpus 0.01
    assert_eq!(cfs_quota(64_000_000_000).unwrap(), 6_400_000);
    assert_eq!(cfs_quota(u64::MAX).unwrap(), u64::MAX / 10_000);
    let e = cfs_quota(5_000_000).unwrap_err();
    assert_eq!(e.kind(), Kind::Invalid);
    assert!(e.to_string().contains("--cpus 0.01"), "{e}");
}

#[test]
fn names_never_leave_the_hierarchy() {
    let id = "4f1c0a3b9e2d";
    assert_eq!(relative_path("berth", id).unwrap(), format!("berth/{id}"));
    assert_eq!(
        relative_path("berth-test-1a/ci", id).unwrap(),
        format!("berth-test-1a/ci/{id}")
    );
    for (parent, name) in [
        ("..", id),
        ("berth/..", id),
        ("/berth", id),
        ("berth/", id),
        ("berth//x", id),
        ("", id),
        ("berth", ""),
        ("berth", ".."),
        ("berth", "."),
        ("berth", "a/b"),
        ("berth", "/abc"),
        ("berth", "cgroup.procs"),
        ("berth", "a b"),
        ("ber\nth", id),
    ] {
        let e = relative_path(parent, name).unwrap_err();
        assert_eq!(e.kind(), Kind::Invalid, "{parent:?} {name:?}");
        assert!(!e.to_string().contains('\n'), "one line: {e}");
    }
    let l = Layout::V2 {
        root: p("/nonexistent-cgroot"),
    };
    let e = Cgroup::create(&l, "..", id, &Limits::default()).unwrap_err();
    assert_eq!(e.kind(), Kind::Invalid);
}

/// A directory removed when dropped.
struct Tmp(PathBuf);

impl Tmp {
    fn new(tag: &str) -> Tmp {
        let d = std::env::temp_dir().join(format!("berth-cg-{tag}-{}", crate::util::uuid4()));
        fs::create_dir_all(&d).unwrap();
        Tmp(d)
    }
}

impl Drop for Tmp {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn put(path: &Path, text: &str) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, text).unwrap();
}

fn get(path: &Path) -> String {
    fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .trim()
        .to_string()
}

const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// A v2 tree as the kernel shows it once `berth/<ID>` exists: the leaf's
/// controllers are `leaf_controllers`; `extra` leaf files are added empty.
fn fake_v2(leaf_controllers: &str, extra: &[&str]) -> (Tmp, Layout) {
    let t = Tmp::new("v2");
    let root = t.0.clone();
    put(
        &root.join("cgroup.controllers"),
        "cpuset cpu io memory hugetlb pids\n",
    );
    put(&root.join("cgroup.subtree_control"), "");
    put(&root.join("berth/cgroup.controllers"), "cpu memory pids\n");
    put(&root.join("berth/cgroup.subtree_control"), "");
    let leaf = root.join("berth").join(ID);
    put(&leaf.join("cgroup.controllers"), leaf_controllers);
    for f in [
        "cgroup.subtree_control",
        "cgroup.procs",
        "memory.max",
        "cpu.max",
        "pids.max",
        "cgroup.freeze",
    ] {
        put(&leaf.join(f), "");
    }
    put(&leaf.join("cgroup.events"), "populated 1\nfrozen 0\n");
    for f in extra {
        put(&leaf.join(f), "");
    }
    (t, Layout::V2 { root })
}

#[test]
fn v2_enables_controllers_down_the_tree_and_writes_limits() {
    let (t, l) = fake_v2("cpu memory pids\n", &["memory.swap.max"]);
    let limits = Limits {
        memory: Some(256 << 20),
        nano_cpus: Some(1_500_000_000),
        pids: Some(50),
        privileged: false,
    };
    let cg = Cgroup::create(&l, "berth", ID, &limits).unwrap();
    let leaf = t.0.join("berth").join(ID);
    assert_eq!(cg.dirs(), vec![leaf.as_path()]);
    assert_eq!(cg.name(), format!("berth/{ID}"));
    assert_eq!(
        get(&t.0.join("cgroup.subtree_control")),
        "+cpu +memory +pids"
    );
    assert_eq!(
        get(&t.0.join("berth/cgroup.subtree_control")),
        "+cpu +memory +pids"
    );
    assert_eq!(
        get(&leaf.join("cgroup.subtree_control")),
        "",
        "the leaf delegates nothing"
    );
    assert_eq!(get(&leaf.join("memory.max")), (256u64 << 20).to_string());
    assert_eq!(
        get(&leaf.join("memory.swap.max")),
        (256u64 << 20).to_string()
    );
    assert_eq!(get(&leaf.join("cpu.max")), "150000 100000");
    assert_eq!(get(&leaf.join("pids.max")), "50");
}

#[test]
fn v2_without_swap_accounting_still_limits_memory() {
    let (t, l) = fake_v2("cpu memory pids\n", &[]);
    let limits = Limits {
        memory: Some(64 << 20),
        ..Limits::default()
    };
    Cgroup::create(&l, "berth", ID, &limits).unwrap();
    let leaf = t.0.join("berth").join(ID);
    assert_eq!(get(&leaf.join("memory.max")), (64u64 << 20).to_string());
    assert!(
        !leaf.join("memory.swap.max").exists(),
        "no control file is invented"
    );
    // Unset limits write nothing (docker's 0 and -1 mean unlimited).
    assert_eq!(get(&leaf.join("cpu.max")), "");
    let unset = Limits {
        memory: Some(0),
        nano_cpus: Some(0),
        pids: Some(-1),
        privileged: false,
    };
    Cgroup::create(&l, "berth", ID, &unset).unwrap();
    assert_eq!(get(&leaf.join("pids.max")), "");
}

#[test]
fn v2_limit_without_its_controller_is_refused() {
    let (_t, l) = fake_v2("cpu pids\n", &[]);
    let limits = Limits {
        memory: Some(64 << 20),
        ..Limits::default()
    };
    let e = Cgroup::create(&l, "berth", ID, &limits).unwrap_err();
    assert_eq!(e.kind(), Kind::Unsupported);
    let msg = e.to_string();
    assert!(msg.contains("memory cgroup controller"), "{msg}");
    assert!(msg.contains("--memory cannot be honoured"), "{msg}");
    // The others still work on that tree.
    let cpus = Limits {
        nano_cpus: Some(2_000_000_000),
        ..Limits::default()
    };
    Cgroup::create(&l, "berth", ID, &cpus).unwrap();
}

#[test]
fn v2_add_pid_and_pids_cover_nested_cgroups() {
    let (t, l) = fake_v2("cpu memory pids\n", &[]);
    let cg = Cgroup::create(&l, "berth", ID, &Limits::default()).unwrap();
    cg.add_pid(4242).unwrap();
    let leaf = t.0.join("berth").join(ID);
    assert_eq!(get(&leaf.join("cgroup.procs")), "4242");
    put(&leaf.join("inner/cgroup.procs"), "4300\n4243\n");
    assert_eq!(cg.pids().unwrap(), vec![4242, 4243, 4300]);
    assert!(!cg.is_empty().unwrap());
    let e = cg.remove().unwrap_err();
    assert_eq!(e.kind(), Kind::Conflict);
    assert!(e.to_string().contains("still has 3 processes"), "{e}");
    assert!(cg.add_pid(0).is_err() && cg.add_pid(-1).is_err());
    // Re-adoption finds the same cgroup.
    assert_eq!(Cgroup::open(&l, "berth", ID).unwrap(), cg);
    assert_eq!(
        Cgroup::open(&l, "berth", "feed").unwrap_err().kind(),
        Kind::NotFound
    );
}

fn sleeper() -> Child {
    Command::new("sleep")
        .arg("1000")
        .stdin(Stdio::null())
        .spawn()
        .unwrap()
}

#[test]
fn v2_sigkill_goes_through_cgroup_kill() {
    let (t, l) = fake_v2("cpu memory pids\n", &["cgroup.kill"]);
    let cg = Cgroup::create(&l, "berth", ID, &Limits::default()).unwrap();
    let mut child = sleeper();
    let leaf = t.0.join("berth").join(ID);
    put(&leaf.join("cgroup.procs"), &format!("{}\n", child.id()));
    assert_eq!(cg.kill_all(Signal::SIGKILL).unwrap(), 1);
    assert_eq!(get(&leaf.join("cgroup.kill")), "1");
    // The kernel does the killing: nothing was signalled one by one.
    assert!(child.try_wait().unwrap().is_none());
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn v2_other_signals_are_sent_inside_a_freeze() {
    let (t, l) = fake_v2("cpu memory pids\n", &["cgroup.kill"]);
    let cg = Cgroup::create(&l, "berth", ID, &Limits::default()).unwrap();
    let mut child = sleeper();
    let leaf = t.0.join("berth").join(ID);
    put(&leaf.join("cgroup.procs"), &format!("{}\n", child.id()));
    // The fake kernel reports the freeze done at once.
    put(&leaf.join("cgroup.events"), "populated 1\nfrozen 1\n");
    assert_eq!(cg.kill_all(Signal::SIGTERM).unwrap(), 1);
    assert_eq!(get(&leaf.join("cgroup.freeze")), "0", "thawed afterwards");
    assert_eq!(get(&leaf.join("cgroup.kill")), "", "cgroup.kill only kills");
    let status = child.wait().unwrap();
    assert_eq!(status.signal(), Some(libc::SIGTERM));
}

/// A v1 tree like SL7's for a cgroup `berth/<ID>`: cpu and cpuacct co-mounted,
/// cpuset with CPUs 0-3 and node 0 at the root. `without` hierarchies are left out.
fn fake_v1(without: &[&str]) -> (Tmp, Layout) {
    let t = Tmp::new("v1");
    let mut mounts = BTreeMap::new();
    let all: &[(&str, &[&str], &[&str])] = &[
        (
            "cpu,cpuacct",
            &["cpu", "cpuacct"],
            &["cpu.cfs_period_us", "cpu.cfs_quota_us"],
        ),
        ("cpuset", &["cpuset"], &["cpuset.cpus", "cpuset.mems"]),
        (
            "memory",
            &["memory"],
            &[
                "memory.limit_in_bytes",
                "memory.memsw.limit_in_bytes",
                "memory.usage_in_bytes",
            ],
        ),
        ("pids", &["pids"], &["pids.max"]),
        ("devices", &["devices"], &["devices.allow", "devices.deny"]),
        ("freezer", &["freezer"], &["freezer.state"]),
        ("systemd", &["name=systemd"], &[]),
    ];
    for (dir, controllers, files) in all {
        if controllers.iter().any(|c| without.contains(c)) {
            continue;
        }
        let root = t.0.join(dir);
        for c in *controllers {
            mounts.insert(c.to_string(), root.clone());
        }
        put(&root.join("cgroup.procs"), "1\n");
        for d in [root.join("berth"), root.join("berth").join(ID)] {
            put(&d.join("cgroup.procs"), "");
            for f in *files {
                put(&d.join(f), "");
            }
        }
    }
    put(&t.0.join("cpuset/cpuset.cpus"), "0-3\n");
    put(&t.0.join("cpuset/cpuset.mems"), "0\n");
    put(
        &t.0.join("memory/berth")
            .join(ID)
            .join("memory.memsw.limit_in_bytes"),
        "9223372036854771712\n",
    );
    (
        t,
        Layout::V1 {
            mounts,
            unified: None,
        },
    )
}

#[test]
fn v1_writes_each_hierarchy_once_and_fills_cpusets() {
    let (t, l) = fake_v1(&[]);
    let limits = Limits {
        memory: Some(64 << 20),
        nano_cpus: Some(500_000_000),
        pids: Some(100),
        privileged: false,
    };
    let cg = Cgroup::create(&l, "berth", ID, &limits).unwrap();
    assert_eq!(
        cg.dirs().len(),
        7,
        "cpu,cpuacct is one hierarchy: {:?}",
        cg.dirs()
    );
    let at = |h: &str, f: &str| get(&t.0.join(h).join("berth").join(ID).join(f));
    assert_eq!(at("cpu,cpuacct", "cpu.cfs_period_us"), "100000");
    assert_eq!(at("cpu,cpuacct", "cpu.cfs_quota_us"), "50000");
    assert_eq!(
        at("memory", "memory.limit_in_bytes"),
        (64u64 << 20).to_string()
    );
    assert_eq!(
        at("memory", "memory.memsw.limit_in_bytes"),
        (128u64 << 20).to_string()
    );
    assert_eq!(at("pids", "pids.max"), "100");
    assert_eq!(at("devices", "devices.deny"), "a");
    for d in [t.0.join("cpuset/berth"), t.0.join("cpuset/berth").join(ID)] {
        assert_eq!(get(&d.join("cpuset.cpus")), "0-3");
        assert_eq!(get(&d.join("cpuset.mems")), "0");
    }
    cg.add_pid(4242).unwrap();
    for d in cg.dirs() {
        assert_eq!(get(&d.join("cgroup.procs")), "4242", "{}", d.display());
    }
    put(
        &t.0.join("memory/berth")
            .join(ID)
            .join("memory.usage_in_bytes"),
        "12345\n",
    );
    assert_eq!(cg.memory_usage(), Some(12345));
}

#[test]
fn v1_privileged_writes_no_device_rules() {
    let (t, l) = fake_v1(&[]);
    let limits = Limits {
        privileged: true,
        ..Limits::default()
    };
    Cgroup::create(&l, "berth", ID, &limits).unwrap();
    let devices = t.0.join("devices/berth").join(ID);
    assert_eq!(get(&devices.join("devices.deny")), "");
    assert_eq!(get(&devices.join("devices.allow")), "");
}

#[test]
fn v1_missing_controller_refuses_the_limit_by_name() {
    let (_t, l) = fake_v1(&["pids"]);
    let limits = Limits {
        pids: Some(10),
        ..Limits::default()
    };
    let e = Cgroup::create(&l, "berth", ID, &limits).unwrap_err();
    assert_eq!(e.kind(), Kind::Unsupported);
    assert!(
        e.to_string()
            .contains("pids cgroup controller is not mounted: --pids-limit cannot be honoured"),
        "{e}"
    );
    // Without a devices hierarchy only a privileged container may run.
    let (_t, l) = fake_v1(&["devices"]);
    let e = Cgroup::create(&l, "berth", ID, &Limits::default()).unwrap_err();
    assert!(e.to_string().contains("devices cgroup controller"), "{e}");
    let privileged = Limits {
        privileged: true,
        ..Limits::default()
    };
    Cgroup::create(&l, "berth", ID, &privileged).unwrap();
}

#[test]
fn v1_without_memsw_limits_memory_alone() {
    let (t, l) = fake_v1(&[]);
    let memsw =
        t.0.join("memory/berth")
            .join(ID)
            .join("memory.memsw.limit_in_bytes");
    fs::remove_file(&memsw).unwrap();
    let limits = Limits {
        memory: Some(32 << 20),
        ..Limits::default()
    };
    Cgroup::create(&l, "berth", ID, &limits).unwrap();
    let mem =
        t.0.join("memory/berth")
            .join(ID)
            .join("memory.limit_in_bytes");
    assert_eq!(get(&mem), (32u64 << 20).to_string());
    assert!(!memsw.exists());
}

/// Real cgroups on this host, under a parent the guard removes.
mod kernel {
    use super::*;

    /// `berth-test-<random>` in every hierarchy, emptied and removed on drop even
    /// when the test failed.
    struct Scratch {
        layout: Layout,
        parent: String,
    }

    impl Scratch {
        fn new() -> Scratch {
            let mut r = [0u8; 4];
            crate::util::random_bytes(&mut r);
            Scratch {
                layout: Layout::detect().unwrap(),
                parent: format!("berth-test-{}", crate::digest::to_hex(&r)),
            }
        }

        fn create(&self, limits: &Limits) -> Cgroup {
            Cgroup::create(&self.layout, &self.parent, &new_id(), limits).unwrap()
        }

        fn tops(&self) -> Vec<PathBuf> {
            self.layout
                .hierarchies()
                .into_iter()
                .map(|(root, _)| root.join(&self.parent))
                .collect()
        }
    }

    /// Every directory of a tree, deepest first.
    fn tree(dir: &Path, out: &mut Vec<PathBuf>) {
        if let Ok(entries) = fs::read_dir(dir) {
            for e in entries.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    tree(&e.path(), out);
                }
            }
            out.push(dir.to_path_buf());
        }
    }

    fn procs_in(dirs: &[PathBuf]) -> Vec<i32> {
        dirs.iter()
            .filter_map(|d| fs::read_to_string(d.join("cgroup.procs")).ok())
            .flat_map(|t| {
                t.lines()
                    .filter_map(|l| l.trim().parse().ok())
                    .collect::<Vec<i32>>()
            })
            .filter(|p| *p > 0)
            .collect()
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let mut dirs = Vec::new();
            for top in self.tops() {
                tree(&top, &mut dirs);
            }
            let deadline = Instant::now() + Duration::from_secs(120);
            loop {
                for d in &dirs {
                    let _ = fs::write(d.join("freezer.state"), "THAWED");
                    let _ = fs::write(d.join("cgroup.freeze"), "0");
                }
                let left = procs_in(&dirs);
                if left.is_empty() || Instant::now() > deadline {
                    break;
                }
                for pid in left {
                    let _ =
                        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            for d in &dirs {
                if let Err(e) = fs::remove_dir(d) {
                    eprintln!("cannot remove test cgroup {}: {e}", d.display());
                }
            }
        }
    }

    fn new_id() -> String {
        let mut r = [0u8; 32];
        crate::util::random_bytes(&mut r);
        crate::digest::to_hex(&r)
    }

    fn wait_for<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Some(v) = check() {
                return v;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A shell that waits for a line on stdin before running `script`, so the
    /// test can put it into a cgroup before it forks anything.
    struct Gated {
        child: Child,
        out: BufReader<std::process::ChildStdout>,
    }

    impl Gated {
        fn spawn(script: &str) -> Gated {
            let mut child = Command::new("sh")
                .arg("-c")
                .arg(format!("read go; {script}"))
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            let out = BufReader::new(child.stdout.take().unwrap());
            Gated { child, out }
        }
        fn pid(&self) -> i32 {
            self.child.id() as i32
        }
        fn go(&mut self) {
            let mut stdin = self.child.stdin.take().unwrap();
            stdin.write_all(b"go\n").unwrap();
        }
        fn line(&mut self) -> Option<String> {
            let mut l = String::new();
            match self.out.read_line(&mut l).unwrap() {
                0 => None,
                _ => Some(l.trim().to_string()),
            }
        }
    }

    impl Drop for Gated {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    fn dir_with(cg: &Cgroup, file: &str) -> Option<PathBuf> {
        cg.dirs()
            .into_iter()
            .find(|d| d.join(file).exists())
            .map(Path::to_path_buf)
    }

    #[test]
    fn limits_land_in_the_kernel_and_remove_leaves_nothing() {
        let s = Scratch::new();
        let limits = Limits {
            memory: Some(64 << 20),
            nano_cpus: Some(1_500_000_000),
            pids: Some(50),
            privileged: false,
        };
        let cg = s.create(&limits);
        assert_eq!(cg.dirs().len(), s.layout.hierarchies().len());
        for d in cg.dirs() {
            assert!(d.join("cgroup.procs").is_file(), "{}", d.display());
        }
        let mib64 = (64u64 << 20).to_string();
        match &s.layout {
            Layout::V1 { .. } => {
                let mem = dir_with(&cg, "memory.limit_in_bytes").unwrap();
                assert_eq!(get(&mem.join("memory.limit_in_bytes")), mib64);
                let memsw = mem.join("memory.memsw.limit_in_bytes");
                if memsw.exists() {
                    assert_eq!(get(&memsw), (128u64 << 20).to_string());
                }
                let cpu = dir_with(&cg, "cpu.cfs_quota_us").unwrap();
                assert_eq!(get(&cpu.join("cpu.cfs_period_us")), "100000");
                assert_eq!(get(&cpu.join("cpu.cfs_quota_us")), "150000");
                let pids = dir_with(&cg, "pids.max").unwrap();
                assert_eq!(get(&pids.join("pids.max")), "50");
                let devices = dir_with(&cg, "devices.list").unwrap();
                let mut got: Vec<String> = get(&devices.join("devices.list"))
                    .lines()
                    .map(str::to_string)
                    .collect();
                // Docker's defaults, as a docker container's devices.list shows them.
                let mut want: Vec<String> = [
                    "c *:* m",
                    "b *:* m",
                    "c 1:3 rwm",
                    "c 1:5 rwm",
                    "c 1:7 rwm",
                    "c 1:8 rwm",
                    "c 1:9 rwm",
                    "c 5:0 rwm",
                    "c 5:1 rwm",
                    "c 5:2 rwm",
                    "c 136:* rwm",
                ]
                .iter()
                .map(|r| r.to_string())
                .collect();
                got.sort();
                want.sort();
                assert_eq!(got, want);
                let cpuset = dir_with(&cg, "cpuset.cpus").unwrap();
                let root = cpuset.ancestors().nth(2).unwrap();
                assert_eq!(
                    get(&cpuset.join("cpuset.cpus")),
                    get(&root.join("cpuset.cpus"))
                );
                assert_eq!(
                    get(&cpuset.join("cpuset.mems")),
                    get(&root.join("cpuset.mems"))
                );
                // --privileged keeps the parent's "a *:* rwm".
                let privileged = s.create(&Limits {
                    privileged: true,
                    ..Limits::default()
                });
                let d = dir_with(&privileged, "devices.list").unwrap();
                assert_eq!(get(&d.join("devices.list")), "a *:* rwm");
                privileged.remove().unwrap();
            }
            Layout::V2 { .. } => {
                let d = cg.dirs()[0].to_path_buf();
                assert_eq!(get(&d.join("memory.max")), mib64);
                assert_eq!(get(&d.join("cpu.max")), "150000 100000");
                assert_eq!(get(&d.join("pids.max")), "50");
            }
        }
        let dirs: Vec<PathBuf> = cg.dirs().iter().map(|d| d.to_path_buf()).collect();
        assert!(cg.is_empty().unwrap());
        cg.remove().unwrap();
        for d in dirs {
            assert!(!d.exists(), "{} left behind", d.display());
        }
    }

    #[test]
    fn processes_are_listed_refuse_removal_and_die_by_kill_all() {
        let s = Scratch::new();
        let cg = s.create(&Limits::default());
        let mut sh =
            Gated::spawn("sleep 1000 >/dev/null & sleep 1000 >/dev/null & echo started; wait");
        cg.add_pid(sh.pid()).unwrap();
        sh.go();
        assert_eq!(sh.line().as_deref(), Some("started"));
        // Both sleeps were forked before the echo, inside the cgroup.
        let pids = cg.pids().unwrap();
        assert_eq!(pids.len(), 3, "{pids:?}");
        assert!(pids.contains(&sh.pid()));
        for d in cg.dirs() {
            let listed = get(&d.join("cgroup.procs"));
            assert!(
                listed.lines().any(|l| l == sh.pid().to_string()),
                "{}",
                d.display()
            );
        }
        // One sleep moves into a cgroup of its own below the container's: still
        // counted, still killed, still removed.
        let sleep = *pids.iter().find(|p| **p != sh.pid()).unwrap();
        // (in the hierarchy pids() reads: pids on v1, the only one on v2)
        let nested = dir_with(&cg, "pids.max").unwrap().join("inner");
        fs::create_dir(&nested).unwrap();
        fs::write(nested.join("cgroup.procs"), sleep.to_string()).unwrap();
        assert_eq!(cg.pids().unwrap(), pids);
        // engined restarted: the same cgroup, the same processes.
        let adopted =
            Cgroup::open(&s.layout, &s.parent, cg.name().rsplit('/').next().unwrap()).unwrap();
        assert_eq!(adopted.pids().unwrap(), pids);
        assert!(!adopted.is_empty().unwrap());
        let e = adopted.remove().unwrap_err();
        assert_eq!(e.kind(), Kind::Conflict);
        assert!(e.to_string().contains("still has 3 processes"), "{e}");
        assert_eq!(adopted.kill_all(Signal::SIGKILL).unwrap(), 3);
        wait_for("the cgroup to empty", || {
            adopted.is_empty().unwrap().then_some(())
        });
        let status = sh.child.wait().unwrap();
        assert_eq!(status.signal(), Some(libc::SIGKILL));
        if let Some(f) = dir_with(&adopted, "freezer.state") {
            assert_eq!(get(&f.join("freezer.state")), "THAWED", "left frozen");
        }
        if let Some(f) = dir_with(&adopted, "cgroup.freeze") {
            assert_eq!(get(&f.join("cgroup.freeze")), "0", "left frozen");
        }
        adopted.remove().unwrap();
        assert!(!nested.exists());
        for d in cg.dirs() {
            assert!(!d.exists(), "{} left behind", d.display());
        }
        let e = Cgroup::open(&s.layout, &s.parent, &new_id()).unwrap_err();
        assert_eq!(e.kind(), Kind::NotFound);
    }

    #[test]
    fn pids_limit_stops_forks() {
        let s = Scratch::new();
        let cg = s.create(&Limits {
            pids: Some(5),
            ..Limits::default()
        });
        let mut sh = Gated::spawn(
            "i=0; while [ $i -lt 20 ]; do sleep 1000 >/dev/null 2>&1 & i=$((i+1)); echo started; done; echo done",
        );
        cg.add_pid(sh.pid()).unwrap();
        sh.go();
        let mut started = 0;
        let mut finished = false;
        while let Some(l) = sh.line() {
            match l.as_str() {
                "started" => started += 1,
                "done" => finished = true,
                _ => {}
            }
            let n = cg.pids().unwrap().len();
            assert!(n <= 5, "{n} processes in a cgroup limited to 5");
        }
        // dash gives up at the first failed fork; other shells go on: either way
        // most of the 20 never ran, and the shell itself took one of the 5.
        assert!(
            started <= 4,
            "{started} sleeps started under pids.max 5 (finished: {finished})"
        );
        let n = cg.pids().unwrap().len();
        assert!(n <= 5, "{n} processes in a cgroup limited to 5");
        let events = dir_with(&cg, "pids.events").unwrap();
        let max: u64 = get(&events.join("pids.events"))
            .lines()
            .find_map(|l| l.strip_prefix("max ").map(|n| n.trim().parse().unwrap()))
            .unwrap();
        assert!(max >= 1, "the kernel counted no refused fork");
        cg.kill_all(Signal::SIGKILL).unwrap();
        wait_for("the cgroup to empty", || {
            cg.is_empty().unwrap().then_some(())
        });
        cg.remove().unwrap();
    }

    #[test]
    fn memory_limit_oom_kills_the_hog() {
        let s = Scratch::new();
        let cg = s.create(&Limits {
            memory: Some(32 << 20),
            ..Limits::default()
        });
        // The command substitution makes the shell itself hold 200 MB.
        let mut sh =
            Gated::spawn("x=$(head -c 200000000 /dev/zero | tr '\\0' x); echo survived ${#x}");
        cg.add_pid(sh.pid()).unwrap();
        sh.go();
        assert_eq!(sh.line(), None, "the shell printed instead of dying");
        let status = sh.child.wait().unwrap();
        assert_eq!(status.signal(), Some(libc::SIGKILL), "{status:?}");
        let used = cg.memory_usage().expect("memory controller present");
        assert!(used <= 32 << 20, "{used} bytes in use over a 32 MiB limit");
        wait_for("the cgroup to empty", || {
            cg.is_empty().unwrap().then_some(())
        });
        cg.remove().unwrap();
    }
}

//! The site's old kernels, played by a seccomp filter (see `oldkernel.rs`):
//! the same tests as elsewhere, with every berth process under SL7's 3.10 or
//! SL6's 2.6.32 system-call table. docs/kernels.md has the matrix.

use crate::oldkernel::{Kernel, under};

#[test]
fn sl7_registryd_serves_skopeo_over_tls() {
    under(
        Kernel::V3_10,
        crate::registry_skopeo::skopeo_round_trips_oci_and_schema2,
    );
}

#[test]
fn sl7_client_applets_import_push_pull_save_load() {
    under(Kernel::V3_10, || {
        crate::client::import_is_reproducible_and_applies_changes();
        crate::client::push_pull_with_registryd();
        crate::client::save_and_load_with_skopeo_both_ways();
    });
}

/// The client applets the first list leaves out: images, tag, rmi, search,
/// login, logout and htpasswd.
fn the_other_client_applets() {
    crate::client::rmi_refuses_images_in_use_and_frees_blobs();
    crate::client::insecure_plain_http_registry_and_defaults_file();
    crate::client::bearer_token_flow_and_logout();
    crate::dispatch::htpasswd_applet_writes_bcrypt_users();
}

#[test]
fn sl7_the_other_client_applets() {
    under(Kernel::V3_10, the_other_client_applets);
}

#[test]
fn sl6_the_other_client_applets() {
    under(Kernel::V2_6_32, the_other_client_applets);
}

#[test]
fn sl7_init_runs_and_reaps() {
    under(Kernel::V3_10, || {
        crate::init::init_exits_with_the_childs_status();
        crate::init::init_reaps_orphans_as_a_subreaper();
        crate::init::init_forwards_every_catchable_signal_to_the_child();
    });
}

#[test]
fn sl7_mkimage_builds_the_busybox_recipe() {
    under(
        Kernel::V3_10,
        crate::mkimage::busybox_is_reproducible_and_round_trips_through_registryd,
    );
}

#[test]
fn sl7_engined_runs_the_sites_containers() {
    under(Kernel::V3_10, || {
        crate::engine::run_prints_exits_and_cleans_up_with_both_clis();
        crate::engine::the_sites_run_pattern_ports_binds_and_hostname();
    });
}

#[test]
fn sl6_registryd_serves_skopeo_over_tls() {
    under(
        Kernel::V2_6_32,
        crate::registry_skopeo::skopeo_round_trips_oci_and_schema2,
    );
}

#[test]
fn sl6_client_applets_import_push_pull_save_load() {
    under(Kernel::V2_6_32, || {
        crate::client::import_is_reproducible_and_applies_changes();
        crate::client::push_pull_with_registryd();
        crate::client::save_and_load_with_skopeo_both_ways();
    });
}

/// 2.6.32 has no subreapers: init reaps its child and says, once, that the
/// child's orphans are the host init's (PID 1 of a container, where it reaps
/// every orphan without one, is the engine's test below).
#[test]
fn sl6_init_runs_and_reaps_its_child() {
    under(Kernel::V2_6_32, || {
        crate::init::init_exits_with_the_childs_status();
        crate::init::init_without_a_subreaper_reaps_its_child_only();
        crate::init::init_forwards_every_catchable_signal_to_the_child();
    });
}

/// The filter is real: each probe (a raw system call from python) gets what
/// the old kernel answered, and what that kernel had gets what this host
/// answers without the filter. Then a berth applet carries the filter.
#[test]
fn the_filter_answers_as_the_old_kernels_did() {
    use std::process::Command;
    // One answer a line, an errno name or "ok". The unshare of a user
    // namespace comes last: it changes who the probe is.
    let probe = r#"
import ctypes, os, errno
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
def say(r):
    print(errno.errorcode[ctypes.get_errno()] if r < 0 else "ok", flush=True)
buf = ctypes.create_string_buffer(8)
say(libc.syscall(318, buf, 8, 0))                  # getrandom (3.17)
try:
    os.close(os.open("/tmp", os.O_TMPFILE | os.O_WRONLY))
    print("ok", flush=True)
except OSError as e:
    print(errno.errorcode[e.errno], flush=True)
say(libc.syscall(306, -1))                         # syncfs (2.6.39)
say(libc.syscall(308, -1, 0x02000000))             # setns(CLONE_NEWCGROUP)
say(libc.syscall(157, 36, 1, 0, 0, 0))             # PR_SET_CHILD_SUBREAPER
say(libc.syscall(157, 38, 1, 0, 0, 0))             # PR_SET_NO_NEW_PRIVS
say(libc.syscall(157, 47, 1, 0, 0, 0))             # PR_CAP_AMBIENT_IS_SET
say(libc.syscall(272, 0x02000000))                 # unshare(CLONE_NEWCGROUP)
say(libc.syscall(272, 0x10000000))                 # unshare(CLONE_NEWUSER)
"#;
    let answers = |k: Option<Kernel>| -> Vec<String> {
        let mut c = Command::new("python3");
        c.args(["-c", probe]);
        if let Some(k) = k {
            under(k, || crate::oldkernel::apply(&mut c));
        }
        let o = c.output().unwrap();
        let out: Vec<String> = String::from_utf8_lossy(&o.stdout)
            .lines()
            .map(String::from)
            .collect();
        assert_eq!(
            out.len(),
            9,
            "{k:?}: {out:?} {}",
            String::from_utf8_lossy(&o.stderr)
        );
        out
    };
    let host = answers(None);
    // the host has what the probes need, or they would prove nothing
    assert_eq!(host[0], "ok", "{host:?}");
    assert_eq!(host[2], "EBADF", "{host:?}");
    assert_eq!(host[3], "EBADF", "{host:?}");
    assert_eq!(host[4], "ok", "{host:?}");
    assert_ne!(host[6], "EINVAL", "{host:?}");
    const H: &str = "host";
    for (k, want) in [
        (
            Kernel::V3_10,
            ["ENOSYS", "EINVAL", H, "EINVAL", H, H, "EINVAL", "EINVAL", H],
        ),
        (
            Kernel::V2_6_32,
            [
                "ENOSYS", "EINVAL", "ENOSYS", "ENOSYS", "EINVAL", "EINVAL", "EINVAL", "EINVAL",
                "EINVAL",
            ],
        ),
    ] {
        let want: Vec<String> = want
            .iter()
            .zip(&host)
            .map(|(w, h)| if *w == H { h.clone() } else { w.to_string() })
            .collect();
        assert_eq!(answers(Some(k)), want, "{k:?} (the host: {host:?})");
        // and berth's own processes carry it (seccomp mode 2: a filter)
        let mut child = under(k, || crate::harness::berth(&["init", "--", "sleep", "30"]))
            .spawn()
            .unwrap();
        let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap();
        let _ = child.kill();
        let _ = child.wait();
        assert!(
            status
                .lines()
                .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["Seccomp:", "2"]),
            "{status}"
        );
    }
}

#[test]
fn sl7_logcollect_ships_over_tls() {
    under(
        Kernel::V3_10,
        crate::logcollect::oversize_and_non_utf8_lines_and_tls,
    );
}

/// SL6 has neither usable user namespaces (EINVAL, though this host's
/// user.max_user_namespaces says yes) nor no_new_privs: a container starts
/// without both, each said in one line at its start, in its shim.log and in
/// engined's log.
#[test]
fn sl6_engined_runs_a_container() {
    under(Kernel::V2_6_32, || {
        crate::engine::run_prints_exits_and_cleans_up_with_both_clis();
        let e = crate::harness::Engined::start();
        let img = crate::engine::image(&e);
        let out = e.ok(&["run", "--name", "sl6", &img, "echo", "hi"]);
        assert_eq!(out, "hi\n");
        let id = e.ok(&["inspect", "-f", "{{.Id}}", "sl6"]);
        let shim =
            std::fs::read_to_string(e.graph.join("containers").join(id.trim()).join("shim.log"))
                .unwrap();
        let engined = e.logs();
        for want in [
            "user namespace: unshare(CLONE_NEWUSER) failed with EINVAL: the container runs without one",
            "no_new_privs: the kernel has none (before 3.5): the container starts without it",
        ] {
            for (what, log) in [("shim.log", &shim), ("engined's log", &engined)] {
                let n = log.lines().filter(|l| l.contains(want)).count();
                assert_eq!(n, 1, "{what} says {want:?} {n} times: {log}");
            }
        }
        e.ok(&["rm", "sl6"]);
        // docker exec joins the container's namespaces with setns (3.0): on
        // SL6 it is refused, in one line saying why
        e.ok(&["run", "-d", "--name", "sl6-exec", &img, "sleep", "60"]);
        let o = e.run(&["exec", "sl6-exec", "true"]);
        assert!(!o.status.success());
        assert!(
            crate::harness::stderr(&o).contains("setns"),
            "{}",
            crate::harness::stderr(&o)
        );
        e.ok(&["rm", "-f", "sl6-exec"]);
    });
}

#[test]
fn sl7_sign_and_verify_standalone_signatures() {
    under(
        Kernel::V3_10,
        crate::signing::standalone_signatures_cross_both_ways,
    );
}

#[test]
fn sl6_sign_and_verify_standalone_signatures() {
    under(
        Kernel::V2_6_32,
        crate::signing::standalone_signatures_cross_both_ways,
    );
}

#[test]
fn sl6_mkimage_builds_the_busybox_recipe() {
    under(
        Kernel::V2_6_32,
        crate::mkimage::busybox_is_reproducible_and_round_trips_through_registryd,
    );
}

#[test]
fn sl6_logcollect_ships_over_tls() {
    under(
        Kernel::V2_6_32,
        crate::logcollect::oversize_and_non_utf8_lines_and_tls,
    );
}

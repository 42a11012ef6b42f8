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

#[test]
fn sl6_init_runs_and_reaps() {
    under(Kernel::V2_6_32, || {
        crate::init::init_exits_with_the_childs_status();
        crate::init::init_reaps_orphans_as_a_subreaper();
        crate::init::init_forwards_every_catchable_signal_to_the_child();
    });
}

/// The filter is real: a call 3.10 lacks fails with ENOSYS, and O_TMPFILE
/// with EINVAL (through a berth applet that needs neither, then a probe).
#[test]
fn the_filter_answers_as_the_old_kernels_did() {
    use std::process::Command;
    for (k, getrandom, tmpfile) in [
        (Kernel::V3_10, "ENOSYS", "EINVAL"),
        (Kernel::V2_6_32, "ENOSYS", "EINVAL"),
    ] {
        let probe = r#"
import ctypes, os, errno
libc = ctypes.CDLL(None, use_errno=True)
buf = ctypes.create_string_buffer(8)
r = libc.syscall(318, buf, 8, 0)
print(errno.errorcode[ctypes.get_errno()] if r < 0 else "ok")
try:
    os.open("/tmp", os.O_TMPFILE | os.O_WRONLY)
    print("ok")
except OSError as e:
    print(errno.errorcode[e.errno])
"#;
        let mut c = Command::new("python3");
        c.args(["-c", probe]);
        under(k, || crate::oldkernel::apply(&mut c));
        let o = c.output().unwrap();
        let out = String::from_utf8_lossy(&o.stdout).into_owned();
        assert_eq!(
            out,
            format!("{getrandom}\n{tmpfile}\n"),
            "{k:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
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

#[test]
fn sl6_engined_runs_a_container() {
    under(Kernel::V2_6_32, || {
        crate::engine::run_prints_exits_and_cleans_up_with_both_clis();
    });
}

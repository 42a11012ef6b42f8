//! `berth engined-shim exec JSON`: run a command inside a running container
//! (`docker exec`). engined starts it with the exec's stdio (a pty or pipes it
//! relays); it joins the container's cgroup and namespaces, forks (a PID
//! namespace takes effect for children), and the child sets up user,
//! capabilities and working directory as the container's init did, then execs.
//! The parent waits and exits with the command's status, so engined learns the
//! exit code from this process.

use super::runtime;
use berth::error::{Error, Result};
use berth::sys::Op;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// What an exec needs, as engined passes it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExecSpec {
    /// The container's init (its namespaces are joined).
    pub pid: i32,
    /// The container runs in a user namespace of its own.
    pub userns: bool,
    /// cgroup.procs files to join.
    pub cgroup_procs: Vec<PathBuf>,
    pub user: String,
    pub env: Vec<String>,
    pub workdir: String,
    pub argv: Vec<String>,
    pub tty: bool,
    pub caps: u64,
    pub privileged: bool,
    pub hostname: String,
}

pub fn main(args: &[String]) -> Result<u8> {
    let [json] = args else {
        return Err(Error::usage("engined-shim exec SPEC_JSON"));
    };
    let spec: ExecSpec =
        serde_json::from_str(json).map_err(|e| Error::usage(format!("exec spec: {e}")))?;
    let code = run(&spec);
    Ok(code as u8)
}

fn say(msg: &str) -> i32 {
    berth::proc::raw_write(&[msg.as_bytes(), b"\n"]);
    126
}

fn run(spec: &ExecSpec) -> i32 {
    for p in &spec.cgroup_procs {
        if let Err(e) = std::fs::write(p, std::process::id().to_string()) {
            return say(&format!(
                "exec: join the container's cgroup {}: {e}",
                p.display()
            ));
        }
    }
    // Open every namespace first: once the mount namespace is joined, /proc is
    // the container's and the pid means something else.
    // The PID namespace belongs to the host's user namespace (the shim made it):
    // join it while the host's capabilities count, then the container's user
    // namespace, then the namespaces that one owns.
    let mut order = vec![("pid", libc::CLONE_NEWPID)];
    if spec.userns {
        order.push(("user", libc::CLONE_NEWUSER));
    }
    order.extend([
        ("ipc", libc::CLONE_NEWIPC),
        ("uts", libc::CLONE_NEWUTS),
        ("net", libc::CLONE_NEWNET),
        ("mnt", libc::CLONE_NEWNS),
    ]);
    let mut files = Vec::new();
    for (name, flag) in &order {
        let path = PathBuf::from(format!("/proc/{}/ns/{name}", spec.pid));
        // A host-networked container shares the host's: joining is harmless.
        match std::fs::File::open(&path) {
            Ok(f) => files.push((f, *flag, path)),
            Err(e) => {
                return say(&format!(
                    "exec: the container is not running ({}: {e})",
                    path.display()
                ));
            }
        }
    }
    for (f, flag, path) in &files {
        if let Err(e) = nix::sched::setns(f, nix::sched::CloneFlags::from_bits_truncate(*flag)) {
            // Joining the namespace we are already in fails for user
            // namespaces (EINVAL); anything else is real.
            if *flag == libc::CLONE_NEWUSER && e == nix::Error::EINVAL {
                continue;
            }
            return say(&format!("exec: setns {}: {e}", path.display()));
        }
    }
    drop(files);
    // With a tty: a pty from the container's own devpts (so `tty` inside names
    // a device that exists there); the master goes back to engined over stdin,
    // which engined made a unix socket for this.
    let pty = if spec.tty {
        match berth::proc::pty::open_pty() {
            Ok(p) => Some(p),
            Err(e) => return say(&format!("exec: open a terminal in the container: {e}")),
        }
    } else {
        None
    };
    // SAFETY: single-threaded here; the child only runs the set-up and execs.
    match unsafe { libc::fork() } {
        -1 => say("exec: fork failed"),
        0 => {
            if let Some((_, slave, _)) = &pty {
                use std::os::fd::AsRawFd;
                // SAFETY: plain system calls on descriptors we own.
                unsafe {
                    libc::setsid();
                    for i in 0..3 {
                        libc::dup2(slave.as_raw_fd(), i);
                    }
                    libc::ioctl(0, libc::TIOCSCTTY, 0);
                }
            }
            let code = child(spec);
            // SAFETY: leave the child without running the parent's exit handlers.
            unsafe { libc::_exit(code) }
        }
        pid => {
            if let Some((master, slave, _)) = pty {
                use std::os::fd::AsRawFd;
                if let Err(e) = berth::proc::pty::send_fd(0, master.as_raw_fd()) {
                    say(&format!("exec: hand the terminal to engined: {e}"));
                }
                drop((master, slave));
            }
            berth::proc::wait_and_exit(pid)
        }
    }
}

fn child(spec: &ExecSpec) -> i32 {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let group = std::fs::read_to_string("/etc/group").unwrap_or_default();
    let ids = match runtime::resolve_user(&spec.user, &passwd, &group) {
        Ok(i) => i,
        Err(e) => return say(&format!("exec: {e}")),
    };
    let env = runtime::environment(&spec.env, &spec.hostname, &ids.home, spec.tty);
    let exists = |p: &std::path::Path| -> Option<bool> {
        use std::os::unix::fs::PermissionsExt;
        let m = std::fs::metadata(p).ok()?;
        Some(m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    let Some(cmd) = spec.argv.first() else {
        return say("exec: no command");
    };
    let path = match runtime::find_executable(cmd, &env, &exists) {
        Ok(p) => p,
        Err(e) => {
            let code = if e.contains("permission denied") {
                126
            } else {
                127
            };
            say(&format!(
                "OCI runtime exec failed: exec failed: {e}: unknown"
            ));
            return code;
        }
    };
    let mut plan = vec![Op::Chdir(PathBuf::from(if spec.workdir.is_empty() {
        "/"
    } else {
        spec.workdir.as_str()
    }))];
    plan.push(Op::BoundingSet(spec.caps));
    plan.push(Op::SetIds {
        uid: ids.uid,
        gid: ids.gid,
        groups: ids.groups.clone(),
    });
    plan.push(Op::Capabilities(spec.caps));
    // The container's start said it once where the kernel lacks it.
    if !spec.privileged && berth::sys::has_no_new_privs() {
        plan.push(Op::NoNewPrivs);
    }
    if let Err(e) = berth::sys::apply(&berth::sys::Linux, &plan) {
        return say(&format!("exec: {e}"));
    }
    let c = |s: &str| std::ffi::CString::new(s).unwrap_or_default();
    let argv: Vec<std::ffi::CString> = spec.argv.iter().map(|a| c(a)).collect();
    let envp: Vec<std::ffi::CString> = env.iter().map(|a| c(a)).collect();
    let e = nix::unistd::execve(&c(&path.to_string_lossy()), &argv, &envp).unwrap_err();
    say(&format!("exec: \"{cmd}\": {}", e.desc()));
    126
}

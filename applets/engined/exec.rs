//! `docker exec`: `POST /containers/{id}/exec` makes an exec instance,
//! `POST /exec/{id}/start` runs it (attached through the taken-over connection,
//! or detached), `GET /exec/{id}/json` tells its exit code, `POST
//! /exec/{id}/resize` sizes its tty. The process is `berth engined-shim exec`,
//! which joins the container's cgroup and namespaces; engined holds its stdio.

use super::Engine;
use super::model::ExecConfig;
use super::nsexec::ExecSpec;
use berth::error::{Context, Error, Kind, Result};
use berth::http::server::Upgraded;
use serde_json::{Value, json};
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::{Arc, Mutex};

/// An exec instance.
pub struct Exec {
    pub id: String,
    pub container: String,
    pub cfg: ExecConfig,
    pub st: Mutex<ExecState>,
}

#[derive(Default)]
pub struct ExecState {
    pub running: bool,
    pub started: bool,
    pub exit_code: Option<i32>,
    pub pid: i32,
    /// The pty master with a tty (for resize).
    pub pty: Option<Arc<File>>,
}

pub fn create(e: &Engine, container: &str, cfg: ExecConfig) -> Result<String> {
    let st = e.dir.load_state(container)?;
    if st.status != "running" {
        return Err(Error::new(
            Kind::Conflict,
            format!("Container {container} is not running"),
        ));
    }
    if cfg.cmd.is_empty() {
        return Err(Error::invalid("No exec command specified"));
    }
    let mut b = [0u8; 32];
    berth::util::random_bytes(&mut b);
    let id = berth::digest::to_hex(&b);
    let r = e.dir.load_record(container)?;
    super::containers::emit(
        e,
        &format!("exec_create: {}", cfg.cmd.join(" ")),
        &r,
        vec![("execID".into(), id.clone())],
    );
    e.execs.lock().unwrap().insert(
        id.clone(),
        Arc::new(Exec {
            id: id.clone(),
            container: container.to_string(),
            cfg,
            st: Mutex::new(ExecState::default()),
        }),
    );
    Ok(id)
}

pub fn get(e: &Engine, id: &str) -> Result<Arc<Exec>> {
    e.execs
        .lock()
        .unwrap()
        .get(id)
        .cloned()
        .ok_or_else(|| Error::not_found(format!("No such exec instance: {id}")))
}

fn spec(e: &Engine, x: &Exec) -> Result<ExecSpec> {
    let r = e.dir.load_record(&x.container)?;
    let st = e.dir.load_state(&x.container)?;
    if st.status != "running" || st.pid <= 0 {
        return Err(Error::new(
            Kind::Conflict,
            format!("Container {} is not running", x.container),
        ));
    }
    let layout = berth::cgroup::Layout::detect()?;
    let cg = berth::cgroup::Cgroup::open(&layout, &e.s.cgroup_parent, &x.container)?;
    let procs = cg.dirs().iter().map(|d| d.join("cgroup.procs")).collect();
    let mut env = r.config.env.clone().unwrap_or_default();
    for v in x.cfg.env.clone().unwrap_or_default() {
        let k = v.split('=').next().unwrap_or("").to_string();
        env.retain(|x| x.split('=').next() != Some(k.as_str()));
        env.push(v);
    }
    let privileged = r.host_config.privileged || x.cfg.privileged;
    let caps = berth::sys::caps::effective_set(
        r.host_config.cap_add.as_deref().unwrap_or_default(),
        r.host_config.cap_drop.as_deref().unwrap_or_default(),
        privileged,
    )?;
    Ok(ExecSpec {
        pid: st.pid,
        userns: e.s.userns && !r.host_config.privileged,
        cgroup_procs: procs,
        user: if x.cfg.user.is_empty() {
            r.config.user.clone()
        } else {
            x.cfg.user.clone()
        },
        env,
        workdir: if x.cfg.working_dir.is_empty() {
            r.config.working_dir.clone()
        } else {
            x.cfg.working_dir.clone()
        },
        argv: x.cfg.cmd.clone(),
        tty: x.cfg.tty,
        caps,
        privileged,
        hostname: super::containers::hostname_of(&r),
    })
}

/// Start an exec; with `up` its stdio is relayed over the taken-over connection.
pub fn start(e: &Arc<Engine>, x: Arc<Exec>, up: Option<Upgraded>) -> Result<()> {
    {
        let mut st = x.st.lock().unwrap();
        if st.started {
            return Err(Error::new(
                Kind::Conflict,
                format!("Error: Exec command {} has already run", x.id),
            ));
        }
        st.started = true;
        st.running = true;
    }
    let sp = spec(e, &x)?;
    let json = serde_json::to_string(&sp).map_err(|err| Error::internal(err.to_string()))?;
    use std::os::unix::process::CommandExt;
    use std::process::Stdio;
    let mut cmd = std::process::Command::new(&e.exe);
    cmd.arg0("berth").arg("engined-shim").arg("exec").arg(json);
    let tty = x.cfg.tty;
    let mut master: Option<File> = None;
    let (mut out_r, mut err_r, mut in_w): (Option<File>, Option<File>, Option<File>) =
        (None, None, None);
    let mut fd_sock = None;
    if tty {
        // The helper opens the pty inside the container and sends its master
        // back over its stdin, a unix socket.
        let (ours, theirs) = std::os::unix::net::UnixStream::pair().context("socketpair")?;
        cmd.stdin(Stdio::from(OwnedFd::from(theirs)))
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        fd_sock = Some(ours);
    } else {
        if x.cfg.attach_stdin && up.is_some() {
            cmd.stdin(Stdio::piped());
        } else {
            cmd.stdin(Stdio::null());
        }
        if up.is_some() {
            cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        } else {
            cmd.stdout(Stdio::null()).stderr(Stdio::null());
        }
    }
    let mut child = cmd.spawn().context("start the exec helper")?;
    drop(cmd);
    if let Some(sock) = fd_sock {
        use std::os::fd::AsRawFd as _;
        match berth::proc::pty::recv_fd(sock.as_raw_fd()) {
            Ok(m) => master = Some(File::from(m)),
            Err(err) => {
                let _ = child.wait();
                finish(e, &x, 126);
                return Err(Error::internal(format!(
                    "exec: the container's terminal did not come: {err}"
                )));
            }
        }
    }
    if !tty {
        out_r = child.stdout.take().map(|f| File::from(OwnedFd::from(f)));
        err_r = child.stderr.take().map(|f| File::from(OwnedFd::from(f)));
        in_w = child.stdin.take().map(|f| File::from(OwnedFd::from(f)));
    }
    let master = master.map(Arc::new);
    {
        let mut st = x.st.lock().unwrap();
        st.pid = child.id() as i32;
        st.pty = master.clone();
    }
    if let Ok(r) = e.dir.load_record(&x.container) {
        super::containers::emit(
            e,
            &format!("exec_start: {}", x.cfg.cmd.join(" ")),
            &r,
            vec![("execID".into(), x.id.clone())],
        );
    }
    // Output pumps: each copies one source into the shared client writer.
    let mut pumps = Vec::new();
    if let Some(up) = up {
        let Upgraded { mut reader, writer } = up;
        let writer = Arc::new(Mutex::new(writer));
        let sources: Vec<(File, Option<u8>)> = match &master {
            Some(m) => vec![(m.try_clone()?, None)],
            None => [(out_r.take(), 1u8), (err_r.take(), 2u8)]
                .into_iter()
                .filter_map(|(f, s)| f.map(|f| (f, Some(s))))
                .collect(),
        };
        for (mut src, stream) in sources {
            let w = writer.clone();
            pumps.push(
                std::thread::Builder::new()
                    .name("exec-out".into())
                    .stack_size(64 * 1024)
                    .spawn(move || {
                        let mut buf = vec![0u8; 32 * 1024];
                        let mut framed = Vec::new();
                        loop {
                            // EIO from a pty master once the last slave closed.
                            let n = match src.read(&mut buf) {
                                Ok(0) | Err(_) => break,
                                Ok(n) => n,
                            };
                            let mut w = w.lock().unwrap();
                            let res = match stream {
                                Some(s) => {
                                    framed.clear();
                                    berth::logfile::frame(s, &buf[..n], &mut framed);
                                    w.write_all(&framed)
                                }
                                None => w.write_all(&buf[..n]),
                            };
                            if res.and_then(|_| w.flush()).is_err() {
                                break;
                            }
                        }
                    })
                    .context("thread")?,
            );
        }
        // Input: to the pty, or the stdin pipe (closed at the client's end).
        let input: Option<File> = match &master {
            Some(m) if x.cfg.attach_stdin => Some(m.try_clone()?),
            Some(_) => None,
            None => in_w.take(),
        };
        if let Some(mut to) = input {
            let _ = std::thread::Builder::new()
                .name("exec-in".into())
                .stack_size(64 * 1024)
                .spawn(move || {
                    let _ = std::io::copy(&mut reader, &mut to);
                    if tty {
                        // End of input on a tty is ^D.
                        let _ = to.write_all(&[4]);
                    }
                });
        }
        // The writer goes when the pumps are done and the process has ended.
        let x2 = x.clone();
        let e2 = e.clone();
        std::thread::Builder::new()
            .name("exec-wait".into())
            .stack_size(64 * 1024)
            .spawn(move || {
                let status = child.wait();
                // A pty keeps no EOF for the reader: the master is closed by
                // dropping the state's copy after the process ended.
                let code = status
                    .ok()
                    .map(|s| {
                        use std::os::unix::process::ExitStatusExt;
                        s.code().unwrap_or_else(|| 128 + s.signal().unwrap_or(0))
                    })
                    .unwrap_or(-1);
                finish(&e2, &x2, code);
                for p in pumps {
                    if tty {
                        // the pump reads the master: it ends by EIO now
                    }
                    let _ = p.join();
                }
                drop(writer);
            })
            .context("thread")?;
    } else {
        let x2 = x.clone();
        let e2 = e.clone();
        std::thread::Builder::new()
            .name("exec-wait".into())
            .stack_size(64 * 1024)
            .spawn(move || {
                let code = child
                    .wait()
                    .ok()
                    .map(|s| {
                        use std::os::unix::process::ExitStatusExt;
                        s.code().unwrap_or_else(|| 128 + s.signal().unwrap_or(0))
                    })
                    .unwrap_or(-1);
                finish(&e2, &x2, code);
                let _ = master;
            })
            .context("thread")?;
    }
    Ok(())
}

fn finish(e: &Engine, x: &Exec, code: i32) {
    {
        let mut st = x.st.lock().unwrap();
        st.running = false;
        st.exit_code = Some(code);
        st.pty = None;
    }
    if let Ok(r) = e.dir.load_record(&x.container) {
        super::containers::emit(
            e,
            "exec_die",
            &r,
            vec![
                ("execID".into(), x.id.clone()),
                ("exitCode".into(), code.to_string()),
            ],
        );
    }
}

pub fn inspect(x: &Exec) -> Value {
    let st = x.st.lock().unwrap();
    json!({
        "CanRemove": false,
        "ContainerID": x.container,
        "DetachKeys": x.cfg.detach_keys,
        "ExitCode": st.exit_code,
        "ID": x.id,
        "OpenStderr": x.cfg.attach_stderr,
        "OpenStdin": x.cfg.attach_stdin,
        "OpenStdout": x.cfg.attach_stdout,
        "ProcessConfig": {
            "arguments": x.cfg.cmd.iter().skip(1).collect::<Vec<_>>(),
            "entrypoint": x.cfg.cmd.first().cloned().unwrap_or_default(),
            "privileged": x.cfg.privileged,
            "tty": x.cfg.tty,
            "user": x.cfg.user,
        },
        "Running": st.running,
        "Pid": st.pid,
    })
}

pub fn resize(x: &Exec, h: u16, w: u16) -> Result<()> {
    let st = x.st.lock().unwrap();
    let Some(p) = &st.pty else {
        return Err(Error::new(
            Kind::Conflict,
            format!("exec {} has no tty or is not running", x.id),
        ));
    };
    let ws = libc::winsize {
        ws_row: h,
        ws_col: w,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ with a live winsize on our pty master.
    if unsafe { libc::ioctl(p.as_raw_fd(), libc::TIOCSWINSZ, &ws) } != 0 {
        let err = std::io::Error::last_os_error();
        return Err(Error::internal(format!("resize exec {}: {err}", x.id)));
    }
    Ok(())
}

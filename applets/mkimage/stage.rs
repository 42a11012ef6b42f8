//! Running one stage against the root.
//!
//! `run` and `chroot` stages are shell commands; their output (stdout and stderr
//! through one pipe, so the order is kept) is passed through to mkimage's stderr
//! and its last lines kept for the failure report. A `chroot` child gets a private
//! mount namespace with `/proc` mounted inside the root, so nothing it mounts
//! outlives it or shows on the host; the namespace, mount and chroot are one
//! [`Op`] plan applied in the child before exec.
//!
//! The file stages (copy, append, set, remove, devices) work through
//! [`Root`], so no path — and no symlink planted in the root by a package — leads
//! them out of the root. Device nodes are made through the Sys seam.

use berth::error::{Context, Error, Kind, Result};
use berth::fsutil::confined::Root;
use berth::image::recipe::{Action, AppendItem, CopyItem, DevKind, Device, SetItem, Stage};
use berth::sys::{Op, Sys};
use std::collections::VecDeque;
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Lines of a failed command's output repeated in the error.
const TAIL_LINES: usize = 20;

/// PATH inside a chroot: the image's, not the host's.
const CHROOT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// What stages run with.
pub struct Ctx<'a> {
    pub root: &'a Root,
    /// Working directory of `run` stages.
    pub recipe_dir: &'a Path,
    /// Variables exported to `run` and `chroot` stages.
    pub env: &'a [(String, String)],
    pub sys: &'a dyn Sys,
}

/// Run a stage; the error says what failed (the caller adds which stage).
pub fn run(ctx: &Ctx, stage: &Stage) -> Result<()> {
    match &stage.action {
        Action::Run(cmd) => {
            let mut c = Command::new("/bin/sh");
            c.arg("-c")
                .arg(cmd)
                .current_dir(ctx.recipe_dir)
                .envs(ctx.env.iter().map(|(k, v)| (k, v)))
                .env("ROOT", ctx.root.path())
                // a group of its own, so whatever it leaves running can be stopped
                .process_group(0);
            command(c, false)
        }
        Action::Chroot(cmd) => {
            let proc_dir = ctx.root.resolve(Path::new("/proc"), true)?;
            let proc_dir = proc_dir.is_dir().then_some(proc_dir);
            let isolate = isolate_plan(pid_namespaces());
            let enter = enter_plan(ctx.root.path(), proc_dir.as_deref());
            let mut c = Command::new("/bin/sh");
            c.arg("-c")
                .arg(cmd)
                .env_clear()
                .env("PATH", CHROOT_PATH)
                .env("HOME", "/root")
                .envs(ctx.env.iter().map(|(k, v)| (k, v)));
            // SAFETY: runs in the forked child before exec. mkimage has no other
            // threads while stages run (the gzip workers are joined after each
            // layer); the plans' syscalls allocate only on failure, and the forked
            // parent only closes descriptors, waits and _exits.
            unsafe {
                c.pre_exec(move || {
                    apply_or_say(&isolate)?;
                    // The command must be the first process of the new PID
                    // namespace (so its /proc shows only the build), so fork once more.
                    match libc::fork() {
                        -1 => Err(io::Error::last_os_error()),
                        0 => {
                            // if mkimage goes, the build's namespace goes with it
                            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                            apply_or_say(&enter)
                        }
                        // The forked parent holds nothing open, waits for the command
                        // (PID 1 of the stage's namespace) and exits with its status.
                        pid => berth::proc::wait_and_exit(pid),
                    }
                });
            }
            command(c, true)
        }
        Action::Copy(items) => items.iter().try_for_each(|it| copy(ctx, it)),
        Action::Append(items) => items.iter().try_for_each(|it| append(ctx, it)),
        Action::Set(items) => items.iter().try_for_each(|it| set(ctx, it)),
        Action::Remove { paths, keep } => {
            let r = ctx.root.remove_matching(paths, keep)?;
            eprintln!(
                "removed {} entries, {}",
                r.entries,
                berth::util::human_size(r.bytes)
            );
            Ok(())
        }
        Action::Devices(list) => devices(ctx, list),
    }
}

/// Whether unshare can make a PID namespace: Linux 3.8 and later, not SL6's
/// 2.6.32 (EINVAL). Tried once, in a child that exits at once; the first
/// answer "no" is said in one line.
fn pid_namespaces() -> bool {
    static ANSWER: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ANSWER.get_or_init(|| {
        // SAFETY: the child only calls unshare and _exit; the parent reaps it.
        let ok = unsafe {
            match libc::fork() {
                -1 => false,
                0 => libc::_exit(i32::from(libc::unshare(libc::CLONE_NEWPID) != 0)),
                pid => {
                    let mut st = 0;
                    libc::waitpid(pid, &mut st, 0) == pid
                        && libc::WIFEXITED(st)
                        && libc::WEXITSTATUS(st) == 0
                }
            }
        };
        if !ok {
            eprintln!(
                "mkimage: chroot stages run without a PID namespace of their own (unshare needs Linux 3.8 for one): their commands see the build host's processes"
            );
        }
        ok
    })
}

/// What a chroot stage gets of its own before it forks: mounts (the /proc mount
/// dies with it), hostname and IPC, and (`pid`) a PID namespace whose first
/// process is the command — so package scripts that run `hostname`, `sysctl`
/// or `killall` touch the build, not the build host.
pub fn isolate_plan(pid: bool) -> Vec<Op> {
    let pid = if pid { libc::CLONE_NEWPID } else { 0 };
    vec![
        Op::Unshare(libc::CLONE_NEWNS | libc::CLONE_NEWUTS | libc::CLONE_NEWIPC | pid),
        Op::Mount {
            source: None,
            target: PathBuf::from("/"),
            fstype: None,
            flags: (libc::MS_REC | libc::MS_PRIVATE),
            data: None,
        },
    ]
}

/// In the new PID namespace: /proc inside the root (when it has that
/// directory), then chroot.
pub fn enter_plan(root: &Path, proc_dir: Option<&Path>) -> Vec<Op> {
    let mut plan = Vec::new();
    if let Some(p) = proc_dir {
        plan.push(Op::Mount {
            source: Some(PathBuf::from("proc")),
            target: p.to_path_buf(),
            fstype: Some("proc".into()),
            flags: (libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC),
            data: None,
        });
    }
    plan.push(Op::Chroot(root.to_path_buf()));
    plan
}

// Apply a plan between fork and exec; a failure is also written to the stage's
// output (std keeps only the errno of a pre_exec error, not the message).
fn apply_or_say(plan: &[Op]) -> io::Result<()> {
    berth::sys::apply(&berth::sys::Linux, plan).map_err(|e| {
        let msg = format!("mkimage: chroot set-up: {e}\n");
        // SAFETY: write(2) on our own stderr, from a buffer we own.
        unsafe { libc::write(2, msg.as_ptr().cast(), msg.len()) };
        io::Error::from_raw_os_error(libc::EPERM)
    })
}

/// The last lines of a byte stream.
#[derive(Default)]
pub struct Tail {
    lines: VecDeque<String>,
    partial: Vec<u8>,
}

impl Tail {
    pub fn feed(&mut self, data: &[u8]) {
        for &b in data {
            if b == b'\n' {
                self.push_line();
            } else if self.partial.len() < 1000 {
                self.partial.push(b);
            }
        }
    }

    fn push_line(&mut self) {
        let raw = std::mem::take(&mut self.partial);
        // a progress bar redraws with \r: keep what was shown last
        let shown = raw
            .rsplit(|&b| b == b'\r')
            .find(|s| !s.is_empty())
            .unwrap_or(&[]);
        self.lines
            .push_back(String::from_utf8_lossy(shown).into_owned());
        if self.lines.len() > TAIL_LINES {
            self.lines.pop_front();
        }
    }

    pub fn finish(mut self) -> Vec<String> {
        if !self.partial.is_empty() {
            self.push_line();
        }
        self.lines.into()
    }
}

// Run a command, passing its output through and keeping the tail for errors.
fn command(mut c: Command, chroot: bool) -> Result<()> {
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC | nix::fcntl::OFlag::O_NONBLOCK)
        .map_err(Error::from)
        .context("pipe")?;
    // The write end must block in the child: only our read end is non-blocking.
    nix::fcntl::fcntl(
        &w,
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::empty()),
    )
    .map_err(Error::from)
    .context("pipe")?;
    let w2 = w.try_clone().context("pipe")?;
    c.stdin(Stdio::null())
        .stdout(Stdio::from(w))
        .stderr(Stdio::from(w2));
    let spawned = c.spawn();
    // Our copies of the write end must close, or the read never sees the end.
    drop(c);
    let mut child = spawned.map_err(|e| {
        if chroot && e.kind() == io::ErrorKind::NotFound {
            Error::new(
                Kind::NotFound,
                "/bin/sh is not in the root: a chroot stage needs a shell in the image",
            )
        } else {
            Error::from(e).context("start /bin/sh")
        }
    })?;
    let mut f = fs::File::from(r);
    let mut tail = Tail::default();
    let mut buf = vec![0u8; 64 * 1024];
    let mut err = io::stderr().lock();
    let mut exited: Option<(std::process::ExitStatus, Instant)> = None;
    loop {
        {
            use std::os::fd::AsFd;
            let mut fds = [nix::poll::PollFd::new(
                f.as_fd(),
                nix::poll::PollFlags::POLLIN,
            )];
            let _ = nix::poll::poll(&mut fds, 100u16);
        }
        let mut eof = false;
        loop {
            match f.read(&mut buf) {
                Ok(0) => {
                    eof = true;
                    break;
                }
                Ok(n) => {
                    let _ = err.write_all(&buf[..n]);
                    tail.feed(&buf[..n]);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::from(e).context("read the stage's output")),
            }
        }
        if eof {
            break;
        }
        if exited.is_none()
            && let Some(st) = child.try_wait().context("wait")?
        {
            exited = Some((st, Instant::now()));
        }
        if let Some((_, at)) = exited {
            // Something the stage started in the background still holds the
            // output open: do not wait for a daemon.
            if at.elapsed() > Duration::from_secs(2) {
                // It would go on changing the root while later stages and the
                // packing read it: stop the stage's whole process group.
                // SAFETY: kill(2) on the group our child leads.
                unsafe { libc::kill(-(child.id() as libc::pid_t), libc::SIGKILL) };
                let _ = writeln!(
                    err,
                    "(the stage left processes running that held its output; they were killed)"
                );
                break;
            }
        }
    }
    let _ = err.flush();
    let status = match exited {
        Some((st, _)) => st,
        None => child.wait().context("wait")?,
    };
    if status.success() {
        return Ok(());
    }
    let how = match (status.code(), status.signal()) {
        (Some(c), _) => format!("exit code {c}"),
        (None, Some(s)) => format!("killed by signal {s}"),
        _ => "an unknown status".to_string(),
    };
    let lines = tail.finish();
    let mut msg = format!("failed with {how}");
    if lines.is_empty() {
        msg.push_str(" and no output");
    } else {
        msg.push_str(&format!("; the last {} lines of its output:", lines.len()));
        for l in lines {
            msg.push_str("\n    ");
            msg.push_str(&l);
        }
    }
    Err(Error::new(Kind::Invalid, msg))
}

// Remove what is at `host` (not a directory) so a new entry can take its place;
// a symlink there is removed, never written through.
fn clear_entry(host: &Path, what: &str) -> Result<()> {
    match fs::symlink_metadata(host) {
        Ok(m) if m.is_dir() => Err(Error::new(
            Kind::Conflict,
            format!("{what}: a directory is in the way"),
        )),
        Ok(_) => fs::remove_file(host).with_context(|| format!("remove {}", host.display())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::from(e).context(host.display())),
    }
}

fn chown(ctx: &Ctx, host: &Path, owner: Option<(u32, u32)>) -> Result<()> {
    match owner {
        Some((uid, gid)) => berth::sys::apply(
            ctx.sys,
            &[Op::Chown {
                path: host.to_path_buf(),
                uid,
                gid,
            }],
        ),
        None => Ok(()),
    }
}

fn copy(ctx: &Ctx, it: &CopyItem) -> Result<()> {
    let sm = fs::metadata(&it.src).with_context(|| format!("copy {}", it.src.display()))?;
    let into = it.dest.ends_with('/')
        || ctx
            .root
            .resolve(Path::new(&it.dest), true)
            .ok()
            .and_then(|p| fs::symlink_metadata(p).ok())
            .is_some_and(|m| m.is_dir());
    let dest = if into {
        let name = it.src.file_name().ok_or_else(|| {
            Error::invalid(format!(
                "copy {}: no file name to copy into {}",
                it.src.display(),
                it.dest
            ))
        })?;
        Path::new(&it.dest).join(name)
    } else {
        PathBuf::from(&it.dest)
    };
    if sm.is_dir() {
        if let Some(parent) = dest.parent() {
            ctx.root.create_dir_all(parent, 0o755)?;
        }
        copy_tree(ctx, &it.src, &dest, it)
    } else if sm.is_file() {
        copy_file(ctx, &it.src, &dest, plain_mode(sm.mode(), false), it)
    } else {
        Err(Error::invalid(format!(
            "copy {}: only files and directories can be copied",
            it.src.display()
        )))
    }
}

fn copy_file(ctx: &Ctx, src: &Path, dest: &Path, src_mode: u32, it: &CopyItem) -> Result<()> {
    let host = ctx.root.prepare_parent(dest)?;
    clear_entry(&host, &dest.display().to_string())?;
    let mode = it.mode.unwrap_or(src_mode);
    let mut from = fs::File::open(src).with_context(|| format!("open {}", src.display()))?;
    let mut to = fs::File::options()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW)
        .mode(0o600)
        .open(&host)
        .with_context(|| format!("create {} in the root", dest.display()))?;
    io::copy(&mut from, &mut to)
        .with_context(|| format!("copy {} to {}", src.display(), dest.display()))?;
    drop(to);
    chown(ctx, &host, it.owner)?;
    // after chown, which clears set-id bits
    fs::set_permissions(&host, fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {}", dest.display()))
}

/// A copied entry's mode when the recipe gives none: 0644/0755 (directories and
/// executables), as git keeps them — the checkout's umask must not change the
/// image's bytes.
fn plain_mode(mode: u32, dir: bool) -> u32 {
    if dir || mode & 0o111 != 0 {
        0o755
    } else {
        0o644
    }
}

fn copy_tree(ctx: &Ctx, src: &Path, dest: &Path, it: &CopyItem) -> Result<()> {
    // A directory that is already in the root keeps its mode and owner.
    let existed = ctx
        .root
        .resolve(dest, false)
        .ok()
        .and_then(|p| fs::symlink_metadata(p).ok())
        .is_some_and(|m| m.is_dir());
    let host = ctx.root.create_dir_all(dest, 0o755)?;
    if !existed {
        chown(ctx, &host, it.owner)?;
        fs::set_permissions(&host, fs::Permissions::from_mode(plain_mode(0, true)))
            .with_context(|| format!("chmod {}", dest.display()))?;
    }
    let mut names: Vec<_> = fs::read_dir(src)
        .with_context(|| format!("read {}", src.display()))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<io::Result<_>>()
        .with_context(|| format!("read {}", src.display()))?;
    names.sort();
    for n in names {
        let (s, d) = (src.join(&n), dest.join(&n));
        let m = fs::symlink_metadata(&s).with_context(|| format!("lstat {}", s.display()))?;
        let ft = m.file_type();
        if ft.is_dir() {
            copy_tree(ctx, &s, &d, it)?;
        } else if ft.is_file() {
            copy_file(ctx, &s, &d, plain_mode(m.mode(), false), it)?;
        } else if ft.is_symlink() {
            // copied as a link: its target is data for the image, never followed here
            let target = fs::read_link(&s).with_context(|| format!("read link {}", s.display()))?;
            let h = ctx.root.prepare_parent(&d)?;
            clear_entry(&h, &d.display().to_string())?;
            std::os::unix::fs::symlink(&target, &h)
                .with_context(|| format!("link {}", d.display()))?;
            if let Some((uid, gid)) = it.owner {
                berth::sys::apply(ctx.sys, &[Op::Chown { path: h, uid, gid }])?;
            }
        } else {
            return Err(Error::invalid(format!(
                "copy {}: special files are not copied (use a devices stage)",
                s.display()
            )));
        }
    }
    Ok(())
}

/// Host path of a file the stage edits: the path resolved inside the root (a
/// final symlink followed, as the image would), its directory made if missing.
fn edited_file(ctx: &Ctx, file: &str) -> Result<(PathBuf, Option<fs::Metadata>)> {
    let rel = ctx.root.resolve_rel(Path::new(file), true)?;
    if let Some(parent) = rel.parent() {
        ctx.root.create_dir_all(parent, 0o755)?;
    }
    let host = ctx.root.path().join(&rel);
    match fs::symlink_metadata(&host) {
        Ok(m) if m.is_file() => Ok((host, Some(m))),
        Ok(_) => Err(Error::invalid(format!(
            "{file} (/{}) is not a regular file",
            rel.display()
        ))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok((host, None)),
        Err(e) => Err(Error::from(e).context(host.display())),
    }
}

fn append(ctx: &Ctx, it: &AppendItem) -> Result<()> {
    let (host, existing) = edited_file(ctx, &it.file)?;
    let needs_newline = match &existing {
        Some(m) if m.len() > 0 => {
            let mut f = fs::File::options()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&host)
                .with_context(|| format!("open {}", it.file))?;
            use std::io::{Seek, SeekFrom};
            f.seek(SeekFrom::End(-1)).context("seek")?;
            let mut last = [0u8; 1];
            f.read_exact(&mut last).context("read")?;
            last[0] != b'\n'
        }
        _ => false,
    };
    let mut text = String::new();
    if needs_newline {
        text.push('\n');
    }
    for l in &it.lines {
        text.push_str(l);
        text.push('\n');
    }
    let mut f = fs::File::options()
        .append(true)
        .create(true)
        .custom_flags(libc::O_NOFOLLOW)
        .mode(it.mode.unwrap_or(0o644))
        .open(&host)
        .with_context(|| format!("open {} in the root", it.file))?;
    f.write_all(text.as_bytes())
        .with_context(|| format!("append to {}", it.file))?;
    set_mode(
        &host,
        existing.is_none().then_some(it.mode.unwrap_or(0o644)),
    )
}

// A new file's mode (undoing the umask); an existing file keeps its own, so an
// append to /etc/shadow never loosens it.
fn set_mode(host: &Path, mode: Option<u32>) -> Result<()> {
    match mode {
        Some(m) => fs::set_permissions(host, fs::Permissions::from_mode(m))
            .with_context(|| format!("chmod {}", host.display())),
        None => Ok(()),
    }
}

/// `KEY=VALUE` lines set in a file's text: existing lines for a key are
/// replaced, missing keys appended, everything else kept as it is.
pub fn edit_lines(text: &str, values: &[(String, String)]) -> String {
    let mut used = vec![false; values.len()];
    let mut out = String::new();
    for line in text.lines() {
        let key = line.split_once('=').map(|(k, _)| k.trim());
        match key.and_then(|k| values.iter().position(|(vk, _)| vk == k)) {
            Some(i) => {
                used[i] = true;
                out.push_str(&format!("{}={}\n", values[i].0, values[i].1));
            }
            None => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    for (i, (k, v)) in values.iter().enumerate() {
        if !used[i] {
            out.push_str(&format!("{k}={v}\n"));
        }
    }
    out
}

fn set(ctx: &Ctx, it: &SetItem) -> Result<()> {
    let (host, existing) = edited_file(ctx, &it.file)?;
    let text = match &it.value {
        Some(v) if v.ends_with('\n') => v.clone(),
        Some(v) => format!("{v}\n"),
        None => {
            let old = if existing.is_some() {
                fs::read_to_string(&host).with_context(|| format!("read {}", it.file))?
            } else {
                String::new()
            };
            edit_lines(&old, &it.values)
        }
    };
    let mut f = fs::File::options()
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(libc::O_NOFOLLOW)
        .mode(it.mode.unwrap_or(0o644))
        .open(&host)
        .with_context(|| format!("open {} in the root", it.file))?;
    f.write_all(text.as_bytes())
        .with_context(|| format!("write {}", it.file))?;
    set_mode(
        &host,
        existing.is_none().then_some(it.mode.unwrap_or(0o644)),
    )
}

/// mknod and chown steps for the device nodes in `list` under the host
/// directory `dev`, skipping those `present` says are already right.
pub fn device_plan(dev: &Path, list: &[&Device], present: impl Fn(&Device) -> bool) -> Vec<Op> {
    let mut plan = Vec::new();
    for d in list {
        if let DevKind::Node(kind, major, minor) = d.kind {
            if present(d) {
                continue;
            }
            let path = dev.join(d.name);
            plan.push(Op::Mknod {
                path: path.clone(),
                kind,
                mode: d.mode,
                major,
                minor,
            });
            plan.push(Op::Chown {
                path,
                uid: 0,
                gid: 0,
            });
        }
    }
    plan
}

fn node_is(host: &Path, d: &Device) -> bool {
    let DevKind::Node(kind, major, minor) = d.kind else {
        return false;
    };
    let Ok(m) = fs::symlink_metadata(host) else {
        return false;
    };
    let ft = m.file_type();
    let right_type = match kind {
        berth::sys::NodeKind::Char => ft.is_char_device(),
        berth::sys::NodeKind::Block => ft.is_block_device(),
        berth::sys::NodeKind::Fifo => ft.is_fifo(),
    };
    right_type
        && m.rdev() == libc::makedev(major as u32, minor as u32)
        && m.mode() & 0o7777 == d.mode
        && m.uid() == 0
        && m.gid() == 0
}

fn devices(ctx: &Ctx, list: &[&Device]) -> Result<()> {
    let dev = ctx.root.create_dir_all(Path::new("/dev"), 0o755)?;
    for d in list {
        let host = dev.join(d.name);
        match &d.kind {
            DevKind::Node(..) => {
                if !node_is(&host, d) {
                    clear_entry(&host, &format!("/dev/{}", d.name))?;
                }
            }
            DevKind::Link(target) => {
                if fs::read_link(&host).is_ok_and(|t| t == Path::new(target)) {
                    continue;
                }
                clear_entry(&host, &format!("/dev/{}", d.name))?;
                std::os::unix::fs::symlink(target, &host)
                    .with_context(|| format!("link /dev/{}", d.name))?;
            }
            DevKind::Dir => {
                let h = ctx
                    .root
                    .create_dir_all(&Path::new("/dev").join(d.name), d.mode)?;
                fs::set_permissions(&h, fs::Permissions::from_mode(d.mode))
                    .with_context(|| format!("chmod /dev/{}", d.name))?;
            }
        }
    }
    let plan = device_plan(&dev, list, |d| node_is(&dev.join(d.name), d));
    berth::sys::apply(ctx.sys, &plan)
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth::image::recipe::DEVICES;
    use berth::sys::{NodeKind, Recorder};

    #[test]
    fn device_plan_is_the_minimal_dev() {
        let all: Vec<&Device> = DEVICES.iter().collect();
        let plan = device_plan(Path::new("/r/dev"), &all, |_| false);
        // eight nodes, each made then owned by root
        assert_eq!(plan.len(), 16);
        assert!(plan.contains(&Op::Mknod {
            path: "/r/dev/ptmx".into(),
            kind: NodeKind::Char,
            mode: 0o666,
            major: 5,
            minor: 2
        }));
        assert!(plan.contains(&Op::Mknod {
            path: "/r/dev/console".into(),
            kind: NodeKind::Char,
            mode: 0o600,
            major: 5,
            minor: 1
        }));
        assert_eq!(
            plan[1],
            Op::Chown {
                path: "/r/dev/null".into(),
                uid: 0,
                gid: 0
            }
        );
        // nodes already right are left alone
        let plan = device_plan(Path::new("/r/dev"), &all, |d| d.name != "null");
        assert_eq!(plan.len(), 2);
        let r = Recorder::new();
        berth::sys::apply(&r, &plan).unwrap();
        assert_eq!(r.taken(), plan);
    }

    #[test]
    fn chroot_plans_isolate_then_enter() {
        assert!(
            matches!(isolate_plan(false)[0], Op::Unshare(f) if f & libc::CLONE_NEWPID == 0 && f & libc::CLONE_NEWNS != 0)
        );
        let iso = isolate_plan(true);
        assert!(
            matches!(iso[0], Op::Unshare(f) if f & libc::CLONE_NEWPID != 0 && f & libc::CLONE_NEWUTS != 0 && f & libc::CLONE_NEWNS != 0)
        );
        let mut plan = iso;
        plan.extend(enter_plan(
            Path::new("/g/tmp/r"),
            Some(Path::new("/g/tmp/r/proc")),
        ));
        assert!(matches!(&plan[1], Op::Mount { target, flags, .. }
            if target == Path::new("/") && *flags == (libc::MS_REC | libc::MS_PRIVATE)));
        assert!(matches!(&plan[2], Op::Mount { fstype: Some(t), target, .. }
            if t == "proc" && target == Path::new("/g/tmp/r/proc")));
        assert_eq!(plan[3], Op::Chroot("/g/tmp/r".into()));
        assert_eq!(enter_plan(Path::new("/r"), None).len(), 1);
        // a failing step stops the plan before chroot
        let r = Recorder::failing_at(1);
        assert!(berth::sys::apply(&r, &plan).is_err());
        assert_eq!(r.taken().len(), 1);
    }

    #[test]
    fn edit_lines_replaces_and_appends() {
        let v = vec![
            ("mirror".to_string(), "http://m/".to_string()),
            ("new".to_string(), "1".to_string()),
        ];
        assert_eq!(
            edit_lines("# c\nmirror = nfs\nother=x\n", &v),
            "# c\nmirror=http://m/\nother=x\nnew=1\n"
        );
        assert_eq!(edit_lines("", &v), "mirror=http://m/\nnew=1\n");
    }

    #[test]
    fn tail_keeps_the_last_lines_as_shown() {
        let mut t = Tail::default();
        for i in 0..30 {
            t.feed(format!("line {i}\n").as_bytes());
        }
        t.feed(b"progress 10%\rprogress 100%\rdone");
        let l = t.finish();
        assert_eq!(l.len(), TAIL_LINES);
        assert_eq!(l[0], "line 11");
        assert_eq!(l.last().unwrap(), "done");
        assert_eq!(l[l.len() - 2], "line 29");
    }
}

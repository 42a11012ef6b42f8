//! The Docker Engine API v1.41 router: versioned (`/v1.41/…`) and unversioned
//! paths, errors as `{"message": …}` with the swagger's statuses, and the
//! handlers of `containers`, `exec`, `images` and the system endpoints here.

use super::Engine;
use super::containers::{self, LogsQuery, Outcome, Pending};
use super::model::{CreateBody, ExecConfig};
use berth::error::{Error, Kind};
use berth::http::server::{Handler, Request, Response};
use serde_json::{Value, json};
use std::sync::Arc;

/// The API version engined speaks; newer clients negotiate down to it.
pub const API_VERSION: &str = "1.41";
const MIN_API_VERSION: &str = "1.12";

pub struct Api {
    e: Arc<Engine>,
}

impl Api {
    pub fn new(e: Arc<Engine>) -> Api {
        Api { e }
    }
}

fn err(status: u16, msg: impl Into<String>) -> Response {
    Response::new(status).json(&json!({"message": msg.into()}))
}

/// An error as the API answers it.
fn fail(e: &Error) -> Response {
    let status = match e.kind() {
        Kind::NotFound => 404,
        Kind::Conflict => 409,
        Kind::Invalid | Kind::Usage | Kind::Config | Kind::Digest => 400,
        Kind::Denied => 403,
        Kind::Unsupported => 400,
        _ => 500,
    };
    if status == 500 {
        log::error!("{e}");
    }
    err(status, e.to_string())
}

fn ok_json(v: &Value) -> Response {
    Response::new(200).json(v)
}

fn no_content() -> Response {
    Response::new(204)
}

fn flag(req: &Request, k: &str) -> bool {
    matches!(req.query(k), Some("1" | "true" | "True" | "yes"))
}

fn read_json<T: for<'de> serde::Deserialize<'de> + Default>(
    req: &mut Request,
) -> Result<T, Response> {
    let body = req
        .read_body(16 << 20)
        .map_err(|e| err(400, e.to_string()))?;
    if body.iter().all(|b| b.is_ascii_whitespace()) {
        return Ok(T::default());
    }
    serde_json::from_slice(&body).map_err(|e| err(400, format!("invalid JSON: {e}")))
}

fn unix_time(s: &str) -> Option<std::time::SystemTime> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    let (secs, nanos) = match s.split_once('.') {
        Some((a, b)) => (
            a.parse::<i64>().ok()?,
            format!("{b:0<9}")[..9].parse::<u32>().ok()?,
        ),
        None => match s.parse::<i64>() {
            Ok(n) => (n, 0),
            Err(_) => (super::state::parse_time(s)?, 0),
        },
    };
    Some(std::time::UNIX_EPOCH + std::time::Duration::new(secs.max(0) as u64, nanos))
}

impl Handler for Api {
    fn handle(&self, req: &mut Request) -> Response {
        let path = berth::http::percent_decode(&req.path, false).unwrap_or_default();
        // `/v1.41/containers/json` and `/containers/json` are the same.
        let path = match path.strip_prefix("/v") {
            Some(rest) if rest.starts_with(|c: char| c.is_ascii_digit()) => {
                let (ver, rest) = rest.split_once('/').unwrap_or((rest, ""));
                if ver
                    .split('.')
                    .next()
                    .and_then(|m| m.parse::<u32>().ok())
                    .is_none()
                {
                    return err(400, format!("malformed version {ver}"));
                }
                format!("/{rest}")
            }
            _ => path,
        };
        let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
        let m = req.method.clone();
        let e = self.e.clone();
        let res = match (m.as_str(), segs.as_slice()) {
            ("GET" | "HEAD", ["_ping"]) => Ok(Response::new(200)
                .bytes("text/plain; charset=utf-8", b"OK".to_vec())
                .header("API-Version", API_VERSION)
                .header("Docker-Experimental", "false")
                .header("OSType", "linux")
                .header("Cache-Control", "no-cache, no-store, must-revalidate")
                .header("Pragma", "no-cache")),
            ("GET", ["version"]) => Ok(ok_json(&version())),
            ("GET", ["info"]) => Ok(ok_json(&info(&e))),
            ("POST", ["auth"]) => {
                let body: Value = match read_json(req) {
                    Ok(b) => b,
                    Err(r) => return r,
                };
                return login(&e, &body);
            }
            ("GET", ["events"]) => events(&e, req),
            ("GET", ["containers", "json"]) => containers::filters(req.query("filters"))
                .and_then(|f| {
                    containers::list(
                        &e,
                        flag(req, "all"),
                        req.query("limit")
                            .and_then(|l| l.parse::<i64>().ok())
                            .filter(|l| *l > 0)
                            .map(|l| l as usize),
                        flag(req, "size"),
                        &f,
                    )
                })
                .map(|v| ok_json(&v)),
            ("POST", ["containers", "create"]) => {
                let body: CreateBody = match read_json(req) {
                    Ok(b) => b,
                    Err(r) => return r,
                };
                containers::create(&e, req.query("name"), body)
                    .map(|(id, w)| Response::new(201).json(&json!({"Id": id, "Warnings": w})))
            }
            (_, ["containers", what, rest @ ..]) => match containers::resolve(&e, what) {
                Err(x) => Err(x),
                Ok(id) => self.container(req, &id, &m, rest),
            },
            ("POST", ["exec", id, "start"]) => self.exec_start(req, id),
            ("POST", ["exec", id, "resize"]) => super::exec::get(&e, id).and_then(|x| {
                let (h, w) = size(req);
                super::exec::resize(&x, h, w).map(|_| Response::new(200))
            }),
            ("GET", ["exec", id, "json"]) => {
                super::exec::get(&e, id).map(|x| ok_json(&super::exec::inspect(&x)))
            }
            ("GET", ["images", "json"]) => containers::filters(req.query("filters"))
                .and_then(|f| super::images::list(&e, &f))
                .map(|v| ok_json(&v)),
            ("POST", ["images", "create"]) => self.images_create(req),
            ("POST", ["images", "load"]) => spool(&e, req)
                .and_then(|body| super::images::load(&e, body))
                .map(|v| ok_json(&v)),
            ("GET", ["images", "get"]) => {
                let names: Vec<String> = req
                    .query
                    .iter()
                    .filter(|(k, _)| k == "names")
                    .map(|(_, v)| v.clone())
                    .collect();
                super::images::save(&e, names).map(|r| {
                    Response::new(200)
                        .header("Content-Type", "application/x-tar")
                        .chunked(r)
                })
            }
            ("GET", ["images", rest @ .., "json"]) if !rest.is_empty() => {
                super::images::inspect(&e, &rest.join("/")).map(|v| ok_json(&v))
            }
            ("GET", ["images", rest @ .., "history"]) if !rest.is_empty() => {
                super::images::history(&e, &rest.join("/")).map(|v| ok_json(&v))
            }
            ("POST", ["images", rest @ .., "tag"]) if !rest.is_empty() => super::images::tag(
                &e,
                &rest.join("/"),
                req.query("repo").unwrap_or(""),
                req.query("tag"),
            )
            .map(|_| Response::new(201)),
            ("POST", ["images", rest @ .., "push"]) if !rest.is_empty() => {
                let auth = super::images::registry_auth(req.header("X-Registry-Auth"));
                super::images::push(&e, &rest.join("/"), req.query("tag"), auth).map(|r| {
                    Response::new(200)
                        .header("Content-Type", "application/json")
                        .chunked(r)
                })
            }
            ("DELETE", ["images", rest @ ..]) if !rest.is_empty() => {
                super::images::remove(&e, &rest.join("/"), flag(req, "force")).map(|v| ok_json(&v))
            }
            _ => Err(Error::not_found(format!("page not found: {} {path}", m))),
        };
        res.unwrap_or_else(|x| fail(&x))
    }

    fn on_panic(&self) -> Response {
        err(500, "internal error (engined's log has the details)")
    }
}

fn size(req: &Request) -> (u16, u16) {
    (
        req.query("h").and_then(|v| v.parse().ok()).unwrap_or(24),
        req.query("w").and_then(|v| v.parse().ok()).unwrap_or(80),
    )
}

/// The request body as an owned reader (imports and loads run past the
/// request's borrow): spooled to an unlinked file in the store's tmp/, so an
/// image of gigabytes costs disk, not memory.
fn spool(e: &Engine, req: &mut Request) -> berth::Result<Box<dyn std::io::Read + Send>> {
    use std::io::Seek;
    let path = e
        .store
        .root()
        .join("tmp")
        .join(format!("body-{}", berth::util::uuid4()));
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(|x| Error::from(x).context(path.display().to_string()))?;
    let _ = std::fs::remove_file(&path);
    std::io::copy(&mut req.body(), &mut f)
        .map_err(|x| Error::with_source(Kind::Network, "reading the request body", x))?;
    f.rewind()?;
    Ok(Box::new(f))
}

impl Api {
    fn container(
        &self,
        req: &mut Request,
        id: &str,
        m: &str,
        rest: &[&str],
    ) -> berth::Result<Response> {
        let e = &self.e;
        match (m, rest) {
            ("GET", ["json"]) => containers::inspect(e, id).map(|v| ok_json(&v)),
            ("GET", ["top"]) => containers::top(e, id).map(|v| ok_json(&v)),
            ("POST", ["start"]) => containers::start(e, id).map(|o| match o {
                Outcome::Done => no_content(),
                Outcome::NotModified => Response::new(304),
            }),
            ("POST", ["stop"]) => {
                containers::stop(e, id, req.query("t").and_then(|t| t.parse().ok())).map(
                    |o| match o {
                        Outcome::Done => no_content(),
                        Outcome::NotModified => Response::new(304),
                    },
                )
            }
            ("POST", ["restart"]) => {
                containers::stop(e, id, req.query("t").and_then(|t| t.parse().ok()))?;
                containers::start(e, id)?;
                if let Ok(r) = e.dir.load_record(id) {
                    containers::emit(e, "restart", &r, vec![]);
                }
                Ok(no_content())
            }
            ("POST", ["kill"]) => containers::kill(e, id, req.query("signal").unwrap_or("SIGKILL"))
                .map(|_| no_content()),
            ("POST", ["wait"]) => {
                let f = containers::wait(e, id, req.query("condition").unwrap_or("not-running"))?;
                Ok(Response::new(200)
                    .header("Content-Type", "application/json")
                    .chunked(Box::new(Deferred::new(move || {
                        let mut v = serde_json::to_vec(&f()).unwrap_or_default();
                        v.push(b'\n');
                        v
                    }))))
            }
            ("POST", ["rename"]) => {
                containers::rename(e, id, req.query("name").unwrap_or("")).map(|_| no_content())
            }
            ("POST", ["resize"]) => {
                let (h, w) = size(req);
                containers::resize(e, id, h, w).map(|_| Response::new(200))
            }
            ("DELETE", []) => containers::remove(e, id, flag(req, "force")).map(|_| no_content()),
            ("GET", ["logs"]) => {
                let q = LogsQuery {
                    follow: flag(req, "follow"),
                    stdout: flag(req, "stdout"),
                    stderr: flag(req, "stderr"),
                    tail: req.query("tail").and_then(|t| t.parse().ok()),
                    timestamps: flag(req, "timestamps"),
                    since: req.query("since").and_then(unix_time),
                    until: req.query("until").and_then(unix_time),
                };
                if !q.stdout && !q.stderr {
                    return Err(Error::invalid("You must choose at least one stream"));
                }
                let tty = e.dir.load_record(id).map(|r| r.config.tty).unwrap_or(false);
                let ct = if tty {
                    "application/vnd.docker.raw-stream"
                } else {
                    "application/vnd.docker.multiplexed-stream"
                };
                containers::logs(e, id, q)
                    .map(|r| Response::new(200).header("Content-Type", ct).chunked(r))
            }
            ("POST", ["attach"]) => {
                if !req.is_upgrade() {
                    return Err(Error::invalid(
                        "attach needs a connection upgrade (Connection: Upgrade, Upgrade: tcp)",
                    ));
                }
                let stdin = flag(req, "stdin");
                let stdout = flag(req, "stdout");
                let stderr = flag(req, "stderr");
                let tty = e.dir.load_record(id).map(|r| r.config.tty).unwrap_or(false);
                // Registered before the 101 goes out: the client's start may
                // come before the connection is handed over.
                let slot = containers::attach_later(e, id, stdin, stdout, stderr)?;
                let e2 = e.clone();
                let id2 = id.to_string();
                Ok(Response::new(101)
                    .header(
                        "Content-Type",
                        if tty {
                            "application/vnd.docker.raw-stream"
                        } else {
                            "application/vnd.docker.multiplexed-stream"
                        },
                    )
                    .upgrade(move |up| match slot {
                        Some(slot) => slot.fill(up),
                        None => {
                            let p = Pending {
                                stdin,
                                stdout,
                                stderr,
                                up,
                            };
                            if let Err(x) = containers::attach_running(&e2, &id2, p) {
                                log::warn!("attach {id2}: {x}");
                            }
                        }
                    }))
            }
            ("POST", ["exec"]) => {
                let cfg: ExecConfig = match read_json(req) {
                    Ok(c) => c,
                    Err(r) => return Ok(r),
                };
                super::exec::create(e, id, cfg).map(|x| Response::new(201).json(&json!({"Id": x})))
            }
            _ => Err(Error::not_found(format!(
                "page not found: {m} /containers/{id}/{}",
                rest.join("/")
            ))),
        }
    }

    fn exec_start(&self, req: &mut Request, id: &str) -> berth::Result<Response> {
        #[derive(serde::Deserialize, Default)]
        #[serde(rename_all = "PascalCase", default)]
        struct Start {
            detach: bool,
        }
        let e = self.e.clone();
        let x = super::exec::get(&e, id)?;
        let st: Start = match read_json(req) {
            Ok(s) => s,
            Err(r) => return Ok(r),
        };
        if st.detach || !req.is_upgrade() {
            super::exec::start(&e, x, None)?;
            return Ok(Response::new(200));
        }
        let ct = if x.cfg.tty {
            "application/vnd.docker.raw-stream"
        } else {
            "application/vnd.docker.multiplexed-stream"
        };
        if x.st.lock().unwrap().started {
            return Err(Error::new(
                Kind::Conflict,
                format!("Error: Exec command {id} has already run"),
            ));
        }
        Ok(Response::new(101)
            .header("Content-Type", ct)
            .upgrade(move |up| {
                let id = x.id.clone();
                if let Err(err) = super::exec::start(&e, x, Some(up)) {
                    log::warn!("exec {id}: {err}");
                }
            }))
    }

    fn images_create(&self, req: &mut Request) -> berth::Result<Response> {
        let e = self.e.clone();
        if let Some(src) = req.query("fromSrc").map(str::to_string) {
            if src != "-" {
                return Err(Error::invalid(
                    "fromSrc: only - (the request body) is supported",
                ));
            }
            let repo = req.query("repo").map(str::to_string);
            let tag = req.query("tag").map(str::to_string);
            let message = req.query("message").map(str::to_string);
            let changes: Vec<String> = req
                .query
                .iter()
                .filter(|(k, _)| k == "changes")
                .map(|(_, v)| v.clone())
                .collect();
            let body = spool(&e, req)?;
            let v = super::images::import(
                &e,
                body,
                repo.as_deref(),
                tag.as_deref(),
                message.as_deref(),
                changes,
            )?;
            let mut line = serde_json::to_vec(&v).unwrap_or_default();
            line.extend_from_slice(b"\r\n");
            return Ok(Response::new(200).bytes("application/json", line));
        }
        let Some(image) = req.query("fromImage").map(str::to_string) else {
            return Err(Error::invalid("fromImage or fromSrc is required"));
        };
        let auth = super::images::registry_auth(req.header("X-Registry-Auth"));
        let r = super::images::pull(&e, &image, req.query("tag"), auth)?;
        Ok(Response::new(200)
            .header("Content-Type", "application/json")
            .chunked(r))
    }
}

/// A body produced once, when the stream is first read (the wait's answer).
struct Deferred {
    f: Option<Box<dyn FnOnce() -> Vec<u8> + Send>>,
    buf: std::io::Cursor<Vec<u8>>,
}

impl Deferred {
    fn new(f: impl FnOnce() -> Vec<u8> + Send + 'static) -> Deferred {
        Deferred {
            f: Some(Box::new(f)),
            buf: std::io::Cursor::new(Vec::new()),
        }
    }
}

impl std::io::Read for Deferred {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if let Some(f) = self.f.take() {
            self.buf = std::io::Cursor::new(f());
        }
        self.buf.read(out)
    }
}

fn version() -> Value {
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_string();
    json!({
        "Platform": {"Name": "berth"},
        "Components": [{"Name": "Engine", "Version": berth::VERSION, "Details": {
            "ApiVersion": API_VERSION, "Arch": "amd64", "BuildTime": "", "Experimental": "false",
            "GitCommit": "", "GoVersion": "", "KernelVersion": kernel, "MinAPIVersion": MIN_API_VERSION, "Os": "linux"}}],
        "Version": berth::VERSION,
        "ApiVersion": API_VERSION,
        "MinAPIVersion": MIN_API_VERSION,
        "GitCommit": "",
        "GoVersion": "",
        "Os": "linux",
        "Arch": "amd64",
        "KernelVersion": kernel,
        "BuildTime": "",
    })
}

/// `POST /auth` (`docker login`): the credentials checked against the
/// registry as a pull would use them. Nothing is stored: the CLI keeps them
/// and sends them with each pull and push (X-Registry-Auth), as with dockerd.
fn login(e: &Engine, body: &Value) -> Response {
    let s = |k: &str| body.get(k).and_then(Value::as_str).unwrap_or("");
    let (user, pass) = (s("username"), s("password"));
    if user.is_empty() || pass.is_empty() {
        return err(400, "username and password are required");
    }
    let host = berth::registry::settings::server_host(s("serveraddress"));
    let checked = berth::registry::client::Registry::new(&host, &e.s.registries)
        .and_then(|r| r.with_credentials(user, pass).ping());
    match checked {
        Ok(()) => {
            log::info!("login to {host} as {user} succeeded");
            ok_json(&json!({"Status": "Login Succeeded", "IdentityToken": ""}))
        }
        Err(x) if matches!(x.kind(), Kind::Auth) => {
            log::info!("login to {host} as {user} refused");
            err(401, x.to_string())
        }
        Err(x) => fail(&x),
    }
}

fn info(e: &Engine) -> Value {
    let ids = e.dir.ids();
    let states: Vec<String> = ids
        .iter()
        .filter_map(|id| e.dir.load_state(id).ok())
        .map(|s| s.status)
        .collect();
    let running = states
        .iter()
        .filter(|s| *s == "running" || *s == "restarting")
        .count();
    let images = e.store.refs().map(|r| r.images.len()).unwrap_or(0);
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| {
                    l.split_whitespace()
                        .nth(1)
                        .and_then(|k| k.parse::<u64>().ok())
                })
        })
        .unwrap_or(0)
        * 1024;
    let v2 = berth::cgroup::Layout::detect()
        .map(|l| l.is_v2())
        .unwrap_or(false);
    let first = json!({
        "ID": "",
        "Containers": ids.len(),
        "ContainersRunning": running,
        "ContainersPaused": 0,
        "ContainersStopped": ids.len() - running,
        "Images": images,
        "Driver": if e.s.copy_rootfs { "vfs" } else { "overlay" },
        "DriverStatus": [["Backing Filesystem", "layer cache"]],
        "Plugins": {"Volume": [], "Network": ["bridge", "host", "none"], "Log": ["json-file", "none"]},
        "MemoryLimit": true,
        "SwapLimit": true,
        "CpuCfsPeriod": true,
        "CpuCfsQuota": true,
        "CPUShares": true,
        "CPUSet": true,
        "PidsLimit": true,
        "IPv4Forwarding": true,
        "Debug": false,
        "OomKillDisable": false,
    });
    // (two objects: one json! of all of it passes the macro's recursion limit)
    let more = json!({
        "LoggingDriver": if e.s.log_json { "json-file" } else { "none" },
        "CgroupDriver": "cgroupfs",
        "CgroupVersion": if v2 { "2" } else { "1" },
        "KernelVersion": std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim(),
        "OperatingSystem": "berth engined",
        "OSType": "linux",
        "Architecture": "x86_64",
        "NCPU": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        "MemTotal": mem,
        "DockerRootDir": e.s.graph,
        "Name": std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default().trim(),
        "Labels": [],
        "ExperimentalBuild": false,
        "ServerVersion": berth::VERSION,
        "Runtimes": {"berth": {"path": e.exe}},
        "DefaultRuntime": "berth",
        "Swarm": {"LocalNodeState": "inactive"},
        "LiveRestoreEnabled": true,
        "Isolation": "",
        "SecurityOptions": if e.s.userns { vec!["name=userns", "name=no-new-privileges"] } else { vec!["name=no-new-privileges"] },
        "RegistryConfig": {"InsecureRegistryCIDRs": ["127.0.0.0/8"], "IndexConfigs": {}, "Mirrors": []},
        "Warnings": if e.s.userns { Value::Array(vec![]) } else { json!(["user namespaces are off on this host: containers with SYS_ADMIN could remount read-only binds"]) },
    });
    let mut v = first;
    if let (Some(a), Value::Object(b)) = (v.as_object_mut(), more) {
        a.extend(b);
    }
    v
}

/// `GET /events?since=&until=&filters=`: kept events then new ones, one JSON
/// object per line, until `until` (or for ever).
fn events(e: &Arc<Engine>, req: &Request) -> berth::Result<Response> {
    let since = req.query("since").and_then(unix_time);
    let until = req.query("until").and_then(unix_time);
    let filt = containers::filters(req.query("filters"))?;
    let e = e.clone();
    let nanos = |t: std::time::SystemTime| {
        t.duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos()
    };
    let since_n = since.map(nanos);
    let until_n = until.map(nanos);
    let keep = move |ev: &super::events::Event| -> bool {
        filt.iter().all(|(k, vals)| {
            vals.is_empty()
                || vals.iter().any(|v| match k.as_str() {
                    "type" => ev.kind == v,
                    "event" => ev.action == *v || ev.action.starts_with(&format!("{v}:")),
                    "container" => {
                        ev.kind == "container"
                            && (ev.id.starts_with(v.as_str())
                                || ev.attr("name") == Some(v.as_str()))
                    }
                    "image" => ev.attr("image") == Some(v.as_str()) || ev.id == *v,
                    "label" => match v.split_once('=') {
                        Some((a, b)) => ev.attr(a) == Some(b),
                        None => ev.attr(v).is_some(),
                    },
                    _ => true,
                })
        })
    };
    let (mut seq, kept) = if since_n.is_some() {
        e.events.kept()
    } else {
        (e.events.head(), Vec::new())
    };
    let mut queue: std::collections::VecDeque<super::events::Event> = kept
        .into_iter()
        .filter(|ev| since_n.is_none_or(|s| ev.time_nano >= s))
        .collect();
    let reader = EventReader {
        next: Box::new(move || {
            loop {
                if let Some(ev) = queue.pop_front() {
                    if until_n.is_some_and(|u| ev.time_nano > u) {
                        return None;
                    }
                    if keep(&ev) {
                        let mut line = serde_json::to_vec(&ev.json()).unwrap_or_default();
                        line.push(b'\n');
                        return Some(line);
                    }
                    continue;
                }
                if until_n.is_some_and(|u| nanos(std::time::SystemTime::now()) > u) {
                    return None;
                }
                let (s, evs) = e.events.after(seq, std::time::Duration::from_secs(1));
                seq = s;
                queue.extend(evs);
            }
        }),
        buf: std::io::Cursor::new(Vec::new()),
    };
    Ok(Response::new(200)
        .header("Content-Type", "application/json")
        .chunked(Box::new(reader)))
}

struct EventReader {
    next: Box<dyn FnMut() -> Option<Vec<u8>> + Send>,
    buf: std::io::Cursor<Vec<u8>>,
}

impl std::io::Read for EventReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if self.buf.position() as usize >= self.buf.get_ref().len() {
            match (self.next)() {
                Some(v) => self.buf = std::io::Cursor::new(v),
                None => return Ok(0),
            }
        }
        self.buf.read(out)
    }
}

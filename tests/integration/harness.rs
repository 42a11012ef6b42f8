//! Shared test harness: temp dirs, the binary under test, free ports, a test CA,
//! a registryd fixture, and an HTTP client that trusts the test CA.

#![allow(dead_code)]

use std::io::Read;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The berth binary under test: `BERTH_BIN` (make test points it at dist/berth),
/// else the one cargo built for this test run.
pub fn bin() -> PathBuf {
    match std::env::var_os("BERTH_BIN") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(env!("CARGO_BIN_EXE_berth")),
    }
}

pub fn berth(args: &[&str]) -> Command {
    let mut c = Command::new(bin());
    c.args(args);
    crate::oldkernel::apply(&mut c);
    c
}

/// Run berth and capture everything.
pub fn run(args: &[&str]) -> Output {
    berth(args).output().expect("run berth")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A directory removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("berth-it-{tag}-{}", berth::util::uuid4()));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
    pub fn join(&self, p: &str) -> PathBuf {
        self.0.join(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A port nobody listens on right now, never the same one twice in a run.
///
/// Ports come from 20000–32767, below Linux's ephemeral range (32768–60999), so
/// no outgoing connection of a test can be given one by the kernel meanwhile; a
/// counter keeps two tests of this run apart, and the pid spreads concurrent runs.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    const BASE: u32 = 20000;
    const SPAN: u32 = 12768;
    let start = std::process::id().wrapping_mul(7919) % SPAN;
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        assert!(n < SPAN, "no free port left for this test run");
        let port = (BASE + (start + n) % SPAN) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// Poll `check` until it gives a value, failing with `what` after a generous
/// deadline (a loaded machine is slow, not wrong).
pub fn wait_for<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A TLS connection to a test server, trusting the test CA.
pub fn tls_connect(port: u16) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    use rustls_pki_types::pem::PemObject;
    berth::tls::provider();
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(&pki().ca).unwrap();
    for c in rustls_pki_types::CertificateDer::pem_slice_iter(&pem) {
        roots.add(c.unwrap()).unwrap();
    }
    let cfg = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let conn = rustls::ClientConnection::new(
        std::sync::Arc::new(cfg),
        rustls_pki_types::ServerName::try_from("localhost").unwrap(),
    )
    .unwrap();
    let sock = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut s = rustls::StreamOwned::new(conn, sock);
    while s.conn.is_handshaking() {
        s.conn.complete_io(&mut s.sock).unwrap();
    }
    s
}

pub fn wait_port(port: u16, child: &mut Child, log: &Path) {
    // as generous as wait_for: a loaded machine starts servers slowly
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        if let Ok(Some(st)) = child.try_wait() {
            panic!(
                "server exited with {st}: {}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!(
        "server did not listen on {port}: {}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

/// A test CA and a server certificate for localhost/127.0.0.1, made once per run.
pub struct Pki {
    pub dir: PathBuf,
    /// A certs.d-style directory holding only ca.crt.
    pub ca_dir: PathBuf,
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

pub fn pki() -> &'static Pki {
    static P: OnceLock<Pki> = OnceLock::new();
    P.get_or_init(|| {
        // cargo's per-target scratch space, not /tmp; runs that ended leave nothing
        let base = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"));
        if let Ok(rd) = std::fs::read_dir(base) {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let pid = name.strip_prefix("pki-").and_then(|p| p.parse::<u32>().ok());
                if pid.is_some_and(|p| !Path::new(&format!("/proc/{p}")).exists()) {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
        let dir = base.join(format!("pki-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let sh = |cmd: &str| {
            let o = Command::new("sh").arg("-c").arg(cmd).current_dir(&dir).output().expect("openssl");
            assert!(o.status.success(), "{cmd}: {}", String::from_utf8_lossy(&o.stderr));
        };
        sh("openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 3650 -subj /CN=berth-test-ca \
            -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null");
        sh("openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj /CN=localhost 2>/dev/null");
        std::fs::write(
            dir.join("ext.cnf"),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth,clientAuth\n",
        )
        .unwrap();
        sh("openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out server.crt -days 3650 -extfile ext.cnf 2>/dev/null");
        let ca_dir = dir.join("ca-only");
        std::fs::create_dir_all(&ca_dir).unwrap();
        std::fs::copy(dir.join("ca.crt"), ca_dir.join("ca.crt")).unwrap();
        Pki { ca: dir.join("ca.crt"), cert: dir.join("server.crt"), key: dir.join("server.key"), ca_dir, dir }
    })
}

pub const USER: &str = "t1user";
pub const PASS: &str = "s3cret-pass";

/// Options of a registryd under test.
pub struct RegOpts {
    /// Run Debian's docker-registry (Distribution 2.8) instead of registryd.
    pub distribution: bool,
    pub tls: bool,
    pub auth: bool,
    pub delete: bool,
    /// Extra YAML appended at the top level.
    pub extra: String,
    pub env: Vec<(String, String)>,
    /// Flags for registryd before the config file.
    pub args: Vec<String>,
    /// The storage driver's YAML (under `storage:`) instead of a directory.
    pub storage: Option<String>,
}

impl Default for RegOpts {
    fn default() -> Self {
        RegOpts {
            distribution: false,
            tls: true,
            auth: true,
            delete: true,
            extra: String::new(),
            env: Vec::new(),
            args: Vec::new(),
            storage: None,
        }
    }
}

/// A running registryd on a free loopback port.
pub struct Registryd {
    pub dir: TempDir,
    pub port: u16,
    pub child: Child,
    pub log: PathBuf,
    pub root: PathBuf,
    pub config: PathBuf,
    pub tls: bool,
    pub auth: bool,
    pub distribution: bool,
    pub args: Vec<String>,
}

impl Registryd {
    pub fn start(o: RegOpts) -> Registryd {
        let dir = TempDir::new("reg");
        let root = dir.join("data");
        let port = free_port();
        let driver = o
            .storage
            .clone()
            .unwrap_or_else(|| format!("  filesystem:\n    rootdirectory: {}\n", root.display()));
        let mut y = format!(
            "version: 0.1\nlog:\n  level: debug\n  formatter: text\nstorage:\n{driver}  delete:\n    enabled: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
            o.delete
        );
        if o.tls {
            let p = pki();
            y += &format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                p.cert.display(),
                p.key.display()
            );
        }
        if o.auth {
            let pw = dir.join("htpasswd");
            std::fs::write(
                &pw,
                berth::auth::htpasswd::entry(USER, PASS).unwrap() + "\n",
            )
            .unwrap();
            y += &format!(
                "auth:\n  htpasswd:\n    realm: basic-realm\n    path: {}\n",
                pw.display()
            );
        }
        y += &o.extra;
        let config = dir.join("config.yml");
        std::fs::write(&config, y).unwrap();
        let mut r = Registryd {
            port,
            child: spawn_placeholder(),
            log: dir.join("registryd.log"),
            root,
            config,
            tls: o.tls,
            auth: o.auth,
            distribution: o.distribution,
            args: o.args.clone(),
            dir,
        };
        r.child = r.spawn(&o.env);
        r
    }

    fn spawn(&self, env: &[(String, String)]) -> Child {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let mut c = if self.distribution {
            need("docker-registry");
            let mut c = Command::new("docker-registry");
            c.args(["serve", self.config.to_str().unwrap()]);
            // Its S3 driver reads AWS_* (and panics on a stray AWS_CA_BUNDLE):
            // it gets only what its config says.
            for (k, _) in std::env::vars() {
                if k.starts_with("AWS_") {
                    c.env_remove(k);
                }
            }
            c
        } else {
            let mut c = berth(&["registryd"]);
            c.args(&self.args).arg(&self.config);
            c
        };
        c.stdout(log.try_clone().unwrap()).stderr(log);
        for (k, v) in env {
            c.env(k, v);
        }
        let mut child = c.spawn().expect("spawn registryd");
        wait_port(self.port, &mut child, &self.log);
        child
    }

    /// kill -9 and start again on the same storage and port.
    pub fn crash_and_restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = self.spawn(&[]);
    }

    pub fn host(&self) -> String {
        format!("localhost:{}", self.port)
    }
    pub fn base(&self) -> String {
        format!(
            "{}://localhost:{}",
            if self.tls { "https" } else { "http" },
            self.port
        )
    }
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base())
    }
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
    /// An HTTP client for this registry, logged in when auth is on.
    pub fn client(&self) -> Client {
        Client {
            agent: agent(),
            auth: self.auth.then(|| basic(USER, PASS)),
        }
    }
    pub fn anonymous(&self) -> Client {
        Client {
            agent: agent(),
            auth: None,
        }
    }
}

fn spawn_placeholder() -> Child {
    Command::new("true").spawn().unwrap()
}

impl Drop for Registryd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn basic(u: &str, p: &str) -> String {
    use base64::Engine;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
    )
}

/// A ureq agent that trusts the test CA and never turns statuses into errors.
pub fn agent() -> ureq::Agent {
    berth::tls::provider();
    let ca = std::fs::read(&pki().ca).unwrap();
    let cert = ureq::tls::Certificate::from_pem(&ca).unwrap();
    let tls = ureq::tls::TlsConfig::builder()
        .provider(ureq::tls::TlsProvider::Rustls)
        .root_certs(ureq::tls::RootCerts::new_with_certs(&[cert]))
        .build();
    ureq::Agent::new_with_config(
        ureq::config::Config::builder()
            .tls_config(tls)
            .http_status_as_error(false)
            .max_redirects(0)
            .timeout_global(Some(Duration::from_secs(60)))
            .build(),
    )
}

/// A response, fully read.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn header(&self, k: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(k))
            .map(|(_, v)| v.as_str())
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
    /// The first error code of a spec error body.
    pub fn code(&self) -> String {
        self.json()["errors"][0]["code"]
            .as_str()
            .unwrap_or("")
            .to_string()
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

pub struct Client {
    pub agent: ureq::Agent,
    pub auth: Option<String>,
}

impl Client {
    pub fn with_auth(mut self, header: &str) -> Client {
        self.auth = Some(header.to_string());
        self
    }

    /// Any request; `body` None sends no body.
    pub fn req(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Resp {
        let mut b = ureq::http::Request::builder().method(method).uri(url);
        if let Some(a) = &self.auth {
            b = b.header("Authorization", a.as_str());
        }
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let res = match body {
            Some(data) => self.agent.run(b.body(data.to_vec()).unwrap()),
            None => self.agent.run(b.body(()).unwrap()),
        };
        let mut r = res.unwrap_or_else(|e| panic!("{method} {url}: {e}"));
        let status = r.status().as_u16();
        let headers = r
            .headers()
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
            .collect();
        let mut body = Vec::new();
        if method != "HEAD" {
            r.body_mut().as_reader().read_to_end(&mut body).unwrap();
        }
        Resp {
            status,
            headers,
            body,
        }
    }

    pub fn get(&self, url: &str) -> Resp {
        self.req("GET", url, &[], None)
    }
}

/// Push a blob monolithically; returns its digest string.
pub fn push_blob(r: &Registryd, c: &Client, repo: &str, data: &[u8]) -> String {
    let d = berth::digest::Digest::sha256(data).to_string();
    let resp = c.req(
        "POST",
        &r.url(&format!("/v2/{repo}/blobs/uploads/?digest={d}")),
        &[("Content-Type", "application/octet-stream")],
        Some(data),
    );
    assert_eq!(resp.status, 201, "{}", resp.text());
    d
}

/// An image manifest (OCI or Docker) over a config and layers already pushed.
pub fn manifest_json(
    media: &str,
    config: (&str, &str, usize),
    layers: &[(&str, usize)],
    extra: &str,
) -> String {
    let layer_type = if media.contains("docker") {
        "application/vnd.docker.image.rootfs.diff.tar.gzip"
    } else {
        "application/vnd.oci.image.layer.v1.tar+gzip"
    };
    let layers: Vec<String> = layers
        .iter()
        .map(|(d, s)| format!(r#"{{"mediaType":"{layer_type}","digest":"{d}","size":{s}}}"#))
        .collect();
    format!(
        r#"{{"schemaVersion":2,"mediaType":"{media}","config":{{"mediaType":"{}","digest":"{}","size":{}}},"layers":[{}]{extra}}}"#,
        config.0,
        config.1,
        config.2,
        layers.join(",")
    )
}

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";

/// Every blob file in a Distribution-layout root hashes to its name.
pub fn assert_blobs_intact(root: &Path) {
    let blobs = root.join("docker/registry/v2/blobs/sha256");
    let Ok(rd) = std::fs::read_dir(&blobs) else {
        return;
    };
    for pre in rd.flatten() {
        for b in std::fs::read_dir(pre.path()).unwrap().flatten() {
            let data = std::fs::read(b.path().join("data")).unwrap();
            let name = b.file_name().to_string_lossy().into_owned();
            assert_eq!(
                berth::digest::Digest::sha256(&data).hex(),
                name,
                "blob {name} is corrupt"
            );
        }
    }
}

/// Check a command exists, failing the test loudly if not (CI installs it).
pub fn need(tool: &str) {
    let ok = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        ok,
        "{tool} is not installed: run .ci/run or install it (see README, make test-deps)"
    );
}

/// Read one response head from a raw stream: (status, head text).
pub fn read_head(s: &mut impl Read) -> (u16, String) {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match s.read(&mut b) {
            Ok(1) => head.push(b[0]),
            other => panic!(
                "connection ended in a response head ({other:?}): {}",
                String::from_utf8_lossy(&head)
            ),
        }
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, text)
}

/// Debian's Docker Engine (docker.io, 20.10) on its own socket, data root and
/// exec root, with no bridge and no iptables rules: a peer to check berth's
/// images and API against, stopped (by its pid) when dropped.
pub struct Dockerd {
    pub dir: TempDir,
    pub sock: PathBuf,
    child: Child,
}

impl Dockerd {
    pub fn start() -> Dockerd {
        need("dockerd");
        let dir = TempDir::new("dockerd");
        let sock = dir.join("docker.sock");
        let log = std::fs::File::create(dir.join("dockerd.log")).unwrap();
        let child = Command::new("dockerd")
            .arg("-H")
            .arg(format!("unix://{}", sock.display()))
            .arg("--data-root")
            .arg(dir.join("data"))
            .arg("--exec-root")
            .arg(dir.join("exec"))
            .arg("--pidfile")
            .arg(dir.join("dockerd.pid"))
            .args(["--bridge=none", "--iptables=false", "--ip6tables=false"])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start dockerd");
        let d = Dockerd { dir, sock, child };
        wait_for("dockerd to answer", || {
            d.docker(&["version"])
                .output()
                .ok()
                .filter(|o| o.status.success())
        });
        d
    }

    /// The docker CLI on PATH, pointed at this daemon.
    pub fn docker(&self, args: &[&str]) -> Command {
        let mut c = Command::new("docker");
        c.args(args)
            .env("DOCKER_HOST", format!("unix://{}", self.sock.display()))
            .env("DOCKER_CONFIG", self.dir.join("cli"));
        c
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(self.dir.join("dockerd.log")).unwrap_or_default()
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        if let Ok(o) = self.docker(&["ps", "-aq"]).output() {
            let ids: Vec<String> = stdout(&o).split_whitespace().map(str::to_string).collect();
            if !ids.is_empty() {
                let mut c = self.docker(&["rm", "-f"]);
                c.args(&ids);
                let _ = c.output();
            }
        }
        // SIGTERM: dockerd unmounts its layers and stops its containerd
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.child.wait();
    }
}

/// berth's engined on its own socket, graph root, cgroup parent and bridge
/// (made by the fixture, as the site's Ansible makes br0, and given with
/// `--bridge`), driven by a docker CLI. Dropped: its containers removed, the
/// daemon stopped, the bridge and cgroups gone.
pub struct Engined {
    pub dir: TempDir,
    pub sock: PathBuf,
    pub graph: PathBuf,
    pub bridge: String,
    pub subnet: String,
    pub cgroup_parent: String,
    pub child: Option<Child>,
    pub log: PathBuf,
    /// The docker CLI binary used by [`Engined::docker`].
    pub cli: String,
    extra: Vec<String>,
    /// engined runs in this network namespace (its bridge is there too).
    pub netns: Option<String>,
    /// ... with this file bound over its /etc/resolv.conf.
    pub resolv: Option<PathBuf>,
}

/// A network namespace of the test's own (`ip netns`), with `lo` up; deleted
/// with everything in it when dropped.
pub struct NetNs {
    pub name: String,
}

impl NetNs {
    pub fn new() -> NetNs {
        need("ip");
        let name = format!("bt{}", &berth::util::uuid4()[..8]);
        let ns = NetNs { name };
        let o = Command::new("ip")
            .args(["netns", "add", &ns.name])
            .output()
            .unwrap();
        assert!(o.status.success(), "ip netns add: {}", stderr(&o));
        ns.sh("ip link set lo up");
        ns
    }

    /// `sh -c CMD` inside the namespace; must succeed; stdout.
    pub fn sh(&self, cmd: &str) -> String {
        let o = Command::new("ip")
            .args(["netns", "exec", &self.name, "sh", "-c", cmd])
            .output()
            .unwrap();
        assert!(o.status.success(), "{cmd}: {}", stderr(&o));
        stdout(&o)
    }

    /// A command run inside the namespace (`ip netns exec`, which also binds
    /// /etc/netns/NAME/* over /etc).
    pub fn command(&self, program: &Path) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).arg(program);
        c
    }

    /// Files `ip netns exec` binds over /etc/ (resolv.conf, hosts).
    pub fn etc(&self) -> PathBuf {
        PathBuf::from("/etc/netns").join(&self.name)
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        if let Ok(o) = Command::new("ip")
            .args(["netns", "pids", &self.name])
            .output()
        {
            for p in stdout(&o).split_whitespace() {
                if let Ok(pid) = p.parse::<i32>() {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
        let _ = std::fs::remove_dir_all(self.etc());
    }
}

/// A /24 of 10.199.0.0/16 no other engined of this test run has.
fn next_subnet() -> u8 {
    use std::sync::atomic::{AtomicU8, Ordering};
    static N: AtomicU8 = AtomicU8::new(1);
    let base = (std::process::id() % 100) as u8;
    base.wrapping_add(N.fetch_add(1, Ordering::Relaxed)) % 250 + 1
}

impl Engined {
    pub fn start() -> Engined {
        Engined::start_with(&[])
    }

    /// engined inside `ns`, on a bridge `bridge` with address `cidr` made there
    /// (the site's br0 and 10.0.3.0/24 can be used as they are: nothing of it
    /// reaches the host's network).
    pub fn start_in(
        ns: &NetNs,
        bridge: &str,
        cidr: &str,
        mtu: u32,
        resolv: Option<&Path>,
        extra: &[&str],
    ) -> Engined {
        need("docker");
        let dir = TempDir::new("engined");
        let tag = &berth::util::uuid4()[..6];
        ns.sh(&format!(
            "ip link add {bridge} type bridge && ip link set {bridge} mtu {mtu} && ip addr add {cidr} dev {bridge} && ip link set {bridge} up"
        ));
        let mut e = Engined {
            sock: dir.join("engined.sock"),
            graph: dir.join("graph"),
            log: dir.join("engined.log"),
            bridge: bridge.to_string(),
            subnet: cidr
                .rsplit_once('.')
                .map(|x| x.0.to_string())
                .unwrap_or_default(),
            cgroup_parent: format!("berth-test-{tag}"),
            child: None,
            cli: "docker".into(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            netns: Some(ns.name.clone()),
            resolv: resolv.map(Path::to_path_buf),
            dir,
        };
        e.spawn();
        e
    }

    pub fn start_with(extra: &[&str]) -> Engined {
        let mut e = Engined::prepare(extra);
        e.spawn();
        e
    }

    /// Everything but the start: the test prepares the graph root (say, a
    /// mount) and then calls [`Engined::spawn`].
    pub fn prepare(extra: &[&str]) -> Engined {
        need("docker");
        let dir = TempDir::new("engined");
        let n = next_subnet();
        let tag = &berth::util::uuid4()[..6];
        let bridge = format!("brt{tag}");
        let subnet = format!("10.199.{n}");
        let sh = |c: &str| {
            let o = Command::new("sh").arg("-c").arg(c).output().unwrap();
            assert!(o.status.success(), "{c}: {}", stderr(&o));
        };
        sh(&format!(
            "ip link add {bridge} type bridge && ip addr add {subnet}.1/24 dev {bridge} && ip link set {bridge} up"
        ));
        let e = Engined {
            sock: dir.join("engined.sock"),
            graph: dir.join("graph"),
            log: dir.join("engined.log"),
            bridge,
            subnet,
            cgroup_parent: format!("berth-test-{tag}"),
            child: None,
            cli: "docker".into(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            netns: None,
            resolv: None,
            dir,
        };
        std::fs::create_dir_all(&e.graph).unwrap();
        e
    }

    pub fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let args = self.daemon_args();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut c = match &self.netns {
            None => berth(&args),
            // nsenter, not `ip netns exec`: that one mounts a new /sys, which
            // would hide the cgroup hierarchies from engined.
            Some(ns) => {
                let mut c = Command::new("nsenter");
                c.arg(format!("--net=/run/netns/{ns}")).arg("--");
                if let Some(r) = &self.resolv {
                    c.args([
                        "unshare",
                        "-m",
                        "--propagation",
                        "private",
                        "--",
                        "sh",
                        "-c",
                    ])
                    .arg(format!(
                        "mount --bind {} /etc/resolv.conf && exec \"$0\" \"$@\"",
                        r.display()
                    ));
                }
                c.arg(bin()).args(&args);
                c
            }
        };
        c.arg("--pidfile")
            .arg(self.dir.join("engined.pid"))
            // as the site's daemons: docker.io is never contacted
            .args(["--block-registry", "docker.io"])
            .args(&self.extra)
            .env("BERTH_CLIENT_CONFIG", self.dir.join("client.yml"))
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        // (a test may have written its own before the start)
        if !self.dir.join("client.yml").exists() {
            std::fs::write(self.dir.join("client.yml"), "").unwrap();
        }
        let mut child = c.spawn().expect("start engined");
        let sock = self.sock.clone();
        wait_for("engined to answer", || {
            if let Ok(Some(st)) = child.try_wait() {
                panic!("engined exited with {st}: {}", self.logs());
            }
            let o = Command::new("docker")
                .args(["version", "--format", "{{.Server.APIVersion}}"])
                .env("DOCKER_HOST", format!("unix://{}", sock.display()))
                .env("DOCKER_CONFIG", self.dir.join("cli"))
                .output()
                .ok()?;
            o.status.success().then_some(())
        });
        self.child = Some(child);
    }

    /// kill -9 engined (its containers go on) and start it again.
    pub fn crash_and_restart(&mut self) {
        self.kill_daemon();
        self.spawn();
    }

    /// kill -9 engined and leave it down.
    pub fn kill_daemon(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Start engined again after [`Engined::kill_daemon`].
    pub fn start_daemon(&mut self) {
        assert!(self.child.is_none(), "engined is running");
        self.spawn();
    }

    /// The arguments this fixture starts engined with (a second daemon's test).
    pub fn daemon_args(&self) -> Vec<String> {
        vec![
            "engined".into(),
            "-H".into(),
            self.host(),
            "--data-root".into(),
            self.graph.display().to_string(),
            "--exec-root".into(),
            self.dir.join("run").display().to_string(),
            format!("--bridge={}", self.bridge),
            "--cgroup-parent".into(),
            self.cgroup_parent.clone(),
        ]
    }

    pub fn host(&self) -> String {
        format!("unix://{}", self.sock.display())
    }

    /// The docker CLI pointed at this engined.
    pub fn docker(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.cli);
        c.args(args)
            .env("DOCKER_HOST", self.host())
            .env("DOCKER_CONFIG", self.dir.join("cli"))
            .env_remove("DOCKER_TLS_VERIFY");
        c
    }

    /// Run the CLI; require success; stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let o = self.docker(args).output().unwrap();
        assert!(
            o.status.success(),
            "docker {args:?} failed ({}): {}{}\nengined log:\n{}",
            o.status,
            stderr(&o),
            stdout(&o),
            self.logs_tail()
        );
        stdout(&o)
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.docker(args).output().unwrap()
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn logs_tail(&self) -> String {
        let l = self.logs();
        let lines: Vec<&str> = l.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// A raw API call on the socket: (status, body).
    pub fn api(&self, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
        use std::io::Write;
        let mut s = std::os::unix::net::UnixStream::connect(&self.sock).unwrap();
        let body = body.unwrap_or("");
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: engine\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        let text = String::from_utf8_lossy(&out).into_owned();
        let status = text
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let body = text
            .split_once("\r\n\r\n")
            .map(|x| x.1.to_string())
            .unwrap_or_default();
        (status, body)
    }
}

impl Drop for Engined {
    fn drop(&mut self) {
        if self.child.is_some()
            && let Ok(o) = self.docker(&["ps", "-aq"]).output()
        {
            let ids: Vec<String> = stdout(&o).split_whitespace().map(str::to_string).collect();
            if !ids.is_empty() {
                let mut c = self.docker(&["rm", "-f"]);
                c.args(&ids);
                let _ = c.output();
            }
        }
        if let Some(mut c) = self.child.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let _ = c.wait();
        }
        if self.netns.is_none() {
            let _ = Command::new("ip")
                .args(["link", "del", &self.bridge])
                .output();
        }
        for root in ["/sys/fs/cgroup"] {
            if let Ok(rd) = std::fs::read_dir(root) {
                for h in rd.flatten() {
                    let _ = std::fs::remove_dir(h.path().join(&self.cgroup_parent));
                }
            }
        }
    }
}

/// Disk used under `p` (allocated blocks; links not followed).
pub fn du(p: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(m) = std::fs::symlink_metadata(p) else {
        return 0;
    };
    let mut n = m.blocks() * 512;
    if m.is_dir()
        && let Ok(rd) = std::fs::read_dir(p)
    {
        for e in rd.flatten() {
            n += du(&e.path());
        }
    }
    n
}

/// Apparent size under `p`: what reading every file would return (holes of
/// sparse files count in full, unlike [`du`]; links not followed).
pub fn apparent_size(p: &Path) -> u64 {
    let Ok(m) = std::fs::symlink_metadata(p) else {
        return 0;
    };
    let mut n = if m.is_file() { m.len() } else { 0 };
    if m.is_dir()
        && let Ok(rd) = std::fs::read_dir(p)
    {
        for e in rd.flatten() {
            n = n.saturating_add(apparent_size(&e.path()));
        }
    }
    n
}

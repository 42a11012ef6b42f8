//! registryd on Ceph's S3 gateway: the driver's contract on a real radosgw,
//! the distribution workflows and skopeo on a bucket, Distribution reading
//! what berth wrote, replicas sharing one bucket, a replica killed mid-upload,
//! presigned redirects and one collector among replicas.
//!
//! One single-node Ceph cluster (monitor, memstore OSD, radosgw) is started
//! for the whole run by `tests/peers/ceph-rgw.sh` on loopback; every test
//! works in a bucket of its own.

use crate::harness::*;
use berth::store::Driver;
use berth::store::s3::{S3, Settings, sigv4::Credentials};
use std::process::{Command, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

const ACCESS: &str = "BERTHTESTACCESS";
const SECRET: &str = "berth-test-secret-key-0123";

pub struct Rgw {
    pub port: u16,
}

/// Twenty consecutive free ports above the kernel's ephemeral range, for the
/// Ceph daemons' messengers.
fn port_block() -> u16 {
    let mut base = 61000 + (std::process::id() % 200) as u16 * 20;
    loop {
        if (base..base + 20).all(|p| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok()) {
            return base;
        }
        base = if base >= 65000 { 61000 } else { base + 20 };
    }
}

/// The run's cluster, started on first use.
pub fn rgw() -> &'static Rgw {
    static RGW: OnceLock<Rgw> = OnceLock::new();
    RGW.get_or_init(|| {
        for t in ["ceph-mon", "ceph-osd", "radosgw", "radosgw-admin", "curl"] {
            need(t);
        }
        let (mon, port) = (free_port(), free_port());
        let dir = std::env::temp_dir().join(format!("berth-it-rgw-{}", std::process::id()));
        let script =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/ceph-rgw.sh");
        let out = Command::new("bash")
            .arg(script)
            .arg(&dir)
            .args([mon, port, port_block()].map(|p| p.to_string()))
            .arg(std::process::id().to_string())
            .stdin(Stdio::null())
            .output()
            .expect("run ceph-rgw.sh");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && text.contains("READY"),
            "the Ceph cluster did not come up: {text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        Rgw { port }
    })
}

impl Rgw {
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Driver settings for `bucket` under `root`, parts of S3's minimum so a
    /// few MiB cross part boundaries.
    pub fn settings(&self, bucket: &str, root: &str) -> Settings {
        let mut s = Settings::new(
            Credentials {
                access_key: ACCESS.into(),
                secret_key: SECRET.into(),
                region: "us-east-1".into(),
            },
            bucket,
        );
        s.endpoint = self.endpoint();
        s.path_style = true;
        s.root = root.into();
        s.chunk_size = berth::store::s3::MIN_PART;
        s.copy_threshold = 6 << 20;
        s.copy_chunk = berth::store::s3::MIN_PART as u64;
        s
    }

    pub fn driver(&self, bucket: &str, root: &str) -> Arc<S3> {
        let d = S3::new(self.settings(bucket, root)).unwrap();
        d.ensure_bucket().unwrap();
        Arc::new(d)
    }

    /// registryd's `storage:` YAML for the bucket, as a site writes it; parts
    /// and copy thresholds small, so the replica tests' 13 and 24 MiB blobs
    /// reach their keys by multipart copy through the binary.
    pub fn yaml(&self, bucket: &str, root: &str, redirect: bool) -> String {
        format!(
            "  s3:\n    accesskey: {ACCESS}\n    secretkey: {SECRET}\n    region: us-east-1\n    regionendpoint: {}\n    bucket: {bucket}\n    rootdirectory: /{root}\n    secure: false\n    v4auth: true\n    chunksize: 5242880\n    multipartcopythresholdsize: 8388608\n    multipartcopychunksize: 5242880\n  redirect:\n    disable: {}\n",
            self.endpoint(),
            !redirect
        )
    }

    pub fn opts(&self, bucket: &str, redirect: bool) -> RegOpts {
        self.driver(bucket, "reg");
        RegOpts {
            storage: Some(self.yaml(bucket, "reg", redirect)),
            // Debian's Distribution panics on this one; berth ignores AWS_*.
            env: vec![("AWS_CA_BUNDLE".into(), "/nonexistent/ca.pem".into())],
            ..RegOpts::default()
        }
    }
}

/// Every blob object under the registry's root hashes to its name, and no
/// object of an upload is under `blobs/`.
fn assert_bucket_blobs_intact(d: &S3) {
    let base = "/docker/registry/v2/blobs/sha256";
    for pre in d.list(base).unwrap() {
        for hex in d.list(&format!("{base}/{pre}")).unwrap() {
            let names = d.list(&format!("{base}/{pre}/{hex}")).unwrap();
            assert_eq!(names, vec!["data"], "stray objects beside blob {hex}");
            let data = d.get(&format!("{base}/{pre}/{hex}/data")).unwrap();
            assert_eq!(
                berth::digest::Digest::sha256(&data).hex(),
                hex,
                "blob object {hex} does not hash to its name"
            );
        }
    }
}

#[test]
fn s3_driver_keeps_the_contract_on_radosgw() {
    let rgw = rgw();
    let d = rgw.driver("contract", "conformance/root");
    berth::store::conformance::driver_contract(d.as_ref(), Duration::from_millis(1100));
    let d2 = rgw.driver("contract", "registry-contract");
    berth::store::conformance::registry_contract(d2.clone(), Duration::from_millis(1100));
    // Keys are Distribution's, under the root directory.
    let raw = rgw.driver("contract", "");
    let top = raw.list("/registry-contract/docker/registry/v2").unwrap();
    assert!(
        top.contains(&"blobs".to_string()) && top.contains(&"repositories".to_string()),
        "{top:?}"
    );
    assert_bucket_blobs_intact(&d2);
}

#[test]
fn distribution_workflows_pass_on_a_bucket() {
    let rgw = rgw();
    // Blobs proxied here (the harness reads registryd's own headers); the
    // redirect is exercised by skopeo and its own test.
    let run = |bucket: &str, f: fn(RegOpts)| f(rgw.opts(bucket, false));
    run(
        "wf-blobs",
        crate::registry_api::blobs_monolithic_range_head_and_delete_on,
    );
    run(
        "wf-uploads",
        crate::registry_api::uploads_chunked_out_of_order_status_and_cancel_on,
    );
    run(
        "wf-manifests",
        crate::registry_api::manifests_by_tag_and_digest_of_every_kind_on,
    );
    run("wf-errors", crate::registry_api::manifest_errors_on);
    run("wf-mount", crate::registry_api::cross_repository_mount_on);
    run("wf-paging", crate::registry_api::tag_and_catalog_paging_on);
    run("wf-referrers", crate::registry_api::referrers_api_on);
    for b in ["wf-blobs", "wf-uploads", "wf-manifests", "wf-mount"] {
        assert_bucket_blobs_intact(&rgw.driver(b, "reg"));
    }
}

#[test]
fn skopeo_round_trips_through_presigned_redirects_and_distribution_reads_the_bucket() {
    let rgw = rgw();
    crate::registry_skopeo::skopeo_round_trips_oci_and_schema2_on(rgw.opts("skopeo", true));
    let d = rgw.driver("skopeo", "reg");
    assert_bucket_blobs_intact(&d);
    // Debian's Distribution on the same bucket serves what berth wrote.
    let mut o = rgw.opts("skopeo", true);
    o.distribution = true;
    o.tls = false;
    o.auth = false;
    o.env = vec![];
    let dist = Registryd::start(o);
    let c = dist.anonymous();
    let resp = c.req(
        "GET",
        &dist.url("/v2/site/oci-img/manifests/v2"),
        &[("Accept", OCI_MANIFEST)],
        None,
    );
    assert_eq!(
        resp.status,
        200,
        "Distribution on berth's bucket: {}",
        resp.text()
    );
    let m: serde_json::Value = resp.json();
    let layer = m["layers"][0]["digest"].as_str().unwrap().to_string();
    let blob = c.req(
        "HEAD",
        &dist.url(&format!("/v2/site/oci-img/blobs/{layer}")),
        &[],
        None,
    );
    assert!(blob.status == 200 || blob.status == 307, "{}", blob.status);
}

#[test]
fn blob_gets_redirect_to_presigned_urls_unless_disabled() {
    let rgw = rgw();
    // The secret from the environment, over a wrong one in the file.
    let mut o = rgw.opts("redirect", true);
    o.storage = o
        .storage
        .map(|y| y.replace(&format!("secretkey: {SECRET}"), "secretkey: wrong"));
    o.env
        .push(("REGISTRY_STORAGE_S3_SECRETKEY".into(), SECRET.into()));
    let r = Registryd::start(o);
    let c = r.client();
    let data: Vec<u8> = (0..300_000u32).map(|i| (i * 31 % 256) as u8).collect();
    let d = push_blob(&r, &c, "site/redir", &data);
    let resp = c.req(
        "GET",
        &r.url(&format!("/v2/site/redir/blobs/{d}")),
        &[],
        None,
    );
    assert_eq!(resp.status, 307, "{}", resp.text());
    let loc = resp.header("Location").unwrap().to_string();
    assert!(
        loc.starts_with(&rgw.endpoint()) && loc.contains("X-Amz-Signature="),
        "{loc}"
    );
    assert!(!loc.contains(SECRET));
    assert!(!r.logs().contains(SECRET), "the secret key reached the log");
    // The gateway serves the bytes to whoever holds the URL, and only them.
    let got = plain_get(&loc);
    assert_eq!(got.0, 200);
    assert!(got.1 == data, "presigned bytes differ");
    let forged = loc.replace("X-Amz-Signature=", "X-Amz-Signature=0");
    assert_eq!(plain_get(&forged).0, 403);
    // HEAD is answered by registryd itself.
    let head = c.req(
        "HEAD",
        &r.url(&format!("/v2/site/redir/blobs/{d}")),
        &[],
        None,
    );
    assert_eq!(head.status, 200);
    drop(r);
    let r = Registryd::start(rgw.opts("redirect", false));
    let c = r.client();
    let resp = c.req(
        "GET",
        &r.url(&format!("/v2/site/redir/blobs/{d}")),
        &[],
        None,
    );
    assert_eq!(resp.status, 200);
    assert!(resp.body == data);
}

fn plain_get(url: &str) -> (u16, Vec<u8>) {
    let a = ureq::Agent::new_with_config(
        ureq::config::Config::builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .build(),
    );
    let mut r = a.get(url).call().unwrap();
    let s = r.status().as_u16();
    (s, r.body_mut().read_to_vec().unwrap())
}

/// The path of an upload's Location, whichever replica issued it.
fn upload_path(loc: &str) -> String {
    loc[loc.find("/v2/").expect("a /v2/ Location")..].to_string()
}

fn patch(r: &Registryd, c: &Client, path: &str, from: usize, chunk: &[u8]) -> Resp {
    let range = format!("{from}-{}", from + chunk.len() - 1);
    c.req(
        "PATCH",
        &r.url(path),
        &[
            ("Content-Type", "application/octet-stream"),
            ("Content-Range", &range),
        ],
        Some(chunk),
    )
}

/// PUT a manifest, which must be stored (201).
fn put_manifest(r: &Registryd, c: &Client, path: &str, media: &str, m: &str) -> Resp {
    let put = c.req(
        "PUT",
        &r.url(path),
        &[("Content-Type", media)],
        Some(m.as_bytes()),
    );
    assert_eq!(put.status, 201, "PUT {path}: {}", put.text());
    put
}

fn pseudo_random(n: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2654435761) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

#[test]
fn two_replicas_share_one_bucket() {
    let rgw = rgw();
    let a = Registryd::start(rgw.opts("replicas", false));
    let b = Registryd::start(rgw.opts("replicas", false));
    let (ca, cb) = (a.client(), b.client());
    // A chunked upload started on A, continued on B, on A, finished on B.
    let data = pseudo_random(13 << 20, 7);
    let d = berth::digest::Digest::sha256(&data).to_string();
    let resp = ca.req("POST", &a.url("/v2/site/rep/blobs/uploads/"), &[], None);
    assert_eq!(resp.status, 202, "{}", resp.text());
    let mut path = upload_path(resp.header("Location").unwrap());
    let cuts = [0, 6 << 20, (6 << 20) + 1000, 11 << 20, data.len()];
    for (i, w) in cuts.windows(2).enumerate() {
        let (r, c) = if i % 2 == 0 { (&a, &ca) } else { (&b, &cb) };
        let resp = patch(r, c, &path, w[0], &data[w[0]..w[1]]);
        assert_eq!(resp.status, 202, "chunk {i}: {}", resp.text());
        assert_eq!(
            resp.header("Range"),
            Some(format!("0-{}", w[1] - 1).as_str())
        );
        path = upload_path(resp.header("Location").unwrap());
        // The other replica reports the same progress.
        let (o, oc) = if i % 2 == 0 { (&b, &cb) } else { (&a, &ca) };
        let st = oc.req("GET", &o.url(&path), &[], None);
        assert_eq!(st.status, 204, "{}", st.text());
        assert_eq!(st.header("Range"), Some(format!("0-{}", w[1] - 1).as_str()));
    }
    // A chunk that does not start where the upload is, on either replica.
    let late = patch(&a, &ca, &path, 5, b"xx");
    assert_eq!(late.status, 416, "{}", late.text());
    let sep = if path.contains('?') { '&' } else { '?' };
    let put = cb.req("PUT", &b.url(&format!("{path}{sep}digest={d}")), &[], None);
    assert_eq!(put.status, 201, "{}", put.text());
    let got = ca.get(&a.url(&format!("/v2/site/rep/blobs/{d}")));
    assert_eq!(got.status, 200);
    assert!(got.body == data, "the blob differs");
    let s3 = rgw.driver("replicas", "reg");
    assert!(
        s3.uploads_under("/docker/registry/v2/repositories")
            .unwrap()
            .is_empty(),
        "multipart uploads left behind"
    );

    // A push on A is pulled from B; B's catalog lists it within seconds.
    let cfg = br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    let cd = push_blob(&a, &ca, "site/rep", cfg);
    let m = manifest_json(
        OCI_MANIFEST,
        (OCI_CONFIG, &cd, cfg.len()),
        &[(&d, data.len())],
        "",
    );
    let put = put_manifest(&a, &ca, "/v2/site/rep/manifests/v1", OCI_MANIFEST, &m);
    let md = put.header("Docker-Content-Digest").unwrap().to_string();
    let pulled = cb.req(
        "GET",
        &b.url("/v2/site/rep/manifests/v1"),
        &[("Accept", OCI_MANIFEST)],
        None,
    );
    assert_eq!(pulled.status, 200);
    assert_eq!(pulled.body, m.as_bytes());
    wait_for("replica B to list site/rep", || {
        let cat = cb.get(&b.url("/v2/_catalog")).json();
        cat["repositories"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r == "site/rep")
            .then_some(())
    });
    // A delete on B is seen by A.
    let del = cb.req(
        "DELETE",
        &b.url(&format!("/v2/site/rep/manifests/{md}")),
        &[],
        None,
    );
    assert_eq!(del.status, 202, "{}", del.text());
    let gone = ca.req(
        "GET",
        &a.url("/v2/site/rep/manifests/v1"),
        &[("Accept", OCI_MANIFEST)],
        None,
    );
    assert_eq!(gone.status, 404);
    wait_for("replica A to drop site/rep from its catalog", || {
        let cat = ca.get(&a.url("/v2/_catalog")).json();
        (!cat["repositories"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r == "site/rep"))
        .then_some(())
    });
    assert_bucket_blobs_intact(&s3);
}

#[test]
fn a_replica_killed_mid_upload_leaves_nothing_that_fails_its_digest() {
    use std::io::Write;
    let rgw = rgw();
    let mut a = Registryd::start(rgw.opts("killed", false));
    let b = Registryd::start(rgw.opts("killed", false));
    let s3 = rgw.driver("killed", "reg");
    let data = pseudo_random(24 << 20, 3);
    let d = berth::digest::Digest::sha256(&data).to_string();
    let resp = a
        .client()
        .req("POST", &a.url("/v2/site/k/blobs/uploads/"), &[], None);
    assert_eq!(resp.status, 202);
    let path = upload_path(resp.header("Location").unwrap());
    // Half the body to A, then A dies with parts already in the gateway.
    let mut s = tls_connect(a.port);
    write!(
        s,
        "PATCH {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: {}\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
        basic(USER, PASS),
        data.len()
    )
    .unwrap();
    s.write_all(&data[..12 << 20]).unwrap();
    s.flush().unwrap();
    wait_for("A to send parts to the gateway", || {
        (!s3.uploads_under("/docker/registry/v2/repositories/site/k")
            .unwrap()
            .is_empty())
        .then_some(())
    });
    let _ = a.child.kill();
    let _ = a.child.wait();
    drop(s);
    // Nothing of it is a blob; B sees the session where it was before.
    assert_bucket_blobs_intact(&s3);
    assert!(
        s3.list("/docker/registry/v2/blobs/sha256")
            .unwrap()
            .is_empty()
    );
    let cb = b.client();
    let st = cb.req("GET", &b.url(&path), &[], None);
    assert_eq!(st.status, 204, "{}", st.text());
    assert_eq!(
        st.header("Range"),
        Some("0-0"),
        "the dead chunk counts for nothing"
    );
    let resp = patch(&b, &cb, &path, 0, &data);
    assert_eq!(resp.status, 202, "{}", resp.text());
    let p2 = upload_path(resp.header("Location").unwrap());
    let sep = if p2.contains('?') { '&' } else { '?' };
    let put = cb.req("PUT", &b.url(&format!("{p2}{sep}digest={d}")), &[], None);
    assert_eq!(put.status, 201, "{}", put.text());
    assert_bucket_blobs_intact(&s3);
    // The dead append's parts were aborted with the session.
    assert!(
        s3.uploads_under("/docker/registry/v2/repositories")
            .unwrap()
            .is_empty()
    );
    a.crash_and_restart();
}

#[test]
fn one_collector_runs_among_replicas() {
    let rgw = rgw();
    let gc = "gc:\n  interval: 1s\n  grace: 1s\n".to_string();
    let opts = || RegOpts {
        extra: gc.clone(),
        ..rgw.opts("gc-once", false)
    };
    let a = Registryd::start(opts());
    let b = Registryd::start(opts());
    let s3 = rgw.driver("gc-once", "reg");
    // Another host holds the collector's lease for the next hour.
    let lease = "/docker/registry/v2/_berth_locks/gc";
    let until = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    s3.put(
        lease,
        format!(r#"{{"holder":"elsewhere:1","token":"t","expires":{until}}}"#).as_bytes(),
    )
    .unwrap();
    // Garbage: blobs no manifest names.
    let c = a.client();
    let garbage: Vec<String> = (0..6u32)
        .map(|i| push_blob(&a, &c, "site/junk", &pseudo_random(1000 + i as usize, i)))
        .collect();
    wait_for("both replicas to skip for the lease's holder", || {
        (a.logs().contains("another collector is running; skipped")
            && b.logs().contains("another collector is running; skipped"))
        .then_some(())
    });
    let o = berth(&["registryd", "garbage-collect", a.config.to_str().unwrap()])
        .env("AWS_CA_BUNDLE", "/nonexistent")
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("running on s3://gc-once/reg"),
        "{}",
        stderr(&o)
    );
    for g in &garbage {
        assert_eq!(
            c.req(
                "HEAD",
                &a.url(&format!("/v2/site/junk/blobs/{g}")),
                &[],
                None
            )
            .status,
            200
        );
    }
    // The holder goes: one replica collects, the other finds nothing left.
    s3.delete(lease).unwrap();
    // Unlinked, the blobs are garbage once past the grace.
    for g in &garbage {
        let r = c.req(
            "DELETE",
            &a.url(&format!("/v2/site/junk/blobs/{g}")),
            &[],
            None,
        );
        assert_eq!(r.status, 202);
    }
    let removed = |logs: String| -> usize {
        logs.lines()
            .filter(|l| l.contains("gc: removed blob"))
            .count()
    };
    wait_for("the garbage to be collected", || {
        (removed(a.logs()) + removed(b.logs()) >= garbage.len()).then_some(())
    });
    assert!(
        s3.list("/docker/registry/v2/blobs/sha256")
            .unwrap()
            .is_empty()
    );
    assert!(
        s3.list("/docker/registry/v2/_berth_trash")
            .unwrap()
            .is_empty()
    );
    // Rounds go on meanwhile; none removes a blob twice.
    wait_for("another round", || {
        (a.logs().matches("gc: garbage collection:").count()
            + b.logs().matches("gc: garbage collection:").count()
            >= 3)
            .then_some(())
    });
    assert_eq!(
        removed(a.logs()) + removed(b.logs()),
        garbage.len(),
        "each blob removed once, by one collector\nA:\n{}\nB:\n{}",
        a.logs(),
        b.logs()
    );
    let report: serde_json::Value =
        serde_json::from_slice(&s3.get("/.berth-gc-report.json").unwrap()).unwrap();
    assert!(report["finished"].as_i64().unwrap() > 0);
}

#[test]
fn the_shipped_s3_config_loads_clean_and_serves() {
    let rgw = rgw();
    rgw.driver("docker-registry", "");
    let d = TempDir::new("site-s3");
    let port = free_port();
    let pw = d.join("htpasswd");
    std::fs::write(
        &pw,
        berth::auth::htpasswd::entry(USER, PASS).unwrap() + "\n",
    )
    .unwrap();
    let p = pki();
    let env: Vec<(&str, String)> = vec![
        ("REGISTRY_STORAGE_S3_ACCESSKEY", ACCESS.into()),
        ("REGISTRY_STORAGE_S3_SECRETKEY", SECRET.into()),
        ("REGISTRY_STORAGE_S3_REGIONENDPOINT", rgw.endpoint()),
        ("REGISTRY_HTTP_ADDR", format!("127.0.0.1:{port}")),
        (
            "REGISTRY_HTTP_TLS_CERTIFICATE",
            p.cert.display().to_string(),
        ),
        ("REGISTRY_HTTP_TLS_KEY", p.key.display().to_string()),
        ("REGISTRY_AUTH_HTPASSWD_PATH", pw.display().to_string()),
        ("AWS_CA_BUNDLE", "/nonexistent/ca.pem".into()),
    ];
    let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/site-registry-s3.yml");
    let o = berth(&["registryd", "--check", file.to_str().unwrap()])
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!stderr(&o).contains("warning"), "{}", stderr(&o));
    let log = d.join("log");
    let mut child = berth(&["registryd", file.to_str().unwrap()])
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    wait_port(port, &mut child, &log);
    let c = Client {
        agent: agent(),
        auth: Some(basic(USER, PASS)),
    };
    let data = pseudo_random(70_000, 11);
    let dg = berth::digest::Digest::sha256(&data).to_string();
    let url = |p: &str| format!("https://localhost:{port}{p}");
    let up = c.req(
        "POST",
        &url(&format!("/v2/site/shipped/blobs/uploads/?digest={dg}")),
        &[("Content-Type", "application/octet-stream")],
        Some(&data),
    );
    assert_eq!(up.status, 201, "{}", up.text());
    let get = c.get(&url(&format!("/v2/site/shipped/blobs/{dg}")));
    assert_eq!(get.status, 307, "redirect is the shipped default");
    let (s, body) = plain_get(get.header("Location").unwrap());
    assert!(s == 200 && body == data);
    let logs = std::fs::read_to_string(&log).unwrap();
    assert!(
        logs.contains("storage s3://docker-registry/registry at http://127.0.0.1:"),
        "{logs}"
    );
    assert!(!logs.contains(SECRET), "the secret key reached the log");
    let _ = child.kill();
    let _ = child.wait();
    let stored = rgw.driver("docker-registry", "registry");
    assert!(
        stored
            .stat(&format!(
                "/docker/registry/v2/blobs/sha256/{}/{}/data",
                &dg[7..9],
                &dg[7..]
            ))
            .is_ok()
    );
}

#[test]
fn registryd_serves_and_continues_a_bucket_distribution_filled() {
    let rgw = rgw();
    let mut o = rgw.opts("from-dist", false);
    o.distribution = true;
    o.tls = false;
    o.auth = false;
    o.env = vec![];
    let dist = Registryd::start(o);
    let c = dist.anonymous();
    // Distribution writes a layer (in two chunks), a config and a manifest.
    let layer = pseudo_random(9 << 20, 5);
    let ld = berth::digest::Digest::sha256(&layer).to_string();
    let resp = c.req("POST", &dist.url("/v2/site/old/blobs/uploads/"), &[], None);
    assert_eq!(resp.status, 202, "{}", resp.text());
    let path = upload_path(resp.header("Location").unwrap());
    let resp = patch(&dist, &c, &path, 0, &layer[..6 << 20]);
    assert_eq!(resp.status, 202, "{}", resp.text());
    let path = upload_path(resp.header("Location").unwrap());
    let resp = patch(&dist, &c, &path, 6 << 20, &layer[6 << 20..]);
    assert_eq!(resp.status, 202, "{}", resp.text());
    let path = upload_path(resp.header("Location").unwrap());
    let put = c.req("PUT", &dist.url(&format!("{path}&digest={ld}")), &[], None);
    assert_eq!(put.status, 201, "{}", put.text());
    let cfg = br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    // Distribution has no single-POST upload: POST, then PUT with the bytes.
    let cd = berth::digest::Digest::sha256(cfg).to_string();
    let resp = c.req("POST", &dist.url("/v2/site/old/blobs/uploads/"), &[], None);
    let path = upload_path(resp.header("Location").unwrap());
    let put = c.req(
        "PUT",
        &dist.url(&format!("{path}&digest={cd}")),
        &[("Content-Type", "application/octet-stream")],
        Some(cfg),
    );
    assert_eq!(put.status, 201, "{}", put.text());
    let m = manifest_json(
        DOCKER_MANIFEST,
        (DOCKER_CONFIG, &cd, cfg.len()),
        &[(&ld, layer.len())],
        "",
    );
    put_manifest(
        &dist,
        &c,
        "/v2/site/old/manifests/2017",
        DOCKER_MANIFEST,
        &m,
    );
    drop(dist);
    // berth on the same bucket: lists it, serves it byte for byte, adds to it.
    let r = Registryd::start(rgw.opts("from-dist", false));
    let bc = r.client();
    let cat = bc.get(&r.url("/v2/_catalog")).json();
    assert_eq!(cat["repositories"], serde_json::json!(["site/old"]));
    let got = bc.req(
        "GET",
        &r.url("/v2/site/old/manifests/2017"),
        &[("Accept", DOCKER_MANIFEST)],
        None,
    );
    assert_eq!(got.status, 200);
    assert_eq!(got.body, m.as_bytes());
    let blob = bc.get(&r.url(&format!("/v2/site/old/blobs/{ld}")));
    assert_eq!(blob.status, 200);
    assert!(blob.body == layer, "the layer Distribution stored differs");
    put_manifest(&r, &bc, "/v2/site/old/manifests/2026", DOCKER_MANIFEST, &m);
    assert_eq!(
        bc.get(&r.url("/v2/site/old/tags/list")).json()["tags"],
        serde_json::json!(["2017", "2026"])
    );
    assert_bucket_blobs_intact(&rgw.driver("from-dist", "reg"));
}

//! registryd through raw HTTP: every endpoint of the distribution spec and every
//! bad input the issue lists, against the real binary with TLS and htpasswd.

use crate::harness::*;
use serde_json::json;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

fn digest(data: &[u8]) -> String {
    berth::digest::Digest::sha256(data).to_string()
}

#[test]
fn auth_challenge_and_failures() {
    let r = Registryd::start(RegOpts::default());
    let anon = r.anonymous().get(&r.url("/v2/"));
    assert_eq!(anon.status, 401);
    assert_eq!(
        anon.header("WWW-Authenticate"),
        Some("Basic realm=\"basic-realm\"")
    );
    assert_eq!(anon.code(), "UNAUTHORIZED");
    assert_eq!(
        anon.header("Docker-Distribution-API-Version"),
        Some("registry/2.0")
    );
    let t = Instant::now();
    let wrong = r
        .anonymous()
        .with_auth(&basic(USER, "nope"))
        .get(&r.url("/v2/"));
    assert_eq!(wrong.status, 401);
    assert!(
        t.elapsed() >= Duration::from_millis(250),
        "no delay after a failed login"
    );
    let ok = r.client().get(&r.url("/v2/"));
    assert_eq!(ok.status, 200);
    assert_eq!(
        ok.header("Docker-Distribution-API-Version"),
        Some("registry/2.0")
    );
    // every route is protected, not just /v2/
    assert_eq!(r.anonymous().get(&r.url("/v2/_catalog")).status, 401);
    assert_eq!(r.anonymous().get(&r.url("/v1/search?q=x")).status, 401);
    // the password never reaches the log; the user and client address do
    let logs = r.logs();
    assert!(!logs.contains(PASS));
    assert!(logs.contains("t1user \"GET /v2/\" 200"), "{logs}");
    assert!(logs.contains("127.0.0.1:"), "{logs}");
}

#[test]
fn blobs_monolithic_range_head_and_delete() {
    blobs_monolithic_range_head_and_delete_on(RegOpts::default());
}

/// The workflow on any storage (the S3 tests run it on a bucket).
pub(crate) fn blobs_monolithic_range_head_and_delete_on(o: RegOpts) {
    let r = Registryd::start(o);
    let c = r.client();
    let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let d = digest(&data);
    let resp = c.req(
        "POST",
        &r.url(&format!("/v2/lib/a/blobs/uploads/?digest={d}")),
        &[],
        Some(&data),
    );
    assert_eq!(resp.status, 201);
    assert_eq!(
        resp.header("Location"),
        Some(format!("/v2/lib/a/blobs/{d}").as_str())
    );
    assert_eq!(resp.header("Docker-Content-Digest"), Some(d.as_str()));
    let get = c.get(&r.url(&format!("/v2/lib/a/blobs/{d}")));
    assert_eq!(get.status, 200);
    assert_eq!(get.body, data);
    assert_eq!(get.header("Docker-Content-Digest"), Some(d.as_str()));
    assert_eq!(get.header("Content-Length"), Some("100000"));
    let head = c.req("HEAD", &r.url(&format!("/v2/lib/a/blobs/{d}")), &[], None);
    assert_eq!(head.status, 200);
    assert_eq!(head.header("Content-Length"), Some("100000"));
    assert_eq!(head.header("Docker-Content-Digest"), Some(d.as_str()));
    let part = c.req(
        "GET",
        &r.url(&format!("/v2/lib/a/blobs/{d}")),
        &[("Range", "bytes=10-19")],
        None,
    );
    assert_eq!(part.status, 206);
    assert_eq!(part.body, &data[10..20]);
    assert_eq!(part.header("Content-Range"), Some("bytes 10-19/100000"));
    let tail = c.req(
        "GET",
        &r.url(&format!("/v2/lib/a/blobs/{d}")),
        &[("Range", "bytes=99990-")],
        None,
    );
    assert_eq!(tail.body, &data[99990..]);
    let bad = c.req(
        "GET",
        &r.url(&format!("/v2/lib/a/blobs/{d}")),
        &[("Range", "bytes=200000-")],
        None,
    );
    assert_eq!(bad.status, 416);
    // another repository cannot read it without a mount
    let other = c.get(&r.url(&format!("/v2/other/blobs/{d}")));
    assert_eq!((other.status, other.code().as_str()), (404, "BLOB_UNKNOWN"));
    // delete, then it is gone
    let del = c.req("DELETE", &r.url(&format!("/v2/lib/a/blobs/{d}")), &[], None);
    assert_eq!(del.status, 202);
    let gone = c.get(&r.url(&format!("/v2/lib/a/blobs/{d}")));
    assert_eq!((gone.status, gone.code().as_str()), (404, "BLOB_UNKNOWN"));
    assert_eq!(
        c.req("DELETE", &r.url(&format!("/v2/lib/a/blobs/{d}")), &[], None)
            .status,
        404
    );
    let inv = c.get(&r.url("/v2/lib/a/blobs/sha256:abc"));
    assert_eq!((inv.status, inv.code().as_str()), (400, "DIGEST_INVALID"));
}

#[test]
fn uploads_chunked_out_of_order_status_and_cancel() {
    uploads_chunked_out_of_order_status_and_cancel_on(RegOpts::default());
}

/// The workflow on any storage (the S3 tests run it on a bucket).
pub(crate) fn uploads_chunked_out_of_order_status_and_cancel_on(o: RegOpts) {
    let r = Registryd::start(o);
    let c = r.client();
    let start = c.req(
        "POST",
        &r.url("/v2/chunky/blobs/uploads/"),
        &[("Content-Length", "0")],
        Some(b""),
    );
    assert_eq!(start.status, 202);
    let loc = start.header("Location").unwrap().to_string();
    let uuid = start.header("Docker-Upload-UUID").unwrap().to_string();
    assert!(loc.ends_with(&uuid));
    assert_eq!(start.header("Range"), Some("0-0"));
    let p1 = c.req(
        "PATCH",
        &r.url(&loc),
        &[
            ("Content-Range", "0-4"),
            ("Content-Type", "application/octet-stream"),
        ],
        Some(b"hello"),
    );
    assert_eq!(p1.status, 202, "{}", p1.text());
    assert_eq!(p1.header("Range"), Some("0-4"));
    // out of order: 416 with the current range, nothing written
    let bad = c.req(
        "PATCH",
        &r.url(&loc),
        &[("Content-Range", "7-9")],
        Some(b"xyz"),
    );
    assert_eq!(bad.status, 416);
    assert_eq!(bad.header("Range"), Some("0-4"));
    assert!(bad.header("Location").is_some());
    let st = c.get(&r.url(&loc));
    assert_eq!(st.status, 204);
    assert_eq!(st.header("Range"), Some("0-4"));
    assert_eq!(st.header("Docker-Upload-UUID"), Some(uuid.as_str()));
    // a streamed chunk without Content-Range (docker's way), then close with the last chunk
    let p2 = c.req("PATCH", &r.url(&loc), &[], Some(b" big"));
    assert_eq!(p2.header("Range"), Some("0-8"));
    let whole = b"hello big world";
    let put = c.req(
        "PUT",
        &r.url(&format!("{loc}?digest={}", digest(whole))),
        &[("Content-Range", "9-14")],
        Some(b" world"),
    );
    assert_eq!(put.status, 201, "{}", put.text());
    assert_eq!(
        c.get(&r.url(&format!("/v2/chunky/blobs/{}", digest(whole))))
            .body,
        whole
    );
    // the session is closed
    let st = c.get(&r.url(&loc));
    assert_eq!(
        (st.status, st.code().as_str()),
        (404, "BLOB_UPLOAD_UNKNOWN")
    );
    // POST then PUT with the whole body
    let s2 = c.req("POST", &r.url("/v2/chunky/blobs/uploads/"), &[], Some(b""));
    let loc2 = s2.header("Location").unwrap().to_string();
    let put2 = c.req(
        "PUT",
        &r.url(&format!("{loc2}?digest={}", digest(b"monolith"))),
        &[],
        Some(b"monolith"),
    );
    assert_eq!(put2.status, 201);
    // cancel
    let s3 = c.req("POST", &r.url("/v2/chunky/blobs/uploads/"), &[], Some(b""));
    let loc3 = s3.header("Location").unwrap().to_string();
    assert_eq!(c.req("DELETE", &r.url(&loc3), &[], None).status, 204);
    assert_eq!(c.get(&r.url(&loc3)).code(), "BLOB_UPLOAD_UNKNOWN");
    assert_eq!(
        c.req(
            "PATCH",
            &r.url("/v2/chunky/blobs/uploads/not-a-uuid"),
            &[],
            Some(b"x")
        )
        .code(),
        "BLOB_UPLOAD_UNKNOWN"
    );
}

#[test]
fn wrong_digest_stores_nothing() {
    let r = Registryd::start(RegOpts::default());
    let c = r.client();
    let claimed = digest(b"what I promised");
    let resp = c.req(
        "POST",
        &r.url(&format!("/v2/w/blobs/uploads/?digest={claimed}")),
        &[],
        Some(b"what I sent"),
    );
    assert_eq!((resp.status, resp.code().as_str()), (400, "DIGEST_INVALID"));
    assert_eq!(
        c.req("HEAD", &r.url(&format!("/v2/w/blobs/{claimed}")), &[], None)
            .status,
        404
    );
    assert_eq!(
        c.req(
            "HEAD",
            &r.url(&format!("/v2/w/blobs/{}", digest(b"what I sent"))),
            &[],
            None
        )
        .status,
        404
    );
    // chunked session closed with a wrong digest
    let s = c.req("POST", &r.url("/v2/w/blobs/uploads/"), &[], Some(b""));
    let loc = s.header("Location").unwrap().to_string();
    c.req("PATCH", &r.url(&loc), &[], Some(b"abc"));
    let put = c.req("PUT", &r.url(&format!("{loc}?digest={claimed}")), &[], None);
    assert_eq!(put.code(), "DIGEST_INVALID");
    let blobs = r.root.join("docker/registry/v2/blobs");
    let count = walk_files(&blobs);
    assert_eq!(count, 0, "a blob was stored under {}", blobs.display());
}

fn walk_files(p: &std::path::Path) -> usize {
    let Ok(rd) = std::fs::read_dir(p) else {
        return 0;
    };
    rd.flatten()
        .map(|e| {
            if e.path().is_dir() {
                walk_files(&e.path())
            } else {
                1
            }
        })
        .sum()
}

#[test]
fn bad_names_never_reach_the_filesystem() {
    let r = Registryd::start(RegOpts {
        tls: false,
        ..RegOpts::default()
    });
    let c = r.client();
    for path in [
        "/v2/UPPER/tags/list",
        "/v2/a..b/tags/list",
        "/v2/-x/manifests/latest",
        "/v2/a%2F..%2F..%2Fetc/tags/list",
    ] {
        let resp = c.get(&r.url(path));
        assert_eq!(
            (resp.status, resp.code().as_str()),
            (400, "NAME_INVALID"),
            "{path}: {}",
            resp.text()
        );
    }
    // raw requests with dot segments and absolute-looking names (clients would normalise these)
    let outside = r.dir.join("escaped");
    for raw in [
        "/v2/../../escaped/blobs/uploads/".to_string(),
        format!("/v2/{}/blobs/uploads/", outside.display()),
        "/v2/%2e%2e/%2e%2e/escaped/blobs/uploads/".to_string(),
        "/v2/a/../../../escaped/blobs/uploads/".to_string(),
    ] {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", r.port)).unwrap();
        write!(s, "POST {raw} HTTP/1.1\r\nHost: x\r\nAuthorization: {}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", basic(USER, PASS)).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        assert!(
            out.starts_with("HTTP/1.1 400") || out.starts_with("HTTP/1.1 404"),
            "{raw}: {out}"
        );
        assert!(
            out.contains("NAME_INVALID") || out.contains("UNSUPPORTED"),
            "{raw}: {out}"
        );
    }
    assert!(!outside.exists());
    assert!(!r.dir.join("data/docker/registry/escaped").exists());
    assert!(!r.dir.join("data/escaped").exists());
}

#[test]
fn manifests_by_tag_and_digest_of_every_kind() {
    manifests_by_tag_and_digest_of_every_kind_on(RegOpts::default());
}

/// The workflow on any storage (the S3 tests run it on a bucket).
pub(crate) fn manifests_by_tag_and_digest_of_every_kind_on(o: RegOpts) {
    let r = Registryd::start(o);
    let c = r.client();
    let cfg = br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    let cfg_d = push_blob(&r, &c, "img", cfg);
    let layer = b"pretend gzip layer";
    let layer_d = push_blob(&r, &c, "img", layer);
    // OCI manifest, with an unknown field kept byte-exact
    let oci = manifest_json(
        OCI_MANIFEST,
        (OCI_CONFIG, &cfg_d, cfg.len()),
        &[(&layer_d, layer.len())],
        r#","x-site":{"z":1,"a":2}"#,
    );
    let put = c.req(
        "PUT",
        &r.url("/v2/img/manifests/oci"),
        &[("Content-Type", OCI_MANIFEST)],
        Some(oci.as_bytes()),
    );
    assert_eq!(put.status, 201, "{}", put.text());
    let oci_d = digest(oci.as_bytes());
    assert_eq!(put.header("Docker-Content-Digest"), Some(oci_d.as_str()));
    assert_eq!(
        put.header("Location"),
        Some(format!("/v2/img/manifests/{oci_d}").as_str())
    );
    // served with its own type whatever the Accept header says (Distribution 404s here)
    let get = c.req(
        "GET",
        &r.url("/v2/img/manifests/oci"),
        &[("Accept", DOCKER_MANIFEST)],
        None,
    );
    assert_eq!(get.status, 200);
    assert_eq!(get.body, oci.as_bytes());
    assert_eq!(get.header("Content-Type"), Some(OCI_MANIFEST));
    assert_eq!(get.header("Docker-Content-Digest"), Some(oci_d.as_str()));
    let head = c.req("HEAD", &r.url("/v2/img/manifests/oci"), &[], None);
    for h in [
        "Content-Type",
        "Docker-Content-Digest",
        "Content-Length",
        "ETag",
    ] {
        assert_eq!(
            head.header(h),
            get.header(h),
            "HEAD differs from GET in {h}"
        );
    }
    assert_eq!(
        c.get(&r.url(&format!("/v2/img/manifests/{oci_d}"))).body,
        oci.as_bytes()
    );
    // Docker schema2 manifest
    let dk = manifest_json(
        DOCKER_MANIFEST,
        (DOCKER_CONFIG, &cfg_d, cfg.len()),
        &[(&layer_d, layer.len())],
        "",
    );
    assert_eq!(
        c.req(
            "PUT",
            &r.url("/v2/img/manifests/docker"),
            &[("Content-Type", DOCKER_MANIFEST)],
            Some(dk.as_bytes())
        )
        .status,
        201
    );
    assert_eq!(
        c.get(&r.url("/v2/img/manifests/docker"))
            .header("Content-Type"),
        Some(DOCKER_MANIFEST)
    );
    // Docker manifest list and OCI index over them
    let dk_d = digest(dk.as_bytes());
    let list = format!(
        r#"{{"schemaVersion":2,"mediaType":"{DOCKER_LIST}","manifests":[{{"mediaType":"{DOCKER_MANIFEST}","digest":"{dk_d}","size":{},"platform":{{"architecture":"amd64","os":"linux"}}}}]}}"#,
        dk.len()
    );
    assert_eq!(
        c.req(
            "PUT",
            &r.url("/v2/img/manifests/list"),
            &[("Content-Type", DOCKER_LIST)],
            Some(list.as_bytes())
        )
        .status,
        201
    );
    assert_eq!(
        c.get(&r.url("/v2/img/manifests/list"))
            .header("Content-Type"),
        Some(DOCKER_LIST)
    );
    let index = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[{{"mediaType":"{OCI_MANIFEST}","digest":"{oci_d}","size":{}}}]}}"#,
        oci.len()
    );
    let idx_put = c.req(
        "PUT",
        &r.url(&format!("/v2/img/manifests/{}", digest(index.as_bytes()))),
        &[("Content-Type", OCI_INDEX)],
        Some(index.as_bytes()),
    );
    assert_eq!(idx_put.status, 201);
    // an index naming a manifest the repository lacks
    let dangling = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[{{"mediaType":"{OCI_MANIFEST}","digest":"{}","size":3}}]}}"#,
        digest(b"nope")
    );
    assert_eq!(
        c.req(
            "PUT",
            &r.url("/v2/img/manifests/dangling"),
            &[("Content-Type", OCI_INDEX)],
            Some(dangling.as_bytes())
        )
        .code(),
        "MANIFEST_BLOB_UNKNOWN"
    );
    // a digest reference that does not match the body
    let wrong = c.req(
        "PUT",
        &r.url(&format!("/v2/img/manifests/{}", digest(b"x"))),
        &[("Content-Type", OCI_MANIFEST)],
        Some(oci.as_bytes()),
    );
    assert_eq!(
        (wrong.status, wrong.code().as_str()),
        (400, "DIGEST_INVALID")
    );
    // DELETE by tag removes only the tag
    assert_eq!(
        c.req("DELETE", &r.url("/v2/img/manifests/oci"), &[], None)
            .status,
        202
    );
    assert_eq!(
        c.get(&r.url("/v2/img/manifests/oci")).code(),
        "MANIFEST_UNKNOWN"
    );
    assert_eq!(
        c.get(&r.url(&format!("/v2/img/manifests/{oci_d}"))).status,
        200
    );
    // DELETE by digest removes the revision and every tag on it
    assert_eq!(
        c.req(
            "PUT",
            &r.url("/v2/img/manifests/again"),
            &[("Content-Type", DOCKER_MANIFEST)],
            Some(dk.as_bytes())
        )
        .status,
        201
    );
    assert_eq!(
        c.req(
            "DELETE",
            &r.url(&format!("/v2/img/manifests/{dk_d}")),
            &[],
            None
        )
        .status,
        202
    );
    assert_eq!(c.get(&r.url("/v2/img/manifests/docker")).status, 404);
    assert_eq!(c.get(&r.url("/v2/img/manifests/again")).status, 404);
    assert_eq!(
        c.req(
            "DELETE",
            &r.url(&format!("/v2/img/manifests/{dk_d}")),
            &[],
            None
        )
        .code(),
        "MANIFEST_UNKNOWN"
    );
}

#[test]
fn manifest_errors() {
    manifest_errors_on(RegOpts::default());
}

/// The workflow on any storage (the S3 tests run it on a bucket).
pub(crate) fn manifest_errors_on(o: RegOpts) {
    let r = Registryd::start(o);
    let c = r.client();
    let cfg_d = push_blob(&r, &c, "m", b"{}");
    let missing = digest(b"never pushed");
    let m = manifest_json(OCI_MANIFEST, (OCI_CONFIG, &cfg_d, 2), &[(&missing, 12)], "");
    let resp = c.req(
        "PUT",
        &r.url("/v2/m/manifests/t"),
        &[("Content-Type", OCI_MANIFEST)],
        Some(m.as_bytes()),
    );
    assert_eq!(
        (resp.status, resp.code().as_str()),
        (400, "MANIFEST_BLOB_UNKNOWN")
    );
    assert_eq!(resp.json()["errors"][0]["detail"]["digest"], json!(missing));
    for bad in [&b"{not json"[..], br#"{"schemaVersion":2}"#, br#"[]"#] {
        let resp = c.req(
            "PUT",
            &r.url("/v2/m/manifests/t"),
            &[("Content-Type", OCI_MANIFEST)],
            Some(bad),
        );
        assert_eq!(
            (resp.status, resp.code().as_str()),
            (400, "MANIFEST_INVALID"),
            "{}",
            String::from_utf8_lossy(bad)
        );
    }
    let mismatch = manifest_json(OCI_MANIFEST, (OCI_CONFIG, &cfg_d, 2), &[], "");
    let resp = c.req(
        "PUT",
        &r.url("/v2/m/manifests/t"),
        &[("Content-Type", DOCKER_MANIFEST)],
        Some(mismatch.as_bytes()),
    );
    assert_eq!(resp.code(), "MANIFEST_INVALID");
    let unknown = c.get(&r.url("/v2/m/manifests/nope"));
    assert_eq!(
        (unknown.status, unknown.code().as_str()),
        (404, "MANIFEST_UNKNOWN")
    );
    let norepo = c.get(&r.url("/v2/never/manifests/latest"));
    assert_eq!(
        (norepo.status, norepo.code().as_str()),
        (404, "NAME_UNKNOWN")
    );
    let notags = c.get(&r.url("/v2/never/tags/list"));
    assert_eq!(
        (notags.status, notags.code().as_str()),
        (404, "NAME_UNKNOWN")
    );
    let big = vec![b' '; 5 * 1024 * 1024];
    assert_eq!(
        c.req(
            "PUT",
            &r.url("/v2/m/manifests/big"),
            &[("Content-Type", OCI_MANIFEST)],
            Some(&big)
        )
        .status,
        413
    );
}

#[test]
fn cross_repository_mount() {
    cross_repository_mount_on(RegOpts::default());
}

/// The workflow on any storage (the S3 tests run it on a bucket).
pub(crate) fn cross_repository_mount_on(o: RegOpts) {
    let r = Registryd::start(o);
    let c = r.client();
    let d = push_blob(&r, &c, "src/repo", b"shared layer");
    let m = c.req(
        "POST",
        &r.url(&format!("/v2/dst/blobs/uploads/?mount={d}&from=src/repo")),
        &[],
        Some(b""),
    );
    assert_eq!(m.status, 201);
    assert_eq!(m.header("Docker-Content-Digest"), Some(d.as_str()));
    assert_eq!(
        c.get(&r.url(&format!("/v2/dst/blobs/{d}"))).body,
        b"shared layer"
    );
    // unknown blob: an upload session instead
    let unknown = digest(b"elsewhere");
    let m = c.req(
        "POST",
        &r.url(&format!(
            "/v2/dst/blobs/uploads/?mount={unknown}&from=src/repo"
        )),
        &[],
        Some(b""),
    );
    assert_eq!(m.status, 202);
    assert!(
        m.header("Location")
            .unwrap()
            .contains("/v2/dst/blobs/uploads/")
    );
}

#[test]
fn tag_and_catalog_paging() {
    tag_and_catalog_paging_on(RegOpts::default());
}

/// The workflow on any storage (the S3 tests run it on a bucket).
pub(crate) fn tag_and_catalog_paging_on(o: RegOpts) {
    let r = Registryd::start(o);
    let c = r.client();
    let cfg_d = push_blob(&r, &c, "p/one", b"{}");
    let m = manifest_json(OCI_MANIFEST, (OCI_CONFIG, &cfg_d, 2), &[], "");
    for t in ["b", "A", "c", "d", "e"] {
        assert_eq!(
            c.req(
                "PUT",
                &r.url(&format!("/v2/p/one/manifests/{t}")),
                &[("Content-Type", OCI_MANIFEST)],
                Some(m.as_bytes())
            )
            .status,
            201
        );
    }
    let all = c.get(&r.url("/v2/p/one/tags/list"));
    assert_eq!(
        all.json(),
        json!({"name": "p/one", "tags": ["A", "b", "c", "d", "e"]})
    );
    let p1 = c.get(&r.url("/v2/p/one/tags/list?n=2"));
    assert_eq!(p1.json()["tags"], json!(["A", "b"]));
    let link = p1.header("Link").unwrap().to_string();
    assert_eq!(link, "</v2/p/one/tags/list?n=2&last=b>; rel=\"next\"");
    let next = link.trim_start_matches('<').split('>').next().unwrap();
    let p2 = c.get(&r.url(next));
    assert_eq!(p2.json()["tags"], json!(["c", "d"]));
    let p3 = c.get(&r.url("/v2/p/one/tags/list?n=2&last=d"));
    assert_eq!(p3.json()["tags"], json!(["e"]));
    assert!(p3.header("Link").is_none());
    let zero = c.get(&r.url("/v2/p/one/tags/list?n=0"));
    assert_eq!(zero.json()["tags"], json!([]));
    assert!(zero.header("Link").is_none());
    for repo in ["p/two", "a", "z/z"] {
        push_blob(&r, &c, repo, b"{}");
        c.req(
            "PUT",
            &r.url(&format!("/v2/{repo}/manifests/latest")),
            &[("Content-Type", OCI_MANIFEST)],
            Some(m.as_bytes()),
        );
    }
    let cat = c.get(&r.url("/v2/_catalog"));
    assert_eq!(
        cat.json(),
        json!({"repositories": ["a", "p/one", "p/two", "z/z"]})
    );
    let c1 = c.get(&r.url("/v2/_catalog?n=3"));
    assert_eq!(c1.json()["repositories"], json!(["a", "p/one", "p/two"]));
    assert_eq!(
        c1.header("Link"),
        Some("</v2/_catalog?n=3&last=p%2Ftwo>; rel=\"next\"")
    );
    let c2 = c.get(&r.url("/v2/_catalog?n=3&last=p%2Ftwo"));
    assert_eq!(c2.json()["repositories"], json!(["z/z"]));
}

#[test]
fn referrers_api() {
    referrers_api_on(RegOpts::default());
}

/// The workflow on any storage (the S3 tests run it on a bucket).
pub(crate) fn referrers_api_on(o: RegOpts) {
    let r = Registryd::start(o);
    let c = r.client();
    let cfg_d = push_blob(&r, &c, "ref", b"{}");
    let subject = manifest_json(OCI_MANIFEST, (OCI_CONFIG, &cfg_d, 2), &[], "");
    assert_eq!(
        c.req(
            "PUT",
            &r.url("/v2/ref/manifests/v1"),
            &[("Content-Type", OCI_MANIFEST)],
            Some(subject.as_bytes())
        )
        .status,
        201
    );
    let sd = digest(subject.as_bytes());
    let empty_d = push_blob(&r, &c, "ref", b"{}");
    let sbom = manifest_json(
        OCI_MANIFEST,
        ("application/vnd.oci.empty.v1+json", &empty_d, 2),
        &[],
        &format!(
            r#","artifactType":"application/vnd.example.sbom.v1","subject":{{"mediaType":"{OCI_MANIFEST}","digest":"{sd}","size":{}}},"annotations":{{"org.example.kind":"sbom"}}"#,
            subject.len()
        ),
    );
    let put = c.req(
        "PUT",
        &r.url(&format!("/v2/ref/manifests/{}", digest(sbom.as_bytes()))),
        &[("Content-Type", OCI_MANIFEST)],
        Some(sbom.as_bytes()),
    );
    assert_eq!(put.status, 201, "{}", put.text());
    assert_eq!(put.header("OCI-Subject"), Some(sd.as_str()));
    // a signature whose type comes from its config
    let sig = manifest_json(
        OCI_MANIFEST,
        ("application/vnd.example.signature.v1", &cfg_d, 2),
        &[],
        &format!(
            r#","subject":{{"mediaType":"{OCI_MANIFEST}","digest":"{sd}","size":{}}}"#,
            subject.len()
        ),
    );
    assert_eq!(
        c.req(
            "PUT",
            &r.url("/v2/ref/manifests/sig"),
            &[("Content-Type", OCI_MANIFEST)],
            Some(sig.as_bytes())
        )
        .status,
        201
    );
    let all = c.get(&r.url(&format!("/v2/ref/referrers/{sd}")));
    assert_eq!(all.status, 200);
    assert_eq!(all.header("Content-Type"), Some(OCI_INDEX));
    let v = all.json();
    assert_eq!(v["mediaType"], json!(OCI_INDEX));
    let mut types: Vec<String> = v["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["artifactType"].as_str().unwrap().to_string())
        .collect();
    types.sort();
    assert_eq!(
        types,
        [
            "application/vnd.example.sbom.v1",
            "application/vnd.example.signature.v1"
        ]
    );
    let sbom_entry = v["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["artifactType"] == "application/vnd.example.sbom.v1")
        .unwrap();
    assert_eq!(sbom_entry["annotations"]["org.example.kind"], "sbom");
    assert_eq!(sbom_entry["digest"], json!(digest(sbom.as_bytes())));
    let filtered = c.get(&r.url(&format!(
        "/v2/ref/referrers/{sd}?artifactType=application%2Fvnd.example.sbom.v1"
    )));
    assert_eq!(filtered.header("OCI-Filters-Applied"), Some("artifactType"));
    assert_eq!(filtered.json()["manifests"].as_array().unwrap().len(), 1);
    let none = c.get(&r.url(&format!("/v2/ref/referrers/{}", digest(b"other"))));
    assert_eq!(
        (none.status, none.json()["manifests"].clone()),
        (200, json!([]))
    );
    assert_eq!(c.get(&r.url("/v2/ref/referrers/sha256:zz")).status, 400);
    // deleting the referrer takes it out of the list
    c.req(
        "DELETE",
        &r.url(&format!("/v2/ref/manifests/{}", digest(sbom.as_bytes()))),
        &[],
        None,
    );
    assert_eq!(
        c.get(&r.url(&format!("/v2/ref/referrers/{sd}"))).json()["manifests"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[test]
fn search_follows_pushes_and_deletes() {
    let r = Registryd::start(RegOpts::default());
    let c = r.client();
    let cfg_d = push_blob(&r, &c, "library/sl6-umd3condv4", b"{}");
    let m = manifest_json(DOCKER_MANIFEST, (DOCKER_CONFIG, &cfg_d, 2), &[], "");
    for repo in ["library/sl6-umd3condv4", "library/sl6-first", "sl7-worker"] {
        push_blob(&r, &c, repo, b"{}");
        assert_eq!(
            c.req(
                "PUT",
                &r.url(&format!("/v2/{repo}/manifests/latest")),
                &[("Content-Type", DOCKER_MANIFEST)],
                Some(m.as_bytes())
            )
            .status,
            201
        );
    }
    let s = c.get(&r.url("/v1/search?q=sl6&n=25&page=1"));
    assert_eq!(s.status, 200);
    let v = s.json();
    assert_eq!(v["num_results"], 2);
    assert_eq!(v["query"], "sl6");
    let names: Vec<&str> = v["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["library/sl6-first", "library/sl6-umd3condv4"]);
    assert_eq!(v["results"][0]["star_count"], 0);
    assert_eq!(v["results"][0]["is_official"], false);
    // paging
    let p = c.get(&r.url("/v1/search?q=sl&n=2&page=2")).json();
    assert_eq!(p["results"].as_array().unwrap().len(), 1);
    assert_eq!(p["num_pages"], 2);
    // after deleting the only manifest of a repository it no longer shows
    c.req(
        "DELETE",
        &r.url(&format!(
            "/v2/library/sl6-first/manifests/{}",
            digest(m.as_bytes())
        )),
        &[],
        None,
    );
    let after = c.get(&r.url("/v1/search?q=sl6")).json();
    assert_eq!(after["num_results"], 1);
    assert_eq!(after["results"][0]["name"], "library/sl6-umd3condv4");
    // the v1 ping docker does before searching answers without credentials
    assert_eq!(r.anonymous().get(&r.url("/v1/_ping")).status, 200);
}

#[test]
fn delete_disabled_is_refused() {
    let r = Registryd::start(RegOpts {
        delete: false,
        ..RegOpts::default()
    });
    let c = r.client();
    let d = push_blob(&r, &c, "keep", b"data");
    let resp = c.req("DELETE", &r.url(&format!("/v2/keep/blobs/{d}")), &[], None);
    assert_eq!((resp.status, resp.code().as_str()), (405, "UNSUPPORTED"));
    assert_eq!(
        c.req("DELETE", &r.url("/v2/keep/manifests/latest"), &[], None)
            .status,
        405
    );
    assert_eq!(c.get(&r.url(&format!("/v2/keep/blobs/{d}"))).status, 200);
}

#[test]
fn oversized_declared_body_is_refused_and_server_lives() {
    let r = Registryd::start(RegOpts {
        tls: false,
        ..RegOpts::default()
    });
    let mut s = std::net::TcpStream::connect(("127.0.0.1", r.port)).unwrap();
    write!(
        s,
        "PUT /v2/x/blobs/uploads/abc HTTP/1.1\r\nHost: x\r\nContent-Length: 999999999999999\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 413"), "{out}");
    assert!(out.contains("SIZE_INVALID"));
    assert_eq!(r.client().get(&r.url("/v2/")).status, 200);
}

#[test]
fn crash_mid_upload_leaves_no_bad_blob_and_stale_sessions_are_purged() {
    let mut r = Registryd::start(RegOpts {
        tls: false,
        ..RegOpts::default()
    });
    let c = r.client();
    let keep = push_blob(&r, &c, "crash", b"finished before the crash");
    // A slow streamed upload, killed with SIGKILL mid-stream.
    let s = c.req("POST", &r.url("/v2/crash/blobs/uploads/"), &[], Some(b""));
    let loc = s.header("Location").unwrap().to_string();
    let mut sock = std::net::TcpStream::connect(("127.0.0.1", r.port)).unwrap();
    write!(sock, "PATCH {loc} HTTP/1.1\r\nHost: x\r\nAuthorization: {}\r\nTransfer-Encoding: chunked\r\n\r\n", basic(USER, PASS)).unwrap();
    let chunk = vec![7u8; 64 * 1024];
    for _ in 0..32 {
        write!(sock, "{:x}\r\n", chunk.len()).unwrap();
        sock.write_all(&chunk).unwrap();
        sock.write_all(b"\r\n").unwrap();
    }
    sock.flush().unwrap();
    // crash only once the server is mid-stream: part of the body is on disk
    let id = s.header("Docker-Upload-UUID").unwrap().to_string();
    let data = r.root.join(format!(
        "docker/registry/v2/repositories/crash/_uploads/{id}/data"
    ));
    wait_for("part of the streamed body to reach the disk", || {
        let len = std::fs::metadata(&data).map(|m| m.len()).unwrap_or(0);
        (len > 0).then_some(())
    });
    r.crash_and_restart();
    drop(sock);
    assert_blobs_intact(&r.root);
    let c = r.client();
    assert_eq!(
        c.get(&r.url(&format!("/v2/crash/blobs/{keep}"))).status,
        200
    );
    // the interrupted session is still there and can be finished or cancelled
    let st = c.get(&r.url(&loc));
    assert_eq!(st.status, 204);
    assert_eq!(c.req("DELETE", &r.url(&loc), &[], None).status, 204);
    // a session older than the purge age disappears at start
    let old = c.req("POST", &r.url("/v2/crash/blobs/uploads/"), &[], Some(b""));
    let id = old.header("Docker-Upload-UUID").unwrap().to_string();
    let dir = r.root.join(format!(
        "docker/registry/v2/repositories/crash/_uploads/{id}"
    ));
    std::fs::write(dir.join("startedat"), "2017-03-27T12:00:00Z").unwrap();
    r.crash_and_restart();
    wait_for("the stale upload session to be purged", || {
        (!dir.exists()).then_some(())
    });
    wait_for("the purge to be logged", || {
        r.logs()
            .contains("upload purging: removed 1 sessions")
            .then_some(())
    });
}

#[test]
fn htpasswd_is_reloaded_when_it_changes() {
    let r = Registryd::start(RegOpts::default());
    assert_eq!(r.client().get(&r.url("/v2/")).status, 200);
    let pw = r.dir.join("htpasswd");
    let newbie_line = berth::auth::htpasswd::entry("newbie", "fresh").unwrap();
    std::fs::write(&pw, format!("{newbie_line}\n")).unwrap();
    let newbie = r.anonymous().with_auth(&basic("newbie", "fresh"));
    wait_for("the new user to be accepted", || {
        (newbie.get(&r.url("/v2/")).status == 200).then_some(())
    });
    assert_eq!(
        r.client().get(&r.url("/v2/")).status,
        401,
        "old user still accepted after reload"
    );
    // a bad line added: it is logged with its line, the good users stay
    std::fs::write(&pw, format!("{newbie_line}\nintruder:{{SHA}}xyz\n")).unwrap();
    // (the file is looked at when a request comes)
    wait_for("the bad line to be logged", || {
        newbie.get(&r.url("/v2/"));
        r.logs()
            .contains(":2: user \"intruder\": the hash is not a bcrypt hash")
            .then_some(())
    });
    assert_eq!(newbie.get(&r.url("/v2/")).status, 200);
    let intruder = r.anonymous().with_auth(&basic("intruder", "xyz"));
    assert_eq!(intruder.get(&r.url("/v2/")).status, 401);
    // a user removed in a broken edit loses access all the same
    std::fs::write(&pw, "# newbie removed\nintruder:{SHA}xyz\n").unwrap();
    wait_for("the removed user to be refused", || {
        (newbie.get(&r.url("/v2/")).status == 401).then_some(())
    });
}

#[test]
fn tls_limits_handshake_timeout_and_connection_cap() {
    // A client that never speaks TLS is dropped after the handshake timeout.
    let r = Registryd::start(RegOpts {
        env: vec![("BERTH_HANDSHAKE_TIMEOUT".into(), "1".into())],
        ..RegOpts::default()
    });
    let mut idle = std::net::TcpStream::connect(("127.0.0.1", r.port)).unwrap();
    let me = idle.local_addr().unwrap();
    // (a generous safety net: the server is meant to close it long before)
    assert_closed(&mut idle);
    let why = format!("connection from {me}: TLS handshake took too long");
    wait_for("the handshake timeout to be logged", || {
        r.logs().contains(&why).then_some(())
    });
    drop(r);

    // The cap. Silent connections are kept for a handshake timeout far longer
    // than the test's deadlines, so one closed meanwhile was refused.
    let r = Registryd::start(RegOpts {
        env: vec![
            ("BERTH_HANDSHAKE_TIMEOUT".into(), "600".into()),
            ("BERTH_MAX_CONNECTIONS".into(), "3".into()),
        ],
        ..RegOpts::default()
    });
    // Silent connections fill it; more are opened until the server says it is
    // full (the start-up probe may still hold a slot for a moment).
    let mut held = Vec::new();
    wait_for("the connection limit to be logged", || {
        if held.len() < 16 {
            held.push(std::net::TcpStream::connect(("127.0.0.1", r.port)).unwrap());
        }
        r.logs()
            .contains("connection limit of 3 reached; refusing new connections")
            .then_some(())
    });
    // one over the cap is closed without waiting for its handshake
    wait_for("a connection over the cap to be closed", || {
        held.iter().position(closed_now)
    });
    // once the held ones go, their slots come back
    drop(held);
    let c = r.client();
    let auth = c.auth.clone().unwrap();
    wait_for(
        "a request to be served after the held connections left",
        || {
            // (refused connections are errors here, not panics)
            let resp = c
                .agent
                .get(r.url("/v2/"))
                .header("Authorization", &auth)
                .call();
            resp.ok().filter(|resp| resp.status() == 200)
        },
    );
}

/// The server has closed `s` (EOF, or a reset) by now; false while it is open.
fn closed_now(s: &std::net::TcpStream) -> bool {
    s.set_nonblocking(true).unwrap();
    let r = (&*s).read(&mut [0u8; 1]);
    s.set_nonblocking(false).unwrap();
    match r {
        Ok(n) => n == 0,
        Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
    }
}

/// The server closes `s` (EOF, or a reset) within a generous safety net, rather
/// than leaving it open until the read times out.
fn assert_closed(s: &mut std::net::TcpStream) {
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    let mut rest = Vec::new();
    if let Err(e) = s.read_to_end(&mut rest) {
        assert!(
            !matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
            "the server kept the connection open: {e}"
        );
    }
    assert!(rest.is_empty(), "the server answered: {rest:?}");
}

#[test]
fn tls13_only_refuses_tls12() {
    need("openssl");
    let r = Registryd::start(RegOpts {
        extra: String::new(),
        env: vec![("REGISTRY_HTTP_TLS_MINIMUMTLS".into(), "tls1.3".into())],
        ..RegOpts::default()
    });
    let try_version = |flag: &str| {
        std::process::Command::new("sh")
            .arg("-c")
            .arg(format!(
                "echo | openssl s_client -connect 127.0.0.1:{} {flag} -CAfile {} 2>&1",
                r.port,
                pki().ca.display()
            ))
            .output()
            .unwrap()
    };
    let o12 = try_version("-tls1_2");
    assert!(
        String::from_utf8_lossy(&o12.stdout).contains("alert") || !o12.status.success(),
        "TLS 1.2 accepted"
    );
    let o13 = try_version("-tls1_3");
    assert!(
        String::from_utf8_lossy(&o13.stdout).contains("TLSv1.3"),
        "{}",
        String::from_utf8_lossy(&o13.stdout)
    );
}

#[test]
fn json_access_log() {
    let r = Registryd::start(RegOpts {
        env: vec![("REGISTRY_LOG_FORMATTER".into(), "json".into())],
        ..RegOpts::default()
    });
    assert_eq!(r.client().get(&r.url("/v2/_catalog")).status, 200);
    let line = wait_for("the access line of the request", || {
        r.logs()
            .lines()
            .find(|l| l.contains("\"msg\":\"access\"") && l.contains("_catalog"))
            .map(str::to_string)
    });
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["user"], USER);
    assert_eq!(v["method"], "GET");
    assert_eq!(v["status"], 200);
    assert!(v["remote"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert!(v["duration_ms"].is_number());
    assert!(v["bytes"].as_u64().unwrap() > 0);
}

/// Send raw bytes, return what came back before the server closed.
fn raw_exchange(port: u16, bytes: &[u8]) -> String {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(bytes).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn request_smuggling_is_refused_and_the_server_lives() {
    let r = Registryd::start(RegOpts {
        tls: false,
        ..RegOpts::default()
    });
    // a chunk-size line that would read as a request line to a laxer parser,
    // carrying a forged peer and a body length meant to exhaust memory
    let smuggled = b"POST /nope HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3a;x /v2/ HTTP/1.1\r\nContent-Length: 99999999999999\r\nX-Berth-Peer: 1.1.1.1:1\r\n\r\n\r\n0\r\n\r\n";
    let out = raw_exchange(r.port, smuggled);
    // /nope is answered; what hid in its body never is (it would get a 401)
    assert!(out.starts_with("HTTP/1.1 404"), "{out}");
    assert!(
        !out.contains("401"),
        "the smuggled request was answered: {out}"
    );
    // a bare LF hiding a Content-Length from one parser but not the other
    let bare_lf = b"GET /v2/ HTTP/1.1\r\nHost: x\r\nA: b\nContent-Length: 60\r\n\r\nGET /v2/ HTTP/1.1\r\nContent-Length: 99999999999999\r\n\r\n";
    let out = raw_exchange(r.port, bare_lf);
    assert!(out.starts_with("HTTP/1.1 400"), "{out}");
    assert_eq!(out.matches("HTTP/1.1").count(), 1, "{out}");
    // an early answer to a chunked upload does not let its body be read as requests
    let early = b"PATCH /v2/x/blobs/uploads/nope HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1c\r\nGET /v2/_catalog HTTP/1.1\r\n\r\n\r\n0\r\n\r\n";
    let out = raw_exchange(r.port, early);
    assert!(out.starts_with("HTTP/1.1 401"), "{out}");
    assert!(
        !out.contains("repositories"),
        "the body was served as a request: {out}"
    );
    assert_eq!(
        r.client().get(&r.url("/v2/")).status,
        200,
        "the server died"
    );
    assert!(
        !r.logs().contains("1.1.1.1"),
        "a forged peer reached the log"
    );
}

#[test]
fn a_password_guesser_is_throttled() {
    let r = Registryd::start(RegOpts::default());
    // 20 wrong guesses at once (each costs the guesser the failure delay)
    std::thread::scope(|s| {
        for i in 0..20 {
            let r = &r;
            s.spawn(move || {
                let c = r.anonymous().with_auth(&basic(USER, &format!("guess-{i}")));
                assert_eq!(c.get(&r.url("/v2/")).status, 401);
            });
        }
    });
    // every guess went through the password check (logged before its answer)
    let failed = || r.logs().matches("failed login for GET /v2/").count();
    assert_eq!(failed(), 20, "{}", r.logs());
    let next = r
        .anonymous()
        .with_auth(&basic(USER, "guess-21"))
        .get(&r.url("/v2/"));
    assert_eq!(
        (next.status, next.code().as_str()),
        (429, "TOOMANYREQUESTS")
    );
    assert_eq!(next.header("Retry-After"), Some("60"));
    // A throttled guess never reaches the check: no bcrypt and no failure delay
    // (a wrong password that did would have logged its failed login first).
    assert_eq!(
        failed(),
        20,
        "a throttled guess still went through the password check"
    );
    // even the right password waits out the window from that address
    assert_eq!(r.client().get(&r.url("/v2/")).status, 429);
    assert_eq!(failed(), 20);
}

/// Bodies large enough to be handed to the front (which then sends them
/// itself, past the relay), over TLS and plain HTTP, full and ranged, several
/// on one kept-alive connection with small answers between them: every byte
/// in order, every answer after them intact.
#[test]
pub(crate) fn large_bodies_on_a_kept_alive_connection() {
    for tls in [true, false] {
        let r = Registryd::start(RegOpts {
            tls,
            ..RegOpts::default()
        });
        let c = r.client();
        let mut data = vec![0u8; 3 * 1024 * 1024 + 17];
        berth::util::random_bytes(&mut data);
        let d = push_blob(&r, &c, "big/blob", &data);
        let url = r.url(&format!("/v2/big/blob/blobs/{d}"));
        for round in 0..3 {
            let full = c.get(&url);
            assert_eq!(full.status, 200, "tls {tls} round {round}");
            assert!(
                full.body == data,
                "tls {tls} round {round}: the body differs"
            );
            let part = c.req("GET", &url, &[("Range", "bytes=1000-2999999")], None);
            assert_eq!(part.status, 206);
            assert!(
                part.body == data[1000..3_000_000],
                "tls {tls}: the range differs"
            );
            let head = c.req("HEAD", &url, &[], None);
            assert_eq!(
                head.header("Content-Length"),
                Some(data.len().to_string().as_str())
            );
            let base = c.get(&r.url("/v2/"));
            assert_eq!((base.status, base.text()), (200, "{}".to_string()));
        }
    }
}

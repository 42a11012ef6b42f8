//! Attacks on registryd that once worked, each kept as a regression test: worker
//! exhaustion by idle connections, cross-repository upload sessions corrupting
//! blobs, Content-Range overflow, non-ASCII header bytes.

use crate::harness::*;
use std::io::{Read, Write};
use std::time::Duration;

/// What 66 idle TLS connections did to registryd's 64 workers: an upgrade head
/// to an unauthenticated endpoint, or a body that never comes, held a worker
/// until the 300 s idle timeout and nobody else was served.
#[test]
fn idle_unauthenticated_connections_cannot_starve_the_workers() {
    let r = Registryd::start(RegOpts::default());
    let upload = "/v2/p/a/blobs/uploads/0f6f0b3c-7c1f-4a51-9d3c-2f1e6a4c9b10";
    let heads = [
        "GET /v1/_ping HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n\r\n"
            .to_string(),
        "GET /v1/_ping HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n".to_string(),
        format!("PATCH {upload} HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n"),
        format!(
            "PATCH {upload} HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: tcp\r\nAuthorization: {}\r\n\r\n",
            basic(USER, "wrong")
        ),
    ];
    let mut held = Vec::new();
    for i in 0..72 {
        let mut s = tls_connect(r.port);
        s.write_all(heads[i % heads.len()].as_bytes()).unwrap();
        s.flush().unwrap();
        held.push(s);
    }
    // every one is answered without its body...
    for (i, s) in held.iter_mut().enumerate() {
        let (status, head) = read_head(s);
        let want = if i % heads.len() < 2 { 200 } else { 401 };
        assert_eq!(status, want, "{head}");
        assert!(head.contains("Connection: close"), "{head}");
    }
    // ...and, while they are all still open, a user is served
    let c = r.client();
    assert_eq!(c.get(&r.url("/v2/")).status, 200);
    assert_eq!(c.get(&r.url("/v2/_catalog")).status, 200);
    // the server closes them: nothing of theirs is waited for
    for s in held.iter_mut() {
        s.sock
            .set_read_timeout(Some(Duration::from_secs(120)))
            .unwrap();
        assert_closed(s);
    }
}

/// Authenticated uploads whose bodies stall hold a worker each, but more workers
/// start while all are busy, and a stalled body is cut off by the body timeout
/// with the session rolled back to its last whole chunk.
#[test]
fn stalled_uploads_neither_exhaust_workers_nor_hang() {
    let r = Registryd::start(RegOpts {
        args: vec!["--workers".into(), "2".into()],
        env: vec![("BERTH_BODY_TIMEOUT".into(), "2".into())],
        ..RegOpts::default()
    });
    let c = r.client();
    let mut held = Vec::new();
    let mut sessions = Vec::new();
    for _ in 0..6 {
        let start = c.req("POST", &r.url("/v2/p/a/blobs/uploads/"), &[], None);
        assert_eq!(start.status, 202);
        let loc = start.header("Location").unwrap().to_string();
        let path = loc.trim_start_matches(&r.base()).to_string();
        let mut s = tls_connect(r.port);
        write!(
            s,
            "PATCH {path} HTTP/1.1\r\nHost: x\r\nAuthorization: {}\r\nContent-Length: 1000000\r\n\r\n0123456789",
            basic(USER, PASS)
        )
        .unwrap();
        s.flush().unwrap();
        held.push(s);
        sessions.push(path);
    }
    // six handlers are blocked reading bodies; two workers were kept ready
    assert_eq!(c.get(&r.url("/v2/")).status, 200);
    // the stalled bodies are cut off; no session keeps a partial chunk
    for s in held.iter_mut() {
        s.sock
            .set_read_timeout(Some(Duration::from_secs(120)))
            .unwrap();
        assert_closed(s);
    }
    for path in &sessions {
        let st = wait_for("the session to be rolled back", || {
            let st = c.get(&r.url(path));
            (st.status == 204).then_some(st)
        });
        assert_eq!(st.header("Range"), Some("0-0"), "{path}");
    }
    assert!(r.logs().contains("request body stalled"), "{}", r.logs());
}

/// A client that never authenticates is not kept beyond the short head timeout.
#[test]
fn unauthenticated_idle_connections_are_closed_early() {
    let r = Registryd::start(RegOpts {
        env: vec![("BERTH_HEAD_TIMEOUT".into(), "2".into())],
        ..RegOpts::default()
    });
    let mut s = tls_connect(r.port);
    s.write_all(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    s.flush().unwrap();
    let (status, _) = read_head(&mut s);
    assert_eq!(status, 401);
    s.sock
        .set_read_timeout(Some(Duration::from_secs(120)))
        .unwrap();
    // returns only when the server closes the connection (the body of the 401 first)
    assert_closed(&mut s);
    assert!(r.logs().contains("idle for 2s"), "{}", r.logs());
}

/// The server closed this connection (EOF, or a reset), rather than the read
/// timing out.
fn assert_closed(s: &mut impl Read) {
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
}

/// Upload sessions were keyed by id alone: a GET of the id under another
/// repository dropped the session, a PUT then rebuilt it from disk and published
/// the file while a PATCH still had it open, and the PATCH's later bytes landed
/// in the published blob.
#[test]
fn an_open_patch_cannot_change_a_published_blob() {
    let r = Registryd::start(RegOpts::default());
    let c = r.client();
    // Nothing outside the server shows when the half-sent PATCH's handler holds
    // the session, so the PUT may now and then get there first; each such round
    // must still be right, and rounds go on (with new content) until the PUT
    // came while the PATCH held the session.
    let mut round = 0;
    let first = wait_for("a PUT that meets an open PATCH", || {
        round += 1;
        let first = format!("first-chunk-bytes, round {round}").into_bytes();
        open_patch_round(&r, &c, &first).then_some(first)
    });
    // the same content pushed again is stored whole and served as it is
    let d_first = berth::digest::Digest::sha256(&first).to_string();
    push_blob(&r, &c, "p/a", &first);
    assert_eq!(
        c.get(&r.url(&format!("/v2/p/a/blobs/{d_first}"))).body,
        first
    );
    assert_blobs_intact(&r.root);
}

/// One round of `an_open_patch_cannot_change_a_published_blob`: true when the
/// PUT met the open PATCH, false when it came first (and was served as such).
fn open_patch_round(r: &Registryd, c: &Client, first: &[u8]) -> bool {
    let d_first = berth::digest::Digest::sha256(first).to_string();
    let start = c.req("POST", &r.url("/v2/p/a/blobs/uploads/"), &[], None);
    assert_eq!(start.status, 202);
    let path = start
        .header("Location")
        .unwrap()
        .trim_start_matches(&r.base())
        .to_string();
    let id = path.rsplit('/').next().unwrap().to_string();
    // a whole first chunk, on disk
    let p1 = c.req(
        "PATCH",
        &r.url(&path),
        &[("Content-Range", &format!("0-{}", first.len() - 1))],
        Some(first),
    );
    assert_eq!(p1.status, 202, "{}", p1.text());
    // a second PATCH, half sent: it holds the session's file open
    let extra = b"EXTRA-BYTES-AFTER-PUT";
    let mut open_patch = tls_connect(r.port);
    write!(
        open_patch,
        "PATCH {path} HTTP/1.1\r\nHost: x\r\nAuthorization: {}\r\nContent-Length: {}\r\n\r\n{}",
        basic(USER, PASS),
        extra.len() * 2,
        std::str::from_utf8(extra).unwrap()
    )
    .unwrap();
    open_patch.flush().unwrap();
    // the same id under another repository is unknown there and disturbs nothing
    let other = c.get(&r.url(&format!("/v2/zz/blobs/uploads/{id}")));
    assert_eq!(other.status, 404, "{}", other.text());
    assert_eq!(other.code(), "BLOB_UPLOAD_UNKNOWN");
    // close the session with the first chunk's digest while the PATCH is open
    let (patch, put) = std::thread::scope(|s| {
        let put = s.spawn(|| {
            c.req(
                "PUT",
                &r.url(&format!("{path}?digest={d_first}")),
                &[],
                None,
            )
        });
        // the rest of the open PATCH
        open_patch.write_all(extra).unwrap();
        open_patch.flush().unwrap();
        let (st, head) = read_head(&mut open_patch);
        ((st, head), put.join().unwrap())
    });
    let met = if put.status == 201 {
        // The PUT came first: it published the first chunk, and the PATCH then
        // found the session closed.
        assert_eq!(patch.0, 404, "{}", patch.1);
        false
    } else {
        // The PUT waited for the PATCH; the session then held more than the
        // digest says.
        assert!(patch.0 == 202 || patch.0 == 404, "{}", patch.1);
        assert!(
            put.status == 400 || put.status == 404,
            "{} {}",
            put.status,
            put.text()
        );
        true
    };
    let got = c.get(&r.url(&format!("/v2/p/a/blobs/{d_first}")));
    if got.status == 200 || !met {
        assert_eq!(got.status, 200);
        assert_eq!(got.body, first, "a published blob changed");
    } else {
        assert_eq!(got.status, 404);
    }
    assert_blobs_intact(&r.root);
    met
}

/// `Content-Range: 0-18446744073709551615` once wrapped to a zero-length chunk;
/// a header byte >= 0x80 dropped the connection instead of answering.
#[test]
fn content_range_cannot_wrap_and_non_ascii_headers_get_400() {
    let r = Registryd::start(RegOpts::default());
    let c = r.client();
    let start = c.req("POST", &r.url("/v2/p/a/blobs/uploads/"), &[], None);
    let loc = r.url(start.header("Location").unwrap());
    for range in ["0-18446744073709551615", "5-4", "18446744073709551615-0"] {
        let resp = c.req("PATCH", &loc, &[("Content-Range", range)], Some(b""));
        assert_eq!(resp.status, 416, "{range}: {}", resp.text());
        assert_eq!(resp.code(), "BLOB_UPLOAD_INVALID", "{range}");
    }
    let status = c.get(&loc);
    assert_eq!(status.header("Range"), Some("0-0"));
    // a whole header of high bytes: answered 400, connection closed, server alive
    let mut s = tls_connect(r.port);
    s.write_all(b"GET /v2/ HTTP/1.1\r\nHost: x\r\nX-Name: caf\xc3\xa9\r\n\r\n")
        .unwrap();
    s.flush().unwrap();
    let (st, head) = read_head(&mut s);
    assert_eq!(st, 400, "{head}");
    assert_eq!(c.get(&r.url("/v2/")).status, 200);
}

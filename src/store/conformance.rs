//! The [`Driver`] contract as a test suite, run against every driver (the
//! filesystem's and the in-memory one here; an object-store driver joins with
//! one more call), as Distribution keeps one suite for its drivers. Then the
//! registry store itself, on the driver: an upload, a manifest, a signature, a
//! delete and a collection, so a driver is judged by what the registry needs.

use super::gc;
use super::registry::{ManifestRef, RegistryStore};
use super::{Driver, Stat};
use crate::digest::Digest;
use crate::error::Kind;
use std::io::Read;
use std::sync::Arc;
use std::time::Duration;

fn read_all(d: &dyn Driver, path: &str, offset: u64) -> (Vec<u8>, u64) {
    let (mut r, size) = d.reader(path, offset).expect("reader");
    let mut v = Vec::new();
    r.read_to_end(&mut v).expect("read");
    (v, size)
}

/// A body that breaks: a client gone mid-chunk.
struct Failing;

impl Read for Failing {
    fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
        Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "client went away",
        ))
    }
}

/// Everything the stores rely on a driver for. Panics on the first breach.
/// `tick` is the driver's timestamp resolution (S3 keeps whole seconds).
pub fn driver_contract(d: &dyn Driver, tick: Duration) {
    // get/put, replace
    d.put("/c/a/file", b"one").unwrap();
    assert_eq!(d.get("/c/a/file").unwrap(), b"one");
    d.put("/c/a/file", b"two!").unwrap();
    assert_eq!(d.get("/c/a/file").unwrap(), b"two!");
    assert_eq!(d.get("/c/a/none").unwrap_err().kind(), Kind::NotFound);
    // reader at an offset, with the whole size
    let (tail, size) = read_all(d, "/c/a/file", 1);
    assert_eq!((tail.as_slice(), size), (&b"wo!"[..], 4));
    // staged files: start empty, append at the right size only, seal
    d.stage("/c/up/data").unwrap();
    assert_eq!(d.staged_size("/c/up/data").unwrap(), 0);
    assert_eq!(d.append("/c/up/data", 0, &mut &b"abc"[..]).unwrap(), 3);
    let wrong = d.append("/c/up/data", 1, &mut &b"zz"[..]).unwrap_err();
    assert_eq!(wrong.kind(), Kind::Conflict);
    // a body that fails midway adds nothing
    let mut failing = (&b"xyz"[..]).chain(Failing);
    assert!(d.append("/c/up/data", 3, &mut failing).is_err());
    assert_eq!(d.staged_size("/c/up/data").unwrap(), 3);
    assert_eq!(d.append("/c/up/data", 3, &mut &b"def"[..]).unwrap(), 3);
    assert_eq!(d.staged_size("/c/up/data").unwrap(), 6);
    d.seal("/c/up/data").unwrap();
    assert_eq!(d.get("/c/up/data").unwrap(), b"abcdef");
    // a staged file longer than one part of an object store, in odd chunks
    let big: Vec<u8> = (0..(6u32 << 20) + 7).map(|i| (i % 251) as u8).collect();
    d.stage("/c/up/big").unwrap();
    let mut at = 0u64;
    for piece in big.chunks(1_500_001) {
        at += d.append("/c/up/big", at, &mut &piece[..]).unwrap();
    }
    assert_eq!(d.staged_size("/c/up/big").unwrap(), big.len() as u64);
    d.seal("/c/up/big").unwrap();
    let (whole, size) = read_all(d, "/c/up/big", 0);
    assert!(
        whole == big && size == big.len() as u64,
        "staged bytes differ"
    );
    let (tail, _) = read_all(d, "/c/up/big", big.len() as u64 - 3);
    assert_eq!(tail, &big[big.len() - 3..]);
    d.stage("/c/up/empty").unwrap();
    d.seal("/c/up/empty").unwrap();
    assert_eq!(d.get("/c/up/empty").unwrap(), b"");
    // create_new: only where nothing is
    assert!(d.create_new("/c/lease", b"mine").unwrap());
    assert!(!d.create_new("/c/lease", b"yours").unwrap());
    assert_eq!(d.get("/c/lease").unwrap(), b"mine");
    // swap: only over the content it expects
    assert!(d.swap("/c/lease", b"mine", b"renewed").unwrap());
    assert!(!d.swap("/c/lease", b"mine", b"stale").unwrap());
    assert!(!d.swap("/c/nothing", b"", b"x").unwrap());
    assert_eq!(d.get("/c/lease").unwrap(), b"renewed");
    // stat: files and directories, missing
    let s: Stat = d.stat("/c/a/file").unwrap();
    assert!(!s.is_dir && s.size == 4);
    assert!(d.stat("/c/a").unwrap().is_dir);
    assert_eq!(d.stat("/c/nothing").unwrap_err().kind(), Kind::NotFound);
    // list: direct children only, files and directories, missing is empty
    d.put("/c/a/sub/deep", b"").unwrap();
    let mut l = d.list("/c/a").unwrap();
    l.sort();
    assert_eq!(l, vec!["file", "sub"]);
    // nothing is hidden: a dotfile is listed
    d.put("/c/dot/.hidden", b"").unwrap();
    assert_eq!(d.list("/c/dot").unwrap(), vec![".hidden"]);
    assert!(d.list("/c/missing").unwrap().is_empty());
    // rename: a file (over another), creating the target's parents
    d.put("/c/r/target", b"old").unwrap();
    d.rename("/c/a/file", "/c/r/target").unwrap();
    assert_eq!(d.get("/c/r/target").unwrap(), b"two!");
    assert_eq!(d.get("/c/a/file").unwrap_err().kind(), Kind::NotFound);
    d.rename("/c/up/big", "/c/moved/here/big").unwrap();
    assert_eq!(d.stat("/c/moved/here/big").unwrap().size, big.len() as u64);
    assert!(d.rename("/c/none", "/c/x").is_err());
    // touch refreshes the mtime; a missing file is NotFound
    let before = d.stat("/c/r/target").unwrap().modified;
    std::thread::sleep(tick);
    d.touch("/c/r/target").unwrap();
    assert!(d.stat("/c/r/target").unwrap().modified > before);
    assert_eq!(d.touch("/c/none").unwrap_err().kind(), Kind::NotFound);
    // delete: files and trees, missing is fine
    d.delete("/c/moved").unwrap();
    assert_eq!(
        d.get("/c/moved/here/big").unwrap_err().kind(),
        Kind::NotFound
    );
    d.delete("/c/never").unwrap();
    // a removed empty directory does not break a later rename into it
    d.put("/c/e/dir/f", b"1").unwrap();
    d.delete("/c/e/dir/f").unwrap();
    d.remove_empty_dir("/c/e/dir").unwrap();
    d.put("/c/src", b"2").unwrap();
    d.rename("/c/src", "/c/e/dir/f").unwrap();
    assert_eq!(d.get("/c/e/dir/f").unwrap(), b"2");
    // paths that could leave the root are refused
    for bad in ["relative", "/c/../x", "/c//x", "/c/./x"] {
        assert!(d.get(bad).is_err(), "{bad}");
        assert!(d.put(bad, b"").is_err(), "{bad}");
    }
    d.delete("/c").unwrap();
}

/// The registry store on the driver: upload, manifest, signature, delete and a
/// collection that frees exactly what the deleted image alone held.
pub fn registry_contract(d: Arc<dyn Driver>, tick: Duration) {
    let s = RegistryStore::open(d).unwrap();
    let upload = |name: &str, data: &[u8]| {
        let id = s.start_upload(name).unwrap();
        let mid = data.len() / 2;
        s.append_upload(name, &id, None, &mut &data[..mid], None)
            .unwrap();
        s.append_upload(name, &id, Some(mid as u64), &mut &data[mid..], None)
            .unwrap();
        s.finish_upload(name, &id, &Digest::sha256(data)).unwrap();
        Digest::sha256(data)
    };
    let base = upload("c/app", b"base layer bytes");
    let own = upload("c/app", b"layer of v1 only");
    let cfg = br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    let cd = upload("c/app", cfg);
    let manifest = |layers: &[&Digest]| {
        let l: Vec<String> = layers
            .iter()
            .map(|d| format!(r#"{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{d}","size":16}}"#))
            .collect();
        format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{cd}","size":{}}},"layers":[{}]}}"#,
            cfg.len(),
            l.join(",")
        )
    };
    // An old schema 1 manifest (a 2017 registry has them): its layers stay.
    let old_layer = upload("c/old", b"a schema 1 layer");
    let s1 = format!(
        r#"{{"schemaVersion":1,"name":"c/old","tag":"v0","architecture":"amd64","fsLayers":[{{"blobSum":"{old_layer}"}}],"history":[{{"v1Compatibility":"{{}}"}}]}}"#
    );
    s.put_manifest("c/old", &ManifestRef::Tag("v0".into()), s1.as_bytes(), None)
        .unwrap();
    let m1 = manifest(&[&base, &own]);
    let m2 = manifest(&[&base]);
    let p1 = s
        .put_manifest("c/app", &ManifestRef::Tag("v1".into()), m1.as_bytes(), None)
        .unwrap();
    s.put_manifest("c/app", &ManifestRef::Tag("v2".into()), m2.as_bytes(), None)
        .unwrap();
    let got = s
        .get_manifest("c/app", &ManifestRef::Tag("v1".into()))
        .unwrap()
        .unwrap();
    assert_eq!(got.bytes, m1.as_bytes());
    assert_eq!(s.tags("c/app").unwrap().unwrap(), vec!["v1", "v2"]);
    assert!(s.put_signature("c/app", &p1.digest, "id1", b"sig").unwrap());
    assert!(!s.put_signature("c/app", &p1.digest, "id2", b"sig").unwrap());
    assert_eq!(s.signatures("c/app", &p1.digest).unwrap().unwrap().len(), 1);
    assert!(s.delete_manifest("c/app", &p1.digest).unwrap());
    assert!(s.signatures("c/app", &p1.digest).unwrap().is_none());
    // Nothing is older than the grace: a collection now takes nothing.
    let opts = |grace| gc::Options {
        grace,
        ..gc::Options::default()
    };
    let r = gc::collect(&s, &opts(Duration::from_secs(3600)), &mut |_| {}).unwrap();
    assert_eq!(r.blobs_removed, 0);
    assert!(r.blobs_spared >= 2, "{r:?}");
    // Once past it, exactly v1's own layer and its manifest go.
    std::thread::sleep(tick * 3);
    let r = gc::collect(&s, &opts(tick), &mut |_| {}).unwrap();
    assert_eq!(r.blobs_removed, 2, "{r:?}");
    assert!(s.global_blob_size(&own).unwrap().is_none());
    assert!(s.global_blob_size(&base).unwrap().is_some());
    assert!(s.global_blob_size(&cd).unwrap().is_some());
    assert!(
        s.global_blob_size(&old_layer).unwrap().is_some(),
        "a schema 1 layer was collected"
    );
    assert!(
        s.get_manifest("c/app", &ManifestRef::Tag("v2".into()))
            .unwrap()
            .is_some()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fs() -> (Arc<dyn Driver>, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("berth-conf-{}", crate::util::uuid4()));
        (Arc::new(super::super::Filesystem::new(&dir).unwrap()), dir)
    }

    #[test]
    fn filesystem_keeps_the_contract() {
        let (d, dir) = fs();
        driver_contract(d.as_ref(), Duration::from_millis(20));
        registry_contract(d, Duration::from_millis(10));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn shared_memory_keeps_the_registry_contract() {
        // The paths a bucket takes: leases, markers, saved hash states.
        let d = Arc::new(super::super::memory::Memory::new_shared());
        registry_contract(d.clone(), Duration::from_millis(10));
        assert!(
            d.list("/docker/registry/v2/_berth_locks/repositories/c/app")
                .unwrap()
                .is_empty(),
            "a repository lease was left behind"
        );
    }

    #[test]
    fn replicas_continue_each_others_uploads_on_shared_storage() {
        let d: Arc<dyn Driver> = Arc::new(super::super::memory::Memory::new_shared());
        let (a, b) = (
            RegistryStore::open(d.clone()).unwrap(),
            RegistryStore::open(d.clone()).unwrap(),
        );
        let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        let id = a.start_upload("r/x").unwrap();
        a.append_upload("r/x", &id, Some(0), &mut &data[..3000], None)
            .unwrap();
        // B has never seen the session: it takes it up from storage.
        assert_eq!(b.upload_offset("r/x", &id).unwrap(), 3000);
        b.append_upload("r/x", &id, Some(3000), &mut &data[3000..7000], None)
            .unwrap();
        // A's memory is behind: it catches up rather than refusing or forking.
        assert_eq!(a.upload_offset("r/x", &id).unwrap(), 7000);
        let stale = a.append_upload("r/x", &id, Some(3000), &mut &b"zz"[..], None);
        assert_eq!(stale.unwrap_err().kind(), Kind::Conflict);
        a.append_upload("r/x", &id, Some(7000), &mut &data[7000..], None)
            .unwrap();
        assert_eq!(
            b.finish_upload("r/x", &id, &Digest::sha256(&data)).unwrap(),
            data.len() as u64
        );
        assert_eq!(
            a.global_blob_size(&Digest::sha256(&data)).unwrap(),
            Some(data.len() as u64)
        );
    }

    /// A body that says when it is being read and then waits for a go.
    struct Gated {
        data: Vec<u8>,
        started: Option<std::sync::mpsc::Sender<()>>,
        go: std::sync::mpsc::Receiver<()>,
    }

    impl Read for Gated {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            if let Some(s) = self.started.take() {
                s.send(()).unwrap();
                self.go.recv().unwrap();
            }
            let n = buf.len().min(self.data.len());
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data.drain(..n);
            Ok(n)
        }
    }

    #[test]
    fn two_replicas_never_both_append_at_one_offset() {
        let d: Arc<dyn Driver> = Arc::new(super::super::memory::Memory::new_shared());
        let a = Arc::new(RegistryStore::open(d.clone()).unwrap());
        let b = RegistryStore::open(d.clone()).unwrap();
        let id = a.start_upload("r/race").unwrap();
        let (started_tx, started) = std::sync::mpsc::channel();
        let (go, go_rx) = std::sync::mpsc::channel();
        let writer = {
            let (a, id) = (a.clone(), id.clone());
            std::thread::spawn(move || {
                let mut body = Gated {
                    data: b"from replica A".to_vec(),
                    started: Some(started_tx),
                    go: go_rx,
                };
                a.append_upload("r/race", &id, Some(0), &mut body, None)
            })
        };
        // A is mid-chunk (holding the session's lease); B's chunk at the
        // same offset waits for it, then finds the session moved on.
        started.recv().unwrap();
        let late = std::thread::scope(|sc| {
            let t = sc.spawn(|| {
                b.append_upload("r/race", &id, Some(0), &mut &b"from replica B"[..], None)
            });
            go.send(()).unwrap();
            t.join().unwrap()
        });
        assert_eq!(writer.join().unwrap().unwrap(), 14);
        assert_eq!(late.unwrap_err().kind(), Kind::Conflict);
        let wrong = b.finish_upload("r/race", &id, &Digest::sha256(b"from replica B"));
        assert_eq!(wrong.unwrap_err().kind(), Kind::Digest);
        let id = a.start_upload("r/race").unwrap();
        a.append_upload("r/race", &id, Some(0), &mut &b"from replica A"[..], None)
            .unwrap();
        assert_eq!(
            b.finish_upload("r/race", &id, &Digest::sha256(b"from replica A"))
                .unwrap(),
            14
        );
    }

    #[test]
    fn replicas_see_each_others_catalog_changes() {
        let d: Arc<dyn Driver> = Arc::new(super::super::memory::Memory::new_shared());
        let (a, b) = (
            RegistryStore::open(d.clone()).unwrap(),
            RegistryStore::open(d.clone()).unwrap(),
        );
        let cfg =
            br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
        let id = a.start_upload("r/cat").unwrap();
        a.append_upload("r/cat", &id, None, &mut &cfg[..], None)
            .unwrap();
        let cd = Digest::sha256(cfg);
        a.finish_upload("r/cat", &id, &cd).unwrap();
        let m = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{cd}","size":{}}},"layers":[]}}"#,
            cfg.len()
        );
        let p = a
            .put_manifest("r/cat", &ManifestRef::Tag("v1".into()), m.as_bytes(), None)
            .unwrap();
        assert!(b.repositories().is_empty());
        assert_eq!(b.refresh_if_changed().unwrap(), 1);
        assert_eq!(b.repositories(), vec!["r/cat".to_string()]);
        // Applied once; its own changes are not news to A.
        assert_eq!(b.refresh_if_changed().unwrap(), 0);
        assert_eq!(a.refresh_if_changed().unwrap(), 0);
        b.delete_manifest("r/cat", &p.digest).unwrap();
        assert_eq!(a.refresh_if_changed().unwrap(), 1);
        assert!(a.repositories().is_empty());
    }

    #[test]
    fn memory_keeps_the_contract() {
        let d = Arc::new(super::super::memory::Memory::new());
        driver_contract(d.as_ref(), Duration::from_millis(20));
        registry_contract(d, Duration::from_millis(10));
    }
}

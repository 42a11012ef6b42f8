//! The bodies of berth's fuzz targets (`fuzz/fuzz_targets/*.rs` call these),
//! kept in the library so `make test` replays the committed corpus
//! (`fuzz/corpus/TARGET/*`) through the very same code without a fuzzer.
//! Each body feeds outside input to one parser and checks what must hold
//! whatever the input: no panic, and for archives nothing written outside
//! the root.

use std::path::Path;

/// A target's body: one input, any bytes.
pub type Body = fn(&[u8]);

/// Every target: name and body.
pub const TARGETS: &[(&str, Body)] = &[
    ("reference", reference),
    ("digest", digest),
    ("manifest", manifest),
    ("image_config", image_config),
    ("htpasswd", htpasswd),
    ("config_yml", config_yml),
    ("http_front", http_front),
    ("range", range),
    ("content_range", content_range),
    ("docker_archive", docker_archive),
    ("mkimage_recipe", mkimage_recipe),
    ("json_log", json_log),
    ("challenge", challenge),
    ("tar_extract", tar_extract),
    ("tar_overlay", tar_overlay),
    ("signature", signature),
    ("signature_policy", signature_policy),
];

fn text(data: &[u8]) -> &str {
    std::str::from_utf8(data).unwrap_or("")
}

pub fn reference(data: &[u8]) {
    if let Ok(r) = crate::reference::Reference::parse(text(data)) {
        // what parses prints back to something that parses to the same
        let again =
            crate::reference::Reference::parse(&r.to_string()).expect("a printed reference parses");
        assert_eq!(again.to_string(), r.to_string());
    }
}

pub fn digest(data: &[u8]) {
    if let Ok(d) = text(data).parse::<crate::digest::Digest>() {
        assert_eq!(d.to_string().parse::<crate::digest::Digest>().ok(), Some(d));
    }
}

pub fn manifest(data: &[u8]) {
    let _ = crate::oci::Parsed::parse(data, None);
    let _ = crate::oci::Parsed::parse(data, Some("application/vnd.oci.image.index.v1+json"));
}

pub fn image_config(data: &[u8]) {
    let _ = serde_json::from_slice::<crate::oci::ImageConfig>(data);
}

pub fn htpasswd(data: &[u8]) {
    let _ = crate::auth::htpasswd::parse("htpasswd", text(data));
    let _ = crate::auth::htpasswd::parse_lenient("htpasswd", text(data));
}

pub fn config_yml(data: &[u8]) {
    let _ = crate::config::Doc::parse("config.yml", text(data));
}

pub fn http_front(data: &[u8]) {
    // the same bytes in two cuts: a parser must not care where reads end
    let mut f = crate::http::front::Framer::new("fuzz", 1, 1 << 20);
    let mut out = Vec::new();
    let cut = data
        .first()
        .map(|b| *b as usize % (data.len().max(1)))
        .unwrap_or(0);
    let _ = f.feed(&data[..cut], &mut out);
    let _ = f.feed(&data[cut..], &mut out);
}

pub fn range(data: &[u8]) {
    let len = data.len() as u64 * 7;
    let _ = crate::http::parse_range(Some(text(data)), len);
}

pub fn content_range(data: &[u8]) {
    if let Some((start, len)) = crate::http::parse_content_range(text(data)) {
        assert!(len >= 1 && start.checked_add(len - 1).is_some());
    }
}

/// `load` of a docker-archive or OCI layout into a fresh store beside a
/// sentinel: manifest.json, index.json, configs, layers, all from the input.
pub fn docker_archive(data: &[u8]) {
    let base = std::env::temp_dir().join(format!("berth-fuzz-{}", crate::util::uuid4()));
    std::fs::create_dir_all(&base).expect("temp dir");
    std::fs::write(base.join("sentinel"), b"safe").expect("sentinel");
    if let Ok(store) = crate::store::local::LocalStore::open(&base.join("store")) {
        let opts = crate::image::archive::LoadOptions {
            max_unpacked: Some(64 << 20),
            ..Default::default()
        };
        let _ = crate::image::archive::load(
            &store,
            Box::new(std::io::Cursor::new(data.to_vec())),
            &opts,
        );
    }
    let mut names: Vec<_> = std::fs::read_dir(&base)
        .expect("read base")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["sentinel", "store"],
        "something landed beside the store"
    );
    assert_eq!(
        std::fs::read(base.join("sentinel")).expect("sentinel"),
        b"safe"
    );
    let _ = std::fs::remove_dir_all(&base);
}

/// An mkimage recipe: YAML, then every check the recipe makes before a build.
pub fn mkimage_recipe(data: &[u8]) {
    if let Ok(doc) = crate::config::Doc::parse("recipe.yml", text(data)) {
        let _ = crate::image::recipe::Recipe::from_doc(&doc, Path::new("/nonexistent"), &[]);
    }
}

pub fn json_log(data: &[u8]) {
    for line in data.split(|b| *b == b'\n') {
        let _ = crate::logfile::parse_entry(line);
    }
}

pub fn challenge(data: &[u8]) {
    let _ = crate::auth::challenge::parse(text(data));
}

/// Extract (plain or gzip) into a fresh root beside a sentinel: the sentinel
/// and the root's parent must be as they were, whatever the archive holds.
pub fn tar_extract(data: &[u8]) {
    extract_beside_a_sentinel(data, |input, root| {
        let _ = crate::archive::extract(input, root);
    });
}

fn extract_beside_a_sentinel(
    data: &[u8],
    unpack: impl FnOnce(Box<dyn std::io::Read + Send>, &Path),
) {
    let base = std::env::temp_dir().join(format!("berth-fuzz-{}", crate::util::uuid4()));
    let root = base.join("root");
    std::fs::create_dir_all(&root).expect("temp dir");
    std::fs::write(base.join("sentinel"), b"safe").expect("sentinel");
    if let Ok(input) = crate::archive::decompressed(std::io::Cursor::new(data.to_vec())) {
        unpack(input, &root);
    }
    let names: Vec<_> = std::fs::read_dir(&base)
        .expect("read base")
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(
        names.len(),
        2,
        "something landed beside the root: {names:?}"
    );
    assert_eq!(
        std::fs::read(base.join("sentinel")).expect("sentinel"),
        b"safe"
    );
    let _ = std::fs::remove_dir_all(&base);
}

/// One layer unpacked on its own in overlayfs' form (the engine's layer
/// cache: whiteouts as 0/0 devices, opaque directories, owners, xattrs) into
/// a fresh root beside a sentinel, with the same check as [`tar_extract`].
/// Needs root, as the cache does; without it the body only parses.
pub fn tar_overlay(data: &[u8]) {
    extract_beside_a_sentinel(data, |input, root| {
        let _ = crate::archive::extract_overlay(input, &root.join("layer"));
    });
}

/// A signature as a registry receives it: the OpenPGP envelope (inspected, no
/// key), the simple-signing payload, and the extension's JSON entry.
pub fn signature(data: &[u8]) {
    if let Ok(u) = crate::signing::openpgp::inspect(data) {
        assert!(u.payload.len() <= 64 * 1024, "payload bound not kept");
        let _ = crate::signing::Payload::parse(&u.payload);
    }
    if let Ok(p) = crate::signing::Payload::parse(data) {
        // What parses must write back to something that parses the same.
        assert_eq!(crate::signing::Payload::parse(&p.to_json()).ok(), Some(p));
    }
    if let Ok(e) = serde_json::from_slice::<crate::signing::SignatureEntry>(data) {
        let _ = e.validate(&crate::digest::Digest::sha256(b"m"));
    }
}

/// A policy.json, then a decision under it for a fixed image (the input is also
/// offered as its one signature).
pub fn signature_policy(data: &[u8]) {
    if let Ok(p) = crate::signing::Policy::parse(data, "policy.json", None) {
        let image = crate::signing::Identity::parse("reg.example.org:5000/site/worker:1")
            .expect("a fixed reference");
        let _ = p.evaluate(
            &image,
            &crate::digest::Digest::sha256(b"m"),
            &[data.to_vec()],
            0,
        );
    }
}

/// Replay one target's committed corpus.
pub fn replay(name: &str, corpus: &Path) -> usize {
    let body = TARGETS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, f)| *f)
        .expect("a known target");
    let mut n = 0;
    if let Ok(rd) = std::fs::read_dir(corpus.join(name)) {
        for e in rd.flatten() {
            if let Ok(data) = std::fs::read(e.path()) {
                body(&data);
                n += 1;
            }
        }
    }
    n
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_committed_fuzz_corpus_replays_clean() {
        let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
        for (name, _) in super::TARGETS {
            let n = super::replay(name, &corpus);
            assert!(
                n > 0,
                "no corpus for fuzz target {name} in {}",
                corpus.display()
            );
        }
    }
    use std::path::Path;
}

//! registryd's page in a real browser: Debian's Chromium, headless, loads the
//! repository list and a repository's page after pushes; the DOM lists the
//! repositories, tags, digests, sizes, labels and signatures; search narrows
//! the list; a phone-sized screenshot is saved in the test's temp dir. The page
//! sits behind the registry's authentication and changes nothing.

use crate::client::{Env, busybox_tarball};
use crate::harness::*;
use std::path::Path;
use std::process::Command;

/// The DOM Chromium built for `url` (and a screenshot of it when `shot` is given).
fn chromium(profile: &Path, url: &str, shot: Option<&Path>) -> String {
    need("chromium");
    let mut c = Command::new("chromium");
    c.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=412,915",
    ])
    .arg(format!("--user-data-dir={}", profile.display()));
    match shot {
        Some(p) => c.arg(format!("--screenshot={}", p.display())),
        None => c.arg("--dump-dom"),
    };
    let o = c.arg(url).output().expect("run chromium");
    assert!(o.status.success(), "chromium {url}: {}", stderr(&o));
    stdout(&o)
}

#[test]
pub(crate) fn the_page_in_chromium() {
    let r = Registryd::start(RegOpts {
        tls: false,
        auth: false,
        extra: "tagpolicy:\n  immutable:\n    - repository: site/*\n      tags: [\"1.*\"]\n  retention:\n    - repository: grid/*\n      keep: 3\n      except: [latest]\n".into(),
        ..RegOpts::default()
    });
    let env = Env::new();
    let d = env.dir.path();
    let host = format!("127.0.0.1:{}", r.port);
    let tar = busybox_tarball(d, true);
    let worker = format!("{host}/site/worker:1.0");
    let other = format!("{host}/grid/tools:latest");
    env.ok(&[
        "import",
        "-c",
        "LABEL site=triumf",
        tar.to_str().unwrap(),
        &worker,
    ]);
    env.ok(&["import", "-m", "tools", tar.to_str().unwrap(), &other]);
    let key = d.join("k.asc");
    env.ok(&[
        "sign",
        "--generate-key",
        "Site",
        "s@example.org",
        "--key",
        key.to_str().unwrap(),
    ]);
    env.ok(&["push", "--sign-key", key.to_str().unwrap(), &worker]);
    env.ok(&["push", &other]);
    let digest = crate::client::manifest_of(&env, &worker);
    let profile = TempDir::new("chromium");

    let home = chromium(profile.path(), &format!("http://{host}/"), None);
    assert!(home.contains("id=\"repositories\""), "{home}");
    for want in ["site/worker", "grid/tools", "/ui/site%2Fworker"] {
        assert!(home.contains(want), "{want} not on the page: {home}");
    }
    for want in [
        "immutable: tags 1.* of site/*",
        "retention: grid/* keeps the newest 3 tags, and always latest",
    ] {
        assert!(home.contains(want), "{want} not on the page: {home}");
    }
    let found = chromium(profile.path(), &format!("http://{host}/?q=work"), None);
    assert!(
        found.contains("site/worker") && !found.contains("grid/tools"),
        "{found}"
    );

    let repo = chromium(
        profile.path(),
        &format!("http://{host}/ui/site/worker"),
        None,
    );
    for want in [
        "data-tag=\"1.0\"",
        digest.as_str(),
        "linux/amd64",
        "site=triumf",
        "1 signature(s)",
        "application/vnd.docker.distribution.manifest.v2+json",
    ] {
        assert!(
            repo.contains(want),
            "{want} not on the repository page: {repo}"
        );
    }
    // The size shown is the manifest's: config plus layers.
    let m: serde_json::Value = serde_json::from_slice(
        &std::fs::read(
            env.root
                .join("blobs/sha256")
                .join(digest.trim_start_matches("sha256:")),
        )
        .unwrap(),
    )
    .unwrap();
    let size = m["config"]["size"].as_u64().unwrap()
        + m["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["size"].as_u64().unwrap())
            .sum::<u64>();
    assert!(repo.contains(&format!("data-bytes=\"{size}\"")), "{repo}");

    // After a collection the home page tells its report.
    let o = berth(&["registryd", "garbage-collect", r.config.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let home = chromium(profile.path(), &format!("http://{host}/"), None);
    assert!(home.contains("blobs removed"), "{home}");

    let shot = d.join("repository.png");
    chromium(
        profile.path(),
        &format!("http://{host}/ui/site/worker"),
        Some(&shot),
    );
    let png = std::fs::read(&shot).unwrap();
    assert!(
        png.starts_with(b"\x89PNG"),
        "no screenshot at {}",
        shot.display()
    );
    // Kept beside the test's other files for a look (the temp dir is removed
    // at the end; BERTH_KEEP_SHOTS=DIR keeps a copy).
    if let Some(dir) = std::env::var_os("BERTH_KEEP_SHOTS") {
        let _ = std::fs::copy(&shot, Path::new(&dir).join("registry-page.png"));
    }

    // Read-only, and nothing else answers there.
    let c = r.client();
    assert_eq!(c.req("POST", &r.url("/"), &[], Some(b"x")).status, 405);
    assert_eq!(c.get(&r.url("/ui/no/such")).status, 404);
}

#[test]
pub(crate) fn the_page_is_behind_authentication() {
    let r = Registryd::start(RegOpts::default());
    assert_eq!(r.anonymous().get(&r.url("/")).status, 401);
    assert_eq!(r.anonymous().get(&r.url("/ui/x")).status, 401);
    let resp = r.client().get(&r.url("/"));
    assert_eq!(resp.status, 200);
    assert!(
        resp.header("Content-Type")
            .unwrap()
            .starts_with("text/html")
    );
    assert!(resp.text().contains("<h1>Registry</h1>"));
}

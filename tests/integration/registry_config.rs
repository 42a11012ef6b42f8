//! registryd's configuration: the site's config.yml unchanged, environment
//! overrides, and one clear line (file, line, what is expected) for bad input.

use crate::harness::*;
use std::path::Path;

fn site_env(d: &TempDir, port: u16) -> Vec<(&'static str, String)> {
    let p = pki();
    let pw = d.join("registry_passwd");
    std::fs::write(
        &pw,
        berth::auth::htpasswd::entry(USER, PASS).unwrap() + "\n",
    )
    .unwrap();
    vec![
        ("REGISTRY_HTTP_ADDR", format!("127.0.0.1:{port}")),
        ("REGISTRY_HTTP_HOST", format!("https://localhost:{port}")),
        (
            "REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY",
            d.join("data").display().to_string(),
        ),
        (
            "REGISTRY_HTTP_TLS_CERTIFICATE",
            p.cert.display().to_string(),
        ),
        ("REGISTRY_HTTP_TLS_KEY", p.key.display().to_string()),
        ("REGISTRY_AUTH_HTPASSWD_PATH", pw.display().to_string()),
    ]
}

fn site_config() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("config/site-registry.yml")
        .display()
        .to_string()
}

#[test]
fn site_config_is_accepted_and_served() {
    let d = TempDir::new("site");
    let port = free_port();
    let env = site_env(&d, port);
    let o = berth(&["registryd", "--check", &site_config()])
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("configuration OK"));
    assert!(
        !stderr(&o).contains("warning"),
        "the site's file should load without warnings: {}",
        stderr(&o)
    );
    // and it serves, with absolute Location URLs from http.host
    let log = d.join("log");
    let mut child = berth(&["registryd", "serve", &site_config()])
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    wait_port(port, &mut child, &log);
    let c = Client {
        agent: agent(),
        auth: Some(basic(USER, PASS)),
    };
    let base = format!("https://localhost:{port}");
    assert_eq!(c.get(&format!("{base}/v2/")).status, 200);
    let s = c.req(
        "POST",
        &format!("{base}/v2/sl6/blobs/uploads/"),
        &[],
        Some(b""),
    );
    assert!(
        s.header("Location")
            .unwrap()
            .starts_with(&format!("https://localhost:{port}/v2/sl6/blobs/uploads/"))
    );
    let _ = child.kill();
    let _ = child.wait();
    let logs = std::fs::read_to_string(&log).unwrap();
    assert!(
        logs.contains(" debug "),
        "log.level debug from the site file: {logs}"
    );
}

fn check(yaml: &str) -> (i32, String, String) {
    let d = TempDir::new("cfg");
    let f = d.join("config.yml");
    std::fs::write(&f, yaml).unwrap();
    let o = berth(&["registryd", "--check", f.to_str().unwrap()])
        .output()
        .unwrap();
    (
        o.status.code().unwrap_or(-1),
        stdout(&o),
        stderr(&o).replace(&d.path().display().to_string(), "DIR"),
    )
}

const BASE: &str =
    "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: /tmp/berth-it-unused\n";

#[test]
fn bad_values_give_one_line_with_file_and_line() {
    let (code, _, err) = check(&format!("{BASE}http:\n  addr: nowhere\n"));
    assert_eq!(code, 2);
    assert_eq!(
        err.trim(),
        "registryd: DIR/config.yml:6: http.addr: expected HOST:PORT or :PORT, got \"nowhere\""
    );
    let (code, _, err) = check(
        "version: 0.1\nstorage:\n  delete:\n    enabled: maybe\n  filesystem:\n    rootdirectory: /x\n",
    );
    assert_eq!(code, 2);
    assert!(
        err.contains("storage.delete.enabled: expected true or false"),
        "{err}"
    );
    let (code, _, err) = check(
        "version: 0.1\nlog:\n  level: loud\nstorage:\n  filesystem:\n    rootdirectory: /x\n",
    );
    assert_eq!(code, 2);
    assert!(err.contains("config.yml:3: log.level"), "{err}");
    let (code, _, err) = check("version: 0.1\nhttp: [unclosed\n");
    assert_eq!(code, 2);
    assert!(err.contains("config.yml:"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    let (code, _, err) = check(&format!("{BASE}auth:\n  token:\n    realm: x\n"));
    assert_eq!(code, 2);
    assert!(
        err.contains("config.yml:6: auth.token: this auth scheme is not supported"),
        "{err}"
    );
    let (code, _, err) = check("version: 0.1\nstorage:\n  s3:\n    bucket: b\n");
    assert_eq!(code, 2);
    assert!(err.contains("storage.s3"), "{err}");
    let (code, _, err) = check(&format!(
        "{BASE}http:\n  addr: :5000\n  tls:\n    certificate: /nonexistent/cert.pem\n    key: /nonexistent/key.pem\n"
    ));
    assert_eq!(code, 2);
    assert!(err.contains("/nonexistent/cert.pem"), "{err}");
}

#[test]
fn unreadable_file_and_bad_htpasswd() {
    let o = berth(&["registryd", "/nonexistent/config.yml"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(
        stderr(&o).trim(),
        "registryd: /nonexistent/config.yml: cannot read: No such file or directory"
    );
    let d = TempDir::new("htbad");
    let pw = d.join("pw");
    std::fs::write(
        &pw,
        format!(
            "{}\nalice:$apr1$abc$def\n",
            berth::auth::htpasswd::entry("ok", "x").unwrap()
        ),
    )
    .unwrap();
    let (code, _, err) = check(&format!(
        "{BASE}auth:\n  htpasswd:\n    realm: r\n    path: {}\n",
        pw.display()
    ));
    assert_eq!(code, 2);
    assert!(
        err.contains(&format!(
            "{}:2: user \"alice\": the hash is not a bcrypt hash",
            pw.display()
        )),
        "{err}"
    );
    // a cost that would spin for days, a hash that only looks like bcrypt, a
    // byte-order mark, a user twice: each refused with its line
    let ok = berth::auth::htpasswd::entry("ok", "x").unwrap();
    let hash = ok.split_once(':').unwrap().1.to_string();
    for (text, line, what) in [
        (format!("{ok}\nslow:$2y$31${}\n", &hash[7..]), 2, "cost 31"),
        (
            format!("fake:$2y$10${}\n", "-".repeat(53)),
            1,
            "never writes",
        ),
        (format!("\u{feff}{ok}\n"), 1, "byte-order mark"),
        (format!("{ok}\n{ok}\n"), 2, "listed again (first on line 1)"),
    ] {
        std::fs::write(&pw, text).unwrap();
        let (code, _, err) = check(&format!(
            "{BASE}auth:\n  htpasswd:\n    realm: r\n    path: {}\n",
            pw.display()
        ));
        assert_eq!(code, 2, "{what}: {err}");
        assert!(
            err.contains(&format!("{}:{line}: ", pw.display())) && err.contains(what),
            "{what}: {err}"
        );
    }
}

#[test]
fn unknown_keys_warn_with_line_and_env_overrides() {
    let (code, out, err) = check(&format!(
        "{BASE}http:\n  addr: :5000\n  frobnicate: 1\nnotifications:\n  endpoints: []\n"
    ));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("configuration OK"));
    assert!(
        err.contains("config.yml:7: unknown key \"http.frobnicate\" ignored"),
        "{err}"
    );
    assert!(
        err.contains("config.yml:8: not supported by berth: key \"notifications\""),
        "{err}"
    );
    // a bad value from the environment is named as such
    let d = TempDir::new("env");
    let f = d.join("c.yml");
    std::fs::write(&f, BASE).unwrap();
    let o = berth(&["registryd", "--check", f.to_str().unwrap()])
        .env("REGISTRY_STORAGE_DELETE_ENABLED", "perhaps")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains(
            "environment variable REGISTRY_STORAGE_DELETE_ENABLED: storage.delete.enabled"
        ),
        "{}",
        stderr(&o)
    );
}

#[test]
fn nothing_is_served_on_a_bad_config() {
    let port = free_port();
    let d = TempDir::new("noserve");
    let f = d.join("c.yml");
    std::fs::write(
        &f,
        format!("{BASE}http:\n  addr: 127.0.0.1:{port}\nlog:\n  formatter: fancy\n"),
    )
    .unwrap();
    let o = berth(&["registryd", f.to_str().unwrap()]).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("log.formatter"));
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
}

#[test]
fn s3_settings_are_read_as_distribution_writes_them() {
    let s3 = |body: &str| {
        format!("version: 0.1\nstorage:\n  s3:\n{body}http:\n  addr: 127.0.0.1:5000\n")
    };
    let full = "    accesskey: AK\n    secretkey: very-secret-key\n    region: us-east-1\n    regionendpoint: http://127.0.0.1:1\n    bucket: registry\n    rootdirectory: /site\n";
    let (code, out, err) = check(&s3(full));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("configuration OK"));
    assert!(!err.contains("very-secret-key") && !out.contains("very-secret-key"));
    // What is missing is named, with the variable that can supply it.
    let (code, _, err) = check(&s3(&full.replace("    secretkey: very-secret-key\n", "")));
    assert_eq!(code, 2);
    assert!(
        err.contains("storage.s3.secretkey is not set (or REGISTRY_STORAGE_S3_SECRETKEY"),
        "{err}"
    );
    let (code, _, err) = check(&s3(&format!("{full}    v4auth: false\n")));
    assert_eq!(code, 2);
    assert!(
        err.contains("config.yml:10: storage.s3.v4auth: signature version 2"),
        "{err}"
    );
    let (code, _, err) = check(&s3(&format!("{full}    chunksize: 1000\n")));
    assert_eq!(code, 2);
    assert!(
        err.contains("storage.s3.chunksize: expected at least 5242880"),
        "{err}"
    );
    let (code, _, err) = check(&s3(&full.replace("bucket: registry", "bucket: Bad_Bucket")));
    assert_eq!(code, 2);
    assert!(err.contains("Bad_Bucket"), "{err}");
    let (code, _, err) = check(&format!(
        "{}  filesystem:\n    rootdirectory: /x\n",
        s3(full).replace("http:\n  addr: 127.0.0.1:5000\n", "")
    ));
    assert_eq!(code, 2);
    assert!(err.contains("a registry has one storage driver"), "{err}");
    // REGISTRY_STORAGE_S3_* fill in and override; AWS_* never count.
    let d = TempDir::new("s3env");
    let f = d.join("c.yml");
    std::fs::write(
        &f,
        s3(&full.replace("    secretkey: very-secret-key\n", "")),
    )
    .unwrap();
    let o = berth(&["registryd", "--check", f.to_str().unwrap()])
        .env("AWS_SECRET_ACCESS_KEY", "from-aws")
        .env("AWS_CA_BUNDLE", "/nonexistent/ca.pem")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "AWS_* must not supply the key");
    let o = berth(&["registryd", "--check", f.to_str().unwrap()])
        .env("REGISTRY_STORAGE_S3_SECRETKEY", "from-env")
        .env("AWS_CA_BUNDLE", "/nonexistent/ca.pem")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
}

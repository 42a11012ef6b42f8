//! engined's settings from the places a site already keeps dockerd's: the
//! command line, `/etc/sysconfig/docker*` (`--sysconfig F`, repeatable) and a
//! daemon.json (`--config-file F`).
//!
//! Every source is turned into the same flat list of [`Item`]s, each carrying
//! where it came from ("/etc/sysconfig/docker:4"), and only then resolved: so a
//! conflict between two sources, an unknown key or a bad value is reported with
//! the file and line that said it, whichever source that was. A sysconfig
//! variable that holds flags (`OPTIONS=`, `DOCKER_NETWORK_OPTIONS=`, …) is parsed
//! by the very parser of the command line, so the two cannot drift apart.
//!
//! dockerd refuses a setting given both as a flag and in daemon.json; berth
//! refuses any two sources that disagree, and takes two that agree. Lists
//! (registries, hosts, log options) are joined.

use super::Args;
use argh::FromArgs;
use berth::error::{Error, Result};
use serde_json::Value;
use std::path::Path;

/// One setting as one source gave it. `key` is dockerd's flag name without
/// dashes (daemon.json's names are mapped onto them).
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    pub key: &'static str,
    pub value: String,
    pub at: String,
}

/// Flags whose value is a list: every source adds to it.
const LISTS: &[&str] = &[
    "host",
    "log-opt",
    "add-registry",
    "block-registry",
    "insecure-registry",
    "sysconfig",
    "storage-opt",
];

/// dockerd's boolean flags, which its users write bare (`--ipv6`).
pub const BOOLS: &[&str] = &[
    "--selinux-enabled",
    "--ipv6",
    "--tls",
    "--tlsverify",
    "--hostname-from-dns",
];

/// dockerd's flags berth accepts and ignores, with the reason told once.
const IGNORED: &[(&str, &str)] = &[
    (
        "storage-driver",
        "berth stores containers on overlay (or a copy where overlay cannot work)",
    ),
    (
        "storage-opt",
        "berth stores containers on overlay (or a copy where overlay cannot work)",
    ),
];

/// The settings, resolved: one value per scalar key, all values of a list.
#[derive(Debug, Default)]
pub struct Resolved {
    items: Vec<Item>,
}

impl Resolved {
    /// The value of a scalar setting and where it was given.
    pub fn get(&self, key: &str) -> Option<&Item> {
        self.items.iter().find(|i| i.key == key)
    }
    /// Everything, in the order the sources were read.
    pub fn items(&self) -> &[Item] {
        &self.items
    }
    pub fn value(&self, key: &str) -> Option<&str> {
        self.get(key).map(|i| i.value.as_str())
    }
    /// Every value of a list setting, in the order the sources gave them.
    pub fn list(&self, key: &str) -> Vec<&Item> {
        self.items.iter().filter(|i| i.key == key).collect()
    }
    /// A boolean setting ("true"/"false", dockerd's spelling).
    pub fn flag(&self, key: &str) -> Result<Option<bool>> {
        match self.get(key) {
            None => Ok(None),
            Some(i) => match i.value.as_str() {
                "true" | "1" => Ok(Some(true)),
                "false" | "0" => Ok(Some(false)),
                v => Err(bad(i, &format!("{v:?} is not true or false"))),
            },
        }
    }
}

/// `AT: --KEY VALUE: WHY` — the one line a bad value stops the start with.
pub fn bad(i: &Item, why: &str) -> Error {
    Error::config(format!("{}: --{} {}: {why}", i.at, i.key, i.value))
}

/// The items of parsed flags, all said at `at`.
pub fn items_of_args(a: &Args, at: &str) -> Vec<Item> {
    let mut out = Vec::new();
    let mut one = |key: &'static str, v: Option<String>| {
        if let Some(value) = v {
            out.push(Item {
                key,
                value,
                at: at.to_string(),
            });
        }
    };
    let p = |p: &Option<std::path::PathBuf>| p.as_ref().map(|p| p.display().to_string());
    // both spellings: two that differ are a conflict, not one silently lost
    one("data-root", p(&a.data_root));
    one("data-root", p(&a.graph));
    one("pidfile", p(&a.pidfile));
    one("exec-root", p(&a.exec_root));
    one("bridge", a.bridge.clone());
    one("bip", a.bip.clone());
    one("fixed-cidr", a.fixed_cidr.clone());
    one("mtu", a.mtu.map(|m| m.to_string()));
    one("log-driver", a.log_driver.clone());
    one("cgroup-parent", a.cgroup_parent.clone());
    one("selinux-enabled", a.selinux_enabled.clone());
    one("ipv6", a.ipv6.clone());
    one("tls", a.tls.clone());
    one("tlsverify", a.tlsverify.clone());
    one("tlscacert", p(&a.tlscacert));
    one("tlscert", p(&a.tlscert));
    one("tlskey", p(&a.tlskey));
    one("config-file", p(&a.config_file));
    one("hostname-from-dns", a.hostname_from_dns.clone());
    one("storage-driver", a.storage_driver.clone());
    one("log-dir", a.log_dir.clone());
    one("log-root", p(&a.log_root));
    one("signature-policy", p(&a.signature_policy));
    let mut many = |key: &'static str, vs: &[String]| {
        for v in vs {
            out.push(Item {
                key,
                value: v.clone(),
                at: at.to_string(),
            });
        }
    };
    many("host", &a.host);
    many("log-opt", &a.log_opt);
    many("add-registry", &a.add_registry);
    many("block-registry", &a.block_registry);
    many("insecure-registry", &a.insecure_registry);
    many("storage-opt", &a.storage_opt);
    let files: Vec<String> = a
        .sysconfig
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    many("sysconfig", &files);
    out
}

/// dockerd's command-line spellings in argh's: `--flag=value` and Go's
/// single-dash long flags (`-bridge=br0`, in the site's docker-network file)
/// become `--flag value`; bare booleans get an explicit `true`.
pub fn normalise(args: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    let mut it = args.iter().peekable();
    while let Some(a) = it.next() {
        // Go's flag package takes -name as --name; argh's short flags are one letter.
        let a = if a.len() > 2 && a.starts_with('-') && !a.starts_with("--") {
            let name = a[1..].split('=').next().unwrap_or("");
            if name.len() > 1 {
                format!("-{a}")
            } else {
                a.clone()
            }
        } else {
            a.clone()
        };
        if let Some((k, v)) = a.split_once('=').filter(|(k, _)| k.starts_with('-')) {
            out.push(k.to_string());
            out.push(v.to_string());
        } else if BOOLS.contains(&a.as_str())
            && !it.peek().is_some_and(|n| *n == "true" || *n == "false")
        {
            out.push(a);
            out.push("true".into());
        } else {
            out.push(a);
        }
    }
    out
}

/// Flags in a sysconfig variable, parsed as the command line is.
fn items_of_flags(words: &[String], at: &str) -> Result<Vec<Item>> {
    let words = normalise(words);
    let strs: Vec<&str> = words.iter().map(String::as_str).collect();
    match Args::from_args(&["engined"], &strs) {
        Ok(a) => Ok(items_of_args(&a, at)),
        Err(e) => Err(Error::config(format!(
            "{at}: {}",
            e.output.lines().next().unwrap_or("bad flags").trim()
        ))),
    }
}

/// One `NAME=VALUE` of a sysconfig file, its value unquoted as the shell would.
#[derive(Debug, PartialEq)]
pub struct Var {
    pub name: String,
    pub value: String,
    pub line: usize,
}

/// Parse a sysconfig file: `NAME=VALUE` lines, `#` comments, `export`, single
/// and double quotes, backslash escapes and continuations. A newline inside
/// quotes right after a `-` joins the two halves of a word, as the site's
/// document breaks `--fixed-\ncidr=…` (a shell would keep two words, which
/// dockerd then refuses).
pub fn parse_sysconfig(path: &Path, text: &str) -> Result<Vec<Var>> {
    let at = |line: usize| format!("{}:{line}", path.display());
    let mut vars = Vec::new();
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    let mut line = 1;
    while i < chars.len() {
        // One assignment (or blank/comment line) from here.
        while i < chars.len() && (chars[i] == ' ' || chars[i] == '\t') {
            i += 1;
        }
        if i >= chars.len() {
            break;
        }
        if chars[i] == '\n' {
            i += 1;
            line += 1;
            continue;
        }
        if chars[i] == '#' {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
            continue;
        }
        let start_line = line;
        let mut name = String::new();
        while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
            name.push(chars[i]);
            i += 1;
        }
        if name == "export" && i < chars.len() && (chars[i] == ' ' || chars[i] == '\t') {
            continue;
        }
        if name.is_empty()
            || name.starts_with(|c: char| c.is_ascii_digit())
            || i >= chars.len()
            || chars[i] != '='
        {
            return Err(Error::config(format!(
                "{}: expected NAME=VALUE (a shell variable assignment)",
                at(start_line)
            )));
        }
        i += 1;
        let mut value = String::new();
        while let Some(&c) = chars.get(i) {
            match c {
                '\n' => break,
                ' ' | '\t' => {
                    // The rest of the line may only be a comment.
                    let mut j = i;
                    while j < chars.len() && (chars[j] == ' ' || chars[j] == '\t') {
                        j += 1;
                    }
                    if j < chars.len() && chars[j] != '\n' && chars[j] != '#' {
                        return Err(Error::config(format!(
                            "{}: {name}: a value with spaces needs quotes",
                            at(start_line)
                        )));
                    }
                    while i < chars.len() && chars[i] != '\n' {
                        i += 1;
                    }
                    break;
                }
                '\'' => {
                    i += 1;
                    loop {
                        match chars.get(i) {
                            None => {
                                return Err(Error::config(format!(
                                    "{}: {name}: the ' opened here is never closed",
                                    at(start_line)
                                )));
                            }
                            Some('\'') => break,
                            Some('\n') => {
                                line += 1;
                                if !value.ends_with('-') {
                                    value.push('\n');
                                }
                            }
                            Some(&c) => value.push(c),
                        }
                        i += 1;
                    }
                    i += 1;
                }
                '"' => {
                    i += 1;
                    loop {
                        match chars.get(i) {
                            None => {
                                return Err(Error::config(format!(
                                    "{}: {name}: the \" opened here is never closed",
                                    at(start_line)
                                )));
                            }
                            Some('"') => break,
                            Some('\\') => match chars.get(i + 1) {
                                Some('\n') => {
                                    line += 1;
                                    i += 1;
                                }
                                Some(&n) if "\"\\$`".contains(n) => {
                                    value.push(n);
                                    i += 1;
                                }
                                _ => value.push('\\'),
                            },
                            Some('\n') => {
                                line += 1;
                                if !value.ends_with('-') {
                                    value.push('\n');
                                }
                            }
                            Some(&c) => value.push(c),
                        }
                        i += 1;
                    }
                    i += 1;
                }
                '\\' => {
                    match chars.get(i + 1) {
                        Some('\n') => line += 1,
                        Some(&n) => value.push(n),
                        None => {}
                    }
                    i += 2;
                }
                c => {
                    value.push(c);
                    i += 1;
                }
            }
        }
        vars.push(Var {
            name,
            value,
            line: start_line,
        });
    }
    Ok(vars)
}

/// Variables whose value is dockerd flags (RHEL's docker.service passes them
/// all on dockerd's command line).
const FLAG_VARS: &[&str] = &[
    "OPTIONS",
    "DOCKER_NETWORK_OPTIONS",
    "ADD_REGISTRY",
    "BLOCK_REGISTRY",
    "INSECURE_REGISTRY",
    "DOCKER_STORAGE_OPTIONS",
    "OTHER_ARGS",
];

/// Variables the docker packages' files carry that mean nothing to engined.
const OTHER_VARS: &[&str] = &[
    "LOGROTATE",
    "DOCKER_NOFILE",
    "STORAGE_DRIVER",
    "VG",
    "DEVS",
    "DATA_SIZE",
    "MIN_DATA_SIZE",
    "CHUNK_SIZE",
    "GROWPART",
    "AUTO_EXTEND_POOL",
    "POOL_AUTOEXTEND_THRESHOLD",
    "POOL_AUTOEXTEND_PERCENT",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
];

/// The items of one sysconfig file, and the warnings it earns.
pub fn items_of_sysconfig(path: &Path, text: &str) -> Result<(Vec<Item>, Vec<String>)> {
    let mut items = Vec::new();
    let mut warnings = Vec::new();
    for v in parse_sysconfig(path, text)? {
        let at = format!("{}:{}", path.display(), v.line);
        if FLAG_VARS.contains(&v.name.as_str()) {
            let words: Vec<String> = v.value.split_whitespace().map(String::from).collect();
            let got = items_of_flags(&words, &at)?;
            if got.iter().any(|i| i.key == "sysconfig") {
                return Err(Error::config(format!(
                    "{at}: --sysconfig inside a sysconfig file: give every file on engined's command line"
                )));
            }
            items.extend(got);
        } else if v.name == "DOCKER_CERT_PATH" {
            if !v.value.is_empty() {
                items.push(Item {
                    key: "cert-path",
                    value: v.value,
                    at,
                });
            }
        } else if v.name == "DOCKER_TMPDIR" {
            if !v.value.is_empty() {
                items.push(Item {
                    key: "tmpdir",
                    value: v.value,
                    at,
                });
            }
        } else if OTHER_VARS.contains(&v.name.as_str()) {
            if !v.value.is_empty() {
                warnings.push(format!("{at}: {} has no effect on engined", v.name));
            }
        } else {
            warnings.push(format!("{at}: unknown variable {}, ignored", v.name));
        }
    }
    Ok((items, warnings))
}

/// The line of a key's first appearance in a JSON text (serde keeps none).
fn json_line(text: &str, key: &str) -> usize {
    let pat = format!("\"{key}\"");
    let mut from = 0;
    while let Some(p) = text[from..].find(&pat) {
        let end = from + p + pat.len();
        if text[end..].trim_start().starts_with(':') {
            return text[..from + p].matches('\n').count() + 1;
        }
        from = end;
    }
    1
}

/// The items of a daemon.json. Its keys are dockerd's; one berth does not know
/// stops the start (as it stops dockerd's).
pub fn items_of_daemon_json(path: &Path, text: &str) -> Result<(Vec<Item>, Vec<String>)> {
    let doc: serde_json::Map<String, Value> = serde_json::from_str(text).map_err(|e| {
        Error::config(format!(
            "{}:{}: not a JSON object: {e}",
            path.display(),
            e.line()
        ))
    })?;
    let mut items = Vec::new();
    let mut warnings = Vec::new();
    for (k, v) in &doc {
        let at = format!("{}:{}", path.display(), json_line(text, k));
        let wrong = |what: &str| Error::config(format!("{at}: \"{k}\": expected {what}"));
        let key: &'static str = match k.as_str() {
            "data-root" | "graph" => "data-root",
            "pidfile" => "pidfile",
            "exec-root" => "exec-root",
            "bridge" => "bridge",
            "bip" => "bip",
            "fixed-cidr" => "fixed-cidr",
            "mtu" => "mtu",
            "ipv6" => "ipv6",
            "selinux-enabled" => "selinux-enabled",
            "log-driver" => "log-driver",
            "cgroup-parent" => "cgroup-parent",
            "tls" => "tls",
            "tlsverify" => "tlsverify",
            "tlscacert" => "tlscacert",
            "tlscert" => "tlscert",
            "tlskey" => "tlskey",
            "hostname-from-dns" => "hostname-from-dns",
            "storage-driver" => "storage-driver",
            "log-dir" => "log-dir",
            "log-root" => "log-root",
            "signature-policy" => "signature-policy",
            "hosts" => "host",
            "insecure-registries" => "insecure-registry",
            "add-registry" | "add-registries" => "add-registry",
            "block-registry" | "block-registries" => "block-registry",
            "storage-opts" => "storage-opt",
            "log-opts" => "log-opt",
            "debug" => {
                if !v.is_boolean() {
                    return Err(wrong("true or false"));
                }
                warnings.push(format!("{at}: \"debug\": use engined -D"));
                continue;
            }
            _ => {
                return Err(Error::config(format!(
                    "{at}: unknown key \"{k}\" (berth engined reads dockerd's keys; remove it)"
                )));
            }
        };
        let mut push = |value: String| {
            items.push(Item {
                key,
                value,
                at: at.clone(),
            })
        };
        match (key, v) {
            ("log-opt", Value::Object(m)) => {
                for (ok, ov) in m {
                    let ov = ov.as_str().ok_or_else(|| wrong("an object of strings"))?;
                    push(format!("{ok}={ov}"));
                }
            }
            ("log-opt", _) => return Err(wrong("an object of strings")),
            (key, Value::Array(a)) if LISTS.contains(&key) => {
                for x in a {
                    push(
                        x.as_str()
                            .ok_or_else(|| wrong("a list of strings"))?
                            .to_string(),
                    );
                }
            }
            (key, _) if LISTS.contains(&key) => return Err(wrong("a list of strings")),
            (_, Value::String(s)) => push(s.clone()),
            (_, Value::Bool(b)) => push(b.to_string()),
            (_, Value::Number(n)) => push(n.to_string()),
            _ => return Err(wrong("a string, number or boolean")),
        }
    }
    Ok((items, warnings))
}

/// Put the sources together: conflicts between them stop the start, naming both.
pub fn resolve(items: Vec<Item>) -> Result<(Resolved, Vec<String>)> {
    let mut out: Vec<Item> = Vec::new();
    let mut warnings = Vec::new();
    for i in items {
        if let Some((_, why)) = IGNORED.iter().find(|(k, _)| *k == i.key) {
            warnings.push(format!(
                "{}: --{} {} is ignored: {why}",
                i.at, i.key, i.value
            ));
            continue;
        }
        if LISTS.contains(&i.key) {
            if !out.iter().any(|o| o.key == i.key && o.value == i.value) {
                out.push(i);
            }
            continue;
        }
        match out.iter().find(|o| o.key == i.key) {
            Some(o) if o.value != i.value => {
                return Err(Error::config(format!(
                    "--{}: {} says {:?} but {} says {:?}: keep one",
                    i.key, o.at, o.value, i.at, i.value
                )));
            }
            Some(_) => {}
            None => out.push(i),
        }
    }
    Ok((Resolved { items: out }, warnings))
}

/// Every source, from the command line outwards: the command line's own items,
/// then each `--sysconfig` file, then the `--config-file` (named on the command
/// line or in a sysconfig file), then `DOCKER_TMPDIR` from the environment.
pub fn gather(a: &Args) -> Result<(Resolved, Vec<String>)> {
    let mut items = items_of_args(a, "command line");
    let mut warnings = Vec::new();
    for f in &a.sysconfig {
        // As systemd's EnvironmentFile=-: a host without, say, the storage file
        // runs on with the others.
        let text = match std::fs::read_to_string(f) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                warnings.push(format!(
                    "--sysconfig {}: no such file, skipped",
                    f.display()
                ));
                continue;
            }
            Err(e) => return Err(Error::config(format!("--sysconfig {}: {e}", f.display()))),
        };
        let (i, w) = items_of_sysconfig(f, &text)?;
        items.extend(i);
        warnings.extend(w);
    }
    let files: Vec<Item> = items
        .iter()
        .filter(|i| i.key == "config-file")
        .cloned()
        .collect();
    if let Some(first) = files.first() {
        if let Some(other) = files.iter().find(|i| i.value != first.value) {
            return Err(Error::config(format!(
                "--config-file: {} says {} but {} says {}: keep one",
                first.at, first.value, other.at, other.value
            )));
        }
        let p = Path::new(&first.value);
        let text = std::fs::read_to_string(p).map_err(|e| {
            Error::config(format!("{}: --config-file {}: {e}", first.at, first.value))
        })?;
        let (i, w) = items_of_daemon_json(p, &text)?;
        items.extend(i);
        warnings.extend(w);
    }
    if let Ok(t) = std::env::var("DOCKER_TMPDIR")
        && !t.is_empty()
    {
        items.push(Item {
            key: "tmpdir",
            value: t,
            at: "environment DOCKER_TMPDIR".into(),
        });
    }
    let (r, w) = resolve(items)?;
    warnings.extend(w);
    Ok((r, warnings))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn dockerd_style_flags_are_normalised() {
        assert_eq!(
            normalise(&strings(&[
                "--fixed-cidr=10.0.3.144/28",
                "--ipv6",
                "-g",
                "/docker",
                "--selinux-enabled=false",
                "-bridge=br0",
                "-D",
                "--tlsverify",
            ])),
            strings(&[
                "--fixed-cidr",
                "10.0.3.144/28",
                "--ipv6",
                "true",
                "-g",
                "/docker",
                "--selinux-enabled",
                "false",
                "--bridge",
                "br0",
                "-D",
                "--tlsverify",
                "true",
            ])
        );
    }

    #[test]
    fn the_documents_network_file_joins_its_broken_word() {
        let text = "# /etc/sysconfig/docker-network\nDOCKER_NETWORK_OPTIONS=\"--ipv6=false --mtu=9000 -bridge=br0 --fixed-\ncidr=10.0.3.144/28\"\n";
        let (items, warnings) = items_of_sysconfig(Path::new("net"), text).unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        let (r, _) = resolve(items).unwrap();
        assert_eq!(r.value("fixed-cidr"), Some("10.0.3.144/28"));
        assert_eq!(r.value("bridge"), Some("br0"));
        assert_eq!(r.value("mtu"), Some("9000"));
        assert_eq!(r.flag("ipv6").unwrap(), Some(false));
        assert_eq!(r.get("bridge").unwrap().at, "net:2");
    }

    #[test]
    fn shell_quoting_comments_and_continuations() {
        let text =
            "A='x y' # c\nexport B=\"q \\\"z\\\" \\$H\"\nC=a\\\nb\n\n  # only a comment\nD=\n";
        let v = parse_sysconfig(Path::new("f"), text).unwrap();
        let got: Vec<(&str, &str, usize)> = v
            .iter()
            .map(|v| (v.name.as_str(), v.value.as_str(), v.line))
            .collect();
        assert_eq!(
            got,
            [
                ("A", "x y", 1),
                ("B", "q \"z\" $H", 2),
                ("C", "ab", 3),
                ("D", "", 7)
            ]
        );
    }

    #[test]
    fn sysconfig_errors_name_file_and_line() {
        let e = parse_sysconfig(Path::new("/etc/sysconfig/docker"), "A=1\nB='open\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("/etc/sysconfig/docker:2") && e.contains("never closed"),
            "{e}"
        );
        let e = parse_sysconfig(Path::new("f"), "A=1\nB=two words\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("f:2") && e.contains("quotes"), "{e}");
        let e = items_of_sysconfig(Path::new("f"), "\nOPTIONS='--no-such-flag'\n")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("f:2: "), "{e}");
        let (_, w) = items_of_sysconfig(Path::new("f"), "FOO=1\nLOGROTATE=true\n").unwrap();
        assert_eq!(
            w,
            [
                "f:1: unknown variable FOO, ignored",
                "f:2: LOGROTATE has no effect on engined"
            ]
        );
    }

    #[test]
    fn daemon_json_keys_map_onto_flags_with_their_lines() {
        let text = r#"{
  "data-root": "/docker",
  "insecure-registries": ["a:5000", "b:5000"],
  "log-opts": {"max-size": "1m"},
  "mtu": 9000,
  "ipv6": false
}"#;
        let (items, _) = items_of_daemon_json(Path::new("d.json"), text).unwrap();
        let (r, _) = resolve(items).unwrap();
        assert_eq!(r.value("data-root"), Some("/docker"));
        assert_eq!(r.get("data-root").unwrap().at, "d.json:2");
        assert_eq!(r.list("insecure-registry").len(), 2);
        assert_eq!(r.value("log-opt"), Some("max-size=1m"));
        assert_eq!(r.get("mtu").unwrap().at, "d.json:5");
        let e = items_of_daemon_json(Path::new("d.json"), "{\n \"mtu\": 1,\n \"nope\": 2\n}")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("d.json:3") && e.contains("unknown key \"nope\""),
            "{e}"
        );
        let e = items_of_daemon_json(Path::new("d.json"), "{\n \"mtu\": 1,\n}")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("d.json:3: "), "{e}");
    }

    #[test]
    fn sources_that_disagree_are_named_both() {
        let (a, _) =
            items_of_sysconfig(Path::new("/etc/sysconfig/docker"), "OPTIONS='-g /docker'\n")
                .unwrap();
        let (b, _) = items_of_daemon_json(
            Path::new("/etc/docker/daemon.json"),
            "{\"data-root\": \"/x\"}",
        )
        .unwrap();
        let e = resolve([a.clone(), b].concat()).unwrap_err().to_string();
        assert!(
            e.contains("/etc/sysconfig/docker:1") && e.contains("/etc/docker/daemon.json:1"),
            "{e}"
        );
        // agreeing sources are fine, lists are joined
        let (c, _) = items_of_daemon_json(
            Path::new("d"),
            "{\"graph\": \"/docker\", \"insecure-registries\": [\"r:1\"]}",
        )
        .unwrap();
        let (d, _) = items_of_sysconfig(
            Path::new("s"),
            "INSECURE_REGISTRY='--insecure-registry r:2'\n",
        )
        .unwrap();
        let (r, _) = resolve([a, c, d].concat()).unwrap();
        assert_eq!(r.value("data-root"), Some("/docker"));
        let regs: Vec<&str> = r
            .list("insecure-registry")
            .iter()
            .map(|i| i.value.as_str())
            .collect();
        assert_eq!(regs, ["r:1", "r:2"]);
    }
}

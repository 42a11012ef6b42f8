//! YAML configuration documents with line numbers on every value.
//!
//! Config files (Distribution's config.yml, mkimage recipes) are parsed into a
//! [`Doc`]: a tree whose every node remembers its line, so an error can say
//! `config.yml:17: http.addr: expected HOST:PORT` and an unknown key can be named
//! with its line. Environment overrides (`REGISTRY_HTTP_ADDR=…`, Distribution's
//! scheme) are merged into the same tree and named as such in messages.

use crate::error::{Error, Result};
use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::Spanned;
use std::fmt;
use std::path::Path;

/// A value with where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub value: Value,
    /// 1-based line in the file; 0 for values from the environment.
    pub line: u64,
    /// The environment variable that set this value, if any.
    pub env: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    Map(Vec<(String, Node)>),
}

// serde glue: the document is read once through serde-saphyr's Spanned wrapper.
enum Raw {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<Spanned<Raw>>),
    Map(Vec<(Spanned<String>, Spanned<Raw>)>),
}

impl<'de> Deserialize<'de> for Raw {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Raw;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a YAML value")
            }
            fn visit_unit<E>(self) -> std::result::Result<Raw, E> {
                Ok(Raw::Null)
            }
            fn visit_none<E>(self) -> std::result::Result<Raw, E> {
                Ok(Raw::Null)
            }
            fn visit_bool<E>(self, v: bool) -> std::result::Result<Raw, E> {
                Ok(Raw::Bool(v))
            }
            fn visit_i64<E>(self, v: i64) -> std::result::Result<Raw, E> {
                Ok(Raw::Int(v))
            }
            fn visit_u64<E>(self, v: u64) -> std::result::Result<Raw, E> {
                Ok(Raw::Int(v as i64))
            }
            fn visit_f64<E>(self, v: f64) -> std::result::Result<Raw, E> {
                Ok(Raw::Float(v))
            }
            fn visit_str<E>(self, v: &str) -> std::result::Result<Raw, E> {
                Ok(Raw::Str(v.to_string()))
            }
            fn visit_string<E>(self, v: String) -> std::result::Result<Raw, E> {
                Ok(Raw::Str(v))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> std::result::Result<Raw, A::Error> {
                let mut v = Vec::new();
                while let Some(x) = a.next_element()? {
                    v.push(x);
                }
                Ok(Raw::Seq(v))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> std::result::Result<Raw, A::Error> {
                let mut v = Vec::new();
                while let Some((k, x)) = a.next_entry()? {
                    v.push((k, x));
                }
                Ok(Raw::Map(v))
            }
        }
        d.deserialize_any(V)
    }
}

fn convert(r: Spanned<Raw>) -> Node {
    let line = r.referenced.line();
    let value = match r.value {
        Raw::Null => Value::Null,
        Raw::Bool(b) => Value::Bool(b),
        Raw::Int(i) => Value::Int(i),
        Raw::Float(f) => Value::Float(f),
        Raw::Str(s) => Value::Str(s),
        Raw::Seq(v) => Value::Seq(v.into_iter().map(convert).collect()),
        Raw::Map(v) => Value::Map(
            v.into_iter()
                .map(|(k, x)| {
                    let kl = k.referenced.line();
                    let mut n = convert(x);
                    // A key's value on the next line (a map) is reported at its key.
                    if matches!(n.value, Value::Map(_) | Value::Seq(_) | Value::Null) {
                        n.line = kl;
                    }
                    (k.value, n)
                })
                .collect(),
        ),
    };
    Node {
        value,
        line,
        env: None,
    }
}

impl Node {
    /// A scalar as text (numbers and booleans converted); None for null, lists
    /// and maps. For keys that may contain dots (labels, sysctl-like names), which
    /// a dotted path cannot reach.
    pub fn scalar_string(&self) -> Option<String> {
        match &self.value {
            Value::Str(s) => Some(s.clone()),
            Value::Int(i) => Some(i.to_string()),
            Value::Float(f) => Some(f.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            _ => None,
        }
    }

    /// Entries of a map node (empty for anything else).
    pub fn entries(&self) -> &[(String, Node)] {
        match &self.value {
            Value::Map(m) => m,
            _ => &[],
        }
    }

    /// A map entry by key, or a list item by its index (`"0"`, `"1"`, …), so a
    /// dotted path can reach into lists: `stages.2.run`.
    pub fn get(&self, key: &str) -> Option<&Node> {
        match &self.value {
            Value::Seq(v) => key.parse::<usize>().ok().and_then(|i| v.get(i)),
            _ => self
                .entries()
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v),
        }
    }

    /// Items of a list node (empty for anything else).
    pub fn items(&self) -> &[Node] {
        match &self.value {
            Value::Seq(v) => v,
            _ => &[],
        }
    }
}

/// A parsed configuration document.
#[derive(Debug, Clone)]
pub struct Doc {
    pub file: String,
    pub root: Node,
}

impl Doc {
    /// Read and parse a file; a missing or unreadable file or bad YAML is a
    /// `Kind::Config` error naming the file (and line).
    pub fn load(path: &Path) -> Result<Doc> {
        let text = std::fs::read(path).map_err(|e| {
            Error::config(format!(
                "{}: cannot read: {}",
                path.display(),
                crate::error::Error::from(e)
            ))
        })?;
        let text = String::from_utf8(text)
            .map_err(|_| Error::config(format!("{}: not UTF-8 text", path.display())))?;
        Doc::parse(&path.display().to_string(), &text)
    }

    /// Parse text; `file` names it in messages.
    pub fn parse(file: &str, text: &str) -> Result<Doc> {
        if text.trim().is_empty() {
            return Ok(Doc {
                file: file.to_string(),
                root: Node {
                    value: Value::Map(Vec::new()),
                    line: 1,
                    env: None,
                },
            });
        }
        match serde_saphyr::from_str::<Spanned<Raw>>(text) {
            Ok(r) => Ok(Doc {
                file: file.to_string(),
                root: convert(r),
            }),
            Err(e) => {
                let first = e.to_string();
                let first = first
                    .lines()
                    .next()
                    .unwrap_or("")
                    .trim_start_matches("error: ");
                // "line 2 column 2: msg" -> keep only msg; we add file:line ourselves.
                let msg = match first.split_once(": ") {
                    Some((pos, m)) if pos.starts_with("line ") => m.to_string(),
                    _ => first.to_string(),
                };
                let loc = e
                    .location()
                    .map(|l| format!("{}:{}", l.line(), l.column()))
                    .unwrap_or_else(|| "?".into());
                Err(Error::config(format!("{file}:{loc}: {msg}")))
            }
        }
    }

    /// The node at a dotted path (`http.tls.certificate`).
    /// A key may itself hold dots (`certs.d`, label names): at each level the
    /// longest key that leads to the rest of the path wins.
    pub fn node(&self, path: &str) -> Option<&Node> {
        fn find<'a>(n: &'a Node, parts: &[&str]) -> Option<&'a Node> {
            if parts.is_empty() {
                return Some(n);
            }
            (1..=parts.len())
                .rev()
                .filter_map(|i| Some((n.get(&parts[..i].join("."))?, i)))
                .find_map(|(c, i)| find(c, &parts[i..]))
        }
        let parts: Vec<&str> = path.split('.').collect();
        find(&self.root, &parts)
    }

    /// Where a node came from, for messages: `file:line` or `env VAR`.
    pub fn origin(&self, n: &Node) -> String {
        match &n.env {
            Some(v) => format!("environment variable {v}"),
            None => format!("{}:{}", self.file, n.line),
        }
    }

    /// A config error at a path: "file:line: path: msg".
    pub fn error(&self, path: &str, msg: impl fmt::Display) -> Error {
        let origin = match self.node(path) {
            Some(n) => self.origin(n),
            None => self.file.clone(),
        };
        Error::config(format!("{origin}: {path}: {msg}"))
    }

    /// A scalar as text (numbers and booleans converted), or None if absent/null.
    pub fn str(&self, path: &str) -> Result<Option<String>> {
        match self.node(path) {
            None => Ok(None),
            Some(Node {
                value: Value::Null, ..
            }) => Ok(None),
            Some(n) => n
                .scalar_string()
                .map(Some)
                .ok_or_else(|| self.error(path, "expected a single value, not a list or map")),
        }
    }

    pub fn bool(&self, path: &str) -> Result<Option<bool>> {
        match self.node(path).map(|n| &n.value) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(Value::Str(s)) if s.eq_ignore_ascii_case("true") => Ok(Some(true)),
            Some(Value::Str(s)) if s.eq_ignore_ascii_case("false") => Ok(Some(false)),
            Some(_) => Err(self.error(path, "expected true or false")),
        }
    }

    pub fn int(&self, path: &str) -> Result<Option<i64>> {
        match self.node(path).map(|n| &n.value) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Int(i)) => Ok(Some(*i)),
            Some(Value::Str(s)) => s
                .trim()
                .parse()
                .map(Some)
                .map_err(|_| self.error(path, "expected a whole number")),
            Some(_) => Err(self.error(path, "expected a whole number")),
        }
    }

    /// A list of scalars; a single scalar counts as a one-element list.
    pub fn str_list(&self, path: &str) -> Result<Vec<String>> {
        match self.node(path) {
            None => Ok(Vec::new()),
            Some(Node {
                value: Value::Null, ..
            }) => Ok(Vec::new()),
            Some(Node {
                value: Value::Seq(v),
                ..
            }) => v
                .iter()
                .map(|n| {
                    n.scalar_string()
                        .ok_or_else(|| self.error(path, "expected a list of values"))
                })
                .collect(),
            Some(n) => n
                .scalar_string()
                .map(|s| vec![s])
                .ok_or_else(|| self.error(path, "expected a list of values")),
        }
    }

    /// Keys not matched by any pattern in `known`, with their origin. A pattern is a
    /// dotted path; a trailing `.*` accepts anything below.
    pub fn unknown_keys(&self, known: &[&str]) -> Vec<String> {
        let mut out = Vec::new();
        walk(&self.root, String::new(), &mut |path, node| {
            let ok = known.iter().any(|k| {
                if let Some(prefix) = k.strip_suffix(".*") {
                    path == prefix || path.starts_with(&format!("{prefix}."))
                } else {
                    *k == path || k.starts_with(&format!("{path}."))
                }
            });
            if !ok {
                out.push(format!(
                    "{}: unknown key {path:?} ignored",
                    self.origin(node)
                ));
                return false;
            }
            true
        });
        out
    }

    /// Merge `PREFIX_SECTION_KEY=value` variables over the document, Distribution's
    /// scheme: the underscore-separated words, lowercased, are a dotted path. Only
    /// paths in `known` (exact, no patterns) are taken; others are returned as
    /// warnings.
    pub fn apply_env<I: IntoIterator<Item = (String, String)>>(
        &mut self,
        prefix: &str,
        vars: I,
        known: &[&str],
    ) -> Vec<String> {
        let mut warnings = Vec::new();
        let mut vars: Vec<_> = vars
            .into_iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .collect();
        vars.sort();
        for (k, v) in vars {
            let path = k[prefix.len()..].to_ascii_lowercase().replace('_', ".");
            if !known.contains(&path.as_str()) {
                warnings.push(format!(
                    "environment variable {k}: no such setting {path:?}, ignored"
                ));
                continue;
            }
            let value = match v.as_str() {
                "true" => Value::Bool(true),
                "false" => Value::Bool(false),
                _ => match v.parse::<i64>() {
                    Ok(i) => Value::Int(i),
                    Err(_) => Value::Str(v.clone()),
                },
            };
            set(
                &mut self.root,
                &path,
                Node {
                    value,
                    line: 0,
                    env: Some(k.clone()),
                },
            );
        }
        warnings
    }
}

fn walk(n: &Node, path: String, f: &mut dyn FnMut(&str, &Node) -> bool) {
    for (k, v) in n.entries() {
        let p = if path.is_empty() {
            k.clone()
        } else {
            format!("{path}.{k}")
        };
        if f(&p, v) {
            walk(v, p, f);
        }
    }
}

fn set(root: &mut Node, path: &str, leaf: Node) {
    let mut n = root;
    let parts: Vec<&str> = path.split('.').collect();
    for (i, part) in parts.iter().enumerate() {
        if !matches!(n.value, Value::Map(_)) {
            n.value = Value::Map(Vec::new());
        }
        let Value::Map(m) = &mut n.value else {
            unreachable!()
        };
        let idx = match m.iter().position(|(k, _)| k == part) {
            Some(i) => i,
            None => {
                m.push((
                    part.to_string(),
                    Node {
                        value: Value::Map(Vec::new()),
                        line: 0,
                        env: leaf.env.clone(),
                    },
                ));
                m.len() - 1
            }
        };
        if i == parts.len() - 1 {
            m[idx].1 = leaf;
            return;
        }
        n = &mut m[idx].1;
    }
}

/// Parse a Go-style duration (`168h`, `10m`, `30s`, `1h30m`, `500ms`).
pub fn parse_duration(s: &str) -> Option<std::time::Duration> {
    let s = s.trim();
    if s == "0" {
        return Some(std::time::Duration::ZERO);
    }
    let mut total = 0f64;
    let mut rest = s;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let n = rest
            .bytes()
            .take_while(|b| b.is_ascii_digit() || *b == b'.')
            .count();
        if n == 0 {
            return None;
        }
        let v: f64 = rest[..n].parse().ok()?;
        rest = &rest[n..];
        let u = rest
            .bytes()
            .take_while(|b| b.is_ascii_alphabetic() || *b == 0xc2 || *b == 0xb5)
            .count();
        let mult = match &rest[..u] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        total += v * mult;
        rest = &rest[u..];
    }
    Some(std::time::Duration::from_secs_f64(total))
}

impl fmt::Display for Doc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.file)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SITE: &str = "---\n## comment\nversion: 0.1\nlog:\n  fields:\n    service: registry\n  level: debug\nstorage:\n    delete:\n        enabled: true\nhttp:\n    addr: 142.90.90.109:5000\n    bogus: 1\n";

    #[test]
    fn keys_with_dots_are_reached() {
        // the client settings' `certs.d`, beside a nested map of that name
        let d = Doc::parse(
            "c.yml",
            "certs.d: /etc/docker/certs.d\nlabels:\n  a.b:\n    c: 1\n",
        )
        .unwrap();
        assert_eq!(
            d.str("certs.d").unwrap().as_deref(),
            Some("/etc/docker/certs.d")
        );
        assert_eq!(d.str("labels.a.b.c").unwrap().as_deref(), Some("1"));
        assert!(d.unknown_keys(&["certs.d", "labels.a.b.c"]).is_empty());
        let nested = Doc::parse("c.yml", "certs:\n  d: /x\n").unwrap();
        assert_eq!(nested.str("certs.d").unwrap().as_deref(), Some("/x"));
    }

    #[test]
    fn lines_and_types() {
        let d = Doc::parse("c.yml", SITE).unwrap();
        assert_eq!(d.str("version").unwrap().as_deref(), Some("0.1"));
        assert_eq!(
            d.str("http.addr").unwrap().as_deref(),
            Some("142.90.90.109:5000")
        );
        assert_eq!(d.bool("storage.delete.enabled").unwrap(), Some(true));
        assert_eq!(d.node("http.addr").unwrap().line, 12);
        let e = d.bool("http.addr").unwrap_err();
        assert_eq!(e.to_string(), "c.yml:12: http.addr: expected true or false");
        assert_eq!(e.exit_code(), 2);
        let unk = d.unknown_keys(&[
            "version",
            "log.fields.*",
            "log.level",
            "storage.delete.enabled",
            "http.addr",
        ]);
        assert_eq!(
            unk,
            vec!["c.yml:13: unknown key \"http.bogus\" ignored".to_string()]
        );
    }

    #[test]
    fn dotted_paths_reach_into_lists() {
        let d = Doc::parse(
            "r.yml",
            "stages:\n  - name: a\n    run: true\n  - name: b\n    copy:\n      - src: x\n",
        )
        .unwrap();
        assert_eq!(d.str("stages.1.name").unwrap().as_deref(), Some("b"));
        assert_eq!(d.str("stages.1.copy.0.src").unwrap().as_deref(), Some("x"));
        assert_eq!(d.node("stages").unwrap().items().len(), 2);
        assert!(d.node("stages.2").is_none());
        assert!(d.node("stages.x").is_none());
        assert_eq!(
            d.error("stages.1.copy.0.src", "missing").to_string(),
            "r.yml:6: stages.1.copy.0.src: missing"
        );
    }

    #[test]
    fn syntax_errors_name_file_and_line() {
        let e = Doc::parse("bad.yml", "a: [1, 2\nb: c\n").unwrap_err();
        assert!(e.to_string().starts_with("bad.yml:2:"), "{e}");
        assert!(!e.to_string().contains('\n'));
    }

    #[test]
    fn env_overrides() {
        let mut d = Doc::parse("c.yml", SITE).unwrap();
        let w = d.apply_env(
            "REGISTRY_",
            vec![
                ("REGISTRY_HTTP_ADDR".into(), "127.0.0.1:1".into()),
                ("REGISTRY_NOPE".into(), "x".into()),
                ("OTHER".into(), "y".into()),
            ],
            &["http.addr", "auth.htpasswd.path"],
        );
        assert_eq!(w.len(), 1);
        assert_eq!(d.str("http.addr").unwrap().as_deref(), Some("127.0.0.1:1"));
        d.apply_env(
            "REGISTRY_",
            vec![("REGISTRY_AUTH_HTPASSWD_PATH".into(), "/p".into())],
            &["auth.htpasswd.path"],
        );
        assert_eq!(d.str("auth.htpasswd.path").unwrap().as_deref(), Some("/p"));
        assert_eq!(
            d.error("auth.htpasswd.path", "x").to_string(),
            "environment variable REGISTRY_AUTH_HTPASSWD_PATH: auth.htpasswd.path: x"
        );
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("168h").unwrap().as_secs(), 168 * 3600);
        assert_eq!(parse_duration("1h30m").unwrap().as_secs(), 5400);
        assert_eq!(parse_duration("500ms").unwrap().as_millis(), 500);
        assert!(parse_duration("5 days").is_none());
        assert!(parse_duration("").is_none());
    }
}

//! Shell-style path patterns for trees: `/usr/share/locale/*`, `/usr/share/man/**`,
//! `/usr/lib/locale/[!e]*`.
//!
//! A pattern is matched component by component against a path relative to some
//! root (a leading `/` means that root). In a component, `*` matches any run of
//! bytes (a leading dot included: removal should not miss `.cache`), `?` one byte,
//! `[abc]`, `[a-z]` and `[!x]` a class, and `\` escapes. A component that is
//! exactly `**` matches any number of components; at the end of a pattern it
//! matches one or more, so `/usr/share/doc/**` is everything *inside* the
//! directory (gitignore's rule).

use crate::error::{Error, Result};
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    AnyDirs,
    Name(Vec<u8>),
}

/// A compiled pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Glob {
    text: String,
    parts: Vec<Part>,
}

impl Glob {
    pub fn parse(pattern: &str) -> Result<Glob> {
        let mut parts = Vec::new();
        for c in pattern.split('/') {
            match c {
                "" | "." => {}
                ".." => {
                    return Err(Error::invalid(format!(
                        "pattern {pattern:?}: '..' is not allowed"
                    )));
                }
                "**" => {
                    // `**/**` is the same as one
                    if parts.last() != Some(&Part::AnyDirs) {
                        parts.push(Part::AnyDirs);
                    }
                }
                _ => {
                    check_classes(c)
                        .map_err(|m| Error::invalid(format!("pattern {pattern:?}: {m}")))?;
                    parts.push(Part::Name(c.as_bytes().to_vec()));
                }
            }
        }
        if parts.is_empty() {
            return Err(Error::invalid(format!(
                "pattern {pattern:?} names the whole root"
            )));
        }
        Ok(Glob {
            text: pattern.to_string(),
            parts,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether the path (its components, relative to the root) matches.
    pub fn matches<S: AsRef<OsStr>>(&self, path: &[S]) -> bool {
        let comps: Vec<&[u8]> = path.iter().map(|c| c.as_ref().as_bytes()).collect();
        match_parts(&self.parts, &comps)
    }

    /// Whether something strictly below the directory `path` could match.
    pub fn may_match_below<S: AsRef<OsStr>>(&self, path: &[S]) -> bool {
        let comps: Vec<&[u8]> = path.iter().map(|c| c.as_ref().as_bytes()).collect();
        prefix_parts(&self.parts, &comps)
    }

    /// Convenience for a relative `a/b/c` path.
    pub fn matches_path(&self, p: &std::path::Path) -> bool {
        let comps: Vec<OsString> = p
            .components()
            .filter_map(|c| match c {
                std::path::Component::Normal(n) => Some(n.to_os_string()),
                _ => None,
            })
            .collect();
        self.matches(&comps)
    }
}

fn match_parts(parts: &[Part], comps: &[&[u8]]) -> bool {
    match parts.first() {
        None => comps.is_empty(),
        Some(Part::AnyDirs) if parts.len() == 1 => !comps.is_empty(),
        Some(Part::AnyDirs) => (0..=comps.len()).any(|k| match_parts(&parts[1..], &comps[k..])),
        Some(Part::Name(p)) => {
            !comps.is_empty() && fnmatch(p, comps[0]) && match_parts(&parts[1..], &comps[1..])
        }
    }
}

// True when `comps` plus at least one more component can match `parts`.
fn prefix_parts(parts: &[Part], comps: &[&[u8]]) -> bool {
    if comps.is_empty() {
        return !parts.is_empty();
    }
    match parts.first() {
        None => false,
        Some(Part::AnyDirs) => prefix_parts(&parts[1..], comps) || prefix_parts(parts, &comps[1..]),
        Some(Part::Name(p)) => fnmatch(p, comps[0]) && prefix_parts(&parts[1..], &comps[1..]),
    }
}

fn check_classes(c: &str) -> std::result::Result<(), String> {
    let b = c.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'\\' => i += 2,
            b'[' => match class_end(b, i) {
                Some(e) => i = e + 1,
                None => return Err("unclosed '['".into()),
            },
            _ => i += 1,
        }
    }
    Ok(())
}

// Index of the ']' closing the class opened at `open`.
fn class_end(p: &[u8], open: usize) -> Option<usize> {
    let mut i = open + 1;
    if i < p.len() && (p[i] == b'!' || p[i] == b'^') {
        i += 1;
    }
    // a ']' right after the opening is a member
    if i < p.len() && p[i] == b']' {
        i += 1;
    }
    while i < p.len() {
        match p[i] {
            b'\\' => i += 2,
            b']' => return Some(i),
            _ => i += 1,
        }
    }
    None
}

fn class_matches(class: &[u8], ch: u8) -> bool {
    let (neg, mut body) = match class.first() {
        Some(b'!' | b'^') => (true, &class[1..]),
        _ => (false, class),
    };
    let mut hit = false;
    while !body.is_empty() {
        let (lo, rest) = if body[0] == b'\\' && body.len() > 1 {
            (body[1], &body[2..])
        } else {
            (body[0], &body[1..])
        };
        if rest.len() >= 2 && rest[0] == b'-' {
            let (hi, rest2) = if rest[1] == b'\\' && rest.len() > 2 {
                (rest[2], &rest[3..])
            } else {
                (rest[1], &rest[2..])
            };
            if lo <= ch && ch <= hi {
                hit = true;
            }
            body = rest2;
        } else {
            if lo == ch {
                hit = true;
            }
            body = rest;
        }
    }
    hit != neg
}

/// Match one component against one pattern component (bytes).
fn fnmatch(p: &[u8], s: &[u8]) -> bool {
    // Iterative matcher with one backtrack point for the last '*'.
    let (mut pi, mut si) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        if pi < p.len() {
            match p[pi] {
                b'*' => {
                    star = Some((pi, si));
                    pi += 1;
                    continue;
                }
                b'?' => {
                    pi += 1;
                    si += 1;
                    continue;
                }
                b'[' => {
                    if let Some(end) = class_end(p, pi) {
                        if class_matches(&p[pi + 1..end], s[si]) {
                            pi = end + 1;
                            si += 1;
                            continue;
                        }
                    } else if s[si] == b'[' {
                        pi += 1;
                        si += 1;
                        continue;
                    }
                }
                b'\\' if pi + 1 < p.len() => {
                    if p[pi + 1] == s[si] {
                        pi += 2;
                        si += 1;
                        continue;
                    }
                }
                c => {
                    if c == s[si] {
                        pi += 1;
                        si += 1;
                        continue;
                    }
                }
            }
        }
        match star {
            Some((sp, ss)) => {
                pi = sp + 1;
                si = ss + 1;
                star = Some((sp, ss + 1));
            }
            None => return false,
        }
    }
    while pi < p.len() && p[pi] == b'*' {
        pi += 1;
    }
    pi == p.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, path: &str) -> bool {
        let comps: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
        Glob::parse(p).unwrap().matches(&comps)
    }

    #[test]
    fn components_and_classes() {
        assert!(m("/usr/share/locale/*", "usr/share/locale/de"));
        assert!(m("/usr/share/locale/*", "usr/share/locale/.hidden"));
        assert!(!m("/usr/share/locale/*", "usr/share/locale"));
        assert!(!m("/usr/share/locale/*", "usr/share/locale/de/LC_MESSAGES"));
        assert!(m("usr/share/locale/en_*", "usr/share/locale/en_US"));
        assert!(m("/a/?b", "a/xb"));
        assert!(!m("/a/?b", "a/b"));
        assert!(m("/a/[!e]*", "a/de"));
        assert!(!m("/a/[!e]*", "a/en"));
        assert!(m("/a/[a-c]x", "a/bx"));
        assert!(!m("/a/[a-c]x", "a/dx"));
        assert!(m("/a/[]]", "a/]"));
        assert!(m("/a/\\*", "a/*"));
        assert!(!m("/a/\\*", "a/b"));
        assert!(m("/a/*.mo", "a/x.y.mo"));
        assert!(!m("/a/*.mo", "a/x.mo.bak"));
        assert!(Glob::parse("/a/[b").is_err());
        assert!(Glob::parse("/a/../b").is_err());
        assert!(Glob::parse("/").is_err());
    }

    #[test]
    fn double_star() {
        assert!(m("/usr/**/man", "usr/man"));
        assert!(m("/usr/**/man", "usr/share/man"));
        assert!(m("/usr/**/man", "usr/local/share/man"));
        assert!(m("/usr/share/doc/**", "usr/share/doc/pkg/README"));
        assert!(!m("/usr/share/doc/**", "usr/share/doc"));
        assert!(m("**/*.pyc", "usr/lib/python/x.pyc"));
        assert!(m("**/*.pyc", "x.pyc"));
    }

    #[test]
    fn below() {
        let g = Glob::parse("/usr/share/locale/en_US/**").unwrap();
        assert!(g.may_match_below(&["usr"]));
        assert!(g.may_match_below(&["usr", "share", "locale"]));
        assert!(g.may_match_below(&["usr", "share", "locale", "en_US"]));
        assert!(g.may_match_below(&["usr", "share", "locale", "en_US", "LC_MESSAGES"]));
        assert!(!g.may_match_below(&["usr", "share", "locale", "de"]));
        assert!(!g.may_match_below(&["etc"]));
        let g = Glob::parse("/usr/share/locale/en_US").unwrap();
        assert!(g.may_match_below(&["usr", "share", "locale"]));
        assert!(!g.may_match_below(&["usr", "share", "locale", "en_US"]));
        let g = Glob::parse("**/locale").unwrap();
        assert!(g.may_match_below(&["a", "b", "c"]));
    }
}

//! HTTP glue shared by the daemons: a server on tiny_http (plain TCP, TLS through
//! the [`crate::tls`] front, or a unix socket) with a worker pool, panic isolation,
//! byte ranges, query parsing and one access-log line per request.

pub mod front;
pub mod server;

pub use server::{Body, Listen, Request, Response, Server, ServerOptions};

/// Decode `%XX` escapes (and `+` as space in queries when `plus` is set).
pub fn percent_decode(s: &str, plus: bool) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let h = s.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(h, 16).ok()?);
                i += 3;
            }
            b'+' if plus => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// Encode a query value.
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Parse a query string into decoded pairs (undecodable pairs are dropped).
pub fn parse_query(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .filter_map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            Some((percent_decode(k, true)?, percent_decode(v, true)?))
        })
        .collect()
}

/// A single byte range resolved against a length: (first, last) inclusive.
#[derive(Debug, PartialEq, Eq)]
pub enum Range {
    /// No usable Range header: send everything.
    Full,
    Part(u64, u64),
    /// Syntactically fine but outside the content: 416.
    Unsatisfiable,
}

/// A chunked upload's `Content-Range: START-END` (a `bytes ` or `bytes=`
/// prefix and a `/TOTAL` suffix tolerated): the chunk's start and length, or
/// None when it is malformed or END < START. Every sum is checked, so no
/// range wraps.
pub fn parse_content_range(h: &str) -> Option<(u64, u64)> {
    let v = h
        .trim()
        .trim_start_matches("bytes ")
        .trim_start_matches("bytes=");
    let v = v.split('/').next().unwrap_or("");
    let (a, b) = v.split_once('-')?;
    let (a, b) = (a.trim().parse::<u64>().ok()?, b.trim().parse::<u64>().ok()?);
    let len = b.checked_sub(a)?.checked_add(1)?;
    Some((a, len))
}

/// Interpret a `Range` header for content of `len` bytes (one range only; several
/// ranges are answered with the whole content, which RFC 9110 allows).
pub fn parse_range(h: Option<&str>, len: u64) -> Range {
    let Some(spec) = h.and_then(|h| h.trim().strip_prefix("bytes=")) else {
        return Range::Full;
    };
    if spec.contains(',') {
        return Range::Full;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return Range::Full;
    };
    let (a, b) = (a.trim(), b.trim());
    if a.is_empty() {
        // suffix: last N bytes
        let Ok(n) = b.parse::<u64>() else {
            return Range::Full;
        };
        if n == 0 || len == 0 {
            return Range::Unsatisfiable;
        }
        return Range::Part(len.saturating_sub(n), len - 1);
    }
    let Ok(first) = a.parse::<u64>() else {
        return Range::Full;
    };
    let last = if b.is_empty() {
        len.saturating_sub(1)
    } else {
        match b.parse::<u64>() {
            Ok(l) if l >= first => l.min(len.saturating_sub(1)),
            _ => return Range::Full,
        }
    };
    if first >= len {
        return Range::Unsatisfiable;
    }
    Range::Part(first, last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(parse_range(None, 10), Range::Full);
        assert_eq!(parse_range(Some("bytes=0-3"), 10), Range::Part(0, 3));
        assert_eq!(parse_range(Some("bytes=5-"), 10), Range::Part(5, 9));
        assert_eq!(parse_range(Some("bytes=-4"), 10), Range::Part(6, 9));
        assert_eq!(parse_range(Some("bytes=8-100"), 10), Range::Part(8, 9));
        assert_eq!(parse_range(Some("bytes=10-"), 10), Range::Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=0-1,4-5"), 10), Range::Full);
        assert_eq!(parse_range(Some("items=0-1"), 10), Range::Full);
    }

    #[test]
    fn query_and_escapes() {
        let q = parse_query("n=2&last=a%2Fb&artifactType=application%2Fvnd.x+y&flag");
        assert_eq!(q[1], ("last".into(), "a/b".into()));
        assert_eq!(q[2].1, "application/vnd.x y");
        assert_eq!(q[3], ("flag".into(), "".into()));
        assert_eq!(percent_decode("%zz", false), None);
        assert_eq!(percent_encode("sha256:ab/c"), "sha256%3Aab%2Fc");
    }
}

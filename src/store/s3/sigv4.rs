//! AWS Signature Version 4 for S3, in the two forms the driver needs: the
//! `Authorization` header of a request it sends, and a presigned URL a client
//! follows itself (blob redirects). Only `sha2` is needed: HMAC-SHA256 is a few
//! lines, and owning them keeps every header we sign (copy sources, metadata
//! directives, conditional writes) under our control.

use sha2::{Digest as _, Sha256};

/// Hash of an empty body.
pub const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
/// Payload hash for bodies not hashed before sending (parts, streamed copies).
pub const UNSIGNED: &str = "UNSIGNED-PAYLOAD";

/// Who signs: the key pair and the region it is scoped to.
#[derive(Clone)]
pub struct Credentials {
    pub access_key: String,
    pub secret_key: String,
    pub region: String,
}

// Never print the secret, in logs or in panics.
impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key", &self.access_key)
            .field("secret_key", &"<redacted>")
            .field("region", &self.region)
            .finish()
    }
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut k = [0u8; 64];
    if key.len() > 64 {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha256::new();
    inner.update(k.map(|b| b ^ 0x36));
    inner.update(data);
    let mut outer = Sha256::new();
    outer.update(k.map(|b| b ^ 0x5c));
    outer.update(inner.finalize());
    outer.finalize().into()
}

pub fn sha256_hex(data: &[u8]) -> String {
    crate::digest::to_hex(&Sha256::digest(data))
}

/// S3's URI encoding: everything but unreserved characters, and `/` kept in paths.
pub fn uri_encode(s: &str, keep_slash: bool) -> String {
    if keep_slash {
        s.split('/')
            .map(crate::http::percent_encode)
            .collect::<Vec<_>>()
            .join("/")
    } else {
        crate::http::percent_encode(s)
    }
}

/// `20130524T000000Z` for a unix time.
pub fn amz_date(secs: i64) -> String {
    let t = crate::util::rfc3339(secs);
    t.replace(['-', ':'], "")
}

impl Credentials {
    fn scope(&self, date: &str) -> String {
        format!("{}/{}/s3/aws4_request", &date[..8], self.region)
    }

    fn signature(&self, amz_date: &str, canonical_request: &str) -> String {
        let scope = self.scope(amz_date);
        let to_sign = format!(
            "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
            sha256_hex(canonical_request.as_bytes())
        );
        let k = hmac(
            format!("AWS4{}", self.secret_key).as_bytes(),
            &amz_date.as_bytes()[..8],
        );
        let k = hmac(&k, self.region.as_bytes());
        let k = hmac(&k, b"s3");
        let k = hmac(&k, b"aws4_request");
        crate::digest::to_hex(&hmac(&k, to_sign.as_bytes()))
    }

    /// The `Authorization` header for a request. `path` is the encoded path,
    /// `query` decoded pairs, `headers` every header to sign (lowercase names;
    /// `host`, `x-amz-date` and `x-amz-content-sha256` among them).
    pub fn authorization(
        &self,
        method: &str,
        path: &str,
        query: &[(String, String)],
        headers: &[(String, String)],
        amz_date: &str,
        payload_hash: &str,
    ) -> String {
        let mut h: Vec<(String, String)> = headers
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        h.sort();
        let signed: Vec<&str> = h.iter().map(|(k, _)| k.as_str()).collect();
        let signed = signed.join(";");
        let canonical_headers: String = h.iter().map(|(k, v)| format!("{k}:{v}\n")).collect();
        let cr = format!(
            "{method}\n{path}\n{}\n{canonical_headers}\n{signed}\n{payload_hash}",
            canonical_query(query)
        );
        format!(
            "AWS4-HMAC-SHA256 Credential={}/{},SignedHeaders={signed},Signature={}",
            self.access_key,
            self.scope(amz_date),
            self.signature(amz_date, &cr)
        )
    }

    /// A presigned URL query for `method path` on `host`: the query to append
    /// (already encoded), valid `expires` seconds from `amz_date`.
    pub fn presign_query(
        &self,
        method: &str,
        host: &str,
        path: &str,
        amz_date: &str,
        expires: u64,
    ) -> String {
        let mut q: Vec<(String, String)> = vec![
            ("X-Amz-Algorithm".into(), "AWS4-HMAC-SHA256".into()),
            (
                "X-Amz-Credential".into(),
                format!("{}/{}", self.access_key, self.scope(amz_date)),
            ),
            ("X-Amz-Date".into(), amz_date.into()),
            ("X-Amz-Expires".into(), expires.to_string()),
            ("X-Amz-SignedHeaders".into(), "host".into()),
        ];
        let cr = format!(
            "{method}\n{path}\n{}\nhost:{host}\n\nhost\n{UNSIGNED}",
            canonical_query(&q)
        );
        let sig = self.signature(amz_date, &cr);
        q.push(("X-Amz-Signature".into(), sig));
        canonical_query(&q)
    }
}

/// Sorted, encoded `k=v&…` (a key without value keeps its `=`).
pub fn canonical_query(q: &[(String, String)]) -> String {
    let mut e: Vec<(String, String)> = q
        .iter()
        .map(|(k, v)| (uri_encode(k, false), uri_encode(v, false)))
        .collect();
    e.sort();
    e.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example() -> Credentials {
        // AWS's documented example key pair (sig-v4-header-based-auth.html).
        Credentials {
            access_key: "AKIAIOSFODNN7EXAMPLE".into(),
            secret_key: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".into(),
            region: "us-east-1".into(),
        }
    }

    #[test]
    fn signs_awss_documented_get_object() {
        let h = vec![
            (
                "host".to_string(),
                "examplebucket.s3.amazonaws.com".to_string(),
            ),
            ("range".into(), "bytes=0-9".into()),
            ("x-amz-content-sha256".into(), EMPTY_SHA256.into()),
            ("x-amz-date".into(), "20130524T000000Z".into()),
        ];
        let a = example().authorization(
            "GET",
            "/test.txt",
            &[],
            &h,
            "20130524T000000Z",
            EMPTY_SHA256,
        );
        assert_eq!(
            a,
            "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,SignedHeaders=host;range;x-amz-content-sha256;x-amz-date,Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
        );
    }

    #[test]
    fn presigns_awss_documented_url() {
        let q = example().presign_query(
            "GET",
            "examplebucket.s3.amazonaws.com",
            "/test.txt",
            "20130524T000000Z",
            86400,
        );
        assert!(
            q.contains(
                "X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404"
            ),
            "{q}"
        );
        assert!(q.contains(
            "X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request"
        ));
    }

    #[test]
    fn secrets_stay_out_of_debug_output() {
        assert!(!format!("{:?}", example()).contains("EXAMPLEKEY"));
        assert_eq!(amz_date(1369353600), "20130524T000000Z");
        assert_eq!(uri_encode("a b/c~", true), "a%20b/c~");
    }
}

//! Image signatures on the registry: the extension containers/image clients
//! (skopeo, podman, berth) use when `/v2/` answers `X-Registry-Supports-Signatures: 1`
//! (`GET`/`PUT /extensions/v2/NAME/signatures/DIGEST`), and the read-only lookaside
//! layout for clients whose registries.d points a `lookaside:` URL here
//! (`GET /sigstore/NAME@ALGO=HEX/signature-N`). Both read the same store: the
//! signatures beside each manifest revision.
//!
//! A PUT is checked before anything is stored: a JSON entry of at most
//! [`MAX_BODY`] bytes, version 2, type atomic, a name that starts with the digest
//! in the URL, and content that is a well-formed OpenPGP signed message whose
//! payload names that digest. The registry holds no keys, so it cannot and does
//! not decide trust; clients verify against their policy.

use super::api::{Registry, error, internal};
use berth::digest::Digest;
use berth::error::Kind;
use berth::http::server::{Request, Response};
use berth::signing::{SignatureEntry, SignatureList};
use serde_json::json;

/// Largest PUT body: a 64 KiB signature in base64 with its JSON around it.
pub const MAX_BODY: usize = 96 * 1024;

impl Registry {
    fn signature_digest(d: &str) -> Result<Digest, Response> {
        d.parse().map_err(|e: berth::Error| {
            error(400, "DIGEST_INVALID", e.to_string(), json!({"digest": d}))
        })
    }

    pub(super) fn get_signatures(&self, name: &str, d: &str) -> Response {
        let digest = match Self::signature_digest(d) {
            Ok(d) => d,
            Err(r) => return r,
        };
        match self.store().signatures(name, &digest) {
            Ok(Some(sigs)) => {
                let list = SignatureList {
                    signatures: sigs
                        .iter()
                        .map(|(id, blob)| {
                            let mut e = SignatureEntry::new(&digest, blob);
                            e.name = format!("{digest}@{id}");
                            e
                        })
                        .collect(),
                };
                Response::new(200).json(&serde_json::to_value(&list).unwrap_or_default())
            }
            Ok(None) => error(
                404,
                "MANIFEST_UNKNOWN",
                "manifest unknown",
                json!({"name": name, "digest": d}),
            ),
            Err(e) => internal(&e),
        }
    }

    pub(super) fn put_signature(&self, req: &mut Request, name: &str, d: &str) -> Response {
        let digest = match Self::signature_digest(d) {
            Ok(d) => d,
            Err(r) => return r,
        };
        if req.body_length().is_some_and(|l| l > MAX_BODY as u64) {
            return error(
                413,
                "SIZE_INVALID",
                format!("a signature entry is limited to {MAX_BODY} bytes"),
                json!({}),
            );
        }
        let body = match req.read_body(MAX_BODY) {
            Ok(b) => b,
            Err(e) if e.kind() == Kind::Unsupported => {
                return error(413, "SIZE_INVALID", e.to_string(), json!({}));
            }
            Err(e) => return error(400, "SIGNATURE_INVALID", e.to_string(), json!({})),
        };
        let entry: SignatureEntry = match serde_json::from_slice(&body) {
            Ok(e) => e,
            Err(e) => {
                return error(
                    400,
                    "SIGNATURE_INVALID",
                    format!("not a signature entry (schemaVersion, name, type, content): {e}"),
                    json!({}),
                );
            }
        };
        let (id, blob) = match entry.validate(&digest) {
            Ok(v) => v,
            Err(e) => {
                log::warn!(
                    "{}: refused a signature for {name}@{digest}: {e}",
                    req.user.as_deref().unwrap_or("-")
                );
                return error(
                    400,
                    "SIGNATURE_INVALID",
                    e.to_string(),
                    json!({"name": entry.name}),
                );
            }
        };
        match self.store().put_signature(name, &digest, &id, &blob) {
            Ok(added) => {
                log::info!(
                    "{} {} signature {id} of {name}@{digest}",
                    req.user.as_deref().unwrap_or("-"),
                    if added { "added" } else { "re-sent" }
                );
                Response::new(201)
            }
            Err(e) if e.kind() == Kind::NotFound => error(
                404,
                "MANIFEST_UNKNOWN",
                format!("{name} has no manifest {digest}: push the image before its signature"),
                json!({"name": name, "digest": d}),
            ),
            Err(e) if e.kind() == Kind::Conflict => error(409, "DENIED", e.to_string(), json!({})),
            Err(e) => internal(&e),
        }
    }

    /// `NAME@ALGO=HEX/signature-N` under `/sigstore/`.
    pub(super) fn lookaside(&self, req: &Request, rest: &str) -> Response {
        let not_found = || Response::new(404).bytes("text/plain", b"no such signature\n".to_vec());
        let Some((left, file)) = rest.rsplit_once('/') else {
            return not_found();
        };
        let Some(n) = file
            .strip_prefix("signature-")
            .and_then(|n| n.parse::<usize>().ok())
            .filter(|n| *n >= 1)
        else {
            return not_found();
        };
        let Some((name, d)) = left.rsplit_once('@') else {
            return not_found();
        };
        let Ok(digest) = d.replacen('=', ":", 1).parse::<Digest>() else {
            return not_found();
        };
        if berth::reference::validate_name(name).is_err() {
            return not_found();
        }
        match self.store().signatures(name, &digest) {
            Ok(Some(sigs)) => match sigs.get(n - 1) {
                Some((_, blob)) => {
                    if req.method == "HEAD" {
                        Response::new(200)
                            .header("Content-Type", "application/octet-stream")
                            .stream(Box::new(std::io::empty()), blob.len() as u64)
                    } else {
                        Response::new(200).bytes("application/octet-stream", blob.clone())
                    }
                }
                None => not_found(),
            },
            Ok(None) => not_found(),
            Err(e) => internal(&e),
        }
    }
}

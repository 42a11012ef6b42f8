//! Signatures on the wire: the registry extension (`/extensions/v2/…/signatures/…`,
//! offered when `/v2/` answers `X-Registry-Supports-Signatures: 1`) and lookaside
//! stores from registries.d, chosen as containers/image chooses: the extension
//! when the registry has it, else the lookaside configured for the image.
//! Reading is bounded (count and size); writing goes to the extension or to a
//! `file://` lookaside-staging directory.

use super::client::{Body, Registry, header};
use super::settings::Settings;
use crate::digest::Digest;
use crate::error::{Error, Kind, Result};
use crate::signing::lookaside::{self, RegistriesD};
use crate::signing::{Identity, MAX_SIGNATURE, SignatureEntry, SignatureList};
use base64::Engine;
use std::io::Read;

/// Most signatures read for one manifest.
const MAX_COUNT: usize = 256;

impl Registry {
    /// Whether the registry carries signatures itself (the extension).
    pub fn supports_signatures(&self) -> Result<bool> {
        let mut r = self.send("GET", &self.url("/v2/"), "", &[], Body::None, false)?;
        if !r.status().is_success() {
            return Err(self.fail("GET /v2/", &mut r));
        }
        Ok(header(&r, "X-Registry-Supports-Signatures").as_deref() == Some("1"))
    }

    /// Signature blobs of `repo`'s manifest `d` through the extension (an unknown
    /// manifest has none). Entries of other types or versions are skipped.
    pub fn extension_signatures(&self, repo: &str, d: &Digest) -> Result<Vec<Vec<u8>>> {
        let scope = format!("repository:{repo}:pull");
        let mut r = self.send(
            "GET",
            &self.url(&format!("/extensions/v2/{repo}/signatures/{d}")),
            &scope,
            &[],
            Body::None,
            false,
        )?;
        if r.status().as_u16() == 404 {
            return Ok(Vec::new());
        }
        if !r.status().is_success() {
            return Err(self.fail(&format!("signatures of {repo}@{d}"), &mut r));
        }
        let body = r
            .body_mut()
            .with_config()
            .limit((MAX_COUNT * MAX_SIGNATURE * 2) as u64)
            .read_to_vec()
            .map_err(|e| {
                Error::new(
                    Kind::Network,
                    format!("{}: reading signatures of {repo}@{d}: {e}", self.host),
                )
            })?;
        let list: SignatureList = serde_json::from_slice(&body).map_err(|e| {
            Error::new(
                Kind::Invalid,
                format!(
                    "{}: signatures of {repo}@{d}: not a signature list: {e}",
                    self.host
                ),
            )
        })?;
        let mut out = Vec::new();
        for e in list.signatures.into_iter().take(MAX_COUNT) {
            if e.schema_version != 2 || e.kind != "atomic" {
                continue;
            }
            let blob = base64::engine::general_purpose::STANDARD
                .decode(&e.content)
                .map_err(|err| {
                    Error::new(
                        Kind::Invalid,
                        format!(
                            "{}: signature {}: content is not base64: {err}",
                            self.host, e.name
                        ),
                    )
                })?;
            out.push(blob);
        }
        Ok(out)
    }

    /// Send one signature through the extension.
    pub fn put_extension_signature(&self, repo: &str, d: &Digest, blob: &[u8]) -> Result<()> {
        let scope = format!("repository:{repo}:pull,push");
        let body = serde_json::to_vec(&SignatureEntry::new(d, blob))
            .map_err(|e| Error::internal(e.to_string()))?;
        let mut r = self.send(
            "PUT",
            &self.url(&format!("/extensions/v2/{repo}/signatures/{d}")),
            &scope,
            &[("Content-Type", "application/json".into())],
            Body::Bytes(&body),
            false,
        )?;
        if !r.status().is_success() {
            return Err(self.fail(&format!("storing a signature of {repo}@{d}"), &mut r));
        }
        Ok(())
    }
}

/// Read `BASE/…/signature-1, -2, …` over HTTP(S) until one is missing.
fn read_http_store(
    base: &str,
    image: &Identity,
    d: &Digest,
    settings: &Settings,
) -> Result<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    for n in 1..=MAX_COUNT {
        let url = lookaside::signature_url(base, &image.repository, d, n);
        let agent = super::client::download_agent(&url, settings)?;
        let mut r = agent
            .get(&url)
            .call()
            .map_err(|e| Error::new(Kind::Network, format!("{url}: {e}")))?;
        match r.status().as_u16() {
            404 => break,
            200 => {}
            s => {
                return Err(Error::new(Kind::Network, format!("{url}: HTTP {s}")));
            }
        }
        let mut blob = Vec::new();
        r.body_mut()
            .as_reader()
            .take(MAX_SIGNATURE as u64 + 1)
            .read_to_end(&mut blob)
            .map_err(|e| Error::new(Kind::Network, format!("{url}: {e}")))?;
        out.push(blob);
    }
    Ok(out)
}

/// Every signature found for `image` (top manifest `d`, repository `repo` on `reg`).
pub fn fetch(
    reg: &Registry,
    repo: &str,
    image: &Identity,
    d: &Digest,
    settings: &Settings,
    registries_d: &RegistriesD,
) -> Result<Vec<Vec<u8>>> {
    if reg.supports_signatures()? {
        return reg.extension_signatures(repo, d);
    }
    let Some(base) = registries_d.section_for(image).lookaside else {
        return Ok(Vec::new());
    };
    if base.starts_with("file://") {
        lookaside::read_file_store(&base, &image.repository, d)
    } else {
        read_http_store(&base, image, d, settings)
    }
}

/// Where [`store`] put a signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stored {
    Extension,
    Lookaside(String),
}

/// Store a signature for `image`: the extension when the registry has it, else
/// the `file://` lookaside-staging (or lookaside) configured for the image.
pub fn store(
    reg: &Registry,
    repo: &str,
    image: &Identity,
    d: &Digest,
    blob: &[u8],
    registries_d: &RegistriesD,
) -> Result<Stored> {
    if reg.supports_signatures()? {
        reg.put_extension_signature(repo, d, blob)?;
        return Ok(Stored::Extension);
    }
    let sec = registries_d.section_for(image);
    match sec.lookaside_staging.or(sec.lookaside) {
        Some(base) if base.starts_with("file://") => {
            let n = lookaside::write_file_store(&base, &image.repository, d, blob)?;
            Ok(Stored::Lookaside(lookaside::signature_url(
                &base,
                &image.repository,
                d,
                n,
            )))
        }
        _ => Err(Error::new(
            Kind::Unsupported,
            format!(
                "{}: the registry does not store signatures and no file:// lookaside-staging is configured for {} in registries.d",
                reg.host, image.repository
            ),
        )),
    }
}

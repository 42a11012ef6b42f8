//! Image signatures the site can check offline, in the containers "simple
//! signing" format that `atomic sign`, skopeo and podman read and write: an
//! OpenPGP signed message ([`openpgp`]) over a small JSON [`payload`] naming the
//! manifest digest and the identity it is signed as. [`policy`] decides whether
//! an image may be pulled or run (containers-policy.json), and [`lookaside`]
//! finds signatures that live outside the registry (containers-registries.d).
//!
//! Where signatures are kept: the registry's store beside each manifest revision,
//! the local store beside each image (so `save`/`load` carry them to air-gapped
//! nodes), and lookaside URLs; [`SignatureEntry`] is how the registry extension
//! carries them on the wire.

pub mod lookaside;
pub mod openpgp;
pub mod payload;
pub mod policy;

use crate::digest::Digest;
use crate::error::{Error, Kind, Result};
use base64::Engine;
use serde::{Deserialize, Serialize};

pub use openpgp::{Keyring, MAX_SIGNATURE, SigningKey};
pub use payload::Payload;
pub use policy::{Identity, Policy};

/// Environment variable holding a signing key's passphrase.
pub const PASSPHRASE_ENV: &str = "BERTH_SIGN_PASSPHRASE";

/// Read a signing key file; the passphrase comes from `passphrase_file` (first
/// line), else [`PASSPHRASE_ENV`], else a prompt when stdin is a terminal.
pub fn load_signing_key(
    path: &std::path::Path,
    passphrase_file: Option<&std::path::Path>,
) -> Result<SigningKey> {
    let data = std::fs::read(path)
        .map_err(|e| Error::from(e).context(format!("signing key {}", path.display())))?;
    let what = path.display().to_string();
    let pass: Option<Vec<u8>> = match passphrase_file {
        Some(f) => {
            let text = std::fs::read(f)
                .map_err(|e| Error::from(e).context(format!("passphrase file {}", f.display())))?;
            let line = text.split(|b| *b == b'\n').next().unwrap_or_default();
            Some(line.strip_suffix(b"\r").unwrap_or(line).to_vec())
        }
        None => std::env::var_os(PASSPHRASE_ENV)
            .map(|v| std::os::unix::ffi::OsStrExt::as_bytes(v.as_os_str()).to_vec()),
    };
    if pass.is_none()
        && SigningKey::needs_passphrase(&data)
        && std::io::IsTerminal::is_terminal(&std::io::stdin())
    {
        let p = crate::util::prompt(&format!("Passphrase for {what}: "), true)?;
        return SigningKey::parse(&data, Some(p.as_bytes()), &what);
    }
    SigningKey::parse(&data, pass.as_deref(), &what)
}

/// One signature as the registry extension (`/extensions/v2/NAME/signatures/DIGEST`)
/// carries it: `name` is `DIGEST@ID`, `content` the signature blob in base64.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignatureEntry {
    #[serde(rename = "schemaVersion")]
    pub schema_version: u32,
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub content: String,
}

/// The extension's list body.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SignatureList {
    pub signatures: Vec<SignatureEntry>,
}

impl SignatureEntry {
    /// An entry for `blob` signing `digest`, named by 32 hex digits of its hash, so
    /// the same signature always gets the same name.
    pub fn new(digest: &Digest, blob: &[u8]) -> SignatureEntry {
        let hash = Digest::sha256(blob);
        let id = &hash.hex()[..32];
        SignatureEntry {
            schema_version: 2,
            name: format!("{digest}@{id}"),
            kind: "atomic".into(),
            content: base64::engine::general_purpose::STANDARD.encode(blob),
        }
    }

    /// Check an entry sent for `digest` and return its id and blob: version 2,
    /// type atomic, a name `DIGEST@ID` (ID of 1-64 letters, digits, `-`, `_`),
    /// content that is a well-formed signed message whose (unverified) payload is
    /// a simple-signing document naming `digest`.
    pub fn validate(&self, digest: &Digest) -> Result<(String, Vec<u8>)> {
        let bad = |m: String| Error::new(Kind::Invalid, m);
        if self.schema_version != 2 {
            return Err(bad(format!(
                "signature schemaVersion is {}, only 2 is known",
                self.schema_version
            )));
        }
        if self.kind != "atomic" {
            return Err(bad(format!(
                "signature type is {:?}, only \"atomic\" is known",
                self.kind
            )));
        }
        let id = self
            .name
            .strip_prefix(&format!("{digest}@"))
            .ok_or_else(|| {
                bad(format!(
                    "signature name {:?} must start with {digest}@",
                    self.name
                ))
            })?;
        if id.is_empty()
            || id.len() > 64
            || !id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(bad(format!(
                "signature name {:?}: the part after @ must be 1-64 letters, digits, - or _",
                self.name
            )));
        }
        let blob = base64::engine::general_purpose::STANDARD
            .decode(&self.content)
            .map_err(|e| bad(format!("signature content is not base64: {e}")))?;
        check_blob(&blob, digest)?;
        Ok((id.to_string(), blob))
    }
}

/// Whether `blob` could be a signature of `digest`: a well-formed signed message
/// (bounded) carrying a payload that names `digest`. No key is involved; this
/// keeps junk and misfiled signatures out of stores, it does not establish trust.
pub fn check_blob(blob: &[u8], digest: &Digest) -> Result<()> {
    let u = openpgp::inspect(blob)?;
    let p = Payload::parse(&u.payload)?;
    if &p.manifest_digest != digest {
        return Err(Error::new(
            Kind::Invalid,
            format!(
                "the signature is of manifest {}, not {digest}",
                p.manifest_digest
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_round_trip_and_refusals() {
        let k = SigningKey::generate("S", "s@example.org").unwrap();
        let d = Digest::sha256(b"m");
        let blob = k
            .sign(&Payload::new(d.clone(), "r.example/a:1".into(), 1).to_json())
            .unwrap();
        let e = SignatureEntry::new(&d, &blob);
        assert_eq!(e.validate(&d).unwrap().1, blob);
        let other = Digest::sha256(b"n");
        assert!(e.validate(&other).is_err(), "name of another digest");
        let mut wrong_payload = SignatureEntry::new(&other, &blob);
        assert!(
            wrong_payload
                .validate(&other)
                .unwrap_err()
                .to_string()
                .contains("not sha256")
        );
        wrong_payload.content = "!!".into();
        assert!(wrong_payload.validate(&other).is_err());
        let junk = SignatureEntry::new(&d, b"not openpgp");
        assert_eq!(junk.validate(&d).unwrap_err().kind(), Kind::Invalid);
        let unsigned_json = SignatureEntry::new(&d, b"{}");
        assert!(unsigned_json.validate(&d).is_err());
    }
}

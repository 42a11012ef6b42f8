//! OpenPGP for container signatures: a signing key read from the armored file
//! `gpg --export-secret-keys --armor` writes (or made here), keyrings read from
//! what policy.json names (armored or binary, one key or many), and the three
//! operations the format needs: sign a payload into a signed (not detached)
//! message, verify such a message against a keyring, and look inside one without
//! trusting it (the registry's well-formedness check, `verify`'s listing).
//!
//! Verification follows the format's rules (containers-signature(5)): the blob
//! must be a Signed Message (compressed or not, as GnuPG writes it), made by a key
//! of the ring that is neither expired nor revoked, whose signature is not
//! expired, and the payload is handed out only after the signature checked.
//! Sizes are bounded before anything is parsed, so a hostile blob costs little.

use crate::error::{Error, Kind, Result};
use pgp::composed::{
    Deserializable, KeyType, Message, MessageBuilder, SecretKeyParamsBuilder, SignedPublicKey,
    SignedSecretKey,
};
use pgp::crypto::hash::HashAlgorithm;
use pgp::packet::Signature;
use pgp::types::{KeyDetails, Password, VerifyingKey};
use std::io::Read;

/// Largest signature blob accepted anywhere (a real one is under 1 KiB).
pub const MAX_SIGNATURE: usize = 64 * 1024;

/// Largest payload a signature may carry once decompressed.
const MAX_PAYLOAD: u64 = 64 * 1024;

/// Largest keyring file read (a ring of a few hundred keys).
const MAX_KEYRING: u64 = 16 * 1024 * 1024;

fn invalid(msg: impl Into<String>) -> Error {
    Error::new(Kind::Invalid, msg)
}

fn hex_fingerprint(f: &pgp::types::Fingerprint) -> String {
    format!("{f:X}")
}

fn key_id_hex(k: &pgp::types::KeyId) -> String {
    k.as_ref().iter().map(|b| format!("{b:02X}")).collect()
}

/// A secret key able to sign, with its passphrase.
pub struct SigningKey {
    key: SignedSecretKey,
    /// Which component signs: None for the primary, Some(i) for secret subkey i.
    signer: Option<usize>,
    passphrase: Password,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningKey({})", self.fingerprint())
    }
}

/// Whether a key component's latest binding says it may sign (no flags at all is
/// read as yes, as GnuPG does for old keys).
fn may_sign(sigs: &[&Signature]) -> bool {
    match sigs
        .iter()
        .filter_map(|s| s.created().map(|c| (c, s)))
        .max_by_key(|(c, _)| *c)
    {
        Some((_, s)) => {
            let flags = s.key_flags();
            flags.sign() || (!flags.certify() && !flags.encrypt_comms() && !flags.encrypt_storage())
        }
        None => false,
    }
}

impl SigningKey {
    /// Read an armored (or binary) secret key. `passphrase` unlocks it; a wrong or
    /// missing one is reported here, not at the first signature.
    pub fn parse(data: &[u8], passphrase: Option<&[u8]>, what: &str) -> Result<SigningKey> {
        let key = if data.trim_ascii_start().starts_with(b"-----BEGIN") {
            SignedSecretKey::from_armor_single(data).map(|(k, _)| k)
        } else {
            SignedSecretKey::from_bytes(data)
        }
        .map_err(|e| {
            invalid(format!(
                "{what}: not an OpenPGP secret key ({e}); export one with `gpg --export-secret-keys --armor KEYID > FILE` or make one with `berth sign --generate-key NAME EMAIL`"
            ))
        })?;
        let primary_sigs: Vec<&Signature> = key
            .details
            .users
            .iter()
            .flat_map(|u| u.signatures.iter())
            .chain(key.details.direct_signatures.iter())
            .collect();
        let signer = if may_sign(&primary_sigs) {
            None
        } else {
            let i = key
                .secret_subkeys
                .iter()
                .position(|s| may_sign(&s.signatures.iter().collect::<Vec<_>>()))
                .ok_or_else(|| {
                    invalid(format!(
                        "{what}: key {} has no component that may sign",
                        hex_fingerprint(&key.fingerprint())
                    ))
                })?;
            Some(i)
        };
        let given = passphrase.is_some();
        let k = SigningKey {
            key,
            signer,
            passphrase: Password::from(passphrase.unwrap_or(b"")),
        };
        let unlocked = match k.signer {
            None => k.key.primary_key.unlock(&k.passphrase, |_, _| Ok(())),
            Some(i) => k.key.secret_subkeys[i]
                .key
                .unlock(&k.passphrase, |_, _| Ok(())),
        };
        if unlocked.is_err() {
            let msg = if !given {
                format!(
                    "{what}: the key is protected by a passphrase; give it with --passphrase-file FILE or BERTH_SIGN_PASSPHRASE"
                )
            } else {
                format!("{what}: wrong passphrase for key {}", k.fingerprint())
            };
            return Err(Error::new(Kind::Auth, msg));
        }
        Ok(k)
    }

    /// True when the key file needs a passphrase (so a caller knows to prompt).
    pub fn needs_passphrase(data: &[u8]) -> bool {
        matches!(
            SigningKey::parse(data, None, ""),
            Err(e) if e.kind() == Kind::Auth
        )
    }

    /// A new Ed25519 key (the v4 "legacy" form GnuPG 2.2 reads) for `NAME <EMAIL>`,
    /// whose primary key certifies and signs.
    pub fn generate(name: &str, email: &str) -> Result<SigningKey> {
        let uid = format!("{name} <{email}>");
        let mut p = SecretKeyParamsBuilder::default();
        p.key_type(KeyType::Ed25519Legacy)
            .can_certify(true)
            .can_sign(true)
            .primary_user_id(uid);
        let params = p
            .build()
            .map_err(|e| Error::internal(format!("key parameters: {e}")))?;
        let key = params
            .generate(rand::thread_rng())
            .map_err(|e| Error::internal(format!("key generation: {e}")))?;
        Ok(SigningKey {
            key,
            signer: None,
            passphrase: Password::empty(),
        })
    }

    /// The primary key's fingerprint, upper-case hex as GnuPG prints it.
    pub fn fingerprint(&self) -> String {
        hex_fingerprint(&self.key.fingerprint())
    }

    /// The first user id, for messages.
    pub fn user(&self) -> String {
        self.key
            .details
            .users
            .first()
            .map(|u| String::from_utf8_lossy(u.id.id()).into_owned())
            .unwrap_or_default()
    }

    pub fn secret_armored(&self) -> Result<String> {
        self.key
            .to_armored_string(None.into())
            .map_err(|e| Error::internal(format!("armor: {e}")))
    }

    pub fn public_armored(&self) -> Result<String> {
        self.key
            .to_public_key()
            .to_armored_string(None.into())
            .map_err(|e| Error::internal(format!("armor: {e}")))
    }

    /// The public half, as a ring of one.
    pub fn keyring(&self) -> Keyring {
        Keyring {
            keys: vec![self.key.to_public_key()],
        }
    }

    /// A signed message carrying `payload` (binary, uncompressed, SHA-256).
    pub fn sign(&self, payload: &[u8]) -> Result<Vec<u8>> {
        let mut b = MessageBuilder::from_bytes("", payload.to_vec());
        let pw = Password::from(self.passphrase.read().as_slice());
        match self.signer {
            None => b.sign(&self.key.primary_key, pw, HashAlgorithm::Sha256),
            Some(i) => b.sign(&self.key.secret_subkeys[i].key, pw, HashAlgorithm::Sha256),
        };
        b.to_vec(rand::thread_rng())
            .map_err(|e| Error::internal(format!("signing with {}: {e}", self.fingerprint())))
    }
}

/// What a signature says about itself, unverified.
#[derive(Debug, Clone)]
pub struct Unverified {
    pub payload: Vec<u8>,
    /// Issuer fingerprints or key ids (hex), as the signature packet names them.
    pub issuers: Vec<String>,
    /// Creation time, Unix seconds.
    pub created: Option<i64>,
}

/// A signature that checked against a key of a ring.
#[derive(Debug, Clone)]
pub struct Verified {
    pub payload: Vec<u8>,
    /// Fingerprint of the primary key whose ring entry verified it.
    pub key: String,
    /// That key's first user id.
    pub user: String,
    pub created: Option<i64>,
}

/// Parse a blob as a signed message and read its payload (bounded). The message
/// is returned read to its end, so its signatures can be checked.
fn open_signed(blob: &[u8]) -> Result<(Message<'_>, Vec<u8>)> {
    if blob.len() > MAX_SIGNATURE {
        return Err(invalid(format!(
            "signature is {} bytes; the limit is {MAX_SIGNATURE}",
            blob.len()
        )));
    }
    // Armored and cleartext forms are not what the format allows: binary only.
    if blob.trim_ascii_start().starts_with(b"-----") {
        return Err(invalid(
            "signature is ASCII-armored; container signatures are binary signed messages",
        ));
    }
    let mut m =
        Message::from_bytes(blob).map_err(|e| invalid(format!("not an OpenPGP message: {e}")))?;
    if m.is_compressed() {
        m = m
            .decompress()
            .map_err(|e| invalid(format!("cannot decompress the signed message: {e}")))?;
    }
    if !m.is_signed() {
        return Err(invalid(
            "not a signed OpenPGP message (container signatures carry the payload inside a signature)",
        ));
    }
    let mut payload = Vec::new();
    (&mut m)
        .take(MAX_PAYLOAD + 1)
        .read_to_end(&mut payload)
        .map_err(|e| invalid(format!("unreadable signed message: {e}")))?;
    if payload.len() as u64 > MAX_PAYLOAD {
        return Err(invalid(format!(
            "signature payload exceeds {MAX_PAYLOAD} bytes"
        )));
    }
    // Anything after the payload (the trailing signature packets) must parse too.
    let mut rest = Vec::new();
    (&mut m)
        .take(1)
        .read_to_end(&mut rest)
        .map_err(|e| invalid(format!("unreadable signed message: {e}")))?;
    Ok((m, payload))
}

fn signature_of<'a>(m: &'a Message<'_>) -> Option<&'a Signature> {
    match m {
        Message::Signed { reader, .. } => reader.signature(0),
        _ => None,
    }
}

/// Check that `blob` is a well-formed signed message and read what it claims,
/// without any key. Never a basis for trust.
pub fn inspect(blob: &[u8]) -> Result<Unverified> {
    let (m, payload) = open_signed(blob)?;
    let sig = signature_of(&m).ok_or_else(|| invalid("signed message without a signature"))?;
    let mut issuers: Vec<String> = sig
        .issuer_fingerprint()
        .iter()
        .map(|f| hex_fingerprint(f))
        .collect();
    issuers.extend(sig.issuer_key_id().iter().map(|k| key_id_hex(k)));
    Ok(Unverified {
        payload,
        issuers,
        created: sig.created().map(|t| t.as_secs() as i64),
    })
}

/// Public keys trusted to sign.
#[derive(Debug, Clone, Default)]
pub struct Keyring {
    keys: Vec<SignedPublicKey>,
}

impl Keyring {
    /// Parse a keyring as GnuPG exports it (armored or binary, one or more keys).
    pub fn parse(data: &[u8], what: &str) -> Result<Keyring> {
        let bad = |e: pgp::errors::Error| {
            Error::new(
                Kind::Config,
                format!(
                    "{what}: not an OpenPGP public keyring ({e}); export one with `gpg --export KEYID > FILE`"
                ),
            )
        };
        let keys: Vec<SignedPublicKey> = if data.trim_ascii_start().starts_with(b"-----BEGIN") {
            // `cat a.asc b.asc` makes a ring too: each armor block is read.
            let text = String::from_utf8_lossy(data);
            let mut keys = Vec::new();
            for block in text.split("-----BEGIN ").filter(|b| !b.trim().is_empty()) {
                let block = format!("-----BEGIN {block}");
                keys.extend(
                    SignedPublicKey::from_armor_many(block.as_bytes())
                        .map_err(bad)?
                        .0
                        .collect::<std::result::Result<Vec<_>, _>>()
                        .map_err(bad)?,
                );
            }
            keys
        } else {
            SignedPublicKey::from_bytes_many(data)
                .map_err(bad)?
                .collect::<std::result::Result<_, _>>()
                .map_err(bad)?
        };
        if keys.is_empty() {
            return Err(Error::new(
                Kind::Config,
                format!("{what}: the keyring holds no public key"),
            ));
        }
        Ok(Keyring { keys })
    }

    /// Read a keyring file (bounded).
    pub fn load(path: &std::path::Path) -> Result<Keyring> {
        let f = std::fs::File::open(path)
            .map_err(|e| Error::from(e).context(format!("keyring {}", path.display())))?;
        let mut data = Vec::new();
        f.take(MAX_KEYRING + 1)
            .read_to_end(&mut data)
            .map_err(|e| Error::from(e).context(path.display()))?;
        if data.len() as u64 > MAX_KEYRING {
            return Err(Error::new(
                Kind::Config,
                format!(
                    "keyring {} is larger than {MAX_KEYRING} bytes",
                    path.display()
                ),
            ));
        }
        Keyring::parse(&data, &path.display().to_string())
    }

    pub fn extend(&mut self, other: Keyring) {
        self.keys.extend(other.keys);
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Fingerprints of the primary keys.
    pub fn fingerprints(&self) -> Vec<String> {
        self.keys
            .iter()
            .map(|k| hex_fingerprint(&k.fingerprint()))
            .collect()
    }

    /// Verify `blob` against the ring at time `now` (Unix seconds). The error says
    /// why it failed: not a signed message, no key of the ring made it, the
    /// signature does not check, the key or the signature expired, the key is
    /// revoked.
    pub fn verify(&self, blob: &[u8], now: i64) -> Result<Verified> {
        let (m, payload) = open_signed(blob)?;
        let sig = signature_of(&m).ok_or_else(|| invalid("signed message without a signature"))?;
        let created = sig.created().map(|t| t.as_secs() as i64);
        let issuers: Vec<String> = sig
            .issuer_fingerprint()
            .iter()
            .map(|f| hex_fingerprint(f))
            .chain(sig.issuer_key_id().iter().map(|k| key_id_hex(k)))
            .collect();
        for k in &self.keys {
            // The primary and each subkey bound to it, with the signatures that
            // say when it expires.
            let mut parts: Vec<(&dyn VerifyingKey, i64, Vec<&Signature>)> = vec![(
                &k.primary_key,
                k.primary_key.created_at().as_secs() as i64,
                k.details
                    .users
                    .iter()
                    .flat_map(|u| u.signatures.iter())
                    .chain(k.details.direct_signatures.iter())
                    .collect(),
            )];
            for s in &k.public_subkeys {
                parts.push((
                    &s.key,
                    s.key.created_at().as_secs() as i64,
                    s.signatures.iter().collect(),
                ));
            }
            for (part, part_created, bindings) in parts {
                if m.verify(part).is_err() {
                    continue;
                }
                let fp = hex_fingerprint(&k.fingerprint());
                if !k.details.revocation_signatures.is_empty() {
                    return Err(Error::new(
                        Kind::Denied,
                        format!("signature by key {fp}, which is revoked"),
                    ));
                }
                let expiry = |sigs: &[&Signature]| {
                    sigs.iter()
                        .filter_map(|s| s.created().map(|c| (c, s)))
                        .max_by_key(|(c, _)| *c)
                        .and_then(|(_, s)| s.key_expiration_time())
                        .filter(|d| d.as_secs() > 0)
                        .map(|d| d.as_secs() as i64)
                };
                let primary_bindings: Vec<&Signature> = k
                    .details
                    .users
                    .iter()
                    .flat_map(|u| u.signatures.iter())
                    .chain(k.details.direct_signatures.iter())
                    .collect();
                let key_expires = [
                    expiry(&primary_bindings)
                        .map(|d| k.primary_key.created_at().as_secs() as i64 + d),
                    expiry(&bindings).map(|d| part_created + d),
                ];
                if let Some(t) = key_expires.iter().flatten().min()
                    && *t <= now
                {
                    return Err(Error::new(
                        Kind::Denied,
                        format!(
                            "signature by key {fp}, which expired at {}",
                            crate::util::rfc3339(*t)
                        ),
                    ));
                }
                if let (Some(c), Some(d)) = (created, sig.signature_expiration_time())
                    && d.as_secs() > 0
                    && c + d.as_secs() as i64 <= now
                {
                    return Err(Error::new(
                        Kind::Denied,
                        format!(
                            "signature by key {fp} expired at {}",
                            crate::util::rfc3339(c + d.as_secs() as i64)
                        ),
                    ));
                }
                let user = k
                    .details
                    .users
                    .first()
                    .map(|u| String::from_utf8_lossy(u.id.id()).into_owned())
                    .unwrap_or_default();
                return Ok(Verified {
                    payload,
                    key: fp,
                    user,
                    created,
                });
            }
        }
        let by = if issuers.is_empty() {
            "an unnamed key".to_string()
        } else {
            format!("key {}", issuers.join("/"))
        };
        Err(Error::new(
            Kind::Denied,
            format!(
                "signature by {by} does not verify with any trusted key ({})",
                self.fingerprints().join(", ")
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_then_verify_with_own_ring() {
        let k = SigningKey::generate("Site", "site@example.org").unwrap();
        let blob = k.sign(b"{\"x\":1}").unwrap();
        let v = k.keyring().verify(&blob, 0).unwrap();
        assert_eq!(v.payload, b"{\"x\":1}");
        assert_eq!(v.key, k.fingerprint());
        assert_eq!(v.user, "Site <site@example.org>");
        let u = inspect(&blob).unwrap();
        assert_eq!(u.payload, b"{\"x\":1}");
        assert!(u.issuers.iter().any(|i| *i == k.fingerprint()));
    }

    #[test]
    fn another_key_is_refused() {
        let a = SigningKey::generate("A", "a@example.org").unwrap();
        let b = SigningKey::generate("B", "b@example.org").unwrap();
        let blob = a.sign(b"{}").unwrap();
        let e = b.keyring().verify(&blob, 0).unwrap_err();
        assert_eq!(e.kind(), Kind::Denied);
        assert!(e.to_string().contains(&a.fingerprint()), "{e}");
    }

    #[test]
    fn armored_round_trip_and_keyring_of_two() {
        let a = SigningKey::generate("A", "a@example.org").unwrap();
        let b = SigningKey::generate("B", "b@example.org").unwrap();
        let again = SigningKey::parse(a.secret_armored().unwrap().as_bytes(), None, "a").unwrap();
        assert_eq!(again.fingerprint(), a.fingerprint());
        let ring_text = format!(
            "{}{}",
            a.public_armored().unwrap(),
            b.public_armored().unwrap()
        );
        let ring = Keyring::parse(ring_text.as_bytes(), "ring").unwrap();
        assert_eq!(ring.fingerprints().len(), 2);
        ring.verify(&b.sign(b"{}").unwrap(), 0).unwrap();
        ring.verify(&again.sign(b"{}").unwrap(), 0).unwrap();
    }

    #[test]
    fn tampered_bytes_do_not_verify() {
        let k = SigningKey::generate("A", "a@example.org").unwrap();
        let mut blob = k.sign(b"{\"critical\":1}").unwrap();
        // Flip a byte of the literal payload.
        let at = blob
            .windows(12)
            .position(|w| w == b"{\"critical\":")
            .unwrap();
        blob[at + 2] ^= 0x20;
        assert!(k.keyring().verify(&blob, 0).is_err());
    }

    #[test]
    fn garbage_and_oversize_are_invalid() {
        assert_eq!(inspect(b"hello").unwrap_err().kind(), Kind::Invalid);
        assert_eq!(
            inspect(&vec![0xa3; MAX_SIGNATURE + 1]).unwrap_err().kind(),
            Kind::Invalid
        );
        assert!(Keyring::parse(b"nope", "x").is_err());
    }
}

//! `sign` and `verify`: image signatures in the containers "simple signing"
//! format (what `atomic sign`, `skopeo copy --sign-by` and podman write), made
//! with an armored OpenPGP secret key and no gpg binary, and checked against
//! containers-policy.json on nodes with no outside service.
//!
//! `sign IMAGE` signs the image in the local store when it is there (the
//! signature is kept with it; `push` and `save` carry it on), else the image in
//! its registry (through the registry's signature extension, or a `file://`
//! lookaside-staging from registries.d). `sign --generate-key NAME EMAIL` makes a
//! key pair for sites without GnuPG. `verify IMAGE` lists an image's signatures
//! and says whether the policy accepts it; `verify --signature S --manifest M`
//! checks one standalone signature as `skopeo standalone-verify` does.

use argh::FromArgs;
use berth::digest::Digest;
use berth::error::{Error, Kind, Result};
use berth::reference::Reference;
use berth::registry::transfer::sign_image;
use berth::registry::{Registry, Settings, signatures};
use berth::signing::lookaside::RegistriesD;
use berth::signing::policy::check_signature;
use berth::signing::{Identity, Keyring, Payload, Policy, SigningKey, openpgp};
use berth::store::local::{LocalStore, root_from};
use std::path::{Path, PathBuf};

#[derive(FromArgs)]
/// Sign an image (simple signing, OpenPGP), or make a signing key.
struct SignArgs {
    /// armored OpenPGP secret key (gpg --export-secret-keys --armor); with --generate-key, where the new key goes (default ./signing-key.asc)
    #[argh(option)]
    key: Option<PathBuf>,
    /// file whose first line is the key's passphrase (else BERTH_SIGN_PASSPHRASE, else a prompt)
    #[argh(option)]
    passphrase_file: Option<PathBuf>,
    /// make a new Ed25519 key pair for NAME EMAIL (the positionals) instead of signing
    #[argh(switch)]
    generate_key: bool,
    /// identity to sign the image as (default: the image reference, fully expanded)
    #[argh(option)]
    identity: Option<String>,
    /// sign the image in its registry even when the local store has it
    #[argh(switch)]
    remote: bool,
    /// standalone: sign this manifest file as IMAGE (with --output), as skopeo standalone-sign does
    #[argh(option)]
    manifest: Option<PathBuf>,
    /// standalone: where the signature goes
    #[argh(option, short = 'o')]
    output: Option<PathBuf>,
    /// graph root of the local image store (default /var/lib/berth or BERTH_ROOT)
    #[argh(option, short = 'g')]
    graph: Option<PathBuf>,
    /// client settings file (default /etc/berth/client.yml or BERTH_CLIENT_CONFIG)
    #[argh(option)]
    config: Option<PathBuf>,
    /// registry allowed over HTTP or unverified TLS (repeatable)
    #[argh(option)]
    insecure_registry: Vec<String>,
    /// registries.d directory for lookaside signature stores (default /etc/containers/registries.d)
    #[argh(option)]
    registries_d: Option<PathBuf>,
    /// image ([HOST[:PORT]/]NAME[:TAG|@DIGEST]), or NAME EMAIL with --generate-key
    #[argh(positional)]
    args: Vec<String>,
}

/// Whether `sigs` hold one by `key` over `digest` as `identity` already.
fn signed_already(
    key: &SigningKey,
    sigs: &[Vec<u8>],
    identity: &Identity,
    digest: &Digest,
) -> bool {
    let ring = key.keyring();
    sigs.iter().any(|s| {
        check_signature(
            &ring,
            &berth::signing::policy::IdentityRule::MatchExact,
            identity,
            digest,
            s,
            berth::util::now_unix(),
        )
        .is_ok()
    })
}

fn generate(a: &SignArgs) -> Result<u8> {
    let [name, email] = a.args.as_slice() else {
        return Err(Error::usage("sign --generate-key NAME EMAIL [--key FILE]"));
    };
    let path = a
        .key
        .clone()
        .unwrap_or_else(|| PathBuf::from("signing-key.asc"));
    let public = PathBuf::from(format!("{}.pub", path.display()));
    for p in [&path, &public] {
        if p.exists() {
            return Err(Error::new(
                Kind::Conflict,
                format!("{} exists; refusing to overwrite a key", p.display()),
            ));
        }
    }
    let key = SigningKey::generate(name, email)?;
    berth::fsutil::atomic_write_mode(&path, key.secret_armored()?.as_bytes(), 0o600)?;
    berth::fsutil::atomic_write(&public, key.public_armored()?.as_bytes())?;
    println!("key {} for {}", key.fingerprint(), key.user());
    println!("secret key: {} (keep it; mode 0600)", path.display());
    println!(
        "public key: {} (name it in policy.json: \"keyType\": \"GPGKeys\", \"keyPath\": \"{}\")",
        public.display(),
        public.display()
    );
    Ok(0)
}

pub fn sign(name: &str, args: &[String]) -> Result<u8> {
    let a: SignArgs = match crate::applets::parse_args(name, args) {
        Ok(a) => a,
        Err(code) => return Ok(code),
    };
    berth::log::init_cli();
    if a.generate_key {
        return generate(&a);
    }
    let [image] = a.args.as_slice() else {
        return Err(Error::usage("sign --key FILE IMAGE (one image)"));
    };
    let key_path = a
        .key
        .as_deref()
        .ok_or_else(|| Error::usage("sign needs --key FILE (an armored OpenPGP secret key)"))?;
    let key = berth::signing::load_signing_key(key_path, a.passphrase_file.as_deref())?;
    let r = Reference::parse(image)?;
    let identity = match &a.identity {
        Some(i) => Identity::parse(i)?,
        None => Identity::of(&r).tagged_or_latest(),
    };
    if let Some(m) = &a.manifest {
        let out = a
            .output
            .as_deref()
            .ok_or_else(|| Error::usage("sign --manifest FILE needs --output SIGFILE"))?;
        let bytes = std::fs::read(m).map_err(|e| Error::from(e).context(m.display()))?;
        berth::oci::Parsed::parse(&bytes, None).map_err(|e| e.context(m.display()))?;
        let digest = Digest::sha256(&bytes);
        let sig = sign_image(&key, &identity, &digest)?;
        berth::fsutil::atomic_write(out, &sig)?;
        return Ok(0);
    }
    let store = LocalStore::open(&root_from(a.graph.as_deref()))?;
    if !a.remote
        && let Some(md) = store.resolve(image)?
    {
        // The digest a registry will know: the index it came through when the
        // name was pulled by it, else the manifest.
        let refs = store.refs()?;
        let known = refs
            .digests
            .get(&berth::reference::familiar(&r.name()))
            .cloned()
            .unwrap_or_default();
        let digest = match refs.images.get(&md).and_then(|m| m.index.clone()) {
            Some(i) if known.contains(&i) => i,
            _ => md,
        };
        if signed_already(&key, &store.signatures(&digest)?, &identity, &digest) {
            println!(
                "{identity} ({digest}) is signed by {} already",
                key.fingerprint()
            );
            return Ok(0);
        }
        let sig = sign_image(&key, &identity, &digest)?;
        store.add_signature(&digest, &sig)?;
        println!(
            "signed {identity} ({digest}) with {} in the local store",
            key.fingerprint()
        );
        return Ok(0);
    }
    let settings =
        Settings::load(a.config.as_deref())?.with_flags(&[], &[], &a.insecure_registry)?;
    let regd = RegistriesD::from_flag(a.registries_d.as_deref())?;
    let host = r.registry_or_default();
    let repo = r.api_repository();
    let reg = Registry::new(host, &settings)?;
    let top = reg.manifest(&repo, &r.api_reference())?.ok_or_else(|| {
        Error::not_found(format!(
            "{r}: no such image on {host} (nor in the local store)"
        ))
    })?;
    let existing = signatures::fetch(&reg, &repo, &identity, &top.digest, &settings, &regd)
        .unwrap_or_default();
    if signed_already(&key, &existing, &identity, &top.digest) {
        println!(
            "{identity} ({}) is signed by {} already",
            top.digest,
            key.fingerprint()
        );
        return Ok(0);
    }
    let sig = sign_image(&key, &identity, &top.digest)?;
    let at = signatures::store(&reg, &repo, &identity, &top.digest, &sig, &regd)?;
    let place = match at {
        signatures::Stored::Extension => format!("registry {host}"),
        signatures::Stored::Lookaside(u) => u,
    };
    println!(
        "signed {identity} ({}) with {}; stored in {place}",
        top.digest,
        key.fingerprint()
    );
    Ok(0)
}

#[derive(FromArgs)]
/// List an image's signatures and check them against the signature policy.
struct VerifyArgs {
    /// containers-policy.json (default /etc/containers/policy.json)
    #[argh(option)]
    policy: Option<PathBuf>,
    /// check signatures against this keyring instead of a policy (armored or binary)
    #[argh(option)]
    keyring: Option<PathBuf>,
    /// standalone: a signature file to check (with --manifest and --keyring)
    #[argh(option)]
    signature: Option<PathBuf>,
    /// standalone: the manifest file the signature must name
    #[argh(option)]
    manifest: Option<PathBuf>,
    /// read the image's signatures from its registry even when the local store has it
    #[argh(switch)]
    remote: bool,
    /// graph root of the local image store (default /var/lib/berth or BERTH_ROOT)
    #[argh(option, short = 'g')]
    graph: Option<PathBuf>,
    /// client settings file (default /etc/berth/client.yml or BERTH_CLIENT_CONFIG)
    #[argh(option)]
    config: Option<PathBuf>,
    /// registry allowed over HTTP or unverified TLS (repeatable)
    #[argh(option)]
    insecure_registry: Vec<String>,
    /// registries.d directory for lookaside signature stores (default /etc/containers/registries.d)
    #[argh(option)]
    registries_d: Option<PathBuf>,
    /// image ([HOST[:PORT]/]NAME[:TAG|@DIGEST])
    #[argh(positional)]
    image: String,
}

fn standalone(a: &VerifyArgs, sig: &Path) -> Result<u8> {
    let (Some(manifest), Some(ring)) = (&a.manifest, &a.keyring) else {
        return Err(Error::usage(
            "verify --signature needs --manifest FILE and --keyring FILE",
        ));
    };
    let blob = std::fs::read(sig).map_err(|e| Error::from(e).context(sig.display()))?;
    let m = std::fs::read(manifest).map_err(|e| Error::from(e).context(manifest.display()))?;
    let digest = Digest::sha256(&m);
    let ring = Keyring::load(ring)?;
    let image = Identity::parse(&a.image)?;
    let ok = check_signature(
        &ring,
        &berth::signing::policy::IdentityRule::MatchExact,
        &image,
        &digest,
        &blob,
        berth::util::now_unix(),
    )
    .map_err(|e| e.context(format!("signature {}", sig.display())))?;
    println!(
        "Signature verified using fingerprint {}, digest {digest}, identity {}",
        ok.key, ok.identity
    );
    Ok(0)
}

pub fn verify(name: &str, args: &[String]) -> Result<u8> {
    let a: VerifyArgs = match crate::applets::parse_args(name, args) {
        Ok(a) => a,
        Err(code) => return Ok(code),
    };
    berth::log::init_cli();
    if let Some(sig) = &a.signature {
        return standalone(&a, sig);
    }
    let r = Reference::parse(&a.image)?;
    let identity = Identity::of(&r).tagged_or_latest();
    let store = LocalStore::open(&root_from(a.graph.as_deref()))?;
    // (digest, signatures) for each digest the image may be known by.
    let mut found: Vec<(Digest, Vec<Vec<u8>>)> = Vec::new();
    let mut whence = "local store";
    match store.resolve(&a.image)? {
        Some(md) if !a.remote => {
            let index = store.refs()?.images.get(&md).and_then(|m| m.index.clone());
            for d in index.into_iter().chain([md]) {
                let s = store.signatures(&d)?;
                found.push((d, s));
            }
        }
        _ => {
            whence = "registry";
            let settings =
                Settings::load(a.config.as_deref())?.with_flags(&[], &[], &a.insecure_registry)?;
            let regd = RegistriesD::from_flag(a.registries_d.as_deref())?;
            let reg = Registry::new(r.registry_or_default(), &settings)?;
            let repo = r.api_repository();
            let top = reg.manifest(&repo, &r.api_reference())?.ok_or_else(|| {
                Error::not_found(format!("{r}: no such image (local store or registry)"))
            })?;
            let s = signatures::fetch(&reg, &repo, &identity, &top.digest, &settings, &regd)?;
            found.push((top.digest, s));
        }
    }
    let keyring = a.keyring.as_deref().map(Keyring::load).transpose()?;
    let policy = if keyring.is_some() {
        None
    } else {
        Policy::from_flag(a.policy.as_deref())?
    };
    let now = berth::util::now_unix();
    let mut n = 0;
    for (digest, sigs) in &found {
        for s in sigs {
            n += 1;
            // What the signature claims, marked as such until a key checks it.
            let claim =
                openpgp::inspect(s).and_then(|u| Payload::parse(&u.payload).map(|p| (u, p)));
            let (issuer, ident, when) = match &claim {
                Ok((u, p)) => (
                    u.issuers.first().cloned().unwrap_or_else(|| "?".into()),
                    p.docker_reference.clone(),
                    p.timestamp
                        .or(u.created)
                        .map(berth::util::rfc3339)
                        .unwrap_or_else(|| "?".into()),
                ),
                Err(e) => {
                    println!("signature {n} of {digest}: malformed: {}", e.message());
                    continue;
                }
            };
            let status = match (&keyring, &policy) {
                (Some(ring), _) => match ring.verify(s, now) {
                    Ok(v) => format!("valid, by {} ({})", v.key, v.user),
                    Err(e) => format!("NOT verified: {}", e.message()),
                },
                (None, Some(p)) => {
                    match p.evaluate(&identity, digest, std::slice::from_ref(s), now) {
                        Ok(d) if !d.signatures.is_empty() => format!(
                            "accepted by the policy, key {} ({})",
                            d.signatures[0].key, d.signatures[0].user
                        ),
                        Ok(_) => "not needed by the policy".into(),
                        Err(e) => format!("not accepted: {}", e.message()),
                    }
                }
                (None, None) => "unchecked (no policy)".into(),
            };
            println!(
                "signature {n} of {digest}: key {issuer}, identity {ident}, signed {when}: {status}"
            );
        }
    }
    if n == 0 {
        println!("{identity}: no signatures ({whence})");
    }
    if let Some(ring) = &keyring {
        let ok = found.iter().any(|(d, sigs)| {
            sigs.iter().any(|s| {
                check_signature(
                    ring,
                    &berth::signing::policy::IdentityRule::MatchRepoDigestOrExact,
                    &identity,
                    d,
                    s,
                    now,
                )
                .is_ok()
            })
        });
        return if ok {
            println!(
                "{identity}: signed by a key of {}",
                a.keyring.as_ref().unwrap().display()
            );
            Ok(0)
        } else {
            Err(Error::new(
                Kind::Denied,
                format!("{identity}: no valid signature by a key of the keyring"),
            ))
        };
    }
    let Some(policy) = policy else {
        println!(
            "no policy ({}): nothing is enforced",
            berth::signing::policy::DEFAULT_POLICY
        );
        return Ok(0);
    };
    let mut last = None;
    for (d, sigs) in &found {
        match policy.evaluate(&identity, d, sigs, now) {
            Ok(dec) => {
                println!(
                    "{identity}: accepted by {} (scope {})",
                    policy.source, dec.scope
                );
                return Ok(0);
            }
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| Error::new(Kind::Denied, format!("{identity}: refused"))))
}

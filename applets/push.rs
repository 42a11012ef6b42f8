//! `push NAME[:TAG]`: upload a local image to the registry its name names; blobs the
//! registry has are skipped, blobs another repository there has are mounted.

use argh::FromArgs;
use berth::error::{Error, Result};
use berth::progress::Terminal;
use berth::reference::Reference;
use berth::registry::Settings;
use berth::registry::transfer::{self, PushOptions};
use berth::store::local::{LocalStore, root_from};
use std::path::PathBuf;

#[derive(FromArgs)]
/// Push an image from the local store to a registry.
struct Args {
    /// upload in PATCH requests of this many bytes (for proxies that cap bodies); accepts k, M, G
    #[argh(option)]
    chunk_size: Option<String>,
    /// no progress output
    #[argh(switch, short = 'q')]
    quiet: bool,
    /// graph root of the local image store (default /var/lib/berth or BERTH_ROOT)
    #[argh(option, short = 'g')]
    graph: Option<PathBuf>,
    /// client settings file (default /etc/berth/client.yml or BERTH_CLIENT_CONFIG)
    #[argh(option)]
    config: Option<PathBuf>,
    /// registry never to use (repeatable)
    #[argh(option)]
    block_registry: Vec<String>,
    /// registry allowed over HTTP or unverified TLS (repeatable)
    #[argh(option)]
    insecure_registry: Vec<String>,
    /// sign the pushed manifest with this armored OpenPGP secret key (simple signing)
    #[argh(option)]
    sign_key: Option<PathBuf>,
    /// file whose first line is the signing key's passphrase (else BERTH_SIGN_PASSPHRASE)
    #[argh(option)]
    passphrase_file: Option<PathBuf>,
    /// registries.d directory for lookaside signature stores (default /etc/containers/registries.d)
    #[argh(option)]
    registries_d: Option<PathBuf>,
    /// image, [HOST[:PORT]/]NAME[:TAG]
    #[argh(positional)]
    image: String,
}

fn parse_size(s: &str) -> Result<u64> {
    let n = berth::util::parse_size(s)
        .ok_or_else(|| Error::usage(format!("--chunk-size {s:?}: use a number with k, M or G")))?;
    if n < 1024 {
        return Err(Error::usage("--chunk-size must be at least 1k"));
    }
    Ok(n)
}

pub fn main(name: &str, args: &[String]) -> Result<u8> {
    let a: Args = match crate::applets::parse_args(name, args) {
        Ok(a) => a,
        Err(code) => return Ok(code),
    };
    berth::log::init_cli();
    let settings = Settings::load(a.config.as_deref())?.with_flags(
        &[],
        &a.block_registry,
        &a.insecure_registry,
    )?;
    let store = LocalStore::open(&root_from(a.graph.as_deref()))?;
    let r = Reference::parse(&a.image)?;
    if r.digest.is_some() {
        return Err(Error::usage("push takes NAME[:TAG], not a digest"));
    }
    // Docker pushes short names to Docker Hub; a blocked hub means "tag it for your registry".
    let target = settings.candidates(&r).map_err(|e| {
        e.context(format!(
            "push {}: tag it for a registry first (berth tag {} HOST[:PORT]/{})",
            a.image, a.image, r.repository
        ))
    })?;
    let target = if r.registry.is_some() {
        r.clone()
    } else {
        target.last().cloned().unwrap_or(r.clone())
    };
    // The key is read (and its passphrase checked) before any byte moves.
    let sign_key = a
        .sign_key
        .as_deref()
        .map(|k| berth::signing::load_signing_key(k, a.passphrase_file.as_deref()))
        .transpose()?
        .map(std::sync::Arc::new);
    let opts = PushOptions {
        chunk_size: a.chunk_size.as_deref().map(parse_size).transpose()?,
        sign_key,
        registries_d: berth::signing::lookaside::RegistriesD::from_flag(a.registries_d.as_deref())?,
    };
    let local = berth::store::local::tagged(&format!(
        "{}:{}",
        r.name(),
        r.tag.as_deref().unwrap_or("latest")
    ));
    let progress = Terminal::new(a.quiet);
    let d = transfer::push(&store, &settings, &local, &target, &opts, &progress)?;
    println!("{}@{d}", target.name());
    Ok(0)
}

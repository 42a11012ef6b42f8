//! `pull NAME[:TAG|@DIGEST]`: fetch an image into the local store, verifying every
//! digest; short names are looked up in the configured search registries. With a
//! signature policy (`--policy`, or /etc/containers/policy.json) the image is
//! accepted or refused on its signatures before anything is stored.

use argh::FromArgs;
use berth::error::Result;
use berth::progress::Terminal;
use berth::reference::Reference;
use berth::registry::{Settings, transfer};
use berth::store::local::{LocalStore, root_from};
use std::path::PathBuf;

#[derive(FromArgs)]
/// Pull an image from a registry into the local store.
struct Args {
    /// no progress output
    #[argh(switch, short = 'q')]
    quiet: bool,
    /// graph root of the local image store (default /var/lib/berth or BERTH_ROOT)
    #[argh(option, short = 'g')]
    graph: Option<PathBuf>,
    /// client settings file (default /etc/berth/client.yml or BERTH_CLIENT_CONFIG)
    #[argh(option)]
    config: Option<PathBuf>,
    /// registry to search for short names (repeatable)
    #[argh(option)]
    add_registry: Vec<String>,
    /// registry never to use (repeatable)
    #[argh(option)]
    block_registry: Vec<String>,
    /// registry allowed over HTTP or unverified TLS (repeatable)
    #[argh(option)]
    insecure_registry: Vec<String>,
    /// signature policy, containers-policy.json (default /etc/containers/policy.json when it exists)
    #[argh(option)]
    policy: Option<PathBuf>,
    /// registries.d directory for lookaside signature stores (default /etc/containers/registries.d)
    #[argh(option)]
    registries_d: Option<PathBuf>,
    /// image, NAME[:TAG|@DIGEST]
    #[argh(positional)]
    image: String,
}

pub fn main(name: &str, args: &[String]) -> Result<u8> {
    let a: Args = match crate::applets::parse_args(name, args) {
        Ok(a) => a,
        Err(code) => return Ok(code),
    };
    berth::log::init_cli();
    let settings = Settings::load(a.config.as_deref())?.with_flags(
        &a.add_registry,
        &a.block_registry,
        &a.insecure_registry,
    )?;
    let store = LocalStore::open(&root_from(a.graph.as_deref()))?;
    let r = Reference::parse(&a.image)?;
    let progress = Terminal::new(a.quiet);
    let opts = transfer::PullOptions {
        policy: berth::signing::Policy::from_flag(a.policy.as_deref())?,
        registries_d: berth::signing::lookaside::RegistriesD::from_flag(a.registries_d.as_deref())?,
    };
    let pulled = transfer::pull_with(&store, &settings, &r, &opts, &progress)?;
    println!("{}", pulled.reference);
    Ok(0)
}

//! `search [HOST/]TERM`: Docker's v1 search against a registry (registryd serves
//! it); without a host, every configured search registry is asked.

use argh::FromArgs;
use berth::error::{Error, Result};
use berth::registry::{Registry, Settings};
use std::path::PathBuf;

#[derive(FromArgs)]
/// Search registries for repositories (NAME DESCRIPTION STARS OFFICIAL AUTOMATED).
struct Args {
    /// at most this many results per registry (default 25)
    #[argh(option, default = "25")]
    limit: usize,
    /// do not truncate descriptions
    #[argh(switch)]
    no_trunc: bool,
    /// client settings file (default /etc/berth/client.yml or BERTH_CLIENT_CONFIG)
    #[argh(option)]
    config: Option<PathBuf>,
    /// registry to search (repeatable)
    #[argh(option)]
    add_registry: Vec<String>,
    /// registry never to use (repeatable)
    #[argh(option)]
    block_registry: Vec<String>,
    /// registry allowed over HTTP or unverified TLS (repeatable)
    #[argh(option)]
    insecure_registry: Vec<String>,
    /// search term, optionally after HOST[:PORT]/
    #[argh(positional)]
    term: String,
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
    let (hosts, term) = match a.term.split_once('/') {
        Some((h, t)) if h.contains('.') || h.contains(':') || h == "localhost" => {
            (vec![h.to_string()], t.to_string())
        }
        _ => {
            let probe = berth::reference::Reference::parse("x")?;
            let hosts: Vec<String> = settings
                .candidates(&probe)?
                .into_iter()
                .filter_map(|r| r.registry)
                .map(|h| {
                    if h == "docker.io" {
                        "index.docker.io".into()
                    } else {
                        h
                    }
                })
                .collect();
            (hosts, a.term.clone())
        }
    };
    let mut rows = vec![vec![
        "NAME".to_string(),
        "DESCRIPTION".into(),
        "STARS".into(),
        "OFFICIAL".into(),
        "AUTOMATED".into(),
    ]];
    let mut errors = Vec::new();
    for h in &hosts {
        match Registry::new(h, &settings).and_then(|r| r.search(&term, a.limit)) {
            Ok(hits) => {
                for hit in hits {
                    let mut desc = hit.description.replace('\n', " ");
                    if !a.no_trunc && desc.chars().count() > 45 {
                        desc = desc.chars().take(44).collect::<String>() + "…";
                    }
                    let flag = |b: bool| if b { "[OK]".to_string() } else { String::new() };
                    rows.push(vec![
                        format!("{h}/{}", hit.name),
                        desc,
                        hit.star_count.to_string(),
                        flag(hit.is_official),
                        flag(hit.is_automated),
                    ]);
                }
            }
            Err(e) => errors.push(e),
        }
    }
    if rows.len() == 1 && !errors.is_empty() {
        return Err(errors.remove(0));
    }
    for e in errors {
        eprintln!("{name}: {e}");
    }
    print!("{}", berth::util::table(&rows));
    if hosts.is_empty() {
        return Err(Error::usage("no registry to search"));
    }
    Ok(0)
}

//! `import FILE|-|URL [REPOSITORY[:TAG]]`: a rootfs tarball (plain or gzip, detected
//! by content) becomes a one-layer image, as `docker import` does; prints the image
//! id. Docker schema2 by default (the site's docker daemons read it), `--format oci`
//! for OCI. The same tarball and options give the same digests (`--created` or
//! `SOURCE_DATE_EPOCH` fixes the timestamp).

use argh::FromArgs;
use berth::error::{Error, Kind, Result};
use berth::image::{Format, ImportOptions, default_created, import, parse_created};
use berth::reference::Reference;
use berth::store::local::{LocalStore, root_from};
use std::path::PathBuf;

#[derive(FromArgs)]
/// Create an image from a rootfs tarball (file, - for stdin, or http(s) URL).
struct Args {
    /// apply a Dockerfile instruction (CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, USER, WORKDIR, VOLUME)
    #[argh(option, short = 'c')]
    change: Vec<String>,
    /// commit message for the history entry
    #[argh(option, short = 'm')]
    message: Option<String>,
    /// creation time (RFC 3339 or epoch seconds; default SOURCE_DATE_EPOCH or now)
    #[argh(option)]
    created: Option<String>,
    /// manifest format: docker (schema2, default) or oci
    #[argh(option, default = "String::from(\"docker\")")]
    format: String,
    /// graph root of the local image store (default /var/lib/berth or BERTH_ROOT)
    #[argh(option, short = 'g')]
    graph: Option<PathBuf>,
    /// the rootfs tarball: a path, - for stdin, or an http(s) URL
    #[argh(positional)]
    source: String,
    /// name for the image, REPOSITORY[:TAG]
    #[argh(positional)]
    name: Option<String>,
}

fn open_source(src: &str) -> Result<Box<dyn std::io::Read + Send>> {
    if src == "-" {
        return Ok(Box::new(std::io::stdin()));
    }
    if src.starts_with("http://") || src.starts_with("https://") {
        let settings = berth::registry::settings::Settings::load(None)?;
        let agent = berth::registry::client::download_agent(src, &settings)?;
        let resp = agent.get(src).call().map_err(|e| {
            let tls = matches!(e, ureq::Error::Rustls(_) | ureq::Error::Tls(_))
                || e.to_string().contains("certificate");
            let hint = if tls {
                " (for a private CA, place its certificate in /etc/docker/certs.d/HOST:PORT/ca.crt)"
            } else {
                ""
            };
            Error::new(Kind::Network, format!("{src}: {e}{hint}"))
        })?;
        if !resp.status().is_success() {
            return Err(Error::new(
                Kind::Network,
                format!("{src}: HTTP {}", resp.status()),
            ));
        }
        return Ok(Box::new(resp.into_body().into_reader()));
    }
    let f = std::fs::File::open(src).map_err(|e| Error::from(e).context(src))?;
    Ok(Box::new(f))
}

/// argh takes a lone "-" for an unknown flag; stand in for it with a string no
/// real argument can contain (a NUL), and map it back after parsing.
const STDIN: &str = "\0-";

pub fn main(name: &str, args: &[String]) -> Result<u8> {
    let args: Vec<String> = args
        .iter()
        .map(|a| {
            if a == "-" {
                STDIN.to_string()
            } else {
                a.clone()
            }
        })
        .collect();
    let mut a: Args = match crate::applets::parse_args(name, &args) {
        Ok(a) => a,
        Err(code) => return Ok(code),
    };
    berth::log::init_cli();
    if a.source == STDIN {
        a.source = "-".into();
    }
    let format = Format::parse(&a.format)?;
    let created = match &a.created {
        Some(c) => parse_created(c)?,
        None => default_created()?,
    };
    let tag = a.name.as_deref().map(Reference::parse).transpose()?;
    let store = LocalStore::open(&root_from(a.graph.as_deref()))?;
    let input = open_source(&a.source)?;
    let opts = ImportOptions {
        changes: a.change,
        message: a.message,
        created,
        format,
    };
    let out = import(&store, input, &a.source, &opts)?;
    if let Some(r) = tag {
        let key = format!("{}:{}", r.name(), r.tag.as_deref().unwrap_or("latest"));
        store.tag(&out.manifest, &[key], Default::default())?;
    }
    println!("{}", out.config);
    Ok(0)
}

//! Building images in the local store: a rootfs tarball becomes a one-layer image
//! (`import`), with docker's `--change` instructions applied to its config; and
//! moving images in and out as files ([`archive`]: docker-archive and OCI layout).

pub mod archive;
pub mod recipe;

use crate::archive::gzip::ParallelGzip;
use crate::archive::{copy_validated, decompressed};
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::oci::{Descriptor, History, ImageConfig, Manifest, MediaType, RootFs, RunConfig};
use crate::store::local::{ImageMeta, LocalStore};
use std::collections::BTreeMap;
use std::io::Read;

/// Manifest family of a new image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Docker schema2: what the site's SL7-era docker daemons pull (docker < 17
    /// cannot read OCI manifests).
    Docker,
    Oci,
}

impl Format {
    pub fn parse(s: &str) -> Result<Format> {
        match s {
            "docker" | "v2s2" | "docker-schema2" => Ok(Format::Docker),
            "oci" => Ok(Format::Oci),
            _ => Err(Error::usage(format!(
                "unknown format {s:?}: use docker or oci"
            ))),
        }
    }
    pub fn manifest_type(self) -> MediaType {
        match self {
            Format::Docker => MediaType::DockerManifest,
            Format::Oci => MediaType::OciManifest,
        }
    }
    pub fn config_type(self) -> MediaType {
        match self {
            Format::Docker => MediaType::DockerConfig,
            Format::Oci => MediaType::OciConfig,
        }
    }
    pub fn layer_type(self) -> MediaType {
        match self {
            Format::Docker => MediaType::DockerLayerGzip,
            Format::Oci => MediaType::OciLayerGzip,
        }
    }
}

/// The creation time for new images: `SOURCE_DATE_EPOCH` if set, else now.
pub fn default_created() -> Result<i64> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) => v.trim().parse().map_err(|_| {
            Error::usage(format!(
                "SOURCE_DATE_EPOCH={v:?} is not a number of seconds"
            ))
        }),
        Err(_) => Ok(crate::util::now_unix()),
    }
}

/// Parse `--created`: RFC 3339 or seconds since the epoch.
pub fn parse_created(s: &str) -> Result<i64> {
    s.trim()
        .parse::<i64>()
        .ok()
        .or_else(|| crate::util::parse_rfc3339(s))
        .ok_or_else(|| {
            Error::usage(format!(
                "--created {s:?}: expected RFC 3339 (2017-03-27T12:00:00Z) or seconds since 1970"
            ))
        })
}

// Split `k=v k2="v 2"` into pairs, honouring double quotes and backslashes.
fn words(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut any = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                    any = true;
                }
            }
            '"' => {
                quoted = !quoted;
                any = true;
            }
            c if c.is_whitespace() && !quoted => {
                if any {
                    out.push(std::mem::take(&mut cur));
                    any = false;
                }
            }
            c => {
                cur.push(c);
                any = true;
            }
        }
    }
    if any {
        out.push(cur);
    }
    out
}

fn exec_form(rest: &str) -> Result<Vec<String>> {
    let rest = rest.trim();
    if rest.starts_with('[') {
        serde_json::from_str::<Vec<String>>(rest)
            .map_err(|e| Error::usage(format!("bad JSON array {rest:?}: {e}")))
    } else {
        Ok(vec!["/bin/sh".into(), "-c".into(), rest.to_string()])
    }
}

fn pairs(rest: &str, what: &str) -> Result<Vec<(String, String)>> {
    let w = words(rest);
    if w.len() >= 2 && !w[0].contains('=') {
        // legacy form: KEY the rest is the value
        let (k, v) = rest
            .trim()
            .split_once(char::is_whitespace)
            .unwrap_or((rest, ""));
        return Ok(vec![(k.to_string(), v.trim().to_string())]);
    }
    w.into_iter()
        .map(|p| {
            p.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .ok_or_else(|| Error::usage(format!("{what} {p:?}: expected KEY=VALUE")))
        })
        .collect()
}

/// Apply one docker `--change` instruction to an image's run config.
pub fn apply_change(cfg: &mut RunConfig, change: &str) -> Result<()> {
    let change = change.trim();
    let (instr, rest) = change
        .split_once(char::is_whitespace)
        .unwrap_or((change, ""));
    let rest = rest.trim();
    match instr.to_ascii_uppercase().as_str() {
        "CMD" => cfg.cmd = Some(exec_form(rest)?),
        "ENTRYPOINT" => cfg.entrypoint = Some(exec_form(rest)?),
        "ENV" => {
            let env = cfg.env.get_or_insert_with(Vec::new);
            for (k, v) in pairs(rest, "ENV")? {
                env.retain(|e| e.split('=').next() != Some(k.as_str()));
                env.push(format!("{k}={v}"));
            }
        }
        "LABEL" => {
            let labels = cfg.labels.get_or_insert_with(BTreeMap::new);
            for (k, v) in pairs(rest, "LABEL")? {
                labels.insert(k, v);
            }
        }
        "EXPOSE" => {
            let ports = cfg.exposed_ports.get_or_insert_with(BTreeMap::new);
            for p in rest.split_whitespace() {
                let (num, proto) = p.split_once('/').unwrap_or((p, "tcp"));
                if num.parse::<u16>().is_err() || !matches!(proto, "tcp" | "udp" | "sctp") {
                    return Err(Error::usage(format!(
                        "EXPOSE {p:?}: expected PORT[/tcp|udp]"
                    )));
                }
                ports.insert(format!("{num}/{proto}"), serde_json::json!({}));
            }
        }
        "VOLUME" => {
            let vols = cfg.volumes.get_or_insert_with(BTreeMap::new);
            let list = if rest.starts_with('[') {
                exec_form(rest)?
            } else {
                rest.split_whitespace().map(str::to_string).collect()
            };
            for v in list {
                vols.insert(v, serde_json::json!({}));
            }
        }
        "USER" if !rest.is_empty() => cfg.user = Some(rest.to_string()),
        "WORKDIR" if rest.starts_with('/') => cfg.working_dir = Some(rest.to_string()),
        "STOPSIGNAL" if !rest.is_empty() => cfg.stop_signal = Some(rest.to_string()),
        "USER" | "WORKDIR" | "STOPSIGNAL" => {
            return Err(Error::usage(format!(
                "--change {change:?}: needs a value (WORKDIR an absolute path)"
            )));
        }
        _ => {
            return Err(Error::usage(format!(
                "--change {change:?}: unsupported instruction (CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, USER, WORKDIR, VOLUME, STOPSIGNAL)"
            )));
        }
    }
    Ok(())
}

/// Unpack every layer of `img` on top of each other into `dest` (a flattened
/// root, as mkimage's base image needs), hashing each layer's uncompressed tar
/// as it is unpacked: a layer whose content is not the diff_id its config names
/// is an error, whatever it already wrote.
pub fn unpack_flat(
    store: &LocalStore,
    img: &crate::store::local::LocalImage,
    what: &str,
    dest: &std::path::Path,
) -> Result<()> {
    let diff_ids = &img.config.rootfs.diff_ids;
    if diff_ids.len() != img.layers().len() {
        return Err(Error::invalid(format!(
            "{what}: its config lists {} diff_ids for {} layers",
            diff_ids.len(),
            img.layers().len()
        )));
    }
    for (l, diff_id) in img.layers().iter().zip(diff_ids) {
        if l.media_type.is_foreign() {
            return Err(Error::new(
                crate::error::Kind::Unsupported,
                format!("{what} has a foreign layer {}: not supported", l.digest),
            ));
        }
        let f = store.open_blob(&l.digest)?;
        let mut plain = crate::digest::HashingReader::new(decompressed(f)?, diff_id.algorithm());
        crate::archive::extract(&mut plain, dest)
            .map_err(|e| e.context(format!("{what}, layer {}", l.digest)))?;
        // The end-of-archive padding belongs to the diff_id too.
        std::io::copy(&mut plain, &mut std::io::sink())?;
        let (got, _) = plain.finish();
        if &got != diff_id {
            return Err(Error::new(
                crate::error::Kind::Digest,
                format!(
                    "{what}, layer {}: its content is {got}, the config says {diff_id}",
                    l.digest
                ),
            ));
        }
    }
    Ok(())
}

/// Options of an import.
#[derive(Debug, Clone)]
pub struct ImportOptions {
    pub changes: Vec<String>,
    pub message: Option<String>,
    pub created: i64,
    pub format: Format,
}

/// What an import produced.
#[derive(Debug, Clone)]
pub struct Imported {
    pub manifest: Digest,
    pub config: Digest,
    pub layer: Digest,
    pub diff_id: Digest,
    /// Uncompressed layer size.
    pub size: u64,
}

/// Build the config, manifest and layer descriptors for a set of layers and store
/// the config and manifest. `layers` are (compressed blob digest, compressed size,
/// diff_id, history entry).
pub fn assemble(
    store: &LocalStore,
    format: Format,
    created: i64,
    run: RunConfig,
    layers: &[(Digest, u64, Digest, History)],
) -> Result<(Digest, Digest)> {
    let config = ImageConfig {
        created: Some(crate::util::rfc3339(created)),
        architecture: "amd64".into(),
        os: "linux".into(),
        config: Some(run),
        rootfs: RootFs {
            kind: "layers".into(),
            diff_ids: layers.iter().map(|l| l.2.clone()).collect(),
        },
        history: layers.iter().map(|l| l.3.clone()).collect(),
        ..Default::default()
    };
    let config_bytes = serde_json::to_vec(&config).map_err(|e| Error::internal(e.to_string()))?;
    let config_digest = store.put_bytes(&config_bytes)?;
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(format.manifest_type()),
        artifact_type: None,
        config: Descriptor::new(
            format.config_type(),
            config_digest.clone(),
            config_bytes.len() as u64,
        ),
        layers: layers
            .iter()
            .map(|l| Descriptor::new(format.layer_type(), l.0.clone(), l.1))
            .collect(),
        subject: None,
        annotations: None,
        extra: Default::default(),
    };
    let manifest_bytes =
        serde_json::to_vec(&manifest).map_err(|e| Error::internal(e.to_string()))?;
    let manifest_digest = store.put_bytes(&manifest_bytes)?;
    Ok((manifest_digest, config_digest))
}

/// Turn a rootfs tarball (plain or gzip, detected by content) into a one-layer
/// image. A truncated or hostile tarball is refused and nothing is recorded.
pub fn import(
    store: &LocalStore,
    input: Box<dyn Read + Send>,
    source: &str,
    opts: &ImportOptions,
) -> Result<Imported> {
    let mut run = RunConfig::default();
    for c in &opts.changes {
        apply_change(&mut run, c)?;
    }
    let _lease = store.writer_lease()?;
    let plain = decompressed(input)?;
    let gz = ParallelGzip::new(
        store.writer()?,
        crate::archive::gzip::level(),
        ParallelGzip::<Vec<u8>>::default_threads(),
    );
    // What the layer may unpack to later: the store's free space now.
    let room = crate::fsutil::free_space(store.root()).unwrap_or(u64::MAX);
    let (summary, gz) = copy_validated(plain, gz, room).map_err(|e| e.context(source))?;
    let writer = gz.finish()?;
    let (layer, layer_size) = writer.commit(None)?;
    let history = History {
        created: Some(crate::util::rfc3339(opts.created)),
        created_by: None,
        author: None,
        comment: Some(
            opts.message
                .clone()
                .unwrap_or_else(|| format!("Imported from {source}")),
        ),
        empty_layer: None,
    };
    let (manifest, config) = assemble(
        store,
        opts.format,
        opts.created,
        run,
        &[(layer.clone(), layer_size, summary.diff_id.clone(), history)],
    )?;
    store.tag(
        &manifest,
        &[],
        ImageMeta {
            size: Some(summary.size),
            index: None,
        },
    )?;
    Ok(Imported {
        manifest,
        config,
        layer,
        diff_id: summary.diff_id,
        size: summary.size,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_apply_like_docker() {
        let mut c = RunConfig::default();
        for ch in [
            r#"CMD ["/usr/sbin/condor_master","-f"]"#,
            "ENTRYPOINT /usr/bin/dumb-init",
            "ENV PATH=/usr/bin:/bin LANG=C",
            "ENV LANG en_US.UTF-8",
            r#"LABEL site="TRIUMF Tier-1" tier=1"#,
            "EXPOSE 4080 53/udp",
            "USER condor",
            "WORKDIR /home",
            "VOLUME /cvmfs /home",
        ] {
            apply_change(&mut c, ch).unwrap();
        }
        assert_eq!(c.cmd.unwrap(), ["/usr/sbin/condor_master", "-f"]);
        assert_eq!(
            c.entrypoint.unwrap(),
            ["/bin/sh", "-c", "/usr/bin/dumb-init"]
        );
        assert_eq!(c.env.unwrap(), ["PATH=/usr/bin:/bin", "LANG=en_US.UTF-8"]);
        assert_eq!(c.labels.unwrap()["site"], "TRIUMF Tier-1");
        assert!(c.exposed_ports.unwrap().contains_key("53/udp"));
        assert_eq!(c.volumes.unwrap().len(), 2);
        assert!(apply_change(&mut RunConfig::default(), "RUN rm -rf /").is_err());
        assert!(apply_change(&mut RunConfig::default(), "WORKDIR relative").is_err());
        assert!(apply_change(&mut RunConfig::default(), "EXPOSE http").is_err());
    }
}

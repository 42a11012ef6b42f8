//! OCI image-spec and Docker schema2 formats: media types, descriptors, manifests,
//! indexes (manifest lists) and image configs.
//!
//! Registries and clients must keep manifests byte-exact (their digest is their
//! identity), so these types are for reading and for writing new documents; stored
//! documents are always kept as the bytes that came in. Unknown fields are kept in
//! `extra` maps (insertion order preserved), so a document parsed and written again
//! keeps them.

pub mod image;
pub mod media_type;

pub use image::{History, ImageConfig, RootFs, RunConfig};
pub use media_type::MediaType;

use crate::digest::Digest;
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// A content descriptor: what a manifest says about each blob it references.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Descriptor {
    #[serde(rename = "mediaType")]
    pub media_type: MediaType,
    pub digest: Digest,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub urls: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    #[serde(
        rename = "artifactType",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub artifact_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Descriptor {
    pub fn new(media_type: MediaType, digest: Digest, size: u64) -> Self {
        Descriptor {
            media_type,
            digest,
            size,
            urls: None,
            annotations: None,
            platform: None,
            artifact_type: None,
            data: None,
            extra: Map::new(),
        }
    }
    /// Descriptor of the given bytes.
    pub fn of(media_type: MediaType, bytes: &[u8]) -> Self {
        Descriptor::new(media_type, Digest::sha256(bytes), bytes.len() as u64)
    }
}

/// Platform of an index entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Platform {
    pub architecture: String,
    pub os: String,
    #[serde(
        rename = "os.version",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub os_version: Option<String>,
    #[serde(
        rename = "os.features",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub os_features: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// An image manifest (OCI `application/vnd.oci.image.manifest.v1+json` or Docker
/// `application/vnd.docker.distribution.manifest.v2+json`; same shape).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    #[serde(rename = "schemaVersion")]
    pub schema_version: u32,
    #[serde(rename = "mediaType", default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<MediaType>,
    #[serde(
        rename = "artifactType",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub artifact_type: Option<String>,
    pub config: Descriptor,
    #[serde(default)]
    pub layers: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<Descriptor>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Manifest {
    /// The same image as an OCI manifest: Docker media types mapped to their OCI
    /// twins (config and layer bytes are the same, so their digests stay).
    pub fn to_oci(&self) -> Manifest {
        let map = |m: &MediaType| match m {
            MediaType::DockerConfig => MediaType::OciConfig,
            MediaType::DockerLayerGzip => MediaType::OciLayerGzip,
            MediaType::DockerForeignLayer => MediaType::Other(
                "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip".into(),
            ),
            other => other.clone(),
        };
        let mut m = self.clone();
        m.media_type = Some(MediaType::OciManifest);
        m.config.media_type = map(&m.config.media_type);
        for l in &mut m.layers {
            l.media_type = map(&l.media_type);
        }
        m
    }
}

/// An image index (OCI) or manifest list (Docker).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Index {
    #[serde(rename = "schemaVersion")]
    pub schema_version: u32,
    #[serde(rename = "mediaType", default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<MediaType>,
    #[serde(
        rename = "artifactType",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub artifact_type: Option<String>,
    pub manifests: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<Descriptor>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Index {
    pub fn new(media_type: MediaType, manifests: Vec<Descriptor>) -> Self {
        Index {
            schema_version: 2,
            media_type: Some(media_type),
            artifact_type: None,
            manifests,
            subject: None,
            annotations: None,
            extra: Map::new(),
        }
    }
}

/// Any manifest a registry stores, parsed for its references.
// Parsed once per request and never stored in bulk: the size gap costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum AnyManifest {
    Image(Manifest),
    Index(Index),
    /// Docker schema 1 (signed or not): accepted for old data, references only layers.
    Schema1 {
        layers: Vec<Digest>,
    },
}

/// A manifest parsed from stored or uploaded bytes, with the media type it is served as.
#[derive(Debug, Clone)]
pub struct Parsed {
    pub media_type: MediaType,
    pub manifest: AnyManifest,
}

impl Parsed {
    /// Parse manifest bytes. `content_type` is the type the uploader declared, used
    /// only when the document has no `mediaType` field of its own.
    pub fn parse(bytes: &[u8], content_type: Option<&str>) -> Result<Parsed> {
        let v: Value = serde_json::from_slice(bytes)
            .map_err(|e| Error::invalid(format!("manifest is not valid JSON: {e}")))?;
        let obj = v
            .as_object()
            .ok_or_else(|| Error::invalid("manifest is not a JSON object"))?;
        let schema = obj.get("schemaVersion").and_then(Value::as_u64);
        let declared = obj
            .get("mediaType")
            .and_then(Value::as_str)
            .map(MediaType::from);
        let header = content_type
            .map(|c| MediaType::from(c.split(';').next().unwrap_or("").trim()))
            .filter(|m| m.is_manifest());
        if let (Some(d), Some(h)) = (&declared, &header)
            && d != h
            && !(d.is_index() == h.is_index() && schema == Some(1))
        {
            return Err(Error::invalid(format!(
                "manifest mediaType {d} does not match Content-Type {h}"
            )));
        }
        if schema == Some(1) {
            let layers = obj
                .get("fsLayers")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|l| l.get("blobSum")?.as_str()?.parse().ok())
                        .collect()
                })
                .unwrap_or_default();
            let mt = declared
                .or(header)
                .unwrap_or(MediaType::DockerManifestV1Signed);
            return Ok(Parsed {
                media_type: mt,
                manifest: AnyManifest::Schema1 { layers },
            });
        }
        if schema != Some(2) {
            return Err(Error::invalid("manifest schemaVersion must be 2"));
        }
        let is_index = match declared.as_ref().or(header.as_ref()) {
            Some(m) if m.is_index() => true,
            Some(m) if m.is_image_manifest() => false,
            Some(m) => {
                return Err(Error::invalid(format!(
                    "unsupported manifest media type {m}"
                )));
            }
            None => obj.contains_key("manifests"),
        };
        if is_index {
            let idx: Index = serde_json::from_value(v)
                .map_err(|e| Error::invalid(format!("invalid image index: {e}")))?;
            let mt = declared.or(header).unwrap_or(MediaType::OciIndex);
            Ok(Parsed {
                media_type: mt,
                manifest: AnyManifest::Index(idx),
            })
        } else {
            let m: Manifest = serde_json::from_value(v)
                .map_err(|e| Error::invalid(format!("invalid image manifest: {e}")))?;
            let mt = declared.or(header).unwrap_or(MediaType::OciManifest);
            Ok(Parsed {
                media_type: mt,
                manifest: AnyManifest::Image(m),
            })
        }
    }

    /// The subject this manifest refers to (OCI 1.1 referrers), if any.
    pub fn subject(&self) -> Option<&Descriptor> {
        match &self.manifest {
            AnyManifest::Image(m) => m.subject.as_ref(),
            AnyManifest::Index(i) => i.subject.as_ref(),
            AnyManifest::Schema1 { .. } => None,
        }
    }

    /// artifactType as the referrers API reports it: the document's own, else (for
    /// image manifests) the config's media type.
    pub fn artifact_type(&self) -> Option<String> {
        match &self.manifest {
            AnyManifest::Image(m) => m
                .artifact_type
                .clone()
                .filter(|s| !s.is_empty())
                .or_else(|| Some(m.config.media_type.to_string())),
            AnyManifest::Index(i) => i.artifact_type.clone().filter(|s| !s.is_empty()),
            AnyManifest::Schema1 { .. } => None,
        }
    }

    pub fn annotations(&self) -> Option<&BTreeMap<String, String>> {
        match &self.manifest {
            AnyManifest::Image(m) => m.annotations.as_ref(),
            AnyManifest::Index(i) => i.annotations.as_ref(),
            AnyManifest::Schema1 { .. } => None,
        }
    }

    /// Blobs (config and layers) this manifest needs in the repository.
    pub fn blob_refs(&self) -> Vec<&Descriptor> {
        match &self.manifest {
            AnyManifest::Image(m) => {
                let mut v = vec![&m.config];
                // Foreign layers (Windows base layers) live elsewhere, by design.
                v.extend(m.layers.iter().filter(|l| !l.media_type.is_foreign()));
                v
            }
            _ => Vec::new(),
        }
    }

    /// Manifests this index lists.
    pub fn manifest_refs(&self) -> Vec<&Descriptor> {
        match &self.manifest {
            AnyManifest::Index(i) => i.manifests.iter().collect(),
            _ => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OCI: &str = r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",
      "config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855","size":0},
      "layers":[],"x-unknown":{"b":1,"a":2}}"#;

    #[test]
    fn parses_and_keeps_unknown_fields() {
        let p = Parsed::parse(OCI.as_bytes(), None).unwrap();
        assert_eq!(p.media_type, MediaType::OciManifest);
        let AnyManifest::Image(m) = &p.manifest else {
            panic!()
        };
        let again = serde_json::to_string(m).unwrap();
        assert!(again.contains(r#""x-unknown":{"b":1,"a":2}"#), "{again}");
        assert_eq!(p.blob_refs().len(), 1);
    }

    #[test]
    fn mismatched_content_type_is_rejected() {
        let e = Parsed::parse(
            OCI.as_bytes(),
            Some("application/vnd.docker.distribution.manifest.v2+json"),
        )
        .unwrap_err();
        assert!(e.to_string().contains("does not match"));
    }

    #[test]
    fn index_without_media_type_is_recognised() {
        let p = Parsed::parse(br#"{"schemaVersion":2,"manifests":[]}"#, None).unwrap();
        assert_eq!(p.media_type, MediaType::OciIndex);
        assert!(Parsed::parse(b"[1]", None).is_err());
        assert!(Parsed::parse(br#"{"schemaVersion":3}"#, None).is_err());
    }
}

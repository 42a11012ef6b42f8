//! Media types of the OCI image spec and Docker's schema2, with an `Other` variant so
//! that types we do not know (artifacts, future layers) pass through untouched.

use serde::{Deserialize, Serialize};
use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum MediaType {
    OciManifest,
    OciIndex,
    OciConfig,
    OciLayer,
    OciLayerGzip,
    OciLayerZstd,
    OciEmpty,
    OciLayout,
    DockerManifest,
    DockerManifestList,
    DockerManifestV1,
    DockerManifestV1Signed,
    DockerConfig,
    DockerLayerGzip,
    DockerForeignLayer,
    Other(String),
}

const TABLE: &[(MediaType, &str)] = &[
    (
        MediaType::OciManifest,
        "application/vnd.oci.image.manifest.v1+json",
    ),
    (
        MediaType::OciIndex,
        "application/vnd.oci.image.index.v1+json",
    ),
    (
        MediaType::OciConfig,
        "application/vnd.oci.image.config.v1+json",
    ),
    (
        MediaType::OciLayer,
        "application/vnd.oci.image.layer.v1.tar",
    ),
    (
        MediaType::OciLayerGzip,
        "application/vnd.oci.image.layer.v1.tar+gzip",
    ),
    (
        MediaType::OciLayerZstd,
        "application/vnd.oci.image.layer.v1.tar+zstd",
    ),
    (MediaType::OciEmpty, "application/vnd.oci.empty.v1+json"),
    (
        MediaType::OciLayout,
        "application/vnd.oci.layout.header.v1+json",
    ),
    (
        MediaType::DockerManifest,
        "application/vnd.docker.distribution.manifest.v2+json",
    ),
    (
        MediaType::DockerManifestList,
        "application/vnd.docker.distribution.manifest.list.v2+json",
    ),
    (
        MediaType::DockerManifestV1,
        "application/vnd.docker.distribution.manifest.v1+json",
    ),
    (
        MediaType::DockerManifestV1Signed,
        "application/vnd.docker.distribution.manifest.v1+prettyjws",
    ),
    (
        MediaType::DockerConfig,
        "application/vnd.docker.container.image.v1+json",
    ),
    (
        MediaType::DockerLayerGzip,
        "application/vnd.docker.image.rootfs.diff.tar.gzip",
    ),
    (
        MediaType::DockerForeignLayer,
        "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
    ),
];

impl MediaType {
    pub fn as_str(&self) -> &str {
        if let MediaType::Other(s) = self {
            return s;
        }
        TABLE
            .iter()
            .find(|(m, _)| m == self)
            .map(|(_, s)| *s)
            .unwrap_or("")
    }

    /// An image manifest (single platform).
    pub fn is_image_manifest(&self) -> bool {
        matches!(self, MediaType::OciManifest | MediaType::DockerManifest)
    }
    /// An index or manifest list.
    pub fn is_index(&self) -> bool {
        matches!(self, MediaType::OciIndex | MediaType::DockerManifestList)
    }
    /// Anything a registry stores under `manifests/`.
    pub fn is_manifest(&self) -> bool {
        self.is_image_manifest()
            || self.is_index()
            || matches!(
                self,
                MediaType::DockerManifestV1 | MediaType::DockerManifestV1Signed
            )
    }
    pub fn is_foreign(&self) -> bool {
        matches!(self, MediaType::DockerForeignLayer)
            || self
                .as_str()
                .starts_with("application/vnd.oci.image.layer.nondistributable")
    }
    /// Layer compressed with gzip (both families).
    pub fn is_gzip_layer(&self) -> bool {
        matches!(
            self,
            MediaType::OciLayerGzip | MediaType::DockerLayerGzip | MediaType::DockerForeignLayer
        )
    }
}

impl From<&str> for MediaType {
    fn from(s: &str) -> Self {
        TABLE
            .iter()
            .find(|(_, t)| *t == s)
            .map(|(m, _)| m.clone())
            .unwrap_or_else(|| MediaType::Other(s.to_string()))
    }
}

impl fmt::Display for MediaType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for MediaType {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for MediaType {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Ok(MediaType::from(s.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_known_and_unknown() {
        for (m, s) in TABLE {
            assert_eq!(&MediaType::from(*s), m);
            assert_eq!(m.as_str(), *s);
        }
        let o = MediaType::from("application/vnd.example.sbom.v1");
        assert_eq!(
            o,
            MediaType::Other("application/vnd.example.sbom.v1".into())
        );
        assert_eq!(o.to_string(), "application/vnd.example.sbom.v1");
    }
}

//! The OCI image spec's JSON documents (and Docker's schema2 twins), with
//! only the fields berth uses. Unknown fields are ignored.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::{Error, Result};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// A content descriptor.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    #[serde(default)]
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

impl Descriptor {
    pub fn digest(&self) -> Result<Digest> {
        Digest::parse(&self.digest)
    }
}

/// os/architecture[/variant].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// The host's platform in OCI's words (GOARCH names).
pub fn host_platform() -> Platform {
    let architecture = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
    .to_string();
    Platform {
        os: "linux".into(),
        variant: (architecture == "arm64").then(|| "v8".to_string()),
        architecture,
    }
}

/// An image manifest (OCI or Docker schema 2).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    #[serde(default)]
    pub schema_version: u32,
    #[serde(default)]
    pub media_type: String,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
}

/// An image index / manifest list.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Index {
    #[serde(default)]
    pub schema_version: u32,
    #[serde(default)]
    pub media_type: String,
    pub manifests: Vec<Descriptor>,
}

/// A manifest document, told apart by its media type or its shape.
pub enum Document {
    Manifest(Manifest),
    Index(Index),
}

/// Parses a manifest or index; `what` names it in errors.
pub fn parse_document(what: &str, data: &[u8]) -> Result<Document> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Probe {
        #[serde(default)]
        media_type: String,
        #[serde(default)]
        manifests: Option<serde_json::Value>,
        #[serde(default)]
        schema_version: u32,
    }
    let probe: Probe = parse_json(what, data)?;
    if probe.schema_version == 1 {
        return Err(Error::Unsupported(format!(
            "{what}: Docker schema 1 manifests are not supported"
        )));
    }
    let is_index = matches!(probe.media_type.as_str(), OCI_INDEX | DOCKER_LIST)
        || (probe.media_type.is_empty() && probe.manifests.is_some());
    if is_index {
        Ok(Document::Index(parse_json(what, data)?))
    } else {
        Ok(Document::Manifest(parse_json(what, data)?))
    }
}

/// Picks the host platform's manifest from an index.
pub fn select_platform<'a>(
    reference: &str,
    index: &'a Index,
    want: &Platform,
) -> Result<&'a Descriptor> {
    let matches = |p: &Platform, strict_variant: bool| {
        p.os == want.os
            && p.architecture == want.architecture
            && (!strict_variant || p.variant.is_none() || p.variant == want.variant)
    };
    index
        .manifests
        .iter()
        .find(|d| d.platform.as_ref().is_some_and(|p| matches(p, true)))
        .or_else(|| {
            index
                .manifests
                .iter()
                .find(|d| d.platform.as_ref().is_some_and(|p| matches(p, false)))
        })
        .or_else(|| {
            // An index without platforms (an OCI layout of one image).
            (index.manifests.len() == 1 && index.manifests[0].platform.is_none())
                .then(|| &index.manifests[0])
        })
        .ok_or_else(|| Error::Platform {
            reference: reference.to_string(),
            wanted: want.to_string(),
            available: index
                .manifests
                .iter()
                .map(|d| {
                    d.platform
                        .as_ref()
                        .map_or_else(|| "unknown".to_string(), |p| p.to_string())
                })
                .collect::<Vec<_>>()
                .join(", "),
        })
}

/// The image configuration (what `run` applies) and its rootfs diff IDs.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ImageConfig {
    #[serde(default)]
    pub created: Option<String>,
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub config: Option<RunConfig>,
    pub rootfs: RootFs,
}

/// The `config` part of an image configuration.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RunConfig {
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub env: Option<Vec<String>>,
    #[serde(default)]
    pub entrypoint: Option<Vec<String>>,
    #[serde(default)]
    pub cmd: Option<Vec<String>>,
    #[serde(default)]
    pub working_dir: Option<String>,
    #[serde(default)]
    pub stop_signal: Option<String>,
}

/// `rootfs` of an image configuration.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RootFs {
    #[serde(rename = "type", default)]
    pub kind: String,
    pub diff_ids: Vec<String>,
}

impl ImageConfig {
    /// The diff IDs, validated.
    pub fn diff_ids(&self) -> Result<Vec<Digest>> {
        self.rootfs
            .diff_ids
            .iter()
            .map(|d| Digest::parse(d))
            .collect()
    }
}

/// Deserializes JSON, naming the document on error.
pub fn parse_json<T: serde::de::DeserializeOwned>(what: &str, data: &[u8]) -> Result<T> {
    serde_json::from_slice(data).map_err(|e| Error::Json {
        what: what.to_string(),
        message: e.to_string(),
    })
}

/// How a layer blob is compressed, from its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    pub fn sniff(head: &[u8]) -> Compression {
        if head.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else {
            Compression::None
        }
    }
}

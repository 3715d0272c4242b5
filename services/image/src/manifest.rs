//! Parsing and checking manifests, indexes and image configs (OCI and Docker schema 2).

use berth_core::media;
use berth_core::Digest;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    #[serde(default)]
    pub media_type: String,
    pub digest: String,
    pub size: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct Platform {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub schema_version: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Index {
    pub schema_version: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    pub manifests: Vec<Descriptor>,
}

/// The parts of an image config berth reads; the rest is kept as stored.
#[derive(Debug, Clone, Deserialize, Default)]
pub struct ImageConfig {
    #[serde(default)]
    pub created: Option<String>,
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    pub rootfs: RootFs,
}

#[derive(Debug, Clone, Deserialize, Default)]
pub struct RootFs {
    #[serde(rename = "type", default)]
    pub kind: String,
    #[serde(default)]
    pub diff_ids: Vec<String>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ManifestError {
    #[error("{what} is not valid JSON of its kind: {reason}")]
    Malformed { what: String, reason: String },
    #[error("{what}: unsupported schema version {version} (only 2 is supported)")]
    SchemaVersion { what: String, version: i64 },
    #[error("{what}: unsupported media type {media_type:?}")]
    MediaType { what: String, media_type: String },
    #[error("{what}: {reason}")]
    Invalid { what: String, reason: String },
    #[error("{what} has no image for {platform}; it has: {available}")]
    NoPlatform {
        what: String,
        platform: String,
        available: String,
    },
}

fn malformed(what: &str, e: impl std::fmt::Display) -> ManifestError {
    ManifestError::Malformed {
        what: what.to_string(),
        reason: e.to_string(),
    }
}

fn invalid(what: &str, reason: impl Into<String>) -> ManifestError {
    ManifestError::Invalid {
        what: what.to_string(),
        reason: reason.into(),
    }
}

impl Descriptor {
    pub fn digest(&self, what: &str) -> Result<Digest, ManifestError> {
        self.digest
            .parse()
            .map_err(|e| invalid(what, format!("descriptor digest {:?}: {e}", self.digest)))
    }
}

fn check_descriptor(what: &str, d: &Descriptor) -> Result<Digest, ManifestError> {
    if d.size < 0 {
        return Err(invalid(
            what,
            format!("descriptor {} has a negative size", d.digest),
        ));
    }
    d.digest(what)
}

/// Parses a manifest and checks that it is one berth can pull and run.
pub fn parse_manifest(
    what: &str,
    media_type: &str,
    bytes: &[u8],
) -> Result<Manifest, ManifestError> {
    let m: Manifest = serde_json::from_slice(bytes).map_err(|e| malformed(what, e))?;
    if m.schema_version != 2 {
        return Err(ManifestError::SchemaVersion {
            what: what.into(),
            version: m.schema_version,
        });
    }
    if let Some(mt) = &m.media_type {
        if !media::is_manifest(mt) {
            return Err(ManifestError::MediaType {
                what: what.into(),
                media_type: mt.clone(),
            });
        }
        if !media_type.is_empty() && media::is_manifest(media_type) && mt != media_type {
            return Err(invalid(
                what,
                format!("declares media type {mt} but was served as {media_type}"),
            ));
        }
    }
    check_descriptor(what, &m.config)?;
    if m.config.size as u64 > media::MAX_MANIFEST_SIZE {
        return Err(invalid(
            what,
            format!(
                "its config is {} bytes, more than the 4 MiB limit",
                m.config.size
            ),
        ));
    }
    for l in &m.layers {
        check_descriptor(what, l)?;
        if media::Compression::of_layer(&l.media_type).is_none() {
            return Err(ManifestError::MediaType {
                what: format!("layer {} of {what}", l.digest),
                media_type: l.media_type.clone(),
            });
        }
    }
    Ok(m)
}

pub fn parse_index(what: &str, bytes: &[u8]) -> Result<Index, ManifestError> {
    let i: Index = serde_json::from_slice(bytes).map_err(|e| malformed(what, e))?;
    if i.schema_version != 2 {
        return Err(ManifestError::SchemaVersion {
            what: what.into(),
            version: i.schema_version,
        });
    }
    for d in &i.manifests {
        check_descriptor(what, d)?;
    }
    Ok(i)
}

/// Picks the manifest for `os/arch` from an index (amd64 also takes no variant or v1..v3).
pub fn select_platform<'a>(
    what: &str,
    index: &'a Index,
    os: &str,
    arch: &str,
) -> Result<&'a Descriptor, ManifestError> {
    // `arch` may carry a variant, as in `arm/v7`; without one any variant matches.
    let (architecture, variant) = match arch.split_once('/') {
        Some((a, v)) => (a, Some(v)),
        None => (arch, None),
    };
    index
        .manifests
        .iter()
        .find(|d| {
            media::is_manifest(&d.media_type)
                && d.platform.as_ref().is_some_and(|p| {
                    p.os == os
                        && p.architecture == architecture
                        && variant.is_none_or(|v| p.variant.as_deref() == Some(v))
                })
        })
        .ok_or_else(|| ManifestError::NoPlatform {
            what: what.into(),
            platform: format!("{os}/{arch}"),
            available: index
                .manifests
                .iter()
                .filter_map(|d| {
                    d.platform.as_ref().map(|p| match &p.variant {
                        Some(v) if !v.is_empty() => format!("{}/{}/{v}", p.os, p.architecture),
                        _ => format!("{}/{}", p.os, p.architecture),
                    })
                })
                .collect::<Vec<_>>()
                .join(", "),
        })
}

/// Parses an image config and checks its layers list against the manifest's.
pub fn parse_config(
    what: &str,
    bytes: &[u8],
    layers: usize,
) -> Result<(ImageConfig, Vec<Digest>), ManifestError> {
    let c: ImageConfig = serde_json::from_slice(bytes).map_err(|e| malformed(what, e))?;
    if !c.rootfs.kind.is_empty() && c.rootfs.kind != "layers" {
        return Err(invalid(
            what,
            format!("rootfs type {:?} is not \"layers\"", c.rootfs.kind),
        ));
    }
    if c.rootfs.diff_ids.len() != layers {
        return Err(invalid(
            what,
            format!(
                "it lists {} diff_ids for {} layers",
                c.rootfs.diff_ids.len(),
                layers
            ),
        ));
    }
    let diff_ids = c
        .rootfs
        .diff_ids
        .iter()
        .map(|d| {
            d.parse::<Digest>()
                .map_err(|e| invalid(what, format!("diff_id {d:?}: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((c, diff_ids))
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn manifest(layer_type: &str) -> String {
        format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"{}","digest":"{D}","size":10}},"layers":[{{"mediaType":"{layer_type}","digest":"{D}","size":5}}]}}"#,
            media::OCI_MANIFEST,
            media::OCI_CONFIG
        )
    }

    #[test]
    fn accepts_oci_and_docker_manifests() {
        let m = parse_manifest(
            "m",
            media::OCI_MANIFEST,
            manifest(media::OCI_LAYER_GZIP).as_bytes(),
        )
        .unwrap();
        assert_eq!(m.layers.len(), 1);
        parse_manifest("m", "", manifest(media::OCI_LAYER_ZSTD).as_bytes()).unwrap();
        parse_manifest("m", "", manifest(media::OCI_LAYER).as_bytes()).unwrap();
    }

    #[test]
    fn refuses_hostile_manifests() {
        assert!(matches!(
            parse_manifest("m", "", b"not json"),
            Err(ManifestError::Malformed { .. })
        ));
        assert!(matches!(
            parse_manifest("m", "", manifest("text/html").as_bytes()),
            Err(ManifestError::MediaType { .. })
        ));
        let bad_digest = manifest(media::OCI_LAYER).replace(&D[10..], "zz");
        assert!(parse_manifest("m", "", bad_digest.as_bytes()).is_err());
        let v1 = manifest(media::OCI_LAYER).replace("\"schemaVersion\":2", "\"schemaVersion\":1");
        assert!(matches!(
            parse_manifest("m", "", v1.as_bytes()),
            Err(ManifestError::SchemaVersion { .. })
        ));
        assert!(parse_manifest(
            "m",
            media::DOCKER_MANIFEST,
            manifest(media::OCI_LAYER).as_bytes()
        )
        .is_err());
        let neg = manifest(media::OCI_LAYER).replace("\"size\":5", "\"size\":-5");
        assert!(parse_manifest("m", "", neg.as_bytes()).is_err());
    }

    #[test]
    fn picks_linux_amd64() {
        let idx = format!(
            r#"{{"schemaVersion":2,"manifests":[
            {{"mediaType":"{m}","digest":"{D}","size":1,"platform":{{"os":"linux","architecture":"arm64"}}}},
            {{"mediaType":"{m}","digest":"{D}","size":2,"platform":{{"os":"linux","architecture":"amd64"}}}},
            {{"mediaType":"{m}","digest":"{D}","size":3,"platform":{{"os":"linux","architecture":"arm","variant":"v7"}}}}]}}"#,
            m = media::OCI_MANIFEST
        );
        let i = parse_index("i", idx.as_bytes()).unwrap();
        assert_eq!(select_platform("i", &i, "linux", "amd64").unwrap().size, 2);
        assert_eq!(select_platform("i", &i, "linux", "arm64").unwrap().size, 1);
        assert!(select_platform("i", &i, "linux", "arm64/v8").is_err());
        let e = select_platform("i", &i, "linux", "s390x").unwrap_err();
        assert!(
            e.to_string()
                .contains("linux/arm64, linux/amd64, linux/arm/v7"),
            "{e}"
        );
    }

    #[test]
    fn config_must_match_layers() {
        let c = format!(
            r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":["{D}"]}}}}"#
        );
        assert_eq!(parse_config("c", c.as_bytes(), 1).unwrap().1.len(), 1);
        assert!(parse_config("c", c.as_bytes(), 2).is_err());
        assert!(parse_config("c", b"[]", 0).is_err());
    }
}

//! Parsing of the JSON documents an image is made of (index, manifest, config), shared by the
//! registry pull and the archive import, with the limits applied in one place.

use serde::Deserialize;

use crate::cache::Digest;
use crate::error::OciError;
use crate::{ImageConfig, Layer};

/// The most layers a manifest may list. Docker's own limit is 127 (overlay's lower-dir limit);
/// a manifest over it is refused before any layer is fetched.
pub const MAX_LAYERS: usize = 128;
/// The largest manifest or index accepted. Real ones are a few KiB; the distribution registry
/// itself refuses manifests over 4 MiB.
pub const MAX_MANIFEST_BYTES: u64 = 4 << 20;
/// The largest image config accepted (they hold the history, so they can be tens of KiB).
pub const MAX_CONFIG_BYTES: u64 = 4 << 20;

pub(crate) const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub(crate) const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub(crate) const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub(crate) const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const CONFIG_TYPES: &[&str] = &[
    "application/vnd.oci.image.config.v1+json",
    "application/vnd.docker.container.image.v1+json",
];
/// Layer media types Warren can unpack: plain, gzip and zstd tar. Non-distributable ("foreign")
/// layers are not fetched by anything here, so they are refused.
const LAYER_TYPES: &[&str] = &[
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd",
    "application/vnd.docker.image.rootfs.diff.tar",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
    "application/vnd.docker.image.rootfs.diff.tar.zstd",
];

/// A content descriptor as found in indexes and manifests.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Descriptor {
    #[serde(default)]
    pub(crate) media_type: String,
    pub(crate) digest: String,
    pub(crate) size: i64,
    #[serde(default)]
    pub(crate) platform: Option<Platform>,
    #[serde(default)]
    pub(crate) annotations: Option<std::collections::HashMap<String, String>>,
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Platform {
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    os: String,
}

/// Either an index or a manifest: registries answer with either for a tag, and the top-level
/// `mediaType` (or the presence of `manifests`) tells which.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct AnyManifest {
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    manifests: Option<Vec<Descriptor>>,
    #[serde(default)]
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Option<Vec<Descriptor>>,
}

/// A parsed top-level document.
#[derive(Debug)]
pub(crate) enum Parsed {
    /// An image index / manifest list.
    Index(Vec<Descriptor>),
    /// An image manifest, with its layer count already checked.
    Manifest(Manifest),
}

/// An image manifest reduced to what Warren uses.
#[derive(Debug)]
pub(crate) struct Manifest {
    pub(crate) config: Descriptor,
    pub(crate) config_digest: Digest,
    pub(crate) layers: Vec<Layer>,
}

/// Parses a manifest or index, refusing oversized documents, too many layers, bad digests and
/// layer types that cannot be unpacked.
pub(crate) fn parse(bytes: &[u8], what: &str) -> Result<Parsed, OciError> {
    if bytes.len() as u64 > MAX_MANIFEST_BYTES {
        return Err(OciError::TooLarge {
            what: what.to_owned(),
            max: MAX_MANIFEST_BYTES,
        });
    }
    let doc: AnyManifest = serde_json::from_slice(bytes).map_err(|e| OciError::json(what, e))?;
    let media_type = doc.media_type.as_deref().unwrap_or_default();
    if media_type == OCI_INDEX || media_type == DOCKER_LIST || doc.manifests.is_some() {
        return Ok(Parsed::Index(doc.manifests.unwrap_or_default()));
    }
    if !media_type.is_empty() && media_type != OCI_MANIFEST && media_type != DOCKER_MANIFEST {
        return Err(OciError::UnsupportedMediaType {
            what: what.to_owned(),
            media_type: media_type.to_owned(),
        });
    }
    let (Some(config), Some(layers)) = (doc.config, doc.layers) else {
        return Err(OciError::Archive {
            path: what.into(),
            reason: "manifest has no config or no layers".into(),
        });
    };
    // Counted before anything else is looked at, so a 10,000-layer manifest costs nothing.
    if layers.len() > MAX_LAYERS {
        return Err(OciError::TooManyLayers {
            count: layers.len(),
            max: MAX_LAYERS,
        });
    }
    if !config.media_type.is_empty() && !CONFIG_TYPES.contains(&config.media_type.as_str()) {
        return Err(OciError::UnsupportedMediaType {
            what: format!("config of {what}"),
            media_type: config.media_type.clone(),
        });
    }
    check_size(&config, MAX_CONFIG_BYTES, "image config")?;
    let config_digest = Digest::parse(&config.digest)?;
    let layers = layers
        .into_iter()
        .map(|d| {
            if !LAYER_TYPES.contains(&d.media_type.as_str()) {
                return Err(OciError::UnsupportedMediaType {
                    what: format!("layer {}", d.digest),
                    media_type: d.media_type,
                });
            }
            Ok(Layer {
                digest: Digest::parse(&d.digest)?,
                media_type: d.media_type,
                size: u64::try_from(d.size).unwrap_or(0),
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Parsed::Manifest(Manifest {
        config,
        config_digest,
        layers,
    }))
}

/// Refuses a descriptor that announces a negative size or more than `max` bytes.
pub(crate) fn check_size(d: &Descriptor, max: u64, what: &str) -> Result<u64, OciError> {
    match u64::try_from(d.size) {
        Ok(size) if size <= max => Ok(size),
        _ => Err(OciError::TooLarge {
            what: format!("{what} {}", d.digest),
            max,
        }),
    }
}

/// Picks the linux/amd64 image manifest from an index. An index without platforms but with a
/// single manifest (common in OCI layouts) yields that one.
pub(crate) fn select_platform<'a>(
    manifests: &'a [Descriptor],
    reference: &str,
) -> Result<&'a Descriptor, OciError> {
    let found = manifests.iter().find(|d| {
        d.platform
            .as_ref()
            .is_some_and(|p| p.os == "linux" && p.architecture == "amd64")
    });
    match found {
        Some(d) => Ok(d),
        None if manifests.len() == 1 && manifests[0].platform.is_none() => Ok(&manifests[0]),
        None => Err(OciError::NoPlatform {
            reference: reference.to_owned(),
        }),
    }
}

#[derive(Debug, Deserialize)]
struct ConfigFile {
    #[serde(default)]
    config: Option<RunConfig>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RunConfig {
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    working_dir: Option<String>,
    #[serde(default)]
    env: Option<Vec<String>>,
    #[serde(default)]
    entrypoint: Option<Vec<String>>,
    #[serde(default)]
    cmd: Option<Vec<String>>,
}

/// Parses an image config blob into the run settings Warren uses.
pub(crate) fn parse_config(bytes: &[u8]) -> Result<ImageConfig, OciError> {
    if bytes.len() as u64 > MAX_CONFIG_BYTES {
        return Err(OciError::TooLarge {
            what: "image config".into(),
            max: MAX_CONFIG_BYTES,
        });
    }
    let file: ConfigFile =
        serde_json::from_slice(bytes).map_err(|e| OciError::json("image config", e))?;
    let c = file.config.unwrap_or_default();
    let non_empty = |s: Option<String>| s.filter(|s| !s.is_empty());
    Ok(ImageConfig {
        user: non_empty(c.user),
        workdir: non_empty(c.working_dir),
        env: c
            .env
            .unwrap_or_default()
            .into_iter()
            .map(|kv| match kv.split_once('=') {
                Some((k, v)) => (k.to_owned(), v.to_owned()),
                None => (kv, String::new()),
            })
            .collect(),
        entrypoint: c.entrypoint.unwrap_or_default(),
        cmd: c.cmd.unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_env_user_workdir() {
        let c = parse_config(
            br#"{"config":{"User":"1000:1000","WorkingDir":"/app","Env":["A=1","B=x=y","C"],
                "Entrypoint":["/bin/sh"],"Cmd":["-c","true"]}}"#,
        )
        .unwrap();
        assert_eq!(c.user.as_deref(), Some("1000:1000"));
        assert_eq!(c.workdir.as_deref(), Some("/app"));
        assert_eq!(c.env[1], ("B".to_owned(), "x=y".to_owned()));
        assert_eq!(c.env[2], ("C".to_owned(), String::new()));
        assert_eq!(c.cmd, ["-c", "true"]);
    }

    #[test]
    fn digest_is_strict() {
        assert!(Digest::parse("sha256:../../etc").is_err());
        assert!(Digest::parse(&format!("sha256:{}", "A".repeat(64))).is_err());
        assert!(Digest::parse(&format!("sha512:{}", "a".repeat(64))).is_err());
        assert!(Digest::parse(&format!("sha256:{}", "a".repeat(64))).is_ok());
    }
}

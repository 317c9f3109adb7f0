//! Pulling an image from an OCI registry with `oci-client`.
//!
//! Manifests are fetched raw and parsed here (not by oci-client) so that the layer count, the
//! sizes and the media types are checked before any blob is requested, and so that the index
//! resolution (linux/amd64) is ours. Blobs stream into the [`BlobCache`], which verifies them.

use futures_util::StreamExt;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use std::time::Duration;

use crate::cache::{BlobCache, Digest};
use crate::error::OciError;
use crate::manifest::{self, MAX_CONFIG_BYTES, MAX_MANIFEST_BYTES, Parsed};
use crate::{Credentials, Image, Phase, Progress};

const ACCEPTED_MANIFESTS: &[&str] = &[
    manifest::OCI_INDEX,
    manifest::OCI_MANIFEST,
    manifest::DOCKER_LIST,
    manifest::DOCKER_MANIFEST,
];

/// Pulls `reference` (for example `docker.io/library/debian:bookworm` or
/// `127.0.0.1:5000/test:1`) into `cache` and returns the image.
///
/// HTTPS is used except for registries named in `insecure_registries` (`host:port`, as in the
/// reference) and for loopback registries (`localhost`, `127.0.0.0/8`, `[::1]`), which are
/// spoken to over plain HTTP. An index resolves to its linux/amd64 manifest. Layers already in
/// the cache are not downloaded again.
pub async fn pull(
    reference: &str,
    creds: Option<&Credentials>,
    cache: &BlobCache,
    insecure_registries: &[String],
    progress: &(dyn Fn(Progress) + Send + Sync),
) -> Result<Image, OciError> {
    let image: Reference =
        reference
            .parse()
            .map_err(|e: oci_client::ParseError| OciError::InvalidReference {
                reference: reference.to_owned(),
                reason: e.to_string(),
            })?;
    install_crypto_provider();
    let mut http_ok = insecure_registries.to_vec();
    if is_loopback(image.registry()) {
        http_ok.push(image.registry().to_owned());
    }
    let client = Client::new(ClientConfig {
        protocol: ClientProtocol::HttpsExcept(http_ok),
        // Index resolution is done by `manifest::select_platform`.
        platform_resolver: None,
        connect_timeout: Some(Duration::from_secs(30)),
        read_timeout: Some(Duration::from_secs(300)),
        ..ClientConfig::default()
    });
    let auth = match creds {
        Some(c) => RegistryAuth::Basic(c.username.clone(), c.password.clone()),
        None => RegistryAuth::Anonymous,
    };
    let registry_err = |source| OciError::Registry {
        reference: reference.to_owned(),
        source,
    };

    progress(Progress {
        phase: Phase::Manifest,
        digest: String::new(),
        done: 0,
        total: 0,
    });
    let (mut bytes, _) = client
        .pull_manifest_raw(&image, &auth, ACCEPTED_MANIFESTS)
        .await
        .map_err(registry_err)?;
    let mut digest = Digest::of(&bytes);
    if let Some(pinned) = image.digest()
        && pinned != digest.as_str()
    {
        return Err(OciError::DigestMismatch {
            what: "manifest".into(),
            expected: pinned.to_owned(),
            actual: digest.to_string(),
        });
    }
    let mut parsed = manifest::parse(&bytes, "manifest")?;
    if let Parsed::Index(entries) = &parsed {
        let chosen = manifest::select_platform(entries, reference)?;
        manifest::check_size(chosen, MAX_MANIFEST_BYTES, "manifest")?;
        let expected = Digest::parse(&chosen.digest)?;
        progress(Progress {
            phase: Phase::Manifest,
            digest: expected.to_string(),
            done: 0,
            total: u64::try_from(chosen.size).unwrap_or(0),
        });
        let by_digest = Reference::with_digest(
            image.registry().to_owned(),
            image.repository().to_owned(),
            expected.to_string(),
        );
        (bytes, _) = client
            .pull_manifest_raw(&by_digest, &auth, ACCEPTED_MANIFESTS)
            .await
            .map_err(registry_err)?;
        digest = Digest::of(&bytes);
        if digest != expected {
            return Err(OciError::DigestMismatch {
                what: "platform manifest".into(),
                expected: expected.to_string(),
                actual: digest.to_string(),
            });
        }
        parsed = manifest::parse(&bytes, "platform manifest")?;
    }
    let Parsed::Manifest(m) = parsed else {
        // An index inside an index: nothing Warren needs to support.
        return Err(OciError::UnsupportedMediaType {
            what: "manifest".into(),
            media_type: "nested image index".into(),
        });
    };
    tracing::debug!(%reference, manifest = %digest, layers = m.layers.len(), "pulling image");

    let config_size = manifest::check_size(&m.config, MAX_CONFIG_BYTES, "image config")?;
    fetch_blob(
        &client,
        &image,
        cache,
        &m.config_digest,
        config_size,
        Phase::Config,
        progress,
    )
    .await
    .map_err(|e| with_reference(e, reference))?;
    let config_bytes = cache.read_blob(&m.config_digest, MAX_CONFIG_BYTES, "image config")?;
    let config = manifest::parse_config(&config_bytes)?;

    for layer in &m.layers {
        fetch_blob(
            &client,
            &image,
            cache,
            &layer.digest,
            layer.size,
            Phase::Layer,
            progress,
        )
        .await
        .map_err(|e| with_reference(e, reference))?;
    }
    tracing::info!(%reference, manifest = %digest, layers = m.layers.len(), "pulled image");
    Ok(Image {
        reference: reference.to_owned(),
        manifest_digest: digest,
        config_digest: m.config_digest,
        config,
        layers: m.layers,
    })
}

/// Downloads one blob into the cache unless it is there already. The descriptor's size is the
/// cap: a registry that sends more is cut off, not believed.
async fn fetch_blob(
    client: &Client,
    image: &Reference,
    cache: &BlobCache,
    digest: &Digest,
    size: u64,
    phase: Phase,
    progress: &(dyn Fn(Progress) + Send + Sync),
) -> Result<(), FetchError> {
    let report = |phase, done| {
        progress(Progress {
            phase,
            digest: digest.to_string(),
            done,
            total: size,
        });
    };
    if cache.contains(digest) {
        report(Phase::Cached, size);
        return Ok(());
    }
    report(phase, 0);
    let what = format!("blob {digest}");
    let mut writer = cache.writer(digest, size, &what)?;
    let mut stream = client
        .pull_blob_stream(image, digest.as_str())
        .await?
        .stream;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| OciError::io("download", &what, e))?;
        // Local disk writes of at most one network chunk: short enough not to need
        // spawn_blocking, and they keep the blob's bytes in order with the hash.
        writer.write(&chunk)?;
        report(phase, writer.written());
    }
    let (_, len) = writer.finish()?;
    report(Phase::Done, len);
    Ok(())
}

/// Either kind of failure while fetching a blob, so `?` works on both inside `fetch_blob`.
#[derive(Debug)]
enum FetchError {
    Oci(OciError),
    Registry(oci_client::errors::OciDistributionError),
}

impl From<OciError> for FetchError {
    fn from(e: OciError) -> Self {
        FetchError::Oci(e)
    }
}

impl From<oci_client::errors::OciDistributionError> for FetchError {
    fn from(e: oci_client::errors::OciDistributionError) -> Self {
        FetchError::Registry(e)
    }
}

fn with_reference(e: FetchError, reference: &str) -> OciError {
    match e {
        FetchError::Oci(e) => e,
        FetchError::Registry(source) => OciError::Registry {
            reference: reference.to_owned(),
            source,
        },
    }
}

/// Whether a registry host (with optional port) is on this machine, where plain HTTP is fine.
fn is_loopback(registry: &str) -> bool {
    let host = match registry.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or_default(),
        None => registry.rsplit_once(':').map_or(registry, |(h, _)| h),
    };
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// oci-client's reqwest is built with `rustls-no-provider` so the workspace keeps one TLS
/// backend (ring) instead of also compiling aws-lc; reqwest then uses the process-wide default
/// provider, which must exist. If the embedding program installed one already, keep it.
fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

#[cfg(test)]
mod tests {
    use super::is_loopback;

    #[test]
    fn loopback_registries() {
        assert!(is_loopback("127.0.0.1:5000"));
        assert!(is_loopback("localhost:5000"));
        assert!(is_loopback("localhost"));
        assert!(is_loopback("[::1]:5000"));
        assert!(!is_loopback("docker.io"));
        assert!(!is_loopback("10.0.0.1:5000"));
        assert!(!is_loopback("localhost.evil.com:5000"));
    }
}

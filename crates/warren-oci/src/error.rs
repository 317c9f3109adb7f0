//! The crate's one error type. Messages are lowercase with no final period, and name the image
//! part (layer digest, tar entry, file) they are about.

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong while pulling, importing or unpacking an image.
#[derive(Debug, thiserror::Error)]
pub enum OciError {
    /// The image reference could not be parsed.
    #[error("invalid image reference {reference:?}: {reason}")]
    InvalidReference {
        /// The reference as given.
        reference: String,
        /// Why it was refused.
        reason: String,
    },
    /// A digest is not `sha256:` followed by 64 lowercase hex digits.
    #[error("invalid digest {0:?} (only sha256:<64 hex digits> is accepted)")]
    InvalidDigest(String),
    /// The registry answered with an error, or could not be reached.
    #[error("registry error for {reference}: {source}")]
    Registry {
        /// The reference being pulled.
        reference: String,
        /// What oci-client reported.
        #[source]
        source: oci_client::errors::OciDistributionError,
    },
    /// A blob's content does not hash to the digest it was fetched under.
    #[error("digest mismatch for {what}: expected {expected}, got {actual}")]
    DigestMismatch {
        /// Which blob (manifest, config, layer) it was.
        what: String,
        /// The digest it should have.
        expected: String,
        /// The digest of the bytes received.
        actual: String,
    },
    /// A blob is larger than its descriptor said, or than the limit for its kind.
    #[error("{what} is too large: more than {max} bytes")]
    TooLarge {
        /// Which blob it was.
        what: String,
        /// The limit it went over.
        max: u64,
    },
    /// The manifest lists more layers than Warren accepts.
    #[error("manifest has {count} layers, more than the {max} accepted")]
    TooManyLayers {
        /// Layers in the manifest.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// An image index has no linux/amd64 manifest.
    #[error("image index of {reference} has no linux/amd64 manifest")]
    NoPlatform {
        /// The reference being pulled or imported.
        reference: String,
    },
    /// A manifest, layer or config has a media type Warren cannot use.
    #[error("unsupported media type {media_type:?} for {what}")]
    UnsupportedMediaType {
        /// Which blob it was.
        what: String,
        /// Its media type.
        media_type: String,
    },
    /// A manifest, index or config is not the JSON it should be.
    #[error("malformed {what}: {source}")]
    Json {
        /// Which document it was.
        what: String,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
    /// An OCI layout directory or `docker save` tarball is not well formed.
    #[error("bad image archive {path}: {reason}")]
    Archive {
        /// The directory or tarball.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A blob the image needs is not in the cache.
    #[error("blob {digest} is not in the cache")]
    BlobMissing {
        /// The missing blob.
        digest: String,
    },
    /// A filesystem operation failed outside of a layer (cache, archive, destination).
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The path it was done on.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A layer could not be applied; names the layer and, where there is one, the tar entry.
    #[error("layer {layer}{}: {reason}", entry.as_ref().map(|e| format!(", entry {e:?}")).unwrap_or_default())]
    Layer {
        /// Digest of the layer.
        layer: String,
        /// The tar entry's path as written in the layer, if the error is about one entry.
        entry: Option<String>,
        /// What went wrong.
        reason: LayerError,
    },
}

/// Why a layer (or one of its entries) was refused or could not be written.
#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    /// Uncompressed bytes over all layers went past [`crate::UnpackLimits::max_bytes`].
    #[error("uncompressed size exceeds the limit of {max} bytes (decompression bomb?)")]
    TooManyBytes {
        /// The limit.
        max: u64,
    },
    /// Entries over all layers went past [`crate::UnpackLimits::max_entries`].
    #[error("more than {max} entries")]
    TooManyEntries {
        /// The limit.
        max: u64,
    },
    /// An entry's path or link target is longer than [`crate::UnpackLimits::max_path_len`].
    #[error("path of {len} bytes is longer than the limit of {max}")]
    PathTooLong {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A hard link whose target is not a file already in the destination.
    #[error("hard link to {target:?} refused: {why}")]
    BadHardLink {
        /// The link target as written in the layer.
        target: String,
        /// Why.
        why: &'static str,
    },
    /// An entry that cannot be placed (for example one naming the root itself as a file).
    #[error("entry refused: {0}")]
    Refused(&'static str),
    /// The layer is neither tar, gzip-compressed tar nor zstd-compressed tar.
    #[error("unsupported layer media type {0:?}")]
    MediaType(String),
    /// Reading the layer or writing into the destination failed.
    #[error("{op}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

impl OciError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        OciError::Io {
            op,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn json(what: impl Into<String>, source: serde_json::Error) -> Self {
        OciError::Json {
            what: what.into(),
            source,
        }
    }
}

impl LayerError {
    /// For `map_err`: wraps an `io::Error` or a rustix `Errno` with what was being done.
    pub(crate) fn io<E: Into<io::Error>>(op: &'static str) -> impl FnOnce(E) -> LayerError {
        move |source| LayerError::Io {
            op,
            source: source.into(),
        }
    }
}

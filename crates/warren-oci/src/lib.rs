//! Fetches OCI and Docker images and unpacks them safely into a directory.
//!
//! This crate's one job sits between "the user named an image" and "Warren snapshots a btrfs
//! subvolume holding its root filesystem":
//!
//! 1. [`pull()`] (from a registry, through `oci-client`) or [`import()`] (an OCI layout directory or
//!    a `docker save` tarball) resolves the image to a manifest, picks linux/amd64 out of an
//!    index, and puts its config and layers into the shared, content-addressed [`BlobCache`],
//!    verifying every digest before a blob gets its name.
//! 2. [`unpack()`] applies the layers in order into a destination directory the caller created
//!    (a fresh subvolume). Layers are hostile input: every path is resolved with
//!    `openat2(RESOLVE_IN_ROOT)` against an `O_PATH` fd of the destination, so `..`, absolute
//!    paths and symlinks (`x -> /etc`) all stay inside it (SECURITY.md item 4). Devices are
//!    skipped, setuid/setgid bits stripped, xattrs ignored, and sizes, entry counts and path
//!    lengths are capped while the bytes stream.
//!
//! Files keep the image's raw uids/gids (0..=65535, larger ones become 65534); sandboxes see them
//! through an idmapped mount set up elsewhere.

mod cache;
mod error;
mod import;
mod manifest;
mod pull;
mod unpack;

use std::fmt;

pub use cache::{BlobCache, BlobWriter, Digest};
pub use error::{LayerError, OciError};
pub use import::import;
pub use manifest::{MAX_CONFIG_BYTES, MAX_LAYERS, MAX_MANIFEST_BYTES};
pub use pull::pull;
pub use unpack::{UnpackLimits, UnpackStats, unpack};

/// Registry credentials (HTTP basic, exchanged for a bearer token where the registry wants one).
#[derive(Clone)]
pub struct Credentials {
    /// User name.
    pub username: String,
    /// Password or access token.
    pub password: String,
}

impl fmt::Debug for Credentials {
    // The password must not reach logs through a `?creds` field.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// An image whose config and layers are all in a [`BlobCache`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    /// The reference it was pulled as, or the archive path it was imported from.
    pub reference: String,
    /// Digest of the platform-specific image manifest (not of the index): the image's identity.
    pub manifest_digest: Digest,
    /// Digest of the config blob.
    pub config_digest: Digest,
    /// The run settings from the config.
    pub config: ImageConfig,
    /// Layers, lowest first.
    pub layers: Vec<Layer>,
}

/// The run settings of an image's config.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageConfig {
    /// `User`, as written (`name`, `uid`, `uid:gid`, ...).
    pub user: Option<String>,
    /// `WorkingDir`.
    pub workdir: Option<String>,
    /// `Env`, split at the first `=`.
    pub env: Vec<(String, String)>,
    /// `Entrypoint`.
    pub entrypoint: Vec<String>,
    /// `Cmd`.
    pub cmd: Vec<String>,
}

/// One layer blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layer {
    /// Digest of the blob as stored (compressed, if it is).
    pub digest: Digest,
    /// Its media type (plain, gzip or zstd tar).
    pub media_type: String,
    /// Its size in bytes.
    pub size: u64,
}

/// What a pull or import is doing, for a progress bar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Fetching or reading the manifest (or index).
    Manifest,
    /// Fetching or reading the config.
    Config,
    /// Transferring a layer; `done` grows towards `total`.
    Layer,
    /// A blob was already in the cache; nothing transferred.
    Cached,
    /// A blob is complete and verified.
    Done,
}

/// One progress report.
#[derive(Debug, Clone)]
pub struct Progress {
    /// What is happening.
    pub phase: Phase,
    /// The blob it is about (empty while the manifest is being fetched by tag).
    pub digest: String,
    /// Bytes of this blob transferred so far.
    pub done: u64,
    /// Bytes of this blob in all (from its descriptor; 0 if unknown).
    pub total: u64,
}

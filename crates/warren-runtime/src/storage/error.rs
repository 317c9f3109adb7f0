//! The storage error and its I/O adapter.

use std::path::Path;

use warren_types::{ImageRef, SandboxId};

use crate::io_error::IoError;
use crate::tool::ToolError;

/// Storage failures.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// A filesystem operation on the data dir failed.
    #[error(transparent)]
    Io(#[from] IoError),
    /// A btrfs or mount tool failed.
    #[error(transparent)]
    Tool(#[from] ToolError),
    /// The image is not in the store.
    #[error("image {0} is not present; build it with `warren image build`")]
    ImageMissing(ImageRef),
    /// An image of that name already exists.
    #[error("image {0} already exists")]
    ImageExists(ImageRef),
    /// The sandbox has no root filesystem.
    #[error("sandbox {0} has no root filesystem")]
    NoRootfs(SandboxId),
    /// A volume id is not hex digits and `-`.
    #[error("{0:?} is not a valid volume id")]
    InvalidVolumeId(String),
    /// The volume already exists.
    #[error("volume {0} already exists")]
    VolumeExists(String),
    /// The volume does not exist.
    #[error("volume {0} does not exist")]
    NoVolume(String),
    /// A sandbox's rootfs already exists.
    #[error("a root filesystem for sandbox {0} already exists")]
    SandboxExists(SandboxId),
}

/// [`IoError::at`], for call sites whose result is a `StorageError` without a `?`.
pub(super) fn io_err(
    action: &'static str,
    path: &Path,
) -> impl FnOnce(std::io::Error) -> StorageError {
    let at = IoError::at(action, path);
    move |source| StorageError::Io(at(source))
}

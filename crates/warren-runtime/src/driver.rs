//! The jail driver's failures, and the seam's types it is driven through. The trait itself is
//! `warren_driver::Driver` (implemented for [`JailDriver`](crate::JailDriver) in `seam.rs`):
//! the control plane holds an `Arc<dyn Driver>` and never knows which tier it drives beyond
//! [`Tier`], which is always reported truthfully. A microVM driver will implement the same trait.

use warren_types::SandboxId;

pub use warren_driver::{SandboxHandle, SandboxSpec, Tier};

use crate::agent::AgentConnError;
use crate::cgroup::CgroupError;
use crate::io_error::IoError;
use crate::slots::SlotError;
use crate::storage::StorageError;

/// Driver failures.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// An image could not be pulled, read or unpacked; the reason is fit for a tenant.
    #[error("failed to build the image: {0}")]
    Image(String),
    /// Storage failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// cgroups failed.
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    /// No uid range left, or its bookkeeping failed.
    #[error(transparent)]
    Slot(#[from] SlotError),
    /// A helper binary is missing or unusable.
    #[error("{0}")]
    Binary(String),
    /// The jailer could not be run, fed its spec or waited for.
    #[error(transparent)]
    JailerSpawn(IoError),
    /// The jailer reported a failure.
    #[error("failed to build the jail: {0}")]
    Jail(String),
    /// The spec's volume mounts are unusable; the reason is fit for a tenant.
    #[error("{0}")]
    Volume(String),
    /// The agent could not be reached.
    #[error(transparent)]
    Agent(#[from] AgentConnError),
    /// A filesystem operation failed.
    #[error(transparent)]
    Io(#[from] IoError),
    /// The sandbox has no root filesystem to start from.
    #[error("sandbox {0} has no root filesystem")]
    NoStorage(SandboxId),
    /// Processes stayed alive after the kill.
    #[error("sandbox {0} did not stop")]
    StopTimeout(SandboxId),
    /// The sandbox's network link could not be made.
    #[error(transparent)]
    Network(#[from] warren_net::NetError),
    /// A vm-tier sandbox's guest did not come up; the reason is fit for a tenant.
    #[error("{0}")]
    VmBoot(String),
    /// A blocking task panicked or was cancelled.
    #[error("internal task failed")]
    Join(#[from] tokio::task::JoinError),
}

impl DriverError {
    /// What a tenant may be told about this failure: the kind of failure and the OS error, never
    /// a host path, a cgroup name or the jailer's own words (which name host paths). The full
    /// error goes to the daemon's log.
    pub fn public_reason(&self) -> String {
        match self {
            Self::Image(reason) => reason.clone(),
            Self::Storage(StorageError::ImageMissing(image)) => {
                format!("image {image} is not present")
            }
            Self::Storage(StorageError::Io(e)) => {
                format!("storage failed to {}: {}", e.action, e.os_reason())
            }
            Self::Storage(
                e @ (StorageError::InvalidVolumeId(_)
                | StorageError::VolumeExists(_)
                | StorageError::NoVolume(_)),
            ) => e.to_string(),
            Self::Storage(_) => "storage failed".into(),
            Self::Cgroup(CgroupError::Io(e)) => {
                format!("resource limits failed to {}: {}", e.action, e.os_reason())
            }
            Self::Cgroup(_) => "resource limits could not be applied".into(),
            Self::Slot(SlotError::Exhausted(_)) => "no free uid range on this host".into(),
            Self::Slot(_) => "failed to allocate a uid range".into(),
            Self::Binary(_) | Self::JailerSpawn(_) => {
                "the server's sandbox helpers are missing or unusable".into()
            }
            // What the tenant's rootfs put on a volume's mount path (its own path, no host's).
            Self::Jail(line) if line.starts_with(&volume_line()) => line
                .rsplit_once(" (")
                .map_or(line.as_str(), |(msg, _)| msg)
                .to_owned(),
            Self::Jail(_) => "failed to build the jail".into(),
            Self::Volume(reason) => reason.clone(),
            Self::Agent(_) => "the sandbox's agent did not answer".into(),
            Self::Io(e) => format!("failed to {}: {}", e.action, e.os_reason()),
            Self::NoStorage(_) => "the sandbox has no root filesystem".into(),
            Self::StopTimeout(_) => "the sandbox's processes did not stop".into(),
            Self::Network(_) => "the sandbox's network could not be set up".into(),
            Self::VmBoot(reason) => reason.clone(),
            Self::Join(_) => "internal task failed".into(),
        }
    }
}

/// How a jailer error line about a volume mount point starts.
fn volume_line() -> String {
    format!("failed to {}: ", warren_jail::VOLUME_MOUNT_POINT)
}

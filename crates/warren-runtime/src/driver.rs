//! The driver seam: how a sandbox is brought up and torn down. [`JailDriver`] is the namespace
//! jail; a microVM driver will implement the same trait, so control and api never know which
//! tier they are talking to beyond [`Tier`], which is always reported truthfully. [`FakeDriver`]
//! stands in for the jail in tests of the layers above and isolates nothing.

use std::future::Future;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use warren_types::{ImageRef, Limits, SandboxId};

use crate::agent::{AgentConn, AgentConnError};
use crate::cgroup::CgroupError;
use crate::fake::FakeDriver;
use crate::io_error::IoError;
use crate::jail_driver::JailDriver;
use crate::slots::SlotError;
use crate::storage::StorageError;

/// Isolation tier a sandbox runs under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    /// Linux namespaces, cgroups, seccomp and Landlock on the host kernel.
    Jail,
}

/// What to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxSpec {
    /// The new sandbox's id.
    pub id: SandboxId,
    /// Image its root filesystem is made from.
    pub image: ImageRef,
    /// Resource limits.
    pub limits: Limits,
}

/// A running sandbox, as the driver identifies it. Serializable so the control plane can persist
/// it and re-adopt the sandbox after a restart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxHandle {
    /// The sandbox's id.
    pub id: SandboxId,
    /// Its tier.
    pub tier: Tier,
    /// Host pid of its agent.
    pub pid: u32,
    /// The agent's start time (clock ticks since boot), so a recycled pid is never adopted.
    pub start_time: u64,
    /// Host path of the agent's socket.
    pub agent_socket: PathBuf,
    /// Its uid/gid range slot.
    pub slot: u32,
}

/// Driver failures.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
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
            Self::Storage(StorageError::ImageMissing(image)) => {
                format!("image {image} is not present")
            }
            Self::Storage(StorageError::Io(e)) => {
                format!("storage failed to {}: {}", e.action, e.os_reason())
            }
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
            Self::Jail(_) => "failed to build the jail".into(),
            Self::Agent(_) => "the sandbox's agent did not answer".into(),
            Self::Io(e) => format!("failed to {}: {}", e.action, e.os_reason()),
            Self::NoStorage(_) => "the sandbox has no root filesystem".into(),
            Self::StopTimeout(_) => "the sandbox's processes did not stop".into(),
            Self::Join(_) => "internal task failed".into(),
        }
    }
}

/// Brings sandboxes up and down.
pub trait Driver: Send + Sync {
    /// The tier this driver provides.
    fn tier(&self) -> Tier;
    /// Creates and starts a sandbox; returns once its agent accepts connections.
    fn create(
        &self,
        spec: &SandboxSpec,
    ) -> impl Future<Output = Result<SandboxHandle, DriverError>> + Send;
    /// Boots a stopped sandbox on its existing root filesystem (files and /tmp kept).
    fn start(
        &self,
        spec: &SandboxSpec,
    ) -> impl Future<Output = Result<SandboxHandle, DriverError>> + Send;
    /// Kills every process of the sandbox and frees its runtime resources, keeping its files.
    /// `handle` is `None` when the caller has lost it (the processes are then found by cgroup).
    fn stop(
        &self,
        id: &SandboxId,
        handle: Option<&SandboxHandle>,
    ) -> impl Future<Output = Result<(), DriverError>> + Send;
    /// Stops the sandbox and deletes its files. Idempotent.
    fn destroy(
        &self,
        id: &SandboxId,
        handle: Option<&SandboxHandle>,
    ) -> impl Future<Output = Result<(), DriverError>> + Send;
    /// Whether the sandbox has a root filesystem (so it can be started).
    fn has_storage(&self, id: &SandboxId) -> bool;
    /// Whether sandboxes can be created from this image.
    fn has_image(&self, image: &ImageRef) -> bool;
    /// Frees every resource (processes, cgroups, files, uid ranges) of sandboxes not in `keep`.
    /// Returns the ids it removed; one that fails is logged and left for the next gc.
    fn gc(
        &self,
        keep: &std::collections::HashSet<SandboxId>,
    ) -> impl Future<Output = Result<Vec<SandboxId>, DriverError>> + Send;
    /// Whether the sandbox's agent is the process the handle names and is alive.
    fn is_running(&self, handle: &SandboxHandle) -> bool;
    /// Connects to the sandbox's agent.
    fn connect(
        &self,
        handle: &SandboxHandle,
    ) -> impl Future<Output = Result<AgentConn, DriverError>> + Send;
}

/// Every driver this build has, behind one type, so the control plane holds one driver without
/// being generic over it. The microVM driver becomes a second variant.
#[derive(Debug, Clone)]
pub enum AnyDriver {
    /// The namespace jail.
    Jail(JailDriver),
    /// The in-memory driver for tests of the layers above; it isolates nothing.
    Fake(FakeDriver),
}

impl AnyDriver {
    /// Whether sandboxes can be made from `image` now, and if not, why (the default image may
    /// be being built in the background).
    pub fn image_status(&self, image: &ImageRef) -> crate::image::ImageStatus {
        match self {
            Self::Jail(d) => d.storage().image_status(image),
            Self::Fake(d) => d.image_status(image),
        }
    }

    /// Times the kernel's OOM killer fired inside the sandbox's memory limit.
    pub fn oom_kills(&self, id: &SandboxId) -> Result<u64, DriverError> {
        match self {
            Self::Jail(d) => d.oom_kills(id),
            Self::Fake(d) => d.oom_kills(id),
        }
    }
}

impl Driver for AnyDriver {
    fn tier(&self) -> Tier {
        match self {
            Self::Jail(d) => d.tier(),
            Self::Fake(d) => d.tier(),
        }
    }

    async fn create(&self, spec: &SandboxSpec) -> Result<SandboxHandle, DriverError> {
        match self {
            Self::Jail(d) => d.create(spec).await,
            Self::Fake(d) => d.create(spec).await,
        }
    }

    async fn start(&self, spec: &SandboxSpec) -> Result<SandboxHandle, DriverError> {
        match self {
            Self::Jail(d) => d.start(spec).await,
            Self::Fake(d) => d.start(spec).await,
        }
    }

    async fn stop(
        &self,
        id: &SandboxId,
        handle: Option<&SandboxHandle>,
    ) -> Result<(), DriverError> {
        match self {
            Self::Jail(d) => d.stop(id, handle).await,
            Self::Fake(d) => d.stop(id, handle).await,
        }
    }

    async fn destroy(
        &self,
        id: &SandboxId,
        handle: Option<&SandboxHandle>,
    ) -> Result<(), DriverError> {
        match self {
            Self::Jail(d) => d.destroy(id, handle).await,
            Self::Fake(d) => d.destroy(id, handle).await,
        }
    }

    fn has_storage(&self, id: &SandboxId) -> bool {
        match self {
            Self::Jail(d) => d.has_storage(id),
            Self::Fake(d) => d.has_storage(id),
        }
    }

    fn has_image(&self, image: &ImageRef) -> bool {
        match self {
            Self::Jail(d) => d.has_image(image),
            Self::Fake(d) => d.has_image(image),
        }
    }

    async fn gc(
        &self,
        keep: &std::collections::HashSet<SandboxId>,
    ) -> Result<Vec<SandboxId>, DriverError> {
        match self {
            Self::Jail(d) => d.gc(keep).await,
            Self::Fake(d) => d.gc(keep).await,
        }
    }

    fn is_running(&self, handle: &SandboxHandle) -> bool {
        match self {
            Self::Jail(d) => d.is_running(handle),
            Self::Fake(d) => d.is_running(handle),
        }
    }

    async fn connect(&self, handle: &SandboxHandle) -> Result<AgentConn, DriverError> {
        match self {
            Self::Jail(d) => d.connect(handle).await,
            Self::Fake(d) => d.connect(handle).await,
        }
    }
}

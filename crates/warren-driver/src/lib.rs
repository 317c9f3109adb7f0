//! The driver seam: everything the control plane asks of a sandbox tier, as one object-safe
//! trait and the types it speaks. `warren-runtime` implements it for the namespace jail (a
//! microVM driver will be a second implementation); the control plane holds an
//! `Arc<dyn Driver>` and never sees the agent protocol, the jailer or the host's storage.
//!
//! Operations on a running sandbox (commands and files) are methods here too, taking the
//! sandbox's [`SandboxHandle`]: the control plane decides what to run, the driver only carries
//! it to the sandbox's agent and back.

mod command;
mod error;
#[cfg(feature = "fake")]
pub mod fake;
mod files;

use std::collections::HashSet;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;

use serde::{Deserialize, Serialize};
use warren_types::{ImageRef, Limits, SandboxId};

pub use command::{CommandChannel, CommandEvent, CommandInput, CommandOpen};
pub use error::{DriverError, FailureKind};
pub use files::{
    FIRST_COMMAND_FILES, FileRead, FileWrite, FileWriteEnd, GlobQuery, GrepQuery, ReadRange,
    SearchHit, SearchResult,
};
pub use warren_types::agent::{
    AgentError, CommandSummary, ErrorKind, ExecSpec, ExitReason, ExitStatus, FileInfo, FileKind,
    PtySize, Stream,
};

/// A byte stream both ways: what [`Driver::connect_port`] gives back.
pub trait AsyncReadWrite: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin {}

impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin> AsyncReadWrite for T {}

impl std::fmt::Debug for dyn AsyncReadWrite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PortStream")
    }
}

/// A TCP connection to a port on a sandbox's loopback, carried by its agent.
pub type PortStream = Box<dyn AsyncReadWrite>;

/// A boxed future, so the trait stays object-safe.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Isolation tier a sandbox runs under.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    /// Linux namespaces, cgroups, seccomp and Landlock on the host kernel.
    #[default]
    Jail,
    /// A virtual machine with its own kernel, whose monitor runs inside the jail.
    Vm,
}

impl Tier {
    /// The name the API reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Jail => "jail",
            Self::Vm => "vm",
        }
    }
}

impl std::fmt::Display for Tier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Tier {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "jail" => Ok(Self::Jail),
            "vm" => Ok(Self::Vm),
            other => Err(format!("unknown tier '{other}' (expected 'jail' or 'vm')")),
        }
    }
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
    /// PEM certificates the sandbox trusts besides its image's (its egress proxy CA).
    pub trust: String,
    /// Volumes mounted into the sandbox at each boot ([`Driver::create`] and [`Driver::start`]).
    pub volumes: Vec<VolumeMount>,
    /// The isolation tier it runs under ([`Driver::tier_support`] says which this host has).
    pub tier: Tier,
}

/// Whether `id` may name a volume: 1 to 64 ASCII hex digits and `-` (a UUID). Checked by
/// drivers before an id becomes part of a host path.
pub fn is_volume_id(id: &str) -> bool {
    (1..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')
}

/// A volume (made by [`Driver::create_volume`]) mounted into a sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeMount {
    /// The volume's id (a UUID: hex digits and `-`).
    pub volume_id: String,
    /// Absolute path in the sandbox it is mounted at. Missing directories on the way are
    /// created; `/`, `/proc`, `/sys`, `/dev`, `/tmp` and paths beneath them are refused, as are
    /// `..` components and a symlink or non-directory anywhere on the path (the boot fails).
    pub mount_path: String,
    /// Mounted read-only: writes in the sandbox fail with EROFS.
    pub read_only: bool,
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
    /// Environment every command in it gets (the egress proxy's address), under the caller's.
    #[serde(default)]
    pub env: Vec<(String, String)>,
}

/// Whether sandboxes can be made from an image now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageStatus {
    /// The image is present.
    Present,
    /// This process is building it (the default image, on a fresh data dir).
    Building,
    /// This process's last build failed, for the reason given (no host paths); it is retried.
    Failed(String),
    /// The image is absent and nothing here is building it.
    Missing,
}

/// Where a new image's files come from.
#[derive(Clone, PartialEq, Eq)]
pub enum ImageSource {
    /// An OCI registry reference (`python:3.12-slim`, `127.0.0.1:5000/team/app:1`), pulled
    /// with these credentials when given.
    Registry {
        /// The reference.
        reference: String,
        /// User name and password.
        credentials: Option<(String, String)>,
    },
    /// An OCI image layout directory or a `docker save` tarball on the host.
    Archive(std::path::PathBuf),
}

impl std::fmt::Debug for ImageSource {
    // The password must not reach logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Registry {
                reference,
                credentials,
            } => f
                .debug_struct("Registry")
                .field("reference", reference)
                .field(
                    "credentials",
                    &credentials.as_ref().map(|(u, _)| (u, "<redacted>")),
                )
                .finish(),
            Self::Archive(p) => f.debug_tuple("Archive").field(p).finish(),
        }
    }
}

/// What a built image says about itself and how to run it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BuiltImage {
    /// Digest of its manifest.
    pub digest: String,
    /// `USER`.
    pub user: Option<String>,
    /// `WORKDIR`.
    pub workdir: Option<String>,
    /// `ENV`.
    pub env: Vec<(String, String)>,
    /// `ENTRYPOINT`.
    pub entrypoint: Vec<String>,
    /// `CMD`.
    pub cmd: Vec<String>,
    /// Bytes of files unpacked.
    pub unpacked_bytes: u64,
}

/// Progress reports of an image build, one line each.
pub type BuildProgress = dyn Fn(String) + Send + Sync;

/// Brings sandboxes up and down, and carries operations to their agents.
pub trait Driver: Send + Sync + std::fmt::Debug {
    /// Whether this host can run sandboxes of `tier` now; when not, why (fit for a tenant:
    /// no host paths).
    fn tier_support(&self, tier: Tier) -> Result<(), String>;
    /// Creates and starts a sandbox; returns once its agent accepts connections.
    fn create<'a>(
        &'a self,
        spec: &'a SandboxSpec,
    ) -> BoxFuture<'a, Result<SandboxHandle, DriverError>>;
    /// Boots a stopped sandbox on its existing root filesystem (files and /tmp kept).
    fn start<'a>(
        &'a self,
        spec: &'a SandboxSpec,
    ) -> BoxFuture<'a, Result<SandboxHandle, DriverError>>;
    /// Kills every process of the sandbox and frees its runtime resources, keeping its files.
    /// `handle` is `None` when the caller has lost it (the processes are then found otherwise).
    fn stop<'a>(
        &'a self,
        id: &'a SandboxId,
        handle: Option<&'a SandboxHandle>,
    ) -> BoxFuture<'a, Result<(), DriverError>>;
    /// Stops the sandbox and deletes its files. Idempotent.
    fn destroy<'a>(
        &'a self,
        id: &'a SandboxId,
        handle: Option<&'a SandboxHandle>,
    ) -> BoxFuture<'a, Result<(), DriverError>>;
    /// Whether the sandbox has a root filesystem (so it can be started).
    fn has_storage(&self, id: &SandboxId) -> bool;
    /// Whether sandboxes can be created from `image` now, and if not, why.
    fn image_status(&self, image: &ImageRef) -> ImageStatus;
    /// Which copy of `image` its name holds: a value that changes whenever the image is replaced
    /// in place under its name (the default image, rebuilt from a newer recipe, by this process
    /// or another). Sandboxes made before a change have the old files: a warm pool drops them.
    fn image_generation(&self, image: &ImageRef) -> u64 {
        let _ = image;
        0
    }
    /// Copies a sandbox's files as they are now into a new read-only image, its `/tmp`
    /// excluded. The sandbox may be running: the copy is one atomic, copy-on-write snapshot.
    /// Fails if the image exists.
    fn capture<'a>(
        &'a self,
        id: &'a SandboxId,
        image: &'a ImageRef,
    ) -> BoxFuture<'a, Result<(), DriverError>>;
    /// Gives the new sandbox `dst` a copy-on-write copy of `src`'s files as they are now (its
    /// `/tmp` included), limited to `disk_bytes`; `dst` then boots with [`Driver::start`]. `src`
    /// may be running and is not touched.
    fn fork_storage<'a>(
        &'a self,
        src: &'a SandboxId,
        dst: &'a SandboxId,
        disk_bytes: u64,
    ) -> BoxFuture<'a, Result<(), DriverError>>;
    /// Deletes an image. Sandboxes made from it keep their files. A missing image is not an
    /// error.
    fn remove_image<'a>(&'a self, image: &'a ImageRef) -> BoxFuture<'a, Result<(), DriverError>>;
    /// Makes the read-only image `image` from `source`: pulled or read, every layer unpacked
    /// safely (no path escapes, no device nodes, no setuid bits), at most `max_bytes` of files.
    fn build_image<'a>(
        &'a self,
        image: &'a ImageRef,
        source: &'a ImageSource,
        max_bytes: u64,
        progress: &'a BuildProgress,
    ) -> BoxFuture<'a, Result<BuiltImage, DriverError>>;
    /// Deletes every snapshot image (name `snapshot/...`) not in `keep`; returns what it removed.
    fn gc_images<'a>(
        &'a self,
        keep: &'a HashSet<ImageRef>,
    ) -> BoxFuture<'a, Result<Vec<ImageRef>, DriverError>>;
    /// Creates the empty volume `id`, limited to `size_bytes`: a directory that outlives
    /// sandboxes and is mounted into them by [`SandboxSpec::volumes`]. Fails if it exists.
    fn create_volume<'a>(
        &'a self,
        id: &'a str,
        size_bytes: u64,
    ) -> BoxFuture<'a, Result<(), DriverError>>;
    /// Creates the volume `dst` as a copy-on-write copy of `src` as it is now (O(1) in its
    /// data), limited to `size_bytes`. `src` may be mounted and in use. Fails if `dst` exists.
    fn clone_volume<'a>(
        &'a self,
        src: &'a str,
        dst: &'a str,
        size_bytes: u64,
    ) -> BoxFuture<'a, Result<(), DriverError>>;
    /// Sets the limit of the volume `id` to `size_bytes` (below what it holds, further writes
    /// fail with EDQUOT; nothing is removed).
    fn resize_volume<'a>(
        &'a self,
        id: &'a str,
        size_bytes: u64,
    ) -> BoxFuture<'a, Result<(), DriverError>>;
    /// Deletes the volume `id` and everything in it. A missing volume is not an error. The
    /// caller should make sure no running sandbox mounts it: one that does is left with an
    /// empty directory there that takes no writes.
    fn delete_volume<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), DriverError>>;
    /// Bytes the volume holds, as its limit counts them; `None` if it does not exist or the
    /// figure is unavailable.
    fn volume_used_bytes(&self, id: &str) -> Option<u64>;
    /// Frees every resource of sandboxes not in `keep`; returns the ids it removed.
    fn gc<'a>(
        &'a self,
        keep: &'a HashSet<SandboxId>,
    ) -> BoxFuture<'a, Result<Vec<SandboxId>, DriverError>>;
    /// Whether the sandbox's agent is the process the handle names and is alive.
    fn is_running(&self, handle: &SandboxHandle) -> bool;
    /// Times the kernel's OOM killer fired inside the sandbox's memory limit, if known.
    fn oom_kills(&self, id: &SandboxId) -> Option<u64>;

    /// Starts a command, or attaches to one the agent holds.
    fn command<'a>(
        &'a self,
        handle: &'a SandboxHandle,
        open: CommandOpen,
    ) -> BoxFuture<'a, Result<CommandChannel, DriverError>>;
    /// The command sessions the agent holds.
    fn list_commands<'a>(
        &'a self,
        handle: &'a SandboxHandle,
    ) -> BoxFuture<'a, Result<Vec<CommandSummary>, DriverError>>;
    /// Opens a file for reading: its metadata, then its bytes in `range`.
    fn read_file<'a>(
        &'a self,
        handle: &'a SandboxHandle,
        range: ReadRange,
    ) -> BoxFuture<'a, Result<FileRead, DriverError>>;
    /// Opens a file for writing; nothing replaces the target until [`FileWrite::commit`].
    fn write_file<'a>(
        &'a self,
        handle: &'a SandboxHandle,
        path: String,
        user: Option<String>,
    ) -> BoxFuture<'a, Result<FileWrite, DriverError>>;
    /// A directory's entries (`true` when it held more than were returned).
    fn list_dir<'a>(
        &'a self,
        handle: &'a SandboxHandle,
        path: String,
    ) -> BoxFuture<'a, Result<(Vec<FileInfo>, bool), DriverError>>;
    /// Paths matching a glob, found inside the sandbox in one request.
    fn glob<'a>(
        &'a self,
        handle: &'a SandboxHandle,
        query: GlobQuery,
    ) -> BoxFuture<'a, Result<SearchResult, DriverError>>;
    /// Lines containing a string, found inside the sandbox in one request.
    fn grep<'a>(
        &'a self,
        handle: &'a SandboxHandle,
        query: GrepQuery,
    ) -> BoxFuture<'a, Result<SearchResult, DriverError>>;
    /// Opens a TCP connection to `127.0.0.1:port` inside the sandbox, through its agent (the
    /// host never enters the sandbox's network namespace). A port nothing listens on fails with
    /// an [`AgentError`] of kind [`ErrorKind::ConnectionRefused`].
    fn connect_port<'a>(
        &'a self,
        handle: &'a SandboxHandle,
        port: u16,
    ) -> BoxFuture<'a, Result<PortStream, DriverError>>;
}

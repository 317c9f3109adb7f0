//! Sandbox drivers and their storage: everything below the control plane that touches the host.
//!
//! Request path: `warren-control` → `warren_driver::Driver` (implemented here for
//! [`JailDriver`]) → `warren-jailer` → `warren-agent`.
//! The jail driver creates a btrfs snapshot for the root filesystem ([`storage`]), cgroups with
//! the limits ([`cgroup`]), a private uid range, then runs the jailer and talks to the agent it
//! leaves behind ([`agent`]).

pub mod agent;
mod binaries;
pub mod cgroup;
pub mod driver;
pub mod image;
mod io_error;
pub mod jail_driver;
pub mod lxcfs;
mod network;
mod placement;
mod seam;
mod slots;
pub mod storage;
mod tool;
pub mod vm;
mod vm_initrd;

pub use agent::{AgentConn, AgentConnError, AgentReader, AgentWriter};
pub use driver::{DriverError, SandboxHandle, SandboxSpec, Tier};
pub use io_error::IoError;
pub use jail_driver::{JailConfig, JailDriver};
pub use lxcfs::{LxcfsHandle, LxcfsSupervisor};
pub use slots::SlotError;
pub use storage::{BtrfsStorage, Storage, StorageError};
pub use tool::ToolError;
pub use warren_btrfs::QuotaMode;

//! The cgroup seam: the layouts' common trait and error.

use std::path::PathBuf;

use warren_types::Limits;

use crate::io_error::IoError;

/// cgroup failures.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// The host offers neither a usable v2 hierarchy nor the v1 controllers.
    #[error("no usable cgroup hierarchy: need v2 with memory, cpu and pids, or v1 controllers")]
    Unsupported,
    /// Reading or writing a cgroup file failed.
    #[error(transparent)]
    Io(#[from] IoError),
    /// Processes remained after the kill.
    #[error("cgroup {0} still has processes after kill")]
    Busy(String),
}

/// Which cgroup layout the host has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupVersion {
    /// Controllers on v1 hierarchies.
    V1,
    /// The unified hierarchy.
    V2,
}

/// A cgroup layout that can hold sandboxes.
pub trait CgroupBackend: Send + Sync + std::fmt::Debug {
    /// Which layout this is.
    fn version(&self) -> CgroupVersion;
    /// Creates the sandbox's cgroup(s) with limits, and where the layout has a cpuset
    /// controller confines it to `cpus` (empty: every CPU); returns the `cgroup.procs` files to
    /// join. LXCFS counts a sandbox's CPUs from its cpuset and its quota.
    fn create(
        &self,
        name: &str,
        limits: &Limits,
        cpus: &[u32],
    ) -> Result<Vec<PathBuf>, CgroupError>;
    /// Host pids in the sandbox's cgroup.
    fn pids(&self, name: &str) -> Result<Vec<u32>, CgroupError>;
    /// Kills every process in the cgroup if the layout can (v2 `cgroup.kill`); false otherwise.
    fn kill(&self, name: &str) -> Result<bool, CgroupError>;
    /// Times the kernel's OOM killer fired inside the cgroup.
    fn oom_kills(&self, name: &str) -> Result<u64, CgroupError>;
    /// Removes the cgroup(s). They must be empty.
    fn remove(&self, name: &str) -> Result<(), CgroupError>;
    /// Names of every sandbox cgroup, for garbage collection.
    fn list(&self) -> Result<Vec<String>, CgroupError>;
}

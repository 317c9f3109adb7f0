//! Resource bounds: what one sandbox may ask for (past it: 422 naming the limit) and what one
//! user and the whole server may hold (past it: 429 `QuotaExceeded`). The per-sandbox maxima
//! default to what the host has, so a request for more memory or CPUs than the machine owns is
//! refused instead of answered `ready` with a limit the kernel can never enforce.

use std::path::Path;

use warren_types::SandboxStatus;

use crate::error::ControlError;
use crate::store::SandboxRecord;

/// Bounds on sandboxes. `None` in a quota means unlimited.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceLimits {
    /// Most CPUs one sandbox may have (default: the host's CPUs).
    pub max_vcpus: u32,
    /// Most memory one sandbox may have (default: the host's memory).
    pub max_mem_bytes: u64,
    /// Most disk one sandbox may have; also bounded by the pool's free space at create.
    pub max_fs_capacity_bytes: u64,
    /// Process limit (cgroup `pids.max`) of every sandbox.
    pub pids: u32,
    /// Most sandboxes the server holds, in any state.
    pub max_sandboxes: usize,
    /// Most memory committed (the `mem_bytes` of running and booting sandboxes) server-wide.
    pub max_committed_mem_bytes: Option<u64>,
    /// Most sandboxes one user holds.
    pub user_max_sandboxes: Option<usize>,
    /// Most memory one user's running sandboxes may commit.
    pub user_max_mem_bytes: Option<u64>,
}

/// Default process limit of a sandbox.
pub const DEFAULT_PIDS: u32 = 4096;
/// Default overcommit of memory limits: limits are ceilings, not reservations, so the sum of
/// running sandboxes' limits may exceed the host's memory by this factor.
pub const DEFAULT_MEM_OVERCOMMIT: u64 = 4;

impl ResourceLimits {
    /// Defaults derived from this host: per-sandbox memory ≤ host memory, CPUs ≤ host CPUs,
    /// committed memory ≤ host memory × [`DEFAULT_MEM_OVERCOMMIT`].
    pub fn from_host() -> Self {
        let cpus = std::thread::available_parallelism()
            .map_or(1, |n| u32::try_from(n.get()).unwrap_or(u32::MAX));
        let mem = host_memory_bytes().unwrap_or(crate::config::defaults::MEM_BYTES);
        Self {
            max_vcpus: cpus,
            max_mem_bytes: mem,
            max_fs_capacity_bytes: crate::config::defaults::MAX_FS_CAPACITY_BYTES,
            pids: DEFAULT_PIDS,
            max_sandboxes: 2000,
            max_committed_mem_bytes: Some(mem.saturating_mul(DEFAULT_MEM_OVERCOMMIT)),
            user_max_sandboxes: None,
            user_max_mem_bytes: None,
        }
    }

    /// Refuses a sandbox shape above the per-sandbox maxima (422 with the limit). `free_disk`
    /// is the pool's free space, when known.
    pub fn check_shape(
        &self,
        vcpus: Option<u32>,
        mem: Option<u64>,
        fs: Option<u64>,
        free_disk: Option<u64>,
    ) -> Result<(), ControlError> {
        if let Some(v) = vcpus
            && v > self.max_vcpus
        {
            return Err(ControlError::invalid(format!(
                "vcpus {v} is above this server's limit of {} per sandbox",
                self.max_vcpus
            )));
        }
        if let Some(m) = mem
            && m > self.max_mem_bytes
        {
            return Err(ControlError::invalid(format!(
                "mem_bytes {m} is above this server's limit of {} per sandbox",
                self.max_mem_bytes
            )));
        }
        if let Some(f) = fs {
            let limit = free_disk.map_or(self.max_fs_capacity_bytes, |free| {
                free.min(self.max_fs_capacity_bytes)
            });
            if f > limit {
                return Err(ControlError::invalid(format!(
                    "fs_capacity_bytes {f} is above this server's limit of {limit} per sandbox \
                     (the per-sandbox maximum or the storage pool's free space)"
                )));
            }
        }
        Ok(())
    }

    /// Whether one more sandbox of `mem` bytes, created by `user`, fits the server's and the
    /// user's quotas given the sandboxes that exist now. Callers hold the admission lock
    /// across this check and the insert, so concurrent creates cannot both pass.
    pub fn admit(
        &self,
        existing: &[SandboxRecord],
        user: &str,
        mem: u64,
    ) -> Result<(), ControlError> {
        if existing.len() >= self.max_sandboxes {
            return Err(ControlError::Exhausted(format!(
                "sandbox limit reached: this server holds at most {} sandboxes",
                self.max_sandboxes
            )));
        }
        let mine = || existing.iter().filter(|r| r.created_by == user);
        if let Some(max) = self.user_max_sandboxes
            && mine().count() >= max
        {
            return Err(ControlError::Exhausted(format!(
                "sandbox quota reached: each user holds at most {max} sandboxes"
            )));
        }
        let committed = |it: &mut dyn Iterator<Item = &SandboxRecord>| -> u64 {
            it.filter(|r| holds_memory(r.status))
                .fold(0u64, |sum, r| sum.saturating_add(r.config.mem_bytes))
        };
        if let Some(max) = self.max_committed_mem_bytes
            && committed(&mut existing.iter()).saturating_add(mem) > max
        {
            return Err(ControlError::Exhausted(format!(
                "memory quota reached: running sandboxes may commit at most {max} bytes on this \
                 server"
            )));
        }
        if let Some(max) = self.user_max_mem_bytes
            && committed(&mut mine()).saturating_add(mem) > max
        {
            return Err(ControlError::Exhausted(format!(
                "memory quota reached: each user's running sandboxes may commit at most {max} bytes"
            )));
        }
        Ok(())
    }
}

/// Whether a sandbox in this state has its memory limit committed (it runs or is booting).
fn holds_memory(status: SandboxStatus) -> bool {
    matches!(status, SandboxStatus::Provisioning | SandboxStatus::Ready)
}

/// `MemTotal` of /proc/meminfo.
fn host_memory_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kib = text
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))?
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse::<u64>()
        .ok()?;
    kib.checked_mul(1024)
}

/// Free bytes of the filesystem at `path` available to root, if it can be read.
pub fn free_bytes(path: &Path) -> Option<u64> {
    let s = nix::sys::statvfs::statvfs(path).ok()?;
    s.blocks_free().checked_mul(s.fragment_size())
}

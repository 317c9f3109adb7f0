//! Resource bounds: what one sandbox may ask for (past it: 422 naming the limit) and what one
//! user and the whole server may hold (past it: 429 `QuotaExceeded`). The per-sandbox maxima
//! default to what the host has, so a request for more memory or CPUs than the machine owns is
//! refused instead of answered `ready` with a limit the kernel can never enforce.

use std::path::Path;

use crate::error::ControlError;
pub use crate::store::Held;

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
    /// Host memory a new sandbox must leave available (`MemAvailable`); default: the lesser of
    /// [`MEM_FLOOR_BYTES`] and 2 % of the host.
    pub reserve_mem_bytes: Option<u64>,
    /// Free disk a new sandbox must leave in the storage pool.
    pub reserve_disk_bytes: u64,
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
            reserve_mem_bytes: None,
            reserve_disk_bytes: DISK_FLOOR_BYTES,
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

    /// Whether one more sandbox of `mem` bytes fits the server's and its creator's quotas,
    /// given what is `held` now (by everyone, and by that creator). Callers hold the admission
    /// lock across this check and the insert, so concurrent creates cannot both pass.
    pub fn admit(&self, held: &Held, mem: u64) -> Result<(), ControlError> {
        self.admit_count(held)?;
        self.admit_memory(held, mem)
    }

    /// [`Self::admit`]'s sandbox counts alone.
    pub fn admit_count(&self, held: &Held) -> Result<(), ControlError> {
        if held.sandboxes >= self.max_sandboxes {
            return Err(ControlError::Exhausted(format!(
                "sandbox limit reached: this server holds at most {} sandboxes",
                self.max_sandboxes
            )));
        }
        if let Some(max) = self.user_max_sandboxes
            && held.user_sandboxes >= max
        {
            return Err(ControlError::Exhausted(format!(
                "sandbox quota reached: each user holds at most {max} sandboxes"
            )));
        }
        Ok(())
    }

    /// [`Self::admit`]'s memory quotas alone.
    pub fn admit_memory(&self, held: &Held, mem: u64) -> Result<(), ControlError> {
        if let Some(max) = self.max_committed_mem_bytes
            && held.committed_mem.saturating_add(mem) > max
        {
            return Err(ControlError::Exhausted(format!(
                "memory quota reached: running sandboxes may commit at most {max} bytes on this \
                 server"
            )));
        }
        if let Some(max) = self.user_max_mem_bytes
            && held.user_committed_mem.saturating_add(mem) > max
        {
            return Err(ControlError::Exhausted(format!(
                "memory quota reached: each user's running sandboxes may commit at most {max} bytes"
            )));
        }
        Ok(())
    }

    /// Whether the server has room for one more sandbox of `mem` bytes beside what is `held`
    /// and `pooled` warm-pool sandboxes committing `pooled_mem` (server-wide limits only:
    /// pooled sandboxes belong to no user).
    pub(crate) fn room(
        &self,
        held: &Held,
        pooled: usize,
        pooled_mem: u64,
        mem: u64,
    ) -> Result<(), ControlError> {
        if held.sandboxes.saturating_add(pooled) >= self.max_sandboxes {
            return Err(ControlError::Exhausted(format!(
                "sandbox limit reached: this server holds at most {} sandboxes, warm pools \
                 included",
                self.max_sandboxes
            )));
        }
        let committed = held
            .committed_mem
            .saturating_add(pooled_mem)
            .saturating_add(mem);
        if let Some(max) = self.max_committed_mem_bytes
            && committed > max
        {
            return Err(ControlError::Exhausted(format!(
                "memory quota reached: sandboxes may commit at most {max} bytes on this \
                 server, warm pools included"
            )));
        }
        Ok(())
    }
}

/// What the host has left, read when a sandbox is about to be made: each figure past its
/// floor refuses the create with 503 naming it (quotas above answer 429).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostReadings {
    /// `MemAvailable`.
    pub mem_available: Option<u64>,
    /// `MemTotal`.
    pub mem_total: Option<u64>,
    /// Free bytes of the storage pool.
    pub disk_free: Option<u64>,
    /// Threads on the host.
    pub threads: Option<u64>,
    /// The lesser of `pid_max` and `threads-max`.
    pub max_threads: Option<u64>,
    /// The daemon's open file descriptors.
    pub open_fds: Option<u64>,
    /// The daemon's `nofile` limit.
    pub max_fds: Option<u64>,
}

/// Host memory a create leaves free by default: this many bytes or 2 % of the host, the lesser.
pub const MEM_FLOOR_BYTES: u64 = 512 << 20;
/// Disk a create leaves free in the storage pool by default.
pub const DISK_FLOOR_BYTES: u64 = 1 << 30;
/// Descriptors kept for the API's connections and the daemon's own files: a create that would
/// leave fewer is refused.
pub const FD_FLOOR: u64 = 2048;
/// Share of the host's thread limit sandboxes may bring it to.
const THREADS_PERCENT: u64 = 90;

impl HostReadings {
    /// This host now, for a daemon whose storage pool is at `pool`.
    pub fn read(pool: &Path) -> Self {
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let field = |name: &str| meminfo_field(&meminfo, name);
        let read_u64 = |path: &str| {
            std::fs::read_to_string(path)
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
        };
        let threads = std::fs::read_to_string("/proc/loadavg").ok().and_then(|s| {
            s.split_whitespace()
                .nth(3)?
                .split('/')
                .nth(1)?
                .parse::<u64>()
                .ok()
        });
        let max_threads = match (
            read_u64("/proc/sys/kernel/pid_max"),
            read_u64("/proc/sys/kernel/threads-max"),
        ) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let open_fds = std::fs::read_dir("/proc/self/fd")
            .ok()
            .map(|d| d.count() as u64);
        let max_fds = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
            .ok()
            .map(|(soft, _)| soft);
        Self {
            mem_available: field("MemAvailable:"),
            mem_total: field("MemTotal:"),
            disk_free: free_bytes(pool),
            threads,
            max_threads,
            open_fds,
            max_fds,
        }
    }

    /// Refuses a new sandbox when a resource is past its floor, naming it (503).
    pub fn check(&self, limits: &ResourceLimits) -> Result<(), ControlError> {
        let full = |what: String| {
            Err(ControlError::Unavailable(format!(
                "host capacity reached: {what}; running sandboxes are unaffected, retry after \
                 some are stopped or deleted"
            )))
        };
        if let (Some(avail), Some(total)) = (self.mem_available, self.mem_total) {
            let floor = limits
                .reserve_mem_bytes
                .unwrap_or_else(|| MEM_FLOOR_BYTES.min(total / 50));
            if avail < floor {
                return full(format!(
                    "host memory ({} MiB available, {} MiB kept free)",
                    avail >> 20,
                    floor >> 20
                ));
            }
        }
        if let Some(free) = self.disk_free
            && free < limits.reserve_disk_bytes
        {
            return full(format!(
                "disk ({} MiB free in the storage pool, {} MiB kept free)",
                free >> 20,
                limits.reserve_disk_bytes >> 20
            ));
        }
        if let (Some(n), Some(max)) = (self.threads, self.max_threads)
            && n.saturating_mul(100) >= max.saturating_mul(THREADS_PERCENT)
        {
            return full(format!("processes ({n} threads on the host, limit {max})"));
        }
        if let (Some(open), Some(max)) = (self.open_fds, self.max_fds)
            && open.saturating_add(FD_FLOOR) > max
        {
            return full(format!(
                "file descriptors (the daemon holds {open} of its {max})"
            ));
        }
        Ok(())
    }
}

fn meminfo_field(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name))?
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse::<u64>()
        .ok()?
        .checked_mul(1024)
}

/// `MemTotal` of /proc/meminfo.
fn host_memory_bytes() -> Option<u64> {
    meminfo_field(&std::fs::read_to_string("/proc/meminfo").ok()?, "MemTotal:")
}

/// Free bytes of the filesystem at `path` available to root, if it can be read.
pub fn free_bytes(path: &Path) -> Option<u64> {
    let s = nix::sys::statvfs::statvfs(path).ok()?;
    s.blocks_free().checked_mul(s.fragment_size())
}

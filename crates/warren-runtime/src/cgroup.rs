//! Per-sandbox cgroups: memory, CPU and pids limits behind one trait, on cgroup v1 (and the v1
//! hybrid layout, where v2 is mounted with no controllers) and on pure or controller-bearing v2.
//! Where the host has the v1 `blkio` or the v2 `io` controller, each sandbox also gets a block
//! I/O throttle ([`IoLimits`]) on the device behind the pool (for a loop-backed pool, the loop
//! device). Where the host has cpuset (and, on v1, a cpuacct of its own), each sandbox gets those
//! too, under the same name as its cpu cgroup: its cpuset holds the CPUs it is pinned to, and
//! LXCFS reads a sandbox's CPU count and usage at that path.
//!
//! The v1 gap (SECURITY.md §6 row 42): v1 charges a bio to the cgroup of the task that submits
//! it. Reads, direct I/O and what a sandbox's own `fsync`/`sync_file_range` writes back are
//! throttled; buffered writes that the kernel's flusher threads write back later are charged to
//! the root cgroup and are not. Only v2, with memory and io in the same hierarchy, attributes
//! writeback to the cgroup that dirtied the pages. On v1 the memory limit bounds how much a
//! sandbox can have dirty at once, not how fast it reaches the disk.
//!
//! Written by hand rather than with cgroups-rs: the runtime needs three limits, a member list, an
//! OOM counter and removal, and it must pick the hierarchy itself on hybrid hosts (v2 only when
//! the unified mount actually carries the controllers). That is a few file writes per sandbox.

mod backend;
mod detect;
mod files;
mod io;
#[cfg(test)]
mod tests;
mod v1;
mod v2;

pub use backend::{CgroupBackend, CgroupError, CgroupVersion};
pub use detect::{detect, detect_with_io, favor_dynamic_changes};
pub use io::{IoLimits, IoThrottle};

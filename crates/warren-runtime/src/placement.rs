//! What a sandbox is told about the host beyond its cgroups: the CPUs it is pinned to, whether
//! LXCFS's views go into its jail, and the volumes it mounts.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use warren_driver::SandboxSpec;
use warren_jail::JailVolume;
use warren_types::SandboxId;

use crate::driver::DriverError;
use crate::storage::BtrfsStorage;

/// Whether LXCFS answered at the last look: 0 before the first, then [`UP`] or [`DOWN`].
#[derive(Debug, Default)]
pub(crate) struct Seen(AtomicU8);

const UP: u8 = 1;
const DOWN: u8 = 2;

/// The LXCFS mount to give the sandbox: `configured` if it answers now. A missing LXCFS is
/// logged when first noticed and again once it is back, never failed on.
pub(crate) async fn lxcfs_for(
    configured: Option<&Path>,
    seen: &Seen,
    id: &SandboxId,
) -> Option<PathBuf> {
    let mount = configured?;
    let alive = crate::lxcfs::is_alive_within(mount, Duration::from_secs(1)).await;
    let now = if alive { UP } else { DOWN };
    let before = seen.0.swap(now, Ordering::Relaxed);
    if before != now {
        if alive {
            tracing::info!(sandbox_id = %id, mount = %mount.display(), "lxcfs answers: sandboxes see their own memory, CPUs and uptime");
        } else {
            tracing::warn!(sandbox_id = %id, mount = %mount.display(), "lxcfs is not running: sandboxes start without it and see the host's memory, CPUs and uptime in /proc (`warren doctor` says why)");
        }
    }
    alive.then(|| mount.to_owned())
}

/// The CPUs a sandbox with `millicpus` is pinned to: as many as its limit rounds up to, from
/// those the daemon may use, starting at an offset set by its uid slot so sandboxes spread over
/// the host rather than all landing on CPU 0. Empty (no pinning) when it may use them all.
pub(crate) fn cpus_for(slot: u32, millicpus: u32) -> Vec<u32> {
    let Ok(mask) = rustix::thread::sched_getaffinity(None) else {
        return Vec::new();
    };
    let usable: Vec<u32> = (0..rustix::thread::CpuSet::MAX_CPU)
        .filter(|&c| mask.is_set(c))
        .filter_map(|c| u32::try_from(c).ok())
        .collect();
    pick(&usable, slot, millicpus)
}

fn pick(usable: &[u32], slot: u32, millicpus: u32) -> Vec<u32> {
    let want = usize::try_from(millicpus.div_ceil(1000).max(1)).unwrap_or(usize::MAX);
    if usable.is_empty() || want >= usable.len() {
        return Vec::new();
    }
    let start = usize::try_from(slot).unwrap_or(0).wrapping_mul(want) % usable.len();
    let mut cpus: Vec<u32> = (0..want)
        .map(|i| usable[(start + i) % usable.len()])
        .collect();
    cpus.sort_unstable();
    cpus
}

/// The spec's volumes as the jail takes them; each must exist, and the mount paths must be
/// ones the jail accepts (checked here too, for an error the tenant may read).
pub(crate) fn jail_volumes(
    storage: &BtrfsStorage,
    spec: &SandboxSpec,
) -> Result<Vec<JailVolume>, DriverError> {
    let mut volumes = Vec::with_capacity(spec.volumes.len());
    for m in &spec.volumes {
        volumes.push(JailVolume {
            host_path: storage.existing_volume(&m.volume_id)?,
            mount_path: m.mount_path.clone(),
            read_only: m.read_only,
        });
    }
    warren_jail::check_volumes(&volumes)
        .map_err(|problem| DriverError::Volume(format!("the volume mounts: {problem}")))?;
    Ok(volumes)
}

#[cfg(test)]
mod tests {
    use super::pick;

    #[test]
    fn sandboxes_get_their_rounded_up_cpus_spread_by_slot() {
        let host = [0, 1, 2, 3];
        assert_eq!(pick(&host, 0, 1000), vec![0]);
        assert_eq!(pick(&host, 1, 1000), vec![1]);
        assert_eq!(
            pick(&host, 5, 500),
            vec![1],
            "a fraction of a CPU counts as one"
        );
        assert_eq!(pick(&host, 1, 1500), vec![2, 3]);
        assert_eq!(pick(&host, 3, 2000), vec![2, 3]);
        assert_eq!(pick(&host, 2, 2000), vec![0, 1]);
        assert!(pick(&host, 0, 4000).is_empty(), "all of them: no pinning");
        assert!(pick(&host, 0, 9000).is_empty());
        assert!(pick(&[], 0, 1000).is_empty());
        assert_eq!(
            pick(&[2, 5], 1, 1000),
            vec![5],
            "the daemon's own mask, not 0..n"
        );
    }
}

//! Block I/O throttles: which device the pool is on, and the controllers' lines for it.

use std::path::{Path, PathBuf};

use super::files::mountinfo;

/// Block I/O throttle of each sandbox on one device, per direction; 0 leaves that value
/// unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IoLimits {
    /// Bytes per second read.
    pub read_bps: u64,
    /// Bytes per second written.
    pub write_bps: u64,
    /// Read operations per second.
    pub read_iops: u64,
    /// Write operations per second.
    pub write_iops: u64,
}

impl Default for IoLimits {
    /// Far above what a test or a build needs of a shared disk, and far below what one sandbox
    /// could take from the others on a fast one.
    fn default() -> Self {
        Self {
            read_bps: 512 << 20,
            write_bps: 512 << 20,
            read_iops: 20_000,
            write_iops: 20_000,
        }
    }
}

/// Where and how much block I/O each sandbox may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IoThrottle {
    /// `major:minor` of the whole disk behind the pool.
    pub device: (u32, u32),
    /// The limits.
    pub limits: IoLimits,
}

impl IoThrottle {
    /// The throttle for the block device behind the filesystem `path` is on, or `None` when
    /// that is not a block device the io controllers can throttle.
    pub fn for_path(path: &Path, limits: IoLimits) -> Option<Self> {
        let mounts = mountinfo().ok()?;
        let source = mount_source(&mounts, path)?;
        let device = whole_disk(block_device(Path::new(source))?);
        Some(Self { device, limits })
    }

    /// The v1 `blkio.throttle.*_device` files and their lines; unlimited values are left out.
    pub(super) fn v1_lines(&self) -> Vec<(&'static str, String)> {
        let (major, minor) = self.device;
        let l = self.limits;
        [
            ("blkio.throttle.read_bps_device", l.read_bps),
            ("blkio.throttle.write_bps_device", l.write_bps),
            ("blkio.throttle.read_iops_device", l.read_iops),
            ("blkio.throttle.write_iops_device", l.write_iops),
        ]
        .into_iter()
        .filter(|(_, v)| *v > 0)
        .map(|(file, v)| (file, format!("{major}:{minor} {v}")))
        .collect()
    }

    /// The v2 `io.max` line.
    pub(super) fn v2_line(&self) -> String {
        let (major, minor) = self.device;
        let l = self.limits;
        let v = |n: u64| {
            if n == 0 {
                "max".to_owned()
            } else {
                n.to_string()
            }
        };
        format!(
            "{major}:{minor} rbps={} wbps={} riops={} wiops={}",
            v(l.read_bps),
            v(l.write_bps),
            v(l.read_iops),
            v(l.write_iops)
        )
    }
}

/// The source of the mount `path` lies on: the deepest mount point containing it, the last
/// one mounted there (the visible one).
pub(super) fn mount_source<'a>(mounts: &'a str, path: &Path) -> Option<&'a str> {
    mounts
        .lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let point = Path::new(left.split(' ').nth(4)?);
            let source = right.split(' ').nth(1)?;
            path.starts_with(point)
                .then_some((point.components().count(), source))
        })
        .fold(
            None,
            |best: Option<(usize, &str)>, (depth, source)| match best {
                Some((d, _)) if d > depth => best,
                _ => Some((depth, source)),
            },
        )
        .map(|(_, source)| source)
}

/// `major:minor` of `path` if it is a block device node.
pub(super) fn block_device(path: &Path) -> Option<(u32, u32)> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let meta = std::fs::metadata(path).ok()?;
    if !meta.file_type().is_block_device() {
        return None;
    }
    let rdev = meta.rdev();
    Some((libc::major(rdev), libc::minor(rdev)))
}

/// The io controllers throttle whole disks only: a partition is replaced by its disk.
pub(super) fn whole_disk((major, minor): (u32, u32)) -> (u32, u32) {
    let sys = PathBuf::from(format!("/sys/dev/block/{major}:{minor}"));
    if !sys.join("partition").exists() {
        return (major, minor);
    }
    std::fs::read_to_string(sys.join("../dev"))
        .ok()
        .and_then(|d| {
            let (a, b) = d.trim().split_once(':')?;
            Some((a.parse().ok()?, b.parse().ok()?))
        })
        .unwrap_or((major, minor))
}

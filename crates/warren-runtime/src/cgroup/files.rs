//! Reading and writing cgroup files, and the mount table the layouts are found in.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use fs_err as fs;
use warren_types::Limits;

use super::backend::CgroupError;
use crate::io_error::IoError;

pub(super) fn mountinfo() -> Result<String, CgroupError> {
    fs::read_to_string("/proc/self/mountinfo").map_err(|e| {
        CgroupError::Io(IoError::at(
            "read the mount table",
            Path::new("/proc/self/mountinfo"),
        )(e))
    })
}

/// (mount point, fs type, superblock options) of each line of /proc/self/mountinfo:
/// `id parent maj:min root mountpoint opts [optional...] - fstype source superopts`.
pub(super) fn mount_entries(mounts: &str) -> impl Iterator<Item = (&str, &str, &str)> {
    mounts.lines().filter_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        let mount_point = left.split(' ').nth(4)?;
        let mut r = right.split(' ');
        let fstype = r.next()?;
        Some((mount_point, fstype, r.nth(1).unwrap_or_default()))
    })
}

/// All sandbox cgroups live under this name in each hierarchy.
pub(super) const PARENT: &str = "warren";

pub(super) fn write(path: &Path, value: &str) -> Result<(), CgroupError> {
    std::fs::write(path, value)
        .map_err(|source| CgroupError::Io(IoError::at("write the cgroup file", path)(source)))
}

pub(super) fn read(path: &Path) -> Result<String, CgroupError> {
    std::fs::read_to_string(path)
        .map_err(|source| CgroupError::Io(IoError::at("read the cgroup file", path)(source)))
}

pub(super) fn mkdir(path: &Path) -> Result<(), CgroupError> {
    match std::fs::create_dir(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(source) => Err(CgroupError::Io(IoError::at("create the cgroup", path)(
            source,
        ))),
    }
}

pub(super) fn rmdir(path: &Path) -> Result<(), CgroupError> {
    // An rmdir right after the last process exited can see EBUSY while the kernel finishes
    // tearing the tasks down; retry briefly.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match std::fs::remove_dir(path) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(2));
            }
            Err(source) => {
                return Err(CgroupError::Io(IoError::at("remove the cgroup", path)(
                    source,
                )));
            }
        }
    }
}

/// Members of a cgroup; a cgroup that does not exist has none.
pub(super) fn read_procs(procs: PathBuf) -> Result<Vec<u32>, CgroupError> {
    match std::fs::read_to_string(&procs) {
        Ok(t) => Ok(parse_pids(&t)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(source) => Err(CgroupError::Io(
            IoError::at("read the cgroup file", &procs)(source),
        )),
    }
}

pub(super) fn parse_pids(text: &str) -> Vec<u32> {
    text.lines().filter_map(|l| l.trim().parse().ok()).collect()
}

pub(super) fn list_children(dir: &Path) -> Result<Vec<String>, CgroupError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(CgroupError::Io(IoError::at("list the cgroups in", dir)(
                source,
            )));
        }
    };
    Ok(entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| e.file_name().into_string().ok())
        .collect())
}

pub(super) const CPU_PERIOD_US: u64 = 100_000;

pub(super) fn cpu_quota_us(limits: &Limits) -> u64 {
    (u64::from(limits.millicpus) * CPU_PERIOD_US / 1000).max(1000)
}

/// A CPU list as cpuset files take it: `0,2,3`.
pub(super) fn cpu_list(cpus: &[u32]) -> String {
    cpus.iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

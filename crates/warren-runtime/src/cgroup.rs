//! Per-sandbox cgroups: memory, CPU and pids limits behind one trait, on cgroup v1 (and the v1
//! hybrid layout, where v2 is mounted with no controllers) and on pure or controller-bearing v2.
//! Where the host has the v1 `blkio` or the v2 `io` controller, each sandbox also gets a block
//! I/O throttle ([`IoLimits`]) on the device behind the pool (for a loop-backed pool, the loop
//! device).
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

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use fs_err as fs;
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
    /// Creates the sandbox's cgroup(s) with limits; returns the `cgroup.procs` files to join.
    fn create(&self, name: &str, limits: &Limits) -> Result<Vec<PathBuf>, CgroupError>;
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
    fn v1_lines(&self) -> Vec<(&'static str, String)> {
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
    fn v2_line(&self) -> String {
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
fn mount_source<'a>(mounts: &'a str, path: &Path) -> Option<&'a str> {
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
fn block_device(path: &Path) -> Option<(u32, u32)> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let meta = std::fs::metadata(path).ok()?;
    if !meta.file_type().is_block_device() {
        return None;
    }
    let rdev = meta.rdev();
    Some((libc::major(rdev), libc::minor(rdev)))
}

/// The io controllers throttle whole disks only: a partition is replaced by its disk.
fn whole_disk((major, minor): (u32, u32)) -> (u32, u32) {
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

/// Picks the layout: v2 where the unified hierarchy carries memory, cpu and pids; v1 otherwise.
/// No I/O throttle; see [`detect_with_io`].
pub fn detect() -> Result<Box<dyn CgroupBackend>, CgroupError> {
    detect_with_io(None)
}

/// [`detect`], with each sandbox throttled by `io` where the layout has an io controller
/// (v1 `blkio`, v2 `io`); without one, sandboxes get no I/O limit and a warning says so.
pub fn detect_with_io(io: Option<IoThrottle>) -> Result<Box<dyn CgroupBackend>, CgroupError> {
    let mounts = mountinfo()?;
    let mut v1 = V1 {
        memory: None,
        cpu: None,
        pids: None,
        blkio: None,
        io: None,
    };
    let mut v2_mount = None;
    for (mount_point, fstype, superopts) in mount_entries(&mounts) {
        match fstype {
            "cgroup2" => v2_mount = Some(PathBuf::from(mount_point)),
            "cgroup" => {
                for opt in superopts.split(',') {
                    let slot = match opt {
                        "memory" => &mut v1.memory,
                        "cpu" => &mut v1.cpu,
                        "pids" => &mut v1.pids,
                        "blkio" => &mut v1.blkio,
                        _ => continue,
                    };
                    slot.get_or_insert_with(|| PathBuf::from(mount_point).join(PARENT));
                }
            }
            _ => {}
        }
    }
    if let Some(mount) = v2_mount {
        let controllers =
            std::fs::read_to_string(mount.join("cgroup.controllers")).unwrap_or_default();
        let has = |c: &str| controllers.split_whitespace().any(|x| x == c);
        if has("memory") && has("cpu") && has("pids") {
            let io = io.filter(|_| has("io"));
            warn_unthrottled(io.is_none() && !has("io"), "v2 io");
            return Ok(Box::new(V2 {
                root: mount.join(PARENT),
                io,
            }));
        }
    }
    if v1.memory.is_some() && v1.cpu.is_some() && v1.pids.is_some() {
        if v1.blkio.is_some() {
            v1.io = io;
        } else {
            warn_unthrottled(true, "v1 blkio");
        }
        return Ok(Box::new(v1));
    }
    Err(CgroupError::Unsupported)
}

fn warn_unthrottled(missing: bool, controller: &str) {
    if missing {
        tracing::warn!(
            controller,
            "no io controller: sandboxes get no block I/O limit"
        );
    }
}

fn mountinfo() -> Result<String, CgroupError> {
    fs::read_to_string("/proc/self/mountinfo").map_err(|e| {
        CgroupError::Io(IoError {
            action: "read",
            path: "/proc/self/mountinfo".into(),
            source: e,
        })
    })
}

/// (mount point, fs type, superblock options) of each line of /proc/self/mountinfo:
/// `id parent maj:min root mountpoint opts [optional...] - fstype source superopts`.
fn mount_entries(mounts: &str) -> impl Iterator<Item = (&str, &str, &str)> {
    mounts.lines().filter_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        let mount_point = left.split(' ').nth(4)?;
        let mut r = right.split(' ');
        let fstype = r.next()?;
        Some((mount_point, fstype, r.nth(1).unwrap_or_default()))
    })
}

/// Turns on `favordynmods` (below) through the cgroup2 mount, if there is one. A host-wide
/// setting: the driver makes it when it opens, `warren doctor` does not.
pub fn favor_dynamic_changes() {
    let Ok(mounts) = mountinfo() else { return };
    if let Some((mount, _, opts)) = mount_entries(&mounts).find(|(_, t, _)| *t == "cgroup2") {
        favor_dynmods(Path::new(mount), opts);
    }
}

/// Moving a process into a cgroup takes the kernel's global threadgroup lock for writing, which
/// by default waits for an RCU grace period whenever no migration happened in the last one:
/// ~10 ms of every create on an otherwise idle host. `favordynmods` (Linux 6.0+; global, though
/// set through the v2 mount) keeps that lock ready for writers, at the price of slightly slower
/// fork and exit. The reconfigure (fspick(2), which leaves the mount's own nosuid/nodev/noexec
/// alone) restates the superblock's other flags: cgroup2 clears those a reconfigure omits.
fn favor_dynmods(mount: &Path, superopts: &str) {
    let flags: Vec<&str> = superopts
        .split(',')
        .filter(|o| !o.is_empty() && *o != "rw" && *o != "ro")
        .collect();
    if flags.contains(&"favordynmods") {
        return;
    }
    let reconfigure = || -> rustix::io::Result<()> {
        let fs = rustix::mount::fspick(
            rustix::fs::CWD,
            mount,
            rustix::mount::FsPickFlags::FSPICK_CLOEXEC,
        )?;
        for flag in flags.iter().chain(&["favordynmods"]) {
            rustix::mount::fsconfig_set_flag(&fs, *flag)?;
        }
        rustix::mount::fsconfig_reconfigure(&fs)
    };
    match reconfigure() {
        Ok(()) => {
            tracing::info!(mount = %mount.display(), "enabled cgroup favordynmods for fast cgroup joins")
        }
        Err(e) => {
            tracing::debug!(error = %e, mount = %mount.display(), "cannot enable cgroup favordynmods; creates may wait for RCU")
        }
    }
}

/// All sandbox cgroups live under this name in each hierarchy.
const PARENT: &str = "warren";

fn write(path: &Path, value: &str) -> Result<(), CgroupError> {
    std::fs::write(path, value).map_err(|source| {
        CgroupError::Io(IoError {
            action: "write",
            path: path.to_owned(),
            source,
        })
    })
}

fn read(path: &Path) -> Result<String, CgroupError> {
    std::fs::read_to_string(path).map_err(|source| {
        CgroupError::Io(IoError {
            action: "read",
            path: path.to_owned(),
            source,
        })
    })
}

fn mkdir(path: &Path) -> Result<(), CgroupError> {
    match std::fs::create_dir(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(source) => Err(CgroupError::Io(IoError {
            action: "create",
            path: path.to_owned(),
            source,
        })),
    }
}

fn rmdir(path: &Path) -> Result<(), CgroupError> {
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
                return Err(CgroupError::Io(IoError {
                    action: "remove",
                    path: path.to_owned(),
                    source,
                }));
            }
        }
    }
}

/// Members of a cgroup; a cgroup that does not exist has none.
fn read_procs(procs: PathBuf) -> Result<Vec<u32>, CgroupError> {
    match std::fs::read_to_string(&procs) {
        Ok(t) => Ok(parse_pids(&t)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(source) => Err(CgroupError::Io(IoError {
            action: "read",
            path: procs,
            source,
        })),
    }
}

fn parse_pids(text: &str) -> Vec<u32> {
    text.lines().filter_map(|l| l.trim().parse().ok()).collect()
}

fn list_children(dir: &Path) -> Result<Vec<String>, CgroupError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(CgroupError::Io(IoError {
                action: "list",
                path: dir.to_owned(),
                source,
            }));
        }
    };
    Ok(entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| e.file_name().into_string().ok())
        .collect())
}

const CPU_PERIOD_US: u64 = 100_000;

fn cpu_quota_us(limits: &Limits) -> u64 {
    (u64::from(limits.millicpus) * CPU_PERIOD_US / 1000).max(1000)
}

#[derive(Debug)]
struct V1 {
    memory: Option<PathBuf>,
    cpu: Option<PathBuf>,
    pids: Option<PathBuf>,
    blkio: Option<PathBuf>,
    /// Set only when `blkio` is.
    io: Option<IoThrottle>,
}

impl V1 {
    /// The hierarchies sandboxes are placed in: blkio only when it throttles something.
    fn dirs(&self) -> impl Iterator<Item = &PathBuf> {
        let blkio = self.io.and(self.blkio.as_ref());
        [
            self.memory.as_ref(),
            self.cpu.as_ref(),
            self.pids.as_ref(),
            blkio,
        ]
        .into_iter()
        .flatten()
    }

    fn dir(base: &Option<PathBuf>, name: &str) -> Result<PathBuf, CgroupError> {
        base.as_ref()
            .map(|b| b.join(name))
            .ok_or(CgroupError::Unsupported)
    }
}

impl CgroupBackend for V1 {
    fn version(&self) -> CgroupVersion {
        CgroupVersion::V1
    }

    fn create(&self, name: &str, limits: &Limits) -> Result<Vec<PathBuf>, CgroupError> {
        for parent in self.dirs() {
            mkdir(parent)?;
        }
        let mem = Self::dir(&self.memory, name)?;
        let cpu = Self::dir(&self.cpu, name)?;
        let pids = Self::dir(&self.pids, name)?;
        for d in [&mem, &cpu, &pids] {
            mkdir(d)?;
        }
        write(
            &mem.join("memory.limit_in_bytes"),
            &limits.memory_bytes.to_string(),
        )?;
        // With swap accounting the memsw limit must equal the memory limit, or the sandbox
        // would swap past it; without swap accounting the file does not exist.
        let memsw = mem.join("memory.memsw.limit_in_bytes");
        if memsw.exists() {
            write(&memsw, &limits.memory_bytes.to_string())?;
        }
        let _ = write(&mem.join("memory.swappiness"), "0");
        write(&cpu.join("cpu.cfs_period_us"), &CPU_PERIOD_US.to_string())?;
        write(
            &cpu.join("cpu.cfs_quota_us"),
            &cpu_quota_us(limits).to_string(),
        )?;
        write(&pids.join("pids.max"), &limits.pids.to_string())?;
        let mut dirs = vec![mem, cpu, pids];
        if let Some(io) = self.io {
            let blkio = Self::dir(&self.blkio, name)?;
            mkdir(&blkio)?;
            for (file, line) in io.v1_lines() {
                write(&blkio.join(file), &line)?;
            }
            dirs.push(blkio);
        }
        Ok(dirs.iter().map(|d| d.join("cgroup.procs")).collect())
    }

    fn pids(&self, name: &str) -> Result<Vec<u32>, CgroupError> {
        let procs = Self::dir(&self.pids, name)?.join("cgroup.procs");
        read_procs(procs)
    }

    fn kill(&self, _name: &str) -> Result<bool, CgroupError> {
        Ok(false)
    }

    fn oom_kills(&self, name: &str) -> Result<u64, CgroupError> {
        let text = read(&Self::dir(&self.memory, name)?.join("memory.oom_control"))?;
        Ok(text
            .lines()
            .find_map(|l| l.strip_prefix("oom_kill "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0))
    }

    fn remove(&self, name: &str) -> Result<(), CgroupError> {
        for base in self.dirs() {
            rmdir(&base.join(name))?;
        }
        Ok(())
    }

    fn list(&self) -> Result<Vec<String>, CgroupError> {
        let mut names = Vec::new();
        for base in self.dirs() {
            for n in list_children(base)? {
                if !names.contains(&n) {
                    names.push(n);
                }
            }
        }
        Ok(names)
    }
}

#[derive(Debug)]
struct V2 {
    root: PathBuf,
    /// Set only when the hierarchy has the io controller.
    io: Option<IoThrottle>,
}

impl CgroupBackend for V2 {
    fn version(&self) -> CgroupVersion {
        CgroupVersion::V2
    }

    fn create(&self, name: &str, limits: &Limits) -> Result<Vec<PathBuf>, CgroupError> {
        mkdir(&self.root)?;
        let controllers = if self.io.is_some() {
            "+memory +cpu +pids +io"
        } else {
            "+memory +cpu +pids"
        };
        write(&self.root.join("cgroup.subtree_control"), controllers)?;
        let dir = self.root.join(name);
        mkdir(&dir)?;
        if let Some(io) = self.io {
            write(&dir.join("io.max"), &io.v2_line())?;
        }
        write(&dir.join("memory.max"), &limits.memory_bytes.to_string())?;
        let _ = write(&dir.join("memory.swap.max"), "0");
        write(
            &dir.join("cpu.max"),
            &format!("{} {CPU_PERIOD_US}", cpu_quota_us(limits)),
        )?;
        write(&dir.join("pids.max"), &limits.pids.to_string())?;
        Ok(vec![dir.join("cgroup.procs")])
    }

    fn pids(&self, name: &str) -> Result<Vec<u32>, CgroupError> {
        let procs = self.root.join(name).join("cgroup.procs");
        read_procs(procs)
    }

    fn kill(&self, name: &str) -> Result<bool, CgroupError> {
        let f = self.root.join(name).join("cgroup.kill");
        if !f.exists() {
            return Ok(false);
        }
        write(&f, "1")?;
        Ok(true)
    }

    fn oom_kills(&self, name: &str) -> Result<u64, CgroupError> {
        let text = read(&self.root.join(name).join("memory.events"))?;
        Ok(text
            .lines()
            .find_map(|l| l.strip_prefix("oom_kill "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0))
    }

    fn remove(&self, name: &str) -> Result<(), CgroupError> {
        rmdir(&self.root.join(name))
    }

    fn list(&self) -> Result<Vec<String>, CgroupError> {
        list_children(&self.root)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_quota_scales_with_millicpus() {
        let l = Limits {
            millicpus: 1500,
            ..Limits::default()
        };
        assert_eq!(cpu_quota_us(&l), 150_000);
        let tiny = Limits {
            millicpus: 1,
            ..Limits::default()
        };
        assert_eq!(
            cpu_quota_us(&tiny),
            1000,
            "the kernel rejects quotas under 1 ms"
        );
    }

    #[test]
    fn io_limits_become_the_controllers_lines() {
        let io = IoThrottle {
            device: (7, 0),
            limits: IoLimits {
                read_bps: 1 << 20,
                write_bps: 2 << 20,
                read_iops: 0,
                write_iops: 300,
            },
        };
        assert_eq!(
            io.v1_lines(),
            vec![
                ("blkio.throttle.read_bps_device", "7:0 1048576".to_owned()),
                ("blkio.throttle.write_bps_device", "7:0 2097152".to_owned()),
                ("blkio.throttle.write_iops_device", "7:0 300".to_owned()),
            ]
        );
        assert_eq!(
            io.v2_line(),
            "7:0 rbps=1048576 wbps=2097152 riops=max wiops=300"
        );
    }

    #[test]
    fn the_pool_device_is_the_source_of_the_last_mount_there() {
        let mounts = "\
29 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
80 29 0:45 / /var/lib/warren/fs rw,nosuid,nodev shared:40 - btrfs /dev/loop3 rw,space_cache=v2
81 80 0:46 / /var/lib/warren/fs rw shared:41 - btrfs /dev/loop4 rw
82 29 0:47 / /var/lib/warren/fsx rw shared:42 - tmpfs tmpfs rw";
        assert_eq!(
            mount_source(mounts, Path::new("/var/lib/warren/fs")),
            Some("/dev/loop4")
        );
        assert_eq!(
            mount_source(mounts, Path::new("/var/lib/warren/fs/sandboxes/x")),
            Some("/dev/loop4")
        );
        assert_eq!(
            mount_source(mounts, Path::new("/var/lib/warren")),
            Some("/dev/vda"),
            "not /var/lib/warren/fsx: whole components only"
        );
        assert_eq!(block_device(Path::new("/dev/null")), None, "a char device");
    }

    #[test]
    fn pids_parse_ignores_blank_lines() {
        assert_eq!(parse_pids("12\n\n34\n"), vec![12, 34]);
    }
}

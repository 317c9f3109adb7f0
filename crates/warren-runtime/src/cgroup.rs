//! Per-sandbox cgroups: memory, CPU and pids limits behind one trait, on cgroup v1 (and the v1
//! hybrid layout, where v2 is mounted with no controllers) and on pure or controller-bearing v2.
//!
//! Written by hand rather than with cgroups-rs: the runtime needs three limits, a member list, an
//! OOM counter and removal, and it must pick the hierarchy itself on hybrid hosts (v2 only when
//! the unified mount actually carries the controllers). That is a few file writes per sandbox.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use fs_err as fs;
use warren_types::Limits;

/// cgroup failures.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// The host offers neither a usable v2 hierarchy nor the v1 controllers.
    #[error("no usable cgroup hierarchy: need v2 with memory, cpu and pids, or v1 controllers")]
    Unsupported,
    /// Reading or writing a cgroup file failed.
    #[error("failed to {action} {path}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// Where.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
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

/// Picks the layout: v2 where the unified hierarchy carries memory, cpu and pids; v1 otherwise.
pub fn detect() -> Result<Box<dyn CgroupBackend>, CgroupError> {
    let mounts = mountinfo()?;
    let mut v1 = V1 {
        memory: None,
        cpu: None,
        pids: None,
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
            return Ok(Box::new(V2 {
                root: mount.join(PARENT),
            }));
        }
    }
    if v1.memory.is_some() && v1.cpu.is_some() && v1.pids.is_some() {
        return Ok(Box::new(v1));
    }
    Err(CgroupError::Unsupported)
}

fn mountinfo() -> Result<String, CgroupError> {
    fs::read_to_string("/proc/self/mountinfo").map_err(|e| CgroupError::Io {
        action: "read",
        path: "/proc/self/mountinfo".into(),
        source: e,
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
    std::fs::write(path, value).map_err(|source| CgroupError::Io {
        action: "write",
        path: path.to_owned(),
        source,
    })
}

fn read(path: &Path) -> Result<String, CgroupError> {
    std::fs::read_to_string(path).map_err(|source| CgroupError::Io {
        action: "read",
        path: path.to_owned(),
        source,
    })
}

fn mkdir(path: &Path) -> Result<(), CgroupError> {
    match std::fs::create_dir(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(source) => Err(CgroupError::Io {
            action: "create",
            path: path.to_owned(),
            source,
        }),
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
                return Err(CgroupError::Io {
                    action: "remove",
                    path: path.to_owned(),
                    source,
                });
            }
        }
    }
}

/// Members of a cgroup; a cgroup that does not exist has none.
fn read_procs(procs: PathBuf) -> Result<Vec<u32>, CgroupError> {
    match std::fs::read_to_string(&procs) {
        Ok(t) => Ok(parse_pids(&t)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(source) => Err(CgroupError::Io {
            action: "read",
            path: procs,
            source,
        }),
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
            return Err(CgroupError::Io {
                action: "list",
                path: dir.to_owned(),
                source,
            });
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
}

impl V1 {
    fn dirs(&self) -> impl Iterator<Item = &PathBuf> {
        [&self.memory, &self.cpu, &self.pids].into_iter().flatten()
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
        Ok([mem, cpu, pids]
            .iter()
            .map(|d| d.join("cgroup.procs"))
            .collect())
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
}

impl CgroupBackend for V2 {
    fn version(&self) -> CgroupVersion {
        CgroupVersion::V2
    }

    fn create(&self, name: &str, limits: &Limits) -> Result<Vec<PathBuf>, CgroupError> {
        mkdir(&self.root)?;
        write(
            &self.root.join("cgroup.subtree_control"),
            "+memory +cpu +pids",
        )?;
        let dir = self.root.join(name);
        mkdir(&dir)?;
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
    fn pids_parse_ignores_blank_lines() {
        assert_eq!(parse_pids("12\n\n34\n"), vec![12, 34]);
    }
}

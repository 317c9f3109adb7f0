//! cgroup v1: one hierarchy per controller.

use std::path::PathBuf;

use warren_types::Limits;

use super::backend::{CgroupBackend, CgroupError, CgroupVersion};
use super::files::{
    CPU_PERIOD_US, cpu_list, cpu_quota_us, list_children, mkdir, read, read_procs, rmdir, write,
};
use super::io::IoThrottle;

#[derive(Debug)]
pub(super) struct V1 {
    pub(super) memory: Option<PathBuf>,
    pub(super) cpu: Option<PathBuf>,
    pub(super) pids: Option<PathBuf>,
    pub(super) blkio: Option<PathBuf>,
    /// Optional: LXCFS reads a sandbox's CPU count from its cpuset cgroup (and the quota at the
    /// same path), its CPU usage from cpuacct.
    pub(super) cpuset: Option<PathBuf>,
    pub(super) cpuacct: Option<PathBuf>,
    /// Set only when `blkio` is.
    pub(super) io: Option<IoThrottle>,
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
            self.cpuset.as_ref(),
            self.cpuacct(),
        ]
        .into_iter()
        .flatten()
    }

    /// cpuacct when it is a hierarchy of its own (co-mounted with cpu it is the cpu one).
    fn cpuacct(&self) -> Option<&PathBuf> {
        self.cpuacct
            .as_ref()
            .filter(|d| Some(*d) != self.cpu.as_ref())
    }

    /// The sandbox's cpuset: `cpus`, or all of the parent's; the parent's memory nodes. A v1
    /// cpuset starts with no CPUs and no nodes (and takes no process) until both are written,
    /// the parent's included.
    fn create_cpuset(&self, name: &str, cpus: &[u32]) -> Result<Option<PathBuf>, CgroupError> {
        let Some(parent) = &self.cpuset else {
            return Ok(None);
        };
        mkdir(parent)?;
        for file in ["cpuset.cpus", "cpuset.mems"] {
            if read(&parent.join(file))?.trim().is_empty() {
                let root = parent.parent().unwrap_or(parent);
                write(&parent.join(file), read(&root.join(file))?.trim())?;
            }
        }
        let dir = parent.join(name);
        mkdir(&dir)?;
        let cpus = if cpus.is_empty() {
            read(&parent.join("cpuset.cpus"))?.trim().to_owned()
        } else {
            cpu_list(cpus)
        };
        write(&dir.join("cpuset.cpus"), &cpus)?;
        write(
            &dir.join("cpuset.mems"),
            read(&parent.join("cpuset.mems"))?.trim(),
        )?;
        Ok(Some(dir))
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

    fn create(
        &self,
        name: &str,
        limits: &Limits,
        cpus: &[u32],
    ) -> Result<Vec<PathBuf>, CgroupError> {
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
        dirs.extend(self.create_cpuset(name, cpus)?);
        if let Some(acct) = self.cpuacct() {
            mkdir(acct)?;
            let dir = acct.join(name);
            mkdir(&dir)?;
            dirs.push(dir);
        }
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

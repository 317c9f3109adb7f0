//! cgroup v2: the unified hierarchy.

use std::path::PathBuf;

use warren_types::Limits;

use super::backend::{CgroupBackend, CgroupError, CgroupVersion};
use super::files::{
    CPU_PERIOD_US, cpu_list, cpu_quota_us, list_children, mkdir, read, read_procs, rmdir, write,
};
use super::io::IoThrottle;

#[derive(Debug)]
pub(super) struct V2 {
    pub(super) root: PathBuf,
    /// Set only when the hierarchy has the io controller.
    pub(super) io: Option<IoThrottle>,
    /// Whether the hierarchy has the cpuset controller.
    pub(super) cpuset: bool,
}

impl CgroupBackend for V2 {
    fn version(&self) -> CgroupVersion {
        CgroupVersion::V2
    }

    fn create(
        &self,
        name: &str,
        limits: &Limits,
        cpus: &[u32],
    ) -> Result<Vec<PathBuf>, CgroupError> {
        mkdir(&self.root)?;
        let mut controllers = String::from("+memory +cpu +pids");
        if self.io.is_some() {
            controllers.push_str(" +io");
        }
        if self.cpuset {
            controllers.push_str(" +cpuset");
        }
        write(&self.root.join("cgroup.subtree_control"), &controllers)?;
        let dir = self.root.join(name);
        mkdir(&dir)?;
        if self.cpuset && !cpus.is_empty() {
            write(&dir.join("cpuset.cpus"), &cpu_list(cpus))?;
        }
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

//! What a workspace uses (`GET {B}/usage`, 0.15.1) and deleting many sandboxes at once
//! (`POST {B}/boxes/batch-delete`).

use warren_types::SandboxStatus;

use crate::control::Control;
use crate::error::ControlError;
use crate::store::Principal;

/// The figures of `GET {B}/usage` Warren has, for the caller's view of the workspace.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Usage {
    /// Sandboxes the caller sees, in any state.
    pub sandboxes_used: u64,
    /// Most sandboxes the server holds.
    pub sandboxes_limit: u64,
    /// Of those, running (or booting).
    pub sandbox_running_count: u64,
    /// Of those, stopped.
    pub sandbox_stopped_count: u64,
    /// CPUs of running sandboxes, in thousandths.
    pub cpu_used_millicores: u64,
    /// Most CPUs one sandbox may have, in thousandths.
    pub cpu_limit_millicores: u64,
    /// Memory limits of running sandboxes, summed.
    pub memory_used_bytes: u64,
    /// Most memory committed server-wide, when bounded.
    pub memory_limit_bytes: Option<u64>,
    /// Snapshots of the workspace, the default included.
    pub snapshots_count: u64,
}

/// The answer to a batch delete: names deleted, and those skipped with why.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BatchDeleted {
    /// Deleted (as given).
    pub deleted: Vec<String>,
    /// Not deleted: `(name, reason)`.
    pub skipped: Vec<(String, String)>,
}

/// Most names one batch delete takes.
pub const MAX_BATCH_DELETE: usize = 1000;

impl Control {
    /// The workspace's usage as the caller sees it.
    pub fn usage(&self, p: &Principal) -> Result<Usage, ControlError> {
        let boxes = self.list(p)?;
        let running =
            |s: SandboxStatus| matches!(s, SandboxStatus::Ready | SandboxStatus::Provisioning);
        let mut u = Usage {
            sandboxes_used: boxes.len() as u64,
            sandboxes_limit: self.cfg.limits.max_sandboxes as u64,
            cpu_limit_millicores: u64::from(self.cfg.limits.max_vcpus) * 1000,
            memory_limit_bytes: self.cfg.limits.max_committed_mem_bytes,
            snapshots_count: 1 + self.store.list_snapshots(Some(&p.workspace_id))?.len() as u64,
            ..Usage::default()
        };
        for b in &boxes {
            if running(b.status) {
                u.sandbox_running_count += 1;
                u.cpu_used_millicores += u64::from(b.config.vcpus) * 1000;
                u.memory_used_bytes += b.config.mem_bytes;
            } else if b.status == SandboxStatus::Stopped {
                u.sandbox_stopped_count += 1;
            }
        }
        Ok(u)
    }

    /// Deletes each named sandbox the caller may see; one that cannot be deleted is skipped
    /// with the reason and the rest go on.
    pub async fn delete_many(
        self: &std::sync::Arc<Self>,
        p: &Principal,
        names: &[String],
    ) -> Result<BatchDeleted, ControlError> {
        if names.len() > MAX_BATCH_DELETE {
            return Err(crate::config::ConfigError::Invalid(format!(
                "at most {MAX_BATCH_DELETE} names per batch delete, got {}",
                names.len()
            ))
            .into());
        }
        let mut out = BatchDeleted::default();
        for name in names {
            match self.delete(p, name).await {
                Ok(()) => out.deleted.push(name.clone()),
                Err(ControlError::NotFound(_)) => {
                    out.skipped.push((name.clone(), "not found".into()))
                }
                Err(e) => out.skipped.push((name.clone(), e.to_string())),
            }
        }
        Ok(out)
    }
}

//! Finding a sandbox ready for a data-plane operation: auto-wake of a stopped one, waiting for a
//! provisioning one, and noticing one whose agent died.

use std::sync::Arc;
use std::time::Duration;

use warren_driver::DriverError;
use warren_types::SandboxStatus;

use crate::control::{Control, visible};
use crate::error::ControlError;
use crate::state::Running;
use crate::store::{Principal, SandboxRecord, Store};

impl Control {
    /// The sandbox ready to serve a data-plane request: a stopped one is started (auto-wake) and
    /// a provisioning one awaited.
    pub async fn running(self: &Arc<Self>, id: &str) -> Result<Running, ControlError> {
        let guard = self.activity.hold(id);
        let deadline = Duration::from_secs(120);
        for _ in 0..3 {
            let rec = self.record(id)?;
            match (rec.status, rec.handle.clone()) {
                (SandboxStatus::Ready, Some(handle)) => {
                    return Ok(Running {
                        record: rec,
                        handle,
                        guard,
                    });
                }
                (SandboxStatus::Stopped, _) => {
                    self.start_id(id).await?;
                    self.wait_settled(id, deadline).await?;
                }
                (SandboxStatus::Provisioning, _) => {
                    self.wait_settled(id, deadline).await?;
                }
                (SandboxStatus::Failed, _) => {
                    return Err(ControlError::NotReady(format!(
                        "Sandbox '{}' failed: {}",
                        rec.name,
                        rec.status_message.unwrap_or_default()
                    )));
                }
                _ => {
                    return Err(ControlError::NotReady(format!(
                        "Sandbox '{}' is not ready",
                        rec.name
                    )));
                }
            }
        }
        Err(ControlError::NotReady(format!(
            "Sandbox '{id}' did not become ready"
        )))
    }

    /// A data-plane target the caller may use, found by sandbox id.
    pub async fn running_for(
        self: &Arc<Self>,
        p: &Principal,
        id: &str,
    ) -> Result<Running, ControlError> {
        let rec = self.visible_record(p, id)?;
        self.running(&rec.id).await
    }

    /// A sandbox the caller may use, by id, without waking it: requests are checked against
    /// it before anything starts, so a malformed one wakes nothing.
    pub(crate) fn visible_record(
        &self,
        p: &Principal,
        id: &str,
    ) -> Result<SandboxRecord, ControlError> {
        match self.store.get_sandbox(id)? {
            Some(r) if visible(p, &r) => Ok(r),
            _ => Err(ControlError::NotFound(format!("Sandbox '{id}' not found"))),
        }
    }

    /// Turns a driver failure of a data-plane operation into the caller's error. An agent that
    /// cannot be reached because the sandbox's processes died marks the sandbox stopped, so the
    /// next request wakes it again.
    pub(crate) async fn agent_failed(&self, running: &Running, e: DriverError) -> ControlError {
        if matches!(e, DriverError::Unreachable(_)) && !self.driver.is_running(&running.handle) {
            let _ = self
                .stop_id(
                    &running.record.id,
                    Some("the sandbox's processes exited".into()),
                )
                .await;
        }
        e.into()
    }

    /// Times the OOM killer fired in a running sandbox (0 when it cannot be read).
    pub fn oom_kills(&self, rec: &SandboxRecord) -> u64 {
        self.driver.oom_kills(&rec.runtime_id).unwrap_or(0)
    }
}

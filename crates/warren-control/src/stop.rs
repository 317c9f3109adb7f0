//! Stopping a sandbox: its processes end, its files stay.

use warren_types::SandboxStatus;

use std::sync::Arc;

use crate::control::{Control, detached, guard, now};
use crate::error::ControlError;
use crate::store::{Principal, SandboxRecord, Store};

impl Control {
    /// Stops a sandbox: processes end, files stay. Idempotent. Runs to its end (and its audit
    /// entry) even if the caller goes away.
    pub async fn stop(
        self: &Arc<Self>,
        p: &Principal,
        name_or_id: &str,
    ) -> Result<SandboxRecord, ControlError> {
        let rec = self.find(p, name_or_id)?;
        let (this, p) = (self.clone(), p.clone());
        detached(async move {
            let rec = this.stop_id(&rec.id, None).await?;
            this.audit(
                Some(&p),
                "sandbox.stop",
                Some(&rec.id),
                Some(rec.name.clone()),
            );
            Ok(rec)
        })
        .await
    }

    pub(crate) async fn stop_id(
        &self,
        id: &str,
        reason: Option<String>,
    ) -> Result<SandboxRecord, ControlError> {
        let lock = self.lock_for(id);
        let _held = lock.lock().await;
        let mut rec = self.record(id)?;
        // Stopping what is already down is a no-op; otherwise the lifecycle decides.
        if matches!(rec.status, SandboxStatus::Stopped | SandboxStatus::Failed) {
            return Ok(rec);
        }
        guard(&rec, SandboxStatus::Stopped)?;
        self.driver
            .stop(&rec.runtime_id, rec.handle.as_ref())
            .await?;
        if !rec.config.persistent {
            self.driver.destroy(&rec.runtime_id, None).await?;
        }
        rec.status = SandboxStatus::Stopped;
        rec.status_message = reason;
        rec.handle = None;
        self.track_slot(&rec.id, None);
        rec.stopped_at = Some(now());
        rec.updated_at = now();
        self.store.update_sandbox(&rec)?;
        self.changed();
        Ok(rec)
    }
}

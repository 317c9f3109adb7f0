//! Starting a stopped or failed sandbox (also what auto-wake does).

use std::sync::Arc;

use warren_types::SandboxStatus;

use crate::control::{Control, guard, now};
use crate::error::ControlError;
use crate::store::{Principal, SandboxRecord, Store};

impl Control {
    /// Starts a stopped (or failed) sandbox; returns at once in `provisioning`.
    pub async fn start(
        self: &Arc<Self>,
        p: &Principal,
        name_or_id: &str,
    ) -> Result<SandboxRecord, ControlError> {
        let rec = self.find(p, name_or_id)?;
        let rec = self.start_id(&rec.id).await?;
        self.audit(
            Some(p),
            "sandbox.start",
            Some(&rec.id),
            Some(rec.name.clone()),
        );
        Ok(rec)
    }

    pub(crate) async fn start_id(
        self: &Arc<Self>,
        id: &str,
    ) -> Result<SandboxRecord, ControlError> {
        let lock = self.lock_for(id);
        let rec = {
            let _held = lock.lock().await;
            let mut rec = self.record(id)?;
            // Starting what is up (or coming up) is a no-op; otherwise the lifecycle decides.
            if matches!(
                rec.status,
                SandboxStatus::Ready | SandboxStatus::Provisioning
            ) {
                return Ok(rec);
            }
            guard(&rec, SandboxStatus::Provisioning)?;
            let _admission = self
                .admission
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let others = self.store.held(&rec.created_by, Some(&rec.id))?;
            // Starting adds no sandbox, only committed memory: check with this one left out.
            let mut limits = self.cfg.limits.clone();
            limits.max_sandboxes = usize::MAX;
            limits.user_max_sandboxes = None;
            limits.admit(&others, rec.config.mem_bytes)?;
            rec.status = SandboxStatus::Provisioning;
            rec.status_message = None;
            rec.updated_at = now();
            self.store.update_sandbox(&rec)?;
            self.make_room(&limits, &others, rec.config.mem_bytes);
            rec
        };
        self.touch(id);
        self.changed();
        let this = self.clone();
        let id = id.to_owned();
        tokio::spawn(async move { this.boot(&id, false).await });
        Ok(rec)
    }
}

//! Deleting a sandbox and everything it holds. The deletion is committed once the record says
//! `deleting`; a cleanup that fails is retried by the sweeper with backoff.

use warren_driver::{DriverError, FailureKind};
use warren_types::SandboxStatus;

use std::sync::Arc;

use crate::control::{Control, detached, error_chain, guard, now};
use crate::error::ControlError;
use crate::store::{Principal, Store};

impl Control {
    /// Deletes a sandbox and everything it holds. Runs to its end (and its audit entry) even
    /// if the caller goes away.
    pub async fn delete(
        self: &Arc<Self>,
        p: &Principal,
        name_or_id: &str,
    ) -> Result<(), ControlError> {
        let rec = self.find(p, name_or_id)?;
        let (this, p) = (self.clone(), p.clone());
        detached(async move {
            this.delete_id(&rec.id).await?;
            this.audit(Some(&p), "sandbox.delete", Some(&rec.id), Some(rec.name));
            Ok(())
        })
        .await
    }

    pub(crate) async fn delete_id(&self, id: &str) -> Result<(), ControlError> {
        let lock = self.lock_for(id);
        let _held = lock.lock().await;
        let Some(mut rec) = self.store.get_sandbox(id)? else {
            return Ok(());
        };
        if rec.status != SandboxStatus::Deleting {
            guard(&rec, SandboxStatus::Deleting)?;
            rec.status = SandboxStatus::Deleting;
            rec.updated_at = now();
            self.store.update_sandbox(&rec)?;
            self.changed();
        }
        // The deletion is committed once the record says so: a cleanup that fails (a tenant's
        // doing, or the host's) is retried in the background, never handed back to the caller
        // or allowed to stop the sweeper or a restart.
        if let Err(e) = self
            .driver
            .destroy(&rec.runtime_id, rec.handle.as_ref())
            .await
        {
            let retry = self.pending_deletes.failed(id);
            tracing::warn!(
                sandbox = %rec.name,
                sandbox_id = %rec.id,
                runtime_id = %rec.runtime_id,
                error = %error_chain(&e),
                retry_in_s = retry.as_secs(),
                "sandbox cleanup failed; the deletion stays pending",
            );
            let message = format!("delete pending: {}; retrying", pending_reason(&e));
            if rec.status_message.as_deref() != Some(message.as_str()) {
                rec.status_message = Some(message);
                rec.updated_at = now();
                self.store.update_sandbox(&rec)?;
                self.changed();
            }
            return Ok(());
        }
        self.store.delete_sandbox(id)?;
        // Its service URL grants go with it (their tokens already fail: no sandbox).
        match self.store.delete_grants(id, None) {
            Ok(0) => {}
            Ok(_) => self.grant_changes.send_modify(|n| *n += 1),
            Err(e) => {
                tracing::warn!(sandbox = %id, error = %e, "failed to remove service URL grants");
            }
        }
        if let Some(egress) = &self.cfg.egress {
            egress.forget(id);
        }
        self.track_slot(id, None);
        self.pending_deletes.done(id);
        self.activity.forget(id);
        crate::state::lock(&self.locks).remove(id);
        self.changed();
        Ok(())
    }
}

/// Why a deletion is pending, in words the API may show: no host path, no raw errno text.
fn pending_reason(e: &DriverError) -> &'static str {
    match e.kind() {
        FailureKind::Storage => "the sandbox's files could not be removed yet",
        FailureKind::StopTimeout => "the sandbox's processes did not stop yet",
        FailureKind::Cgroup => "the sandbox's cgroup could not be removed yet",
        FailureKind::Slot => "the sandbox's user id range could not be released yet",
        FailureKind::Other => "the sandbox's resources could not be released yet",
    }
}

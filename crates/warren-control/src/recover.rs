//! Recovery after a restart: re-adopt what still runs, mark what died, finish deletions and
//! remove resources nothing refers to.

use std::collections::HashSet;
use std::sync::Arc;

use warren_types::SandboxStatus;

use crate::control::{Control, error_chain, now};
use crate::error::ControlError;
use crate::store::{SandboxRecord, Store};

impl Control {
    /// Re-adopts what still runs, marks what died, finishes deletions and removes resources
    /// nothing refers to. A sandbox that cannot be handled now is logged and left for the
    /// sweeper: the daemon starts regardless.
    pub(crate) async fn recover(self: &Arc<Self>) -> Result<(), ControlError> {
        let records = self.store.list_sandboxes(None)?;
        let mut keep = HashSet::new();
        for rec in &records {
            keep.insert(rec.runtime_id.clone());
            if let Err(e) = self.recover_one(rec).await {
                tracing::error!(sandbox = %rec.name, sandbox_id = %rec.id, runtime_id = %rec.runtime_id, status = %rec.status, error = %error_chain(&e), "failed to recover a sandbox; leaving it for the sweeper");
            }
            if rec.status == SandboxStatus::Deleting
                && matches!(self.store.get_sandbox(&rec.id), Ok(None))
            {
                keep.remove(&rec.runtime_id);
            }
        }
        self.recover_snapshots().await;
        match self.driver.gc(&keep).await {
            Ok(removed) if !removed.is_empty() => {
                tracing::info!(count = removed.len(), "removed orphaned sandboxes");
            }
            Ok(_) => {}
            Err(e) => {
                tracing::error!(error = %error_chain(&e), "failed to look for orphaned sandboxes");
            }
        }
        Ok(())
    }

    /// Builds this process did not finish failed with it; their archives, and images no
    /// snapshot record names (a deleted record, a reset database), are removed.
    async fn recover_snapshots(&self) {
        let records = match self.store.list_snapshots(None) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %error_chain(&e), "failed to read the snapshots");
                return;
            }
        };
        let mut keep = HashSet::new();
        for mut s in records {
            keep.insert(crate::snapshot::snapshot_image(&s.id));
            if s.status == crate::store::SnapshotStatus::Building {
                s.status = crate::store::SnapshotStatus::Failed;
                s.status_message =
                    Some("the server restarted during the build; build it again".into());
                s.updated_at = crate::control::now();
                if let Err(e) = self.store.put_snapshot(&s) {
                    tracing::error!(snapshot = %s.id, error = %error_chain(&e), "failed to mark an interrupted build failed");
                }
            }
        }
        // Archives spooled for imports: their builds, if any, were failed just above, and only
        // this daemon writes there. An upload cut short before it owned its file left one too.
        if let Ok(entries) = std::fs::read_dir(self.imports_dir()) {
            for entry in entries.flatten() {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        match self.driver.gc_images(&keep).await {
            Ok(gone) if !gone.is_empty() => {
                tracing::info!(
                    count = gone.len(),
                    "removed snapshot images no record names"
                );
            }
            Ok(_) => {}
            Err(e) => {
                tracing::error!(error = %error_chain(&e), "failed to look for orphaned snapshot images")
            }
        }
    }

    async fn recover_one(self: &Arc<Self>, rec: &SandboxRecord) -> Result<(), ControlError> {
        match rec.status {
            SandboxStatus::Ready | SandboxStatus::Provisioning => {
                if let Some(h) = &rec.handle
                    && rec.status == SandboxStatus::Ready
                    && self.driver.is_running(h)
                {
                    tracing::info!(sandbox = %rec.name, pid = h.pid, "re-adopted running sandbox");
                    self.track_slot(&rec.id, Some(h.slot));
                    self.touch(&rec.id);
                    return Ok(());
                }
                // Its processes ended (or its boot was cut short) while the daemon was down.
                let stopped = self.driver.stop(&rec.runtime_id, rec.handle.as_ref()).await;
                let mut r = rec.clone();
                r.handle = None;
                r.updated_at = now();
                if let Err(e) = &stopped {
                    tracing::error!(sandbox = %rec.name, runtime_id = %rec.runtime_id, error = %error_chain(e), "failed to stop a sandbox after restart");
                    r.status = SandboxStatus::Failed;
                    r.status_message =
                        Some("the sandbox could not be stopped after a restart".into());
                } else if self.driver.has_storage(&rec.runtime_id) {
                    r.status = SandboxStatus::Stopped;
                    r.stopped_at = Some(now());
                    r.status_message =
                        Some("the sandbox's processes ended while the daemon was down".into());
                } else {
                    r.status = SandboxStatus::Failed;
                    r.status_message = Some("the sandbox's root filesystem is missing".into());
                }
                tracing::warn!(sandbox = %rec.name, status = %r.status, "sandbox was not running after restart");
                self.store.update_sandbox(&r)?;
            }
            // Fails only on the store: a cleanup that fails leaves the record pending.
            SandboxStatus::Deleting => self.delete_id(&rec.id).await?,
            SandboxStatus::Stopped | SandboxStatus::Failed => {
                // A stop cut short by a crash leaves processes or cgroups behind.
                self.driver.stop(&rec.runtime_id, None).await?;
            }
        }
        Ok(())
    }
}

//! The sweeper: idle stop, delete after stop, finishing deletions that failed, and failing
//! boots a process abandoned.

use std::sync::Arc;
use std::time::Duration;

use warren_types::SandboxStatus;

use crate::control::{Control, error_chain};
use crate::error::ControlError;
use crate::store::{SandboxRecord, Store};

impl Control {
    /// Runs the sweeper until the process ends: idle stop, delete after stop, finishing deletes.
    pub async fn sweep_forever(self: Arc<Self>) {
        let mut tick = tokio::time::interval(self.cfg.sweep_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(e) = self.sweep_once().await {
                tracing::error!(error = %e, "sweep failed");
            }
        }
    }

    /// One sweep. A sandbox that fails is logged and the sweep goes on to the next; only a
    /// failure to read the records ends it.
    pub async fn sweep_once(&self) -> Result<(), ControlError> {
        self.parked.expire();
        for rec in self.store.list_sandboxes(None)? {
            if let Err(e) = self.sweep_one(&rec).await {
                tracing::error!(sandbox = %rec.name, sandbox_id = %rec.id, status = %rec.status, error = %error_chain(&e), "sweep of a sandbox failed");
            }
        }
        Ok(())
    }

    async fn sweep_one(&self, rec: &SandboxRecord) -> Result<(), ControlError> {
        match rec.status {
            SandboxStatus::Ready => {
                let ttl = rec.config.idle_ttl_seconds;
                let activity = self.activity.get(&rec.id);
                let idle = activity.is_some_and(|a| {
                    a.inflight == 0 && a.last.elapsed() >= Duration::from_secs(ttl)
                });
                if ttl > 0 && idle {
                    tracing::info!(sandbox = %rec.name, ttl, "stopping idle sandbox");
                    self.stop_id(&rec.id, Some(format!("stopped after {ttl} s idle")))
                        .await?;
                    self.audit_system(rec, "sandbox.idle_stop");
                } else if let Some(h) = &rec.handle
                    && !self.driver.is_running(h)
                {
                    tracing::warn!(sandbox = %rec.name, "sandbox's agent exited; marking stopped");
                    self.stop_id(&rec.id, Some("the sandbox's processes exited".into()))
                        .await?;
                }
            }
            SandboxStatus::Stopped => {
                let after = rec.config.delete_after_stop_seconds;
                let expired = rec
                    .stopped_at
                    .is_some_and(|t| t.elapsed().is_ok_and(|e| e >= Duration::from_secs(after)));
                if after > 0 && expired {
                    tracing::info!(sandbox = %rec.name, after, "deleting sandbox stopped too long");
                    self.delete_id(&rec.id).await?;
                    self.audit_system(rec, "sandbox.auto_delete");
                }
            }
            SandboxStatus::Deleting => {
                if self.pending_deletes.due(&rec.id) {
                    self.delete_id(&rec.id).await?;
                }
            }
            SandboxStatus::Provisioning => {
                if boot_looks_abandoned(rec) {
                    self.fail_abandoned_boot(&rec.id)?;
                }
            }
            SandboxStatus::Failed => {}
        }
        Ok(())
    }

    /// A boot runs under the sandbox's lock and takes seconds. A sandbox still provisioning
    /// long after, with its lock free in this process, was left by a process that went away
    /// mid-boot (a `warren run` killed, a boot that panicked): nothing would ever finish it.
    /// It is failed, so it can be started afresh or deleted, and counts as nothing booting.
    fn fail_abandoned_boot(&self, id: &str) -> Result<(), ControlError> {
        let lock = self.lock_for(id);
        let Ok(_held) = lock.try_lock() else {
            return Ok(());
        };
        // Read again under the lock: a boot may have finished or started since the sweep's read.
        let mut rec = self.record(id)?;
        if !boot_looks_abandoned(&rec) {
            return Ok(());
        }
        tracing::warn!(sandbox = %rec.name, sandbox_id = %rec.id, "a boot was abandoned mid-way; marking the sandbox failed");
        rec.status = SandboxStatus::Failed;
        rec.status_message = Some(
            "the boot did not finish: the process booting it went away; start or delete it".into(),
        );
        rec.handle = None;
        rec.updated_at = crate::control::now();
        self.store.update_sandbox(&rec)?;
        self.changed();
        Ok(())
    }
}

/// How long a sandbox may stay provisioning with no boot of this process on it before the
/// sweeper calls the boot abandoned: far beyond any boot (a jail boots in tens of
/// milliseconds, an emulated microVM in seconds), so a boot in another process is never cut.
const ABANDONED_BOOT: Duration = Duration::from_secs(600);

/// Whether `rec` has been provisioning for longer than any boot takes.
fn boot_looks_abandoned(rec: &SandboxRecord) -> bool {
    rec.status == SandboxStatus::Provisioning
        && rec.updated_at.elapsed().is_ok_and(|e| e >= ABANDONED_BOOT)
}

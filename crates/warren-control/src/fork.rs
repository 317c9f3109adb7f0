//! Forking a sandbox (a Warren extension): N new sandboxes that start from the parent's files
//! as they are now, each a copy-on-write copy (O(1) in the data), the parent untouched and
//! still running. The forks then diverge independently.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;

use warren_types::SandboxStatus;

use crate::config::{ConfigError, validate_name};
use crate::control::{Control, detached, new_record};
use crate::error::ControlError;
use crate::store::{Principal, SandboxRecord, Store};

/// Most forks one request may make.
pub const MAX_FORKS: u32 = 64;

/// A fork request.
#[derive(Debug, Clone, Default)]
pub struct ForkSandbox {
    /// How many forks; 1 when absent.
    pub count: Option<u32>,
    /// Their names, one per fork; generated (`<parent>-fork-xxxxxx`) when absent.
    pub names: Option<Vec<String>>,
}

impl Control {
    /// Forks a sandbox; returns the new sandboxes, booting (see [`Control::wait_ready`]).
    ///
    /// The work runs in a task of its own: a caller that goes away mid-request (a client
    /// disconnect drops the handler) leaves the forks to finish and boot, or to be rolled back,
    /// rather than records stranded half-made.
    pub async fn fork(
        self: &Arc<Self>,
        p: &Principal,
        parent: &str,
        req: ForkSandbox,
    ) -> Result<Vec<SandboxRecord>, ControlError> {
        let (this, p, parent) = (self.clone(), p.clone(), parent.to_owned());
        detached(async move { this.fork_detached(&p, &parent, req).await }).await
    }

    async fn fork_detached(
        self: &Arc<Self>,
        p: &Principal,
        parent: &str,
        req: ForkSandbox,
    ) -> Result<Vec<SandboxRecord>, ControlError> {
        let count = match (req.count, &req.names) {
            (Some(n), Some(names)) if names.len() != n as usize => {
                return Err(ConfigError::Invalid(format!(
                    "count is {n} but {} names were given",
                    names.len()
                ))
                .into());
            }
            (Some(n), _) => n,
            (None, Some(names)) => u32::try_from(names.len()).unwrap_or(u32::MAX),
            (None, None) => 1,
        };
        if count == 0 || count > MAX_FORKS {
            return Err(ConfigError::Invalid(format!(
                "count must be between 1 and {MAX_FORKS}, got {count}"
            ))
            .into());
        }
        for name in req.names.iter().flatten() {
            validate_name(name)?;
        }
        let parent = self.find(p, parent)?;
        // The parent's lock keeps it from being deleted or restarted while its files are copied.
        let lock = self.lock_for(&parent.id);
        let held = lock.lock().await;
        let parent = self.record(&parent.id)?;
        if parent.status == SandboxStatus::Deleting || !self.driver.has_storage(&parent.runtime_id)
        {
            return Err(ControlError::NotReady(format!(
                "sandbox '{}' has no files to fork (status {})",
                parent.name,
                parent.status.as_str()
            )));
        }
        // Admitted and named one by one, so each counts against the capacity the next is
        // admitted to; their files are then copied all at once: btrfs commits snapshots taken
        // together in one transaction, where one after another each waits for its own.
        let mut made = Vec::with_capacity(count as usize);
        for i in 0..count as usize {
            let name = req.names.as_ref().map(|n| n[i].clone());
            match self.admit_fork(p, &parent, name) {
                Ok(rec) => made.push(rec),
                Err(e) => {
                    drop(held);
                    // All or nothing: no copy has started, so the forks made so far are only
                    // records.
                    for rec in &made {
                        let _ = self.store.delete_sandbox(&rec.id);
                    }
                    return Err(e);
                }
            }
        }
        // Every copy runs to its end (each is a blocking task that a dropped future would not
        // stop) before any rollback looks at what is there.
        let copied = join_all(made.iter().map(|rec| {
            self.driver.fork_storage(
                &parent.runtime_id,
                &rec.runtime_id,
                rec.config.fs_capacity_bytes,
            )
        }))
        .await;
        if let Some(e) = copied.into_iter().find_map(Result::err) {
            drop(held);
            // All or nothing: every fork goes again, whole. A failed copy clears what it made,
            // but the delete does not rely on it: removing storage that is not there is a no-op.
            for rec in &made {
                let _ = self.delete_id(&rec.id).await;
            }
            return Err(e.into());
        }
        for rec in &made {
            self.touch(&rec.id);
        }
        self.changed();
        drop(held);
        for rec in &made {
            let this = self.clone();
            let id = rec.id.clone();
            tokio::spawn(async move { this.boot(&id, false).await });
        }
        self.audit(
            Some(p),
            "sandbox.fork",
            Some(&parent.id),
            Some(format!(
                "{} -> {}",
                parent.name,
                made.iter()
                    .map(|r| r.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        );
        Ok(made)
    }

    /// One fork admitted and its record inserted; its files are copied and it is booted by
    /// the caller.
    fn admit_fork(
        &self,
        p: &Principal,
        parent: &SandboxRecord,
        name: Option<String>,
    ) -> Result<SandboxRecord, ControlError> {
        // A fork does not share the parent's volumes: one may be attached read-write once.
        let config = crate::config::SandboxConfig {
            volumes: Vec::new(),
            ..parent.config.clone()
        };
        let mut rec = new_record(p, config);
        let _admission = self.admission();
        let held = self.store.held(&p.user_id, None)?;
        self.cfg.limits.admit(&held, rec.config.mem_bytes)?;
        self.host_capacity()?;
        let stem: String = parent.name.chars().take(50).collect();
        self.insert_named(&mut rec, name, &format!("{stem}-fork"))?;
        self.make_room(&self.cfg.limits, &held, rec.config.mem_bytes);
        Ok(rec)
    }

    /// Waits for every fork to be ready, at most `timeout` in all.
    pub async fn wait_forks(
        &self,
        forks: &[SandboxRecord],
        timeout: Duration,
    ) -> Result<Vec<SandboxRecord>, ControlError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut out = Vec::with_capacity(forks.len());
        for f in forks {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            out.push(self.wait_ready(&f.id, left).await?);
        }
        Ok(out)
    }
}

//! Creating a sandbox: validation, admission, the record, then the boot in the background.

use std::sync::Arc;
use std::time::{Duration, Instant};

use warren_driver::ImageStatus;
use warren_types::{ImageRef, SandboxStatus};

use crate::admission::{Held, ResourceLimits};
use crate::config::{
    ConfigError, CreateSandbox, SandboxConfig, validate_name, validate_passthrough,
    validate_resources, validate_run_config, validate_ttl,
};
use crate::control::{Control, name_conflict, new_record, now, spec_of};
use crate::error::ControlError;
use crate::pool::Shape;
use crate::store::{Principal, SandboxRecord, Store, StoreError};

impl Control {
    /// Creates a sandbox. From a warm pool that made sandboxes of exactly this shape the answer
    /// is `ready` at once; otherwise it is `provisioning` and the boot runs in the background
    /// (see [`Control::wait_settled`]).
    pub fn create(
        self: &Arc<Self>,
        p: &Principal,
        req: CreateSandbox,
    ) -> Result<SandboxRecord, ControlError> {
        let started = Instant::now();
        let name = req.name.clone();
        let volumes = req.volumes.clone().unwrap_or_default();
        let (config, mem_from) = self.resolve_create(p, req)?;
        let mut rec = new_record(p, config);
        // Before the admission lock: reading the image's generation is a few syscalls, and it
        // may change at any moment anyway (a fill checks it again).
        let shape = volumes
            .is_empty()
            .then(|| self.pool_shape(&rec.config))
            .flatten();
        let admission = self.admission();
        let held = self.store.held(&p.user_id, None)?;
        self.cfg.limits.admit_count(&held)?;
        (self.cfg.limits)
            .admit_memory(&held, rec.config.mem_bytes)
            .map_err(|e| match &mem_from {
                Some(snapshot) => carried_quota(snapshot, e),
                None => e,
            })?;
        let claimed = shape
            .as_ref()
            .and_then(|s| self.claim_pooled(s, &p.workspace_id));
        if let Some(entry) = &claimed {
            rec.id.clone_from(&entry.id);
            rec.runtime_id = entry.runtime_id.clone();
            rec.status = SandboxStatus::Ready;
            rec.handle = Some(entry.handle.clone());
        } else {
            self.host_capacity()?;
            // Checked and recorded under the admission lock, so two creates cannot both take
            // one volume read-write.
            rec.config.volumes = self.resolve_attachments(p, &volumes)?;
        }
        if let Err(e) = self.insert_named(&mut rec, name, "sandbox") {
            if let Some(entry) = claimed
                && let Some(unwanted) = self.pools.put_back(entry)
            {
                self.discard(vec![unwanted]);
            }
            return Err(e);
        }
        if claimed.is_none() {
            self.make_room(&self.cfg.limits, &held, rec.config.mem_bytes);
        }
        drop(admission);
        self.touch(&rec.id);
        self.changed();
        if let Some(h) = &rec.handle {
            self.track_slot(&rec.id, Some(h.slot));
            self.metrics.observe_create(started.elapsed());
            tracing::info!(sandbox = %rec.name, runtime_id = %rec.runtime_id, us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX), "sandbox ready from a warm pool");
        } else {
            let this = self.clone();
            let id = rec.id.clone();
            tokio::spawn(async move { this.boot(&id, true).await });
        }
        self.audit(
            Some(p),
            "sandbox.create",
            Some(&rec.id),
            Some(rec.name.clone()),
        );
        Ok(rec)
    }

    /// Refuses a tier this host cannot run now (400, with the driver's reason): a sandbox
    /// never silently gets another tier than the one asked for.
    pub(crate) fn check_tier(&self, tier: warren_driver::Tier) -> Result<(), ControlError> {
        self.driver.tier_support(tier).map_err(|reason| {
            ConfigError::Unsupported(format!(
                "tier '{tier}' is not available on this server: {reason}"
            ))
            .into()
        })
    }

    /// Checks a create request's own fields (the tier this host runs included).
    fn check_create(&self, p: &Principal, req: &CreateSandbox) -> Result<(), ControlError> {
        let secrets = validate_passthrough(req, self.cfg.egress.as_ref())?;
        self.check_secrets(&p.workspace_id, &secrets)?;
        validate_resources(req.vcpus, req.mem_bytes, req.fs_capacity_bytes)?;
        self.check_shape(req.vcpus, req.mem_bytes, req.fs_capacity_bytes)?;
        for (field, v) in [
            ("idle_ttl_seconds", req.idle_ttl_seconds),
            ("delete_after_stop_seconds", req.delete_after_stop_seconds),
        ] {
            if let Some(v) = v {
                validate_ttl(field, v)?;
            }
        }
        if let Some(rc) = &req.run_config {
            validate_run_config(rc)?;
        }
        if let Some(env_vars) = &req.env_vars {
            crate::config::validate_env_names(env_vars)?;
        }
        if let Some(name) = &req.name {
            validate_name(name)?;
        }
        self.check_tier(req.tier.unwrap_or(self.cfg.default_tier))
    }

    /// A create request (over the template it names), checked and resolved to the config it
    /// makes (volumes not yet attached), and the snapshot whose carried memory size it took
    /// for want of its own, if any.
    pub(crate) fn resolve_create(
        &self,
        p: &Principal,
        req: CreateSandbox,
    ) -> Result<(SandboxConfig, Option<String>), ControlError> {
        let template = req
            .template
            .as_deref()
            .map(|t| self.find_template(p, t))
            .transpose()?;
        let req = match template {
            Some(t) => t.under(req),
            None => req,
        };
        // The request is checked before its snapshot is looked up, so a malformed one is
        // refused as such whatever its snapshot; then again with what the snapshot carries.
        self.check_create(p, &req)?;
        let (image, snapshot_id, snapshot) = self.resolve_for_create(p, req.snapshot.as_deref())?;
        // What the snapshot carries is checked as the request's own, but a refusal names the
        // snapshot: the caller did not send the value it is about.
        let mut mem_carried_by = None;
        let req = match &snapshot {
            Some(s) if !s.carried.included.is_empty() => {
                let asked_mem = req.mem_bytes.is_some();
                let req = s.carried.under(req);
                self.check_create(p, &req)
                    .map_err(|e| carried_refusal(&s.name, e))?;
                if !asked_mem && req.mem_bytes.is_some() {
                    mem_carried_by = Some(s.name.clone());
                }
                req
            }
            _ => req,
        };
        let env_vars = req.env_vars.unwrap_or_default();
        let tier = req.tier.unwrap_or(self.cfg.default_tier);
        let d = SandboxConfig::default();
        // A snapshot's capacity is the least its sandboxes get; its run_config and labels are
        // where theirs start.
        let fs_capacity_bytes = match (&snapshot, req.fs_capacity_bytes) {
            (Some(s), Some(asked)) if asked < s.fs_capacity_bytes => {
                return Err(ConfigError::Invalid(format!(
                    "fs_capacity_bytes {asked} is smaller than snapshot '{}' ({})",
                    s.name, s.fs_capacity_bytes
                ))
                .into());
            }
            (_, Some(asked)) => asked,
            (Some(s), None) => s.fs_capacity_bytes,
            (None, None) => d.fs_capacity_bytes,
        };
        let (base_run_config, mut labels) = snapshot
            .map(|s| (s.run_config, s.labels))
            .unwrap_or_default();
        labels.extend(req.labels.unwrap_or_default());
        let cfg = SandboxConfig {
            snapshot: image.to_string(),
            snapshot_id: Some(snapshot_id),
            vcpus: req.vcpus.unwrap_or(d.vcpus),
            mem_bytes: req.mem_bytes.unwrap_or(d.mem_bytes),
            fs_capacity_bytes,
            idle_ttl_seconds: req.idle_ttl_seconds.unwrap_or(d.idle_ttl_seconds),
            delete_after_stop_seconds: req
                .delete_after_stop_seconds
                .unwrap_or(d.delete_after_stop_seconds),
            persistent: req.persistent.unwrap_or(true),
            run_config: base_run_config.layered(&req.run_config.unwrap_or_default()),
            env_vars,
            labels,
            access_delegation: req.access_delegation,
            proxy_config: req.proxy_config,
            mount_config: req.mount_config,
            tag_value_ids: req.tag_value_ids.unwrap_or_default(),
            volumes: Vec::new(),
            tier,
        };
        crate::config::validate_tier_memory(cfg.tier, cfg.mem_bytes).map_err(|e| {
            match &mem_carried_by {
                Some(name) => carried_refusal(name, e.into()),
                None => e.into(),
            }
        })?;
        Ok((cfg, mem_carried_by))
    }

    /// A running pooled sandbox of this shape for the workspace, if a pool has one.
    fn claim_pooled(&self, shape: &Shape, workspace_id: &str) -> Option<crate::pool::Entry> {
        loop {
            let entry = self.pools.claim(shape, workspace_id)?;
            if self.driver.is_running(&entry.handle) {
                return Some(entry);
            }
            tracing::warn!(runtime_id = %entry.runtime_id, "a pooled sandbox had died; discarding it");
            self.discard(vec![entry]);
        }
    }

    /// Gives back pooled sandboxes until `limits` hold again after a cold create, a fork or a
    /// start (`held` as it was before it, `mem` its memory): pools yield to real work.
    pub(crate) fn make_room(&self, limits: &ResourceLimits, held: &Held, mem: u64) {
        loop {
            let (n, pooled_mem) = self.pools.totals();
            if n == 0 || limits.room(held, n, pooled_mem, mem).is_ok() {
                return;
            }
            match self.pools.evict_one() {
                Some(e) => self.discard(vec![e]),
                None => return,
            }
        }
    }

    /// Inserts a new record under `name`, or under a generated `<stem>-<6 hex>` when none is
    /// given. Callers hold the admission lock.
    pub(crate) fn insert_named(
        &self,
        rec: &mut SandboxRecord,
        name: Option<String>,
        stem: &str,
    ) -> Result<(), ControlError> {
        match name {
            Some(name) => {
                rec.name = name;
                self.store
                    .insert_sandbox(rec)
                    .map_err(|e| name_conflict(e, &rec.name))
            }
            None => loop {
                let raw = uuid::Uuid::new_v4().simple().to_string();
                rec.name = format!("{stem}-{}", &raw[..6]);
                match self.store.insert_sandbox(rec) {
                    Ok(()) => return Ok(()),
                    Err(StoreError::Conflict(_)) => {}
                    Err(e) => return Err(e.into()),
                }
            },
        }
    }

    /// Waits for a sandbox to boot, at most `timeout`: its record once ready, or why it failed.
    pub async fn wait_ready(
        &self,
        id: &str,
        timeout: Duration,
    ) -> Result<SandboxRecord, ControlError> {
        let rec = self.wait_settled(id, timeout).await?;
        if rec.status == SandboxStatus::Failed {
            return Err(ControlError::BootFailed(format!(
                "sandbox '{}' failed to start: {}",
                rec.name,
                rec.status_message.as_deref().unwrap_or("unknown error")
            )));
        }
        Ok(rec)
    }

    /// The default image, present. It always exists on a working server: while it is missing
    /// the answer is 503 with the reason, never a 404 that would send the client looking for a
    /// typo.
    pub(crate) fn check_default_image(&self) -> Result<ImageRef, ControlError> {
        let image = ImageRef::default_image();
        match self.driver.image_status(&image) {
            ImageStatus::Present => Ok(image),
            ImageStatus::Building => Err(ControlError::Unavailable(format!(
                "The default image '{image}' is being built on this server; try again in a minute"
            ))),
            ImageStatus::Failed(reason) => Err(ControlError::Unavailable(format!(
                "The default image '{image}' could not be built ({reason}); the server retries the build"
            ))),
            ImageStatus::Missing => Err(ControlError::Unavailable(format!(
                "The default image '{image}' is not built on this server; build it with `warren image build`"
            ))),
        }
    }

    /// Boots a provisioning sandbox (fresh storage when `fresh`), under its lock.
    pub(crate) async fn boot(self: &Arc<Self>, id: &str, fresh: bool) {
        let lock = self.lock_for(id);
        let _held = lock.lock().await;
        let Ok(Some(mut rec)) = self.store.get_sandbox(id) else {
            return;
        };
        // Only a provisioning sandbox boots: a stop or delete that came first wins.
        if rec.status != SandboxStatus::Provisioning {
            return;
        }
        let mut spec = spec_of(&rec, self.cfg.limits.pids);
        let started = Instant::now();
        let result = match self.sandbox_trust(&rec.id) {
            Err(e) => Err(e),
            Ok(trust) => {
                spec.trust = trust;
                if fresh || !self.driver.has_storage(&rec.runtime_id) {
                    self.driver.create(&spec).await
                } else {
                    self.driver.start(&spec).await
                }
            }
        };
        rec.updated_at = now();
        match result {
            Ok(handle) => {
                self.metrics.observe_create(started.elapsed());
                tracing::info!(sandbox = %rec.name, runtime_id = %rec.runtime_id, us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX), "sandbox ready");
                rec.status = SandboxStatus::Ready;
                rec.status_message = None;
                self.track_slot(&rec.id, Some(handle.slot));
                rec.handle = Some(handle);
                rec.stopped_at = None;
            }
            Err(e) => {
                self.metrics.create_failed();
                tracing::warn!(sandbox = %rec.name, error = %e, "sandbox failed to boot");
                rec.status = SandboxStatus::Failed;
                rec.status_message = Some(e.public_reason());
                rec.handle = None;
            }
        }
        self.touch(id);
        if let Err(e) = self.store.update_sandbox(&rec) {
            tracing::error!(sandbox = %rec.name, error = %e, "failed to record boot result");
        }
        self.changed();
    }

    /// Waits until the sandbox leaves `provisioning`, at most `timeout`; returns its record.
    pub async fn wait_settled(
        &self,
        id: &str,
        timeout: Duration,
    ) -> Result<SandboxRecord, ControlError> {
        let mut rx = self.changes.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let rec = self.record(id)?;
            if rec.status != SandboxStatus::Provisioning {
                return Ok(rec);
            }
            if tokio::time::timeout_at(deadline, rx.changed())
                .await
                .is_err()
            {
                return Err(ControlError::Timeout(format!(
                    "Sandbox '{}' not ready within {} seconds",
                    rec.name,
                    timeout.as_secs()
                )));
            }
        }
    }
}

/// A memory quota's refusal of a size the create took from `snapshot`: says so, and how to ask
/// for less.
fn carried_quota(snapshot: &str, e: ControlError) -> ControlError {
    match e {
        ControlError::Exhausted(m) => ControlError::Exhausted(format!(
            "{m} (the memory size snapshot '{snapshot}' carries, which this create took because \
             it did not set mem_bytes; set a smaller mem_bytes in the request)"
        )),
        e => e,
    }
}

/// A check that refused what snapshot `snapshot` carries, said as such (the status unchanged):
/// the value it names came from the snapshot, and the request can override it. The check's
/// own words come first, so the field they name is the one a 422 points at: the one to set.
/// Every check a create's config goes through refuses with a [`ConfigError`].
fn carried_refusal(snapshot: &str, e: ControlError) -> ControlError {
    let ControlError::Config(e) = e else {
        return e;
    };
    let say = |m: String| {
        format!(
            "{m} (a value snapshot '{snapshot}' carries, which this create took because it \
             did not set its own; set it in the request to override it)"
        )
    };
    match e {
        ConfigError::Invalid(m) => ConfigError::Invalid(say(m)),
        ConfigError::Malformed(m) => ConfigError::Malformed(say(m)),
        ConfigError::Unsupported(m) => ConfigError::Unsupported(say(m)),
    }
    .into()
}

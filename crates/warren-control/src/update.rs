//! Changing a sandbox's name, TTLs, run_config, proxy config, shape or labels.

use warren_types::SandboxStatus;

use crate::config::{
    UpdateSandbox, check_proxy_config, validate_name, validate_resources, validate_run_config,
    validate_ttl,
};
use crate::control::{Control, guard, name_conflict, now};
use crate::error::ControlError;
use crate::store::{Principal, SandboxRecord, Store};

impl Control {
    /// Applies an update.
    pub async fn update(
        &self,
        p: &Principal,
        name_or_id: &str,
        req: UpdateSandbox,
    ) -> Result<SandboxRecord, ControlError> {
        let found = self.find(p, name_or_id)?;
        let lock = self.lock_for(&found.id);
        let _held = lock.lock().await;
        let mut rec = self.find(p, &found.id)?;
        // Anything that can still be deleted can be changed: only a sandbox being deleted
        // cannot (the lifecycle refuses Deleting -> Deleting, with the reason).
        guard(&rec, SandboxStatus::Deleting)?;
        if let Some(name) = &req.name {
            validate_name(name)?;
        }
        for (field, v) in [
            ("idle_ttl_seconds", req.idle_ttl_seconds),
            ("delete_after_stop_seconds", req.delete_after_stop_seconds),
        ] {
            if let Some(v) = v {
                validate_ttl(field, v)?;
            }
        }
        validate_resources(req.vcpus, req.mem_bytes, req.fs_capacity_bytes)?;
        self.check_shape(req.vcpus, req.mem_bytes, req.fs_capacity_bytes)?;
        let mut req = req;
        if let Some(pc) = req.proxy_config.as_mut() {
            // The API never shows opaque values, so a client sending back what it read
            // leaves them out: they carry over from the stored rules.
            crate::carry_over_opaque(pc, rec.config.proxy_config.as_ref());
        }
        let secrets = check_proxy_config(req.proxy_config.as_ref(), self.cfg.egress.as_ref())?;
        self.check_secrets(&rec.workspace_id, &secrets)?;
        if let Some(rc) = &req.run_config {
            validate_run_config(rc)?;
            rec.config.run_config = rec.config.run_config.layered(rc);
            // A key the patch sets wins over the create's own env var of that name, which
            // sits above run_config: the patched value is what later commands see.
            rec.config
                .env_vars
                .retain(|k, _| !rc.env_vars.contains_key(k));
        }
        if let Some(n) = req.name {
            rec.name = n;
        }
        if let Some(v) = req.idle_ttl_seconds {
            rec.config.idle_ttl_seconds = v;
        }
        if let Some(v) = req.delete_after_stop_seconds {
            rec.config.delete_after_stop_seconds = v;
        }
        if let Some(v) = req.proxy_config {
            rec.config.proxy_config = Some(v);
        }
        if let Some(v) = req.vcpus {
            rec.config.vcpus = v;
        }
        if let Some(v) = req.mem_bytes {
            crate::config::validate_tier_memory(rec.config.tier, v)?;
            rec.config.mem_bytes = v;
        }
        if let Some(v) = req.fs_capacity_bytes {
            rec.config.fs_capacity_bytes = v;
        }
        if let Some(v) = req.tag_value_ids {
            rec.config.tag_value_ids = v;
        }
        if let Some(v) = req.labels {
            rec.config.labels = v;
        }
        rec.updated_at = now();
        self.store
            .update_sandbox(&rec)
            .map_err(|e| name_conflict(e, &rec.name))?;
        Ok(rec)
    }
}

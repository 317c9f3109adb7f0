//! Templates (a Warren extension): a named snapshot with resources, network policy and
//! run_config. A create naming one starts from it (its own fields win), and a template may keep
//! a warm pool of sandboxes made as it says, claimed only by creates in its workspace.

use crate::auth::admin_only;
use crate::config::{
    CreateSandbox, validate_name, validate_resources, validate_run_config, validate_ttl,
};
use crate::control::{Control, now};
use crate::error::ControlError;
use crate::pool::{PoolKey, PoolSize, PoolView, TemplateRef};
use crate::store::{Principal, TemplateRecord, rfc3339};

/// A template to create. Only `name` and `snapshot` are required.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CreateTemplate {
    /// Name, unique in the workspace.
    pub name: String,
    /// Snapshot reference or id (the default image: `system/default`).
    pub snapshot: String,
    /// CPUs.
    pub vcpus: Option<u32>,
    /// Memory limit.
    pub mem_bytes: Option<u64>,
    /// Disk size.
    pub fs_capacity_bytes: Option<u64>,
    /// Idle stop.
    pub idle_ttl_seconds: Option<u64>,
    /// run_config layer.
    pub run_config: Option<warren_types::RunConfig>,
    /// Network policy and credential rules.
    pub proxy_config: Option<serde_json::Value>,
    /// Labels.
    pub labels: std::collections::BTreeMap<String, String>,
    /// Isolation tier.
    pub tier: Option<warren_driver::Tier>,
}

impl TemplateRecord {
    /// `req` with this template's fields where it has none of its own.
    pub(crate) fn under(&self, mut req: CreateSandbox) -> CreateSandbox {
        req.snapshot = req.snapshot.or_else(|| Some(self.snapshot.clone()));
        req.vcpus = req.vcpus.or(self.vcpus);
        req.mem_bytes = req.mem_bytes.or(self.mem_bytes);
        req.fs_capacity_bytes = req.fs_capacity_bytes.or(self.fs_capacity_bytes);
        req.idle_ttl_seconds = req.idle_ttl_seconds.or(self.idle_ttl_seconds);
        req.proxy_config = req.proxy_config.or_else(|| self.proxy_config.clone());
        req.tier = req.tier.or(self.tier);
        if let Some(base) = &self.run_config {
            req.run_config = Some(base.layered(&req.run_config.unwrap_or_default()));
        }
        if !self.labels.is_empty() {
            req.labels = Some(crate::config::labels_under(&self.labels, req.labels));
        }
        req
    }

    fn pool_key(&self) -> PoolKey {
        PoolKey {
            template: Some(TemplateRef {
                workspace_id: self.workspace_id.clone(),
                id: self.id.clone(),
            }),
        }
    }
}

impl Control {
    /// Creates a template. Its fields are checked as a create's would be, and its snapshot must
    /// exist and be visible to the caller.
    pub fn create_template(
        &self,
        p: &Principal,
        t: CreateTemplate,
    ) -> Result<TemplateRecord, ControlError> {
        validate_name(&t.name)?;
        validate_resources(t.vcpus, t.mem_bytes, t.fs_capacity_bytes)?;
        self.check_shape(t.vcpus, t.mem_bytes, t.fs_capacity_bytes)?;
        if let Some(v) = t.idle_ttl_seconds {
            validate_ttl("idle_ttl_seconds", v)?;
        }
        if let Some(rc) = &t.run_config {
            validate_run_config(rc)?;
        }
        if let Some(tier) = t.tier {
            self.check_tier(tier)?;
        }
        let secrets =
            crate::config::check_proxy_config(t.proxy_config.as_ref(), self.cfg.egress.as_ref())?;
        self.check_secrets(&p.workspace_id, &secrets)?;
        self.get_snapshot(p, &t.snapshot)?;
        let rec = TemplateRecord {
            id: uuid::Uuid::new_v4().to_string(),
            workspace_id: p.workspace_id.clone(),
            name: t.name,
            snapshot: t.snapshot,
            vcpus: t.vcpus,
            mem_bytes: t.mem_bytes,
            fs_capacity_bytes: t.fs_capacity_bytes,
            idle_ttl_seconds: t.idle_ttl_seconds,
            run_config: t.run_config,
            proxy_config: t.proxy_config,
            labels: t.labels,
            tier: t.tier,
            pool_min: 0,
            pool_max: 0,
            created_at: rfc3339(now()),
            created_by: p.user_id.clone(),
        };
        self.store.put_template(&rec).map_err(|e| match e {
            crate::store::StoreError::Conflict(_) => {
                ControlError::Conflict(format!("Template '{}' already exists", rec.name))
            }
            other => other.into(),
        })?;
        self.audit(Some(p), "template.create", None, Some(rec.name.clone()));
        Ok(rec)
    }

    /// A workspace's template by name or id.
    pub fn find_template(&self, p: &Principal, name: &str) -> Result<TemplateRecord, ControlError> {
        self.store
            .find_template(&p.workspace_id, name)?
            .ok_or_else(|| ControlError::NotFound(format!("Template '{name}' not found")))
    }

    /// The workspace's templates, by name.
    pub fn list_templates(&self, p: &Principal) -> Result<Vec<TemplateRecord>, ControlError> {
        Ok(self.store.list_templates(Some(&p.workspace_id))?)
    }

    /// Deletes a template and its pool (its creator or an admin). Sandboxes made from it keep
    /// running.
    pub fn delete_template(&self, p: &Principal, name: &str) -> Result<(), ControlError> {
        let t = self.find_template(p, name)?;
        if !p.is_admin && t.created_by != p.user_id {
            return Err(ControlError::Forbidden(
                "only the template's creator or a workspace admin may delete it".into(),
            ));
        }
        self.store.delete_template(&p.workspace_id, &t.id)?;
        let gone = self.pools.set(t.pool_key(), PoolSize::default());
        self.discard(gone);
        self.audit(Some(p), "template.delete", None, Some(t.name));
        Ok(())
    }

    /// Sets the warm pool of a template (admins); 0/0 removes it. The bounds are kept with the
    /// template and restored when the server starts.
    pub fn set_template_pool(
        &self,
        p: &Principal,
        name: &str,
        size: PoolSize,
    ) -> Result<PoolView, ControlError> {
        admin_only(p, "change pools")?;
        let mut t = self.find_template(p, name)?;
        t.pool_min = size.min;
        t.pool_max = size.max;
        self.store.put_template(&t)?;
        let gone = self.pools.set(t.pool_key(), size);
        self.discard(gone);
        self.audit(
            Some(p),
            "pool.set",
            None,
            Some(format!("{} min={} max={}", t.name, size.min, size.max)),
        );
        Ok(self.pool_view(p, Some(&t.name)))
    }

    /// Sets up the pools a starting server keeps: the default one and every template's.
    pub(crate) fn load_pools(&self) {
        let gone = self
            .pools
            .set(PoolKey { template: None }, self.cfg.default_pool);
        self.discard(gone);
        match self.store.list_templates(None) {
            Ok(all) => {
                for t in all.into_iter().filter(|t| t.pool_max > 0) {
                    let size = PoolSize {
                        min: t.pool_min,
                        max: t.pool_max,
                    };
                    let gone = self.pools.set(t.pool_key(), size);
                    self.discard(gone);
                }
            }
            Err(e) => tracing::error!(error = %e, "failed to read the templates' pools"),
        }
    }
}

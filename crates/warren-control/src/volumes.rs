//! Volumes (beta, LANGSMITH-API.md §13): persistent, quota-limited directories that outlive
//! sandboxes, attached at create (at most four, read-only ones shared by many sandboxes),
//! cloned copy-on-write. Creator-private like sandboxes: only the creator or an admin sees,
//! changes, clones or attaches one. Attachments are read from the sandboxes' configs, so a
//! deleted sandbox holds nothing.

use std::collections::BTreeMap;
use std::sync::Arc;

use warren_types::SandboxStatus;

use crate::config::{ConfigError, VolumeAttachment, VolumeRequest};
use crate::control::{Control, detached, now};
use crate::error::ControlError;
use crate::listing::{ListQuery, Listed, Listing, Order, Page, SortValue};
use crate::store::{Principal, SandboxRecord, Store, StoreError, VolumeRecord, rfc3339};

/// Most volumes one sandbox may have.
pub const MAX_VOLUMES_PER_SANDBOX: usize = 4;
/// Sizes are whole GiB.
const GIB: u64 = 1 << 30;
/// The largest volume.
pub const MAX_VOLUME_BYTES: u64 = 1 << 40;

/// A create (`POST {B}/volumes`) or clone request.
#[derive(Debug, Clone, Default)]
pub struct CreateVolume {
    /// Name, unique in the workspace.
    pub name: String,
    /// Size (rounded up to whole GiB); the source's for a clone.
    pub size_bytes: Option<u64>,
    /// Free text.
    pub description: Option<String>,
    /// Labels.
    pub labels: Option<BTreeMap<String, String>>,
}

/// A PATCH: each field given replaces the stored one; an empty value clears it.
#[derive(Debug, Clone, Default)]
pub struct UpdateVolume {
    /// New description.
    pub description: Option<Option<String>>,
    /// New labels.
    pub labels: Option<BTreeMap<String, String>>,
}

/// A volume and who has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeView {
    /// The record.
    pub record: VolumeRecord,
    /// Sandboxes that have it: `(sandbox id, sandbox name, attachment)`.
    pub attachments: Vec<(String, String, VolumeAttachment)>,
    /// Bytes its files take, when known.
    pub used_bytes: Option<u64>,
}

fn validate_volume_name(name: &str) -> Result<(), ControlError> {
    crate::config::validate_name(name)
        .map_err(|_| {
            ConfigError::Invalid(format!(
                "invalid volume name {name:?}: use 1-63 letters, digits, '-', '_' or '.', \
                 starting with a letter or digit"
            ))
        })
        .map_err(Into::into)
}

/// Checks a mount path the way the jail will (absolute, no `..`, not `/` or a system
/// directory), so a bad one is a 4xx at create rather than a failed boot.
pub fn validate_mount_path(path: &str) -> Result<(), ControlError> {
    let bad = |why: &str| -> ControlError {
        ConfigError::Invalid(format!("invalid volume mount_path {path:?}: {why}")).into()
    };
    if !path.starts_with('/') {
        return Err(bad("it must be absolute"));
    }
    if path.len() > 1024 || path.contains('\0') {
        return Err(bad("too long or has a NUL byte"));
    }
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    if parts.is_empty() {
        return Err(bad("it cannot be /"));
    }
    if parts.iter().any(|p| *p == "." || *p == "..") {
        return Err(bad("'.' and '..' are not allowed"));
    }
    if ["proc", "sys", "dev", "tmp"].contains(&parts[0]) {
        return Err(bad("/proc, /sys, /dev and /tmp are the sandbox's own"));
    }
    if parts.starts_with(&["etc", "ssl", "certs"]) {
        return Err(bad("/etc/ssl/certs is the sandbox's own trust store"));
    }
    Ok(())
}

fn may_change(p: &Principal, v: &VolumeRecord) -> bool {
    p.is_admin || v.created_by == p.user_id
}

fn not_found(what: &str) -> ControlError {
    ControlError::NotFound(format!("Volume '{what}' not found"))
}

/// A sandbox that still holds its attachments (one being deleted does not).
fn holds(r: &SandboxRecord) -> bool {
    r.status != SandboxStatus::Deleting
}

impl Control {
    fn volume_view(&self, record: VolumeRecord) -> Result<VolumeView, ControlError> {
        let attachments = self
            .store
            .list_sandboxes(Some(&record.workspace_id))?
            .into_iter()
            .filter(holds)
            .flat_map(|r| {
                r.config
                    .volumes
                    .iter()
                    .filter(|a| a.volume_id == record.id)
                    .map(|a| (r.id.clone(), r.name.clone(), a.clone()))
                    .collect::<Vec<_>>()
            })
            .collect();
        let used_bytes = self.driver.volume_used_bytes(&record.id);
        Ok(VolumeView {
            record,
            attachments,
            used_bytes,
        })
    }

    fn find_volume(&self, p: &Principal, id_or_name: &str) -> Result<VolumeRecord, ControlError> {
        match self.store.find_volume(&p.workspace_id, id_or_name)? {
            Some(v) if may_change(p, &v) => Ok(v),
            _ => Err(not_found(id_or_name)),
        }
    }

    /// Creates a volume. Runs to its end even if the caller goes away: no record is left
    /// without its files.
    pub async fn create_volume(
        self: &Arc<Self>,
        p: &Principal,
        req: CreateVolume,
    ) -> Result<VolumeView, ControlError> {
        let (this, p) = (self.clone(), p.clone());
        detached(async move { this.create_volume_detached(&p, req).await }).await
    }

    async fn create_volume_detached(
        &self,
        p: &Principal,
        req: CreateVolume,
    ) -> Result<VolumeView, ControlError> {
        validate_volume_name(&req.name)?;
        let Some(size) = req.size_bytes else {
            return Err(ConfigError::Invalid("size_bytes is required".into()).into());
        };
        if size == 0 || size > MAX_VOLUME_BYTES {
            return Err(ConfigError::Invalid(format!(
                "size_bytes must be between 1 and {MAX_VOLUME_BYTES}, got {size}"
            ))
            .into());
        }
        let rec = self.new_volume(p, req, size.div_ceil(GIB) * GIB, None);
        self.store
            .put_volume(&rec)
            .map_err(|e| conflict(e, &rec.name))?;
        if let Err(e) = self.driver.create_volume(&rec.id, rec.size_bytes).await {
            let _ = self.store.delete_volume(&rec.id);
            return Err(e.into());
        }
        self.audit(
            Some(p),
            "volume.create",
            Some(&rec.id),
            Some(rec.name.clone()),
        );
        self.volume_view(rec)
    }

    fn new_volume(
        &self,
        p: &Principal,
        req: CreateVolume,
        size_bytes: u64,
        source: Option<String>,
    ) -> VolumeRecord {
        let t = rfc3339(now());
        VolumeRecord {
            id: uuid::Uuid::new_v4().to_string(),
            workspace_id: p.workspace_id.clone(),
            name: req.name,
            description: req.description.filter(|d| !d.is_empty()),
            labels: req.labels.unwrap_or_default(),
            size_bytes,
            source_volume_id: source,
            created_at: t.clone(),
            created_by: p.user_id.clone(),
            updated_at: t,
            updated_by: p.user_id.clone(),
        }
    }

    /// A volume by id or name.
    pub fn get_volume(&self, p: &Principal, id_or_name: &str) -> Result<VolumeView, ControlError> {
        let v = self.find_volume(p, id_or_name)?;
        self.volume_view(v)
    }

    /// The caller's volumes, filtered, sorted and paged (20 a page by name unless the query
    /// says otherwise).
    pub fn volumes_page(
        &self,
        p: &Principal,
        q: &ListQuery,
    ) -> Result<Page<VolumeView>, ControlError> {
        // Paged as records, so only the page's items are looked up further (attachments, use).
        let page = q.page(self.visible_volumes(p)?, p, &VOLUME_LISTING)?;
        Ok(Page {
            items: page
                .items
                .into_iter()
                .map(|v| self.volume_view(v))
                .collect::<Result<_, _>>()?,
            next_cursor: page.next_cursor,
            offset: page.offset,
        })
    }

    fn visible_volumes(&self, p: &Principal) -> Result<Vec<VolumeRecord>, ControlError> {
        let mut all = self.store.list_volumes(Some(&p.workspace_id))?;
        all.retain(|v| may_change(p, v));
        Ok(all)
    }

    /// Changes a volume's description or labels.
    pub fn update_volume(
        &self,
        p: &Principal,
        id_or_name: &str,
        req: UpdateVolume,
    ) -> Result<VolumeView, ControlError> {
        let mut v = self.find_volume(p, id_or_name)?;
        if let Some(d) = req.description {
            v.description = d.filter(|d| !d.is_empty());
        }
        if let Some(l) = req.labels {
            v.labels = l;
        }
        v.updated_at = rfc3339(now());
        v.updated_by = p.user_id.clone();
        self.store.put_volume(&v)?;
        self.volume_view(v)
    }

    /// Deletes a volume and its files; 409 while a sandbox has it. Runs to its end even if the
    /// caller goes away: no record is left for deleted files.
    pub async fn delete_volume(
        self: &Arc<Self>,
        p: &Principal,
        id_or_name: &str,
    ) -> Result<(), ControlError> {
        let (this, p, id_or_name) = (self.clone(), p.clone(), id_or_name.to_owned());
        detached(async move { this.delete_volume_detached(&p, &id_or_name).await }).await
    }

    async fn delete_volume_detached(
        &self,
        p: &Principal,
        id_or_name: &str,
    ) -> Result<(), ControlError> {
        let view = self.get_volume(p, id_or_name)?;
        if let Some((_, name, _)) = view.attachments.first() {
            return Err(ControlError::Conflict(format!(
                "volume '{}' is attached to sandbox '{name}'; delete or recreate the sandbox first",
                view.record.name
            )));
        }
        let v = view.record;
        self.driver.delete_volume(&v.id).await?;
        self.store.delete_volume(&v.id)?;
        self.audit(Some(p), "volume.delete", Some(&v.id), Some(v.name));
        Ok(())
    }

    /// A copy-on-write copy of a volume; refused while it is attached read-write to a sandbox
    /// that is not stopped (its files may be changing mid-copy). Runs to its end even if the
    /// caller goes away.
    pub async fn clone_volume(
        self: &Arc<Self>,
        p: &Principal,
        id_or_name: &str,
        req: CreateVolume,
    ) -> Result<VolumeView, ControlError> {
        let (this, p, id_or_name) = (self.clone(), p.clone(), id_or_name.to_owned());
        detached(async move { this.clone_volume_detached(&p, &id_or_name, req).await }).await
    }

    async fn clone_volume_detached(
        &self,
        p: &Principal,
        id_or_name: &str,
        req: CreateVolume,
    ) -> Result<VolumeView, ControlError> {
        validate_volume_name(&req.name)?;
        let src = self.get_volume(p, id_or_name)?;
        let busy = src.attachments.iter().find(|(id, _, a)| {
            !a.read_only
                && self
                    .store
                    .get_sandbox(id)
                    .ok()
                    .flatten()
                    .is_some_and(|r| r.status != SandboxStatus::Stopped)
        });
        if let Some((_, name, _)) = busy {
            return Err(ControlError::Conflict(format!(
                "volume '{}' is attached read-write to running sandbox '{name}'; stop it first",
                src.record.name
            )));
        }
        let size = src.record.size_bytes;
        let rec = self.new_volume(p, req, size, Some(src.record.id.clone()));
        self.store
            .put_volume(&rec)
            .map_err(|e| conflict(e, &rec.name))?;
        if let Err(e) = self
            .driver
            .clone_volume(&src.record.id, &rec.id, size)
            .await
        {
            let _ = self.store.delete_volume(&rec.id);
            return Err(e.into());
        }
        self.audit(
            Some(p),
            "volume.clone",
            Some(&rec.id),
            Some(format!("{} from {}", rec.name, src.record.name)),
        );
        self.volume_view(rec)
    }

    /// The attachments a create asks for, checked: the caller's volumes, at most four, distinct
    /// mount paths, and a volume attached read-write to one sandbox only and never read-write
    /// while others read it.
    pub(crate) fn resolve_attachments(
        &self,
        p: &Principal,
        reqs: &[VolumeRequest],
    ) -> Result<Vec<VolumeAttachment>, ControlError> {
        if reqs.len() > MAX_VOLUMES_PER_SANDBOX {
            return Err(ConfigError::Invalid(format!(
                "at most {MAX_VOLUMES_PER_SANDBOX} volumes per sandbox, got {}",
                reqs.len()
            ))
            .into());
        }
        let mut out: Vec<VolumeAttachment> = Vec::with_capacity(reqs.len());
        for r in reqs {
            validate_mount_path(&r.mount_path)?;
            let path = r.mount_path.trim_end_matches('/').to_owned();
            let view = self.get_volume(p, &r.volume)?;
            if out.iter().any(|a| a.volume_id == view.record.id) {
                return Err(ConfigError::Invalid(format!(
                    "volume '{}' is given twice",
                    view.record.name
                ))
                .into());
            }
            if out.iter().any(|a| {
                a.mount_path == path
                    || path.starts_with(&format!("{}/", a.mount_path))
                    || a.mount_path.starts_with(&format!("{path}/"))
            }) {
                return Err(
                    ConfigError::Invalid(format!("volume mount paths overlap at {path}")).into(),
                );
            }
            let writer = view.attachments.iter().find(|(_, _, a)| !a.read_only);
            if let Some((_, name, _)) = writer {
                return Err(ControlError::Conflict(format!(
                    "volume '{}' is attached read-write to sandbox '{name}'",
                    view.record.name
                )));
            }
            if !r.read_only
                && let Some((_, name, _)) = view.attachments.first()
            {
                return Err(ControlError::Conflict(format!(
                    "volume '{}' is attached to sandbox '{name}'; only read-only attachments share a volume",
                    view.record.name
                )));
            }
            out.push(VolumeAttachment {
                volume_id: view.record.id,
                volume_name: view.record.name,
                mount_path: path,
                read_only: r.read_only,
            });
        }
        Ok(out)
    }
}

fn conflict(e: StoreError, name: &str) -> ControlError {
    match e {
        StoreError::Conflict(_) => {
            ControlError::Conflict(format!("Volume with name '{name}' already exists"))
        }
        other => other.into(),
    }
}

/// How volumes list: 20 a page.
const VOLUME_LISTING: Listing = Listing {
    columns: &["name", "created_at"],
    default_sort: ("name", Order::Asc),
    default_limit: Some(crate::listing::DEFAULT_PAGE_SIZE),
    max_limit: None,
};

impl Listed for VolumeRecord {
    fn list_id(&self) -> &str {
        &self.id
    }
    fn list_name(&self) -> &str {
        &self.name
    }
    fn list_labels(&self) -> Option<&BTreeMap<String, String>> {
        Some(&self.labels)
    }
    fn list_creator(&self) -> Option<&str> {
        Some(&self.created_by)
    }
    fn sort_value(&self, column: &str) -> SortValue {
        match column {
            "created_at" => SortValue::Text(self.created_at.clone()),
            _ => SortValue::Text(self.name.clone()),
        }
    }
}

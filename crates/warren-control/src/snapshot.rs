//! Snapshots: immutable root filesystems addressed by id, named `name:tag` within a workspace
//! (Docker semantics: a tag is a pointer that moves; the content never changes). Listing,
//! lookup by id or reference, tags, deletion, capture of a sandbox, and the resolution creates
//! use. The system default image is a snapshot too, with a fixed id, in every workspace.

use std::collections::BTreeMap;
use std::sync::Arc;

use warren_driver::ImageStatus;
use warren_types::{ImageRef, RunConfig, SandboxStatus};

use crate::config::{ConfigError, defaults, validate_run_config};
use crate::control::{Control, detached, now};
use crate::error::ControlError;
use crate::listing::{ListQuery, Listed, Listing, Order, Page, SortValue};
use crate::store::{Principal, SandboxRecord, SnapshotRecord, SnapshotStatus, Store};

/// The name of the system default snapshot.
pub const DEFAULT_SNAPSHOT_NAME: &str = "system/default";

/// The default snapshot's id: the same on every server and across rebuilds of the image, so a
/// client may keep it (Deep Agents JS creates sandboxes by snapshot id only).
pub fn default_snapshot_id() -> String {
    uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_URL, b"warren:system/default:latest").to_string()
}

/// The image a snapshot's files live in.
pub fn snapshot_image(id: &str) -> ImageRef {
    format!("snapshot/{id}")
        .parse()
        .unwrap_or_else(|_| ImageRef::default_image())
}

/// A snapshot as the API shows it: its record and the tags pointing at it.
#[derive(Debug, Clone, PartialEq)]
pub struct SnapshotView {
    /// The record.
    pub record: SnapshotRecord,
    /// Tags under its name that resolve to it (empty: dangling).
    pub tags: Vec<String>,
}

/// How snapshots list: 50 a page without a page size, as the SDKs expect; `limit` at most 500.
const SNAPSHOT_LISTING: Listing = Listing {
    columns: &["name", "status", "created_at"],
    default_sort: ("created_at", Order::Desc),
    default_limit: Some(50),
    max_limit: Some(500),
};

impl Listed for SnapshotRecord {
    fn list_id(&self) -> &str {
        &self.id
    }
    fn list_name(&self) -> &str {
        &self.name
    }
    fn list_status(&self) -> Option<&str> {
        Some(self.status.as_str())
    }
    fn list_labels(&self) -> Option<&BTreeMap<String, String>> {
        Some(&self.labels)
    }
    fn list_creator(&self) -> Option<&str> {
        Some(&self.created_by)
    }
    fn sort_value(&self, column: &str) -> SortValue {
        match column {
            "name" => SortValue::Text(self.name.clone()),
            "status" => SortValue::Text(self.status.as_str().to_owned()),
            // The default has no creation time of its own (its record is made up on each
            // start): it sorts as the newest, so the first page, newest first, always has it.
            _ if self.id == default_snapshot_id() => SortValue::Int(i64::MAX),
            _ => SortValue::time(self.created_at),
        }
    }
}

/// A capture request (`POST {B}/boxes/{name}/snapshot`).
#[derive(Debug, Clone, Default)]
pub struct CaptureSnapshot {
    /// Name of the new snapshot.
    pub name: String,
    /// Tag; `latest` when absent.
    pub tag: Option<String>,
    /// Disk size of sandboxes booted from it; the sandbox's when absent.
    pub fs_capacity_bytes: Option<u64>,
    /// Layered over the sandbox's run_config.
    pub run_config: Option<RunConfig>,
    /// Labels; the sandbox's when absent.
    pub labels: Option<BTreeMap<String, String>>,
    /// Free text.
    pub description: Option<String>,
    /// The sandbox's settings to carry, beside its files ([`crate::carry`]).
    pub include: Vec<crate::carry::Setting>,
    /// Allows carrying settings that hold literal secrets (env vars, opaque credentials).
    pub confirm_secret_values: bool,
}

/// Checks a snapshot name: lowercase registry-style components (`[a-z0-9]` runs joined by
/// single `.`, `_`, `__` or `-`s) separated by `/`, at most 255 characters, outside `system/`.
pub fn validate_snapshot_name(name: &str) -> Result<(), ControlError> {
    let component_ok = |c: &str| {
        let b = c.as_bytes();
        !b.is_empty()
            && b[0].is_ascii_lowercase() | b[0].is_ascii_digit()
            && b[b.len() - 1].is_ascii_lowercase() | b[b.len() - 1].is_ascii_digit()
            && b.iter()
                .all(|&x| x.is_ascii_lowercase() || x.is_ascii_digit() || b"._-".contains(&x))
    };
    if name.is_empty() || name.len() > 255 || !name.split('/').all(component_ok) {
        return Err(ConfigError::Invalid(format!(
            "invalid snapshot name {name:?}: use lowercase letters, digits, '.', '_' and '-' in \
             '/'-separated parts, at most 255 characters"
        ))
        .into());
    }
    if name == "system" || name.starts_with("system/") {
        return Err(ControlError::Forbidden(
            "the system/ namespace is read-only".into(),
        ));
    }
    Ok(())
}

/// Checks a tag: Docker's `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
pub fn validate_tag(tag: &str) -> Result<(), ControlError> {
    let b = tag.as_bytes();
    let ok = !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|&x| x.is_ascii_alphanumeric() || b"_.-".contains(&x));
    if ok {
        Ok(())
    } else {
        Err(ConfigError::Invalid(format!(
            "invalid tag {tag:?}: use up to 128 letters, digits, '_', '.' and '-', not starting \
             with '.' or '-'"
        ))
        .into())
    }
}

fn not_found(what: &str) -> ControlError {
    ControlError::NotFound(format!("Snapshot '{what}' not found"))
}

impl Control {
    /// The default snapshot, as the state of the default image makes it.
    pub(crate) fn default_snapshot(&self) -> SnapshotView {
        let (status, status_message) = match self.driver.image_status(&ImageRef::default_image()) {
            ImageStatus::Present => (SnapshotStatus::Ready, None),
            ImageStatus::Building => (
                SnapshotStatus::Building,
                Some("the default image is being built".to_owned()),
            ),
            ImageStatus::Failed(reason) => (SnapshotStatus::Failed, Some(reason)),
            ImageStatus::Missing => (
                SnapshotStatus::Failed,
                Some("the default image is not built; run `warren image build`".to_owned()),
            ),
        };
        SnapshotView {
            record: SnapshotRecord {
                id: default_snapshot_id(),
                workspace_id: String::new(),
                name: DEFAULT_SNAPSHOT_NAME.into(),
                status,
                status_message,
                fs_capacity_bytes: defaults::FS_CAPACITY_BYTES,
                fs_used_bytes: None,
                docker_image: None,
                image_digest: None,
                source_sandbox_id: None,
                registry_id: None,
                run_config: RunConfig::default(),
                labels: BTreeMap::new(),
                description: Some("Warren's default image".into()),
                carried: crate::carry::Carried::default(),
                created_by: "system".into(),
                created_at: self.started_at,
                updated_at: self.started_at,
            },
            tags: vec!["latest".into()],
        }
    }

    fn view(&self, mut record: SnapshotRecord) -> Result<SnapshotView, ControlError> {
        let tags = self.store.tags_of(&record.id)?;
        if record.status == SnapshotStatus::Building && record.status_message.is_none() {
            record.status_message = self.build_progress_of(&record.id);
        }
        Ok(SnapshotView { record, tags })
    }

    /// Finds a snapshot of the caller's workspace (or the default) by UUID, `name:tag`, or bare
    /// `name` (`name:latest`, else the newest ready untagged snapshot of that name).
    pub fn get_snapshot(
        &self,
        p: &Principal,
        id_or_ref: &str,
    ) -> Result<SnapshotView, ControlError> {
        let r = id_or_ref.trim();
        if r.is_empty() {
            return Err(not_found(id_or_ref));
        }
        if uuid::Uuid::parse_str(r).is_ok() {
            let id = r.to_ascii_lowercase();
            if id == default_snapshot_id() {
                return Ok(self.default_snapshot());
            }
            return match self.store.get_snapshot(&id)? {
                Some(s) if s.workspace_id == p.workspace_id => self.view(s),
                _ => Err(not_found(id_or_ref)),
            };
        }
        let (name, tag) = match r.rsplit_once(':') {
            Some((n, t)) if !t.contains('/') => (n, Some(t)),
            _ => (r, None),
        };
        if name == DEFAULT_SNAPSHOT_NAME && tag.is_none_or(|t| t == "latest") {
            return Ok(self.default_snapshot());
        }
        if let Some(id) = self
            .store
            .resolve_tag(&p.workspace_id, name, tag.unwrap_or("latest"))?
            && let Some(s) = self.store.get_snapshot(&id)?
        {
            return self.view(s);
        }
        if tag.is_none() {
            let untagged = self
                .store
                .list_snapshots(Some(&p.workspace_id))?
                .into_iter()
                .filter(|s| s.name == name && s.status == SnapshotStatus::Ready)
                .find(|s| self.store.tags_of(&s.id).is_ok_and(|t| t.is_empty()));
            if let Some(s) = untagged {
                return self.view(s);
            }
        }
        Err(not_found(id_or_ref))
    }

    /// The caller's workspace's snapshots and the default, filtered, sorted and paged (the
    /// default, then the newest first, unless the query sorts otherwise).
    pub fn list_snapshots(
        &self,
        p: &Principal,
        q: &ListQuery,
    ) -> Result<Page<SnapshotView>, ControlError> {
        // Paged as records, so only the page's items are looked up further (their tags).
        let mut all = vec![self.default_snapshot().record];
        all.extend(self.store.list_snapshots(Some(&p.workspace_id))?);
        let page = q.page(all, p, &SNAPSHOT_LISTING)?;
        let items = page
            .items
            .into_iter()
            .map(|r| {
                if r.id == default_snapshot_id() {
                    Ok(self.default_snapshot())
                } else {
                    self.view(r)
                }
            })
            .collect::<Result<_, _>>()?;
        Ok(Page {
            items,
            next_cursor: page.next_cursor,
            offset: page.offset,
        })
    }

    /// The tags of a name: `(tag, snapshot id)`. 404 when nothing was ever published under it.
    pub fn snapshot_tags(
        &self,
        p: &Principal,
        name: &str,
    ) -> Result<Vec<(String, String)>, ControlError> {
        if name.contains(':') {
            return Err(ConfigError::Invalid(format!(
                "{name:?} is a reference; give a snapshot name without a tag"
            ))
            .into());
        }
        if name == DEFAULT_SNAPSHOT_NAME {
            return Ok(vec![("latest".into(), default_snapshot_id())]);
        }
        let tags = self.store.tags_of_name(&p.workspace_id, name)?;
        let published = !tags.is_empty()
            || self
                .store
                .list_snapshots(Some(&p.workspace_id))?
                .iter()
                .any(|s| s.name == name);
        if published {
            Ok(tags)
        } else {
            Err(ControlError::NotFound(format!(
                "No snapshot was published under the name '{name}'"
            )))
        }
    }

    /// Deletes a snapshot, its tags and its files. 409 while a sandbox was booted from it.
    /// Runs to its end (and its audit entry) even if the caller goes away.
    pub async fn delete_snapshot(
        self: &Arc<Self>,
        p: &Principal,
        id_or_ref: &str,
    ) -> Result<(), ControlError> {
        let (this, p, id_or_ref) = (self.clone(), p.clone(), id_or_ref.to_owned());
        detached(async move { this.delete_snapshot_detached(&p, &id_or_ref).await }).await
    }

    async fn delete_snapshot_detached(
        &self,
        p: &Principal,
        id_or_ref: &str,
    ) -> Result<(), ControlError> {
        let view = self.get_snapshot(p, id_or_ref)?;
        let s = view.record;
        if s.id == default_snapshot_id() {
            return Err(ControlError::Forbidden(
                "the system default snapshot cannot be deleted".into(),
            ));
        }
        if s.created_by != p.user_id && !p.is_admin {
            return Err(ControlError::Forbidden(format!(
                "snapshot '{}' belongs to another user; only they or an admin may delete it",
                s.name
            )));
        }
        let users: Vec<SandboxRecord> = self
            .store
            .list_sandboxes(Some(&p.workspace_id))?
            .into_iter()
            .filter(|r| r.config.snapshot_id.as_deref() == Some(s.id.as_str()))
            .collect();
        if let Some(r) = users.first() {
            return Err(ControlError::Conflict(format!(
                "snapshot '{}' is in use by {} sandbox(es), e.g. '{}'; delete them first",
                s.name,
                users.len(),
                r.name
            )));
        }
        self.store.delete_snapshot(&s.id)?;
        self.driver.remove_image(&snapshot_image(&s.id)).await?;
        self.audit(Some(p), "snapshot.delete", Some(&s.id), Some(s.name));
        Ok(())
    }

    /// Captures a sandbox's files, running or stopped, as a new ready snapshot: one atomic
    /// copy-on-write snapshot of its root filesystem, `/tmp` left out, the sandbox untouched.
    /// Runs to its end even if the caller goes away: a copy is never left without its record.
    pub async fn capture(
        self: &Arc<Self>,
        p: &Principal,
        sandbox: &str,
        req: CaptureSnapshot,
    ) -> Result<SnapshotView, ControlError> {
        let (this, p, sandbox) = (self.clone(), p.clone(), sandbox.to_owned());
        detached(async move { this.capture_detached(&p, &sandbox, req).await }).await
    }

    async fn capture_detached(
        &self,
        p: &Principal,
        sandbox: &str,
        req: CaptureSnapshot,
    ) -> Result<SnapshotView, ControlError> {
        validate_snapshot_name(&req.name)?;
        let tag = req.tag.clone().unwrap_or_else(|| "latest".into());
        validate_tag(&tag)?;
        if let Some(rc) = &req.run_config {
            validate_run_config(rc)?;
        }
        let rec = self.find(p, sandbox)?;
        let fs_capacity_bytes = req
            .fs_capacity_bytes
            .unwrap_or(rec.config.fs_capacity_bytes);
        crate::config::validate_resources(None, None, Some(fs_capacity_bytes))?;
        // Deletion takes the sandbox's lock; holding it keeps the files in place meanwhile.
        let lock = self.lock_for(&rec.id);
        let _held = lock.lock().await;
        let rec = self.record(&rec.id)?;
        if rec.status == SandboxStatus::Deleting || !self.driver.has_storage(&rec.runtime_id) {
            return Err(ControlError::NotReady(format!(
                "sandbox '{}' has no files to capture (status {})",
                rec.name,
                rec.status.as_str()
            )));
        }
        let carried =
            crate::carry::Carried::capture(&rec.config, &req.include, req.confirm_secret_values)?;
        let t = now();
        let record = SnapshotRecord {
            id: uuid::Uuid::new_v4().to_string(),
            workspace_id: p.workspace_id.clone(),
            name: req.name,
            status: SnapshotStatus::Ready,
            status_message: None,
            fs_capacity_bytes,
            fs_used_bytes: None,
            docker_image: None,
            image_digest: None,
            source_sandbox_id: Some(rec.id.clone()),
            registry_id: None,
            run_config: rec
                .config
                .run_config
                .layered(&req.run_config.unwrap_or_default()),
            labels: req
                .labels
                .unwrap_or_else(|| crate::carry::unreserved(&rec.config.labels)),
            description: req.description,
            carried,
            created_by: p.user_id.clone(),
            created_at: t,
            updated_at: t,
        };
        let image = snapshot_image(&record.id);
        self.driver.capture(&rec.runtime_id, &image).await?;
        if let Err(e) = self.publish(&record, &tag) {
            // Unnamed, the copy would only hold disk until the next restart's collection.
            let _ = self.driver.remove_image(&image).await;
            return Err(e);
        }
        self.audit(
            Some(p),
            "snapshot.capture",
            Some(&record.id),
            Some(format!(
                "{}:{tag} from {}{}",
                record.name,
                rec.name,
                record.carried.audit_suffix()
            )),
        );
        self.view(record)
    }

    /// Points another tag of a snapshot's name at it (moving the tag off whatever held it).
    pub fn tag_snapshot(
        &self,
        p: &Principal,
        id_or_ref: &str,
        tag: &str,
    ) -> Result<SnapshotView, ControlError> {
        validate_tag(tag)?;
        let s = self.get_snapshot(p, id_or_ref)?.record;
        if s.id == default_snapshot_id() {
            return Err(ControlError::Forbidden(
                "the system/ namespace is read-only".into(),
            ));
        }
        self.store.set_tag(&s.workspace_id, &s.name, tag, &s.id)?;
        self.audit(
            Some(p),
            "snapshot.tag",
            Some(&s.id),
            Some(format!("{}:{tag}", s.name)),
        );
        self.view(s)
    }

    /// Stores a snapshot's record and points `name:tag` at it.
    pub(crate) fn publish(&self, record: &SnapshotRecord, tag: &str) -> Result<(), ControlError> {
        self.store.put_snapshot(record)?;
        self.store
            .set_tag(&record.workspace_id, &record.name, tag, &record.id)?;
        Ok(())
    }

    /// What a create boots from: the image, the snapshot's id, and the snapshot when it is not
    /// the default (its run_config, labels and capacity are the sandbox's starting point).
    pub(crate) fn resolve_for_create(
        &self,
        p: &Principal,
        snapshot: Option<&str>,
    ) -> Result<(ImageRef, String, Option<SnapshotRecord>), ControlError> {
        let Some(snapshot) = snapshot else {
            // The default image, checked once (its view would check it too).
            return Ok((self.check_default_image()?, default_snapshot_id(), None));
        };
        let view = self.get_snapshot(p, snapshot)?;
        if view.record.id == default_snapshot_id() {
            let image = self.check_default_image()?;
            return Ok((image, view.record.id, None));
        }
        let s = view.record;
        match s.status {
            SnapshotStatus::Ready => {}
            SnapshotStatus::Building => {
                return Err(ControlError::NotReady(format!(
                    "snapshot '{}' is still building",
                    s.name
                )));
            }
            SnapshotStatus::Failed => {
                return Err(ControlError::Config(ConfigError::Invalid(format!(
                    "snapshot '{}' failed to build: {}",
                    s.name,
                    s.status_message.as_deref().unwrap_or("unknown error")
                ))));
            }
        }
        let image = snapshot_image(&s.id);
        if self.driver.image_status(&image) != ImageStatus::Present {
            return Err(ControlError::Unavailable(format!(
                "the files of snapshot '{}' are missing on this server",
                s.name
            )));
        }
        Ok((image, s.id.clone(), Some(s)))
    }
}

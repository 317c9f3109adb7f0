//! The sandbox lifecycle: create, start, stop, delete, auto-wake, the TTL sweeper and recovery
//! after a restart. Every lifecycle change of one sandbox runs under that sandbox's lock, so a
//! stop never races a start; reads take no lock.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::watch;
use warren_runtime::image::error_chain;
use warren_runtime::{AgentConn, AnyDriver, Driver, SandboxHandle, SandboxSpec};
use warren_types::{ImageRef, Limits, SandboxId, SandboxStatus};

use crate::admission::{self, ResourceLimits};
use crate::auth;
use crate::config::{
    self, CreateSandbox, RunConfig, SandboxConfig, UpdateSandbox, validate_name,
    validate_resources, validate_ttl,
};
use crate::error::ControlError;
use crate::metrics::Metrics;
use crate::store::{
    AuditEntry, KeyInfo, Principal, SandboxRecord, SqliteStore, Store, StoreError, rfc3339,
};

/// Settings of the control plane.
#[derive(Debug, Clone)]
pub struct ControlConfig {
    /// Data dir: the state database and `admin.key` live here.
    pub data_dir: PathBuf,
    /// URL clients reach this server at, without a trailing `/` (for `dataplane_url`).
    pub public_url: String,
    /// How often the sweeper looks for idle and expired sandboxes.
    pub sweep_interval: Duration,
    /// Per-sandbox maxima and the server's and users' quotas.
    pub limits: ResourceLimits,
}

/// The control plane.
#[derive(Debug)]
pub struct Control {
    store: SqliteStore,
    driver: AnyDriver,
    cfg: ControlConfig,
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    activity: Mutex<HashMap<String, Activity>>,
    /// Bumped on every status change, so waiters re-read instead of polling.
    changes: watch::Sender<u64>,
    keys: KeyCache,
    metrics: Metrics,
    /// Held across the quota check and the insert of a create (or the status change of a
    /// start), so concurrent requests cannot all pass a check that only one of them fits.
    admission: Mutex<()>,
    /// Deletions whose cleanup failed, by sandbox id: when the sweeper tries again.
    pending_deletes: Mutex<HashMap<String, Retry>>,
}

/// The next attempt at a failed deletion.
#[derive(Debug, Clone, Copy)]
struct Retry {
    at: Instant,
    backoff: Duration,
}

/// First wait before a failed deletion is tried again; doubles up to [`DELETE_RETRY_MAX`].
const DELETE_RETRY_FIRST: Duration = Duration::from_secs(5);
const DELETE_RETRY_MAX: Duration = Duration::from_secs(300);

#[derive(Debug, Clone, Copy)]
struct Activity {
    last: Instant,
    inflight: u32,
}

/// Marks a data-plane operation in flight: the sandbox is not idle while one exists.
#[derive(Debug)]
pub struct ActivityGuard {
    control: Arc<Control>,
    id: String,
}

impl Drop for ActivityGuard {
    fn drop(&mut self) {
        let mut map = self
            .control
            .activity
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(a) = map.get_mut(&self.id) {
            a.inflight = a.inflight.saturating_sub(1);
            a.last = Instant::now();
        }
    }
}

/// A ready sandbox and a way to reach its agent.
#[derive(Debug)]
pub struct Running {
    /// The record at the time it was found ready.
    pub record: SandboxRecord,
    /// The driver handle.
    pub handle: SandboxHandle,
    /// Keeps the sandbox from idling out while the operation runs.
    pub guard: ActivityGuard,
}

fn now() -> SystemTime {
    SystemTime::now()
}

/// Principals of recently used API keys, by key hash. A revocation bumps the generation, and a
/// principal looked up before the bump is never inserted after it: a request that read the
/// store just before a revoke cannot put the revoked key back.
#[derive(Debug, Default)]
struct KeyCache {
    inner: Mutex<KeyCacheInner>,
}

#[derive(Debug, Default)]
struct KeyCacheInner {
    generation: u64,
    principals: HashMap<String, Principal>,
}

impl KeyCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, KeyCacheInner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The cached principal, or the generation to pass to [`KeyCache::insert`] after reading
    /// the store.
    fn get(&self, hash: &str) -> Result<Principal, u64> {
        let inner = self.lock();
        inner.principals.get(hash).cloned().ok_or(inner.generation)
    }

    /// Caches a principal read from the store at `generation`, unless a revocation happened
    /// since.
    fn insert(&self, generation: u64, hash: String, p: Principal) {
        let mut inner = self.lock();
        if inner.generation == generation {
            inner.principals.insert(hash, p);
        }
    }

    /// Forgets every cached principal and refuses inserts of earlier lookups.
    fn invalidate(&self) {
        let mut inner = self.lock();
        inner.generation += 1;
        inner.principals.clear();
    }
}

impl Control {
    /// Opens the state store, creates the first admin key on first start (returned once, also
    /// written to `<data-dir>/admin.key`), re-adopts running sandboxes and removes orphans.
    pub async fn open(
        cfg: ControlConfig,
        driver: AnyDriver,
    ) -> Result<(Arc<Self>, Option<String>), ControlError> {
        let store = SqliteStore::open(&cfg.data_dir.join("warren.db"))?;
        let (changes, _) = watch::channel(0);
        let control = Arc::new(Self {
            store,
            driver,
            cfg,
            locks: Mutex::default(),
            activity: Mutex::default(),
            changes,
            keys: KeyCache::default(),
            metrics: Metrics::default(),
            admission: Mutex::default(),
            pending_deletes: Mutex::default(),
        });
        let admin_key = control.bootstrap_admin()?;
        control.recover().await?;
        Ok((control, admin_key))
    }

    /// Refuses a shape above the per-sandbox maxima (422 naming the limit).
    fn check_shape(
        &self,
        vcpus: Option<u32>,
        mem: Option<u64>,
        fs: Option<u64>,
    ) -> Result<(), ControlError> {
        let free = fs.and_then(|_| admission::free_bytes(&self.cfg.data_dir.join("fs")));
        self.cfg.limits.check_shape(vcpus, mem, fs, free)
    }

    /// Counters for `/metrics`.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The configuration.
    pub fn config(&self) -> &ControlConfig {
        &self.cfg
    }

    fn bootstrap_admin(&self) -> Result<Option<String>, ControlError> {
        if self.store.has_users()? {
            return Ok(None);
        }
        let ws = self.store.create_workspace("default")?;
        let user = self.store.create_user(&ws, "admin", true)?;
        let key = auth::generate_key()
            .map_err(|e| ControlError::Exhausted(format!("failed to generate a key: {e}")))?;
        self.store.add_key(&user, &auth::hash_key(&key))?;
        write_secret(&self.cfg.data_dir.join("admin.key"), &key)
            .map_err(|e| ControlError::Exhausted(format!("failed to write admin.key: {e}")))?;
        Ok(Some(key))
    }

    /// The principal an API key belongs to.
    pub fn authenticate(&self, key: &str) -> Result<Option<Principal>, ControlError> {
        let hash = auth::hash_key(key);
        let generation = match self.keys.get(&hash) {
            Ok(p) => return Ok(Some(p)),
            Err(generation) => generation,
        };
        let p = self.store.principal_for_key(&hash)?;
        if let Some(p) = &p {
            self.keys.insert(generation, hash, p.clone());
        }
        Ok(p)
    }

    /// Creates a user in the caller's workspace with a new key. Admins only.
    pub fn create_key(
        &self,
        p: &Principal,
        name: &str,
        admin: bool,
    ) -> Result<(String, String), ControlError> {
        if !p.is_admin {
            return Err(ControlError::Forbidden(
                "only workspace admins can create keys".into(),
            ));
        }
        validate_name(name)?;
        let user = match self.store.create_user(&p.workspace_id, name, admin) {
            Ok(u) => u,
            Err(StoreError::Conflict(_)) => {
                return Err(ControlError::Conflict(format!(
                    "user '{name}' already exists"
                )));
            }
            Err(e) => return Err(e.into()),
        };
        let key = auth::generate_key()
            .map_err(|e| ControlError::Exhausted(format!("failed to generate a key: {e}")))?;
        let id = self.store.add_key(&user, &auth::hash_key(&key))?;
        Ok((id, key))
    }

    /// Keys of the caller's workspace. Admins only.
    pub fn list_keys(&self, p: &Principal) -> Result<Vec<KeyInfo>, ControlError> {
        if !p.is_admin {
            return Err(ControlError::Forbidden(
                "only workspace admins can list keys".into(),
            ));
        }
        Ok(self.store.list_keys(&p.workspace_id)?)
    }

    /// Revokes a key of the caller's workspace. Admins only.
    pub fn revoke_key(&self, p: &Principal, key_id: &str) -> Result<(), ControlError> {
        if !p.is_admin {
            return Err(ControlError::Forbidden(
                "only workspace admins can revoke keys".into(),
            ));
        }
        if !self.store.revoke_key(&p.workspace_id, key_id)? {
            return Err(ControlError::NotFound(format!("key '{key_id}' not found")));
        }
        self.keys.invalidate();
        Ok(())
    }

    /// Appends to the audit log; failures are logged, never surfaced to the caller.
    pub fn audit(
        &self,
        p: Option<&Principal>,
        action: &str,
        target: Option<&str>,
        detail: Option<String>,
    ) {
        let entry = AuditEntry {
            seq: 0,
            at: rfc3339(now()),
            workspace_id: p.map(|p| p.workspace_id.clone()),
            user_id: p.map(|p| p.user_id.clone()),
            action: action.to_owned(),
            target: target.map(str::to_owned),
            detail,
        };
        if let Err(e) = self.store.append_audit(&entry) {
            tracing::error!(error = %e, action, "failed to append to the audit log");
        }
    }

    /// Audit entries visible to the caller (admins: the workspace; others: their own).
    pub fn list_audit(
        &self,
        p: &Principal,
        after: i64,
        limit: u32,
    ) -> Result<Vec<AuditEntry>, ControlError> {
        let mut entries = self.store.list_audit(Some(&p.workspace_id), after, limit)?;
        if !p.is_admin {
            entries.retain(|e| e.user_id.as_deref() == Some(&p.user_id));
        }
        Ok(entries)
    }

    /// A sandbox's record by id, or 404.
    fn record(&self, id: &str) -> Result<SandboxRecord, ControlError> {
        self.store
            .get_sandbox(id)?
            .ok_or_else(|| ControlError::NotFound(format!("Sandbox '{id}' not found")))
    }

    fn lock_for(&self, id: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.locks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(id.to_owned())
            .or_default()
            .clone()
    }

    fn changed(&self) {
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Marks the sandbox active now.
    pub fn touch(&self, id: &str) {
        let mut map = self
            .activity
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        map.entry(id.to_owned())
            .and_modify(|a| a.last = Instant::now())
            .or_insert(Activity {
                last: Instant::now(),
                inflight: 0,
            });
    }

    fn guard(self: &Arc<Self>, id: &str) -> ActivityGuard {
        let mut map = self
            .activity
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let a = map.entry(id.to_owned()).or_insert(Activity {
            last: Instant::now(),
            inflight: 0,
        });
        a.inflight += 1;
        a.last = Instant::now();
        ActivityGuard {
            control: self.clone(),
            id: id.to_owned(),
        }
    }

    /// Finds a sandbox the caller may see; others' sandboxes are indistinguishable from missing
    /// ones (404), so names do not leak across users.
    pub fn find(&self, p: &Principal, name_or_id: &str) -> Result<SandboxRecord, ControlError> {
        let rec = self.store.find_sandbox(&p.workspace_id, name_or_id)?;
        match rec {
            Some(r) if visible(p, &r) => Ok(r),
            _ => Err(ControlError::NotFound(format!(
                "Sandbox '{name_or_id}' not found"
            ))),
        }
    }

    /// Sandboxes the caller may see.
    pub fn list(&self, p: &Principal) -> Result<Vec<SandboxRecord>, ControlError> {
        let mut all = self.store.list_sandboxes(Some(&p.workspace_id))?;
        all.retain(|r| visible(p, r));
        Ok(all)
    }

    /// Sandbox counts per status across the host, for metrics.
    pub fn counts(&self) -> Result<Vec<(&'static str, u64)>, ControlError> {
        let all = self.store.list_sandboxes(None)?;
        let mut out = Vec::new();
        for s in [
            SandboxStatus::Provisioning,
            SandboxStatus::Ready,
            SandboxStatus::Stopped,
            SandboxStatus::Failed,
            SandboxStatus::Deleting,
        ] {
            out.push((
                s.as_str(),
                all.iter().filter(|r| r.status == s).count() as u64,
            ));
        }
        Ok(out)
    }

    /// The URL of a sandbox's data plane.
    pub fn dataplane_url(&self, rec: &SandboxRecord) -> String {
        format!("{}/dp/{}", self.cfg.public_url, rec.id)
    }

    /// Creates a sandbox. Returns at once with status `provisioning`; the boot runs in the
    /// background (see [`Control::wait_settled`]).
    pub fn create(
        self: &Arc<Self>,
        p: &Principal,
        req: CreateSandbox,
    ) -> Result<SandboxRecord, ControlError> {
        config::validate_passthrough(&req)?;
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
            rc.validate()?;
        }
        if let Some(name) = &req.name {
            validate_name(name)?;
        }
        let image = self.resolve_snapshot(req.snapshot.as_deref())?;
        let d = SandboxConfig::default();
        let cfg = SandboxConfig {
            snapshot: image.to_string(),
            vcpus: req.vcpus.unwrap_or(d.vcpus),
            mem_bytes: req.mem_bytes.unwrap_or(d.mem_bytes),
            fs_capacity_bytes: req.fs_capacity_bytes.unwrap_or(d.fs_capacity_bytes),
            idle_ttl_seconds: req.idle_ttl_seconds.unwrap_or(d.idle_ttl_seconds),
            delete_after_stop_seconds: req
                .delete_after_stop_seconds
                .unwrap_or(d.delete_after_stop_seconds),
            persistent: req.persistent.unwrap_or(true),
            run_config: req.run_config.unwrap_or_default(),
            labels: req.labels.unwrap_or_default(),
            access_delegation: req.access_delegation,
            proxy_config: req.proxy_config,
            mount_config: req.mount_config,
        };
        let t = now();
        let mut rec = SandboxRecord {
            id: uuid::Uuid::new_v4().to_string(),
            workspace_id: p.workspace_id.clone(),
            created_by: p.user_id.clone(),
            name: String::new(),
            runtime_id: SandboxId::generate(),
            status: SandboxStatus::Provisioning,
            status_message: None,
            config: cfg,
            handle: None,
            created_at: t,
            updated_at: t,
            stopped_at: None,
        };
        let admission = self
            .admission
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        self.cfg.limits.admit(
            &self.store.list_sandboxes(None)?,
            &p.user_id,
            rec.config.mem_bytes,
        )?;
        match req.name {
            Some(name) => {
                rec.name = name;
                self.store
                    .insert_sandbox(&rec)
                    .map_err(|e| name_conflict(e, &rec.name))?;
            }
            None => loop {
                let raw = uuid::Uuid::new_v4().simple().to_string();
                rec.name = format!("sandbox-{}", &raw[..6]);
                match self.store.insert_sandbox(&rec) {
                    Ok(()) => break,
                    Err(StoreError::Conflict(_)) => {}
                    Err(e) => return Err(e.into()),
                }
            },
        }
        drop(admission);
        self.touch(&rec.id);
        self.changed();
        let this = self.clone();
        let id = rec.id.clone();
        tokio::spawn(async move { this.boot(&id, true).await });
        Ok(rec)
    }

    fn resolve_snapshot(&self, snapshot: Option<&str>) -> Result<ImageRef, ControlError> {
        let image = match snapshot {
            None => ImageRef::default_image(),
            Some(s) => s
                .parse()
                .map_err(|_| ControlError::NotFound(format!("Snapshot '{s}' not found")))?,
        };
        use warren_runtime::image::ImageStatus;
        // The default image always exists on a working server: while it is missing the answer
        // is 503 with the reason, never a 404 that would send the client looking for a typo.
        let default = image == ImageRef::default_image();
        match self.driver.image_status(&image) {
            ImageStatus::Present => Ok(image),
            ImageStatus::Building => Err(ControlError::Unavailable(format!(
                "The default image '{image}' is being built on this server; try again in a minute"
            ))),
            ImageStatus::Failed(reason) => Err(ControlError::Unavailable(format!(
                "The default image '{image}' could not be built ({reason}); the server retries the build"
            ))),
            ImageStatus::Missing if default => Err(ControlError::Unavailable(format!(
                "The default image '{image}' is not built on this server; build it with `warren image build`"
            ))),
            ImageStatus::Missing => Err(ControlError::NotFound(format!(
                "Snapshot '{image}' not found"
            ))),
        }
    }

    /// Boots a provisioning sandbox (fresh storage when `fresh`), under its lock.
    async fn boot(self: &Arc<Self>, id: &str, fresh: bool) {
        let lock = self.lock_for(id);
        let _held = lock.lock().await;
        let Ok(Some(mut rec)) = self.store.get_sandbox(id) else {
            return;
        };
        if rec.status != SandboxStatus::Provisioning {
            return;
        }
        let spec = spec_of(&rec, self.cfg.limits.pids);
        let started = Instant::now();
        let result = if fresh || !self.driver.has_storage(&rec.runtime_id) {
            self.driver.create(&spec).await
        } else {
            self.driver.start(&spec).await
        };
        rec.updated_at = now();
        match result {
            Ok(handle) => {
                self.metrics.observe_create(started.elapsed());
                tracing::info!(sandbox = %rec.name, runtime_id = %rec.runtime_id, us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX), "sandbox ready");
                rec.status = SandboxStatus::Ready;
                rec.status_message = None;
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
        config::check_proxy_config(req.proxy_config.as_ref())?;
        if let Some(rc) = &req.run_config {
            rc.validate()?;
            rec.config.run_config = rec.config.run_config.layered(rc);
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
            rec.config.mem_bytes = v;
        }
        if let Some(v) = req.fs_capacity_bytes {
            rec.config.fs_capacity_bytes = v;
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

    /// Stops a sandbox: processes end, files stay. Idempotent.
    pub async fn stop(
        &self,
        p: &Principal,
        name_or_id: &str,
    ) -> Result<SandboxRecord, ControlError> {
        let rec = self.find(p, name_or_id)?;
        self.stop_id(&rec.id, None).await
    }

    async fn stop_id(
        &self,
        id: &str,
        reason: Option<String>,
    ) -> Result<SandboxRecord, ControlError> {
        let lock = self.lock_for(id);
        let _held = lock.lock().await;
        let mut rec = self.record(id)?;
        match rec.status {
            SandboxStatus::Stopped | SandboxStatus::Failed => return Ok(rec),
            SandboxStatus::Deleting => {
                return Err(being_deleted(&rec));
            }
            SandboxStatus::Provisioning | SandboxStatus::Ready => {}
        }
        self.driver
            .stop(&rec.runtime_id, rec.handle.as_ref())
            .await?;
        if !rec.config.persistent {
            self.driver.destroy(&rec.runtime_id, None).await?;
        }
        rec.status = SandboxStatus::Stopped;
        rec.status_message = reason;
        rec.handle = None;
        rec.stopped_at = Some(now());
        rec.updated_at = now();
        self.store.update_sandbox(&rec)?;
        self.changed();
        Ok(rec)
    }

    /// Starts a stopped (or failed) sandbox; returns at once in `provisioning`.
    pub async fn start(
        self: &Arc<Self>,
        p: &Principal,
        name_or_id: &str,
    ) -> Result<SandboxRecord, ControlError> {
        let rec = self.find(p, name_or_id)?;
        self.start_id(&rec.id).await
    }

    async fn start_id(self: &Arc<Self>, id: &str) -> Result<SandboxRecord, ControlError> {
        let lock = self.lock_for(id);
        let rec = {
            let _held = lock.lock().await;
            let mut rec = self.record(id)?;
            match rec.status {
                SandboxStatus::Ready | SandboxStatus::Provisioning => return Ok(rec),
                SandboxStatus::Deleting => {
                    return Err(being_deleted(&rec));
                }
                SandboxStatus::Stopped | SandboxStatus::Failed => {}
            }
            let _admission = self
                .admission
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let others: Vec<SandboxRecord> = self
                .store
                .list_sandboxes(None)?
                .into_iter()
                .filter(|r| r.id != rec.id)
                .collect();
            // Starting adds no sandbox, only committed memory: check with this one left out.
            let mut limits = self.cfg.limits.clone();
            limits.max_sandboxes = usize::MAX;
            limits.user_max_sandboxes = None;
            limits.admit(&others, &rec.created_by, rec.config.mem_bytes)?;
            rec.status = SandboxStatus::Provisioning;
            rec.status_message = None;
            rec.updated_at = now();
            self.store.update_sandbox(&rec)?;
            rec
        };
        self.touch(id);
        self.changed();
        let this = self.clone();
        let id = id.to_owned();
        tokio::spawn(async move { this.boot(&id, false).await });
        Ok(rec)
    }

    /// Deletes a sandbox and everything it holds.
    pub async fn delete(&self, p: &Principal, name_or_id: &str) -> Result<(), ControlError> {
        let rec = self.find(p, name_or_id)?;
        self.delete_id(&rec.id).await
    }

    async fn delete_id(&self, id: &str) -> Result<(), ControlError> {
        let lock = self.lock_for(id);
        let _held = lock.lock().await;
        let Some(mut rec) = self.store.get_sandbox(id)? else {
            return Ok(());
        };
        if rec.status != SandboxStatus::Deleting {
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
            let retry = self.schedule_delete_retry(id);
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
        self.pending_deletes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(id);
        self.activity
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(id);
        self.locks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(id);
        self.changed();
        Ok(())
    }

    /// Notes a failed deletion of `id` and returns the wait before the sweeper tries again.
    fn schedule_delete_retry(&self, id: &str) -> Duration {
        let mut pending = self
            .pending_deletes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let backoff = pending.get(id).map_or(DELETE_RETRY_FIRST, |r| {
            (r.backoff * 2).min(DELETE_RETRY_MAX)
        });
        pending.insert(
            id.to_owned(),
            Retry {
                at: Instant::now() + backoff,
                backoff,
            },
        );
        backoff
    }

    /// Whether a deletion is due: never tried by this process, or its retry time has come.
    fn delete_due(&self, id: &str) -> bool {
        self.pending_deletes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(id)
            .is_none_or(|r| Instant::now() >= r.at)
    }

    /// The sandbox ready to serve a data-plane request: a stopped one is started (auto-wake) and
    /// a provisioning one awaited.
    pub async fn running(self: &Arc<Self>, id: &str) -> Result<Running, ControlError> {
        let guard = self.guard(id);
        let deadline = Duration::from_secs(120);
        for _ in 0..3 {
            let rec = self.record(id)?;
            match (rec.status, rec.handle.clone()) {
                (SandboxStatus::Ready, Some(handle)) => {
                    return Ok(Running {
                        record: rec,
                        handle,
                        guard,
                    });
                }
                (SandboxStatus::Stopped, _) => {
                    self.start_id(id).await?;
                    self.wait_settled(id, deadline).await?;
                }
                (SandboxStatus::Provisioning, _) => {
                    self.wait_settled(id, deadline).await?;
                }
                (SandboxStatus::Failed, _) => {
                    return Err(ControlError::NotReady(format!(
                        "Sandbox '{}' failed: {}",
                        rec.name,
                        rec.status_message.unwrap_or_default()
                    )));
                }
                _ => {
                    return Err(ControlError::NotReady(format!(
                        "Sandbox '{}' is not ready",
                        rec.name
                    )));
                }
            }
        }
        Err(ControlError::NotReady(format!(
            "Sandbox '{id}' did not become ready"
        )))
    }

    /// A data-plane target the caller may use, found by sandbox id.
    pub async fn running_for(
        self: &Arc<Self>,
        p: &Principal,
        id: &str,
    ) -> Result<Running, ControlError> {
        let rec = self.store.get_sandbox(id)?;
        match rec {
            Some(r) if r.workspace_id == p.workspace_id && visible(p, &r) => {
                self.running(&r.id).await
            }
            _ => Err(ControlError::NotFound(format!("Sandbox '{id}' not found"))),
        }
    }

    /// Connects to a running sandbox's agent. A dead agent marks the sandbox stopped, so the
    /// next request wakes it again.
    pub async fn connect(&self, running: &Running) -> Result<AgentConn, ControlError> {
        match self.driver.connect(&running.handle).await {
            Ok(c) => Ok(c),
            Err(e) => {
                if !self.driver.is_running(&running.handle) {
                    let _ = self
                        .stop_id(
                            &running.record.id,
                            Some("the sandbox's processes exited".into()),
                        )
                        .await;
                }
                Err(e.into())
            }
        }
    }

    /// Times the OOM killer fired in a running sandbox (0 when it cannot be read). A command
    /// killed by SIGKILL while this rose was killed for memory (SECURITY.md row 35).
    pub fn oom_kills(&self, rec: &SandboxRecord) -> u64 {
        self.driver.oom_kills(&rec.runtime_id).unwrap_or(0)
    }

    /// Re-adopts what still runs, marks what died, finishes deletions and removes resources
    /// nothing refers to. A sandbox that cannot be handled now is logged and left for the
    /// sweeper: the daemon starts regardless.
    async fn recover(self: &Arc<Self>) -> Result<(), ControlError> {
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

    async fn recover_one(self: &Arc<Self>, rec: &SandboxRecord) -> Result<(), ControlError> {
        match rec.status {
            SandboxStatus::Ready | SandboxStatus::Provisioning => {
                if let Some(h) = &rec.handle
                    && rec.status == SandboxStatus::Ready
                    && self.driver.is_running(h)
                {
                    tracing::info!(sandbox = %rec.name, pid = h.pid, "re-adopted running sandbox");
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
                let activity = self
                    .activity
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .get(&rec.id)
                    .copied();
                let idle = activity.is_some_and(|a| {
                    a.inflight == 0 && a.last.elapsed() >= Duration::from_secs(ttl)
                });
                if ttl > 0 && idle {
                    tracing::info!(sandbox = %rec.name, ttl, "stopping idle sandbox");
                    self.stop_id(&rec.id, Some(format!("stopped after {ttl} s idle")))
                        .await?;
                    self.audit(None, "sandbox.idle_stop", Some(&rec.id), None);
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
                    self.audit(None, "sandbox.auto_delete", Some(&rec.id), None);
                }
            }
            SandboxStatus::Deleting => {
                if self.delete_due(&rec.id) {
                    self.delete_id(&rec.id).await?;
                }
            }
            SandboxStatus::Provisioning | SandboxStatus::Failed => {}
        }
        Ok(())
    }

    /// The effective run_config of a command: sandbox layer, then the command's own.
    pub fn effective_run_config(
        &self,
        rec: &SandboxRecord,
        command: Option<&RunConfig>,
    ) -> RunConfig {
        match command {
            Some(c) => rec.config.run_config.layered(c),
            None => rec.config.run_config.clone(),
        }
    }
}

/// Why a deletion is pending, in words the API may show: no host path, no raw errno text.
fn pending_reason(e: &warren_runtime::DriverError) -> &'static str {
    use warren_runtime::DriverError as E;
    match e {
        E::Storage(_) => "the sandbox's files could not be removed yet",
        E::StopTimeout(_) => "the sandbox's processes did not stop yet",
        E::Cgroup(_) => "the sandbox's cgroup could not be removed yet",
        E::Slot(_) => "the sandbox's user id range could not be released yet",
        _ => "the sandbox's resources could not be released yet",
    }
}

fn being_deleted(rec: &SandboxRecord) -> ControlError {
    ControlError::NotReady(format!("Sandbox '{}' is being deleted", rec.name))
}

fn visible(p: &Principal, r: &SandboxRecord) -> bool {
    r.workspace_id == p.workspace_id && (p.is_admin || r.created_by == p.user_id)
}

fn name_conflict(e: StoreError, name: &str) -> ControlError {
    match e {
        StoreError::Conflict(_) => {
            ControlError::Conflict(format!("Sandbox with name '{name}' already exists"))
        }
        other => other.into(),
    }
}

fn spec_of(rec: &SandboxRecord, pids: u32) -> SandboxSpec {
    SandboxSpec {
        id: rec.runtime_id.clone(),
        image: rec
            .config
            .snapshot
            .parse()
            .unwrap_or_else(|_| ImageRef::default_image()),
        limits: Limits {
            millicpus: rec.config.vcpus.saturating_mul(1000),
            memory_bytes: rec.config.mem_bytes,
            disk_bytes: rec.config.fs_capacity_bytes,
            pids,
        },
    }
}

/// Writes a secret file readable by its owner only, atomically.
fn write_secret(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(contents.as_bytes())?;
    f.write_all(b"\n")?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod key_cache_tests {
    use super::*;

    fn principal(user: &str) -> Principal {
        Principal {
            workspace_id: "ws".into(),
            user_id: user.into(),
            user_name: user.into(),
            is_admin: false,
        }
    }

    #[test]
    fn a_lookup_that_raced_a_revoke_is_not_cached() {
        let cache = KeyCache::default();
        // A request misses the cache and reads the store while the key is still valid...
        let generation = cache.get("h").expect_err("empty cache");
        // ...the key is revoked before it inserts...
        cache.invalidate();
        // ...so its late insert is dropped and the next request goes to the store.
        cache.insert(generation, "h".into(), principal("bob"));
        assert!(cache.get("h").is_err(), "a revoked key was re-cached");
    }

    #[test]
    fn lookups_after_a_revoke_are_cached_again() {
        let cache = KeyCache::default();
        let g = cache.get("h").expect_err("empty cache");
        cache.insert(g, "h".into(), principal("bob"));
        assert_eq!(cache.get("h").map(|p| p.user_id), Ok("bob".to_owned()));
        cache.invalidate();
        let g2 = cache.get("h").expect_err("a revoke empties the cache");
        assert_ne!(g, g2);
        cache.insert(g2, "h".into(), principal("bob"));
        assert!(cache.get("h").is_ok());
    }
}

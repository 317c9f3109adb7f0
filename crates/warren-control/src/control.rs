//! The control plane's one object: the store, the driver and the per-process state every verb
//! shares. The verbs live one per file beside this one (`create.rs`, `start.rs`, ...), each
//! opening with its status guard; this file holds only what they all use.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::sync::watch;
use warren_driver::{Driver, SandboxSpec, Tier};
use warren_types::{ImageRef, Limits, SandboxStatus};

use crate::admission::{self, ResourceLimits};
use crate::config::{Egress, SandboxConfig};
use crate::error::ControlError;
use crate::listing::{ListQuery, Listed, Listing, Order, Page, SortValue};
use crate::metrics::Metrics;
use crate::parked::Parked;
use crate::state::{ActivityMap, KeyCache, PendingDeletes};
use crate::store::{Principal, SandboxRecord, SqliteStore, Store, StoreError};

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
    /// The egress proxy, when sandboxes have egress.
    pub egress: Option<Arc<dyn Egress>>,
    /// The server's public signing key; without one, no JWKS is published and login-mode
    /// service URLs are refused.
    pub signer: Option<Arc<dyn crate::config::TokenSigner>>,
    /// The domain service hosts live under (`<port>-<id>.<domain>`), or none for path-based
    /// service URLs only.
    pub service_domain: Option<String>,
    /// Bounds of the default warm pool (creates of the default image and shape); 0/0 turns
    /// it off. Only a daemon that runs [`Control::pools_forever`] fills it.
    pub default_pool: crate::pool::PoolSize,
    /// The tier of creates that name none (`warren serve --default-tier`).
    pub default_tier: warren_driver::Tier,
}

/// The control plane.
#[derive(Debug)]
pub struct Control {
    pub(crate) store: Arc<SqliteStore>,
    /// Appends audit entries off the request path.
    pub(crate) audit_log: crate::audit_log::AuditLog,
    pub(crate) driver: Arc<dyn Driver>,
    pub(crate) cfg: ControlConfig,
    /// One lock per sandbox: every lifecycle change of a sandbox runs under it, so a stop never
    /// races a start; reads take no lock.
    pub(crate) locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    pub(crate) activity: ActivityMap,
    /// Bumped on every status change, so waiters re-read instead of polling.
    pub(crate) changes: watch::Sender<u64>,
    pub(crate) keys: KeyCache,
    pub(crate) metrics: Arc<Metrics>,
    /// Held across the quota check and the insert of a create (or the status change of a
    /// start), so concurrent requests cannot all pass a check that only one of them fits.
    pub(crate) admission: Mutex<()>,
    pub(crate) pending_deletes: PendingDeletes,
    /// SSE command streams waiting for their client's acknowledgement.
    pub(crate) parked: Parked,
    /// Running sandboxes by the slot of their network link (the egress proxy's lookup).
    pub(crate) slots: Mutex<HashMap<u32, String>>,
    /// Held across the read and the write of a secret's upsert, which keeps the value when the
    /// request omits it and the ids of hosts it keeps: two admins' upserts must not interleave.
    pub(crate) secret_writes: Mutex<()>,
    /// The service token signing key, read or made on first use (`signing.rs`).
    pub(crate) service_key: Mutex<Option<Arc<Vec<u8>>>>,
    /// Sign-in codes already traded for a session, with their expiry (`service_login.rs`).
    pub(crate) login_codes: Mutex<HashMap<String, u64>>,
    /// When this control plane opened (the default snapshot's timestamps).
    pub(crate) started_at: SystemTime,
    /// The latest progress line of each snapshot build this process runs.
    pub(crate) build_progress: Arc<Mutex<HashMap<String, String>>>,
    /// Bumped on every key revocation, so long-lived sessions re-check their key.
    pub(crate) revocations: watch::Sender<u64>,
    /// Bumped whenever a service grant is revoked or changes how it is shared, so open
    /// WebSocket connections through a service URL re-check their access.
    pub(crate) grant_changes: watch::Sender<u64>,
    /// Warm pools (`pool.rs`).
    pub(crate) pools: crate::pool::Pools,
    /// Pooled sandboxes being destroyed, which a shutdown waits for.
    pub(crate) removals: tokio_util::task::TaskTracker,
}

/// Now, to the microsecond: what the store keeps, so a record a verb returns equals the one
/// read back.
pub(crate) fn now() -> SystemTime {
    let t = SystemTime::now();
    let since = t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    std::time::UNIX_EPOCH
        + Duration::from_micros(u64::try_from(since.as_micros()).unwrap_or(u64::MAX))
}

impl Control {
    /// Opens the state store in the data dir, creates the first admin key on first start
    /// (returned once, also written to `<data-dir>/admin.key`), re-adopts running sandboxes and
    /// removes orphans.
    pub async fn open(
        cfg: ControlConfig,
        driver: Arc<dyn Driver>,
    ) -> Result<(Arc<Self>, Option<String>), ControlError> {
        let store = SqliteStore::open(&cfg.data_dir.join("warren.db"))?;
        Self::with_store(cfg, driver, store).await
    }

    /// Opens the control plane of a data dir another process (`warren serve`) may be serving,
    /// for a short-lived local client such as `warren run`: the same store, limits and audit
    /// log, but no recovery and no sweeper, which belong to the daemon (recovery here would
    /// stop sandboxes the daemon is booting). Returns the local admin: the data dir's owner.
    pub async fn open_local(
        cfg: ControlConfig,
        driver: Arc<dyn Driver>,
    ) -> Result<(Arc<Self>, Principal), ControlError> {
        let store = SqliteStore::open(&cfg.data_dir.join("warren.db"))?;
        // A short-lived client exits right after its verb: its entries are written before
        // each returns, not by a thread the exit would cut short.
        let control = Arc::new(Self::new(cfg, driver, store, false));
        let key = match control.bootstrap_admin()? {
            Some(key) => key,
            None => std::fs::read_to_string(control.cfg.data_dir.join("admin.key"))
                .map_err(|e| {
                    ControlError::Forbidden(format!(
                        "cannot act as this data dir's admin: failed to read admin.key: {e}"
                    ))
                })?
                .trim()
                .to_owned(),
        };
        let admin = control.authenticate(&key)?.ok_or_else(|| {
            ControlError::Forbidden("this data dir's admin.key is not a valid key".into())
        })?;
        Ok((control, admin))
    }

    fn new(
        cfg: ControlConfig,
        driver: Arc<dyn Driver>,
        store: SqliteStore,
        background_audit: bool,
    ) -> Self {
        let store = Arc::new(store);
        Self {
            audit_log: crate::audit_log::AuditLog::new(store.clone(), background_audit),
            store,
            driver,
            cfg,
            locks: Mutex::default(),
            activity: ActivityMap::default(),
            changes: watch::channel(0).0,
            keys: KeyCache::default(),
            metrics: Arc::default(),
            admission: Mutex::default(),
            pending_deletes: PendingDeletes::default(),
            parked: Parked::default(),
            slots: Mutex::default(),
            secret_writes: Mutex::default(),
            service_key: Mutex::default(),
            login_codes: Mutex::default(),
            started_at: now(),
            build_progress: Arc::default(),
            revocations: watch::channel(0).0,
            grant_changes: watch::channel(0).0,
            pools: crate::pool::Pools::default(),
            removals: tokio_util::task::TaskTracker::new(),
        }
    }

    /// [`Control::open`] on a given store (an in-memory one in tests).
    pub async fn with_store(
        cfg: ControlConfig,
        driver: Arc<dyn Driver>,
        store: SqliteStore,
    ) -> Result<(Arc<Self>, Option<String>), ControlError> {
        let control = Arc::new(Self::new(cfg, driver, store, true));
        let admin_key = control.bootstrap_admin()?;
        control.recover().await?;
        control.load_pools();
        Ok((control, admin_key))
    }

    /// Counters for `/metrics`.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The configuration.
    pub fn config(&self) -> &ControlConfig {
        &self.cfg
    }

    /// Whether this host can run sandboxes of `tier` now; when not, why.
    pub fn tier_support(&self, tier: Tier) -> Result<(), String> {
        self.driver.tier_support(tier)
    }

    /// Refuses a shape above the per-sandbox maxima (naming the limit).
    pub(crate) fn check_shape(
        &self,
        vcpus: Option<u32>,
        mem: Option<u64>,
        fs: Option<u64>,
    ) -> Result<(), ControlError> {
        let free = fs.and_then(|_| admission::free_bytes(&self.cfg.data_dir.join("fs")));
        self.cfg.limits.check_shape(vcpus, mem, fs, free)
    }

    /// The admission lock: held across a capacity check and the insert it admits.
    pub(crate) fn admission(&self) -> std::sync::MutexGuard<'_, ()> {
        self.admission
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Refuses a new sandbox when the host is out of memory, disk, processes or descriptors.
    pub(crate) fn host_capacity(&self) -> Result<(), ControlError> {
        admission::HostReadings::read(&self.cfg.data_dir.join("fs")).check(&self.cfg.limits)
    }

    /// A sandbox's record by id.
    pub(crate) fn record(&self, id: &str) -> Result<SandboxRecord, ControlError> {
        self.store
            .get_sandbox(id)?
            .ok_or_else(|| ControlError::NotFound(format!("Sandbox '{id}' not found")))
    }

    pub(crate) fn lock_for(&self, id: &str) -> Arc<tokio::sync::Mutex<()>> {
        crate::state::lock(&self.locks)
            .entry(id.to_owned())
            .or_default()
            .clone()
    }

    pub(crate) fn changed(&self) {
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Marks the sandbox active now.
    pub fn touch(&self, id: &str) {
        self.activity.touch(id);
    }

    /// Finds a sandbox the caller may see; others' sandboxes are indistinguishable from missing
    /// ones, so names do not leak across users.
    pub fn find(&self, p: &Principal, name_or_id: &str) -> Result<SandboxRecord, ControlError> {
        match self.store.find_sandbox(&p.workspace_id, name_or_id)? {
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

    /// The sandboxes the caller can see, filtered, sorted and paged (oldest first unless the
    /// query sorts otherwise; all of them unless it asks for pages).
    pub fn list_page(
        &self,
        p: &Principal,
        q: &ListQuery,
    ) -> Result<Page<SandboxRecord>, ControlError> {
        Ok(q.page(self.list(p)?, p, &SANDBOX_LISTING)?)
    }

    /// Sandboxes per status.
    pub fn counts(&self) -> Result<StatusCounts, ControlError> {
        Ok(status_counts(&self.store.list_sandboxes(None)?))
    }

    /// What `/metrics` says of the sandboxes, from one read of the store: their counts per
    /// status, and the `warren_sandboxes_by_tier` gauge (Prometheus text).
    pub fn sandbox_metrics(&self) -> Result<(StatusCounts, String), ControlError> {
        let all = self.store.list_sandboxes(None)?;
        Ok((status_counts(&all), tier_gauge(&all)))
    }

    /// The URL of a sandbox's data plane.
    pub fn dataplane_url(&self, rec: &SandboxRecord) -> String {
        format!("{}/dp/{}", self.cfg.public_url, rec.id)
    }
}

/// A new `provisioning` sandbox of the caller's, with fresh ids and no name yet (see
/// `Control::insert_named`).
pub(crate) fn new_record(p: &Principal, config: SandboxConfig) -> SandboxRecord {
    let t = now();
    SandboxRecord {
        id: uuid::Uuid::new_v4().to_string(),
        workspace_id: p.workspace_id.clone(),
        created_by: p.user_id.clone(),
        name: String::new(),
        runtime_id: warren_types::SandboxId::generate(),
        status: SandboxStatus::Provisioning,
        status_message: None,
        config,
        handle: None,
        created_at: t,
        updated_at: t,
        stopped_at: None,
    }
}

/// Refuses a status change the lifecycle does not allow (the guard every verb opens with).
pub(crate) fn guard(rec: &SandboxRecord, next: SandboxStatus) -> Result<(), ControlError> {
    if rec.status.can_become(next) {
        return Ok(());
    }
    Err(ControlError::NotReady(match rec.status {
        SandboxStatus::Deleting => format!("Sandbox '{}' is being deleted", rec.name),
        s => format!("Sandbox '{}' is {s} and cannot become {next}", rec.name),
    }))
}

pub(crate) fn visible(p: &Principal, r: &SandboxRecord) -> bool {
    r.workspace_id == p.workspace_id && (p.is_admin || r.created_by == p.user_id)
}

pub(crate) fn name_conflict(e: StoreError, name: &str) -> ControlError {
    match e {
        StoreError::Conflict(_) => {
            ControlError::Conflict(format!("Sandbox with name '{name}' already exists"))
        }
        other => other.into(),
    }
}

pub(crate) fn spec_of(rec: &SandboxRecord, pids: u32) -> SandboxSpec {
    spec_for(&rec.runtime_id, &rec.config, pids)
}

/// What the driver makes for a sandbox of this config.
pub(crate) fn spec_for(
    id: &warren_types::SandboxId,
    cfg: &SandboxConfig,
    pids: u32,
) -> SandboxSpec {
    SandboxSpec {
        id: id.clone(),
        image: cfg
            .snapshot
            .parse()
            .unwrap_or_else(|_| ImageRef::default_image()),
        limits: Limits {
            millicpus: cfg.vcpus.saturating_mul(1000),
            memory_bytes: cfg.mem_bytes,
            disk_bytes: cfg.fs_capacity_bytes,
            pids,
        },
        trust: String::new(),
        tier: cfg.tier,
        volumes: cfg
            .volumes
            .iter()
            .map(|a| warren_driver::VolumeMount {
                volume_id: a.volume_id.clone(),
                mount_path: a.mount_path.clone(),
                read_only: a.read_only,
            })
            .collect(),
    }
}

/// Runs a state-changing operation in a task of its own and waits for it. A caller that goes
/// away mid-request (a client disconnect drops the handler's future at whatever await it is
/// in) then cannot cut the operation short between its steps: records, files and the audit
/// entry all land, or its own rollback runs.
pub(crate) async fn detached<T: Send + 'static>(
    work: impl Future<Output = Result<T, ControlError>> + Send + 'static,
) -> Result<T, ControlError> {
    match tokio::spawn(work).await {
        Ok(result) => result,
        // A panic in the operation is the caller's panic, as it was before the task.
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(_) => Err(ControlError::Unavailable(
            "the server is shutting down".into(),
        )),
    }
}

/// An error's whole cause chain on one line, for logs.
pub(crate) fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cur = s.source();
    }
    out
}

/// Sandboxes per status name, in the order of [`STATES`].
pub type StatusCounts = Vec<(&'static str, u64)>;

/// Every status a record can have, in the order metrics list them.
const STATES: [SandboxStatus; 5] = [
    SandboxStatus::Provisioning,
    SandboxStatus::Ready,
    SandboxStatus::Stopped,
    SandboxStatus::Failed,
    SandboxStatus::Deleting,
];

fn status_counts(all: &[SandboxRecord]) -> StatusCounts {
    STATES
        .into_iter()
        .map(|s| {
            (
                s.as_str(),
                all.iter().filter(|r| r.status == s).count() as u64,
            )
        })
        .collect()
}

/// Sandboxes by tier and state, as a Prometheus gauge.
fn tier_gauge(all: &[SandboxRecord]) -> String {
    use std::fmt::Write;
    let mut o = String::from(
        "# HELP warren_sandboxes_by_tier Sandboxes by isolation tier and state.\n# TYPE warren_sandboxes_by_tier gauge\n",
    );
    for tier in [Tier::Jail, Tier::Vm] {
        for state in STATES {
            let n = all
                .iter()
                .filter(|r| r.config.tier == tier && r.status == state)
                .count();
            let _ = writeln!(
                o,
                "warren_sandboxes_by_tier{{tier=\"{tier}\",state=\"{}\"}} {n}",
                state.as_str()
            );
        }
    }
    o
}

/// How sandboxes list: everything when no page is asked for (the hand-written SDKs read one
/// page), oldest first.
const SANDBOX_LISTING: Listing = Listing {
    columns: &[
        "name",
        "status",
        "created_at",
        "stopped_at",
        "idle_ttl_seconds",
        "delete_after_stop_seconds",
    ],
    default_sort: ("created_at", Order::Asc),
    default_limit: None,
    max_limit: None,
};

impl Listed for SandboxRecord {
    fn list_id(&self) -> &str {
        &self.id
    }
    fn list_name(&self) -> &str {
        &self.name
    }
    fn list_status(&self) -> Option<&str> {
        Some(self.status.as_str())
    }
    fn list_labels(&self) -> Option<&std::collections::BTreeMap<String, String>> {
        Some(&self.config.labels)
    }
    fn list_creator(&self) -> Option<&str> {
        Some(&self.created_by)
    }
    fn list_tag_values(&self) -> Option<&[String]> {
        Some(&self.config.tag_value_ids)
    }
    fn sort_value(&self, column: &str) -> SortValue {
        let secs = |s: u64| SortValue::Int(i64::try_from(s).unwrap_or(i64::MAX));
        match column {
            "name" => SortValue::Text(self.name.clone()),
            "status" => SortValue::Text(self.status.as_str().to_owned()),
            "stopped_at" => self.stopped_at.map_or(SortValue::Null, SortValue::time),
            "idle_ttl_seconds" => secs(self.config.idle_ttl_seconds),
            "delete_after_stop_seconds" => secs(self.config.delete_after_stop_seconds),
            _ => SortValue::time(self.created_at),
        }
    }
}

//! What every test of a verb starts from: a control plane on the fake driver and an in-memory
//! store, its admin, and helpers to make sandboxes and read command streams.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tempfile::TempDir;
use warren_driver::fake::FakeDriver;
use warren_types::SandboxStatus;

use crate::{
    CommandStream, Control, ControlConfig, CreateSandbox, ExecEvent, Principal, ResourceLimits,
    SandboxRecord, SqliteStore, Store, Stream,
};

/// How long a test waits for a boot; the fake boots at once, so this only bounds a hang.
pub(super) const SETTLE: Duration = Duration::from_secs(5);

/// One gibibyte, the default memory of a sandbox.
pub(super) const GIB: u64 = 1 << 30;

/// A control plane on the fake driver.
pub(super) struct Harness {
    pub(super) control: Arc<Control>,
    /// Shares its state with the driver the control plane holds.
    pub(super) fake: FakeDriver,
    /// The workspace's first admin.
    pub(super) admin: Principal,
    /// The first admin's key, as the bootstrap returned it.
    pub(super) admin_key: String,
    /// The data dir (kept alive for the control plane's lifetime).
    pub(super) dir: TempDir,
}

/// Limits no test reaches unless it means to.
pub(super) fn generous() -> ResourceLimits {
    ResourceLimits {
        max_vcpus: 64,
        max_mem_bytes: 1 << 40,
        max_fs_capacity_bytes: 1 << 40,
        pids: 4096,
        max_sandboxes: 1000,
        max_committed_mem_bytes: None,
        user_max_sandboxes: None,
        user_max_mem_bytes: None,
        reserve_mem_bytes: None,
        reserve_disk_bytes: 0,
    }
}

pub(super) fn config(dir: &TempDir, limits: ResourceLimits) -> ControlConfig {
    ControlConfig {
        default_pool: crate::pool::PoolSize::default(),
        default_tier: warren_driver::Tier::Jail,
        data_dir: dir.path().to_owned(),
        public_url: "http://warren.test".into(),
        sweep_interval: Duration::from_secs(3600),
        egress: None,
        signer: None,
        service_domain: None,
        limits,
    }
}

pub(super) async fn harness() -> Harness {
    harness_with(generous()).await
}

pub(super) async fn harness_with(limits: ResourceLimits) -> Harness {
    harness_configured(limits, |_| {}).await
}

/// A harness whose configuration `edit` changes first.
pub(super) async fn harness_configured(
    limits: ResourceLimits,
    edit: impl FnOnce(&mut ControlConfig),
) -> Harness {
    let dir = tempfile::tempdir().expect("tempdir");
    let fake = FakeDriver::new();
    let mut cfg = config(&dir, limits);
    edit(&mut cfg);
    let (control, admin_key) = Control::with_store(
        cfg,
        Arc::new(fake.clone()),
        SqliteStore::in_memory().expect("in-memory store"),
    )
    .await
    .expect("control plane");
    let admin_key = admin_key.expect("a fresh store bootstraps an admin key");
    let admin = control
        .authenticate(&admin_key)
        .expect("authenticate")
        .expect("the admin key authenticates");
    assert!(admin.is_admin);
    Harness {
        control,
        fake,
        admin,
        admin_key,
        dir,
    }
}

impl Harness {
    /// A new non-admin user of the admin's workspace.
    pub(super) fn user(&self, name: &str) -> Principal {
        self.user_with_key(name).0
    }

    /// A new non-admin user of the admin's workspace, with its key's id and the key.
    pub(super) fn user_with_key(&self, name: &str) -> (Principal, String, String) {
        let (id, key) = self
            .control
            .create_key(&self.admin, name, false)
            .expect("create key");
        let p = self
            .control
            .authenticate(&key)
            .expect("authenticate")
            .expect("a new key authenticates");
        assert!(!p.is_admin);
        (p, id, key)
    }

    /// Creates a sandbox named `name` and waits for its boot to end.
    pub(super) async fn sandbox(&self, p: &Principal, name: &str) -> SandboxRecord {
        self.sandbox_with(
            p,
            CreateSandbox {
                name: Some(name.into()),
                ..Default::default()
            },
        )
        .await
    }

    /// An upload of `chunks` to `path`, opened and written but not yet finished.
    pub(super) async fn unfinished_upload(
        &self,
        id: &str,
        path: &str,
        chunks: &[&[u8]],
    ) -> crate::Upload {
        let mut up = self.control.upload(&self.admin, id, path).await.unwrap();
        for c in chunks {
            self.control
                .upload_chunk(&mut up, c.to_vec())
                .await
                .unwrap();
        }
        up
    }

    /// Creates a sandbox and waits until it is ready.
    pub(super) async fn sandbox_with(&self, p: &Principal, req: CreateSandbox) -> SandboxRecord {
        let rec = self.control.create(p, req).expect("create");
        let rec = self.settle(&rec.id).await;
        assert_eq!(rec.status, SandboxStatus::Ready, "{rec:?}");
        rec
    }

    /// The record once the sandbox has left `provisioning`.
    pub(super) async fn settle(&self, id: &str) -> SandboxRecord {
        self.control
            .wait_settled(id, SETTLE)
            .await
            .expect("the boot ends")
    }

    /// Waits until the pooled sandboxes being removed are gone and no fill is booting one.
    pub(super) async fn settle_removals(&self) {
        let deadline = tokio::time::Instant::now() + SETTLE;
        while !self.control.removals.is_empty() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "pooled sandboxes were still being removed after {SETTLE:?}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// A ready sandbox, stopped.
    pub(super) async fn stopped(&self, p: &Principal, name: &str) -> SandboxRecord {
        let rec = self.sandbox(p, name).await;
        let rec = self.control.stop(p, &rec.id).await.expect("stop");
        assert_eq!(rec.status, SandboxStatus::Stopped);
        rec
    }

    /// A sandbox whose boot failed.
    pub(super) async fn failed(&self, p: &Principal, name: &str) -> SandboxRecord {
        self.fake.fail_next_create("no room at the inn");
        let rec = self
            .control
            .create(
                p,
                CreateSandbox {
                    name: Some(name.into()),
                    ..Default::default()
                },
            )
            .expect("create");
        let rec = self.settle(&rec.id).await;
        assert_eq!(rec.status, SandboxStatus::Failed);
        rec
    }

    /// A sandbox stuck in `deleting`: its cleanup failed and is pending.
    pub(super) async fn deleting(&self, p: &Principal, name: &str) -> SandboxRecord {
        let rec = self.sandbox(p, name).await;
        self.fake.fail_destroys(1);
        self.control
            .delete(p, &rec.id)
            .await
            .expect("a failed cleanup is not the caller's error");
        let rec = self.record(&rec.id);
        assert_eq!(rec.status, SandboxStatus::Deleting);
        rec
    }

    /// The stored record.
    pub(super) fn record(&self, id: &str) -> SandboxRecord {
        self.control
            .store
            .get_sandbox(id)
            .expect("store")
            .expect("the record exists")
    }

    /// Whether the record exists.
    pub(super) fn exists(&self, id: &str) -> bool {
        self.control.store.get_sandbox(id).expect("store").is_some()
    }

    /// Rewrites a stored record (to put it where no verb would, e.g. stopped long ago).
    pub(super) fn rewrite(&self, id: &str, f: impl FnOnce(&mut SandboxRecord)) {
        let mut rec = self.record(id);
        f(&mut rec);
        self.control.store.update_sandbox(&rec).expect("update");
    }

    /// How many lifecycle calls of `verb` the fake saw for this sandbox.
    pub(super) fn calls(&self, verb: &str, rec: &SandboxRecord) -> usize {
        let call = format!("{verb} {}", rec.runtime_id);
        self.fake.calls().iter().filter(|c| **c == call).count()
    }

    /// Whether the fake holds the sandbox's storage, and whether it runs.
    pub(super) fn fake_state(&self, rec: &SandboxRecord) -> Option<bool> {
        self.fake
            .sandboxes()
            .into_iter()
            .find(|(id, _)| *id == rec.runtime_id)
            .map(|(_, running)| running)
    }

    /// Audit entries with this action, the sweeper's (which name no workspace) included.
    pub(super) fn audited(&self, action: &str) -> Vec<crate::AuditEntry> {
        self.control.flush_audit();
        let mut all = self
            .control
            .store
            .list_audit(None, 0, 10_000)
            .expect("audit");
        all.retain(|e| e.action == action);
        all
    }
}

/// The record as the store keeps it: times to the microsecond. A verb returns its record with
/// the clock's full precision; a later read returns the stored one.
pub(super) fn as_stored(rec: &SandboxRecord) -> SandboxRecord {
    fn micros(t: SystemTime) -> SystemTime {
        let d = t.duration_since(UNIX_EPOCH).expect("after the epoch");
        UNIX_EPOCH + Duration::new(d.as_secs(), d.subsec_micros() * 1000)
    }
    let mut r = rec.clone();
    r.created_at = micros(r.created_at);
    r.updated_at = micros(r.updated_at);
    r.stopped_at = r.stopped_at.map(micros);
    r
}

/// A time this long ago.
pub(super) fn ago(d: Duration) -> SystemTime {
    SystemTime::now() - d
}

/// The next event, bounded so a hang fails the test instead of stalling it.
pub(super) async fn next(stream: &mut CommandStream) -> Option<ExecEvent> {
    tokio::time::timeout(SETTLE, stream.next())
        .await
        .expect("the stream moves")
}

/// Every event until the stream ends.
pub(super) async fn drain(stream: &mut CommandStream) -> Vec<ExecEvent> {
    let mut out = Vec::new();
    while let Some(e) = next(stream).await {
        out.push(e);
    }
    out
}

/// The bytes of one stream in a list of events, checking their offsets are contiguous from
/// `from`.
pub(super) fn output(events: &[ExecEvent], which: Stream, from: u64) -> Vec<u8> {
    let mut out = Vec::new();
    for e in events {
        if let ExecEvent::Output {
            stream,
            offset,
            data,
        } = e
            && *stream == which
        {
            assert_eq!(
                *offset,
                from + out.len() as u64,
                "a gap or overlap in {which:?}"
            );
            out.extend_from_slice(data);
        }
    }
    out
}

//! The pools' filler and their API: boots sandboxes into the pools (`pool.rs` keeps them) within
//! host capacity, and sets and shows the pools' bounds.

use std::sync::Arc;
use std::time::{Duration, Instant};

use warren_types::SandboxId;

use crate::config::SandboxConfig;
use crate::control::{Control, error_chain, spec_for};
use crate::error::ControlError;
use crate::pool::{Entry, PoolKey, PoolSize, PoolView, Shape, TemplateRef, Work};
use crate::store::Principal;

/// How often the filler checks what each pool should make (see [`Control::refresh_shapes`]).
const SHAPE_REFRESH: Duration = Duration::from_secs(1);

/// Longest a shutdown waits for pooled sandboxes to be removed and a fill in flight to land
/// (a vm-tier boot may take minutes under emulation; a service manager's stop timeout is
/// typically 90 s).
const DRAIN_DEADLINE: Duration = Duration::from_secs(30);

/// One metric of every pool: name, type, help and its value.
type Series = (
    &'static str,
    &'static str,
    &'static str,
    fn(&PoolView) -> u64,
);

impl Control {
    /// Fills and trims the pools until the process ends (the daemon runs it; without it pools
    /// stay empty and every create boots cold).
    pub async fn pools_forever(self: Arc<Self>) {
        let mut refreshed: Option<Instant> = None;
        loop {
            // At most once a second (a claim wakes this loop), unless a pool is new.
            if refreshed.is_none_or(|t| t.elapsed() >= SHAPE_REFRESH) || self.pools.unchecked() {
                self.refresh_shapes();
                refreshed = Some(Instant::now());
            }
            // Counted with the removals from before `next` looks at whether the pools are
            // closed, so a shutdown waits for the fill this pass starts to land (and be handed
            // back) instead of cutting a boot off halfway.
            let busy = self.removals.token();
            let (work, trimmed) = self.pools.next();
            self.discard(trimmed);
            match work {
                Work::Fill(key) => self.fill_one(&key).await,
                Work::Idle(wait) => {
                    drop(busy);
                    let _ = tokio::time::timeout(wait, self.pools.wake.notified()).await;
                }
            }
        }
    }

    /// Notes what each pool makes now, before and between fills: a pool knows its shape before
    /// its first fill, so creates of that shape count as its demand even when its minimum is
    /// 0; and when a template's snapshot tag moves or its snapshot is deleted, the sandboxes it
    /// holds go within a second instead of waiting, unclaimable, for a fill that may never
    /// come. A pool whose config fails for another reason (the default image being built) is
    /// left as it is: its next fill reports the reason.
    fn refresh_shapes(&self) {
        for key in self.pools.checking() {
            let shape = match self.pool_config(&key) {
                Ok(cfg) => self.pool_shape(&cfg),
                Err(ControlError::NotFound(_)) => None,
                Err(_) => continue,
            };
            self.discard(self.pools.reshape(&key, shape.as_ref()));
        }
    }

    /// What a pooled sandbox of this config is, its image's generation as it is now: after the
    /// image is replaced, neither a create nor the pool's next check matches the sandboxes made
    /// from the old one, and the pool refills.
    pub(crate) fn pool_shape(&self, cfg: &SandboxConfig) -> Option<Shape> {
        let generation = cfg
            .snapshot
            .parse::<warren_types::ImageRef>()
            .map_or(0, |image| self.driver.image_generation(&image));
        Shape::of(cfg, generation)
    }

    /// Boots one sandbox into a pool.
    async fn fill_one(self: &Arc<Self>, key: &PoolKey) {
        let booted = self.make_pooled(key).await;
        // Creates admitted while it booted may have taken the room it was counted in. The check
        // and the entry joining its pool are one step under the admission lock, so no create
        // can take that room in between.
        let admission = self.admission();
        let (result, no_room) = match booted {
            Ok(entry) => match self.pool_room_held(entry.shape.mem_bytes) {
                Ok(()) => (Ok(entry), None),
                Err(reason) => (
                    Err(format!("no room left for a pooled sandbox: {reason}")),
                    Some(entry),
                ),
            },
            Err(e) => (Err(e), None),
        };
        if let Err(e) = &result {
            tracing::warn!(pool = ?key.template, error = %e, "failed to fill a warm pool");
        }
        let unwanted = self.pools.filled(key, result);
        drop(admission);
        self.discard(no_room.into_iter().chain(unwanted).collect());
    }

    async fn make_pooled(self: &Arc<Self>, key: &PoolKey) -> Result<Entry, String> {
        let cfg = self.pool_config(key).map_err(|e| e.to_string())?;
        let shape = self
            .pool_shape(&cfg)
            .ok_or("a pool cannot hold sandboxes with volumes")?;
        let stale = self.pools.reshape(key, Some(&shape));
        self.discard(stale);
        self.pool_room(cfg.mem_bytes)?;
        self.host_capacity().map_err(|e| e.to_string())?;
        let id = uuid::Uuid::new_v4().to_string();
        let runtime_id = SandboxId::generate();
        let mut spec = spec_for(&runtime_id, &cfg, self.cfg.limits.pids);
        let result = match self.sandbox_trust(&id) {
            Ok(trust) => {
                spec.trust = trust;
                self.driver.create(&spec).await
            }
            Err(e) => Err(e),
        };
        if let Ok(handle) = &result {
            self.warm(handle).await;
        }
        match result {
            Ok(handle) => Ok(Entry {
                pool: key.clone(),
                id,
                runtime_id,
                handle,
                shape,
            }),
            Err(e) => {
                let _ = self.driver.destroy(&runtime_id, None).await;
                if let Some(egress) = &self.cfg.egress {
                    egress.forget(&id);
                }
                Err(e.public_reason())
            }
        }
    }

    /// Reads the files every first command loads (the shell commands run under, its libraries,
    /// the user database) through the agent, so their pages are cached when the claimed
    /// sandbox's first command runs. A snapshot's files have inodes of their own, so nothing
    /// another sandbox read is cached for them: without this a pooled sandbox's first command
    /// takes twice as long as its second. Nothing runs and nothing is written; a file the image
    /// lacks is skipped.
    async fn warm(&self, handle: &warren_driver::SandboxHandle) {
        for path in warren_driver::FIRST_COMMAND_FILES {
            let range = warren_driver::ReadRange {
                path: (*path).to_owned(),
                offset: 0,
                len: None,
                user: None,
            };
            if let Ok(mut read) = self.driver.read_file(handle, range).await {
                while let Some(Ok(_)) = read.body.recv().await {}
            }
        }
    }

    /// Whether the server has room for the pooled sandbox being made (counted in the pools'
    /// totals already, as starting) beside every record and other pooled sandbox.
    fn pool_room(&self, mem: u64) -> Result<(), String> {
        let _admission = self.admission();
        self.pool_room_held(mem)
    }

    /// [`Control::pool_room`], for a caller that holds the admission lock.
    fn pool_room_held(&self, mem: u64) -> Result<(), String> {
        let held = self.store.held("", None).map_err(|e| e.to_string())?;
        let (n, pooled_mem) = self.pools.totals();
        self.cfg
            .limits
            .room(
                &held,
                n.saturating_sub(1),
                pooled_mem.saturating_sub(mem),
                mem,
            )
            .map_err(|e| e.to_string())
    }

    /// What a pool's sandboxes are made as: the default create, or a create naming the template.
    fn pool_config(&self, key: &PoolKey) -> Result<SandboxConfig, ControlError> {
        match &key.template {
            None => {
                let image = self.check_default_image()?;
                Ok(SandboxConfig {
                    snapshot: image.to_string(),
                    snapshot_id: Some(crate::snapshot::default_snapshot_id()),
                    ..SandboxConfig::default()
                })
            }
            Some(t) => {
                let rec = self
                    .store
                    .find_template(&t.workspace_id, &t.id)?
                    .ok_or_else(|| ControlError::NotFound("the template was deleted".into()))?;
                let p = Principal {
                    user_id: rec.created_by.clone(),
                    user_name: String::new(),
                    workspace_id: rec.workspace_id.clone(),
                    is_admin: true,
                };
                let req = crate::config::CreateSandbox {
                    template: Some(rec.id),
                    ..Default::default()
                };
                self.resolve_create(&p, req).map(|(cfg, _)| cfg)
            }
        }
    }

    /// Destroys every pooled sandbox, and waits for those being destroyed already and for a
    /// fill in progress, which lands and is destroyed too; no fill starts after (a daemon
    /// shutting down: pooled sandboxes belong to nobody, so nothing should keep them running,
    /// and a boot or removal the runtime's end cut short would leave one behind). A failure
    /// leaves one to the next start's orphan sweep.
    pub async fn drain_pools(&self) {
        self.pools.close();
        self.discard(self.pools.take_all());
        self.removals.close();
        if tokio::time::timeout(DRAIN_DEADLINE, self.removals.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                left = self.removals.len(),
                "pooled sandboxes were still booting or being removed at the shutdown deadline; the next start's orphan sweep removes them"
            );
        }
        self.removals.reopen();
    }

    /// Destroys pooled sandboxes in the background.
    pub(crate) fn discard(&self, entries: Vec<Entry>) {
        for e in entries {
            self.removals.spawn(self.removal(e));
        }
    }

    /// Removes a pooled sandbox: its CA is forgotten now, and the returned future destroys it
    /// (a failure leaves it to the next start's orphan sweep).
    fn removal(&self, e: Entry) -> impl std::future::Future<Output = ()> + Send + 'static {
        if let Some(egress) = &self.cfg.egress {
            egress.forget(&e.id);
        }
        let driver = self.driver.clone();
        async move {
            if let Err(err) = driver.destroy(&e.runtime_id, Some(&e.handle)).await {
                tracing::warn!(runtime_id = %e.runtime_id, error = %error_chain(&err), "failed to remove a pooled sandbox; the next start's orphan sweep will");
            }
        }
    }

    /// Sets the default pool's bounds (admins).
    pub fn set_default_pool(
        &self,
        p: &Principal,
        size: PoolSize,
    ) -> Result<PoolView, ControlError> {
        crate::auth::admin_only(p, "change pools")?;
        let gone = self.pools.set(PoolKey { template: None }, size);
        self.discard(gone);
        self.audit(
            Some(p),
            "pool.set",
            None,
            Some(format!("default min={} max={}", size.min, size.max)),
        );
        Ok(self.pool_view(p, None))
    }

    /// The pools a caller's creates may draw from.
    pub fn list_pools(&self, p: &Principal) -> Vec<PoolView> {
        let names = |t: &TemplateRef| {
            (t.workspace_id == p.workspace_id)
                .then(|| {
                    self.store
                        .find_template(&t.workspace_id, &t.id)
                        .ok()
                        .flatten()
                })
                .flatten()
                .map(|r| r.name)
        };
        self.pools.views(&names)
    }

    /// Every pool's figures in Prometheus text: `pool` is `default` or `template:<id>` (ids,
    /// not names: `/metrics` is server-wide and template names are their workspace's).
    pub fn pool_metrics(&self) -> String {
        use std::fmt::Write;
        let label = |t: &TemplateRef| Some(format!("template:{}", t.id));
        let views = self.pools.views(&label);
        let mut o = String::new();
        let series: [Series; 4] = [
            (
                "warren_pool_ready",
                "gauge",
                "Pooled sandboxes ready to be claimed.",
                |v| u64::from(v.ready),
            ),
            (
                "warren_pool_target",
                "gauge",
                "Sandboxes each pool aims to hold now.",
                |v| u64::from(v.target),
            ),
            (
                "warren_pool_claims_total",
                "counter",
                "Creates served from a pool.",
                |v| v.claims,
            ),
            (
                "warren_pool_misses_total",
                "counter",
                "Creates that found their pool empty.",
                |v| v.misses,
            ),
        ];
        for (name, kind, help, value) in series {
            let _ = writeln!(o, "# HELP {name} {help}");
            let _ = writeln!(o, "# TYPE {name} {kind}");
            for v in &views {
                let pool = v.template.as_deref().unwrap_or("default");
                let _ = writeln!(o, "{name}{{pool=\"{pool}\"}} {}", value(v));
            }
        }
        o
    }

    /// One pool's view: the default one (`None`) or a template's, by name.
    pub(crate) fn pool_view(&self, p: &Principal, template: Option<&str>) -> PoolView {
        self.list_pools(p)
            .into_iter()
            .find(|v| v.template.as_deref() == template)
            .unwrap_or_else(|| PoolView {
                template: template.map(str::to_owned),
                ..PoolView::default()
            })
    }
}

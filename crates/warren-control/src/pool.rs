//! Warm pools: sandboxes booted ahead of demand (storage, cgroups, jail, agent, network link
//! and egress CA all made), handed to a create that asks for exactly what they were made as.
//!
//! A pooled sandbox has no record until it is claimed: the claim inserts a fresh record (a new
//! public id nobody has seen, the caller's name, workspace and config) around the running
//! sandbox, so it is indistinguishable from a cold one. Nothing ever runs in it before the claim,
//! and a claimed sandbox never goes back to a pool. Pools live in memory only: after a restart
//! the sandboxes they held have no record and the driver's orphan sweep removes them.
//!
//! Each pool keeps between `min` and `max` sandboxes; its target within those bounds is the
//! peak demand (claims and misses) of any 10 s of the last minute, so a burst grows the pool and
//! a quiet minute shrinks it back. Pools are filled one sandbox at a time in the background,
//! within host capacity, and give way to cold creates when the host is full.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;
use warren_driver::SandboxHandle;
use warren_types::SandboxId;

use crate::config::{ConfigError, SandboxConfig};

/// Largest `max` a pool may have.
pub const MAX_POOL_SIZE: u32 = 256;
/// Demand older than this no longer counts.
const DEMAND_WINDOW: Duration = Duration::from_secs(60);
/// Demand is counted per this much time; the busiest bucket sets the target.
const DEMAND_BUCKET: Duration = Duration::from_secs(10);
/// Wait after a failed fill, doubled per failure in a row, at most [`MAX_BACKOFF`] (short: a
/// fill fails at once while the default image is still being built, and the pool should fill
/// soon after it is).
const BASE_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// After a claim, a pool that still has sandboxes waits this long before it boots the next: a
/// boot takes both cores for tens of milliseconds, and the caller's first commands run now.
const REFILL_DELAY: Duration = Duration::from_millis(100);

/// A pool's bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PoolSize {
    /// Sandboxes held even with no demand.
    pub min: u32,
    /// Most sandboxes held.
    pub max: u32,
}

impl PoolSize {
    /// Checked bounds: `min ≤ max ≤` [`MAX_POOL_SIZE`].
    pub fn new(min: u32, max: u32) -> Result<Self, ConfigError> {
        if min > max {
            return Err(ConfigError::Invalid(format!(
                "pool min_size {min} is above max_size {max}"
            )));
        }
        if max > MAX_POOL_SIZE {
            return Err(ConfigError::Invalid(format!(
                "pool max_size {max} is above this server's limit of {MAX_POOL_SIZE}"
            )));
        }
        Ok(Self { min, max })
    }
}

/// Which pool: the server's default one, or a template's (claimed only in its workspace).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct PoolKey {
    /// `None` for the default pool.
    pub template: Option<TemplateRef>,
}

/// A template's pool.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct TemplateRef {
    pub workspace_id: String,
    pub id: String,
}

/// What a pooled sandbox was made as: a create asking for the same gets it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Shape {
    pub snapshot_id: Option<String>,
    pub image: String,
    pub vcpus: u32,
    pub mem_bytes: u64,
    pub fs_capacity_bytes: u64,
    pub tier: warren_driver::Tier,
    /// The image's generation ([`warren_driver::Driver::image_generation`]): a sandbox made
    /// before the image was replaced has the old files.
    pub image_generation: u64,
}

impl Shape {
    /// The shape of a config whose image is at `image_generation`; `None` when no pooled
    /// sandbox can serve it (it mounts volumes).
    pub(crate) fn of(cfg: &SandboxConfig, image_generation: u64) -> Option<Self> {
        cfg.volumes.is_empty().then(|| Self {
            snapshot_id: cfg.snapshot_id.clone(),
            image: cfg.snapshot.clone(),
            vcpus: cfg.vcpus,
            mem_bytes: cfg.mem_bytes,
            fs_capacity_bytes: cfg.fs_capacity_bytes,
            tier: cfg.tier,
            image_generation,
        })
    }
}

/// A booted sandbox waiting in a pool.
#[derive(Debug)]
pub(crate) struct Entry {
    /// The public id its record will have.
    pub id: String,
    pub runtime_id: SandboxId,
    pub handle: SandboxHandle,
    pub shape: Shape,
    /// The pool it was made for, and goes back to if a claim cannot use it.
    pub pool: PoolKey,
}

#[derive(Debug, Default)]
struct PoolState {
    size: PoolSize,
    ready: VecDeque<Entry>,
    starting: u32,
    demand: VecDeque<Instant>,
    claims: u64,
    misses: u64,
    /// The shape it fills with, once known.
    shape: Option<Shape>,
    /// Whether the filler has looked up its shape since it was made (see [`Pools::checking`]).
    checked: bool,
    failures: u32,
    retry_at: Option<Instant>,
    last_error: Option<String>,
    last_claim: Option<Instant>,
}

impl PoolState {
    fn target(&mut self, now: Instant) -> u32 {
        while self
            .demand
            .front()
            .is_some_and(|t| now.duration_since(*t) > DEMAND_WINDOW)
        {
            self.demand.pop_front();
        }
        let mut peak = 0u32;
        let mut i = 0;
        while i < self.demand.len() {
            let start = self.demand[i];
            let n = self
                .demand
                .iter()
                .skip(i)
                .take_while(|t| t.duration_since(start) < DEMAND_BUCKET)
                .count();
            peak = peak.max(u32::try_from(n).unwrap_or(u32::MAX));
            i += n.max(1);
        }
        peak.clamp(self.size.min, self.size.max)
    }
}

/// A pool as the API shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PoolView {
    /// The template's name, or `None` for the default pool.
    pub template: Option<String>,
    /// The snapshot its sandboxes are made from, once known.
    pub snapshot_id: Option<String>,
    /// Bounds.
    pub min_size: u32,
    /// Bounds.
    pub max_size: u32,
    /// Sandboxes it aims to hold now (recent demand within the bounds).
    pub target: u32,
    /// Sandboxes ready to be claimed.
    pub ready: u32,
    /// Sandboxes booting into it.
    pub starting: u32,
    /// Creates it served since the server started.
    pub claims: u64,
    /// Creates that matched it while it was empty.
    pub misses: u64,
    /// Why its last fill failed, while it is failing.
    pub last_error: Option<String>,
}

/// What the filler does next.
pub(crate) enum Work {
    Fill(PoolKey),
    Idle(Duration),
}

/// Every pool of this server.
#[derive(Debug, Default)]
pub(crate) struct Pools {
    state: Mutex<HashMap<PoolKey, PoolState>>,
    pub(crate) wake: tokio::sync::Notify,
    /// Set once the daemon shuts down: no fill starts, and one that lands is handed back.
    closed: AtomicBool,
}

impl Pools {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<PoolKey, PoolState>> {
        crate::state::lock(&self.state)
    }

    /// Sets a pool's bounds (0/0 removes it); returns the entries it no longer wants.
    pub(crate) fn set(&self, key: PoolKey, size: PoolSize) -> Vec<Entry> {
        let mut pools = self.lock();
        let removed = if size.max == 0 {
            pools
                .remove(&key)
                .map(|s| s.ready.into())
                .unwrap_or_default()
        } else {
            let st = pools.entry(key).or_default();
            st.size = size;
            st.retry_at = None;
            st.failures = 0;
            let keep = usize::try_from(size.max).unwrap_or(usize::MAX);
            st.ready.split_off(keep.min(st.ready.len())).into()
        };
        drop(pools);
        self.wake.notify_one();
        removed
    }

    /// Every pool, each noted as checked: the caller looks up what each makes now.
    pub(crate) fn checking(&self) -> Vec<PoolKey> {
        let mut pools = self.lock();
        pools.values_mut().for_each(|s| s.checked = true);
        pools.keys().cloned().collect()
    }

    /// Whether a pool was made since the last [`Pools::checking`].
    pub(crate) fn unchecked(&self) -> bool {
        self.lock().values().any(|s| !s.checked)
    }

    /// Stops filling for good (a daemon shutting down): no fill starts from now on, and one
    /// that lands is handed back by [`Pools::filled`] for removal.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
    }

    /// Takes a sandbox of `shape` for a create in `workspace_id`, counting the demand of every
    /// pool that makes this shape.
    pub(crate) fn claim(&self, shape: &Shape, workspace_id: &str) -> Option<Entry> {
        let now = Instant::now();
        let mut pools = self.lock();
        let mut got = None;
        for (key, st) in pools.iter_mut() {
            let ours = key
                .template
                .as_ref()
                .is_none_or(|t| t.workspace_id == workspace_id);
            if !ours || st.shape.as_ref() != Some(shape) {
                continue;
            }
            st.demand.push_back(now);
            if got.is_some() {
                continue;
            }
            match st.ready.iter().position(|e| &e.shape == shape) {
                Some(i) => {
                    st.claims += 1;
                    st.last_claim = Some(now);
                    got = st.ready.remove(i);
                }
                None => st.misses += 1,
            }
        }
        drop(pools);
        self.wake.notify_one();
        got
    }

    /// Puts back, into the pool it came from, an entry a claim could not use; hands it back
    /// when that pool is gone or makes another shape now, or the pools are closed.
    pub(crate) fn put_back(&self, entry: Entry) -> Option<Entry> {
        // Checked under the lock: a drain closes the pools before it takes what they hold.
        let mut pools = self.lock();
        match pools.get_mut(&entry.pool) {
            // Nor does an entry go back to a pool that makes something else now (a moved tag):
            // no claim would take it.
            Some(st)
                if self.closed.load(Ordering::SeqCst)
                    || st.shape.as_ref() != Some(&entry.shape) =>
            {
                Some(entry)
            }
            Some(st) => {
                st.claims = st.claims.saturating_sub(1);
                st.ready.push_front(entry);
                None
            }
            None => Some(entry),
        }
    }

    /// Sandboxes held (ready and booting) and the memory they commit.
    pub(crate) fn totals(&self) -> (usize, u64) {
        let pools = self.lock();
        pools.values().fold((0, 0), |(n, mem), st| {
            let held = st.ready.len() + usize::try_from(st.starting).unwrap_or(usize::MAX);
            let per = st.shape.as_ref().map_or(0, |s| s.mem_bytes);
            (
                n + held,
                mem.saturating_add(per.saturating_mul(held as u64)),
            )
        })
    }

    /// Every ready sandbox, taken, and every pool emptied of them (bounds kept).
    pub(crate) fn take_all(&self) -> Vec<Entry> {
        self.lock()
            .values_mut()
            .flat_map(|s| s.ready.drain(..).collect::<Vec<_>>())
            .collect()
    }

    /// Takes one ready sandbox from the fullest pool, to make room for a cold create.
    pub(crate) fn evict_one(&self) -> Option<Entry> {
        let mut pools = self.lock();
        pools
            .values_mut()
            .max_by_key(|s| s.ready.len())
            .and_then(|s| s.ready.pop_back())
    }

    /// Every pool as the API shows it; `names` gives a template pool's name (`None` hides it).
    pub(crate) fn views(&self, names: &dyn Fn(&TemplateRef) -> Option<String>) -> Vec<PoolView> {
        let now = Instant::now();
        let mut pools = self.lock();
        let mut out: Vec<PoolView> = pools
            .iter_mut()
            .filter_map(|(key, st)| {
                let template = match &key.template {
                    None => None,
                    Some(t) => Some(names(t)?),
                };
                Some((template, st))
            })
            .map(|(template, st)| PoolView {
                template,
                snapshot_id: st.shape.as_ref().and_then(|s| s.snapshot_id.clone()),
                min_size: st.size.min,
                max_size: st.size.max,
                target: st.target(now),
                ready: u32::try_from(st.ready.len()).unwrap_or(u32::MAX),
                starting: st.starting,
                claims: st.claims,
                misses: st.misses,
                last_error: st.last_error.clone(),
            })
            .collect();
        out.sort_by(|a, b| a.template.cmp(&b.template));
        out
    }

    /// The next fill, trimming pools above their target (the trimmed entries are returned).
    pub(crate) fn next(&self) -> (Work, Vec<Entry>) {
        let now = Instant::now();
        let mut wait = Duration::from_secs(1);
        if self.closed.load(Ordering::SeqCst) {
            return (Work::Idle(wait), Vec::new());
        }
        let mut pools = self.lock();
        let mut trimmed = Vec::new();
        let mut fill = None;
        for (key, st) in pools.iter_mut() {
            let target = usize::try_from(st.target(now)).unwrap_or(usize::MAX);
            let starting = usize::try_from(st.starting).unwrap_or(usize::MAX);
            // Ready ones above what the target leaves beside the booting ones go.
            let keep = target.saturating_sub(starting);
            if st.ready.len() > keep {
                trimmed.extend(st.ready.split_off(keep));
            }
            if st.ready.len() + starting < target && fill.is_none() {
                let settle = st
                    .last_claim
                    .map(|t| t + REFILL_DELAY)
                    .filter(|t| *t > now && !st.ready.is_empty());
                match st.retry_at.filter(|t| *t > now).or(settle) {
                    Some(t) => wait = wait.min(t - now),
                    _ => {
                        st.starting += 1;
                        fill = Some(key.clone());
                    }
                }
            }
        }
        (fill.map_or(Work::Idle(wait), Work::Fill), trimmed)
    }

    /// Records a fill's outcome; hands the entry back when its pool no longer wants it.
    pub(crate) fn filled(&self, key: &PoolKey, result: Result<Entry, String>) -> Option<Entry> {
        let mut pools = self.lock();
        let Some(st) = pools.get_mut(key) else {
            return result.ok();
        };
        st.starting = st.starting.saturating_sub(1);
        match result {
            Ok(entry) => {
                st.failures = 0;
                st.retry_at = None;
                st.last_error = None;
                let wanted = !self.closed.load(Ordering::SeqCst)
                    && st.shape.as_ref() == Some(&entry.shape)
                    && st.ready.len() < usize::try_from(st.size.max).unwrap_or(usize::MAX);
                if wanted {
                    st.ready.push_back(entry);
                    None
                } else {
                    Some(entry)
                }
            }
            Err(reason) => {
                st.failures = st.failures.saturating_add(1);
                let backoff = BASE_BACKOFF
                    .saturating_mul(1u32 << st.failures.min(8))
                    .min(MAX_BACKOFF);
                st.retry_at = Some(Instant::now() + backoff);
                st.last_error = Some(reason);
                None
            }
        }
    }

    /// Notes the shape a pool fills with (`None`: it can make nothing now, its snapshot is
    /// gone); entries of another shape (a moved tag, a changed template) are returned for
    /// removal.
    pub(crate) fn reshape(&self, key: &PoolKey, shape: Option<&Shape>) -> Vec<Entry> {
        let mut pools = self.lock();
        let Some(st) = pools.get_mut(key) else {
            return Vec::new();
        };
        if st.shape.as_ref() == shape {
            return Vec::new();
        }
        st.shape = shape.cloned();
        let (keep, old): (Vec<Entry>, Vec<Entry>) =
            st.ready.drain(..).partition(|e| Some(&e.shape) == shape);
        st.ready = keep.into();
        old
    }
}

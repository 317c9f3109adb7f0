//! Per-process state the control plane keeps beside the store: activity (for idle stops), the
//! API-key cache, pending deletions and the ready sandbox a data-plane operation holds.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use warren_driver::SandboxHandle;

use crate::store::{Principal, SandboxRecord};

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every map here stays consistent across a panic (single inserts and removes).
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// When a sandbox was last used and how many operations hold it now.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Activity {
    pub(crate) last: Instant,
    pub(crate) inflight: u32,
}

/// Activity by sandbox id, shared with the guards that update it.
#[derive(Debug, Clone, Default)]
pub(crate) struct ActivityMap(Arc<Mutex<HashMap<String, Activity>>>);

impl ActivityMap {
    /// Marks the sandbox active now.
    pub(crate) fn touch(&self, id: &str) {
        let now = Instant::now();
        lock(&self.0)
            .entry(id.to_owned())
            .and_modify(|a| a.last = now)
            .or_insert(Activity {
                last: now,
                inflight: 0,
            });
    }

    /// Marks an operation in flight until the guard drops.
    pub(crate) fn hold(&self, id: &str) -> ActivityGuard {
        let mut map = lock(&self.0);
        let a = map.entry(id.to_owned()).or_insert(Activity {
            last: Instant::now(),
            inflight: 0,
        });
        a.inflight += 1;
        a.last = Instant::now();
        ActivityGuard {
            map: self.clone(),
            id: id.to_owned(),
        }
    }

    pub(crate) fn get(&self, id: &str) -> Option<Activity> {
        lock(&self.0).get(id).copied()
    }

    pub(crate) fn forget(&self, id: &str) {
        lock(&self.0).remove(id);
    }
}

/// Marks a data-plane operation in flight: the sandbox is not idle while one exists.
#[derive(Debug)]
pub struct ActivityGuard {
    map: ActivityMap,
    id: String,
}

impl Drop for ActivityGuard {
    fn drop(&mut self) {
        if let Some(a) = lock(&self.map.0).get_mut(&self.id) {
            a.inflight = a.inflight.saturating_sub(1);
            a.last = Instant::now();
        }
    }
}

/// A ready sandbox and the handle to reach it, held for one data-plane operation.
#[derive(Debug)]
pub struct Running {
    /// The record at the time it was found ready.
    pub record: SandboxRecord,
    /// The driver handle.
    pub handle: SandboxHandle,
    /// Keeps the sandbox from idling out while the operation runs.
    pub guard: ActivityGuard,
}

/// Principals of recently used API keys, by key hash. A revocation bumps the generation, and a
/// principal looked up before the bump is never inserted after it: a request that read the
/// store just before a revoke cannot put the revoked key back.
#[derive(Debug, Default)]
pub(crate) struct KeyCache {
    inner: Mutex<KeyCacheInner>,
}

#[derive(Debug, Default)]
struct KeyCacheInner {
    generation: u64,
    principals: HashMap<String, Principal>,
}

impl KeyCache {
    /// The cached principal, or the generation to pass to [`KeyCache::insert`] after reading
    /// the store.
    pub(crate) fn get(&self, hash: &str) -> Result<Principal, u64> {
        let inner = lock(&self.inner);
        inner.principals.get(hash).cloned().ok_or(inner.generation)
    }

    /// Caches a principal read from the store at `generation`, unless a revocation happened
    /// since.
    pub(crate) fn insert(&self, generation: u64, hash: String, p: Principal) {
        let mut inner = lock(&self.inner);
        if inner.generation == generation {
            inner.principals.insert(hash, p);
        }
    }

    /// Forgets every cached principal and refuses inserts of earlier lookups.
    pub(crate) fn invalidate(&self) {
        let mut inner = lock(&self.inner);
        inner.generation += 1;
        inner.principals.clear();
    }
}

/// First wait before a failed deletion is tried again; doubles up to [`DELETE_RETRY_MAX`].
const DELETE_RETRY_FIRST: Duration = Duration::from_secs(5);
const DELETE_RETRY_MAX: Duration = Duration::from_secs(300);

/// Deletions whose cleanup failed, by sandbox id, and when the sweeper tries each again.
#[derive(Debug, Default)]
pub(crate) struct PendingDeletes(Mutex<HashMap<String, (Instant, Duration)>>);

impl PendingDeletes {
    /// Notes a failed deletion and returns the wait before the next attempt.
    pub(crate) fn failed(&self, id: &str) -> Duration {
        let mut map = lock(&self.0);
        let backoff = map
            .get(id)
            .map_or(DELETE_RETRY_FIRST, |(_, b)| (*b * 2).min(DELETE_RETRY_MAX));
        map.insert(id.to_owned(), (Instant::now() + backoff, backoff));
        backoff
    }

    /// Whether a deletion is due: never tried by this process, or its retry time has come.
    pub(crate) fn due(&self, id: &str) -> bool {
        lock(&self.0)
            .get(id)
            .is_none_or(|(at, _)| Instant::now() >= *at)
    }

    pub(crate) fn done(&self, id: &str) {
        lock(&self.0).remove(id);
    }
}

#[cfg(test)]
mod tests {
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

    #[test]
    fn activity_guards_hold_a_sandbox_busy_until_dropped() {
        let map = ActivityMap::default();
        let g = map.hold("a");
        assert_eq!(map.get("a").map(|a| a.inflight), Some(1));
        drop(g);
        assert_eq!(map.get("a").map(|a| a.inflight), Some(0));
    }

    #[test]
    fn failed_deletions_back_off() {
        let p = PendingDeletes::default();
        assert!(p.due("x"));
        let first = p.failed("x");
        assert!(!p.due("x"));
        assert_eq!(p.failed("x"), first * 2);
        p.done("x");
        assert!(p.due("x"));
    }
}

//! Decoded sandbox rows kept in memory: every command reads its sandbox's record (to find and
//! authorize it, then to reach it), several times, and a query plus the JSON decode of its
//! config was a tenth of the daemon's time per command.
//!
//! Kept right by the store itself: each of its writes to a row that succeeds drops that row's
//! entry while it holds the connection, and a commit by another process (a `warren run`
//! beside the daemon) changes SQLite's `data_version`, which every lookup checks first and
//! which clears the lot.
//!
//! The admission tallies ([`HeldIndex`]) live here too, under the same rules: the store's
//! writes update them, another process's commit has them read again.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use rusqlite::Connection;

use super::held::{Held, HeldIndex, Holding};
use super::{SandboxRecord, StoreError};

/// At most this many records are held; past it the cache starts again empty (cheaper than
/// tracking recency, and a daemon with this many sandboxes reads them all now and then anyway).
const MAX_ENTRIES: usize = 16_384;

#[derive(Debug, Default)]
pub(super) struct SandboxCache {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// `data_version` when the entries were read; `None` before the first lookup.
    version: Option<i64>,
    records: HashMap<String, SandboxRecord>,
    /// The admission tallies, once read.
    held: Option<HeldIndex>,
}

impl SandboxCache {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|poisoned| {
            // A panic mid-update may have left the tallies half-written: read everything
            // again from the table.
            let mut inner = poisoned.into_inner();
            *inner = Inner::default();
            self.inner.clear_poison();
            inner
        })
    }

    /// The record of `id` if held and no other process has committed since it was read. The
    /// caller holds `conn`'s lock, so no write of this process can run in between.
    pub(super) fn get(
        &self,
        conn: &Connection,
        id: &str,
    ) -> Result<Option<SandboxRecord>, StoreError> {
        Ok(self.current(conn)?.records.get(id).cloned())
    }

    /// The entries, emptied first if another process has committed since they were read.
    fn current(&self, conn: &Connection) -> Result<MutexGuard<'_, Inner>, StoreError> {
        let version: i64 = conn
            .prepare_cached("PRAGMA data_version")?
            .query_row([], |r| r.get(0))?;
        let mut inner = self.lock();
        if inner.version != Some(version) {
            inner.records.clear();
            inner.held = None;
            inner.version = Some(version);
        }
        Ok(inner)
    }

    /// The admission sums for `user` without `except`, from the tallies (read from the table
    /// first when not held). The caller holds `conn`'s lock.
    pub(super) fn held(
        &self,
        conn: &Connection,
        user: &str,
        except: Option<&str>,
    ) -> Result<Held, StoreError> {
        let mut inner = self.current(conn)?;
        let index = match &mut inner.held {
            Some(index) => index,
            none => none.insert(HeldIndex::load(conn)?),
        };
        Ok(index.held(user, except))
    }

    /// Holds a record just read, under the same connection lock as the read.
    pub(super) fn put(&self, rec: &SandboxRecord) {
        let mut inner = self.lock();
        if inner.records.len() >= MAX_ENTRIES {
            inner.records.clear();
        }
        inner.records.insert(rec.id.clone(), rec.clone());
    }

    /// Brings the cache up to a write of this store that succeeded, under the same connection
    /// lock as the write: drops the row's record (the next read gets exactly what the row
    /// says) and sets its share of the tallies to `now` (`None`: the row is gone). A write
    /// that failed changed nothing, so nothing here changes either.
    pub(super) fn wrote(&self, id: &str, now: Option<Holding>) {
        let mut inner = self.lock();
        inner.records.remove(id);
        if let Some(index) = &mut inner.held {
            index.set(id, now);
        }
    }
}

//! Decoded sandbox rows kept in memory: every command reads its sandbox's record (to find and
//! authorize it, then to reach it), several times, and a query plus the JSON decode of its
//! config was a tenth of the daemon's time per command.
//!
//! Kept right by the store itself: its writes to a row drop that row's entry while they hold
//! the connection, and a commit by another process (a `warren run` beside the daemon) changes
//! SQLite's `data_version`, which every lookup checks first and which clears the lot.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use rusqlite::Connection;

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
}

impl SandboxCache {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The record of `id` if held and no other process has committed since it was read. The
    /// caller holds `conn`'s lock, so no write of this process can run in between.
    pub(super) fn get(
        &self,
        conn: &Connection,
        id: &str,
    ) -> Result<Option<SandboxRecord>, StoreError> {
        let version: i64 = conn
            .prepare_cached("PRAGMA data_version")?
            .query_row([], |r| r.get(0))?;
        let mut inner = self.lock();
        if inner.version != Some(version) {
            inner.records.clear();
            inner.version = Some(version);
        }
        Ok(inner.records.get(id).cloned())
    }

    /// Holds a record just read, under the same connection lock as the read.
    pub(super) fn put(&self, rec: &SandboxRecord) {
        let mut inner = self.lock();
        if inner.records.len() >= MAX_ENTRIES {
            inner.records.clear();
        }
        inner.records.insert(rec.id.clone(), rec.clone());
    }

    /// Drops a row's entry; called by every write to it, before the connection is released.
    pub(super) fn forget(&self, id: &str) {
        self.lock().records.remove(id);
    }
}

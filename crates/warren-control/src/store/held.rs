//! What the sandboxes on record hold, summed by SQLite for admission.

use rusqlite::params;

use super::{SqliteStore, StoreError};

/// What the sandboxes on record hold, for admission: counted by the store in one query, so a
/// create costs the same with 1,000 sandboxes as with none.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Held {
    /// Sandboxes in any state.
    pub sandboxes: usize,
    /// Memory limits of running and booting sandboxes.
    pub committed_mem: u64,
    /// The creator's sandboxes in any state.
    pub user_sandboxes: usize,
    /// Memory limits of the creator's running and booting sandboxes.
    pub user_committed_mem: u64,
}

impl SqliteStore {
    /// Sandboxes and committed memory (of `provisioning` and `ready` sandboxes), server-wide
    /// and `user`'s, leaving out the sandbox `except` (one being started again).
    pub(crate) fn held(&self, user: &str, except: Option<&str>) -> Result<Held, StoreError> {
        // Cached: parsing and planning this statement cost more than running it.
        let conn = self.lock();
        let (sandboxes, committed, user_sandboxes, user_committed): (i64, i64, i64, i64) = conn
            .prepare_cached(
                "SELECT COUNT(*), \
                   COALESCE(SUM(CASE WHEN status IN ('provisioning', 'ready') \
                     THEN json_extract(config, '$.mem_bytes') ELSE 0 END), 0), \
                   COALESCE(SUM(created_by = ?1), 0), \
                   COALESCE(SUM(CASE WHEN created_by = ?1 AND status IN ('provisioning', 'ready') \
                     THEN json_extract(config, '$.mem_bytes') ELSE 0 END), 0) \
                 FROM sandboxes WHERE id IS NOT ?2",
            )?
            .query_row(params![user, except], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })?;
        let count = |n: i64| usize::try_from(n).unwrap_or(0);
        let bytes = |n: i64| u64::try_from(n).unwrap_or(0);
        Ok(Held {
            sandboxes: count(sandboxes),
            committed_mem: bytes(committed),
            user_sandboxes: count(user_sandboxes),
            user_committed_mem: bytes(user_committed),
        })
    }
}

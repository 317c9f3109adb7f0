//! What the sandboxes on record hold, for admission: tallied in memory beside the sandbox
//! cache, so a create costs the same with 1,000 sandboxes as with none.
//!
//! Summing the table in SQL on every create grew with the number of rows (about 0.4 µs a row
//! even with a covering index: 0.4–0.7 ms at 1,000 sandboxes, on the path of every create).
//! The tallies are read from the table once, then kept up to date by the store's own writes
//! (each under the connection lock, after its statement succeeded), and read again from the
//! table whenever another process has committed (SQLite's `data_version` changed).

use std::collections::HashMap;

use rusqlite::Connection;
use warren_types::SandboxStatus;

use super::{SandboxRecord, SqliteStore, StoreError};

/// What the sandboxes on record hold, for admission.
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

/// One sandbox's share: its creator and the memory it commits (0 unless booting or running).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Holding {
    user: String,
    mem: u64,
}

impl Holding {
    pub(super) fn of(rec: &SandboxRecord) -> Self {
        let committed = matches!(
            rec.status,
            SandboxStatus::Provisioning | SandboxStatus::Ready
        );
        Self {
            user: rec.created_by.clone(),
            mem: if committed { rec.config.mem_bytes } else { 0 },
        }
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Tally {
    count: usize,
    mem: u64,
}

impl Tally {
    fn add(&mut self, h: &Holding) {
        self.count += 1;
        self.mem = self.mem.saturating_add(h.mem);
    }

    fn sub(&mut self, h: &Holding) {
        self.count = self.count.saturating_sub(1);
        self.mem = self.mem.saturating_sub(h.mem);
    }
}

/// Every sandbox's share, and their sums server-wide and per creator.
#[derive(Debug, Default)]
pub(super) struct HeldIndex {
    rows: HashMap<String, Holding>,
    total: Tally,
    users: HashMap<String, Tally>,
}

impl HeldIndex {
    /// Reads every sandbox's share from the table.
    pub(super) fn load(conn: &Connection) -> Result<Self, StoreError> {
        let mut index = Self::default();
        let mut stmt = conn.prepare(
            "SELECT id, created_by, CASE WHEN status IN ('provisioning', 'ready') \
               THEN COALESCE(json_extract(config, '$.mem_bytes'), 0) ELSE 0 END \
             FROM sandboxes",
        )?;
        let rows = stmt.query_map([], |r| {
            let mem: i64 = r.get(2)?;
            Ok((
                r.get::<_, String>(0)?,
                Holding {
                    user: r.get(1)?,
                    mem: u64::try_from(mem).unwrap_or(0),
                },
            ))
        })?;
        for row in rows {
            let (id, holding) = row?;
            index.set(&id, Some(holding));
        }
        Ok(index)
    }

    /// Records what the row `id` holds now: `None` once it is gone. A row keeps the creator
    /// it was inserted with: no statement writes `created_by` after the insert.
    pub(super) fn set(&mut self, id: &str, mut now: Option<Holding>) {
        if let Some(old) = self.rows.remove(id) {
            if let Some(h) = &mut now {
                h.user.clone_from(&old.user);
            }
            self.total.sub(&old);
            if let Some(t) = self.users.get_mut(&old.user) {
                t.sub(&old);
                if t.count == 0 {
                    self.users.remove(&old.user);
                }
            }
        }
        if let Some(h) = now {
            self.total.add(&h);
            self.users.entry(h.user.clone()).or_default().add(&h);
            self.rows.insert(id.to_owned(), h);
        }
    }

    /// The sums for `user`, leaving out the sandbox `except`.
    pub(super) fn held(&self, user: &str, except: Option<&str>) -> Held {
        let mine = self.users.get(user).copied().unwrap_or_default();
        let mut held = Held {
            sandboxes: self.total.count,
            committed_mem: self.total.mem,
            user_sandboxes: mine.count,
            user_committed_mem: mine.mem,
        };
        if let Some(h) = except.and_then(|id| self.rows.get(id)) {
            held.sandboxes = held.sandboxes.saturating_sub(1);
            held.committed_mem = held.committed_mem.saturating_sub(h.mem);
            if h.user == user {
                held.user_sandboxes = held.user_sandboxes.saturating_sub(1);
                held.user_committed_mem = held.user_committed_mem.saturating_sub(h.mem);
            }
        }
        held
    }
}

impl SqliteStore {
    /// Sandboxes and committed memory (of `provisioning` and `ready` sandboxes), server-wide
    /// and `user`'s, leaving out the sandbox `except` (one being started again).
    pub(crate) fn held(&self, user: &str, except: Option<&str>) -> Result<Held, StoreError> {
        let conn = self.lock();
        self.sandboxes.held(&conn, user, except)
    }
}

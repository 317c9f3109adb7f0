//! The `service_grants` table: one row per shared sandbox port (service URLs), and the user
//! lookup a grant's tokens act as.

use std::time::SystemTime;

use rusqlite::{OptionalExtension, params};

use super::sqlite::new_id;
use super::{Principal, SqliteStore, StoreError, rfc3339};

/// A sharing grant of one sandbox port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantRecord {
    /// The id tokens carry (`gid`).
    pub id: String,
    /// The sandbox.
    pub sandbox_id: String,
    /// The port.
    pub port: u16,
    /// Who made or last renewed it; its tokens act as this user.
    pub user_id: String,
    /// When it was first made.
    pub created_at: SystemTime,
    /// When its newest token expires.
    pub expires_at: SystemTime,
    /// Origins allowed to frame the service.
    pub embed_origins: Vec<String>,
}

fn time(s: &str) -> Result<SystemTime, StoreError> {
    humantime::parse_rfc3339(s).map_err(|e| StoreError::Decode {
        what: "grant timestamp",
        source: Box::new(e),
    })
}

type Row = (String, String, u16, String, String, String, String);

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Row> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
    ))
}

fn decode(
    (id, sandbox_id, port, user_id, created, expires, origins): Row,
) -> Result<GrantRecord, StoreError> {
    Ok(GrantRecord {
        id,
        sandbox_id,
        port,
        user_id,
        created_at: time(&created)?,
        expires_at: time(&expires)?,
        embed_origins: serde_json::from_str(&origins).map_err(|e| StoreError::Decode {
            what: "grant embed origins",
            source: Box::new(e),
        })?,
    })
}

const COLUMNS: &str = "id, sandbox_id, port, user_id, created_at, expires_at, embed_origins";

impl SqliteStore {
    /// Creates the grant of a port, or renews it (new expiry, origins and user; same id).
    pub(crate) fn upsert_grant(
        &self,
        sandbox_id: &str,
        port: u16,
        user_id: &str,
        now: SystemTime,
        expires_at: SystemTime,
        embed_origins: &[String],
    ) -> Result<GrantRecord, StoreError> {
        let origins = serde_json::to_string(embed_origins).map_err(|e| StoreError::Decode {
            what: "grant embed origins",
            source: Box::new(e),
        })?;
        let conn = self.lock();
        let r = conn.query_row(
            &format!(
                "INSERT INTO service_grants ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) \
                 ON CONFLICT (sandbox_id, port) DO UPDATE SET user_id = excluded.user_id, \
                 expires_at = excluded.expires_at, embed_origins = excluded.embed_origins \
                 RETURNING {COLUMNS}"
            ),
            params![
                new_id(),
                sandbox_id,
                port,
                user_id,
                rfc3339(now),
                rfc3339(expires_at),
                origins
            ],
            row,
        )?;
        decode(r)
    }

    /// A grant by id.
    pub(crate) fn get_grant(&self, id: &str) -> Result<Option<GrantRecord>, StoreError> {
        self.lock()
            .query_row(
                &format!("SELECT {COLUMNS} FROM service_grants WHERE id = ?1"),
                params![id],
                row,
            )
            .optional()?
            .map(decode)
            .transpose()
    }

    /// A sandbox's grants, by port.
    pub(crate) fn list_grants(&self, sandbox_id: &str) -> Result<Vec<GrantRecord>, StoreError> {
        let conn = self.lock();
        let mut stmt = conn.prepare(&format!(
            "SELECT {COLUMNS} FROM service_grants WHERE sandbox_id = ?1 ORDER BY port"
        ))?;
        let rows = stmt.query_map(params![sandbox_id], row)?;
        let mut out = Vec::new();
        for r in rows {
            out.push(decode(r?)?);
        }
        Ok(out)
    }

    /// Removes a sandbox's grant of one port, or all of them; returns how many.
    pub(crate) fn delete_grants(
        &self,
        sandbox_id: &str,
        port: Option<u16>,
    ) -> Result<usize, StoreError> {
        let conn = self.lock();
        Ok(match port {
            Some(p) => conn.execute(
                "DELETE FROM service_grants WHERE sandbox_id = ?1 AND port = ?2",
                params![sandbox_id, p],
            )?,
            None => conn.execute(
                "DELETE FROM service_grants WHERE sandbox_id = ?1",
                params![sandbox_id],
            )?,
        })
    }

    /// A user as a principal (what a grant's or a link's tokens act as).
    pub(crate) fn principal_for_user(
        &self,
        user_id: &str,
    ) -> Result<Option<Principal>, StoreError> {
        Ok(self
            .lock()
            .query_row(
                "SELECT id, name, workspace_id, is_admin FROM users WHERE id = ?1",
                params![user_id],
                |r| {
                    Ok(Principal {
                        user_id: r.get(0)?,
                        user_name: r.get(1)?,
                        workspace_id: r.get(2)?,
                        is_admin: r.get(3)?,
                    })
                },
            )
            .optional()?)
    }
}

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
    /// Who first shared the port (each token acts as the user who minted it).
    pub user_id: String,
    /// When it was first made.
    pub created_at: SystemTime,
    /// When its newest token expires.
    pub expires_at: SystemTime,
    /// Origins allowed to frame the service.
    pub embed_origins: Vec<String>,
    /// How the port is opened.
    pub mode: GrantMode,
}

/// How a port's grant is opened (the service URL's `access`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrantMode {
    /// By the tokens minted for it.
    Token,
    /// By a signed-in user who may read the sandbox.
    Restricted,
    /// By any signed-in member of the sandbox's workspace.
    Workspace,
}

impl GrantMode {
    /// The wire and column name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Token => "token",
            Self::Restricted => "restricted",
            Self::Workspace => "workspace",
        }
    }

    /// A login mode from the request's `access`; `token` is not one.
    pub fn login(access: &str) -> Option<Self> {
        match access {
            "restricted" => Some(Self::Restricted),
            "workspace" => Some(Self::Workspace),
            _ => None,
        }
    }

    fn column(s: &str) -> Result<Self, StoreError> {
        match s {
            "token" => Ok(Self::Token),
            other => Self::login(other).ok_or_else(|| StoreError::Decode {
                what: "grant access",
                source: format!("unknown access '{other}'").into(),
            }),
        }
    }
}

fn time(s: &str) -> Result<SystemTime, StoreError> {
    humantime::parse_rfc3339(s).map_err(|e| StoreError::Decode {
        what: "grant timestamp",
        source: Box::new(e),
    })
}

type Row = (String, String, u16, String, String, String, String, String);

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Row> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
        r.get(7)?,
    ))
}

fn decode(
    (id, sandbox_id, port, user_id, created, expires, origins, access): Row,
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
        mode: GrantMode::column(&access)?,
    })
}

const COLUMNS: &str =
    "id, sandbox_id, port, user_id, created_at, expires_at, embed_origins, access";

impl SqliteStore {
    /// Creates the grant of a port, or renews it (new origins and mode; same id and first
    /// sharer). A token grant's expiry is its longest-lived token's, so a shorter renewal does
    /// not hide a port an earlier token still opens. A token-mode renewal leaves a login grant alone and answers `None`: a login grant is
    /// durable, and only revoking it makes way for tokens.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn upsert_grant(
        &self,
        sandbox_id: &str,
        port: u16,
        user_id: &str,
        now: SystemTime,
        expires_at: SystemTime,
        embed_origins: &[String],
        mode: GrantMode,
    ) -> Result<Option<GrantRecord>, StoreError> {
        let origins = serde_json::to_string(embed_origins).map_err(|e| StoreError::Decode {
            what: "grant embed origins",
            source: Box::new(e),
        })?;
        let only_tokens = if mode == GrantMode::Token {
            "WHERE service_grants.access = 'token' "
        } else {
            ""
        };
        let conn = self.lock();
        let r = conn
            .query_row(
                &format!(
                    "INSERT INTO service_grants ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) \
                     ON CONFLICT (sandbox_id, port) DO UPDATE SET \
                     expires_at = CASE WHEN julianday(excluded.expires_at) > \
                     julianday(service_grants.expires_at) OR excluded.access != 'token' \
                     THEN excluded.expires_at ELSE service_grants.expires_at END, \
                     embed_origins = excluded.embed_origins, \
                     access = excluded.access {only_tokens}RETURNING {COLUMNS}"
                ),
                params![
                    new_id(),
                    sandbox_id,
                    port,
                    user_id,
                    rfc3339(now),
                    rfc3339(expires_at),
                    origins,
                    mode.as_str()
                ],
                row,
            )
            .optional()?;
        r.map(decode).transpose()
    }

    /// The grant of one port of a sandbox.
    pub(crate) fn grant_of(
        &self,
        sandbox_id: &str,
        port: u16,
    ) -> Result<Option<GrantRecord>, StoreError> {
        self.lock()
            .query_row(
                &format!(
                    "SELECT {COLUMNS} FROM service_grants WHERE sandbox_id = ?1 AND port = ?2"
                ),
                params![sandbox_id, port],
                row,
            )
            .optional()?
            .map(decode)
            .transpose()
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

    /// Removes a sandbox port's grant if it is a login grant; returns whether one went.
    pub(crate) fn delete_login_grant(
        &self,
        sandbox_id: &str,
        port: u16,
    ) -> Result<bool, StoreError> {
        Ok(self.lock().execute(
            "DELETE FROM service_grants WHERE sandbox_id = ?1 AND port = ?2 AND access != 'token'",
            params![sandbox_id, port],
        )? > 0)
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

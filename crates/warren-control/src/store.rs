//! The state store: one trait, SQLite (WAL) behind it now, PostgreSQL later when Warren runs on
//! several machines. Migrations live in `migrations/` and run in order on open; the schema version
//! is SQLite's `user_version`.

use std::path::Path;
use std::sync::Mutex;
use std::time::SystemTime;

use rusqlite::{Connection, OptionalExtension, params};
use warren_runtime::SandboxHandle;
use warren_types::{SandboxId, SandboxStatus};

use crate::config::SandboxConfig;

/// Store failures.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database failed.
    #[error("failed to access the state database")]
    Db(#[from] rusqlite::Error),
    /// A stored value could not be decoded.
    #[error("failed to decode stored {what}")]
    Decode {
        /// Which value.
        what: &'static str,
        /// Cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A uniqueness constraint failed (a name already taken).
    #[error("{0} already exists")]
    Conflict(String),
    /// The database file could not be made private.
    #[error("failed to {action} {path}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// Where.
        path: std::path::PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

/// Makes the database and its WAL and shared-memory files private to root (0600): they hold
/// every sandbox's environment variables and the audit log. SQLite creates the -wal and -shm
/// files with the database's mode; a database made by an older version (0644) is fixed here.
fn make_db_private(path: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::PermissionsExt;
    let mut files = vec![path.to_owned()];
    for suffix in ["-wal", "-shm"] {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        files.push(name.into());
    }
    for file in files {
        let meta = match std::fs::metadata(&file) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(source) => {
                return Err(StoreError::Io {
                    action: "inspect",
                    path: file,
                    source,
                });
            }
        };
        if meta.permissions().mode() & 0o7777 != 0o600 {
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).map_err(
                |source| StoreError::Io {
                    action: "make private",
                    path: file.clone(),
                    source,
                },
            )?;
        }
    }
    Ok(())
}

/// Ordered migrations; index + 1 is the schema version each one produces.
const MIGRATIONS: &[&str] = &[include_str!("../migrations/0001_init.sql")];

/// A workspace user's identity, as found from an API key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// User id.
    pub user_id: String,
    /// User name.
    pub user_name: String,
    /// Workspace id.
    pub workspace_id: String,
    /// Workspace admins see and manage every sandbox in the workspace.
    pub is_admin: bool,
}

/// An API key's public metadata (never the key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyInfo {
    /// Key id.
    pub id: String,
    /// Owner's user name.
    pub user_name: String,
    /// Whether the owner is a workspace admin.
    pub is_admin: bool,
    /// Creation time.
    pub created_at: SystemTime,
    /// Revocation time.
    pub revoked_at: Option<SystemTime>,
}

/// One sandbox's record.
#[derive(Debug, Clone, PartialEq)]
pub struct SandboxRecord {
    /// Public id (UUID).
    pub id: String,
    /// Owning workspace.
    pub workspace_id: String,
    /// Creating user.
    pub created_by: String,
    /// Name, unique in the workspace.
    pub name: String,
    /// The driver's id for it.
    pub runtime_id: SandboxId,
    /// Lifecycle state.
    pub status: SandboxStatus,
    /// Why it failed or stopped unexpectedly.
    pub status_message: Option<String>,
    /// What was asked for.
    pub config: SandboxConfig,
    /// The driver's handle while it runs.
    pub handle: Option<SandboxHandle>,
    /// Creation time.
    pub created_at: SystemTime,
    /// Last change.
    pub updated_at: SystemTime,
    /// When it last stopped.
    pub stopped_at: Option<SystemTime>,
}

/// One audit log entry.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AuditEntry {
    /// Position in the log (assigned on append).
    pub seq: i64,
    /// When (RFC 3339).
    pub at: String,
    /// Workspace.
    pub workspace_id: Option<String>,
    /// Acting user.
    pub user_id: Option<String>,
    /// What happened, e.g. `api`, `exec`, `sandbox.create`.
    pub action: String,
    /// What it happened to (sandbox id, path, ...).
    pub target: Option<String>,
    /// Details (method and status, the command line, ...).
    pub detail: Option<String>,
}

/// Persistent state.
pub trait Store: Send + Sync + std::fmt::Debug {
    /// Whether any user exists (false on first start).
    fn has_users(&self) -> Result<bool, StoreError>;
    /// Creates a workspace and returns its id.
    fn create_workspace(&self, name: &str) -> Result<String, StoreError>;
    /// Creates a user and returns its id.
    fn create_user(
        &self,
        workspace_id: &str,
        name: &str,
        admin: bool,
    ) -> Result<String, StoreError>;
    /// Stores a key hash for a user and returns the key id.
    fn add_key(&self, user_id: &str, key_hash: &str) -> Result<String, StoreError>;
    /// The principal a key hash belongs to, if it exists and is not revoked.
    fn principal_for_key(&self, key_hash: &str) -> Result<Option<Principal>, StoreError>;
    /// Every key of a workspace.
    fn list_keys(&self, workspace_id: &str) -> Result<Vec<KeyInfo>, StoreError>;
    /// Revokes a key of a workspace; false if there is no such key.
    fn revoke_key(&self, workspace_id: &str, key_id: &str) -> Result<bool, StoreError>;

    /// Inserts a new sandbox; `Conflict` if the name is taken in the workspace.
    fn insert_sandbox(&self, rec: &SandboxRecord) -> Result<(), StoreError>;
    /// Writes a sandbox's record; `Conflict` if a rename collides.
    fn update_sandbox(&self, rec: &SandboxRecord) -> Result<(), StoreError>;
    /// A sandbox by id.
    fn get_sandbox(&self, id: &str) -> Result<Option<SandboxRecord>, StoreError>;
    /// A sandbox of a workspace by name or id.
    fn find_sandbox(
        &self,
        workspace_id: &str,
        name_or_id: &str,
    ) -> Result<Option<SandboxRecord>, StoreError>;
    /// Sandboxes of a workspace, or of every workspace.
    fn list_sandboxes(&self, workspace_id: Option<&str>) -> Result<Vec<SandboxRecord>, StoreError>;
    /// Removes a sandbox's record.
    fn delete_sandbox(&self, id: &str) -> Result<(), StoreError>;

    /// Appends to the audit log.
    fn append_audit(&self, entry: &AuditEntry) -> Result<(), StoreError>;
    /// Sequence number of the newest audit entry (0 when empty).
    fn last_audit_seq(&self) -> Result<i64, StoreError>;
    /// Audit entries after `after_seq`, oldest first, at most `limit`.
    fn list_audit(
        &self,
        workspace_id: Option<&str>,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<AuditEntry>, StoreError>;
}

/// SQLite-backed [`Store`]. One connection behind a mutex: every statement is short, and WAL
/// lets `warren audit` read while the daemon writes.
#[derive(Debug)]
pub struct SqliteStore {
    conn: Mutex<Connection>,
}

/// Formats a time as RFC 3339 with microseconds, UTC.
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_micros(t).to_string()
}

fn parse_time(s: &str) -> Result<SystemTime, StoreError> {
    humantime::parse_rfc3339(s).map_err(|e| StoreError::Decode {
        what: "timestamp",
        source: Box::new(e),
    })
}

fn parse_opt_time(s: Option<String>) -> Result<Option<SystemTime>, StoreError> {
    s.as_deref().map(parse_time).transpose()
}

fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

fn conflict(e: rusqlite::Error, what: &str) -> StoreError {
    match &e {
        rusqlite::Error::SqliteFailure(f, _)
            if f.code == rusqlite::ErrorCode::ConstraintViolation =>
        {
            StoreError::Conflict(what.to_owned())
        }
        _ => StoreError::Db(e),
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the database and runs pending migrations.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        // Created private before SQLite opens it (SQLite would make it 0644), so there is no
        // moment at which it is readable by others.
        {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .open(path)
                .map_err(|source| StoreError::Io {
                    action: "create",
                    path: path.to_owned(),
                    source,
                })?;
        }
        make_db_private(path)?;
        let conn = Connection::open(path)?;
        // WAL: readers never block the writer; NORMAL sync is durable across process crashes
        // (kill -9), which is the failure the daemon must survive.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        let store = Self {
            conn: Mutex::new(conn),
        };
        store.migrate()?;
        // The -wal and -shm files exist now; check them too.
        make_db_private(path)?;
        Ok(store)
    }

    /// Opens the database read-only (for `warren audit` beside a running daemon).
    pub fn open_read_only(path: &Path) -> Result<Self, StoreError> {
        let conn = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        Ok(Self {
            conn: Mutex::new(conn),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves SQLite consistent (statements are atomic), so a
        // poisoned lock is still safe to use.
        self.conn
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn migrate(&self) -> Result<(), StoreError> {
        let mut conn = self.lock();
        let version: usize = conn
            .pragma_query_value(None, "user_version", |r| r.get::<_, i64>(0))?
            .try_into()
            .unwrap_or(0);
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version) {
            let tx = conn.transaction()?;
            tx.execute_batch(sql)?;
            tx.pragma_update(
                None,
                "user_version",
                i64::try_from(i + 1).unwrap_or(i64::MAX),
            )?;
            tx.commit()?;
            tracing::info!(version = i + 1, "state database migrated");
        }
        Ok(())
    }

    fn row_to_sandbox(row: &rusqlite::Row<'_>) -> rusqlite::Result<RawSandbox> {
        Ok(RawSandbox {
            id: row.get(0)?,
            workspace_id: row.get(1)?,
            created_by: row.get(2)?,
            name: row.get(3)?,
            runtime_id: row.get(4)?,
            status: row.get(5)?,
            status_message: row.get(6)?,
            config: row.get(7)?,
            handle: row.get(8)?,
            created_at: row.get(9)?,
            updated_at: row.get(10)?,
            stopped_at: row.get(11)?,
        })
    }
}

const SANDBOX_COLUMNS: &str = "id, workspace_id, created_by, name, runtime_id, status, \
     status_message, config, handle, created_at, updated_at, stopped_at";

struct RawSandbox {
    id: String,
    workspace_id: String,
    created_by: String,
    name: String,
    runtime_id: String,
    status: String,
    status_message: Option<String>,
    config: String,
    handle: Option<String>,
    created_at: String,
    updated_at: String,
    stopped_at: Option<String>,
}

impl RawSandbox {
    fn decode(self) -> Result<SandboxRecord, StoreError> {
        let dec = |what: &'static str| {
            move |e: Box<dyn std::error::Error + Send + Sync>| StoreError::Decode {
                what,
                source: e,
            }
        };
        Ok(SandboxRecord {
            id: self.id,
            workspace_id: self.workspace_id,
            created_by: self.created_by,
            name: self.name,
            runtime_id: self
                .runtime_id
                .parse()
                .map_err(|e| dec("runtime id")(Box::new(e)))?,
            status: self
                .status
                .parse()
                .map_err(|e| dec("status")(Box::new(e)))?,
            status_message: self.status_message,
            config: serde_json::from_str(&self.config).map_err(|e| dec("config")(Box::new(e)))?,
            handle: self
                .handle
                .map(|h| serde_json::from_str(&h))
                .transpose()
                .map_err(|e| dec("handle")(Box::new(e)))?,
            created_at: parse_time(&self.created_at)?,
            updated_at: parse_time(&self.updated_at)?,
            stopped_at: parse_opt_time(self.stopped_at)?,
        })
    }
}

fn encode_json<T: serde::Serialize>(v: &T, what: &'static str) -> Result<String, StoreError> {
    serde_json::to_string(v).map_err(|e| StoreError::Decode {
        what,
        source: Box::new(e),
    })
}

impl Store for SqliteStore {
    fn has_users(&self) -> Result<bool, StoreError> {
        let n: i64 = self
            .lock()
            .query_row("SELECT COUNT(*) FROM users", [], |r| r.get(0))?;
        Ok(n > 0)
    }

    fn create_workspace(&self, name: &str) -> Result<String, StoreError> {
        let id = new_id();
        self.lock()
            .execute(
                "INSERT INTO workspaces (id, name, created_at) VALUES (?1, ?2, ?3)",
                params![id, name, rfc3339(SystemTime::now())],
            )
            .map_err(|e| conflict(e, &format!("workspace {name}")))?;
        Ok(id)
    }

    fn create_user(
        &self,
        workspace_id: &str,
        name: &str,
        admin: bool,
    ) -> Result<String, StoreError> {
        let id = new_id();
        self.lock()
            .execute(
                "INSERT INTO users (id, workspace_id, name, is_admin, created_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![id, workspace_id, name, admin, rfc3339(SystemTime::now())],
            )
            .map_err(|e| conflict(e, &format!("user {name}")))?;
        Ok(id)
    }

    fn add_key(&self, user_id: &str, key_hash: &str) -> Result<String, StoreError> {
        let id = new_id();
        self.lock().execute(
            "INSERT INTO api_keys (id, user_id, key_hash, created_at) VALUES (?1, ?2, ?3, ?4)",
            params![id, user_id, key_hash, rfc3339(SystemTime::now())],
        )?;
        Ok(id)
    }

    fn principal_for_key(&self, key_hash: &str) -> Result<Option<Principal>, StoreError> {
        Ok(self
            .lock()
            .query_row(
                "SELECT u.id, u.name, u.workspace_id, u.is_admin FROM api_keys k \
                 JOIN users u ON u.id = k.user_id \
                 WHERE k.key_hash = ?1 AND k.revoked_at IS NULL",
                params![key_hash],
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

    fn list_keys(&self, workspace_id: &str) -> Result<Vec<KeyInfo>, StoreError> {
        let conn = self.lock();
        let mut stmt = conn.prepare(
            "SELECT k.id, u.name, u.is_admin, k.created_at, k.revoked_at FROM api_keys k \
             JOIN users u ON u.id = k.user_id WHERE u.workspace_id = ?1 ORDER BY k.created_at",
        )?;
        let rows = stmt.query_map(params![workspace_id], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, bool>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, Option<String>>(4)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (id, user_name, is_admin, created, revoked) = row?;
            out.push(KeyInfo {
                id,
                user_name,
                is_admin,
                created_at: parse_time(&created)?,
                revoked_at: parse_opt_time(revoked)?,
            });
        }
        Ok(out)
    }

    fn revoke_key(&self, workspace_id: &str, key_id: &str) -> Result<bool, StoreError> {
        let n = self.lock().execute(
            "UPDATE api_keys SET revoked_at = ?3 WHERE id = ?1 AND revoked_at IS NULL AND \
             user_id IN (SELECT id FROM users WHERE workspace_id = ?2)",
            params![key_id, workspace_id, rfc3339(SystemTime::now())],
        )?;
        Ok(n > 0)
    }

    fn insert_sandbox(&self, rec: &SandboxRecord) -> Result<(), StoreError> {
        let config = encode_json(&rec.config, "config")?;
        let handle = rec
            .handle
            .as_ref()
            .map(|h| encode_json(h, "handle"))
            .transpose()?;
        self.lock()
            .execute(
                &format!(
                    "INSERT INTO sandboxes ({SANDBOX_COLUMNS}) VALUES \
                     (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)"
                ),
                params![
                    rec.id,
                    rec.workspace_id,
                    rec.created_by,
                    rec.name,
                    rec.runtime_id.as_str(),
                    rec.status.as_str(),
                    rec.status_message,
                    config,
                    handle,
                    rfc3339(rec.created_at),
                    rfc3339(rec.updated_at),
                    rec.stopped_at.map(rfc3339),
                ],
            )
            .map_err(|e| conflict(e, &format!("sandbox {}", rec.name)))?;
        Ok(())
    }

    fn update_sandbox(&self, rec: &SandboxRecord) -> Result<(), StoreError> {
        let config = encode_json(&rec.config, "config")?;
        let handle = rec
            .handle
            .as_ref()
            .map(|h| encode_json(h, "handle"))
            .transpose()?;
        self.lock()
            .execute(
                "UPDATE sandboxes SET name = ?2, status = ?3, status_message = ?4, config = ?5, \
                 handle = ?6, updated_at = ?7, stopped_at = ?8 WHERE id = ?1",
                params![
                    rec.id,
                    rec.name,
                    rec.status.as_str(),
                    rec.status_message,
                    config,
                    handle,
                    rfc3339(rec.updated_at),
                    rec.stopped_at.map(rfc3339),
                ],
            )
            .map_err(|e| conflict(e, &format!("sandbox {}", rec.name)))?;
        Ok(())
    }

    fn get_sandbox(&self, id: &str) -> Result<Option<SandboxRecord>, StoreError> {
        let raw = self
            .lock()
            .query_row(
                &format!("SELECT {SANDBOX_COLUMNS} FROM sandboxes WHERE id = ?1"),
                params![id],
                Self::row_to_sandbox,
            )
            .optional()?;
        raw.map(RawSandbox::decode).transpose()
    }

    fn find_sandbox(
        &self,
        workspace_id: &str,
        name_or_id: &str,
    ) -> Result<Option<SandboxRecord>, StoreError> {
        let raw = self
            .lock()
            .query_row(
                &format!(
                    "SELECT {SANDBOX_COLUMNS} FROM sandboxes WHERE workspace_id = ?1 AND \
                     (name = ?2 OR id = ?2) ORDER BY name = ?2 DESC LIMIT 1"
                ),
                params![workspace_id, name_or_id],
                Self::row_to_sandbox,
            )
            .optional()?;
        raw.map(RawSandbox::decode).transpose()
    }

    fn list_sandboxes(&self, workspace_id: Option<&str>) -> Result<Vec<SandboxRecord>, StoreError> {
        let conn = self.lock();
        let mut stmt = conn.prepare(&format!(
            "SELECT {SANDBOX_COLUMNS} FROM sandboxes WHERE ?1 IS NULL OR workspace_id = ?1 \
             ORDER BY created_at"
        ))?;
        let rows = stmt.query_map(params![workspace_id], Self::row_to_sandbox)?;
        let mut out = Vec::new();
        for row in rows {
            out.push(row?.decode()?);
        }
        Ok(out)
    }

    fn delete_sandbox(&self, id: &str) -> Result<(), StoreError> {
        self.lock()
            .execute("DELETE FROM sandboxes WHERE id = ?1", params![id])?;
        Ok(())
    }

    fn append_audit(&self, e: &AuditEntry) -> Result<(), StoreError> {
        self.lock().execute(
            "INSERT INTO audit (at, workspace_id, user_id, action, target, detail) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                e.at,
                e.workspace_id,
                e.user_id,
                e.action,
                e.target,
                e.detail
            ],
        )?;
        Ok(())
    }

    fn last_audit_seq(&self) -> Result<i64, StoreError> {
        Ok(self
            .lock()
            .query_row("SELECT COALESCE(MAX(seq), 0) FROM audit", [], |r| r.get(0))?)
    }

    fn list_audit(
        &self,
        workspace_id: Option<&str>,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        let conn = self.lock();
        let mut stmt = conn.prepare(
            "SELECT seq, at, workspace_id, user_id, action, target, detail FROM audit \
             WHERE seq > ?1 AND (?2 IS NULL OR workspace_id = ?2) ORDER BY seq LIMIT ?3",
        )?;
        let rows = stmt.query_map(params![after_seq, workspace_id, limit], |r| {
            Ok(AuditEntry {
                seq: r.get(0)?,
                at: r.get(1)?,
                workspace_id: r.get(2)?,
                user_id: r.get(3)?,
                action: r.get(4)?,
                target: r.get(5)?,
                detail: r.get(6)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(&dir.path().join("w.db")).unwrap();
        (dir, s)
    }

    fn record(ws: &str, user: &str, name: &str) -> SandboxRecord {
        let now = SystemTime::now();
        SandboxRecord {
            id: new_id(),
            workspace_id: ws.into(),
            created_by: user.into(),
            name: name.into(),
            runtime_id: SandboxId::generate(),
            status: SandboxStatus::Provisioning,
            status_message: None,
            config: SandboxConfig::default(),
            handle: None,
            created_at: now,
            updated_at: now,
            stopped_at: None,
        }
    }

    #[test]
    fn keys_resolve_to_principals_until_revoked() {
        let (_d, s) = store();
        assert!(!s.has_users().unwrap());
        let ws = s.create_workspace("default").unwrap();
        let u = s.create_user(&ws, "alice", true).unwrap();
        let k = s.add_key(&u, "hash-a").unwrap();
        let p = s.principal_for_key("hash-a").unwrap().unwrap();
        assert_eq!((p.user_name.as_str(), p.is_admin), ("alice", true));
        assert!(s.principal_for_key("hash-b").unwrap().is_none());
        assert!(s.revoke_key(&ws, &k).unwrap());
        assert!(s.principal_for_key("hash-a").unwrap().is_none());
        assert!(!s.revoke_key(&ws, &k).unwrap(), "already revoked");
        assert_eq!(s.list_keys(&ws).unwrap().len(), 1);
    }

    #[test]
    fn sandbox_names_are_unique_per_workspace_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.db");
        let (ws, id) = {
            let s = SqliteStore::open(&path).unwrap();
            let ws = s.create_workspace("default").unwrap();
            let other = s.create_workspace("other").unwrap();
            let u = s.create_user(&ws, "alice", false).unwrap();
            let u2 = s.create_user(&other, "bob", false).unwrap();
            let a = record(&ws, &u, "box");
            s.insert_sandbox(&a).unwrap();
            assert!(matches!(
                s.insert_sandbox(&record(&ws, &u, "box")),
                Err(StoreError::Conflict(_))
            ));
            s.insert_sandbox(&record(&other, &u2, "box")).unwrap();
            let mut b = record(&ws, &u, "box2");
            s.insert_sandbox(&b).unwrap();
            b.name = "box".into();
            assert!(matches!(s.update_sandbox(&b), Err(StoreError::Conflict(_))));
            (ws, a.id)
        };
        let s = SqliteStore::open(&path).unwrap();
        let found = s.find_sandbox(&ws, "box").unwrap().unwrap();
        assert_eq!(found.id, id);
        assert_eq!(s.find_sandbox(&ws, &id).unwrap().unwrap().name, "box");
        assert_eq!(s.list_sandboxes(Some(&ws)).unwrap().len(), 2);
        assert_eq!(s.list_sandboxes(None).unwrap().len(), 3);
        s.delete_sandbox(&id).unwrap();
        assert!(s.get_sandbox(&id).unwrap().is_none());
    }

    #[test]
    fn audit_is_append_only() {
        let (_d, s) = store();
        let e = AuditEntry {
            seq: 0,
            at: rfc3339(SystemTime::now()),
            workspace_id: None,
            user_id: None,
            action: "api".into(),
            target: None,
            detail: Some("GET /x 200".into()),
        };
        s.append_audit(&e).unwrap();
        s.append_audit(&e).unwrap();
        let got = s.list_audit(None, 0, 10).unwrap();
        assert_eq!(got.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![1, 2]);
        assert_eq!(s.list_audit(None, 1, 10).unwrap().len(), 1);
        let conn = s.lock();
        assert!(conn.execute("DELETE FROM audit", []).is_err());
        assert!(conn.execute("UPDATE audit SET action = 'x'", []).is_err());
    }

    #[test]
    fn the_database_and_its_wal_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.db");
        let wal = dir.path().join("w.db-wal");
        let shm = dir.path().join("w.db-shm");
        {
            let s = SqliteStore::open(&path).unwrap();
            s.create_workspace("default").unwrap();
            for p in [&path, &wal, &shm] {
                assert_eq!(mode(p), 0o600, "{}", p.display());
            }
        }
        // A database made by an older version, readable by everyone, is made private at open.
        for p in [&path, &wal, &shm] {
            if p.exists() {
                std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o644)).unwrap();
            }
        }
        let s = SqliteStore::open(&path).unwrap();
        s.create_workspace("other").unwrap();
        for p in [&path, &wal, &shm] {
            assert_eq!(mode(p), 0o600, "{}", p.display());
        }
    }
}

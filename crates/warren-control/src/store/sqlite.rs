//! The SQLite implementation of [`Store`](super::Store).

use std::path::Path;
use std::sync::Mutex;
use std::time::SystemTime;

use rusqlite::{Connection, OptionalExtension, params};

use super::held::Holding;
use super::{
    AuditEntry, KeyInfo, Principal, SandboxRecord, SecretRecord, Store, StoreError, secrets,
};

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
const MIGRATIONS: &[&str] = &[
    include_str!("../../migrations/0001_init.sql"),
    include_str!("../../migrations/0002_secrets.sql"),
    include_str!("../../migrations/0003_service_grants.sql"),
    include_str!("../../migrations/0004_snapshots.sql"),
    include_str!("../../migrations/0005_registries.sql"),
    include_str!("../../migrations/0006_volumes.sql"),
    include_str!("../../migrations/0007_templates.sql"),
    include_str!("../../migrations/0008_snapshot_carried.sql"),
    include_str!("../../migrations/0009_service_grant_access.sql"),
];

/// SQLite-backed [`Store`]. One connection behind a mutex: every statement is short, and WAL
/// lets `warren audit` read while the daemon writes.
#[derive(Debug)]
pub struct SqliteStore {
    conn: Mutex<Connection>,
    pub(super) sandboxes: super::cache::SandboxCache,
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

pub(super) fn new_id() -> String {
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
            sandboxes: super::cache::SandboxCache::default(),
        };
        store.migrate()?;
        // The -wal and -shm files exist now; check them too.
        make_db_private(path)?;
        Ok(store)
    }

    /// A private database in memory, gone when dropped: for tests of the layers above, and for
    /// tools that need a store but no state.
    pub fn in_memory() -> Result<Self, StoreError> {
        let conn = Connection::open_in_memory()?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        let store = Self {
            conn: Mutex::new(conn),
            sandboxes: super::cache::SandboxCache::default(),
        };
        store.migrate()?;
        Ok(store)
    }

    /// Opens the database read-only (for `warren audit` beside a running daemon).
    pub fn open_read_only(path: &Path) -> Result<Self, StoreError> {
        let conn = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        Ok(Self {
            conn: Mutex::new(conn),
            sandboxes: super::cache::SandboxCache::default(),
        })
    }

    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, Connection> {
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
        // Every request authenticates: the statement is kept prepared.
        Ok(self
            .lock()
            .prepare_cached(
                "SELECT u.id, u.name, u.workspace_id, u.is_admin FROM api_keys k \
                 JOIN users u ON u.id = k.user_id \
                 WHERE k.key_hash = ?1 AND k.revoked_at IS NULL",
            )?
            .query_row(params![key_hash], |r| {
                Ok(Principal {
                    user_id: r.get(0)?,
                    user_name: r.get(1)?,
                    workspace_id: r.get(2)?,
                    is_admin: r.get(3)?,
                })
            })
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
        let conn = self.lock();
        conn.prepare_cached(&format!(
            "INSERT INTO sandboxes ({SANDBOX_COLUMNS}) VALUES \
             (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)"
        ))?
        .execute(params![
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
        ])
        .map_err(|e| conflict(e, &format!("sandbox {}", rec.name)))?;
        self.sandboxes.wrote(&rec.id, Some(Holding::of(rec)));
        Ok(())
    }

    fn update_sandbox(&self, rec: &SandboxRecord) -> Result<(), StoreError> {
        let config = encode_json(&rec.config, "config")?;
        let handle = rec
            .handle
            .as_ref()
            .map(|h| encode_json(h, "handle"))
            .transpose()?;
        let conn = self.lock();
        let changed = conn
            .prepare_cached(
                "UPDATE sandboxes SET name = ?2, status = ?3, status_message = ?4, config = ?5, \
                 handle = ?6, updated_at = ?7, stopped_at = ?8 WHERE id = ?1",
            )?
            .execute(params![
                rec.id,
                rec.name,
                rec.status.as_str(),
                rec.status_message,
                config,
                handle,
                rfc3339(rec.updated_at),
                rec.stopped_at.map(rfc3339),
            ])
            .map_err(|e| conflict(e, &format!("sandbox {}", rec.name)))?;
        self.sandboxes
            .wrote(&rec.id, (changed > 0).then(|| Holding::of(rec)));
        Ok(())
    }

    fn get_sandbox(&self, id: &str) -> Result<Option<SandboxRecord>, StoreError> {
        let conn = self.lock();
        if let Some(rec) = self.sandboxes.get(&conn, id)? {
            return Ok(Some(rec));
        }
        let raw = conn
            .prepare_cached(&format!(
                "SELECT {SANDBOX_COLUMNS} FROM sandboxes WHERE id = ?1"
            ))?
            .query_row(params![id], Self::row_to_sandbox)
            .optional()?;
        let rec = raw.map(RawSandbox::decode).transpose()?;
        if let Some(rec) = &rec {
            self.sandboxes.put(rec);
        }
        Ok(rec)
    }

    fn find_sandbox(
        &self,
        workspace_id: &str,
        name_or_id: &str,
    ) -> Result<Option<SandboxRecord>, StoreError> {
        let raw = self
            .lock()
            .prepare_cached(&format!(
                "SELECT {SANDBOX_COLUMNS} FROM sandboxes WHERE workspace_id = ?1 AND \
                 (name = ?2 OR id = ?2) ORDER BY name = ?2 DESC LIMIT 1"
            ))?
            .query_row(params![workspace_id, name_or_id], Self::row_to_sandbox)
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
        let conn = self.lock();
        conn.prepare_cached("DELETE FROM sandboxes WHERE id = ?1")?
            .execute(params![id])?;
        self.sandboxes.wrote(id, None);
        Ok(())
    }

    fn append_audit(&self, e: &AuditEntry) -> Result<(), StoreError> {
        self.append_audits(std::slice::from_ref(e))
    }

    fn append_audits(&self, entries: &[AuditEntry]) -> Result<(), StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        {
            let mut insert = tx.prepare_cached(
                "INSERT INTO audit (at, workspace_id, user_id, action, target, detail) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?;
            for e in entries {
                insert.execute(params![
                    e.at,
                    e.workspace_id,
                    e.user_id,
                    e.action,
                    e.target,
                    e.detail
                ])?;
            }
        }
        tx.commit()?;
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

    fn get_secret(
        &self,
        workspace_id: &str,
        key: &str,
    ) -> Result<Option<SecretRecord>, StoreError> {
        secrets::get(&self.lock(), workspace_id, key)
    }

    fn list_secrets(&self, workspace_id: &str) -> Result<Vec<SecretRecord>, StoreError> {
        secrets::list(&self.lock(), workspace_id)
    }

    fn put_secret(&self, workspace_id: &str, rec: &SecretRecord) -> Result<(), StoreError> {
        secrets::put(&self.lock(), workspace_id, rec)
    }

    fn delete_secret(&self, workspace_id: &str, key: &str) -> Result<bool, StoreError> {
        secrets::delete(&self.lock(), workspace_id, key)
    }
}

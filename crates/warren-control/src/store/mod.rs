//! The state store: one trait, SQLite (WAL) behind it now, PostgreSQL later when Warren runs on
//! several machines. Migrations live in `migrations/` and run in order on open; the schema version
//! is SQLite's `user_version`.

use std::time::SystemTime;

use warren_driver::SandboxHandle;
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

/// A workspace secret as stored. `Debug` prints no value.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretRecord {
    /// The secret's name, unique in its workspace.
    pub key: String,
    /// The value, kept as given: the database file is private to the daemon.
    pub value: String,
    /// The custom hosts it may be sent to; empty means the built-in defaults for the key.
    pub hosts: Vec<SecretHostRecord>,
    /// Creation time.
    pub created_at: SystemTime,
    /// Last change of the value or the hosts.
    pub updated_at: SystemTime,
}

impl std::fmt::Debug for SecretRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretRecord")
            .field("key", &self.key)
            .field("value", &"<redacted>")
            .field("hosts", &self.hosts)
            .field("created_at", &self.created_at)
            .field("updated_at", &self.updated_at)
            .finish()
    }
}

/// A custom host a secret may be sent to, as an admin set it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretHostRecord {
    /// Stable id (kept while the host pattern stays in the list).
    pub id: String,
    /// An exact host name or `*.` and a host name, lowercase.
    pub host_pattern: String,
    /// The HTTP header the value is sent in.
    pub header_name: Option<String>,
    /// The header's value, `{value}` standing for the secret; none sends the raw secret.
    pub header_value_template: Option<String>,
    /// When this host was added.
    pub created_at: SystemTime,
    /// When its header or template last changed.
    pub updated_at: SystemTime,
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
    /// Appends entries in order, in one transaction.
    fn append_audits(&self, entries: &[AuditEntry]) -> Result<(), StoreError>;
    /// Sequence number of the newest audit entry (0 when empty).
    fn last_audit_seq(&self) -> Result<i64, StoreError>;
    /// Audit entries after `after_seq`, oldest first, at most `limit`.
    fn list_audit(
        &self,
        workspace_id: Option<&str>,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<AuditEntry>, StoreError>;

    /// A workspace's secret by key (one primary-key read).
    fn get_secret(&self, workspace_id: &str, key: &str)
    -> Result<Option<SecretRecord>, StoreError>;
    /// Every secret of a workspace, by key.
    fn list_secrets(&self, workspace_id: &str) -> Result<Vec<SecretRecord>, StoreError>;
    /// Creates or replaces a workspace's secret.
    fn put_secret(&self, workspace_id: &str, rec: &SecretRecord) -> Result<(), StoreError>;
    /// Removes a workspace's secret; false if there was none.
    fn delete_secret(&self, workspace_id: &str, key: &str) -> Result<bool, StoreError>;
}

mod cache;
mod grants;
mod held;
mod json_rows;
mod registries;
mod secrets;
mod snapshots;
mod sqlite;
mod templates;
mod volumes;

pub use grants::{GrantMode, GrantRecord};
pub use held::Held;
pub use registries::RegistryRecord;
pub use snapshots::{SnapshotRecord, SnapshotStatus};
pub use templates::TemplateRecord;
pub use volumes::VolumeRecord;

pub use sqlite::{SqliteStore, rfc3339};

#[cfg(test)]
mod tests;

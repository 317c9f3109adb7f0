//! Warren's own endpoints: server info, API keys and the audit log.

use serde::{Deserialize, Serialize};

/// GET /info.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Info {
    /// The LangSmith API version the wire protocol matches.
    pub version: String,
    /// Warren's own version.
    pub warren_version: String,
}

/// POST /keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateKeyBody {
    /// The new user's name.
    pub name: String,
    /// Whether the user is a workspace admin.
    #[serde(default)]
    pub admin: bool,
}

/// A key as listed (never the key itself).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Key {
    /// Key id.
    pub id: String,
    /// Owner's user name.
    pub name: String,
    /// Whether the owner is an admin.
    pub admin: bool,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339, when revoked.
    #[serde(default)]
    pub revoked_at: Option<String>,
}

/// The answer to POST /keys: the key, shown once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreatedKey {
    /// Key id.
    pub id: String,
    /// The secret.
    pub key: String,
    /// Owner's user name.
    pub name: String,
    /// Whether the owner is an admin.
    pub admin: bool,
    /// RFC 3339.
    pub created_at: String,
}

/// GET /keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyList {
    /// The keys.
    pub keys: Vec<Key>,
}

/// One audit log entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Position in the log.
    pub seq: i64,
    /// RFC 3339.
    pub at: String,
    /// Workspace.
    #[serde(default)]
    pub workspace_id: Option<String>,
    /// Acting user.
    #[serde(default)]
    pub user_id: Option<String>,
    /// What happened.
    pub action: String,
    /// What it happened to.
    #[serde(default)]
    pub target: Option<String>,
    /// Details.
    #[serde(default)]
    pub detail: Option<String>,
}

/// GET /audit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditList {
    /// Entries in order.
    pub entries: Vec<AuditEntry>,
}

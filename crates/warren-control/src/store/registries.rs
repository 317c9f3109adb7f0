//! The `registries` table: a workspace's container registry credentials, one JSON row each.

use serde::{Deserialize, Serialize};

use super::json_rows::{JsonTable, RowKey};
use super::{SqliteStore, StoreError};

/// A registry and its credentials. `Debug` prints no password.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistryRecord {
    /// Id (UUID).
    pub id: String,
    /// Owning workspace.
    pub workspace_id: String,
    /// Name, unique in the workspace.
    pub name: String,
    /// Registry host (and port), as images name it: `ghcr.io`, `127.0.0.1:5000`.
    pub host: String,
    /// The URL as given.
    pub url: String,
    /// `DOCKER_CONFIG` (user name and password) or `AWS_ROLE`.
    pub auth_type: String,
    /// For `AWS_ROLE`.
    pub aws_role_arn: Option<String>,
    /// User name.
    pub username: Option<String>,
    /// Password or token; never returned.
    pub password: Option<String>,
    /// Derived from the host: `GHCR`, `DOCKER_HUB`, `ECR`, `GAR`, `DOCKER_REGISTRY`.
    pub provider: String,
    /// RFC 3339.
    pub created_at: String,
    /// Creating user.
    pub created_by: String,
    /// RFC 3339.
    pub updated_at: String,
    /// Last user to change it.
    pub updated_by: String,
}

impl std::fmt::Debug for RegistryRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryRecord")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("host", &self.host)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish_non_exhaustive()
    }
}

const TABLE: JsonTable = JsonTable {
    table: "registries",
    what: "registry",
};

impl SqliteStore {
    /// Inserts or replaces a registry by id; `Conflict` when the name is taken.
    pub(crate) fn put_registry(&self, r: &RegistryRecord) -> Result<(), StoreError> {
        let key = RowKey {
            id: &r.id,
            workspace_id: &r.workspace_id,
            name: &r.name,
        };
        self.put_row(TABLE, key, r)
    }

    /// A workspace's registry by id or name.
    pub(crate) fn find_registry(
        &self,
        workspace_id: &str,
        id_or_name: &str,
    ) -> Result<Option<RegistryRecord>, StoreError> {
        self.find_row(TABLE, workspace_id, id_or_name)
    }

    /// A workspace's registries by name.
    pub(crate) fn list_registries(
        &self,
        workspace_id: &str,
    ) -> Result<Vec<RegistryRecord>, StoreError> {
        self.list_rows(TABLE, Some(workspace_id))
    }

    /// Removes a registry; false if there was none.
    pub(crate) fn delete_registry(&self, workspace_id: &str, id: &str) -> Result<bool, StoreError> {
        self.delete_row(TABLE, Some(workspace_id), id)
    }
}

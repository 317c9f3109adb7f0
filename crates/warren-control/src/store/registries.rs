//! The `registries` table: a workspace's container registry credentials, one JSON row each.

use rusqlite::{OptionalExtension, params};
use serde::{Deserialize, Serialize};

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

fn decode(body: &str) -> Result<RegistryRecord, StoreError> {
    serde_json::from_str(body).map_err(|e| StoreError::Decode {
        what: "registry",
        source: Box::new(e),
    })
}

impl SqliteStore {
    /// Inserts or replaces a registry by id; `Conflict` when the name is taken.
    pub(crate) fn put_registry(&self, r: &RegistryRecord) -> Result<(), StoreError> {
        let body = serde_json::to_string(r).map_err(|e| StoreError::Decode {
            what: "registry",
            source: Box::new(e),
        })?;
        let result = self.lock().execute(
            "INSERT INTO registries (id, workspace_id, name, body) VALUES (?1, ?2, ?3, ?4) \
             ON CONFLICT (id) DO UPDATE SET name = excluded.name, body = excluded.body",
            params![r.id, r.workspace_id, r.name, body],
        );
        match result {
            Ok(_) => Ok(()),
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                Err(StoreError::Conflict(format!("registry '{}'", r.name)))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// A workspace's registry by id or name.
    pub(crate) fn find_registry(
        &self,
        workspace_id: &str,
        id_or_name: &str,
    ) -> Result<Option<RegistryRecord>, StoreError> {
        let body: Option<String> = self
            .lock()
            .query_row(
                "SELECT body FROM registries WHERE workspace_id = ?1 AND (id = ?2 OR name = ?2)",
                params![workspace_id, id_or_name],
                |r| r.get(0),
            )
            .optional()?;
        body.as_deref().map(decode).transpose()
    }

    /// A workspace's registries by name.
    pub(crate) fn list_registries(
        &self,
        workspace_id: &str,
    ) -> Result<Vec<RegistryRecord>, StoreError> {
        let conn = self.lock();
        let mut stmt =
            conn.prepare("SELECT body FROM registries WHERE workspace_id = ?1 ORDER BY name")?;
        let bodies = stmt
            .query_map(params![workspace_id], |r| r.get::<_, String>(0))?
            .collect::<Result<Vec<_>, _>>()?;
        bodies.iter().map(|b| decode(b)).collect()
    }

    /// Removes a registry; false if there was none.
    pub(crate) fn delete_registry(&self, workspace_id: &str, id: &str) -> Result<bool, StoreError> {
        Ok(self.lock().execute(
            "DELETE FROM registries WHERE workspace_id = ?1 AND id = ?2",
            params![workspace_id, id],
        )? > 0)
    }
}

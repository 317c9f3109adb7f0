//! The `volumes` table: a workspace's volumes, one JSON row each.

use std::collections::BTreeMap;

use rusqlite::{OptionalExtension, params};
use serde::{Deserialize, Serialize};

use super::{SqliteStore, StoreError};

/// One volume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeRecord {
    /// Id (UUID); also names its subvolume.
    pub id: String,
    /// Owning workspace.
    pub workspace_id: String,
    /// Name, unique in the workspace.
    pub name: String,
    /// Free text.
    pub description: Option<String>,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Its size limit (a whole number of GiB).
    pub size_bytes: u64,
    /// The volume it was cloned from.
    pub source_volume_id: Option<String>,
    /// RFC 3339.
    pub created_at: String,
    /// Creating user; with admins, the only one who may change, clone or attach it.
    pub created_by: String,
    /// RFC 3339.
    pub updated_at: String,
    /// Last user to change it.
    pub updated_by: String,
}

fn codec(e: serde_json::Error) -> StoreError {
    StoreError::Decode {
        what: "volume",
        source: Box::new(e),
    }
}

impl SqliteStore {
    /// Inserts or replaces a volume by id; `Conflict` when the name is taken.
    pub(crate) fn put_volume(&self, v: &VolumeRecord) -> Result<(), StoreError> {
        let body = serde_json::to_string(v).map_err(codec)?;
        let result = self.lock().execute(
            "INSERT INTO volumes (id, workspace_id, name, body) VALUES (?1, ?2, ?3, ?4) \
             ON CONFLICT (id) DO UPDATE SET name = excluded.name, body = excluded.body",
            params![v.id, v.workspace_id, v.name, body],
        );
        match result {
            Ok(_) => Ok(()),
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                Err(StoreError::Conflict(format!("volume '{}'", v.name)))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// A workspace's volume by id or name.
    pub(crate) fn find_volume(
        &self,
        workspace_id: &str,
        id_or_name: &str,
    ) -> Result<Option<VolumeRecord>, StoreError> {
        let body: Option<String> = self
            .lock()
            .query_row(
                "SELECT body FROM volumes WHERE workspace_id = ?1 AND (id = ?2 OR name = ?2)",
                params![workspace_id, id_or_name],
                |r| r.get(0),
            )
            .optional()?;
        body.map(|b| serde_json::from_str(&b).map_err(codec))
            .transpose()
    }

    /// A workspace's volumes (every workspace's with `None`), by name.
    pub(crate) fn list_volumes(
        &self,
        workspace_id: Option<&str>,
    ) -> Result<Vec<VolumeRecord>, StoreError> {
        let conn = self.lock();
        let mut stmt = conn.prepare(
            "SELECT body FROM volumes WHERE ?1 IS NULL OR workspace_id = ?1 ORDER BY name",
        )?;
        let bodies = stmt
            .query_map(params![workspace_id], |r| r.get::<_, String>(0))?
            .collect::<Result<Vec<_>, _>>()?;
        bodies
            .iter()
            .map(|b| serde_json::from_str(b).map_err(codec))
            .collect()
    }

    /// Removes a volume's row.
    pub(crate) fn delete_volume(&self, id: &str) -> Result<(), StoreError> {
        self.lock()
            .execute("DELETE FROM volumes WHERE id = ?1", params![id])?;
        Ok(())
    }
}

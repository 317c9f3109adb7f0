//! The `volumes` table: a workspace's volumes, one JSON row each.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::json_rows::{JsonTable, RowKey};
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

const TABLE: JsonTable = JsonTable {
    table: "volumes",
    what: "volume",
};

impl SqliteStore {
    /// Inserts or replaces a volume by id; `Conflict` when the name is taken.
    pub(crate) fn put_volume(&self, v: &VolumeRecord) -> Result<(), StoreError> {
        let key = RowKey {
            id: &v.id,
            workspace_id: &v.workspace_id,
            name: &v.name,
        };
        self.put_row(TABLE, key, v)
    }

    /// A workspace's volume by id or name.
    pub(crate) fn find_volume(
        &self,
        workspace_id: &str,
        id_or_name: &str,
    ) -> Result<Option<VolumeRecord>, StoreError> {
        self.find_row(TABLE, workspace_id, id_or_name)
    }

    /// A workspace's volumes (every workspace's with `None`), by name.
    pub(crate) fn list_volumes(
        &self,
        workspace_id: Option<&str>,
    ) -> Result<Vec<VolumeRecord>, StoreError> {
        self.list_rows(TABLE, workspace_id)
    }

    /// Removes a volume's row.
    pub(crate) fn delete_volume(&self, id: &str) -> Result<(), StoreError> {
        self.delete_row(TABLE, None, id).map(|_| ())
    }
}

//! The `templates` table: a workspace's templates, one JSON row each.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use warren_types::RunConfig;

use super::json_rows::{JsonTable, RowKey};
use super::{SqliteStore, StoreError};

/// A template: what a create naming it starts from. Every field but the snapshot is optional;
/// a create's own fields win over it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TemplateRecord {
    /// Id (UUID).
    pub id: String,
    /// Owning workspace.
    pub workspace_id: String,
    /// Name, unique in the workspace.
    pub name: String,
    /// Snapshot reference or id, resolved at each create (a moved tag applies).
    pub snapshot: String,
    /// CPUs.
    pub vcpus: Option<u32>,
    /// Memory limit.
    pub mem_bytes: Option<u64>,
    /// Disk size.
    pub fs_capacity_bytes: Option<u64>,
    /// Idle stop.
    pub idle_ttl_seconds: Option<u64>,
    /// run_config layer under the create's own.
    pub run_config: Option<RunConfig>,
    /// Network policy and credential rules, when the create gives none.
    pub proxy_config: Option<Value>,
    /// Labels under the create's own.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Isolation tier, when the create names none.
    #[serde(default)]
    pub tier: Option<warren_driver::Tier>,
    /// Least sandboxes its warm pool holds.
    #[serde(default)]
    pub pool_min: u32,
    /// Most sandboxes its warm pool holds (0: no pool).
    #[serde(default)]
    pub pool_max: u32,
    /// RFC 3339.
    pub created_at: String,
    /// Creating user.
    pub created_by: String,
}

const TABLE: JsonTable = JsonTable {
    table: "templates",
    what: "template",
};

impl SqliteStore {
    /// Inserts or replaces a template by id; `Conflict` when the name is taken.
    pub(crate) fn put_template(&self, t: &TemplateRecord) -> Result<(), StoreError> {
        let key = RowKey {
            id: &t.id,
            workspace_id: &t.workspace_id,
            name: &t.name,
        };
        self.put_row(TABLE, key, t)
    }

    /// A workspace's template by id or name.
    pub(crate) fn find_template(
        &self,
        workspace_id: &str,
        id_or_name: &str,
    ) -> Result<Option<TemplateRecord>, StoreError> {
        self.find_row(TABLE, workspace_id, id_or_name)
    }

    /// A workspace's templates (every workspace's with `None`), by name.
    pub(crate) fn list_templates(
        &self,
        workspace_id: Option<&str>,
    ) -> Result<Vec<TemplateRecord>, StoreError> {
        self.list_rows(TABLE, workspace_id)
    }

    /// Removes a template; false if there was none.
    pub(crate) fn delete_template(&self, workspace_id: &str, id: &str) -> Result<bool, StoreError> {
        self.delete_row(TABLE, Some(workspace_id), id)
    }
}

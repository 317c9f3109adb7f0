//! Templates and warm pools (Warren extensions): `{B}/templates` and `{B}/pools`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use warren_types::RunConfig;

/// `POST {B}/templates`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateTemplateBody {
    /// Name, unique in the workspace.
    pub name: String,
    /// Snapshot reference or id (default: the default image).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
    /// CPUs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vcpus: Option<u32>,
    /// Memory limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mem_bytes: Option<u64>,
    /// Disk size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fs_capacity_bytes: Option<u64>,
    /// Idle stop, seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_ttl_seconds: Option<u64>,
    /// run_config layer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_config: Option<RunConfig>,
    /// Network policy and credential rules.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_config: Option<Value>,
    /// Labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    /// Isolation tier: `jail` or `vm`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<String>,
}

/// A template.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Template {
    /// Id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Snapshot reference or id.
    pub snapshot: String,
    /// CPUs.
    pub vcpus: Option<u32>,
    /// Memory limit.
    pub mem_bytes: Option<u64>,
    /// Disk size.
    pub fs_capacity_bytes: Option<u64>,
    /// Idle stop.
    pub idle_ttl_seconds: Option<u64>,
    /// run_config layer.
    pub run_config: Option<RunConfig>,
    /// Network policy (secret values are never stored here, only their names).
    pub proxy_config: Option<Value>,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Isolation tier, when the template sets one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<String>,
    /// Its warm pool's bounds.
    pub pool_min_size: u32,
    /// Its warm pool's bounds (0: none).
    pub pool_max_size: u32,
    /// RFC 3339.
    pub created_at: String,
    /// Creating user.
    pub created_by: String,
}

/// `GET {B}/templates`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TemplateList {
    /// By name.
    pub templates: Vec<Template>,
}

/// `PUT {B}/pools`: one pool's bounds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetPoolBody {
    /// The template's name; absent or null for the default pool.
    #[serde(default)]
    pub template: Option<String>,
    /// Sandboxes held even without demand.
    pub min_size: u32,
    /// Most sandboxes held (0 turns the pool off).
    pub max_size: u32,
}

/// A warm pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pool {
    /// The template's name, or null for the default pool.
    pub template: Option<String>,
    /// The snapshot its sandboxes are made from, once known.
    pub snapshot_id: Option<String>,
    /// Bounds.
    pub min_size: u32,
    /// Bounds.
    pub max_size: u32,
    /// What it aims to hold now: the busiest 10 s of the last minute's demand, within bounds.
    pub target: u32,
    /// Sandboxes ready to be claimed.
    pub ready: u32,
    /// Sandboxes booting into it.
    pub starting: u32,
    /// Creates it served since the server started.
    pub claims: u64,
    /// Creates that found it empty.
    pub misses: u64,
    /// Why its last fill failed, while it is failing.
    pub last_error: Option<String>,
}

/// `GET {B}/pools`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolList {
    /// The default pool (when on) and the workspace's templates' pools.
    pub pools: Vec<Pool>,
}

//! Sandboxes on the control plane (§2.3, §3.1).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use warren_types::RunConfig;

/// The sandbox object of §3.1.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sandbox {
    /// Public id (UUID).
    pub id: String,
    /// Name, unique in the workspace.
    pub name: String,
    /// `provisioning`, `ready`, `stopped`, `failed` or `deleting`.
    pub status: String,
    /// Why it failed or stopped unexpectedly.
    #[serde(default)]
    pub status_message: Option<String>,
    /// Base URL of its data plane.
    #[serde(default)]
    pub dataplane_url: Option<String>,
    /// RFC 3339.
    #[serde(default)]
    pub created_at: Option<String>,
    /// RFC 3339.
    #[serde(default)]
    pub updated_at: Option<String>,
    /// RFC 3339, when it last stopped.
    #[serde(default)]
    pub stopped_at: Option<String>,
    /// The creating user's id.
    #[serde(default)]
    pub created_by: Option<String>,
    /// The snapshot id it was made from (none until snapshots exist).
    #[serde(default)]
    pub snapshot_id: Option<String>,
    /// The image reference it boots from.
    #[serde(default)]
    pub snapshot: Option<String>,
    /// Idle stop, seconds; 0 is never.
    #[serde(default)]
    pub idle_ttl_seconds: Option<u64>,
    /// Delete this long after a stop, seconds; 0 is never.
    #[serde(default)]
    pub delete_after_stop_seconds: Option<u64>,
    /// Whether files survive a stop.
    #[serde(default)]
    pub persistent: Option<bool>,
    /// CPUs.
    #[serde(default)]
    pub vcpus: Option<u32>,
    /// CPUs in thousandths.
    #[serde(default)]
    pub cpu_millicores: Option<u32>,
    /// Memory limit.
    #[serde(default)]
    pub mem_bytes: Option<u64>,
    /// Disk size.
    #[serde(default)]
    pub fs_capacity_bytes: Option<u64>,
    /// The sandbox's run_config layer.
    #[serde(default)]
    pub run_config: Option<RunConfig>,
    /// Labels (`null` when none).
    #[serde(default)]
    pub labels: Option<BTreeMap<String, String>>,
    /// Stored and echoed.
    #[serde(default)]
    pub access_delegation: Option<Value>,
    /// Stored and echoed.
    #[serde(default)]
    pub proxy_config: Option<Value>,
    /// Stored and echoed.
    #[serde(default)]
    pub mount_config: Option<Value>,
    /// Memory-preserving stop (always false until it exists).
    #[serde(default)]
    pub preserve_memory_on_stop: Option<bool>,
    /// Isolation tier (a Warren extension): `jail` or `vm`, the one the sandbox really has.
    #[serde(default)]
    pub tier: Option<String>,
    /// Volumes mounted in it.
    #[serde(default)]
    pub volumes: Vec<crate::volumes::SandboxVolume>,
}

/// GET /boxes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SandboxList {
    /// The page.
    pub items: Vec<Sandbox>,
    /// The same page under the older name.
    #[serde(default)]
    pub sandboxes: Vec<Sandbox>,
    /// The next page's cursor; null on the last page.
    #[serde(default)]
    pub next_cursor: Option<String>,
    /// Offset of the page.
    #[serde(default)]
    pub offset: usize,
}

/// GET /boxes/{name}/status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxStatusBody {
    /// The status.
    pub status: String,
    /// Why, when it failed or stopped unexpectedly.
    #[serde(default)]
    pub status_message: Option<String>,
}

/// POST /boxes. Every field the SDKs (hand-written and generated) send is listed; anything
/// else is refused, so a typo never silently does nothing.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateSandboxBody {
    /// A template (Warren extension) the other fields are layered over.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    /// Isolation tier (Warren extension): `jail` or `vm`; the server's default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<String>,
    /// Answer only once the sandbox is ready (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_for_ready: Option<bool>,
    /// Seconds to wait for ready (default 30).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<u64>,
    /// Snapshot by id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_id: Option<String>,
    /// Snapshot by reference.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
    /// Snapshot by name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_name: Option<String>,
    /// Name; generated when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Idle stop, seconds (multiple of 60; 0 never).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_ttl_seconds: Option<u64>,
    /// Delete after stop, seconds (multiple of 60; 0 never).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delete_after_stop_seconds: Option<u64>,
    /// Keep files across stops (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistent: Option<bool>,
    /// CPUs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vcpus: Option<u32>,
    /// CPUs in thousandths (rounded up to whole CPUs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_millicores: Option<u32>,
    /// Memory limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mem_bytes: Option<u64>,
    /// Disk size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fs_capacity_bytes: Option<u64>,
    /// Mounts (refused until mounts exist).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mount_config: Option<Value>,
    /// Egress proxy rules (only an empty set until the proxy exists).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_config: Option<Value>,
    /// The sandbox's run_config layer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_config: Option<RunConfig>,
    /// The caller's environment, above `run_config.env_vars`; kept by the server and never
    /// shown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env_vars: Option<BTreeMap<String, String>>,
    /// Access delegation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_delegation: Option<Value>,
    /// Labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    /// Memory-preserving stop (refused until it exists).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preserve_memory_on_stop: Option<bool>,
    /// Resume from snapshot memory (refused until it exists).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_memory: Option<bool>,
    /// Tags (accepted and ignored: tags are a hosted-service feature).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag_value_ids: Option<Vec<String>>,
    /// Volumes to mount: `[{volume, mount_path, read_only?}]`, at most four.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volumes: Option<Vec<crate::volumes::VolumeMountBody>>,
}

/// PATCH /boxes/{name}.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateSandboxBody {
    /// New name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Idle stop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_ttl_seconds: Option<u64>,
    /// Delete after stop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delete_after_stop_seconds: Option<u64>,
    /// Replaces the proxy config.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_config: Option<Value>,
    /// run_config layer to merge.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_config: Option<RunConfig>,
    /// CPUs (applied at the next start).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vcpus: Option<u32>,
    /// CPUs in thousandths.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_millicores: Option<u32>,
    /// Memory (applied at the next start).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mem_bytes: Option<u64>,
    /// Disk (applied at the next start).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fs_capacity_bytes: Option<u64>,
    /// Labels (replace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    /// Tags (accepted and ignored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag_value_ids: Option<Vec<String>>,
}

/// Whole CPUs for a millicore figure (at least one).
pub fn millicores_to_vcpus(m: u32) -> u32 {
    m.div_ceil(1000).max(1)
}

/// `POST {B}/boxes/batch-delete`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchDeleteBody {
    /// Sandbox names or ids.
    pub names: Vec<String>,
}

/// A name a batch delete left alone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchSkipped {
    /// As given.
    pub name: String,
    /// Why.
    pub reason: String,
}

/// The answer to a batch delete.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchDeleteResult {
    /// Deleted, as given.
    pub deleted: Vec<String>,
    /// Left alone.
    pub skipped: Vec<BatchSkipped>,
}

/// `GET {B}/usage` (0.15.1): the figures Warren has; the rest are absent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageBody {
    /// CPUs of running sandboxes, thousandths.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_used_millicores: Option<u64>,
    /// Most CPUs of one sandbox, thousandths.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_limit_millicores: Option<u64>,
    /// Memory limits of running sandboxes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_used_bytes: Option<u64>,
    /// Most memory committed server-wide.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_limit_bytes: Option<u64>,
    /// Sandboxes not from a pool (all of them, until pools exist).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox_direct_count: Option<u64>,
    /// Running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox_running_count: Option<u64>,
    /// Stopped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox_stopped_count: Option<u64>,
    /// Sandboxes held.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandboxes_used: Option<u64>,
    /// Most sandboxes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandboxes_limit: Option<u64>,
    /// Snapshots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshots_count: Option<u64>,
    /// Pools (none yet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pools_count: Option<u64>,
    /// Pooled replicas (none yet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox_pool_replicas_count: Option<u64>,
    /// Templates (none yet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub templates_count: Option<u64>,
    /// Registries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registries_count: Option<u64>,
}

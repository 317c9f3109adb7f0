//! Snapshots (§2.4, §3.2), capture (§2.3) and forks (a Warren extension).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use warren_types::RunConfig;

use crate::sandbox::Sandbox;

/// The snapshot object of §3.2.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Id (UUID).
    pub id: String,
    /// Name (the repository part of `name:tag`).
    pub name: String,
    /// `building`, `ready` or `failed`.
    pub status: String,
    /// Why it failed.
    #[serde(default)]
    pub status_message: Option<String>,
    /// Disk size of sandboxes booted from it, at least.
    #[serde(default)]
    pub fs_capacity_bytes: u64,
    /// Bytes its files take, when known.
    #[serde(default)]
    pub fs_used_bytes: Option<u64>,
    /// The image it was built from.
    #[serde(default)]
    pub docker_image: Option<String>,
    /// That image's manifest digest.
    #[serde(default)]
    pub image_digest: Option<String>,
    /// The sandbox it was captured from.
    #[serde(default)]
    pub source_sandbox_id: Option<String>,
    /// Registry credentials used for its pull.
    #[serde(default)]
    pub registry_id: Option<String>,
    /// Creating user.
    #[serde(default)]
    pub created_by: Option<String>,
    /// RFC 3339.
    #[serde(default)]
    pub created_at: Option<String>,
    /// RFC 3339.
    #[serde(default)]
    pub updated_at: Option<String>,
    /// Tags under its name that resolve to it; empty when dangling.
    #[serde(default)]
    pub tags: Vec<String>,
    /// What sandboxes booted from it start with.
    #[serde(default)]
    pub run_config: Option<RunConfig>,
    /// Labels its sandboxes inherit.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Free text.
    #[serde(default)]
    pub description: Option<String>,
    /// The sandbox settings it carries, in `include` terms (generated client); env var values
    /// are never shown.
    #[serde(default)]
    pub included: Vec<String>,
    /// The `mount_config` it carries, secret values redacted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mount_config: Option<Value>,
    /// The `proxy_config` it carries, secret values redacted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_config: Option<Value>,
}

/// `GET {B}/snapshots`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotList {
    /// The page (generated client).
    #[serde(default)]
    pub items: Vec<Snapshot>,
    /// The page (hand-written clients read this).
    #[serde(default)]
    pub snapshots: Vec<Snapshot>,
    /// The next page's cursor; null on the last page.
    #[serde(default)]
    pub next_cursor: Option<String>,
    /// The page's offset.
    #[serde(default)]
    pub offset: usize,
}

/// One tag of a name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotTag {
    /// The tag.
    pub tag: String,
    /// The snapshot it points at.
    pub snapshot_id: String,
}

/// `GET {B}/snapshots-by-name/{name}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotTags {
    /// The name.
    pub name: String,
    /// Its tags.
    pub tags: Vec<SnapshotTag>,
}

/// `POST {B}/boxes/{name}/snapshot`. The generated client's extra fields are accepted; those
/// that ask for something Warren does not capture are refused by the handler. Absent fields
/// are left out when sent, so the server's defaults apply (as for every request body here).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct CaptureBody {
    /// Name of the new snapshot.
    pub name: String,
    /// Tag; `latest` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// An image in the sandbox's own Docker daemon to export instead of its files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docker_image: Option<String>,
    /// Disk size of sandboxes booted from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fs_capacity_bytes: Option<u64>,
    /// Layered over the sandbox's run_config.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_config: Option<RunConfig>,
    /// Labels (the sandbox's when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    /// Free text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Capture memory too (not supported).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include_memory: Option<bool>,
    /// What else to capture (generated client).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include: Option<Vec<String>>,
    /// Generated client: checkpoint name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<Value>,
    /// Generated client: image config overrides.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_config: Option<Value>,
    /// Generated client.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confirm_allow_snapshot_secret_values: Option<bool>,
}

/// `POST {B}/snapshots`: build from a Docker image.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct CreateSnapshotBody {
    /// Name.
    pub name: String,
    /// Image reference, e.g. `python:3.12-slim` or `127.0.0.1:5000/team/app:1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docker_image: Option<String>,
    /// Disk size of sandboxes booted from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fs_capacity_bytes: Option<u64>,
    /// Tag; the image's own tag, else `latest`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// Registry credentials to pull with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry_id: Option<String>,
    /// Layered over the image's USER, WORKDIR and ENV.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_config: Option<RunConfig>,
    /// Free text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Labels its sandboxes inherit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
}

/// `POST {B}/boxes/{name}/fork`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ForkBody {
    /// How many forks (1 when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u32>,
    /// Their names, one per fork.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub names: Option<Vec<String>>,
    /// Wait until every fork is ready (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_for_ready: Option<bool>,
    /// How long to wait, seconds (default 30).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<u64>,
}

/// The forks made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ForkList {
    /// The new sandboxes.
    pub sandboxes: Vec<Sandbox>,
}

/// `POST {B}/snapshots/{id_or_ref}/tags` (a Warren extension).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TagBody {
    /// The tag to point at the snapshot.
    pub tag: String,
}

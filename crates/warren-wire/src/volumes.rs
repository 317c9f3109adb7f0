//! Volumes (beta, §13).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// `POST {B}/volumes`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CreateVolumeBody {
    /// Name, unique in the workspace.
    pub name: String,
    /// Size (rounded up to whole GiB).
    pub size_bytes: u64,
    /// Free text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
}

/// `PATCH {B}/volumes/{v}`: each field sent replaces the stored one; null or empty clears it.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateVolumeBody {
    /// Absent: keep; null or "": clear; a string: set.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub description: Option<Value>,
    /// Absent: keep; null or {}: clear; an object: set.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub labels: Option<Value>,
}

/// A field that is present, `null` included (serde reads a `null` `Option` as absent).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

/// `POST {B}/volumes/{v}/clone`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CloneVolumeBody {
    /// Name of the copy.
    pub name: String,
    /// Free text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
}

/// One attachment of a volume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeAttachmentBody {
    /// The sandbox.
    pub sandbox_id: String,
    /// Its name.
    pub sandbox_name: String,
    /// Where it is mounted.
    pub mount_path: String,
    /// Mounted read-only.
    pub read_only: bool,
}

/// The volume object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Volume {
    /// Id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Free text.
    #[serde(default)]
    pub description: Option<String>,
    /// Labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Size limit.
    pub size_bytes: u64,
    /// Bytes its files take, when known (a Warren extension).
    #[serde(default)]
    pub used_bytes: Option<u64>,
    /// `ready`.
    pub status: String,
    /// Why it is not ready.
    #[serde(default)]
    pub status_message: Option<String>,
    /// The volume it was cloned from.
    #[serde(default)]
    pub source_volume_id: Option<String>,
    /// RFC 3339.
    pub created_at: String,
    /// Creating user.
    pub created_by: String,
    /// RFC 3339.
    pub updated_at: String,
    /// Last user to change it.
    pub updated_by: String,
    /// Sandboxes that have it.
    #[serde(default)]
    pub attachments: Vec<VolumeAttachmentBody>,
}

/// `GET {B}/volumes`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VolumeList {
    /// The page.
    pub items: Vec<Volume>,
    /// The next page's cursor.
    #[serde(default)]
    pub next_cursor: Option<String>,
}

/// A volume in a create request.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct VolumeMountBody {
    /// Volume id or name.
    pub volume: String,
    /// Absolute path in the sandbox.
    pub mount_path: String,
    /// Mount read-only (many sandboxes may share a volume so).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_only: Option<bool>,
}

/// A volume as the sandbox object shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxVolume {
    /// The volume's id.
    pub volume_id: String,
    /// Its name.
    pub volume_name: String,
    /// Where it is mounted.
    pub mount_path: String,
    /// Mounted read-only.
    pub read_only: bool,
}

//! Ids, sizes and specs shared by every layer of Warren. No I/O.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

pub mod agent;

use std::collections::BTreeMap;

/// Errors from parsing the types in this crate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// A sandbox id with characters outside `[a-z0-9-]` or a bad length.
    #[error("invalid sandbox id {0:?}: use 1-40 characters of a-z, 0-9 and '-'")]
    SandboxId(String),
    /// A size such as `512M` that could not be read.
    #[error("invalid size {0:?}: use a number with an optional K, M, G or T suffix")]
    Size(String),
    /// An image reference that could not be read.
    #[error("invalid image reference {0:?}")]
    ImageRef(String),
    /// An unknown sandbox status.
    #[error("invalid sandbox status {0:?}")]
    Status(String),
}

/// Identifies one sandbox on this host. Short, lowercase, usable in paths, cgroup names and
/// hostnames without escaping.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SandboxId(String);

impl SandboxId {
    /// A fresh random id (`sb-` plus 16 hex digits).
    pub fn generate() -> Self {
        let raw = uuid::Uuid::new_v4().simple().to_string();
        Self(format!("sb-{}", &raw[..16]))
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for SandboxId {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let ok = !s.is_empty()
            && s.len() <= 40
            && !s.starts_with('-')
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(ParseError::SandboxId(s.to_owned()))
        }
    }
}

impl TryFrom<String> for SandboxId {
    type Error = ParseError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<SandboxId> for String {
    fn from(id: SandboxId) -> Self {
        id.0
    }
}

impl fmt::Display for SandboxId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Parses a byte size: a plain number of bytes, or a number with a binary suffix
/// (`K`, `M`, `G`, `T`, optionally followed by `i` and/or `B`), e.g. `512M`, `2GiB`, `1.5G`.
pub fn parse_size(s: &str) -> Result<u64, ParseError> {
    let err = || ParseError::Size(s.to_owned());
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let unit = unit.trim().to_ascii_uppercase();
    let unit = unit.trim_end_matches('B').trim_end_matches('I');
    let mult: u64 = match unit {
        "" => 1,
        "K" => 1 << 10,
        "M" => 1 << 20,
        "G" => 1 << 30,
        "T" => 1 << 40,
        _ => return Err(err()),
    };
    if num.is_empty() {
        return Err(err());
    }
    if let Ok(n) = num.parse::<u64>() {
        return n.checked_mul(mult).ok_or_else(err);
    }
    let f: f64 = num.parse().map_err(|_| err())?;
    let bytes = f * mult as f64;
    if !bytes.is_finite() || bytes < 0.0 || bytes >= u64::MAX as f64 {
        return Err(err());
    }
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // range checked above
    Ok(bytes as u64)
}

/// Resource limits of one sandbox. Every field is enforced by the kernel, not advisory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// CPU bandwidth in thousandths of a CPU (1000 = one full core).
    pub millicpus: u32,
    /// Memory limit in bytes (cgroup memory limit; no swap).
    pub memory_bytes: u64,
    /// Filesystem capacity in bytes (the root filesystem and /tmp together).
    pub disk_bytes: u64,
    /// Most processes and threads at once (pids cgroup).
    pub pids: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            millicpus: 1000,
            memory_bytes: 512 << 20,
            disk_bytes: 2 << 30,
            pids: 1024,
        }
    }
}

/// A reference to a snapshot or image, e.g. `system/default:latest`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ImageRef {
    name: String,
    tag: String,
}

impl ImageRef {
    /// The image every sandbox gets unless told otherwise.
    pub fn default_image() -> Self {
        Self {
            name: "system/default".into(),
            tag: "latest".into(),
        }
    }

    /// Repository part, e.g. `system/default`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Tag part, e.g. `latest`.
    pub fn tag(&self) -> &str {
        &self.tag
    }

    /// A single path component that names this image on disk (no `/`, `:` or `..`).
    pub fn storage_name(&self) -> String {
        format!("{}@{}", self.name.replace('/', "+"), self.tag)
    }
}

impl FromStr for ImageRef {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseError::ImageRef(s.to_owned());
        let (name, tag) = match s.rsplit_once(':') {
            Some((n, t)) if !t.contains('/') => (n, t),
            _ => (s, "latest"),
        };
        let name_ok = !name.is_empty()
            && name.len() <= 200
            && name.split('/').all(|part| {
                !part.is_empty()
                    && part != "."
                    && part != ".."
                    && part
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
            });
        let tag_ok = !tag.is_empty()
            && tag.len() <= 128
            && tag
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        if name_ok && tag_ok {
            Ok(Self {
                name: name.to_owned(),
                tag: tag.to_owned(),
            })
        } else {
            Err(err())
        }
    }
}

impl TryFrom<String> for ImageRef {
    type Error = ParseError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<ImageRef> for String {
    fn from(r: ImageRef) -> Self {
        r.to_string()
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.name, self.tag)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("512M").unwrap(), 512 << 20);
        assert_eq!(parse_size("2G").unwrap(), 2 << 30);
        assert_eq!(parse_size("2GiB").unwrap(), 2 << 30);
        assert_eq!(parse_size("1.5k").unwrap(), 1536);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        for bad in ["", "M", "12X", "-1G", "1e400", "99999999999999T"] {
            assert!(parse_size(bad).is_err(), "{bad} should not parse");
        }
    }

    #[test]
    fn sandbox_ids() {
        let id = SandboxId::generate();
        assert_eq!(id.as_str().parse::<SandboxId>().unwrap(), id);
        for bad in ["", "A", "a/b", "-x", "..", &"a".repeat(41)] {
            assert!(bad.parse::<SandboxId>().is_err(), "{bad} should not parse");
        }
    }

    #[test]
    fn image_refs() {
        let d: ImageRef = "system/default:latest".parse().unwrap();
        assert_eq!(d, ImageRef::default_image());
        assert_eq!(d.storage_name(), "system+default@latest");
        let p: ImageRef = "python".parse().unwrap();
        assert_eq!(p.to_string(), "python:latest");
        let h = "localhost:5000/x/y:1.2".parse::<ImageRef>();
        assert!(
            h.is_err(),
            "hosts with ports are not image refs of this store"
        );
        for bad in ["../x", "a//b", "a:b:c/d", "x:", "a b"] {
            assert!(bad.parse::<ImageRef>().is_err(), "{bad} should not parse");
        }
    }
}

/// User, working directory and environment commands run with. Layers merge: `user` and
/// `work_dir` replace, `env_vars` merge.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    /// `name`, `uid`, `name:group` or `uid:gid`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Absolute working directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub work_dir: Option<String>,
    /// Environment variables.
    #[serde(default)]
    pub env_vars: BTreeMap<String, String>,
}

impl RunConfig {
    /// `self` with `top` layered over it.
    pub fn layered(&self, top: &RunConfig) -> RunConfig {
        let mut env_vars = self.env_vars.clone();
        env_vars.extend(top.env_vars.iter().map(|(k, v)| (k.clone(), v.clone())));
        RunConfig {
            user: top.user.clone().or_else(|| self.user.clone()),
            work_dir: top.work_dir.clone().or_else(|| self.work_dir.clone()),
            env_vars,
        }
    }
}

/// Lifecycle state of a sandbox as the API reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SandboxStatus {
    /// Being created or started.
    Provisioning,
    /// Running; commands and file operations work.
    Ready,
    /// Not running; files kept. A data-plane request or `start` wakes it.
    Stopped,
    /// Creation or start failed; `status_message` says why.
    Failed,
    /// Being deleted.
    Deleting,
}

impl SandboxStatus {
    /// The status as the API spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Provisioning => "provisioning",
            Self::Ready => "ready",
            Self::Stopped => "stopped",
            Self::Failed => "failed",
            Self::Deleting => "deleting",
        }
    }

    /// Whether the lifecycle allows going from `self` to `next`.
    pub fn can_become(self, next: Self) -> bool {
        use SandboxStatus::{Deleting, Failed, Provisioning, Ready, Stopped};
        matches!(
            (self, next),
            (Provisioning, Ready | Failed | Stopped)
                | (Ready, Stopped | Failed)
                | (Stopped | Failed, Provisioning)
                | (Provisioning | Ready | Stopped | Failed, Deleting)
        )
    }
}

impl FromStr for SandboxStatus {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "provisioning" => Self::Provisioning,
            "ready" => Self::Ready,
            "stopped" => Self::Stopped,
            "failed" => Self::Failed,
            "deleting" => Self::Deleting,
            _ => return Err(ParseError::Status(s.to_owned())),
        })
    }
}

impl fmt::Display for SandboxStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod status_tests {
    use super::SandboxStatus::*;

    #[test]
    fn lifecycle_transitions() {
        assert!(Provisioning.can_become(Ready));
        assert!(Ready.can_become(Stopped));
        assert!(Stopped.can_become(Provisioning));
        assert!(Failed.can_become(Deleting));
        assert!(!Deleting.can_become(Ready));
        assert!(
            !Stopped.can_become(Ready),
            "a start goes through provisioning"
        );
        assert!(!Ready.can_become(Provisioning));
        for s in [Provisioning, Ready, Stopped, Failed, Deleting] {
            assert_eq!(s.as_str().parse::<super::SandboxStatus>().unwrap(), s);
        }
    }
}

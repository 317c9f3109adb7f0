//! What a sandbox was asked to be: validated requests, defaults in one place, and run_config
//! layering (LANGSMITH-API.md §2.7).

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use warren_types::RunConfig;

/// A request the control plane refuses as asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A value is out of range or of the wrong shape.
    #[error("{0}")]
    Invalid(String),
    /// The request contradicts itself or cannot be served as written.
    #[error("{0}")]
    Malformed(String),
    /// It asks for a feature that is not built yet: refused, never silently ignored.
    #[error("{0}")]
    Unsupported(String),
}

/// Rejects relative working directories, empty users and malformed variable names.
pub fn validate_run_config(rc: &RunConfig) -> Result<(), ConfigError> {
    if let Some(dir) = &rc.work_dir
        && !dir.starts_with('/')
    {
        return Err(ConfigError::Malformed(format!(
            "run_config.work_dir must be an absolute path, got {dir:?}"
        )));
    }
    if let Some(user) = &rc.user
        && (user.is_empty() || user.contains(['\0', '\n', '/']))
    {
        return Err(ConfigError::Invalid(format!(
            "invalid run_config.user {user:?}"
        )));
    }
    validate_env_names(&rc.env_vars)
}

/// Rejects environment variable names a process environment cannot hold.
pub(crate) fn validate_env_names(env: &BTreeMap<String, String>) -> Result<(), ConfigError> {
    for k in env.keys() {
        if k.is_empty() || k.contains(['=', '\0']) {
            return Err(ConfigError::Invalid(format!(
                "invalid environment variable name {k:?}"
            )));
        }
    }
    Ok(())
}

/// `base` labels with `own` over them (`own` wins a shared key): how a template's, a carried
/// snapshot's and a snapshot's own labels go under a create's.
pub(crate) fn labels_under(
    base: &BTreeMap<String, String>,
    own: Option<BTreeMap<String, String>>,
) -> BTreeMap<String, String> {
    let mut labels = base.clone();
    labels.extend(own.unwrap_or_default());
    labels
}

/// A sandbox's stored configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SandboxConfig {
    /// Image reference it boots from.
    pub snapshot: String,
    /// Id of the snapshot it booted from (absent in records from before snapshots had ids).
    #[serde(default)]
    pub snapshot_id: Option<String>,
    /// CPUs.
    pub vcpus: u32,
    /// Memory limit in bytes.
    pub mem_bytes: u64,
    /// Disk size in bytes.
    pub fs_capacity_bytes: u64,
    /// Stop after this long without activity; 0 = never.
    pub idle_ttl_seconds: u64,
    /// Delete this long after a stop; 0 = never.
    pub delete_after_stop_seconds: u64,
    /// False: writes are discarded on every stop.
    pub persistent: bool,
    /// What its commands run with beneath `env_vars`: user, working directory and base env
    /// (its snapshot's, under the create's own run_config). A snapshot captured from it
    /// carries this.
    pub run_config: RunConfig,
    /// The create's own `env_vars`, above `run_config`'s. Kept apart because they are the
    /// caller's (often credentials): never shown, and carried into a captured snapshot only
    /// when the capture includes them. Records from before this kept them in `run_config`.
    #[serde(default)]
    pub env_vars: BTreeMap<String, String>,
    /// Stored and echoed.
    pub labels: BTreeMap<String, String>,
    /// Stored and echoed.
    pub access_delegation: Option<Value>,
    /// The egress proxy's policy and credential rules; opaque values are never shown
    /// ([`crate::redact_credentials`]).
    pub proxy_config: Option<Value>,
    /// Stored and echoed (no mounts, until mounts exist).
    pub mount_config: Option<Value>,
    /// Governed workspace tag values (0.15.1); the list filter `tag_value_id` matches them.
    #[serde(default)]
    pub tag_value_ids: Vec<String>,
    /// Volumes mounted in it.
    #[serde(default)]
    pub volumes: Vec<VolumeAttachment>,
    /// Its isolation tier (records from before tiers are jails).
    #[serde(default)]
    pub tier: warren_driver::Tier,
}

/// Server-side defaults and bounds.
pub mod defaults {
    /// CPUs when the request names none.
    pub const VCPUS: u32 = 1;
    /// Memory when the request names none.
    pub const MEM_BYTES: u64 = 1 << 30;
    /// Disk when the request names none.
    pub const FS_CAPACITY_BYTES: u64 = 4 << 30;
    /// Idle stop after 10 minutes unless told otherwise.
    pub const IDLE_TTL_SECONDS: u64 = 600;
    /// Delete 14 days after a stop unless told otherwise.
    pub const DELETE_AFTER_STOP_SECONDS: u64 = 14 * 24 * 3600;
    /// Bounds.
    pub const MAX_VCPUS: u32 = 64;
    /// Smallest memory limit a sandbox can boot with.
    pub const MIN_MEM_BYTES: u64 = 32 << 20;
    /// Smallest memory a vm-tier sandbox boots with: its guest kernel unpacks itself and its
    /// initramfs into it (below about 96 MiB the kernel stops before its first line).
    pub const MIN_VM_MEM_BYTES: u64 = 128 << 20;
    /// Smallest disk a sandbox can have (the default image alone takes about 220 MiB).
    pub const MIN_FS_CAPACITY_BYTES: u64 = 256 << 20;
    /// Largest disk (the btrfs pool is sparse; this bounds one tenant).
    pub const MAX_FS_CAPACITY_BYTES: u64 = 1 << 40;
}

impl SandboxConfig {
    /// What a command runs with before its own layer: `run_config` with `env_vars` over it.
    pub fn command_base(&self) -> RunConfig {
        self.run_config.layered(&RunConfig {
            env_vars: self.env_vars.clone(),
            ..RunConfig::default()
        })
    }
}

impl Default for SandboxConfig {
    fn default() -> Self {
        Self {
            snapshot: warren_types::ImageRef::default_image().to_string(),
            snapshot_id: None,
            vcpus: defaults::VCPUS,
            mem_bytes: defaults::MEM_BYTES,
            fs_capacity_bytes: defaults::FS_CAPACITY_BYTES,
            idle_ttl_seconds: defaults::IDLE_TTL_SECONDS,
            delete_after_stop_seconds: defaults::DELETE_AFTER_STOP_SECONDS,
            persistent: true,
            run_config: RunConfig::default(),
            env_vars: BTreeMap::new(),
            labels: BTreeMap::new(),
            access_delegation: None,
            proxy_config: None,
            mount_config: None,
            tag_value_ids: Vec::new(),
            volumes: Vec::new(),
            tier: warren_driver::Tier::Jail,
        }
    }
}

/// Refuses a memory size the sandbox's tier cannot boot with.
pub(crate) fn validate_tier_memory(
    tier: warren_driver::Tier,
    mem_bytes: u64,
) -> Result<(), ConfigError> {
    if tier == warren_driver::Tier::Vm && mem_bytes < defaults::MIN_VM_MEM_BYTES {
        return Err(ConfigError::Invalid(format!(
            "mem_bytes must be at least {} for a vm-tier sandbox, got {mem_bytes}",
            defaults::MIN_VM_MEM_BYTES
        )));
    }
    Ok(())
}

/// A create request, already decoded by the API layer.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CreateSandbox {
    /// Name; generated when absent.
    pub name: Option<String>,
    /// Snapshot reference or id; the default image when absent.
    pub snapshot: Option<String>,
    /// CPUs.
    pub vcpus: Option<u32>,
    /// Memory limit.
    pub mem_bytes: Option<u64>,
    /// Disk size.
    pub fs_capacity_bytes: Option<u64>,
    /// Idle stop.
    pub idle_ttl_seconds: Option<u64>,
    /// Delete after stop.
    pub delete_after_stop_seconds: Option<u64>,
    /// Persistence across stops.
    pub persistent: Option<bool>,
    /// run_config layer.
    pub run_config: Option<RunConfig>,
    /// Environment variables above the run_config's.
    pub env_vars: Option<BTreeMap<String, String>>,
    /// Labels.
    pub labels: Option<BTreeMap<String, String>>,
    /// Access delegation.
    pub access_delegation: Option<Value>,
    /// Proxy config.
    pub proxy_config: Option<Value>,
    /// Mount config.
    pub mount_config: Option<Value>,
    /// Memory-preserving stop (not supported yet).
    pub preserve_memory_on_stop: Option<bool>,
    /// Resume from snapshot memory (not supported yet).
    pub restore_memory: Option<bool>,
    /// Governed workspace tag values.
    pub tag_value_ids: Option<Vec<String>>,
    /// Volumes to mount.
    pub volumes: Option<Vec<VolumeRequest>>,
    /// A template (name or id) the request's fields are layered over.
    pub template: Option<String>,
    /// Isolation tier (a Warren extension); the server's default when absent.
    pub tier: Option<warren_driver::Tier>,
}

/// An update request.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UpdateSandbox {
    /// New name.
    pub name: Option<String>,
    /// Idle stop.
    pub idle_ttl_seconds: Option<u64>,
    /// Delete after stop.
    pub delete_after_stop_seconds: Option<u64>,
    /// run_config layer to merge.
    pub run_config: Option<RunConfig>,
    /// Replaces the proxy config.
    pub proxy_config: Option<Value>,
    /// CPUs (applied at the next start).
    pub vcpus: Option<u32>,
    /// Memory limit (applied at the next start).
    pub mem_bytes: Option<u64>,
    /// Disk size (applied at the next start).
    pub fs_capacity_bytes: Option<u64>,
    /// Labels (replace).
    pub labels: Option<BTreeMap<String, String>>,
    /// Tag values (replace).
    pub tag_value_ids: Option<Vec<String>>,
}

/// Checks a sandbox name: 1–63 characters of letters, digits, `-`, `_` and `.`, starting with a
/// letter or digit, and not shaped like a UUID (those address sandboxes by id).
pub fn validate_name(name: &str) -> Result<(), ConfigError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if !ok {
        return Err(ConfigError::Invalid(format!(
            "invalid sandbox name {name:?}: use 1-63 letters, digits, '-', '_' or '.', starting \
             with a letter or digit"
        )));
    }
    if uuid::Uuid::parse_str(name).is_ok() {
        return Err(ConfigError::Invalid(format!(
            "sandbox name {name:?} must not be a UUID"
        )));
    }
    Ok(())
}

/// Checks a TTL: non-negative multiple of 60 seconds.
pub fn validate_ttl(field: &str, secs: u64) -> Result<(), ConfigError> {
    if !secs.is_multiple_of(60) {
        return Err(ConfigError::Invalid(format!(
            "{field} must be a multiple of 60, got {secs}"
        )));
    }
    Ok(())
}

/// Checks resource figures against the bounds.
pub fn validate_resources(
    vcpus: Option<u32>,
    mem: Option<u64>,
    fs: Option<u64>,
) -> Result<(), ConfigError> {
    if let Some(v) = vcpus
        && !(1..=defaults::MAX_VCPUS).contains(&v)
    {
        return Err(ConfigError::Invalid(format!(
            "vcpus must be between 1 and {}, got {v}",
            defaults::MAX_VCPUS
        )));
    }
    if let Some(m) = mem
        && m < defaults::MIN_MEM_BYTES
    {
        return Err(ConfigError::Invalid(format!(
            "mem_bytes must be at least {}, got {m}",
            defaults::MIN_MEM_BYTES
        )));
    }
    if let Some(f) = fs
        && !(defaults::MIN_FS_CAPACITY_BYTES..=defaults::MAX_FS_CAPACITY_BYTES).contains(&f)
    {
        return Err(ConfigError::Invalid(format!(
            "fs_capacity_bytes must be between {} and {}, got {f}",
            defaults::MIN_FS_CAPACITY_BYTES,
            defaults::MAX_FS_CAPACITY_BYTES
        )));
    }
    Ok(())
}

/// Checks the objects that are stored with the sandbox, refusing what is not enforced:
/// accepting a rule that does nothing would let a caller believe, say, that credentials are
/// being injected. Returns the workspace secrets the `proxy_config` names.
pub fn validate_passthrough(
    req: &CreateSandbox,
    egress: Option<&Arc<dyn Egress>>,
) -> Result<Vec<String>, ConfigError> {
    if req.preserve_memory_on_stop == Some(true) || req.restore_memory == Some(true) {
        return Err(ConfigError::Malformed(
            "memory-preserving stop is not supported yet".into(),
        ));
    }
    if let Some(ad) = &req.access_delegation {
        let explicit = ad.get("mode").and_then(Value::as_str) == Some("EXPLICIT")
            && ad.get("permissions").is_some_and(Value::is_array);
        if !explicit {
            return Err(ConfigError::Malformed(
                "access_delegation must be {\"mode\": \"EXPLICIT\", \"permissions\": [...]}".into(),
            ));
        }
    }
    let secrets = check_proxy_config(req.proxy_config.as_ref(), egress)?;
    if let Some(mc) = &req.mount_config
        && mc
            .get("mounts")
            .and_then(Value::as_array)
            .is_some_and(|m| !m.is_empty())
    {
        return Err(ConfigError::Unsupported(
            "mounts are not supported yet".into(),
        ));
    }
    Ok(secrets)
}

/// What the control plane needs from the egress proxy, given by a server that runs one.
/// Without one, sandboxes have no egress to configure.
pub trait Egress: Send + Sync + std::fmt::Debug {
    /// Checks a `proxy_config` with the proxy's own parsers (access control and credential
    /// rules); returns the workspace secrets its rules name.
    fn check(&self, proxy_config: &Value) -> Result<Vec<String>, ConfigError>;
    /// The sandbox's CA certificate (PEM), made if it has none. The sandbox's trust store gets
    /// it, so the proxy can add credentials to TLS connections its rules cover.
    fn sandbox_ca(&self, sandbox_id: &str) -> Result<String, String>;
    /// Forgets a deleted sandbox's CA.
    fn forget(&self, sandbox_id: &str);
}

/// The server's asymmetric signing key: proxy callback signatures and the user tokens of
/// login-mode service URLs are made with it, and anyone verifies them with the public half
/// published at `/.well-known/jwks.json` (LANGSMITH-API.md §6.3). Given by the server binary,
/// which owns the key file.
pub trait TokenSigner: Send + Sync + std::fmt::Debug {
    /// The public keys, as a JWK Set.
    fn jwks(&self) -> Value;
    /// A JWS of `claims` (the whole payload) with the key `jwks` names by `kid`.
    fn sign(&self, claims: &Value) -> Result<String, String>;
}

/// Checks a `proxy_config` by the egress proxy's parsers; returns the workspace secrets its
/// rules name. A server without egress refuses any that asks for something.
pub fn check_proxy_config(
    pc: Option<&Value>,
    egress: Option<&Arc<dyn Egress>>,
) -> Result<Vec<String>, ConfigError> {
    let Some(pc) = pc else { return Ok(Vec::new()) };
    let Some(obj) = pc.as_object() else {
        return Err(ConfigError::Invalid(
            "proxy_config must be an object".into(),
        ));
    };
    let asks = ["rules", "callbacks", "access_control"]
        .iter()
        .any(|k| match obj.get(*k) {
            None | Some(Value::Null) => false,
            Some(Value::Array(a)) => !a.is_empty(),
            Some(_) => true,
        });
    match egress {
        Some(egress) => egress.check(pc),
        None if asks => Err(ConfigError::Unsupported(
            "this server runs sandboxes without network egress (warren serve --network none)"
                .into(),
        )),
        None => Ok(Vec::new()),
    }
}

/// A volume as a sandbox has it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeAttachment {
    /// The volume's id.
    pub volume_id: String,
    /// Its name when attached.
    pub volume_name: String,
    /// Where it is mounted in the sandbox.
    pub mount_path: String,
    /// Mounted read-only.
    pub read_only: bool,
}

/// A volume a create asks for.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct VolumeRequest {
    /// Id or name.
    pub volume: String,
    /// Absolute path in the sandbox.
    pub mount_path: String,
    /// Mount read-only.
    pub read_only: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_config_layers_replace_and_merge() {
        let base = RunConfig {
            user: Some("root".into()),
            work_dir: Some("/".into()),
            env_vars: [("A".into(), "1".into()), ("B".into(), "1".into())].into(),
        };
        let top = RunConfig {
            user: None,
            work_dir: Some("/srv".into()),
            env_vars: [("B".into(), "2".into())].into(),
        };
        let l = base.layered(&top);
        assert_eq!(l.user.as_deref(), Some("root"));
        assert_eq!(l.work_dir.as_deref(), Some("/srv"));
        assert_eq!(l.env_vars.get("A").map(String::as_str), Some("1"));
        assert_eq!(l.env_vars.get("B").map(String::as_str), Some("2"));
        let rel = RunConfig {
            work_dir: Some("srv".into()),
            ..Default::default()
        };
        assert!(validate_run_config(&rel).is_err());
    }

    #[test]
    fn names() {
        for ok in ["a", "sandbox-abc123", "My_Box.1"] {
            validate_name(ok).unwrap();
        }
        let uuid = uuid::Uuid::new_v4().to_string();
        let long = "a".repeat(64);
        for bad in [
            "",
            "-a",
            "a/b",
            "a b",
            "../x",
            long.as_str(),
            uuid.as_str(),
            "é",
        ] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn ttl_and_resources() {
        validate_ttl("idle_ttl_seconds", 0).unwrap();
        validate_ttl("idle_ttl_seconds", 120).unwrap();
        assert!(validate_ttl("idle_ttl_seconds", 61).is_err());
        validate_resources(Some(2), Some(512 << 20), Some(1 << 30)).unwrap();
        assert!(validate_resources(Some(0), None, None).is_err());
        assert!(validate_resources(None, Some(1), None).is_err());
        assert!(validate_resources(None, None, Some(1)).is_err());
    }

    #[test]
    fn unsupported_features_are_refused_not_ignored() {
        let req = CreateSandbox {
            preserve_memory_on_stop: Some(true),
            ..Default::default()
        };
        assert!(validate_passthrough(&req, None).is_err());
        let req = CreateSandbox {
            proxy_config: Some(serde_json::json!({"rules": [{"name": "aws"}]})),
            ..Default::default()
        };
        assert!(validate_passthrough(&req, None).is_err());
        let req = CreateSandbox {
            proxy_config: Some(serde_json::json!({"rules": []})),
            access_delegation: Some(serde_json::json!({"mode": "EXPLICIT", "permissions": []})),
            ..Default::default()
        };
        validate_passthrough(&req, None).unwrap();
        let req = CreateSandbox {
            access_delegation: Some(serde_json::json!({"mode": "INHERIT"})),
            ..Default::default()
        };
        assert!(validate_passthrough(&req, None).is_err());
    }
}

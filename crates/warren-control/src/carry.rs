//! The sandbox settings a captured snapshot carries (capture's `include`): sandboxes created
//! from it start with each carried setting their create request leaves unset. Without
//! `include` a snapshot carries only files, run_config and labels, as before.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::{ConfigError, CreateSandbox, SandboxConfig};

/// Labels under this prefix are the platform's own; a snapshot never carries them.
const RESERVED_LABEL_PREFIX: &str = "com.langchain.";

/// `labels` without the platform's own, which describe one sandbox and never pass to another.
pub(crate) fn unreserved(labels: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    labels
        .iter()
        .filter(|(k, _)| !k.starts_with(RESERVED_LABEL_PREFIX))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// A copy of a config that may hold credentials (`proxy_config`, `mount_config`), noting in
/// `secrets` when it holds a literal one.
fn credentials(name: &str, config: &Option<Value>, secrets: &mut Vec<String>) -> Option<Value> {
    if config
        .as_ref()
        .is_some_and(crate::proxy_values::holds_opaque_values)
    {
        secrets.push(format!("{name} holds opaque values"));
    }
    config.clone()
}

/// One setting `include` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Setting {
    /// `mount_config`.
    Mounts,
    /// `proxy_config`: network policy and credential rules.
    ProxyConfig,
    /// The create's `env_vars`.
    EnvVars,
    /// CPUs and memory.
    Resources,
    /// `idle_ttl_seconds` and `delete_after_stop_seconds`.
    Lifecycle,
    /// Labels, merged under a create's own.
    Labels,
}

impl Setting {
    /// Every setting, in the order the API lists them.
    pub const ALL: [Setting; 6] = [
        Setting::Mounts,
        Setting::ProxyConfig,
        Setting::EnvVars,
        Setting::Resources,
        Setting::Lifecycle,
        Setting::Labels,
    ];

    /// Its name in `include` and `included`.
    pub fn as_str(self) -> &'static str {
        match self {
            Setting::Mounts => "mounts",
            Setting::ProxyConfig => "proxy_config",
            Setting::EnvVars => "env_vars",
            Setting::Resources => "resources",
            Setting::Lifecycle => "lifecycle",
            Setting::Labels => "labels",
        }
    }

    /// The settings an `include` list names (`all` names every one), each once, in the
    /// API's order; 422 naming the accepted values for any other.
    pub fn parse_include(names: &[String]) -> Result<Vec<Setting>, ConfigError> {
        let mut out = Vec::new();
        for name in names {
            if name == "all" {
                out.extend(Self::ALL);
                continue;
            }
            match Self::ALL.into_iter().find(|s| s.as_str() == name) {
                Some(s) => out.push(s),
                None => {
                    let known: Vec<&str> = Self::ALL.iter().map(|s| s.as_str()).collect();
                    return Err(ConfigError::Invalid(format!(
                        "include: unknown setting {name:?}; use all, {}",
                        known.join(", ")
                    )));
                }
            }
        }
        out.sort();
        out.dedup();
        Ok(out)
    }
}

/// What a snapshot carries of the sandbox it was captured from. Stored with the snapshot.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Carried {
    /// The settings included at capture, in the API's order.
    #[serde(default)]
    pub included: Vec<Setting>,
    /// The sandbox's `mount_config`, when it had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mount_config: Option<Value>,
    /// The sandbox's `proxy_config` (opaque values included: a create from the snapshot
    /// enforces them), when it had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_config: Option<Value>,
    /// The sandbox's own `env_vars`. Never shown.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env_vars: BTreeMap<String, String>,
    /// CPUs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vcpus: Option<u32>,
    /// Memory limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mem_bytes: Option<u64>,
    /// Idle stop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_ttl_seconds: Option<u64>,
    /// Delete after stop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delete_after_stop_seconds: Option<u64>,
    /// Labels, the platform's own left out.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

impl Carried {
    /// What `include` takes of a sandbox's config. A setting that holds a literal secret (any
    /// env var; a `proxy_config` opaque value) is stored in the snapshot for every sandbox
    /// created from it, so it is taken only when the caller `confirm`s that.
    pub(crate) fn capture(
        cfg: &SandboxConfig,
        include: &[Setting],
        confirm: bool,
    ) -> Result<Self, ConfigError> {
        let mut c = Carried {
            included: include.to_vec(),
            ..Carried::default()
        };
        let mut secrets = Vec::new();
        for s in include {
            match s {
                Setting::Mounts => {
                    c.mount_config = credentials("mount_config", &cfg.mount_config, &mut secrets);
                }
                Setting::ProxyConfig => {
                    c.proxy_config = credentials("proxy_config", &cfg.proxy_config, &mut secrets);
                }
                Setting::EnvVars => {
                    c.env_vars.clone_from(&cfg.env_vars);
                    if !cfg.env_vars.is_empty() {
                        secrets.push(format!("env_vars holds {} value(s)", cfg.env_vars.len()));
                    }
                }
                Setting::Resources => {
                    c.vcpus = Some(cfg.vcpus);
                    c.mem_bytes = Some(cfg.mem_bytes);
                }
                Setting::Lifecycle => {
                    c.idle_ttl_seconds = Some(cfg.idle_ttl_seconds);
                    c.delete_after_stop_seconds = Some(cfg.delete_after_stop_seconds);
                }
                Setting::Labels => c.labels = unreserved(&cfg.labels),
            }
        }
        if !secrets.is_empty() && !confirm {
            return Err(ConfigError::Invalid(format!(
                "the included settings hold literal secret values ({}); every sandbox created \
                 from the snapshot could use them: set confirm_allow_snapshot_secret_values to \
                 true to store them, or leave those settings out of include",
                secrets.join("; ")
            )));
        }
        Ok(c)
    }

    /// What the audit entry of the capture adds: the settings carried, if any.
    pub(crate) fn audit_suffix(&self) -> String {
        if self.included.is_empty() {
            return String::new();
        }
        let names: Vec<&str> = self.included.iter().map(|s| s.as_str()).collect();
        format!(" including {}", names.join(", "))
    }

    /// `req` with each carried setting it leaves unset; carried labels go under its own.
    pub(crate) fn under(&self, mut req: CreateSandbox) -> CreateSandbox {
        for s in &self.included {
            match s {
                Setting::Mounts => {
                    req.mount_config = req.mount_config.or_else(|| self.mount_config.clone());
                }
                Setting::ProxyConfig => {
                    req.proxy_config = req.proxy_config.or_else(|| self.proxy_config.clone());
                }
                Setting::EnvVars => {
                    // Below a key the request's own run_config sets: the request wins.
                    if req.env_vars.is_none() {
                        let own = req.run_config.as_ref().map(|rc| &rc.env_vars);
                        let env: BTreeMap<String, String> = self
                            .env_vars
                            .iter()
                            .filter(|(k, _)| !own.is_some_and(|o| o.contains_key(*k)))
                            .map(|(k, v)| (k.clone(), v.clone()))
                            .collect();
                        req.env_vars = (!env.is_empty()).then_some(env);
                    }
                }
                // CPUs and memory are one setting, as idle stop and deletion are: a request
                // that sets either part of one takes none of it from the snapshot (a memory
                // asked for alone is not paired with CPUs sized for another).
                Setting::Resources => {
                    if req.vcpus.is_none() && req.mem_bytes.is_none() {
                        req.vcpus = self.vcpus;
                        req.mem_bytes = self.mem_bytes;
                    }
                }
                Setting::Lifecycle => {
                    if req.idle_ttl_seconds.is_none() && req.delete_after_stop_seconds.is_none() {
                        req.idle_ttl_seconds = self.idle_ttl_seconds;
                        req.delete_after_stop_seconds = self.delete_after_stop_seconds;
                    }
                }
                Setting::Labels => {
                    if !self.labels.is_empty() {
                        req.labels = Some(crate::config::labels_under(&self.labels, req.labels));
                    }
                }
            }
        }
        req
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn include_names_parse_with_all_and_refuse_others() {
        let all = Setting::parse_include(&["labels".into(), "all".into()]).unwrap();
        assert_eq!(all, Setting::ALL.to_vec());
        let two =
            Setting::parse_include(&["labels".into(), "env_vars".into(), "labels".into()]).unwrap();
        assert_eq!(two, vec![Setting::EnvVars, Setting::Labels]);
        let err = Setting::parse_include(&["memory".into()]).unwrap_err();
        assert!(err.to_string().contains("\"memory\""), "{err}");
    }

    #[test]
    fn secrets_need_confirmation_and_reserved_labels_stay_behind() {
        let mut cfg = SandboxConfig::default();
        cfg.env_vars.insert("TOKEN".into(), "s3cret".into());
        cfg.labels.insert("team".into(), "a".into());
        cfg.labels.insert("com.langchain.run".into(), "x".into());
        let err = Carried::capture(&cfg, &Setting::ALL, false).unwrap_err();
        assert!(
            err.to_string()
                .contains("confirm_allow_snapshot_secret_values")
        );
        // Labels and resources hold no secret: no confirmation needed.
        let c = Carried::capture(&cfg, &[Setting::Resources, Setting::Labels], false).unwrap();
        assert_eq!(c.labels, [("team".to_owned(), "a".to_owned())].into());
        assert!(c.env_vars.is_empty());
        let c = Carried::capture(&cfg, &Setting::ALL, true).unwrap();
        assert_eq!(c.env_vars["TOKEN"], "s3cret");

        cfg.env_vars.clear();
        cfg.proxy_config = Some(serde_json::json!({"rules": [{"name": "r", "headers": [
            {"name": "Authorization", "value": {"type": "opaque", "value": "Bearer x"}}]}]}));
        assert!(Carried::capture(&cfg, &[Setting::ProxyConfig], false).is_err());
        cfg.proxy_config = Some(serde_json::json!({"rules": [{"name": "r", "headers": [
            {"name": "Authorization", "value": {"type": "workspace_secret", "value": "TOKEN"}}]}]}));
        assert!(Carried::capture(&cfg, &[Setting::ProxyConfig], false).is_ok());
        cfg.mount_config = Some(serde_json::json!({"auth": {"aws": {
            "secret_access_key": {"type": "opaque", "value": "k"}}}}));
        assert!(Carried::capture(&cfg, &[Setting::Mounts], false).is_err());
        assert!(Carried::capture(&cfg, &[Setting::Mounts], true).is_ok());
    }

    #[test]
    fn a_create_keeps_what_it_sets_and_takes_the_rest() {
        let mut cfg = SandboxConfig {
            vcpus: 2,
            mem_bytes: 2 << 30,
            idle_ttl_seconds: 60,
            ..SandboxConfig::default()
        };
        cfg.env_vars.insert("A".into(), "carried".into());
        cfg.labels.insert("team".into(), "a".into());
        cfg.labels.insert("env".into(), "dev".into());
        let c = Carried::capture(&cfg, &Setting::ALL, true).unwrap();
        let req = c.under(CreateSandbox {
            labels: Some([("env".to_owned(), "prod".to_owned())].into()),
            ..CreateSandbox::default()
        });
        assert_eq!((req.vcpus, req.mem_bytes), (Some(2), Some(2 << 30)));
        assert_eq!(req.idle_ttl_seconds, Some(60));
        assert_eq!(req.env_vars.unwrap()["A"], "carried");
        let labels = req.labels.unwrap();
        assert_eq!(
            (labels["team"].as_str(), labels["env"].as_str()),
            ("a", "prod")
        );
        // A create that sets part of a setting takes none of it.
        let req = c.under(CreateSandbox {
            mem_bytes: Some(1 << 30),
            delete_after_stop_seconds: Some(5),
            ..CreateSandbox::default()
        });
        assert_eq!((req.vcpus, req.mem_bytes), (None, Some(1 << 30)));
        assert_eq!(req.idle_ttl_seconds, None);
        // A create with env vars of its own gets only those.
        let req = c.under(CreateSandbox {
            env_vars: Some([("B".to_owned(), "own".to_owned())].into()),
            ..CreateSandbox::default()
        });
        assert!(!req.env_vars.unwrap().contains_key("A"));
        // A key the create's run_config sets is not overridden by a carried one.
        let req = c.under(CreateSandbox {
            run_config: Some(warren_types::RunConfig {
                env_vars: [("A".to_owned(), "own".to_owned())].into(),
                ..warren_types::RunConfig::default()
            }),
            ..CreateSandbox::default()
        });
        assert_eq!(req.env_vars, None);
        // Nothing included: nothing changes.
        let none = Carried::capture(&cfg, &[], false).unwrap();
        assert_eq!(
            none.under(CreateSandbox::default()),
            CreateSandbox::default()
        );
    }
}

//! Workspace secrets: credentials the egress proxy injects into sandboxes' outbound requests,
//! with the hosts each may be sent to. Values go in and never come back out through any verb
//! here: [`Control::secret_for_injection`], which the proxy calls in-process, is the only reader.
//! Admins set and delete; any key of the workspace lists. Every set and delete is audited with
//! the key's name, never its value.
//!
//! The proxy-facing types live here rather than in `warren-types`, beside
//! [`crate::EgressTarget`]: the proxy reaches the control plane through the `warren` binary's
//! glue, which already converts that type, and `warren-proxy` depends on no Warren crate.

use std::time::SystemTime;

use crate::control::{Control, now};
use crate::error::ControlError;
use crate::store::{Principal, SecretHostRecord, SecretRecord, Store};

/// Largest secret value, in bytes.
pub const MAX_SECRET_VALUE_BYTES: usize = 64 * 1024;
/// Most hosts one secret may name.
pub const MAX_SECRET_HOSTS: usize = 32;
/// Longest secret key.
const MAX_KEY_LEN: usize = 128;
/// Longest header name or template: both go into one request header.
const MAX_HEADER_PART: usize = 1024;

/// Built-in hosts for well-known provider keys: (key, host, header, template).
const DEFAULTS: &[(&str, &str, &str, Option<&str>)] = &[
    (
        "OPENAI_API_KEY",
        "api.openai.com",
        "Authorization",
        Some("Bearer {value}"),
    ),
    ("ANTHROPIC_API_KEY", "api.anthropic.com", "x-api-key", None),
    (
        "GITHUB_TOKEN",
        "api.github.com",
        "Authorization",
        Some("Bearer {value}"),
    ),
    (
        "LANGSMITH_API_KEY",
        "api.smith.langchain.com",
        "x-api-key",
        None,
    ),
];

/// Where a host of a secret comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretSource {
    /// Built in, for a well-known provider key with no custom hosts.
    Default,
    /// Set by an admin.
    Custom,
}

/// A host a secret may be sent to, as listed (never with the value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretConfig {
    /// An exact host name or `*.` and a host name.
    pub host_pattern: String,
    /// Built in or set by an admin.
    pub source: SecretSource,
    /// The custom host's id; none for a default.
    pub id: Option<String>,
    /// When the custom host was added; none for a default.
    pub created_at: Option<SystemTime>,
    /// When the custom host last changed; none for a default.
    pub updated_at: Option<SystemTime>,
    /// The HTTP header the value is sent in.
    pub header_name: Option<String>,
    /// The header's value, `{value}` standing for the secret; none sends the raw secret.
    pub header_value_template: Option<String>,
}

/// A secret's key and the hosts it may be sent to (defaults applied). Never the value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretInfo {
    /// The secret's name.
    pub key: String,
    /// Its hosts: the custom ones, else the built-in defaults for the key, else none.
    pub configs: Vec<SecretConfig>,
}

/// A host as an upsert asks for it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SecretHostRequest {
    /// An exact host name or `*.` and a host name (no scheme, no port).
    pub host_pattern: String,
    /// The HTTP header to send the value in.
    pub header_name: Option<String>,
    /// The header's value with `{value}` once; none sends the raw secret.
    pub header_value_template: Option<String>,
}

/// An upsert of a secret. `Debug` prints no value.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct PutSecret {
    /// The new value; none keeps the current one (and is refused for a new secret).
    pub value: Option<String>,
    /// The full list of custom hosts; none or empty removes them, so the defaults apply.
    pub configs: Option<Vec<SecretHostRequest>>,
}

impl std::fmt::Debug for PutSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PutSecret")
            .field("value", &self.value.as_ref().map(|_| "<redacted>"))
            .field("configs", &self.configs)
            .finish()
    }
}

/// A host the proxy may send a secret to, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretHost {
    /// An exact host name or `*.` and a host name, lowercase.
    pub pattern: String,
    /// The HTTP header to set.
    pub header_name: Option<String>,
    /// The header's value with `{value}` standing for the secret; none sends it raw.
    pub template: Option<String>,
}

/// What the proxy injects: a secret's value and its hosts. `Debug` prints no value.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretValue {
    /// The secret.
    pub value: String,
    /// Where it may go: custom hosts, else the key's built-in defaults; empty when the key has
    /// neither, meaning any host the proxy rule that names the secret allows.
    pub hosts: Vec<SecretHost>,
}

impl std::fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretValue")
            .field("value", &"<redacted>")
            .field("hosts", &self.hosts)
            .finish()
    }
}

impl Control {
    /// The caller's workspace's secrets, by key, with their hosts. Any key of the workspace.
    pub fn list_secrets(&self, p: &Principal) -> Result<Vec<SecretInfo>, ControlError> {
        Ok(self
            .store
            .list_secrets(&p.workspace_id)?
            .iter()
            .map(info)
            .collect())
    }

    /// Creates or updates a secret of the caller's workspace. Admins only.
    pub fn put_secret(
        &self,
        p: &Principal,
        key: &str,
        req: PutSecret,
    ) -> Result<SecretInfo, ControlError> {
        require_admin(p, "set secrets")?;
        validate_key(key)?;
        if let Some(v) = &req.value {
            validate_value(v)?;
        }
        let asked = validate_hosts(req.configs.unwrap_or_default())?;
        let writes = crate::state::lock(&self.secret_writes);
        let old = self.store.get_secret(&p.workspace_id, key)?;
        let created = old.is_none();
        let at = now();
        let (value, created_at, old_hosts) = match (req.value, old) {
            (Some(v), Some(old)) => (v, old.created_at, old.hosts),
            (Some(v), None) => (v, at, Vec::new()),
            (None, Some(old)) => (old.value, old.created_at, old.hosts),
            (None, None) => {
                return Err(ControlError::malformed(format!(
                    "a value is required to create secret '{key}'"
                )));
            }
        };
        let rec = SecretRecord {
            key: key.to_owned(),
            value,
            hosts: merge_hosts(old_hosts, asked, at),
            created_at,
            updated_at: at,
        };
        self.store.put_secret(&p.workspace_id, &rec)?;
        drop(writes);
        let hosts: Vec<&str> = rec.hosts.iter().map(|h| h.host_pattern.as_str()).collect();
        let detail = format!(
            "{} hosts={}",
            if created { "created" } else { "updated" },
            if hosts.is_empty() {
                "default".to_owned()
            } else {
                hosts.join(",")
            }
        );
        tracing::info!(workspace_id = %p.workspace_id, key, created, "secret set");
        self.audit(Some(p), "secret.set", Some(key), Some(detail));
        Ok(info(&rec))
    }

    /// Deletes a secret of the caller's workspace; a missing key succeeds. Admins only.
    pub fn delete_secret(&self, p: &Principal, key: &str) -> Result<(), ControlError> {
        require_admin(p, "delete secrets")?;
        validate_key(key)?;
        let existed = self.store.delete_secret(&p.workspace_id, key)?;
        let detail = if existed { "deleted" } else { "absent" };
        tracing::info!(workspace_id = %p.workspace_id, key, existed, "secret deleted");
        self.audit(Some(p), "secret.delete", Some(key), Some(detail.to_owned()));
        Ok(())
    }

    /// A workspace secret's value and the hosts it may be sent to (custom hosts, else the
    /// key's built-in defaults; empty = any host the proxy rule names). One primary-key read;
    /// none when there is no such secret or the store failed (logged: the proxy then injects
    /// nothing, which fails closed).
    pub fn secret_for_injection(&self, workspace_id: &str, key: &str) -> Option<SecretValue> {
        let rec = match self.store.get_secret(workspace_id, key) {
            Ok(rec) => rec?,
            Err(e) => {
                tracing::error!(error = %e, workspace_id, key, "failed to read a secret");
                return None;
            }
        };
        let hosts = info(&rec)
            .configs
            .into_iter()
            .map(|c| SecretHost {
                pattern: c.host_pattern,
                header_name: c.header_name,
                template: c.header_value_template,
            })
            .collect();
        Some(SecretValue {
            value: rec.value,
            hosts,
        })
    }
}

fn require_admin(p: &Principal, what: &str) -> Result<(), ControlError> {
    if p.is_admin {
        Ok(())
    } else {
        Err(ControlError::Forbidden(format!(
            "only workspace admins can {what}"
        )))
    }
}

/// The listed form of a stored secret: its custom hosts, else the key's defaults.
fn info(rec: &SecretRecord) -> SecretInfo {
    let configs = if rec.hosts.is_empty() {
        DEFAULTS
            .iter()
            .filter(|(k, ..)| *k == rec.key)
            .map(|(_, host, header, template)| SecretConfig {
                host_pattern: (*host).to_owned(),
                source: SecretSource::Default,
                id: None,
                created_at: None,
                updated_at: None,
                header_name: Some((*header).to_owned()),
                header_value_template: template.map(str::to_owned),
            })
            .collect()
    } else {
        rec.hosts
            .iter()
            .map(|h| SecretConfig {
                host_pattern: h.host_pattern.clone(),
                source: SecretSource::Custom,
                id: Some(h.id.clone()),
                created_at: Some(h.created_at),
                updated_at: Some(h.updated_at),
                header_name: h.header_name.clone(),
                header_value_template: h.header_value_template.clone(),
            })
            .collect()
    };
    SecretInfo {
        key: rec.key.clone(),
        configs,
    }
}

/// The new custom hosts: a pattern already listed keeps its id and creation time (and its
/// update time when nothing about it changed), so a client re-sending the list sees stable ids.
fn merge_hosts(
    old: Vec<SecretHostRecord>,
    asked: Vec<SecretHostRequest>,
    at: SystemTime,
) -> Vec<SecretHostRecord> {
    asked
        .into_iter()
        .map(
            |a| match old.iter().find(|o| o.host_pattern == a.host_pattern) {
                Some(o) => {
                    let same = o.header_name == a.header_name
                        && o.header_value_template == a.header_value_template;
                    SecretHostRecord {
                        id: o.id.clone(),
                        created_at: o.created_at,
                        updated_at: if same { o.updated_at } else { at },
                        host_pattern: a.host_pattern,
                        header_name: a.header_name,
                        header_value_template: a.header_value_template,
                    }
                }
                None => SecretHostRecord {
                    id: uuid::Uuid::new_v4().to_string(),
                    created_at: at,
                    updated_at: at,
                    host_pattern: a.host_pattern,
                    header_name: a.header_name,
                    header_value_template: a.header_value_template,
                },
            },
        )
        .collect()
}

/// 1-128 characters of `[A-Za-z0-9_.-]`, starting with a letter or `_` (an environment
/// variable's shape, which is how sandboxes will name them).
fn validate_key(key: &str) -> Result<(), ControlError> {
    let ok = !key.is_empty()
        && key.len() <= MAX_KEY_LEN
        && key
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(ControlError::malformed(format!(
            "invalid secret key {key:?}: use 1-{MAX_KEY_LEN} letters, digits, '_', '.' or '-', \
             starting with a letter or '_'"
        )))
    }
}

/// The value goes into an HTTP header: no line breaks or NUL, which would let it end the header
/// and write others (request smuggling into the upstream).
fn validate_value(value: &str) -> Result<(), ControlError> {
    if value.len() > MAX_SECRET_VALUE_BYTES {
        return Err(ControlError::malformed(format!(
            "secret value is {} bytes; at most {MAX_SECRET_VALUE_BYTES} are allowed",
            value.len()
        )));
    }
    if value.contains(['\r', '\n', '\0']) {
        return Err(ControlError::malformed(
            "secret value must not contain CR, LF or NUL (it is sent in an HTTP header)",
        ));
    }
    Ok(())
}

/// Checks every asked host and lowercases its pattern (host names are case-insensitive, and
/// the proxy compares them as lowercase).
fn validate_hosts(hosts: Vec<SecretHostRequest>) -> Result<Vec<SecretHostRequest>, ControlError> {
    if hosts.len() > MAX_SECRET_HOSTS {
        return Err(ControlError::malformed(format!(
            "{} configs given; a secret may have at most {MAX_SECRET_HOSTS}",
            hosts.len()
        )));
    }
    let mut out: Vec<SecretHostRequest> = Vec::with_capacity(hosts.len());
    for mut h in hosts {
        h.host_pattern = validate_host_pattern(&h.host_pattern)?;
        if out.iter().any(|o| o.host_pattern == h.host_pattern) {
            return Err(ControlError::malformed(format!(
                "host_pattern {:?} is listed twice",
                h.host_pattern
            )));
        }
        if let Some(name) = &h.header_name {
            validate_header_name(name)?;
        }
        if let Some(t) = &h.header_value_template {
            validate_template(t)?;
        }
        out.push(h);
    }
    Ok(out)
}

/// An exact host name, or `*.` and a host name: no scheme, port, path or other wildcard.
fn validate_host_pattern(pattern: &str) -> Result<String, ControlError> {
    let host = pattern.strip_prefix("*.").unwrap_or(pattern);
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    if host.is_empty() || host.len() > 253 || !host.split('.').all(label_ok) {
        return Err(ControlError::malformed(format!(
            "invalid host_pattern {pattern:?}: give an exact host name such as \
             \"api.openai.com\" or \"*.\" and a host name, with no scheme, port or path"
        )));
    }
    Ok(pattern.to_ascii_lowercase())
}

/// An HTTP token (RFC 9110 §5.6.2).
fn validate_header_name(name: &str) -> Result<(), ControlError> {
    let tchar = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    if name.is_empty() || name.len() > MAX_HEADER_PART || !name.bytes().all(tchar) {
        return Err(ControlError::malformed(format!(
            "invalid header_name {name:?}: it must be an HTTP header name (a token)"
        )));
    }
    Ok(())
}

fn validate_template(t: &str) -> Result<(), ControlError> {
    if t.matches("{value}").count() != 1 {
        return Err(ControlError::malformed(format!(
            "invalid header_value_template {t:?}: it must contain {{value}} exactly once"
        )));
    }
    if t.len() > MAX_HEADER_PART || t.contains(['\r', '\n', '\0']) {
        return Err(ControlError::malformed(format!(
            "invalid header_value_template {t:?}: at most {MAX_HEADER_PART} bytes, without CR, \
             LF or NUL"
        )));
    }
    Ok(())
}

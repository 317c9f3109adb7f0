//! Workspace secrets (`/api/v1/workspaces/current/secrets`), in the shape of the `langsmith`
//! SDK's generated client (`workspace_secrets`). No type here carries a secret's value out:
//! only the upsert body carries one in, and its `Debug` hides it.

use serde::{Deserialize, Serialize};

/// Where a secret's host comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum SecretSource {
    /// Built in, for a well-known provider key.
    Default,
    /// Set by an admin.
    Custom,
}

/// A host a secret may be sent to, as answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretConfig {
    /// An exact host or a leading `*.` wildcard, e.g. `api.openai.com`.
    pub host_pattern: String,
    /// `DEFAULT` or `CUSTOM`.
    pub source: SecretSource,
    /// Omitted for a built-in default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// RFC 3339; omitted for a built-in default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    /// RFC 3339; omitted for a built-in default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<String>,
    /// The HTTP header the secret is sent in.
    #[serde(default)]
    pub header_name: Option<String>,
    /// The header's value with `{value}` standing for the secret; null sends it raw.
    #[serde(default)]
    pub header_value_template: Option<String>,
}

/// A workspace secret: its key and, when asked for, its hosts. Never the value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkspaceSecret {
    /// The secret's name, e.g. `OPENAI_API_KEY`.
    pub key: String,
    /// Its hosts with built-in defaults applied; a list includes them only with
    /// `include_configs=true`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub configs: Option<Vec<SecretConfig>>,
}

/// A host as an upsert asks for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretConfigBody {
    /// An exact host or a leading `*.` wildcard.
    pub host_pattern: String,
    /// The HTTP header to send the secret in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header_name: Option<String>,
    /// The header's value with `{value}` once; null sends the raw secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header_value_template: Option<String>,
}

/// PUT `/api/v1/workspaces/current/secrets/{key}`. `Debug` prints no value.
#[derive(Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PutSecretBody {
    /// The value: required to create a secret; omitted or null keeps the current one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// The full list of hosts; omitted, null or empty removes the custom ones so the
    /// built-in defaults, if any, apply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub configs: Option<Vec<SecretConfigBody>>,
}

impl std::fmt::Debug for PutSecretBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PutSecretBody")
            .field("value", &self.value.as_ref().map(|_| "<redacted>"))
            .field("configs", &self.configs)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_omit_their_ids_and_the_body_hides_its_value() {
        let c = SecretConfig {
            host_pattern: "api.openai.com".into(),
            source: SecretSource::Default,
            id: None,
            created_at: None,
            updated_at: None,
            header_name: Some("Authorization".into()),
            header_value_template: None,
        };
        assert_eq!(
            serde_json::to_value(&c).unwrap(),
            serde_json::json!({
                "host_pattern": "api.openai.com",
                "source": "DEFAULT",
                "header_name": "Authorization",
                "header_value_template": null,
            })
        );
        let body: PutSecretBody =
            serde_json::from_str(r#"{"value": "sk-abc", "configs": null}"#).unwrap();
        assert_eq!(body.value.as_deref(), Some("sk-abc"));
        assert!(!format!("{body:?}").contains("sk-abc"));
        assert!(serde_json::from_str::<PutSecretBody>(r#"{"valeu": "x"}"#).is_err());
    }
}

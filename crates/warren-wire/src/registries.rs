//! Container registries (§2.5). The password is accepted, never returned.

use serde::{Deserialize, Serialize};

/// `POST {B}/registries` and `PATCH {B}/registries/{name}`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryBody {
    /// Name, unique in the workspace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Registry URL or host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// `DOCKER_CONFIG` or `AWS_ROLE`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_type: Option<String>,
    /// For `AWS_ROLE`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aws_role_arn: Option<String>,
    /// User name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Password or token (write-only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
}

/// The registry object: everything but the password.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registry {
    /// Id.
    pub id: String,
    /// Name.
    pub name: String,
    /// URL as given.
    pub url: String,
    /// `DOCKER_CONFIG` or `AWS_ROLE`.
    pub auth_type: String,
    /// For `AWS_ROLE`.
    #[serde(default)]
    pub aws_role_arn: Option<String>,
    /// User name.
    #[serde(default)]
    pub username: Option<String>,
    /// Whether a password is stored.
    #[serde(default)]
    pub has_password: bool,
    /// `DOCKER_REGISTRY`, `GHCR`, `ECR`, `GAR` or `DOCKER_HUB`.
    pub provider: String,
    /// `SCOPED`: the credentials apply to this registry's host only.
    pub repository_search_mode: String,
    /// RFC 3339.
    pub created_at: String,
    /// Creating user.
    pub created_by: String,
    /// RFC 3339.
    pub updated_at: String,
    /// Last user to change it.
    pub updated_by: String,
}

/// `GET {B}/registries`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistryList {
    /// The page (generated client).
    #[serde(default)]
    pub items: Vec<Registry>,
    /// The page (hand-written clients).
    #[serde(default)]
    pub registries: Vec<Registry>,
    /// The next page's cursor; null on the last page.
    #[serde(default)]
    pub next_cursor: Option<String>,
    /// The page's offset.
    #[serde(default)]
    pub offset: usize,
}

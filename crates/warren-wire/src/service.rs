//! Service URLs and download links (LANGSMITH-API.md §2.3, §6).

use serde::{Deserialize, Serialize};

/// POST `{B}/boxes/{name}/service-url`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceUrlBody {
    /// The sandbox port.
    pub port: i64,
    /// Token lifetime (1..86400, default 600).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_in_seconds: Option<i64>,
    /// `restricted` or `workspace` selects login mode; omitted for token mode; `off` ends a
    /// login grant and mints a token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access: Option<String>,
    /// Origins allowed to frame the service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embed_origins: Option<Vec<String>>,
}

/// A token-mode service URL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceUrlResponse {
    /// Opens the service in a browser: sets the auth cookie, then redirects.
    pub browser_url: String,
    /// The base URL programs call with the token header.
    pub service_url: String,
    /// The token (`X-Langsmith-Sandbox-Service-Token`).
    pub token: String,
    /// When the token expires (RFC 3339, whole seconds, `Z`).
    pub expires_at: String,
    /// The browser URL with the token in the fragment, for iframes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embed_url: Option<String>,
    /// Origins allowed to frame the service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embed_origins: Option<Vec<String>>,
}

/// A login-mode service URL: no token, no expiry; a browser signs in to open it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceLoginResponse {
    /// The service host's root, to open in a browser.
    pub browser_url: String,
    /// The same URL (the SDK reads either).
    pub service_url: String,
    /// `restricted` or `workspace`.
    pub access: String,
    /// Origins allowed to frame the service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embed_origins: Option<Vec<String>>,
}

/// One sharing grant of a sandbox port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceGrantItem {
    /// The port.
    pub port: u16,
    /// `token`, `restricted` or `workspace`.
    pub access: String,
    /// When the grant was first made.
    pub created_at: String,
    /// Who first shared the port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    /// When the newest token expires; none for a login grant, which does not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    /// Origins allowed to frame the service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embed_origins: Option<Vec<String>>,
}

/// GET `{B}/boxes/{name}/service-urls`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceGrantList {
    /// The grants, by port.
    pub items: Vec<ServiceGrantItem>,
    /// The next page's cursor; null on the last page.
    pub next_cursor: Option<String>,
}

/// POST `{B}/boxes/{name}/download-url`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DownloadUrlBody {
    /// The file inside the sandbox.
    pub path: String,
    /// Link lifetime; none is a link that never expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_in_seconds: Option<i64>,
    /// Content-Type of the answer (default `application/octet-stream`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    /// `attachment` (default) or `inline`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_disposition: Option<String>,
}

/// A download link.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DownloadUrlResponse {
    /// The link; no credentials needed.
    pub download_url: String,
    /// The token inside it.
    pub token: String,
    /// When it expires (RFC 3339, whole seconds, `Z`).
    pub expires_at: Option<String>,
}

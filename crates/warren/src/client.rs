//! HTTP and WebSocket client for a Warren server's LangSmith-compatible API: the control plane
//! under `{URL}/api/v2/sandboxes`, and each sandbox's data plane at its `dataplane_url`.
//! This file is the transport (URLs, the key, error answers, WebSocket upgrades); `api.rs`
//! has one typed method per endpoint the commands call.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use clap::Args;
use reqwest::{Method, RequestBuilder, Response, StatusCode, Url};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use warren_wire::ErrorDetail;
use warren_wire::sandbox::Sandbox;

mod api;
#[cfg(test)]
pub(crate) mod test_server;
#[cfg(test)]
mod tests;

/// The header the API key travels in, on every request including WebSocket upgrades.
const API_KEY_HEADER: &str = "x-api-key";

/// How long a control-plane request may take unless the call says otherwise.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Where the server is and how to authenticate; shared by every command that talks to it.
#[derive(Debug, Clone, Args)]
pub(crate) struct ConnArgs {
    /// URL of the Warren server.
    #[arg(
        long,
        global = true,
        env = "WARREN_URL",
        default_value = "http://127.0.0.1:7878"
    )]
    url: String,
    /// API key [default: the contents of <data-dir>/admin.key].
    #[arg(long, global = true, env = "WARREN_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
}

/// A WebSocket to the data plane.
pub(crate) type Ws = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

/// A connection to one Warren server.
#[derive(Debug)]
pub(crate) struct Client {
    http: reqwest::Client,
    /// Control-plane base, `{URL}/api/v2/sandboxes`.
    base: Url,
    api_key: Option<String>,
    /// Why no key is sent, added to authentication errors so the fix is obvious.
    no_key_reason: Option<String>,
}

/// A sandbox's data-plane base URL, or why it has none.
pub(crate) fn dataplane(sb: &Sandbox) -> Result<&str> {
    sb.dataplane_url.as_deref().ok_or_else(|| {
        anyhow!(
            "sandbox {} has no data plane (status: {})",
            sb.name,
            sb.status
        )
    })
}

impl Client {
    /// Builds a client from the flags, reading `<data-dir>/admin.key` when no key was given.
    pub(crate) fn new(conn: &ConnArgs, data_dir: &Path) -> Result<Self> {
        let base = control_base(&conn.url)?;
        let (api_key, no_key_reason) = match conn.api_key.as_deref().map(str::trim) {
            Some(k) if !k.is_empty() => (Some(k.to_owned()), None),
            _ => {
                let path = data_dir.join("admin.key");
                match std::fs::read_to_string(&path) {
                    Ok(s) if !s.trim().is_empty() => (Some(s.trim().to_owned()), None),
                    Ok(_) => (None, Some(format!("{} is empty", path.display()))),
                    Err(e) => (None, Some(format!("cannot read {}: {e}", path.display()))),
                }
            }
        };
        // reqwest is built without a TLS crypto provider of its own (the workspace picks ring
        // once for every crate); a second install is a harmless no-op.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            // The WebSocket path cannot use an HTTP proxy, so neither does this one: both planes
            // must reach the server the same way.
            .no_proxy()
            .user_agent(concat!("warren/", env!("CARGO_PKG_VERSION")))
            .build()
            .context("failed to set up the HTTP client")?;
        Ok(Self {
            http,
            base,
            api_key,
            no_key_reason,
        })
    }

    /// `{B}/seg/seg...`, each segment percent-encoded (names may not contain `/`, but a
    /// mistyped one must not address another resource).
    pub(crate) fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    }

    /// A request with the API key attached.
    pub(crate) fn request(&self, method: Method, url: Url) -> RequestBuilder {
        let rb = self.http.request(method, url);
        match &self.api_key {
            Some(k) => rb.header(API_KEY_HEADER, k),
            None => rb,
        }
    }

    /// A control-plane request under `{B}`, with the default timeout.
    pub(crate) fn control(&self, method: Method, segments: &[&str]) -> RequestBuilder {
        self.request(method, self.url(segments))
            .timeout(DEFAULT_TIMEOUT)
    }

    /// `{URL}/api/v1/seg/...`, the LangSmith platform API (e.g. workspace secrets): `{B}` with
    /// its `api/v2/sandboxes` swapped for `api/v1`, each segment percent-encoded.
    pub(crate) fn platform_url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop()
                .pop()
                .pop()
                .extend(["api", "v1"])
                .extend(segments);
        }
        url
    }

    /// Sends a request; a non-2xx answer becomes an error carrying the server's message.
    pub(crate) async fn send(&self, rb: RequestBuilder) -> Result<Response> {
        let resp = rb.send().await.map_err(|e| self.transport_error(&e))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let body = resp.text().await.unwrap_or_default();
        Err(self.status_error(status, &body))
    }

    /// Sends a request and returns the body as text (for `--json`) and as the type `what`
    /// names (in the error when the answer is not that type).
    pub(crate) async fn json<T: DeserializeOwned>(
        &self,
        rb: RequestBuilder,
        what: &str,
    ) -> Result<(String, T)> {
        let resp = self.send(rb).await?;
        let text = resp
            .text()
            .await
            .context("failed to read the server's answer")?;
        let value = serde_json::from_str(&text)
            .with_context(|| format!("unexpected {what} from the server"))?;
        Ok((text, value))
    }

    /// `{D}{suffix}`: data-plane paths are appended to `dataplane_url` verbatim (§4.1).
    pub(crate) fn dataplane_url(dataplane: &str, suffix: &str) -> Result<Url> {
        let s = format!("{}{suffix}", dataplane.trim_end_matches('/'));
        Url::parse(&s).with_context(|| format!("bad data plane URL {s:?}"))
    }

    /// Opens a WebSocket at `{D}{suffix}` (http→ws, https→wss), sending the API key.
    pub(crate) async fn websocket(&self, dataplane: &str, suffix: &str) -> Result<Ws, WsError> {
        let url = ws_url(dataplane, suffix).map_err(WsError::Fatal)?;
        let mut req = url
            .as_str()
            .into_client_request()
            .map_err(|e| WsError::Fatal(anyhow!("bad WebSocket URL {url}: {e}")))?;
        if let Some(k) = &self.api_key {
            let v = HeaderValue::from_str(k)
                .map_err(|_| WsError::Fatal(anyhow!("the API key is not a valid header value")))?;
            req.headers_mut().insert(API_KEY_HEADER, v);
        }
        let connect = tokio_tungstenite::connect_async(req);
        match tokio::time::timeout(Duration::from_secs(30), connect).await {
            Err(_) => Err(WsError::Retryable(anyhow!(
                "timed out opening the WebSocket to {url}"
            ))),
            Ok(Ok((ws, _))) => Ok(ws),
            Ok(Err(tokio_tungstenite::tungstenite::Error::Http(resp))) => {
                let status =
                    StatusCode::from_u16(resp.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
                let body = resp
                    .body()
                    .as_deref()
                    .map(String::from_utf8_lossy)
                    .unwrap_or_default();
                let err = self.status_error(status, &body);
                // The statuses the SDKs retry a WebSocket handshake on (§1.5).
                if matches!(status.as_u16(), 429 | 500 | 502 | 503 | 504) {
                    Err(WsError::Retryable(err))
                } else {
                    Err(WsError::Fatal(err))
                }
            }
            Ok(Err(e @ tokio_tungstenite::tungstenite::Error::Io(_))) => {
                Err(WsError::Retryable(anyhow!("cannot connect to {url}: {e}")))
            }
            Ok(Err(e)) => Err(WsError::Fatal(anyhow!("cannot connect to {url}: {e}"))),
        }
    }

    fn transport_error(&self, e: &reqwest::Error) -> anyhow::Error {
        let url = e.url().unwrap_or(&self.base);
        if e.is_connect() {
            let url = url.origin().ascii_serialization();
            anyhow!(
                "cannot connect to the Warren server at {url}: {} (is `warren serve` running? \
                 set --url or WARREN_URL)",
                root_cause(e)
            )
        } else if e.is_timeout() {
            anyhow!("the Warren server at {url} did not answer in time")
        } else {
            anyhow!("request to {url} failed: {}", root_cause(e))
        }
    }

    /// The error for a non-2xx answer: the server's message, plus a hint for auth failures.
    fn status_error(&self, status: StatusCode, body: &str) -> anyhow::Error {
        let mut msg = error_message(status, body);
        if matches!(status.as_u16(), 401 | 403)
            && let Some(reason) = &self.no_key_reason
        {
            msg.push_str(&format!(
                " (no API key was sent: {reason}; pass --api-key or set WARREN_API_KEY)"
            ));
        }
        anyhow!(msg)
    }
}

/// Why opening a WebSocket failed, and whether trying again may help.
#[derive(Debug)]
pub(crate) enum WsError {
    /// Busy, restarting or unreachable for now.
    Retryable(anyhow::Error),
    /// Will not get better by retrying.
    Fatal(anyhow::Error),
}

/// `{URL}` → `{URL}/api/v2/sandboxes`, stripping a trailing `/`, `/api/v1` or `/api` first as
/// the SDKs do (§1.2), so a URL copied from an SDK setting works here too.
pub(crate) fn control_base(url: &str) -> Result<Url> {
    let mut s = url.trim().trim_end_matches('/');
    if let Some(rest) = s.strip_suffix("/api/v1") {
        s = rest;
    } else if let Some(rest) = s.strip_suffix("/api") {
        s = rest;
    }
    let parsed = Url::parse(&format!("{s}/api/v2/sandboxes"))
        .with_context(|| format!("invalid server URL {url:?}"))?;
    match parsed.scheme() {
        "http" => Ok(parsed),
        "https" => bail!("https URLs are not supported by this client; use http:// ({url})"),
        other => bail!("invalid server URL {url:?}: unsupported scheme {other:?}"),
    }
}

/// `{D}{suffix}` with `http://` → `ws://` and `https://` → `wss://` (§4.1).
pub(crate) fn ws_url(dataplane: &str, suffix: &str) -> Result<String> {
    let d = dataplane.trim_end_matches('/');
    if let Some(rest) = d.strip_prefix("http://") {
        Ok(format!("ws://{rest}{suffix}"))
    } else if let Some(rest) = d.strip_prefix("https://") {
        Ok(format!("wss://{rest}{suffix}"))
    } else {
        bail!("unsupported data plane URL {dataplane:?}")
    }
}

/// An error answer's body (§2.1).
#[derive(Debug, Deserialize)]
struct ErrorAnswer {
    detail: Detail,
}

/// The shapes of `detail` the SDKs read.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Detail {
    /// Warren's [`warren_wire::ErrorBody`]; the hosted service adds an `error_id` beside it.
    Typed {
        #[serde(flatten)]
        detail: ErrorDetail,
        #[serde(default)]
        error_id: Option<String>,
    },
    /// A message with no error type.
    Message {
        message: String,
        #[serde(default)]
        error_id: Option<String>,
    },
    /// A request validation failure: one entry per bad field.
    Validation(Vec<ValidationIssue>),
    /// A plain string.
    Plain(String),
}

#[derive(Debug, Deserialize)]
struct ValidationIssue {
    #[serde(default)]
    msg: Option<String>,
}

/// The human message of an error answer (§2.1): `detail.message` (with the `error_id`),
/// a validation list's `msg`s, a plain-string detail, or the body / status text.
pub(crate) fn error_message(status: StatusCode, body: &str) -> String {
    let fallback = || {
        let text = body.trim();
        let reason = status.canonical_reason().unwrap_or("error");
        if text.is_empty() {
            format!("HTTP {} {reason}", status.as_u16())
        } else {
            let short: String = text.chars().take(300).collect();
            format!("HTTP {} {reason}: {short}", status.as_u16())
        }
    };
    let Ok(answer) = serde_json::from_str::<ErrorAnswer>(body) else {
        return fallback();
    };
    let with_id = |msg: String, id: Option<String>| match id {
        Some(id) if !id.is_empty() => format!("{msg} (error_id={id})"),
        _ => msg,
    };
    match answer.detail {
        Detail::Typed { detail, error_id } => with_id(detail.message, error_id),
        Detail::Message { message, error_id } => with_id(message, error_id),
        Detail::Validation(items) => {
            let msgs: Vec<String> = items.into_iter().filter_map(|i| i.msg).collect();
            if msgs.is_empty() {
                fallback()
            } else {
                msgs.join("; ")
            }
        }
        Detail::Plain(s) => s,
    }
}

/// The innermost cause of an error: reqwest's own message only repeats the URL, the useful
/// part ("Connection refused") is at the bottom of the chain.
fn root_cause(e: &dyn std::error::Error) -> String {
    let mut cur = e;
    while let Some(s) = cur.source() {
        cur = s;
    }
    cur.to_string()
}

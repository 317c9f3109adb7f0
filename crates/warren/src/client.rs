//! HTTP and WebSocket client for a Warren server's LangSmith-compatible API: the control plane
//! under `{URL}/api/v2/sandboxes`, and each sandbox's data plane at its `dataplane_url`.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use clap::Args;
use reqwest::{Method, RequestBuilder, Response, StatusCode, Url};
use serde::Deserialize;
use serde_json::Value;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

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

/// The fields of a sandbox object (§3.1) the commands use; the server may send more.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub(crate) struct Sandbox {
    pub(crate) name: String,
    pub(crate) id: Option<String>,
    pub(crate) status: Option<String>,
    pub(crate) status_message: Option<String>,
    pub(crate) dataplane_url: Option<String>,
    pub(crate) vcpus: Option<u64>,
    pub(crate) mem_bytes: Option<u64>,
    pub(crate) fs_capacity_bytes: Option<u64>,
    pub(crate) created_at: Option<String>,
}

impl Sandbox {
    /// The data-plane base URL, or why there is none.
    pub(crate) fn dataplane(&self) -> Result<&str> {
        self.dataplane_url.as_deref().ok_or_else(|| {
            anyhow!(
                "sandbox {} has no data plane (status: {})",
                self.name,
                self.status.as_deref().unwrap_or("unknown")
            )
        })
    }
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

    /// Sends a request and returns the body as text (for `--json`) and parsed.
    pub(crate) async fn json(&self, rb: RequestBuilder) -> Result<(String, Value)> {
        let resp = self.send(rb).await?;
        let text = resp
            .text()
            .await
            .context("failed to read the server's answer")?;
        let value = serde_json::from_str(&text).context("the server's answer is not JSON")?;
        Ok((text, value))
    }

    /// GET `{B}/boxes/{name}`.
    pub(crate) async fn get_sandbox(&self, name: &str) -> Result<Sandbox> {
        let (_, v) = self
            .json(self.control(Method::GET, &["boxes", name]))
            .await?;
        serde_json::from_value(v).context("unexpected sandbox object from the server")
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
    let Ok(v) = serde_json::from_str::<Value>(body) else {
        return fallback();
    };
    match v.get("detail") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Object(d)) => {
            let Some(msg) = d.get("message").and_then(Value::as_str) else {
                return fallback();
            };
            match d.get("error_id").and_then(Value::as_str) {
                Some(id) if !id.is_empty() => format!("{msg} (error_id={id})"),
                _ => msg.to_owned(),
            }
        }
        Some(Value::Array(items)) => {
            let msgs: Vec<&str> = items
                .iter()
                .filter_map(|i| i.get("msg").and_then(Value::as_str))
                .collect();
            if msgs.is_empty() {
                fallback()
            } else {
                msgs.join("; ")
            }
        }
        _ => fallback(),
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

#[cfg(test)]
pub(crate) mod mock;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_base_follows_the_sdk_rules() {
        for url in [
            "http://127.0.0.1:7878",
            "http://127.0.0.1:7878/",
            "http://127.0.0.1:7878/api",
            "http://127.0.0.1:7878/api/v1",
        ] {
            assert_eq!(
                control_base(url).unwrap().as_str(),
                "http://127.0.0.1:7878/api/v2/sandboxes",
                "{url}"
            );
        }
        assert_eq!(
            control_base("http://h/prefix").unwrap().as_str(),
            "http://h/prefix/api/v2/sandboxes"
        );
        assert!(control_base("ftp://h").is_err());
        assert!(control_base("not a url").is_err());
    }

    #[test]
    fn path_segments_are_encoded() {
        let c = Client::new(
            &ConnArgs {
                url: "http://h:1".into(),
                api_key: Some("k".into()),
            },
            Path::new("/nonexistent"),
        )
        .unwrap();
        assert_eq!(
            c.url(&["boxes", "a/b c"]).as_str(),
            "http://h:1/api/v2/sandboxes/boxes/a%2Fb%20c"
        );
        assert_eq!(
            c.url(&["boxes", "x", "status"]).as_str(),
            "http://h:1/api/v2/sandboxes/boxes/x/status"
        );
    }

    #[test]
    fn api_key_comes_from_the_flag_or_the_key_file() {
        let dir = tempfile::tempdir().unwrap();
        let conn = ConnArgs {
            url: "http://h".into(),
            api_key: None,
        };
        let c = Client::new(&conn, dir.path()).unwrap();
        assert_eq!(c.api_key, None);
        assert!(c.no_key_reason.unwrap().contains("admin.key"));
        std::fs::write(dir.path().join("admin.key"), "wk_secret\n").unwrap();
        let c = Client::new(&conn, dir.path()).unwrap();
        assert_eq!(c.api_key.as_deref(), Some("wk_secret"));
        let conn = ConnArgs {
            url: "http://h".into(),
            api_key: Some("flag".into()),
        };
        let c = Client::new(&conn, dir.path()).unwrap();
        assert_eq!(c.api_key.as_deref(), Some("flag"));
    }

    #[test]
    fn ws_urls_swap_the_scheme() {
        assert_eq!(
            ws_url("http://h:1/dp/abc", "/execute/ws").unwrap(),
            "ws://h:1/dp/abc/execute/ws"
        );
        assert_eq!(
            ws_url("https://h/dp/", "/execute/ws").unwrap(),
            "wss://h/dp/execute/ws"
        );
        assert!(ws_url("ftp://h", "/x").is_err());
    }

    #[test]
    fn error_bodies_are_read_like_the_sdks() {
        let s = StatusCode::NOT_FOUND;
        assert_eq!(
            error_message(
                s,
                r#"{"detail":{"error":"NotFound","message":"Sandbox 'x' not found"}}"#
            ),
            "Sandbox 'x' not found"
        );
        assert_eq!(
            error_message(
                s,
                r#"{"detail":{"error":"E","message":"boom","error_id":"42"}}"#
            ),
            "boom (error_id=42)"
        );
        assert_eq!(
            error_message(
                s,
                r#"{"detail":[{"loc":["body","x"],"msg":"a"},{"msg":"b"}]}"#
            ),
            "a; b"
        );
        assert_eq!(error_message(s, r#"{"detail":"plain"}"#), "plain");
        assert_eq!(error_message(s, "oops"), "HTTP 404 Not Found: oops");
        assert_eq!(
            error_message(StatusCode::BAD_GATEWAY, ""),
            "HTTP 502 Bad Gateway"
        );
    }

    #[tokio::test]
    async fn auth_failures_explain_the_missing_key() {
        let srv = mock::MockServer::start().await;
        let e = srv
            .client_with(Some("wrong"))
            .get_sandbox("x")
            .await
            .unwrap_err();
        assert_eq!(e.to_string(), "invalid API key");
        let e = srv.client_with(None).get_sandbox("x").await.unwrap_err();
        assert!(
            e.to_string()
                .starts_with("invalid API key (no API key was sent: cannot read")
        );
        let e = srv.client().get_sandbox("missing").await.unwrap_err();
        assert_eq!(e.to_string(), "Sandbox 'missing' not found");
        let sb = srv.client().get_sandbox("box").await.unwrap();
        assert_eq!(sb.dataplane().unwrap(), format!("{}/dp/box", srv.url));
        let sb = srv.client().get_sandbox("nodp").await.unwrap();
        assert!(sb.dataplane().is_err());
    }

    #[tokio::test]
    async fn an_absent_server_is_named() {
        // Bind and drop a listener to get a port nothing listens on.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let conn = ConnArgs {
            url: format!("http://127.0.0.1:{port}"),
            api_key: Some("k".into()),
        };
        let c = Client::new(&conn, Path::new("/nonexistent")).unwrap();
        let e = c.get_sandbox("x").await.unwrap_err().to_string();
        assert!(e.contains("cannot connect to the Warren server"), "{e}");
    }
}

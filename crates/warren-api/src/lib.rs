//! The HTTP API: the LangSmith Sandboxes API v2 (control plane under `/api/v2/sandboxes`, each
//! sandbox's data plane under `/dp/<id>` on the same listener), the LangSmith workspace secrets
//! API (`/api/v1/workspaces/current/secrets`), plus Warren's extensions (keys, audit, metrics).
//! Handlers only translate: HTTP in, a call on `warren_control::Control`, the answer as the
//! typed JSON of `warren-wire` out; errors map to statuses in `error.rs` alone.
//!
//! Routes match the raw, still-encoded path and each `{param}` is percent-decoded on its own,
//! so `%2F` inside a sandbox name never splits a segment.
//!
//! - `boxes.rs`: create, list, get, status, update, delete, start, stop.
//! - `exec/`: `/execute/ws` (WebSocket), `/execute/stream/{start,resume}` (SSE with acks),
//!   `/execute` (blocking HTTP).
//! - `files.rs`: `/upload`, `/download` (ranges, validators), `/glob`, `/grep`.
//! - `tunnel.rs`: `/tunnel`, TCP tunnels (yamux over a binary WebSocket) to sandbox ports.
//! - `service.rs`: service URL grants (mint, list, revoke) and download links (`/dl/{token}`).
//! - `proxy.rs`: the service router: requests to a service host or `/svc/{id}/{port}/...`,
//!   authorised by a service token and proxied (HTTP and WebSocket) to the sandbox port.
//! - `ops.rs`: `/info`, `/keys`, `/audit`, `/metrics`.
//! - `secrets.rs`: `/api/v1/workspaces/current/secrets`, the workspace secret store (values
//!   in, never out).
//! - `listen.rs`: the accept loop with its connection and header-read bounds.

mod boxes;
mod error;
mod exec;
mod files;
mod listen;
mod listing;
mod login;
mod ops;
mod proxy;
mod registries;
mod secrets;
mod service;
mod snapshots;
mod templates;
mod tunnel;
mod volumes;

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::HeaderMap;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::{Extension, Router};
use warren_control::{Control, Principal};

pub use error::{ApiError, ApiJson, ApiQuery};
pub use listen::{
    DEFAULT_MAX_CONNECTIONS, FDS_PER_SANDBOX, ListenConfig, RESERVED_FDS, bind, connection_cap_for,
    serve,
};

/// Largest JSON body accepted on control-plane and exec endpoints.
pub const JSON_BODY_LIMIT: usize = 1 << 20;
/// Default largest upload (the sandbox's disk quota bounds it too).
pub const UPLOAD_BODY_LIMIT: usize = 16 << 30;
/// Default cap on each of stdout and stderr held for one blocking HTTP execute.
pub const HTTP_OUTPUT_CAP: usize = 4 << 20;

/// The workspace secrets collection; `current` is the caller's workspace (the only one a key
/// reaches), so no other workspace name is routed.
const SECRETS: &str = "/api/v1/workspaces/current/secrets";

/// Per-request bounds of the API.
#[derive(Debug, Clone, Copy)]
pub struct ApiLimits {
    /// Largest upload body.
    pub upload_body_limit: usize,
    /// Bytes of each of stdout and stderr a blocking HTTP execute returns; the rest is dropped
    /// and the response says so.
    pub http_output_cap: usize,
}

impl Default for ApiLimits {
    fn default() -> Self {
        Self {
            upload_body_limit: UPLOAD_BODY_LIMIT,
            http_output_cap: HTTP_OUTPUT_CAP,
        }
    }
}

/// Shared state of every handler.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The control plane.
    pub control: Arc<Control>,
    /// Per-request bounds.
    pub limits: ApiLimits,
}

/// The control plane's routes under `base`: served at `/api/v2/sandboxes` (what the SDKs
/// derive from `LANGSMITH_ENDPOINT`) and at `/v2/sandboxes`, which the JS SDK before 0.10
/// derives (the version `deepagents` resolves as its peer).
fn control_plane(base: &str) -> Router<AppState> {
    Router::new()
        .route(
            &format!("{base}/boxes"),
            post(boxes::create).get(boxes::list),
        )
        .route(
            &format!("{base}/boxes/batch-delete"),
            post(boxes::batch_delete),
        )
        .route(
            &format!("{base}/registries"),
            post(registries::create).get(registries::list),
        )
        .route(
            &format!("{base}/registries/{{name}}"),
            get(registries::get)
                .patch(registries::update)
                .delete(registries::delete),
        )
        .route(
            &format!("{base}/volumes"),
            post(volumes::create).get(volumes::list),
        )
        .route(
            &format!("{base}/volumes/{{v}}"),
            get(volumes::get)
                .patch(volumes::update)
                .delete(volumes::delete),
        )
        .route(&format!("{base}/volumes/{{v}}/clone"), post(volumes::clone))
        .route(
            &format!("{base}/templates"),
            post(templates::create).get(templates::list),
        )
        .route(
            &format!("{base}/templates/{{name}}"),
            get(templates::get).delete(templates::delete),
        )
        .route(
            &format!("{base}/pools"),
            get(templates::pools).put(templates::set_pool),
        )
        .route(&format!("{base}/usage"), get(boxes::usage))
        .route(&format!("{base}/usage/costs"), get(boxes::usage_costs))
        .route(
            &format!("{base}/boxes/{{name}}"),
            get(boxes::get).patch(boxes::update).delete(boxes::delete),
        )
        .route(&format!("{base}/boxes/{{name}}/status"), get(boxes::status))
        .route(&format!("{base}/boxes/{{name}}/start"), post(boxes::start))
        .route(&format!("{base}/boxes/{{name}}/stop"), post(boxes::stop))
        .route(
            &format!("{base}/boxes/{{name}}/service-url"),
            post(service::mint),
        )
        .route(
            &format!("{base}/boxes/{{name}}/service-urls"),
            get(service::list).delete(service::revoke),
        )
        .route(
            &format!("{base}/boxes/{{name}}/download-url"),
            post(service::mint_download),
        )
        .route(
            &format!("{base}/boxes/{{name}}/snapshot"),
            post(snapshots::capture),
        )
        .route(
            &format!("{base}/boxes/{{name}}/fork"),
            post(snapshots::fork),
        )
        .route(
            &format!("{base}/snapshots"),
            get(snapshots::list).post(snapshots::create),
        )
        .route(
            &format!("{base}/snapshots/{{id_or_ref}}"),
            get(snapshots::get).delete(snapshots::delete),
        )
        .route(
            &format!("{base}/snapshots/{{id_or_ref}}/tags"),
            post(snapshots::tag),
        )
        .route(
            &format!("{base}/snapshots-by-name/{{name}}"),
            get(snapshots::tags),
        )
        .route(
            &format!("{base}/keys"),
            post(ops::create_key).get(ops::list_keys),
        )
        .route(
            &format!("{base}/keys/service-token-key/rotate"),
            post(ops::rotate_service_key),
        )
        .route(
            &format!("{base}/keys/{{id}}"),
            axum::routing::delete(ops::revoke_key),
        )
        .route(&format!("{base}/audit"), get(ops::audit))
}

/// The whole API with the default limits.
pub fn router(control: Arc<Control>) -> Router {
    router_with_limits(control, ApiLimits::default())
}

/// The whole API. Every route that reads a body has a limit: JSON bodies
/// [`JSON_BODY_LIMIT`], uploads [`ApiLimits::upload_body_limit`].
pub fn router_with_limits(control: Arc<Control>, limits: ApiLimits) -> Router {
    let upload_limit = limits.upload_body_limit;
    let state = AppState { control, limits };
    let base = "/api/v2/sandboxes";
    let authed = control_plane(base)
        .merge(control_plane("/v2/sandboxes"))
        .route(SECRETS, get(secrets::list))
        .route(
            &format!("{SECRETS}/{{key}}"),
            axum::routing::put(secrets::put).delete(secrets::delete),
        )
        .route("/metrics", get(ops::metrics))
        .route("/dp/{id}/execute/ws", get(exec::ws))
        .route("/dp/{id}/tunnel", get(tunnel::tunnel))
        .route("/dp/{id}/execute", post(exec::http))
        .route("/dp/{id}/execute/stream/start", post(exec::sse_start))
        .route("/dp/{id}/execute/stream/resume", post(exec::sse_resume))
        .route(
            "/dp/{id}/download",
            get(files::download).head(files::download),
        )
        .route("/dp/{id}/glob", post(files::glob))
        .route("/dp/{id}/grep", post(files::grep))
        .layer(DefaultBodyLimit::max(JSON_BODY_LIMIT))
        .merge(
            Router::new()
                .route("/dp/{id}/upload", post(files::upload))
                .route(&format!("{base}/snapshot-imports"), post(snapshots::import))
                .route("/v2/sandboxes/snapshot-imports", post(snapshots::import))
                .layer(DefaultBodyLimit::max(upload_limit)),
        )
        .route_layer(middleware::from_fn_with_state(state.clone(), authenticate));
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/info", get(ops::info))
        .route("/.well-known/jwks.json", get(ops::jwks))
        .route("/auth/service-login", get(login::form).post(login::submit))
        .route(
            "/dl/{token}",
            get(service::download_link).head(service::download_link),
        )
        .route("/svc/{id}/{port}", any(proxy::by_path))
        // A catch-all matches no empty rest, so the root is its own route.
        .route("/svc/{id}/{port}/", any(proxy::by_path))
        .route("/svc/{id}/{port}/{*rest}", any(proxy::by_path))
        .merge(authed)
        .fallback(|| async { ApiError::no_route() })
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            proxy::by_host,
        ))
        .with_state(state)
}

/// Checks `X-Api-Key` (header names are case-insensitive) on every request it wraps, attaches
/// the caller's [`Principal`], and appends the call to the audit log: who, what, when, result.
/// Refused requests are counted in `/metrics` and logged a line at a time per interval, not
/// written to the audit log: anyone who can connect could otherwise grow it without bound.
async fn authenticate(
    State(state): State<AppState>,
    headers: HeaderMap,
    mut req: Request,
    next: Next,
) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let refuse = |why: &'static str| {
        if let Some(since_last) = state.control.metrics().unauthenticated_request() {
            tracing::warn!(
                %method,
                path = %path,
                reason = why,
                refused_since_last_line = since_last,
                "unauthenticated API request refused (logged at most once per interval; \
                 all are counted in warren_api_unauthenticated_total)"
            );
        }
        ApiError::unauthorized(why).into_response()
    };
    let Some(key) = headers.get("x-api-key").and_then(|v| v.to_str().ok()) else {
        return refuse("missing X-Api-Key header");
    };
    let principal = match state.control.authenticate(key.trim()) {
        Ok(Some(p)) => p,
        Ok(None) => return refuse("invalid API key"),
        Err(e) => return ApiError::from(e).into_response(),
    };
    req.extensions_mut().insert(principal.clone());
    let resp = next.run(req).await;
    if path != "/metrics" {
        let detail = format!("{method} {}", resp.status().as_u16());
        state
            .control
            .audit(Some(&principal), "api", Some(&path), Some(detail));
    }
    resp
}

/// Counts requests.
async fn observe(State(state): State<AppState>, req: Request, next: Next) -> Response {
    state.control.metrics().api_request();
    next.run(req).await
}

type Caller = Extension<Principal>;

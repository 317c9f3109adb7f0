//! The HTTP API: the LangSmith Sandboxes API v2 (control plane under `/api/v2/sandboxes`, each
//! sandbox's data plane under `/dp/<id>` on the same listener) plus Warren's extensions under the
//! same prefix. Handlers only translate HTTP into calls on `warren_control::Control`.
//!
//! Routing matches the raw, still-encoded path, then decodes each segment, so `%2F` inside a
//! name never splits a segment.

mod boxes;
mod error;
mod exec;
mod files;
mod ops;
mod utf8;

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use warren_control::{Control, Principal};

pub use error::{ApiError, ApiJson};

/// Largest JSON body accepted on control-plane and exec endpoints.
pub const JSON_BODY_LIMIT: usize = 1 << 20;
/// Largest upload (the sandbox's disk quota is the real bound).
pub const UPLOAD_BODY_LIMIT: usize = 16 << 30;

/// Shared state of every handler.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The control plane.
    pub control: Arc<Control>,
}

/// The whole API.
pub fn router(control: Arc<Control>) -> Router {
    let state = AppState { control };
    let base = "/api/v2/sandboxes";
    let authed = Router::new()
        .route(
            &format!("{base}/boxes"),
            post(boxes::create).get(boxes::list),
        )
        .route(
            &format!("{base}/boxes/{{name}}"),
            get(boxes::get).patch(boxes::update).delete(boxes::delete),
        )
        .route(&format!("{base}/boxes/{{name}}/status"), get(boxes::status))
        .route(&format!("{base}/boxes/{{name}}/start"), post(boxes::start))
        .route(&format!("{base}/boxes/{{name}}/stop"), post(boxes::stop))
        .route(
            &format!("{base}/keys"),
            post(ops::create_key).get(ops::list_keys),
        )
        .route(
            &format!("{base}/keys/{{id}}"),
            axum::routing::delete(ops::revoke_key),
        )
        .route(&format!("{base}/audit"), get(ops::audit))
        .route("/metrics", get(ops::metrics))
        .route("/dp/{id}/execute/ws", get(exec::ws))
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
                .layer(DefaultBodyLimit::max(UPLOAD_BODY_LIMIT)),
        )
        .route_layer(middleware::from_fn_with_state(state.clone(), authenticate));
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/info", get(ops::info))
        .merge(authed)
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "NotFound", "no such endpoint") })
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

/// Checks `X-Api-Key` (header names are case-insensitive) on every request it wraps, attaches
/// the caller's [`Principal`], and appends the call to the audit log: who, what, when, result.
async fn authenticate(
    State(state): State<AppState>,
    headers: HeaderMap,
    mut req: Request,
    next: Next,
) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let Some(key) = headers.get("x-api-key").and_then(|v| v.to_str().ok()) else {
        state
            .control
            .audit(None, "api", Some(&path), Some(format!("{method} 401")));
        return ApiError::unauthorized("missing X-Api-Key header").into_response();
    };
    let principal = match state.control.authenticate(key.trim()) {
        Ok(Some(p)) => p,
        Ok(None) => {
            state
                .control
                .audit(None, "api", Some(&path), Some(format!("{method} 401")));
            return ApiError::unauthorized("invalid API key").into_response();
        }
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

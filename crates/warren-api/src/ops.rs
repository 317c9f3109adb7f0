//! Warren's own endpoints: server info, API keys, the audit log and metrics.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde::Deserialize;
use warren_control::store::rfc3339;
use warren_wire::ops::{AuditEntry, AuditList, CreateKeyBody, CreatedKey, Info, Key, KeyList};

use crate::{ApiError, ApiJson, ApiQuery, AppState, Caller};

/// The LangSmith API version Warren's wire protocol matches (the generated SDK client checks
/// `/info` for at least 0.16.0).
const API_COMPAT_VERSION: &str = "0.16.0";

pub(crate) async fn info() -> Json<Info> {
    Json(Info {
        version: API_COMPAT_VERSION.into(),
        warren_version: env!("CARGO_PKG_VERSION").into(),
    })
}

/// The keys callback signatures are made with, for the SDK's `SandboxTokenVerifier`. Public:
/// a verifier has no API key.
pub(crate) async fn jwks(State(state): State<AppState>) -> Json<serde_json::Value> {
    Json(state.control.jwks())
}

pub(crate) async fn create_key(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<CreateKeyBody>,
) -> Result<impl IntoResponse, ApiError> {
    let (id, key) = state.control.create_key(&caller, &body.name, body.admin)?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedKey {
            id,
            key,
            name: body.name,
            admin: body.admin,
            created_at: rfc3339(std::time::SystemTime::now()),
        }),
    ))
}

pub(crate) async fn list_keys(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<KeyList>, ApiError> {
    let keys = state
        .control
        .list_keys(&caller)?
        .into_iter()
        .map(|k| Key {
            id: k.id,
            name: k.user_name,
            admin: k.is_admin,
            created_at: rfc3339(k.created_at),
            revoked_at: k.revoked_at.map(rfc3339),
        })
        .collect();
    Ok(Json(KeyList { keys }))
}

pub(crate) async fn revoke_key(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.control.revoke_key(&caller, &id)?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST {B}/keys/service-token-key/rotate` (a Warren extension): a new signing key for
/// service tokens and download links; every one minted so far stops working.
pub(crate) async fn rotate_service_key(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<StatusCode, ApiError> {
    state.control.rotate_service_key(&caller)?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize)]
pub(crate) struct AuditQuery {
    #[serde(default)]
    after: i64,
    limit: Option<u32>,
}

pub(crate) async fn audit(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> Result<Json<AuditList>, ApiError> {
    let entries = state
        .control
        .list_audit(&caller, q.after, q.limit.unwrap_or(1000).min(10_000))?
        .into_iter()
        .map(|e| AuditEntry {
            seq: e.seq,
            at: e.at,
            workspace_id: e.workspace_id,
            user_id: e.user_id,
            action: e.action,
            target: e.target,
            detail: e.detail,
        })
        .collect();
    Ok(Json(AuditList { entries }))
}

pub(crate) async fn metrics(
    State(state): State<AppState>,
    _caller: Caller,
) -> Result<impl IntoResponse, ApiError> {
    let (counts, by_tier) = state.control.sandbox_metrics()?;
    let mut text = state.control.metrics().render(&counts);
    text.push_str(&state.control.pool_metrics());
    text.push_str(&by_tier);
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text))
}

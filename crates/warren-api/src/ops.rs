//! Warren extensions: API keys, the audit log, metrics, version info.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde::Deserialize;
use serde_json::{Value, json};
use warren_control::store::rfc3339;

use crate::{ApiError, ApiJson, AppState, Caller};

/// The LangSmith API version Warren's wire protocol matches (the generated SDK client checks
/// `/info` for at least 0.16.0).
const API_COMPAT_VERSION: &str = "0.16.0";

pub(crate) async fn info() -> Json<Value> {
    Json(json!({
        "version": API_COMPAT_VERSION,
        "warren_version": env!("CARGO_PKG_VERSION"),
    }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateKeyBody {
    name: String,
    #[serde(default)]
    admin: bool,
}

pub(crate) async fn create_key(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<CreateKeyBody>,
) -> Result<impl IntoResponse, ApiError> {
    let (id, key) = state.control.create_key(&caller, &body.name, body.admin)?;
    state.control.audit(
        Some(&caller),
        "key.create",
        Some(&id),
        Some(body.name.clone()),
    );
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "id": id,
            "key": key,
            "name": body.name,
            "admin": body.admin,
            "created_at": rfc3339(std::time::SystemTime::now()),
        })),
    ))
}

pub(crate) async fn list_keys(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Value>, ApiError> {
    let keys: Vec<Value> = state
        .control
        .list_keys(&caller)?
        .into_iter()
        .map(|k| {
            json!({
                "id": k.id,
                "name": k.user_name,
                "admin": k.is_admin,
                "created_at": rfc3339(k.created_at),
                "revoked_at": k.revoked_at.map(rfc3339),
            })
        })
        .collect();
    Ok(Json(json!({ "keys": keys })))
}

pub(crate) async fn revoke_key(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.control.revoke_key(&caller, &id)?;
    state
        .control
        .audit(Some(&caller), "key.revoke", Some(&id), None);
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
    Query(q): Query<AuditQuery>,
) -> Result<Json<Value>, ApiError> {
    let entries =
        state
            .control
            .list_audit(&caller, q.after, q.limit.unwrap_or(1000).min(10_000))?;
    Ok(Json(json!({ "entries": entries })))
}

pub(crate) async fn metrics(
    State(state): State<AppState>,
    _caller: Caller,
) -> Result<impl IntoResponse, ApiError> {
    let counts = state.control.counts()?;
    let text = state.control.metrics().render(&counts);
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text))
}

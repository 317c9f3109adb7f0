//! Workspace secrets: `/api/v1/workspaces/current/secrets` and `.../{key}`, the paths and JSON
//! of the `langsmith` SDK's generated `workspace_secrets` client. Values go in on PUT and never
//! come back: every answer is a key and its hosts.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use warren_control::store::rfc3339;
use warren_control::{
    ConfigError, PutSecret, SecretConfig as Config, SecretHostRequest, SecretInfo, SecretSource,
};
use warren_wire::secrets::{PutSecretBody, SecretConfig, WorkspaceSecret};

use crate::{ApiError, ApiJson, ApiQuery, AppState, Caller};

#[derive(Debug, Deserialize)]
pub(crate) struct ListQuery {
    include_configs: Option<String>,
}

/// `include_configs` as the SDKs send it (`true`/`false`); anything else is refused, not read
/// as false.
fn flag(value: Option<&str>) -> Result<bool, ApiError> {
    match value.map(str::to_ascii_lowercase).as_deref() {
        None | Some("false" | "0") => Ok(false),
        Some("true" | "1") => Ok(true),
        Some(other) => Err(ConfigError::Malformed(format!(
            "include_configs must be true or false, got {other:?}"
        ))
        .into()),
    }
}

fn config(c: Config) -> SecretConfig {
    SecretConfig {
        host_pattern: c.host_pattern,
        source: match c.source {
            SecretSource::Default => warren_wire::secrets::SecretSource::Default,
            SecretSource::Custom => warren_wire::secrets::SecretSource::Custom,
        },
        id: c.id,
        created_at: c.created_at.map(rfc3339),
        updated_at: c.updated_at.map(rfc3339),
        header_name: c.header_name,
        header_value_template: c.header_value_template,
    }
}

fn secret(s: SecretInfo, with_configs: bool) -> WorkspaceSecret {
    WorkspaceSecret {
        key: s.key,
        configs: with_configs.then(|| s.configs.into_iter().map(config).collect()),
    }
}

pub(crate) async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<Vec<WorkspaceSecret>>, ApiError> {
    let with_configs = flag(q.include_configs.as_deref())?;
    let list = state.control.list_secrets(&caller)?;
    Ok(Json(
        list.into_iter().map(|s| secret(s, with_configs)).collect(),
    ))
}

pub(crate) async fn put(
    State(state): State<AppState>,
    caller: Caller,
    Path(key): Path<String>,
    ApiJson(body): ApiJson<PutSecretBody>,
) -> Result<Json<WorkspaceSecret>, ApiError> {
    let req = PutSecret {
        value: body.value,
        configs: body.configs.map(|cs| {
            cs.into_iter()
                .map(|c| SecretHostRequest {
                    host_pattern: c.host_pattern,
                    header_name: c.header_name,
                    header_value_template: c.header_value_template,
                })
                .collect()
        }),
    };
    let info = state.control.put_secret(&caller, &key, req)?;
    Ok(Json(secret(info, true)))
}

pub(crate) async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(key): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.control.delete_secret(&caller, &key)?;
    Ok(StatusCode::NO_CONTENT)
}

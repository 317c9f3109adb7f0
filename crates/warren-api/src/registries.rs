//! Container registries: `/api/v2/sandboxes/registries` (§2.5). Translation only; the password
//! never appears in an answer.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use warren_control::{PutRegistry, RegistryRecord};
use warren_wire::registries::{Registry, RegistryBody, RegistryList};

use crate::{ApiError, ApiJson, ApiQuery, AppState, Caller};

fn registry(r: &RegistryRecord) -> Registry {
    Registry {
        id: r.id.clone(),
        name: r.name.clone(),
        url: r.url.clone(),
        auth_type: r.auth_type.clone(),
        aws_role_arn: r.aws_role_arn.clone(),
        username: r.username.clone(),
        has_password: r.password.is_some(),
        provider: r.provider.clone(),
        repository_search_mode: "SCOPED".into(),
        created_at: r.created_at.clone(),
        created_by: r.created_by.clone(),
        updated_at: r.updated_at.clone(),
        updated_by: r.updated_by.clone(),
    }
}

fn put(b: RegistryBody) -> PutRegistry {
    PutRegistry {
        name: b.name,
        url: b.url,
        auth_type: b.auth_type,
        aws_role_arn: b.aws_role_arn,
        username: b.username,
        password: b.password,
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct ListQuery {
    name_contains: Option<String>,
    limit: Option<usize>,
    page_size: Option<usize>,
    offset: Option<usize>,
}

pub(crate) async fn create(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<RegistryBody>,
) -> Result<(StatusCode, Json<Registry>), ApiError> {
    let r = state.control.create_registry(&caller, put(body))?;
    Ok((StatusCode::CREATED, Json(registry(&r))))
}

pub(crate) async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<RegistryList>, ApiError> {
    let needle = q.name_contains.map(|n| n.to_lowercase());
    let offset = q.offset.unwrap_or(0);
    let items: Vec<Registry> = state
        .control
        .list_registries(&caller)?
        .iter()
        .filter(|r| {
            needle
                .as_deref()
                .is_none_or(|n| r.name.to_lowercase().contains(n))
        })
        .skip(offset)
        .take(q.page_size.or(q.limit).unwrap_or(50).clamp(1, 500))
        .map(registry)
        .collect();
    Ok(Json(RegistryList {
        registries: items.clone(),
        items,
        next_cursor: None,
        offset,
    }))
}

pub(crate) async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<Registry>, ApiError> {
    Ok(Json(registry(&state.control.registry(&caller, &name)?)))
}

pub(crate) async fn update(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    ApiJson(body): ApiJson<RegistryBody>,
) -> Result<Json<Registry>, ApiError> {
    Ok(Json(registry(&state.control.update_registry(
        &caller,
        &name,
        put(body),
    )?)))
}

pub(crate) async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.control.delete_registry(&caller, &name)?;
    Ok(StatusCode::NO_CONTENT)
}

//! Container registries: `/api/v2/sandboxes/registries` (§2.5). Translation only; the password
//! never appears in an answer.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use warren_control::{PutRegistry, RegistryRecord};
use warren_wire::registries::{Registry, RegistryBody, RegistryList};

use crate::listing::ListParams;
use crate::{ApiError, ApiJson, AppState, Caller};

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
    ListParams(q): ListParams,
) -> Result<Json<RegistryList>, ApiError> {
    let page = state.control.registries_page(&caller, &q)?;
    let items: Vec<Registry> = page.items.iter().map(registry).collect();
    Ok(Json(RegistryList {
        registries: items.clone(),
        items,
        next_cursor: page.next_cursor,
        offset: page.offset,
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

//! Templates and warm pools (Warren extensions): `{B}/templates`, `{B}/pools`. Translation only.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use warren_control::pool::{PoolSize, PoolView};
use warren_control::{CreateTemplate, TemplateRecord};
use warren_wire::templates::{
    CreateTemplateBody, Pool, PoolList, SetPoolBody, Template, TemplateList,
};

use crate::{ApiError, ApiJson, AppState, Caller};

fn template(t: TemplateRecord) -> Template {
    Template {
        id: t.id,
        name: t.name,
        snapshot: t.snapshot,
        vcpus: t.vcpus,
        mem_bytes: t.mem_bytes,
        fs_capacity_bytes: t.fs_capacity_bytes,
        idle_ttl_seconds: t.idle_ttl_seconds,
        run_config: t.run_config,
        proxy_config: t
            .proxy_config
            .as_ref()
            .map(warren_control::redact_credentials),
        labels: t.labels,
        tier: t.tier.map(|t| t.as_str().to_owned()),
        pool_min_size: t.pool_min,
        pool_max_size: t.pool_max,
        created_at: t.created_at,
        created_by: t.created_by,
    }
}

fn pool(v: PoolView) -> Pool {
    Pool {
        template: v.template,
        snapshot_id: v.snapshot_id,
        min_size: v.min_size,
        max_size: v.max_size,
        target: v.target,
        ready: v.ready,
        starting: v.starting,
        claims: v.claims,
        misses: v.misses,
        last_error: v.last_error,
    }
}

pub(crate) async fn create(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(b): ApiJson<CreateTemplateBody>,
) -> Result<(StatusCode, Json<Template>), ApiError> {
    let req = CreateTemplate {
        name: b.name,
        snapshot: b
            .snapshot
            .unwrap_or_else(|| warren_types::ImageRef::default_image().to_string()),
        vcpus: b.vcpus,
        mem_bytes: b.mem_bytes,
        fs_capacity_bytes: b.fs_capacity_bytes,
        idle_ttl_seconds: b.idle_ttl_seconds,
        run_config: b.run_config,
        proxy_config: b.proxy_config,
        labels: b.labels.unwrap_or_default(),
        tier: crate::boxes::parse_tier(b.tier.as_deref())?,
    };
    let t = state.control.create_template(&caller, req)?;
    Ok((StatusCode::CREATED, Json(template(t))))
}

pub(crate) async fn list(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<TemplateList>, ApiError> {
    let all = state.control.list_templates(&caller)?;
    Ok(Json(TemplateList {
        templates: all.into_iter().map(template).collect(),
    }))
}

pub(crate) async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<Template>, ApiError> {
    Ok(Json(template(state.control.find_template(&caller, &name)?)))
}

pub(crate) async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.control.delete_template(&caller, &name)?;
    Ok(StatusCode::NO_CONTENT)
}

pub(crate) async fn pools(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<PoolList>, ApiError> {
    Ok(Json(PoolList {
        pools: state
            .control
            .list_pools(&caller)
            .into_iter()
            .map(pool)
            .collect(),
    }))
}

pub(crate) async fn set_pool(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(b): ApiJson<SetPoolBody>,
) -> Result<Json<Pool>, ApiError> {
    let size = PoolSize::new(b.min_size, b.max_size)?;
    let view = match b.template.as_deref() {
        None => state.control.set_default_pool(&caller, size)?,
        Some(name) => state.control.set_template_pool(&caller, name, size)?,
    };
    Ok(Json(pool(view)))
}

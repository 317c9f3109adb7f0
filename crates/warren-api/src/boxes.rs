//! Control plane: `/api/v2/sandboxes/boxes` (LANGSMITH-API.md §2.3, §3.1).

use std::collections::BTreeMap;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use warren_control::store::rfc3339;
use warren_control::{CreateSandbox, RunConfig, SandboxRecord, UpdateSandbox};
use warren_types::SandboxStatus;

use crate::{ApiError, ApiJson, AppState, Caller};

/// POST /boxes body. Every field the SDKs (hand-written and generated) send is listed; anything
/// else is rejected (422), so a typo never silently does nothing.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateBody {
    #[serde(default)]
    wait_for_ready: Option<bool>,
    #[serde(default)]
    timeout: Option<u64>,
    #[serde(default)]
    snapshot_id: Option<String>,
    #[serde(default)]
    snapshot: Option<String>,
    #[serde(default)]
    snapshot_name: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    idle_ttl_seconds: Option<u64>,
    #[serde(default)]
    delete_after_stop_seconds: Option<u64>,
    #[serde(default)]
    persistent: Option<bool>,
    #[serde(default)]
    vcpus: Option<u32>,
    #[serde(default)]
    cpu_millicores: Option<u32>,
    #[serde(default)]
    mem_bytes: Option<u64>,
    #[serde(default)]
    fs_capacity_bytes: Option<u64>,
    #[serde(default)]
    mount_config: Option<Value>,
    #[serde(default)]
    proxy_config: Option<Value>,
    #[serde(default)]
    run_config: Option<RunConfig>,
    #[serde(default)]
    env_vars: Option<BTreeMap<String, String>>,
    #[serde(default)]
    access_delegation: Option<Value>,
    #[serde(default)]
    labels: Option<BTreeMap<String, String>>,
    #[serde(default)]
    preserve_memory_on_stop: Option<bool>,
    #[serde(default)]
    restore_memory: Option<bool>,
    #[serde(default)]
    tag_value_ids: Option<Vec<String>>,
    #[serde(default)]
    volumes: Option<Vec<Value>>,
}

/// PATCH /boxes/{name} body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct UpdateBody {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    idle_ttl_seconds: Option<u64>,
    #[serde(default)]
    delete_after_stop_seconds: Option<u64>,
    #[serde(default)]
    proxy_config: Option<Value>,
    #[serde(default)]
    run_config: Option<RunConfig>,
    #[serde(default)]
    vcpus: Option<u32>,
    #[serde(default)]
    cpu_millicores: Option<u32>,
    #[serde(default)]
    mem_bytes: Option<u64>,
    #[serde(default)]
    fs_capacity_bytes: Option<u64>,
    #[serde(default)]
    labels: Option<BTreeMap<String, String>>,
    #[serde(default)]
    tag_value_ids: Option<Vec<String>>,
}

fn millicores_to_vcpus(m: u32) -> u32 {
    m.div_ceil(1000).max(1)
}

/// The sandbox object of §3.1.
pub(crate) fn sandbox_json(state: &AppState, r: &SandboxRecord) -> Value {
    let c = &r.config;
    json!({
        "id": r.id,
        "name": r.name,
        "status": r.status.as_str(),
        "status_message": r.status_message,
        "dataplane_url": state.control.dataplane_url(r),
        "created_at": rfc3339(r.created_at),
        "updated_at": rfc3339(r.updated_at),
        "stopped_at": r.stopped_at.map(rfc3339),
        "created_by": r.created_by,
        "snapshot_id": Value::Null,
        "snapshot": c.snapshot,
        "idle_ttl_seconds": c.idle_ttl_seconds,
        "delete_after_stop_seconds": c.delete_after_stop_seconds,
        "persistent": c.persistent,
        "vcpus": c.vcpus,
        "cpu_millicores": c.vcpus.saturating_mul(1000),
        "mem_bytes": c.mem_bytes,
        "fs_capacity_bytes": c.fs_capacity_bytes,
        "run_config": {
            "user": c.run_config.user,
            "work_dir": c.run_config.work_dir,
            "env_vars": c.run_config.env_vars,
        },
        "labels": if c.labels.is_empty() { Value::Null } else { json!(c.labels) },
        "access_delegation": c.access_delegation,
        "proxy_config": c.proxy_config,
        "mount_config": c.mount_config,
        "preserve_memory_on_stop": false,
        "tier": "jail",
    })
}

pub(crate) async fn create(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<CreateBody>,
) -> Result<Response, ApiError> {
    let refs = [&body.snapshot_id, &body.snapshot, &body.snapshot_name];
    if refs.iter().filter(|r| r.is_some()).count() > 1 {
        return Err(ApiError::invalid(
            "give at most one of snapshot_id, snapshot and snapshot_name",
        ));
    }
    if body.volumes.as_ref().is_some_and(|v| !v.is_empty()) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "Unsupported",
            "volumes are not supported yet",
        ));
    }
    let _ = &body.tag_value_ids;
    let mut run_config = body.run_config;
    if let Some(env) = body.env_vars {
        let rc = run_config.get_or_insert_with(RunConfig::default);
        for (k, v) in env {
            rc.env_vars.entry(k).or_insert(v);
        }
    }
    let req = CreateSandbox {
        name: body.name,
        snapshot: body.snapshot_id.or(body.snapshot).or(body.snapshot_name),
        vcpus: body.vcpus.or(body.cpu_millicores.map(millicores_to_vcpus)),
        mem_bytes: body.mem_bytes,
        fs_capacity_bytes: body.fs_capacity_bytes,
        idle_ttl_seconds: body.idle_ttl_seconds,
        delete_after_stop_seconds: body.delete_after_stop_seconds,
        persistent: body.persistent,
        run_config,
        labels: body.labels,
        access_delegation: body.access_delegation,
        proxy_config: body.proxy_config,
        mount_config: body.mount_config,
        preserve_memory_on_stop: body.preserve_memory_on_stop,
        restore_memory: body.restore_memory,
    };
    let rec = state.control.create(&caller, req)?;
    state.control.audit(
        Some(&caller),
        "sandbox.create",
        Some(&rec.id),
        Some(rec.name.clone()),
    );
    if !body.wait_for_ready.unwrap_or(true) {
        return Ok(Json(sandbox_json(&state, &rec)).into_response());
    }
    let timeout = Duration::from_secs(body.timeout.unwrap_or(30).clamp(1, 3600));
    let rec = state.control.wait_settled(&rec.id, timeout).await?;
    if rec.status == SandboxStatus::Failed {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "SandboxConfig",
            format!(
                "sandbox '{}' failed to start: {}",
                rec.name,
                rec.status_message.as_deref().unwrap_or("unknown error")
            ),
        ));
    }
    Ok(Json(sandbox_json(&state, &rec)).into_response())
}

#[derive(Debug, Deserialize)]
pub(crate) struct ListQuery {
    name_contains: Option<String>,
    status: Option<String>,
    limit: Option<usize>,
    offset: Option<usize>,
}

pub(crate) async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let mut all = state.control.list(&caller)?;
    if let Some(s) = &q.name_contains {
        let s = s.to_lowercase();
        all.retain(|r| r.name.to_lowercase().contains(&s));
    }
    if let Some(st) = &q.status {
        all.retain(|r| r.status.as_str() == st);
    }
    let offset = q.offset.unwrap_or(0);
    let items: Vec<Value> = all
        .iter()
        .skip(offset)
        .take(q.limit.unwrap_or(usize::MAX))
        .map(|r| sandbox_json(&state, r))
        .collect();
    Ok(Json(json!({
        "items": items,
        "sandboxes": items,
        "next_cursor": Value::Null,
        "offset": offset,
    })))
}

pub(crate) async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let rec = state.control.find(&caller, &name)?;
    Ok(Json(sandbox_json(&state, &rec)))
}

pub(crate) async fn status(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let rec = state.control.find(&caller, &name)?;
    Ok(Json(
        json!({"status": rec.status.as_str(), "status_message": rec.status_message}),
    ))
}

pub(crate) async fn update(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    ApiJson(body): ApiJson<UpdateBody>,
) -> Result<Json<Value>, ApiError> {
    let _ = &body.tag_value_ids;
    let req = UpdateSandbox {
        name: body.name,
        idle_ttl_seconds: body.idle_ttl_seconds,
        delete_after_stop_seconds: body.delete_after_stop_seconds,
        run_config: body.run_config,
        proxy_config: body.proxy_config,
        vcpus: body.vcpus.or(body.cpu_millicores.map(millicores_to_vcpus)),
        mem_bytes: body.mem_bytes,
        fs_capacity_bytes: body.fs_capacity_bytes,
        labels: body.labels,
    };
    let rec = state.control.update(&caller, &name, req).await?;
    Ok(Json(sandbox_json(&state, &rec)))
}

pub(crate) async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    let rec = state.control.find(&caller, &name)?;
    state.control.delete(&caller, &rec.id).await?;
    state.control.audit(
        Some(&caller),
        "sandbox.delete",
        Some(&rec.id),
        Some(rec.name),
    );
    Ok(StatusCode::NO_CONTENT)
}

pub(crate) async fn start(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let rec = state.control.start(&caller, &name).await?;
    state.control.audit(
        Some(&caller),
        "sandbox.start",
        Some(&rec.id),
        Some(rec.name.clone()),
    );
    // Answer with the sandbox ready when it boots promptly; the SDK polls status otherwise.
    let rec = match state
        .control
        .wait_settled(&rec.id, Duration::from_secs(30))
        .await
    {
        Ok(r) => r,
        Err(_) => state.control.find(&caller, &rec.id)?,
    };
    Ok(Json(sandbox_json(&state, &rec)))
}

pub(crate) async fn stop(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let rec = state.control.stop(&caller, &name).await?;
    state.control.audit(
        Some(&caller),
        "sandbox.stop",
        Some(&rec.id),
        Some(rec.name.clone()),
    );
    Ok(Json(sandbox_json(&state, &rec)))
}

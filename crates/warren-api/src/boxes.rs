//! Control plane: `/api/v2/sandboxes/boxes` (LANGSMITH-API.md §2.3, §3.1).

use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use warren_control::store::rfc3339;
use warren_control::{ConfigError, CreateSandbox, SandboxRecord, UpdateSandbox, VolumeRequest};
use warren_types::SandboxStatus;
use warren_wire::sandbox::{
    BatchDeleteBody, BatchDeleteResult, BatchSkipped, CreateSandboxBody, Sandbox, SandboxList,
    SandboxStatusBody, UpdateSandboxBody, UsageBody, millicores_to_vcpus,
};
use warren_wire::volumes::SandboxVolume;

use crate::listing::ListParams;
use crate::{ApiError, ApiJson, AppState, Caller};

/// The sandbox object of §3.1.
pub(crate) fn sandbox(state: &AppState, r: &SandboxRecord) -> Sandbox {
    let c = &r.config;
    Sandbox {
        id: r.id.clone(),
        name: r.name.clone(),
        status: r.status.as_str().to_owned(),
        status_message: r.status_message.clone(),
        dataplane_url: Some(state.control.dataplane_url(r)),
        created_at: Some(rfc3339(r.created_at)),
        updated_at: Some(rfc3339(r.updated_at)),
        stopped_at: r.stopped_at.map(rfc3339),
        created_by: Some(r.created_by.clone()),
        snapshot_id: c.snapshot_id.clone(),
        snapshot: Some(c.snapshot.clone()),
        idle_ttl_seconds: Some(c.idle_ttl_seconds),
        delete_after_stop_seconds: Some(c.delete_after_stop_seconds),
        persistent: Some(c.persistent),
        vcpus: Some(c.vcpus),
        cpu_millicores: Some(c.vcpus.saturating_mul(1000)),
        mem_bytes: Some(c.mem_bytes),
        fs_capacity_bytes: Some(c.fs_capacity_bytes),
        run_config: Some(c.run_config.clone()),
        labels: (!c.labels.is_empty()).then(|| c.labels.clone()),
        access_delegation: c.access_delegation.clone(),
        proxy_config: c
            .proxy_config
            .as_ref()
            .map(warren_control::redact_credentials),
        // Credentials in the same value holders as proxy_config's: never shown.
        mount_config: c
            .mount_config
            .as_ref()
            .map(warren_control::redact_credentials),
        preserve_memory_on_stop: Some(false),
        tier: Some(c.tier.as_str().to_owned()),
        volumes: c
            .volumes
            .iter()
            .map(|a| SandboxVolume {
                volume_id: a.volume_id.clone(),
                volume_name: a.volume_name.clone(),
                mount_path: a.mount_path.clone(),
                read_only: a.read_only,
            })
            .collect(),
    }
}

/// A tier the request names, or 422 naming the ones there are.
pub(crate) fn parse_tier(tier: Option<&str>) -> Result<Option<warren_control::Tier>, ApiError> {
    tier.map(str::parse)
        .transpose()
        .map_err(|e: String| ConfigError::Invalid(e).into())
}

/// The create body's fields, which a refused value's error names (see
/// [`ApiError::into_value_error`]).
const CREATE_FIELDS: &[&str] = &[
    "template",
    "tier",
    "timeout",
    "snapshot_id",
    "snapshot",
    "snapshot_name",
    "name",
    "idle_ttl_seconds",
    "delete_after_stop_seconds",
    "persistent",
    "vcpus",
    "cpu_millicores",
    "mem_bytes",
    "fs_capacity_bytes",
    "mount_config",
    "proxy_config",
    "run_config",
    "env_vars",
    "access_delegation",
    "labels",
    "preserve_memory_on_stop",
    "restore_memory",
    "tag_value_ids",
    "volumes",
];

pub(crate) async fn create(
    state: State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<CreateSandboxBody>,
) -> Result<Json<Sandbox>, ApiError> {
    create_from(state, caller, body)
        .await
        .map_err(|e| e.into_value_error(CREATE_FIELDS))
}

async fn create_from(
    State(state): State<AppState>,
    caller: Caller,
    body: CreateSandboxBody,
) -> Result<Json<Sandbox>, ApiError> {
    let refs = [&body.snapshot_id, &body.snapshot, &body.snapshot_name];
    if refs.iter().filter(|r| r.is_some()).count() > 1 {
        return Err(ConfigError::Invalid(
            "give at most one of snapshot_id, snapshot and snapshot_name".into(),
        )
        .into());
    }
    let req = CreateSandbox {
        tier: parse_tier(body.tier.as_deref())?,
        template: body.template,
        name: body.name,
        snapshot: body.snapshot_id.or(body.snapshot).or(body.snapshot_name),
        vcpus: body.vcpus.or(body.cpu_millicores.map(millicores_to_vcpus)),
        mem_bytes: body.mem_bytes,
        fs_capacity_bytes: body.fs_capacity_bytes,
        idle_ttl_seconds: body.idle_ttl_seconds,
        delete_after_stop_seconds: body.delete_after_stop_seconds,
        persistent: body.persistent,
        run_config: body.run_config,
        env_vars: body.env_vars,
        labels: body.labels,
        access_delegation: body.access_delegation,
        proxy_config: body.proxy_config,
        mount_config: body.mount_config,
        preserve_memory_on_stop: body.preserve_memory_on_stop,
        restore_memory: body.restore_memory,
        tag_value_ids: body.tag_value_ids,
        volumes: body.volumes.map(|vs| {
            vs.into_iter()
                .map(|v| VolumeRequest {
                    volume: v.volume,
                    mount_path: v.mount_path,
                    read_only: v.read_only.unwrap_or(false),
                })
                .collect()
        }),
    };
    let rec = state.control.create(&caller, req)?;
    // A sandbox from a warm pool is ready as created: there is nothing to wait for.
    if !body.wait_for_ready.unwrap_or(true) || rec.status == SandboxStatus::Ready {
        return Ok(Json(sandbox(&state, &rec)));
    }
    let timeout = Duration::from_secs(body.timeout.unwrap_or(30).clamp(1, 3600));
    let rec = state.control.wait_ready(&rec.id, timeout).await?;
    Ok(Json(sandbox(&state, &rec)))
}

pub(crate) async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ListParams(q): ListParams,
) -> Result<Json<SandboxList>, ApiError> {
    let page = state.control.list_page(&caller, &q)?;
    let items: Vec<Sandbox> = page.items.iter().map(|r| sandbox(&state, r)).collect();
    Ok(Json(SandboxList {
        sandboxes: items.clone(),
        items,
        next_cursor: page.next_cursor,
        offset: page.offset,
    }))
}

pub(crate) async fn batch_delete(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<BatchDeleteBody>,
) -> Result<Json<BatchDeleteResult>, ApiError> {
    let done = state.control.delete_many(&caller, &body.names).await?;
    Ok(Json(BatchDeleteResult {
        deleted: done.deleted,
        skipped: done
            .skipped
            .into_iter()
            .map(|(name, reason)| BatchSkipped { name, reason })
            .collect(),
    }))
}

pub(crate) async fn usage(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<UsageBody>, ApiError> {
    let u = state.control.usage(&caller)?;
    Ok(Json(UsageBody {
        cpu_used_millicores: Some(u.cpu_used_millicores),
        cpu_limit_millicores: Some(u.cpu_limit_millicores),
        memory_used_bytes: Some(u.memory_used_bytes),
        memory_limit_bytes: u.memory_limit_bytes,
        sandbox_direct_count: Some(u.sandboxes_used),
        sandbox_running_count: Some(u.sandbox_running_count),
        sandbox_stopped_count: Some(u.sandbox_stopped_count),
        sandboxes_used: Some(u.sandboxes_used),
        sandboxes_limit: Some(u.sandboxes_limit),
        snapshots_count: Some(u.snapshots_count),
        pools_count: Some(0),
        sandbox_pool_replicas_count: Some(0),
        templates_count: Some(0),
        registries_count: Some(state.control.list_registries(&caller)?.len() as u64),
    }))
}

/// `GET {B}/usage/costs` (§2.6): Warren meters no costs; the answer is an empty page.
pub(crate) async fn usage_costs(_caller: Caller) -> Json<serde_json::Value> {
    Json(serde_json::json!({"items": [], "next_cursor": null}))
}

pub(crate) async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<Sandbox>, ApiError> {
    let rec = state.control.find(&caller, &name)?;
    Ok(Json(sandbox(&state, &rec)))
}

pub(crate) async fn status(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<SandboxStatusBody>, ApiError> {
    let rec = state.control.find(&caller, &name)?;
    Ok(Json(SandboxStatusBody {
        status: rec.status.as_str().to_owned(),
        status_message: rec.status_message,
    }))
}

pub(crate) async fn update(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    ApiJson(body): ApiJson<UpdateSandboxBody>,
) -> Result<Json<Sandbox>, ApiError> {
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
        tag_value_ids: body.tag_value_ids,
    };
    let rec = state.control.update(&caller, &name, req).await?;
    Ok(Json(sandbox(&state, &rec)))
}

pub(crate) async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.control.delete(&caller, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub(crate) async fn start(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<Sandbox>, ApiError> {
    let rec = state.control.start(&caller, &name).await?;
    // Answer with the sandbox ready when it boots promptly; the SDK polls status otherwise.
    let rec = match state
        .control
        .wait_settled(&rec.id, Duration::from_secs(30))
        .await
    {
        Ok(r) => r,
        Err(_) => state.control.find(&caller, &rec.id)?,
    };
    Ok(Json(sandbox(&state, &rec)))
}

pub(crate) async fn stop(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<Sandbox>, ApiError> {
    let rec = state.control.stop(&caller, &name).await?;
    Ok(Json(sandbox(&state, &rec)))
}

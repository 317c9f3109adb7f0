//! Snapshots: `/api/v2/sandboxes/snapshots` (§2.4), capture `POST {B}/boxes/{name}/snapshot`
//! (§2.3) and forks `POST {B}/boxes/{name}/fork` (a Warren extension).

use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use warren_control::carry::Setting;
use warren_control::store::rfc3339;
use warren_control::{
    BuildSnapshot, BuildSource, CaptureSnapshot, ConfigError, ForkSandbox, SnapshotView,
};
use warren_wire::snapshot::{
    CaptureBody, CreateSnapshotBody, ForkBody, ForkList, Snapshot, SnapshotList, SnapshotTag,
    SnapshotTags, TagBody,
};

use crate::boxes::sandbox;
use crate::listing::ListParams;
use crate::{ApiError, ApiJson, ApiQuery, AppState, Caller};

/// The snapshot object of §3.2.
pub(crate) fn snapshot(v: &SnapshotView) -> Snapshot {
    let r = &v.record;
    Snapshot {
        id: r.id.clone(),
        name: r.name.clone(),
        status: r.status.as_str().to_owned(),
        status_message: r.status_message.clone(),
        fs_capacity_bytes: r.fs_capacity_bytes,
        fs_used_bytes: r.fs_used_bytes,
        docker_image: r.docker_image.clone(),
        image_digest: r.image_digest.clone(),
        source_sandbox_id: r.source_sandbox_id.clone(),
        registry_id: r.registry_id.clone(),
        created_by: Some(r.created_by.clone()),
        created_at: Some(rfc3339(r.created_at)),
        updated_at: Some(rfc3339(r.updated_at)),
        tags: v.tags.clone(),
        run_config: Some(r.run_config.clone()),
        labels: r.labels.clone(),
        description: r.description.clone(),
        included: r
            .carried
            .included
            .iter()
            .map(|s| s.as_str().to_owned())
            .collect(),
        // Both hold credentials in the same value holders: shown without opaque values.
        mount_config: r
            .carried
            .mount_config
            .as_ref()
            .map(warren_control::redact_credentials),
        proxy_config: r
            .carried
            .proxy_config
            .as_ref()
            .map(warren_control::redact_credentials),
    }
}

pub(crate) async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ListParams(q): ListParams,
) -> Result<Json<SnapshotList>, ApiError> {
    let page = state.control.list_snapshots(&caller, &q)?;
    let items: Vec<Snapshot> = page.items.iter().map(snapshot).collect();
    Ok(Json(SnapshotList {
        snapshots: items.clone(),
        items,
        next_cursor: page.next_cursor,
        offset: page.offset,
    }))
}

pub(crate) async fn create(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<CreateSnapshotBody>,
) -> Result<(StatusCode, Json<Snapshot>), ApiError> {
    let Some(image) = body.docker_image else {
        return Err(ConfigError::Invalid("docker_image is required".into()).into());
    };
    let req = BuildSnapshot {
        name: body.name,
        source: BuildSource::Image(image),
        fs_capacity_bytes: body.fs_capacity_bytes,
        tag: body.tag,
        registry_id: body.registry_id,
        run_config: body.run_config,
        description: body.description,
        labels: body.labels,
    };
    let v = state.control.build_snapshot(&caller, req)?;
    Ok((StatusCode::CREATED, Json(snapshot(&v))))
}

#[derive(Debug, Deserialize)]
pub(crate) struct ImportQuery {
    name: String,
    tag: Option<String>,
    fs_capacity_bytes: Option<u64>,
}

/// `POST {B}/snapshot-imports?name=&tag=&fs_capacity_bytes=` (a Warren extension, `warren image
/// import`): the body is an image archive (an OCI layout as a tar, or a `docker save` tarball).
pub(crate) async fn import(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<ImportQuery>,
    body: axum::body::Body,
) -> Result<(StatusCode, Json<Snapshot>), ApiError> {
    use futures_util::StreamExt;
    let mut up = state.control.begin_image_import(&caller).await?;
    let mut stream = body.into_data_stream();
    // A client that disconnects mid-body drops the upload, and its file with it.
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            ConfigError::Malformed(format!("the archive did not arrive whole: {e}"))
        })?;
        state.control.import_chunk(&mut up, &chunk).await?;
    }
    let req = BuildSnapshot {
        name: q.name,
        tag: q.tag,
        fs_capacity_bytes: q.fs_capacity_bytes,
        ..BuildSnapshot::default()
    };
    let v = state.control.finish_image_import(&caller, up, req).await?;
    Ok((StatusCode::CREATED, Json(snapshot(&v))))
}

pub(crate) async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(id_or_ref): Path<String>,
) -> Result<Json<Snapshot>, ApiError> {
    Ok(Json(snapshot(
        &state.control.get_snapshot(&caller, &id_or_ref)?,
    )))
}

pub(crate) async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(id_or_ref): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.control.delete_snapshot(&caller, &id_or_ref).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub(crate) async fn tags(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<SnapshotTags>, ApiError> {
    let tags = state.control.snapshot_tags(&caller, &name)?;
    Ok(Json(SnapshotTags {
        name,
        tags: tags
            .into_iter()
            .map(|(tag, snapshot_id)| SnapshotTag { tag, snapshot_id })
            .collect(),
    }))
}

/// `POST {B}/snapshots/{id_or_ref}/tags` `{"tag": ...}` (a Warren extension): points another
/// tag of the snapshot's name at it.
pub(crate) async fn tag(
    State(state): State<AppState>,
    caller: Caller,
    Path(id_or_ref): Path<String>,
    ApiJson(body): ApiJson<TagBody>,
) -> Result<Json<Snapshot>, ApiError> {
    Ok(Json(snapshot(
        &state.control.tag_snapshot(&caller, &id_or_ref, &body.tag)?,
    )))
}

pub(crate) async fn capture(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    ApiJson(body): ApiJson<CaptureBody>,
) -> Result<(StatusCode, Json<Snapshot>), ApiError> {
    if body.docker_image.is_some() {
        return Err(ConfigError::Unsupported(
            "capturing an image from a Docker daemon inside the sandbox is not supported; the \
             sandbox's files are captured when docker_image is absent"
                .into(),
        )
        .into());
    }
    if body.include_memory == Some(true) {
        return Err(ConfigError::Unsupported(
            "memory snapshots are not supported yet; only files are captured".into(),
        )
        .into());
    }
    let req = CaptureSnapshot {
        name: body.name,
        tag: body.tag,
        fs_capacity_bytes: body.fs_capacity_bytes,
        run_config: body.run_config,
        labels: body.labels,
        description: body.description,
        include: Setting::parse_include(&body.include.unwrap_or_default())?,
        confirm_secret_values: body.confirm_allow_snapshot_secret_values == Some(true),
    };
    let v = state.control.capture(&caller, &name, req).await?;
    Ok((StatusCode::CREATED, Json(snapshot(&v))))
}

pub(crate) async fn fork(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    ApiJson(body): ApiJson<ForkBody>,
) -> Result<(StatusCode, Json<ForkList>), ApiError> {
    let req = ForkSandbox {
        count: body.count,
        names: body.names,
    };
    let mut forks = state.control.fork(&caller, &name, req).await?;
    if body.wait_for_ready.unwrap_or(true) {
        let timeout = Duration::from_secs(body.timeout.unwrap_or(30).clamp(1, 3600));
        forks = state.control.wait_forks(&forks, timeout).await?;
    }
    Ok((
        StatusCode::CREATED,
        Json(ForkList {
            sandboxes: forks.iter().map(|r| sandbox(&state, r)).collect(),
        }),
    ))
}

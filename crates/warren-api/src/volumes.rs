//! Volumes (beta, §13): `/api/v2/sandboxes/volumes`. Translation only.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde_json::Value;
use warren_control::{ConfigError, CreateVolume, UpdateVolume, VolumeView};
use warren_wire::volumes::{
    CloneVolumeBody, CreateVolumeBody, UpdateVolumeBody, Volume, VolumeAttachmentBody, VolumeList,
};

use crate::listing::ListParams;
use crate::{ApiError, ApiJson, AppState, Caller};

fn volume(v: &VolumeView) -> Volume {
    let r = &v.record;
    Volume {
        id: r.id.clone(),
        name: r.name.clone(),
        description: r.description.clone(),
        labels: r.labels.clone(),
        size_bytes: r.size_bytes,
        used_bytes: v.used_bytes,
        status: "ready".into(),
        status_message: None,
        source_volume_id: r.source_volume_id.clone(),
        created_at: r.created_at.clone(),
        created_by: r.created_by.clone(),
        updated_at: r.updated_at.clone(),
        updated_by: r.updated_by.clone(),
        attachments: v
            .attachments
            .iter()
            .map(|(id, name, a)| VolumeAttachmentBody {
                sandbox_id: id.clone(),
                sandbox_name: name.clone(),
                mount_path: a.mount_path.clone(),
                read_only: a.read_only,
            })
            .collect(),
    }
}

pub(crate) async fn create(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(b): ApiJson<CreateVolumeBody>,
) -> Result<(StatusCode, Json<Volume>), ApiError> {
    let req = CreateVolume {
        name: b.name,
        size_bytes: Some(b.size_bytes),
        description: b.description,
        labels: b.labels,
    };
    let v = state.control.create_volume(&caller, req).await?;
    Ok((StatusCode::CREATED, Json(volume(&v))))
}

pub(crate) async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ListParams(q): ListParams,
) -> Result<Json<VolumeList>, ApiError> {
    let page = state.control.volumes_page(&caller, &q)?;
    Ok(Json(VolumeList {
        items: page.items.iter().map(volume).collect(),
        next_cursor: page.next_cursor,
    }))
}

pub(crate) async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(v): Path<String>,
) -> Result<Json<Volume>, ApiError> {
    Ok(Json(volume(&state.control.get_volume(&caller, &v)?)))
}

pub(crate) async fn update(
    State(state): State<AppState>,
    caller: Caller,
    Path(v): Path<String>,
    ApiJson(b): ApiJson<UpdateVolumeBody>,
) -> Result<Json<Volume>, ApiError> {
    let description = match b.description {
        None => None,
        Some(Value::Null) => Some(None),
        Some(Value::String(s)) => Some(Some(s)),
        Some(_) => return Err(ConfigError::Invalid("description must be a string".into()).into()),
    };
    let labels = match b.labels {
        None => None,
        Some(Value::Null) => Some(Default::default()),
        Some(l @ Value::Object(_)) => Some(
            serde_json::from_value(l)
                .map_err(|_| ConfigError::Invalid("labels must map strings to strings".into()))?,
        ),
        Some(_) => return Err(ConfigError::Invalid("labels must be an object".into()).into()),
    };
    let req = UpdateVolume {
        description,
        labels,
    };
    Ok(Json(volume(
        &state.control.update_volume(&caller, &v, req)?,
    )))
}

pub(crate) async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(v): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.control.delete_volume(&caller, &v).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub(crate) async fn clone(
    State(state): State<AppState>,
    caller: Caller,
    Path(v): Path<String>,
    ApiJson(b): ApiJson<CloneVolumeBody>,
) -> Result<(StatusCode, Json<Volume>), ApiError> {
    let req = CreateVolume {
        name: b.name,
        size_bytes: None,
        description: b.description,
        labels: b.labels,
    };
    let v = state.control.clone_volume(&caller, &v, req).await?;
    Ok((StatusCode::CREATED, Json(volume(&v))))
}

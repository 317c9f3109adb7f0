//! Files on the data plane (§4.2, §4.3, §4.7): upload, download with ranges and validators,
//! glob and grep. The control plane resolves and reads; this module only speaks HTTP.

use axum::Json;
use axum::body::Body;
use axum::extract::{Multipart, Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use warren_control::store::rfc3339;
use warren_control::{FileInfo, Glob, Grep, Principal, SearchHit, SearchResult};
use warren_wire::files::{GlobBody, GlobMatch, GrepBody, GrepMatch, SearchResponse};

use crate::{ApiError, ApiJson, ApiQuery, AppState, Caller};

#[derive(Debug, Deserialize)]
pub(crate) struct PathQuery {
    path: String,
}

pub(crate) async fn upload(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<PathQuery>,
    mut form: Multipart,
) -> Result<StatusCode, ApiError> {
    let mut field = loop {
        match form.next_field().await? {
            Some(f) if f.name() == Some("file") => break f,
            Some(_) => {}
            None => {
                return Err(warren_control::ConfigError::Invalid(
                    "the multipart body has no field named 'file'".into(),
                )
                .into());
            }
        }
    };
    let mut up = state.control.upload(&caller, &id, &q.path).await?;
    // If the client disconnects mid-body, the upload is dropped unfinished and the target is
    // never half-written.
    while let Some(chunk) = field.chunk().await? {
        state.control.upload_chunk(&mut up, chunk.to_vec()).await?;
    }
    state.control.finish_upload(&caller, up).await?;
    Ok(StatusCode::OK)
}

/// A strong, opaque validator from size and modification time.
fn etag(info: &FileInfo) -> String {
    format!("\"{:x}-{:x}\"", info.size, info.mtime_ns)
}

/// A parsed `Range: bytes=...` header, resolved against the file size.
#[derive(Debug, PartialEq, Eq)]
enum RangeReq {
    Full,
    Part(u64, u64),
    Unsatisfiable,
}

fn parse_range(header: Option<&str>, size: u64) -> RangeReq {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else {
        return RangeReq::Full;
    };
    // Only single ranges; a multi-range request gets the whole file, which RFC 9110 allows.
    if spec.contains(',') {
        return RangeReq::Full;
    }
    let Some((a, b)) = spec.split_once('-') else {
        return RangeReq::Full;
    };
    let (a, b) = (a.trim(), b.trim());
    match (a.parse::<u64>().ok(), b.parse::<u64>().ok()) {
        (Some(start), end) => {
            if start >= size {
                return RangeReq::Unsatisfiable;
            }
            let end = end.map_or(size - 1, |e| e.min(size - 1));
            if end < start {
                RangeReq::Unsatisfiable
            } else {
                RangeReq::Part(start, end)
            }
        }
        (None, Some(n)) if a.is_empty() => {
            if n == 0 || size == 0 {
                return RangeReq::Unsatisfiable;
            }
            RangeReq::Part(size.saturating_sub(n), size - 1)
        }
        _ => RangeReq::Full,
    }
}

pub(crate) async fn download(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<PathQuery>,
    method: Method,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    serve_file(
        &state,
        &caller,
        &id,
        &q.path,
        &method,
        &headers,
        &Presentation::default(),
    )
    .await
}

/// How a file is presented: the data plane's download answers `application/octet-stream`;
/// a download link answers what it was minted with, inside a CSP sandbox.
#[derive(Debug, Default)]
pub(crate) struct Presentation {
    pub(crate) content_type: Option<String>,
    pub(crate) content_disposition: Option<HeaderValue>,
    pub(crate) csp_sandbox: bool,
}

/// A file's bytes with ranges (200, 206, 416) and validators (304), as `p`.
pub(crate) async fn serve_file(
    state: &AppState,
    p: &Principal,
    id: &str,
    path: &str,
    method: &Method,
    headers: &HeaderMap,
    how: &Presentation,
) -> Result<Response, ApiError> {
    // The metadata first: it decides between 200, 206, 304 and 416.
    let file = state.control.open_file(p, id, path).await?;
    let info = &file.info;
    let tag = etag(info);
    let mut h = HeaderMap::new();
    h.insert(
        header::ETAG,
        HeaderValue::from_str(&tag).map_err(|e| ApiError::internal(&e))?,
    );
    if let Ok(v) = HeaderValue::from_str(&httpdate::fmt_http_date(mtime(info.mtime_ns))) {
        h.insert(header::LAST_MODIFIED, v);
    }
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    let header_str = |name: header::HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
    if header_str(header::IF_NONE_MATCH)
        .is_some_and(|v| v.split(',').any(|t| t.trim() == tag || t.trim() == "*"))
    {
        return Ok((StatusCode::NOT_MODIFIED, h).into_response());
    }
    let mut range = parse_range(header_str(header::RANGE), info.size);
    if let Some(if_range) = header_str(header::IF_RANGE)
        && if_range.trim() != tag
    {
        range = RangeReq::Full;
    }
    let (status, start, len) = match range {
        RangeReq::Full => (StatusCode::OK, 0, info.size),
        RangeReq::Part(s, e) => {
            let v = format!("bytes {s}-{e}/{}", info.size);
            h.insert(
                header::CONTENT_RANGE,
                HeaderValue::from_str(&v).map_err(|e| ApiError::internal(&e))?,
            );
            (StatusCode::PARTIAL_CONTENT, s, e - s + 1)
        }
        RangeReq::Unsatisfiable => {
            let v = format!("bytes */{}", info.size);
            h.insert(
                header::CONTENT_RANGE,
                HeaderValue::from_str(&v).map_err(|e| ApiError::internal(&e))?,
            );
            return Ok((StatusCode::RANGE_NOT_SATISFIABLE, h).into_response());
        }
    };
    let ctype = how
        .content_type
        .as_deref()
        .and_then(|t| HeaderValue::from_str(t).ok())
        .unwrap_or(HeaderValue::from_static("application/octet-stream"));
    h.insert(header::CONTENT_TYPE, ctype);
    if let Some(d) = &how.content_disposition {
        h.insert(header::CONTENT_DISPOSITION, d.clone());
    }
    if how.csp_sandbox {
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static("sandbox"),
        );
        h.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
    }
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    if method == Method::HEAD {
        return Ok((status, h).into_response());
    }
    let body = state.control.read_file(p, file, start, len).await?;
    let stream = futures_util::stream::unfold(body, |mut body| async move {
        let item = body.chunks.recv().await?;
        Some((
            item.map(bytes::Bytes::from)
                .map_err(|e| std::io::Error::other(e.to_string())),
            body,
        ))
    });
    Ok((status, h, Body::from_stream(stream)).into_response())
}

fn mtime(mtime_ns: i64) -> std::time::SystemTime {
    std::time::UNIX_EPOCH + std::time::Duration::from_nanos(u64::try_from(mtime_ns).unwrap_or(0))
}

/// The response of a glob or grep: `truncated` per §4.7, and `truncated_reason` (a Warren
/// extension) saying which bound cut it short.
fn search_response<M>(matches: Vec<M>, truncated: Option<String>) -> Json<SearchResponse<M>> {
    Json(SearchResponse {
        matches,
        truncated: truncated.is_some(),
        truncated_reason: truncated,
    })
}

pub(crate) async fn glob(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<GlobBody>,
) -> Result<Json<SearchResponse<GlobMatch>>, ApiError> {
    let req = Glob {
        path: body.path,
        pattern: body.pattern,
        limit: body.limit,
    };
    let SearchResult { hits, truncated } = state.control.glob(&caller, &id, req).await?;
    let matches = hits
        .into_iter()
        .filter_map(|hit| match hit {
            SearchHit::Path {
                path,
                is_dir,
                size,
                mtime_ns,
            } => Some(GlobMatch {
                path,
                is_dir,
                size_bytes: size,
                modified_at: rfc3339(mtime(mtime_ns)),
            }),
            SearchHit::Line { .. } => None,
        })
        .collect();
    Ok(search_response(matches, truncated))
}

pub(crate) async fn grep(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<GrepBody>,
) -> Result<Json<SearchResponse<GrepMatch>>, ApiError> {
    let req = Grep {
        path: body.path,
        pattern: body.pattern,
        glob: body.glob,
        limit: body.limit,
    };
    let SearchResult { hits, truncated } = state.control.grep(&caller, &id, req).await?;
    let matches = hits
        .into_iter()
        .filter_map(|hit| match hit {
            SearchHit::Line {
                path,
                line,
                text,
                text_truncated,
            } => Some(GrepMatch {
                path,
                line,
                text,
                text_truncated,
            }),
            SearchHit::Path { .. } => None,
        })
        .collect();
    Ok(search_response(matches, truncated))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(parse_range(None, 10), RangeReq::Full);
        assert_eq!(parse_range(Some("bytes=2-"), 10), RangeReq::Part(2, 9));
        assert_eq!(parse_range(Some("bytes=2-4"), 10), RangeReq::Part(2, 4));
        assert_eq!(
            parse_range(Some("bytes=2-400"), 10),
            RangeReq::Part(2, 9),
            "end clamped"
        );
        assert_eq!(parse_range(Some("bytes=-3"), 10), RangeReq::Part(7, 9));
        assert_eq!(parse_range(Some("bytes=10-"), 10), RangeReq::Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=0-0"), 0), RangeReq::Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=1-2,4-5"), 10), RangeReq::Full);
        assert_eq!(parse_range(Some("items=1-2"), 10), RangeReq::Full);
    }

    #[test]
    fn a_cut_search_says_why() {
        let v =
            serde_json::to_value(search_response::<GlobMatch>(vec![], Some("bytes read".into())).0)
                .unwrap();
        assert_eq!(v["truncated"], true);
        assert_eq!(v["truncated_reason"], "bytes read");
        let v = serde_json::to_value(search_response::<GlobMatch>(vec![], None).0).unwrap();
        assert_eq!(v["truncated"], false);
        assert!(v.get("truncated_reason").is_none());
    }
}

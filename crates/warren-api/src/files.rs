//! Files on the data plane (§4.2, §4.3, §4.7). Every path is resolved by the agent inside the
//! sandbox, as the sandbox's user: the host never opens a sandbox path, so `..` and symlinks can
//! only ever reach the sandbox's own files.

use std::collections::VecDeque;

use axum::Json;
use axum::body::Body;
use axum::extract::{Multipart, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use warren_control::{AgentConn, Control, Running};
use warren_proto::{
    AgentError, ErrorKind, FileInfo, FileKind, MAX_CHUNK_LEN, Request, Response as AgentResponse,
};

use crate::{ApiError, ApiJson, AppState, Caller};

#[derive(Debug, Deserialize)]
pub(crate) struct PathQuery {
    path: String,
}

/// Makes a path absolute: relative paths resolve against the sandbox's working directory.
fn absolute(running: &Running, path: &str) -> Result<String, ApiError> {
    if path.is_empty() || path.contains('\0') {
        return Err(ApiError::invalid(
            "path must be a non-empty string without NUL bytes",
        ));
    }
    if path.starts_with('/') {
        return Ok(path.to_owned());
    }
    let base = running
        .record
        .config
        .run_config
        .work_dir
        .clone()
        .unwrap_or_else(|| "/root".into());
    Ok(format!("{}/{path}", base.trim_end_matches('/')))
}

fn file_error(op: &'static str, path: &str, e: &AgentError) -> ApiError {
    let kind = if op == "write" {
        "WriteError"
    } else {
        "ReadError"
    };
    match e.kind {
        ErrorKind::NotFound => ApiError::new(
            StatusCode::NOT_FOUND,
            "FileNotFound",
            format!("File '{path}' not found"),
        ),
        ErrorKind::IsADirectory => ApiError::new(
            StatusCode::BAD_REQUEST,
            kind,
            format!("{path} is a directory"),
        ),
        ErrorKind::NotADirectory => ApiError::new(
            StatusCode::BAD_REQUEST,
            kind,
            format!("a component of {path} is not a directory"),
        ),
        ErrorKind::PermissionDenied => ApiError::new(
            StatusCode::FORBIDDEN,
            "PermissionDenied",
            format!("permission denied: {path}"),
        ),
        ErrorKind::NoSpace => ApiError::new(
            StatusCode::INSUFFICIENT_STORAGE,
            kind,
            format!("no space left writing {path}"),
        ),
        _ => ApiError::new(StatusCode::BAD_REQUEST, kind, e.message.clone()),
    }
}

fn gateway(e: impl std::fmt::Display) -> ApiError {
    tracing::warn!(error = %e, "sandbox agent failed during a file operation");
    ApiError::new(
        StatusCode::BAD_GATEWAY,
        "ConnectionError",
        "sandbox is unreachable",
    )
}

async fn conn(control: &Control, running: &Running) -> Result<AgentConn, ApiError> {
    control.connect(running).await.map_err(ApiError::from)
}

pub(crate) async fn upload(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(q): Query<PathQuery>,
    mut form: Multipart,
) -> Result<StatusCode, ApiError> {
    let running = state.control.running_for(&caller, &id).await?;
    let path = absolute(&running, &q.path)?;
    let bad = |e: axum::extract::multipart::MultipartError| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "InvalidRequest",
            format!("malformed multipart body: {e}"),
        )
    };
    let mut field = loop {
        match form.next_field().await.map_err(bad)? {
            Some(f) if f.name() == Some("file") => break f,
            Some(_) => {}
            None => {
                return Err(ApiError::invalid(
                    "the multipart body has no field named 'file'",
                ));
            }
        }
    };
    let mut agent = conn(&state.control, &running).await?;
    let user = running.record.config.run_config.user.clone();
    agent
        .send(&Request::WriteFile {
            path: path.clone(),
            mode: None,
            user,
        })
        .await
        .map_err(gateway)?;
    // If the client disconnects mid-body, dropping the agent connection without FileEnd makes
    // the agent discard the temporary file: the target is never half-written.
    while let Some(chunk) = field.chunk().await.map_err(bad)? {
        for piece in chunk.chunks(MAX_CHUNK_LEN) {
            agent
                .send(&Request::FileData {
                    data: piece.to_vec(),
                })
                .await
                .map_err(gateway)?;
        }
    }
    agent.send(&Request::FileEnd).await.map_err(gateway)?;
    match agent.recv().await.map_err(gateway)? {
        Some(AgentResponse::Ok) => {
            state.control.audit(
                Some(&caller),
                "file.write",
                Some(&running.record.id),
                Some(path),
            );
            Ok(StatusCode::OK)
        }
        Some(AgentResponse::Error(e)) => Err(file_error("write", &path, &e)),
        other => Err(gateway(format!("unexpected reply {other:?}"))),
    }
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
    Query(q): Query<PathQuery>,
    method: Method,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let running = state.control.running_for(&caller, &id).await?;
    let path = absolute(&running, &q.path)?;
    let head = method == Method::HEAD;
    // Ask for nothing first: the answer's FileInfo decides between 200, 206, 304 and 416.
    let mut agent = conn(&state.control, &running).await?;
    let user = running.record.config.run_config.user.clone();
    agent
        .send(&Request::ReadFile {
            path: path.clone(),
            offset: 0,
            len: Some(0),
            user: user.clone(),
        })
        .await
        .map_err(gateway)?;
    let info = match agent.recv().await.map_err(gateway)? {
        Some(AgentResponse::FileInfo(i)) => i,
        Some(AgentResponse::Error(e)) => return Err(file_error("read", &path, &e)),
        other => return Err(gateway(format!("unexpected reply {other:?}"))),
    };
    if info.kind == FileKind::Dir {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "ReadError",
            format!("{path} is a directory"),
        ));
    }
    let tag = etag(&info);
    let modified = std::time::UNIX_EPOCH
        + std::time::Duration::from_nanos(u64::try_from(info.mtime_ns).unwrap_or(0));
    let mut h = HeaderMap::new();
    h.insert(
        header::ETAG,
        HeaderValue::from_str(&tag).map_err(|e| ApiError::internal(&e))?,
    );
    if let Ok(v) = HeaderValue::from_str(&httpdate::fmt_http_date(modified)) {
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
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    if head {
        return Ok((status, h).into_response());
    }
    // The probe connection ends with FileEnd; the body comes from a second read.
    let mut agent = conn(&state.control, &running).await?;
    agent
        .send(&Request::ReadFile {
            path: path.clone(),
            offset: start,
            len: Some(len),
            user,
        })
        .await
        .map_err(gateway)?;
    match agent.recv().await.map_err(gateway)? {
        Some(AgentResponse::FileInfo(_)) => {}
        Some(AgentResponse::Error(e)) => return Err(file_error("read", &path, &e)),
        other => return Err(gateway(format!("unexpected reply {other:?}"))),
    }
    let guard = running.guard;
    let (tx, rx) = mpsc::channel::<Result<bytes::Bytes, std::io::Error>>(8);
    tokio::spawn(async move {
        let _guard = guard;
        loop {
            let item = match agent.recv().await {
                Ok(Some(AgentResponse::FileData { data })) => Ok(bytes::Bytes::from(data)),
                Ok(Some(AgentResponse::FileEnd)) => return,
                Ok(other) => Err(std::io::Error::other(format!("unexpected reply {other:?}"))),
                Err(e) => Err(std::io::Error::other(e.to_string())),
            };
            let stop = item.is_err();
            if tx.send(item).await.is_err() || stop {
                return;
            }
        }
    });
    let body = Body::from_stream(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (b, rx))
    }));
    state.control.audit(
        Some(&caller),
        "file.read",
        Some(&running.record.id),
        Some(path),
    );
    Ok((status, h, body).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct GlobBody {
    pattern: String,
    #[serde(default)]
    path: Option<String>,
    #[serde(default)]
    limit: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct GrepBody {
    pattern: String,
    #[serde(default)]
    path: Option<String>,
    #[serde(default)]
    glob: Option<String>,
    #[serde(default)]
    limit: Option<usize>,
}

/// Most directory entries one glob or grep visits.
const WALK_BUDGET: usize = 200_000;
/// Most directories waiting to be listed; a tree wider than this is cut short.
const WALK_QUEUE_MAX: usize = 100_000;
/// Files larger than this are skipped by grep.
const GREP_MAX_FILE: u64 = 8 << 20;
/// Most bytes one grep reads from the sandbox, over all files.
const GREP_MAX_BYTES: u64 = 256 << 20;
/// Most files one grep reads.
const GREP_MAX_FILES: usize = 20_000;
/// Most bytes of a matching line returned; longer lines are cut (`text_truncated`).
const GREP_MAX_LINE: usize = 4096;
/// Most bytes of matched text in one grep response.
const GREP_MAX_TEXT: usize = 8 << 20;
/// Most matches any glob or grep returns, whatever `limit` asks.
const MAX_MATCHES: usize = 100_000;

struct Entry {
    path: String,
    rel: String,
    info: FileInfo,
}

/// Walks a directory tree through the agent, breadth first, not following symlinks, one
/// directory at a time: callers stop as soon as they have what they need, and the walk holds
/// one directory's entries plus the queue of directories still to list.
struct Walk<'a> {
    control: &'a Control,
    running: &'a Running,
    queue: VecDeque<(String, String, usize)>,
    max_depth: usize,
    visited: usize,
    /// Why the walk stopped early, if it did.
    cut: Option<&'static str>,
}

impl<'a> Walk<'a> {
    fn new(control: &'a Control, running: &'a Running, root: &str, max_depth: usize) -> Self {
        let root = root.trim_end_matches('/').to_owned();
        Self {
            control,
            running,
            queue: VecDeque::from([(root, String::new(), 0usize)]),
            max_depth,
            visited: 0,
            cut: None,
        }
    }

    /// The entries of the next directory, or `None` when the walk is done or its budget is
    /// spent.
    async fn next_dir(&mut self) -> Result<Option<Vec<Entry>>, ApiError> {
        while let Some((dir, rel, depth)) = self.queue.pop_front() {
            if self.visited >= WALK_BUDGET {
                self.cut = Some("entries visited");
                return Ok(None);
            }
            let mut agent = conn(self.control, self.running).await?;
            let dir_path = if dir.is_empty() {
                "/".to_owned()
            } else {
                dir.clone()
            };
            let reply = agent
                .call(&Request::ListDir {
                    path: dir_path.clone(),
                })
                .await;
            let (entries, more) = match reply {
                Ok(AgentResponse::DirEntries { entries, truncated }) => (entries, truncated),
                Err(warren_control::AgentConnError::Agent(e)) if depth == 0 => {
                    return Err(file_error("read", &dir_path, &e));
                }
                // Unreadable subdirectories are skipped, like `find` does.
                Err(warren_control::AgentConnError::Agent(_)) => continue,
                Ok(other) => return Err(gateway(format!("unexpected reply {other:?}"))),
                Err(e) => return Err(gateway(e)),
            };
            if more {
                self.cut.get_or_insert("directory too large");
            }
            let room = WALK_BUDGET - self.visited;
            if entries.len() > room {
                self.cut = Some("entries visited");
            }
            let mut out = Vec::with_capacity(entries.len().min(room));
            for info in entries.into_iter().take(room) {
                self.visited += 1;
                let child_rel = if rel.is_empty() {
                    info.name.clone()
                } else {
                    format!("{rel}/{}", info.name)
                };
                let child_path = format!("{dir}/{}", info.name);
                if info.kind == FileKind::Dir && depth + 1 < self.max_depth {
                    if self.queue.len() < WALK_QUEUE_MAX {
                        self.queue
                            .push_back((child_path.clone(), child_rel.clone(), depth + 1));
                    } else {
                        self.cut = Some("directories queued");
                    }
                }
                out.push(Entry {
                    path: child_path,
                    rel: child_rel,
                    info,
                });
            }
            return Ok(Some(out));
        }
        Ok(None)
    }
}

/// The response of a glob or grep: `truncated` per §4.7, and `truncated_reason` (a Warren
/// extension) saying which bound cut it short.
fn search_response(matches: Vec<Value>, cut: Option<&'static str>) -> Json<Value> {
    let mut v = json!({"matches": matches, "truncated": cut.is_some()});
    if let Some(why) = cut {
        v["truncated_reason"] = json!(why);
    }
    Json(v)
}

fn modified_at(info: &FileInfo) -> String {
    let t = std::time::UNIX_EPOCH
        + std::time::Duration::from_nanos(u64::try_from(info.mtime_ns).unwrap_or(0));
    warren_control::store::rfc3339(t)
}

fn compile_glob(pattern: &str) -> Result<globset::GlobMatcher, ApiError> {
    globset::GlobBuilder::new(pattern)
        .literal_separator(true)
        .build()
        .map(|g| g.compile_matcher())
        .map_err(|e| ApiError::invalid(format!("invalid glob pattern: {e}")))
}

fn depth_for(pattern: &str) -> usize {
    if pattern.contains("**") {
        64
    } else {
        pattern.split('/').count()
    }
}

pub(crate) async fn glob(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<GlobBody>,
) -> Result<Json<Value>, ApiError> {
    let running = state.control.running_for(&caller, &id).await?;
    let root = absolute(&running, body.path.as_deref().unwrap_or("/"))?;
    let matcher = compile_glob(&body.pattern)?;
    let limit = body.limit.unwrap_or(10_000).min(MAX_MATCHES);
    let mut walk = Walk::new(&state.control, &running, &root, depth_for(&body.pattern));
    let mut matches = Vec::new();
    'walk: while let Some(entries) = walk.next_dir().await? {
        for e in entries.iter().filter(|e| matcher.is_match(&e.rel)) {
            if matches.len() >= limit {
                walk.cut = Some("limit");
                break 'walk;
            }
            matches.push(json!({
                "path": e.path,
                "is_dir": e.info.kind == FileKind::Dir,
                "size_bytes": e.info.size,
                "modified_at": modified_at(&e.info),
            }));
        }
    }
    Ok(search_response(matches, walk.cut))
}

/// `line` cut to at most [`GREP_MAX_LINE`] bytes at a character boundary; `true` if cut.
fn clip_line(line: &str) -> (&str, bool) {
    if line.len() <= GREP_MAX_LINE {
        return (line, false);
    }
    let mut end = GREP_MAX_LINE;
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    (&line[..end], true)
}

pub(crate) async fn grep(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<GrepBody>,
) -> Result<Json<Value>, ApiError> {
    let running = state.control.running_for(&caller, &id).await?;
    let root = absolute(&running, body.path.as_deref().unwrap_or("/"))?;
    if body.pattern.is_empty() {
        return Err(ApiError::invalid("pattern must not be empty"));
    }
    // A bare pattern like `*.py` matches basenames at any depth; one with `/` or `**` matches
    // the path relative to the root.
    let filter = body
        .glob
        .as_deref()
        .map(|g| (compile_glob(g), g.contains('/') || g.contains("**")));
    let filter = match filter {
        Some((Ok(m), rel)) => Some((m, rel)),
        Some((Err(e), _)) => return Err(e),
        None => None,
    };
    let limit = body.limit.unwrap_or(1000).min(MAX_MATCHES);
    let mut walk = Walk::new(&state.control, &running, &root, 64);
    let mut matches = Vec::new();
    let (mut files_read, mut bytes_read, mut text_bytes) = (0usize, 0u64, 0usize);
    'walk: while let Some(entries) = walk.next_dir().await? {
        for e in entries
            .iter()
            .filter(|e| e.info.kind == FileKind::File && e.info.size <= GREP_MAX_FILE)
        {
            if let Some((m, rel)) = &filter {
                let target = if *rel {
                    e.rel.as_str()
                } else {
                    e.rel.rsplit('/').next().unwrap_or(&e.rel)
                };
                if !m.is_match(target) {
                    continue;
                }
            }
            if files_read >= GREP_MAX_FILES {
                walk.cut = Some("files read");
                break 'walk;
            }
            let budget = GREP_MAX_BYTES - bytes_read;
            if budget == 0 {
                walk.cut = Some("bytes read");
                break 'walk;
            }
            files_read += 1;
            let Some(content) = read_bounded(&state.control, &running, &e.path, budget).await
            else {
                continue;
            };
            bytes_read += content.len() as u64;
            if content.iter().take(8192).any(|b| *b == 0) {
                continue; // binary
            }
            let text = String::from_utf8_lossy(&content);
            for (i, line) in text.lines().enumerate() {
                if !line.contains(&body.pattern) {
                    continue;
                }
                if matches.len() >= limit {
                    walk.cut = Some("limit");
                    break 'walk;
                }
                let (line, clipped) = clip_line(line);
                text_bytes += line.len();
                if text_bytes > GREP_MAX_TEXT {
                    walk.cut = Some("response size");
                    break 'walk;
                }
                let mut m = json!({"path": e.path, "line": i + 1, "text": line});
                if clipped {
                    m["text_truncated"] = json!(true);
                }
                matches.push(m);
            }
        }
    }
    Ok(search_response(matches, walk.cut))
}

/// A file's first `max` bytes (at most [`GREP_MAX_FILE`]), or `None` if it cannot be read.
async fn read_bounded(
    control: &Control,
    running: &Running,
    path: &str,
    max: u64,
) -> Option<Vec<u8>> {
    let mut agent = conn(control, running).await.ok()?;
    let user = running.record.config.run_config.user.clone();
    agent
        .send(&Request::ReadFile {
            path: path.to_owned(),
            offset: 0,
            len: Some(max.min(GREP_MAX_FILE)),
            user,
        })
        .await
        .ok()?;
    let mut out = Vec::new();
    loop {
        match agent.recv().await.ok()?? {
            AgentResponse::FileInfo(_) => {}
            AgentResponse::FileData { data } => out.extend_from_slice(&data),
            AgentResponse::FileEnd => return Some(out),
            _ => return None,
        }
    }
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
    fn glob_depth_follows_the_pattern() {
        assert_eq!(depth_for("*"), 1);
        assert_eq!(depth_for("src/*.rs"), 2);
        assert_eq!(depth_for("**/*.rs"), 64);
        assert!(compile_glob("*.py").unwrap().is_match("a.py"));
        assert!(
            !compile_glob("*.py").unwrap().is_match("d/a.py"),
            "* stays within one segment"
        );
        assert!(compile_glob("**/*.py").unwrap().is_match("d/e/a.py"));
    }

    #[test]
    fn long_lines_are_clipped_at_a_character_boundary() {
        let short = "needle";
        assert_eq!(clip_line(short), (short, false));
        let long = "é".repeat(GREP_MAX_LINE);
        let (clipped, cut) = clip_line(&long);
        assert!(cut);
        assert!(clipped.len() <= GREP_MAX_LINE && clipped.len() >= GREP_MAX_LINE - 1);
        assert!(clipped.chars().all(|c| c == 'é'));
    }

    #[test]
    fn a_cut_search_says_why() {
        let v = search_response(vec![], Some("bytes read")).0;
        assert_eq!(v["truncated"], true);
        assert_eq!(v["truncated_reason"], "bytes read");
        let v = search_response(vec![json!({})], None).0;
        assert_eq!(v["truncated"], false);
        assert!(v.get("truncated_reason").is_none());
    }
}

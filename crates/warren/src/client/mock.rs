//! A stand-in Warren server for the client's tests: the control-plane and data-plane routes the
//! commands use, answering in the API's shapes and recording what it was sent. Commands sent to
//! `/execute/ws` pick a scripted behaviour by name (see `exec_session`).

use std::collections::HashMap;
use std::path::Path as FsPath;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{DefaultBodyLimit, Multipart, Path, Query, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde_json::{Value, json};

use super::{Client, ConnArgs};

/// The key the mock accepts.
pub(crate) const KEY: &str = "test-key";

/// What the mock saw.
#[derive(Debug, Default)]
pub(crate) struct Recorded {
    /// "METHOD /path?query" of every request.
    pub(crate) requests: Vec<String>,
    /// JSON bodies of create requests (boxes and keys).
    pub(crate) bodies: Vec<Value>,
    /// First messages of exec sockets.
    pub(crate) executes: Vec<Value>,
    /// Control messages after the first.
    pub(crate) controls: Vec<Value>,
    /// Uploads: (field name, file name, content type).
    pub(crate) parts: Vec<(String, Option<String>, Option<String>)>,
    /// Files by path, written by uploads and served by downloads.
    pub(crate) files: HashMap<String, Vec<u8>>,
    status_polls: u32,
}

#[derive(Debug, Clone)]
struct St {
    rec: Arc<Mutex<Recorded>>,
    base: String,
}

/// A running mock server.
#[derive(Debug)]
pub(crate) struct MockServer {
    pub(crate) url: String,
    pub(crate) rec: Arc<Mutex<Recorded>>,
}

impl MockServer {
    pub(crate) async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let rec = Arc::default();
        let st = St {
            rec: Arc::clone(&rec),
            base: url.clone(),
        };
        let b = "/api/v2/sandboxes";
        let app = Router::new()
            .route(&format!("{b}/boxes"), get(list).post(create))
            .route(
                &format!("{b}/boxes/{{name}}"),
                get(get_box).delete(delete_box),
            )
            .route(&format!("{b}/boxes/{{name}}/start"), post(ok_json))
            .route(&format!("{b}/boxes/{{name}}/stop"), post(no_content))
            .route(&format!("{b}/boxes/{{name}}/status"), get(status))
            .route(&format!("{b}/keys"), get(list_keys).post(create_key))
            .route(&format!("{b}/keys/{{id}}"), delete(no_content))
            .route("/dp/{name}/execute/ws", get(ws))
            .route("/dp/{name}/upload", post(upload))
            .route("/dp/{name}/download", get(download))
            .layer(middleware::from_fn_with_state(st.clone(), auth))
            .layer(DefaultBodyLimit::disable())
            .with_state(st);
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { url, rec }
    }

    /// A client with the right key.
    pub(crate) fn client(&self) -> Client {
        self.client_with(Some(KEY))
    }

    pub(crate) fn client_with(&self, key: Option<&str>) -> Client {
        let conn = ConnArgs {
            url: self.url.clone(),
            api_key: key.map(str::to_owned),
        };
        Client::new(&conn, FsPath::new("/nonexistent")).unwrap()
    }

    pub(crate) fn requests(&self) -> Vec<String> {
        self.rec.lock().unwrap().requests.clone()
    }
}

fn err(status: StatusCode, error: &str, message: &str) -> Response {
    (
        status,
        Json(json!({"detail": {"error": error, "message": message}})),
    )
        .into_response()
}

/// Records every request and checks the key, as the real server does on both planes.
async fn auth(State(st): State<St>, req: Request, next: Next) -> Response {
    let line = format!("{} {}", req.method(), req.uri());
    st.rec.lock().unwrap().requests.push(line);
    match req.headers().get("x-api-key").and_then(|v| v.to_str().ok()) {
        Some(KEY) => next.run(req).await,
        _ => err(StatusCode::UNAUTHORIZED, "Unauthorized", "invalid API key"),
    }
}

fn sandbox(base: &str, name: &str) -> Value {
    json!({
        "name": name,
        "id": "0190b3a0-0000-7000-8000-000000000001",
        "status": "ready",
        "dataplane_url": if name == "nodp" { Value::Null } else { json!(format!("{base}/dp/{name}")) },
        "vcpus": 2,
        "mem_bytes": 536_870_912u64,
        "fs_capacity_bytes": 2_147_483_648u64,
        "created_at": "2025-01-01T00:00:00.000000Z",
    })
}

async fn list(State(st): State<St>) -> Json<Value> {
    let items = vec![sandbox(&st.base, "one"), sandbox(&st.base, "two")];
    Json(json!({"items": items, "sandboxes": items, "next_cursor": null, "offset": 0}))
}

async fn create(State(st): State<St>, body: Bytes) -> Response {
    let v: Value = serde_json::from_slice(&body).unwrap();
    st.rec.lock().unwrap().bodies.push(v.clone());
    let name = v["name"].as_str().unwrap_or("sandbox-abc123");
    if name == "taken" {
        return err(
            StatusCode::CONFLICT,
            "Conflict",
            "Sandbox with name 'taken' already exists",
        );
    }
    (StatusCode::CREATED, Json(sandbox(&st.base, name))).into_response()
}

async fn get_box(State(st): State<St>, Path(name): Path<String>) -> Response {
    if name == "missing" {
        return err(
            StatusCode::NOT_FOUND,
            "NotFound",
            "Sandbox 'missing' not found",
        );
    }
    Json(sandbox(&st.base, &name)).into_response()
}

async fn delete_box(Path(name): Path<String>) -> Response {
    if name == "missing" {
        return err(
            StatusCode::NOT_FOUND,
            "NotFound",
            "Sandbox 'missing' not found",
        );
    }
    StatusCode::NO_CONTENT.into_response()
}

async fn ok_json() -> Json<Value> {
    Json(json!({}))
}

async fn no_content() -> StatusCode {
    StatusCode::NO_CONTENT
}

/// `provisioning` on the first poll, `ready` after; `failed` for the sandbox named so.
async fn status(State(st): State<St>, Path(name): Path<String>) -> Json<Value> {
    let mut rec = st.rec.lock().unwrap();
    rec.status_polls += 1;
    if name == "failed" {
        return Json(json!({"status": "failed", "status_message": "out of disk"}));
    }
    let s = if rec.status_polls == 1 {
        "provisioning"
    } else {
        "ready"
    };
    Json(json!({"status": s, "status_message": null}))
}

async fn create_key(State(st): State<St>, body: Bytes) -> Response {
    let v: Value = serde_json::from_slice(&body).unwrap();
    st.rec.lock().unwrap().bodies.push(v.clone());
    (
        StatusCode::CREATED,
        Json(json!({
            "id": "k1", "key": "wrn_secret", "name": v["name"], "admin": v["admin"],
            "created_at": "2025-01-01T00:00:00Z",
        })),
    )
        .into_response()
}

async fn list_keys() -> Json<Value> {
    Json(json!({"keys": [
        {"id": "k1", "name": "admin", "admin": true, "created_at": "2025-01-01T00:00:00Z", "revoked_at": null},
        {"id": "k2", "name": "ci", "admin": false, "created_at": "2025-01-01T00:00:00Z",
         "revoked_at": "2025-01-02T00:00:00Z"},
    ]}))
}

async fn upload(
    State(st): State<St>,
    Query(q): Query<HashMap<String, String>>,
    mut form: Multipart,
) -> Response {
    let path = q.get("path").cloned().unwrap_or_default();
    while let Some(mut field) = form.next_field().await.unwrap() {
        let part = (
            field.name().unwrap_or_default().to_owned(),
            field.file_name().map(str::to_owned),
            field.content_type().map(str::to_owned),
        );
        let mut data = Vec::new();
        while let Some(chunk) = field.chunk().await.unwrap() {
            data.extend_from_slice(&chunk);
        }
        let mut rec = st.rec.lock().unwrap();
        rec.parts.push(part);
        rec.files.insert(path.clone(), data);
    }
    StatusCode::OK.into_response()
}

async fn download(State(st): State<St>, Query(q): Query<HashMap<String, String>>) -> Response {
    let path = q.get("path").cloned().unwrap_or_default();
    match st.rec.lock().unwrap().files.get(&path) {
        Some(data) => data.clone().into_response(),
        None => err(
            StatusCode::NOT_FOUND,
            "FileNotFound",
            &format!("File '{path}' not found"),
        ),
    }
}

async fn ws(State(st): State<St>, up: WebSocketUpgrade) -> Response {
    up.on_upgrade(move |sock| exec_session(sock, st))
}

async fn send(sock: &mut WebSocket, v: Value) {
    let _ = sock.send(Message::Text(v.to_string().into())).await;
}

async fn recv(sock: &mut WebSocket) -> Option<Value> {
    loop {
        match sock.recv().await? {
            Ok(Message::Text(t)) => return serde_json::from_str(t.as_str()).ok(),
            Ok(Message::Close(_)) | Err(_) => return None,
            Ok(_) => {}
        }
    }
}

/// The §4.4 protocol with scripted commands:
/// - `echo`: "hello\n" on stdout, "oops\n" on stderr, exit 3;
/// - `cat`: echoes `input` to stdout, exits 0 at `close_stdin` or EOT;
/// - `sleep`: a `CommandTimeout` error;
/// - `fail`: a `CommandError` error;
/// - `hang`: prints "x", waits for `kill`, then exits with -9;
/// - `flaky`: the first connection closes before `started`;
/// - `drop`: closes after `started` without an exit;
/// - anything else: exit 0.
async fn exec_session(mut sock: WebSocket, st: St) {
    let Some(first) = recv(&mut sock).await else {
        return;
    };
    let command = first["command"].as_str().unwrap_or_default().to_owned();
    let attempts = {
        let mut rec = st.rec.lock().unwrap();
        rec.executes.push(first.clone());
        rec.executes
            .iter()
            .filter(|e| e["command_id"] == first["command_id"])
            .count()
    };
    if command == "flaky" && attempts == 1 {
        let _ = sock.send(Message::Close(None)).await;
        return;
    }
    send(
        &mut sock,
        json!({"type": "started", "command_id": first["command_id"], "pid": 42}),
    )
    .await;
    let exit = |code: i64| json!({"type": "exit", "exit_code": code});
    match command.as_str() {
        "echo" => {
            send(
                &mut sock,
                json!({"type": "stdout", "data": "hello\n", "offset": 0}),
            )
            .await;
            send(
                &mut sock,
                json!({"type": "stderr", "data": "oops\n", "offset": 0}),
            )
            .await;
            send(&mut sock, exit(3)).await;
        }
        "cat" | "hang" => {
            let mut offset = 0;
            if command == "hang" {
                send(
                    &mut sock,
                    json!({"type": "stdout", "data": "x", "offset": 0}),
                )
                .await;
                offset = 1;
            }
            while let Some(m) = recv(&mut sock).await {
                st.rec.lock().unwrap().controls.push(m.clone());
                match m["type"].as_str() {
                    Some("input") if m["data"] == "\u{4}" => {
                        send(&mut sock, exit(0)).await;
                        break;
                    }
                    Some("input") => {
                        let data = m["data"].as_str().unwrap_or_default();
                        send(
                            &mut sock,
                            json!({"type": "stdout", "data": data, "offset": offset}),
                        )
                        .await;
                        offset += data.len();
                    }
                    Some("close_stdin") if command == "cat" => {
                        send(&mut sock, exit(0)).await;
                        break;
                    }
                    Some("kill") => {
                        send(&mut sock, exit(-9)).await;
                        break;
                    }
                    _ => {}
                }
            }
        }
        "sleep" => {
            send(
                &mut sock,
                json!({"type": "error", "error_type": "CommandTimeout",
                       "error": "Command timed out after 1 seconds"}),
            )
            .await;
        }
        "fail" => {
            send(
                &mut sock,
                json!({"type": "error", "error_type": "CommandError", "error": "boom"}),
            )
            .await;
        }
        "drop" => {}
        _ => send(&mut sock, exit(0)).await,
    }
    let _ = sock.send(Message::Close(None)).await;
}

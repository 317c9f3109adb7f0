//! Command execution on the data plane: WebSocket (§4.4, the SDKs' default), SSE (§4.5) and
//! blocking HTTP (§4.6). All three translate to the agent's Exec/Attach sessions, which live in
//! the sandbox: a dropped client, or a restarted daemon, loses nothing the agent still holds.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use warren_control::{
    AgentConn, AgentReader, Control, Principal, RunConfig, Running, SandboxRecord,
};
use warren_proto::{
    ErrorKind, ExecSpec, ExitReason, ExitStatus, Request, Response as AgentResponse, Stream,
};

use crate::utf8::Utf8Splitter;
use crate::{ApiError, ApiJson, AppState, Caller};

/// The `execute` parameters shared by the three transports.
#[derive(Debug, Deserialize)]
pub(crate) struct ExecuteParams {
    command: String,
    #[serde(default)]
    command_id: Option<String>,
    #[serde(default)]
    shell: Option<String>,
    #[serde(default)]
    timeout_seconds: Option<i64>,
    /// The HTTP transport's name for `timeout_seconds`.
    #[serde(default)]
    timeout: Option<i64>,
    #[serde(default)]
    idle_timeout_seconds: Option<i64>,
    #[serde(default)]
    kill_on_disconnect: Option<bool>,
    #[serde(default)]
    ttl_seconds: Option<i64>,
    #[serde(default)]
    env: Option<BTreeMap<String, String>>,
    #[serde(default)]
    cwd: Option<String>,
    #[serde(default)]
    run_config: Option<RunConfig>,
    #[serde(default)]
    close_stdin: Option<bool>,
    #[serde(default)]
    pty: Option<bool>,
}

/// Largest timeout, idle timeout or TTL a command accepts, in seconds (a year). Larger values
/// are refused rather than clamped: they are mistakes, and unchecked they overflow the
/// millisecond arithmetic here and the deadline arithmetic in the agent.
const MAX_LIMIT_SECONDS: i64 = 365 * 24 * 3600;

/// Seconds (`None`, or a negative "never") to an optional millisecond limit; `Err` names the
/// field when the value is past [`MAX_LIMIT_SECONDS`].
fn secs_to_ms(
    field: &str,
    v: Option<i64>,
    default: Option<u64>,
    never_below_zero: bool,
) -> Result<Option<u64>, String> {
    let ms = |secs: u64| secs.checked_mul(1000).ok_or_else(|| too_large(field));
    match v {
        None => default.map(ms).transpose(),
        Some(n) if n < 0 && never_below_zero => Ok(None),
        Some(n) if n > MAX_LIMIT_SECONDS => Err(too_large(field)),
        Some(n) => ms(u64::try_from(n).unwrap_or(0)).map(Some),
    }
}

fn too_large(field: &str) -> String {
    format!("{field} must be at most {MAX_LIMIT_SECONDS} seconds (one year)")
}

/// Why an `execute` request was refused: malformed (400) or out of range (422).
#[derive(Debug)]
enum SpecError {
    BadRequest(String),
    OutOfRange(String),
}

impl SpecError {
    fn message(&self) -> &str {
        match self {
            Self::BadRequest(m) | Self::OutOfRange(m) => m,
        }
    }
}

impl From<SpecError> for ApiError {
    fn from(e: SpecError) -> Self {
        match e {
            SpecError::BadRequest(m) => ApiError::new(StatusCode::BAD_REQUEST, "InvalidRequest", m),
            SpecError::OutOfRange(m) => ApiError::invalid(m),
        }
    }
}

impl ExecuteParams {
    /// The agent request. Layering: the sandbox's run_config, then the command's (or the
    /// legacy `env`/`cwd`, never both).
    fn to_spec(&self, control: &Control, running: &Running) -> Result<ExecSpec, SpecError> {
        if self.run_config.is_some() && (self.env.is_some() || self.cwd.is_some()) {
            return Err(SpecError::BadRequest(
                "send either run_config or the legacy env/cwd, not both".into(),
            ));
        }
        if self.command.contains('\0') {
            return Err(SpecError::BadRequest(
                "the command contains a NUL byte".into(),
            ));
        }
        let legacy = RunConfig {
            user: None,
            work_dir: self.cwd.clone(),
            env_vars: self.env.clone().unwrap_or_default(),
        };
        let layer = self.run_config.clone().unwrap_or(legacy);
        layer
            .validate()
            .map_err(|e| SpecError::BadRequest(e.to_string()))?;
        let rc = control.effective_run_config(&running.record, Some(&layer));
        let pty = self.pty.unwrap_or(false);
        // 0 means "no limit" for timeout_seconds; for the TTL and idle timeout -1 means never.
        let timeout_field = if self.timeout_seconds.is_some() {
            "timeout_seconds"
        } else {
            "timeout"
        };
        let timeout = self.timeout_seconds.or(self.timeout).unwrap_or(60);
        let timeout_ms = if timeout > 0 {
            secs_to_ms(timeout_field, Some(timeout), None, false)
        } else {
            Ok(None)
        }
        .map_err(SpecError::OutOfRange)?;
        let idle_timeout_ms = secs_to_ms(
            "idle_timeout_seconds",
            self.idle_timeout_seconds,
            Some(300),
            true,
        )
        .map_err(SpecError::OutOfRange)?;
        let ttl_ms = secs_to_ms("ttl_seconds", self.ttl_seconds, Some(600), true)
            .map_err(SpecError::OutOfRange)?;
        Ok(ExecSpec {
            command_id: self.command_id.clone(),
            argv: vec![
                self.shell.clone().unwrap_or_else(|| "/bin/bash".into()),
                "-c".into(),
                self.command.clone(),
            ],
            env: rc.env_vars.into_iter().collect(),
            cwd: rc.work_dir,
            user: rc.user,
            pty: pty.then(warren_proto::PtySize::default),
            stdin: pty || !self.close_stdin.unwrap_or(false),
            timeout_ms,
            idle_timeout_ms,
            kill_on_disconnect: self.kill_on_disconnect.unwrap_or(false),
            ttl_ms,
        })
    }
}

/// Agent frames read on their own task: `AgentReader::recv` is not cancel-safe, so it must
/// never sit in a `select!`. The bounded channel carries back-pressure to the agent. Dropping
/// the pump stops the task and so closes the agent connection: that is how the agent learns a
/// client went away (detach, `kill_on_disconnect`, idle timeout).
struct Pump {
    rx: mpsc::Receiver<Result<AgentResponse, String>>,
    task: tokio::task::JoinHandle<()>,
}

impl Pump {
    async fn recv(&mut self) -> Option<Result<AgentResponse, String>> {
        self.rx.recv().await
    }
}

impl Drop for Pump {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn pump(mut reader: AgentReader) -> Pump {
    let (tx, rx) = mpsc::channel(16);
    let task = tokio::spawn(async move {
        loop {
            let item = match reader.recv().await {
                Ok(Some(r)) => Ok(r),
                Ok(None) => return,
                Err(e) => Err(e.to_string()),
            };
            let stop = item.is_err();
            if tx.send(item).await.is_err() || stop {
                return;
            }
        }
    });
    Pump { rx, task }
}

fn unreachable() -> ApiError {
    ApiError::new(
        StatusCode::BAD_GATEWAY,
        "ConnectionError",
        "sandbox is unreachable",
    )
}

fn error_type(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::CommandNotFound => "CommandNotFound",
        ErrorKind::SessionExpired => "SessionExpired",
        _ => "CommandError",
    }
}

fn timeout_message(spec_timeout_ms: Option<u64>) -> String {
    match spec_timeout_ms {
        Some(ms) => format!("Command timed out after {} seconds", ms / 1000),
        None => "Command timed out".into(),
    }
}

/// The first client message of a WebSocket session.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum FirstMessage {
    Execute(Box<ExecuteParams>),
    Reconnect {
        command_id: String,
        #[serde(default)]
        stdout_offset: u64,
        #[serde(default)]
        stderr_offset: u64,
    },
}

/// Control messages after the first.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ControlMessage {
    Input {
        data: String,
    },
    CloseStdin,
    Kill,
    #[serde(other)]
    Unknown,
}

pub(crate) async fn ws(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    upgrade: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let running = state.control.running_for(&caller, &id).await?;
    let control = state.control.clone();
    let principal = caller.0;
    Ok(upgrade
        .max_message_size(4 << 20)
        .on_upgrade(move |socket| ws_session(control, principal, running, socket)))
}

async fn send_json(socket: &mut WebSocket, v: &Value) -> bool {
    socket
        .send(Message::Text(v.to_string().into()))
        .await
        .is_ok()
}

async fn close(socket: &mut WebSocket, code: u16, reason: &str) {
    let _ = socket
        .send(Message::Close(Some(CloseFrame {
            code,
            reason: reason.into(),
        })))
        .await;
}

async fn ws_session(control: Arc<Control>, p: Principal, running: Running, mut socket: WebSocket) {
    let oom = OomWatch::start(&control, &running);
    let first = match tokio::time::timeout(Duration::from_secs(30), socket.recv()).await {
        Ok(Some(Ok(Message::Text(t)))) => serde_json::from_str::<FirstMessage>(&t),
        Ok(Some(Ok(Message::Binary(b)))) => serde_json::from_slice::<FirstMessage>(&b),
        _ => return,
    };
    let (request, timeout_ms) = match first {
        Ok(FirstMessage::Execute(params)) => match params.to_spec(&control, &running) {
            Ok(spec) => {
                control.metrics().command_started();
                control.audit(
                    Some(&p),
                    "exec",
                    Some(&running.record.id),
                    Some(params.command.clone()),
                );
                let t = spec.timeout_ms;
                (Request::Exec(spec), t)
            }
            Err(e) => {
                let _ = send_json(
                    &mut socket,
                    &json!({"type": "error", "error_type": "CommandError", "error": e.message()}),
                )
                .await;
                close(&mut socket, 1000, "").await;
                return;
            }
        },
        Ok(FirstMessage::Reconnect {
            command_id,
            stdout_offset,
            stderr_offset,
        }) => (
            Request::Attach {
                command_id,
                stdout_offset,
                stderr_offset,
            },
            None,
        ),
        Err(e) => {
            let msg = format!("expected an execute or reconnect message: {e}");
            let _ = send_json(
                &mut socket,
                &json!({"type": "error", "error_type": "CommandError", "error": msg}),
            )
            .await;
            close(&mut socket, 1000, "").await;
            return;
        }
    };
    let conn = match open_session(&control, &running, &request).await {
        Ok(c) => c,
        Err(msg) => {
            // The client retries the same execute after an abnormal close.
            tracing::warn!(error = %msg, "failed to reach the sandbox agent");
            close(&mut socket, 1011, "sandbox unreachable").await;
            return;
        }
    };
    let (reader, mut writer) = conn.split();
    let mut frames = pump(reader);
    let mut out = Utf8Splitter::default();
    let mut err = Utf8Splitter::default();
    loop {
        tokio::select! {
            frame = frames.recv() => {
                let Some(frame) = frame else {
                    // The agent went away mid-command (sandbox stopped or daemon shutting down):
                    // an abnormal close makes the client reconnect from its offsets.
                    close(&mut socket, 1011, "sandbox agent disconnected").await;
                    return;
                };
                let frame = match frame {
                    Ok(f) => f,
                    Err(e) => {
                        tracing::warn!(error = %e, "bad frame from sandbox agent");
                        close(&mut socket, 1011, "sandbox agent error").await;
                        return;
                    }
                };
                let ok = match frame {
                    AgentResponse::Started { command_id, pid } => {
                        send_json(&mut socket, &json!({"type": "started", "command_id": command_id, "pid": pid})).await
                    }
                    AgentResponse::Output { stream, offset, data } => {
                        control.metrics().streamed(stream == Stream::Stdout, data.len() as u64);
                        let (name, splitter) = match stream {
                            Stream::Stdout => ("stdout", &mut out),
                            Stream::Stderr => ("stderr", &mut err),
                        };
                        match splitter.push(offset, &data) {
                            Some((off, text)) => send_json(&mut socket, &json!({"type": name, "data": text, "offset": off})).await,
                            None => true,
                        }
                    }
                    AgentResponse::Exit(status) => {
                        for (name, splitter) in [("stdout", &mut out), ("stderr", &mut err)] {
                            if let Some((off, text)) = splitter.finish() {
                                let _ = send_json(&mut socket, &json!({"type": name, "data": text, "offset": off})).await;
                            }
                        }
                        let oom = oom.killed(&control, &running.record, &status);
                        let msg = exit_message(&status, timeout_ms, oom);
                        let _ = send_json(&mut socket, &msg).await;
                        close(&mut socket, 1000, "").await;
                        return;
                    }
                    AgentResponse::Error(e) => {
                        let _ = send_json(&mut socket, &json!({"type": "error", "error_type": error_type(e.kind), "error": e.message})).await;
                        close(&mut socket, 1000, "").await;
                        return;
                    }
                    _ => true,
                };
                if !ok {
                    return;
                }
            }
            msg = socket.recv() => {
                let text = match msg {
                    Some(Ok(Message::Text(t))) => t.to_string(),
                    Some(Ok(Message::Binary(b))) => String::from_utf8_lossy(&b).into_owned(),
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                    // Client gone: detach. The command keeps running in the agent unless it
                    // asked for kill_on_disconnect.
                    Some(Ok(Message::Close(_)) | Err(_)) | None => return,
                };
                let req = match serde_json::from_str::<ControlMessage>(&text) {
                    Ok(ControlMessage::Input { data }) => Request::Input { data: data.into_bytes() },
                    Ok(ControlMessage::CloseStdin) => Request::CloseStdin,
                    Ok(ControlMessage::Kill) => Request::Kill,
                    Ok(ControlMessage::Unknown) | Err(_) => continue,
                };
                if writer.send(&req).await.is_err() {
                    close(&mut socket, 1011, "sandbox agent disconnected").await;
                    return;
                }
            }
        }
    }
}

/// The terminal message for an exit: a timeout is an error, everything else an exit code, with
/// `oom_killed: true` added (a Warren extension the SDKs ignore) when the kernel's OOM killer
/// ended it.
fn exit_message(status: &ExitStatus, timeout_ms: Option<u64>, oom_killed: bool) -> Value {
    if status.reason == ExitReason::Timeout {
        json!({"type": "error", "error_type": "CommandTimeout", "error": timeout_message(timeout_ms)})
    } else if oom_killed {
        json!({"type": "exit", "exit_code": status.code, "oom_killed": true})
    } else {
        json!({"type": "exit", "exit_code": status.code})
    }
}

/// Counts the sandbox's OOM kills from the start of a command's stream, to tell whether a
/// SIGKILL that ended it came from the kernel's OOM killer.
#[derive(Debug, Clone, Copy)]
struct OomWatch(u64);

impl OomWatch {
    fn start(control: &Control, running: &Running) -> Self {
        Self(control.oom_kills(&running.record))
    }

    fn killed(self, control: &Control, rec: &SandboxRecord, status: &ExitStatus) -> bool {
        status.reason == ExitReason::Exited
            && status.signal == Some(9)
            && control.oom_kills(rec) > self.0
    }
}

async fn open_session(
    control: &Control,
    running: &Running,
    request: &Request,
) -> Result<AgentConn, String> {
    let mut conn = control.connect(running).await.map_err(|e| e.to_string())?;
    conn.send(request).await.map_err(|e| e.to_string())?;
    Ok(conn)
}

/// One stream's output of a blocking HTTP execute, kept up to a cap; what is past the cap is
/// counted and dropped.
struct Captured {
    kept: Vec<u8>,
    dropped: u64,
    cap: usize,
}

impl Captured {
    fn new(cap: usize) -> Self {
        Self {
            kept: Vec::new(),
            dropped: 0,
            cap,
        }
    }

    fn push(&mut self, data: &[u8]) {
        let room = self.cap.saturating_sub(self.kept.len());
        let take = data.len().min(room);
        self.kept.extend_from_slice(&data[..take]);
        self.dropped += (data.len() - take) as u64;
    }

    /// The text, with a marker line at the end when output was dropped. A cut that splits a
    /// UTF-8 character drops the partial character rather than showing a replacement.
    fn into_text(mut self) -> (String, bool) {
        if self.dropped == 0 {
            return (String::from_utf8_lossy(&self.kept).into_owned(), false);
        }
        if let Err(e) = std::str::from_utf8(&self.kept)
            && e.error_len().is_none()
        {
            let cut = self.kept.len() - e.valid_up_to();
            self.kept.truncate(e.valid_up_to());
            self.dropped += cut as u64;
        }
        let mut text = String::from_utf8_lossy(&self.kept).into_owned();
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str(&truncation_marker(self.kept.len(), self.dropped));
        (text, true)
    }
}

/// The line appended to a stream a blocking HTTP execute cut short. §4.6's response has no
/// field for it, so the text says it; `stdout_truncated`/`stderr_truncated` say it to
/// programs.
fn truncation_marker(kept: usize, dropped: u64) -> String {
    format!(
        "[warren: output truncated: {dropped} more bytes after the first {kept} were dropped; \
         use the WebSocket or SSE transport for large output]\n"
    )
}

pub(crate) async fn http(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(params): ApiJson<ExecuteParams>,
) -> Result<Json<Value>, ApiError> {
    let running = state.control.running_for(&caller, &id).await?;
    let mut spec = params.to_spec(&state.control, &running)?;
    spec.stdin = false;
    spec.pty = None;
    // Nobody can reattach to a blocking call: kill the command if the caller goes away.
    spec.kill_on_disconnect = true;
    spec.ttl_ms = Some(0);
    let timeout_ms = spec.timeout_ms;
    state.control.metrics().command_started();
    state.control.audit(
        Some(&caller),
        "exec",
        Some(&running.record.id),
        Some(params.command.clone()),
    );
    let conn = open_session(&state.control, &running, &Request::Exec(spec))
        .await
        .map_err(|_| unreachable())?;
    let (reader, _writer) = conn.split();
    let mut frames = pump(reader);
    let cap = state.limits.http_output_cap;
    let (mut stdout, mut stderr) = (Captured::new(cap), Captured::new(cap));
    while let Some(frame) = frames.recv().await {
        match frame.map_err(|e| ApiError::new(StatusCode::BAD_GATEWAY, "ConnectionError", e))? {
            AgentResponse::Output { stream, data, .. } => {
                state
                    .control
                    .metrics()
                    .streamed(stream == Stream::Stdout, data.len() as u64);
                if stream == Stream::Stdout {
                    stdout.push(&data);
                } else {
                    stderr.push(&data);
                }
            }
            AgentResponse::Exit(status) if status.reason == ExitReason::Timeout => {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "CommandError",
                    timeout_message(timeout_ms),
                ));
            }
            AgentResponse::Exit(status) => {
                let (stdout, stdout_truncated) = stdout.into_text();
                let (stderr, stderr_truncated) = stderr.into_text();
                return Ok(Json(json!({
                    "stdout": stdout,
                    "stderr": stderr,
                    "exit_code": status.code,
                    "stdout_truncated": stdout_truncated,
                    "stderr_truncated": stderr_truncated,
                })));
            }
            AgentResponse::Error(e) => {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "CommandError",
                    e.message,
                ));
            }
            _ => {}
        }
    }
    Err(ApiError::new(
        StatusCode::BAD_GATEWAY,
        "ConnectionError",
        "sandbox agent disconnected",
    ))
}

#[derive(Debug, Deserialize)]
pub(crate) struct ResumeParams {
    command_id: String,
    #[serde(default)]
    stdout_offset: u64,
    #[serde(default)]
    stderr_offset: u64,
}

pub(crate) async fn sse_start(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(params): ApiJson<ExecuteParams>,
) -> Result<Response, ApiError> {
    let running = state.control.running_for(&caller, &id).await?;
    let mut spec = params.to_spec(&state.control, &running)?;
    // §4.5: stdin is always closed at spawn on this transport.
    spec.stdin = false;
    spec.pty = None;
    let timeout_ms = spec.timeout_ms;
    state.control.metrics().command_started();
    state.control.audit(
        Some(&caller),
        "exec",
        Some(&running.record.id),
        Some(params.command.clone()),
    );
    sse_response(
        state.control.clone(),
        running,
        Request::Exec(spec),
        timeout_ms,
    )
    .await
}

pub(crate) async fn sse_resume(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(params): ApiJson<ResumeParams>,
) -> Result<Response, ApiError> {
    let running = state.control.running_for(&caller, &id).await?;
    let req = Request::Attach {
        command_id: params.command_id,
        stdout_offset: params.stdout_offset,
        stderr_offset: params.stderr_offset,
    };
    sse_response(state.control.clone(), running, req, None).await
}

fn sse_event(name: &str, data: &Value) -> bytes::Bytes {
    bytes::Bytes::from(format!("event: {name}\ndata: {data}\n\n"))
}

/// Streams a command as server-sent events. The first agent frame is read before answering, so
/// an unknown command is a 404 rather than an event. Output flows with back-pressure (the
/// response body is pulled by the client), so memory stays bounded without `ack_required`.
async fn sse_response(
    control: Arc<Control>,
    running: Running,
    request: Request,
    timeout_ms: Option<u64>,
) -> Result<Response, ApiError> {
    let oom = OomWatch::start(&control, &running);
    let conn = open_session(&control, &running, &request)
        .await
        .map_err(|_| unreachable())?;
    let (reader, writer) = conn.split();
    let mut frames = pump(reader);
    let first = frames
        .recv()
        .await
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_GATEWAY,
                "ConnectionError",
                "sandbox agent disconnected",
            )
        })?
        .map_err(|e| ApiError::new(StatusCode::BAD_GATEWAY, "ConnectionError", e))?;
    let started = match first {
        AgentResponse::Started { command_id, pid } => json!({"command_id": command_id, "pid": pid}),
        AgentResponse::Error(e)
            if e.kind == ErrorKind::CommandNotFound || e.kind == ErrorKind::SessionExpired =>
        {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "CommandNotFound",
                e.message,
            ));
        }
        AgentResponse::Error(e) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "CommandError",
                e.message,
            ));
        }
        other => {
            return Err(ApiError::internal(&format!(
                "unexpected first frame from agent: {other:?}"
            )));
        }
    };
    let (tx, rx) = mpsc::channel::<bytes::Bytes>(16);
    tokio::spawn(async move {
        // Holding the writer keeps this client attached (and the command's output flowing).
        let _writer = writer;
        let _guard = running.guard;
        if tx.send(sse_event("started", &started)).await.is_err() {
            return;
        }
        let b64 = base64::engine::general_purpose::STANDARD;
        let mut heartbeat = tokio::time::interval(Duration::from_secs(15));
        heartbeat.tick().await;
        let mut ends = [0u64; 2];
        loop {
            let frame = tokio::select! {
                f = frames.recv() => f,
                _ = heartbeat.tick() => {
                    if tx.send(bytes::Bytes::from_static(b": keep-alive\n\n")).await.is_err() { return; }
                    continue;
                }
            };
            let event = match frame {
                Some(Ok(AgentResponse::Output {
                    stream,
                    offset,
                    data,
                })) => {
                    control
                        .metrics()
                        .streamed(stream == Stream::Stdout, data.len() as u64);
                    let i = usize::from(stream == Stream::Stderr);
                    ends[i] = offset + data.len() as u64;
                    let name = if i == 0 { "stdout" } else { "stderr" };
                    sse_event(name, &json!({"offset": offset, "data": b64.encode(&data)}))
                }
                Some(Ok(AgentResponse::Exit(status))) => {
                    for (i, name) in ["stdout", "stderr"].into_iter().enumerate() {
                        let _ = tx
                            .send(sse_event(
                                "stream_end",
                                &json!({"stream": name, "offset": ends[i]}),
                            ))
                            .await;
                    }
                    let ev = if status.reason == ExitReason::Timeout {
                        sse_event(
                            "error",
                            &json!({"error_type": "CommandTimeout", "error": timeout_message(timeout_ms)}),
                        )
                    } else if oom.killed(&control, &running.record, &status) {
                        sse_event(
                            "exit",
                            &json!({"exit_code": status.code, "oom_killed": true}),
                        )
                    } else {
                        sse_event("exit", &json!({"exit_code": status.code}))
                    };
                    let _ = tx.send(ev).await;
                    return;
                }
                Some(Ok(AgentResponse::Error(e))) => {
                    let _ = tx
                        .send(sse_event(
                            "error",
                            &json!({"error_type": error_type(e.kind), "error": e.message}),
                        ))
                        .await;
                    return;
                }
                Some(Ok(_)) => continue,
                // The agent went away: end without a terminal event; the client resumes.
                Some(Err(_)) | None => return,
            };
            if tx.send(event).await.is_err() {
                return;
            }
        }
    });
    let body = Body::from_stream(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, std::convert::Infallible>(b), rx))
    }));
    Ok((
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_map_to_optional_milliseconds() {
        assert_eq!(secs_to_ms("t", None, Some(300), true), Ok(Some(300_000)));
        assert_eq!(secs_to_ms("t", Some(-1), Some(300), true), Ok(None));
        assert_eq!(secs_to_ms("t", Some(5), None, true), Ok(Some(5000)));
        assert_eq!(secs_to_ms("t", Some(0), None, true), Ok(Some(0)));
        assert_eq!(
            secs_to_ms("t", Some(MAX_LIMIT_SECONDS), None, true),
            Ok(Some(31_536_000_000))
        );
    }

    #[test]
    fn absurd_limits_are_refused_not_wrapped() {
        for v in [MAX_LIMIT_SECONDS + 1, i64::MAX, i64::MAX / 1000 + 1] {
            let e = secs_to_ms("ttl_seconds", Some(v), None, true).unwrap_err();
            assert!(e.contains("ttl_seconds") && e.contains("one year"), "{e}");
        }
        assert!(secs_to_ms("t", Some(i64::MIN), None, true) == Ok(None));
        // Negative timeouts where "never" is not meant stay a zero limit, not a wrap.
        assert_eq!(secs_to_ms("t", Some(-5), None, false), Ok(Some(0)));
    }

    #[test]
    fn http_capture_keeps_the_cap_and_says_what_it_dropped() {
        let mut c = Captured::new(10);
        c.push(b"0123456");
        c.push(b"789abcdef");
        let (text, truncated) = c.into_text();
        assert!(truncated);
        assert!(
            text.starts_with("0123456789\n[warren: output truncated: 6 more bytes"),
            "{text}"
        );
        let mut c = Captured::new(10);
        c.push(b"short");
        assert_eq!(c.into_text(), ("short".to_owned(), false));
        // A cut inside a multi-byte character drops the partial character.
        let mut c = Captured::new(4);
        c.push("abcé".as_bytes());
        let (text, truncated) = c.into_text();
        assert!(
            truncated && text.starts_with("abc\n[warren: output truncated: 2 more bytes"),
            "{text}"
        );
    }

    #[test]
    fn first_messages_parse() {
        let m: FirstMessage = serde_json::from_str(
            r#"{"type":"execute","command":"echo hi","command_id":"abc","close_stdin":true}"#,
        )
        .unwrap();
        assert!(matches!(m, FirstMessage::Execute(p) if p.command == "echo hi"));
        let m: FirstMessage = serde_json::from_str(
            r#"{"type":"reconnect","command_id":"abc","stdout_offset":5,"stderr_offset":0}"#,
        )
        .unwrap();
        assert!(matches!(
            m,
            FirstMessage::Reconnect {
                stdout_offset: 5,
                ..
            }
        ));
        let c: ControlMessage = serde_json::from_str(r#"{"type":"resize","rows":1}"#).unwrap();
        assert!(matches!(c, ControlMessage::Unknown));
    }

    #[test]
    fn timeouts_become_errors_and_exits_become_codes() {
        let t = ExitStatus {
            code: 137,
            signal: Some(9),
            reason: ExitReason::Timeout,
        };
        assert_eq!(
            exit_message(&t, Some(5000), false)["error_type"],
            "CommandTimeout"
        );
        let e = ExitStatus {
            code: 7,
            signal: None,
            reason: ExitReason::Exited,
        };
        assert_eq!(
            exit_message(&e, None, false),
            json!({"type": "exit", "exit_code": 7})
        );
        let oom = ExitStatus {
            code: 137,
            signal: Some(9),
            reason: ExitReason::Exited,
        };
        assert_eq!(
            exit_message(&oom, None, true),
            json!({"type": "exit", "exit_code": 137, "oom_killed": true})
        );
    }
}

//! The SSE transport (§4.5): output as base64 events over a one-way response, with the flow
//! control the SDK expects. After [`ACK_WINDOW`] bytes the response ends with `ack_required`
//! and the command's stream is parked in the control plane, unread, so the agent's buffer and
//! then the command's pipe fill and the command waits; the client's `resume` with those offsets
//! is the acknowledgement and continues from exactly there.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use bytes::Bytes;
use serde::Serialize;
use tokio::sync::mpsc;
use warren_control::{CommandStream, Control, ExecEvent, ExecFailure, Stream};
use warren_wire::exec::{
    ExecuteBody, ResumeBody, SseAckRequired, SseError, SseExit, SseOutput, SseStarted, SseStreamEnd,
};

use super::exec_request;
use crate::{ApiError, ApiJson, AppState, Caller};

/// Unacknowledged output one response carries before it asks for an ack (the hosted service
/// keeps about 1 MiB).
pub(crate) const ACK_WINDOW: u64 = 1 << 20;
/// Comment lines keep idle connections open (the SDK's read timeout is 60 s).
const HEARTBEAT: Duration = Duration::from_secs(15);

pub(crate) async fn sse_start(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<ExecuteBody>,
) -> Result<Response, ApiError> {
    let mut req = exec_request(body);
    // §4.5: stdin is always closed at spawn on this transport.
    req.stdin = false;
    req.pty = None;
    let stream = state.control.exec(&caller, &id, req).await?;
    respond(state.control.clone(), stream, [0, 0]).await
}

pub(crate) async fn sse_resume(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<ResumeBody>,
) -> Result<Response, ApiError> {
    let stream = state
        .control
        .resume(
            &caller,
            &id,
            &body.command_id,
            body.stdout_offset,
            body.stderr_offset,
        )
        .await?;
    respond(
        state.control.clone(),
        stream,
        [body.stdout_offset, body.stderr_offset],
    )
    .await
}

fn event(name: &str, data: &impl Serialize) -> Bytes {
    let data = serde_json::to_string(data).unwrap_or_else(|_| "{}".into());
    Bytes::from(format!("event: {name}\ndata: {data}\n\n"))
}

const NAMES: [&str; 2] = ["stdout", "stderr"];

/// Streams a command as server-sent events. The first event is awaited before answering, so
/// an unknown command is a 404 rather than an event.
async fn respond(
    control: Arc<Control>,
    mut stream: CommandStream,
    cursors: [u64; 2],
) -> Result<Response, ApiError> {
    let started = match stream.started() {
        // A parked stream taken back: it began long ago.
        Some((command_id, pid)) => SseStarted {
            command_id: command_id.to_owned(),
            pid,
        },
        None => match stream.next().await {
            Some(ExecEvent::Started { command_id, pid }) => SseStarted { command_id, pid },
            other => {
                let e = other.unwrap_or(ExecEvent::Lost).into_error();
                return Err(e.map_or_else(
                    || ApiError::internal(&"a command stream began without starting"),
                    ApiError::from,
                ));
            }
        },
    };
    let (tx, rx) = mpsc::channel::<Bytes>(16);
    tokio::spawn(pump(control, stream, cursors, started, tx));
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

/// Copies the command's events into the response until it ends, the window fills, or the
/// client goes away (which drops the stream and so detaches from the command).
async fn pump(
    control: Arc<Control>,
    mut stream: CommandStream,
    mut cursors: [u64; 2],
    started: SseStarted,
    tx: mpsc::Sender<Bytes>,
) {
    if tx.send(event("started", &started)).await.is_err() {
        return;
    }
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut heartbeat = tokio::time::interval(HEARTBEAT);
    heartbeat.tick().await;
    let mut unacked = 0u64;
    loop {
        let next = tokio::select! {
            // Cancel-safe: an event is taken from a channel or not at all.
            e = stream.next() => e,
            _ = heartbeat.tick() => {
                if tx.send(Bytes::from_static(b": keep-alive\n\n")).await.is_err() {
                    return;
                }
                continue;
            }
        };
        let ev = match next {
            Some(ExecEvent::Output {
                stream: which,
                offset,
                data,
            }) => {
                let i = usize::from(which == Stream::Stderr);
                cursors[i] = offset + data.len() as u64;
                unacked += data.len() as u64;
                let out = SseOutput {
                    offset,
                    data: b64.encode(&data),
                };
                if tx.send(event(NAMES[i], &out)).await.is_err() {
                    return;
                }
                if unacked >= ACK_WINDOW {
                    let ack = SseAckRequired {
                        stdout_offset: cursors[0],
                        stderr_offset: cursors[1],
                    };
                    if tx.send(event("ack_required", &ack)).await.is_ok() {
                        control.park(stream, cursors[0], cursors[1]);
                    }
                    return;
                }
                continue;
            }
            Some(ExecEvent::Exit { code, oom_killed }) => {
                end_streams(&tx, cursors).await;
                event(
                    "exit",
                    &SseExit {
                        exit_code: code,
                        oom_killed,
                    },
                )
            }
            Some(ExecEvent::TimedOut { message }) => {
                end_streams(&tx, cursors).await;
                event(
                    "error",
                    &SseError {
                        error_type: "CommandTimeout".into(),
                        error: message,
                    },
                )
            }
            Some(ExecEvent::Failed { failure, message }) => {
                let error_type = match failure {
                    ExecFailure::CommandNotFound => "CommandNotFound",
                    ExecFailure::SessionExpired => "SessionExpired",
                    ExecFailure::Command => "CommandError",
                };
                event(
                    "error",
                    &SseError {
                        error_type: error_type.into(),
                        error: message,
                    },
                )
            }
            Some(ExecEvent::Started { .. }) => continue,
            // The agent went away: end without a terminal event; the client resumes.
            Some(ExecEvent::Lost) | None => return,
        };
        let _ = tx.send(ev).await;
        return;
    }
}

async fn end_streams(tx: &mpsc::Sender<Bytes>, cursors: [u64; 2]) {
    for (i, name) in NAMES.into_iter().enumerate() {
        let end = SseStreamEnd {
            stream: name.into(),
            offset: cursors[i],
        };
        let _ = tx.send(event("stream_end", &end)).await;
    }
}

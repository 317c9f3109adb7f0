//! The WebSocket transport (§4.4): text frames of JSON both ways, output as UTF-8 text with
//! byte offsets, and a control channel for input, close-stdin, kill and resize.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::response::Response;
use warren_control::{
    CommandStream, Control, ControlError, ExecEvent, ExecFailure, Principal, Stream,
};
use warren_wire::Utf8Splitter;
use warren_wire::exec::{WsControl, WsFirst, WsServer};

use super::exec_request;
use crate::{ApiError, AppState, Caller};

/// The most one read from a command's WebSocket takes in; a bigger frame takes more reads.
const READ_BUFFER: usize = 16 * 1024;

pub(crate) async fn ws(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    upgrade: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    // Found (and woken) before the upgrade, so a missing sandbox is a 404, not a closed socket.
    let running = state.control.running_for(&caller, &id).await?;
    let control = state.control.clone();
    let principal = caller.0;
    // A client sends small frames here (the request, stdin, signals). tungstenite zeroes up to
    // its read buffer's size before every read, 128 KiB by default: on a connection per
    // command that was a fresh 128 KiB to fault in and clear each time.
    let upgrade = upgrade
        .max_message_size(4 << 20)
        .read_buffer_size(READ_BUFFER);
    Ok(upgrade.on_upgrade(move |socket| {
        let id = running.record.id.clone();
        drop(running);
        session(control, principal, id, socket)
    }))
}

async fn send(socket: &mut WebSocket, msg: &WsServer) -> bool {
    let Ok(text) = serde_json::to_string(msg) else {
        return false;
    };
    socket.send(Message::Text(text.into())).await.is_ok()
}

async fn close(socket: &mut WebSocket, code: u16, reason: &str) {
    let _ = socket
        .send(Message::Close(Some(CloseFrame {
            code,
            reason: reason.into(),
        })))
        .await;
}

fn error(error_type: &str, error: impl Into<String>) -> WsServer {
    WsServer::Error {
        error_type: error_type.into(),
        error: error.into(),
    }
}

/// Opens the command the first message asks for, or tells the client why not.
async fn open(
    control: &Arc<Control>,
    p: &Principal,
    id: &str,
    socket: &mut WebSocket,
) -> Option<CommandStream> {
    let first = match tokio::time::timeout(Duration::from_secs(30), socket.recv()).await {
        Ok(Some(Ok(Message::Text(t)))) => serde_json::from_str::<WsFirst>(&t),
        Ok(Some(Ok(Message::Binary(b)))) => serde_json::from_slice::<WsFirst>(&b),
        _ => return None,
    };
    let opened = match first {
        Ok(WsFirst::Execute(body)) => control.exec(p, id, exec_request(*body)).await,
        Ok(WsFirst::Reconnect {
            command_id,
            stdout_offset,
            stderr_offset,
        }) => {
            control
                .attach(p, id, &command_id, stdout_offset, stderr_offset)
                .await
        }
        Err(e) => {
            let msg = format!("expected an execute or reconnect message: {e}");
            let _ = send(socket, &error("CommandError", msg)).await;
            close(socket, 1000, "").await;
            return None;
        }
    };
    match opened {
        Ok(stream) => Some(stream),
        Err(ControlError::Config(e)) => {
            let _ = send(socket, &error("CommandError", e.to_string())).await;
            close(socket, 1000, "").await;
            None
        }
        Err(e) => {
            // The client retries the same execute after an abnormal close.
            tracing::warn!(error = %e, "failed to open a command");
            close(socket, 1011, "sandbox unreachable").await;
            None
        }
    }
}

/// What a command event becomes on the socket; `None` when the session ends after it.
async fn forward(
    socket: &mut WebSocket,
    event: ExecEvent,
    text: &mut [Utf8Splitter; 2],
) -> Option<()> {
    let msg = match event {
        ExecEvent::Started { command_id, pid } => WsServer::Started { command_id, pid },
        ExecEvent::Output {
            stream,
            offset,
            data,
        } => {
            let i = usize::from(stream == Stream::Stderr);
            let Some((offset, data)) = text[i].push(offset, &data) else {
                return Some(());
            };
            match stream {
                Stream::Stdout => WsServer::Stdout { data, offset },
                Stream::Stderr => WsServer::Stderr { data, offset },
            }
        }
        ExecEvent::Exit { code, oom_killed } => {
            let [out, err] = text;
            if let Some((offset, data)) = out.finish() {
                let _ = send(socket, &WsServer::Stdout { data, offset }).await;
            }
            if let Some((offset, data)) = err.finish() {
                let _ = send(socket, &WsServer::Stderr { data, offset }).await;
            }
            let _ = send(
                socket,
                &WsServer::Exit {
                    exit_code: code,
                    oom_killed,
                },
            )
            .await;
            close(socket, 1000, "").await;
            return None;
        }
        ExecEvent::TimedOut { message } => {
            let _ = send(socket, &error("CommandTimeout", message)).await;
            close(socket, 1000, "").await;
            return None;
        }
        ExecEvent::Failed { failure, message } => {
            let kind = match failure {
                ExecFailure::CommandNotFound => "CommandNotFound",
                ExecFailure::SessionExpired => "SessionExpired",
                ExecFailure::Command => "CommandError",
            };
            let _ = send(socket, &error(kind, message)).await;
            close(socket, 1000, "").await;
            return None;
        }
        ExecEvent::Lost => {
            // The agent went away mid-command (sandbox stopped or daemon shutting down): an
            // abnormal close makes the client reconnect from its offsets.
            close(socket, 1011, "sandbox agent disconnected").await;
            return None;
        }
    };
    send(socket, &msg).await.then_some(())
}

async fn session(control: Arc<Control>, p: Principal, id: String, mut socket: WebSocket) {
    let Some(mut stream) = open(&control, &p, &id, &mut socket).await else {
        return;
    };
    let mut text = [Utf8Splitter::default(), Utf8Splitter::default()];
    loop {
        tokio::select! {
            // Cancel-safe: an event is taken from a channel or not at all.
            event = stream.next() => {
                let Some(event) = event else { return };
                if forward(&mut socket, event, &mut text).await.is_none() {
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
                let sent = match serde_json::from_str::<WsControl>(&text) {
                    Ok(WsControl::Input { data }) => stream.input(data.into_bytes()).await,
                    Ok(WsControl::CloseStdin) => stream.close_stdin().await,
                    Ok(WsControl::Kill) => stream.kill().await,
                    Ok(WsControl::Resize { rows, cols }) => stream.resize(rows, cols).await,
                    Ok(WsControl::Unknown) | Err(_) => continue,
                };
                if !sent {
                    close(&mut socket, 1011, "sandbox agent disconnected").await;
                    return;
                }
            }
        }
    }
}

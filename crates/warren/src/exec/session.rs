//! One command over the data plane's WebSocket (§4.4): the `execute` message, the retry until
//! the command has started, then output to this process's stdout and stderr, stdin and signals
//! to the command, until its exit.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use futures_util::{SinkExt, StreamExt};
use serde::de::IgnoredAny;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use warren_wire::exec::{ExecuteBody, WsControl, WsFirst, WsServer};

use super::stdin::Input;
use crate::client::{Client, Ws, WsError, dataplane};

/// The shell the server runs the command string with (`<shell> -c <command>`).
const SHELL: &str = "/bin/bash";

/// How often an open exec socket is pinged.
const KEEPALIVE: Duration = Duration::from_secs(30);

/// What one `execute` asks for.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Session {
    pub(super) command: String,
    pub(super) env: BTreeMap<String, String>,
    pub(super) cwd: Option<String>,
    pub(super) timeout: u64,
    pub(super) interactive: bool,
    pub(super) tty: bool,
}

/// The first message on the socket (§4.4.1).
pub(super) fn execute_message(s: &Session, command_id: &str) -> WsFirst {
    WsFirst::Execute(Box::new(ExecuteBody {
        command: s.command.clone(),
        command_id: Some(command_id.to_owned()),
        shell: Some(SHELL.into()),
        timeout_seconds: Some(i64::try_from(s.timeout).unwrap_or(i64::MAX)),
        // The command belongs to this terminal: when this process goes away, so does it.
        kill_on_disconnect: Some(true),
        env: (!s.env.is_empty()).then(|| s.env.clone()),
        cwd: s.cwd.clone(),
        close_stdin: (!s.interactive).then_some(true),
        pty: s.tty.then_some(true),
        ..ExecuteBody::default()
    }))
}

/// How a command ended.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Outcome {
    Exit(u8),
    /// Killed by its timeout; the server's message.
    Timeout(String),
}

/// What woke the session loop.
#[derive(Debug)]
enum Event {
    /// A message from the server.
    Message(WsServer),
    /// SIGINT, SIGTERM or SIGHUP.
    Signal,
}

/// Where a session's output goes and its input comes from: this process's stdio, or buffers
/// in tests.
pub(super) struct Io<'a> {
    pub(super) out: &'a mut dyn Write,
    pub(super) err: &'a mut dyn Write,
    pub(super) input: Option<mpsc::Receiver<Input>>,
}

pub(super) async fn session_loop(
    client: &Client,
    name: &str,
    s: &Session,
    io: Io<'_>,
) -> Result<Outcome> {
    let Io {
        out: stdout,
        err: stderr,
        input: mut stdin,
    } = io;
    let sb = client.get_sandbox(name).await?;
    let dataplane = dataplane(&sb)?.to_owned();
    let command_id = uuid::Uuid::now_v7().simple().to_string();
    let first = serde_json::to_string(&execute_message(s, &command_id))?;
    let (mut ws, mut pending) = start(client, &dataplane, &first).await?;

    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    let mut hangup = signal(SignalKind::hangup())?;
    let mut kills = 0u32;
    // Pings keep a quiet session (a shell waiting for keystrokes, a long silent build) from
    // being dropped as idle by anything between here and the server, as the SDKs' pings do.
    let mut keepalive =
        tokio::time::interval_at(tokio::time::Instant::now() + KEEPALIVE, KEEPALIVE);
    let mut stdout_broken = false;

    loop {
        let event = if let Some(m) = pending.take() {
            Event::Message(m)
        } else {
            tokio::select! {
                frame = ws.next() => match frame {
                    None | Some(Ok(Message::Close(_))) => bail!(
                        "the connection to sandbox {name} closed before the command ended"
                    ),
                    Some(Err(e)) => bail!("lost the connection to sandbox {name}: {e}"),
                    Some(Ok(frame)) => match parse_frame(frame)? {
                        Some(m) => Event::Message(m),
                        None => continue,
                    },
                },
                input = recv_input(&mut stdin) => {
                    let out = match input {
                        Some(Input::Data(data)) => WsControl::Input { data },
                        // A PTY gets EOT, like a terminal's Ctrl-D; a pipe is closed.
                        Some(Input::Eof) | None => {
                            stdin = None;
                            if s.tty {
                                WsControl::Input { data: "\u{4}".into() }
                            } else {
                                WsControl::CloseStdin
                            }
                        }
                    };
                    send(&mut ws, &out).await?;
                    continue;
                }
                // Ctrl-C (when the terminal is not raw), kill(1) or a closed terminal: kill the
                // command and wait for its exit; a second signal gives up waiting.
                _ = interrupt.recv() => Event::Signal,
                _ = terminate.recv() => Event::Signal,
                _ = hangup.recv() => Event::Signal,
                _ = keepalive.tick() => {
                    ws.send(Message::Ping(Vec::new().into()))
                        .await
                        .context("lost the connection to the sandbox")?;
                    continue;
                }
            }
        };
        let msg = match event {
            Event::Message(m) => m,
            Event::Signal => {
                kills += 1;
                if kills > 1 {
                    return Ok(Outcome::Exit(130));
                }
                send(&mut ws, &WsControl::Kill).await?;
                continue;
            }
        };
        match msg {
            WsServer::Stderr { data, .. } => {
                let _ = stderr
                    .write_all(data.as_bytes())
                    .and_then(|()| stderr.flush());
            }
            WsServer::Stdout { data, .. } => {
                if !stdout_broken
                    && stdout
                        .write_all(data.as_bytes())
                        .and_then(|()| stdout.flush())
                        .is_err()
                {
                    // Whoever read our output has gone (`warren exec ... | head`): stop the
                    // command as SIGPIPE would stop a local one.
                    stdout_broken = true;
                    send(&mut ws, &WsControl::Kill).await?;
                }
            }
            WsServer::Exit { exit_code, .. } => {
                let _ = ws.close(None).await;
                return Ok(Outcome::Exit(exit_status(i64::from(exit_code))));
            }
            WsServer::Error { error_type, error } => {
                let _ = ws.close(None).await;
                if error_type == "CommandTimeout" {
                    return Ok(Outcome::Timeout(error));
                }
                bail!("{error}");
            }
            WsServer::Started { .. } => {}
        }
    }
}

/// Opens the socket and sends `execute`, retrying (with the same `command_id`, so the server
/// attaches instead of starting a second copy) while the server is busy or unreachable or the
/// stream ends before `started` — as the SDKs do (§1.5). Returns the socket and the first
/// message.
async fn start(client: &Client, dataplane: &str, first: &str) -> Result<(Ws, Option<WsServer>)> {
    const MAX_RETRIES: u32 = 5;
    let budget = Instant::now() + Duration::from_secs(120);
    let mut attempt = 0u32;
    loop {
        let err = match client.websocket(dataplane, "/execute/ws").await {
            Err(WsError::Fatal(e)) => return Err(e),
            Err(WsError::Retryable(e)) => e,
            Ok(mut ws) => match first_message(&mut ws, first).await {
                Ok(m) => return Ok((ws, Some(m))),
                Err(e) => e,
            },
        };
        attempt += 1;
        let delay =
            Duration::from_millis(500u64 << (attempt - 1).min(4)).min(Duration::from_secs(8));
        if attempt > MAX_RETRIES || Instant::now() + delay > budget {
            return Err(err);
        }
        tracing::debug!(attempt, error = %err, "retrying the execute");
        tokio::time::sleep(delay).await;
    }
}

async fn first_message(ws: &mut Ws, first: &str) -> Result<WsServer> {
    ws.send(Message::text(first)).await?;
    while let Some(frame) = ws.next().await {
        if let Some(m) = parse_frame(frame?)? {
            return Ok(m);
        }
    }
    Err(anyhow!(
        "the sandbox closed the connection before the command started"
    ))
}

/// One JSON object per text frame; binary frames with JSON are accepted too (§4.4). JSON this
/// client does not understand (a newer server's message types) is skipped, as §4.4.2 asks;
/// a frame that is not JSON at all is an error.
fn parse_frame(frame: Message) -> Result<Option<WsServer>> {
    let bytes: &[u8] = match &frame {
        Message::Text(t) => t.as_bytes(),
        Message::Binary(b) => b,
        _ => return Ok(None),
    };
    match serde_json::from_slice::<WsServer>(bytes) {
        Ok(m) => Ok(Some(m)),
        Err(e) => {
            serde_json::from_slice::<IgnoredAny>(bytes)
                .with_context(|| format!("the sandbox sent a message that is not JSON: {e}"))?;
            tracing::debug!(error = %e, "skipped a message this client does not know");
            Ok(None)
        }
    }
}

async fn send(ws: &mut Ws, msg: &WsControl) -> Result<()> {
    ws.send(Message::text(serde_json::to_string(msg)?))
        .await
        .context("lost the connection to the sandbox")
}

async fn recv_input(rx: &mut Option<mpsc::Receiver<Input>>) -> Option<Input> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// A command's exit code as this process's status: a negative code (killed by signal N) is
/// 128+N, as shells report it.
pub(super) fn exit_status(code: i64) -> u8 {
    let code = if code < 0 {
        128i64.saturating_add(code.saturating_neg())
    } else {
        code
    };
    u8::try_from(code.clamp(0, 255)).unwrap_or(u8::MAX)
}

#[cfg(test)]
mod tests;

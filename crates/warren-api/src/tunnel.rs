//! `GET {D}/tunnel` (LANGSMITH-API.md §5): a binary WebSocket carrying a yamux session in which
//! Warren is the server. Each stream the client opens starts with a 3-byte connect header
//! (`0x01`, then the port as a big-endian u16); Warren dials the port through the control plane
//! (and so through the sandbox's agent), answers one status byte (`0x00` connected, `0x01` not
//! allowed, `0x02` dial failed, `0x03` unsupported version) and then pipes bytes both ways.
//!
//! yamux is the `yamux` crate (HashiCorp's spec, version 0), which accepts what the Python SDK's
//! hand-written client sends: streams opened by WindowUpdate+SYN with delta 0 and data right
//! behind it, no wait for ACKs, 256 KiB initial windows, Ping+SYN answered by Ping+ACK with the
//! same opaque value, GoAway on close. Per-stream backpressure is yamux's flow control: a stream
//! whose sandbox side does not read stops granting window to the client, and one whose client
//! does not read stops being read from the sandbox.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::response::Response;
use bytes::{Buf, Bytes};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::compat::FuturesAsyncReadCompatExt;
use warren_control::{Control, Principal, TunnelError};

use crate::{ApiError, AppState, Caller};

/// The connect header's version byte.
const HEADER_VERSION: u8 = 0x01;
/// Status bytes (§5.3).
const STATUS_OK: u8 = 0x00;
const STATUS_NOT_ALLOWED: u8 = 0x01;
const STATUS_DIAL_FAILED: u8 = 0x02;
const STATUS_BAD_VERSION: u8 = 0x03;
/// How long a new stream may take to send its connect header.
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest yamux data frame Warren sends (the client's 256 KiB window bounds it too).
const FRAME_PAYLOAD: usize = 64 * 1024;
/// Bytes gathered into one WebSocket message before it is sent; well under the client's
/// 1 MiB message limit.
const MESSAGE_MAX: usize = 256 * 1024;
/// Copy buffer per direction of a stream.
const COPY_BUF: usize = 64 * 1024;

pub(crate) async fn tunnel(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: axum::http::HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    // Found (and woken) before the upgrade, so a missing sandbox is a 404, not a closed socket.
    let running = state.control.running_for(&caller, &id).await?;
    let sandbox_id = running.record.id.clone();
    drop(running);
    let control = state.control.clone();
    let principal = caller.0;
    // The middleware authenticated this key; the session re-checks it on every revocation.
    let key = headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .trim()
        .to_owned();
    Ok(upgrade
        .max_message_size(4 << 20)
        .on_upgrade(move |socket| session(control, principal, key, sandbox_id, socket)))
}

/// Serves one yamux session until the client leaves or breaks the protocol, its key is
/// revoked, or the sandbox stops or is deleted (then every stream of it ends with it).
async fn session(
    control: Arc<Control>,
    p: Principal,
    key: String,
    sandbox_id: String,
    socket: WebSocket,
) {
    let mut cfg = yamux::Config::default();
    cfg.set_split_send_size(FRAME_PAYLOAD);
    let mut conn = yamux::Connection::new(WsIo::new(socket), cfg, yamux::Mode::Server);
    let ended = control.session_ended(&key, &sandbox_id);
    tokio::pin!(ended);
    loop {
        let next = tokio::select! {
            n = std::future::poll_fn(|cx| conn.poll_next_inbound(cx)) => n,
            () = &mut ended => {
                tracing::info!(sandbox = %sandbox_id, user = %p.user_name, "tunnel session cut: key revoked or sandbox no longer running");
                // A client that reads nothing must not hold the session open.
                let close = std::future::poll_fn(|cx| conn.poll_close(cx));
                let _ = tokio::time::timeout(Duration::from_secs(5), close).await;
                return;
            }
        };
        match next {
            Some(Ok(stream)) => {
                tokio::spawn(serve_stream(
                    control.clone(),
                    p.clone(),
                    sandbox_id.clone(),
                    stream,
                ));
            }
            Some(Err(e)) => {
                tracing::debug!(error = %e, sandbox = %sandbox_id, "tunnel session ended");
                return;
            }
            None => return,
        }
    }
}

/// One stream: the connect header, the dial, the status byte, then the pipe.
async fn serve_stream(
    control: Arc<Control>,
    p: Principal,
    sandbox_id: String,
    stream: yamux::Stream,
) {
    let mut client = stream.compat();
    let mut header = [0u8; 3];
    match tokio::time::timeout(HEADER_TIMEOUT, client.read_exact(&mut header)).await {
        Ok(Ok(_)) => {}
        _ => return,
    }
    if header[0] != HEADER_VERSION {
        return refuse(&mut client, STATUS_BAD_VERSION).await;
    }
    let port = u16::from_be_bytes([header[1], header[2]]);
    let mut target = match control.open_tunnel_stream(&p, &sandbox_id, port).await {
        Ok(t) => t,
        Err(e) => {
            let status = match &e {
                TunnelError::NotAllowed(_) => STATUS_NOT_ALLOWED,
                TunnelError::Refused(_) | TunnelError::Unavailable(_) => STATUS_DIAL_FAILED,
            };
            tracing::debug!(error = %e, port, sandbox = %sandbox_id, "tunnel stream refused");
            return refuse(&mut client, status).await;
        }
    };
    if client.write_all(&[STATUS_OK]).await.is_err() || client.flush().await.is_err() {
        return;
    }
    let _ = tokio::io::copy_bidirectional_with_sizes(&mut client, &mut target, COPY_BUF, COPY_BUF)
        .await;
}

async fn refuse<S: tokio::io::AsyncWrite + Unpin>(client: &mut S, status: u8) {
    let _ = client.write_all(&[status]).await;
    let _ = client.shutdown().await;
}

/// A WebSocket as the byte stream yamux runs on. Message boundaries mean nothing (§5.1):
/// reads take binary (or text) messages' bytes in order; writes are gathered until yamux
/// flushes and then sent as one binary message.
struct WsIo {
    ws: WebSocket,
    read: Bytes,
    write: Vec<u8>,
    eof: bool,
}

impl WsIo {
    fn new(ws: WebSocket) -> Self {
        Self {
            ws,
            read: Bytes::new(),
            write: Vec::new(),
            eof: false,
        }
    }

    /// Sends the gathered bytes as one message (without flushing the socket).
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.write.is_empty() {
            return Poll::Ready(Ok(()));
        }
        ready!(self.ws.poll_ready_unpin(cx)).map_err(io::Error::other)?;
        let msg = Message::Binary(Bytes::from(std::mem::take(&mut self.write)));
        self.ws.start_send_unpin(msg).map_err(io::Error::other)?;
        Poll::Ready(Ok(()))
    }
}

impl futures_io::AsyncRead for WsIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        loop {
            if !self.read.is_empty() {
                let n = buf.len().min(self.read.len());
                buf[..n].copy_from_slice(&self.read[..n]);
                self.read.advance(n);
                return Poll::Ready(Ok(n));
            }
            if self.eof {
                return Poll::Ready(Ok(0));
            }
            match ready!(self.ws.poll_next_unpin(cx)) {
                Some(Ok(Message::Binary(b))) => self.read = b,
                Some(Ok(Message::Text(t))) => {
                    self.read = Bytes::from(t.as_str().as_bytes().to_vec())
                }
                Some(Ok(Message::Close(_))) | None => self.eof = true,
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                Some(Err(e)) => return Poll::Ready(Err(io::Error::other(e))),
            }
        }
    }
}

impl futures_io::AsyncWrite for WsIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.write.len() >= MESSAGE_MAX {
            ready!(self.poll_send(cx))?;
        }
        let n = buf.len().min(MESSAGE_MAX);
        self.write.extend_from_slice(&buf[..n]);
        Poll::Ready(Ok(n))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_send(cx))?;
        self.ws.poll_flush_unpin(cx).map_err(io::Error::other)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.as_mut().poll_flush(cx))?;
        self.ws.poll_close_unpin(cx).map_err(io::Error::other)
    }
}

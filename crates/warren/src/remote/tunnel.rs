//! `warren tunnel NAME PORT [--local PORT]`: a local listener whose every connection becomes one
//! stream of a yamux session over `{D}/tunnel` (LANGSMITH-API.md §5), like the Python SDK's
//! `sb.tunnel()`. Each stream starts with the connect header (`0x01` + the port, big-endian)
//! and the server's one status byte; a refused stream closes its local connection with a
//! warning. A dead session is reopened when the next local connection arrives.

use std::io;
use std::path::Path;
use std::pin::Pin;
use std::process::ExitCode;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use anyhow::{Context as _, Result, anyhow, bail};
use bytes::{Buf, Bytes};
use clap::Args;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Mutex, mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;
use tokio_util::compat::FuturesAsyncReadCompatExt;

use crate::client::{Client, ConnArgs, Ws, WsError, dataplane};

#[derive(Debug, Args)]
pub(crate) struct TunnelArgs {
    #[command(flatten)]
    conn: ConnArgs,
    /// The sandbox.
    name: String,
    /// TCP port inside the sandbox (on its loopback).
    port: u16,
    /// Local port to listen on at 127.0.0.1 (default: the same as PORT; 0 picks a free one).
    #[arg(long)]
    local: Option<u16>,
}

pub(crate) fn tunnel(data_dir: &Path, args: TunnelArgs) -> Result<ExitCode> {
    if args.port == 0 {
        bail!("PORT must be between 1 and 65535");
    }
    let client = Client::new(&args.conn, data_dir)?;
    crate::tokio_runtime()?.block_on(async move {
        let local = args.local.unwrap_or(args.port);
        let listener = TcpListener::bind(("127.0.0.1", local))
            .await
            .with_context(|| format!("cannot listen on 127.0.0.1:{local}"))?;
        let tunnel = Tunnel::open(client, &args.name, args.port).await?;
        let addr = listener.local_addr()?;
        #[allow(clippy::print_stdout)] // the address is the command's output
        {
            println!("{addr}");
        }
        #[allow(clippy::print_stderr)]
        {
            eprintln!(
                "forwarding {addr} to port {} of sandbox {} (Ctrl-C to stop)",
                args.port, args.name
            );
        }
        tokio::select! {
            r = tunnel.serve(listener) => r?,
            _ = tokio::signal::ctrl_c() => {}
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// Requests for a new stream, answered by the task that drives the session.
type Opener = mpsc::Sender<oneshot::Sender<Result<yamux::Stream, String>>>;

/// One sandbox port reached through a shared yamux session.
#[derive(Debug)]
struct Tunnel {
    client: Client,
    dataplane: String,
    port: u16,
    session: Mutex<Option<Opener>>,
}

impl Tunnel {
    /// Finds the sandbox and opens the session eagerly, so a wrong name or key fails at once.
    async fn open(client: Client, name: &str, port: u16) -> Result<Arc<Self>> {
        let sb = client.get_sandbox(name).await?;
        let dataplane = dataplane(&sb)?.to_owned();
        let t = Arc::new(Self {
            client,
            dataplane,
            port,
            session: Mutex::new(None),
        });
        let opener = t.connect().await?;
        *t.session.lock().await = Some(opener);
        Ok(t)
    }

    async fn connect(&self) -> Result<Opener> {
        let ws = match self.client.websocket(&self.dataplane, "/tunnel").await {
            Ok(ws) => ws,
            Err(WsError::Retryable(e) | WsError::Fatal(e)) => return Err(e),
        };
        let conn =
            yamux::Connection::new(WsIo::new(ws), yamux::Config::default(), yamux::Mode::Client);
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(drive(conn, rx));
        Ok(tx)
    }

    /// A new stream on the session, reopening the session once if it died.
    async fn stream(&self) -> Result<yamux::Stream> {
        let mut session = self.session.lock().await;
        for attempt in 0..2 {
            if session.is_none() || attempt > 0 {
                *session = Some(self.connect().await?);
            }
            let Some(opener) = session.as_ref() else {
                continue;
            };
            let (tx, rx) = oneshot::channel();
            if opener.send(tx).await.is_err() {
                continue;
            }
            match rx.await {
                Ok(Ok(stream)) => return Ok(stream),
                Ok(Err(_)) | Err(_) => continue,
            }
        }
        Err(anyhow!(
            "the tunnel session to the server could not be opened"
        ))
    }

    async fn serve(self: Arc<Self>, listener: TcpListener) -> Result<()> {
        loop {
            let (tcp, _) = listener
                .accept()
                .await
                .context("accepting a local connection")?;
            let t = self.clone();
            tokio::spawn(async move {
                if let Err(e) = t.forward(tcp).await {
                    tracing::warn!("tunnel: {e:#}");
                }
            });
        }
    }

    /// One local connection: a stream, the connect header, the status byte, then the pipe.
    async fn forward(&self, mut tcp: TcpStream) -> Result<()> {
        let mut stream = self.stream().await?.compat();
        let mut header = [0x01, 0, 0];
        header[1..].copy_from_slice(&self.port.to_be_bytes());
        stream.write_all(&header).await?;
        stream.flush().await?;
        let status = stream
            .read_u8()
            .await
            .context("reading the tunnel status")?;
        match status {
            0x00 => {}
            0x01 => bail!("port {} is not allowed", self.port),
            0x02 => bail!(
                "nothing accepted the connection on port {} in the sandbox",
                self.port
            ),
            0x03 => bail!("the server does not speak this tunnel header version"),
            other => bail!("unknown tunnel status {other}"),
        }
        let _ = tokio::io::copy_bidirectional(&mut tcp, &mut stream).await;
        Ok(())
    }
}

/// Drives the session: opens streams on request and keeps reading (window updates, pings).
/// Ends when the session breaks or every opener is gone.
async fn drive(
    mut conn: yamux::Connection<WsIo>,
    mut rx: mpsc::Receiver<oneshot::Sender<Result<yamux::Stream, String>>>,
) {
    let mut pending: Option<oneshot::Sender<Result<yamux::Stream, String>>> = None;
    std::future::poll_fn(|cx| {
        loop {
            if pending.is_none() {
                match rx.poll_recv(cx) {
                    Poll::Ready(Some(tx)) => pending = Some(tx),
                    Poll::Ready(None) => return Poll::Ready(()),
                    Poll::Pending => {}
                }
            }
            if pending.is_some()
                && let Poll::Ready(r) = conn.poll_new_outbound(cx)
            {
                if let Some(tx) = pending.take() {
                    let _ = tx.send(r.map_err(|e| e.to_string()));
                }
                continue;
            }
            match conn.poll_next_inbound(cx) {
                // The server opens no streams; one it opens anyway is dropped.
                Poll::Ready(Some(Ok(_))) => {}
                Poll::Ready(Some(Err(_)) | None) => return Poll::Ready(()),
                Poll::Pending => return Poll::Pending,
            }
        }
    })
    .await;
}

/// Bytes gathered into one WebSocket message before it is sent.
const MESSAGE_MAX: usize = 256 * 1024;

/// The WebSocket as the byte stream yamux runs on; message boundaries mean nothing.
struct WsIo {
    ws: Ws,
    read: Bytes,
    write: Vec<u8>,
    eof: bool,
}

impl WsIo {
    fn new(ws: Ws) -> Self {
        Self {
            ws,
            read: Bytes::new(),
            write: Vec::new(),
            eof: false,
        }
    }

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
                Some(Ok(_)) => {}
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::test_server::TestServer;

    #[tokio::test]
    async fn local_connections_reach_the_fake_echo_port_and_a_closed_port_closes() {
        let server = TestServer::start().await;
        server.sandbox("tun").await;
        let echo = Tunnel::open(server.client(), "tun", 7).await.unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(echo.serve(listener));
        // Two connections at once, each its own stream.
        let mut a = TcpStream::connect(addr).await.unwrap();
        let mut b = TcpStream::connect(addr).await.unwrap();
        a.write_all(b"first").await.unwrap();
        b.write_all(b"second").await.unwrap();
        let mut got = [0u8; 6];
        b.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"second");
        let mut got = [0u8; 5];
        a.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"first");

        let closed = Tunnel::open(server.client(), "tun", 8080).await.unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(closed.serve(listener));
        let mut c = TcpStream::connect(addr).await.unwrap();
        let mut rest = Vec::new();
        let n = tokio::time::timeout(std::time::Duration::from_secs(10), c.read_to_end(&mut rest))
            .await
            .expect("a refused stream closes the local connection")
            .unwrap_or(0);
        assert_eq!(n, 0);
    }
}

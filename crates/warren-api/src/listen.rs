//! The accept loop: HTTP/1.1 on hyper with the bounds `axum::serve` lacks. A client gets
//! [`ListenConfig::header_read_timeout`] to send each request head, which also closes idle
//! keep-alive connections; at most [`ListenConfig::max_connections`] connections are open at
//! once, counted until their socket closes (a WebSocket holds its slot for its whole life);
//! past the cap a new connection gets a fast 503 and is closed, so the daemon's file
//! descriptors stay with the connections and sandboxes it already has.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{mpsc, watch};
use warren_control::Control;

/// Bounds of the listener.
#[derive(Debug, Clone)]
pub struct ListenConfig {
    /// Most client connections open at once.
    pub max_connections: usize,
    /// Time a client has to send a request head, from connect or from the end of its previous
    /// response: slow (slowloris) and idle keep-alive connections are closed after it.
    pub header_read_timeout: Duration,
    /// After the shutdown signal, how long in-flight requests get to finish.
    pub shutdown_grace: Duration,
}

impl Default for ListenConfig {
    fn default() -> Self {
        Self {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            header_read_timeout: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

/// Default cap on open client connections.
pub const DEFAULT_MAX_CONNECTIONS: usize = 8192;

/// File descriptors the daemon keeps for itself: the state database, logs, the listener,
/// accepts in progress, image builds.
pub const RESERVED_FDS: u64 = 512;

/// File descriptors the daemon sets aside per sandbox. A running sandbox holds none while it
/// idles (measured); its boot, stop and the sweeper's calls to its agent hold a few for a
/// moment. Connections to the agent made for a client request are counted with the client's
/// connection in [`connection_cap_for`].
pub const FDS_PER_SANDBOX: u64 = 2;

/// The connection cap that fits a descriptor budget of `nofile` next to `max_sandboxes`
/// running sandboxes. Each connection can hold two descriptors: its socket and a connection to
/// its sandbox's agent.
pub fn connection_cap_for(nofile: u64, max_sandboxes: usize) -> usize {
    let sandboxes = u64::try_from(max_sandboxes)
        .unwrap_or(u64::MAX)
        .saturating_mul(FDS_PER_SANDBOX);
    let left = nofile
        .saturating_sub(RESERVED_FDS)
        .saturating_sub(sandboxes);
    usize::try_from(left / 2).unwrap_or(usize::MAX)
}

/// The answer to a connection over the cap, written straight to the socket: no request is
/// parsed for it. Its body is the API's error shape, so SDKs report it like any other 503.
static OVER_CAP_RESPONSE: LazyLock<Vec<u8>> = LazyLock::new(|| {
    let body = r#"{"detail":{"error":"ServiceUnavailable","message":"too many open connections; retry later"}}"#;
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
         retry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
});

/// Rejected connections being answered at once; past this they are closed without an answer,
/// so a flood of connections cannot make the rejections themselves hold descriptors.
const MAX_LINGERING_REJECTS: usize = 64;
/// How long a rejected connection is kept to read (and discard) its request before closing,
/// so the close does not reset the connection before the client reads the 503.
const REJECT_LINGER: Duration = Duration::from_millis(500);
/// Most bytes read from a rejected connection before closing it.
const REJECT_LINGER_BYTES: usize = 64 << 10;
/// Pause after an accept error such as EMFILE, so a full descriptor table is not a busy loop.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(50);

/// Pending connections the kernel queues before Warren accepts them (capped by the host's
/// `net.core.somaxconn`). A burst of connects larger than the queue loses SYNs, which clients
/// retry only after a second.
const LISTEN_BACKLOG: u32 = 4096;

/// A listening socket on `addr` with a backlog that absorbs bursts of connects.
pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Serves `router` on `listener` until `shutdown` resolves, then lets in-flight requests finish
/// for at most [`ListenConfig::shutdown_grace`]. Connections are counted in `control`'s
/// metrics.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    control: Arc<Control>,
    cfg: ListenConfig,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(cfg.header_read_timeout)
        .keep_alive(true);
    let http = Arc::new(http);
    let (stop_tx, stop_rx) = watch::channel(false);
    // Every connection task holds a clone; `recv` returns `None` once all have ended.
    let (alive_tx, mut alive_rx) = mpsc::channel::<()>(1);
    let lingering = Arc::new(AtomicUsize::new(0));
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // ECONNABORTED and friends concern one connection; EMFILE/ENFILE pass as
                    // connections close.
                    tracing::warn!(error = %e, "failed to accept a connection");
                    tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                    continue;
                }
            },
        };
        if !control.metrics().try_open_connection(cfg.max_connections) {
            tracing::debug!(%peer, cap = cfg.max_connections, "connection over the cap refused");
            reject(stream, &lingering);
            continue;
        }
        // Small WebSocket and SSE frames go out when written.
        let _ = stream.set_nodelay(true);
        let io = TokioIo::new(Counted {
            stream,
            _slot: Slot(control.clone()),
        });
        let service = TowerToHyperService::new(router.clone());
        let http = http.clone();
        let mut stop = stop_rx.clone();
        let alive = alive_tx.clone();
        let control = control.clone();
        tokio::spawn(async move {
            let _alive = alive;
            let conn = http.serve_connection(io, service).with_upgrades();
            tokio::pin!(conn);
            let stopping = async move {
                let _ = stop.wait_for(|s| *s).await;
            };
            let result = tokio::select! {
                r = conn.as_mut() => r,
                () = stopping => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = result {
                if e.is_timeout() {
                    control.metrics().connection_timed_out();
                } else {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
            }
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    drop(alive_tx);
    if tokio::time::timeout(cfg.shutdown_grace, alive_rx.recv())
        .await
        .is_err()
    {
        tracing::warn!(
            grace_secs = cfg.shutdown_grace.as_secs(),
            "connections still open at shutdown were dropped"
        );
    }
    Ok(())
}

/// Answers a connection over the cap with a 503 and closes it.
fn reject(mut stream: TcpStream, lingering: &Arc<AtomicUsize>) {
    // A fresh socket's send buffer is empty: the short answer goes out without waiting.
    let _ = stream.try_write(&OVER_CAP_RESPONSE);
    let admitted = lingering
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < MAX_LINGERING_REJECTS).then_some(n + 1)
        })
        .is_ok();
    if !admitted {
        return;
    }
    // Closing a socket with unread input resets it, and a reset can discard the 503 before
    // the client reads it: send FIN, read what the client sent for a moment, then close.
    let lingering = lingering.clone();
    tokio::spawn(async move {
        let _ = stream.shutdown().await;
        let mut sink = [0u8; 4096];
        let mut left = REJECT_LINGER_BYTES;
        let _ = tokio::time::timeout(REJECT_LINGER, async {
            while left > 0 {
                match stream.read(&mut sink).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => left = left.saturating_sub(n),
                }
            }
        })
        .await;
        drop(stream);
        lingering.fetch_sub(1, Ordering::AcqRel);
    });
}

/// A connection's slot under the cap, released when the socket closes.
struct Slot(Arc<Control>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.metrics().connection_closed();
    }
}

/// A client socket that holds its [`Slot`]: hyper hands the socket to an upgraded WebSocket,
/// so the slot is released exactly when the descriptor is closed.
struct Counted {
    stream: TcpStream,
    _slot: Slot,
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_over_cap_answer_is_a_complete_503() {
        let text = String::from_utf8(OVER_CAP_RESPONSE.clone()).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 503 "), "{head}");
        assert!(
            head.contains(&format!("content-length: {}", body.len())),
            "{head}"
        );
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["detail"]["error"], "ServiceUnavailable");
    }

    #[test]
    fn the_cap_leaves_descriptors_for_sandboxes() {
        // 20000 - 512 reserved - 2000 sandboxes x 2 = 15488, half of it per connection pair.
        assert_eq!(connection_cap_for(20_000, 2000), 7744);
        assert_eq!(connection_cap_for(1024, 2000), 0, "no budget left");
        assert_eq!(
            connection_cap_for(20_000, usize::MAX),
            0,
            "saturates, never wraps"
        );
    }
}

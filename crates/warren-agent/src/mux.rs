//! Many agent connections over the microVM's one virtio-serial byte stream, as yamux streams.
//!
//! The supervisor (host side, [`mux`]) is the yamux client: every connection a host client makes
//! to the jail's `agent.sock` becomes one outbound stream. The guest agent ([`serve_session`]) is
//! the server: every inbound stream is served by the same per-connection handler as a jail
//! agent's socket, through a socket pair, so `conn` knows nothing of yamux. Both functions take
//! any byte stream, which lets tests join them with a `UnixStream::pair()`.
//!
//! The guest is untrusted: whatever it sends, the supervisor's worst outcome is that the session
//! fails and the supervisor exits (which stops the VM); it never panics on it.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio_util::compat::{FuturesAsyncReadCompatExt, TokioAsyncReadCompatExt};

use crate::conn;
use crate::registry::Agent;

/// The yamux settings of both ends. The defaults (256 KiB window per stream, at most 512
/// streams) are what both ends assume; they are set here once so the two cannot drift apart.
/// Pause before a new session after the last one ended. While no host is connected a read of
/// the virtio port returns 0 at once, so this is what keeps the wait from spinning.
const SESSION_RETRY: std::time::Duration = std::time::Duration::from_millis(100);

fn config() -> yamux::Config {
    yamux::Config::default()
}

/// Carries every connection accepted on `listener` as a new stream over `io` until the yamux
/// session ends: `Ok` when the guest closed it cleanly, `Err` when it broke.
pub(crate) async fn mux<T>(io: T, listener: &UnixListener) -> Result<(), yamux::ConnectionError>
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    let mut session = yamux::Connection::new(io.compat(), config(), yamux::Mode::Client);
    // Clients accepted while yamux cannot open another stream yet (its backlog of streams the
    // guest has not acknowledged is full, e.g. while the guest still boots) wait here in order.
    let mut waiting: VecDeque<UnixStream> = VecDeque::new();
    poll_fn(|cx| {
        loop {
            // An accept error (out of descriptors for a moment) is skipped: the session's own
            // wakeups poll the listener again soon, and a spinning PID 1 would starve the VM.
            if let Poll::Ready(Ok((client, _))) = listener.poll_accept(cx) {
                waiting.push_back(client);
                continue;
            }
            if !waiting.is_empty()
                && let Poll::Ready(opened) = session.poll_new_outbound(cx)
            {
                let stream = opened?;
                if let Some(client) = waiting.pop_front() {
                    tokio::spawn(splice(client, stream));
                }
                continue;
            }
            // Polling for inbound streams is what drives the session (reads, writes, window
            // updates). The guest has no business opening streams: one it opens is dropped,
            // which resets it.
            match session.poll_next_inbound(cx) {
                Poll::Ready(Some(Ok(_))) => {}
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(e)),
                Poll::Ready(None) => return Poll::Ready(Ok(())),
                Poll::Pending => return Poll::Pending,
            }
        }
    })
    .await
}

/// Serves every stream the host opens over `io` until the yamux session ends: `Ok` when the
/// host closed it or went away (EOF), `Err` when it broke. Streams already open keep being
/// served by their own tasks until they fail.
pub(crate) async fn serve_session<T>(
    agent: &Arc<Agent>,
    io: T,
) -> Result<(), yamux::ConnectionError>
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    let mut session = yamux::Connection::new(io.compat(), config(), yamux::Mode::Server);
    loop {
        match poll_fn(|cx| session.poll_next_inbound(cx)).await {
            Some(Ok(stream)) => {
                tokio::spawn(serve_stream(Arc::clone(agent), stream));
            }
            Some(Err(yamux::ConnectionError::Closed)) | None => return Ok(()),
            Some(Err(e)) => return Err(e),
        }
    }
}

/// Runs one yamux session after another on the byte streams `io` returns. A session ends
/// when the host goes away (a read of 0) or breaks the protocol; the next one starts fresh
/// for the next host.
pub(crate) async fn serve_port<T, F>(agent: &Arc<Agent>, mut io: F) -> anyhow::Result<()>
where
    F: FnMut() -> T,
    T: AsyncRead + AsyncWrite + Unpin,
{
    loop {
        let _ = serve_session(agent, io()).await;
        tokio::time::sleep(SESSION_RETRY).await;
    }
}

/// One host connection inside the guest: the ordinary connection handler on one end of a
/// socket pair, the yamux stream spliced to the other.
async fn serve_stream(agent: Arc<Agent>, stream: yamux::Stream) {
    // Out of descriptors: dropping the stream resets it, which the host client sees as a
    // closed connection, as it would on a jail agent that cannot accept.
    let Ok((handler_end, our_end)) = UnixStream::pair() else {
        return;
    };
    tokio::spawn(conn::serve(agent, handler_end));
    splice(our_end, stream).await;
}

/// A yamux stream that notes why its read side ended: a FIN (the peer half-closed and still
/// reads) or a reset, when the stream is closed both ways (the peer hung up entirely). yamux
/// reads both as end of file; the difference decides whether the local peer is half-closed
/// or hung up on, which is what tells the agent a client left (`kill_on_disconnect`).
struct Watched {
    inner: yamux::Stream,
    hung_up: Arc<AtomicBool>,
}

impl futures_io::AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<std::io::Result<usize>> {
        let read = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(read, Poll::Ready(Ok(0))) && self.inner.is_closed() {
            self.hung_up.store(true, Ordering::Relaxed);
        }
        read
    }
}

impl futures_io::AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_close(cx)
    }
}

/// Copies between a local socket and a yamux stream until both directions are done or either
/// fails. A half-close is passed on as one (EOF one way shuts down writing the same way),
/// because clients half-close to say "no more input" and keep reading. A hang-up is passed on
/// as one too: a local peer that closed entirely resets the stream (it is dropped unclosed),
/// and a reset stream closes the local socket, so the agent behind it sees its client leave.
pub(crate) async fn splice(mut local: UnixStream, remote: yamux::Stream) {
    let hung_up = Arc::new(AtomicBool::new(false));
    let remote = Watched {
        inner: remote,
        hung_up: Arc::clone(&hung_up),
    }
    .compat();
    let (mut remote_rd, mut remote_wr) = tokio::io::split(remote);
    let (mut local_rd, mut local_wr) = local.split();
    let gone = || std::io::Error::from(std::io::ErrorKind::BrokenPipe);
    let out = async {
        tokio::io::copy(&mut local_rd, &mut remote_wr).await?;
        if conn::hung_up(local_rd.as_ref()) {
            return Err(gone());
        }
        remote_wr.shutdown().await?;
        conn::wait_for_hangup(local_rd.as_ref()).await;
        Err::<(), _>(gone())
    };
    let back = async {
        tokio::io::copy(&mut remote_rd, &mut local_wr).await?;
        if hung_up.load(Ordering::Relaxed) {
            return Err(gone());
        }
        local_wr.shutdown().await?;
        // Keep going until the other direction ends too (by its peer hanging up).
        std::future::pending::<std::io::Result<()>>().await
    };
    let _ = tokio::try_join!(out, back);
}

#[cfg(test)]
mod tests;

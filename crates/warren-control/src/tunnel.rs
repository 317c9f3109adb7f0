//! Tunnels: one TCP connection to a port on a sandbox's loopback per client stream, carried by
//! the sandbox's agent. Each stream wakes a stopped sandbox like exec does, keeps it from idling
//! out while it is open, and is audited with its byte counts when it closes.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use warren_driver::{DriverError, ErrorKind, PortStream};

use crate::control::Control;
use crate::error::ControlError;
use crate::state::ActivityGuard;
use crate::store::Principal;

/// Why a tunnel stream could not be opened, in the terms of the tunnel's status byte.
#[derive(Debug, thiserror::Error)]
pub enum TunnelError {
    /// The sandbox is not the caller's, does not exist, or the port is not one that can be
    /// dialled (0).
    #[error("{0}")]
    NotAllowed(String),
    /// Nothing listens on the port inside the sandbox, or the dial failed there.
    #[error("{0}")]
    Refused(String),
    /// The sandbox could not be made ready or its agent could not be reached.
    #[error(transparent)]
    Unavailable(ControlError),
}

/// What a port stream carries, for its metrics and audit entry.
#[derive(Debug, Clone)]
pub(crate) enum StreamKind {
    /// A tunnel stream (`/tunnel`).
    Tunnel,
    /// One request proxied to a service URL: which (method and path), and whether it is a
    /// signed-in session's, which its port's login grant admitted just now (it may admit
    /// users who cannot see the sandbox: `access: workspace`).
    Service {
        /// Method and path.
        what: String,
        /// A login-mode session's request.
        signed_in: bool,
    },
}

/// An open tunnel stream: bytes written go to the sandbox port, bytes read come from it.
/// Dropping it closes the connection, writes the audit entry and updates the metrics.
#[derive(Debug)]
pub struct TunnelStream {
    inner: PortStream,
    up: u64,
    down: u64,
    port: u16,
    sandbox_id: String,
    principal: Principal,
    control: Arc<Control>,
    kind: StreamKind,
    _guard: ActivityGuard,
}

impl Control {
    /// Resolves when a long-lived session that `key` opened on a sandbox must end: the key was
    /// revoked, or the sandbox is no longer ready (stopped, deleted, failed). Checked again on
    /// every revocation and every status change, never by polling.
    pub async fn session_ended(&self, key: &str, sandbox_id: &str) {
        let mut revocations = self.revocations.subscribe();
        let mut changes = self.changes.subscribe();
        loop {
            let ready = matches!(
                crate::store::Store::get_sandbox(&*self.store, sandbox_id),
                Ok(Some(r)) if r.status == warren_types::SandboxStatus::Ready
            );
            if !ready || !matches!(self.authenticate(key), Ok(Some(_))) {
                return;
            }
            tokio::select! {
                r = revocations.changed() => if r.is_err() { return },
                r = changes.changed() => if r.is_err() { return },
            }
        }
    }

    /// Opens a stream to `port` on the loopback of a sandbox the caller may use (waking it if
    /// stopped).
    pub async fn open_tunnel_stream(
        self: &Arc<Self>,
        p: &Principal,
        sandbox_id: &str,
        port: u16,
    ) -> Result<TunnelStream, TunnelError> {
        self.open_port_stream(p, sandbox_id, port, StreamKind::Tunnel)
            .await
    }

    /// Opens a stream to a sandbox port for a tunnel or a service request.
    pub(crate) async fn open_port_stream(
        self: &Arc<Self>,
        p: &Principal,
        sandbox_id: &str,
        port: u16,
        kind: StreamKind,
    ) -> Result<TunnelStream, TunnelError> {
        if port == 0 {
            self.metrics.tunnel_refused();
            return Err(TunnelError::NotAllowed("port 0 cannot be tunnelled".into()));
        }
        let rec = match kind {
            StreamKind::Service {
                signed_in: true, ..
            } => crate::store::Store::get_sandbox(&*self.store, sandbox_id)
                .map_err(ControlError::from)
                .and_then(|r| {
                    r.ok_or_else(|| {
                        ControlError::NotFound(format!("Sandbox '{sandbox_id}' not found"))
                    })
                }),
            _ => self.visible_record(p, sandbox_id),
        }
        .map_err(|e| {
            self.metrics.tunnel_refused();
            TunnelError::NotAllowed(e.to_string())
        })?;
        let running = self
            .running(&rec.id)
            .await
            .map_err(TunnelError::Unavailable)?;
        let inner = match self.driver.connect_port(&running.handle, port).await {
            Ok(s) => s,
            Err(DriverError::Agent(e)) => {
                self.metrics.tunnel_refused();
                return Err(match e.kind {
                    ErrorKind::BadRequest => TunnelError::NotAllowed(e.message),
                    _ => TunnelError::Refused(e.message),
                });
            }
            Err(e) => {
                return Err(TunnelError::Unavailable(
                    self.agent_failed(&running, e).await,
                ));
            }
        };
        match kind {
            StreamKind::Tunnel => self.metrics.tunnel_opened(),
            StreamKind::Service { .. } => self.metrics.service_opened(),
        }
        Ok(TunnelStream {
            inner,
            up: 0,
            down: 0,
            port,
            sandbox_id: running.record.id.clone(),
            principal: p.clone(),
            control: self.clone(),
            kind,
            _guard: running.guard,
        })
    }
}

impl TunnelStream {
    /// Bytes sent to the sandbox port so far.
    pub fn bytes_up(&self) -> u64 {
        self.up
    }

    /// Bytes received from the sandbox port so far.
    pub fn bytes_down(&self) -> u64 {
        self.down
    }
}

impl Drop for TunnelStream {
    fn drop(&mut self) {
        let (action, what) = match &self.kind {
            StreamKind::Tunnel => {
                self.control.metrics.tunnel_closed(self.up, self.down);
                ("tunnel", String::new())
            }
            StreamKind::Service { what, .. } => {
                self.control.metrics.service_closed(self.up, self.down);
                ("service", format!(" {what}"))
            }
        };
        let detail = format!(
            "port {}{what} up {} bytes down {} bytes",
            self.port, self.up, self.down
        );
        self.control.audit(
            Some(&self.principal),
            action,
            Some(&self.sandbox_id),
            Some(detail),
        );
    }
}

impl AsyncRead for TunnelStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        self.down += (buf.filled().len() - before) as u64;
        r
    }
}

impl AsyncWrite for TunnelStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = r {
            self.up += n as u64;
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

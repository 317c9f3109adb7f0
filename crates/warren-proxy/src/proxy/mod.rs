//! The proxy listeners. The daemon starts each once, for all sandboxes (not one per sandbox):
//! - the explicit proxy port (`HTTP_PROXY`/`HTTPS_PROXY`): absolute-form HTTP requests are
//!   forwarded, CONNECT opens a tunnel;
//! - the transparent HTTP port, where the host redirects sandboxes' port-80 connections: the
//!   Host header names the destination;
//! - the transparent TLS port, where the host redirects port-443 connections: the SNI of the
//!   TLS ClientHello names the destination, and the ClientHello is replayed to it untouched.
//!
//! Every connection is tied to a sandbox by its source address ([`SandboxLookup`]); a source
//! that is no sandbox's is closed at once. Every destination is judged by the sandbox's
//! [`Policy`](crate::policy::Policy) and dialed only at addresses the resolver permitted
//! ([`crate::resolve`]), never at one the client chose for a name. Each connection (each
//! request, for plain HTTP) is reported to [`Events`].
//!
//! Refusals: HTTP 403 naming the proxy and the rule
//! (`warren egress proxy refused example.org:443: not in allow_list`), CONNECT included; a
//! refused transparent TLS connection is closed, as there is no way to answer in the clear.
//!
//! A TLS connection (CONNECT or transparent) to a host that one of the sandbox's credential
//! rules covers is intercepted to add the rule's headers (`mitm`); plain HTTP requests get
//! them as they pass. Every other TLS connection is spliced untouched.

mod callback;
mod http;
mod meter;
mod mitm;
mod tls;
mod upstream;
mod wire;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::{debug, warn};

use crate::events::{ConnectionEvent, Events, Via};
use crate::policy::{Decision, Destination};
use crate::resolve::Resolve;
use crate::sandbox::{SandboxLookup, SandboxPolicy};

use upstream::{Failure, Route};

pub use callback::{CallbackSigner, SIGNATURE_HEADER};
pub use mitm::upstream_tls;

/// Pause after a failed `accept`, so a persistent error (out of descriptors) does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Limits and timings of the proxy listeners.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// How long connecting to an upstream may take, over all its addresses.
    pub connect_timeout: Duration,
    /// How long a connection may sit with no byte moving either way.
    pub idle_timeout: Duration,
    /// How long a client has to send a request's headers (or a TLS ClientHello).
    pub header_read_timeout: Duration,
    /// How long the host's resolver may take.
    pub resolve_timeout: Duration,
    /// Most bytes of request (or response) headers, and of a TLS ClientHello.
    pub max_header_bytes: usize,
    /// Most open client connections over all listeners and sandboxes; further connections
    /// wait in the listen backlog.
    pub max_connections: usize,
    /// Most open client connections of one sandbox; further ones are closed at once.
    pub max_connections_per_sandbox: usize,
    /// The port connections reaching the transparent HTTP listener were bound for (80 when
    /// the host redirects port 80 there).
    pub transparent_http_port: u16,
    /// The port connections reaching the transparent TLS listener were bound for (443).
    pub transparent_tls_port: u16,
    /// How the proxy verifies upstreams when it intercepts TLS for a credential rule
    /// ([`upstream_tls`]); `None` refuses connections that a rule would intercept.
    pub upstream_tls: Option<Arc<rustls::ClientConfig>>,
    /// The key callback calls are signed with; `None` refuses requests a callback covers.
    pub callback_signer: Option<Arc<CallbackSigner>>,
    /// How long a callback may take to answer.
    pub callback_timeout: Duration,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(300),
            header_read_timeout: Duration::from_secs(10),
            resolve_timeout: Duration::from_secs(5),
            max_header_bytes: 64 * 1024,
            max_connections: 4096,
            max_connections_per_sandbox: 256,
            transparent_http_port: 80,
            transparent_tls_port: 443,
            upstream_tls: None,
            callback_signer: None,
            callback_timeout: Duration::from_secs(5),
        }
    }
}

/// The egress proxy. Cheap to clone; start each listener once with one of the `serve_*`
/// methods, each on its own task. They run until the task is dropped.
#[derive(Clone)]
pub struct Proxy {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy")
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}

struct Shared {
    config: ProxyConfig,
    lookup: Arc<dyn SandboxLookup>,
    resolver: Arc<dyn Resolve>,
    events: Arc<dyn Events>,
    connections: Arc<Semaphore>,
    per_sandbox: Mutex<HashMap<String, usize>>,
    callbacks: callback::AnswerCache,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Listener {
    Explicit,
    TransparentHttp,
    TransparentTls,
}

impl Proxy {
    /// A proxy that finds sandboxes with `lookup`, resolves names with `resolver` and reports
    /// connections to `events`.
    pub fn new(
        config: ProxyConfig,
        lookup: Arc<dyn SandboxLookup>,
        resolver: Arc<dyn Resolve>,
        events: Arc<dyn Events>,
    ) -> Self {
        let connections = Arc::new(Semaphore::new(config.max_connections));
        let shared = Shared {
            config,
            lookup,
            resolver,
            events,
            connections,
            per_sandbox: Mutex::new(HashMap::new()),
            callbacks: callback::AnswerCache::default(),
        };
        Self {
            shared: Arc::new(shared),
        }
    }

    /// Serves the explicit proxy port (absolute-form HTTP and CONNECT) on `listener`.
    pub async fn serve_explicit(self, listener: TcpListener) {
        self.accept_loop(listener, Listener::Explicit).await
    }

    /// Serves the transparent HTTP port (connections redirected from port 80) on `listener`.
    pub async fn serve_transparent_http(self, listener: TcpListener) {
        self.accept_loop(listener, Listener::TransparentHttp).await
    }

    /// Serves the transparent TLS port (connections redirected from port 443) on `listener`.
    pub async fn serve_transparent_tls(self, listener: TcpListener) {
        self.accept_loop(listener, Listener::TransparentTls).await
    }

    async fn accept_loop(self, listener: TcpListener, kind: Listener) {
        loop {
            let Ok(permit) = self.shared.connections.clone().acquire_owned().await else {
                return; // the semaphore is never closed
            };
            let (stream, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(err) => {
                    warn!(?err, listener = ?kind, "proxy: failed to accept a connection");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            };
            let Some(client) = Client::admit(&self.shared, peer, permit, kind) else {
                continue;
            };
            tokio::spawn(async move {
                // Small writes (TLS records, request lines) should not wait for Nagle.
                let _ = stream.set_nodelay(true);
                match kind {
                    Listener::Explicit => http::serve(client, stream, http::Mode::Explicit).await,
                    Listener::TransparentHttp => {
                        http::serve(client, stream, http::Mode::Transparent).await
                    }
                    Listener::TransparentTls => tls::serve(client, stream).await,
                }
            });
        }
    }
}

/// One client connection from a known sandbox; it holds the connection's slots in the limits
/// until the last clone (a tunnel may outlive the HTTP connection it came from) is dropped.
struct Client {
    shared: Arc<Shared>,
    sandbox: Arc<SandboxPolicy>,
    peer: SocketAddr,
    _permit: OwnedSemaphorePermit,
}

impl Client {
    /// Ties a new connection to its sandbox, or refuses it: an unknown source, or a sandbox
    /// already at its connection limit.
    fn admit(
        shared: &Arc<Shared>,
        peer: SocketAddr,
        permit: OwnedSemaphorePermit,
        kind: Listener,
    ) -> Option<Arc<Self>> {
        let source = peer.ip().to_canonical();
        let Some(sandbox) = shared.lookup.lookup(source) else {
            debug!(%peer, listener = ?kind, "proxy: connection from an address that is no sandbox's");
            return None;
        };
        let mut counts = shared
            .per_sandbox
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let count = counts.entry(sandbox.sandbox_id.clone()).or_insert(0);
        if *count >= shared.config.max_connections_per_sandbox {
            debug!(sandbox_id = %sandbox.sandbox_id, "proxy: sandbox at its connection limit");
            return None;
        }
        *count += 1;
        drop(counts);
        Some(Arc::new(Self {
            shared: shared.clone(),
            sandbox,
            peer,
            _permit: permit,
        }))
    }

    fn config(&self) -> &ProxyConfig {
        &self.shared.config
    }

    /// Reports a connection the policy refused.
    fn refused(&self, attempt: Attempt, rule: String) {
        debug!(sandbox_id = %self.sandbox.sandbox_id, peer = %self.peer, host = %attempt.host,
            port = attempt.port, %rule, "proxy: refused");
        self.report(attempt.event(
            &self.sandbox.sandbox_id,
            Decision::Deny { rule: rule.clone() },
            rule,
        ));
    }

    /// Reports a connection that could not be opened: refused, or allowed but unreachable.
    fn failed(&self, attempt: Attempt, failure: Failure) {
        match failure {
            Failure::Refused { rule } => self.refused(attempt, rule),
            Failure::Unreachable { rule, error } => {
                debug!(sandbox_id = %self.sandbox.sandbox_id, host = %attempt.host,
                    port = attempt.port, %error, "proxy: upstream unreachable");
                let mut event = attempt.event(&self.sandbox.sandbox_id, Decision::Allow, rule);
                event.error = Some(error);
                self.report(event);
            }
        }
    }

    /// Reports an allowed connection that has ended.
    fn finished(&self, attempt: Attempt, route: &Route, error: Option<String>) {
        let mut event = attempt.event(
            &self.sandbox.sandbox_id,
            Decision::Allow,
            route.rule.clone(),
        );
        event.upstream = Some(route.addr);
        event.bytes_up = route.counters.up();
        event.bytes_down = route.counters.down();
        event.error = error;
        self.report(event);
    }

    fn report(&self, event: ConnectionEvent) {
        self.shared.events.connection(event);
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        let mut counts = self
            .shared
            .per_sandbox
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = counts.get_mut(&self.sandbox.sandbox_id) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                counts.remove(&self.sandbox.sandbox_id);
            }
        }
    }
}

/// What an event needs to know from the start of one proxied connection or request.
struct Attempt {
    via: Via,
    host: String,
    port: u16,
    started: Instant,
}

impl Attempt {
    fn new(via: Via, host: impl Into<String>, port: u16) -> Self {
        Self {
            via,
            host: host.into(),
            port,
            started: Instant::now(),
        }
    }

    /// Reports the destination in its normalized form from now on.
    fn named(mut self, dest: &Destination) -> Self {
        self.host = dest.host().to_string();
        self
    }

    fn event(self, sandbox: &str, decision: Decision, rule: String) -> ConnectionEvent {
        ConnectionEvent {
            sandbox: sandbox.to_owned(),
            via: self.via,
            host: self.host,
            port: self.port,
            decision,
            rule,
            upstream: None,
            bytes_up: 0,
            bytes_down: 0,
            duration: self.started.elapsed(),
            error: None,
        }
    }
}

//! What the proxy reports about each connection, for the audit log and metrics.

use std::net::SocketAddr;
use std::time::Duration;

use crate::policy::Decision;

/// Which listener handled a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// An absolute-form request on the explicit proxy port.
    HttpProxy,
    /// A CONNECT tunnel on the explicit proxy port.
    Connect,
    /// A connection redirected from port 80, routed by its Host header.
    TransparentHttp,
    /// A connection redirected from port 443, routed by its TLS SNI.
    TransparentTls,
}

/// One connection (one request, for plain HTTP) through the proxy, reported when it ends.
#[derive(Debug, Clone)]
pub struct ConnectionEvent {
    /// The sandbox it came from.
    pub sandbox: String,
    /// The listener that handled it.
    pub via: Via,
    /// The destination host: normalized (a lowercase name, or an IP address, IPv6 in
    /// brackets), as the client wrote it when it is not a valid host, empty when a TLS
    /// ClientHello had no SNI.
    pub host: String,
    /// The destination port.
    pub port: u16,
    /// Allowed or refused.
    pub decision: Decision,
    /// The rule that decided: for a refusal the reason given to the client, for an allow the
    /// entry (or default) that let it through.
    pub rule: String,
    /// The upstream address connected to, when there was one.
    pub upstream: Option<SocketAddr>,
    /// Bytes sent to the upstream.
    pub bytes_up: u64,
    /// Bytes received from the upstream.
    pub bytes_down: u64,
    /// From the decision to the end of the connection.
    pub duration: Duration,
    /// Why an allowed connection failed (no address, connect error, upstream error), if it did.
    pub error: Option<String>,
}

/// Receives connection events. Called on the connection's task: keep it quick.
pub trait Events: Send + Sync {
    /// One connection ended (or was refused).
    fn connection(&self, event: ConnectionEvent);
}

impl<F> Events for F
where
    F: Fn(ConnectionEvent) + Send + Sync,
{
    fn connection(&self, event: ConnectionEvent) {
        self(event)
    }
}

//! Opening the upstream side of a proxied connection: policy, resolution, then a TCP connect
//! to a permitted address only.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpStream;
use tokio::time::Instant;

use super::Client;
use super::meter::Counters;
use crate::policy::Destination;
use crate::resolve::{ResolveError, permitted_addresses};

/// Why no upstream connection was opened.
#[derive(Debug)]
pub(super) enum Failure {
    /// The policy refuses the destination (or every address its name resolves to).
    Refused { rule: String },
    /// The policy allows it, but it cannot be resolved or connected to.
    Unreachable { rule: String, error: String },
}

/// Where an allowed connection went, and the bytes it carried.
#[derive(Debug, Clone)]
pub(super) struct Route {
    pub(super) addr: SocketAddr,
    pub(super) rule: String,
    pub(super) counters: Arc<Counters>,
}

/// Connects to `dest` for `client`, trying each permitted address in turn within the connect
/// timeout.
pub(super) async fn open(
    client: &Client,
    dest: &Destination,
) -> Result<(TcpStream, Route), Failure> {
    let config = client.config();
    let policy = &client.sandbox.policy;
    let resolver = &*client.shared.resolver;
    let permitted = match permitted_addresses(resolver, policy, dest, config.resolve_timeout).await
    {
        Ok(permitted) => permitted,
        Err(ResolveError::Refused { rule }) => return Err(Failure::Refused { rule }),
        Err(err) => {
            let rule = policy.ruling(dest).rule;
            return Err(Failure::Unreachable {
                rule,
                error: err.to_string(),
            });
        }
    };
    let deadline = Instant::now() + config.connect_timeout;
    let mut last_error = String::from("no address");
    for ip in permitted.addrs {
        let addr = SocketAddr::new(ip, dest.port());
        match tokio::time::timeout_at(deadline, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => {
                let _ = stream.set_nodelay(true);
                let route = Route {
                    addr,
                    rule: permitted.rule,
                    counters: Arc::default(),
                };
                return Ok((stream, route));
            }
            Ok(Err(err)) => last_error = format!("failed to connect to {addr}: {err}"),
            Err(_) => {
                last_error = format!("failed to connect to {addr}: timed out");
                break;
            }
        }
    }
    Err(Failure::Unreachable {
        rule: permitted.rule,
        error: last_error,
    })
}

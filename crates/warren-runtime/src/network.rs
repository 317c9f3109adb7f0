//! What the jail driver does for a sandbox's network beyond the link itself (`warren-net`).

use std::path::Path;
use std::time::Instant;

use warren_driver::SandboxSpec;

use crate::agent::{AgentConn, AgentConnError};
use crate::driver::DriverError;

/// Points the sandbox's resolver at Warren's DNS on its link, through the agent (as the
/// sandbox's root, so the host never writes into a tenant's filesystem).
pub(crate) async fn write_resolv_conf(
    socket: &Path,
    addrs: &warren_net::SandboxAddrs,
) -> Result<(), DriverError> {
    use warren_proto::{Request, Response};
    let mut conn = AgentConn::connect(socket).await?;
    conn.send(&Request::WriteFile {
        path: "/etc/resolv.conf".into(),
        mode: Some(0o644),
        user: None,
    })
    .await?;
    let text = warren_net::resolv_conf(addrs);
    conn.send(&Request::FileData {
        data: text.into_bytes(),
    })
    .await?;
    conn.send(&Request::FileEnd).await?;
    match conn.recv().await? {
        Some(Response::Ok) => Ok(()),
        Some(Response::Error(e)) => Err(AgentConnError::Agent(e).into()),
        other => Err(AgentConnError::Unexpected(format!("{other:?}")).into()),
    }
}

/// Links a booted sandbox to the host and points its resolver at Warren; returns the
/// environment its commands get (the proxy's address).
pub(crate) async fn link(
    net: &warren_net::HostNet,
    spec: &SandboxSpec,
    slot: u32,
    pid: u32,
    agent_socket: &Path,
) -> Result<Vec<(String, String)>, DriverError> {
    let began = Instant::now();
    let addrs = net.attach(slot, pid).await?;
    write_resolv_conf(agent_socket, &addrs).await?;
    tracing::debug!(sandbox = %spec.id, elapsed_us = began.elapsed().as_micros(), address = %addrs.sandbox, "network linked");
    Ok(warren_net::proxy_env(&addrs, net.ports()))
}

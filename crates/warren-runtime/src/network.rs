//! What the jail driver does for a sandbox's network beyond the link itself (`warren-net`).

use std::path::Path;

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

//! What the jail driver does for a sandbox's network beyond the link itself (`warren-net`):
//! the resolver, the trust store and the environment. Files inside the sandbox are written
//! through the agent, as the sandbox's root, so the host never writes into a tenant's
//! filesystem.

use std::path::Path;
use std::time::Instant;

use warren_driver::SandboxSpec;
use warren_proto::{Request, Response};

use crate::agent::{AgentConn, AgentConnError};
use crate::driver::DriverError;

/// The system trust store of the default image (Debian's), which every TLS client in the image
/// can be pointed at (in a sandbox's copy of the certs directory: see `storage::own`).
const TRUST_STORE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// Most bytes of a sandbox's trust store read back (Debian's is about 200 KiB).
const TRUST_STORE_MAX: u64 = 16 << 20;

fn unexpected(got: Option<Response>) -> DriverError {
    AgentConnError::Unexpected(format!("{got:?}")).into()
}

async fn write_file(socket: &Path, path: &str, data: Vec<u8>) -> Result<(), DriverError> {
    let mut conn = AgentConn::connect(socket).await?;
    conn.send(&Request::WriteFile {
        path: path.into(),
        mode: Some(0o644),
        user: None,
    })
    .await?;
    for piece in data.chunks(warren_proto::MAX_CHUNK_LEN) {
        conn.send(&Request::FileData {
            data: piece.to_vec(),
        })
        .await?;
    }
    conn.send(&Request::FileEnd).await?;
    match conn.recv().await? {
        Some(Response::Ok) => Ok(()),
        Some(Response::Error(e)) => Err(AgentConnError::Agent(e).into()),
        other => Err(unexpected(other)),
    }
}

/// A file's bytes, or `None` when the sandbox has no such file.
async fn read_file(socket: &Path, path: &str, max: u64) -> Result<Option<Vec<u8>>, DriverError> {
    let mut conn = AgentConn::connect(socket).await?;
    conn.send(&Request::ReadFile {
        path: path.into(),
        offset: 0,
        len: Some(max),
        user: None,
    })
    .await?;
    let mut out = Vec::new();
    loop {
        match conn.recv().await? {
            Some(Response::FileInfo(_)) => {}
            Some(Response::FileData { data }) => out.extend_from_slice(&data),
            Some(Response::FileEnd) => return Ok(Some(out)),
            Some(Response::Error(e)) if e.kind == warren_proto::ErrorKind::NotFound => {
                return Ok(None);
            }
            Some(Response::Error(e)) => return Err(AgentConnError::Agent(e).into()),
            other => return Err(unexpected(other)),
        }
    }
}

/// Adds the server's extra CA certificates to the sandbox's trust store, once (a restarted
/// sandbox already has them). Hosts whose outbound TLS is re-signed by a local CA need their
/// sandboxes to trust it too.
async fn trust(socket: &Path, extra_cas: &[u8]) -> Result<(), DriverError> {
    if extra_cas.is_empty() {
        return Ok(());
    }
    let Some(mut store) = read_file(socket, TRUST_STORE, TRUST_STORE_MAX).await? else {
        tracing::warn!("the sandbox has no {TRUST_STORE}; extra CA certificates not added");
        return Ok(());
    };
    if store.windows(extra_cas.len()).any(|w| w == extra_cas) {
        return Ok(());
    }
    if !store.ends_with(b"\n") && !store.is_empty() {
        store.push(b'\n');
    }
    store.extend_from_slice(extra_cas);
    write_file(socket, TRUST_STORE, store).await
}

/// Environment that points every TLS client of the image at the system trust store (pip and
/// requests otherwise use their own bundle, node its built-in one).
fn trust_env() -> Vec<(String, String)> {
    [
        "SSL_CERT_FILE",
        "REQUESTS_CA_BUNDLE",
        "PIP_CERT",
        "CURL_CA_BUNDLE",
        "NODE_EXTRA_CA_CERTS",
    ]
    .into_iter()
    .map(|k| (k.to_owned(), TRUST_STORE.to_owned()))
    .collect()
}

/// The agent's arguments: its listening descriptor, and for a linked sandbox the address of
/// Warren's DNS on its link (known from the slot before the link exists), so the agent writes
/// the resolver configuration itself before it serves anything.
pub(crate) fn agent_args(linked: bool, slot: u32) -> Vec<String> {
    let mut args = vec![
        "--listen-fd".into(),
        warren_jail::AGENT_LISTEN_FD.to_string(),
    ];
    if linked && let Some(host) = warren_net::host_address(slot) {
        args.push("--nameserver".into());
        args.push(host.to_string());
    }
    args
}

/// Links a booted sandbox to the host and adds the server's extra CAs and its own proxy CA to
/// its trust store (`None`: the store holds them already); returns the environment its commands
/// get (the proxy, the trust store).
pub(crate) async fn link(
    net: &warren_net::HostNet,
    extra_cas: Option<&[u8]>,
    spec: &SandboxSpec,
    slot: u32,
    pid: u32,
    agent_socket: &Path,
) -> Result<Vec<(String, String)>, DriverError> {
    let began = Instant::now();
    let addrs = net.attach(slot, pid).await?;
    if let Some(extra_cas) = extra_cas {
        trust(agent_socket, &[extra_cas, spec.trust.as_bytes()].concat()).await?;
    }
    tracing::debug!(sandbox = %spec.id, elapsed_us = began.elapsed().as_micros(), address = %addrs.sandbox, "network linked");
    let mut env = warren_net::proxy_env(&addrs, net.ports());
    env.extend(trust_env());
    Ok(env)
}

/// The address a sandbox's `/etc/hosts` names it by: its `eth0` (what Warren's DNS answers for
/// its hostname) when linked, else [`warren_proto::OFFLINE_ADDRESS`].
pub(crate) fn own_address(linked: bool, slot: u32) -> std::net::IpAddr {
    linked
        .then(|| warren_net::addrs_for(slot).map(|a| a.sandbox))
        .flatten()
        .unwrap_or(warren_proto::OFFLINE_ADDRESS)
        .into()
}

//! Ports of a fake sandbox: [`ECHO_PORT`] echoes, every other port refuses.

use warren_types::agent::{AgentError, ErrorKind};

use crate::{DriverError, PortStream};

/// The one port a fake sandbox listens on: it echoes what it is sent (the echo service's port).
pub const ECHO_PORT: u16 = 7;

/// A connection to a fake sandbox port: an in-memory pipe, bounded like a socket buffer.
pub(super) fn dial(port: u16) -> Result<PortStream, DriverError> {
    if port != ECHO_PORT {
        return Err(AgentError::new(
            ErrorKind::ConnectionRefused,
            format!("cannot connect to port {port}: connection refused"),
        )
        .into());
    }
    let (ours, theirs) = tokio::io::duplex(64 * 1024);
    tokio::spawn(async move {
        let (mut rd, mut wr) = tokio::io::split(theirs);
        // Half-closing our side ends the echo's output after the last byte.
        let _ = tokio::io::copy(&mut rd, &mut wr).await;
        let _ = tokio::io::AsyncWriteExt::shutdown(&mut wr).await;
    });
    Ok(Box::new(ours) as PortStream)
}

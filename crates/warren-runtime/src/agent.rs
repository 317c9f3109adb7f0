//! The host side of the agent protocol: one [`AgentConn`] per operation, over the sandbox's unix
//! socket. Every byte from the agent is untrusted: frames are size-checked by `warren-proto`
//! before any allocation, and the handshake has a deadline.

use std::path::Path;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use warren_proto::{AgentError, PROTOCOL_VERSION, ProtoError, Request, Response};

/// How long connecting plus the handshake may take.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Talking to an agent failed.
#[derive(Debug, thiserror::Error)]
pub enum AgentConnError {
    /// The socket could not be reached.
    #[error("failed to connect to the sandbox agent")]
    Connect(#[source] std::io::Error),
    /// The handshake did not finish in time.
    #[error("sandbox agent did not answer the handshake in time")]
    Timeout,
    /// The agent speaks another protocol version.
    #[error("sandbox agent speaks protocol {agent}, this host speaks {host}")]
    Version {
        /// The agent's version.
        agent: u32,
        /// Ours.
        host: u32,
    },
    /// A frame could not be read, written or decoded.
    #[error(transparent)]
    Proto(#[from] ProtoError),
    /// The agent answered with an error.
    #[error(transparent)]
    Agent(#[from] AgentError),
    /// The agent closed the connection early or sent something out of order.
    #[error("sandbox agent sent an unexpected reply: {0}")]
    Unexpected(String),
}

/// Reading half of an agent connection.
#[derive(Debug)]
pub struct AgentReader {
    inner: OwnedReadHalf,
}

/// Writing half of an agent connection.
#[derive(Debug)]
pub struct AgentWriter {
    inner: OwnedWriteHalf,
}

/// A connection to a sandbox's agent that has completed the handshake.
#[derive(Debug)]
pub struct AgentConn {
    reader: AgentReader,
    writer: AgentWriter,
}

impl AgentConn {
    /// Connects to the agent's socket and shakes hands, both within [`HANDSHAKE_TIMEOUT`].
    pub async fn connect(socket: &Path) -> Result<Self, AgentConnError> {
        Self::dial(socket, None).await
    }

    /// Connects, shakes hands and sends `first`, within [`HANDSHAKE_TIMEOUT`]. The greeting and
    /// the request leave in one write and the agent answers both in turn, so an operation costs
    /// one round trip to the agent instead of two (every command and file call starts here).
    pub async fn open(socket: &Path, first: &Request) -> Result<Self, AgentConnError> {
        Self::dial(socket, Some(first)).await
    }

    async fn dial(socket: &Path, first: Option<&Request>) -> Result<Self, AgentConnError> {
        let deadline = tokio::time::Instant::now() + HANDSHAKE_TIMEOUT;
        let stream = tokio::time::timeout_at(deadline, UnixStream::connect(socket))
            .await
            .map_err(|_| AgentConnError::Timeout)?
            .map_err(AgentConnError::Connect)?;
        let mut frames = hello_frame()?;
        if let Some(first) = first {
            frames.extend_from_slice(&warren_proto::encode(first)?);
        }
        tokio::time::timeout_at(deadline, Self::greet(stream, &frames))
            .await
            .map_err(|_| AgentConnError::Timeout)?
    }

    /// Shakes hands over a stream that is already connected to an agent (a socket pair, say),
    /// within [`HANDSHAKE_TIMEOUT`].
    pub async fn handshake(stream: UnixStream) -> Result<Self, AgentConnError> {
        let hello = hello_frame()?;
        tokio::time::timeout(HANDSHAKE_TIMEOUT, Self::greet(stream, &hello))
            .await
            .map_err(|_| AgentConnError::Timeout)?
    }

    /// Writes `frames` (a Hello first) and reads the agent's greeting.
    async fn greet(stream: UnixStream, frames: &[u8]) -> Result<Self, AgentConnError> {
        let (r, w) = stream.into_split();
        let mut conn = Self {
            reader: AgentReader { inner: r },
            writer: AgentWriter { inner: w },
        };
        conn.writer
            .inner
            .write_all(frames)
            .await
            .map_err(ProtoError::Io)?;
        match conn.recv().await? {
            Some(Response::Hello { version, .. }) if version == PROTOCOL_VERSION => Ok(conn),
            Some(Response::Hello { version, .. }) => Err(AgentConnError::Version {
                agent: version,
                host: PROTOCOL_VERSION,
            }),
            Some(Response::Error(e)) => Err(e.into()),
            other => Err(AgentConnError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Sends one request.
    pub async fn send(&mut self, req: &Request) -> Result<(), AgentConnError> {
        self.writer.send(req).await
    }

    /// Receives one response; `None` when the agent closed the connection.
    pub async fn recv(&mut self) -> Result<Option<Response>, AgentConnError> {
        self.reader.recv().await
    }

    /// Sends a request and expects exactly one reply that is not an error.
    pub async fn call(&mut self, req: &Request) -> Result<Response, AgentConnError> {
        self.send(req).await?;
        self.reply().await
    }

    /// Receives exactly one reply that is not an error (to a request already sent).
    pub async fn reply(&mut self) -> Result<Response, AgentConnError> {
        match self.recv().await? {
            Some(Response::Error(e)) => Err(e.into()),
            Some(r) => Ok(r),
            None => Err(AgentConnError::Unexpected("connection closed".into())),
        }
    }

    /// Splits into halves that can be used from two tasks (output streaming and input).
    pub fn split(self) -> (AgentReader, AgentWriter) {
        (self.reader, self.writer)
    }

    /// Gives back the raw stream (after `DialTcp` was acknowledged).
    pub fn into_stream(self) -> Result<UnixStream, AgentConnError> {
        self.reader
            .inner
            .reunite(self.writer.inner)
            .map_err(|_| AgentConnError::Unexpected("halves do not match".into()))
    }
}

/// The frame that opens every connection.
fn hello_frame() -> Result<Vec<u8>, ProtoError> {
    warren_proto::encode(&Request::Hello {
        version: PROTOCOL_VERSION,
    })
}

impl AgentReader {
    /// Receives one response; `None` when the agent closed the connection between frames.
    pub async fn recv(&mut self) -> Result<Option<Response>, AgentConnError> {
        let mut prefix = [0u8; 4];
        match self.inner.read_exact(&mut prefix).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(ProtoError::Io(e).into()),
        }
        let len = warren_proto::body_len(prefix)?;
        let mut body = vec![0u8; len];
        self.inner
            .read_exact(&mut body)
            .await
            .map_err(ProtoError::Io)?;
        Ok(Some(warren_proto::decode(&body)?))
    }
}

impl AgentWriter {
    /// Sends one request.
    pub async fn send(&mut self, req: &Request) -> Result<(), AgentConnError> {
        let frame = warren_proto::encode(req)?;
        self.inner.write_all(&frame).await.map_err(ProtoError::Io)?;
        Ok(())
    }
}

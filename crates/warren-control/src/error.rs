//! Control-plane errors, in the control plane's terms: what went wrong, not which HTTP status it
//! becomes (the API maps each variant in one place).

use warren_driver::{AgentError, DriverError, ErrorKind};

use crate::config::ConfigError;
use crate::store::StoreError;

/// What a file operation was doing when it failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileOp {
    /// Reading, listing or searching.
    Read,
    /// Writing.
    Write,
}

/// What went wrong in a control-plane operation.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// No such sandbox, key or snapshot (for this caller).
    #[error("{0}")]
    NotFound(String),
    /// A name is taken.
    #[error("{0}")]
    Conflict(String),
    /// The request was refused as asked (a bad value, a contradiction, an unbuilt feature).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The caller may not do this.
    #[error("{0}")]
    Forbidden(String),
    /// The sandbox is not in a state that serves the request.
    #[error("{0}")]
    NotReady(String),
    /// Waiting for the sandbox took longer than asked.
    #[error("{0}")]
    Timeout(String),
    /// A quota of the caller or of the server is used up.
    #[error("{0}")]
    Exhausted(String),
    /// The server cannot serve this now but will (e.g. the default image is being built).
    #[error("{0}")]
    Unavailable(String),
    /// The sandbox was created but could not boot.
    #[error("{0}")]
    BootFailed(String),
    /// No command has this id in the sandbox (or its session expired).
    #[error("{0}")]
    CommandNotFound(String),
    /// A command could not run, failed in the agent, or ran out of time.
    #[error("{0}")]
    Command(String),
    /// A file operation failed inside the sandbox.
    #[error("{message}")]
    File {
        /// What was being done.
        op: FileOp,
        /// The path as the caller gave it (a sandbox path, never a host path).
        path: String,
        /// Why.
        kind: ErrorKind,
        /// The agent's words.
        message: String,
    },
    /// State could not be read or written.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The runtime failed, or the sandbox's agent could not be reached.
    #[error(transparent)]
    Driver(#[from] DriverError),
}

impl ControlError {
    /// A value out of range.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::Config(ConfigError::Invalid(message.into()))
    }

    /// A request that contradicts itself or cannot be served as written.
    pub fn malformed(message: impl Into<String>) -> Self {
        Self::Config(ConfigError::Malformed(message.into()))
    }

    /// A file operation's failure, from the agent's answer or the connection's.
    pub(crate) fn file(op: FileOp, path: &str, e: DriverError) -> Self {
        match e {
            DriverError::Agent(AgentError { kind, message }) => Self::File {
                op,
                path: path.to_owned(),
                kind,
                message,
            },
            other => Self::Driver(other),
        }
    }
}

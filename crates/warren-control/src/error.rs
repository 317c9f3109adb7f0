//! Control-plane errors. The API maps each variant to one HTTP status in one place.

use warren_runtime::{AgentConnError, DriverError};

use crate::store::StoreError;

/// What went wrong in a control-plane operation.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// No such sandbox, key or file (for this caller).
    #[error("{0}")]
    NotFound(String),
    /// A name is taken.
    #[error("{0}")]
    Conflict(String),
    /// A field has an invalid value.
    #[error("{message}")]
    Invalid {
        /// Detail.
        message: String,
    },
    /// A request that cannot be served as asked.
    #[error("{message}")]
    BadRequest {
        /// API error type, e.g. `InvalidRequest`.
        error: &'static str,
        /// Detail.
        message: String,
    },
    /// The caller may not do this.
    #[error("{0}")]
    Forbidden(String),
    /// The sandbox is not in a state that serves the request.
    #[error("{0}")]
    NotReady(String),
    /// Waiting for the sandbox took longer than asked.
    #[error("{0}")]
    Timeout(String),
    /// A quota of the caller or of the server is used up (429 `QuotaExceeded`).
    #[error("{0}")]
    Exhausted(String),
    /// The server cannot serve this now but will (e.g. the default image is still being built;
    /// 503 `ServiceUnavailable`).
    #[error("{0}")]
    Unavailable(String),
    /// State could not be read or written.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The runtime failed.
    #[error(transparent)]
    Driver(#[from] DriverError),
    /// The sandbox's agent could not be reached.
    #[error(transparent)]
    Agent(#[from] AgentConnError),
}

impl ControlError {
    /// An invalid-value error.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::Invalid {
            message: message.into(),
        }
    }

    /// A feature that is not built yet, refused rather than silently ignored.
    pub fn unsupported(message: impl Into<String>) -> Self {
        Self::BadRequest {
            error: "Unsupported",
            message: message.into(),
        }
    }
}

//! Driver failures, in the terms the control plane acts on.

use warren_types::agent::AgentError;

/// What kind of resource a failed lifecycle operation was handling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The sandbox's files.
    Storage,
    /// Its processes did not stop in time.
    StopTimeout,
    /// Its cgroups.
    Cgroup,
    /// Its uid range.
    Slot,
    /// Anything else (the jail, the helpers, an internal task).
    Other,
}

/// A driver operation failed.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// The agent answered with an error (a missing file, an unknown command).
    #[error(transparent)]
    Agent(#[from] AgentError),
    /// The sandbox's agent could not be reached, or broke the protocol.
    #[error("sandbox agent unreachable: {0}")]
    Unreachable(String),
    /// Bringing the sandbox up or down failed.
    #[error("{detail}")]
    Failed {
        /// What was being handled.
        kind: FailureKind,
        /// What a tenant may be told: no host path, no raw helper output.
        reason: String,
        /// The whole cause, for the daemon's log.
        detail: String,
    },
}

impl DriverError {
    /// A lifecycle failure.
    pub fn failed(kind: FailureKind, reason: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::Failed {
            kind,
            reason: reason.into(),
            detail: detail.into(),
        }
    }

    /// What a tenant may be told about this failure.
    pub fn public_reason(&self) -> String {
        match self {
            Self::Agent(e) => e.message.clone(),
            Self::Unreachable(_) => "the sandbox's agent did not answer".into(),
            Self::Failed { reason, .. } => reason.clone(),
        }
    }

    /// Whether the sandbox's agent could not be reached.
    pub fn is_unreachable(&self) -> bool {
        matches!(self, Self::Unreachable(_))
    }

    /// The kind of a lifecycle failure (`Other` for agent failures).
    pub fn kind(&self) -> FailureKind {
        match self {
            Self::Failed { kind, .. } => *kind,
            _ => FailureKind::Other,
        }
    }
}

//! The error body every non-2xx answer carries (§4.1).

use serde::{Deserialize, Serialize};

/// `{"detail": {"error": ..., "message": ...}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The error.
    pub detail: ErrorDetail,
}

/// The error's type and message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// Error type, e.g. `NotFound`, `ValidationError`.
    pub error: String,
    /// Human-readable detail.
    pub message: String,
}

impl ErrorBody {
    /// An error body.
    pub fn new(error: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            detail: ErrorDetail {
                error: error.into(),
                message: message.into(),
            },
        }
    }
}

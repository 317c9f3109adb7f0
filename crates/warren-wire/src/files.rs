//! File search on the data plane (§4.7).

use serde::{Deserialize, Serialize};

/// POST /glob.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GlobBody {
    /// The glob.
    pub pattern: String,
    /// Where to search (default `/`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Most matches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
}

/// POST /grep.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrepBody {
    /// The literal text to find.
    pub pattern: String,
    /// Where to search (default `/`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Only files matching this glob.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub glob: Option<String>,
    /// Most matches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
}

/// One glob match.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GlobMatch {
    /// Absolute path.
    pub path: String,
    /// Whether it is a directory.
    pub is_dir: bool,
    /// Size in bytes.
    pub size_bytes: u64,
    /// RFC 3339.
    pub modified_at: String,
}

/// One grep match.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrepMatch {
    /// Absolute path of the file.
    pub path: String,
    /// 1-based line number.
    pub line: u64,
    /// The line (cut when very long).
    pub text: String,
    /// Whether `text` was cut (sent only when true).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub text_truncated: bool,
}

/// A glob's or grep's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SearchResponse<M> {
    /// The matches.
    pub matches: Vec<M>,
    /// Whether a bound cut the search short.
    pub truncated: bool,
    /// Which bound (a Warren extension, sent only when cut).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub truncated_reason: Option<String>,
}

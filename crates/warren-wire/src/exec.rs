//! Commands on the data plane: the execute request shared by the three transports, the
//! WebSocket messages (§4.4), the SSE events (§4.5) and the blocking HTTP answer (§4.6).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use warren_types::RunConfig;

/// The `execute` parameters shared by WebSocket, SSE and blocking HTTP.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecuteBody {
    /// The shell command line.
    pub command: String,
    /// Idempotency key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command_id: Option<String>,
    /// The shell (default `/bin/bash`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shell: Option<String>,
    /// Wall-clock limit; 0 for none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<i64>,
    /// The blocking HTTP transport's name for `timeout_seconds`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<i64>,
    /// Kill after this long with no client attached; -1 for never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout_seconds: Option<i64>,
    /// Kill when the last client goes away.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kill_on_disconnect: Option<bool>,
    /// Keep the finished command attachable this long; -1 for forever.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_seconds: Option<i64>,
    /// Legacy environment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<BTreeMap<String, String>>,
    /// Legacy working directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    /// The command's run_config layer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_config: Option<RunConfig>,
    /// Close stdin at spawn.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub close_stdin: Option<bool>,
    /// Run under a PTY.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pty: Option<bool>,
}

/// The first client message of a WebSocket session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum WsFirst {
    /// Run a command.
    Execute(Box<ExecuteBody>),
    /// Attach to a command from these offsets.
    Reconnect {
        /// The command.
        command_id: String,
        /// First stdout byte wanted.
        #[serde(default)]
        stdout_offset: u64,
        /// First stderr byte wanted.
        #[serde(default)]
        stderr_offset: u64,
    },
}

/// Client messages after the first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum WsControl {
    /// Bytes for stdin.
    Input {
        /// The text.
        data: String,
    },
    /// End of stdin.
    CloseStdin,
    /// Kill the command.
    Kill,
    /// Resize the PTY (a Warren extension).
    Resize {
        /// Rows.
        rows: u16,
        /// Columns.
        cols: u16,
    },
    /// Anything else is ignored, as the spec asks.
    #[serde(other)]
    Unknown,
}

/// Server messages of a WebSocket session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum WsServer {
    /// The command runs.
    Started {
        /// Its id.
        command_id: String,
        /// Its pid inside the sandbox.
        pid: u32,
    },
    /// Standard output text.
    Stdout {
        /// Complete UTF-8 text.
        data: String,
        /// Byte offset of its first byte.
        offset: u64,
    },
    /// Standard error text.
    Stderr {
        /// Complete UTF-8 text.
        data: String,
        /// Byte offset of its first byte.
        offset: u64,
    },
    /// The command exited.
    Exit {
        /// Exit code.
        exit_code: i32,
        /// The kernel's OOM killer ended it (a Warren extension, sent only when true).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        oom_killed: bool,
    },
    /// The command failed or timed out.
    Error {
        /// `CommandTimeout`, `CommandNotFound`, `SessionExpired` or `CommandError`.
        error_type: String,
        /// Detail.
        error: String,
    },
}

/// SSE `started`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SseStarted {
    /// The command's id.
    pub command_id: String,
    /// Its pid.
    pub pid: u32,
}

/// SSE `stdout` / `stderr`: raw bytes, base64.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SseOutput {
    /// Byte offset of the first byte.
    pub offset: u64,
    /// Base64 of the bytes.
    pub data: String,
}

/// SSE `stream_end`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SseStreamEnd {
    /// `stdout` or `stderr`.
    pub stream: String,
    /// The stream's final length.
    pub offset: u64,
}

/// SSE `exit`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SseExit {
    /// Exit code.
    pub exit_code: i32,
    /// The kernel's OOM killer ended it (sent only when true).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub oom_killed: bool,
}

/// SSE `ack_required`: the client resumes from these offsets, which also acknowledge
/// everything before them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SseAckRequired {
    /// Stdout cursor.
    pub stdout_offset: u64,
    /// Stderr cursor.
    pub stderr_offset: u64,
}

/// SSE `error`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SseError {
    /// Error type.
    pub error_type: String,
    /// Detail.
    pub error: String,
}

/// POST /execute/stream/resume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResumeBody {
    /// The command.
    pub command_id: String,
    /// Stdout cursor.
    #[serde(default)]
    pub stdout_offset: u64,
    /// Stderr cursor.
    #[serde(default)]
    pub stderr_offset: u64,
}

/// The blocking HTTP execute's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpExecuteResponse {
    /// Standard output (cut at the server's cap, with a marker line).
    pub stdout: String,
    /// Standard error (likewise).
    pub stderr: String,
    /// Exit code.
    pub exit_code: i32,
    /// Whether stdout was cut.
    #[serde(default)]
    pub stdout_truncated: bool,
    /// Whether stderr was cut.
    #[serde(default)]
    pub stderr_truncated: bool,
}

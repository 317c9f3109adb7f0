//! What the host asks of a sandbox's agent and what it answers, as data: the command spec,
//! exit status, file metadata and failure kinds. The agent protocol (`warren-proto`) frames
//! these; the control plane and the API use them without speaking the protocol.

use serde::{Deserialize, Serialize};

/// How to run a command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ExecSpec {
    /// Idempotency key; the agent generates one when absent.
    pub command_id: Option<String>,
    /// Program and arguments, e.g. `["/bin/bash", "-c", "echo hi"]`.
    pub argv: Vec<String>,
    /// Extra environment on top of the agent's defaults (PATH, HOME, USER, LANG, TERM for a PTY).
    pub env: Vec<(String, String)>,
    /// Working directory (default: the user's home, or `/`).
    pub cwd: Option<String>,
    /// User name or numeric uid to run as (default: root of the sandbox).
    pub user: Option<String>,
    /// Allocate a PTY of this size; stdout and stderr are then merged onto stdout.
    pub pty: Option<PtySize>,
    /// Keep stdin open for `Input` frames; when false the command's stdin is at EOF.
    pub stdin: bool,
    /// Wall-clock limit in milliseconds; `None` for no limit.
    pub timeout_ms: Option<u64>,
    /// Kill a running command after this long with no client attached; `None` for never.
    pub idle_timeout_ms: Option<u64>,
    /// Kill the command as soon as its last client detaches.
    pub kill_on_disconnect: bool,
    /// Keep a finished command's session this long for reattach; `None` for forever.
    pub ttl_ms: Option<u64>,
}

/// Size of a PTY.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PtySize {
    /// Rows.
    pub rows: u16,
    /// Columns.
    pub cols: u16,
}

impl Default for PtySize {
    fn default() -> Self {
        Self { rows: 24, cols: 80 }
    }
}

/// Output stream of a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Stream {
    /// Standard output (and everything a PTY command writes).
    Stdout,
    /// Standard error.
    Stderr,
}

/// How a command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitStatus {
    /// Exit code; `128 + signal` when killed by a signal.
    pub code: i32,
    /// The signal that killed the main process, if any.
    pub signal: Option<i32>,
    /// Why it ended.
    pub reason: ExitReason,
}

/// Why a command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExitReason {
    /// It exited or was killed by a signal it did not get from the agent.
    Exited,
    /// A client asked for it to be killed.
    Killed,
    /// Its wall-clock timeout expired.
    Timeout,
    /// It ran with no client attached for longer than its idle timeout, or its last client
    /// detached with `kill_on_disconnect`.
    Detached,
}

/// A failure reported by the agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{kind:?}: {message}")]
pub struct AgentError {
    /// What kind of failure.
    pub kind: ErrorKind,
    /// Human-readable detail; never includes host paths.
    pub message: String,
}

impl AgentError {
    /// Builds an error.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
}

/// Kinds of agent failure; the API layer maps them to statuses and error types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorKind {
    /// The request was malformed or out of order.
    BadRequest,
    /// The host and agent speak different protocol versions.
    VersionMismatch,
    /// No command session has this id and none ever had.
    CommandNotFound,
    /// The command's session existed but its TTL expired.
    SessionExpired,
    /// The path does not exist.
    NotFound,
    /// The path is a directory where a file was expected.
    IsADirectory,
    /// A path component is not a directory.
    NotADirectory,
    /// Permission denied.
    PermissionDenied,
    /// No space or quota left.
    NoSpace,
    /// The command could not be started (bad cwd, unknown user, missing program).
    SpawnFailed,
    /// Nothing listens on the port.
    ConnectionRefused,
    /// Any other I/O failure.
    Io,
}

/// Metadata of one path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileInfo {
    /// The path as asked (for `Stat`/`ReadFile`) or the entry name (for `ListDir`).
    pub name: String,
    /// File type.
    pub kind: FileKind,
    /// Size in bytes.
    pub size: u64,
    /// Permission bits (`st_mode & 0o7777`).
    pub mode: u32,
    /// Modification time, nanoseconds since the epoch.
    pub mtime_ns: i64,
    /// Owner uid inside the sandbox.
    pub uid: u32,
    /// Owner gid inside the sandbox.
    pub gid: u32,
}

/// File type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FileKind {
    /// Regular file.
    File,
    /// Directory.
    Dir,
    /// Symbolic link.
    Symlink,
    /// Anything else.
    Other,
}

/// One command session, as listed by `ListCommands`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandSummary {
    /// The command's id.
    pub command_id: String,
    /// Pid of its main process.
    pub pid: u32,
    /// `None` while running.
    pub exit: Option<ExitStatus>,
    /// Bytes written to stdout so far.
    pub stdout_len: u64,
    /// Bytes written to stderr so far.
    pub stderr_len: u64,
    /// Clients attached now.
    pub attached: u32,
}

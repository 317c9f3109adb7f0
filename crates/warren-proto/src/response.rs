//! Messages from the agent to the host.

use serde::{Deserialize, Serialize};

use crate::search::{GlobMatch, GrepMatch, SearchCut};

/// Agent to host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// Handshake answer.
    Hello {
        /// The agent's [`PROTOCOL_VERSION`](crate::PROTOCOL_VERSION).
        version: u32,
        /// The agent's crate version, for diagnostics.
        agent_version: String,
    },
    /// The command runs (or ran); first frame after `Exec` and `Attach`.
    Started {
        /// The command's id, byte for byte as given or as generated.
        command_id: String,
        /// Pid of the command's main process inside the sandbox.
        pid: u32,
    },
    /// Output bytes.
    Output {
        /// Which stream.
        stream: Stream,
        /// Byte offset of `data[0]` within the stream since the command started.
        offset: u64,
        /// The bytes, at most [`MAX_CHUNK_LEN`](crate::MAX_CHUNK_LEN).
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
    /// The command ended; last frame of an attached stream, sent after all output.
    Exit(ExitStatus),
    /// Metadata of one path.
    FileInfo(FileInfo),
    /// A chunk of a file being read.
    FileData {
        /// The bytes, at most [`MAX_CHUNK_LEN`](crate::MAX_CHUNK_LEN).
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
    /// End of a file being read.
    FileEnd,
    /// A directory listing (at most [`MAX_DIR_ENTRIES`](crate::MAX_DIR_ENTRIES) entries;
    /// `truncated` when there were more).
    DirEntries {
        /// The entries, sorted by name.
        entries: Vec<FileInfo>,
        /// True when the directory held more entries than were sent.
        truncated: bool,
    },
    /// The operation succeeded.
    Ok,
    /// The operation failed.
    Error(AgentError),
    /// All command sessions.
    CommandList {
        /// One entry per session.
        commands: Vec<CommandSummary>,
    },
    /// Answer to `Ping`.
    Pong,
    /// A batch of a glob's matches, in walk order (breadth first, names sorted within a
    /// directory). One encoded batch stays under [`MAX_FRAME_LEN`](crate::MAX_FRAME_LEN).
    GlobMatches {
        /// The matches.
        matches: Vec<GlobMatch>,
    },
    /// A batch of a grep's matches, in walk order and then line order.
    GrepMatches {
        /// The matches.
        matches: Vec<GrepMatch>,
    },
    /// The last frame of a glob or grep that ran.
    SearchEnd {
        /// The bound that cut the search short; `None` when it saw everything it was asked to.
        truncated: Option<SearchCut>,
    },
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

/// Output stream of a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Stream {
    /// Standard output (and everything a PTY command writes).
    Stdout,
    /// Standard error.
    Stderr,
}

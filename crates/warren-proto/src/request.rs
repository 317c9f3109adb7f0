//! Messages from the host to the agent.

use serde::{Deserialize, Serialize};

/// Host to agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// First frame of every connection.
    Hello {
        /// The host's [`PROTOCOL_VERSION`](crate::PROTOCOL_VERSION).
        version: u32,
    },
    /// Start a command, or attach to it if `command_id` names one that exists (idempotent).
    Exec(ExecSpec),
    /// Attach to an existing command and stream from these byte offsets.
    Attach {
        /// The command's id.
        command_id: String,
        /// Resume offset into stdout.
        stdout_offset: u64,
        /// Resume offset into stderr.
        stderr_offset: u64,
    },
    /// Bytes for the attached command's stdin (or its PTY).
    Input {
        /// The bytes.
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
    /// Half-close the attached command's stdin.
    CloseStdin,
    /// SIGKILL the attached command's whole process group.
    Kill,
    /// Send a signal to the attached command's process group.
    Signal {
        /// Signal number.
        signal: i32,
    },
    /// Resize the attached command's PTY.
    Resize {
        /// Rows.
        rows: u16,
        /// Columns.
        cols: u16,
    },
    /// Write a file: followed by `FileData` frames and one `FileEnd`.
    WriteFile {
        /// Absolute path inside the sandbox.
        path: String,
        /// Permission bits for a new file (default 0o644).
        mode: Option<u32>,
        /// User that owns the file and its created parents (default: the sandbox's root).
        user: Option<String>,
    },
    /// A chunk of a file being written.
    FileData {
        /// The bytes, at most [`MAX_CHUNK_LEN`](crate::MAX_CHUNK_LEN).
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
    /// End of a file being written.
    FileEnd,
    /// Read a file, or a byte range of it.
    ReadFile {
        /// Absolute path inside the sandbox.
        path: String,
        /// First byte to send.
        offset: u64,
        /// Number of bytes to send at most; `None` for all that follow `offset`.
        len: Option<u64>,
        /// User whose permissions apply (default: the sandbox's root).
        user: Option<String>,
    },
    /// Metadata of one path (not following a final symlink).
    Stat {
        /// Absolute path inside the sandbox.
        path: String,
    },
    /// Entries of a directory.
    ListDir {
        /// Absolute path inside the sandbox.
        path: String,
    },
    /// Connect to `127.0.0.1:port` inside the sandbox; the connection then carries raw bytes.
    DialTcp {
        /// TCP port.
        port: u16,
    },
    /// All command sessions the agent holds.
    ListCommands,
    /// Liveness check.
    Ping,
    /// Entries under `root` whose path relative to `root` matches a glob; answered by
    /// [`GlobMatches`](crate::Response::GlobMatches) batches and one
    /// [`SearchEnd`](crate::Response::SearchEnd).
    Glob {
        /// Absolute path of the directory to search.
        root: String,
        /// Glob matched against each entry's path relative to `root` (see
        /// [`crate::search`] for the exact semantics).
        pattern: String,
        /// Most matches wanted; the agent caps it at [`MAX_MATCHES`](crate::MAX_MATCHES).
        limit: u32,
        /// User whose permissions apply to the walk (default: the sandbox's root).
        user: Option<String>,
    },
    /// Lines containing a literal string in the regular files under `root`; answered by
    /// [`GrepMatches`](crate::Response::GrepMatches) batches and one
    /// [`SearchEnd`](crate::Response::SearchEnd).
    Grep {
        /// Absolute path of the directory to search.
        root: String,
        /// Literal (not a regex) substring to look for in each line; must not be empty.
        pattern: String,
        /// Only files matching this glob: by basename when it has no `/` and no `**`, else by
        /// the path relative to `root`.
        glob: Option<String>,
        /// Most matches wanted; the agent caps it at [`MAX_MATCHES`](crate::MAX_MATCHES).
        limit: u32,
        /// User whose permissions apply to the walk and the reads (default: the sandbox's
        /// root).
        user: Option<String>,
    },
}

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

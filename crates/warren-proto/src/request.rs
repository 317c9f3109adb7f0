//! Messages from the host to the agent.

use serde::{Deserialize, Serialize};

use crate::ExecSpec;

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

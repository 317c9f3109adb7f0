//! Messages from the agent to the host.

use serde::{Deserialize, Serialize};

use crate::search::{GlobMatch, GrepMatch, SearchCut};
use crate::{AgentError, CommandSummary, ExitStatus, FileInfo, Stream};

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

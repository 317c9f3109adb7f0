//! Searches of the sandbox's filesystem: [`Request::Glob`] and [`Request::Grep`], their
//! matches, and the bounds the agent enforces so that one search costs bounded time, memory and
//! frames whatever the tree holds.
//!
//! Both walk the tree under `root` breadth first, the entries of each directory in byte order
//! of their names, without following symlinks: a symlink is reported as an entry but never
//! descended into or read (`root` itself may be a symlink to a directory). A subdirectory that
//! cannot be listed is skipped, as `find` does; a root that cannot be listed is an error
//! ([`ErrorKind::NotFound`], [`ErrorKind::NotADirectory`], [`ErrorKind::PermissionDenied`]).
//! Listing and reading use the requesting user's permissions. A directory's entries beyond its
//! first [`MAX_DIR_ENTRIES`] (by name) are not visited.
//!
//! - Glob: `pattern` uses `*`, `?` and `[...]` within one path segment and `**` across
//!   segments, and is matched against each entry's path relative to `root` (`src/main.rs`).
//!   The walk goes only as deep as the pattern can match: as many levels as the pattern has
//!   segments, or [`SEARCH_MAX_DEPTH`] when it contains `**`.
//! - Grep: each regular file of at most [`GREP_MAX_FILE`] bytes that passes the `glob` filter
//!   is read, unless a NUL byte in its first [`GREP_BINARY_PROBE`] bytes marks it binary. Lines
//!   end at `\n` (a `\r` before it is dropped), invalid UTF-8 becomes U+FFFD, and a line matches
//!   when it contains `pattern` literally. The walk goes [`SEARCH_MAX_DEPTH`] levels deep.
//!
//! A search stops at the first bound it reaches; the matches found until then are sent and
//! [`SearchCut`] names the bound. Hitting `limit` counts only when one more match existed.
//!
//! [`Request::Glob`]: crate::Request::Glob
//! [`Request::Grep`]: crate::Request::Grep
//! [`ErrorKind::NotFound`]: crate::ErrorKind::NotFound
//! [`ErrorKind::NotADirectory`]: crate::ErrorKind::NotADirectory
//! [`ErrorKind::PermissionDenied`]: crate::ErrorKind::PermissionDenied
//! [`MAX_DIR_ENTRIES`]: crate::MAX_DIR_ENTRIES

use serde::{Deserialize, Serialize};

/// Most directory entries one search visits.
pub const WALK_BUDGET: usize = 200_000;
/// Most directories waiting to be listed; a tree wider than this is cut short.
pub const WALK_QUEUE_MAX: usize = 100_000;
/// Deepest level below `root` a grep, or a glob with `**`, descends to.
pub const SEARCH_MAX_DEPTH: usize = 64;
/// Files larger than this are skipped by grep.
pub const GREP_MAX_FILE: u64 = 8 << 20;
/// Most bytes one grep reads, over all files.
pub const GREP_MAX_BYTES: u64 = 256 << 20;
/// Most files one grep reads.
pub const GREP_MAX_FILES: usize = 20_000;
/// Leading bytes of a file in which a NUL marks it binary.
pub const GREP_BINARY_PROBE: usize = 8 << 10;
/// Most bytes of a matching line returned; longer lines are cut at a character boundary and
/// flagged [`GrepMatch::text_truncated`].
pub const GREP_MAX_LINE: usize = 4096;
/// Most bytes of matched text (after clipping) in one grep's matches.
pub const GREP_MAX_TEXT: usize = 8 << 20;
/// Most matches any glob or grep returns, whatever its `limit`.
pub const MAX_MATCHES: usize = 100_000;
/// Longest `root` accepted (Linux's `PATH_MAX`); a longer one is a bad request.
pub const SEARCH_MAX_ROOT_LEN: usize = 4096;
/// Encoded size of the matches the agent collects before sending a batch. A batch holds at
/// most this much, or a single match that is larger on its own, so it is far below
/// [`MAX_FRAME_LEN`](crate::MAX_FRAME_LEN): matched paths are bounded by the kernel's path
/// limits and matched text by [`GREP_MAX_LINE`].
pub const SEARCH_BATCH_LEN: usize = 64 << 10;

/// Most bytes postcard spends on a length prefix, a `u64` or an `i64` (a 10-byte varint).
const VARINT_MAX: usize = 10;

/// One entry found by a glob.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GlobMatch {
    /// Absolute path inside the sandbox (`root` joined with the relative path).
    pub path: String,
    /// Whether the entry is a directory (a symlink to one is not).
    pub is_dir: bool,
    /// Size in bytes, from `lstat`.
    pub size: u64,
    /// Modification time, nanoseconds since the epoch.
    pub mtime_ns: i64,
}

impl GlobMatch {
    /// An upper bound of this match's encoded size, for batching.
    pub fn wire_len(&self) -> usize {
        VARINT_MAX + self.path.len() + 1 + VARINT_MAX + VARINT_MAX
    }
}

/// One line found by a grep.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrepMatch {
    /// Absolute path of the file inside the sandbox.
    pub path: String,
    /// Line number, 1-based.
    pub line: u64,
    /// The line without its line ending, at most [`GREP_MAX_LINE`] bytes.
    pub text: String,
    /// Whether `text` was cut to [`GREP_MAX_LINE`] bytes.
    pub text_truncated: bool,
}

impl GrepMatch {
    /// An upper bound of this match's encoded size, for batching.
    pub fn wire_len(&self) -> usize {
        VARINT_MAX + self.path.len() + VARINT_MAX + VARINT_MAX + self.text.len() + 1
    }
}

/// The bound that cut a search short.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SearchCut {
    /// More matches existed than the request's `limit` (or [`MAX_MATCHES`]).
    Limit,
    /// The walk visited [`WALK_BUDGET`] entries.
    EntriesVisited,
    /// A directory held more than [`MAX_DIR_ENTRIES`](crate::MAX_DIR_ENTRIES) entries; the
    /// search went on without the rest of them.
    DirectoryTooLarge,
    /// More than [`WALK_QUEUE_MAX`] directories were waiting to be listed.
    DirectoriesQueued,
    /// Grep read [`GREP_MAX_FILES`] files.
    FilesRead,
    /// Grep read [`GREP_MAX_BYTES`] bytes.
    BytesRead,
    /// The matched text reached [`GREP_MAX_TEXT`] bytes.
    ResponseSize,
}

impl SearchCut {
    /// The bound's name as the HTTP API reports it (`truncated_reason`).
    pub fn reason(self) -> &'static str {
        match self {
            Self::Limit => "limit",
            Self::EntriesVisited => "entries visited",
            Self::DirectoryTooLarge => "directory too large",
            Self::DirectoriesQueued => "directories queued",
            Self::FilesRead => "files read",
            Self::BytesRead => "bytes read",
            Self::ResponseSize => "response size",
        }
    }
}

impl std::fmt::Display for SearchCut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.reason())
    }
}

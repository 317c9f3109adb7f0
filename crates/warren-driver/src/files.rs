//! Files of a running sandbox, as the control plane reads, writes and searches them.

use tokio::sync::{mpsc, oneshot};
use warren_types::agent::FileInfo;

/// What `/bin/bash -c` loads on a Debian-style image, the default image's locale included: read
/// ahead into a new sandbox's page cache (its files are new inodes to the kernel, so nothing of
/// the image's is cached for them), so its first command does not wait on them.
pub const FIRST_COMMAND_FILES: &[&str] = &[
    "/bin/bash",
    "/lib64/ld-linux-x86-64.so.2",
    "/lib/x86_64-linux-gnu/libc.so.6",
    "/lib/x86_64-linux-gnu/libtinfo.so.6",
    "/etc/ld.so.cache",
    "/etc/passwd",
    "/etc/group",
    "/etc/nsswitch.conf",
    // glibc maps it (shared) when the locale is set: its page would be the first command's one
    // read from disk.
    "/usr/lib/x86_64-linux-gnu/gconv/gconv-modules.cache",
    // The shell sets its locale from LANG=C.UTF-8.
    "/usr/lib/locale/C.utf8/LC_CTYPE",
    "/usr/lib/locale/C.utf8/LC_COLLATE",
    "/usr/lib/locale/C.utf8/LC_NUMERIC",
    "/usr/lib/locale/C.utf8/LC_TIME",
    "/usr/lib/locale/C.utf8/LC_MONETARY",
    "/usr/lib/locale/C.utf8/LC_MESSAGES/SYS_LC_MESSAGES",
    "/usr/lib/locale/C.utf8/LC_PAPER",
    "/usr/lib/locale/C.utf8/LC_NAME",
    "/usr/lib/locale/C.utf8/LC_ADDRESS",
    "/usr/lib/locale/C.utf8/LC_TELEPHONE",
    "/usr/lib/locale/C.utf8/LC_MEASUREMENT",
    "/usr/lib/locale/C.utf8/LC_IDENTIFICATION",
];

use crate::DriverError;

/// Which bytes of which file to read, as whom.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadRange {
    /// Absolute path inside the sandbox.
    pub path: String,
    /// First byte.
    pub offset: u64,
    /// Most bytes; `None` for the rest of the file, `Some(0)` for the metadata only.
    pub len: Option<u64>,
    /// The sandbox user the read runs as.
    pub user: Option<String>,
}

/// A file being read: its metadata, then its bytes in order. Dropping it stops the read.
#[derive(Debug)]
pub struct FileRead {
    /// Metadata at open time.
    pub info: FileInfo,
    /// The bytes; ends after the last chunk, or with one error.
    pub body: mpsc::Receiver<Result<Vec<u8>, DriverError>>,
}

/// A file being written. Its bytes go to a temporary file that replaces the target only on
/// [`FileWrite::commit`]; dropping it unfinished leaves the target as it was.
#[derive(Debug)]
pub struct FileWrite {
    chunks: mpsc::Sender<Vec<u8>>,
    commit: oneshot::Sender<()>,
    done: oneshot::Receiver<Result<(), DriverError>>,
}

/// The driver's end of a [`FileWrite`].
#[derive(Debug)]
pub struct FileWriteEnd {
    /// The bytes, in order.
    pub chunks: mpsc::Receiver<Vec<u8>>,
    /// Fires when every chunk was sent and the write should take effect; dropped unfired when
    /// the writer gave up.
    pub commit: oneshot::Receiver<()>,
    /// Where the driver reports the outcome of the commit.
    pub done: oneshot::Sender<Result<(), DriverError>>,
}

impl FileWrite {
    /// A connected pair: the client's writer and the driver's end.
    pub fn channel() -> (Self, FileWriteEnd) {
        let (chunks_tx, chunks) = mpsc::channel(8);
        let (commit_tx, commit) = oneshot::channel();
        let (done_tx, done) = oneshot::channel();
        (
            Self {
                chunks: chunks_tx,
                commit: commit_tx,
                done,
            },
            FileWriteEnd {
                chunks,
                commit,
                done: done_tx,
            },
        )
    }

    /// Sends bytes; an error means the driver gave up (its cause comes from `commit`).
    pub async fn write(&mut self, data: Vec<u8>) -> Result<(), DriverError> {
        self.chunks
            .send(data)
            .await
            .map_err(|_| DriverError::Unreachable("the file write ended early".into()))
    }

    /// Makes the write take effect and waits for the outcome.
    pub async fn commit(self) -> Result<(), DriverError> {
        drop(self.chunks);
        let _ = self.commit.send(());
        self.done.await.unwrap_or_else(|_| {
            Err(DriverError::Unreachable(
                "the file write ended early".into(),
            ))
        })
    }

    /// The outcome after a failed [`FileWrite::write`].
    pub async fn failure(self) -> DriverError {
        match self.done.await {
            Ok(Err(e)) => e,
            _ => DriverError::Unreachable("the file write ended early".into()),
        }
    }
}

/// A glob search.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GlobQuery {
    /// Absolute directory to search under.
    pub root: String,
    /// The pattern, matched against paths relative to `root` (`*` stays within a segment).
    pub pattern: String,
    /// Most matches.
    pub limit: u32,
    /// The sandbox user the search runs as.
    pub user: Option<String>,
}

/// A grep search.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrepQuery {
    /// Absolute directory to search under.
    pub root: String,
    /// The literal text to find in each line.
    pub pattern: String,
    /// Only files matching this glob (a bare pattern matches basenames).
    pub glob: Option<String>,
    /// Most matches.
    pub limit: u32,
    /// The sandbox user the search runs as.
    pub user: Option<String>,
}

/// One match of a search.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SearchHit {
    /// A path a glob matched.
    Path {
        /// Absolute path.
        path: String,
        /// Whether it is a directory (a symlink to one is not).
        is_dir: bool,
        /// Size in bytes.
        size: u64,
        /// Modification time, nanoseconds since the epoch.
        mtime_ns: i64,
    },
    /// A line grep matched.
    Line {
        /// Absolute path of the file.
        path: String,
        /// 1-based line number.
        line: u64,
        /// The line, cut at a character boundary when long.
        text: String,
        /// Whether `text` was cut.
        text_truncated: bool,
    },
}

/// What a search found, and which bound cut it short, if one did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SearchResult {
    /// The matches, in walk order.
    pub hits: Vec<SearchHit>,
    /// Why the search stopped early ("limit", "bytes read", ...).
    pub truncated: Option<String>,
}

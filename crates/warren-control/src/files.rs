//! Files of a sandbox: read, write, list, glob and grep. Every path is resolved by the agent
//! inside the sandbox, as the sandbox's user: the host never opens a sandbox path, so `..` and
//! symlinks only ever reach the sandbox's own files. Each operation is one driver request;
//! glob and grep walk inside the sandbox, bounded in entries, bytes and matches.

use std::sync::Arc;

use tokio::sync::mpsc;
use warren_driver::{
    DriverError, ErrorKind, FileInfo, FileKind, FileWrite, GlobQuery, GrepQuery, ReadRange,
    SearchResult,
};

use crate::control::{Control, detached};
use crate::error::{ControlError, FileOp};
use crate::state::{ActivityGuard, Running};
use crate::store::{Principal, SandboxRecord};

/// Matches a glob returns when the request names no limit.
pub const GLOB_DEFAULT_LIMIT: usize = 10_000;
/// Matches a grep returns when the request names no limit.
pub const GREP_DEFAULT_LIMIT: usize = 1000;
/// Most matches any glob or grep returns, whatever its limit asks.
pub const MAX_MATCHES: usize = 100_000;

/// Makes a path absolute: relative paths resolve against the sandbox's working directory.
fn absolute(rec: &SandboxRecord, path: &str) -> Result<String, ControlError> {
    if path.is_empty() || path.contains('\0') {
        return Err(ControlError::invalid(
            "path must be a non-empty string without NUL bytes",
        ));
    }
    if path.starts_with('/') {
        return Ok(path.to_owned());
    }
    let base = rec.config.run_config.work_dir.as_deref().unwrap_or("/root");
    Ok(format!("{}/{path}", base.trim_end_matches('/')))
}

/// A file found and ready to read: its metadata decides between a full, a partial and a
/// conditional answer before any byte is read.
#[derive(Debug)]
pub struct OpenFile {
    /// The absolute path inside the sandbox.
    pub path: String,
    /// Its metadata.
    pub info: FileInfo,
    running: Running,
}

/// A file's bytes as they arrive. Holds the sandbox busy until dropped.
#[derive(Debug)]
pub struct FileBody {
    /// The bytes, in order; ends after the last, or with one error.
    pub chunks: mpsc::Receiver<Result<Vec<u8>, ControlError>>,
    _guard: ActivityGuard,
}

/// A file being uploaded. Nothing replaces the target until [`Upload::finish`]; dropped
/// unfinished, the target stays as it was.
#[derive(Debug)]
pub struct Upload {
    /// The absolute path inside the sandbox.
    pub path: String,
    writer: FileWrite,
    running: Running,
}

/// A glob: paths under `path` (default `/`) matching `pattern`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Glob {
    /// Where to search.
    pub path: Option<String>,
    /// The glob (`*` stays within one path segment, `**` crosses them).
    pub pattern: String,
    /// Most matches (default [`GLOB_DEFAULT_LIMIT`], at most [`MAX_MATCHES`]).
    pub limit: Option<usize>,
}

/// A grep: lines containing `pattern` in files under `path` (default `/`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grep {
    /// Where to search.
    pub path: Option<String>,
    /// The literal text to find.
    pub pattern: String,
    /// Only files matching this glob.
    pub glob: Option<String>,
    /// Most matches (default [`GREP_DEFAULT_LIMIT`], at most [`MAX_MATCHES`]).
    pub limit: Option<usize>,
}

fn limit(asked: Option<usize>, default: usize) -> u32 {
    u32::try_from(asked.unwrap_or(default).min(MAX_MATCHES)).unwrap_or(u32::MAX)
}

impl Control {
    async fn file_failed(
        &self,
        running: &Running,
        op: FileOp,
        path: &str,
        e: DriverError,
    ) -> ControlError {
        match e {
            DriverError::Agent(_) => ControlError::file(op, path, e),
            other => self.agent_failed(running, other).await,
        }
    }

    /// Finds a file to read and returns its metadata; a directory is refused.
    pub async fn open_file(
        self: &Arc<Self>,
        p: &Principal,
        sandbox_id: &str,
        path: &str,
    ) -> Result<OpenFile, ControlError> {
        let rec = self.visible_record(p, sandbox_id)?;
        let path = absolute(&rec, path)?;
        let running = self.running(&rec.id).await?;
        let probe = ReadRange {
            path: path.clone(),
            offset: 0,
            len: Some(0),
            user: running.record.config.run_config.user.clone(),
        };
        let info = match self.driver.read_file(&running.handle, probe).await {
            Ok(r) => r.info,
            Err(e) => return Err(self.file_failed(&running, FileOp::Read, &path, e).await),
        };
        if info.kind == FileKind::Dir {
            return Err(ControlError::File {
                op: FileOp::Read,
                message: format!("{path} is a directory"),
                path,
                kind: ErrorKind::IsADirectory,
            });
        }
        Ok(OpenFile {
            path,
            info,
            running,
        })
    }

    /// Reads `len` bytes of an opened file from `offset`.
    pub async fn read_file(
        &self,
        p: &Principal,
        file: OpenFile,
        offset: u64,
        len: u64,
    ) -> Result<FileBody, ControlError> {
        let range = ReadRange {
            path: file.path.clone(),
            offset,
            len: Some(len),
            user: file.running.record.config.run_config.user.clone(),
        };
        let mut read = match self.driver.read_file(&file.running.handle, range).await {
            Ok(r) => r,
            Err(e) => {
                return Err(self
                    .file_failed(&file.running, FileOp::Read, &file.path, e)
                    .await);
            }
        };
        self.audit(
            Some(p),
            "file.read",
            Some(&file.running.record.id),
            Some(file.path.clone()),
        );
        let (tx, chunks) = mpsc::channel(4);
        let path = file.path;
        tokio::spawn(async move {
            while let Some(chunk) = read.body.recv().await {
                let item = chunk.map_err(|e| ControlError::file(FileOp::Read, &path, e));
                if tx.send(item).await.is_err() {
                    return;
                }
            }
        });
        Ok(FileBody {
            chunks,
            _guard: file.running.guard,
        })
    }

    /// Opens a file for upload.
    pub async fn upload(
        self: &Arc<Self>,
        p: &Principal,
        sandbox_id: &str,
        path: &str,
    ) -> Result<Upload, ControlError> {
        let rec = self.visible_record(p, sandbox_id)?;
        let path = absolute(&rec, path)?;
        let running = self.running(&rec.id).await?;
        let user = running.record.config.run_config.user.clone();
        match self
            .driver
            .write_file(&running.handle, path.clone(), user)
            .await
        {
            Ok(writer) => Ok(Upload {
                path,
                writer,
                running,
            }),
            Err(e) => Err(self.file_failed(&running, FileOp::Write, &path, e).await),
        }
    }

    /// Writes the next piece of an upload.
    pub async fn upload_chunk(&self, up: &mut Upload, data: Vec<u8>) -> Result<(), ControlError> {
        if up.writer.write(data).await.is_ok() {
            return Ok(());
        }
        // The driver gave up; its reason comes with the outcome.
        let (tx, _) = FileWrite::channel();
        let writer = std::mem::replace(&mut up.writer, tx);
        let e = writer.failure().await;
        Err(self
            .file_failed(&up.running, FileOp::Write, &up.path, e)
            .await)
    }

    /// Makes an upload take effect. Runs to its end even if the caller goes away: once the
    /// commit is sent the file may be in place, and then its audit entry must be too.
    pub async fn finish_upload(
        self: &Arc<Self>,
        p: &Principal,
        up: Upload,
    ) -> Result<(), ControlError> {
        let this = self.clone();
        let p = p.clone();
        detached(async move {
            match up.writer.commit().await {
                Ok(()) => {
                    this.audit(
                        Some(&p),
                        "file.write",
                        Some(&up.running.record.id),
                        Some(up.path),
                    );
                    Ok(())
                }
                Err(e) => Err(this
                    .file_failed(&up.running, FileOp::Write, &up.path, e)
                    .await),
            }
        })
        .await
    }

    /// The sandbox and absolute root of a search, checked before anything is woken.
    async fn search_target(
        self: &Arc<Self>,
        p: &Principal,
        sandbox_id: &str,
        path: Option<&str>,
        pattern: &str,
    ) -> Result<(Running, String), ControlError> {
        let rec = self.visible_record(p, sandbox_id)?;
        let root = absolute(&rec, path.unwrap_or("/"))?;
        if pattern.is_empty() {
            return Err(ControlError::invalid("pattern must not be empty"));
        }
        Ok((self.running(&rec.id).await?, root))
    }

    async fn search_done(
        &self,
        running: &Running,
        root: &str,
        result: Result<SearchResult, DriverError>,
    ) -> Result<SearchResult, ControlError> {
        match result {
            Ok(r) => Ok(r),
            Err(e) => Err(self.file_failed(running, FileOp::Read, root, e).await),
        }
    }

    /// Paths matching a glob.
    pub async fn glob(
        self: &Arc<Self>,
        p: &Principal,
        sandbox_id: &str,
        req: Glob,
    ) -> Result<SearchResult, ControlError> {
        let (running, root) = self
            .search_target(p, sandbox_id, req.path.as_deref(), &req.pattern)
            .await?;
        let query = GlobQuery {
            root: root.clone(),
            pattern: req.pattern,
            limit: limit(req.limit, GLOB_DEFAULT_LIMIT),
            user: running.record.config.run_config.user.clone(),
        };
        let result = self.driver.glob(&running.handle, query).await;
        self.search_done(&running, &root, result).await
    }

    /// Lines containing a string.
    pub async fn grep(
        self: &Arc<Self>,
        p: &Principal,
        sandbox_id: &str,
        req: Grep,
    ) -> Result<SearchResult, ControlError> {
        let (running, root) = self
            .search_target(p, sandbox_id, req.path.as_deref(), &req.pattern)
            .await?;
        let query = GrepQuery {
            root: root.clone(),
            pattern: req.pattern,
            glob: req.glob,
            limit: limit(req.limit, GREP_DEFAULT_LIMIT),
            user: running.record.config.run_config.user.clone(),
        };
        let result = self.driver.grep(&running.handle, query).await;
        self.search_done(&running, &root, result).await
    }
}

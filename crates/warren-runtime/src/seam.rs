//! The runtime as the control plane sees it: [`warren_driver::Driver`] for [`JailDriver`].
//! Lifecycle calls go to the tier's driver; operations on a running sandbox become agent
//! protocol sessions, one connection each, whose frames are turned into the seam's typed
//! events and chunks here, so nothing above the runtime speaks the protocol.

use std::collections::HashSet;

use tokio::sync::mpsc;
use warren_driver::{
    BoxFuture, CommandChannel, CommandEvent, CommandInput, CommandOpen, CommandSummary,
    DriverError as SeamError, FailureKind, FileInfo, FileRead, FileWrite, GlobQuery, GrepQuery,
    ImageStatus, PortStream, ReadRange, SandboxHandle, SandboxSpec, SearchHit, SearchResult, Tier,
};
use warren_proto::{MAX_CHUNK_LEN, Request, Response};
use warren_types::{ImageRef, SandboxId};

use crate::agent::{AgentConn, AgentConnError, AgentReader, AgentWriter};
use crate::driver::DriverError;
use crate::image::error_chain;
use crate::jail_driver::JailDriver;

/// A runtime failure in the seam's terms: agent answers stay typed, everything else carries
/// its public reason (no host paths) and its whole chain for the log.
fn seam_error(e: DriverError) -> SeamError {
    let kind = match &e {
        DriverError::Agent(AgentConnError::Agent(a)) => return SeamError::Agent(a.clone()),
        DriverError::Agent(a) => return SeamError::Unreachable(error_chain(a)),
        DriverError::Storage(_) | DriverError::NoStorage(_) => FailureKind::Storage,
        DriverError::StopTimeout(_) => FailureKind::StopTimeout,
        DriverError::Cgroup(_) => FailureKind::Cgroup,
        DriverError::Slot(_) => FailureKind::Slot,
        _ => FailureKind::Other,
    };
    SeamError::failed(kind, e.public_reason(), error_chain(&e))
}

fn conn_error(e: AgentConnError) -> SeamError {
    match e {
        AgentConnError::Agent(a) => SeamError::Agent(a),
        other => SeamError::Unreachable(error_chain(&other)),
    }
}

fn unexpected(what: &str, got: Option<Response>) -> SeamError {
    SeamError::Unreachable(format!("unexpected reply to {what}: {got:?}"))
}

impl JailDriver {
    /// A connection to the sandbox's agent with `req` sent on it.
    async fn session(&self, handle: &SandboxHandle, req: &Request) -> Result<AgentConn, SeamError> {
        AgentConn::open(&handle.agent_socket, req)
            .await
            .map_err(conn_error)
    }

    /// A glob or grep: match batches until `SearchEnd`. The agent bounds the matches, so
    /// collecting them here is bounded too.
    async fn search(
        &self,
        handle: &SandboxHandle,
        req: &Request,
    ) -> Result<SearchResult, SeamError> {
        let mut conn = self.session(handle, req).await?;
        let mut hits = Vec::new();
        loop {
            match conn.recv().await.map_err(conn_error)? {
                Some(Response::GlobMatches { matches }) => {
                    hits.extend(matches.into_iter().map(|m| SearchHit::Path {
                        path: m.path,
                        is_dir: m.is_dir,
                        size: m.size,
                        mtime_ns: m.mtime_ns,
                    }));
                }
                Some(Response::GrepMatches { matches }) => {
                    hits.extend(matches.into_iter().map(|m| SearchHit::Line {
                        path: m.path,
                        line: m.line,
                        text: m.text,
                        text_truncated: m.text_truncated,
                    }));
                }
                Some(Response::SearchEnd { truncated }) => {
                    return Ok(SearchResult {
                        hits,
                        truncated: truncated.map(|cut| cut.reason().to_owned()),
                    });
                }
                // An error after some batches voids them (the agent failed midway).
                Some(Response::Error(e)) => return Err(SeamError::Agent(e)),
                other => return Err(unexpected("a search", other)),
            }
        }
    }

    /// One request, one reply that is not an error.
    async fn call(&self, handle: &SandboxHandle, req: &Request) -> Result<Response, SeamError> {
        let mut conn = self.session(handle, req).await?;
        conn.reply().await.map_err(conn_error)
    }
}

/// Frames of an attached command, turned into events until the command ends or the client
/// goes away. Reads run on their own task: `AgentReader::recv` is not cancel-safe.
async fn read_events(mut reader: AgentReader, tx: mpsc::Sender<CommandEvent>) {
    loop {
        let (event, last) = match reader.recv().await {
            Ok(Some(Response::Started { command_id, pid })) => {
                (CommandEvent::Started { command_id, pid }, false)
            }
            Ok(Some(Response::Output {
                stream,
                offset,
                data,
            })) => (
                CommandEvent::Output {
                    stream,
                    offset,
                    data,
                },
                false,
            ),
            Ok(Some(Response::Exit(status))) => (CommandEvent::Exit(status), true),
            Ok(Some(Response::Error(e))) => (CommandEvent::Error(e), true),
            Ok(Some(_)) => continue,
            Ok(None) => (
                CommandEvent::Lost("the agent closed the connection".into()),
                true,
            ),
            Err(e) => (CommandEvent::Lost(error_chain(&e)), true),
        };
        if tx.send(event).await.is_err() || last {
            return;
        }
    }
}

/// Carries a client's input to the command until the client drops its channel or the command
/// ends; then the connection closes, which detaches.
async fn run_command(
    reader: AgentReader,
    mut writer: AgentWriter,
    events: mpsc::Sender<CommandEvent>,
    mut input: mpsc::Receiver<CommandInput>,
) {
    let mut reading = tokio::spawn(read_events(reader, events));
    loop {
        tokio::select! {
            _ = &mut reading => return,
            msg = input.recv() => {
                let req = match msg {
                    Some(CommandInput::Data(data)) => Request::Input { data },
                    Some(CommandInput::CloseStdin) => Request::CloseStdin,
                    Some(CommandInput::Kill) => Request::Kill,
                    Some(CommandInput::Signal(signal)) => Request::Signal { signal },
                    Some(CommandInput::Resize(size)) => Request::Resize {
                        rows: size.rows,
                        cols: size.cols,
                    },
                    None => break,
                };
                if writer.send(&req).await.is_err() {
                    break;
                }
            }
        }
    }
    reading.abort();
}

/// Streams a file's bytes after its `FileInfo`.
async fn read_body(mut conn: AgentConn, tx: mpsc::Sender<Result<Vec<u8>, SeamError>>) {
    loop {
        let item = match conn.recv().await {
            Ok(Some(Response::FileData { data })) => Ok(data),
            Ok(Some(Response::FileEnd)) => return,
            Ok(Some(Response::Error(e))) => Err(SeamError::Agent(e)),
            Ok(other) => Err(unexpected("a file read", other)),
            Err(e) => Err(conn_error(e)),
        };
        let stop = item.is_err();
        if tx.send(item).await.is_err() || stop {
            return;
        }
    }
}

/// Sends an upload's chunks; on commit ends the file and reports the agent's answer. Dropped
/// without a commit, the connection closes without `FileEnd` and the agent discards the file.
async fn write_body(mut conn: AgentConn, mut end: warren_driver::FileWriteEnd) {
    while let Some(chunk) = end.chunks.recv().await {
        for piece in chunk.chunks(MAX_CHUNK_LEN) {
            let sent = conn
                .send(&Request::FileData {
                    data: piece.to_vec(),
                })
                .await;
            if let Err(e) = sent {
                // The agent stopped reading: it usually said why first.
                let why = match conn.recv().await {
                    Ok(Some(Response::Error(a))) => SeamError::Agent(a),
                    _ => conn_error(e),
                };
                let _ = end.done.send(Err(why));
                return;
            }
        }
    }
    if end.commit.await.is_err() {
        return;
    }
    let result = match conn.send(&Request::FileEnd).await {
        Ok(()) => match conn.recv().await {
            Ok(Some(Response::Ok)) => Ok(()),
            Ok(Some(Response::Error(a))) => Err(SeamError::Agent(a)),
            Ok(other) => Err(unexpected("a file write", other)),
            Err(e) => Err(conn_error(e)),
        },
        Err(e) => Err(conn_error(e)),
    };
    let _ = end.done.send(result);
}

type VolumeResult = Result<(), SeamError>;
type VolumeFuture<'a> = BoxFuture<'a, VolumeResult>;

/// A storage operation on the blocking pool (btrfs ioctls and directory work).
async fn blocking(
    f: impl FnOnce() -> Result<(), crate::storage::StorageError> + Send + 'static,
) -> Result<(), SeamError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(|e| seam_error(DriverError::Storage(e))),
        Err(e) => Err(SeamError::failed(
            FailureKind::Other,
            "an internal task failed",
            e.to_string(),
        )),
    }
}

impl warren_driver::Driver for JailDriver {
    fn tier_support(&self, tier: Tier) -> Result<(), String> {
        match tier {
            Tier::Jail => Ok(()),
            Tier::Vm => self.vm_assets().map(|_| ()),
        }
    }

    fn create<'a>(
        &'a self,
        spec: &'a SandboxSpec,
    ) -> BoxFuture<'a, Result<SandboxHandle, SeamError>> {
        Box::pin(async move { JailDriver::create(self, spec).await.map_err(seam_error) })
    }

    fn start<'a>(
        &'a self,
        spec: &'a SandboxSpec,
    ) -> BoxFuture<'a, Result<SandboxHandle, SeamError>> {
        Box::pin(async move { JailDriver::start(self, spec).await.map_err(seam_error) })
    }

    fn stop<'a>(
        &'a self,
        id: &'a SandboxId,
        handle: Option<&'a SandboxHandle>,
    ) -> BoxFuture<'a, Result<(), SeamError>> {
        Box::pin(async move { JailDriver::stop(self, id, handle).await.map_err(seam_error) })
    }

    fn destroy<'a>(
        &'a self,
        id: &'a SandboxId,
        handle: Option<&'a SandboxHandle>,
    ) -> BoxFuture<'a, Result<(), SeamError>> {
        Box::pin(async move {
            JailDriver::destroy(self, id, handle)
                .await
                .map_err(seam_error)
        })
    }

    fn has_storage(&self, id: &SandboxId) -> bool {
        JailDriver::has_storage(self, id)
    }

    fn image_status(&self, image: &ImageRef) -> ImageStatus {
        self.storage().image_status(image)
    }

    fn image_generation(&self, image: &ImageRef) -> u64 {
        self.storage().image_generation(image)
    }

    fn capture<'a>(
        &'a self,
        id: &'a SandboxId,
        image: &'a ImageRef,
    ) -> BoxFuture<'a, Result<(), SeamError>> {
        Box::pin(async move {
            let (this, id, image) = (self.clone(), id.clone(), image.clone());
            blocking(move || this.storage().capture_rootfs(&id, &image)).await
        })
    }

    fn fork_storage<'a>(
        &'a self,
        src: &'a SandboxId,
        dst: &'a SandboxId,
        disk_bytes: u64,
    ) -> BoxFuture<'a, Result<(), SeamError>> {
        Box::pin(async move {
            let (this, src, dst) = (self.clone(), src.clone(), dst.clone());
            blocking(move || this.storage().fork_rootfs(&src, &dst, disk_bytes).map(drop)).await
        })
    }

    fn remove_image<'a>(&'a self, image: &'a ImageRef) -> BoxFuture<'a, Result<(), SeamError>> {
        Box::pin(async move {
            let (this, image) = (self.clone(), image.clone());
            blocking(move || match this.storage().remove_image(&image) {
                Err(crate::storage::StorageError::ImageMissing(_)) => Ok(()),
                other => other,
            })
            .await
        })
    }

    fn build_image<'a>(
        &'a self,
        image: &'a ImageRef,
        source: &'a warren_driver::ImageSource,
        max_bytes: u64,
        progress: &'a warren_driver::BuildProgress,
    ) -> BoxFuture<'a, Result<warren_driver::BuiltImage, SeamError>> {
        Box::pin(async move {
            crate::image::oci::build(self.storage(), image, source, max_bytes, progress)
                .await
                .map_err(seam_error)
        })
    }

    fn gc_images<'a>(
        &'a self,
        keep: &'a HashSet<ImageRef>,
    ) -> BoxFuture<'a, Result<Vec<ImageRef>, SeamError>> {
        Box::pin(async move {
            let (this, keep) = (self.clone(), keep.clone());
            let run = move || -> Result<Vec<ImageRef>, crate::storage::StorageError> {
                let mut gone = Vec::new();
                for image in this.storage().snapshot_images()? {
                    if !keep.contains(&image) {
                        this.storage().remove_image(&image)?;
                        gone.push(image);
                    }
                }
                Ok(gone)
            };
            match tokio::task::spawn_blocking(run).await {
                Ok(r) => r.map_err(|e| seam_error(DriverError::Storage(e))),
                Err(e) => Err(SeamError::failed(
                    FailureKind::Other,
                    "an internal task failed",
                    e.to_string(),
                )),
            }
        })
    }

    fn create_volume<'a>(&'a self, id: &'a str, size: u64) -> BoxFuture<'a, VolumeResult> {
        let (this, id) = (self.clone(), id.to_owned());
        Box::pin(blocking(move || this.storage().create_volume(&id, size)))
    }

    fn clone_volume<'a>(&'a self, src: &'a str, dst: &'a str, size: u64) -> VolumeFuture<'a> {
        let (this, src, dst) = (self.clone(), src.to_owned(), dst.to_owned());
        Box::pin(blocking(move || {
            this.storage().clone_volume(&src, &dst, size)
        }))
    }

    fn resize_volume<'a>(&'a self, id: &'a str, size: u64) -> BoxFuture<'a, VolumeResult> {
        let (this, id) = (self.clone(), id.to_owned());
        Box::pin(blocking(move || this.storage().resize_volume(&id, size)))
    }

    fn delete_volume<'a>(&'a self, id: &'a str) -> BoxFuture<'a, VolumeResult> {
        let (this, id) = (self.clone(), id.to_owned());
        Box::pin(blocking(move || this.storage().delete_volume(&id)))
    }

    fn volume_used_bytes(&self, id: &str) -> Option<u64> {
        self.storage().volume_used_bytes(id)
    }

    fn gc<'a>(
        &'a self,
        keep: &'a HashSet<SandboxId>,
    ) -> BoxFuture<'a, Result<Vec<SandboxId>, SeamError>> {
        Box::pin(async move { JailDriver::gc(self, keep).await.map_err(seam_error) })
    }

    fn is_running(&self, handle: &SandboxHandle) -> bool {
        JailDriver::is_running(self, handle)
    }

    fn oom_kills(&self, id: &SandboxId) -> Option<u64> {
        JailDriver::oom_kills(self, id).ok()
    }

    fn command<'a>(
        &'a self,
        handle: &'a SandboxHandle,
        open: CommandOpen,
    ) -> BoxFuture<'a, Result<CommandChannel, SeamError>> {
        Box::pin(async move {
            let req = match open {
                CommandOpen::Exec(spec) => Request::Exec(spec),
                CommandOpen::Attach {
                    command_id,
                    stdout_offset,
                    stderr_offset,
                } => Request::Attach {
                    command_id,
                    stdout_offset,
                    stderr_offset,
                },
            };
            let (reader, writer) = self.session(handle, &req).await?.split();
            // Bounded both ways: a consumer that stops reading stops this task, the socket
            // fills, and the agent slows the command down.
            let (events_tx, events) = mpsc::channel(16);
            let (input, input_rx) = mpsc::channel(16);
            tokio::spawn(run_command(reader, writer, events_tx, input_rx));
            Ok(CommandChannel { events, input })
        })
    }

    fn list_commands<'a>(
        &'a self,
        handle: &'a SandboxHandle,
    ) -> BoxFuture<'a, Result<Vec<CommandSummary>, SeamError>> {
        Box::pin(async move {
            match self.call(handle, &Request::ListCommands).await? {
                Response::CommandList { commands } => Ok(commands),
                other => Err(unexpected("ListCommands", Some(other))),
            }
        })
    }

    fn read_file<'a>(
        &'a self,
        handle: &'a SandboxHandle,
        range: ReadRange,
    ) -> BoxFuture<'a, Result<FileRead, SeamError>> {
        Box::pin(async move {
            let req = Request::ReadFile {
                path: range.path,
                offset: range.offset,
                len: range.len,
                user: range.user,
            };
            let mut conn = self.session(handle, &req).await?;
            let info = match conn.recv().await.map_err(conn_error)? {
                Some(Response::FileInfo(info)) => info,
                Some(Response::Error(e)) => return Err(SeamError::Agent(e)),
                other => return Err(unexpected("ReadFile", other)),
            };
            let (tx, body) = mpsc::channel(8);
            tokio::spawn(read_body(conn, tx));
            Ok(FileRead { info, body })
        })
    }

    fn write_file<'a>(
        &'a self,
        handle: &'a SandboxHandle,
        path: String,
        user: Option<String>,
    ) -> BoxFuture<'a, Result<FileWrite, SeamError>> {
        Box::pin(async move {
            let req = Request::WriteFile {
                path,
                mode: None,
                user,
            };
            let conn = self.session(handle, &req).await?;
            let (writer, end) = FileWrite::channel();
            tokio::spawn(write_body(conn, end));
            Ok(writer)
        })
    }

    fn list_dir<'a>(
        &'a self,
        handle: &'a SandboxHandle,
        path: String,
    ) -> BoxFuture<'a, Result<(Vec<FileInfo>, bool), SeamError>> {
        Box::pin(async move {
            match self.call(handle, &Request::ListDir { path }).await? {
                Response::DirEntries { entries, truncated } => Ok((entries, truncated)),
                other => Err(unexpected("ListDir", Some(other))),
            }
        })
    }

    fn glob<'a>(
        &'a self,
        handle: &'a SandboxHandle,
        query: GlobQuery,
    ) -> BoxFuture<'a, Result<SearchResult, SeamError>> {
        Box::pin(async move {
            let req = Request::Glob {
                root: query.root,
                pattern: query.pattern,
                limit: query.limit,
                user: query.user,
            };
            self.search(handle, &req).await
        })
    }

    fn grep<'a>(
        &'a self,
        handle: &'a SandboxHandle,
        query: GrepQuery,
    ) -> BoxFuture<'a, Result<SearchResult, SeamError>> {
        Box::pin(async move {
            let req = Request::Grep {
                root: query.root,
                pattern: query.pattern,
                glob: query.glob,
                limit: query.limit,
                user: query.user,
            };
            self.search(handle, &req).await
        })
    }

    fn connect_port<'a>(
        &'a self,
        handle: &'a SandboxHandle,
        port: u16,
    ) -> BoxFuture<'a, Result<PortStream, SeamError>> {
        Box::pin(async move {
            let mut conn = self.session(handle, &Request::DialTcp { port }).await?;
            match conn.recv().await.map_err(conn_error)? {
                Some(Response::Ok) => {}
                Some(Response::Error(e)) => return Err(SeamError::Agent(e)),
                other => return Err(unexpected("DialTcp", other)),
            }
            let stream = conn.into_stream().map_err(conn_error)?;
            Ok(Box::new(stream) as PortStream)
        })
    }
}

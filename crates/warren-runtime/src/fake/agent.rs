//! The fake agent: serves one end of a socket pair with the real protocol of `warren-proto`, the
//! same message flow as `warren-agent`, over in-memory commands and files.

use std::collections::HashMap;
use std::os::fd::AsFd;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::sync::watch;
use warren_proto::{
    AgentError, ErrorKind, ExecSpec, MAX_CHUNK_LEN, PROTOCOL_VERSION, ProtoError, Request, Response,
};

use super::command::{self, Command, Next};
use super::files::Files;

/// One boot of a fake sandbox: its command sessions, and its files (shared with later boots).
#[derive(Debug)]
pub(crate) struct FakeAgent {
    files: Arc<Mutex<Files>>,
    commands: Mutex<HashMap<String, Arc<Command>>>,
    next_pid: Mutex<u32>,
    /// Turns false when the sandbox stops or crashes: every command and connection ends.
    alive: watch::Sender<bool>,
}

type Result<T> = std::result::Result<T, ProtoError>;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every update under these locks leaves the value whole.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn bad(msg: impl Into<String>) -> Response {
    Response::Error(AgentError::new(ErrorKind::BadRequest, msg))
}

async fn send<W: AsyncWrite + Unpin>(w: &mut W, resp: &Response) -> Result<()> {
    w.write_all(&warren_proto::encode(resp)?).await?;
    Ok(())
}

async fn recv<R: AsyncRead + Unpin>(r: &mut R) -> Result<Option<Request>> {
    let mut prefix = [0u8; 4];
    match r.read_exact(&mut prefix).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let mut body = vec![0u8; warren_proto::body_len(prefix)?];
    r.read_exact(&mut body).await?;
    warren_proto::decode(&body).map(Some)
}

impl FakeAgent {
    pub(crate) fn new(files: Arc<Mutex<Files>>) -> Arc<Self> {
        Arc::new(Self {
            files,
            commands: Mutex::new(HashMap::new()),
            // 1 is the agent itself.
            next_pid: Mutex::new(2),
            alive: watch::channel(true).0,
        })
    }

    /// Ends every command and connection of this boot.
    pub(crate) fn shut_down(&self) {
        self.alive.send_replace(false);
    }

    /// Serves one connection in a task of its own.
    pub(crate) fn serve(self: &Arc<Self>, stream: UnixStream) {
        let agent = self.clone();
        let mut alive = self.alive.subscribe();
        tokio::spawn(async move {
            tokio::select! {
                _ = agent.handle(stream) => {}
                _ = alive.wait_for(|a| !*a) => {}
            }
        });
    }

    async fn handle(self: Arc<Self>, mut stream: UnixStream) -> Result<()> {
        match recv(&mut stream).await? {
            None => return Ok(()),
            Some(Request::Hello { version }) if version == PROTOCOL_VERSION => {
                let hello = Response::Hello {
                    version: PROTOCOL_VERSION,
                    agent_version: format!("fake-{}", env!("CARGO_PKG_VERSION")),
                };
                send(&mut stream, &hello).await?;
            }
            Some(Request::Hello { version }) => {
                let msg =
                    format!("agent speaks protocol {PROTOCOL_VERSION}, client speaks {version}");
                let err = AgentError::new(ErrorKind::VersionMismatch, msg);
                return send(&mut stream, &Response::Error(err)).await;
            }
            Some(_) => return send(&mut stream, &bad("the first frame must be Hello")).await,
        }
        // One-shot operations may follow each other; streaming ones own the rest of the
        // connection, as with the real agent.
        loop {
            let Some(req) = recv(&mut stream).await? else {
                return Ok(());
            };
            let resp = match req {
                Request::Ping => Response::Pong,
                Request::ListCommands => {
                    let mut commands: Vec<_> =
                        lock(&self.commands).values().map(|c| c.summary()).collect();
                    commands.sort_by(|a, b| a.command_id.cmp(&b.command_id));
                    Response::CommandList { commands }
                }
                Request::Stat { path } => lock(&self.files)
                    .stat(&path)
                    .map_or_else(Response::Error, Response::FileInfo),
                Request::ListDir { path } => match lock(&self.files).list(&path) {
                    Ok((entries, truncated)) => Response::DirEntries { entries, truncated },
                    Err(e) => Response::Error(e),
                },
                Request::ReadFile {
                    path, offset, len, ..
                } => {
                    self.read_file(&mut stream, &path, offset, len).await?;
                    continue;
                }
                Request::WriteFile { path, mode, .. } => {
                    if !self.write_file(&mut stream, &path, mode).await? {
                        return Ok(());
                    }
                    continue;
                }
                Request::Exec(spec) => {
                    let cmd = match self.exec(&spec) {
                        Ok(cmd) => cmd,
                        Err(e) => return send(&mut stream, &Response::Error(e)).await,
                    };
                    return attached(&cmd, [0, 0], stream).await;
                }
                Request::Attach {
                    command_id,
                    stdout_offset,
                    stderr_offset,
                } => {
                    let found = lock(&self.commands).get(&command_id).cloned();
                    let Some(cmd) = found else {
                        let err = AgentError::new(
                            ErrorKind::CommandNotFound,
                            format!("no command {command_id}"),
                        );
                        return send(&mut stream, &Response::Error(err)).await;
                    };
                    return attached(&cmd, [stdout_offset, stderr_offset], stream).await;
                }
                Request::DialTcp { port } => {
                    let err = AgentError::new(
                        ErrorKind::ConnectionRefused,
                        format!("cannot connect to port {port}: the fake sandbox has no network"),
                    );
                    return send(&mut stream, &Response::Error(err)).await;
                }
                other => {
                    let name = format!("{other:?}");
                    let name = name.split([' ', '{', '(']).next().unwrap_or_default();
                    let msg = format!("unexpected {name} outside a command or file transfer");
                    return send(&mut stream, &bad(msg)).await;
                }
            };
            send(&mut stream, &resp).await?;
        }
    }

    /// Starts a command, or finds the one the spec's id names (Exec is idempotent).
    fn exec(&self, spec: &ExecSpec) -> std::result::Result<Arc<Command>, AgentError> {
        if spec.argv.is_empty() {
            return Err(AgentError::new(ErrorKind::SpawnFailed, "empty argv"));
        }
        let mut commands = lock(&self.commands);
        if let Some(id) = &spec.command_id
            && let Some(cmd) = commands.get(id)
        {
            return Ok(cmd.clone());
        }
        let id = spec
            .command_id
            .clone()
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let pid = {
            let mut next = lock(&self.next_pid);
            *next += 1;
            *next - 1
        };
        let cmd = Command::spawn(id.clone(), pid, spec, self.alive.subscribe());
        commands.insert(id, cmd.clone());
        Ok(cmd)
    }

    async fn read_file(
        &self,
        stream: &mut UnixStream,
        path: &str,
        offset: u64,
        len: Option<u64>,
    ) -> Result<()> {
        let read = lock(&self.files).read(path);
        let (info, data) = match read {
            Ok(v) => v,
            Err(e) => return send(stream, &Response::Error(e)).await,
        };
        send(stream, &Response::FileInfo(info)).await?;
        let start = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(data.len());
        let end = len
            .and_then(|l| usize::try_from(l).ok())
            .map_or(data.len(), |l| start.saturating_add(l).min(data.len()));
        for chunk in data[start..end].chunks(MAX_CHUNK_LEN) {
            let frame = Response::FileData {
                data: chunk.to_vec(),
            };
            send(stream, &frame).await?;
        }
        send(stream, &Response::FileEnd).await
    }

    /// Receives a file. Returns whether the connection can carry another operation.
    async fn write_file(
        &self,
        stream: &mut UnixStream,
        path: &str,
        mode: Option<u32>,
    ) -> Result<bool> {
        let mut data = Vec::new();
        loop {
            match recv(stream).await? {
                None => return Ok(false),
                Some(Request::FileData { data: d }) => data.extend_from_slice(&d),
                Some(Request::FileEnd) => break,
                Some(_) => {
                    send(stream, &bad("expected FileData or FileEnd")).await?;
                    return Ok(false);
                }
            }
        }
        let written = lock(&self.files).write(path, data, mode);
        send(
            stream,
            &written.map_or_else(Response::Error, |()| Response::Ok),
        )
        .await?;
        Ok(true)
    }
}

/// Streams a command to a client until it exits or the client leaves; leaving detaches.
async fn attached(cmd: &Arc<Command>, offsets: [u64; 2], mut stream: UnixStream) -> Result<()> {
    let started = Response::Started {
        command_id: cmd.id.clone(),
        pid: cmd.pid,
    };
    send(&mut stream, &started).await?;
    cmd.attach();
    let (mut rd, wr) = stream.split();
    let result = tokio::select! {
        r = pump(cmd, offsets, wr) => r,
        r = async {
            requests(cmd, &mut rd).await?;
            // A half-closed client may still be reading: stream on until it hangs up.
            wait_for_hangup(&rd).await;
            Ok(())
        } => r,
    };
    cmd.detach();
    result
}

async fn pump(
    cmd: &Command,
    mut offsets: [u64; 2],
    mut wr: tokio::net::unix::WriteHalf<'_>,
) -> Result<()> {
    let mut progress = cmd.subscribe();
    let mut turn = 0;
    loop {
        progress.borrow_and_update();
        match cmd.next_frame(&mut offsets, &mut turn) {
            Next::Output {
                stream,
                offset,
                data,
            } => {
                let frame = Response::Output {
                    stream,
                    offset,
                    data,
                };
                send(&mut wr, &frame).await?;
            }
            Next::Exit(status) => return send(&mut wr, &Response::Exit(status)).await,
            Next::Wait => {
                if progress.changed().await.is_err() {
                    return Ok(());
                }
            }
        }
    }
}

async fn requests(cmd: &Command, rd: &mut tokio::net::unix::ReadHalf<'_>) -> Result<()> {
    loop {
        match recv(rd).await? {
            None => return Ok(()),
            Some(Request::Input { data }) => cmd.input(data),
            Some(Request::CloseStdin) => cmd.close_stdin(),
            Some(Request::Kill) => cmd.kill(command::killed(warren_proto::ExitReason::Killed)),
            Some(Request::Signal { signal }) => cmd.kill(warren_proto::ExitStatus {
                code: 128 + signal,
                signal: Some(signal),
                reason: warren_proto::ExitReason::Exited,
            }),
            Some(Request::Resize { .. }) => {}
            // Anything else is a protocol violation; dropping the connection detaches.
            Some(_) => return Ok(()),
        }
    }
}

/// Returns once the peer has closed its end entirely: POLLHUP on a unix stream socket means both
/// directions are shut, unlike the read EOF of a half-close.
async fn wait_for_hangup(rd: &tokio::net::unix::ReadHalf<'_>) {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    let stream: &UnixStream = rd.as_ref();
    loop {
        let mut fds = [PollFd::new(stream.as_fd(), PollFlags::POLLOUT)];
        let hung_up = match poll(&mut fds, PollTimeout::ZERO) {
            Ok(_) => fds[0]
                .revents()
                .is_some_and(|r| r.intersects(PollFlags::POLLHUP | PollFlags::POLLERR)),
            Err(_) => true,
        };
        if hung_up {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

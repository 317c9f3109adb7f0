//! One client connection: the handshake, then operations.
//!
//! Whatever a client sends, the worst outcome is that its own connection is closed.

use std::os::fd::AsFd;
use std::sync::Arc;

use tokio::net::UnixStream;
use tokio::sync::mpsc;
use warren_proto::{
    AgentError, ErrorKind, ExitReason, MAX_CHUNK_LEN, PROTOCOL_VERSION, Request, Response,
    SearchCut,
};

use crate::exec::{self, Started};
use crate::files::{self, FileWriter};
use crate::registry::{Agent, Lookup};
use crate::search;
use crate::session::{Next, Session, SharedFd};
use crate::wire::{self, WireError, read_request, send};

/// Serves one connection until it closes or misbehaves.
pub(crate) async fn serve(agent: Arc<Agent>, mut stream: UnixStream) {
    let _ = handle(&agent, &mut stream).await;
}

fn bad(msg: impl Into<String>) -> Response {
    Response::Error(AgentError::new(ErrorKind::BadRequest, msg))
}

async fn handle(agent: &Arc<Agent>, stream: &mut UnixStream) -> Result<(), WireError> {
    match read_request(stream).await? {
        None => return Ok(()),
        Some(Request::Hello { version }) if version == PROTOCOL_VERSION => {
            let hello = Response::Hello {
                version: PROTOCOL_VERSION,
                agent_version: env!("CARGO_PKG_VERSION").to_owned(),
            };
            send(stream, &hello).await?;
        }
        Some(Request::Hello { version }) => {
            let msg = format!("agent speaks protocol {PROTOCOL_VERSION}, client speaks {version}");
            send(
                stream,
                &Response::Error(AgentError::new(ErrorKind::VersionMismatch, msg)),
            )
            .await?;
            return Ok(());
        }
        Some(_) => {
            send(stream, &bad("the first frame must be Hello")).await?;
            return Ok(());
        }
    }
    // One-shot operations may follow each other; streaming ones own the rest of the connection.
    loop {
        let Some(req) = read_request(stream).await? else {
            return Ok(());
        };
        match req {
            Request::Ping => send(stream, &Response::Pong).await?,
            Request::ListCommands => {
                let commands = agent.registry().list();
                send(stream, &Response::CommandList { commands }).await?;
            }
            Request::Stat { path } => {
                let r = blocking(move || files::stat(&path)).await;
                send(stream, &r.map_or_else(Response::Error, Response::FileInfo)).await?;
            }
            Request::ListDir { path } => {
                let r = blocking(move || files::list_dir(&path)).await;
                let resp = match r {
                    Ok((entries, truncated)) => Response::DirEntries { entries, truncated },
                    Err(e) => Response::Error(e),
                };
                send(stream, &resp).await?;
            }
            Request::ReadFile {
                path,
                offset,
                len,
                user,
            } => read_file(stream, path, offset, len, user).await?,
            Request::WriteFile { path, mode, user } => {
                if !write_file(stream, path, mode, user).await? {
                    return Ok(());
                }
            }
            Request::Exec(spec) => {
                let session = match exec::exec(agent, spec) {
                    Ok(Started::New(s) | Started::Existing(s)) => s,
                    Err(e) => return send(stream, &Response::Error(e)).await,
                };
                return attached(session, 0, 0, stream).await;
            }
            Request::Attach {
                command_id,
                stdout_offset,
                stderr_offset,
            } => {
                let lookup = agent.registry().lookup(&command_id);
                let session = match lookup {
                    Lookup::Found(s) => s,
                    Lookup::Expired => {
                        let msg = format!("command {command_id} finished and its session expired");
                        return send(
                            stream,
                            &Response::Error(AgentError::new(ErrorKind::SessionExpired, msg)),
                        )
                        .await;
                    }
                    Lookup::Unknown => {
                        let msg = format!("no command {command_id}");
                        return send(
                            stream,
                            &Response::Error(AgentError::new(ErrorKind::CommandNotFound, msg)),
                        )
                        .await;
                    }
                };
                return attached(session, stdout_offset, stderr_offset, stream).await;
            }
            Request::Glob {
                root,
                pattern,
                limit,
                user,
            } => {
                search(stream, user, move |sink| {
                    search::glob(&root, &pattern, limit, sink)
                })
                .await?;
            }
            Request::Grep {
                root,
                pattern,
                glob,
                limit,
                user,
            } => {
                search(stream, user, move |sink| {
                    search::grep(&root, &pattern, glob.as_deref(), limit, sink)
                })
                .await?;
            }
            Request::DialTcp { port } => return dial(stream, port).await,
            other => {
                let name = format!("{other:?}");
                let name = name
                    .split([' ', '{', '('])
                    .next()
                    .unwrap_or_default()
                    .to_owned();
                return send(
                    stream,
                    &bad(format!(
                        "unexpected {name} outside a command or file transfer"
                    )),
                )
                .await;
            }
        }
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, AgentError> + Send + 'static,
) -> Result<T, AgentError> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|_| Err(AgentError::new(ErrorKind::Io, "file operation failed")))
}

async fn read_file(
    stream: &mut UnixStream,
    path: String,
    offset: u64,
    len: Option<u64>,
    user: Option<String>,
) -> Result<(), WireError> {
    let p = path.clone();
    let opened = blocking(move || {
        let (mut file, info) = files::open_for_read(&p, user.as_deref())?;
        files::seek(&mut file, offset, &p)?;
        Ok((file, info))
    })
    .await;
    let (file, info) = match opened {
        Ok(v) => v,
        Err(e) => return send(stream, &Response::Error(e)).await,
    };
    send(stream, &Response::FileInfo(info)).await?;
    let mut left = len.unwrap_or(u64::MAX);
    let mut file = Some(file);
    while left > 0 {
        let Some(mut f) = file.take() else { break };
        let want = usize::try_from(left.min(MAX_CHUNK_LEN as u64)).unwrap_or(MAX_CHUNK_LEN);
        let p = path.clone();
        let r = blocking(move || files::read_chunk(&mut f, want, &p).map(|chunk| (f, chunk))).await;
        let chunk = match r {
            Ok((f, chunk)) => {
                file = Some(f);
                chunk
            }
            // The FileInfo is out already; an error frame ends the transfer instead of FileEnd.
            Err(e) => return send(stream, &Response::Error(e)).await,
        };
        if chunk.is_empty() {
            break;
        }
        left -= chunk.len() as u64;
        wire::send_raw(stream, &wire::file_data_frame(&chunk)).await?;
    }
    send(stream, &Response::FileEnd).await
}

/// Receives a file. Returns whether the connection can carry another operation.
async fn write_file(
    stream: &mut UnixStream,
    path: String,
    mode: Option<u32>,
    user: Option<String>,
) -> Result<bool, WireError> {
    let p = path.clone();
    let begun = blocking(move || FileWriter::begin(&p, mode, user.as_deref())).await;
    // When the target is unusable the data frames still arrive; they are read and dropped so
    // the answer comes after FileEnd like every other answer to WriteFile.
    let mut early_error = None;
    let mut w = match begun {
        Ok(w) => Some(w),
        Err(e) => {
            early_error = Some(e);
            None
        }
    };
    loop {
        // A disconnect here drops the writer, which removes the temp file.
        let Some(req) = read_request(stream).await? else {
            return Ok(false);
        };
        match req {
            Request::FileData { data } => {
                if let Some(mut fw) = w.take() {
                    w = Some(
                        tokio::task::spawn_blocking(move || {
                            fw.write(&data);
                            fw
                        })
                        .await
                        .map_err(|e| std::io::Error::other(e.to_string()))?,
                    );
                }
            }
            Request::FileEnd => break,
            _ => {
                send(stream, &bad("expected FileData or FileEnd")).await?;
                return Ok(false);
            }
        }
    }
    let result = match (w, early_error) {
        (_, Some(e)) => Err(e),
        (Some(fw), None) => blocking(move || fw.commit()).await,
        (None, None) => Err(AgentError::new(
            ErrorKind::Io,
            format!("{path}: write failed"),
        )),
    };
    send(
        stream,
        &result.map_or_else(Response::Error, |()| Response::Ok),
    )
    .await?;
    Ok(true)
}

/// Runs a search on a blocking thread and sends its frames as they come. Hanging up stops the
/// search: the queue closes, and the walk notices before its next directory, file or match.
async fn search<T: search::Batch>(
    stream: &mut UnixStream,
    user: Option<String>,
    run: impl FnOnce(&mut search::Sink<T>) -> Result<Option<SearchCut>, AgentError> + Send + 'static,
) -> Result<(), WireError> {
    let (tx, mut rx) = mpsc::channel(search::QUEUE);
    drop(tokio::task::spawn_blocking(move || {
        search::run(user.as_deref(), tx, run);
    }));
    loop {
        let frame = tokio::select! {
            frame = rx.recv() => frame,
            () = wait_for_hangup(stream) => return Ok(()),
        };
        match frame {
            Some(frame) => {
                send(stream, &frame).await?;
                if matches!(frame, Response::SearchEnd { .. } | Response::Error(_)) {
                    return Ok(());
                }
            }
            // The search ended without its last frame: it panicked.
            None => {
                let e = AgentError::new(ErrorKind::Io, "search failed");
                return send(stream, &Response::Error(e)).await;
            }
        }
    }
}

/// How long dialling a sandbox port may take: loopback answers at once unless the listener's
/// backlog is full.
const DIAL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Connects to a loopback port: `127.0.0.1` first, then `[::1]` for servers bound to IPv6
/// only. The error of the IPv4 attempt is the one reported when both fail.
async fn dial_loopback(port: u16) -> std::io::Result<tokio::net::TcpStream> {
    let attempt = |addr: std::net::IpAddr| async move {
        tokio::time::timeout(DIAL_TIMEOUT, tokio::net::TcpStream::connect((addr, port)))
            .await
            .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()))
    };
    match attempt(std::net::Ipv4Addr::LOCALHOST.into()).await {
        Ok(tcp) => Ok(tcp),
        Err(v4) => attempt(std::net::Ipv6Addr::LOCALHOST.into())
            .await
            .map_err(|_| v4),
    }
}

async fn dial(stream: &mut UnixStream, port: u16) -> Result<(), WireError> {
    if port == 0 {
        return send(stream, &bad("port 0 cannot be dialled")).await;
    }
    match dial_loopback(port).await {
        Ok(mut tcp) => {
            let _ = tcp.set_nodelay(true);
            send(stream, &Response::Ok).await?;
            let _ = tokio::io::copy_bidirectional(stream, &mut tcp).await;
            Ok(())
        }
        Err(e) => {
            let kind = if e.kind() == std::io::ErrorKind::ConnectionRefused {
                ErrorKind::ConnectionRefused
            } else {
                ErrorKind::Io
            };
            let msg = format!("cannot connect to port {port}: {e}");
            send(stream, &Response::Error(AgentError::new(kind, msg))).await
        }
    }
}

/// Streams a command to a client until it exits or the client leaves.
async fn attached(
    session: Arc<Session>,
    stdout_offset: u64,
    stderr_offset: u64,
    stream: &mut UnixStream,
) -> Result<(), WireError> {
    let client = session.attach(stdout_offset, stderr_offset);
    let result = stream_to(&session, client, stream).await;
    session.detach(client);
    result
}

async fn stream_to(
    session: &Arc<Session>,
    client: u64,
    stream: &mut UnixStream,
) -> Result<(), WireError> {
    let started = Response::Started {
        command_id: session.id.clone(),
        pid: session.pid,
    };
    send(stream, &started).await?;
    let (rd, wr) = stream.split();
    // Input is written by its own task so that a command not reading its stdin cannot hold up
    // Kill or Signal frames behind it; the queue is short so the client still feels the pipe's
    // backpressure.
    let (tx, rx) = mpsc::channel(8);
    tokio::spawn(feed_stdin(session.clone(), rx));
    tokio::select! {
        r = pump(session, client, wr) => r,
        r = async move {
            let mut rd = rd;
            requests(session, &mut rd, tx).await?;
            // The client half-closed (e.g. dropped its writing half) but may still be reading:
            // keep streaming until it hangs up entirely.
            wait_for_hangup(rd.as_ref()).await;
            Ok(())
        } => r,
    }
}

/// How often a half-closed client is checked for having gone away entirely.
const HANGUP_POLL: std::time::Duration = std::time::Duration::from_millis(200);

/// Returns once the peer has closed its end of the socket completely: POLLHUP on a unix
/// stream socket means both directions are shut, unlike the read EOF of a half-close.
pub(crate) async fn wait_for_hangup(stream: &UnixStream) {
    while !hung_up(stream) {
        tokio::time::sleep(HANGUP_POLL).await;
    }
}

/// Whether the peer has closed the connection entirely (not only shut down its writing).
pub(crate) fn hung_up(stream: &UnixStream) -> bool {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    let mut fds = [PollFd::new(stream.as_fd(), PollFlags::POLLOUT)];
    match poll(&mut fds, PollTimeout::ZERO) {
        Ok(_) => fds[0]
            .revents()
            .is_some_and(|r| r.intersects(PollFlags::POLLHUP | PollFlags::POLLERR)),
        Err(_) => true,
    }
}

async fn pump(
    session: &Session,
    client: u64,
    mut wr: tokio::net::unix::WriteHalf<'_>,
) -> Result<(), WireError> {
    let mut output = session.subscribe_output();
    let mut turn = 0;
    loop {
        output.borrow_and_update();
        match session.next_frame(client, &mut turn) {
            Next::Output {
                stream,
                offset,
                data,
            } => {
                wire::send_raw(&mut wr, &wire::output_frame(stream, offset, &data)).await?;
            }
            Next::Exit(status) => return send(&mut wr, &Response::Exit(status)).await,
            Next::Wait => {
                if output.changed().await.is_err() {
                    return Ok(());
                }
            }
        }
    }
}

#[derive(Debug)]
enum StdinMsg {
    Data(Vec<u8>),
    Close,
}

async fn requests(
    session: &Session,
    rd: &mut tokio::net::unix::ReadHalf<'_>,
    tx: mpsc::Sender<StdinMsg>,
) -> Result<(), WireError> {
    loop {
        let Some(req) = read_request(rd).await? else {
            return Ok(());
        };
        match req {
            Request::Input { data } => {
                if tx.send(StdinMsg::Data(data)).await.is_err() {
                    return Ok(());
                }
            }
            Request::CloseStdin => {
                if tx.send(StdinMsg::Close).await.is_err() {
                    return Ok(());
                }
            }
            Request::Kill => session.kill(ExitReason::Killed),
            Request::Signal { signal } => session.signal(signal),
            Request::Resize { rows, cols } => session.resize(rows, cols),
            // Anything else is a protocol violation; dropping the connection detaches.
            _ => return Ok(()),
        }
    }
}

/// Writes a connection's queued input to the command, also after the client left (so input
/// sent just before disconnecting is not lost), until the queue is empty or the command ends.
async fn feed_stdin(session: Arc<Session>, mut rx: mpsc::Receiver<StdinMsg>) {
    let mut finished = session.subscribe_output();
    while let Some(msg) = rx.recv().await {
        let (fd, data) = match msg {
            StdinMsg::Data(data) => (session.input_fd(), data),
            StdinMsg::Close => match session.close_stdin() {
                Some(pty) => (Some(pty), vec![0x04]),
                None => continue,
            },
        };
        let Some(fd) = fd else { continue };
        tokio::select! {
            r = write_all(&fd, &data) => {
                if r.is_err() {
                    // EPIPE: the command closed its stdin; further input has nowhere to go.
                    return;
                }
            }
            () = until_finished(&session, &mut finished) => return,
        }
    }
}

async fn until_finished(session: &Session, rx: &mut tokio::sync::watch::Receiver<u64>) {
    loop {
        rx.borrow_and_update();
        if session.is_finished() {
            return;
        }
        if rx.changed().await.is_err() {
            return;
        }
    }
}

async fn write_all(fd: &SharedFd, mut data: &[u8]) -> std::io::Result<()> {
    while !data.is_empty() {
        let mut guard = fd.writable().await?;
        match guard.try_io(|f| nix::unistd::write(f.get_ref(), data).map_err(std::io::Error::from))
        {
            Ok(Ok(n)) => data = &data[n..],
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Ok(Err(e)) => return Err(e),
            Err(_would_block) => {}
        }
    }
    Ok(())
}

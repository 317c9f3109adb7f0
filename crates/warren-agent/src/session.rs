//! Command sessions: the running (or finished) command, its output rings, its clients.
//!
//! A session outlives connections. Output is read from the command's pipes into one ring per
//! stream by a reader task; each attached client has its own position in each ring and is fed
//! by its connection. Readers stop reading while the ring is full of bytes some attached client
//! has not been sent yet, so a slow client slows the command instead of losing output or
//! growing memory; with nobody attached the ring just drops its oldest bytes.
//!
//! A command is done when its main process has been reaped and the pipes have been drained of
//! what the main process left in them, not when the pipes reach EOF: a daemon it started may
//! hold them open forever.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::unix::AsyncFd;
use tokio::sync::watch;
use tokio::time::Instant;
use warren_proto::{CommandSummary, ExitReason, ExitStatus, MAX_CHUNK_LEN, Stream};

use crate::pty;
use crate::ring::Ring;

/// Bytes of each stream kept for reattach.
pub(crate) const RING_CAP: usize = 4 << 20;

/// After the main process exits, how long to keep reading output that other processes still
/// write into the inherited pipes.
const DRAIN_WINDOW: Duration = Duration::from_millis(50);

/// A descriptor registered with the runtime, shared between readers and writers.
pub(crate) type SharedFd = Arc<AsyncFd<OwnedFd>>;

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding a session lock must not take PID 1 down with it on the next use.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

const STREAMS: [Stream; 2] = [Stream::Stdout, Stream::Stderr];

/// Lifetime settings from the `ExecSpec`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) timeout: Option<Duration>,
    pub(crate) idle_timeout: Option<Duration>,
    pub(crate) kill_on_disconnect: bool,
    pub(crate) ttl: Option<Duration>,
}

#[derive(Debug)]
struct State {
    rings: [Ring; 2],
    /// Whether a reader task still reads the stream.
    reading: [bool; 2],
    /// (code, signal) of the reaped main process.
    main: Option<(i32, Option<i32>)>,
    /// Set when the agent killed the command on purpose; first cause wins.
    kill_reason: Option<ExitReason>,
    /// The last signal a client sent with `Signal`.
    client_signal: Option<i32>,
    exit: Option<ExitStatus>,
    /// Attached clients and the next offset each is owed, per stream.
    clients: HashMap<u64, [u64; 2]>,
    next_client: u64,
    idle_since: Instant,
    finished_at: Option<Instant>,
    stdin: Option<SharedFd>,
    pty: Option<SharedFd>,
}

impl State {
    /// How many bytes may be appended to a stream without overwriting bytes an attached client
    /// has not been sent yet.
    fn space(&self, i: usize) -> usize {
        let ring = &self.rings[i];
        match self.clients.values().map(|c| c[i].max(ring.start())).min() {
            None => usize::MAX,
            Some(min) => {
                let unsent = usize::try_from(ring.end() - min).unwrap_or(usize::MAX);
                ring.capacity().saturating_sub(unsent)
            }
        }
    }
}

/// What a client's connection should send next.
#[derive(Debug)]
pub(crate) enum Next {
    Output {
        stream: Stream,
        offset: u64,
        data: Vec<u8>,
    },
    Exit(ExitStatus),
    Wait,
}

/// One command.
#[derive(Debug)]
pub(crate) struct Session {
    pub(crate) id: String,
    pub(crate) pid: u32,
    limits: Limits,
    is_pty: bool,
    state: Mutex<State>,
    /// Bumped on new output, end of a stream, and the final exit.
    output: watch::Sender<u64>,
    /// Bumped when a client advances, attaches or detaches.
    progress: watch::Sender<u64>,
    /// Set once the main process has been reaped.
    main_done: watch::Sender<bool>,
}

fn bump(tx: &watch::Sender<u64>) {
    tx.send_modify(|v| *v = v.wrapping_add(1));
}

impl Session {
    pub(crate) fn new(
        id: String,
        pid: u32,
        limits: Limits,
        is_pty: bool,
        stdin: Option<SharedFd>,
        pty: Option<SharedFd>,
    ) -> Self {
        Self {
            id,
            pid,
            limits,
            is_pty,
            state: Mutex::new(State {
                rings: [Ring::new(RING_CAP), Ring::new(RING_CAP)],
                reading: [true, !is_pty],
                main: None,
                kill_reason: None,
                client_signal: None,
                exit: None,
                clients: HashMap::new(),
                next_client: 0,
                idle_since: Instant::now(),
                finished_at: None,
                stdin,
                pty,
            }),
            output: watch::channel(0).0,
            progress: watch::channel(0).0,
            main_done: watch::channel(false).0,
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    pub(crate) fn subscribe_output(&self) -> watch::Receiver<u64> {
        self.output.subscribe()
    }

    pub(crate) fn is_finished(&self) -> bool {
        self.state().exit.is_some()
    }

    /// Registers a client that is owed output from these offsets (clamped into what is held).
    pub(crate) fn attach(&self, stdout_offset: u64, stderr_offset: u64) -> u64 {
        let mut st = self.state();
        let id = st.next_client;
        st.next_client += 1;
        let offs = [
            stdout_offset.clamp(st.rings[0].start(), st.rings[0].end()),
            stderr_offset.clamp(st.rings[1].start(), st.rings[1].end()),
        ];
        st.clients.insert(id, offs);
        drop(st);
        bump(&self.progress);
        id
    }

    pub(crate) fn detach(&self, client: u64) {
        let mut st = self.state();
        if st.clients.remove(&client).is_none() {
            return;
        }
        let last = st.clients.is_empty();
        if last {
            st.idle_since = Instant::now();
            if self.limits.kill_on_disconnect {
                self.kill_locked(&mut st, ExitReason::Detached, Signal::SIGKILL);
            }
        }
        drop(st);
        bump(&self.progress);
    }

    /// The next frame for a client, advancing its position. `turn` alternates the streams so a
    /// flood on one does not starve the other.
    pub(crate) fn next_frame(&self, client: u64, turn: &mut usize) -> Next {
        let mut st = self.state();
        let Some(offs) = st.clients.get(&client).copied() else {
            return Next::Wait;
        };
        for k in 0..2 {
            let i = (*turn + k) % 2;
            let ring = &st.rings[i];
            if offs[i].max(ring.start()) < ring.end() {
                let (offset, data) = ring.read(offs[i], MAX_CHUNK_LEN);
                let next = offset + data.len() as u64;
                if let Some(c) = st.clients.get_mut(&client) {
                    c[i] = next;
                }
                drop(st);
                *turn = (i + 1) % 2;
                bump(&self.progress);
                return Next::Output {
                    stream: STREAMS[i],
                    offset,
                    data,
                };
            }
        }
        match st.exit {
            Some(exit) => Next::Exit(exit),
            None => Next::Wait,
        }
    }

    fn kill_locked(&self, st: &mut State, reason: ExitReason, signal: Signal) {
        // Once the main process is reaped its pid may be reused, so the group is only signalled
        // while the pid is still ours (alive or a zombie not yet reaped).
        if st.main.is_some() {
            return;
        }
        if signal == Signal::SIGKILL {
            st.kill_reason.get_or_insert(reason);
        }
        if let Ok(pid) = i32::try_from(self.pid) {
            let _ = killpg(Pid::from_raw(pid), signal);
        }
    }

    /// SIGKILLs the command's process group.
    pub(crate) fn kill(&self, reason: ExitReason) {
        let mut st = self.state();
        self.kill_locked(&mut st, reason, Signal::SIGKILL);
    }

    /// Sends a client's signal to the command's process group.
    pub(crate) fn signal(&self, signal: i32) {
        let Ok(sig) = Signal::try_from(signal) else {
            return;
        };
        let mut st = self.state();
        if sig == Signal::SIGKILL {
            self.kill_locked(&mut st, ExitReason::Killed, sig);
            return;
        }
        if st.main.is_none() {
            st.client_signal = Some(signal);
        }
        self.kill_locked(&mut st, ExitReason::Killed, sig);
    }

    /// The descriptor `Input` bytes go to: the stdin pipe or the PTY master.
    pub(crate) fn input_fd(&self) -> Option<SharedFd> {
        let st = self.state();
        if self.is_pty {
            st.pty.clone()
        } else {
            st.stdin.clone()
        }
    }

    /// Closes stdin. A PTY has no separate stdin to close, so it gets the EOF character
    /// (Ctrl-D) instead, which is what a terminal user would type; `None` then, else the
    /// descriptor to write it to.
    pub(crate) fn close_stdin(&self) -> Option<SharedFd> {
        let mut st = self.state();
        if self.is_pty {
            return st.pty.clone();
        }
        st.stdin = None;
        None
    }

    pub(crate) fn resize(&self, rows: u16, cols: u16) {
        let st = self.state();
        if let Some(pty) = &st.pty {
            let _ = pty::set_winsize(pty.get_ref(), rows, cols);
        }
    }

    pub(crate) fn summary(&self) -> CommandSummary {
        let st = self.state();
        CommandSummary {
            command_id: self.id.clone(),
            pid: self.pid,
            exit: st.exit,
            stdout_len: st.rings[0].end(),
            stderr_len: st.rings[1].end(),
            attached: u32::try_from(st.clients.len()).unwrap_or(u32::MAX),
        }
    }

    pub(crate) fn on_main_exit(&self, code: i32, signal: Option<i32>) {
        let mut st = self.state();
        if st.main.is_some() {
            return;
        }
        st.main = Some((code, signal));
        self.try_finish(&mut st);
        drop(st);
        self.main_done.send_replace(true);
        bump(&self.output);
    }

    fn stream_done(&self, i: usize) {
        let mut st = self.state();
        st.reading[i] = false;
        self.try_finish(&mut st);
        drop(st);
        bump(&self.output);
    }

    fn try_finish(&self, st: &mut State) {
        if st.exit.is_some() || st.reading.iter().any(|r| *r) {
            return;
        }
        let Some((code, signal)) = st.main else {
            return;
        };
        let reason = st.kill_reason.unwrap_or(match (signal, st.client_signal) {
            (Some(s), Some(c)) if s == c => ExitReason::Killed,
            _ => ExitReason::Exited,
        });
        st.exit = Some(ExitStatus {
            code,
            signal,
            reason,
        });
        st.finished_at = Some(Instant::now());
        // Dropping the PTY master hangs up the terminal, as closing a terminal window does.
        st.stdin = None;
        st.pty = None;
        for r in &mut st.rings {
            r.shrink();
        }
    }

    fn append(&self, i: usize, data: &[u8]) {
        self.state().rings[i].push(data);
        bump(&self.output);
    }
}

/// Starts a new session's tasks: one reader per output stream, the wall-clock timeout, and the
/// idle and TTL supervisor, which calls `expire` once the finished session's TTL has passed.
pub(crate) fn start(
    session: &Arc<Session>,
    stdout: SharedFd,
    stderr: Option<SharedFd>,
    expire: impl FnOnce() + Send + 'static,
) {
    tokio::spawn(read_stream(session.clone(), 0, stdout));
    if let Some(fd) = stderr {
        tokio::spawn(read_stream(session.clone(), 1, fd));
    }
    if let Some(t) = session.limits.timeout {
        let s = session.clone();
        tokio::spawn(async move {
            let mut done = s.main_done.subscribe();
            tokio::select! {
                () = tokio::time::sleep(t) => s.kill(ExitReason::Timeout),
                _ = done.wait_for(|d| *d) => {}
            }
        });
    }
    if session.limits.idle_timeout.is_some() || session.limits.ttl.is_some() {
        tokio::spawn(supervise(session.clone(), expire));
    }
}

/// Copies one stream of a command into its ring.
async fn read_stream(session: Arc<Session>, i: usize, fd: SharedFd) {
    let mut buf = vec![0u8; MAX_CHUNK_LEN];
    let mut progress = session.progress.subscribe();
    let mut done = session.main_done.subscribe();
    loop {
        progress.borrow_and_update();
        if *done.borrow_and_update() {
            break;
        }
        let space = session.state().space(i).min(buf.len());
        if space == 0 {
            tokio::select! {
                _ = progress.changed() => {}
                _ = done.changed() => {}
            }
            continue;
        }
        tokio::select! {
            ready = fd.readable() => {
                let Ok(mut guard) = ready else { break };
                match guard.try_io(|f| nix::unistd::read(f.get_ref(), &mut buf[..space]).map_err(std::io::Error::from)) {
                    Ok(Ok(0)) => return finish_stream(&session, i),
                    Ok(Ok(n)) => session.append(i, &buf[..n]),
                    Ok(Err(e)) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    // EIO is how a PTY master reports that every slave descriptor is closed.
                    Ok(Err(_)) => return finish_stream(&session, i),
                    Err(_would_block) => {}
                }
            }
            _ = done.changed() => {}
        }
    }
    drain(&session, i, &fd, &mut buf, &mut progress).await;
    finish_stream(&session, i);
}

fn finish_stream(session: &Session, i: usize) {
    session.stream_done(i);
}

/// After the main process exited: take everything it left in the pipe (however long a slow
/// client makes that take), then whatever else is immediately readable within a short window.
async fn drain(
    session: &Session,
    i: usize,
    fd: &SharedFd,
    buf: &mut [u8],
    progress: &mut watch::Receiver<u64>,
) {
    let mut owed = pty::pending_bytes(fd.get_ref());
    let mut deadline = None;
    loop {
        if owed == 0 && deadline.is_none() {
            deadline = Some(Instant::now() + DRAIN_WINDOW);
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return;
        }
        progress.borrow_and_update();
        let space = session.state().space(i).min(buf.len());
        if space == 0 {
            match deadline {
                Some(d) => {
                    if tokio::time::timeout_at(d, progress.changed())
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                None => {
                    let _ = progress.changed().await;
                }
            }
            continue;
        }
        match nix::unistd::read(fd.get_ref(), &mut buf[..space]) {
            Ok(0) => return,
            Ok(n) => {
                session.append(i, &buf[..n]);
                owed = owed.saturating_sub(n);
            }
            Err(Errno::EINTR) => {}
            Err(_) => return,
        }
    }
}

/// Enforces the idle timeout of a running command and the TTL of a finished one.
async fn supervise(session: Arc<Session>, expire: impl FnOnce()) {
    let mut output = session.output.subscribe();
    let mut progress = session.progress.subscribe();
    loop {
        output.borrow_and_update();
        progress.borrow_and_update();
        let (finished_at, idle_deadline) = {
            let st = session.state();
            let idle = st.main.is_none() && st.kill_reason.is_none() && st.clients.is_empty();
            (
                st.finished_at,
                session
                    .limits
                    .idle_timeout
                    .filter(|_| idle)
                    .map(|t| st.idle_since + t),
            )
        };
        if let Some(done) = finished_at {
            if let Some(ttl) = session.limits.ttl {
                tokio::time::sleep_until(done + ttl).await;
                expire();
            }
            return;
        }
        let idle = async {
            match idle_deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = idle => session.kill(ExitReason::Detached),
            _ = output.changed() => {}
            _ = progress.changed() => {}
        }
    }
}

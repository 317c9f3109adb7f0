//! The fake agent's commands: a tiny script language run by a tokio task, with all output kept
//! so a client can attach from any offset.
//!
//! The language is described in the parent module.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use warren_proto::{CommandSummary, ExecSpec, ExitReason, ExitStatus, MAX_CHUNK_LEN, Stream};

/// Exit status of a command ended by SIGKILL.
pub(crate) fn killed(reason: ExitReason) -> ExitStatus {
    ExitStatus {
        code: 137,
        signal: Some(9),
        reason,
    }
}

#[derive(Debug, Default)]
struct State {
    /// Everything written to stdout and stderr, whole.
    out: [Vec<u8>; 2],
    exit: Option<ExitStatus>,
    attached: u32,
}

/// One command session.
#[derive(Debug)]
pub(crate) struct Command {
    pub(crate) id: String,
    pub(crate) pid: u32,
    pty: bool,
    kill_on_disconnect: bool,
    state: Mutex<State>,
    /// Bumped on every new output and on exit, so attached clients wake up.
    progress: watch::Sender<u64>,
    /// `None` once stdin is closed (or when the spec wanted none).
    stdin: Mutex<Option<mpsc::UnboundedSender<Vec<u8>>>>,
    /// Set once to end the command with this status.
    kill: watch::Sender<Option<ExitStatus>>,
}

/// Which output stream a step writes to.
fn index(stream: Stream) -> usize {
    match stream {
        Stream::Stdout => 0,
        Stream::Stderr => 1,
    }
}

const STREAMS: [Stream; 2] = [Stream::Stdout, Stream::Stderr];

/// What an attached client gets next.
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

impl Command {
    /// Starts `spec` as command `id`; the task ends with the command, or when `alive` turns
    /// false (the sandbox stopped).
    pub(crate) fn spawn(
        id: String,
        pid: u32,
        spec: &ExecSpec,
        alive: watch::Receiver<bool>,
    ) -> Arc<Self> {
        let (stdin_tx, stdin_rx) = mpsc::unbounded_channel();
        let cmd = Arc::new(Self {
            id,
            pid,
            pty: spec.pty.is_some(),
            kill_on_disconnect: spec.kill_on_disconnect,
            state: Mutex::new(State::default()),
            progress: watch::channel(0).0,
            stdin: Mutex::new(spec.stdin.then_some(stdin_tx)),
            kill: watch::channel(None).0,
        });
        tokio::spawn(run(cmd.clone(), spec.clone(), stdin_rx, alive));
        cmd
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Every update leaves the state whole, so a panic elsewhere cannot have torn it.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self, stream: Stream, data: &[u8]) {
        let i = if self.pty { 0 } else { index(stream) };
        self.state().out[i].extend_from_slice(data);
        self.progress.send_modify(|n| *n += 1);
    }

    fn finish(&self, status: ExitStatus) {
        self.state().exit.get_or_insert(status);
        self.progress.send_modify(|n| *n += 1);
    }

    /// Ends the command with `status` unless it already ended.
    pub(crate) fn kill(&self, status: ExitStatus) {
        if self.state().exit.is_none() {
            self.kill.send_if_modified(|k| {
                let first = k.is_none();
                k.get_or_insert(status);
                first
            });
        }
    }

    /// Queues bytes for the command's stdin; dropped when stdin is closed.
    pub(crate) fn input(&self, data: Vec<u8>) {
        if let Some(tx) = &*self.stdin.lock().unwrap_or_else(PoisonError::into_inner) {
            let _ = tx.send(data);
        }
    }

    /// Closes stdin: `cat` sees the end once the queued bytes are read.
    pub(crate) fn close_stdin(&self) {
        self.stdin
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.progress.subscribe()
    }

    pub(crate) fn attach(&self) {
        self.state().attached += 1;
    }

    /// A client left; the last one leaving ends a `kill_on_disconnect` command.
    pub(crate) fn detach(&self) {
        let last = {
            let mut st = self.state();
            st.attached = st.attached.saturating_sub(1);
            st.attached == 0
        };
        if last && self.kill_on_disconnect {
            self.kill(killed(ExitReason::Detached));
        }
    }

    /// The next frame for a client at `offsets`, advancing them. `turn` alternates the streams
    /// so a flood on one does not starve the other.
    pub(crate) fn next_frame(&self, offsets: &mut [u64; 2], turn: &mut usize) -> Next {
        let st = self.state();
        for k in 0..2 {
            let i = (*turn + k) % 2;
            let len = st.out[i].len();
            let from = usize::try_from(offsets[i]).unwrap_or(usize::MAX);
            if from < len {
                let data = st.out[i][from..len.min(from + MAX_CHUNK_LEN)].to_vec();
                let offset = offsets[i];
                offsets[i] += data.len() as u64;
                *turn = (i + 1) % 2;
                return Next::Output {
                    stream: STREAMS[i],
                    offset,
                    data,
                };
            }
        }
        st.exit.map_or(Next::Wait, Next::Exit)
    }

    pub(crate) fn summary(&self) -> CommandSummary {
        let st = self.state();
        CommandSummary {
            command_id: self.id.clone(),
            pid: self.pid,
            exit: st.exit,
            stdout_len: st.out[0].len() as u64,
            stderr_len: st.out[1].len() as u64,
            attached: st.attached,
        }
    }
}

async fn run(
    cmd: Arc<Command>,
    spec: ExecSpec,
    mut stdin: mpsc::UnboundedReceiver<Vec<u8>>,
    mut alive: watch::Receiver<bool>,
) {
    let script = match spec.argv.get(1).map(String::as_str) {
        Some("-c") => spec.argv.get(2).cloned().unwrap_or_default(),
        _ => spec.argv.join(" "),
    };
    let mut kill = cmd.kill.subscribe();
    let timeout = async {
        match spec.timeout_ms {
            Some(ms) => tokio::time::sleep(Duration::from_millis(ms)).await,
            None => std::future::pending().await,
        }
    };
    let status = tokio::select! {
        code = interpret(&cmd, &script, &spec, &mut stdin) => ExitStatus {
            code,
            signal: None,
            reason: ExitReason::Exited,
        },
        Ok(k) = kill.wait_for(Option::is_some) => k.unwrap_or(killed(ExitReason::Killed)),
        () = timeout => killed(ExitReason::Timeout),
        // The sandbox stopped: its processes are gone with the agent, and no Exit may reach a
        // client still attached (its connection ends with the agent, as a real one would).
        _ = alive.wait_for(|a| !*a) => return,
    };
    cmd.finish(status);
}

async fn interpret(
    cmd: &Command,
    script: &str,
    spec: &ExecSpec,
    stdin: &mut mpsc::UnboundedReceiver<Vec<u8>>,
) -> i32 {
    let mut status = 0;
    for step in script.split(';').map(str::trim).filter(|s| !s.is_empty()) {
        let (word, rest) = step
            .split_once(char::is_whitespace)
            .map_or((step, ""), |(w, r)| (w, r.trim_start()));
        status = match word {
            "echo" => {
                cmd.write(Stream::Stdout, format!("{rest}\n").as_bytes());
                0
            }
            "echoerr" => {
                cmd.write(Stream::Stderr, format!("{rest}\n").as_bytes());
                0
            }
            "exit" => return rest.parse().unwrap_or(2),
            "repeat" => repeat(cmd, rest).await,
            "sleep" => match rest.parse() {
                Ok(ms) => {
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    0
                }
                Err(_) => 1,
            },
            "cat" => {
                while let Some(data) = stdin.recv().await {
                    cmd.write(Stream::Stdout, &data);
                }
                0
            }
            "pwd" => {
                let cwd = spec.cwd.as_deref().unwrap_or("/");
                cmd.write(Stream::Stdout, format!("{cwd}\n").as_bytes());
                0
            }
            "env" => match spec.env.iter().rev().find(|(k, _)| k == rest) {
                Some((_, v)) => {
                    cmd.write(Stream::Stdout, format!("{v}\n").as_bytes());
                    0
                }
                None => 1,
            },
            _ => {
                cmd.write(Stream::Stderr, b"fake: command not found\n");
                127
            }
        };
    }
    status
}

/// `repeat N TEXT`: chunks of whole copies where TEXT is short, so a reader sees the output
/// grow while it streams.
async fn repeat(cmd: &Command, args: &str) -> i32 {
    let Some((n, text)) = args.split_once(char::is_whitespace) else {
        return 1;
    };
    let Ok(n) = n.parse::<u64>() else { return 1 };
    let text = text.as_bytes();
    let mut chunk = Vec::with_capacity(MAX_CHUNK_LEN);
    for _ in 0..n {
        let mut rest = text;
        while !rest.is_empty() {
            let take = rest.len().min(MAX_CHUNK_LEN - chunk.len());
            chunk.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            if chunk.len() == MAX_CHUNK_LEN {
                cmd.write(Stream::Stdout, &chunk);
                chunk.clear();
                tokio::task::yield_now().await;
            }
        }
    }
    if !chunk.is_empty() {
        cmd.write(Stream::Stdout, &chunk);
    }
    0
}

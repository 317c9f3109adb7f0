//! The fake's commands: a tiny script language run by a task per command, and the feed that
//! replays a command's output to each attached client from its offsets.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use warren_types::agent::{ExecSpec, ExitReason, ExitStatus, Stream};

use super::{CHUNK, lock};
use crate::{CommandEvent, CommandInput};

/// One command's state, shared by its runner and its clients.
#[derive(Debug)]
pub(super) struct Cmd {
    pub(super) pid: u32,
    pub(super) state: Mutex<CmdState>,
    pub(super) changed: watch::Sender<u64>,
    pub(super) input: mpsc::UnboundedSender<CommandInput>,
}

#[derive(Debug, Default)]
pub(super) struct CmdState {
    pub(super) out: [Vec<u8>; 2],
    pub(super) exit: Option<ExitStatus>,
    /// The sandbox stopped under the command: attached clients lose their connection, as they
    /// would when a real sandbox's agent dies.
    pub(super) lost: bool,
}

impl Cmd {
    pub(super) fn state(&self) -> MutexGuard<'_, CmdState> {
        lock(&self.state)
    }

    fn push(&self, stream: Stream, data: &[u8]) {
        self.state().out[usize::from(stream == Stream::Stderr)].extend_from_slice(data);
        self.changed.send_modify(|n| *n += 1);
    }

    /// Ends every client's connection without an exit (the sandbox went away).
    pub(super) fn lose(&self) {
        self.state().lost = true;
        self.changed.send_modify(|n| *n += 1);
        let _ = self.input.send(CommandInput::Kill);
    }

    fn finish(&self, status: ExitStatus) {
        let mut st = self.state();
        if st.exit.is_none() {
            st.exit = Some(status);
        }
        drop(st);
        self.changed.send_modify(|n| *n += 1);
    }
}

fn exited(code: i32) -> ExitStatus {
    ExitStatus {
        code,
        signal: None,
        reason: ExitReason::Exited,
    }
}

/// Runs a command's script; ends with its exit status.
pub(super) async fn run_script(
    cmd: Arc<Cmd>,
    spec: ExecSpec,
    mut input: mpsc::UnboundedReceiver<CommandInput>,
) {
    let script = spec.argv.last().cloned().unwrap_or_default();
    let deadline = spec
        .timeout_ms
        .map(|ms| tokio::time::Instant::now() + Duration::from_millis(ms));
    let killed = ExitStatus {
        code: 137,
        signal: Some(9),
        reason: ExitReason::Killed,
    };
    let timed_out = ExitStatus {
        code: 137,
        signal: Some(9),
        reason: ExitReason::Timeout,
    };
    let mut code = 0;
    for step in script.split(';').map(str::trim).filter(|s| !s.is_empty()) {
        let (word, rest) = step.split_once(' ').unwrap_or((step, ""));
        match word {
            "echo" => cmd.push(Stream::Stdout, format!("{rest}\n").as_bytes()),
            "echoerr" => cmd.push(Stream::Stderr, format!("{rest}\n").as_bytes()),
            "exit" => {
                code = rest.trim().parse().unwrap_or(2);
                break;
            }
            "repeat" => {
                let (n, text) = rest.split_once(' ').unwrap_or((rest, ""));
                let all = text.repeat(n.parse().unwrap_or(0));
                for piece in all.as_bytes().chunks(CHUNK) {
                    cmd.push(Stream::Stdout, piece);
                }
            }
            "pwd" => {
                let cwd = spec.cwd.clone().unwrap_or_else(|| "/".into());
                cmd.push(Stream::Stdout, format!("{cwd}\n").as_bytes());
            }
            "env" => {
                let v = spec
                    .env
                    .iter()
                    // The last wins, as in the agent.
                    .rfind(|(k, _)| k == rest)
                    .map(|(_, v)| v.clone());
                cmd.push(
                    Stream::Stdout,
                    format!("{}\n", v.unwrap_or_default()).as_bytes(),
                );
            }
            "sleep" | "cat" => {
                let sleep = tokio::time::sleep(Duration::from_millis(if word == "sleep" {
                    rest.parse().unwrap_or(0)
                } else {
                    u64::MAX / 4
                }));
                tokio::pin!(sleep);
                loop {
                    let until = async {
                        match deadline {
                            Some(d) => tokio::time::sleep_until(d).await,
                            None => std::future::pending().await,
                        }
                    };
                    tokio::select! {
                        () = &mut sleep => break,
                        () = until => { cmd.finish(timed_out); return; }
                        msg = input.recv() => match msg {
                            Some(CommandInput::Kill | CommandInput::Signal(_)) => { cmd.finish(killed); return; }
                            Some(CommandInput::Data(d)) if word == "cat" => cmd.push(Stream::Stdout, &d),
                            Some(CommandInput::CloseStdin) if word == "cat" => break,
                            Some(_) => {}
                            None if word == "cat" => break,
                            None => {}
                        }
                    }
                }
            }
            _ => {
                cmd.push(Stream::Stderr, b"fake: command not found\n");
                code = 127;
                break;
            }
        }
    }
    cmd.finish(exited(code));
}

/// Feeds one client from the command's state, from the given offsets, until the exit.
pub(super) async fn feed(
    cmd: Arc<Cmd>,
    mut offsets: [u64; 2],
    tx: mpsc::Sender<CommandEvent>,
    mut input: mpsc::Receiver<CommandInput>,
    kill_on_disconnect: bool,
) {
    let mut changed = cmd.changed.subscribe();
    let mut input_open = true;
    loop {
        if cmd.state().lost {
            let _ = tx
                .send(CommandEvent::Lost("the sandbox stopped".into()))
                .await;
            return;
        }
        let (chunk, exit) = {
            let st = cmd.state();
            let mut chunk = None;
            for (i, stream) in [Stream::Stdout, Stream::Stderr].into_iter().enumerate() {
                let buf = &st.out[i];
                let at = usize::try_from(offsets[i])
                    .unwrap_or(usize::MAX)
                    .min(buf.len());
                if at < buf.len() {
                    let end = buf.len().min(at + CHUNK);
                    chunk = Some((i, stream, at, buf[at..end].to_vec()));
                    break;
                }
            }
            (chunk, st.exit)
        };
        if let Some((i, stream, at, data)) = chunk {
            offsets[i] = (at + data.len()) as u64;
            let ev = CommandEvent::Output {
                stream,
                offset: at as u64,
                data,
            };
            if tx.send(ev).await.is_err() {
                break;
            }
            continue;
        }
        if let Some(status) = exit {
            let _ = tx.send(CommandEvent::Exit(status)).await;
            return;
        }
        tokio::select! {
            r = changed.changed() => if r.is_err() { return },
            msg = input.recv(), if input_open => match msg {
                Some(m) => { let _ = cmd.input.send(m); }
                None => input_open = false,
            },
            () = tx.closed() => break,
        }
    }
    if kill_on_disconnect {
        let _ = cmd.input.send(CommandInput::Kill);
    }
}

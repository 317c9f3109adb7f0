//! `warren exec` and `warren shell`: run a command in a sandbox over the data plane's
//! WebSocket (§4.4 of the API), streaming its output and, with `-i`, this terminal's input.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Read, Write};
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use clap::Args;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

use crate::client::{Client, ConnArgs, Ws, WsError};

/// The shell the server runs the command string with (`<shell> -c <command>`).
const SHELL: &str = "/bin/bash";

/// Exit status for a command stopped by its `--timeout`, as timeout(1) uses.
const TIMEOUT_EXIT: u8 = 124;

/// How often an open exec socket is pinged.
const KEEPALIVE: Duration = Duration::from_secs(30);

#[derive(Debug, Args)]
pub(crate) struct ExecArgs {
    #[command(flatten)]
    conn: ConnArgs,
    /// Forward this terminal's stdin to the command.
    #[arg(short, long)]
    interactive: bool,
    /// Run the command on a pseudo-terminal (stdout and stderr merged).
    #[arg(short, long)]
    tty: bool,
    #[command(flatten)]
    env: EnvArgs,
    /// Kill the command after this many seconds (0: no limit).
    #[arg(long, value_name = "SECS", default_value_t = 0)]
    timeout: u64,
    /// Sandbox name or id.
    name: String,
    /// The command and its arguments, run as they are (quoted for the shell): use
    /// `bash -c '...'` for pipes and other shell syntax.
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

#[derive(Debug, Args)]
pub(crate) struct ShellArgs {
    #[command(flatten)]
    conn: ConnArgs,
    #[command(flatten)]
    env: EnvArgs,
    /// Sandbox name or id.
    name: String,
}

/// Flags shared by `exec` and `shell`.
#[derive(Debug, Args)]
struct EnvArgs {
    /// Environment variable for the command (repeatable).
    #[arg(short, long = "env", value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// Working directory inside the sandbox.
    #[arg(short, long, value_name = "DIR")]
    workdir: Option<String>,
}

impl EnvArgs {
    fn map(&self) -> Result<BTreeMap<String, String>> {
        let mut env = BTreeMap::new();
        for kv in &self.env {
            let (k, v) = kv
                .split_once('=')
                .filter(|(k, _)| !k.is_empty())
                .with_context(|| format!("--env {kv:?} is not KEY=VALUE"))?;
            env.insert(k.to_owned(), v.to_owned());
        }
        Ok(env)
    }
}

/// What one `execute` asks for.
#[derive(Debug, Clone, PartialEq)]
struct Session {
    command: String,
    env: BTreeMap<String, String>,
    cwd: Option<String>,
    timeout: u64,
    interactive: bool,
    tty: bool,
}

pub(crate) fn exec(data_dir: &Path, args: ExecArgs) -> Result<ExitCode> {
    let session = exec_session(&args, terminal_size())?;
    run(data_dir, &args.conn, &args.name, session)
}

pub(crate) fn shell(data_dir: &Path, args: ShellArgs) -> Result<ExitCode> {
    let session = shell_session(&args, terminal_size())?;
    run(data_dir, &args.conn, &args.name, session)
}

fn exec_session(args: &ExecArgs, size: Option<(u16, u16)>) -> Result<Session> {
    let mut command = shell_join(&args.command);
    let mut env = args.env.map()?;
    if args.tty {
        command = format!("{}{command}", stty_prefix(size));
        add_term(&mut env);
    }
    Ok(Session {
        command,
        env,
        cwd: args.env.workdir.clone(),
        timeout: args.timeout,
        interactive: args.interactive,
        tty: args.tty,
    })
}

fn shell_session(args: &ShellArgs, size: Option<(u16, u16)>) -> Result<Session> {
    let mut env = args.env.map()?;
    add_term(&mut env);
    Ok(Session {
        command: format!("{}exec bash -l", stty_prefix(size)),
        env,
        cwd: args.env.workdir.clone(),
        timeout: 0,
        interactive: true,
        tty: true,
    })
}

/// The API has no message to resize a command's PTY (§4.4.1 lists only input, close_stdin
/// and kill), and the server starts PTYs at 24x80. So the size of this terminal is set from
/// inside, before the command starts; later resizes of the local window are not passed on.
fn stty_prefix(size: Option<(u16, u16)>) -> String {
    match size {
        Some((rows, cols)) if rows > 0 && cols > 0 => {
            format!("stty rows {rows} cols {cols} 2>/dev/null; ")
        }
        _ => String::new(),
    }
}

/// Programs on the PTY need TERM to draw; pass this terminal's unless `-e` set one.
fn add_term(env: &mut BTreeMap<String, String>) {
    if !env.contains_key("TERM") {
        let term = std::env::var("TERM")
            .ok()
            .filter(|t| !t.is_empty() && t != "dumb")
            .unwrap_or_else(|| "xterm-256color".into());
        env.insert("TERM".into(), term);
    }
}

/// Rows and columns of this terminal, if stdout or stdin is one.
fn terminal_size() -> Option<(u16, u16)> {
    let size = |fd: std::os::fd::BorrowedFd<'_>| {
        rustix::termios::tcgetwinsize(fd)
            .ok()
            .map(|w| (w.ws_row, w.ws_col))
    };
    use std::os::fd::AsFd;
    let out = std::io::stdout();
    let inp = std::io::stdin();
    (out.is_terminal().then(|| size(out.as_fd())).flatten())
        .or_else(|| inp.is_terminal().then(|| size(inp.as_fd())).flatten())
}

/// Quotes words for a POSIX shell so the command runs exactly these arguments.
fn shell_quote(word: &str) -> String {
    // `=` is left out of the safe set: an unquoted `A=b` first word would be an assignment.
    let safe = |b: u8| b.is_ascii_alphanumeric() || b"@%+:,./_-".contains(&b);
    if !word.is_empty() && word.bytes().all(safe) {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

fn shell_join(words: &[String]) -> String {
    words
        .iter()
        .map(|w| shell_quote(w))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The first message on the socket (§4.4.1).
fn execute_message(s: &Session, command_id: &str) -> Value {
    let mut m = json!({
        "type": "execute",
        "command": s.command,
        "timeout_seconds": s.timeout,
        "shell": SHELL,
        "command_id": command_id,
        // The command belongs to this terminal: when this process goes away, so does it.
        "kill_on_disconnect": true,
    });
    if !s.env.is_empty() {
        m["env"] = json!(s.env);
    }
    if let Some(cwd) = &s.cwd {
        m["cwd"] = json!(cwd);
    }
    if !s.interactive {
        m["close_stdin"] = json!(true);
    }
    if s.tty {
        m["pty"] = json!(true);
    }
    m
}

/// How a command ended.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Exit(u8),
    /// Killed by its timeout; the server's message.
    Timeout(String),
}

fn run(data_dir: &Path, conn: &ConnArgs, name: &str, session: Session) -> Result<ExitCode> {
    let client = Client::new(conn, data_dir)?;
    let rt = crate::tokio_runtime()?;
    // Raw mode only when keystrokes go to a PTY: then Ctrl-C, Ctrl-D and friends are bytes for
    // the remote terminal, not signals or EOF for this process. The guard restores the
    // terminal when dropped, on errors and panics too, before anything is printed below.
    let raw = if session.interactive && session.tty {
        RawMode::enable()?
    } else {
        None
    };
    let io = Io {
        out: &mut std::io::stdout(),
        err: &mut std::io::stderr(),
        input: session.interactive.then(|| spawn_stdin_reader(session.tty)),
    };
    let outcome = rt.block_on(session_loop(&client, name, &session, io));
    drop(raw);
    // The stdin reader thread may be blocked in read(2); do not wait for it.
    rt.shutdown_background();
    match outcome? {
        Outcome::Exit(code) => Ok(ExitCode::from(code)),
        Outcome::Timeout(message) => {
            eprintln!("error: {message}");
            Ok(ExitCode::from(TIMEOUT_EXIT))
        }
    }
}

/// Local stdin, as the reader thread hands it over.
#[derive(Debug)]
enum Input {
    Data(String),
    Eof,
}

/// What woke the session loop.
#[derive(Debug)]
enum Event {
    /// A message from the server.
    Message(Value),
    /// SIGINT, SIGTERM or SIGHUP.
    Signal,
}

/// Where a session's output goes and its input comes from: this process's stdio, or buffers
/// in tests.
struct Io<'a> {
    out: &'a mut dyn Write,
    err: &'a mut dyn Write,
    input: Option<mpsc::Receiver<Input>>,
}

async fn session_loop(client: &Client, name: &str, s: &Session, io: Io<'_>) -> Result<Outcome> {
    let Io {
        out: stdout,
        err: stderr,
        input: mut stdin,
    } = io;
    let sb = client.get_sandbox(name).await?;
    let dataplane = sb.dataplane()?.to_owned();
    let command_id = uuid::Uuid::now_v7().simple().to_string();
    let first = execute_message(s, &command_id).to_string();
    let (mut ws, mut pending) = start(client, &dataplane, &first).await?;

    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    let mut hangup = signal(SignalKind::hangup())?;
    let mut kills = 0u32;
    // Pings keep a quiet session (a shell waiting for keystrokes, a long silent build) from
    // being dropped as idle by anything between here and the server, as the SDKs' pings do.
    let mut keepalive =
        tokio::time::interval_at(tokio::time::Instant::now() + KEEPALIVE, KEEPALIVE);
    let mut stdout_broken = false;

    loop {
        let event = if let Some(m) = pending.take() {
            Event::Message(m)
        } else {
            tokio::select! {
                frame = ws.next() => match frame {
                    None | Some(Ok(Message::Close(_))) => bail!(
                        "the connection to sandbox {name} closed before the command ended"
                    ),
                    Some(Err(e)) => bail!("lost the connection to sandbox {name}: {e}"),
                    Some(Ok(frame)) => match parse_frame(frame)? {
                        Some(m) => Event::Message(m),
                        None => continue,
                    },
                },
                input = recv_input(&mut stdin) => {
                    let out = match input {
                        Some(Input::Data(data)) => json!({"type": "input", "data": data}),
                        // A PTY gets EOT, like a terminal's Ctrl-D; a pipe is closed.
                        Some(Input::Eof) | None => {
                            stdin = None;
                            if s.tty {
                                json!({"type": "input", "data": "\u{4}"})
                            } else {
                                json!({"type": "close_stdin"})
                            }
                        }
                    };
                    send(&mut ws, &out).await?;
                    continue;
                }
                // Ctrl-C (when the terminal is not raw), kill(1) or a closed terminal: kill the
                // command and wait for its exit; a second signal gives up waiting.
                _ = interrupt.recv() => Event::Signal,
                _ = terminate.recv() => Event::Signal,
                _ = hangup.recv() => Event::Signal,
                _ = keepalive.tick() => {
                    ws.send(Message::Ping(Vec::new().into()))
                        .await
                        .context("lost the connection to the sandbox")?;
                    continue;
                }
            }
        };
        let msg = match event {
            Event::Message(m) => m,
            Event::Signal => {
                kills += 1;
                if kills > 1 {
                    return Ok(Outcome::Exit(130));
                }
                send(&mut ws, &json!({"type": "kill"})).await?;
                continue;
            }
        };
        match msg.get("type").and_then(Value::as_str).unwrap_or("") {
            "stdout" | "stderr" => {
                let data = msg.get("data").and_then(Value::as_str).unwrap_or("");
                if msg["type"] == "stderr" {
                    let _ = stderr
                        .write_all(data.as_bytes())
                        .and_then(|()| stderr.flush());
                } else if !stdout_broken
                    && stdout
                        .write_all(data.as_bytes())
                        .and_then(|()| stdout.flush())
                        .is_err()
                {
                    // Whoever read our output has gone (`warren exec ... | head`): stop the
                    // command as SIGPIPE would stop a local one.
                    stdout_broken = true;
                    send(&mut ws, &json!({"type": "kill"})).await?;
                }
            }
            "exit" => {
                let _ = ws.close(None).await;
                let code = msg.get("exit_code").and_then(Value::as_i64).unwrap_or(-1);
                return Ok(Outcome::Exit(exit_status(code)));
            }
            "error" => {
                let _ = ws.close(None).await;
                let text = msg
                    .get("error")
                    .and_then(Value::as_str)
                    .unwrap_or("the command failed")
                    .to_owned();
                match msg.get("error_type").and_then(Value::as_str) {
                    Some("CommandTimeout") => return Ok(Outcome::Timeout(text)),
                    _ => bail!("{text}"),
                }
            }
            // `started` and message types this client does not know are ignored (§4.4.2).
            _ => {}
        }
    }
}

/// Opens the socket and sends `execute`, retrying (with the same `command_id`, so the server
/// attaches instead of starting a second copy) while the server is busy or unreachable or the
/// stream ends before `started` — as the SDKs do (§1.5). Returns the socket and the first
/// message.
async fn start(client: &Client, dataplane: &str, first: &str) -> Result<(Ws, Option<Value>)> {
    const MAX_RETRIES: u32 = 5;
    let budget = Instant::now() + Duration::from_secs(120);
    let mut attempt = 0u32;
    loop {
        let err = match client.websocket(dataplane, "/execute/ws").await {
            Err(WsError::Fatal(e)) => return Err(e),
            Err(WsError::Retryable(e)) => e,
            Ok(mut ws) => match first_message(&mut ws, first).await {
                Ok(m) => return Ok((ws, Some(m))),
                Err(e) => e,
            },
        };
        attempt += 1;
        let delay =
            Duration::from_millis(500u64 << (attempt - 1).min(4)).min(Duration::from_secs(8));
        if attempt > MAX_RETRIES || Instant::now() + delay > budget {
            return Err(err);
        }
        tokio::time::sleep(delay).await;
    }
}

async fn first_message(ws: &mut Ws, first: &str) -> Result<Value> {
    ws.send(Message::text(first)).await?;
    while let Some(frame) = ws.next().await {
        if let Some(m) = parse_frame(frame?)? {
            return Ok(m);
        }
    }
    Err(anyhow!(
        "the sandbox closed the connection before the command started"
    ))
}

/// One JSON object per text frame; binary frames with JSON are accepted too (§4.4).
fn parse_frame(frame: Message) -> Result<Option<Value>> {
    let v: Value = match frame {
        Message::Text(t) => serde_json::from_str(t.as_str())?,
        Message::Binary(b) => serde_json::from_slice(&b)?,
        _ => return Ok(None),
    };
    if v.is_object() { Ok(Some(v)) } else { Ok(None) }
}

async fn send(ws: &mut Ws, msg: &Value) -> Result<()> {
    ws.send(Message::text(msg.to_string()))
        .await
        .context("lost the connection to the sandbox")
}

async fn recv_input(rx: &mut Option<mpsc::Receiver<Input>>) -> Option<Input> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Reads stdin on a plain thread: a blocked read must not keep the runtime from shutting
/// down. Input travels as JSON strings, so bytes are decoded as UTF-8 across reads.
fn spawn_stdin_reader(tty: bool) -> mpsc::Receiver<Input> {
    let (tx, rx) = mpsc::channel(8);
    // Keystrokes should go out at once; piped input in bigger pieces.
    let len = if tty { 4096 } else { 32 * 1024 };
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let mut buf = vec![0u8; len];
        let mut pending = Vec::new();
        loop {
            match stdin.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    pending.extend_from_slice(&buf[..n]);
                    let text = take_utf8(&mut pending);
                    if !text.is_empty() && tx.blocking_send(Input::Data(text)).is_err() {
                        return;
                    }
                }
            }
        }
        if !pending.is_empty() {
            let _ = tx.blocking_send(Input::Data(String::from_utf8_lossy(&pending).into_owned()));
        }
        let _ = tx.blocking_send(Input::Eof);
    });
    rx
}

/// Takes the decodable prefix of `buf` as text, leaving an incomplete trailing UTF-8 sequence
/// for the next read. Invalid bytes become U+FFFD: the protocol carries text only.
fn take_utf8(buf: &mut Vec<u8>) -> String {
    let mut out = String::new();
    let mut rest: &[u8] = buf;
    loop {
        match std::str::from_utf8(rest) {
            Ok(s) => {
                out.push_str(s);
                rest = &[];
                break;
            }
            Err(e) => {
                let (good, bad) = rest.split_at(e.valid_up_to());
                out.push_str(&String::from_utf8_lossy(good));
                match e.error_len() {
                    Some(n) => {
                        out.push('\u{fffd}');
                        rest = &bad[n..];
                    }
                    None => {
                        rest = bad;
                        break;
                    }
                }
            }
        }
    }
    let keep = rest.len();
    buf.drain(..buf.len() - keep);
    out
}

/// A command's exit code as this process's status: a negative code (killed by signal N) is
/// 128+N, as shells report it.
fn exit_status(code: i64) -> u8 {
    let code = if code < 0 {
        128i64.saturating_add(code.saturating_neg())
    } else {
        code
    };
    u8::try_from(code.clamp(0, 255)).unwrap_or(u8::MAX)
}

/// The terminal in raw mode for as long as this lives.
struct RawMode {
    saved: nix::sys::termios::Termios,
}

impl std::fmt::Debug for RawMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RawMode")
    }
}

impl RawMode {
    /// Switches stdin's terminal to raw mode; `None` when stdin is not a terminal.
    fn enable() -> Result<Option<Self>> {
        use nix::sys::termios::{SetArg, cfmakeraw, tcgetattr, tcsetattr};
        let stdin = std::io::stdin();
        if !stdin.is_terminal() {
            return Ok(None);
        }
        let saved = tcgetattr(&stdin).context("cannot read the terminal's settings")?;
        let mut raw = saved.clone();
        cfmakeraw(&mut raw);
        tcsetattr(&stdin, SetArg::TCSANOW, &raw).context("cannot put the terminal in raw mode")?;
        Ok(Some(Self { saved }))
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        use nix::sys::termios::{SetArg, tcsetattr};
        let _ = tcsetattr(std::io::stdin(), SetArg::TCSANOW, &self.saved);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        exec: ExecArgs,
    }

    fn parse(args: &[&str]) -> ExecArgs {
        let mut argv = vec!["exec"];
        argv.extend(args);
        Cli::try_parse_from(argv).unwrap().exec
    }

    #[test]
    fn quoting_keeps_words_intact() {
        assert_eq!(shell_quote("ls"), "ls");
        assert_eq!(shell_quote("/usr/bin/x-y_z.1"), "/usr/bin/x-y_z.1");
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote("$HOME"), "'$HOME'");
        assert_eq!(shell_quote("A=b"), "'A=b'");
        assert_eq!(shell_quote("*"), "'*'");
        assert_eq!(
            shell_join(&["bash".into(), "-c".into(), "echo \"hi\" | wc -c".into()]),
            r#"bash -c 'echo "hi" | wc -c'"#
        );
    }

    #[test]
    fn exec_builds_the_execute_message() {
        let a = parse(&[
            "-e",
            "A=1",
            "-e",
            "B=x=y",
            "-w",
            "/app",
            "--timeout",
            "5",
            "box",
            "--",
            "echo",
            "a b",
        ]);
        assert_eq!(a.name, "box");
        let s = exec_session(&a, Some((40, 120))).unwrap();
        assert_eq!(
            execute_message(&s, "cid"),
            json!({
                "type": "execute",
                "command": "echo 'a b'",
                "timeout_seconds": 5,
                "shell": "/bin/bash",
                "command_id": "cid",
                "kill_on_disconnect": true,
                "env": {"A": "1", "B": "x=y"},
                "cwd": "/app",
                "close_stdin": true,
            })
        );
    }

    #[test]
    fn exec_flags_for_stdin_and_tty() {
        let s = exec_session(&parse(&["-i", "box", "cat"]), None).unwrap();
        let m = execute_message(&s, "c");
        assert!(m.get("close_stdin").is_none());
        assert!(m.get("pty").is_none());
        assert_eq!(m["timeout_seconds"], 0);

        let s = exec_session(&parse(&["-it", "box", "--", "top", "-b"]), Some((40, 120))).unwrap();
        let m = execute_message(&s, "c");
        assert_eq!(m["pty"], true);
        assert!(m.get("close_stdin").is_none());
        assert_eq!(m["command"], "stty rows 40 cols 120 2>/dev/null; top -b");
        assert!(m["env"]["TERM"].is_string());

        // Without a local terminal there is no size to pass on.
        let s = exec_session(&parse(&["-t", "-e", "TERM=vt100", "box", "ls"]), None).unwrap();
        let m = execute_message(&s, "c");
        assert_eq!(m["command"], "ls");
        assert_eq!(m["env"]["TERM"], "vt100");
        assert_eq!(m["close_stdin"], true);
    }

    #[test]
    fn exec_needs_a_command_and_good_env() {
        let mut argv = vec!["exec", "box"];
        assert!(Cli::try_parse_from(&argv).is_err());
        argv.push("true");
        assert!(Cli::try_parse_from(&argv).is_ok());
        assert!(exec_session(&parse(&["-e", "NOEQUALS", "box", "true"]), None).is_err());
        assert!(exec_session(&parse(&["-e", "=v", "box", "true"]), None).is_err());
        // Flags after the command belong to the command.
        let a = parse(&["box", "ls", "-i", "--timeout", "3"]);
        assert!(!a.interactive);
        assert_eq!(a.command, ["ls", "-i", "--timeout", "3"]);
    }

    #[test]
    fn shell_runs_a_login_bash_on_a_pty() {
        #[derive(Debug, Parser)]
        struct ShellCli {
            #[command(flatten)]
            shell: ShellArgs,
        }
        let a = ShellCli::try_parse_from(["shell", "box"]).unwrap().shell;
        let m = execute_message(&shell_session(&a, Some((24, 80))).unwrap(), "c");
        assert_eq!(
            m["command"],
            "stty rows 24 cols 80 2>/dev/null; exec bash -l"
        );
        assert_eq!(m["pty"], true);
        assert_eq!(m["timeout_seconds"], 0);
        assert!(m.get("close_stdin").is_none());
    }

    #[test]
    fn utf8_is_split_on_character_boundaries() {
        let mut buf = "aé".as_bytes().to_vec();
        let last = buf.pop().unwrap();
        assert_eq!(take_utf8(&mut buf), "a");
        assert_eq!(buf.len(), 1);
        buf.push(last);
        assert_eq!(take_utf8(&mut buf), "é");
        assert!(buf.is_empty());
        let mut buf = vec![b'x', 0xff, b'y'];
        assert_eq!(take_utf8(&mut buf), "x\u{fffd}y");
        assert!(buf.is_empty());
    }

    #[test]
    fn exit_codes_map_like_a_shell() {
        assert_eq!(exit_status(0), 0);
        assert_eq!(exit_status(3), 3);
        assert_eq!(exit_status(137), 137);
        assert_eq!(exit_status(-9), 137);
        assert_eq!(exit_status(300), 255);
        assert_eq!(exit_status(i64::MIN), 255);
    }

    #[test]
    fn frames_carry_json_objects() {
        let m = parse_frame(Message::text(r#"{"type":"exit","exit_code":0}"#)).unwrap();
        assert_eq!(m.unwrap()["type"], "exit");
        let m = parse_frame(Message::binary(br#"{"type":"started"}"#.to_vec())).unwrap();
        assert_eq!(m.unwrap()["type"], "started");
        assert!(
            parse_frame(Message::Ping(Vec::new().into()))
                .unwrap()
                .is_none()
        );
        assert!(parse_frame(Message::text("[1]")).unwrap().is_none());
        assert!(parse_frame(Message::text("nope")).is_err());
    }

    fn plain(command: &str, interactive: bool) -> Session {
        Session {
            command: command.into(),
            env: BTreeMap::new(),
            cwd: None,
            timeout: 0,
            interactive,
            tty: false,
        }
    }

    /// Runs a session against the mock; returns the outcome, stdout and stderr.
    async fn run_mock(
        srv: &MockServer,
        s: &Session,
        input: Option<mpsc::Receiver<Input>>,
    ) -> (Result<Outcome>, String, String) {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let io = Io {
            out: &mut out,
            err: &mut err,
            input,
        };
        let r = session_loop(&srv.client(), "box", s, io).await;
        (
            r,
            String::from_utf8(out).unwrap(),
            String::from_utf8(err).unwrap(),
        )
    }

    use crate::client::mock::MockServer;

    #[tokio::test]
    async fn output_streams_and_the_exit_code_is_kept() {
        let srv = MockServer::start().await;
        let (r, out, err) = run_mock(&srv, &plain("echo", false), None).await;
        assert_eq!(r.unwrap(), Outcome::Exit(3));
        assert_eq!(out, "hello\n");
        assert_eq!(err, "oops\n");
        let reqs = srv.requests();
        assert_eq!(reqs[0], "GET /api/v2/sandboxes/boxes/box");
        assert_eq!(reqs[1], "GET /dp/box/execute/ws");
        let first = srv.rec.lock().unwrap().executes[0].clone();
        assert_eq!(first["type"], "execute");
        assert_eq!(first["close_stdin"], true);
        assert_eq!(first["command_id"].as_str().unwrap().len(), 32);
    }

    #[tokio::test]
    async fn stdin_is_forwarded_then_closed() {
        let srv = MockServer::start().await;
        let (tx, rx) = mpsc::channel(4);
        tx.send(Input::Data("abc".into())).await.unwrap();
        tx.send(Input::Data("é\n".into())).await.unwrap();
        tx.send(Input::Eof).await.unwrap();
        let (r, out, _) = run_mock(&srv, &plain("cat", true), Some(rx)).await;
        assert_eq!(r.unwrap(), Outcome::Exit(0));
        assert_eq!(out, "abcé\n");
        let rec = srv.rec.lock().unwrap();
        assert!(rec.executes[0].get("close_stdin").is_none());
        assert_eq!(
            rec.controls.last().unwrap(),
            &json!({"type": "close_stdin"})
        );
    }

    #[tokio::test]
    async fn a_pty_gets_eot_at_the_end_of_input() {
        let srv = MockServer::start().await;
        let (tx, rx) = mpsc::channel(4);
        tx.send(Input::Eof).await.unwrap();
        let mut s = plain("cat", true);
        s.tty = true;
        let (r, _, _) = run_mock(&srv, &s, Some(rx)).await;
        assert_eq!(r.unwrap(), Outcome::Exit(0));
        assert_eq!(
            srv.rec.lock().unwrap().controls,
            [json!({"type": "input", "data": "\u{4}"})]
        );
    }

    #[tokio::test]
    async fn timeouts_and_errors_are_told_apart() {
        let srv = MockServer::start().await;
        let (r, _, _) = run_mock(&srv, &plain("sleep", false), None).await;
        assert_eq!(
            r.unwrap(),
            Outcome::Timeout("Command timed out after 1 seconds".into())
        );
        let (r, _, _) = run_mock(&srv, &plain("fail", false), None).await;
        assert_eq!(r.unwrap_err().to_string(), "boom");
        let (r, _, _) = run_mock(&srv, &plain("drop", false), None).await;
        assert!(
            r.unwrap_err()
                .to_string()
                .contains("closed before the command ended")
        );
    }

    #[tokio::test]
    async fn execute_is_reissued_with_the_same_id_until_started() {
        let srv = MockServer::start().await;
        let (r, _, _) = run_mock(&srv, &plain("flaky", false), None).await;
        assert_eq!(r.unwrap(), Outcome::Exit(0));
        let rec = srv.rec.lock().unwrap();
        assert_eq!(rec.executes.len(), 2);
        assert_eq!(rec.executes[0], rec.executes[1]);
    }

    #[tokio::test]
    async fn unknown_sandboxes_fail_before_connecting() {
        let srv = MockServer::start().await;
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let io = Io {
            out: &mut out,
            err: &mut err,
            input: None,
        };
        let e = session_loop(&srv.client(), "missing", &plain("echo", false), io)
            .await
            .unwrap_err();
        assert_eq!(e.to_string(), "Sandbox 'missing' not found");
    }

    /// A reader that went away, like `head` closing the pipe.
    struct Closed;
    impl Write for Closed {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(std::io::ErrorKind::BrokenPipe.into())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_closed_stdout_kills_the_command() {
        let srv = MockServer::start().await;
        let mut err = Vec::new();
        let io = Io {
            out: &mut Closed,
            err: &mut err,
            input: None,
        };
        let r = session_loop(&srv.client(), "box", &plain("hang", false), io).await;
        assert_eq!(r.unwrap(), Outcome::Exit(137));
        assert_eq!(srv.rec.lock().unwrap().controls, [json!({"type": "kill"})]);
    }
}

//! `warren exec` and `warren shell`: run a command in a sandbox over the data plane's
//! WebSocket (§4.4 of the API), streaming its output and, with `-i`, this terminal's input.
//! This file turns the flags into one `execute`; the rest is split by concern:
//!
//! - `session.rs`: the socket, from the `execute` message to the exit.
//! - `stdin.rs`: this terminal's input, as text.
//! - `tty.rs`: this terminal's size and raw mode.

mod session;
mod stdin;
mod tty;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Args;

use self::session::{Io, Outcome, Session, session_loop};
use self::stdin::spawn_stdin_reader;
use self::tty::{RawMode, terminal_size};
use crate::client::{Client, ConnArgs};

/// Exit status for a command stopped by its `--timeout`, as timeout(1) uses.
const TIMEOUT_EXIT: u8 = 124;

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

/// The LangSmith API has no message to resize a command's PTY (§4.4.1 lists only input,
/// close_stdin and kill; `resize` is a Warren extension), and servers start PTYs at 24x80. So the size of this terminal is set from
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

#[cfg(test)]
mod tests;

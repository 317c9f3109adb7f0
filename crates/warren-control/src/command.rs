//! A command as the control plane runs it: the request with its defaults, and the typed stream
//! of what it does. Every transport (WebSocket, SSE, blocking HTTP, the CLI) is framing over
//! [`CommandStream`].

use std::collections::BTreeMap;
use std::sync::Arc;

use warren_driver::{
    CommandChannel, CommandEvent, CommandInput, Driver, DriverError, ErrorKind, ExecSpec,
    ExitReason, PtySize, Stream,
};
use warren_types::{RunConfig, SandboxId};

use crate::config::{ConfigError, validate_run_config};
use crate::error::ControlError;
use crate::metrics::Metrics;
use crate::state::ActivityGuard;

/// Largest timeout, idle timeout or TTL a command accepts, in seconds (a year). Larger values
/// are refused rather than clamped: they are mistakes, and unchecked they overflow the
/// millisecond arithmetic here and the deadline arithmetic in the agent.
pub const MAX_LIMIT_SECONDS: i64 = 365 * 24 * 3600;
/// Wall-clock limit of a command that names none, in seconds.
pub const DEFAULT_TIMEOUT_SECONDS: i64 = 60;
/// Idle timeout (no client attached) of a command that names none, in seconds.
pub const DEFAULT_IDLE_TIMEOUT_SECONDS: i64 = 300;
/// How long a finished command stays attachable when the request names no TTL, in seconds.
pub const DEFAULT_TTL_SECONDS: i64 = 600;
/// The shell a command runs under when the request names none.
pub const DEFAULT_SHELL: &str = "/bin/bash";

/// A command to run, as a client asked for it. `None` means "the default".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecRequest {
    /// The shell command line.
    pub command: String,
    /// Idempotency key: a second request with a known id attaches instead of running again.
    pub command_id: Option<String>,
    /// The shell (`/bin/bash`).
    pub shell: Option<String>,
    /// Wall-clock limit in seconds (60); zero or less is no limit.
    pub timeout_seconds: Option<i64>,
    /// Kill after this long with no client attached (300); negative is never.
    pub idle_timeout_seconds: Option<i64>,
    /// Keep the finished command attachable this long (600); negative is forever.
    pub ttl_seconds: Option<i64>,
    /// Kill the command as soon as its last client goes away.
    pub kill_on_disconnect: bool,
    /// The command's run_config layer, over the sandbox's.
    pub run_config: Option<RunConfig>,
    /// Legacy environment (instead of `run_config`, never with it).
    pub env: Option<BTreeMap<String, String>>,
    /// Legacy working directory (instead of `run_config`, never with it).
    pub cwd: Option<String>,
    /// Keep stdin open for input.
    pub stdin: bool,
    /// Run under a PTY of this size.
    pub pty: Option<PtySize>,
    /// Nobody can reattach (a blocking call): no stdin, no PTY, killed when the caller goes
    /// away and forgotten once it ends, whatever the limits above say (they are still checked).
    pub blocking: bool,
}

/// Seconds (`None` is `default`; below zero is "never" when `never_below_zero`) to an optional
/// millisecond limit, refusing values past [`MAX_LIMIT_SECONDS`].
fn secs_to_ms(
    field: &str,
    v: Option<i64>,
    default: i64,
    never_below_zero: bool,
) -> Result<Option<u64>, ConfigError> {
    let n = v.unwrap_or(default);
    if n < 0 && never_below_zero {
        return Ok(None);
    }
    if n > MAX_LIMIT_SECONDS {
        return Err(ConfigError::Invalid(format!(
            "{field} must be at most {MAX_LIMIT_SECONDS} seconds (one year)"
        )));
    }
    Ok(Some(u64::try_from(n).unwrap_or(0) * 1000))
}

impl ExecRequest {
    /// The agent's spec: the sandbox's run_config, then the command's (or the legacy
    /// `env`/`cwd`), and every default filled in.
    pub fn to_spec(&self, sandbox: &RunConfig) -> Result<ExecSpec, ConfigError> {
        if self.run_config.is_some() && (self.env.is_some() || self.cwd.is_some()) {
            return Err(ConfigError::Malformed(
                "send either run_config or the legacy env/cwd, not both".into(),
            ));
        }
        if self.command.contains('\0') {
            return Err(ConfigError::Malformed(
                "the command contains a NUL byte".into(),
            ));
        }
        let layer = self.run_config.clone().unwrap_or_else(|| RunConfig {
            user: None,
            work_dir: self.cwd.clone(),
            env_vars: self.env.clone().unwrap_or_default(),
        });
        validate_run_config(&layer)?;
        let rc = sandbox.layered(&layer);
        let timeout_ms = match self.timeout_seconds.unwrap_or(DEFAULT_TIMEOUT_SECONDS) {
            n if n <= 0 => None,
            n => secs_to_ms("timeout_seconds", Some(n), 0, false)?,
        };
        let ttl_ms = secs_to_ms("ttl_seconds", self.ttl_seconds, DEFAULT_TTL_SECONDS, true)?;
        let blocking = self.blocking;
        Ok(ExecSpec {
            command_id: self.command_id.clone(),
            argv: vec![
                self.shell.clone().unwrap_or_else(|| DEFAULT_SHELL.into()),
                "-c".into(),
                self.command.clone(),
            ],
            env: rc.env_vars.into_iter().collect(),
            cwd: rc.work_dir,
            user: rc.user,
            pty: self.pty.filter(|_| !blocking),
            stdin: !blocking && (self.stdin || self.pty.is_some()),
            timeout_ms,
            idle_timeout_ms: secs_to_ms(
                "idle_timeout_seconds",
                self.idle_timeout_seconds,
                DEFAULT_IDLE_TIMEOUT_SECONDS,
                true,
            )?,
            kill_on_disconnect: blocking || self.kill_on_disconnect,
            ttl_ms: if blocking { Some(0) } else { ttl_ms },
        })
    }
}

/// Why a command ended without an exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecFailure {
    /// No command has that id.
    CommandNotFound,
    /// The command's session expired.
    SessionExpired,
    /// The command could not be started, or failed otherwise.
    Command,
}

/// One thing a command did, in order: `Started`, `Output`s, then one of `Exit`, `TimedOut`,
/// `Failed` or `Lost`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecEvent {
    /// The command runs (or ran).
    Started {
        /// Its id.
        command_id: String,
        /// Its main process's pid inside the sandbox.
        pid: u32,
    },
    /// Output bytes; `offset` is the position of `data[0]` in its stream.
    Output {
        /// Which stream.
        stream: Stream,
        /// Byte offset.
        offset: u64,
        /// The bytes (a multi-byte character may be split across two events).
        data: Vec<u8>,
    },
    /// It exited (or a signal ended it).
    Exit {
        /// Exit code; `128 + signal` for a signal.
        code: i32,
        /// The kernel's OOM killer ended it.
        oom_killed: bool,
    },
    /// Its wall-clock limit ended it.
    TimedOut {
        /// Says after how long.
        message: String,
    },
    /// It could not run or be found.
    Failed {
        /// What kind of failure.
        failure: ExecFailure,
        /// Detail.
        message: String,
    },
    /// The sandbox's agent went away mid-command; the command may still run, and an attach
    /// from the client's offsets may reach it.
    Lost,
}

impl ExecEvent {
    /// The error a transport that answers with one status (blocking HTTP, the start of an SSE
    /// stream) reports for an event that ends a command without an exit code; `None` for the
    /// others.
    pub fn into_error(self) -> Option<ControlError> {
        match self {
            Self::TimedOut { message } => Some(ControlError::Command(message)),
            Self::Failed {
                failure: ExecFailure::CommandNotFound | ExecFailure::SessionExpired,
                message,
            } => Some(ControlError::CommandNotFound(message)),
            Self::Failed { message, .. } => Some(ControlError::Command(message)),
            Self::Lost => Some(ControlError::Driver(DriverError::Unreachable(
                "sandbox agent disconnected".into(),
            ))),
            _ => None,
        }
    }
}

/// Everything a [`CommandStream`] needs from the control plane when the command ends.
#[derive(Debug, Clone)]
pub(crate) struct StreamContext {
    pub(crate) driver: Arc<dyn Driver>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) runtime_id: SandboxId,
    pub(crate) sandbox_id: String,
}

/// A running (or finished) command: its events in order, and its input. Dropping it detaches;
/// the command keeps running unless it asked to be killed on disconnect.
#[derive(Debug)]
pub struct CommandStream {
    channel: CommandChannel,
    ctx: StreamContext,
    /// OOM kills of the sandbox when the stream opened: a SIGKILL with more since is the
    /// kernel's doing (SECURITY.md row 35).
    oom_base: u64,
    timeout_ms: Option<u64>,
    command_id: Option<String>,
    pid: u32,
    done: bool,
    _guard: ActivityGuard,
}

impl CommandStream {
    pub(crate) fn new(
        channel: CommandChannel,
        ctx: StreamContext,
        timeout_ms: Option<u64>,
        guard: ActivityGuard,
    ) -> Self {
        let oom_base = ctx.driver.oom_kills(&ctx.runtime_id).unwrap_or(0);
        Self {
            channel,
            ctx,
            oom_base,
            timeout_ms,
            command_id: None,
            pid: 0,
            done: false,
            _guard: guard,
        }
    }

    /// The sandbox (public id) the command runs in.
    pub fn sandbox_id(&self) -> &str {
        &self.ctx.sandbox_id
    }

    /// The command's id and pid, once `Started` was seen.
    pub fn started(&self) -> Option<(&str, u32)> {
        self.command_id.as_deref().map(|id| (id, self.pid))
    }

    /// The next event; `None` after the last. Not cancel-safe only in the sense that an event
    /// taken is consumed: dropping the future before it resolves loses nothing.
    pub async fn next(&mut self) -> Option<ExecEvent> {
        if self.done {
            return None;
        }
        let Some(event) = self.channel.events.recv().await else {
            self.done = true;
            return Some(ExecEvent::Lost);
        };
        Some(match event {
            CommandEvent::Started { command_id, pid } => {
                self.command_id = Some(command_id.clone());
                self.pid = pid;
                ExecEvent::Started { command_id, pid }
            }
            CommandEvent::Output {
                stream,
                offset,
                data,
            } => {
                self.ctx
                    .metrics
                    .streamed(stream == Stream::Stdout, data.len() as u64);
                ExecEvent::Output {
                    stream,
                    offset,
                    data,
                }
            }
            CommandEvent::Exit(status) => {
                self.done = true;
                if status.reason == ExitReason::Timeout {
                    ExecEvent::TimedOut {
                        message: match self.timeout_ms {
                            Some(ms) => format!("Command timed out after {} seconds", ms / 1000),
                            None => "Command timed out".into(),
                        },
                    }
                } else {
                    let oom_killed = status.reason == ExitReason::Exited
                        && status.signal == Some(9)
                        && self.ctx.driver.oom_kills(&self.ctx.runtime_id).unwrap_or(0)
                            > self.oom_base;
                    ExecEvent::Exit {
                        code: status.code,
                        oom_killed,
                    }
                }
            }
            CommandEvent::Error(e) => {
                self.done = true;
                let failure = match e.kind {
                    ErrorKind::CommandNotFound => ExecFailure::CommandNotFound,
                    ErrorKind::SessionExpired => ExecFailure::SessionExpired,
                    _ => ExecFailure::Command,
                };
                ExecEvent::Failed {
                    failure,
                    message: e.message,
                }
            }
            CommandEvent::Lost(reason) => {
                self.done = true;
                tracing::warn!(sandbox_id = %self.ctx.sandbox_id, reason, "lost the sandbox agent mid-command");
                ExecEvent::Lost
            }
        })
    }

    /// A handle that sends input to the command from another task. Holding one keeps the
    /// command attached after the stream is dropped: drop it too.
    pub fn inputs(&self) -> CommandInputs {
        CommandInputs(self.channel.input.clone())
    }

    /// Sends bytes to the command's stdin; `false` when the command is gone.
    pub async fn input(&self, data: Vec<u8>) -> bool {
        self.inputs().input(data).await
    }

    /// Closes the command's stdin.
    pub async fn close_stdin(&self) -> bool {
        self.inputs().close_stdin().await
    }

    /// Kills the command's process group.
    pub async fn kill(&self) -> bool {
        self.inputs().kill().await
    }

    /// Resizes the command's PTY.
    pub async fn resize(&self, rows: u16, cols: u16) -> bool {
        self.inputs().resize(rows, cols).await
    }
}

/// Sends input to a running command; see [`CommandStream::inputs`].
#[derive(Debug, Clone)]
pub struct CommandInputs(tokio::sync::mpsc::Sender<CommandInput>);

impl CommandInputs {
    async fn send(&self, input: CommandInput) -> bool {
        self.0.send(input).await.is_ok()
    }

    /// Sends bytes to the command's stdin; `false` when the command is gone.
    pub async fn input(&self, data: Vec<u8>) -> bool {
        self.send(CommandInput::Data(data)).await
    }

    /// Closes the command's stdin.
    pub async fn close_stdin(&self) -> bool {
        self.send(CommandInput::CloseStdin).await
    }

    /// Kills the command's process group.
    pub async fn kill(&self) -> bool {
        self.send(CommandInput::Kill).await
    }

    /// Resizes the command's PTY.
    pub async fn resize(&self, rows: u16, cols: u16) -> bool {
        self.send(CommandInput::Resize(PtySize { rows, cols }))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_fill_what_the_request_leaves_out() {
        let spec = ExecRequest {
            command: "echo hi".into(),
            ..Default::default()
        }
        .to_spec(&RunConfig::default())
        .unwrap();
        assert_eq!(spec.argv, ["/bin/bash", "-c", "echo hi"]);
        assert_eq!(spec.timeout_ms, Some(60_000));
        assert_eq!(spec.idle_timeout_ms, Some(300_000));
        assert_eq!(spec.ttl_ms, Some(600_000));
        assert!(!spec.stdin);
    }

    #[test]
    fn limits_below_zero_mean_never_and_absurd_ones_are_refused() {
        let req = ExecRequest {
            command: "x".into(),
            timeout_seconds: Some(0),
            idle_timeout_seconds: Some(-1),
            ttl_seconds: Some(-1),
            ..Default::default()
        };
        let spec = req.to_spec(&RunConfig::default()).unwrap();
        assert_eq!(
            (spec.timeout_ms, spec.idle_timeout_ms, spec.ttl_ms),
            (None, None, None)
        );
        for v in [MAX_LIMIT_SECONDS + 1, i64::MAX] {
            let req = ExecRequest {
                command: "x".into(),
                ttl_seconds: Some(v),
                ..Default::default()
            };
            let e = req.to_spec(&RunConfig::default()).unwrap_err();
            assert!(
                matches!(&e, ConfigError::Invalid(m) if m.contains("ttl_seconds")),
                "{e}"
            );
        }
    }

    #[test]
    fn the_command_layer_goes_over_the_sandbox_layer_and_legacy_fields_are_exclusive() {
        let sandbox = RunConfig {
            user: Some("app".into()),
            work_dir: Some("/srv".into()),
            env_vars: [("A".into(), "1".into())].into(),
        };
        let req = ExecRequest {
            command: "x".into(),
            cwd: Some("/tmp".into()),
            env: Some([("B".into(), "2".into())].into()),
            ..Default::default()
        };
        let spec = req.to_spec(&sandbox).unwrap();
        assert_eq!(spec.cwd.as_deref(), Some("/tmp"));
        assert_eq!(spec.user.as_deref(), Some("app"));
        assert_eq!(spec.env.len(), 2);
        let both = ExecRequest {
            run_config: Some(RunConfig::default()),
            ..req
        };
        assert!(matches!(
            both.to_spec(&sandbox),
            Err(ConfigError::Malformed(_))
        ));
        let nul = ExecRequest {
            command: "a\0b".into(),
            ..Default::default()
        };
        assert!(nul.to_spec(&sandbox).is_err());
    }
}

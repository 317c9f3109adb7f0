//! `warren run`: create a sandbox, run one command with live output, delete the sandbox. A
//! client of the control plane, embedded in this process: the sandbox gets the same defaults,
//! limits and quotas as one made through the API, and is in the store and the audit log (as the
//! data dir's admin) while it runs, so `warren sandbox list` beside a daemon shows it.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;
use tokio::io::AsyncReadExt;
use warren_control::{
    CommandInputs, CommandStream, Control, ControlConfig, CreateSandbox, ExecEvent, ExecRequest,
    Principal, ResourceLimits, RunConfig, Stream,
};
use warren_types::{ImageRef, parse_size};

#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    /// CPUs, rounded up to whole CPUs (default: the server's default, 1).
    #[arg(long)]
    cpus: Option<f64>,
    /// Memory limit, e.g. 512M (default: the server's default, 1G).
    #[arg(long, value_parser = parse_size)]
    memory: Option<u64>,
    /// Disk size (root filesystem and /tmp together), e.g. 2G (default: the server's, 4G).
    #[arg(long, value_parser = parse_size)]
    disk: Option<u64>,
    /// Most processes and threads at once (default: the server's).
    #[arg(long)]
    pids: Option<u32>,
    /// Image to create the sandbox from.
    #[arg(long, default_value = "system/default:latest")]
    image: ImageRef,
    /// Isolation tier: `jail` (namespaces on this kernel) or `vm` (a virtual machine with its
    /// own kernel; `scripts/vm/setup.sh` prepares it).
    #[arg(long, default_value = "jail")]
    tier: warren_control::Tier,
    /// Forward this terminal's stdin to the command.
    #[arg(short, long)]
    interactive: bool,
    /// Environment variable for the command (repeatable).
    #[arg(short, long = "env", value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// Working directory inside the sandbox.
    #[arg(short, long)]
    workdir: Option<String>,
    /// User to run as inside the sandbox.
    #[arg(short, long)]
    user: Option<String>,
    /// Kill the command after this many seconds (0: no limit).
    #[arg(long, default_value_t = 0)]
    timeout: u64,
    /// The command and its arguments.
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

/// One argument quoted for a POSIX shell: the control plane runs command lines, and `run` takes
/// an argv that must reach the program unchanged.
fn shell_quote(arg: &str) -> String {
    format!("'{}'", arg.replace('\'', r"'\''"))
}

impl RunArgs {
    fn create_request(&self) -> Result<CreateSandbox> {
        let vcpus = match self.cpus {
            Some(c) if !(c > 0.0 && c <= 1024.0) => bail!("--cpus must be between 0 and 1024"),
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // bounded above
            Some(c) => Some(c.ceil() as u32),
            None => None,
        };
        let mut env_vars = std::collections::BTreeMap::new();
        for kv in &self.env {
            let (k, v) = kv
                .split_once('=')
                .with_context(|| format!("--env {kv:?} is not KEY=VALUE"))?;
            env_vars.insert(k.to_owned(), v.to_owned());
        }
        Ok(CreateSandbox {
            snapshot: Some(self.image.to_string()),
            vcpus,
            mem_bytes: self.memory,
            fs_capacity_bytes: self.disk,
            // Gone with the command: nothing to keep across stops, no idle stop mid-command.
            persistent: Some(false),
            idle_ttl_seconds: Some(0),
            run_config: Some(RunConfig {
                user: self.user.clone(),
                work_dir: self.workdir.clone(),
                ..RunConfig::default()
            }),
            // The caller's own, above anything the image or a snapshot carries.
            env_vars: (!env_vars.is_empty()).then_some(env_vars),
            labels: Some([("warren.run".to_owned(), "true".to_owned())].into()),
            tier: Some(self.tier),
            ..CreateSandbox::default()
        })
    }

    fn exec_request(&self) -> ExecRequest {
        let argv: Vec<String> = self.command.iter().map(|a| shell_quote(a)).collect();
        ExecRequest {
            command: format!("exec {}", argv.join(" ")),
            shell: Some("/bin/sh".into()),
            timeout_seconds: Some(i64::try_from(self.timeout).unwrap_or(i64::MAX)),
            kill_on_disconnect: true,
            ttl_seconds: Some(0),
            stdin: self.interactive,
            ..ExecRequest::default()
        }
    }
}

pub(crate) fn run(data_dir: &Path, args: RunArgs) -> Result<ExitCode> {
    let create = args.create_request()?;
    let exec = args.exec_request();
    let driver = crate::open_driver(data_dir)?;
    let mut limits = ResourceLimits::from_host();
    if let Some(pids) = args.pids {
        limits.pids = pids;
    }
    let cfg = ControlConfig {
        default_pool: warren_control::pool::PoolSize::default(),
        default_tier: warren_control::Tier::Jail,
        data_dir: data_dir.to_owned(),
        public_url: String::new(),
        sweep_interval: Duration::from_secs(3600),
        egress: None,
        signer: None,
        service_domain: None,
        limits,
    };
    crate::tokio_runtime()?.block_on(async move {
        let (control, admin) = Control::open_local(cfg, Arc::new(driver))
            .await
            .context("failed to open the control plane")?;
        let rec = control
            .create(&admin, create)
            .context("failed to create the sandbox")?;
        let outcome = tokio::select! {
            r = execute(&control, &admin, &rec.id, exec, args.interactive) => r,
            _ = tokio::signal::ctrl_c() => Ok(130),
        };
        let deleted = control
            .delete(&admin, &rec.id)
            .await
            .context("failed to delete the sandbox");
        let code = outcome?;
        deleted?;
        Ok(ExitCode::from(
            u8::try_from(code.clamp(0, 255)).unwrap_or(255),
        ))
    })
}

async fn execute(
    control: &Arc<Control>,
    admin: &Principal,
    id: &str,
    exec: ExecRequest,
    interactive: bool,
) -> Result<i32> {
    control
        .wait_ready(id, Duration::from_secs(120))
        .await
        .context("the sandbox did not start")?;
    let mut stream = control.exec(admin, id, exec).await?;
    let stdin_task = interactive.then(|| tokio::spawn(forward_stdin(stream.inputs())));
    let code = stream_output(&mut stream).await;
    if let Some(t) = stdin_task {
        t.abort();
    }
    code
}

/// Copies this terminal's stdin to the command until EOF, then closes the command's stdin.
async fn forward_stdin(inputs: CommandInputs) {
    let mut stdin = tokio::io::stdin();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match stdin.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if !inputs.input(buf[..n].to_vec()).await {
                    return;
                }
            }
        }
    }
    inputs.close_stdin().await;
}

/// Copies output to this process's stdout and stderr as it arrives; returns the exit code.
async fn stream_output(stream: &mut CommandStream) -> Result<i32> {
    let mut out = std::io::stdout().lock();
    let mut err = std::io::stderr();
    loop {
        match stream.next().await {
            Some(ExecEvent::Started { .. }) => {}
            Some(ExecEvent::Output { stream, data, .. }) => {
                let sink: &mut dyn Write = match stream {
                    Stream::Stdout => &mut out,
                    Stream::Stderr => &mut err,
                };
                // A closed stdout (`warren run ... | head`) is not an error of the command.
                let _ = sink.write_all(&data).and_then(|()| sink.flush());
            }
            Some(ExecEvent::Exit { code, oom_killed }) => {
                if oom_killed {
                    eprintln!("warren: the command was killed for running out of memory");
                }
                return Ok(code);
            }
            Some(ExecEvent::TimedOut { message }) => {
                eprintln!("warren: {message}");
                return Ok(124);
            }
            Some(ExecEvent::Failed { message, .. }) => bail!("{message}"),
            Some(ExecEvent::Lost) | None => {
                bail!("the sandbox agent closed the connection before the command ended")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::shell_quote;

    #[test]
    fn arguments_survive_the_shell() {
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
    }
}

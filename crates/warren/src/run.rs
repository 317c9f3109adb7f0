//! `warren run`: create a sandbox, run one command with live output, destroy the sandbox.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::Args;
use tokio::io::AsyncReadExt;
use warren_proto::{ExecSpec, Request, Response, Stream};
use warren_runtime::{AgentReader, Driver, JailDriver, SandboxSpec};
use warren_types::{ImageRef, Limits, SandboxId, parse_size};

#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    /// CPUs (fractions allowed, e.g. 0.5).
    #[arg(long, default_value = "1")]
    cpus: f64,
    /// Memory limit, e.g. 512M.
    #[arg(long, default_value = "512M", value_parser = parse_size)]
    memory: u64,
    /// Disk size (root filesystem and /tmp together), e.g. 2G.
    #[arg(long, default_value = "2G", value_parser = parse_size)]
    disk: u64,
    /// Most processes and threads at once.
    #[arg(long, default_value_t = 1024)]
    pids: u32,
    /// Image to create the sandbox from.
    #[arg(long, default_value = "system/default:latest")]
    image: ImageRef,
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

pub(crate) fn run(data_dir: &Path, args: RunArgs) -> Result<ExitCode> {
    if !(args.cpus > 0.0 && args.cpus <= 1024.0) {
        bail!("--cpus must be between 0 and 1024");
    }
    let mut env = Vec::new();
    for kv in &args.env {
        let (k, v) = kv
            .split_once('=')
            .with_context(|| format!("--env {kv:?} is not KEY=VALUE"))?;
        env.push((k.to_owned(), v.to_owned()));
    }
    let driver = crate::open_driver(data_dir)?;
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // bounded above
    let millicpus = (args.cpus * 1000.0).round() as u32;
    let spec = SandboxSpec {
        id: SandboxId::generate(),
        image: args.image.clone(),
        limits: Limits {
            millicpus: millicpus.max(1),
            memory_bytes: args.memory,
            disk_bytes: args.disk,
            pids: args.pids,
        },
    };
    let exec = ExecSpec {
        command_id: None,
        argv: args.command.clone(),
        env,
        cwd: args.workdir.clone(),
        user: args.user.clone(),
        pty: None,
        stdin: args.interactive,
        timeout_ms: (args.timeout > 0).then(|| args.timeout.saturating_mul(1000)),
        idle_timeout_ms: None,
        kill_on_disconnect: true,
        ttl_ms: Some(0),
    };
    crate::tokio_runtime()?.block_on(async move {
        let handle = driver
            .create(&spec)
            .await
            .context("failed to create the sandbox")?;
        let outcome = tokio::select! {
            r = execute(&driver, &handle, exec, args.interactive) => r,
            _ = tokio::signal::ctrl_c() => Ok(130),
        };
        let destroyed = driver
            .destroy(&handle.id, Some(&handle))
            .await
            .context("failed to destroy the sandbox");
        let code = outcome?;
        destroyed?;
        Ok(ExitCode::from(
            u8::try_from(code.clamp(0, 255)).unwrap_or(255),
        ))
    })
}

async fn execute(
    driver: &JailDriver,
    handle: &warren_runtime::SandboxHandle,
    exec: ExecSpec,
    interactive: bool,
) -> Result<i32> {
    let mut conn = driver.connect(handle).await?;
    conn.send(&Request::Exec(exec)).await?;
    let (reader, mut writer) = conn.split();
    let stdin_task = interactive.then(|| {
        tokio::spawn(async move {
            let mut stdin = tokio::io::stdin();
            let mut buf = vec![0u8; warren_proto::MAX_CHUNK_LEN];
            loop {
                match stdin.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if writer
                            .send(&Request::Input {
                                data: buf[..n].to_vec(),
                            })
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                }
            }
            let _ = writer.send(&Request::CloseStdin).await;
            // Keep the writer (and so the connection) alive until the command ends.
            std::future::pending::<()>().await;
        })
    });
    let code = stream_output(reader).await;
    if let Some(t) = stdin_task {
        t.abort();
    }
    code
}

/// Copies output to this process's stdout and stderr as it arrives; returns the exit code.
async fn stream_output(mut reader: AgentReader) -> Result<i32> {
    let mut out = std::io::stdout().lock();
    let mut err = std::io::stderr();
    loop {
        match reader.recv().await? {
            Some(Response::Started { .. }) => {}
            Some(Response::Output { stream, data, .. }) => {
                let sink: &mut dyn Write = match stream {
                    Stream::Stdout => &mut out,
                    Stream::Stderr => &mut err,
                };
                // A closed stdout (`warren run ... | head`) is not an error of the command.
                if sink.write_all(&data).and_then(|()| sink.flush()).is_err() {
                    continue;
                }
            }
            Some(Response::Exit(status)) => return Ok(status.code),
            Some(Response::Error(e)) => bail!("{}", e.message),
            Some(other) => bail!("unexpected reply from the sandbox agent: {other:?}"),
            None => bail!("the sandbox agent closed the connection before the command ended"),
        }
    }
}

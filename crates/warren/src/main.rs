//! `warren`: the command line. Thin glue over `warren-runtime` (and, with the server, its API).

// Printing is this binary's job.
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod audit;
mod client;
mod doctor;
mod egress;
mod exec;
mod image;
mod remote;
mod run;
mod serve;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use warren_runtime::{JailConfig, JailDriver};

/// Warren: isolated, stateful sandboxes for AI agents on your own hardware.
#[derive(Debug, Parser)]
#[command(name = "warren", version, about)]
struct Cli {
    /// Where Warren keeps images, sandboxes and state.
    #[arg(
        long,
        global = true,
        env = "WARREN_DATA_DIR",
        default_value = "/var/lib/warren"
    )]
    data_dir: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create a sandbox, run one command in it with live output, destroy it; exits with the
    /// command's exit code.
    Run(run::RunArgs),
    /// Manage images.
    #[command(subcommand)]
    Image(image::ImageCommand),
    /// Check which host features Warren needs are present, and how to fix what is missing.
    Doctor,
    /// Run the daemon: the LangSmith-compatible API on one listener.
    Serve(serve::ServeArgs),
    /// Print the audit log (API calls and commands: who, what, when).
    Audit(audit::AuditArgs),
    /// Manage sandboxes on a Warren server.
    Sandbox(remote::SandboxArgs),
    /// Manage snapshots (NAME:TAG root filesystems sandboxes boot from) on a Warren server.
    Snapshot(remote::SnapshotArgs),
    /// Run a command in a sandbox on a Warren server; exits with the command's exit code.
    Exec(exec::ExecArgs),
    /// Open an interactive login shell in a sandbox on a Warren server.
    Shell(exec::ShellArgs),
    /// Copy a file into or out of a sandbox (one side is NAME:/path).
    Cp(remote::CpArgs),
    /// Manage API keys on a Warren server.
    Keys(remote::KeysArgs),
    /// Manage the workspace secrets the egress proxy injects (values are never shown).
    Secret(remote::SecretArgs),
    /// Manage templates: a snapshot with resources, network policy and run_config to create from.
    Template(remote::TemplateArgs),
    /// Show and size the warm pools that keep sandboxes booted ahead of creates.
    Pool(remote::PoolArgs),
    /// Share a port of a sandbox over HTTP (service URLs, by token or by login); list, revoke.
    Service(remote::ServiceArgs),
    /// Forward a local TCP port to a port on a sandbox's loopback (yamux over a WebSocket).
    Tunnel(remote::TunnelArgs),
}

fn main() -> ExitCode {
    // Before anything of ours is open: every descriptor above stdio is inherited.
    let inherited = warren_jail::cloexec_inherited();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("WARREN_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    if let Err(e) = inherited {
        tracing::warn!(error = %e, "failed to mark inherited descriptors close-on-exec");
    }
    let cli = Cli::parse();
    match dispatch(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(125)
        }
    }
}

fn dispatch(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Run(args) => run::run(&cli.data_dir, args),
        Command::Image(cmd) => image::image(&cli.data_dir, cmd),
        Command::Doctor => doctor::doctor(&cli.data_dir),
        Command::Serve(args) => serve::serve(&cli.data_dir, args),
        Command::Audit(args) => audit::audit(&cli.data_dir, args),
        Command::Sandbox(args) => remote::sandbox(&cli.data_dir, args),
        Command::Snapshot(args) => remote::snapshot(&cli.data_dir, args),
        Command::Exec(args) => exec::exec(&cli.data_dir, args),
        Command::Shell(args) => exec::shell(&cli.data_dir, args),
        Command::Cp(args) => remote::cp(&cli.data_dir, args),
        Command::Keys(args) => remote::keys(&cli.data_dir, args),
        Command::Service(args) => remote::service(&cli.data_dir, args),
        Command::Secret(args) => remote::secret(&cli.data_dir, args),
        Command::Tunnel(args) => remote::tunnel(&cli.data_dir, args),
        Command::Template(args) => remote::template(&cli.data_dir, args),
        Command::Pool(args) => remote::pool(&cli.data_dir, args),
    }
}

/// Directory holding `warren-agent` and `warren-jailer`: `WARREN_BIN_DIR`, else next to this
/// executable.
fn bin_dir() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("WARREN_BIN_DIR") {
        return Ok(PathBuf::from(dir));
    }
    let exe = std::env::current_exe().context("failed to find the warren executable")?;
    Ok(exe.parent().map(PathBuf::from).unwrap_or_default())
}

/// Opens the jail driver for a data dir.
fn open_driver(data_dir: &std::path::Path) -> Result<JailDriver> {
    let cfg = JailConfig::new(data_dir.to_owned(), &bin_dir()?);
    JailDriver::open(cfg).context("failed to open the sandbox runtime")
}

/// A tokio runtime for one CLI command.
fn tokio_runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("failed to start the async runtime")
}

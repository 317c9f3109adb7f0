//! `warren sandbox`: list, create, remove, stop, start and fork sandboxes.

use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Result, bail};
use clap::{Args, Subcommand};
use warren_types::parse_size;
use warren_wire::sandbox::{CreateSandboxBody, Sandbox};
use warren_wire::snapshot::ForkBody;

use super::format::{ago, human_size, row, table};
use crate::client::{Client, ConnArgs};

/// How long `sandbox start` waits for `ready`, as the SDKs do (§2.3).
const START_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Debug, Args)]
pub(crate) struct SandboxArgs {
    #[command(flatten)]
    conn: ConnArgs,
    #[command(subcommand)]
    command: SandboxCommand,
}

#[derive(Debug, Subcommand)]
enum SandboxCommand {
    /// List sandboxes.
    #[command(visible_alias = "list")]
    Ls {
        /// Print the server's JSON answer instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Create a sandbox and wait until it is ready; prints its name.
    Create(CreateArgs),
    /// Delete sandboxes and their storage.
    #[command(visible_alias = "remove")]
    Rm {
        /// Sandbox names or ids.
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Stop a sandbox, keeping its filesystem.
    Stop {
        /// Sandbox name or id.
        name: String,
    },
    /// Start a stopped sandbox and wait until it is ready.
    Start {
        /// Sandbox name or id.
        name: String,
    },
    /// Fork a sandbox: new sandboxes starting from a copy of its files (it keeps running);
    /// waits until they are ready and prints their names, one a line.
    Fork(ForkArgs),
}

#[derive(Debug, Args)]
struct ForkArgs {
    /// Sandbox name or id.
    name: String,
    /// How many forks [default: one per --name, else 1].
    #[arg(short = 'n', long = "count", value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..))]
    count: Option<u32>,
    /// A fork's name; repeat for each fork (generated when absent).
    #[arg(long = "name", value_name = "NAME")]
    names: Vec<String>,
    /// Print the server's JSON answer instead of the names.
    #[arg(long)]
    json: bool,
}

/// The POST `{B}/boxes/{name}/fork` body: only what was given, so the server's defaults apply.
fn fork_body(a: &ForkArgs) -> ForkBody {
    ForkBody {
        count: a.count,
        names: (!a.names.is_empty()).then(|| a.names.clone()),
        ..Default::default()
    }
}

#[derive(Debug, Args)]
struct CreateArgs {
    /// Name (letters, digits, '-', '_', '.'); generated when absent.
    name: Option<String>,
    /// Whole CPUs.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    cpus: Option<u32>,
    /// Memory limit, e.g. 512M.
    #[arg(long, value_parser = parse_size)]
    memory: Option<u64>,
    /// Disk size, e.g. 2G.
    #[arg(long, value_parser = parse_size)]
    disk: Option<u64>,
    /// Snapshot to boot from: an id, NAME:TAG or NAME [default: system/default:latest].
    #[arg(long)]
    snapshot: Option<String>,
    /// Template to start from (its snapshot, resources, network policy and run_config; the
    /// flags given here win).
    #[arg(long)]
    template: Option<String>,
    /// Isolation tier: `jail` or `vm` (a virtual machine with its own kernel) [default: the
    /// server's].
    #[arg(long)]
    tier: Option<String>,
    /// Stop the sandbox after this many idle seconds (a multiple of 60; 0: never).
    #[arg(long, value_name = "SECS")]
    idle_ttl: Option<u64>,
    /// How long the server may take to make the sandbox ready.
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    timeout: u64,
    /// Print the sandbox object as JSON instead of its name.
    #[arg(long)]
    json: bool,
}

/// The POST `{B}/boxes` body: only the fields that were given, so the server's defaults apply
/// to the rest.
fn create_body(a: &CreateArgs) -> CreateSandboxBody {
    CreateSandboxBody {
        wait_for_ready: Some(true),
        timeout: Some(a.timeout),
        name: a.name.clone(),
        vcpus: a.cpus,
        mem_bytes: a.memory,
        fs_capacity_bytes: a.disk,
        snapshot: a.snapshot.clone(),
        template: a.template.clone(),
        tier: a.tier.clone(),
        idle_ttl_seconds: a.idle_ttl,
        ..Default::default()
    }
}

pub(crate) fn sandbox(data_dir: &Path, args: SandboxArgs) -> Result<ExitCode> {
    let client = Client::new(&args.conn, data_dir)?;
    crate::tokio_runtime()?.block_on(sandbox_command(&client, args.command))
}

async fn sandbox_command(client: &Client, command: SandboxCommand) -> Result<ExitCode> {
    match command {
        SandboxCommand::Ls { json } => list(client, json).await,
        SandboxCommand::Create(a) => create(client, &a).await,
        SandboxCommand::Rm { names } => remove(client, &names).await,
        SandboxCommand::Stop { name } => {
            client.stop_sandbox(&name).await?;
            println!("{name}");
            Ok(ExitCode::SUCCESS)
        }
        SandboxCommand::Start { name } => start(client, &name).await,
        SandboxCommand::Fork(a) => fork(client, &a).await,
    }
}

async fn fork(client: &Client, a: &ForkArgs) -> Result<ExitCode> {
    let (text, forks) = client.fork_sandbox(&a.name, &fork_body(a)).await?;
    if a.json {
        println!("{}", text.trim_end());
    } else {
        for sb in &forks.sandboxes {
            println!("{}", sb.name);
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn list(client: &Client, as_json: bool) -> Result<ExitCode> {
    let (text, list) = client.list_sandboxes().await?;
    if as_json {
        println!("{}", text.trim_end());
        return Ok(ExitCode::SUCCESS);
    }
    // The generated SDK reads `items`, the hand-written ones `sandboxes`; both hold the same
    // page, so an older server that fills only `sandboxes` lists too.
    let boxes = if list.items.is_empty() {
        list.sandboxes
    } else {
        list.items
    };
    print!("{}", sandbox_table(&boxes, SystemTime::now()));
    Ok(ExitCode::SUCCESS)
}

/// The `sandbox ls` table.
fn sandbox_table(boxes: &[Sandbox], now: SystemTime) -> String {
    let mut rows = vec![row(&[
        "NAME", "STATUS", "VCPUS", "MEMORY", "DISK", "CREATED",
    ])];
    for b in boxes {
        rows.push(vec![
            b.name.clone(),
            b.status.clone(),
            b.vcpus.map_or_else(|| "-".into(), |v| v.to_string()),
            b.mem_bytes.map_or_else(|| "-".into(), human_size),
            b.fs_capacity_bytes.map_or_else(|| "-".into(), human_size),
            b.created_at
                .as_deref()
                .map_or_else(|| "-".into(), |t| ago(t, now)),
        ]);
    }
    table(&rows)
}

async fn create(client: &Client, a: &CreateArgs) -> Result<ExitCode> {
    let (text, sb) = client.create_sandbox(&create_body(a)).await?;
    if a.json {
        println!("{}", text.trim_end());
    } else {
        println!("{}", sb.name);
    }
    Ok(ExitCode::SUCCESS)
}

async fn remove(client: &Client, names: &[String]) -> Result<ExitCode> {
    let mut failed = 0usize;
    for name in names {
        match client.delete_sandbox(name).await {
            Ok(()) => println!("{name}"),
            Err(e) => {
                eprintln!("error: {name}: {e:#}");
                failed += 1;
            }
        }
    }
    if failed > 0 {
        bail!("failed to remove {failed} of {} sandboxes", names.len());
    }
    Ok(ExitCode::SUCCESS)
}

async fn start(client: &Client, name: &str) -> Result<ExitCode> {
    client.start_sandbox(name).await?;
    // Like the SDKs' wait_for_sandbox: poll the light status endpoint once a second.
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        let s = client.sandbox_status(name).await?;
        match s.status.as_str() {
            "ready" => {
                println!("{name}");
                return Ok(ExitCode::SUCCESS);
            }
            "failed" => bail!(
                "sandbox {name} failed to start: {}",
                s.status_message.as_deref().unwrap_or("no reason given")
            ),
            _ if Instant::now() >= deadline => bail!(
                "sandbox {name} was not ready within {} s (status: {})",
                START_TIMEOUT.as_secs(),
                s.status
            ),
            _ => tokio::time::sleep(Duration::from_secs(1)).await,
        }
    }
}

#[cfg(test)]
mod tests;

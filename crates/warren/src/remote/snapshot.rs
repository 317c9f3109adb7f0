//! `warren snapshot`: list, capture, build, remove and tag snapshots, the immutable root
//! filesystems sandboxes boot from, named `name:tag` (a tag is a pointer that moves; §2.4, §3.2).

use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Result, bail};
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use warren_types::parse_size;
use warren_wire::snapshot::{CaptureBody, CreateSnapshotBody, Snapshot, TagBody};

use super::format::{ago, human_size, row, table};
use crate::client::{Client, ConnArgs};

/// How often `snapshot build` asks how the build is going.
const POLL_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Debug, Args)]
pub(crate) struct SnapshotArgs {
    #[command(flatten)]
    conn: ConnArgs,
    #[command(subcommand)]
    command: SnapshotCommand,
}

#[derive(Debug, Subcommand)]
enum SnapshotCommand {
    /// List snapshots.
    #[command(visible_alias = "list")]
    Ls {
        /// Print the server's JSON answer instead of a table.
        #[arg(long)]
        json: bool,
        /// Only names containing this text (case-insensitive).
        #[arg(long, value_name = "S")]
        name_contains: Option<String>,
    },
    /// Capture a sandbox's files (running or stopped) as a snapshot; prints NAME:TAG and its id.
    Capture {
        /// Sandbox name or id.
        sandbox: String,
        /// NAME[:TAG] of the snapshot [default tag: latest].
        #[arg(value_name = "NAME[:TAG]", value_parser = parse_name_tag)]
        name: NameTag,
        /// Sandbox settings the snapshot carries, beside the files: sandboxes created from it
        /// start with each one their create leaves unset (mounts, proxy_config, env_vars,
        /// resources, lifecycle, labels, or all; repeat or separate by commas).
        #[arg(long, value_delimiter = ',')]
        include: Vec<String>,
        /// Store the env var values and credentials the included settings hold (refused
        /// without it when they hold any).
        #[arg(long)]
        confirm_secret_values: bool,
        /// Print the snapshot object as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Build a snapshot from a Docker image and wait until it is ready; prints NAME:TAG and its
    /// id.
    Build(BuildArgs),
    /// Delete snapshots (refused while a sandbox booted from one exists).
    #[command(visible_alias = "remove")]
    Rm {
        /// Snapshot ids, NAMEs or NAME:TAGs.
        #[arg(required = true, value_name = "REF")]
        refs: Vec<String>,
    },
    /// Point another tag of a snapshot's name at it (moving the tag off whatever held it).
    Tag {
        /// Snapshot id, NAME or NAME:TAG.
        #[arg(value_name = "REF")]
        reference: String,
        /// The new tag.
        tag: String,
    },
}

#[derive(Debug, Args)]
struct BuildArgs {
    /// NAME[:TAG] of the snapshot [default tag: the image's own, else latest].
    #[arg(value_name = "NAME[:TAG]", value_parser = parse_name_tag)]
    name: NameTag,
    /// Docker image to build from, e.g. python:3.12-slim.
    #[arg(long, value_name = "REF")]
    image: String,
    /// Disk size of sandboxes booted from it, e.g. 4G.
    #[arg(long, value_parser = parse_size)]
    disk: Option<u64>,
    /// How long to wait for the build.
    #[arg(long, value_name = "SECS", default_value_t = 600)]
    timeout: u64,
}

/// `NAME[:TAG]` as typed. Names never hold a `:` (they are `/`-separated lowercase parts), so
/// the last `:` starts the tag.
#[derive(Debug, Clone, PartialEq, Eq)]
struct NameTag {
    name: String,
    tag: Option<String>,
}

fn parse_name_tag(s: &str) -> Result<NameTag, String> {
    let (name, tag) = match s.rsplit_once(':') {
        Some((name, tag)) => (name, Some(tag)),
        None => (s, None),
    };
    if name.is_empty() {
        return Err(format!("{s:?} has no name (expected NAME[:TAG])"));
    }
    if tag.is_some_and(str::is_empty) {
        return Err(format!("{s:?} has an empty tag (expected NAME[:TAG])"));
    }
    Ok(NameTag {
        name: name.to_owned(),
        tag: tag.map(str::to_owned),
    })
}

/// The POST `{B}/snapshots` body: only what was given, so the server's defaults apply.
fn build_body(a: &BuildArgs) -> CreateSnapshotBody {
    CreateSnapshotBody {
        name: a.name.name.clone(),
        docker_image: Some(a.image.clone()),
        fs_capacity_bytes: a.disk,
        tag: a.name.tag.clone(),
        ..Default::default()
    }
}

/// The POST `{B}/boxes/{sandbox}/snapshot` body.
fn capture_body(name: &NameTag, include: Vec<String>, confirm: bool) -> CaptureBody {
    CaptureBody {
        name: name.name.clone(),
        tag: name.tag.clone(),
        include: (!include.is_empty()).then_some(include),
        confirm_allow_snapshot_secret_values: confirm.then_some(true),
        ..Default::default()
    }
}

pub(crate) fn snapshot(data_dir: &Path, args: SnapshotArgs) -> Result<ExitCode> {
    let client = Client::new(&args.conn, data_dir)?;
    crate::tokio_runtime()?.block_on(snapshot_command(&client, args.command))
}

async fn snapshot_command(client: &Client, command: SnapshotCommand) -> Result<ExitCode> {
    match command {
        SnapshotCommand::Ls {
            json,
            name_contains,
        } => list(client, json, name_contains.as_deref()).await,
        SnapshotCommand::Capture {
            sandbox,
            name,
            include,
            confirm_secret_values,
            json,
        } => {
            let body = capture_body(&name, include, confirm_secret_values);
            let (text, snap) = client.capture_snapshot(&sandbox, &body).await?;
            if json {
                println!("{}", text.trim_end());
            } else {
                println!("{} {}", reference(&snap, name.tag.as_deref()), snap.id);
            }
            Ok(ExitCode::SUCCESS)
        }
        SnapshotCommand::Build(a) => build(client, &a).await,
        SnapshotCommand::Rm { refs } => remove(client, &refs).await,
        SnapshotCommand::Tag { reference: r, tag } => {
            let snap = client
                .tag_snapshot(&r, &TagBody { tag: tag.clone() })
                .await?;
            println!("{} {}", reference(&snap, Some(&tag)), snap.id);
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `name:tag` of a snapshot: the tag asked for, else the first tag pointing at it; the bare
/// name when none does (a dangling snapshot, reachable by id only).
fn reference(s: &Snapshot, asked: Option<&str>) -> String {
    match asked.or_else(|| s.tags.first().map(String::as_str)) {
        Some(tag) => format!("{}:{tag}", s.name),
        None => s.name.clone(),
    }
}

async fn list(client: &Client, as_json: bool, name_contains: Option<&str>) -> Result<ExitCode> {
    let (text, list) = client.list_snapshots(name_contains).await?;
    if as_json {
        println!("{}", text.trim_end());
        return Ok(ExitCode::SUCCESS);
    }
    // Hand-written clients read `snapshots`, the generated one `items`; both hold the page.
    let snaps = if list.snapshots.is_empty() {
        list.items
    } else {
        list.snapshots
    };
    print!("{}", snapshot_table(&snaps, SystemTime::now()));
    Ok(ExitCode::SUCCESS)
}

/// The `snapshot ls` table.
fn snapshot_table(snaps: &[Snapshot], now: SystemTime) -> String {
    let mut rows = vec![row(&[
        "NAME", "TAGS", "ID", "STATUS", "SIZE", "SOURCE", "CREATED",
    ])];
    let or_dash = |s: Option<&str>| s.unwrap_or("-").to_owned();
    for s in snaps {
        rows.push(vec![
            s.name.clone(),
            if s.tags.is_empty() {
                "-".into()
            } else {
                s.tags.join(",")
            },
            s.id.clone(),
            s.status.clone(),
            human_size(s.fs_capacity_bytes),
            or_dash(s.docker_image.as_deref().or(s.source_sandbox_id.as_deref())),
            s.created_at
                .as_deref()
                .map_or_else(|| "-".into(), |t| ago(t, now)),
        ]);
    }
    table(&rows)
}

async fn build(client: &Client, a: &BuildArgs) -> Result<ExitCode> {
    let (_, snap) = client.create_snapshot(&build_body(a)).await?;
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed}] building {prefix}: {wide_msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar.set_prefix(reference(&snap, a.name.tag.as_deref()));
    bar.enable_steady_tick(Duration::from_millis(120));
    let timeout = Duration::from_secs(a.timeout);
    let done = wait_until_built(client, snap, timeout, &|status| {
        bar.set_message(status.to_owned());
    })
    .await;
    // Cleared before anything is printed, on failure too, so no spinner is left behind.
    bar.finish_and_clear();
    let snap = done?;
    println!("{} {}", reference(&snap, a.name.tag.as_deref()), snap.id);
    Ok(ExitCode::SUCCESS)
}

/// Polls a building snapshot once a second until it is `ready` (returned), `failed` or
/// `timeout` has passed (errors), telling `progress` each status seen.
pub(crate) async fn wait_until_built(
    client: &Client,
    mut snap: Snapshot,
    timeout: Duration,
    progress: &dyn Fn(&str),
) -> Result<Snapshot> {
    let deadline = Instant::now() + timeout;
    loop {
        // While it builds, the server says what it is doing (a layer's progress).
        progress(snap.status_message.as_deref().unwrap_or(&snap.status));
        match snap.status.as_str() {
            "ready" => return Ok(snap),
            "failed" => bail!(
                "snapshot {} failed to build: {}",
                snap.name,
                snap.status_message.as_deref().unwrap_or("no reason given")
            ),
            _ if Instant::now() >= deadline => bail!(
                "snapshot {} ({}) was not ready within {} s (status: {}); the build may still \
                 finish on the server (`warren snapshot ls`)",
                snap.name,
                snap.id,
                timeout.as_secs(),
                snap.status
            ),
            _ => tokio::time::sleep(POLL_INTERVAL).await,
        }
        snap = client.get_snapshot(&snap.id).await?;
    }
}

async fn remove(client: &Client, refs: &[String]) -> Result<ExitCode> {
    let mut failed = 0usize;
    for r in refs {
        match client.delete_snapshot(r).await {
            Ok(()) => println!("{r}"),
            Err(e) => {
                eprintln!("error: {r}: {e:#}");
                failed += 1;
            }
        }
    }
    if failed > 0 {
        bail!("failed to remove {failed} of {} snapshots", refs.len());
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests;

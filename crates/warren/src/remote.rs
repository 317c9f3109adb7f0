//! Commands that manage a Warren server through its API: `warren sandbox`, `warren cp` and
//! `warren keys`. (`warren exec` and `warren shell` are in `exec.rs`.)

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use futures_util::StreamExt;
use reqwest::Method;
use reqwest::multipart::{Form, Part};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use warren_types::parse_size;

use crate::client::{Client, ConnArgs, Sandbox};

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
fn create_body(a: &CreateArgs) -> Value {
    let mut body = json!({ "wait_for_ready": true, "timeout": a.timeout });
    let fields = [
        ("name", a.name.as_ref().map(|v| json!(v))),
        ("vcpus", a.cpus.map(|v| json!(v))),
        ("mem_bytes", a.memory.map(|v| json!(v))),
        ("fs_capacity_bytes", a.disk.map(|v| json!(v))),
        ("snapshot", a.snapshot.as_ref().map(|v| json!(v))),
        ("idle_ttl_seconds", a.idle_ttl.map(|v| json!(v))),
    ];
    for (k, v) in fields {
        if let Some(v) = v {
            body[k] = v;
        }
    }
    body
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
            client
                .send(
                    client
                        .control(Method::POST, &["boxes", &name, "stop"])
                        .json(&json!({})),
                )
                .await?;
            println!("{name}");
            Ok(ExitCode::SUCCESS)
        }
        SandboxCommand::Start { name } => start(client, &name).await,
    }
}

async fn list(client: &Client, as_json: bool) -> Result<ExitCode> {
    let (text, v) = client.json(client.control(Method::GET, &["boxes"])).await?;
    if as_json {
        println!("{}", text.trim_end());
        return Ok(ExitCode::SUCCESS);
    }
    // The hand-written SDKs read `sandboxes`, the generated one `items`; both hold the same.
    let items = v
        .get("sandboxes")
        .or_else(|| v.get("items"))
        .cloned()
        .unwrap_or(Value::Array(Vec::new()));
    let boxes: Vec<Sandbox> =
        serde_json::from_value(items).context("unexpected sandbox list from the server")?;
    let now = SystemTime::now();
    let mut rows = vec![row(&[
        "NAME", "STATUS", "VCPUS", "MEMORY", "DISK", "CREATED",
    ])];
    for b in &boxes {
        rows.push(vec![
            b.name.clone(),
            b.status.clone().unwrap_or_else(|| "-".into()),
            b.vcpus.map_or_else(|| "-".into(), |v| v.to_string()),
            b.mem_bytes.map_or_else(|| "-".into(), human_size),
            b.fs_capacity_bytes.map_or_else(|| "-".into(), human_size),
            b.created_at
                .as_deref()
                .map_or_else(|| "-".into(), |t| ago(t, now)),
        ]);
    }
    print!("{}", table(&rows));
    Ok(ExitCode::SUCCESS)
}

async fn create(client: &Client, a: &CreateArgs) -> Result<ExitCode> {
    let rb = client
        .control(Method::POST, &["boxes"])
        .json(&create_body(a))
        // The server holds the answer until the sandbox is ready, up to `timeout`.
        .timeout(Duration::from_secs(a.timeout.saturating_add(30)));
    let (text, v) = client.json(rb).await?;
    if a.json {
        println!("{}", text.trim_end());
    } else {
        let sb: Sandbox =
            serde_json::from_value(v).context("unexpected sandbox object from the server")?;
        println!("{}", sb.name);
    }
    Ok(ExitCode::SUCCESS)
}

async fn remove(client: &Client, names: &[String]) -> Result<ExitCode> {
    let mut failed = 0usize;
    for name in names {
        match client
            .send(client.control(Method::DELETE, &["boxes", name]))
            .await
        {
            Ok(_) => println!("{name}"),
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

/// The status poll's answer (§3.3).
#[derive(Debug, Deserialize)]
struct StatusReply {
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    status_message: Option<String>,
}

async fn start(client: &Client, name: &str) -> Result<ExitCode> {
    client
        .send(
            client
                .control(Method::POST, &["boxes", name, "start"])
                .json(&json!({})),
        )
        .await?;
    // Like the SDKs' wait_for_sandbox: poll the light status endpoint once a second.
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        let (_, v) = client
            .json(client.control(Method::GET, &["boxes", name, "status"]))
            .await?;
        let s: StatusReply = serde_json::from_value(v).context("unexpected status answer")?;
        // A missing status reads as provisioning (§2.3).
        let status = s.status.unwrap_or_else(|| "provisioning".into());
        match status.as_str() {
            "ready" => {
                println!("{name}");
                return Ok(ExitCode::SUCCESS);
            }
            "failed" => bail!(
                "sandbox {name} failed to start: {}",
                s.status_message.as_deref().unwrap_or("no reason given")
            ),
            _ if Instant::now() >= deadline => bail!(
                "sandbox {name} was not ready within {} s (status: {status})",
                START_TIMEOUT.as_secs()
            ),
            _ => tokio::time::sleep(Duration::from_secs(1)).await,
        }
    }
}

// ---- cp ----

#[derive(Debug, Args)]
pub(crate) struct CpArgs {
    #[command(flatten)]
    conn: ConnArgs,
    /// Source: a local path, `-` for stdin, or NAME:/path in a sandbox.
    src: String,
    /// Destination: a local path, `-` for stdout, or NAME:/path in a sandbox. A path ending
    /// in `/` (or an existing local directory) receives the file under its own name.
    dst: String,
}

/// One side of `warren cp`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Location {
    Local(String),
    Remote { sandbox: String, path: String },
}

/// `NAME:PATH` is a sandbox path when NAME is non-empty and has no `/` (the rule `docker cp`
/// uses), so a local file with a colon in its name can be written as `./a:b`.
fn parse_location(s: &str) -> Location {
    match s.split_once(':') {
        Some((name, path)) if !name.is_empty() && !name.contains('/') => Location::Remote {
            sandbox: name.to_owned(),
            path: path.to_owned(),
        },
        _ => Location::Local(s.to_owned()),
    }
}

/// The last path component, for `cp x dir/`.
fn base_name(path: &str) -> Option<&str> {
    path.trim_end_matches('/')
        .rsplit('/')
        .next()
        .filter(|s| !s.is_empty() && *s != "." && *s != "..")
}

/// The remote file an upload writes: `dir/` gets the local file's name appended.
fn upload_target(local: &str, remote: &str) -> Result<String> {
    if remote.is_empty() || remote.ends_with('/') {
        let Some(name) = base_name(local).filter(|_| local != "-") else {
            bail!("name the destination file: stdin has no file name");
        };
        Ok(format!("{remote}{name}"))
    } else {
        Ok(remote.to_owned())
    }
}

/// The local file a download writes: an existing directory or `dir/` gets the remote name.
fn download_target(remote: &str, local: &str) -> Result<PathBuf> {
    let p = PathBuf::from(local);
    if local.ends_with('/') || p.is_dir() {
        let name = base_name(remote)
            .with_context(|| format!("{remote:?} does not name a file to download"))?;
        Ok(p.join(name))
    } else {
        Ok(p)
    }
}

pub(crate) fn cp(data_dir: &Path, args: CpArgs) -> Result<ExitCode> {
    let client = Client::new(&args.conn, data_dir)?;
    let (src, dst) = (parse_location(&args.src), parse_location(&args.dst));
    crate::tokio_runtime()?.block_on(async move {
        match (src, dst) {
            (Location::Local(local), Location::Remote { sandbox, path }) => {
                upload(&client, &local, &sandbox, &path).await?;
            }
            (Location::Remote { sandbox, path }, Location::Local(local)) => {
                download(&client, &sandbox, &path, &local).await?;
            }
            (Location::Remote { .. }, Location::Remote { .. }) => {
                bail!("copying between two sandboxes is not supported; copy through a local file")
            }
            (Location::Local(_), Location::Local(_)) => {
                bail!("one side of `warren cp` must be a sandbox path, NAME:/path")
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// POST `{D}/upload?path=...` with one multipart part `file` (filename `file`), streamed from
/// the file or stdin so large files are never held in memory.
async fn upload(client: &Client, local: &str, sandbox: &str, remote: &str) -> Result<()> {
    let target = upload_target(local, remote)?;
    let part = if local == "-" {
        let stream = tokio_util::io::ReaderStream::new(tokio::io::stdin());
        Part::stream(reqwest::Body::wrap_stream(stream))
    } else {
        let file = tokio::fs::File::open(local)
            .await
            .with_context(|| format!("cannot open {local}"))?;
        let meta = file.metadata().await?;
        if meta.is_dir() {
            bail!(
                "{local} is a directory; copy directories with tar, e.g. \
                 `tar -C {local} -c . | warren exec -i {sandbox} -- tar -C {target} -x`"
            );
        }
        let stream = tokio_util::io::ReaderStream::new(file);
        Part::stream_with_length(reqwest::Body::wrap_stream(stream), meta.len())
    };
    let part = part
        .file_name("file")
        .mime_str("application/octet-stream")?;
    let sb = client.get_sandbox(sandbox).await?;
    let mut url = Client::dataplane_url(sb.dataplane()?, "/upload")?;
    url.query_pairs_mut().append_pair("path", &target);
    client
        .send(
            client
                .request(Method::POST, url)
                .multipart(Form::new().part("file", part)),
        )
        .await
        .with_context(|| format!("failed to upload to {sandbox}:{target}"))?;
    Ok(())
}

/// GET `{D}/download?path=...`, streamed into a temporary file that replaces the destination
/// only once complete (or straight to stdout for `-`).
async fn download(client: &Client, sandbox: &str, remote: &str, local: &str) -> Result<()> {
    let sb = client.get_sandbox(sandbox).await?;
    let mut url = Client::dataplane_url(sb.dataplane()?, "/download")?;
    url.query_pairs_mut().append_pair("path", remote);
    let what = || format!("failed to download {sandbox}:{remote}");
    if local == "-" {
        let resp = client
            .send(client.request(Method::GET, url))
            .await
            .with_context(what)?;
        let mut out = tokio::io::stdout();
        let mut body = resp.bytes_stream();
        while let Some(chunk) = body.next().await {
            out.write_all(&chunk.with_context(what)?).await?;
        }
        out.flush().await?;
        return Ok(());
    }
    let target = download_target(remote, local)?;
    let dir = match target.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    };
    let file_name = target
        .file_name()
        .with_context(|| format!("{} does not name a file", target.display()))?;
    let tmp = dir.join(format!(
        ".{}.warren-cp-{}",
        file_name.to_string_lossy(),
        std::process::id()
    ));
    let result = async {
        let resp = client
            .send(client.request(Method::GET, url))
            .await
            .with_context(what)?;
        let mut file = tokio::fs::File::create(&tmp)
            .await
            .with_context(|| format!("cannot write in {}", dir.display()))?;
        let mut body = resp.bytes_stream();
        while let Some(chunk) = body.next().await {
            file.write_all(&chunk.with_context(what)?).await?;
        }
        file.flush().await?;
        drop(file);
        tokio::fs::rename(&tmp, &target)
            .await
            .with_context(|| format!("cannot write {}", target.display()))
    }
    .await;
    if result.is_err() {
        let _ = tokio::fs::remove_file(&tmp).await;
    }
    result
}

// ---- keys ----

#[derive(Debug, Args)]
pub(crate) struct KeysArgs {
    #[command(flatten)]
    conn: ConnArgs,
    #[command(subcommand)]
    command: KeysCommand,
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Create an API key; prints the key, which is shown only this once.
    Create {
        /// Who or what the key is for.
        #[arg(long)]
        name: String,
        /// Let the key manage keys and see every sandbox.
        #[arg(long)]
        admin: bool,
    },
    /// List API keys (never the keys themselves).
    #[command(visible_alias = "list")]
    Ls {
        /// Print the server's JSON answer instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Revoke an API key.
    Revoke {
        /// Key id, as `warren keys ls` shows it.
        id: String,
    },
}

/// A key's metadata in `GET {B}/keys`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct KeyInfo {
    id: String,
    name: String,
    admin: bool,
    created_at: Option<String>,
    revoked_at: Option<String>,
}

pub(crate) fn keys(data_dir: &Path, args: KeysArgs) -> Result<ExitCode> {
    let client = Client::new(&args.conn, data_dir)?;
    crate::tokio_runtime()?.block_on(keys_command(&client, args.command))
}

async fn keys_command(client: &Client, command: KeysCommand) -> Result<ExitCode> {
    match command {
        KeysCommand::Create { name, admin } => {
            let (_, v) = client
                .json(
                    client
                        .control(Method::POST, &["keys"])
                        .json(&json!({ "name": name, "admin": admin })),
                )
                .await?;
            let key = v
                .get("key")
                .and_then(Value::as_str)
                .context("the server's answer has no key")?;
            // Only the key on stdout, so `KEY=$(warren keys create ...)` works.
            println!("{key}");
        }
        KeysCommand::Ls { json } => {
            let (text, v) = client.json(client.control(Method::GET, &["keys"])).await?;
            if json {
                println!("{}", text.trim_end());
                return Ok(ExitCode::SUCCESS);
            }
            let keys: Vec<KeyInfo> =
                serde_json::from_value(v.get("keys").cloned().unwrap_or(Value::Array(Vec::new())))
                    .context("unexpected key list from the server")?;
            let now = SystemTime::now();
            let when =
                |t: &Option<String>| t.as_deref().map_or_else(|| "-".into(), |t| ago(t, now));
            let mut rows = vec![row(&["ID", "NAME", "ADMIN", "CREATED", "REVOKED"])];
            for k in &keys {
                rows.push(vec![
                    k.id.clone(),
                    k.name.clone(),
                    if k.admin { "yes" } else { "no" }.into(),
                    when(&k.created_at),
                    when(&k.revoked_at),
                ]);
            }
            print!("{}", table(&rows));
        }
        KeysCommand::Revoke { id } => {
            client
                .send(client.control(Method::DELETE, &["keys", &id]))
                .await?;
            println!("{id}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

// ---- formatting ----

fn row(cells: &[&str]) -> Vec<String> {
    cells.iter().map(|s| (*s).to_owned()).collect()
}

/// Left-aligned columns three spaces apart; the last column is not padded.
fn table(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for r in rows {
        let mut line = String::new();
        for (c, cell) in r.iter().enumerate() {
            if c + 1 == r.len() {
                line.push_str(cell);
            } else {
                let pad = widths[c].saturating_sub(cell.chars().count()) + 3;
                line.push_str(cell);
                line.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Bytes in binary units, as `--memory`/`--disk` take them: 512M, 2G, 1.5G.
fn human_size(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "K", "M", "G", "T", "P"];
    let mut unit = 0;
    while unit + 1 < UNITS.len() && n >= 1u64 << (10 * (unit + 1)) {
        unit += 1;
    }
    let div = 1u128 << (10 * unit);
    let n = u128::from(n);
    if n.is_multiple_of(div) {
        return format!("{}{}", n / div, UNITS[unit]);
    }
    let tenths = (n * 10 + div / 2) / div;
    if tenths.is_multiple_of(10) {
        format!("{}{}", tenths / 10, UNITS[unit])
    } else {
        format!("{}.{}{}", tenths / 10, tenths % 10, UNITS[unit])
    }
}

/// An RFC 3339 time as "N units ago"; the raw text if it does not parse.
fn ago(rfc3339: &str, now: SystemTime) -> String {
    let Ok(t) = humantime::parse_rfc3339_weak(rfc3339) else {
        return rfc3339.to_owned();
    };
    let secs = now.duration_since(t).map_or(0, |d| d.as_secs());
    let (n, unit) = match secs {
        0..60 => {
            return if secs < 2 {
                "just now".into()
            } else {
                format!("{secs} seconds ago")
            };
        }
        60..3600 => (secs / 60, "minute"),
        3600..172_800 => (secs / 3600, "hour"),
        _ => (secs / 86_400, "day"),
    };
    if n == 1 {
        format!("1 {unit} ago")
    } else {
        format!("{n} {unit}s ago")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(subcommand)]
        command: SandboxCommand,
    }

    fn parse_create(args: &[&str]) -> CreateArgs {
        let mut argv = vec!["sandbox", "create"];
        argv.extend(args);
        match Cli::try_parse_from(argv).unwrap().command {
            SandboxCommand::Create(a) => a,
            other => panic!("parsed {other:?}"),
        }
    }

    #[test]
    fn create_sends_only_what_was_given() {
        assert_eq!(
            create_body(&parse_create(&[])),
            json!({"wait_for_ready": true, "timeout": 60})
        );
        let a = parse_create(&[
            "box1",
            "--cpus",
            "2",
            "--memory",
            "512M",
            "--disk",
            "2G",
            "--snapshot",
            "py:3.12",
            "--idle-ttl",
            "600",
            "--timeout",
            "90",
        ]);
        assert_eq!(
            create_body(&a),
            json!({
                "wait_for_ready": true,
                "timeout": 90,
                "name": "box1",
                "vcpus": 2,
                "mem_bytes": 536_870_912u64,
                "fs_capacity_bytes": 2_147_483_648u64,
                "snapshot": "py:3.12",
                "idle_ttl_seconds": 600,
            })
        );
    }

    #[test]
    fn create_rejects_bad_figures() {
        for bad in [
            &["--cpus", "0"][..],
            &["--memory", "lots"],
            &["--idle-ttl", "-1"],
        ] {
            let mut argv = vec!["sandbox", "create"];
            argv.extend(bad);
            assert!(Cli::try_parse_from(argv).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn cp_locations() {
        assert_eq!(
            parse_location("box:/app/x.txt"),
            Location::Remote {
                sandbox: "box".into(),
                path: "/app/x.txt".into()
            }
        );
        assert_eq!(
            parse_location("box:rel"),
            Location::Remote {
                sandbox: "box".into(),
                path: "rel".into()
            }
        );
        assert_eq!(parse_location("./a:b"), Location::Local("./a:b".into()));
        assert_eq!(
            parse_location("/tmp/a:b"),
            Location::Local("/tmp/a:b".into())
        );
        assert_eq!(parse_location(":x"), Location::Local(":x".into()));
        assert_eq!(
            parse_location("file.txt"),
            Location::Local("file.txt".into())
        );
        assert_eq!(parse_location("-"), Location::Local("-".into()));
    }

    #[test]
    fn cp_targets_into_directories() {
        assert_eq!(upload_target("dir/a.txt", "/tmp/").unwrap(), "/tmp/a.txt");
        assert_eq!(upload_target("a.txt", "/tmp/b.txt").unwrap(), "/tmp/b.txt");
        assert_eq!(upload_target("a.txt", "").unwrap(), "a.txt");
        assert!(upload_target("-", "/tmp/").is_err());
        assert_eq!(upload_target("-", "/tmp/x").unwrap(), "/tmp/x");

        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap();
        assert_eq!(
            download_target("/etc/hosts", d).unwrap(),
            dir.path().join("hosts")
        );
        assert_eq!(
            download_target("/etc/hosts", "out/").unwrap(),
            PathBuf::from("out/hosts")
        );
        assert_eq!(
            download_target("/etc/hosts", "copy").unwrap(),
            PathBuf::from("copy")
        );
        assert!(download_target("/", d).is_err());
    }

    #[test]
    fn sizes_are_human() {
        assert_eq!(human_size(0), "0B");
        assert_eq!(human_size(1000), "1000B");
        assert_eq!(human_size(1024), "1K");
        assert_eq!(human_size(512 << 20), "512M");
        assert_eq!(human_size(2 << 30), "2G");
        assert_eq!(human_size(3 << 29), "1.5G");
        assert_eq!(human_size((1 << 30) + 1), "1G");
        assert_eq!(human_size(u64::MAX), "16384P");
        assert_eq!(parse_size(&human_size(3 << 29)).unwrap(), 3 << 29);
    }

    #[test]
    fn times_are_relative() {
        let now = humantime::parse_rfc3339("2025-01-02T00:00:00Z").unwrap();
        assert_eq!(ago("2025-01-02T00:00:00.000000Z", now), "just now");
        assert_eq!(ago("2025-01-01T23:59:30Z", now), "30 seconds ago");
        assert_eq!(ago("2025-01-01T23:59:00Z", now), "1 minute ago");
        assert_eq!(ago("2025-01-01T21:00:00Z", now), "3 hours ago");
        assert_eq!(ago("2024-12-25T00:00:00Z", now), "8 days ago");
        assert_eq!(ago("2025-02-01T00:00:00Z", now), "just now");
        assert_eq!(ago("yesterday", now), "yesterday");
    }

    #[test]
    fn tables_align() {
        let rows = vec![row(&["NAME", "STATUS"]), row(&["a-long-name", "ready"])];
        assert_eq!(table(&rows), "NAME          STATUS\na-long-name   ready\n");
    }

    use crate::client::mock::MockServer;

    fn sandbox_cmd(args: &[&str]) -> SandboxCommand {
        let mut argv = vec!["sandbox"];
        argv.extend(args);
        Cli::try_parse_from(argv).unwrap().command
    }

    #[tokio::test]
    async fn sandbox_commands_make_the_documented_requests() {
        let srv = MockServer::start().await;
        let c = srv.client();
        for args in [
            &["ls"][..],
            &["ls", "--json"],
            &["create", "b1", "--memory", "1G"],
            &["create", "--json"],
            &["stop", "b1"],
            &["start", "b1"],
            &["rm", "b1", "b2"],
        ] {
            let code = sandbox_command(&c, sandbox_cmd(args)).await.unwrap();
            assert_eq!(code, ExitCode::SUCCESS, "{args:?}");
        }
        let b = "/api/v2/sandboxes";
        assert_eq!(
            srv.requests(),
            [
                format!("GET {b}/boxes"),
                format!("GET {b}/boxes"),
                format!("POST {b}/boxes"),
                format!("POST {b}/boxes"),
                format!("POST {b}/boxes/b1/stop"),
                format!("POST {b}/boxes/b1/start"),
                // provisioning, then ready
                format!("GET {b}/boxes/b1/status"),
                format!("GET {b}/boxes/b1/status"),
                format!("DELETE {b}/boxes/b1"),
                format!("DELETE {b}/boxes/b2"),
            ]
        );
        let bodies = srv.rec.lock().unwrap().bodies.clone();
        assert_eq!(
            bodies,
            [
                json!({"wait_for_ready": true, "timeout": 60, "name": "b1", "mem_bytes": 1u64 << 30}),
                json!({"wait_for_ready": true, "timeout": 60}),
            ]
        );
    }

    #[tokio::test]
    async fn sandbox_failures_carry_the_server_message() {
        let srv = MockServer::start().await;
        let c = srv.client();
        let e = sandbox_command(&c, sandbox_cmd(&["create", "taken"]))
            .await
            .unwrap_err();
        assert_eq!(e.to_string(), "Sandbox with name 'taken' already exists");
        let e = sandbox_command(&c, sandbox_cmd(&["rm", "b1", "missing"]))
            .await
            .unwrap_err();
        assert_eq!(e.to_string(), "failed to remove 1 of 2 sandboxes");
        let e = sandbox_command(&c, sandbox_cmd(&["start", "failed"]))
            .await
            .unwrap_err();
        assert_eq!(e.to_string(), "sandbox failed failed to start: out of disk");
    }

    #[tokio::test]
    async fn keys_commands_make_the_documented_requests() {
        #[derive(Debug, Parser)]
        struct KeysCli {
            #[command(subcommand)]
            command: KeysCommand,
        }
        let srv = MockServer::start().await;
        let c = srv.client();
        for args in [
            &["keys", "create", "--name", "ci"][..],
            &["keys", "create", "--name", "ops", "--admin"],
            &["keys", "ls"],
            &["keys", "revoke", "k2"],
        ] {
            let cmd = KeysCli::try_parse_from(args).unwrap().command;
            assert_eq!(keys_command(&c, cmd).await.unwrap(), ExitCode::SUCCESS);
        }
        let b = "/api/v2/sandboxes";
        assert_eq!(
            srv.requests(),
            [
                format!("POST {b}/keys"),
                format!("POST {b}/keys"),
                format!("GET {b}/keys"),
                format!("DELETE {b}/keys/k2"),
            ]
        );
        assert_eq!(
            srv.rec.lock().unwrap().bodies,
            [
                json!({"name": "ci", "admin": false}),
                json!({"name": "ops", "admin": true})
            ]
        );
    }

    #[tokio::test]
    async fn cp_streams_files_both_ways() {
        let srv = MockServer::start().await;
        let c = srv.client();
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("data.bin");
        // Bigger than any one read or chunk, so the streaming paths loop.
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&src, &data).unwrap();
        let src = src.to_str().unwrap();

        upload(&c, src, "box", "/app/").await.unwrap();
        upload(&c, src, "box", "/app/renamed.bin").await.unwrap();
        {
            let rec = srv.rec.lock().unwrap();
            assert_eq!(rec.files["/app/data.bin"], data);
            assert_eq!(rec.files["/app/renamed.bin"], data);
            assert_eq!(
                rec.parts[0],
                (
                    "file".to_owned(),
                    Some("file".to_owned()),
                    Some("application/octet-stream".to_owned())
                )
            );
        }

        let out = dir.path().join("out");
        std::fs::create_dir(&out).unwrap();
        download(&c, "box", "/app/renamed.bin", out.to_str().unwrap())
            .await
            .unwrap();
        assert_eq!(std::fs::read(out.join("renamed.bin")).unwrap(), data);

        let e = download(&c, "box", "/nope", out.join("x").to_str().unwrap())
            .await
            .unwrap_err();
        assert_eq!(
            format!("{e:#}"),
            "failed to download box:/nope: File '/nope' not found"
        );
        // Nothing half-written is left behind.
        let left: Vec<_> = std::fs::read_dir(&out).unwrap().collect();
        assert_eq!(left.len(), 1);

        let e = upload(&c, dir.path().to_str().unwrap(), "box", "/app/")
            .await
            .unwrap_err();
        assert!(e.to_string().contains("is a directory"), "{e}");

        let reqs = srv.requests();
        assert_eq!(reqs[1], "POST /dp/box/upload?path=%2Fapp%2Fdata.bin");
        assert!(reqs.contains(&"GET /dp/box/download?path=%2Fapp%2Frenamed.bin".to_owned()));
    }
}

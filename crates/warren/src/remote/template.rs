//! `warren template` and `warren pool`: templates (a snapshot with resources, network policy
//! and run_config that creates start from) and the warm pools that keep sandboxes booted ahead
//! of creates.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use reqwest::Method;
use warren_wire::templates::{
    CreateTemplateBody, Pool, PoolList, SetPoolBody, Template, TemplateList,
};

use super::format::{row, table};
use crate::client::{Client, ConnArgs};

#[derive(Debug, Args)]
pub(crate) struct TemplateArgs {
    #[command(flatten)]
    conn: ConnArgs,
    #[command(subcommand)]
    command: TemplateCommand,
}

#[derive(Debug, Subcommand)]
enum TemplateCommand {
    /// Create a template; `warren sandbox create --template NAME` starts from it.
    Create(CreateTemplateArgs),
    /// List templates.
    #[command(visible_alias = "list")]
    Ls {
        /// Print the server's JSON answer instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Delete templates and their pools (sandboxes made from them keep running).
    Rm {
        /// Names.
        #[arg(required = true)]
        names: Vec<String>,
    },
}

#[derive(Debug, Args)]
struct CreateTemplateArgs {
    /// Name (letters, digits, '-', '_', '.').
    name: String,
    /// Snapshot: an id, NAME:TAG or NAME [default: system/default:latest].
    #[arg(long)]
    snapshot: Option<String>,
    /// Whole CPUs.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    cpus: Option<u32>,
    /// Memory limit, e.g. 512M.
    #[arg(long, value_parser = warren_types::parse_size)]
    memory: Option<u64>,
    /// Disk size, e.g. 2G.
    #[arg(long, value_parser = warren_types::parse_size)]
    disk: Option<u64>,
    /// Stop sandboxes after this many idle seconds (a multiple of 60; 0: never).
    #[arg(long, value_name = "SECS")]
    idle_ttl: Option<u64>,
    /// Environment variable for every command, KEY=VALUE (repeatable).
    #[arg(long = "env", value_name = "KEY=VALUE", value_parser = parse_env)]
    env: Vec<(String, String)>,
    /// User commands run as.
    #[arg(long)]
    user: Option<String>,
    /// Working directory of commands.
    #[arg(long)]
    workdir: Option<String>,
    /// The sandboxes' `proxy_config` (network policy, credential rules) as JSON.
    #[arg(long, value_name = "JSON")]
    proxy_config: Option<String>,
    /// Isolation tier of its sandboxes: `jail` or `vm` [default: the server's].
    #[arg(long)]
    tier: Option<String>,
}

fn parse_env(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("expected KEY=VALUE, got '{s}'"))
}

#[derive(Debug, Args)]
pub(crate) struct PoolArgs {
    #[command(flatten)]
    conn: ConnArgs,
    #[command(subcommand)]
    command: PoolCommand,
}

#[derive(Debug, Subcommand)]
enum PoolCommand {
    /// List the warm pools: bounds, target, ready sandboxes, claims and misses.
    #[command(visible_alias = "list")]
    Ls {
        /// Print the server's JSON answer instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Set a pool's bounds (admins): the default pool, or a template's with --template.
    /// `--max 0` turns it off.
    Set {
        /// The template whose pool to set.
        #[arg(long)]
        template: Option<String>,
        /// Sandboxes kept booted without demand.
        #[arg(long, default_value_t = 0)]
        min: u32,
        /// Most sandboxes kept under demand.
        #[arg(long)]
        max: u32,
    },
}

pub(crate) fn template(data_dir: &Path, args: TemplateArgs) -> Result<ExitCode> {
    let client = Client::new(&args.conn, data_dir)?;
    crate::tokio_runtime()?.block_on(template_command(&client, args.command))
}

pub(crate) fn pool(data_dir: &Path, args: PoolArgs) -> Result<ExitCode> {
    let client = Client::new(&args.conn, data_dir)?;
    crate::tokio_runtime()?.block_on(pool_command(&client, args.command))
}

async fn template_command(client: &Client, command: TemplateCommand) -> Result<ExitCode> {
    match command {
        TemplateCommand::Create(a) => {
            let proxy_config = a
                .proxy_config
                .as_deref()
                .map(serde_json::from_str)
                .transpose()
                .context("--proxy-config is not JSON")?;
            let run_config =
                (a.user.is_some() || a.workdir.is_some() || !a.env.is_empty()).then(|| {
                    warren_types::RunConfig {
                        user: a.user,
                        work_dir: a.workdir,
                        env_vars: a.env.into_iter().collect::<BTreeMap<_, _>>(),
                    }
                });
            let body = CreateTemplateBody {
                name: a.name,
                snapshot: a.snapshot,
                vcpus: a.cpus,
                mem_bytes: a.memory,
                fs_capacity_bytes: a.disk,
                idle_ttl_seconds: a.idle_ttl,
                run_config,
                proxy_config,
                labels: None,
                tier: a.tier,
            };
            let rb = client.control(Method::POST, &["templates"]).json(&body);
            let (_, t): (_, Template) = client.json(rb, "template").await?;
            println!("{}", t.name);
        }
        TemplateCommand::Ls { json } => {
            let rb = client.control(Method::GET, &["templates"]);
            let (text, list): (_, TemplateList) = client.json(rb, "template list").await?;
            if json {
                println!("{}", text.trim_end());
                return Ok(ExitCode::SUCCESS);
            }
            let mut rows = vec![row(&["NAME", "SNAPSHOT", "CPUS", "MEMORY", "DISK", "POOL"])];
            let opt = |v: Option<u64>| v.map_or("-".to_owned(), |n| n.to_string());
            for t in list.templates {
                rows.push(row(&[
                    &t.name,
                    &t.snapshot,
                    &opt(t.vcpus.map(u64::from)),
                    &opt(t.mem_bytes),
                    &opt(t.fs_capacity_bytes),
                    &format!("{}..{}", t.pool_min_size, t.pool_max_size),
                ]));
            }
            print!("{}", table(&rows));
        }
        TemplateCommand::Rm { names } => {
            for name in names {
                client
                    .send(client.control(Method::DELETE, &["templates", &name]))
                    .await?;
                println!("{name}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn pool_command(client: &Client, command: PoolCommand) -> Result<ExitCode> {
    match command {
        PoolCommand::Ls { json } => {
            let rb = client.control(Method::GET, &["pools"]);
            let (text, list): (_, PoolList) = client.json(rb, "pool list").await?;
            if json {
                println!("{}", text.trim_end());
            } else {
                print!("{}", pool_table(&list.pools));
            }
        }
        PoolCommand::Set { template, min, max } => {
            let body = SetPoolBody {
                template,
                min_size: min,
                max_size: max,
            };
            let rb = client.control(Method::PUT, &["pools"]).json(&body);
            let (_, p): (_, Pool) = client.json(rb, "pool").await?;
            print!("{}", pool_table(std::slice::from_ref(&p)));
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn pool_table(pools: &[Pool]) -> String {
    let mut rows = vec![row(&[
        "POOL", "MIN", "MAX", "TARGET", "READY", "STARTING", "CLAIMS", "MISSES", "ERROR",
    ])];
    for p in pools {
        rows.push(row(&[
            p.template.as_deref().unwrap_or("(default)"),
            &p.min_size.to_string(),
            &p.max_size.to_string(),
            &p.target.to_string(),
            &p.ready.to_string(),
            &p.starting.to_string(),
            &p.claims.to_string(),
            &p.misses.to_string(),
            p.last_error.as_deref().unwrap_or("-"),
        ]));
    }
    table(&rows)
}

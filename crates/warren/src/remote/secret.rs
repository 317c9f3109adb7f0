//! `warren secret`: set, list and delete the workspace secrets the egress proxy injects (setting
//! and deleting are for admins, as the server enforces). No command prints a value: the server
//! never returns one.

use std::io::{BufRead, IsTerminal};
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Arg, ArgAction, ArgMatches, Args, Command, FromArgMatches, Subcommand};
use warren_wire::secrets::{PutSecretBody, SecretConfigBody, SecretSource, WorkspaceSecret};

use super::format::{row, table};
use crate::client::{Client, ConnArgs};

#[derive(Debug, Args)]
pub(crate) struct SecretArgs {
    #[command(flatten)]
    conn: ConnArgs,
    #[command(subcommand)]
    command: SecretCommand,
}

#[derive(Debug, Subcommand)]
enum SecretCommand {
    /// Create or update a secret. The value is read from stdin unless --value is given, so it
    /// stays out of shell history. Without --host, custom hosts are removed and the built-in
    /// defaults (for OPENAI_API_KEY, ANTHROPIC_API_KEY, GITHUB_TOKEN, LANGSMITH_API_KEY) apply.
    Set {
        /// The secret's name, e.g. OPENAI_API_KEY.
        key: String,
        /// The value (visible in shell history and `ps`; prefer stdin).
        #[arg(long, conflicts_with = "keep_value")]
        value: Option<String>,
        /// Keep the stored value and only replace the hosts.
        #[arg(long)]
        keep_value: bool,
        #[command(flatten)]
        hosts: Hosts,
    },
    /// List secrets (never their values).
    #[command(visible_alias = "list")]
    Ls {
        /// Also show the hosts each secret may be sent to.
        #[arg(long)]
        configs: bool,
        /// Print the server's JSON answer instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Delete a secret (a missing one is not an error).
    Rm {
        /// The secret's name.
        key: String,
    },
}

/// `--host PATTERN [--header NAME] [--template T]`, repeated: each `--header` and `--template`
/// belongs to the `--host` before it, which clap's derive cannot express, so the groups are
/// read from the arguments' positions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Hosts(Vec<SecretConfigBody>);

impl Args for Hosts {
    fn augment_args(cmd: Command) -> Command {
        cmd.arg(
            Arg::new("host")
                .long("host")
                .value_name("PATTERN")
                .action(ArgAction::Append)
                .help("A host the secret may be sent to: api.example.com or *.example.com"),
        )
        .arg(
            Arg::new("header")
                .long("header")
                .value_name("NAME")
                .action(ArgAction::Append)
                .requires("host")
                .help("The header the previous --host gets the secret in"),
        )
        .arg(
            Arg::new("template")
                .long("template")
                .value_name("T")
                .action(ArgAction::Append)
                .requires("host")
                .help("The previous --host's header value, {value} standing for the secret"),
        )
    }

    fn augment_args_for_update(cmd: Command) -> Command {
        Self::augment_args(cmd)
    }
}

impl FromArgMatches for Hosts {
    fn from_arg_matches(m: &ArgMatches) -> Result<Self, clap::Error> {
        let with_index = |id: &str| -> Vec<(usize, String)> {
            match (m.indices_of(id), m.get_many::<String>(id)) {
                (Some(i), Some(v)) => i.zip(v.cloned()).collect(),
                _ => Vec::new(),
            }
        };
        let hosts = with_index("host");
        let mut out: Vec<SecretConfigBody> = hosts
            .iter()
            .map(|(_, h)| SecretConfigBody {
                host_pattern: h.clone(),
                header_name: None,
                header_value_template: None,
            })
            .collect();
        for (flag, items) in [
            ("header", with_index("header")),
            ("template", with_index("template")),
        ] {
            for (at, value) in items {
                let Some(owner) = hosts.iter().rposition(|(h, _)| *h < at) else {
                    return Err(clap::Error::raw(
                        clap::error::ErrorKind::ArgumentConflict,
                        format!("--{flag} must follow the --host it belongs to\n"),
                    ));
                };
                let slot = match flag {
                    "header" => &mut out[owner].header_name,
                    _ => &mut out[owner].header_value_template,
                };
                if slot.replace(value).is_some() {
                    return Err(clap::Error::raw(
                        clap::error::ErrorKind::ArgumentConflict,
                        format!("--{flag} given twice for --host {}\n", hosts[owner].1),
                    ));
                }
            }
        }
        Ok(Self(out))
    }

    fn update_from_arg_matches(&mut self, m: &ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(m)?;
        Ok(())
    }
}

pub(crate) fn secret(data_dir: &Path, args: SecretArgs) -> Result<ExitCode> {
    let client = Client::new(&args.conn, data_dir)?;
    let terminal = std::io::stdin().is_terminal();
    let mut stdin = std::io::stdin().lock();
    crate::tokio_runtime()?.block_on(secret_command(&client, args.command, &mut stdin, terminal))
}

/// Runs one command; `stdin` is where `set` reads a value given neither by flag nor kept, and
/// `terminal` whether it is a terminal.
async fn secret_command(
    client: &Client,
    command: SecretCommand,
    stdin: &mut dyn BufRead,
    terminal: bool,
) -> Result<ExitCode> {
    match command {
        SecretCommand::Set {
            key,
            value,
            keep_value,
            hosts,
        } => {
            let value = match (value, keep_value) {
                (_, true) => None,
                (Some(v), false) => Some(v),
                (None, false) => Some(read_value(&key, stdin, terminal)?),
            };
            let body = PutSecretBody {
                value,
                configs: (!hosts.0.is_empty()).then_some(hosts.0),
            };
            let saved = client.put_secret(&key, &body).await?;
            // The key and where it may go; the value never comes back.
            print!("{}", config_table(std::slice::from_ref(&saved)));
        }
        SecretCommand::Ls { configs, json } => {
            let (text, list) = client.list_secrets(configs).await?;
            if json {
                println!("{}", text.trim_end());
            } else if configs {
                print!("{}", config_table(&list));
            } else {
                for s in list {
                    println!("{}", s.key);
                }
            }
        }
        SecretCommand::Rm { key } => {
            client.delete_secret(&key).await?;
            println!("{key}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The value from stdin: a terminal gets a prompt on stderr and one line is read; a pipe is
/// read to its end. One trailing newline is dropped (`echo $TOKEN | warren secret set K`).
fn read_value(key: &str, stdin: &mut dyn BufRead, terminal: bool) -> Result<String> {
    let mut text = String::new();
    if terminal {
        eprint!("value for {key} (input is shown; end with Enter): ");
        stdin
            .read_line(&mut text)
            .context("failed to read the value from the terminal")?;
    } else {
        stdin
            .read_to_string(&mut text)
            .context("failed to read the value from stdin")?;
    }
    let value = text
        .strip_suffix('\n')
        .map(|t| t.strip_suffix('\r').unwrap_or(t))
        .unwrap_or(&text);
    if value.is_empty() {
        bail!("no value for {key} on stdin (pass it on stdin, or use --value or --keep-value)");
    }
    Ok(value.to_owned())
}

/// One line per host of each secret (a secret with none gets one line of dashes).
fn config_table(secrets: &[WorkspaceSecret]) -> String {
    let mut rows = vec![row(&["KEY", "HOST", "SOURCE", "HEADER", "TEMPLATE"])];
    for s in secrets {
        let configs = s.configs.as_deref().unwrap_or_default();
        if configs.is_empty() {
            rows.push(row(&[&s.key, "-", "-", "-", "-"]));
        }
        for c in configs {
            let source = match c.source {
                SecretSource::Default => "default",
                SecretSource::Custom => "custom",
            };
            rows.push(row(&[
                &s.key,
                &c.host_pattern,
                source,
                c.header_name.as_deref().unwrap_or("-"),
                c.header_value_template.as_deref().unwrap_or("-"),
            ]));
        }
    }
    table(&rows)
}

#[cfg(test)]
mod tests;

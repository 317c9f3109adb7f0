//! `warren keys`: create, list and revoke API keys (admins only, as the server enforces).

use std::path::Path;
use std::process::ExitCode;
use std::time::SystemTime;

use anyhow::Result;
use clap::{Args, Subcommand};
use warren_wire::ops::{CreateKeyBody, Key};

use super::format::{ago, row, table};
use crate::client::{Client, ConnArgs};

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
    /// Replace the key service URL tokens and download links are signed with: every one
    /// minted so far stops working.
    RotateServiceKey,
}

pub(crate) fn keys(data_dir: &Path, args: KeysArgs) -> Result<ExitCode> {
    let client = Client::new(&args.conn, data_dir)?;
    crate::tokio_runtime()?.block_on(keys_command(&client, args.command))
}

async fn keys_command(client: &Client, command: KeysCommand) -> Result<ExitCode> {
    match command {
        KeysCommand::Create { name, admin } => {
            let created = client.create_key(&CreateKeyBody { name, admin }).await?;
            // Only the key on stdout, so `KEY=$(warren keys create ...)` works.
            println!("{}", created.key);
        }
        KeysCommand::Ls { json } => {
            let (text, list) = client.list_keys().await?;
            if json {
                println!("{}", text.trim_end());
                return Ok(ExitCode::SUCCESS);
            }
            print!("{}", key_table(&list.keys, SystemTime::now()));
        }
        KeysCommand::Revoke { id } => {
            client.revoke_key(&id).await?;
            println!("{id}");
        }
        KeysCommand::RotateServiceKey => {
            client.rotate_service_key().await?;
            eprintln!(
                "service token key rotated; earlier service URLs and download links no longer work"
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The `keys ls` table.
fn key_table(keys: &[Key], now: SystemTime) -> String {
    let when = |t: Option<&str>| t.map_or_else(|| "-".into(), |t| ago(t, now));
    let mut rows = vec![row(&["ID", "NAME", "ADMIN", "CREATED", "REVOKED"])];
    for k in keys {
        rows.push(vec![
            k.id.clone(),
            k.name.clone(),
            if k.admin { "yes" } else { "no" }.into(),
            when(Some(&k.created_at)),
            when(k.revoked_at.as_deref()),
        ]);
    }
    table(&rows)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::client::test_server::TestServer;

    #[derive(Debug, Parser)]
    struct KeysCli {
        #[command(subcommand)]
        command: KeysCommand,
    }

    fn keys_cmd(args: &[&str]) -> KeysCommand {
        let mut argv = vec!["keys"];
        argv.extend(args);
        KeysCli::try_parse_from(argv).unwrap().command
    }

    #[tokio::test]
    async fn keys_commands_change_the_server() {
        let srv = TestServer::start().await;
        let c = srv.client();
        for args in [
            &["create", "--name", "ci"][..],
            &["create", "--name", "ops", "--admin"],
            &["ls"],
            &["ls", "--json"],
            &["rotate-service-key"],
        ] {
            let code = keys_command(&c, keys_cmd(args)).await.unwrap();
            assert_eq!(code, ExitCode::SUCCESS, "{args:?}");
        }
        let (_, list) = c.list_keys().await.unwrap();
        let by_name = |n: &str| list.keys.iter().find(|k| k.name == n).unwrap().clone();
        assert!(!by_name("ci").admin);
        assert!(by_name("ops").admin);
        assert!(by_name("admin").admin);

        let ci = by_name("ci");
        keys_command(&c, keys_cmd(&["revoke", &ci.id]))
            .await
            .unwrap();
        let (_, list) = c.list_keys().await.unwrap();
        let ci = list.keys.iter().find(|k| k.id == ci.id).unwrap();
        assert!(ci.revoked_at.is_some());

        let e = keys_command(&c, keys_cmd(&["create", "--name", "ops"]))
            .await
            .unwrap_err();
        assert_eq!(e.to_string(), "user 'ops' already exists");
        // Times relative to the key's creation, so a slow run reads the same.
        let now = humantime::parse_rfc3339_weak(&ci.created_at).unwrap();
        let table = key_table(&list.keys, now);
        let line = table.lines().find(|l| l.contains(&ci.id)).unwrap();
        let cols: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(
            cols[1..],
            ["ci", "no", "just", "now", "just", "now"],
            "{table}"
        );
        assert!(table.starts_with("ID "), "{table}");
    }
}

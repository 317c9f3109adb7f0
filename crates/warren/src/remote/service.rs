//! `warren service`: share a port of a sandbox over HTTP (a service URL, LANGSMITH-API.md §6)
//! by token or by login, list what is shared, and revoke it.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Args, Subcommand, ValueEnum};
use serde_json::Value;
use warren_wire::service::{ServiceGrantList, ServiceUrlBody};

use super::format::{row, table};
use crate::client::{Client, ConnArgs};

#[derive(Debug, Args)]
pub(crate) struct ServiceArgs {
    #[command(flatten)]
    conn: ConnArgs,
    #[command(subcommand)]
    command: ServiceCommand,
}

/// Who a shared port admits.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum Access {
    /// Whoever holds the token (it expires).
    Token,
    /// Signed-in users who may read the sandbox (its creator, workspace admins).
    Restricted,
    /// Any signed-in member of the sandbox's workspace.
    Workspace,
}

#[derive(Debug, Subcommand)]
enum ServiceCommand {
    /// Share a port: prints the URL to open in a browser (and, for a token, the URL programs
    /// call with the token header, the token and its expiry).
    Url {
        /// Sandbox name.
        name: String,
        /// The port inside the sandbox.
        port: u16,
        /// Who may open it [default: a token, unless the port is shared by sign-in, which
        /// the server then says]. `--access token` also ends a sign-in share of the port.
        #[arg(long, value_enum)]
        access: Option<Access>,
        /// Token lifetime in seconds (1..86400) [default: 600].
        #[arg(long, value_name = "SECS")]
        expires: Option<i64>,
        /// An origin whose pages may frame the service, https://host[:port] (repeatable).
        #[arg(long = "embed-origin", value_name = "ORIGIN")]
        embed_origins: Vec<String>,
        /// Print the server's JSON answer instead.
        #[arg(long)]
        json: bool,
    },
    /// List a sandbox's shared ports.
    #[command(visible_alias = "list")]
    Ls {
        /// Sandbox name.
        name: String,
        /// Print the server's JSON answer instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Stop sharing a port (or every port): its tokens and sign-ins stop working at once.
    Rm {
        /// Sandbox name.
        name: String,
        /// The port [default: every port].
        #[arg(long)]
        port: Option<u16>,
    },
}

pub(crate) fn service(data_dir: &Path, args: ServiceArgs) -> Result<ExitCode> {
    let client = Client::new(&args.conn, data_dir)?;
    crate::tokio_runtime()?.block_on(service_command(&client, args.command))
}

async fn service_command(client: &Client, command: ServiceCommand) -> Result<ExitCode> {
    match command {
        ServiceCommand::Url {
            name,
            port,
            access,
            expires,
            embed_origins,
            json,
        } => {
            if expires.is_some() && matches!(access, Some(Access::Restricted | Access::Workspace)) {
                anyhow::bail!("--expires is for tokens: a sign-in share does not expire");
            }
            let body = ServiceUrlBody {
                port: i64::from(port),
                expires_in_seconds: expires,
                access: access.map(|a| a.wire().into()),
                embed_origins: (!embed_origins.is_empty()).then_some(embed_origins),
            };
            let (text, answer) = client.service_url(&name, &body).await?;
            if json {
                println!("{}", text.trim_end());
            } else {
                print!("{}", describe(&answer));
            }
        }
        ServiceCommand::Ls { name, json } => {
            let (text, list) = client.list_service_urls(&name).await?;
            if json {
                println!("{}", text.trim_end());
            } else {
                print!("{}", grants_table(&list));
            }
        }
        ServiceCommand::Rm { name, port } => client.revoke_service_urls(&name, port).await?,
    }
    Ok(ExitCode::SUCCESS)
}

impl Access {
    /// What the request says: a token is asked for with "off", which also ends a login.
    fn wire(self) -> &'static str {
        match self {
            Self::Token => "off",
            Self::Restricted => "restricted",
            Self::Workspace => "workspace",
        }
    }
}

/// A minted service URL, the browser's URL alone on the first line (so
/// `URL=$(warren service url ... | head -1)` works in either mode).
fn describe(answer: &Value) -> String {
    let field = |k: &str| answer.get(k).and_then(Value::as_str).unwrap_or_default();
    let mut out = format!("{}\n", field("browser_url"));
    match field("token") {
        "" => out.push_str(&format!(
            "access: {} (a browser signs in)\n",
            field("access")
        )),
        token => {
            out.push_str(&format!("service_url: {}\n", field("service_url")));
            out.push_str(&format!("token: {token}\n"));
            out.push_str(&format!("expires_at: {}\n", field("expires_at")));
        }
    }
    out
}

fn grants_table(list: &ServiceGrantList) -> String {
    let mut rows = vec![row(&["PORT", "ACCESS", "CREATED", "CREATED BY", "EXPIRES"])];
    for g in &list.items {
        rows.push(row(&[
            &g.port.to_string(),
            &g.access,
            &g.created_at,
            g.created_by.as_deref().unwrap_or("-"),
            g.expires_at.as_deref().unwrap_or("never"),
        ]));
    }
    table(&rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::test_server::TestServer;

    #[tokio::test]
    async fn a_port_is_shared_by_token_or_login_listed_and_revoked() {
        let srv = TestServer::start().await;
        let c = srv.client();
        srv.sandbox("web").await;
        let body = |access: Option<Access>| ServiceUrlBody {
            port: 8000,
            expires_in_seconds: None,
            access: access.map(|a| a.wire().into()),
            embed_origins: None,
        };
        let (_, token) = c.service_url("web", &body(None)).await.unwrap();
        let shown = describe(&token);
        let lines: Vec<&str> = shown.lines().collect();
        assert_eq!(lines.len(), 4, "{shown}");
        assert!(lines[0].contains("/__auth?token="), "{shown}");
        assert!(lines[2].starts_with("token: ey"), "{shown}");
        let (_, login) = c
            .service_url("web", &body(Some(Access::Workspace)))
            .await
            .unwrap();
        let shown = describe(&login);
        assert!(
            shown.ends_with("access: workspace (a browser signs in)\n"),
            "{shown}"
        );
        let (_, list) = c.list_service_urls("web").await.unwrap();
        let table = grants_table(&list);
        assert!(
            table.contains("workspace") && table.contains("never"),
            "{table}"
        );
        // No access named: the server refuses to replace the sign-in share, and says so;
        // `--access token` ends it.
        let e = c.service_url("web", &body(None)).await.unwrap_err();
        assert!(e.to_string().contains("shared by login"), "{e}");
        let (_, again) = c
            .service_url("web", &body(Some(Access::Token)))
            .await
            .unwrap();
        assert!(again["token"].as_str().is_some_and(|t| !t.is_empty()));
        let (_, list) = c.list_service_urls("web").await.unwrap();
        assert_eq!(list.items[0].access, "token");
        c.revoke_service_urls("web", Some(8000)).await.unwrap();
        assert!(c.list_service_urls("web").await.unwrap().1.items.is_empty());
        let e = c.list_service_urls("nope").await.unwrap_err();
        assert_eq!(e.to_string(), "Sandbox 'nope' not found");
    }
}

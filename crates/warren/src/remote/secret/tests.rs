use std::io::Cursor;

use clap::Parser;

use super::*;
use crate::client::test_server::TestServer;

#[derive(Debug, Parser)]
struct SecretCli {
    #[command(subcommand)]
    command: SecretCommand,
}

fn parse(args: &[&str]) -> Result<SecretCommand, clap::Error> {
    let mut argv = vec!["secret"];
    argv.extend(args);
    SecretCli::try_parse_from(argv).map(|c| c.command)
}

fn cmd(args: &[&str]) -> SecretCommand {
    parse(args).unwrap()
}

async fn run(c: &Client, args: &[&str], stdin: &str) -> Result<ExitCode> {
    secret_command(c, cmd(args), &mut Cursor::new(stdin.as_bytes()), false).await
}

fn host(pattern: &str, header: Option<&str>, template: Option<&str>) -> SecretConfigBody {
    SecretConfigBody {
        host_pattern: pattern.into(),
        header_name: header.map(str::to_owned),
        header_value_template: template.map(str::to_owned),
    }
}

#[test]
fn headers_and_templates_belong_to_the_host_before_them() {
    let SecretCommand::Set { hosts, .. } = cmd(&[
        "set",
        "K",
        "--host",
        "a.com",
        "--template",
        "Bearer {value}",
        "--header",
        "Authorization",
        "--host",
        "b.com",
        "--host",
        "*.c.com",
        "--header",
        "X-Key",
    ]) else {
        panic!("not a set");
    };
    assert_eq!(
        hosts.0,
        [
            host("a.com", Some("Authorization"), Some("Bearer {value}")),
            host("b.com", None, None),
            host("*.c.com", Some("X-Key"), None),
        ]
    );
    let e = parse(&[
        "set", "K", "--host", "a.com", "--header", "A", "--header", "B",
    ])
    .unwrap_err();
    assert!(e.to_string().contains("--header given twice"), "{e}");
    let e = parse(&["set", "K", "--header", "A", "--host", "a.com"]).unwrap_err();
    assert!(e.to_string().contains("must follow"), "{e}");
    assert!(
        parse(&["set", "K", "--header", "A"]).is_err(),
        "no --host at all"
    );
    assert!(parse(&["set", "K", "--value", "v", "--keep-value"]).is_err());
}

#[test]
fn values_come_from_stdin_without_their_newline() {
    let mut input = Cursor::new(&b"tok-123\n"[..]);
    assert_eq!(read_value("K", &mut input, false).unwrap(), "tok-123");
    let mut input = Cursor::new(&b"tok\r\n"[..]);
    assert_eq!(read_value("K", &mut input, true).unwrap(), "tok");
    let mut input = Cursor::new(&b"\n"[..]);
    let e = read_value("K", &mut input, false).unwrap_err();
    assert!(e.to_string().contains("no value for K"), "{e}");
}

#[tokio::test]
async fn secret_commands_change_the_server_and_never_see_a_value() {
    let srv = TestServer::start().await;
    let c = srv.client();
    let ok = ExitCode::SUCCESS;
    assert_eq!(
        run(&c, &["set", "OPENAI_API_KEY"], "sk-from-stdin\n")
            .await
            .unwrap(),
        ok
    );
    let custom = [
        "set",
        "MY_TOKEN",
        "--value",
        "flag-value",
        "--host",
        "api.example.com",
        "--header",
        "Authorization",
        "--template",
        "Token {value}",
    ];
    assert_eq!(run(&c, &custom, "").await.unwrap(), ok);
    for args in [&["ls"][..], &["ls", "--configs"], &["ls", "--json"]] {
        assert_eq!(run(&c, args, "").await.unwrap(), ok, "{args:?}");
    }

    let (text, list) = c.list_secrets(true).await.unwrap();
    assert!(!text.contains("sk-from-stdin") && !text.contains("flag-value"));
    let keys: Vec<_> = list.iter().map(|s| s.key.as_str()).collect();
    assert_eq!(keys, ["MY_TOKEN", "OPENAI_API_KEY"]);
    let mine = list[0].configs.as_ref().unwrap();
    assert_eq!(
        (mine[0].host_pattern.as_str(), mine[0].source),
        ("api.example.com", SecretSource::Custom)
    );
    assert_eq!(
        mine[0].header_value_template.as_deref(),
        Some("Token {value}")
    );
    let table = config_table(&list);
    assert!(table.starts_with("KEY "), "{table}");
    let line = table
        .lines()
        .find(|l| l.starts_with("OPENAI_API_KEY"))
        .unwrap();
    let cols: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(
        cols,
        [
            "OPENAI_API_KEY",
            "api.openai.com",
            "default",
            "Authorization",
            "Bearer",
            "{value}"
        ],
        "{table}"
    );

    // --keep-value replaces only the hosts; a new key cannot be created without a value.
    assert_eq!(
        run(&c, &["set", "MY_TOKEN", "--keep-value"], "")
            .await
            .unwrap(),
        ok
    );
    let (_, list) = c.list_secrets(true).await.unwrap();
    assert_eq!(list[0].configs.as_deref(), Some(&[][..]));
    let e = run(&c, &["set", "NEW_ONE", "--keep-value"], "")
        .await
        .unwrap_err();
    assert!(e.to_string().contains("value is required to create"), "{e}");
    let e = run(&c, &["set", "BAD KEY", "--value", "v"], "")
        .await
        .unwrap_err();
    assert!(e.to_string().contains("invalid secret key"), "{e}");

    assert_eq!(run(&c, &["rm", "MY_TOKEN"], "").await.unwrap(), ok);
    assert_eq!(
        run(&c, &["rm", "MY_TOKEN"], "").await.unwrap(),
        ok,
        "missing is fine"
    );
    let (_, list) = c.list_secrets(false).await.unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].configs, None, "no configs unless asked for");
}

use clap::Parser;
use serde_json::json;

use super::*;
use crate::client::test_server::TestServer;

#[derive(Debug, Parser)]
struct Cli {
    #[command(subcommand)]
    command: SandboxCommand,
}

fn sandbox_cmd(args: &[&str]) -> SandboxCommand {
    let mut argv = vec!["sandbox"];
    argv.extend(args);
    Cli::try_parse_from(argv).unwrap().command
}

fn parse_create(args: &[&str]) -> CreateArgs {
    let mut argv = vec!["create"];
    argv.extend(args);
    match sandbox_cmd(&argv) {
        SandboxCommand::Create(a) => a,
        other => panic!("parsed {other:?}"),
    }
}

#[test]
fn create_sends_only_what_was_given() {
    let body = |args: &[&str]| serde_json::to_value(create_body(&parse_create(args))).unwrap();
    assert_eq!(body(&[]), json!({"wait_for_ready": true, "timeout": 60}));
    assert_eq!(
        body(&[
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
        ]),
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

#[tokio::test]
async fn sandbox_commands_change_the_server() {
    let srv = TestServer::start().await;
    let c = srv.client();
    let run = |args: &'static [&'static str]| {
        let c = &c;
        async move { sandbox_command(c, sandbox_cmd(args)).await }
    };
    assert_eq!(
        run(&["create", "b1", "--memory", "1G"]).await.unwrap(),
        ExitCode::SUCCESS
    );
    assert_eq!(c.get_sandbox("b1").await.unwrap().mem_bytes, Some(1 << 30));
    run(&["create", "b2", "--json"]).await.unwrap();
    run(&["ls"]).await.unwrap();
    run(&["ls", "--json"]).await.unwrap();

    run(&["stop", "b1"]).await.unwrap();
    assert_eq!(c.sandbox_status("b1").await.unwrap().status, "stopped");
    run(&["start", "b1"]).await.unwrap();
    assert_eq!(c.sandbox_status("b1").await.unwrap().status, "ready");

    run(&["rm", "b1", "b2"]).await.unwrap();
    assert!(c.list_sandboxes().await.unwrap().1.items.is_empty());
}

#[tokio::test]
async fn sandbox_failures_carry_the_server_message() {
    let srv = TestServer::start().await;
    let c = srv.client();
    srv.sandbox("taken").await;
    let e = sandbox_command(&c, sandbox_cmd(&["create", "taken"]))
        .await
        .unwrap_err();
    assert_eq!(e.to_string(), "Sandbox with name 'taken' already exists");
    let e = sandbox_command(&c, sandbox_cmd(&["rm", "taken", "missing"]))
        .await
        .unwrap_err();
    assert_eq!(e.to_string(), "failed to remove 1 of 2 sandboxes");
    // The one that exists was removed all the same.
    assert!(c.get_sandbox("taken").await.is_err());
    let e = sandbox_command(&c, sandbox_cmd(&["stop", "missing"]))
        .await
        .unwrap_err();
    assert_eq!(e.to_string(), "Sandbox 'missing' not found");

    srv.sandbox("f").await;
    c.stop_sandbox("f").await.unwrap();
    srv.fake.fail_next_start("out of disk");
    let e = sandbox_command(&c, sandbox_cmd(&["start", "f"]))
        .await
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("sandbox f failed to start: "), "{e}");
    assert!(e.contains("out of disk"), "{e}");
}

#[tokio::test]
async fn the_table_shows_what_the_server_answers() {
    let srv = TestServer::start().await;
    let c = srv.client();
    let body = CreateSandboxBody {
        name: Some("a-long-name".into()),
        vcpus: Some(2),
        mem_bytes: Some(512 << 20),
        fs_capacity_bytes: Some(3 << 29),
        ..Default::default()
    };
    c.create_sandbox(&body).await.unwrap();
    let (_, list) = c.list_sandboxes().await.unwrap();
    assert_eq!(
        sandbox_table(&list.items, SystemTime::now()),
        "NAME          STATUS   VCPUS   MEMORY   DISK   CREATED\n\
         a-long-name   ready    2       512M     1.5G   just now\n"
    );
}

fn parse_fork(args: &[&str]) -> ForkArgs {
    let mut argv = vec!["fork"];
    argv.extend(args);
    match sandbox_cmd(&argv) {
        SandboxCommand::Fork(a) => a,
        other => panic!("parsed {other:?}"),
    }
}

#[test]
fn fork_sends_only_what_was_given() {
    let body = |args: &[&str]| serde_json::to_value(fork_body(&parse_fork(args))).unwrap();
    assert_eq!(body(&["src"]), json!({}));
    assert_eq!(body(&["src", "-n", "3"]), json!({"count": 3}));
    assert_eq!(
        body(&["src", "--name", "a", "--name", "b", "--count", "2"]),
        json!({"count": 2, "names": ["a", "b"]})
    );
    let mut argv = vec!["sandbox", "fork", "src", "-n", "0"];
    assert!(Cli::try_parse_from(&argv).is_err());
    argv.truncate(3);
    assert!(Cli::try_parse_from(&argv).is_ok());
}

#[tokio::test]
async fn forks_are_new_sandboxes() {
    let srv = TestServer::start().await;
    let c = srv.client();
    srv.sandbox("src").await;
    let code = sandbox_command(
        &c,
        sandbox_cmd(&["fork", "src", "--name", "f1", "--name", "f2"]),
    )
    .await
    .unwrap();
    assert_eq!(code, ExitCode::SUCCESS);
    sandbox_command(&c, sandbox_cmd(&["fork", "src", "-n", "2", "--json"]))
        .await
        .unwrap();
    let (_, list) = c.list_sandboxes().await.unwrap();
    let mut names: Vec<&str> = list.items.iter().map(|s| s.name.as_str()).collect();
    names.retain(|n| !["src", "f1", "f2"].contains(n));
    assert_eq!(names.len(), 2, "{list:?}");
    assert_eq!(c.sandbox_status("f2").await.unwrap().status, "ready");
    let e = sandbox_command(&c, sandbox_cmd(&["fork", "missing"]))
        .await
        .unwrap_err();
    assert_eq!(e.to_string(), "Sandbox 'missing' not found");
}

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::extract::{Path as UrlPath, State};
use axum::routing::{get, post};
use clap::Parser;
use serde_json::{Value, json};

use super::*;
use crate::client::test_server::{TestServer, client_for};

#[derive(Debug, Parser)]
struct Cli {
    #[command(subcommand)]
    command: SnapshotCommand,
}

fn snapshot_cmd(args: &[&str]) -> SnapshotCommand {
    let mut argv = vec!["snapshot"];
    argv.extend(args);
    Cli::try_parse_from(argv).unwrap().command
}

fn parse_build(args: &[&str]) -> BuildArgs {
    let mut argv = vec!["build"];
    argv.extend(args);
    match snapshot_cmd(&argv) {
        SnapshotCommand::Build(a) => a,
        other => panic!("parsed {other:?}"),
    }
}

#[test]
fn name_tags_split_at_the_last_colon() {
    let nt = |name: &str, tag: Option<&str>| NameTag {
        name: name.into(),
        tag: tag.map(Into::into),
    };
    assert_eq!(parse_name_tag("py").unwrap(), nt("py", None));
    assert_eq!(parse_name_tag("py:3.12").unwrap(), nt("py", Some("3.12")));
    assert_eq!(
        parse_name_tag("team/app:v1").unwrap(),
        nt("team/app", Some("v1"))
    );
    assert!(parse_name_tag(":v1").is_err());
    assert!(parse_name_tag("py:").is_err());
    assert!(parse_name_tag("").is_err());
}

#[test]
fn bodies_carry_only_what_was_given() {
    let body = |args: &[&str]| serde_json::to_value(build_body(&parse_build(args))).unwrap();
    assert_eq!(
        body(&["py", "--image", "python:3.12-slim"]),
        json!({"name": "py", "docker_image": "python:3.12-slim"})
    );
    assert_eq!(
        body(&[
            "team/py:v2",
            "--image",
            "127.0.0.1:5000/py:1",
            "--disk",
            "4G"
        ]),
        json!({
            "name": "team/py",
            "docker_image": "127.0.0.1:5000/py:1",
            "fs_capacity_bytes": 4_294_967_296u64,
            "tag": "v2",
        })
    );
    assert_eq!(parse_build(&["py", "--image", "x"]).timeout, 600);
    assert!(Cli::try_parse_from(["snapshot", "build", "py"]).is_err());

    let capture = |s: &str| {
        serde_json::to_value(capture_body(&parse_name_tag(s).unwrap(), Vec::new(), false)).unwrap()
    };
    assert_eq!(capture("app"), json!({"name": "app"}));
    assert_eq!(capture("app:v1"), json!({"name": "app", "tag": "v1"}));
    let carried = capture_body(
        &parse_name_tag("app").unwrap(),
        vec!["env_vars".into(), "labels".into()],
        true,
    );
    assert_eq!(
        serde_json::to_value(carried).unwrap(),
        json!({"name": "app", "include": ["env_vars", "labels"],
               "confirm_allow_snapshot_secret_values": true})
    );
}

fn snap(name: &str, tags: &[&str]) -> Snapshot {
    serde_json::from_value(json!({
        "id": format!("id-{name}"),
        "name": name,
        "status": "ready",
        "tags": tags,
    }))
    .unwrap()
}

#[test]
fn the_table_names_size_and_source() {
    let now = humantime::parse_rfc3339("2025-01-02T00:00:00Z").unwrap();
    let mut built = snap("py", &["3.12", "latest"]);
    built.fs_capacity_bytes = 4 << 30;
    built.docker_image = Some("python:3.12-slim".into());
    built.created_at = Some("2025-01-01T21:00:00Z".into());
    let mut captured = snap("team/app", &[]);
    captured.status = "building".into();
    captured.fs_capacity_bytes = 3 << 29;
    captured.source_sandbox_id = Some("sb-1".into());
    let bare = snap("x", &["v1"]);
    assert_eq!(
        snapshot_table(&[built, captured, bare], now),
        "NAME       TAGS          ID            STATUS     SIZE   SOURCE             CREATED\n\
         py         3.12,latest   id-py         ready      4G     python:3.12-slim   3 hours ago\n\
         team/app   -             id-team/app   building   1.5G   sb-1               -\n\
         x          v1            id-x          ready      0B     -                  -\n"
    );
}

#[test]
fn references_prefer_the_tag_asked_for() {
    let s = snap("app", &["latest", "v1"]);
    assert_eq!(reference(&s, Some("v1")), "app:v1");
    assert_eq!(reference(&s, None), "app:latest");
    assert_eq!(reference(&snap("app", &[]), None), "app");
}

#[test]
fn refs_are_one_path_segment() {
    let c = client_for("http://h:1");
    // The server's route takes the reference as one segment: a name's `/` must not split it.
    assert_eq!(
        c.url(&["snapshots", "team/app:v1"]).as_str(),
        "http://h:1/api/v2/sandboxes/snapshots/team%2Fapp:v1"
    );
    assert_eq!(
        c.url(&["snapshots", "team/app:v1", "tags"]).as_str(),
        "http://h:1/api/v2/sandboxes/snapshots/team%2Fapp:v1/tags"
    );
}

#[tokio::test]
async fn snapshot_commands_change_the_server() {
    let srv = TestServer::start().await;
    let c = srv.client();
    let run = |args: &'static [&'static str]| {
        let c = &c;
        async move { snapshot_command(c, snapshot_cmd(args)).await }
    };
    let b1 = srv.sandbox("b1").await;
    run(&["capture", "b1", "team/app:v1"]).await.unwrap();
    run(&["capture", "b1", "solo", "--json"]).await.unwrap();
    let got = c.get_snapshot("team/app:v1").await.unwrap();
    assert_eq!(got.tags, ["v1"]);
    assert_eq!(got.source_sandbox_id, Some(b1.id));
    assert_eq!(c.get_snapshot("solo").await.unwrap().tags, ["latest"]);

    run(&["tag", "team/app:v1", "stable"]).await.unwrap();
    let mut tags = c.get_snapshot(&got.id).await.unwrap().tags;
    tags.sort_unstable();
    assert_eq!(tags, ["stable", "v1"]);

    run(&["ls"]).await.unwrap();
    run(&["ls", "--json"]).await.unwrap();
    let (_, list) = c.list_snapshots(Some("APP")).await.unwrap();
    let names: Vec<&str> = list.snapshots.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["team/app"]);

    // By name:tag (a `/` in it, sent as %2F) and by id.
    run(&["rm", "team/app:v1", "solo"]).await.unwrap();
    let e = c.get_snapshot(&got.id).await.unwrap_err().to_string();
    assert!(e.contains("not found"), "{e}");
    let e = run(&["rm", "solo", "system/default"]).await.unwrap_err();
    assert_eq!(e.to_string(), "failed to remove 2 of 2 snapshots");
}

/// A stub of `POST {B}/snapshots` and `GET {B}/snapshots/{id}` (the real server does not build
/// from images in tests): records the bodies, and answers each GET with the next status.
#[derive(Debug, Default)]
struct Builds {
    bodies: Vec<Value>,
    statuses: VecDeque<&'static str>,
}

type Shared = Arc<Mutex<Builds>>;

fn stub_snapshot(status: &str) -> Value {
    json!({
        "id": "snap-1",
        "name": "py",
        "status": status,
        "status_message": (status == "failed").then_some("pull failed: manifest unknown"),
        "tags": ["3.12"],
    })
}

async fn build_stub(statuses: &[&'static str]) -> (String, Shared, tokio::task::JoinHandle<()>) {
    let shared: Shared = Arc::new(Mutex::new(Builds {
        statuses: statuses.iter().copied().collect(),
        ..Default::default()
    }));
    let create = |State(s): State<Shared>, Json(body): Json<Value>| async move {
        s.lock().unwrap().bodies.push(body);
        Json(stub_snapshot("building"))
    };
    let poll = |State(s): State<Shared>, UrlPath(id): UrlPath<String>| async move {
        assert_eq!(id, "snap-1");
        let status = s.lock().unwrap().statuses.pop_front().unwrap_or("building");
        Json(stub_snapshot(status))
    };
    let app = axum::Router::new()
        .route("/api/v2/sandboxes/snapshots", post(create))
        .route("/api/v2/sandboxes/snapshots/{id}", get(poll))
        .with_state(Arc::clone(&shared));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (url, shared, task)
}

#[tokio::test]
async fn build_polls_until_ready() {
    let (url, shared, task) = build_stub(&["building", "ready"]).await;
    let c = client_for(&url);
    let code = snapshot_command(
        &c,
        snapshot_cmd(&["build", "py:3.12", "--image", "python:3.12", "--disk", "1G"]),
    )
    .await
    .unwrap();
    assert_eq!(code, ExitCode::SUCCESS);
    let b = shared.lock().unwrap();
    assert_eq!(
        b.bodies,
        [
            json!({"name": "py", "tag": "3.12", "docker_image": "python:3.12",
                "fs_capacity_bytes": 1u64 << 30})
        ]
    );
    assert!(b.statuses.is_empty(), "{:?}", b.statuses);
    task.abort();
}

#[tokio::test]
async fn build_failures_and_timeouts_say_why() {
    let (url, _, task) = build_stub(&["failed"]).await;
    let e = snapshot_command(
        &client_for(&url),
        snapshot_cmd(&["build", "py", "--image", "nope"]),
    )
    .await
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "snapshot py failed to build: pull failed: manifest unknown"
    );
    task.abort();

    let (url, _, task) = build_stub(&[]).await;
    let e = snapshot_command(
        &client_for(&url),
        snapshot_cmd(&["build", "py", "--image", "slow", "--timeout", "0"]),
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(
        e.starts_with("snapshot py (snap-1) was not ready within 0 s (status: building)"),
        "{e}"
    );
    task.abort();
}

use warren_wire::ops::CreateKeyBody;
use warren_wire::sandbox::CreateSandboxBody;

use super::test_server::TestServer;
use super::*;

#[test]
fn control_base_follows_the_sdk_rules() {
    for url in [
        "http://127.0.0.1:7878",
        "http://127.0.0.1:7878/",
        "http://127.0.0.1:7878/api",
        "http://127.0.0.1:7878/api/v1",
    ] {
        assert_eq!(
            control_base(url).unwrap().as_str(),
            "http://127.0.0.1:7878/api/v2/sandboxes",
            "{url}"
        );
    }
    assert_eq!(
        control_base("http://h/prefix").unwrap().as_str(),
        "http://h/prefix/api/v2/sandboxes"
    );
    assert!(control_base("ftp://h").is_err());
    assert!(control_base("not a url").is_err());
}

#[test]
fn path_segments_are_encoded() {
    let c = Client::new(
        &ConnArgs {
            url: "http://h:1".into(),
            api_key: Some("k".into()),
        },
        Path::new("/nonexistent"),
    )
    .unwrap();
    assert_eq!(
        c.url(&["boxes", "a/b c"]).as_str(),
        "http://h:1/api/v2/sandboxes/boxes/a%2Fb%20c"
    );
    assert_eq!(
        c.url(&["boxes", "x", "status"]).as_str(),
        "http://h:1/api/v2/sandboxes/boxes/x/status"
    );
    assert_eq!(
        c.platform_url(&["workspaces", "current", "secrets", "A B"])
            .as_str(),
        "http://h:1/api/v1/workspaces/current/secrets/A%20B"
    );
}

#[test]
fn api_key_comes_from_the_flag_or_the_key_file() {
    let dir = tempfile::tempdir().unwrap();
    let conn = ConnArgs {
        url: "http://h".into(),
        api_key: None,
    };
    let c = Client::new(&conn, dir.path()).unwrap();
    assert_eq!(c.api_key, None);
    assert!(c.no_key_reason.unwrap().contains("admin.key"));
    std::fs::write(dir.path().join("admin.key"), "wk_secret\n").unwrap();
    let c = Client::new(&conn, dir.path()).unwrap();
    assert_eq!(c.api_key.as_deref(), Some("wk_secret"));
    let conn = ConnArgs {
        url: "http://h".into(),
        api_key: Some("flag".into()),
    };
    let c = Client::new(&conn, dir.path()).unwrap();
    assert_eq!(c.api_key.as_deref(), Some("flag"));
}

#[test]
fn ws_urls_swap_the_scheme() {
    assert_eq!(
        ws_url("http://h:1/dp/abc", "/execute/ws").unwrap(),
        "ws://h:1/dp/abc/execute/ws"
    );
    assert_eq!(
        ws_url("https://h/dp/", "/execute/ws").unwrap(),
        "wss://h/dp/execute/ws"
    );
    assert!(ws_url("ftp://h", "/x").is_err());
}

#[test]
fn error_bodies_are_read_like_the_sdks() {
    let s = StatusCode::NOT_FOUND;
    assert_eq!(
        error_message(
            s,
            r#"{"detail":{"error":"NotFound","message":"Sandbox 'x' not found"}}"#
        ),
        "Sandbox 'x' not found"
    );
    assert_eq!(
        error_message(
            s,
            r#"{"detail":{"error":"E","message":"boom","error_id":"42"}}"#
        ),
        "boom (error_id=42)"
    );
    assert_eq!(
        error_message(
            s,
            r#"{"detail":[{"loc":["body","x"],"msg":"a"},{"msg":"b"}]}"#
        ),
        "a; b"
    );
    assert_eq!(error_message(s, r#"{"detail":"plain"}"#), "plain");
    assert_eq!(error_message(s, "oops"), "HTTP 404 Not Found: oops");
    assert_eq!(
        error_message(StatusCode::BAD_GATEWAY, ""),
        "HTTP 502 Bad Gateway"
    );
}

#[tokio::test]
async fn error_answers_of_the_real_server_become_the_message() {
    let srv = TestServer::start().await;
    srv.sandbox("box").await;
    let e = srv
        .client_with(Some("wrong"))
        .get_sandbox("box")
        .await
        .unwrap_err();
    assert_eq!(e.to_string(), "invalid API key");
    let e = srv.client_with(None).get_sandbox("box").await.unwrap_err();
    let e = e.to_string();
    assert!(
        e.starts_with("missing X-Api-Key header (no API key was sent: cannot read"),
        "{e}"
    );
    assert!(e.ends_with("pass --api-key or set WARREN_API_KEY)"), "{e}");
    let e = srv.client().get_sandbox("missing").await.unwrap_err();
    assert_eq!(e.to_string(), "Sandbox 'missing' not found");
    let e = srv.client().delete_sandbox("missing").await.unwrap_err();
    assert_eq!(e.to_string(), "Sandbox 'missing' not found");
    let sb = srv.client().get_sandbox("box").await.unwrap();
    assert_eq!(dataplane(&sb).unwrap(), format!("{}/dp/{}", srv.url, sb.id));
}

#[test]
fn a_sandbox_without_a_data_plane_says_why() {
    let sb: Sandbox = serde_json::from_str(
        r#"{"id": "i", "name": "b", "status": "failed", "dataplane_url": null}"#,
    )
    .unwrap();
    assert_eq!(
        dataplane(&sb).unwrap_err().to_string(),
        "sandbox b has no data plane (status: failed)"
    );
}

#[tokio::test]
async fn sandboxes_are_created_listed_read_and_deleted() {
    let srv = TestServer::start().await;
    let c = srv.client();
    let body = CreateSandboxBody {
        name: Some("b1".into()),
        wait_for_ready: Some(true),
        timeout: Some(10),
        mem_bytes: Some(512 << 20),
        vcpus: Some(2),
        ..Default::default()
    };
    let (text, created) = c.create_sandbox(&body).await.unwrap();
    assert_eq!(created.name, "b1");
    assert_eq!(created.status, "ready");
    assert_eq!(created.mem_bytes, Some(512 << 20));
    assert_eq!(created.vcpus, Some(2));
    // The text is the answer as sent, for `--json`.
    let reparsed: Sandbox = serde_json::from_str(&text).unwrap();
    assert_eq!(reparsed, created);

    let e = c.create_sandbox(&body).await.unwrap_err();
    assert_eq!(e.to_string(), "Sandbox with name 'b1' already exists");

    srv.sandbox("b2").await;
    let (_, list) = c.list_sandboxes().await.unwrap();
    let mut names: Vec<&str> = list.items.iter().map(|s| s.name.as_str()).collect();
    names.sort_unstable();
    assert_eq!(names, ["b1", "b2"]);

    let got = c.get_sandbox("b1").await.unwrap();
    assert_eq!(got.id, created.id);
    // A sandbox is found by its id too.
    assert_eq!(c.get_sandbox(&created.id).await.unwrap().name, "b1");

    c.stop_sandbox("b1").await.unwrap();
    assert_eq!(c.sandbox_status("b1").await.unwrap().status, "stopped");
    c.start_sandbox("b1").await.unwrap();
    assert_eq!(c.sandbox_status("b1").await.unwrap().status, "ready");

    c.delete_sandbox("b1").await.unwrap();
    let e = c.get_sandbox("b1").await.unwrap_err();
    assert_eq!(e.to_string(), "Sandbox 'b1' not found");
    let (_, list) = c.list_sandboxes().await.unwrap();
    assert_eq!(list.items.len(), 1);
    assert_eq!(list.items[0].name, "b2");
}

#[tokio::test]
async fn keys_are_created_listed_and_revoked() {
    let srv = TestServer::start().await;
    let c = srv.client();
    let created = c
        .create_key(&CreateKeyBody {
            name: "ci".into(),
            admin: false,
        })
        .await
        .unwrap();
    assert_eq!(created.name, "ci");
    assert!(!created.admin);
    // The new key works.
    let ci = srv.client_with(Some(&created.key));
    assert!(ci.list_sandboxes().await.unwrap().1.items.is_empty());
    // A non-admin may not manage keys.
    let e = ci.list_keys().await.unwrap_err();
    assert_eq!(e.to_string(), "only workspace admins can list keys");

    let (_, list) = c.list_keys().await.unwrap();
    let k = list.keys.iter().find(|k| k.id == created.id).unwrap();
    assert_eq!(k.name, "ci");
    assert_eq!(k.revoked_at, None);

    c.revoke_key(&created.id).await.unwrap();
    let (_, list) = c.list_keys().await.unwrap();
    let k = list.keys.iter().find(|k| k.id == created.id).unwrap();
    assert!(k.revoked_at.is_some());
    let e = ci.list_sandboxes().await.unwrap_err();
    assert_eq!(e.to_string(), "invalid API key");
}

#[tokio::test]
async fn an_absent_server_is_named() {
    // Bind and drop a listener to get a port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let conn = ConnArgs {
        url: format!("http://127.0.0.1:{port}"),
        api_key: Some("k".into()),
    };
    let c = Client::new(&conn, Path::new("/nonexistent")).unwrap();
    let e = c.get_sandbox("x").await.unwrap_err().to_string();
    assert!(e.contains("cannot connect to the Warren server"), "{e}");
}

#[tokio::test]
async fn websocket_refusals_are_told_from_outages() {
    let srv = TestServer::start().await;
    let sb = srv.sandbox("box").await;
    let dp = dataplane(&sb).unwrap();
    let ws = srv.client().websocket(dp, "/execute/ws").await;
    assert!(ws.is_ok(), "{ws:?}");
    // What retrying cannot fix fails at once, with the server's message.
    let wrong = srv.client_with(Some("wrong"));
    match wrong.websocket(dp, "/execute/ws").await {
        Err(WsError::Fatal(e)) => assert_eq!(e.to_string(), "invalid API key"),
        other => panic!("{other:?}"),
    }
    let gone = format!("{}/dp/nope", srv.url);
    let c = srv.client();
    match c.websocket(&gone, "/execute/ws").await {
        Err(WsError::Fatal(e)) => assert_eq!(e.to_string(), "Sandbox 'nope' not found"),
        other => panic!("{other:?}"),
    }
    // A server that is not there (yet) may be back: retryable.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let absent = format!("http://127.0.0.1:{port}/dp/x");
    match c.websocket(&absent, "/execute/ws").await {
        Err(WsError::Retryable(e)) => assert!(e.to_string().contains("cannot connect"), "{e}"),
        other => panic!("{other:?}"),
    }
}

//! Snapshots, capture, forks and the 0.15.1 additions (batch delete, usage, tag values) in the
//! wire shapes the SDKs read.

use serde_json::{Value, json};

use super::*;

const B: &str = "/api/v2/sandboxes";

impl Api {
    async fn get(&self, uri: &str) -> Answer {
        self.send(self.req(Method::GET, uri).body(Body::empty()).unwrap())
            .await
    }
}

#[tokio::test]
async fn snapshots_list_get_capture_tag_and_delete() {
    let api = api().await;
    let list: Value = api.get(&format!("{B}/snapshots")).await.json();
    assert_eq!(list["items"], list["snapshots"]);
    let default = &list["snapshots"][0];
    assert_eq!(default["name"], "system/default");
    assert_eq!(default["status"], "ready");
    assert_eq!(default["tags"], json!(["latest"]));
    let id = default["id"].as_str().unwrap().to_owned();
    let by_ref: Value = api
        .get(&format!("{B}/snapshots/system%2Fdefault:latest"))
        .await
        .json();
    assert_eq!(by_ref["id"], id.as_str());

    api.sandbox("src").await;
    let a = api
        .json(
            Method::POST,
            &format!("{B}/boxes/src/snapshot"),
            r#"{"name": "team/app", "tag": "v1"}"#,
        )
        .await;
    assert!(
        a.status.is_success(),
        "{}",
        String::from_utf8_lossy(&a.body)
    );
    let snap: Value = a.json();
    assert_eq!(snap["status"], "ready");
    assert_eq!(snap["tags"], json!(["v1"]));
    assert!(snap["source_sandbox_id"].is_string());
    let sid = snap["id"].as_str().unwrap().to_owned();

    let a = api
        .json(
            Method::POST,
            &format!("{B}/snapshots/{sid}/tags"),
            r#"{"tag": "stable"}"#,
        )
        .await;
    assert_eq!(a.status, StatusCode::OK);
    let tags: Value = api
        .get(&format!("{B}/snapshots-by-name/team%2Fapp"))
        .await
        .json();
    assert_eq!(tags["name"], "team/app");
    assert_eq!(tags["tags"].as_array().unwrap().len(), 2);
    assert_eq!(
        api.get(&format!("{B}/snapshots-by-name/nobody"))
            .await
            .status,
        StatusCode::NOT_FOUND
    );

    let sb: Sandbox = api
        .json(
            Method::POST,
            &format!("{B}/boxes"),
            r#"{"name": "child", "snapshot": "team/app:stable"}"#,
        )
        .await
        .json();
    assert_eq!(sb.snapshot_id.as_deref(), Some(sid.as_str()));
    let a = api
        .send(
            api.req(Method::DELETE, &format!("{B}/snapshots/{sid}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(a.status, StatusCode::CONFLICT);
    for bad in ["limit=0", "limit=501", "offset=-1"] {
        assert_eq!(
            api.get(&format!("{B}/snapshots?{bad}")).await.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{bad}"
        );
    }
    let a = api
        .json(
            Method::POST,
            &format!("{B}/boxes/src/snapshot"),
            r#"{"name": "x", "include_memory": true}"#,
        )
        .await;
    assert_eq!(a.error(), (StatusCode::BAD_REQUEST, "Unsupported".into()));
}

#[tokio::test]
async fn a_build_answers_building_and_polls_to_ready() {
    let api = api().await;
    let a = api
        .json(Method::POST, &format!("{B}/snapshots"), r#"{"name": "py", "docker_image": "python:3.12-slim", "fs_capacity_bytes": 1073741824}"#)
        .await;
    assert_eq!(
        a.status,
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&a.body)
    );
    let snap: Value = a.json();
    assert_eq!(snap["tags"], json!(["3.12-slim"]));
    let id = snap["id"].as_str().unwrap().to_owned();
    let mut status = snap["status"].as_str().unwrap().to_owned();
    for _ in 0..200 {
        if status != "building" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        status = api
            .get(&format!("{B}/snapshots/{id}"))
            .await
            .json::<Value>()["status"]
            .as_str()
            .unwrap()
            .to_owned();
    }
    assert_eq!(status, "ready");
    let a = api
        .json(Method::POST, &format!("{B}/snapshots"), r#"{"name": "py"}"#)
        .await;
    assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test]
async fn forks_batch_delete_usage_and_tag_values() {
    let api = api().await;
    api.sandbox("parent").await;
    let a = api
        .json(
            Method::POST,
            &format!("{B}/boxes/parent/fork"),
            r#"{"count": 2}"#,
        )
        .await;
    assert_eq!(
        a.status,
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&a.body)
    );
    let forks: Value = a.json();
    let names: Vec<String> = forks["sandboxes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names.len(), 2);
    assert!(
        forks["sandboxes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["status"] == "ready")
    );

    let a = api
        .json(
            Method::POST,
            &format!("{B}/boxes"),
            r#"{"name": "tagged", "tag_value_ids": ["tv-1", "tv-2"]}"#,
        )
        .await;
    assert_eq!(a.status, StatusCode::OK);
    let list: SandboxList = api
        .get(&format!("{B}/boxes?tag_value_id=tv-1&tag_value_id=tv-2"))
        .await
        .json();
    assert_eq!(
        list.items
            .iter()
            .map(|s| s.name.as_str())
            .collect::<Vec<_>>(),
        ["tagged"]
    );
    let list: SandboxList = api
        .get(&format!("{B}/boxes?tag_value_id=tv-1&tag_value_id=tv-3"))
        .await
        .json();
    assert!(list.items.is_empty());

    let usage: Value = api.get(&format!("{B}/usage")).await.json();
    assert_eq!(usage["sandboxes_used"], 4);
    assert_eq!(usage["sandbox_running_count"], 4);
    assert_eq!(usage["snapshots_count"], 1);
    let costs: Value = api
        .get(&format!("{B}/usage/costs?start_time=a&end_time=b"))
        .await
        .json();
    assert_eq!(costs["items"], json!([]));

    let body = json!({"names": [names[0], names[1], "ghost"]}).to_string();
    let a = api
        .json(Method::POST, &format!("{B}/boxes/batch-delete"), &body)
        .await;
    assert_eq!(
        a.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&a.body)
    );
    let done: Value = a.json();
    assert_eq!(done["deleted"], json!([names[0], names[1]]));
    assert_eq!(
        done["skipped"],
        json!([{"name": "ghost", "reason": "not found"}])
    );
    let usage: Value = api.get(&format!("{B}/usage")).await.json();
    assert_eq!(usage["sandboxes_used"], 2);
}

#[tokio::test]
async fn registries_never_show_the_password_and_credentials_stay_on_their_host() {
    const PW: &str = "ghp_never-returned-123456";
    let api = api().await;
    let body = json!({"name": "gh", "url": "https://ghcr.io", "username": "bot", "password": PW})
        .to_string();
    let a = api
        .json(Method::POST, &format!("{B}/registries"), &body)
        .await;
    assert_eq!(
        a.status,
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&a.body)
    );
    let reg: Value = a.json();
    assert_eq!(reg["provider"], "GHCR");
    assert_eq!(reg["username"], "bot");
    let id = reg["id"].as_str().unwrap().to_owned();
    for uri in [
        format!("{B}/registries"),
        format!("{B}/registries/gh"),
        format!("{B}/registries/{id}"),
    ] {
        let a = api.get(&uri).await;
        assert_eq!(a.status, StatusCode::OK, "{uri}");
        assert!(
            !String::from_utf8_lossy(&a.body).contains(PW),
            "{uri} shows the password"
        );
    }
    let list: Value = api.get(&format!("{B}/registries")).await.json();
    assert_eq!(list["items"], list["registries"]);
    let a = api
        .json(Method::POST, &format!("{B}/registries"), &body)
        .await;
    assert_eq!(a.status, StatusCode::CONFLICT);
    let a = api
        .json(
            Method::PATCH,
            &format!("{B}/registries/gh"),
            r#"{"username": "bot2"}"#,
        )
        .await;
    assert_eq!(a.json::<Value>()["username"], "bot2");

    // The credentials go to ghcr.io only.
    let other =
        json!({"name": "x", "docker_image": "evil.example/steal:1", "registry_id": id}).to_string();
    let a = api
        .json(Method::POST, &format!("{B}/snapshots"), &other)
        .await;
    assert_eq!(
        a.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        String::from_utf8_lossy(&a.body)
    );
    let own =
        json!({"name": "x", "docker_image": "ghcr.io/org/app:1", "registry_id": "gh"}).to_string();
    let a = api
        .json(Method::POST, &format!("{B}/snapshots"), &own)
        .await;
    assert_eq!(
        a.status,
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&a.body)
    );
    assert_eq!(a.json::<Value>()["registry_id"], id.as_str());

    // Members use registries but do not change them.
    let a = api
        .json(Method::POST, "/api/v2/sandboxes/keys", r#"{"name": "dev"}"#)
        .await;
    let dev = a.json::<Value>()["key"].as_str().unwrap().to_owned();
    let req = Request::builder()
        .method(Method::DELETE)
        .uri(format!("{B}/registries/gh"))
        .header("x-api-key", &dev)
        .body(Body::empty())
        .unwrap();
    assert_eq!(api.send(req).await.status, StatusCode::FORBIDDEN);
    let a = api
        .send(
            api.req(Method::DELETE, &format!("{B}/registries/gh"))
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(a.status, StatusCode::NO_CONTENT);
    assert_eq!(
        api.get(&format!("{B}/registries/gh")).await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn an_imported_archive_is_built_and_its_spooled_file_removed() {
    let api = api().await;
    let req = api
        .req(
            Method::POST,
            &format!("{B}/snapshot-imports?name=offline%2Fapp&tag=v3"),
        )
        .header(header::CONTENT_TYPE, "application/x-tar")
        .body(Body::from(vec![7u8; 4096]))
        .unwrap();
    let a = api.send(req).await;
    assert_eq!(
        a.status,
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&a.body)
    );
    let snap: Value = a.json();
    assert_eq!(snap["name"], "offline/app");
    assert_eq!(snap["tags"], json!(["v3"]));
    assert!(snap["docker_image"].is_null());
    let id = snap["id"].as_str().unwrap().to_owned();
    let mut status = String::new();
    for _ in 0..200 {
        status = api
            .get(&format!("{B}/snapshots/{id}"))
            .await
            .json::<Value>()["status"]
            .as_str()
            .unwrap()
            .to_owned();
        if status != "building" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(status, "ready");
    let imports = api._dir.path().join("imports");
    let left: Vec<_> = std::fs::read_dir(&imports).unwrap().collect();
    assert!(left.is_empty(), "spooled archives left: {left:?}");
    let req = api
        .req(Method::POST, &format!("{B}/snapshot-imports?name=empty"))
        .body(Body::empty())
        .unwrap();
    assert_eq!(api.send(req).await.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(std::fs::read_dir(&imports).unwrap().next().is_none());
}

#[tokio::test]
async fn volumes_in_the_generated_clients_shapes() {
    let api = api().await;
    for n in ["v1", "v2", "v3"] {
        let a = api
            .json(
                Method::POST,
                &format!("{B}/volumes"),
                &json!({"name": n, "size_bytes": 1000}).to_string(),
            )
            .await;
        assert_eq!(
            a.status,
            StatusCode::CREATED,
            "{}",
            String::from_utf8_lossy(&a.body)
        );
        assert_eq!(a.json::<Value>()["size_bytes"], 1u64 << 30);
    }
    let page: Value = api.get(&format!("{B}/volumes?page_size=2")).await.json();
    assert_eq!(page["items"].as_array().unwrap().len(), 2);
    let cursor = page["next_cursor"].as_str().unwrap().to_owned();
    let rest: Value = api
        .get(&format!("{B}/volumes?page_size=2&cursor={cursor}"))
        .await
        .json();
    assert_eq!(rest["items"][0]["name"], "v3");
    assert!(rest["next_cursor"].is_null());

    let body = json!({"name": "with-vol", "volumes": [{"volume": "v1", "mount_path": "/data"}, {"volume": "v2", "mount_path": "/ro", "read_only": true}]});
    let a = api
        .json(Method::POST, &format!("{B}/boxes"), &body.to_string())
        .await;
    assert_eq!(
        a.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&a.body)
    );
    let sb: Value = a.json();
    assert_eq!(sb["volumes"][0]["volume_name"], "v1");
    assert_eq!(sb["volumes"][1]["read_only"], true);
    let v1: Value = api.get(&format!("{B}/volumes/v1")).await.json();
    assert_eq!(v1["attachments"][0]["sandbox_name"], "with-vol");
    assert_eq!(v1["attachments"][0]["mount_path"], "/data");
    let a = api
        .send(
            api.req(Method::DELETE, &format!("{B}/volumes/v1"))
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(a.status, StatusCode::CONFLICT);
    let a = api
        .json(
            Method::POST,
            &format!("{B}/volumes/v1/clone"),
            r#"{"name": "v1-copy"}"#,
        )
        .await;
    assert_eq!(
        a.status,
        StatusCode::CONFLICT,
        "attached read-write to a running sandbox"
    );
    let a = api
        .json(
            Method::PATCH,
            &format!("{B}/volumes/v3"),
            r#"{"description": "x", "labels": {"a": "b"}}"#,
        )
        .await;
    assert_eq!(a.json::<Value>()["description"], "x");
    let a = api
        .json(
            Method::PATCH,
            &format!("{B}/volumes/v3"),
            r#"{"description": null, "labels": {}}"#,
        )
        .await;
    let v3: Value = a.json();
    assert!(v3["description"].is_null());
    assert_eq!(v3["labels"], json!({}));
    let bad = json!({"name": "bad", "volumes": [{"volume": "v3", "mount_path": "relative"}]});
    assert_eq!(
        api.json(Method::POST, &format!("{B}/boxes"), &bad.to_string())
            .await
            .status,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    let a = api
        .send(
            api.req(Method::DELETE, &format!("{B}/volumes/v3"))
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(a.status, StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn the_control_plane_also_answers_under_v2_sandboxes_as_older_js_sdks_derive_it() {
    let api = api().await;
    api.sandbox("both").await;
    let list: SandboxList = api.get("/v2/sandboxes/boxes").await.json();
    assert_eq!(list.items.len(), 1);
    let s: Value = api
        .get("/v2/sandboxes/snapshots/system%2Fdefault")
        .await
        .json();
    assert_eq!(s["name"], "system/default");
    let anon = api
        .send(
            Request::builder()
                .uri("/v2/sandboxes/boxes")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(anon.status, StatusCode::UNAUTHORIZED);
}

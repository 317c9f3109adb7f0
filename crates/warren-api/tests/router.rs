//! The API through `router().oneshot(...)`: real handlers, the real control plane and an
//! in-memory store, on the fake driver (no root, no kernel). What is checked is the HTTP: status
//! codes, error bodies, and JSON that the wire types (which the CLI also reads) decode.

// An integration-test crate is test code throughout.
#![allow(
    clippy::tests_outside_test_module,
    clippy::unwrap_used,
    clippy::cast_possible_truncation
)]

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use base64::Engine;
use http_body_util::BodyExt;
use tower::ServiceExt;
use warren_control::{Control, ControlConfig, ResourceLimits, SqliteStore};
use warren_driver::fake::FakeDriver;
use warren_wire::ErrorBody;
use warren_wire::exec::HttpExecuteResponse;
use warren_wire::files::{GlobMatch, SearchResponse};
use warren_wire::sandbox::{Sandbox, SandboxList};

/// Signs by writing the claims out in the clear: the router's side of login-mode service URLs
/// only passes tokens on (the real key and the SDK's verifier meet in the conformance suite).
#[derive(Debug)]
struct ClearSigner;

impl warren_control::TokenSigner for ClearSigner {
    fn jwks(&self) -> serde_json::Value {
        serde_json::json!({"keys": [{"kid": "clear"}]})
    }
    fn sign(&self, claims: &serde_json::Value) -> Result<String, String> {
        Ok(format!("clear.{claims}"))
    }
}

struct Api {
    router: Router,
    key: String,
    _dir: tempfile::TempDir,
}

async fn api() -> Api {
    let dir = tempfile::tempdir().unwrap();
    let cfg = ControlConfig {
        default_pool: warren_control::pool::PoolSize::default(),
        default_tier: warren_control::Tier::Jail,
        data_dir: dir.path().to_owned(),
        public_url: "http://warren.test".into(),
        sweep_interval: Duration::from_secs(3600),
        egress: None,
        signer: Some(Arc::new(ClearSigner)),
        service_domain: Some("svc.test".into()),
        limits: ResourceLimits {
            max_vcpus: 8,
            max_mem_bytes: 1 << 40,
            max_fs_capacity_bytes: 1 << 40,
            pids: 1024,
            max_sandboxes: 100,
            max_committed_mem_bytes: None,
            user_max_sandboxes: None,
            user_max_mem_bytes: None,
            reserve_mem_bytes: None,
            reserve_disk_bytes: 0,
        },
    };
    let driver = Arc::new(FakeDriver::new());
    let (control, key) = Control::with_store(cfg, driver, SqliteStore::in_memory().unwrap())
        .await
        .unwrap();
    Api {
        router: warren_api::router(control),
        key: key.unwrap(),
        _dir: dir,
    }
}

struct Answer {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: Vec<u8>,
}

impl Answer {
    fn json<T: serde::de::DeserializeOwned>(&self) -> T {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!("{e}: {}", String::from_utf8_lossy(&self.body));
        })
    }

    /// The status and `detail.error`, or the first item's `type` when `detail` is FastAPI's
    /// list of refused values.
    fn error(&self) -> (StatusCode, String) {
        let body: serde_json::Value = self.json();
        match &body["detail"] {
            serde_json::Value::Array(items) => (
                self.status,
                items[0]["type"].as_str().unwrap_or_default().to_owned(),
            ),
            _ => (self.status, self.json::<ErrorBody>().detail.error),
        }
    }
}

impl Api {
    async fn send(&self, req: Request<Body>) -> Answer {
        let resp = self.router.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec();
        Answer {
            status,
            headers,
            body,
        }
    }

    fn req(&self, method: Method, uri: &str) -> axum::http::request::Builder {
        Request::builder()
            .method(method)
            .uri(uri)
            .header("x-api-key", &self.key)
    }

    async fn json(&self, method: Method, uri: &str, body: &str) -> Answer {
        let req = self
            .req(method, uri)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body.to_owned()))
            .unwrap();
        self.send(req).await
    }

    async fn sandbox(&self, name: &str) -> Sandbox {
        self.sandbox_with(&format!(r#"{{"name": "{name}"}}"#)).await
    }

    /// A sandbox created from this create body.
    async fn sandbox_with(&self, body: &str) -> Sandbox {
        let a = self
            .json(Method::POST, "/api/v2/sandboxes/boxes", body)
            .await;
        assert_eq!(
            a.status,
            StatusCode::OK,
            "{}",
            String::from_utf8_lossy(&a.body)
        );
        a.json()
    }
}

#[tokio::test]
async fn every_request_needs_a_key() {
    let api = api().await;
    let req = Request::get("/api/v2/sandboxes/boxes")
        .body(Body::empty())
        .unwrap();
    assert_eq!(
        api.send(req).await.error(),
        (StatusCode::UNAUTHORIZED, "Unauthorized".into())
    );
    let req = Request::get("/api/v2/sandboxes/boxes")
        .header("x-api-key", "wrong")
        .body(Body::empty())
        .unwrap();
    assert_eq!(api.send(req).await.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_sandbox_is_created_listed_and_deleted_in_the_wire_shape() {
    let api = api().await;
    let sb = api.sandbox("one").await;
    assert_eq!((sb.name.as_str(), sb.status.as_str()), ("one", "ready"));
    assert_eq!(
        sb.tier.as_deref(),
        Some("jail"),
        "the tier comes from the driver"
    );
    assert_eq!(
        sb.dataplane_url.as_deref(),
        Some(format!("http://warren.test/dp/{}", sb.id).as_str())
    );
    let list: SandboxList = api
        .send(
            api.req(Method::GET, "/api/v2/sandboxes/boxes")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .json();
    assert_eq!(list.items.len(), 1);
    assert_eq!(list.items, list.sandboxes);
    let dup = api
        .json(
            Method::POST,
            "/api/v2/sandboxes/boxes",
            r#"{"name": "one"}"#,
        )
        .await;
    assert_eq!(dup.error(), (StatusCode::CONFLICT, "Conflict".into()));
    let del = api
        .send(
            api.req(Method::DELETE, "/api/v2/sandboxes/boxes/one")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(del.status, StatusCode::NO_CONTENT);
    let gone = api
        .send(
            api.req(Method::GET, "/api/v2/sandboxes/boxes/one")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(gone.error(), (StatusCode::NOT_FOUND, "NotFound".into()));
}

#[tokio::test]
async fn bad_bodies_get_the_status_that_says_why() {
    let api = api().await;
    let boxes = "/api/v2/sandboxes/boxes";
    let cases = [
        (
            r#"{"nmae": "typo"}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            "ValidationError",
        ),
        (r#"{"name": "#, StatusCode::BAD_REQUEST, "InvalidJson"),
        // Refused values come as the real service's validators send them.
        (
            r#"{"name": "a b"}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            "value_error",
        ),
        (
            r#"{"idle_ttl_seconds": 61}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            "value_error",
        ),
        (
            r#"{"volumes": [{}]}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            "ValidationError",
        ),
        (
            r#"{"snapshot": "a", "snapshot_id": "b"}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            "value_error",
        ),
        (
            r#"{"snapshot": "nope/none:1"}"#,
            StatusCode::NOT_FOUND,
            "NotFound",
        ),
        (
            r#"{"preserve_memory_on_stop": true}"#,
            StatusCode::BAD_REQUEST,
            "InvalidRequest",
        ),
    ];
    for (body, status, error) in cases {
        let a = api.json(Method::POST, boxes, body).await;
        assert_eq!(a.error(), (status, error.into()), "{body}");
    }
    // A value error names the field it refused, and why.
    let refused: serde_json::Value = api
        .json(Method::POST, boxes, r#"{"vcpus": 1000}"#)
        .await
        .json();
    let item = &refused["detail"][0];
    assert_eq!(
        item["loc"],
        serde_json::json!(["body", "vcpus"]),
        "{refused}"
    );
    assert!(
        item["msg"].as_str().is_some_and(|m| m.contains("1000")),
        "{refused}"
    );
    let no_type = api
        .send(api.req(Method::POST, boxes).body(Body::from("{}")).unwrap())
        .await;
    assert_eq!(no_type.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
}

#[tokio::test]
async fn bad_query_strings_get_the_error_format() {
    let api = api().await;
    let sb = api.sandbox("q").await;
    for (uri, param) in [
        ("/api/v2/sandboxes/boxes?limit=-1".to_owned(), "limit"),
        (format!("/dp/{}/download", sb.id), "path"),
    ] {
        let a = api
            .send(api.req(Method::GET, &uri).body(Body::empty()).unwrap())
            .await;
        assert_eq!(
            a.error(),
            (StatusCode::UNPROCESSABLE_ENTITY, "ValidationError".into()),
            "{uri}"
        );
        let message = a.json::<ErrorBody>().detail.message;
        assert!(message.contains(param), "{uri}: {message}");
    }
}

#[tokio::test]
async fn the_sandboxs_own_env_vars_are_layered_over_its_run_config() {
    let api = api().await;
    let body = r#"{"name": "env", "run_config": {"env_vars": {"A": "run", "B": "run"}},
                   "env_vars": {"A": "own"}}"#;
    let sb = api.sandbox_with(body).await;
    let r: HttpExecuteResponse = api
        .json(
            Method::POST,
            &format!("/dp/{}/execute", sb.id),
            r#"{"command": "env A; env B"}"#,
        )
        .await
        .json();
    assert_eq!(r.stdout, "own\nrun\n");
}

#[tokio::test]
async fn blocking_execute_returns_both_streams_and_the_exit_code() {
    let api = api().await;
    let sb = api.sandbox("x").await;
    let a = api
        .json(
            Method::POST,
            &format!("/dp/{}/execute", sb.id),
            r#"{"command": "echo hi; echoerr oops; exit 3"}"#,
        )
        .await;
    assert_eq!(a.status, StatusCode::OK);
    let r: HttpExecuteResponse = a.json();
    assert_eq!(
        (r.stdout.as_str(), r.stderr.as_str(), r.exit_code),
        ("hi\n", "oops\n", 3)
    );
    let nul = api
        .json(
            Method::POST,
            &format!("/dp/{}/execute", sb.id),
            r#"{"command": "a\u0000b"}"#,
        )
        .await;
    assert_eq!(
        nul.error(),
        (StatusCode::BAD_REQUEST, "InvalidRequest".into())
    );
    let huge = api
        .json(
            Method::POST,
            &format!("/dp/{}/execute", sb.id),
            r#"{"command": "true", "ttl_seconds": 100000000000}"#,
        )
        .await;
    assert_eq!(
        huge.error(),
        (StatusCode::UNPROCESSABLE_ENTITY, "ValidationError".into())
    );
    let timeout = api
        .json(
            Method::POST,
            &format!("/dp/{}/execute", sb.id),
            r#"{"command": "sleep 5000", "timeout": 1}"#,
        )
        .await;
    assert_eq!(
        timeout.error(),
        (StatusCode::BAD_REQUEST, "CommandError".into())
    );
}

/// `(event, data)` pairs of an SSE body.
fn events(body: &[u8]) -> Vec<(String, serde_json::Value)> {
    let text = String::from_utf8_lossy(body);
    text.split("\n\n")
        .filter_map(|block| {
            let mut event = None;
            let mut data = None;
            for line in block.lines() {
                if let Some(e) = line.strip_prefix("event: ") {
                    event = Some(e.to_owned());
                } else if let Some(d) = line.strip_prefix("data: ") {
                    data = serde_json::from_str(d).ok();
                }
            }
            Some((event?, data?))
        })
        .collect()
}

#[tokio::test]
async fn sse_stops_at_the_window_and_a_resume_continues_exactly_there() {
    let api = api().await;
    let sb = api.sandbox("sse").await;
    let total = 3 * 1024 * 1024;
    let start = api
        .json(
            Method::POST,
            &format!("/dp/{}/execute/stream/start", sb.id),
            &format!(
                r#"{{"command": "repeat {} abcd", "command_id": "big"}}"#,
                total / 4
            ),
        )
        .await;
    assert_eq!(start.status, StatusCode::OK);
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut got = Vec::new();
    let mut body = start.body;
    let mut resumes = 0;
    loop {
        let evs = events(&body);
        assert_eq!(evs[0].0, "started", "every response begins with started");
        let mut sent = 0;
        for (name, data) in &evs {
            if name == "stdout" {
                assert_eq!(
                    data["offset"].as_u64(),
                    Some(got.len() as u64),
                    "gap or overlap"
                );
                let bytes = b64.decode(data["data"].as_str().unwrap()).unwrap();
                sent += bytes.len();
                got.extend_from_slice(&bytes);
            }
        }
        let (last, data) = evs.last().unwrap();
        if last == "exit" {
            break;
        }
        assert_eq!(last, "ack_required");
        assert!(
            ((1 << 20)..(1 << 20) + (128 << 10)).contains(&sent),
            "{sent} unacknowledged bytes"
        );
        assert_eq!(data["stdout_offset"].as_u64(), Some(got.len() as u64));
        resumes += 1;
        let resume = api
            .json(
                Method::POST,
                &format!("/dp/{}/execute/stream/resume", sb.id),
                &format!(
                    r#"{{"command_id": "big", "stdout_offset": {}, "stderr_offset": 0}}"#,
                    got.len()
                ),
            )
            .await;
        assert_eq!(resume.status, StatusCode::OK);
        body = resume.body;
    }
    assert_eq!(got.len(), total);
    assert!(got.chunks(4).all(|c| c == b"abcd"));
    assert!(resumes >= 2, "{resumes} resumes");
    let unknown = api
        .json(
            Method::POST,
            &format!("/dp/{}/execute/stream/resume", sb.id),
            r#"{"command_id": "nope"}"#,
        )
        .await;
    assert_eq!(
        unknown.error(),
        (StatusCode::NOT_FOUND, "CommandNotFound".into())
    );
}

#[tokio::test]
async fn files_upload_download_ranges_and_glob() {
    let api = api().await;
    let sb = api.sandbox("files").await;
    let boundary = "XyZ";
    let form = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"f\"\r\n\r\nhello world\r\n--{boundary}--\r\n"
    );
    let up = api
        .send(
            api.req(
                Method::POST,
                &format!("/dp/{}/upload?path=/srv/a.txt", sb.id),
            )
            .header(
                header::CONTENT_TYPE,
                format!("multipart/form-data; boundary={boundary}"),
            )
            .body(Body::from(form))
            .unwrap(),
        )
        .await;
    assert_eq!(
        up.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&up.body)
    );
    let down = api
        .send(
            api.req(
                Method::GET,
                &format!("/dp/{}/download?path=/srv/a.txt", sb.id),
            )
            .body(Body::empty())
            .unwrap(),
        )
        .await;
    assert_eq!(
        (down.status, down.body.as_slice()),
        (StatusCode::OK, &b"hello world"[..])
    );
    let etag = down.headers[header::ETAG].clone();
    let part = api
        .send(
            api.req(
                Method::GET,
                &format!("/dp/{}/download?path=/srv/a.txt", sb.id),
            )
            .header(header::RANGE, "bytes=6-")
            .body(Body::empty())
            .unwrap(),
        )
        .await;
    assert_eq!(
        (part.status, part.body.as_slice()),
        (StatusCode::PARTIAL_CONTENT, &b"world"[..])
    );
    let same = api
        .send(
            api.req(
                Method::GET,
                &format!("/dp/{}/download?path=/srv/a.txt", sb.id),
            )
            .header(header::IF_NONE_MATCH, etag)
            .body(Body::empty())
            .unwrap(),
        )
        .await;
    assert_eq!(same.status, StatusCode::NOT_MODIFIED);
    let missing = api
        .send(
            api.req(
                Method::GET,
                &format!("/dp/{}/download?path=/srv/none", sb.id),
            )
            .body(Body::empty())
            .unwrap(),
        )
        .await;
    assert_eq!(
        missing.error(),
        (StatusCode::NOT_FOUND, "FileNotFound".into())
    );
    let dir = api
        .send(
            api.req(Method::GET, &format!("/dp/{}/download?path=/srv", sb.id))
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(dir.error(), (StatusCode::BAD_REQUEST, "ReadError".into()));
    let glob = api
        .json(
            Method::POST,
            &format!("/dp/{}/glob", sb.id),
            r#"{"pattern": "*.txt", "path": "/srv"}"#,
        )
        .await;
    assert_eq!(glob.status, StatusCode::OK);
    let found: SearchResponse<GlobMatch> = glob.json();
    assert_eq!(found.matches.len(), 1);
    assert_eq!(found.matches[0].path, "/srv/a.txt");
    assert_eq!(found.matches[0].size_bytes, 11);
    assert!(!found.truncated);
    let empty = api
        .json(
            Method::POST,
            &format!("/dp/{}/grep", sb.id),
            r#"{"pattern": ""}"#,
        )
        .await;
    assert_eq!(
        empty.error(),
        (StatusCode::UNPROCESSABLE_ENTITY, "ValidationError".into())
    );
}

// Under `router/`, so Cargo does not build it as a test binary of its own.
#[path = "router/secrets.rs"]
mod secrets;
#[path = "router/service.rs"]
mod service;
#[path = "router/snapshots.rs"]
mod snapshots;
#[path = "router/tunnel.rs"]
mod tunnel;

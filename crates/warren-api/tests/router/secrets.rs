//! `/api/v1/workspaces/current/secrets`: the JSON the SDK's generated client reads, the statuses,
//! and no value in any answer.

use serde_json::{Value, json};

use super::*;

const SECRETS: &str = "/api/v1/workspaces/current/secrets";
const VALUE: &str = "sk-never-returned-0123456789";

impl Api {
    async fn put_secret(&self, key: &str, body: Value) -> Answer {
        let a = self
            .json(Method::PUT, &format!("{SECRETS}/{key}"), &body.to_string())
            .await;
        assert!(
            !String::from_utf8_lossy(&a.body).contains(VALUE),
            "a PUT answer carries the value"
        );
        a
    }

    async fn list_secrets(&self, query: &str) -> Answer {
        let a = self
            .send(
                self.req(Method::GET, &format!("{SECRETS}{query}"))
                    .body(Body::empty())
                    .unwrap(),
            )
            .await;
        assert!(!String::from_utf8_lossy(&a.body).contains(VALUE));
        a
    }
}

fn body(a: &Answer) -> Value {
    a.json()
}

#[tokio::test]
async fn secrets_are_upserted_listed_and_deleted_in_the_sdk_shape() {
    let api = api().await;
    let a = api
        .put_secret("OPENAI_API_KEY", json!({"value": VALUE}))
        .await;
    assert_eq!(
        a.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&a.body)
    );
    assert_eq!(
        body(&a),
        json!({
            "key": "OPENAI_API_KEY",
            "configs": [{
                "host_pattern": "api.openai.com",
                "source": "DEFAULT",
                "header_name": "Authorization",
                "header_value_template": "Bearer {value}",
            }],
        })
    );

    let a = api
        .put_secret(
            "MY_TOKEN",
            json!({"value": VALUE, "configs": [
                {"host_pattern": "*.Example.com", "header_name": "X-Token"},
            ]}),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK);
    let v = body(&a);
    let c = &v["configs"][0];
    assert_eq!(c["host_pattern"], "*.example.com");
    assert_eq!(c["source"], "CUSTOM");
    assert_eq!(c["header_name"], "X-Token");
    assert_eq!(c["header_value_template"], Value::Null);
    for field in ["id", "created_at", "updated_at"] {
        assert!(c[field].is_string(), "{field}: {v}");
    }
    let t = c["created_at"].as_str().unwrap();
    assert!(
        t.len() > 20 && t.contains('T') && t.ends_with('Z'),
        "RFC 3339: {t}"
    );

    // Without include_configs, keys only.
    for query in ["", "?include_configs=false"] {
        let a = api.list_secrets(query).await;
        assert_eq!(a.status, StatusCode::OK);
        assert_eq!(
            body(&a),
            json!([{"key": "MY_TOKEN"}, {"key": "OPENAI_API_KEY"}]),
            "{query}"
        );
    }
    let a = api.list_secrets("?include_configs=true").await;
    let v = body(&a);
    assert_eq!(v[0]["configs"][0]["host_pattern"], "*.example.com");
    assert_eq!(v[1]["configs"][0]["source"], "DEFAULT");
    let a = api.list_secrets("?include_configs=maybe").await;
    assert_eq!(
        a.error(),
        (StatusCode::BAD_REQUEST, "InvalidRequest".into())
    );

    // An upsert without a value keeps it; an empty configs list clears the custom hosts.
    let a = api.put_secret("MY_TOKEN", json!({"configs": []})).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(body(&a), json!({"key": "MY_TOKEN", "configs": []}));

    let del = |key: &str| {
        api.req(Method::DELETE, &format!("{SECRETS}/{key}"))
            .body(Body::empty())
            .unwrap()
    };
    let a = api.send(del("MY_TOKEN")).await;
    assert_eq!(a.status, StatusCode::NO_CONTENT);
    assert!(a.body.is_empty());
    let a = api.send(del("MY_TOKEN")).await;
    assert_eq!(a.status, StatusCode::NO_CONTENT, "a missing key succeeds");
    let a = api.list_secrets("").await;
    assert_eq!(body(&a), json!([{"key": "OPENAI_API_KEY"}]));

    // Neither the audit log nor any other answer carries the value.
    let a = api
        .send(
            api.req(Method::GET, "/api/v2/sandboxes/audit")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    let text = String::from_utf8_lossy(&a.body);
    assert!(
        text.contains("secret.set") && text.contains("secret.delete"),
        "{text}"
    );
    assert!(!text.contains(VALUE));
}

#[tokio::test]
async fn bad_secret_requests_get_400s() {
    let api = api().await;
    let a = api.put_secret("NEW", json!({})).await;
    assert_eq!(
        a.error(),
        (StatusCode::BAD_REQUEST, "InvalidRequest".into())
    );
    let msg = a.json::<ErrorBody>().detail.message;
    assert!(msg.contains("value is required to create"), "{msg}");
    let a = api.put_secret("NEW", json!({"value": null})).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "null is omitted");

    for (key, body) in [
        ("9LIVES", json!({"value": "v"})),
        ("K", json!({"value": "a\nb"})),
        ("K", json!({"value": "x".repeat(64 * 1024 + 1)})),
        (
            "K",
            json!({"value": "v", "configs": [{"host_pattern": "https://a.com"}]}),
        ),
        (
            "K",
            json!({"value": "v", "configs": [{"host_pattern": "a.com:8443"}]}),
        ),
        (
            "K",
            json!({"value": "v", "configs": [{"host_pattern": "a.*.com"}]}),
        ),
        (
            "K",
            json!({"value": "v", "configs": [{"host_pattern": "a.com", "header_name": "Bad Name"}]}),
        ),
        (
            "K",
            json!({"value": "v", "configs": [
                {"host_pattern": "a.com", "header_value_template": "Bearer"}
            ]}),
        ),
        (
            "K",
            json!({"value": "v", "configs": (0..33)
                .map(|i| json!({"host_pattern": format!("h{i}.com")}))
                .collect::<Vec<_>>()}),
        ),
    ] {
        let a = api.put_secret(key, body.clone()).await;
        assert_eq!(
            a.error(),
            (StatusCode::BAD_REQUEST, "InvalidRequest".into()),
            "{key} {body}"
        );
    }
    // Unknown fields are refused like every other body's.
    let a = api
        .put_secret("K", json!({"value": "v", "secret": "x"}))
        .await;
    assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY);
    let a = api
        .send(
            api.req(Method::DELETE, &format!("{SECRETS}/bad%20key"))
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(
        a.error(),
        (StatusCode::BAD_REQUEST, "InvalidRequest".into())
    );
    assert_eq!(
        body(&api.list_secrets("").await),
        json!([]),
        "nothing stored"
    );
}

#[tokio::test]
async fn only_admins_write_secrets_and_keys_are_required() {
    let api = api().await;
    let a = api
        .json(Method::POST, "/api/v2/sandboxes/keys", r#"{"name": "dev"}"#)
        .await;
    assert_eq!(a.status, StatusCode::CREATED);
    let dev_key = a.json::<Value>()["key"].as_str().unwrap().to_owned();
    api.put_secret("TOKEN", json!({"value": VALUE})).await;

    let as_dev = |method: Method, uri: String, body: &str| {
        Request::builder()
            .method(method)
            .uri(uri)
            .header("x-api-key", &dev_key)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body.to_owned()))
            .unwrap()
    };
    let a = api
        .send(as_dev(
            Method::PUT,
            format!("{SECRETS}/TOKEN"),
            r#"{"value": "x"}"#,
        ))
        .await;
    assert_eq!(a.error(), (StatusCode::FORBIDDEN, "Forbidden".into()));
    let a = api
        .send(as_dev(Method::DELETE, format!("{SECRETS}/TOKEN"), ""))
        .await;
    assert_eq!(a.error(), (StatusCode::FORBIDDEN, "Forbidden".into()));
    let a = api
        .send(as_dev(
            Method::GET,
            format!("{SECRETS}?include_configs=true"),
            "",
        ))
        .await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.json::<Value>()[0]["key"], "TOKEN");
    assert!(!String::from_utf8_lossy(&a.body).contains(VALUE));

    let anon = Request::get(SECRETS).body(Body::empty()).unwrap();
    assert_eq!(api.send(anon).await.status, StatusCode::UNAUTHORIZED);
}

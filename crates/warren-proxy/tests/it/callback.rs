//! Proxy callbacks end to end: the proxy asks a (loopback) HTTPS service for headers, with a
//! signature the service can check against the proxy's public key.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use tokio_rustls::TlsAcceptor;
use warren_proxy::ca::CaStore;
use warren_proxy::inject::{SecretValue, Secrets};
use warren_proxy::proxy::{CallbackSigner, ProxyConfig, SIGNATURE_HEADER, upstream_tls};

use crate::harness::{Harness, TestCert, Upstream, connect, read_reply, send};

/// What the callback service received: (signature, body, its own auth header).
type Calls = Arc<Mutex<Vec<(String, Vec<u8>, Option<String>)>>>;

/// An HTTPS service that records each call and answers `answer`.
async fn service(cert: &TestCert, answer: Value) -> (Upstream, Calls) {
    let calls: Calls = Arc::default();
    let acceptor = TlsAcceptor::from(cert.server_config());
    let (record, answer) = (calls.clone(), Arc::new(answer));
    let upstream = Upstream::spawn(move |stream| {
        let (acceptor, record, answer) = (acceptor.clone(), record.clone(), answer.clone());
        async move {
            let Ok(tls) = acceptor.accept(stream).await else {
                return;
            };
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let (record, answer) = (record.clone(), answer.clone());
                async move {
                    let sig = req.headers()[SIGNATURE_HEADER].to_str().unwrap().to_owned();
                    let auth = req
                        .headers()
                        .get("x-callback-auth")
                        .map(|v| v.to_str().unwrap().to_owned());
                    let body = req.into_body().collect().await.unwrap().to_bytes().to_vec();
                    record.lock().unwrap().push((sig, body, auth));
                    Ok::<_, hyper::Error>(Response::new(Full::new(Bytes::from(answer.to_string()))))
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tls), service)
                .await;
        }
    })
    .await;
    (upstream, calls)
}

fn secrets() -> Arc<dyn Secrets> {
    Arc::new(|key: &str| {
        (key == "CB_AUTH").then(|| SecretValue {
            value: "cb-secret".into(),
            hosts: vec![],
        })
    })
}

struct Setup {
    harness: Harness,
    target: Upstream,
    callback: Upstream,
    calls: Calls,
    signer: Arc<CallbackSigner>,
    ca_pem: String,
    _dir: tempfile::TempDir,
}

async fn setup(callback: Value, answer: Value) -> Setup {
    let cert = TestCert::new();
    let target = Upstream::https(&cert).await;
    let (cb, calls) = service(&cert, answer).await;
    let dir = tempfile::tempdir().unwrap();
    let signer = Arc::new(
        CallbackSigner::load_or_create(&dir.path().join("cb.pem"), "http://warren.test").unwrap(),
    );
    let listeners = ProxyConfig {
        upstream_tls: Some(upstream_tls(cert.pem().as_bytes()).unwrap()),
        callback_signer: Some(signer.clone()),
        ..ProxyConfig::default()
    };
    let harness = Harness::start_with(listeners, &[target.port(), cb.port()], json!({})).await;
    let ca = CaStore::open(dir.path().join("ca"))
        .unwrap()
        .ensure("sb-test")
        .unwrap();
    let mut callback = callback;
    callback["url"] = json!(format!("https://upstream.test:{}/cb?x=1", cb.port()));
    let pc = json!({
        "callbacks": [callback],
        "access_control": {"allow_list": [format!("upstream.test:{}", target.port()), format!("upstream.test:{}", cb.port())]},
    });
    harness.set_credentials(pc, secrets(), Some(ca.clone()));
    Setup {
        harness,
        target,
        callback: cb,
        calls,
        signer,
        ca_pem: ca.cert_pem().to_owned(),
        _dir: dir,
    }
}

async fn get(s: &Setup, path: &str) -> crate::harness::Reply {
    let target = format!("upstream.test:{}", s.target.port());
    let (stream, reply) = connect(s.harness.explicit, &target).await;
    assert_eq!(reply.status, 200);
    let mut tls = crate::inject::tls(stream, &s.ca_pem).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: upstream.test\r\nConnection: close\r\n\r\n");
    tls.write_all(req.as_bytes()).await.unwrap();
    read_reply(&mut tls, false).await
}

#[tokio::test]
async fn a_destination_callback_gives_the_headers_and_signs_its_call() {
    let s = setup(
        json!({"match_hosts": ["upstream.test"], "ttl_seconds": 60,
               "request_headers": [{"name": "X-Callback-Auth", "type": "workspace_secret", "value": "CB_AUTH"}]}),
        json!({"headers": {"Authorization": "Bearer from-callback"}}),
    )
    .await;
    let reply = get(&s, "/a").await;
    assert!(
        reply.body.contains("authorization: Bearer from-callback"),
        "{}",
        reply.body
    );
    // Kept for its ttl: a second request does not call again.
    let reply = get(&s, "/b").await;
    assert!(
        reply.body.contains("authorization: Bearer from-callback"),
        "{}",
        reply.body
    );
    let calls = s.calls.lock().unwrap().clone();
    assert_eq!(calls.len(), 1, "one call within the ttl");
    let (sig, body, auth) = &calls[0];
    assert_eq!(auth.as_deref(), Some("cb-secret"));
    let body: Value = serde_json::from_slice(body).unwrap();
    assert_eq!(body["host"], "upstream.test");
    assert_eq!(body["port"], s.target.port());
    assert_eq!(body["identity"]["sandbox_id"], "sb-test");
    assert!(body.get("request").is_none());
    // The signature verifies against the published key, for this URL, over this body.
    let jwk = &s.signer.jwks()["keys"][0];
    let key = DecodingKey::from_ed_components(jwk["x"].as_str().unwrap()).unwrap();
    let url = format!("https://upstream.test:{}/cb?x=1", s.callback.port());
    let mut validation = Validation::new(Algorithm::EdDSA);
    validation.set_audience(&[url]);
    validation.set_issuer(&["http://warren.test"]);
    let claims = jsonwebtoken::decode::<Value>(sig, &key, &validation)
        .unwrap()
        .claims;
    assert_eq!(claims["sub"], "langsmith-sandbox-callback");
    assert_eq!(
        claims["body_sha256"],
        format!("{:x}", Sha256::digest(&calls[0].1))
    );
    assert_eq!(
        jsonwebtoken::decode_header(sig).unwrap().kid.as_deref(),
        jwk["kid"].as_str()
    );
}

#[tokio::test]
async fn a_full_request_callback_sees_every_request() {
    let s = setup(
        json!({"match_hosts": ["upstream.test"], "ttl_seconds": 60, "full_request": true}),
        json!({"headers": {"X-Token": "t"}}),
    )
    .await;
    get(&s, "/one?q=1").await;
    get(&s, "/two").await;
    let calls = s.calls.lock().unwrap().clone();
    assert_eq!(calls.len(), 2);
    let first: Value = serde_json::from_slice(&calls[0].1).unwrap();
    assert_eq!(first["request"]["path"], "/one");
    assert_eq!(first["request"]["query"], "q=1");
    assert_eq!(first["request"]["method"], "GET");
    assert_eq!(first["request"]["body_truncated"], false);
}

#[tokio::test]
async fn an_attribution_callback_must_supply_its_headers() {
    let cert = TestCert::new();
    let web = Upstream::http().await;
    let dir = tempfile::tempdir().unwrap();
    let signer = Arc::new(
        CallbackSigner::load_or_create(&dir.path().join("cb.pem"), "http://warren.test").unwrap(),
    );
    let listeners = ProxyConfig {
        upstream_tls: Some(upstream_tls(cert.pem().as_bytes()).unwrap()),
        callback_signer: Some(signer),
        ..ProxyConfig::default()
    };
    for (answer, ok) in [
        (
            json!({"headers": {"X-Run-Id": "run-7", "X-Other": "no"}}),
            true,
        ),
        (json!({"headers": {"X-Other": "1"}}), false),
    ] {
        let (cb, calls) = service(&cert, answer).await;
        let harness =
            Harness::start_with(listeners.clone(), &[web.port(), cb.port()], json!({})).await;
        let pc = json!({
            "callbacks": [{"attribution_headers": ["X-Run-Id"], "ttl_seconds": 60,
                            "url": format!("https://upstream.test:{}/cb", cb.port())}],
            "access_control": {"allow_list": [format!("upstream.test:{}", web.port()), format!("upstream.test:{}", cb.port())]},
        });
        harness.set_credentials(pc, secrets(), None);
        let req = format!(
            "GET http://upstream.test:{}/p HTTP/1.1\r\nHost: x\r\n\r\n",
            web.port()
        );
        let reply = send(harness.explicit, &req).await;
        assert_eq!(calls.lock().unwrap().len(), 1);
        if ok {
            assert!(reply.body.contains("x-run-id: run-7"), "{}", reply.body);
            assert!(
                !reply.body.contains("x-other"),
                "only the named headers: {}",
                reply.body
            );
        } else {
            assert_eq!(reply.status, 403, "{}", reply.body);
            assert!(reply.body.contains("x-run-id"), "{}", reply.body);
        }
    }
}

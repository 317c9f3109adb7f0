//! Credential injection end to end: TLS to a covered host is intercepted with the sandbox's
//! CA and the request reaches the upstream with the secret header; everything else is not.

use std::sync::Arc;

use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{self, RootCertStore};
use warren_proxy::ca::{CaStore, SandboxCa};
use warren_proxy::inject::{SecretValue, Secrets};
use warren_proxy::proxy::{ProxyConfig, upstream_tls};

use crate::harness::{Harness, Reply, TestCert, Upstream, connect, read_reply, send};

const SECRET: &str = "s3cr3t-9f1c";

fn secrets() -> Arc<dyn Secrets> {
    Arc::new(|key: &str| {
        (key == "TOKEN").then(|| SecretValue {
            value: SECRET.to_owned(),
            hosts: vec![],
        })
    })
}

fn rules(port: u16, extra: Value) -> Value {
    let mut rule = json!({
        "name": "api",
        "match_hosts": ["upstream.test"],
        "match_port": port,
        "headers": [{"name": "Authorization", "type": "workspace_secret", "value": "Bearer {TOKEN}"}],
    });
    rule.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    json!({
        "rules": [rule],
        "access_control": {"allow_list": [format!("upstream.test:{port}")]},
    })
}

struct Setup {
    harness: Harness,
    upstream: Upstream,
    upstream_cert: TestCert,
    ca: Arc<SandboxCa>,
    _dir: tempfile::TempDir,
}

async fn setup(extra: Value) -> Setup {
    let upstream_cert = TestCert::new();
    let upstream = Upstream::https(&upstream_cert).await;
    let listeners = ProxyConfig {
        transparent_tls_port: upstream.port(),
        upstream_tls: Some(upstream_tls(upstream_cert.pem().as_bytes()).unwrap()),
        ..ProxyConfig::default()
    };
    let harness = Harness::start_with(listeners, &[upstream.port()], json!({})).await;
    let dir = tempfile::tempdir().unwrap();
    let ca = CaStore::open(dir.path())
        .unwrap()
        .ensure("sb-test")
        .unwrap();
    harness.set_credentials(rules(upstream.port(), extra), secrets(), Some(ca.clone()));
    Setup {
        harness,
        upstream,
        upstream_cert,
        ca,
        _dir: dir,
    }
}

/// TLS over `stream`, trusting only `ca_pem`.
pub(crate) async fn tls<S>(
    stream: S,
    ca_pem: &str,
) -> std::io::Result<tokio_rustls::client::TlsStream<S>>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap())
        .unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let name = ServerName::try_from("upstream.test").unwrap();
    TlsConnector::from(Arc::new(config))
        .connect(name, stream)
        .await
}

async fn get_via_connect(s: &Setup, request: &str) -> Reply {
    let target = format!("upstream.test:{}", s.upstream.port());
    let (stream, reply) = connect(s.harness.explicit, &target).await;
    assert_eq!(reply.status, 200);
    let mut tls = tls(stream, s.ca.cert_pem())
        .await
        .expect("the sandbox CA is trusted");
    tls.write_all(request.as_bytes()).await.unwrap();
    read_reply(&mut tls, false).await
}

#[tokio::test]
async fn connect_to_a_covered_host_gets_the_secret_header() {
    let s = setup(json!({})).await;
    let reply = get_via_connect(
        &s,
        "GET /v1/x HTTP/1.1\r\nHost: upstream.test\r\nAuthorization: Bearer fake\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert!(reply.body.starts_with("GET /v1/x\n"), "{}", reply.body);
    assert!(
        reply
            .body
            .contains(&format!("authorization: Bearer {SECRET}\n")),
        "{}",
        reply.body
    );
    assert!(
        !reply.body.contains("fake"),
        "the sandbox's own header is replaced"
    );
    let event = s.harness.event(1).await;
    assert!(
        event.rule.contains("credentials from rule api"),
        "{}",
        event.rule
    );
    assert!(!event.rule.contains(SECRET));
    assert!(event.bytes_up > 0 && event.bytes_down > 0);
}

#[tokio::test]
async fn transparent_tls_to_a_covered_host_is_intercepted_too() {
    let s = setup(json!({})).await;
    let stream = TcpStream::connect(s.harness.tls).await.unwrap();
    let mut tls = tls(stream, s.ca.cert_pem()).await.unwrap();
    tls.write_all(b"GET / HTTP/1.1\r\nHost: upstream.test\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let reply = read_reply(&mut tls, false).await;
    assert!(
        reply
            .body
            .contains(&format!("authorization: Bearer {SECRET}")),
        "{}",
        reply.body
    );
}

#[tokio::test]
async fn non_canonical_paths_do_not_match_a_path_scoped_rule() {
    let s = setup(json!({"match_paths": ["/secret", "/v1/*"]})).await;
    for path in ["/secret", "/v1/runs"] {
        let req =
            format!("GET {path} HTTP/1.1\r\nHost: upstream.test\r\nConnection: close\r\n\r\n");
        let reply = get_via_connect(&s, &req).await;
        assert!(reply.body.contains(SECRET), "{path}: {}", reply.body);
    }
    for path in [
        "/a/../secret",
        "/a/%2e%2e/secret",
        "/v1/%2E%2E/secret",
        "/v1//x",
        "/v1/./x",
    ] {
        let req =
            format!("GET {path} HTTP/1.1\r\nHost: upstream.test\r\nConnection: close\r\n\r\n");
        let reply = get_via_connect(&s, &req).await;
        assert_eq!(reply.status, 200, "{path}: {}", reply.body);
        assert!(
            reply.body.starts_with(&format!("GET {path}\n")),
            "{}",
            reply.body
        );
        assert!(
            !reply.body.contains(SECRET),
            "{path} must not get the secret: {}",
            reply.body
        );
    }
}

#[tokio::test]
async fn a_request_for_another_host_on_an_intercepted_connection_is_refused() {
    let s = setup(json!({})).await;
    let reply = get_via_connect(
        &s,
        "GET / HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(reply.status, 421, "{}", reply.body);
    assert!(!reply.body.contains(SECRET));
}

#[tokio::test]
async fn every_host_the_request_names_must_be_the_connections() {
    let s = setup(json!({})).await;
    let port = s.upstream.port();
    for request in [
        format!("GET https://upstream.test:{port}/a HTTP/1.1\r\nHost: evil.example\r\n\r\n"),
        "GET /a HTTP/1.1\r\nHost: upstream.test\r\nHost: evil.example\r\n\r\n".to_owned(),
        format!(
            "GET /a HTTP/1.1\r\nHost: upstream.test:{}\r\n\r\n",
            port + 1
        ),
    ] {
        let reply = get_via_connect(&s, &request).await;
        assert_eq!(reply.status, 421, "{request}: {}", reply.body);
        assert!(!reply.body.contains(SECRET));
    }
    // Without a Host header the upstream still gets exactly one, naming the connection's host.
    let reply = get_via_connect(&s, "GET /a HTTP/1.1\r\nConnection: close\r\n\r\n").await;
    assert!(
        reply
            .body
            .contains(&format!("host: upstream.test:{port}\n")),
        "{}",
        reply.body
    );
}

#[tokio::test]
async fn trace_is_refused_where_credentials_are_added() {
    let s = setup(json!({})).await;
    let reply = get_via_connect(&s, "TRACE / HTTP/1.1\r\nHost: upstream.test\r\n\r\n").await;
    assert_eq!(reply.status, 405, "{}", reply.body);
    assert!(!reply.body.contains(SECRET));
}

#[tokio::test]
async fn a_rule_change_applies_to_the_next_request_on_an_open_connection() {
    let s = setup(json!({})).await;
    let target = format!("upstream.test:{}", s.upstream.port());
    let (stream, _) = connect(s.harness.explicit, &target).await;
    let mut tls = tls(stream, s.ca.cert_pem()).await.unwrap();
    let request = b"GET / HTTP/1.1\r\nHost: upstream.test\r\n\r\n";
    tls.write_all(request).await.unwrap();
    let reply = read_reply(&mut tls, false).await;
    assert!(reply.body.contains(SECRET), "{}", reply.body);
    // The rule now covers another path only: the same connection's next request gets nothing.
    let narrowed = rules(s.upstream.port(), json!({"match_paths": ["/only"]}));
    s.harness
        .set_credentials(narrowed, secrets(), Some(s.ca.clone()));
    tls.write_all(request).await.unwrap();
    let reply = read_reply(&mut tls, false).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert!(!reply.body.contains(SECRET), "{}", reply.body);
}

#[tokio::test]
async fn a_missing_secret_refuses_the_request_instead_of_sending_it_bare() {
    let s = setup(json!({
        "headers": [{"name": "x-api-key", "type": "workspace_secret", "value": "GONE"}],
    }))
    .await;
    let reply = get_via_connect(&s, "GET / HTTP/1.1\r\nHost: upstream.test\r\n\r\n").await;
    assert_eq!(reply.status, 403, "{}", reply.body);
    assert!(reply.body.contains("GONE"), "{}", reply.body);
    assert_eq!(
        s.upstream.accepts(),
        1,
        "the TCP connection was opened at CONNECT"
    );
}

#[tokio::test]
async fn an_upstream_the_proxy_cannot_verify_gets_no_secret() {
    let s = setup(json!({})).await;
    // A proxy whose upstream trust does not include the upstream's own CA.
    let other = TestCert::new();
    let listeners = ProxyConfig {
        upstream_tls: Some(upstream_tls(other.pem().as_bytes()).unwrap()),
        ..ProxyConfig::default()
    };
    let harness = Harness::start_with(listeners, &[s.upstream.port()], json!({})).await;
    harness.set_credentials(
        rules(s.upstream.port(), json!({})),
        secrets(),
        Some(s.ca.clone()),
    );
    let target = format!("upstream.test:{}", s.upstream.port());
    let (stream, _) = connect(harness.explicit, &target).await;
    let mut tls = tls(stream, s.ca.cert_pem()).await.unwrap();
    tls.write_all(b"GET / HTTP/1.1\r\nHost: upstream.test\r\n\r\n")
        .await
        .unwrap();
    let reply = read_reply(&mut tls, false).await;
    assert_eq!(reply.status, 502, "{}", reply.body);
    assert!(
        reply.body.contains("TLS with the upstream failed"),
        "{}",
        reply.body
    );
}

#[tokio::test]
async fn hosts_no_rule_covers_are_spliced_untouched() {
    let s = setup(json!({"match_port": 1})).await;
    // An attribution rule covers no host: it asks for no interception (as the SDK documents).
    let mut pc = rules(s.upstream.port(), json!({"match_port": 1}));
    pc["rules"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "attr", "type": "attribution",
        "headers": [{"name": "X-Agent", "type": "plaintext", "value": "warren-test"}]}));
    s.harness.set_credentials(pc, secrets(), Some(s.ca.clone()));
    // The rule covers port 1 only: this connection is passed through, so the client's TLS
    // session is with the upstream itself (its own certificate verifies, the CA's would not).
    let target = format!("upstream.test:{}", s.upstream.port());
    let (stream, _) = connect(s.harness.explicit, &target).await;
    assert!(
        tls(stream, s.ca.cert_pem()).await.is_err(),
        "not intercepted"
    );
    let (stream, _) = connect(s.harness.explicit, &target).await;
    let mut direct = tls(stream, s.upstream_cert.pem()).await.unwrap();
    direct
        .write_all(b"GET / HTTP/1.1\r\nHost: upstream.test\r\nAuthorization: mine\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let reply = read_reply(&mut direct, false).await;
    assert!(reply.body.contains("authorization: mine"), "{}", reply.body);
    assert!(!reply.body.contains("x-agent"), "{}", reply.body);
}

#[tokio::test]
async fn plain_http_requests_get_headers_unless_https_only() {
    let upstream = Upstream::http().await;
    let harness = Harness::start(&[upstream.port()], upstream.port(), 443, json!({})).await;
    let dir = tempfile::tempdir().unwrap();
    let ca = CaStore::open(dir.path())
        .unwrap()
        .ensure("sb-test")
        .unwrap();
    let attribution = json!({"name": "attr", "type": "attribution",
        "headers": [{"name": "X-Agent", "type": "plaintext", "value": "warren-test"}]});
    let mut pc = rules(upstream.port(), json!({}));
    pc["rules"]
        .as_array_mut()
        .unwrap()
        .push(attribution.clone());
    harness.set_credentials(pc, secrets(), Some(ca.clone()));
    let req = format!(
        "GET http://upstream.test:{}/p HTTP/1.1\r\nHost: x\r\n\r\n",
        upstream.port()
    );
    let reply = send(harness.explicit, &req).await;
    assert!(
        reply
            .body
            .contains(&format!("authorization: Bearer {SECRET}")),
        "{}",
        reply.body
    );
    assert!(
        reply.body.contains("x-agent: warren-test"),
        "{}",
        reply.body
    );
    let mut pc = rules(upstream.port(), json!({"match_scheme": "https"}));
    pc["rules"].as_array_mut().unwrap().push(attribution);
    harness.set_credentials(pc, secrets(), Some(ca));
    let reply = send(harness.explicit, &req).await;
    assert!(!reply.body.contains(SECRET), "{}", reply.body);
    assert!(
        reply.body.contains("x-agent: warren-test"),
        "attribution still applies"
    );
}

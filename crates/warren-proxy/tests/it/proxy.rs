//! The proxy listeners end to end: allowed traffic round-trips, refused traffic gets a
//! refusal and never reaches the upstream.

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use warren_proxy::events::Via;
use warren_proxy::policy::Decision;

use std::time::Duration;

use warren_proxy::proxy::ProxyConfig;

use crate::harness::{Harness, SANDBOX, TestCert, Upstream, closes, connect, send};

fn allow(entries: &[String]) -> serde_json::Value {
    json!({"access_control": {"allow_list": entries}})
}

#[tokio::test]
async fn connect_to_an_allowed_host_round_trips_bytes() {
    let echo = Upstream::echo().await;
    let target = format!("upstream.test:{}", echo.port());
    let h = Harness::start(
        &[echo.port()],
        80,
        443,
        allow(std::slice::from_ref(&target)),
    )
    .await;

    let (mut tunnel, reply) = connect(h.explicit, &target).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    tunnel.write_all(b"ping through the tunnel").await.unwrap();
    let mut back = [0u8; 23];
    tunnel.read_exact(&mut back).await.unwrap();
    assert_eq!(&back, b"ping through the tunnel");
    drop(tunnel);

    let event = h.event(1).await;
    assert_eq!(event.sandbox, SANDBOX);
    assert_eq!(event.via, Via::Connect);
    assert_eq!(
        (event.host.as_str(), event.port),
        ("upstream.test", echo.port())
    );
    assert_eq!(event.decision, Decision::Allow);
    assert_eq!(event.rule, format!("allow_list entry {target:?}"));
    assert_eq!(event.upstream, Some(echo.addr));
    assert_eq!((event.bytes_up, event.bytes_down), (23, 23));
    assert_eq!(echo.accepts(), 1);
}

#[tokio::test]
async fn absolute_form_get_goes_upstream_in_origin_form() {
    let web = Upstream::http().await;
    let host = format!("upstream.test:{}", web.port());
    let h = Harness::start(&[web.port()], 80, 443, allow(std::slice::from_ref(&host))).await;

    let request = format!(
        "GET http://UPSTREAM.test:{}/path?q=1 HTTP/1.1\r\nHost: spoofed.example\r\n\
         Proxy-Authorization: Basic c2VjcmV0\r\nProxy-Connection: keep-alive\r\n\
         Connection: close, x-hop\r\nX-Hop: 1\r\nX-Kept: yes\r\n\r\n",
        web.port()
    );
    let reply = send(h.explicit, &request).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert!(reply.body.starts_with("GET /path?q=1\n"), "{}", reply.body);
    assert!(
        reply.body.contains(&format!("host: {host}\n")),
        "{}",
        reply.body
    );
    assert!(reply.body.contains("x-kept: yes\n"), "{}", reply.body);
    for hop in [
        "proxy-authorization",
        "proxy-connection",
        "x-hop",
        "spoofed",
    ] {
        assert!(
            !reply.body.contains(hop),
            "{hop} reached the upstream: {}",
            reply.body
        );
    }
    let event = h.event(1).await;
    assert_eq!(event.via, Via::HttpProxy);
    assert_eq!(event.decision, Decision::Allow);
    assert!(event.bytes_up > 0 && event.bytes_down > 0, "{event:?}");
    assert_eq!(web.accepts(), 1);
}

#[tokio::test]
async fn transparent_http_is_routed_by_host() {
    let web = Upstream::http().await;
    let h = Harness::start(
        &[web.port()],
        web.port(),
        443,
        allow(&[format!("upstream.test:{}", web.port())]),
    )
    .await;

    let reply = send(
        h.http,
        "GET /x HTTP/1.1\r\nHost: upstream.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert!(reply.body.starts_with("GET /x\n"), "{}", reply.body);
    assert!(
        reply.body.contains("host: upstream.test\n"),
        "{}",
        reply.body
    );
    let event = h.event(1).await;
    assert_eq!(event.via, Via::TransparentHttp);
    assert_eq!(
        (event.host.as_str(), event.port),
        ("upstream.test", web.port())
    );
    assert_eq!(web.accepts(), 1);
}

#[tokio::test]
async fn transparent_tls_is_routed_by_sni() {
    let cert = TestCert::new();
    let tls = Upstream::tls(&cert).await;
    let h = Harness::start(
        &[tls.port()],
        80,
        tls.port(),
        allow(&[format!("upstream.test:{}", tls.port())]),
    )
    .await;

    let mut stream = cert.connect(h.tls, "upstream.test").await.unwrap();
    stream.write_all(b"hello\n").await.unwrap();
    let mut reply = String::new();
    stream.read_to_string(&mut reply).await.unwrap();
    assert_eq!(reply, "tls: hello\n");
    drop(stream);
    let event = h.event(1).await;
    assert_eq!(event.via, Via::TransparentTls);
    assert_eq!(event.host, "upstream.test");
    assert_eq!(event.decision, Decision::Allow);
    assert!(event.bytes_up > 0 && event.bytes_down > 0, "{event:?}");
    assert_eq!(tls.accepts(), 1);
}

/// Asserts a 403 naming the proxy, the target and `rule`, and its event.
async fn assert_refused(
    h: &Harness,
    n: usize,
    reply: crate::harness::Reply,
    target: &str,
    rule: &str,
) {
    assert_eq!(reply.status, 403, "{reply:?}");
    let want = format!("warren egress proxy refused {target}: {rule}\n");
    assert_eq!(reply.body, want);
    let event = h.event(n).await;
    assert_eq!(
        event.decision,
        Decision::Deny {
            rule: rule.to_owned()
        }
    );
    assert_eq!(event.rule, rule);
    assert_eq!(event.upstream, None);
}

#[tokio::test]
async fn refusals_get_403_and_never_reach_the_upstream() {
    let echo = Upstream::echo().await;
    let p = echo.port();
    let target = format!("upstream.test:{p}");
    let h = Harness::start(&[p], 80, 443, json!({"access_control": {
        "allow_list": [target, format!("[::1]:{p}"), format!("127.0.0.1:{p}"), "169.254.169.254"],
        "deny_list": ["upstream.test"],
    }}))
    .await;

    // deny_list wins over allow_list.
    let (_, reply) = connect(h.explicit, &target).await;
    assert_refused(&h, 1, reply, &target, r#"deny_list entry "upstream.test""#).await;

    // Not in allow_list.
    h.set_policy(allow(&[format!("other.test:{p}")]));
    let (_, reply) = connect(h.explicit, &target).await;
    assert_refused(
        &h,
        2,
        reply,
        &target,
        "not in allow_list (port 9 needs an entry naming host:9)"
            .replace('9', &p.to_string())
            .as_str(),
    )
    .await;

    // A port other than 80 and 443 without an allow_list entry naming it.
    h.set_policy(json!({}));
    let (_, reply) = connect(h.explicit, &target).await;
    let rule = format!("port {p} needs an allow_list entry naming host:{p}");
    assert_refused(&h, 3, reply, &target, &rule).await;

    // The metadata address, as a CONNECT target and as an absolute-form URL, whatever the
    // allow_list says.
    h.set_policy(allow(&[
        "169.254.169.254".to_owned(),
        "169.254.169.254:80".to_owned(),
    ]));
    let (_, reply) = connect(h.explicit, "169.254.169.254:80").await;
    assert_refused(
        &h,
        4,
        reply,
        "169.254.169.254:80",
        "169.254.169.254 is a cloud metadata address",
    )
    .await;
    let reply = send(
        h.explicit,
        "GET http://169.254.169.254/latest/meta-data/ HTTP/1.1\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_refused(
        &h,
        5,
        reply,
        "169.254.169.254:80",
        "169.254.169.254 is a cloud metadata address",
    )
    .await;

    // IPv6 loopback, even when listed.
    h.set_policy(allow(&[format!("[::1]:{p}")]));
    let (_, reply) = connect(h.explicit, &format!("[::1]:{p}")).await;
    assert_refused(
        &h,
        6,
        reply,
        &format!("[::1]:{p}"),
        "::1 is a loopback address (::1)",
    )
    .await;

    // localhost, by name, on every listener.
    h.set_policy(json!({}));
    let reply = send(
        h.http,
        "GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_refused(&h, 7, reply, "localhost:80", "localhost is the host itself").await;
    let reply = send(
        h.explicit,
        "GET http://localhost/ HTTP/1.1\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_refused(&h, 8, reply, "localhost:80", "localhost is the host itself").await;

    // A numeric name that C resolvers would read as 127.0.0.1.
    let reply = send(
        h.http,
        "GET / HTTP/1.1\r\nHost: 2130706433\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(reply.status, 403, "{reply:?}");

    assert_eq!(
        echo.accepts(),
        0,
        "a refused connection reached the upstream"
    );
}

#[tokio::test]
async fn a_name_resolving_to_loopback_is_refused_by_the_real_check() {
    let echo = Upstream::echo().await;
    let target = format!("rebind.test:{}", echo.port());
    // No loopback exemption at all.
    let h = Harness::start(&[], 80, 443, allow(std::slice::from_ref(&target))).await;
    let (_, reply) = connect(h.explicit, &target).await;
    let rule = "rebind.test resolves only to refused addresses (127.0.0.1 is a loopback address (127.0.0.0/8))";
    assert_refused(&h, 1, reply, &target, rule).await;
    // And a literal 127.0.0.1 too.
    h.set_policy(allow(&[format!("127.0.0.1:{}", echo.port())]));
    let (_, reply) = connect(h.explicit, &format!("127.0.0.1:{}", echo.port())).await;
    assert_eq!(reply.status, 403);
    assert_eq!(echo.accepts(), 0);
}

#[tokio::test]
async fn refused_transparent_tls_is_closed() {
    let cert = TestCert::new();
    let tls = Upstream::tls(&cert).await;
    let h = Harness::start(
        &[tls.port()],
        80,
        tls.port(),
        allow(&["other.test".to_owned()]),
    )
    .await;

    // The SNI names a host outside the allow_list: the proxy closes without answering, so
    // the handshake fails.
    assert!(cert.connect(h.tls, "upstream.test").await.is_err());
    let event = h.event(1).await;
    assert_eq!(event.via, Via::TransparentTls);
    assert!(matches!(event.decision, Decision::Deny { .. }), "{event:?}");

    // No SNI at all (an IP address is never sent as SNI).
    assert!(cert.connect(h.tls, "127.0.0.1").await.is_err());
    let event = h.event(2).await;
    assert_eq!(event.rule, "no SNI in the TLS ClientHello");

    // Not TLS.
    let mut stream = TcpStream::connect(h.tls).await.unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: upstream.test\r\n\r\n")
        .await
        .unwrap();
    assert!(closes(&mut stream).await);

    assert_eq!(tls.accepts(), 0);
}

#[tokio::test]
async fn unknown_sources_are_closed_without_an_answer() {
    let echo = Upstream::echo().await;
    let target = format!("upstream.test:{}", echo.port());
    let h = Harness::start(
        &[echo.port()],
        80,
        443,
        allow(std::slice::from_ref(&target)),
    )
    .await;
    h.table.remove(crate::harness::LOCAL);

    for addr in [h.explicit, h.http, h.tls] {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let request = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n");
        let _ = stream.write_all(request.as_bytes()).await;
        assert!(
            closes(&mut stream).await,
            "{addr} answered an unknown source"
        );
    }
    assert_eq!(h.event_count(), 0);
    assert_eq!(echo.accepts(), 0);
}

#[tokio::test]
async fn a_new_policy_applies_to_the_next_connection() {
    let echo = Upstream::echo().await;
    let target = format!("upstream.test:{}", echo.port());
    let h = Harness::start(
        &[echo.port()],
        80,
        443,
        allow(std::slice::from_ref(&target)),
    )
    .await;

    let (mut open, reply) = connect(h.explicit, &target).await;
    assert_eq!(reply.status, 200);
    h.set_policy(allow(&[]));
    let (_, reply) = connect(h.explicit, &target).await;
    assert_eq!(reply.status, 403);
    // The tunnel opened under the old policy keeps working.
    open.write_all(b"x").await.unwrap();
    let mut back = [0u8; 1];
    open.read_exact(&mut back).await.unwrap();
    assert_eq!(echo.accepts(), 1);
}

#[tokio::test]
async fn unreachable_upstreams_get_502() {
    // Bind then drop a listener, so its port refuses connections.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let target = format!("upstream.test:{port}");
    let h = Harness::start(&[port], 80, 443, allow(std::slice::from_ref(&target))).await;
    let (_, reply) = connect(h.explicit, &target).await;
    assert_eq!(reply.status, 502, "{reply:?}");
    assert!(
        reply
            .body
            .starts_with(&format!("warren egress proxy could not reach {target}: ")),
        "{}",
        reply.body
    );
    let event = h.event(1).await;
    assert_eq!(event.decision, Decision::Allow);
    assert!(event.error.is_some());

    // A name the resolver does not know.
    h.set_policy(json!({}));
    let reply = send(
        h.explicit,
        "GET http://missing.test/ HTTP/1.1\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(reply.status, 502, "{reply:?}");
}

#[tokio::test]
async fn malformed_requests_get_400() {
    let h = Harness::start(&[], 80, 443, json!({})).await;
    let reply = send(
        h.explicit,
        "GET /origin-form HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(reply.status, 400);
    let reply = send(h.http, "GET / HTTP/1.1\r\nConnection: close\r\n\r\n").await;
    assert_eq!(reply.status, 400);
    let reply = send(
        h.http,
        "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
    )
    .await;
    assert_eq!(reply.status, 405);
    // Headers beyond the limit.
    let big = format!(
        "GET http://example.com/ HTTP/1.1\r\nX-Big: {}\r\n\r\n",
        "a".repeat(100 * 1024)
    );
    let mut stream = TcpStream::connect(h.explicit).await.unwrap();
    let _ = stream.write_all(big.as_bytes()).await;
    let mut buf = Vec::new();
    let _ = stream.read_to_end(&mut buf).await;
    let text = String::from_utf8_lossy(&buf);
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 431"),
        "{text}"
    );
}

#[tokio::test]
async fn idle_tunnels_are_closed() {
    let echo = Upstream::echo().await;
    let target = format!("upstream.test:{}", echo.port());
    let config = ProxyConfig {
        idle_timeout: Duration::from_millis(300),
        ..ProxyConfig::default()
    };
    let h = Harness::start_with(config, &[echo.port()], allow(std::slice::from_ref(&target))).await;
    let (mut tunnel, reply) = connect(h.explicit, &target).await;
    assert_eq!(reply.status, 200);
    tunnel.write_all(b"x").await.unwrap();
    let mut back = [0u8; 1];
    tunnel.read_exact(&mut back).await.unwrap();
    assert!(closes(&mut tunnel).await);
    let event = h.event(1).await;
    assert_eq!(event.error.as_deref(), Some("idle timeout"));
    assert_eq!((event.bytes_up, event.bytes_down), (1, 1));
}

#[tokio::test]
async fn a_sandbox_at_its_connection_limit_is_turned_away() {
    let echo = Upstream::echo().await;
    let target = format!("upstream.test:{}", echo.port());
    let config = ProxyConfig {
        max_connections_per_sandbox: 1,
        ..ProxyConfig::default()
    };
    let h = Harness::start_with(config, &[echo.port()], allow(std::slice::from_ref(&target))).await;
    let (first, reply) = connect(h.explicit, &target).await;
    assert_eq!(reply.status, 200);
    // The open tunnel holds the sandbox's only slot.
    let mut second = TcpStream::connect(h.explicit).await.unwrap();
    assert!(closes(&mut second).await);
    drop(first);
    h.event(1).await;
    let (_, reply) = connect(h.explicit, &target).await;
    assert_eq!(reply.status, 200);
}

#[tokio::test]
async fn slow_clients_get_the_header_timeout() {
    let config = ProxyConfig {
        header_read_timeout: Duration::from_millis(300),
        ..ProxyConfig::default()
    };
    let h = Harness::start_with(config, &[], json!({})).await;
    for addr in [h.explicit, h.tls] {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(b"GET http://exa").await.unwrap();
        assert!(closes(&mut stream).await, "{addr} kept a slow client");
    }
}

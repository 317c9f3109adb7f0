//! Service URLs and download links through the router: minting in the wire shape, the auth
//! decisions of the service router (by path and by service host), the `__auth` cookie, grants,
//! and the download link's ranges, headers and expiry. The fake sandbox echoes on port 7 and
//! runs no HTTP server, so a request that passes auth gets the echo of its own bytes back,
//! which is not an HTTP answer: a 502 that says so, with the bytes counted both ways.

use warren_wire::service::{
    DownloadUrlResponse, ServiceGrantList, ServiceLoginResponse, ServiceUrlResponse,
};

use super::*;

impl Api {
    async fn mint(&self, sandbox: &str, body: &str) -> Answer {
        self.json(
            Method::POST,
            &format!("/api/v2/sandboxes/boxes/{sandbox}/service-url"),
            body,
        )
        .await
    }

    /// A request with no API key.
    async fn anon(&self, method: Method, uri: &str, headers: &[(&str, &str)]) -> Answer {
        let mut b = Request::builder().method(method).uri(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        self.send(b.body(Body::empty()).unwrap()).await
    }

    async fn metric(&self, line: &str) -> Option<u64> {
        let m = self
            .send(
                self.req(Method::GET, "/metrics")
                    .body(Body::empty())
                    .unwrap(),
            )
            .await;
        String::from_utf8(m.body)
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix(line)?.trim().parse().ok())
    }
}

const TOKEN: &str = "x-langsmith-sandbox-service-token";

#[tokio::test]
async fn a_service_url_is_minted_in_the_sdk_shape() {
    let api = api().await;
    let sb = api.sandbox("web").await;
    let a = api
        .mint("web", r#"{"port": 7, "expires_in_seconds": 60}"#)
        .await;
    assert_eq!(
        a.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&a.body)
    );
    let s: ServiceUrlResponse = a.json();
    assert_eq!(s.service_url, format!("http://warren.test/svc/{}/7", sb.id));
    assert_eq!(
        s.browser_url,
        format!("http://7-{}.svc.test/__auth?token={}", sb.id, s.token)
    );
    assert!(s.embed_url.is_none());
    // Whole seconds and `Z`: what Python 3.10's fromisoformat takes after the SDK's replace.
    assert_eq!(s.expires_at.len(), 20, "{}", s.expires_at);
    assert!(s.expires_at.ends_with('Z'));
    let bogus = api.mint("web", r#"{"port": 7, "access": "public"}"#).await;
    assert_eq!(bogus.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        bogus
            .json::<ErrorBody>()
            .detail
            .message
            .contains("restricted")
    );
    let embed = api
        .mint(
            "web",
            r#"{"port": 7, "embed_origins": ["https://app.example.com"]}"#,
        )
        .await
        .json::<ServiceUrlResponse>();
    assert!(embed.embed_url.unwrap().contains("/__embed#token="));
    let missing = api.mint("nope", r#"{"port": 7}"#).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn the_router_refuses_missing_tampered_foreign_and_revoked_tokens() {
    let api = api().await;
    let a = api.sandbox("a").await;
    let b = api.sandbox("b").await;
    let ta: ServiceUrlResponse = api.mint("a", r#"{"port": 7}"#).await.json();
    let tb: ServiceUrlResponse = api.mint("b", r#"{"port": 7}"#).await.json();
    let path = format!("/svc/{}/7/x", a.id);
    let none = api.anon(Method::GET, &path, &[]).await;
    assert_eq!(none.status, StatusCode::UNAUTHORIZED);
    assert!(String::from_utf8_lossy(&none.body).contains("missing service token"));
    let tampered = format!("{}x", ta.token);
    let bad = api.anon(Method::GET, &path, &[(TOKEN, &tampered)]).await;
    assert_eq!(bad.status, StatusCode::UNAUTHORIZED);
    let foreign = api.anon(Method::GET, &path, &[(TOKEN, &tb.token)]).await;
    assert_eq!(foreign.error(), (StatusCode::FORBIDDEN, "Forbidden".into()));
    let other_port = api
        .anon(
            Method::GET,
            &format!("/svc/{}/8/x", a.id),
            &[(TOKEN, &ta.token)],
        )
        .await;
    assert_eq!(other_port.status, StatusCode::FORBIDDEN);
    // By host: b's token on a's service host.
    let host = format!("7-{}.svc.test", a.id);
    let foreign = api
        .anon(Method::GET, "/x", &[("host", &host), (TOKEN, &tb.token)])
        .await;
    assert_eq!(foreign.status, StatusCode::FORBIDDEN);
    // The API's own routes are not served on a service host.
    let api_on_host = api
        .send(
            api.req(Method::GET, "/api/v2/sandboxes/boxes")
                .header("host", &host)
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(api_on_host.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        api.metric("warren_service_requests_total{outcome=\"refused\"}")
            .await,
        Some(6)
    );
    // Revoked: every token of the port is refused.
    let list: ServiceGrantList = api
        .send(
            api.req(Method::GET, "/api/v2/sandboxes/boxes/a/service-urls")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .json();
    assert_eq!(list.items.len(), 1);
    assert_eq!(
        (list.items[0].port, list.items[0].access.as_str()),
        (7, "token")
    );
    let del = api
        .send(
            api.req(
                Method::DELETE,
                "/api/v2/sandboxes/boxes/a/service-urls?port=7",
            )
            .body(Body::empty())
            .unwrap(),
        )
        .await;
    assert_eq!(del.status, StatusCode::NO_CONTENT);
    let revoked = api.anon(Method::GET, &path, &[(TOKEN, &ta.token)]).await;
    assert_eq!(revoked.status, StatusCode::FORBIDDEN);
    assert!(String::from_utf8_lossy(&revoked.body).contains("revoked"));
    let _ = b;
}

#[tokio::test]
async fn a_valid_token_reaches_the_port_by_path_host_and_cookie() {
    let api = api().await;
    let a = api.sandbox("a").await;
    let t: ServiceUrlResponse = api.mint("a", r#"{"port": 7}"#).await.json();
    let host = format!("7-{}.svc.test", a.id);
    let by_path = api
        .anon(
            Method::GET,
            &format!("/svc/{}/7/hello?q=1", a.id),
            &[(TOKEN, &t.token)],
        )
        .await;
    // The echo is not HTTP: auth passed, the bytes went to the port and came back.
    assert_eq!(
        by_path.status,
        StatusCode::BAD_GATEWAY,
        "{}",
        String::from_utf8_lossy(&by_path.body)
    );
    assert!(String::from_utf8_lossy(&by_path.body).contains("did not answer over HTTP"));
    let root = api
        .anon(
            Method::GET,
            &format!("/svc/{}/7/", a.id),
            &[(TOKEN, &t.token)],
        )
        .await;
    assert_eq!(
        root.status,
        StatusCode::BAD_GATEWAY,
        "the root is proxied too"
    );
    let by_host = api
        .anon(
            Method::POST,
            "/hello",
            &[("host", &host), (TOKEN, &t.token)],
        )
        .await;
    assert_eq!(by_host.status, StatusCode::BAD_GATEWAY);
    // __auth sets the cookie for the host and redirects; a path outside the host is refused
    // as a redirect target.
    let auth = api
        .anon(
            Method::GET,
            &format!("/__auth?token={}&redirect=/page?x=1", t.token),
            &[("host", &host)],
        )
        .await;
    assert_eq!(auth.status, StatusCode::FOUND);
    assert_eq!(auth.headers[header::LOCATION], "/page?x=1");
    let cookie = auth.headers[header::SET_COOKIE]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        cookie.starts_with(&format!("warren_svc={}; Path=/;", t.token)),
        "{cookie}"
    );
    assert!(cookie.contains("HttpOnly"));
    // Only same-origin paths are redirected to: not `//host`, nor what a browser would turn
    // into one (a tab dropped, a backslash read as a slash).
    for evil in [
        "//evil.example",
        "/%09/evil.example",
        "/\\evil.example",
        "https://evil.example",
    ] {
        let a = api
            .anon(
                Method::GET,
                &format!("/__auth?token={}&redirect={evil}", t.token),
                &[("host", &host)],
            )
            .await;
        assert_eq!(a.headers[header::LOCATION], "/", "{evil}");
    }
    // With a service domain, browsers never use the path form: it has no `__auth`, and the
    // service cookie does not open it (only the header token of programs does).
    let by_path = api
        .anon(
            Method::GET,
            &format!("/svc/{}/7/__auth?token={}", a.id, t.token),
            &[],
        )
        .await;
    assert_eq!(by_path.status, StatusCode::NOT_FOUND);
    let cookie_by_path = api
        .anon(
            Method::GET,
            &format!("/svc/{}/7/x", a.id),
            &[("cookie", &format!("warren_svc={}", t.token))],
        )
        .await;
    assert_eq!(cookie_by_path.status, StatusCode::UNAUTHORIZED);
    let bad_auth = api
        .anon(Method::GET, "/__auth?token=nope", &[("host", &host)])
        .await;
    assert_eq!(bad_auth.status, StatusCode::UNAUTHORIZED);
    let with_cookie = api
        .anon(
            Method::GET,
            "/",
            &[
                ("host", &host),
                ("cookie", &format!("a=1; warren_svc={}", t.token)),
            ],
        )
        .await;
    assert_eq!(with_cookie.status, StatusCode::BAD_GATEWAY);
    // Each proxied request is counted, with its bytes up and back down.
    assert_eq!(
        api.metric("warren_service_requests_total{outcome=\"proxied\"}")
            .await,
        Some(4)
    );
    let mut up = None;
    for _ in 0..50 {
        up = api
            .metric("warren_service_bytes_total{direction=\"up\"}")
            .await;
        if up.unwrap_or(0) > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let down = api
        .metric("warren_service_bytes_total{direction=\"down\"}")
        .await;
    assert!(
        up.unwrap() > 0 && down.unwrap() > 0,
        "up {up:?} down {down:?}"
    );
}

/// The answer's `Location`.
fn location(a: &Answer) -> String {
    a.headers[header::LOCATION].to_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_port_shared_by_login_sends_a_browser_to_sign_in_and_back() {
    let api = api().await;
    let sb = api.sandbox("web").await;
    let host = format!("7-{}.svc.test", sb.id);
    let old: ServiceUrlResponse = api.mint("web", r#"{"port": 7}"#).await.json();
    let granted = api
        .mint(
            "web",
            r#"{"port": 7, "access": "restricted", "embed_origins": ["https://app.example.com"]}"#,
        )
        .await;
    assert_eq!(
        granted.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&granted.body)
    );
    let g: ServiceLoginResponse = granted.json();
    assert_eq!(g.browser_url, format!("http://{host}/"));
    assert_eq!(g.access, "restricted");
    assert_eq!(g.embed_origins.unwrap(), vec!["https://app.example.com"]);
    // No token in the answer, and token mode is refused while the grant stands.
    let body: serde_json::Value = granted.json();
    assert!(body.get("token").is_none(), "{body}");
    let refused = api.mint("web", r#"{"port": 7}"#).await;
    assert_eq!(refused.error(), (StatusCode::CONFLICT, "Conflict".into()));
    assert!(
        refused
            .json::<ErrorBody>()
            .detail
            .message
            .contains("restricted")
    );
    // The port's old token stopped working, and the answer says why.
    let stale = api
        .anon(Method::GET, "/x", &[("host", &host), (TOKEN, &old.token)])
        .await;
    assert_eq!(stale.status, StatusCode::UNAUTHORIZED);
    assert!(String::from_utf8_lossy(&stale.body).contains("takes no service token"));
    let list: ServiceGrantList = api
        .send(
            api.req(Method::GET, "/api/v2/sandboxes/boxes/web/service-urls")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .json();
    assert_eq!(list.items[0].access, "restricted");
    assert!(list.items[0].expires_at.is_none());

    // A program without a session is told how the port is shared; a browser is sent to sign in.
    let program = api.anon(Method::GET, "/x", &[("host", &host)]).await;
    assert_eq!(program.status, StatusCode::UNAUTHORIZED);
    assert!(String::from_utf8_lossy(&program.body).contains("shared by login"));
    let browser = api
        .anon(
            Method::GET,
            "/x?y=1",
            &[("host", &host), ("accept", "text/html,*/*")],
        )
        .await;
    assert_eq!(browser.status, StatusCode::FOUND);
    let to_login = location(&browser);
    assert_eq!(
        to_login,
        format!(
            "http://warren.test/auth/service-login?sandbox={}&port=7&redirect=%2Fx%3Fy%3D1",
            sb.id
        )
    );
    let form_path = to_login.strip_prefix("http://warren.test").unwrap();
    let form = api.anon(Method::GET, form_path, &[]).await;
    assert_eq!(form.status, StatusCode::OK);
    let html = String::from_utf8_lossy(&form.body).into_owned();
    assert!(html.contains("type=password name=api_key"), "{html}");
    assert!(html.contains("value=\"/x?y=1\""), "{html}");
    assert!(
        form.headers[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap()
            .contains("frame-ancestors 'none'")
    );
    // A hostile sandbox name is text on the page, never markup.
    let hostile = api
        .anon(
            Method::GET,
            "/auth/service-login?sandbox=%3Cscript%3E&port=7&redirect=//evil.example",
            &[],
        )
        .await;
    let hostile = String::from_utf8_lossy(&hostile.body).into_owned();
    assert!(hostile.contains("&lt;script&gt;") && !hostile.contains("<script>"));
    assert!(hostile.contains("name=redirect value=\"/\""), "{hostile}");

    let post = |key: &str| {
        let body = serde_urlencoded::to_string([
            ("api_key", key),
            ("sandbox", sb.id.as_str()),
            ("port", "7"),
            ("redirect", "/x?y=1"),
        ])
        .unwrap();
        Request::builder()
            .method(Method::POST)
            .uri("/auth/service-login")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(body))
            .unwrap()
    };
    let wrong = api.send(post("not-a-key")).await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert!(String::from_utf8_lossy(&wrong.body).contains("not valid"));
    let signed = api.send(post(&api.key)).await;
    assert_eq!(
        signed.status,
        StatusCode::SEE_OTHER,
        "{}",
        String::from_utf8_lossy(&signed.body)
    );
    let back = location(&signed);
    let auth_path = back
        .strip_prefix(&format!("http://{host}"))
        .unwrap_or_else(|| panic!("{back}"))
        .to_owned();
    assert!(auth_path.starts_with("/__auth?code="), "{auth_path}");
    assert!(auth_path.ends_with("&redirect=%2Fx%3Fy%3D1"), "{auth_path}");
    // The code is the service host's only: by path it is refused.
    let by_path = api
        .anon(Method::GET, &format!("/svc/{}/7{auth_path}", sb.id), &[])
        .await;
    assert_eq!(by_path.status, StatusCode::NOT_FOUND);
    let auth = api.anon(Method::GET, &auth_path, &[("host", &host)]).await;
    assert_eq!(
        auth.status,
        StatusCode::FOUND,
        "{}",
        String::from_utf8_lossy(&auth.body)
    );
    assert_eq!(location(&auth), "/x?y=1");
    let cookie = auth.headers[header::SET_COOKIE]
        .to_str()
        .unwrap()
        .to_owned();
    let max_age: u64 = cookie
        .split("; Max-Age=")
        .nth(1)
        .and_then(|r| r.split(';').next()?.parse().ok())
        .unwrap_or_else(|| panic!("{cookie}"));
    assert!((43_190..=43_200).contains(&max_age), "{cookie}");
    assert!(
        cookie.contains("; Path=/;") && cookie.contains("HttpOnly"),
        "{cookie}"
    );
    let session = cookie.split(';').next().unwrap().to_owned();
    // Once only.
    let again = api.anon(Method::GET, &auth_path, &[("host", &host)]).await;
    assert_eq!(again.status, StatusCode::FORBIDDEN);
    assert!(String::from_utf8_lossy(&again.body).contains("used already"));

    // The session passes (the echo is not HTTP: a 502 means auth let it through) and is framed
    // only by the grant's origins; as a header, or by path, it is not a token.
    let through = api
        .anon(Method::GET, "/x", &[("host", &host), ("cookie", &session)])
        .await;
    assert_eq!(
        through.status,
        StatusCode::BAD_GATEWAY,
        "{}",
        String::from_utf8_lossy(&through.body)
    );
    assert!(
        through.headers[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap()
            .contains("https://app.example.com")
    );
    let value = session.strip_prefix("warren_svc=").unwrap();
    let as_header = api
        .anon(Method::GET, "/x", &[("host", &host), (TOKEN, value)])
        .await;
    assert_eq!(as_header.status, StatusCode::UNAUTHORIZED);
    let path_cookie = api
        .anon(
            Method::GET,
            &format!("/svc/{}/7/x", sb.id),
            &[("cookie", &session)],
        )
        .await;
    assert_eq!(path_cookie.status, StatusCode::UNAUTHORIZED);
    // `access: "off"` ends the grant, and with it the session, and mints a token.
    let off = api.mint("web", r#"{"port": 7, "access": "off"}"#).await;
    assert_eq!(
        off.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&off.body)
    );
    let token: ServiceUrlResponse = off.json();
    let ended = api
        .anon(Method::GET, "/x", &[("host", &host), ("cookie", &session)])
        .await;
    assert_eq!(ended.status, StatusCode::FORBIDDEN);
    let with_token = api
        .anon(Method::GET, "/x", &[("host", &host), (TOKEN, &token.token)])
        .await;
    assert_eq!(with_token.status, StatusCode::BAD_GATEWAY);
}

#[tokio::test]
async fn a_download_link_needs_no_key_honours_ranges_and_expires() {
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
    assert_eq!(up.status, StatusCode::OK);
    let link: DownloadUrlResponse = api
        .json(
            Method::POST,
            "/api/v2/sandboxes/boxes/files/download-url",
            r#"{"path": "/srv/a.txt", "content_type": "text/plain", "content_disposition": "inline", "expires_in_seconds": 2}"#,
        )
        .await
        .json();
    assert!(link.download_url.starts_with("http://warren.test/dl/"));
    let path = link
        .download_url
        .strip_prefix("http://warren.test")
        .unwrap()
        .to_owned();
    let full = api.anon(Method::GET, &path, &[]).await;
    assert_eq!(
        (full.status, full.body.as_slice()),
        (StatusCode::OK, &b"hello world"[..])
    );
    assert_eq!(full.headers[header::CONTENT_TYPE], "text/plain");
    assert_eq!(
        full.headers[header::CONTENT_DISPOSITION],
        "inline; filename=\"a.txt\""
    );
    assert_eq!(full.headers[header::CONTENT_SECURITY_POLICY], "sandbox");
    let part = api.anon(Method::GET, &path, &[("range", "bytes=6-")]).await;
    assert_eq!(
        (part.status, part.body.as_slice()),
        (StatusCode::PARTIAL_CONTENT, &b"world"[..])
    );
    assert_eq!(part.headers[header::CONTENT_RANGE], "bytes 6-10/11");
    let tail = api.anon(Method::GET, &path, &[("range", "bytes=-2")]).await;
    assert_eq!(tail.body, b"ld");
    let past = api
        .anon(Method::GET, &path, &[("range", "bytes=50-")])
        .await;
    assert_eq!(past.status, StatusCode::RANGE_NOT_SATISFIABLE);
    let head = api.anon(Method::HEAD, &path, &[]).await;
    assert_eq!((head.status, head.body.len()), (StatusCode::OK, 0));
    assert_eq!(head.headers[header::CONTENT_LENGTH], "11");
    let tampered = api.anon(Method::GET, &format!("{path}x"), &[]).await;
    assert_eq!(tampered.status, StatusCode::FORBIDDEN);
    tokio::time::sleep(Duration::from_millis(3100)).await;
    let expired = api.anon(Method::GET, &path, &[]).await;
    assert_eq!(expired.error(), (StatusCode::GONE, "LinkExpired".into()));
}

#[tokio::test]
async fn rotating_the_key_ends_every_token_and_only_admins_may() {
    let api = api().await;
    let a = api.sandbox("a").await;
    let t: ServiceUrlResponse = api.mint("a", r#"{"port": 7}"#).await.json();
    let path = format!("/svc/{}/7/", a.id);
    let before = api.anon(Method::GET, &path, &[(TOKEN, &t.token)]).await;
    assert_eq!(
        before.status,
        StatusCode::BAD_GATEWAY,
        "accepted (the echo is not HTTP)"
    );
    let rotate = "/api/v2/sandboxes/keys/service-token-key/rotate";
    let anon = api.anon(Method::POST, rotate, &[]).await;
    assert_eq!(anon.status, StatusCode::UNAUTHORIZED);
    let done = api.json(Method::POST, rotate, "").await;
    assert_eq!(done.status, StatusCode::NO_CONTENT);
    let after = api.anon(Method::GET, &path, &[(TOKEN, &t.token)]).await;
    assert_eq!(after.status, StatusCode::UNAUTHORIZED);
}

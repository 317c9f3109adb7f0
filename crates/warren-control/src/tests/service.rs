//! Service tokens and download links: mint, verify, expire, revoke, foreign, tampered, the
//! signing key file, and a proxied stream's wake, audit and metrics.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use warren_driver::fake::ECHO_PORT;
use warren_types::SandboxStatus;

use super::support::{generous, harness, harness_configured};
use crate::{ControlError, GrantMode, TokenError};

#[tokio::test]
async fn a_minted_token_verifies_for_its_sandbox_and_port_only() {
    let h = harness().await;
    let a = h.sandbox(&h.admin, "a").await;
    let b = h.sandbox(&h.admin, "b").await;
    let m = h
        .control
        .mint_service_token(&h.admin, "a", 8000, Some(60), vec![])
        .unwrap();
    assert_eq!(m.sandbox_id, a.id);
    let access = h
        .control
        .verify_service_token(&m.token, &a.id, 8000)
        .unwrap();
    assert_eq!(access.principal.user_id, h.admin.user_id);
    assert_eq!(access.port, 8000);
    assert!(matches!(
        h.control.verify_service_token(&m.token, &b.id, 8000),
        Err(TokenError::Foreign(_))
    ));
    assert!(matches!(
        h.control.verify_service_token(&m.token, &a.id, 8001),
        Err(TokenError::Foreign(_))
    ));
    assert_eq!(
        h.control.verify_service_token("", &a.id, 8000).unwrap_err(),
        TokenError::Missing
    );
    // One character of the signature changed.
    let mut tampered = m.token.clone().into_bytes();
    let last = tampered.len() - 2;
    tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    assert!(matches!(
        h.control.verify_service_token(&tampered, &a.id, 8000),
        Err(TokenError::Invalid(_))
    ));
    let metrics = h.control.metrics().render(&[]);
    assert!(
        metrics.contains("warren_service_requests_total{outcome=\"refused\"} 4"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_token_expires_and_the_key_file_is_private_and_kept() {
    let h = harness().await;
    let a = h.sandbox(&h.admin, "a").await;
    let m = h
        .control
        .mint_service_token(&h.admin, "a", 8000, Some(1), vec![])
        .unwrap();
    let path = h.dir.path().join("service-token.key");
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(
        h.control
            .verify_service_token(&m.token, &a.id, 8000)
            .unwrap_err(),
        TokenError::Expired
    );
    // The port is no longer reachable by it, so it is not listed.
    assert!(
        h.control
            .list_service_grants(&h.admin, "a")
            .unwrap()
            .is_empty()
    );
    // A token survives a restart (the key is read back), and not a rotation.
    let fresh = h
        .control
        .mint_service_token(&h.admin, "a", 8000, None, vec![])
        .unwrap();
    *crate::state::lock(&h.control.service_key) = None;
    assert!(
        h.control
            .verify_service_token(&fresh.token, &a.id, 8000)
            .is_ok()
    );
    let dev = h.user("dev");
    assert!(h.control.rotate_service_key(&dev).is_err(), "admins only");
    assert!(
        h.control
            .verify_service_token(&fresh.token, &a.id, 8000)
            .is_ok()
    );
    h.control.rotate_service_key(&h.admin).unwrap();
    assert!(matches!(
        h.control.verify_service_token(&fresh.token, &a.id, 8000),
        Err(TokenError::Invalid(_))
    ));
}

#[tokio::test]
async fn bad_requests_are_refused_before_anything_is_granted() {
    let h = harness().await;
    h.sandbox(&h.admin, "a").await;
    for (port, ttl) in [(0, None), (70000, None), (80, Some(0)), (80, Some(86_401))] {
        assert!(
            h.control
                .mint_service_token(&h.admin, "a", port, ttl, vec![])
                .is_err(),
            "port {port} ttl {ttl:?}"
        );
    }
    assert!(
        h.control
            .mint_service_token(&h.admin, "a", 80, None, vec!["http://evil.com".into()])
            .is_err()
    );
    assert!(
        h.control
            .list_service_grants(&h.admin, "a")
            .unwrap()
            .is_empty()
    );
    let other = h.user("other");
    assert!(
        h.control
            .mint_service_token(&other, "a", 80, None, vec![])
            .is_err(),
        "another user's sandbox is not found"
    );
}

#[tokio::test]
async fn revoking_a_grant_refuses_its_tokens_and_a_remint_renews_it() {
    let h = harness().await;
    let a = h.sandbox(&h.admin, "a").await;
    let t1 = h
        .control
        .mint_service_token(&h.admin, "a", 8000, None, vec![])
        .unwrap();
    let t2 = h
        .control
        .mint_service_token(&h.admin, "a", 8000, Some(120), vec![])
        .unwrap();
    let t3 = h
        .control
        .mint_service_token(&h.admin, "a", 9000, None, vec![])
        .unwrap();
    let grants = h.control.list_service_grants(&h.admin, "a").unwrap();
    assert_eq!(
        grants.iter().map(|g| g.port).collect::<Vec<_>>(),
        vec![8000, 9000],
        "re-minting renews one grant per port"
    );
    // The grant lasts as long as its longest-lived token (t1's default 600 s, not t2's 120).
    assert_eq!(grants[0].expires_at, t1.expires_at);
    assert!(
        h.control
            .verify_service_token(&t1.token, &a.id, 8000)
            .is_ok()
    );
    let n = h
        .control
        .revoke_service_grants(&h.admin, "a", Some(8000))
        .unwrap();
    assert_eq!(n, 1);
    for t in [&t1, &t2] {
        assert_eq!(
            h.control
                .verify_service_token(&t.token, &a.id, 8000)
                .unwrap_err(),
            TokenError::Revoked
        );
    }
    assert!(
        h.control
            .verify_service_token(&t3.token, &a.id, 9000)
            .is_ok()
    );
    // A new grant for the port does not bring the revoked tokens back.
    let t4 = h
        .control
        .mint_service_token(&h.admin, "a", 8000, None, vec![])
        .unwrap();
    assert!(
        h.control
            .verify_service_token(&t4.token, &a.id, 8000)
            .is_ok()
    );
    assert!(
        h.control
            .verify_service_token(&t1.token, &a.id, 8000)
            .is_err()
    );
    assert_eq!(
        h.control
            .revoke_service_grants(&h.admin, "a", None)
            .unwrap(),
        2
    );
    assert!(
        h.control
            .verify_service_token(&t3.token, &a.id, 9000)
            .is_err()
    );
    assert_eq!(h.audited("service.revoke").len(), 2);
    h.control
        .mint_service_token(&h.admin, "a", 8000, None, vec![])
        .unwrap();
    h.control.delete(&h.admin, &a.id).await.unwrap();
    for _ in 0..100 {
        if !h.exists(&a.id) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(!h.exists(&a.id));
    assert!(
        h.control.store.list_grants(&a.id).unwrap().is_empty(),
        "a deleted sandbox's grants go with it"
    );
}

#[tokio::test]
async fn a_service_stream_wakes_the_sandbox_and_is_audited_as_the_grants_subject() {
    let h = harness().await;
    let user = h.user("dev");
    let rec = h.stopped(&user, "box").await;
    let m = h
        .control
        .mint_service_token(&user, "box", i64::from(ECHO_PORT), None, vec![])
        .unwrap();
    let access = h
        .control
        .verify_service_token(&m.token, &rec.id, ECHO_PORT)
        .unwrap();
    let mut s = h
        .control
        .open_service_stream(&access, "GET /".into())
        .await
        .unwrap();
    assert_eq!(h.record(&rec.id).status, SandboxStatus::Ready, "woken");
    s.write_all(b"ping").await.unwrap();
    let mut got = [0u8; 4];
    s.read_exact(&mut got).await.unwrap();
    assert_eq!(&got, b"ping");
    drop(s);
    let entries = h.audited("service");
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].user_id.as_deref(), Some(user.user_id.as_str()));
    assert_eq!(
        entries[0].detail.as_deref(),
        Some("port 7 GET / up 4 bytes down 4 bytes")
    );
    let metrics = h.control.metrics().render(&[]);
    for line in [
        "warren_service_requests_total{outcome=\"proxied\"} 1",
        "warren_service_bytes_total{direction=\"up\"} 4",
    ] {
        assert!(metrics.contains(line), "{line} missing from {metrics}");
    }
}

#[tokio::test]
async fn download_tokens_are_not_service_tokens_and_expire() {
    let h = harness().await;
    let a = h.sandbox(&h.admin, "a").await;
    let d = h
        .control
        .mint_download_link(
            &h.admin,
            "a",
            "/tmp/f",
            Some(1),
            Some("text/plain".into()),
            None,
        )
        .unwrap();
    let access = h.control.verify_download_token(&d.token).unwrap();
    assert_eq!(
        (access.sandbox_id.as_str(), access.path.as_str()),
        (a.id.as_str(), "/tmp/f")
    );
    assert_eq!(access.content_type.as_deref(), Some("text/plain"));
    assert!(matches!(
        h.control.verify_service_token(&d.token, &a.id, 8000),
        Err(TokenError::Foreign(_) | TokenError::Invalid(_))
    ));
    let s = h
        .control
        .mint_service_token(&h.admin, "a", 8000, None, vec![])
        .unwrap();
    assert!(h.control.verify_download_token(&s.token).is_err());
    assert!(
        h.control
            .mint_download_link(&h.admin, "a", "/f", None, None, Some("evil".into()))
            .is_err()
    );
    let forever = h
        .control
        .mint_download_link(&h.admin, "a", "/tmp/f", None, None, None)
        .unwrap();
    assert!(forever.expires_at.is_none());
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(
        h.control.verify_download_token(&d.token).unwrap_err(),
        TokenError::Expired
    );
    assert!(h.control.verify_download_token(&forever.token).is_ok());
}

/// Signs by writing the claims out in the clear, so a test can read what was signed.
#[derive(Debug)]
struct ClearSigner;

impl crate::TokenSigner for ClearSigner {
    fn jwks(&self) -> serde_json::Value {
        serde_json::json!({"keys": [{"kid": "clear"}]})
    }
    fn sign(&self, claims: &serde_json::Value) -> Result<String, String> {
        Ok(claims.to_string())
    }
}

async fn login_harness() -> super::support::Harness {
    harness_configured(generous(), |cfg| {
        cfg.signer = Some(std::sync::Arc::new(ClearSigner));
        cfg.service_domain = Some("svc.test".into());
    })
    .await
}

#[tokio::test]
async fn a_login_grant_admits_whom_its_mode_says_and_takes_no_tokens() {
    let h = login_harness().await;
    let (bob, bob_key_id, bob_key) = h.user_with_key("bob");
    let sb = h.sandbox(&h.admin, "web").await;
    let c = &h.control;
    let port = ECHO_PORT;
    let web = |p: u16| -> i64 { i64::from(p) };
    let token = c
        .mint_service_token(&h.admin, "web", web(port), None, vec![])
        .unwrap();
    let g = c
        .grant_service_login(&h.admin, "web", web(port), "restricted", vec![])
        .unwrap();
    assert_eq!(
        (g.sandbox_id.as_str(), g.port, g.mode),
        (sb.id.as_str(), port, GrantMode::Restricted)
    );
    // The port's tokens went with the change, and no new one is minted while it stands.
    assert_eq!(
        c.verify_service_token(&token.token, &sb.id, port)
            .unwrap_err(),
        TokenError::Revoked
    );
    let conflict = c
        .mint_service_token(&h.admin, "web", web(port), None, vec![])
        .unwrap_err();
    assert!(
        matches!(&conflict, ControlError::Conflict(m) if m.contains("restricted") && m.contains("off")),
        "{conflict}"
    );
    assert_eq!(
        c.service_login_mode(&sb.id, port),
        Some(GrantMode::Restricted)
    );
    assert_eq!(c.service_login_mode(&sb.id, port + 1), None);
    // A key that is none signs nobody in; bob may not read the admin's sandbox.
    assert_eq!(c.begin_service_login("nope", &sb.id, port).unwrap(), None);
    let refused = c.begin_service_login(&bob_key, &sb.id, port).unwrap_err();
    assert!(
        matches!(&refused, ControlError::Forbidden(m) if m.contains("bob")),
        "{refused}"
    );
    let code = c
        .begin_service_login(&h.admin_key, &sb.id, port)
        .unwrap()
        .unwrap();
    // A code is for its port, and works once.
    assert!(c.finish_service_login(&code, &sb.id, port + 1).is_err());
    let session = c.finish_service_login(&code, &sb.id, port).unwrap();
    assert!(matches!(
        c.finish_service_login(&code, &sb.id, port),
        Err(TokenError::Foreign(m)) if m.contains("used already")
    ));
    let access = c
        .verify_service_cookie(&session.token, &sb.id, port)
        .unwrap();
    assert!(access.signed_in);
    assert_eq!(access.principal.user_id, h.admin.user_id);
    // A session is a cookie, never a header token.
    assert!(matches!(
        c.verify_service_token(&session.token, &sb.id, port),
        Err(TokenError::Foreign(_))
    ));
    // The user token: the request's host, the user, the server as issuer, a few minutes.
    let user: serde_json::Value =
        serde_json::from_str(&c.user_token(&access, "7-x.svc.test:7878").unwrap()).unwrap();
    assert_eq!(user["aud"], "7-x.svc.test:7878");
    assert_eq!(user["sub"], h.admin.user_id.as_str());
    assert_eq!(user["iss"], "http://warren.test");
    assert_eq!(
        user["exp"].as_u64().unwrap() - user["iat"].as_u64().unwrap(),
        300
    );

    // Workspace: bob signs in and reaches the port of a sandbox he cannot otherwise see.
    c.grant_service_login(
        &h.admin,
        "web",
        web(port),
        "workspace",
        vec!["https://app.example.com".into()],
    )
    .unwrap();
    let bob_code = c
        .begin_service_login(&bob_key, &sb.id, port)
        .unwrap()
        .unwrap();
    let bobs = c.finish_service_login(&bob_code, &sb.id, port).unwrap();
    let as_bob = c.verify_service_cookie(&bobs.token, &sb.id, port).unwrap();
    assert_eq!(as_bob.principal.user_id, bob.user_id);
    assert_eq!(as_bob.embed_origins, vec!["https://app.example.com"]);
    let mut s = c
        .open_service_stream(&as_bob, "GET /".into())
        .await
        .unwrap();
    s.write_all(b"ping").await.unwrap();
    let mut got = [0u8; 4];
    s.read_exact(&mut got).await.unwrap();
    assert_eq!(&got, b"ping");
    drop(s);
    // Revoking bob's key ends his session.
    c.revoke_key(&h.admin, &bob_key_id).unwrap();
    assert!(matches!(
        c.verify_service_cookie(&bobs.token, &sb.id, port),
        Err(TokenError::Foreign(m)) if m.contains("revoked")
    ));
    // Back to restricted: another workspace member's session stops admitting them.
    let (_carol, _, carol_key) = h.user_with_key("carol");
    let carols = c
        .finish_service_login(
            &c.begin_service_login(&carol_key, &sb.id, port)
                .unwrap()
                .unwrap(),
            &sb.id,
            port,
        )
        .unwrap();
    c.grant_service_login(&h.admin, "web", web(port), "restricted", vec![])
        .unwrap();
    assert!(matches!(
        c.verify_service_cookie(&carols.token, &sb.id, port),
        Err(TokenError::Foreign(_))
    ));
    assert!(
        c.verify_service_cookie(&session.token, &sb.id, port)
            .is_ok()
    );
    let listed = c.list_service_grants(&h.admin, "web").unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].mode, GrantMode::Restricted);

    // Revoked: sessions end, tokens can be minted again; a token port has no sign-in.
    assert_eq!(
        c.revoke_service_grants(&h.admin, "web", Some(port))
            .unwrap(),
        1
    );
    assert_eq!(
        c.verify_service_cookie(&session.token, &sb.id, port)
            .unwrap_err(),
        TokenError::Revoked
    );
    c.mint_service_token(&h.admin, "web", web(port), None, vec![])
        .unwrap();
    assert!(matches!(
        c.begin_service_login(&h.admin_key, &sb.id, port),
        Err(ControlError::NotFound(_))
    ));
    assert!(
        c.grant_service_login(&h.admin, "web", web(port), "off", vec![])
            .is_err()
    );
}

#[tokio::test]
async fn a_shorter_renewal_keeps_a_token_grant_listed_while_an_older_token_lives() {
    let h = harness().await;
    h.sandbox(&h.admin, "a").await;
    h.control
        .mint_service_token(&h.admin, "a", 8000, Some(3600), vec![])
        .unwrap();
    h.control
        .mint_service_token(&h.admin, "a", 8000, Some(1), vec![])
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let listed = h.control.list_service_grants(&h.admin, "a").unwrap();
    assert_eq!(listed.len(), 1, "the hour-long token still opens the port");
}

#[tokio::test]
async fn login_mode_needs_a_signing_key_and_a_service_domain() {
    let h = harness().await;
    h.sandbox(&h.admin, "web").await;
    let e = h
        .control
        .grant_service_login(&h.admin, "web", 8000, "workspace", vec![])
        .unwrap_err();
    assert!(e.to_string().contains("signing key"), "{e}");
    let h = harness_configured(generous(), |cfg| {
        cfg.signer = Some(std::sync::Arc::new(ClearSigner));
    })
    .await;
    h.sandbox(&h.admin, "web").await;
    let e = h
        .control
        .grant_service_login(&h.admin, "web", 8000, "workspace", vec![])
        .unwrap_err();
    assert!(e.to_string().contains("service domain"), "{e}");
}

#[tokio::test]
async fn an_open_service_connection_ends_when_its_access_is_revoked() {
    let h = login_harness().await;
    let (_bob, bob_key_id, bob_key) = h.user_with_key("bob");
    let sb = h.sandbox(&h.admin, "web").await;
    let c = h.control.clone();
    let watch = |a: crate::ServiceAccess| {
        let c = c.clone();
        tokio::spawn(async move { c.service_access_ended(&a).await })
    };
    let m = c
        .mint_service_token(&h.admin, "web", 8000, None, vec![])
        .unwrap();
    let token = watch(c.verify_service_token(&m.token, &sb.id, 8000).unwrap());
    // Another port's grant changing leaves it open; its own grant revoked ends it.
    c.grant_service_login(&h.admin, "web", 9000, "workspace", vec![])
        .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!token.is_finished());
    c.revoke_service_grants(&h.admin, "web", Some(8000))
        .unwrap();
    tokio::time::timeout(Duration::from_secs(2), token)
        .await
        .expect("a revoked grant ends its connections")
        .unwrap();
    // A session ends with the key it signed in with.
    let code = c
        .begin_service_login(&bob_key, &sb.id, 9000)
        .unwrap()
        .unwrap();
    let session = c.finish_service_login(&code, &sb.id, 9000).unwrap();
    let bobs = watch(
        c.verify_service_cookie(&session.token, &sb.id, 9000)
            .unwrap(),
    );
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!bobs.is_finished());
    let m = c
        .mint_service_token(&h.admin, "web", 8000, None, vec![])
        .unwrap();
    let admins = watch(c.verify_service_token(&m.token, &sb.id, 8000).unwrap());
    c.revoke_key(&h.admin, &bob_key_id).unwrap();
    tokio::time::timeout(Duration::from_secs(2), bobs)
        .await
        .expect("a revoked key ends its session's connections")
        .unwrap();
    // Bob's key is no concern of a token the admin minted; a rotated signing key is.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!admins.is_finished());
    c.rotate_service_key(&h.admin).unwrap();
    tokio::time::timeout(Duration::from_secs(2), admins)
        .await
        .expect("a rotated key ends what its tokens let in")
        .unwrap();
}

//! Tunnel streams: access, wake, refusals, activity, audit and metrics.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use warren_driver::fake::ECHO_PORT;
use warren_types::SandboxStatus;

use super::support::harness;
use crate::TunnelError;

#[tokio::test]
async fn a_stream_carries_bytes_and_is_audited_with_its_counts_when_it_closes() {
    let h = harness().await;
    let rec = h.sandbox(&h.admin, "box").await;
    let mut s = h
        .control
        .open_tunnel_stream(&h.admin, &rec.id, ECHO_PORT)
        .await
        .unwrap();
    let inflight = h.control.activity.get(&rec.id).map(|a| a.inflight);
    assert_eq!(inflight, Some(1), "an open stream keeps the sandbox busy");
    s.write_all(b"hello tunnel").await.unwrap();
    let mut got = [0u8; 12];
    s.read_exact(&mut got).await.unwrap();
    assert_eq!(&got, b"hello tunnel");
    assert!(
        h.audited("tunnel").is_empty(),
        "audited at close, not before"
    );
    let metrics = h.control.metrics().render(&[]);
    assert!(
        metrics.contains("warren_tunnel_streams_open 1"),
        "{metrics}"
    );
    drop(s);
    let inflight = h.control.activity.get(&rec.id).map(|a| a.inflight);
    assert_eq!(inflight, Some(0));
    let entries = h.audited("tunnel");
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].target.as_deref(), Some(rec.id.as_str()));
    assert_eq!(
        entries[0].user_id.as_deref(),
        Some(h.admin.user_id.as_str())
    );
    assert_eq!(
        entries[0].detail.as_deref(),
        Some("port 7 up 12 bytes down 12 bytes")
    );
    let metrics = h.control.metrics().render(&[]);
    for line in [
        "warren_tunnel_streams_total{outcome=\"opened\"} 1",
        "warren_tunnel_streams_open 0",
        "warren_tunnel_bytes_total{direction=\"up\"} 12",
        "warren_tunnel_bytes_total{direction=\"down\"} 12",
    ] {
        assert!(metrics.contains(line), "{line} missing from {metrics}");
    }
}

#[tokio::test]
async fn a_closed_port_is_refused_and_counted() {
    let h = harness().await;
    let rec = h.sandbox(&h.admin, "box").await;
    let r = h.control.open_tunnel_stream(&h.admin, &rec.id, 8080).await;
    let dialled = format!("connect {} 8080", rec.runtime_id);
    assert!(h.fake.calls().contains(&dialled), "the fake was asked");
    assert!(matches!(r, Err(TunnelError::Refused(_))), "{r:?}");
    let r = h.control.open_tunnel_stream(&h.admin, &rec.id, 0).await;
    assert!(matches!(r, Err(TunnelError::NotAllowed(_))), "{r:?}");
    let metrics = h.control.metrics().render(&[]);
    assert!(
        metrics.contains("warren_tunnel_streams_total{outcome=\"refused\"} 2"),
        "{metrics}"
    );
}

#[tokio::test]
async fn another_users_sandbox_is_not_reachable() {
    let h = harness().await;
    let rec = h.sandbox(&h.admin, "box").await;
    let eve = h.user("eve");
    let r = h.control.open_tunnel_stream(&eve, &rec.id, ECHO_PORT).await;
    assert!(matches!(r, Err(TunnelError::NotAllowed(_))), "{r:?}");
    assert!(
        !h.fake.calls().iter().any(|c| c.starts_with("connect ")),
        "nothing was dialled"
    );
}

#[tokio::test]
async fn a_stopped_sandbox_wakes_for_a_stream() {
    let h = harness().await;
    let rec = h.stopped(&h.admin, "box").await;
    assert_eq!(h.record(&rec.id).status, SandboxStatus::Stopped);
    let s = h
        .control
        .open_tunnel_stream(&h.admin, &rec.id, ECHO_PORT)
        .await
        .unwrap();
    assert_eq!(h.record(&rec.id).status, SandboxStatus::Ready);
    drop(s);
}

#[tokio::test]
async fn a_session_ends_when_its_key_is_revoked_or_its_sandbox_stops() {
    use std::time::Duration;
    let h = harness().await;
    let (key_id, key) = h.control.create_key(&h.admin, "carol", false).unwrap();
    let carol = h.control.authenticate(&key).unwrap().unwrap();
    let rec = h.sandbox(&carol, "box").await;
    let live = h.control.session_ended(&key, &rec.id);
    tokio::pin!(live);
    assert!(
        tokio::time::timeout(Duration::from_millis(100), &mut live)
            .await
            .is_err(),
        "a valid key on a ready sandbox keeps its session"
    );
    // Another key's revocation re-checks this one and keeps it.
    let (other, _) = h.control.create_key(&h.admin, "dave", false).unwrap();
    h.control.revoke_key(&h.admin, &other).unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(100), &mut live)
            .await
            .is_err()
    );
    h.control.revoke_key(&h.admin, &key_id).unwrap();
    tokio::time::timeout(Duration::from_secs(5), &mut live)
        .await
        .expect("revoking the key ends the session");

    let admin_key = h.admin_key.clone();
    let stopped = h.control.session_ended(&admin_key, &rec.id);
    tokio::pin!(stopped);
    assert!(
        tokio::time::timeout(Duration::from_millis(100), &mut stopped)
            .await
            .is_err()
    );
    h.control.stop(&h.admin, &rec.id).await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), &mut stopped)
        .await
        .expect("stopping the sandbox ends the session");
    assert_eq!(h.record(&rec.id).status, SandboxStatus::Stopped);
}

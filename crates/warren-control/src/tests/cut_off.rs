//! A caller that goes away mid-request: axum drops a handler's future when its client
//! disconnects, at whatever await it is in. The state-changing verbs run to their end anyway,
//! audit entry included. Each request here is polled once (the fake's storage work yields, as
//! the real driver's runs on a blocking thread) and then dropped.

use std::future::Future;
use std::time::Duration;

use super::support::{Harness, SETTLE, harness};
use crate::{CaptureSnapshot, ControlError, CreateVolume};

/// Polls the request once, asserts it was still running, and drops it.
fn cut_off<F: Future>(request: F) {
    let mut request = std::pin::pin!(request);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    assert!(
        request.as_mut().poll(&mut cx).is_pending(),
        "the request finished in its first poll: nothing was cut off"
    );
}

/// Waits until `done` holds, failing after [`SETTLE`].
async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + SETTLE;
    while !done() {
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn audited_once(h: &Harness, action: &str) -> bool {
    h.audited(action).len() == 1
}

#[tokio::test]
async fn a_delete_cut_off_still_deletes_and_audits() {
    let h = harness().await;
    let rec = h.sandbox(&h.admin, "doomed").await;
    cut_off(h.control.delete(&h.admin, "doomed"));
    eventually("the sandbox is gone", || !h.exists(&rec.id)).await;
    assert!(
        !h.fake
            .sandboxes()
            .iter()
            .any(|(id, _)| *id == rec.runtime_id)
    );
    eventually("sandbox.delete is audited", || {
        audited_once(&h, "sandbox.delete")
    })
    .await;
}

#[tokio::test]
async fn a_stop_cut_off_still_stops_and_audits() {
    let h = harness().await;
    let rec = h.sandbox(&h.admin, "halt").await;
    cut_off(h.control.stop(&h.admin, "halt"));
    eventually("the sandbox is stopped", || {
        h.record(&rec.id).status == warren_types::SandboxStatus::Stopped
    })
    .await;
    // Stopped as the user asked, not as a crash the sweeper found.
    assert_eq!(h.record(&rec.id).status_message, None);
    eventually("sandbox.stop is audited", || {
        audited_once(&h, "sandbox.stop")
    })
    .await;
}

#[tokio::test]
async fn a_capture_cut_off_is_recorded_and_audited() {
    let h = harness().await;
    h.sandbox(&h.admin, "src").await;
    cut_off(h.control.capture(
        &h.admin,
        "src",
        CaptureSnapshot {
            name: "kept".into(),
            ..Default::default()
        },
    ));
    eventually("the snapshot is named", || {
        h.control.get_snapshot(&h.admin, "kept").is_ok()
    })
    .await;
    eventually("snapshot.capture is audited", || {
        audited_once(&h, "snapshot.capture")
    })
    .await;
}

#[tokio::test]
async fn volume_verbs_cut_off_leave_records_and_files_agreeing() {
    let h = harness().await;
    let req = |name: &str| CreateVolume {
        name: name.into(),
        size_bytes: Some(1 << 30),
        ..Default::default()
    };
    cut_off(h.control.create_volume(&h.admin, req("made")));
    eventually("the volume is made", || {
        h.control
            .get_volume(&h.admin, "made")
            .is_ok_and(|v| v.used_bytes.is_some())
    })
    .await;
    cut_off(h.control.clone_volume(&h.admin, "made", req("copy")));
    eventually("the clone is made", || {
        h.control
            .get_volume(&h.admin, "copy")
            .is_ok_and(|v| v.used_bytes.is_some())
    })
    .await;
    cut_off(h.control.delete_volume(&h.admin, "made"));
    eventually("the volume's record is gone", || {
        matches!(
            h.control.get_volume(&h.admin, "made"),
            Err(ControlError::NotFound(_))
        )
    })
    .await;
    for action in ["volume.create", "volume.clone", "volume.delete"] {
        eventually(action, || audited_once(&h, action)).await;
    }
}

#[tokio::test]
async fn a_snapshot_delete_cut_off_removes_the_files_and_audits() {
    let h = harness().await;
    h.sandbox(&h.admin, "src").await;
    let v = h
        .control
        .capture(
            &h.admin,
            "src",
            CaptureSnapshot {
                name: "gone".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let image = crate::snapshot_image(&v.record.id);
    cut_off(h.control.delete_snapshot(&h.admin, "gone"));
    eventually("the snapshot's files are gone", || {
        warren_driver::Driver::image_status(&h.fake, &image) == warren_driver::ImageStatus::Missing
    })
    .await;
    assert!(h.control.get_snapshot(&h.admin, "gone").is_err());
    eventually("snapshot.delete is audited", || {
        audited_once(&h, "snapshot.delete")
    })
    .await;
}

#[tokio::test]
async fn an_exec_cut_off_once_sent_is_still_audited() {
    let h = harness().await;
    let rec = h.sandbox(&h.admin, "busy").await;
    cut_off(h.control.exec(
        &h.admin,
        &rec.id,
        crate::ExecRequest {
            command: "echo unseen".into(),
            ..Default::default()
        },
    ));
    eventually("exec is audited", || audited_once(&h, "exec")).await;
    assert_eq!(h.audited("exec")[0].detail.as_deref(), Some("echo unseen"));
}

#[tokio::test]
async fn an_upload_cut_off_at_its_commit_still_lands_and_is_audited() {
    let h = harness().await;
    let rec = h.sandbox(&h.admin, "files").await;
    let up = h
        .unfinished_upload(&rec.id, "/tmp/kept.txt", &[b"kept"])
        .await;
    cut_off(h.control.finish_upload(&h.admin, up));
    eventually("the file is in place", || {
        h.fake.file(&rec.runtime_id, "/tmp/kept.txt") == Some(b"kept".to_vec())
    })
    .await;
    eventually("file.write is audited", || audited_once(&h, "file.write")).await;
    assert_eq!(
        h.audited("file.write")[0].detail.as_deref(),
        Some("/tmp/kept.txt")
    );
}

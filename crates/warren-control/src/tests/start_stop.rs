//! `start` and `stop`, and the lifecycle guard every verb opens with: each transition
//! `SandboxStatus::can_become` allows that a verb performs, and the refused ones.

use warren_types::SandboxStatus;

use super::support::{as_stored, harness};
use crate::{ControlError, CreateSandbox, UpdateSandbox};

#[tokio::test]
async fn stop_of_a_ready_sandbox_stops_it_and_keeps_its_files() {
    let h = harness().await;
    let rec = h.sandbox(&h.admin, "box").await;
    let stopped = h.control.stop(&h.admin, "box").await.unwrap();
    assert_eq!(stopped.status, SandboxStatus::Stopped);
    assert!(stopped.handle.is_none());
    assert!(stopped.stopped_at.is_some());
    assert_eq!(stopped.status_message, None);
    assert_eq!(h.record(&rec.id), as_stored(&stopped), "the stop is stored");
    assert_eq!(h.calls("stop", &rec), 1);
    assert_eq!(h.calls("destroy", &rec), 0);
    assert_eq!(h.fake_state(&rec), Some(false), "stopped, storage kept");
}

#[tokio::test]
async fn stop_of_a_stopped_or_failed_sandbox_is_a_no_op() {
    let h = harness().await;
    let rec = h.stopped(&h.admin, "down").await;
    let again = h.control.stop(&h.admin, &rec.id).await.unwrap();
    assert_eq!(
        again,
        as_stored(&rec),
        "nothing changed, not even stopped_at"
    );
    assert_eq!(h.calls("stop", &rec), 1, "the driver was not asked again");

    let failed = h.failed(&h.admin, "broken").await;
    let still = h.control.stop(&h.admin, &failed.id).await.unwrap();
    assert_eq!(still.status, SandboxStatus::Failed);
    assert_eq!(still.status_message, failed.status_message);
    assert_eq!(h.calls("stop", &failed), 0);
}

#[tokio::test]
async fn a_stop_the_driver_fails_leaves_the_sandbox_ready() {
    let h = harness().await;
    let rec = h.sandbox(&h.admin, "stubborn").await;
    h.fake.fail_stops(1);
    let e = h.control.stop(&h.admin, &rec.id).await.unwrap_err();
    assert!(matches!(e, ControlError::Driver(_)), "{e:?}");
    let now = h.record(&rec.id);
    assert_eq!(now.status, SandboxStatus::Ready);
    assert!(now.handle.is_some());
    // The next attempt goes through.
    let stopped = h.control.stop(&h.admin, &rec.id).await.unwrap();
    assert_eq!(stopped.status, SandboxStatus::Stopped);
}

#[tokio::test]
async fn start_of_a_stopped_sandbox_provisions_then_is_ready_on_its_storage() {
    let h = harness().await;
    let rec = h.stopped(&h.admin, "sleeper").await;
    let starting = h.control.start(&h.admin, "sleeper").await.unwrap();
    assert_eq!(starting.status, SandboxStatus::Provisioning);
    assert_eq!(h.record(&rec.id).status, SandboxStatus::Provisioning);
    let ready = h.settle(&rec.id).await;
    assert_eq!(ready.status, SandboxStatus::Ready);
    assert!(ready.handle.is_some());
    assert_eq!(ready.stopped_at, None);
    assert_eq!(h.calls("start", &rec), 1, "booted on its existing storage");
    assert_eq!(h.calls("create", &rec), 1, "only the first boot created it");
    assert_eq!(h.fake_state(&rec), Some(true));
}

#[tokio::test]
async fn start_of_a_failed_sandbox_boots_it_afresh() {
    let h = harness().await;
    let rec = h.failed(&h.admin, "retry").await;
    let starting = h.control.start(&h.admin, &rec.id).await.unwrap();
    assert_eq!(starting.status, SandboxStatus::Provisioning);
    assert_eq!(starting.status_message, None, "the old failure is cleared");
    let ready = h.settle(&rec.id).await;
    assert_eq!(ready.status, SandboxStatus::Ready);
    // The failed boot left no storage, so the start creates it.
    assert_eq!(h.calls("create", &rec), 2);
    assert_eq!(h.calls("start", &rec), 0);
}

#[tokio::test]
async fn a_start_that_fails_leaves_the_sandbox_failed() {
    let h = harness().await;
    let rec = h.stopped(&h.admin, "flaky").await;
    h.fake.fail_next_start("the jail would not come up");
    h.control.start(&h.admin, &rec.id).await.unwrap();
    let failed = h.settle(&rec.id).await;
    assert_eq!(failed.status, SandboxStatus::Failed);
    assert_eq!(
        failed.status_message.as_deref(),
        Some("the jail would not come up")
    );
    assert!(failed.handle.is_none());
}

#[tokio::test]
async fn start_of_a_ready_or_provisioning_sandbox_is_a_no_op() {
    let h = harness().await;
    let rec = h.sandbox(&h.admin, "awake").await;
    let again = h.control.start(&h.admin, &rec.id).await.unwrap();
    assert_eq!(again.status, SandboxStatus::Ready);
    assert_eq!(again.handle, rec.handle, "the same boot, not a new one");
    assert_eq!(h.calls("start", &rec), 0);
    assert_eq!(h.calls("create", &rec), 1);

    let booting = h
        .control
        .create(
            &h.admin,
            CreateSandbox {
                name: Some("booting".into()),
                ..Default::default()
            },
        )
        .unwrap();
    let same = h.control.start(&h.admin, &booting.id).await.unwrap();
    assert_eq!(same.status, SandboxStatus::Provisioning);
    h.settle(&booting.id).await;
    assert_eq!(h.calls("create", &booting), 1, "one boot only");
    assert_eq!(h.calls("start", &booting), 0);
}

#[tokio::test]
async fn a_non_persistent_sandbox_loses_its_storage_on_stop() {
    let h = harness().await;
    let rec = h
        .sandbox_with(
            &h.admin,
            CreateSandbox {
                name: Some("scratch".into()),
                persistent: Some(false),
                ..Default::default()
            },
        )
        .await;
    let stopped = h.control.stop(&h.admin, &rec.id).await.unwrap();
    assert_eq!(stopped.status, SandboxStatus::Stopped);
    assert_eq!(h.calls("destroy", &rec), 1);
    assert_eq!(h.fake_state(&rec), None, "its storage is gone");
    // The next start creates it afresh.
    h.control.start(&h.admin, &rec.id).await.unwrap();
    assert_eq!(h.settle(&rec.id).await.status, SandboxStatus::Ready);
    assert_eq!(h.calls("create", &rec), 2);
    assert_eq!(h.calls("start", &rec), 0);
}

#[tokio::test]
async fn nothing_but_delete_moves_a_deleting_sandbox() {
    let h = harness().await;
    let rec = h.deleting(&h.admin, "going").await;
    let stop = h.control.stop(&h.admin, &rec.id).await.unwrap_err();
    assert!(
        matches!(&stop, ControlError::NotReady(m) if m.contains("being deleted")),
        "{stop:?}"
    );
    let start = h.control.start(&h.admin, &rec.id).await.unwrap_err();
    assert!(
        matches!(&start, ControlError::NotReady(m) if m.contains("being deleted")),
        "{start:?}"
    );
    let update = h
        .control
        .update(
            &h.admin,
            &rec.id,
            UpdateSandbox {
                name: Some("renamed".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&update, ControlError::NotReady(m) if m.contains("being deleted")),
        "{update:?}"
    );
    let running = h.control.running_for(&h.admin, &rec.id).await.unwrap_err();
    assert!(matches!(running, ControlError::NotReady(_)), "{running:?}");
    let now = h.record(&rec.id);
    assert_eq!(now.status, SandboxStatus::Deleting);
    assert_eq!(now.name, "going");
}

#[tokio::test]
async fn the_guard_refuses_what_the_lifecycle_does_not_allow() {
    use SandboxStatus::{Deleting, Failed, Provisioning, Ready, Stopped};
    let h = harness().await;
    let mut rec = h.sandbox(&h.admin, "guarded").await;
    let all = [Provisioning, Ready, Stopped, Failed, Deleting];
    for from in all {
        for to in all {
            rec.status = from;
            let r = crate::control::guard(&rec, to);
            assert_eq!(r.is_ok(), from.can_become(to), "{from} -> {to}");
            if let Err(e) = r {
                assert!(matches!(e, ControlError::NotReady(_)), "{e:?}");
            }
        }
    }
}

#[tokio::test]
async fn auto_wake_starts_a_stopped_sandbox_for_a_data_plane_request() {
    let h = harness().await;
    let rec = h.stopped(&h.admin, "napping").await;
    let running = h.control.running_for(&h.admin, &rec.id).await.unwrap();
    assert_eq!(running.record.status, SandboxStatus::Ready);
    assert_eq!(Some(&running.handle), running.record.handle.as_ref());
    assert_eq!(h.calls("start", &rec), 1);
    assert_eq!(h.record(&rec.id).status, SandboxStatus::Ready);
    // The held sandbox counts as busy until the operation ends.
    assert_eq!(h.control.activity.get(&rec.id).map(|a| a.inflight), Some(1));
    drop(running);
    assert_eq!(h.control.activity.get(&rec.id).map(|a| a.inflight), Some(0));
}

#[tokio::test]
async fn a_failed_sandbox_is_not_woken_and_says_why() {
    let h = harness().await;
    let rec = h.failed(&h.admin, "dead").await;
    let e = h.control.running_for(&h.admin, &rec.id).await.unwrap_err();
    assert!(
        matches!(&e, ControlError::NotReady(m) if m.contains("no room at the inn")),
        "{e:?}"
    );
    assert_eq!(h.record(&rec.id).status, SandboxStatus::Failed);
}

#[tokio::test]
async fn a_wake_whose_boot_fails_reports_not_ready() {
    let h = harness().await;
    let rec = h.stopped(&h.admin, "wont-wake").await;
    h.fake.fail_next_start("boot failed");
    let e = h.control.running_for(&h.admin, &rec.id).await.unwrap_err();
    assert!(
        matches!(&e, ControlError::NotReady(m) if m.contains("boot failed")),
        "{e:?}"
    );
    assert_eq!(h.record(&rec.id).status, SandboxStatus::Failed);
}

#[tokio::test]
async fn a_crashed_sandbox_is_marked_stopped_by_the_request_that_finds_it() {
    let h = harness().await;
    let rec = h.sandbox(&h.admin, "crashy").await;
    h.fake.crash(&rec.runtime_id);
    let e = h
        .control
        .exec(
            &h.admin,
            &rec.id,
            crate::ExecRequest {
                command: "echo hi".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            ControlError::Driver(warren_driver::DriverError::Unreachable(_))
        ),
        "{e:?}"
    );
    let now = h.record(&rec.id);
    assert_eq!(now.status, SandboxStatus::Stopped);
    assert_eq!(
        now.status_message.as_deref(),
        Some("the sandbox's processes exited")
    );
    // The next request wakes it.
    let mut s = h
        .control
        .exec(
            &h.admin,
            &rec.id,
            crate::ExecRequest {
                command: "echo back".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let events = super::support::drain(&mut s).await;
    assert_eq!(
        super::support::output(&events, crate::Stream::Stdout, 0),
        b"back\n"
    );
}

#[tokio::test]
async fn a_data_plane_request_waits_for_a_provisioning_sandbox() {
    let h = harness().await;
    let rec = h
        .control
        .create(
            &h.admin,
            CreateSandbox {
                name: Some("just-made".into()),
                ..Default::default()
            },
        )
        .unwrap();
    let running = h.control.running_for(&h.admin, &rec.id).await.unwrap();
    assert_eq!(running.record.status, SandboxStatus::Ready);
    assert_eq!(h.calls("create", &rec), 1);
    assert_eq!(h.calls("start", &rec), 0, "waited, not woken");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_starts_and_stops_leave_record_and_driver_agreeing() {
    let h = harness().await;
    let rec = h.sandbox(&h.admin, "raced").await;
    for round in 0..5 {
        let tasks: Vec<_> = (0..12)
            .map(|i| {
                let control = h.control.clone();
                let admin = h.admin.clone();
                let id = rec.id.clone();
                tokio::spawn(async move {
                    if (i + round) % 2 == 0 {
                        control.start(&admin, &id).await.map(|_| ())
                    } else {
                        control.stop(&admin, &id).await.map(|_| ())
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        let now = h.settle(&rec.id).await;
        let running = h.fake_state(&rec) == Some(true);
        match now.status {
            SandboxStatus::Ready => {
                assert!(running, "round {round}: ready but not running");
                let handle = now.handle.as_ref().expect("a ready sandbox has a handle");
                assert!(
                    warren_driver::Driver::is_running(&h.fake, handle),
                    "round {round}: the stored handle is stale"
                );
            }
            SandboxStatus::Stopped => {
                assert!(!running, "round {round}: stopped but running");
                assert!(now.handle.is_none());
            }
            other => panic!("round {round}: {other}"),
        }
    }
}

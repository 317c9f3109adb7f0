//! The sweeper: idle stop, noticing crashed sandboxes, delete after stop, finishing
//! deletions, and failing abandoned boots.

use std::time::Duration;

use warren_types::SandboxStatus;

use super::support::{ago, harness};
use crate::CreateSandbox;

#[tokio::test]
async fn an_idle_sandbox_is_stopped_and_a_busy_or_unlimited_one_is_not() {
    let h = harness().await;
    let idle = h.sandbox(&h.admin, "idle").await;
    let busy = h.sandbox(&h.admin, "busy").await;
    let never = h
        .sandbox_with(
            &h.admin,
            CreateSandbox {
                name: Some("never".into()),
                idle_ttl_seconds: Some(0),
                ..Default::default()
            },
        )
        .await;
    // The API accepts only whole minutes; a one-second TTL in the record keeps the test short.
    h.rewrite(&idle.id, |r| r.config.idle_ttl_seconds = 1);
    h.rewrite(&busy.id, |r| r.config.idle_ttl_seconds = 1);
    // A data-plane operation in flight holds `busy` for the whole wait.
    let held = h.control.activity.hold(&busy.id);
    // Before the TTL nothing is idle.
    h.control.sweep_once().await.unwrap();
    assert_eq!(h.record(&idle.id).status, SandboxStatus::Ready);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    h.control.sweep_once().await.unwrap();

    let stopped = h.record(&idle.id);
    assert_eq!(stopped.status, SandboxStatus::Stopped);
    assert_eq!(
        stopped.status_message.as_deref(),
        Some("stopped after 1 s idle")
    );
    assert_eq!(h.fake_state(&idle), Some(false));
    let audit = h.audited("sandbox.idle_stop");
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0].target.as_deref(), Some(idle.id.as_str()));
    assert_eq!(h.record(&busy.id).status, SandboxStatus::Ready);
    assert_eq!(h.record(&never.id).status, SandboxStatus::Ready);

    // Activity resets the clock: once released, `busy` was just used.
    drop(held);
    h.control.sweep_once().await.unwrap();
    assert_eq!(h.record(&busy.id).status, SandboxStatus::Ready);
}

#[tokio::test]
async fn a_crashed_sandbox_is_marked_stopped_by_the_sweeper() {
    let h = harness().await;
    let rec = h.sandbox(&h.admin, "crashed").await;
    let fine = h.sandbox(&h.admin, "fine").await;
    h.fake.crash(&rec.runtime_id);
    h.control.sweep_once().await.unwrap();
    let now = h.record(&rec.id);
    assert_eq!(now.status, SandboxStatus::Stopped);
    assert_eq!(
        now.status_message.as_deref(),
        Some("the sandbox's processes exited")
    );
    assert!(now.handle.is_none());
    assert_eq!(h.record(&fine.id).status, SandboxStatus::Ready);
    // The next request wakes it.
    let running = h.control.running_for(&h.admin, &rec.id).await.unwrap();
    assert_eq!(running.record.status, SandboxStatus::Ready);
}

#[tokio::test]
async fn a_sandbox_stopped_too_long_is_deleted() {
    let h = harness().await;
    let old = h.stopped(&h.admin, "old").await;
    let recent = h.stopped(&h.admin, "recent").await;
    let forever = h.stopped(&h.admin, "forever").await;
    let failed = h.failed(&h.admin, "failed").await;
    let day = Duration::from_secs(24 * 3600);
    h.rewrite(&old.id, |r| {
        r.config.delete_after_stop_seconds = 3600;
        r.stopped_at = Some(ago(day));
    });
    h.rewrite(&recent.id, |r| r.config.delete_after_stop_seconds = 3600);
    h.rewrite(&forever.id, |r| {
        r.config.delete_after_stop_seconds = 0;
        r.stopped_at = Some(ago(day * 365));
    });
    h.rewrite(&failed.id, |r| {
        r.config.delete_after_stop_seconds = 60;
        r.stopped_at = Some(ago(day));
    });
    h.control.sweep_once().await.unwrap();
    assert!(!h.exists(&old.id));
    assert_eq!(h.fake_state(&old), None, "its storage went with it");
    let audit = h.audited("sandbox.auto_delete");
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0].target.as_deref(), Some(old.id.as_str()));
    assert!(h.exists(&recent.id));
    assert!(h.exists(&forever.id));
    assert!(h.exists(&failed.id), "a failed sandbox is not swept");
}

#[tokio::test]
async fn one_sandbox_failing_does_not_stop_the_sweep() {
    let h = harness().await;
    let a = h.sandbox(&h.admin, "a").await;
    let b = h.sandbox(&h.admin, "b").await;
    h.fake.crash(&a.runtime_id);
    h.fake.crash(&b.runtime_id);
    // The first stop fails; the sweep logs it and goes on to the other.
    h.fake.fail_stops(1);
    h.control.sweep_once().await.unwrap();
    let statuses = [h.record(&a.id).status, h.record(&b.id).status];
    assert!(statuses.contains(&SandboxStatus::Ready), "{statuses:?}");
    assert!(statuses.contains(&SandboxStatus::Stopped), "{statuses:?}");
    h.control.sweep_once().await.unwrap();
    assert_eq!(h.record(&a.id).status, SandboxStatus::Stopped);
    assert_eq!(h.record(&b.id).status, SandboxStatus::Stopped);
}

#[tokio::test]
async fn the_sweeper_runs_on_its_interval() {
    let dir = tempfile::tempdir().unwrap();
    let fake = warren_driver::fake::FakeDriver::new();
    let mut cfg = super::support::config(&dir, super::support::generous());
    cfg.sweep_interval = Duration::from_millis(20);
    let (control, key) = crate::Control::with_store(
        cfg,
        std::sync::Arc::new(fake.clone()),
        crate::SqliteStore::in_memory().unwrap(),
    )
    .await
    .unwrap();
    let admin = control.authenticate(&key.unwrap()).unwrap().unwrap();
    let rec = control
        .create(
            &admin,
            CreateSandbox {
                name: Some("swept".into()),
                ..Default::default()
            },
        )
        .unwrap();
    control
        .wait_settled(&rec.id, super::support::SETTLE)
        .await
        .unwrap();
    let sweeper = tokio::spawn(control.clone().sweep_forever());
    fake.crash(&rec.runtime_id);
    let stopped = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let r = control.record(&rec.id).unwrap();
            if r.status == SandboxStatus::Stopped {
                return r;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the sweeper noticed the crash");
    assert_eq!(
        stopped.status_message.as_deref(),
        Some("the sandbox's processes exited")
    );
    sweeper.abort();
}

#[tokio::test]
async fn a_boot_abandoned_long_ago_is_failed_and_one_in_progress_or_recent_is_not() {
    let h = harness().await;
    let long_ago = ago(Duration::from_secs(3600));
    // Left provisioning an hour ago by a process that went away mid-boot.
    let abandoned = h.sandbox(&h.admin, "abandoned").await;
    h.rewrite(&abandoned.id, |r| {
        r.status = SandboxStatus::Provisioning;
        r.updated_at = long_ago;
    });
    // Just as old, but a boot of this process holds its lock.
    let booting = h.sandbox(&h.admin, "booting").await;
    h.rewrite(&booting.id, |r| {
        r.status = SandboxStatus::Provisioning;
        r.updated_at = long_ago;
    });
    // Provisioning a moment ago (another process's boot, say).
    let recent = h.sandbox(&h.admin, "recent").await;
    h.rewrite(&recent.id, |r| r.status = SandboxStatus::Provisioning);

    let lock = h.control.lock_for(&booting.id);
    let held = lock.lock().await;
    h.control.sweep_once().await.unwrap();
    drop(held);

    let failed = h.record(&abandoned.id);
    assert_eq!(failed.status, SandboxStatus::Failed);
    assert!(
        failed
            .status_message
            .as_deref()
            .is_some_and(|m| m.contains("went away")),
        "{failed:?}"
    );
    assert_eq!(h.record(&booting.id).status, SandboxStatus::Provisioning);
    assert_eq!(h.record(&recent.id).status, SandboxStatus::Provisioning);
    // A failed sandbox starts afresh.
    let started = h.control.start(&h.admin, "abandoned").await.unwrap();
    let settled = h.settle(&started.id).await;
    assert_eq!(settled.status, SandboxStatus::Ready);
}

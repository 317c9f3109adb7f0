//! Recovery after a restart: re-adopt what runs, mark what died, finish deletions, remove
//! orphans.

use std::sync::Arc;

use warren_driver::fake::FakeDriver;
use warren_driver::{Driver, SandboxSpec};
use warren_types::{ImageRef, Limits, SandboxId, SandboxStatus};

use super::support::{config, generous, harness};
use crate::{Control, Store};

fn spec(id: &SandboxId) -> SandboxSpec {
    SandboxSpec {
        id: id.clone(),
        image: ImageRef::default_image(),
        limits: Limits {
            millicpus: 1000,
            memory_bytes: 1 << 30,
            disk_bytes: 1 << 30,
            pids: 64,
        },
        trust: String::new(),
        tier: warren_driver::Tier::Jail,
        volumes: Vec::new(),
    }
}

#[tokio::test]
async fn a_running_sandbox_is_re_adopted() {
    let h = harness().await;
    let rec = h.sandbox(&h.admin, "alive").await;
    h.control.recover().await.unwrap();
    let now = h.record(&rec.id);
    assert_eq!(now, rec, "untouched");
    assert_eq!(h.calls("stop", &rec), 0);
    assert_eq!(h.fake_state(&rec), Some(true));
}

#[tokio::test]
async fn a_ready_sandbox_that_died_is_stopped() {
    let h = harness().await;
    let rec = h.sandbox(&h.admin, "died").await;
    h.fake.crash(&rec.runtime_id);
    h.control.recover().await.unwrap();
    let now = h.record(&rec.id);
    assert_eq!(now.status, SandboxStatus::Stopped);
    assert!(now.handle.is_none());
    assert!(now.stopped_at.is_some());
    assert_eq!(
        now.status_message.as_deref(),
        Some("the sandbox's processes ended while the daemon was down")
    );
    assert_eq!(h.fake_state(&rec), Some(false), "its storage is kept");
    // And it starts again on that storage.
    h.control.start(&h.admin, &rec.id).await.unwrap();
    assert_eq!(h.settle(&rec.id).await.status, SandboxStatus::Ready);
    assert_eq!(h.calls("start", &rec), 1);
}

#[tokio::test]
async fn a_ready_sandbox_without_storage_is_failed() {
    let h = harness().await;
    let rec = h.sandbox(&h.admin, "lost").await;
    h.fake.destroy(&rec.runtime_id, None).await.unwrap();
    h.control.recover().await.unwrap();
    let now = h.record(&rec.id);
    assert_eq!(now.status, SandboxStatus::Failed);
    assert_eq!(
        now.status_message.as_deref(),
        Some("the sandbox's root filesystem is missing")
    );
    assert!(now.handle.is_none());
}

#[tokio::test]
async fn a_sandbox_that_cannot_be_stopped_after_a_restart_is_failed() {
    let h = harness().await;
    let rec = h.sandbox(&h.admin, "stuck").await;
    h.fake.crash(&rec.runtime_id);
    h.fake.fail_stops(1);
    h.control.recover().await.unwrap();
    let now = h.record(&rec.id);
    assert_eq!(now.status, SandboxStatus::Failed);
    assert_eq!(
        now.status_message.as_deref(),
        Some("the sandbox could not be stopped after a restart")
    );
}

#[tokio::test]
async fn a_boot_cut_short_by_the_restart_is_settled() {
    let h = harness().await;
    // A provisioning record with storage (a start cut short) and one without (a create).
    let started = h.stopped(&h.admin, "was-starting").await;
    h.rewrite(&started.id, |r| r.status = SandboxStatus::Provisioning);
    let created = h.failed(&h.admin, "was-creating").await;
    h.rewrite(&created.id, |r| {
        r.status = SandboxStatus::Provisioning;
        r.status_message = None;
    });
    h.control.recover().await.unwrap();
    assert_eq!(h.record(&started.id).status, SandboxStatus::Stopped);
    let created = h.record(&created.id);
    assert_eq!(created.status, SandboxStatus::Failed);
    assert!(created.status_message.is_some());
}

#[tokio::test]
async fn a_pending_deletion_is_finished_and_one_still_failing_keeps_its_storage() {
    let h = harness().await;
    let a = h.deleting(&h.admin, "pending-a").await;
    let b = h.deleting(&h.admin, "pending-b").await;
    // Recovery retries both at once, backoff or not; the first it tries fails again.
    h.fake.fail_destroys(1);
    h.control.recover().await.unwrap();
    let left: Vec<_> = [&a, &b].into_iter().filter(|r| h.exists(&r.id)).collect();
    assert_eq!(left.len(), 1, "one deletion finished, one failed again");
    let left = left[0];
    let gone = if left.id == a.id { &b } else { &a };
    assert_eq!(h.record(&left.id).status, SandboxStatus::Deleting);
    assert!(
        h.fake_state(left).is_some(),
        "the orphan sweep keeps what a pending deletion still refers to"
    );
    assert_eq!(h.fake_state(gone), None);
    // The next recovery finishes it.
    h.control.recover().await.unwrap();
    assert!(!h.exists(&left.id));
    assert_eq!(h.fake_state(left), None);
}

#[tokio::test]
async fn orphans_are_removed_and_stopped_sandboxes_kept() {
    let h = harness().await;
    let kept = h.stopped(&h.admin, "kept").await;
    let orphan = SandboxId::generate();
    h.fake.create(&spec(&orphan)).await.unwrap();
    assert!(h.fake.sandboxes().iter().any(|(id, _)| *id == orphan));
    h.control.recover().await.unwrap();
    assert!(!h.fake.sandboxes().iter().any(|(id, _)| *id == orphan));
    assert!(h.fake.calls().contains(&format!("gc {orphan}")));
    assert_eq!(h.fake_state(&kept), Some(false));
    assert_eq!(h.record(&kept.id).status, SandboxStatus::Stopped);
    // A stopped sandbox gets a stop at recovery, for anything a crash left behind.
    assert_eq!(h.calls("stop", &kept), 2);
}

#[tokio::test]
async fn a_restart_on_the_same_data_dir_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeDriver::new();
    let (first, key) = Control::open(config(&dir, generous()), Arc::new(fake.clone()))
        .await
        .unwrap();
    let admin = first.authenticate(&key.unwrap()).unwrap().unwrap();
    let live = first
        .create(
            &admin,
            crate::CreateSandbox {
                name: Some("live".into()),
                ..Default::default()
            },
        )
        .unwrap();
    let dead = first
        .create(
            &admin,
            crate::CreateSandbox {
                name: Some("dead".into()),
                ..Default::default()
            },
        )
        .unwrap();
    first
        .wait_settled(&live.id, super::support::SETTLE)
        .await
        .unwrap();
    first
        .wait_settled(&dead.id, super::support::SETTLE)
        .await
        .unwrap();
    fake.crash(&dead.runtime_id);
    let orphan = SandboxId::generate();
    fake.create(&spec(&orphan)).await.unwrap();
    drop(first);

    let (second, _) = Control::open(config(&dir, generous()), Arc::new(fake.clone()))
        .await
        .unwrap();
    let get = |id: &str| second.store.get_sandbox(id).unwrap().unwrap();
    assert_eq!(get(&live.id).status, SandboxStatus::Ready);
    assert_eq!(get(&dead.id).status, SandboxStatus::Stopped);
    assert!(!fake.sandboxes().iter().any(|(id, _)| *id == orphan));
    // The re-adopted sandbox serves requests without a new boot.
    let running = second.running(&live.id).await.unwrap();
    assert_eq!(running.record.handle, get(&live.id).handle);
}

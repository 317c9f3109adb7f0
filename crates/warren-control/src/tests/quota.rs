//! Quotas: the server's and each user's, at create and again at start.

use warren_types::SandboxStatus;

use super::support::{GIB, generous, harness_with};
use crate::{ControlError, CreateSandbox};

fn named(name: &str) -> CreateSandbox {
    CreateSandbox {
        name: Some(name.into()),
        ..Default::default()
    }
}

fn exhausted(e: &ControlError, words: &str) {
    assert!(
        matches!(e, ControlError::Exhausted(m) if m.contains(words)),
        "{e:?}"
    );
}

#[tokio::test]
async fn the_server_holds_at_most_max_sandboxes_in_any_state() {
    let mut limits = generous();
    limits.max_sandboxes = 3;
    let h = harness_with(limits).await;
    h.sandbox(&h.admin, "ready").await;
    let stopped = h.stopped(&h.admin, "stopped").await;
    h.failed(&h.admin, "failed").await;
    let e = h
        .control
        .create(&h.admin, named("one-too-many"))
        .unwrap_err();
    exhausted(&e, "at most 3 sandboxes");
    assert_eq!(h.control.list(&h.admin).unwrap().len(), 3);
    // Starting one adds no sandbox.
    h.control.start(&h.admin, &stopped.id).await.unwrap();
    assert_eq!(h.settle(&stopped.id).await.status, SandboxStatus::Ready);
    // Deleting one makes room.
    h.control.delete(&h.admin, "failed").await.unwrap();
    h.sandbox(&h.admin, "fits").await;
}

#[tokio::test]
async fn each_user_holds_at_most_their_quota() {
    let mut limits = generous();
    limits.user_max_sandboxes = Some(1);
    let h = harness_with(limits).await;
    let ivy = h.user("ivy");
    let jack = h.user("jack");
    h.sandbox(&ivy, "ivys").await;
    let e = h.control.create(&ivy, named("ivys-second")).unwrap_err();
    exhausted(&e, "each user holds at most 1");
    // Others are unaffected.
    h.sandbox(&jack, "jacks").await;
    h.sandbox(&h.admin, "admins").await;
}

#[tokio::test]
async fn committed_memory_is_bounded_and_stopped_sandboxes_commit_none() {
    let mut limits = generous();
    limits.max_committed_mem_bytes = Some(2 * GIB);
    let h = harness_with(limits).await;
    let a = h.sandbox(&h.admin, "a").await;
    h.sandbox(&h.admin, "b").await;
    let e = h.control.create(&h.admin, named("c")).unwrap_err();
    exhausted(&e, "memory quota");
    // A smaller one does not fit either: the server is full.
    let small = CreateSandbox {
        mem_bytes: Some(64 << 20),
        ..named("small")
    };
    exhausted(
        &h.control.create(&h.admin, small.clone()).unwrap_err(),
        "memory quota",
    );
    h.control.stop(&h.admin, &a.id).await.unwrap();
    h.sandbox_with(&h.admin, small).await;
    // `a` no longer fits back in beside b and small.
    let e = h.control.start(&h.admin, &a.id).await.unwrap_err();
    exhausted(&e, "memory quota");
    assert_eq!(h.record(&a.id).status, SandboxStatus::Stopped);
}

#[tokio::test]
async fn start_rechecks_the_users_memory_quota() {
    let mut limits = generous();
    limits.user_max_mem_bytes = Some(GIB);
    let h = harness_with(limits).await;
    let kim = h.user("kim");
    let first = h.stopped(&kim, "first").await;
    let second = h.sandbox(&kim, "second").await;
    let e = h.control.start(&kim, &first.id).await.unwrap_err();
    exhausted(&e, "each user's running sandboxes");
    assert_eq!(h.record(&first.id).status, SandboxStatus::Stopped);
    assert_eq!(h.calls("start", &first), 0);
    // Auto-wake is held to the same quota.
    let e = h.control.running_for(&kim, &first.id).await.unwrap_err();
    exhausted(&e, "each user's running sandboxes");
    // Another user's memory is their own.
    h.sandbox(&h.admin, "admins").await;
    // Stopping the other makes room.
    h.control.stop(&kim, &second.id).await.unwrap();
    h.control.start(&kim, &first.id).await.unwrap();
    assert_eq!(h.settle(&first.id).await.status, SandboxStatus::Ready);
}

#[tokio::test]
async fn a_start_that_grew_past_the_quota_is_refused() {
    let mut limits = generous();
    limits.user_max_mem_bytes = Some(2 * GIB);
    let h = harness_with(limits).await;
    let rec = h.stopped(&h.admin, "grower").await;
    h.control
        .update(
            &h.admin,
            &rec.id,
            crate::UpdateSandbox {
                mem_bytes: Some(3 * GIB),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let e = h.control.start(&h.admin, &rec.id).await.unwrap_err();
    exhausted(&e, "memory quota");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_creates_cannot_all_pass_the_check() {
    let mut limits = generous();
    limits.max_sandboxes = 3;
    let h = harness_with(limits).await;
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let control = h.control.clone();
            let admin = h.admin.clone();
            tokio::spawn(async move { control.create(&admin, named(&format!("racer-{i}"))) })
        })
        .collect();
    let mut created = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => created += 1,
            Err(e) => exhausted(&e, "at most 3"),
        }
    }
    assert_eq!(created, 3);
    assert_eq!(h.control.list(&h.admin).unwrap().len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_starts_cannot_all_pass_the_memory_check() {
    let mut limits = generous();
    limits.max_committed_mem_bytes = Some(2 * GIB);
    let h = harness_with(limits).await;
    let mut ids = Vec::new();
    for i in 0..6 {
        ids.push(h.stopped(&h.admin, &format!("s{i}")).await.id);
    }
    let tasks: Vec<_> = ids
        .iter()
        .map(|id| {
            let control = h.control.clone();
            let admin = h.admin.clone();
            let id = id.clone();
            tokio::spawn(async move { control.start(&admin, &id).await })
        })
        .collect();
    let mut started = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => started += 1,
            Err(e) => exhausted(&e, "memory quota"),
        }
    }
    assert_eq!(started, 2);
    let mut ready = 0;
    for id in &ids {
        if h.settle(id).await.status == SandboxStatus::Ready {
            ready += 1;
        }
    }
    assert_eq!(ready, 2);
}

//! `delete`: the record goes once the cleanup succeeds; a failed cleanup leaves the deletion
//! pending for the sweeper; other users' sandboxes cannot be reached.

use warren_types::SandboxStatus;

use super::support::harness;
use crate::{ControlError, ExecRequest, UpdateSandbox};

#[tokio::test]
async fn delete_of_each_status_removes_record_and_storage() {
    let h = harness().await;
    let ready = h.sandbox(&h.admin, "ready").await;
    let stopped = h.stopped(&h.admin, "stopped").await;
    let failed = h.failed(&h.admin, "failed").await;
    let deleting = h.deleting(&h.admin, "deleting").await;
    for rec in [&ready, &stopped, &failed, &deleting] {
        h.control.delete(&h.admin, &rec.id).await.unwrap();
        assert!(!h.exists(&rec.id), "{} is still recorded", rec.name);
        assert_eq!(h.fake_state(rec), None, "{} still has storage", rec.name);
        let e = h.control.find(&h.admin, &rec.name).unwrap_err();
        assert!(matches!(e, ControlError::NotFound(_)), "{e:?}");
        assert!(h.control.activity.get(&rec.id).is_none());
    }
    assert_eq!(
        h.calls("destroy", &deleting),
        2,
        "the pending one was retried"
    );
    assert!(h.control.list(&h.admin).unwrap().is_empty());
    // A name is free again once its sandbox is gone.
    h.sandbox(&h.admin, "ready").await;
}

#[tokio::test]
async fn a_missing_sandbox_is_not_found_and_a_vanished_one_is_already_deleted() {
    let h = harness().await;
    let e = h.control.delete(&h.admin, "nothing").await.unwrap_err();
    assert!(matches!(e, ControlError::NotFound(_)), "{e:?}");
    // A deletion that finds the record gone (a race with another delete) succeeds.
    h.control
        .delete_id("00000000-0000-0000-0000-000000000000")
        .await
        .unwrap();
}

#[tokio::test]
async fn a_failed_cleanup_leaves_the_deletion_pending_with_backoff() {
    let h = harness().await;
    let rec = h.deleting(&h.admin, "sticky").await;
    assert_eq!(
        rec.status_message.as_deref(),
        Some("delete pending: the sandbox's files could not be removed yet; retrying")
    );
    assert!(h.fake_state(&rec).is_some(), "its storage is still there");
    assert!(!h.control.pending_deletes.due(&rec.id), "backing off");
    // The sweeper leaves it alone while the backoff runs.
    h.control.sweep_once().await.unwrap();
    assert_eq!(h.calls("destroy", &rec), 1);
    assert!(h.exists(&rec.id));
    // Another failure keeps it pending and the message unchanged.
    h.fake.fail_destroys(1);
    h.control.delete_id(&rec.id).await.unwrap();
    assert_eq!(h.calls("destroy", &rec), 2);
    assert_eq!(h.record(&rec.id).status_message, rec.status_message);
    // Once due, the sweeper finishes it.
    h.control.pending_deletes.done(&rec.id);
    assert!(h.control.pending_deletes.due(&rec.id));
    h.control.sweep_once().await.unwrap();
    assert!(!h.exists(&rec.id));
    assert_eq!(h.fake_state(&rec), None);
}

#[tokio::test]
async fn a_pending_deletion_is_still_visible_as_deleting() {
    let h = harness().await;
    let rec = h.deleting(&h.admin, "visible").await;
    let found = h.control.find(&h.admin, "visible").unwrap();
    assert_eq!(found.status, SandboxStatus::Deleting);
    let counts = h.control.counts().unwrap();
    assert!(counts.contains(&("deleting", 1)), "{counts:?}");
    // Its name stays taken until it is gone.
    let e = h
        .control
        .create(
            &h.admin,
            crate::CreateSandbox {
                name: Some("visible".into()),
                ..Default::default()
            },
        )
        .unwrap_err();
    assert!(matches!(e, ControlError::Conflict(_)), "{e:?}");
    h.control.delete(&h.admin, &rec.id).await.unwrap();
    assert!(!h.exists(&rec.id));
}

#[tokio::test]
async fn another_users_sandbox_is_not_found_and_admins_see_all() {
    let h = harness().await;
    let alice = h.user("alice");
    let bob = h.user("bob");
    let rec = h.sandbox(&alice, "alices").await;
    assert_eq!(rec.created_by, alice.user_id);

    let not_found = |e: ControlError| assert!(matches!(e, ControlError::NotFound(_)), "{e:?}");
    not_found(h.control.find(&bob, "alices").unwrap_err());
    not_found(h.control.find(&bob, &rec.id).unwrap_err());
    not_found(h.control.delete(&bob, &rec.id).await.unwrap_err());
    not_found(h.control.stop(&bob, &rec.id).await.unwrap_err());
    not_found(h.control.start(&bob, &rec.id).await.unwrap_err());
    not_found(
        h.control
            .update(&bob, &rec.id, UpdateSandbox::default())
            .await
            .unwrap_err(),
    );
    not_found(h.control.running_for(&bob, &rec.id).await.unwrap_err());
    not_found(
        h.control
            .exec(
                &bob,
                &rec.id,
                ExecRequest {
                    command: "echo hi".into(),
                    ..Default::default()
                },
            )
            .await
            .unwrap_err(),
    );
    assert!(h.control.list(&bob).unwrap().is_empty());
    assert_eq!(h.record(&rec.id).status, SandboxStatus::Ready, "untouched");

    assert_eq!(h.control.list(&alice).unwrap().len(), 1);
    assert_eq!(h.control.list(&h.admin).unwrap().len(), 1);
    h.control.find(&h.admin, "alices").unwrap();
    h.control.delete(&h.admin, "alices").await.unwrap();
    assert!(!h.exists(&rec.id));
}

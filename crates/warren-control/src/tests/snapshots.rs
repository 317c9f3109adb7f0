//! Snapshots (capture, names and tags, lookup, deletion, the default) and forks.

use std::collections::BTreeMap;
use std::future::Future;

use warren_types::{RunConfig, SandboxStatus};

use super::support::{SETTLE, harness};
use crate::{
    CaptureSnapshot, ControlError, CreateSandbox, ForkSandbox, ListQuery, SnapshotStatus,
    default_snapshot_id, snapshot_image,
};

async fn put(h: &super::support::Harness, id: &str, path: &str, data: &[u8]) {
    let mut up = h.control.upload(&h.admin, id, path).await.unwrap();
    h.control
        .upload_chunk(&mut up, data.to_vec())
        .await
        .unwrap();
    h.control.finish_upload(&h.admin, up).await.unwrap();
}

fn capture(name: &str, tag: Option<&str>) -> CaptureSnapshot {
    CaptureSnapshot {
        name: name.into(),
        tag: tag.map(Into::into),
        ..Default::default()
    }
}

fn all() -> ListQuery {
    ListQuery {
        limit: Some(500),
        ..Default::default()
    }
}

#[tokio::test]
async fn the_default_image_is_a_snapshot_with_a_stable_id() {
    let h = harness().await;
    let id = default_snapshot_id();
    assert_eq!(id, default_snapshot_id());
    assert!(uuid::Uuid::parse_str(&id).is_ok());
    for r in [id.as_str(), "system/default", "system/default:latest"] {
        let v = h.control.get_snapshot(&h.admin, r).unwrap();
        assert_eq!(v.record.id, id, "{r}");
        assert_eq!(v.record.status, SnapshotStatus::Ready);
        assert_eq!(v.tags, ["latest"]);
    }
    let listed = h.control.list_snapshots(&h.admin, &all()).unwrap().items;
    assert_eq!(listed[0].record.id, id);
    // Booting by its id is booting the default image.
    let rec = h
        .sandbox_with(
            &h.admin,
            CreateSandbox {
                snapshot: Some(id.clone()),
                ..Default::default()
            },
        )
        .await;
    assert_eq!(rec.status, SandboxStatus::Ready);
    assert_eq!(rec.config.snapshot_id.as_deref(), Some(id.as_str()));
    let err = h.control.delete_snapshot(&h.admin, &id).await.unwrap_err();
    assert!(matches!(err, ControlError::Forbidden(_)), "{err:?}");
}

#[tokio::test]
async fn a_capture_boots_with_the_files_but_not_tmp_and_the_source_keeps_running() {
    let h = harness().await;
    let src = h.sandbox(&h.admin, "src").await;
    put(&h, &src.id, "/data/kept.txt", b"kept").await;
    put(&h, &src.id, "/tmp/scratch.txt", b"scratch").await;
    let v = h
        .control
        .capture(&h.admin, "src", capture("team/env", Some("v1")))
        .await
        .unwrap();
    assert_eq!(v.record.status, SnapshotStatus::Ready);
    assert_eq!(v.record.source_sandbox_id.as_deref(), Some(src.id.as_str()));
    assert_eq!(v.tags, ["v1"]);
    assert_eq!(v.record.fs_capacity_bytes, src.config.fs_capacity_bytes);
    assert_eq!(
        h.record(&src.id).status,
        SandboxStatus::Ready,
        "source still runs"
    );
    assert_eq!(h.fake_state(&src), Some(true));

    for by in [v.record.id.clone(), "team/env:v1".to_owned()] {
        let child = h
            .sandbox_with(
                &h.admin,
                CreateSandbox {
                    snapshot: Some(by.clone()),
                    ..Default::default()
                },
            )
            .await;
        assert_eq!(child.status, SandboxStatus::Ready, "{by}");
        assert_eq!(
            child.config.snapshot_id.as_deref(),
            Some(v.record.id.as_str())
        );
        assert_eq!(
            child.config.snapshot,
            snapshot_image(&v.record.id).to_string()
        );
        assert_eq!(
            h.fake.file(&child.runtime_id, "/data/kept.txt").as_deref(),
            Some(&b"kept"[..])
        );
        assert_eq!(h.fake.file(&child.runtime_id, "/tmp/scratch.txt"), None);
        h.control.delete(&h.admin, &child.id).await.unwrap();
    }
}

#[tokio::test]
async fn tags_move_like_dockers_and_bare_names_mean_latest() {
    let h = harness().await;
    h.sandbox(&h.admin, "a").await;
    let first = h
        .control
        .capture(&h.admin, "a", capture("app", None))
        .await
        .unwrap();
    assert_eq!(first.tags, ["latest"]);
    let second = h
        .control
        .capture(&h.admin, "a", capture("app", None))
        .await
        .unwrap();
    assert_ne!(first.record.id, second.record.id);
    // The tag moved: the first keeps its id and is now dangling.
    assert_eq!(
        h.control
            .get_snapshot(&h.admin, &first.record.id)
            .unwrap()
            .tags,
        Vec::<String>::new()
    );
    assert_eq!(
        h.control.get_snapshot(&h.admin, "app").unwrap().record.id,
        second.record.id
    );
    assert_eq!(
        h.control
            .get_snapshot(&h.admin, "app:latest")
            .unwrap()
            .record
            .id,
        second.record.id
    );
    let tags = h.control.snapshot_tags(&h.admin, "app").unwrap();
    assert_eq!(tags, [("latest".to_owned(), second.record.id.clone())]);
    assert!(matches!(
        h.control.snapshot_tags(&h.admin, "nobody").unwrap_err(),
        ControlError::NotFound(_)
    ));
    assert!(matches!(
        h.control.get_snapshot(&h.admin, "app:nope").unwrap_err(),
        ControlError::NotFound(_)
    ));
    // Listing filters by a case-insensitive substring and pages.
    let q = ListQuery {
        name_contains: Some("APP".into()),
        limit: Some(1),
        offset: Some(1),
        ..Default::default()
    };
    let page = h.control.list_snapshots(&h.admin, &q).unwrap().items;
    assert_eq!(page.len(), 1);
    assert_eq!(page[0].record.name, "app");
    assert_eq!(
        h.control
            .list_snapshots(
                &h.admin,
                &ListQuery {
                    name_contains: Some("app".into()),
                    ..all()
                }
            )
            .unwrap()
            .items
            .len(),
        2
    );
}

#[tokio::test]
async fn names_are_checked_and_system_is_read_only() {
    let h = harness().await;
    h.sandbox(&h.admin, "a").await;
    for bad in ["", "Upper", "a//b", "-x", "x-", &"a".repeat(256)] {
        let err = h
            .control
            .capture(&h.admin, "a", capture(bad, None))
            .await
            .unwrap_err();
        assert!(matches!(err, ControlError::Config(_)), "{bad}: {err:?}");
    }
    let err = h
        .control
        .capture(&h.admin, "a", capture("system/mine", None))
        .await
        .unwrap_err();
    assert!(matches!(err, ControlError::Forbidden(_)), "{err:?}");
    let err = h
        .control
        .capture(&h.admin, "a", capture("ok", Some(".bad")))
        .await
        .unwrap_err();
    assert!(matches!(err, ControlError::Config(_)), "{err:?}");
    let err = h
        .control
        .capture(&h.admin, "missing", capture("ok", None))
        .await
        .unwrap_err();
    assert!(matches!(err, ControlError::NotFound(_)), "{err:?}");
}

#[tokio::test]
async fn a_snapshot_in_use_cannot_be_deleted_and_run_config_and_labels_are_inherited() {
    let h = harness().await;
    h.sandbox_with(
        &h.admin,
        CreateSandbox {
            name: Some("src".into()),
            run_config: Some(RunConfig {
                work_dir: Some("/srv".into()),
                env_vars: BTreeMap::from([("A".into(), "1".into())]),
                ..Default::default()
            }),
            labels: Some(BTreeMap::from([("team".into(), "x".into())])),
            ..Default::default()
        },
    )
    .await;
    let v = h
        .control
        .capture(&h.admin, "src", capture("env", None))
        .await
        .unwrap();
    let child = h
        .sandbox_with(
            &h.admin,
            CreateSandbox {
                name: Some("child".into()),
                snapshot: Some("env".into()),
                run_config: Some(RunConfig {
                    env_vars: BTreeMap::from([("B".into(), "2".into())]),
                    ..Default::default()
                }),
                ..Default::default()
            },
        )
        .await;
    assert_eq!(child.config.run_config.work_dir.as_deref(), Some("/srv"));
    assert_eq!(child.config.run_config.env_vars.len(), 2);
    assert_eq!(
        child.config.labels.get("team").map(String::as_str),
        Some("x")
    );
    let err = h
        .control
        .delete_snapshot(&h.admin, "env")
        .await
        .unwrap_err();
    assert!(matches!(err, ControlError::Conflict(_)), "{err:?}");
    h.control.delete(&h.admin, "child").await.unwrap();
    h.control.delete_snapshot(&h.admin, "env").await.unwrap();
    assert!(
        h.fake
            .calls()
            .iter()
            .any(|c| c == &format!("remove-image {}", snapshot_image(&v.record.id)))
    );
    assert!(matches!(
        h.control.get_snapshot(&h.admin, &v.record.id).unwrap_err(),
        ControlError::NotFound(_)
    ));
    // A snapshot smaller than asked is refused at create.
    let v = h
        .control
        .capture(&h.admin, "src", capture("env2", None))
        .await
        .unwrap();
    let err = h
        .control
        .create(
            &h.admin,
            CreateSandbox {
                snapshot: Some(v.record.id.clone()),
                fs_capacity_bytes: Some(v.record.fs_capacity_bytes / 2),
                ..Default::default()
            },
        )
        .unwrap_err();
    assert!(matches!(err, ControlError::Config(_)), "{err:?}");
}

#[tokio::test]
async fn snapshots_of_another_workspace_do_not_resolve() {
    let h = harness().await;
    h.sandbox(&h.admin, "a").await;
    let v = h
        .control
        .capture(&h.admin, "a", capture("mine", None))
        .await
        .unwrap();
    let mut other = h.admin.clone();
    other.workspace_id = "another-workspace".into();
    assert!(matches!(
        h.control.get_snapshot(&other, &v.record.id).unwrap_err(),
        ControlError::NotFound(_)
    ));
    assert!(matches!(
        h.control.get_snapshot(&other, "mine").unwrap_err(),
        ControlError::NotFound(_)
    ));
}

#[tokio::test]
async fn forks_copy_the_parents_files_and_diverge_while_the_parent_runs() {
    let h = harness().await;
    let parent = h.sandbox(&h.admin, "parent").await;
    put(&h, &parent.id, "/data/state.txt", b"parent").await;
    let forks = h
        .control
        .fork(
            &h.admin,
            "parent",
            ForkSandbox {
                count: Some(3),
                names: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(forks.len(), 3);
    let forks = h.control.wait_forks(&forks, SETTLE).await.unwrap();
    for f in &forks {
        assert_eq!(f.status, SandboxStatus::Ready);
        assert!(f.name.starts_with("parent-fork-"), "{}", f.name);
        assert_eq!(
            h.fake.file(&f.runtime_id, "/data/state.txt").as_deref(),
            Some(&b"parent"[..])
        );
    }
    put(&h, &forks[0].id, "/data/state.txt", b"fork0").await;
    assert_eq!(
        h.fake
            .file(&parent.runtime_id, "/data/state.txt")
            .as_deref(),
        Some(&b"parent"[..])
    );
    assert_eq!(
        h.fake
            .file(&forks[1].runtime_id, "/data/state.txt")
            .as_deref(),
        Some(&b"parent"[..])
    );
    assert_eq!(h.record(&parent.id).status, SandboxStatus::Ready);

    let named = h
        .control
        .fork(
            &h.admin,
            "parent",
            ForkSandbox {
                count: None,
                names: Some(vec!["f1".into(), "f2".into()]),
            },
        )
        .await
        .unwrap();
    assert_eq!(
        named.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(),
        ["f1", "f2"]
    );
    // A taken name fails the whole request, before any copy: nothing of it is left.
    let before = h.control.list(&h.admin).unwrap().len();
    let storage_before = h.fake.sandboxes().len();
    let calls_before = h.fake.calls().len();
    let err = h
        .control
        .fork(
            &h.admin,
            "parent",
            ForkSandbox {
                count: None,
                names: Some(vec!["f3".into(), "f1".into()]),
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(err, ControlError::Conflict(_)), "{err:?}");
    assert_eq!(h.control.list(&h.admin).unwrap().len(), before);
    assert_eq!(h.fake.sandboxes().len(), storage_before);
    let calls = h.fake.calls();
    assert!(
        !calls[calls_before..].iter().any(|c| c.starts_with("fork")),
        "{calls:?}"
    );
    for bad in [Some(0), Some(65)] {
        let err = h
            .control
            .fork(
                &h.admin,
                "parent",
                ForkSandbox {
                    count: bad,
                    names: None,
                },
            )
            .await
            .unwrap_err();
        assert!(matches!(err, ControlError::Config(_)), "{err:?}");
    }
}

#[tokio::test]
async fn a_failed_copy_among_forks_copied_together_leaves_none_of_them() {
    let h = harness().await;
    let parent = h.sandbox(&h.admin, "parent").await;
    put(&h, &parent.id, "/data/state.txt", b"parent").await;
    let before = h.control.list(&h.admin).unwrap().len();
    let storage_before = h.fake.sandboxes().len();
    // The second of three copies, taken at the same time, fails.
    h.fake.fail_fork_copy(1);
    let err = h
        .control
        .fork(
            &h.admin,
            "parent",
            ForkSandbox {
                count: Some(3),
                names: None,
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(err, ControlError::Driver(_)), "{err:?}");
    // All three copies ran, together: every one started before the first was done.
    let calls: Vec<_> = h
        .fake
        .calls()
        .into_iter()
        .filter(|c| c.starts_with("fork"))
        .collect();
    assert_eq!(calls.len(), 6, "{calls:?}");
    assert!(
        calls[..3].iter().all(|c| c.starts_with("fork-start ")),
        "{calls:?}"
    );
    // No record and no files of any of the three; the parent as it was.
    assert_eq!(h.control.list(&h.admin).unwrap().len(), before);
    assert_eq!(h.fake.sandboxes().len(), storage_before);
    assert_eq!(h.record(&parent.id).status, SandboxStatus::Ready);
    assert_eq!(
        h.fake
            .file(&parent.runtime_id, "/data/state.txt")
            .as_deref(),
        Some(&b"parent"[..])
    );
    // And the next fork works.
    let again = h
        .control
        .fork(&h.admin, "parent", ForkSandbox::default())
        .await
        .unwrap();
    assert_eq!(again.len(), 1);
}

#[tokio::test]
async fn forks_are_made_and_booted_when_the_caller_goes_away_mid_request() {
    let h = harness().await;
    h.sandbox(&h.admin, "parent").await;
    // The request's future is dropped after its first poll, as a client disconnect drops the
    // handler.
    let mut request = Box::pin(h.control.fork(
        &h.admin,
        "parent",
        ForkSandbox {
            count: None,
            names: Some(vec!["kept-1".into(), "kept-2".into()]),
        },
    ));
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    assert!(request.as_mut().poll(&mut cx).is_pending());
    drop(request);
    for name in ["kept-1", "kept-2"] {
        let deadline = tokio::time::Instant::now() + SETTLE;
        let rec = loop {
            if let Ok(rec) = h.control.find(&h.admin, name) {
                break rec;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{name} was never made"
            );
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        };
        let rec = h.control.wait_ready(&rec.id, SETTLE).await.unwrap();
        assert_eq!(rec.status, SandboxStatus::Ready, "{name}");
    }
}

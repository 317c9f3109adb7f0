//! `create`: validation, admission, the record, and the boot in the background.

use warren_driver::ImageStatus;
use warren_types::{ImageRef, SandboxStatus};

use super::support::{generous, harness, harness_with};
use crate::{ConfigError, ControlError, CreateSandbox, Store};

fn named(name: &str) -> CreateSandbox {
    CreateSandbox {
        name: Some(name.into()),
        ..Default::default()
    }
}

#[tokio::test]
async fn create_returns_provisioning_then_boots_to_ready() {
    let h = harness().await;
    let rec = h.control.create(&h.admin, named("box")).unwrap();
    assert_eq!(rec.status, SandboxStatus::Provisioning);
    assert_eq!(rec.name, "box");
    assert!(rec.handle.is_none());
    assert_eq!(rec.created_by, h.admin.user_id);
    assert_eq!(rec.workspace_id, h.admin.workspace_id);
    // Defaults come from one place.
    assert_eq!(
        rec.config,
        crate::SandboxConfig {
            snapshot_id: Some(crate::default_snapshot_id()),
            ..crate::SandboxConfig::default()
        }
    );
    assert_eq!(rec.config.snapshot, ImageRef::default_image().to_string());

    let ready = h.settle(&rec.id).await;
    assert_eq!(ready.status, SandboxStatus::Ready);
    assert_eq!(ready.status_message, None);
    let handle = ready.handle.as_ref().expect("a ready sandbox has a handle");
    assert_eq!(handle.id, rec.runtime_id);
    assert_eq!(h.calls("create", &rec), 1);
    assert_eq!(h.fake_state(&rec), Some(true), "the fake runs it");
    assert_eq!(
        h.control.dataplane_url(&ready),
        format!("http://warren.test/dp/{}", rec.id)
    );
    let counts = h.control.counts().unwrap();
    assert!(counts.contains(&("ready", 1)), "{counts:?}");
    assert!(counts.contains(&("provisioning", 0)), "{counts:?}");
    let metrics = h.control.metrics().render(&counts);
    assert!(
        metrics.contains("warren_sandbox_create_seconds_count 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn the_boot_gets_the_sandboxes_shape() {
    let h = harness().await;
    let rec = h
        .sandbox_with(
            &h.admin,
            CreateSandbox {
                name: Some("shaped".into()),
                vcpus: Some(2),
                mem_bytes: Some(512 << 20),
                fs_capacity_bytes: Some(1 << 30),
                idle_ttl_seconds: Some(120),
                delete_after_stop_seconds: Some(0),
                persistent: Some(false),
                labels: Some([("team".into(), "infra".into())].into()),
                ..Default::default()
            },
        )
        .await;
    assert_eq!(rec.config.vcpus, 2);
    assert_eq!(rec.config.mem_bytes, 512 << 20);
    assert_eq!(rec.config.fs_capacity_bytes, 1 << 30);
    assert_eq!(rec.config.idle_ttl_seconds, 120);
    assert_eq!(rec.config.delete_after_stop_seconds, 0);
    assert!(!rec.config.persistent);
    assert_eq!(
        rec.config.labels.get("team").map(String::as_str),
        Some("infra")
    );
    // What was stored is what was returned.
    assert_eq!(h.record(&rec.id), rec);
}

#[tokio::test]
async fn a_name_is_generated_when_absent() {
    let h = harness().await;
    let a = h
        .control
        .create(&h.admin, CreateSandbox::default())
        .unwrap();
    let b = h
        .control
        .create(&h.admin, CreateSandbox::default())
        .unwrap();
    for rec in [&a, &b] {
        assert!(rec.name.starts_with("sandbox-"), "{}", rec.name);
        assert_eq!(rec.name.len(), "sandbox-".len() + 6, "{}", rec.name);
        crate::config::validate_name(&rec.name).unwrap();
    }
    assert_ne!(a.name, b.name);
    assert_eq!(h.control.find(&h.admin, &a.name).unwrap().id, a.id);
}

#[tokio::test]
async fn a_taken_name_is_a_conflict_and_creates_nothing() {
    let h = harness().await;
    h.sandbox(&h.admin, "twin").await;
    let e = h.control.create(&h.admin, named("twin")).unwrap_err();
    assert!(
        matches!(&e, ControlError::Conflict(m) if m.contains("twin")),
        "{e:?}"
    );
    assert_eq!(h.control.list(&h.admin).unwrap().len(), 1);
}

#[tokio::test]
async fn invalid_requests_are_refused_before_anything_is_stored() {
    let h = harness().await;
    let mut limits = generous();
    limits.max_vcpus = 4;
    limits.max_mem_bytes = 2 << 30;
    let tight = harness_with(limits).await;
    let cases: Vec<(&str, CreateSandbox)> = vec![
        ("bad name", named("-leading-dash")),
        ("uuid name", named(&uuid::Uuid::new_v4().to_string())),
        (
            "ttl not a multiple of 60",
            CreateSandbox {
                idle_ttl_seconds: Some(61),
                ..Default::default()
            },
        ),
        (
            "delete_after_stop not a multiple of 60",
            CreateSandbox {
                delete_after_stop_seconds: Some(90),
                ..Default::default()
            },
        ),
        (
            "zero vcpus",
            CreateSandbox {
                vcpus: Some(0),
                ..Default::default()
            },
        ),
        (
            "tiny memory",
            CreateSandbox {
                mem_bytes: Some(1 << 20),
                ..Default::default()
            },
        ),
        (
            "tiny disk",
            CreateSandbox {
                fs_capacity_bytes: Some(1 << 20),
                ..Default::default()
            },
        ),
    ];
    for (what, req) in cases {
        let e = h.control.create(&h.admin, req).unwrap_err();
        assert!(
            matches!(e, ControlError::Config(ConfigError::Invalid(_))),
            "{what}: {e:?}"
        );
    }
    // Above the server's per-sandbox maxima, naming the limit.
    for (what, req, limit) in [
        (
            "vcpus",
            CreateSandbox {
                vcpus: Some(8),
                ..Default::default()
            },
            "vcpus 8",
        ),
        (
            "memory",
            CreateSandbox {
                mem_bytes: Some(4 << 30),
                ..Default::default()
            },
            "mem_bytes",
        ),
    ] {
        let e = tight.control.create(&tight.admin, req).unwrap_err();
        assert!(
            matches!(&e, ControlError::Config(ConfigError::Invalid(m)) if m.contains(limit)),
            "{what}: {e:?}"
        );
    }
    let rel = CreateSandbox {
        run_config: Some(crate::RunConfig {
            work_dir: Some("relative".into()),
            ..Default::default()
        }),
        ..Default::default()
    };
    let e = h.control.create(&h.admin, rel).unwrap_err();
    assert!(
        matches!(e, ControlError::Config(ConfigError::Malformed(_))),
        "{e:?}"
    );
    assert!(h.control.store.list_sandboxes(None).unwrap().is_empty());
    assert!(tight.control.store.list_sandboxes(None).unwrap().is_empty());
    assert!(h.fake.calls().is_empty(), "{:?}", h.fake.calls());
}

#[tokio::test]
async fn unsupported_features_are_refused_not_ignored() {
    let h = harness().await;
    let e = h
        .control
        .create(
            &h.admin,
            CreateSandbox {
                preserve_memory_on_stop: Some(true),
                ..Default::default()
            },
        )
        .unwrap_err();
    assert!(
        matches!(e, ControlError::Config(ConfigError::Malformed(_))),
        "{e:?}"
    );
    let e = h
        .control
        .create(
            &h.admin,
            CreateSandbox {
                mount_config: Some(serde_json::json!({"mounts": [{"path": "/x"}]})),
                ..Default::default()
            },
        )
        .unwrap_err();
    assert!(
        matches!(e, ControlError::Config(ConfigError::Unsupported(_))),
        "{e:?}"
    );
    let e = h
        .control
        .create(
            &h.admin,
            CreateSandbox {
                proxy_config: Some(serde_json::json!({"rules": [{"name": "aws"}]})),
                ..Default::default()
            },
        )
        .unwrap_err();
    assert!(
        matches!(e, ControlError::Config(ConfigError::Unsupported(_))),
        "{e:?}"
    );
    assert!(h.control.list(&h.admin).unwrap().is_empty());
    // The accepted shapes are stored and echoed.
    let rec = h
        .sandbox_with(
            &h.admin,
            CreateSandbox {
                preserve_memory_on_stop: Some(false),
                proxy_config: Some(serde_json::json!({"rules": []})),
                access_delegation: Some(serde_json::json!({"mode": "EXPLICIT", "permissions": []})),
                ..Default::default()
            },
        )
        .await;
    assert_eq!(
        rec.config.proxy_config,
        Some(serde_json::json!({"rules": []}))
    );
}

#[tokio::test]
async fn an_unready_default_image_is_unavailable_not_missing() {
    let h = harness().await;
    let default = ImageRef::default_image();
    for (status, words) in [
        (ImageStatus::Building, "being built"),
        (ImageStatus::Failed("disk full".into()), "disk full"),
        (ImageStatus::Missing, "warren image build"),
    ] {
        h.fake.set_image_status(&default, status.clone());
        let e = h
            .control
            .create(&h.admin, CreateSandbox::default())
            .unwrap_err();
        assert!(
            matches!(&e, ControlError::Unavailable(m) if m.contains(words)),
            "{status:?}: {e:?}"
        );
    }
    h.fake.set_image_status(&default, ImageStatus::Present);
    h.sandbox(&h.admin, "after-build").await;
}

#[tokio::test]
async fn an_unknown_snapshot_is_not_found() {
    let h = harness().await;
    for snapshot in ["no-such-image:1", "not a reference!"] {
        let e = h
            .control
            .create(
                &h.admin,
                CreateSandbox {
                    snapshot: Some(snapshot.into()),
                    ..Default::default()
                },
            )
            .unwrap_err();
        assert!(
            matches!(&e, ControlError::NotFound(m) if m.contains("Snapshot")),
            "{e:?}"
        );
    }
    // An image present in storage but published as no snapshot is not a snapshot.
    let image: ImageRef = "tools:2".parse().unwrap();
    h.fake.set_image_status(&image, ImageStatus::Present);
    let e = h
        .control
        .create(
            &h.admin,
            CreateSandbox {
                snapshot: Some("tools:2".into()),
                ..Default::default()
            },
        )
        .unwrap_err();
    assert!(matches!(&e, ControlError::NotFound(_)), "{e:?}");
}

#[tokio::test]
async fn a_failed_boot_leaves_the_sandbox_failed_with_the_reason() {
    let h = harness().await;
    let rec = h.failed(&h.admin, "doomed").await;
    assert_eq!(rec.status_message.as_deref(), Some("no room at the inn"));
    assert!(rec.handle.is_none());
    assert_eq!(h.fake_state(&rec), None);
    let metrics = h.control.metrics().render(&[]);
    assert!(
        metrics.contains("warren_sandbox_create_failures_total 1"),
        "{metrics}"
    );
    // The next create is unaffected.
    h.sandbox(&h.admin, "fine").await;
}

#[tokio::test]
async fn a_stop_or_delete_before_the_boot_runs_wins() {
    let h = harness().await;
    // Provisioning → Stopped: the stop takes the lock first; the boot then finds nothing to do.
    // (The inner verbs, run inline: the public ones run in a task of their own, which the
    // already spawned boot would come before.)
    let rec = h.control.create(&h.admin, named("early-stop")).unwrap();
    let stopped = h.control.stop_id(&rec.id, None).await.unwrap();
    assert_eq!(stopped.status, SandboxStatus::Stopped);
    // Provisioning → Deleting → gone.
    let gone = h.control.create(&h.admin, named("early-delete")).unwrap();
    h.control.delete_id(&gone.id).await.unwrap();
    // Let the spawned boots run.
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert_eq!(h.record(&rec.id).status, SandboxStatus::Stopped);
    assert!(!h.exists(&gone.id));
    assert_eq!(h.calls("create", &rec), 0, "{:?}", h.fake.calls());
    assert_eq!(h.calls("create", &gone), 0, "{:?}", h.fake.calls());
}

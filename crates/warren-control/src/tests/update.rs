//! `update`: name, TTLs, run_config layering, labels, shape and proxy config.

use warren_types::SandboxStatus;

use super::support::{as_stored, drain, generous, harness, harness_with, output};
use crate::{
    ConfigError, ControlError, CreateSandbox, ExecRequest, RunConfig, Store, Stream, UpdateSandbox,
};

#[tokio::test]
async fn rename_moves_the_name_and_keeps_the_id() {
    let h = harness().await;
    let rec = h.sandbox(&h.admin, "old").await;
    let renamed = h
        .control
        .update(
            &h.admin,
            "old",
            UpdateSandbox {
                name: Some("new".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(renamed.name, "new");
    assert_eq!(renamed.id, rec.id);
    assert_eq!(
        renamed.status,
        SandboxStatus::Ready,
        "an update changes no status"
    );
    assert_eq!(h.control.find(&h.admin, "new").unwrap().id, rec.id);
    let e = h.control.find(&h.admin, "old").unwrap_err();
    assert!(matches!(e, ControlError::NotFound(_)), "{e:?}");
    assert!(renamed.updated_at >= rec.updated_at);
    assert_eq!(
        h.record(&rec.id),
        as_stored(&renamed),
        "the update is stored"
    );
}

#[tokio::test]
async fn rename_onto_a_taken_name_is_a_conflict_and_changes_nothing() {
    let h = harness().await;
    let a = h.sandbox(&h.admin, "a").await;
    h.sandbox(&h.admin, "b").await;
    let e = h
        .control
        .update(
            &h.admin,
            &a.id,
            UpdateSandbox {
                name: Some("b".into()),
                idle_ttl_seconds: Some(120),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&e, ControlError::Conflict(m) if m.contains("'b'")),
        "{e:?}"
    );
    let now = h.record(&a.id);
    assert_eq!(now.name, "a");
    assert_eq!(now.config.idle_ttl_seconds, a.config.idle_ttl_seconds);
    let bad = h
        .control
        .update(
            &h.admin,
            &a.id,
            UpdateSandbox {
                name: Some("no spaces".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert!(
        matches!(bad, ControlError::Config(ConfigError::Invalid(_))),
        "{bad:?}"
    );
}

#[tokio::test]
async fn ttls_are_validated_and_stored() {
    let h = harness().await;
    let rec = h.stopped(&h.admin, "ttl").await;
    let updated = h
        .control
        .update(
            &h.admin,
            &rec.id,
            UpdateSandbox {
                idle_ttl_seconds: Some(0),
                delete_after_stop_seconds: Some(3600),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(updated.config.idle_ttl_seconds, 0);
    assert_eq!(updated.config.delete_after_stop_seconds, 3600);
    assert_eq!(updated.status, SandboxStatus::Stopped);
    assert_eq!(updated.stopped_at, as_stored(&rec).stopped_at);
    for (idle, after) in [(Some(59), None), (None, Some(61))] {
        let e = h
            .control
            .update(
                &h.admin,
                &rec.id,
                UpdateSandbox {
                    idle_ttl_seconds: idle,
                    delete_after_stop_seconds: after,
                    ..Default::default()
                },
            )
            .await
            .unwrap_err();
        assert!(
            matches!(e, ControlError::Config(ConfigError::Invalid(_))),
            "{e:?}"
        );
    }
    assert_eq!(h.record(&rec.id).config.delete_after_stop_seconds, 3600);
}

#[tokio::test]
async fn run_config_layers_over_the_sandboxes_and_commands_see_it() {
    let h = harness().await;
    let rec = h
        .sandbox_with(
            &h.admin,
            CreateSandbox {
                name: Some("layers".into()),
                run_config: Some(RunConfig {
                    user: None,
                    work_dir: Some("/srv".into()),
                    env_vars: [("A".into(), "1".into()), ("B".into(), "1".into())].into(),
                }),
                ..Default::default()
            },
        )
        .await;
    let updated = h
        .control
        .update(
            &h.admin,
            &rec.id,
            UpdateSandbox {
                run_config: Some(RunConfig {
                    user: Some("app".into()),
                    work_dir: None,
                    env_vars: [("B".into(), "2".into())].into(),
                }),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let rc = &updated.config.run_config;
    assert_eq!(rc.user.as_deref(), Some("app"));
    assert_eq!(rc.work_dir.as_deref(), Some("/srv"), "kept from below");
    assert_eq!(rc.env_vars.get("A").map(String::as_str), Some("1"));
    assert_eq!(rc.env_vars.get("B").map(String::as_str), Some("2"));

    // A command sees the layered config, and its own layer goes over it.
    let mut s = h
        .control
        .exec(
            &h.admin,
            &rec.id,
            ExecRequest {
                command: "pwd; env A; env B".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(
        output(&drain(&mut s).await, Stream::Stdout, 0),
        b"/srv\n1\n2\n"
    );
    let mut s = h
        .control
        .exec(
            &h.admin,
            &rec.id,
            ExecRequest {
                command: "pwd; env B".into(),
                cwd: Some("/tmp".into()),
                env: Some([("B".into(), "3".into())].into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(
        output(&drain(&mut s).await, Stream::Stdout, 0),
        b"/tmp\n3\n"
    );

    let e = h
        .control
        .update(
            &h.admin,
            &rec.id,
            UpdateSandbox {
                run_config: Some(RunConfig {
                    work_dir: Some("relative".into()),
                    ..Default::default()
                }),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert!(
        matches!(e, ControlError::Config(ConfigError::Malformed(_))),
        "{e:?}"
    );
}

#[tokio::test]
async fn labels_are_replaced_not_merged() {
    let h = harness().await;
    let rec = h
        .sandbox_with(
            &h.admin,
            CreateSandbox {
                name: Some("labelled".into()),
                labels: Some([("a".into(), "1".into()), ("b".into(), "2".into())].into()),
                ..Default::default()
            },
        )
        .await;
    let updated = h
        .control
        .update(
            &h.admin,
            &rec.id,
            UpdateSandbox {
                labels: Some([("c".into(), "3".into())].into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(
        updated.config.labels,
        [("c".to_owned(), "3".to_owned())].into()
    );
    // An update that names no labels keeps them.
    let kept = h
        .control
        .update(&h.admin, &rec.id, UpdateSandbox::default())
        .await
        .unwrap();
    assert_eq!(kept.config.labels, updated.config.labels);
}

#[tokio::test]
async fn shape_changes_are_bounded_and_apply_at_the_next_boot() {
    let mut limits = generous();
    limits.max_vcpus = 4;
    let h = harness_with(limits).await;
    let rec = h.sandbox(&h.admin, "shape").await;
    let e = h
        .control
        .update(
            &h.admin,
            &rec.id,
            UpdateSandbox {
                vcpus: Some(8),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&e, ControlError::Config(ConfigError::Invalid(m)) if m.contains("vcpus")),
        "{e:?}"
    );
    let e = h
        .control
        .update(
            &h.admin,
            &rec.id,
            UpdateSandbox {
                mem_bytes: Some(1),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert!(
        matches!(e, ControlError::Config(ConfigError::Invalid(_))),
        "{e:?}"
    );
    let updated = h
        .control
        .update(
            &h.admin,
            &rec.id,
            UpdateSandbox {
                vcpus: Some(4),
                mem_bytes: Some(2 << 30),
                fs_capacity_bytes: Some(8 << 30),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(
        (
            updated.config.vcpus,
            updated.config.mem_bytes,
            updated.config.fs_capacity_bytes
        ),
        (4, 2 << 30, 8 << 30)
    );
    assert_eq!(updated.handle, rec.handle, "no reboot");
    assert_eq!(
        h.control.store.get_sandbox(&rec.id).unwrap(),
        Some(as_stored(&updated))
    );
}

#[tokio::test]
async fn proxy_rules_are_refused_and_an_empty_set_is_stored() {
    let h = harness().await;
    let rec = h.sandbox(&h.admin, "proxy").await;
    let e = h
        .control
        .update(
            &h.admin,
            &rec.id,
            UpdateSandbox {
                proxy_config: Some(serde_json::json!({"rules": [{"name": "x"}]})),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert!(
        matches!(e, ControlError::Config(ConfigError::Unsupported(_))),
        "{e:?}"
    );
    let e = h
        .control
        .update(
            &h.admin,
            &rec.id,
            UpdateSandbox {
                proxy_config: Some(serde_json::json!([])),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert!(
        matches!(e, ControlError::Config(ConfigError::Invalid(_))),
        "{e:?}"
    );
    let ok = h
        .control
        .update(
            &h.admin,
            &rec.id,
            UpdateSandbox {
                proxy_config: Some(serde_json::json!({"rules": []})),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(
        ok.config.proxy_config,
        Some(serde_json::json!({"rules": []}))
    );
}

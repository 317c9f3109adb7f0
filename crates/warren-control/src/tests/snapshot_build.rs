//! Building snapshots from images: building → ready with the image's run settings, or failed
//! with the reason; a build's sandboxes boot from its files.

use std::collections::BTreeMap;
use std::time::Duration;

use warren_types::RunConfig;

use super::support::{Harness, harness};
use crate::{
    BuildSnapshot, BuildSource, ControlError, CreateSandbox, SnapshotStatus, SnapshotView,
};

fn build(name: &str, image: &str) -> BuildSnapshot {
    BuildSnapshot {
        name: name.into(),
        source: BuildSource::Image(image.into()),
        ..Default::default()
    }
}

async fn settled(h: &Harness, id: &str) -> SnapshotView {
    for _ in 0..500 {
        let v = h.control.get_snapshot(&h.admin, id).unwrap();
        if v.record.status != SnapshotStatus::Building {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("snapshot {id} still building");
}

#[tokio::test]
async fn a_build_becomes_ready_with_the_images_settings_under_the_requests() {
    let h = harness().await;
    let v = h
        .control
        .build_snapshot(
            &h.admin,
            BuildSnapshot {
                run_config: Some(RunConfig {
                    env_vars: BTreeMap::from([("MINE".into(), "1".into())]),
                    ..Default::default()
                }),
                ..build("apps/web", "127.0.0.1:5000/web:2.1")
            },
        )
        .unwrap();
    assert_eq!(v.tags, ["2.1"], "the image's own tag");
    assert_eq!(
        v.record.docker_image.as_deref(),
        Some("127.0.0.1:5000/web:2.1")
    );
    let v = settled(&h, &v.record.id).await;
    assert_eq!(
        v.record.status,
        SnapshotStatus::Ready,
        "{:?}",
        v.record.status_message
    );
    assert!(
        v.record
            .image_digest
            .as_deref()
            .is_some_and(|d| d.starts_with("sha256:"))
    );
    let rc = &v.record.run_config;
    assert_eq!(rc.user.as_deref(), Some("nobody"));
    assert_eq!(rc.work_dir.as_deref(), Some("/app"));
    assert_eq!(rc.env_vars.get("FROM").map(String::as_str), Some("fake"));
    assert_eq!(rc.env_vars.get("MINE").map(String::as_str), Some("1"));
    let sb = h
        .sandbox_with(
            &h.admin,
            CreateSandbox {
                snapshot: Some("apps/web:2.1".into()),
                ..Default::default()
            },
        )
        .await;
    assert_eq!(
        h.fake.file(&sb.runtime_id, "/etc/image-source").as_deref(),
        Some(&b"127.0.0.1:5000/web:2.1"[..])
    );
    assert_eq!(sb.config.run_config.user.as_deref(), Some("nobody"));
}

#[tokio::test]
async fn a_failed_build_says_why_and_cannot_be_booted() {
    let h = harness().await;
    let v = h
        .control
        .build_snapshot(&h.admin, build("broken", "registry.invalid/fail:1"))
        .unwrap();
    let v = settled(&h, &v.record.id).await;
    assert_eq!(v.record.status, SnapshotStatus::Failed);
    assert!(
        v.record
            .status_message
            .as_deref()
            .is_some_and(|m| m.contains("manifest unknown")),
        "{:?}",
        v.record.status_message
    );
    let err = h
        .control
        .create(
            &h.admin,
            CreateSandbox {
                snapshot: Some(v.record.id.clone()),
                ..Default::default()
            },
        )
        .unwrap_err();
    assert!(matches!(err, ControlError::Config(_)), "{err:?}");
}

#[tokio::test]
async fn bad_requests_are_refused_before_anything_runs() {
    let h = harness().await;
    for (req, what) in [
        (build("ok", ""), "empty image"),
        (build("ok", "has space:1"), "space"),
        (build("Bad", "debian:12"), "upper-case name"),
        (build("system/x", "debian:12"), "system namespace"),
        (
            BuildSnapshot {
                fs_capacity_bytes: Some(1),
                ..build("ok", "debian:12")
            },
            "tiny disk",
        ),
        (
            BuildSnapshot {
                registry_id: Some("r".into()),
                ..build("ok", "debian:12")
            },
            "registry",
        ),
    ] {
        assert!(h.control.build_snapshot(&h.admin, req).is_err(), "{what}");
    }
    assert!(!h.fake.calls().iter().any(|c| c.starts_with("build ")));
}

#[tokio::test]
async fn recovery_fails_interrupted_builds_and_removes_images_no_record_names() {
    let h = harness().await;
    h.sandbox(&h.admin, "src").await;
    let kept = h
        .control
        .capture(
            &h.admin,
            "src",
            crate::CaptureSnapshot {
                name: "kept".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    // A build the daemon was running when it died, and an image whose record is gone.
    let mut building = kept.record.clone();
    building.id = uuid::Uuid::new_v4().to_string();
    building.name = "interrupted".into();
    building.status = SnapshotStatus::Building;
    h.control.store.put_snapshot(&building).unwrap();
    h.control
        .capture(
            &h.admin,
            "src",
            crate::CaptureSnapshot {
                name: "orphan".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let orphan_rec = h.control.get_snapshot(&h.admin, "orphan").unwrap().record;
    h.control.store.delete_snapshot(&orphan_rec.id).unwrap();

    // The archive an interrupted import was building from.
    let imports = h.control.imports_dir();
    std::fs::create_dir_all(&imports).unwrap();
    let archive = imports.join("interrupted.tar");
    std::fs::write(&archive, b"half an archive").unwrap();

    h.control.recover().await.unwrap();
    assert!(
        !archive.exists(),
        "the interrupted import's archive is left"
    );
    let v = h.control.get_snapshot(&h.admin, &building.id).unwrap();
    assert_eq!(v.record.status, SnapshotStatus::Failed);
    assert!(
        v.record
            .status_message
            .as_deref()
            .is_some_and(|m| m.contains("restarted"))
    );
    let kept_image = format!("remove-image {}", crate::snapshot_image(&kept.record.id));
    let calls = h.fake.calls();
    assert!(!calls.contains(&kept_image), "{calls:?}");
    // The fake's gc removes without a call record; the image is gone from its store.
    assert_eq!(
        warren_driver::Driver::image_status(&h.fake, &crate::snapshot_image(&orphan_rec.id)),
        warren_driver::ImageStatus::Missing
    );
    assert_eq!(
        warren_driver::Driver::image_status(&h.fake, &crate::snapshot_image(&kept.record.id)),
        warren_driver::ImageStatus::Present
    );
}

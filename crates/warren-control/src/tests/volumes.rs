//! Volumes: the CRUD, attachments at create (read-write once, read-only shared), deletion and
//! clones refused while in use, and creator privacy.

use std::collections::BTreeMap;

use warren_types::SandboxStatus;

use super::support::{Harness, harness};
use crate::store::Principal;
use crate::{
    ControlError, CreateSandbox, CreateVolume, ForkSandbox, ListQuery, UpdateVolume, VolumeRequest,
};

/// The names of the volumes `p` sees whose name holds `needle`, through the list the API pages.
fn named(h: &Harness, p: &Principal, needle: Option<&str>) -> Vec<String> {
    let q = ListQuery {
        name_contains: needle.map(str::to_owned),
        page_size: Some(100),
        ..ListQuery::default()
    };
    let page = h.control.volumes_page(p, &q).unwrap();
    page.items.into_iter().map(|v| v.record.name).collect()
}

fn vol(name: &str, size: u64) -> CreateVolume {
    CreateVolume {
        name: name.into(),
        size_bytes: Some(size),
        ..Default::default()
    }
}

fn with(name: &str, volumes: &[(&str, &str, bool)]) -> CreateSandbox {
    CreateSandbox {
        name: Some(name.into()),
        volumes: Some(
            volumes
                .iter()
                .map(|(v, path, ro)| VolumeRequest {
                    volume: (*v).into(),
                    mount_path: (*path).into(),
                    read_only: *ro,
                })
                .collect(),
        ),
        ..Default::default()
    }
}

fn conflict(e: ControlError) {
    assert!(matches!(e, ControlError::Conflict(_)), "{e:?}");
}

async fn attach(
    h: &Harness,
    name: &str,
    volumes: &[(&str, &str, bool)],
) -> Result<crate::SandboxRecord, ControlError> {
    let rec = h.control.create(&h.admin, with(name, volumes))?;
    Ok(h.settle(&rec.id).await)
}

#[tokio::test]
async fn volumes_are_created_sized_in_gib_changed_listed_and_deleted() {
    let h = harness().await;
    let v = h
        .control
        .create_volume(&h.admin, vol("data", 1))
        .await
        .unwrap();
    assert_eq!(v.record.size_bytes, 1 << 30, "rounded up to a whole GiB");
    assert_eq!(h.fake.volume_size(&v.record.id), Some(1 << 30));
    conflict(
        h.control
            .create_volume(&h.admin, vol("data", 1))
            .await
            .unwrap_err(),
    );
    for bad in [
        vol("", 1),
        vol("ok", 0),
        vol("ok", (1 << 40) + 1),
        vol("bad name", 1),
    ] {
        assert!(h.control.create_volume(&h.admin, bad).await.is_err());
    }
    let changed = h
        .control
        .update_volume(
            &h.admin,
            "data",
            UpdateVolume {
                description: Some(Some("cache".into())),
                labels: Some(BTreeMap::from([("k".into(), "v".into())])),
            },
        )
        .unwrap();
    assert_eq!(changed.record.description.as_deref(), Some("cache"));
    let cleared = h
        .control
        .update_volume(
            &h.admin,
            &v.record.id,
            UpdateVolume {
                description: Some(None),
                labels: None,
            },
        )
        .unwrap();
    assert_eq!(cleared.record.description, None);
    assert_eq!(cleared.record.labels.len(), 1, "labels not sent are kept");
    assert_eq!(named(&h, &h.admin, Some("DAT")).len(), 1);
    assert!(named(&h, &h.admin, Some("zzz")).is_empty());
    h.control.delete_volume(&h.admin, "data").await.unwrap();
    assert!(matches!(
        h.control.get_volume(&h.admin, "data").unwrap_err(),
        ControlError::NotFound(_)
    ));
    assert_eq!(h.fake.volume_size(&v.record.id), None, "its files are gone");
}

#[tokio::test]
async fn a_volume_is_read_write_in_one_sandbox_or_read_only_in_many() {
    let h = harness().await;
    let v = h
        .control
        .create_volume(&h.admin, vol("shared", 1))
        .await
        .unwrap();
    let writer = attach(&h, "writer", &[("shared", "/data", false)])
        .await
        .unwrap();
    assert_eq!(
        writer.status,
        SandboxStatus::Ready,
        "{:?}",
        writer.status_message
    );
    assert_eq!(writer.config.volumes.len(), 1);
    assert_eq!(writer.config.volumes[0].volume_id, v.record.id);
    conflict(
        attach(&h, "second-writer", &[("shared", "/data", false)])
            .await
            .unwrap_err(),
    );
    conflict(
        attach(&h, "reader", &[("shared", "/data", true)])
            .await
            .unwrap_err(),
    );
    conflict(
        h.control
            .delete_volume(&h.admin, "shared")
            .await
            .unwrap_err(),
    );
    let view = h.control.get_volume(&h.admin, "shared").unwrap();
    assert_eq!(view.attachments.len(), 1);
    assert_eq!(view.attachments[0].1, "writer");

    h.control.delete(&h.admin, "writer").await.unwrap();
    for name in ["r1", "r2"] {
        let r = attach(&h, name, &[("shared", "/srv/ro", true)])
            .await
            .unwrap();
        assert_eq!(r.status, SandboxStatus::Ready);
    }
    conflict(
        attach(&h, "w2", &[("shared", "/data", false)])
            .await
            .unwrap_err(),
    );
    assert_eq!(
        h.control
            .get_volume(&h.admin, "shared")
            .unwrap()
            .attachments
            .len(),
        2
    );
    // A fork does not take the parent's volumes.
    let forks = h
        .control
        .fork(
            &h.admin,
            "r1",
            ForkSandbox {
                count: Some(1),
                names: None,
            },
        )
        .await
        .unwrap();
    assert!(forks[0].config.volumes.is_empty());
}

#[tokio::test]
async fn attachments_are_checked_before_anything_is_made() {
    let h = harness().await;
    for n in ["a", "b", "c", "d", "e"] {
        h.control.create_volume(&h.admin, vol(n, 1)).await.unwrap();
    }
    let five: Vec<(&str, String, bool)> = ["a", "b", "c", "d", "e"]
        .iter()
        .map(|n| (*n, format!("/v/{n}"), false))
        .collect();
    let five: Vec<(&str, &str, bool)> = five.iter().map(|(n, p, r)| (*n, p.as_str(), *r)).collect();
    let before = h.control.list(&h.admin).unwrap().len();
    for (bad, what) in [
        (vec![("a", "relative", false)], "relative path"),
        (vec![("a", "/", false)], "root"),
        (vec![("a", "/proc/x", false)], "proc"),
        (vec![("a", "/tmp", false)], "tmp"),
        (vec![("a", "/etc/ssl/certs/corp", false)], "trust store"),
        (vec![("a", "/x/../y", false)], "dotdot"),
        (vec![("a", "/d", false), ("b", "/d/e", false)], "nested"),
        (vec![("a", "/d", false), ("a", "/e", true)], "twice"),
        (vec![("nope", "/d", false)], "missing"),
        (five.clone(), "five"),
    ] {
        assert!(
            h.control.create(&h.admin, with("x", &bad)).is_err(),
            "{what}"
        );
    }
    assert_eq!(h.control.list(&h.admin).unwrap().len(), before);
    let four = attach(&h, "four", &five[..4]).await.unwrap();
    assert_eq!(four.config.volumes.len(), 4);
}

#[tokio::test]
async fn clones_copy_a_stopped_writer_and_volumes_are_creator_private() {
    let h = harness().await;
    let v = h
        .control
        .create_volume(&h.admin, vol("src", 2 << 30))
        .await
        .unwrap();
    h.fake.put_volume_file(&v.record.id, "/state.txt", b"src");
    attach(&h, "w", &[("src", "/data", false)]).await.unwrap();
    conflict(
        h.control
            .clone_volume(&h.admin, "src", vol("copy", 0))
            .await
            .unwrap_err(),
    );
    h.control.stop(&h.admin, "w").await.unwrap();
    let c = h
        .control
        .clone_volume(&h.admin, "src", vol("copy", 0))
        .await
        .unwrap();
    assert_eq!(c.record.size_bytes, 2 << 30);
    assert_eq!(
        c.record.source_volume_id.as_deref(),
        Some(v.record.id.as_str())
    );
    assert_eq!(
        h.fake.volume_file(&c.record.id, "/state.txt").as_deref(),
        Some(&b"src"[..])
    );

    let bob = h.user("bob");
    assert!(matches!(
        h.control.get_volume(&bob, "src").unwrap_err(),
        ControlError::NotFound(_)
    ));
    assert!(named(&h, &bob, None).is_empty());
    assert!(
        h.control
            .create(&bob, with("bobs", &[("copy", "/data", true)]))
            .is_err()
    );
    let mine = h.control.create_volume(&bob, vol("bobs", 1)).await.unwrap();
    assert_eq!(
        named(&h, &h.admin, None).len(),
        3,
        "an admin sees every volume"
    );
    assert_eq!(mine.record.created_by, bob.user_id);
}

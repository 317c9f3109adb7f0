//! Warm pools and templates: a claim is a ready sandbox at once, made fresh for its caller;
//! pools refill, stay within host capacity and give way to cold creates; template pools serve
//! only their workspace.

use std::time::Duration;

use warren_types::SandboxStatus;

use super::support::{GIB, Harness, generous, harness_with};
use crate::admission::HostReadings;
use crate::pool::{PoolSize, PoolView};
use crate::store::Store;
use crate::{ControlError, CreateSandbox, CreateTemplate, Principal};

/// Runs `echo ok` in the sandbox and checks it exits 0.
async fn runs(h: &Harness, p: &Principal, name: &str) {
    let rec = h.control.find(p, name).unwrap();
    let req = crate::ExecRequest {
        command: "echo ok".into(),
        ..Default::default()
    };
    let mut s = h.control.exec(p, &rec.id, req).await.unwrap();
    let events = super::support::drain(&mut s).await;
    assert!(
        events
            .iter()
            .any(|e| matches!(e, crate::ExecEvent::Exit { code: 0, .. })),
        "{events:?}"
    );
}

/// Sandboxes the driver has booted so far.
fn boots(h: &Harness) -> usize {
    h.fake
        .calls()
        .iter()
        .filter(|c| c.starts_with("create "))
        .count()
}

fn named(name: &str) -> CreateSandbox {
    CreateSandbox {
        name: Some(name.into()),
        ..Default::default()
    }
}

/// Waits until `done` holds of a pool's view (`None`: the default pool) and returns the view;
/// `what` says what was waited for.
async fn wait_view(
    h: &Harness,
    template: Option<&str>,
    what: &str,
    done: impl Fn(&PoolView) -> bool,
) -> PoolView {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let v = h.control.pool_view(&h.admin, template);
        if done(&v) {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "pool never reached {what}: {v:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until the pool (`None`: the default one) has `ready` sandboxes and none booting.
async fn wait_ready(h: &Harness, template: Option<&str>, ready: u32) -> PoolView {
    wait_view(h, template, &format!("{ready} ready"), |v| {
        v.ready == ready && v.starting == 0
    })
    .await
}

async fn pooled(limits: crate::ResourceLimits, size: PoolSize) -> Harness {
    let h = harness_with(limits).await;
    tokio::spawn(h.control.clone().pools_forever());
    h.control.set_default_pool(&h.admin, size).unwrap();
    h
}

#[tokio::test]
async fn a_pooled_create_is_ready_at_once_and_fresh() {
    let h = pooled(generous(), PoolSize { min: 2, max: 4 }).await;
    wait_ready(&h, None, 2).await;
    let booted = boots(&h);
    let rec = h.control.create(&h.admin, named("from-pool")).unwrap();
    assert_eq!(rec.status, SandboxStatus::Ready, "no wait for a boot");
    assert!(rec.handle.is_some());
    assert_eq!(rec.name, "from-pool");
    assert_eq!(rec.created_by, h.admin.user_id);
    // The record is the caller's, read back as it was returned.
    assert_eq!(h.record(&rec.id), rec);
    assert_eq!(
        h.control.list(&h.admin).unwrap().len(),
        1,
        "pooled ones are not listed"
    );
    // Two claims get two different sandboxes, neither booted for the create.
    let other = h.control.create(&h.admin, named("second")).unwrap();
    assert_eq!(other.status, SandboxStatus::Ready);
    assert_ne!(other.runtime_id, rec.runtime_id);
    assert_ne!(other.id, rec.id);
    let v = h.control.pool_view(&h.admin, None);
    assert_eq!(v.claims, 2, "{v:?}");
    let text = h.control.pool_metrics();
    assert!(
        text.contains("warren_pool_claims_total{pool=\"default\"} 2"),
        "{text}"
    );
    // It refills in the background.
    let v = wait_ready(&h, None, v.target.max(2)).await;
    assert!(boots(&h) > booted, "{v:?}");
    // A claimed sandbox runs commands like any other.
    runs(&h, &h.admin, "from-pool").await;
}

#[tokio::test]
async fn another_shape_boots_cold_and_counts_no_demand() {
    let h = pooled(generous(), PoolSize { min: 1, max: 4 }).await;
    wait_ready(&h, None, 1).await;
    let rec = h
        .control
        .create(
            &h.admin,
            CreateSandbox {
                mem_bytes: Some(GIB / 2),
                ..named("small")
            },
        )
        .unwrap();
    assert_eq!(rec.status, SandboxStatus::Provisioning);
    let v = h.control.pool_view(&h.admin, None);
    assert_eq!((v.claims, v.misses, v.ready), (0, 0, 1), "{v:?}");
    assert_eq!(h.settle(&rec.id).await.status, SandboxStatus::Ready);
}

#[tokio::test]
async fn pools_stay_within_capacity_and_give_way_to_cold_creates() {
    let mut limits = generous();
    limits.max_sandboxes = 3;
    let h = pooled(limits, PoolSize { min: 5, max: 5 }).await;
    // Three fit; the pool stops there and says why.
    wait_ready(&h, None, 3).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let v = h.control.pool_view(&h.admin, None);
    assert_eq!(v.ready, 3, "{v:?}");
    assert!(
        v.last_error
            .as_deref()
            .is_some_and(|e| e.contains("at most 3")),
        "{v:?}"
    );
    // Cold creates take the room pooled sandboxes held.
    let small = |n: &str| CreateSandbox {
        mem_bytes: Some(GIB / 2),
        ..named(n)
    };
    for n in ["a", "b", "c"] {
        let r = h.control.create(&h.admin, small(n)).unwrap();
        assert_eq!(h.settle(&r.id).await.status, SandboxStatus::Ready);
    }
    assert_eq!(h.control.pool_view(&h.admin, None).ready, 0);
    let e = h.control.create(&h.admin, small("d")).unwrap_err();
    assert!(
        matches!(&e, ControlError::Exhausted(m) if m.contains("at most 3")),
        "{e:?}"
    );
    // Existing sandboxes still run commands.
    runs(&h, &h.admin, "a").await;
}

fn second_workspace(h: &Harness) -> Principal {
    let ws = h.control.store.create_workspace("other").unwrap();
    let user = h.control.store.create_user(&ws, "eve", true).unwrap();
    let key = "other-workspace-key";
    h.control
        .store
        .add_key(&user, &crate::auth::hash_key(key))
        .unwrap();
    h.control.authenticate(key).unwrap().unwrap()
}

#[tokio::test]
async fn a_template_fills_creates_and_its_pool_serves_only_its_workspace() {
    let h = pooled(generous(), PoolSize::default()).await;
    let t = h
        .control
        .create_template(
            &h.admin,
            CreateTemplate {
                name: "py".into(),
                snapshot: "system/default".into(),
                mem_bytes: Some(GIB / 4),
                run_config: Some(warren_types::RunConfig {
                    env_vars: [("FROM".to_owned(), "template".to_owned())].into(),
                    ..Default::default()
                }),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(t.name, "py");
    let member = h.user("member");
    let e = h
        .control
        .set_template_pool(&member, "py", PoolSize { min: 1, max: 1 })
        .unwrap_err();
    assert!(matches!(e, ControlError::Forbidden(_)), "{e:?}");
    h.control
        .set_template_pool(&h.admin, "py", PoolSize { min: 1, max: 1 })
        .unwrap();
    wait_ready(&h, Some("py"), 1).await;
    // Another workspace asking for the very same shape boots cold: the pool is not theirs.
    let eve = second_workspace(&h);
    let theirs = h
        .control
        .create(
            &eve,
            CreateSandbox {
                mem_bytes: Some(GIB / 4),
                ..named("theirs")
            },
        )
        .unwrap();
    assert_eq!(theirs.status, SandboxStatus::Provisioning);
    assert!(
        h.control.list_pools(&eve).is_empty(),
        "a template pool is its workspace's"
    );
    // The template's workspace gets it, with the template's fields under its own.
    let rec = h
        .control
        .create(
            &member,
            CreateSandbox {
                template: Some("py".into()),
                run_config: Some(warren_types::RunConfig {
                    work_dir: Some("/tmp".into()),
                    ..Default::default()
                }),
                ..named("mine")
            },
        )
        .unwrap();
    assert_eq!(rec.status, SandboxStatus::Ready);
    assert_eq!(rec.config.mem_bytes, GIB / 4);
    assert_eq!(rec.config.run_config.env_vars["FROM"], "template");
    assert_eq!(rec.config.run_config.work_dir.as_deref(), Some("/tmp"));
    // The pool's bounds are kept with the template; deleting it ends the pool.
    assert_eq!(h.control.find_template(&h.admin, "py").unwrap().pool_max, 1);
    h.control.delete_template(&h.admin, "py").unwrap();
    assert!(h.control.list_pools(&h.admin).is_empty());
    let e = h
        .control
        .create(
            &h.admin,
            CreateSandbox {
                template: Some("py".into()),
                ..named("gone")
            },
        )
        .unwrap_err();
    assert!(matches!(e, ControlError::NotFound(_)), "{e:?}");
}

#[tokio::test]
async fn pool_bounds_are_checked() {
    assert!(PoolSize::new(3, 2).is_err());
    assert!(PoolSize::new(0, crate::pool::MAX_POOL_SIZE + 1).is_err());
    assert!(PoolSize::new(1, 8).is_ok());
    let h = pooled(generous(), PoolSize::default()).await;
    let e = h
        .control
        .set_default_pool(&h.user("u"), PoolSize { min: 1, max: 1 })
        .unwrap_err();
    assert!(matches!(e, ControlError::Forbidden(_)), "{e:?}");
}

#[test]
fn host_capacity_names_the_resource_that_ran_out() {
    let roomy = HostReadings {
        mem_available: Some(20 * GIB),
        mem_total: Some(24 * GIB),
        disk_free: Some(100 * GIB),
        threads: Some(500),
        max_threads: Some(100_000),
        open_fds: Some(300),
        max_fds: Some(20_000),
    };
    let mut limits = generous();
    limits.reserve_disk_bytes = crate::admission::DISK_FLOOR_BYTES;
    assert!(roomy.check(&limits).is_ok());
    let cases = [
        (
            HostReadings {
                mem_available: Some(100 << 20),
                ..roomy
            },
            "host memory",
        ),
        (
            HostReadings {
                disk_free: Some(10 << 20),
                ..roomy
            },
            "disk",
        ),
        (
            HostReadings {
                threads: Some(95_000),
                ..roomy
            },
            "processes",
        ),
        (
            HostReadings {
                open_fds: Some(18_500),
                ..roomy
            },
            "file descriptors",
        ),
    ];
    for (r, what) in cases {
        let e = r.check(&limits).unwrap_err();
        assert!(
            matches!(&e, ControlError::Unavailable(m) if m.contains(what) && m.contains("host capacity")),
            "{what}: {e:?}"
        );
    }
    // The floors are the operator's to raise.
    let mut strict = generous();
    strict.reserve_disk_bytes = 200 * GIB;
    let e = roomy.check(&strict).unwrap_err();
    assert!(
        matches!(&e, ControlError::Unavailable(m) if m.contains("204800 MiB kept free")),
        "{e:?}"
    );
    strict.reserve_mem_bytes = Some(22 * GIB);
    strict.reserve_disk_bytes = 0;
    let e = roomy.check(&strict).unwrap_err();
    assert!(
        matches!(&e, ControlError::Unavailable(m) if m.contains("host memory")),
        "{e:?}"
    );
    // Unknown figures refuse nothing.
    let unknown = HostReadings {
        mem_available: None,
        mem_total: None,
        disk_free: None,
        threads: None,
        max_threads: None,
        open_fds: None,
        max_fds: None,
    };
    assert!(unknown.check(&limits).is_ok());
}

#[tokio::test]
async fn a_daemon_shutting_down_destroys_its_pooled_sandboxes() {
    let h = harness_with(generous()).await;
    let filler = tokio::spawn(h.control.clone().pools_forever());
    h.control
        .set_default_pool(&h.admin, PoolSize { min: 3, max: 3 })
        .unwrap();
    wait_ready(&h, None, 3).await;
    let kept = h.control.create(&h.admin, named("kept")).unwrap();
    wait_ready(&h, None, 3).await;
    filler.abort();
    let running = |h: &Harness| h.fake.sandboxes().into_iter().filter(|(_, r)| *r).count();
    assert_eq!(running(&h), 4);
    // Shrinking the pool destroys two in the background; the shutdown waits for those too.
    h.control
        .set_default_pool(&h.admin, PoolSize { min: 1, max: 1 })
        .unwrap();
    h.control.drain_pools().await;
    assert_eq!(h.control.pool_view(&h.admin, None).ready, 0);
    let left: Vec<_> = h.fake.sandboxes().into_iter().filter(|(_, r)| *r).collect();
    assert_eq!(left, vec![(kept.runtime_id, true)]);
}

#[tokio::test]
async fn a_claim_refused_for_its_name_goes_back_to_its_pool() {
    let h = pooled(generous(), PoolSize { min: 2, max: 2 }).await;
    wait_ready(&h, None, 2).await;
    h.control.create(&h.admin, named("taken")).unwrap();
    let before = wait_ready(&h, None, 2).await;
    let booted = boots(&h);
    let e = h.control.create(&h.admin, named("taken")).unwrap_err();
    assert!(matches!(e, ControlError::Conflict(_)), "{e:?}");
    let after = h.control.pool_view(&h.admin, None);
    assert_eq!((after.ready, after.claims), (2, before.claims), "{after:?}");
    assert_eq!(boots(&h), booted, "nothing was booted or thrown away");
}

/// Sandboxes the fake driver has running.
fn running(h: &Harness) -> Vec<warren_types::SandboxId> {
    h.fake
        .sandboxes()
        .into_iter()
        .filter_map(|(id, r)| r.then_some(id))
        .collect()
}

#[tokio::test]
async fn a_shutdown_waits_for_a_fill_in_flight_and_starts_none_after() {
    let h = pooled(generous(), PoolSize { min: 2, max: 2 }).await;
    wait_ready(&h, None, 2).await;
    let open = h.fake.hold_creates();
    let kept = h.control.create(&h.admin, named("kept")).unwrap();
    // The refill starts booting and waits at the gate.
    wait_view(&h, None, "one booting", |v| v.starting == 1).await;
    let control = h.control.clone();
    let drain = tokio::spawn(async move { control.drain_pools().await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        !drain.is_finished(),
        "the shutdown did not wait for the boot in flight"
    );
    open.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(10), drain)
        .await
        .expect("the shutdown never ended")
        .unwrap();
    // Long enough for a filler that kept going to start another boot.
    let booted = boots(&h);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(boots(&h), booted, "a fill started after the shutdown");
    assert_eq!(running(&h), vec![kept.runtime_id]);
}

#[tokio::test]
async fn a_pool_with_no_minimum_grows_from_demand() {
    let h = pooled(generous(), PoolSize::default()).await;
    h.control
        .create_template(
            &h.admin,
            CreateTemplate {
                name: "py".into(),
                snapshot: "system/default".into(),
                mem_bytes: Some(GIB / 4),
                ..Default::default()
            },
        )
        .unwrap();
    h.control
        .set_template_pool(&h.admin, "py", PoolSize { min: 0, max: 4 })
        .unwrap();
    // It knows what it makes before it has made anything, so creates count as its demand.
    wait_view(&h, Some("py"), "a known shape", |v| v.snapshot_id.is_some()).await;
    let from = |n: &str| CreateSandbox {
        template: Some("py".into()),
        ..named(n)
    };
    let first = h.control.create(&h.admin, from("first")).unwrap();
    assert_eq!(
        first.status,
        SandboxStatus::Provisioning,
        "nothing was pooled"
    );
    wait_ready(&h, Some("py"), 1).await;
    let second = h.control.create(&h.admin, from("second")).unwrap();
    assert_eq!(
        second.status,
        SandboxStatus::Ready,
        "not served by the pool"
    );
}

#[tokio::test]
async fn a_pool_follows_its_templates_snapshot_tag_and_empties_when_it_is_deleted() {
    let h = pooled(generous(), PoolSize::default()).await;
    let src = h.sandbox(&h.admin, "src").await;
    let capture = || crate::CaptureSnapshot {
        name: "img".into(),
        ..Default::default()
    };
    let a = h
        .control
        .capture(&h.admin, &src.id, capture())
        .await
        .unwrap();
    h.control
        .create_template(
            &h.admin,
            CreateTemplate {
                name: "t".into(),
                snapshot: "img:latest".into(),
                ..Default::default()
            },
        )
        .unwrap();
    h.control
        .set_template_pool(&h.admin, "t", PoolSize { min: 1, max: 1 })
        .unwrap();
    let a_id = a.record.id.clone();
    wait_view(&h, Some("t"), "one of the first capture", |v| {
        v.ready == 1 && v.snapshot_id.as_deref() == Some(a_id.as_str())
    })
    .await;
    // `latest` moves to a new capture: the pool's sandbox of the old one goes, one of the new
    // one takes its place.
    let b = h
        .control
        .capture(&h.admin, &src.id, capture())
        .await
        .unwrap();
    let b_id = b.record.id.clone();
    wait_view(&h, Some("t"), "one of the second capture", |v| {
        v.ready == 1 && v.starting == 0 && v.snapshot_id.as_deref() == Some(b_id.as_str())
    })
    .await;
    h.settle_removals().await;
    assert_eq!(running(&h).len(), 2, "the source and one pooled sandbox");
    // The snapshot it makes is deleted: what it held can never be claimed, and goes.
    h.control.delete_snapshot(&h.admin, &b_id).await.unwrap();
    wait_view(&h, Some("t"), "nothing and no shape", |v| {
        v.ready == 0 && v.snapshot_id.is_none()
    })
    .await;
    h.settle_removals().await;
    assert_eq!(running(&h), vec![src.runtime_id]);
}

#[tokio::test]
async fn forks_and_starts_take_room_from_pools_like_creates() {
    let mut limits = generous();
    limits.max_committed_mem_bytes = Some(3 * GIB);
    let h = pooled(limits, PoolSize { min: 3, max: 3 }).await;
    wait_ready(&h, None, 3).await;
    // A claim leaves memory for two pooled sandboxes only.
    let a = h.control.create(&h.admin, named("a")).unwrap();
    assert_eq!(a.status, SandboxStatus::Ready);
    wait_ready(&h, None, 2).await;
    // Stopped, it commits no memory, and the pool takes that room back.
    h.control.stop(&h.admin, "a").await.unwrap();
    wait_ready(&h, None, 3).await;
    h.control.start(&h.admin, "a").await.unwrap();
    assert_eq!(h.settle(&a.id).await.status, SandboxStatus::Ready);
    h.settle_removals().await;
    assert_eq!(running(&h).len(), 3, "memory for three, pools included");
    assert_eq!(h.control.pool_view(&h.admin, None).ready, 2);
    // A fork commits memory too: a pooled sandbox gives way.
    let forks = h
        .control
        .fork(&h.admin, "a", crate::ForkSandbox::default())
        .await
        .unwrap();
    assert_eq!(h.settle(&forks[0].id).await.status, SandboxStatus::Ready);
    h.settle_removals().await;
    assert_eq!(running(&h).len(), 3, "memory for three, pools included");
    let v = h.control.pool_view(&h.admin, None);
    assert_eq!(v.ready + v.starting, 1, "{v:?}");
}

#[tokio::test]
async fn a_rebuilt_image_replaces_its_pooled_sandboxes() {
    let h = pooled(generous(), PoolSize { min: 2, max: 2 }).await;
    wait_ready(&h, None, 2).await;
    let old = running(&h);
    assert_eq!(old.len(), 2);
    // The default image is rebuilt under its name (a newer recipe): what the pool holds has
    // the old files. A create at once gets none of it, even before the pool's next check.
    h.fake
        .replace_image(&warren_types::ImageRef::default_image());
    let a = h.control.create(&h.admin, named("a")).unwrap();
    assert!(
        !old.contains(&a.runtime_id),
        "a create got a sandbox of the old image"
    );
    h.settle(&a.id).await;
    // The pool drops the old ones and refills from the new image.
    wait_view(&h, None, "two of the new image", |v| {
        v.ready == 2 && v.starting == 0 && running(&h).iter().all(|id| !old.contains(id))
    })
    .await;
    h.settle_removals().await;
    let now = running(&h);
    assert_eq!(now.len(), 3, "a and two pooled: {now:?}");
    assert!(
        now.iter().all(|id| !old.contains(id)),
        "an old pooled sandbox is left"
    );
}

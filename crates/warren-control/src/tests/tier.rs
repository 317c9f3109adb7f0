//! Tiers: a sandbox gets the tier it asks for (or its template's, or the server's default) or
//! a 400 naming why not, never another one; the tier is kept across stop and start.

use warren_driver::Tier;
use warren_types::SandboxStatus;

use super::support::harness;
use crate::{ConfigError, ControlError, CreateSandbox, CreateTemplate};

fn asking(name: &str, tier: Option<Tier>) -> CreateSandbox {
    CreateSandbox {
        name: Some(name.into()),
        tier,
        ..Default::default()
    }
}

/// A template of the default image whose sandboxes are VMs.
fn vm_template() -> CreateTemplate {
    CreateTemplate {
        name: "vms".into(),
        snapshot: warren_types::ImageRef::default_image().to_string(),
        tier: Some(Tier::Vm),
        ..Default::default()
    }
}

#[tokio::test]
async fn a_tier_the_host_cannot_run_is_a_400_and_nothing_is_made() {
    let h = harness().await;
    let err = h
        .control
        .create(&h.admin, asking("vm1", Some(Tier::Vm)))
        .unwrap_err();
    match &err {
        ControlError::Config(ConfigError::Unsupported(m)) => {
            assert!(m.contains("tier 'vm' is not available"), "{m}");
            assert!(m.contains("no microVM tier"), "the driver's reason: {m}");
        }
        other => panic!("expected Unsupported, got {other:?}"),
    }
    assert!(h.control.find(&h.admin, "vm1").is_err());
    assert!(h.fake.calls().iter().all(|c| !c.starts_with("create ")));
    // A template cannot promise it either.
    let err = h
        .control
        .create_template(&h.admin, vm_template())
        .unwrap_err();
    assert!(
        matches!(err, ControlError::Config(ConfigError::Unsupported(_))),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_vm_sandbox_is_booted_as_one_and_stays_one_across_stop_and_start() {
    let h = harness().await;
    h.fake.offer_vm();
    let rec = h
        .sandbox_with(&h.admin, asking("vm1", Some(Tier::Vm)))
        .await;
    assert_eq!(rec.config.tier, Tier::Vm);
    assert_eq!(rec.handle.as_ref().map(|x| x.tier), Some(Tier::Vm));
    let jail = h.sandbox_with(&h.admin, asking("jail1", None)).await;
    assert_eq!(jail.config.tier, Tier::Jail, "the server's default");
    assert_eq!(jail.handle.as_ref().map(|x| x.tier), Some(Tier::Jail));

    h.control.stop(&h.admin, &rec.id).await.unwrap();
    let started = h.control.start(&h.admin, &rec.id).await.unwrap();
    let started = h.settle(&started.id).await;
    assert_eq!(started.status, SandboxStatus::Ready);
    assert_eq!(started.handle.as_ref().map(|x| x.tier), Some(Tier::Vm));
    let (_, metrics) = h.control.sandbox_metrics().unwrap();
    assert!(
        metrics.contains("warren_sandboxes_by_tier{tier=\"vm\",state=\"ready\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("warren_sandboxes_by_tier{tier=\"jail\",state=\"ready\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_vm_too_small_to_boot_is_a_422() {
    let h = harness().await;
    h.fake.offer_vm();
    let small = CreateSandbox {
        mem_bytes: Some(64 << 20),
        ..asking("tiny", Some(Tier::Vm))
    };
    let err = h.control.create(&h.admin, small).unwrap_err();
    assert!(
        matches!(&err, ControlError::Config(ConfigError::Invalid(m)) if m.contains("vm-tier")),
        "{err:?}"
    );
    // The same size is fine for a jail.
    let jail = CreateSandbox {
        mem_bytes: Some(64 << 20),
        ..asking("tiny", None)
    };
    h.sandbox_with(&h.admin, jail).await;
}

#[tokio::test]
async fn a_templates_tier_applies_unless_the_create_names_one() {
    let h = harness().await;
    h.fake.offer_vm();
    h.control.create_template(&h.admin, vm_template()).unwrap();
    let from_template = CreateSandbox {
        template: Some("vms".into()),
        ..asking("a", None)
    };
    let rec = h.sandbox_with(&h.admin, from_template).await;
    assert_eq!(rec.config.tier, Tier::Vm);
    let overridden = CreateSandbox {
        template: Some("vms".into()),
        ..asking("b", Some(Tier::Jail))
    };
    let rec = h.sandbox_with(&h.admin, overridden).await;
    assert_eq!(rec.config.tier, Tier::Jail);
}

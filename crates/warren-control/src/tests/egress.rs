//! The egress proxy's lookups: a running sandbox by its link's slot, and the connection record.

use super::support::*;
use crate::EgressRecord;

#[tokio::test]
async fn a_running_sandbox_is_found_by_its_slot_until_it_stops() {
    let h = harness().await;
    let a = h.sandbox(&h.admin, "a").await;
    let b = h.sandbox(&h.admin, "b").await;
    let slot_a = h.record(&a.id).handle.unwrap().slot;
    let slot_b = h.record(&b.id).handle.unwrap().slot;
    assert_ne!(slot_a, slot_b);
    let t = h.control.egress_target(slot_a).expect("a runs on its slot");
    assert_eq!(t.sandbox_id, a.id);
    assert_eq!(t.workspace_id, h.admin.workspace_id);
    h.control.stop(&h.admin, &a.id).await.unwrap();
    assert!(
        h.control.egress_target(slot_a).is_none(),
        "a stopped sandbox has no link"
    );
    assert_eq!(h.control.egress_target(slot_b).unwrap().sandbox_id, b.id);
    h.control.delete(&h.admin, &b.id).await.unwrap();
    assert!(h.control.egress_target(slot_b).is_none());
    assert!(h.control.egress_target(999_999).is_none());
}

#[tokio::test]
async fn a_connection_is_audited_in_the_sandboxs_workspace_and_counted() {
    let h = harness().await;
    let a = h.sandbox(&h.admin, "a").await;
    for allowed in [true, false] {
        h.control.egress_connection(&EgressRecord {
            sandbox_id: a.id.clone(),
            host: "pypi.org".into(),
            port: 443,
            allowed,
            rule: "default".into(),
            bytes_up: 10,
            bytes_down: 20,
        });
    }
    let allowed = h.audited("egress.allowed");
    assert_eq!(allowed.len(), 1);
    assert_eq!(
        allowed[0].workspace_id.as_deref(),
        Some(h.admin.workspace_id.as_str())
    );
    assert!(
        allowed[0]
            .detail
            .as_deref()
            .unwrap()
            .starts_with("pypi.org:443")
    );
    assert_eq!(h.audited("egress.denied").len(), 1);
    let m = h.control.metrics().render(&[]);
    assert!(
        m.contains("warren_egress_connections_total{decision=\"allowed\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("warren_egress_bytes_total{direction=\"down\"} 40"),
        "{m}"
    );
}

#[tokio::test]
async fn access_control_needs_egress_and_is_checked_by_the_proxys_parser() {
    use std::sync::Arc;

    use crate::{ConfigError, ControlError, CreateSandbox, EgressCheck};
    let acl = serde_json::json!({"access_control": {"allow_list": ["pypi.org"]}});
    let create = |pc: serde_json::Value| CreateSandbox {
        proxy_config: Some(pc),
        ..Default::default()
    };
    // Without egress there is nothing to configure.
    let h = harness().await;
    let e = h.control.create(&h.admin, create(acl.clone())).unwrap_err();
    assert!(
        matches!(e, ControlError::Config(ConfigError::Unsupported(_))),
        "{e:?}"
    );
    // With it, the proxy's parser decides, and injection rules stay refused.
    let mut limits = generous();
    limits.max_sandboxes = 10;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&dir, limits);
    cfg.egress = Some(EgressCheck(Arc::new(|pc: &serde_json::Value| {
        if pc.to_string().contains("bad entry") {
            Err("allow_list entry 'bad entry' is not a host".into())
        } else {
            Ok(())
        }
    })));
    let (control, key) = crate::Control::with_store(
        cfg,
        Arc::new(warren_driver::fake::FakeDriver::new()),
        crate::SqliteStore::in_memory().unwrap(),
    )
    .await
    .unwrap();
    let admin = control.authenticate(&key.unwrap()).unwrap().unwrap();
    control.create(&admin, create(acl)).unwrap();
    let bad = serde_json::json!({"access_control": {"allow_list": ["bad entry"]}});
    let e = control.create(&admin, create(bad)).unwrap_err();
    assert!(
        matches!(&e, ControlError::Config(ConfigError::Invalid(m)) if m.contains("bad entry")),
        "{e:?}"
    );
    let rules = serde_json::json!({"rules": [{"name": "x"}]});
    let e = control.create(&admin, create(rules)).unwrap_err();
    assert!(
        matches!(e, ControlError::Config(ConfigError::Unsupported(_))),
        "{e:?}"
    );
}

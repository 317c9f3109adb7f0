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

/// An egress proxy that records what the control plane asks of it.
#[derive(Debug, Default)]
struct TestEgress {
    cas: std::sync::Mutex<Vec<String>>,
    forgotten: std::sync::Mutex<Vec<String>>,
}

impl crate::Egress for TestEgress {
    fn check(&self, pc: &serde_json::Value) -> Result<Vec<String>, crate::ConfigError> {
        if pc.to_string().contains("bad entry") {
            return Err(crate::ConfigError::Invalid(
                "allow_list entry 'bad entry' is not a host".into(),
            ));
        }
        if pc.to_string().contains("\"gcp\"") {
            return Err(crate::ConfigError::Unsupported("gcp rules".into()));
        }
        // The secrets the rules name, as the proxy's parser reports them.
        let names = pc["rules"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|r| r["headers"].as_array().cloned().unwrap_or_default())
            .filter(|h| h["type"] == "workspace_secret")
            .filter_map(|h| h["value"].as_str().map(str::to_owned))
            .collect();
        Ok(names)
    }

    fn sandbox_ca(&self, sandbox_id: &str) -> Result<String, String> {
        self.cas.lock().unwrap().push(sandbox_id.to_owned());
        Ok(format!(
            "-----BEGIN CERTIFICATE-----\n{sandbox_id}\n-----END CERTIFICATE-----\n"
        ))
    }

    fn forget(&self, sandbox_id: &str) {
        self.forgotten.lock().unwrap().push(sandbox_id.to_owned());
    }
}

async fn with_egress() -> (
    std::sync::Arc<crate::Control>,
    crate::Principal,
    std::sync::Arc<TestEgress>,
    tempfile::TempDir,
) {
    let mut limits = generous();
    limits.max_sandboxes = 10;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&dir, limits);
    let egress = std::sync::Arc::new(TestEgress::default());
    cfg.egress = Some(egress.clone());
    let (control, key) = crate::Control::with_store(
        cfg,
        std::sync::Arc::new(warren_driver::fake::FakeDriver::new()),
        crate::SqliteStore::in_memory().unwrap(),
    )
    .await
    .unwrap();
    let admin = control.authenticate(&key.unwrap()).unwrap().unwrap();
    (control, admin, egress, dir)
}

#[tokio::test]
async fn access_control_needs_egress_and_is_checked_by_the_proxys_parser() {
    use crate::{ConfigError, ControlError, CreateSandbox};
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
    // With it, the proxy's parsers decide.
    let (control, admin, _egress, _dir) = with_egress().await;
    control.create(&admin, create(acl)).unwrap();
    let bad = serde_json::json!({"access_control": {"allow_list": ["bad entry"]}});
    let e = control.create(&admin, create(bad)).unwrap_err();
    assert!(
        matches!(&e, ControlError::Config(ConfigError::Invalid(m)) if m.contains("bad entry")),
        "{e:?}"
    );
    let rules = serde_json::json!({"rules": [{"name": "x", "gcp": {}}]});
    let e = control.create(&admin, create(rules)).unwrap_err();
    assert!(
        matches!(e, ControlError::Config(ConfigError::Unsupported(_))),
        "{e:?}"
    );
}

#[tokio::test]
async fn every_boot_gets_the_sandboxs_ca_and_a_delete_forgets_it() {
    let (control, admin, egress, _dir) = with_egress().await;
    let rec = control
        .create(&admin, crate::CreateSandbox::default())
        .unwrap();
    let rec = control
        .wait_settled(&rec.id, std::time::Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(rec.status, warren_types::SandboxStatus::Ready);
    assert_eq!(*egress.cas.lock().unwrap(), std::slice::from_ref(&rec.id));
    control.stop(&admin, &rec.id).await.unwrap();
    control.start(&admin, &rec.id).await.unwrap();
    control
        .wait_settled(&rec.id, std::time::Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(
        egress.cas.lock().unwrap().len(),
        2,
        "a restart trusts it again"
    );
    assert!(egress.forgotten.lock().unwrap().is_empty());
    control.delete(&admin, &rec.id).await.unwrap();
    assert_eq!(*egress.forgotten.lock().unwrap(), [rec.id]);
}

#[tokio::test]
async fn opaque_values_are_hidden_and_survive_an_update_that_leaves_them_out() {
    use serde_json::json;
    let (control, admin, _egress, _dir) = with_egress().await;
    let pc = json!({"rules": [{"name": "api", "match_hosts": ["api.example.com"],
        "env_vars": {"API_KEY": "dummy"},
        "headers": [{"name": "x-api-key", "type": "opaque", "value": "hunter2"}]}]});
    let rec = control
        .create(
            &admin,
            crate::CreateSandbox {
                proxy_config: Some(pc),
                ..Default::default()
            },
        )
        .unwrap();
    let shown = crate::redact_credentials(rec.config.proxy_config.as_ref().unwrap());
    assert!(!shown.to_string().contains("hunter2"), "{shown}");
    // A client sends back what it was shown, with one change.
    let mut back = shown.clone();
    back["rules"][0]["description"] = json!("the example API");
    let rec = control
        .update(
            &admin,
            &rec.id,
            crate::UpdateSandbox {
                proxy_config: Some(back),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let stored = rec.config.proxy_config.unwrap();
    assert_eq!(stored["rules"][0]["headers"][0]["value"], "hunter2");
    assert_eq!(stored["rules"][0]["description"], "the example API");
    // The rule's variables reach commands, below the command's own.
    control
        .wait_settled(&rec.id, std::time::Duration::from_secs(10))
        .await
        .unwrap();
    let run = |env: Option<(&str, &str)>| crate::ExecRequest {
        command: "env API_KEY".into(),
        env: env.map(|(k, v)| [(k.to_owned(), v.to_owned())].into()),
        ..Default::default()
    };
    let mut s = control.exec(&admin, &rec.id, run(None)).await.unwrap();
    let events = super::support::drain(&mut s).await;
    assert_eq!(
        super::support::output(&events, crate::Stream::Stdout, 0),
        b"dummy\n"
    );
    let mut s = control
        .exec(&admin, &rec.id, run(Some(("API_KEY", "mine"))))
        .await
        .unwrap();
    let events = super::support::drain(&mut s).await;
    assert_eq!(
        super::support::output(&events, crate::Stream::Stdout, 0),
        b"mine\n"
    );
}

#[tokio::test]
async fn a_rule_may_name_only_secrets_the_workspace_has() {
    use serde_json::json;
    let (control, admin, _egress, _dir) = with_egress().await;
    let create = || crate::CreateSandbox {
        proxy_config: Some(json!({"rules": [{"name": "api", "match_hosts": ["a.com"],
            "headers": [{"name": "authorization", "type": "workspace_secret", "value": "API_TOKEN"}]}]})),
        ..Default::default()
    };
    let e = control.create(&admin, create()).unwrap_err();
    assert!(
        matches!(&e, crate::ControlError::Config(crate::ConfigError::Invalid(m)) if m.contains("API_TOKEN")),
        "{e:?}"
    );
    control
        .put_secret(
            &admin,
            "API_TOKEN",
            crate::PutSecret {
                value: Some("v".into()),
                configs: None,
            },
        )
        .unwrap();
    control.create(&admin, create()).unwrap();
}

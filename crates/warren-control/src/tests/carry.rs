//! A capture's `include`: the settings a snapshot carries into the sandboxes created from it,
//! and the create's own `env_vars` kept apart from its run_config.

use std::collections::BTreeMap;

use warren_types::RunConfig;

use super::support::{GIB, Harness, drain, generous, harness, harness_with, output};
use crate::carry::Setting;
use crate::{CaptureSnapshot, ControlError, CreateSandbox, ExecRequest, SandboxRecord, Stream};

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// A sandbox with a setting of every kind a capture can carry.
async fn source(h: &Harness) -> SandboxRecord {
    h.sandbox_with(
        &h.admin,
        CreateSandbox {
            name: Some("src".into()),
            vcpus: Some(2),
            mem_bytes: Some(GIB / 2),
            idle_ttl_seconds: Some(120),
            delete_after_stop_seconds: Some(3600),
            run_config: Some(RunConfig {
                env_vars: map(&[("BASE", "run-config"), ("SHARED", "run-config")]),
                ..RunConfig::default()
            }),
            env_vars: Some(map(&[("TOKEN", "s3cret"), ("SHARED", "env-vars")])),
            labels: Some(map(&[("team", "a"), ("com.langchain.origin", "x")])),
            ..CreateSandbox::default()
        },
    )
    .await
}

fn capture(name: &str, include: &[Setting], confirm: bool) -> CaptureSnapshot {
    CaptureSnapshot {
        name: name.into(),
        include: include.to_vec(),
        confirm_secret_values: confirm,
        ..CaptureSnapshot::default()
    }
}

async fn env_of(h: &Harness, id: &str, var: &str) -> String {
    let req = ExecRequest {
        command: format!("env {var}"),
        ..ExecRequest::default()
    };
    let mut s = h.control.exec(&h.admin, id, req).await.unwrap();
    String::from_utf8(output(&drain(&mut s).await, Stream::Stdout, 0)).unwrap()
}

#[tokio::test]
async fn env_vars_are_kept_apart_from_run_config_and_win_over_it() {
    let h = harness().await;
    let src = source(&h).await;
    assert_eq!(
        src.config.env_vars,
        map(&[("TOKEN", "s3cret"), ("SHARED", "env-vars")])
    );
    assert!(!src.config.run_config.env_vars.contains_key("TOKEN"));
    assert_eq!(env_of(&h, &src.id, "SHARED").await, "env-vars\n");
    assert_eq!(env_of(&h, &src.id, "BASE").await, "run-config\n");
    assert_eq!(env_of(&h, &src.id, "TOKEN").await, "s3cret\n");
}

#[tokio::test]
async fn a_snapshot_without_include_carries_no_env_vars_or_resources() {
    let h = harness().await;
    let src = source(&h).await;
    let v = h
        .control
        .capture(&h.admin, "src", capture("plain", &[], false))
        .await
        .unwrap();
    assert!(v.record.carried.included.is_empty());
    // The run_config is carried as ever; the create's own env vars are not.
    assert_eq!(v.record.run_config.env_vars, src.config.run_config.env_vars);
    let rec = h
        .sandbox_with(
            &h.admin,
            CreateSandbox {
                snapshot: Some("plain".into()),
                ..CreateSandbox::default()
            },
        )
        .await;
    assert!(rec.config.env_vars.is_empty());
    assert_eq!(rec.config.vcpus, 1);
    assert_eq!(env_of(&h, &rec.id, "TOKEN").await, "\n", "unset");
    assert_eq!(env_of(&h, &rec.id, "SHARED").await, "run-config\n");
}

#[tokio::test]
async fn literal_secrets_are_carried_only_when_confirmed() {
    let h = harness().await;
    source(&h).await;
    for include in [&Setting::ALL[..], &[Setting::EnvVars]] {
        let err = h
            .control
            .capture(&h.admin, "src", capture("secret", include, false))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, ControlError::Config(e) if e.to_string().contains("confirm_allow_snapshot_secret_values")),
            "{err:?}"
        );
    }
    // Nothing was stored by the refusals.
    assert!(h.control.get_snapshot(&h.admin, "secret").is_err());
    // Settings without secrets need no confirmation.
    let v = h
        .control
        .capture(
            &h.admin,
            "src",
            capture("safe", &[Setting::Resources, Setting::Labels], false),
        )
        .await
        .unwrap();
    assert_eq!(
        v.record.carried.included,
        [Setting::Resources, Setting::Labels]
    );
    assert!(v.record.carried.env_vars.is_empty());
}

#[tokio::test]
async fn a_sandbox_from_a_carrying_snapshot_starts_with_what_its_create_leaves_unset() {
    let h = harness().await;
    source(&h).await;
    let v = h
        .control
        .capture(&h.admin, "src", capture("all", &Setting::ALL, true))
        .await
        .unwrap();
    assert_eq!(v.record.carried.included, Setting::ALL);
    let rec = h
        .sandbox_with(
            &h.admin,
            CreateSandbox {
                snapshot: Some("all".into()),
                labels: Some(map(&[("env", "prod")])),
                ..CreateSandbox::default()
            },
        )
        .await;
    let c = &rec.config;
    assert_eq!((c.vcpus, c.mem_bytes), (2, GIB / 2));
    assert_eq!(
        (c.idle_ttl_seconds, c.delete_after_stop_seconds),
        (120, 3600)
    );
    assert_eq!(c.env_vars["TOKEN"], "s3cret");
    assert_eq!(c.labels.get("team").map(String::as_str), Some("a"));
    assert_eq!(c.labels.get("env").map(String::as_str), Some("prod"));
    assert!(!c.labels.contains_key("com.langchain.origin"));
    assert_eq!(env_of(&h, &rec.id, "TOKEN").await, "s3cret\n");
    // A create with env vars of its own gets only those.
    let own = h
        .sandbox_with(
            &h.admin,
            CreateSandbox {
                snapshot: Some("all".into()),
                env_vars: Some(map(&[("MINE", "1")])),
                ..CreateSandbox::default()
            },
        )
        .await;
    assert_eq!(own.config.env_vars, map(&[("MINE", "1")]));
    // Memory asked for alone is not paired with the carried CPUs.
    let sized = h
        .sandbox_with(
            &h.admin,
            CreateSandbox {
                snapshot: Some("all".into()),
                mem_bytes: Some(GIB),
                ..CreateSandbox::default()
            },
        )
        .await;
    assert_eq!((sized.config.vcpus, sized.config.mem_bytes), (1, GIB));
}

#[tokio::test]
async fn a_patched_run_config_key_wins_over_the_creates_env_var() {
    let h = harness().await;
    let src = source(&h).await;
    let patch = crate::UpdateSandbox {
        run_config: Some(RunConfig {
            env_vars: map(&[("TOKEN", "patched")]),
            ..RunConfig::default()
        }),
        ..crate::UpdateSandbox::default()
    };
    h.control.update(&h.admin, &src.id, patch).await.unwrap();
    assert_eq!(env_of(&h, &src.id, "TOKEN").await, "patched\n");
    // The create's other env vars stay as they were.
    assert_eq!(env_of(&h, &src.id, "SHARED").await, "env-vars\n");
}

#[tokio::test]
async fn a_carried_value_a_create_cannot_take_is_refused_naming_the_snapshot() {
    let h = harness().await;
    h.fake.offer_vm();
    h.sandbox_with(
        &h.admin,
        CreateSandbox {
            name: Some("small".into()),
            mem_bytes: Some(64 << 20),
            ..CreateSandbox::default()
        },
    )
    .await;
    h.control
        .capture(
            &h.admin,
            "small",
            capture("small-res", &[Setting::Resources], false),
        )
        .await
        .unwrap();
    let vm = |mem_bytes| CreateSandbox {
        snapshot: Some("small-res".into()),
        tier: Some(warren_driver::Tier::Vm),
        mem_bytes,
        ..CreateSandbox::default()
    };
    // 64 MiB is too little for a VM: the refusal says the value came from the snapshot.
    let err = h.control.create(&h.admin, vm(None)).unwrap_err();
    assert!(
        matches!(&err, ControlError::Config(crate::ConfigError::Invalid(m))
            if m.starts_with("mem_bytes") && m.contains("snapshot 'small-res' carries")),
        "{err:?}"
    );
    // The caller's own too-small value is refused as theirs.
    let err = h.control.create(&h.admin, vm(Some(64 << 20))).unwrap_err();
    assert!(
        matches!(&err, ControlError::Config(crate::ConfigError::Invalid(m))
            if m.starts_with("mem_bytes must be") && !m.contains("snapshot")),
        "{err:?}"
    );
    // Overriding the carried value in the request makes the create work.
    h.control.create(&h.admin, vm(Some(GIB))).unwrap();
}

#[tokio::test]
async fn a_memory_quota_refusing_a_carried_size_names_the_snapshot() {
    let mut limits = generous();
    limits.user_max_mem_bytes = Some(2 * GIB);
    let h = harness_with(limits).await;
    h.sandbox_with(
        &h.admin,
        CreateSandbox {
            name: Some("big".into()),
            mem_bytes: Some(3 * GIB / 2),
            ..CreateSandbox::default()
        },
    )
    .await;
    h.control
        .capture(
            &h.admin,
            "big",
            capture("big-res", &[Setting::Resources], false),
        )
        .await
        .unwrap();
    let from = |mem_bytes| CreateSandbox {
        snapshot: Some("big-res".into()),
        mem_bytes,
        ..CreateSandbox::default()
    };
    // 1.5 GiB held and 1.5 more carried: past the user's 2 GiB, and the answer says whose size.
    let err = h.control.create(&h.admin, from(None)).unwrap_err();
    assert!(
        matches!(&err, ControlError::Exhausted(m)
            if m.starts_with("memory quota reached") && m.contains("snapshot 'big-res' carries")),
        "{err:?}"
    );
    // The caller's own size past the quota is refused as theirs.
    let err = h.control.create(&h.admin, from(Some(GIB))).unwrap_err();
    assert!(
        matches!(&err, ControlError::Exhausted(m)
            if m.starts_with("memory quota reached") && !m.contains("snapshot")),
        "{err:?}"
    );
    // Asking for less, as the refusal says, works.
    h.control.create(&h.admin, from(Some(GIB / 4))).unwrap();
}

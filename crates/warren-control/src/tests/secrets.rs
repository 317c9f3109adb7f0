//! Workspace secrets: upsert, list, delete, the proxy's lookup, tenancy, validation and the
//! audit log, on a real SQLite file.

use std::sync::Arc;

use warren_driver::fake::FakeDriver;

use super::support::{config, generous};
use crate::{
    Control, ControlError, Principal, PutSecret, SecretHostRequest, SecretSource, SqliteStore,
    Store, auth,
};

struct Secrets {
    control: Arc<Control>,
    admin: Principal,
    _dir: tempfile::TempDir,
}

/// A control plane whose store is a file in the data dir, as the daemon's is.
async fn secrets() -> Secrets {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("warren.db")).unwrap();
    let (control, key) =
        Control::with_store(config(&dir, generous()), Arc::new(FakeDriver::new()), store)
            .await
            .unwrap();
    let admin = control.authenticate(&key.unwrap()).unwrap().unwrap();
    Secrets {
        control,
        admin,
        _dir: dir,
    }
}

impl Secrets {
    /// The admin of a second workspace.
    fn other_workspace_admin(&self) -> Principal {
        let store = &self.control.store;
        let ws = store.create_workspace("other").unwrap();
        let user = store.create_user(&ws, "root", true).unwrap();
        let key = auth::generate_key().unwrap();
        store.add_key(&user, &auth::hash_key(&key)).unwrap();
        self.control.authenticate(&key).unwrap().unwrap()
    }
}

fn value(v: &str) -> PutSecret {
    PutSecret {
        value: Some(v.into()),
        configs: None,
    }
}

fn host(pattern: &str, header: Option<&str>, template: Option<&str>) -> SecretHostRequest {
    SecretHostRequest {
        host_pattern: pattern.into(),
        header_name: header.map(str::to_owned),
        header_value_template: template.map(str::to_owned),
    }
}

fn invalid(e: ControlError) -> String {
    match e {
        ControlError::Config(crate::ConfigError::Malformed(m)) => m,
        other => panic!("expected a malformed-request error, got {other:?}"),
    }
}

#[tokio::test]
async fn set_list_read_and_delete() {
    let s = secrets().await;
    let (c, admin) = (&s.control, &s.admin);
    let info = c.put_secret(admin, "MY_TOKEN", value("s3cret")).unwrap();
    assert_eq!(info.key, "MY_TOKEN");
    assert!(info.configs.is_empty(), "no custom hosts, no defaults");
    c.put_secret(admin, "ANOTHER", value("x")).unwrap();

    let keys: Vec<_> = c
        .list_secrets(admin)
        .unwrap()
        .into_iter()
        .map(|i| i.key)
        .collect();
    assert_eq!(keys, ["ANOTHER", "MY_TOKEN"]);

    let got = c
        .secret_for_injection(&admin.workspace_id, "MY_TOKEN")
        .unwrap();
    assert_eq!(got.value, "s3cret");
    assert!(got.hosts.is_empty());
    assert!(
        !format!("{got:?}").contains("s3cret"),
        "Debug must not print the value"
    );

    c.delete_secret(admin, "MY_TOKEN").unwrap();
    assert!(
        c.secret_for_injection(&admin.workspace_id, "MY_TOKEN")
            .is_none()
    );
    assert_eq!(c.list_secrets(admin).unwrap().len(), 1);
    // A missing key succeeds.
    c.delete_secret(admin, "MY_TOKEN").unwrap();
    c.delete_secret(admin, "NEVER_SET").unwrap();
}

#[tokio::test]
async fn an_upsert_without_a_value_keeps_it_and_cannot_create() {
    let s = secrets().await;
    let (c, admin) = (&s.control, &s.admin);
    let e = c
        .put_secret(admin, "NEW_KEY", PutSecret::default())
        .unwrap_err();
    assert!(invalid(e).contains("value is required to create"));
    assert!(c.list_secrets(admin).unwrap().is_empty(), "nothing created");

    c.put_secret(admin, "API", value("first")).unwrap();
    let hosts = PutSecret {
        value: None,
        configs: Some(vec![host("api.example.com", Some("X-Key"), None)]),
    };
    let info = c.put_secret(admin, "API", hosts).unwrap();
    assert_eq!(info.configs.len(), 1);
    let got = c.secret_for_injection(&admin.workspace_id, "API").unwrap();
    assert_eq!(got.value, "first", "the value is kept");
    assert_eq!(got.hosts[0].pattern, "api.example.com");

    c.put_secret(admin, "API", value("second")).unwrap();
    let got = c.secret_for_injection(&admin.workspace_id, "API").unwrap();
    assert_eq!(got.value, "second");
    assert!(
        got.hosts.is_empty(),
        "omitted configs remove the custom hosts"
    );
}

#[tokio::test]
async fn configs_replace_and_clearing_them_restores_the_defaults() {
    let s = secrets().await;
    let (c, admin) = (&s.control, &s.admin);
    let ws = &admin.workspace_id;
    let info = c
        .put_secret(admin, "OPENAI_API_KEY", value("sk-1"))
        .unwrap();
    assert_eq!(info.configs.len(), 1);
    let d = &info.configs[0];
    assert_eq!(d.source, SecretSource::Default);
    assert_eq!(d.host_pattern, "api.openai.com");
    assert_eq!(d.header_name.as_deref(), Some("Authorization"));
    assert_eq!(d.header_value_template.as_deref(), Some("Bearer {value}"));
    assert_eq!((d.id.as_ref(), d.created_at), (None, None));
    let got = c.secret_for_injection(ws, "OPENAI_API_KEY").unwrap();
    assert_eq!(got.hosts[0].pattern, "api.openai.com");
    assert_eq!(got.hosts[0].template.as_deref(), Some("Bearer {value}"));

    let custom = PutSecret {
        value: None,
        configs: Some(vec![
            host(
                "*.Proxy.Example.com",
                Some("Authorization"),
                Some("Token {value}"),
            ),
            host("openai.internal", None, None),
        ]),
    };
    let info = c
        .put_secret(admin, "OPENAI_API_KEY", custom.clone())
        .unwrap();
    let patterns: Vec<_> = info
        .configs
        .iter()
        .map(|c| c.host_pattern.as_str())
        .collect();
    assert_eq!(patterns, ["*.proxy.example.com", "openai.internal"]);
    assert!(
        info.configs
            .iter()
            .all(|c| c.source == SecretSource::Custom)
    );
    assert!(
        info.configs
            .iter()
            .all(|c| c.id.is_some() && c.created_at.is_some())
    );
    let got = c.secret_for_injection(ws, "OPENAI_API_KEY").unwrap();
    assert_eq!(got.hosts.len(), 2, "custom hosts replace the default");
    assert_eq!(got.hosts[1].header_name, None);

    // Re-sending the same host keeps its id; a new list replaces the old one entirely.
    let again = c.put_secret(admin, "OPENAI_API_KEY", custom).unwrap();
    assert_eq!(again.configs[0].id, info.configs[0].id);
    let other = PutSecret {
        value: None,
        configs: Some(vec![host("api.openai.com", Some("X-Key"), None)]),
    };
    let info = c.put_secret(admin, "OPENAI_API_KEY", other).unwrap();
    assert_eq!(info.configs.len(), 1);
    assert_eq!(info.configs[0].source, SecretSource::Custom);
    assert_eq!(info.configs[0].header_name.as_deref(), Some("X-Key"));

    let clear = PutSecret {
        value: None,
        configs: Some(Vec::new()),
    };
    let info = c.put_secret(admin, "OPENAI_API_KEY", clear).unwrap();
    assert_eq!(info.configs[0].source, SecretSource::Default);
    let listed = c.list_secrets(admin).unwrap();
    assert_eq!(listed[0].configs, info.configs);
    assert_eq!(
        c.secret_for_injection(ws, "OPENAI_API_KEY").unwrap().value,
        "sk-1"
    );
}

#[tokio::test]
async fn workspaces_do_not_see_or_read_each_others_secrets() {
    let s = secrets().await;
    let (c, a) = (&s.control, &s.admin);
    let b = s.other_workspace_admin();
    c.put_secret(a, "SHARED_NAME", value("from-a")).unwrap();
    assert!(c.list_secrets(&b).unwrap().is_empty());
    assert!(
        c.secret_for_injection(&b.workspace_id, "SHARED_NAME")
            .is_none()
    );
    // B's secret of the same name is B's own; deleting it leaves A's.
    c.put_secret(&b, "SHARED_NAME", value("from-b")).unwrap();
    c.delete_secret(&b, "SHARED_NAME").unwrap();
    assert_eq!(
        c.secret_for_injection(&a.workspace_id, "SHARED_NAME")
            .unwrap()
            .value,
        "from-a"
    );
    // And an upsert without a value in B does not borrow A's.
    let e = c
        .put_secret(&b, "SHARED_NAME", PutSecret::default())
        .unwrap_err();
    assert!(invalid(e).contains("value is required"));
}

#[tokio::test]
async fn only_admins_write_but_every_user_lists() {
    let s = secrets().await;
    let (c, admin) = (&s.control, &s.admin);
    let (_, key) = c.create_key(admin, "dev", false).unwrap();
    let dev = c.authenticate(&key).unwrap().unwrap();
    c.put_secret(admin, "TOKEN", value("v")).unwrap();
    let e = c.put_secret(&dev, "TOKEN", value("mine")).unwrap_err();
    assert!(matches!(e, ControlError::Forbidden(_)), "{e:?}");
    let e = c.delete_secret(&dev, "TOKEN").unwrap_err();
    assert!(matches!(e, ControlError::Forbidden(_)), "{e:?}");
    assert_eq!(c.list_secrets(&dev).unwrap()[0].key, "TOKEN");
    assert_eq!(
        c.secret_for_injection(&admin.workspace_id, "TOKEN")
            .unwrap()
            .value,
        "v"
    );
}

#[tokio::test]
async fn bad_keys_values_and_hosts_are_refused() {
    let s = secrets().await;
    let (c, admin) = (&s.control, &s.admin);
    let long_key = "K".repeat(129);
    for key in ["", "1ABC", "-X", "A B", "A/B", "KEY=1", long_key.as_str()] {
        let e = c.put_secret(admin, key, value("v")).unwrap_err();
        assert!(invalid(e).contains("invalid secret key"), "{key:?}");
    }
    c.put_secret(admin, &"K".repeat(128), value("v")).unwrap();
    c.put_secret(admin, "_a.b-C9", value("v")).unwrap();

    for v in ["a\nb", "a\rb", "a\0b"] {
        let e = c.put_secret(admin, "V", value(v)).unwrap_err();
        assert!(invalid(e).contains("CR, LF or NUL"), "{v:?}");
    }
    let e = c
        .put_secret(admin, "V", value(&"x".repeat(64 * 1024 + 1)))
        .unwrap_err();
    assert!(invalid(e).contains("at most 65536"));
    c.put_secret(admin, "V", value(&"x".repeat(64 * 1024)))
        .unwrap();

    let with = |h: SecretHostRequest| PutSecret {
        value: Some("v".into()),
        configs: Some(vec![h]),
    };
    for pattern in [
        "",
        "https://api.openai.com",
        "api.openai.com:443",
        "api.openai.com/v1",
        "*",
        "*.",
        "api.*.com",
        "**.example.com",
        "a..b",
        "-a.com",
        "a.com.",
    ] {
        let e = c.put_secret(admin, "H", with(host(pattern, None, None)));
        assert!(
            invalid(e.unwrap_err()).contains("invalid host_pattern"),
            "{pattern:?}"
        );
    }
    for name in ["", "X Key", "X:Key", "Ké"] {
        let e = c.put_secret(admin, "H", with(host("a.com", Some(name), None)));
        assert!(
            invalid(e.unwrap_err()).contains("invalid header_name"),
            "{name:?}"
        );
    }
    for t in [
        "Bearer",
        "{value}{value}",
        "Bearer {value}\r\nX: y",
        "{VALUE}",
    ] {
        let e = c.put_secret(admin, "H", with(host("a.com", Some("A"), Some(t))));
        assert!(
            invalid(e.unwrap_err()).contains("invalid header_value_template"),
            "{t:?}"
        );
    }
    let too_many = PutSecret {
        value: Some("v".into()),
        configs: Some(
            (0..33)
                .map(|i| host(&format!("h{i}.com"), None, None))
                .collect(),
        ),
    };
    let e = c.put_secret(admin, "H", too_many).unwrap_err();
    assert!(invalid(e).contains("at most 32"));
    let twice = PutSecret {
        value: Some("v".into()),
        configs: Some(vec![host("a.com", None, None), host("A.com", None, None)]),
    };
    let e = c.put_secret(admin, "H", twice).unwrap_err();
    assert!(invalid(e).contains("listed twice"));
    assert!(
        c.secret_for_injection(&admin.workspace_id, "H").is_none(),
        "no refused upsert stored anything"
    );
}

#[tokio::test]
async fn sets_and_deletes_are_audited_by_key_never_value() {
    let s = secrets().await;
    let (c, admin) = (&s.control, &s.admin);
    let opts = PutSecret {
        value: Some("hunter2-value".into()),
        configs: Some(vec![host("api.example.com", None, None)]),
    };
    c.put_secret(admin, "AUDITED", opts).unwrap();
    c.put_secret(admin, "AUDITED", value("hunter3-value"))
        .unwrap();
    c.delete_secret(admin, "AUDITED").unwrap();
    let log = c.list_audit(admin, 0, 1000).unwrap();
    let mine: Vec<_> = log
        .iter()
        .filter(|e| e.action.starts_with("secret."))
        .collect();
    let summary: Vec<_> = mine
        .iter()
        .map(|e| (e.action.as_str(), e.target.as_deref(), e.detail.as_deref()))
        .collect();
    assert_eq!(
        summary,
        [
            (
                "secret.set",
                Some("AUDITED"),
                Some("created hosts=api.example.com")
            ),
            ("secret.set", Some("AUDITED"), Some("updated hosts=default")),
            ("secret.delete", Some("AUDITED"), Some("deleted")),
        ]
    );
    assert!(
        mine.iter()
            .all(|e| e.user_id.as_deref() == Some(admin.user_id.as_str()))
    );
    let all = serde_json::to_string(&log).unwrap();
    assert!(!all.contains("hunter"), "{all}");
    // A refused write is not a change and leaves no entry.
    let (_, key) = c.create_key(admin, "dev", false).unwrap();
    let dev = c.authenticate(&key).unwrap().unwrap();
    c.put_secret(&dev, "AUDITED", value("x")).unwrap_err();
    let after = c.list_audit(admin, 0, 1000).unwrap();
    assert_eq!(
        after
            .iter()
            .filter(|e| e.action.starts_with("secret."))
            .count(),
        3
    );
}

#[tokio::test]
async fn secrets_survive_a_reopen_of_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("warren.db");
    let ws = {
        let store = SqliteStore::open(&path).unwrap();
        let ws = store.create_workspace("default").unwrap();
        let rec = crate::SecretRecord {
            key: "K".into(),
            value: "persisted".into(),
            hosts: Vec::new(),
            created_at: std::time::SystemTime::now(),
            updated_at: std::time::SystemTime::now(),
        };
        store.put_secret(&ws, &rec).unwrap();
        ws
    };
    let store = SqliteStore::open(&path).unwrap();
    assert_eq!(
        store.get_secret(&ws, "K").unwrap().unwrap().value,
        "persisted"
    );
    assert!(store.delete_secret(&ws, "K").unwrap());
    assert!(!store.delete_secret(&ws, "K").unwrap());
}

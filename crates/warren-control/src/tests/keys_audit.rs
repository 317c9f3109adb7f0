//! Keys (bootstrap, create, list, revoke, authenticate) and the audit log's visibility.

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;

use warren_driver::fake::FakeDriver;

use super::support::{config, drain, generous, harness};
use crate::{Control, ControlError, ExecRequest};

#[tokio::test]
async fn the_first_start_writes_one_private_admin_key() {
    let h = harness().await;
    let path = h.dir.path().join("admin.key");
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(text, format!("{}\n", h.admin_key));
    assert!(h.admin_key.starts_with(crate::auth::KEY_PREFIX));
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    assert_eq!(h.admin.user_name, "admin");

    // A restart on the same data dir makes no second key.
    let dir = tempfile::tempdir().unwrap();
    let driver = Arc::new(FakeDriver::new());
    let (first, key) = Control::open(config(&dir, generous()), driver.clone())
        .await
        .unwrap();
    let key = key.expect("a fresh data dir bootstraps a key");
    drop(first);
    let (second, again) = Control::open(config(&dir, generous()), driver)
        .await
        .unwrap();
    assert_eq!(again, None);
    assert!(
        second.authenticate(&key).unwrap().is_some(),
        "the key survives a restart"
    );
}

#[tokio::test]
async fn admins_create_list_and_revoke_keys() {
    let h = harness().await;
    let (id, key) = h.control.create_key(&h.admin, "carol", false).unwrap();
    let carol = h
        .control
        .authenticate(&key)
        .unwrap()
        .expect("a new key works");
    assert_eq!(carol.user_name, "carol");
    assert!(!carol.is_admin);
    assert_eq!(carol.workspace_id, h.admin.workspace_id);
    assert_ne!(carol.user_id, h.admin.user_id);

    let keys = h.control.list_keys(&h.admin).unwrap();
    let info = keys.iter().find(|k| k.id == id).expect("listed");
    assert_eq!(info.user_name, "carol");
    assert!(!info.is_admin);
    assert_eq!(info.revoked_at, None);
    assert!(keys.iter().any(|k| k.user_name == "admin" && k.is_admin));

    let e = h.control.create_key(&h.admin, "carol", false).unwrap_err();
    assert!(matches!(e, ControlError::Conflict(_)), "{e:?}");
    let e = h
        .control
        .create_key(&h.admin, "not a name", false)
        .unwrap_err();
    assert!(matches!(e, ControlError::Config(_)), "{e:?}");

    // Authenticated (and cached) before the revoke, refused after it.
    h.control.revoke_key(&h.admin, &id).unwrap();
    assert_eq!(h.control.authenticate(&key).unwrap(), None);
    let keys = h.control.list_keys(&h.admin).unwrap();
    assert!(
        keys.iter()
            .find(|k| k.id == id)
            .unwrap()
            .revoked_at
            .is_some()
    );
    let e = h.control.revoke_key(&h.admin, "no-such-key").unwrap_err();
    assert!(matches!(e, ControlError::NotFound(_)), "{e:?}");
    // The admin's own key is unaffected.
    assert!(h.control.authenticate(&h.admin_key).unwrap().is_some());
    assert_eq!(h.control.authenticate("wrn_made_up").unwrap(), None);
}

#[tokio::test]
async fn a_second_admin_can_manage_keys() {
    let h = harness().await;
    let (_, key) = h.control.create_key(&h.admin, "ops", true).unwrap();
    let ops = h.control.authenticate(&key).unwrap().unwrap();
    assert!(ops.is_admin);
    let (id, _) = h.control.create_key(&ops, "dave", false).unwrap();
    h.control.revoke_key(&ops, &id).unwrap();
}

#[tokio::test]
async fn non_admins_cannot_touch_keys() {
    let h = harness().await;
    let eve = h.user("eve");
    let forbidden = |e: ControlError| assert!(matches!(e, ControlError::Forbidden(_)), "{e:?}");
    forbidden(h.control.create_key(&eve, "mallory", true).unwrap_err());
    forbidden(h.control.list_keys(&eve).unwrap_err());
    let (id, key) = h.control.create_key(&h.admin, "frank", false).unwrap();
    forbidden(h.control.revoke_key(&eve, &id).unwrap_err());
    assert!(
        h.control.authenticate(&key).unwrap().is_some(),
        "not revoked"
    );
    assert!(
        !h.control
            .list_keys(&h.admin)
            .unwrap()
            .iter()
            .any(|k| k.user_name == "mallory"),
        "no key was made"
    );
}

#[tokio::test]
async fn users_see_only_their_own_audit_entries_and_admins_all() {
    let h = harness().await;
    let gina = h.user("gina");
    let hank = h.user("hank");
    for (p, name) in [(&gina, "ginas"), (&hank, "hanks"), (&h.admin, "admins")] {
        let rec = h.sandbox(p, name).await;
        let mut s = h
            .control
            .exec(
                p,
                &rec.id,
                ExecRequest {
                    command: format!("echo {name}"),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        drain(&mut s).await;
    }
    let mine = h.control.list_audit(&gina, 0, 1000).unwrap();
    assert!(!mine.is_empty());
    assert!(
        mine.iter()
            .all(|e| e.user_id.as_deref() == Some(gina.user_id.as_str())),
        "{mine:?}"
    );
    let execs: Vec<_> = mine.iter().filter(|e| e.action == "exec").collect();
    assert_eq!(execs.len(), 1);
    assert_eq!(execs[0].detail.as_deref(), Some("echo ginas"));

    let all = h.control.list_audit(&h.admin, 0, 1000).unwrap();
    assert_eq!(all.iter().filter(|e| e.action == "exec").count(), 3);
    // Paging: entries after a sequence number, in order.
    let first = all[0].seq;
    let rest = h.control.list_audit(&h.admin, first, 1000).unwrap();
    assert_eq!(rest.len(), all.len() - 1);
    assert!(rest.windows(2).all(|w| w[0].seq < w[1].seq));
    assert_eq!(h.control.list_audit(&h.admin, 0, 1).unwrap().len(), 1);
}

use std::path::Path;

use super::sqlite::new_id;
use super::*;
use crate::config::SandboxConfig;

fn store() -> (tempfile::TempDir, SqliteStore) {
    let dir = tempfile::tempdir().unwrap();
    let s = SqliteStore::open(&dir.path().join("w.db")).unwrap();
    (dir, s)
}

fn record(ws: &str, user: &str, name: &str) -> SandboxRecord {
    let now = SystemTime::now();
    SandboxRecord {
        id: new_id(),
        workspace_id: ws.into(),
        created_by: user.into(),
        name: name.into(),
        runtime_id: SandboxId::generate(),
        status: SandboxStatus::Provisioning,
        status_message: None,
        config: SandboxConfig::default(),
        handle: None,
        created_at: now,
        updated_at: now,
        stopped_at: None,
    }
}

#[test]
fn keys_resolve_to_principals_until_revoked() {
    let (_d, s) = store();
    assert!(!s.has_users().unwrap());
    let ws = s.create_workspace("default").unwrap();
    let u = s.create_user(&ws, "alice", true).unwrap();
    let k = s.add_key(&u, "hash-a").unwrap();
    let p = s.principal_for_key("hash-a").unwrap().unwrap();
    assert_eq!((p.user_name.as_str(), p.is_admin), ("alice", true));
    assert!(s.principal_for_key("hash-b").unwrap().is_none());
    assert!(s.revoke_key(&ws, &k).unwrap());
    assert!(s.principal_for_key("hash-a").unwrap().is_none());
    assert!(!s.revoke_key(&ws, &k).unwrap(), "already revoked");
    assert_eq!(s.list_keys(&ws).unwrap().len(), 1);
}

#[test]
fn sandbox_names_are_unique_per_workspace_and_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.db");
    let (ws, id) = {
        let s = SqliteStore::open(&path).unwrap();
        let ws = s.create_workspace("default").unwrap();
        let other = s.create_workspace("other").unwrap();
        let u = s.create_user(&ws, "alice", false).unwrap();
        let u2 = s.create_user(&other, "bob", false).unwrap();
        let a = record(&ws, &u, "box");
        s.insert_sandbox(&a).unwrap();
        assert!(matches!(
            s.insert_sandbox(&record(&ws, &u, "box")),
            Err(StoreError::Conflict(_))
        ));
        s.insert_sandbox(&record(&other, &u2, "box")).unwrap();
        let mut b = record(&ws, &u, "box2");
        s.insert_sandbox(&b).unwrap();
        b.name = "box".into();
        assert!(matches!(s.update_sandbox(&b), Err(StoreError::Conflict(_))));
        (ws, a.id)
    };
    let s = SqliteStore::open(&path).unwrap();
    let found = s.find_sandbox(&ws, "box").unwrap().unwrap();
    assert_eq!(found.id, id);
    assert_eq!(s.find_sandbox(&ws, &id).unwrap().unwrap().name, "box");
    assert_eq!(s.list_sandboxes(Some(&ws)).unwrap().len(), 2);
    assert_eq!(s.list_sandboxes(None).unwrap().len(), 3);
    s.delete_sandbox(&id).unwrap();
    assert!(s.get_sandbox(&id).unwrap().is_none());
}

#[test]
fn audit_is_append_only() {
    let (_d, s) = store();
    let e = AuditEntry {
        seq: 0,
        at: rfc3339(SystemTime::now()),
        workspace_id: None,
        user_id: None,
        action: "api".into(),
        target: None,
        detail: Some("GET /x 200".into()),
    };
    s.append_audit(&e).unwrap();
    s.append_audit(&e).unwrap();
    let got = s.list_audit(None, 0, 10).unwrap();
    assert_eq!(got.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![1, 2]);
    assert_eq!(s.list_audit(None, 1, 10).unwrap().len(), 1);
    let conn = s.lock();
    assert!(conn.execute("DELETE FROM audit", []).is_err());
    assert!(conn.execute("UPDATE audit SET action = 'x'", []).is_err());
}

#[test]
fn the_database_and_its_wal_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.db");
    let wal = dir.path().join("w.db-wal");
    let shm = dir.path().join("w.db-shm");
    {
        let s = SqliteStore::open(&path).unwrap();
        s.create_workspace("default").unwrap();
        for p in [&path, &wal, &shm] {
            assert_eq!(mode(p), 0o600, "{}", p.display());
        }
    }
    // A database made by an older version, readable by everyone, is made private at open.
    for p in [&path, &wal, &shm] {
        if p.exists() {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
    }
    let s = SqliteStore::open(&path).unwrap();
    s.create_workspace("other").unwrap();
    for p in [&path, &wal, &shm] {
        assert_eq!(mode(p), 0o600, "{}", p.display());
    }
}

#[test]
fn a_read_sandbox_follows_every_write_of_this_store_and_of_another_process() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.db");
    let s = SqliteStore::open(&path).unwrap();
    let ws = s.create_workspace("default").unwrap();
    let u = s.create_user(&ws, "alice", false).unwrap();
    let mut a = record(&ws, &u, "box");
    s.insert_sandbox(&a).unwrap();
    assert_eq!(s.get_sandbox(&a.id).unwrap().unwrap().name, "box");

    // This store's own update and delete.
    a.name = "renamed".into();
    a.status = SandboxStatus::Ready;
    s.update_sandbox(&a).unwrap();
    let got = s.get_sandbox(&a.id).unwrap().unwrap();
    assert_eq!(
        (got.name.as_str(), got.status),
        ("renamed", SandboxStatus::Ready)
    );

    // Another connection, as `warren run` beside the daemon: its commits show at once.
    let other = SqliteStore::open(&path).unwrap();
    a.status = SandboxStatus::Stopped;
    other.update_sandbox(&a).unwrap();
    assert_eq!(
        s.get_sandbox(&a.id).unwrap().unwrap().status,
        SandboxStatus::Stopped
    );
    other.delete_sandbox(&a.id).unwrap();
    assert!(s.get_sandbox(&a.id).unwrap().is_none());

    let b = record(&ws, &u, "second");
    other.insert_sandbox(&b).unwrap();
    assert_eq!(s.get_sandbox(&b.id).unwrap().unwrap().name, "second");
    s.delete_sandbox(&b.id).unwrap();
    assert!(s.get_sandbox(&b.id).unwrap().is_none());
    assert!(other.get_sandbox(&b.id).unwrap().is_none());
}

/// The admission sums as SQL computes them from the table: the oracle for the tallies.
fn held_by_sql(s: &SqliteStore, user: &str, except: Option<&str>) -> Held {
    let conn = s.lock();
    let (a, b, c, d): (i64, i64, i64, i64) = conn
        .query_row(
            "SELECT COUNT(*), \
               COALESCE(SUM(CASE WHEN status IN ('provisioning', 'ready') \
                 THEN json_extract(config, '$.mem_bytes') ELSE 0 END), 0), \
               COALESCE(SUM(created_by = ?1), 0), \
               COALESCE(SUM(CASE WHEN created_by = ?1 AND status IN ('provisioning', 'ready') \
                 THEN json_extract(config, '$.mem_bytes') ELSE 0 END), 0) \
             FROM sandboxes WHERE id IS NOT ?2",
            rusqlite::params![user, except],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .unwrap();
    Held {
        sandboxes: usize::try_from(a).unwrap(),
        committed_mem: u64::try_from(b).unwrap(),
        user_sandboxes: usize::try_from(c).unwrap(),
        user_committed_mem: u64::try_from(d).unwrap(),
    }
}

#[test]
fn admission_tallies_follow_every_write_of_this_store_and_of_another_process() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.db");
    let s = SqliteStore::open(&path).unwrap();
    // Another connection, as `warren run` beside the daemon.
    let other = SqliteStore::open(&path).unwrap();
    let ws = s.create_workspace("default").unwrap();
    let users = [
        s.create_user(&ws, "alice", false).unwrap(),
        s.create_user(&ws, "bob", false).unwrap(),
    ];
    let statuses = [
        SandboxStatus::Provisioning,
        SandboxStatus::Ready,
        SandboxStatus::Stopped,
        SandboxStatus::Failed,
        SandboxStatus::Deleting,
    ];
    // A fixed xorshift sequence: the same 600 steps every run.
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = move |n: usize| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        usize::try_from(seed % n as u64).unwrap()
    };
    // Both stores' tallies, each kept up by its own writes and reloaded after the other's.
    let check = |at: &str| {
        for store in [&s, &other] {
            for user in &users {
                assert_eq!(
                    store.held(user, None).unwrap(),
                    held_by_sql(store, user, None),
                    "{at}"
                );
            }
        }
    };
    let mut live: Vec<SandboxRecord> = Vec::new();
    for step in 0..600 {
        let writer = if next(10) == 0 { &other } else { &s };
        match next(5) {
            0 | 1 => {
                let mut rec = record(&ws, &users[next(2)], &format!("box-{step}"));
                rec.status = statuses[next(statuses.len())];
                rec.config.mem_bytes = (next(8) as u64 + 1) << 26;
                writer.insert_sandbox(&rec).unwrap();
                live.push(rec);
            }
            2 | 3 if !live.is_empty() => {
                let i = next(live.len());
                live[i].status = statuses[next(statuses.len())];
                live[i].config.mem_bytes = (next(8) as u64 + 1) << 26;
                writer.update_sandbox(&live[i]).unwrap();
            }
            4 if !live.is_empty() => {
                let rec = live.swap_remove(next(live.len()));
                writer.delete_sandbox(&rec.id).unwrap();
                check(&format!("step {step}, deleted"));
                // A second delete, and an update of a row that is gone, change nothing.
                writer.delete_sandbox(&rec.id).unwrap();
                writer.update_sandbox(&rec).unwrap();
            }
            _ => {}
        }
        let user = &users[next(2)];
        let except = (!live.is_empty() && next(3) == 0).then(|| live[next(live.len())].id.clone());
        for store in [&s, &other] {
            assert_eq!(
                store.held(user, except.as_deref()).unwrap(),
                held_by_sql(store, user, except.as_deref()),
                "step {step}"
            );
        }
    }
    assert!(
        s.held(&users[0], None).unwrap().sandboxes > 0,
        "the run left sandboxes to count"
    );
}

//! A new sandbox's rootfs stays as its image made it: `/tmp` and the trust store are in a
//! subvolume beside it and the machine id a file bound over the image's empty one, so creating
//! a sandbox copies none of the image's tree blocks (each copy costs every later btrfs commit
//! more as sandboxes of one image add up).

use warren_btrfs as btrfs;
use warren_runtime::{SandboxSpec, Storage};
use warren_types::{ImageRef, Limits};

use crate::support::{TestSandbox, driver};

/// The transaction that last changed the subvolume at `path`'s tree, and the one that made it.
fn generations(path: &std::path::Path) -> (u64, u64) {
    // The transaction that holds the latest writes must be committed for the root item to say.
    let sync = std::process::Command::new("sync")
        .arg("-f")
        .arg(path)
        .status()
        .unwrap();
    assert!(sync.success());
    let show = std::process::Command::new("btrfs")
        .args(["subvolume", "show"])
        .arg(path)
        .output()
        .unwrap();
    assert!(show.status.success(), "{show:?}");
    let text = String::from_utf8_lossy(&show.stdout).into_owned();
    let field = |name: &str| -> u64 {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {text}"))
    };
    (field("Generation:"), field("Gen at creation:"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_sandbox_writes_nothing_into_its_rootfs() {
    let sb = TestSandbox::new().await;
    let out = sb
        .sh("cat /etc/machine-id; echo x > /tmp/y && cat /tmp/y; \
             echo other > /etc/machine-id 2>/dev/null || echo read-only; \
             mv /tmp /srv/t 2>/dev/null || echo pinned; \
             update-ca-certificates >/dev/null && grep -c 'BEGIN CERT' /etc/ssl/certs/ca-certificates.crt")
        .await;
    assert_eq!(out.code(), 0, "{}", out.err());
    let text = out.out();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 5, "{text}");
    // The trust store was rebuilt in place (a rename within the directory) with the image's CAs.
    assert!(lines[4].parse::<u32>().unwrap() > 100, "{text}");
    assert!(
        lines[0].len() == 32 && lines[0].bytes().all(|b| b.is_ascii_hexdigit()),
        "{text}"
    );
    assert_eq!(&lines[1..4], ["x", "read-only", "pinned"], "{text}");

    let storage = driver().storage();
    let rootfs = storage.rootfs_path(sb.id());
    let tmp = storage.tmp_path(sb.id());
    // What the sandbox saw is the runtime's: its id and its /tmp live beside the rootfs.
    assert_eq!(
        std::fs::read_to_string(storage.own_files_dir(sb.id()).join("machine-id")).unwrap(),
        format!("{}\n", lines[0])
    );
    assert_eq!(std::fs::read_to_string(tmp.join("y")).unwrap(), "x\n");
    assert!(btrfs::is_subvolume(&storage.rw_path(sb.id())));
    let bundle = "etc/ssl/certs/ca-certificates.crt";
    let ours = std::fs::metadata(storage.rw_path(sb.id()).join("certs/ca-certificates.crt"));
    let image = std::fs::metadata(rootfs.join(bundle)).unwrap();
    assert_ne!(
        std::os::unix::fs::MetadataExt::ino(&ours.unwrap()),
        std::os::unix::fs::MetadataExt::ino(&image),
        "update-ca-certificates replaced the sandbox's copy, not the image's file"
    );
    assert_eq!(
        std::fs::metadata(rootfs.join("etc/machine-id"))
            .unwrap()
            .len(),
        0
    );
    assert!(!rootfs.join("tmp/y").exists());
    let (changed, made) = generations(&rootfs);
    assert_eq!(
        changed, made,
        "the rootfs's tree was written after its snapshot"
    );

    // The check can fail: a write to the rootfs moves its generation.
    let out = sb.sh("echo x > /srv/written").await;
    assert_eq!(out.code(), 0, "{}", out.err());
    let (changed, made) = generations(&rootfs);
    assert!(changed > made, "{changed} {made}");
    sb.destroy().await;
    assert!(!tmp.exists() && !rootfs.exists());
}

/// A sandbox's own name resolves without a network (this driver links none): `/etc/hostname`
/// and a line of `/etc/hosts` say it, both files the sandbox may write; a restart keeps the
/// tenant's lines and writes its own line once, afresh, even over a file the tenant emptied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sandbox_resolves_its_own_name_offline_and_keeps_its_hosts_lines_across_a_restart() {
    let mut sb = TestSandbox::new().await;
    let id = sb.id().to_string();
    let probe = "hostname; cat /etc/hostname; getent hosts \"$(hostname)\"; \
                 python3 -c 'import socket; print(socket.gethostbyname(socket.gethostname()))'; \
                 grep -c \"$(hostname)\" /etc/hosts";
    let out = sb.sh(probe).await;
    assert_eq!(out.code(), 0, "{}", out.err());
    let text = out.out();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 5, "{text}");
    assert_eq!(lines[0], id);
    assert_eq!(lines[1], id, "/etc/hostname names the sandbox");
    assert_eq!(
        lines[2].split_whitespace().collect::<Vec<_>>(),
        ["127.0.1.1", id.as_str()],
        "{text}"
    );
    assert_eq!(lines[3], "127.0.1.1");
    assert_eq!(lines[4], "1");

    // The tenant adds a name (appending, as `echo >>` does) and the rootfs stays unwritten:
    // the file is the sandbox's own, in its rw subvolume.
    let out = sb
        .sh("echo '10.9.8.7 db.internal' >> /etc/hosts && getent hosts db.internal")
        .await;
    assert_eq!(out.code(), 0, "{}", out.err());
    assert!(out.out().starts_with("10.9.8.7"), "{}", out.out());
    let storage = driver().storage();
    let rootfs = storage.rootfs_path(sb.id());
    assert_eq!(
        std::fs::read_to_string(rootfs.join("etc/hosts")).unwrap(),
        warren_proto::HOSTS_BASE
    );

    let spec = SandboxSpec {
        id: sb.id().clone(),
        image: ImageRef::default_image(),
        limits: Limits::default(),
        trust: String::new(),
        tier: warren_driver::Tier::Jail,
        volumes: Vec::new(),
    };
    driver().stop(sb.id(), Some(&sb.handle)).await.unwrap();
    sb.handle = driver().start(&spec).await.unwrap();
    let out = sb
        .sh("getent hosts db.internal; grep -c \"$(hostname)\" /etc/hosts; grep -c localhost /etc/hosts")
        .await;
    assert_eq!(out.code(), 0, "{}", out.err());
    assert_eq!(
        out.out().lines().skip(1).collect::<Vec<_>>(),
        ["1", "2"],
        "{}",
        out.out()
    );
    assert!(out.out().starts_with("10.9.8.7"), "{}", out.out());

    // Emptied by the tenant: the next boot starts again from the loopback names.
    let out = sb.sh(": > /etc/hosts; : > /etc/hostname").await;
    assert_eq!(out.code(), 0, "{}", out.err());
    driver().stop(sb.id(), Some(&sb.handle)).await.unwrap();
    sb.handle = driver().start(&spec).await.unwrap();
    let out = sb
        .sh("cat /etc/hostname; getent hosts localhost \"$(hostname)\" | wc -l")
        .await;
    assert_eq!(out.code(), 0, "{}", out.err());
    assert_eq!(out.out(), format!("{id}\n2\n"));
    sb.destroy().await;
}

/// A sandbox that filled the subvolume its hosts file lives in still boots with its names: the
/// boot's write of them may fail, and then the last boot's files are bound as they are.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sandbox_whose_tmp_is_full_still_boots_with_its_names() {
    let limits = Limits {
        disk_bytes: 64 << 20,
        ..Limits::default()
    };
    let mut sb = TestSandbox::with_limits(limits).await;
    let out = sb
        .sh("echo '10.9.8.7 db.internal' >> /etc/hosts; \
             dd if=/dev/zero of=/tmp/fill bs=1M count=128 2>/dev/null; sync; \
             echo more > /tmp/more 2>/dev/null || echo full")
        .await;
    assert!(
        out.out().contains("full"),
        "/tmp did not fill: {}",
        out.out()
    );
    let spec = SandboxSpec {
        id: sb.id().clone(),
        image: ImageRef::default_image(),
        limits,
        trust: String::new(),
        tier: warren_driver::Tier::Jail,
        volumes: Vec::new(),
    };
    driver().stop(sb.id(), Some(&sb.handle)).await.unwrap();
    sb.handle = driver().start(&spec).await.expect("a full sandbox boots");
    let out = sb
        .sh(
            "hostname; head -c 64 /etc/hostname; grep -c localhost /etc/hosts; \
             ls -l /tmp/fill | wc -l; getent hosts db.internal",
        )
        .await;
    assert_eq!(out.code(), 0, "{}", out.err());
    let text = out.out();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 5, "{text}");
    // Written afresh or, when the quota refused that, the last boot's files bound as they
    // are: either way they name the sandbox and keep the tenant's line.
    assert_eq!(lines[0], sb.id().to_string());
    assert_eq!(lines[1], lines[0], "{text}");
    assert_eq!(&lines[2..4], ["2", "1"], "{text}");
    assert!(lines[4].starts_with("10.9.8.7"), "{text}");
    sb.destroy().await;
}

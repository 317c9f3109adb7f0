//! A new sandbox's rootfs stays as its image made it: `/tmp` and the trust store are in a
//! subvolume beside it and the machine id a file bound over the image's empty one, so creating
//! a sandbox copies none of the image's tree blocks (each copy costs every later btrfs commit
//! more as sandboxes of one image add up).

use warren_btrfs as btrfs;
use warren_runtime::Storage;

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

//! Deleting a sandbox whatever its tenant did to its files (SECURITY.md §6): subvolumes moved
//! or nested anywhere in its tree, huge and deep directory trees, file attributes.

use std::path::{Path, PathBuf};

use warren_btrfs as btrfs;
use warren_runtime::Storage;

use crate::support::{TestSandbox, driver};

/// Ids of every subvolume on the pool, from `btrfs subvolume list` (an independent reading of
/// the same root tree the deletion searches).
fn listed_subvolumes(fs_root: &Path) -> Vec<u64> {
    let out = std::process::Command::new("btrfs")
        .args(["subvolume", "list"])
        .arg(fs_root)
        .output()
        .expect("run btrfs (btrfs-progs is required)");
    assert!(
        out.status.success(),
        "btrfs subvolume list: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            // "ID 257 gen 9 top level 5 path images/x"
            l.split_whitespace()
                .nth(1)
                .and_then(|id| id.parse().ok())
                .unwrap_or_else(|| panic!("unexpected line {l:?}"))
        })
        .collect()
}

/// A scratch directory at the pool's top level, removed by the test itself.
fn scratch(name: &str) -> PathBuf {
    let dir = driver()
        .storage()
        .root()
        .join(format!(".test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir(&dir);
    std::fs::create_dir(&dir).unwrap();
    dir
}

#[test]
fn delete_subvolume_tree_finds_nested_subvolumes_wherever_they_were_moved() {
    let fs = driver().storage().root().to_owned();
    let dir = scratch("tree");
    let top = dir.join("top");
    btrfs::create_subvolume(&top, None).unwrap();
    // Three levels of nesting, each child renamed away from where it was made and into
    // directories of other subvolumes' trees.
    std::fs::create_dir_all(top.join("a/b/c")).unwrap();
    btrfs::create_subvolume(&top.join("one"), None).unwrap();
    std::fs::rename(top.join("one"), top.join("a/b/c/one")).unwrap();
    std::fs::create_dir_all(top.join("a/b/c/one/x/y")).unwrap();
    btrfs::create_subvolume(&top.join("a/b/c/one/x/y/two"), None).unwrap();
    btrfs::create_subvolume(&top.join("a/b/c/one/x/y/two/three"), Some(1 << 30)).unwrap();
    btrfs::create_subvolume(&top.join("a/sibling"), None).unwrap();

    let ids = btrfs::subvolume_tree(&fs, &top).unwrap();
    assert_eq!(ids.len(), 5, "{ids:?}");
    assert_eq!(*ids.last().unwrap(), btrfs::subvolume_id(&top).unwrap());
    // Children come before their parents.
    let pos = |p: &str| {
        let id = btrfs::subvolume_id(&top.join(p)).unwrap();
        ids.iter().position(|i| *i == id).unwrap()
    };
    assert!(pos("a/b/c/one/x/y/two/three") < pos("a/b/c/one/x/y/two"));
    assert!(pos("a/b/c/one/x/y/two") < pos("a/b/c/one"));
    // Limits of nested subvolumes are lifted by id before a delete (full qgroups refuse to
    // delete a subvolume at its limit).
    let three = btrfs::subvolume_id(&top.join("a/b/c/one/x/y/two/three")).unwrap();
    let max = btrfs::sysfs_dir(&fs)
        .unwrap()
        .join(format!("qgroups/0_{three}/max_referenced"));
    assert_eq!(
        std::fs::read_to_string(&max).unwrap().trim(),
        (1u64 << 30).to_string()
    );
    btrfs::set_limit_by_id(&fs, three, None).unwrap();
    assert_eq!(std::fs::read_to_string(&max).unwrap().trim(), "0");
    // The plain delete refuses a subvolume with nested ones: the case the tree delete is for.
    let err = btrfs::delete_subvolume(&top).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ENOTEMPTY), "{err}");

    // Not a subvolume, or a symlink to one: refused, nothing deleted.
    std::os::unix::fs::symlink(&top, dir.join("link")).unwrap();
    assert!(btrfs::delete_subvolume_tree(&fs, &dir.join("link")).is_err());
    assert!(btrfs::delete_subvolume_tree(&fs, &top.join("a/b")).is_err());
    assert!(top.join("a/b/c/one/x/y/two/three").is_dir());

    btrfs::delete_subvolume_tree(&fs, &top).unwrap();
    assert!(!top.exists());
    let left = listed_subvolumes(&fs);
    for id in &ids {
        assert!(!left.contains(id), "subvolume {id} is still listed");
    }
    // Gone is gone: a second delete reports the path missing.
    let err = btrfs::delete_subvolume_tree(&fs, &top).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::NotFound);
    std::fs::remove_file(dir.join("link")).unwrap();
    std::fs::remove_dir(&dir).unwrap();
}

/// What the tenant does: tries to move its /tmp deep into its tree (a mount point: refused),
/// writes 100,000 entries (a wide tree in /tmp and in the rootfs, and one very deep chain) and
/// sets the file attributes it may set, and tries the ones that would block an unlink.
const TENANT: &str = r#"
import fcntl, os, struct, subprocess
moved = subprocess.run("mkdir -p /k/deep/er && mv /tmp /k/deep/er/t", shell=True)
print("tmp moved" if moved.returncode == 0 else "tmp pinned")
n = 0
for root in ("/tmp/wide", "/var/wide"):
    for d in range(250):
        p = f"{root}/{d}"
        os.makedirs(p)
        n += 1
        for f in range(199):
            open(f"{p}/{f}", "w").close()
            n += 1
os.chdir("/k/deep")
for _ in range(10000):
    os.mkdir("d")
    os.chdir("d")
    n += 1
open("leaf", "w").write("x")
print("entries", n)
SETFLAGS, NODUMP, NOATIME, IMMUTABLE, APPEND = 0x40086602, 0x40, 0x80, 0x10, 0x20
fd = os.open("leaf", os.O_RDONLY)
fcntl.ioctl(fd, SETFLAGS, struct.pack("i", NODUMP | NOATIME))
print("nodump set")
for name, flag in (("immutable", IMMUTABLE), ("append", APPEND)):
    try:
        fcntl.ioctl(fd, SETFLAGS, struct.pack("i", flag))
        print(name, "set")
    except OSError as e:
        print(name, "errno", e.errno)
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sandbox_that_tried_to_move_its_tmp_nested_subvolumes_and_wrote_100k_entries_is_destroyed()
 {
    let sb = TestSandbox::new().await;
    let out = sb.python(TENANT).await;
    let text = out.out();
    assert_eq!(out.code(), 0, "{text}{}", out.err());
    assert!(text.contains("tmp pinned\n"), "{text}");
    assert!(text.contains("entries 110000\n"), "{text}");
    assert!(text.contains("nodump set\n"), "{text}");
    // Without CAP_LINUX_IMMUTABLE on the host the tenant cannot pin a file.
    assert!(text.contains("immutable errno 1\n"), "{text}");
    assert!(text.contains("append errno 1\n"), "{text}");

    let fs = driver().storage().root().to_owned();
    let rootfs = driver().storage().rootfs_path(sb.id());
    let tmp = driver().storage().tmp_path(sb.id());
    let rw = driver().storage().rw_path(sb.id());
    assert!(
        btrfs::is_subvolume(&rw),
        "/tmp is in the subvolume beside the rootfs"
    );
    assert!(
        tmp.join("wide/249/198").is_file(),
        "what the tenant wrote to /tmp"
    );
    // Subvolumes the tenant cannot make (seccomp) but an image or an older sandbox can hold:
    // nested in /tmp and two levels deep in the rootfs.
    btrfs::create_subvolume(&tmp.join("wide/7/nested"), None).unwrap();
    btrfs::create_subvolume(&rootfs.join("var/wide/3/nested"), None).unwrap();
    btrfs::create_subvolume(&rootfs.join("var/wide/3/nested/deeper"), Some(1 << 30)).unwrap();
    let mut ids = btrfs::subvolume_tree(&fs, &rootfs).unwrap();
    ids.extend(btrfs::subvolume_tree(&fs, &rw).unwrap());
    assert_eq!(ids.len(), 5, "rootfs, rw and three nested: {ids:?}");
    let listed = listed_subvolumes(&fs);
    assert!(
        ids.iter().all(|id| listed.contains(id)),
        "{ids:?} in {listed:?}"
    );

    let id = sb.id().clone();
    tokio::time::timeout(std::time::Duration::from_secs(60), sb.destroy())
        .await
        .expect("destroy finished in time");

    assert!(!rootfs.exists());
    assert!(!rootfs.parent().unwrap().exists(), "the sandbox's dir");
    assert!(!driver().storage().list_rootfs().unwrap().contains(&id));
    let left = listed_subvolumes(&fs);
    for id in &ids {
        assert!(!left.contains(id), "subvolume {id} is still listed");
    }
}

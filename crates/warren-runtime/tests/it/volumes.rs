//! Volumes: persistent, quota-limited btrfs subvolumes mounted into sandboxes, idmapped like
//! the rootfs; shared read-only, cloned copy-on-write, and never mounted through a symlink the
//! tenant planted in its rootfs.

use warren_driver::VolumeMount;
use warren_types::{Limits, SandboxId};

use crate::support::{TestSandbox, driver, spec_with};

/// A volume deleted when dropped, also when the test fails.
struct TestVolume(String);

impl TestVolume {
    fn new(size_bytes: u64) -> Self {
        let v = Self::named();
        driver().storage().create_volume(&v.0, size_bytes).unwrap();
        v
    }

    /// A fresh id (hex and `-`), nothing created.
    fn named() -> Self {
        let a = SandboxId::generate();
        let b = SandboxId::generate();
        Self(format!("{}-{}", &a.as_str()[3..], &b.as_str()[3..]))
    }

    fn at(&self, path: &str, read_only: bool) -> VolumeMount {
        VolumeMount {
            volume_id: self.0.clone(),
            mount_path: path.into(),
            read_only,
        }
    }
}

impl Drop for TestVolume {
    fn drop(&mut self) {
        let _ = driver().storage().delete_volume(&self.0);
    }
}

fn mounts_of_host() -> usize {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_volume_written_by_one_sandbox_is_read_by_the_next() {
    let vol = TestVolume::new(256 << 20);
    let path = driver().storage().volume_path(&vol.0).unwrap();
    let meta = std::fs::metadata(&path).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        (meta.uid(), meta.gid(), meta.mode() & 0o7777),
        (0, 0, 0o755)
    );
    assert!(
        driver().storage().create_volume(&vol.0, 1 << 20).is_err(),
        "a second create of the same id fails"
    );

    let writer = TestSandbox::with_volumes(vec![vol.at("/home/data", false)]).await;
    let out = writer
        .sh(
            "set -e; stat -c '%u %g %a' /home/data; echo kept > /home/data/note; \
             mkdir /home/data/dir; chown nobody /home/data/dir; \
             dd if=/dev/urandom of=/home/data/blob bs=1M count=4 status=none; sync",
        )
        .await;
    assert_eq!(out.code(), 0, "{}{}", out.out(), out.err());
    assert_eq!(
        out.out(),
        "0 0 755\n",
        "the volume's root is the sandbox root's"
    );
    writer.destroy().await;
    // Files land on disk with the image's ids, not the sandbox's host range.
    assert_eq!(std::fs::metadata(path.join("note")).unwrap().uid(), 0);
    assert_eq!(std::fs::metadata(path.join("dir")).unwrap().uid(), 65_534);
    let used = driver().storage().volume_used_bytes(&vol.0).unwrap();
    assert!(used >= 4 << 20, "used {used}");

    let reader = TestSandbox::with_volumes(vec![vol.at("/mnt/v", false)]).await;
    let out = reader
        .sh("cat /mnt/v/note; stat -c %U /mnt/v/dir; grep ' /mnt/v ' /proc/mounts")
        .await;
    let text = out.out();
    assert!(text.starts_with("kept\nnobody\n"), "{text}{}", out.err());
    assert!(text.contains("nosuid") && text.contains("nodev"), "{text}");
    reader.destroy().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sandboxes_share_a_read_only_volume() {
    let vol = TestVolume::new(64 << 20);
    let writer = TestSandbox::with_volumes(vec![vol.at("/shared", false)]).await;
    let out = writer.sh("echo first > /shared/a").await;
    assert_eq!(out.code(), 0, "{}", out.err());
    let r1 = TestSandbox::with_volumes(vec![vol.at("/shared", true)]).await;
    let r2 = TestSandbox::with_volumes(vec![vol.at("/srv/ro", true)]).await;
    // The writer's later writes show in both: one volume, three mounts.
    let out = writer.sh("echo second > /shared/b").await;
    assert_eq!(out.code(), 0, "{}", out.err());
    for (sb, at) in [(&r1, "/shared"), (&r2, "/srv/ro")] {
        let out = sb
            .python(&format!(
                "import errno\nprint(open('{at}/a').read().strip(), open('{at}/b').read().strip())\n\
                 for op in (lambda: open('{at}/c', 'w'), lambda: open('{at}/a', 'a')):\n\
                 \x20   try:\n        op()\n        print('wrote')\n\
                 \x20   except OSError as e:\n        print(errno.errorcode[e.errno])\n"
            ))
            .await;
        assert_eq!(
            out.out(),
            "first second\nEROFS\nEROFS\n",
            "{at}: {}",
            out.err()
        );
    }
    r1.destroy().await;
    r2.destroy().await;
    writer.destroy().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writing_past_the_volume_size_fails_inside_and_spares_the_host() {
    let size: u64 = 32 << 20;
    let vol = TestVolume::new(size);
    let sb = TestSandbox::with_volumes(vec![vol.at("/data", false)]).await;
    let out = sb
        .sh("dd if=/dev/zero of=/data/big bs=1M count=256 conv=fsync 2>&1; echo rc=$?; sync")
        .await;
    let text = out.out();
    assert!(!text.contains("rc=0"), "dd must fail: {text}");
    assert!(
        text.contains("Disk quota exceeded") || text.contains("No space left"),
        "EDQUOT or ENOSPC: {text}"
    );
    // What the volume holds in the pool, from its own quota group (the pool's free space
    // would also move with whatever other tests write meanwhile).
    let used = driver()
        .storage()
        .volume_used_bytes(&vol.0)
        .expect("the volume's quota group");
    assert!(
        used < 2 * size,
        "the volume holds {used} bytes of the pool at a size of {size}"
    );
    // The rootfs is not the volume: the sandbox still writes there.
    let out = sb.sh("echo ok > /root/after && cat /root/after").await;
    assert_eq!(out.out(), "ok\n", "{}", out.err());
    // A larger size takes effect at once, for the running sandbox too.
    driver().storage().resize_volume(&vol.0, 128 << 20).unwrap();
    let out = sb
        .sh("rm -f /data/big; dd if=/dev/zero of=/data/big bs=1M count=64 conv=fsync 2>&1; echo rc=$?")
        .await;
    assert!(out.out().contains("rc=0"), "{}", out.out());
    sb.destroy().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clone_starts_with_the_source_s_files_and_diverges() {
    let src = TestVolume::new(64 << 20);
    let sb = TestSandbox::with_volumes(vec![src.at("/src", false)]).await;
    let out = sb
        .sh("echo one > /src/a; mkdir /src/d; echo x > /src/d/f; sync")
        .await;
    assert_eq!(out.code(), 0, "{}", out.err());
    // The source is mounted and in use while it is cloned.
    let dst = TestVolume::named();
    driver()
        .storage()
        .clone_volume(&src.0, &dst.0, 64 << 20)
        .unwrap();
    assert!(
        driver()
            .storage()
            .clone_volume(&src.0, &dst.0, 1 << 20)
            .is_err(),
        "the clone exists"
    );
    let both =
        TestSandbox::with_volumes(vec![src.at("/v/src", false), dst.at("/v/dst", false)]).await;
    let out = both
        .sh(
            "set -e; cat /v/dst/a /v/dst/d/f; echo two > /v/dst/a; echo new > /v/src/b; \
             cat /v/src/a; test ! -e /v/dst/b && echo no-b",
        )
        .await;
    assert_eq!(out.out(), "one\nx\none\nno-b\n", "{}", out.err());
    both.destroy().await;
    sb.destroy().await;
    let dst_path = driver().storage().volume_path(&dst.0).unwrap();
    assert_eq!(
        std::fs::read_to_string(dst_path.join("a")).unwrap(),
        "two\n"
    );
    driver().storage().delete_volume(&dst.0).unwrap();
    driver().storage().delete_volume(&dst.0).unwrap();
    assert!(!dst_path.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_symlinked_mount_point_fails_the_boot_and_touches_nothing() {
    let vol = TestVolume::new(16 << 20);
    let vol_path = driver().storage().volume_path(&vol.0).unwrap();
    std::fs::write(vol_path.join("marker-volume"), b"v").unwrap();
    let mut spec = spec_with(Limits::default(), Vec::new());
    let mut sb = TestSandbox::with_spec(&spec).await;
    let id = sb.id().clone();
    let rootfs = driver()
        .storage()
        .root()
        .join("sandboxes")
        .join(id.as_str())
        .join("rootfs");
    let host_etc: Vec<_> = std::fs::read_dir("/etc")
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    let mounts_before = mounts_of_host();

    for (plant, mount_path, found) in [
        (
            "rm -rf /data && ln -s /etc /data",
            "/data",
            "/data is a symlink",
        ),
        (
            "rm -rf /data && ln -s ../../../../.. /data",
            "/data/x",
            "/data is a symlink",
        ),
        (
            "rm -rf /data && ln -s /proc/self/root /data",
            "/data",
            "/data is a symlink",
        ),
        (
            "rm -rf /data && mkdir /data && ln -s /etc /data/in",
            "/data/in/x",
            "/data/in is a symlink",
        ),
        (
            "rm -rf /data && echo f > /data",
            "/data",
            "/data is not a directory",
        ),
    ] {
        let out = sb.sh(plant).await;
        assert_eq!(out.code(), 0, "{plant}: {}", out.err());
        driver().stop(&id, None).await.unwrap();
        spec.id = id.clone();
        spec.volumes = vec![vol.at(mount_path, false)];
        let err = driver().start(&spec).await.expect_err(plant);
        assert!(err.to_string().contains(found), "{plant}: {err}");
        // The tenant is told what is in the way, and nothing of the host.
        assert_eq!(
            err.public_reason(),
            format!("failed to prepare a volume mount point: {found}")
        );
        assert_eq!(
            mounts_of_host(),
            mounts_before,
            "{plant}: a host mount was left"
        );
        assert!(
            !std::path::Path::new("/etc/marker-volume").exists(),
            "{plant}"
        );
        assert!(!rootfs.join("etc/marker-volume").exists(), "{plant}");
        assert!(!rootfs.join("etc/x").exists(), "{plant}");
        // The sandbox is intact and boots without the volume.
        spec.volumes.clear();
        sb.handle = driver()
            .start(&spec)
            .await
            .expect("start without the volume");
        let out = sb
            .sh("cat /etc/hostname >/dev/null && ls / /etc | grep -c marker-volume")
            .await;
        assert_eq!(out.out(), "0\n", "{plant}: {}", out.err());
    }
    let host_etc_after: Vec<_> = std::fs::read_dir("/etc")
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(host_etc, host_etc_after);
    assert_eq!(
        std::fs::read_dir(&vol_path).unwrap().count(),
        1,
        "the volume is as it was"
    );
    // A refused mount path fails before any jail is built.
    driver().stop(&id, None).await.unwrap();
    spec.volumes = vec![vol.at("/proc/sys", false)];
    let err = driver().start(&spec).await.expect_err("/proc/sys");
    assert!(err.public_reason().contains("/proc, /sys"), "{err}");
    spec.volumes.clear();
    sb.handle = driver().start(&spec).await.unwrap();
    sb.destroy().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seam_checks_ids_and_deletes_idempotently() {
    use warren_driver::Driver;
    let seam: &dyn Driver = driver();
    let vol = TestVolume::named();
    seam.create_volume(&vol.0, 8 << 20).await.unwrap();
    // Empty: nothing, or once a commit has counted it, the new tree's one 16 KiB root node.
    let used = seam.volume_used_bytes(&vol.0);
    assert!(used.is_some_and(|b| b <= 16 << 10), "{used:?}");
    let exists = seam.create_volume(&vol.0, 8 << 20).await.unwrap_err();
    assert!(
        exists.public_reason().contains("already exists"),
        "{exists}"
    );
    for bad in ["../../etc", "", "abc/def", "ABCG", "a b"] {
        let err = seam.create_volume(bad, 1 << 20).await.unwrap_err();
        assert!(
            err.public_reason().contains("not a valid volume id"),
            "{bad}: {err}"
        );
        assert!(seam.delete_volume(bad).await.is_err(), "{bad}");
    }
    let missing = TestVolume::named();
    assert!(seam.resize_volume(&missing.0, 1 << 20).await.is_err());
    assert!(
        seam.clone_volume(&missing.0, &vol.0, 1 << 20)
            .await
            .is_err()
    );
    assert_eq!(seam.volume_used_bytes(&missing.0), None);
    seam.resize_volume(&vol.0, 16 << 20).await.unwrap();
    seam.delete_volume(&vol.0).await.unwrap();
    seam.delete_volume(&vol.0).await.unwrap();
    assert_eq!(seam.volume_used_bytes(&vol.0), None);
    // A sandbox naming a missing volume does not boot, and leaves nothing behind.
    let spec = spec_with(Limits::default(), vec![missing.at("/data", false)]);
    let err = seam.create(&spec).await.unwrap_err();
    assert!(err.public_reason().contains("does not exist"), "{err}");
    assert!(!seam.has_storage(&spec.id));
}

/// Deleting a volume a running sandbox mounts succeeds (the control plane should not do it,
/// but a sandbox must not be able to keep a volume alive): the sandbox is left with an empty,
/// dead directory it cannot write into.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_volume_deleted_under_a_running_sandbox_is_gone_for_it() {
    let vol = TestVolume::new(8 << 20);
    let sb = TestSandbox::with_volumes(vec![vol.at("/data", false)]).await;
    let out = sb.sh("echo x > /data/f").await;
    assert_eq!(out.code(), 0, "{}", out.err());
    driver().storage().delete_volume(&vol.0).unwrap();
    assert!(!driver().storage().volume_path(&vol.0).unwrap().exists());
    let out = sb
        .sh("ls -A /data | wc -l; echo y > /data/g 2>/dev/null; echo rc=$?")
        .await;
    assert_eq!(out.out(), "0\nrc=1\n", "{}", out.err());
    sb.destroy().await;
}

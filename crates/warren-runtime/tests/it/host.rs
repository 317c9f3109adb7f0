//! What a sandbox's files mean to the host, and a data dir that recovers from a killed first
//! start: setuid files made inside give a host user nothing, nothing under the data dir is
//! readable by an unprivileged host user, the pool is mounted nosuid,nodev, and a half-made
//! pool image is made again (issue reports 1 and 5; SECURITY.md §6).

use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use warren_runtime::Storage;
use warren_runtime::storage::{
    BtrfsStorage, is_formatted_pool, loop_device_of, loop_direct_io, pool_mount_flags,
};

use crate::support::{TestSandbox, data_dir, driver};

/// The unprivileged host user the host side runs as.
fn nobody() -> (u32, u32) {
    let user = nix::unistd::User::from_name("nobody")
        .unwrap()
        .expect("the host has a `nobody` user");
    (user.uid.as_raw(), user.gid.as_raw())
}

/// A command that runs as `nobody` with no supplementary groups and no capabilities (std drops
/// the groups when root changes uid; setuid from root to a non-root uid clears every
/// capability).
fn as_nobody(program: impl AsRef<std::ffi::OsStr>) -> Command {
    let (uid, gid) = nobody();
    let mut cmd = Command::new(program);
    cmd.uid(uid).gid(gid).current_dir("/");
    cmd
}

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path)
        .unwrap_or_else(|e| panic!("stat {}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

/// Paths of `dir` and beneath it, breadth first, at most `depth` levels down (the images and
/// sandboxes hold whole Debian trees; their top levels are what a host user would reach for).
fn walk(dir: &Path, depth: usize) -> Vec<PathBuf> {
    let mut found = vec![dir.to_owned()];
    let mut level = vec![dir.to_owned()];
    for _ in 0..depth {
        let mut next = Vec::new();
        for d in level {
            let Ok(entries) = std::fs::read_dir(&d) else {
                continue;
            };
            for e in entries.flatten() {
                let p = e.path();
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    next.push(p.clone());
                }
                found.push(p);
            }
        }
        level = next;
    }
    found
}

/// Which of `paths` `nobody` can read (a file) or list (a directory), by trying.
fn readable_by_nobody(paths: &[PathBuf]) -> Vec<String> {
    let out = as_nobody("/bin/sh")
        .arg("-c")
        .arg(
            r#"for p; do
                 if [ -d "$p" ]; then ls -- "$p" >/dev/null 2>&1 && echo "$p"
                 else head -c1 -- "$p" >/dev/null 2>&1 && echo "$p"; fi
               done
               exit 0"#,
        )
        .arg("sh")
        .args(paths)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_setuid_file_made_in_a_sandbox_gives_a_host_user_nothing() {
    let sb = TestSandbox::new().await;
    let out = sb
        .sh("cp /bin/bash /tmp/x && chmod 4755 /tmp/x && stat -c '%a %u' /tmp/x")
        .await;
    assert_eq!(out.code(), 0, "{}", out.err());
    assert_eq!(out.out().trim(), "4755 0");
    let file = driver().storage().tmp_path(sb.id()).join("x");
    // On disk it is what the report found: a setuid-root copy of bash (sandbox root is uid 0 on
    // disk through the idmapped mount).
    let meta = std::fs::metadata(&file).unwrap();
    assert_eq!(
        (std::os::unix::fs::MetadataExt::uid(&meta), mode(&file)),
        (0, 0o4755),
        "{}",
        file.display()
    );

    // By path, nobody does not get to it: the data dir is private to root.
    let by_path = as_nobody(&file).args(["-p", "-c", "id -u"]).output();
    match by_path {
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::PermissionDenied, "{e}"),
        Ok(out) => panic!("nobody executed {}: {out:?}", file.display()),
    }

    // Even handed the file as an open fd (as if a path to it existed), executing it gains no
    // privilege: the pool is mounted nosuid.
    let fd = std::fs::File::open(&file).unwrap();
    nix::fcntl::fcntl(
        &fd,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
    )
    .unwrap();
    let out = as_nobody(format!("/proc/self/fd/{}", fd.as_raw_fd()))
        .args(["-p", "-c", "id -u; id -g"])
        .output()
        .unwrap();
    drop(fd);
    assert!(out.status.success(), "{out:?}");
    let (uid, gid) = nobody();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("{uid}\n{gid}\n"),
        "the setuid-root file ran with root's euid: {out:?}"
    );
    sb.destroy().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_under_the_data_dir_is_readable_by_nobody() {
    let sb = TestSandbox::new().await;
    let out = sb
        .sh("echo secret > /tmp/public && chmod 644 /tmp/public && mkdir -p /srv/open && chmod 777 /srv/open")
        .await;
    assert_eq!(out.code(), 0, "{}", out.err());
    let data = data_dir();
    let rootfs = driver().storage().rootfs_path(sb.id());

    // The probe itself works: it finds what nobody can read.
    assert_eq!(
        readable_by_nobody(&["/etc/passwd".into(), "/".into()]),
        ["/etc/passwd", "/"]
    );

    let mut paths = walk(&data, 4);
    paths.extend(walk(&rootfs, 2));
    paths.extend([
        driver().storage().tmp_path(sb.id()).join("public"),
        rootfs.join("srv/open"),
        rootfs.join("etc/passwd"),
    ]);
    assert!(paths.len() > 20, "{paths:?}");
    let readable = readable_by_nobody(&paths);
    assert!(readable.is_empty(), "nobody can read or list: {readable:?}");

    assert_eq!(mode(&data), 0o700, "{}", data.display());
    for name in [".storage.lock", "warren.btrfs"] {
        let p = data.join(name);
        if p.exists() {
            assert_eq!(mode(&p), 0o600, "{}", p.display());
        }
    }
    assert_eq!(
        pool_mount_flags(driver().storage().root()).unwrap(),
        (true, true),
        "the pool is mounted nosuid,nodev"
    );
    sb.destroy().await;
}

/// A data dir under /var/tmp (not on btrfs, so the pool is a loop image), unmounted and
/// removed when dropped, also when the test fails.
struct TempDataDir {
    dir: PathBuf,
}

/// Small pools: mkfs.btrfs needs a little over 100 MiB.
const POOL_BYTES: u64 = 256 << 20;

impl TempDataDir {
    fn new(name: &str) -> Self {
        assert!(
            nix::unistd::geteuid().is_root(),
            "pool tests need root (loop mounts, btrfs): run them as root"
        );
        let dir = PathBuf::from(format!(
            "/var/tmp/warren-host-test-{name}-{}",
            std::process::id()
        ));
        let t = Self { dir };
        t.cleanup();
        std::fs::create_dir_all(&t.dir).unwrap();
        t
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn cleanup(&self) {
        // Deepest first; a bind over a mount needs two passes.
        for _ in 0..4 {
            let mut points = mounts_under(&self.dir);
            if points.is_empty() {
                break;
            }
            points.sort_by_key(|p| std::cmp::Reverse(p.as_os_str().len()));
            for p in points {
                let _ = Command::new("umount").arg(&p).status();
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Drop for TempDataDir {
    fn drop(&mut self) {
        self.cleanup();
    }
}

/// Mount points at or beneath `dir`, one entry per mount (stacked mounts repeat).
fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(PathBuf::from)
        .filter(|p| p.starts_with(dir))
        .collect()
}

fn is_mount_point(path: &Path) -> bool {
    mounts_under(path).iter().any(|p| p == path)
}

fn run(program: &str, args: &[&str]) {
    let out = Command::new(program).args(args).output().unwrap();
    assert!(out.status.success(), "{program} {args:?}: {out:?}");
}

#[test]
fn a_fresh_pool_is_private_and_mounted_nosuid_nodev_and_keeps_its_data() {
    let t = TempDataDir::new("fresh");
    let data = t.data();
    let storage = BtrfsStorage::open(&data, POOL_BYTES).unwrap();
    assert_eq!(mode(&data), 0o700);
    let image = data.join("warren.btrfs");
    assert_eq!(mode(&image), 0o600);
    assert_eq!(mode(&data.join(".storage.lock")), 0o600);
    assert_eq!(std::fs::metadata(&image).unwrap().len(), POOL_BYTES);
    assert!(is_formatted_pool(&image).unwrap());
    assert!(!data.join("warren.btrfs.tmp").exists());
    assert_eq!(pool_mount_flags(storage.root()).unwrap(), (true, true));
    // Its loop device does buffered I/O (a new sandbox's first reads come from the host's
    // cache), even when an earlier version switched it to direct I/O.
    let dev = loop_device_of(&image).expect("the pool image backs a loop device");
    assert_eq!(loop_direct_io(&dev), Some(false), "{}", dev.display());
    run("losetup", &["--direct-io=on", dev.to_str().unwrap()]);
    assert_eq!(loop_direct_io(&dev), Some(true));
    drop(storage);
    let storage = BtrfsStorage::open(&data, POOL_BYTES).unwrap();
    assert_eq!(loop_direct_io(&dev), Some(false), "{}", dev.display());

    // A formatted pool is kept as it is on the next open, data and all.
    std::fs::write(storage.root().join("marker"), "kept").unwrap();
    drop(storage);
    run("umount", &[data.join("fs").to_str().unwrap()]);
    let storage = BtrfsStorage::open(&data, POOL_BYTES).unwrap();
    assert_eq!(
        std::fs::read_to_string(storage.root().join("marker")).unwrap(),
        "kept"
    );
    assert_eq!(pool_mount_flags(storage.root()).unwrap(), (true, true));
}

#[test]
fn a_data_dir_made_by_an_older_version_is_made_private_and_remounted() {
    let t = TempDataDir::new("older");
    let data = t.data();
    let storage = BtrfsStorage::open(&data, POOL_BYTES).unwrap();
    let fs = storage.root().to_owned();
    drop(storage);
    // What an older version left: world-readable modes, a pool mounted with suid and dev.
    run(
        "mount",
        &["-o", "remount,bind,suid,dev", fs.to_str().unwrap()],
    );
    assert_eq!(pool_mount_flags(&fs).unwrap(), (false, false));
    for (p, m) in [
        (data.clone(), 0o755),
        (data.join("warren.btrfs"), 0o644),
        (data.join(".storage.lock"), 0o644),
    ] {
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(m)).unwrap();
    }

    let storage = BtrfsStorage::open(&data, POOL_BYTES).unwrap();
    assert_eq!(pool_mount_flags(storage.root()).unwrap(), (true, true));
    assert_eq!(mode(&data), 0o700);
    assert_eq!(mode(&data.join("warren.btrfs")), 0o600);
    assert_eq!(mode(&data.join(".storage.lock")), 0o600);
    assert_eq!(
        mounts_under(&fs).iter().filter(|p| **p == fs).count(),
        1,
        "remounted in place, not stacked"
    );
}

#[test]
fn a_half_made_pool_image_from_a_killed_first_start_is_made_again() {
    // A first start killed between creating and formatting the image (an older version
    // created it in place): zero-filled at full size, or cut short; and a temporary image
    // from a start killed during mkfs.
    for (case, len) in [("zeroed", POOL_BYTES), ("truncated", 0)] {
        let t = TempDataDir::new(case);
        let data = t.data();
        std::fs::create_dir_all(&data).unwrap();
        let image = data.join("warren.btrfs");
        std::fs::File::create(&image).unwrap().set_len(len).unwrap();
        std::fs::write(data.join("warren.btrfs.tmp"), b"half a pool").unwrap();
        assert!(!is_formatted_pool(&image).unwrap());

        let storage = BtrfsStorage::open(&data, POOL_BYTES)
            .unwrap_or_else(|e| panic!("{case}: the next start fails: {e:?}"));
        assert!(is_formatted_pool(&image).unwrap(), "{case}");
        assert_eq!(std::fs::metadata(&image).unwrap().len(), POOL_BYTES);
        assert_eq!(mode(&image), 0o600);
        assert!(!data.join("warren.btrfs.tmp").exists(), "{case}");
        assert!(is_mount_point(storage.root()), "{case}");
        assert_eq!(pool_mount_flags(storage.root()).unwrap(), (true, true));
        // Usable: an image build can begin in it.
        let build = storage.begin_image_build().unwrap();
        storage.abort_image_build(&build).unwrap();
    }
}

#[test]
fn a_data_dir_on_a_host_btrfs_gets_its_own_nosuid_bind() {
    let t = TempDataDir::new("hostbtrfs");
    // A host btrfs filesystem, mounted without nosuid/nodev as a host's own would be.
    let host_img = t.dir.join("host.img");
    std::fs::File::create(&host_img)
        .unwrap()
        .set_len(POOL_BYTES)
        .unwrap();
    run("mkfs.btrfs", &["-q", host_img.to_str().unwrap()]);
    let host = t.dir.join("host");
    std::fs::create_dir(&host).unwrap();
    run(
        "mount",
        &[
            "-o",
            "loop",
            host_img.to_str().unwrap(),
            host.to_str().unwrap(),
        ],
    );
    assert_eq!(pool_mount_flags(&host).unwrap(), (false, false));

    let data = host.join("data");
    for _ in 0..2 {
        let storage = BtrfsStorage::open(&data, POOL_BYTES).unwrap();
        assert!(!data.join("warren.btrfs").exists(), "no loop pool on btrfs");
        assert!(is_mount_point(storage.root()));
        assert_eq!(pool_mount_flags(storage.root()).unwrap(), (true, true));
        // The host filesystem's own mount is left as it was.
        assert_eq!(pool_mount_flags(&host).unwrap(), (false, false));
        assert_eq!(
            mounts_under(storage.root())
                .iter()
                .filter(|p| *p == storage.root())
                .count(),
            1,
            "one bind, also after a second open"
        );
        assert_eq!(mode(&data), 0o700);
    }
}

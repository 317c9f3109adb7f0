//! Resource limits are enforced by the kernel, inside the sandbox only.

use std::time::{Duration, Instant};

use warren_runtime::cgroup::{CgroupVersion, IoLimits};
use warren_runtime::{JailConfig, SandboxSpec};
use warren_types::{ImageRef, Limits};

use crate::support::{TestSandbox, driver};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fork_bomb_stops_at_the_pids_limit_and_the_host_stays_responsive() {
    let sb = TestSandbox::with_limits(Limits {
        pids: 64,
        ..Limits::default()
    })
    .await;
    let bomb = warren_proto::ExecSpec {
        argv: crate::support::bash(":(){ :|:& };:; sleep 5"),
        timeout_ms: Some(8_000),
        ..Default::default()
    };
    let mut conn = sb.conn().await;
    conn.send(&warren_proto::Request::Exec(bomb)).await.unwrap();
    // While the bomb runs, the host still spawns processes promptly and the sandbox's process
    // count never passes its limit.
    let mut peak = 0;
    let mut slowest = Duration::ZERO;
    // Sampled every 100 ms for 2 s: a measurement over time, not a wait for an event.
    let mut every = tokio::time::interval(Duration::from_millis(100));
    for _ in 0..20 {
        every.tick().await;
        peak = peak.max(driver().cgroups().pids(sb.id().as_str()).unwrap().len());
        let t = Instant::now();
        let st = std::process::Command::new("true").status().unwrap();
        assert!(st.success());
        slowest = slowest.max(t.elapsed());
    }
    assert!(peak > 32, "the bomb did fork (peak {peak})");
    assert!(peak <= 64, "pids limit held (peak {peak})");
    assert!(
        slowest < Duration::from_secs(2),
        "host spawn took {slowest:?}"
    );
    drop(conn);
    let t = Instant::now();
    sb.destroy().await;
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "destroy of a bombed sandbox took {:?}",
        t.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_hog_is_oom_killed_inside_its_cgroup_only() {
    let sb = TestSandbox::with_limits(Limits {
        memory_bytes: 128 << 20,
        ..Limits::default()
    })
    .await;
    let neighbour = TestSandbox::new().await;
    let before = driver().oom_kills(sb.id()).unwrap();
    let out = sb
        .exec(warren_proto::ExecSpec {
            argv: vec![
                "python3".into(),
                "-c".into(),
                "b=[]\nwhile True: b.append(bytearray(16<<20))".into(),
            ],
            ..Default::default()
        })
        .await;
    assert_eq!(
        out.code(),
        137,
        "killed by SIGKILL: {:?} {}",
        out.exit,
        out.err()
    );
    assert!(
        driver().oom_kills(sb.id()).unwrap() > before,
        "the kernel's OOM killer fired in the sandbox cgroup"
    );
    // The sandbox itself (its agent) and its neighbour keep working.
    assert_eq!(sb.sh("echo alive").await.out(), "alive\n");
    assert_eq!(neighbour.sh("echo alive").await.out(), "alive\n");
    assert_eq!(driver().oom_kills(neighbour.id()).unwrap(), 0);
    sb.destroy().await;
    neighbour.destroy().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writing_past_the_disk_limit_fails_inside_and_spares_the_host() {
    let limit: u64 = 512 << 20;
    let sb = TestSandbox::with_limits(Limits {
        disk_bytes: limit,
        ..Limits::default()
    })
    .await;
    let host_free = || {
        let s = nix::sys::statvfs::statvfs("/").unwrap();
        s.blocks_available() * s.fragment_size()
    };
    let before = host_free();
    let out = sb
        .sh("dd if=/dev/zero of=/root/big bs=1M count=2048 conv=fsync 2>&1; echo rc=$?; sync")
        .await;
    let text = out.out();
    assert!(!text.contains("rc=0"), "dd must fail: {text}");
    assert!(
        text.contains("Disk quota exceeded") || text.contains("No space left"),
        "EDQUOT or ENOSPC: {text}"
    );
    // /tmp is its own subvolume (kept across stops, left out of captures) with its own quota of
    // the same size: like LangSmith's /tmp, it is not part of fs_capacity_bytes.
    let tmp = sb
        .sh("dd if=/dev/zero of=/tmp/big bs=1M count=2048 2>&1; echo rc=$?")
        .await;
    assert!(
        !tmp.out().contains("rc=0"),
        "dd into /tmp must fail too: {}",
        tmp.out()
    );
    let used = before.saturating_sub(host_free());
    assert!(
        used < 2 * limit + (256 << 20),
        "host lost {used} bytes for a {limit} byte sandbox"
    );
    // Freeing space makes the sandbox usable again.
    let again = sb
        .sh("rm -f /root/big /tmp/big; sync; echo ok > /root/small && cat /root/small")
        .await;
    assert_eq!(again.out(), "ok\n", "{}", again.err());
    sb.destroy().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_disk_limit_counts_what_the_sandbox_writes_not_its_image() {
    // Smaller than the default image (~250 MiB): the image a sandbox shares is charged to the
    // image, so all 128 MiB are the sandbox's to write, and no more.
    let limit: u64 = 128 << 20;
    let sb = TestSandbox::with_limits(Limits {
        disk_bytes: limit,
        ..Limits::default()
    })
    .await;
    let fits = sb
        .sh("dd if=/dev/zero of=/root/a bs=1M count=96 conv=fsync 2>&1; echo rc=$?")
        .await;
    assert!(fits.out().contains("rc=0"), "96 MiB fit: {}", fits.out());
    let over = sb
        .sh("dd if=/dev/zero of=/root/b bs=1M count=64 conv=fsync 2>&1; echo rc=$?")
        .await;
    assert!(
        !over.out().contains("rc=0"),
        "96 + 64 MiB exceed 128 MiB: {}",
        over.out()
    );
    // A larger disk takes effect at the next start (an update of a stopped sandbox).
    let mut sb = sb;
    driver().stop(sb.id(), Some(&sb.handle)).await.unwrap();
    let spec = SandboxSpec {
        id: sb.id().clone(),
        image: ImageRef::default_image(),
        limits: Limits {
            disk_bytes: 256 << 20,
            ..Limits::default()
        },
        trust: String::new(),
        tier: warren_driver::Tier::Jail,
        volumes: Vec::new(),
    };
    sb.handle = driver().start(&spec).await.unwrap();
    let grown = sb
        .sh("rm -f /root/b; dd if=/dev/zero of=/root/b bs=1M count=64 conv=fsync 2>&1; echo rc=$?")
        .await;
    assert!(
        grown.out().contains("rc=0"),
        "fits in 256 MiB: {}",
        grown.out()
    );
    sb.destroy().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_shm_runs_out_of_inodes_and_the_sandbox_stays_usable() {
    let sb = TestSandbox::new().await;
    let script = r#"
import errno, os
n = 0
try:
    while n < 200000:
        open(f"/dev/shm/{n}", "w").close()
        n += 1
    print("no limit", n)
except OSError as e:
    print(errno.errorcode[e.errno], n)
st = os.statvfs("/dev/shm")
print("files", st.f_files)
for i in range(n):
    os.unlink(f"/dev/shm/{i}")
open("/dev/shm/after", "w").write("ok")
print("after", open("/dev/shm/after").read())
"#;
    let out = sb.python(script).await;
    assert_eq!(out.code(), 0, "{}{}", out.out(), out.err());
    let text = out.out();
    let mut lines = text.lines();
    let first: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    let want =
        warren_jail::shm_inodes(JailConfig::new("/unused".into(), "/unused".as_ref()).shm_bytes);
    assert_eq!(first[0], "ENOSPC", "{text}");
    // The root directory takes one of the inodes.
    assert_eq!(first[1].parse::<u64>().unwrap(), want - 1, "{text}");
    assert_eq!(
        lines.next(),
        Some(format!("files {want}").as_str()),
        "{text}"
    );
    assert_eq!(
        lines.next(),
        Some("after ok"),
        "usable once files are removed: {text}"
    );
    assert_eq!(sb.sh("echo alive").await.out(), "alive\n");
    sb.destroy().await;
}

/// `major:minor` of the block device under the test pool (a loop device unless the data dir is
/// on btrfs), found from the host's mount table without the runtime's help.
fn pool_device() -> (u32, u32) {
    use std::os::unix::fs::MetadataExt;
    let pool = crate::support::data_dir().join("fs");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    // The last mount at the path is the visible one.
    let source = mounts
        .lines()
        .rev()
        .find_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            (std::path::Path::new(left.split(' ').nth(4)?) == pool)
                .then(|| right.split(' ').nth(1).unwrap().to_owned())
        })
        .unwrap_or_else(|| panic!("the test pool {} is not mounted", pool.display()));
    let rdev = std::fs::metadata(&source).unwrap().rdev();
    (libc::major(rdev), libc::minor(rdev))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn block_io_is_throttled_on_the_pool_device() {
    let sb = TestSandbox::new().await;
    let (major, minor) = pool_device();
    let io = IoLimits::default();
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let mount_of = |fstype: &str, opt: Option<&str>| {
        mounts.lines().find_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            let mut r = right.split(' ');
            let matches = r.next()? == fstype
                && opt.is_none_or(|o| r.nth(1).is_some_and(|s| s.split(',').any(|x| x == o)));
            matches.then(|| std::path::PathBuf::from(left.split(' ').nth(4).unwrap()))
        })
    };
    let cg = sb.id().as_str();
    match driver().cgroups().version() {
        CgroupVersion::V1 => {
            let blkio = mount_of("cgroup", Some("blkio"))
                .expect("this host has no v1 blkio controller: no io limit to check")
                .join("warren")
                .join(cg);
            for (file, want) in [
                ("blkio.throttle.read_bps_device", io.read_bps),
                ("blkio.throttle.write_bps_device", io.write_bps),
                ("blkio.throttle.read_iops_device", io.read_iops),
                ("blkio.throttle.write_iops_device", io.write_iops),
            ] {
                let got = std::fs::read_to_string(blkio.join(file)).unwrap();
                assert_eq!(got.trim(), format!("{major}:{minor} {want}"), "{file}");
            }
            // The agent, and so everything the sandbox runs, is in that cgroup.
            let procs = std::fs::read_to_string(blkio.join("cgroup.procs")).unwrap();
            assert!(
                procs.lines().any(|p| p == sb.handle.pid.to_string()),
                "the agent is in the blkio cgroup: {procs}"
            );
        }
        CgroupVersion::V2 => {
            let dir = mount_of("cgroup2", None).unwrap().join("warren").join(cg);
            let got = std::fs::read_to_string(dir.join("io.max"))
                .expect("this host's v2 hierarchy has no io controller: no io limit to check");
            assert_eq!(
                got.trim(),
                format!(
                    "{major}:{minor} rbps={} wbps={} riops={} wiops={}",
                    io.read_bps, io.write_bps, io.read_iops, io.write_iops
                )
            );
        }
    }
    sb.destroy().await;
}

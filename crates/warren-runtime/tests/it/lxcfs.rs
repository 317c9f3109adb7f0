//! LXCFS: a sandbox sees its own memory limit and CPU count in `free`, `nproc` and `/proc`,
//! through the same supervisor `warren serve` runs; without LXCFS it still starts.

use std::path::PathBuf;
use std::time::Duration;

use warren_runtime::{JailConfig, JailDriver, LxcfsSupervisor, SandboxSpec};
use warren_types::{ImageRef, Limits, SandboxId};

use crate::support::{Output, TestSandbox, bash, bin_dir, collect, data_dir, driver};

const GIB: u64 = 1 << 30;

/// A mount point of this test process's own, so parallel test processes on the data dir
/// never share (or stop) each other's instance.
fn mount_point() -> PathBuf {
    data_dir().join(format!("lxcfs-it-{}", std::process::id()))
}

async fn sh(driver: &JailDriver, handle: &warren_runtime::SandboxHandle, script: &str) -> Output {
    let mut conn = driver.connect(handle).await.expect("connect to agent");
    conn.send(&warren_proto::Request::Exec(warren_proto::ExecSpec {
        argv: bash(script),
        ..Default::default()
    }))
    .await
    .unwrap();
    collect(&mut conn).await
}

fn field(meminfo: &str, name: &str) -> u64 {
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {meminfo}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sandbox_sees_its_own_memory_and_cpus_through_lxcfs() {
    assert!(
        warren_runtime::lxcfs::installed(),
        "lxcfs is not installed: apt-get install lxcfs (scripts/deps.sh)"
    );
    // The shared driver builds the image; this one is the same data dir with LXCFS on.
    let _ = driver();
    let mount = mount_point();
    let lxcfs = LxcfsSupervisor::new(mount.clone()).spawn();
    assert!(
        lxcfs.ready(Duration::from_secs(15)).await,
        "lxcfs came up on {}",
        mount.display()
    );
    let mut cfg = JailConfig::new(data_dir(), &bin_dir());
    cfg.pool_bytes = 16 << 30;
    cfg.lxcfs = Some(mount.clone());
    let with_lxcfs = JailDriver::open(cfg).expect("open the jail driver");
    let spec = SandboxSpec {
        id: SandboxId::generate(),
        image: ImageRef::default_image(),
        limits: Limits {
            memory_bytes: GIB,
            millicpus: 1000,
            ..Limits::default()
        },
        trust: String::new(),
        tier: warren_driver::Tier::Jail,
        volumes: Vec::new(),
    };
    let handle = with_lxcfs.create(&spec).await.expect("create sandbox");
    let out = sh(
        &with_lxcfs,
        &handle,
        "free -b | awk '/^Mem:/ {print $2}'; nproc; python3 -c 'import os; print(os.cpu_count(), len(os.sched_getaffinity(0)))'; cat /proc/meminfo; echo ---; grep -c ^processor /proc/cpuinfo; cat /sys/devices/system/cpu/online; cat /proc/uptime",
    )
    .await;
    let destroyed = with_lxcfs.destroy(&spec.id, Some(&handle)).await;
    lxcfs.stop(false).await;
    destroyed.expect("destroy sandbox");
    assert_eq!(out.code(), 0, "{}{}", out.out(), out.err());
    let text = out.out();
    let mut lines = text.lines();
    let total: u64 = lines.next().unwrap().trim().parse().unwrap();
    // free rounds through /proc/meminfo's kB.
    assert!(
        total.abs_diff(GIB) < 4096,
        "free -b total is the 1 GiB limit, got {total}: {text}"
    );
    assert_eq!(lines.next(), Some("1"), "nproc: {text}");
    assert_eq!(
        lines.next(),
        Some("1 1"),
        "os.cpu_count and affinity: {text}"
    );
    let (meminfo, rest) = text.split_once("---").unwrap();
    assert_eq!(field(meminfo, "MemTotal"), GIB / 1024, "{meminfo}");
    let mut rest = rest.lines().filter(|l| !l.is_empty());
    assert_eq!(rest.next(), Some("1"), "cpuinfo processors: {text}");
    assert_eq!(rest.next(), Some("0"), "online CPUs: {text}");
    let uptime: f64 = rest
        .next()
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .unwrap();
    assert!(
        uptime < 600.0,
        "uptime counts from the sandbox's start: {text}"
    );
    assert!(
        !mount.join("proc").exists(),
        "the supervisor stopped lxcfs and cleared its mount"
    );
    let _ = std::fs::remove_dir(&mount);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sandbox_starts_without_lxcfs_and_still_counts_its_cpus() {
    // The shared driver's LXCFS mount point (the data dir's `lxcfs`) has no instance here.
    let sb = TestSandbox::with_limits(Limits {
        memory_bytes: GIB,
        millicpus: 1000,
        ..Limits::default()
    })
    .await;
    let out = sb
        .sh("free -b | awk '/^Mem:/ {print $2}'; nproc; test -e /proc/meminfo && echo meminfo")
        .await;
    assert_eq!(out.code(), 0, "{}{}", out.out(), out.err());
    let text = out.out();
    let mut lines = text.lines();
    let total: u64 = lines.next().unwrap().trim().parse().unwrap();
    assert!(total > 0, "{text}");
    // Pinning does not depend on LXCFS.
    assert_eq!(lines.next(), Some("1"), "nproc: {text}");
    assert_eq!(lines.next(), Some("meminfo"));
    sb.destroy().await;
}

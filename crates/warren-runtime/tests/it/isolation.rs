//! What a process inside a sandbox can see and do (SECURITY.md §6, P0 rows).

use warren_runtime::Storage;

use crate::support::{TestSandbox, driver};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capabilities_are_empty_with_no_new_privs_and_seccomp() {
    let sb = TestSandbox::new().await;
    let out = sb
        .sh("grep -E '^(Cap(Inh|Prm|Eff|Bnd|Amb)|NoNewPrivs|Seccomp):' /proc/self/status")
        .await;
    assert_eq!(out.code(), 0, "{}", out.err());
    let text = out.out();
    for cap in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        let line = text
            .lines()
            .find(|l| l.starts_with(cap))
            .unwrap_or_else(|| panic!("{cap} in {text}"));
        assert!(line.ends_with("0000000000000000"), "{line}");
    }
    assert!(
        text.lines()
            .any(|l| l.split_whitespace().eq(["NoNewPrivs:", "1"])),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.split_whitespace().eq(["Seccomp:", "2"])),
        "{text}"
    );
    sb.destroy().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_map_to_a_private_unprivileged_range() {
    let a = TestSandbox::new().await;
    let b = TestSandbox::new().await;
    let map = |o: &crate::support::Output| -> (u64, u64, u64) {
        let nums: Vec<u64> = o
            .out()
            .split_whitespace()
            .map(|n| n.parse().unwrap())
            .collect();
        (nums[0], nums[1], nums[2])
    };
    let ua = a.sh("cat /proc/self/uid_map").await;
    let ga = a.sh("cat /proc/self/gid_map").await;
    let ub = b.sh("cat /proc/self/uid_map").await;
    let (inside, outside, count) = map(&ua);
    assert_eq!((inside, count), (0, 65536), "{}", ua.out());
    assert!(
        outside >= 1 << 20,
        "sandbox root must not map to a host account: {}",
        ua.out()
    );
    assert_eq!(map(&ga).1, outside, "gid range matches uid range");
    assert_ne!(map(&ub).1, outside, "two sandboxes never share a uid range");
    assert_eq!(a.sh("id -u").await.out().trim(), "0");
    a.destroy().await;
    b.destroy().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dangerous_socket_families_are_denied() {
    let sb = TestSandbox::new().await;
    let script = r#"
import socket, errno
def attempt(*args):
    try:
        socket.socket(*args).close(); return "ok"
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e.errno))
print("alg", attempt(38, 5, 0))                   # AF_ALG: Copy Fail, CVE-2026-31431
print("key", attempt(15, 3, 2))                   # AF_KEY
print("rxrpc", attempt(33, 2, 2))                 # AF_RXRPC
print("packet", attempt(17, 3, 0))                # AF_PACKET
print("xfrm", attempt(16, 3, 6))                  # NETLINK_XFRM
print("route", attempt(16, 3, 0))                 # NETLINK_ROUTE stays (getifaddrs)
print("inet", attempt(2, 1, 0))
print("unix", attempt(1, 1, 0))
"#;
    let out = sb
        .exec(warren_proto::ExecSpec {
            argv: vec!["python3".into(), "-c".into(), script.into()],
            ..Default::default()
        })
        .await;
    assert_eq!(out.code(), 0, "{}", out.err());
    let text = out.out();
    for denied in ["alg", "key", "rxrpc", "packet", "xfrm"] {
        let line = text.lines().find(|l| l.starts_with(denied)).unwrap();
        assert!(!line.ends_with(" ok"), "{denied} must be denied: {line}");
    }
    for allowed in ["route", "inet", "unix"] {
        assert!(
            text.lines().any(|l| l == format!("{allowed} ok")),
            "{allowed} must work: {text}"
        );
    }
    sb.destroy().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespaces_io_uring_and_mount_are_denied() {
    let sb = TestSandbox::new().await;
    let script = r#"
import ctypes, os, errno, struct
libc = ctypes.CDLL(None, use_errno=True)
def sys(nr, *args):
    r = libc.syscall(nr, *args)
    return "ok" if r >= 0 else errno.errorcode.get(ctypes.get_errno(), "?")
print("unshare_user", sys(272, 0x10000000))
print("unshare_mnt", sys(272, 0x00020000))
args = ctypes.create_string_buffer(struct.pack("QQQQQQQQQQQ", 0x10000000, 0, 0, 0, 17, 0, 0, 0, 0, 0, 0), 88)
print("clone3_user", sys(435, args, 88))
params = ctypes.create_string_buffer(120)
print("io_uring_setup", sys(425, 8, params))
print("mount", "ok" if libc.mount(b"none", b"/mnt", b"tmpfs", 0, None) == 0 else errno.errorcode[ctypes.get_errno()])
print("bpf", sys(321, 0, 0, 0))
print("perf", sys(298, 0, 0, -1, -1, 0))
print("keyctl", sys(250, 0, 0, 0, 0, 0))
print("userfaultfd", sys(323, 0))
print("ptrace", sys(101, 0, 0, 0, 0))
"#;
    let out = sb
        .exec(warren_proto::ExecSpec {
            argv: vec!["python3".into(), "-c".into(), script.into()],
            ..Default::default()
        })
        .await;
    assert_eq!(out.code(), 0, "{}", out.err());
    let text = out.out();
    for line in text.lines() {
        assert!(!line.ends_with(" ok"), "must be denied: {line}\n{text}");
    }
    assert_eq!(text.lines().count(), 10, "{text}");
    let shell = sb
        .sh("unshare -Ur true; echo rc=$?; mount -t tmpfs x /mnt; echo rc=$?")
        .await;
    assert!(
        !shell.out().contains("rc=0"),
        "{}{}",
        shell.out(),
        shell.err()
    );
    sb.destroy().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_sandboxes_own_processes_are_visible() {
    let a = TestSandbox::new().await;
    let b = TestSandbox::new().await;
    // A sentinel in B that A must neither see nor kill.
    let mut sentinel = b.conn().await;
    sentinel
        .send(&warren_proto::Request::Exec(warren_proto::ExecSpec {
            argv: crate::support::bash("exec sleep 1000"),
            ..Default::default()
        }))
        .await
        .unwrap();
    let ps = a.sh("ps -eo pid,comm --no-headers; kill -9 -1; true").await;
    let procs: Vec<String> = ps.out().lines().map(|l| l.trim().to_owned()).collect();
    assert!(
        procs.iter().any(|l| l.starts_with("1 ")),
        "the agent is PID 1: {procs:?}"
    );
    assert!(
        !procs.iter().any(|l| l.ends_with("sleep")),
        "B's sleep leaks into A: {procs:?}"
    );
    assert!(procs.len() <= 4, "only the agent, bash and ps: {procs:?}");
    let host_pids = driver().cgroups().pids(b.id().as_str()).unwrap();
    assert!(
        host_pids.len() >= 2,
        "B's agent and sleep still run after A's kill -1: {host_pids:?}"
    );
    let still = b.sh("pgrep -x sleep").await;
    assert_eq!(still.code(), 0, "sentinel survived");
    drop(sentinel);
    a.destroy().await;
    b.destroy().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_host_fd_is_open_inside() {
    let sb = TestSandbox::new().await;
    let out = sb
        .sh("for f in /proc/self/fd/*; do echo \"$f $(readlink $f)\"; done; readlink /proc/self/cwd /proc/self/root")
        .await;
    assert_eq!(out.code(), 0, "{}", out.err());
    let text = out.out();
    let data_dir = crate::support::data_dir();
    assert!(
        !text.contains(&*data_dir.to_string_lossy()),
        "host path visible: {text}"
    );
    let fds: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("/proc/self/fd/"))
        .collect();
    // 0, 1, 2 and the fd the shell glob itself opened.
    assert!(fds.len() <= 4, "unexpected fds: {fds:?}");
    // The agent's own fds, seen from the host, point only at sandbox objects.
    let agent_fds = std::fs::read_dir(format!("/proc/{}/fd", sb.handle.pid)).unwrap();
    for fd in agent_fds.flatten() {
        let target = std::fs::read_link(fd.path()).unwrap_or_default();
        let t = target.to_string_lossy();
        assert!(
            t.starts_with("socket:")
                || ["/dev/urandom", "/dev/random", "/dev/zero"].contains(&t.as_ref())
                || t.starts_with("pipe:")
                || t.starts_with("anon_inode:")
                || t == "/dev/null"
                || t.starts_with("/dev/pts")
                || t.starts_with("/dev/ptmx"),
            "agent holds a host fd: {t}"
        );
    }
    sb.destroy().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proc_and_dev_are_minimal() {
    let sb = TestSandbox::new().await;
    let out = sb.sh("ls /dev | sort | tr '\\n' ' '; echo; head -c1 /proc/kcore | wc -c; echo x > /proc/sysrq-trigger; echo rc=$?; mknod /tmp/sda b 8 0; echo rc=$?; ls /sys | wc -l").await;
    let text = out.out();
    let dev: Vec<&str> = text.lines().next().unwrap().split_whitespace().collect();
    for d in dev.iter() {
        assert!(
            [
                "console", "fd", "full", "null", "ptmx", "pts", "random", "shm", "stderr", "stdin",
                "stdout", "tty", "urandom", "zero"
            ]
            .contains(d),
            "unexpected /dev entry {d}: {dev:?}"
        );
    }
    assert!(
        !text.contains("rc=0"),
        "writes to sysrq-trigger and mknod must fail: {text}"
    );
    sb.destroy().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn btrfs_subvolumes_cannot_be_made_inside_but_reflinks_work() {
    // A subvolume made inside would have an unlimited quota group of its own: a way past the
    // disk limit, and a nested subvolume that blocks the sandbox's deletion.
    let sb = TestSandbox::new().await;
    let script = r#"
import fcntl, os, struct
fd = os.open("/root", os.O_RDONLY | os.O_DIRECTORY)
args = bytearray(struct.pack("q", 0) + b"sub".ljust(4088, b"\0"))
try:
    fcntl.ioctl(fd, 0x5000940e, args, True)
    print("subvol_create ok")
except OSError as e:
    print("subvol_create", e.errno)
open("/root/src", "wb").write(b"x" * 65536)
print("reflink", os.system("cp --reflink=always /root/src /root/dst") >> 8)
"#;
    let out = sb
        .exec(warren_proto::ExecSpec {
            argv: vec!["python3".into(), "-c".into(), script.into()],
            ..Default::default()
        })
        .await;
    let text = out.out();
    assert!(
        text.contains("subvol_create 1\n"),
        "EPERM expected: {text}{}",
        out.err()
    );
    assert!(
        !std::path::Path::new(&driver().storage().rootfs_path(sb.id()).join("root/sub")).exists()
    );
    assert!(
        text.contains("reflink 0\n"),
        "FICLONE stays allowed: {text}{}",
        out.err()
    );
    sb.destroy().await;
}

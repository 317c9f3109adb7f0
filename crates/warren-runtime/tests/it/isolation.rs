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

/// Runs `python3 script` on the host as `nobody` (no capabilities, no seccomp filter), with
/// `wrapper` before it, and returns its output as "name result" pairs: the kernel's own answer
/// to each probe, which the sandbox's answer must differ from for the probe to prove anything.
fn host_control(wrapper: &[&str], script: &str) -> Vec<(String, String)> {
    use std::os::unix::process::CommandExt;
    let mut argv: Vec<&str> = wrapper.to_vec();
    argv.extend(["/usr/bin/python3", "-c", script]);
    let out = std::process::Command::new(argv[0])
        .args(&argv[1..])
        .current_dir("/")
        .uid(65_534)
        .gid(65_534)
        .output()
        .expect("the host control needs /usr/bin/python3");
    assert!(
        out.status.success(),
        "host control failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    pairs(&String::from_utf8_lossy(&out.stdout))
}

fn pairs(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
        .collect()
}

/// Inside, each probe must answer exactly `want` (the policy's errno); on the host, without the
/// filter, the kernel must answer something else, or the probe would prove nothing.
fn assert_filtered(inside: &[(String, String)], host: &[(String, String)], want: &[(&str, &str)]) {
    for (name, errno) in want {
        let got = inside
            .iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("no {name} in {inside:?}"));
        let control = host
            .iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("no {name} in the host control {host:?}"));
        assert_eq!(&got.1, errno, "{name} inside: {inside:?}");
        assert_ne!(
            &control.1, errno,
            "{name}: the kernel itself answers {errno} without the filter, the probe proves \
             nothing: {host:?}"
        );
    }
}

const SOCKET_PROBE: &str = r#"
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dangerous_socket_families_are_denied() {
    let sb = TestSandbox::new().await;
    let out = sb.python(SOCKET_PROBE).await;
    assert_eq!(out.code(), 0, "{}", out.err());
    let inside = pairs(&out.out());
    // The control runs in a user and network namespace of its own, where it holds
    // CAP_NET_RAW and CAP_NET_ADMIN: AF_PACKET and AF_KEY are not refused for lack of them.
    let host = host_control(&["unshare", "-Urn"], SOCKET_PROBE);
    assert_filtered(
        &inside,
        &host,
        &[
            ("alg", "EPERM"),
            ("key", "EPERM"),
            ("rxrpc", "EPERM"),
            ("packet", "EPERM"),
            ("xfrm", "EPERM"),
        ],
    );
    for allowed in ["route", "inet", "unix"] {
        assert!(
            inside.iter().any(|(n, r)| n == allowed && r == "ok"),
            "{allowed} must work: {inside:?}"
        );
    }
    sb.destroy().await;
}

/// Each call with arguments the kernel rejects on its own with something other than the
/// filter's errno (EINVAL, EBADF, ENOENT...), so EPERM inside can only be the filter's.
const SYSCALL_PROBE: &str = r#"
import ctypes, errno
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
def sys(nr, *args):
    conv = [ctypes.c_long(a) if isinstance(a, int) else a for a in args]
    r = libc.syscall(ctypes.c_long(nr), *conv)
    return "ok" if r >= 0 else errno.errorcode.get(ctypes.get_errno(), str(ctypes.get_errno()))
probes = [
    ("unshare", 272, 1),
    ("setns", 308, -1, 0),
    ("mount", 165, b"none", b"/nonexistent-warren", b"tmpfs", 0, None),
    ("umount2", 166, b"/nonexistent-warren", 0xffff),
    ("open_tree", 428, -1, b"", 0),
    ("io_uring_setup", 425, 0, None),
    ("bpf", 321, 0xffff, None, 0),
    ("perf_event_open", 298, None, 0, -1, -1, 0),
    ("keyctl", 250, 0xffff, 0, 0, 0, 0),
    ("add_key", 248, None, None, None, 0, 0),
    ("userfaultfd", 323, 3),
    ("ptrace", 101, 0xffff, 0, 0, 0),
    ("process_vm_readv", 310, 0, None, 0, None, 0, 1),
    ("kcmp", 312, 0, 0, 0, 0, 0),
    ("pidfd_getfd", 438, -1, 0, 0),
    ("modify_ldt", 154, 0xff, None, 0),
    ("clone3", 435, None, 0),
    ("unknown_999", 999),
    ("getpid", 39),
]
for name, nr, *args in probes:
    print(name, sys(nr, *args))
for line in open("/proc/self/status"):
    if line.startswith("Seccomp"):
        print(line.split(":")[0], line.split()[1])
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespaces_io_uring_and_mount_are_denied_by_the_filter() {
    let sb = TestSandbox::new().await;
    let out = sb.python(SYSCALL_PROBE).await;
    assert_eq!(out.code(), 0, "{}", out.err());
    let inside = pairs(&out.out());
    let host = host_control(&[], SYSCALL_PROBE);
    let mut want: Vec<(&str, &str)> = [
        "unshare",
        "setns",
        "mount",
        "umount2",
        "open_tree",
        "io_uring_setup",
        "bpf",
        "perf_event_open",
        "keyctl",
        "add_key",
        "userfaultfd",
        "ptrace",
        "process_vm_readv",
        "kcmp",
        "pidfd_getfd",
        "modify_ldt",
        // Not a syscall at all: the kernel says ENOSYS, the allowlist's default EPERM.
        "unknown_999",
    ]
    .into_iter()
    .map(|n| (n, "EPERM"))
    .collect();
    // The policy turns clone3 into ENOSYS so that glibc falls back to clone, which it filters.
    want.push(("clone3", "ENOSYS"));
    assert_filtered(&inside, &host, &want);
    // The control call: the same process gets what the filter allows, and the filters are
    // the jail's (mode 2, all four of the policy's programs), plus the agent's fifth on a
    // root command: the notification filter that sends its chown and chmod to the agent.
    let get = |name: &str| {
        inside
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, r)| r.as_str())
    };
    assert_eq!(get("getpid"), Some("ok"), "{inside:?}");
    assert_eq!(get("Seccomp"), Some("2"), "{inside:?}");
    assert_eq!(get("Seccomp_filters"), Some("5"), "{inside:?}");
    sb.destroy().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setgroups_is_denied_and_no_process_has_groups() {
    let sb = TestSandbox::new().await;
    let out = sb
        .sh(
            "cat /proc/self/setgroups; grep '^Groups:' /proc/self/status; \
             python3 -c 'import os; os.setgroups([])' 2>&1 | tail -1",
        )
        .await;
    let text = out.out();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.first().copied(), Some("deny"), "{text}{}", out.err());
    assert_eq!(
        lines
            .get(1)
            .map(|l| l.split_whitespace().collect::<Vec<_>>()),
        Some(vec!["Groups:"]),
        "no supplementary groups: {text}"
    );
    assert!(
        lines
            .get(2)
            .is_some_and(|l| l.contains("Operation not permitted")),
        "setgroups fails: {text}"
    );
    // The agent holds CAP_SETGID in the sandbox: "deny" is what stops it, seen from the host.
    let pid = sb.handle.pid;
    assert_eq!(
        std::fs::read_to_string(format!("/proc/{pid}/setgroups"))
            .unwrap()
            .trim(),
        "deny"
    );
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let groups = status.lines().find(|l| l.starts_with("Groups:")).unwrap();
    assert_eq!(
        groups.trim(),
        "Groups:",
        "the agent has no groups: {groups}"
    );
    let cap_eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .map(|v| u64::from_str_radix(v.trim(), 16).unwrap())
        .unwrap();
    assert_ne!(cap_eff & (1 << 6), 0, "the agent keeps CAP_SETGID");
    // Running a command as another user still works without setgroups.
    let as_nobody = sb
        .exec(warren_proto::ExecSpec {
            argv: vec!["id".into()],
            user: Some("nobody".into()),
            ..Default::default()
        })
        .await;
    assert_eq!(as_nobody.code(), 0, "{}", as_nobody.err());
    assert!(as_nobody.out().contains("uid=65534"), "{}", as_nobody.out());
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
    let out = sb
        .sh("echo dev $(ls -A /dev | sort); \
             for f in kcore keys timer_list sysrq-trigger; do \
               echo mask-$f $(stat -c '%F %t:%T' /proc/$f 2>/dev/null || echo absent) \
                 $(head -c1 /proc/$f 2>/dev/null | wc -c); done; \
             echo sys $(ls -A /sys 2>/dev/null | wc -l) $(grep -c ' - sysfs ' /proc/self/mountinfo); \
             echo x > /proc/sysrq-trigger; echo sysrq rc=$?; \
             mknod /tmp/sda b 8 0; echo mknod rc=$?; \
             echo links $(readlink /dev/fd /dev/stdin /dev/stdout /dev/stderr /dev/ptmx)")
        .await;
    let text = out.out();
    let line = |key: &str| -> Vec<String> {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{key} ")))
            .unwrap_or_else(|| panic!("no {key} line: {text}{}", out.err()))
            .split_whitespace()
            .map(str::to_owned)
            .collect()
    };
    // Exactly what the jail promises (SECURITY.md §6 row 19): no console, no other device.
    assert_eq!(
        line("dev"),
        [
            "fd", "full", "null", "ptmx", "pts", "random", "shm", "stderr", "stdin", "stdout",
            "tty", "urandom", "zero"
        ],
        "{text}"
    );
    assert_eq!(
        line("links"),
        [
            "/proc/self/fd",
            "/proc/self/fd/0",
            "/proc/self/fd/1",
            "/proc/self/fd/2",
            "pts/ptmx"
        ],
        "{text}"
    );
    // Masked /proc files are /dev/null (char 1:3) and read nothing; the host kernel decides
    // which exist (this one may be built without kcore or sysrq), and none is absent inside
    // that the host has.
    let mut masked = 0;
    for f in ["kcore", "keys", "timer_list", "sysrq-trigger"] {
        let got = line(&format!("mask-{f}"));
        if std::path::Path::new("/proc").join(f).exists() {
            assert_eq!(
                got,
                ["character", "special", "file", "1:3", "0"],
                "/proc/{f}: {text}"
            );
            masked += 1;
        } else {
            assert_eq!(got, ["absent", "0"], "/proc/{f}: {text}");
        }
    }
    assert!(
        masked > 0,
        "the host has none of the masked files; nothing was checked"
    );
    // /sys is the image's empty directory: no sysfs is mounted.
    assert_eq!(line("sys"), ["0", "0"], "{text}");
    assert!(
        text.contains("sysrq rc=1") && text.contains("mknod rc=1"),
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
    let out = sb.python(script).await;
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

//! A tenant that exhausts what its kernel objects allow hits its own limits and nothing else
//! notices (SECURITY.md §6 row 39; /dev/shm's inode bound, row 38's tmpfs half, is in `limits`).

use crate::support::TestSandbox;

/// Open file descriptors of the whole host, from /proc/sys/fs/file-nr.
fn host_open_files() -> (u64, u64) {
    let text = std::fs::read_to_string("/proc/sys/fs/file-nr").unwrap();
    let v: Vec<u64> = text
        .split_whitespace()
        .map(|f| f.parse().unwrap())
        .collect();
    (v[0], v[2])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fd_exhaustion_stops_at_the_sandbox_rlimit() {
    let sb = TestSandbox::new().await;
    let (before, max) = host_open_files();
    let out = sb
        .sh("python3 -c '
import os, errno, resource
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
fds = []
try:
    while True:
        fds.append(os.open(\"/dev/null\", os.O_RDONLY))
except OSError as e:
    print(errno.errorcode[e.errno], len(fds), soft, hard)
'")
        .await;
    assert_eq!(out.code(), 0, "{}", out.err());
    let fields: Vec<String> = out.out().split_whitespace().map(str::to_owned).collect();
    assert_eq!(
        fields[0], "EMFILE",
        "the process limit stops it: {fields:?}"
    );
    let opened: u64 = fields[1].parse().unwrap();
    let soft: u64 = fields[2].parse().unwrap();
    assert!(
        soft > 0 && soft <= 1 << 20 && opened < soft,
        "opened {opened} under a limit of {soft}"
    );
    // The host's file table was never near its maximum.
    let (after, _) = host_open_files();
    assert!(
        after.max(before) + opened < max / 2,
        "host file table: {after} of {max}"
    );
    // And the sandbox still works once the process is gone.
    assert_eq!(sb.sh("echo ok").await.out(), "ok\n");
    sb.destroy().await;
}

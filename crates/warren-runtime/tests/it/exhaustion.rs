//! A tenant that exhausts what its kernel objects allow hits its own limits and nothing else
//! notices (SECURITY.md §6 rows 38 and 39).

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shm_inode_exhaustion_fails_inside_and_the_sandbox_recovers() {
    let sb = TestSandbox::new().await;
    // /dev/shm is a tmpfs with an inode bound: empty files cost no bytes, so only nr_inodes
    // stops them.
    let out = sb
        .sh("python3 -c '
import os, errno
n = 0
try:
    while n < 10_000_000:
        open(f\"/dev/shm/f{n}\", \"w\").close()
        n += 1
except OSError as e:
    print(errno.errorcode[e.errno], n)
'")
        .await;
    assert_eq!(out.code(), 0, "{}", out.err());
    let fields: Vec<String> = out.out().split_whitespace().map(str::to_owned).collect();
    assert_eq!(
        fields.len(),
        2,
        "stopped by an error, not by the loop: {:?}",
        out.out()
    );
    assert_eq!(fields[0], "ENOSPC", "{fields:?}");
    let made: u64 = fields[1].parse().unwrap();
    assert!(made < 1_000_000, "bounded at {made} files");
    let cleanup = sb
        .sh("find /dev/shm -name 'f*' -delete && touch /dev/shm/again && echo ok")
        .await;
    assert_eq!(cleanup.out(), "ok\n", "{}", cleanup.err());
    sb.destroy().await;
}

use std::path::Path;

use warren_types::Limits;

use super::files::{cpu_quota_us, parse_pids};
use super::io::{IoLimits, IoThrottle, block_device, mount_source};

#[test]
fn cpu_quota_scales_with_millicpus() {
    let l = Limits {
        millicpus: 1500,
        ..Limits::default()
    };
    assert_eq!(cpu_quota_us(&l), 150_000);
    let tiny = Limits {
        millicpus: 1,
        ..Limits::default()
    };
    assert_eq!(
        cpu_quota_us(&tiny),
        1000,
        "the kernel rejects quotas under 1 ms"
    );
}

#[test]
fn io_limits_become_the_controllers_lines() {
    let io = IoThrottle {
        device: (7, 0),
        limits: IoLimits {
            read_bps: 1 << 20,
            write_bps: 2 << 20,
            read_iops: 0,
            write_iops: 300,
        },
    };
    assert_eq!(
        io.v1_lines(),
        vec![
            ("blkio.throttle.read_bps_device", "7:0 1048576".to_owned()),
            ("blkio.throttle.write_bps_device", "7:0 2097152".to_owned()),
            ("blkio.throttle.write_iops_device", "7:0 300".to_owned()),
        ]
    );
    assert_eq!(
        io.v2_line(),
        "7:0 rbps=1048576 wbps=2097152 riops=max wiops=300"
    );
}

#[test]
fn the_pool_device_is_the_source_of_the_last_mount_there() {
    let mounts = "\
29 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
80 29 0:45 / /var/lib/warren/fs rw,nosuid,nodev shared:40 - btrfs /dev/loop3 rw,space_cache=v2
81 80 0:46 / /var/lib/warren/fs rw shared:41 - btrfs /dev/loop4 rw
82 29 0:47 / /var/lib/warren/fsx rw shared:42 - tmpfs tmpfs rw";
    assert_eq!(
        mount_source(mounts, Path::new("/var/lib/warren/fs")),
        Some("/dev/loop4")
    );
    assert_eq!(
        mount_source(mounts, Path::new("/var/lib/warren/fs/sandboxes/x")),
        Some("/dev/loop4")
    );
    assert_eq!(
        mount_source(mounts, Path::new("/var/lib/warren")),
        Some("/dev/vda"),
        "not /var/lib/warren/fsx: whole components only"
    );
    assert_eq!(block_device(Path::new("/dev/null")), None, "a char device");
}

#[test]
fn pids_parse_ignores_blank_lines() {
    assert_eq!(parse_pids("12\n\n34\n"), vec![12, 34]);
}

//! `warren doctor`: which host features Warren uses are present, and how to fix what is missing.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Result;

mod microvm;

struct Check {
    name: &'static str,
    ok: bool,
    /// Needed for sandboxes to work at all (as opposed to hardening or a later tier).
    required: bool,
    detail: String,
    fix: String,
}

fn read(path: &str) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .trim()
        .to_owned()
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join(program).is_file()))
}

fn kernel_at_least(major: u32, minor: u32) -> (bool, String) {
    let release = read("/proc/sys/kernel/osrelease");
    let mut parts = release
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|p| p.parse::<u32>().ok());
    let (ma, mi) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    ((ma, mi) >= (major, minor), release)
}

fn mode(path: &Path) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .ok()
        .map(|m| m.permissions().mode() & 0o7777)
}

/// The data dir and what is in it are private to root, and the pool is mounted nosuid,nodev. A
/// data dir made by an older version fails these until Warren next opens it (`warren serve`,
/// `warren run` and `warren image` fix all three at open); doctor only looks.
fn data_dir_checks(data_dir: &Path) -> Vec<Check> {
    use warren_runtime::storage::{PRIVATE_DIR, PRIVATE_FILE};
    let shown = data_dir.display();
    let Some(dir_mode) = mode(data_dir) else {
        return vec![Check {
            name: "data dir private to root",
            ok: true,
            required: false,
            detail: format!("{shown} does not exist yet (it is created 0700)"),
            fix: String::new(),
        }];
    };
    let mut checks = vec![Check {
        name: "data dir private to root",
        ok: dir_mode == PRIVATE_DIR,
        required: true,
        detail: format!("{shown} is {dir_mode:o}"),
        fix: format!(
            "chmod 700 {shown} (made by an older version; `warren serve` fixes it at start)"
        ),
    }];
    let mut open_files = Vec::new();
    for name in [
        warren_runtime::storage::POOL_IMAGE,
        "warren.db",
        "warren.db-wal",
        "warren.db-shm",
        "admin.key",
        ".storage.lock",
    ] {
        let path = data_dir.join(name);
        if let Some(m) = mode(&path).filter(|m| *m != PRIVATE_FILE) {
            open_files.push((path, m));
        }
    }
    checks.push(Check {
        name: "data dir files private to root",
        ok: open_files.is_empty(),
        required: true,
        detail: if open_files.is_empty() {
            "pool image, database, admin key and lock are 0600".into()
        } else {
            open_files
                .iter()
                .map(|(p, m)| format!("{} is {m:o}", p.display()))
                .collect::<Vec<_>>()
                .join(", ")
        },
        fix: format!(
            "chmod 600 {} (`warren serve` fixes them at start)",
            open_files
                .iter()
                .map(|(p, _)| p.display().to_string())
                .collect::<Vec<_>>()
                .join(" ")
        ),
    });
    let pool = data_dir.join("fs");
    let flags = warren_runtime::storage::pool_quota_mode(data_dir)
        .map(|_| warren_runtime::storage::pool_mount_flags(&pool));
    checks.push(match flags {
        None => Check {
            name: "pool mounted nosuid,nodev",
            ok: true,
            required: false,
            detail: "no pool mounted yet (it is mounted nosuid,nodev)".into(),
            fix: String::new(),
        },
        Some(Ok((nosuid, nodev))) => Check {
            name: "pool mounted nosuid,nodev",
            ok: nosuid && nodev,
            required: true,
            detail: format!(
                "{}: {}{}",
                pool.display(),
                if nosuid { "nosuid" } else { "suid allowed" },
                if nodev { ",nodev" } else { ",devices allowed" }
            ),
            fix: if data_dir.join(warren_runtime::storage::POOL_IMAGE).exists() {
                format!(
                    "mount -o remount,bind,nosuid,nodev {} (mounted by an older version; `warren serve` fixes it at start)",
                    pool.display()
                )
            } else {
                // A directory of the host's own btrfs: its flags are the host's, not ours.
                format!(
                    "start `warren serve`: it bind-mounts {} onto itself nosuid,nodev, leaving the host filesystem's mount as it is",
                    pool.display()
                )
            },
        },
        Some(Err(e)) => Check {
            name: "pool mounted nosuid,nodev",
            ok: false,
            required: true,
            detail: e.to_string(),
            fix: "check the pool mount".into(),
        },
    });
    checks
}

/// LXCFS: installed, and whether `warren serve`'s instance answers on the data dir's mount.
fn lxcfs_check(data_dir: &Path) -> Check {
    use warren_runtime::lxcfs;
    let mount = data_dir.join(warren_runtime::jail_driver::LXCFS_DIR);
    let installed = lxcfs::installed();
    let alive = installed && lxcfs::is_alive(&mount);
    let loss = "without it sandboxes start but free, top, uptime, nproc and /proc/{meminfo,cpuinfo,stat} show the host's memory and CPUs, not their limits";
    let (ok, detail, fix) = if !installed {
        (
            false,
            format!("not installed: {loss}"),
            "apt-get install lxcfs (scripts/deps.sh installs it)".to_owned(),
        )
    } else if alive {
        (
            true,
            format!("serving sandboxes from {}", mount.display()),
            String::new(),
        )
    } else if mount_is_dead(&mount) {
        (
            false,
            format!("{} is a dead mount: {loss}", mount.display()),
            "restart `warren serve`: it clears the stale mount and starts lxcfs again".to_owned(),
        )
    } else {
        (
            true,
            format!(
                "installed; not running at {} (`warren serve` starts it): until then {loss}",
                mount.display()
            ),
            String::new(),
        )
    };
    Check {
        name: "lxcfs (sandboxes see their own limits)",
        ok,
        required: false,
        detail,
        fix,
    }
}

/// A FUSE mount whose daemon is gone answers ENOTCONN.
fn mount_is_dead(mount: &Path) -> bool {
    matches!(rustix::fs::statfs(mount), Err(rustix::io::Errno::NOTCONN))
}

pub(crate) fn doctor(data_dir: &Path) -> Result<ExitCode> {
    let mut checks = Vec::new();
    let is_root = nix::unistd::geteuid().is_root();
    checks.push(Check {
        name: "root",
        ok: is_root,
        required: true,
        detail: format!("euid {}", nix::unistd::geteuid()),
        fix: "run warren as root (it creates namespaces, cgroups and btrfs subvolumes)".into(),
    });
    let (kernel_ok, release) = kernel_at_least(5, 19);
    checks.push(Check {
        name: "kernel >= 5.19 (idmapped btrfs mounts)",
        ok: kernel_ok,
        required: true,
        detail: release,
        fix: "upgrade the kernel".into(),
    });
    let userns = read("/proc/sys/user/max_user_namespaces");
    checks.push(Check {
        name: "user namespaces",
        ok: userns.parse::<u64>().is_ok_and(|n| n > 0),
        required: true,
        detail: format!("max_user_namespaces={userns}"),
        fix: "sysctl -w user.max_user_namespaces=65536".into(),
    });
    let cg = warren_runtime::cgroup::detect();
    checks.push(Check {
        name: "cgroups (memory, cpu, pids)",
        ok: cg.is_ok(),
        required: true,
        detail: match &cg {
            Ok(b) => format!("{:?}", b.version()),
            Err(e) => e.to_string(),
        },
        fix: "mount the memory, cpu and pids controllers (v2 preferred: systemd.unified_cgroup_hierarchy=1)".into(),
    });
    if cg
        .as_ref()
        .is_ok_and(|b| b.version() == warren_runtime::cgroup::CgroupVersion::V1)
    {
        checks.push(Check {
            name: "cgroup v2 controllers",
            ok: false,
            required: false,
            detail: "controllers are on v1: no cgroup.kill, no buffered-write IO limits".into(),
            fix: "boot with systemd.unified_cgroup_hierarchy=1 (or cgroup_no_v1=all)".into(),
        });
    }
    let seccomp = read("/proc/sys/kernel/seccomp/actions_avail");
    checks.push(Check {
        name: "seccomp filters",
        ok: seccomp.contains("errno"),
        required: true,
        detail: seccomp,
        fix: "use a kernel built with CONFIG_SECCOMP_FILTER".into(),
    });
    let lsm = read("/sys/kernel/security/lsm");
    if !lsm.is_empty() {
        checks.push(Check {
            name: "landlock",
            ok: lsm.split(',').any(|l| l == "landlock"),
            required: false,
            detail: format!("lsm={lsm}"),
            fix: "boot with lsm=...,landlock".into(),
        });
    }
    let nft = on_path("nft");
    checks.push(Check {
        name: "nftables (sandbox network, `serve --network proxied`)",
        ok: nft,
        required: false,
        detail: if nft {
            String::new()
        } else {
            "without it sandboxes can only run with `--network none`".into()
        },
        fix: "apt-get install nftables (scripts/deps.sh installs it)".into(),
    });
    for (tool, pkg) in [
        ("btrfs", "btrfs-progs"),
        ("mkfs.btrfs", "btrfs-progs"),
        ("mmdebstrap", "mmdebstrap"),
    ] {
        checks.push(Check {
            name: tool,
            ok: on_path(tool),
            required: true,
            detail: String::new(),
            fix: format!("apt-get install {pkg} (scripts/up.sh installs it)"),
        });
    }
    // The default image's uv comes from its PyPI wheel, fetched with the host's pip.
    let pip = std::process::Command::new("python3")
        .args(["-m", "pip", "--version"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    checks.push(Check {
        name: "python3 -m pip",
        ok: pip,
        required: true,
        detail: "fetches uv for the default image".into(),
        fix: "apt-get install python3-pip (scripts/up.sh installs it)".into(),
    });
    let (squota_kernel, _) = kernel_at_least(6, 7);
    let mode = warren_runtime::storage::pool_quota_mode(data_dir).map(|m| match m {
        warren_runtime::QuotaMode::Simple => "simple",
        warren_runtime::QuotaMode::Full => "full qgroups",
        warren_runtime::QuotaMode::Off => "off",
    });
    checks.push(Check {
        name: "btrfs simple quotas (kernel >= 6.7)",
        ok: squota_kernel && mode.is_none_or(|m| m == "simple"),
        required: false,
        detail: match mode {
            Some(m) => format!("pool quotas: {m}"),
            None => "no pool yet".into(),
        },
        fix: "upgrade the kernel: full qgroups make creates slower as sandboxes accumulate".into(),
    });
    checks.push(Check {
        name: "loop devices",
        ok: Path::new("/dev/loop-control").exists(),
        required: false,
        detail: "needed when the data dir is not on btrfs".into(),
        fix: "modprobe loop".into(),
    });
    let io_uring = read("/proc/sys/kernel/io_uring_disabled");
    checks.push(Check {
        name: "io_uring disabled on the host",
        ok: io_uring == "2",
        required: false,
        detail: format!(
            "kernel.io_uring_disabled={io_uring} (seccomp denies it inside sandboxes anyway)"
        ),
        fix: "sysctl -w kernel.io_uring_disabled=2".into(),
    });
    let bin = crate::bin_dir()?;
    for name in ["warren-agent", "warren-jailer"] {
        let p = bin.join(name);
        checks.push(Check {
            name,
            ok: p.is_file(),
            required: true,
            detail: p.display().to_string(),
            fix: "build with scripts/build.sh".into(),
        });
    }
    checks.extend(microvm::checks(data_dir));
    checks.push(lxcfs_check(data_dir));
    checks.extend(data_dir_checks(data_dir));
    let image = data_dir
        .join("fs/images")
        .join(warren_types::ImageRef::default_image().storage_name());
    checks.push(Check {
        name: "default image",
        ok: image.is_dir(),
        required: false,
        detail: image.display().to_string(),
        fix: "warren image build".into(),
    });

    let mut missing_required = false;
    for c in &checks {
        let mark = if c.ok {
            "ok  "
        } else if c.required {
            "FAIL"
        } else {
            "warn"
        };
        println!("{mark} {:<40} {}", c.name, c.detail);
        if !c.ok {
            println!("     fix: {}", c.fix);
            missing_required |= c.required;
        }
    }
    Ok(if missing_required {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

//! `warren doctor`: which host features Warren uses are present, and how to fix what is missing.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Result;

struct Check {
    name: &'static str,
    ok: bool,
    /// Needed for sandboxes to work at all (as opposed to hardening or a later tier).
    required: bool,
    detail: String,
    fix: &'static str,
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

pub(crate) fn doctor(data_dir: &Path) -> Result<ExitCode> {
    let mut checks = Vec::new();
    let is_root = nix::unistd::geteuid().is_root();
    checks.push(Check {
        name: "root",
        ok: is_root,
        required: true,
        detail: format!("euid {}", nix::unistd::geteuid()),
        fix: "run warren as root (it creates namespaces, cgroups and btrfs subvolumes)",
    });
    let (kernel_ok, release) = kernel_at_least(5, 19);
    checks.push(Check {
        name: "kernel >= 5.19 (idmapped btrfs mounts)",
        ok: kernel_ok,
        required: true,
        detail: release,
        fix: "upgrade the kernel",
    });
    let userns = read("/proc/sys/user/max_user_namespaces");
    checks.push(Check {
        name: "user namespaces",
        ok: userns.parse::<u64>().is_ok_and(|n| n > 0),
        required: true,
        detail: format!("max_user_namespaces={userns}"),
        fix: "sysctl -w user.max_user_namespaces=65536",
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
        fix: "mount the memory, cpu and pids controllers (v2 preferred: systemd.unified_cgroup_hierarchy=1)",
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
            fix: "boot with systemd.unified_cgroup_hierarchy=1 (or cgroup_no_v1=all)",
        });
    }
    let seccomp = read("/proc/sys/kernel/seccomp/actions_avail");
    checks.push(Check {
        name: "seccomp filters",
        ok: seccomp.contains("errno"),
        required: true,
        detail: seccomp,
        fix: "use a kernel built with CONFIG_SECCOMP_FILTER",
    });
    let lsm = read("/sys/kernel/security/lsm");
    if !lsm.is_empty() {
        checks.push(Check {
            name: "landlock",
            ok: lsm.split(',').any(|l| l == "landlock"),
            required: false,
            detail: format!("lsm={lsm}"),
            fix: "boot with lsm=...,landlock",
        });
    }
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
            fix: match pkg {
                "btrfs-progs" => "apt-get install btrfs-progs",
                _ => "apt-get install mmdebstrap",
            },
        });
    }
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
        fix: "upgrade the kernel: full qgroups make creates slower as sandboxes accumulate",
    });
    checks.push(Check {
        name: "loop devices",
        ok: Path::new("/dev/loop-control").exists(),
        required: false,
        detail: "needed when the data dir is not on btrfs".into(),
        fix: "modprobe loop",
    });
    let io_uring = read("/proc/sys/kernel/io_uring_disabled");
    checks.push(Check {
        name: "io_uring disabled on the host",
        ok: io_uring == "2",
        required: false,
        detail: format!(
            "kernel.io_uring_disabled={io_uring} (seccomp denies it inside sandboxes anyway)"
        ),
        fix: "sysctl -w kernel.io_uring_disabled=2",
    });
    let bin = crate::bin_dir()?;
    for name in ["warren-agent", "warren-jailer"] {
        let p = bin.join(name);
        checks.push(Check {
            name,
            ok: p.is_file(),
            required: true,
            detail: p.display().to_string(),
            fix: "build with scripts/build.sh",
        });
    }
    checks.push(Check {
        name: "KVM (microVM tier, later)",
        ok: Path::new("/dev/kvm").exists(),
        required: false,
        detail: "the jail tier does not need it".into(),
        fix: "enable virtualization or load kvm",
    });
    let image = data_dir
        .join("fs/images")
        .join(warren_types::ImageRef::default_image().storage_name());
    checks.push(Check {
        name: "default image",
        ok: image.is_dir(),
        required: false,
        detail: image.display().to_string(),
        fix: "warren image build",
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

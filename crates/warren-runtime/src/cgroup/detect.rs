//! Finding the host's cgroup layout, and the host-wide setting that makes joins fast.

use std::path::{Path, PathBuf};

use super::backend::{CgroupBackend, CgroupError};
use super::files::{PARENT, mount_entries, mountinfo};
use super::io::IoThrottle;
use super::v1::V1;
use super::v2::V2;

/// Picks the layout: v2 where the unified hierarchy carries memory, cpu and pids; v1 otherwise.
/// No I/O throttle; see [`detect_with_io`].
pub fn detect() -> Result<Box<dyn CgroupBackend>, CgroupError> {
    detect_with_io(None)
}

/// [`detect`], with each sandbox throttled by `io` where the layout has an io controller
/// (v1 `blkio`, v2 `io`); without one, sandboxes get no I/O limit and a warning says so.
pub fn detect_with_io(io: Option<IoThrottle>) -> Result<Box<dyn CgroupBackend>, CgroupError> {
    let mounts = mountinfo()?;
    let mut v1 = V1 {
        memory: None,
        cpu: None,
        pids: None,
        blkio: None,
        cpuset: None,
        cpuacct: None,
        io: None,
    };
    let mut v2_mount = None;
    for (mount_point, fstype, superopts) in mount_entries(&mounts) {
        match fstype {
            "cgroup2" => v2_mount = Some(PathBuf::from(mount_point)),
            "cgroup" => {
                for opt in superopts.split(',') {
                    let slot = match opt {
                        "memory" => &mut v1.memory,
                        "cpu" => &mut v1.cpu,
                        "pids" => &mut v1.pids,
                        "blkio" => &mut v1.blkio,
                        "cpuset" => &mut v1.cpuset,
                        "cpuacct" => &mut v1.cpuacct,
                        _ => continue,
                    };
                    slot.get_or_insert_with(|| PathBuf::from(mount_point).join(PARENT));
                }
            }
            _ => {}
        }
    }
    if let Some(mount) = v2_mount {
        let controllers =
            std::fs::read_to_string(mount.join("cgroup.controllers")).unwrap_or_default();
        let has = |c: &str| controllers.split_whitespace().any(|x| x == c);
        if has("memory") && has("cpu") && has("pids") {
            let io = io.filter(|_| has("io"));
            warn_unthrottled(io.is_none() && !has("io"), "v2 io");
            return Ok(Box::new(V2 {
                root: mount.join(PARENT),
                io,
                // Only where the root already hands cpuset down: enabling it there is the
                // host's choice, and asking for it in our subtree without that would fail
                // every create.
                cpuset: std::fs::read_to_string(mount.join("cgroup.subtree_control"))
                    .is_ok_and(|c| c.split_whitespace().any(|x| x == "cpuset")),
            }));
        }
    }
    if v1.memory.is_some() && v1.cpu.is_some() && v1.pids.is_some() {
        if v1.blkio.is_some() {
            v1.io = io;
        } else {
            warn_unthrottled(true, "v1 blkio");
        }
        return Ok(Box::new(v1));
    }
    Err(CgroupError::Unsupported)
}

fn warn_unthrottled(missing: bool, controller: &str) {
    if missing {
        tracing::warn!(
            controller,
            "no io controller: sandboxes get no block I/O limit"
        );
    }
}

/// Turns on `favordynmods` (below) through the cgroup2 mount, if there is one. A host-wide
/// setting: the driver makes it when it opens, `warren doctor` does not.
pub fn favor_dynamic_changes() {
    let Ok(mounts) = mountinfo() else { return };
    if let Some((mount, _, opts)) = mount_entries(&mounts).find(|(_, t, _)| *t == "cgroup2") {
        favor_dynmods(Path::new(mount), opts);
    }
}

/// Moving a process into a cgroup takes the kernel's global threadgroup lock for writing, which
/// by default waits for an RCU grace period whenever no migration happened in the last one:
/// ~10 ms of every create on an otherwise idle host. `favordynmods` (Linux 6.0+; global, though
/// set through the v2 mount) keeps that lock ready for writers, at the price of slightly slower
/// fork and exit. The reconfigure (fspick(2), which leaves the mount's own nosuid/nodev/noexec
/// alone) restates the superblock's other flags: cgroup2 clears those a reconfigure omits.
fn favor_dynmods(mount: &Path, superopts: &str) {
    let flags: Vec<&str> = superopts
        .split(',')
        .filter(|o| !o.is_empty() && *o != "rw" && *o != "ro")
        .collect();
    if flags.contains(&"favordynmods") {
        return;
    }
    let reconfigure = || -> rustix::io::Result<()> {
        let fs = rustix::mount::fspick(
            rustix::fs::CWD,
            mount,
            rustix::mount::FsPickFlags::FSPICK_CLOEXEC,
        )?;
        for flag in flags.iter().chain(&["favordynmods"]) {
            rustix::mount::fsconfig_set_flag(&fs, *flag)?;
        }
        rustix::mount::fsconfig_reconfigure(&fs)
    };
    match reconfigure() {
        Ok(()) => {
            tracing::info!(mount = %mount.display(), "enabled cgroup favordynmods for fast cgroup joins")
        }
        Err(e) => {
            tracing::debug!(error = %e, mount = %mount.display(), "cannot enable cgroup favordynmods; creates may wait for RCU")
        }
    }
}

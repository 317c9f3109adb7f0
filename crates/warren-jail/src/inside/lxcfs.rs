//! LXCFS's views in the sandbox (steps 8 and 9 of the checklist in [`crate::run`]): the files
//! of a live LXCFS mount, which answer each reader with the figures of the cgroups its pid
//! namespace's init is in (memory limit, CPU quota, the sandbox's own uptime), bound read-only
//! over their procfs counterparts; and its `sys/devices/system/cpu` in an otherwise empty,
//! read-only `/sys` (the jail mounts no sysfs), where glibc counts online CPUs.
//!
//! An entry this LXCFS lacks, or one it cannot answer for because it died since the runtime
//! checked it (ENOTCONN), is left as the kernel has it: the sandbox then sees the host's figure
//! there, as it would without LXCFS, rather than failing to start.

use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;
use rustix::mount::{MountAttrFlags, OpenTreeFlags};

use super::mounts::{attach, beneath, mount_target, new_mount};
use crate::error::Context;
use crate::{JailError, sys};

/// The `/proc` files LXCFS virtualizes that the sandbox gets (not `slabinfo`: kernel-wide and
/// root-only anyway).
const PROC_FILES: [&str; 7] = [
    "meminfo",
    "cpuinfo",
    "stat",
    "uptime",
    "loadavg",
    "diskstats",
    "swaps",
];

/// Where LXCFS and a real sysfs keep the CPU list (`online`, `possible`, `cpu<N>/`).
const CPU_DIR: [&str; 3] = ["devices", "system", "cpu"];

/// Opens the LXCFS mount point while the child still has the jailer's host uid (the data dir
/// is private to host root, like the rootfs's; see `open_rootfs_target`). The fd names the copy
/// of the mount in the child's own mount namespace, which is what step 9 binds from.
pub(crate) fn open_lxcfs(path: &Path) -> Result<OwnedFd, JailError> {
    rustix::fs::open(
        path,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .path("open the lxcfs mount point", path)
}

/// Binds LXCFS's files over `/proc`'s (`proc` is the sandbox's procfs) and its CPU directory
/// into a read-only `/sys` under `root`.
pub(crate) fn mount_lxcfs(
    lxcfs: &OwnedFd,
    proc: &OwnedFd,
    root: &OwnedFd,
) -> Result<(), JailError> {
    for name in PROC_FILES {
        let Some(view) = lxcfs_entry(lxcfs, &format!("proc/{name}"))? else {
            continue;
        };
        let target = match rustix::fs::openat2(
            proc,
            name,
            OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
            beneath(),
        ) {
            Ok(fd) => fd,
            // A kernel without the file (no swap support: no /proc/swaps) has nothing to cover.
            Err(Errno::NOENT) => continue,
            Err(e) => return Err(e).path("open /proc entry", Path::new(name)),
        };
        attach(&view, target.as_fd())
            .path("bind the lxcfs view over /proc entry", Path::new(name))?;
    }
    mount_sys_cpu(lxcfs, root)
}

/// `/sys` as a read-only tmpfs holding only LXCFS's `devices/system/cpu`, when it has one.
fn mount_sys_cpu(lxcfs: &OwnedFd, root: &OwnedFd) -> Result<(), JailError> {
    let Some(cpu) = lxcfs_entry(lxcfs, &format!("sys/{}", CPU_DIR.join("/")))? else {
        return Ok(());
    };
    let target = mount_target(root.as_fd(), "sys", "/sys")?;
    // Writable until the CPU directory's mount point exists, then read-only; the inode bound
    // is the four directories.
    let sys = new_mount(
        "tmpfs",
        &[],
        &[("mode", "755"), ("size", "4096"), ("nr_inodes", "8")],
        MountAttrFlags::MOUNT_ATTR_NOSUID
            | MountAttrFlags::MOUNT_ATTR_NODEV
            | MountAttrFlags::MOUNT_ATTR_NOEXEC,
    )
    .sys("create the /sys tmpfs")?;
    attach(&sys, target.as_fd()).sys("mount /sys")?;
    let mut dir = sys
        .as_fd()
        .try_clone_to_owned()
        .sys("duplicate the /sys fd")?;
    for name in CPU_DIR {
        // Created by mount_target: the tmpfs is empty.
        dir = mount_target(dir.as_fd(), name, "/sys/devices/system/cpu")?;
    }
    attach(&cpu, dir.as_fd()).sys("bind the lxcfs view over /sys/devices/system/cpu")?;
    sys::mount_setattr(
        sys.as_fd(),
        false,
        u64::from(MountAttrFlags::MOUNT_ATTR_RDONLY.bits()),
        None,
    )
    .sys("make /sys read-only")
}

/// A detached read-only, nosuid, nodev, noexec bind of `name` under the LXCFS mount, or `None`
/// when this LXCFS has no such entry or no longer answers.
fn lxcfs_entry(lxcfs: &OwnedFd, name: &str) -> Result<Option<OwnedFd>, JailError> {
    let shown = Path::new(name);
    let view = match rustix::mount::open_tree(
        lxcfs,
        name,
        OpenTreeFlags::OPEN_TREE_CLONE | OpenTreeFlags::OPEN_TREE_CLOEXEC,
    ) {
        Ok(fd) => fd,
        Err(Errno::NOENT | Errno::NOTCONN) => return Ok(None),
        Err(e) => return Err(e).path("bind lxcfs entry", shown),
    };
    let attrs = MountAttrFlags::MOUNT_ATTR_RDONLY
        | MountAttrFlags::MOUNT_ATTR_NOSUID
        | MountAttrFlags::MOUNT_ATTR_NODEV
        | MountAttrFlags::MOUNT_ATTR_NOEXEC;
    sys::mount_setattr(view.as_fd(), false, u64::from(attrs.bits()), None)
        .path("restrict the bind of lxcfs entry", shown)?;
    Ok(Some(view))
}

//! The child's mounts (steps 8 to 10 of the checklist in [`crate::run`]): the rootfs over its
//! own path, a fresh `/proc` with its masks, a minimal `/dev`, then pivot_root.
//!
//! Nothing here follows a symlink of the rootfs: the image is untrusted, and a `/proc -> /etc`
//! or `/dev -> /` would otherwise redirect our mounts (runc CVE-2025-31133, CVE-2025-52565).
//! Mount targets are opened with openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS) and mounts are
//! attached to those fds with move_mount(2), so no path is resolved twice.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

use rustix::fs::{Mode, OFlags, ResolveFlags};
use rustix::io::Errno;
use rustix::mount::{
    FsMountFlags, FsOpenFlags, MountAttrFlags, MountPropagationFlags, MoveMountFlags,
    OpenTreeFlags, UnmountFlags,
};

use crate::error::Context;
use crate::{JailError, sys};

/// Host device nodes bind-mounted into the sandbox's `/dev` (bubblewrap's `--dev` set).
const DEVICES: [&str; 6] = ["null", "zero", "full", "random", "urandom", "tty"];

/// `/proc` files masked with `/dev/null` (Docker's masked paths, plus sysrq-trigger, which
/// Docker only makes read-only).
const PROC_MASKED_FILES: [&str; 8] = [
    "kcore",
    "keys",
    "timer_list",
    "timer_stats",
    "sched_debug",
    "latency_stats",
    "interrupts",
    "sysrq-trigger",
];

/// `/proc` directories hidden under an empty read-only tmpfs, if the kernel has them.
const PROC_MASKED_DIRS: [&str; 3] = ["acpi", "asound", "scsi"];

/// `/proc` trees made read-only (Docker's read-only paths): sysctls, bus and irq settings.
const PROC_READ_ONLY: [&str; 4] = ["sys", "bus", "fs", "irq"];

/// Opens without following any symlink and without leaving the directory fd's tree or mount.
pub(super) fn beneath() -> ResolveFlags {
    ResolveFlags::BENEATH
        | ResolveFlags::NO_SYMLINKS
        | ResolveFlags::NO_MAGICLINKS
        | ResolveFlags::NO_XDEV
}

/// Nothing mounted from here on propagates back to the host (mount_namespaces(7)).
pub(crate) fn make_mounts_private() -> Result<(), JailError> {
    rustix::mount::mount_change(
        "/",
        MountPropagationFlags::PRIVATE | MountPropagationFlags::REC,
    )
    .sys("make the mounts private")
}

/// Opens the rootfs's host path as the mount target, while the child still has the jailer's
/// host uid: the data dir is private to host root (0700), and once the child is the sandbox's
/// root (host uid_base) it can no longer traverse it. Our mount namespace is already the
/// child's own, so the fd names the mount that `attach_rootfs` covers.
pub(crate) fn open_rootfs_target(rootfs: &Path) -> Result<OwnedFd, JailError> {
    rustix::fs::open(
        rootfs,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .path("open the rootfs mount point", rootfs)
}

/// Attaches the idmapped rootfs tree onto `target` (the rootfs's own host path, opened by
/// [`open_rootfs_target`]) in our mount namespace. `tree` then refers to the attached mount's
/// root: every later step resolves inside the rootfs through it.
pub(crate) fn attach_rootfs(
    tree: &OwnedFd,
    target: &OwnedFd,
    rootfs: &Path,
) -> Result<(), JailError> {
    attach(tree, target.as_fd()).path("attach the idmapped rootfs at", rootfs)
}

/// Opens directory `name` directly under `dir` as a mount target, creating it if missing.
/// A symlink or a non-directory there is an error, not something to follow or replace.
/// `shown` is its path in the sandbox, for errors.
pub(super) fn mount_target(
    dir: BorrowedFd<'_>,
    name: &str,
    shown: &str,
) -> Result<OwnedFd, JailError> {
    let shown = Path::new(shown);
    let open = || {
        rustix::fs::openat2(
            dir,
            name,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
            beneath(),
        )
    };
    match open() {
        Err(Errno::NOENT) => {
            match rustix::fs::mkdirat(dir, name, Mode::from_raw_mode(0o755)) {
                Ok(()) | Err(Errno::EXIST) => {}
                Err(e) => return Err(e).path("create the mount point", shown),
            }
            open().path("open the mount point", shown)
        }
        // ENOTDIR or ELOOP: a file or a symlink where a directory belongs.
        other => other.path("open the mount point", shown),
    }
}

/// A new, detached filesystem mount (fsopen → fsconfig → fsmount).
pub(super) fn new_mount(
    fstype: &str,
    flags: &[&str],
    options: &[(&str, &str)],
    attrs: MountAttrFlags,
) -> Result<OwnedFd, rustix::io::Errno> {
    let fs = rustix::mount::fsopen(fstype, FsOpenFlags::FSOPEN_CLOEXEC)?;
    for flag in flags {
        rustix::mount::fsconfig_set_flag(&fs, *flag)?;
    }
    for (key, value) in options {
        rustix::mount::fsconfig_set_string(&fs, *key, *value)?;
    }
    rustix::mount::fsconfig_create(&fs)?;
    rustix::mount::fsmount(&fs, FsMountFlags::FSMOUNT_CLOEXEC, attrs)
}

/// Attaches a detached mount onto an open target (file or directory).
pub(super) fn attach(mount: &OwnedFd, target: BorrowedFd<'_>) -> Result<(), rustix::io::Errno> {
    rustix::mount::move_mount(
        mount,
        "",
        target,
        "",
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH | MoveMountFlags::MOVE_MOUNT_T_EMPTY_PATH,
    )
}

/// A detached bind mount of host `/dev/<name>`, nosuid and noexec (and read-only if asked).
/// Host paths are trusted: they resolve in our copy of the host's mount tree.
fn host_device(name: &str, read_only: bool) -> Result<OwnedFd, JailError> {
    let path = format!("/dev/{name}");
    let node = rustix::mount::open_tree(
        rustix::fs::CWD,
        path.as_str(),
        OpenTreeFlags::OPEN_TREE_CLONE | OpenTreeFlags::OPEN_TREE_CLOEXEC,
    )
    .path("bind", Path::new(&path))?;
    let mut attrs = MountAttrFlags::MOUNT_ATTR_NOSUID | MountAttrFlags::MOUNT_ATTR_NOEXEC;
    if read_only {
        attrs |= MountAttrFlags::MOUNT_ATTR_RDONLY;
    }
    sys::mount_setattr(node.as_fd(), false, u64::from(attrs.bits()), None)
        .path("restrict the bind of", Path::new(&path))?;
    Ok(node)
}

/// A fresh procfs of the sandbox's pid namespace on `/proc`, nosuid,nodev,noexec. Must come
/// before the old root is detached: the kernel lets a user namespace mount procfs only while a
/// fully visible procfs is mounted in its mount namespace (mount_too_revealing(), the host's
/// /proc here). Returns the mounted procfs.
pub(crate) fn mount_proc(root: &OwnedFd) -> Result<OwnedFd, JailError> {
    let target = mount_target(root.as_fd(), "proc", "/proc")?;
    let proc = new_mount(
        "proc",
        &[],
        &[],
        MountAttrFlags::MOUNT_ATTR_NOSUID
            | MountAttrFlags::MOUNT_ATTR_NODEV
            | MountAttrFlags::MOUNT_ATTR_NOEXEC,
    )
    .sys("create the procfs mount")?;
    attach(&proc, target.as_fd()).sys("mount /proc")?;
    Ok(proc)
}

/// Masks what procfs reveals or lets one change about the host: kernel memory and symbols,
/// keys, timers, the sysrq trigger, and the sysctl, bus and irq trees (Docker's masked and
/// read-only paths; SECURITY.md §2 row 14).
pub(crate) fn mask_proc(proc: &OwnedFd) -> Result<(), JailError> {
    let open = |name: &str| {
        rustix::fs::openat2(
            proc,
            name,
            OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
            beneath(),
        )
    };
    for name in PROC_MASKED_FILES {
        let target = match open(name) {
            Ok(fd) => fd,
            Err(Errno::NOENT) => continue,
            Err(e) => return Err(e).path("open /proc entry", Path::new(name)),
        };
        let null = host_device("null", true)?;
        attach(&null, target.as_fd()).path("mask /proc entry", Path::new(name))?;
    }
    for name in PROC_MASKED_DIRS {
        let target = match open(name) {
            Ok(fd) => fd,
            Err(Errno::NOENT) => continue,
            Err(e) => return Err(e).path("open /proc entry", Path::new(name)),
        };
        // Read-only and empty; the inode bound is for form (no tmpfs without one).
        let empty = new_mount(
            "tmpfs",
            &[],
            &[("mode", "555"), ("size", "4096"), ("nr_inodes", "2")],
            MountAttrFlags::MOUNT_ATTR_RDONLY
                | MountAttrFlags::MOUNT_ATTR_NOSUID
                | MountAttrFlags::MOUNT_ATTR_NODEV
                | MountAttrFlags::MOUNT_ATTR_NOEXEC,
        )
        .sys("create an empty tmpfs")?;
        attach(&empty, target.as_fd()).path("mask /proc entry", Path::new(name))?;
    }
    for name in PROC_READ_ONLY {
        let target = match open(name) {
            Ok(fd) => fd,
            Err(Errno::NOENT) => continue,
            Err(e) => return Err(e).path("open /proc entry", Path::new(name)),
        };
        let copy = rustix::mount::open_tree(
            &target,
            "",
            OpenTreeFlags::OPEN_TREE_CLONE
                | OpenTreeFlags::OPEN_TREE_CLOEXEC
                | OpenTreeFlags::AT_EMPTY_PATH
                | OpenTreeFlags::AT_RECURSIVE,
        )
        .path("bind /proc entry", Path::new(name))?;
        let attrs = MountAttrFlags::MOUNT_ATTR_RDONLY
            | MountAttrFlags::MOUNT_ATTR_NOSUID
            | MountAttrFlags::MOUNT_ATTR_NODEV
            | MountAttrFlags::MOUNT_ATTR_NOEXEC;
        sys::mount_setattr(copy.as_fd(), true, u64::from(attrs.bits()), None)
            .path("make read-only /proc entry", Path::new(name))?;
        attach(&copy, target.as_fd()).path("mount read-only /proc entry", Path::new(name))?;
    }
    Ok(())
}

/// Inodes of a sandbox's `/dev/shm`: one per 4 KiB page of its size, at least 1024 and at most
/// 65,536. Without `nr_inodes` tmpfs allows half the host's RAM pages in inodes, whose memory
/// (dentries and inodes are kernel memory) is worth bounding apart from `size=`.
pub fn shm_inodes(shm_bytes: u64) -> u64 {
    (shm_bytes / 4096).clamp(1024, 65_536)
}

/// A minimal `/dev` we build ourselves on a fresh tmpfs (nothing of the image's `/dev` is
/// trusted): binds of the host's null, zero, full, random, urandom and tty; a private devpts
/// instance with `ptmx`; a size- and inode-limited `/dev/shm`; the fd and stdio links. No `/dev/console`
/// (CVE-2025-52565) and no other device.
pub(crate) fn mount_dev(root: &OwnedFd, shm_bytes: u64) -> Result<(), JailError> {
    let target = mount_target(root.as_fd(), "dev", "/dev")?;
    let dev = new_mount(
        "tmpfs",
        &[],
        &[("mode", "755"), ("size", "65536"), ("nr_inodes", "128")],
        MountAttrFlags::MOUNT_ATTR_NOSUID
            | MountAttrFlags::MOUNT_ATTR_NODEV
            | MountAttrFlags::MOUNT_ATTR_NOEXEC,
    )
    .sys("create the /dev tmpfs")?;
    attach(&dev, target.as_fd()).sys("mount /dev")?;

    for name in DEVICES {
        // The bind's own mount keeps the host node usable although /dev itself is nodev.
        let node_target = rustix::fs::openat(
            &dev,
            name,
            OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o666),
        )
        .path("create the device mount point", Path::new(name))?;
        let node = host_device(name, false)?;
        attach(&node, node_target.as_fd()).path("mount the device", Path::new(name))?;
    }

    rustix::fs::mkdirat(&dev, "pts", Mode::from_raw_mode(0o755)).sys("create /dev/pts")?;
    let pts_target = mount_target(dev.as_fd(), "pts", "/dev/pts")?;
    // Not nodev: the pseudo-terminals of this instance must open. gid 5 is the sandbox's tty
    // group, resolved in its user namespace.
    let pts = new_mount(
        "devpts",
        &["newinstance"],
        &[("ptmxmode", "0666"), ("mode", "0620"), ("gid", "5")],
        MountAttrFlags::MOUNT_ATTR_NOSUID | MountAttrFlags::MOUNT_ATTR_NOEXEC,
    )
    .sys("create the devpts instance")?;
    attach(&pts, pts_target.as_fd()).sys("mount /dev/pts")?;

    rustix::fs::mkdirat(&dev, "shm", Mode::from_raw_mode(0o755)).sys("create /dev/shm")?;
    let shm_target = mount_target(dev.as_fd(), "shm", "/dev/shm")?;
    let size = shm_bytes.to_string();
    let inodes = shm_inodes(shm_bytes).to_string();
    let shm = new_mount(
        "tmpfs",
        &[],
        &[
            ("mode", "1777"),
            ("size", size.as_str()),
            ("nr_inodes", inodes.as_str()),
        ],
        MountAttrFlags::MOUNT_ATTR_NOSUID
            | MountAttrFlags::MOUNT_ATTR_NODEV
            | MountAttrFlags::MOUNT_ATTR_NOEXEC,
    )
    .sys("create the /dev/shm tmpfs")?;
    attach(&shm, shm_target.as_fd()).sys("mount /dev/shm")?;

    for (name, to) in [
        ("ptmx", "pts/ptmx"),
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        rustix::fs::symlinkat(to, &dev, name).path("link /dev entry", Path::new(name))?;
    }
    Ok(())
}

/// pivot_root(2) into the rootfs and detach the old root: pivot_root(".", ".") stacks the old
/// root on top of the new one, and umount2(".", MNT_DETACH) drops it (the man page's recipe,
/// as in runc). Then verifies the working directory is the new root, so no path of the host
/// stays reachable through it (CVE-2024-21626).
pub(crate) fn pivot_into(root: &OwnedFd) -> Result<(), JailError> {
    rustix::process::fchdir(root).sys("enter the rootfs")?;
    rustix::process::pivot_root(".", ".").sys("pivot_root into the rootfs")?;
    rustix::mount::unmount(".", UnmountFlags::DETACH).sys("detach the old root")?;
    rustix::process::chdir("/").sys("change to the new root")?;
    let cwd = rustix::process::getcwd(Vec::new()).sys("read the working directory")?;
    if cwd.as_bytes() != b"/" {
        return Err(JailError::Check {
            action: "verify the working directory",
            found: cwd.to_string_lossy().into_owned(),
        });
    }
    Ok(())
}

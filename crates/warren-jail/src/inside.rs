//! The child's steps: it runs as root of the new user namespace and PID 1 of the new pid
//! namespace, builds the sandbox's mounts, confines itself, then becomes the agent.
//!
//! Nothing here follows a symlink of the rootfs: the image is untrusted, and a `/proc -> /etc`
//! or `/dev -> /` would otherwise redirect our mounts (runc CVE-2025-31133, CVE-2025-52565).
//! Mount targets are opened with openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS) and mounts are
//! attached to those fds with move_mount(2), so no path is resolved twice.

use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::Path;

use rustix::fs::{Mode, OFlags, ResolveFlags};
use rustix::io::Errno;
use rustix::mount::{
    FsMountFlags, FsOpenFlags, MountAttrFlags, MountPropagationFlags, MoveMountFlags,
    OpenTreeFlags, UnmountFlags,
};
use rustix::process::{Resource, Rlimit, Signal};

use crate::error::Context;
use crate::{AGENT_LISTEN_FD, JailError, JailSpec, LANDLOCK_REVIEWED_ABI, sys};

/// Capabilities the agent keeps, in the sandbox's user namespace only: it runs commands as
/// other users and does file operations as or for them. What it executes gets none.
pub const AGENT_CAPABILITIES: [caps::Capability; 6] = [
    caps::Capability::CAP_SETUID,
    caps::Capability::CAP_SETGID,
    caps::Capability::CAP_CHOWN,
    caps::Capability::CAP_DAC_OVERRIDE,
    caps::Capability::CAP_FOWNER,
    caps::Capability::CAP_KILL,
];

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

/// The agent's whole environment.
const AGENT_PATH_ENV: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Opens without following any symlink and without leaving the directory fd's tree or mount.
fn beneath() -> ResolveFlags {
    ResolveFlags::BENEATH
        | ResolveFlags::NO_SYMLINKS
        | ResolveFlags::NO_MAGICLINKS
        | ResolveFlags::NO_XDEV
}

/// Dies with the jailer while the jail is built (PR_SET_PDEATHSIG), so a jailer killed by its
/// caller leaves no half-built sandbox. Cleared again right before exec: the agent must
/// outlive the jailer.
pub(crate) fn die_with_jailer() -> Result<(), JailError> {
    rustix::process::set_parent_process_death_signal(Some(Signal::KILL))
        .sys("set the parent death signal")
}

pub(crate) fn clear_parent_death_signal() -> Result<(), JailError> {
    rustix::process::set_parent_process_death_signal(None).sys("clear the parent death signal")
}

/// Becomes uid/gid 0 of the new user namespace, i.e. `uid_base`/`gid_base` on the host, with no
/// supplementary groups. Until now the child still carried the jailer's host credentials
/// (kuid 0): without this the agent would own files as host root. The groups cannot be changed
/// any more (setgroups is "deny"), so they are checked: the jailer dropped them before the
/// clone. Capabilities survive: the new ids are the namespace's root (capabilities(7)).
pub(crate) fn become_sandbox_root() -> Result<(), JailError> {
    let root_gid = rustix::process::Gid::ROOT;
    let root_uid = rustix::process::Uid::ROOT;
    let groups = rustix::process::getgroups().sys("read the supplementary groups")?;
    if !groups.is_empty() {
        return Err(JailError::Check {
            action: "start the sandbox without supplementary groups",
            found: format!("{} inherited", groups.len()),
        });
    }
    rustix::thread::set_thread_res_gid(root_gid, root_gid, root_gid)
        .sys("become gid 0 of the sandbox")?;
    rustix::thread::set_thread_res_uid(root_uid, root_uid, root_uid)
        .sys("become uid 0 of the sandbox")?;
    Ok(())
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
fn mount_target(dir: BorrowedFd<'_>, name: &str, shown: &str) -> Result<OwnedFd, JailError> {
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
fn new_mount(
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
fn attach(mount: &OwnedFd, target: BorrowedFd<'_>) -> Result<(), rustix::io::Errno> {
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

pub(crate) fn set_hostname(name: &str) -> Result<(), JailError> {
    rustix::system::sethostname(name.as_bytes()).sys("set the hostname")
}

/// The new network namespace starts with `lo` down.
pub(crate) fn bring_up_loopback() -> Result<(), JailError> {
    sys::loopback_up().sys("bring up lo")
}

/// RLIMIT_NOFILE and RLIMIT_NPROC from the spec (nproc backs up the pids cgroup and counts
/// the sandbox's own uid only), and no core dumps.
pub(crate) fn set_rlimits(spec: &JailSpec) -> Result<(), JailError> {
    let exactly = |n: u64| Rlimit {
        current: Some(n),
        maximum: Some(n),
    };
    rustix::process::setrlimit(Resource::Nofile, exactly(spec.nofile)).sys("set RLIMIT_NOFILE")?;
    rustix::process::setrlimit(Resource::Nproc, exactly(spec.nproc)).sys("set RLIMIT_NPROC")?;
    rustix::process::setrlimit(Resource::Core, exactly(0)).sys("set RLIMIT_CORE")?;
    Ok(())
}

/// After exec as uid 0 the kernel computes permitted = inheritable | bounding (capabilities(7),
/// "root" rules). So: inheritable = the agent's set, bounding = empty, ambient = empty; the
/// agent runs with exactly AGENT_CAPABILITIES, and once it clears its own inheritable set at
/// startup, everything it executes, root or not, gets nothing. The inheritable set must be set
/// first: capset(2) refuses inheritable bits outside the bounding set.
pub(crate) fn restrict_capabilities() -> Result<(), JailError> {
    use caps::{CapSet, CapsHashSet};
    let keep: CapsHashSet = AGENT_CAPABILITIES.into_iter().collect();
    caps::set(None, CapSet::Inheritable, &keep).map_err(|source| JailError::Caps {
        action: "set the inheritable capabilities",
        source,
    })?;
    sys::clear_bounding_set().sys("clear the capability bounding set")?;
    caps::clear(None, CapSet::Ambient).map_err(|source| JailError::Caps {
        action: "clear the ambient capabilities",
        source,
    })?;
    let left = caps::read(None, CapSet::Bounding).map_err(|source| JailError::Caps {
        action: "read the capability bounding set",
        source,
    })?;
    if !left.is_empty() {
        return Err(JailError::Check {
            action: "clear the capability bounding set",
            found: format!("{left:?} left"),
        });
    }
    Ok(())
}

/// Its own session: no controlling terminal, and no signal for the daemon's process group
/// (a ^C in the daemon's terminal) reaches the sandbox. Also what bubblewrap's --new-session
/// does against TIOCSTI (CVE-2017-5226).
pub(crate) fn new_session() -> Result<(), JailError> {
    rustix::process::setsid().sys("start a new session")?;
    Ok(())
}

/// The agent's fd table: 0, 1, 2 on `/dev/null` (inside the new root), the listening socket on
/// AGENT_LISTEN_FD without close-on-exec, and everything else close-on-exec, so no host fd
/// reaches the sandbox (CVE-2024-21626). `keep` are fds the jail still needs until the exec
/// (the sync socket, the agent binary); they are moved above AGENT_LISTEN_FD if they sit at
/// or below it.
pub(crate) fn arrange_fds(listener: OwnedFd, keep: [&mut OwnedFd; 2]) -> Result<(), JailError> {
    let null = rustix::fs::open(
        "/dev/null",
        OFlags::RDWR | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .sys("open /dev/null")?;
    let above = |fd: &OwnedFd| -> Result<Option<OwnedFd>, JailError> {
        if fd.as_raw_fd() > AGENT_LISTEN_FD {
            return Ok(None);
        }
        let moved =
            rustix::io::fcntl_dupfd_cloexec(fd, AGENT_LISTEN_FD + 1).sys("move an fd above 3")?;
        Ok(Some(moved))
    };
    let null = above(&null)?.unwrap_or(null);
    for fd in keep {
        if let Some(moved) = above(fd)? {
            *fd = moved;
        }
    }
    // The listener may already be fd 3 (the jailer's first fd after stdio); otherwise 3 now
    // holds nothing we own (everything we own is above it), and install_at may replace it.
    let listener = if listener.as_raw_fd() < AGENT_LISTEN_FD {
        above(&listener)?.unwrap_or(listener)
    } else {
        listener
    };
    sys::install_at(listener, AGENT_LISTEN_FD).sys("place the agent socket at fd 3")?;
    rustix::stdio::dup2_stdin(&null).sys("point stdin at /dev/null")?;
    rustix::stdio::dup2_stdout(&null).sys("point stdout at /dev/null")?;
    rustix::stdio::dup2_stderr(&null).sys("point stderr at /dev/null")?;
    let first_closed = u32::try_from(AGENT_LISTEN_FD + 1).unwrap_or(u32::MAX);
    sys::cloexec_from(first_closed).sys("mark the remaining fds close-on-exec")?;
    Ok(())
}

/// Landlock, enforced and checked: handles every filesystem right of the reviewed ABI
/// ([`LANDLOCK_REVIEWED_ABI`]) and grants them all beneath "/" (the sandbox's root after
/// pivot_root: it sees only its own tree anyway), plus the scopes: no abstract unix socket of,
/// and no signal to, a process outside the domain (another sandbox's, the host's). Paths outside
/// the root, reachable only through /proc magic links (e.g. `/proc/1/exe`, the host's agent
/// binary), get nothing but what is granted on the agent binary itself: read and execute,
/// which the exec right after needs (exec checks the file against the domain). Writing to it
/// stays denied (CVE-2019-5736 class). The agent's socket file lies outside the root and gets
/// no right at all; the agent holds only its listening fd.
///
/// Fails closed: on a kernel with the reviewed ABI or newer anything short of full enforcement
/// is an error. An older kernel enforces what it has (the report carries its ABI).
pub(crate) fn apply_landlock(agent: &OwnedFd) -> Result<(), JailError> {
    restrict_with_landlock(Path::new("/"), agent.as_fd(), sys::landlock_abi())
}

/// [`apply_landlock`] with the root to grant beneath as a parameter, so a test can confine a
/// throwaway process to a directory of its own.
fn restrict_with_landlock(
    root: &Path,
    agent: BorrowedFd<'_>,
    kernel_abi: u32,
) -> Result<(), JailError> {
    use landlock::{
        ABI, Access, AccessFs, PathBeneath, PathFd, Ruleset, RulesetAttr, RulesetCreatedAttr, Scope,
    };
    // The reviewed ABI: V6 brought IOCTL_DEV (granted, so ttys keep working) and the scopes.
    const _: () = assert!(ABI::V6 as u32 == LANDLOCK_REVIEWED_ABI);
    let abi = ABI::V6;
    let all = AccessFs::from_all(abi);
    let root = PathFd::new(root).map_err(JailError::LandlockPath)?;
    // Best effort only in building the ruleset, so an older kernel still gets the rights it
    // knows; the status below decides whether that is acceptable.
    let status = Ruleset::default()
        .handle_access(all)
        .and_then(|r| r.scope(Scope::from_all(abi)))
        .and_then(|r| r.create())
        .and_then(|r| r.add_rule(PathBeneath::new(root, all)))
        .and_then(|r| {
            r.add_rule(PathBeneath::new(
                agent,
                AccessFs::Execute | AccessFs::ReadFile,
            ))
        })
        .and_then(|r| r.restrict_self())
        .map_err(JailError::Landlock)?;
    landlock_verdict(kernel_abi, status.ruleset)
}

/// Whether the ruleset's enforcement is acceptable on a kernel with Landlock ABI `kernel_abi`.
fn landlock_verdict(kernel_abi: u32, status: landlock::RulesetStatus) -> Result<(), JailError> {
    use landlock::RulesetStatus;
    let short = |what: &str| JailError::Check {
        action: "enforce the landlock ruleset",
        found: format!("{what} on a kernel with landlock ABI {kernel_abi}"),
    };
    match status {
        RulesetStatus::FullyEnforced => Ok(()),
        _ if kernel_abi >= LANDLOCK_REVIEWED_ABI => Err(short("only partly enforced")),
        // An older kernel: its filesystem rights hold, the scopes it lacks do not.
        RulesetStatus::PartiallyEnforced => Ok(()),
        // No Landlock in the kernel: namespaces and seccomp are the jail.
        RulesetStatus::NotEnforced if kernel_abi == 0 => Ok(()),
        RulesetStatus::NotEnforced => Err(short("not enforced")),
    }
}

/// Executes the agent by fd with `argv = ["warren-agent", args...]` and PATH as its only
/// environment. Returns only on failure.
pub(crate) fn exec_agent(agent: &OwnedFd, args: &[String]) -> JailError {
    let argv: Result<Vec<CString>, _> = std::iter::once("warren-agent")
        .chain(args.iter().map(String::as_str))
        .map(CString::new)
        .collect();
    let (argv, env) = match (argv, CString::new(AGENT_PATH_ENV)) {
        (Ok(argv), Ok(env)) => (argv, [env]),
        // validate() rejects NUL bytes; this is unreachable for a validated spec.
        _ => {
            return JailError::Check {
                action: "build the agent's argv",
                found: "a NUL byte".into(),
            };
        }
    };
    JailError::Sys {
        action: "execute the agent",
        source: sys::execveat_fd(agent.as_fd(), &argv, &env),
    }
}

#[cfg(test)]
mod tests {
    use std::io::ErrorKind;
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
    use std::path::PathBuf;

    use super::*;

    /// Environment variable through which [`landlock_probe_child`] gets its orders.
    const PROBE_ENV: &str = "WARREN_JAIL_LANDLOCK_PROBE";

    #[test]
    fn landlock_verdict_fails_closed_from_the_reviewed_abi() {
        use landlock::RulesetStatus::{FullyEnforced, NotEnforced, PartiallyEnforced};
        for abi in [LANDLOCK_REVIEWED_ABI, LANDLOCK_REVIEWED_ABI + 1] {
            assert!(landlock_verdict(abi, FullyEnforced).is_ok());
            assert!(landlock_verdict(abi, PartiallyEnforced).is_err());
            assert!(landlock_verdict(abi, NotEnforced).is_err());
        }
        assert!(landlock_verdict(3, PartiallyEnforced).is_ok());
        assert!(landlock_verdict(3, NotEnforced).is_err());
        assert!(landlock_verdict(0, NotEnforced).is_ok());
        let err = landlock_verdict(7, PartiallyEnforced).unwrap_err();
        assert_eq!(
            err.to_string(),
            "failed to enforce the landlock ruleset: only partly enforced on a kernel with \
             landlock ABI 7"
        );
    }

    /// The ruleset of the jail, applied by a separate process (this test binary run again for
    /// [`landlock_probe_child`] only: the test process itself must stay unconfined): each
    /// operation is tried before and after, so a denial is Landlock's, not DAC's or a missing
    /// object's.
    #[test]
    fn landlock_denies_abstract_sockets_signals_and_writing_the_agent() {
        let abi = sys::landlock_abi();
        assert!(
            abi >= LANDLOCK_REVIEWED_ABI,
            "this kernel has landlock ABI {abi}; the jail's ruleset needs {LANDLOCK_REVIEWED_ABI} \
             (Linux 6.12) for its scopes, so this test cannot check them here"
        );
        let dir = std::env::temp_dir().join(format!("warren-landlock-{}", std::process::id()));
        let root = dir.join("root");
        std::fs::create_dir_all(&root).unwrap();
        // The "agent" lies outside the granted root, like the real one; DAC lets anyone write it.
        let agent = dir.join("agent");
        std::fs::write(&agent, b"#!/bin/true\n").unwrap();
        std::fs::set_permissions(&agent, std::os::unix::fs::PermissionsExt::from_mode(0o777))
            .unwrap();
        let name = format!("warren-landlock-{}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let _listener = UnixListener::bind_addr(&addr).unwrap();
        let results = dir.join("results");

        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "inside::tests::landlock_probe_child",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(
                PROBE_ENV,
                format!(
                    "{}\n{}\n{}\n{}\n{}",
                    root.display(),
                    agent.display(),
                    name,
                    std::process::id(),
                    results.display()
                ),
            )
            .output()
            .unwrap();
        let report = std::fs::read_to_string(&results).unwrap_or_default();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(
            out.status.success(),
            "the probe failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let got: Vec<&str> = report.lines().collect();
        assert_eq!(
            got,
            [
                "before connect abstract: ok",
                "before signal outside: ok",
                "before write agent: ok",
                "landlock applied",
                "after connect abstract: EPERM",
                "after signal outside: EPERM",
                "after write agent: EACCES",
                "after read agent: ok",
                "after write inside root: ok",
            ],
            "{report}"
        );
    }

    /// The confined half of the test above; does nothing useful on its own.
    #[test]
    #[ignore = "run by landlock_denies_abstract_sockets_signals_and_writing_the_agent in a child"]
    fn landlock_probe_child() {
        let orders = std::env::var(PROBE_ENV)
            .expect("run only by landlock_denies_abstract_sockets_signals_and_writing_the_agent");
        let [root, agent, name, parent, results]: [&str; 5] =
            orders.lines().collect::<Vec<_>>().try_into().unwrap();
        let (root, agent) = (PathBuf::from(root), PathBuf::from(agent));
        let parent = rustix::process::Pid::from_raw(parent.parse().unwrap()).unwrap();
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let agent_fd =
            rustix::fs::open(&agent, OFlags::PATH | OFlags::CLOEXEC, Mode::empty()).unwrap();

        let verdict = |r: std::io::Result<()>| match r {
            Ok(()) => "ok".to_owned(),
            Err(e) if e.kind() == ErrorKind::PermissionDenied => match e.raw_os_error() {
                Some(libc::EPERM) => "EPERM".to_owned(),
                Some(libc::EACCES) => "EACCES".to_owned(),
                _ => format!("{e}"),
            },
            Err(e) => format!("{e}"),
        };
        let connect = || UnixStream::connect_addr(&addr).map(drop);
        let signal = || rustix::process::test_kill_process(parent).map_err(std::io::Error::from);
        let write_agent = || {
            std::fs::OpenOptions::new()
                .write(true)
                .open(&agent)
                .map(drop)
        };
        // Opened before the ruleset: the confined process could not open it outside its root.
        let mut report = std::fs::File::create(results).unwrap();
        let mut lines = vec![
            format!("before connect abstract: {}", verdict(connect())),
            format!("before signal outside: {}", verdict(signal())),
            format!("before write agent: {}", verdict(write_agent())),
        ];
        restrict_with_landlock(&root, agent_fd.as_fd(), sys::landlock_abi()).unwrap();
        lines.push("landlock applied".to_owned());
        lines.push(format!("after connect abstract: {}", verdict(connect())));
        lines.push(format!("after signal outside: {}", verdict(signal())));
        lines.push(format!("after write agent: {}", verdict(write_agent())));
        let read_agent = std::fs::File::open(&agent).map(drop);
        lines.push(format!("after read agent: {}", verdict(read_agent)));
        let inside = std::fs::write(root.join("file"), b"x");
        lines.push(format!("after write inside root: {}", verdict(inside)));
        let mut text = lines.join("\n");
        text.push('\n');
        std::io::Write::write_all(&mut report, text.as_bytes()).unwrap();
    }
}

//! The child's steps (7 to 17 of the checklist in [`crate::run`]): it runs as root of the new
//! user namespace and PID 1 of the new pid namespace, builds the sandbox's mounts (`mounts`, and
//! LXCFS's views in `lxcfs`), confines itself (rlimits, capabilities, fds here, Landlock in
//! `landlock`), then becomes the agent. The functions come in the order the steps run.

use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use rustix::fs::{Mode, OFlags};
use rustix::process::{Resource, Rlimit, Signal};

use crate::error::Context;
use crate::{AGENT_LISTEN_FD, JailError, JailSpec, sys};

mod landlock;
mod lxcfs;
mod mounts;
mod volumes;

pub(crate) use landlock::apply_landlock;
pub(crate) use lxcfs::{mount_lxcfs, open_lxcfs};
pub use mounts::shm_inodes;
pub(crate) use mounts::{
    attach_rootfs, make_mounts_private, mask_proc, mount_dev, mount_proc, open_rootfs_target,
    pivot_into,
};
pub use volumes::VOLUME_MOUNT_POINT;
pub(crate) use volumes::{mount_own, mount_volumes, receive_own, receive_volumes};

/// Capabilities the agent keeps, in the sandbox's user namespace only: it runs commands as
/// other users and does file operations as or for them, including root's chown and chmod
/// (FSETID keeps a setgid bit root asks for). What it executes gets none.
pub const AGENT_CAPABILITIES: [caps::Capability; 7] = [
    caps::Capability::CAP_SETUID,
    caps::Capability::CAP_SETGID,
    caps::Capability::CAP_CHOWN,
    caps::Capability::CAP_DAC_OVERRIDE,
    caps::Capability::CAP_FOWNER,
    caps::Capability::CAP_FSETID,
    caps::Capability::CAP_KILL,
];

/// What a VMM supervisor keeps besides [`AGENT_CAPABILITIES`] (see [`JailSpec::vmm`]):
/// virtiofsd drops its own capability sets through libcap-ng, which needs it. It acts on the
/// process's own sets only, in a user namespace whose bounding set is already empty.
pub(crate) const VMM_CAPABILITY: caps::Capability = caps::Capability::CAP_SETPCAP;

/// The agent's whole environment.
const AGENT_PATH_ENV: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Dies with the jailer while the jail is built (PR_SET_PDEATHSIG), so a jailer killed by its
/// caller leaves no half-built sandbox. Cleared again right before exec: the agent must
/// outlive the jailer.
pub(crate) fn die_with_jailer() -> Result<(), JailError> {
    rustix::process::set_parent_process_death_signal(Some(Signal::KILL))
        .sys("set the parent death signal")
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
pub(crate) fn restrict_capabilities(vmm: bool) -> Result<(), JailError> {
    use caps::{CapSet, CapsHashSet};
    let mut keep: CapsHashSet = AGENT_CAPABILITIES.into_iter().collect();
    if vmm {
        keep.insert(VMM_CAPABILITY);
    }
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

/// The agent's fd table: 0, 1, 2 on `/dev/null` (inside the new root; 2 on the log instead when
/// the spec has one), the listening socket on
/// AGENT_LISTEN_FD without close-on-exec, and everything else close-on-exec, so no host fd
/// reaches the sandbox (CVE-2024-21626). `keep` are fds the jail still needs until the exec
/// (the sync socket, the agent binary); they are moved above AGENT_LISTEN_FD if they sit at
/// or below it.
pub(crate) fn arrange_fds(
    listener: OwnedFd,
    log: Option<OwnedFd>,
    keep: [&mut OwnedFd; 2],
) -> Result<(), JailError> {
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
    let log = match log {
        Some(fd) => Some(above(&fd)?.unwrap_or(fd)),
        None => None,
    };
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
    rustix::stdio::dup2_stderr(log.as_ref().unwrap_or(&null))
        .sys("point stderr at /dev/null or the log")?;
    let first_closed = u32::try_from(AGENT_LISTEN_FD + 1).unwrap_or(u32::MAX);
    sys::cloexec_from(first_closed).sys("mark the remaining fds close-on-exec")?;
    Ok(())
}

/// The agent must outlive the jailer (and the daemon): the death signal is cleared right before
/// seccomp and the exec.
pub(crate) fn clear_parent_death_signal() -> Result<(), JailError> {
    rustix::process::set_parent_process_death_signal(None).sys("clear the parent death signal")
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

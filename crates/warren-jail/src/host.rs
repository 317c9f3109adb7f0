//! The jailer's own steps, run on the host as root before and right after the clone.

use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use rustix::fs::{Mode, OFlags};
use rustix::mount::{MountAttrFlags, OpenTreeFlags};
use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType};
use rustix::process::{Pid, Signal, WaitOptions};

use crate::error::Context;
use crate::{JailError, JailReport, JailSpec, JailVolume, sys};

/// Listen backlog of the agent socket.
const AGENT_BACKLOG: i32 = 128;

pub(crate) fn set_no_new_privs() -> Result<(), JailError> {
    rustix::thread::set_no_new_privs(true).sys("set no_new_privs")
}

/// Drops host root's supplementary groups from the jailer itself, so the child the clone makes
/// inherits none: its user namespace gets `setgroups` "deny" and could never drop them later.
/// The jailer is single-threaded (`clone_fork` checks), so the thread's groups are the
/// process's. Root needs no group for anything the jailer does after this.
pub(crate) fn drop_supplementary_groups() -> Result<(), JailError> {
    rustix::thread::set_thread_groups(&[]).sys("drop the jailer's supplementary groups")?;
    let left = rustix::process::getgroups().sys("read the jailer's supplementary groups")?;
    if !left.is_empty() {
        return Err(JailError::Check {
            action: "drop the jailer's supplementary groups",
            found: format!("{} left", left.len()),
        });
    }
    Ok(())
}

/// Writes our pid into each `cgroup.procs`: the child and everything under it is created inside
/// the sandbox's cgroups, and its cgroup namespace is rooted there.
pub(crate) fn join_cgroups(procs: &[PathBuf]) -> Result<(), JailError> {
    let pid = std::process::id().to_string();
    for path in procs {
        // No O_CREAT: a missing cgroup is the runtime's bug, not something to paper over.
        std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .and_then(|mut f| f.write_all(pid.as_bytes()))
            .path("join the cgroup", path)?;
    }
    Ok(())
}

/// Pins the jailer, and so the child and all it starts, to `cpus` (if any): glibc's `nproc`,
/// Python's `os.sched_getaffinity` and most thread pools size themselves from the affinity mask,
/// which the CPU quota alone leaves at every host CPU. A process in the sandbox may widen its
/// own mask again; the quota still bounds its CPU time, so that only spreads the same time
/// across more CPUs.
pub(crate) fn pin_cpus(cpus: &[u32]) -> Result<(), JailError> {
    if cpus.is_empty() {
        return Ok(());
    }
    let mut set = rustix::thread::CpuSet::new();
    for &cpu in cpus {
        // validate() bounds each number by CpuSet::MAX_CPU.
        set.set(cpu as usize);
    }
    rustix::thread::sched_setaffinity(None, &set).sys("pin the sandbox to its CPUs")
}

/// The agent's listening socket on the host. Removes the socket file again when dropped unless
/// [`AgentSocket::keep`] was called (a failed jail leaves nothing behind).
#[derive(Debug)]
pub(crate) struct AgentSocket {
    path: PathBuf,
    keep: bool,
}

impl AgentSocket {
    /// The jail started: the socket file belongs to the sandbox now.
    pub(crate) fn keep(mut self) {
        self.keep = true;
    }
}

impl Drop for AgentSocket {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Binds the agent's unix socket at `path` (mode 0600, backlog 128) and returns it with the
/// The agent's log file ([`JailSpec::log`]): created private, emptied, never followed if a
/// symlink.
pub(crate) fn open_log(path: &Path) -> Result<OwnedFd, JailError> {
    rustix::fs::open(
        path,
        OFlags::WRONLY | OFlags::CREATE | OFlags::TRUNC | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    )
    .path("open the agent's log", path)
}

/// guard that removes it on failure. A stale socket from an earlier run is replaced; anything
/// else at the path is an error, never deleted.
pub(crate) fn bind_agent_socket(path: &Path) -> Result<(OwnedFd, AgentSocket), JailError> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            std::fs::remove_file(path).path("remove the stale agent socket", path)?;
        }
        Ok(_) => {
            return Err(JailError::Check {
                action: "bind the agent socket",
                found: format!("{} exists and is not a socket", path.display()),
            });
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).path("inspect the agent socket path", path),
    }
    let listener = rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::CLOEXEC,
        None,
    )
    .sys("create the agent socket")?;
    let addr = SocketAddrUnix::new(path).path("bind the agent socket", path)?;
    // The umask keeps the socket file private from its creation on; chmod makes it exact.
    let umask = rustix::process::umask(Mode::from_raw_mode(0o177));
    let bound = rustix::net::bind(&listener, &addr);
    rustix::process::umask(umask);
    bound.path("bind the agent socket", path)?;
    let guard = AgentSocket {
        path: path.to_owned(),
        keep: false,
    };
    rustix::fs::chmod(path, Mode::from_raw_mode(0o600)).path("chmod the agent socket", path)?;
    rustix::net::listen(&listener, AGENT_BACKLOG).path("listen on the agent socket", path)?;
    Ok((listener, guard))
}

/// Opens the agent binary by `O_PATH` now: after pivot_root its host path is unreachable, and it
/// is executed by fd, never copied or mounted into the rootfs.
pub(crate) fn open_agent(path: &Path) -> Result<OwnedFd, JailError> {
    let fd = rustix::fs::open(path, OFlags::PATH | OFlags::CLOEXEC, Mode::empty())
        .path("open the agent binary", path)?;
    let stat = rustix::fs::fstat(&fd).path("stat the agent binary", path)?;
    if rustix::fs::FileType::from_raw_mode(stat.st_mode) != rustix::fs::FileType::RegularFile {
        return Err(JailError::Check {
            action: "open the agent binary",
            found: format!("{} is not a regular file", path.display()),
        });
    }
    Ok(fd)
}

/// The child while the jail is built: killed and reaped on drop unless [`Child::release`]d, so
/// a failed jail leaves no process behind.
#[derive(Debug)]
pub(crate) struct Child {
    pid: Pid,
    armed: bool,
}

impl Child {
    pub(crate) fn new(pid: Pid) -> Self {
        Child { pid, armed: true }
    }

    /// The agent runs: it is no longer ours to kill.
    pub(crate) fn release(mut self) {
        self.armed = false;
    }

    /// uid/gid maps of the child's user namespace: sandbox id 0 is host id `base`
    /// (user_namespaces(7)). `setgroups` is "deny" first (it can only be written before the gid
    /// map): no process of the sandbox can ever change its supplementary groups, so none can
    /// shed a group to get past a deny-by-group permission (CVE-2014-8989 class). The child
    /// starts with no groups (the jailer dropped them before the clone), so there is nothing
    /// it would need to drop either; commands the agent runs as other users get no groups.
    pub(crate) fn write_id_maps(&self, spec: &JailSpec) -> Result<(), JailError> {
        let pid = self.pid.as_raw_nonzero();
        let setgroups = PathBuf::from(format!("/proc/{pid}/setgroups"));
        std::fs::write(&setgroups, b"deny").path("write", &setgroups)?;
        for (file, base) in [("uid_map", spec.uid_base), ("gid_map", spec.gid_base)] {
            let path = PathBuf::from(format!("/proc/{pid}/{file}"));
            // One write(2): the kernel takes a map only whole, in a single write.
            std::fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .and_then(|mut f| f.write_all(id_map(base, spec.id_count).as_bytes()))
                .path("write", &path)?;
        }
        Ok(())
    }

    /// A detached, recursive copy of the rootfs mount, idmapped through the child's user
    /// namespace and nosuid,nodev (mount_setattr(2) MOUNT_ATTR_IDMAP). On disk files keep the
    /// image's ids 0..65535; in the sandbox they appear with those ids, and files the sandbox
    /// creates land on disk with them, so snapshots shared between sandboxes need no chown.
    /// Built here, in the host's user namespace, because only a namespace that owns the
    /// filesystem's superblock may idmap it; the child attaches it (runc ≥ 1.2 passes idmapped
    /// mount fds to the container's init the same way).
    /// A VMM root is shared by every vm-tier sandbox, so it is attached read-only.
    pub(crate) fn idmapped_rootfs(
        &self,
        rootfs: &Path,
        read_only: bool,
    ) -> Result<OwnedFd, JailError> {
        let extra = if read_only {
            MountAttrFlags::MOUNT_ATTR_RDONLY
        } else {
            MountAttrFlags::empty()
        };
        self.idmapped_tree(rootfs, true, extra)
            .map_err(|(action, source)| JailError::Path {
                action,
                path: rootfs.to_owned(),
                source,
            })
    }

    /// A detached copy of a volume's directory, idmapped and nosuid,nodev like the rootfs (and
    /// read-only if asked), built here for the same reason. Not recursive: nothing mounted
    /// beneath the volume on the host comes along. The host path is trusted (the runtime's),
    /// and a symlink as its last component is still not followed.
    pub(crate) fn idmapped_volume(&self, volume: &JailVolume) -> Result<OwnedFd, JailError> {
        self.idmapped_path(&volume.host_path, volume.read_only)
    }

    /// The same for any host directory or file of the runtime's: the sandbox's `/tmp`, a file
    /// bound over the rootfs's own.
    pub(crate) fn idmapped_path(&self, path: &Path, read_only: bool) -> Result<OwnedFd, JailError> {
        let extra = if read_only {
            MountAttrFlags::MOUNT_ATTR_RDONLY
        } else {
            MountAttrFlags::empty()
        };
        self.idmapped_tree(path, false, extra)
            .map_err(|(action, source)| JailError::Path {
                action,
                path: path.to_owned(),
                source,
            })
    }

    fn idmapped_tree(
        &self,
        path: &Path,
        recursive: bool,
        extra: MountAttrFlags,
    ) -> Result<OwnedFd, (&'static str, std::io::Error)> {
        let pid = self.pid.as_raw_nonzero();
        let ns_path = format!("/proc/{pid}/ns/user");
        let userns = rustix::fs::open(&ns_path, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())
            .map_err(|e| ("open the user namespace of the sandbox for", e.into()))?;
        let mut flags = OpenTreeFlags::OPEN_TREE_CLONE
            | OpenTreeFlags::OPEN_TREE_CLOEXEC
            | OpenTreeFlags::AT_SYMLINK_NOFOLLOW;
        if recursive {
            flags |= OpenTreeFlags::AT_RECURSIVE;
        }
        let tree = rustix::mount::open_tree(rustix::fs::CWD, path, flags)
            .map_err(|e| ("clone the mount of", e.into()))?;
        let attrs = MountAttrFlags::MOUNT_ATTR_IDMAP
            | MountAttrFlags::MOUNT_ATTR_NOSUID
            | MountAttrFlags::MOUNT_ATTR_NODEV
            | extra;
        sys::mount_setattr(
            tree.as_fd(),
            recursive,
            u64::from(attrs.bits()),
            Some(userns.as_fd()),
        )
        .map_err(|e| ("idmap the mount of", e))?;
        Ok(tree)
    }

    /// The report once the agent runs, or an error if the child is already gone.
    pub(crate) fn report(&self) -> Result<JailReport, JailError> {
        if let Some((_, status)) = rustix::process::waitpid(Some(self.pid), WaitOptions::NOHANG)
            .sys("check on the sandbox's init")?
        {
            return Err(JailError::Check {
                action: "start the agent",
                found: format!("it exited at once ({status:?})"),
            });
        }
        let pid = self.pid.as_raw_nonzero();
        let stat_path = PathBuf::from(format!("/proc/{pid}/stat"));
        let stat = std::fs::read_to_string(&stat_path).path("read", &stat_path)?;
        let start_time = start_time(&stat).ok_or_else(|| JailError::Check {
            action: "read the agent's start time",
            found: format!("unparsable {}", stat_path.display()),
        })?;
        Ok(JailReport {
            pid: pid.get().cast_unsigned(),
            start_time,
            landlock_abi: sys::landlock_abi(),
        })
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if self.armed {
            // PID 1 of its pid namespace: killing it kills everything in the namespace.
            let _ = rustix::process::kill_process(self.pid, Signal::KILL);
            let _ = rustix::process::waitpid(Some(self.pid), WaitOptions::empty());
        }
    }
}

/// One line of `uid_map`/`gid_map`: inside id 0 onwards maps to `base` onwards.
fn id_map(base: u32, count: u32) -> String {
    format!("0 {base} {count}\n")
}

/// Field 22 of `/proc/<pid>/stat` (start time in clock ticks since boot). The command name
/// (field 2) may hold spaces and parentheses, so fields are counted after the last ')'.
fn start_time(stat: &str) -> Option<u64> {
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    rest.split(' ').nth(19)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_maps_are_one_line() {
        assert_eq!(id_map(1 << 20, 65_536), "0 1048576 65536\n");
    }

    #[test]
    fn start_time_survives_odd_command_names() {
        let stat = "4242 (we ird) name)) S 1 4242 4242 0 -1 4194560 112 0 0 0 0 0 0 0 20 0 1 0 \
                    987654 1000 100 18446744073709551615";
        assert_eq!(start_time(stat), Some(987_654));
        let own = std::fs::read_to_string("/proc/self/stat").unwrap();
        assert!(start_time(&own).is_some());
        assert_eq!(start_time("garbage"), None);
    }

    #[test]
    fn the_agent_socket_is_private_and_removed_on_failure() {
        let dir = std::env::temp_dir().join(format!("warren-jail-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("agent.sock");
        std::fs::write(&path, b"not a socket").unwrap();
        assert!(
            bind_agent_socket(&path).is_err(),
            "a regular file is never deleted"
        );
        std::fs::remove_file(&path).unwrap();

        let (fd, guard) = bind_agent_socket(&path).unwrap();
        let meta = std::fs::symlink_metadata(&path).unwrap();
        assert!(meta.file_type().is_socket());
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777,
            0o600
        );
        drop(fd);
        // A stale socket is replaced.
        let (_fd, guard2) = bind_agent_socket(&path).unwrap();
        std::mem::forget(guard);
        drop(guard2);
        assert!(!path.exists(), "the guard removes the socket");
        std::fs::remove_dir(&dir).unwrap();
    }

    #[test]
    fn the_agent_must_be_a_regular_file() {
        assert!(open_agent(Path::new("/proc/self/exe")).is_ok());
        assert!(open_agent(Path::new("/")).is_err());
        assert!(open_agent(Path::new("/nonexistent/warren-agent")).is_err());
    }
}

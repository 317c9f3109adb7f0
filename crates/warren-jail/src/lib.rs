//! The jail: the ordered steps that turn a prepared sandbox (cgroups, rootfs subvolume, uid
//! range) into a confined process tree with `warren-agent` as PID 1.
//!
//! The runtime spawns `warren-jailer` with a [`JailSpec`] as JSON on stdin. The jailer binds the
//! agent's listening unix socket at `agent_socket`, hands it to the agent as fd 3
//! ([`AGENT_LISTEN_FD`]), prints a [`JailReport`] on stdout and exits 0; the agent it leaves
//! behind depends on neither the jailer nor the daemon, so sandboxes outlive both. On failure
//! the jailer prints one `failed to <verb> <object>: <cause>` line on stderr, exits non-zero and
//! leaves no process and no socket behind.
//!
//! [`run`] is the whole jail as one checklist, in the order of bubblewrap's `main()` and
//! nsjail's `containProc` (STYLE.md convention 10): the jailer's half on the host (steps 1 to
//! 6), the child's half in the new namespaces (7 to 17), then the jailer's wait for the child's
//! exec (18). The steps are numbered in comments here and in DESIGN.md, in the order they run.
//! Each step is a named function in `host` or `inside`; each order constraint is a comment at
//! the step. Unsafe code lives only in `sys`.

#[cfg(not(all(target_os = "linux", target_arch = "x86_64")))]
compile_error!("warren-jail supports x86_64 Linux only: its seccomp policy is x86_64's");

mod error;
mod host;
mod inside;
mod seccomp;
mod spec;
mod sync;
#[allow(unsafe_code)]
mod sys;
mod volume;

use std::convert::Infallible;
use std::os::fd::OwnedFd;
use std::panic::AssertUnwindSafe;

use error::Context;

pub use error::{JailError, one_line};
pub use inside::{AGENT_CAPABILITIES, VOLUME_MOUNT_POINT, shm_inodes};
pub use spec::{JailReport, JailSpec, LANDLOCK_REVIEWED_ABI, MIN_ID_BASE};
pub use volume::{
    JailFile, JailVolume, MAX_FILES, MAX_VOLUMES, check_files, check_volumes, mount_path_components,
};

/// The fd on which the agent finds its listening socket.
pub const AGENT_LISTEN_FD: i32 = 3;

/// The namespaces of a sandbox, created together by one clone(2) so the new user namespace owns
/// all the others (and the child holds every capability over them, and over nothing else).
const NAMESPACES: libc::c_int = libc::CLONE_NEWUSER
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNS
    | libc::CLONE_NEWNET
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWCGROUP;

/// Marks every descriptor this process inherited close-on-exec, so a program it starts (an LXCFS
/// it leaves running, a helper) holds none of them: a lock, a pipe or a socket of whoever
/// started the daemon would otherwise live on in its children. Call it first thing, before the
/// process opens anything of its own (stdio stays).
pub fn cloexec_inherited() -> std::io::Result<()> {
    sys::cloexec_from(3)
}

/// Builds the jail described by `spec` and starts the agent in it. Must run in a
/// single-threaded process with root on the host (the jailer).
pub fn run(spec: &JailSpec) -> Result<JailReport, JailError> {
    // Nothing below runs for an invalid spec: validation precedes every side effect.
    spec.validate()?;

    // 1. no_new_privs first (prctl(2) PR_SET_NO_NEW_PRIVS): nothing exec'd from here on,
    //    setuid binaries and file capabilities included, can gain privileges; it is inherited
    //    by the child and the agent. Then the cgroups, before the clone, so the child and all
    //    its descendants are charged to the sandbox and the cgroup namespace created below is
    //    rooted at the sandbox's cgroup (firecracker's jailer joins before chroot for the same
    //    reason).
    host::set_no_new_privs()?;
    //    No supplementary groups from here on: the child inherits the jailer's, and its user
    //    namespace will deny setgroups(2) (step 5).
    host::drop_supplementary_groups()?;
    host::join_cgroups(&spec.cgroup_procs)?;
    //    The CPUs the sandbox may count, inherited by the child like the cgroups.
    host::pin_cpus(&spec.cpus)?;
    // 2. The agent's listening socket, bound on the host (outside the rootfs), handed to the
    //    agent as fd 3. Removed again if any later step fails.
    let (listener, socket_file) = host::bind_agent_socket(&spec.agent_socket)?;
    // 3. The agent binary, by O_PATH fd: after pivot_root its host path is gone. It is
    //    executed by fd, never copied into or mounted in the rootfs.
    let agent = host::open_agent(&spec.agent_path)?;
    //    The agent's stderr, when the spec asks for one (a VMM supervisor's report).
    let log = spec.log.as_deref().map(host::open_log).transpose()?;

    // 4. The sync socket pair, then one clone into all new namespaces; the child is PID 1 of
    //    the new pid namespace and waits on the sync socket until the parent has set up its ids
    //    and rootfs (steps 5 and 6).
    let (parent_end, child_end) = sync::channel()?;
    let child = match sys::clone_fork(NAMESPACES).sys("clone into new namespaces")? {
        None => {
            drop(parent_end);
            jail_child(spec, child_end, listener, log, agent)
        }
        Some(pid) => host::Child::new(pid),
    };
    // Our copies: the child's end must close here so its exec shows as end of file.
    drop(child_end);
    drop(listener);
    drop(log);
    drop(agent);

    // 5. setgroups "deny", then the uid/gid maps, written by the privileged parent (see
    //    Child::write_id_maps). Before step 6: an idmapped mount needs a mapped namespace.
    child.write_id_maps(spec)?;
    // 6. The idmapped, nosuid, nodev rootfs mount, sent to the child as an fd.
    let rootfs = child.idmapped_rootfs(&spec.rootfs, spec.vmm)?;
    parent_end.send_rootfs(&rootfs)?;
    drop(rootfs);
    //    Then each volume, idmapped the same way (and read-only if asked), in the spec's order.
    for volume in &spec.volumes {
        let tree = child.idmapped_volume(volume)?;
        parent_end.send_volume(&tree)?;
    }
    //    Then the sandbox's own /tmp, and the files bound over the rootfs's.
    if let Some(tmp) = &spec.tmp {
        parent_end.send_volume(&child.idmapped_path(tmp, false)?)?;
    }
    for file in &spec.files {
        parent_end.send_volume(&child.idmapped_path(&file.host_path, file.read_only)?)?;
    }

    // 18. While the child runs steps 7 to 17, wait for its exec: end of file on the
    //     close-on-exec socket means the exec succeeded; a message is the child's error (and
    //     dropping `child` kills it).
    parent_end.wait_for_exec()?;
    let report = child.report()?;
    child.release();
    socket_file.keep();
    Ok(report)
}

/// The child's half: runs in the new namespaces, ends in the agent's exec, or reports its error
/// to the parent and exits. Never returns.
fn jail_child(
    spec: &JailSpec,
    mut sync: sync::ChildEnd,
    listener: OwnedFd,
    log: Option<OwnedFd>,
    agent: OwnedFd,
) -> ! {
    let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| {
        child_steps(spec, &mut sync, listener, log, agent)
    }));
    let message = match outcome {
        Ok(Ok(never)) => match never {},
        Ok(Err(err)) => error::one_line(&err),
        Err(_) => "failed to build the jail: the jailer panicked".to_owned(),
    };
    sync.report_failure(&message);
    sys::exit_now(1)
}

fn child_steps(
    spec: &JailSpec,
    sync: &mut sync::ChildEnd,
    listener: OwnedFd,
    log: Option<OwnedFd>,
    mut agent: OwnedFd,
) -> Result<Infallible, JailError> {
    // 7. Die with the jailer until the exec: if it is killed mid-way, nothing is left behind.
    inside::die_with_jailer()?;

    // 8. Wait for the maps and the rootfs mount, then become root of the new user namespace
    //    (host uid_base) with no groups (checked: setgroups is denied now), before any file
    //    is created. The credential change resets the parent death signal (credentials(7)),
    //    so it is set again, and the parent is checked once more in case it died in between.
    //    The rootfs's mount point is opened first, while the host path is still reachable.
    //    So is LXCFS's, when the sandbox gets its views.
    let root = sync.receive_rootfs()?;
    let volumes = inside::receive_volumes(sync, &spec.volumes)?;
    let own = inside::receive_own(sync, spec)?;
    let rootfs_target = inside::open_rootfs_target(&spec.rootfs)?;
    let lxcfs = spec.lxcfs.as_deref().map(inside::open_lxcfs).transpose()?;
    inside::become_sandbox_root()?;
    inside::die_with_jailer()?;
    if !sync.parent_alive()? {
        return Err(JailError::Check {
            action: "build the jail",
            found: "the jailer went away".into(),
        });
    }
    //    Mounts private first, so nothing below propagates to the host; then the idmapped
    //    rootfs goes over its own path in our mount namespace.
    inside::make_mounts_private()?;
    inside::attach_rootfs(&root, &rootfs_target, &spec.rootfs)?;
    drop(rootfs_target);

    // 9. Inside the new root, resolved through `root` without following the image's symlinks:
    //    /proc first, while the host's procfs is still visible (mount_too_revealing()), then
    //    its masks, then LXCFS's views over its memory, CPU and uptime files (and a read-only
    //    /sys with only LXCFS's CPU list; without LXCFS /sys stays as the image has it, no
    //    sysfs), then the minimal /dev.
    let proc = inside::mount_proc(&root)?;
    inside::mask_proc(&proc)?;
    if let Some(lxcfs) = &lxcfs {
        inside::mount_lxcfs(lxcfs, &proc, &root)?;
    }
    drop(lxcfs);
    inside::mount_dev(&root, spec.shm_bytes)?;
    drop(proc);
    //    The sandbox's own /tmp and files (resolver, machine id, names, trust store), then
    //    volumes last, so their mount points cannot lie on /proc or /dev (the walk refuses to
    //    cross a mount) as well as never following a symlink of the tenant's rootfs.
    inside::mount_own(&root, spec, own)?;
    inside::mount_volumes(&root, &spec.volumes, &volumes)?;
    drop(volumes);

    // 10. pivot_root and detach the old root: from here no host path is reachable.
    inside::pivot_into(&root)?;
    drop(root);

    // 11. The sandbox's own uts and net namespaces (needs CAP_SYS_ADMIN/NET_ADMIN there, so
    //     before step 13).
    inside::set_hostname(&spec.hostname)?;
    inside::bring_up_loopback()?;

    // 12. rlimits.
    inside::set_rlimits(spec)?;

    // 13. Capabilities: the agent keeps AGENT_CAPABILITIES, what it executes gets none.
    inside::restrict_capabilities(spec.vmm)?;

    // 14. Own session; stdio on /dev/null; the listener at fd 3; every other fd close-on-exec.
    //     The sync socket stays open (close-on-exec) to report errors until the exec.
    inside::new_session()?;
    inside::arrange_fds(listener, log, [&mut sync.0, &mut agent])?;

    // 15. Landlock, after the last mount (a Landlock domain may not change mounts) and before
    //     seccomp, which would deny the landlock syscalls' setup nothing but is kept last.
    inside::apply_landlock(&agent)?;

    // 16. The agent must outlive the jailer: clear the death signal, then seccomp last, right
    //     before the exec (bubblewrap: "the last thing before execve()").
    inside::clear_parent_death_signal()?;
    seccomp::install()?;

    // 17. Become the agent. Only returns on failure.
    Err(inside::exec_agent(&agent, &spec.agent_args))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inherited_descriptors_become_close_on_exec() {
        use rustix::fs::{Mode, OFlags};
        // Opened without O_CLOEXEC, as a descriptor inherited from a parent would be.
        let fd = rustix::fs::open("/dev/null", OFlags::RDONLY, Mode::empty()).unwrap();
        let flags = rustix::io::fcntl_getfd(&fd).unwrap();
        assert!(!flags.contains(rustix::io::FdFlags::CLOEXEC));
        cloexec_inherited().unwrap();
        let flags = rustix::io::fcntl_getfd(&fd).unwrap();
        assert!(flags.contains(rustix::io::FdFlags::CLOEXEC));
    }

    #[test]
    fn an_invalid_spec_fails_before_any_side_effect() {
        let spec = JailSpec {
            sandbox_id: "sb".into(),
            rootfs: "/nonexistent/rootfs".into(),
            agent_path: "/nonexistent/agent".into(),
            agent_socket: "/nonexistent/agent.sock".into(),
            uid_base: 0,
            gid_base: 1 << 20,
            id_count: 65_536,
            cgroup_procs: vec![],
            hostname: "sb".into(),
            shm_bytes: 1 << 20,
            nofile: 1024,
            nproc: 64,
            agent_args: vec![],
            lxcfs: None,
            cpus: vec![],
            volumes: vec![],
            tmp: None,
            files: vec![],
            vmm: false,
            log: None,
        };
        let err = run(&spec).unwrap_err();
        assert!(
            matches!(
                err,
                JailError::InvalidSpec {
                    field: "uid_base",
                    ..
                }
            ),
            "{err}"
        );
        // no_new_privs is the first side effect; it must not have happened.
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        assert!(
            status.contains("NoNewPrivs:\t0"),
            "validation must come first"
        );
    }
}

//! The only unsafe code of the jail: system calls that neither rustix nor the caps/landlock/
//! seccompiler crates wrap. Each function here is safe to call; the invariants each `unsafe`
//! block relies on are stated next to it, and checked at run time where that is possible.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, IntoRawFd, OwnedFd, RawFd};

use rustix::process::Pid;

/// `clone(flags | SIGCHLD)` with fork semantics: the child continues on a copy-on-write copy of
/// the caller's stack (bubblewrap's `raw_clone`). Returns the child's pid in the parent and
/// `None` in the child.
///
/// Refuses to run in a process with more than one thread: the child would inherit locks held
/// by threads that do not exist in it.
pub(crate) fn clone_fork(flags: libc::c_int) -> io::Result<Option<Pid>> {
    if flags & !NAMESPACE_FLAGS != 0 {
        return Err(io::Error::other("clone_fork takes namespace flags only"));
    }
    if thread_count()? != 1 {
        return Err(io::Error::other(
            "the jailer must be single-threaded to clone",
        ));
    }
    // SAFETY: a null child stack makes clone behave like fork: the child resumes here on a
    // copy-on-write copy of this stack. The process has exactly one thread (checked above), so
    // no lock (malloc's, stdio's) can be held by a thread missing from the child. The unused
    // pointer arguments (parent_tid, child_tid, tls) are only read with CLONE_PARENT_SETTID,
    // CLONE_CHILD_*TID or CLONE_SETTLS, which `flags` never carries (checked above).
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone,
            libc::c_ulong::from(flags.cast_unsigned())
                | libc::c_ulong::from(libc::SIGCHLD.cast_unsigned()),
            std::ptr::null_mut::<libc::c_void>(),
            std::ptr::null_mut::<libc::pid_t>(),
            std::ptr::null_mut::<libc::pid_t>(),
            0 as libc::c_ulong,
        )
    };
    match ret {
        -1 => Err(io::Error::last_os_error()),
        0 => Ok(None),
        pid => i32::try_from(pid)
            .ok()
            .and_then(Pid::from_raw)
            .map(Some)
            .ok_or_else(|| io::Error::other("clone returned an impossible pid")),
    }
}

/// The namespace flags `clone_fork` accepts; anything else (CLONE_VM, CLONE_SETTLS...) would
/// break its fork semantics. These are the sandbox's namespaces.
const NAMESPACE_FLAGS: libc::c_int = crate::NAMESPACES;

/// Threads of the calling process, from `/proc/self/stat` (field 20).
fn thread_count() -> io::Result<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    stat.rfind(')')
        .and_then(|i| stat.get(i + 2..))
        .and_then(|rest| rest.split(' ').nth(17))
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| io::Error::other("unreadable /proc/self/stat"))
}

/// `mount_setattr(fd, "", AT_EMPTY_PATH | extra_flags, {attr_set, userns_fd})`: changes the
/// attributes of the mount `fd` refers to (with `AT_RECURSIVE`, of its whole subtree).
pub(crate) fn mount_setattr(
    mount: BorrowedFd<'_>,
    recursive: bool,
    attr_set: u64,
    userns: Option<BorrowedFd<'_>>,
) -> io::Result<()> {
    let mut attr = libc::mount_attr {
        attr_set,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    if let Some(ns) = userns {
        attr.userns_fd = u64::try_from(ns.as_raw_fd()).map_err(io::Error::other)?;
    }
    let mut flags = libc::AT_EMPTY_PATH.cast_unsigned();
    if recursive {
        flags |= libc::AT_RECURSIVE.cast_unsigned();
    }
    // SAFETY: `mount` and `userns` are open fds borrowed for the call; the path is a valid,
    // NUL-terminated empty string; `attr` is a correctly laid out `struct mount_attr` (libc's
    // definition) whose exact size is passed, and the kernel only reads it.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            mount.as_raw_fd(),
            c"".as_ptr(),
            flags,
            &raw const attr,
            std::mem::size_of::<libc::mount_attr>(),
        )
    };
    if ret == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Sets IFF_UP on `lo` in the caller's network namespace (netdevice(7) SIOCSIFFLAGS).
pub(crate) fn loopback_up() -> io::Result<()> {
    let sock = rustix::net::socket_with(
        rustix::net::AddressFamily::INET,
        rustix::net::SocketType::DGRAM,
        rustix::net::SocketFlags::CLOEXEC,
        None,
    )?;
    // SAFETY: `ifreq` is plain old data (a name array and a union of integers and sockaddrs);
    // all-zero bytes are a valid value of it.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in ifr.ifr_name.iter_mut().zip(b"lo") {
        *dst = src.cast_signed();
    }
    // SAFETY: `sock` is an open socket; `ifr` is a valid ifreq whose NUL-terminated name is
    // "lo" (the rest of the array is zero). SIOCGIFFLAGS writes only ifr_ifru.ifru_flags.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &raw mut ifr) } == -1 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: SIOCGIFFLAGS succeeded, so the flags member is the initialized one of the union.
    let flags = unsafe { ifr.ifr_ifru.ifru_flags };
    let up = libc::c_short::try_from(libc::IFF_UP).map_err(io::Error::other)?;
    ifr.ifr_ifru.ifru_flags = flags | up;
    // SAFETY: as above; SIOCSIFFLAGS only reads the name and the flags.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &raw const ifr) } == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Removes every capability (0..=63) from the bounding set. The caps crate only knows the
/// capabilities of its release; indices the kernel does not have answer EINVAL and end the loop.
pub(crate) fn clear_bounding_set() -> io::Result<()> {
    for cap in 0..64 {
        match capbset_drop(cap) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => return Ok(()),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn capbset_drop(cap: libc::c_ulong) -> io::Result<()> {
    // SAFETY: PR_CAPBSET_DROP takes an integer argument and touches no caller memory.
    let ret = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) };
    if ret == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Marks every fd from `first` up close-on-exec (close_range(2) CLOSE_RANGE_CLOEXEC): whatever
/// the jail did not account for is closed by the exec, never inherited (CVE-2024-21626).
pub(crate) fn cloexec_from(first: u32) -> io::Result<()> {
    // SAFETY: CLOSE_RANGE_CLOEXEC only sets a flag on the fds in the range; nothing is closed,
    // so no owned fd is invalidated, and no memory is touched.
    let ret =
        unsafe { libc::close_range(first, u32::MAX, libc::CLOSE_RANGE_CLOEXEC.cast_signed()) };
    if ret == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Places `fd` at the number `target` without close-on-exec, consuming `fd`; the number is then
/// owned by nobody in this process (it is meant for the program about to be executed).
///
/// The caller must own every fd it still uses at numbers other than `target`: whatever is open
/// at `target` is closed. Fails if `target` is below 3 (stdio) to keep that promise local.
pub(crate) fn install_at(fd: OwnedFd, target: RawFd) -> io::Result<()> {
    if target < 3 {
        return Err(io::Error::other("refusing to install an fd over stdio"));
    }
    if fd.as_raw_fd() == target {
        rustix::io::fcntl_setfd(&fd, rustix::io::FdFlags::empty())?;
        // Leave it open for the exec.
        let _ = fd.into_raw_fd();
        return Ok(());
    }
    // SAFETY: dup2 only edits the fd table. `fd` is open for the call. The number `target` is
    // owned by no Rust object (contract above), so replacing it invalidates no OwnedFd.
    let ret = unsafe { libc::dup2(fd.as_raw_fd(), target) };
    if ret == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `execveat(fd, "", argv, envp, AT_EMPTY_PATH)`: runs the file `fd` refers to. Returns only on
/// failure.
pub(crate) fn execveat_fd(
    program: BorrowedFd<'_>,
    argv: &[CString],
    envp: &[CString],
) -> io::Error {
    let mut argv_ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    argv_ptrs.push(std::ptr::null());
    let mut envp_ptrs: Vec<*const libc::c_char> = envp.iter().map(|e| e.as_ptr()).collect();
    envp_ptrs.push(std::ptr::null());
    // SAFETY: `program` is an open fd for the call; the path is a valid empty C string (with
    // AT_EMPTY_PATH the fd itself is executed); `argv_ptrs` and `envp_ptrs` are NULL-terminated
    // arrays of pointers into CStrings that outlive the call.
    unsafe {
        libc::syscall(
            libc::SYS_execveat,
            program.as_raw_fd(),
            c"".as_ptr(),
            argv_ptrs.as_ptr(),
            envp_ptrs.as_ptr(),
            libc::AT_EMPTY_PATH,
        );
    }
    io::Error::last_os_error()
}

/// The Landlock ABI version of the running kernel, from
/// `landlock_create_ruleset(NULL, 0, LANDLOCK_CREATE_RULESET_VERSION)`; 0 when the kernel was
/// built without Landlock or boots with it disabled. The landlock crate keeps this private.
pub(crate) fn landlock_abi() -> u32 {
    const LANDLOCK_CREATE_RULESET_VERSION: libc::c_uint = 1;
    // SAFETY: with LANDLOCK_CREATE_RULESET_VERSION the kernel requires a null attribute pointer
    // and size 0, reads no memory, and returns the version or -1 with errno.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0_usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    u32::try_from(ret).unwrap_or(0)
}

/// Ends the calling process at once with `code`, without unwinding or atexit handlers: in the
/// cloned child those belong to the parent's copy of the state.
pub(crate) fn exit_now(code: i32) -> ! {
    // SAFETY: _exit takes an integer, never returns and is async-signal-safe.
    unsafe { libc::_exit(code) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_test_process_counts_its_threads() {
        assert!(thread_count().unwrap() >= 1);
    }

    #[test]
    fn clone_fork_takes_namespace_flags_only() {
        let err = clone_fork(libc::CLONE_VM).unwrap_err();
        assert!(err.to_string().contains("namespace flags only"), "{err}");
    }

    #[test]
    fn install_at_refuses_stdio() {
        let (a, _b) = rustix::pipe::pipe().unwrap();
        assert!(install_at(a, 1).is_err());
    }
}

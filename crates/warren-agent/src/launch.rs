//! Starting a command without copying the agent: `clone(CLONE_VM | CLONE_VFORK)`, as glibc's
//! `posix_spawn` does, with the steps `posix_spawn` cannot take (a user switch, the PTY as
//! controlling terminal, the ownership filter).
//!
//! Why not `fork`: it copies the agent's page tables and write-protects every page the agent
//! has, so the child and then the agent's own threads fault on their next writes, and the exec
//! tears the copy down again. Under a shadow-paging hypervisor each of those faults is a trip
//! to the host. `std`'s `Command` forks whenever a `pre_exec` hook is set, which the user switch
//! needs; hence this module, written by hand.
//!
//! The child runs on a stack of its own inside the agent's memory while the calling thread
//! waits (the kernel resumes it once the child has exec'd or exited). Other threads of the agent
//! keep running beside it, so the child follows the rules of a vfork child: no allocation, no
//! locks, no glibc state; only system calls on data the parent prepared. It reports a failure
//! by writing the errno into that shared data before it exits.

use std::cell::UnsafeCell;
use std::ffi::{CString, c_char, c_int, c_void};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::ptr;
use std::sync::Mutex;

use rustix::io::Errno;
use rustix::mm::{MapFlags, MprotectFlags, ProtFlags};
use rustix::process::{Gid, Uid};

/// The child's stack: it installs a seccomp filter and makes a few calls, a few KiB at most.
const STACK_LEN: usize = 256 * 1024;
/// A never-mapped page below the stack, so an overflow faults instead of writing into the
/// agent's memory.
const GUARD_LEN: usize = 4096;
/// glibc's `execvp` path when the environment has no `PATH`.
const FALLBACK_PATH: &[u8] = b"/bin:/usr/bin";

/// What to start, and how. Every descriptor may be close-on-exec: the child duplicates the
/// three stdio ones onto 0, 1 and 2.
#[derive(Debug)]
pub(crate) struct Launch<'a> {
    pub(crate) argv: &'a [String],
    pub(crate) env: &'a [(String, String)],
    pub(crate) cwd: &'a Path,
    pub(crate) stdio: [BorrowedFd<'a>; 3],
    /// Make stdin the controlling terminal of the new session.
    pub(crate) ctty: bool,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    pub(crate) groups: &'a [u32],
    /// False when the user namespace denies `setgroups`.
    pub(crate) set_groups: bool,
    /// A root command's ownership handoff socket (see [`crate::ownership`]).
    pub(crate) handoff: Option<RawFd>,
}

/// Where a failed launch stopped; the errno of the first failure comes with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Stdio,
    Session,
    Credentials,
    Cwd,
    Exec,
}

/// Everything the child reads, laid out before the clone, and the slot it reports into.
struct Child {
    candidates: Vec<CString>,
    argv: Vec<*const c_char>,
    /// `/bin/sh <candidate> <args>`: glibc's `execvp` fallback for a file the kernel will not
    /// execute (a script without `#!`); slot 1 is filled in by the child.
    sh_argv: UnsafeCell<Vec<*const c_char>>,
    envp: Vec<*const c_char>,
    stdio: [RawFd; 3],
    ctty: bool,
    set_groups: bool,
    groups: Vec<Gid>,
    uid: Uid,
    gid: Gid,
    cwd: CString,
    handoff: Option<RawFd>,
    failed: UnsafeCell<Option<(Stage, i32)>>,
}

/// A mapped stack with its guard page, kept between launches: mapping and unmapping one per
/// command would cost a TLB shootdown across the agent's threads each time.
struct Stack {
    base: *mut c_void,
}

// SAFETY: the mapping is owned by the `STACK` mutex and only used by the thread holding it.
unsafe impl Send for Stack {}

static STACK: Mutex<Option<Stack>> = Mutex::new(None);

impl Stack {
    fn map() -> io::Result<Self> {
        // SAFETY: a fresh anonymous mapping at an address of the kernel's choosing aliases
        // nothing; it is only ever unmapped by `Drop`.
        let base = unsafe {
            rustix::mm::mmap_anonymous(
                ptr::null_mut(),
                GUARD_LEN + STACK_LEN,
                ProtFlags::empty(),
                MapFlags::PRIVATE | MapFlags::NORESERVE,
            )
        }?;
        let stack = Self { base };
        // SAFETY: the range lies inside the mapping just made and holds no Rust object.
        unsafe {
            rustix::mm::mprotect(
                base.cast::<u8>().add(GUARD_LEN).cast(),
                STACK_LEN,
                MprotectFlags::READ | MprotectFlags::WRITE,
            )
        }?;
        Ok(stack)
    }

    fn top(&self) -> *mut c_void {
        // SAFETY: one past the end of the mapping, which the stack grows down from; the length
        // is a multiple of the page size, so the top is 16-byte aligned as the ABI asks.
        unsafe { self.base.cast::<u8>().add(GUARD_LEN + STACK_LEN).cast() }
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        // SAFETY: `base` is this object's own mapping and no child runs on it any more (the
        // launch that used it waited for the exec).
        let _ = unsafe { rustix::mm::munmap(self.base, GUARD_LEN + STACK_LEN) };
    }
}

fn cstring(bytes: &[u8], what: &str) -> io::Result<CString> {
    CString::new(bytes)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, format!("{what} contains NUL")))
}

/// The files `execvp` would try for `program` with this `PATH`, in order.
fn candidates(program: &str, path: Option<&str>) -> io::Result<Vec<CString>> {
    if program.contains('/') {
        return Ok(vec![cstring(program.as_bytes(), "program")?]);
    }
    let path = path.map_or(FALLBACK_PATH, str::as_bytes);
    path.split(|&b| b == b':')
        .map(|dir| {
            // An empty element is the working directory, as in glibc.
            let mut full = dir.to_vec();
            if !full.is_empty() {
                full.push(b'/');
            }
            full.extend_from_slice(program.as_bytes());
            cstring(&full, "PATH")
        })
        .collect()
}

/// A NUL-terminated pointer array over `strings`, which must outlive it.
fn pointers(strings: &[CString]) -> Vec<*const c_char> {
    strings
        .iter()
        .map(|s| s.as_ptr())
        .chain(std::iter::once(ptr::null()))
        .collect()
}

/// Starts the command and returns its pid once it has exec'd.
pub(crate) fn launch(req: &Launch<'_>) -> io::Result<u32> {
    let (program, _) = req
        .argv
        .split_first()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "empty argv"))?;
    let path = req
        .env
        .iter()
        .rev()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.as_str());
    let args: Vec<CString> = req
        .argv
        .iter()
        .map(|a| cstring(a.as_bytes(), "argument"))
        .collect::<io::Result<_>>()?;
    let env: Vec<CString> = req
        .env
        .iter()
        .map(|(k, v)| cstring(format!("{k}={v}").as_bytes(), "environment"))
        .collect::<io::Result<_>>()?;
    let sh = c"/bin/sh";
    let mut sh_argv = vec![sh.as_ptr(), ptr::null()];
    sh_argv.extend(args.iter().skip(1).map(|a| a.as_ptr()));
    sh_argv.push(ptr::null());
    // Descriptors below 3 would be overwritten by the child's own dup2 onto 0..2 before they
    // are used (the stdio sources, and the handoff socket the child sends through after); any
    // such one is moved up first (only possible if the agent's stdio is closed).
    let mut moved: Vec<OwnedFd> = Vec::new();
    let mut above_stdio = |fd: BorrowedFd<'_>| -> io::Result<RawFd> {
        if fd.as_raw_fd() >= 3 {
            return Ok(fd.as_raw_fd());
        }
        let up = rustix::io::fcntl_dupfd_cloexec(fd, 3)?;
        let raw = up.as_raw_fd();
        moved.push(up);
        Ok(raw)
    };
    let mut stdio = [0; 3];
    for (slot, fd) in stdio.iter_mut().zip(req.stdio) {
        *slot = above_stdio(fd)?;
    }
    // SAFETY: the caller's descriptor, open for the whole launch.
    let handoff = req
        .handoff
        .map(|fd| above_stdio(unsafe { BorrowedFd::borrow_raw(fd) }))
        .transpose()?;
    let mut child = Child {
        candidates: candidates(program, path)?,
        argv: pointers(&args),
        sh_argv: UnsafeCell::new(sh_argv),
        envp: pointers(&env),
        stdio,
        ctty: req.ctty,
        set_groups: req.set_groups,
        groups: req.groups.iter().map(|&g| Gid::from_raw(g)).collect(),
        uid: Uid::from_raw(req.uid),
        gid: Gid::from_raw(req.gid),
        cwd: cstring(req.cwd.as_os_str().as_bytes(), "working directory")?,
        handoff,
        failed: UnsafeCell::new(None),
    };

    let mut stack = STACK
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if stack.is_none() {
        *stack = Some(Stack::map()?);
    }
    let top = stack.as_ref().map_or(ptr::null_mut(), Stack::top);
    let pid = with_signals_blocked(|| {
        // SAFETY: `child_main` runs on the reserved stack, in the agent's memory (CLONE_VM),
        // and only reads `child` and writes its `failed` and `sh_argv` cells; CLONE_VFORK
        // keeps this thread, and so `child` and the stack lock, in place until it has exec'd
        // or exited. Signals are blocked across the call so no handler of the agent's runs on
        // the child's stack before it resets them.
        unsafe {
            libc::clone(
                child_main,
                top,
                libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
                ptr::from_ref(&child).cast_mut().cast(),
            )
        }
    })?;
    drop(stack);
    drop(moved);
    if let Some((stage, errno)) = *child.failed.get_mut() {
        // It has exited already; take its status unless the agent's reaper was quicker.
        let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None);
        let err = io::Error::from_raw_os_error(errno);
        let step = match stage {
            Stage::Exec => return Err(err),
            Stage::Stdio => "setting up stdio",
            Stage::Session => "starting a session",
            Stage::Credentials => "switching to the user",
            Stage::Cwd => "entering the working directory",
        };
        return Err(io::Error::new(err.kind(), format!("{step}: {err}")));
    }
    u32::try_from(pid).map_err(|_| io::Error::other("clone returned a negative pid"))
}

/// Runs `f` with every signal blocked on this thread, and restores the mask after.
fn with_signals_blocked(f: impl FnOnce() -> c_int) -> io::Result<c_int> {
    use nix::sys::signal::{SigSet, SigmaskHow, pthread_sigmask};
    let mut old = SigSet::empty();
    pthread_sigmask(
        SigmaskHow::SIG_SETMASK,
        Some(&SigSet::all()),
        Some(&mut old),
    )?;
    let r = f();
    // Capture clone's errno before the mask call can change it.
    let err = (r < 0).then(io::Error::last_os_error);
    pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&old), None)?;
    match err {
        Some(e) => Err(e),
        None => Ok(r),
    }
}

/// The child, between clone and exec.
extern "C" fn child_main(arg: *mut c_void) -> c_int {
    // SAFETY: `arg` is the parent's `Child`, alive and unmoved while the parent waits.
    let child = unsafe { &*arg.cast::<Child>() };
    let (stage, errno) = match prepare(child) {
        Ok(()) => exec(child),
        Err(failure) => failure,
    };
    // SAFETY: the parent reads the slot only after this process has exec'd or exited.
    unsafe { *child.failed.get() = Some((stage, errno.raw_os_error())) };
    127
}

/// Signals, stdio, session, credentials and working directory, then the ownership filter.
fn prepare(child: &Child) -> Result<(), (Stage, Errno)> {
    reset_signals();
    let fail = |stage| move |e| (stage, e);
    // SAFETY: dup2 onto the standard descriptors of this process; the sources are open for the
    // whole launch and none of them is 0, 1 or 2 (see `launch`).
    unsafe {
        let [i, o, e] = child.stdio.map(|fd| BorrowedFd::borrow_raw(fd));
        rustix::stdio::dup2_stdin(i).map_err(fail(Stage::Stdio))?;
        rustix::stdio::dup2_stdout(o).map_err(fail(Stage::Stdio))?;
        rustix::stdio::dup2_stderr(e).map_err(fail(Stage::Stdio))?;
    }
    // Nothing but 0, 1 and 2 survives the exec, even a descriptor the agent inherited without
    // close-on-exec. Marking rather than closing keeps the handoff socket until the filter is
    // sent. Best effort: kernels before 5.11 lack the flag, and the agent's own are marked.
    // SAFETY: close_range takes no pointers; it changes only this process's descriptor table.
    unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3u32,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        );
    }
    rustix::process::setsid().map_err(fail(Stage::Session))?;
    if child.ctty {
        rustix::process::ioctl_tiocsctty(rustix::stdio::stdin()).map_err(fail(Stage::Session))?;
    }
    if child.set_groups {
        rustix::thread::set_thread_groups(&child.groups).map_err(fail(Stage::Credentials))?;
    }
    rustix::thread::set_thread_res_gid(child.gid, child.gid, child.gid)
        .map_err(fail(Stage::Credentials))?;
    rustix::thread::set_thread_res_uid(child.uid, child.uid, child.uid)
        .map_err(fail(Stage::Credentials))?;
    rustix::process::chdir(child.cwd.as_c_str()).map_err(fail(Stage::Cwd))?;
    if let Some(fd) = child.handoff {
        crate::ownership::install_in_child(fd);
    }
    Ok(())
}

// The layout below is the kernel's on these two; others (riscv64) have no `sa_restorer`.
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
compile_error!("launch.rs: check the kernel's struct sigaction layout for this architecture");

/// The kernel's `struct sigaction` (x86-64 and arm64 both carry `sa_restorer`), for the raw
/// calls: glibc's wrapper refuses its two internal signals, which a command must get back at
/// their default too.
#[repr(C)]
struct KernelSigaction {
    handler: usize,
    flags: u64,
    restorer: usize,
    mask: u64,
}

/// Every signal back to its default disposition, then an empty mask. A caught one would run
/// the agent's handler, in the agent's memory, if it arrived before exec; an ignored one (the
/// agent ignores SIGPIPE; others may come from whatever started the agent) would stay ignored
/// in the command, which should start as from a fresh login.
fn reset_signals() {
    let default = KernelSigaction {
        handler: 0,
        flags: 0,
        restorer: 0,
        mask: 0,
    };
    for sig in 1..=64 {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        let mut old = KernelSigaction {
            handler: 0,
            flags: 0,
            restorer: 0,
            mask: 0,
        };
        // SAFETY: rt_sigaction reads and writes the stack-local structs above, whose layout is
        // the kernel's; the mask size is the kernel's eight bytes.
        unsafe {
            let queried = libc::syscall(
                libc::SYS_rt_sigaction,
                sig,
                ptr::null::<KernelSigaction>(),
                &raw mut old,
                8usize,
            );
            if queried == 0 && old.handler != 0 {
                libc::syscall(
                    libc::SYS_rt_sigaction,
                    sig,
                    &raw const default,
                    ptr::null_mut::<KernelSigaction>(),
                    8usize,
                );
            }
        }
    }
    let empty: u64 = 0;
    // SAFETY: rt_sigprocmask reads eight bytes of mask from the stack; the raw call leaves
    // glibc's view of the mask, which this process drops at exec, alone.
    unsafe {
        libc::syscall(
            libc::SYS_rt_sigprocmask,
            libc::SIG_SETMASK,
            &raw const empty,
            ptr::null_mut::<u64>(),
            8usize,
        );
    }
}

/// Tries each candidate as `execvp` does: an unreadable or missing one is skipped, a file the
/// kernel cannot execute is run by `/bin/sh`. Returns only on failure.
fn exec(child: &Child) -> (Stage, Errno) {
    let mut denied = false;
    let mut last = Errno::NOENT;
    for file in &child.candidates {
        // SAFETY: NUL-terminated arrays of pointers to C strings, all owned by the parent.
        unsafe { libc::execve(file.as_ptr(), child.argv.as_ptr(), child.envp.as_ptr()) };
        let mut e = Errno::from_raw_os_error(errno());
        if e == Errno::NOEXEC {
            // SAFETY: the parent does not touch `sh_argv` until this process is gone; slot 1
            // exists (the array is at least `sh`, slot, NULL).
            unsafe {
                let argv = &mut *child.sh_argv.get();
                argv[1] = file.as_ptr();
                libc::execve(argv[0], argv.as_ptr(), child.envp.as_ptr());
            }
            // Judged like any failure, as glibc does: a missing /bin/sh moves on.
            e = Errno::from_raw_os_error(errno());
        }
        match e {
            Errno::ACCESS => denied = true,
            Errno::NOENT | Errno::NOTDIR | Errno::STALE | Errno::NODEV | Errno::TIMEDOUT => {}
            _ => return (Stage::Exec, e),
        }
        last = e;
    }
    (Stage::Exec, if denied { Errno::ACCESS } else { last })
}

/// The calling thread's errno (in the child: the suspended parent thread's slot, which it does
/// not read until it resumes and which any of its own calls overwrite).
fn errno() -> i32 {
    io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_follow_execvp() {
        let c = |p, path| {
            candidates(p, path)
                .unwrap()
                .into_iter()
                .map(|s| s.into_string().unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(c("/bin/sh", Some("/x")), ["/bin/sh"]);
        assert_eq!(c("./run", Some("/x")), ["./run"]);
        assert_eq!(c("ls", Some("/a:/b")), ["/a/ls", "/b/ls"]);
        assert_eq!(c("ls", Some("/a::/b")), ["/a/ls", "ls", "/b/ls"]);
        assert_eq!(c("ls", None), ["/bin/ls", "/usr/bin/ls"]);
        assert!(candidates("a\0b", None).is_err());
    }

    #[test]
    fn stack_has_a_guard_and_a_writable_top() {
        let s = Stack::map().unwrap();
        assert_eq!(s.top() as usize % 16, 0);
        // SAFETY: the byte just below the top is inside the read-write part of the mapping.
        unsafe {
            let byte = s.top().cast::<u8>().sub(1);
            byte.write(7);
            assert_eq!(byte.read(), 7);
        }
    }
}

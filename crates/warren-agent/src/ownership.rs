//! File ownership for the sandbox's root, made by the agent on its behalf.
//!
//! Commands hold no capabilities (the jail's first promise: every capability set of a command
//! is zero), so the sandbox's root can neither give a file away (`chown`) nor change the mode of
//! a file it does not own. Debian packages that add a system user need both: `adduser` gives
//! `/etc/gshadow` its group, `dpkg-statoverride` hands `/var/lib/redis` to `redis` and sets its
//! mode. The agent keeps CAP_CHOWN and CAP_FOWNER in the sandbox's user namespace, so a root
//! command starts under one more seccomp filter that sends its `chown` and `chmod` family calls
//! to the agent (`SECCOMP_RET_USER_NOTIF`), and the agent makes each call itself, resolved from
//! the caller's own working directory or descriptor. Calls from other users continue into the
//! kernel untouched. The kernel still refuses any id or file that is not mapped into the
//! sandbox's namespace, so nothing outside the sandbox can be reached this way.
//!
//! Written by hand because no maintained crate supervises seccomp notifications; the unsafe
//! parts are the filter install (in the command's process, before exec) and three ioctls on
//! the listener.

// Seccomp hands over raw 64-bit registers; the kernel reads an `int` fd, a `uid_t` or a
// `mode_t` out of them by truncation, and so must this module. BPF fields are 8 and 16 bits.
#![allow(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::cast_possible_wrap
)]

use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};

use nix::poll::{PollFd, PollFlags};
use rustix::fs::{AtFlags, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;
use rustix::net::{
    AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags, SocketFlags, SocketType,
};
use rustix::process::{Gid, Uid};

const AT_FDCWD: i32 = -100;
const AT_SYMLINK_NOFOLLOW: u64 = 0x100;
const AT_EMPTY_PATH: u64 = 0x1000;
const PATH_MAX: usize = 4096;
/// EM_X86_64 | __AUDIT_ARCH_64BIT | __AUDIT_ARCH_LE (linux/audit.h).
const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;

/// The calls sent to the agent.
const SYSCALLS: [i64; 8] = [
    libc::SYS_chown,
    libc::SYS_fchown,
    libc::SYS_lchown,
    libc::SYS_fchownat,
    libc::SYS_chmod,
    libc::SYS_fchmod,
    libc::SYS_fchmodat,
    libc::SYS_fchmodat2,
];

const fn stmt(code: u32, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    }
}

const fn jeq(k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter {
        code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
        jt,
        jf,
        k,
    }
}

const LOAD_ARCH: libc::sock_filter = stmt(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, 4);
const LOAD_NR: libc::sock_filter = stmt(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, 0);
const ALLOW: libc::sock_filter = stmt(libc::BPF_RET | libc::BPF_K, libc::SECCOMP_RET_ALLOW);
const NOTIFY: libc::sock_filter = stmt(libc::BPF_RET | libc::BPF_K, libc::SECCOMP_RET_USER_NOTIF);

/// Index of `ALLOW` in `PROGRAM`; `NOTIFY` follows it.
const ALLOW_AT: usize = 3 + SYSCALLS.len();

/// A foreign architecture is allowed here: the jail's own filter kills it before this one
/// matters, and the numbers below are x86_64's.
const fn program() -> [libc::sock_filter; ALLOW_AT + 2] {
    let mut p = [ALLOW; ALLOW_AT + 2];
    p[0] = LOAD_ARCH;
    p[1] = jeq(AUDIT_ARCH_X86_64, 0, (ALLOW_AT - 2) as u8);
    p[2] = LOAD_NR;
    let mut i = 0;
    while i < SYSCALLS.len() {
        let at = 3 + i;
        p[at] = jeq(SYSCALLS[i] as u32, (ALLOW_AT - at) as u8, 0);
        i += 1;
    }
    p[ALLOW_AT] = ALLOW;
    p[ALLOW_AT + 1] = NOTIFY;
    p
}

static PROGRAM: [libc::sock_filter; ALLOW_AT + 2] = program();

/// The socket pair a root command's listener comes back through: the child installs the
/// filter between clone and exec and sends the listener over `child`.
#[derive(Debug)]
pub(crate) struct Handoff {
    parent: OwnedFd,
    child: OwnedFd,
}

impl Handoff {
    pub(crate) fn new() -> io::Result<Self> {
        let (parent, child) = rustix::net::socketpair(
            AddressFamily::UNIX,
            SocketType::DGRAM,
            SocketFlags::CLOEXEC,
            None,
        )?;
        Ok(Self { parent, child })
    }

    /// The descriptor the child sends through; close-on-exec, so the command never has it.
    pub(crate) fn child_fd(&self) -> RawFd {
        self.child.as_raw_fd()
    }

    /// The listener the child sent, once the command has been exec'd. `None` when the child
    /// could not install the filter: the command then runs, only without the emulation.
    pub(crate) fn receive(self) -> Option<OwnedFd> {
        drop(self.child);
        let mut byte = [0u8; 1];
        let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(1))];
        let mut control = RecvAncillaryBuffer::new(&mut space);
        rustix::net::recvmsg(
            &self.parent,
            &mut [io::IoSliceMut::new(&mut byte)],
            &mut control,
            RecvFlags::DONTWAIT | RecvFlags::CMSG_CLOEXEC,
        )
        .ok()?;
        control.drain().find_map(|m| match m {
            RecvAncillaryMessage::ScmRights(mut fds) => fds.next(),
            _ => None,
        })
    }
}

/// In the child, right before exec: installs the filter and sends its listener to the
/// agent, then closes the child's copy (a command holding its own listener could answer for
/// itself). Errors are ignored: the command still runs as it would without the emulation.
///
/// Only raw system calls, on buffers that live on the stack: this runs between clone and exec,
/// in the agent's memory ([`crate::launch`]).
pub(crate) fn install_in_child(child: RawFd) {
    let prog = libc::sock_fprog {
        len: PROGRAM.len() as u16,
        filter: PROGRAM.as_ptr().cast_mut(),
    };
    // SAFETY: seccomp(2) reads `prog` and the static program it points to, both alive for the
    // call; the kernel copies the program. It returns a new descriptor or -1, nothing else.
    let listener = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            libc::SECCOMP_FILTER_FLAG_NEW_LISTENER,
            &prog as *const libc::sock_fprog,
        )
    };
    let Ok(listener) = RawFd::try_from(listener) else {
        return;
    };
    if listener < 0 {
        return;
    }
    // SAFETY: the kernel just returned this descriptor and nothing else refers to it; the
    // OwnedFd closes it when this function returns. `child` stays open until exec.
    let (listener, child) = unsafe {
        (
            <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(listener),
            BorrowedFd::borrow_raw(child),
        )
    };
    let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    let fds = [listener.as_fd()];
    if control.push(SendAncillaryMessage::ScmRights(&fds)) {
        let _ = rustix::net::sendmsg(
            child,
            &[io::IoSlice::new(b"L")],
            &mut control,
            SendFlags::empty(),
        );
    }
}

/// Answers one command's notifications until every process under its filter is gone.
pub(crate) async fn supervise(listener: OwnedFd) {
    // SAFETY: the OwnedFd is open for as long as it lives and the AsyncFd owns it, so nothing
    // can close or replace the descriptor underneath the reactor.
    let Ok(listener) = (unsafe { tokio::io::unix::AsyncFd::register(listener) }) else {
        return;
    };
    loop {
        let Ok(mut guard) = listener.readable().await else {
            return;
        };
        // Readiness can be stale; RECV blocks when nothing is pending, so ask the kernel.
        let revents = poll_now(listener.get_ref().as_fd());
        if revents.contains(PollFlags::POLLIN) {
            if let Some(n) = recv(listener.get_ref().as_fd()) {
                let answer = answer(listener.get_ref().as_fd(), &n);
                send(listener.get_ref().as_fd(), n.id, answer);
            }
            continue;
        }
        if revents.intersects(PollFlags::POLLHUP | PollFlags::POLLERR) {
            return;
        }
        guard.clear_ready();
    }
}

fn poll_now(fd: BorrowedFd<'_>) -> PollFlags {
    let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
    match nix::poll::poll(&mut fds, nix::poll::PollTimeout::ZERO) {
        Ok(_) => fds[0].revents().unwrap_or(PollFlags::POLLERR),
        Err(_) => PollFlags::POLLERR,
    }
}

fn recv(listener: BorrowedFd<'_>) -> Option<libc::seccomp_notif> {
    // SAFETY: an all-zero seccomp_notif is valid (plain integers) and RECV requires it zeroed.
    let mut n: libc::seccomp_notif = unsafe { std::mem::zeroed() };
    // SAFETY: RECV writes one seccomp_notif into `n`, which is exactly that size and alive.
    let rc = unsafe {
        libc::ioctl(
            listener.as_raw_fd(),
            libc::SECCOMP_IOCTL_NOTIF_RECV,
            &mut n as *mut libc::seccomp_notif,
        )
    };
    (rc == 0).then_some(n)
}

/// The answer to one notification.
#[derive(Debug, PartialEq, Eq)]
enum Answer {
    /// Let the kernel run the call as the caller made it.
    Continue,
    /// The call's result: 0 or an errno.
    Done(Result<(), Errno>),
}

fn send(listener: BorrowedFd<'_>, id: u64, answer: Answer) {
    let (error, flags) = match answer {
        Answer::Continue => (0, libc::SECCOMP_USER_NOTIF_FLAG_CONTINUE as u32),
        Answer::Done(Ok(())) => (0, 0),
        Answer::Done(Err(e)) => (-e.raw_os_error(), 0),
    };
    let mut resp = libc::seccomp_notif_resp {
        id,
        val: 0,
        error,
        flags,
    };
    // SAFETY: SEND reads one seccomp_notif_resp from `resp`, which is alive and initialised.
    // ENOENT (the caller died meanwhile) needs nothing done.
    unsafe {
        libc::ioctl(
            listener.as_raw_fd(),
            libc::SECCOMP_IOCTL_NOTIF_SEND,
            &mut resp as *mut libc::seccomp_notif_resp,
        );
    }
}

/// Whether the notification is still pending, i.e. `pid` is still the task that made it.
fn still_pending(listener: BorrowedFd<'_>, id: u64) -> bool {
    let mut id = id;
    // SAFETY: ID_VALID reads one u64 from `id`, which is alive.
    unsafe {
        libc::ioctl(
            listener.as_raw_fd(),
            libc::SECCOMP_IOCTL_NOTIF_ID_VALID,
            &mut id as *mut u64,
        ) == 0
    }
}

/// A decoded call.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Call {
    Chown {
        at: At,
        uid: Option<u32>,
        gid: Option<u32>,
    },
    Chmod {
        at: At,
        mode: u32,
    },
}

/// Where a call's file is: a descriptor of the caller's (its cwd for AT_FDCWD), and a path in
/// the caller's memory relative to it (none for `fchown`/`fchmod` and AT_EMPTY_PATH with "").
#[derive(Debug, Clone, PartialEq, Eq)]
struct At {
    dirfd: i32,
    path: Option<u64>,
    follow: bool,
    empty_path: bool,
}

fn id_arg(a: u64) -> Option<u32> {
    match a as u32 {
        u32::MAX => None,
        id => Some(id),
    }
}

fn decode(nr: i64, args: &[u64; 6]) -> Option<Call> {
    let path = |dirfd: i32, addr: u64, flags: u64| At {
        dirfd,
        path: Some(addr),
        follow: flags & AT_SYMLINK_NOFOLLOW == 0,
        empty_path: flags & AT_EMPTY_PATH != 0,
    };
    let fd = |fd: u64| At {
        dirfd: fd as i32,
        path: None,
        follow: true,
        empty_path: true,
    };
    let call = match nr {
        libc::SYS_chown => Call::Chown {
            at: path(AT_FDCWD, args[0], 0),
            uid: id_arg(args[1]),
            gid: id_arg(args[2]),
        },
        libc::SYS_lchown => Call::Chown {
            at: path(AT_FDCWD, args[0], AT_SYMLINK_NOFOLLOW),
            uid: id_arg(args[1]),
            gid: id_arg(args[2]),
        },
        libc::SYS_fchown => Call::Chown {
            at: fd(args[0]),
            uid: id_arg(args[1]),
            gid: id_arg(args[2]),
        },
        libc::SYS_fchownat => Call::Chown {
            at: path(args[0] as i32, args[1], args[4]),
            uid: id_arg(args[2]),
            gid: id_arg(args[3]),
        },
        libc::SYS_chmod => Call::Chmod {
            at: path(AT_FDCWD, args[0], 0),
            mode: args[1] as u32 & 0o7777,
        },
        libc::SYS_fchmod => Call::Chmod {
            at: fd(args[0]),
            mode: args[1] as u32 & 0o7777,
        },
        libc::SYS_fchmodat => Call::Chmod {
            at: path(args[0] as i32, args[1], 0),
            mode: args[2] as u32 & 0o7777,
        },
        libc::SYS_fchmodat2 => Call::Chmod {
            at: path(args[0] as i32, args[1], args[3]),
            mode: args[2] as u32 & 0o7777,
        },
        _ => return None,
    };
    Some(call)
}

fn answer(listener: BorrowedFd<'_>, n: &libc::seccomp_notif) -> Answer {
    let Some(call) = decode(i64::from(n.data.nr), &n.data.args) else {
        return Answer::Continue;
    };
    // The caller's /proc directory pins the task: a recycled pid fails every lookup through it
    // once the ID_VALID check below has passed.
    let proc_dir = match rustix::fs::open(
        format!("/proc/{}", n.pid).as_str(),
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(_) => return Answer::Done(Err(Errno::SRCH)),
    };
    if !still_pending(listener, n.id) {
        return Answer::Done(Err(Errno::SRCH));
    }
    match caller_is_root(&proc_dir) {
        Some(true) => {}
        // Everyone else gets the kernel's own answer.
        _ => return Answer::Continue,
    }
    Answer::Done(make(listener, n.id, &proc_dir, &call))
}

/// Whether the caller's filesystem uid is the sandbox's root (the uid chown and chmod check).
fn caller_is_root(proc_dir: &OwnedFd) -> Option<bool> {
    let status = rustix::fs::openat(
        proc_dir,
        "status",
        OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .ok()?;
    let mut text = String::new();
    io::Read::read_to_string(&mut std::fs::File::from(status), &mut text).ok()?;
    let uid = text.lines().find_map(|l| l.strip_prefix("Uid:"))?;
    let fsuid = uid.split_whitespace().nth(3)?;
    Some(fsuid == "0")
}

fn make(listener: BorrowedFd<'_>, id: u64, proc_dir: &OwnedFd, call: &Call) -> Result<(), Errno> {
    let at = match call {
        Call::Chown { at, .. } | Call::Chmod { at, .. } => at,
    };
    let path = match at.path {
        Some(addr) => Some(read_path(proc_dir, addr)?),
        None => None,
    };
    let base = if at.dirfd == AT_FDCWD {
        rustix::fs::openat(
            proc_dir,
            "cwd",
            OFlags::PATH | OFlags::CLOEXEC,
            Mode::empty(),
        )
    } else if at.dirfd >= 0 {
        rustix::fs::openat(
            proc_dir,
            format!("fd/{}", at.dirfd).as_str(),
            OFlags::PATH | OFlags::CLOEXEC,
            Mode::empty(),
        )
    } else {
        return Err(Errno::BADF);
    }
    .map_err(|e| if e == Errno::NOENT { Errno::BADF } else { e })?;
    // The path and descriptors read above belong to the caller only while it still waits.
    if !still_pending(listener, id) {
        return Err(Errno::SRCH);
    }
    let target = match path {
        Some(p) if p.is_empty() && !at.empty_path => return Err(Errno::NOENT),
        Some(p) if !p.is_empty() => {
            let mut flags = OFlags::PATH | OFlags::CLOEXEC;
            if !at.follow {
                flags |= OFlags::NOFOLLOW;
            }
            // Magic links would resolve in the agent's context (its own /proc/self), not the
            // caller's.
            Some(rustix::fs::openat2(
                &base,
                p.as_slice(),
                flags,
                Mode::empty(),
                ResolveFlags::NO_MAGICLINKS,
            )?)
        }
        _ => None,
    };
    let target = target.as_ref().unwrap_or(&base);
    let done = match *call {
        Call::Chown { uid, gid, .. } => rustix::fs::chownat(
            target,
            "",
            // Ids of the sandbox's namespace; the kernel checks they are mapped.
            uid.map(Uid::from_raw),
            gid.map(Gid::from_raw),
            AtFlags::EMPTY_PATH,
        ),
        Call::Chmod {
            mode,
            at: At { follow, .. },
        } => {
            if !follow {
                return Err(Errno::OPNOTSUPP);
            }
            let st = rustix::fs::fstat(target)?;
            if rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::Symlink {
                return Err(Errno::OPNOTSUPP);
            }
            // An O_PATH descriptor cannot be fchmod'ed; its /proc link can be chmod'ed.
            rustix::fs::chmod(
                format!("/proc/self/fd/{}", target.as_raw_fd()).as_str(),
                Mode::from_raw_mode(mode),
            )
        }
    };
    if done.is_ok() {
        crate::root_acl::keep_root_access(target);
    }
    done
}

/// Reads a NUL-terminated path from the caller's memory, page by page (a path may end right
/// before an unmapped page).
fn read_path(proc_dir: &OwnedFd, addr: u64) -> Result<Vec<u8>, Errno> {
    let mem = rustix::fs::openat(
        proc_dir,
        "mem",
        OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|_| Errno::FAULT)?;
    let mut path = Vec::new();
    let mut at = addr;
    while path.len() < PATH_MAX {
        let page_left = 4096 - (at % 4096) as usize;
        let mut chunk = vec![0u8; page_left.min(PATH_MAX - path.len()).max(1)];
        let got = rustix::io::pread(&mem, &mut chunk, at).map_err(|_| Errno::FAULT)?;
        if got == 0 {
            return Err(Errno::FAULT);
        }
        if let Some(end) = chunk[..got].iter().position(|&b| b == 0) {
            path.extend_from_slice(&chunk[..end]);
            return Ok(path);
        }
        path.extend_from_slice(&chunk[..got]);
        at += got as u64;
    }
    Err(Errno::NAMETOOLONG)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_filter_jumps_land_on_allow_and_notify() {
        assert_eq!(PROGRAM[ALLOW_AT].k, libc::SECCOMP_RET_ALLOW);
        assert_eq!(PROGRAM[ALLOW_AT + 1].k, libc::SECCOMP_RET_USER_NOTIF);
        // The arch check's false branch goes to ALLOW.
        assert_eq!(2 + usize::from(PROGRAM[1].jf), ALLOW_AT);
        for (i, nr) in SYSCALLS.iter().enumerate() {
            let at = 3 + i;
            assert_eq!(PROGRAM[at].k, *nr as u32);
            assert_eq!(at + 1 + usize::from(PROGRAM[at].jt), ALLOW_AT + 1);
            assert_eq!(PROGRAM[at].jf, 0);
        }
    }

    #[test]
    fn calls_decode_with_their_flags_and_unchanged_ids() {
        let args = [
            7,
            0x1000,
            100,
            u64::from(u32::MAX),
            AT_SYMLINK_NOFOLLOW | AT_EMPTY_PATH,
            0,
        ];
        assert_eq!(
            decode(libc::SYS_fchownat, &args),
            Some(Call::Chown {
                at: At {
                    dirfd: 7,
                    path: Some(0x1000),
                    follow: false,
                    empty_path: true
                },
                uid: Some(100),
                gid: None,
            })
        );
        assert_eq!(
            decode(libc::SYS_fchmod, &[3, 0o104755, 0, 0, 0, 0]),
            Some(Call::Chmod {
                at: At {
                    dirfd: 3,
                    path: None,
                    follow: true,
                    empty_path: true
                },
                mode: 0o4755,
            })
        );
        assert_eq!(decode(libc::SYS_openat, &[0; 6]), None);
    }
}

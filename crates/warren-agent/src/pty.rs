//! Process spawning, PTYs and the few raw descriptor and signal operations the agent needs.
//!
//! With `ownership` (the seccomp supervisor for root's chown and chmod), this is the only module
//! allowed `unsafe`: the code that runs in a forked child between `fork` and `exec` (where only
//! async-signal-safe calls are allowed), taking ownership of the inherited listening socket,
//! and the SIGPIPE disposition.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixListener;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

use rustix::process::{Gid, Uid};
use rustix::pty::OpenptFlags;
use rustix::termios::Winsize;
use tokio::io::unix::AsyncFd;

/// How a command's stdio is wired.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Io {
    /// Separate stdout and stderr pipes; stdin a pipe or `/dev/null`.
    Pipes { stdin: bool },
    /// One PTY for all three, as the controlling terminal.
    Pty { rows: u16, cols: u16 },
}

/// Everything needed to start a command.
#[derive(Debug)]
pub(crate) struct SpawnRequest<'a> {
    pub(crate) argv: &'a [String],
    pub(crate) env: &'a [(String, String)],
    pub(crate) cwd: &'a Path,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    pub(crate) groups: &'a [u32],
    /// False when the user namespace denies `setgroups` (the groups are then fixed anyway).
    pub(crate) set_groups: bool,
    pub(crate) io: Io,
}

/// A started command. Every descriptor is non-blocking and close-on-exec.
#[derive(Debug)]
pub(crate) struct Spawned {
    pub(crate) pid: u32,
    /// Stdout pipe, or the PTY master.
    pub(crate) stdout: OwnedFd,
    pub(crate) stderr: Option<OwnedFd>,
    pub(crate) stdin: Option<OwnedFd>,
    pub(crate) is_pty: bool,
    /// A root command's seccomp listener, for [`crate::ownership::supervise`].
    pub(crate) ownership: Option<OwnedFd>,
}

/// Opens a PTY pair with close-on-exec on both ends.
pub(crate) fn open_pty(rows: u16, cols: u16) -> io::Result<(OwnedFd, OwnedFd)> {
    let flags = OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC;
    let master = rustix::pty::openpt(flags)?;
    rustix::pty::grantpt(&master)?;
    rustix::pty::unlockpt(&master)?;
    // TIOCGPTPEER opens the peer through the master itself, so it works whatever /dev/pts is
    // mounted as; the path is the fallback for older kernels.
    let slave = match rustix::pty::ioctl_tiocgptpeer(&master, flags) {
        Ok(fd) => fd,
        Err(_) => {
            let name = rustix::pty::ptsname(&master, Vec::new())?;
            rustix::fs::open(
                name.as_c_str(),
                rustix::fs::OFlags::RDWR | rustix::fs::OFlags::NOCTTY | rustix::fs::OFlags::CLOEXEC,
                rustix::fs::Mode::empty(),
            )?
        }
    };
    set_winsize(&master, rows, cols)?;
    Ok((master, slave))
}

/// Sets a PTY's window size; the kernel signals SIGWINCH to its foreground process group.
pub(crate) fn set_winsize(fd: impl AsFd, rows: u16, cols: u16) -> io::Result<()> {
    rustix::termios::tcsetwinsize(
        fd,
        Winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        },
    )?;
    Ok(())
}

/// Bytes waiting to be read from a pipe or PTY master.
pub(crate) fn pending_bytes(fd: impl AsFd) -> usize {
    rustix::io::ioctl_fionread(fd)
        .ok()
        .and_then(|n| usize::try_from(n).ok())
        .unwrap_or(0)
}

pub(crate) fn set_nonblocking(fd: impl AsFd) -> io::Result<()> {
    rustix::io::ioctl_fionbio(fd, true)?;
    Ok(())
}

/// Starts a command in its own session and process group, as the given user.
///
/// The child's stdio is set up by `std`, then (in the child, after `fork`) it becomes a session
/// leader, takes the PTY as its controlling terminal, drops to the user and enters `cwd`. Exec
/// failures come back through `std`'s close-on-exec error pipe as an `io::Error`.
pub(crate) fn spawn(req: &SpawnRequest<'_>) -> io::Result<Spawned> {
    let (program, args) = req
        .argv
        .split_first()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "empty argv"))?;
    let mut cmd = Command::new(program);
    cmd.args(args)
        .env_clear()
        .envs(req.env.iter().map(|(k, v)| (k, v)));

    let mut master = None;
    match req.io {
        Io::Pipes { stdin } => {
            cmd.stdin(if stdin { Stdio::piped() } else { Stdio::null() });
            cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        }
        Io::Pty { rows, cols } => {
            let (m, slave) = open_pty(rows, cols)?;
            cmd.stdin(Stdio::from(slave.try_clone()?));
            cmd.stdout(Stdio::from(slave.try_clone()?));
            cmd.stderr(Stdio::from(slave));
            master = Some(m);
        }
    }

    let cwd = CString::new(req.cwd.as_os_str().as_bytes()).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "working directory contains NUL",
        )
    })?;
    let groups: Vec<Gid> = req.groups.iter().map(|&g| Gid::from_raw(g)).collect();
    let uid = Uid::from_raw(req.uid);
    let gid = Gid::from_raw(req.gid);
    let set_groups = req.set_groups;
    let ctty = master.is_some();
    // Root's chown and chmod go through the agent (see `ownership`); other users need nothing.
    let handoff = if req.uid == 0 {
        crate::ownership::Handoff::new().ok()
    } else {
        None
    };
    let handoff_fd = handoff.as_ref().map(crate::ownership::Handoff::child_fd);
    // SAFETY: the closure runs in the forked child before exec. It only makes raw system calls
    // through rustix (no allocation, no locks, no glibc set*id broadcast, which would touch
    // threads that do not exist in the child): everything it needs was allocated above.
    unsafe {
        cmd.pre_exec(move || {
            rustix::process::setsid()?;
            if ctty {
                rustix::process::ioctl_tiocsctty(rustix::stdio::stdin())?;
            }
            if set_groups {
                rustix::thread::set_thread_groups(&groups)?;
            }
            rustix::thread::set_thread_res_gid(gid, gid, gid)?;
            rustix::thread::set_thread_res_uid(uid, uid, uid)?;
            rustix::process::chdir(cwd.as_c_str())?;
            if let Some(fd) = handoff_fd {
                crate::ownership::install_in_child(fd);
            }
            Ok(())
        });
    }
    let spawned = cmd.spawn();
    // The Command owns the parent's copies of the PTY slave; they must go now or the master
    // never sees EOF.
    drop(cmd);
    let mut child = spawned?;
    let pid = child.id();
    let ownership = handoff.and_then(crate::ownership::Handoff::receive);
    // The child is reaped by the agent's SIGCHLD reaper, never through `std::process::Child`;
    // dropping the handle neither waits nor kills.
    let out = match master {
        Some(m) => Spawned {
            pid,
            stdout: m,
            stderr: None,
            stdin: None,
            is_pty: true,
            ownership,
        },
        None => Spawned {
            pid,
            stdout: child
                .stdout
                .take()
                .map(OwnedFd::from)
                .ok_or_else(|| io::Error::other("no stdout pipe"))?,
            stderr: child.stderr.take().map(OwnedFd::from),
            stdin: child.stdin.take().map(OwnedFd::from),
            is_pty: false,
            ownership,
        },
    };
    drop(child);
    set_nonblocking(&out.stdout)?;
    if let Some(fd) = &out.stderr {
        set_nonblocking(fd)?;
    }
    if let Some(fd) = &out.stdin {
        set_nonblocking(fd)?;
    }
    Ok(out)
}

/// Takes ownership of the listening socket the jailer left at `fd`, and marks it close-on-exec
/// so no command ever inherits it.
pub(crate) fn adopt_listener(fd: i32) -> io::Result<UnixListener> {
    if fd < 3 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "listen fd must be 3 or above",
        ));
    }
    // SAFETY: F_GETFD only inspects the descriptor table entry; it fails with EBADF when `fd`
    // is not open and touches no memory.
    let open = unsafe { libc::fcntl(fd, libc::F_GETFD) } >= 0;
    if !open {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is open (checked above) and was handed to this process on purpose by the
    // jailer; nothing else in the process refers to it, so this becomes its only owner.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    rustix::io::ioctl_fioclex(&owned)?;
    let st = rustix::fs::fstat(&owned)?;
    if rustix::fs::FileType::from_raw_mode(st.st_mode) != rustix::fs::FileType::Socket {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "listen fd is not a socket",
        ));
    }
    Ok(UnixListener::from(owned))
}

/// Ignores SIGPIPE so a vanished client is an EPIPE error, not the death of PID 1.
pub(crate) fn ignore_sigpipe() {
    // SAFETY: installing SIG_IGN has no handler code to be unsafe; it happens at startup
    // before any other thread exists. `std` resets the disposition in spawned children.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
}

/// Registers a descriptor with the runtime's reactor.
pub(crate) fn register(fd: OwnedFd) -> io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: an `OwnedFd` is open for as long as it lives and always returns the same raw
    // descriptor, and the `AsyncFd` owns it, so nothing can close or replace it underneath.
    Ok(unsafe { AsyncFd::register(fd) }?)
}

//! Process spawning, PTYs and the few raw descriptor and signal operations the agent needs.
//!
//! With `launch` (the child between clone and exec) and `ownership` (the seccomp supervisor for
//! root's chown and chmod), this is the only module allowed `unsafe`: taking ownership of the
//! inherited listening socket, and the SIGPIPE disposition.

use std::io;
use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::Path;

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
/// The child becomes a session leader, takes the PTY as its controlling terminal, drops to the
/// user and enters `cwd` before it execs ([`crate::launch`]); a failure on the way, exec's
/// included, comes back as an `io::Error`.
pub(crate) fn spawn(req: &SpawnRequest<'_>) -> io::Result<Spawned> {
    let is_pty = matches!(req.io, Io::Pty { .. });
    // The child's ends are close-on-exec here; the launch duplicates them onto 0, 1 and 2.
    let (stdio, ours) = match req.io {
        Io::Pipes { stdin } => {
            let (out_r, out_w) = pipe()?;
            let (err_r, err_w) = pipe()?;
            let (in_child, in_ours) = if stdin {
                let (r, w) = pipe()?;
                (r, Some(w))
            } else {
                (dev_null()?, None)
            };
            ([in_child, out_w, err_w], (out_r, Some(err_r), in_ours))
        }
        Io::Pty { rows, cols } => {
            let (master, slave) = open_pty(rows, cols)?;
            let stdio = [slave.try_clone()?, slave.try_clone()?, slave];
            (stdio, (master, None, None))
        }
    };
    // Root's chown and chmod go through the agent (see `ownership`); other users need nothing.
    let handoff = if req.uid == 0 {
        crate::ownership::Handoff::new().ok()
    } else {
        None
    };
    // Our ends are non-blocking before the command exists, so no failure can follow its start
    // (the child's ends are other open files and stay blocking).
    set_nonblocking(&ours.0)?;
    for fd in [&ours.1, &ours.2].into_iter().flatten() {
        set_nonblocking(fd)?;
    }
    let pid = crate::launch::launch(&crate::launch::Launch {
        argv: req.argv,
        env: req.env,
        cwd: req.cwd,
        stdio: [stdio[0].as_fd(), stdio[1].as_fd(), stdio[2].as_fd()],
        ctty: is_pty,
        uid: req.uid,
        gid: req.gid,
        groups: req.groups,
        set_groups: req.set_groups,
        handoff: handoff.as_ref().map(crate::ownership::Handoff::child_fd),
    })?;
    // The child's ends must go now, or the master or the pipes never see EOF.
    drop(stdio);
    let ownership = handoff.and_then(crate::ownership::Handoff::receive);
    // The child is reaped by the agent's SIGCHLD reaper.
    let (stdout, stderr, stdin) = ours;
    Ok(Spawned {
        pid,
        is_pty,
        stdout,
        stderr,
        stdin,
        ownership,
    })
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    Ok(rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?)
}

/// `/dev/null`, opened once: a command without stdin gets it, and most commands run so.
fn dev_null() -> io::Result<OwnedFd> {
    static NULL: std::sync::OnceLock<OwnedFd> = std::sync::OnceLock::new();
    let fd = match NULL.get() {
        Some(fd) => fd,
        None => {
            let fd = rustix::fs::open(
                "/dev/null",
                rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::CLOEXEC,
                rustix::fs::Mode::empty(),
            )?;
            NULL.get_or_init(|| fd)
        }
    };
    fd.try_clone()
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

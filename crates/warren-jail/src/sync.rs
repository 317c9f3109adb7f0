//! The channel between the jailer (parent) and the jailed child: a close-on-exec
//! `SOCK_SEQPACKET` pair. The parent sends the idmapped rootfs mount over it (SCM_RIGHTS); the
//! child answers with nothing at all when its exec succeeds (the exec closes its end: the
//! classic exec-success trick), or with one message holding its error.

use std::io::{IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, OwnedFd};

use rustix::io::Errno;
use rustix::net::{
    AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags, SocketFlags, SocketType,
};

use crate::JailError;
use crate::error::Context;

/// Longest error message the child sends; longer ones are cut.
const MAX_MESSAGE: usize = 4096;

/// The parent's end.
#[derive(Debug)]
pub(crate) struct ParentEnd(OwnedFd);

/// The child's end.
#[derive(Debug)]
pub(crate) struct ChildEnd(pub(crate) OwnedFd);

/// A connected pair; both ends are close-on-exec.
pub(crate) fn channel() -> Result<(ParentEnd, ChildEnd), JailError> {
    let (a, b) = rustix::net::socketpair(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )
    .sys("create the sync socket pair")?;
    Ok((ParentEnd(a), ChildEnd(b)))
}

impl ParentEnd {
    /// Hands the detached rootfs mount to the child.
    pub(crate) fn send_rootfs(&self, tree: &OwnedFd) -> Result<(), JailError> {
        self.send_mount(tree, "send the rootfs mount to the sandbox")
    }

    /// Hands a detached volume mount to the child, after the rootfs, one message per volume in
    /// the spec's order.
    pub(crate) fn send_volume(&self, tree: &OwnedFd) -> Result<(), JailError> {
        self.send_mount(tree, "send a volume mount to the sandbox")
    }

    fn send_mount(&self, tree: &OwnedFd, action: &'static str) -> Result<(), JailError> {
        let fds = [tree.as_fd()];
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
        let mut control = SendAncillaryBuffer::new(&mut space);
        if !control.push(SendAncillaryMessage::ScmRights(&fds)) {
            return Err(JailError::Check {
                action,
                found: "no room for the fd in the control buffer".into(),
            });
        }
        rustix::net::sendmsg(
            &self.0,
            &[IoSlice::new(b"r")],
            &mut control,
            SendFlags::NOSIGNAL,
        )
        .sys(action)?;
        Ok(())
    }

    /// Blocks until the child execs (end of file, no data) or reports an error.
    pub(crate) fn wait_for_exec(&self) -> Result<(), JailError> {
        let mut buf = vec![0u8; MAX_MESSAGE];
        let n = loop {
            match rustix::net::recv(&self.0, &mut buf[..], RecvFlags::empty()) {
                Ok((n, _)) => break n,
                Err(Errno::INTR) => {}
                Err(e) => return Err(e).sys("wait for the sandbox to start"),
            }
        };
        if n == 0 {
            return Ok(());
        }
        let message = String::from_utf8_lossy(&buf[..n]).trim().to_owned();
        Err(JailError::InJail { message })
    }
}

impl ChildEnd {
    /// Waits for the parent's id maps and rootfs mount. End of file means the parent gave up.
    pub(crate) fn receive_rootfs(&self) -> Result<OwnedFd, JailError> {
        self.receive_mount("receive the rootfs mount")
    }

    /// The next volume mount the parent sends (after the rootfs, in the spec's order).
    pub(crate) fn receive_volume(&self) -> Result<OwnedFd, JailError> {
        self.receive_mount("receive a volume mount")
    }

    fn receive_mount(&self, action: &'static str) -> Result<OwnedFd, JailError> {
        let mut byte = [0u8; 1];
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
        let mut control = RecvAncillaryBuffer::new(&mut space);
        let msg = loop {
            match rustix::net::recvmsg(
                &self.0,
                &mut [IoSliceMut::new(&mut byte)],
                &mut control,
                RecvFlags::CMSG_CLOEXEC,
            ) {
                Ok(msg) => break msg,
                Err(Errno::INTR) => {}
                Err(e) => return Err(e).sys(action),
            }
        };
        if msg.bytes == 0 {
            return Err(JailError::Check {
                action,
                found: "the jailer went away".into(),
            });
        }
        for message in control.drain() {
            if let RecvAncillaryMessage::ScmRights(mut fds) = message
                && let Some(fd) = fds.next()
            {
                return Ok(fd);
            }
        }
        Err(JailError::Check {
            action,
            found: "the message carried no fd".into(),
        })
    }

    /// Whether the parent still holds its end (it blocks on it until our exec).
    pub(crate) fn parent_alive(&self) -> Result<bool, JailError> {
        let mut probe = [0u8; 1];
        match rustix::net::recv(
            &self.0,
            &mut probe[..],
            RecvFlags::PEEK | RecvFlags::DONTWAIT,
        ) {
            Ok((0, _)) => Ok(false),
            Ok(_) | Err(Errno::AGAIN) => Ok(true),
            Err(e) => Err(e).sys("check on the jailer"),
        }
    }

    /// Sends the child's error line to the parent; best effort, the child exits right after.
    pub(crate) fn report_failure(&self, message: &str) {
        let bytes = message.as_bytes();
        let cut = &bytes[..bytes.len().min(MAX_MESSAGE)];
        let _ = rustix::net::send(&self.0, cut, SendFlags::NOSIGNAL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mount_fd_crosses_and_exec_success_is_silence() {
        let (parent, child) = channel().unwrap();
        let file = std::fs::File::open("/proc/self/stat").unwrap();
        parent.send_rootfs(&OwnedFd::from(file)).unwrap();
        let got = child.receive_rootfs().unwrap();
        let flags = rustix::io::fcntl_getfd(&got).unwrap();
        assert!(flags.contains(rustix::io::FdFlags::CLOEXEC));
        assert!(child.parent_alive().unwrap());
        drop(child);
        parent.wait_for_exec().unwrap();
    }

    #[test]
    fn a_child_error_comes_back_as_one_line() {
        let (parent, child) = channel().unwrap();
        child.report_failure("failed to mount /proc: Operation not permitted (os error 1)");
        drop(child);
        let err = parent.wait_for_exec().unwrap_err();
        assert_eq!(
            err.to_string(),
            "failed to mount /proc: Operation not permitted (os error 1)"
        );
    }

    #[test]
    fn the_child_notices_a_parent_that_went_away() {
        let (parent, child) = channel().unwrap();
        drop(parent);
        assert!(!child.parent_alive().unwrap());
        assert!(child.receive_rootfs().is_err());
    }
}

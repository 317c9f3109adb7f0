//! The jail: the ordered steps that turn a prepared sandbox (cgroups, rootfs subvolume, agent
//! socket) into a confined process tree with `warren-agent` as PID 1.
//!
//! The runtime spawns `warren-jailer` with a [`JailSpec`] as JSON on stdin. The jailer binds the
//! agent's listening unix socket at `agent_socket`, hands it to the agent as fd 3, prints a [`JailReport`] on stdout and exits; the
//! agent it leaves behind is not its child's child in any way the daemon depends on, so
//! sandboxes outlive both the jailer and the daemon.

mod spec;

pub use spec::{JailReport, JailSpec};

/// The fd on which the agent finds its listening socket.
pub const AGENT_LISTEN_FD: i32 = 3;

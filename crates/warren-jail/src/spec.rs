//! What the runtime asks the jailer to build. Sent as one JSON document on the jailer's stdin.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Everything the jailer needs to build one sandbox. The runtime prepares the resources (cgroups,
/// subvolume, listening socket); the jailer only enters and confines.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JailSpec {
    /// Sandbox id, used for the hostname and in error messages.
    pub sandbox_id: String,
    /// Host path of the sandbox's root filesystem (a writable btrfs subvolume whose files are
    /// owned by the image's uids, 0..`id_count`).
    pub rootfs: PathBuf,
    /// Host path of the statically linked `warren-agent`; executed by fd, never placed in the rootfs.
    pub agent_path: PathBuf,
    /// Host path where the jailer binds the agent's listening unix socket (mode 0600, outside the
    /// rootfs). The agent inherits the listener as [`crate::AGENT_LISTEN_FD`]; the host connects
    /// to this path, also after a daemon restart.
    pub agent_socket: PathBuf,
    /// First host uid of the sandbox's private range; sandbox uid 0 maps here. Never 0.
    pub uid_base: u32,
    /// First host gid of the sandbox's private range; sandbox gid 0 maps here. Never 0.
    pub gid_base: u32,
    /// Size of the uid and gid ranges.
    pub id_count: u32,
    /// `cgroup.procs` files the jailer writes its own pid into before anything else.
    pub cgroup_procs: Vec<PathBuf>,
    /// Hostname inside the sandbox.
    pub hostname: String,
    /// Size of the `/dev/shm` tmpfs in bytes (charged to the sandbox's memory cgroup).
    pub shm_bytes: u64,
    /// RLIMIT_NOFILE inside the sandbox.
    pub nofile: u64,
    /// RLIMIT_NPROC inside the sandbox (a backstop behind the pids cgroup).
    pub nproc: u64,
    /// Arguments passed to the agent after its own name.
    pub agent_args: Vec<String>,
}

/// What the jailer prints on stdout, as one JSON line, once the agent is running.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JailReport {
    /// Host pid of the agent (PID 1 of the sandbox's pid namespace).
    pub pid: u32,
    /// The agent's start time in clock ticks since boot (field 22 of `/proc/<pid>/stat`), so a
    /// recycled pid is never mistaken for the agent.
    pub start_time: u64,
}

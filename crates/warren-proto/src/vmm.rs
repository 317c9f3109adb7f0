//! The spec of the microVM tier's supervisor: `warren-agent --vmm '<json>'`, PID 1 of the
//! jail that runs a sandbox's VM. It is shared here so the host that writes it and the agent
//! that reads it cannot disagree on a field.

use serde::{Deserialize, Serialize};

/// What the VM supervisor runs (passed as one JSON argv element after `--vmm`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmmSpec {
    /// virtiofsd's argv; argv[0] is an absolute path.
    pub virtiofsd: Vec<String>,
    /// The socket virtiofsd creates (its --socket-path); qemu is started once it exists.
    pub virtiofs_socket: String,
    /// qemu's argv; argv[0] is an absolute path.
    pub qemu: Vec<String>,
    /// The unix socket qemu listens on for the agent's virtio-serial port
    /// (`-chardev socket,path=…,server=on,wait=off`).
    pub serial_socket: String,
}

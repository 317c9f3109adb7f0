//! What the runtime asks the jailer to build. Sent as one JSON document on the jailer's stdin.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::JailError;
use crate::volume::{JailFile, JailVolume, check_files, check_volumes};

/// Lowest first host id of a sandbox's range: sandbox ids must never map onto host root or onto
/// the ids of the host's own users and services.
pub const MIN_ID_BASE: u32 = 1 << 16;

/// The agent and what it runs need some fds; below this the jail itself cannot arrange them.
const MIN_NOFILE: u64 = 64;

/// CPU numbers a sched_setaffinity(2) mask can hold.
const MAX_CPUS: usize = rustix::thread::CpuSet::MAX_CPU;

/// `sun_path` of `struct sockaddr_un` holds 108 bytes including the NUL.
const MAX_SOCKET_PATH: usize = 107;

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
    /// Host path of a live LXCFS mount: its `proc/` files are bound read-only over the
    /// sandbox's `/proc` ones and its `sys/devices/system/cpu` appears at the same place in a
    /// read-only `/sys`, so `free`, `top` and `uptime` show the sandbox's cgroup limits. `None`:
    /// the sandbox sees the host's figures there.
    #[serde(default)]
    pub lxcfs: Option<PathBuf>,
    /// CPUs (host numbers) the sandbox starts pinned to, so `nproc` and sched_getaffinity(2)
    /// count as many CPUs as its CPU limit gives it. Empty: no pinning.
    #[serde(default)]
    pub cpus: Vec<u32>,
    /// Volumes mounted into the sandbox, idmapped like the rootfs. Mount paths are checked by
    /// [`crate::mount_path_components`] and resolved in the rootfs without following symlinks.
    #[serde(default)]
    pub volumes: Vec<JailVolume>,
    /// Host path of the sandbox's `/tmp`: a subvolume beside its rootfs, not in it, attached
    /// over the rootfs's `/tmp` directory. `None`: `/tmp` is what the rootfs holds (a sandbox
    /// made before `/tmp` moved out keeps it as a subvolume nested in its rootfs).
    #[serde(default)]
    pub tmp: Option<PathBuf>,
    /// Host files and directories bound over the rootfs's own, read-only or writable (see
    /// [`JailFile`]).
    #[serde(default)]
    pub files: Vec<JailFile>,
    /// The jail holds a virtual machine monitor instead of a tenant's commands: `rootfs` is
    /// the host's read-only VMM root (QEMU, virtiofsd, their libraries, the guest kernel),
    /// attached read-only, the tenant's root filesystem is a volume in it that virtiofsd
    /// serves to the guest, and the agent runs as the VMM's supervisor. The supervisor also
    /// keeps CAP_SETPCAP (in the sandbox's user namespace only), without which virtiofsd
    /// cannot drop its own capabilities and refuses to start.
    #[serde(default)]
    pub vmm: bool,
    /// Host path of a file (created 0600, truncated) that becomes the agent's stderr instead
    /// of `/dev/null`: where a VMM supervisor reports why its machine stopped. Only the host
    /// reads it; inside, it is reachable by no path (Landlock denies what lies outside the
    /// root).
    #[serde(default)]
    pub log: Option<PathBuf>,
}

/// What the jailer prints on stdout, as one JSON line, once the agent is running.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JailReport {
    /// Host pid of the agent (PID 1 of the sandbox's pid namespace).
    pub pid: u32,
    /// The agent's start time in clock ticks since boot (field 22 of `/proc/<pid>/stat`), so a
    /// recycled pid is never mistaken for the agent.
    pub start_time: u64,
    /// Landlock ABI of the host's kernel (0: none). From [`LANDLOCK_REVIEWED_ABI`] on, the
    /// sandbox's ruleset is fully enforced or the jail fails; below it the kernel enforces
    /// what it has (nothing at 0), and the caller should say so.
    #[serde(default)]
    pub landlock_abi: u32,
}

/// The Landlock ABI the jail's ruleset was reviewed against (Linux 6.12: the filesystem rights
/// including `IOCTL_DEV`, and the abstract unix socket and signal scopes).
pub const LANDLOCK_REVIEWED_ABI: u32 = 6;

impl JailSpec {
    /// Checks what the kernel would otherwise reject halfway through the jail, or worse accept:
    /// ids that map onto host root, relative host paths, an unusable hostname.
    pub fn validate(&self) -> Result<(), JailError> {
        let bad = |field, problem| Err(JailError::InvalidSpec { field, problem });
        if self.sandbox_id.is_empty() {
            return bad("sandbox_id", "is empty");
        }
        for (field, path) in [
            ("rootfs", &self.rootfs),
            ("agent_path", &self.agent_path),
            ("agent_socket", &self.agent_socket),
        ] {
            if !is_clean_absolute(path) {
                return bad(field, "is not an absolute path without NUL bytes");
            }
        }
        if self.agent_socket.as_os_str().len() > MAX_SOCKET_PATH {
            return bad(
                "agent_socket",
                "is longer than a unix socket path may be (107 bytes)",
            );
        }
        for path in &self.cgroup_procs {
            if !is_clean_absolute(path) || path.file_name() != Some("cgroup.procs".as_ref()) {
                return bad(
                    "cgroup_procs",
                    "holds a path that is not an absolute .../cgroup.procs",
                );
            }
        }
        for (field, base) in [("uid_base", self.uid_base), ("gid_base", self.gid_base)] {
            if base < MIN_ID_BASE {
                return bad(
                    field,
                    "is below 65536 (sandbox ids must not map onto host ids)",
                );
            }
            if base.checked_add(self.id_count).is_none() {
                return bad(field, "plus id_count overflows the id space");
            }
        }
        if self.id_count == 0 {
            return bad("id_count", "is 0");
        }
        if !is_hostname(&self.hostname) {
            return bad("hostname", "is not 1 to 64 characters of [A-Za-z0-9.-_]");
        }
        if self.shm_bytes == 0 {
            return bad("shm_bytes", "is 0");
        }
        if self.nofile < MIN_NOFILE {
            return bad("nofile", "is below 64");
        }
        if self.nproc == 0 {
            return bad("nproc", "is 0");
        }
        if self.agent_args.iter().any(|a| a.contains('\0')) {
            return bad("agent_args", "holds a NUL byte");
        }
        if self.log.as_deref().is_some_and(|p| !is_clean_absolute(p)) {
            return bad("log", "is not an absolute path without NUL bytes");
        }
        if self.lxcfs.as_deref().is_some_and(|p| !is_clean_absolute(p)) {
            return bad("lxcfs", "is not an absolute path without NUL bytes");
        }
        if self
            .cpus
            .iter()
            .any(|&c| usize::try_from(c).map_or(true, |c| c >= MAX_CPUS))
        {
            return bad(
                "cpus",
                "holds a CPU number beyond what sched_setaffinity takes",
            );
        }
        if let Err(problem) = check_volumes(&self.volumes) {
            return bad("volumes", problem);
        }
        if self.tmp.as_deref().is_some_and(|p| !is_clean_absolute(p)) {
            return bad("tmp", "is not an absolute path without NUL bytes");
        }
        if let Err(problem) = check_files(&self.files) {
            return bad("files", problem);
        }
        Ok(())
    }
}

fn is_clean_absolute(path: &Path) -> bool {
    path.is_absolute() && !path.as_os_str().as_encoded_bytes().contains(&0)
}

fn is_hostname(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> JailSpec {
        JailSpec {
            sandbox_id: "sb-1".into(),
            rootfs: "/var/lib/warren/fs/sandboxes/sb-1".into(),
            agent_path: "/usr/lib/warren/warren-agent".into(),
            agent_socket: "/run/warren/sb-1/agent.sock".into(),
            uid_base: 1 << 20,
            gid_base: 1 << 20,
            id_count: 65_536,
            cgroup_procs: vec![
                "/sys/fs/cgroup/memory/warren/sb-1/cgroup.procs".into(),
                "/sys/fs/cgroup/pids/warren/sb-1/cgroup.procs".into(),
            ],
            hostname: "sb-1".into(),
            shm_bytes: 64 << 20,
            nofile: 4096,
            nproc: 512,
            agent_args: vec!["--listen-fd".into(), "3".into()],
            lxcfs: Some("/var/lib/warren/lxcfs".into()),
            cpus: vec![1],
            volumes: vec![JailVolume {
                host_path: "/var/lib/warren/fs/volumes/0f8e".into(),
                mount_path: "/data".into(),
                read_only: true,
            }],
            tmp: Some("/var/lib/warren/fs/sandboxes/sb-1/tmp".into()),
            files: vec![JailFile {
                host_path: "/var/lib/warren/fs/sandboxes/sb-1/etc/machine-id".into(),
                path: "/etc/machine-id".into(),
                only_over_empty: true,
                read_only: true,
            }],
            vmm: false,
            log: None,
        }
    }

    fn field_of(spec: &JailSpec) -> &'static str {
        match spec.validate() {
            Err(JailError::InvalidSpec { field, .. }) => field,
            other => panic!("expected an invalid spec, got {other:?}"),
        }
    }

    #[test]
    fn the_runtime_s_spec_round_trips_and_validates() {
        let s = spec();
        let json = serde_json::to_string(&s).unwrap();
        let back: JailSpec = serde_json::from_str(&json).unwrap();
        assert_eq!(back, s);
        back.validate().unwrap();
    }

    #[test]
    fn unknown_and_missing_fields_are_rejected() {
        let mut v = serde_json::to_value(spec()).unwrap();
        v["surprise"] = serde_json::json!(1);
        assert!(serde_json::from_value::<JailSpec>(v.clone()).is_err());
        let obj = v.as_object_mut().unwrap();
        obj.remove("surprise");
        obj.remove("uid_base");
        assert!(serde_json::from_value::<JailSpec>(v).is_err());
    }

    #[test]
    fn ids_never_map_onto_host_ids() {
        let mut s = spec();
        s.uid_base = 0;
        assert_eq!(field_of(&s), "uid_base");
        let mut s = spec();
        s.gid_base = 1000;
        assert_eq!(field_of(&s), "gid_base");
        let mut s = spec();
        s.uid_base = u32::MAX - 10;
        assert_eq!(field_of(&s), "uid_base");
        let mut s = spec();
        s.id_count = 0;
        assert_eq!(field_of(&s), "id_count");
    }

    #[test]
    fn host_paths_must_be_absolute_and_cgroup_files_named_right() {
        let mut s = spec();
        s.rootfs = "relative/rootfs".into();
        assert_eq!(field_of(&s), "rootfs");
        let mut s = spec();
        s.cgroup_procs
            .push("/sys/fs/cgroup/pids/warren/sb-1/tasks".into());
        assert_eq!(field_of(&s), "cgroup_procs");
        let mut s = spec();
        s.agent_socket = PathBuf::from(format!("/run/{}", "x".repeat(120)));
        assert_eq!(field_of(&s), "agent_socket");
    }

    #[test]
    fn hostname_limits_follow_the_kernel() {
        let mut s = spec();
        s.hostname = "a".repeat(65);
        assert_eq!(field_of(&s), "hostname");
        s.hostname = "bad/name".into();
        assert_eq!(field_of(&s), "hostname");
        s.hostname = String::new();
        assert_eq!(field_of(&s), "hostname");
        s.hostname = "a".repeat(64);
        s.validate().unwrap();
    }

    #[test]
    fn limits_and_args_are_checked() {
        let mut s = spec();
        s.nofile = 3;
        assert_eq!(field_of(&s), "nofile");
        let mut s = spec();
        s.nproc = 0;
        assert_eq!(field_of(&s), "nproc");
        let mut s = spec();
        s.shm_bytes = 0;
        assert_eq!(field_of(&s), "shm_bytes");
        let mut s = spec();
        s.agent_args.push("a\0b".into());
        assert_eq!(field_of(&s), "agent_args");
        let mut s = spec();
        s.lxcfs = Some("lxcfs".into());
        assert_eq!(field_of(&s), "lxcfs");
        let mut s = spec();
        s.cpus = vec![0, 1 << 20];
        assert_eq!(field_of(&s), "cpus");
        let mut s = spec();
        s.volumes[0].mount_path = "/proc/sys".into();
        assert_eq!(field_of(&s), "volumes");
        let mut s = spec();
        s.tmp = Some("tmp".into());
        assert_eq!(field_of(&s), "tmp");
        let mut s = spec();
        s.files[0].path = "/etc/../proc/x".into();
        assert_eq!(field_of(&s), "files");
        let mut s = spec();
        s.files[0].host_path = "machine-id".into();
        assert_eq!(field_of(&s), "files");
    }

    #[test]
    fn lxcfs_and_cpus_are_optional() {
        let mut v = serde_json::to_value(spec()).unwrap();
        let obj = v.as_object_mut().unwrap();
        obj.remove("lxcfs");
        obj.remove("cpus");
        obj.remove("tmp");
        obj.remove("files");
        let s: JailSpec = serde_json::from_value(v).unwrap();
        assert_eq!((s.lxcfs, s.cpus), (None, vec![]));
        assert_eq!((s.tmp, s.files), (None, vec![]));
    }
}

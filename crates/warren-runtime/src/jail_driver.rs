//! The namespace-jail driver: a btrfs snapshot as root filesystem, cgroups with the limits, a
//! private uid range, then `warren-jailer`, which leaves the sandbox's agent behind.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use warren_jail::{JailReport, JailSpec};
use warren_types::{ImageRef, SandboxId};

use crate::agent::AgentConn;
use crate::binaries::check_binaries;
use crate::cgroup::{self, CgroupBackend};
use crate::driver::{DriverError, SandboxHandle, SandboxSpec, Tier};
use crate::io_error::IoError;
use crate::placement;
use crate::slots::Slots;
use crate::storage::{BtrfsStorage, Storage, TmpLayout};

/// Configuration of the jail driver.
#[derive(Debug, Clone)]
pub struct JailConfig {
    /// The data dir (storage, run dir, uid slots).
    pub data_dir: PathBuf,
    /// Statically linked `warren-agent`.
    pub agent_path: PathBuf,
    /// `warren-jailer`.
    pub jailer_path: PathBuf,
    /// Size of the loop-backed btrfs pool when the data dir is not on btrfs.
    pub pool_bytes: u64,
    /// Size of each sandbox's `/dev/shm`.
    pub shm_bytes: u64,
    /// RLIMIT_NOFILE inside sandboxes.
    pub nofile: u64,
    /// Block I/O throttle of each sandbox on the pool's device, where the host has an io
    /// controller.
    pub io: cgroup::IoLimits,
    /// Mount point of the LXCFS instance `warren serve` runs (see [`crate::lxcfs`]). Checked
    /// at each create and start: while it answers, sandboxes see their own memory, CPUs and
    /// uptime; while it does not, they start anyway and see the host's. `None`: never used.
    pub lxcfs: Option<PathBuf>,
}

impl JailConfig {
    /// Defaults for a data dir, with helper binaries next to the running executable.
    pub fn new(data_dir: PathBuf, bin_dir: &Path) -> Self {
        Self {
            agent_path: bin_dir.join("warren-agent"),
            jailer_path: bin_dir.join("warren-jailer"),
            pool_bytes: 64 << 30,
            shm_bytes: 64 << 20,
            nofile: 4096,
            io: cgroup::IoLimits::default(),
            lxcfs: Some(data_dir.join(LXCFS_DIR)),
            data_dir,
        }
    }
}

/// Where under the data dir `warren serve` mounts LXCFS.
pub const LXCFS_DIR: &str = "lxcfs";

/// The namespace-jail driver.
#[derive(Debug, Clone)]
pub struct JailDriver {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    cfg: JailConfig,
    storage: BtrfsStorage,
    cgroups: Box<dyn CgroupBackend>,
    slots: Slots,
    /// Whether the helper binaries are usable; checked on the first create.
    binaries: OnceLock<Result<(), String>>,
    /// Set by a daemon that runs the egress proxy: sandboxes are then linked to it (`proxied`);
    /// unset, they keep only their loopback (`none`).
    net: OnceLock<(warren_net::HostNet, Vec<u8>)>,
    /// Whether LXCFS answered at the last create or start (so its loss and return are logged
    /// once, not per sandbox).
    lxcfs_seen: placement::Seen,
}

/// First host uid/gid handed to sandboxes; far above any account a distribution creates.
const ID_BASE: u32 = 1 << 20;
/// uids and gids per sandbox: the full 16-bit range images expect.
const ID_COUNT: u32 = 65_536;

impl JailDriver {
    /// Opens the driver: storage (mounting the pool if needed), cgroups, uid slots. Blocking.
    pub fn open(cfg: JailConfig) -> Result<Self, DriverError> {
        let storage = BtrfsStorage::open(&cfg.data_dir, cfg.pool_bytes)?;
        let io = cgroup::IoThrottle::for_path(storage.root(), cfg.io);
        if io.is_none() {
            tracing::warn!(pool = %storage.root().display(), "the pool is not on a block device; sandboxes get no block I/O limit");
        }
        let cgroups = cgroup::detect_with_io(io)?;
        cgroup::favor_dynamic_changes();
        let slots = Slots::open(&cfg.data_dir.join("slots"), (u32::MAX - ID_BASE) / ID_COUNT)?;
        let run = cfg.data_dir.join("run");
        std::fs::create_dir_all(&run).map_err(|source| {
            DriverError::Io(IoError {
                action: "create the run dir",
                path: run.clone(),
                source,
            })
        })?;
        Ok(Self {
            inner: Arc::new(Inner {
                cfg,
                storage,
                cgroups,
                slots,
                binaries: OnceLock::new(),
                net: OnceLock::new(),
                lxcfs_seen: placement::Seen::default(),
            }),
        })
    }

    /// The storage under this driver.
    pub fn storage(&self) -> &BtrfsStorage {
        &self.inner.storage
    }

    /// The cgroup layout in use.
    pub fn cgroups(&self) -> &dyn CgroupBackend {
        self.inner.cgroups.as_ref()
    }

    /// Times the OOM killer fired inside the sandbox.
    pub fn oom_kills(&self, id: &SandboxId) -> Result<u64, DriverError> {
        Ok(self.inner.cgroups.oom_kills(cgroup_name(id).as_str())?)
    }

    fn run_dir(&self, id: &SandboxId) -> PathBuf {
        self.inner.cfg.data_dir.join("run").join(id.as_str())
    }

    async fn create_inner(
        &self,
        spec: &SandboxSpec,
        undo: &mut Undo,
    ) -> Result<SandboxHandle, DriverError> {
        let inner = self.inner.clone();
        let (id, image, disk) = (spec.id.clone(), spec.image.clone(), spec.limits.disk_bytes);
        // A guest sees its rootfs through one virtiofs share: its /tmp must be in it.
        let tmp = match spec.tier {
            Tier::Jail => TmpLayout::Beside,
            Tier::Vm => TmpLayout::Nested,
        };
        // The CAs a linked sandbox trusts go into its fresh trust store here, not through its agent.
        let cas = (self.inner.net.get())
            .map(|(_, extra)| [extra.as_slice(), spec.trust.as_bytes()].concat());
        let began = Instant::now();
        let (rootfs, trusted) = tokio::task::spawn_blocking(move || {
            inner
                .storage
                .create_trusting(&id, &image, disk, tmp, cas.as_deref())
        })
        .await??;
        undo.rootfs = true;
        tracing::debug!(sandbox = %spec.id, elapsed_us = began.elapsed().as_micros(), "rootfs created");
        // Read while the jail boots, on the other CPU; the first command finds them cached.
        let root = rootfs.clone();
        drop(tokio::task::spawn_blocking(move || {
            crate::storage::read_ahead(&root, warren_driver::FIRST_COMMAND_FILES);
        }));
        self.boot(spec, rootfs, undo, trusted).await
    }

    /// Brings up the jail on an existing root filesystem: uid range, cgroups, jailer. `trusted`:
    /// the trust store already holds the CAs (see `create_trusting`).
    async fn boot(
        &self,
        spec: &SandboxSpec,
        rootfs: PathBuf,
        undo: &mut Undo,
        trusted: bool,
    ) -> Result<SandboxHandle, DriverError> {
        let cfg = &self.inner.cfg;
        self.inner
            .binaries
            .get_or_init(|| check_binaries(&cfg.agent_path, &cfg.jailer_path))
            .clone()
            .map_err(DriverError::Binary)?;
        let vm = match spec.tier {
            Tier::Jail => None,
            Tier::Vm => Some(self.vm_assets().map_err(DriverError::VmBoot)?),
        };
        let volumes = match &vm {
            None => placement::jail_volumes(&self.inner.storage, spec)?,
            Some(_) => crate::vm::volumes(spec, &rootfs)?,
        };
        let slot = self.inner.slots.allocate(spec.id.as_str())?;
        undo.slot = Some(slot);

        let began = Instant::now();
        let cg = cgroup_name(&spec.id);
        let cpus = placement::cpus_for(slot, spec.limits.millicpus);
        let limits = match vm {
            None => spec.limits,
            Some(_) => crate::vm::cgroup_limits(spec.limits),
        };
        let procs = self.inner.cgroups.create(&cg, &limits, &cpus)?;
        undo.cgroup = true;
        tracing::debug!(sandbox = %spec.id, elapsed_us = began.elapsed().as_micros(), "cgroups created");

        let run_dir = self.run_dir(&spec.id);
        create_private_dir(&run_dir)?;
        undo.run_dir = true;
        let agent_socket = run_dir.join("agent.sock");

        // A guest has its own /proc: LXCFS's views are for jails.
        let lxcfs = match vm {
            Some(_) => None,
            None => {
                placement::lxcfs_for(
                    self.inner.cfg.lxcfs.as_deref(),
                    &self.inner.lxcfs_seen,
                    &spec.id,
                )
                .await
            }
        };
        let linked = self.inner.net.get().is_some();
        let (tmp, files) = match vm {
            Some(_) => (None, Vec::new()),
            None => {
                let nameserver = linked.then(|| warren_net::host_address(slot)).flatten();
                let address = crate::network::own_address(linked, slot);
                self.inner.storage.jail_mounts(
                    &spec.id,
                    nameserver,
                    &spec.id.to_string(),
                    address,
                )?
            }
        };
        let agent_args = match &vm {
            None => crate::network::agent_args(linked, slot),
            Some(_) => crate::vm::supervisor_args(spec, linked, slot),
        };
        let base = ID_BASE + slot * ID_COUNT;
        let jail = JailSpec {
            sandbox_id: spec.id.to_string(),
            rootfs: vm.as_ref().map_or(rootfs, |vm| vm.root().to_owned()),
            agent_path: self.inner.cfg.agent_path.clone(),
            agent_socket: agent_socket.clone(),
            uid_base: base,
            gid_base: base,
            id_count: ID_COUNT,
            cgroup_procs: procs,
            hostname: spec.id.to_string(),
            shm_bytes: self.inner.cfg.shm_bytes.min(spec.limits.memory_bytes),
            nofile: self.inner.cfg.nofile,
            nproc: u64::from(spec.limits.pids),
            agent_args,
            lxcfs,
            cpus,
            volumes,
            tmp,
            files,
            vmm: vm.is_some(),
            log: vm.is_some().then(|| run_dir.join(crate::vm::LOG)),
        };
        let began = Instant::now();
        let report = run_jailer(&self.inner.cfg.jailer_path, &jail).await?;
        tracing::debug!(sandbox = %spec.id, elapsed_us = began.elapsed().as_micros(), pid = report.pid, "jail up");
        if report.landlock_abi < warren_jail::LANDLOCK_REVIEWED_ABI {
            // The jail enforced what this kernel has; the sandbox lacks the rest (e.g. the
            // abstract socket and signal scopes before Linux 6.12).
            tracing::warn!(sandbox = %spec.id, kernel_abi = report.landlock_abi, reviewed_abi = warren_jail::LANDLOCK_REVIEWED_ABI, "landlock is older than the reviewed ABI; the sandbox runs with less of it");
        }
        if vm.is_some() {
            let alive = || process_start_time(report.pid) == Some(report.start_time);
            crate::vm::wait_for_guest(&spec.id, &agent_socket, alive).await?;
        }
        let env = match self.inner.net.get() {
            Some((net, cas)) => {
                let cas = (!trusted).then_some(cas.as_slice());
                crate::network::link(net, cas, spec, slot, report.pid, &agent_socket).await?
            }
            None => Vec::new(),
        };
        Ok(SandboxHandle {
            id: spec.id.clone(),
            tier: spec.tier,
            pid: report.pid,
            start_time: report.start_time,
            agent_socket,
            slot,
            env,
        })
    }

    /// The VMM root, with the guest's initramfs holding this daemon's agent; or why the vm
    /// tier is unavailable.
    pub fn vm_assets(&self) -> Result<crate::vm::VmAssets, String> {
        let assets = crate::vm::VmAssets::find(&self.inner.cfg.data_dir)?;
        assets.prepare(&self.inner.cfg.agent_path).map_err(|e| {
            tracing::error!(error = %e, "failed to write the guest initramfs");
            format!("the guest's initramfs could not be written: {}", e.kind())
        })?;
        Ok(assets)
    }

    /// Links every sandbox booted from now on to the egress proxy (`proxied` mode), with these
    /// extra CA certificates (PEM) added to its trust store.
    pub fn enable_network(&self, net: warren_net::HostNet, extra_cas: Vec<u8>) {
        let _ = self.inner.net.set((net, extra_cas));
    }

    /// Kills the sandbox's processes and frees cgroups, run dir and uid range; keeps files.
    async fn halt(&self, id: &SandboxId, pid: Option<(u32, u64)>) -> Result<(), DriverError> {
        let cg = cgroup_name(id);
        // v2 kills the whole cgroup in one write. On v1, SIGKILL to the agent (PID 1 of the
        // sandbox's pid namespace) makes the kernel kill every other process in it.
        if !self.inner.cgroups.kill(&cg)? {
            if let Some((pid, start)) = pid
                && process_start_time(pid) == Some(start)
            {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap_or(i32::MAX)),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            // Stragglers (a jailer that died between joining the cgroup and cloning) die too.
            for p in self.inner.cgroups.pids(&cg)? {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(i32::try_from(p).unwrap_or(i32::MAX)),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut pause = Duration::from_micros(200);
        while !self.inner.cgroups.pids(&cg)?.is_empty() {
            if Instant::now() > deadline {
                return Err(DriverError::StopTimeout(id.clone()));
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(20));
        }
        self.inner.cgroups.remove(&cg)?;
        let run_dir = self.run_dir(id);
        match std::fs::remove_dir_all(&run_dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(DriverError::Io(IoError {
                    action: "remove the sandbox's run dir",
                    path: run_dir,
                    source,
                }));
            }
        }
        if let Some((net, _)) = self.inner.net.get() {
            // The link dies with the namespace; this makes it immediate and covers a
            // half-made one.
            for (slot, owner) in self.inner.slots.list()? {
                if owner == id.as_str() {
                    net.detach(slot).await?;
                }
            }
        }
        self.inner.slots.release_owner(id.as_str())?;
        Ok(())
    }

    async fn teardown(&self, id: &SandboxId, pid: Option<(u32, u64)>) -> Result<(), DriverError> {
        self.halt(id, pid).await?;
        let inner = self.inner.clone();
        let id2 = id.clone();
        tokio::task::spawn_blocking(move || inner.storage.destroy_rootfs(&id2)).await??;
        Ok(())
    }
}

/// What a half-finished create must undo.
#[derive(Debug, Default)]
struct Undo {
    rootfs: bool,
    slot: Option<u32>,
    cgroup: bool,
    run_dir: bool,
}

/// The lifecycle, as inherent methods: `seam.rs` puts them behind `warren_driver::Driver`, and
/// the runtime's own tests call them directly.
impl JailDriver {
    /// Creates and starts a sandbox; returns once its agent accepts connections.
    pub async fn create(&self, spec: &SandboxSpec) -> Result<SandboxHandle, DriverError> {
        let started = Instant::now();
        let mut undo = Undo::default();
        match self.create_inner(spec, &mut undo).await {
            Ok(h) => {
                tracing::debug!(sandbox_id = %spec.id, pid = h.pid, elapsed_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX), "sandbox created");
                Ok(h)
            }
            Err(e) => {
                tracing::warn!(sandbox_id = %spec.id, error = %e, "sandbox create failed; cleaning up");
                let dirty = undo.rootfs || undo.cgroup || undo.run_dir || undo.slot.is_some();
                if dirty && let Err(cleanup) = self.teardown(&spec.id, None).await {
                    tracing::error!(sandbox_id = %spec.id, error = %cleanup, "cleanup after failed create failed");
                }
                Err(e)
            }
        }
    }

    /// Boots a stopped sandbox on its existing root filesystem (files and /tmp kept).
    pub async fn start(&self, spec: &SandboxSpec) -> Result<SandboxHandle, DriverError> {
        let rootfs = self.inner.storage.rootfs_path(&spec.id);
        if !rootfs.is_dir() {
            return Err(DriverError::NoStorage(spec.id.clone()));
        }
        // Limits are the spec's, which an update may have changed while it was stopped.
        let inner = self.inner.clone();
        let (id, disk) = (spec.id.clone(), spec.limits.disk_bytes);
        tokio::task::spawn_blocking(move || inner.storage.set_disk_limit(&id, disk)).await??;
        let mut undo = Undo::default();
        match self.boot(spec, rootfs, &mut undo, false).await {
            Ok(h) => Ok(h),
            Err(e) => {
                if let Err(cleanup) = self.halt(&spec.id, None).await {
                    tracing::error!(sandbox_id = %spec.id, error = %cleanup, "cleanup after failed start failed");
                }
                Err(e)
            }
        }
    }

    /// Kills every process of the sandbox and frees its runtime resources, keeping its files.
    /// `handle` is `None` when the caller has lost it (the processes are then found by cgroup).
    pub async fn stop(
        &self,
        id: &SandboxId,
        handle: Option<&SandboxHandle>,
    ) -> Result<(), DriverError> {
        self.halt(id, handle.map(|h| (h.pid, h.start_time))).await
    }

    /// Stops the sandbox and deletes its files. Idempotent.
    pub async fn destroy(
        &self,
        id: &SandboxId,
        handle: Option<&SandboxHandle>,
    ) -> Result<(), DriverError> {
        self.teardown(id, handle.map(|h| (h.pid, h.start_time)))
            .await
    }

    /// Whether the sandbox has a root filesystem (so it can be started).
    pub fn has_storage(&self, id: &SandboxId) -> bool {
        self.inner.storage.rootfs_path(id).is_dir()
    }

    /// Whether sandboxes can be created from this image.
    pub fn has_image(&self, image: &ImageRef) -> bool {
        self.inner.storage.has_image(image)
    }

    /// Frees every resource (processes, files, uid ranges, cgroups) of sandboxes not in
    /// `keep`. Returns the ids it removed; one that fails is logged and left for the next gc.
    pub async fn gc(
        &self,
        keep: &std::collections::HashSet<SandboxId>,
    ) -> Result<Vec<SandboxId>, DriverError> {
        let mut found = std::collections::BTreeSet::new();
        found.extend(self.inner.storage.list_rootfs()?);
        found.extend(
            self.inner
                .slots
                .list()?
                .into_iter()
                .filter_map(|(_, o)| o.parse().ok()),
        );
        if let Ok(entries) = std::fs::read_dir(self.inner.cfg.data_dir.join("run")) {
            found.extend(
                entries
                    .flatten()
                    .filter_map(|e| e.file_name().to_str()?.parse().ok()),
            );
        }
        // Not the cgroups: they are host-wide, and a daemon on another data dir owns some of
        // them. Ours hold a uid slot here for as long as they exist (the slot is taken before
        // the cgroup is made and freed after it is removed), so the teardown of what is found
        // here removes every cgroup of this data dir and no other.
        let mut removed = Vec::new();
        for id in found
            .into_iter()
            .filter(|id: &SandboxId| !keep.contains(id))
        {
            tracing::info!(sandbox_id = %id, "removing orphaned sandbox resources");
            // One sandbox that cannot be removed now must not keep the others (or a daemon's
            // start) waiting on it: the next gc tries again.
            match self.teardown(&id, None).await {
                Ok(()) => removed.push(id),
                Err(e) => {
                    tracing::warn!(sandbox_id = %id, error = %e, "failed to remove orphaned sandbox resources");
                }
            }
        }
        Ok(removed)
    }

    /// Whether any sandbox of this data dir holds runtime resources (is running, or is being
    /// created or stopped): each holds a uid slot from create or start until it is stopped.
    pub fn holds_sandboxes(&self) -> bool {
        self.inner.slots.list().map_or(true, |s| !s.is_empty())
    }

    /// Whether the sandbox's agent is the process the handle names and is alive.
    pub fn is_running(&self, handle: &SandboxHandle) -> bool {
        process_start_time(handle.pid) == Some(handle.start_time)
    }

    /// Connects to the sandbox's agent.
    pub async fn connect(&self, handle: &SandboxHandle) -> Result<AgentConn, DriverError> {
        Ok(AgentConn::connect(&handle.agent_socket).await?)
    }
}

fn cgroup_name(id: &SandboxId) -> String {
    id.to_string()
}

fn create_private_dir(path: &Path) -> Result<(), DriverError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(|source| {
            DriverError::Io(IoError {
                action: "create the sandbox's run dir",
                path: path.to_owned(),
                source,
            })
        })
}

async fn run_jailer(jailer: &Path, spec: &JailSpec) -> Result<JailReport, DriverError> {
    let input = serde_json::to_vec(spec)
        .map_err(|e| DriverError::Jail(format!("failed to encode jail spec: {e}")))?;
    let mut child = tokio::process::Command::new(jailer)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| DriverError::JailerSpawn(IoError::at("run the jailer", jailer)(e)))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(&input).await.map_err(|e| {
            DriverError::JailerSpawn(IoError::at("send the spec to the jailer", jailer)(e))
        })?;
    }
    let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .map_err(|_| DriverError::Jail("the jailer did not finish in 30 s".into()))?
        .map_err(|e| DriverError::JailerSpawn(IoError::at("wait for the jailer", jailer)(e)))?;
    if !out.status.success() {
        let msg = String::from_utf8_lossy(&out.stderr);
        let msg = msg.lines().last().unwrap_or("no message").to_owned();
        return Err(DriverError::Jail(format!("{msg} ({})", out.status)));
    }
    let line = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(line.trim())
        .map_err(|e| DriverError::Jail(format!("the jailer printed an unreadable report: {e}")))
}

/// Start time of a process in clock ticks since boot (field 22 of `/proc/<pid>/stat`).
pub fn process_start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces and parentheses: fields after it start at
    // the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let state = rest.split(' ').next()?;
    if state == "Z" || state == "X" {
        return None;
    }
    rest.split(' ').nth(19)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_time_of_self_is_stable_and_dead_pids_have_none() {
        let me = std::process::id();
        let a = process_start_time(me).unwrap();
        assert_eq!(process_start_time(me), Some(a));
        assert_eq!(process_start_time(u32::MAX - 1), None);
    }
}

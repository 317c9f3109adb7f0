//! The vm tier's monitor: which files it needs (the VMM root `scripts/vm/setup.sh` assembles),
//! and the command lines of QEMU and virtiofsd. Everything QEMU-specific is here, so another
//! monitor (Firecracker, Cloud Hypervisor) replaces this module and nothing else: the jail
//! around the monitor, the storage and the agent protocol stay as they are.
//!
//! A vm-tier sandbox is a jail (`JailSpec::vmm`) whose root is the read-only VMM root and whose
//! PID 1 is `warren-agent --vmm`, a supervisor that starts virtiofsd (serving the sandbox's own
//! btrfs subvolume, mounted at [`GUEST_ROOT`] in the jail, to the guest as its root) and QEMU,
//! then carries every connection to the jail's agent socket over the guest's virtio-serial
//! port to the `warren-agent` that is the guest's PID 1. So snapshots, forks, capture and disk
//! quotas work on the subvolume exactly as for the jail tier.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use std::time::{Duration, Instant};

use warren_driver::SandboxSpec;
use warren_jail::JailVolume;
use warren_proto::VmmSpec;
use warren_types::{Limits, SandboxId};

use crate::driver::DriverError;

/// Where the VMM root lives under the data dir.
pub const VM_ROOT: &str = "vm/root";

/// Where the sandbox's root filesystem is mounted in the VMM's jail.
pub(crate) const GUEST_ROOT: &str = "/vm/root";

/// Paths in the VMM root.
const QEMU: &str = "/usr/bin/qemu-system-x86_64";
const VIRTIOFSD: &str = "/usr/libexec/virtiofsd";
const KERNEL: &str = "/boot/vmlinuz";
const BASE_INITRD: &str = "/boot/initramfs.base.gz";
/// The base initramfs with this daemon's agent appended ([`VmAssets::prepare`]).
const INITRD: &str = "/boot/initrd.img";

/// The supervisor's report of why its VM stopped (its stderr: the error, then the last output
/// of QEMU, the guest's console included, and virtiofsd), in the sandbox's run dir.
pub(crate) const LOG: &str = "vmm.log";

/// Most bytes of [`LOG`] the daemon's log quotes.
const LOG_QUOTED: u64 = 4096;

/// The jail's private tmpfs, where the monitor's sockets live.
const SOCKETS: &str = "/dev/shm/vm";

/// Memory the monitor itself needs on top of the guest's RAM, in the sandbox's memory cgroup:
/// QEMU's TCG translation cache (32 MiB asked for, about 70 MiB resident), its own heap and
/// libraries, and virtiofsd (about 12 MiB).
pub(crate) const MONITOR_MEMORY: u64 = 192 << 20;

/// The address the guest's first interface gets on QEMU's user-mode network, and its gateway.
/// The network is the VMM jail's own: its one way out is the jail's link to the egress proxy.
const GUEST_ADDRESS: &str = "10.0.2.15/24";
const GUEST_GATEWAY: &str = "10.0.2.2";

/// How long a guest may take from the jail's start to its agent's answer. Under TCG a guest
/// boots in 3 to 5 s on an idle host; many at once on two CPUs take longer.
const BOOT_TIMEOUT: Duration = Duration::from_secs(120);

/// Waits until the guest's agent answers through the supervisor (the handshake travels the
/// whole path: jail socket, supervisor, serial port, guest agent). Fails as soon as the
/// supervisor is gone: its exit means QEMU or virtiofsd exited (a guest that cannot boot
/// panics, and QEMU exits with it).
pub(crate) async fn wait_for_guest(
    id: &SandboxId,
    socket: &Path,
    alive: impl Fn() -> bool,
) -> Result<(), DriverError> {
    let log = socket.with_file_name(LOG);
    let began = Instant::now();
    loop {
        match crate::agent::AgentConn::connect(socket).await {
            Ok(_) => {
                tracing::debug!(sandbox = %id, elapsed_ms = began.elapsed().as_millis(), "guest agent answers");
                return Ok(());
            }
            Err(e) => {
                if !alive() {
                    // The operator's log gets the supervisor's report; the tenant gets the
                    // kind of failure only (the report names paths in the VMM's jail).
                    tracing::warn!(sandbox = %id, report = %log_tail(&log), "the virtual machine exited while it booted");
                    return Err(DriverError::VmBoot(
                        "the virtual machine exited while it booted".into(),
                    ));
                }
                if began.elapsed() > BOOT_TIMEOUT {
                    tracing::warn!(sandbox = %id, error = %e, "guest agent did not answer");
                    return Err(DriverError::VmBoot(format!(
                        "the virtual machine did not boot within {} s",
                        BOOT_TIMEOUT.as_secs()
                    )));
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// The end of the supervisor's report.
fn log_tail(log: &Path) -> String {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut f) = std::fs::File::open(log) else {
        return "(no report)".into();
    };
    let len = f.metadata().map_or(0, |m| m.len());
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(LOG_QUOTED)));
    let mut bytes = Vec::new();
    let _ = f.take(LOG_QUOTED).read_to_end(&mut bytes);
    String::from_utf8_lossy(&bytes).into_owned()
}

/// The files of a complete VMM root.
#[derive(Debug, Clone)]
pub struct VmAssets {
    root: PathBuf,
}

impl VmAssets {
    /// The VMM root under `data_dir`, or why the vm tier is unavailable (fit for a tenant: no
    /// host paths).
    pub fn find(data_dir: &Path) -> Result<Self, String> {
        let root = data_dir.join(VM_ROOT);
        for (path, what) in [
            (QEMU, "QEMU"),
            (VIRTIOFSD, "virtiofsd"),
            (KERNEL, "the guest kernel"),
            (BASE_INITRD, "the guest initramfs"),
        ] {
            if !in_root(&root, path).is_file() {
                return Err(format!(
                    "the server has no microVM root ({what} is missing; `scripts/vm/setup.sh` prepares it)"
                ));
            }
        }
        Ok(Self { root })
    }

    /// The VMM root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// QEMU in the VMM root (a copy of the host's, so it also runs outside the jail).
    pub fn qemu(&self) -> PathBuf {
        in_root(&self.root, QEMU)
    }

    /// The guest kernel.
    pub fn kernel(&self) -> PathBuf {
        in_root(&self.root, KERNEL)
    }

    /// The initramfs without an agent: it boots a kernel to its root mount and no further.
    pub fn base_initrd(&self) -> PathBuf {
        in_root(&self.root, BASE_INITRD)
    }

    /// QEMU's arguments (after the binary) for a guest that boots this root's kernel under
    /// KVM and nothing more: the base initramfs finds no root (`warren.root=none`), its init
    /// exits, the kernel panics, and `panic=-1` with `-no-reboot` ends QEMU. No `quiet`: the
    /// kernel's first console line is what a probe waits for.
    pub fn kvm_probe_args(&self) -> Vec<String> {
        let mut argv = machine_args("microvm", "kvm");
        argv.extend([
            "-smp".into(),
            "1".into(),
            "-m".into(),
            "128M".into(),
            "-kernel".into(),
            self.kernel().display().to_string(),
            "-initrd".into(),
            self.base_initrd().display().to_string(),
            "-append".into(),
            "panic=-1 console=ttyS0 warren.root=none warren.init=/nonexistent".into(),
        ]);
        argv
    }

    /// Writes the guest's initramfs, unless it is newer than both its parts: the base one
    /// with `agent` appended, so every guest runs the agent of the daemon that boots it (the
    /// protocol versions always match). Atomic, so concurrent boots may both call it.
    pub(crate) fn prepare(&self, agent: &Path) -> std::io::Result<()> {
        let (base, out) = (
            in_root(&self.root, BASE_INITRD),
            in_root(&self.root, INITRD),
        );
        let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified());
        if let Ok(done) = modified(&out)
            && modified(&base)? <= done
            && modified(agent)? <= done
        {
            return Ok(());
        }
        crate::vm_initrd::write_initrd(&base, agent, &out)
    }
}

fn in_root(root: &Path, path: &str) -> PathBuf {
    root.join(path.trim_start_matches('/'))
}

/// The guest's network, when the sandbox is linked to the egress proxy.
#[derive(Debug, Clone, Copy)]
pub(crate) struct GuestNet {
    /// Warren's DNS on the sandbox's link.
    pub nameserver: Ipv4Addr,
}

/// The VMM jail's one volume: the sandbox's root filesystem, for virtiofsd to serve. The
/// sandbox's own volumes would each need a virtio-fs device of their own: refused for now.
pub(crate) fn volumes(spec: &SandboxSpec, rootfs: &Path) -> Result<Vec<JailVolume>, DriverError> {
    if !spec.volumes.is_empty() {
        return Err(DriverError::Volume(
            "volumes cannot be mounted in vm-tier sandboxes yet".into(),
        ));
    }
    Ok(vec![JailVolume {
        host_path: rootfs.to_owned(),
        mount_path: GUEST_ROOT.into(),
        read_only: false,
    }])
}

/// The VMM jail's cgroup limits: the guest's RAM is the sandbox's memory, and the monitor's
/// own is on top of it.
pub(crate) fn cgroup_limits(mut limits: Limits) -> Limits {
    limits.memory_bytes = limits.memory_bytes.saturating_add(MONITOR_MEMORY);
    limits
}

/// The supervisor's arguments: its listening descriptor, `--vmm` and its spec. A guest linked
/// to the host gets Warren's DNS on its link (known from the slot) as its resolver.
pub(crate) fn supervisor_args(spec: &SandboxSpec, linked: bool, slot: u32) -> Vec<String> {
    let net = linked
        .then(|| warren_net::host_address(slot))
        .flatten()
        .map(|nameserver| GuestNet { nameserver });
    let mut args = crate::network::agent_args(false, slot);
    let vfs = format!("{SOCKETS}/vfs.sock");
    let serial = format!("{SOCKETS}/agent.sock");
    let vmm = VmmSpec {
        virtiofsd: virtiofsd_argv(&vfs),
        virtiofs_socket: vfs.clone(),
        qemu: qemu_argv(spec, net, &vfs, &serial),
        serial_socket: serial,
    };
    // A struct of strings always serializes.
    let json = serde_json::to_string(&vmm).unwrap_or_default();
    args.extend(["--vmm".into(), json]);
    args
}

/// virtiofsd inside the jail: the jail is its sandbox (it has no rights to make namespaces
/// there), and the jail's seccomp filter is its filter (its own one kills it on a syscall its
/// `--sandbox=none` path makes). It keeps only the capabilities it needs to act as the guest's
/// users; file handles would need CAP_DAC_READ_SEARCH, which the jail does not give.
fn virtiofsd_argv(socket: &str) -> Vec<String> {
    [
        VIRTIOFSD,
        "--socket-path",
        socket,
        "--shared-dir",
        GUEST_ROOT,
        "--sandbox=none",
        "--seccomp=none",
        "--cache=auto",
        "--inode-file-handles=never",
        "--modcaps=-mknod:-setfcap",
        "--rlimit-nofile=0",
        "--log-level=error",
    ]
    .map(str::to_owned)
    .to_vec()
}

/// What every guest QEMU starts here has in common, after the binary: the `machine`
/// (microvm: no PCI, no firmware tables, no legacy devices; virtio over MMIO) with modern
/// virtio-mmio, without which vhost-user-fs does not start; `accel`; no default devices, no
/// display, no reboot (a guest that panics ends QEMU); the console on stdio, for whoever
/// started QEMU to read.
fn machine_args(machine: &str, accel: &str) -> Vec<String> {
    [
        "-M",
        machine,
        "-global",
        "virtio-mmio.force-legacy=false",
        "-accel",
        accel,
        "-cpu",
        "max",
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-no-reboot",
        "-serial",
        "stdio",
    ]
    .map(str::to_owned)
    .to_vec()
}

fn qemu_argv(
    spec: &SandboxSpec,
    net: Option<GuestNet>,
    vfs_socket: &str,
    serial_socket: &str,
) -> Vec<String> {
    let vcpus = spec.limits.millicpus.div_ceil(1000).max(1);
    let mem_mib = (spec.limits.memory_bytes >> 20).max(128);
    let mut argv = vec![QEMU.to_owned()];
    argv.extend(machine_args(
        "microvm,memory-backend=mem,pit=off,pic=off,rtc=on",
        // No usable KVM on the hosts this was written on: TCG, with a small translation cache.
        "tcg,tb-size=32",
    ));
    argv.extend([
        "-kernel".into(),
        KERNEL.into(),
        "-initrd".into(),
        INITRD.into(),
    ]);
    argv.extend([
        "-smp".into(),
        vcpus.to_string(),
        "-m".into(),
        format!("{mem_mib}M"),
        // vhost-user needs the guest's RAM shared with virtiofsd.
        "-object".into(),
        format!("memory-backend-memfd,id=mem,size={mem_mib}M,share=on"),
        "-chardev".into(),
        format!("socket,id=vfs,path={vfs_socket}"),
        "-device".into(),
        "vhost-user-fs-device,chardev=vfs,tag=root".into(),
        "-chardev".into(),
        format!("socket,id=agent,path={serial_socket},server=on,wait=off"),
        "-device".into(),
        "virtio-serial-device".into(),
        "-device".into(),
        "virtserialport,chardev=agent,name=warren".into(),
        "-object".into(),
        "rng-random,id=rng,filename=/dev/urandom".into(),
        "-device".into(),
        "virtio-rng-device,rng=rng".into(),
    ]);
    if net.is_some() {
        argv.extend([
            "-netdev".into(),
            "user,id=net0".into(),
            "-device".into(),
            "virtio-net-device,netdev=net0".into(),
        ]);
    }
    // QEMU's own seccomp filter, under the jail's: no exec, no privilege change, no obsolete
    // syscalls, no scheduler or resource changes.
    argv.extend([
        "-sandbox".into(),
        "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny".into(),
        "-append".into(),
        kernel_cmdline(spec, net),
    ]);
    argv
}

/// The guest kernel's command line: what the initramfs and the guest agent read.
fn kernel_cmdline(spec: &SandboxSpec, net: Option<GuestNet>) -> String {
    // TCG has no calibrated TSC; without this the early boot spends a second calibrating.
    let mut line = format!(
        "tsc_early_khz=2000000 console=ttyS0 panic=-1 quiet init_on_alloc=0 warren.hostname={} warren.shm={}",
        spec.id,
        (64u64 << 20).min(spec.limits.memory_bytes / 2)
    );
    if let Some(net) = net {
        line.push_str(&format!(
            " warren.ip={GUEST_ADDRESS} warren.gw={GUEST_GATEWAY} warren.nameserver={}",
            net.nameserver
        ));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use warren_types::ImageRef;

    fn spec(millicpus: u32, memory_bytes: u64) -> SandboxSpec {
        SandboxSpec {
            id: SandboxId::generate(),
            image: ImageRef::default_image(),
            limits: Limits {
                millicpus,
                memory_bytes,
                ..Limits::default()
            },
            trust: String::new(),
            volumes: Vec::new(),
            tier: warren_driver::Tier::Vm,
        }
    }

    fn after<'a>(argv: &'a [String], flag: &str) -> Vec<&'a str> {
        argv.windows(2)
            .filter(|w| w[0] == flag)
            .map(|w| w[1].as_str())
            .collect()
    }

    #[test]
    fn the_guest_gets_the_sandboxs_cpus_and_memory() {
        let argv = qemu_argv(&spec(1500, 512 << 20), None, "/v", "/s");
        assert_eq!(after(&argv, "-smp"), ["2"]);
        assert_eq!(after(&argv, "-m"), ["512M"]);
        assert!(
            after(&argv, "-object")
                .iter()
                .any(|o| o.contains("size=512M,share=on"))
        );
        let argv = qemu_argv(&spec(0, 1 << 30), None, "/v", "/s");
        assert_eq!(after(&argv, "-smp"), ["1"]);
    }

    #[test]
    fn only_a_linked_sandbox_gets_a_network_device() {
        let s = spec(1000, 1 << 30);
        let argv = qemu_argv(&s, None, "/v", "/s");
        assert!(after(&argv, "-netdev").is_empty());
        assert!(!after(&argv, "-append")[0].contains("warren.ip="));
        let net = GuestNet {
            nameserver: Ipv4Addr::new(100, 64, 0, 1),
        };
        let argv = qemu_argv(&s, Some(net), "/v", "/s");
        assert_eq!(after(&argv, "-netdev"), ["user,id=net0"]);
        let cmdline = after(&argv, "-append")[0];
        assert!(
            cmdline.contains("warren.nameserver=100.64.0.1"),
            "{cmdline}"
        );
        assert!(
            cmdline.contains(&format!("warren.hostname={}", s.id)),
            "{cmdline}"
        );
    }

    #[test]
    fn qemu_runs_its_own_seccomp_filter_and_virtiofsd_serves_the_guest_root() {
        let argv = qemu_argv(&spec(1000, 1 << 30), None, "/v", "/s");
        assert!(after(&argv, "-sandbox")[0].starts_with("on,"));
        assert!(after(&argv, "-sandbox")[0].contains("spawn=deny"));
        let vfs = virtiofsd_argv("/v");
        assert_eq!(after(&vfs, "--shared-dir"), [GUEST_ROOT]);
        assert!(vfs.iter().any(|a| a == "--sandbox=none"));
    }

    #[test]
    fn the_kvm_probe_boots_the_roots_kernel_under_kvm_and_never_reboots() {
        let assets = VmAssets {
            root: PathBuf::from("/r"),
        };
        let argv = assets.kvm_probe_args();
        assert_eq!(after(&argv, "-accel"), ["kvm"]);
        assert_eq!(after(&argv, "-M"), ["microvm"]);
        assert_eq!(after(&argv, "-global"), ["virtio-mmio.force-legacy=false"]);
        assert_eq!(after(&argv, "-kernel"), ["/r/boot/vmlinuz"]);
        assert!(argv.iter().any(|a| a == "-no-reboot"));
        assert!(!after(&argv, "-append")[0].contains("quiet"));
    }

    #[test]
    fn an_incomplete_root_names_what_is_missing_without_host_paths() {
        let dir = tempfile::tempdir().unwrap();
        let err = VmAssets::find(dir.path()).unwrap_err();
        assert!(err.contains("QEMU is missing"), "{err}");
        assert!(!err.contains(&*dir.path().to_string_lossy()), "{err}");
    }
}

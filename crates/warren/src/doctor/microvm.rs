//! The doctor's microVM checks: whether the data dir's VMM root is complete (the vm tier is
//! offered), and whether this host's KVM really runs a guest. `/dev/kvm` existing proves
//! little: a PVM host's /dev/kvm opens and then runs no ordinary guest, so the probe boots one.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use warren_runtime::vm::VmAssets;

use super::Check;

/// How long the probe guest has to print its first kernel line. Under KVM that takes well
/// under a second, under TCG about one; a host whose KVM cannot run the guest spins until
/// killed, so this bounds what the probe costs doctor.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// What the vm tier does without KVM, and what the runtime does today either way.
const WITHOUT_KVM: &str = "the vm tier runs under TCG emulation (works; several seconds per boot), \
     as the runtime does on every host today";
const RUNTIME_TCG: &str = "the runtime boots every VM under TCG today (`-accel tcg` in warren-runtime's vm.rs), \
     so this is what KVM would buy, not what the vm tier uses";

pub(super) fn checks(data_dir: &Path) -> Vec<Check> {
    let assets = VmAssets::find(data_dir);
    let tier = Check {
        name: "microVM tier",
        ok: assets.is_ok(),
        required: false,
        detail: match &assets {
            Ok(a) => format!(
                "VMM root complete at {}: `tier: vm` is offered",
                a.root().display()
            ),
            Err(e) => format!("{e}: only the jail tier is offered"),
        },
        fix: format!("scripts/vm/setup.sh {}", data_dir.display()),
    };
    let kvm = match &assets {
        Ok(a) if Path::new("/dev/kvm").exists() => kvm_check(probe(a)),
        Ok(_) => kvm_check(Err(Failure::Other("no /dev/kvm".into()))),
        Err(_) => Check {
            name: "KVM acceleration",
            ok: false,
            required: false,
            detail: "not tried: no VMM root, so no guest kernel to boot".into(),
            fix: format!(
                "scripts/vm/setup.sh {}, then run doctor again",
                data_dir.display()
            ),
        },
    };
    vec![tier, kvm]
}

fn kvm_check(outcome: Result<Duration, Failure>) -> Check {
    let (ok, detail) = match outcome {
        Ok(took) => (
            true,
            format!(
                "a guest kernel started under `-accel kvm` in {} ms; {RUNTIME_TCG}",
                took.as_millis()
            ),
        ),
        Err(f) => (false, format!("{f}: {WITHOUT_KVM}")),
    };
    Check {
        name: "KVM acceleration",
        ok,
        required: false,
        detail,
        fix: "a host whose /dev/kvm runs ordinary guests (bare metal, or nested virtualization \
              enabled; a PVM kernel's KVM runs none): the jail tier does not need it"
            .into(),
    }
}

/// Why the probe guest did not start.
#[derive(Debug, PartialEq, Eq)]
enum Failure {
    /// QEMU said why (e.g. it could not initialize KVM).
    Qemu(String),
    /// Nothing from the guest kernel in [`PROBE_TIMEOUT`]; `stub` is whether QEMU's real-mode
    /// boot stub printed (it runs before the kernel, so the guest got that far).
    Silent {
        stub: bool,
    },
    Other(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Qemu(e) => write!(f, "QEMU under `-accel kvm`: {e}"),
            Self::Silent { stub: true } => write!(
                f,
                "under `-accel kvm` the guest printed only the boot stub's line (\"Probing EDD\"), no kernel output in {} s",
                PROBE_TIMEOUT.as_secs()
            ),
            Self::Silent { stub: false } => write!(
                f,
                "under `-accel kvm` no guest output in {} s",
                PROBE_TIMEOUT.as_secs()
            ),
            Self::Other(e) => f.write_str(e),
        }
    }
}

/// The guest kernel's first console line (`printk` timestamps start at `[    0.`).
fn kernel_started(serial: &str) -> bool {
    serial.contains("Linux version") || serial.contains("[    0.")
}

/// The probe's outcome from what the guest printed and what QEMU said on stderr.
fn verdict(serial: &str, stderr: &str) -> Result<(), Failure> {
    if kernel_started(serial) {
        return Ok(());
    }
    // The last lines carry the reason; earlier ones are warnings (e.g. about CPU features).
    let said: Vec<&str> = stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    if !said.is_empty() {
        let from = said.len().saturating_sub(2);
        let said: Vec<&str> = said[from..]
            .iter()
            .map(|l| l.trim_start_matches("qemu-system-x86_64: "))
            .collect();
        return Err(Failure::Qemu(said.join("; ")));
    }
    Err(Failure::Silent {
        stub: serial.contains("Probing EDD"),
    })
}

/// The host's QEMU, which runs against the host's libraries; else the VMM root's copy.
fn qemu_binary(assets: &VmAssets) -> PathBuf {
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join("qemu-system-x86_64"))
                .find(|p| p.is_file())
        })
        .unwrap_or_else(|| assets.qemu())
}

/// Boots the probe guest under KVM and waits for its kernel's first line. QEMU is killed and
/// reaped on every path, so no guest outlives doctor.
fn probe(assets: &VmAssets) -> Result<Duration, Failure> {
    let qemu = qemu_binary(assets);
    let mut child = Command::new(&qemu)
        .args(assets.kvm_probe_args())
        // stdin is no terminal, so QEMU's stdio backend leaves the caller's tty alone.
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Failure::Other(format!("failed to start {}: {e}", qemu.display())))?;
    let began = Instant::now();
    let (tx, rx) = mpsc::channel();
    let reader = child.stdout.take().map(|mut out| {
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = out.read(&mut buf) {
                if tx.send(buf[..n].to_vec()).is_err() {
                    break;
                }
            }
        })
    });
    let mut serial = Vec::new();
    loop {
        if kernel_started(&String::from_utf8_lossy(&serial)) {
            break;
        }
        let left = PROBE_TIMEOUT.saturating_sub(began.elapsed());
        match rx.recv_timeout(left) {
            Ok(chunk) => serial.extend(chunk),
            // Timed out, or QEMU closed its stdout (it exited).
            Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
        }
    }
    let took = began.elapsed();
    // Fails only when QEMU has exited already; wait reaps it either way.
    let _ = child.kill();
    let _ = child.wait();
    if let Some(reader) = reader {
        let _ = reader.join();
    }
    let mut stderr = String::new();
    if let Some(mut err) = child.stderr.take() {
        let _ = err.read_to_string(&mut stderr);
    }
    verdict(&String::from_utf8_lossy(&serial), &stderr).map(|()| took)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kernels_first_line_is_success_whatever_qemu_said() {
        let serial = "Probing EDD (edd=off to disable)... ok\n[    0.000000] Linux version 6.1.0";
        assert_eq!(
            verdict(serial, "warning: host doesn't support feature"),
            Ok(())
        );
        assert_eq!(verdict("[    0.004000] x86/fpu: ...", ""), Ok(()));
    }

    #[test]
    fn qemus_own_error_is_the_detail() {
        let stderr = "qemu-system-x86_64: warning: x\nqemu-system-x86_64: -accel kvm: failed to initialize kvm: Permission denied\n";
        let f = verdict("", stderr).unwrap_err();
        assert_eq!(
            f,
            Failure::Qemu(
                "warning: x; -accel kvm: failed to initialize kvm: Permission denied".into()
            )
        );
        assert!(f.to_string().contains("Permission denied"));
    }

    #[test]
    fn a_guest_stuck_before_its_kernel_says_so() {
        let f = verdict("Probing EDD (edd=off to disable)... ok\n", "").unwrap_err();
        assert_eq!(f, Failure::Silent { stub: true });
        assert!(f.to_string().contains("no kernel output in 10 s"), "{f}");
        assert_eq!(
            verdict("", "").unwrap_err(),
            Failure::Silent { stub: false }
        );
    }

    #[test]
    fn the_detail_states_the_consequence_for_the_vm_tier() {
        let bad = kvm_check(Err(Failure::Silent { stub: false }));
        assert!(!bad.ok && !bad.required);
        assert!(bad.detail.contains("TCG emulation"), "{}", bad.detail);
        let good = kvm_check(Ok(Duration::from_millis(300)));
        assert!(good.ok);
        assert!(good.detail.contains("under TCG today"), "{}", good.detail);
    }
}

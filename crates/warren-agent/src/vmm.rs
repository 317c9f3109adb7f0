//! Supervisor mode (`--vmm SPEC`): PID 1 of the jail that runs a sandbox's microVM.
//!
//! It starts virtiofsd, then qemu once virtiofsd's socket exists, connects to qemu's
//! virtio-serial socket and carries every connection to the jail's `agent.sock` to the guest
//! agent as one yamux stream ([`crate::mux`]). Host clients therefore speak to a VM exactly as to
//! a jail. When either child exits or the session breaks, it kills the other and returns: being
//! PID 1 of the jail's pid namespace, its exit tears the jail down, which is what the host
//! watches.

use std::collections::VecDeque;
use std::io::Write;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use caps::{CapSet, Capability, CapsHashSet};
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use tokio::net::{UnixListener, UnixStream};
use tokio::signal::unix::{SignalKind, signal};
use warren_proto::VmmSpec;

use crate::mux;

/// How long virtiofsd may take to create its socket, and qemu its serial socket.
const START_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a child's exit may lag behind the end of the session it caused.
const EXIT_GRACE: Duration = Duration::from_secs(2);
/// How often a socket path is looked for while a child starts.
const START_POLL: Duration = Duration::from_millis(20);
/// Bytes of the children's last output kept for the report of a VM that stopped.
const TAIL_BYTES: usize = 8192;

/// The last [`TAIL_BYTES`] that qemu (the guest's console included: `-serial stdio`) and
/// virtiofsd wrote. A VM that stops for a reason of its own (a guest that cannot mount its
/// root, a qemu that lacks a module) says why there, and nowhere else: the supervisor writes
/// it to its stderr, which the jail makes the host's log file. Bounded, so a guest that
/// floods its console costs nothing but this buffer.
#[derive(Debug, Clone, Default)]
struct Tail(Arc<Mutex<VecDeque<u8>>>);

impl Tail {
    fn push(&self, bytes: &[u8]) {
        let mut tail = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        tail.extend(bytes);
        let excess = tail.len().saturating_sub(TAIL_BYTES);
        tail.drain(..excess);
    }

    fn text(&self) -> String {
        let tail = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        String::from_utf8_lossy(&tail.iter().copied().collect::<Vec<u8>>()).into_owned()
    }

    /// Copies what a child writes to `fd` into the tail until it closes the pipe.
    fn collect(&self, fd: OwnedFd) {
        let tail = self.clone();
        tokio::spawn(async move {
            use tokio::io::AsyncReadExt;
            let Ok(mut pipe) = tokio::net::unix::pipe::Receiver::from_owned_fd(fd) else {
                return;
            };
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = pipe.read(&mut buf).await {
                tail.push(&buf[..n]);
            }
        });
    }
}

/// What virtiofsd needs to serve the sandbox's files as their owners: switch to the caller's
/// ids per request (SETUID, SETGID), create files for them (CHOWN, FOWNER, FSETID), reach any
/// file (DAC_OVERRIDE), and SETPCAP, without which libcap-ng refuses to drop its capability
/// sets at startup (the jail keeps it for the supervisor only in a vmm jail).
const VIRTIOFSD_CAPS: [Capability; 7] = [
    Capability::CAP_SETUID,
    Capability::CAP_SETGID,
    Capability::CAP_CHOWN,
    Capability::CAP_DAC_OVERRIDE,
    Capability::CAP_FOWNER,
    Capability::CAP_FSETID,
    Capability::CAP_SETPCAP,
];

/// Checks what the argv parser can check, so a bad spec fails before anything starts.
pub(crate) fn validate(spec: &VmmSpec) -> anyhow::Result<()> {
    for (what, argv) in [("virtiofsd", &spec.virtiofsd), ("qemu", &spec.qemu)] {
        match argv.first() {
            Some(bin) if Path::new(bin).is_absolute() => {}
            _ => bail!("the vmm spec's {what} argv must start with an absolute path"),
        }
    }
    for (what, path) in [
        ("virtiofs_socket", &spec.virtiofs_socket),
        ("serial_socket", &spec.serial_socket),
    ] {
        if !Path::new(path).is_absolute() {
            bail!("the vmm spec's {what} must be an absolute path");
        }
    }
    Ok(())
}

/// Runs the VM until it stops; `Ok` when qemu exited by itself with status 0 (the guest
/// powered off or its PID 1 died, with `panic=-1 -no-reboot`).
pub(crate) async fn supervise(spec: VmmSpec, listener: UnixListener) -> anyhow::Result<()> {
    for sock in [&spec.virtiofs_socket, &spec.serial_socket] {
        if let Some(dir) = Path::new(sock).parent() {
            create_private_dir(dir)?;
        }
        // A socket left by an earlier run would make the wait below end before the child is
        // ready.
        let _ = std::fs::remove_file(sock);
    }
    // The handler must exist before the first child starts, or an early exit is missed.
    let mut sigchld = signal(SignalKind::child()).context("installing SIGCHLD handler")?;
    let mut children = Children::default();
    let tail = Tail::default();
    let result = run(&spec, &listener, &mut sigchld, &mut children, &tail).await;
    children.kill_all();
    // The children were sent SIGKILL; reaping them is only tidiness before this PID 1 exits.
    let _ = tokio::time::timeout(Duration::from_secs(5), children.wait_all(&mut sigchld)).await;
    // Also when qemu exited cleanly: a guest that panics while it boots (too little memory,
    // no root) powers off as cleanly as one whose PID 1 shut it down, and only its console
    // tells them apart. Written before main reports an error; a closed stderr loses nothing.
    let _ = writeln!(
        std::io::stderr(),
        "the VM stopped; last output of qemu and virtiofsd:\n{}",
        tail.text()
    );
    result
}

async fn run(
    spec: &VmmSpec,
    listener: &UnixListener,
    sigchld: &mut tokio::signal::unix::Signal,
    children: &mut Children,
    tail: &Tail,
) -> anyhow::Result<()> {
    let virtiofsd = spawn_with_caps(&spec.virtiofsd, tail).context("failed to start virtiofsd")?;
    children.pids.push(virtiofsd);
    tokio::select! {
        r = wait_for_path(Path::new(&spec.virtiofs_socket)) => r.context("virtiofsd did not create its socket")?,
        (_, st) = children.next_exit(sigchld) => bail!("virtiofsd exited before it was ready: {st:?}"),
    }
    let qemu = spawn(&spec.qemu, tail).context("failed to start qemu")?;
    children.pids.push(qemu);
    let serial = tokio::select! {
        r = connect(Path::new(&spec.serial_socket)) => r.context("failed to connect to qemu's serial socket")?,
        (pid, st) = children.next_exit(sigchld) => {
            let who = if pid == qemu { "qemu" } else { "virtiofsd" };
            bail!("{who} exited during startup: {st:?}")
        }
    };
    let ended = tokio::select! {
        r = mux::mux(serial, listener) => Ended::Session(r),
        (pid, st) = children.next_exit(sigchld) => Ended::Child(pid, st),
    };
    // qemu's status is the best account of why the VM stopped, and it often comes last: qemu
    // closes the serial socket (ending the session) and virtiofsd's socket (virtiofsd then
    // exits) before it is reaped.
    let qemu_status = match ended {
        Ended::Child(pid, st) if pid == qemu => Some(st),
        _ => {
            let qemu_exit = async {
                loop {
                    let (pid, st) = children.next_exit(sigchld).await;
                    if pid == qemu {
                        return st;
                    }
                }
            };
            tokio::time::timeout(EXIT_GRACE, qemu_exit).await.ok()
        }
    };
    match (qemu_status, ended) {
        (Some(WaitStatus::Exited(_, 0)), _) => Ok(()),
        (Some(st), _) => bail!("qemu exited: {st:?}"),
        (None, Ended::Child(_, st)) => bail!("virtiofsd exited: {st:?}"),
        (None, Ended::Session(Ok(()))) => bail!("the guest closed the agent session"),
        (None, Ended::Session(Err(e))) => bail!("the agent session with the guest failed: {e}"),
    }
}

/// What ended a running VM first.
#[derive(Debug)]
enum Ended {
    Session(Result<(), yamux::ConnectionError>),
    Child(Pid, WaitStatus),
}

/// A directory only the supervisor's user may enter: the sockets in it are the VM's console
/// and file system.
fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("failed to create {}", dir.display()))
}

/// Starts virtiofsd with [`VIRTIOFSD_CAPS`]. The supervisor runs as uid 0 of a user namespace
/// whose bounding set is empty, so an exec keeps only what is in the inheritable set
/// (capabilities(7): for uid 0 the file sets count as full, `P'(permitted) = P(inheritable) |
/// P(bounding)`). Capabilities are per thread; the runtime is current-thread and the spawn
/// below forks from this very thread, and the set is cleared right after so qemu gets none.
fn spawn_with_caps(argv: &[String], tail: &Tail) -> anyhow::Result<Pid> {
    let wanted: CapsHashSet = VIRTIOFSD_CAPS.into_iter().collect();
    // In the jail the inheritable set already holds these (the jailer set it and
    // `init_process` kept it) and, the bounding set being empty, cannot gain a bit: this
    // narrows it to exactly these, or fails and leaves the jail's. Outside a jail (a host
    // root's test) it sets them.
    let _ = caps::set(None, CapSet::Inheritable, &wanted);
    let pid = spawn(argv, tail);
    let _ = caps::clear(None, CapSet::Inheritable);
    pid
}

fn spawn(argv: &[String], tail: &Tail) -> anyhow::Result<Pid> {
    let Some((bin, args)) = argv.split_first() else {
        bail!("empty argv");
    };
    let mut cmd = Command::new(bin);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .with_context(|| format!("failed to run {bin}"))?;
    if let Some(out) = child.stdout.take() {
        tail.collect(out.into());
    }
    if let Some(err) = child.stderr.take() {
        tail.collect(err.into());
    }
    // The child is reaped by `Children` with waitpid(-1) like every orphan of this PID 1;
    // dropping the `Child` handle neither waits nor kills.
    let pid = i32::try_from(child.id()).context("pid out of range")?;
    Ok(Pid::from_raw(pid))
}

async fn wait_for_path(path: &Path) -> anyhow::Result<()> {
    let deadline = Instant::now() + START_TIMEOUT;
    while !path.exists() {
        if Instant::now() > deadline {
            bail!("{} did not appear within {START_TIMEOUT:?}", path.display());
        }
        tokio::time::sleep(START_POLL).await;
    }
    Ok(())
}

/// qemu creates its serial socket a moment after it starts; connecting is retried until then.
async fn connect(path: &Path) -> anyhow::Result<UnixStream> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        match UnixStream::connect(path).await {
            Ok(s) => return Ok(s),
            Err(e) if Instant::now() > deadline => {
                return Err(e).with_context(|| format!("connecting to {}", path.display()));
            }
            Err(_) => tokio::time::sleep(START_POLL).await,
        }
    }
}

/// The supervisor's children, reaped here with every other orphan of its pid namespace.
#[derive(Debug, Default)]
struct Children {
    /// Started and not yet reaped (so their pids cannot have been reused).
    pids: Vec<Pid>,
}

impl Children {
    /// Reaps whatever has exited until one of `pids` has, and returns it.
    async fn next_exit(&mut self, sigchld: &mut tokio::signal::unix::Signal) -> (Pid, WaitStatus) {
        loop {
            while let Ok(st) = waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                let Some(pid) = st.pid() else { break };
                if matches!(st, WaitStatus::Exited(..) | WaitStatus::Signaled(..))
                    && let Some(i) = self.pids.iter().position(|p| *p == pid)
                {
                    self.pids.swap_remove(i);
                    return (pid, st);
                }
            }
            // No more children at all (ECHILD) also ends up here: the next SIGCHLD never comes,
            // which is right, since then nothing is left to watch.
            if sigchld.recv().await.is_none() {
                std::future::pending::<()>().await;
            }
        }
    }

    async fn wait_all(&mut self, sigchld: &mut tokio::signal::unix::Signal) {
        while !self.pids.is_empty() {
            self.next_exit(sigchld).await;
        }
    }

    fn kill_all(&self) {
        for pid in &self.pids {
            let _ = kill(*pid, Signal::SIGKILL);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tail_keeps_only_the_last_bytes() {
        let tail = Tail::default();
        tail.push(b"early line\n");
        tail.push(&vec![b'x'; TAIL_BYTES]);
        tail.push(b"Kernel panic - not syncing\n");
        let text = tail.text();
        assert_eq!(text.len(), TAIL_BYTES);
        assert!(!text.contains("early line"));
        assert!(text.ends_with("Kernel panic - not syncing\n"));
    }

    #[tokio::test]
    async fn the_tail_collects_what_a_child_writes() {
        let tail = Tail::default();
        let (rd, wr) = std::io::pipe().unwrap();
        tail.collect(rd.into());
        let mut wr = std::fs::File::from(OwnedFd::from(wr));
        wr.write_all(b"qemu-system-x86_64: could not load module\n")
            .unwrap();
        drop(wr);
        let deadline = Instant::now() + Duration::from_secs(5);
        while !tail.text().contains("could not load module") {
            assert!(Instant::now() < deadline, "{:?}", tail.text());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn sh(script: &str) -> Vec<String> {
        vec!["/bin/sh".into(), "-c".into(), script.into()]
    }

    fn spec(dir: &Path, virtiofsd: &str, qemu: Vec<String>) -> VmmSpec {
        let run = dir.join("run/vm");
        VmmSpec {
            virtiofsd: sh(virtiofsd),
            virtiofs_socket: run.join("vfs.sock").to_str().unwrap().into(),
            qemu,
            serial_socket: run.join("serial.sock").to_str().unwrap().into(),
        }
    }

    fn listener(dir: &Path) -> UnixListener {
        UnixListener::bind(dir.join("agent.sock")).unwrap()
    }

    /// A stand-in virtiofsd: makes its socket path exist, then runs until killed, leaving its
    /// pid behind.
    fn fake_virtiofsd(dir: &Path) -> String {
        let pidfile = dir.join("vfs.pid");
        format!(
            "echo $$ > {}; touch {}/run/vm/vfs.sock; exec sleep 60",
            pidfile.display(),
            dir.display()
        )
    }

    fn killed(dir: &Path) -> bool {
        let pid = std::fs::read_to_string(dir.join("vfs.pid")).unwrap();
        !Path::new(&format!("/proc/{}", pid.trim())).exists()
    }

    #[tokio::test]
    async fn qemu_failing_at_startup_stops_virtiofsd() {
        let _one_at_a_time = crate::CHILD_TESTS.lock().await;
        let dir = tempfile::tempdir().unwrap();
        let spec = spec(dir.path(), &fake_virtiofsd(dir.path()), sh("exit 3"));
        let err = supervise(spec, listener(dir.path())).await.unwrap_err();
        assert!(
            format!("{err:#}").contains("qemu exited during startup"),
            "{err:#}"
        );
        assert!(killed(dir.path()), "virtiofsd is killed and reaped");
        let mode = std::fs::metadata(dir.path().join("run/vm")).unwrap();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
            0o700
        );
    }

    #[tokio::test]
    async fn virtiofsd_dying_before_its_socket_fails_the_start() {
        let _one_at_a_time = crate::CHILD_TESTS.lock().await;
        let dir = tempfile::tempdir().unwrap();
        let spec = spec(dir.path(), "exit 1", sh("exit 0"));
        let err = supervise(spec, listener(dir.path())).await.unwrap_err();
        assert!(
            format!("{err:#}").contains("virtiofsd exited before it was ready"),
            "{err:#}"
        );
    }

    /// A stand-in qemu serves the serial socket, sends the guest's goodbye (EOF) and exits 0,
    /// as qemu does when the guest powers off: the supervisor returns Ok.
    #[tokio::test]
    async fn a_guest_poweroff_is_a_clean_stop() {
        let _one_at_a_time = crate::CHILD_TESTS.lock().await;
        if !Path::new("/usr/bin/python3").exists() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let serial = dir.path().join("run/vm/serial.sock");
        let qemu = vec![
            "/usr/bin/python3".into(),
            "-c".into(),
            format!(
                "import socket,time\ns=socket.socket(socket.AF_UNIX)\ns.bind('{}')\ns.listen()\n\
                 c,_=s.accept()\ntime.sleep(0.3)\nc.close()\ntime.sleep(0.2)",
                serial.display()
            ),
        ];
        let spec = spec(dir.path(), &fake_virtiofsd(dir.path()), qemu);
        let r = tokio::time::timeout(
            Duration::from_secs(20),
            supervise(spec, listener(dir.path())),
        )
        .await
        .unwrap();
        assert!(r.is_ok(), "{r:?}");
        assert!(killed(dir.path()));
    }
}

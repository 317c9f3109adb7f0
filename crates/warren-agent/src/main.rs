//! `warren-agent`: PID 1 inside every sandbox.
//!
//! It runs the host's commands, serves and searches files and dials ports inside the sandbox,
//! speaking `warren-proto` on a unix socket. As PID 1 it also reaps every orphan in the sandbox.
//! If it dies the sandbox dies, so nothing a client sends may crash it: a bad frame closes that
//! client's connection and nothing else.
//!
//! Usage: `warren-agent --listen-fd N` (the jailer's already listening socket) or
//! `warren-agent --listen PATH` (bind a socket, for tests outside a jail), plus
//! `--nameserver ADDR` in a sandbox linked to the host: the agent points `/etc/resolv.conf` at
//! Warren's DNS before it serves anything, so the host needs no round trip for it.
//!
//! The microVM tier runs the same binary twice: `--listen-fd N --vmm SPEC` is the jail's PID 1
//! that starts virtiofsd and qemu and carries every connection into the VM ([`vmm`]), and
//! `--vport PATH` is the guest's PID 1 serving those connections from the virtio-serial port
//! ([`guest`]).

mod conn;
mod etc;
mod exec;
mod files;
mod guest;
#[allow(unsafe_code)]
mod launch;
mod mux;
#[allow(unsafe_code)]
mod ownership;
#[allow(unsafe_code)]
mod pty;
mod registry;
mod ring;
mod root_acl;
mod search;
mod session;
mod users;
mod vmm;
mod wire;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::net::UnixListener;
use tokio::signal::unix::{SignalKind, signal};

use crate::registry::Agent;

/// Tests that start and reap children (`waitpid(-1)`) would steal each other's exits when
/// `cargo test` runs them as threads of one process; they take this first.
#[cfg(test)]
static CHILD_TESTS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[derive(Debug)]
enum Listen {
    Fd(i32),
    Path(PathBuf),
}

/// What this process is.
#[derive(Debug)]
enum Mode {
    /// The agent of a jail, serving connections on a unix socket.
    Serve(Listen),
    /// The jail's PID 1 of a microVM: runs it and carries connections into it.
    Vmm(Listen, Box<warren_proto::VmmSpec>),
    /// The agent as a microVM's PID 1, serving the host over this virtio-serial port.
    Guest(PathBuf),
}

#[derive(Debug)]
struct Args {
    mode: Mode,
    nameserver: Option<std::net::Ipv4Addr>,
}

const USAGE: &str = "usage: warren-agent (--listen-fd N | --listen PATH) [--nameserver IPV4] [--vmm SPEC_JSON] | warren-agent --vport PATH";

fn parse_args(mut args: impl Iterator<Item = std::ffi::OsString>) -> anyhow::Result<Args> {
    let mut listen = None;
    let mut nameserver = None;
    let mut vmm = None;
    let mut vport = None;
    while let Some(arg) = args.next() {
        let value = |args: &mut dyn Iterator<Item = std::ffi::OsString>| {
            args.next()
                .with_context(|| format!("{} needs a value; {USAGE}", arg.to_string_lossy()))
        };
        match arg.to_str() {
            Some("--listen-fd") => {
                let v = value(&mut args)?;
                let fd = v
                    .to_str()
                    .and_then(|s| s.parse().ok())
                    .context("--listen-fd takes a number")?;
                listen = Some(Listen::Fd(fd));
            }
            Some("--listen") => listen = Some(Listen::Path(PathBuf::from(value(&mut args)?))),
            Some("--nameserver") => {
                let v = value(&mut args)?;
                let addr = v
                    .to_str()
                    .and_then(|s| s.parse().ok())
                    .context("--nameserver takes an IPv4 address")?;
                nameserver = Some(addr);
            }
            Some("--vmm") => {
                let v = value(&mut args)?;
                let spec: warren_proto::VmmSpec =
                    serde_json::from_str(v.to_str().context("--vmm takes a JSON spec")?)
                        .context("--vmm takes a JSON spec")?;
                vmm::validate(&spec)?;
                vmm = Some(Box::new(spec));
            }
            Some("--vport") => vport = Some(PathBuf::from(value(&mut args)?)),
            _ => bail!("unexpected argument {}; {USAGE}", arg.to_string_lossy()),
        }
    }
    let mode = match (listen, vmm, vport) {
        (Some(listen), None, None) => Mode::Serve(listen),
        (Some(listen), Some(spec), None) if nameserver.is_none() => Mode::Vmm(listen, spec),
        // The guest learns its resolver from the kernel command line (`warren.nameserver=`).
        (None, None, Some(port)) if nameserver.is_none() => Mode::Guest(port),
        _ => bail!("{USAGE}"),
    };
    Ok(Args { mode, nameserver })
}

/// Points the sandbox's resolver at Warren's DNS (names are resolved on the host by the
/// egress proxy). In a jail the runtime has usually bound that very file over the image's
/// (read-only): then there is nothing to write, and nothing is. A failure (a tenant made it a
/// directory before a restart) leaves whatever is there: PID 1 has no log to say so and must
/// not die for it, and commands then fail to resolve names, visibly.
pub(crate) fn write_resolv_conf(nameserver: std::net::Ipv4Addr) {
    let text = warren_proto::resolv_conf(nameserver);
    let _ = etc::edit(
        std::path::Path::new("/etc/resolv.conf"),
        etc::Links::Follow,
        true,
        |now| (now != text).then(|| text.clone()),
    );
}

/// Gives the sandbox its own `/etc/machine-id` when its image has none (or an empty one), as
/// systemd does at a machine's first boot: software that tells machines apart by it (D-Bus,
/// journald, telemetry) must not see every sandbox as one machine. In a jail the runtime has
/// usually bound the sandbox's id over an image's empty file already; an image with an id of
/// its own (a snapshot captured before ids were bound) keeps it, as a cloned VM does.
fn ensure_machine_id() {
    let _ = etc::edit(
        std::path::Path::new("/etc/machine-id"),
        etc::Links::Refuse,
        true,
        |now| {
            now.trim()
                .is_empty()
                .then(|| format!("{}\n", uuid::Uuid::new_v4().simple()))
        },
    );
}

/// The process-wide setup every sandbox relies on. A VMM supervisor keeps its inheritable set
/// until virtiofsd has started with it: in the jail's empty bounding set a cleared bit can
/// never be set again ([`vmm`] clears it before qemu starts).
fn init_process(vmm: bool) {
    pty::ignore_sigpipe();
    // Orphans must come back to the agent for reaping also when it is not PID 1.
    let _ = nix::sys::prctl::set_child_subreaper(true);
    // Commands must start without capabilities. Already-empty sets are fine.
    if !vmm {
        let _ = caps::clear(None, caps::CapSet::Inheritable);
    }
    let _ = caps::clear(None, caps::CapSet::Ambient);
}

/// Whether this user namespace lets the agent set supplementary groups. When it is denied the
/// groups are fixed for every process in it, so there is nothing to drop.
fn setgroups_allowed() -> bool {
    std::fs::read_to_string("/proc/self/setgroups").map_or(true, |s| s.trim() != "deny")
}

fn main() -> anyhow::Result<()> {
    let args = parse_args(std::env::args_os().skip(1))?;
    init_process(matches!(args.mode, Mode::Vmm(..)));
    // The supervisor's root is the read-only VMM root: no machine id or resolver to set there.
    if !matches!(args.mode, Mode::Vmm(..)) {
        ensure_machine_id();
    }
    if let Some(ns) = args.nameserver {
        write_resolv_conf(ns);
    }
    if matches!(args.mode, Mode::Guest(_)) {
        guest::setup();
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("building runtime")?;
    rt.block_on(async move {
        match args.mode {
            Mode::Serve(listen) => run(bind(listen)?).await,
            Mode::Vmm(listen, spec) => vmm::supervise(*spec, bind(listen)?).await,
            Mode::Guest(port) => {
                let agent = start_agent()?;
                guest::serve(agent, &port).await
            }
        }
    })
}

fn bind(listen: Listen) -> anyhow::Result<UnixListener> {
    Ok(match listen {
        Listen::Fd(fd) => {
            let l = pty::adopt_listener(fd).with_context(|| format!("adopting listen fd {fd}"))?;
            l.set_nonblocking(true)?;
            UnixListener::from_std(l)?
        }
        Listen::Path(path) => {
            let _ = std::fs::remove_file(&path);
            UnixListener::bind(&path).with_context(|| format!("binding {}", path.display()))?
        }
    })
}

/// The agent's state, with its reaper running.
fn start_agent() -> anyhow::Result<Arc<Agent>> {
    let agent = Agent::new(setgroups_allowed());

    // The handler must exist before the first command starts, or an early exit is missed.
    let mut sigchld = signal(SignalKind::child()).context("installing SIGCHLD handler")?;
    let reaper = Arc::clone(&agent);
    tokio::spawn(async move {
        loop {
            reaper.reap();
            if sigchld.recv().await.is_none() {
                return;
            }
        }
    });
    Ok(agent)
}

async fn run(listener: UnixListener) -> anyhow::Result<()> {
    let agent = start_agent()?;
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(conn::serve(Arc::clone(&agent), stream));
            }
            // Out of descriptors or memory for a moment: back off rather than spin or exit.
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> impl Iterator<Item = std::ffi::OsString> {
        a.iter()
            .map(std::ffi::OsString::from)
            .collect::<Vec<_>>()
            .into_iter()
    }

    fn listen_of(a: anyhow::Result<Args>) -> Option<Listen> {
        match a.ok()?.mode {
            Mode::Serve(l) => Some(l),
            _ => None,
        }
    }

    #[test]
    fn parses_both_forms_and_rejects_junk() {
        assert!(matches!(
            listen_of(parse_args(args(&["--listen-fd", "3"]))),
            Some(Listen::Fd(3))
        ));
        assert!(
            matches!(listen_of(parse_args(args(&["--listen", "/a.sock"]))), Some(Listen::Path(p)) if p == std::path::Path::new("/a.sock"))
        );
        assert!(parse_args(args(&[])).is_err());
        assert!(parse_args(args(&["--listen-fd"])).is_err());
        assert!(parse_args(args(&["--listen-fd", "x"])).is_err());
        assert!(parse_args(args(&["--verbose"])).is_err());
        let a = parse_args(args(&["--listen-fd", "3", "--nameserver", "100.64.0.1"])).unwrap();
        assert_eq!(a.nameserver, Some(std::net::Ipv4Addr::new(100, 64, 0, 1)));
        assert!(parse_args(args(&["--listen-fd", "3", "--nameserver", "x"])).is_err());
    }

    const SPEC: &str = r#"{"virtiofsd":["/usr/bin/virtiofsd","--socket-path=/run/vm/vfs.sock"],"virtiofs_socket":"/run/vm/vfs.sock","qemu":["/usr/bin/qemu-system-x86_64","-M","microvm"],"serial_socket":"/run/vm/serial.sock"}"#;

    #[test]
    fn parses_vmm_and_vport_modes() {
        match parse_args(args(&["--listen-fd", "3", "--vmm", SPEC]))
            .unwrap()
            .mode
        {
            Mode::Vmm(Listen::Fd(3), spec) => {
                assert_eq!(spec.qemu[0], "/usr/bin/qemu-system-x86_64");
                assert_eq!(spec.serial_socket, "/run/vm/serial.sock");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse_args(args(&["--vmm", SPEC, "--listen", "/t/a.sock"]))
                .unwrap()
                .mode,
            Mode::Vmm(Listen::Path(_), _)
        ));
        assert!(matches!(
            parse_args(args(&["--vport", "/dev/virtio-ports/warren"])).unwrap().mode,
            Mode::Guest(p) if p == std::path::Path::new("/dev/virtio-ports/warren")
        ));
        // --vmm needs a listener; --vport takes none; the modes exclude each other.
        assert!(parse_args(args(&["--vmm", SPEC])).is_err());
        assert!(parse_args(args(&["--vport", "/p", "--listen-fd", "3"])).is_err());
        assert!(parse_args(args(&["--vport", "/p", "--nameserver", "10.0.0.1"])).is_err());
        assert!(parse_args(args(&["--listen-fd", "3", "--vmm", SPEC, "--vport", "/p"])).is_err());
        assert!(parse_args(args(&["--vport"])).is_err());
        // Bad specs: not JSON, an unknown field, a relative binary, a relative socket.
        assert!(parse_args(args(&["--listen-fd", "3", "--vmm", "{"])).is_err());
        let extra = SPEC.replacen('{', r#"{"x":1,"#, 1);
        assert!(parse_args(args(&["--listen-fd", "3", "--vmm", &extra])).is_err());
        let relative = SPEC.replace("\"/usr/bin/qemu-system-x86_64\"", "\"qemu\"");
        assert!(parse_args(args(&["--listen-fd", "3", "--vmm", &relative])).is_err());
        let no_argv = SPEC.replace("[\"/usr/bin/qemu-system-x86_64\",\"-M\",\"microvm\"]", "[]");
        assert!(parse_args(args(&["--listen-fd", "3", "--vmm", &no_argv])).is_err());
        let rel_sock = SPEC.replace("\"/run/vm/serial.sock\"", "\"serial.sock\"");
        assert!(parse_args(args(&["--listen-fd", "3", "--vmm", &rel_sock])).is_err());
    }
}

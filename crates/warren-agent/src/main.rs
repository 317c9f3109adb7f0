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

mod conn;
mod exec;
mod files;
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
mod wire;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::net::UnixListener;
use tokio::signal::unix::{SignalKind, signal};

use crate::registry::Agent;

#[derive(Debug)]
enum Listen {
    Fd(i32),
    Path(PathBuf),
}

#[derive(Debug)]
struct Args {
    listen: Listen,
    nameserver: Option<std::net::Ipv4Addr>,
}

const USAGE: &str = "usage: warren-agent (--listen-fd N | --listen PATH) [--nameserver IPV4]";

fn parse_args(mut args: impl Iterator<Item = std::ffi::OsString>) -> anyhow::Result<Args> {
    let mut listen = None;
    let mut nameserver = None;
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
            _ => bail!("unexpected argument {}; {USAGE}", arg.to_string_lossy()),
        }
    }
    Ok(Args {
        listen: listen.context(USAGE)?,
        nameserver,
    })
}

/// Points the sandbox's resolver at Warren's DNS (names are resolved on the host by the
/// egress proxy). A failure (a tenant made it a directory before a restart) leaves whatever is
/// there: PID 1 has no log to say so and must not die for it, and commands then fail to
/// resolve names, visibly.
fn write_resolv_conf(nameserver: std::net::Ipv4Addr) {
    let text = format!(
        "# Written by Warren: names are resolved on the host by the egress proxy.\nnameserver {nameserver}\noptions timeout:2 attempts:2\n"
    );
    let _ = std::fs::write("/etc/resolv.conf", text);
}

/// Gives the sandbox its own `/etc/machine-id` when its image has none (or an empty one), as
/// systemd does at a machine's first boot: software that tells machines apart by it (D-Bus,
/// journald, telemetry) must not see every sandbox as one machine. A sandbox made from a
/// snapshot keeps the id it was captured with, as a cloned VM does.
fn ensure_machine_id() {
    let path = std::path::Path::new("/etc/machine-id");
    let empty = std::fs::read(path).map_or(true, |b| b.iter().all(u8::is_ascii_whitespace));
    if empty && std::fs::symlink_metadata(path).map_or(true, |m| m.is_file()) {
        let id = format!("{}\n", uuid::Uuid::new_v4().simple());
        let _ = std::fs::write(path, id);
    }
}

/// The process-wide setup every sandbox relies on.
fn init_process() {
    pty::ignore_sigpipe();
    // Orphans must come back to the agent for reaping also when it is not PID 1.
    let _ = nix::sys::prctl::set_child_subreaper(true);
    // Commands must start without capabilities. Already-empty sets are fine.
    let _ = caps::clear(None, caps::CapSet::Inheritable);
    let _ = caps::clear(None, caps::CapSet::Ambient);
}

/// Whether this user namespace lets the agent set supplementary groups. When it is denied the
/// groups are fixed for every process in it, so there is nothing to drop.
fn setgroups_allowed() -> bool {
    std::fs::read_to_string("/proc/self/setgroups").map_or(true, |s| s.trim() != "deny")
}

fn main() -> anyhow::Result<()> {
    let args = parse_args(std::env::args_os().skip(1))?;
    init_process();
    ensure_machine_id();
    if let Some(ns) = args.nameserver {
        write_resolv_conf(ns);
    }
    let listen = args.listen;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("building runtime")?;
    rt.block_on(run(listen))
}

async fn run(listen: Listen) -> anyhow::Result<()> {
    let listener = match listen {
        Listen::Fd(fd) => {
            let l = pty::adopt_listener(fd).with_context(|| format!("adopting listen fd {fd}"))?;
            l.set_nonblocking(true)?;
            UnixListener::from_std(l)?
        }
        Listen::Path(path) => {
            let _ = std::fs::remove_file(&path);
            UnixListener::bind(&path).with_context(|| format!("binding {}", path.display()))?
        }
    };
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

    #[test]
    fn parses_both_forms_and_rejects_junk() {
        assert!(matches!(
            parse_args(args(&["--listen-fd", "3"])).map(|a| a.listen),
            Ok(Listen::Fd(3))
        ));
        assert!(
            matches!(parse_args(args(&["--listen", "/a.sock"])).map(|a| a.listen), Ok(Listen::Path(p)) if p == std::path::Path::new("/a.sock"))
        );
        assert!(parse_args(args(&[])).is_err());
        assert!(parse_args(args(&["--listen-fd"])).is_err());
        assert!(parse_args(args(&["--listen-fd", "x"])).is_err());
        assert!(parse_args(args(&["--verbose"])).is_err());
        let a = parse_args(args(&["--listen-fd", "3", "--nameserver", "100.64.0.1"])).unwrap();
        assert_eq!(a.nameserver, Some(std::net::Ipv4Addr::new(100, 64, 0, 1)));
        assert!(parse_args(args(&["--listen-fd", "3", "--nameserver", "x"])).is_err());
    }
}

//! The microVM tier's host-side pieces that need no VM (the initrd with the agent appended),
//! plus by-hand checks against a VM started outside any test (`#[ignore]`d; see each one).
//!
//! `vm_initrd` is not wired into the library yet, so it is compiled into this test crate
//! directly, which also runs its unit tests.

// An integration-test crate is test code throughout.
#![allow(
    unreachable_pub,
    clippy::tests_outside_test_module,
    clippy::unwrap_used,
    clippy::print_stdout
)]

#[path = "../src/vm_initrd.rs"]
mod vm_initrd;

use std::path::PathBuf;
use std::time::Instant;

use warren_proto::{ExecSpec, Request, Response, Stream};
use warren_runtime::AgentConn;

fn env_path(name: &str) -> PathBuf {
    PathBuf::from(std::env::var_os(name).unwrap_or_else(|| panic!("set {name}")))
}

/// `WARREN_VM_BASE=…/initramfs.cpio.gz WARREN_VM_AGENT=…/warren-agent WARREN_VM_OUT=…
/// cargo nextest run -p warren-runtime --test vm --run-ignored only -E 'test(append_agent)'`
#[test]
#[ignore = "by hand: writes the initrd of a VM run"]
fn append_agent_by_hand() {
    let out = env_path("WARREN_VM_OUT");
    vm_initrd::write_initrd(
        &env_path("WARREN_VM_BASE"),
        &env_path("WARREN_VM_AGENT"),
        &out,
    )
    .unwrap();
    println!("wrote {}", out.display());
}

/// Runs a shell command through the agent at `sock`, returns (stdout, exit code).
async fn sh(sock: &std::path::Path, script: &str) -> (String, i32) {
    let mut c = AgentConn::connect(sock).await.unwrap();
    c.send(&Request::Exec(ExecSpec {
        argv: vec!["/bin/sh".into(), "-c".into(), script.into()],
        ..Default::default()
    }))
    .await
    .unwrap();
    let mut out = Vec::new();
    loop {
        match c.recv().await.unwrap() {
            Some(Response::Started { .. }) => {}
            Some(Response::Output {
                stream: Stream::Stdout,
                data,
                ..
            }) => out.extend_from_slice(&data),
            Some(Response::Output { .. }) => {}
            Some(Response::Exit(st)) => return (String::from_utf8_lossy(&out).into(), st.code),
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// Against a supervisor started by hand (`warren-agent --listen $WARREN_VM_SOCK --vmm …`),
/// started just before: the first connection waits for the guest to boot.
#[tokio::test]
#[ignore = "by hand: needs a running VM supervisor"]
async fn guest_answers_through_the_supervisor() {
    let sock = env_path("WARREN_VM_SOCK");
    let t0 = Instant::now();
    let mut first = None;
    while first.is_none() {
        match AgentConn::connect(&sock).await {
            Ok(c) => first = Some(c),
            Err(e) if t0.elapsed().as_secs() < 30 => {
                println!("not yet: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            Err(e) => panic!("{e}"),
        }
    }
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    println!(
        "first handshake after {:?} (at epoch {:.3})",
        t0.elapsed(),
        since_epoch.as_secs_f64()
    );
    let (a, b) = tokio::join!(
        sh(&sock, "uname -r"),
        sh(&sock, "cat /proc/cpuinfo | grep -c processor")
    );
    println!("uname -r: {a:?}\nprocessors: {b:?}");
    let more = sh(
        &sock,
        "echo pid1=$(cat /proc/1/comm) host=$(hostname); grep -v '^Iface' /proc/net/route; \
         cat /sys/class/net/eth0/operstate; ls -l /dev/ptmx /dev/pts/ptmx; \
         mount | grep -E ' /(dev/pts|dev/shm|run) '; grep nameserver /etc/resolv.conf; \
         echo agent-rss-kib=$(grep VmRSS /proc/1/status | tr -s ' ' | cut -d' ' -f2)",
    )
    .await;
    println!("{}", more.0);
    assert_eq!(a.1, 0);
    assert_eq!(b.1, 0);
    if std::env::var_os("WARREN_VM_KEEP").is_some() {
        return;
    }
    // Powers the guest off: qemu exits 0, and so should the supervisor.
    let mut c = AgentConn::connect(&sock).await.unwrap();
    c.send(&Request::Exec(ExecSpec {
        argv: vec![
            "/bin/sh".into(),
            "-c".into(),
            "sync; echo o > /proc/sysrq-trigger".into(),
        ],
        ..Default::default()
    }))
    .await
    .unwrap();
    while let Ok(Some(_)) = c.recv().await {}
    println!("poweroff sent");
}

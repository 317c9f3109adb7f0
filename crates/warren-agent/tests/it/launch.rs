//! How a command starts: found and run as `execvp` would, with a clean slate of signals and
//! descriptors whatever the agent itself holds.

use std::os::unix::fs::PermissionsExt;

use warren_proto::{ErrorKind, ExecSpec, Request, Response};

use crate::support::Agent;

fn argv(args: &[&str]) -> ExecSpec {
    ExecSpec {
        argv: args.iter().map(|a| (*a).to_owned()).collect(),
        ..Default::default()
    }
}

fn write_mode(path: &std::path::Path, body: &str, mode: u32) {
    std::fs::write(path, body).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn the_commands_path_is_searched_and_a_script_without_a_shebang_runs_in_sh() {
    let dir = tempfile::tempdir().unwrap();
    let (denied, bin) = (dir.path().join("denied"), dir.path().join("bin"));
    std::fs::create_dir(&denied).unwrap();
    std::fs::create_dir(&bin).unwrap();
    // Not executable where it is found first: skipped, as execvp skips it.
    write_mode(&denied.join("hello-script"), "echo wrong\n", 0o644);
    // No `#!`: the kernel refuses it (ENOEXEC) and /bin/sh runs it, with the arguments.
    write_mode(&bin.join("hello-script"), "echo \"hi $1 $0\"\n", 0o755);
    let path = format!("{}:{}:/usr/bin:/bin", denied.display(), bin.display());

    let agent = Agent::start();
    let out = agent.run(ExecSpec {
        env: vec![("PATH".into(), path.clone())],
        ..argv(&["hello-script", "there"])
    });
    let script = bin.join("hello-script");
    assert_eq!(
        out.out(),
        format!("hi there {}\n", script.display()),
        "{}",
        out.err()
    );
    assert_eq!(out.code(), 0);

    // Found only where it may not be run: permission denied, not "not found".
    let mut c = agent.conn();
    c.send(&Request::Exec(ExecSpec {
        env: vec![("PATH".into(), denied.display().to_string())],
        ..argv(&["hello-script"])
    }));
    match c.recv() {
        Some(Response::Error(e)) => {
            assert_eq!(e.kind, ErrorKind::SpawnFailed, "{e:?}");
            assert!(e.message.contains("permission denied"), "{}", e.message);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_command_starts_with_default_signals_an_empty_mask_and_only_its_stdio() {
    let agent = Agent::start();
    // `cat` directly, no shell between: what it reports is what the agent gave it. The agent
    // ignores SIGPIPE and catches SIGCHLD itself; neither may reach the command.
    let status = agent.run(argv(&["/bin/cat", "/proc/self/status"])).out();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(str::trim)
            .unwrap_or_else(|| panic!("no {name} in {status}"))
            .to_owned()
    };
    assert_eq!(field("SigIgn:"), "0000000000000000");
    assert_eq!(field("SigBlk:"), "0000000000000000", "{status}");

    // 0, 1 and 2, plus the descriptor `ls` reads the directory through: nothing of the agent's.
    let fds = agent.run(argv(&["/bin/ls", "/proc/self/fd"])).out();
    assert_eq!(
        fds.split_whitespace().collect::<Vec<_>>(),
        ["0", "1", "2", "3"]
    );
    let stdin = agent.run(argv(&["/bin/readlink", "/proc/self/fd/0"])).out();
    assert_eq!(stdin, "/dev/null\n");

    // Its own session and process group, as their leader.
    let stat = agent.run(argv(&["/bin/cat", "/proc/self/stat"])).out();
    let after_comm: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    let (pgrp, session) = (after_comm[2], after_comm[3]);
    let pid = stat.split_whitespace().next().unwrap();
    assert_eq!((pgrp, session), (pid, pid), "{stat}");
}

#[test]
fn a_pipe_into_a_finished_reader_ends_the_writer() {
    // With SIGPIPE left ignored, `yes` would spin on EPIPE errors instead of dying.
    let agent = Agent::start();
    let out = agent.run(ExecSpec {
        timeout_ms: Some(10_000),
        ..argv(&["/bin/bash", "-c", "yes | head -n 1; echo ${PIPESTATUS[0]}"])
    });
    assert_eq!(out.out(), "y\n141\n", "{}", out.err());
}

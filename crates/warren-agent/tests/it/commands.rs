//! Handshake and command sessions.

use std::time::{Duration, Instant};

use warren_proto::{ErrorKind, ExecSpec, ExitReason, PtySize, Request, Response, Stream};

use crate::support::{Agent, alive, eventually, sh};

#[test]
fn handshake_checks_version_and_first_frame() {
    let agent = Agent::start();
    let mut c = agent.raw();
    c.send(&Request::Hello {
        version: warren_proto::PROTOCOL_VERSION + 1,
    });
    match c.recv() {
        Some(Response::Error(e)) => assert_eq!(e.kind, ErrorKind::VersionMismatch),
        other => panic!("{other:?}"),
    }
    assert!(c.recv().is_none(), "closed after a version mismatch");

    let mut c = agent.raw();
    c.send(&Request::Ping);
    match c.recv() {
        Some(Response::Error(e)) => assert_eq!(e.kind, ErrorKind::BadRequest),
        other => panic!("{other:?}"),
    }
    assert!(c.recv().is_none());

    let mut c = agent.conn();
    c.send(&Request::Ping);
    assert_eq!(c.recv(), Some(Response::Pong));
}

#[test]
fn garbage_closes_only_that_connection() {
    use std::io::Write;
    let agent = Agent::start();
    let mut c = agent.conn();
    // A frame whose body is not a valid request.
    c.s.write_all(&[0, 0, 0, 3, 0xff, 0xff, 0xff]).unwrap();
    assert!(c.recv().is_none());
    let mut c = agent.raw();
    // An oversized length prefix.
    c.s.write_all(&[0xff, 0xff, 0xff, 0xff]).unwrap();
    assert!(c.recv().is_none());
    let mut c = agent.conn();
    c.send(&Request::Ping);
    assert_eq!(
        c.recv(),
        Some(Response::Pong),
        "the agent survives bad clients"
    );
}

#[test]
fn echo_runs_and_exits_zero() {
    let agent = Agent::start();
    let mut c = agent.conn();
    let (id, pid) = c.exec(sh("echo hello; echo oops >&2"));
    assert_eq!(id.len(), 32, "generated ids are simple uuids: {id}");
    assert!(pid > 0);
    let out = c.collect();
    assert_eq!(out.out(), "hello\n");
    assert_eq!(out.err(), "oops\n");
    let exit = out.exit.unwrap();
    assert_eq!(
        (exit.code, exit.signal, exit.reason),
        (0, None, ExitReason::Exited)
    );
}

#[test]
fn exit_code_is_reported() {
    let agent = Agent::start();
    assert_eq!(agent.sh("exit 7").code(), 7);
}

#[test]
fn environment_user_and_cwd_defaults() {
    let agent = Agent::start();
    let out = agent.run(ExecSpec {
        env: vec![("FOO".into(), "bar".into()), ("LANG".into(), "C".into())],
        ..sh("echo $FOO $LANG $HOME $USER; pwd; printenv TERM || echo none; id -u")
    });
    let home = if std::path::Path::new("/root").is_dir() {
        "/root"
    } else {
        "/"
    };
    assert_eq!(out.out(), format!("bar C /root root\n{home}\nnone\n0\n"));

    let out = agent.run(ExecSpec {
        cwd: Some("/tmp".into()),
        user: Some("65534".into()),
        ..sh("pwd; id -u; id -g")
    });
    assert_eq!(out.out(), "/tmp\n65534\n65534\n", "{}", out.err());
}

#[test]
fn spawn_failures_are_errors_without_a_session() {
    let agent = Agent::start();
    for (spec, what) in [
        (
            ExecSpec {
                argv: vec!["/no/such/program".into()],
                ..Default::default()
            },
            "/no/such/program",
        ),
        (
            ExecSpec {
                argv: vec!["no-such-program-in-path".into()],
                ..Default::default()
            },
            "no-such-program-in-path",
        ),
        (
            ExecSpec {
                cwd: Some("/no/such/dir".into()),
                ..sh("true")
            },
            "/no/such/dir",
        ),
        (
            ExecSpec {
                user: Some("no-such-user".into()),
                ..sh("true")
            },
            "no-such-user",
        ),
    ] {
        let mut c = agent.conn();
        c.send(&Request::Exec(ExecSpec {
            command_id: Some(format!("fail{what}")),
            ..spec
        }));
        match c.recv() {
            Some(Response::Error(e)) => {
                assert_eq!(e.kind, ErrorKind::SpawnFailed, "{what}: {e:?}");
                assert!(e.message.contains(what), "{what}: {}", e.message);
            }
            other => panic!("{what}: {other:?}"),
        }
    }
    let mut c = agent.conn();
    c.send(&Request::ListCommands);
    match c.recv() {
        Some(Response::CommandList { commands }) => assert!(commands.is_empty(), "{commands:?}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn output_streams_while_the_command_runs() {
    let agent = Agent::start();
    let mut c = agent.conn();
    let started = Instant::now();
    let (_, pid) = c.exec(sh("echo a; sleep 2; echo b"));
    match c.recv() {
        Some(Response::Output {
            stream: Stream::Stdout,
            offset: 0,
            data,
        }) => assert_eq!(data, b"a\n"),
        other => panic!("{other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "first chunk came too late"
    );
    assert!(
        alive(pid),
        "command still runs when its first output arrives"
    );
    let rest = c.collect();
    assert_eq!(rest.out(), "b\n");
    assert_eq!(rest.first_offsets[0], Some(2));
    assert_eq!(rest.code(), 0);
}

#[test]
fn stdin_is_fed_and_closed() {
    let agent = Agent::start();
    let mut c = agent.conn();
    c.exec(ExecSpec {
        stdin: true,
        ..sh("cat; echo done")
    });
    c.send(&Request::Input {
        data: b"hello ".to_vec(),
    });
    c.send(&Request::Input {
        data: vec![0, 1, 2, 255],
    });
    c.send(&Request::CloseStdin);
    let out = c.collect();
    assert_eq!(out.stdout, b"hello \x00\x01\x02\xffdone\n");
    assert_eq!(out.code(), 0);

    // Without stdin the command sees EOF at once.
    assert_eq!(agent.sh("cat; echo eof").out(), "eof\n");
}

#[test]
fn pty_is_the_controlling_terminal_and_resizes() {
    let agent = Agent::start();
    let mut c = agent.conn();
    c.exec(ExecSpec {
        pty: Some(PtySize {
            rows: 30,
            cols: 100,
        }),
        stdin: true,
        ..sh("tty; stty size; echo term=$TERM; read x; stty size; echo got=$x")
    });
    let mut seen = Vec::new();
    while !String::from_utf8_lossy(&seen).contains("term=") {
        match c.recv() {
            Some(Response::Output { stream, data, .. }) => {
                assert_eq!(stream, Stream::Stdout, "a PTY merges everything on stdout");
                seen.extend_from_slice(&data);
            }
            other => panic!("{other:?}: {}", String::from_utf8_lossy(&seen)),
        }
    }
    c.send(&Request::Resize {
        rows: 50,
        cols: 132,
    });
    // No wait needed: the agent applies a resize when it reads the frame, before it reads the
    // input frame behind it, so the command's `read` returns only after the resize.
    c.send(&Request::Input {
        data: b"hi\n".to_vec(),
    });
    let rest = c.collect();
    seen.extend_from_slice(&rest.stdout);
    let text = String::from_utf8_lossy(&seen).replace('\r', "");
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("/dev/pts/"), "{text}");
    assert_eq!(lines[1], "30 100", "{text}");
    assert_eq!(lines[2], "term=xterm-256color", "{text}");
    assert!(lines.contains(&"50 132"), "{text}");
    assert!(lines.contains(&"got=hi"), "{text}");
    assert_eq!(rest.code(), 0);
}

#[test]
fn kill_takes_the_whole_process_group() {
    let agent = Agent::start();
    let mut c = agent.conn();
    c.exec(sh("sleep 300 & echo $!; wait"));
    let grandchild: u32 = match c.recv() {
        Some(Response::Output { data, .. }) => {
            String::from_utf8_lossy(&data).trim().parse().unwrap()
        }
        other => panic!("{other:?}"),
    };
    assert!(alive(grandchild));
    c.send(&Request::Kill);
    let out = c.collect();
    let exit = out.exit.unwrap();
    assert_eq!(
        (exit.code, exit.signal, exit.reason),
        (137, Some(9), ExitReason::Killed)
    );
    assert!(
        eventually(5, || !alive(grandchild)),
        "grandchild {grandchild} survived"
    );
    // Reaped, not left a zombie: the agent reaps orphans too.
    assert!(eventually(5, || !std::path::Path::new(&format!(
        "/proc/{grandchild}"
    ))
    .exists()));
}

#[test]
fn signal_reaches_the_group() {
    let agent = Agent::start();
    let mut c = agent.conn();
    c.exec(sh(
        "trap 'echo got-term; exit 3' TERM; echo ready; while true; do sleep 0.05; done",
    ));
    assert!(matches!(c.recv(), Some(Response::Output { .. })));
    c.send(&Request::Signal { signal: 15 });
    let out = c.collect();
    assert_eq!(out.out(), "got-term\n");
    let exit = out.exit.unwrap();
    assert_eq!((exit.code, exit.reason), (3, ExitReason::Exited));

    let mut c = agent.conn();
    c.exec(sh("echo ready; sleep 300"));
    assert!(matches!(c.recv(), Some(Response::Output { .. })));
    c.send(&Request::Signal { signal: 15 });
    let exit = c.collect().exit.unwrap();
    assert_eq!(
        (exit.code, exit.signal, exit.reason),
        (143, Some(15), ExitReason::Killed)
    );
}

#[test]
fn timeout_kills() {
    let agent = Agent::start();
    let started = Instant::now();
    let out = agent.run(ExecSpec {
        timeout_ms: Some(300),
        ..sh("echo start; sleep 30")
    });
    let exit = out.exit.unwrap();
    assert_eq!((exit.reason, exit.signal), (ExitReason::Timeout, Some(9)));
    assert_eq!(out.out(), "start\n");
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn reattach_from_offset_gets_exactly_the_rest() {
    let agent = Agent::start();
    let mut c = agent.conn();
    let (id, _) = c.exec(ExecSpec {
        command_id: Some("resume-me".into()),
        ..sh("printf 0123456789; sleep 0.5; printf abcdef; printf XYZ >&2")
    });
    match c.recv() {
        Some(Response::Output {
            offset: 0, data, ..
        }) => assert_eq!(data, b"0123456789"),
        other => panic!("{other:?}"),
    }
    drop(c);
    assert!(eventually(5, || {
        let mut l = agent.conn();
        l.send(&Request::ListCommands);
        matches!(l.recv(), Some(Response::CommandList { commands }) if commands[0].exit.is_some())
    }));
    let mut c = agent.conn();
    c.send(&Request::Attach {
        command_id: id.clone(),
        stdout_offset: 4,
        stderr_offset: 1,
    });
    assert_eq!(c.started().0, id);
    let out = c.collect();
    assert_eq!(out.out(), "456789abcdef");
    assert_eq!(out.err(), "YZ");
    assert_eq!(out.first_offsets, [Some(4), Some(1)]);
    assert_eq!(out.code(), 0);

    // An offset past the end means only new output: here, none.
    let mut c = agent.conn();
    c.send(&Request::Attach {
        command_id: id,
        stdout_offset: 1000,
        stderr_offset: 1000,
    });
    c.started();
    let out = c.collect();
    assert!(out.stdout.is_empty() && out.stderr.is_empty());
    assert_eq!(out.code(), 0);
}

#[test]
fn exec_with_the_same_id_attaches_instead_of_spawning() {
    let agent = Agent::start();
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("runs");
    let script = format!("echo x >> {}; echo run; sleep 0.5", marker.display());
    let spec = ExecSpec {
        command_id: Some("once".into()),
        ..sh(&script)
    };
    let mut a = agent.conn();
    let (id_a, pid_a) = a.exec(spec.clone());
    let mut b = agent.conn();
    let (id_b, pid_b) = b.exec(spec.clone());
    assert_eq!((id_a.as_str(), id_b.as_str()), ("once", "once"));
    assert_eq!(pid_a, pid_b);
    let (oa, ob) = (a.collect(), b.collect());
    assert_eq!((oa.out(), ob.out()), ("run\n".into(), "run\n".into()));
    // After it finished, the same id still attaches (from offset 0) and does not rerun.
    let again = agent.run(spec);
    assert_eq!(again.out(), "run\n");
    assert_eq!(
        std::fs::read_to_string(&marker).unwrap(),
        "x\n",
        "spawned exactly once"
    );
}

#[test]
fn daemonized_child_holding_the_pipes_does_not_delay_exit() {
    let agent = Agent::start();
    let started = Instant::now();
    let out = agent.sh("sleep 30 & echo hi");
    assert_eq!(out.out(), "hi\n");
    assert_eq!(out.code(), 0);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
}

#[test]
fn ttl_expiry_and_unknown_ids() {
    let agent = Agent::start();
    let out = agent.run(ExecSpec {
        command_id: Some("short".into()),
        ttl_ms: Some(300),
        ..sh("echo bye")
    });
    assert_eq!(out.out(), "bye\n");
    // Still there right after it finished.
    let mut c = agent.conn();
    c.send(&Request::Attach {
        command_id: "short".into(),
        stdout_offset: 0,
        stderr_offset: 0,
    });
    c.started();
    assert_eq!(c.collect().out(), "bye\n");
    let attach_error = |id: &str| {
        let mut c = agent.conn();
        c.send(&Request::Attach {
            command_id: id.into(),
            stdout_offset: 0,
            stderr_offset: 0,
        });
        match c.recv() {
            Some(Response::Error(e)) => Some(e.kind),
            _ => None,
        }
    };
    assert!(eventually(5, || attach_error("short")
        == Some(ErrorKind::SessionExpired)));
    assert_eq!(attach_error("never-was"), Some(ErrorKind::CommandNotFound));
    // An expired id is not run a second time.
    let mut c = agent.conn();
    c.send(&Request::Exec(ExecSpec {
        command_id: Some("short".into()),
        ..sh("echo again")
    }));
    assert!(matches!(c.recv(), Some(Response::Error(e)) if e.kind == ErrorKind::SessionExpired));
}

#[test]
fn kill_on_disconnect_and_idle_timeout() {
    let agent = Agent::start();
    let mut c = agent.conn();
    let (id, pid) = c.exec(ExecSpec {
        kill_on_disconnect: true,
        ..sh("sleep 300")
    });
    assert!(alive(pid));
    drop(c);
    assert!(
        eventually(5, || !alive(pid)),
        "killed when the last client left"
    );
    let mut c = agent.conn();
    c.send(&Request::Attach {
        command_id: id,
        stdout_offset: 0,
        stderr_offset: 0,
    });
    c.started();
    assert_eq!(c.collect().exit.unwrap().reason, ExitReason::Detached);

    // Without kill_on_disconnect a command survives its client. The command's own output is
    // the clock: "tick" comes well after the idle timeout.
    let mut c = agent.conn();
    let (id, pid) = c.exec(ExecSpec {
        idle_timeout_ms: Some(800),
        ..sh("sleep 1.5; echo tick; sleep 300")
    });
    drop(c);
    let attached = |id: &str| {
        let mut l = agent.conn();
        l.send(&Request::ListCommands);
        match l.recv() {
            Some(Response::CommandList { commands }) => commands
                .iter()
                .find(|c| c.command_id == id)
                .map(|c| c.attached),
            other => panic!("{other:?}"),
        }
    };
    assert!(
        eventually(5, || attached(&id) == Some(0)),
        "the agent saw the client leave"
    );
    assert!(alive(pid), "a detached command keeps running");
    // Attaching resets the idle timer: still alive once it has printed, past the timeout.
    let mut c = agent.conn();
    c.send(&Request::Attach {
        command_id: id.clone(),
        stdout_offset: 0,
        stderr_offset: 0,
    });
    c.started();
    match c.recv() {
        Some(Response::Output { data, .. }) => assert_eq!(data, b"tick\n"),
        other => panic!("{other:?}"),
    }
    assert!(alive(pid), "not idle while attached");
    drop(c);
    assert!(
        eventually(5, || !alive(pid)),
        "killed after the idle timeout"
    );
    let mut c = agent.conn();
    c.send(&Request::Attach {
        command_id: id,
        stdout_offset: 0,
        stderr_offset: 0,
    });
    c.started();
    assert_eq!(c.collect().exit.unwrap().reason, ExitReason::Detached);
}

#[test]
fn detached_command_keeps_running_and_is_listed() {
    let agent = Agent::start();
    let mut c = agent.conn();
    let (id, pid) = c.exec(ExecSpec {
        command_id: Some("bg".into()),
        ..sh("echo one; sleep 0.5; echo two")
    });
    drop(c);
    let mut l = agent.conn();
    l.send(&Request::ListCommands);
    match l.recv() {
        Some(Response::CommandList { commands }) => {
            assert_eq!(commands.len(), 1);
            assert_eq!(
                (commands[0].command_id.as_str(), commands[0].pid),
                ("bg", pid)
            );
        }
        other => panic!("{other:?}"),
    }
    let mut c = agent.conn();
    c.send(&Request::Attach {
        command_id: id,
        stdout_offset: 0,
        stderr_offset: 0,
    });
    c.started();
    let out = c.collect();
    assert_eq!(out.out(), "one\ntwo\n");
    let mut l = agent.conn();
    l.send(&Request::ListCommands);
    match l.recv() {
        Some(Response::CommandList { commands }) => {
            assert_eq!(commands[0].stdout_len, 8);
            assert_eq!(commands[0].exit.map(|e| e.code), Some(0));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn half_closed_client_still_gets_everything() {
    let agent = Agent::start();
    let mut c = agent.conn();
    let _ = c.exec(ExecSpec {
        kill_on_disconnect: true,
        ..sh("sleep 0.7; echo late")
    });
    // Like a host that drops its writing half after sending the request. Were that taken for
    // a disconnect, kill_on_disconnect would kill the command before it prints.
    c.s.shutdown(std::net::Shutdown::Write).unwrap();
    let out = c.collect();
    assert_eq!(out.out(), "late\n", "a half-close is not a disconnect");
    assert_eq!(out.exit.unwrap().reason, ExitReason::Exited);
}

#[test]
fn orphans_are_reparented_to_the_agent_and_reaped() {
    let agent = Agent::start();
    let out = agent.sh("for i in 1 2 3 4; do (sleep 0.5 &); done; echo spawned");
    assert_eq!(out.out(), "spawned\n");
    // (pid state) of every child of the agent.
    let children = || -> Vec<char> {
        let ppid = format!("PPid:\t{}", agent.pid());
        std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|e| std::fs::read_to_string(e.path().join("status")).ok())
            .filter(|st| st.lines().any(|l| l == ppid))
            .filter_map(|st| {
                let state = st.lines().find(|l| l.starts_with("State:"))?;
                state["State:".len()..].trim().chars().next()
            })
            .collect()
    };
    let now = children();
    assert_eq!(
        now.len(),
        4,
        "the orphaned sleeps belong to the agent (subreaper): {now:?}"
    );
    assert!(now.iter().all(|s| *s != 'Z'));
    // Once they exit they are reaped, not left as zombies.
    assert!(
        eventually(5, || children().is_empty()),
        "left: {:?}",
        children()
    );
}

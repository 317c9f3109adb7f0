//! `exec`, `attach`, kill and stdin, and the SSE transport's park and resume.

use warren_types::SandboxStatus;

use super::support::{drain, harness, next, output};
use crate::{ControlError, ExecEvent, ExecFailure, ExecRequest, Stream};

fn run(command: &str) -> ExecRequest {
    ExecRequest {
        command: command.into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn exec_streams_started_output_and_exit_in_order() {
    let h = harness().await;
    let rec = h.sandbox(&h.admin, "box").await;
    let mut s = h
        .control
        .exec(&h.admin, &rec.id, run("echo hi"))
        .await
        .unwrap();
    assert_eq!(s.sandbox_id(), rec.id);
    let Some(ExecEvent::Started { command_id, pid }) = next(&mut s).await else {
        panic!("the first event is Started");
    };
    assert!(!command_id.is_empty());
    assert_eq!(s.started(), Some((command_id.as_str(), pid)));
    assert_eq!(
        next(&mut s).await,
        Some(ExecEvent::Output {
            stream: Stream::Stdout,
            offset: 0,
            data: b"hi\n".to_vec(),
        })
    );
    assert_eq!(
        next(&mut s).await,
        Some(ExecEvent::Exit {
            code: 0,
            oom_killed: false,
        })
    );
    assert_eq!(next(&mut s).await, None, "nothing after the exit");
    assert_eq!(next(&mut s).await, None);
}

#[tokio::test]
async fn exit_codes_and_stderr_come_through() {
    let h = harness().await;
    let rec = h.sandbox(&h.admin, "box").await;
    let mut s = h
        .control
        .exec(&h.admin, &rec.id, run("echo out; echoerr err; exit 3"))
        .await
        .unwrap();
    let events = drain(&mut s).await;
    assert_eq!(output(&events, Stream::Stdout, 0), b"out\n");
    assert_eq!(output(&events, Stream::Stderr, 0), b"err\n");
    assert_eq!(
        events.last(),
        Some(&ExecEvent::Exit {
            code: 3,
            oom_killed: false,
        })
    );
    let mut s = h
        .control
        .exec(&h.admin, &rec.id, run("frobnicate"))
        .await
        .unwrap();
    let events = drain(&mut s).await;
    assert_eq!(
        output(&events, Stream::Stderr, 0),
        b"fake: command not found\n"
    );
    assert!(
        matches!(events.last(), Some(ExecEvent::Exit { code: 127, .. })),
        "{events:?}"
    );
}

#[tokio::test]
async fn a_command_past_its_timeout_is_timed_out() {
    let h = harness().await;
    let rec = h.sandbox(&h.admin, "box").await;
    let mut s = h
        .control
        .exec(
            &h.admin,
            &rec.id,
            ExecRequest {
                command: "echo before; sleep 5000; echo after".into(),
                timeout_seconds: Some(1),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let events = drain(&mut s).await;
    assert_eq!(output(&events, Stream::Stdout, 0), b"before\n");
    assert_eq!(
        events.last(),
        Some(&ExecEvent::TimedOut {
            message: "Command timed out after 1 seconds".into()
        })
    );
    let err = events.last().cloned().and_then(ExecEvent::into_error);
    assert!(
        err.is_some(),
        "a timeout is an error for one-status transports"
    );
}

#[tokio::test]
async fn invalid_requests_are_refused_before_anything_runs() {
    let h = harness().await;
    let rec = h.sandbox(&h.admin, "box").await;
    for req in [
        run("a\0b"),
        ExecRequest {
            command: "x".into(),
            ttl_seconds: Some(crate::MAX_LIMIT_SECONDS + 1),
            ..Default::default()
        },
        ExecRequest {
            command: "x".into(),
            cwd: Some("/tmp".into()),
            run_config: Some(crate::RunConfig::default()),
            ..Default::default()
        },
    ] {
        let e = h.control.exec(&h.admin, &rec.id, req).await.unwrap_err();
        assert!(matches!(e, ControlError::Config(_)), "{e:?}");
    }
    let metrics = h.control.metrics().render(&[]);
    assert!(metrics.contains("warren_commands_total 0"), "{metrics}");
}

#[tokio::test]
async fn attach_from_an_offset_replays_the_rest() {
    let h = harness().await;
    let rec = h.sandbox(&h.admin, "box").await;
    let mut s = h
        .control
        .exec(
            &h.admin,
            &rec.id,
            run("echo hello; echoerr oops; echo world"),
        )
        .await
        .unwrap();
    let Some(ExecEvent::Started { command_id, pid }) = next(&mut s).await else {
        panic!("Started first");
    };
    drain(&mut s).await;

    let mut a = h
        .control
        .attach(&h.admin, &rec.id, &command_id, 6, 2)
        .await
        .unwrap();
    let events = drain(&mut a).await;
    assert_eq!(
        events.first(),
        Some(&ExecEvent::Started {
            command_id: command_id.clone(),
            pid
        }),
        "an attachment names the same command"
    );
    assert_eq!(output(&events, Stream::Stdout, 6), b"world\n");
    assert_eq!(output(&events, Stream::Stderr, 2), b"ps\n");
    assert!(
        matches!(events.last(), Some(ExecEvent::Exit { code: 0, .. })),
        "{events:?}"
    );

    // From the start, everything again; the command is listed once.
    let mut all = h
        .control
        .attach(&h.admin, &rec.id, &command_id, 0, 0)
        .await
        .unwrap();
    let events = drain(&mut all).await;
    assert_eq!(output(&events, Stream::Stdout, 0), b"hello\nworld\n");
    let list = h.control.list_commands(&h.admin, &rec.id).await.unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].command_id, command_id);
    assert_eq!(list[0].stdout_len, 12);
    assert_eq!(list[0].stderr_len, 5);
    assert!(list[0].exit.is_some());
}

#[tokio::test]
async fn a_command_id_is_idempotent() {
    let h = harness().await;
    let rec = h.sandbox(&h.admin, "box").await;
    let req = ExecRequest {
        command: "echo once".into(),
        command_id: Some("job-1".into()),
        ..Default::default()
    };
    let mut first = h
        .control
        .exec(&h.admin, &rec.id, req.clone())
        .await
        .unwrap();
    let one = drain(&mut first).await;
    assert!(matches!(&one[0], ExecEvent::Started { command_id, .. } if command_id == "job-1"));
    let mut second = h.control.exec(&h.admin, &rec.id, req).await.unwrap();
    let two = drain(&mut second).await;
    assert_eq!(one, two, "the second request attaches to the first run");
    assert_eq!(
        h.control
            .list_commands(&h.admin, &rec.id)
            .await
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn attach_to_an_unknown_command_fails_as_the_first_event() {
    let h = harness().await;
    let rec = h.sandbox(&h.admin, "box").await;
    // The documented contract (exec.rs, `Control::attach`): the stream opens and its first
    // event says the command is not found.
    match h
        .control
        .attach(&h.admin, &rec.id, "no-such-command", 0, 0)
        .await
    {
        Ok(mut s) => {
            let first = next(&mut s).await;
            assert!(
                matches!(
                    first,
                    Some(ExecEvent::Failed {
                        failure: ExecFailure::CommandNotFound,
                        ..
                    })
                ),
                "{first:?}"
            );
            assert_eq!(next(&mut s).await, None);
        }
        Err(e) => panic!("attach to an unknown id was refused instead of streamed: {e:?}"),
    }
    assert_eq!(
        h.record(&rec.id).status,
        SandboxStatus::Ready,
        "the sandbox is fine"
    );
}

#[tokio::test]
async fn kill_ends_a_command_with_137() {
    let h = harness().await;
    let rec = h.sandbox(&h.admin, "box").await;
    let mut s = h
        .control
        .exec(
            &h.admin,
            &rec.id,
            ExecRequest {
                command: "sleep 5000".into(),
                timeout_seconds: Some(0),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(matches!(
        next(&mut s).await,
        Some(ExecEvent::Started { .. })
    ));
    assert!(s.kill().await);
    assert_eq!(
        next(&mut s).await,
        Some(ExecEvent::Exit {
            code: 137,
            oom_killed: false,
        })
    );
}

#[tokio::test]
async fn stdin_reaches_the_command_until_closed() {
    let h = harness().await;
    let rec = h.sandbox(&h.admin, "box").await;
    let mut s = h
        .control
        .exec(
            &h.admin,
            &rec.id,
            ExecRequest {
                command: "cat; echo done".into(),
                stdin: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(matches!(
        next(&mut s).await,
        Some(ExecEvent::Started { .. })
    ));
    assert!(s.input(b"hello ".to_vec()).await);
    assert_eq!(
        next(&mut s).await,
        Some(ExecEvent::Output {
            stream: Stream::Stdout,
            offset: 0,
            data: b"hello ".to_vec(),
        })
    );
    assert!(s.input(b"world".to_vec()).await);
    assert!(s.close_stdin().await);
    let rest = drain(&mut s).await;
    assert_eq!(output(&rest, Stream::Stdout, 6), b"worlddone\n");
    assert!(
        matches!(rest.last(), Some(ExecEvent::Exit { code: 0, .. })),
        "{rest:?}"
    );
}

#[tokio::test]
async fn exec_is_audited_and_counted() {
    let h = harness().await;
    let rec = h.sandbox(&h.admin, "box").await;
    let mut s = h
        .control
        .exec(&h.admin, &rec.id, run("echo hi; echoerr e"))
        .await
        .unwrap();
    drain(&mut s).await;
    let entries = h.audited("exec");
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(entries[0].target.as_deref(), Some(rec.id.as_str()));
    assert_eq!(entries[0].detail.as_deref(), Some("echo hi; echoerr e"));
    assert_eq!(
        entries[0].user_id.as_deref(),
        Some(h.admin.user_id.as_str())
    );
    let metrics = h.control.metrics().render(&[]);
    assert!(metrics.contains("warren_commands_total 1"), "{metrics}");
    assert!(
        metrics.contains("warren_streamed_bytes_total{stream=\"stdout\"} 3"),
        "{metrics}"
    );
    assert!(
        metrics.contains("warren_streamed_bytes_total{stream=\"stderr\"} 2"),
        "{metrics}"
    );
}

#[tokio::test]
async fn exec_wakes_a_stopped_sandbox() {
    let h = harness().await;
    let rec = h.stopped(&h.admin, "box").await;
    let mut s = h
        .control
        .exec(&h.admin, &rec.id, run("echo awake"))
        .await
        .unwrap();
    assert_eq!(output(&drain(&mut s).await, Stream::Stdout, 0), b"awake\n");
    assert_eq!(h.record(&rec.id).status, SandboxStatus::Ready);
}

#[tokio::test]
async fn a_resume_at_the_parked_offsets_continues_the_parked_stream() {
    let h = harness().await;
    let rec = h.sandbox(&h.admin, "box").await;
    let mut s = h
        .control
        .exec(&h.admin, &rec.id, run("echo one; sleep 100; echo two"))
        .await
        .unwrap();
    let Some(ExecEvent::Started { command_id, .. }) = next(&mut s).await else {
        panic!("Started first");
    };
    assert_eq!(
        next(&mut s).await,
        Some(ExecEvent::Output {
            stream: Stream::Stdout,
            offset: 0,
            data: b"one\n".to_vec(),
        })
    );
    h.control.park(s, 4, 0);
    let mut resumed = h
        .control
        .resume(&h.admin, &rec.id, &command_id, 4, 0)
        .await
        .unwrap();
    // The same stream: no new Started, output continues at the parked offset.
    assert_eq!(
        next(&mut resumed).await,
        Some(ExecEvent::Output {
            stream: Stream::Stdout,
            offset: 4,
            data: b"two\n".to_vec(),
        })
    );
    assert!(matches!(
        next(&mut resumed).await,
        Some(ExecEvent::Exit { code: 0, .. })
    ));

    // A second resume finds nothing parked and attaches anew from its offsets.
    let mut fresh = h
        .control
        .resume(&h.admin, &rec.id, &command_id, 4, 0)
        .await
        .unwrap();
    let events = drain(&mut fresh).await;
    assert!(
        matches!(&events[0], ExecEvent::Started { .. }),
        "{events:?}"
    );
    assert_eq!(output(&events, Stream::Stdout, 4), b"two\n");
}

#[tokio::test]
async fn a_resume_at_other_offsets_attaches_anew() {
    let h = harness().await;
    let rec = h.sandbox(&h.admin, "box").await;
    let mut s = h
        .control
        .exec(&h.admin, &rec.id, run("echo one; echo two"))
        .await
        .unwrap();
    let Some(ExecEvent::Started { command_id, .. }) = next(&mut s).await else {
        panic!("Started first");
    };
    h.control.park(s, 0, 0);
    // The client asks from stdout byte 4, not where the stream was parked: the parked stream
    // cannot serve that, the agent's buffer can.
    let mut other = h
        .control
        .resume(&h.admin, &rec.id, &command_id, 4, 0)
        .await
        .unwrap();
    let events = drain(&mut other).await;
    assert!(
        matches!(&events[0], ExecEvent::Started { .. }),
        "{events:?}"
    );
    assert_eq!(output(&events, Stream::Stdout, 4), b"two\n");
    // The mismatched resume dropped the parked stream: resuming at its offsets attaches anew.
    let mut again = h
        .control
        .resume(&h.admin, &rec.id, &command_id, 0, 0)
        .await
        .unwrap();
    let events = drain(&mut again).await;
    assert!(
        matches!(&events[0], ExecEvent::Started { .. }),
        "{events:?}"
    );
    assert_eq!(output(&events, Stream::Stdout, 0), b"one\ntwo\n");
}

#[tokio::test]
async fn a_stream_that_never_started_is_not_parked() {
    let h = harness().await;
    let rec = h.sandbox(&h.admin, "box").await;
    let s = h
        .control
        .exec(&h.admin, &rec.id, run("echo x"))
        .await
        .unwrap();
    // Parked before its Started was read: it has no command id to be found by.
    h.control.park(s, 0, 0);
    let mut r = h
        .control
        .resume(&h.admin, &rec.id, "cmd-1", 0, 0)
        .await
        .unwrap();
    let events = drain(&mut r).await;
    assert!(
        matches!(&events[0], ExecEvent::Started { .. }),
        "{events:?}"
    );
}

#[tokio::test]
async fn megabytes_arrive_byte_exact_across_a_park_and_resume() {
    const UNIT: &str = "0123456789abcdef";
    const TIMES: usize = 3 << 16; // 3 MiB
    let h = harness().await;
    let rec = h.sandbox(&h.admin, "box").await;
    let mut s = h
        .control
        .exec(&h.admin, &rec.id, run(&format!("repeat {TIMES} {UNIT}")))
        .await
        .unwrap();
    let Some(ExecEvent::Started { command_id, .. }) = next(&mut s).await else {
        panic!("Started first");
    };
    let mut got = Vec::new();
    while got.len() < (1 << 20) + 12345 {
        match next(&mut s).await {
            Some(ExecEvent::Output {
                stream: Stream::Stdout,
                offset,
                data,
            }) => {
                assert_eq!(offset, got.len() as u64);
                got.extend_from_slice(&data);
            }
            other => panic!("unexpected {other:?} at {}", got.len()),
        }
    }
    let at = got.len() as u64;
    h.control.park(s, at, 0);
    let mut s = h
        .control
        .resume(&h.admin, &rec.id, &command_id, at, 0)
        .await
        .unwrap();
    let rest = drain(&mut s).await;
    assert!(
        !matches!(rest.first(), Some(ExecEvent::Started { .. })),
        "the parked stream itself continues"
    );
    got.extend_from_slice(&output(&rest, Stream::Stdout, at));
    assert!(matches!(rest.last(), Some(ExecEvent::Exit { code: 0, .. })));
    assert_eq!(got.len(), UNIT.len() * TIMES);
    assert!(got == UNIT.repeat(TIMES).into_bytes(), "the bytes differ");
}

#[tokio::test]
async fn a_malformed_exec_wakes_nothing() {
    let h = harness().await;
    let rec = h.stopped(&h.admin, "box").await;
    let starts = |h: &super::support::Harness| {
        h.fake
            .calls()
            .iter()
            .filter(|c| c.starts_with("start "))
            .count()
    };
    let before = starts(&h);
    let e = h
        .control
        .exec(&h.admin, &rec.id, run("a\0b"))
        .await
        .unwrap_err();
    assert!(matches!(e, ControlError::Config(_)), "{e:?}");
    assert_eq!(starts(&h), before, "a refused request started the sandbox");
    assert_eq!(h.record(&rec.id).status, SandboxStatus::Stopped);
}

#[tokio::test]
async fn an_exec_that_cannot_reach_the_sandbox_is_neither_audited_nor_counted() {
    let h = harness().await;
    let rec = h.sandbox(&h.admin, "box").await;
    h.fake.crash(&rec.runtime_id);
    assert!(
        h.control
            .exec(&h.admin, &rec.id, run("echo hi"))
            .await
            .is_err()
    );
    assert!(h.audited("exec").is_empty());
    let metrics = h.control.metrics().render(&[]);
    assert!(metrics.contains("warren_commands_total 0"), "{metrics}");
}

#[tokio::test]
async fn a_stop_mid_command_ends_the_stream_as_lost() {
    let h = harness().await;
    let rec = h.sandbox(&h.admin, "box").await;
    let mut s = h
        .control
        .exec(&h.admin, &rec.id, run("echo before; sleep 60000"))
        .await
        .unwrap();
    assert!(matches!(
        next(&mut s).await,
        Some(ExecEvent::Started { .. })
    ));
    assert!(matches!(next(&mut s).await, Some(ExecEvent::Output { .. })));
    h.control.stop(&h.admin, &rec.id).await.unwrap();
    assert_eq!(next(&mut s).await, Some(ExecEvent::Lost));
}

#[tokio::test]
async fn the_drivers_environment_comes_first_and_the_commands_wins() {
    let h = harness().await;
    let rec = h.sandbox(&h.admin, "box").await;
    let mut s = h
        .control
        .exec(&h.admin, &rec.id, run("env FAKE_PROXY"))
        .await
        .unwrap();
    assert_eq!(output(&drain(&mut s).await, Stream::Stdout, 0), b"1\n");
    let req = ExecRequest {
        command: "env FAKE_PROXY".into(),
        env: Some([("FAKE_PROXY".into(), "mine".into())].into()),
        ..Default::default()
    };
    let mut s = h.control.exec(&h.admin, &rec.id, req).await.unwrap();
    assert_eq!(output(&drain(&mut s).await, Stream::Stdout, 0), b"mine\n");
}

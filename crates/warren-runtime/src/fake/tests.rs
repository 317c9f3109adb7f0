use std::collections::HashSet;

use warren_proto::{
    ErrorKind, ExecSpec, ExitReason, FileKind, MAX_CHUNK_LEN, Request, Response, Stream,
};
use warren_types::{ImageRef, Limits, SandboxId};

use super::*;
use crate::driver::AnyDriver;

fn spec(id: &SandboxId) -> SandboxSpec {
    SandboxSpec {
        id: id.clone(),
        image: ImageRef::default_image(),
        limits: Limits::default(),
    }
}

fn new_id() -> SandboxId {
    SandboxId::generate()
}

fn sh(script: &str) -> ExecSpec {
    ExecSpec {
        argv: vec!["/bin/bash".into(), "-c".into(), script.into()],
        ..ExecSpec::default()
    }
}

/// What an attached stream delivered: stdout, stderr, the exit, and the offsets seen.
#[derive(Debug, Default)]
struct Collected {
    out: Vec<u8>,
    err: Vec<u8>,
    exit: Option<warren_proto::ExitStatus>,
    first_offsets: Vec<(Stream, u64)>,
}

async fn collect(conn: &mut AgentConn) -> Collected {
    let mut c = Collected::default();
    loop {
        match conn.recv().await.unwrap() {
            Some(Response::Output {
                stream,
                offset,
                data,
            }) => {
                assert!(data.len() <= MAX_CHUNK_LEN);
                let buf = match stream {
                    Stream::Stdout => &mut c.out,
                    Stream::Stderr => &mut c.err,
                };
                c.first_offsets.push((stream, offset));
                buf.extend_from_slice(&data);
            }
            Some(Response::Exit(status)) => {
                c.exit = Some(status);
                return c;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}

async fn started(conn: &mut AgentConn) -> String {
    match conn.recv().await.unwrap() {
        Some(Response::Started { command_id, .. }) => command_id,
        other => panic!("expected Started, got {other:?}"),
    }
}

async fn up(driver: &FakeDriver) -> SandboxHandle {
    driver.create(&spec(&new_id())).await.unwrap()
}

async fn run(driver: &FakeDriver, h: &SandboxHandle, exec: ExecSpec) -> Collected {
    let mut conn = driver.connect(h).await.unwrap();
    conn.send(&Request::Exec(exec)).await.unwrap();
    started(&mut conn).await;
    collect(&mut conn).await
}

#[tokio::test]
async fn exec_runs_the_script_language() {
    let d = FakeDriver::new();
    let h = up(&d).await;
    let c = run(
        &d,
        &h,
        sh("echo hi; echoerr oops; nope; exit 3; echo never"),
    )
    .await;
    assert_eq!(c.out, b"hi\n");
    assert_eq!(c.err, b"oops\nfake: command not found\n");
    let exit = c.exit.unwrap();
    assert_eq!(
        (exit.code, exit.signal, exit.reason),
        (3, None, ExitReason::Exited)
    );

    let mut exec = sh("pwd; env A; env MISSING");
    exec.cwd = Some("/work".into());
    exec.env = vec![("A".into(), "1".into())];
    let c = run(&d, &h, exec).await;
    assert_eq!(c.out, b"/work\n1\n");
    assert_eq!(c.exit.unwrap().code, 1);

    let c = run(&d, &h, sh("frobnicate")).await;
    assert_eq!((c.out.len(), c.exit.unwrap().code), (0, 127));
}

#[tokio::test]
async fn repeat_streams_several_mib_in_bounded_chunks() {
    let d = FakeDriver::new();
    let h = up(&d).await;
    let c = run(&d, &h, sh("repeat 300000 0123456789")).await;
    assert_eq!(c.out.len(), 3_000_000);
    assert!(c.out.chunks(10).all(|w| w == b"0123456789"));
    let mut expected = 0;
    for (stream, offset) in c.first_offsets {
        assert_eq!((stream, offset), (Stream::Stdout, expected));
        expected += MAX_CHUNK_LEN as u64;
    }
}

#[tokio::test]
async fn attach_resumes_from_offsets_and_unknown_ids_are_not_found() {
    let d = FakeDriver::new();
    let h = up(&d).await;
    let mut exec = sh("echo hello; echoerr world");
    exec.command_id = Some("c1".into());
    run(&d, &h, exec.clone()).await;

    let mut conn = d.connect(&h).await.unwrap();
    conn.send(&Request::Attach {
        command_id: "c1".into(),
        stdout_offset: 2,
        stderr_offset: 5,
    })
    .await
    .unwrap();
    assert_eq!(started(&mut conn).await, "c1");
    let c = collect(&mut conn).await;
    assert_eq!(
        (c.out.as_slice(), c.err.as_slice()),
        (&b"llo\n"[..], &b"\n"[..])
    );
    assert!(c.first_offsets.contains(&(Stream::Stdout, 2)));

    // Exec with a known id attaches instead of running again.
    let c = run(&d, &h, exec).await;
    assert_eq!(c.out, b"hello\n");

    let mut conn = d.connect(&h).await.unwrap();
    conn.send(&Request::Attach {
        command_id: "nope".into(),
        stdout_offset: 0,
        stderr_offset: 0,
    })
    .await
    .unwrap();
    match conn.recv().await.unwrap() {
        Some(Response::Error(e)) => assert_eq!(e.kind, ErrorKind::CommandNotFound),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn kill_timeout_and_stdin() {
    let d = FakeDriver::new();
    let h = up(&d).await;
    let mut conn = d.connect(&h).await.unwrap();
    conn.send(&Request::Exec(sh("sleep 60000"))).await.unwrap();
    started(&mut conn).await;
    conn.send(&Request::Kill).await.unwrap();
    let exit = collect(&mut conn).await.exit.unwrap();
    assert_eq!(
        (exit.code, exit.signal, exit.reason),
        (137, Some(9), ExitReason::Killed)
    );

    let mut exec = sh("sleep 60000");
    exec.timeout_ms = Some(20);
    let exit = run(&d, &h, exec).await.exit.unwrap();
    assert_eq!((exit.code, exit.reason), (137, ExitReason::Timeout));

    let mut exec = sh("cat; echo done");
    exec.stdin = true;
    let mut conn = d.connect(&h).await.unwrap();
    conn.send(&Request::Exec(exec)).await.unwrap();
    started(&mut conn).await;
    conn.send(&Request::Input {
        data: b"abc".to_vec(),
    })
    .await
    .unwrap();
    conn.send(&Request::CloseStdin).await.unwrap();
    let c = collect(&mut conn).await;
    assert_eq!(
        (c.out.as_slice(), c.exit.unwrap().code),
        (&b"abcdone\n"[..], 0)
    );

    // Without stdin, cat sees the end at once.
    assert_eq!(run(&d, &h, sh("cat; echo x")).await.out, b"x\n");
}

#[tokio::test]
async fn files_round_trip() {
    let d = FakeDriver::new();
    let h = up(&d).await;
    let mut conn = d.connect(&h).await.unwrap();
    conn.send(&Request::WriteFile {
        path: "/work/dir/a.txt".into(),
        mode: Some(0o600),
        user: None,
    })
    .await
    .unwrap();
    for part in [&b"hello "[..], b"world"] {
        conn.send(&Request::FileData {
            data: part.to_vec(),
        })
        .await
        .unwrap();
    }
    assert_eq!(conn.call(&Request::FileEnd).await.unwrap(), Response::Ok);

    // The same connection carries more one-shot operations.
    conn.send(&Request::ReadFile {
        path: "/work/dir/a.txt".into(),
        offset: 6,
        len: Some(3),
        user: None,
    })
    .await
    .unwrap();
    match conn.recv().await.unwrap() {
        Some(Response::FileInfo(info)) => {
            assert_eq!(
                (info.kind, info.size, info.mode),
                (FileKind::File, 11, 0o600)
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        conn.recv().await.unwrap(),
        Some(Response::FileData {
            data: b"wor".to_vec()
        })
    );
    assert_eq!(conn.recv().await.unwrap(), Some(Response::FileEnd));

    match conn
        .call(&Request::ListDir {
            path: "/work".into(),
        })
        .await
        .unwrap()
    {
        Response::DirEntries { entries, truncated } => {
            assert!(!truncated);
            assert_eq!(entries.len(), 1);
            assert_eq!(
                (entries[0].name.as_str(), entries[0].kind),
                ("dir", FileKind::Dir)
            );
        }
        other => panic!("{other:?}"),
    }
    match conn
        .call(&Request::Stat {
            path: "/nope".into(),
        })
        .await
    {
        Err(AgentConnError::Agent(e)) => assert_eq!(e.kind, ErrorKind::NotFound),
        other => panic!("{other:?}"),
    }
    assert_eq!(conn.call(&Request::Ping).await.unwrap(), Response::Pong);

    // Files survive a stop and start.
    d.stop(&h.id, Some(&h)).await.unwrap();
    d.start(&spec(&h.id)).await.unwrap();
    assert_eq!(d.file(&h.id, "/work/dir/a.txt").unwrap(), b"hello world");
}

#[tokio::test]
async fn requests_out_of_place_are_bad_requests() {
    let d = FakeDriver::new();
    let h = up(&d).await;
    let mut conn = d.connect(&h).await.unwrap();
    match conn.call(&Request::Kill).await {
        Err(AgentConnError::Agent(e)) => assert_eq!(e.kind, ErrorKind::BadRequest),
        other => panic!("{other:?}"),
    }
    let mut conn = d.connect(&h).await.unwrap();
    match conn.call(&Request::ListCommands).await.unwrap() {
        Response::CommandList { commands } => assert!(commands.is_empty()),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn lifecycle_and_failure_injection() {
    let d = FakeDriver::new();
    let id = new_id();
    d.fail_next_create("no luck");
    assert!(matches!(
        d.create(&spec(&id)).await,
        Err(DriverError::Jail(_))
    ));
    assert!(!d.has_storage(&id));
    let h = d.create(&spec(&id)).await.unwrap();
    assert!(d.is_running(&h));
    assert_eq!(d.sandboxes(), vec![(id.clone(), true)]);

    d.crash(&id);
    assert!(!d.is_running(&h));
    assert!(matches!(d.connect(&h).await, Err(DriverError::Agent(_))));

    let h2 = d.start(&spec(&id)).await.unwrap();
    assert!(
        d.is_running(&h2) && !d.is_running(&h),
        "a stale handle is not adopted"
    );

    d.fail_stops(1);
    assert!(matches!(
        d.stop(&id, Some(&h2)).await,
        Err(DriverError::StopTimeout(_))
    ));
    assert!(d.is_running(&h2));

    d.fail_next_start("boom");
    assert!(d.start(&spec(&id)).await.is_err());
    assert_eq!(d.sandboxes(), vec![(id.clone(), false)]);

    d.set_oom_kills(&id, 2);
    let any = AnyDriver::Fake(d.clone());
    assert_eq!(any.oom_kills(&id).unwrap(), 2);

    d.fail_destroys(1);
    let err = d.destroy(&id, None).await.unwrap_err();
    assert!(matches!(err, DriverError::Storage(_)));
    assert!(
        !err.public_reason().contains("/fake"),
        "{}",
        err.public_reason()
    );
    assert!(d.has_storage(&id));
    d.destroy(&id, None).await.unwrap();
    d.destroy(&id, None).await.unwrap();
    assert!(!d.has_storage(&id));

    let calls = d.calls();
    assert_eq!(
        (calls.create, calls.start, calls.stop, calls.destroy),
        (2, 2, 1, 3)
    );
}

#[tokio::test]
async fn images_and_gc() {
    let d = FakeDriver::new();
    let any = AnyDriver::Fake(d.clone());
    let default = ImageRef::default_image();
    assert_eq!(any.image_status(&default), ImageStatus::Present);
    d.set_image_status(default.clone(), ImageStatus::Building);
    assert_eq!(any.image_status(&default), ImageStatus::Building);
    assert!(!any.has_image(&default));
    assert!(matches!(
        any.create(&spec(&new_id())).await,
        Err(DriverError::Storage(StorageError::ImageMissing(_)))
    ));
    d.set_image_status(default, ImageStatus::Present);

    let a = up(&d).await;
    let b = up(&d).await;
    let removed = any.gc(&HashSet::from([a.id.clone()])).await.unwrap();
    assert_eq!(removed, vec![b.id.clone()]);
    assert!(d.has_storage(&a.id) && !d.has_storage(&b.id));
    assert!(!d.is_running(&b));
}

#[tokio::test]
async fn disconnects_detach_and_crashes_end_connections() {
    let d = FakeDriver::new();
    let h = up(&d).await;
    let mut exec = sh("sleep 60000");
    exec.command_id = Some("k".into());
    exec.kill_on_disconnect = true;
    let mut conn = d.connect(&h).await.unwrap();
    conn.send(&Request::Exec(exec)).await.unwrap();
    started(&mut conn).await;
    drop(conn);
    // The agent notices the hangup on its own time: wait for the command to end.
    let exit = loop {
        let mut conn = d.connect(&h).await.unwrap();
        let Response::CommandList { commands } = conn.call(&Request::ListCommands).await.unwrap()
        else {
            panic!("expected a command list");
        };
        if let Some(exit) = commands[0].exit {
            break exit;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    };
    assert_eq!(exit.reason, ExitReason::Detached);

    let mut conn = d.connect(&h).await.unwrap();
    conn.send(&Request::Exec(sh("sleep 60000"))).await.unwrap();
    started(&mut conn).await;
    d.crash(&h.id);
    assert_eq!(conn.recv().await.unwrap(), None, "the agent went away");
}

//! The supervisor's mux and the guest's demux joined by a socket pair standing in for the
//! virtio-serial port, with the real connection handler behind the guest side.

use std::collections::VecDeque;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use warren_proto::{ExecSpec, PROTOCOL_VERSION, Request, Response, read_frame, write_frame};

use super::*;

/// A blocking client like the host's: connect, shake hands.
fn client(sock: &Path) -> std::os::unix::net::UnixStream {
    let mut s = std::os::unix::net::UnixStream::connect(sock).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write_frame(
        &mut s,
        &Request::Hello {
            version: PROTOCOL_VERSION,
        },
    )
    .unwrap();
    match read_frame(&mut s).unwrap() {
        Some(Response::Hello { version, .. }) => assert_eq!(version, PROTOCOL_VERSION),
        other => panic!("handshake: {other:?}"),
    }
    s
}

/// Runs a shell command through a new connection and returns (stdout, exit code).
fn run(sock: &Path, script: &str) -> (String, i32) {
    let mut s = client(sock);
    let spec = ExecSpec {
        argv: vec!["/bin/sh".into(), "-c".into(), script.into()],
        ..Default::default()
    };
    write_frame(&mut s, &Request::Exec(spec)).unwrap();
    let mut out = Vec::new();
    loop {
        match read_frame(&mut s).unwrap() {
            Some(Response::Started { .. }) => {}
            Some(Response::Output { stream, data, .. }) => {
                if stream == warren_proto::Stream::Stdout {
                    out.extend_from_slice(&data);
                }
            }
            Some(Response::Exit(st)) => {
                assert!(
                    read_frame::<_, Response>(&mut s).unwrap().is_none(),
                    "closed after Exit"
                );
                return (String::from_utf8(out).unwrap(), st.code);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// Reads a whole file through a new connection.
fn read_file(sock: &Path, path: &Path) -> Vec<u8> {
    let mut s = client(sock);
    let req = Request::ReadFile {
        path: path.to_str().unwrap().into(),
        offset: 0,
        len: None,
        user: None,
    };
    write_frame(&mut s, &req).unwrap();
    assert!(matches!(
        read_frame(&mut s).unwrap(),
        Some(Response::FileInfo(_))
    ));
    let mut data = Vec::new();
    loop {
        match read_frame(&mut s).unwrap() {
            Some(Response::FileData { data: d }) => data.extend_from_slice(&d),
            Some(Response::FileEnd) => return data,
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// The supervisor's end: an `agent.sock` in a temp dir, muxed over `io`.
fn supervisor(
    dir: &Path,
    io: UnixStream,
) -> (
    PathBuf,
    tokio::task::JoinHandle<Result<(), yamux::ConnectionError>>,
) {
    let sock = dir.join("agent.sock");
    let listener = UnixListener::bind(&sock).unwrap();
    let task = tokio::spawn(async move { mux(io, &listener).await });
    (sock, task)
}

type Task = tokio::task::JoinHandle<Result<(), yamux::ConnectionError>>;

/// A guest session (the real agent behind it) and a supervisor joined by a socket pair:
/// the supervisor's `agent.sock` in `dir`, the guest's task and the supervisor's.
fn joined(dir: &Path) -> (PathBuf, Task, Task) {
    let agent = crate::start_agent().unwrap();
    let (host_io, guest_io) = UnixStream::pair().unwrap();
    let guest = tokio::spawn(async move { serve_session(&agent, guest_io).await });
    let (sock, mux) = supervisor(dir, host_io);
    (sock, guest, mux)
}

#[tokio::test]
async fn two_concurrent_connections_reach_the_guest_handler() {
    let _one_at_a_time = crate::CHILD_TESTS.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let (sock, guest, _mux) = joined(dir.path());

    // Bigger than one yamux window (256 KiB), so flow control is exercised too.
    let file = dir.path().join("data");
    let content: Vec<u8> = (0..600_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::File::create(&file)
        .unwrap()
        .write_all(&content)
        .unwrap();

    let (s1, s2) = (sock.clone(), sock.clone());
    // The command outlives the file read, so the two connections overlap.
    let cmd = tokio::task::spawn_blocking(move || run(&s1, "echo one; sleep 0.5; echo two"));
    let read = tokio::task::spawn_blocking(move || read_file(&s2, &file));
    let (out, code) = cmd.await.unwrap();
    assert_eq!((out.as_str(), code), ("one\ntwo\n", 0));
    assert_eq!(read.await.unwrap(), content);
    assert!(
        !guest.is_finished(),
        "the guest session outlives its streams"
    );
}

/// A host client that hangs up reaches the guest's handler as a hang-up, not as a half-close:
/// a silent command started with `kill_on_disconnect` is killed (it has no output whose
/// failed write would tell).
#[tokio::test]
async fn a_client_hang_up_reaches_the_guest_and_kills_a_silent_command() {
    let _one_at_a_time = crate::CHILD_TESTS.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let (sock, _guest, _mux) = joined(dir.path());
    let pidfile = dir.path().join("pid");
    let (s, p) = (sock.clone(), pidfile.clone());
    tokio::task::spawn_blocking(move || {
        let mut c = client(&s);
        let spec = ExecSpec {
            argv: vec![
                "/bin/sh".into(),
                "-c".into(),
                format!("echo $$ > {}; exec sleep 600", p.display()),
            ],
            kill_on_disconnect: true,
            ..Default::default()
        };
        write_frame(&mut c, &Request::Exec(spec)).unwrap();
        assert!(matches!(
            read_frame(&mut c).unwrap(),
            Some(Response::Started { .. })
        ));
        // Hung up only once the shell has written its pid: a hang-up before that kills it
        // before it could (on a loaded machine), and the test would find no pid to watch.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::fs::read_to_string(&p).map_or(true, |t| !t.ends_with('\n')) {
            assert!(
                std::time::Instant::now() < deadline,
                "the command never started"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        // Dropped here: the whole connection closes.
    })
    .await
    .unwrap();
    // Running, as opposed to gone or a zombie nobody has reaped yet.
    let alive = |pid: i32| {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
            stat.rsplit_once(") ")
                .is_some_and(|(_, rest)| !rest.starts_with('Z'))
        })
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let pid = loop {
        if let Ok(text) = std::fs::read_to_string(&pidfile)
            && let Ok(pid) = text.trim().parse::<i32>()
        {
            break pid;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the command never started"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    while alive(pid) {
        assert!(
            std::time::Instant::now() < deadline,
            "the command outlived its client's hang-up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn guest_serves_a_new_session_after_the_host_went_away() {
    let _one_at_a_time = crate::CHILD_TESTS.lock().await;
    let agent = crate::start_agent().unwrap();
    let dir = tempfile::tempdir().unwrap();
    // Two host connections to the "port", one after the other, as qemu's chardev gives them.
    let (host1, guest1) = UnixStream::pair().unwrap();
    let (host2, guest2) = UnixStream::pair().unwrap();
    let ends = Arc::new(Mutex::new(VecDeque::from([guest1, guest2])));
    let guest = {
        let agent = Arc::clone(&agent);
        tokio::spawn(async move {
            serve_port(&agent, move || {
                // Once both are used up, a stream whose peer is gone reads EOF at once, like
                // the real port with no host.
                ends.lock()
                    .unwrap()
                    .pop_front()
                    .unwrap_or_else(|| UnixStream::pair().unwrap().0)
            })
            .await
        })
    };

    let first = dir.path().join("1");
    std::fs::create_dir(&first).unwrap();
    let (sock, mux1) = supervisor(&first, host1);
    let s = sock.clone();
    let (out, _) = tokio::task::spawn_blocking(move || run(&s, "echo first"))
        .await
        .unwrap();
    assert_eq!(out, "first\n");
    // A connection left open when the host side dies is cut, not hung.
    let s = sock.clone();
    let open = tokio::task::spawn_blocking(move || {
        let mut c = client(&s);
        write_frame(
            &mut c,
            &Request::Exec(ExecSpec {
                argv: vec!["/bin/sleep".into(), "30".into()],
                ..Default::default()
            }),
        )
        .unwrap();
        assert!(matches!(
            read_frame(&mut c).unwrap(),
            Some(Response::Started { .. })
        ));
        c
    })
    .await
    .unwrap();
    mux1.abort();
    let _ = mux1.await;
    let mut open = open;
    let cut = tokio::task::spawn_blocking(move || read_frame::<_, Response>(&mut open))
        .await
        .unwrap();
    assert!(!matches!(cut, Ok(Some(_))), "{cut:?}");

    let second = dir.path().join("2");
    std::fs::create_dir(&second).unwrap();
    let (sock, _mux2) = supervisor(&second, host2);
    let (out, code) =
        tokio::task::spawn_blocking(move || run(&sock, "echo second; hostname >/dev/null"))
            .await
            .unwrap();
    assert_eq!((out.as_str(), code), ("second\n", 0));
    assert!(!guest.is_finished());
}

#[tokio::test]
async fn garbage_from_the_guest_ends_the_session_without_panicking() {
    let _one_at_a_time = crate::CHILD_TESTS.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let (host_io, mut guest_io) = UnixStream::pair().unwrap();
    let (sock, mux_task) = supervisor(dir.path(), host_io);
    let c = tokio::task::spawn_blocking(move || std::os::unix::net::UnixStream::connect(&sock));
    guest_io.write_all(&[0xff; 64]).await.unwrap();
    let r = tokio::time::timeout(Duration::from_secs(10), mux_task)
        .await
        .unwrap();
    assert!(matches!(r, Ok(Err(_))), "{r:?}");
    drop(c);
}

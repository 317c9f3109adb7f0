//! Command sessions in a real sandbox: live output, stdin, PTY, kill, timeout, reattach, floods.

use std::time::{Duration, Instant};

use warren_proto::{ExecSpec, ExitReason, PtySize, Request, Response, Stream};

use crate::support::{TestSandbox, bash, collect};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_arrives_before_the_command_ends() {
    let sb = TestSandbox::new().await;
    let mut conn = sb.conn().await;
    conn.send(&Request::Exec(ExecSpec {
        argv: bash("echo first; sleep 3; echo second"),
        ..Default::default()
    }))
    .await
    .unwrap();
    let started = Instant::now();
    let first = loop {
        match conn.recv().await.unwrap().unwrap() {
            Response::Output {
                stream: Stream::Stdout,
                data,
                offset,
            } => break (data, offset),
            Response::Started { .. } => {}
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(first, (b"first\n".to_vec(), 0));
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "first line took {:?}",
        started.elapsed()
    );
    let rest = collect(&mut conn).await;
    assert_eq!(rest.out(), "second\n");
    assert!(started.elapsed() >= Duration::from_secs(2));
    sb.destroy().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdin_reaches_the_command() {
    let sb = TestSandbox::new().await;
    let mut conn = sb.conn().await;
    conn.send(&Request::Exec(ExecSpec {
        argv: vec!["cat".into()],
        stdin: true,
        ..Default::default()
    }))
    .await
    .unwrap();
    conn.send(&Request::Input {
        data: b"hello ".to_vec(),
    })
    .await
    .unwrap();
    conn.send(&Request::Input {
        data: b"sandbox\n".to_vec(),
    })
    .await
    .unwrap();
    conn.send(&Request::CloseStdin).await.unwrap();
    let out = collect(&mut conn).await;
    assert_eq!((out.out().as_str(), out.code()), ("hello sandbox\n", 0));
    sb.destroy().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pty_gives_a_terminal_that_resizes() {
    let sb = TestSandbox::new().await;
    let mut conn = sb.conn().await;
    conn.send(&Request::Exec(ExecSpec {
        argv: bash("tty; stty size; read line; stty size; echo got=$line"),
        pty: Some(PtySize {
            rows: 33,
            cols: 101,
        }),
        stdin: true,
        ..Default::default()
    }))
    .await
    .unwrap();
    // Resize, then answer the `read`.
    let mut seen = String::new();
    while !seen.contains("33 101") {
        match conn.recv().await.unwrap().unwrap() {
            Response::Output { data, .. } => seen.push_str(&String::from_utf8_lossy(&data)),
            Response::Started { .. } => {}
            other => panic!("unexpected {other:?}: {seen}"),
        }
    }
    conn.send(&Request::Resize {
        rows: 50,
        cols: 132,
    })
    .await
    .unwrap();
    conn.send(&Request::Input {
        data: b"typed\r".to_vec(),
    })
    .await
    .unwrap();
    let out = collect(&mut conn).await;
    let all = seen + &out.out();
    assert!(all.contains("/dev/pts/"), "{all}");
    assert!(all.contains("50 132"), "{all}");
    assert!(all.contains("got=typed"), "{all}");
    sb.destroy().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_takes_the_whole_process_group() {
    let sb = TestSandbox::new().await;
    let mut conn = sb.conn().await;
    conn.send(&Request::Exec(ExecSpec {
        argv: bash("sleep 1000 & echo $!; wait"),
        ..Default::default()
    }))
    .await
    .unwrap();
    let pid = loop {
        if let Response::Output { data, .. } = conn.recv().await.unwrap().unwrap() {
            break String::from_utf8(data).unwrap().trim().to_owned();
        }
    };
    conn.send(&Request::Kill).await.unwrap();
    let out = collect(&mut conn).await;
    assert_eq!(out.exit.reason, ExitReason::Killed);
    assert_ne!(out.code(), 0);
    let check = sb
        .sh(&format!(
            "sleep 0.2; kill -0 {pid} 2>/dev/null && echo alive || echo gone"
        ))
        .await;
    assert_eq!(
        check.out(),
        "gone\n",
        "the sleep grandchild must die with its group"
    );
    sb.destroy().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_kills_the_command() {
    let sb = TestSandbox::new().await;
    let t = Instant::now();
    let out = sb
        .exec(ExecSpec {
            argv: bash("sleep 30"),
            timeout_ms: Some(500),
            ..Default::default()
        })
        .await;
    assert_eq!(out.exit.reason, ExitReason::Timeout);
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "took {:?}",
        t.elapsed()
    );
    sb.destroy().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reattach_from_an_offset_gets_exactly_the_rest() {
    let sb = TestSandbox::new().await;
    // line4 onwards waits for /tmp/go, which the test makes only once it has detached.
    let script = "for i in $(seq 1 6); do echo line$i; if [ $i = 3 ]; then \
                  while [ ! -e /tmp/go ]; do sleep 0.05; done; fi; done";
    let full: String = (1..=6).map(|i| format!("line{i}\n")).collect();
    let mut conn = sb.conn().await;
    conn.send(&Request::Exec(ExecSpec {
        command_id: Some("reattach-me".into()),
        argv: bash(script),
        ..Default::default()
    }))
    .await
    .unwrap();
    let mut got = Vec::new();
    while got.is_empty() {
        match conn.recv().await.unwrap().unwrap() {
            Response::Started { command_id, .. } => assert_eq!(command_id, "reattach-me"),
            Response::Output { data, .. } => got = data,
            other => panic!("unexpected {other:?}"),
        }
    }
    drop(conn); // detach mid-run
    // The rest is written while no client is attached: the reattach must replay it.
    assert_eq!(sb.sh("touch /tmp/go").await.code(), 0);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut list = sb.conn().await;
        list.send(&Request::ListCommands).await.unwrap();
        let Some(Response::CommandList { commands }) = list.recv().await.unwrap() else {
            panic!("no command list");
        };
        let me = commands
            .iter()
            .find(|c| c.command_id == "reattach-me")
            .unwrap();
        if me.exit.is_some() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the detached command did not finish"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut again = sb.conn().await;
    again
        .send(&Request::Attach {
            command_id: "reattach-me".into(),
            stdout_offset: got.len() as u64,
            stderr_offset: 0,
        })
        .await
        .unwrap();
    let rest = collect(&mut again).await;
    assert_eq!(
        String::from_utf8_lossy(&got).into_owned() + &rest.out(),
        full
    );
    assert_eq!(rest.code(), 0);
    sb.destroy().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multi_gib_flood_keeps_memory_bounded() {
    let sb = TestSandbox::new().await;
    let total: u64 = 3 << 30;
    let mut conn = sb.conn().await;
    conn.send(&Request::Exec(ExecSpec {
        argv: bash(&format!("head -c {total} /dev/zero")),
        ..Default::default()
    }))
    .await
    .unwrap();
    let rss_kib = |pid: u32| -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    };
    let me = std::process::id();
    let (mut received, mut next_offset, mut peak_agent, mut peak_self) = (0u64, 0u64, 0u64, 0u64);
    let mut frames = 0u64;
    let code = loop {
        match conn.recv().await.unwrap().unwrap() {
            Response::Output { data, offset, .. } => {
                assert_eq!(offset, next_offset, "no gaps or overlaps");
                next_offset += data.len() as u64;
                received += data.len() as u64;
                frames += 1;
                if frames.is_multiple_of(2048) {
                    peak_agent = peak_agent.max(rss_kib(sb.handle.pid));
                    peak_self = peak_self.max(rss_kib(me));
                }
            }
            Response::Exit(e) => break e.code,
            Response::Started { .. } => {}
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(code, 0);
    assert_eq!(received, total, "every byte arrived");
    assert!(
        peak_agent < 64 * 1024,
        "agent RSS peaked at {peak_agent} KiB"
    );
    assert!(
        peak_self < 256 * 1024,
        "host-side RSS peaked at {peak_self} KiB"
    );
    sb.destroy().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemonized_child_does_not_hold_the_command_open() {
    let sb = TestSandbox::new().await;
    let t = Instant::now();
    let out = sb.sh("sleep 60 & echo started").await;
    assert_eq!((out.out().as_str(), out.code()), ("started\n", 0));
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "took {:?}",
        t.elapsed()
    );
    sb.destroy().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_written_and_read_back_inside() {
    let sb = TestSandbox::new().await;
    let data: Vec<u8> = (0..=255u8).cycle().take(200_000).collect();
    let mut conn = sb.conn().await;
    conn.send(&Request::WriteFile {
        path: "/root/deep/dir/blob.bin".into(),
        mode: None,
        user: None,
    })
    .await
    .unwrap();
    for chunk in data.chunks(warren_proto::MAX_CHUNK_LEN) {
        conn.send(&Request::FileData {
            data: chunk.to_vec(),
        })
        .await
        .unwrap();
    }
    conn.send(&Request::FileEnd).await.unwrap();
    assert_eq!(conn.recv().await.unwrap(), Some(Response::Ok));
    let sum = sb.sh("sha256sum /root/deep/dir/blob.bin | cut -d' ' -f1; stat -c %u:%s /root/deep/dir/blob.bin").await;
    let expected = {
        let out = std::process::Command::new("sha256sum")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                use std::io::Write;
                c.stdin.take().unwrap().write_all(&data)?;
                c.wait_with_output()
            })
            .unwrap();
        String::from_utf8(out.stdout)
            .unwrap()
            .split(' ')
            .next()
            .unwrap()
            .to_owned()
    };
    assert_eq!(sum.out(), format!("{expected}\n0:200000\n"));
    let mut conn = sb.conn().await;
    conn.send(&Request::ReadFile {
        path: "/root/deep/dir/blob.bin".into(),
        offset: 0,
        len: None,
        user: None,
    })
    .await
    .unwrap();
    let mut back = Vec::new();
    loop {
        match conn.recv().await.unwrap().unwrap() {
            Response::FileInfo(info) => assert_eq!(info.size, 200_000),
            Response::FileData { data } => back.extend_from_slice(&data),
            Response::FileEnd => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(back, data);
    sb.destroy().await;
}

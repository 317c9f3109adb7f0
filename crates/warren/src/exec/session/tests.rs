use std::sync::{Arc, Mutex};

use super::*;
use crate::client::test_server::TestServer;

#[test]
fn exit_codes_map_like_a_shell() {
    assert_eq!(exit_status(0), 0);
    assert_eq!(exit_status(3), 3);
    assert_eq!(exit_status(137), 137);
    assert_eq!(exit_status(-9), 137);
    assert_eq!(exit_status(300), 255);
    assert_eq!(exit_status(i64::MIN), 255);
}

#[test]
fn frames_carry_json_objects() {
    let m = parse_frame(Message::text(r#"{"type":"exit","exit_code":0}"#)).unwrap();
    assert_eq!(
        m,
        Some(WsServer::Exit {
            exit_code: 0,
            oom_killed: false
        })
    );
    let m = parse_frame(Message::binary(
        br#"{"type":"started","command_id":"c","pid":7}"#.to_vec(),
    ))
    .unwrap();
    assert_eq!(
        m,
        Some(WsServer::Started {
            command_id: "c".into(),
            pid: 7
        })
    );
    assert!(
        parse_frame(Message::Ping(Vec::new().into()))
            .unwrap()
            .is_none()
    );
    // JSON this client does not know is skipped; what is not JSON is an error.
    assert!(parse_frame(Message::text("[1]")).unwrap().is_none());
    assert!(
        parse_frame(Message::text(r#"{"type":"progress","pct":5}"#))
            .unwrap()
            .is_none()
    );
    assert!(parse_frame(Message::text("nope")).is_err());
}

fn plain(command: &str, interactive: bool) -> Session {
    Session {
        command: command.into(),
        env: BTreeMap::new(),
        cwd: None,
        timeout: 0,
        interactive,
        tty: false,
    }
}

/// Runs a session in the sandbox `box`; returns the outcome, stdout and stderr.
async fn run_session(
    srv: &TestServer,
    s: &Session,
    input: Option<mpsc::Receiver<Input>>,
) -> (Result<Outcome>, String, String) {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let io = Io {
        out: &mut out,
        err: &mut err,
        input,
    };
    let r = session_loop(&srv.client(), "box", s, io).await;
    (
        r,
        String::from_utf8(out).unwrap(),
        String::from_utf8(err).unwrap(),
    )
}

async fn server_with_box() -> TestServer {
    let srv = TestServer::start().await;
    srv.sandbox("box").await;
    srv
}

#[tokio::test]
async fn output_streams_and_the_exit_code_is_kept() {
    let srv = server_with_box().await;
    let (r, out, err) = run_session(&srv, &plain("echo hi; exit 3", false), None).await;
    assert_eq!(r.unwrap(), Outcome::Exit(3));
    assert_eq!(out, "hi\n");
    assert_eq!(err, "");
    let (r, out, err) = run_session(&srv, &plain("echo a; echoerr oops", false), None).await;
    assert_eq!(r.unwrap(), Outcome::Exit(0));
    assert_eq!(out, "a\n");
    assert_eq!(err, "oops\n");
}

#[tokio::test]
async fn env_and_workdir_reach_the_command() {
    let srv = server_with_box().await;
    let mut s = plain("env GREETING; pwd", false);
    s.env.insert("GREETING".into(), "héllo".into());
    s.cwd = Some("/app".into());
    let (r, out, _) = run_session(&srv, &s, None).await;
    assert_eq!(r.unwrap(), Outcome::Exit(0));
    assert_eq!(out, "héllo\n/app\n");
}

#[tokio::test]
async fn output_split_inside_characters_arrives_intact() {
    let srv = server_with_box().await;
    // The sandbox hands output over in 64 KiB chunks; one leading byte puts every chunk
    // boundary inside a two-byte character.
    let (r, out, _) = run_session(&srv, &plain("repeat 1 a; repeat 70000 é", false), None).await;
    assert_eq!(r.unwrap(), Outcome::Exit(0));
    assert_eq!(out.len(), 1 + 140_000);
    assert_eq!(out, format!("a{}", "é".repeat(70_000)));
    // Three-byte characters across the same boundaries.
    let (r, out, _) = run_session(&srv, &plain("repeat 30000 €", false), None).await;
    assert_eq!(r.unwrap(), Outcome::Exit(0));
    assert_eq!(out, "€".repeat(30_000));
}

#[tokio::test]
async fn stdin_is_forwarded_then_closed() {
    let srv = server_with_box().await;
    let (tx, rx) = mpsc::channel(4);
    tx.send(Input::Data("abc".into())).await.unwrap();
    tx.send(Input::Data("é\n".into())).await.unwrap();
    tx.send(Input::Eof).await.unwrap();
    // `cat` ends only when its stdin is closed.
    let (r, out, _) = run_session(&srv, &plain("cat; echo done", true), Some(rx)).await;
    assert_eq!(r.unwrap(), Outcome::Exit(0));
    assert_eq!(out, "abcé\ndone\n");
}

/// Output that a test can read while the session still runs.
#[derive(Clone, Default)]
struct Shared(Arc<Mutex<Vec<u8>>>);

impl Write for Shared {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn a_pty_gets_eot_at_the_end_of_input() {
    let srv = server_with_box().await;
    let (tx, rx) = mpsc::channel(4);
    tx.send(Input::Data("a".into())).await.unwrap();
    tx.send(Input::Eof).await.unwrap();
    let mut s = plain("cat", true);
    s.tty = true;
    let out = Shared::default();
    let mut writer = out.clone();
    let mut err = Vec::new();
    let io = Io {
        out: &mut writer,
        err: &mut err,
        input: Some(rx),
    };
    let client = srv.client();
    let session = session_loop(&client, "box", &s, io);
    // The fake sandbox's `cat` echoes its input and, unlike a terminal's line discipline,
    // does not end at EOT, so the session is dropped once the EOT has come back.
    let echoed = async {
        while out.0.lock().unwrap().as_slice() != b"a\x04" {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::select! {
        r = session => panic!("the session ended: {r:?}"),
        () = echoed => {}
        () = tokio::time::sleep(Duration::from_secs(10)) => {
            panic!("no EOT came back: {:?}", out.0.lock().unwrap());
        }
    }
}

#[tokio::test]
async fn timeouts_and_errors_are_told_apart() {
    let srv = server_with_box().await;
    let mut s = plain("sleep 10000", false);
    s.timeout = 1;
    let (r, _, _) = run_session(&srv, &s, None).await;
    match r.unwrap() {
        Outcome::Timeout(m) => assert!(m.contains("timed out"), "{m}"),
        other => panic!("{other:?}"),
    }
    let (r, _, _) = run_session(&srv, &plain("echo a\0b", false), None).await;
    assert_eq!(
        r.unwrap_err().to_string(),
        "the command contains a NUL byte"
    );
}

#[tokio::test]
async fn unknown_sandboxes_fail_before_connecting() {
    let srv = TestServer::start().await;
    let (r, _, _) = run_session(&srv, &plain("echo", false), None).await;
    assert_eq!(r.unwrap_err().to_string(), "Sandbox 'box' not found");
}

#[tokio::test]
async fn a_bad_key_is_refused_at_the_start() {
    let srv = server_with_box().await;
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let io = Io {
        out: &mut out,
        err: &mut err,
        input: None,
    };
    let r = session_loop(
        &srv.client_with(Some("wrong")),
        "box",
        &plain("echo", false),
        io,
    )
    .await;
    assert_eq!(r.unwrap_err().to_string(), "invalid API key");
}

/// A reader that went away, like `head` closing the pipe.
struct Closed;

impl Write for Closed {
    fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
        Err(std::io::ErrorKind::BrokenPipe.into())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn a_closed_stdout_kills_the_command() {
    let srv = server_with_box().await;
    let mut err = Vec::new();
    let io = Io {
        out: &mut Closed,
        err: &mut err,
        input: None,
    };
    let s = plain("echo x; sleep 60000", false);
    let r = tokio::time::timeout(
        Duration::from_secs(10),
        session_loop(&srv.client(), "box", &s, io),
    )
    .await
    .expect("the kill ends the command");
    assert_eq!(r.unwrap(), Outcome::Exit(137));
}

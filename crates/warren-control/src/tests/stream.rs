//! `CommandStream` on its own: what the control plane makes of each driver event, including
//! the ones the fake's scripts cannot produce (a refusal as the first event, a lost agent, an
//! OOM kill).

use std::sync::Arc;

use tokio::sync::mpsc;
use warren_driver::{
    AgentError, CommandChannel, CommandEvent, CommandInput, ExitReason, ExitStatus,
};
use warren_types::SandboxId;

use super::support::{harness, next};
use crate::command::StreamContext;
use crate::state::ActivityMap;
use crate::{CommandStream, ControlError, ErrorKind, ExecEvent, ExecFailure, Stream};

/// A stream fed by hand, over the harness's driver and this sandbox's runtime id.
fn stream(
    driver: Arc<dyn warren_driver::Driver>,
    runtime_id: SandboxId,
    timeout_ms: Option<u64>,
) -> (
    CommandStream,
    mpsc::Sender<CommandEvent>,
    mpsc::Receiver<CommandInput>,
    ActivityMap,
) {
    let (tx, events) = mpsc::channel(16);
    let (input, input_rx) = mpsc::channel(16);
    let activity = ActivityMap::default();
    let ctx = StreamContext {
        driver,
        metrics: Arc::default(),
        runtime_id,
        sandbox_id: "sandbox".into(),
    };
    let guard = activity.hold("sandbox");
    let s = CommandStream::new(CommandChannel { events, input }, ctx, timeout_ms, guard);
    (s, tx, input_rx, activity)
}

fn killed(reason: ExitReason) -> ExitStatus {
    ExitStatus {
        code: 137,
        signal: Some(9),
        reason,
    }
}

#[tokio::test]
async fn a_refused_attach_is_failed_command_not_found() {
    let h = harness().await;
    let (mut s, tx, _input, _) = stream(h.control.driver.clone(), SandboxId::generate(), None);
    tx.send(CommandEvent::Error(AgentError::new(
        ErrorKind::CommandNotFound,
        "command 'x' not found",
    )))
    .await
    .unwrap();
    let first = next(&mut s).await.unwrap();
    assert_eq!(
        first,
        ExecEvent::Failed {
            failure: ExecFailure::CommandNotFound,
            message: "command 'x' not found".into()
        }
    );
    assert_eq!(next(&mut s).await, None, "nothing follows a failure");
    assert!(s.started().is_none());
    let e = first.into_error().unwrap();
    assert!(matches!(e, ControlError::CommandNotFound(_)), "{e:?}");
}

#[tokio::test]
async fn an_expired_session_and_other_agent_errors_are_failures() {
    let h = harness().await;
    for (kind, failure) in [
        (ErrorKind::SessionExpired, ExecFailure::SessionExpired),
        (ErrorKind::BadRequest, ExecFailure::Command),
    ] {
        let (mut s, tx, _input, _) = stream(h.control.driver.clone(), SandboxId::generate(), None);
        tx.send(CommandEvent::Error(AgentError::new(kind, "why")))
            .await
            .unwrap();
        assert!(
            matches!(next(&mut s).await, Some(ExecEvent::Failed { failure: f, .. }) if f == failure),
            "{kind:?}"
        );
    }
}

#[tokio::test]
async fn a_vanished_agent_is_lost_once() {
    let h = harness().await;
    let (mut s, tx, _input, _) = stream(h.control.driver.clone(), SandboxId::generate(), None);
    tx.send(CommandEvent::Started {
        command_id: "c".into(),
        pid: 7,
    })
    .await
    .unwrap();
    drop(tx);
    assert!(matches!(
        next(&mut s).await,
        Some(ExecEvent::Started { .. })
    ));
    assert_eq!(s.started(), Some(("c", 7)));
    assert_eq!(next(&mut s).await, Some(ExecEvent::Lost));
    assert_eq!(next(&mut s).await, None);

    let (mut s, tx, _input, _) = stream(h.control.driver.clone(), SandboxId::generate(), None);
    tx.send(CommandEvent::Lost("socket closed".into()))
        .await
        .unwrap();
    assert_eq!(next(&mut s).await, Some(ExecEvent::Lost));
    assert_eq!(
        next(&mut s).await,
        None,
        "nothing after a loss, though the channel is open"
    );
}

#[tokio::test]
async fn a_sigkill_with_new_oom_kills_is_reported_as_oom() {
    let h = harness().await;
    let rec = h.sandbox(&h.admin, "box").await;
    h.fake.set_oom_kills(&rec.runtime_id, 2);
    let (mut s, tx, _input, _) = stream(h.control.driver.clone(), rec.runtime_id.clone(), None);
    // The kernel kills the command: one more OOM kill since the stream opened.
    h.fake.set_oom_kills(&rec.runtime_id, 3);
    tx.send(CommandEvent::Exit(killed(ExitReason::Exited)))
        .await
        .unwrap();
    assert_eq!(
        next(&mut s).await,
        Some(ExecEvent::Exit {
            code: 137,
            oom_killed: true
        })
    );
    // A SIGKILL with no new OOM kill is someone's kill, not the kernel's.
    let (mut s, tx, _input, _) = stream(h.control.driver.clone(), rec.runtime_id.clone(), None);
    tx.send(CommandEvent::Exit(killed(ExitReason::Exited)))
        .await
        .unwrap();
    assert_eq!(
        next(&mut s).await,
        Some(ExecEvent::Exit {
            code: 137,
            oom_killed: false
        })
    );
    assert_eq!(h.control.oom_kills(&rec), 3);
}

#[tokio::test]
async fn a_timeout_names_the_limit() {
    let h = harness().await;
    let (mut s, tx, _input, _) = stream(
        h.control.driver.clone(),
        SandboxId::generate(),
        Some(90_000),
    );
    tx.send(CommandEvent::Exit(killed(ExitReason::Timeout)))
        .await
        .unwrap();
    assert_eq!(
        next(&mut s).await,
        Some(ExecEvent::TimedOut {
            message: "Command timed out after 90 seconds".into()
        })
    );
}

#[tokio::test]
async fn input_goes_to_the_driver_and_the_stream_holds_the_sandbox_busy() {
    let h = harness().await;
    let (s, tx, mut input, activity) =
        stream(h.control.driver.clone(), SandboxId::generate(), None);
    assert!(s.input(b"abc".to_vec()).await);
    assert!(s.resize(40, 120).await);
    assert!(s.close_stdin().await);
    assert!(s.kill().await);
    assert_eq!(
        input.recv().await,
        Some(CommandInput::Data(b"abc".to_vec()))
    );
    assert_eq!(
        input.recv().await,
        Some(CommandInput::Resize(crate::PtySize {
            rows: 40,
            cols: 120
        }))
    );
    assert_eq!(input.recv().await, Some(CommandInput::CloseStdin));
    assert_eq!(input.recv().await, Some(CommandInput::Kill));
    assert_eq!(activity.get("sandbox").map(|a| a.inflight), Some(1));
    drop(s);
    assert_eq!(activity.get("sandbox").map(|a| a.inflight), Some(0));
    // Output events pass through with their offsets.
    let (mut s, tx2, _input, _) = stream(h.control.driver.clone(), SandboxId::generate(), None);
    tx2.send(CommandEvent::Output {
        stream: Stream::Stderr,
        offset: 10,
        data: b"x".to_vec(),
    })
    .await
    .unwrap();
    assert_eq!(
        next(&mut s).await,
        Some(ExecEvent::Output {
            stream: Stream::Stderr,
            offset: 10,
            data: b"x".to_vec()
        })
    );
    drop(tx);
    // Once the driver's side is gone, input reports it.
    drop(input);
    let (s, _tx, input, _) = stream(h.control.driver.clone(), SandboxId::generate(), None);
    drop(input);
    assert!(!s.input(b"late".to_vec()).await);
}

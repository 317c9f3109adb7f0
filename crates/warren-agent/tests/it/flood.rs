//! Output volume: backpressure keeps every byte and bounds the agent's memory.

use std::io::Read;
use std::time::Instant;

use warren_proto::{ExitReason, Request, Response};

use crate::support::{Agent, sh};

/// Reads one frame; for `Output` returns only (stream, offset, len) without decoding the bytes
/// one by one (the wire format is postcard: tag, stream, varint offset, varint length, bytes).
enum Frame {
    Output { stream: u8, offset: u64, len: usize },
    Other(Response),
}

fn varint(buf: &[u8], at: &mut usize) -> u64 {
    let mut v = 0u64;
    let mut shift = 0;
    loop {
        let b = buf[*at];
        *at += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return v;
        }
        shift += 7;
    }
}

fn next_frame(s: &mut impl Read, body: &mut Vec<u8>) -> Option<Frame> {
    let mut prefix = [0u8; 4];
    if s.read_exact(&mut prefix).is_err() {
        return None;
    }
    let len = warren_proto::body_len(prefix).unwrap();
    body.resize(len, 0);
    s.read_exact(body).unwrap();
    if body[0] == 2 {
        let stream = body[1];
        let mut at = 2;
        let offset = varint(body, &mut at);
        let n = varint(body, &mut at) as usize;
        assert_eq!(at + n, body.len(), "malformed Output frame");
        Some(Frame::Output {
            stream,
            offset,
            len: n,
        })
    } else {
        Some(Frame::Other(warren_proto::decode(body).unwrap()))
    }
}

#[test]
fn three_gib_flood_is_complete_and_memory_stays_bounded() {
    const TOTAL: u64 = 3 << 30;
    let agent = Agent::start();
    let mut c = agent.conn();
    c.exec(sh(&format!("head -c {TOTAL} /dev/zero; echo done >&2")));
    let started = Instant::now();
    let mut body = Vec::new();
    let mut got = 0u64;
    let mut stderr = 0u64;
    let mut max_rss = 0;
    let mut next_check = 0u64;
    let exit = loop {
        match next_frame(&mut c.s, &mut body).expect("connection closed before Exit") {
            Frame::Output {
                stream: 0,
                offset,
                len,
            } => {
                assert_eq!(offset, got, "stdout offsets are contiguous");
                got += len as u64;
                if got >= next_check {
                    max_rss = max_rss.max(agent.rss_kib());
                    next_check += 64 << 20;
                }
            }
            Frame::Output { offset, len, .. } => {
                assert_eq!(offset, stderr);
                stderr += len as u64;
            }
            Frame::Other(Response::Exit(e)) => break e,
            Frame::Other(other) => panic!("{other:?}"),
        }
    };
    eprintln!(
        "flood: {TOTAL} bytes in {:?}, agent max VmRSS {max_rss} KiB",
        started.elapsed()
    );
    assert_eq!(got, TOTAL, "every byte arrives");
    assert_eq!(stderr, 5, "stderr is not starved by the flood");
    assert_eq!((exit.code, exit.reason), (0, ExitReason::Exited));
    assert!(
        max_rss > 0 && max_rss < 64 * 1024,
        "agent VmRSS reached {max_rss} KiB"
    );
}

#[test]
fn unattached_command_keeps_draining_into_the_ring() {
    let agent = Agent::start();
    let mut c = agent.conn();
    // 20 MiB, far more than the pipe and the ring hold, then a marker.
    let (id, _) = c.exec(sh("head -c 20971520 /dev/zero; echo -n END"));
    drop(c);
    let done = crate::support::eventually(30, || {
        let mut l = agent.conn();
        l.send(&Request::ListCommands);
        matches!(l.recv(), Some(Response::CommandList { commands }) if commands[0].exit.is_some())
    });
    assert!(done, "the command finished without a reader");
    let mut c = agent.conn();
    c.send(&Request::Attach {
        command_id: id,
        stdout_offset: 0,
        stderr_offset: 0,
    });
    c.started();
    let out = c.collect();
    let end = 20 * 1024 * 1024 + 3;
    let ring = 4 * 1024 * 1024;
    assert_eq!(
        out.first_offsets[0],
        Some((end - ring) as u64),
        "attach before the ring start gets the earliest byte held"
    );
    assert_eq!(out.stdout.len(), ring);
    assert!(out.stdout.ends_with(b"END"));
}

//! Round trips, framing edge cases and the seeded fuzz run.

use super::*;

#[test]
fn roundtrip_every_request_shape() {
    let reqs = vec![
        Request::Hello {
            version: PROTOCOL_VERSION,
        },
        Request::Exec(ExecSpec {
            command_id: Some("abc".into()),
            argv: vec!["/bin/bash".into(), "-c".into(), "echo hi".into()],
            env: vec![("A".into(), "b".into())],
            pty: Some(PtySize::default()),
            timeout_ms: Some(5),
            ..Default::default()
        }),
        Request::Attach {
            command_id: "x".into(),
            stdout_offset: 7,
            stderr_offset: u64::MAX,
        },
        Request::Input {
            data: vec![0, 255, 10],
        },
        Request::ReadFile {
            path: "/etc/hosts".into(),
            offset: 1,
            len: None,
            user: None,
        },
        Request::DialTcp { port: 8080 },
    ];
    for r in reqs {
        let frame = encode(&r).unwrap();
        let back: Request = read_frame(&mut &frame[..]).unwrap().unwrap();
        assert_eq!(back, r);
    }
}

#[test]
fn decoder_handles_split_frames_and_rejects_oversize() {
    let a = encode(&Response::Output {
        stream: Stream::Stderr,
        offset: 42,
        data: b"hello".to_vec(),
    })
    .unwrap();
    let b = encode(&Response::Pong).unwrap();
    let mut all = a.clone();
    all.extend_from_slice(&b);
    let mut d = FrameDecoder::new();
    for byte in &all[..all.len() - 1] {
        d.push(std::slice::from_ref(byte));
    }
    let first: Response = d.next_frame().unwrap().unwrap();
    assert!(matches!(first, Response::Output { offset: 42, .. }));
    assert!(d.next_frame::<Response>().unwrap().is_none());
    d.push(&all[all.len() - 1..]);
    assert_eq!(d.next_frame::<Response>().unwrap(), Some(Response::Pong));

    let mut big = FrameDecoder::new();
    big.push(&u32::try_from(MAX_FRAME_LEN + 1).unwrap().to_be_bytes());
    assert!(matches!(
        big.next_frame::<Response>(),
        Err(ProtoError::FrameTooLarge { .. })
    ));
}

#[test]
fn trailing_garbage_is_rejected() {
    let mut frame = encode(&Request::Ping).unwrap();
    frame.push(0);
    let body = &frame[4..];
    assert!(decode::<Request>(body).is_err());
}

/// The fuzz harness on every sample message, then on 200,000 seeded mutations of them
/// (bit flips, byte overwrites, truncations, splices, length-prefix damage).
#[test]
fn decoders_survive_mutated_frames() {
    let samples: Vec<Vec<u8>> = [
        encode(&Request::Hello {
            version: PROTOCOL_VERSION,
        }),
        encode(&Request::Exec(ExecSpec {
            command_id: Some("c".into()),
            argv: vec!["/bin/bash".into(), "-c".into(), "true".into()],
            env: vec![("K".into(), "v".into())],
            pty: Some(PtySize::default()),
            timeout_ms: Some(1),
            ..Default::default()
        })),
        encode(&Request::Input {
            data: vec![1, 2, 3],
        }),
        encode(&Response::Output {
            stream: Stream::Stdout,
            offset: 9,
            data: b"out".to_vec(),
        }),
        encode(&Response::Pong),
    ]
    .into_iter()
    .map(Result::unwrap)
    .collect();
    // xorshift64*: deterministic, so a failure reproduces.
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        state.wrapping_mul(0x2545_f491_4f6c_dd1d)
    };
    let pick = |r: u64, n: usize| usize::try_from(r % n as u64).unwrap();
    for s in &samples {
        let mut input = vec![0];
        input.extend_from_slice(s);
        input.extend_from_slice(s);
        fuzzing::decode_bytes(&input);
    }
    for _ in 0..200_000 {
        let mut input = samples[pick(next(), samples.len())].clone();
        for _ in 0..=pick(next(), 4) {
            let at = pick(next(), input.len());
            match next() % 5 {
                0 => input[at] ^= 1 << (next() % 8),
                1 => input[at] = next().to_le_bytes()[0],
                2 => input.truncate(at + 1),
                3 => {
                    let other = &samples[pick(next(), samples.len())];
                    input.extend_from_slice(&other[pick(next(), other.len())..]);
                }
                _ => input[..4].copy_from_slice(&next().to_le_bytes()[..4]),
            }
            if input.len() < 4 {
                input.resize(4, 0);
            }
        }
        input.insert(0, next().to_le_bytes()[0]);
        fuzzing::decode_bytes(&input);
    }
}

#[test]
fn eof_before_frame_is_clean_and_mid_frame_is_not() {
    assert!(read_frame::<_, Request>(&mut &[][..]).unwrap().is_none());
    let frame = encode(&Request::Ping).unwrap();
    assert!(read_frame::<_, Request>(&mut &frame[..2]).is_err());
}

fn glob_match(path: &str) -> GlobMatch {
    GlobMatch {
        path: path.into(),
        is_dir: true,
        size: u64::MAX,
        mtime_ns: i64::MIN,
    }
}

fn grep_match(path: &str, text: &str) -> GrepMatch {
    GrepMatch {
        path: path.into(),
        line: u64::MAX,
        text: text.into(),
        text_truncated: true,
    }
}

#[test]
fn roundtrip_search_responses() {
    let resps = vec![
        Response::GlobMatches {
            matches: vec![glob_match("/a"), glob_match("/a/é")],
        },
        Response::GlobMatches { matches: vec![] },
        Response::GrepMatches {
            matches: vec![grep_match("/a/b.txt", "needle \u{fffd}")],
        },
        Response::SearchEnd { truncated: None },
        Response::SearchEnd {
            truncated: Some(SearchCut::DirectoriesQueued),
        },
    ];
    for r in resps {
        let frame = encode(&r).unwrap();
        let back: Response = read_frame(&mut &frame[..]).unwrap().unwrap();
        assert_eq!(back, r);
    }
}

#[test]
fn wire_len_bounds_the_encoding() {
    for path in ["", "/", &"p".repeat(300), &"é".repeat(5000)] {
        let g = glob_match(path);
        assert!(postcard::to_allocvec(&g).unwrap().len() <= g.wire_len());
        for text in ["", "x", &"t".repeat(GREP_MAX_LINE)] {
            let m = grep_match(path, text);
            assert!(postcard::to_allocvec(&m).unwrap().len() <= m.wire_len());
        }
    }
}

/// The agent sends a batch once it holds `SEARCH_BATCH_LEN` bytes: the fullest batch is just
/// under that plus one more match of the largest kind the walk can produce (a path at the
/// kernel's limits, every byte invalid UTF-8 and so widened to U+FFFD), and fits in a frame.
#[test]
fn a_full_batch_fits_in_a_frame() {
    let path = "\u{fffd}".repeat(SEARCH_MAX_ROOT_LEN + 256);
    let big = grep_match(&path, &"t".repeat(GREP_MAX_LINE));
    let small = grep_match("/a", "x");
    let mut matches = vec![];
    let mut len = 0;
    while len + small.wire_len() < SEARCH_BATCH_LEN {
        len += small.wire_len();
        matches.push(small.clone());
    }
    matches.push(big);
    let frame = encode(&Response::GrepMatches { matches }).unwrap();
    assert!(frame.len() < MAX_FRAME_LEN / 4, "{}", frame.len());
}

#[test]
fn cut_reasons_are_the_api_strings() {
    let all = [
        (SearchCut::Limit, "limit"),
        (SearchCut::EntriesVisited, "entries visited"),
        (SearchCut::DirectoryTooLarge, "directory too large"),
        (SearchCut::DirectoriesQueued, "directories queued"),
        (SearchCut::FilesRead, "files read"),
        (SearchCut::BytesRead, "bytes read"),
        (SearchCut::ResponseSize, "response size"),
    ];
    for (cut, reason) in all {
        assert_eq!(cut.reason(), reason);
        assert_eq!(cut.to_string(), reason);
    }
}

#[test]
fn a_hosts_file_keeps_the_tenants_lines_and_replaces_only_its_own_line() {
    use crate::{HOSTS_BASE, HOSTS_MARK, hosts_file};
    let first = hosts_file(None, "sb-1", "100.66.0.2".parse().unwrap());
    assert_eq!(
        first,
        format!("{HOSTS_BASE}100.66.0.2\tsb-1\t{HOSTS_MARK}\n")
    );
    // The tenant added a line (without a final newline); the next boot moved the sandbox and,
    // as a fork, renamed it: one line of its own, the new one, and the tenant's kept.
    let edited = format!("{first}10.1.2.3 db.internal");
    let next = hosts_file(Some(&edited), "sb-2", "127.0.1.1".parse().unwrap());
    assert_eq!(
        next,
        format!("{HOSTS_BASE}10.1.2.3 db.internal\n127.0.1.1\tsb-2\t{HOSTS_MARK}\n")
    );
    assert_eq!(next.matches(HOSTS_MARK).count(), 1);
    // A line of the tenant's for the same name comes first, so theirs is the one resolved;
    // CRLF line ends read as lines.
    let own = hosts_file(
        Some("10.0.0.9 sb-2\r\n"),
        "sb-2",
        "127.0.1.1".parse().unwrap(),
    );
    assert_eq!(
        own,
        format!("10.0.0.9 sb-2\n127.0.1.1\tsb-2\t{HOSTS_MARK}\n")
    );
    // Booting again with nothing changed writes the same text.
    assert_eq!(
        hosts_file(Some(&next), "sb-2", "127.0.1.1".parse().unwrap()),
        next
    );
    // A blank file (a tenant truncated it, or an agent just created it) starts again from the
    // loopback names.
    assert_eq!(
        hosts_file(Some(" \n"), "sb-2", "127.0.1.1".parse().unwrap()),
        format!("{HOSTS_BASE}127.0.1.1\tsb-2\t{HOSTS_MARK}\n")
    );
}

//! The host <-> agent protocol.
//!
//! The host (`warren-runtime`) talks to `warren-agent`, PID 1 inside every sandbox, over a unix
//! stream socket (a vsock on the microVM tier later). Every connection carries length-prefixed
//! frames: a 4-byte big-endian length, then a postcard-encoded [`Request`] (host to agent) or
//! [`Response`] (agent to host). postcard is not self-describing, so any change to these types is
//! a protocol change and bumps [`PROTOCOL_VERSION`].
//!
//! A connection starts with a handshake: the host sends [`Request::Hello`], the agent answers
//! [`Response::Hello`] or [`Response::Error`] with [`ErrorKind::VersionMismatch`]. Then the host
//! sends one operation; what follows depends on it:
//!
//! - [`Request::Exec`] / [`Request::Attach`]: the agent answers [`Response::Started`], then
//!   streams [`Response::Output`] frames and ends with one [`Response::Exit`] (or
//!   [`Response::Error`]) and closes. While attached the host may send [`Request::Input`],
//!   [`Request::CloseStdin`], [`Request::Kill`], [`Request::Signal`] and [`Request::Resize`].
//!   Closing the connection detaches; the command keeps running.
//! - [`Request::WriteFile`]: the host follows with [`Request::FileData`] frames and one
//!   [`Request::FileEnd`]; the agent answers [`Response::Ok`] or an error.
//! - [`Request::ReadFile`]: the agent answers [`Response::FileInfo`], then
//!   [`Response::FileData`] frames and one [`Response::FileEnd`].
//! - [`Request::Stat`] → [`Response::FileInfo`]; [`Request::ListDir`] → [`Response::DirEntries`].
//! - [`Request::DialTcp`]: the agent answers [`Response::Ok`], then the connection carries raw
//!   bytes both ways to the sandbox's TCP port (tunnels use this).
//! - [`Request::ListCommands`] → [`Response::CommandList`]; [`Request::Ping`] → [`Response::Pong`].
//!
//! The agent runs on the untrusted side: the host decodes every frame with a size bound
//! ([`MAX_FRAME_LEN`]) and typed decoding, never trusting lengths it did not check.

use std::io::{Read, Write};

use serde::{Deserialize, Serialize};
/// The data the messages carry live in `warren-types`, so layers above the runtime use them
/// without speaking the protocol; any change to them is still a protocol change.
pub use warren_types::agent::{
    AgentError, CommandSummary, ErrorKind, ExecSpec, ExitReason, ExitStatus, FileInfo, FileKind,
    PtySize, Stream,
};

/// Bumped on every change to the wire types or their meaning.
pub const PROTOCOL_VERSION: u32 = 1;

/// Largest frame either side accepts (length prefix excluded).
pub const MAX_FRAME_LEN: usize = 1 << 20;

/// Largest data payload the agent or host puts in one `Output` or `FileData` frame.
pub const MAX_CHUNK_LEN: usize = 64 * 1024;

/// Largest number of entries in one [`Response::DirEntries`] frame's worth of listing.
pub const MAX_DIR_ENTRIES: usize = 10_000;

/// Errors of framing and decoding.
#[derive(Debug, thiserror::Error)]
pub enum ProtoError {
    /// The peer announced a frame larger than [`MAX_FRAME_LEN`].
    #[error("frame of {len} bytes exceeds the {max} byte limit")]
    FrameTooLarge {
        /// Announced length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The frame's bytes are not a valid message.
    #[error("failed to decode frame")]
    Decode(#[source] postcard::Error),
    /// The message could not be encoded.
    #[error("failed to encode frame")]
    Encode(#[source] postcard::Error),
    /// The underlying stream failed.
    #[error("failed to read or write frame")]
    Io(#[from] std::io::Error),
}

/// Host to agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// First frame of every connection.
    Hello {
        /// The host's [`PROTOCOL_VERSION`].
        version: u32,
    },
    /// Start a command, or attach to it if `command_id` names one that exists (idempotent).
    Exec(ExecSpec),
    /// Attach to an existing command and stream from these byte offsets.
    Attach {
        /// The command's id.
        command_id: String,
        /// Resume offset into stdout.
        stdout_offset: u64,
        /// Resume offset into stderr.
        stderr_offset: u64,
    },
    /// Bytes for the attached command's stdin (or its PTY).
    Input {
        /// The bytes.
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
    /// Half-close the attached command's stdin.
    CloseStdin,
    /// SIGKILL the attached command's whole process group.
    Kill,
    /// Send a signal to the attached command's process group.
    Signal {
        /// Signal number.
        signal: i32,
    },
    /// Resize the attached command's PTY.
    Resize {
        /// Rows.
        rows: u16,
        /// Columns.
        cols: u16,
    },
    /// Write a file: followed by `FileData` frames and one `FileEnd`.
    WriteFile {
        /// Absolute path inside the sandbox.
        path: String,
        /// Permission bits for a new file (default 0o644).
        mode: Option<u32>,
        /// User that owns the file and its created parents (default: the sandbox's root).
        user: Option<String>,
    },
    /// A chunk of a file being written.
    FileData {
        /// The bytes, at most [`MAX_CHUNK_LEN`].
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
    /// End of a file being written.
    FileEnd,
    /// Read a file, or a byte range of it.
    ReadFile {
        /// Absolute path inside the sandbox.
        path: String,
        /// First byte to send.
        offset: u64,
        /// Number of bytes to send at most; `None` for all that follow `offset`.
        len: Option<u64>,
        /// User whose permissions apply (default: the sandbox's root).
        user: Option<String>,
    },
    /// Metadata of one path (not following a final symlink).
    Stat {
        /// Absolute path inside the sandbox.
        path: String,
    },
    /// Entries of a directory.
    ListDir {
        /// Absolute path inside the sandbox.
        path: String,
    },
    /// Connect to `127.0.0.1:port` inside the sandbox; the connection then carries raw bytes.
    DialTcp {
        /// TCP port.
        port: u16,
    },
    /// All command sessions the agent holds.
    ListCommands,
    /// Liveness check.
    Ping,
}

/// Agent to host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// Handshake answer.
    Hello {
        /// The agent's [`PROTOCOL_VERSION`].
        version: u32,
        /// The agent's crate version, for diagnostics.
        agent_version: String,
    },
    /// The command runs (or ran); first frame after `Exec` and `Attach`.
    Started {
        /// The command's id, byte for byte as given or as generated.
        command_id: String,
        /// Pid of the command's main process inside the sandbox.
        pid: u32,
    },
    /// Output bytes.
    Output {
        /// Which stream.
        stream: Stream,
        /// Byte offset of `data[0]` within the stream since the command started.
        offset: u64,
        /// The bytes, at most [`MAX_CHUNK_LEN`].
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
    /// The command ended; last frame of an attached stream, sent after all output.
    Exit(ExitStatus),
    /// Metadata of one path.
    FileInfo(FileInfo),
    /// A chunk of a file being read.
    FileData {
        /// The bytes, at most [`MAX_CHUNK_LEN`].
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
    /// End of a file being read.
    FileEnd,
    /// A directory listing (at most [`MAX_DIR_ENTRIES`] entries; `truncated` when there were more).
    DirEntries {
        /// The entries, sorted by name.
        entries: Vec<FileInfo>,
        /// True when the directory held more entries than were sent.
        truncated: bool,
    },
    /// The operation succeeded.
    Ok,
    /// The operation failed.
    Error(AgentError),
    /// All command sessions.
    CommandList {
        /// One entry per session.
        commands: Vec<CommandSummary>,
    },
    /// Answer to `Ping`.
    Pong,
}

/// Encodes a message as one frame: length prefix plus body.
pub fn encode<T: Serialize>(msg: &T) -> Result<Vec<u8>, ProtoError> {
    let mut out = vec![0u8; 4];
    out = postcard::to_extend(msg, out).map_err(ProtoError::Encode)?;
    let len = out.len() - 4;
    if len > MAX_FRAME_LEN {
        return Err(ProtoError::FrameTooLarge {
            len,
            max: MAX_FRAME_LEN,
        });
    }
    let prefix = u32::try_from(len).map_err(|_| ProtoError::FrameTooLarge {
        len,
        max: MAX_FRAME_LEN,
    })?;
    out[..4].copy_from_slice(&prefix.to_be_bytes());
    Ok(out)
}

/// Checks a frame's length prefix and returns the body length it announces.
pub fn body_len(prefix: [u8; 4]) -> Result<usize, ProtoError> {
    let len = u32::from_be_bytes(prefix) as usize;
    if len > MAX_FRAME_LEN {
        return Err(ProtoError::FrameTooLarge {
            len,
            max: MAX_FRAME_LEN,
        });
    }
    Ok(len)
}

/// Decodes a frame body (without its length prefix). Trailing bytes are an error.
pub fn decode<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, ProtoError> {
    let (msg, rest) = postcard::take_from_bytes(body).map_err(ProtoError::Decode)?;
    if !rest.is_empty() {
        return Err(ProtoError::Decode(postcard::Error::DeserializeBadEncoding));
    }
    Ok(msg)
}

/// Writes one frame to a blocking stream.
pub fn write_frame<W: Write, T: Serialize>(w: &mut W, msg: &T) -> Result<(), ProtoError> {
    w.write_all(&encode(msg)?)?;
    Ok(())
}

/// Reads one frame from a blocking stream. `Ok(None)` on a clean end of stream before a frame.
pub fn read_frame<R: Read, T: for<'a> Deserialize<'a>>(r: &mut R) -> Result<Option<T>, ProtoError> {
    let mut prefix = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        match r.read(&mut prefix[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => return Err(ProtoError::Io(std::io::ErrorKind::UnexpectedEof.into())),
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    let mut body = vec![0u8; body_len(prefix)?];
    r.read_exact(&mut body)?;
    decode(&body).map(Some)
}

#[doc(hidden)]
pub mod fuzzing;

/// Incremental decoder for callers that read bytes in arbitrary pieces (async sockets, fuzzing).
#[derive(Debug, Default)]
pub struct FrameDecoder {
    buf: Vec<u8>,
}

impl FrameDecoder {
    /// An empty decoder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends bytes read from the peer.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Takes the next complete message, if one is buffered.
    pub fn next_frame<T: for<'a> Deserialize<'a>>(&mut self) -> Result<Option<T>, ProtoError> {
        let Some(prefix) = self.buf.get(..4) else {
            return Ok(None);
        };
        let prefix: [u8; 4] = [prefix[0], prefix[1], prefix[2], prefix[3]];
        let len = body_len(prefix)?;
        if self.buf.len() < 4 + len {
            return Ok(None);
        }
        let msg = decode(&self.buf[4..4 + len]);
        self.buf.drain(..4 + len);
        msg.map(Some)
    }
}

#[cfg(test)]
mod tests {
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
}

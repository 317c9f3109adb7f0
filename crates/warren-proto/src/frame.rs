//! Framing: a 4-byte big-endian length, then a postcard body of at most [`MAX_FRAME_LEN`]
//! bytes.

use std::io::{Read, Write};

use serde::{Deserialize, Serialize};

/// Largest frame either side accepts (length prefix excluded).
pub const MAX_FRAME_LEN: usize = 1 << 20;

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

//! Frame I/O on the agent's async sockets.
//!
//! Bulk frames (`Output` and `FileData` out, `FileData` and `Input` in) are encoded and decoded
//! by hand: serde treats a `Vec<u8>` as a sequence of separately (de)serialized bytes, which is
//! the agent's hottest loop during an output flood. The bytes on the wire are exactly postcard's
//! (the tests below compare against `warren_proto::encode`); every other frame goes through
//! `warren_proto`.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use warren_proto::{ProtoError, Request, Response, Stream};

// Variant indices in declaration order of `warren_proto::{Request, Response}`.
const RESPONSE_OUTPUT: u8 = 2;
const RESPONSE_FILE_DATA: u8 = 5;
const REQUEST_INPUT: u8 = 3;
const REQUEST_FILE_DATA: u8 = 9;

/// Errors of a connection's frame stream; any of them ends the connection.
#[derive(Debug, thiserror::Error)]
pub(crate) enum WireError {
    #[error(transparent)]
    Proto(#[from] ProtoError),
    #[error("connection failed")]
    Io(#[from] std::io::Error),
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(low7(v) | 0x80);
        v >>= 7;
    }
    out.push(low7(v));
}

fn low7(v: u64) -> u8 {
    u8::try_from(v & 0x7f).unwrap_or(0)
}

fn take_varint(buf: &[u8]) -> Option<(u64, &[u8])> {
    let mut v: u64 = 0;
    for (i, &b) in buf.iter().enumerate().take(10) {
        v |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((v, &buf[i + 1..]));
        }
    }
    None
}

fn frame(body_start: impl FnOnce(&mut Vec<u8>), data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + 24 + data.len());
    out.extend_from_slice(&[0; 4]);
    body_start(&mut out);
    put_varint(&mut out, data.len() as u64);
    out.extend_from_slice(data);
    let len = u32::try_from(out.len() - 4).unwrap_or(u32::MAX);
    out[..4].copy_from_slice(&len.to_be_bytes());
    out
}

/// A `Response::Output` frame. `data` must be at most `MAX_CHUNK_LEN` bytes.
pub(crate) fn output_frame(stream: Stream, offset: u64, data: &[u8]) -> Vec<u8> {
    frame(
        |out| {
            out.push(RESPONSE_OUTPUT);
            out.push(match stream {
                Stream::Stdout => 0,
                Stream::Stderr => 1,
            });
            put_varint(out, offset);
        },
        data,
    )
}

/// A `Response::FileData` frame. `data` must be at most `MAX_CHUNK_LEN` bytes.
pub(crate) fn file_data_frame(data: &[u8]) -> Vec<u8> {
    frame(|out| out.push(RESPONSE_FILE_DATA), data)
}

/// Decodes a request body, taking the fast path for bulk data frames.
pub(crate) fn decode_request(body: &[u8]) -> Result<Request, ProtoError> {
    if let Some((&tag, rest)) = body.split_first()
        && (tag == REQUEST_INPUT || tag == REQUEST_FILE_DATA)
        && let Some((len, data)) = take_varint(rest)
        && data.len() as u64 == len
    {
        let data = data.to_vec();
        return Ok(if tag == REQUEST_INPUT {
            Request::Input { data }
        } else {
            Request::FileData { data }
        });
    }
    warren_proto::decode(body)
}

/// Reads one request; `None` when the peer closed the connection between frames.
pub(crate) async fn read_request<R: AsyncRead + Unpin>(
    r: &mut R,
) -> Result<Option<Request>, WireError> {
    let mut prefix = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        let n = r.read(&mut prefix[got..]).await?;
        if n == 0 {
            if got == 0 {
                return Ok(None);
            }
            return Err(WireError::Io(std::io::ErrorKind::UnexpectedEof.into()));
        }
        got += n;
    }
    let len = warren_proto::body_len(prefix)?;
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).await?;
    Ok(Some(decode_request(&body)?))
}

/// Writes one response.
pub(crate) async fn send<W: AsyncWrite + Unpin>(
    w: &mut W,
    msg: &Response,
) -> Result<(), WireError> {
    let bytes = match msg {
        Response::Output {
            stream,
            offset,
            data,
        } => output_frame(*stream, *offset, data),
        Response::FileData { data } => file_data_frame(data),
        other => warren_proto::encode(other)?,
    };
    w.write_all(&bytes).await?;
    Ok(())
}

/// Writes an already encoded frame.
pub(crate) async fn send_raw<W: AsyncWrite + Unpin>(
    w: &mut W,
    frame: &[u8],
) -> Result<(), WireError> {
    w.write_all(frame).await?;
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::cast_possible_truncation)]
mod tests {
    use super::*;

    #[test]
    fn hand_encoding_matches_postcard() {
        for (stream, offset, len) in [
            (Stream::Stdout, 0u64, 0usize),
            (Stream::Stderr, 127, 1),
            (Stream::Stdout, 1 << 40, 300),
            (Stream::Stderr, u64::MAX, 65536),
        ] {
            let data: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
            let want = warren_proto::encode(&Response::Output {
                stream,
                offset,
                data: data.clone(),
            })
            .unwrap();
            assert_eq!(output_frame(stream, offset, &data), want);
            let want = warren_proto::encode(&Response::FileData { data: data.clone() }).unwrap();
            assert_eq!(file_data_frame(&data), want);
        }
    }

    #[test]
    fn fast_decoding_matches_postcard() {
        for len in [0usize, 1, 127, 128, 70_000] {
            let data: Vec<u8> = (0..len).map(|i| (i * 3) as u8).collect();
            for req in [
                Request::Input { data: data.clone() },
                Request::FileData { data: data.clone() },
            ] {
                let frame = warren_proto::encode(&req).unwrap();
                assert_eq!(decode_request(&frame[4..]).unwrap(), req);
            }
        }
        let frame = warren_proto::encode(&Request::Kill).unwrap();
        assert_eq!(decode_request(&frame[4..]).unwrap(), Request::Kill);
        // A length that disagrees with the body falls back to postcard, which rejects it.
        assert!(decode_request(&[REQUEST_INPUT, 5, 1, 2]).is_err());
    }
}

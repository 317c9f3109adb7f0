//! The decoder's fuzz harness, shared by the libFuzzer target in `fuzz/` and a seeded run in
//! the unit tests (so CI exercises it on every change without a fuzzing toolchain).
//!
//! The agent decodes what the host sends and the host decodes what a compromised agent may
//! send: no byte string may panic either side, allocate past [`MAX_FRAME_LEN`](crate::MAX_FRAME_LEN)
//! or decode to a message that does not survive its own re-encoding.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{FrameDecoder, Request, Response, decode, encode};

/// Feeds `data` to the decoders as both message types. The first byte picks where the rest is
/// split into two reads, to exercise partial frames. Panics on a violated promise.
pub fn decode_bytes(data: &[u8]) {
    let Some((&split, rest)) = data.split_first() else {
        return;
    };
    let cut = usize::from(split) % (rest.len() + 1);
    drain_both::<Request>(rest, cut);
    drain_both::<Response>(rest, cut);
    // A body is never longer than a frame allows (the decoders check lengths first).
    let Some(rest) = rest.get(..rest.len().min(crate::MAX_FRAME_LEN)) else {
        return;
    };
    if let Ok(msg) = decode::<Request>(rest) {
        round_trip(&msg);
    }
    if let Ok(msg) = decode::<Response>(rest) {
        round_trip(&msg);
    }
}

fn drain_both<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(
    bytes: &[u8],
    cut: usize,
) {
    let mut decoder = FrameDecoder::new();
    decoder.push(&bytes[..cut]);
    drain::<T>(&mut decoder);
    decoder.push(&bytes[cut..]);
    drain::<T>(&mut decoder);
}

fn drain<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(d: &mut FrameDecoder) {
    // A frame that fails to decode is consumed, one with a bad length is not: stop at the first
    // error either way, as a connection does.
    while let Ok(Some(msg)) = d.next_frame::<T>() {
        round_trip(&msg);
    }
}

fn round_trip<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(msg: &T) {
    let frame = encode(msg).expect("a decoded message encodes");
    let again: T = decode(&frame[4..]).expect("a re-encoded message decodes");
    assert_eq!(&again, msg, "re-encoding changed the message");
}

//! Arbitrary bytes into the host<->agent frame decoders (see `warren_proto::fuzzing`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| warren_proto::fuzzing::decode_bytes(data));

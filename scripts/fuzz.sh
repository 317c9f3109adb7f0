#!/usr/bin/env bash
# Fuzzes the host<->agent protocol decoders with libFuzzer for SECONDS (default 60), on stable
# Rust: the coverage instrumentation cargo-fuzz would add is passed as RUSTFLAGS. Crashes land
# in fuzz/artifacts/, the growing corpus in fuzz/corpus/.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds="${1:-60}"
export RUSTFLAGS="--cfg fuzzing -Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares -Cdebug-assertions -Coverflow-checks"
# An explicit --target keeps the instrumentation off build scripts and proc macros.
triple=x86_64-unknown-linux-gnu
cargo build --release --target "$triple" --bin proto_decode
mkdir -p corpus/proto_decode artifacts/proto_decode
exec "target/$triple/release/proto_decode" -max_total_time="$seconds" -max_len=4096 \
  -artifact_prefix=artifacts/proto_decode/ corpus/proto_decode

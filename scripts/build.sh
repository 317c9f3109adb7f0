#!/usr/bin/env bash
# Builds Warren: the `warren` binary, plus `warren-agent` and `warren-jailer` linked statically
# (the agent runs inside arbitrary images), installed next to `warren` in target/release.
set -euo pipefail
cd "$(dirname "$0")/.."
triple=x86_64-unknown-linux-gnu
cargo build --release --locked -p warren
# crt-static applies only with an explicit --target, so build scripts and proc macros stay dynamic.
RUSTFLAGS="-C target-feature=+crt-static" \
  cargo build --release --locked --target "$triple" -p warren-agent -p warren-jail
install -m 0755 "target/$triple/release/warren-agent" "target/$triple/release/warren-jailer" target/release/
# The agent also rides in every VM's initramfs: without its debug info it is a fifth the size,
# which a small guest has to hold in RAM twice while it boots.
strip --strip-debug target/release/warren-agent
echo "built: target/release/warren, target/release/warren-agent, target/release/warren-jailer"

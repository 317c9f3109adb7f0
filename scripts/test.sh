#!/usr/bin/env bash
# The whole test suite: formatting, lints, the static helper build, the default image in the
# test data dir, every Rust test (unit and integration, with real sandboxes), then the SDK
# conformance suite against a real server. Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
  echo "scripts/test.sh needs root: the tests create namespaces, cgroups and btrfs subvolumes" >&2
  exit 1
fi
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# No source file over 600 lines, no import loops between modules, and an API crate that depends
# on neither the agent protocol nor the runtime.
scripts/check-structure.sh
scripts/build.sh
export WARREN_BIN_DIR="$PWD/target/release"
export WARREN_TEST_DATA_DIR="${WARREN_TEST_DATA_DIR:-/var/lib/warren-test}"
target/release/warren --data-dir "$WARREN_TEST_DATA_DIR" image build
# The microVM tier: QEMU, virtiofsd, a guest kernel and the VMM root in the test data dir.
scripts/vm/setup.sh "$WARREN_TEST_DATA_DIR"
cargo nextest run --workspace --locked
# The official SDKs (Python, JS) and Deep Agents against a real `warren serve`.
WARREN_BIN="$PWD/target/release/warren" tests/conformance/run.sh
# The subset that runs on both tiers (commands, files, lifecycle, daemon restart), again with
# every sandbox a VM.
WARREN_TEST_TIER=vm WARREN_BIN="$PWD/target/release/warren" tests/conformance/run.sh

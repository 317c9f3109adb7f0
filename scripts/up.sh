#!/usr/bin/env bash
# Builds Warren, prepares the default image and checks the host. Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
  echo "scripts/up.sh needs root: Warren creates namespaces, cgroups and btrfs subvolumes" >&2
  exit 1
fi
scripts/build.sh
target/release/warren image build
target/release/warren doctor || true
echo
echo "ready: target/release/warren run -- python3 -c 'print(2+2)'"

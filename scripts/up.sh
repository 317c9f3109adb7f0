#!/usr/bin/env bash
# Builds Warren, prepares the default image, checks the host and runs `warren serve` in the
# foreground (Ctrl-C stops the daemon; sandboxes keep running and are re-adopted next start).
# Needs root. Extra arguments go to `warren serve`, e.g. --listen 0.0.0.0:7878.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
  echo "scripts/up.sh needs root: Warren creates namespaces, cgroups and btrfs subvolumes" >&2
  exit 1
fi
# btrfs-progs, mmdebstrap and the rest: installed when missing (Debian, Ubuntu), else named.
scripts/deps.sh
if ! command -v cargo >/dev/null; then
  echo "scripts/up.sh needs Rust (cargo) to build Warren: install it from https://rustup.rs and run this again" >&2
  exit 1
fi
scripts/build.sh
target/release/warren image build
# The microVM tier (`"tier": "vm"`): QEMU, virtiofsd and a guest kernel. Jails work without it.
scripts/vm/setup.sh "${WARREN_DATA_DIR:-/var/lib/warren}" ||
  echo "the vm tier is not available (scripts/vm/setup.sh failed); jails work without it" >&2
target/release/warren doctor || true
# Hosts whose outbound TLS is re-signed by a locally added CA (corporate proxies, some labs):
# sandboxes reach the internet through Warren's proxy on this host, so they must trust it too.
cas=()
shopt -s nullglob globstar
for crt in /usr/local/share/ca-certificates/**/*.crt; do
  cas+=(--sandbox-ca "$crt")
done
exec target/release/warren serve "${cas[@]}" "$@"

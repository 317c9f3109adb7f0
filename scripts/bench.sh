#!/usr/bin/env bash
# The benchmark suite: Warren (cold and from a warm pool) beside podman/crun, bubblewrap and
# gVisor's runsc on the same root filesystem. Installs what is missing (the peers from Debian,
# a venv with the SDK, matplotlib and tqdm, a Warren build, the default image in the bench data
# dir), then runs bench/suite.py, which writes bench/results/results.{md,png,json}.
#
#   sudo scripts/bench.sh            # full run, about 20 minutes on 2 cores (after the first build)
#   sudo scripts/bench.sh --quick    # a few minutes: small samples, 100 live sandboxes at most
#   sudo scripts/bench.sh --help     # every knob (samples, levels, contenders, lock file)
#   sudo scripts/bench.sh --quick --only warren-vm --merge   # the vm tier only (needs
#                                    # scripts/vm/setup.sh DATA_DIR first; under TCG here)
#
# WARREN_BENCH_DATA_DIR moves the data dir (default /var/lib/warren-bench, kept apart from a
# serving /var/lib/warren).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
  echo "the benchmark needs root: sudo $0 $*" >&2
  exit 1
fi
data_dir=${WARREN_BENCH_DATA_DIR:-/var/lib/warren-bench}
venv=target/bench-venv

# command → Debian package
missing=()
for pair in podman:podman crun:crun bwrap:bubblewrap runsc:runsc nsenter:util-linux; do
  command -v "${pair%%:*}" >/dev/null || missing+=("${pair#*:}")
done
python3 -c 'import ensurepip' 2>/dev/null || missing+=(python3-venv)
if ((${#missing[@]})); then
  echo "installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
if ! "$venv/bin/python" -c 'import langsmith, matplotlib, tqdm, requests' 2>/dev/null; then
  echo "making $venv"
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install -q --disable-pip-version-check -r bench/requirements.txt
fi
for bin in warren warren-agent warren-jailer; do
  if [ ! -x "target/release/$bin" ]; then
    scripts/deps.sh
    scripts/build.sh
    break
  fi
done
if [ ! -d "$data_dir/fs/images/system+default@latest" ]; then
  scripts/deps.sh
  target/release/warren --data-dir "$data_dir" image build
fi
exec "$venv/bin/python" bench/suite.py --data-dir "$data_dir" "$@"

#!/usr/bin/env bash
# The LangSmith Sandboxes conformance suite: the official SDKs (Python, JS), Deep Agents and
# LangChain's standard sandbox suite against a fresh `warren serve`. Needs root, a built warren
# (WARREN_BIN, default target/release/warren) and a data dir with the default image
# (WARREN_TEST_DATA_DIR, default /var/lib/warren-test). Extra arguments go to pytest, e.g.
# `run.sh -k exec -x`.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
cd "$repo"

# A venv at $1 (made if missing) with the pinned packages of requirements file $2.
venv_with() {
  if [ ! -x "$1/bin/python" ]; then
    "${PYTHON:-python3}" -m venv "$1"
  fi
  "$1/bin/python" -m pip install -q --disable-pip-version-check -r "$2"
}

venv="${WARREN_CONFORMANCE_VENV:-$repo/target/conformance-venv}"
venv_with "$venv" "$here/requirements.txt"

command -v node >/dev/null || { echo "run.sh: node is required for the JS SDK tests" >&2; exit 1; }
command -v npm >/dev/null || { echo "run.sh: npm is required for the JS SDK tests" >&2; exit 1; }
for variant in ws http deepagents; do
  (cd "$here/js/$variant" && npm ci --no-audit --no-fund --loglevel=error)
done

# WARREN_TEST_TIER=vm: the subset that runs on both tiers (commands, files, lifecycle), against
# a server whose creates are VMs.
if [ "${WARREN_TEST_TIER:-jail}" = vm ]; then
  exec "$venv/bin/python" -m pytest -q tests/conformance/test_sdk_exec.py \
    tests/conformance/test_sdk_files.py tests/conformance/test_sdk_lifecycle.py \
    tests/conformance/test_restart.py -m "not jail_only" "$@"
fi

# LangChain's standard sandbox suite pins the Deep Agents release it was written against, which
# the main venv's Deep Agents is newer than: a venv of its own.
std_venv="${WARREN_STANDARD_VENV:-$repo/target/standard-venv}"
venv_with "$std_venv" "$here/standard/requirements.txt"

main=0
"$venv/bin/python" -m pytest -q tests/conformance --ignore=tests/conformance/standard "$@" || main=$?
# 2 is pytest interrupted (Ctrl-C): stop here rather than start the second session.
if [ "$main" = 2 ]; then
  exit 2
fi
# The standard suite, in its own session (and server).
std=0
"$std_venv/bin/python" -m pytest -q tests/conformance/standard "$@" || std=$?
# 5 is "no test selected": extra arguments such as `-k exec` can make that of either session,
# not of both.
if [ "$main" = 5 ] && [ "$std" = 5 ]; then
  exit 5
fi
for s in "$main" "$std"; do
  case "$s" in
    0 | 5) ;;
    *) exit "$s" ;;
  esac
done

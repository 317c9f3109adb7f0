"""A sandbox sees its own limits: `free`, `nproc` and /proc/meminfo inside a sandbox created
with mem_bytes=1 GiB and vcpus=1 show 1 GiB and 1 CPU, not the host's (LXCFS, run by
`warren serve`; `nproc` comes from the CPUs the sandbox is pinned to).
"""

from __future__ import annotations

import shutil

import pytest

from helpers import uniq

GIB = 1 << 30


def _run(sb, command: str) -> str:
    result = sb.run(command, timeout=60)
    assert result.exit_code == 0, (command, result.stdout, result.stderr)
    return result.stdout


def test_free_and_nproc_show_the_sandbox_s_limits(server, client):
    if shutil.which("lxcfs") is None:
        pytest.fail("lxcfs is not installed on the host: scripts/deps.sh installs it", pytrace=False)
    sb = client.create_sandbox(name=uniq("limits-view"), mem_bytes=GIB, vcpus=1, timeout=60)
    try:
        total = int(_run(sb, "free -b | awk '/^Mem:/ {print $2}'").strip())
        # /proc/meminfo counts in kB: at most a page off.
        assert abs(total - GIB) < 4096, total
        assert _run(sb, "nproc").strip() == "1"
        meminfo = _run(sb, "grep '^MemTotal:' /proc/meminfo").split()
        assert int(meminfo[1]) * 1024 == GIB, meminfo
        assert _run(sb, "grep -c ^processor /proc/cpuinfo").strip() == "1"
    finally:
        client.delete_sandbox(sb.name)

"""Deletion that a tenant cannot block (issue 11, report 2).

A tenant that tries to rename its /tmp (`mv /tmp /k`: a mount point, refused), holds nested
subvolumes and writes a 100,000-entry tree is deleted with 204 and leaves nothing behind. A
deletion whose cleanup fails is committed anyway: the record stays `deleting` with a
"delete pending" message, the daemon starts regardless after a kill -9, and the deletion finishes
once the cause is gone.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import httpx
import pytest
from langsmith.sandbox import ResourceNotFoundError, SandboxClient

from helpers import uniq, wait_until

# What the tenant does: tries to move its /tmp deep into its tree, then writes 100,000 entries
# in a wide tree (half of them in /tmp) and a chain 10,000 directories deep.
TENANT_MOVE = "mkdir -p /k/deep/er && { mv /tmp /k/deep/er/t 2>/dev/null && echo moved || echo pinned; }"
TENANT_TREE = r"""python3 - <<'EOF'
import os
n = 0
for root in ("/tmp/wide", "/var/wide"):
    for d in range(250):
        p = f"{root}/{d}"
        os.makedirs(p)
        n += 1
        for f in range(199):
            open(f"{p}/{f}", "w").close()
            n += 1
os.chdir("/k/deep")
for _ in range(10000):
    os.mkdir("d")
    os.chdir("d")
    n += 1
print("entries", n)
EOF"""


def _btrfs(*args: str) -> str:
    r = subprocess.run(["btrfs", *args], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, f"btrfs {' '.join(args)}: {r.stderr}"
    return r.stdout


def _subvolumes_of(server, runtime_id: str) -> list[str]:
    """Paths of the pool's subvolumes that belong to the sandbox, from `btrfs subvolume list`."""
    fs = server.data_dir / "fs"
    return [
        line.split(" path ", 1)[1]
        for line in _btrfs("subvolume", "list", str(fs)).splitlines()
        if f" path sandboxes/{runtime_id}/" in line
    ]


def _sandbox_dir(server, runtime_id: str) -> Path:
    return server.data_dir / "fs" / "sandboxes" / runtime_id


def _make_hostile(server, sb) -> str:
    """Runs the tenant's actions, adds nested subvolumes host-side, returns the runtime id."""
    # The sandbox's hostname is its runtime id, the name of its dir under fs/sandboxes.
    runtime_id = sb.run("hostname").stdout.strip()
    assert runtime_id and _sandbox_dir(server, runtime_id).is_dir(), runtime_id
    moved = sb.run(TENANT_MOVE)
    assert moved.exit_code == 0 and moved.stdout == "pinned\n", (moved.stdout, moved.stderr)
    tree = sb.run(TENANT_TREE, timeout=120)
    assert tree.exit_code == 0, tree.stderr
    assert tree.stdout == "entries 110000\n"
    # Subvolumes the tenant cannot make (seccomp) but an image or an older sandbox can hold.
    rootfs = _sandbox_dir(server, runtime_id) / "rootfs"
    _btrfs("subvolume", "create", str(_sandbox_dir(server, runtime_id) / "rw/tmp/wide/7/nested"))
    _btrfs("subvolume", "create", str(rootfs / "var/wide/3/nested"))
    _btrfs("subvolume", "create", str(rootfs / "var/wide/3/nested/deeper"))
    subvolumes = _subvolumes_of(server, runtime_id)
    assert len(subvolumes) == 5, subvolumes
    assert f"sandboxes/{runtime_id}/rw" in subvolumes, subvolumes
    return runtime_id


@pytest.fixture()
def own_client(server):
    """An SDK client whose HTTP responses are recorded, to see the DELETE's status."""
    c = SandboxClient(api_endpoint=server.api_base, api_key=server.key)
    statuses: list[tuple[str, str, int]] = []

    def record(response: httpx.Response) -> None:
        statuses.append((response.request.method, response.request.url.path, response.status_code))

    c._http.event_hooks["response"].append(record)
    c.statuses = statuses
    yield c
    c.close()


def _delete_statuses(c, name: str) -> list[int]:
    return [s for (m, p, s) in c.statuses if m == "DELETE" and p.endswith(f"/boxes/{name}")]


def test_a_tenant_that_tried_to_move_its_tmp_and_wrote_100k_entries_is_deleted_with_204(server, own_client):
    name = uniq("hostile-del")
    sb = own_client.create_sandbox(name=name)
    try:
        runtime_id = _make_hostile(server, sb)
    except BaseException:
        own_client.delete_sandbox(name)
        raise

    own_client.delete_sandbox(name)

    assert _delete_statuses(own_client, name) == [204]
    with pytest.raises(ResourceNotFoundError):
        own_client.get_sandbox(name)
    assert name not in [s.name for s in own_client.list_sandboxes()]
    assert not _sandbox_dir(server, runtime_id).exists()
    assert _subvolumes_of(server, runtime_id) == []


def test_a_pending_deletion_is_kept_across_restarts_and_finishes(server, own_client):
    name = uniq("pending-del")
    sb = own_client.create_sandbox(name=name)
    runtime_id = sb.run("hostname").stdout.strip()
    sandbox_dir = _sandbox_dir(server, runtime_id)
    assert runtime_id and sandbox_dir.is_dir(), runtime_id
    assert sb.run(TENANT_MOVE).stdout == "pinned\n"
    # An immutable sandbox dir (host-side: a tenant cannot set the flag) makes the cleanup fail
    # the way a tenant's trick used to.
    subprocess.run(["chattr", "+i", str(sandbox_dir)], check=True)
    try:
        own_client.delete_sandbox(name)
        # The deletion is committed: 204, the record shows what is pending, without host paths.
        assert _delete_statuses(own_client, name) == [204]
        pending = {s.name: s for s in own_client.list_sandboxes()}[name]
        assert pending.status == "deleting"
        assert pending.status_message and pending.status_message.startswith("delete pending: ")
        assert "/" not in pending.status_message, pending.status_message
        assert runtime_id not in pending.status_message

        # Restarted while the cause remains: the daemon starts and keeps the deletion pending.
        server.restart_after_kill9()
        c2 = SandboxClient(api_endpoint=server.api_base, api_key=server.key)
        try:
            again = {s.name: s for s in c2.list_sandboxes()}[name]
            assert again.status == "deleting"
            assert again.status_message and again.status_message.startswith("delete pending: ")
            with c2.sandbox() as fresh:
                assert fresh.run("echo serving").stdout == "serving\n"

            # Killed again, the cause removed while it is down: the restart finishes the
            # deletion before it serves.
            server.kill9()
            subprocess.run(["chattr", "-i", str(sandbox_dir)], check=True)
            server.start(fresh=False)
            assert name not in [s.name for s in c2.list_sandboxes()]
            assert not sandbox_dir.exists()
            assert _subvolumes_of(server, runtime_id) == []
        finally:
            c2.close()
    finally:
        subprocess.run(["chattr", "-i", str(sandbox_dir)], check=False, capture_output=True)
        if server.proc is None:
            server.start(fresh=False)


def test_the_sweeper_finishes_a_pending_deletion_once_it_can(server, own_client):
    name = uniq("retry-del")
    sb = own_client.create_sandbox(name=name)
    runtime_id = sb.run("hostname").stdout.strip()
    sandbox_dir = _sandbox_dir(server, runtime_id)
    assert runtime_id and sandbox_dir.is_dir(), runtime_id
    subprocess.run(["chattr", "+i", str(sandbox_dir)], check=True)
    try:
        own_client.delete_sandbox(name)
        assert _delete_statuses(own_client, name) == [204]
        pending = {s.name: s for s in own_client.list_sandboxes()}[name]
        assert pending.status == "deleting"
        assert pending.status_message.startswith("delete pending: ")
    finally:
        subprocess.run(["chattr", "-i", str(sandbox_dir)], check=True)
    # No restart and no second DELETE: the sweeper's retry (first after 5 s) finishes it.
    gone = wait_until(lambda: name not in [s.name for s in own_client.list_sandboxes()], 40, 0.5)
    assert gone, "the pending deletion was not retried"
    assert not sandbox_dir.exists()
    assert _subvolumes_of(server, runtime_id) == []

"""Resource bounds: per-sandbox maxima derived from the host (422 naming the limit) and quotas
on the number of sandboxes and committed memory (429 QuotaExceeded), checked atomically under
concurrent creates.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from langsmith.sandbox import ValidationError

from helpers import error_detail, uniq


def _host_memory() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no MemTotal in /proc/meminfo")


def _create(server, body: dict, key: str | None = None) -> requests.Response:
    return requests.post(
        f"{server.api_base}/boxes",
        json=body,
        headers=server.headers(key),
        timeout=120,
    )


def _delete_all(server, names: list[str]) -> None:
    for name in names:
        requests.delete(f"{server.api_base}/boxes/{name}", headers=server.headers(), timeout=60)


def test_memory_above_the_host_is_refused_with_the_limit(server):
    r = _create(server, {"name": uniq("huge"), "mem_bytes": 9_000_000_000_000_000_000})
    assert r.status_code == 422, r.text
    msg = error_detail(r)["message"]
    assert "mem_bytes" in msg and str(_host_memory()) in msg, msg

    r = _create(server, {"name": uniq("huge"), "mem_bytes": _host_memory() + 1})
    assert r.status_code == 422, r.text


def test_vcpus_above_the_host_are_refused(server):
    r = _create(server, {"name": uniq("cpus"), "vcpus": 64})
    assert r.status_code == 422, r.text
    msg = error_detail(r)["message"]
    assert "vcpus" in msg and str(os.cpu_count()) in msg, msg


def test_the_sdk_raises_validation_error_naming_the_field(client):
    """The SDK raises ValidationError on create only for FastAPI's value-error list (any other
    422 there is a ResourceCreationError), with `field` from its `loc`."""
    with pytest.raises(ValidationError) as refused:
        client.create_sandbox(name=uniq("cpus"), vcpus=64)
    assert refused.value.field == "vcpus"
    assert str(os.cpu_count()) in str(refused.value)
    with pytest.raises(ValidationError) as refused:
        client.create_sandbox(name="not a name")
    assert refused.value.field == "name"


def test_disk_above_the_pool_is_refused(server):
    r = _create(server, {"name": uniq("disk"), "fs_capacity_bytes": 1 << 40})
    assert r.status_code == 422, r.text
    assert "fs_capacity_bytes" in error_detail(r)["message"]


def test_update_cannot_raise_memory_past_the_host(server):
    name = uniq("upd")
    r = _create(server, {"name": name, "wait_for_ready": False})
    assert r.status_code in (200, 201), r.text
    try:
        r = requests.patch(
            f"{server.api_base}/boxes/{name}",
            json={"mem_bytes": _host_memory() * 2},
            headers=server.headers(),
            timeout=30,
        )
        assert r.status_code == 422, r.text
    finally:
        _delete_all(server, [name])


def _count_sandboxes(server) -> int:
    r = requests.get(f"{server.api_base}/boxes", headers=server.headers(), timeout=30)
    r.raise_for_status()
    body = r.json()
    items = body["items"] if isinstance(body, dict) else body
    return len(items)


def _restart_with(server, args: list[str]) -> None:
    server.stop()
    server.extra_args = args
    server.start(fresh=False)


def test_fifty_parallel_creates_against_a_limit_of_ten_admit_exactly_ten(server):
    existing = _count_sandboxes(server)
    _restart_with(server, ["--max-sandboxes", str(existing + 10)])
    names = [uniq("quota") for _ in range(50)]
    try:
        with ThreadPoolExecutor(max_workers=50) as pool:
            results = list(
                pool.map(lambda n: _create(server, {"name": n, "wait_for_ready": False}), names)
            )
        codes = [r.status_code for r in results]
        admitted = [n for n, r in zip(names, results) if r.status_code in (200, 201)]
        refused = [r for r in results if r.status_code == 429]
        assert len(admitted) == 10, codes
        assert len(refused) == 40, codes
        for r in refused:
            detail = r.json()["detail"]
            assert detail["error"] == "QuotaExceeded", detail
            assert str(existing + 10) in detail["message"], detail
        # The API keeps working for what exists.
        for n in admitted:
            r = requests.get(f"{server.api_base}/boxes/{n}", headers=server.headers(), timeout=30)
            assert r.status_code == 200, r.text
    finally:
        _delete_all(server, names)
        _restart_with(server, [])


def test_committed_memory_quota_answers_429_and_frees_on_delete(server):
    # A fresh user whose running sandboxes may commit two of 1 GiB.
    _restart_with(server, ["--user-max-memory", "2G"])
    key = server.cli("keys", "create", "--name", uniq("memq"))
    assert key.returncode == 0, key.stderr
    user_key = key.stdout.strip()
    names = [uniq("mem") for _ in range(3)]
    try:
        first = _create(server, {"name": names[0], "mem_bytes": 1 << 30}, key=user_key)
        second = _create(server, {"name": names[1], "mem_bytes": 1 << 30}, key=user_key)
        third = _create(server, {"name": names[2], "mem_bytes": 1 << 30}, key=user_key)
        assert first.status_code in (200, 201), first.text
        assert second.status_code in (200, 201), second.text
        assert third.status_code == 429, third.text
        assert third.json()["detail"]["error"] == "QuotaExceeded"
        r = requests.delete(
            f"{server.api_base}/boxes/{names[0]}", headers=server.headers(user_key), timeout=60
        )
        assert r.status_code in (200, 204), r.text
        again = _create(server, {"name": names[2], "mem_bytes": 1 << 30}, key=user_key)
        assert again.status_code in (200, 201), again.text
    finally:
        for n in names:
            requests.delete(
                f"{server.api_base}/boxes/{n}", headers=server.headers(user_key), timeout=60
            )
        _restart_with(server, [])


def test_a_command_killed_for_memory_reports_oom_killed(server, client):
    from helpers import RawExec, execute_msg

    sb = client.create_sandbox(name=uniq("oom"), mem_bytes=128 << 20)
    try:
        balloon = "python3 -c 'b=[]\nwhile 1: b.append(bytearray(16<<20))'"
        with RawExec(sb.dataplane_url, server.key) as ex:
            ex.send(execute_msg(balloon))
            msgs, _ = ex.drain(timeout=120)
        exit_msg = msgs[-1]
        assert exit_msg["type"] == "exit", msgs[-3:]
        assert exit_msg["exit_code"] in (137, -9), exit_msg
        assert exit_msg.get("oom_killed") is True, exit_msg
        # An ordinary exit in the same sandbox afterwards carries no OOM mark.
        with RawExec(sb.dataplane_url, server.key) as ex:
            ex.send(execute_msg("exit 3"))
            msgs, _ = ex.drain()
        assert msgs[-1] == {"type": "exit", "exit_code": 3}, msgs[-1]
    finally:
        client.delete_sandbox(sb.name)

"""Host capacity: a server filled to its limit refuses further creates with 429 (a quota) or 503
(a host resource), naming what ran out, while the sandboxes it holds keep running commands and
its API keeps answering. Warm pools count against capacity and give way to real creates.
"""

from __future__ import annotations

import time

import requests

from helpers import uniq


def _restart_with(server, args: list[str]) -> None:
    server.stop()
    server.extra_args = args
    server.start(fresh=False)


def _listed(server) -> list[str]:
    r = requests.get(f"{server.api_base}/boxes", headers=server.headers(), timeout=30)
    assert r.status_code == 200, r.text
    return [b["name"] for b in r.json()["sandboxes"]]


def _create(server, name: str, **body) -> requests.Response:
    return requests.post(
        f"{server.api_base}/boxes",
        json={"name": name, **body},
        headers=server.headers(),
        timeout=120,
    )


def _responsive(server) -> None:
    t0 = time.monotonic()
    assert requests.get(f"{server.origin}/healthz", timeout=5).status_code == 200
    _listed(server)
    r = requests.get(f"{server.api_base}/pools", headers=server.headers(), timeout=5)
    assert r.status_code == 200, r.text
    assert time.monotonic() - t0 < 5, "the API slowed down at capacity"


def _mem_available() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no MemAvailable in /proc/meminfo")


def test_a_full_server_refuses_with_429_and_keeps_serving(server, client):
    existing = len(_listed(server))
    limit = existing + 4
    # The default pool stays on (it would hold up to 8): it must yield to these creates.
    _restart_with(server, ["--max-sandboxes", str(limit), "--pool-min", "2"])
    names = [uniq("fill") for _ in range(4)]
    try:
        for i, n in enumerate(names):
            # Half of them another shape, so they boot cold and must push pooled ones out.
            body = {"mem_bytes": 512 << 20} if i % 2 else {}
            r = _create(server, n, **body)
            assert r.status_code == 200, r.text
            assert r.json()["status"] == "ready"
        for body in ({}, {"mem_bytes": 512 << 20}):
            r = _create(server, uniq("over"), **body)
            assert r.status_code == 429, r.text
            detail = r.json()["detail"]
            assert detail["error"] == "QuotaExceeded", detail
            assert f"at most {limit} sandboxes" in detail["message"], detail
        # Nothing pooled holds room the server does not have.
        pool = next(p for p in requests.get(
            f"{server.api_base}/pools", headers=server.headers(), timeout=30
        ).json()["pools"] if p["template"] is None)
        assert pool["ready"] == 0, pool
        _responsive(server)
        for n in names:
            out = client.get_sandbox(n).run(f"echo alive {n}")
            assert out.exit_code == 0 and out.stdout == f"alive {n}\n", out
        # Deleting one makes room again.
        assert requests.delete(
            f"{server.api_base}/boxes/{names[0]}", headers=server.headers(), timeout=60
        ).status_code in (200, 204)
        r = _create(server, names[0])
        assert r.status_code == 200, r.text
    finally:
        for n in names:
            requests.delete(f"{server.api_base}/boxes/{n}", headers=server.headers(), timeout=60)
        _restart_with(server, [])


def test_out_of_host_memory_answers_503_naming_it_and_running_sandboxes_go_on(server, client):
    keep = uniq("running")
    r = _create(server, keep)
    assert r.status_code == 200, r.text
    try:
        # Ask the server to keep more memory free than the host has left: the host is "full".
        reserve = _mem_available() + (4 << 30)
        _restart_with(server, ["--reserve-memory", str(reserve)])
        for body in ({}, {"mem_bytes": 512 << 20}):
            r = _create(server, uniq("nomem"), **body)
            assert r.status_code == 503, r.text
            message = r.json()["detail"]["message"]
            assert "host capacity reached" in message and "host memory" in message, message
        _responsive(server)
        out = client.get_sandbox(keep).run("echo still here")
        assert out.stdout == "still here\n", out
    finally:
        _restart_with(server, [])
        requests.delete(f"{server.api_base}/boxes/{keep}", headers=server.headers(), timeout=60)

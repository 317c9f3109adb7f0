"""Connection and memory bounds of the daemon: slow and idle clients are closed, open
connections are capped below the file descriptor budget (a fast 503 past the cap), refused
requests are counted instead of audited one row each, and per-request buffers are bounded.

Only loopback traffic. The test process raises its own soft `nofile` limit to the hard one: it
holds thousands of sockets.
"""

from __future__ import annotations

import json
import os
import re
import resource
import selectors
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from helpers import error_detail, uniq

TIMEOUT = 30
HALF_OPEN = 3000
IDLE = 1000
HALF_HEADER = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: slow"


@pytest.fixture(scope="module", autouse=True)
def _nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = HALF_OPEN + IDLE + 512
    if hard < need:
        pytest.fail(f"these tests hold {need} sockets; the hard nofile limit is {hard}", pytrace=False)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def _restart_with(server, args: list[str]) -> None:
    server.stop()
    server.extra_args = args
    server.start(fresh=False)


def _metrics(server) -> dict[str, float]:
    # These tests fill the connection cap. The server frees a slot when it sees a client's
    # close, a moment after the close: until then a new connection still gets the fast 503.
    deadline = time.monotonic() + 10
    while True:
        r = requests.get(f"{server.origin}/metrics", headers=server.headers(), timeout=TIMEOUT)
        if r.status_code != 503 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert r.status_code == 200, r.text
    out = {}
    for line in r.text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def _conn(server, outcome: str) -> float:
    return _metrics(server)[f'warren_connections_total{{outcome="{outcome}"}}']


def _fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _nofile_of(pid: int) -> int:
    with open(f"/proc/{pid}/limits") as f:
        for line in f:
            if line.startswith("Max open files"):
                return int(line.split()[3])
    raise AssertionError(f"no 'Max open files' in /proc/{pid}/limits")


def _open(server, n: int, payload: bytes = b"") -> list[socket.socket]:
    socks = []
    try:
        for _ in range(n):
            s = socket.create_connection(("127.0.0.1", server.port), timeout=10)
            if payload:
                s.sendall(payload)
            socks.append(s)
    except BaseException:
        _close(socks)
        raise
    return socks


def _close(socks: list[socket.socket]) -> None:
    for s in socks:
        try:
            s.close()
        except OSError:
            pass


def _wait_closed_by_server(socks: list[socket.socket], deadline: float) -> list[socket.socket]:
    """Waits until the server closed each socket (EOF or reset); returns those still open."""
    sel = selectors.DefaultSelector()
    for s in socks:
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ)
    open_ = set(socks)
    while open_ and time.monotonic() < deadline:
        for key, _ in sel.select(timeout=max(0.0, min(1.0, deadline - time.monotonic()))):
            s = key.fileobj
            try:
                data = s.recv(65536)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if data:
                continue  # an error answer before the close is fine
            sel.unregister(s)
            open_.discard(s)
    sel.close()
    return list(open_)


def _read_response(s: socket.socket, timeout: float) -> bytes:
    s.settimeout(timeout)
    data = b""
    try:
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
            if b"\r\n\r\n" in data:
                head, body = data.split(b"\r\n\r\n", 1)
                m = re.search(rb"content-length: *(\d+)", head, re.I)
                if m and len(body) >= int(m.group(1)):
                    break
    except (socket.timeout, ConnectionResetError):
        pass
    return data


def _count_sandboxes(server) -> int:
    r = requests.get(f"{server.api_base}/boxes", headers=server.headers(), timeout=TIMEOUT)
    r.raise_for_status()
    body = r.json()
    items = body.get("sandboxes", body.get("items", [])) if isinstance(body, dict) else body
    return len(items)


def test_half_open_connections_are_closed_within_15s_while_the_sdk_runs(server, client):
    timed_out_before = _conn(server, "timed_out")
    start = time.monotonic()
    socks = _open(server, HALF_OPEN, HALF_HEADER)
    try:
        opened = time.monotonic() - start
        # The SDK works while the slow clients hold their connections.
        with client.sandbox(name=uniq("slowloris"), timeout=60) as sb:
            result = sb.run("true", timeout=30)
            assert result.exit_code == 0, result
        still_open = _wait_closed_by_server(socks, start + 15)
        assert not still_open, (
            f"{len(still_open)} of {HALF_OPEN} half-open connections still open 15 s after the "
            f"first connect (opening took {opened:.1f} s)"
        )
    finally:
        _close(socks)
    assert _conn(server, "timed_out") - timed_out_before >= HALF_OPEN


def test_idle_connections_and_parallel_creates_past_a_quota(server):
    existing = _count_sandboxes(server)
    limit = existing + 5
    cap = IDLE + 100
    # A long header-read timeout, so the idle connections stay for the whole test.
    _restart_with(
        server,
        ["--max-sandboxes", str(limit), "--max-connections", str(cap), "--header-read-timeout", "120"],
    )
    pid = server.proc.pid
    budget = _nofile_of(pid)
    names = [uniq("connq") for _ in range(50)]
    idle: list[socket.socket] = []
    extra: list[socket.socket] = []
    try:
        rejected_before = _conn(server, "rejected")
        idle = _open(server, IDLE)
        deadline = time.monotonic() + 10
        while _metrics(server)["warren_connections_open"] < IDLE and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _metrics(server)["warren_connections_open"] >= IDLE, "the server did not accept the idle connections"

        peak = [_fd_count(pid)]
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                peak[0] = max(peak[0], _fd_count(pid))
                done.wait(0.01)

        sampler = threading.Thread(target=sample)
        sampler.start()
        try:
            with ThreadPoolExecutor(max_workers=50) as pool:
                results = list(
                    pool.map(
                        lambda n: requests.post(
                            f"{server.api_base}/boxes",
                            json={"name": n, "wait_for_ready": False},
                            headers=server.headers(),
                            timeout=120,
                        ),
                        names,
                    )
                )
        finally:
            done.set()
            sampler.join()
        codes = [r.status_code for r in results]
        admitted = [r for r in results if r.status_code in (200, 201)]
        refused = [r for r in results if r.status_code == 429]
        assert len(admitted) == 5 and len(refused) == 45, codes
        for r in refused:
            assert error_detail(r)["error"] == "QuotaExceeded", r.text
        assert peak[0] < budget, f"the server held {peak[0]} fds against a nofile limit of {budget}"
        assert peak[0] < cap * 2 + 512, f"the server held {peak[0]} fds for {cap} connections"

        # Past the cap: a fast 503, while a connection already open still works.
        extra = _open(server, 200)
        answers = []
        for s in extra:
            try:
                s.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            except OSError:
                pass  # refused and closed already; its 503 is still there to read
        for s in extra:
            answers.append(_read_response(s, 5))
        refused_503 = [a for a in answers if a.startswith(b"HTTP/1.1 503")]
        served = [a for a in answers if a.startswith(b"HTTP/1.1 200")]
        assert len(refused_503) >= 100 - 5, f"{len(refused_503)} of 200 over-cap connections got 503"
        assert len(refused_503) + len(served) == 200, [a[:40] for a in answers if not a.startswith((b"HTTP/1.1 503", b"HTTP/1.1 200"))][:5]
        body = json.loads(refused_503[0].split(b"\r\n\r\n", 1)[1])
        assert body["detail"]["error"] == "ServiceUnavailable", body
        idle[0].sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert _read_response(idle[0], 10).startswith(b"HTTP/1.1 200"), "an open connection stopped working"
        _close(extra)
        extra = []

        after = _metrics(server)
        assert after['warren_connections_total{outcome="rejected"}'] - rejected_before >= len(refused_503)
    finally:
        _close(idle)
        _close(extra)
        for n in names:
            requests.delete(f"{server.api_base}/boxes/{n}", headers=server.headers(), timeout=60)
        _restart_with(server, [])


def _fill_to_cap(server, most: int) -> list[socket.socket]:
    """Opens idle connections until the server refuses one (it answers a refused connection at
    once, an accepted one not at all); returns the accepted ones."""
    held = []
    for _ in range(most):
        s = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        sel = selectors.DefaultSelector()
        sel.register(s, selectors.EVENT_READ)
        refused = bool(sel.select(timeout=0.3))
        sel.close()
        if refused:
            head = _read_response(s, 5)
            s.close()
            assert head.startswith(b"HTTP/1.1 503"), head[:200]
            return held
        held.append(s)
    _close(held)
    raise AssertionError(f"{most} idle connections were all accepted; the cap does not hold")


def test_over_cap_answer_is_fast_and_slots_free_on_close(server, client):
    _restart_with(server, ["--max-connections", "16"])
    held: list[socket.socket] = []
    try:
        with client.sandbox(name=uniq("overcap"), timeout=60) as sb:
            # The SDK's own pooled connections may close meanwhile and free a slot: top up.
            for _ in range(5):
                held += _fill_to_cap(server, 64)
                assert len(held) <= 16, len(held)
                t = time.monotonic()
                r = requests.get(f"{server.origin}/healthz", timeout=10)
                took = time.monotonic() - t
                if r.status_code == 503:
                    break
            assert r.status_code == 503, r.text
            assert took < 1.0, f"the over-cap answer took {took:.2f} s"
            assert error_detail(r)["error"] == "ServiceUnavailable"
            # A connection that was already open keeps working past the cap.
            held[0].sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            assert _read_response(held[0], 10).startswith(b"HTTP/1.1 200")
            # The sandbox keeps running; once slots free up, the SDK reaches it again.
            _close(held)
            held = []
            result = sb.run("echo back", timeout=30)
            assert result.stdout == "back\n"
    finally:
        _close(held)
        _restart_with(server, [])


def test_unauthenticated_requests_are_counted_not_audited(server):
    before = _metrics(server)["warren_api_unauthenticated_total"]
    path = f"/api/v2/sandboxes/boxes/{uniq('nokey')}"
    with requests.Session() as s:
        for i in range(300):
            key = {} if i % 2 else {"X-Api-Key": "wrn_not_a_key"}
            assert s.get(f"{server.origin}{path}", headers=key, timeout=TIMEOUT).status_code == 401
    assert _metrics(server)["warren_api_unauthenticated_total"] - before >= 300
    r = requests.get(f"{server.api_base}/audit", params={"limit": 10000}, headers=server.headers(), timeout=TIMEOUT)
    assert r.status_code == 200
    assert path not in r.text, "a refused request was written to the audit log"
    lines = [ln for ln in server.log_text().splitlines() if "unauthenticated API request refused" in ln]
    assert 1 <= len(lines) <= 10, f"{len(lines)} log lines for 300 refused requests"


def test_http_execute_output_is_capped_and_says_so(server, sb):
    r = requests.post(
        f"{sb.dataplane_url}/execute",
        json={"command": "head -c 10000000 /dev/zero | tr '\\0' a; echo done >&2", "timeout": 60},
        headers=server.headers(),
        timeout=120,
    )
    assert r.status_code == 200, r.text[:500]
    body = r.json()
    assert body["exit_code"] == 0
    assert body["stdout_truncated"] is True and body["stderr_truncated"] is False
    assert body["stderr"] == "done\n"
    kept, _, marker = body["stdout"].rpartition("\n[warren: output truncated: ")
    assert kept == "a" * (4 << 20), len(kept)
    assert marker.startswith(f"{10_000_000 - (4 << 20)} more bytes"), marker[:200]
    small = requests.post(
        f"{sb.dataplane_url}/execute", json={"command": "echo hi"}, headers=server.headers(), timeout=60
    ).json()
    assert small["stdout"] == "hi\n" and small["stdout_truncated"] is False


@pytest.mark.parametrize(
    "path, body",
    [
        ("/execute", {"command": "true", "timeout": 2**62}),
        ("/execute", {"command": "true", "timeout": 9_223_372_036_854_775_807}),
        ("/execute/stream/start", {"command": "true", "timeout_seconds": 10**17}),
        ("/execute/stream/start", {"command": "true", "idle_timeout_seconds": 2**63 - 1}),
        ("/execute/stream/start", {"command": "true", "ttl_seconds": 10**15}),
    ],
)
def test_absurd_timeouts_are_422_not_overflowed(server, sb, path, body):
    r = requests.post(f"{sb.dataplane_url}{path}", json=body, headers=server.headers(), timeout=TIMEOUT)
    assert r.status_code == 422, r.text
    field = next(k for k in body if k != "command")
    assert field in error_detail(r)["message"]
    # The sandbox's agent is unharmed.
    assert sb.run("echo ok", timeout=30).stdout == "ok\n"


def test_glob_and_grep_say_when_they_are_cut_short(server, sb):
    sb.run("mkdir -p /tmp/many && cd /tmp/many && for i in $(seq 1 50); do echo needle > f$i; done", timeout=60)
    sb.run("python3 -c \"print('needle' + 'x' * 100000)\" > /tmp/many/long.txt", timeout=60)
    g = requests.post(
        f"{sb.dataplane_url}/glob", json={"pattern": "*", "path": "/tmp/many", "limit": 10},
        headers=server.headers(), timeout=TIMEOUT,
    ).json()
    assert len(g["matches"]) == 10 and g["truncated"] is True and g["truncated_reason"] == "limit", g
    r = requests.post(
        f"{sb.dataplane_url}/grep", json={"pattern": "needle", "path": "/tmp/many", "glob": "long.txt"},
        headers=server.headers(), timeout=TIMEOUT,
    ).json()
    assert r["truncated"] is False and len(r["matches"]) == 1, r
    m = r["matches"][0]
    assert m["text_truncated"] is True and len(m["text"].encode()) <= 4096 and m["text"].startswith("needle")
    r = requests.post(
        f"{sb.dataplane_url}/grep", json={"pattern": "needle", "path": "/tmp/many", "limit": 5},
        headers=server.headers(), timeout=TIMEOUT,
    ).json()
    assert len(r["matches"]) == 5 and r["truncated"] is True and r["truncated_reason"] == "limit", r

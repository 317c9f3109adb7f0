"""SSE flow control (LANGSMITH-API.md §4.5): the server stops after about 1 MiB of
unacknowledged output and sends `ack_required`; the client resumes from those offsets; every
byte arrives exactly once, and while a client has not acknowledged, the command waits.

The SDK scenarios run in a fresh interpreter (the SDK caches its feature flags) and count the
SDK's own POSTs to `/execute/stream/resume`, so a pass proves the ack loop did the work.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import textwrap
import time

import requests

from helpers import uniq

ACK_WINDOW = 1 << 20

SDK_SCRIPT = textwrap.dedent(
    r"""
    import json
    from langsmith._httpx import httpx
    from langsmith.sandbox import SandboxClient

    resumes = []
    real_stream = httpx.Client.stream

    def counting_stream(self, method, url, *a, **k):
        if str(url).endswith("/execute/stream/resume"):
            resumes.append(k.get("json") or {})
        return real_stream(self, method, url, *a, **k)

    httpx.Client.stream = counting_stream

    out = {}
    with SandboxClient().sandbox() as sb:
        n = 5 * 1024 * 1024
        r = sb.run(f"head -c {n} /dev/zero | tr '\\0' a", timeout=120)
        out["five_mib"] = [len(r.stdout), r.stdout == "a" * n, r.exit_code, len(resumes)]

        resumes.clear()
        script = (
            "import sys; sys.stdout.write('\u00e9' * 600000); sys.stdout.flush(); "
            "sys.stderr.write('\u0436' * 600000)"
        )
        r = sb.run(f"python3 -c \"{script}\"", timeout=120)
        out["two_byte"] = [
            r.stdout == "\u00e9" * 600000,
            r.stderr == "\u0436" * 600000,
            len(resumes),
            sorted({(p.get("stdout_offset"), p.get("stderr_offset")) for p in resumes}) != [],
        ]

        h = sb.run("python3 -c \"import sys; sys.stdout.write('\u00e9' * 600000)\"", wait=False)
        full = h.result.stdout
        tail = sb.reconnect(h.command_id, stdout_offset=1000000).result.stdout
        out["from_offset"] = [full == "\u00e9" * 600000, tail == "\u00e9" * 100000]
    print(json.dumps(out))
    """
)


def test_the_sdk_acks_its_way_through_large_output(server):
    r = subprocess.run(
        [sys.executable, "-c", SDK_SCRIPT],
        env=server.sdk_env(LANGSMITH_EXPERIMENTAL_FEATURES="sandbox_sse_exec"),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-4000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    length, exact, code, resumes = out["five_mib"]
    assert (length, exact, code) == (5 * 1024 * 1024, True, 0)
    assert resumes >= 2, f"5 MiB should take at least two ack resumes, took {resumes}"
    stdout_ok, stderr_ok, resumes, _ = out["two_byte"]
    assert stdout_ok and stderr_ok, "two-byte characters were lost, doubled or split"
    assert resumes >= 2, f"2.4 MB should take several ack resumes, took {resumes}"
    assert out["from_offset"] == [True, True]


def _events(resp):
    """(event, data) pairs of an SSE response, as the SDK parses them."""
    event, data = "", []
    for raw in resp.iter_lines():
        line = raw.decode()
        if not line:
            if event:
                yield event, json.loads("\n".join(data)) if data else {}
            event, data = "", []
        elif line.startswith(":"):
            continue
        else:
            field, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if field == "event":
                event = value
            elif field == "data":
                data.append(value)


def _read_until_end(resp):
    """Output bytes per stream (offset-checked), and the event that ended the response."""
    got = {"stdout": bytearray(), "stderr": bytearray()}
    first = {}
    last = None
    for event, data in _events(resp):
        if event == "started":
            first["command_id"] = data["command_id"]
        elif event in got:
            chunk = base64.b64decode(data["data"])
            first.setdefault(event, data["offset"])
            assert data["offset"] == first[event] + len(got[event]), "a gap or overlap in offsets"
            got[event] += chunk
        elif event in ("ack_required", "exit", "error"):
            last = (event, data)
    return got, first, last


def test_an_unacknowledged_stream_stops_at_the_window_and_the_command_waits(server, sb):
    dp = sb.dataplane_url
    h = server.headers()
    marker = f"/tmp/{uniq('done')}"
    total = 24 * 1024 * 1024
    cmd = f"head -c {total} /dev/zero | tr '\\0' b; touch {marker}"
    with requests.post(f"{dp}/execute/stream/start", json={"command": cmd, "timeout_seconds": 300},
                       headers=h, stream=True, timeout=60) as resp:
        assert resp.status_code == 200, resp.text
        got, first, last = _read_until_end(resp)
    command_id = first["command_id"]
    assert last is not None and last[0] == "ack_required", f"expected ack_required, got {last}"
    sent = len(got["stdout"]) + len(got["stderr"])
    assert ACK_WINDOW <= sent <= ACK_WINDOW + 128 * 1024, f"{sent} bytes before the ack"
    ack = last[1]
    assert ack == {"stdout_offset": len(got["stdout"]), "stderr_offset": 0}
    # Parked and unread, the command cannot run ahead: the agent buffers a few MiB, the pipe
    # a little more, then the writer blocks long before 24 MiB.
    time.sleep(3)
    probe = sb.run(f"test -e {marker} && echo done || echo waiting", timeout=30)
    assert probe.stdout.strip() == "waiting", "the command ran ahead of the acknowledgement"
    # Resume with the ack: the output continues from exactly there, in windows, to the end.
    received = len(got["stdout"])
    rounds = 0
    while True:
        body = {"command_id": command_id, "stdout_offset": received, "stderr_offset": 0}
        with requests.post(f"{dp}/execute/stream/resume", json=body, headers=h, stream=True,
                           timeout=60) as resp:
            assert resp.status_code == 200, resp.text
            more, first, last = _read_until_end(resp)
        if more["stdout"]:
            assert first["stdout"] == received, "the resume did not continue at the ack"
        assert set(more["stdout"]) <= {ord("b")}
        received += len(more["stdout"])
        rounds += 1
        assert last is not None, "a response ended without exit or ack_required"
        if last[0] == "exit":
            assert last[1]["exit_code"] == 0
            break
        assert last[0] == "ack_required" and last[1]["stdout_offset"] == received
        assert rounds < 100
    assert received == total
    assert rounds >= 20, f"{total} bytes in {rounds} windows"
    assert sb.run(f"test -e {marker} && echo done", timeout=30).stdout.strip() == "done"

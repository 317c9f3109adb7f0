"""The SSE exec transport (`LANGSMITH_EXPERIMENTAL_FEATURES=sandbox_sse_exec`).

The SDK caches its environment, so each scenario runs in a fresh interpreter. The script
refuses to touch the WebSocket transport, so a pass proves the SSE endpoints did the work.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

SSE_SCRIPT = textwrap.dedent(
    r"""
    import json, sys
    import langsmith.sandbox._sandbox as sandbox_mod
    import langsmith.sandbox._ws_execute as ws_mod
    from langsmith.sandbox import CommandTimeoutError, SandboxClient, SandboxOperationError
    from langsmith.sandbox._sse_execute import sse_transport_selected

    assert sse_transport_selected(), "the feature flag did not select SSE"

    def no_ws(*a, **k):
        raise AssertionError("the WebSocket transport was used")

    ws_mod.run_ws_stream = no_ws
    ws_mod.reconnect_ws_stream = no_ws
    calls = {"start": 0, "resume": 0}
    real_start, real_resume = sandbox_mod.run_sse_stream, sandbox_mod.resume_sse_stream

    def start(*a, **k):
        calls["start"] += 1
        return real_start(*a, **k)

    def resume(*a, **k):
        calls["resume"] += 1
        return real_resume(*a, **k)

    sandbox_mod.run_sse_stream = start
    sandbox_mod.resume_sse_stream = resume

    out = {}
    client = SandboxClient()
    with client.sandbox() as sb:
        r = sb.run("echo 'Hello, World!'; echo oops >&2; exit 5")
        out["basic"] = [r.stdout, r.stderr, r.exit_code]
        r = sb.run("printf 'é€😀%.0s' $(seq 1 50000)")
        out["utf8_ok"] = r.stdout == "é€😀" * 50000
        r = sb.run("head -c 3000000 /dev/zero | tr '\\0' z")
        out["big_ok"] = len(r.stdout) == 3000000 and set(r.stdout) == {"z"}
        seen = []
        r = sb.run("echo a; sleep 1; echo b", on_stdout=seen.append)
        out["callbacks"] = ["".join(seen), r.stdout]
        h = sb.run("for i in 1 2 3; do echo $i; echo e$i >&2; sleep 0.3; done", wait=False)
        chunks = [(c.stream, c.data, c.offset) for c in h]
        out["stream"] = [h.result.stdout, h.result.stderr, h.result.exit_code]
        off = 0
        ok = True
        for s, d, o in chunks:
            if s == "stdout":
                ok = ok and o == off
                off += len(d.encode())
        out["offsets_ok"] = ok
        r2 = sb.reconnect(h.command_id).result
        out["reconnect"] = [r2.stdout, r2.stderr, r2.exit_code]
        r3 = sb.reconnect(h.command_id, stdout_offset=2).result
        out["reconnect_offset"] = r3.stdout
        try:
            sb.run("sleep 60", timeout=2)
            out["timeout"] = "no error"
        except CommandTimeoutError:
            out["timeout"] = "CommandTimeoutError"
        try:
            sb.reconnect("0" * 32).result
            out["unknown"] = "no error"
        except SandboxOperationError:
            out["unknown"] = "SandboxOperationError"
    out["calls"] = calls
    print(json.dumps(out))
    """
)


def test_sse_transport(server):
    r = subprocess.run(
        [sys.executable, "-c", SSE_SCRIPT],
        env=server.sdk_env(LANGSMITH_EXPERIMENTAL_FEATURES="sandbox_sse_exec"),
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert r.returncode == 0, r.stderr[-4000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["basic"] == ["Hello, World!\n", "oops\n", 5]
    assert out["utf8_ok"] is True
    assert out["big_ok"] is True
    assert out["callbacks"] == ["a\nb\n", "a\nb\n"]
    assert out["stream"] == ["1\n2\n3\n", "e1\ne2\ne3\n", 0]
    assert out["offsets_ok"] is True
    assert out["reconnect"] == ["1\n2\n3\n", "e1\ne2\ne3\n", 0]
    assert out["reconnect_offset"] == "2\n3\n"
    assert out["timeout"] == "CommandTimeoutError"
    assert out["unknown"] == "SandboxOperationError"
    assert out["calls"]["start"] >= 6
    assert out["calls"]["resume"] >= 3

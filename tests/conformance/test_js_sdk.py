"""The JS SDK (npm `langsmith`), once with the optional `ws` package and once without it."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

JS = Path(__file__).resolve().parent / "js"
DASHED_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def _smoke(server, variant: str) -> dict:
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not installed; the JS SDK part of the suite needs Node.js", pytrace=False)
    pkg = JS / variant
    if not (pkg / "node_modules" / "langsmith").is_dir():
        pytest.fail(f"{pkg}/node_modules is missing: run `npm ci` there (run.sh does)", pytrace=False)
    has_ws = (pkg / "node_modules" / "ws").is_dir()
    assert has_ws == (variant == "ws"), f"{pkg}: ws installed={has_ws}"
    r = subprocess.run(
        [node, str(JS / "smoke.mjs"), str(pkg)],
        env=server.sdk_env(),
        capture_output=True,
        text=True,
        timeout=180,
        cwd=pkg,
    )
    assert r.returncode == 0, r.stderr[-4000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def _common(out: dict) -> None:
    assert out["errors"] == []
    assert out["status"] == "ready"
    assert out["run"] == ["Hello, World!\n", "", 0]
    assert out["run2"] == ["out\n", "err\n", 3]
    assert out["utf8_ok"] is True
    assert out["read_text"] == "hello from js"
    assert out["binary_ok"] is True
    data = bytes(i % 256 for i in range(256 * 64))
    assert out["sha_in_sandbox"] == hashlib.sha256(data).hexdigest()
    assert out["missing"] == "ResourceNotFound"
    assert out["after_delete"] == "ResourceNotFound"


def test_js_sdk_over_websocket(server):
    out = _smoke(server, "ws")
    _common(out)
    assert out["http_execute_posts"] == 0, "with ws installed, run() must use the WebSocket"
    assert DASHED_UUID.match(out["command_id"]), "the JS client's dashed command_id is echoed as sent"
    assert out["stream"] == ["1\n2\n3\n", "e\n", 0]
    offset = 0
    for data, chunk_offset in out["stdout_chunks"]:
        assert chunk_offset == offset
        offset += len(data.encode("utf-8"))
    assert offset == 6
    assert out["callbacks"] == ["cb\n", "cb\n"]
    assert out["reconnect"] == "1\n2\n3\n"


def test_js_sdk_over_http_execute(server):
    out = _smoke(server, "http")
    _common(out)
    assert out["http_execute_posts"] == 4, "without ws, each blocking run() is one POST /execute"

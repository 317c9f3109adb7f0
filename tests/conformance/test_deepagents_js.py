"""Deep Agents JS (npm `deepagents`): `LangSmithSandbox.create({snapshotId})` with the default
snapshot's id (Deep Agents JS creates sandboxes by snapshot id only), then execute, write, read,
upload, download and captureSnapshot, and a sandbox booted from the capture."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

JS = Path(__file__).resolve().parent / "js"


@pytest.mark.timeout(300)
def test_deepagents_js_creates_by_snapshot_id_and_captures(server, client):
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not installed; the Deep Agents JS test needs Node.js", pytrace=False)
    pkg = JS / "deepagents"
    if not (pkg / "node_modules" / "deepagents").is_dir():
        pytest.fail(f"{pkg}/node_modules is missing: run `npm ci` there (run.sh does)", pytrace=False)
    default_id = client.get_snapshot("system/default").id
    r = subprocess.run(
        [node, str(JS / "deepagents.mjs"), str(pkg), default_id],
        env=server.sdk_env(),
        capture_output=True,
        text=True,
        timeout=240,
        cwd=pkg,
    )
    assert r.returncode == 0, r.stderr[-4000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["id_is_name"] is True
    assert out["execute"] == ["hi\n\nerr\n", 3]
    assert out["write_error"] is None
    assert out["read_error"] is None
    assert "two" in out["read"], out["read"]
    assert out["upload_error"] is None
    assert out["download"] == [0, 1, 2, 255]
    assert out["missing"] == "file_not_found"
    assert out["snapshot"]["status"] == "ready"
    assert out["snapshot"]["source"] is not None
    assert out["closed"] is True
    assert out["from_capture"] == ["one\ntwo\nthree\n", 0]
    client.delete_snapshot(out["snapshot"]["id"])

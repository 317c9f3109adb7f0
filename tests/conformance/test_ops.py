"""Operator surfaces: the admin key file, /metrics, the audit log, /healthz."""

from __future__ import annotations

import json
import re
import stat

import requests

from helpers import audit_entries, uniq

TIMEOUT = 30
SAMPLE = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*(\{[^}]*\})? [-+0-9.eEInfNa]+( [0-9]+)?$")


def test_admin_key_file_is_private(server):
    key_file = server.data_dir / "admin.key"
    mode = stat.S_IMODE(key_file.stat().st_mode)
    assert mode == 0o600, f"admin.key has mode {mode:o}"
    assert server.key


def test_healthz_needs_no_key(server):
    r = requests.get(f"{server.origin}/healthz", timeout=TIMEOUT)
    assert r.status_code == 200


def test_metrics(server, client):
    with client.sandbox() as sb:
        sb.run("true")
        r = requests.get(f"{server.origin}/metrics", headers=server.headers(), timeout=TIMEOUT)
    assert r.status_code == 200
    lines = [ln for ln in r.text.splitlines() if ln and not ln.startswith("#")]
    assert lines, "no samples"
    bad = [ln for ln in lines if not SAMPLE.match(ln)]
    assert not bad, f"not Prometheus text format: {bad[:5]}"
    assert any(ln.startswith("# TYPE ") for ln in r.text.splitlines())
    assert requests.get(f"{server.origin}/metrics", timeout=TIMEOUT).status_code == 401


def test_audit_lists_api_calls_and_commands(server, client):
    marker = f"audit-marker-{uniq('cmd')}"
    name = uniq("audited")
    with client.sandbox(name=name) as sb:
        sb.run(f"echo {marker}")
        sandbox_id = sb.id
    log = json.dumps(audit_entries(server, TIMEOUT))
    assert name in log or sandbox_id in log, "the create call is in the audit log"
    assert marker in log, "the command is in the audit log"
    assert requests.get(f"{server.api_base}/audit", timeout=TIMEOUT).status_code == 401

    cli = server.cli("audit", "--data-dir", str(server.data_dir))
    assert cli.returncode == 0, cli.stderr
    assert marker in cli.stdout

"""Warm pools and templates (Warren extensions), through the official SDK where it reaches:
a create served from a pool is ready at once and indistinguishable from a cold one (fresh
hostname, machine-id, empty /tmp, the same environment); templates fill creates and keep their
own pools; pool bounds are the admins'.
"""

from __future__ import annotations

import requests

from helpers import uniq, wait_until


def _pools(server, key: str | None = None) -> list[dict]:
    r = requests.get(f"{server.api_base}/pools", headers=server.headers(key), timeout=30)
    assert r.status_code == 200, r.text
    return r.json()["pools"]


def _pool(server, template: str | None = None) -> dict | None:
    return next((p for p in _pools(server) if p["template"] == template), None)


def _set_pool(server, min_size: int, max_size: int, template: str | None = None, key=None):
    return requests.put(
        f"{server.api_base}/pools",
        json={"template": template, "min_size": min_size, "max_size": max_size},
        headers=server.headers(key),
        timeout=30,
    )


def _wait_ready(server, ready: int, template: str | None = None) -> dict:
    def full():
        p = _pool(server, template)
        return p if p and p["ready"] >= ready and p["starting"] == 0 else None

    return wait_until(full, timeout=60)


def _facts(sb) -> dict:
    """What must differ between sandboxes, or match a cold one."""
    out = sb.run(
        "hostname; cat /etc/machine-id; ls -A /tmp | wc -l; env | sort | grep -v '^HOSTNAME='"
    )
    assert out.exit_code == 0, out.stderr
    lines = out.stdout.splitlines()
    env = dict(line.split("=", 1) for line in lines[3:] if "=" in line)
    # Each sandbox reaches the egress proxy at its own link's address: same variables, own value.
    for k in env:
        if k.lower() in ("http_proxy", "https_proxy"):
            env[k] = env[k].rsplit(":", 1)[-1]
    return {
        "hostname": lines[0],
        "machine_id": lines[1],
        "tmp_entries": int(lines[2]),
        "env": env,
    }


def test_pooled_creates_are_ready_at_once_and_indistinguishable_from_cold(server, client):
    r = _set_pool(server, 2, 2)
    assert r.status_code == 200, r.text
    assert (r.json()["min_size"], r.json()["max_size"]) == (2, 2)
    before = _wait_ready(server, 2)
    names = [uniq("pooled") for _ in range(2)]
    cold_name = uniq("cold")
    try:
        pooled = [client.create_sandbox(name=n) for n in names]
        after = _pool(server)
        assert after["claims"] == before["claims"] + 2, (before, after)
        for sb in pooled:
            got = client.get_sandbox(sb.name)
            assert got.status == "ready"
            assert got.name in names
        # Another shape never comes from the pool: this one boots cold.
        cold = client.create_sandbox(name=cold_name, mem_bytes=512 << 20)
        assert _pool(server)["claims"] == after["claims"]

        facts = [_facts(sb) for sb in pooled]
        cold_facts = _facts(cold)
        for f in facts:
            assert f["tmp_entries"] == 0, f
            assert len(f["machine_id"]) == 32 and int(f["machine_id"], 16) >= 0, f
            assert f["env"] == cold_facts["env"], (f["env"], cold_facts["env"])
        hostnames = {f["hostname"] for f in facts + [cold_facts]}
        machine_ids = {f["machine_id"] for f in facts + [cold_facts]}
        assert len(hostnames) == 3, hostnames
        assert len(machine_ids) == 3, machine_ids
        # A claimed sandbox is the caller's, like any other: files, commands, lifecycle.
        sb = pooled[0]
        sb.write("/tmp/mine.txt", b"mine")
        assert sb.read("/tmp/mine.txt") == b"mine"
        client.stop_sandbox(sb.name)
        client.start_sandbox(sb.name)
        assert client.get_sandbox(sb.name).status == "ready"
        sb = client.get_sandbox(sb.name)
        assert sb.read("/tmp/mine.txt") == b"mine"
        # The pool refills behind the claims.
        _wait_ready(server, 2)
    finally:
        for n in names + [cold_name]:
            requests.delete(f"{server.api_base}/boxes/{n}", headers=server.headers(), timeout=60)
        _set_pool(server, 1, 8)


def test_pools_are_listed_hidden_from_sandbox_lists_and_set_by_admins(server, bob_key):
    r = _set_pool(server, 1, 3)
    assert r.status_code == 200, r.text
    _wait_ready(server, 1)
    r = requests.get(f"{server.api_base}/boxes", headers=server.headers(), timeout=30)
    listed = {b["name"] for b in r.json()["sandboxes"]}
    assert not any(n.startswith("pool") for n in listed), listed
    # A member sees the pool but may not size it.
    assert any(p["template"] is None for p in _pools(server, bob_key))
    r = _set_pool(server, 5, 5, key=bob_key)
    assert r.status_code == 403, r.text
    for bad in ({"min_size": 3, "max_size": 2}, {"min_size": 0, "max_size": 100000}):
        r = requests.put(
            f"{server.api_base}/pools", json=bad, headers=server.headers(), timeout=30
        )
        assert r.status_code == 422, r.text
    r = _set_pool(server, 0, 0)
    assert r.status_code == 200, r.text
    assert _pool(server) is None
    _set_pool(server, 1, 8)


def test_a_template_fills_a_create_and_keeps_its_own_pool(server, client):
    name = uniq("tpl")
    r = requests.post(
        f"{server.api_base}/templates",
        json={
            "name": name,
            "mem_bytes": 256 << 20,
            "run_config": {"env_vars": {"FROM_TEMPLATE": "yes"}, "work_dir": "/tmp"},
            "labels": {"team": "data"},
        },
        headers=server.headers(),
        timeout=30,
    )
    assert r.status_code == 201, r.text
    assert r.json()["snapshot"] == "system/default:latest"
    dup = requests.post(
        f"{server.api_base}/templates", json={"name": name}, headers=server.headers(), timeout=30
    )
    assert dup.status_code == 409, dup.text
    r = server.cli("pool", "set", "--template", name, "--min", "1", "--max", "2")
    assert r.returncode == 0, r.stderr
    _wait_ready(server, 1, template=name)
    r = server.cli("pool", "ls")
    assert r.returncode == 0 and name in r.stdout, r.stdout + r.stderr
    r = server.cli("template", "ls")
    assert r.returncode == 0 and name in r.stdout and "1..2" in r.stdout, r.stdout

    box = uniq("from-tpl")
    try:
        claims = _pool(server, name)["claims"]
        r = requests.post(
            f"{server.api_base}/boxes",
            json={"name": box, "template": name, "labels": {"owner": "me"}},
            headers=server.headers(),
            timeout=60,
        )
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["status"] == "ready"
        assert body["mem_bytes"] == 256 << 20
        assert body["labels"] == {"team": "data", "owner": "me"}, body["labels"]
        assert _pool(server, name)["claims"] == claims + 1
        sb = client.get_sandbox(box)
        out = sb.run("echo $FROM_TEMPLATE; pwd")
        assert out.stdout.split() == ["yes", "/tmp"], out.stdout
        # The CLI creates from it too; its own flags win.
        r = server.cli("sandbox", "create", box + "-cli", "--template", name, "--memory", "512M", "--json")
        assert r.returncode == 0, r.stderr
        assert '"mem_bytes":536870912' in r.stdout.replace(" ", ""), r.stdout
        r = requests.post(
            f"{server.api_base}/boxes",
            json={"name": uniq("x"), "template": "no-such-template"},
            headers=server.headers(),
            timeout=30,
        )
        assert r.status_code == 404, r.text
    finally:
        for n in (box, box + "-cli"):
            requests.delete(f"{server.api_base}/boxes/{n}", headers=server.headers(), timeout=60)
        r = server.cli("template", "rm", name)
        assert r.returncode == 0, r.stderr
    assert _pool(server, name) is None
    r = requests.get(f"{server.api_base}/templates/{name}", headers=server.headers(), timeout=30)
    assert r.status_code == 404, r.text

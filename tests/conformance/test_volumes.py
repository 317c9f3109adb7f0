"""Volumes (beta, LANGSMITH-API.md §13) with real sandboxes: a volume outlives the sandbox that
wrote it, is shared read-only, is cloned copy-on-write, and cannot be deleted while attached.
Volumes are only in the generated client, so the control calls are plain HTTP; the sandboxes
are driven through the SDK."""

from __future__ import annotations

import requests

from helpers import uniq


def _post(server, path: str, body: dict) -> dict:
    r = requests.post(f"{server.api_base}{path}", json=body, headers=server.headers(), timeout=120)
    assert r.status_code in (200, 201), r.text
    return r.json()


def _delete(server, path: str) -> int:
    return requests.delete(f"{server.api_base}{path}", headers=server.headers(), timeout=120).status_code


def test_a_volume_outlives_its_writer_is_shared_read_only_and_clones(client, server):
    vol = _post(server, "/volumes", {"name": uniq("vol"), "size_bytes": 1 << 30})
    assert vol["size_bytes"] == 1 << 30
    writer = _post(server, "/boxes", {"name": uniq("writer"), "volumes": [{"volume": vol["id"], "mount_path": "/data"}]})
    assert writer["volumes"][0]["mount_path"] == "/data"
    sb = client.get_sandbox(writer["name"])
    r = sb.run("echo persisted > /data/state.txt && stat -c '%U' /data && grep ' /data ' /proc/mounts")
    assert r.exit_code == 0, r.stderr
    assert r.stdout.splitlines()[0] == "root"
    assert "nosuid" in r.stdout and "nodev" in r.stdout
    assert _delete(server, f"/volumes/{vol['id']}") == 409, "attached volumes are not deleted"
    client.delete_sandbox(writer["name"])

    readers = [
        _post(server, "/boxes", {"name": uniq("reader"), "volumes": [{"volume": vol["name"], "mount_path": "/mnt/shared", "read_only": True}]})
        for _ in range(2)
    ]
    try:
        for rd in readers:
            box = client.get_sandbox(rd["name"])
            assert box.read("/mnt/shared/state.txt") == b"persisted\n"
            w = box.run("echo x > /mnt/shared/new.txt")
            assert w.exit_code != 0 and "Read-only file system" in w.stderr, w.stderr
        got = requests.get(f"{server.api_base}/volumes/{vol['id']}", headers=server.headers(), timeout=30).json()
        assert sorted(a["sandbox_name"] for a in got["attachments"]) == sorted(rd["name"] for rd in readers)
        clone = _post(server, f"/volumes/{vol['id']}/clone", {"name": uniq("copy")})
        assert clone["source_volume_id"] == vol["id"]
    finally:
        for rd in readers:
            client.delete_sandbox(rd["name"])
    user = _post(server, "/boxes", {"name": uniq("clone-user"), "volumes": [{"volume": clone["id"], "mount_path": "/data"}]})
    try:
        box = client.get_sandbox(user["name"])
        assert box.read("/data/state.txt") == b"persisted\n"
        box.write("/data/state.txt", b"changed in the clone\n")
    finally:
        client.delete_sandbox(user["name"])
    check = _post(server, "/boxes", {"name": uniq("check"), "volumes": [{"volume": vol["id"], "mount_path": "/data", "read_only": True}]})
    try:
        assert client.get_sandbox(check["name"]).read("/data/state.txt") == b"persisted\n", "the clone diverged alone"
    finally:
        client.delete_sandbox(check["name"])
    assert _delete(server, f"/volumes/{clone['id']}") == 204
    assert _delete(server, f"/volumes/{vol['id']}") == 204

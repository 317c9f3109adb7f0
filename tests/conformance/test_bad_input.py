"""Hostile and malformed input over raw HTTP: validation, auth, tenancy, path escapes.

The last test checks the server is still healthy and serving after all of it.
"""

from __future__ import annotations

import base64
import os
import secrets
import uuid
from pathlib import Path

import pytest
import requests
from langsmith.sandbox import ResourceNotFoundError, SandboxAuthenticationError, SandboxClient

from helpers import RawExec, error_detail, post_oversize, uniq

TIMEOUT = 30


def _names(server) -> set[str]:
    r = requests.get(f"{server.api_base}/boxes", headers=server.headers(), timeout=TIMEOUT)
    assert r.status_code == 200
    return {b["name"] for b in r.json()["sandboxes"]}


# -- malformed bodies -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [b'{"name": "x",', b"not json at all", b"[1, 2, 3]", b'"a string"', b"\xff\xfe\x00garbage"],
    ids=["truncated", "not-json", "array", "string", "binary"],
)
def test_malformed_json_on_create(server, body):
    before = _names(server)
    r = requests.post(
        f"{server.api_base}/boxes",
        data=body,
        headers={**server.headers(), "Content-Type": "application/json"},
        timeout=TIMEOUT,
    )
    assert 400 <= r.status_code < 500, r.text
    error_detail(r)
    assert _names(server) == before


@pytest.mark.parametrize(
    "body",
    [
        {"bogus_field": 1},
        {"name": 123},
        {"wait_for_ready": "yes"},
        {"idle_ttl_seconds": "ten"},
        {"idle_ttl_seconds": 61},
        {"idle_ttl_seconds": -60},
        {"delete_after_stop_seconds": 90},
        {"vcpus": "two"},
        {"mem_bytes": -1},
        {"labels": ["not", "a", "map"]},
        {"run_config": {"work_dir": "relative/dir"}},
        {"snapshot_id": "6f1c1d3e-2a4b-4c5d-8e6f-7a8b9c0d1e2f", "snapshot": "system/default:latest"},
    ],
    ids=lambda b: "-".join(f"{k}={v}" for k, v in b.items())[:60],
)
def test_invalid_fields_on_create(server, body):
    name = uniq("invalid")
    r = requests.post(
        f"{server.api_base}/boxes",
        json={"name": name, **body},
        headers=server.headers(),
        timeout=TIMEOUT,
    )
    assert r.status_code in (400, 422), f"{r.status_code} {r.text}"
    error_detail(r)
    assert name not in _names(server)


def test_invalid_fields_on_update(server, client):
    with client.sandbox(name=uniq("patch")) as sb:
        for body in ({"bogus_field": True}, {"idle_ttl_seconds": "x"}, {"name": "bad name!"}, {"idle_ttl_seconds": 7}):
            r = requests.patch(
                f"{server.api_base}/boxes/{sb.name}", json=body, headers=server.headers(), timeout=TIMEOUT
            )
            assert r.status_code in (400, 422), f"{body}: {r.status_code} {r.text}"
            error_detail(r)
        assert client.get_sandbox(sb.name).idle_ttl_seconds == sb.idle_ttl_seconds


@pytest.mark.parametrize(
    "name",
    [
        "has space",
        "../escape",
        "a/b",
        "x" * 300,
        "-leading-dash",
        ".hidden",
        "semi;colon",
        "new\nline",
        "nul\x00byte",
        "emoji-😀",
        str(uuid.uuid4()),
    ],
    ids=["space", "dotdot", "slash", "too-long", "leading-dash", "leading-dot", "semicolon", "newline",
         "nul", "emoji", "uuid-shaped"],
)
def test_invalid_sandbox_names(server, name):
    before = _names(server)
    r = requests.post(
        f"{server.api_base}/boxes", json={"name": name}, headers=server.headers(), timeout=TIMEOUT
    )
    assert r.status_code in (400, 422), f"{r.status_code} {r.text}"
    error_detail(r)
    assert _names(server) == before


def test_oversize_body_is_413(server):
    status, raw = post_oversize(server.origin, "/api/v2/sandboxes/boxes", server.key, 64 << 20)
    assert status == 413, raw[:300]


def test_odd_paths_do_not_crash(server):
    for path in (
        "/api/v2/sandboxes/boxes/..%2F..%2Fmetrics",
        "/api/v2/sandboxes/boxes/%00",
        "/api/v2/sandboxes/boxes/" + "a" * 5000,
        "/api/v2/sandboxes/nope",
    ):
        r = requests.get(f"{server.origin}{path}", headers=server.headers(), timeout=TIMEOUT)
        assert 400 <= r.status_code < 500, f"{path}: {r.status_code}"
        assert r.status_code != 401


# -- authentication -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "method,path",
    [("GET", "/boxes"), ("POST", "/boxes"), ("GET", "/boxes/anything"), ("DELETE", "/boxes/anything")],
)
def test_missing_and_wrong_key_are_401(server, method, path):
    url = f"{server.api_base}{path}"
    before = _names(server)
    for headers in ({}, {"X-Api-Key": "wrong-" + secrets.token_hex(16)}, {"X-Api-Key": ""}):
        r = requests.request(method, url, json={"name": uniq("noauth")}, headers=headers, timeout=TIMEOUT)
        assert r.status_code == 401, f"{method} {path} {headers}: {r.status_code}"
        error_detail(r)
    assert _names(server) == before


def test_key_header_name_is_case_insensitive(server):
    for header in ("x-api-key", "X-API-KEY", "X-Api-Key"):
        r = requests.get(f"{server.api_base}/boxes", headers={header: server.key}, timeout=TIMEOUT)
        assert r.status_code == 200, header


def test_sdk_with_wrong_key_raises_authentication_error(server):
    c = SandboxClient(api_endpoint=server.api_base, api_key="wrong-" + secrets.token_hex(8), max_retries=0)
    try:
        with pytest.raises(SandboxAuthenticationError):
            c.list_sandboxes()
        with pytest.raises(SandboxAuthenticationError):
            c.create_sandbox(name=uniq("wrongkey"))
    finally:
        c.close()


def test_dataplane_requires_the_key(server, sb):
    dp = sb.dataplane_url
    for headers in ({}, {"X-Api-Key": "wrong-" + secrets.token_hex(16)}):
        r = requests.get(f"{dp}/download", params={"path": "/etc/hostname"}, headers=headers, timeout=TIMEOUT)
        assert r.status_code == 401
        r = requests.post(
            f"{dp}/upload",
            params={"path": "/tmp/unauth.txt"},
            files={"file": ("file", b"nope")},
            headers=headers,
            timeout=TIMEOUT,
        )
        assert r.status_code == 401
        r = requests.post(f"{dp}/execute", json={"command": "echo hi"}, headers=headers, timeout=TIMEOUT)
        assert r.status_code == 401
    with pytest.raises(ResourceNotFoundError):
        sb.read("/tmp/unauth.txt")


# -- tenancy --------------------------------------------------------------------------------


def test_other_users_sandbox_is_invisible(server, client, bob_key):
    bob = {"X-Api-Key": bob_key}
    with client.sandbox(name=uniq("alice")) as alice_box:
        name, dp = alice_box.name, alice_box.dataplane_url
        alice_box.write("/tmp/secret.txt", "alice's secret")
        base = f"{server.api_base}/boxes/{name}"
        for method, url, body in (
            ("GET", base, None),
            ("GET", f"{server.api_base}/boxes/{alice_box.id}", None),
            ("GET", f"{base}/status", None),
            ("PATCH", base, {"idle_ttl_seconds": 60}),
            ("POST", f"{base}/stop", {}),
            ("POST", f"{base}/start", {}),
            ("DELETE", base, None),
        ):
            r = requests.request(method, url, json=body, headers=bob, timeout=TIMEOUT)
            assert r.status_code == 404, f"bob {method} {url}: {r.status_code}"
        listed = requests.get(f"{server.api_base}/boxes", headers=bob, timeout=TIMEOUT).json()
        assert name not in {b["name"] for b in listed["sandboxes"]}

        r = requests.get(f"{dp}/download", params={"path": "/tmp/secret.txt"}, headers=bob, timeout=TIMEOUT)
        assert r.status_code == 404
        assert b"secret" not in r.content
        r = requests.post(
            f"{dp}/upload",
            params={"path": "/tmp/from-bob.txt"},
            files={"file": ("file", b"bob was here")},
            headers=bob,
            timeout=TIMEOUT,
        )
        assert r.status_code == 404
        r = requests.post(f"{dp}/execute", json={"command": "echo pwned"}, headers=bob, timeout=TIMEOUT)
        assert r.status_code == 404
        from websockets.exceptions import InvalidStatus

        with pytest.raises(InvalidStatus) as exc:
            RawExec(dp, bob_key)
        assert exc.value.response.status_code == 404

        bob_client = SandboxClient(api_endpoint=server.api_base, api_key=bob_key)
        try:
            with pytest.raises(ResourceNotFoundError):
                bob_client.get_sandbox(name)
        finally:
            bob_client.close()

        # Nothing bob did reached alice's sandbox.
        assert alice_box.read("/tmp/secret.txt") == b"alice's secret"
        with pytest.raises(ResourceNotFoundError):
            alice_box.read("/tmp/from-bob.txt")
        assert client.get_sandbox(name).status == "ready"


def test_admin_sees_other_users_sandboxes(server, client, bob_key):
    bob_client = SandboxClient(api_endpoint=server.api_base, api_key=bob_key)
    try:
        with bob_client.sandbox(name=uniq("bob")) as bob_box:
            assert bob_box.run("echo bob").stdout == "bob\n"
            assert bob_box.name in {s.name for s in bob_client.list_sandboxes()}
            seen = client.get_sandbox(bob_box.name)
            assert seen.id == bob_box.id
            assert bob_box.name in {s.name for s in client.list_sandboxes()}

            r = server.cli("keys", "create", "--name", "carol", "--admin")
            assert r.returncode == 0, r.stderr
            carol = r.stdout.strip()
            got = requests.get(
                f"{server.api_base}/boxes/{bob_box.name}", headers={"X-Api-Key": carol}, timeout=TIMEOUT
            )
            assert got.status_code == 200, "a workspace admin sees every sandbox"
    finally:
        bob_client.close()
    listing = server.cli("keys", "ls")
    assert listing.returncode == 0, listing.stderr
    assert "bob" in listing.stdout and "carol" in listing.stdout
    assert bob_key not in listing.stdout, "keys are never shown again"


# -- path escapes ---------------------------------------------------------------------------


@pytest.fixture
def host_marker():
    """A file on the host that no sandbox may ever read."""
    path = Path(f"/root/warren-host-marker-{secrets.token_hex(8)}")
    content = f"HOST-ONLY-{secrets.token_hex(16)}".encode()
    path.write_bytes(content)
    os.chmod(path, 0o644)
    try:
        yield path, content
    finally:
        path.unlink(missing_ok=True)


def test_downloads_never_reach_host_files(sb, server, host_marker):
    marker, secret = host_marker
    tag = secrets.token_hex(4)
    sb.run(
        f"ln -sfn / /tmp/root-{tag} && ln -sfn {marker} /tmp/direct-{tag} && "
        f"ln -sfn /proc/self/root /tmp/selfroot-{tag} && ln -sfn /proc/1/root /tmp/pid1root-{tag}"
    )
    probes = [
        str(marker),
        f"/../../..{marker}",
        f"/tmp/../../../..{marker}",
        f"../../../../../..{marker}",
        f"//{marker}",
        f"/tmp/root-{tag}{marker}",
        f"/tmp/direct-{tag}",
        f"/tmp/selfroot-{tag}{marker}",
        f"/tmp/pid1root-{tag}{marker}",
        f"/proc/self/root{marker}",
        f"/proc/1/root{marker}",
        f"/proc/self/cwd/../../../..{marker}",
    ]
    host_shadow = Path("/etc/shadow").read_bytes() if Path("/etc/shadow").exists() else None
    # What the sandbox itself sees at /etc/shadow: serving that is fine, serving the host's is not.
    own_shadow = sb.run("base64 -w0 /etc/shadow 2>/dev/null; true").stdout
    for path in probes + [f"/tmp/root-{tag}/etc/shadow", "/etc/shadow"]:
        r = requests.get(
            f"{sb.dataplane_url}/download", params={"path": path}, headers=server.headers(), timeout=TIMEOUT
        )
        assert r.status_code < 500, f"{path}: {r.status_code}"
        assert secret not in r.content, f"host file leaked through {path!r}"
        if host_shadow and r.status_code == 200 and path.endswith("shadow"):
            leaked = r.content == host_shadow and base64.b64encode(host_shadow).decode() != own_shadow
            assert not leaked, f"host /etc/shadow leaked through {path!r}"
    # Commands cannot see it either.
    result = sb.run(f"cat {marker} /proc/1/root{marker} /tmp/root-{tag}{marker} 2>&1; true")
    assert secret.decode() not in result.stdout


def test_uploads_never_land_on_the_host(sb, server, host_marker):
    marker, secret = host_marker
    tag = secrets.token_hex(6)
    sb.run(f"ln -sfn / /tmp/up-root-{tag} && ln -sfn /proc/self/root /tmp/up-self-{tag}")
    host_targets = {i: Path(f"/tmp/warren-escape-{tag}-{i}") for i in range(8)}
    attempts = {
        0: f"/../../..{host_targets[0]}",
        1: f"../../../../../..{host_targets[1]}",
        2: f"/tmp/../../../..{host_targets[2]}",
        3: f"/tmp/up-root-{tag}{host_targets[3]}",
        4: f"/tmp/up-self-{tag}{host_targets[4]}",
        5: f"/proc/self/root{host_targets[5]}",
        6: f"/proc/1/root{host_targets[6]}",
        7: str(host_targets[7]),
    }
    host_root_target = Path(f"/root/warren-host-upload-{tag}")
    try:
        for i, path in attempts.items():
            r = requests.post(
                f"{sb.dataplane_url}/upload",
                params={"path": path},
                files={"file": ("file", f"escape {i}".encode())},
                headers=server.headers(),
                timeout=TIMEOUT,
            )
            assert r.status_code < 500, f"{path}: {r.status_code}"
        for path in (str(host_root_target), str(marker), f"/tmp/up-root-{tag}{marker}"):
            r = requests.post(
                f"{sb.dataplane_url}/upload",
                params={"path": path},
                files={"file": ("file", b"PWNED")},
                headers=server.headers(),
                timeout=TIMEOUT,
            )
            assert r.status_code < 500, f"{path}: {r.status_code}"
        for i, target in host_targets.items():
            assert not target.exists(), f"upload to {attempts[i]!r} wrote {target} on the host"
        assert not host_root_target.exists(), "an upload wrote into the host's /root"
        assert marker.read_bytes() == secret, "an upload overwrote a host file"
        # The plain one landed inside the sandbox, where it belongs.
        assert sb.read(str(host_targets[7])) == b"escape 7"
    finally:
        for target in [*host_targets.values(), host_root_target]:
            if target.is_symlink() or target.exists():
                target.unlink()


# -- still standing -------------------------------------------------------------------------


def test_server_still_healthy_and_serving(server, client):
    r = requests.get(f"{server.origin}/healthz", timeout=TIMEOUT)
    assert r.status_code == 200
    with client.sandbox() as box:
        result = box.run("echo still-ok")
        assert result.stdout == "still-ok\n"
        assert result.exit_code == 0

"""Sandbox lifecycle through the Python SDK: the README's client examples."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import uuid

import pytest
import requests
from langsmith.sandbox import (
    ResourceNameConflictError,
    ResourceNotFoundError,
    SandboxClientError,
    SandboxNotReadyError,
)

from helpers import uniq


def test_quick_start_context_manager_deletes_on_exit(client):
    with client.sandbox() as sb:
        name = sb.name
        result = sb.run("python -c 'print(2 + 2)'")
        assert result.stdout == "4\n"
        assert result.success is True
        assert result.exit_code == 0
    with pytest.raises(ResourceNotFoundError):
        client.get_sandbox(name)


def test_sandbox_object_fields(client):
    with client.sandbox(name=uniq("fields")) as sb:
        assert sb.status == "ready"
        uuid.UUID(sb.id)  # a UUID
        assert sb.dataplane_url and sb.dataplane_url.startswith("http")
        assert not sb.dataplane_url.endswith("/"), "dataplane_url must not end in '/'"
        assert sb.created_at
        assert sb.idle_ttl_seconds == 600, "the server default idle TTL is 600 s"
        assert sb.stopped_at is None


def test_create_keep_get_and_delete(client):
    sb = client.create_sandbox()
    try:
        assert sb.name, "an auto-generated name"
        again = client.get_sandbox(sb.name)
        assert again.id == sb.id
        assert again.dataplane_url == sb.dataplane_url
        assert again.run("echo 'Still running!'").stdout == "Still running!\n"
    finally:
        client.delete_sandbox(sb.name)
    with pytest.raises(ResourceNotFoundError):
        client.get_sandbox(sb.name)
    with pytest.raises(ResourceNotFoundError):
        client.delete_sandbox(sb.name)


def test_get_by_uuid(client):
    with client.sandbox(name=uniq("byid")) as sb:
        by_id = client.get_sandbox(sb.id)
        assert by_id.name == sb.name
        assert by_id.id == sb.id


def test_get_missing_sandbox_raises_not_found(client):
    with pytest.raises(ResourceNotFoundError) as exc:
        client.get_sandbox(uniq("missing"))
    assert exc.value.resource_type == "sandbox"


def test_duplicate_name_says_already_exists(client):
    name = uniq("dup")
    with client.sandbox(name=name):
        with pytest.raises(SandboxClientError) as exc:
            client.create_sandbox(name=name)
        assert "already exists" in str(exc.value)
    # The failed create left nothing behind.
    with pytest.raises(ResourceNotFoundError):
        client.get_sandbox(name)


def test_list_sandboxes(client, server):
    a, b = uniq("list-a"), uniq("list-b")
    with client.sandbox(name=a), client.sandbox(name=b):
        names = {s.name for s in client.list_sandboxes()}
        assert {a, b} <= names
        raw = requests.get(f"{server.api_base}/boxes", headers=server.headers(), timeout=30).json()
        assert "next_cursor" in raw
        assert [s["name"] for s in raw["sandboxes"]] == [s["name"] for s in raw["items"]]
    names = {s.name for s in client.list_sandboxes()}
    assert a not in names and b not in names


def test_update_rename_and_retention(client):
    name, new_name = uniq("upd"), uniq("renamed")
    sb = client.create_sandbox(name=name, idle_ttl_seconds=300, delete_after_stop_seconds=3600)
    try:
        assert sb.idle_ttl_seconds == 300
        assert sb.delete_after_stop_seconds == 3600
        updated = client.update_sandbox(name, new_name=new_name)
        assert updated.name == new_name
        assert updated.id == sb.id
        with pytest.raises(ResourceNotFoundError):
            client.get_sandbox(name)
        got = client.get_sandbox(new_name)
        assert got.id == sb.id
        assert got.run("echo renamed").stdout == "renamed\n"

        updated = client.update_sandbox(new_name, idle_ttl_seconds=1800)
        assert updated.idle_ttl_seconds == 1800
        updated = client.update_sandbox(new_name, delete_after_stop_seconds=2592000)
        assert updated.delete_after_stop_seconds == 2592000
        assert updated.idle_ttl_seconds == 1800, "an update leaves unnamed fields alone"
        updated = client.update_sandbox(new_name, idle_ttl_seconds=0, delete_after_stop_seconds=0)
        assert updated.idle_ttl_seconds == 0
        assert updated.delete_after_stop_seconds == 0
        got = client.get_sandbox(new_name)
        assert (got.idle_ttl_seconds, got.delete_after_stop_seconds) == (0, 0)
    finally:
        client.delete_sandbox(new_name if _exists(client, new_name) else name)


def _exists(client, name: str) -> bool:
    try:
        client.get_sandbox(name)
        return True
    except ResourceNotFoundError:
        return False


def test_rename_to_taken_name_conflicts(client):
    a, b = uniq("taken-a"), uniq("taken-b")
    with client.sandbox(name=a), client.sandbox(name=b):
        with pytest.raises(ResourceNameConflictError):
            client.update_sandbox(a, new_name=b)
        assert client.get_sandbox(a).name == a


def test_update_missing_sandbox_not_found(client):
    with pytest.raises(ResourceNotFoundError):
        client.update_sandbox(uniq("nope"), idle_ttl_seconds=60)


def test_status_endpoint(client):
    with client.sandbox(name=uniq("status")) as sb:
        status = client.get_sandbox_status(sb.name)
        assert status.status == "ready"
    with pytest.raises(ResourceNotFoundError):
        client.get_sandbox_status(sb.name)


def test_wait_for_ready_false_then_wait_for_sandbox(client):
    sb = client.create_sandbox(name=uniq("async-create"), wait_for_ready=False)
    try:
        assert sb.status in ("provisioning", "ready")
        status = client.get_sandbox_status(sb.name)
        assert status.status in ("provisioning", "ready")
        ready = client.wait_for_sandbox(sb.name, timeout=120, poll_interval=0.5)
        assert ready.status == "ready"
        assert ready.dataplane_url
        assert ready.run("echo hello").stdout == "hello\n"
    finally:
        client.delete_sandbox(sb.name)


def test_manual_status_polling_loop(client):
    """The README's hand-written polling loop."""
    import time

    sb = client.create_sandbox(wait_for_ready=False)
    try:
        deadline = time.monotonic() + 120
        while True:
            status = client.get_sandbox_status(sb.name)
            if status.status == "ready":
                sb = client.get_sandbox(sb.name)
                break
            assert status.status != "failed", status.status_message
            assert time.monotonic() < deadline, "never became ready"
            time.sleep(0.5)
        assert sb.run("true").exit_code == 0
    finally:
        client.delete_sandbox(sb.name)


def test_labels_are_stored_and_returned(client):
    sb = client.create_sandbox(name=uniq("labels"), labels={"team": "core", "env": "test"})
    try:
        assert sb.labels == {"team": "core", "env": "test"}
        assert client.get_sandbox(sb.name).labels == {"team": "core", "env": "test"}
    finally:
        client.delete_sandbox(sb.name)


@pytest.mark.parametrize("flag", ["preserve_memory_on_stop", "restore_memory"])
def test_memory_preservation_is_refused_not_ignored(client, flag):
    name = uniq("mem")
    with pytest.raises(SandboxClientError) as exc:
        client.create_sandbox(name=name, **{flag: True})
    assert "memory" in str(exc.value).lower()
    with pytest.raises(ResourceNotFoundError):
        client.get_sandbox(name)


def test_stop_start_keeps_files_and_dataplane_url(client):
    name = uniq("my-vm")
    sb = client.create_sandbox(name=name)
    try:
        url = sb.dataplane_url
        sb.run("echo 'hello' > /tmp/state.txt")
        sb.write("/var/tmp/kept.bin", b"\x00kept\xff")
        sb.stop()
        assert sb.status == "stopped"
        stopped = client.get_sandbox(name)
        assert stopped.status == "stopped"
        assert stopped.stopped_at, "stopped_at is set once stopped"
        assert client.get_sandbox_status(name).status == "stopped"

        sb.start(timeout=120)
        assert sb.status == "ready"
        assert sb.dataplane_url == url, "dataplane_url is stable across stop/start"
        result = sb.run("cat /tmp/state.txt")
        assert result.stdout.strip() == "hello"
        assert sb.read("/var/tmp/kept.bin") == b"\x00kept\xff"
        again = client.get_sandbox(name)
        assert again.status == "ready"
        assert again.stopped_at is None
        assert again.dataplane_url == url
    finally:
        client.delete_sandbox(name)


def test_client_stop_and_start_methods(client):
    name = uniq("vm2")
    client.create_sandbox(name=name)
    try:
        client.stop_sandbox(name)
        assert client.get_sandbox(name).status == "stopped"
        started = client.start_sandbox(name)
        assert started.status == "ready"
        assert started.run("echo up").stdout == "up\n"
    finally:
        client.delete_sandbox(name)


def test_dataplane_hit_on_stopped_sandbox_wakes_it_or_says_not_ready(client):
    name = uniq("wake")
    sb = client.create_sandbox(name=name)
    try:
        sb.write("/var/tmp/wake.txt", "awake")
        sb.stop()
        try:
            assert sb.read("/var/tmp/wake.txt") == b"awake"
        except SandboxNotReadyError:
            pass  # also allowed: an explicit NotReady instead of an auto-wake
    finally:
        client.delete_sandbox(name)


def test_deleted_sandbox_dataplane_is_gone(client, server):
    sb = client.create_sandbox(name=uniq("gone"))
    url = sb.dataplane_url
    client.delete_sandbox(sb.name)
    r = requests.get(f"{url}/download", params={"path": "/etc/hostname"}, headers=server.headers(), timeout=30)
    assert r.status_code == 404


ENV_CONFIG_SCRIPT = textwrap.dedent(
    """
    import json, os
    from langsmith import utils
    from langsmith.sandbox import SandboxClient

    origin = os.environ["LANGSMITH_ENDPOINT"]
    out = []
    for endpoint in (origin, origin + "/", origin + "/api", origin + "/api/v1"):
        os.environ["LANGSMITH_ENDPOINT"] = endpoint
        utils.get_env_var.cache_clear()
        client = SandboxClient()
        with client.sandbox() as sb:
            out.append(sb.run("python -c 'print(2 + 2)'").stdout)
        client.close()
    print(json.dumps(out))
    """
)


def test_client_configured_from_environment(server):
    """`SandboxClient()` with LANGSMITH_ENDPOINT / LANGSMITH_API_KEY, in every endpoint form."""
    r = subprocess.run(
        [sys.executable, "-c", ENV_CONFIG_SCRIPT],
        env=server.sdk_env(),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.strip().splitlines()[-1] == '["4\\n", "4\\n", "4\\n", "4\\n"]'

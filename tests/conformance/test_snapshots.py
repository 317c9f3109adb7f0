"""Snapshots through the Python SDK (LANGSMITH-API.md §2.3 capture, §2.4, §3.2): the default
image as a snapshot, the SDK README's capture flow, Docker-style tags, deletion, and forks (a
Warren extension, over plain HTTP)."""

from __future__ import annotations

import time

import pytest
import requests
from langsmith.sandbox import ResourceNotFoundError, SandboxClientError

from helpers import uniq


def test_the_default_image_is_a_listed_snapshot_with_a_stable_id(client):
    listed = client.list_snapshots()
    default = [s for s in listed if s.name == "system/default"]
    assert len(default) == 1, [s.name for s in listed]
    d = default[0]
    assert d.status == "ready"
    assert "latest" in d.tags
    assert client.get_snapshot("system/default").id == d.id
    assert client.get_snapshot("system/default:latest").id == d.id
    assert client.get_snapshot(d.id).name == "system/default"
    tags = client.list_snapshot_tags("system/default")
    assert [(t.tag, t.snapshot_id) for t in tags] == [("latest", d.id)]
    with client.sandbox(name=uniq("by-default-id"), snapshot_id=d.id) as sb:
        assert sb.run("echo booted").stdout == "booted\n"
    with pytest.raises(ResourceNotFoundError):
        client.get_snapshot(uniq("no-such-snapshot"))


@pytest.mark.timeout(600)
def test_capture_keeps_packages_and_files_but_not_tmp_while_the_source_runs(client):
    """The SDK README's flow: install a package and write a file, capture, boot from it."""
    name = uniq("captured")
    with client.sandbox(name=uniq("capture-src"), timeout=60) as src:
        r = src.run("pip install -q --no-cache-dir six==1.16.0 && python3 -c 'import six; print(six.__version__)'", timeout=300)
        assert r.exit_code == 0, r.stderr[-2000:]
        assert r.stdout.strip() == "1.16.0"
        src.write("/root/work/result.txt", b"computed before the capture\n")
        src.write("/tmp/scratch.txt", b"tmp is not captured\n")
        # A process that runs across the capture: the source is never stopped.
        src.run("sleep 600", wait=False, timeout=0, idle_timeout=-1)
        before = src.run("pgrep -c -x sleep").stdout.strip()
        snap = client.capture_snapshot(src.name, name, tag="v1")
        assert snap.status == "ready"
        assert snap.source_sandbox_id is not None
        assert "v1" in snap.tags
        assert client.get_sandbox(src.name).status == "ready"
        assert src.run("pgrep -c -x sleep").stdout.strip() == before == "1"
        # The source keeps working and changing after the capture, which does not see it.
        src.write("/root/work/after.txt", b"later\n")

        for how in ({"snapshot_id": snap.id}, {"snapshot": f"{name}:v1"}):
            with client.sandbox(name=uniq("from-capture"), **how) as child:
                assert child.read("/root/work/result.txt") == b"computed before the capture\n"
                r = child.run("python3 -c 'import six; print(six.__version__)'")
                assert r.stdout.strip() == "1.16.0", r.stderr
                assert child.run("test -e /tmp/scratch.txt").exit_code == 1
                assert child.run("test -e /root/work/after.txt").exit_code == 1
                assert child.run("test -d /tmp && test -w /tmp").exit_code == 0
                assert child.run("pgrep -x sleep").exit_code == 1, "no process is captured"
    # The snapshot outlives its source.
    assert client.get_snapshot(snap.id).status == "ready"
    client.delete_snapshot(snap.id)
    with pytest.raises(ResourceNotFoundError):
        client.get_snapshot(snap.id)


def test_tags_move_and_a_snapshot_in_use_is_not_deleted(client):
    name = uniq("tagged")
    with client.sandbox(name=uniq("tag-src")) as src:
        src.write("/root/v.txt", b"one")
        first = client.capture_snapshot(src.name, name)
        src.write("/root/v.txt", b"two")
        second = client.capture_snapshot(src.name, name)
    assert first.tags == ["latest"] and second.tags == ["latest"]
    assert client.get_snapshot(first.id).tags == [], "the tag moved off the first"
    assert client.get_snapshot(name).id == second.id
    assert [(t.tag, t.snapshot_id) for t in client.list_snapshot_tags(name)] == [("latest", second.id)]
    with client.sandbox(name=uniq("user"), snapshot_id=first.id) as user:
        assert user.read("/root/v.txt") == b"one"
        with pytest.raises(SandboxClientError):
            client.delete_snapshot(first.id)
    client.delete_snapshot(first.id)
    client.delete_snapshot(f"{name}:latest")
    with pytest.raises(ResourceNotFoundError):
        client.list_snapshot_tags(name)
    filtered = client.list_snapshots(name_contains=name.upper())
    assert filtered == []


def test_forks_start_from_the_parents_files_and_diverge(client, server):
    with client.sandbox(name=uniq("fork-parent")) as parent:
        parent.write("/root/state.txt", b"parent")
        assert parent.run("echo '10.9.8.7 db.internal' >> /etc/hosts").exit_code == 0
        parent.run("sleep 600", wait=False, timeout=0, idle_timeout=-1)
        started = time.monotonic()
        r = requests.post(
            f"{server.api_base}/boxes/{parent.name}/fork",
            json={"count": 3},
            headers=server.headers(),
            timeout=120,
        )
        took = time.monotonic() - started
        assert r.status_code in (200, 201), r.text
        forks = r.json()["sandboxes"]
        assert len(forks) == 3 and all(f["status"] == "ready" for f in forks)
        print(f"3 forks ready in {took:.2f} s")
        try:
            boxes = [client.get_sandbox(f["name"]) for f in forks]
            names = {parent.run("hostname").stdout.strip()}
            for i, b in enumerate(boxes):
                assert b.read("/root/state.txt") == b"parent"
                # A fork has a name of its own, and its /etc/hosts keeps the parent's added line
                # but names the fork, once.
                name = b.run("hostname").stdout.strip()
                assert name not in names and b.read("/etc/hostname") == f"{name}\n".encode()
                names.add(name)
                r = b.run('getent hosts db.internal "$(hostname)"; grep -c "$(hostname)" /etc/hosts; grep -c sb- /etc/hosts')
                lines = r.stdout.splitlines()
                assert lines[0].split() == ["10.9.8.7", "db.internal"] and lines[1].split()[1] == name, r.stdout
                assert lines[2:] == ["1", "1"], r.stdout
                b.write("/root/state.txt", f"fork {i}".encode())
            assert parent.read("/root/state.txt") == b"parent"
            assert [b.read("/root/state.txt") for b in boxes] == [b"fork 0", b"fork 1", b"fork 2"]
            parent.write("/root/only-parent.txt", b"x")
            assert boxes[0].run("test -e /root/only-parent.txt").exit_code == 1
            assert parent.run("pgrep -c -x sleep").stdout.strip() == "1", "the parent kept running"
        finally:
            for f in forks:
                client.delete_sandbox(f["name"])
        bad = requests.post(
            f"{server.api_base}/boxes/{parent.name}/fork",
            json={"count": 0},
            headers=server.headers(),
            timeout=30,
        )
        assert bad.status_code in (400, 422), bad.text


def test_tag_value_ids_are_stored_and_filter_the_generated_list(client, server):
    """SDK 0.15.1: `create_sandbox(tag_value_ids=[...])`; the generated client's list filter
    `tag_value_id` (repeatable, all must match) finds it."""
    sb = client.create_sandbox(name=uniq("tagged"), tag_value_ids=["tv-alpha", "tv-beta"])
    try:

        def names(*values: str) -> list[str]:
            r = requests.get(
                f"{server.api_base}/boxes",
                params=[("tag_value_id", v) for v in values],
                headers=server.headers(),
                timeout=30,
            )
            assert r.status_code == 200, r.text
            return [b["name"] for b in r.json()["items"]]

        assert sb.name in names("tv-alpha")
        assert sb.name in names("tv-alpha", "tv-beta")
        assert sb.name not in names("tv-alpha", "tv-gamma")
    finally:
        client.delete_sandbox(sb.name)

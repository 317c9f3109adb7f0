"""Snapshots built from an OCI image with the SDK's `create_snapshot(name, docker_image=...)`,
pulled from a real registry on 127.0.0.1 (LANGSMITH-API.md §2.4, §7.2)."""

from __future__ import annotations

import pytest
from langsmith.sandbox import ResourceCreationError

from helpers import uniq
from local_registry import LocalRegistry


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    reg = LocalRegistry(tmp_path_factory.mktemp("registry"))
    yield reg
    reg.close()


@pytest.mark.timeout(300)
def test_an_image_from_a_registry_boots_with_its_env_workdir_and_user(client, registry):
    ref = registry.push_tiny_image("warren-test/tiny", "1")
    name = uniq("from-image")
    snap = client.create_snapshot(name, docker_image=ref, fs_capacity_bytes=1 << 30, timeout=240)
    assert snap.status == "ready", snap.status_message
    assert snap.docker_image == ref
    assert snap.image_digest and snap.image_digest.startswith("sha256:")
    assert "1" in snap.tags, "the tag defaults to the image's own"
    assert client.get_snapshot(f"{name}:1").id == snap.id
    for how in ({"snapshot_id": snap.id}, {"snapshot": f"{name}:1"}):
        with client.sandbox(name=uniq("image-box"), **how) as sb:
            r = sb.run('id -un; pwd; echo "$GREETING"; cat hello.txt')
            assert r.exit_code == 0, r.stderr
            assert r.stdout.splitlines() == ["app", "/work", "hello from the image", "from the image"]
            assert sb.run("ls /usr/bin").stdout.split() != []
    client.delete_snapshot(snap.id)


def test_a_missing_image_fails_the_build_with_the_reason(client, registry):
    with pytest.raises(ResourceCreationError):
        client.create_snapshot(
            uniq("missing"),
            docker_image=f"127.0.0.1:{registry.port}/warren-test/absent:9",
            fs_capacity_bytes=1 << 30,
            timeout=60,
        )

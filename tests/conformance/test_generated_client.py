"""The generated (Stainless) client that ships in the `langsmith` package, `langsmith.Langsmith`,
against Warren: the endpoints only it calls (cursor pages, label and creator filters, sorting,
service-URL listing, batch delete, snapshot tags) and the lifecycle it drives, through its own
request building and response models."""

from __future__ import annotations

import uuid

import pytest

from helpers import uniq


@pytest.fixture(scope="module")
def gen(server):
    from langsmith import Langsmith

    g = Langsmith(api_key=server.key, base_url=server.origin, max_retries=0)
    yield g
    g.close()


@pytest.fixture(scope="module")
def five(gen):
    """Five sandboxes of one run, made in order, named so that by name they sort the other way
    round; labels `run`, and `team` on even ones."""
    run = uuid.uuid4().hex[:8]
    names = []
    try:
        for i in range(5):
            labels = {"run": run, **({"team": f"t{i}"} if i % 2 == 0 else {})}
            names.append(gen.sandboxes.boxes.create(name=uniq(f"gen{4 - i}"), labels=labels).name)
        yield run, names
    finally:
        gen.sandboxes.boxes.batch_delete(names=names)


def test_cursor_pages_hand_out_every_sandbox_once_in_order(gen, five):
    run, names = five
    pages = list(gen.sandboxes.boxes.list(label=[f"run={run}"], page_size=2).iter_pages())
    assert [len(p.items) for p in pages] == [2, 2, 1]
    assert [s.name for p in pages for s in p.items] == names, "oldest first by default"
    assert pages[-1].next_cursor is None
    # Auto-paging follows the cursors.
    assert [s.name for s in gen.sandboxes.boxes.list(label=[f"run={run}"], page_size=3)] == names


def test_a_sandbox_deleted_between_pages_does_not_shift_the_next_page(gen):
    run = uuid.uuid4().hex[:8]
    names = [gen.sandboxes.boxes.create(name=uniq(f"shift{i}"), labels={"run": run}).name for i in range(4)]
    try:
        first = gen.sandboxes.boxes.list(label=[f"run={run}"], page_size=2)
        assert [s.name for s in first.items] == names[:2]
        gen.sandboxes.boxes.delete(names[0])
        rest = gen.sandboxes.boxes.list(label=[f"run={run}"], page_size=2, cursor=first.next_cursor)
        assert [s.name for s in rest.items] == names[2:]
    finally:
        gen.sandboxes.boxes.batch_delete(names=names)


def test_filters_and_sorts_sandboxes(gen, five):
    run, names = five
    mine = [f"run={run}"]

    def listed(**kw):
        return [s.name for s in gen.sandboxes.boxes.list(**kw)]

    assert listed(label=[*mine, "team"]) == names[0::2]
    assert listed(label=[*mine, "team=t2"]) == [names[2]]
    assert listed(label=[*mine, "team=nobody"]) == []
    assert sorted(names) == names[::-1], "names sort against the order they were made in"
    assert listed(label=mine, sort_by="name") == sorted(names)
    assert listed(label=mine, sort_by="name", sort_direction="desc") == sorted(names, reverse=True)
    assert listed(label=mine, sort_by="created_at", sort_order="desc") == names[::-1]
    assert listed(label=mine, status="ready") == names
    assert listed(label=mine, status="stopped") == []
    assert listed(label=mine, name_contains=names[3].upper()) == [names[3]]


def test_a_creator_filter_sees_only_the_callers_own(server, gen, bob_key, five):
    from langsmith import Langsmith

    run, names = five
    with Langsmith(api_key=bob_key, base_url=server.origin, max_retries=0) as bob:
        bobs = uniq("bobs")
        bob.sandboxes.boxes.create(name=bobs, labels={"run": run})
        try:
            # The admin sees every sandbox of the workspace; `created_by=me` only its own.
            assert [s.name for s in gen.sandboxes.boxes.list(label=[f"run={run}"])] == [*names, bobs]
            assert [s.name for s in gen.sandboxes.boxes.list(label=[f"run={run}"], created_by="me")] == names
            assert [s.name for s in bob.sandboxes.boxes.list(label=[f"run={run}"], created_by="me")] == [bobs]
        finally:
            bob.sandboxes.boxes.delete(bobs)


def test_bad_list_queries_are_422_naming_the_parameter(gen):
    from langsmith import UnprocessableEntityError

    for kw, named in [
        ({"sort_by": "secret"}, "sort_by"),
        ({"sort_order": "sideways"}, "sort_order"),
        ({"page_size": 0}, "page_size"),
        ({"page_size": 101}, "page_size"),
        ({"created_by": "someone-else"}, "created_by"),
        ({"cursor": "not-a-cursor"}, "cursor"),
    ]:
        with pytest.raises(UnprocessableEntityError) as e:
            gen.sandboxes.boxes.list(**kw)
        assert named in e.value.body["detail"]["message"], (kw, e.value.body)


def test_the_generated_client_drives_a_sandbox_from_create_to_snapshot(gen):
    boxes = gen.sandboxes.boxes
    name = uniq("genlife")
    snap = uniq("gensnap")
    created = boxes.create(name=name, labels={"k": "v"}, idle_ttl_seconds=900)
    try:
        assert created.status == "ready" and created.labels == {"k": "v"}
        assert boxes.retrieve(name).id == created.id
        assert boxes.update(path_name=name, idle_ttl_seconds=1200).idle_ttl_seconds == 1200

        url = boxes.generate_service_url(name, port=8080)
        assert url.token
        assert [g.port for g in boxes.list_service_urls(name)] == [8080]
        boxes.delete_service_url(name, port=8080)
        assert list(boxes.list_service_urls(name)) == []
        # Login mode: no token, no expiry, listed as such; "off" ends it and mints a token.
        login = boxes.generate_service_url(name, port=8081, access="workspace")
        assert login.access == "workspace" and not login.token and login.browser_url
        [grant] = boxes.list_service_urls(name)
        assert (grant.port, grant.access, grant.expires_at) == (8081, "workspace", None)
        off = boxes.generate_service_url(name, port=8081, access="off")
        assert off.token and off.access is None
        assert [g.access for g in boxes.list_service_urls(name)] == ["token"]
        boxes.delete_service_url(name, port=8081)

        boxes.stop(name)
        assert boxes.get_status(name).status == "stopped"
        boxes.start(name)
        gen.sandboxes.boxes.retrieve(name)  # started; the capture below needs its files

        s = boxes.create_snapshot(path_name=name, body_name=snap, tag="v1")
        assert s.name == snap and s.status == "ready"
        tags = gen.sandboxes.snapshots.retrieve_by_name(snap)
        assert [(t.tag, t.snapshot_id) for t in tags.tags] == [("v1", s.id)]
        listed = gen.sandboxes.snapshots.list(name_contains=snap, page_size=1)
        assert [x.id for x in listed.items] == [s.id] and listed.next_cursor is None
        assert gen.sandboxes.snapshots.list(label=["k=v"], name_contains=snap).items[0].id == s.id
        gen.sandboxes.snapshots.delete(s.id)
    finally:
        result = boxes.batch_delete(names=[name])
    assert result.deleted == [name]


def test_a_capture_carries_the_settings_it_includes(gen, client):
    """`include` on capture: the snapshot carries the sandbox's env vars, resources, lifecycle,
    labels and proxy_config into the sandboxes created from it, each where their create leaves
    it unset; literal secrets only when confirmed; env var values and opaque credentials are
    never shown."""
    from langsmith import UnprocessableEntityError

    boxes = gen.sandboxes.boxes
    opaque = "opq-" + uuid.uuid4().hex
    proxy_config = {"rules": [{"name": "carry", "enabled": True, "match_hosts": ["127.0.0.1"],
                               "headers": [{"name": "X-Carried", "type": "opaque", "value": opaque}]}]}
    name, snap, plain = uniq("carry"), uniq("carried"), uniq("uncarried")
    made = [name]
    boxes.create(name=name, vcpus=2, mem_bytes=512 << 20, idle_ttl_seconds=300,
                 delete_after_stop_seconds=7200, env_vars={"CARRIED_TOKEN": "tok-123"},
                 run_config={"env_vars": {"BASE": "rc"}}, labels={"team": "carry"},
                 proxy_config=proxy_config)
    try:
        # The create's own env vars are the caller's: the sandbox's run_config does not show them.
        src = boxes.retrieve(name)
        assert (src.run_config.env_vars or {}) == {"BASE": "rc"}
        assert "tok-123" not in src.model_dump_json()

        with pytest.raises(UnprocessableEntityError, match="confirm_allow_snapshot_secret_values"):
            boxes.create_snapshot(path_name=name, body_name=snap, include=["all"])
        with pytest.raises(UnprocessableEntityError, match="proxy_config"):
            boxes.create_snapshot(path_name=name, body_name=snap, include=["proxy_config"])
        with pytest.raises(UnprocessableEntityError, match="memory"):
            boxes.create_snapshot(path_name=name, body_name=snap, include=["memory"])
        assert gen.sandboxes.snapshots.list(name_contains=snap).items == [], "a refusal stores nothing"

        s = boxes.create_snapshot(path_name=name, body_name=snap, include=["all"],
                                  confirm_allow_snapshot_secret_values=True)
        assert s.included == ["mounts", "proxy_config", "env_vars", "resources", "lifecycle", "labels"]
        shown = gen.sandboxes.snapshots.retrieve(s.id)
        assert shown.included == s.included
        assert shown.proxy_config.rules[0].name == "carry"
        for text in (s.model_dump_json(), shown.model_dump_json()):
            assert "tok-123" not in text and opaque not in text
        assert (shown.run_config.env_vars or {}) == {"BASE": "rc"}

        child = boxes.create(name=uniq("child"), snapshot_id=s.id, labels={"env": "prod"})
        made.append(child.name)
        assert (child.vcpus, child.mem_bytes) == (2, 512 << 20)
        assert (child.idle_ttl_seconds, child.delete_after_stop_seconds) == (300, 7200)
        assert child.labels == {"team": "carry", "env": "prod"}
        header = child.proxy_config.rules[0].headers[0]
        assert header.name == "X-Carried" and getattr(header, "value", None) is None
        r = client.get_sandbox(child.name).run("echo $CARRIED_TOKEN $BASE")
        assert r.stdout.split() == ["tok-123", "rc"]
        # Memory asked for alone takes no CPUs from the snapshot; env vars of its own replace
        # the carried ones.
        sized = boxes.create(name=uniq("sized"), snapshot_id=s.id, mem_bytes=1 << 30,
                             env_vars={"OWN": "1"})
        made.append(sized.name)
        assert (sized.vcpus, sized.mem_bytes) == (1, 1 << 30)
        r = client.get_sandbox(sized.name).run("echo \"[$CARRIED_TOKEN]\" $OWN")
        assert r.stdout.split() == ["[]", "1"]

        # Without include only the files, run_config and labels pass on.
        p = boxes.create_snapshot(path_name=name, body_name=plain)
        assert p.included == [] and p.proxy_config is None
        bare = boxes.create(name=uniq("bare"), snapshot_id=p.id)
        made.append(bare.name)
        assert (bare.vcpus, bare.proxy_config) == (1, None)
        r = client.get_sandbox(bare.name).run("echo \"[$CARRIED_TOKEN]\" $BASE")
        assert r.stdout.split() == ["[]", "rc"]
    finally:
        boxes.batch_delete(names=made)
        for n in (snap, plain):
            for x in gen.sandboxes.snapshots.list(name_contains=n).items:
                gen.sandboxes.snapshots.delete(x.id)

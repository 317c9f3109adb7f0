"""Workspace secrets through the `langsmith` SDK's generated client (`Langsmith().workspace_secrets`,
`/api/v1/workspaces/current/secrets`): upsert, list with and without configs, delete, and the
value never coming back, in any answer or in the audit log.

The hand-written `langsmith.Client` exposes only the generated resources under /v2, so the
generated `langsmith.Langsmith` client is used directly, as the SDK's own docs show."""

from __future__ import annotations

import json
import os
import subprocess
import uuid

import pytest
import requests

from helpers import audit_entries

TIMEOUT = 30
SECRETS = "/api/v1/workspaces/current/secrets"


def _key(prefix: str = "CONF") -> str:
    """A fresh secret key: the session's server is shared by every test."""
    return f"{prefix}_{uuid.uuid4().hex[:10].upper()}"


def _value() -> str:
    return f"conformance-secret-{uuid.uuid4().hex}"


@pytest.fixture(scope="module")
def ls(server):
    from langsmith import Langsmith

    return Langsmith(base_url=server.origin, api_key=server.key, max_retries=0)


def _raw_list(server, include_configs: bool | None) -> requests.Response:
    params = {} if include_configs is None else {"include_configs": str(include_configs).lower()}
    r = requests.get(f"{server.origin}{SECRETS}", params=params, headers=server.headers(), timeout=TIMEOUT)
    assert r.status_code == 200, r.text
    return r


def test_upsert_list_and_delete(server, ls):
    key, value = _key(), _value()
    try:
        created = ls.workspace_secrets.upsert(
            key,
            value=value,
            configs=[
                {"host_pattern": "api.example.com", "header_name": "Authorization", "header_value_template": "Bearer {value}"},
                {"host_pattern": "*.internal.example.com"},
            ],
        )
        assert created.key == key
        assert [c.host_pattern for c in created.configs] == ["api.example.com", "*.internal.example.com"]
        first = created.configs[0]
        assert first.source == "CUSTOM"
        assert first.header_name == "Authorization"
        assert first.header_value_template == "Bearer {value}"
        assert first.id and first.created_at is not None and first.updated_at is not None
        assert created.configs[1].header_name is None
        assert created.configs[1].header_value_template is None
        assert not hasattr(created, "value") or getattr(created, "value", None) is None

        # Keys only, unless configs are asked for.
        listed = {s.key: s for s in ls.workspace_secrets.list()}
        assert key in listed
        assert listed[key].configs is None
        listed = {s.key: s for s in ls.workspace_secrets.list(include_configs=False)}
        assert listed[key].configs is None
        listed = {s.key: s for s in ls.workspace_secrets.list(include_configs=True)}
        assert [c.host_pattern for c in listed[key].configs] == ["api.example.com", "*.internal.example.com"]
        assert listed[key].configs[0].id == first.id

        # Omitting the value keeps it; the hosts are a full replacement.
        updated = ls.workspace_secrets.upsert(key, configs=[{"host_pattern": "other.example.com", "header_name": "X-Key"}])
        assert [c.host_pattern for c in updated.configs] == ["other.example.com"]
        # Omitted configs remove the custom hosts; this key has no built-in defaults.
        cleared = ls.workspace_secrets.upsert(key, value=_value())
        assert cleared.configs == []

        for include in (None, False, True):
            assert value not in _raw_list(server, include).text
    finally:
        assert ls.workspace_secrets.delete(key) is None
    assert key not in {s.key for s in ls.workspace_secrets.list()}
    # A missing key succeeds.
    ls.workspace_secrets.delete(key)


def test_known_provider_keys_get_default_hosts(ls):
    # A per-session name cannot be used here: the defaults belong to the provider key itself.
    # The test owns OPENAI_API_KEY for its duration and removes it after.
    key = "OPENAI_API_KEY"
    try:
        s = ls.workspace_secrets.upsert(key, value=_value())
        assert len(s.configs) == 1
        d = s.configs[0]
        assert (d.host_pattern, d.source, d.header_name, d.header_value_template) == (
            "api.openai.com",
            "DEFAULT",
            "Authorization",
            "Bearer {value}",
        )
        assert d.id is None and d.created_at is None and d.updated_at is None
        custom = ls.workspace_secrets.upsert(key, configs=[{"host_pattern": "openai.proxy.example.com"}])
        assert [(c.host_pattern, c.source) for c in custom.configs] == [("openai.proxy.example.com", "CUSTOM")]
        back = ls.workspace_secrets.upsert(key, configs=[])
        assert [(c.host_pattern, c.source) for c in back.configs] == [("api.openai.com", "DEFAULT")]
    finally:
        ls.workspace_secrets.delete(key)


def test_invalid_requests_are_400s(ls):
    from langsmith import BadRequestError

    key = _key()
    with pytest.raises(BadRequestError, match="required to create"):
        ls.workspace_secrets.upsert(key)
    for kwargs in (
        {"value": "line\nbreak"},
        {"value": "v", "configs": [{"host_pattern": "https://api.example.com"}]},
        {"value": "v", "configs": [{"host_pattern": "api.example.com:443"}]},
        {"value": "v", "configs": [{"host_pattern": "api.*.com"}]},
        {"value": "v", "configs": [{"host_pattern": "a.com", "header_name": "Not A Token"}]},
        {"value": "v", "configs": [{"host_pattern": "a.com", "header_value_template": "no placeholder"}]},
        {"value": "v", "configs": [{"host_pattern": f"h{i}.example.com"} for i in range(33)]},
    ):
        with pytest.raises(BadRequestError):
            ls.workspace_secrets.upsert(key, **kwargs)
    with pytest.raises(BadRequestError):
        ls.workspace_secrets.upsert("1_STARTS_WITH_A_DIGIT", value="v")
    assert key not in {s.key for s in ls.workspace_secrets.list()}


def test_only_admins_write_but_members_list(server, ls, bob_key):
    from langsmith import Langsmith, PermissionDeniedError

    bob = Langsmith(base_url=server.origin, api_key=bob_key, max_retries=0)
    key, value = _key(), _value()
    try:
        ls.workspace_secrets.upsert(key, value=value)
        with pytest.raises(PermissionDeniedError):
            bob.workspace_secrets.upsert(key, value="bobs")
        with pytest.raises(PermissionDeniedError):
            bob.workspace_secrets.delete(key)
        assert key in {s.key for s in bob.workspace_secrets.list(include_configs=True)}
    finally:
        ls.workspace_secrets.delete(key)


def test_the_audit_log_names_the_key_but_never_the_value(server, ls):
    key, value = _key(), _value()
    ls.workspace_secrets.upsert(key, value=value)
    ls.workspace_secrets.delete(key)
    log = audit_entries(server, TIMEOUT)
    assert value not in json.dumps(log)
    entries = [e for e in log if e.get("target") == key]
    assert {e["action"] for e in entries} >= {"secret.set", "secret.delete"}


def _cli_with_stdin(server, stdin: str, *args: str) -> subprocess.CompletedProcess:
    """`server.cli`, with text on stdin (it gives the CLI /dev/null)."""
    env = dict(os.environ, WARREN_URL=server.origin, WARREN_API_KEY=server.key)
    return subprocess.run(
        [str(server.binary), *args], env=env, input=stdin, capture_output=True, text=True, timeout=60
    )


def test_the_cli_sets_from_stdin_and_prints_no_value(server, ls):
    key, value = _key("CLI"), _value()
    try:
        r = _cli_with_stdin(server, value + "\n", "secret", "set", key, "--host", "api.example.com", "--header", "X-Key")
        assert r.returncode == 0, r.stderr
        assert value not in r.stdout and value not in r.stderr
        r = server.cli("secret", "ls", "--configs")
        assert r.returncode == 0, r.stderr
        assert key in r.stdout and "api.example.com" in r.stdout
        assert value not in r.stdout
        # The value was read from stdin, not left empty: an upsert without one keeps it.
        assert [s.key for s in ls.workspace_secrets.list() if s.key == key] == [key]
    finally:
        r = server.cli("secret", "rm", key)
        assert r.returncode == 0, r.stderr

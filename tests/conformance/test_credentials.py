"""Credential injection: a header rule gives a request to an HTTPS service the workspace's
secret, while the sandbox itself never holds it.

The service is an HTTPS server with its own CA in a network namespace this test creates
(`upstream_tls.Upstream`); the server's egress proxy trusts that CA for upstreams. Every check
for a leak runs on the host, so the secret never enters the sandbox in a command either.
"""

from __future__ import annotations

import os
import re
import secrets
import subprocess
from pathlib import Path

import pytest
import requests

from helpers import uniq, wait_until
from upstream_tls import UPSTREAM_ADDR, Upstream

SECRET_KEY = "UPSTREAM_TOKEN"
AWS_KEY_ID = "AKIDWARRENTEST"
AWS_SECRET_KEY = "AWS_TEST_SECRET"


@pytest.fixture(scope="module")
def secret_value() -> str:
    return "tok-" + secrets.token_hex(16)


@pytest.fixture(scope="module")
def aws_secret() -> str:
    return secrets.token_urlsafe(30)


@pytest.fixture(scope="module")
def upstream(secret_value, aws_secret):
    up = Upstream(secret_value, AWS_KEY_ID, aws_secret)
    yield up
    up.close()


def _put_secret(server, key: str, value: str) -> None:
    r = requests.put(
        f"{server.origin}/api/v1/workspaces/current/secrets/{key}",
        json={"value": value},
        headers=server.headers(),
        timeout=30,
    )
    assert r.status_code == 200, r.text
    assert value not in r.text


@pytest.fixture(scope="module")
def box(server, client, upstream, secret_value):
    _put_secret(server, SECRET_KEY, secret_value)
    opaque = "opq-" + secrets.token_hex(12)
    proxy_config = {
        "rules": [
            {
                "name": "upstream",
                "enabled": True,
                "match_hosts": [UPSTREAM_ADDR],
                "match_paths": ["/v1/*", "/secret"],
                "headers": [
                    {"name": "Authorization", "type": "workspace_secret", "value": "Bearer {" + SECRET_KEY + "}"},
                    {"name": "X-Opaque", "type": "opaque", "value": opaque},
                ],
            }
        ]
    }
    sb = client.create_sandbox(name=uniq("creds"), proxy_config=proxy_config, timeout=60)
    try:
        yield sb, opaque
    finally:
        client.delete_sandbox(sb.name)


def _curl(sb, path: str) -> str:
    r = sb.run(f"curl -sS --path-as-is https://{UPSTREAM_ADDR}{path}", timeout=60)
    assert r.exit_code == 0, f"{path}: {r.stderr}"
    return r.stdout


def test_a_header_rule_gives_the_request_the_secret(box, upstream, secret_value):
    sb, opaque = box
    assert _curl(sb, "/v1/data") == "authorized"
    assert _curl(sb, "/secret") == "authorized"
    # Programs that read SSL_CERT_FILE (Python's ssl) trust the sandbox's CA too.
    r = sb.run(
        f"python3 -c \"import urllib.request; print(urllib.request.urlopen('https://{UPSTREAM_ADDR}/v1/py').read().decode())\"",
        timeout=60,
    )
    assert r.exit_code == 0, r.stderr
    assert r.stdout.strip() == "authorized"
    seen = {req["path"]: req["headers"] for req in upstream.requests()}
    for path in ["/v1/data", "/secret", "/v1/py"]:
        assert seen[path].get("authorization") == f"Bearer {secret_value}", seen[path]
        assert seen[path].get("x-opaque") == opaque


def test_non_canonical_paths_and_other_paths_get_nothing(box, upstream):
    sb, _ = box
    for path in ["/a/../secret", "/a/%2e%2e/secret", "/v1/%2E%2E/secret", "/v1//data", "/public"]:
        assert _curl(sb, path) == "anonymous", path
        last = upstream.requests()[-1]
        assert last["path"] == path, last
        assert "authorization" not in last["headers"], last
        assert "x-opaque" not in last["headers"], last


def test_the_api_never_shows_an_opaque_value(server, box):
    sb, opaque = box
    r = requests.get(f"{server.api_base}/boxes/{sb.name}", headers=server.headers(), timeout=30)
    assert r.status_code == 200
    assert opaque not in r.text
    header = r.json()["proxy_config"]["rules"][0]["headers"][1]
    assert header == {"name": "X-Opaque", "type": "opaque", "is_set": True}
    listed = requests.get(f"{server.origin}/api/v1/workspaces/current/secrets", headers=server.headers(), timeout=30)
    assert listed.status_code == 200
    assert SECRET_KEY in [s["key"] for s in listed.json()]


def test_a_rotated_secret_applies_to_the_next_request(server, box, upstream, secret_value):
    sb, _ = box
    _put_secret(server, SECRET_KEY, secret_value + "-rotated")
    try:
        assert _curl(sb, "/v1/rotated") == "anonymous"  # the server still expects the old one
        assert upstream.requests()[-1]["headers"]["authorization"] == f"Bearer {secret_value}-rotated"
    finally:
        _put_secret(server, SECRET_KEY, secret_value)


def _sandbox_pids(marker: str, required: bool = True) -> list[int]:
    """The host pids of every process in the pid namespace of the process whose command line
    contains `marker` (none when no process has it and `required` is false)."""
    target = None
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                if marker.encode() in (p / "cmdline").read_bytes():
                    target = os.readlink(p / "ns" / "pid")
                    break
            except OSError:
                continue
    if target is None:
        assert not required, f"no process runs {marker}"
        return []
    pids = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                if os.readlink(p / "ns" / "pid") == target:
                    pids.append(int(p.name))
            except OSError:
                continue
    return pids


def _memory_hits(pid: int, needles: list[bytes]) -> list[str]:
    hits = []
    with open(f"/proc/{pid}/maps") as maps, open(f"/proc/{pid}/mem", "rb", 0) as mem:
        for line in maps:
            m = re.match(r"([0-9a-f]+)-([0-9a-f]+) r", line)
            if not m:
                continue
            start, end = int(m.group(1), 16), int(m.group(2), 16)
            try:
                mem.seek(start)
                data = mem.read(end - start)
            except (OSError, OverflowError, ValueError):
                continue
            hits += [f"{pid} {line.strip()}" for n in needles if n in data]
    return hits


def test_the_secret_is_nowhere_in_the_sandbox(box, secret_value):
    sb, opaque = box
    _curl(sb, "/v1/before-scan")  # the secret has just passed through the proxy
    needles = [secret_value.encode(), opaque.encode()]
    r = sb.run("env", timeout=30)
    assert secret_value not in r.stdout and opaque not in r.stdout
    marker = f"617.{secrets.randbelow(10**6)}"
    handle = sb.run(f"sleep {marker}", wait=False, timeout=120)
    try:
        # The command starts asynchronously: wait until its process exists.
        pids = wait_until(lambda: _sandbox_pids(marker, required=False), timeout=20)
        assert pids, f"no process runs sleep {marker}"
        assert len(pids) >= 2, f"expected the agent and the sleep, found {pids}"
        for pid in pids:
            environ = Path(f"/proc/{pid}/environ").read_bytes()
            assert not any(n in environ for n in needles), f"pid {pid}'s environment holds a secret"
            assert _memory_hits(pid, needles) == [], f"pid {pid}'s memory holds a secret"
        # The whole filesystem as the sandbox sees it (its /proc, /sys and /dev aside).
        root = f"/proc/{pids[0]}/root/"
        for needle in (secret_value, opaque):
            found = subprocess.run(
                ["grep", "-rlaF", "--exclude-dir=proc", "--exclude-dir=sys", "--exclude-dir=dev", needle, root],
                capture_output=True,
                text=True,
            )
            assert found.returncode == 1, f"grep found it (or failed): {found.stdout} {found.stderr}"
    finally:
        handle.kill()


def test_the_daemon_logs_no_secret(server, box, secret_value):
    sb, opaque = box
    assert secret_value not in server.log_text()
    assert opaque not in server.log_text()
    r = server.cli("audit", "--data-dir", str(server.data_dir), "--limit", "500")
    assert r.returncode == 0, r.stderr
    assert "credentials from rule upstream" in r.stdout, r.stdout[-2000:]
    assert secret_value not in r.stdout and opaque not in r.stdout


@pytest.fixture(scope="module")
def aws_box(server, client, upstream, aws_secret):
    _put_secret(server, AWS_SECRET_KEY, aws_secret)
    proxy_config = {
        "rules": [
            {
                "name": "aws",
                "type": "aws",
                "enabled": True,
                # An S3-compatible service: the rule names it instead of AWS's own hosts.
                "match_hosts": [UPSTREAM_ADDR],
                "env_vars": {"AWS_ACCESS_KEY_ID": "dummy", "AWS_SECRET_ACCESS_KEY": "dummy"},
                "aws": {
                    "access_key_id": {"type": "opaque", "value": AWS_KEY_ID},
                    "secret_access_key": {"type": "workspace_secret", "value": AWS_SECRET_KEY},
                },
            }
        ]
    }
    sb = client.create_sandbox(name=uniq("aws"), proxy_config=proxy_config, timeout=60)
    try:
        yield sb
    finally:
        client.delete_sandbox(sb.name)


def test_an_aws_rule_re_signs_requests_made_with_dummy_keys(aws_box, upstream):
    """The sandbox's curl signs with the dummy keys its environment holds; the upstream checks
    the signature it receives with botocore and the real key pair."""
    sb = aws_box
    env = sb.run("env", timeout=30).stdout
    assert "AWS_ACCESS_KEY_ID=dummy" in env
    sign = '--aws-sigv4 "aws:amz:{scope}" --user "$AWS_ACCESS_KEY_ID:$AWS_SECRET_ACCESS_KEY"'
    r = sb.run(f"curl -sS {sign.format(scope='us-east-1:s3')} https://{UPSTREAM_ADDR}/aws/bucket/key", timeout=60)
    assert (r.exit_code, r.stdout) == (0, "signed"), r.stderr
    got = upstream.requests()[-1]["headers"]["authorization"]
    assert got.startswith(f"AWS4-HMAC-SHA256 Credential={AWS_KEY_ID}/") and "/us-east-1/s3/" in got, got
    # A body whose hash the client did not declare: the proxy hashes it.
    r = sb.run(
        f"curl -sS {sign.format(scope='eu-west-1:execute-api')} -X POST --data-binary '{{\"a\": 1}}' "
        f"-H 'content-type: application/json' https://{UPSTREAM_ADDR}/aws/api",
        timeout=60,
    )
    assert (r.exit_code, r.stdout) == (0, "signed"), r.stderr
    last = upstream.requests()[-1]
    assert last["body"] == '{"a": 1}' and "/eu-west-1/execute-api/" in last["headers"]["authorization"]
    # A request no one signed is signed too (scope from the host is impossible for an IP, so
    # it is refused with a reason rather than sent unsigned).
    r = sb.run(f"curl -sS -o /dev/null -w '%{{http_code}}' https://{UPSTREAM_ADDR}/aws/unsigned", timeout=60)
    assert r.stdout == "403", r.stdout


@pytest.fixture(scope="module")
def callback_box(client, upstream):
    proxy_config = {
        "callbacks": [
            {"url": f"https://{UPSTREAM_ADDR}/cb", "match_hosts": [UPSTREAM_ADDR], "ttl_seconds": 60}
        ]
    }
    sb = client.create_sandbox(name=uniq("callback"), proxy_config=proxy_config, timeout=60)
    try:
        yield sb
    finally:
        client.delete_sandbox(sb.name)


def test_a_callback_gives_the_credential_and_its_call_verifies_with_the_sdk(server, callback_box, upstream):
    from langsmith.sandbox import CALLBACK_SIGNATURE_HEADER, SandboxTokenVerifier

    sb = callback_box
    assert _curl(sb, "/v1/from-callback") == "authorized"
    calls = [r for r in upstream.requests() if r["path"] == "/cb"]
    assert calls, "the proxy never called the callback"
    call = calls[-1]
    verifier = SandboxTokenVerifier(api_url=server.origin)
    verified = verifier.verify_callback(
        body=call["body"].encode(),
        signature=call["headers"][CALLBACK_SIGNATURE_HEADER.lower()],
        aud=f"https://{UPSTREAM_ADDR}/cb",
    )
    assert verified.host == UPSTREAM_ADDR
    assert verified.identity.sandbox_id == sb.id
    # A tampered body does not verify.
    with pytest.raises(Exception, match="body does not match"):
        verifier.verify_callback(
            body=call["body"].replace(UPSTREAM_ADDR, "203.0.113.9").encode(),
            signature=call["headers"][CALLBACK_SIGNATURE_HEADER.lower()],
            aud=f"https://{UPSTREAM_ADDR}/cb",
        )
    # The answer is kept for its ttl: a second request makes no second call.
    assert _curl(sb, "/v1/again") == "authorized"
    assert len([r for r in upstream.requests() if r["path"] == "/cb"]) == len(calls)

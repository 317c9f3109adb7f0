"""TCP tunnels through the Python SDK's `sb.tunnel()` (LANGSMITH-API.md §5): its hand-written
yamux client over `{D}/tunnel`, against servers started inside the sandbox."""

from __future__ import annotations

import concurrent.futures
import hashlib
import socket
import time

import pytest
import requests

from helpers import uniq, wait_until


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, timeout: float = 30.0) -> requests.Response | None:
    try:
        return requests.get(url, timeout=timeout)
    except requests.RequestException:
        return None


@pytest.fixture(scope="module")
def web(sb):
    """An HTTP server inside the sandbox on its loopback, serving /tmp/www: a small page and a
    10 MiB file of random bytes. Returns (port, page text, sha256 of the big file)."""
    port = 8765
    page = f"hello through the tunnel {uniq('page')}\n"
    sb.write("/tmp/www/index.txt", page)
    sb.run("head -c 10485760 /dev/urandom > /tmp/www/big.bin")
    digest = sb.run("sha256sum /tmp/www/big.bin").stdout.split()[0]
    sb.run(
        f"cd /tmp/www && python3 -m http.server {port} --bind 127.0.0.1",
        wait=False,
        timeout=0,
        idle_timeout=-1,
    )
    up = wait_until(
        lambda: sb.run(
            f"python3 -c \"import socket; socket.create_connection(('127.0.0.1', {port}), 1)\""
        ).exit_code
        == 0,
        timeout=20,
    )
    assert up, "the HTTP server in the sandbox did not come up"
    return port, page, digest


def test_http_server_in_the_sandbox_is_fetched_through_the_tunnel(sb, web):
    port, page, _ = web
    local = _free_port()
    with sb.tunnel(remote_port=port, local_port=local) as t:
        assert t.local_port == local
        r = _get(f"http://127.0.0.1:{local}/index.txt")
        assert r is not None and r.status_code == 200
        assert r.text == page
        # A second connection on the same tunnel is a second stream on the same session.
        r2 = _get(f"http://127.0.0.1:{local}/index.txt")
        assert r2 is not None and r2.text == page


def test_fifty_concurrent_streams_each_carry_10_mib_byte_exact(sb, web):
    port, _, digest = web
    local = _free_port()
    with sb.tunnel(remote_port=port, local_port=local) as t:

        def fetch(i: int) -> tuple[int, str]:
            h = hashlib.sha256()
            n = 0
            with requests.get(f"http://127.0.0.1:{t.local_port}/big.bin", stream=True, timeout=90) as r:
                assert r.status_code == 200, f"stream {i}: HTTP {r.status_code}"
                for chunk in r.iter_content(1 << 16):
                    h.update(chunk)
                    n += len(chunk)
            return n, h.hexdigest()

        started = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(max_workers=50) as pool:
            results = list(pool.map(fetch, range(50)))
        took = time.monotonic() - started
    assert all(n == 10 << 20 for n, _ in results), [n for n, _ in results]
    assert all(d == digest for _, d in results), "some stream's bytes differ"
    print(f"50 x 10 MiB through one tunnel in {took:.1f} s ({500 / took:.1f} MiB/s)")


def test_a_closed_port_closes_the_local_connection_instead_of_hanging(sb):
    closed = 8799
    assert sb.run(
        f"python3 -c \"import socket; socket.create_connection(('127.0.0.1', {closed}), 1)\""
    ).exit_code != 0, "something listens on the port meant to be closed"
    local = _free_port()
    with sb.tunnel(remote_port=closed, local_port=local):
        started = time.monotonic()
        with socket.create_connection(("127.0.0.1", local), timeout=15) as s:
            s.sendall(b"GET / HTTP/1.0\r\n\r\n")
            try:
                data = s.recv(1024)
            except ConnectionResetError:
                data = b""
        assert data == b"", f"expected the connection closed, got {data!r}"
        assert time.monotonic() - started < 10, "the refusal took too long"
        # The tunnel itself stays usable: a refused stream does not end the session.
        with pytest.raises(requests.ConnectionError):
            requests.get(f"http://127.0.0.1:{local}/", timeout=15)


@pytest.mark.timeout(600)
def test_redis_from_debian_through_the_tunnel(client):
    """Debian's redis-server installed and started inside a sandbox (egress through Warren's
    proxy), then spoken to from the host over the tunnel in raw RESP."""
    with client.sandbox(name=uniq("redis"), timeout=60) as box:
        r = box.run(
            "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server",
            timeout=480,
        )
        # The postinst adds the `redis` system user and hands its directories over with
        # dpkg-statoverride: chown and chmod that root in the sandbox makes without any
        # capability (the agent makes them on its behalf, and keeps root the group's rights
        # over what it gave away with an ACL entry). The image's policy-rc.d keeps the postinst
        # from starting the service: a sandbox has no init system.
        assert r.exit_code == 0, f"installing redis failed: {r.stdout[-2000:]} {r.stderr[-2000:]}"
        owner = box.run("stat -c '%U:%G' /var/lib/redis && id -u redis")
        assert owner.exit_code == 0, owner.stderr
        assert owner.stdout.splitlines()[0] == "redis:redis", owner.stdout
        caps = box.run("grep '^CapEff:' /proc/self/status").stdout.split()
        assert caps == ["CapEff:", "0000000000000000"], caps
        box.run(
            "redis-server --port 6379 --bind 127.0.0.1 --save '' --daemonize yes",
            timeout=30,
        )
        assert wait_until(
            lambda: box.run("redis-cli -p 6379 ping").stdout.strip() == "PONG", timeout=20
        ), "redis did not start"
        local = _free_port()
        with box.tunnel(remote_port=6379, local_port=local):
            with socket.create_connection(("127.0.0.1", local), timeout=15) as s:
                f = s.makefile("rwb")

                def cmd(*args: bytes) -> bytes:
                    f.write(b"*%d\r\n" % len(args))
                    for a in args:
                        f.write(b"$%d\r\n%s\r\n" % (len(a), a))
                    f.flush()
                    return f.readline()

                value = uniq("v").encode()
                assert cmd(b"PING") == b"+PONG\r\n"
                assert cmd(b"SET", b"tunnel-key", value) == b"+OK\r\n"
                assert cmd(b"GET", b"tunnel-key") == b"$%d\r\n" % len(value)
                assert f.readline() == value + b"\r\n"
        # And the value is really in the sandbox's redis.
        assert box.run("redis-cli -p 6379 get tunnel-key").stdout.strip() == value.decode()


def _tunnel_works(local: int) -> bool:
    r = _get(f"http://127.0.0.1:{local}/index.txt", timeout=5)
    return r is not None and r.status_code == 200


def test_a_revoked_key_cuts_the_open_tunnel(server):
    """An open tunnel is not a way around revocation: the session ends when its key is revoked
    (the SDK's reconnect is then refused too)."""
    from langsmith.sandbox import SandboxClient

    made = requests.post(f"{server.api_base}/keys", json={"name": uniq("carol")}, headers=server.headers(), timeout=30)
    assert made.status_code in (200, 201), made.text
    carol = made.json()
    client = SandboxClient(api_endpoint=server.api_base, api_key=carol["key"])
    port = 8766

    def serve(box) -> None:
        box.run("mkdir -p /tmp/www && echo hi > /tmp/www/index.txt")
        box.run(f"cd /tmp/www && python3 -m http.server {port} --bind 127.0.0.1", wait=False, timeout=0, idle_timeout=-1)
        assert wait_until(
            lambda: box.run(f"python3 -c \"import socket; socket.create_connection(('127.0.0.1', {port}), 1)\"").exit_code == 0,
            timeout=20,
        )

    box = client.create_sandbox(name=uniq("cut"))
    try:
        serve(box)
        local = _free_port()
        with box.tunnel(remote_port=port, local_port=local):
            assert _tunnel_works(local)
            r = requests.delete(f"{server.api_base}/keys/{carol['id']}", headers=server.headers(), timeout=30)
            assert r.status_code in (200, 204), r.text
            assert wait_until(lambda: not _tunnel_works(local), timeout=15), "a revoked key kept its tunnel"
    finally:
        requests.delete(f"{server.api_base}/boxes/{box.name}", headers=server.headers(), timeout=60)

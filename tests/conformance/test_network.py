"""Network: the seed's own example through the official SDK, egress policy, and what a sandbox
can never reach.

Packets only ever go to this machine and to the package registries the sandboxes install from
(through Warren's proxy, which resolves and connects on the host). The host services the tests
try to reach are loopback and link services this test starts itself.
"""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import textwrap
import threading

import requests

from helpers import audit_entries, uniq

ANALYSIS = textwrap.dedent(
    """
    import pandas as pd
    df = pd.DataFrame({"city": ["a", "b", "a"], "sales": [3, 4, 5]})
    print("total", int(df.groupby("city")["sales"].sum()["a"]))
    """
)


def _dropped() -> int:
    """Packets the sandbox firewall dropped so far (its rules' counters)."""
    out = subprocess.run(
        ["nft", "-j", "list", "table", "inet", "warren"], capture_output=True, text=True, check=True
    ).stdout
    total = 0
    for item in json.loads(out)["nftables"]:
        rule = item.get("rule")
        if not rule:
            continue
        exprs = rule.get("expr", [])
        if any("drop" in e for e in exprs):
            total += sum(e["counter"]["packets"] for e in exprs if isinstance(e.get("counter"), dict))
    return total


class _Listener:
    """A TCP server on every host address that counts the connections it gets."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("0.0.0.0", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self.stop = False
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        self.sock.settimeout(0.2)
        while not self.stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.accepted += 1
            try:
                conn.sendall(b"HTTP/1.0 200 OK\r\ncontent-length: 6\r\n\r\nsecret")
            finally:
                conn.close()

    def close(self) -> None:
        self.stop = True
        self.sock.close()


def test_the_seed_flow_installs_pandas_and_runs_the_analysis(client):
    sb = client.create_sandbox(timeout=120)
    try:
        sb.write("/root/analysis.py", ANALYSIS.encode())
        r = sb.run("cd /root && pip install -q pandas && python analysis.py", timeout=600)
        assert r.exit_code == 0, r.stderr[-3000:]
        assert "total 8" in r.stdout
        r = sb.run(
            "mkdir -p /tmp/p && cd /tmp/p && npm init -y >/dev/null && npm install --silent is-number"
            " && node -e \"console.log(require('is-number')(5))\"",
            timeout=600,
        )
        assert r.exit_code == 0, r.stderr[-3000:]
        assert r.stdout.strip().endswith("true")
    finally:
        client.delete_sandbox(sb.name)


@contextlib.contextmanager
def _allowing_only_example_invalid(server, client, prefix: str):
    """A sandbox whose egress policy allows only a name nobody uses, deleted on the way out."""
    name = uniq(prefix)
    r = requests.post(
        f"{server.api_base}/boxes",
        json={"name": name, "proxy_config": {"access_control": {"allow_list": ["example.invalid"]}}},
        headers=server.headers(),
        timeout=120,
    )
    assert r.status_code == 200, r.text
    try:
        yield client.get_sandbox(name)
    finally:
        client.delete_sandbox(name)


def test_an_allow_list_without_the_index_refuses_pip_fast(server, client):
    with _allowing_only_example_invalid(server, client, "allow") as sb:
        r = sb.run("curl -sS https://pypi.org/simple/six/ 2>&1; echo rc=$?", timeout=60)
        assert "403" in r.stdout, r.stdout
        r = sb.run("pip install --no-cache-dir --retries 1 --timeout 5 pyjokes", timeout=120)
        assert r.exit_code != 0
        assert "403" in (r.stdout + r.stderr), (r.stdout + r.stderr)[-2000:]
        denied = [e for e in audit_entries(server) if e["action"] == "egress.denied" and e["target"] == sb.id]
        assert any("pypi.org:443" in (e["detail"] or "") for e in denied), denied[-5:]


def test_a_sandbox_resolves_its_own_hostname_to_its_address_under_any_policy(server, client):
    """As in any container: `hostname -f`, Java's getLocalHost and the like need it."""
    with _allowing_only_example_invalid(server, client, "host") as sb:
        probe = (
            "import socket; h = socket.gethostname(); "
            "print(h, socket.gethostbyname(h), socket.getfqdn())"
        )
        r = sb.run(f'python3 -c "{probe}" && hostname -I', timeout=30)
        assert r.exit_code == 0, r.stderr
        line, addresses = r.stdout.splitlines()
        host, address, fqdn = line.split()
        assert host == sb.run("hostname", timeout=30).stdout.strip()
        assert address in addresses.split(), (address, addresses)
        assert fqdn == host


def test_the_host_is_unreachable_directly_and_through_the_proxy(server, sb):
    svc = _Listener()
    try:
        proxy = sb.run("echo $HTTP_PROXY", timeout=30).stdout.strip()
        assert proxy.startswith("http://100.6") or proxy.startswith("http://100.")
        host_end = proxy.removeprefix("http://").rsplit(":", 1)[0]
        api_port = server.port
        before = _dropped()
        attempts = {
            "host end, a host service": f"timeout 3 bash -c 'echo x > /dev/tcp/{host_end}/{svc.port}'",
            "host end, the API": f"timeout 3 bash -c 'echo x > /dev/tcp/{host_end}/{api_port}'",
            "proxy, loopback absolute-form": f"curl -sS -m 5 -x {proxy} http://127.0.0.1:{svc.port}/",
            "proxy, localhost CONNECT": f"curl -sS -m 5 -p -x {proxy} http://localhost:{svc.port}/",
            "proxy, the host end": f"curl -sS -m 5 -x {proxy} http://{host_end}:{svc.port}/",
            "proxy, metadata": f"curl -sS -m 5 -x {proxy} http://169.254.169.254/latest/meta-data/",
            "transparent, Host localhost": f"curl -sS -m 5 --noproxy '*' -H 'Host: localhost:{svc.port}' http://192.0.2.1/",
            "transparent, SNI localhost": f"curl -sS -m 5 --noproxy '*' --resolve localhost:443:192.0.2.1 https://localhost/",
        }
        for what, line in attempts.items():
            r = sb.run(f"{line}; echo rc=$?", timeout=60)
            assert "secret" not in r.stdout, f"{what}: {r.stdout}"
            assert "rc=0" not in r.stdout or "warren egress proxy refused" in r.stdout, f"{what} succeeded: {r.stdout}"
        assert svc.accepted == 0, "a host service saw a connection from the sandbox"
        assert _dropped() > before, "the firewall counted no dropped packet"
    finally:
        svc.close()


def test_a_none_sandbox_has_only_its_loopback(server, client):
    svc = _Listener()
    server.stop()
    server.extra_args = ["--network", "none"]
    server.start(fresh=False)
    try:
        with client.sandbox(name=uniq("none"), timeout=60) as sb:
            links = sb.run("awk -F: 'NR>2 {print $1}' /proc/net/dev", timeout=30).stdout.split()
            assert links == ["lo"], links
            assert sb.run("echo ${HTTP_PROXY:-none}", timeout=30).stdout.strip() == "none"
            for target in ["127.0.0.1", "100.64.0.1", "192.0.2.1"]:
                r = sb.run(f"timeout 3 bash -c 'echo x > /dev/tcp/{target}/{svc.port}'; echo rc=$?", timeout=30)
                assert "rc=0" not in r.stdout, f"{target} reachable from a none sandbox"
            assert svc.accepted == 0
    finally:
        svc.close()
        server.stop()
        server.extra_args = []
        server.start(fresh=False)

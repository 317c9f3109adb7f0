#!/usr/bin/env python3
"""Reaching into a sandbox: throughput through a TCP tunnel and the latency of a small GET
through the tunnel (and through a service URL, where the server offers them), side by side
with the same fetches made directly on the sandbox's loopback, from inside it.

Runs its own `warren serve --network none` (tunnels and service URLs need no egress). Needs
root, a built Warren (scripts/build.sh), the default image in the data dir and the `langsmith`
package (tests/conformance/run.sh installs it into target/conformance-venv):

    sudo target/conformance-venv/bin/python bench/reach_bench.py [--mib 256] [--runs 200]
"""
import argparse
import json
import os
import time

import requests

from bench import percentile  # bench/bench.py, next to this file
from sdk_bench import add_server_args, free_port, sdk_only_here, start_server

SERVER = """
import http.server, os
os.chdir("/srv")
class H(http.server.SimpleHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are separate writes
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer(("127.0.0.1", 8000), H).serve_forever()
"""

# Runs inside the sandbox: the same fetches over its own loopback, keep-alive, timed there.
DIRECT = """
import http.client, json, sys, time
mib, runs = int(sys.argv[1]), int(sys.argv[2])
c = http.client.HTTPConnection("127.0.0.1", 8000)
small = []
for _ in range(runs):
    t = time.perf_counter(); c.request("GET", "/small"); c.getresponse().read()
    small.append((time.perf_counter() - t) * 1000)
t = time.perf_counter(); c.request("GET", "/big"); r = c.getresponse()
n = 0
while True:
    b = r.read(1 << 20)
    if not b: break
    n += len(b)
big = n / (1 << 20) / (time.perf_counter() - t)
print(json.dumps({"small": small, "mib_s": big}))
"""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mib", type=int, default=256, help="size of the file fetched for throughput")
    ap.add_argument("--runs", type=int, default=200, help="small GETs per path")
    add_server_args(ap)
    args = ap.parse_args()
    sdk_only_here()
    from langsmith.sandbox import SandboxClient

    with start_server(args, "none") as (origin, key):
        client = SandboxClient(api_endpoint=f"{origin}/api/v2/sandboxes", api_key=key)
        sb = client.create_sandbox(timeout=60)
        try:
            run(args, sb)
        finally:
            client.delete_sandbox(sb.name)


def run(args, sb):
    prep = sb.run(f"mkdir -p /srv && head -c {args.mib << 20} /dev/zero > /srv/big && echo hi > /srv/small")
    assert prep.exit_code == 0, prep.stderr
    sb.write("/tmp/server.py", SERVER.encode())
    sb.write("/tmp/direct.py", DIRECT.encode())
    server = sb.run("python3 /tmp/server.py", wait=False, timeout=3600)
    try:
        deadline = time.monotonic() + 20
        while sb.run("python3 -c \"import socket; socket.create_connection(('127.0.0.1', 8000))\"").exit_code:
            assert time.monotonic() < deadline, "the sandbox's HTTP server did not start"
            time.sleep(0.2)
        direct = json.loads(sb.run(f"python3 /tmp/direct.py {args.mib} {args.runs}", timeout=600).stdout)
        rows = {"direct on the sandbox's loopback": (direct["small"], direct["mib_s"])}
        local = free_port()
        with sb.tunnel(remote_port=8000, local_port=local):
            s = requests.Session()
            url = f"http://127.0.0.1:{local}"
            s.get(url + "/small").raise_for_status()
            small = []
            for _ in range(args.runs):
                t = time.perf_counter()
                s.get(url + "/small").raise_for_status()
                small.append((time.perf_counter() - t) * 1000)
            t = time.perf_counter()
            n = sum(len(c) for c in s.get(url + "/big", stream=True).iter_content(1 << 20))
            assert n == args.mib << 20, n
            rows["through a tunnel (sb.tunnel)"] = (small, n / (1 << 20) / (time.perf_counter() - t))
        svc = service(sb)
        if svc is not None:
            svc.get("/small").raise_for_status()
            small = []
            for _ in range(args.runs):
                t = time.perf_counter()
                svc.get("/small").raise_for_status()
                small.append((time.perf_counter() - t) * 1000)
            rows["through a service URL (sb.service)"] = (small, None)
            # The SDK makes a fresh HTTP client per request; the same URL from one keep-alive
            # session shows what the router itself costs.
            s = requests.Session()
            headers = {"X-Langsmith-Sandbox-Service-Token": svc.token}
            url = svc.service_url.rstrip("/") + "/small"
            small = []
            for _ in range(args.runs):
                t = time.perf_counter()
                s.get(url, headers=headers).raise_for_status()
                small.append((time.perf_counter() - t) * 1000)
            t = time.perf_counter()
            r = svc.get("/big")
            r.raise_for_status()
            mib_s = len(r.content) / (1 << 20) / (time.perf_counter() - t)
            rows["through a service URL (sb.service)"] = (rows["through a service URL (sb.service)"][0], mib_s)
            rows["through a service URL, keep-alive client"] = (small, mib_s)
    finally:
        server.kill()
    print(f"reaching a sandbox's port, {os.cpu_count()} CPUs, {args.runs} small GETs, {args.mib} MiB file")
    print(f"{'':<40}{'GET p50 ms':>11}{'p99 ms':>9}{'MiB/s':>9}")
    for name, (small, mib_s) in rows.items():
        print(f"{name:<40}{percentile(small, 50):>11.2f}{percentile(small, 99):>9.2f}{mib_s:>9.0f}")
    base = rows["direct on the sandbox's loopback"]
    for name, (small, mib_s) in rows.items():
        if name.startswith("through"):
            print(f"{name}: GET p50 {percentile(small, 50) / percentile(base[0], 50):.1f}x direct, "
                  f"throughput {mib_s / base[1]:.2f}x direct")


def service(sb):
    """A service URL for port 8000, or None where the server does not offer them."""
    try:
        return sb.service(8000)
    except Exception as e:  # noqa: BLE001 - servers without service URLs answer 400/404
        print(f"(no service URL: {e})")
        return None


if __name__ == "__main__":
    main()

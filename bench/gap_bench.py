#!/usr/bin/env python3
"""Where the pooled create -> first `run("true")` gap goes, layer by layer, against a
`warren serve --pool-min 3 --pool-max 3` this script starts.

Issue 16 asks that gap to be within 2 ms of `run("true")` on a running sandbox. A pooled
create is one HTTP request more than that command, so the gap can be no smaller than what one
request costs through the SDK's HTTP client here. This prints that floor beside Warren's own
share, each sample after the same idle pause with the pool full:

- a request that does nothing (`GET /pools`) and a pooled create, on a raw keep-alive socket
  (server and loopback only), through `httpx` (the SDK's HTTP client) and through the SDK;
- the same bare `httpx` request back to back and after 10, 50 and 300 ms idle: what waking
  this host's idle CPUs adds to every request after a pause;
- a claimed sandbox's first and second `run("true")` beside a running sandbox's.

Needs root, a built Warren (scripts/build.sh) and the SDK (tests/conformance/run.sh installs it):

    sudo target/conformance-venv/bin/python bench/gap_bench.py [-n 15]
"""
import argparse
import json
import socket
import sys
import time

from bench import percentile  # bench/bench.py, next to this file
from sdk_bench import add_server_args, sdk_only_here, start_server

IDLE = 0.3


class Raw:
    """HTTP/1.1 over one keep-alive socket, nothing else: what the server and loopback cost."""

    def __init__(self, origin, key):
        host, port = origin.rsplit("/", 1)[-1].split(":")
        self.sock = socket.create_connection((host, int(port)))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.key = key

    def call(self, method, path, body=b""):
        head = (f"{method} {path} HTTP/1.1\r\nHost: warren\r\nX-Api-Key: {self.key}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n")
        self.sock.sendall(head.encode() + body)
        buf = b""
        while b"\r\n\r\n" not in buf:
            buf += self.sock.recv(65536)
        head, rest = buf.split(b"\r\n\r\n", 1)
        length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length"))
        while len(rest) < length:
            rest += self.sock.recv(65536)
        return json.loads(rest)


def timed(f):
    t0 = time.perf_counter()
    out = f()
    return out, (time.perf_counter() - t0) * 1000


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=15, help="samples of each kind")
    add_server_args(ap)
    args = ap.parse_args()
    sdk_only_here()
    import httpx
    from langsmith.sandbox import SandboxClient

    with start_server(args, "proxied", ["--pool-min", "3", "--pool-max", "3"]) as (origin, key):
        base = f"{origin}/api/v2/sandboxes"
        headers = {"X-Api-Key": key}
        hx = httpx.Client(headers=headers)
        raw = Raw(origin, key)
        client = SandboxClient(api_endpoint=base, api_key=key)
        made = []

        def pool_full():
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                pools = hx.get(f"{base}/pools").json()
                pools = pools if isinstance(pools, list) else pools.get("pools", [])
                if pools and all(p.get("ready", 0) >= 3 for p in pools):
                    return
                time.sleep(0.05)
            sys.exit("the pool did not fill in 60 s")

        def sdk_create():
            sb = client.create_sandbox()
            made.append(sb.name)
            return sb

        def raw_create():
            made.append(raw.call("POST", "/api/v2/sandboxes/boxes", b"{}")["name"])

        def httpx_create():
            made.append(hx.post(f"{base}/boxes", json={}).json()["name"])

        layers = {
            "bare GET, raw socket": lambda: raw.call("GET", "/api/v2/sandboxes/pools"),
            "pooled create, raw socket": raw_create,
            "bare GET, httpx": lambda: hx.get(f"{base}/pools"),
            "pooled create, httpx": httpx_create,
            "pooled create, SDK": sdk_create,
        }
        running = sdk_create()
        running.run("true")
        samples = {name: [] for name in layers}
        commands = {k: [] for k in ("claimed: first run", "claimed: second run",
                                    "running: run after idle", "running: next run")}
        try:
            for _ in range(args.n):
                for name, f in layers.items():
                    pool_full()
                    time.sleep(IDLE)
                    samples[name].append(timed(f)[1])
                pool_full()
                time.sleep(IDLE)
                sb, _ = timed(sdk_create)
                commands["claimed: first run"].append(timed(lambda: sb.run("true"))[1])
                commands["claimed: second run"].append(timed(lambda: sb.run("true"))[1])
                pool_full()
                time.sleep(IDLE)
                commands["running: run after idle"].append(timed(lambda: running.run("true"))[1])
                commands["running: next run"].append(timed(lambda: running.run("true"))[1])
            idle = {}
            for pause in (0, 0.01, 0.05, IDLE):
                xs = []
                for _ in range(3 * args.n):
                    time.sleep(pause)
                    xs.append(timed(lambda: hx.get(f"{base}/pools"))[1])
                idle[f"bare GET, httpx, after {pause * 1000:.0f} ms idle"] = xs
        finally:
            for name in made:
                hx.delete(f"{base}/boxes/{name}")

    print(f"{'':<46}{'p50 ms':>9}{'p99 ms':>9}")
    for group in (samples, idle, commands):
        for name, xs in group.items():
            print(f"{name:<46}{percentile(xs, 50):>9.2f}{percentile(xs, 99):>9.2f}")
    floor = percentile(idle[f"bare GET, httpx, after {IDLE * 1000:.0f} ms idle"], 50)
    # What a command after idle pays over the next one: the run after a create does not.
    saved = max(0.0, percentile(commands["running: run after idle"], 50)
                - percentile(commands["running: next run"], 50))
    gap = (percentile(samples["pooled create, SDK"], 50)
           + percentile(commands["claimed: first run"], 50)
           - percentile(commands["running: run after idle"], 50))
    print(f"gap (SDK pooled create + first run - run after idle): {gap:.2f} ms")
    print(f"floor (one bare SDK-client request after idle, less the idle cost the run after it "
          f"saves): {floor - saved:.2f} ms")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Through the official LangSmith SDK: create -> first `run("true")` -> delete, and the
`run("true")` round trip on a running sandbox, against a `warren serve` this script starts.

Needs root, a built Warren (scripts/build.sh), the default image in the data dir, and the
`langsmith` package (tests/conformance/run.sh installs it into target/conformance-venv):

    sudo target/conformance-venv/bin/python bench/sdk_bench.py [-n 50] [--runs 300]

`--network none,proxied` runs the whole set once per network mode, each against its own
server, and ends with what the sandbox's network link costs a create (p50 and p99 side by side).
"""
import argparse
import contextlib
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time

from bench import ROOT, percentile  # bench/bench.py, next to this file


def row(name, samples):
    print(f"{name:<42}{percentile(samples, 50):>9.1f}{percentile(samples, 99):>9.1f}"
          f"{statistics.mean(samples):>9.1f}")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def add_server_args(ap):
    """The arguments `start_server` reads: the data dir and the `warren` binary."""
    ap.add_argument("--data-dir", default=os.environ.get("WARREN_DATA_DIR", "/var/lib/warren"))
    ap.add_argument("--warren", default=os.path.join(ROOT, "target/release/warren"))


def sdk_only_here():
    """Exits unless root; leaves the SDK no LangSmith settings but those given it, and no
    tracing."""
    if os.geteuid() != 0:
        sys.exit("bench needs root")
    for var in [v for v in os.environ if v.startswith(("LANGSMITH_", "LANGCHAIN_"))]:
        del os.environ[var]
    os.environ["LANGSMITH_TRACING"] = "false"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=50, help="cold create/run/delete cycles")
    ap.add_argument("--runs", type=int, default=300, help="run('true') on one sandbox")
    add_server_args(ap)
    ap.add_argument("--network", default="proxied",
                    help="network modes to measure, comma-separated (none, proxied)")
    args = ap.parse_args()
    sdk_only_here()
    from langsmith.sandbox import SandboxClient

    creates = {}
    for mode in args.network.split(","):
        creates[mode] = measure(args, SandboxClient, mode)
    if len(creates) > 1:
        print("what the network link costs a create:")
        print(f"{'':<42}{'p50 ms':>9}{'p99 ms':>9}")
        for mode, c in creates.items():
            print(f"{'create, network ' + mode:<42}{percentile(c, 50):>9.1f}{percentile(c, 99):>9.1f}")
        modes = list(creates)
        base, other = creates[modes[0]], creates[modes[-1]]
        print(f"{modes[-1]} - {modes[0]}: p50 {percentile(other, 50) - percentile(base, 50):+.1f} ms")


@contextlib.contextmanager
def start_server(args, mode, extra=()):
    """A `warren serve --network mode` of its own on a free port; yields (origin, admin key).
    `extra` are more `warren serve` arguments."""
    port = free_port()
    log = tempfile.NamedTemporaryFile(prefix="warren-serve-", suffix=".log", delete=False)
    server = subprocess.Popen([args.warren, "serve", "--data-dir", args.data_dir,
                              "--listen", f"127.0.0.1:{port}", "--network", mode, *extra],
                             stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        origin = f"http://127.0.0.1:{port}"
        key_file = os.path.join(args.data_dir, "admin.key")
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                if os.path.exists(key_file):
                    break
            except OSError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                sys.exit(f"warren serve did not come up; see {log.name}")
            time.sleep(0.1)
        yield origin, open(key_file).read().strip()
    finally:
        server.terminate()
        server.wait(timeout=30)


def measure(args, SandboxClient, mode):
    """One server in `mode`; prints its rows and returns its create samples."""
    with start_server(args, mode) as (origin, key):
        client = SandboxClient(api_endpoint=f"{origin}/api/v2/sandboxes", api_key=key)

        # Warm the server's and the SDK's connection pools.
        sb = client.create_sandbox()
        sb.run("true")
        client.delete_sandbox(sb.name)

        total, create, first = [], [], []
        for _ in range(args.n):
            t0 = time.perf_counter()
            sb = client.create_sandbox()
            t1 = time.perf_counter()
            assert sb.run("true").exit_code == 0
            t2 = time.perf_counter()
            client.delete_sandbox(sb.name)
            t3 = time.perf_counter()
            create.append((t1 - t0) * 1000)
            first.append((t2 - t1) * 1000)
            total.append((t3 - t0) * 1000)

        sb = client.create_sandbox()
        try:
            rtt = []
            for _ in range(args.runs):
                t0 = time.perf_counter()
                assert sb.run("true").exit_code == 0
                rtt.append((time.perf_counter() - t0) * 1000)
        finally:
            client.delete_sandbox(sb.name)

        print(f"langsmith SDK against warren serve --network {mode}, {os.cpu_count()} CPUs")
        print(f"{'':<42}{'p50 ms':>9}{'p99 ms':>9}{'mean ms':>9}")
        row(f"create (wait_for_ready), n={args.n}", create)
        row("first run('true')", first)
        row("create -> run('true') -> delete", total)
        row(f"run('true') on a running sandbox, n={args.runs}", rtt)
        return create


if __name__ == "__main__":
    main()

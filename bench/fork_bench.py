#!/usr/bin/env python3
"""Forks: a sandbox that holds `--gib` GiB of written data is forked `--forks` times in one
request (`POST {B}/boxes/{name}/fork`, every fork booted and ready when it answers), for
`--runs` rounds. Prints p50/p99 of the whole request and per fork, and the pool's extra disk
use per round (btrfs allocated bytes, after a sync), against copying the same data once with
`cp --reflink=never` inside the sandbox as the peer a fork replaces.

    sudo target/conformance-venv/bin/python bench/fork_bench.py [--gib 1] [--forks 10] [--runs 5]

DESIGN target (issue 15): 10 forks of a 1 GiB sandbox in under 1 s and under 10 MiB of disk.
"""
import argparse
import os
import subprocess
import time

import requests

from bench import percentile  # bench/bench.py, next to this file
from sdk_bench import add_server_args, start_server


def pool_used(data_dir):
    """Bytes allocated in the btrfs pool of the data dir."""
    subprocess.run(["sync"], check=True)
    pool = os.path.join(data_dir, "fs")
    out = subprocess.run(["btrfs", "filesystem", "usage", "-b", pool], capture_output=True, text=True)
    for line in out.stdout.splitlines():
        if line.strip().startswith("Used:"):
            return int(line.split()[-1])
    st = os.statvfs(pool)
    return (st.f_blocks - st.f_bfree) * st.f_frsize


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gib", type=int, default=1)
    ap.add_argument("--forks", type=int, default=10)
    ap.add_argument("--runs", type=int, default=5)
    add_server_args(ap)
    args = ap.parse_args()
    with start_server(args, "none") as (origin, key):
        api = f"{origin}/api/v2/sandboxes"
        h = {"X-Api-Key": key}
        parent = requests.post(f"{api}/boxes", json={"name": "fork-bench", "fs_capacity_bytes": (args.gib + 2) << 30,
                                                      "mem_bytes": 512 << 20}, headers=h, timeout=120).json()
        dp = parent["dataplane_url"]
        r = requests.post(f"{dp}/execute", json={"command": f"head -c {args.gib << 30} /dev/urandom > /root/data && sync && du -sh /root/data",
                                                 "timeout": 600}, headers=h, timeout=700)
        print("parent:", r.json().get("stdout", "").strip())
        totals, per_fork, disk = [], [], []
        for _ in range(args.runs):
            before = pool_used(args.data_dir)
            t = time.perf_counter()
            r = requests.post(f"{api}/boxes/fork-bench/fork", json={"count": args.forks, "timeout": 120}, headers=h, timeout=300)
            took = (time.perf_counter() - t) * 1000
            assert r.status_code in (200, 201), r.text
            forks = r.json()["sandboxes"]
            after = pool_used(args.data_dir)
            totals.append(took)
            per_fork.append(took / args.forks)
            disk.append((after - before) / (1 << 20))
            for f in forks:
                requests.delete(f"{api}/boxes/{f['name']}", headers=h, timeout=120)
        t = time.perf_counter()
        r = requests.post(f"{dp}/execute", json={"command": "cp --reflink=never /root/data /root/copy && sync && rm /root/copy",
                                                 "timeout": 600}, headers=h, timeout=700)
        copy_ms = (time.perf_counter() - t) * 1000
        requests.delete(f"{api}/boxes/fork-bench", headers=h, timeout=120)
    print(f"{'':<44}{'p50':>10}{'p99':>10}")
    print(f"{f'{args.forks} forks of {args.gib} GiB, one request (ms)':<44}{percentile(totals, 50):>10.1f}{percentile(totals, 99):>10.1f}")
    print(f"{'per fork, booted and ready (ms)':<44}{percentile(per_fork, 50):>10.1f}{percentile(per_fork, 99):>10.1f}")
    print(f"{'extra pool disk per request (MiB)':<44}{percentile(disk, 50):>10.1f}{percentile(disk, 99):>10.1f}")
    print(f"{'one full copy of the data inside (ms)':<44}{copy_ms:>10.1f}")
    print(f"ratio: one full copy / {args.forks} forks = {copy_ms / percentile(totals, 50):.1f}x")


if __name__ == "__main__":
    main()

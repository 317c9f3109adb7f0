#!/usr/bin/env python3
"""Cold-start benchmark: create -> first command -> destroy, side by side with peers.

Runs each contender N times (default 100) running `true` on the same root filesystem (the
default image's subvolume) and prints p50/p99 latency and the ratio to Warren. Needs root, a
built Warren (scripts/build.sh) and the default image (warren image build).

    sudo python3 bench/bench.py [-n 100] [--only warren,bwrap,podman]
"""
import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def percentile(samples, p):
    s = sorted(samples)
    k = (len(s) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def ensure_hugetlb():
    # crun on a cgroup v1 host insists on the hugetlb controller being mounted.
    path = "/sys/fs/cgroup/hugetlb"
    if os.path.ismount(path) or not os.path.isdir("/sys/fs/cgroup/memory"):
        return
    os.makedirs(path, exist_ok=True)
    subprocess.run(["mount", "-t", "cgroup", "-o", "hugetlb", "cgroup", path], check=False)


def contenders(warren, data_dir, rootfs):
    yield "warren", [warren, "--data-dir", data_dir, "run", "--", "true"]
    if shutil.which("bwrap"):
        yield "bwrap", ["bwrap", "--unshare-all", "--die-with-parent", "--ro-bind", rootfs, "/",
                        "--proc", "/proc", "--dev", "/dev", "--", "/bin/true"]
    if shutil.which("podman") and shutil.which("crun"):
        ensure_hugetlb()
        yield "podman-crun", ["podman", "--cgroup-manager=cgroupfs", "--runtime", "crun", "run",
                              "--rm", "--network", "none",
                              # Root here cannot raise rlimits (no CAP_SYS_RESOURCE), and
                              # podman's defaults are above the host's: ask for lower ones.
                              "--ulimit", "nofile=4096:4096", "--ulimit", "nproc=4096:4096",
                              "--rootfs", rootfs, "/bin/true"]


# Warren logs how long the create itself took (storage, cgroups, jail up to a listening agent).
CREATED = re.compile(rb"sandbox created.*?elapsed_us\S*?(\d+)")


def measure(cmd, n, warmup=3, env=None):
    """End-to-end wall times in ms, and the create times Warren logged (if any)."""
    for _ in range(warmup):
        subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False,
                       env=env)
    samples, creates = [], []
    for i in range(n):
        t = time.perf_counter()
        r = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False,
                           env=env)
        dt = time.perf_counter() - t
        if r.returncode != 0:
            raise RuntimeError(f"{cmd[0]} failed on run {i}: {r.stderr.decode(errors='replace')[-500:]}")
        samples.append(dt * 1000)
        m = CREATED.search(r.stderr)
        if m:
            creates.append(int(m.group(1)) / 1000)
    return samples, creates


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=100)
    ap.add_argument("--only", default="")
    ap.add_argument("--data-dir", default=os.environ.get("WARREN_DATA_DIR", "/var/lib/warren"))
    ap.add_argument("--warren", default=os.path.join(ROOT, "target/release/warren"))
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench needs root")
    image = os.path.join(args.data_dir, "fs/images/system+default@latest")
    if not os.path.isdir(image):
        sys.exit(f"no default image at {image}: run `warren image build` first")
    # The peers get a writable snapshot of the same image (podman writes /etc/mtab into it).
    rootfs = os.path.join(args.data_dir, "fs/bench-rootfs")
    if not os.path.isdir(rootfs):
        subprocess.run(["btrfs", "subvolume", "snapshot", image, rootfs], check=True,
                       stdout=subprocess.DEVNULL)
    only = set(filter(None, args.only.split(",")))
    results, create_times = {}, {}
    for name, cmd in contenders(args.warren, args.data_dir, rootfs):
        if only and name not in only:
            continue
        env = None
        if name == "warren":
            env = dict(os.environ, WARREN_LOG="warren_runtime=debug", NO_COLOR="1")
        try:
            results[name], creates = measure(cmd, args.n, env=env)
            if creates:
                create_times[name] = creates
        except RuntimeError as e:
            print(f"{name}: skipped, {e}", file=sys.stderr)
    if "warren" not in results:
        sys.exit("warren did not run")
    base = statistics.median(results["warren"])
    print(f"create -> `true` -> destroy, n={args.n} each, on {os.cpu_count()} CPUs")
    print(f"{'contender':<14}{'p50 ms':>10}{'p99 ms':>10}{'mean ms':>10}{'p50 vs warren':>16}")
    for name, s in results.items():
        p50 = percentile(s, 50)
        print(f"{name:<14}{p50:>10.1f}{percentile(s, 99):>10.1f}{statistics.mean(s):>10.1f}"
              f"{p50 / base:>15.2f}x")
    for name, c in create_times.items():
        print(f"{name}: of which create (storage, cgroups, jail, agent listening): "
              f"p50 {percentile(c, 50):.1f} ms, p99 {percentile(c, 99):.1f} ms")


if __name__ == "__main__":
    main()

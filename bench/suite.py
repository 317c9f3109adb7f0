#!/usr/bin/env python3
"""The benchmark suite: Warren (cold and from a warm pool) side by side with podman/crun,
bubblewrap and gVisor's runsc (ptrace platform) on the same root filesystem (the default
image's read-only subvolume). Measures create -> first command, `run("true")`, fork, a burst of
concurrent creates, density, file throughput and how create latency grows with the number of
live sandboxes; for the vm tier (contender `warren-vm`, when the data dir has a microVM root)
create -> first command, `run("true")` and memory per idle VM; and writes results.json, results.md (table with ratios and the DESIGN targets)
and results.png into bench/results/.

Warren is driven through the official `langsmith` SDK against a `warren serve` (network
`proxied`, the default) the suite starts on a free port; `warren run` is timed for the one-shot
row. Run it through scripts/bench.sh, which installs what is missing:

    sudo scripts/bench.sh [--quick] [--only warren,warren-vm,podman-crun,bwrap,runsc] [--lock FILE]
"""
import argparse
import concurrent.futures as cf
import contextlib
import datetime
import fcntl
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time

import requests
from tqdm import tqdm

from bench import ROOT, measure, percentile  # bench/bench.py, next to this file
from fork_bench import pool_used
from peers import PEERS, PeerError, process_table, pss, with_descendants, workdir
from sdk_bench import start_server
import report

MIB = 1 << 20
WARREN, POOLED, VM = "warren", "warren-pooled", "warren-vm"
# The runtime boots every VM under TCG (crates/warren-runtime/src/vm.rs); no KVM figure is
# claimed without a run that used it.
TCG = "TCG (no usable KVM here)"


def say(msg):
    tqdm.write(msg)


def stats(samples, **extra):
    if not samples:
        return {"na": "no samples", **extra}
    return {"p50": percentile(samples, 50), "p99": percentile(samples, 99),
            "mean": statistics.mean(samples), "n": len(samples), **extra}


def used_memory():
    """Host memory in use (MemTotal - MemAvailable), in bytes, after a short settle."""
    time.sleep(3)
    info = {}
    with open("/proc/meminfo") as f:
        for line in f:
            k, v = line.split(":")
            info[k] = int(v.split()[0]) * 1024
    return info["MemTotal"] - info["MemAvailable"]


def server_pid(origin):
    listen = origin.split("//", 1)[1].encode()
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                args = f.read().split(b"\0")
        except OSError:
            continue
        if b"serve" in args and listen in args:
            return int(pid)
    return None


def warren_pids(daemon):
    """Processes in a Warren sandbox cgroup (any data dir's) or under the daemon."""
    table = process_table()
    out = with_descendants([daemon], table) - {daemon} if daemon else set()
    for pid in table:
        try:
            with open(f"/proc/{pid}/cgroup") as f:
                if "/warren/" in f.read():
                    out.add(pid)
        except OSError:
            pass
    return out


def fd_count(pid):
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except (OSError, TypeError):
        return None


class Results:
    """metric key -> contender -> stat; saved after every step so a crash keeps what ran."""

    def __init__(self, path, meta):
        self.path = path
        self.data = {"meta": meta, "metrics": {}, "scaling": {}, "notes": []}

    def put(self, metric, contender, stat):
        self.data["metrics"].setdefault(metric, {})[contender] = stat
        self.save()

    def scaling(self, contender, live, stat):
        self.data["scaling"].setdefault(contender, {})[str(live)] = stat
        self.save()

    def note(self, text):
        say("note: " + text)
        self.data["notes"].append(text)
        self.save()

    def merge(self, ours):
        """Keeps the saved figures of the contenders this run does not measure."""
        try:
            with open(self.path) as f:
                old = json.load(f)
        except (OSError, ValueError):
            return
        for metric, by in old.get("metrics", {}).items():
            for c, stat in by.items():
                if c not in ours:
                    self.data["metrics"].setdefault(metric, {})[c] = stat
        for c, by in old.get("scaling", {}).items():
            if c not in ours:
                self.data["scaling"][c] = by
        kept = {c for by in old.get("metrics", {}).values() for c in by} - ours
        # Notes open with their contender's name and a space or colon ("warren" must not
        # claim "warren-vm: ...").
        self.data["notes"] = [n for n in old.get("notes", [])
                              if any(n.startswith((c + " ", c + ":")) for c in kept)]
        om = old.get("meta", {})
        self.data["meta"]["merged_from"] = om.get("merged_from") or om.get("date")
        # The kept figures were taken with the saved run's parameters, which the report quotes:
        # keep those of the contenders this run does not measure.
        peers = {cls.name for cls in PEERS}
        for k, v in om.get("params", {}).items():
            who = {VM} if k.startswith("vm_") else peers if k.startswith("peer_") else {WARREN}
            if not who & ours:
                self.data["meta"]["params"][k] = v

    def save(self):
        with open(self.path + ".tmp", "w") as f:
            json.dump(self.data, f, indent=1)
        os.replace(self.path + ".tmp", self.path)


@contextlib.contextmanager
def sandbox_lock(path):
    """Holds `path` (flock) while Warren makes sandboxes, if a lock file was given."""
    if not path:
        yield
        return
    with open(path, "a") as f:
        say(f"waiting for {path}")
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


# --- Warren ------------------------------------------------------------------------------------

class Warren:
    """A `warren serve` of the suite's own, with an SDK client, the admin key and its pools."""

    def __init__(self, origin, key):
        from langsmith.sandbox import SandboxClient
        self.origin, self.key = origin, key
        self.api = f"{origin}/api/v2/sandboxes"
        self.client = SandboxClient(api_endpoint=self.api, api_key=key, timeout=120)
        self.h = {"X-Api-Key": key}
        self.pid = server_pid(origin)

    def pools(self):
        """The pool list, or None when this build has no pool API."""
        r = requests.get(f"{self.api}/pools", headers=self.h, timeout=30)
        if r.status_code in (404, 405):
            return None
        r.raise_for_status()
        return r.json().get("pools", [])

    def set_pool(self, size):
        """Sizes the default image's pool (min = max = size); False without a pool API."""
        r = requests.put(f"{self.api}/pools", headers=self.h, timeout=30,
                         json={"template": None, "min_size": size, "max_size": size})
        if r.status_code in (404, 405):
            return False
        if r.status_code >= 400:
            raise RuntimeError(f"PUT pools answered {r.status_code}: {r.text[:300]}")
        return True

    def pool_ready(self):
        for p in self.pools() or []:
            if p.get("template") is None:
                return p.get("ready", 0)
        return 0

    def wait_pool(self, size, timeout=300, stall=None):
        """Waits until the pool holds `size` ready sandboxes and returns how many it holds; with
        `stall`, settles for fewer once it has not grown for that many seconds (the server's
        capacity stops it)."""
        deadline = time.monotonic() + timeout
        best, since = -1, time.monotonic()
        while (ready := self.pool_ready()) < size:
            if ready > best:
                best, since = ready, time.monotonic()
            if stall and time.monotonic() - since > stall:
                return ready
            if time.monotonic() > deadline:
                raise RuntimeError(f"pool did not reach {size} ready in {timeout} s "
                                   f"(ready: {ready})")
            time.sleep(0.05)
        return ready

    def delete(self, name):
        try:
            self.client.delete_sandbox(name)
        except Exception:  # noqa: BLE001 - gone already
            pass

    def delete_all(self):
        """Deletes every sandbox of the data dir (they outlive the daemon)."""
        for _ in range(3):
            names = [sb.name for sb in self.client.list_sandboxes()]
            if not names:
                return
            with cf.ThreadPoolExecutor(8) as ex:
                list(tqdm(ex.map(self.delete, names), total=len(names), leave=False,
                          desc="deleting sandboxes"))


@contextlib.contextmanager
def warren_server(args, extra=()):
    """Lock, server, client; every sandbox deleted and the pool emptied on the way out."""
    with sandbox_lock(args.lock), start_server(args, "proxied", extra) as (origin, key):
        w = Warren(origin, key)
        try:
            try:
                w.has_pools = w.set_pool(0)
            except RuntimeError as e:
                say(f"could not empty the pool, cold figures may include pooled creates: {e}")
                w.has_pools = True
            w.delete_all()
            yield w
        finally:
            with contextlib.suppress(Exception):
                w.set_pool(0)
            w.delete_all()


def create_first(w, n, desc, pooled=0, create_kwargs=None):
    """n cycles of create -> run('true') -> delete: create, create->first command, whole cycle."""
    create, first, total = [], [], []
    for _ in tqdm(range(n), desc=desc, leave=False):
        if pooled:
            w.wait_pool(pooled)
        t0 = time.perf_counter()
        sb = w.client.create_sandbox(**(create_kwargs or {}))
        t1 = time.perf_counter()
        assert sb.run("true").exit_code == 0
        t2 = time.perf_counter()
        w.client.delete_sandbox(sb.name)
        t3 = time.perf_counter()
        create.append((t1 - t0) * 1000)
        first.append((t2 - t0) * 1000)
        total.append((t3 - t0) * 1000)
    return create, first, total


def put_cycles(res, contender, create, first, total):
    """The figures of create -> first command -> delete cycles; the first command alone is
    create -> first command less the create, cycle by cycle."""
    res.put("create", contender, stats(create))
    res.put("create_first", contender, stats(first))
    res.put("first_run", contender, stats([f - c for f, c in zip(first, create)]))
    res.put("cycle", contender, stats(total))


def settle_disk(args):
    """Waits until btrfs has cleaned up the sandboxes deleted so far (`btrfs subvolume sync`),
    so one measurement does not time the previous one's cleanup: dropping a deleted
    subvolume's tree, quota accounting included, takes the kernel's cleaner seconds after a
    fork test's gigabyte."""
    fs = os.path.join(args.data_dir, "fs")
    try:
        subprocess.run(["btrfs", "subvolume", "sync", fs], check=False, timeout=300,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as e:
        say(f"could not wait for btrfs to clean up deleted sandboxes: {e}")


def paced_first_command(res, w, n):
    """Issue 16's bar: create -> first `run("true")` from a pool within 2 ms of `run("true")`
    on an already running sandbox. The two are timed here under the same conditions, alternating
    in one loop: the pool full, nothing being deleted, and the machine idle for the same 0.3 s
    before each (as between an agent's turns). A command after idle pays this host's wake-up
    cost on every process it crosses, pooled sandbox or not, so a pooled create -> first
    command against `run("true")` in a back-to-back loop compares unlike things; both gaps are
    reported. Also times each claimed sandbox's second command, right after its first."""
    w.set_pool(3)
    w.wait_pool(3)
    running = w.client.create_sandbox()
    sdk_true(running)
    creates, firsts, runs, seconds, claimed = [], [], [], [], []
    try:
        for i in tqdm(range(2 * n), desc="warren pooled vs running, paced", leave=False):
            w.wait_pool(3)
            time.sleep(0.3)
            t0 = time.perf_counter()
            if i % 2:
                sdk_true(running)
                runs.append((time.perf_counter() - t0) * 1000)
                continue
            sb = w.client.create_sandbox()
            claimed.append(sb.name)
            creates.append((time.perf_counter() - t0) * 1000)
            sdk_true(sb)
            t1 = time.perf_counter()
            firsts.append((t1 - t0) * 1000)
            sdk_true(sb)
            seconds.append((time.perf_counter() - t1) * 1000)
    finally:
        for name in claimed + [running.name]:
            w.delete(name)
    res.put("paced_create_first", POOLED, stats(firsts))
    res.put("paced_run_true", WARREN, stats(runs))
    f, r = percentile(firsts, 50), percentile(runs, 50)
    res.put("pool_gap_paced", POOLED, {"value": f - r})
    steady = res.data["metrics"].get("run_true", {}).get(WARREN, {}).get("p50")
    if steady is not None:
        res.put("pool_gap_steady", POOLED, {"value": f - steady})
    def p50(xs):
        return percentile(xs, 50)

    res.note(f"warren pooled, paced ({n} claims and {n} commands on a running sandbox, each "
             f"after 0.3 s of idle with the pool full and nothing being deleted), p50: create "
             f"{p50(creates):.2f} ms, then the claimed sandbox's first `run(\"true\")` "
             f"{p50([a - b for a, b in zip(firsts, creates)]):.2f} ms and its second right after "
             f"{p50(seconds):.2f} ms; a running sandbox's `run(\"true\")` after the same idle "
             f"{r:.2f} ms")


def timed_ms(call, n, desc):
    """n timed calls of `call`, in ms."""
    samples = []
    for _ in tqdm(range(n), desc=desc, leave=False):
        t0 = time.perf_counter()
        call()
        samples.append((time.perf_counter() - t0) * 1000)
    return samples


def sdk_true(sb):
    assert sb.run("true").exit_code == 0


def warren_oneshot(args, res):
    with sandbox_lock(args.lock):
        cmd = [args.warren, "--data-dir", args.data_dir, "run", "--", "true"]
        samples = one_shot_samples(cmd, args.n, "warren run -- true")
    res.put("oneshot", WARREN, stats(samples))


def one_shot_samples(cmd, n, desc):
    measure(cmd, 0, warmup=3)
    samples = []
    for _ in tqdm(range(n), desc=desc, leave=False):
        samples.extend(measure(cmd, 1, warmup=0)[0])
    return samples


def warm(w):
    """One create -> run -> delete, to warm the server's and the SDK's connection pools."""
    sb = w.client.create_sandbox()
    sb.run("true")
    w.client.delete_sandbox(sb.name)


def warren_core(args, res):
    """Cold creates, run('true'), file throughput, forks, then the same creates from a pool."""
    with warren_server(args) as w:
        warm(w)
        settle_disk(args)

        put_cycles(res, WARREN, *create_first(w, args.n, "warren cold create"))

        sb = w.client.create_sandbox()
        res.put("run_true", WARREN, stats(timed_ms(lambda: sdk_true(sb), args.runs,
                                                   "warren run('true')")))

        data = os.urandom(args.file_mib * MIB)
        up, down = [], []
        for i in tqdm(range(args.file_reps), desc="warren files", leave=False):
            t0 = time.perf_counter()
            sb.write(f"/tmp/bench-{i}", data)
            t1 = time.perf_counter()
            got = sb.read(f"/tmp/bench-{i}")
            t2 = time.perf_counter()
            assert len(got) == len(data)
            sb.run(f"rm -f /tmp/bench-{i}")
            up.append(args.file_mib / (t1 - t0))
            down.append(args.file_mib / (t2 - t1))
        res.put("upload", WARREN, stats(up))
        res.put("download", WARREN, stats(down))
        w.client.delete_sandbox(sb.name)

        warren_fork(args, w, res)
        settle_disk(args)

        if not w.has_pools:
            res.note("this build has no pool API (PUT /api/v2/sandboxes/pools answered 404): "
                     "no warm-pool figures; the cold ones are what every create costs")
            for m in ("create", "create_first", "cycle"):
                res.put(m, POOLED, {"na": "no pool API in this build"})
            return
        w.set_pool(args.pool)
        w.wait_pool(args.pool)
        put_cycles(res, POOLED, *create_first(w, args.n, "warren pooled create", pooled=args.pool))
        paced_first_command(res, w, max(10, args.n // 3))


def warren_fork(args, w, res):
    h = w.h
    parent = w.client.create_sandbox(fs_capacity_bytes=(args.fork_mib * MIB) + (2 << 30),
                                     mem_bytes=512 * MIB)
    try:
        r = parent.run(f"head -c {args.fork_mib * MIB} /dev/urandom > /root/data && sync",
                       timeout=600)
        assert r.exit_code == 0, r.stderr
        one = []
        for _ in tqdm(range(args.fork_n), desc="warren fork x1", leave=False):
            t = time.perf_counter()
            r = requests.post(f"{w.api}/boxes/{parent.name}/fork", json={"count": 1, "timeout": 120},
                              headers=h, timeout=300)
            one.append((time.perf_counter() - t) * 1000)
            if r.status_code not in (200, 201):
                raise RuntimeError(f"fork answered {r.status_code}: {r.text[:300]}")
            for f in r.json()["sandboxes"]:
                w.delete(f["name"])
        res.put("fork", WARREN, stats(one))
        tens, disk = [], []
        for _ in tqdm(range(args.fork_runs), desc="warren fork x10", leave=False):
            before = pool_used(args.data_dir)
            t = time.perf_counter()
            r = requests.post(f"{w.api}/boxes/{parent.name}/fork", json={"count": 10, "timeout": 120},
                              headers=h, timeout=300)
            tens.append((time.perf_counter() - t) * 1000)
            if r.status_code not in (200, 201):
                raise RuntimeError(f"fork answered {r.status_code}: {r.text[:300]}")
            disk.append((pool_used(args.data_dir) - before) / MIB / 10)
            for f in r.json()["sandboxes"]:
                w.delete(f["name"])
        res.put("fork10", WARREN, stats(tens))
        res.put("fork_disk", WARREN, stats(disk))
    finally:
        w.delete(parent.name)


def burst(start, count, desc):
    """`count` concurrent starts; wall time to all ready, per-start latencies, errors, handles."""
    barrier = threading.Barrier(count)
    lat, errors, handles, first_error = [], [0], [], []
    lock = threading.Lock()

    def one():
        barrier.wait()
        t = time.perf_counter()
        try:
            h = start()
        except Exception as e:  # noqa: BLE001 - counted
            with lock:
                errors[0] += 1
                first_error.append(str(e)[:300])
            return
        with lock:
            lat.append((time.perf_counter() - t) * 1000)
            handles.append(h)

    threads = [threading.Thread(target=one) for _ in range(count)]
    for t in threads:
        t.start()
    t0 = time.perf_counter()
    bar = tqdm(total=count, desc=desc, leave=False)
    for t in threads:
        t.join()
        bar.update()
    bar.close()
    wall = (time.perf_counter() - t0) * 1000
    if first_error:
        say(f"{desc}: {errors[0]} errors, first: {first_error[0]}")
    return wall, lat, errors[0], handles


def put_burst(res, contender, wall, lat, errors, count):
    res.put("burst_wall", contender, {"value": wall, "n": count})
    res.put("burst_each", contender, stats(lat))
    res.put("burst_errors", contender, {"value": errors, "n": count})


def warren_burst(args, res):
    """Cold: `burst` concurrent creates of `burst_mib` sandboxes (100 of the default 1 GiB
    would pass the server's committed-memory quota, host memory x 4, on a 24 GiB host). Pooled:
    as many default-shape creates as the pool could hold, all claimed at once."""
    with warren_server(args) as w:
        def cold():
            return w.client.create_sandbox(mem_bytes=args.burst_mib * MIB, timeout=120).name
        wall, lat, errors, names = burst(cold, args.burst, f"warren burst of {args.burst}")
        put_burst(res, WARREN, wall, lat, errors, args.burst)
        w.delete_all()
        if not w.has_pools:
            return
        try:
            w.set_pool(args.burst)
            held = w.wait_pool(args.burst, timeout=300, stall=20)
        except RuntimeError as e:
            res.note(f"warren pooled: no pooled burst: {e}")
            return
        if held < args.burst:
            res.note(f"warren pooled: the pool held {held} of the {args.burst} asked (the "
                     f"server's capacity): the pooled burst is {held} creates")
        if held:
            def pooled():
                return w.client.create_sandbox(timeout=120).name
            wall, lat, errors, names = burst(pooled, held, "warren pooled burst")
            put_burst(res, POOLED, wall, lat, errors, held)


def warren_scale(args, res):
    """Fills the host with idle sandboxes level by level; at each level times creates; at the
    top measures host memory and daemon fds per idle sandbox."""
    # Small idle sandboxes keep 1,000 of them under the server's committed-memory quota (host
    # memory x 4).
    with warren_server(args) as w:
        warm(w)
        idle = []
        base_mem = used_memory()
        base_fds = fd_count(w.pid)
        base_pids = warren_pids(w.pid)
        base_daemon = pss([w.pid])
        failed = None

        def make(_):
            return w.client.create_sandbox(mem_bytes=args.idle_mib * MIB, idle_ttl_seconds=0,
                                           timeout=120).name

        for level in sorted(args.levels):
            want = level - len(idle)
            if want > 0 and not failed:
                bar = tqdm(total=want, desc=f"warren: filling to {level} idle", leave=False)
                with cf.ThreadPoolExecutor(4) as ex:
                    futs = [ex.submit(make, i) for i in range(want)]
                    for f in cf.as_completed(futs):
                        try:
                            idle.append(f.result())
                        except Exception as e:  # noqa: BLE001 - density found its ceiling
                            failed = failed or str(e)[:300]
                        bar.update()
                bar.close()
            if failed:
                res.note(f"warren stopped at {len(idle)} idle sandboxes: {failed}")
            if len(idle) < level:
                break
            _, first, _ = create_first(w, args.scale_n, f"warren create with {level} live")
            res.scaling(WARREN, level, stats(first))
            if w.has_pools:
                # The same with a warm pool: a claim's cost does not depend on what else runs.
                w.set_pool(1)
                _, first, _ = create_first(w, args.scale_n, f"warren pooled with {level} live",
                                           pooled=1)
                w.set_pool(0)
                res.scaling(POOLED, level, stats(first))
        held = len(idle)
        if held:
            mem = used_memory()
            fds = fd_count(w.pid)
            res.put("density_held", WARREN, {"value": held, "n": args.density, "capped": not failed})
            res.put("density_mem", WARREN, {"value": (mem - base_mem) / held / MIB, "n": held})
            procs = pss(warren_pids(w.pid) - base_pids) + pss([w.pid]) - base_daemon
            res.put("density_pss", WARREN, {"value": procs / held / MIB, "n": held})
            if fds is not None and base_fds is not None:
                res.put("density_fds", WARREN, {"value": (fds - base_fds) / held, "n": held})


# --- Warren, vm tier ---------------------------------------------------------------------------

VM_FILES = ("usr/bin/qemu-system-x86_64", "usr/libexec/virtiofsd", "boot/vmlinuz",
            "boot/initramfs.base.gz")


def vm_unavailable(args):
    """Why the data dir offers no vm tier (what `warren serve` checks), or None."""
    root = os.path.join(args.data_dir, "vm/root")
    for f in VM_FILES:
        if not os.path.isfile(os.path.join(root, f)):
            return (f"no microVM root in {args.data_dir} ({f} is missing; "
                    f"`scripts/vm/setup.sh {args.data_dir}` makes it)")
    return None


def doctor_kvm(args):
    """`warren doctor`'s KVM line: it boots a guest under `-accel kvm` and says what happened."""
    try:
        out = subprocess.run([args.warren, "--data-dir", args.data_dir, "doctor"],
                             capture_output=True, text=True, timeout=120).stdout
    except (OSError, subprocess.SubprocessError) as e:
        return f"doctor did not run: {e}"
    for line in out.splitlines():
        if "KVM acceleration" in line:
            return " ".join(line.split())
    return "doctor has no KVM check in this build"


def memory_cgroups(pids):
    """The memory cgroups (v1 or v2) the processes are in, as paths under /sys/fs/cgroup."""
    out = set()
    for pid in pids:
        try:
            with open(f"/proc/{pid}/cgroup") as f:
                for line in f:
                    _, ctrls, path = line.rstrip("\n").split(":", 2)
                    if "memory" in ctrls.split(","):
                        out.add(os.path.join("/sys/fs/cgroup/memory", path.lstrip("/")))
                    elif ctrls == "" and os.path.exists("/sys/fs/cgroup/cgroup.controllers"):
                        out.add(os.path.join("/sys/fs/cgroup", path.lstrip("/")))
        except (OSError, ValueError):
            pass
    return out


def cgroup_charged(groups):
    """Memory charged to the cgroups (v1 memory.usage_in_bytes, v2 memory.current), bytes."""
    total = 0
    for g in groups:
        for name in ("memory.usage_in_bytes", "memory.current"):
            try:
                with open(os.path.join(g, name)) as f:
                    total += int(f.read())
                break
            except (OSError, ValueError):
                continue
    return total


def warren_vm(args, res):
    """The vm tier through the SDK, against a server whose creates default to it (the SDK has no
    tier option) and that keeps no pool: create -> first command, `run("true")` on a running
    VM, then host memory, PSS and cgroup charge per idle VM."""
    why = vm_unavailable(args)
    if why:
        res.note(f"{VM} skipped: {why}")
        return
    res.note(f"{VM}: every vm-tier figure is QEMU under {TCG}: the runtime always boots with "
             f"`-accel tcg`; doctor here says: {doctor_kvm(args)}")
    with warren_server(args, ("--default-tier", "vm", "--pool-max", "0")) as w:
        warm(w)
        put_cycles(res, VM, *create_first(w, args.vm_n, "warren vm create"))

        sb = w.client.create_sandbox()
        res.put("run_true", VM, stats(timed_ms(lambda: sdk_true(sb), args.vm_runs,
                                               "warren vm run('true')")))
        w.client.delete_sandbox(sb.name)

        base_mem = used_memory()
        base_pids = warren_pids(w.pid)
        base_daemon = pss([w.pid])
        idle, failed = [], None
        # Two at a time: each boot keeps a CPU busy for seconds under TCG.
        with cf.ThreadPoolExecutor(2) as ex:
            futs = [ex.submit(lambda: w.client.create_sandbox(
                mem_bytes=args.vm_mib * MIB, idle_ttl_seconds=0, timeout=300).name)
                for _ in range(args.vm_density)]
            for f in tqdm(cf.as_completed(futs), total=len(futs), leave=False,
                          desc=f"warren vm: {args.vm_density} idle"):
                try:
                    idle.append(f.result())
                except Exception as e:  # noqa: BLE001 - density found its ceiling
                    failed = failed or str(e)[:300]
        if failed:
            res.note(f"{VM} held {len(idle)} of {args.vm_density} idle VMs: {failed}")
        if not idle:
            return
        held = len(idle)
        # Let the guests finish booting their userland before the memory is read.
        time.sleep(10)
        mem = used_memory()
        pids = warren_pids(w.pid) - base_pids
        procs = pss(pids) + pss([w.pid]) - base_daemon
        res.put("density_held", VM, {"value": held, "n": args.vm_density, "capped": not failed})
        res.put("density_mem", VM, {"value": (mem - base_mem) / held / MIB, "n": held})
        res.put("density_pss", VM, {"value": procs / held / MIB, "n": held})
        res.put("density_cgroup", VM, {"value": cgroup_charged(memory_cgroups(pids)) / held / MIB,
                                       "n": held})


# --- Peers -------------------------------------------------------------------------------------

def peer_all(args, res, peer):
    """Every metric a peer has, in one go; it is cleaned up on the way out."""
    name = peer.name
    try:
        res.put("oneshot", name, stats(one_shot_samples(peer.oneshot(), args.peer_n,
                                                         f"{name} one-shot")))
        create, first, total = [], [], []
        for _ in tqdm(range(args.peer_n), desc=f"{name} create -> first command", leave=False):
            t0 = time.perf_counter()
            h = peer.start()
            t1 = time.perf_counter()
            peer.exec(h, ["true"])
            t2 = time.perf_counter()
            peer.remove(h)
            t3 = time.perf_counter()
            create.append((t1 - t0) * 1000)
            first.append((t2 - t0) * 1000)
            total.append((t3 - t0) * 1000)
        put_cycles(res, name, create, first, total)

        h = peer.start()
        res.put("run_true", name, stats(timed_ms(lambda: peer.exec(h, ["true"]), args.peer_runs,
                                                 f"{name} exec true")))
        data = os.urandom(args.file_mib * MIB)
        up, down = [], []
        for i in tqdm(range(args.file_reps), desc=f"{name} files", leave=False):
            t0 = time.perf_counter()
            peer.exec(h, ["sh", "-c", f"cat > /tmp/bench-{i}"], input=data)
            t1 = time.perf_counter()
            got = peer.exec(h, ["cat", f"/tmp/bench-{i}"], capture=True)
            t2 = time.perf_counter()
            assert len(got) == len(data)
            peer.exec(h, ["rm", "-f", f"/tmp/bench-{i}"])
            up.append(args.file_mib / (t1 - t0))
            down.append(args.file_mib / (t2 - t1))
        res.put("upload", name, stats(up))
        res.put("download", name, stats(down))
        peer.remove(h)
        for m in ("fork", "fork10", "fork_disk"):
            res.put(m, name, {"na": "no fork"})

        wall, lat, errors, handles = burst(peer.start, args.burst, f"{name} burst of {args.burst}")
        put_burst(res, name, wall, lat, errors, args.burst)
        with cf.ThreadPoolExecutor(8) as ex:
            list(ex.map(peer.remove, handles))

        idle = []
        base_mem = used_memory()
        failed = None
        for level in sorted(args.peer_levels):
            want = level - len(idle)
            for _ in tqdm(range(max(want, 0)), desc=f"{name}: filling to {level} idle", leave=False):
                try:
                    idle.append(peer.start())
                except PeerError as e:
                    failed = str(e)
                    break
            if failed:
                res.note(f"{name} stopped at {len(idle)} idle sandboxes: {failed}")
                break
            first = []
            for _ in tqdm(range(args.scale_n), desc=f"{name} create with {level} live", leave=False):
                t0 = time.perf_counter()
                h = peer.start()
                peer.exec(h, ["true"])
                first.append((time.perf_counter() - t0) * 1000)
                peer.remove(h)
            res.scaling(name, level, stats(first))
        if idle:
            mem = used_memory()
            res.put("density_pss", name, {"value": pss(peer.pids()) / len(idle) / MIB,
                                          "n": len(idle)})
            res.put("density_held", name, {"value": len(idle), "n": args.peer_density,
                                           "capped": not failed})
            res.put("density_mem", name, {"value": (mem - base_mem) / len(idle) / MIB,
                                          "n": len(idle)})
        res.put("density_fds", name, {"na": "no daemon"})
    finally:
        peer.cleanup()


# --- Main --------------------------------------------------------------------------------------

def version(cmd):
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout
        return out.strip().splitlines()[0] if out.strip() else "?"
    except (OSError, subprocess.SubprocessError):
        return "?"


def meta(args, rootfs):
    mem = 0
    with open("/proc/meminfo") as f:
        mem = int(f.readline().split()[1]) * 1024
    rev = version(["git", "-C", ROOT, "describe", "--always", "--dirty"])
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "host": {"kernel": platform.release(), "cpus": os.cpu_count(),
                 "memory_gib": round(mem / (1 << 30), 1),
                 "cgroup": "v2" if os.path.exists("/sys/fs/cgroup/cgroup.controllers") else "v1"},
        "warren": rev,
        "peers": {"podman": version(["podman", "--version"]), "crun": version(["crun", "--version"]),
                  "bwrap": version(["bwrap", "--version"]), "runsc": version(["runsc", "--version"])},
        "rootfs": "the default image's read-only subvolume (system/default:latest)",
        "mode": "quick" if args.quick else "full",
        "params": {k: v for k, v in vars(args).items() if k not in ("warren", "data_dir", "lock", "out")},
    }


def parse():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small samples, scaling to 100 only: minutes")
    ap.add_argument("--only", default="",
                    help="contenders, comma-separated: warren,warren-vm,podman-crun,bwrap,runsc")
    ap.add_argument("--data-dir", default=os.environ.get("WARREN_DATA_DIR", "/var/lib/warren"))
    ap.add_argument("--warren", default=os.path.join(ROOT, "target/release/warren"))
    ap.add_argument("--out", default=os.path.join(ROOT, "bench/results"))
    ap.add_argument("--lock", default=os.environ.get("WARREN_BENCH_LOCK"),
                    help="flock this file while Warren makes sandboxes (a host shared with other runs)")
    ap.add_argument("--merge", action="store_true",
                    help="keep the other contenders' figures from the results.json already in --out")
    ap.add_argument("-n", type=int, help="create samples per contender")
    ap.add_argument("--runs", type=int, help="run('true') samples")
    ap.add_argument("--peer-n", type=int)
    ap.add_argument("--peer-runs", type=int)
    ap.add_argument("--burst", type=int, help="concurrent creates (default 100)")
    ap.add_argument("--burst-mib", type=int, default=512, help="memory limit of each cold burst create")
    ap.add_argument("--density", type=int, help="most idle Warren sandboxes (default 1000)")
    ap.add_argument("--peer-density", type=int, help="most idle peer sandboxes (default 100)")
    ap.add_argument("--levels", help="live sandboxes to time Warren creates at (default 0,100,500,1000)")
    ap.add_argument("--scale-n", type=int, help="create samples at each level")
    ap.add_argument("--file-mib", type=int)
    ap.add_argument("--fork-mib", type=int, help="data the forked sandbox holds (default 1024)")
    ap.add_argument("--idle-mib", type=int, default=64, help="memory limit of each idle Warren sandbox")
    ap.add_argument("--pool", type=int, default=4, help="warm pool size for the pooled creates")
    ap.add_argument("--vm-n", type=int, help="vm-tier create samples (each boots a VM)")
    ap.add_argument("--vm-runs", type=int, help="run('true') samples on a running VM")
    ap.add_argument("--vm-density", type=int, help="idle VMs held for the memory figures")
    ap.add_argument("--vm-mib", type=int, default=256, help="memory of each idle VM")
    args = ap.parse_args()
    full = dict(n=100, runs=300, peer_n=50, peer_runs=200, burst=100, density=1000, peer_density=100,
                levels="0,100,500,1000", scale_n=30, file_mib=64, file_reps=3, fork_mib=1024,
                fork_n=20, fork_runs=5, vm_n=10, vm_runs=300, vm_density=10)
    quick = dict(n=20, runs=50, peer_n=10, peer_runs=30, burst=25, density=100, peer_density=20,
                 levels="0,100", scale_n=10, file_mib=16, file_reps=2, fork_mib=256, fork_n=5,
                 fork_runs=2, vm_n=5, vm_runs=50, vm_density=5)
    for k, v in (quick if args.quick else full).items():
        if getattr(args, k, None) is None:
            setattr(args, k, v)
    args.levels = sorted({int(x) for x in args.levels.split(",")} | {0})
    args.levels = [x for x in args.levels if x <= args.density] or [0]
    if args.density not in args.levels:
        args.levels.append(args.density)
    args.peer_levels = sorted({x for x in args.levels if x < args.peer_density} | {args.peer_density})
    return args


class Stopped(SystemExit):
    """SIGTERM: stop, cleaning up on the way out."""


def stop(signum, _frame):
    raise Stopped(128 + signum)


def main():
    args = parse()
    signal.signal(signal.SIGTERM, stop)
    if os.geteuid() != 0:
        sys.exit("the suite needs root")
    for var in [v for v in os.environ if v.startswith(("LANGSMITH_", "LANGCHAIN_"))]:
        del os.environ[var]
    os.environ["LANGSMITH_TRACING"] = "false"
    rootfs = os.path.join(args.data_dir, "fs/images/system+default@latest")
    if not os.path.isdir(rootfs):
        sys.exit(f"no default image at {rootfs}: run `warren --data-dir {args.data_dir} image build`")
    os.makedirs(args.out, exist_ok=True)
    only = set(filter(None, args.only.split(",")))
    res = Results(os.path.join(args.out, "results.json"), meta(args, rootfs))
    work = workdir()
    peers = [cls(rootfs, work) for cls in PEERS if not only or cls.name in only]
    if args.merge:
        ours = {p.name for p in peers} | ({WARREN, POOLED} if not only or WARREN in only else set())
        ours |= {VM} if not only or VM in only else set()
        res.merge(ours)
    # Peers first: they need no lock, so a busy shared host's lock is waited for last.
    steps = [(f"{p.name}: everything", lambda a, r, p=p: peer_run(a, r, p)) for p in peers]
    if not only or WARREN in only:
        steps += [("warren: warren run one-shot", warren_oneshot),
                  ("warren: creates, run, files, forks, pool", warren_core),
                  (f"warren: burst of {args.burst}", warren_burst),
                  (f"warren: {args.density} idle, creates at {args.levels}", warren_scale)]
    if not only or VM in only:
        steps += [(f"{VM}: creates, run, {args.vm_density} idle VMs", warren_vm)]
    try:
        with tqdm(total=len(steps), desc="bench", unit="step") as bar:
            for desc, fn in steps:
                bar.set_postfix_str(desc)
                say(f"== {desc}")
                t = time.monotonic()
                try:
                    fn(args, res)
                except (Exception, SystemExit) as e:  # noqa: BLE001 - a step fails, the rest run
                    if isinstance(e, Stopped):
                        raise
                    res.note(f"{desc} failed: {type(e).__name__}: {str(e)[:400]}")
                say(f"   {desc}: {time.monotonic() - t:.0f} s")
                bar.update()
    finally:
        for p in peers:
            p.cleanup()
        shutil.rmtree(work, ignore_errors=True)
    md, png = report.write(res.data, args.out)
    print(open(md).read())
    print(f"wrote {res.path}, {md}, {png}")


def peer_run(args, res, peer):
    why = peer.available()
    if why:
        res.note(f"{peer.name} skipped: {why}")
        return
    peer_all(args, res, peer)


if __name__ == "__main__":
    main()

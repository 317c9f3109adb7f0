"""The peers Warren is measured against, on the same root filesystem: podman (crun), bubblewrap
and gVisor's runsc. Each peer can run a one-shot command, start a long-lived sandbox (ready when
`start` returns), run a command in it, and remove it.

Used by bench/suite.py; needs root.
"""
import concurrent.futures
import json
import os
import shutil
import signal
import subprocess
import tempfile
import uuid

from bench import ensure_hugetlb

DEVNULL = subprocess.DEVNULL


class PeerError(RuntimeError):
    pass


def process_table():
    """pid -> (ppid, argv) of every process."""
    table = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                ppid = int(f.read().rsplit(b")", 1)[1].split()[1])
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        table[int(pid)] = (ppid, argv)
    return table


def with_descendants(roots, table):
    children = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    out, todo = set(), list(roots)
    while todo:
        pid = todo.pop()
        if pid not in out:
            out.add(pid)
            todo.extend(children.get(pid, []))
    return out


def pss(pids):
    """Sum of the processes' proportional set sizes, in bytes (kernel memory is not in it)."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1]) * 1024
                        break
        except OSError:
            pass
    return total


def _run(cmd, input=None, capture=False, timeout=120):
    # stderr goes to a file, not a pipe: a detached sandbox may keep it open.
    with tempfile.TemporaryFile() as err:
        r = subprocess.run(cmd, input=input, stdout=subprocess.PIPE if capture else DEVNULL,
                           stderr=err, timeout=timeout, check=False)
        if r.returncode != 0:
            err.seek(0)
            raise PeerError(f"{' '.join(cmd[:4])}... exited {r.returncode}: "
                            f"{err.read().decode(errors='replace').strip()[-400:]}")
    return r.stdout


class Peer:
    name = "?"
    label = "?"

    def __init__(self, rootfs, workdir):
        self.rootfs = rootfs
        self.workdir = workdir
        self.live = set()

    def available(self):
        """None when the peer can run here, else why not."""
        return None

    def oneshot(self):
        """argv of a one-shot create -> `true` -> destroy."""
        raise NotImplementedError

    def start(self):
        """Starts an idle sandbox; returns its handle once it can run commands."""
        raise NotImplementedError

    def exec(self, h, argv, input=None, capture=False):
        raise NotImplementedError

    def remove(self, h):
        raise NotImplementedError

    def pids(self):
        """Host processes of the live sandboxes, supervisors included."""
        return set()

    def cleanup(self):
        def remove(h):
            try:
                self.remove(h)
            except Exception:  # noqa: BLE001 - gone already
                pass
        with concurrent.futures.ThreadPoolExecutor(8) as ex:
            list(ex.map(remove, list(self.live)))


class Podman(Peer):
    name = "podman-crun"
    label = "podman/crun"

    def __init__(self, rootfs, workdir):
        super().__init__(rootfs, workdir)
        # Each container gets an overlay over the shared image (`:O`), as Warren gives each
        # sandbox a snapshot of it.
        self.base = ["podman", "--cgroup-manager=cgroupfs", "--runtime", "crun"]
        # Root here cannot raise rlimits (no CAP_SYS_RESOURCE), and podman's defaults are above
        # the host's: ask for lower ones.
        self.opts = ["--network", "none", "--ulimit", "nofile=4096:4096",
                     "--ulimit", "nproc=4096:4096", "--label", "warren-bench=1",
                     "--rootfs", rootfs + ":O"]

    def available(self):
        if not (shutil.which("podman") and shutil.which("crun")):
            return "podman or crun not installed"
        ensure_hugetlb()
        return None

    def oneshot(self):
        return self.base + ["run", "--rm"] + self.opts + ["/bin/true"]

    def start(self):
        name = "wbench-" + uuid.uuid4().hex[:10]
        self.live.add(name)
        _run(self.base + ["run", "-d", "--name", name] + self.opts + ["sleep", "infinity"])
        return name

    def exec(self, h, argv, input=None, capture=False):
        return _run(self.base + ["exec"] + (["-i"] if input is not None else []) + [h] + argv,
                    input=input, capture=capture)

    def remove(self, h):
        _run(self.base + ["rm", "-f", "-t", "0", h])
        self.live.discard(h)

    def pids(self):
        # Each container's conmon (its argv names the container) and what runs under it.
        table = process_table()
        names = {n.encode() for n in self.live}
        roots = [pid for pid, (_, argv) in table.items()
                 if argv and argv[0].endswith(b"conmon") and names & set(argv)]
        return with_descendants(roots, table)

    def cleanup(self):
        super().cleanup()
        subprocess.run(self.base + ["rm", "-f", "-t", "0", "--filter", "label=warren-bench=1"],
                       stdout=DEVNULL, stderr=DEVNULL, check=False)
        out = subprocess.run(self.base + ["ps", "-aq", "--filter", "label=warren-bench=1"],
                             capture_output=True, text=True, check=False).stdout.split()
        if out:
            subprocess.run(self.base + ["rm", "-f", "-t", "0"] + out, stdout=DEVNULL,
                           stderr=DEVNULL, check=False)


class Bwrap(Peer):
    name = "bwrap"
    label = "bubblewrap"

    def available(self):
        if not shutil.which("bwrap"):
            return "bwrap not installed"
        if not shutil.which("nsenter"):
            return "nsenter not installed"
        return None

    def argv(self, cmd, info_fd=None):
        info = ["--info-fd", str(info_fd)] if info_fd is not None else []
        return (["bwrap", "--unshare-all", "--die-with-parent", "--ro-bind", self.rootfs, "/",
                 "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"] + info + ["--"] + cmd)

    def oneshot(self):
        return self.argv(["/bin/true"])

    def start(self):
        r, w = os.pipe()
        p = subprocess.Popen(self.argv(["/bin/sh", "-c", "echo ready; exec sleep infinity"], w),
                             stdout=subprocess.PIPE, stderr=DEVNULL, pass_fds=(w,),
                             start_new_session=True)
        os.close(w)
        with os.fdopen(r) as f:
            info = f.read()
        line = p.stdout.readline()
        if line.strip() != b"ready":
            p.kill()
            p.wait()
            raise PeerError(f"bwrap did not start: {info!r}")
        p.child = json.loads(info)["child-pid"]
        self.live.add(p)
        return p

    def exec(self, h, argv, input=None, capture=False):
        # The nearest a plain bwrap sandbox has to an exec: enter all its namespaces.
        return _run(["nsenter", "-t", str(h.child), "-a", "-r", "-w"] + argv, input=input,
                    capture=capture)

    def remove(self, h):
        try:
            os.killpg(h.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        h.wait()
        h.stdout.close()
        self.live.discard(h)

    def pids(self):
        return with_descendants([h.pid for h in self.live], process_table())


class Runsc(Peer):
    name = "runsc"
    label = "gVisor runsc (ptrace)"

    def __init__(self, rootfs, workdir):
        super().__init__(rootfs, workdir)
        self.state = os.path.join(workdir, "runsc-state")
        self.base = ["runsc", "--root", self.state, "--platform=ptrace", "--network=none",
                     "--ignore-cgroups"]
        self.bundles = os.path.join(workdir, "runsc-bundles")
        self.count = 0

    def available(self):
        if not shutil.which("runsc"):
            return "runsc not installed"
        try:
            h = self.start()
            self.exec(h, ["/bin/true"])
            self.remove(h)
        except Exception as e:  # noqa: BLE001 - any failure means "does not run here"
            self.cleanup()
            return f"runsc fails here: {e}"
        return None

    def bundle(self, args):
        self.count += 1
        d = os.path.join(self.bundles, str(self.count))
        os.makedirs(d, exist_ok=True)
        spec = {
            "ociVersion": "1.0.2",
            "process": {"terminal": False, "user": {"uid": 0, "gid": 0}, "args": args,
                        "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
                        "cwd": "/"},
            "root": {"path": self.rootfs, "readonly": True},
            "hostname": "runsc",
            "mounts": [
                {"destination": "/proc", "type": "proc", "source": "proc"},
                {"destination": "/dev", "type": "tmpfs", "source": "tmpfs"},
                {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs"},
            ],
            "linux": {"namespaces": [{"type": t} for t in
                                     ("pid", "network", "ipc", "uts", "mount")]},
        }
        with open(os.path.join(d, "config.json"), "w") as f:
            json.dump(spec, f)
        return d

    def oneshot(self):
        # `runsc run` (no -detach) removes the container when its process exits.
        return self.base + ["run", "--bundle", self.bundle(["/bin/true"]),
                            "wbench-" + uuid.uuid4().hex[:10]]

    def start(self):
        name = "wbench-" + uuid.uuid4().hex[:10]
        self.live.add(name)
        _run(self.base + ["run", "--detach", "--bundle", self.bundle(["sleep", "infinity"]), name])
        return name

    def exec(self, h, argv, input=None, capture=False):
        return _run(self.base + ["exec", h] + argv, input=input, capture=capture)

    def remove(self, h):
        # `delete --force` alone waits ~2 s for the process to heed SIGTERM.
        subprocess.run(self.base + ["kill", h, "KILL"], stdout=DEVNULL, stderr=DEVNULL, check=False)
        _run(self.base + ["delete", "--force", h])
        self.live.discard(h)

    def pids(self):
        # runsc's sandbox and gofer processes carry the state dir in their argv; the ptrace
        # stubs run under them.
        table = process_table()
        state = self.state.encode()
        roots = [pid for pid, (_, argv) in table.items()
                 if any(a.startswith(b"--root") and state in a for a in argv) or state in argv]
        return with_descendants(roots, table)

    def cleanup(self):
        super().cleanup()
        if os.path.isdir(self.state):
            out = subprocess.run(self.base + ["list", "-q"], capture_output=True, text=True,
                                 check=False).stdout.split()
            for name in out:
                subprocess.run(self.base + ["delete", "--force", name], stdout=DEVNULL,
                               stderr=DEVNULL, check=False)


PEERS = [Podman, Bwrap, Runsc]


def workdir():
    return tempfile.mkdtemp(prefix="warren-bench-")

"""The vm tier (a Warren extension): `"tier": "vm"` on create gives a virtual machine with its
own kernel, whose monitor runs inside the jail. It must really be one: the guest's kernel,
CPUs and memory are the VM's; the host's processes, mounts and network are invisible; kernel
interfaces the jail refuses (AF_ALG, module loading) reach only the guest's kernel.

These run in the ordinary (jail-default) suite, asking for the tier explicitly. Under TCG (no
usable KVM on the CI hosts) each boot takes seconds, so the checks share a few sandboxes.
"""

from __future__ import annotations

import os
import subprocess

import pytest
import requests

from helpers import uniq

MIB = 1 << 20

# Run in a sandbox: AF_ALG hashing through the kernel's crypto API, then init_module(2) with a
# buffer that is not a module. A kernel that lets the caller in answers ENOEXEC (its module
# loader read the buffer); the jail's seccomp filter answers EPERM before any kernel code runs.
KERNEL_PROBE = r"""
import ctypes, errno, hashlib, socket
try:
    s = socket.socket(socket.AF_ALG, socket.SOCK_SEQPACKET)
    s.bind(("hash", "sha256"))
    op, _ = s.accept()
    op.sendall(b"warren")
    alg = "ok" if op.recv(32).hex() == hashlib.sha256(b"warren").hexdigest() else "wrong"
except OSError as e:
    alg = errno.errorcode.get(e.errno, str(e.errno))
libc = ctypes.CDLL(None, use_errno=True)
buf = ctypes.create_string_buffer(b"\x7fELF not a module" * 64)
rc = libc.init_module(buf, ctypes.c_ulong(len(buf)), b"")
mod = "loaded" if rc == 0 else errno.errorcode.get(ctypes.get_errno(), "?")
print(f"alg={alg} init_module={mod}")
"""


def _host_kernel_state() -> dict[str, str]:
    """What a module load or an AF_ALG algorithm instance would change in the host's kernel
    (a host built without module support has no /proc/modules)."""
    state = {}
    for path in ("/proc/modules", "/proc/crypto", "/proc/sys/kernel/tainted"):
        try:
            with open(path) as f:
                state[path] = f.read()
        except FileNotFoundError:
            state[path] = "<absent>"
    return state


def _create(server, name: str, **body) -> dict:
    r = requests.post(
        f"{server.api_base}/boxes",
        json={"name": name, "wait_for_ready": True, "timeout": 180, **body},
        headers=server.headers(),
        timeout=240,
    )
    assert r.status_code in (200, 201), r.text
    return r.json()


def _delete(server, name: str) -> None:
    requests.delete(f"{server.api_base}/boxes/{name}", headers=server.headers(), timeout=120)


@pytest.fixture(scope="module")
def vm(server, client):
    name = uniq("vm")
    box = _create(server, name, tier="vm", vcpus=2, mem_bytes=512 * MIB)
    try:
        yield box, client.get_sandbox(name)
    finally:
        _delete(server, name)


def out(sb, cmd: str, timeout: int = 120) -> str:
    r = sb.run(cmd, timeout=timeout)
    assert r.exit_code == 0, (cmd, r.stdout, r.stderr)
    return r.stdout


def test_a_vm_sandbox_reports_its_tier_and_runs_its_own_kernel(server, vm):
    box, sb = vm
    assert box["tier"] == "vm"
    got = requests.get(f"{server.api_base}/boxes/{box['name']}", headers=server.headers(), timeout=30)
    assert got.json()["tier"] == "vm"
    guest = out(sb, "uname -r").strip()
    assert guest and guest != os.uname().release, f"guest kernel {guest!r} is the host's"
    # The VM's vCPUs and RAM, not the host's (2 CPUs and 24 GiB here, or whatever it has).
    assert out(sb, "grep -c ^processor /proc/cpuinfo").strip() == "2"
    total_kib = int(out(sb, "awk '/MemTotal/ {print $2}' /proc/meminfo"))
    assert 400 * 1024 < total_kib <= 512 * 1024, total_kib
    free_total = int(out(sb, "free -m | awk '/^Mem:/ {print $2}'"))
    assert 400 < free_total <= 512, free_total
    r = sb.run("echo out; echo err >&2; exit 7", timeout=60)
    assert (r.exit_code, r.stdout, r.stderr) == (7, "out\n", "err\n")
    # The guest names itself as a jail does: /etc/hostname, and one line of /etc/hosts mapping
    # the name to its address on its link.
    name = out(sb, "hostname").strip()
    assert out(sb, "cat /etc/hostname").strip() == name
    resolved = out(sb, 'getent hosts "$(hostname)"').split()
    assert resolved[1] == name and resolved[0] in out(sb, "hostname -I").split(), resolved
    assert out(sb, "grep -c \"$(hostname)\" /etc/hosts").strip() == "1"


def test_the_hosts_processes_mounts_and_network_are_invisible(server, vm):
    _, sb = vm
    # Processes: the guest's own handful, none of the host's (the daemon serving this test).
    cmdlines = out(sb, "cat /proc/[0-9]*/cmdline | tr '\\0' ' '; echo")
    assert "warren serve" not in cmdlines and "qemu" not in cmdlines, cmdlines
    pids = out(sb, "ls -d /proc/[0-9]* | wc -l")
    assert int(pids) < 60, pids
    assert out(sb, "cat /proc/1/comm").strip() == "warren-agent"
    # Mounts: the root is virtio-fs; no host path or host block device appears.
    mounts = out(sb, "cat /proc/mounts")
    root = [m for m in mounts.splitlines() if m.split()[1] == "/"]
    assert root and root[-1].split()[2] == "virtiofs", mounts
    assert str(server.data_dir) not in mounts and "/dev/vda" not in mounts, mounts
    # Network: the guest's own interfaces; the host's (its veth links, its uplink) are absent.
    links = set(out(sb, "ls /sys/class/net").split())
    host_links = set(os.listdir("/sys/class/net"))
    assert links <= {"lo", "eth0"}, links
    assert not (host_links - {"lo", "eth0"}) & links


def test_a_vm_reaches_the_package_index_through_the_proxy_and_not_the_host(server, vm):
    _, sb = vm
    proxy = out(sb, "echo $HTTP_PROXY").strip()
    assert proxy.startswith("http://"), proxy
    code = out(sb, "curl -sS -m 90 -o /dev/null -w '%{http_code}' https://pypi.org/simple/six/", timeout=150)
    assert code == "200", code
    host_end = proxy.removeprefix("http://").rsplit(":", 1)[0]
    r = sb.run(f"timeout 5 bash -c 'echo x > /dev/tcp/{host_end}/{server.port}'; echo rc=$?", timeout=60)
    assert "rc=0" not in r.stdout, f"the guest reached the API on the host: {r.stdout}"


def test_kernel_interfaces_reach_only_the_guests_kernel(server, client, vm):
    _, sb = vm
    before = _host_kernel_state()
    sb.write("/tmp/probe.py", KERNEL_PROBE)
    guest = out(sb, "python3 /tmp/probe.py").strip()
    # The guest's root may use its kernel's crypto API and reaches its module loader.
    assert guest == "alg=ok init_module=ENOEXEC", guest
    # The host's kernel saw nothing of it: no module, no new crypto instance, no taint.
    assert _host_kernel_state() == before
    # The same probe in a jail is refused before any kernel code runs.
    name = uniq("jail")
    _create(server, name, tier="jail")
    try:
        jail = client.get_sandbox(name)
        jail.write("/tmp/probe.py", KERNEL_PROBE)
        got = out(jail, "python3 /tmp/probe.py").strip()
        assert "init_module=EPERM" in got and "alg=ok" not in got, got
    finally:
        _delete(server, name)


def test_files_survive_stop_and_start_of_a_vm(server, client):
    name = uniq("vmstop")
    _create(server, name, tier="vm", mem_bytes=256 * MIB)
    try:
        sb = client.get_sandbox(name)
        boot_id = out(sb, "cat /proc/sys/kernel/random/boot_id").strip()
        sb.write("/root/kept.txt", "across the stop")
        out(sb, "echo tmp > /tmp/kept && echo '10.9.8.7 db.internal' >> /etc/hosts && sync")
        client.stop_sandbox(name)
        assert client.get_sandbox(name).status == "stopped"
        client.start_sandbox(name, timeout=180)
        sb = client.get_sandbox(name)
        assert sb.read("/root/kept.txt") == b"across the stop"
        assert out(sb, "cat /tmp/kept").strip() == "tmp"
        # The guest's hosts file is its own: the tenant's line stays, its own line is not doubled.
        assert out(sb, "getent hosts db.internal").split() == ["10.9.8.7", "db.internal"]
        assert out(sb, 'grep -c "$(hostname)" /etc/hosts').strip() == "1"
        # A fresh boot of the same disk: a new kernel instance.
        assert out(sb, "cat /proc/sys/kernel/random/boot_id").strip() != boot_id
    finally:
        _delete(server, name)


def test_warren_run_tier_vm_prints_the_guest_kernel_and_passes_the_exit_code(server):
    r = subprocess.run(
        [
            str(server.binary),
            "--data-dir",
            str(server.data_dir),
            "run",
            "--tier",
            "vm",
            "--",
            "sh",
            "-c",
            "uname -r; exit 3",
        ],
        capture_output=True,
        text=True,
        timeout=240,
        stdin=subprocess.DEVNULL,
    )
    assert r.returncode == 3, r.stderr
    assert r.stdout.strip() and r.stdout.strip() != os.uname().release, r.stdout


def test_an_unknown_tier_is_refused_with_422(server):
    r = requests.post(
        f"{server.api_base}/boxes",
        json={"name": uniq("badtier"), "tier": "gpu"},
        headers=server.headers(),
        timeout=30,
    )
    assert r.status_code == 422, r.text
    assert "gpu" in r.text

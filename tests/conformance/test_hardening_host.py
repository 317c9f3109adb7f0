"""A first run that cannot wedge, and a data dir private to root (issue reports 1 and 5).

Each test runs its own `warren serve` on a fresh data dir under /var/tmp, apart from the
session's server: the daemon starts at once on a data dir without the default image, recovers
from a pool image that an interrupted first start left unformatted, and answers creates from
the default image with 503 `ServiceUnavailable` saying why (being built, or why the build
failed), never a 404. The image build is pointed at a Debian mirror on loopback that never
answers, or refuses connections, so no test waits for (or downloads) a real image.
"""

from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest
import requests
from langsmith.sandbox import ResourceCreationError, SandboxClient

from helpers import uniq, wait_until

REPO = Path(__file__).resolve().parents[2]

ZERO_POOL_BYTES = 64 << 20


def _binary() -> Path:
    if os.geteuid() != 0:
        pytest.fail("these tests need root: warren serve mounts a btrfs pool", pytrace=False)
    binary = Path(os.environ.get("WARREN_BIN", str(REPO / "target" / "release" / "warren")))
    if not binary.is_absolute():
        binary = REPO / binary
    if not binary.is_file():
        pytest.fail(f"warren binary not found at {binary}: build it (scripts/build.sh)", pytrace=False)
    return binary


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class BlackholeMirror:
    """A loopback 'mirror' that accepts connections and never answers: the build hangs in
    `apt-get update`, so the image stays 'being built' for as long as the test needs."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/debian"
        self.held: list[socket.socket] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.held.append(conn)

    def close(self) -> None:
        self.sock.close()
        for c in self.held:
            c.close()


def _mounts_under(path: Path) -> list[str]:
    points = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = line.split(" ")[4]
            if point == str(path) or point.startswith(f"{path}/"):
                points.append(point)
    return points


def _group_alive(pgid: int) -> bool:
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.getpgid(int(entry)) == pgid:
                return True
        except ProcessLookupError:
            continue
    return False


class FreshServer:
    """`warren serve` on a new data dir, in its own process group with the image build it
    starts (mmdebstrap, apt): stopping kills the group, unmounts the pool, removes the dir."""

    def __init__(self, tmp_path: Path, mirror: str) -> None:
        self.binary = _binary()
        self.data_dir = Path(f"/var/tmp/warren-conformance-{uuid.uuid4().hex[:10]}")
        self.port = _free_port()
        self.origin = f"http://127.0.0.1:{self.port}"
        self.api_base = f"{self.origin}/api/v2/sandboxes"
        tmp_path.mkdir(parents=True, exist_ok=True)
        self.log = tmp_path / "warren-serve.log"
        self.mirror = mirror
        self.proc: subprocess.Popen | None = None
        self.key = ""

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("LANGSMITH_", "LANGCHAIN_"))}
        env["WARREN_DEBIAN_MIRROR"] = self.mirror
        env["WARREN_LOG"] = "info"
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                # `--network none`: the session's server holds the host's one egress proxy and
                # sandbox firewall; this one only needs to answer about its image.
                [
                    str(self.binary),
                    "serve",
                    "--data-dir",
                    str(self.data_dir),
                    "--listen",
                    f"127.0.0.1:{self.port}",
                    "--network",
                    "none",
                ],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )

        def healthy() -> bool:
            assert self.proc is not None and self.proc.poll() is None, (
                f"warren serve exited with {self.proc.returncode if self.proc else None}:\n{self.log_text()[-3000:]}"
            )
            try:
                return requests.get(f"{self.origin}/healthz", timeout=2).status_code == 200
            except requests.RequestException:
                return False

        assert wait_until(healthy, 60, 0.1), f"warren serve was not healthy in 60 s:\n{self.log_text()[-3000:]}"
        key_file = self.data_dir / "admin.key"
        assert wait_until(key_file.exists, 10, 0.05), f"no {key_file}"
        self.key = key_file.read_text().strip()

    def headers(self) -> dict[str, str]:
        return {"X-Api-Key": self.key}

    def create(self, **body) -> requests.Response:
        return requests.post(f"{self.api_base}/boxes", json={"name": uniq("fresh"), **body}, headers=self.headers(), timeout=30)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop(self) -> list[str]:
        """Kills the daemon and its build, unmounts and removes the data dir; returns what
        could not be cleaned up."""
        problems = []
        if self.proc is not None:
            pgid = self.proc.pid
            try:
                os.killpg(pgid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(timeout=30)
            self.proc = None
            if not wait_until(lambda: not _group_alive(pgid), 30, 0.1):
                problems.append("the image build outlived its daemon")
        for _ in range(4):
            points = sorted(_mounts_under(self.data_dir), key=len, reverse=True)
            if not points:
                break
            for p in points:
                subprocess.run(["umount", p], check=False, capture_output=True)
        problems += [f"still mounted: {p}" for p in _mounts_under(self.data_dir)]
        subprocess.run(["rm", "-rf", "--one-file-system", str(self.data_dir)], check=False)
        return problems


@pytest.fixture
def fresh(tmp_path):
    """Makes FreshServers; each is stopped and its data dir removed at teardown (a failure
    to clean up fails the teardown, not the test's own result)."""
    made: list[FreshServer] = []

    def make(mirror: str) -> FreshServer:
        srv = FreshServer(tmp_path / str(len(made)), mirror)
        made.append(srv)
        return srv

    yield make
    problems = [p for srv in made for p in srv.stop()]
    assert not problems, problems


@pytest.fixture
def blackhole():
    m = BlackholeMirror()
    yield m
    m.close()


def _mode(p: Path) -> int:
    return stat.S_IMODE(os.lstat(p).st_mode)


def test_a_fresh_data_dir_after_a_killed_first_start_serves_and_answers_503_while_the_image_builds(fresh, blackhole):
    srv = fresh(blackhole.url)
    # What a first start of an older version left when it was killed before mkfs finished: a
    # zero-filled pool image, and a temporary one from a start killed during mkfs.
    srv.data_dir.mkdir(mode=0o755)
    with open(srv.data_dir / "warren.btrfs", "wb") as f:
        f.truncate(ZERO_POOL_BYTES)
    (srv.data_dir / "warren.btrfs.tmp").write_bytes(b"half")
    srv.start()
    log = srv.log_text()
    assert "not a formatted btrfs filesystem" in log, log[-3000:]
    assert not (srv.data_dir / "warren.btrfs.tmp").exists()

    # Everything else is served while the image builds.
    r = requests.get(f"{srv.api_base}/boxes", headers=srv.headers(), timeout=30)
    assert r.status_code == 200, r.text

    r = srv.create()
    assert r.status_code == 503, f"{r.status_code} {r.text}"
    detail = r.json()["detail"]
    assert detail["error"] == "ServiceUnavailable", detail
    assert "being built" in detail["message"], detail
    assert "system/default:latest" in detail["message"], detail
    assert str(srv.data_dir) not in r.text, r.text
    # Naming the default image explicitly is the same image: 503, not 404.
    r = srv.create(snapshot="system/default:latest")
    assert r.status_code == 503, f"{r.status_code} {r.text}"
    # An image that does not exist is still a 404.
    r = srv.create(snapshot="nobody/nothing:1")
    assert r.status_code == 404, f"{r.status_code} {r.text}"

    # The SDK user sees the reason (the SDK retries 503s; none here, to be quick).
    client = SandboxClient(api_endpoint=srv.api_base, api_key=srv.key, max_retries=0)
    try:
        with pytest.raises(ResourceCreationError, match="being built"):
            client.create_sandbox(name=uniq("sdk"))
    finally:
        client.close()

    # Progress of the build is in the log.
    assert "building the default image" in srv.log_text()

    # The data dir is private to root from the first start on.
    assert _mode(srv.data_dir) == 0o700
    for name in ["warren.btrfs", "warren.db", "admin.key", ".storage.lock"]:
        assert _mode(srv.data_dir / name) == 0o600, name
    opts = next(
        line.split(" ")[5] for line in open("/proc/self/mountinfo") if line.split(" ")[4] == str(srv.data_dir / "fs")
    )
    assert {"nosuid", "nodev"} <= set(opts.split(",")), opts


def test_a_failed_default_image_build_answers_503_with_the_reason_and_is_retried(fresh):
    # A mirror that refuses connections: mmdebstrap fails within seconds.
    closed = _free_port()
    srv = fresh(f"http://127.0.0.1:{closed}/debian")
    srv.start()

    def failed() -> tuple[requests.Response] | None:
        # In a tuple: a 503 response is falsy itself.
        r = srv.create()
        return (r,) if "could not be built" in r.text else None

    found = wait_until(failed, 90, 0.5)
    assert found, f"no build failure reported in 90 s; log:\n{srv.log_text()[-3000:]}"
    (r,) = found
    assert r.status_code == 503, f"{r.status_code} {r.text}"
    detail = r.json()["detail"]
    assert detail["error"] == "ServiceUnavailable", detail
    assert "Debian bootstrap failed" in detail["message"], detail
    assert "retries" in detail["message"], detail
    # The reason, not the host's paths or the tool's output.
    assert "/var/" not in r.text and str(srv.data_dir) not in r.text, r.text
    assert "failed to build the default image" in srv.log_text()

    # And it is tried again (first retry after 15 s).
    def attempts() -> int:
        return srv.log_text().count("the default image is missing: building it")

    assert wait_until(lambda: attempts() >= 2, 60, 0.5), f"the build was not retried:\n{srv.log_text()[-3000:]}"

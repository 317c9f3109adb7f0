"""Session fixtures for the LangSmith Sandboxes conformance suite.

One `warren serve` runs for the whole session on a free loopback port, with fresh state in the
test data dir. Everything the suite needs that is missing (root, the binary, the built default
image) fails the session loudly instead of skipping.

Environment:
  WARREN_BIN            the warren binary (default: target/release/warren in the repo)
  WARREN_TEST_DATA_DIR  a data dir whose default image is built (default: /var/lib/warren-test)
  WARREN_TEST_TIER      the tier the server gives creates that name none: `jail` (default) or
                        `vm` (run.sh then selects the subset that runs on both tiers)
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

# The SDK caches environment lookups on first use, so strip anything from the caller's
# environment that would change transports or targets before any SDK code runs.
for _var in list(os.environ):
    if _var.startswith(("LANGSMITH_", "LANGCHAIN_")):
        del os.environ[_var]
os.environ["LANGSMITH_TRACING"] = "false"

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(HERE))

from helpers import uniq  # noqa: E402
from upstream_tls import test_ca  # noqa: E402

HEALTH_TIMEOUT = 30.0

TIER = os.environ.get("WARREN_TEST_TIER", "jail")


def _tier_args() -> list[str]:
    """`warren serve` flags of the tier under test. VMs boot in seconds under emulation, so no
    warm pool boots them in the background while a test's commands compete for the CPUs."""
    if TIER == "jail":
        return []
    return ["--default-tier", TIER, "--pool-max", "0"]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A `warren serve` process the suite owns: start, kill -9, restart, stop."""

    def __init__(self, binary: Path, data_dir: Path, log_dir: Path) -> None:
        self.binary = binary
        self.data_dir = data_dir
        self.log_dir = log_dir
        self.port = _free_port()
        self.origin = f"http://127.0.0.1:{self.port}"
        self.api_base = f"{self.origin}/api/v2/sandboxes"
        self.proc: subprocess.Popen | None = None
        self.starts = 0
        self.key = ""
        self.logs: list[Path] = []
        # Flags added to `warren serve` at the next start (tests that restart with other limits
        # reset it themselves).
        self.extra_args: list[str] = []

    # -- process control -------------------------------------------------------------------

    def start(self, *, fresh: bool) -> None:
        if fresh:
            for p in self.data_dir.glob("warren.db*"):
                p.unlink()
            key_file = self.data_dir / "admin.key"
            if key_file.exists():
                key_file.unlink()
        self.starts += 1
        log = self.log_dir / f"warren-serve-{self.starts}.log"
        self.logs.append(log)
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(
                [
                    str(self.binary),
                    "serve",
                    "--data-dir",
                    str(self.data_dir),
                    "--listen",
                    f"127.0.0.1:{self.port}",
                    *_sandbox_ca_args(),
                    "--egress-upstream-ca",
                    str(test_ca()[0]),
                    *_tier_args(),
                    *self.extra_args,
                ],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._wait_healthy()
        key_file = self.data_dir / "admin.key"
        deadline = time.monotonic() + 10
        while not key_file.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        if not key_file.exists():
            self._fail(f"the server did not write {key_file}")
        self.key = key_file.read_text().strip()
        if not self.key:
            self._fail(f"{key_file} is empty")

    def _wait_healthy(self) -> None:
        deadline = time.monotonic() + HEALTH_TIMEOUT
        last = ""
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                self._fail(f"warren serve exited with code {self.proc.returncode} before it was healthy")
            try:
                r = requests.get(f"{self.origin}/healthz", timeout=2)
                if r.status_code == 200:
                    return
                last = f"HTTP {r.status_code}"
            except requests.RequestException as e:
                last = repr(e)
            time.sleep(0.2)
        self._fail(f"GET /healthz did not answer 200 within {HEALTH_TIMEOUT:.0f} s (last: {last})")

    def kill9(self) -> None:
        """SIGKILL the daemon alone: its sandboxes must outlive it."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)
        self.proc = None

    def restart_after_kill9(self) -> None:
        self.kill9()
        self.start(fresh=False)

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=15)
        self.proc = None

    def log_text(self, index: int = -1) -> str:
        return self.logs[index].read_text(errors="replace")

    def _fail(self, why: str) -> None:
        tail = ""
        if self.logs:
            tail = self.log_text()[-4000:]
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None
        pytest.fail(f"{why}\n--- server log tail ---\n{tail}", pytrace=False)

    # -- helpers ---------------------------------------------------------------------------

    def headers(self, key: str | None = None) -> dict[str, str]:
        return {"X-Api-Key": key if key is not None else self.key}

    def cli(self, *args: str, key: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
        """Run the warren CLI as a client of this server."""
        env = dict(os.environ)
        env["WARREN_URL"] = self.origin
        env["WARREN_API_KEY"] = key if key is not None else self.key
        return subprocess.run(
            [str(self.binary), *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )

    def sdk_env(self, **extra: str) -> dict[str, str]:
        """Environment for a child process that uses the SDKs against this server."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("LANGSMITH_", "LANGCHAIN_"))}
        env["LANGSMITH_ENDPOINT"] = self.origin
        env["LANGSMITH_API_KEY"] = self.key
        env["LANGSMITH_TRACING"] = "false"
        env.update(extra)
        return env


def _sandbox_ca_args() -> list[str]:
    """The host's locally added CA certificates, trusted by every sandbox too: where this
    host's outbound TLS is re-signed by a local CA, so is the sandboxes' (through the proxy)."""
    args = []
    for crt in sorted(Path("/usr/local/share/ca-certificates").glob("**/*.crt")):
        args += ["--sandbox-ca", str(crt)]
    return args


def _prerequisites() -> tuple[Path, Path]:
    if os.geteuid() != 0:
        pytest.fail(
            "the conformance suite needs root: warren serve creates namespaces, cgroups and btrfs subvolumes",
            pytrace=False,
        )
    binary = Path(os.environ.get("WARREN_BIN", str(REPO / "target" / "release" / "warren")))
    if not binary.is_absolute():
        binary = REPO / binary
    if not binary.is_file() or not os.access(binary, os.X_OK):
        pytest.fail(
            f"warren binary not found at {binary}: build it (scripts/build.sh) or set WARREN_BIN",
            pytrace=False,
        )
    data_dir = Path(os.environ.get("WARREN_TEST_DATA_DIR", "/var/lib/warren-test"))
    if not data_dir.is_dir():
        pytest.fail(
            f"test data dir {data_dir} does not exist: build the default image into it with "
            f"`{binary} --data-dir {data_dir} image build` or set WARREN_TEST_DATA_DIR",
            pytrace=False,
        )
    return binary, data_dir


def _delete_everything(server: Server) -> None:
    try:
        r = requests.get(f"{server.api_base}/boxes", headers=server.headers(), timeout=30)
        for box in r.json().get("sandboxes", []):
            requests.delete(f"{server.api_base}/boxes/{box['name']}", headers=server.headers(), timeout=60)
    except Exception:  # noqa: BLE001 - best-effort cleanup at the end of the session
        pass


@pytest.fixture(scope="session")
def server(tmp_path_factory) -> Server:
    binary, data_dir = _prerequisites()
    srv = Server(binary, data_dir, tmp_path_factory.mktemp("warren-logs"))
    srv.start(fresh=True)
    # Preflight: the default image must be there, or every test would fail for one reason.
    name = uniq("preflight")
    r = requests.post(
        f"{srv.api_base}/boxes",
        json={"name": name, "wait_for_ready": True, "timeout": 60},
        headers=srv.headers(),
        timeout=120,
    )
    if r.status_code >= 300:
        body = r.text[:2000]
        srv.stop()
        pytest.fail(
            f"creating a sandbox from the default image failed (HTTP {r.status_code}: {body}); "
            f"is the default image built? `{binary} --data-dir {data_dir} image build`",
            pytrace=False,
        )
    requests.delete(f"{srv.api_base}/boxes/{name}", headers=srv.headers(), timeout=60)
    os.environ["LANGSMITH_ENDPOINT"] = srv.origin
    os.environ["LANGSMITH_API_KEY"] = srv.key
    try:
        yield srv
    finally:
        if srv.proc is not None and srv.proc.poll() is None:
            _delete_everything(srv)
        srv.stop()


@pytest.fixture(scope="session")
def client(server):
    from langsmith.sandbox import SandboxClient

    # The SDK's default HTTP timeout (10 s) on purpose: users get it too.
    c = SandboxClient(api_endpoint=server.api_base, api_key=server.key)
    yield c
    c.close()


@pytest.fixture(scope="module")
def sb(client):
    """One sandbox shared by the tests of a module that do not change its lifecycle."""
    with client.sandbox(name=uniq("shared"), timeout=60) as box:
        yield box


@pytest.fixture(scope="session")
def bob_key(server) -> str:
    """A second, non-admin user of the same server."""
    r = server.cli("keys", "create", "--name", "bob")
    assert r.returncode == 0, f"warren keys create failed: {r.stderr}"
    key = r.stdout.strip()
    assert key and "\n" not in key, f"expected the key alone on stdout, got {r.stdout!r}"
    return key

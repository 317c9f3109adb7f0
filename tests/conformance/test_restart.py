"""The daemon is killed with SIGKILL and started again on the same data dir and port.

Sandboxes and the commands running in them outlive the daemon and are re-adopted: a command
started before the kill keeps running, and its whole output is retrievable afterwards.
"""

from __future__ import annotations

import secrets
import time

import requests
from langsmith.sandbox import ResourceNotFoundError

from helpers import RawExec, uniq, wait_until

LINES = 40
CMD = f"for i in $(seq 1 {LINES}); do echo line-$i; echo err-$i >&2; sleep 0.25; done; exit 9"
EXPECTED_OUT = "".join(f"line-{i}\n" for i in range(1, LINES + 1))
EXPECTED_ERR = "".join(f"err-{i}\n" for i in range(1, LINES + 1))


def test_commands_and_sandboxes_survive_daemon_kill9(server, client):
    name = uniq("survivor")
    sb = client.create_sandbox(name=name)
    try:
        sb.write("/var/tmp/before.txt", "written before the kill")
        sleeper = f"sleep {7200 + secrets.randbelow(600)}"
        idle = sb.run(sleeper, timeout=0, wait=False)
        handle = sb.run(CMD, timeout=0, idle_timeout=-1, wait=False)
        command_id = handle.command_id
        got_out = ""
        for chunk in handle:
            if chunk.stream == "stdout":
                got_out += chunk.data
            if "line-3\n" in got_out:
                break
        out_offset = handle.last_stdout_offset
        err_offset = handle.last_stderr_offset
        assert out_offset > 0

        started = time.monotonic()
        server.restart_after_kill9()
        assert server.key, "the admin key file survives a restart"

        # Same sandbox, same data plane, same files.
        again = client.get_sandbox(name)
        assert again.id == sb.id
        assert again.status == "ready"
        assert again.dataplane_url == sb.dataplane_url
        assert sb.read("/var/tmp/before.txt") == b"written before the kill"

        # The command kept running while the daemon was down and is still reattachable.
        h2 = sb.reconnect(command_id, stdout_offset=out_offset, stderr_offset=err_offset)
        rest = h2.result
        assert rest.exit_code == 9
        assert got_out + rest.stdout == EXPECTED_OUT
        full = sb.reconnect(command_id).result
        assert full.stdout == EXPECTED_OUT
        assert full.stderr == EXPECTED_ERR
        assert full.exit_code == 9
        # It ran for its full ~10 s in real time; it was neither restarted nor cut short.
        assert time.monotonic() - started < 60

        # A command started before the kill that is still running is still controllable.
        assert idle.command_id
        assert sleeper in sb.run("ps -eo args").stdout.splitlines()
        with RawExec(sb.dataplane_url, server.key) as ex:
            ex.send({"type": "reconnect", "command_id": idle.command_id, "stdout_offset": 0, "stderr_offset": 0})
            assert ex.recv()["type"] == "started"
            ex.send({"type": "kill"})
            msgs, _ = ex.drain(timeout=30)
        assert msgs[-1]["type"] == "exit" and msgs[-1]["exit_code"] != 0
        assert wait_until(lambda: sleeper not in sb.run("ps -eo args").stdout.splitlines(), 15)
        # New work goes through the restarted daemon.
        assert sb.run("echo after").stdout == "after\n"
        with client.sandbox() as fresh:
            assert fresh.run("echo new").stdout == "new\n"
    finally:
        try:
            client.delete_sandbox(name)
        except ResourceNotFoundError:
            pass  # already reported by the assertions above


def test_admin_key_is_printed_only_on_first_start(server):
    assert server.starts >= 1
    first = server.log_text(0)
    assert server.key in first, "the first start prints the admin key"
    if server.starts > 1:
        assert server.key not in server.log_text(-1), "a restart must not print the key again"
    r = requests.get(f"{server.api_base}/boxes", headers=server.headers(), timeout=30)
    assert r.status_code == 200

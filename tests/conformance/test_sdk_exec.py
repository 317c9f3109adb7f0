"""Command execution through the Python SDK (WebSocket transport): the README's run examples."""

from __future__ import annotations

import threading
import time
import uuid

import pytest
from langsmith.sandbox import (
    CommandTimeoutError,
    SandboxConnectionError,
    SandboxOperationError,
)

from helpers import RawExec, execute_msg, uniq, wait_until


def _pgrep(sb, pattern: str) -> str:
    """Full command lines inside the sandbox that equal `pattern` exactly."""
    return sb.run(f"pgrep -fx '{pattern}' || true", timeout=30).stdout.strip()


def test_run_stdout_stderr_exit_code(sb):
    result = sb.run("echo 'Hello, World!'")
    assert result.stdout == "Hello, World!\n"
    assert result.stderr == ""
    assert result.exit_code == 0
    assert result.success is True

    result = sb.run("exit 1")
    assert result.success is False
    assert result.exit_code == 1

    result = sb.run("echo out; echo err >&2; exit 7")
    assert result.stdout == "out\n"
    assert result.stderr == "err\n"
    assert result.exit_code == 7


def test_killed_by_signal_reports_nonzero(sb):
    result = sb.run("kill -9 $$")
    assert result.exit_code != 0


def test_default_runtime_tools(sb):
    result = sb.run(
        "bash --version >/dev/null && python3 -c 'import sys; print(sys.version_info[0])' "
        "&& python -c 'print(1)' && pip --version >/dev/null && git --version >/dev/null "
        "&& curl --version >/dev/null && tar --version >/dev/null && ps -p $$ >/dev/null "
        "&& grep -q bookworm /etc/os-release && echo ok"
    )
    assert result.stdout.splitlines() == ["3", "1", "ok"], result.stderr


def test_stdin_is_closed_by_default(sb):
    start = time.monotonic()
    result = sb.run("cat; echo eof", timeout=20)
    assert result.stdout == "eof\n"
    assert time.monotonic() - start < 15, "cat must see EOF at once, not wait for the timeout"


def test_env_cwd_and_run_config(sb):
    assert sb.run("pwd", cwd="/tmp").stdout == "/tmp\n"
    assert sb.run("echo $FOO", env={"FOO": "bar"}).stdout == "bar\n"
    result = sb.run("pwd; echo $A", run_config={"work_dir": "/usr", "env_vars": {"A": "b"}})
    assert result.stdout == "/usr\nb\n"


def test_callbacks_receive_chunks_as_they_arrive(sb):
    seen: list[tuple[str, str, float]] = []
    start = time.monotonic()
    result = sb.run(
        "echo first; echo first-err >&2; sleep 3; echo second; echo second-err >&2",
        timeout=60,
        on_stdout=lambda s: seen.append(("out", s, time.monotonic())),
        on_stderr=lambda s: seen.append(("err", s, time.monotonic())),
    )
    end = time.monotonic()
    assert result.exit_code == 0
    assert result.stdout == "first\nsecond\n"
    assert result.stderr == "first-err\nsecond-err\n"
    out = "".join(s for k, s, _ in seen if k == "out")
    err = "".join(s for k, s, _ in seen if k == "err")
    assert out == result.stdout
    assert err == result.stderr
    first_out = next(t for k, s, t in seen if k == "out" and "first" in s)
    first_err = next(t for k, s, t in seen if k == "err" and "first-err" in s)
    # Streamed, not buffered until exit: the first lines arrive well before the command ends.
    assert end - first_out > 1.5, f"first stdout chunk came {end - first_out:.2f}s before the end"
    assert end - first_err > 1.5, f"first stderr chunk came {end - first_err:.2f}s before the end"
    assert first_out - start < end - start - 1.5


def test_wait_false_iteration_with_offsets(sb):
    cmd = (
        "for i in 1 2 3 4 5; do echo \"line $i é€😀\"; echo \"err $i ü\" >&2; sleep 0.2; done; exit 3"
    )
    handle = sb.run(cmd, timeout=60, wait=False)
    assert handle.command_id
    assert isinstance(handle.pid, int)
    chunks = list(handle)
    result = handle.result
    assert result.exit_code == 3
    expected_out = "".join(f"line {i} é€😀\n" for i in range(1, 6))
    expected_err = "".join(f"err {i} ü\n" for i in range(1, 6))
    assert result.stdout == expected_out
    assert result.stderr == expected_err
    for stream, text in (("stdout", expected_out), ("stderr", expected_err)):
        offset = 0
        for c in (c for c in chunks if c.stream == stream):
            assert c.offset == offset, f"{stream} offsets are byte offsets of each chunk's first byte"
            offset += len(c.data.encode("utf-8"))
        assert offset == len(text.encode("utf-8"))
    assert handle.last_stdout_offset == len(expected_out.encode("utf-8"))
    assert handle.last_stderr_offset == len(expected_err.encode("utf-8"))


def test_large_output_and_utf8_boundaries(sb):
    # 3 MB on stdout: messages must be chunked below the client's 1 MiB frame limit.
    result = sb.run("head -c 3000000 /dev/zero | tr '\\0' a; head -c 1500000 /dev/zero | tr '\\0' b >&2")
    assert result.exit_code == 0
    assert len(result.stdout) == 3000000 and set(result.stdout) == {"a"}
    assert len(result.stderr) == 1500000 and set(result.stderr) == {"b"}
    # Multi-byte characters must never be split across chunks.
    text = "é€😀" * 100000
    result = sb.run("python3 -c \"import sys; sys.stdout.write('é€😀' * 100000)\"")
    assert result.stdout == text


def test_send_input_with_close_input_false(sb):
    handle = sb.run(
        'python -c \'name = input("Name: "); print(f"Hello {name}")\'',
        timeout=30,
        wait=False,
        close_input=False,
    )
    seen = ""
    sent = False
    for chunk in handle:
        seen += chunk.data
        if not sent and "Name:" in seen:
            handle.send_input("World\n")
            sent = True
    assert sent
    result = handle.result
    assert result.exit_code == 0
    assert "Hello World" in result.stdout


def test_close_input_sends_eof(sb):
    handle = sb.run("cat; echo done", timeout=30, wait=False, close_input=False)
    handle.send_input("abc\n")
    handle.send_input("def\n")
    handle.close_input()
    result = handle.result
    assert result.stdout == "abc\ndef\ndone\n"


def test_kill_running_command(sb):
    marker = f"sleep {3000 + uuid.uuid4().int % 600}"
    handle = sb.run(marker, timeout=7200, wait=False)
    command_id = handle.command_id
    assert wait_until(lambda: _pgrep(sb, marker), 10), "command did not start"

    def kill_after(h, seconds):
        time.sleep(seconds)
        h.kill()

    threading.Thread(target=kill_after, args=(handle, 1)).start()
    start = time.monotonic()
    try:
        for _ in handle:
            pass
        assert handle.result.exit_code != 0
    except SandboxConnectionError:
        pass  # the Python client closes its socket right after sending kill
    assert time.monotonic() - start < 30
    assert wait_until(lambda: not _pgrep(sb, marker), 15), "killed command is still running"
    # The session records the kill: reattaching returns a non-zero exit at once.
    result = sb.reconnect(command_id).result
    assert result.exit_code != 0


def test_kill_takes_the_whole_process_group(sb):
    marker = f"sleep {3600 + uuid.uuid4().int % 600}"
    handle = sb.run(f"bash -c '{marker}; true' & {marker}; wait", timeout=600, wait=False)
    assert wait_until(lambda: len(_pgrep(sb, marker).split()) >= 2, 10)
    handle.kill()
    assert wait_until(lambda: not _pgrep(sb, marker), 15), "a child of the killed command survived"


def test_command_timeout_raises(sb):
    marker = f"sleep {900 + uuid.uuid4().int % 99}"
    start = time.monotonic()
    with pytest.raises(CommandTimeoutError):
        sb.run(marker, timeout=2)
    assert time.monotonic() - start < 30
    assert wait_until(lambda: not _pgrep(sb, marker), 15), "timed-out command still runs"


def test_timeout_zero_runs_without_deadline(sb):
    marker = f"sleep {2400 + uuid.uuid4().int % 600}"
    handle = sb.run(f"echo Ready; {marker}; echo never", timeout=0, wait=False)
    for chunk in handle:
        if "Ready" in chunk.data:
            break
    else:
        pytest.fail("never saw Ready")
    time.sleep(2)
    assert _pgrep(sb, marker), "a timeout=0 command must keep running"
    handle.kill()
    assert wait_until(lambda: not _pgrep(sb, marker), 15)


def test_reconnect_by_command_id_with_offsets(sb):
    cmd = "for i in $(seq 1 20); do echo out-$i; echo err-$i >&2; sleep 0.15; done"
    handle = sb.run(cmd, timeout=60, wait=False)
    command_id = handle.command_id
    got_out, got_err = "", ""
    for chunk in handle:
        if chunk.stream == "stdout":
            got_out += chunk.data
        else:
            got_err += chunk.data
        if "out-4" in got_out:
            break
    # Reattach from where this handle stopped; the rest must follow without gaps or repeats.
    h2 = sb.reconnect(
        command_id,
        stdout_offset=handle.last_stdout_offset,
        stderr_offset=handle.last_stderr_offset,
    )
    rest = list(h2)
    for c in rest:
        if c.stream == "stdout":
            got_out += c.data
        else:
            got_err += c.data
    assert h2.result.exit_code == 0
    assert got_out == "".join(f"out-{i}\n" for i in range(1, 21))
    assert got_err == "".join(f"err-{i}\n" for i in range(1, 21))
    first = next(c for c in rest if c.stream == "stdout")
    assert first.offset == handle.last_stdout_offset

    # After it finished, a reconnect from zero replays the whole output (session TTL).
    full = sb.reconnect(command_id).result
    assert full.stdout == got_out
    assert full.stderr == got_err
    assert full.exit_code == 0


def test_reconnect_after_finish_within_ttl(sb):
    handle = sb.run("echo done-marker; exit 4", wait=False)
    command_id = handle.command_id
    assert handle.result.exit_code == 4
    result = sb.reconnect(command_id).result
    assert result.stdout == "done-marker\n"
    assert result.exit_code == 4


def test_handle_reconnect_method(sb):
    handle = sb.run("echo a; sleep 1; echo b", timeout=30, wait=False)
    first = next(iter(handle))
    assert first.data.startswith("a")
    h2 = handle.reconnect()
    assert h2.result.stdout == "a\nb\n"[len(first.data):]


def test_reconnect_unknown_command_fails(sb):
    with pytest.raises(SandboxOperationError):
        sb.reconnect(uuid.uuid4().hex).result


def test_session_expires_after_ttl(sb):
    handle = sb.run("echo short-lived", ttl_seconds=2, wait=False)
    command_id = handle.command_id
    assert handle.result.stdout == "short-lived\n"

    def expired() -> bool:
        try:
            sb.reconnect(command_id).result
            return False
        except SandboxOperationError:
            return True

    assert wait_until(expired, 30, interval=1), "session still reattachable long after its TTL"


def test_pty_repl(sb):
    handle = sb.run("python", pty=True, wait=False, timeout=60)
    buf = ""
    for chunk in handle:
        buf += chunk.data
        if ">>>" in buf:
            handle.send_input("print('hel' + 'lo')\n")
            break
    buf = ""
    for chunk in handle:
        buf += chunk.data
        if "hello" in buf and ">>>" in buf.split("hello", 1)[1]:
            handle.send_input("exit()\n")
            break
    result = handle.result
    assert result.exit_code == 0
    assert "hello" in buf


def test_pty_is_a_terminal_and_merges_stderr(sb):
    result = sb.run("test -t 0 && test -t 1 && echo tty-yes; echo to-err >&2", pty=True)
    assert "tty-yes" in result.stdout
    assert "to-err" in result.stdout, "PTY mode merges stderr into stdout"
    assert result.stderr == ""
    assert "tty-no" in sb.run("test -t 1 && echo tty-yes || echo tty-no").stdout
    top = sb.run("top -b -n 1", pty=True)
    assert top.exit_code == 0
    assert "PID" in top.stdout


def test_kill_on_disconnect(sb):
    marker = f"sleep {4200 + uuid.uuid4().int % 600}"
    with RawExec(sb.dataplane_url, sb._client._api_key) as ex:
        ex.send(execute_msg(marker, command_id=uuid.uuid4().hex, kill_on_disconnect=True))
        assert ex.recv()["type"] == "started"
        assert wait_until(lambda: _pgrep(sb, marker), 10)
    assert wait_until(lambda: not _pgrep(sb, marker), 15), "kill_on_disconnect left the command running"


def test_idle_timeout_kills_detached_command(sb):
    marker = f"sleep {4800 + uuid.uuid4().int % 600}"
    command_id = uuid.uuid4().hex
    with RawExec(sb.dataplane_url, sb._client._api_key) as ex:
        ex.send(execute_msg(marker, command_id=command_id, idle_timeout_seconds=2, timeout_seconds=0))
        assert ex.recv()["type"] == "started"
    assert wait_until(lambda: not _pgrep(sb, marker), 20), "idle command survived its idle timeout"
    # It did run, and it ended by being killed, not by finishing.
    with RawExec(sb.dataplane_url, sb._client._api_key) as ex:
        ex.send({"type": "reconnect", "command_id": command_id, "stdout_offset": 0, "stderr_offset": 0})
        msgs, _ = ex.drain(timeout=30)
    assert msgs and msgs[0]["type"] == "started"
    assert msgs[-1]["type"] == "exit" and msgs[-1]["exit_code"] != 0, msgs


def test_detached_command_keeps_running_by_default(sb):
    marker = f"sleep {5400 + uuid.uuid4().int % 600}"
    command_id = uuid.uuid4().hex
    with RawExec(sb.dataplane_url, sb._client._api_key) as ex:
        ex.send(execute_msg(marker, command_id=command_id, timeout_seconds=0))
        assert ex.recv()["type"] == "started"
    time.sleep(3)
    assert _pgrep(sb, marker), "a detached command must keep running until its idle timeout"
    with RawExec(sb.dataplane_url, sb._client._api_key) as ex:
        ex.send({"type": "reconnect", "command_id": command_id, "stdout_offset": 0, "stderr_offset": 0})
        assert ex.recv()["type"] == "started"
        ex.send({"type": "kill"})
        msgs, _ = ex.drain(timeout=30)
    exits = [m for m in msgs if m.get("type") == "exit"]
    assert exits and exits[0]["exit_code"] != 0



@pytest.mark.jail_only  # the jail's seccomp filter answers for a kernel without audit
def test_tools_that_open_an_audit_socket_carry_on(sb):
    """groupadd and useradd open an audit netlink socket first and abort unless it fails as on
    a kernel without audit; the sandbox answers EPROTONOSUPPORT, so they get to their real
    work. (That work then needs CAP_CHOWN for /etc/gshadow, which sandbox commands do not have
    by design: SECURITY.md's checklist requires every capability set to be empty.)"""
    r = sb.run("groupadd -r auditgrp", timeout=60)
    assert "audit" not in r.stderr.lower(), r.stderr
    r = sb.run(
        "python3 -c 'import socket; socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 9)'",
        timeout=60,
    )
    assert "Protocol not supported" in r.stderr, r.stderr

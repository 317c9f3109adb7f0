"""The exec WebSocket on the wire: authentication of the upgrade and the message protocol."""

from __future__ import annotations

import json
import uuid

import pytest
from websockets.exceptions import InvalidStatus

from helpers import RawExec, check_offsets, execute_msg, stream_text


@pytest.mark.parametrize("key", [None, "", "wrong-key-0123456789"])
def test_upgrade_without_valid_key_is_401(sb, key):
    with pytest.raises(InvalidStatus) as exc:
        RawExec(sb.dataplane_url, key)
    assert exc.value.response.status_code == 401


def test_upgrade_key_header_is_case_insensitive(sb, server):
    from websockets.sync.client import connect

    from helpers import ws_url

    for header in ("x-api-key", "X-API-KEY"):
        with connect(ws_url(sb.dataplane_url), additional_headers={header: server.key}) as ws:
            ws.send(json.dumps(execute_msg("echo ok")))
            first = ws.recv(timeout=30)
            assert '"started"' in first


@pytest.mark.parametrize("command_id", [uuid.uuid4().hex, str(uuid.uuid4())], ids=["hex", "dashed"])
def test_message_sequence(sb, server, command_id):
    with RawExec(sb.dataplane_url, server.key) as ex:
        ex.send(execute_msg("printf 'aé€'; printf 'b😀' >&2; printf 'cc'; exit 5", command_id=command_id))
        msgs, code = ex.drain()
    first = msgs[0]
    assert first["type"] == "started", msgs
    assert first["command_id"] == command_id, "command_id is echoed byte for byte"
    assert isinstance(first["pid"], int)
    assert msgs[-1]["type"] == "exit" and msgs[-1]["exit_code"] == 5, msgs[-1]
    assert all(m["type"] in ("stdout", "stderr") for m in msgs[1:-1]), msgs
    assert stream_text(msgs, "stdout") == "aé€cc"
    assert stream_text(msgs, "stderr") == "b😀"
    assert check_offsets(msgs, "stdout") == len("aé€cc".encode())
    assert check_offsets(msgs, "stderr") == len("b😀".encode())
    assert code == 1000, "the server closes normally after exit"


def test_command_id_is_assigned_when_absent(sb, server):
    with RawExec(sb.dataplane_url, server.key) as ex:
        ex.send(execute_msg("echo hi"))  # no command_id: the server assigns one
        msgs, _ = ex.drain()
    assert msgs[0]["type"] == "started"
    assert isinstance(msgs[0]["command_id"], str) and msgs[0]["command_id"]
    assert stream_text(msgs, "stdout") == "hi\n"


def test_execute_is_idempotent_on_command_id(sb, server):
    command_id = uuid.uuid4().hex
    marker = f"/tmp/idem-{command_id}"
    cmd = f"echo run >> {marker}; sleep 1; echo done"
    with RawExec(sb.dataplane_url, server.key) as ex:
        ex.send(execute_msg(cmd, command_id=command_id))
        first = ex.recv()
    assert first["type"] == "started"
    # The client retries the same execute (e.g. its socket dropped): it must attach, not spawn.
    with RawExec(sb.dataplane_url, server.key) as ex:
        ex.send(execute_msg(cmd, command_id=command_id))
        msgs, _ = ex.drain()
    assert msgs[0]["type"] == "started"
    assert msgs[0]["command_id"] == command_id
    assert msgs[0]["pid"] == first["pid"]
    assert stream_text(msgs, "stdout") == "done\n"
    assert msgs[-1]["type"] == "exit" and msgs[-1]["exit_code"] == 0
    assert sb.run(f"cat {marker}").stdout == "run\n", "the command ran once"


def test_reconnect_unknown_command_is_an_error_message(sb, server):
    with RawExec(sb.dataplane_url, server.key) as ex:
        ex.send({"type": "reconnect", "command_id": uuid.uuid4().hex, "stdout_offset": 0, "stderr_offset": 0})
        msgs, _ = ex.drain()
    errors = [m for m in msgs if m.get("type") == "error"]
    assert errors, msgs
    assert errors[0]["error_type"] in ("CommandNotFound", "SessionExpired")


def test_timeout_is_an_error_message(sb, server):
    with RawExec(sb.dataplane_url, server.key) as ex:
        ex.send(execute_msg("echo before; sleep 30", command_id=uuid.uuid4().hex, timeout_seconds=1))
        msgs, _ = ex.drain(timeout=30)
    assert msgs[0]["type"] == "started"
    assert stream_text(msgs, "stdout") == "before\n"
    assert msgs[-1]["type"] == "error"
    assert msgs[-1]["error_type"] == "CommandTimeout"


def test_reconnect_offset_past_end_sends_only_new_output(sb, server):
    command_id = uuid.uuid4().hex
    with RawExec(sb.dataplane_url, server.key) as ex:
        ex.send(execute_msg("echo one; sleep 1.5; echo two", command_id=command_id))
        assert ex.recv()["type"] == "started"
        out = ex.recv()
        assert (out["type"], out["data"], out["offset"]) == ("stdout", "one\n", 0)
    with RawExec(sb.dataplane_url, server.key) as ex:
        ex.send({"type": "reconnect", "command_id": command_id, "stdout_offset": 4, "stderr_offset": 0})
        msgs, _ = ex.drain()
    assert msgs[0]["type"] == "started"
    assert stream_text(msgs, "stdout") == "two\n"
    assert check_offsets(msgs, "stdout", start=4) == 8
    assert msgs[-1]["type"] == "exit"

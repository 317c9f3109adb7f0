"""Helpers shared by the conformance tests: names, raw WebSocket exec, raw HTTP."""

from __future__ import annotations

import json
import socket
import time
import uuid
from typing import Any, Callable
from urllib.parse import urlsplit

import requests


def uniq(prefix: str) -> str:
    """A fresh, valid sandbox name."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def ws_url(dataplane_url: str) -> str:
    return dataplane_url.replace("https://", "wss://").replace("http://", "ws://") + "/execute/ws"


def wait_until(pred: Callable[[], Any], timeout: float, interval: float = 0.25) -> Any:
    """Poll `pred` until it returns a truthy value; return that value, or the last falsy one."""
    deadline = time.monotonic() + timeout
    value = pred()
    while not value and time.monotonic() < deadline:
        time.sleep(interval)
        value = pred()
    return value


class RawExec:
    """One raw `/execute/ws` connection, speaking the wire protocol by hand."""

    def __init__(self, dataplane_url: str, key: str | None, *, open_timeout: float = 30) -> None:
        from websockets.sync.client import connect

        headers = {"X-Api-Key": key} if key is not None else {}
        self.ws = connect(ws_url(dataplane_url), additional_headers=headers, open_timeout=open_timeout)

    def send(self, msg: dict) -> None:
        self.ws.send(json.dumps(msg))

    def recv(self, timeout: float = 30) -> dict:
        raw = self.ws.recv(timeout=timeout)
        return json.loads(raw)

    def drain(self, timeout: float = 60) -> tuple[list[dict], int | None]:
        """Read messages until the server closes; return them and the close code."""
        from websockets.exceptions import ConnectionClosed

        msgs: list[dict] = []
        deadline = time.monotonic() + timeout
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"server did not close the exec socket; got {msgs[-5:]}")
                msgs.append(self.recv(timeout=left))
        except ConnectionClosed as e:
            code = e.rcvd.code if e.rcvd is not None else None
            return msgs, code

    def close(self) -> None:
        try:
            self.ws.close()
        except Exception:  # noqa: BLE001
            pass

    def __enter__(self) -> "RawExec":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def execute_msg(command: str, *, command_id: str | None = None, **extra: Any) -> dict:
    msg: dict[str, Any] = {
        "type": "execute",
        "command": command,
        "timeout_seconds": 60,
        "shell": "/bin/bash",
        "idle_timeout_seconds": 300,
        "kill_on_disconnect": False,
        "ttl_seconds": 600,
        "close_stdin": True,
    }
    if command_id is not None:
        msg["command_id"] = command_id
    msg.update(extra)
    return msg


def stream_text(msgs: list[dict], stream: str) -> str:
    return "".join(m["data"] for m in msgs if m.get("type") == stream)


def check_offsets(msgs: list[dict], stream: str, start: int = 0) -> int:
    """Assert the chunks of one stream are contiguous in UTF-8 bytes; return the end offset."""
    expected = start
    for m in msgs:
        if m.get("type") != stream:
            continue
        assert m["offset"] == expected, f"{stream} chunk at offset {m['offset']}, expected {expected}"
        expected += len(m["data"].encode("utf-8"))
    return expected


def raw_http(origin: str, request: bytes, *, read_timeout: float = 30) -> tuple[int, bytes]:
    """Send hand-made HTTP/1.1 bytes; return the status code and the raw response."""
    parts = urlsplit(origin)
    with socket.create_connection((parts.hostname, parts.port), timeout=read_timeout) as s:
        s.sendall(request)
        return _read_status(s, read_timeout)


def _read_status(s: socket.socket, read_timeout: float) -> tuple[int, bytes]:
    s.settimeout(read_timeout)
    data = b""
    while b"\r\n" not in data:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    # Read whatever else is immediately there (headers and a small body).
    s.settimeout(1)
    try:
        while len(data) < 1 << 20:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    except (socket.timeout, OSError):
        pass
    line = data.split(b"\r\n", 1)[0].decode("latin-1")
    fields = line.split(" ")
    if len(fields) < 2 or not fields[1].isdigit():
        raise AssertionError(f"not an HTTP response: {data[:200]!r}")
    return int(fields[1]), data


def post_oversize(origin: str, path: str, key: str, total: int) -> tuple[int, bytes]:
    """POST a JSON body of `total` bytes, streaming it until the server answers or hangs up.

    A server may answer 413 from the Content-Length alone or after reading up to its limit;
    either way it may close before the body is sent, so sending stops at the first error.
    """
    import select

    parts = urlsplit(origin)
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {parts.hostname}:{parts.port}\r\n"
        f"X-Api-Key: {key}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {total}\r\nConnection: close\r\n\r\n"
    ).encode()
    prefix = b'{"name": "'
    suffix = b'"}'
    s = socket.create_connection((parts.hostname, parts.port), timeout=30)
    try:
        s.sendall(head + prefix)
        sent = len(prefix)
        chunk = b"a" * 65536
        body_left = total - len(prefix) - len(suffix)
        while body_left > 0:
            readable, _, _ = select.select([s], [], [], 0)
            if readable:
                break
            n = min(len(chunk), body_left)
            try:
                s.sendall(chunk[:n])
            except OSError:
                break
            body_left -= n
            sent += n
        else:
            try:
                s.sendall(suffix)
            except OSError:
                pass
        return _read_status(s, 30)
    finally:
        s.close()


def error_detail(resp) -> dict:
    """The `{"detail": {"error", "message"}}` body of an error response, asserted. A create's
    refused values come as FastAPI's `{"detail": [{"loc", "msg", "type": "value_error"}]}`
    (what the SDK raises `ValidationError` for); that is returned as the SDK reads it: error
    `ValidationError`, the messages joined with "; ", and the first item's `loc`."""
    try:
        body = resp.json()
    except ValueError as e:
        raise AssertionError(f"error body is not JSON: {resp.status_code} {resp.text[:300]!r}") from e
    assert isinstance(body, dict) and "detail" in body, f"no 'detail' in {body!r}"
    detail = body["detail"]
    if isinstance(detail, list):
        assert resp.status_code == 422 and detail, f"a list 'detail' off a 422: {body!r}"
        for item in detail:
            assert item.get("type") == "value_error", f"not a value error: {body!r}"
            assert isinstance(item.get("msg"), str) and item["msg"], f"no msg in {body!r}"
            assert isinstance(item.get("loc"), list) and item["loc"][:1] == ["body"], f"bad loc in {body!r}"
        return {
            "error": "ValidationError",
            "message": "; ".join(item["msg"] for item in detail),
            "loc": detail[0]["loc"],
        }
    assert isinstance(detail, dict), f"'detail' is not an object: {body!r}"
    assert isinstance(detail.get("error"), str) and detail["error"], f"no detail.error in {body!r}"
    assert isinstance(detail.get("message"), str) and detail["message"], f"no detail.message in {body!r}"
    return detail


def audit_entries(server, timeout: float = 30) -> list[dict]:
    """Every entry of the server's audit log so far, page by page (`after` the last one seen):
    a session's tests fill many pages. Each read of the log is itself logged, so the log never
    runs dry: a page that is not full is the last."""
    entries: list[dict] = []
    after, size = 0, 1000
    while True:
        r = requests.get(
            f"{server.api_base}/audit",
            params={"after": after, "limit": size},
            headers=server.headers(),
            timeout=timeout,
        )
        assert r.status_code == 200, r.text
        page = r.json()["entries"]
        assert not page or page[0]["seq"] > after, "pages move forward"
        entries += page
        if len(page) < size:
            return entries
        after = page[-1]["seq"]

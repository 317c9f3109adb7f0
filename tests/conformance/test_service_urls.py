"""Service URLs and download links (LANGSMITH-API.md §2.3, §6) through the Python SDK: an HTTP
server and a WebSocket echo server started inside a sandbox, reached through `sb.service(port)`,
the service host (`<port>-<id>.localhost`) and headless Chromium via `browser_url`; tokens that
are expired, tampered with, for another sandbox, or revoked are refused; a download link works
with plain curl (no key), honours Range and stops after its expiry."""

from __future__ import annotations

import hashlib
import html
import re
import shutil
import struct
import subprocess
import tempfile
import time
import zlib

import httpx
import pytest
import requests

from helpers import audit_entries, uniq, wait_until

TOKEN = "X-Langsmith-Sandbox-Service-Token"
WEB_PORT = 8000
WS_PORT = 8766
TITLE = "Warren service test"

PAGE = f"""<!doctype html>
<html><head><title>{TITLE}</title><script src="/app.js"></script></head>
<body style="background:#fff"><h1 style="font-size:64px;color:#c00">Hello from the sandbox</h1></body></html>
"""
# Loaded by an absolute path: it only works where the app owns `/` (its service host).
APP_JS = "document.title = document.title + ' (app.js loaded)';\n"

# A WebSocket echo server in the standard library only (RFC 6455: handshake, masked client
# frames, unmasked answers), so the test needs no package inside the sandbox.
WS_SERVER = r'''
import base64, hashlib, socket, threading
G = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
def handle(c):
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = c.recv(4096)
        if not chunk:
            return
        data += chunk
    key = [l.split(b":", 1)[1].strip() for l in data.split(b"\r\n") if l.lower().startswith(b"sec-websocket-key:")][0]
    acc = base64.b64encode(hashlib.sha1(key + G).digest())
    c.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: " + acc + b"\r\n\r\n")
    f = c.makefile("rb")
    while True:
        h = f.read(2)
        if len(h) < 2:
            return
        op, n = h[0] & 0x0F, h[1] & 0x7F
        if n == 126:
            n = int.from_bytes(f.read(2), "big")
        elif n == 127:
            n = int.from_bytes(f.read(8), "big")
        mask = f.read(4)
        p = bytes(b ^ mask[i % 4] for i, b in enumerate(f.read(n)))
        if op == 8:
            c.sendall(b"\x88\x00")
            return
        if op in (1, 2):
            p = b"echo:" + p
            hdr = bytes([0x80 | op])
            if len(p) < 126:
                hdr += bytes([len(p)])
            elif len(p) < 65536:
                hdr += bytes([126]) + len(p).to_bytes(2, "big")
            else:
                hdr += bytes([127]) + len(p).to_bytes(8, "big")
            c.sendall(hdr + p)
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", WS_PORT))
s.listen()
while True:
    c, _ = s.accept()
    threading.Thread(target=handle, args=(c,), daemon=True).start()
'''.replace("WS_PORT", str(WS_PORT))


def _listening(sb, port: int) -> bool:
    probe = f"python3 -c \"import socket; socket.create_connection(('127.0.0.1', {port}), 1)\""
    return sb.run(probe).exit_code == 0


@pytest.fixture(scope="module")
def web(sb):
    """The page, its script and a 5 MiB file served by `python3 -m http.server` in the sandbox,
    and the WebSocket echo server; returns the big file's sha256."""
    sb.write("/tmp/www/index.html", PAGE)
    sb.write("/tmp/www/app.js", APP_JS)
    sb.write("/tmp/ws_echo.py", WS_SERVER)
    sb.run("head -c 5242880 /dev/urandom > /tmp/www/big.bin")
    digest = sb.run("sha256sum /tmp/www/big.bin").stdout.split()[0]
    sb.run(f"cd /tmp/www && nohup python3 -m http.server {WEB_PORT} --bind 127.0.0.1 >/dev/null 2>&1 &")
    sb.run("nohup python3 /tmp/ws_echo.py >/dev/null 2>&1 &")
    assert wait_until(lambda: _listening(sb, WEB_PORT) and _listening(sb, WS_PORT), timeout=20), (
        "the servers in the sandbox did not come up"
    )
    return digest


def _mint(server, name: str, port: int, **body) -> dict:
    r = requests.post(
        f"{server.api_base}/boxes/{name}/service-url",
        json={"port": port, **body},
        headers=server.headers(),
        timeout=30,
    )
    assert r.status_code == 200, r.text
    return r.json()


def _metric(server, name: str) -> int:
    text = requests.get(f"{server.origin}/metrics", headers=server.headers(), timeout=30).text
    for line in text.splitlines():
        if line.startswith(name + " "):
            return int(float(line.split()[-1]))
    return 0


def _audit(server, action: str, target: str) -> list[dict]:
    """Every audit entry with this action and target."""
    return [e for e in audit_entries(server) if e["action"] == action and e.get("target") == target]


def test_the_sdk_reaches_an_http_server_in_the_sandbox(server, sb, web):
    proxied = 'warren_service_requests_total{outcome="proxied"}'
    down = 'warren_service_bytes_total{direction="down"}'
    before = (_metric(server, proxied), _metric(server, down))
    svc = sb.service(WEB_PORT)
    assert svc.expires_at.endswith("Z")
    r = svc.get("/")
    assert r.status_code == 200, r.text
    assert f"<title>{TITLE}</title>" in r.text
    # The server's own answers come through: a 404 for a missing file, a query kept.
    assert svc.get("/nope.txt").status_code == 404
    assert svc.get("/app.js?v=1").text == APP_JS
    # A large body, streamed, byte-exact.
    big = svc.get("/big.bin", timeout=60)
    assert big.status_code == 200
    assert hashlib.sha256(big.content).hexdigest() == web
    # Re-minting is repeatable (the SDK refreshes this way) and the old token keeps working.
    again = sb.service(WEB_PORT)
    assert again.get("/").status_code == 200
    assert svc.get("/").status_code == 200
    # Counted and audited: who, port, what, bytes.
    assert wait_until(lambda: _metric(server, proxied) >= before[0] + 6, timeout=10)
    assert wait_until(lambda: _metric(server, down) >= before[1] + 5242880, timeout=10)
    entries = wait_until(
        lambda: [e for e in _audit(server, "service", sb.id) if "GET /big.bin" in e["detail"]],
        timeout=10,
    )
    assert entries, "the big download is not in the audit log"
    detail = entries[-1]["detail"]
    assert detail.startswith(f"port {WEB_PORT} GET /big.bin up ")
    assert int(detail.split(" down ")[1].split()[0]) >= 5242880
    assert entries[-1]["user_id"]


def test_the_service_host_serves_the_app_at_its_root(server, sb, web):
    s = _mint(server, sb.name, WEB_PORT)
    assert s["browser_url"].startswith(f"http://{WEB_PORT}-{sb.id}.localhost:{server.port}/__auth?token=")
    host = f"{WEB_PORT}-{sb.id}.localhost:{server.port}"
    r = requests.get(
        f"{server.origin}/app.js", headers={"Host": host, TOKEN: s["token"]}, timeout=30
    )
    assert r.status_code == 200 and r.text == APP_JS
    # The browser flow: __auth sets an HttpOnly cookie and redirects; the cookie alone works.
    a = requests.get(
        f"{server.origin}/__auth",
        params={"token": s["token"], "redirect": "/app.js"},
        headers={"Host": host},
        allow_redirects=False,
        timeout=30,
    )
    assert a.status_code == 302 and a.headers["location"] == "/app.js"
    cookie = a.headers["set-cookie"]
    assert "HttpOnly" in cookie
    value = cookie.split(";", 1)[0]
    r = requests.get(f"{server.origin}/app.js", headers={"Host": host, "Cookie": value}, timeout=30)
    assert r.status_code == 200 and r.text == APP_JS
    # Without it, the same request is refused.
    r = requests.get(f"{server.origin}/app.js", headers={"Host": host}, timeout=30)
    assert r.status_code == 401


def test_a_websocket_echo_works_through_the_service_url(server, sb, web):
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    svc = sb.service(WS_PORT)
    url = svc.service_url.replace("http://", "ws://") + "/ws"
    with connect(url, additional_headers={TOKEN: svc.token}, open_timeout=30) as ws:
        ws.send("hello")
        assert ws.recv(timeout=30) == "echo:hello"
        blob = bytes(range(256)) * 800  # 200 KiB, several TCP segments each way
        ws.send(blob)
        assert ws.recv(timeout=30) == b"echo:" + blob
        # Revoking the port's grant cuts the open connection, not only new requests.
        d = requests.delete(
            f"{server.api_base}/boxes/{sb.name}/service-urls", params={"port": WS_PORT}, headers=server.headers(), timeout=30
        )
        assert d.status_code == 204
        # Nothing is sent: the cut alone must end the wait (a TimeoutError fails the test).
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=10)
    # No token, no upgrade.
    with pytest.raises(Exception) as e:
        connect(url, open_timeout=30)
    assert "401" in str(e.value)


def test_expired_tampered_foreign_and_revoked_tokens_are_refused(server, client, sb, web):
    base = f"{server.origin}/svc/{sb.id}/{WEB_PORT}/"
    short = _mint(server, sb.name, WEB_PORT, expires_in_seconds=1)
    assert httpx.get(base, headers={TOKEN: short["token"]}, timeout=30).status_code == 200
    time.sleep(2.5)
    expired = httpx.get(base, headers={TOKEN: short["token"]}, timeout=30)
    assert expired.status_code == 401 and "expired" in expired.text

    good = _mint(server, sb.name, WEB_PORT)["token"]
    head, payload, sig = good.split(".")
    forged_sig = sig[:-2] + ("AA" if not sig.endswith("AA") else "BB")
    for bad in (f"{head}.{payload}.{forged_sig}", good[:-1], "not-a-token"):
        r = httpx.get(base, headers={TOKEN: bad}, timeout=30)
        assert r.status_code == 401, (bad, r.status_code, r.text)

    with client.sandbox(name=uniq("other"), timeout=60) as other:
        foreign = _mint(server, other.name, WEB_PORT)["token"]
        r = httpx.get(base, headers={TOKEN: foreign}, timeout=30)
        assert r.status_code == 403, r.text
        # The right sandbox, the wrong port.
        r = httpx.get(f"{server.origin}/svc/{sb.id}/{WS_PORT}/", headers={TOKEN: good}, timeout=30)
        assert r.status_code == 403

        # A stopped sandbox is woken by a request (nothing listens after the restart: 502).
        other.stop()
        assert other.status == "stopped"
        r = httpx.get(f"{server.origin}/svc/{other.id}/{WEB_PORT}/", headers={TOKEN: foreign}, timeout=120)
        assert r.status_code == 502, r.text
        assert client.get_sandbox(other.name).status == "ready"

    listed = requests.get(f"{server.api_base}/boxes/{sb.name}/service-urls", headers=server.headers(), timeout=30)
    assert WEB_PORT in [g["port"] for g in listed.json()["items"]]
    d = requests.delete(
        f"{server.api_base}/boxes/{sb.name}/service-urls",
        params={"port": WEB_PORT},
        headers=server.headers(),
        timeout=30,
    )
    assert d.status_code == 204
    r = httpx.get(base, headers={TOKEN: good}, timeout=30)
    assert r.status_code == 403 and "revoked" in r.text


HEADERS_PORT = 8002
# Answers every GET with the request's headers as JSON: what the app behind a service URL sees.
HEADERS_SERVER = r'''
import http.server, json
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({k.lower(): v for k, v in self.headers.items()}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
http.server.HTTPServer(("127.0.0.1", %d), H).serve_forever()
''' % HEADERS_PORT


def _sign_in(server, host: str, key: str, path: str = "/") -> requests.Response:
    """A browser opening `path` on a login-mode service host: sent to the sign-in page on the
    API's origin, the form posted with `key`; returns the last answer, not following it."""
    first = requests.get(
        f"{server.origin}{path}", headers={"Host": host, "Accept": "text/html"}, allow_redirects=False, timeout=30
    )
    assert first.status_code == 302, first.text
    login = first.headers["location"]
    assert login.startswith(f"{server.origin}/auth/service-login?"), login
    page = requests.get(login, timeout=30)
    assert page.status_code == 200 and 'name=api_key' in page.text
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    fields = dict(re.findall(r'type=hidden name=(\w+) value="([^"]*)"', page.text))
    return requests.post(
        f"{server.origin}/auth/service-login",
        data={**{k: html.unescape(v) for k, v in fields.items()}, "api_key": key},
        allow_redirects=False,
        timeout=30,
    )


def test_a_login_mode_service_url_signs_a_browser_in_and_names_the_user_to_the_app(server, client, sb):
    """`access="restricted"`: the SDK gets a ServiceLoginURL, token mode is refused (409) while
    the grant stands, a browser signs in on the API's origin with its key and comes back with a
    session cookie, and the app sees who it is in a user token the SDK's own verifier accepts
    by the server's JWKS; a client's forged user headers never reach the app; a user who may
    not read the sandbox is refused until the port is shared with the workspace."""
    from langsmith.sandbox import SandboxClientError, SandboxTokenVerifier, ServiceLoginURL

    sb.write("/tmp/headers.py", HEADERS_SERVER)
    sb.run("nohup python3 /tmp/headers.py >/dev/null 2>&1 &")
    assert wait_until(lambda: _listening(sb, HEADERS_PORT), timeout=20)
    host = f"{HEADERS_PORT}-{sb.id}.localhost:{server.port}"
    login = client.service(sb.name, HEADERS_PORT, access="restricted")
    assert isinstance(login, ServiceLoginURL)
    assert login.url == f"http://{host}/" and login.access == "restricted"
    with pytest.raises(SandboxClientError):
        client.service(sb.name, HEADERS_PORT)
    # A program gets no page, and is told why.
    r = requests.get(f"{server.origin}/", headers={"Host": host}, timeout=30)
    assert r.status_code == 401 and "shared by login" in r.text

    back = _sign_in(server, host, server.key, "/page?x=1")
    assert back.status_code == 303, back.text
    auth = back.headers["location"]
    assert auth.startswith(f"http://{host}/__auth?code="), auth
    a = requests.get(f"{server.origin}/{auth.split('/', 3)[3]}", headers={"Host": host}, allow_redirects=False, timeout=30)
    assert a.status_code == 302 and a.headers["location"] == "/page?x=1", a.text
    cookie = a.headers["set-cookie"]
    assert "HttpOnly" in cookie
    session = cookie.split(";", 1)[0]
    seen = requests.get(
        f"{server.origin}/page?x=1",
        headers={"Host": host, "Cookie": session, "X-Langsmith-User-Id": "forged", "X-Langsmith-User-Email": "x@evil"},
        timeout=30,
    )
    assert seen.status_code == 200, seen.text
    h = seen.json()
    assert "x-langsmith-user-email" not in h
    assert h["x-langsmith-user-id"] != "forged"
    assert "warren_svc" not in h.get("cookie", "")
    verifier = SandboxTokenVerifier(jwks_url=f"{server.origin}/.well-known/jwks.json")
    user = verifier.verify_user_token(h["x-langsmith-user-token"], audience=h["host"], issuer=server.origin)
    assert user.subject == h["x-langsmith-user-id"]
    with pytest.raises(Exception):
        verifier.verify_user_token(h["x-langsmith-user-token"], audience=f"1-{sb.id}.localhost:{server.port}")

    made = requests.post(f"{server.api_base}/keys", json={"name": uniq("dora")}, headers=server.headers(), timeout=30)
    assert made.status_code in (200, 201), made.text
    dora = made.json()
    try:
        refused = _sign_in(server, host, dora["key"])
        assert refused.status_code == 403 and "may not open" in refused.text
        workspace = client.service(sb.name, HEADERS_PORT, access="workspace")
        assert workspace.access == "workspace"
        admitted = _sign_in(server, host, dora["key"])
        assert admitted.status_code == 303, admitted.text
        code_path = admitted.headers["location"].split("/", 3)[3]
        a = requests.get(f"{server.origin}/{code_path}", headers={"Host": host}, allow_redirects=False, timeout=30)
        assert a.status_code == 302, a.text
        doras = a.headers["set-cookie"].split(";", 1)[0]
        # She reaches the app of a sandbox she cannot otherwise see, as herself.
        seen = requests.get(f"{server.origin}/", headers={"Host": host, "Cookie": doras}, timeout=30)
        assert seen.status_code == 200, seen.text
        assert seen.json()["x-langsmith-user-id"] not in ("", h["x-langsmith-user-id"])
    finally:
        requests.delete(f"{server.api_base}/keys/{dora['id']}", headers=server.headers(), timeout=30)
    # Her key revoked, her session ends.
    r = requests.get(f"{server.origin}/", headers={"Host": host, "Cookie": doras}, timeout=30)
    assert r.status_code == 401 and "shared by login" in r.text
    # Revoking the grant ends the session and makes way for tokens again.
    d = requests.delete(
        f"{server.api_base}/boxes/{sb.name}/service-urls", params={"port": HEADERS_PORT}, headers=server.headers(), timeout=30
    )
    assert d.status_code == 204
    r = requests.get(f"{server.origin}/", headers={"Host": host, "Cookie": session}, timeout=30)
    assert r.status_code == 403
    assert sb.service(HEADERS_PORT).get("/").status_code == 200


def _curl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["curl", "-sS", *args], capture_output=True, timeout=60)


def test_a_download_link_works_with_plain_curl_and_expires(sb):
    content = b"0123456789abcdefghij" * 100
    sb.write("/tmp/dl/data.txt", content)
    link = sb.generate_download_url(
        "/tmp/dl/data.txt", expires_in_seconds=4, content_type="text/plain", content_disposition="inline"
    )
    assert link.expires_at and link.expires_at.endswith("Z")
    full = _curl(link.download_url)
    assert full.returncode == 0 and full.stdout == content
    part = _curl("-D", "-", "-r", "10-19", link.download_url)
    head, _, body = part.stdout.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 206"), head
    assert b"content-range: bytes 10-19/2000" in head.lower()
    assert body == content[10:20]
    tail = _curl("-r", "-5", link.download_url)
    assert tail.stdout == content[-5:]
    past = _curl("-o", "/dev/null", "-w", "%{http_code}", "-r", "5000-", link.download_url)
    assert past.stdout == b"416"
    hd = _curl("-I", link.download_url).stdout.lower()
    assert hd.startswith(b"http/1.1 200")
    assert b"content-type: text/plain" in hd
    assert b'content-disposition: inline; filename="data.txt"' in hd
    assert b"content-security-policy: sandbox" in hd
    assert b"content-length: 2000" in hd
    time.sleep(5)
    gone = _curl("-o", "/dev/null", "-w", "%{http_code}", link.download_url)
    assert gone.stdout == b"410"
    forever = sb.generate_download_url("/tmp/dl/data.txt")
    assert forever.expires_at is None
    assert _curl(forever.download_url).stdout == content


def _png_is_not_blank(data: bytes) -> bool:
    """Whether a PNG's pixels take more than two distinct byte values (a blank page is one
    colour)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat = 8, b""
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        if kind == b"IDAT":
            idat += data[pos + 8 : pos + 8 + length]
        pos += 12 + length
    return len(set(zlib.decompress(idat))) > 2


def test_browser_url_opens_the_page_in_headless_chromium(sb, web, tmp_path):
    chromium = shutil.which("chromium")
    assert chromium, "Debian's chromium is needed (scripts/deps.sh installs it)"
    svc = sb.service(WEB_PORT)
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=800,600",
    ]

    def run(*extra: str) -> subprocess.CompletedProcess:
        with tempfile.TemporaryDirectory() as profile:
            return subprocess.run(
                [chromium, *flags, f"--user-data-dir={profile}", *extra, svc.browser_url],
                capture_output=True,
                timeout=120,
            )

    dom = run("--virtual-time-budget=5000", "--dump-dom")
    text = dom.stdout.decode(errors="replace")
    # The title set by /app.js: the redirect's cookie worked and the absolute path resolved on
    # the service host.
    assert f"<title>{TITLE} (app.js loaded)</title>" in text, dom.stderr.decode(errors="replace")[-2000:]
    assert "Hello from the sandbox" in text
    shot = tmp_path / "service.png"
    r = run("--virtual-time-budget=5000", f"--screenshot={shot}")
    assert shot.exists(), r.stderr.decode(errors="replace")[-2000:]
    assert _png_is_not_blank(shot.read_bytes())

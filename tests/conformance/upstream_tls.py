"""A test CA the server's egress proxy trusts for upstreams (`--egress-upstream-ca`), and an
HTTPS server in a network namespace the test creates, with a certificate from that CA.

The namespace holds an address of a documentation range (198.51.100.0/24): it exists only on
this machine, so no packet of these tests leaves it, and the proxy's policy (which refuses
private and loopback ranges) lets the sandbox reach it as it would a public service.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from functools import lru_cache
from pathlib import Path

HOST_ADDR = "198.51.100.1"
UPSTREAM_ADDR = "198.51.100.2"


def _run(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True)


@lru_cache(maxsize=1)
def test_ca() -> tuple[Path, Path]:
    """(certificate, key) of a CA made for this test session."""
    d = Path(tempfile.mkdtemp(prefix="warren-upstream-ca-"))
    cert, key = d / "ca.pem", d / "ca.key"
    _run(
        "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
        "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2",
        "-subj", "/CN=warren conformance upstream CA",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )
    return cert, key


def _server_cert(d: Path) -> tuple[Path, Path]:
    ca_cert, ca_key = test_ca()
    key, csr, cert, ext = d / "srv.key", d / "srv.csr", d / "srv.pem", d / "srv.ext"
    _run(
        "openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={UPSTREAM_ADDR}",
    )
    ext.write_text(
        f"subjectAltName=IP:{UPSTREAM_ADDR}\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n"
    )
    _run(
        "openssl", "x509", "-req", "-in", str(csr), "-CA", str(ca_cert), "-CAkey", str(ca_key),
        "-CAcreateserial", "-out", str(cert), "-days", "2", "-extfile", str(ext),
    )
    return cert, key


SERVER = textwrap.dedent(
    """
    import http.server, json, os, re, ssl, sys
    cert, key, log, expected = sys.argv[1], sys.argv[2], sys.argv[3], os.environ["EXPECTED"]
    aws_key, aws_secret = os.environ["AWS_KEY"], os.environ["AWS_SECRET"]

    def sigv4_valid(method, path, headers, body):
        # Checks a SigV4 signature with botocore's own implementation and the real key.
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest
        from botocore.credentials import Credentials
        m = re.match(
            r"AWS4-HMAC-SHA256 Credential=([^/]+)/(\\d{8})/([^/]+)/([^/]+)/aws4_request, ?"
            r"SignedHeaders=([^,]+), ?Signature=([0-9a-f]+)$",
            headers.get("authorization", ""),
        )
        if not m or m.group(1) != aws_key:
            return False
        region, service, signed = m.group(3), m.group(4), m.group(5).split(";")
        req = AWSRequest(method=method, url="https://" + headers["host"] + path, data=body,
                         headers={k: v for k, v in headers.items() if k in signed})
        req.context["timestamp"] = headers["x-amz-date"]
        auth = SigV4Auth(Credentials(aws_key, aws_secret), service, region)
        string_to_sign = auth.string_to_sign(req, auth.canonical_request(req))
        return auth.signature(string_to_sign, req) == m.group(6)

    class H(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            self.do_GET()

        def do_PUT(self):
            self.do_GET()

        def do_GET(self):
            headers = {k.lower(): v for k, v in self.headers.items()}
            body = self.rfile.read(int(headers.get("content-length", "0")))
            with open(log, "a") as f:
                f.write(json.dumps({"path": self.path, "method": self.command, "headers": headers,
                                    "body": body.decode(errors="replace")}) + "\\n")
            # Never echo a credential back: the sandbox must not learn it from the answer.
            if self.path == "/cb":
                # A proxy callback: it gives the credential the other paths expect.
                body = json.dumps({"headers": {"Authorization": "Bearer " + expected}}).encode()
            elif self.path.startswith("/aws/"):
                ok = sigv4_valid(self.command, self.path, headers, body)
                body = ("signed" if ok else "bad-signature").encode()
            else:
                auth = self.headers.get("Authorization") == "Bearer " + expected
                body = ("authorized" if auth else "anonymous").encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    srv = http.server.ThreadingHTTPServer(("0.0.0.0", 443), H)
    # The handshake happens in each connection's thread: done in accept(), one client that
    # connects and waits (the proxy opens its upstream before its first request) would
    # block every other.
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True, do_handshake_on_connect=False)
    print("ready", flush=True)
    srv.serve_forever()
    """
)


class Upstream:
    """An HTTPS server on UPSTREAM_ADDR:443 in a fresh network namespace linked to the host.
    It logs every request's path and headers to `requests()` and answers `authorized` when the
    Authorization header carries `Bearer <expected>`; under `/aws/` it answers `signed` when
    the request carries a valid SigV4 signature made with (aws_key, aws_secret); a POST to
    `/cb` is a proxy callback, answered with `Bearer <expected>` as the Authorization header."""

    def __init__(self, expected: str, aws_key: str = "", aws_secret: str = "") -> None:
        tag = uuid.uuid4().hex[:6]
        self.ns = f"wup-{tag}"
        self.host_if, self.ns_if = f"wuh{tag}", f"wun{tag}"
        self.dir = Path(tempfile.mkdtemp(prefix="warren-upstream-"))
        self.log = self.dir / "requests.jsonl"
        self.log.touch()
        cert, key = _server_cert(self.dir)
        script = self.dir / "server.py"
        script.write_text(SERVER)
        _run("ip", "netns", "add", self.ns)
        try:
            _run("ip", "link", "add", self.host_if, "type", "veth", "peer", "name", self.ns_if)
            _run("ip", "link", "set", self.ns_if, "netns", self.ns)
            _run("ip", "addr", "add", f"{HOST_ADDR}/30", "dev", self.host_if)
            _run("ip", "link", "set", self.host_if, "up")
            _run("ip", "-n", self.ns, "addr", "add", f"{UPSTREAM_ADDR}/30", "dev", self.ns_if)
            _run("ip", "-n", self.ns, "link", "set", self.ns_if, "up")
            _run("ip", "-n", self.ns, "link", "set", "lo", "up")
            self.proc = subprocess.Popen(
                ["ip", "netns", "exec", self.ns, sys.executable, str(script), str(cert), str(key), str(self.log)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env={**os.environ, "EXPECTED": expected, "AWS_KEY": aws_key, "AWS_SECRET": aws_secret},
                text=True,
            )
            line = self.proc.stdout.readline()
            if line.strip() != "ready":
                raise RuntimeError(f"upstream server did not start: {line} {self.proc.stderr.read()}")
        except BaseException:
            self.close()
            raise

    def requests(self) -> list[dict]:
        return [json.loads(line) for line in self.log.read_text().splitlines() if line.strip()]

    def close(self) -> None:
        proc = getattr(self, "proc", None)
        if proc is not None:
            proc.kill()
            proc.wait(timeout=10)
        subprocess.run(["ip", "link", "del", self.host_if], capture_output=True)
        subprocess.run(["ip", "netns", "del", self.ns], capture_output=True)
        time.sleep(0.1)

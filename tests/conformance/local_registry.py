"""A real OCI registry on 127.0.0.1 (Debian's `docker-registry`) and a tiny image pushed to
it: bash, a few coreutils and their libraries from this host, an `app` user, ENV, WORKDIR and
USER in the config. Pushed with the distribution API by hand (no Docker engine here)."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import socket
import subprocess
import tarfile
import time
from pathlib import Path

import requests

BINARIES = ["/bin/bash", "/usr/bin/id", "/usr/bin/cat", "/usr/bin/env", "/usr/bin/pwd", "/usr/bin/ls", "/usr/bin/sleep"]


def _libs(binary: str) -> set[str]:
    out = subprocess.run(["ldd", binary], capture_output=True, text=True, check=True).stdout
    libs = set()
    for line in out.splitlines():
        parts = line.split()
        for p in parts:
            if p.startswith("/"):
                libs.add(p)
    return libs


def _layer() -> bytes:
    # Each file under the name the binary or the loader asks for, with the bytes it resolves to.
    files: set[str] = set()
    for b in BINARIES:
        files.add(b)
        files |= _libs(b)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        def add_dir(name: str, mode: int = 0o755, uid: int = 0) -> None:
            info = tarfile.TarInfo(name)
            info.type = tarfile.DIRTYPE
            info.mode = mode
            info.uid = info.gid = uid
            tar.addfile(info)

        def add_file(name: str, data: bytes, mode: int = 0o644) -> None:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = mode
            tar.addfile(info, io.BytesIO(data))

        for d in ["usr", "usr/bin", "usr/lib", "usr/lib/x86_64-linux-gnu", "lib64", "etc", "root", "tmp"]:
            add_dir(d, 0o1777 if d == "tmp" else 0o755)
        add_dir("work", 0o755, uid=1000)
        for name, target in [("bin", "usr/bin"), ("lib", "usr/lib")]:
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            tar.addfile(info)
        seen = set()
        for f in sorted(files):
            rel = f.lstrip("/")
            for prefix, to in (("bin/", "usr/bin/"), ("lib/", "usr/lib/")):
                if rel.startswith(prefix):
                    rel = to + rel[len(prefix):]
            if rel in seen:
                continue
            seen.add(rel)
            add_file(rel, Path(os.path.realpath(f)).read_bytes(), 0o755)
        add_file("etc/passwd", b"root:x:0:0:root:/root:/bin/bash\napp:x:1000:1000:app:/work:/bin/bash\n")
        add_file("etc/group", b"root:x:0:\napp:x:1000:\n")
        add_file("work/hello.txt", b"from the image\n")
    return gzip.compress(buf.getvalue())


class LocalRegistry:
    def __init__(self, tmp: Path) -> None:
        binary = shutil.which("docker-registry")
        if binary is None:
            raise RuntimeError("docker-registry is not installed: apt-get install docker-registry (scripts/deps.sh does)")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        config = tmp / "config.yml"
        config.write_text(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n"
            f"    rootdirectory: {tmp / 'data'}\nhttp:\n  addr: 127.0.0.1:{self.port}\n"
        )
        self.proc = subprocess.Popen([binary, "serve", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.base = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if requests.get(f"{self.base}/v2/", timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.1)
        self.close()
        raise RuntimeError("docker-registry did not start")

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()

    def _blob(self, repo: str, data: bytes) -> str:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        r = requests.post(f"{self.base}/v2/{repo}/blobs/uploads/", timeout=30)
        assert r.status_code == 202, r.text
        loc = r.headers["Location"]
        if loc.startswith("/"):
            loc = self.base + loc
        sep = "&" if "?" in loc else "?"
        r = requests.put(f"{loc}{sep}digest={digest}", data=data, headers={"Content-Type": "application/octet-stream"}, timeout=60)
        assert r.status_code == 201, r.text
        return digest

    def push_tiny_image(self, repo: str, tag: str) -> str:
        """Pushes the tiny image; returns its reference."""
        layer = _layer()
        diff_id = "sha256:" + hashlib.sha256(gzip.decompress(layer)).hexdigest()
        config = json.dumps(
            {
                "architecture": "amd64",
                "os": "linux",
                "config": {
                    "User": "app",
                    "WorkingDir": "/work",
                    "Env": ["PATH=/usr/bin:/bin", "GREETING=hello from the image"],
                    "Cmd": ["/bin/bash"],
                },
                "rootfs": {"type": "layers", "diff_ids": [diff_id]},
            }
        ).encode()
        layer_digest = self._blob(repo, layer)
        config_digest = self._blob(repo, config)
        manifest = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": len(config)},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer_digest, "size": len(layer)}],
        }
        r = requests.put(
            f"{self.base}/v2/{repo}/manifests/{tag}",
            data=json.dumps(manifest),
            headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"},
            timeout=30,
        )
        assert r.status_code == 201, r.text
        return f"127.0.0.1:{self.port}/{repo}:{tag}"

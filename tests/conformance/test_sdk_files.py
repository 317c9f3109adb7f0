"""File operations through the Python SDK: write/read, stat/read_range, glob/ls/grep."""

from __future__ import annotations

import hashlib

import pytest
from langsmith.sandbox import ResourceNotFoundError, SandboxClientError, SandboxOperationError


def test_readme_file_operations(sb):
    sb.write("/app/script.py", "print('Hello from file!')")
    result = sb.run("python /app/script.py")
    assert result.stdout == "Hello from file!\n"
    assert sb.read("/app/script.py").decode() == "print('Hello from file!')"
    sb.write("/app/data.bin", b"\x00\x01\x02\x03")
    assert sb.read("/app/data.bin") == b"\x00\x01\x02\x03"


def test_binary_round_trip_all_byte_values(sb):
    data = bytes(range(256)) * 4096 + bytes(range(255, -1, -1))  # ~1 MiB, every byte value
    sb.write("/tmp/bytes/all.bin", data)
    assert sb.read("/tmp/bytes/all.bin") == data
    # The sandbox sees exactly those bytes, too.
    digest = sb.run("sha256sum /tmp/bytes/all.bin").stdout.split()[0]
    assert digest == hashlib.sha256(data).hexdigest()


def test_read_file_written_by_a_command(sb):
    sb.run("printf 'x\\0y\\377' > /tmp/from-cmd.bin")
    assert sb.read("/tmp/from-cmd.bin") == b"x\x00y\xff"


def test_write_creates_parents_and_overwrites(sb):
    sb.write("/tmp/deep/a/b/c/file.txt", "first version, long")
    sb.write("/tmp/deep/a/b/c/file.txt", "second")
    assert sb.read("/tmp/deep/a/b/c/file.txt") == b"second"
    # Written files belong to the sandbox's user: commands can change them.
    result = sb.run("echo more >> /tmp/deep/a/b/c/file.txt && rm -r /tmp/deep && echo ok")
    assert result.stdout == "ok\n", result.stderr


def test_etc_hosts_and_hostname_name_the_sandbox_and_take_writes(sb):
    """Like any container's: /etc/hostname says the hostname and /etc/hosts maps it to the
    sandbox's address; both are the sandbox's own (bound over the image's), and the SDK's write
    reaches them although they cannot be replaced by a rename."""
    name = sb.run("hostname").stdout.strip()
    assert name and sb.read("/etc/hostname") == f"{name}\n".encode()
    r = sb.run('getent hosts "$(hostname)" && hostname -I')
    assert r.exit_code == 0, r.stderr
    resolved, addresses = r.stdout.splitlines()
    assert resolved.split()[1] == name and resolved.split()[0] in addresses.split(), r.stdout
    hosts = sb.read("/etc/hosts").decode()
    assert hosts.count(name) == 1 and "localhost" in hosts, hosts
    sb.write("/etc/hosts", hosts + "10.9.8.7 db.internal\n")
    assert sb.read("/etc/hosts").decode() == hosts + "10.9.8.7 db.internal\n"
    r = sb.run("getent hosts db.internal && echo '10.9.8.6 cache.internal' >> /etc/hosts && getent hosts cache.internal")
    assert r.exit_code == 0, r.stderr
    assert [line.split()[0] for line in r.stdout.splitlines()] == ["10.9.8.7", "10.9.8.6"], r.stdout


def test_empty_file(sb):
    sb.write("/tmp/empty.txt", b"")
    assert sb.read("/tmp/empty.txt") == b""
    assert sb.run("stat -c %s /tmp/empty.txt").stdout == "0\n"


def test_relative_path_resolves_inside_the_sandbox(sb):
    sb.write("relative-file.txt", "rel")
    assert sb.read("relative-file.txt") == b"rel"


def test_read_missing_file_raises_not_found(sb):
    with pytest.raises(ResourceNotFoundError) as exc:
        sb.read("/tmp/definitely/not/here.txt")
    assert exc.value.resource_type == "file"


def test_read_directory_says_is_a_directory(sb):
    sb.run("mkdir -p /tmp/a-directory")
    with pytest.raises(SandboxClientError) as exc:
        sb.read("/tmp/a-directory")
    assert not isinstance(exc.value, ResourceNotFoundError)
    assert "is a directory" in str(exc.value).lower()


def test_stat(sb):
    sb.write("/tmp/stat.txt", b"0123456789")
    st = sb.stat("/tmp/stat.txt")
    assert st.size_bytes == 10
    assert st.etag
    assert st.last_modified
    with pytest.raises(ResourceNotFoundError):
        sb.stat("/tmp/no-such-stat.txt")
    sb.write("/tmp/stat.txt", b"0123456789abc")
    st2 = sb.stat("/tmp/stat.txt")
    assert st2.size_bytes == 13
    assert st2.etag != st.etag, "a rewrite changes the ETag"


def test_read_range(sb):
    data = bytes(range(256)) * 4
    sb.write("/tmp/range.bin", data)
    etag = sb.stat("/tmp/range.bin").etag

    chunk = sb.read_range("/tmp/range.bin", start=10, end=19)
    assert chunk.partial is True
    assert chunk.content == data[10:20]
    assert chunk.start == 10
    assert chunk.total_bytes == len(data)
    assert chunk.etag == etag

    tail = sb.read_range("/tmp/range.bin", start=1000)
    assert tail.content == data[1000:]
    clamped = sb.read_range("/tmp/range.bin", start=1020, end=5000)
    assert clamped.content == data[1020:], "an end past EOF is clamped"
    suffix = sb.read_range("/tmp/range.bin", suffix_bytes=7)
    assert suffix.content == data[-7:]
    assert suffix.start == len(data) - 7

    unchanged = sb.read_range("/tmp/range.bin", start=0, if_none_match=etag)
    assert unchanged.unchanged is True
    assert unchanged.content == b""

    with pytest.raises(SandboxOperationError):
        sb.read_range("/tmp/range.bin", start=len(data))

    # A stale If-Range gets the whole (new) file, reported as not partial.
    sb.write("/tmp/range.bin", b"rewritten")
    whole = sb.read_range("/tmp/range.bin", start=3, if_range=etag)
    assert whole.partial is False
    assert whole.content == b"rewritten"
    assert whole.start == 0

    with pytest.raises(ResourceNotFoundError):
        sb.read_range("/tmp/no-such-range.bin", start=0)


@pytest.fixture(scope="module")
def tree(sb):
    sb.run(
        "rm -rf /tmp/tree && mkdir -p /tmp/tree/src/pkg /tmp/tree/docs && "
        "printf 'import os\\nNEEDLE = 1\\n' > /tmp/tree/src/main.py && "
        "printf 'x = 2\\n# NEEDLE again\\n' > /tmp/tree/src/pkg/util.py && "
        "printf 'NEEDLE in docs\\n' > /tmp/tree/docs/readme.md && "
        "printf 'top\\n' > /tmp/tree/top.txt"
    )
    return "/tmp/tree"


def test_ls(sb, tree):
    listing = sb.ls(tree)
    by_path = {m.path: m for m in listing}
    assert set(by_path) == {f"{tree}/src", f"{tree}/docs", f"{tree}/top.txt"}
    assert by_path[f"{tree}/src"].is_dir is True
    assert by_path[f"{tree}/top.txt"].is_dir is False
    assert by_path[f"{tree}/top.txt"].size_bytes == 4
    assert by_path[f"{tree}/top.txt"].modified_at


def test_glob(sb, tree):
    result = sb.glob("**/*.py", tree)
    assert sorted(m.path for m in result) == [f"{tree}/src/main.py", f"{tree}/src/pkg/util.py"]
    assert result.truncated is False
    one = sb.glob("src/*.py", tree)
    assert [m.path for m in one] == [f"{tree}/src/main.py"]
    limited = sb.glob("**/*", tree, limit=2)
    assert len(limited) == 2
    assert limited.truncated is True


def test_grep(sb, tree):
    result = sb.grep("NEEDLE", tree)
    found = sorted((m.path, m.line, m.text) for m in result)
    assert found == [
        (f"{tree}/docs/readme.md", 1, "NEEDLE in docs"),
        (f"{tree}/src/main.py", 2, "NEEDLE = 1"),
        (f"{tree}/src/pkg/util.py", 2, "# NEEDLE again"),
    ]
    py_only = sb.grep("NEEDLE", tree, glob="*.py")
    assert sorted(m.path for m in py_only) == [f"{tree}/src/main.py", f"{tree}/src/pkg/util.py"]
    literal = sb.grep("NEEDLE = 1", tree)
    assert [m.path for m in literal] == [f"{tree}/src/main.py"]
    assert len(sb.grep("N.EDLE", tree)) == 0, "the pattern is literal, not a regex"


"""Deep Agents' `LangSmithSandbox` backend wrapping an SDK sandbox."""

from __future__ import annotations

import asyncio

import pytest
from deepagents.backends import LangSmithSandbox

from helpers import uniq


@pytest.fixture(scope="module")
def backend(client):
    with client.sandbox(name=uniq("deepagents")) as sb:
        yield LangSmithSandbox(sb)


def test_execute(backend):
    resp = backend.execute("echo hi; echo err >&2; exit 3")
    assert resp.exit_code == 3
    assert resp.output == "hi\n\nerr\n"
    assert resp.truncated is False
    ok = backend.execute("python3 -c 'print(6 * 7)'", timeout=60)
    assert ok.exit_code == 0
    assert ok.output == "42\n"


def test_execute_async(backend):
    async def main():
        try:
            return await backend.aexecute("echo async-hi")
        finally:
            await backend.aclose()

    resp = asyncio.run(main())
    assert resp.exit_code == 0
    assert resp.output == "async-hi\n"


def test_write_read_edit(backend):
    path = "/tmp/da/notes/todo.txt"
    res = backend.write(path, "hello\nworld\nthird line\n")
    assert res.error is None, res.error
    assert res.path == path

    read = backend.read(path)
    assert read.error is None, read.error
    assert read.file_data["content"] == "hello\nworld\nthird line"
    assert read.total_lines == 3

    page = backend.read(path, offset=1, limit=1)
    assert page.file_data["content"] == "world"
    assert page.next_offset == 2

    edit = backend.edit(path, "world", "there")
    assert edit.error is None, edit.error
    assert edit.occurrences == 1
    assert backend.read(path).file_data["content"] == "hello\nthere\nthird line"

    ambiguous = backend.edit(path, "l", "L")
    assert ambiguous.error, "more than one occurrence without replace_all is an error"
    all_ = backend.edit(path, "l", "L", replace_all=True)
    assert all_.error is None and all_.occurrences == 3
    assert backend.execute(f"cat {path}").output == "heLLo\nthere\nthird Line\n"


def test_read_missing(backend):
    res = backend.read("/tmp/da/does-not-exist.txt")
    assert res.error and "file_not_found" in res.error


def test_ls(backend):
    backend.write("/tmp/da/ls/a.txt", "a")
    backend.write("/tmp/da/ls/b.py", "print('b')\n")
    backend.execute("mkdir -p /tmp/da/ls/sub")
    res = backend.ls("/tmp/da/ls")
    assert res.error is None, res.error
    entries = {e["path"].rstrip("/"): e for e in res.entries}
    assert set(entries) == {"/tmp/da/ls/a.txt", "/tmp/da/ls/b.py", "/tmp/da/ls/sub"}
    assert entries["/tmp/da/ls/sub"]["is_dir"] is True
    assert entries["/tmp/da/ls/a.txt"]["is_dir"] is False


def test_grep_and_glob(backend):
    backend.write("/tmp/da/g/one.py", "alpha\nNEEDLE here\n")
    backend.write("/tmp/da/g/deep/two.py", "NEEDLE first\nbeta\n")
    backend.write("/tmp/da/g/three.md", "no match\n")
    res = backend.grep("NEEDLE", path="/tmp/da/g")
    assert res.error is None, res.error
    found = sorted((m["path"], m["line"], m["text"]) for m in res.matches)
    assert found == [
        ("/tmp/da/g/deep/two.py", 1, "NEEDLE first"),
        ("/tmp/da/g/one.py", 2, "NEEDLE here"),
    ]
    only_md = backend.grep("match", path="/tmp/da/g", glob="*.md")
    assert [m["path"] for m in only_md.matches] == ["/tmp/da/g/three.md"]

    globbed = backend.glob("**/*.py", path="/tmp/da/g")
    assert globbed.error is None, globbed.error
    assert sorted(m["path"] for m in globbed.matches) == ["/tmp/da/g/deep/two.py", "/tmp/da/g/one.py"]


def test_upload_and_download_files(backend):
    data = bytes(range(256))
    up = backend.upload_files([("/tmp/da/files/bin.dat", data), ("relative.txt", b"x")])
    assert up[0].error is None
    assert up[1].error == "invalid_path"
    down = backend.download_files(["/tmp/da/files/bin.dat", "/tmp/da/files/missing", "/tmp/da/files"])
    assert down[0].content == data and down[0].error is None
    assert down[1].error == "file_not_found"
    assert down[2].error == "is_directory"

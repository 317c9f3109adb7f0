"""The async client (`AsyncSandboxClient`): the README's async examples on the default runtime."""

from __future__ import annotations

import asyncio

import pytest
from langsmith.sandbox import AsyncSandboxClient, CommandTimeoutError, ResourceNotFoundError

from helpers import uniq


def _run(coro):
    return asyncio.run(coro)


def test_async_create_run_write_read_delete(server):
    async def main():
        async with AsyncSandboxClient(api_endpoint=server.api_base, api_key=server.key) as client:
            async with await client.sandbox(name=uniq("async")) as sb:
                name = sb.name
                assert sb.status == "ready"
                result = await sb.run("python -c 'print(1 + 1)'")
                assert result.stdout == "2\n"
                assert result.exit_code == 0

                await sb.write("/app/test.txt", "async content")
                content = await sb.read("/app/test.txt")
                assert content.decode() == "async content"
                data = bytes(range(256))
                await sb.write("/tmp/async.bin", data)
                assert await sb.read("/tmp/async.bin") == data

                got = await client.get_sandbox(name)
                assert got.id == sb.id
                assert name in {s.name for s in await client.list_sandboxes()}
            with pytest.raises(ResourceNotFoundError):
                await client.get_sandbox(name)

    _run(main())


def test_async_explicit_create_and_delete(server):
    async def main():
        async with AsyncSandboxClient(api_endpoint=server.api_base, api_key=server.key) as client:
            sb = await client.create_sandbox(name=uniq("async-keep"))
            try:
                assert (await sb.run("echo kept")).stdout == "kept\n"
            finally:
                await client.delete_sandbox(sb.name)
            with pytest.raises(ResourceNotFoundError):
                await client.get_sandbox(sb.name)

    _run(main())


def test_async_streaming_and_errors(server):
    async def main():
        async with AsyncSandboxClient(api_endpoint=server.api_base, api_key=server.key) as client:
            async with await client.sandbox() as sb:
                handle = await sb.run("for i in 1 2 3; do echo $i; sleep 0.2; done; echo e >&2", wait=False)
                chunks = [c async for c in handle]
                result = await handle.result
                assert result.stdout == "1\n2\n3\n"
                assert result.stderr == "e\n"
                assert "".join(c.data for c in chunks if c.stream == "stdout") == "1\n2\n3\n"

                seen = []
                result = await sb.run("echo cb", on_stdout=seen.append)
                assert "".join(seen) == "cb\n" == result.stdout

                h2 = await sb.reconnect(handle.command_id)
                assert (await h2.result).stdout == "1\n2\n3\n"

                with pytest.raises(CommandTimeoutError):
                    await sb.run("sleep 60", timeout=1)

    _run(main())

"""The server's event loop (server/eventloop.py): uvloop where installed, as `theatrum serve` runs it."""

from __future__ import annotations

import asyncio
import sys

import pytest

from server.eventloop import new_event_loop


@pytest.mark.skipif(sys.platform == "win32", reason="uvloop is not installed on Windows")
def test_the_server_loop_is_uvloop_and_runs_the_asyncio_the_server_uses():
    import uvloop

    loop = new_event_loop()
    try:
        assert isinstance(loop, uvloop.Loop)

        async def echo() -> bytes:
            server = await asyncio.start_server(lambda r, w: _echo(r, w), "127.0.0.1", 0)
            port = server.sockets[0].getsockname()[1]
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"pose\n")
            line = await reader.readline()
            writer.close()
            server.close()
            await server.wait_closed()
            return line

        assert loop.run_until_complete(echo()) == b"pose\n"
    finally:
        loop.close()


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(await reader.readline())
    await writer.drain()
    writer.close()

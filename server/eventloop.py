"""The server's event loop: uvloop (libuv) where it is installed, else asyncio's own.

The hub's work is many small socket reads and writes (thousands of pose messages a second); uvloop does the
loop's bookkeeping in C, which leaves more of the one core a Python server has for the rooms.
"""

from __future__ import annotations

import asyncio


def new_event_loop() -> asyncio.AbstractEventLoop:
    """A new uvloop loop, or asyncio's default loop where uvloop is missing (e.g. on Windows)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()

"""Room codes cannot be blocked for everyone: wrong guesses are throttled, right codes are not.

The attack that used to lock a class out: a wrong guess every second or two, each from another address, for a
minute and more (the server-wide budget of 30 a minute then counted right codes too).
The guesses come from real loopback addresses (127.0.0.x) to a real server; the throttle's clock is a test
clock, so the minute passes at once.
"""

from __future__ import annotations

import aiohttp
from hubtools import Lobby

from server.appkeys import HUB


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def post_join(url: str, address: str, code: str, name: str) -> aiohttp.ClientResponse:
    """POST /api/join from a given loopback address."""
    connector = aiohttp.TCPConnector(local_addr=(address, 0), force_close=True)
    async with aiohttp.ClientSession(url, connector=connector) as http:
        response = await http.post("/api/join", json={"code": code, "name": name})
        await response.read()
        return response


def wrong(code: str, n: int) -> str:
    return f"{(int(code) + 1 + n) % 10**8:08d}"


async def test_a_student_gets_in_at_once_while_rotating_addresses_guess(aiohttp_server, tmp_path):
    lobby = await Lobby.open(aiohttp_server, tmp_path / "d", mode="training")
    try:
        clock = Clock()
        lobby.app[HUB].join_throttle.clock = clock
        code = lobby.created["invites"]["student"]["code"]
        statuses = []
        for n in range(90):  # 90 s of guessing, one a second, from 90 addresses
            r = await post_join(lobby.url, f"127.0.0.{10 + n}", wrong(code, n), "Mallory")
            statuses.append(r.status)
            clock.now += 1.0
        assert set(statuses) <= {404, 429} and statuses.count(404) >= 30
        r = await post_join(lobby.url, "127.0.0.200", code, "Real student")
        assert r.status == 201  # first try, while the guessing goes on
    finally:
        await lobby.close()


async def test_a_class_behind_one_address_gets_in_and_a_guesser_backs_off(aiohttp_server, tmp_path):
    lobby = await Lobby.open(aiohttp_server, tmp_path / "d", mode="training")
    try:
        clock = Clock()
        lobby.app[HUB].join_throttle.clock = clock
        code = lobby.created["invites"]["student"]["code"]
        nat = "127.0.0.77"
        for n in range(40):  # a class of 40 behind one NAT, within a minute; two of them mistype once
            if n in (5, 30):
                assert (await post_join(lobby.url, nat, wrong(code, n), f"Student {n}")).status == 404
            r = await post_join(lobby.url, nat, code, f"Student {n}")
            assert r.status == 201, (n, await r.text())
            clock.now += 1.0
        # One address guessing alone: after three misses it waits, longer each time.
        waits = []
        for n in range(6):
            r = await post_join(lobby.url, "127.0.0.99", wrong(code, 100 + n), "Guesser")
            if r.status == 429:
                waits.append(int(r.headers["Retry-After"]))
                clock.now += waits[-1]
                r = await post_join(lobby.url, "127.0.0.99", wrong(code, 100 + n), "Guesser")
            assert r.status == 404
        assert len(waits) >= 2 and waits == sorted(waits) and waits[-1] > waits[0]
    finally:
        await lobby.close()

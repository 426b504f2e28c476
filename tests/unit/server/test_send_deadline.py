"""
The push channel's send deadline: one timer per connection instead of one per send.

A fake socket whose ``send_text`` can be held stands in for uvicorn's (the
relay's real sockets are covered by ``test_websocket.py``); what is checked
is the deadline's contract: a stuck send ends the connection after the
limit, sends that each finish in time never do however long they take in
all, and a cancellation from outside stays a cancellation.
"""

from __future__ import annotations

import asyncio

import pytest

from townsquare.server.config import Limits
from townsquare.server.websocket import _Closed, _Connection, _SendDeadline

pytestmark = pytest.mark.anyio

LIMIT = 0.2


class HeldSocket:
    """A socket whose sends wait while ``open`` is clear."""

    def __init__(self) -> None:
        self.open = asyncio.Event()
        self.open.set()
        self.sent: list[str] = []

    async def send_text(self, text: str) -> None:
        await self.open.wait()
        self.sent.append(text)


async def write(connection: _Connection, texts: list[str], pause: float = 0.0) -> None:
    deadline = _SendDeadline(LIMIT)
    try:
        for text in texts:
            await connection.send_notice(text, deadline)
            if pause:
                await asyncio.sleep(pause)
    finally:
        deadline.close()


def connection(socket: HeldSocket) -> _Connection:
    return _Connection(socket, Limits())  # type: ignore[arg-type]


async def test_a_stuck_send_ends_the_connection_after_the_limit() -> None:
    socket = HeldSocket()
    socket.open.clear()
    task = asyncio.create_task(write(connection(socket), ["stuck"]))
    with pytest.raises(_Closed):
        # A deadline that never fires would hang here: the outer timeout fails instead.
        async with asyncio.timeout(10 * LIMIT):
            await task
    assert socket.sent == []
    # The task ended by _Closed, not by a leftover cancellation.
    assert not task.cancelled()


async def test_sends_that_each_finish_in_time_never_trip_it() -> None:
    socket = HeldSocket()
    texts = [f"n{i}" for i in range(8)]
    # Eight sends over about 0.8 s, four times the limit, each one instant.
    await asyncio.create_task(write(connection(socket), texts, pause=LIMIT / 2))
    assert socket.sent == texts


async def test_a_slow_send_that_finishes_in_time_goes_through() -> None:
    socket = HeldSocket()
    socket.open.clear()
    task = asyncio.create_task(write(connection(socket), ["slow", "next"]))
    await asyncio.sleep(LIMIT / 4)
    socket.open.set()
    await task
    assert socket.sent == ["slow", "next"]


async def test_a_cancellation_from_outside_stays_a_cancellation() -> None:
    socket = HeldSocket()
    socket.open.clear()
    task = asyncio.create_task(write(connection(socket), ["stuck"]))
    await asyncio.sleep(LIMIT / 4)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert task.cancelled()


# -- Sends from the publisher (send_now) -------------------------------------------------


async def test_send_now_sends_at_once_while_the_socket_is_writable() -> None:
    socket = HeldSocket()
    conn = connection(socket)
    assert conn.send_now("a")
    assert conn.send_now("b")
    assert socket.sent == ["a", "b"]  # no task ran in between: sent from this call


async def test_a_send_now_that_must_wait_keeps_the_order() -> None:
    socket = HeldSocket()
    socket.open.clear()
    conn = connection(socket)
    assert conn.send_now("first")  # suspended: a task finishes it
    assert not conn.send_now("second")  # the caller queues it instead
    writer = asyncio.create_task(write(conn, ["second"]))
    await asyncio.sleep(LIMIT / 4)
    assert socket.sent == []
    socket.open.set()
    async with asyncio.timeout(10 * LIMIT):
        await writer
    assert socket.sent == ["first", "second"]


async def test_a_send_now_that_never_drains_fails_the_connection() -> None:
    socket = HeldSocket()
    socket.open.clear()
    limits = Limits(websocket_send_timeout_seconds=LIMIT)
    conn = _Connection(socket, limits)  # type: ignore[arg-type]
    failures: list[str] = []
    conn.on_failure = lambda: failures.append("failed")
    assert conn.send_now("stuck")
    await asyncio.sleep(3 * LIMIT)
    assert conn.failed
    assert failures == ["failed"]
    assert socket.sent == []
    # The writer's next send refuses at once rather than waiting again.
    with pytest.raises(_Closed):
        async with asyncio.timeout(10 * LIMIT):
            await write(conn, ["later"])

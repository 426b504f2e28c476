"""
The push channel asks again for a group the relay refused to subscribe, and only while it is wanted.

The channel is driven through its socket seam (``PushSocket``) by an
in-memory relay side that answers ``subscribe`` frames as the relay does
(``docs/protocol.md``, WebSocket): ``subscribed`` with the accepted groups and
the refused ones. The relay's own refusals are tested against the real
endpoint in ``tests/unit/server/test_websocket.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable

import pytest

from townsquare import auth
from townsquare.client.driver import PushConfig
from townsquare.client.driver.push import PushCallbacks, PushChannel

pytestmark = pytest.mark.anyio

G1 = b"\x01" * 32
G2 = b"\x02" * 32
RETRY = 0.05


class ScriptedRelay:
    """The relay's side of one push connection: refuses each group ``refusals[g]`` times."""

    def __init__(self, refusals: dict[bytes, int]) -> None:
        self.refusals = dict(refusals)
        self.asked: list[bytes] = []
        self.frames: asyncio.Queue[str] = asyncio.Queue()
        self.frames.put_nowait(json.dumps({"type": "challenge", "challenge": "AAAA"}))

    async def recv(self) -> str:
        return await self.frames.get()

    async def send(self, message: str) -> None:
        frame = json.loads(message)
        if frame["type"] == "auth":
            self.frames.put_nowait(json.dumps({"type": "ready"}))
            return
        assert frame["type"] == "subscribe"
        accepted, refused = [], []
        for text in frame["groups"]:
            group_id = auth.decode_b64u(text)
            self.asked.append(group_id)
            if self.refusals.get(group_id, 0) > 0:
                self.refusals[group_id] -= 1
                refused.append({"group": text, "code": "not-a-member"})
            else:
                accepted.append(text)
        self.frames.put_nowait(
            json.dumps({"type": "subscribed", "groups": accepted, "refused": refused})
        )

    def connector(self) -> Callable[[str], contextlib.AbstractAsyncContextManager[ScriptedRelay]]:
        @contextlib.asynccontextmanager
        async def connect(_url: str) -> AsyncIterator[ScriptedRelay]:
            yield self

        return connect


def channel(relay: ScriptedRelay, wanted: list[bytes], frames: list[str]) -> PushChannel:
    return PushChannel(
        url="ws://relay.test/v1/ws",
        device_private_key=b"\x07" * 32,
        clock=lambda: 1_767_225_600.0,
        callbacks=PushCallbacks(
            connected=lambda: None,
            frame=lambda frame: frames.append(str(frame)),
            disconnected=lambda: None,
            subscriptions=lambda: tuple(wanted),
        ),
        config=PushConfig(resubscribe_seconds=RETRY),
        connector=relay.connector(),
    )


async def until(predicate: Callable[[], bool]) -> None:
    async with asyncio.timeout(5):
        while not predicate():
            await asyncio.sleep(0.01)


async def test_a_refused_group_is_asked_for_again_until_accepted() -> None:
    relay = ScriptedRelay({G1: 2})
    frames: list[str] = []
    push = channel(relay, [G1, G2], frames)
    task = asyncio.create_task(push.run())
    try:
        await until(lambda: relay.asked.count(G1) == 3)
        await asyncio.sleep(5 * RETRY)
        # Refused twice, accepted the third time, then never asked for again; G2
        # was accepted at once.
        assert relay.asked.count(G1) == 3
        assert relay.asked.count(G2) == 1
        # The owner is still handed every frame, the refusals included.
        refusals = [json.loads(f)["refused"] for f in frames if '"subscribed"' in f]
        assert sum(bool(refused) for refused in refusals) == 2
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_a_refused_group_no_longer_wanted_is_not_asked_for_again() -> None:
    relay = ScriptedRelay({G1: 100})
    wanted = [G1]
    push = channel(relay, wanted, [])
    task = asyncio.create_task(push.run())
    try:
        await until(lambda: len(relay.asked) == 1)
        wanted.clear()  # the core learned it is not a member and closed the group
        await asyncio.sleep(10 * RETRY)
        assert relay.asked == [G1]
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_a_refusal_waits_before_asking_again() -> None:
    relay = ScriptedRelay({G1: 100})
    push = channel(relay, [G1], [])
    task = asyncio.create_task(push.run())
    try:
        await until(lambda: len(relay.asked) == 1)
        # The owner pokes the channel often (the driver does after every step): that
        # alone must not make it ask again before the wait is over.
        for _ in range(10):
            push.subscriptions_changed()
            await asyncio.sleep(0)
        assert relay.asked == [G1]
        await until(lambda: len(relay.asked) >= 2)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

"""
The push channel's sends: from the publisher at once, else by a task made for the occasion.

An ASGI ``send`` whose sends can be held stands in for uvicorn's (the relay's
real sockets are covered by ``test_websocket.py`` and the integration tests);
the subscriptions and the fan-out are the real ones. What is checked is the
contract of ``_Connection``: a writable connection is sent to from the
publisher's own call, with no task; a send that must wait is finished by a
task while later notices queue behind it, in order; a send stuck past the
limit ends the connection (its subscription closes and its reading task is
cancelled); a slow send within the limit goes through; an idle connection
keeps no task; and the reader's replies never interleave with notices.
"""

from __future__ import annotations

import asyncio
import json

import pytest

from townsquare.server.config import Limits
from townsquare.server.fanout import InMemoryFanout, MessageNotice, Subscription
from townsquare.server.storage import MessageKind
from townsquare.server.websocket import _Connection, _NoticeEvents

pytestmark = pytest.mark.anyio

LIMIT = 0.2
GROUP = b"g" * 32


class HeldSend:
    """An ASGI send that waits while ``open`` is clear, as uvicorn's waits for a full socket."""

    def __init__(self) -> None:
        self.open = asyncio.Event()
        self.open.set()
        self.sent: list[str] = []

    async def __call__(self, event: object) -> None:
        assert isinstance(event, dict)
        await self.open.wait()
        self.sent.append(event["text"])


async def no_receive() -> dict[str, object]:
    raise AssertionError("these tests read no frames")


def notice(seq: int) -> MessageNotice:
    return MessageNotice(
        group_id=GROUP, seq=seq, epoch=1, kind=MessageKind.APPLICATION, message=None
    )


def seqs(sent: list[str]) -> list[int]:
    return [json.loads(text)["seq"] for text in sent]


def connected(
    send: HeldSend, *, limit: float = LIMIT
) -> tuple[_Connection, Subscription, InMemoryFanout]:
    # Made in the calling task, which the connection takes as its reading task.
    fanout = InMemoryFanout()
    subscription = fanout.subscribe(b"d" * 32, queue_size=16)
    subscription.add_group(GROUP)
    limits = Limits(websocket_send_timeout_seconds=limit)
    connection = _Connection(no_receive, send, limits, _NoticeEvents())
    connection.attach(subscription)
    return connection, subscription, fanout


async def test_a_writable_connection_is_sent_to_by_the_publisher_itself() -> None:
    send = HeldSend()
    connection, _, fanout = connected(send)
    fanout.deliver(notice(1))
    fanout.deliver(notice(2))
    # No task ran in between: both went out from deliver() itself.
    assert seqs(send.sent) == [1, 2]
    assert connection._sender is None


async def test_a_send_that_must_wait_is_finished_by_a_task_and_later_ones_keep_their_order() -> (
    None
):
    send = HeldSend()
    send.open.clear()
    connection, _, fanout = connected(send)
    fanout.deliver(notice(1))  # suspended: a task finishes it
    fanout.deliver(notice(2))  # queued behind it
    fanout.deliver(notice(3))
    sender = connection._sender
    assert sender is not None
    await asyncio.sleep(LIMIT / 4)
    assert send.sent == []
    send.open.set()
    async with asyncio.timeout(10 * LIMIT):
        await sender
    assert seqs(send.sent) == [1, 2, 3]
    # Done: the task is gone, and the next notice goes out from the publisher again.
    assert connection._sender is None
    fanout.deliver(notice(4))
    assert seqs(send.sent) == [1, 2, 3, 4]
    assert connection._sender is None


async def test_a_slow_send_within_the_limit_goes_through() -> None:
    send = HeldSend()
    send.open.clear()
    connection, _, fanout = connected(send)
    fanout.deliver(notice(1))
    sender = connection._sender
    assert sender is not None
    await asyncio.sleep(LIMIT / 2)
    send.open.set()
    await sender
    assert seqs(send.sent) == [1]
    assert not connection.failed


async def test_a_send_stuck_past_the_limit_ends_the_connection() -> None:
    send = HeldSend()
    send.open.clear()
    made: asyncio.Future[tuple[_Connection, Subscription, InMemoryFanout]] = (
        asyncio.get_running_loop().create_future()
    )

    async def reading_task() -> None:
        made.set_result(connected(send))
        await asyncio.sleep(60)  # as the reader waits for the device's next frame

    reader = asyncio.create_task(reading_task())
    connection, subscription, fanout = await made
    fanout.deliver(notice(1))
    with pytest.raises(asyncio.CancelledError):
        async with asyncio.timeout(10 * LIMIT):
            await reader
    assert connection.failed
    assert send.sent == []
    # The subscription is closed: nothing more is routed to the connection.
    assert fanout.subscription_count == 0
    with pytest.raises(Exception, match="closed"):
        subscription.poll()
    assert connection._sender is None


async def test_notices_queued_during_a_reply_go_out_after_it() -> None:
    send = HeldSend()
    connection, _, fanout = connected(send)
    send.open.clear()
    reply = asyncio.create_task(connection.send({"type": "subscribed", "groups": []}))
    await asyncio.sleep(0)
    # The reply holds the socket: the notice is queued, and a task sends it after.
    fanout.deliver(notice(1))
    assert send.sent == []
    send.open.set()
    await reply
    sender = connection._sender
    if sender is not None:
        await sender
    assert [text[:20] for text in send.sent] == ['{"type":"subscribed"', '{"type":"message","g']


async def test_stop_cancels_a_waiting_send() -> None:
    send = HeldSend()
    send.open.clear()
    connection, _, fanout = connected(send)
    fanout.deliver(notice(1))
    sender = connection._sender
    assert sender is not None
    connection.stop()
    with pytest.raises(asyncio.CancelledError):
        await sender
    assert connection._sender is None
    assert not connection.failed
    send.open.set()
    await asyncio.sleep(0)
    assert send.sent == []

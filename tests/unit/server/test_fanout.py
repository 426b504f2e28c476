"""
The in-process fan-out: routing by group and device, removal, Welcomes, slow connections.
"""

from __future__ import annotations

import asyncio

import pytest

from townsquare.server.fanout import (
    InMemoryFanout,
    Lagged,
    MessageNotice,
    RemovedNotice,
    SubscriptionClosed,
    WelcomeNotice,
)
from townsquare.server.storage import MessageKind

pytestmark = pytest.mark.anyio

GROUP = b"g" * 16
OTHER = b"o" * 16
ALICE = b"a" * 32
BOB = b"b" * 32


def notice(seq: int, group_id: bytes = GROUP, **kwargs) -> MessageNotice:
    return MessageNotice(
        group_id=group_id,
        seq=seq,
        epoch=1,
        kind=MessageKind.APPLICATION,
        message=b"m",
        **kwargs,
    )


def drain(subscription) -> list[object]:
    """Everything queued for a subscription, without waiting."""
    out = []
    while (notice := subscription.poll()) is not None:
        out.append(notice)
    return out


async def test_a_notice_reaches_the_subscribers_of_its_group_only():
    fanout = InMemoryFanout()
    alice = fanout.subscribe(ALICE, queue_size=8)
    bob = fanout.subscribe(BOB, queue_size=8)
    alice.add_group(GROUP)
    bob.add_group(OTHER)
    await fanout.publish(notice(1))
    await fanout.publish(notice(2, OTHER))
    assert drain(alice) == [notice(1)]
    assert drain(bob) == [notice(2, OTHER)]


async def test_next_waits_for_a_notice():
    fanout = InMemoryFanout()
    alice = fanout.subscribe(ALICE, queue_size=8)
    alice.add_group(GROUP)
    waiting = asyncio.ensure_future(alice.next())
    await asyncio.sleep(0)
    assert not waiting.done()
    fanout.deliver(notice(1))
    assert await waiting == notice(1)


async def test_a_removed_device_is_told_once_and_hears_nothing_after():
    fanout = InMemoryFanout()
    alice = fanout.subscribe(ALICE, queue_size=8)
    bobs = [fanout.subscribe(BOB, queue_size=8) for _ in range(2)]  # two connections
    for subscription in (alice, *bobs):
        subscription.add_group(GROUP)
    await fanout.publish(notice(5, removed_devices=(BOB,)))
    await fanout.publish(notice(6))
    assert drain(alice) == [notice(5, removed_devices=(BOB,)), notice(6)]
    for bob in bobs:
        assert drain(bob) == [RemovedNotice(group_id=GROUP, seq=5)]
        assert bob.groups == frozenset()


async def test_a_welcomed_device_is_told_on_every_connection():
    fanout = InMemoryFanout()
    bobs = [fanout.subscribe(BOB, queue_size=8) for _ in range(2)]
    await fanout.publish(notice(3, welcomed_devices=(BOB,)))
    for bob in bobs:
        assert drain(bob) == [WelcomeNotice(group_id=GROUP, seq=3)]


async def test_a_slow_connection_is_told_it_lagged_then_hears_again():
    fanout = InMemoryFanout()
    alice = fanout.subscribe(ALICE, queue_size=3)
    alice.add_group(GROUP)
    for seq in range(1, 6):
        fanout.deliver(notice(seq))
    assert await alice.next() == Lagged()
    fanout.deliver(notice(6))
    assert drain(alice) == [notice(6)]


async def test_unsubscribe_and_close():
    fanout = InMemoryFanout()
    alice = fanout.subscribe(ALICE, queue_size=8)
    alice.add_group(GROUP)
    alice.remove_group(GROUP)
    fanout.deliver(notice(1))
    assert drain(alice) == []
    waiting = asyncio.ensure_future(alice.next())
    await asyncio.sleep(0)
    alice.close()
    with pytest.raises(SubscriptionClosed):
        await waiting
    alice.close()
    alice.add_group(GROUP)
    fanout.deliver(notice(2, welcomed_devices=(ALICE,)))
    assert alice.groups == frozenset()
    assert fanout.subscription_count == 0

"""
Fan-out: telling connected devices that a group's log grew, as soon as it did.

The delivery service stores a message, then publishes one
:class:`MessageNotice` to the :class:`Fanout`. Each WebSocket connection
holds a :class:`Subscription` (one device, the groups it subscribed to) and
pulls what is routed to it with :meth:`Subscription.next`::

    DeliveryService ── publish(MessageNotice) ──▶ Fanout ──▶ Subscription (per connection)
                                                    │        ├─ MessageNotice  (its groups)
                                                    │        ├─ RemovedNotice  (it left a group)
                                                    │        ├─ WelcomeNotice  (it was added)
                                                    │        └─ Lagged         (it fell behind)

Notices are hints, never the record: the log in the store is. A device that
reconnects, or is told it :class:`Lagged`, fetches from its cursor, so a
notice lost in a crash or dropped for a slow connection costs a fetch, never
a message.

Removal is enforced here as well as in the store: a notice that removes a
device from a group unsubscribes every connection of that device from the
group before anything later is routed, and tells it so with a
:class:`RemovedNotice` (at the commit's sequence number) instead of the commit.

:class:`InMemoryFanout` routes within one process. Several relay processes
will publish through NATS (a ``Fanout`` whose :meth:`Fanout.publish` sends to
a subject per group and whose subscriber calls :meth:`InMemoryFanout.deliver`
on each node); the routing and the subscriptions stay as they are.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from townsquare.server.storage import MessageKind

__all__ = [
    "Fanout",
    "InMemoryFanout",
    "Lagged",
    "MessageNotice",
    "Notice",
    "RemovedNotice",
    "Subscription",
    "SubscriptionClosed",
    "WelcomeNotice",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class MessageNotice:
    """
    An entry was appended to a group's log.
    """

    group_id: bytes
    seq: int
    epoch: int
    kind: MessageKind
    #: The message itself when it is small enough to push whole, else ``None``.
    message: bytes | None
    #: Devices this entry (a commit) removed from the group.
    removed_devices: tuple[bytes, ...] = ()
    #: Devices this entry (a commit) added, each with a Welcome waiting.
    welcomed_devices: tuple[bytes, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class RemovedNotice:
    """
    The connection's device was removed from a group by the commit at ``seq``.
    """

    group_id: bytes
    seq: int


@dataclass(frozen=True, slots=True, kw_only=True)
class WelcomeNotice:
    """
    A Welcome into a group, from the commit at ``seq``, waits for the connection's device.
    """

    group_id: bytes
    seq: int


@dataclass(frozen=True, slots=True)
class Lagged:
    """
    Notices were dropped because the connection fell behind: fetch from the cursor.
    """


Notice = MessageNotice | RemovedNotice | WelcomeNotice | Lagged


class SubscriptionClosed(Exception):
    """
    :meth:`Subscription.next` was called on, or waited on, a closed subscription.
    """


class Subscription:
    """
    What one connection receives: notices of its subscribed groups and of its device.

    Pending notices are bounded: past ``queue_size`` they are all dropped and the
    next one returned is :class:`Lagged`.
    """

    __slots__ = (
        "_closed",
        "_fanout",
        "_groups",
        "_lagged",
        "_pending",
        "_queue_size",
        "_waiter",
        "device_key",
        "direct",
        "on_pending",
    )

    def __init__(self, fanout: InMemoryFanout, device_key: bytes, *, queue_size: int) -> None:
        """
        Use :meth:`InMemoryFanout.subscribe` instead.
        """
        self.device_key = device_key
        self._fanout = fanout
        self._groups: set[bytes] = set()
        # A list, not a deque: an empty deque costs about 600 bytes, an empty list 56, and
        # a connection holds this for as long as it is open, idle or not. Popping from
        # the front of at most queue_size entries is cheap.
        self._pending: list[Notice] = []
        self._queue_size = queue_size
        self._lagged = False
        self._closed = False
        # The one task waiting in next(), if any: a bare future rather than an
        # asyncio.Event, because push() runs once per recipient of every message.
        self._waiter: asyncio.Future[None] | None = None
        # How a connection takes its notices without a task waiting in next() (see
        # server/websocket.py): ``direct`` sends a notice at once, from the publisher,
        # and returns False when it cannot (a send under way), and the notice is queued;
        # ``on_pending`` is told that notices are queued, and then poll()s them.
        self.direct: Callable[[Notice], bool] | None = None
        self.on_pending: Callable[[], None] | None = None

    @property
    def pending(self) -> bool:
        """
        Whether :meth:`poll` would return a notice now.
        """
        return bool(self._pending) or self._lagged

    @property
    def groups(self) -> frozenset[bytes]:
        """
        The groups subscribed to.
        """
        return frozenset(self._groups)

    def add_group(self, group_id: bytes) -> None:
        """
        Receive the notices of a group from now on.

        Subscribe before checking membership, then check: a removal committed in
        between is then either seen by the check or routed here afterwards.
        """
        if self._closed:
            return
        self._groups.add(group_id)
        self._fanout._route(self, group_id)

    def remove_group(self, group_id: bytes) -> None:
        """
        Receive no more notices of a group.
        """
        self._groups.discard(group_id)
        self._fanout._unroute(self, group_id)

    def close(self) -> None:
        """
        Stop receiving anything; a waiting :meth:`next` raises :class:`SubscriptionClosed`.
        """
        if self._closed:
            return
        self._closed = True
        for group_id in tuple(self._groups):
            self.remove_group(group_id)
        self._fanout._forget(self)
        self._pending.clear()
        self._wake_waiter()

    def push(self, notice: Notice) -> None:
        """
        Queue a notice for the connection; never blocks.
        """
        if self._closed or self._lagged:
            return
        direct = self.direct
        if direct is not None and not self._pending and direct(notice):
            return
        if len(self._pending) >= self._queue_size:
            self._pending.clear()
            self._lagged = True
        else:
            self._pending.append(notice)
        on_pending = self.on_pending
        if on_pending is not None:
            on_pending()
        else:
            self._wake_waiter()

    def _wake_waiter(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def poll(self) -> Notice | None:
        """
        Take the next notice without waiting.

        :returns: the oldest pending notice, :class:`Lagged` if notices were dropped, or
            ``None`` if nothing is pending.
        :raises SubscriptionClosed: if the subscription is closed.
        """
        if self._closed:
            raise SubscriptionClosed("the subscription is closed")
        if self._lagged:
            self._lagged = False
            return Lagged()
        if self._pending:
            return self._pending.pop(0)
        return None

    async def next(self) -> Notice:
        """
        Wait for the next notice.

        :returns: the oldest pending notice, or :class:`Lagged` if notices were dropped.
        :raises SubscriptionClosed: if the subscription is or gets closed.
        :raises RuntimeError: if another task is already waiting: one task reads a
            subscription (as with ``asyncio.StreamReader``).
        """
        while (notice := self.poll()) is None:
            if self._waiter is not None:
                raise RuntimeError("another task is already waiting for this subscription")
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return notice


class Fanout(Protocol):
    """
    Routes notices of appended log entries to the connections that should hear of them.
    """

    def subscribe(self, device_key: bytes, *, queue_size: int) -> Subscription:
        """
        Open a connection's subscription; it receives its device's notices at once.

        :param device_key: the connected device.
        :param queue_size: how many notices may wait before they are dropped.
        :returns: the subscription; :meth:`Subscription.close` it when the connection ends.
        """
        ...

    async def publish(self, notice: MessageNotice) -> None:
        """
        Route a notice to every subscription concerned (on every relay process).

        :param notice: what was appended.
        """
        ...


class InMemoryFanout:
    """
    A :class:`Fanout` within one process: a map from groups and devices to subscriptions.
    """

    def __init__(self) -> None:
        """
        Start with no subscriptions.
        """
        self._by_group: dict[bytes, set[Subscription]] = {}
        self._by_device: dict[bytes, set[Subscription]] = {}

    def subscribe(self, device_key: bytes, *, queue_size: int) -> Subscription:
        """
        Open a connection's subscription.
        """
        subscription = Subscription(self, device_key, queue_size=queue_size)
        self._by_device.setdefault(device_key, set()).add(subscription)
        return subscription

    async def publish(self, notice: MessageNotice) -> None:
        """
        Route a notice within this process.
        """
        self.deliver(notice)

    def deliver(self, notice: MessageNotice) -> None:
        """
        Route a notice to this process's subscriptions, synchronously.

        :param notice: what was appended.
        """
        subscribers = self._by_group.get(notice.group_id, ())
        if not notice.removed_devices:
            # The common case, once per message: nothing here changes the routing, so the
            # set is walked as it is, without a copy.
            for subscription in subscribers:
                subscription.push(notice)
        else:
            removed = set(notice.removed_devices)
            for subscription in tuple(subscribers):
                if subscription.device_key in removed:
                    subscription.remove_group(notice.group_id)
                    subscription.push(RemovedNotice(group_id=notice.group_id, seq=notice.seq))
                else:
                    subscription.push(notice)
        for device_key in notice.welcomed_devices:
            for subscription in tuple(self._by_device.get(device_key, ())):
                subscription.push(WelcomeNotice(group_id=notice.group_id, seq=notice.seq))

    @property
    def subscription_count(self) -> int:
        """
        How many subscriptions are open (for tests and metrics).
        """
        return sum(len(subscriptions) for subscriptions in self._by_device.values())

    def _route(self, subscription: Subscription, group_id: bytes) -> None:
        self._by_group.setdefault(group_id, set()).add(subscription)

    def _unroute(self, subscription: Subscription, group_id: bytes) -> None:
        subscribers = self._by_group.get(group_id)
        if subscribers is not None:
            subscribers.discard(subscription)
            if not subscribers:
                del self._by_group[group_id]

    def _forget(self, subscription: Subscription) -> None:
        subscribers = self._by_device.get(subscription.device_key)
        if subscribers is not None:
            subscribers.discard(subscription)
            if not subscribers:
                del self._by_device[subscription.device_key]

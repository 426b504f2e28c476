"""
The push channel: a WebSocket to ``/v1/ws`` that tells the device when something is new.

The exchange (``docs/protocol.md``, WebSocket)::

    relay  ── {"type": "challenge", "challenge": …}
    device ── {"type": "auth", "headers": {signature headers of GET /v1/ws, body = challenge}}
    relay  ── {"type": "ready", …}
    device ── {"type": "subscribe", "groups": [...]}        (≤ 256 per frame; again for new groups)
    relay  ── {"type": "subscribed", "groups": [...], "refused": [{"group": …, "code": …}]}
    relay  ── {"type": "message" | "welcome" | "removed" | "lagged", …}   ─► Client.receive_push

:class:`PushChannel` keeps one connection up: it reconnects after any
failure with exponential backoff and jitter, tells the core when the channel
is up (the core then catches up on everything) and down (the core then
polls). Connecting, the challenge and ``ready`` each have a timeout; waiting
for the next frame of an idle connection has none of its own, as idle is the
normal state: the WebSocket keepalive (a ping every ``ping_interval``, which
must be answered within ``ping_timeout``) ends a dead connection instead.

A group the relay refuses to subscribe (``not-a-member``: the device asked
to join and is not in yet, or its join's commit is still on its way) is
asked for again every ``resubscribe_seconds`` while the core still wants it:
the core fetches only while the channel is down, so without this a device
that joined while connected would hear nothing of its new group until it
reconnected. A group the device really left drops out of the core's
subscriptions once it learns so, and is not asked for again.

The socket is a seam (:class:`PushSocket`, :data:`PushConnector`): the
default connector is the ``websockets`` library's client; tests pass an
in-memory one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Protocol

import websockets
from websockets.asyncio.client import connect as websockets_connect

from townsquare import auth
from townsquare.client.core import relay_api as api
from townsquare.client.core.retry import Backoff

__all__ = [
    "PushCallbacks",
    "PushChannel",
    "PushConfig",
    "PushConnector",
    "PushSocket",
    "websocket_connector",
    "websocket_url",
]

_log = logging.getLogger("townsquare.client")

_MAX_GROUPS_PER_FRAME = 256


class PushSocket(Protocol):
    """
    The few methods of a WebSocket connection the channel uses.
    """

    async def recv(self) -> str | bytes:
        """
        :returns: the next frame.
        :raises Exception: when the connection ends.
        """
        ...

    async def send(self, message: str) -> None:
        """
        Send one text frame.
        """
        ...


PushConnector = Callable[[str], AbstractAsyncContextManager[PushSocket]]
"""Opens a WebSocket to a URL; the connection closes when the context exits."""


@dataclass(frozen=True, slots=True, kw_only=True)
class PushConfig:
    """
    Timeouts and the reconnection backoff of the push channel.

    :param open_timeout_seconds: the most connecting (TCP, TLS, upgrade) may take.
    :param handshake_timeout_seconds: the most the challenge, and then ``ready``, may take.
    :param send_timeout_seconds: the most one frame may take to send.
    :param ping_interval_seconds: how often the keepalive pings.
    :param ping_timeout_seconds: how long a ping may wait for its pong.
    :param resubscribe_seconds: how long to wait before asking again for a group the
        relay refused to subscribe.
    :param backoff: waits between reconnections.
    """

    open_timeout_seconds: float = 15.0
    handshake_timeout_seconds: float = 15.0
    send_timeout_seconds: float = 15.0
    ping_interval_seconds: float = 25.0
    ping_timeout_seconds: float = 20.0
    resubscribe_seconds: float = 5.0
    backoff: Backoff = field(
        default_factory=lambda: Backoff(initial_seconds=1.0, max_seconds=120.0)
    )


def websocket_url(relay_url: str) -> str:
    """
    :returns: the push channel's URL for a relay's ``http(s)://`` URL.
    """
    if relay_url.startswith("https://"):
        return "wss://" + relay_url[len("https://") :] + api.WEBSOCKET_PATH
    return "ws://" + relay_url.removeprefix("http://") + api.WEBSOCKET_PATH


def websocket_connector(config: PushConfig) -> PushConnector:
    """
    :returns: a connector using the ``websockets`` library, with the config's timeouts.
    """

    @contextlib.asynccontextmanager
    async def connect(url: str) -> AsyncIterator[PushSocket]:
        async with websockets_connect(
            url,
            open_timeout=config.open_timeout_seconds,
            ping_interval=config.ping_interval_seconds,
            ping_timeout=config.ping_timeout_seconds,
            close_timeout=config.send_timeout_seconds,
            max_size=1 << 20,
        ) as connection:
            yield connection

    return connect


@dataclass(frozen=True, slots=True, kw_only=True)
class PushCallbacks:
    """
    What the channel tells its owner (each is called from the channel's task).

    :param connected: the channel is up (after ``ready``).
    :param frame: a frame arrived.
    :param disconnected: the channel is down.
    :param subscriptions: the groups to subscribe to, now.
    """

    connected: Callable[[], None]
    frame: Callable[[str | bytes], None]
    disconnected: Callable[[], None]
    subscriptions: Callable[[], Sequence[bytes]]


class _ChannelFailed(Exception):
    pass


class PushChannel:
    """
    Keeps the push channel up (see the module docstring).
    """

    def __init__(
        self,
        *,
        url: str,
        device_private_key: bytes,
        clock: Callable[[], float],
        callbacks: PushCallbacks,
        config: PushConfig | None = None,
        connector: PushConnector | None = None,
        rng: Callable[[int], bytes] = secrets.token_bytes,
    ) -> None:
        """
        :param url: the ``ws(s)://…/v1/ws`` URL.
        :param device_private_key: the key that signs the ``auth`` frame.
        :param clock: Unix seconds (the ``auth`` frame's timestamp).
        :param callbacks: where frames and state changes go.
        :param config: timeouts and backoff.
        :param connector: opens the WebSocket (default: ``websockets``).
        :param rng: randomness for nonces and jitter.
        """
        self._url = url
        self._key = device_private_key
        self._clock = clock
        self._callbacks = callbacks
        self._config = config or PushConfig()
        self._connector = connector or websocket_connector(self._config)
        self._rng = rng
        self._subscribed: set[bytes] = set()
        # Groups the relay refused, and when (loop time) to ask for each again.
        self._refused: dict[bytes, float] = {}
        self._changed = asyncio.Event()
        self.connected = False

    def subscriptions_changed(self) -> None:
        """
        The set of groups may have grown: subscribe to the new ones (if connected).
        """
        self._changed.set()

    async def run(self) -> None:
        """
        Connect, serve, and reconnect with backoff, until cancelled.
        """
        failures = 0
        while True:
            try:
                await self._serve_once()
            except* (OSError, TimeoutError, websockets.WebSocketException, _ChannelFailed) as exc:
                _log.info("push channel down: %s", [type(e).__name__ for e in exc.exceptions])
                failures = failures + 1 if not self.connected else 1
            finally:
                if self.connected:
                    self.connected = False
                    self._callbacks.disconnected()
            await asyncio.sleep(self._config.backoff.delay(max(failures, 1), self._rng))

    async def _serve_once(self) -> None:
        config = self._config
        async with self._connector(self._url) as socket:
            async with asyncio.timeout(config.handshake_timeout_seconds):
                challenge = api.challenge_of(await socket.recv())
            if challenge is None:
                raise _ChannelFailed("the relay's first frame is not a challenge")
            headers = auth.sign_request(
                device_private_key=self._key,
                method="GET",
                target=api.WEBSOCKET_PATH,
                body=challenge,
                timestamp=int(self._clock()),
                nonce=self._rng(auth.NONCE_BYTES),
            )
            async with asyncio.timeout(config.send_timeout_seconds):
                await socket.send(api.auth_frame(headers))
            async with asyncio.timeout(config.handshake_timeout_seconds):
                ready = await socket.recv()
            if _frame_type(ready) != "ready":
                raise _ChannelFailed(f"the relay answered auth with {_frame_type(ready)!r}")
            self._subscribed = set()
            self._refused = {}
            await self._subscribe(socket)
            self.connected = True
            self._callbacks.connected()
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(self._resubscribe(socket))
                await self._read(socket)

    async def _read(self, socket: PushSocket) -> None:
        while True:
            # No timeout of our own: idle is normal; the keepalive ends dead connections.
            frame = await socket.recv()
            kind = _frame_type(frame)
            if kind == "error":
                raise _ChannelFailed("the relay sent an error frame")
            if kind == "subscribed":
                self._note_refusals(frame)
            self._callbacks.frame(frame)

    def _note_refusals(self, frame: str | bytes) -> None:
        retry_at = asyncio.get_running_loop().time() + self._config.resubscribe_seconds
        for group_id in _refused_groups(frame):
            self._subscribed.discard(group_id)
            self._refused[group_id] = retry_at
        if self._refused:
            self._changed.set()  # _resubscribe then waits for the earliest retry

    async def _resubscribe(self, socket: PushSocket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            delay = None
            if self._refused:
                delay = max(0.0, min(self._refused.values()) - loop.time())
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._changed.wait()
            self._changed.clear()
            await self._subscribe(socket)

    async def _subscribe(self, socket: PushSocket) -> None:
        groups = self._callbacks.subscriptions()
        now = asyncio.get_running_loop().time()
        # A refused group the core no longer wants is forgotten; one it does is asked
        # for again once its wait is over.
        wanted_now = set(groups)
        self._refused = {g: t for g, t in self._refused.items() if g in wanted_now}
        wanted = [
            g for g in groups if g not in self._subscribed and self._refused.get(g, now) <= now
        ]
        for group_id in wanted:
            self._refused.pop(group_id, None)
        for start in range(0, len(wanted), _MAX_GROUPS_PER_FRAME):
            batch = wanted[start : start + _MAX_GROUPS_PER_FRAME]
            async with asyncio.timeout(self._config.send_timeout_seconds):
                await socket.send(api.subscribe_frame(batch))
            self._subscribed.update(batch)


def _refused_groups(frame: str | bytes) -> list[bytes]:
    # The groups a ``subscribed`` frame refuses; anything malformed is skipped.
    try:
        value = json.loads(frame)
    except (ValueError, UnicodeDecodeError):
        return []
    refused = value.get("refused") if isinstance(value, dict) else None
    groups: list[bytes] = []
    for item in refused if isinstance(refused, list) else ():
        text = item.get("group") if isinstance(item, dict) else None
        if isinstance(text, str):
            with contextlib.suppress(auth.AuthError):
                groups.append(auth.decode_b64u(text))
    return groups


def _frame_type(frame: str | bytes) -> str | None:
    try:
        value = json.loads(frame)
    except (ValueError, UnicodeDecodeError):
        return None
    kind = value.get("type") if isinstance(value, dict) else None
    return kind if isinstance(kind, str) else None

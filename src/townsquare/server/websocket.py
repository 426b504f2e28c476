"""
``/v1/ws``: the push channel. A device proves its key, subscribes to its groups, and is told.

One JSON object per text frame, each with a ``type``. The exchange
(``docs/protocol.md`` is normative)::

    relay  ── {"type": "challenge", "challenge": "<32 random bytes>"}
    device ── {"type": "auth", "headers": {"Townsquare-Device": …, "Townsquare-Timestamp": …,
                                           "Townsquare-Nonce": …, "Townsquare-Signature": …}}
    relay  ── {"type": "ready", "device": "<device key>"}
    device ── {"type": "subscribe", "groups": ["<group id>", …]}
    relay  ── {"type": "subscribed", "groups": [...], "refused": [{"group": …, "code": …}]}
    relay  ── {"type": "message", "group": …, "seq": 42, "epoch": 7, "kind": "application",
               "message": "<MLSMessage, if at most push_inline_max_bytes>"}
    relay  ── {"type": "welcome", "group": …, "seq": 41}     a Welcome waits (GET /v1/welcomes)
    relay  ── {"type": "removed", "group": …, "seq": 43}     the commit at 43 removed the device
    relay  ── {"type": "lagged"}                             notices were dropped: fetch

The ``auth`` headers are exactly those of a signed request (:func:`townsquare.auth.sign_request`)
for ``GET /v1/ws`` whose body is the challenge's bytes, so the relay checks them with the
same :class:`~townsquare.server.auth.Authenticator`: clock window, registered device,
signature, single-use nonce. The challenge, fresh per connection, makes a recorded
``auth`` useless on any other connection.

Errors are sent as ``{"type": "error", "problem": {…}}``, the RFC 9457
problem document an HTTP request would have been answered with, then the
relay closes with code 4000 + the HTTP status (4400 a frame it cannot read,
4401 authentication failed, 4408 no ``auth`` in time, 4409 a replayed
``auth`` nonce, 4413 a frame too large), or 1011 if the relay itself failed.
A ``subscribe`` refused for one group (404 ``unknown-group``, 403
``not-a-member``) does not close the connection.

Every send has a timeout (``Limits.websocket_send_timeout_seconds``), so a
connection that stops reading is dropped rather than holding notices; the
wait for ``auth`` has one too. Waiting for the device's next frame has none:
idle connections are the normal case, and the server's WebSocket pings
(uvicorn's) close dead ones.

The push path runs once per recipient of every message (5,000 times for a
township's group), and an idle connection's memory is paid thousands of
times over, so both are kept small (``bench/relay_fanout.py`` measures them
against a bare broadcast server): the endpoint is a plain ASGI application,
reached without the framework's layers (:class:`PushEndpoint`); a notice's
frame is encoded once for all connections (:class:`_NoticeEvents`); the
publisher sends it to each connection itself, and a connection gets a task
to send only while it has notices waiting (:class:`_Connection`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from types import CoroutineType
from typing import Any

from starlette.types import Message, Receive, Scope, Send

from townsquare import auth
from townsquare.server.auth import SIGNATURE_HEADERS, Authenticator
from townsquare.server.config import (
    MAX_SUBSCRIBE_GROUPS,
    MAX_WEBSOCKET_FRAME_BYTES,
    WEBSOCKET_CHALLENGE_BYTES,
    Limits,
)
from townsquare.server.delivery import DeliveryService
from townsquare.server.errors import (
    FieldTooLarge,
    Forbidden,
    InvalidRequest,
    NotFound,
    ServerError,
    TooManyItems,
)
from townsquare.server.fanout import (
    Fanout,
    Lagged,
    MessageNotice,
    Notice,
    RemovedNotice,
    Subscription,
    SubscriptionClosed,
    WelcomeNotice,
)
from townsquare.server.http.fields import group_id_from_path
from townsquare.server.http.problems import problem_document

__all__ = [
    "CLOSE_AUTH_TIMEOUT",
    "CLOSE_BAD_FRAME",
    "CLOSE_FRAME_TOO_LARGE",
    "CLOSE_INTERNAL_ERROR",
    "CLOSE_UNAUTHENTICATED",
    "WEBSOCKET_PATH",
    "AuthFrame",
    "PushEndpoint",
    "SubscribeFrame",
    "UnsubscribeFrame",
    "notice_frame",
    "parse_client_frame",
]

#: The path of the push channel, also the ``target`` its ``auth`` signs.
WEBSOCKET_PATH = "/v1/ws"
#: Close codes: 4000 + the HTTP status of the problem.
CLOSE_BAD_FRAME = 4400
CLOSE_UNAUTHENTICATED = 4401
CLOSE_AUTH_TIMEOUT = 4408
CLOSE_FRAME_TOO_LARGE = 4413
CLOSE_INTERNAL_ERROR = 1011


@dataclass(frozen=True, slots=True)
class AuthFrame:
    """
    ``{"type": "auth", "headers": {...}}``: the signature headers of ``GET /v1/ws``.
    """

    headers: dict[str, tuple[str, ...]]


@dataclass(frozen=True, slots=True)
class SubscribeFrame:
    """
    ``{"type": "subscribe", "groups": [...]}``.
    """

    groups: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class UnsubscribeFrame:
    """
    ``{"type": "unsubscribe", "groups": [...]}``.
    """

    groups: tuple[bytes, ...]


ClientFrame = AuthFrame | SubscribeFrame | UnsubscribeFrame


def parse_client_frame(text: str) -> ClientFrame:
    """
    Parse one frame from a device.

    :param text: the frame's text.
    :returns: the frame.
    :raises FieldTooLarge: if the frame is over the size limit.
    :raises TooManyItems: if it names too many groups.
    :raises InvalidRequest: if it is not one of the frames a device sends.
    """
    if len(text) > MAX_WEBSOCKET_FRAME_BYTES:
        raise FieldTooLarge(f"a frame is at most {MAX_WEBSOCKET_FRAME_BYTES} bytes")
    try:
        value: object = json.loads(text)
    except ValueError as exc:
        raise InvalidRequest("a frame is one JSON object") from exc
    if not isinstance(value, dict):
        raise InvalidRequest("a frame is one JSON object")
    kind = value.get("type")
    if kind == "auth" and set(value) == {"type", "headers"}:
        headers = value["headers"]
        if not isinstance(headers, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
        ):
            raise InvalidRequest("auth.headers maps header names to strings")
        return AuthFrame({name.lower(): (text_value,) for name, text_value in headers.items()})
    if kind in ("subscribe", "unsubscribe") and set(value) == {"type", "groups"}:
        groups = value["groups"]
        if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
            raise InvalidRequest(f"{kind}.groups is a list of group ids")
        if len(groups) > MAX_SUBSCRIBE_GROUPS:
            raise TooManyItems(f"one {kind} names at most {MAX_SUBSCRIBE_GROUPS} groups")
        ids = tuple(dict.fromkeys(group_id_from_path(g) for g in groups))
        return SubscribeFrame(ids) if kind == "subscribe" else UnsubscribeFrame(ids)
    raise InvalidRequest("a frame is auth, subscribe or unsubscribe, with exactly their members")


def notice_frame(notice: Notice) -> dict[str, object]:
    """
    :returns: the frame that tells a device of ``notice``.
    """
    match notice:
        case MessageNotice():
            frame: dict[str, object] = {
                "type": "message",
                "group": auth.encode_b64u(notice.group_id),
                "seq": notice.seq,
                "epoch": notice.epoch,
                "kind": notice.kind.value,
            }
            if notice.message is not None:
                frame["message"] = auth.encode_b64u(notice.message)
            return frame
        case RemovedNotice():
            return {
                "type": "removed",
                "group": auth.encode_b64u(notice.group_id),
                "seq": notice.seq,
            }
        case WelcomeNotice():
            return {
                "type": "welcome",
                "group": auth.encode_b64u(notice.group_id),
                "seq": notice.seq,
            }
        case Lagged():
            return {"type": "lagged"}


def _error_frame(error: ServerError) -> dict[str, object]:
    return {"type": "error", "problem": problem_document(error)}


def _close_code(error: ServerError) -> int:
    # 4000 + the HTTP status of a refusal (RFC 6455 §7.4.2 leaves 4000-4999 to
    # applications); 1011, "internal error" (RFC 6455 §7.4.1), for a failure of the relay.
    return 4000 + error.status if 400 <= error.status < 500 else CLOSE_INTERNAL_ERROR


class _Closed(Exception):
    # The connection ended (the device left, or the relay closed it).
    pass


def _frame_text(frame: dict[str, object]) -> str:
    return json.dumps(frame, separators=(",", ":"), ensure_ascii=False)


def _send_event(text: str) -> Message:
    return {"type": "websocket.send", "text": text}


_LAGGED_EVENT = _send_event(_frame_text(notice_frame(Lagged())))


class _NoticeEvents:
    """
    The ASGI send event of each recent :class:`MessageNotice`, made once for all its recipients.

    The fan-out hands every subscriber the same notice object, so it is looked up by
    identity: no hashing of the message, and no two notices can be confused, since an
    entry holds its notice (whose ``id`` is then not reused). The oldest entry goes
    once there are ``capacity``; a connection that falls that far behind encodes its
    notice again, which costs time, not correctness. One event serves every
    connection: the server only reads the events it is sent (ASGI).
    """

    def __init__(self, capacity: int = 64) -> None:
        self._capacity = capacity
        self._entries: dict[int, tuple[MessageNotice, Message]] = {}

    def event(self, notice: Notice) -> Message:
        """
        :returns: the event that sends a device the frame of ``notice``.
        """
        if not isinstance(notice, MessageNotice):
            # Removals and Welcomes are made per device; Lagged never changes.
            if isinstance(notice, Lagged):
                return _LAGGED_EVENT
            return _send_event(_frame_text(notice_frame(notice)))
        entry = self._entries.get(id(notice))
        if entry is not None and entry[0] is notice:
            return entry[1]
        event = _send_event(_frame_text(notice_frame(notice)))
        if len(self._entries) >= self._capacity:
            del self._entries[next(iter(self._entries))]
        self._entries[id(notice)] = (notice, event)
        return event


async def _awaiting(awaitable: Awaitable[None]) -> None:
    # A coroutine to drive for a server whose send returns another kind of awaitable.
    await awaitable


async def _resume(coroutine: Coroutine[Any, Any, None], waiting: object) -> None:
    # Run a coroutine that suspended on ``waiting`` to its end, as a task's steps would:
    # wait for what it yielded, then resume it.
    try:
        while True:
            error: Exception | None = None
            try:
                if isinstance(waiting, asyncio.Future):
                    # As a task does with a future its coroutine yielded: take the
                    # yield, so that awaiting it here is not a second one.
                    waiting._asyncio_future_blocking = False
                    await waiting
                else:
                    await asyncio.sleep(0)
            except Exception as exc:  # noqa: BLE001 - handed to the coroutine
                error = exc
            try:
                waiting = coroutine.send(None) if error is None else coroutine.throw(error)
            except StopIteration:
                return
    finally:
        coroutine.close()


class _Connection:
    """
    One connection at the ASGI level: its frames in, and one send at a time out.

    Notices go out two ways. The publisher sends to a connection that is not
    sending (:meth:`send_now`): uvicorn's send does not wait while the socket is
    writable, so the publisher drives the send coroutine itself, and it almost
    always completes at once, without a task. Otherwise (a send under way, or the
    socket's buffer full: a slow device) the notice waits in the subscription
    and a sender task (:meth:`_send_pending`), started for the occasion, sends
    what waits and ends. So an idle connection has no task of its own besides
    the one reading its frames, a slow device never holds up the others, and
    notices keep their order.

    Every send has the limit ``websocket_send_timeout_seconds``; a notice's send
    that takes longer, or fails, ends the connection: the subscription closes
    and the reading task is cancelled (:attr:`failed` tells it why).
    """

    __slots__ = (
        "_events",
        "_handler",
        "_limits",
        "_receive",
        "_send",
        "_send_lock",
        "_sender",
        "_subscription",
        "failed",
    )

    def __init__(self, receive: Receive, send: Send, limits: Limits, events: _NoticeEvents) -> None:
        """
        Serve a connection from the current task, the one that reads its frames.
        """
        self._receive = receive
        self._send = send
        self._limits = limits
        self._events = events
        # Held by each send: the reader's replies and the sender task share the socket.
        self._send_lock = asyncio.Lock()
        self._sender: asyncio.Task[None] | None = None
        self._subscription: Subscription | None = None
        self._handler = asyncio.current_task()
        self.failed = False

    # -- The reading task's side ---------------------------------------------------------

    async def accept(self) -> None:
        event = await self._receive()
        if event["type"] != "websocket.connect":
            raise _Closed("the device left before the handshake")
        await self._send({"type": "websocket.accept"})

    async def receive(self) -> str:
        # No timeout: waiting for an idle device is the normal state (see the module).
        event = await self._receive()
        if event["type"] == "websocket.disconnect":
            raise _Closed("the device disconnected")
        text = event.get("text")
        if text is None:
            raise InvalidRequest("frames are text (JSON), not binary")
        return str(text)

    async def send(self, frame: dict[str, Any]) -> None:
        event = _send_event(_frame_text(frame))
        async with self._send_lock:
            try:
                async with asyncio.timeout(self._limits.websocket_send_timeout_seconds):
                    await self._send(event)
            except (OSError, RuntimeError) as exc:
                # uvicorn raises ClientDisconnected (an OSError) once the device is gone;
                # TimeoutError is an OSError too.
                raise _Closed("the connection is gone") from exc

    async def close(self, code: int) -> None:
        with contextlib.suppress(OSError, RuntimeError):
            async with asyncio.timeout(self._limits.websocket_send_timeout_seconds):
                await self._send({"type": "websocket.close", "code": code, "reason": ""})

    def attach(self, subscription: Subscription) -> None:
        """
        Send the subscription's notices from now on.
        """
        self._subscription = subscription
        subscription.direct = self.send_now
        subscription.on_pending = self._start_sender
        if subscription.pending:
            self._start_sender()

    def stop(self) -> None:
        """
        Stop sending: the connection is over.
        """
        if self._subscription is not None:
            self._subscription.close()
        sender, self._sender = self._sender, None
        if sender is not None:
            # Not awaited: it ends at its next step (one that never started ends unrun).
            sender.cancel()

    # -- The publisher's side ------------------------------------------------------------

    def send_now(self, notice: Notice) -> bool:
        """
        Send a notice at once, from the publisher's task, if nothing else is sending.

        :returns: whether the notice was sent or is being sent (else queue it).
        """
        if self._sender is not None or self._send_lock.locked():
            return False
        sending = self._send(self._events.event(notice))
        # types.CoroutineType, not the Coroutine ABC: a plain type check, once per recipient.
        coroutine = sending if isinstance(sending, CoroutineType) else _awaiting(sending)
        try:
            waiting = coroutine.send(None)
        except StopIteration:
            return True
        except (OSError, RuntimeError):
            # Gone: the notice is queued, and the sender task meets the same error.
            return False
        # Suspended, before writing anything (uvicorn waits for the socket to be
        # writable first): a task finishes it, and later notices wait for that task.
        self._sender = asyncio.get_running_loop().create_task(
            self._send_pending(coroutine, waiting), name="townsquare-push-send"
        )
        return True

    def _start_sender(self) -> None:
        if self._sender is None and not self.failed:
            self._sender = asyncio.get_running_loop().create_task(
                self._send_pending(None, None), name="townsquare-push-send"
            )

    async def _send_pending(
        self, suspended: Coroutine[Any, Any, None] | None, waiting: object
    ) -> None:
        subscription = self._subscription
        limit = self._limits.websocket_send_timeout_seconds
        try:
            async with self._send_lock:
                if suspended is not None:
                    async with asyncio.timeout(limit):
                        await _resume(suspended, waiting)
                while subscription is not None and (notice := subscription.poll()) is not None:
                    async with asyncio.timeout(limit):
                        await self._send(self._events.event(notice))
        except SubscriptionClosed:
            pass
        except (OSError, RuntimeError):
            self._fail()
        finally:
            if suspended is not None:
                suspended.close()
            # Nothing awaited since poll() found no notice: none can be left behind.
            self._sender = None

    def _fail(self) -> None:
        self.failed = True
        if self._subscription is not None:
            self._subscription.close()
        if self._handler is not None:
            self._handler.cancel()


class PushEndpoint:
    """
    The ASGI application of ``/v1/ws``.

    A plain ASGI callable rather than a framework route: every frame the
    framework's layers keep on an idle connection's stack, and every layer a
    notice passes through on its way out, is paid for each of thousands of
    connections (``bench/relay_fanout.py``). The relay's application hands it
    the ``websocket`` scopes of this path (:class:`townsquare.server.app.RelayApp`).
    """

    def __init__(
        self,
        *,
        authenticator: Authenticator,
        delivery: DeliveryService,
        fanout: Fanout,
        limits: Limits,
        challenge: Callable[[int], bytes] = secrets.token_bytes,
    ) -> None:
        """
        :param authenticator: checks the ``auth`` frame's signature headers.
        :param delivery: checks group membership on ``subscribe``.
        :param fanout: where the connection's notices come from.
        :param limits: timeouts and queue sizes.
        :param challenge: the source of challenges (tests pass a seeded one).
        """
        self._authenticator = authenticator
        self._delivery = delivery
        self._fanout = fanout
        self._limits = limits
        self._challenge = challenge
        self._events = _NoticeEvents()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """
        Serve one connection until either side closes it.
        """
        connection = _Connection(receive, send, self._limits, self._events)
        try:
            async with asyncio.timeout(self._limits.websocket_auth_timeout_seconds):
                await connection.accept()
                device_key = await self._authenticate(connection)
        except _Closed:
            return
        except TimeoutError:
            with contextlib.suppress(_Closed):
                await connection.send(_error_frame(InvalidRequest("no auth frame arrived in time")))
            await connection.close(CLOSE_AUTH_TIMEOUT)
            return
        except ServerError as exc:
            with contextlib.suppress(_Closed):
                await connection.send(_error_frame(exc))
            await connection.close(_close_code(exc))
            return
        subscription = self._fanout.subscribe(
            device_key, queue_size=self._limits.websocket_queue_size
        )
        try:
            await connection.send({"type": "ready", "device": auth.encode_b64u(device_key)})
            connection.attach(subscription)
            await self._read(connection, subscription)
        except _Closed:
            pass
        except ServerError as exc:
            with contextlib.suppress(_Closed):
                await connection.send(_error_frame(exc))
            await connection.close(_close_code(exc))
        except asyncio.CancelledError:
            # A notice's send failed (connection.failed) and cancelled this task to end
            # the connection: that cancellation ends here, any other goes on.
            task = asyncio.current_task()
            if not connection.failed or task is None or task.uncancel() > 0:
                raise
        finally:
            connection.stop()

    async def _authenticate(self, connection: _Connection) -> bytes:
        # Only the device's key is kept for the connection's lifetime, not its record:
        # an idle connection's memory is a target.
        challenge = self._challenge(WEBSOCKET_CHALLENGE_BYTES)
        await connection.send({"type": "challenge", "challenge": auth.encode_b64u(challenge)})
        frame = parse_client_frame(await connection.receive())
        if not isinstance(frame, AuthFrame):
            raise InvalidRequest("the first frame is auth")
        headers = {name.lower(): frame.headers.get(name.lower(), ()) for name in SIGNATURE_HEADERS}
        device = await self._authenticator.authenticate(
            method="GET", target=WEBSOCKET_PATH, body=challenge, headers=headers
        )
        return device.device_key

    async def _read(self, connection: _Connection, subscription: Subscription) -> None:
        while True:
            frame = parse_client_frame(await connection.receive())
            if isinstance(frame, AuthFrame):
                raise InvalidRequest("the connection is already authenticated")
            if isinstance(frame, SubscribeFrame):
                await self._subscribe(connection, subscription, frame.groups)
            else:
                for group_id in frame.groups:
                    subscription.remove_group(group_id)
                await connection.send(
                    {"type": "unsubscribed", "groups": [auth.encode_b64u(g) for g in frame.groups]}
                )

    async def _subscribe(
        self,
        connection: _Connection,
        subscription: Subscription,
        groups: tuple[bytes, ...],
    ) -> None:
        accepted: list[str] = []
        refused: list[dict[str, str]] = []
        for group_id in groups:
            text = auth.encode_b64u(group_id)
            if (
                group_id not in subscription.groups
                and len(subscription.groups) >= self._limits.max_subscriptions_per_connection
            ):
                refused.append({"group": text, "code": TooManyItems.code})
                continue
            # Subscribe first, then check: a removal stored in between is either seen
            # by the check or routed to this subscription afterwards.
            subscription.add_group(group_id)
            try:
                await self._delivery.check_member(subscription.device_key, group_id)
            except (NotFound, Forbidden) as exc:
                subscription.remove_group(group_id)
                refused.append({"group": text, "code": exc.code})
            else:
                accepted.append(text)
        await connection.send({"type": "subscribed", "groups": accepted, "refused": refused})

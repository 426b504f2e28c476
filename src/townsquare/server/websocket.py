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
township's group), so it does as little as it can per recipient
(``bench/relay_fanout.py`` measures it against a bare broadcast server): a
notice is encoded to its frame once for all connections
(:class:`_NoticeTexts`); a connection's writer, once woken, sends everything
pending before it waits again; and the notices' send timeout is one timer per
connection (:class:`_SendDeadline`), not one per send.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

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


_LAGGED_TEXT = _frame_text(notice_frame(Lagged()))


class _NoticeTexts:
    """
    The frame of each recent :class:`MessageNotice`, encoded once for all its recipients.

    The fan-out hands every subscriber the same notice object, so it is looked up by
    identity: no hashing of the message, and no two notices can be confused, since an
    entry holds its notice (whose ``id`` is then not reused). The oldest entry goes
    once there are ``capacity``; a connection that falls that far behind encodes its
    notice again, which costs time, not correctness.
    """

    def __init__(self, capacity: int = 64) -> None:
        self._capacity = capacity
        self._entries: dict[int, tuple[MessageNotice, str]] = {}

    def text(self, notice: Notice) -> str:
        """
        :returns: the text of the frame that tells a device of ``notice``.
        """
        if not isinstance(notice, MessageNotice):
            # Removals and Welcomes are made per device; Lagged never changes.
            return _LAGGED_TEXT if isinstance(notice, Lagged) else _frame_text(notice_frame(notice))
        entry = self._entries.get(id(notice))
        if entry is not None and entry[0] is notice:
            return entry[1]
        text = _frame_text(notice_frame(notice))
        if len(self._entries) >= self._capacity:
            del self._entries[next(iter(self._entries))]
        self._entries[id(notice)] = (notice, text)
        return text


class _SendDeadline:
    """
    Cancels the writing task when one send has taken longer than the limit.

    A send almost never waits (uvicorn hands the frame to the socket at once unless
    the socket's buffer is full), so an ``asyncio.timeout`` per send, a timer armed
    and cancelled each time, would cost about as much as the send. Instead a send
    notes when it started (:meth:`start`, :meth:`stop`) and one timer per connection
    is armed by the first send; when it fires, it cancels the task if the send under
    way started more than the limit ago, re-arms itself for that send's deadline if
    it started later, and lapses if no send is under way, so that an idle connection
    has no timer. The task's send then ends in ``CancelledError`` with
    :attr:`expired` set (as :class:`asyncio.Timeout` does, it is then uncancelled).
    """

    __slots__ = ("_loop", "_seconds", "_started_at", "_task", "_timer", "expired")

    def __init__(self, seconds: float) -> None:
        """
        Time the sends of the current task.

        :param seconds: how long one send may take.
        """
        self._seconds = seconds
        self._loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        if task is None:  # pragma: no cover - created by the writer task
            raise RuntimeError("a send deadline times the sends of a task")
        self._task = task
        self._started_at: float | None = None
        self._timer: asyncio.TimerHandle | None = None
        self.expired = False

    def start(self) -> None:
        now = self._loop.time()
        self._started_at = now
        if self._timer is None:
            self._timer = self._loop.call_at(now + self._seconds, self._check)

    def stop(self) -> None:
        self._started_at = None

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _check(self) -> None:
        self._timer = None
        started_at = self._started_at
        if started_at is None:
            return
        due = started_at + self._seconds
        if self._loop.time() >= due:
            self.expired = True
            self._task.cancel()
        else:
            self._timer = self._loop.call_at(due, self._check)


class _Connection:
    """
    One authenticated connection: its socket, its subscription, and one send at a time.
    """

    __slots__ = (
        "_finisher",
        "_idle",
        "_limits",
        "_send_lock",
        "failed",
        "on_failure",
        "websocket",
    )

    def __init__(self, websocket: WebSocket, limits: Limits) -> None:
        self.websocket = websocket
        self._limits = limits
        self._send_lock = asyncio.Lock()
        # Set while a send started by send_now() waits for the socket to drain.
        self._idle: asyncio.Event | None = None
        self._finisher: asyncio.Task[None] | None = None
        # A send started by send_now() failed or took too long: the connection is done,
        # and on_failure (closing the subscription) ends its writer, then its reader.
        self.failed = False
        self.on_failure: Callable[[], None] | None = None

    def send_now(self, text: str) -> bool:
        """
        Send a notice at once, from the publisher's task, if nothing else is sending.

        Waking a writer task per recipient costs about as much as the send itself, and
        uvicorn's send does not wait while the socket is writable, so the publisher
        drives the send coroutine itself: it usually completes without suspending. If
        it suspends (the socket's buffer is full: a slow device), a task finishes it
        within the send limit, and this connection's later sends wait for that; so a
        slow device never holds up the others, and notices keep their order.

        :returns: whether the notice was sent or is being sent (else queue it).
        """
        if self._idle is not None or self._send_lock.locked():
            return False
        coroutine = self.websocket.send_text(text)
        try:
            waiting = coroutine.send(None)
        except StopIteration:
            return True
        except (WebSocketDisconnect, RuntimeError, OSError):
            # Gone: the notice is queued, and the writer's send meets the same error.
            return False
        self._idle = asyncio.Event()
        self._finisher = asyncio.get_running_loop().create_task(
            self._finish(coroutine, waiting), name="townsquare-push-send"
        )
        return True

    async def _finish(self, coroutine: Coroutine[Any, Any, None], waiting: object) -> None:
        # What a task's step does for a coroutine that suspended on ``waiting``: wait
        # for it, then resume the coroutine, until it returns (RFC 6455 frames of one
        # connection go out whole and in order: nothing else sends meanwhile).
        try:
            async with asyncio.timeout(self._limits.websocket_send_timeout_seconds):
                while True:
                    error: BaseException | None = None
                    try:
                        if isinstance(waiting, asyncio.Future):
                            # As a task does with a future its coroutine yielded: take
                            # the yield, so that awaiting it here is not a second one.
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
        except (TimeoutError, WebSocketDisconnect, RuntimeError, OSError):
            coroutine.close()
            self.failed = True
            if self.on_failure is not None:
                self.on_failure()
        finally:
            idle, self._idle, self._finisher = self._idle, None, None
            if idle is not None:
                idle.set()

    async def _wait_idle(self) -> None:
        while (idle := self._idle) is not None:
            await idle.wait()

    async def send(self, frame: dict[str, Any]) -> None:
        text = _frame_text(frame)
        await self._wait_idle()
        async with self._send_lock:
            try:
                async with asyncio.timeout(self._limits.websocket_send_timeout_seconds):
                    await self.websocket.send_text(text)
            except (WebSocketDisconnect, RuntimeError, OSError) as exc:
                raise _Closed("the connection is gone") from exc

    async def send_notice(self, text: str, deadline: _SendDeadline) -> None:
        # The writer's send: timed by the connection's deadline rather than a timer each.
        await self._wait_idle()
        if self.failed:
            raise _Closed("a send took longer than the limit")
        async with self._send_lock:
            deadline.start()
            try:
                await self.websocket.send_text(text)
            except asyncio.CancelledError as exc:
                task = asyncio.current_task()
                if deadline.expired and task is not None and task.uncancel() == 0:
                    raise _Closed("a send took longer than the limit") from exc
                raise
            except (WebSocketDisconnect, RuntimeError, OSError) as exc:
                raise _Closed("the connection is gone") from exc
            finally:
                deadline.stop()

    async def receive(self) -> str:
        # No timeout: waiting for an idle device is the normal state (see the module).
        message = await self.websocket.receive()
        if message["type"] == "websocket.disconnect":
            raise _Closed("the device disconnected")
        text = message.get("text")
        if text is None:
            raise InvalidRequest("frames are text (JSON), not binary")
        return str(text)

    async def close(self, code: int) -> None:
        if self.websocket.application_state != WebSocketState.CONNECTED:
            return
        with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError, TimeoutError):
            async with asyncio.timeout(self._limits.websocket_send_timeout_seconds):
                await self.websocket.close(code)


class PushEndpoint:
    """
    The ASGI WebSocket endpoint of ``/v1/ws``.
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
        self._texts = _NoticeTexts()

    async def __call__(self, websocket: WebSocket) -> None:
        """
        Serve one connection until either side closes it.
        """
        connection = _Connection(websocket, self._limits)
        try:
            async with asyncio.timeout(self._limits.websocket_auth_timeout_seconds):
                await websocket.accept()
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
            await self._serve(connection, subscription)
        except _Closed:
            pass
        except ServerError as exc:
            with contextlib.suppress(_Closed):
                await connection.send(_error_frame(exc))
            await connection.close(_close_code(exc))
        finally:
            subscription.close()

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

    async def _serve(self, connection: _Connection, subscription: Subscription) -> None:
        # This task reads the device's frames; one writer task sends its notices. The
        # group owns the writer: a writer whose send fails raises _Closed, which
        # cancels this reader; the reader, when it ends, closes the subscription,
        # which ends the writer.
        refused: list[ServerError] = []

        async def write() -> None:
            deadline = _SendDeadline(self._limits.websocket_send_timeout_seconds)
            texts = self._texts
            # The publisher sends to an idle connection itself (see send_now); the
            # writer sends what was queued while a send was under way.
            subscription.direct = lambda notice: connection.send_now(texts.text(notice))
            connection.on_failure = subscription.close
            try:
                while True:
                    notice: Notice | None = await subscription.next()
                    # Everything that arrived meanwhile goes before the next wait.
                    while notice is not None:
                        await connection.send_notice(texts.text(notice), deadline)
                        notice = subscription.poll()
            except SubscriptionClosed:
                if connection.failed:
                    raise _Closed("a send took longer than the limit") from None
            finally:
                subscription.direct = None
                deadline.close()

        try:
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(write())
                try:
                    await self._read(connection, subscription)
                except _Closed:
                    pass
                except ServerError as exc:
                    refused.append(exc)
                finally:
                    subscription.close()
        except* _Closed:
            pass
        if refused:
            raise refused[0]

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

"""
The asyncio driver: the client core's I/O, over ``httpx`` and a WebSocket, in about one screen.

:class:`ClientDriver` owns everything the core does not: the clock, the
randomness, HTTP requests (each signed with the device key as
``docs/protocol.md`` requires, each under a timeout), the push channel and
its reconnection, and the tasks that do all this, every one owned by one
``asyncio.TaskGroup`` that lives as long as the driver (``async with``).

Its loop, in the manner of aioquic's asyncio adapter::

    loop: handle_timer(now) ─► while next_request(now): start a task to send it
          ─► hand out events ─► sleep until get_timer() or until woken
    task: sign ─► POST/GET with a timeout ─► receive_response / request_failed ─► wake the loop
    push: frames ─► receive_push ─► wake the loop

API calls (``send_text``, ``create_group``, …) go to the core at once (it
writes before it returns) and wake the loop; :meth:`ClientDriver.sync`
waits until the core has nothing left to do, or a deadline passes.

Crash tests kill the driver's process at three named places
(:mod:`~townsquare.client.driver.failpoints`): after ``send`` stored the
outbox entry, after the relay accepted a message but before the core saw
the answer, and while a fetched page holding a commit is being stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Self, TypeVar

import httpx

from townsquare import auth, wire
from townsquare.auth import AuthError
from townsquare.auth.invites import invite_link, parse_invite_link
from townsquare.client.core import relay_api as api
from townsquare.client.core.client import Client, ClientConfig
from townsquare.client.core.events import Event
from townsquare.client.core.groups import GroupSummary, MemberInfo
from townsquare.client.core.messages import StoredMessage
from townsquare.client.driver import failpoints
from townsquare.client.driver.home import home_folder, relay_url, set_relay_url
from townsquare.client.driver.push import (
    PushCallbacks,
    PushChannel,
    PushConfig,
    PushConnector,
    websocket_url,
)
from townsquare.client.driver.store import DATABASE_FILE_NAME, SqliteClientStore
from townsquare.client.errors import (
    ConnectionFailed,
    InvalidInvite,
    NotInitialized,
    ProtocolError,
    StoreFailed,
)
from townsquare.mls.errors import DecodeError
from townsquare.mls.public_group import peek
from townsquare.mls.registries import ContentType

__all__ = ["ClientDriver", "DriverConfig", "open_home"]

_log = logging.getLogger("townsquare.client")
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True, kw_only=True)
class DriverConfig:
    """
    The driver's timeouts and switches.

    :param request_timeout_seconds: the most one HTTP request may take, all told.
    :param connect_timeout_seconds: the most connecting to the relay may take.
    :param push: whether to keep the push channel up (a one-shot CLI command may not).
    :param push_config: the push channel's timeouts and backoff.
    :param client: the core's policy.
    """

    request_timeout_seconds: float = 30.0
    connect_timeout_seconds: float = 10.0
    push: bool = True
    push_config: PushConfig = field(default_factory=PushConfig)
    client: ClientConfig = field(default_factory=ClientConfig)


class ClientDriver:
    """
    Runs a :class:`~townsquare.client.core.client.Client` against a relay.

    Use it as an async context manager; its API methods call the core (which
    stores before it returns) and wake the loop that talks to the relay.
    """

    def __init__(
        self,
        client: Client,
        *,
        relay_url: str,
        config: DriverConfig | None = None,
        http: httpx.AsyncClient | None = None,
        push_connector: PushConnector | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """
        :param client: the core (loaded from the device's store).
        :param relay_url: ``http(s)://host[:port]`` of the relay.
        :param config: timeouts and switches.
        :param http: the HTTP client (default: a new one; tests pass a mock transport).
        :param push_connector: opens the WebSocket (default: ``websockets``).
        :param clock: Unix seconds.
        """
        self._client = client
        self._relay_url = relay_url.rstrip("/")
        self._config = config or DriverConfig()
        self._own_http = http is None
        self._http = http or httpx.AsyncClient(
            timeout=httpx.Timeout(
                self._config.request_timeout_seconds,
                connect=self._config.connect_timeout_seconds,
            ),
        )
        self._push_connector = push_connector
        self._clock = clock
        self._wake = asyncio.Event()
        self._settled = asyncio.Event()
        self._listeners: list[Callable[[Event], None]] = []
        self._tasks: asyncio.TaskGroup | None = None
        self._long_running: list[asyncio.Task[None]] = []
        self._requests: set[asyncio.Task[None]] = set()
        self._push: PushChannel | None = None

    # -- Lifetime --------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        """
        Start the loop (and the push channel) in a task group of the driver's own.
        """
        tasks = asyncio.TaskGroup()
        await tasks.__aenter__()
        self._tasks = tasks
        self._long_running.append(tasks.create_task(self._loop(), name="townsquare-loop"))
        device = self._client.device
        if self._config.push and device is not None:
            self._push = PushChannel(
                url=websocket_url(self._relay_url),
                device_private_key=device.device_private_key,
                clock=self._clock,
                callbacks=PushCallbacks(
                    connected=self._push_connected,
                    frame=self._push_frame,
                    disconnected=self._push_disconnected,
                    subscriptions=self._client.subscriptions,
                ),
                config=self._config.push_config,
                connector=self._push_connector,
            )
            self._long_running.append(tasks.create_task(self._push.run(), name="townsquare-push"))
            # Poll until the channel is up (it may never be, behind some proxies).
            self._client.push_disconnected(self._clock())
        self._client.sync(self._clock())
        self._wake.set()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """
        Cancel the loop, the push channel and requests in flight, wait for them, close HTTP.

        A request cancelled here is reported to the core as failed: it is sent
        again by the next driver (the relay deduplicates what arrived).
        """
        tasks, self._tasks = self._tasks, None
        try:
            for task in self._long_running:
                task.cancel()
            for task in self._requests:
                task.cancel()
            if tasks is not None:
                # A CancelledError may be the task group cancelling us because one
                # of its tasks failed: it must see it to raise that failure. Any
                # other exception of the body is the caller's, and propagates as is.
                if exc_type is not None and issubclass(exc_type, asyncio.CancelledError):
                    await tasks.__aexit__(exc_type, exc, traceback)
                else:
                    await tasks.__aexit__(None, None, None)
        finally:
            self._long_running.clear()
            if self._own_http:
                await self._http.aclose()

    def _start(self, request: api.Request) -> None:
        if self._tasks is None:
            return
        task = self._tasks.create_task(self._perform(request), name="townsquare-request")
        self._requests.add(task)
        task.add_done_callback(self._requests.discard)

    # -- The loop --------------------------------------------------------------------------

    async def _loop(self) -> None:
        client = self._client
        while True:
            now = self._clock()
            try:
                client.handle_timer(now)
                while (request := client.next_request(now)) is not None:
                    self._start(request)
            except StoreFailed as exc:
                # The core reloaded the group from disk; the work is asked for again.
                _log.warning("a store write failed: %s", exc)
            self._deliver_events()
            if client.has_work():
                self._settled.clear()
            else:
                self._settled.set()
            if self._push is not None and self._push.connected:
                self._push.subscriptions_changed()
            timer = client.get_timer()
            delay = None if timer is None else max(0.0, timer - self._clock())
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._wake.wait()

    async def _exchange(self, device_private_key: bytes, request: api.Request) -> api.Response:
        """
        Sign ``request`` as this device (docs/protocol.md, Request signing), send it, answer.

        :raises httpx.RequestError: if the relay could not be reached.
        :raises TimeoutError: if it did not answer in ``request_timeout_seconds``.
        """
        headers = auth.sign_request(
            device_private_key=device_private_key,
            method=request.method,
            target=request.target,
            body=request.body,
            timestamp=int(self._clock()),
            nonce=secrets.token_bytes(auth.NONCE_BYTES),
        )
        if request.content_type is not None:
            headers["Content-Type"] = request.content_type
        async with asyncio.timeout(self._config.request_timeout_seconds):
            answer = await self._http.request(
                request.method,
                self._relay_url + request.target,
                content=request.body or None,
                headers=headers,
            )
        return api.Response(
            status=answer.status_code,
            body=answer.content,
            content_type=answer.headers.get("content-type", "").split(";")[0].strip(),
            retry_after=_retry_after(answer.headers.get("retry-after")),
        )

    async def _perform(self, request: api.Request) -> None:
        device = self._client.device
        if device is None:  # pragma: no cover - the core asks nothing without a device
            return
        try:
            response = await self._exchange(device.device_private_key, request)
        except (httpx.RequestError, TimeoutError) as exc:
            _log.info("%s %s failed: %s", request.method, request.target, type(exc).__name__)
            self._client.request_failed(request.request_id, self._clock())
        except asyncio.CancelledError:
            # The driver is closing: the core will ask again (the relay deduplicates).
            self._client.request_failed(request.request_id, self._clock())
            raise
        else:
            if response.ok and _is_message_post(request):
                failpoints.failpoint(failpoints.AFTER_SEND_RESPONSE)
            try:
                with _armed_if_commit(request, response):
                    self._client.receive_response(request.request_id, response, self._clock())
            except StoreFailed as exc:
                _log.warning("a store write failed: %s", exc)
        self._wake.set()

    def _deliver_events(self) -> None:
        while (event := self._client.next_event()) is not None:
            for listener in list(self._listeners):
                listener(event)

    def _push_connected(self) -> None:
        self._client.push_connected(self._clock())
        self._wake.set()

    def _push_disconnected(self) -> None:
        self._client.push_disconnected(self._clock())
        self._wake.set()

    def _push_frame(self, frame: str | bytes) -> None:
        try:
            self._client.receive_push(frame, self._clock())
        except StoreFailed as exc:
            _log.warning("a store write failed: %s", exc)
        self._wake.set()

    # -- Waiting ---------------------------------------------------------------------------

    def add_listener(self, listener: Callable[[Event], None]) -> Callable[[], None]:
        """
        Call ``listener`` with every event from now on.

        :returns: a function that removes it.
        """
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    async def sync(self, *, timeout: float = 30.0) -> None:
        """
        Send the outbox and fetch and process everything pending, until nothing is left.

        :param timeout: the most to wait, in seconds.
        :raises ConnectionFailed: if work is left at the deadline (the relay is down, say);
            nothing is lost: the outbox keeps what was not sent.
        """
        self._client.sync(self._clock())
        self._settled.clear()
        self._wake.set()
        await self.wait_settled(timeout=timeout)

    async def wait_settled(self, *, timeout: float) -> None:
        """
        Wait until the core has nothing left to do.

        :raises ConnectionFailed: at the deadline.
        """
        try:
            async with asyncio.timeout(timeout):
                while True:
                    await self._settled.wait()
                    # Settled, unless an answer arrived since: let the loop look again.
                    await asyncio.sleep(0)
                    if not self._client.has_work():
                        return
                    self._settled.clear()
        except TimeoutError as exc:
            raise ConnectionFailed("the relay did not finish answering in time") from exc

    async def wait_for(self, predicate: Callable[[Event], bool], *, timeout: float) -> Event:
        """
        Wait for the first event that satisfies ``predicate``.

        :raises ConnectionFailed: if none comes in time.
        """
        future: asyncio.Future[Event] = asyncio.get_running_loop().create_future()

        def listen(event: Event) -> None:
            if not future.done() and predicate(event):
                future.set_result(event)

        remove = self.add_listener(listen)
        try:
            async with asyncio.timeout(timeout):
                return await future
        except TimeoutError as exc:
            raise ConnectionFailed("the event did not come in time") from exc
        finally:
            remove()

    # -- The API (each call stores before it returns) ------------------------------------

    @property
    def client(self) -> Client:
        """
        The core, for reading its state (``messages``, ``members``, ``group``…).
        """
        return self._client

    def _woken(self, value: _T) -> _T:
        self._settled.clear()
        self._wake.set()
        return value

    def initialize(self, *, display_name: str | None) -> None:
        """
        See :meth:`Client.initialize <townsquare.client.core.client.Client.initialize>`.

        The push channel starts with the next driver (it needs the device's key).
        """
        self._client.initialize(display_name=display_name, now=self._clock())
        self._client.sync(self._clock())
        self._woken(None)

    def create_group(
        self,
        *,
        title: str | None = None,
        members_can_add: bool = False,
        approval_required: bool = False,
    ) -> bytes:
        """
        See :meth:`Client.create_group <townsquare.client.core.client.Client.create_group>`.
        """
        return self._woken(
            self._client.create_group(
                title=title,
                members_can_add=members_can_add,
                approval_required=approval_required,
                now=self._clock(),
            )
        )

    def send(self, group_id: bytes, message: wire.Message) -> bytes:
        """
        See :meth:`Client.send <townsquare.client.core.client.Client.send>`.
        """
        message_id = self._client.send(group_id, message, now=self._clock())
        failpoints.failpoint(failpoints.AFTER_OUTBOX_SAVED)
        return self._woken(message_id)

    def send_text(self, group_id: bytes, text: str) -> bytes:
        """
        See :meth:`Client.send_text <townsquare.client.core.client.Client.send_text>`.
        """
        message_id = self._client.send_text(group_id, text, now=self._clock())
        failpoints.failpoint(failpoints.AFTER_OUTBOX_SAVED)
        return self._woken(message_id)

    def add_key_packages(self, group_id: bytes, key_packages: Sequence[bytes]) -> None:
        """
        See :meth:`Client.add_key_packages
        <townsquare.client.core.client.Client.add_key_packages>`.
        """
        self._client.add_key_packages(group_id, key_packages, now=self._clock())
        self._woken(None)

    async def relay_request(self, request: api.Request) -> api.Response:
        """
        Send one signed request outside the core's state machine and return the answer.

        For interactive reads and answers that need no durability (an admin listing or
        denying join requests): nothing is retried or stored.

        :raises NotInitialized: before the device exists.
        :raises ConnectionFailed: if the relay does not answer in time.
        """
        device = self._client.device
        if device is None:
            raise NotInitialized("no device: initialize first")
        try:
            return await self._exchange(device.device_private_key, request)
        except (httpx.RequestError, TimeoutError) as exc:
            raise ConnectionFailed(f"{request.method} {request.target}: {exc!r}") from exc

    def add_members(self, group_id: bytes, account_keys: Sequence[bytes]) -> None:
        """
        See :meth:`Client.add_members <townsquare.client.core.client.Client.add_members>`.
        """
        self._client.add_members(group_id, account_keys, now=self._clock())
        self._woken(None)

    def remove_member(self, group_id: bytes, device_key: bytes) -> None:
        """
        See :meth:`Client.remove_member <townsquare.client.core.client.Client.remove_member>`.
        """
        self._client.remove_member(group_id, device_key, now=self._clock())
        self._woken(None)

    def leave(self, group_id: bytes) -> None:
        """
        See :meth:`Client.leave <townsquare.client.core.client.Client.leave>`.
        """
        self._client.leave(group_id, now=self._clock())
        self._woken(None)

    def set_admin(self, group_id: bytes, device_key: bytes, *, admin: bool) -> None:
        """
        See :meth:`Client.set_admin <townsquare.client.core.client.Client.set_admin>`.
        """
        self._client.set_admin(group_id, device_key, admin=admin, now=self._clock())
        self._woken(None)

    def set_group_settings(
        self,
        group_id: bytes,
        *,
        approval_required: bool | None = None,
        members_can_add: bool | None = None,
    ) -> bool:
        """
        See :meth:`Client.set_group_settings
        <townsquare.client.core.client.Client.set_group_settings>`.

        :returns: whether a commit was queued (``False``: nothing to change).
        """
        return self._woken(
            self._client.set_group_settings(
                group_id,
                approval_required=approval_required,
                members_can_add=members_can_add,
                now=self._clock(),
            )
        )

    def update_keys(self, group_id: bytes) -> None:
        """
        See :meth:`Client.update_keys <townsquare.client.core.client.Client.update_keys>`.
        """
        self._client.update_keys(group_id, now=self._clock())
        self._woken(None)

    def create_invite(
        self, group_id: bytes, *, lifetime_seconds: int | None = None, max_uses: int | None = None
    ) -> str:
        """
        Make an invite link for the group (see :meth:`Client.create_invite
        <townsquare.client.core.client.Client.create_invite>`); it works once the relay
        holds the invite (an ``InviteReady`` event).

        :returns: the link, ``{relay}/j/{group}#{secret}``.
        """
        secret = self._client.create_invite(
            group_id, now=self._clock(), lifetime_seconds=lifetime_seconds, max_uses=max_uses
        )
        self._woken(None)
        return invite_link(self._relay_url, group_id, secret)

    def join(self, link: str) -> bytes:
        """
        Join a group by an invite link of this device's relay (see :meth:`Client.join
        <townsquare.client.core.client.Client.join>`).

        :returns: the group id.
        :raises InvalidInvite: if the link does not parse or names another relay.
        """
        try:
            parsed = parse_invite_link(link)
        except AuthError as exc:
            raise InvalidInvite(f"not an invite link: {exc}") from exc
        if parsed.relay.rstrip("/") != self._relay_url.rstrip("/"):
            raise InvalidInvite(
                f"the link is for the relay at {parsed.relay}, this device uses {self._relay_url}"
            )
        self._client.join(parsed.group_id, parsed.secret, now=self._clock())
        self._woken(None)
        return parsed.group_id

    def set_display_name(self, display_name: str) -> None:
        """
        See :meth:`Client.set_display_name`.
        """
        self._client.set_display_name(display_name, now=self._clock())
        self._woken(None)

    def messages(self, group_id: bytes) -> tuple[StoredMessage, ...]:
        """
        See :meth:`Client.messages <townsquare.client.core.client.Client.messages>`.
        """
        return self._client.messages(group_id)

    def members(self, group_id: bytes) -> tuple[MemberInfo, ...]:
        """
        See :meth:`Client.members <townsquare.client.core.client.Client.members>`.
        """
        return self._client.members(group_id)

    def group(self, group_id: bytes) -> GroupSummary:
        """
        See :meth:`Client.group <townsquare.client.core.client.Client.group>`.
        """
        return self._client.group(group_id)


def _is_message_post(request: api.Request) -> bool:
    # POST /v1/groups/{group_id}/messages: an application message, proposal or commit.
    return request.method == "POST" and request.target.endswith("/messages")


def _armed_if_commit(
    request: api.Request, response: api.Response
) -> contextlib.AbstractContextManager[None]:
    """
    Arm ``while-processing-commit`` for a fetched page of the log that holds a commit.

    The page is parsed here only when that failpoint is listed (in crash tests).
    """
    if not failpoints.enabled(failpoints.WHILE_PROCESSING_COMMIT):
        return contextlib.nullcontext()
    if request.method != "GET" or "/messages?" not in request.target or not response.ok:
        return contextlib.nullcontext()
    try:
        # Log seqs start at 1: any page is "after 0" as far as its order goes.
        entries = api.parse_log(response, after=0).entries
    except ProtocolError:
        return contextlib.nullcontext()
    for entry in entries:
        try:
            content_type = peek(entry.message).content_type
        except DecodeError:
            continue
        if content_type == ContentType.COMMIT:
            return failpoints.armed(failpoints.WHILE_PROCESSING_COMMIT)
    return contextlib.nullcontext()


def _retry_after(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


@contextlib.asynccontextmanager
async def open_home(
    home: str | Path | None = None,
    *,
    relay: str | None = None,
    config: DriverConfig | None = None,
) -> AsyncIterator[ClientDriver]:
    """
    Open the device in a home folder and run its driver.

    :param home: the folder (default: ``$TOWNSQUARE_HOME``, else ``~/.townsquare``).
    :param relay: the relay URL; stored in the home the first time, taken from it after.
    :param config: the driver's timeouts and switches.
    :raises NotInitialized: if no relay URL is given or stored.
    :raises UsageError: if the relay URL is not one.
    :raises StoreCorrupt: if the home's database is not one this SDK reads.
    """
    folder = home_folder(home)
    store = SqliteClientStore(folder / DATABASE_FILE_NAME)
    try:
        url = set_relay_url(store, relay) if relay is not None else relay_url(store)
        if url is None:
            raise NotInitialized(f"no relay URL in {folder}: initialize the device first")
        config = config or DriverConfig()
        client = Client(store, rng=secrets.token_bytes, config=config.client)
        async with ClientDriver(client, relay_url=url, config=config) as driver:
            yield driver
    finally:
        store.close()

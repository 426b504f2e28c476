"""
The asyncio driver against the fake relay, in process: HTTP through ``httpx.MockTransport``.

Requests are checked the way the relay checks them (the signature over the
canonical request, with the target exactly as sent). The push channel is an
in-memory socket speaking the relay's challenge / auth / ready / subscribe
exchange and forwarding the fake relay's notices. No network, no sleeps
beyond the driver's own (sub-second) backoffs.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest

from townsquare import auth
from townsquare.client.core import (
    Client,
    ClientConfig,
    GroupJoined,
    MessageReceived,
    MessageSent,
)
from townsquare.client.core.retry import Backoff
from townsquare.client.driver import (
    ClientDriver,
    DriverConfig,
    PushConfig,
    SqliteClientStore,
    check_relay_url,
    home_folder,
    open_home,
    relay_url,
    set_relay_url,
    websocket_url,
)
from townsquare.client.errors import ConnectionFailed, NotInitialized, UsageError
from townsquare.client.testing import FakeRelay

pytestmark = pytest.mark.anyio

RELAY = "http://relay.test"
FAST = Backoff(initial_seconds=0.01, max_seconds=0.05)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class FakeNet:
    """The fake relay behind a mock HTTP transport and in-memory push sockets."""

    def __init__(self) -> None:
        self.relay = FakeRelay()
        self.down: set[bytes] = set()  # devices whose requests fail as if offline
        self.push_down = 0  # how many push connections to refuse
        self.queues: dict[bytes, asyncio.Queue[str]] = {}
        self.bad_signatures = 0

    def handler(self, request: httpx.Request) -> httpx.Response:
        headers = request.headers
        device = auth.decode_b64u(headers[auth.DEVICE_HEADER])
        if device in self.down:
            raise httpx.ConnectError("offline", request=request)
        target = request.url.raw_path.decode("ascii")
        canonical = auth.canonical_request(
            method=request.method,
            target=target,
            body=request.content,
            timestamp=int(headers[auth.TIMESTAMP_HEADER]),
            nonce=auth.decode_b64u(headers[auth.NONCE_HEADER]),
            device_key=device,
        )
        try:
            auth.verify_request_signature(
                device, canonical, auth.decode_b64u(headers[auth.SIGNATURE_HEADER])
            )
        except auth.AuthError:
            self.bad_signatures += 1
            return httpx.Response(401)
        answer = self.relay.handle(device, request.method, target, request.content)
        self.forward()
        return httpx.Response(
            answer.status, content=answer.body, headers={"content-type": answer.content_type}
        )

    def forward(self) -> None:
        for device, queue in self.queues.items():
            for frame in self.relay.take_notices(device):
                queue.put_nowait(frame)

    def transport(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.MockTransport(self.handler))

    def connector(self) -> Callable[[str], contextlib.AbstractAsyncContextManager[FakeSocket]]:
        @contextlib.asynccontextmanager
        async def connect(url: str) -> AsyncIterator[FakeSocket]:
            assert url == websocket_url(RELAY)
            if self.push_down > 0:
                self.push_down -= 1
                raise OSError("connection refused")
            yield FakeSocket(self)

        return connect


class FakeSocket:
    def __init__(self, net: FakeNet) -> None:
        self.net = net
        self.challenge = b"\x42" * 32
        self.state = "new"
        self.queue: asyncio.Queue[str] = asyncio.Queue()
        self.subscribed: list[str] = []

    async def recv(self) -> str:
        if self.state == "new":
            self.state = "challenged"
            return json.dumps({"type": "challenge", "challenge": auth.encode_b64u(self.challenge)})
        if self.state == "authenticated":
            self.state = "ready"
            return json.dumps({"type": "ready"})
        return await self.queue.get()

    async def send(self, message: str) -> None:
        frame = json.loads(message)
        if frame["type"] == "auth":
            headers = frame["headers"]
            device = auth.decode_b64u(headers[auth.DEVICE_HEADER])
            canonical = auth.canonical_request(
                method="GET",
                target="/v1/ws",
                body=self.challenge,
                timestamp=int(headers[auth.TIMESTAMP_HEADER]),
                nonce=auth.decode_b64u(headers[auth.NONCE_HEADER]),
                device_key=device,
            )
            auth.verify_request_signature(
                device, canonical, auth.decode_b64u(headers[auth.SIGNATURE_HEADER])
            )
            self.state = "authenticated"
            self.net.queues[device] = self.queue
            self.net.forward()
        elif frame["type"] == "subscribe":
            self.subscribed.extend(frame["groups"])


def config() -> DriverConfig:
    return DriverConfig(
        request_timeout_seconds=5.0,
        push_config=PushConfig(backoff=FAST),
        client=ClientConfig(
            retry=FAST, key_packages_target=3, key_packages_low_water=2, commit_delay_seconds=0
        ),
    )


def driver_for(net: FakeNet, store: SqliteClientStore) -> ClientDriver:
    import secrets

    client = Client(store, rng=secrets.token_bytes, config=config().client)
    return ClientDriver(
        client,
        relay_url=RELAY,
        config=config(),
        http=net.transport(),
        push_connector=net.connector(),
    )


def new_device(tmp_path: Path, name: str) -> SqliteClientStore:
    import secrets
    import time

    store = SqliteClientStore(tmp_path / f"{name}.sqlite3")
    client = Client(store, rng=secrets.token_bytes, config=config().client)
    client.initialize(display_name=name, now=time.time())
    return store


async def test_two_devices_talk_through_the_driver(tmp_path: Path) -> None:
    net = FakeNet()
    alice_store, bob_store = new_device(tmp_path, "alice"), new_device(tmp_path, "bob")
    async with driver_for(net, alice_store) as alice, driver_for(net, bob_store) as bob:
        await alice.sync(timeout=5)
        await bob.sync(timeout=5)
        group_id = alice.create_group(title="王家村")
        await alice.sync(timeout=5)
        bob_account = bob.client.device.account_key
        joined = asyncio.ensure_future(
            bob.wait_for(lambda e: isinstance(e, GroupJoined), timeout=5)
        )
        alice.add_members(group_id, [bob_account])
        await alice.sync(timeout=5)
        await joined  # pushed: bob fetched the Welcome because the relay told him
        received = asyncio.ensure_future(
            bob.wait_for(
                lambda e: isinstance(e, MessageReceived) and e.message.text == "你好", timeout=5
            )
        )
        message_id = alice.send_text(group_id, "你好")
        await received
        await alice.sync(timeout=5)
        assert alice.client.message_state(group_id, message_id) == "sent"
        await bob.sync(timeout=5)
        assert [m.text for m in bob.messages(group_id) if m.kind == "text"] == ["你好"]
        assert {m.display_name for m in bob.members(group_id)} == {"alice", "bob"}
        assert bob.group(group_id).title == "王家村"
    assert net.bad_signatures == 0


async def test_offline_send_is_queued_then_sent_once_after_restart(tmp_path: Path) -> None:
    net = FakeNet()
    alice_store, bob_store = new_device(tmp_path, "alice"), new_device(tmp_path, "bob")
    async with driver_for(net, alice_store) as alice, driver_for(net, bob_store) as bob:
        await alice.sync(timeout=5)
        await bob.sync(timeout=5)
        group_id = alice.create_group()
        await alice.sync(timeout=5)
        alice.add_members(group_id, [bob.client.device.account_key])
        await alice.sync(timeout=5)
        await bob.sync(timeout=5)
        net.down.add(alice.client.device.device_key)
        message_id = alice.send_text(group_id, "sent while offline")
        with pytest.raises(ConnectionFailed):
            await alice.sync(timeout=0.1)
        assert alice.client.message_state(group_id, message_id) == "queued"
    # The process ends with the message queued; it starts again with the network back.
    net.down.clear()
    alice_store.close()
    alice_store = SqliteClientStore(tmp_path / "alice.sqlite3")
    async with driver_for(net, alice_store) as alice, driver_for(net, bob_store) as bob:
        await alice.sync(timeout=5)
        assert alice.client.message_state(group_id, message_id) == "sent"
        await bob.sync(timeout=5)
        texts = [m.text for m in bob.messages(group_id) if m.kind == "text"]
        assert texts == ["sent while offline"]


async def test_push_channel_reconnects_with_backoff(tmp_path: Path) -> None:
    net = FakeNet()
    net.push_down = 3
    alice_store, bob_store = new_device(tmp_path, "alice"), new_device(tmp_path, "bob")
    async with driver_for(net, alice_store) as alice, driver_for(net, bob_store) as bob:
        await alice.sync(timeout=5)
        await bob.sync(timeout=5)
        group_id = alice.create_group()
        await alice.sync(timeout=5)
        alice.add_members(group_id, [bob.client.device.account_key])
        await alice.sync(timeout=5)
        await bob.sync(timeout=5)
        for _ in range(100):
            if bob.client.device.device_key in net.queues and alice.client.device.device_key in (
                net.queues
            ):
                break
            await asyncio.sleep(0.01)
        assert net.push_down == 0
        sent = asyncio.ensure_future(
            bob.wait_for(lambda e: isinstance(e, MessageReceived), timeout=5)
        )
        alice.send_text(group_id, "after reconnecting")
        event = await sent
        assert isinstance(event, MessageReceived)


async def test_driver_events_report_acknowledgements(tmp_path: Path) -> None:
    net = FakeNet()
    store = new_device(tmp_path, "alice")
    async with driver_for(net, store) as alice:
        await alice.sync(timeout=5)
        group_id = alice.create_group()
        sent = asyncio.ensure_future(
            alice.wait_for(lambda e: isinstance(e, MessageSent), timeout=5)
        )
        alice.send_text(group_id, "hello")
        await sent
        with pytest.raises(ConnectionFailed):
            await alice.wait_for(lambda e: False, timeout=0.05)


async def test_open_home_needs_a_relay_url(tmp_path: Path) -> None:
    with pytest.raises(NotInitialized):
        async with open_home(tmp_path / "home", config=DriverConfig(push=False)):
            pass


def test_home_folder_and_relay_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOWNSQUARE_HOME", str(tmp_path / "env-home"))
    assert home_folder() == tmp_path / "env-home"
    assert home_folder(tmp_path / "explicit") == tmp_path / "explicit"
    assert (tmp_path / "explicit").stat().st_mode & 0o777 == 0o700
    store = SqliteClientStore(tmp_path / "x.sqlite3")
    assert relay_url(store) is None
    assert set_relay_url(store, "https://relay.example/") == "https://relay.example"
    assert relay_url(store) == "https://relay.example"
    for bad in ("ftp://x", "https://x/prefix", "https://x?q=1", "relay.example"):
        with pytest.raises(UsageError):
            check_relay_url(bad)
    assert websocket_url("https://r.example:8443") == "wss://r.example:8443/v1/ws"
    assert websocket_url("http://127.0.0.1:1") == "ws://127.0.0.1:1/v1/ws"


async def test_an_error_in_the_body_propagates_as_is(tmp_path: Path) -> None:
    net = FakeNet()
    store = new_device(tmp_path, "alice")
    with pytest.raises(KeyError):
        async with driver_for(net, store):
            raise KeyError("the caller's own error")


async def test_open_home_initializes_and_sends(tmp_path: Path) -> None:
    # open_home with the real httpx client, against nothing: the relay is down.
    home = tmp_path / "home"
    cfg = DriverConfig(
        push=False,
        request_timeout_seconds=0.5,
        connect_timeout_seconds=0.2,
        client=ClientConfig(retry=FAST),
    )
    async with open_home(home, relay="http://127.0.0.1:9", config=cfg) as driver:
        driver.initialize(display_name="alice")
        group_id = driver.create_group(title="offline village")
        message_id = driver.send_text(group_id, "queued")
        with pytest.raises(ConnectionFailed):
            await driver.sync(timeout=0.2)
        assert driver.client.message_state(group_id, message_id) == "queued"
    async with open_home(home, config=cfg) as driver:
        assert driver.client.message_state(group_id, message_id) == "queued"
        assert driver.group(group_id).title is None  # known once the relay created it
        assert (home / "client.sqlite3").exists()

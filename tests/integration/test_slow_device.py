"""
A device that stops reading is dropped, and the devices that read are not held up: real sockets.

The relay app (``create_app``, real SQLite) is served by a real ``uvicorn.Server``
with the settings ``townsquare serve`` uses (``relay_config``: the sans-I/O
websockets protocol), on 127.0.0.1 in a thread of this process, so that the test
can look at the relay's fan-out between requests. A group has three members, all
with real MLS state: A posts, C reads its push channel (a ``websockets`` client)
and decrypts every message it is pushed, and B's push channel is a raw socket
with a tiny receive buffer that authenticates, subscribes, and then reads
nothing more.

A posts 3 KiB application messages one at a time, each followed by C's notice,
until the relay drops B: B's buffers fill, its send waits, later notices queue
for it, and after ``websocket_send_timeout_seconds`` the relay ends the
connection (its subscription closes, its reading task ends). Checked: C is
pushed every message, in order, including those posted while B's notices were
held and after B was dropped; B is dropped within a few seconds of its last
read, and when B finally reads, it finds an in-order prefix of the notices and
then the end of the stream; the relay still serves (a new connection
authenticates and is pushed, ``/healthz`` answers 200); and uvicorn logged no
exception from the application.

The relay's side of B's connection gets a fixed send buffer (``SO_SNDBUF``) as
soon as it is accepted: with Linux's autotuning it would grow to
``net.ipv4.tcp_wmem``'s maximum (4 MiB by default: about 650 of these notices)
before a send ever waits, which would make the number of posts, and the test's
length, depend on the host. (Fixing it on the listening socket instead, for
every connection, made each HTTP request take about 45 ms on loopback.)
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import logging
import secrets
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import uvicorn
from websockets.sync.client import ClientConnection, connect

from townsquare import auth
from townsquare.cli.serve import relay_config
from townsquare.mls.ciphersuite import get_cipher_suite
from townsquare.mls.credentials import BasicCredential
from townsquare.mls.group import Group
from townsquare.mls.key_package import KeyPackageBundle, generate_key_package
from townsquare.mls.leaf_node import Lifetime
from townsquare.mls.proposals import Add
from townsquare.server import Limits, Settings, create_app
from townsquare.server.app import RelayApp
from townsquare.server.fanout import InMemoryFanout

from .test_delivery import b64u, seeded_rng

pytestmark = [pytest.mark.integration, pytest.mark.slow]

T = TypeVar("T")

SUITE = get_cipher_suite(1)
SEND_TIMEOUT_SECONDS = 1.0
LIMITS = Limits(
    websocket_send_timeout_seconds=SEND_TIMEOUT_SECONDS,
    # Every message of the test is A's: far more than the default quota allows.
    posts_per_window=100_000,
)

#: The slow device's receive buffer (Linux doubles it; the point is that it is tiny).
SLOW_RCVBUF_BYTES = 4096
#: The relay's send buffer on B's connection (also doubled): a few dozen notices.
RELAY_SNDBUF_BYTES = 64 * 1024
#: Each message's plaintext: its MLS PrivateMessage is still pushed whole (at most
#: ``push_inline_max_bytes``, 4096), and each notice frame is about 4.5 KB.
PLAINTEXT_BYTES = 3 * 1024
#: A loose bound, not a timing: how long B may go unread before the relay must have
#: dropped it (a few dozen posts fill its buffers, then the send limit runs out).
DROP_DEADLINE_SECONDS = 10.0
#: Posts after B is dropped, to see C still pushed.
POSTS_AFTER_DROP = 5
RECEIVE_TIMEOUT_SECONDS = 10.0
START_TIMEOUT_SECONDS = 10.0
STOP_TIMEOUT_SECONDS = 15.0
WEBSOCKET_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


# -- The relay, served by uvicorn in a thread --------------------------------------------


class Records(logging.Handler):
    """Keeps every record logged to the loggers it is attached to."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@dataclass
class ServedRelay:
    """The relay app under a real ``uvicorn.Server`` on 127.0.0.1, in its own thread and loop."""

    app: RelayApp
    server: uvicorn.Server
    loop: asyncio.AbstractEventLoop
    port: int
    logs: Records

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/ws"

    def call(self, function: Callable[[], T]) -> T:
        """Run ``function`` on the relay's loop: its state is only read there."""

        async def run() -> T:
            return function()

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(RECEIVE_TIMEOUT_SECONDS)

    @property
    def fanout(self) -> InMemoryFanout:
        # The push endpoint's fan-out is private: create_app builds it and exposes only the
        # endpoint. Reading it (on the relay's loop) is how the test sees a connection's
        # subscription close and notices wait for it, which no device can observe.
        fanout = self.app.push._fanout
        assert isinstance(fanout, InMemoryFanout)
        return fanout

    def limit_send_buffer(self, client: tuple[str, int], size: int) -> None:
        """Fix the send buffer of the relay's side of the connection from ``client``."""

        def limit() -> None:
            # uvicorn's protocol objects, one per open connection, know their peer.
            (connection,) = [
                c
                for c in self.server.server_state.connections
                if getattr(c, "client", None) == client
            ]
            sock = connection.transport.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)

        self.call(limit)

    def subscription_count(self) -> int:
        return self.call(lambda: self.fanout.subscription_count)

    def waiting_for(self, device_key: bytes) -> bool:
        """Whether notices wait in a subscription of the device: its sends are held."""
        return self.call(lambda: any(s.pending for s in self.fanout._by_device.get(device_key, ())))


@contextlib.contextmanager
def kept_logging(*names: str) -> Iterator[None]:
    # uvicorn.Config applies uvicorn's logging configuration to this process's loggers;
    # put them back as they were afterwards.
    loggers = [logging.getLogger(name) for name in names]
    saved = [(lg.handlers[:], lg.level, lg.propagate, lg.disabled) for lg in loggers]
    try:
        yield
    finally:
        for lg, (handlers, level, propagate, disabled) in zip(loggers, saved, strict=True):
            lg.handlers[:] = handlers
            lg.setLevel(level)
            lg.propagate = propagate
            lg.disabled = disabled


@pytest.fixture
def served_relay(tmp_path: Path) -> Iterator[ServedRelay]:
    with kept_logging("uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi", "townsquare"):
        app = create_app(Settings(data_dir=tmp_path / "data", limits=LIMITS))
        config = relay_config(app, host="127.0.0.1", port=0, log_level="info", access_log=False)
        server = uvicorn.Server(config)
        logs = Records()
        for name in ("uvicorn.error", "townsquare"):
            logging.getLogger(name).addHandler(logs)
        loops: list[asyncio.AbstractEventLoop] = []

        async def serve() -> None:
            loops.append(asyncio.get_running_loop())
            await server.serve()

        thread = threading.Thread(target=asyncio.run, args=(serve(),), name="relay")
        try:
            thread.start()
            deadline = time.monotonic() + START_TIMEOUT_SECONDS
            while not server.started:
                assert thread.is_alive(), "the relay did not start"
                assert time.monotonic() < deadline, "the relay did not start in time"
                time.sleep(0.02)
            port = server.servers[0].sockets[0].getsockname()[1]
            yield ServedRelay(app=app, server=server, loop=loops[0], port=port, logs=logs)
        finally:
            server.should_exit = True
            if thread.is_alive():
                thread.join(STOP_TIMEOUT_SECONDS)
            assert not thread.is_alive(), "the relay did not stop"


# -- Devices -----------------------------------------------------------------------------


@dataclass
class Member:
    """A registered device with an HTTP client, and its MLS state once in the group."""

    identity: Any
    http: httpx.Client
    rng: Callable[[int], bytes]
    bundle: KeyPackageBundle | None = None
    group: Group | None = None

    def key_package_bundle(self) -> KeyPackageBundle:
        self.bundle = generate_key_package(
            SUITE,
            credential=BasicCredential(self.identity.device_key),
            signature_private_key=self.identity.device_private,
            rng=self.rng,
            lifetime=Lifetime(0, 2**64 - 1),
        )
        return self.bundle

    def post(self, group_id: bytes, message: bytes, **extra: bytes | None) -> dict[str, Any]:
        body = {"client_message_id": b64u(secrets.token_bytes(16)), "message": b64u(message)}
        body.update({k: b64u(v) for k, v in extra.items() if v is not None})
        response = self.http.post(
            f"/v1/groups/{b64u(group_id)}/messages", json=body, auth=self.identity.signer()
        )
        assert response.status_code == 201, response.text
        posted: dict[str, Any] = response.json()
        return posted

    def join(self) -> Group:
        response = self.http.get("/v1/welcomes", auth=self.identity.signer())
        assert response.status_code == 200, response.text
        (welcome,) = response.json()["welcomes"]
        assert self.bundle is not None
        self.group = Group.join(
            auth.decode_b64u(welcome["welcome"]),
            self.bundle,
            ratchet_tree=auth.decode_b64u(welcome["ratchet_tree"]),
        )
        return self.group


def auth_frame(identity: Any, challenge_frame: dict[str, Any]) -> str:
    assert challenge_frame["type"] == "challenge"
    headers = auth.sign_request(
        device_private_key=identity.device_private,
        method="GET",
        target="/v1/ws",
        body=auth.decode_b64u(challenge_frame["challenge"]),
        timestamp=int(time.time()),
        nonce=secrets.token_bytes(auth.NONCE_BYTES),
    )
    return json.dumps({"type": "auth", "headers": headers})


def subscribe_frame(group_id: bytes) -> str:
    return json.dumps({"type": "subscribe", "groups": [b64u(group_id)]})


@contextlib.contextmanager
def reading_device(
    relay: ServedRelay, identity: Any, group_id: bytes
) -> Iterator[ClientConnection]:
    """A ``websockets`` client, authenticated and subscribed to the group."""
    with connect(relay.ws_url, open_timeout=RECEIVE_TIMEOUT_SECONDS) as ws:
        ws.send(auth_frame(identity, receive(ws)))
        assert receive(ws) == {"type": "ready", "device": identity.device_id}
        ws.send(subscribe_frame(group_id))
        assert receive(ws) == {"type": "subscribed", "groups": [b64u(group_id)], "refused": []}
        yield ws


def receive(ws: ClientConnection) -> dict[str, Any]:
    frame: dict[str, Any] = json.loads(ws.recv(timeout=RECEIVE_TIMEOUT_SECONDS))
    return frame


class RawWebSocket:
    """
    The few lines of an RFC 6455 client over a plain socket, so the test decides when it reads.

    Its receive buffer is set small before connecting (so the TCP window it advertises is
    small); client frames are masked text frames, server frames are read as they come.
    """

    def __init__(self, port: int, rcvbuf: int) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(RECEIVE_TIMEOUT_SECONDS)
        self.buffer = b""
        try:
            self.sock.connect(("127.0.0.1", port))
            key = base64.b64encode(secrets.token_bytes(16))
            self.sock.sendall(
                b"GET /v1/ws HTTP/1.1\r\n"
                + f"Host: 127.0.0.1:{port}\r\n".encode()
                + b"Upgrade: websocket\r\nConnection: Upgrade\r\n"
                + b"Sec-WebSocket-Key: "
                + key
                + b"\r\nSec-WebSocket-Version: 13\r\n\r\n"
            )
            head = self._read_until(b"\r\n\r\n").decode("latin-1").split("\r\n")
            assert head[0].startswith("HTTP/1.1 101"), head
            accept = base64.b64encode(
                hashlib.sha1(key + WEBSOCKET_GUID, usedforsecurity=False).digest()
            ).decode()
            headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in head)}
            assert headers["sec-websocket-accept"] == accept
        except BaseException:
            self.sock.close()
            raise

    def close(self) -> None:
        self.sock.close()

    def _fill(self) -> bool:
        data = self.sock.recv(65536)
        self.buffer += data
        return bool(data)

    def _read_until(self, end: bytes) -> bytes:
        while end not in self.buffer:
            assert self._fill(), "the relay closed the connection"
        head, _, self.buffer = self.buffer.partition(end)
        return head

    def _read_exactly(self, n: int) -> bytes:
        while len(self.buffer) < n:
            assert self._fill(), "the stream ended inside a frame"
        data, self.buffer = self.buffer[:n], self.buffer[n:]
        return data

    def send_text(self, text: str) -> None:
        payload = text.encode()
        mask = secrets.token_bytes(4)
        if len(payload) < 126:
            header = struct.pack("!BB", 0x81, 0x80 | len(payload))
        else:
            header = struct.pack("!BBH", 0x81, 0x80 | 126, len(payload))
        masked = bytes(byte ^ mask[i % 4] for i, byte in enumerate(payload))
        self.sock.sendall(header + mask + masked)

    def receive_frame(self) -> tuple[int, bytes]:
        """One whole frame from the relay (unmasked, unfragmented): its opcode and payload."""
        first, second = self._read_exactly(2)
        assert first & 0x80, "a fragmented frame"
        assert not second & 0x80, "a masked frame from the relay"
        length = second & 0x7F
        if length == 126:
            (length,) = struct.unpack("!H", self._read_exactly(2))
        elif length == 127:
            (length,) = struct.unpack("!Q", self._read_exactly(8))
        return first & 0x0F, self._read_exactly(length)

    def receive_json(self) -> dict[str, Any]:
        opcode, payload = self.receive_frame()
        assert opcode == 0x1, (opcode, payload)
        frame: dict[str, Any] = json.loads(payload)
        return frame

    def read_to_end(self) -> list[dict[str, Any]]:
        """
        Read until the relay ends the stream (at a frame's end), or resets it.

        :returns: the text frames read.
        """
        frames: list[dict[str, Any]] = []
        while True:
            if not self.buffer:
                try:
                    if not self._fill():
                        return frames
                except ConnectionResetError:
                    return frames
            opcode, payload = self.receive_frame()
            if opcode == 0x1:
                frames.append(json.loads(payload))
            else:
                # A close frame, should the relay send one, or a keepalive ping.
                assert opcode in (0x8, 0x9), (opcode, payload)


# -- The test ----------------------------------------------------------------------------


@pytest.fixture
def members(served_relay: ServedRelay, new_identity, request) -> Iterator[list[Member]]:
    rng = seeded_rng(request.node.nodeid.encode())
    made: list[Member] = []
    try:
        for _ in range(3):
            identity = new_identity()
            http = httpx.Client(base_url=served_relay.url, timeout=RECEIVE_TIMEOUT_SECONDS)
            made.append(Member(identity, http, rng))
            response = http.post(
                "/v1/accounts", json=identity.registration(), auth=identity.signer()
            )
            assert response.status_code == 201, response.text
        yield made
    finally:
        for member in made:
            member.http.close()


def padded(index: int) -> bytes:
    text = f"message {index}: "
    return (text + "·" * PLAINTEXT_BYTES).encode()[:PLAINTEXT_BYTES]


def test_a_device_that_stops_reading_is_dropped_and_holds_up_no_one(
    served_relay: ServedRelay, members: list[Member]
) -> None:
    relay = served_relay
    a, b, c = members
    # A creates the group and adds B and C in one commit (seq 1); C joins from its Welcome.
    group_a = Group.create(a.key_package_bundle(), group_id=a.rng(32), rng=a.rng)
    group_id = group_a.group_id
    created = a.http.post(
        "/v1/groups", json={"group_info": b64u(group_a.group_info())}, auth=a.identity.signer()
    )
    assert created.status_code == 201, created.text
    add = group_a.commit(
        rng=a.rng,
        proposals=[
            Add(b.key_package_bundle().key_package),
            Add(c.key_package_bundle().key_package),
        ],
    )
    assert a.post(group_id, add.commit, welcome=add.welcome, group_info=add.group_info)["seq"] == 1
    group_a.merge(add.staged)
    group_c = c.join()

    slow = RawWebSocket(relay.port, SLOW_RCVBUF_BYTES)
    try:
        relay.limit_send_buffer(slow.sock.getsockname(), RELAY_SNDBUF_BYTES)
        with reading_device(relay, c.identity, group_id) as healthy:
            # B: authenticated and subscribed, then it reads nothing more.
            slow.send_text(auth_frame(b.identity, slow.receive_json()))
            assert slow.receive_json() == {"type": "ready", "device": b.identity.device_id}
            slow.send_text(subscribe_frame(group_id))
            assert slow.receive_json()["groups"] == [b64u(group_id)]
            assert relay.subscription_count() == 2
            stopped_reading = time.monotonic()

            sent: dict[int, bytes] = {}
            pushed_to_c: list[int] = []

            def post_and_hear(index: int) -> int:
                plaintext = padded(index)
                message = group_a.encrypt(plaintext, rng=a.rng)
                assert len(message) <= LIMITS.push_inline_max_bytes
                seq: int = a.post(group_id, message)["seq"]
                sent[seq] = plaintext
                notice = receive(healthy)
                assert (notice["type"], notice["group"], notice["kind"]) == (
                    "message",
                    b64u(group_id),
                    "application",
                )
                pushed_to_c.append(notice["seq"])
                assert group_c.process(auth.decode_b64u(notice["message"])).data == sent.get(
                    notice["seq"]
                )
                return seq

            # A posts, C hears each message before the next, until the relay drops B.
            first_held: int | None = None
            while True:
                seq = post_and_hear(len(sent))
                if first_held is None and relay.waiting_for(b.identity.device_key):
                    first_held = seq
                if relay.subscription_count() == 1:
                    dropped_after = seq
                    break
                unread_for = time.monotonic() - stopped_reading
                posted = len(sent)
                assert unread_for < DROP_DEADLINE_SECONDS, (
                    f"the device was not dropped {DROP_DEADLINE_SECONDS} s after it stopped"
                    f" reading ({posted} messages posted)"
                )
            # C went on hearing while B's sends were held, and after B was dropped.
            assert first_held is not None, "no post went through while B's notices were held"
            assert dropped_after > first_held
            for _ in range(POSTS_AFTER_DROP):
                post_and_hear(len(sent))
            assert pushed_to_c == sorted(sent) == list(range(2, 2 + len(sent)))

            # The relay still serves: a new connection authenticates and is pushed.
            with reading_device(relay, a.identity, group_id) as again:
                assert relay.subscription_count() == 2
                last = post_and_hear(len(sent))
                assert receive(again)["seq"] == last
            health = a.http.get("/healthz")
            assert health.status_code == 200, health.text

        # When B finally reads, it finds what the relay wrote before its send waited, in
        # order, and then the end of the stream. (Until B reads, the relay's socket stays
        # open with those notices in its buffers: uvicorn closes a transport only once
        # its buffer drains.)
        frames = slow.read_to_end()
    finally:
        slow.close()

    assert [frame["type"] for frame in frames] == ["message"] * len(frames)
    held = [frame["seq"] for frame in frames]
    assert 0 < len(held) < dropped_after - 1
    assert held == list(range(2, 2 + len(held)))
    failures = [
        record
        for record in relay.logs.records
        if record.levelno >= logging.ERROR or "Exception in ASGI application" in record.getMessage()
    ]
    assert not failures, [record.getMessage() for record in failures]

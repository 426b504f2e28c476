"""
Fixtures for the relay's unit tests: a real app on a real SQLite file, driven over ASGI.

Test modules cannot import this one (``--import-mode=importlib``), so every
helper is reached through a fixture: ``relay`` (the app, its clock, an ASGI
client, and methods to register, upload, create groups, post, fetch and
snapshot), ``relay_with`` (the same with other limits), ``new_identity``,
``make_key_package``, ``problem`` (asserts an RFC 9457 response), ``mls``
(real MLS groups of registered devices: :class:`MLS`) and ``storage_backend``
for the contract tests.
"""

from __future__ import annotations

import contextlib
import hashlib
import secrets
import sqlite3
from collections.abc import AsyncIterator, Callable, Generator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from townsquare import auth
from townsquare.mls.ciphersuite import Rng, get_cipher_suite
from townsquare.mls.credentials import BasicCredential
from townsquare.mls.framing import MLSMessage
from townsquare.mls.group import Group, GroupConfig, PendingCommit
from townsquare.mls.key_package import KeyPackage, KeyPackageBundle, generate_key_package
from townsquare.mls.leaf_node import Capabilities, LeafNode, Lifetime
from townsquare.mls.registries import LeafNodeSource, ProtocolVersion
from townsquare.server import Limits, Settings, create_app
from townsquare.server.delivery import CommitPolicy
from townsquare.server.fanout import InMemoryFanout
from townsquare.server.storage import DATABASE_FILE_NAME, SQLiteStorage

#: 2026-01-01T00:00:00Z, the fake clock's start.
NOW = 1_767_225_600

TEST_LIMITS = Limits(
    max_body_bytes=64 * 1024,
    max_devices_per_account=3,
    max_stored_key_packages=6,
    claims_per_window=5,
    claim_window_seconds=60,
)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class FakeClock:
    """A wall clock that moves only when told."""

    def __init__(self, now: int = NOW) -> None:
        self.value = now

    def now(self) -> int:
        return self.value

    def advance(self, seconds: int) -> None:
        self.value += seconds


@dataclass(frozen=True)
class Identity:
    """An account key and one of its device keys, as a client holds them."""

    account_private: bytes = field(default_factory=auth.generate_private_key)
    device_private: bytes = field(default_factory=auth.generate_private_key)

    @property
    def account_key(self) -> bytes:
        return auth.public_key(self.account_private)

    @property
    def device_key(self) -> bytes:
        return auth.public_key(self.device_private)

    @property
    def account_id(self) -> str:
        return auth.encode_b64u(self.account_key)

    @property
    def device_id(self) -> str:
        return auth.encode_b64u(self.device_key)

    def certificate(self, created_at: int = NOW) -> auth.DeviceCertificate:
        return auth.certify_device(self.account_private, self.device_key, created_at)

    def registration(self, created_at: int = NOW) -> dict[str, Any]:
        return {"certificate": certificate_json(self.certificate(created_at))}

    def another_device(self) -> Identity:
        return Identity(account_private=self.account_private)


def certificate_json(certificate: auth.DeviceCertificate) -> dict[str, Any]:
    return {
        "account_key": auth.encode_b64u(certificate.account_key),
        "device_key": auth.encode_b64u(certificate.device_key),
        "created_at": certificate.created_at,
        "signature": auth.encode_b64u(certificate.signature),
    }


class Signer(httpx.Auth):
    """Signs each request as a device, the way the SDK's driver will."""

    requires_request_body = True

    def __init__(
        self,
        device_private: bytes,
        clock: Callable[[], int],
        nonce: Callable[[], bytes] = lambda: secrets.token_bytes(auth.NONCE_BYTES),
    ) -> None:
        self.device_private = device_private
        self.clock = clock
        self.nonce = nonce
        self.last_headers: dict[str, str] = {}

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        self.last_headers = auth.sign_request(
            device_private_key=self.device_private,
            method=request.method,
            target=request.url.raw_path.decode("ascii"),
            body=request.content,
            timestamp=self.clock(),
            nonce=self.nonce(),
        )
        request.headers.update(self.last_headers)
        yield request


def seeded_rng(seed: bytes) -> Callable[[int], bytes]:
    counter = 0

    def rng(n: int) -> bytes:
        nonlocal counter
        out = b""
        while len(out) < n:
            out += hashlib.sha256(seed + counter.to_bytes(8, "big")).digest()
            counter += 1
        return out[:n]

    return rng


def key_package(
    device_private: bytes, *, seed: bytes | None = None, signer_private: bytes | None = None
) -> bytes:
    """An encoded MLSMessage(KeyPackage) of suite 1 whose leaf key is the device's."""
    suite = get_cipher_suite(1)
    rng = seeded_rng(seed if seed is not None else secrets.token_bytes(16))
    _, init_key = suite.hpke_generate_key_pair(rng)
    _, encryption_key = suite.hpke_generate_key_pair(rng)
    device_key = auth.public_key(device_private)
    signing = signer_private if signer_private is not None else device_private
    leaf = LeafNode(
        encryption_key=encryption_key,
        signature_key=device_key,
        credential=BasicCredential(device_key),
        capabilities=Capabilities(
            versions=(ProtocolVersion.MLS10,),
            cipher_suites=(1,),
            extensions=(),
            proposals=(),
            credentials=(1,),
        ),
        leaf_node_source=LeafNodeSource.KEY_PACKAGE,
        lifetime=Lifetime(0, 2**64 - 1),
    )
    leaf = replace(
        leaf, signature=suite.sign_with_label(signing, b"LeafNodeTBS", leaf.to_be_signed())
    )
    package = KeyPackage(cipher_suite=1, init_key=init_key, leaf_node=leaf)
    package = replace(
        package,
        signature=suite.sign_with_label(signing, b"KeyPackageTBS", package.to_be_signed()),
    )
    return MLSMessage(ProtocolVersion.MLS10, package).encode()


def b64u(data: bytes) -> str:
    return auth.encode_b64u(data)


#: Every table of the store, as the snapshots compare them.
TABLES = (
    "accounts",
    "devices",
    "key_packages",
    "request_nonces",
    "quotas",
    "groups",
    "group_devices",
    "group_log",
    "welcomes",
    "welcome_recipients",
    "cursors",
    "invites",
    "attachments",
    "join_requests",
)


def snapshot(data_dir: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, read from the database file itself."""
    uri = f"file:{data_dir / DATABASE_FILE_NAME}?mode=ro"
    with contextlib.closing(sqlite3.connect(uri, uri=True)) as connection:
        return {
            table: sorted(connection.execute(f"SELECT * FROM {table}").fetchall())  # noqa: S608
            for table in TABLES
        }


def without(state: dict[str, list[tuple[Any, ...]]], *tables: str) -> dict[str, Any]:
    return {name: rows for name, rows in state.items() if name not in tables}


@dataclass
class Relay:
    """A relay app over a real SQLite file, its fake clock and an ASGI client."""

    data_dir: Path
    clock: FakeClock
    client: httpx.AsyncClient
    fanout: InMemoryFanout

    def signer(self, identity: Identity) -> Signer:
        return Signer(identity.device_private, self.clock.now)

    def snapshot(self) -> dict[str, list[tuple[Any, ...]]]:
        return snapshot(self.data_dir)

    def assert_unchanged(
        self,
        before: dict[str, list[tuple[Any, ...]]],
        *,
        nonce_used: bool,
        quota_used: bool = False,
    ) -> None:
        """
        Nothing changed, except the request's bookkeeping: one recorded nonce if it passed
        authentication, and one use of the claimer's quota if it was a counted claim.
        """
        after = self.snapshot()
        bookkeeping = ("request_nonces", "quotas") if quota_used else ("request_nonces",)
        assert without(after, *bookkeeping) == without(before, *bookkeeping)
        added = set(after["request_nonces"]) - set(before["request_nonces"])
        assert set(before["request_nonces"]) <= set(after["request_nonces"])
        assert len(added) == (1 if nonce_used else 0)

    def assert_only_nonces_changed(self, before: dict[str, list[tuple[Any, ...]]]) -> None:
        """Nothing changed but the nonces of the requests made since ``before``."""
        assert without(self.snapshot(), "request_nonces") == without(before, "request_nonces")

    async def register(self, identity: Identity) -> Identity:
        response = await self.client.post(
            "/v1/accounts", json=identity.registration(), auth=self.signer(identity)
        )
        assert response.status_code == 201, response.text
        return identity

    async def add_device(self, identity: Identity) -> Identity:
        response = await self.client.post(
            "/v1/devices", json=identity.registration(), auth=self.signer(identity)
        )
        assert response.status_code == 201, response.text
        return identity

    async def upload(
        self, identity: Identity, one_time: int = 0, *, last_resort: bool = False
    ) -> httpx.Response:
        body: dict[str, Any] = {
            "one_time": [b64u(key_package(identity.device_private)) for _ in range(one_time)]
        }
        if last_resort:
            body["last_resort"] = b64u(key_package(identity.device_private))
        return await self.client.post("/v1/key-packages", json=body, auth=self.signer(identity))

    async def create_group(
        self, identity: Identity, group_info: bytes, *, ratchet_tree: bytes | None = None
    ) -> httpx.Response:
        body = {"group_info": b64u(group_info)}
        if ratchet_tree is not None:
            body["ratchet_tree"] = b64u(ratchet_tree)
        return await self.client.post("/v1/groups", json=body, auth=self.signer(identity))

    async def post(
        self,
        identity: Identity,
        group_id: bytes,
        message: bytes,
        *,
        message_id: bytes | None = None,
        welcome: bytes | None = None,
        group_info: bytes | None = None,
    ) -> httpx.Response:
        body = {
            "client_message_id": b64u(
                message_id if message_id is not None else secrets.token_bytes(16)
            ),
            "message": b64u(message),
        }
        if welcome is not None:
            body["welcome"] = b64u(welcome)
        if group_info is not None:
            body["group_info"] = b64u(group_info)
        return await self.client.post(
            f"/v1/groups/{b64u(group_id)}/messages", json=body, auth=self.signer(identity)
        )

    async def post_commit(
        self, identity: Identity, pending: PendingCommit, *, message_id: bytes | None = None
    ) -> httpx.Response:
        group_id = MLSMessage.decode(pending.commit).body.content.group_id  # type: ignore[union-attr]
        return await self.post(
            identity,
            group_id,
            pending.commit,
            message_id=message_id,
            welcome=pending.welcome,
            group_info=pending.group_info,
        )

    async def fetch(
        self, identity: Identity, group_id: bytes, *, after: int = 0, limit: int | None = None
    ) -> httpx.Response:
        query = f"?after={after}" + ("" if limit is None else f"&limit={limit}")
        return await self.client.get(
            f"/v1/groups/{b64u(group_id)}/messages{query}", auth=self.signer(identity)
        )

    async def messages(self, identity: Identity, group_id: bytes, *, after: int = 0) -> list[bytes]:
        response = await self.fetch(identity, group_id, after=after)
        assert response.status_code == 200, response.text
        return [auth.decode_b64u(m["message"]) for m in response.json()["messages"]]

    async def ack(self, identity: Identity, group_id: bytes, seq: int) -> httpx.Response:
        return await self.client.post(
            f"/v1/groups/{b64u(group_id)}/cursor", json={"seq": seq}, auth=self.signer(identity)
        )

    async def welcomes(self, identity: Identity) -> list[dict[str, Any]]:
        response = await self.client.get("/v1/welcomes", auth=self.signer(identity))
        assert response.status_code == 200, response.text
        welcomes: list[dict[str, Any]] = response.json()["welcomes"]
        return welcomes


def device_bundle(identity: Identity, rng: Rng, suite_id: int = 1) -> KeyPackageBundle:
    """A KeyPackage whose leaf key is the device key and whose credential names it."""
    return generate_key_package(
        get_cipher_suite(suite_id),
        credential=BasicCredential(identity.device_key),
        signature_private_key=identity.device_private,
        rng=rng,
        lifetime=Lifetime(0, 2**64 - 1),
    )


class MLS:
    """
    Real MLS clients for registered devices, with one seeded rng, so that runs replay.

    ``group(identity)`` creates a group as that device; ``bundle(identity)`` makes a
    KeyPackage of the device (held in ``bundles``, for joining).
    """

    def __init__(self, seed: bytes) -> None:
        self.rng = seeded_rng(seed)
        self.bundles: dict[bytes, KeyPackageBundle] = {}
        self._groups = 0

    def bundle(self, identity: Identity, suite_id: int = 1) -> KeyPackageBundle:
        bundle = device_bundle(identity, self.rng, suite_id)
        self.bundles[identity.device_key] = bundle
        return bundle

    def group(
        self,
        identity: Identity,
        *,
        suite_id: int = 1,
        group_id: bytes | None = None,
        config: GroupConfig | None = None,
    ) -> Group:
        self._groups += 1
        return Group.create(
            self.bundle(identity, suite_id),
            group_id=group_id if group_id is not None else self.rng(32),
            rng=self.rng,
            config=config,
        )

    def join(
        self, identity: Identity, welcome: bytes, *, ratchet_tree: bytes | None = None
    ) -> Group:
        return Group.join(welcome, self.bundles[identity.device_key], ratchet_tree=ratchet_tree)


def assert_problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """Check an RFC 9457 problem response and return its document."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    document: dict[str, Any] = response.json()
    assert document["type"] == f"urn:townsquare:problem:{code}"
    assert document["code"] == code
    assert document["status"] == status
    assert isinstance(document["title"], str)
    assert document["title"]
    assert isinstance(document["detail"], str)
    return document


@contextlib.asynccontextmanager
async def running_relay(
    data_dir: Path,
    limits: Limits = TEST_LIMITS,
    clock: FakeClock | None = None,
    policy: CommitPolicy | None = None,
) -> AsyncIterator[Relay]:
    clock = clock if clock is not None else FakeClock()
    fanout = InMemoryFanout()
    app = create_app(
        Settings(data_dir=data_dir, limits=limits),
        storage=SQLiteStorage(data_dir),
        clock=clock,
        fanout=fanout,
        policy=policy,
    )
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://relay.test"
        ) as client,
    ):
        yield Relay(data_dir=data_dir, clock=clock, client=client, fanout=fanout)


@pytest.fixture
async def relay(tmp_path: Path) -> AsyncIterator[Relay]:
    async with running_relay(tmp_path) as running:
        yield running


@pytest.fixture
def relay_with(tmp_path: Path) -> Callable[..., contextlib.AbstractAsyncContextManager[Relay]]:
    """A relay with other limits: ``async with relay_with(limits) as relay``."""
    counter = 0

    def make(
        limits: Limits = TEST_LIMITS, *, policy: CommitPolicy | None = None
    ) -> contextlib.AbstractAsyncContextManager[Relay]:
        nonlocal counter
        counter += 1
        return running_relay(tmp_path / f"relay-{counter}", limits, policy=policy)

    return make


@pytest.fixture
def second_relay(relay: Relay) -> Callable[[], contextlib.AbstractAsyncContextManager[Relay]]:
    """Another app (another store handle) on the same data folder, as a second process."""

    def make() -> contextlib.AbstractAsyncContextManager[Relay]:
        return running_relay(relay.data_dir, clock=relay.clock)

    return make


@pytest.fixture
def mls(request: pytest.FixtureRequest) -> MLS:
    """MLS clients seeded by the test's id: deterministic, and different for each test."""
    return MLS(request.node.nodeid.encode())


@pytest.fixture
def new_identity() -> Callable[[], Identity]:
    return Identity


@pytest.fixture
def identity() -> Identity:
    return Identity()


@pytest.fixture
def make_key_package() -> Callable[..., bytes]:
    return key_package


@pytest.fixture
def problem() -> Callable[[httpx.Response, int, str], dict[str, Any]]:
    return assert_problem


@pytest.fixture
def limits() -> Limits:
    return TEST_LIMITS


@pytest.fixture
def sign() -> Callable[..., Signer]:
    return Signer

"""
Fixtures for integration tests: the real ``townsquare serve`` as a subprocess.

``relay_process`` starts ``python -m townsquare.cli serve`` (the same entry
point as the ``townsquare`` console script) on a free port with a temporary
data folder, waits until ``GET /healthz`` answers 200, and stops it with
SIGTERM afterwards; its output goes to ``relay.log`` in the data folder's
parent, for tests that read it. Clients sign requests with the real clock.
Helpers are reached through fixtures, because test modules cannot import
this one (``--import-mode=importlib``).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from townsquare import auth
from townsquare.mls.ciphersuite import get_cipher_suite
from townsquare.mls.credentials import BasicCredential
from townsquare.mls.framing import MLSMessage
from townsquare.mls.key_package import KeyPackage
from townsquare.mls.leaf_node import Capabilities, LeafNode, Lifetime
from townsquare.mls.registries import LeafNodeSource, ProtocolVersion
from townsquare.server.storage import DATABASE_FILE_NAME

START_TIMEOUT_SECONDS = 30.0
STOP_TIMEOUT_SECONDS = 15.0
REQUEST_TIMEOUT_SECONDS = 10.0
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
)


def pytest_configure(config: pytest.Config) -> None:
    # Registered here until pyproject.toml's markers list it; --strict-markers
    # refuses unknown markers.
    if not any(line.split(":")[0].strip() == "integration" for line in config.getini("markers")):
        config.addinivalue_line("markers", "integration: starts the real townsquare serve")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class RelayProcess:
    """A ``townsquare serve`` subprocess over one data folder."""

    data_dir: Path
    log_path: Path
    port: int = 0
    process: subprocess.Popen[bytes] | None = None
    #: More ``townsquare serve`` options (say, a longer housekeeping interval).
    options: tuple[str, ...] = ()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        for _attempt in range(3):
            self.port = free_port()
            if self._start_once():
                return
        raise RuntimeError(f"the relay did not start:\n{self.log()}")

    def _start_once(self) -> bool:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "townsquare.cli",
                    "serve",
                    "--data",
                    str(self.data_dir),
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    *self.options,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False  # For example, the port was taken meanwhile.
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{self.url}/healthz", timeout=1.0).status_code == 200:
                    return True
            time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"the relay did not answer /healthz in time:\n{self.log()}")

    def stop(self) -> int:
        """SIGTERM, then wait; returns the exit status."""
        if self.process is None:
            return 0
        self.process.send_signal(signal.SIGTERM)
        try:
            status = self.process.wait(timeout=STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            self.process.kill()
            status = self.process.wait(timeout=STOP_TIMEOUT_SECONDS)
        self.process = None
        return status

    def kill(self) -> None:
        """SIGKILL: the relay gets no chance to clean up."""
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=STOP_TIMEOUT_SECONDS)
            self.process = None

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def assert_unchanged(
        self,
        before: dict[str, list[tuple[Any, ...]]],
        *,
        nonce_used: bool,
        quota_used: bool = False,
    ) -> None:
        """Nothing changed but the request's nonce (if authenticated) and claim quota."""
        after = self.snapshot()
        bookkeeping = {"request_nonces", "quotas"} if quota_used else {"request_nonces"}
        for table in TABLES:
            if table not in bookkeeping:
                assert after[table] == before[table], table
        added = set(after["request_nonces"]) - set(before["request_nonces"])
        assert len(added) == (1 if nonce_used else 0)

    def snapshot(self) -> dict[str, list[tuple[Any, ...]]]:
        uri = f"file:{self.data_dir / DATABASE_FILE_NAME}?mode=ro"
        with contextlib.closing(sqlite3.connect(uri, uri=True)) as connection:
            return {
                table: sorted(connection.execute(f"SELECT * FROM {table}").fetchall())  # noqa: S608
                for table in TABLES
            }


#: ``townsquare serve`` options of a relay that deletes nothing while a test runs.
NO_HOUSEKEEPING = ("--housekeeping-seconds", "86400")


@contextlib.contextmanager
def running(base: Path, options: tuple[str, ...] = ()) -> Iterator[RelayProcess]:
    relay = RelayProcess(data_dir=base / "data", log_path=base / "relay.log", options=options)
    relay.start()
    try:
        yield relay
    finally:
        relay.stop()


@pytest.fixture(scope="module")
def relay_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RelayProcess]:
    """One relay for a whole module."""
    with running(tmp_path_factory.mktemp("relay")) as relay:
        yield relay


@pytest.fixture(scope="module")
def quiet_relay_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RelayProcess]:
    """One relay for a whole module, deleting nothing while it runs (retention waits a day)."""
    with running(tmp_path_factory.mktemp("relay"), NO_HOUSEKEEPING) as relay:
        yield relay


@pytest.fixture
def relay_without_housekeeping(tmp_path: Path) -> Iterator[RelayProcess]:
    """A relay for one test that deletes nothing while it runs (retention waits a day)."""
    with running(tmp_path, NO_HOUSEKEEPING) as relay:
        yield relay


@pytest.fixture
def own_relay_process(tmp_path: Path) -> Iterator[RelayProcess]:
    """A relay for one test, which may stop, kill and restart it."""
    with running(tmp_path) as relay:
        yield relay


# -- Clients -----------------------------------------------------------------------------


class Signer(httpx.Auth):
    """Signs each request as a device with the real clock, as the SDK will."""

    requires_request_body = True

    def __init__(self, device_private: bytes, offset_seconds: int = 0) -> None:
        self.device_private = device_private
        self.offset_seconds = offset_seconds
        self.last_headers: dict[str, str] = {}

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        self.last_headers = auth.sign_request(
            device_private_key=self.device_private,
            method=request.method,
            target=request.url.raw_path.decode("ascii"),
            body=request.content,
            timestamp=int(time.time()) + self.offset_seconds,
            nonce=secrets.token_bytes(auth.NONCE_BYTES),
        )
        request.headers.update(self.last_headers)
        yield request


@dataclass(frozen=True)
class Identity:
    account_private: bytes = field(default_factory=auth.generate_private_key)
    device_private: bytes = field(default_factory=auth.generate_private_key)

    @property
    def account_id(self) -> str:
        return auth.encode_b64u(auth.public_key(self.account_private))

    @property
    def device_key(self) -> bytes:
        return auth.public_key(self.device_private)

    @property
    def device_id(self) -> str:
        return auth.encode_b64u(auth.public_key(self.device_private))

    def registration(self) -> dict[str, Any]:
        certificate = auth.certify_device(
            self.account_private, auth.public_key(self.device_private), int(time.time())
        )
        return {
            "certificate": {
                "account_key": auth.encode_b64u(certificate.account_key),
                "device_key": auth.encode_b64u(certificate.device_key),
                "created_at": certificate.created_at,
                "signature": auth.encode_b64u(certificate.signature),
            }
        }

    def another_device(self) -> Identity:
        return Identity(account_private=self.account_private)

    def signer(self, offset_seconds: int = 0) -> Signer:
        return Signer(self.device_private, offset_seconds)


def key_package(device_private: bytes) -> bytes:
    """An encoded MLSMessage(KeyPackage) of suite 1 whose leaf key is the device's."""
    suite = get_cipher_suite(1)
    seed = secrets.token_bytes(16)
    counter = iter(range(1 << 30))

    def rng(n: int) -> bytes:
        return hashlib.sha512(seed + next(counter).to_bytes(4, "big")).digest()[:n]

    _, init_key = suite.hpke_generate_key_pair(rng)
    _, encryption_key = suite.hpke_generate_key_pair(rng)
    device_key = auth.public_key(device_private)
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
        leaf, signature=suite.sign_with_label(device_private, b"LeafNodeTBS", leaf.to_be_signed())
    )
    package = KeyPackage(cipher_suite=1, init_key=init_key, leaf_node=leaf)
    package = replace(
        package,
        signature=suite.sign_with_label(device_private, b"KeyPackageTBS", package.to_be_signed()),
    )
    return MLSMessage(ProtocolVersion.MLS10, package).encode()


def assert_problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    document: dict[str, Any] = response.json()
    assert document["type"] == f"urn:townsquare:problem:{code}"
    assert document["status"] == status
    assert document["code"] == code
    assert document["title"]
    assert isinstance(document["detail"], str)
    return document


@pytest.fixture
def client(relay_process: RelayProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=relay_process.url, timeout=REQUEST_TIMEOUT_SECONDS) as http:
        yield http


@pytest.fixture
def new_identity() -> Callable[[], Identity]:
    return Identity


@pytest.fixture
def make_key_package() -> Callable[[bytes], bytes]:
    return key_package


@pytest.fixture
def problem() -> Callable[[httpx.Response, int, str], dict[str, Any]]:
    return assert_problem

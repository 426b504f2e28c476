"""
What the member commands share: opening the home, reaching the relay, syncing, printing.

A command either reads the home only (:func:`open_local`: no network at all)
or runs the SDK's driver for the length of the command (:func:`open_online`,
without the push channel). Before it syncs, a command asks the relay's
``GET /healthz`` with a short timeout, so that a relay that is down costs a
moment, not the whole sync timeout: what was accepted stays in the outbox
on disk, and the next ``townsquare sync`` sends it.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from townsquare import auth
from townsquare.client.core.client import Client, ClientConfig
from townsquare.client.core.events import (
    AddFailed,
    CommitRejected,
    Event,
    RelayFailure,
    ResyncRequired,
    SendFailed,
)
from townsquare.client.driver import (
    DATABASE_FILE_NAME,
    ClientDriver,
    DriverConfig,
    SqliteClientStore,
    check_relay_url,
    home_folder,
    relay_url,
    set_relay_url,
)
from townsquare.client.errors import ConnectionFailed, NotInitialized

__all__ = [
    "HTTP_FACTORY",
    "PROBE_TIMEOUT_SECONDS",
    "CommandError",
    "Session",
    "decode_id",
    "encode_id",
    "error",
    "notice",
    "open_local",
    "open_online",
    "out",
    "print_json",
]

#: Seconds the relay's ``/healthz`` may take before the relay counts as unreachable.
PROBE_TIMEOUT_SECONDS = 3.0

#: Makes the HTTP client of a command (``None``: a real one). Tests put a mock transport here.
HTTP_FACTORY: Callable[[], httpx.AsyncClient] | None = None


class CommandError(Exception):
    """
    An expected failure: printed as one line on stderr, the command exits with ``status``.
    """

    def __init__(self, message: str, *, status: int = 1) -> None:
        """
        :param message: what went wrong, in one line.
        :param status: the exit status.
        """
        super().__init__(message)
        self.status = status


def encode_id(value: bytes) -> str:
    """
    :returns: ``value`` as the SDK and the relay write ids: unpadded base64url.
    """
    return auth.encode_b64u(value)


def decode_id(value: str, what: str) -> bytes:
    """
    :returns: the bytes of a base64url id given on the command line.
    :raises CommandError: (status 2) if it is not one.
    """
    try:
        decoded = auth.decode_b64u(value)
    except (auth.AuthError, ValueError) as exc:
        raise CommandError(f"{what} {value!r} is not a base64url id", status=2) from exc
    if not decoded:
        raise CommandError(f"{what} is empty", status=2)
    return decoded


def out(line: str) -> None:
    """
    Print a line on stdout.
    """
    sys.stdout.write(line + "\n")


def error(message: str) -> None:
    """
    Print an error on stderr, as one line.
    """
    sys.stderr.write(f"townsquare: error: {' '.join(message.split())}\n")


def notice(message: str) -> None:
    """
    Print a notice (not an error) on stderr.
    """
    sys.stderr.write(f"townsquare: {message}\n")


def print_json(value: object) -> None:
    """
    Print ``value`` as JSON (UTF-8 as is, not as escapes).
    """
    out(json.dumps(value, ensure_ascii=False, indent=2))


@contextlib.contextmanager
def open_local(home: str | None) -> Iterator[Client]:
    """
    Open the device in the home, for reading: no relay, no requests.

    :raises NotInitialized: if the home holds no device.
    """
    folder = home_folder(home)
    if not (folder / DATABASE_FILE_NAME).exists():
        raise NotInitialized(f"no device in {folder}: run `townsquare init` first")
    store = SqliteClientStore(folder / DATABASE_FILE_NAME)
    try:
        client = Client(store, rng=secrets.token_bytes, config=ClientConfig())
        if client.device is None:
            raise NotInitialized(f"no device in {folder}: run `townsquare init` first")
        yield client
    finally:
        store.close()


def _http() -> httpx.AsyncClient:
    if HTTP_FACTORY is not None:
        return HTTP_FACTORY()
    return httpx.AsyncClient(timeout=httpx.Timeout(30.0, connect=10.0))


@dataclass
class Session:
    """
    A running driver, the relay's URL and the events the command has seen.
    """

    driver: ClientDriver
    relay: str
    http: httpx.AsyncClient
    timeout: float
    events: list[Event] = field(default_factory=list)

    @property
    def client(self) -> Client:
        """
        The SDK's core.
        """
        return self.driver.client

    async def reachable(self) -> bool:
        """
        :returns: whether the relay answers ``GET /healthz`` in time.
        """
        return await probe(self.http, self.relay)

    async def sync(self) -> bool:
        """
        Send the outbox and fetch everything pending, if the relay is reachable.

        :returns: ``True`` once nothing is left to do; ``False`` (after a notice) if the
            relay is unreachable or did not finish in time (nothing is lost).
        """
        if not await self.reachable():
            notice(f"the relay at {self.relay} is unreachable; kept for the next sync")
            return False
        try:
            await self.driver.sync(timeout=self.timeout)
        except ConnectionFailed:
            notice(f"the relay at {self.relay} did not finish in time; the rest waits")
            return False
        return True

    def drain(self) -> None:
        """
        Collect the events the driver has not handed out yet.
        """
        while (event := self.client.next_event()) is not None:
            self.events.append(event)

    def failures(self) -> list[str]:
        """
        :returns: one line per event that means a real error (refused, dropped, blocked).
        """
        lines = []
        for event in self.events:
            match event:
                case SendFailed(group_id=g, reason=reason, code=code):
                    lines.append(f"a message to {encode_id(g)} was not sent: {reason} {code}")
                case CommitRejected(group_id=g, reason=reason, code=code):
                    lines.append(f"a change to {encode_id(g)} was refused: {reason} {code}".strip())
                case AddFailed(account_key=account, reason=reason):
                    lines.append(f"could not add {encode_id(account)}: {reason}")
                case RelayFailure(path=path, status=status, code=code):
                    lines.append(f"the relay refused {path}: {status} {code}".strip())
                case ResyncRequired(group_id=g, reason=reason):
                    lines.append(f"group {encode_id(g)} needs a resync: {reason}")
                case _:
                    pass
        return lines


async def probe(http: httpx.AsyncClient, relay: str) -> bool:
    """
    :returns: whether ``relay`` answers ``GET /healthz`` with 200 within
        :data:`PROBE_TIMEOUT_SECONDS`.
    """
    try:
        answer = await http.get(f"{relay}/healthz", timeout=PROBE_TIMEOUT_SECONDS)
    except httpx.HTTPError:
        return False
    return answer.status_code == 200


@contextlib.asynccontextmanager
async def open_online(
    home: str | None,
    *,
    timeout: float,
    relay: str | None = None,
    create: bool = False,
) -> AsyncIterator[Session]:
    """
    Open the device in the home and run its driver (no push channel) for one command.

    :param relay: ``init``'s relay URL: checked, probed and stored before the driver starts.
    :param create: whether the home may hold no device yet (``init``).
    :raises NotInitialized: if the home holds no device and ``create`` is false.
    :raises CommandError: if ``init``'s relay is unreachable or the home holds a device.
    """
    folder = home_folder(home)
    if not create and not (folder / DATABASE_FILE_NAME).exists():
        raise NotInitialized(f"no device in {folder}: run `townsquare init` first")
    http = _http()
    store: SqliteClientStore | None = None
    try:
        if relay is not None:
            relay = check_relay_url(relay)
        store = SqliteClientStore(Path(folder) / DATABASE_FILE_NAME)
        config = DriverConfig(push=False)
        client = Client(store, rng=secrets.token_bytes, config=config.client)
        if create:
            if client.device is not None:
                raise CommandError(f"{folder} already holds a device (see `townsquare whoami`)")
            if relay is None or not await probe(http, relay):
                raise CommandError(f"cannot reach a relay at {relay} (GET /healthz)")
            url = set_relay_url(store, relay)
        else:
            if client.device is None:
                raise NotInitialized(f"no device in {folder}: run `townsquare init` first")
            stored = relay_url(store)
            if stored is None:
                raise NotInitialized(f"no relay URL in {folder}: run `townsquare init` first")
            url = stored
        driver = ClientDriver(client, relay_url=url, config=config, http=http)
        session = Session(driver=driver, relay=url, http=http, timeout=timeout)
        remove = driver.add_listener(session.events.append)
        async with driver:
            try:
                yield session
            finally:
                remove()
                session.drain()
    finally:
        await http.aclose()
        if store is not None:
            store.close()

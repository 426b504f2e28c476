"""
Fixtures for the client core tests: seeded randomness, a fake relay, and devices on it.

Test modules cannot import this one (``--import-mode=importlib``), so the
helpers are handed out by fixtures.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import pytest

from townsquare.client.core import Client, ClientConfig, MemoryClientStore
from townsquare.client.core.store import ClientStore
from townsquare.client.testing import FakeRelay, Network
from townsquare.mls.ciphersuite import Rng

CONFIG = ClientConfig(key_packages_target=3, key_packages_low_water=2, commit_delay_seconds=0.0)


def seeded_rng(seed: str) -> Rng:
    counter = 0

    def rng(n: int) -> bytes:
        nonlocal counter
        out = b""
        while len(out) < n:
            out += hashlib.sha256(f"{seed}/{counter}".encode()).digest()
            counter += 1
        return out[:n]

    return rng


@pytest.fixture
def network() -> Network:
    return Network(FakeRelay())


MakeClient = Callable[..., Client]


@pytest.fixture
def make_client(network: Network) -> MakeClient:
    """A new device on the network: initialized, registered, KeyPackages uploaded."""

    def make(
        name: str,
        *,
        store: ClientStore | None = None,
        config: ClientConfig = CONFIG,
        display_name: str | None = "",
    ) -> Client:
        client = Client(store or MemoryClientStore(), rng=seeded_rng(name), config=config)
        client.initialize(
            display_name=name if display_name == "" else display_name, now=network.now
        )
        network.settle([client])
        return client

    return make


@pytest.fixture
def reopen() -> Callable[[Client, ClientStore, str], Client]:
    """The same device after a restart: a new Client over the same store."""

    def again(old: Client, store: ClientStore, seed: str) -> Client:
        del old
        return Client(store, rng=seeded_rng(seed), config=CONFIG)

    return again


@pytest.fixture
def drain() -> Callable[[Client], list[object]]:
    def take(client: Client) -> list[object]:
        events = []
        while (event := client.next_event()) is not None:
            events.append(event)
        return events

    return take

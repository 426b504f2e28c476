"""
Fixtures for MLS unit tests: a seeded rng, KeyPackage bundles, and groups built with ``Group``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Protocol

import pytest

from townsquare.mls.ciphersuite import Rng, get_cipher_suite
from townsquare.mls.credentials import BasicCredential
from townsquare.mls.group import Group
from townsquare.mls.key_package import KeyPackageBundle, generate_key_package
from townsquare.mls.leaf_node import Lifetime
from townsquare.mls.proposals import Add, Proposal


def seeded_rng(seed: bytes) -> Rng:
    """
    A deterministic rng: SHA-256 of the seed and a counter, so every run replays.
    """
    counter = 0

    def rng(n: int) -> bytes:
        nonlocal counter
        out = b""
        while len(out) < n:
            out += hashlib.sha256(seed + counter.to_bytes(8, "big")).digest()
            counter += 1
        return out[:n]

    return rng


class MakeBundle(Protocol):
    def __call__(
        self, name: bytes, suite_id: int = 1, *, signature_private_key: bytes | None = None
    ) -> KeyPackageBundle: ...


MakeGroup = Callable[..., list[Group]]


@pytest.fixture
def rng(request: pytest.FixtureRequest) -> Rng:
    """
    An rng seeded by the test's id: deterministic, and different for each test.
    """
    return seeded_rng(request.node.nodeid.encode())


@pytest.fixture
def make_bundle(rng: Rng) -> MakeBundle:
    """
    Make a KeyPackage (basic credential ``name``, no expiry) with its private keys.
    """

    def make(
        name: bytes, suite_id: int = 1, *, signature_private_key: bytes | None = None
    ) -> KeyPackageBundle:
        suite = get_cipher_suite(suite_id)
        if signature_private_key is None:
            signature_private_key, _ = suite.generate_signature_key_pair(rng)
        return generate_key_package(
            suite,
            credential=BasicCredential(name),
            signature_private_key=signature_private_key,
            rng=rng,
            lifetime=Lifetime(not_before=0, not_after=2**64 - 1),
        )

    return make


@pytest.fixture
def make_group(rng: Rng, make_bundle: MakeBundle) -> MakeGroup:
    """
    Make a group of ``n`` members, ``members[i]`` at leaf ``i``, all at epoch 1 (epoch 0 if n == 1).

    The first member creates the group and adds the others in one commit.
    """

    def make(n: int, *, suite_id: int = 1, group_id: bytes = b"group") -> list[Group]:
        creator = Group.create(make_bundle(b"member-0", suite_id), group_id=group_id, rng=rng)
        if n == 1:
            return [creator]
        bundles = [make_bundle(f"member-{i}".encode(), suite_id) for i in range(1, n)]
        adds: list[Proposal] = [Add(b.key_package) for b in bundles]
        pending = creator.commit(rng=rng, proposals=adds)
        creator.merge(pending.staged)
        if pending.welcome is None:  # pragma: no cover - there are Adds
            raise AssertionError("no Welcome")
        return [creator, *(Group.join(pending.welcome, b) for b in bundles)]

    return make

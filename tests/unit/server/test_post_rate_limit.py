"""
The per-device post quota: 429 ``rate-limited`` with ``Retry-After``, and nothing stored.

A real app on a real SQLite file, real MLS messages. Only messages the relay
stores count: retries answered from the store and refused posts do not, and a
retry is answered even when the quota is spent.
"""

from __future__ import annotations

import secrets
from dataclasses import replace

import pytest

from townsquare.server import Limits

from .test_delivery import two_member_group

pytestmark = pytest.mark.anyio


def tight(limits: Limits) -> Limits:
    return replace(limits, posts_per_window=3, post_window_seconds=60)


async def test_the_default_is_generous():
    defaults = Limits()
    assert (defaults.posts_per_window, defaults.post_window_seconds) == (120, 60)


async def test_posts_past_the_quota_are_refused_until_the_window_ends(
    relay_with, limits, mls, new_identity, problem
):
    async with relay_with(tight(limits)) as relay:
        # The commit that added Bob was Alice's first post of this window.
        alice, _, group_a, _ = await two_member_group(relay, mls, new_identity)
        for i in range(2):
            message = group_a.encrypt(bytes([i]), rng=mls.rng)
            assert (await relay.post(alice, group_a.group_id, message)).status_code == 201
        relay.clock.advance(15)
        before = relay.snapshot()
        refused = await relay.post(alice, group_a.group_id, group_a.encrypt(b"x", rng=mls.rng))
        document = problem(refused, 429, "rate-limited")
        assert document["retry_after"] == 45
        assert refused.headers["retry-after"] == "45"
        relay.assert_unchanged(before, nonce_used=True)
        relay.clock.advance(45)
        late = await relay.post(alice, group_a.group_id, group_a.encrypt(b"y", rng=mls.rng))
        assert late.status_code == 201, late.text
        assert late.json()["seq"] == 4


async def test_the_quota_is_per_device(relay_with, limits, mls, new_identity, problem):
    async with relay_with(tight(limits)) as relay:
        alice, bob, group_a, group_b = await two_member_group(relay, mls, new_identity)
        for i in range(2):
            await relay.post(alice, group_a.group_id, group_a.encrypt(bytes([i]), rng=mls.rng))
        problem(
            await relay.post(alice, group_a.group_id, group_a.encrypt(b"x", rng=mls.rng)),
            429,
            "rate-limited",
        )
        response = await relay.post(bob, group_a.group_id, group_b.encrypt(b"b", rng=mls.rng))
        assert response.status_code == 201, response.text


async def test_retries_answered_from_the_store_are_not_counted(
    relay_with, limits, mls, new_identity
):
    async with relay_with(tight(limits)) as relay:
        alice, _, group_a, _ = await two_member_group(relay, mls, new_identity)
        message_id = secrets.token_bytes(16)
        message = group_a.encrypt(b"once", rng=mls.rng)
        assert (await relay.post(alice, group_a.group_id, message, message_id=message_id)).json()[
            "seq"
        ] == 2
        for _ in range(3):
            retry = await relay.post(alice, group_a.group_id, message, message_id=message_id)
            assert retry.status_code == 200
        # Commit, message, and this third one: the retries took nothing.
        last = await relay.post(alice, group_a.group_id, group_a.encrypt(b"3", rng=mls.rng))
        assert last.status_code == 201, last.text


async def test_refused_posts_are_not_counted(relay_with, limits, mls, new_identity, problem):
    async with relay_with(tight(limits)) as relay:
        alice, _, group_a, _ = await two_member_group(relay, mls, new_identity)
        for _ in range(5):
            problem(await relay.post(alice, group_a.group_id, b"\x00\x01"), 400, "malformed-mls")
        for i in range(2):
            message = group_a.encrypt(bytes([i]), rng=mls.rng)
            assert (await relay.post(alice, group_a.group_id, message)).status_code == 201


async def test_a_retry_is_answered_even_when_the_quota_is_spent(
    relay_with, limits, mls, new_identity, problem
):
    # The store checks for a retry before the quota, in the append's transaction: the
    # original is answered at once, neither refused nor counted, while a new message
    # is refused. (Until the quota moved into that transaction, a retry waited too.)
    async with relay_with(tight(limits)) as relay:
        alice, _, group_a, _ = await two_member_group(relay, mls, new_identity)
        message_id = secrets.token_bytes(16)
        message = group_a.encrypt(b"m", rng=mls.rng)
        await relay.post(alice, group_a.group_id, message, message_id=message_id)
        await relay.post(alice, group_a.group_id, group_a.encrypt(b"n", rng=mls.rng))
        before = relay.snapshot()
        retry = await relay.post(alice, group_a.group_id, message, message_id=message_id)
        assert (retry.status_code, retry.json()["seq"], retry.json()["duplicate"]) == (
            200,
            2,
            True,
        )
        relay.assert_unchanged(before, nonce_used=True)
        problem(
            await relay.post(alice, group_a.group_id, group_a.encrypt(b"o", rng=mls.rng)),
            429,
            "rate-limited",
        )


async def test_a_commit_retry_is_answered_even_when_the_quota_is_spent(
    relay_with, limits, mls, new_identity, problem
):
    # Handshake messages too: the retry check comes before the quota check.
    async with relay_with(tight(limits)) as relay:
        alice, _, group_a, _ = await two_member_group(relay, mls, new_identity)
        message_id = secrets.token_bytes(16)
        pending = group_a.commit(rng=mls.rng, force_path=True)
        first = await relay.post_commit(alice, pending, message_id=message_id)
        assert first.status_code == 201, first.text
        group_a.merge(pending.staged)
        await relay.post(alice, group_a.group_id, group_a.encrypt(b"n", rng=mls.rng))
        before = relay.snapshot()
        retry = await relay.post_commit(alice, pending, message_id=message_id)
        assert (retry.status_code, retry.json()["seq"]) == (200, first.json()["seq"])
        relay.assert_unchanged(before, nonce_used=True)
        again = group_a.commit(rng=mls.rng, force_path=True)
        before = relay.snapshot()
        problem(await relay.post_commit(alice, again), 429, "rate-limited")
        relay.assert_unchanged(before, nonce_used=True)

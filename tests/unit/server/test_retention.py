"""
Retention over HTTP: the relay deletes what every member has read, and everything old.

A real app on a real SQLite file, real MLS groups. Housekeeping is run by hand
(:func:`townsquare.server.app.housekeep`, the round the app's background task
runs every minute) through a second store handle on the same file, as another
relay process would, with the fake clock's time. A device asking for entries
that retention deleted is answered 410 ``log-pruned``, and resyncs by an
external commit from the group's current GroupInfo.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest

from townsquare import auth
from townsquare.mls.credentials import BasicCredential
from townsquare.mls.group import Group
from townsquare.mls.proposals import Remove
from townsquare.server.app import housekeep
from townsquare.server.storage import SQLiteStorage

from .test_delivery import two_member_group

pytestmark = pytest.mark.anyio

HOUR = 3600


@contextlib.asynccontextmanager
async def other_process(relay) -> AsyncIterator[SQLiteStorage]:
    store = SQLiteStorage(relay.data_dir)
    await store.open()
    try:
        yield store
    finally:
        await store.close()


async def run_housekeeping(relay, limits) -> int:
    async with other_process(relay) as store:
        return await housekeep(store, relay.clock.now(), limits)


def log_seqs(relay, group_id: bytes) -> list[int]:
    return sorted(row[2] for row in relay.snapshot()["group_log"] if row[1] == group_id)


async def send(relay, identity, group, mls, count: int) -> list[int]:
    seqs = []
    for i in range(count):
        response = await relay.post(
            identity, group.group_id, group.encrypt(bytes([i]), rng=mls.rng)
        )
        assert response.status_code == 201, response.text
        seqs.append(response.json()["seq"])
    return seqs


async def test_what_every_member_has_acknowledged_is_deleted(
    relay, mls, new_identity, limits, problem
):
    alice, bob, group_a, _ = await two_member_group(relay, mls, new_identity)
    assert await send(relay, alice, group_a, mls, 3) == [2, 3, 4]
    assert (await relay.ack(alice, group_a.group_id, 4)).status_code == 200
    assert (await relay.ack(bob, group_a.group_id, 3)).status_code == 200
    await run_housekeeping(relay, limits)
    assert log_seqs(relay, group_a.group_id) == [4]
    # Bob reads on from his cursor as before.
    response = await relay.fetch(bob, group_a.group_id, after=3)
    assert [m["seq"] for m in response.json()["messages"]] == [4]
    # The log's numbering goes on.
    assert await send(relay, alice, group_a, mls, 1) == [5]


async def test_a_fetch_from_before_the_pruned_log_is_gone_and_changes_nothing(
    relay, mls, new_identity, limits, problem
):
    alice, bob, group_a, _ = await two_member_group(relay, mls, new_identity)
    await send(relay, alice, group_a, mls, 2)
    for identity in (alice, bob):
        assert (await relay.ack(identity, group_a.group_id, 3)).status_code == 200
    await run_housekeeping(relay, limits)
    before = relay.snapshot()
    document = problem(await relay.fetch(bob, group_a.group_id, after=1), 410, "log-pruned")
    assert document["first_seq"] == 4
    relay.assert_unchanged(before, nonce_used=True)
    # From the cursor on, nothing is missing.
    response = await relay.fetch(bob, group_a.group_id, after=3)
    assert response.status_code == 200
    assert response.json()["messages"] == []
    assert response.json()["last_seq"] == 3


async def test_a_device_that_left_does_not_hold_the_log_back(relay, mls, new_identity, limits):
    alice, _, group_a, group_b = await two_member_group(relay, mls, new_identity)
    await send(relay, alice, group_a, mls, 2)
    # Bob never acknowledges anything, then is removed.
    pending = group_a.commit(rng=mls.rng, proposals=[Remove(group_b.own_leaf)])
    assert (await relay.post_commit(alice, pending)).json()["seq"] == 4
    group_a.merge(pending.staged)
    assert (await relay.ack(alice, group_a.group_id, 4)).status_code == 200
    await run_housekeeping(relay, limits)
    assert log_seqs(relay, group_a.group_id) == []
    assert await send(relay, alice, group_a, mls, 1) == [5]


async def test_unread_entries_go_after_the_retention_time_and_the_member_resyncs(
    relay_with, limits, mls, new_identity, problem
):
    short = replace(limits, retention_seconds=HOUR)
    async with relay_with(short) as relay:
        alice, bob, group_a, group_b = await two_member_group(relay, mls, new_identity)
        await send(relay, alice, group_a, mls, 2)
        relay.clock.advance(HOUR - 1)
        await send(relay, alice, group_a, mls, 1)
        # Bob has read nothing; the hour passes for the first three entries only.
        await run_housekeeping(relay, short)
        assert log_seqs(relay, group_a.group_id) == [1, 2, 3, 4]
        relay.clock.advance(1)
        await run_housekeeping(relay, short)
        assert log_seqs(relay, group_a.group_id) == [4]
        document = problem(await relay.fetch(bob, group_a.group_id, after=1), 410, "log-pruned")
        assert document["first_seq"] == 4

        # Bob resyncs: an external commit from the current GroupInfo replaces his leaf.
        info = await relay.client.get(
            f"/v1/groups/{auth.encode_b64u(group_a.group_id)}/group-info",
            auth=relay.signer(bob),
        )
        assert info.status_code == 200, info.text
        resync = Group.join_external(
            auth.decode_b64u(info.json()["group_info"]),
            credential=BasicCredential(bob.device_key),
            signature_private_key=bob.device_private,
            rng=mls.rng,
            ratchet_tree=auth.decode_b64u(info.json()["ratchet_tree"]),
            resync_leaf=group_b.own_leaf,
        )
        response = await relay.post(
            bob, group_a.group_id, resync.commit, group_info=resync.group.group_info()
        )
        assert response.status_code == 201, response.text
        resync_seq = response.json()["seq"]
        assert resync_seq == 5
        # From his resync on, Bob is served the log again, and it is the group's.
        hello = resync.group.encrypt(b"back", rng=mls.rng)
        assert (await relay.post(bob, group_a.group_id, hello)).status_code == 201
        assert await relay.messages(bob, group_a.group_id, after=resync_seq) == [hello]
        commit, message = await relay.messages(alice, group_a.group_id, after=4)
        group_a.merge(group_a.process(commit))
        assert group_a.process(message).data == b"back"


async def test_the_current_epochs_proposals_stay_for_the_relays_own_checks(
    relay, mls, new_identity, limits
):
    alice, bob, group_a, group_b = await two_member_group(relay, mls, new_identity)
    leave = group_b.propose(Remove(group_b.own_leaf), rng=mls.rng)
    assert (await relay.post(bob, group_a.group_id, leave)).json()["seq"] == 2
    for identity in (alice, bob):
        assert (await relay.ack(identity, group_a.group_id, 2)).status_code == 200
    await run_housekeeping(relay, limits)
    # Both members have the proposal; the relay keeps it to check the commit by reference.
    assert log_seqs(relay, group_a.group_id) == [2]
    group_a.process(leave)
    pending = group_a.commit(rng=mls.rng)
    response = await relay.post_commit(alice, pending)
    assert response.status_code == 201, response.text
    group_a.merge(pending.staged)
    assert (await relay.ack(alice, group_a.group_id, 3)).status_code == 200
    await run_housekeeping(relay, limits)
    assert log_seqs(relay, group_a.group_id) == []


async def test_a_commit_for_an_epoch_whose_commit_was_deleted_is_stale(
    relay, mls, new_identity, limits, problem
):
    alice, bob, group_a, group_b = await two_member_group(relay, mls, new_identity)
    pending = group_a.commit(rng=mls.rng, force_path=True)
    assert (await relay.post_commit(alice, pending)).json()["seq"] == 2
    group_a.merge(pending.staged)
    for identity in (alice, bob):
        assert (await relay.ack(identity, group_a.group_id, 2)).status_code == 200
    await run_housekeeping(relay, limits)
    # Bob commits for epoch 1, which Alice's commit ended; its record is gone.
    late = group_b.commit(rng=mls.rng, force_path=True)
    before = relay.snapshot()
    document = problem(await relay.post_commit(bob, late), 409, "stale-epoch")
    assert document["epoch"] == 2
    relay.assert_unchanged(before, nonce_used=True)


async def test_a_welcome_expires_after_the_retention_time(relay_with, limits, mls, new_identity):
    short = replace(limits, retention_seconds=HOUR)
    async with relay_with(short) as relay:
        alice, bob, group_a, _ = await two_member_group(relay, mls, new_identity)
        # two_member_group read Bob's Welcome but did not acknowledge it.
        assert len(await relay.welcomes(bob)) == 1
        assert (await relay.ack(alice, group_a.group_id, 1)).status_code == 200
        await run_housekeeping(relay, short)
        assert len(await relay.welcomes(bob)) == 1
        assert log_seqs(relay, group_a.group_id) == [1]
        relay.clock.advance(HOUR)
        await run_housekeeping(relay, short)
        assert await relay.welcomes(bob) == []
        assert log_seqs(relay, group_a.group_id) == []

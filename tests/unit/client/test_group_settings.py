"""
An admin changes a group's settings (its policy's flags) by a GroupContextExtensions commit.

Every test steps clients and the fake relay in memory with a hand-advanced clock.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest

from townsquare.client.core import (
    Client,
    CommitAccepted,
    CommitRejected,
    GroupSettings,
    MemoryClientStore,
)
from townsquare.client.errors import GroupClosed, NotAnAdmin, UnknownGroup
from townsquare.client.testing import Network

CLOSED = GroupSettings(approval_required=False, members_can_add=False)


@dataclass
class Village:
    """alice's group (alice the only admin) with bob and carol, everyone caught up."""

    alice: Client
    bob: Client
    carol: Client
    group_id: bytes
    alice_store: MemoryClientStore

    @property
    def members(self) -> list[Client]:
        return [self.alice, self.bob, self.carol]


def catch_up(network: Network, clients: list[Client]) -> None:
    for _ in range(2):
        for client in clients:
            client.sync(network.now)
        network.settle(clients)


def views(clients: list[Client], group_id: bytes) -> list[GroupSettings | None]:
    return [client.group_settings(group_id) for client in clients]


@pytest.fixture
def village(network: Network, make_client: Callable[..., Client]) -> Village:
    store = MemoryClientStore()
    alice = make_client("alice", store=store)
    bob, carol = make_client("bob"), make_client("carol")
    group_id = alice.create_group(title="王家村", now=network.now)
    network.settle([alice])
    alice.add_members(group_id, [bob.device.account_key, carol.device.account_key], now=network.now)
    network.settle([alice])
    catch_up(network, [alice, bob, carol])
    return Village(alice, bob, carol, group_id, store)


def test_every_member_sees_the_settings_an_admin_sets(
    network: Network, village: Village, make_client: Callable[..., Client], drain
) -> None:
    alice, bob, group_id = village.alice, village.bob, village.group_id
    assert views(village.members, group_id) == [CLOSED] * 3
    epoch = alice.group(group_id).epoch
    assert alice.set_group_settings(
        group_id, approval_required=True, members_can_add=True, now=network.now
    )
    # Nothing changes before the relay takes the commit and the log reaches it.
    assert alice.group_settings(group_id) == CLOSED
    network.settle([alice])
    catch_up(network, village.members)
    opened = GroupSettings(approval_required=True, members_can_add=True)
    assert views(village.members, group_id) == [opened] * 3
    assert {m.group(group_id).epoch for m in village.members} == {epoch + 1}
    assert [e for e in drain(alice) if isinstance(e, CommitAccepted)]
    # The admins are as they were; what the flags allow now holds: bob (not an admin) adds.
    assert bob.admins(group_id) == {alice.device.device_key}
    dave = make_client("dave")
    bob.add_members(group_id, [dave.device.account_key], now=network.now)
    network.settle([bob])
    catch_up(network, [*village.members, dave])
    assert len(village.carol.members(group_id)) == 4
    assert dave.group_settings(group_id) == opened
    # One flag at a time: the other stays as it is.
    assert alice.set_group_settings(group_id, approval_required=False, now=network.now)
    network.settle([alice])
    catch_up(network, [*village.members, dave])
    expected = GroupSettings(approval_required=False, members_can_add=True)
    assert views([*village.members, dave], group_id) == [expected] * 4


def test_a_non_admin_is_refused_and_nothing_is_queued(network: Network, village: Village) -> None:
    bob, carol, group_id = village.bob, village.carol, village.group_id
    before = bob.group(group_id)
    with pytest.raises(NotAnAdmin):
        bob.set_group_settings(group_id, approval_required=True, now=network.now)
    # A non-admin asking for what the group already has is refused too, not a no-op.
    with pytest.raises(NotAnAdmin):
        bob.set_group_settings(group_id, approval_required=False, now=network.now)
    assert bob.group(group_id) == before
    assert not bob.has_work()
    with pytest.raises(UnknownGroup):
        bob.set_group_settings(b"\x00" * 16, approval_required=True, now=network.now)
    carol.leave(group_id, now=network.now)
    with pytest.raises(GroupClosed):
        carol.set_group_settings(group_id, approval_required=True, now=network.now)
    catch_up(network, village.members)
    assert views([village.alice, bob], group_id) == [CLOSED] * 2


def test_a_change_that_changes_nothing_makes_no_commit(network: Network, village: Village) -> None:
    alice, group_id = village.alice, village.group_id
    epoch = alice.group(group_id).epoch
    assert not alice.set_group_settings(group_id, now=network.now)
    assert not alice.set_group_settings(
        group_id, approval_required=False, members_can_add=False, now=network.now
    )
    assert alice.group(group_id).outbox == 0
    # Judged against the settings our queued commits will leave: asking twice queues one
    # commit, and undoing a queued change is a change.
    assert alice.set_group_settings(group_id, approval_required=True, now=network.now)
    assert not alice.set_group_settings(group_id, approval_required=True, now=network.now)
    assert alice.group(group_id).outbox == 1
    assert alice.set_group_settings(group_id, approval_required=False, now=network.now)
    assert alice.group(group_id).outbox == 2
    network.settle([alice])
    catch_up(network, village.members)
    assert views(village.members, group_id) == [CLOSED] * 3
    assert alice.group(group_id).epoch == epoch + 2
    assert not alice.set_group_settings(group_id, approval_required=False, now=network.now)
    assert alice.group(group_id).outbox == 0


def test_the_change_survives_losing_a_race(network: Network, village: Village, drain) -> None:
    alice, bob, group_id = village.alice, village.bob, village.group_id
    drain(alice)
    epoch = alice.group(group_id).epoch
    bob.update_keys(group_id, now=network.now)
    assert alice.set_group_settings(group_id, members_can_add=True, now=network.now)
    # bob's commit reaches the relay first; alice's, built at the old epoch, loses.
    network.settle([bob])
    network.settle([alice])
    catch_up(network, village.members)
    assert "commit-conflict" in network.relay.problems
    expected = GroupSettings(approval_required=False, members_can_add=True)
    assert views(village.members, group_id) == [expected] * 3
    assert {m.group(group_id).epoch for m in village.members} == {epoch + 2}
    events = drain(alice)
    assert [e for e in events if isinstance(e, CommitAccepted)]
    assert not [e for e in events if isinstance(e, CommitRejected)]


def test_the_change_survives_a_restart(
    network: Network, village: Village, reopen: Callable[..., Client]
) -> None:
    group_id = village.group_id
    assert village.alice.set_group_settings(group_id, approval_required=True, now=network.now)
    # alice's process dies before anything is sent: the intent is on disk.
    alice = reopen(village.alice, village.alice_store, "alice/restarted")
    assert alice.group(group_id).outbox == 1
    assert not alice.set_group_settings(group_id, approval_required=True, now=network.now)
    alice.sync(network.now)
    network.settle([alice])
    others = [village.bob, village.carol]
    catch_up(network, [alice, *others])
    expected = GroupSettings(approval_required=True, members_can_add=False)
    assert views([alice, *others], group_id) == [expected] * 3
    assert alice.group(group_id).outbox == 0


def test_two_admins_asking_for_the_same_settings_both_succeed(
    network: Network, village: Village, drain
) -> None:
    alice, bob, group_id = village.alice, village.bob, village.group_id
    alice.set_admin(group_id, bob.device.device_key, admin=True, now=network.now)
    network.settle([alice])
    catch_up(network, village.members)
    drain(alice)
    drain(bob)
    assert alice.set_group_settings(group_id, approval_required=True, now=network.now)
    assert bob.set_group_settings(group_id, approval_required=True, now=network.now)
    # alice's commit wins; bob's, rebuilt at the next epoch, finds nothing left to
    # change: the group is as he asked, which is not a refusal.
    network.settle([alice])
    network.settle([bob])
    catch_up(network, village.members)
    expected = GroupSettings(approval_required=True, members_can_add=False)
    assert views(village.members, group_id) == [expected] * 3
    assert not [e for e in drain(bob) if isinstance(e, CommitRejected)]
    assert bob.group(group_id).outbox == 0

"""
The client core against the fake relay: create, add, talk, race, remove, leave.

Every test steps clients and the relay in memory with a hand-advanced clock.
"""

from __future__ import annotations

import pytest

from townsquare import wire
from townsquare.client.core import (
    AddFailed,
    Client,
    CommitAccepted,
    CommitRejected,
    GroupStatus,
    MemberJoined,
    MemberLeft,
    MemoryClientStore,
    MessageReceived,
    MessageSent,
    RemovedFromGroup,
)
from townsquare.client.errors import (
    AlreadyInitialized,
    GroupClosed,
    InvalidMessage,
    NotAGroupMember,
    NotAnAdmin,
    NotInitialized,
    UnknownGroup,
    UsageError,
)
from townsquare.client.testing import Network


def texts(client: Client, group_id: bytes) -> list[tuple[str | None, str | None]]:
    return [(m.sender_name, m.text) for m in client.messages(group_id) if m.kind == "text"]


def log_view(client: Client, group_id: bytes) -> list[tuple[int, bytes, str | None]]:
    return [(m.seq, m.sender, m.text) for m in client.messages(group_id) if m.kind == "text"]


def catch_up(network: Network, clients: list[Client]) -> None:
    for client in clients:
        client.sync(network.now)
    network.settle(clients)


@pytest.fixture
def trio(network: Network, make_client):
    """alice's group with bob and carol in it, everyone caught up."""
    alice, bob, carol = make_client("alice"), make_client("bob"), make_client("carol")
    group_id = alice.create_group(title="王家村", now=network.now)
    network.settle([alice])
    alice.add_members(group_id, [bob.device.account_key, carol.device.account_key], now=network.now)
    network.settle([alice])
    catch_up(network, [alice, bob, carol])
    catch_up(network, [alice, bob, carol])
    return alice, bob, carol, group_id


def test_two_devices_talk(network: Network, make_client, drain) -> None:
    alice = make_client("alice")
    bob = make_client("bob")
    group_id = alice.create_group(title="王家村", now=network.now)
    network.settle([alice])
    assert alice.group(group_id).status == GroupStatus.ACTIVE
    alice.add_members(group_id, [bob.device.account_key], now=network.now)
    network.settle([alice, bob])
    catch_up(network, [alice, bob])
    assert group_id in bob.group_ids()
    drain(bob)
    alice.send_text(group_id, "明天上午九点开会", now=network.now)
    bob.send_text(group_id, "好的 see you", now=network.now)
    network.settle([alice, bob])
    catch_up(network, [alice, bob])
    expected = [("alice", "明天上午九点开会"), ("bob", "好的 see you")]
    assert texts(alice, group_id) == expected
    assert texts(bob, group_id) == expected
    assert log_view(alice, group_id) == log_view(bob, group_id)
    assert alice.group(group_id).title == "王家村"
    assert bob.group(group_id).title == "王家村"
    assert {m.display_name for m in bob.members(group_id)} == {"alice", "bob"}
    events = drain(bob)
    received = [e.message.text for e in events if isinstance(e, MessageReceived)]
    assert "明天上午九点开会" in received
    assert [e for e in events if isinstance(e, MessageSent)]


def test_three_members_see_the_same_log(network: Network, trio) -> None:
    alice, bob, carol, group_id = trio
    for i in range(3):
        alice.send_text(group_id, f"a{i}", now=network.now)
        bob.send_text(group_id, f"b{i}", now=network.now)
        carol.send_text(group_id, f"c{i}", now=network.now)
    network.settle([alice, bob, carol])
    catch_up(network, [alice, bob, carol])
    views = [log_view(c, group_id) for c in (alice, bob, carol)]
    assert views[0] == views[1] == views[2]
    assert sorted(t for _, _, t in views[0]) == sorted(f"{p}{i}" for p in "abc" for i in range(3))
    assert all(len(c.members(group_id)) == 3 for c in (alice, bob, carol))


def test_offline_sends_are_queued_then_delivered_once(network: Network, trio) -> None:
    alice, bob, carol, group_id = trio
    network.filter = lambda client, request: "lose" if client is alice else "deliver"
    ids = [alice.send_text(group_id, f"offline {i}", now=network.now) for i in range(3)]
    network.run([alice, bob, carol], seconds=120)
    assert all(alice.message_state(group_id, i) == "queued" for i in ids)
    assert alice.has_work()
    network.filter = lambda client, request: "deliver"
    network.run([alice, bob, carol], seconds=900)
    catch_up(network, [alice, bob, carol])
    assert all(alice.message_state(group_id, i) == "sent" for i in ids)
    expected = [f"offline {i}" for i in range(3)]
    assert [t for _, t in texts(bob, group_id)] == expected
    assert [t for _, t in texts(alice, group_id)] == expected


def test_lost_answer_is_deduplicated_by_client_message_id(network: Network, trio) -> None:
    alice, bob, carol, group_id = trio
    answers = {"dropped": 0}

    def drop_first_send(client, request):
        if client is alice and request.method == "POST" and answers["dropped"] == 0:
            answers["dropped"] += 1
            return "drop-answer"
        return "deliver"

    network.filter = drop_first_send
    start = len(network.relay.requests)
    alice.send_text(group_id, "once", now=network.now)
    network.run([alice], seconds=60)
    catch_up(network, [alice, bob, carol])
    assert answers["dropped"] == 1
    assert texts(bob, group_id) == [("alice", "once")]
    assert texts(alice, group_id) == [("alice", "once")]
    # The retry reached the relay and was answered from its record of the first.
    sends = [
        r
        for r in network.relay.requests[start:]
        if r[0] == alice.device.device_key and r[1] == "POST" and r[2].endswith("/messages")
    ]
    assert len(sends) == 2


def test_message_racing_a_commit_is_reencrypted_under_the_same_id(
    network: Network, trio, drain
) -> None:
    alice, bob, carol, group_id = trio
    # bob commits (a key update) and the relay takes it before alice's message.
    bob.update_keys(group_id, now=network.now)
    network.settle([bob])
    message_id = alice.send_text(group_id, "racing", now=network.now)
    old_epoch = alice.group(group_id).epoch
    network.settle([alice])
    catch_up(network, [alice, bob, carol])
    assert alice.group(group_id).epoch == old_epoch + 1
    assert "stale-epoch" in network.relay.problems
    assert texts(bob, group_id) == [("alice", "racing")]
    assert texts(carol, group_id) == [("alice", "racing")]
    assert alice.message_state(group_id, message_id) == "sent"
    relay_log = network.relay.groups[group_id].log
    commit_seq = max(e.seq for e in relay_log if e.kind == "commit")
    after = [e for e in relay_log if e.seq > commit_seq]
    assert [e.sender for e in after] == [alice.device.device_key]


def test_two_commits_race_first_wins_loser_rebuilds(network: Network, trio, drain) -> None:
    alice, bob, carol, group_id = trio
    drain(alice)
    drain(bob)
    alice.update_keys(group_id, now=network.now)
    bob.update_keys(group_id, now=network.now)
    epoch = alice.group(group_id).epoch
    network.settle([alice, bob])
    catch_up(network, [alice, bob, carol])
    catch_up(network, [alice, bob, carol])
    assert alice.group(group_id).epoch == bob.group(group_id).epoch == epoch + 2
    assert carol.group(group_id).epoch == epoch + 2
    assert "commit-conflict" in network.relay.problems
    accepted = [e for e in drain(alice) + drain(bob) if isinstance(e, CommitAccepted)]
    assert len(accepted) == 2
    assert not [e for e in drain(alice) + drain(bob) if isinstance(e, CommitRejected)]


def test_remove_member_closes_the_group_for_it(network: Network, trio, drain) -> None:
    alice, bob, carol, group_id = trio
    drain(carol)
    alice.remove_member(group_id, carol.device.device_key, now=network.now)
    network.settle([alice])
    catch_up(network, [alice, bob, carol])
    assert carol.group(group_id).status == GroupStatus.REMOVED
    assert [e for e in drain(carol) if isinstance(e, RemovedFromGroup)]
    left = [e for e in drain(bob) if isinstance(e, MemberLeft)]
    assert [e.device_key for e in left] == [carol.device.device_key]
    alice.send_text(group_id, "after the removal", now=network.now)
    network.settle([alice])
    catch_up(network, [alice, bob, carol])
    assert ("alice", "after the removal") in texts(bob, group_id)
    assert ("alice", "after the removal") not in texts(carol, group_id)
    with pytest.raises(GroupClosed):
        carol.send_text(group_id, "hello?", now=network.now)
    assert not carol.has_work()


def test_leave_is_committed_by_the_next_member_online(network: Network, trio, drain) -> None:
    alice, bob, carol, group_id = trio
    bob.leave(group_id, now=network.now)
    assert bob.group(group_id).status == GroupStatus.LEAVING
    network.settle([bob])
    catch_up(network, [alice, carol])
    network.run([alice, carol], seconds=30)
    catch_up(network, [alice, bob, carol])
    assert bob.group(group_id).status == GroupStatus.LEFT
    removed = [e for e in drain(bob) if isinstance(e, RemovedFromGroup)]
    assert removed
    assert removed[-1].left
    assert len(alice.members(group_id)) == len(carol.members(group_id)) == 2
    assert alice.group(group_id).epoch == carol.group(group_id).epoch


def test_sole_member_leaving_closes_at_once(network: Network, make_client) -> None:
    alice = make_client("alice")
    group_id = alice.create_group(now=network.now)
    network.settle([alice])
    alice.leave(group_id, now=network.now)
    assert alice.group(group_id).status == GroupStatus.LEFT


def test_new_member_learns_names_and_title(network: Network, trio, make_client) -> None:
    alice, bob, carol, group_id = trio
    dave = make_client("dave")
    alice.add_members(group_id, [dave.device.account_key], now=network.now)
    network.settle([alice])
    catch_up(network, [alice, bob, carol, dave])
    catch_up(network, [alice, bob, carol, dave])
    assert dave.group(group_id).title == "王家村"
    names = {m.display_name for m in dave.members(group_id)}
    assert names == {"alice", "bob", "carol", "dave"}


def test_add_with_no_key_packages_left_fails(network: Network, trio, make_client, drain) -> None:
    alice, _bob, _carol, group_id = trio
    erin = make_client("erin")
    network.relay.key_packages[erin.device.device_key].one_time.clear()
    network.relay.key_packages[erin.device.device_key].last_resort = None
    alice.add_members(group_id, [erin.device.account_key], now=network.now)
    network.settle([alice])
    assert [e for e in drain(alice) if isinstance(e, AddFailed)]


def test_key_packages_are_topped_up(network: Network, trio, make_client) -> None:
    _alice, bob, _carol, _group_id = trio
    # Joining used one of bob's one-time KeyPackages (3 target, 2 low water).
    catch_up(network, [bob])
    counts = network.relay.key_packages[bob.device.device_key]
    assert len(counts.one_time) >= 2
    assert counts.last_resort is not None


def test_welcome_seen_twice_joins_once(network: Network, make_client, drain) -> None:
    alice, bob = make_client("alice"), make_client("bob")
    group_id = alice.create_group(now=network.now)
    network.settle([alice])
    alice.add_members(group_id, [bob.device.account_key], now=network.now)
    network.settle([alice])
    # Fetch the Welcome but lose the cursor acknowledgement: the relay keeps it.
    network.filter = lambda c, r: "lose" if c is bob and "cursor" in r.target else "deliver"
    catch_up(network, [bob])
    catch_up(network, [bob])
    joined = [e for e in drain(bob) if type(e).__name__ == "GroupJoined"]
    assert len(joined) == 1
    assert network.relay.welcomes[bob.device.device_key]


def test_removed_member_readded_keeps_its_messages(network: Network, trio) -> None:
    alice, bob, carol, group_id = trio
    alice.send_text(group_id, "before", now=network.now)
    network.settle([alice])
    catch_up(network, [alice, bob, carol])
    alice.remove_member(group_id, carol.device.device_key, now=network.now)
    network.settle([alice])
    catch_up(network, [alice, bob, carol])
    assert carol.group(group_id).status == GroupStatus.REMOVED
    alice.add_members(group_id, [carol.device.account_key], now=network.now)
    network.settle([alice])
    catch_up(network, [alice, bob, carol])
    catch_up(network, [alice, bob, carol])
    assert carol.group(group_id).status == GroupStatus.ACTIVE
    alice.send_text(group_id, "welcome back", now=network.now)
    network.settle([alice])
    catch_up(network, [alice, bob, carol])
    assert [t for _, t in texts(carol, group_id)] == ["before", "welcome back"]


def test_push_frames_drive_delivery_without_polling(network: Network, trio) -> None:
    alice, bob, _carol, group_id = trio
    for frame in network.relay.take_notices(bob.device.device_key):
        del frame
    alice.send_text(group_id, "pushed", now=network.now)
    network.settle([alice])
    frames = network.relay.take_notices(bob.device.device_key)
    assert frames
    requests_before = len(network.relay.requests)
    for frame in frames:
        bob.receive_push(frame, network.now)
    assert texts(bob, group_id)[-1] == ("alice", "pushed")
    # Processed inline: no fetch was needed.
    assert len(network.relay.requests) == requests_before


def test_malformed_push_frames_resync(network: Network, trio) -> None:
    _alice, bob, _carol, _group_id = trio
    bob.receive_push(b"\xff not json", network.now)
    assert bob.has_work()
    network.settle([bob])
    bob.receive_push('{"type": "message", "group": "!!", "seq": 3}', network.now)
    bob.receive_push('{"type": "lagged"}', network.now)
    network.settle([bob])
    assert not bob.has_work()


def test_member_events_on_add_and_remove(network: Network, trio, make_client, drain) -> None:
    alice, bob, _carol, group_id = trio
    drain(bob)
    dave = make_client("dave")
    alice.add_members(group_id, [dave.device.account_key], now=network.now)
    network.settle([alice])
    catch_up(network, [bob])
    joined = [e for e in drain(bob) if isinstance(e, MemberJoined)]
    assert [e.device_key for e in joined] == [dave.device.device_key]


def test_api_misuse_raises_typed_errors(network: Network, trio) -> None:
    alice, _bob, _carol, group_id = trio
    fresh = Client(MemoryClientStore(), rng=lambda n: b"\x01" * n)
    with pytest.raises(NotInitialized):
        fresh.create_group(now=network.now)
    with pytest.raises(AlreadyInitialized):
        alice.initialize(display_name="again", now=network.now)
    with pytest.raises(UnknownGroup):
        alice.send_text(b"\x00" * 16, "hi", now=network.now)
    with pytest.raises(InvalidMessage):
        alice.send_text(group_id, "", now=network.now)
    with pytest.raises(InvalidMessage):
        alice.create_group(title=" ", now=network.now)
    with pytest.raises(NotAGroupMember):
        alice.remove_member(group_id, b"\x07" * 32, now=network.now)
    with pytest.raises(UsageError):
        alice.remove_member(group_id, alice.device.device_key, now=network.now)
    with pytest.raises(UsageError):
        alice.add_key_packages(group_id, [b"not a key package"], now=network.now)
    message = wire.Text("dup", message_id=wire.MessageId(b"\x05" * 16), sent_at=alice_time(network))
    alice.send(group_id, message, now=network.now)
    with pytest.raises(InvalidMessage):
        alice.send(group_id, message, now=network.now)


def alice_time(network: Network):
    from datetime import UTC, datetime

    return datetime.fromtimestamp(network.now, UTC)


def test_a_group_is_subscribed_once_the_relay_created_it(network: Network, make_client) -> None:
    # Subscribing earlier would get unknown-group, and the push channel asks once.
    alice = make_client("alice")
    network.settle([alice])
    group_id = alice.create_group(title="新群", now=network.now)
    assert alice.subscriptions() == ()
    network.settle([alice])
    assert alice.subscriptions() == (group_id,)


def test_an_admin_names_another_who_may_then_add(network: Network, trio, make_client) -> None:
    alice, bob, carol, group_id = trio
    dave = make_client("dave")
    network.settle([dave])
    with pytest.raises(NotAnAdmin):
        bob.add_members(group_id, [dave.device.account_key], now=network.now)
    with pytest.raises(NotAnAdmin):
        bob.set_admin(group_id, carol.device.device_key, admin=True, now=network.now)
    with pytest.raises(UsageError):  # the last admin cannot step down
        alice.set_admin(group_id, alice.device.device_key, admin=False, now=network.now)
    alice.set_admin(group_id, bob.device.device_key, admin=True, now=network.now)
    network.settle([alice])
    catch_up(network, [alice, bob, carol])
    for member in (alice, bob, carol):
        assert member.admins(group_id) == {alice.device.device_key, bob.device.device_key}
    bob.add_members(group_id, [dave.device.account_key], now=network.now)
    network.settle([bob])
    catch_up(network, [alice, bob, carol, dave])
    assert len(carol.members(group_id)) == 4
    # Now Alice may step down: Bob remains.
    alice.set_admin(group_id, alice.device.device_key, admin=False, now=network.now)
    network.settle([alice])
    catch_up(network, [alice, bob, carol, dave])
    assert dave.admins(group_id) == {bob.device.device_key}
    with pytest.raises(NotAnAdmin):
        alice.remove_member(group_id, carol.device.device_key, now=network.now)

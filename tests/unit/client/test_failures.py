"""
What the core does with failures: refusals, retries, bad answers, bad log entries.

Each test checks that a failure changes nothing it should not, and that the
core either recovers (retry, re-register, catch up) or says why it cannot
(a typed event) and stops asking.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from townsquare import auth, wire
from townsquare.client.core import (
    Client,
    CommitRejected,
    DeviceRegistered,
    GroupResynced,
    MessageUndecryptable,
    RelayFailure,
    ResyncRequired,
    SendFailed,
)
from townsquare.client.core.relay_api import PROBLEM_JSON, Response
from townsquare.client.testing import Network


def problem(status: int, code: str) -> Response:
    return Response(
        status=status,
        body=json.dumps({"status": status, "code": code, "detail": code}).encode(),
        content_type=PROBLEM_JSON,
    )


def catch_up(network: Network, clients: list[Client]) -> None:
    for client in clients:
        client.sync(network.now)
    network.settle(clients)


@pytest.fixture
def pair(network: Network, make_client):
    alice, bob = make_client("alice"), make_client("bob")
    group_id = alice.create_group(now=network.now)
    network.settle([alice])
    alice.add_members(group_id, [bob.device.account_key], now=network.now)
    network.settle([alice])
    catch_up(network, [alice, bob])
    catch_up(network, [alice, bob])
    return alice, bob, group_id


def texts(client: Client, group_id: bytes) -> list[str | None]:
    return [m.text for m in client.messages(group_id) if m.kind == "text"]


_POSTED = [0]


def post_raw(network: Network, client: Client, group_id: bytes, plaintext: bytes) -> None:
    """Encrypt arbitrary bytes as the client and post them behind its back."""
    _POSTED[0] += 1
    group = client._groups[group_id].group
    message = group.encrypt(plaintext, rng=lambda n: b"\x09" * n)
    body = json.dumps(
        {
            "client_message_id": auth.encode_b64u(_POSTED[0].to_bytes(16, "big")),
            "message": auth.encode_b64u(message),
        }
    ).encode()
    answer = network.relay.handle(
        client.device.device_key, "POST", f"/v1/groups/{auth.encode_b64u(group_id)}/messages", body
    )
    assert answer.status == 201


def test_server_errors_are_retried_with_backoff(network: Network, pair) -> None:
    alice, bob, group_id = pair
    failures = {"left": 3}

    def flaky(client, request):
        if client is alice and request.method == "POST" and failures["left"]:
            failures["left"] -= 1
            return problem(503, "unavailable")
        return "deliver"

    network.filter = flaky
    alice.send_text(group_id, "eventually", now=network.now)
    network.settle([alice])
    assert failures["left"] == 2  # the first retry waits for its backoff
    first_wait = alice.get_timer()
    assert first_wait is not None
    assert first_wait > network.now
    network.run([alice], seconds=60)
    catch_up(network, [bob])
    assert texts(bob, group_id) == ["eventually"]


def test_a_refused_message_leaves_the_outbox_with_an_event(network: Network, pair, drain) -> None:
    alice, bob, group_id = pair
    network.filter = lambda c, r: (
        problem(413, "field-too-large") if r.method == "POST" else "deliver"
    )
    message_id = alice.send_text(group_id, "too big, say", now=network.now)
    network.settle([alice])
    failed = [e for e in drain(alice) if isinstance(e, SendFailed)]
    assert [(e.message_id, e.code) for e in failed] == [(message_id, "field-too-large")]
    assert alice.queued(group_id) == ()
    assert alice.message_state(group_id, message_id) is None
    network.filter = lambda c, r: "deliver"
    alice.send_text(group_id, "next one", now=network.now)
    network.settle([alice])
    catch_up(network, [bob])
    assert texts(bob, group_id) == ["next one"]


def test_a_refused_commit_is_dropped_and_the_group_goes_on(network: Network, pair, drain) -> None:
    alice, bob, group_id = pair
    epoch = alice.group(group_id).epoch
    network.filter = lambda c, r: problem(403, "forbidden") if r.method == "POST" else "deliver"
    alice.update_keys(group_id, now=network.now)
    network.settle([alice])
    rejected = [e for e in drain(alice) if isinstance(e, CommitRejected)]
    assert [e.code for e in rejected] == ["forbidden"]
    network.filter = lambda c, r: "deliver"
    alice.send_text(group_id, "still here", now=network.now)
    network.settle([alice])
    catch_up(network, [alice, bob])
    assert alice.group(group_id).epoch == epoch
    assert texts(bob, group_id) == ["still here"]


def test_an_unknown_device_registers_again(network: Network, pair, drain) -> None:
    alice, _bob, _group_id = pair
    drain(alice)
    answers = iter([problem(401, "unknown-device")])
    network.filter = lambda c, r: next(answers, "deliver") if c is alice else "deliver"
    catch_up(network, [alice])
    # The relay still knows the device (it lost nothing); registering again finds it.
    network.run([alice], seconds=30)
    assert "account-exists" in network.relay.problems
    assert alice.registered
    assert [e for e in drain(alice) if isinstance(e, DeviceRegistered)]


def test_a_pruned_log_leads_to_a_resync(network: Network, pair, drain) -> None:
    alice, bob, group_id = pair
    before = [m.text for m in bob.messages(group_id)]
    pruned = iter([problem(410, "log-pruned")])
    network.filter = lambda c, r: next(pruned, "deliver") if "messages?" in r.target else "deliver"
    catch_up(network, [bob])
    events = drain(bob)
    assert [e for e in events if isinstance(e, ResyncRequired)]
    # Bob rejoins by an external commit replacing his own leaf, keeps what he had,
    # and reads what is said after.
    assert [e for e in events if isinstance(e, GroupResynced)]
    assert not bob.group(group_id).needs_resync
    assert [m.text for m in bob.messages(group_id)] == before
    catch_up(network, [alice, bob])
    alice.send_text(group_id, "after the resync", now=network.now)
    network.settle([alice])
    catch_up(network, [bob])
    assert texts(bob, group_id)[-1] == "after the resync"
    assert alice.group(group_id).epoch == bob.group(group_id).epoch
    assert not bob.has_work()


def test_a_commit_that_cannot_be_processed_blocks_the_group(network: Network, pair, drain) -> None:
    alice, bob, group_id = pair
    alice.update_keys(group_id, now=network.now)
    network.settle([alice])
    log = network.relay.groups[group_id].log
    commit = log[-1]
    assert commit.kind == "commit"
    # The relay (or the committer) damages the commit's last byte, its membership tag.
    commit.message = commit.message[:-1] + bytes([commit.message[-1] ^ 1])
    cursor = bob.group(group_id).cursor
    catch_up(network, [bob])
    events = drain(bob)
    assert [e.seq for e in events if isinstance(e, ResyncRequired)] == [commit.seq]
    assert [e for e in events if isinstance(e, GroupResynced)]
    # Bob rejoined after the damaged commit: the next epoch is shared again.
    assert bob.group(group_id).cursor > cursor
    assert not bob.group(group_id).needs_resync
    catch_up(network, [alice, bob])
    assert alice.group(group_id).epoch == bob.group(group_id).epoch
    alice.send_text(group_id, "still together", now=network.now)
    network.settle([alice])
    catch_up(network, [bob])
    assert texts(bob, group_id)[-1] == "still together"


def test_a_resync_is_remembered_across_a_restart(network: Network, pair, drain) -> None:
    alice, bob, group_id = pair
    alice.update_keys(group_id, now=network.now)
    network.settle([alice])
    commit = network.relay.groups[group_id].log[-1]
    commit.message = commit.message[:-1] + bytes([commit.message[-1] ^ 1])
    # Bob sees the damaged commit, but the relay is gone before he can resync.
    network.filter = lambda c, r: "lose" if "group-info" in r.target else "deliver"
    catch_up(network, [bob])
    assert bob.group(group_id).needs_resync
    again = Client(bob._store, rng=lambda n: b"\x01" * n)
    assert again.group(group_id).needs_resync
    network.filter = lambda c, r: "deliver"
    network.run([again], seconds=30)
    assert not again.group(group_id).needs_resync
    catch_up(network, [alice, again])
    assert again.group(group_id).epoch == alice.group(group_id).epoch


def test_undecryptable_and_undecodable_entries_are_skipped(network: Network, pair, drain) -> None:
    alice, bob, group_id = pair
    post_raw(network, alice, group_id, b"\xff not cbor")
    future = bytes.fromhex("8502") + b"\x01" * 4  # an envelope of a newer version
    post_raw(network, alice, group_id, future)
    alice.send_text(group_id, "readable", now=network.now)
    network.settle([alice])
    drain(bob)
    catch_up(network, [bob])
    events = drain(bob)
    assert [e.reason for e in events if isinstance(e, MessageUndecryptable)] == ["MalformedCBOR"]
    assert texts(bob, group_id) == ["readable"]
    # A message of a newer version is kept (and shown as such), not dropped.
    assert [m.kind for m in bob.messages(group_id)][-2:] == ["unsupported", "text"]
    assert bob.group(group_id).cursor == len(network.relay.groups[group_id].log)


def test_a_message_stored_twice_by_the_relay_is_shown_once(network: Network, pair) -> None:
    alice, bob, group_id = pair
    text = wire.Text(
        "only once",
        message_id=wire.MessageId(b"\x0a" * 16),
        sent_at=datetime.fromtimestamp(network.now, UTC),
    )
    data = wire.encode(text)
    post_raw(network, alice, group_id, data)
    post_raw(network, alice, group_id, data[:4] + data[4:])  # same bytes, new ciphertext
    catch_up(network, [bob])
    assert texts(bob, group_id) == ["only once"]


def test_malformed_answers_are_retried(network: Network, pair) -> None:
    alice, bob, group_id = pair
    bad = {"left": 2}

    def garble(client, request):
        if client is bob and "messages?" in request.target and bad["left"]:
            bad["left"] -= 1
            return Response(status=200, body=b'{"messages": "nope"}')
        return "deliver"

    network.filter = garble
    alice.send_text(group_id, "after garbage", now=network.now)
    network.settle([alice])
    bob.sync(network.now)
    network.run([bob], seconds=60)
    assert bad["left"] == 0
    assert texts(bob, group_id) == ["after garbage"]


def test_refusals_of_reads_are_reported_and_not_hammered(network: Network, pair, drain) -> None:
    _alice, bob, _group_id = pair
    drain(bob)
    network.filter = lambda c, r: problem(400, "invalid-request") if c is bob else "deliver"
    catch_up(network, [bob])
    failures = [e for e in drain(bob) if isinstance(e, RelayFailure)]
    assert failures
    asked = len(network.relay.requests)
    network.settle([bob])
    network.advance(30)
    network.settle([bob])
    assert len(network.relay.requests) == asked  # the next try waits a minute or more


def test_polling_while_the_push_channel_is_down(network: Network, pair) -> None:
    alice, bob, group_id = pair
    bob.push_disconnected(network.now)
    alice.send_text(group_id, "polled", now=network.now)
    network.settle([alice, bob])
    assert texts(bob, group_id) == []
    timer = bob.get_timer()
    assert timer is not None
    network.now = timer
    bob.handle_timer(network.now)
    network.settle([bob])
    assert texts(bob, group_id) == ["polled"]
    bob.push_connected(network.now)
    assert bob.get_timer() is None or bob.get_timer() > network.now


def test_a_group_the_relay_refuses_to_create_is_closed(
    network: Network, make_client, drain
) -> None:
    alice = make_client("alice")
    network.filter = lambda c, r: (
        problem(400, "invalid-new-group") if r.target == "/v1/groups" else "deliver"
    )
    group_id = alice.create_group(title="never", now=network.now)
    message_id = alice.send_text(group_id, "queued behind it", now=network.now)
    network.settle([alice])
    events = drain(alice)
    assert [e.code for e in events if isinstance(e, RelayFailure)] == ["invalid-new-group"]
    assert message_id in [e.message_id for e in events if isinstance(e, SendFailed)]
    assert alice.group(group_id).status.closed
    assert not alice.has_work()

"""
Delivery over HTTP with real MLS traffic: groups, commits, proposals, application messages.

Every client is a real ``townsquare.mls.group.Group`` of a registered device
(suite 1, the device's Ed25519 key as the leaf's signature key, a
BasicCredential naming it), driven by a seeded rng. Every refused request is
checked for its problem type and against a snapshot of the whole database:
nothing changes but the request's nonce.
"""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import replace

import pytest

from townsquare import auth
from townsquare.mls.ciphersuite import get_cipher_suite
from townsquare.mls.credentials import BasicCredential
from townsquare.mls.framing import MLSMessage
from townsquare.mls.group import Group, GroupConfig
from townsquare.mls.key_package import generate_key_package
from townsquare.mls.leaf_node import Lifetime
from townsquare.mls.proposals import Add, Remove
from townsquare.server.errors import Forbidden

pytestmark = pytest.mark.anyio


def b64u(data: bytes) -> str:
    return auth.encode_b64u(data)


async def new_group(relay, mls, identity, **kwargs) -> Group:
    group = mls.group(identity, **kwargs)
    response = await relay.create_group(identity, group.group_info())
    assert response.status_code == 201, response.text
    return group


async def two_member_group(relay, mls, new_identity):
    """Alice creates a group and adds Bob; both are at epoch 1."""
    alice = await relay.register(new_identity())
    bob = await relay.register(new_identity())
    group_a = await new_group(relay, mls, alice)
    pending = group_a.commit(rng=mls.rng, proposals=[Add(mls.bundle(bob).key_package)])
    response = await relay.post_commit(alice, pending)
    assert response.status_code == 201, response.text
    group_a.merge(pending.staged)
    (welcome,) = await relay.welcomes(bob)
    group_b = mls.join(
        bob,
        auth.decode_b64u(welcome["welcome"]),
        ratchet_tree=auth.decode_b64u(welcome["ratchet_tree"]),
    )
    return alice, bob, group_a, group_b


def flip(data: bytes, at: int = -1) -> bytes:
    mutable = bytearray(data)
    mutable[at] ^= 0x01
    return bytes(mutable)


# -- Creating groups ---------------------------------------------------------------------


async def test_create_group_answers_the_group(relay, mls, identity):
    await relay.register(identity)
    group = mls.group(identity)
    response = await relay.create_group(identity, group.group_info())
    assert response.status_code == 201, response.text
    assert response.json() == {
        "group_id": b64u(group.group_id),
        "epoch": 0,
        "last_seq": 0,
        "created_at": relay.clock.now(),
    }
    info = await relay.client.get(
        f"/v1/groups/{b64u(group.group_id)}/group-info", auth=relay.signer(identity)
    )
    assert info.status_code == 200
    assert auth.decode_b64u(info.json()["ratchet_tree"]) == group.ratchet_tree()
    assert auth.decode_b64u(info.json()["group_info"]) == group.group_info()


async def test_create_group_with_the_tree_beside_the_group_info(relay, mls, identity):
    await relay.register(identity)
    group = mls.group(identity)
    response = await relay.create_group(
        identity, group.group_info(with_ratchet_tree=False), ratchet_tree=group.ratchet_tree()
    )
    assert response.status_code == 201, response.text


async def test_a_group_id_is_taken_once(relay, mls, identity, problem):
    await relay.register(identity)
    group = await new_group(relay, mls, identity)
    before = relay.snapshot()
    problem(await relay.create_group(identity, group.group_info()), 409, "group-exists")
    relay.assert_unchanged(before, nonce_used=True)


async def test_a_group_of_another_device_is_refused(relay, mls, new_identity, problem):
    alice = await relay.register(new_identity())
    bob = await relay.register(new_identity())
    group = mls.group(alice)
    before = relay.snapshot()
    problem(await relay.create_group(bob, group.group_info()), 400, "invalid-new-group")
    relay.assert_unchanged(before, nonce_used=True)


async def test_a_group_past_epoch_zero_is_refused(relay, mls, new_identity, problem):
    alice = await relay.register(new_identity())
    group = mls.group(alice)
    pending = group.commit(rng=mls.rng, force_path=True)
    group.merge(pending.staged)
    before = relay.snapshot()
    problem(await relay.create_group(alice, group.group_info()), 400, "invalid-new-group")
    relay.assert_unchanged(before, nonce_used=True)


async def test_a_group_of_another_cipher_suite_is_refused(relay, mls, identity, problem):
    # Suite 3 also signs with Ed25519, so the device key fits; only suite 1 is accepted.
    await relay.register(identity)
    group = mls.group(identity, suite_id=3)
    before = relay.snapshot()
    document = problem(
        await relay.create_group(identity, group.group_info()), 400, "invalid-new-group"
    )
    assert "cipher suite" in document["detail"]
    relay.assert_unchanged(before, nonce_used=True)


@pytest.mark.parametrize("length", [15, 65])
async def test_a_group_id_of_the_wrong_length_is_refused(relay, mls, identity, problem, length):
    await relay.register(identity)
    group = mls.group(identity, group_id=b"g" * length)
    before = relay.snapshot()
    problem(await relay.create_group(identity, group.group_info()), 400, "invalid-new-group")
    relay.assert_unchanged(before, nonce_used=True)


async def test_a_credential_that_is_not_the_device_key_is_refused(relay, mls, identity, problem):
    await relay.register(identity)
    bundle = generate_key_package(
        get_cipher_suite(1),
        credential=BasicCredential(b"a display name"),
        signature_private_key=identity.device_private,
        rng=mls.rng,
        lifetime=Lifetime(0, 2**64 - 1),
    )
    group = Group.create(bundle, group_id=mls.rng(32), rng=mls.rng)
    before = relay.snapshot()
    document = problem(
        await relay.create_group(identity, group.group_info()), 400, "invalid-group-info"
    )
    assert document["mls_error"] == "InvalidCredential"
    relay.assert_unchanged(before, nonce_used=True)


async def test_a_forged_group_info_is_refused(relay, mls, identity, problem):
    await relay.register(identity)
    group = mls.group(identity)
    before = relay.snapshot()
    document = problem(
        await relay.create_group(identity, flip(group.group_info())), 400, "invalid-group-info"
    )
    assert document["mls_error"] == "InvalidSignature"
    assert document["rfc_section"].startswith("RFC 9420")
    relay.assert_unchanged(before, nonce_used=True)


@pytest.mark.parametrize("what", ["garbage", "key-package", "truncated"])
async def test_a_group_info_that_is_not_one_is_refused(relay, mls, identity, problem, what):
    await relay.register(identity)
    group = mls.group(identity)
    data, code = {
        "garbage": (b"\x00\x01\x02", "malformed-mls"),
        "truncated": (group.group_info()[:-5], "malformed-mls"),
        "key-package": (
            MLSMessage(
                mls.bundle(identity).key_package.version, mls.bundle(identity).key_package
            ).encode(),
            "unexpected-message",
        ),
    }[what]
    before = relay.snapshot()
    problem(await relay.create_group(identity, data), 400, code)
    relay.assert_unchanged(before, nonce_used=True)


# -- Adding a member, Welcomes, application messages ------------------------------------


async def test_add_a_member_then_both_talk(relay, mls, new_identity):
    alice, bob, group_a, group_b = await two_member_group(relay, mls, new_identity)
    assert group_b.epoch == group_a.epoch == 1
    hello = group_a.encrypt(b"hello bob", rng=mls.rng)
    reply = group_b.encrypt("你好".encode(), rng=mls.rng)
    first = await relay.post(alice, group_a.group_id, hello)
    second = await relay.post(bob, group_a.group_id, reply)
    assert (first.status_code, second.status_code) == (201, 201)
    assert first.json() == {"seq": 2, "epoch": 1, "kind": "application", "duplicate": False}
    assert second.json()["seq"] == 3

    # Bob was added by the commit at seq 1: he is served what comes after it.
    assert await relay.messages(bob, group_a.group_id) == [hello, reply]
    assert group_b.process(hello).data == b"hello bob"
    everything = await relay.messages(alice, group_a.group_id)
    assert len(everything) == 3
    assert group_a.process(everything[2]).data == "你好".encode()


async def test_a_welcome_waits_until_the_cursor_passes_its_commit(relay, mls, new_identity):
    alice, bob, group_a, _ = await two_member_group(relay, mls, new_identity)
    (welcome,) = await relay.welcomes(bob)
    assert welcome["group_id"] == b64u(group_a.group_id)
    assert (welcome["commit_seq"], welcome["epoch"]) == (1, 1)
    assert await relay.welcomes(alice) == []
    response = await relay.ack(bob, group_a.group_id, 1)
    assert response.json() == {"seq": 1}
    assert await relay.welcomes(bob) == []
    assert relay.snapshot()["welcomes"] == []


async def test_the_cursor_only_moves_forward(relay, mls, new_identity, problem):
    alice, _, group_a, _ = await two_member_group(relay, mls, new_identity)
    await relay.post(alice, group_a.group_id, group_a.encrypt(b"x", rng=mls.rng))
    assert (await relay.ack(alice, group_a.group_id, 2)).json() == {"seq": 2}
    assert (await relay.ack(alice, group_a.group_id, 1)).json() == {"seq": 2}
    before = relay.snapshot()
    problem(await relay.ack(alice, group_a.group_id, 3), 409, "cursor-ahead")
    relay.assert_unchanged(before, nonce_used=True)


async def test_fetch_pages_through_the_log(relay, mls, new_identity):
    alice, _, group_a, _ = await two_member_group(relay, mls, new_identity)
    sent = [group_a.encrypt(bytes([i]), rng=mls.rng) for i in range(5)]
    for message in sent:
        assert (await relay.post(alice, group_a.group_id, message)).status_code == 201
    page = (await relay.fetch(alice, group_a.group_id, after=1, limit=2)).json()
    assert [m["seq"] for m in page["messages"]] == [2, 3]
    assert (page["epoch"], page["last_seq"]) == (1, 6)
    page = (await relay.fetch(alice, group_a.group_id, after=3, limit=500)).json()
    assert [auth.decode_b64u(m["message"]) for m in page["messages"]] == sent[2:]
    assert all(m["kind"] == "application" for m in page["messages"])


@pytest.mark.parametrize("query", ["?limit=0", "?limit=501", "?after=-1", "?after=x"])
async def test_a_malformed_fetch_is_refused(relay, mls, new_identity, problem, query):
    alice, _, group_a, _ = await two_member_group(relay, mls, new_identity)
    response = await relay.client.get(
        f"/v1/groups/{b64u(group_a.group_id)}/messages{query}", auth=relay.signer(alice)
    )
    problem(response, 400, "invalid-request")


async def test_a_retry_is_stored_once(relay, mls, new_identity):
    alice, _, group_a, _ = await two_member_group(relay, mls, new_identity)
    message_id = secrets.token_bytes(16)
    message = group_a.encrypt(b"once", rng=mls.rng)
    first = await relay.post(alice, group_a.group_id, message, message_id=message_id)
    assert first.status_code == 201
    before = relay.snapshot()
    # A retry, even re-encrypted, answers the original and stores nothing.
    again = group_a.encrypt(b"once", rng=mls.rng)
    retry = await relay.post(alice, group_a.group_id, again, message_id=message_id)
    assert retry.status_code == 200
    assert retry.json() == {**first.json(), "duplicate": True}
    relay.assert_unchanged(before, nonce_used=True)
    assert await relay.messages(alice, group_a.group_id, after=1) == [message]


async def test_concurrent_retries_are_stored_once(relay, mls, new_identity, second_relay):
    alice, _, group_a, _ = await two_member_group(relay, mls, new_identity)
    message_id = secrets.token_bytes(16)
    message = group_a.encrypt(b"once", rng=mls.rng)
    async with second_relay() as other:
        responses = await asyncio.gather(
            *(
                (relay if i % 2 else other).post(
                    alice, group_a.group_id, message, message_id=message_id
                )
                for i in range(6)
            )
        )
    assert sorted(r.status_code for r in responses) == [200] * 5 + [201]
    assert {r.json()["seq"] for r in responses} == {2}
    assert await relay.messages(alice, group_a.group_id, after=1) == [message]


async def test_a_message_id_used_in_another_group_is_refused(relay, mls, new_identity, problem):
    alice, _, group_a, _ = await two_member_group(relay, mls, new_identity)
    other = await new_group(relay, mls, alice)
    message_id = secrets.token_bytes(16)
    await relay.post(
        alice, group_a.group_id, group_a.encrypt(b"a", rng=mls.rng), message_id=message_id
    )
    before = relay.snapshot()
    response = await relay.post(
        alice, other.group_id, other.encrypt(b"b", rng=mls.rng), message_id=message_id
    )
    problem(response, 409, "message-id-reused")
    relay.assert_unchanged(before, nonce_used=True)


async def test_a_stale_application_message_is_refused(relay, mls, new_identity, problem):
    alice, bob, group_a, group_b = await two_member_group(relay, mls, new_identity)
    late = group_b.encrypt(b"sent at epoch 1", rng=mls.rng)
    pending = group_a.commit(rng=mls.rng, force_path=True)
    assert (await relay.post_commit(alice, pending)).status_code == 201
    before = relay.snapshot()
    document = problem(await relay.post(bob, group_a.group_id, late), 409, "stale-epoch")
    assert document["epoch"] == 2
    relay.assert_unchanged(before, nonce_used=True)


async def test_a_message_for_another_group_is_refused(relay, mls, new_identity, problem):
    alice, _, group_a, _ = await two_member_group(relay, mls, new_identity)
    other = await new_group(relay, mls, alice)
    before = relay.snapshot()
    response = await relay.post(alice, other.group_id, group_a.encrypt(b"x", rng=mls.rng))
    problem(response, 400, "group-mismatch")
    relay.assert_unchanged(before, nonce_used=True)


# -- Who may post and read -----------------------------------------------------------------


async def test_a_non_member_can_neither_post_nor_read(relay, mls, new_identity, problem):
    _alice, _, group_a, _ = await two_member_group(relay, mls, new_identity)
    carol = await relay.register(new_identity())
    group_id = group_a.group_id
    message = group_a.encrypt(b"not carol's", rng=mls.rng)
    pending = group_a.commit(rng=mls.rng, force_path=True)
    before = relay.snapshot()
    problem(await relay.post(carol, group_id, message), 403, "not-a-member")
    problem(await relay.post_commit(carol, pending), 403, "not-a-member")
    problem(await relay.fetch(carol, group_id), 403, "not-a-member")
    problem(await relay.ack(carol, group_id, 0), 403, "not-a-member")
    info = await relay.client.get(
        f"/v1/groups/{b64u(group_id)}/group-info", auth=relay.signer(carol)
    )
    problem(info, 403, "not-a-member")
    relay.assert_only_nonces_changed(before)


async def test_an_unknown_group_is_not_found(relay, mls, new_identity, problem):
    alice = await relay.register(new_identity())
    group = mls.group(alice)  # never uploaded
    group_id = group.group_id
    before = relay.snapshot()
    problem(
        await relay.post(alice, group_id, group.encrypt(b"x", rng=mls.rng)), 404, "unknown-group"
    )
    pending = group.commit(rng=mls.rng, force_path=True)
    problem(await relay.post_commit(alice, pending), 404, "unknown-group")
    problem(await relay.fetch(alice, group_id), 404, "unknown-group")
    problem(await relay.ack(alice, group_id, 0), 404, "unknown-group")
    info = await relay.client.get(
        f"/v1/groups/{b64u(group_id)}/group-info", auth=relay.signer(alice)
    )
    problem(info, 404, "unknown-group")
    relay.assert_only_nonces_changed(before)


@pytest.mark.parametrize("path", ["AAAA", "A" * 87, "AAAAAAAAAAAAAAAAAAAAAB"])
async def test_a_malformed_group_id_is_refused(relay, identity, problem, path):
    await relay.register(identity)
    response = await relay.client.get(f"/v1/groups/{path}/messages", auth=relay.signer(identity))
    problem(response, 400, "invalid-request")


async def test_a_handshake_signed_by_another_member_is_refused(relay, mls, new_identity, problem):
    _alice, bob, group_a, _ = await two_member_group(relay, mls, new_identity)
    pending = group_a.commit(rng=mls.rng, force_path=True)
    before = relay.snapshot()
    problem(await relay.post_commit(bob, pending), 403, "sender-mismatch")
    relay.assert_unchanged(before, nonce_used=True)


async def test_a_removed_member_stops_receiving(relay, mls, new_identity, problem):
    alice, bob, group_a, group_b = await two_member_group(relay, mls, new_identity)
    assert (await relay.ack(bob, group_a.group_id, 1)).status_code == 200
    pending = group_a.commit(rng=mls.rng, proposals=[Remove(group_b.own_leaf)])
    response = await relay.post_commit(alice, pending)
    assert response.status_code == 201, response.text
    group_a.merge(pending.staged)
    await relay.post(alice, group_a.group_id, group_a.encrypt(b"after bob", rng=mls.rng))
    problem(await relay.fetch(bob, group_a.group_id), 403, "not-a-member")
    problem(
        await relay.post(bob, group_a.group_id, group_b.encrypt(b"x", rng=mls.rng)),
        403,
        "not-a-member",
    )
    state = relay.snapshot()
    assert [row[1] for row in state["group_devices"]] == [alice.device_key]
    assert state["cursors"] == []


# -- Commits -------------------------------------------------------------------------------


async def test_the_first_commit_for_an_epoch_wins(relay, mls, new_identity, problem):
    alice, bob, group_a, group_b = await two_member_group(relay, mls, new_identity)
    winner = group_a.commit(rng=mls.rng, force_path=True)
    loser = group_b.commit(rng=mls.rng, force_path=True)
    assert (await relay.post_commit(alice, winner)).status_code == 201
    before = relay.snapshot()
    document = problem(await relay.post_commit(bob, loser), 409, "commit-conflict")
    assert document["epoch"] == 2
    assert document["winner"] == {"seq": 2, "epoch": 1, "message": b64u(winner.commit)}
    relay.assert_unchanged(before, nonce_used=True)

    # The loser processes the winner and commits again, at the next epoch.
    group_b.discard_pending_commit()
    group_b.merge(group_b.process(auth.decode_b64u(document["winner"]["message"])))
    group_a.merge(winner.staged)
    retry = group_b.commit(rng=mls.rng, force_path=True)
    assert (await relay.post_commit(bob, retry)).json()["epoch"] == 2


async def test_two_relays_racing_for_one_epoch_agree_on_one_winner(
    relay, mls, new_identity, second_relay
):
    # Two store handles on one database, as two relay processes.
    alice, bob, group_a, group_b = await two_member_group(relay, mls, new_identity)
    commits = [
        group_a.commit(rng=mls.rng, force_path=True),
        group_b.commit(rng=mls.rng, force_path=True),
    ]
    async with second_relay() as other:
        responses = await asyncio.gather(
            relay.post_commit(alice, commits[0]), other.post_commit(bob, commits[1])
        )
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [201, 409]
    won = next(i for i, r in enumerate(responses) if r.status_code == 201)
    lost = responses[1 - won].json()
    assert lost["code"] == "commit-conflict"
    assert lost["winner"]["message"] == b64u(commits[won].commit)
    assert lost["winner"]["seq"] == responses[won].json()["seq"] == 2
    log = relay.snapshot()["group_log"]
    assert [row[4] for row in log if row[1] == group_a.group_id] == ["commit", "commit"]


async def test_a_retried_commit_answers_the_original(relay, mls, new_identity):
    alice, _, group_a, _ = await two_member_group(relay, mls, new_identity)
    message_id = secrets.token_bytes(16)
    pending = group_a.commit(rng=mls.rng, force_path=True)
    first = await relay.post_commit(alice, pending, message_id=message_id)
    retry = await relay.post_commit(alice, pending, message_id=message_id)
    assert (first.status_code, retry.status_code) == (201, 200)
    assert retry.json() == {**first.json(), "duplicate": True}


async def test_concurrent_retries_of_a_commit_answer_the_original(
    relay, mls, new_identity, second_relay
):
    # The retry must not be told it lost to itself, whichever relay it reaches.
    alice, _, group_a, _ = await two_member_group(relay, mls, new_identity)
    message_id = secrets.token_bytes(16)
    pending = group_a.commit(rng=mls.rng, force_path=True)
    async with second_relay() as other:
        responses = await asyncio.gather(
            *(
                (relay if i % 2 else other).post_commit(alice, pending, message_id=message_id)
                for i in range(4)
            )
        )
    assert sorted(r.status_code for r in responses) == [200, 200, 200, 201]
    assert {r.json()["seq"] for r in responses} == {2}


async def test_a_commit_with_a_forged_signature_is_refused(relay, mls, new_identity, problem):
    alice, _, group_a, _ = await two_member_group(relay, mls, new_identity)
    pending = group_a.commit(rng=mls.rng, force_path=True)
    message = MLSMessage.decode(pending.commit)
    forged = replace(message.body, signature=flip(message.body.signature))
    before = relay.snapshot()
    response = await relay.post(
        alice,
        group_a.group_id,
        MLSMessage(message.version, forged).encode(),
        group_info=pending.group_info,
    )
    document = problem(response, 400, "invalid-commit")
    assert document["mls_error"] == "InvalidSignature"
    relay.assert_unchanged(before, nonce_used=True)


async def test_malformed_mls_bytes_are_refused(relay, mls, new_identity, problem):
    alice, _, group_a, _ = await two_member_group(relay, mls, new_identity)
    before = relay.snapshot()
    for data in (b"", b"\x00\x01", group_a.encrypt(b"x", rng=mls.rng)[:-3]):
        problem(await relay.post(alice, group_a.group_id, data), 400, "malformed-mls")
    relay.assert_only_nonces_changed(before)


async def test_a_group_info_that_is_not_the_commits_is_refused(relay, mls, new_identity, problem):
    alice, _, group_a, _ = await two_member_group(relay, mls, new_identity)
    pending = group_a.commit(rng=mls.rng, force_path=True)
    before = relay.snapshot()
    # The current epoch's GroupInfo, not the one the commit creates.
    response = await relay.post(
        alice, group_a.group_id, pending.commit, group_info=group_a.group_info()
    )
    document = problem(response, 400, "invalid-group-info")
    assert document["mls_error"] == "GroupInfoMismatch"
    relay.assert_unchanged(before, nonce_used=True)
    response = await relay.post(alice, group_a.group_id, pending.commit, group_info=b"\x00")
    problem(response, 400, "malformed-mls")


async def test_a_commit_needs_its_group_info(relay, mls, new_identity, problem):
    alice, _, group_a, _ = await two_member_group(relay, mls, new_identity)
    pending = group_a.commit(rng=mls.rng, force_path=True)
    before = relay.snapshot()
    problem(await relay.post(alice, group_a.group_id, pending.commit), 400, "invalid-request")
    message = group_a.encrypt(b"x", rng=mls.rng)
    response = await relay.post(alice, group_a.group_id, message, group_info=pending.group_info)
    problem(response, 400, "invalid-request")
    relay.assert_only_nonces_changed(before)


async def test_the_welcome_must_be_for_exactly_the_added_members(relay, mls, new_identity, problem):
    alice, _, group_a, _ = await two_member_group(relay, mls, new_identity)
    carol = await relay.register(new_identity())
    dave = await relay.register(new_identity())
    adds_carol = group_a.commit(rng=mls.rng, proposals=[Add(mls.bundle(carol).key_package)])
    group_a.discard_pending_commit()
    adds_dave = group_a.commit(rng=mls.rng, proposals=[Add(mls.bundle(dave).key_package)])
    before = relay.snapshot()
    cases = [
        (adds_carol.commit, None, adds_carol.group_info, "welcome-mismatch"),
        (adds_carol.commit, adds_dave.welcome, adds_carol.group_info, "welcome-mismatch"),
        (adds_carol.commit, adds_carol.group_info, adds_carol.group_info, "unexpected-message"),
        (adds_carol.commit, b"\x00", adds_carol.group_info, "malformed-mls"),
    ]
    for commit, welcome, group_info, code in cases:
        response = await relay.post(
            alice, group_a.group_id, commit, welcome=welcome, group_info=group_info
        )
        problem(response, 400, code)
    force = group_a.commit(rng=mls.rng, force_path=True)
    response = await relay.post(
        alice,
        group_a.group_id,
        force.commit,
        welcome=adds_carol.welcome,
        group_info=force.group_info,
    )
    problem(response, 400, "welcome-mismatch")
    relay.assert_only_nonces_changed(before)


async def test_adding_a_device_that_is_not_registered_is_refused(relay, mls, new_identity, problem):
    alice, _, group_a, _ = await two_member_group(relay, mls, new_identity)
    stranger = new_identity()  # never registered
    pending = group_a.commit(rng=mls.rng, proposals=[Add(mls.bundle(stranger).key_package)])
    before = relay.snapshot()
    problem(await relay.post_commit(alice, pending), 422, "unknown-member-device")
    relay.assert_unchanged(before, nonce_used=True)
    # The relay's view is back at the stored epoch: a valid commit still goes through.
    group_a.discard_pending_commit()
    retry = group_a.commit(rng=mls.rng, force_path=True)
    assert (await relay.post_commit(alice, retry)).status_code == 201


async def test_a_private_handshake_is_refused(relay, mls, identity, problem):
    await relay.register(identity)
    group = await new_group(relay, mls, identity, config=GroupConfig(public_handshake=False))
    pending = group.commit(rng=mls.rng, force_path=True)
    before = relay.snapshot()
    response = await relay.post(
        identity, group.group_id, pending.commit, group_info=pending.group_info
    )
    problem(response, 400, "unexpected-message")
    relay.assert_unchanged(before, nonce_used=True)


class NoRemovals:
    """A policy hook that refuses every Remove, as the admin work's will for non-admins."""

    def check_commit(self, group, commit, *, committer):
        if commit.removed:
            raise Forbidden("only admins remove members")

    def check_proposal(self, group, proposal, *, sender):
        if isinstance(proposal.proposal, Remove):
            raise Forbidden("only admins remove members")


async def test_the_policy_hook_can_refuse_a_commit_or_proposal(
    relay_with, mls, new_identity, problem
):
    async with relay_with(policy=NoRemovals()) as relay:
        alice, _, group_a, group_b = await two_member_group(relay, mls, new_identity)
        pending = group_a.commit(rng=mls.rng, proposals=[Remove(group_b.own_leaf)])
        before = relay.snapshot()
        problem(await relay.post_commit(alice, pending), 403, "forbidden")
        leave = group_a.propose(Remove(group_b.own_leaf), rng=mls.rng)
        problem(await relay.post(alice, group_a.group_id, leave), 403, "forbidden")
        relay.assert_only_nonces_changed(before)
        # Alice's client still holds her refused proposal: she commits without it.
        group_a.discard_pending_commit()
        fresh = group_a.commit(rng=mls.rng, force_path=True, by_reference=[])
        assert (await relay.post_commit(alice, fresh)).status_code == 201


# -- Proposals -----------------------------------------------------------------------------


async def test_a_member_proposes_to_leave_and_another_commits_it(relay, mls, new_identity):
    alice, bob, group_a, group_b = await two_member_group(relay, mls, new_identity)
    leave = group_b.propose(Remove(group_b.own_leaf), rng=mls.rng)
    response = await relay.post(bob, group_a.group_id, leave)
    assert response.json() == {"seq": 2, "epoch": 1, "kind": "proposal", "duplicate": False}
    (proposal,) = await relay.messages(alice, group_a.group_id, after=1)
    group_a.process(proposal)
    pending = group_a.commit(rng=mls.rng)
    response = await relay.post_commit(alice, pending)
    assert response.status_code == 201, response.text
    state = relay.snapshot()
    assert [row[1] for row in state["group_devices"]] == [alice.device_key]


async def test_a_proposal_stored_by_another_relay_is_known_to_this_one(
    relay, mls, new_identity, second_relay
):
    alice, bob, group_a, group_b = await two_member_group(relay, mls, new_identity)
    # This relay has the group's view cached at epoch 1; the proposal goes through the other.
    async with second_relay() as other:
        leave = group_b.propose(Remove(group_b.own_leaf), rng=mls.rng)
        assert (await other.post(bob, group_a.group_id, leave)).status_code == 201
    group_a.process(leave)
    pending = group_a.commit(rng=mls.rng)
    response = await relay.post_commit(alice, pending)
    assert response.status_code == 201, response.text


async def test_an_invalid_proposal_is_refused(relay, mls, new_identity, problem):
    alice, _, group_a, _ = await two_member_group(relay, mls, new_identity)
    bad = group_a.propose(Remove(7), rng=mls.rng)
    before = relay.snapshot()
    document = problem(await relay.post(alice, group_a.group_id, bad), 400, "invalid-proposal")
    assert document["mls_error"] == "InvalidProposal"
    relay.assert_unchanged(before, nonce_used=True)


async def test_an_oversized_body_is_refused(relay, mls, new_identity, problem, limits):
    alice, _, group_a, _ = await two_member_group(relay, mls, new_identity)
    message = group_a.encrypt(b"x" * limits.max_body_bytes, rng=mls.rng)
    before = relay.snapshot()
    problem(await relay.post(alice, group_a.group_id, message), 413, "body-too-large")
    relay.assert_unchanged(before, nonce_used=False)

"""
Invites and external commits over HTTP, with real MLS traffic.

A member creates an invite (its public key, the GroupInfo sealed under the
link secret's key, an expiry, a use count); a newcomer's registered device
reads it, opens the GroupInfo, and joins by an external commit signed with
the invite key. Every refused request leaves the store as it was.
"""

from __future__ import annotations

import secrets
from types import SimpleNamespace
from typing import Any

import pytest

from townsquare import auth
from townsquare.auth import invites
from townsquare.mls.credentials import BasicCredential
from townsquare.mls.group import Group
from townsquare.mls.proposals import Remove
from townsquare.server.delivery import _check_external
from townsquare.server.errors import ExternalCommitRefused

from .test_delivery import two_member_group

pytestmark = pytest.mark.anyio

DAY = 86_400


def b64u(data: bytes) -> str:
    return auth.encode_b64u(data)


async def create_invite(
    relay, identity, group: Group, *, expires_in: int = DAY, max_uses: int = 5
) -> tuple[invites.InviteKeys, Any]:
    keys = invites.derive_invite_keys(invites.generate_invite_secret())
    sealed = invites.seal_group_info(keys, group.group_id, group.group_info())
    response = await relay.client.post(
        f"/v1/groups/{b64u(group.group_id)}/invites",
        json={
            "invite_key": b64u(keys.signing_public_key),
            "sealed_group_info": b64u(sealed),
            "expires_at": relay.clock.now() + expires_in,
            "max_uses": max_uses,
        },
        auth=relay.signer(identity),
    )
    return keys, response


async def read_invite(relay, identity, group_id: bytes, keys: invites.InviteKeys):
    return await relay.client.get(
        f"/v1/groups/{b64u(group_id)}/invites/{b64u(keys.signing_public_key)}",
        auth=relay.signer(identity),
    )


def external_join(mls, identity, group_info: bytes) -> Any:
    return Group.join_external(
        group_info,
        credential=BasicCredential(identity.device_key),
        signature_private_key=identity.device_private,
        rng=mls.rng,
    )


async def post_external(
    relay, identity, group_id: bytes, join, keys: invites.InviteKeys | None, *, signature=None
):
    body: dict[str, Any] = {
        "client_message_id": b64u(secrets.token_bytes(16)),
        "message": b64u(join.commit),
        "group_info": b64u(join.group.group_info()),
    }
    if keys is not None:
        body["invite_key"] = b64u(keys.signing_public_key)
        body["invite_signature"] = b64u(
            signature if signature is not None else invites.sign_external_commit(keys, join.commit)
        )
    return await relay.client.post(
        f"/v1/groups/{b64u(group_id)}/messages", json=body, auth=relay.signer(identity)
    )


async def join_by_invite(relay, mls, newcomer, group_id, keys):
    response = await read_invite(relay, newcomer, group_id, keys)
    assert response.status_code == 200, response.text
    sealed = auth.decode_b64u(response.json()["sealed_group_info"])
    group_info, tree = invites.open_group_info(keys, group_id, sealed)
    assert tree == b""
    join = external_join(mls, newcomer, group_info)
    return join, await post_external(relay, newcomer, group_id, join, keys)


async def test_a_newcomer_joins_by_invite_and_talks(relay, mls, new_identity):
    alice, _bob, group_a, group_b = await two_member_group(relay, mls, new_identity)
    keys, response = await create_invite(relay, alice, group_a, max_uses=2)
    assert response.status_code == 201, response.text
    assert response.json()["uses"] == 0
    carol = await relay.register(new_identity())

    join, response = await join_by_invite(relay, mls, carol, group_a.group_id, keys)
    assert response.status_code == 201, response.text
    assert response.json()["kind"] == "commit"
    group_c = join.group
    # The members process the external commit and reach the same epoch.
    (commit,) = await relay.messages(alice, group_a.group_id, after=1)
    group_a.merge(group_a.process(commit))
    group_b.merge(group_b.process(commit))
    assert (
        group_a.epoch_authenticator == group_c.epoch_authenticator == (group_b.epoch_authenticator)
    )
    # The relay counts the use and delivers to Carol after her commit.
    invite = await read_invite(relay, carol, group_a.group_id, keys)
    assert invite.json()["uses"] == 1
    hello = group_c.encrypt(b"hello", rng=mls.rng)
    assert (await relay.post(carol, group_a.group_id, hello)).status_code == 201
    assert await relay.messages(carol, group_a.group_id) == [hello]
    assert group_a.process(hello).data == b"hello"


async def test_members_refresh_the_sealed_group_info(relay, mls, new_identity, problem):
    alice, bob, group_a, _group_b = await two_member_group(relay, mls, new_identity)
    keys, _ = await create_invite(relay, alice, group_a)
    pending = group_a.commit(rng=mls.rng)
    assert (await relay.post_commit(alice, pending)).status_code == 201
    group_a.merge(pending.staged)
    sealed = invites.seal_group_info(keys, group_a.group_id, group_a.group_info())
    url = f"/v1/groups/{b64u(group_a.group_id)}/invites/{b64u(keys.signing_public_key)}"
    response = await relay.client.put(
        url, json={"sealed_group_info": b64u(sealed)}, auth=relay.signer(alice)
    )
    assert response.status_code == 200, response.text
    assert auth.decode_b64u(response.json()["sealed_group_info"]) == sealed
    # A stranger may read an invite but not refresh it.
    dave = await relay.register(new_identity())
    response = await relay.client.put(
        url, json={"sealed_group_info": b64u(sealed)}, auth=relay.signer(dave)
    )
    problem(response, 403, "not-a-member")
    carol = await relay.register(new_identity())
    _, response = await join_by_invite(relay, mls, carol, group_a.group_id, keys)
    assert response.status_code == 201, response.text
    del bob


async def test_an_expired_invite_is_refused(relay, mls, new_identity, problem):
    alice, _, group_a, _ = await two_member_group(relay, mls, new_identity)
    keys, _ = await create_invite(relay, alice, group_a, expires_in=60)
    carol = await relay.register(new_identity())
    join = external_join(mls, carol, group_a.group_info())
    relay.clock.advance(61)
    before = relay.snapshot()
    problem(await read_invite(relay, carol, group_a.group_id, keys), 403, "invite-expired")
    response = await post_external(relay, carol, group_a.group_id, join, keys)
    problem(response, 403, "invite-expired")
    relay.assert_only_nonces_changed(before)


async def test_a_used_up_invite_is_refused(relay, mls, new_identity, problem):
    alice, _, group_a, group_b = await two_member_group(relay, mls, new_identity)
    keys, _ = await create_invite(relay, alice, group_a, max_uses=1)
    carol = await relay.register(new_identity())
    _, response = await join_by_invite(relay, mls, carol, group_a.group_id, keys)
    assert response.status_code == 201, response.text
    (commit,) = await relay.messages(alice, group_a.group_id, after=1)
    group_a.merge(group_a.process(commit))
    dave = await relay.register(new_identity())
    join = external_join(mls, dave, group_a.group_info())
    before = relay.snapshot()
    problem(await read_invite(relay, dave, group_a.group_id, keys), 403, "invite-used-up")
    problem(await post_external(relay, dave, group_a.group_id, join, keys), 403, "invite-used-up")
    relay.assert_only_nonces_changed(before)
    del group_b


async def test_a_reset_invite_is_refused(relay, mls, new_identity, problem):
    alice, bob, group_a, _ = await two_member_group(relay, mls, new_identity)
    keys, _ = await create_invite(relay, alice, group_a)
    other, _ = await create_invite(relay, alice, group_a)
    response = await relay.client.delete(
        f"/v1/groups/{b64u(group_a.group_id)}/invites", auth=relay.signer(bob)
    )
    assert response.status_code == 200, response.text
    assert response.json() == {"revoked": 2}
    carol = await relay.register(new_identity())
    join = external_join(mls, carol, group_a.group_info())
    before = relay.snapshot()
    problem(await read_invite(relay, carol, group_a.group_id, keys), 404, "invite-not-found")
    response = await post_external(relay, carol, group_a.group_id, join, keys)
    problem(response, 404, "invite-not-found")
    relay.assert_only_nonces_changed(before)
    # A stranger cannot reset.
    response = await relay.client.delete(
        f"/v1/groups/{b64u(group_a.group_id)}/invites", auth=relay.signer(carol)
    )
    problem(response, 403, "not-a-member")
    del other


async def test_a_forged_invite_signature_is_refused(relay, mls, new_identity, problem):
    alice, _, group_a, _ = await two_member_group(relay, mls, new_identity)
    keys, _ = await create_invite(relay, alice, group_a)
    carol = await relay.register(new_identity())
    join = external_join(mls, carol, group_a.group_info())
    wrong = invites.derive_invite_keys(invites.generate_invite_secret())
    before = relay.snapshot()
    for signature in (
        invites.sign_external_commit(wrong, join.commit),
        auth.sign(keys.signing_private_key, join.commit),  # not domain separated
        invites.sign_external_commit(keys, join.commit + b"\x00"),
    ):
        response = await post_external(
            relay, carol, group_a.group_id, join, keys, signature=signature
        )
        problem(response, 403, "invite-signature-invalid")
    relay.assert_only_nonces_changed(before)


async def test_an_external_commit_without_invite_is_refused(relay, mls, new_identity, problem):
    _alice, _, group_a, _ = await two_member_group(relay, mls, new_identity)
    carol = await relay.register(new_identity())
    join = external_join(mls, carol, group_a.group_info())
    before = relay.snapshot()
    response = await post_external(relay, carol, group_a.group_id, join, None)
    problem(response, 403, "external-commit-refused")
    relay.assert_only_nonces_changed(before)


async def test_an_invite_of_another_group_is_refused(relay, mls, new_identity, problem):
    alice, _, group_a, _ = await two_member_group(relay, mls, new_identity)
    other_group = mls.group(alice)
    assert (await relay.create_group(alice, other_group.group_info())).status_code == 201
    keys, _ = await create_invite(relay, alice, other_group)
    carol = await relay.register(new_identity())
    join = external_join(mls, carol, group_a.group_info())
    before = relay.snapshot()
    response = await post_external(relay, carol, group_a.group_id, join, keys)
    problem(response, 404, "invite-not-found")
    relay.assert_only_nonces_changed(before)


async def test_removing_a_member_resets_the_invites(relay, mls, new_identity, problem):
    alice, bob, group_a, group_b = await two_member_group(relay, mls, new_identity)
    # Bob made the link; Alice removes him; his old link no longer works.
    keys, response = await create_invite(relay, bob, group_b)
    assert response.status_code == 201, response.text
    pending = group_a.commit(rng=mls.rng, proposals=[Remove(group_b.own_leaf)])
    assert (await relay.post_commit(alice, pending)).status_code == 201
    group_a.merge(pending.staged)
    eve = await relay.register(new_identity())
    join = external_join(mls, eve, group_a.group_info())
    before = relay.snapshot()
    problem(await read_invite(relay, eve, group_a.group_id, keys), 404, "invite-not-found")
    problem(await post_external(relay, eve, group_a.group_id, join, keys), 404, "invite-not-found")
    relay.assert_only_nonces_changed(before)


async def test_the_reset_on_remove_can_be_turned_off(relay, mls, new_identity, problem):
    alice, bob, group_a, group_b = await two_member_group(relay, mls, new_identity)
    response = await relay.client.put(
        f"/v1/groups/{b64u(group_a.group_id)}/invite-settings",
        json={"reset_invites_on_remove": False},
        auth=relay.signer(alice),
    )
    assert response.status_code == 200, response.text
    keys, _ = await create_invite(relay, alice, group_a)
    pending = group_a.commit(rng=mls.rng, proposals=[Remove(group_b.own_leaf)])
    assert (await relay.post_commit(alice, pending)).status_code == 201
    group_a.merge(pending.staged)
    carol = await relay.register(new_identity())
    assert (await read_invite(relay, carol, group_a.group_id, keys)).status_code == 200
    del bob


async def test_a_member_resyncs_without_an_invite(relay, mls, new_identity):
    alice, bob, group_a, group_b = await two_member_group(relay, mls, new_identity)
    hello = group_a.encrypt(b"before", rng=mls.rng)
    assert (await relay.post(alice, group_a.group_id, hello)).status_code == 201
    resync = Group.join_external(
        group_a.group_info(),
        credential=BasicCredential(bob.device_key),
        signature_private_key=bob.device_private,
        rng=mls.rng,
        resync_leaf=group_b.own_leaf,
    )
    response = await relay.post(
        bob, group_a.group_id, resync.commit, group_info=resync.group.group_info()
    )
    assert response.status_code == 201, response.text
    (_, commit) = await relay.messages(alice, group_a.group_id, after=1)
    group_a.merge(group_a.process(commit))
    assert group_a.epoch_authenticator == resync.group.epoch_authenticator
    # Bob is still served his whole log, from when he first joined.
    assert await relay.messages(bob, group_a.group_id) == [hello, commit]


async def test_an_external_commit_removing_someone_else_is_refused(
    relay, mls, new_identity, problem
):
    alice, bob, group_a, group_b = await two_member_group(relay, mls, new_identity)
    keys, _ = await create_invite(relay, alice, group_a)
    # Bob, then a stranger with the invite, post an external commit that
    # "resyncs" Alice's leaf.
    for poster in (bob, await relay.register(new_identity())):
        attack = Group.join_external(
            group_a.group_info(),
            credential=BasicCredential(poster.device_key),
            signature_private_key=poster.device_private,
            rng=mls.rng,
            resync_leaf=group_a.own_leaf,
        )
        before = relay.snapshot()
        response = await post_external(relay, poster, group_a.group_id, attack, keys)
        # MLS refuses it first (a resync keeps the removed leaf's credential).
        document = problem(response, 400, "invalid-commit")
        assert document["mls_error"] == "InvalidExternalCommit"
        relay.assert_only_nonces_changed(before)
    del group_b


async def test_an_external_commit_for_another_device_is_refused(relay, mls, new_identity, problem):
    alice, _, group_a, _ = await two_member_group(relay, mls, new_identity)
    keys, _ = await create_invite(relay, alice, group_a)
    carol = await relay.register(new_identity())
    mallory = await relay.register(new_identity())
    join = external_join(mls, carol, group_a.group_info())
    before = relay.snapshot()
    problem(
        await post_external(relay, mallory, group_a.group_id, join, keys), 403, "sender-mismatch"
    )
    relay.assert_only_nonces_changed(before)


async def test_invite_creation_is_checked(relay, mls, new_identity, problem):
    alice, _, group_a, _ = await two_member_group(relay, mls, new_identity)
    carol = await relay.register(new_identity())
    _, response = await create_invite(relay, carol, group_a)
    problem(response, 403, "not-a-member")
    _, response = await create_invite(relay, alice, group_a, expires_in=0)
    problem(response, 400, "invalid-request")
    keys, response = await create_invite(relay, alice, group_a)
    assert response.status_code == 201
    again = await relay.client.post(
        f"/v1/groups/{b64u(group_a.group_id)}/invites",
        json={
            "invite_key": b64u(keys.signing_public_key),
            "sealed_group_info": b64u(bytes(40)),
            "expires_at": relay.clock.now() + DAY,
            "max_uses": 1,
        },
        auth=relay.signer(alice),
    )
    problem(again, 409, "invite-exists")


async def test_an_invite_on_a_member_commit_is_refused(relay, mls, new_identity, problem):
    alice, _, group_a, _ = await two_member_group(relay, mls, new_identity)
    keys, _ = await create_invite(relay, alice, group_a)
    pending = group_a.commit(rng=mls.rng)
    body = {
        "client_message_id": b64u(secrets.token_bytes(16)),
        "message": b64u(pending.commit),
        "group_info": b64u(pending.group_info),
        "invite_key": b64u(keys.signing_public_key),
        "invite_signature": b64u(invites.sign_external_commit(keys, pending.commit)),
    }
    response = await relay.client.post(
        f"/v1/groups/{b64u(group_a.group_id)}/messages", json=body, auth=relay.signer(alice)
    )
    problem(response, 400, "invalid-request")


def test_the_relay_refuses_an_external_commit_removing_another_leaf():
    # Defence in depth behind MLS's own resync check: the relay's rule alone.
    mine, theirs = b"m" * 32, b"t" * 32

    def staged(*removed: bytes, resync: bool) -> Any:
        return SimpleNamespace(
            removed=tuple(SimpleNamespace(signature_key=key) for key in removed),
            resync=0 if resync else None,
        )

    _check_external(staged(mine, resync=True), mine, invited=False)
    _check_external(staged(resync=False), mine, invited=True)
    for bad, invited in (
        (staged(theirs, resync=True), True),
        (staged(theirs, resync=True), False),
        (staged(resync=False), False),
    ):
        with pytest.raises(ExternalCommitRefused):
            _check_external(bad, mine, invited=invited)

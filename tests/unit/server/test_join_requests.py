"""
Join requests to a group that requires an admin's approval, over HTTP with real MLS.

A newcomer with the link signs its KeyPackage and a sealed note with the invite
key; the relay keeps the request for the admins, refuses the newcomer's
external commit, and refuses every malformed or unauthorised request without
changing the store.
"""

from __future__ import annotations

import secrets

import pytest

from townsquare import auth
from townsquare.auth import invites
from townsquare.auth.group_policy import GroupPolicy
from townsquare.mls.framing import MLSMessage
from townsquare.mls.group import Group
from townsquare.mls.proposals import Add

from .test_authority import bundle
from .test_invites import create_invite, external_join, post_external

pytestmark = pytest.mark.anyio


def b64u(data: bytes) -> str:
    return auth.encode_b64u(data)


async def approving_group(relay, mls, new_identity, *, approval: bool = True):
    admin = await relay.register(new_identity())
    policy = GroupPolicy(admins=(admin.device_key,), approval_required=approval)
    group = Group.create(
        bundle(mls, admin), group_id=mls.rng(16), rng=mls.rng, extensions=(policy.extension(),)
    )
    response = await relay.create_group(admin, group.group_info())
    assert response.status_code == 201, response.text
    keys, response = await create_invite(relay, admin, group)
    assert response.status_code == 201, response.text
    return admin, group, keys


def request_body(mls, newcomer, group_id: bytes, keys, *, name: str = "小林") -> dict[str, str]:
    key_package = MLSMessage(version=1, body=bundle(mls, newcomer).key_package).encode()
    note = invites.seal_join_note(keys, group_id, name.encode(), nonce=secrets.token_bytes(12))
    signature = invites.sign_join_request(keys, group_id, key_package, note)
    return {
        "invite_key": b64u(keys.signing_public_key),
        "key_package": b64u(key_package),
        "sealed_note": b64u(note),
        "invite_signature": b64u(signature),
    }


async def ask(relay, who, group_id: bytes, body):
    return await relay.client.post(
        f"/v1/groups/{b64u(group_id)}/join-requests", json=body, auth=relay.signer(who)
    )


async def test_a_newcomer_asks_and_an_admin_adds_it(relay, mls, new_identity):
    admin, group, keys = await approving_group(relay, mls, new_identity)
    newcomer = await relay.register(new_identity())
    body = request_body(mls, newcomer, group.group_id, keys)
    answer = await ask(relay, newcomer, group.group_id, body)
    assert answer.status_code == 201, answer.text
    listed = await relay.client.get(
        f"/v1/groups/{b64u(group.group_id)}/join-requests", auth=relay.signer(admin)
    )
    (request,) = listed.json()["requests"]
    assert request["device_key"] == b64u(newcomer.device_key)
    note = invites.open_join_note(keys, group.group_id, auth.decode_b64u(request["sealed_note"]))
    assert note.decode() == "小林"
    # The admin adds the KeyPackage; the newcomer is a member and no longer listed.
    key_package = MLSMessage.decode(auth.decode_b64u(request["key_package"])).body
    pending = group.commit(rng=mls.rng, proposals=[Add(key_package)])  # type: ignore[arg-type]
    assert (await relay.post_commit(admin, pending)).status_code == 201
    listed = await relay.client.get(
        f"/v1/groups/{b64u(group.group_id)}/join-requests", auth=relay.signer(admin)
    )
    assert listed.json()["requests"] == []
    (welcome,) = await relay.welcomes(newcomer)
    assert auth.decode_b64u(welcome["group_id"]) == group.group_id


async def test_an_external_commit_by_invite_is_refused(relay, mls, new_identity, problem):
    _admin, group, keys = await approving_group(relay, mls, new_identity)
    newcomer = await relay.register(new_identity())
    join = external_join(mls, newcomer, group.group_info())
    before = relay.snapshot()
    answer = await post_external(relay, newcomer, group.group_id, join, keys)
    problem(answer, 403, "approval-required")
    relay.assert_unchanged(before, nonce_used=True)


async def test_bad_requests_change_nothing(relay, mls, new_identity, problem):
    admin, group, keys = await approving_group(relay, mls, new_identity)
    newcomer = await relay.register(new_identity())
    other = await relay.register(new_identity())
    good = request_body(mls, newcomer, group.group_id, keys)
    forged = {**good, "invite_signature": b64u(bytes(64))}
    stolen = request_body(mls, other, group.group_id, keys)  # another device's KeyPackage
    unknown_invite = {**good, "invite_key": b64u(auth.public_key(auth.generate_private_key()))}
    cases = [
        (forged, newcomer, 403, "invite-signature-invalid"),
        (stolen, newcomer, 422, "key-package-not-owned"),
        (unknown_invite, newcomer, 404, "invite-not-found"),
        ({**good, "sealed_note": b64u(b"short")}, newcomer, 400, "invalid-request"),
    ]
    for body, who, status, code in cases:
        before = relay.snapshot()
        problem(await ask(relay, who, group.group_id, body), status, code)
        relay.assert_unchanged(before, nonce_used=True)
    # Only admins list and deny; the asking device may withdraw.
    assert (await ask(relay, newcomer, group.group_id, good)).status_code == 201
    before = relay.snapshot()
    listed = await relay.client.get(
        f"/v1/groups/{b64u(group.group_id)}/join-requests", auth=relay.signer(newcomer)
    )
    problem(listed, 403, "not-a-member")
    relay.assert_unchanged(before, nonce_used=True)
    path = f"/v1/groups/{b64u(group.group_id)}/join-requests/{b64u(newcomer.device_key)}"
    before = relay.snapshot()
    problem(await relay.client.delete(path, auth=relay.signer(other)), 403, "not-a-member")
    relay.assert_unchanged(before, nonce_used=True)
    withdrawn = await relay.client.delete(path, auth=relay.signer(newcomer))
    assert withdrawn.json() == {"deleted": True}
    assert (await relay.client.delete(path, auth=relay.signer(admin))).json() == {"deleted": False}


async def test_a_group_without_approval_refuses_requests(relay, mls, new_identity, problem):
    _admin, group, keys = await approving_group(relay, mls, new_identity, approval=False)
    newcomer = await relay.register(new_identity())
    before = relay.snapshot()
    answer = await ask(
        relay, newcomer, group.group_id, request_body(mls, newcomer, group.group_id, keys)
    )
    problem(answer, 409, "approval-not-required")
    relay.assert_unchanged(before, nonce_used=True)


async def test_requests_are_bounded_per_group(relay_with, mls, new_identity, problem, limits):
    from dataclasses import replace

    async with relay_with(limits=replace(limits, max_join_requests_per_group=1)) as relay:
        _admin, group, keys = await approving_group(relay, mls, new_identity)
        first, second = [await relay.register(new_identity()) for _ in range(2)]
        body = request_body(mls, first, group.group_id, keys)
        assert (await ask(relay, first, group.group_id, body)).status_code == 201
        # The same device asking again replaces its request.
        body = request_body(mls, first, group.group_id, keys)
        assert (await ask(relay, first, group.group_id, body)).status_code == 201
        before = relay.snapshot()
        answer = await ask(
            relay, second, group.group_id, request_body(mls, second, group.group_id, keys)
        )
        problem(answer, 409, "join-requests-full")
        relay.assert_unchanged(before, nonce_used=True)


async def read_request(relay, who, group_id: bytes, device_key: bytes):
    return await relay.client.get(
        f"/v1/groups/{b64u(group_id)}/join-requests/{b64u(device_key)}", auth=relay.signer(who)
    )


async def test_the_newcomer_reads_its_request_until_it_is_denied(relay, mls, new_identity, problem):
    admin, group, keys = await approving_group(relay, mls, new_identity)
    newcomer = await relay.register(new_identity())
    body = request_body(mls, newcomer, group.group_id, keys)
    assert (await ask(relay, newcomer, group.group_id, body)).status_code == 201
    # Waiting: the newcomer sees its own request, as does the admin.
    for who in (newcomer, admin):
        answer = await read_request(relay, who, group.group_id, newcomer.device_key)
        assert answer.status_code == 200, answer.text
        assert answer.json()["device_key"] == b64u(newcomer.device_key)
        assert answer.json()["key_package"] == body["key_package"]
    # Denied: the admin deletes it, and the newcomer learns that it no longer waits.
    denied = await relay.client.delete(
        f"/v1/groups/{b64u(group.group_id)}/join-requests/{b64u(newcomer.device_key)}",
        auth=relay.signer(admin),
    )
    assert denied.json() == {"deleted": True}
    before = relay.snapshot()
    gone = await read_request(relay, newcomer, group.group_id, newcomer.device_key)
    problem(gone, 404, "join-request-not-found")
    relay.assert_unchanged(before, nonce_used=True)
    assert await relay.welcomes(newcomer) == []


async def test_a_request_answered_by_adding_the_device_no_longer_waits(
    relay, mls, new_identity, problem
):
    admin, group, keys = await approving_group(relay, mls, new_identity)
    newcomer = await relay.register(new_identity())
    body = request_body(mls, newcomer, group.group_id, keys)
    assert (await ask(relay, newcomer, group.group_id, body)).status_code == 201
    listed = await relay.client.get(
        f"/v1/groups/{b64u(group.group_id)}/join-requests", auth=relay.signer(admin)
    )
    (request,) = listed.json()["requests"]
    key_package = MLSMessage.decode(auth.decode_b64u(request["key_package"])).body
    pending = group.commit(rng=mls.rng, proposals=[Add(key_package)])  # type: ignore[arg-type]
    assert (await relay.post_commit(admin, pending)).status_code == 201
    # Added, the request not yet deleted by the admin: it no longer waits, and the
    # Welcome is there for the newcomer to fetch.
    gone = await read_request(relay, newcomer, group.group_id, newcomer.device_key)
    problem(gone, 404, "join-request-not-found")
    (welcome,) = await relay.welcomes(newcomer)
    assert auth.decode_b64u(welcome["group_id"]) == group.group_id


async def test_others_cannot_read_a_request(relay, mls, new_identity, problem):
    _admin, group, keys = await approving_group(relay, mls, new_identity)
    newcomer = await relay.register(new_identity())
    stranger = await relay.register(new_identity())
    body = request_body(mls, newcomer, group.group_id, keys)
    assert (await ask(relay, newcomer, group.group_id, body)).status_code == 201
    before = relay.snapshot()
    answer = await read_request(relay, stranger, group.group_id, newcomer.device_key)
    problem(answer, 403, "not-a-member")
    relay.assert_unchanged(before, nonce_used=True)
    unknown = await read_request(relay, newcomer, secrets.token_bytes(16), newcomer.device_key)
    problem(unknown, 404, "unknown-group")

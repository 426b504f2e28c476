"""
A group's admins and policy flags (``townsquare.auth.group_policy``), enforced by the relay.

Real MLS groups whose GroupContext carries the policy extension, over HTTP:
non-admins' Adds, Removes of others, GroupContextExtensions and invite
management are refused with 403 ``not-an-admin`` and change nothing in the
store; leaving, updates and admin changes go through.
"""

from __future__ import annotations

import pytest

from townsquare import auth
from townsquare.auth import invites
from townsquare.auth.group_policy import GROUP_POLICY_EXTENSION, GroupPolicy
from townsquare.client.core.device import device_capabilities
from townsquare.mls.ciphersuite import get_cipher_suite
from townsquare.mls.credentials import BasicCredential
from townsquare.mls.extensions import Extension
from townsquare.mls.group import Group
from townsquare.mls.key_package import KeyPackageBundle, generate_key_package
from townsquare.mls.leaf_node import Lifetime
from townsquare.mls.proposals import Add, GroupContextExtensions, Remove

pytestmark = pytest.mark.anyio

DAY = 86_400


def b64u(data: bytes) -> str:
    return auth.encode_b64u(data)


def bundle(mls, identity) -> KeyPackageBundle:
    """A device's KeyPackage whose leaf supports the policy extension, as the SDK makes."""
    suite = get_cipher_suite(1)
    made = generate_key_package(
        suite,
        credential=BasicCredential(identity.device_key),
        signature_private_key=identity.device_private,
        rng=mls.rng,
        lifetime=Lifetime(0, 2**64 - 1),
        capabilities=device_capabilities(suite),
    )
    mls.bundles[identity.device_key] = made
    return made


async def village(relay, mls, new_identity, *, members_can_add: bool = False):
    """Alice (admin) creates a group with the policy and adds Bob and Carol (not admins)."""
    alice, bob, carol = [await relay.register(new_identity()) for _ in range(3)]
    policy = GroupPolicy(admins=(alice.device_key,), members_can_add=members_can_add)
    group_a = Group.create(
        bundle(mls, alice), group_id=mls.rng(16), rng=mls.rng, extensions=(policy.extension(),)
    )
    response = await relay.create_group(alice, group_a.group_info())
    assert response.status_code == 201, response.text
    adds = [Add(bundle(mls, who).key_package) for who in (bob, carol)]
    pending = group_a.commit(rng=mls.rng, proposals=adds)
    assert (await relay.post_commit(alice, pending)).status_code == 201
    group_a.merge(pending.staged)
    groups = {alice.device_key: group_a}
    for who in (bob, carol):
        welcome = next(
            w
            for w in await relay.welcomes(who)
            if auth.decode_b64u(w["group_id"]) == group_a.group_id
        )
        groups[who.device_key] = mls.join(
            who,
            auth.decode_b64u(welcome["welcome"]),
            ratchet_tree=auth.decode_b64u(welcome["ratchet_tree"]),
        )
    return (alice, bob, carol), groups


def leaf_of(group: Group, identity) -> int:
    return next(
        int(m.leaf_index)
        for m in group.members()
        if m.leaf_node.signature_key == identity.device_key
    )


async def test_a_non_admin_cannot_add_remove_or_change_settings(relay, mls, new_identity, problem):
    (alice, bob, carol), groups = await village(relay, mls, new_identity)
    group_b = groups[bob.device_key]
    dave = await relay.register(new_identity())
    attempts = [
        [Add(bundle(mls, dave).key_package)],
        [Remove(leaf_of(group_b, alice))],
        [Remove(leaf_of(group_b, carol))],
        [GroupContextExtensions((GroupPolicy(admins=(bob.device_key,)).extension(),))],
    ]
    for proposals in attempts:
        before = relay.snapshot()
        pending = group_b.commit(rng=mls.rng, proposals=proposals)
        answer = await relay.post_commit(bob, pending)
        document = problem(answer, 403, "not-an-admin")
        assert "admin" in document["detail"]
        relay.assert_unchanged(before, nonce_used=True)
        group_b.discard_pending_commit()
    # The same proposals, sent as proposals, are refused too.
    for proposal in (Remove(leaf_of(group_b, carol)), Add(bundle(mls, dave).key_package)):
        before = relay.snapshot()
        answer = await relay.post(bob, group_b.group_id, group_b.propose(proposal, rng=mls.rng))
        problem(answer, 403, "not-an-admin")
        relay.assert_unchanged(before, nonce_used=True)


async def test_a_non_admin_commits_an_update_and_a_members_leave(relay, mls, new_identity):
    (alice, bob, carol), groups = await village(relay, mls, new_identity)
    group_b, group_c = groups[bob.device_key], groups[carol.device_key]
    # An empty commit with a path (new keys): anyone may.
    pending = group_b.commit(rng=mls.rng, force_path=True)
    assert (await relay.post_commit(bob, pending)).status_code == 201
    group_b.merge(pending.staged)
    groups[alice.device_key].merge(groups[alice.device_key].process(pending.commit))
    group_c.merge(group_c.process(pending.commit))
    # Carol proposes her own removal (leaving); Bob, not an admin, commits it.
    leave = group_c.propose(Remove(leaf_of(group_c, carol)), rng=mls.rng)
    assert (await relay.post(carol, group_c.group_id, leave)).status_code == 201
    group_b.process(leave)
    pending = group_b.commit(rng=mls.rng)
    answer = await relay.post_commit(bob, pending)
    assert answer.status_code == 201, answer.text
    group_b.merge(pending.staged)
    assert {m.leaf_node.signature_key for m in group_b.members()} == {
        alice.device_key,
        bob.device_key,
    }


async def test_an_admin_adds_and_promotes_then_the_new_admin_adds(relay, mls, new_identity):
    (alice, bob, _carol), groups = await village(relay, mls, new_identity)
    group_a, group_b = groups[alice.device_key], groups[bob.device_key]
    promoted = GroupPolicy(admins=(alice.device_key, bob.device_key))
    pending = group_a.commit(
        rng=mls.rng, proposals=[GroupContextExtensions((promoted.extension(),))]
    )
    answer = await relay.post_commit(alice, pending)
    assert answer.status_code == 201, answer.text
    group_a.merge(pending.staged)
    group_b.merge(group_b.process(pending.commit))
    dave = await relay.register(new_identity())
    pending = group_b.commit(rng=mls.rng, proposals=[Add(bundle(mls, dave).key_package)])
    answer = await relay.post_commit(bob, pending)
    assert answer.status_code == 201, answer.text


async def test_any_member_may_add_when_the_policy_says_so(relay, mls, new_identity):
    (_alice, bob, _carol), groups = await village(relay, mls, new_identity, members_can_add=True)
    dave = await relay.register(new_identity())
    group_b = groups[bob.device_key]
    pending = group_b.commit(rng=mls.rng, proposals=[Add(bundle(mls, dave).key_package)])
    answer = await relay.post_commit(bob, pending)
    assert answer.status_code == 201, answer.text


async def test_an_invalid_policy_is_refused(relay, mls, new_identity, problem):
    (alice, _bob, _carol), groups = await village(relay, mls, new_identity)
    group_a = groups[alice.device_key]
    before = relay.snapshot()
    # Flag 0x80 is unknown: a policy nobody can read must never take effect.
    bad = Extension(
        GROUP_POLICY_EXTENSION, GroupPolicy(admins=(alice.device_key,)).encode()[:-1] + b"\x80"
    )
    pending = group_a.commit(rng=mls.rng, proposals=[GroupContextExtensions((bad,))])
    problem(await relay.post_commit(alice, pending), 400, "invalid-commit")
    relay.assert_unchanged(before, nonce_used=True)


async def test_only_admins_manage_invites(relay, mls, new_identity, problem):
    (alice, bob, _carol), groups = await village(relay, mls, new_identity)
    group_id = groups[alice.device_key].group_id
    for who, status in ((bob, 403), (alice, 201)):
        keys = invites.derive_invite_keys(invites.generate_invite_secret())
        sealed = invites.seal_group_info(keys, group_id, groups[who.device_key].group_info())
        before = relay.snapshot()
        answer = await relay.client.post(
            f"/v1/groups/{b64u(group_id)}/invites",
            json={
                "invite_key": b64u(keys.signing_public_key),
                "sealed_group_info": b64u(sealed),
                "expires_at": relay.clock.now() + DAY,
                "max_uses": 3,
            },
            auth=relay.signer(who),
        )
        if status == 403:
            problem(answer, 403, "not-an-admin")
            relay.assert_unchanged(before, nonce_used=True)
        else:
            assert answer.status_code == 201, answer.text
    for path, method, body in (
        ("invites", "DELETE", None),
        ("invite-settings", "PUT", {"reset_invites_on_remove": False}),
    ):
        before = relay.snapshot()
        answer = await relay.client.request(
            method, f"/v1/groups/{b64u(group_id)}/{path}", json=body, auth=relay.signer(bob)
        )
        problem(answer, 403, "not-an-admin")
        relay.assert_unchanged(before, nonce_used=True)


async def test_when_every_admin_left_the_lowest_leaf_acts_as_admin(relay, mls, new_identity):
    (alice, bob, carol), groups = await village(relay, mls, new_identity)
    group_a, group_b, group_c = (groups[k.device_key] for k in (alice, bob, carol))
    # Alice leaves; Bob commits it. Bob (leaf 1) is now the lowest leaf.
    leave = group_a.propose(Remove(leaf_of(group_a, alice)), rng=mls.rng)
    assert (await relay.post(alice, group_a.group_id, leave)).status_code == 201
    group_b.process(leave)
    group_c.process(leave)
    pending = group_b.commit(rng=mls.rng)
    assert (await relay.post_commit(bob, pending)).status_code == 201
    group_b.merge(pending.staged)
    group_c.merge(group_c.process(pending.commit))
    dave = await relay.register(new_identity())
    # Carol (leaf 2) may not add; Bob may.
    pending = group_c.commit(rng=mls.rng, proposals=[Add(bundle(mls, dave).key_package)])
    assert (await relay.post_commit(carol, pending)).status_code == 403
    group_c.discard_pending_commit()
    pending = group_b.commit(rng=mls.rng, proposals=[Add(bundle(mls, dave).key_package)])
    answer = await relay.post_commit(bob, pending)
    assert answer.status_code == 201, answer.text

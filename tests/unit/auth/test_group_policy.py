"""
The group policy extension: its exact bytes, its validation, and the authority rules.
"""

from __future__ import annotations

import pytest

from townsquare.auth.group_policy import (
    GROUP_POLICY_EXTENSION,
    GroupPolicy,
    InvalidGroupPolicy,
    NotPermitted,
    check_commit,
    check_proposal,
    effective_admins,
    group_policy,
)
from townsquare.mls.extensions import Extension
from townsquare.mls.framing import MemberSender, NewMemberCommitSender
from townsquare.mls.proposal_list import SenderProposal
from townsquare.mls.proposals import (
    ExternalInit,
    GroupContextExtensions,
    PreSharedKey,
    Remove,
    Update,
)

A = bytes(range(32))
B = bytes(range(1, 33))
C = bytes(range(2, 34))
MEMBERS = {0: A, 1: B, 2: C}


def test_known_answer_bytes() -> None:
    # admins<V> = varint(64) || (varint(32) || A) || (varint(32) || B); flags = 0x03.
    policy = GroupPolicy(admins=(A, B), members_can_add=True, approval_required=True)
    encoded = policy.encode()
    assert encoded == bytes([0x40, 0x42, 0x20]) + A + bytes([0x20]) + B + bytes([0x03])
    assert GroupPolicy.decode(encoded) == policy
    assert GroupPolicy.decode(GroupPolicy(admins=()).encode()) == GroupPolicy(admins=())
    assert policy.extension() == Extension(GROUP_POLICY_EXTENSION, encoded)
    assert group_policy([Extension(0x0005, b""), policy.extension()]) == policy
    assert group_policy([]) is None


@pytest.mark.parametrize(
    "data",
    [
        b"",
        bytes([0x00]),  # no flags octet
        bytes([0x00, 0x04]),  # an unknown flag
        bytes([0x30, 0x20]) + A + bytes([0x00]),  # vector length past the data
        bytes([0x02, 0x01, 0x01, 0x00]),  # a 1-byte "key"
        bytes([0x42, 0x20]) + A + bytes([0x20]) + A + bytes([0x00]),  # the same admin twice
        GroupPolicy(admins=(A,)).encode() + b"\x00",  # trailing bytes
    ],
)
def test_invalid_policies_are_refused(data: bytes) -> None:
    with pytest.raises(InvalidGroupPolicy):
        GroupPolicy.decode(data)


def test_too_many_admins() -> None:
    with pytest.raises(InvalidGroupPolicy):
        GroupPolicy(admins=tuple(bytes([i]) * 32 for i in range(65)))


def _by(leaf: int, proposal) -> SenderProposal:  # type: ignore[no-untyped-def]
    return SenderProposal(proposal, MemberSender(leaf))


def test_admins_may_do_anything_non_admins_little() -> None:
    policy = GroupPolicy(admins=(A,))
    risky = [_by(1, Remove(2)), _by(1, GroupContextExtensions(()))]
    check_commit(policy, committer=A, members=MEMBERS, covered=risky, external=False)
    for item in risky:
        with pytest.raises(NotPermitted):
            check_commit(policy, committer=B, members=MEMBERS, covered=[item], external=False)
    # Allowed to anyone: updates, PSKs, a member's own removal (by its own proposal).
    fine = [
        _by(1, Update.__new__(Update)),
        _by(2, Remove(2)),
        _by(1, PreSharedKey.__new__(PreSharedKey)),
    ]
    check_commit(policy, committer=B, members=MEMBERS, covered=fine, external=False)
    # A Remove of Carol proposed by Bob is not Carol leaving.
    with pytest.raises(NotPermitted):
        check_commit(
            policy, committer=B, members=MEMBERS, covered=[_by(1, Remove(2))], external=False
        )
    # External commits follow the invite rules instead.
    external = [
        SenderProposal(ExternalInit(b"k"), NewMemberCommitSender()),
        SenderProposal(Remove(2), NewMemberCommitSender()),
    ]
    check_commit(policy, committer=b"", members=MEMBERS, covered=external, external=True)
    # No policy: no admins, everyone may.
    check_commit(None, committer=B, members=MEMBERS, covered=risky, external=False)


def test_proposals_follow_the_same_rules() -> None:
    policy = GroupPolicy(admins=(A,))
    check_proposal(policy, proposal=Remove(1), proposer=B, proposer_leaf=1, members=MEMBERS)
    check_proposal(policy, proposal=Remove(2), proposer=A, proposer_leaf=0, members=MEMBERS)
    with pytest.raises(NotPermitted):
        check_proposal(policy, proposal=Remove(2), proposer=B, proposer_leaf=1, members=MEMBERS)


def test_a_group_whose_admins_left_has_the_lowest_leaf_as_admin() -> None:
    gone = bytes(32)
    assert effective_admins(GroupPolicy(admins=(gone,)), {3: C, 1: B}) == {B}
    assert effective_admins(GroupPolicy(admins=(gone, C)), {3: C, 1: B}) == {C}
    assert effective_admins(GroupPolicy(admins=(A,)), {}) == frozenset()

"""
Who may change a group: its admin keys and policy flags, a GroupContext extension.

Townsquare keeps a group's authority inside MLS, where every member and the
relay can check it and nobody can change it without a commit: the
GroupContext carries one private-use extension (RFC 9420 §13.3, §17.3:
``0xF000``–``0xFFFF`` are for private use) holding only keys and flags::

    struct {
        SignaturePublicKey admins<V>;   // device signature keys (Ed25519)
        uint8 flags;                    // bit 0: any member may add
                                        // bit 1: joining needs an admin's approval
    } TownsquareGroupPolicy;

It names no one and says nothing a relay could not already see (the keys
are the leaves' own), so it may sit in the GroupContext the relay reads.

The rules (:func:`check_commit`, :func:`check_proposal`) are the same for the
relay, which refuses to store a commit that breaks them, and for every member,
which refuses to merge one (a relay that stored it anyway is misbehaving):

- an admin may commit anything MLS allows;
- any member may commit an Update, a PreSharedKey, or an empty commit, and
  may remove a member who proposed its own removal (``leave``: RFC 9420
  §12.2 forbids committing one's own removal, so the next member online
  commits it);
- Add only by admins, unless the policy lets any member add;
- Remove of another member, GroupContextExtensions and ReInit only by admins;
- an external commit (a newcomer's join by invite, a member's resync) is
  judged by the invite rules, not these: it can only carry ExternalInit, a
  Remove of the joiner's own old leaf and PSKs (RFC 9420 §12.4.3.2);
- a group whose admins have all left would be frozen, so then the member in
  the lowest leaf acts as admin (deterministic: everyone agrees who).

A group without the extension (made by another MLS client) has no admins:
every member may do what MLS allows.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated

from townsquare.auth.errors import AuthError
from townsquare.mls.codec import U8, Opaque, Struct, Vector
from townsquare.mls.errors import DecodeError
from townsquare.mls.extensions import Extension
from townsquare.mls.framing import MemberSender
from townsquare.mls.proposal_list import SenderProposal
from townsquare.mls.proposals import Add, GroupContextExtensions, Proposal, ReInit, Remove

__all__ = [
    "GROUP_POLICY_EXTENSION",
    "GroupPolicy",
    "InvalidGroupPolicy",
    "NotPermitted",
    "check_commit",
    "check_proposal",
    "effective_admins",
    "group_policy",
]

#: The extension type of Townsquare's group policy (RFC 9420 §17.3, private use).
GROUP_POLICY_EXTENSION = 0xF7A1

_MEMBERS_CAN_ADD = 0x01
_APPROVAL_REQUIRED = 0x02
_KNOWN_FLAGS = _MEMBERS_CAN_ADD | _APPROVAL_REQUIRED
#: The most admin keys one policy lists: enough for any village, small enough to check.
MAX_ADMINS = 64


class InvalidGroupPolicy(AuthError):
    """
    The group policy extension does not decode, or breaks its rules.
    """


class NotPermitted(AuthError):
    """
    The group's policy does not let this member make this change.
    """


@dataclass(frozen=True, slots=True)
class _PolicyStruct(Struct):
    admins: Annotated[tuple[Annotated[bytes, Opaque], ...], Vector]
    flags: Annotated[int, U8]


@dataclass(frozen=True, slots=True, kw_only=True)
class GroupPolicy:
    """
    A group's admin keys and flags.

    :param admins: the admins' device signature keys, in the order they were named.
    :param members_can_add: whether any member may add members.
    :param approval_required: whether a newcomer with an invite asks, and an admin's
        device adds them, rather than joining alone by external commit.
    """

    admins: tuple[bytes, ...]
    members_can_add: bool = False
    approval_required: bool = False

    def __post_init__(self) -> None:
        """
        :raises InvalidGroupPolicy: if the admins break the rules.
        """
        if len(self.admins) > MAX_ADMINS:
            raise InvalidGroupPolicy(f"at most {MAX_ADMINS} admins")
        if len(set(self.admins)) != len(self.admins):
            raise InvalidGroupPolicy("an admin key is listed twice")
        if any(len(key) != 32 for key in self.admins):
            raise InvalidGroupPolicy("an admin key is an Ed25519 public key (32 bytes)")

    def encode(self) -> bytes:
        """
        :returns: the extension data.
        """
        flags = (_MEMBERS_CAN_ADD if self.members_can_add else 0) | (
            _APPROVAL_REQUIRED if self.approval_required else 0
        )
        return _PolicyStruct(self.admins, flags).encode()

    @classmethod
    def decode(cls, data: bytes) -> GroupPolicy:
        """
        :raises InvalidGroupPolicy: if it does not decode, has unknown flags, or breaks
            the admin rules.
        """
        try:
            raw = _PolicyStruct.decode(data)
        except DecodeError as exc:
            raise InvalidGroupPolicy(f"the group policy does not decode: {exc}") from exc
        if raw.flags & ~_KNOWN_FLAGS:
            # An unknown flag may narrow who may do what; guessing would be unsafe.
            raise InvalidGroupPolicy(f"unknown group policy flags {raw.flags:#04x}")
        return cls(
            admins=raw.admins,
            members_can_add=bool(raw.flags & _MEMBERS_CAN_ADD),
            approval_required=bool(raw.flags & _APPROVAL_REQUIRED),
        )

    def extension(self) -> Extension:
        """
        :returns: the GroupContext extension carrying this policy.
        """
        return Extension(GROUP_POLICY_EXTENSION, self.encode())

    def with_admin(self, key: bytes, *, admin: bool) -> GroupPolicy:
        """
        :returns: this policy with ``key`` added to (or taken from) the admins.
        """
        admins = tuple(k for k in self.admins if k != key)
        if admin:
            admins = (*admins, key)
        return GroupPolicy(
            admins=admins,
            members_can_add=self.members_can_add,
            approval_required=self.approval_required,
        )


def group_policy(extensions: Iterable[Extension]) -> GroupPolicy | None:
    """
    :param extensions: a GroupContext's extensions.
    :returns: the group's policy, or ``None`` if it has none.
    :raises InvalidGroupPolicy: if the extension is there but invalid.
    """
    for extension in extensions:
        if extension.extension_type == GROUP_POLICY_EXTENSION:
            return GroupPolicy.decode(extension.extension_data)
    return None


def effective_admins(policy: GroupPolicy, members: Mapping[int, bytes]) -> frozenset[bytes]:
    """
    :param policy: the group's policy.
    :param members: leaf index → signature key of every member.
    :returns: the keys that act as admins: the listed admins still in the group, or, if
        none is, the member in the lowest leaf (so that a group never freezes).
    """
    present = frozenset(policy.admins) & frozenset(members.values())
    if present or not members:
        return present
    return frozenset({members[min(members)]})


def _check_one(
    proposal: Proposal,
    proposer_leaf: int | None,
    policy: GroupPolicy,
    members: Mapping[int, bytes],
) -> None:
    if isinstance(proposal, Add):
        if not policy.members_can_add:
            raise NotPermitted("only an admin may add members to this group")
    elif isinstance(proposal, Remove):
        if proposal.removed != proposer_leaf:
            raise NotPermitted("only an admin may remove another member")
        if proposal.removed not in members:  # pragma: no cover - MLS checked the leaf
            raise NotPermitted("no member in that leaf")
    elif isinstance(proposal, GroupContextExtensions):
        raise NotPermitted("only an admin may change the group's settings")
    elif isinstance(proposal, ReInit):
        raise NotPermitted("only an admin may reinitialise the group")


def check_commit(
    policy: GroupPolicy | None,
    *,
    committer: bytes,
    members: Mapping[int, bytes],
    covered: Sequence[SenderProposal],
    external: bool,
) -> None:
    """
    Decide whether a verified commit may take effect.

    :param policy: the group's policy at the commit's epoch (before it), or ``None``.
    :param committer: the committer's signature key.
    :param members: leaf index → signature key of every member before the commit.
    :param covered: the proposals the commit covers, with their proposers.
    :param external: whether it is an external commit (judged by the invite rules).
    :raises NotPermitted: if the policy forbids it.
    """
    if policy is None or external:
        return
    if committer in effective_admins(policy, members):
        return
    for item in covered:
        sender = item.sender
        proposer = sender.leaf_index if isinstance(sender, MemberSender) else None
        _check_one(item.proposal, proposer, policy, members)


def check_proposal(
    policy: GroupPolicy | None,
    *,
    proposal: Proposal,
    proposer: bytes,
    proposer_leaf: int,
    members: Mapping[int, bytes],
) -> None:
    """
    Decide whether a member's proposal may be held for the next commit.

    The committer is judged again by :func:`check_commit`; refusing early keeps
    proposals nobody may commit out of the log.

    :raises NotPermitted: if the policy forbids it.
    """
    if policy is None or proposer in effective_admins(policy, members):
        return
    _check_one(proposal, proposer_leaf, policy, members)

"""
The relay's side of a group's authority: admins and policy flags from the GroupContext.

:class:`AdminPolicy` is the delivery service's commit policy: it reads the
group's policy extension (:mod:`townsquare.auth.group_policy`) from the public
view, at the commit's epoch, and applies the same rules every member applies
before merging. The relay refuses what breaks them with 403 ``not-an-admin``,
and stores nothing.
"""

from __future__ import annotations

from townsquare.auth.group_policy import (
    GroupPolicy,
    InvalidGroupPolicy,
    NotPermitted,
    check_commit,
    check_proposal,
    effective_admins,
    group_policy,
)
from townsquare.mls.framing import MemberSender
from townsquare.mls.public_group import PublicCommit, PublicGroup, PublicProposal
from townsquare.server.errors import InvalidCommit, InvalidProposal, NotAnAdmin

__all__ = ["AdminPolicy", "admins_of", "policy_of"]


def policy_of(group: PublicGroup) -> GroupPolicy | None:
    """
    :returns: the group's policy at its current epoch, or ``None`` if it has none.
    :raises InvalidCommit: if the extension is invalid (the relay never stores a commit
        that makes it so, so this means a corrupt store).
    """
    try:
        return group_policy(group.context.extensions)
    except InvalidGroupPolicy as exc:  # pragma: no cover - refused when it was committed
        raise InvalidCommit(
            f"the group's policy is invalid: {exc}",
            mls_error=type(exc).__name__,
            rfc_section="RFC 9420 §13.3",
        ) from exc


def admins_of(group: PublicGroup) -> frozenset[bytes] | None:
    """
    :returns: the keys acting as admins now, or ``None`` if the group has no policy.
    """
    policy = policy_of(group)
    if policy is None:
        return None
    return effective_admins(policy, _members(group))


def _members(group: PublicGroup) -> dict[int, bytes]:
    return {int(m.leaf_index): m.signature_key for m in group.members()}


class AdminPolicy:
    """
    Refuse Add, Remove of others, GroupContextExtensions and ReInit from non-admins.
    """

    def check_commit(self, group: PublicGroup, commit: PublicCommit, *, committer: bytes) -> None:
        """
        :raises NotAnAdmin: if the group's policy forbids the commit.
        :raises InvalidCommit: if the commit sets a policy extension that is invalid.
        """
        try:
            # The new epoch's policy must be valid too: a commit cannot leave the
            # group with a policy nobody can read.
            group_policy(commit.context.extensions)
        except InvalidGroupPolicy as exc:
            raise InvalidCommit(
                f"the commit sets an invalid group policy: {exc}",
                mls_error=type(exc).__name__,
                rfc_section="RFC 9420 §13.3",
            ) from exc
        try:
            check_commit(
                policy_of(group),
                committer=committer,
                members=_members(group),
                covered=commit.covered,
                external=commit.external,
            )
        except NotPermitted as exc:
            raise NotAnAdmin(str(exc)) from exc

    def check_proposal(
        self, group: PublicGroup, proposal: PublicProposal, *, sender: bytes
    ) -> None:
        """
        :raises NotAnAdmin: if the group's policy forbids the proposal.
        """
        proposer = proposal.sender
        if not isinstance(proposer, MemberSender):
            raise InvalidProposal(
                "a member's proposal is sent by a member",
                mls_error="InvalidSender",
                rfc_section="RFC 9420 §12.1",
            )
        try:
            check_proposal(
                policy_of(group),
                proposal=proposal.proposal,
                proposer=sender,
                proposer_leaf=proposer.leaf_index,
                members=_members(group),
            )
        except NotPermitted as exc:
            raise NotAnAdmin(str(exc)) from exc

"""
Content authentication and PublicMessage protection (RFC 9420 §6.1, §6.2).

Signing covers a ``FramedContentTBS``: the wire format, the content and, for
member and new-member-commit senders, the GroupContext of the current epoch.
A PublicMessage from a member also carries a membership tag, a MAC under the
epoch's membership_key over the ``AuthenticatedContentTBM``::

    FramedContent ──SignWithLabel("FramedContentTBS")──▶ AuthenticatedContent
    AuthenticatedContent ──protect_public (membership tag)──▶ PublicMessage
    PublicMessage ──unprotect_public (group, epoch, tag, signature)──▶ AuthenticatedContent

A commit's confirmation tag depends on its signature (through the confirmed
transcript hash, RFC 9420 §8.2), so commits are signed with
:func:`sign_framed_content` and assembled by the caller; other content can
use :func:`authenticate_content`.
"""

from __future__ import annotations

import hmac

from townsquare.mls.ciphersuite import CipherSuite
from townsquare.mls.commit import Commit
from townsquare.mls.errors import (
    InvalidContentType,
    InvalidSender,
    MembershipTagMismatch,
    UsageError,
    WrongEpoch,
    WrongGroup,
)
from townsquare.mls.framing import (
    ApplicationData,
    AuthenticatedContent,
    AuthenticatedContentTBM,
    ExternalSenderRef,
    FramedContent,
    FramedContentTBS,
    MemberSender,
    NewMemberCommitSender,
    NewMemberProposalSender,
    PublicMessage,
    encode_authenticated_content_tbm,
    encode_framed_content_tbs,
)
from townsquare.mls.group_context import GroupContext
from townsquare.mls.proposals import Add, proposal_type
from townsquare.mls.registries import ProposalType, WireFormat

__all__ = [
    "EXTERNAL_SENDER_PROPOSAL_TYPES",
    "authenticate_content",
    "check_group_and_epoch",
    "check_sender_content",
    "framed_content_tbs",
    "membership_tag",
    "protect_public",
    "sign_framed_content",
    "unprotect_public",
    "verify_content_signature",
]

_SIGNATURE_LABEL = b"FramedContentTBS"

# RFC 9420 §12.1.8: "only the following types may be sent by an external
# sender: add, remove, psk, reinit, group_context_extensions".
EXTERNAL_SENDER_PROPOSAL_TYPES = frozenset(
    {
        ProposalType.ADD,
        ProposalType.REMOVE,
        ProposalType.PSK,
        ProposalType.REINIT,
        ProposalType.GROUP_CONTEXT_EXTENSIONS,
    }
)


def framed_content_tbs(
    content: FramedContent, *, wire_format: WireFormat, group_context: GroupContext | None
) -> FramedContentTBS:
    """
    Build the ``FramedContentTBS`` that a content's signature covers (RFC 9420 §6.1).

    :param content: the content.
    :param wire_format: the wire format the message is sent in.
    :param group_context: the current epoch's GroupContext; required for member
        and new_member_commit senders, ignored for the others.
    :returns: the struct to sign.
    :raises UsageError: if the sender needs a GroupContext and none is given.
    """
    # RFC 9420 §6.1: "If the sender's sender_type is member, the content also
    # covers the GroupContext for the current epoch" (new_member_commit too, by
    # the FramedContentTBS select).
    if isinstance(content.sender, MemberSender | NewMemberCommitSender):
        if group_context is None:
            raise UsageError("a member or new_member_commit signature covers the GroupContext")
        return FramedContentTBS(wire_format=wire_format, content=content, context=group_context)
    return FramedContentTBS(wire_format=wire_format, content=content)


def check_sender_content(content: FramedContent) -> None:
    """
    Check that the sender's type may send this content (RFC 9420 §6.1, §12.1.8).

    :param content: the content.
    :raises InvalidSender: if the sender type may not send this content.
    """
    sender, body = content.sender, content.content
    if isinstance(sender, ExternalSenderRef):
        # RFC 9420 §6.1: for external, "The content_type of the message MUST be
        # proposal and the proposal_type MUST be a value that is allowed for
        # external senders." §12.1.8: "Messages from external senders
        # containing proposal types other than the above MUST be rejected as
        # malformed."
        if isinstance(body, ApplicationData | Commit):
            raise InvalidSender("an external sender may only send proposals")
        if proposal_type(body) not in EXTERNAL_SENDER_PROPOSAL_TYPES:
            raise InvalidSender(f"an external sender may not propose {proposal_type(body).name}")
    elif isinstance(sender, NewMemberCommitSender):
        # RFC 9420 §6.1: for new_member_commit, "The content_type of the
        # message MUST be commit."
        if not isinstance(body, Commit):
            raise InvalidSender("a new_member_commit sender may only send a commit")
    elif isinstance(sender, NewMemberProposalSender) and not isinstance(body, Add):
        # RFC 9420 §6.1: for new_member_proposal, "The content_type of the
        # message MUST be proposal and the proposal_type of the Proposal MUST
        # be add."
        raise InvalidSender("a new_member_proposal sender may only propose add")


def check_group_and_epoch(group_id: bytes, epoch: int, group_context: GroupContext) -> None:
    """
    Check that a message is for this group and its current epoch.

    :param group_id: the message's group_id.
    :param epoch: the message's epoch.
    :param group_context: the receiver's current GroupContext.
    :raises WrongGroup: if the group ids differ.
    :raises WrongEpoch: if the epochs differ.
    """
    if group_id != group_context.group_id:
        raise WrongGroup("message is for another group")
    # RFC 9420 §12.1: a client "MUST verify ... that the epoch field of the
    # enclosing FramedContent is equal to the epoch field of the current
    # GroupContext object".
    if epoch != group_context.epoch:
        raise WrongEpoch(f"message is for epoch {epoch}, the group is at {group_context.epoch}")


def sign_framed_content(
    suite: CipherSuite,
    content: FramedContent,
    *,
    wire_format: WireFormat,
    signature_private_key: bytes,
    group_context: GroupContext | None,
    content_bytes: bytes | None = None,
) -> bytes:
    """
    Sign a content: ``SignWithLabel(., "FramedContentTBS", FramedContentTBS)`` (RFC 9420 §6.1).

    :param suite: the group's cipher suite.
    :param content: the content to sign.
    :param wire_format: the wire format the message will be sent in.
    :param signature_private_key: the sender's signature private key.
    :param group_context: the current GroupContext (see :func:`framed_content_tbs`).
    :param content_bytes: ``content.encode()`` if the caller has it, so that a large
        content (a commit's UpdatePath) is not encoded again.
    :returns: the signature.
    :raises InvalidSender: if the sender type may not send this content.
    :raises InvalidKey: if the private key is not valid for the suite.
    :raises UsageError: if a needed GroupContext is missing.
    """
    check_sender_content(content)
    tbs = framed_content_tbs(content, wire_format=wire_format, group_context=group_context)
    if content_bytes is None:
        content_bytes = content.encode()
    return suite.sign_with_label(
        signature_private_key, _SIGNATURE_LABEL, encode_framed_content_tbs(tbs, content_bytes)
    )


def authenticate_content(
    suite: CipherSuite,
    content: FramedContent,
    *,
    wire_format: WireFormat,
    signature_private_key: bytes,
    group_context: GroupContext | None,
    confirmation_tag: bytes | None = None,
    content_bytes: bytes | None = None,
) -> AuthenticatedContent:
    """
    Sign a content and wrap it as an AuthenticatedContent (RFC 9420 §6.1).

    :param suite: the group's cipher suite.
    :param content: the content to sign.
    :param wire_format: the wire format the message will be sent in.
    :param signature_private_key: the sender's signature private key.
    :param group_context: the current GroupContext (see :func:`framed_content_tbs`).
    :param confirmation_tag: a commit's confirmation tag (None for other content).
    :param content_bytes: ``content.encode()`` if the caller has it.
    :returns: the signed content.
    :raises InvalidSender: if the sender type may not send this content.
    :raises InvalidKey: if the private key is not valid for the suite.
    :raises UsageError: if a needed GroupContext or confirmation tag is missing, or a
        tag is given for content that is not a commit.
    """
    if (confirmation_tag is not None) != isinstance(content.content, Commit):
        raise UsageError("a confirmation tag goes with a commit, and only with a commit")
    signature = sign_framed_content(
        suite,
        content,
        wire_format=wire_format,
        signature_private_key=signature_private_key,
        group_context=group_context,
        content_bytes=content_bytes,
    )
    return AuthenticatedContent(
        wire_format=wire_format,
        content=content,
        signature=signature,
        confirmation_tag=confirmation_tag,
    )


def verify_content_signature(
    suite: CipherSuite,
    auth_content: AuthenticatedContent,
    *,
    signature_public_key: bytes,
    group_context: GroupContext | None,
    content_bytes: bytes | None = None,
) -> None:
    """
    Verify an AuthenticatedContent's signature (RFC 9420 §6.1).

    :param suite: the group's cipher suite.
    :param auth_content: the signed content.
    :param signature_public_key: the key that the sender's type designates (§6.1).
    :param group_context: the current GroupContext (see :func:`framed_content_tbs`).
    :param content_bytes: ``auth_content.content.encode()`` if the caller has it.
    :raises InvalidSender: if the sender type may not send this content.
    :raises InvalidSignature: if the signature does not verify.
    :raises InvalidKey: if the public key is not valid for the suite.
    :raises UsageError: if a needed GroupContext is missing.
    """
    check_sender_content(auth_content.content)
    tbs = framed_content_tbs(
        auth_content.content, wire_format=auth_content.wire_format, group_context=group_context
    )
    if content_bytes is None:
        content_bytes = auth_content.content.encode()
    _verify_signature(
        suite, auth_content, signature_public_key, encode_framed_content_tbs(tbs, content_bytes)
    )


def _verify_signature(
    suite: CipherSuite,
    auth_content: AuthenticatedContent,
    signature_public_key: bytes,
    tbs_bytes: bytes,
) -> None:
    # RFC 9420 §6.1: "Recipients of an MLSMessage MUST verify the signature
    # with the key depending on the sender_type of the sender as described above."
    suite.verify_with_label(
        signature_public_key, _SIGNATURE_LABEL, tbs_bytes, auth_content.signature
    )


def membership_tag(
    suite: CipherSuite,
    auth_content: AuthenticatedContent,
    *,
    membership_key: bytes,
    group_context: GroupContext,
    content_bytes: bytes | None = None,
) -> bytes:
    """
    Compute ``MAC(membership_key, AuthenticatedContentTBM)`` (RFC 9420 §6.2).

    :param suite: the group's cipher suite.
    :param auth_content: the signed content, sent by a member.
    :param membership_key: the epoch's membership_key.
    :param group_context: the current GroupContext.
    :param content_bytes: ``auth_content.content.encode()`` if the caller has it.
    :returns: the membership tag.
    """
    tbs = framed_content_tbs(
        auth_content.content, wire_format=auth_content.wire_format, group_context=group_context
    )
    tbm = AuthenticatedContentTBM(
        content_tbs=tbs,
        signature=auth_content.signature,
        confirmation_tag=auth_content.confirmation_tag,
    )
    if content_bytes is None:
        content_bytes = auth_content.content.encode()
    return suite.mac(membership_key, encode_authenticated_content_tbm(tbm, content_bytes))


def protect_public(
    suite: CipherSuite,
    auth_content: AuthenticatedContent,
    *,
    membership_key: bytes,
    group_context: GroupContext,
    content_bytes: bytes | None = None,
) -> PublicMessage:
    """
    Encode signed content as a PublicMessage, adding the membership tag for members (§6.2).

    :param suite: the group's cipher suite.
    :param auth_content: content signed for ``mls_public_message``.
    :param membership_key: the epoch's membership_key (used for member senders).
    :param group_context: the current GroupContext.
    :param content_bytes: ``auth_content.content.encode()`` if the caller has it.
    :returns: the PublicMessage.
    :raises InvalidContentType: for application data.
    :raises InvalidSender: if the sender type may not send this content.
    :raises UsageError: if the content was signed for another wire format.
    """
    content = auth_content.content
    if isinstance(content.content, ApplicationData):
        # RFC 9420 §6: "Applications MUST use PrivateMessage to encrypt
        # application messages".
        raise InvalidContentType("application data must not be sent as a PublicMessage")
    if auth_content.wire_format != WireFormat.MLS_PUBLIC_MESSAGE:
        raise UsageError("content signed for another wire format than mls_public_message")
    check_sender_content(content)
    tag = None
    if isinstance(content.sender, MemberSender):
        # RFC 9420 §6.2: "For messages sent by members, it MUST be set to the
        # following value: ... membership_tag = MAC(membership_key,
        # AuthenticatedContentTBM)".
        tag = membership_tag(
            suite,
            auth_content,
            membership_key=membership_key,
            group_context=group_context,
            content_bytes=content_bytes,
        )
    return PublicMessage(
        content=content,
        signature=auth_content.signature,
        confirmation_tag=auth_content.confirmation_tag,
        membership_tag=tag,
    )


def unprotect_public(
    suite: CipherSuite,
    message: PublicMessage,
    *,
    membership_key: bytes,
    group_context: GroupContext,
    signature_public_key: bytes,
    content_bytes: bytes | None = None,
) -> AuthenticatedContent:
    """
    Check a PublicMessage and return its AuthenticatedContent (RFC 9420 §6.2).

    Checks, in order: content type, group and epoch, sender type against
    content, membership tag (member senders), signature. The confirmation tag of a
    commit is checked later, by the key schedule (RFC 9420 §8.1), once the new
    epoch's confirmation_key is known.

    :param suite: the group's cipher suite.
    :param message: the received message.
    :param membership_key: the current epoch's membership_key.
    :param group_context: the current GroupContext.
    :param signature_public_key: the key that the sender's type designates (§6.1).
    :param content_bytes: ``message.content.encode()`` if the caller has it (see
        :func:`~townsquare.mls.framing.public_message_content_bytes`).
    :returns: the authenticated content.
    :raises InvalidContentType: for application data.
    :raises WrongGroup: if the message is for another group.
    :raises WrongEpoch: if the message is for another epoch.
    :raises InvalidSender: if the sender type may not send this content.
    :raises MembershipTagMismatch: if a member's membership tag does not verify.
    :raises InvalidSignature: if the signature does not verify.
    :raises InvalidKey: if ``signature_public_key`` is not valid for the suite.
    """
    content = message.content
    if isinstance(content.content, ApplicationData):
        # RFC 9420 §6: "Applications MUST use PrivateMessage to encrypt
        # application messages".
        raise InvalidContentType("application data must not arrive as a PublicMessage")
    check_group_and_epoch(content.group_id, content.epoch, group_context)
    check_sender_content(content)
    auth_content = AuthenticatedContent(
        wire_format=WireFormat.MLS_PUBLIC_MESSAGE,
        content=content,
        signature=message.signature,
        confirmation_tag=message.confirmation_tag,
    )
    # The content is encoded (or found) once for both the tag and the signature.
    if content_bytes is None:
        content_bytes = content.encode()
    tbs = framed_content_tbs(
        content, wire_format=WireFormat.MLS_PUBLIC_MESSAGE, group_context=group_context
    )
    tbs_bytes = encode_framed_content_tbs(tbs, content_bytes)
    if isinstance(content.sender, MemberSender):
        # RFC 9420 §6.2: "When decoding a PublicMessage into an
        # AuthenticatedContent, the application MUST check membership_tag and
        # MUST check that the FramedContentAuthData is valid."
        tbm = AuthenticatedContentTBM(
            content_tbs=tbs,
            signature=message.signature,
            confirmation_tag=message.confirmation_tag,
        )
        expected = suite.mac(membership_key, encode_authenticated_content_tbm(tbm, content_bytes))
        if message.membership_tag is None or not hmac.compare_digest(
            expected, message.membership_tag
        ):
            raise MembershipTagMismatch("membership tag does not verify")
    _verify_signature(suite, auth_content, signature_public_key, tbs_bytes)
    return auth_content

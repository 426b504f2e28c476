"""
PublicMessage protection (RFC 9420 §6.1, §6.2): signature, membership tag, refused content.
"""

from __future__ import annotations

import dataclasses
import hashlib

import pytest

from townsquare.mls.ciphersuite import get_cipher_suite
from townsquare.mls.commit import Commit
from townsquare.mls.errors import (
    InvalidContentType,
    InvalidSender,
    InvalidSignature,
    MembershipTagMismatch,
    UsageError,
    WrongEpoch,
    WrongGroup,
)
from townsquare.mls.framing import (
    ApplicationData,
    AuthenticatedContent,
    Content,
    ExternalSenderRef,
    FramedContent,
    MemberSender,
    NewMemberCommitSender,
    NewMemberProposalSender,
    PublicMessage,
    Sender,
)
from townsquare.mls.group_context import GroupContext
from townsquare.mls.proposals import ExternalInit, Remove
from townsquare.mls.public_message import (
    authenticate_content,
    framed_content_tbs,
    protect_public,
    sign_framed_content,
    unprotect_public,
    verify_content_signature,
)
from townsquare.mls.registries import WireFormat

SUITE = get_cipher_suite(1)
CONTEXT = GroupContext(
    cipher_suite=SUITE.suite_id,
    group_id=b"village",
    epoch=7,
    tree_hash=bytes(32),
    confirmed_transcript_hash=bytes(range(32)),
)
MEMBERSHIP_KEY = b"m" * SUITE.hash_length


def _key_pair(seed: bytes) -> tuple[bytes, bytes]:
    return SUITE.generate_signature_key_pair(lambda n: hashlib.sha256(seed).digest()[:n])


PRIV, PUB = _key_pair(b"alice")
OTHER_PRIV, OTHER_PUB = _key_pair(b"mallory")


def _framed(content: Content, sender: Sender | None = None) -> FramedContent:
    return FramedContent(
        group_id=CONTEXT.group_id,
        epoch=CONTEXT.epoch,
        sender=MemberSender(1) if sender is None else sender,
        authenticated_data=b"aad",
        content=content,
    )


def _signed(content: Content, sender: Sender | None = None) -> AuthenticatedContent:
    return authenticate_content(
        SUITE,
        _framed(content, sender),
        wire_format=WireFormat.MLS_PUBLIC_MESSAGE,
        signature_private_key=PRIV,
        group_context=CONTEXT,
        confirmation_tag=b"t" * 32 if isinstance(content, Commit) else None,
    )


def _protect(content: Content, sender: Sender | None = None) -> PublicMessage:
    return protect_public(
        SUITE, _signed(content, sender), membership_key=MEMBERSHIP_KEY, group_context=CONTEXT
    )


def _unprotect(
    message: PublicMessage, *, context: GroupContext = CONTEXT, public_key: bytes = PUB
) -> AuthenticatedContent:
    return unprotect_public(
        SUITE,
        message,
        membership_key=MEMBERSHIP_KEY,
        group_context=context,
        signature_public_key=public_key,
    )


def _flip_last(data: bytes) -> bytes:
    return data[:-1] + bytes([data[-1] ^ 1])


@pytest.mark.parametrize("content", [Remove(3), Commit(proposals=())], ids=["proposal", "commit"])
def test_member_message_round_trips(content: Content) -> None:
    message = PublicMessage.decode(_protect(content).encode())
    assert message.membership_tag is not None
    auth_content = _unprotect(message)
    assert auth_content == _signed(content)


def test_tampered_membership_tag_is_rejected() -> None:
    message = _protect(Remove(3))
    assert message.membership_tag is not None
    tampered = dataclasses.replace(message, membership_tag=_flip_last(message.membership_tag))
    with pytest.raises(MembershipTagMismatch):
        _unprotect(tampered)


def test_wrong_membership_key_is_rejected() -> None:
    message = protect_public(
        SUITE, _signed(Remove(3)), membership_key=bytes(32), group_context=CONTEXT
    )
    with pytest.raises(MembershipTagMismatch):
        _unprotect(message)


def test_tampered_signature_is_rejected() -> None:
    signed = _signed(Remove(3))
    forged = dataclasses.replace(signed, signature=_flip_last(signed.signature))
    # The tag is recomputed, as a member (who holds the membership key) could.
    message = protect_public(SUITE, forged, membership_key=MEMBERSHIP_KEY, group_context=CONTEXT)
    with pytest.raises(InvalidSignature):
        _unprotect(message)


def test_signature_from_another_key_is_rejected() -> None:
    with pytest.raises(InvalidSignature):
        _unprotect(_protect(Remove(3)), public_key=OTHER_PUB)


def test_application_data_must_not_be_protected_as_public_message() -> None:
    with pytest.raises(InvalidContentType):
        _protect(ApplicationData(b"hello"))


def test_application_data_must_not_be_accepted_as_public_message() -> None:
    message = PublicMessage(
        content=_framed(ApplicationData(b"hello")), signature=b"s", membership_tag=b"t"
    )
    with pytest.raises(InvalidContentType):
        _unprotect(message)


def test_message_for_other_epoch_is_rejected() -> None:
    with pytest.raises(WrongEpoch):
        _unprotect(_protect(Remove(3)), context=dataclasses.replace(CONTEXT, epoch=8))


def test_message_for_other_group_is_rejected() -> None:
    with pytest.raises(WrongGroup):
        _unprotect(_protect(Remove(3)), context=dataclasses.replace(CONTEXT, group_id=b"town"))


def test_signature_covers_group_context_for_members() -> None:
    other_context = dataclasses.replace(CONTEXT, tree_hash=b"\x01" * 32)
    with pytest.raises(InvalidSignature):
        verify_content_signature(
            SUITE, _signed(Remove(3)), signature_public_key=PUB, group_context=other_context
        )


def test_external_sender_proposal_has_no_tag_or_context() -> None:
    sender = ExternalSenderRef(0)
    message = _protect(Remove(3), sender)
    assert message.membership_tag is None
    tbs = framed_content_tbs(
        message.content, wire_format=WireFormat.MLS_PUBLIC_MESSAGE, group_context=CONTEXT
    )
    assert tbs.context is None
    assert _unprotect(message).content.sender == sender


@pytest.mark.parametrize(
    ("sender", "content"),
    [
        (ExternalSenderRef(0), Commit(proposals=())),
        (ExternalSenderRef(0), ApplicationData(b"x")),
        (ExternalSenderRef(0), ExternalInit(b"kem")),
        (NewMemberCommitSender(), Remove(1)),
        (NewMemberProposalSender(), Remove(1)),
    ],
    ids=[
        "external-commit",
        "external-application",
        "external-init",
        "new-member-commit-proposal",
        "nmp-remove",
    ],
)
def test_sender_type_restricts_content(sender: Sender, content: Content) -> None:
    with pytest.raises(InvalidSender):
        sign_framed_content(
            SUITE,
            _framed(content, sender),
            wire_format=WireFormat.MLS_PUBLIC_MESSAGE,
            signature_private_key=PRIV,
            group_context=CONTEXT,
        )


def test_new_member_commit_has_no_tag_but_covers_context() -> None:
    message = _protect(Commit(proposals=()), NewMemberCommitSender())
    assert message.membership_tag is None
    _unprotect(message)
    with pytest.raises(InvalidSignature):
        _unprotect(message, context=dataclasses.replace(CONTEXT, tree_hash=b"\x02" * 32))


def test_content_signed_for_private_wire_format_is_refused() -> None:
    signed = dataclasses.replace(_signed(Remove(3)), wire_format=WireFormat.MLS_PRIVATE_MESSAGE)
    with pytest.raises(UsageError):
        protect_public(SUITE, signed, membership_key=MEMBERSHIP_KEY, group_context=CONTEXT)


def test_member_signature_needs_group_context() -> None:
    with pytest.raises(UsageError):
        framed_content_tbs(
            _framed(Remove(3)), wire_format=WireFormat.MLS_PUBLIC_MESSAGE, group_context=None
        )


def test_confirmation_tag_only_with_commit() -> None:
    with pytest.raises(UsageError):
        authenticate_content(
            SUITE,
            _framed(Remove(3)),
            wire_format=WireFormat.MLS_PUBLIC_MESSAGE,
            signature_private_key=PRIV,
            group_context=CONTEXT,
            confirmation_tag=b"t",
        )

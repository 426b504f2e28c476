"""
Encodings joined around a content's encoding (``framing.py``, ``transcript.py``) equal the structs'.

A commit's content is encoded once (or, received, sliced from the message)
and joined with the other fields for the FramedContentTBS (RFC 9420 §6.1),
the AuthenticatedContentTBM (§6.2), the MLSMessage (§6) and the
ConfirmedTranscriptHashInput (§8.2). These tests check those bytes against
the structs' own ``encode()`` for every sender type, for commits and
proposals, and that both refuse the same field mistakes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import pytest

from townsquare.mls.ciphersuite import Rng, get_cipher_suite
from townsquare.mls.codec import Struct
from townsquare.mls.credentials import BasicCredential
from townsquare.mls.errors import UsageError
from townsquare.mls.framing import (
    AuthenticatedContent,
    AuthenticatedContentTBM,
    ExternalSenderRef,
    FramedContent,
    FramedContentTBS,
    MLSMessage,
    NewMemberProposalSender,
    PublicMessage,
    encode_authenticated_content_tbm,
    encode_framed_content_tbs,
    encode_public_mls_message,
    public_message_content_bytes,
)
from townsquare.mls.group import Group
from townsquare.mls.key_package import KeyPackageBundle
from townsquare.mls.proposals import Add, Remove
from townsquare.mls.public_message import framed_content_tbs
from townsquare.mls.registries import ProtocolVersion, WireFormat
from townsquare.mls.transcript import confirmed_transcript_hash

SUITE = get_cipher_suite(1)

MakeBundle = Callable[..., KeyPackageBundle]
MakeGroup = Callable[..., list[Group]]


def public(message_bytes: bytes) -> PublicMessage:
    body = MLSMessage.decode(message_bytes).body
    assert isinstance(body, PublicMessage)
    return body


def messages(make_group: MakeGroup, make_bundle: MakeBundle, rng: Rng) -> dict[str, bytes]:
    """
    One MLSMessage(PublicMessage) per kind of sender and content.
    """
    alice, bob, _ = make_group(3)
    out = {
        "member commit with a path": alice.commit(rng=rng, force_path=True).commit,
        "member commit without a path": alice.commit(rng=rng, proposals=[Remove(2)]).commit,
        "member proposal": bob.propose(Remove(1), rng=rng),
        "new member commit": Group.join_external(
            alice.group_info(),
            credential=BasicCredential(b"newcomer"),
            signature_private_key=SUITE.generate_signature_key_pair(rng)[0],
            rng=rng,
        ).commit,
    }
    # Senders that Group never uses, signed by hand (the signature's value
    # does not matter to the encodings).
    base = public(out["member proposal"])
    joiner = make_bundle(b"joiner").key_package
    for name, sender, body in (
        ("new member proposal", NewMemberProposalSender(), Add(joiner)),
        ("external sender proposal", ExternalSenderRef(0), Remove(1)),
    ):
        content = replace(base.content, sender=sender, content=body)
        message = PublicMessage(content=content, signature=b"\x07" * 64)
        out[name] = MLSMessage(ProtocolVersion.MLS10, message).encode()
    return out


def test_joined_encodings_equal_the_structs_for_every_sender_and_content(
    make_group: MakeGroup, make_bundle: MakeBundle, rng: Rng
) -> None:
    alice = make_group(1)[0]
    for name, message_bytes in messages(make_group, make_bundle, rng).items():
        message = public(message_bytes)
        content_bytes = message.content.encode()
        assert public_message_content_bytes(message_bytes, message) == content_bytes, name
        assert encode_public_mls_message(message, content_bytes) == message_bytes, name
        tbs = framed_content_tbs(
            message.content,
            wire_format=WireFormat.MLS_PUBLIC_MESSAGE,
            group_context=alice.context,
        )
        assert encode_framed_content_tbs(tbs, content_bytes) == tbs.encode(), name
        tbm = AuthenticatedContentTBM(
            content_tbs=tbs,
            signature=message.signature,
            confirmation_tag=message.confirmation_tag,
        )
        assert encode_authenticated_content_tbm(tbm, content_bytes) == tbm.encode(), name
        if message.confirmation_tag is not None:
            auth = AuthenticatedContent(
                wire_format=WireFormat.MLS_PUBLIC_MESSAGE,
                content=message.content,
                signature=message.signature,
                confirmation_tag=message.confirmation_tag,
            )
            assert confirmed_transcript_hash(
                SUITE, b"interim", auth, content_bytes=content_bytes
            ) == confirmed_transcript_hash(SUITE, b"interim", auth), name


def test_joined_encodings_refuse_what_the_structs_refuse(
    make_group: MakeGroup, make_bundle: MakeBundle, rng: Rng
) -> None:
    found = messages(make_group, make_bundle, rng)
    commit = public(found["member commit with a path"])
    external = public(found["external sender proposal"])
    context = make_group(1)[0].context
    wrong: list[tuple[Struct, Callable[[bytes], bytes], FramedContent]] = []
    # A member's FramedContentTBS without its GroupContext, and an external
    # sender's with one.
    for content, tbs_context in ((commit.content, None), (external.content, context)):
        tbs = FramedContentTBS(
            wire_format=WireFormat.MLS_PUBLIC_MESSAGE, content=content, context=tbs_context
        )
        wrong.append((tbs, lambda data, tbs=tbs: encode_framed_content_tbs(tbs, data), content))
    # A commit's AuthenticatedContentTBM without its confirmation tag, and a
    # proposal's with one.
    for content, tag in ((commit.content, None), (external.content, b"\x01" * 32)):
        tbm = AuthenticatedContentTBM(
            content_tbs=FramedContentTBS(
                wire_format=WireFormat.MLS_PUBLIC_MESSAGE,
                content=content,
                context=context if content is commit.content else None,
            ),
            signature=b"\x02" * 64,
            confirmation_tag=tag,
        )
        wrong.append(
            (tbm, lambda data, tbm=tbm: encode_authenticated_content_tbm(tbm, data), content)
        )
    # A member's PublicMessage without its membership tag.
    untagged = replace(commit, membership_tag=None)
    wrong.append(
        (
            MLSMessage(ProtocolVersion.MLS10, untagged),
            lambda data: encode_public_mls_message(untagged, data),
            commit.content,
        )
    )
    for struct, joined, content in wrong:
        with pytest.raises(UsageError):
            struct.encode()
        with pytest.raises(UsageError):
            joined(content.encode())


def test_content_bytes_of_another_message_are_refused(
    make_group: MakeGroup, make_bundle: MakeBundle, rng: Rng
) -> None:
    found = messages(make_group, make_bundle, rng)
    commit = public(found["member commit with a path"])
    with pytest.raises(UsageError, match="not the MLSMessage"):
        public_message_content_bytes(found["member proposal"], commit)
    with pytest.raises(UsageError, match="not the MLSMessage"):
        public_message_content_bytes(b"\x00\x01", commit)

"""
RFC 9420 §8.2: the confirmed and interim transcript hashes.
"""

from __future__ import annotations

import dataclasses

import pytest

from townsquare.mls.ciphersuite import get_cipher_suite
from townsquare.mls.commit import Commit
from townsquare.mls.errors import UsageError
from townsquare.mls.framing import (
    ApplicationData,
    AuthenticatedContent,
    FramedContent,
    MemberSender,
)
from townsquare.mls.key_schedule import confirmation_tag
from townsquare.mls.registries import WireFormat
from townsquare.mls.transcript import (
    INITIAL_CONFIRMED_TRANSCRIPT_HASH,
    ConfirmedTranscriptHashInput,
    InterimTranscriptHashInput,
    confirmed_transcript_hash,
    interim_transcript_hash,
)

SUITE = get_cipher_suite(1)

COMMIT_CONTENT = AuthenticatedContent(
    wire_format=WireFormat.MLS_PUBLIC_MESSAGE,
    content=FramedContent(
        group_id=b"village",
        epoch=4,
        sender=MemberSender(2),
        authenticated_data=b"aad",
        content=Commit(proposals=()),
    ),
    signature=b"signature",
    confirmation_tag=b"\x07" * 32,
)


def test_confirmed_hash_covers_interim_and_commit() -> None:
    interim_before = b"\x05" * 32
    expected_input = ConfirmedTranscriptHashInput(
        COMMIT_CONTENT.wire_format, COMMIT_CONTENT.content, COMMIT_CONTENT.signature
    ).encode()
    assert confirmed_transcript_hash(SUITE, interim_before, COMMIT_CONTENT) == SUITE.hash(
        interim_before + expected_input
    )


def test_confirmed_hash_excludes_the_confirmation_tag() -> None:
    # RFC 9420 §8.2: the confirmed hash covers the Commit "up to and
    # including the signature"; the tag is computed over it.
    other_tag = dataclasses.replace(COMMIT_CONTENT, confirmation_tag=b"\x08" * 32)
    assert confirmed_transcript_hash(SUITE, b"", COMMIT_CONTENT) == confirmed_transcript_hash(
        SUITE, b"", other_tag
    )


def test_confirmed_hash_covers_wire_format_and_signature() -> None:
    base = confirmed_transcript_hash(SUITE, b"", COMMIT_CONTENT)
    private = dataclasses.replace(COMMIT_CONTENT, wire_format=WireFormat.MLS_PRIVATE_MESSAGE)
    resigned = dataclasses.replace(COMMIT_CONTENT, signature=b"other signature")
    assert confirmed_transcript_hash(SUITE, b"", private) != base
    assert confirmed_transcript_hash(SUITE, b"", resigned) != base


def test_interim_hash_covers_confirmed_hash_and_tag() -> None:
    confirmed = b"\x06" * 32
    tag = b"\x07" * 32
    assert interim_transcript_hash(SUITE, confirmed, tag) == SUITE.hash(
        confirmed + InterimTranscriptHashInput(tag).encode()
    )


def test_group_creation_interim_hash_uses_empty_confirmed_hash() -> None:
    # RFC 9420 §11: the creator computes a confirmation tag "over the empty
    # confirmed_transcript_hash" and then "the updated
    # interim_transcript_hash from the confirmed_transcript_hash and the
    # confirmation_tag".
    tag = confirmation_tag(SUITE, b"\x01" * 32, INITIAL_CONFIRMED_TRANSCRIPT_HASH)
    interim = interim_transcript_hash(SUITE, INITIAL_CONFIRMED_TRANSCRIPT_HASH, tag)
    assert INITIAL_CONFIRMED_TRANSCRIPT_HASH == b""
    assert interim == SUITE.hash(InterimTranscriptHashInput(tag).encode())


def test_transcript_hash_of_non_commit_is_rejected() -> None:
    application = AuthenticatedContent(
        wire_format=WireFormat.MLS_PRIVATE_MESSAGE,
        content=dataclasses.replace(COMMIT_CONTENT.content, content=ApplicationData(b"hi")),
        signature=b"signature",
    )
    before = dataclasses.replace(application)
    with pytest.raises(UsageError):
        confirmed_transcript_hash(SUITE, b"", application)
    assert application == before

"""
Transcript hashes (RFC 9420 §8.2): the running hash of every commit a group has applied.

RFC 9420 §8.2::

    confirmed_transcript_hash_[0] = ""; /* zero-length octet string */
    interim_transcript_hash_[0] = ""; /* zero-length octet string */

    confirmed_transcript_hash_[epoch] =
        Hash(interim_transcript_hash_[epoch - 1] ||
            ConfirmedTranscriptHashInput_[epoch]);

    interim_transcript_hash_[epoch] =
        Hash(confirmed_transcript_hash_[epoch] ||
            InterimTranscriptHashInput_[epoch]);

A group's creator starts with the empty confirmed transcript hash, but then
(§11) computes the confirmation tag of epoch 0 and "the updated
interim_transcript_hash from the confirmed_transcript_hash and the
confirmation_tag": the interim hash that the first Commit builds on is
``interim_transcript_hash(suite, b"", confirmation_tag_0)``, not ``b""``. A new
member likewise computes it from the GroupInfo's confirmed transcript hash and
confirmation tag (§12.4.3.1).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated

from townsquare.mls.codec import U16, Opaque, Struct, encode_opaque
from townsquare.mls.commit import Commit
from townsquare.mls.errors import UsageError
from townsquare.mls.framing import AuthenticatedContent, FramedContent
from townsquare.mls.registries import WireFormat

if TYPE_CHECKING:
    # For annotations only: the wire-struct modules never load the crypto
    # layer at run time, so no import cycle can form through it.
    from townsquare.mls.ciphersuite import CipherSuite

__all__ = [
    "INITIAL_CONFIRMED_TRANSCRIPT_HASH",
    "ConfirmedTranscriptHashInput",
    "InterimTranscriptHashInput",
    "confirmed_transcript_hash",
    "interim_transcript_hash",
]

#: ``confirmed_transcript_hash_[0]``: the zero-length octet string (RFC 9420 §8.2, §11).
INITIAL_CONFIRMED_TRANSCRIPT_HASH = b""


@dataclass(frozen=True, slots=True)
class ConfirmedTranscriptHashInput(Struct):
    """
    RFC 9420 §8.2::

        struct {
            WireFormat wire_format;
            FramedContent content; /* with content_type == commit */
            opaque signature<V>;
        } ConfirmedTranscriptHashInput;
    """

    wire_format: Annotated[WireFormat, U16]
    content: FramedContent
    signature: Annotated[bytes, Opaque]


@dataclass(frozen=True, slots=True)
class InterimTranscriptHashInput(Struct):
    """
    RFC 9420 §8.2: ``struct { MAC confirmation_tag; } InterimTranscriptHashInput;``
    """

    confirmation_tag: Annotated[bytes, Opaque]


def confirmed_transcript_hash(
    suite: CipherSuite,
    interim_transcript_hash_before: bytes,
    content: AuthenticatedContent,
    *,
    content_bytes: bytes | None = None,
) -> bytes:
    """
    Compute the confirmed transcript hash of the epoch that a Commit starts (RFC 9420 §8.2).

    :param suite: the group's cipher suite.
    :param interim_transcript_hash_before: the interim transcript hash of the epoch the Commit
        was sent in.
    :param content: the AuthenticatedContent that carries the Commit.
    :param content_bytes: ``content.content.encode()`` if the caller has it, so that the
        commit (with its UpdatePath) is not encoded again.
    :returns: ``Hash(interim_transcript_hash_[epoch - 1] || ConfirmedTranscriptHashInput)``.
    :raises UsageError: if ``content`` does not carry a Commit.
    """
    if not isinstance(content.content.content, Commit):
        # RFC 9420 §8.2: ConfirmedTranscriptHashInput holds a FramedContent
        # "with content_type == commit"; only Commits enter the transcript.
        raise UsageError("only a Commit's AuthenticatedContent enters the transcript hash")
    if content_bytes is None:
        hash_input = ConfirmedTranscriptHashInput(
            content.wire_format, content.content, content.signature
        ).encode()
    else:
        # The ConfirmedTranscriptHashInput encoding joined around the content's
        # (the unit tests check it against the struct's).
        hash_input = (
            content.wire_format.to_bytes(2, "big")
            + content_bytes
            + encode_opaque(content.signature)
        )
    return suite.hash(interim_transcript_hash_before + hash_input)


def interim_transcript_hash(
    suite: CipherSuite, confirmed_transcript_hash: bytes, confirmation_tag: bytes
) -> bytes:
    """
    Compute an interim transcript hash from the confirmed one and a confirmation tag (§8.2).

    :param suite: the group's cipher suite.
    :param confirmed_transcript_hash: the epoch's confirmed transcript hash.
    :param confirmation_tag: the confirmation tag of the Commit that started the epoch (or,
        for epoch 0, the creator's, §11; for a new member, the GroupInfo's, §12.4.3.1).
    :returns: ``Hash(confirmed_transcript_hash_[epoch] || InterimTranscriptHashInput)``.
    """
    hash_input = InterimTranscriptHashInput(confirmation_tag).encode()
    return suite.hash(confirmed_transcript_hash + hash_input)

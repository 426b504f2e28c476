"""
Checks ``transcript-hashes.json``: the confirmation tag and both transcript hashes (RFC 9420 §8.2).
"""

from __future__ import annotations

from collections.abc import Mapping

from townsquare.mls.ciphersuite import get_cipher_suite
from townsquare.mls.commit import Commit
from townsquare.mls.framing import AuthenticatedContent
from townsquare.mls.key_schedule import verify_confirmation_tag
from townsquare.mls.testvectors.fields import VectorMismatch, expect_equal, hex_field, int_field
from townsquare.mls.transcript import confirmed_transcript_hash, interim_transcript_hash


def check(case: Mapping[str, object]) -> None:
    """
    Verify one transcript-hashes vector completely.

    :raises VectorMismatch: on a difference.
    :raises MLSError: if the content does not decode or its confirmation tag does not verify.
    """
    suite = get_cipher_suite(int_field(case, "cipher_suite"))
    content_bytes = hex_field(case, "authenticated_content")
    content = AuthenticatedContent.decode(content_bytes)
    expect_equal("authenticated_content re-encoded", content.encode(), content_bytes)
    if not isinstance(content.content.content, Commit) or content.confirmation_tag is None:
        raise VectorMismatch("authenticated_content does not carry a Commit")
    confirmed_after = hex_field(case, "confirmed_transcript_hash_after")
    verify_confirmation_tag(
        suite, hex_field(case, "confirmation_key"), confirmed_after, content.confirmation_tag
    )
    confirmed = confirmed_transcript_hash(
        suite, hex_field(case, "interim_transcript_hash_before"), content
    )
    expect_equal("confirmed_transcript_hash_after", confirmed, confirmed_after)
    expect_equal(
        "interim_transcript_hash_after",
        interim_transcript_hash(suite, confirmed, content.confirmation_tag),
        hex_field(case, "interim_transcript_hash_after"),
    )

"""
Fuzz target ``key_package``: ``KeyPackage.decode`` (RFC 9420 §10), then what a verifier parses next.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from fuzz.harness import Target, check_extension_payloads, decode_exactly
from townsquare.mls.key_package import KeyPackage

if TYPE_CHECKING:
    from fuzz.seeds import SeedSource

__all__ = ["TARGET", "check", "check_key_package"]


def check_key_package(key_package: KeyPackage) -> None:
    """
    Exercise what a receiver derives from a decoded KeyPackage before any signature check.

    The payloads of its own and its leaf's extensions, and the to-be-signed
    encodings of both (RFC 9420 §10, §7.2), which re-encode decoded fields.

    :param key_package: a decoded KeyPackage.
    :raises RoundTripMismatch: if an extension payload re-encodes differently.
    """
    check_extension_payloads(key_package.extensions)
    check_extension_payloads(key_package.leaf_node.extensions)
    key_package.to_be_signed()
    # A fuzzed leaf may claim any source; group id and index are only used for
    # in-group sources, and giving them keeps UsageError (a caller bug) out of reach.
    key_package.leaf_node.to_be_signed(group_id=b"", leaf_index=0)


def check(data: bytes) -> None:
    """
    Decode ``data`` as a bare KeyPackage (no MLSMessage header) and check it as above.

    :param data: the fuzz input.
    :raises DecodeError: if it is not a KeyPackage.
    """
    check_key_package(decode_exactly(KeyPackage, data))


def _seeds(source: SeedSource) -> Iterable[bytes]:
    return source.key_packages


TARGET = Target(
    name="key_package",
    summary="KeyPackage.decode, round trip, extension payloads, to-be-signed encodings",
    check=check,
    seeds=_seeds,
)

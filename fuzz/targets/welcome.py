"""
Fuzz target ``welcome``: ``Welcome.decode`` (RFC 9420 §12.4.3.1) and its round trip.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from fuzz.harness import Target, decode_exactly
from townsquare.mls.welcome import Welcome

if TYPE_CHECKING:
    from fuzz.seeds import SeedSource

__all__ = ["TARGET", "check"]


def check(data: bytes) -> None:
    """
    Decode ``data`` as a bare Welcome (no MLSMessage header).

    :param data: the fuzz input.
    :raises DecodeError: if it is not a Welcome.
    """
    decode_exactly(Welcome, data)


def _seeds(source: SeedSource) -> Iterable[bytes]:
    return source.welcomes


TARGET = Target(
    name="welcome",
    summary="Welcome.decode, then encode(decode(b)) == b",
    check=check,
    seeds=_seeds,
)

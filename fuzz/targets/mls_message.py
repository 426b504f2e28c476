"""
Fuzz target ``mls_message``: ``MLSMessage.decode`` (RFC 9420 §6), what a relay parses first.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from fuzz.harness import Target, decode_exactly
from fuzz.targets.group_info import check_group_info
from fuzz.targets.key_package import check_key_package
from townsquare.mls.framing import MLSMessage
from townsquare.mls.key_package import KeyPackage
from townsquare.mls.welcome import GroupInfo

if TYPE_CHECKING:
    from fuzz.seeds import SeedSource

__all__ = ["TARGET", "check"]


def check(data: bytes) -> None:
    """
    Decode ``data`` as an MLSMessage; a KeyPackage or GroupInfo body is then checked as its
    own target checks it.

    :param data: the fuzz input.
    :raises DecodeError: if it is not an MLSMessage.
    """
    message = decode_exactly(MLSMessage, data)
    if isinstance(message.body, KeyPackage):
        check_key_package(message.body)
    elif isinstance(message.body, GroupInfo):
        check_group_info(message.body)


def _seeds(source: SeedSource) -> Iterable[bytes]:
    return source.mls_messages


TARGET = Target(
    name="mls_message",
    summary="MLSMessage.decode (all five wire formats), round trip, body checks",
    check=check,
    seeds=_seeds,
)

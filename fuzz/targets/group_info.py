"""
Fuzz target ``group_info``: ``GroupInfo.decode`` (RFC 9420 §12.4.3), then what a joiner parses next.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from fuzz.harness import Target, check_extension_payloads, decode_exactly
from townsquare.mls.welcome import GroupInfo

if TYPE_CHECKING:
    from fuzz.seeds import SeedSource

__all__ = ["TARGET", "check", "check_group_info"]


def check_group_info(group_info: GroupInfo) -> None:
    """
    Exercise what a joiner derives from a decoded GroupInfo before any signature check.

    The payloads of the GroupContext's and the GroupInfo's extensions (among
    them the ``ratchet_tree`` extension, RFC 9420 §12.4.3.3) and the
    to-be-signed encoding (RFC 9420 §12.4.3).

    :param group_info: a decoded GroupInfo.
    :raises RoundTripMismatch: if an extension payload re-encodes differently.
    """
    check_extension_payloads(group_info.group_context.extensions)
    check_extension_payloads(group_info.extensions)
    group_info.to_be_signed()


def check(data: bytes) -> None:
    """
    Decode ``data`` as a bare GroupInfo (no MLSMessage header) and check it as above.

    :param data: the fuzz input.
    :raises DecodeError: if it is not a GroupInfo.
    """
    check_group_info(decode_exactly(GroupInfo, data))


def _seeds(source: SeedSource) -> Iterable[bytes]:
    return source.group_infos


TARGET = Target(
    name="group_info",
    summary="GroupInfo.decode, round trip, extension payloads, to-be-signed encoding",
    check=check,
    seeds=_seeds,
)

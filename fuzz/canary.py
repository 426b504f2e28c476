"""
A target with a planted bug, which proves that the engines and the runner report findings.

``tests/fuzz/test_fuzz_bounded.py`` fuzzes it with each engine and expects a
crash with its traceback. It is not in :data:`fuzz.targets.TARGETS`; the
runner reaches it as ``fuzz.canary:TARGET``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from fuzz.harness import Target
from townsquare.mls.codec import Reader

if TYPE_CHECKING:
    from fuzz.seeds import SeedSource

__all__ = ["TARGET", "check"]


def check(data: bytes) -> None:
    """
    Read a varint, then fail as a careless decoder would when it is 0x3f.

    :param data: the fuzz input.
    :raises DecodeError: if ``data`` does not start with a varint.
    :raises IndexError: for a varint of 63: the planted bug.
    """
    value = Reader(data).varint()
    if value == 0x3F:
        raise IndexError("planted: varint 63")


def _seeds(source: SeedSource) -> Iterable[bytes]:
    del source
    return (b"\x00",)


TARGET = Target(name="canary", summary="a planted IndexError", check=check, seeds=_seeds)

"""
Pre-shared keys (RFC 9420 §8.4): their identifiers and how several combine into ``psk_secret``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated

from townsquare.mls.codec import U8, U16, U64, Opaque, Struct, When
from townsquare.mls.registries import PSKType, ResumptionPSKUsage

__all__ = ["PSKLabel", "PreSharedKeyID"]


def _is_external(fields: Mapping[str, object]) -> bool:
    return fields["psktype"] == PSKType.EXTERNAL


def _is_resumption(fields: Mapping[str, object]) -> bool:
    return fields["psktype"] == PSKType.RESUMPTION


@dataclass(frozen=True, slots=True, kw_only=True)
class PreSharedKeyID(Struct):
    """
    RFC 9420 §8.4::

        struct {
          PSKType psktype;
          select (PreSharedKeyID.psktype) {
            case external:
              opaque psk_id<V>;

            case resumption:
              ResumptionPSKUsage usage;
              opaque psk_group_id<V>;
              uint64 psk_epoch;
          };
          opaque psk_nonce<V>;
        } PreSharedKeyID;
    """

    psktype: Annotated[PSKType, U8]
    psk_id: Annotated[bytes | None, Opaque, When(_is_external)] = None
    usage: Annotated[ResumptionPSKUsage | None, U8, When(_is_resumption)] = None
    psk_group_id: Annotated[bytes | None, Opaque, When(_is_resumption)] = None
    psk_epoch: Annotated[int | None, U64, When(_is_resumption)] = None
    psk_nonce: Annotated[bytes, Opaque]


@dataclass(frozen=True, slots=True)
class PSKLabel(Struct):
    """
    RFC 9420 §8.4::

        struct {
            PreSharedKeyID id;
            uint16 index;
            uint16 count;
        } PSKLabel;
    """

    id: PreSharedKeyID
    index: Annotated[int, U16]
    count: Annotated[int, U16]

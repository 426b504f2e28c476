"""
The GroupContext (RFC 9420 §8.1): the summary of a group's state that every epoch's secrets bind to.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from townsquare.mls.codec import U16, U64, Opaque, Struct, Vector
from townsquare.mls.extensions import Extension
from townsquare.mls.registries import ProtocolVersion

__all__ = ["GroupContext"]


@dataclass(frozen=True, slots=True, kw_only=True)
class GroupContext(Struct):
    """
    RFC 9420 §8.1::

        struct {
            ProtocolVersion version = mls10;
            CipherSuite cipher_suite;
            opaque group_id<V>;
            uint64 epoch;
            opaque tree_hash<V>;
            opaque confirmed_transcript_hash<V>;
            Extension extensions<V>;
        } GroupContext;
    """

    version: Annotated[ProtocolVersion, U16] = ProtocolVersion.MLS10
    cipher_suite: Annotated[int, U16]
    group_id: Annotated[bytes, Opaque]
    epoch: Annotated[int, U64]
    tree_hash: Annotated[bytes, Opaque]
    confirmed_transcript_hash: Annotated[bytes, Opaque]
    extensions: Annotated[tuple[Extension, ...], Vector] = ()

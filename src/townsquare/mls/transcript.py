"""
Transcript hashes (RFC 9420 §8.2): the running hash of every commit a group has applied.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from townsquare.mls.codec import U16, Opaque, Struct
from townsquare.mls.framing import FramedContent
from townsquare.mls.registries import WireFormat

__all__ = ["ConfirmedTranscriptHashInput", "InterimTranscriptHashInput"]


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

"""
Checks ``deserialization.json``: variable-length vector headers decode to their lengths (§2.1.2).
"""

from __future__ import annotations

from collections.abc import Mapping

from townsquare.mls.codec import Reader, Writer
from townsquare.mls.testvectors.fields import expect_equal, hex_field, int_field


def check(case: Mapping[str, object]) -> None:
    """
    Decode one header, compare its length, and re-encode it.

    :raises VectorMismatch: on a different length or encoding.
    :raises DecodeError: if the header does not decode.
    """
    header = hex_field(case, "vlbytes_header")
    reader = Reader(header)
    length = reader.varint()
    reader.finish()
    expect_equal("length", length, int_field(case, "length"))
    # The vectors hold minimal encodings only, so encoding the length again
    # must give back the same header byte for byte.
    writer = Writer()
    writer.varint(length)
    expect_equal("re-encoded header", writer.getvalue(), header)

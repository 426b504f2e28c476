"""
The RFC 9420 §2.1 codec: primitives, decoding rules and their exact errors.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import pytest

from townsquare.mls.codec import (
    U8,
    U16,
    U32,
    U64,
    Fixed,
    Opaque,
    Optional,
    Reader,
    Select,
    Struct,
    Vector,
    When,
    Writer,
    decode_opaque,
    encode_opaque,
)
from townsquare.mls.errors import (
    DecodeError,
    InvalidOptionalPrefix,
    InvalidVarintPrefix,
    NonMinimalVarint,
    TrailingBytes,
    Truncated,
    UnknownEnumValue,
    UnknownVariant,
    UsageError,
)
from townsquare.mls.registries import ContentType


@dataclass(frozen=True, slots=True)
class Leafy(Struct):
    small: Annotated[int, U8]
    kind: Annotated[ContentType, U8]
    data: Annotated[bytes, Opaque]


@dataclass(frozen=True, slots=True)
class Other(Struct):
    value: Annotated[int, U64]


SAMPLE = Select("Sample", U16, lambda: {1: Leafy, 2: Other})


@dataclass(frozen=True, slots=True, kw_only=True)
class Outer(Struct):
    tag: Annotated[int, U32]
    guard: Annotated[bytes, Fixed(4)]
    items: Annotated[tuple[Annotated[int, U16], ...], Vector]
    maybe: Annotated[Leafy | None, Optional]
    choice: Annotated[Leafy | Other, SAMPLE]
    extra: Annotated[bytes | None, Opaque, When(lambda f: f["tag"] == 7)] = None


def _outer(tag: int = 7) -> Outer:
    return Outer(
        tag=tag,
        guard=b"\x01\x02\x03\x04",
        items=(1, 2, 0xFFFF),
        maybe=Leafy(small=5, kind=ContentType.COMMIT, data=b"xy"),
        choice=Other(value=2**64 - 1),
        extra=b"e" if tag == 7 else None,
    )


@pytest.mark.parametrize(
    ("value", "encoded"),
    [
        (0, "00"),
        (37, "25"),
        (63, "3f"),
        (64, "4040"),
        (15293, "7bbd"),
        (16383, "7fff"),
        (16384, "80004000"),
        (494878333, "9d7f3e7d"),
        (2**30 - 1, "bfffffff"),
    ],
)
def test_varint_round_trip(value: int, encoded: str) -> None:
    w = Writer()
    w.varint(value)
    assert w.getvalue().hex() == encoded
    r = Reader(bytes.fromhex(encoded))
    assert r.varint() == value
    r.finish()


@pytest.mark.parametrize("encoded", ["4025", "403f", "80000025", "80003fff"])
def test_non_minimal_varint_is_rejected(encoded: str) -> None:
    with pytest.raises(NonMinimalVarint) as info:
        Reader(bytes.fromhex(encoded)).varint()
    assert info.value.offset == 0


@pytest.mark.parametrize("encoded", ["c0", "c000000000000001", "ffffffff"])
def test_varint_prefix_0b11_is_rejected(encoded: str) -> None:
    with pytest.raises(InvalidVarintPrefix):
        Reader(bytes.fromhex(encoded)).varint()


@pytest.mark.parametrize("value", [-1, 2**30])
def test_varint_out_of_range_is_a_usage_error(value: int) -> None:
    with pytest.raises(UsageError):
        Writer().varint(value)


@pytest.mark.parametrize(
    ("method", "value"),
    [("uint8", 256), ("uint16", 2**16), ("uint32", 2**32), ("uint64", 2**64), ("uint8", -1)],
)
def test_integer_out_of_range_is_a_usage_error(method: str, value: int) -> None:
    with pytest.raises(UsageError):
        getattr(Writer(), method)(value)


def test_truncated_integers_raise_truncated() -> None:
    for method, width in (("uint16", 2), ("uint32", 4), ("uint64", 8)):
        with pytest.raises(Truncated):
            getattr(Reader(b"\x00" * (width - 1)), method)()


def test_opaque_helpers() -> None:
    assert encode_opaque(b"abc") == b"\x03abc"
    assert decode_opaque(b"\x03abc") == b"abc"
    with pytest.raises(Truncated):
        decode_opaque(b"\x04abc")
    with pytest.raises(TrailingBytes):
        decode_opaque(b"\x02abc")


def test_optional_presence_octet_must_be_0_or_1() -> None:
    data = bytearray(_outer().encode())
    # tag(4) + guard(4) + items(1 + 6) puts the presence octet at offset 15.
    assert data[15] == 1
    data[15] = 2
    with pytest.raises(InvalidOptionalPrefix) as info:
        Outer.decode(bytes(data))
    assert info.value.offset == 15


def test_struct_round_trip_with_every_form() -> None:
    for tag in (7, 8):
        value = _outer(tag)
        assert Outer.decode(value.encode()) == value


def test_every_strict_prefix_is_truncated() -> None:
    data = _outer().encode()
    for cut in range(len(data)):
        with pytest.raises(Truncated):
            Outer.decode(data[:cut])


def test_trailing_bytes_are_rejected() -> None:
    data = _outer().encode()
    with pytest.raises(TrailingBytes) as info:
        Outer.decode(data + b"\x00")
    assert info.value.offset == len(data)


def test_unknown_enum_value_is_rejected() -> None:
    encoded = Leafy(small=1, kind=ContentType.APPLICATION, data=b"").encode()
    bad = encoded[:1] + b"\x09" + encoded[2:]
    with pytest.raises(UnknownEnumValue):
        Leafy.decode(bad)


def test_unknown_select_tag_is_rejected() -> None:
    with pytest.raises(UnknownVariant):
        SAMPLE.decode(b"\x00\x03" + b"\x00" * 8)
    assert SAMPLE.decode(b"\x00\x02" + b"\x00" * 7 + b"\x05") == Other(value=5)


def test_vector_whose_length_runs_past_the_end_is_truncated() -> None:
    data = bytearray(_outer().encode())
    data[8] = 0x3F  # the items vector claims 63 bytes
    with pytest.raises(Truncated):
        Outer.decode(bytes(data))


def test_vector_element_cut_by_its_length_is_truncated() -> None:
    data = bytearray(_outer().encode())
    data[8] = 5  # 5 bytes cannot hold whole uint16 elements
    with pytest.raises(DecodeError):
        Outer.decode(bytes(data))


def test_encoding_checks_values() -> None:
    with pytest.raises(UsageError):
        Leafy(small=256, kind=ContentType.APPLICATION, data=b"").encode()
    with pytest.raises(UsageError):
        Outer(
            tag=1,
            guard=b"\x00",
            items=(),
            maybe=None,
            choice=Other(value=1),
        ).encode()
    with pytest.raises(UsageError):
        SAMPLE.encode(Outer(tag=1, guard=b"1234", items=(), maybe=None, choice=Other(value=1)))


def test_when_field_must_match_its_condition() -> None:
    present_when_absent = Outer(
        tag=8, guard=b"1234", items=(), maybe=None, choice=Other(value=1), extra=b"x"
    )
    with pytest.raises(UsageError):
        present_when_absent.encode()
    missing_when_required = Outer(
        tag=7, guard=b"1234", items=(), maybe=None, choice=Other(value=1), extra=None
    )
    with pytest.raises(UsageError):
        missing_when_required.encode()

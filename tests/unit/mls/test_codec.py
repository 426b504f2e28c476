"""
The RFC 9420 §2.1 codec: primitives, decoding rules and their exact errors.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import FrozenInstanceError, dataclass, replace
from typing import Annotated, Any

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
    generated_source,
)
from townsquare.mls.errors import (
    DecodeError,
    InvalidOptionalPrefix,
    InvalidValue,
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


# -- The generated struct codec ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Blobs(Struct):
    blob: Annotated[bytes, Opaque]
    words: Annotated[tuple[Annotated[int, U16], ...], Vector]
    longs: Annotated[tuple[Annotated[int, U64], ...], Vector]
    octets: Annotated[tuple[Annotated[int, U8], ...], Vector]
    items: Annotated[tuple[Leafy, ...], Vector]


def _blobs(size: int) -> Blobs:
    return Blobs(
        blob=bytes(range(256)) * (size // 256) + bytes(size % 256),
        words=tuple(range(size // 2)),
        longs=tuple(range(size // 8)),
        octets=tuple(i % 256 for i in range(size)),
        items=tuple(Leafy(small=1, kind=ContentType.COMMIT, data=b"z") for _ in range(size // 4)),
    )


@pytest.mark.parametrize("size", [0, 1, 63, 64, 100, 16383, 16384, 20000])
def test_lengths_of_every_varint_width_round_trip(size: int) -> None:
    value = _blobs(size)
    encoded = value.encode()
    assert Blobs.decode(encoded) == value
    # Each length is the one the Writer writes, whichever path encoded it.
    w = Writer()
    w.opaque(value.blob)
    assert encoded.startswith(w.getvalue())


def test_vector_length_is_widened_in_place() -> None:
    # 16 elements of 4 bytes fill 64 bytes: the reserved length octet becomes
    # a 2-byte varint and the content moves up by one byte.
    items = tuple(Leafy(small=i, kind=ContentType.PROPOSAL, data=b"q") for i in range(16))
    encoded = Blobs(blob=b"", words=(), longs=(), octets=(), items=items).encode()
    assert encoded[:5] == b"\x00\x00\x00\x00\x40"
    assert encoded[5] == 64
    assert Blobs.decode(encoded).items == items


@pytest.mark.parametrize(
    ("varint", "error", "offset", "message"),
    [
        ("4005", NonMinimalVarint, 0, "varint 5 not minimally encoded"),
        ("80000005", NonMinimalVarint, 0, "varint 5 not minimally encoded"),
        ("c0", InvalidVarintPrefix, 0, "varint prefix 0b11 is reserved"),
        ("40", Truncated, 1, "needed 1 bytes, 0 left"),
        ("8000", Truncated, 1, "needed 3 bytes, 1 left"),
    ],
)
def test_bad_varints_in_a_struct_fail_as_the_reader_fails(
    varint: str, error: type[DecodeError], offset: int, message: str
) -> None:
    data = bytes.fromhex(varint)
    with pytest.raises(error) as from_reader:
        Reader(data).varint()
    with pytest.raises(error) as from_struct:
        Blobs.decode(data)
    assert from_struct.value.offset == from_reader.value.offset == offset
    assert str(from_struct.value) == str(from_reader.value) == f"{message} (at byte {offset})"


def test_vector_of_integers_with_a_partial_element_is_truncated_there() -> None:
    # words<V> of 5 bytes: two uint16s, then 1 byte of a third.
    data = b"\x00" + b"\x05" + b"\x00\x01\x00\x02\x00" + b"\x00\x00\x00\x00"
    with pytest.raises(Truncated) as info:
        Blobs.decode(data)
    assert info.value.offset == 6
    assert str(info.value) == "needed 2 bytes, 1 left (at byte 6)"


def test_vector_longer_than_its_input_is_truncated_at_the_length() -> None:
    with pytest.raises(Truncated) as info:
        Blobs.decode(b"\x00\x04\x00\x01")
    assert info.value.offset == 2
    assert str(info.value) == "needed 4 bytes, 2 left (at byte 2)"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"blob": "text"}, "expected bytes, got str"),
        ({"words": [1, 2]}, "expected a tuple, got list"),
        ({"words": (1, 2**16)}, "65536 does not fit uint16"),
        ({"longs": (-1,)}, "-1 does not fit uint64"),
        ({"octets": (256,)}, "256 does not fit uint8"),
        ({"items": (Other(value=1),)}, "expected Leafy, got Other"),
    ],
)
def test_encoding_a_bad_field_is_a_usage_error(change: dict[str, Any], message: str) -> None:
    bad = replace(Blobs(blob=b"", words=(), longs=(), octets=(), items=()), **change)
    with pytest.raises(UsageError, match=message):
        bad.encode()


def test_failed_encode_into_leaves_the_writer_unchanged() -> None:
    w = Writer()
    w.uint8(7)
    bad = Blobs(blob=b"abc", words=(1, 2), longs=(), octets=(300,), items=())
    with pytest.raises(UsageError):
        Blobs.encode_into(w, bad)
    with pytest.raises(UsageError):
        SAMPLE.encode_into(w, bad)
    assert w.getvalue() == b"\x07"


def test_decode_from_continues_a_reader_and_counts_offsets_from_its_start() -> None:
    leafy = Leafy(small=1, kind=ContentType.COMMIT, data=b"ab")
    data = b"\xff\xff" + leafy.encode() + SAMPLE.encode(Other(value=9))
    r = Reader(data, 2)
    assert Leafy.decode_from(r) == leafy
    assert SAMPLE.decode_from(r) == Other(value=9)
    r.finish()
    # Leafy's data is cut after its length octet, at byte 5 of the whole input.
    with pytest.raises(Truncated) as info:
        Leafy.decode_from(Reader(data[:5], 2))
    assert str(info.value) == "needed 2 bytes, 0 left (at byte 5)"


@dataclass(frozen=True, slots=True)
class Checked(Struct):
    key: Annotated[bytes, Opaque]

    def __post_init__(self) -> None:
        if len(self.key) != 2:
            raise ValueError("key must be 2 bytes")


@dataclass(frozen=True, slots=True)
class HoldsChecked(Struct):
    before: Annotated[int, U8]
    checked: Checked


def test_post_init_runs_on_decode_and_its_value_error_is_invalid_value() -> None:
    assert HoldsChecked.decode(b"\x01\x02ab") == HoldsChecked(before=1, checked=Checked(b"ab"))
    with pytest.raises(InvalidValue) as info:
        HoldsChecked.decode(b"\x01\x03abc")
    # The offset is where the rejected struct ended.
    assert info.value.offset == 5
    assert "Checked: key must be 2 bytes" in str(info.value)


def test_decoded_values_are_ordinary_frozen_instances() -> None:
    value = _outer()
    decoded = Outer.decode(value.encode())
    assert decoded == value
    assert hash(decoded) == hash(value)
    assert repr(decoded) == repr(value)
    with pytest.raises(FrozenInstanceError):
        decoded.tag = 1  # type: ignore[misc]


@dataclass(frozen=True, slots=True)
class Chain(Struct):
    value: Annotated[int, U8]
    next: Annotated[Chain | None, Optional]


def test_a_struct_may_hold_itself() -> None:
    chain = Chain(1, Chain(2, Chain(3, None)))
    assert chain.encode() == bytes.fromhex("01 01 02 01 03 00")
    assert Chain.decode(chain.encode()) == chain


@dataclass(frozen=True, slots=True)
class Base(Struct):
    a: Annotated[int, U8]


@dataclass(frozen=True, slots=True)
class Derived(Base):
    b: Annotated[int, U8]


def test_a_subclass_gets_its_own_codec() -> None:
    assert Base(1).encode() == b"\x01"
    assert Derived(1, 2).encode() == b"\x01\x02"
    assert Base.decode(b"\x01") == Base(1)
    assert Derived.decode(b"\x01\x02") == Derived(1, 2)
    with pytest.raises(UsageError, match="expected Base, got Derived"):
        Base.encode_into(Writer(), Derived(1, 2))


INNER = Select("Inner", U16, lambda: {5: Leafy, 6: Other})
NESTED = Select("Nested", U8, lambda: {1: INNER, 2: Base})


@dataclass(frozen=True, slots=True)
class HoldsNested(Struct):
    choice: Annotated[Leafy | Other | Base, NESTED]


def test_nested_select_writes_both_tags() -> None:
    value = HoldsNested(Other(value=3))
    assert value.encode() == bytes.fromhex("01 0006 0000000000000003")
    assert HoldsNested.decode(value.encode()) == value
    assert NESTED.tag_of(Other(value=3)) == 1
    assert NESTED.decode(NESTED.encode(Base(4))) == Base(4)


def test_unknown_tags_name_the_select_and_the_tag_offset() -> None:
    with pytest.raises(UnknownVariant) as info:
        HoldsNested.decode(bytes.fromhex("01 0009"))
    assert (info.value.offset, str(info.value)) == (1, "unknown Inner tag 9 (at byte 1)")
    with pytest.raises(UnknownVariant) as info:
        HoldsNested.decode(bytes.fromhex("03"))
    assert (info.value.offset, str(info.value)) == (0, "unknown Nested tag 3 (at byte 0)")
    with pytest.raises(UsageError, match="Outer is not a variant of Nested"):
        HoldsNested(_outer()).encode()  # type: ignore[arg-type]


SEEN_BY_CONDITION: list[tuple[str, ...]] = []


def _record(fields: Mapping[str, object]) -> bool:
    SEEN_BY_CONDITION.append(tuple(fields))
    return fields["data"] == b"y"


@dataclass(frozen=True, slots=True, kw_only=True)
class Clashing(Struct):
    # Field names that are also names inside the generated functions.
    data: Annotated[bytes, Opaque]
    pos: Annotated[int, U8]
    end: Annotated[bytes | None, Opaque, When(_record)] = None
    value: Annotated[int | None, U8, When(_record)] = None
    buf: Annotated[tuple[Annotated[int, U16], ...], Vector] = ()


def test_conditions_see_earlier_fields_and_field_names_cannot_clash() -> None:
    value = Clashing(data=b"y", pos=1, end=b"e", value=2, buf=(3,))
    SEEN_BY_CONDITION.clear()
    encoded = value.encode()
    # Encoding shows each condition the fields up to its own; decoding, those before it.
    assert SEEN_BY_CONDITION == [("data", "pos", "end"), ("data", "pos", "end", "value")]
    SEEN_BY_CONDITION.clear()
    assert Clashing.decode(encoded) == value
    assert SEEN_BY_CONDITION == [("data", "pos"), ("data", "pos", "end")]
    absent = Clashing(data=b"n", pos=1)
    assert Clashing.decode(absent.encode()) == absent


def test_generated_source_is_readable_and_shows_in_tracebacks() -> None:
    source = generated_source(Outer)
    assert source.startswith("def encode_Outer(buf, value):\n")
    assert "\ndef decode_Outer(data, pos, end):\n" in source
    assert "    # items: uint16<V>\n" in source
    assert "    # extra: opaque<V>, only when <lambda>(fields)\n" in source
    compile(source, "<check>", "exec")
    with pytest.raises(Truncated) as info:
        Outer.decode(b"\x00")
    frame = info.traceback[-1]
    assert str(frame.path).startswith("<townsquare.mls.codec ")
    assert "raise _truncated(4, pos, end)" in str(frame.statement)


def test_empty_struct_round_trips() -> None:
    @dataclass(frozen=True, slots=True)
    class Empty(Struct):
        pass

    assert Empty().encode() == b""
    assert Empty.decode(b"") == Empty()
    with pytest.raises(TrailingBytes):
        Empty.decode(b"\x00")


def test_select_encode_into_tag_of_and_trailing_bytes() -> None:
    w = Writer()
    SAMPLE.encode_into(w, Other(value=1))
    assert w.getvalue() == SAMPLE.encode(Other(value=1))
    with pytest.raises(UsageError, match="Outer is not a variant of Sample"):
        SAMPLE.tag_of(_outer())
    with pytest.raises(TrailingBytes) as info:
        SAMPLE.decode(SAMPLE.encode(Other(value=1)) + b"\x00")
    assert info.value.offset == 10


TWIN = Select("Sample", U8, lambda: {3: Other})


@dataclass(frozen=True, slots=True)
class value(Struct):  # noqa: N801 - a class named like a local of the generated code
    first: Annotated[Leafy | Other, SAMPLE]
    second: Annotated[Other, TWIN]


def test_generated_names_never_clash() -> None:
    v = value(first=Other(value=1), second=Other(value=2))
    assert value.decode(v.encode()) == v
    source = generated_source(value)
    assert "Sample_decoders[" in source
    assert "Sample_decoders_2[" in source


@dataclass(frozen=True)
class Unslotted(Struct):
    a: Annotated[int, U8]


def test_struct_without_slots_is_built_by_its_constructor() -> None:
    assert Unslotted.decode(b"\x05") == Unslotted(5)
    assert "Unslotted(a=f_a)" in generated_source(Unslotted)


@dataclass(frozen=True, slots=True)
class NoForm(Struct):
    a: int


@dataclass(frozen=True, slots=True)
class BadVector(Struct):
    a: Annotated[tuple[int, int], Vector]


@dataclass(frozen=True, slots=True)
class UnknownForm(Struct):
    a: Annotated[int, "uint8"]


@pytest.mark.parametrize(
    ("cls", "message"),
    [
        (NoForm, "NoForm.a: field type <class 'int'> declares no wire form"),
        (BadVector, r"BadVector.a: Vector needs tuple\[T, ...\]"),
        (UnknownForm, "UnknownForm.a: unknown wire form 'uint8'"),
    ],
)
def test_fields_without_a_wire_form_are_a_usage_error(cls: type[Struct], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        cls.decode(b"")


def test_reader_and_writer_primitives_round_trip() -> None:
    w = Writer()
    w.uint8(1)
    w.uint16(2)
    w.uint32(3)
    w.uint64(4)
    w.fixed(b"abcd", 4)
    w.presence(present=True)
    w.presence(present=False)
    w.opaque(b"xyz")
    w.fixed(b"rest")
    r = Reader(w.getvalue())
    assert (r.uint8(), r.uint16(), r.uint32(), r.uint64()) == (1, 2, 3, 4)
    assert r.fixed(4) == b"abcd"
    assert (r.presence(), r.presence()) == (True, False)
    assert r.vector().rest() == b"xyz"
    assert r.rest() == b"rest"
    r.finish()
    with pytest.raises(UsageError):
        Writer().fixed(b"abc", 4)
    with pytest.raises(InvalidOptionalPrefix) as info:
        Reader(b"\x00\x02", 1).presence()
    assert info.value.offset == 1

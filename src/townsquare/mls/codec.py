"""
The TLS presentation language of RFC 9420 §2.1: the only place that turns bytes into values.

Two layers live here:

* :class:`Reader` and :class:`Writer`, which read and write the primitive
  encodings: fixed-width big-endian integers, the variable-length integer of
  RFC 9420 §2.1.2, ``opaque x<V>`` (a varint length then the bytes),
  ``opaque x[N]`` and the presence octet of ``optional<T>`` (§2.1.1).
* A declarative struct codec. A struct is a frozen dataclass deriving from
  :class:`Struct` whose fields, in RFC order, declare their wire form with
  ``typing.Annotated``::

      @dataclass(frozen=True, slots=True)
      class Remove(Struct):
          removed: Annotated[int, U32]

  Supported forms: ``U8``/``U16``/``U32``/``U64`` (on ``int`` or an
  ``IntEnum``, whose unknown values raise :class:`UnknownEnumValue`),
  ``Opaque`` (``opaque x<V>``), ``Fixed(n)`` (``opaque x[n]``), ``Vector``
  (``T x<V>`` on ``tuple[T, ...]``), ``Optional`` (``optional<T>`` on
  ``T | None``), a nested :class:`Struct`, a :class:`Select` (``select`` on a
  tag) and ``When`` (a field present only when earlier fields say so, as in
  ``FramedContentAuthData``'s confirmation tag).

  The encoder and decoder of each class are derived once, on first use, from
  its type hints. ``decode`` checks every length against the remaining input
  before allocating and, at the top level, rejects trailing bytes, so
  ``encode(decode(b)) == b`` for every ``b`` that decodes: what lets us hash
  and sign re-encoded structs.

Every failure raises a subclass of :class:`~townsquare.mls.errors.DecodeError`
carrying the offset where decoding stopped; no ``IndexError`` or
``struct.error`` escapes.
"""

from __future__ import annotations

import enum
import struct as _struct
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Annotated, Any, Self

from townsquare.mls.errors import (
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

__all__ = [
    "U8",
    "U16",
    "U32",
    "U64",
    "VARINT_MAX",
    "Fixed",
    "Opaque",
    "Optional",
    "Reader",
    "Select",
    "Struct",
    "Vector",
    "When",
    "Writer",
    "decode_opaque",
    "encode_opaque",
]

# RFC 9420 §2.1.2: the largest value a variable-length integer can hold
# (30 bits, with the 4-byte form).
VARINT_MAX = (1 << 30) - 1

_U16 = _struct.Struct(">H")
_U32 = _struct.Struct(">I")
_U64 = _struct.Struct(">Q")


class Reader:
    """
    A cursor over bytes that reads RFC 9420 §2.1 primitives and never reads past its end.
    """

    __slots__ = ("_data", "_end", "_pos")

    def __init__(self, data: bytes, start: int = 0, end: int | None = None) -> None:
        """
        Read ``data[start:end]``.

        :param data: the bytes to read.
        :param start: where reading starts.
        :param end: where reading must stop (default: the end of ``data``).
        """
        self._data = data
        self._pos = start
        self._end = len(data) if end is None else end

    @property
    def offset(self) -> int:
        """
        The position of the next byte to read, counted from the start of the whole input.
        """
        return self._pos

    def remaining(self) -> int:
        """
        :returns: how many bytes are left before this reader's end.
        """
        return self._end - self._pos

    def _take(self, n: int) -> int:
        pos = self._pos
        if n > self._end - pos:
            raise Truncated(f"needed {n} bytes, {self._end - pos} left", pos)
        self._pos = pos + n
        return pos

    def uint8(self) -> int:
        """
        :returns: a one-byte unsigned integer.
        :raises Truncated: at the end of input.
        """
        return self._data[self._take(1)]

    def uint16(self) -> int:
        """
        :returns: a two-byte big-endian unsigned integer.
        :raises Truncated: at the end of input.
        """
        return int(_U16.unpack_from(self._data, self._take(2))[0])

    def uint32(self) -> int:
        """
        :returns: a four-byte big-endian unsigned integer.
        :raises Truncated: at the end of input.
        """
        return int(_U32.unpack_from(self._data, self._take(4))[0])

    def uint64(self) -> int:
        """
        :returns: an eight-byte big-endian unsigned integer.
        :raises Truncated: at the end of input.
        """
        return int(_U64.unpack_from(self._data, self._take(8))[0])

    def varint(self) -> int:
        """
        Read a variable-length integer (RFC 9420 §2.1.2).

        :returns: its value.
        :raises Truncated: at the end of input.
        :raises InvalidVarintPrefix: if the two high bits are ``0b11``.
        :raises NonMinimalVarint: if a shorter encoding existed.
        """
        start = self._pos
        first = self.uint8()
        prefix = first >> 6
        if prefix == 0:
            return first
        if prefix == 1:
            value = ((first & 0x3F) << 8) | self.uint8()
            minimum = 1 << 6
        elif prefix == 2:
            rest = self._data[self._take(3) : self._pos]
            value = ((first & 0x3F) << 24) | int.from_bytes(rest, "big")
            minimum = 1 << 14
        else:
            # RFC 9420 §2.1.2: "the two most significant bits ... 11 ... is
            # invalid"; the 8-byte form of QUIC is not allowed in MLS.
            raise InvalidVarintPrefix("varint prefix 0b11 is reserved", start)
        if value < minimum:
            # RFC 9420 §2.1.2: "the length MUST be encoded using the minimum
            # number of bytes necessary".
            raise NonMinimalVarint(f"varint {value} not minimally encoded", start)
        return value

    def fixed(self, n: int) -> bytes:
        """
        :param n: the number of bytes.
        :returns: exactly ``n`` bytes (``opaque x[n]``).
        :raises Truncated: if fewer remain.
        """
        pos = self._take(n)
        return self._data[pos : pos + n]

    def opaque(self) -> bytes:
        """
        :returns: the bytes of an ``opaque x<V>``: a varint length, then that many bytes.
        :raises DecodeError: on a bad length or truncation.
        """
        return self.fixed(self.varint())

    def vector(self) -> Reader:
        """
        Read a vector's varint length and return a reader over exactly its content.

        :returns: a reader bounded to the vector's bytes; this reader moves past them.
        :raises DecodeError: on a bad length or truncation.
        """
        length = self.varint()
        start = self._take(length)
        return Reader(self._data, start, start + length)

    def presence(self) -> bool:
        """
        :returns: whether an ``optional<T>`` value follows (RFC 9420 §2.1.1).
        :raises InvalidOptionalPrefix: if the octet is neither 0 nor 1.
        """
        start = self._pos
        octet = self.uint8()
        if octet > 1:
            raise InvalidOptionalPrefix(f"optional presence octet {octet}", start)
        return octet == 1

    def rest(self) -> bytes:
        """
        :returns: every remaining byte (used only for padding, RFC 9420 §6.3.1).
        """
        return self.fixed(self.remaining())

    def finish(self) -> None:
        """
        Assert that the value ended where the input did.

        :raises TrailingBytes: if any byte remains.
        """
        if self._pos != self._end:
            raise TrailingBytes(f"{self._end - self._pos} trailing bytes", self._pos)


class Writer:
    """
    Accumulates RFC 9420 §2.1 encodings.
    """

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        """
        Start with no bytes.
        """
        self._buf = bytearray()

    def getvalue(self) -> bytes:
        """
        :returns: everything written so far.
        """
        return bytes(self._buf)

    def uint8(self, value: int) -> None:
        """
        :param value: an integer in ``[0, 2**8)``.
        :raises UsageError: if it does not fit.
        """
        if not 0 <= value <= 0xFF:
            raise UsageError(f"{value} does not fit uint8")
        self._buf.append(value)

    def uint16(self, value: int) -> None:
        """
        :param value: an integer in ``[0, 2**16)``.
        :raises UsageError: if it does not fit.
        """
        if not 0 <= value <= 0xFFFF:
            raise UsageError(f"{value} does not fit uint16")
        self._buf += _U16.pack(value)

    def uint32(self, value: int) -> None:
        """
        :param value: an integer in ``[0, 2**32)``.
        :raises UsageError: if it does not fit.
        """
        if not 0 <= value <= 0xFFFFFFFF:
            raise UsageError(f"{value} does not fit uint32")
        self._buf += _U32.pack(value)

    def uint64(self, value: int) -> None:
        """
        :param value: an integer in ``[0, 2**64)``.
        :raises UsageError: if it does not fit.
        """
        if not 0 <= value <= 0xFFFFFFFFFFFFFFFF:
            raise UsageError(f"{value} does not fit uint64")
        self._buf += _U64.pack(value)

    def varint(self, value: int) -> None:
        """
        Write ``value`` in the shortest variable-length form (RFC 9420 §2.1.2).

        :raises UsageError: if it exceeds :data:`VARINT_MAX`.
        """
        if value < 0x40 and value >= 0:
            self._buf.append(value)
        elif 0 <= value < 0x4000:
            self._buf += _U16.pack(0x4000 | value)
        elif 0 <= value <= VARINT_MAX:
            self._buf += _U32.pack(0x80000000 | value)
        else:
            raise UsageError(f"{value} does not fit a varint")

    def fixed(self, data: bytes, n: int | None = None) -> None:
        """
        Write ``data`` with no length prefix (``opaque x[n]``).

        :raises UsageError: if ``n`` is given and ``data`` is not that long.
        """
        if n is not None and len(data) != n:
            raise UsageError(f"expected {n} bytes, got {len(data)}")
        self._buf += data

    def opaque(self, data: bytes) -> None:
        """
        Write ``opaque x<V>``: the varint length, then the bytes.
        """
        self.varint(len(data))
        self._buf += data

    def presence(self, *, present: bool) -> None:
        """
        Write the presence octet of ``optional<T>`` (RFC 9420 §2.1.1).
        """
        self._buf.append(1 if present else 0)


def encode_opaque(data: bytes) -> bytes:
    """
    :returns: ``data`` as ``opaque x<V>``.
    """
    w = Writer()
    w.opaque(data)
    return w.getvalue()


def decode_opaque(data: bytes) -> bytes:
    """
    :returns: the content of a complete ``opaque x<V>`` encoding.
    :raises DecodeError: if ``data`` is not exactly one such value.
    """
    r = Reader(data)
    value = r.opaque()
    r.finish()
    return value


# -- Wire forms -------------------------------------------------------------------------

_Encoder = Callable[[Writer, Any], None]
_Decoder = Callable[[Reader], Any]


@dataclass(frozen=True, slots=True)
class _Int:
    width: int


U8 = _Int(1)
U16 = _Int(2)
U32 = _Int(4)
U64 = _Int(8)


class _OpaqueForm:
    """
    ``opaque x<V>``.
    """


Opaque = _OpaqueForm()


@dataclass(frozen=True, slots=True)
class Fixed:
    """
    ``opaque x[n]``: exactly ``n`` bytes, no length prefix.
    """

    n: int


class _VectorForm:
    """
    ``T x<V>``: a varint byte length, then elements until it is used up.
    """


Vector = _VectorForm()


class _OptionalForm:
    """
    ``optional<T>``: a presence octet, then the value if present.
    """


Optional = _OptionalForm()


@dataclass(frozen=True, slots=True)
class When:
    """
    A field present only when ``condition`` holds for the fields decoded before it.

    The condition sees earlier fields by name; when it is false, the field's
    value must be ``None``.
    """

    condition: Callable[[Mapping[str, Any]], bool]


class Select:
    """
    ``select (tag) { case a: A; ... }``: a tag of the given width, then the variant's body.

    ``variants`` maps each tag to a :class:`Struct` class, or to another
    ``Select`` whose variants then all share the outer tag (a nested select,
    as ``FramedContent``'s content type selects a ``Proposal`` that has its own
    type). A value's tag is found from its class. An unknown tag raises
    :class:`UnknownVariant`, because the body of an unknown variant has no
    length and cannot be skipped.
    """

    __slots__ = ("_by_class", "_tag_codec", "_variants_factory", "name")

    def __init__(
        self,
        name: str,
        tag: _Int,
        variants: Callable[[], Mapping[int, type[Struct] | Select]],
    ) -> None:
        """
        Describe a select.

        :param name: the select's name in error messages.
        :param tag: the tag's width.
        :param variants: a function returning the tag → variant map, called on
            first use so that variants may be defined later in the module.
        """
        self.name = name
        self._tag_codec = _int_codec(tag.width, None)
        self._variants_factory = variants
        self._by_class: dict[type, tuple[int, _Encoder]] | None = None

    def _table(self) -> dict[type, tuple[int, _Encoder]]:
        if self._by_class is None:
            table: dict[type, tuple[int, _Encoder]] = {}
            for tag, variant in self._variants_factory().items():
                if isinstance(variant, Select):
                    for cls in variant._table():
                        table[cls] = (tag, variant.encode_into)
                else:
                    table[variant] = (tag, variant.encode_into)
            self._by_class = table
        return self._by_class

    def tag_of(self, value: object) -> int:
        """
        :returns: the tag that ``value``'s class is encoded with.
        :raises UsageError: if its class is not a variant of this select.
        """
        try:
            return self._table()[type(value)][0]
        except KeyError:
            raise UsageError(f"{type(value).__name__} is not a variant of {self.name}") from None

    def encode_into(self, w: Writer, value: object) -> None:
        """
        Write the tag of ``value`` and then its body.

        :raises UsageError: if ``value`` is not one of the variants.
        """
        try:
            tag, encoder = self._table()[type(value)]
        except KeyError:
            raise UsageError(f"{type(value).__name__} is not a variant of {self.name}") from None
        self._tag_codec[0](w, tag)
        encoder(w, value)

    def decode_from(self, r: Reader) -> Any:
        """
        Read a tag and the body of the variant it names.

        :raises UnknownVariant: if the tag names no variant.
        """
        start = r.offset
        tag = self._tag_codec[1](r)
        variant = self._variants_factory().get(tag)
        if variant is None:
            raise UnknownVariant(f"unknown {self.name} tag {tag}", start)
        return variant.decode_from(r)

    def encode(self, value: object) -> bytes:
        """
        :returns: the encoding of ``value`` (tag and body).
        :raises UsageError: if ``value`` is not one of the variants.
        """
        w = Writer()
        self.encode_into(w, value)
        return w.getvalue()

    def decode(self, data: bytes) -> Any:
        """
        :returns: the variant value that ``data`` encodes, with nothing left over.
        :raises DecodeError: on any malformed input.
        """
        r = Reader(data)
        value = self.decode_from(r)
        r.finish()
        return value


# -- Structs ----------------------------------------------------------------------------


class Struct:
    """
    Base of every RFC 9420 struct: its ``encode``/``decode`` are derived from its fields.
    """

    __slots__ = ()

    @classmethod
    def _get_codec(cls) -> tuple[_Encoder, _Decoder]:
        codec = cls.__dict__.get("_codec_cache")
        if codec is None:
            codec = _derive_struct(cls)
            # Stored on the class itself (not inherited) so that a subclass
            # never reuses its parent's field list.
            type.__setattr__(cls, "_codec_cache", codec)
        return typing.cast("tuple[_Encoder, _Decoder]", codec)

    def encode(self) -> bytes:
        """
        :returns: this value's RFC 9420 encoding.
        :raises UsageError: if a field holds a value its wire form cannot carry.
        """
        w = Writer()
        self._get_codec()[0](w, self)
        return w.getvalue()

    @classmethod
    def encode_into(cls, w: Writer, value: object) -> None:
        """
        Append ``value``'s encoding to ``w``.
        """
        cls._get_codec()[0](w, value)

    @classmethod
    def decode(cls, data: bytes) -> Self:
        """
        :param data: exactly one encoded value.
        :returns: the value.
        :raises DecodeError: on malformed input or trailing bytes.
        """
        r = Reader(data)
        value = cls._get_codec()[1](r)
        r.finish()
        return typing.cast("Self", value)

    @classmethod
    def decode_from(cls, r: Reader) -> Self:
        """
        :returns: one value read from ``r``, which moves past it.
        :raises DecodeError: on malformed input.
        """
        return typing.cast("Self", cls._get_codec()[1](r))


def _int_codec(width: int, enum_cls: type[enum.IntEnum] | None) -> tuple[_Encoder, _Decoder]:
    write_name = {1: "uint8", 2: "uint16", 4: "uint32", 8: "uint64"}[width]
    read = {1: Reader.uint8, 2: Reader.uint16, 4: Reader.uint32, 8: Reader.uint64}[width]
    write = getattr(Writer, write_name)

    if enum_cls is None:
        return write, read

    members = {int(m): m for m in enum_cls}

    def decode_enum(r: Reader) -> Any:
        start = r.offset
        value = read(r)
        member = members.get(value)
        if member is None:
            raise UnknownEnumValue(f"{value} is not a valid {enum_cls.__name__}", start)
        return member

    return write, decode_enum


def _opaque_codec() -> tuple[_Encoder, _Decoder]:
    def encode(w: Writer, value: Any) -> None:
        if not isinstance(value, bytes):
            raise UsageError(f"expected bytes, got {type(value).__name__}")
        w.opaque(value)

    return encode, Reader.opaque


def _fixed_codec(n: int) -> tuple[_Encoder, _Decoder]:
    def encode(w: Writer, value: Any) -> None:
        w.fixed(value, n)

    def decode(r: Reader) -> Any:
        return r.fixed(n)

    return encode, decode


def _vector_codec(item: tuple[_Encoder, _Decoder]) -> tuple[_Encoder, _Decoder]:
    item_encode, item_decode = item

    def encode(w: Writer, value: Any) -> None:
        if not isinstance(value, tuple):
            raise UsageError(f"expected a tuple, got {type(value).__name__}")
        inner = Writer()
        for element in value:
            item_encode(inner, element)
        w.opaque(inner.getvalue())

    def decode(r: Reader) -> Any:
        sub = r.vector()
        out = []
        while sub.remaining():
            out.append(item_decode(sub))
        return tuple(out)

    return encode, decode


def _optional_codec(item: tuple[_Encoder, _Decoder]) -> tuple[_Encoder, _Decoder]:
    item_encode, item_decode = item

    def encode(w: Writer, value: Any) -> None:
        w.presence(present=value is not None)
        if value is not None:
            item_encode(w, value)

    def decode(r: Reader) -> Any:
        return item_decode(r) if r.presence() else None

    return encode, decode


def _strip_none(hint: Any) -> Any:
    """
    Return ``T`` for ``T | None``.
    """
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1:
            return args[0]
        return typing.Union[tuple(args)]  # noqa: UP007 - built at run time from a tuple
    return hint


def _codec_for(hint: Any, owner: str) -> tuple[_Encoder, _Decoder]:
    """
    Derive the codec of one type hint (with its ``Annotated`` wire form).
    """
    if typing.get_origin(hint) is Annotated:
        base, *forms = typing.get_args(hint)
        return _codec_for_form(base, [f for f in forms if not isinstance(f, When)], owner)
    if isinstance(hint, type) and issubclass(hint, Struct):
        return hint.encode_into, hint.decode_from
    raise UsageError(f"{owner}: field type {hint!r} declares no wire form")


def _codec_for_form(base: Any, forms: list[Any], owner: str) -> tuple[_Encoder, _Decoder]:
    if not forms:
        return _codec_for(base, owner)
    form = forms[0]
    if isinstance(form, _Int):
        enum_cls = base if isinstance(base, type) and issubclass(base, enum.IntEnum) else None
        return _int_codec(form.width, enum_cls)
    if form is Opaque:
        return _opaque_codec()
    if isinstance(form, Fixed):
        return _fixed_codec(form.n)
    if isinstance(form, Select):
        return form.encode_into, form.decode_from
    if form is Vector:
        (item_hint, ellipsis) = typing.get_args(base)
        if ellipsis is not Ellipsis:
            raise UsageError(f"{owner}: Vector needs tuple[T, ...]")
        return _vector_codec(_codec_for_form(item_hint, forms[1:], owner))
    if form is Optional:
        return _optional_codec(_codec_for_form(_strip_none(base), forms[1:], owner))
    raise UsageError(f"{owner}: unknown wire form {form!r}")


def _derive_struct(cls: type[Struct]) -> tuple[_Encoder, _Decoder]:
    hints = typing.get_type_hints(cls, include_extras=True)
    names: list[str] = []
    encoders: list[_Encoder] = []
    decoders: list[_Decoder] = []
    conditions: list[Callable[[Mapping[str, Any]], bool] | None] = []
    for f in fields(cls):  # type: ignore[arg-type]  # every Struct is a dataclass
        hint = hints[f.name]
        when = None
        if typing.get_origin(hint) is Annotated:
            when = next((a for a in typing.get_args(hint)[1:] if isinstance(a, When)), None)
            if when is not None:
                base = _strip_none(typing.get_args(hint)[0])
                forms = [a for a in typing.get_args(hint)[1:] if not isinstance(a, When)]
                hint = Annotated[(base, *forms)] if forms else base
        encode, decode = _codec_for(hint, f"{cls.__name__}.{f.name}")
        names.append(f.name)
        encoders.append(encode)
        decoders.append(decode)
        conditions.append(when.condition if when is not None else None)

    plan = tuple(zip(names, encoders, decoders, conditions, strict=True))
    has_conditions = any(c is not None for c in conditions)

    def encode_struct(w: Writer, value: Any) -> None:
        if type(value) is not cls:
            raise UsageError(f"expected {cls.__name__}, got {type(value).__name__}")
        if not has_conditions:
            for name, encode, _, _ in plan:
                encode(w, getattr(value, name))
            return
        seen: dict[str, Any] = {}
        for name, encode, _, condition in plan:
            field_value = getattr(value, name)
            seen[name] = field_value
            if condition is not None and not condition(seen):
                if field_value is not None:
                    raise UsageError(f"{cls.__name__}.{name} must be None here")
                continue
            if condition is not None and field_value is None:
                raise UsageError(f"{cls.__name__}.{name} is required here")
            encode(w, field_value)

    def decode_struct(r: Reader) -> Any:
        values: dict[str, Any] = {}
        for name, _, decode, condition in plan:
            if condition is not None and not condition(values):
                values[name] = None
                continue
            values[name] = decode(r)
        try:
            return cls(**values)
        except ValueError as exc:
            # A struct's __post_init__ rejects values the RFC forbids (for
            # example a wrong key length); that is bad input, not a bug.
            raise InvalidValue(f"{cls.__name__}: {exc}", r.offset) from exc

    return encode_struct, decode_struct

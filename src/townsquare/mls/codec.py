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

How structs are encoded and decoded
-----------------------------------

A joiner of a 10,000-member group decodes some 20,000 nodes and re-encodes
each of them for tree hashes and signatures (RFC 9420 §7.8, §7.3), so each
struct's codec is generated code rather than an interpreter walking its
fields. On a class's first use, :func:`_derive_struct` reads its type hints
into a *plan* (per field: an integer width, bytes, a vector or optional of an
inner plan, a nested struct or a select), writes the source of two functions
specialised to that class, and compiles them once:

* ``encode_<Class>(buf, value)`` appends ``value``'s encoding to a
  ``bytearray``. A vector reserves one length octet, writes its elements in
  place and widens the octet to a 2- or 4-byte varint only if the content
  reached 64 bytes, so nested vectors are never copied; a vector of integers
  knows its length up front.
* ``decode_<Class>(data, pos, end)`` reads one value from ``data[pos:end]``
  and returns it with the position after it. Positions are local integers;
  every length is checked against ``end`` (or the end of the enclosing
  vector) before anything is sliced. Vectors of integers are unpacked in one
  ``struct`` call.

Each check of :class:`Reader` and :class:`Writer` is written out inline, with
the same error class, message and offset; rare and failing cases (varints of
two or more bytes, every error) call the small helpers below, which are shared
with :class:`Reader`. Nested structs are called through globals that bind to
the real function on its first call, so deriving one class never derives
another, and a select fills its tag tables on first use, when its variants
are certain to exist. A decoded value is built as its dataclass ``__init__``
would build it, by setting each slot, unless the class has a
``__post_init__`` or anything else :func:`_slot_setters` cannot vouch for;
then ``__init__`` is called and its ``ValueError`` becomes
:class:`InvalidValue`.

To read what was generated, ``print(generated_source(Lifetime))``; tracebacks
that logging or pytest format show the generated lines too. For ``Lifetime``
the decoder is::

    def decode_Lifetime(data, pos, end):
        # not_before: uint64
        if end - pos < 8:
            raise _truncated(8, pos, end)
        f_not_before = _unpack_u64(data, pos)[0]
        pos += 8
        # not_after: uint64
        if end - pos < 8:
            raise _truncated(8, pos, end)
        f_not_after = _unpack_u64(data, pos)[0]
        pos += 8
        # What the dataclass __init__ does, minus its per-field lookups.
        value = _new(Lifetime)
        set_not_before(value, f_not_before)
        set_not_after(value, f_not_after)
        return value, pos
"""

from __future__ import annotations

import enum
import keyword
import linecache
import re
import struct as _struct
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Annotated, Any, ClassVar, Self

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
    "generated_source",
    "opaque_size",
]

# RFC 9420 §2.1.2: the largest value a variable-length integer can hold
# (30 bits, with the 4-byte form).
VARINT_MAX = (1 << 30) - 1

_U16 = _struct.Struct(">H")
_U32 = _struct.Struct(">I")
_U64 = _struct.Struct(">Q")

_UINT_NAME = {1: "uint8", 2: "uint16", 4: "uint32", 8: "uint64"}
_UINT_MAX = {1: 0xFF, 2: 0xFFFF, 4: 0xFFFFFFFF, 8: 0xFFFFFFFFFFFFFFFF}
_UINT_FORMAT = {1: "B", 2: "H", 4: "I", 8: "Q"}
_UNPACK_UINT = {2: _U16.unpack_from, 4: _U32.unpack_from, 8: _U64.unpack_from}


# -- Primitives shared by Reader, Writer and the generated code ---------------------------


def _truncated(n: int, pos: int, end: int) -> Truncated:
    """
    The error of needing ``n`` bytes at ``pos`` when the input stops at ``end``.
    """
    return Truncated(f"needed {n} bytes, {end - pos} left", pos)


def _read_varint(data: bytes, pos: int, end: int) -> tuple[int, int]:
    """
    Read a variable-length integer (RFC 9420 §2.1.2) at ``pos``, which must be before ``end``.

    :returns: its value and the position after it.
    """
    first = data[pos]
    prefix = first >> 6
    if prefix == 0:
        return first, pos + 1
    if prefix == 1:
        if end - pos < 2:
            raise _truncated(1, pos + 1, end)
        value = ((first & 0x3F) << 8) | data[pos + 1]
        minimum = 1 << 6
        after = pos + 2
    elif prefix == 2:
        if end - pos < 4:
            raise _truncated(3, pos + 1, end)
        value = ((first & 0x3F) << 24) | int.from_bytes(data[pos + 1 : pos + 4], "big")
        minimum = 1 << 14
        after = pos + 4
    else:
        # RFC 9420 §2.1.2: "the two most significant bits ... 11 ... is
        # invalid"; the 8-byte form of QUIC is not allowed in MLS.
        raise InvalidVarintPrefix("varint prefix 0b11 is reserved", pos)
    if value < minimum:
        # RFC 9420 §2.1.2: "the length MUST be encoded using the minimum
        # number of bytes necessary".
        raise NonMinimalVarint(f"varint {value} not minimally encoded", pos)
    return value, after


def _varint_bytes(value: int) -> bytes:
    """
    :returns: ``value`` in the shortest variable-length form (RFC 9420 §2.1.2).
    :raises UsageError: if it is negative or exceeds :data:`VARINT_MAX`.
    """
    if 0 <= value < 0x40:
        return bytes((value,))
    if 0 <= value < 0x4000:
        return _U16.pack(0x4000 | value)
    if 0 <= value <= VARINT_MAX:
        return _U32.pack(0x80000000 | value)
    raise UsageError(f"{value} does not fit a varint")


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
            raise _truncated(n, pos, self._end)
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
        pos = self._pos
        if pos >= self._end:
            raise _truncated(1, pos, self._end)
        value, self._pos = _read_varint(self._data, pos, self._end)
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
        self._buf += _varint_bytes(value)

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


def opaque_size(n: int) -> int:
    """
    :returns: the size of an ``opaque x<V>`` of ``n`` bytes: the varint length (RFC 9420
        §2.1.2, 1, 2 or 4 bytes) and the bytes.
    :raises UsageError: if ``n`` does not fit a varint.
    """
    if 0 <= n < 0x40:
        return 1 + n
    if 0 <= n < 0x4000:
        return 2 + n
    if 0 <= n <= VARINT_MAX:
        return 4 + n
    raise UsageError(f"{n} does not fit a varint")


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

# What the generated code is: ``encode(buf, value)`` appends to ``buf``;
# ``decode(data, pos, end)`` returns the value and the position after it.
_Encoder = Callable[[bytearray, Any], None]
_Decoder = Callable[[bytes, int, int], tuple[Any, int]]


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


def _uint_bytes(width: int, value: int) -> bytes:
    """
    :returns: ``value`` as a ``width``-byte big-endian integer.
    :raises UsageError: if it does not fit.
    """
    w = Writer()
    getattr(w, _UINT_NAME[width])(value)
    return w.getvalue()


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

    __slots__ = (
        "_decoders",
        "_encoders",
        "_prepared",
        "_tag_width",
        "_tags",
        "_variants_factory",
        "name",
    )

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
        self._tag_width = tag.width
        self._variants_factory = variants
        # Filled on first use. The generated code of structs holding this
        # select looks tags and classes up in these two dicts directly; a miss
        # calls _decoder_for or _encoder_for, which fill them or raise.
        self._decoders: dict[int, _Decoder] = {}
        # A variant's class → the tags written before its body (both tags of
        # a nested select) and its encoder.
        self._encoders: dict[type, tuple[bytes, _Encoder]] = {}
        self._tags: dict[type, int] | None = None
        self._prepared = False

    def _tag_table(self) -> dict[type, int]:
        # Kept apart from _prepare so that asking a value's tag derives no codec.
        if self._tags is None:
            tags: dict[type, int] = {}
            for tag, variant in self._variants_factory().items():
                if isinstance(variant, Select):
                    for cls in variant._tag_table():
                        tags[cls] = tag
                else:
                    tags[variant] = tag
            self._tags = tags
        return self._tags

    def _prepare(self) -> None:
        if self._prepared:
            return
        decoders: dict[int, _Decoder] = {}
        encoders: dict[type, tuple[bytes, _Encoder]] = {}
        for tag, variant in self._variants_factory().items():
            prefix = _uint_bytes(self._tag_width, tag)
            if isinstance(variant, Select):
                variant._prepare()
                decoders[tag] = variant._decode
                for cls, (inner_prefix, encoder) in variant._encoders.items():
                    encoders[cls] = (prefix + inner_prefix, encoder)
            else:
                codec = _codec_of(variant)
                decoders[tag] = codec.decode
                encoders[variant] = (prefix, codec.encode)
        # Filled in place: generated code holds these very dicts.
        self._decoders.update(decoders)
        self._encoders.update(encoders)
        self._prepared = True

    def _decoder_for(self, tag: int, offset: int) -> _Decoder:
        """
        The decoder of the variant ``tag`` names, when it is not in ``_decoders`` yet.

        :raises UnknownVariant: if the tag names no variant.
        """
        self._prepare()
        decoder = self._decoders.get(tag)
        if decoder is None:
            raise UnknownVariant(f"unknown {self.name} tag {tag}", offset)
        return decoder

    def _encoder_for(self, value: object) -> tuple[bytes, _Encoder]:
        """
        The tag bytes and encoder of ``value``'s class, when it is not in ``_encoders`` yet.

        :raises UsageError: if ``value`` is not one of the variants.
        """
        self._prepare()
        entry = self._encoders.get(type(value))
        if entry is None:
            raise UsageError(f"{type(value).__name__} is not a variant of {self.name}")
        return entry

    def _decode(self, data: bytes, pos: int, end: int) -> tuple[Any, int]:
        width = self._tag_width
        if end - pos < width:
            raise _truncated(width, pos, end)
        tag = data[pos] if width == 1 else _UNPACK_UINT[width](data, pos)[0]
        try:
            decoder = self._decoders[tag]
        except KeyError:
            decoder = self._decoder_for(tag, pos)
        return decoder(data, pos + width, end)

    def _encode(self, buf: bytearray, value: object) -> None:
        try:
            prefix, encoder = self._encoders[type(value)]
        except KeyError:
            prefix, encoder = self._encoder_for(value)
        buf += prefix
        encoder(buf, value)

    def tag_of(self, value: object) -> int:
        """
        :returns: the tag that ``value``'s class is encoded with.
        :raises UsageError: if its class is not a variant of this select.
        """
        try:
            return self._tag_table()[type(value)]
        except KeyError:
            raise UsageError(f"{type(value).__name__} is not a variant of {self.name}") from None

    def encode_into(self, w: Writer, value: object) -> None:
        """
        Write the tag of ``value`` and then its body.

        :raises UsageError: if ``value`` is not one of the variants.
        """
        _encode_whole(self._encode, w._buf, value)

    def decode_from(self, r: Reader) -> Any:
        """
        Read a tag and the body of the variant it names.

        :raises UnknownVariant: if the tag names no variant.
        """
        value, r._pos = self._decode(r._data, r._pos, r._end)
        return value

    def encode(self, value: object) -> bytes:
        """
        :returns: the encoding of ``value`` (tag and body).
        :raises UsageError: if ``value`` is not one of the variants.
        """
        try:
            prefix, encoder = self._encoders[type(value)]
        except KeyError:
            prefix, encoder = self._encoder_for(value)
        buf = bytearray(prefix)
        encoder(buf, value)
        return bytes(buf)

    def decode(self, data: bytes) -> Any:
        """
        :returns: the variant value that ``data`` encodes, with nothing left over.
        :raises DecodeError: on any malformed input.
        """
        value, pos = self._decode(data, 0, len(data))
        if pos != len(data):
            raise TrailingBytes(f"{len(data) - pos} trailing bytes", pos)
        return value


def _encode_whole(encode: _Encoder, buf: bytearray, value: object) -> None:
    """
    Append ``value`` to ``buf``, or leave ``buf`` as it was if encoding fails.
    """
    start = len(buf)
    try:
        encode(buf, value)
    except BaseException:
        del buf[start:]
        raise


# -- Structs ----------------------------------------------------------------------------


class _StructCodec:
    """
    The generated encoder and decoder of one struct class, and their source.
    """

    __slots__ = ("decode", "encode", "owner", "source")

    def __init__(self, owner: type, encode: _Encoder, decode: _Decoder, source: str) -> None:
        self.owner = owner
        self.encode = encode
        self.decode = decode
        self.source = source


class Struct:
    """
    Base of every RFC 9420 struct: its ``encode``/``decode`` are derived from its fields.
    """

    __slots__ = ()

    # Set on each class by its first use. A subclass inherits its parent's
    # codec through this attribute, so the owner is checked before use.
    _codec_cache: ClassVar[_StructCodec | None] = None

    def encode(self) -> bytes:
        """
        :returns: this value's RFC 9420 encoding.
        :raises UsageError: if a field holds a value its wire form cannot carry.
        """
        cls = type(self)
        codec = cls._codec_cache
        if codec is None or codec.owner is not cls:
            codec = _codec_of(cls)
        buf = bytearray()
        codec.encode(buf, self)
        return bytes(buf)

    @classmethod
    def encode_into(cls, w: Writer, value: object) -> None:
        """
        Append ``value``'s encoding to ``w`` (which is left unchanged if that fails).

        :raises UsageError: if ``value`` is not a ``cls`` or a field holds a value its wire
            form cannot carry.
        """
        _encode_whole(_codec_of(cls).encode, w._buf, value)

    @classmethod
    def decode(cls, data: bytes) -> Self:
        """
        :param data: exactly one encoded value.
        :returns: the value.
        :raises DecodeError: on malformed input or trailing bytes.
        """
        codec = cls._codec_cache
        if codec is None or codec.owner is not cls:
            codec = _codec_of(cls)
        end = len(data)
        value, pos = codec.decode(data, 0, end)
        if pos != end:
            raise TrailingBytes(f"{end - pos} trailing bytes", pos)
        return typing.cast("Self", value)

    @classmethod
    def decode_from(cls, r: Reader) -> Self:
        """
        :returns: one value read from ``r``, which moves past it.
        :raises DecodeError: on malformed input.
        """
        value, r._pos = _codec_of(cls).decode(r._data, r._pos, r._end)
        return typing.cast("Self", value)


def generated_source(cls: type[Struct]) -> str:
    """
    The Python source of the encoder and decoder generated for ``cls``, for reading and debugging.

    :param cls: a struct class.
    :returns: the source of ``encode_<Class>`` and ``decode_<Class>``.
    :raises UsageError: if a field of ``cls`` declares no wire form.
    """
    return _codec_of(cls).source


def _codec_of(cls: type[Struct]) -> _StructCodec:
    codec = cls._codec_cache
    if codec is None or codec.owner is not cls:
        codec = _derive_struct(cls)
        type.__setattr__(cls, "_codec_cache", codec)
    return codec


# -- Plans: what each field's type hint says about its wire form --------------------------


@dataclass(frozen=True, slots=True)
class _IntPlan:
    width: int
    enum_cls: type[enum.IntEnum] | None


@dataclass(frozen=True, slots=True)
class _BytesPlan:
    # None for ``opaque x<V>``, else the n of ``opaque x[n]``.
    fixed: int | None


@dataclass(frozen=True, slots=True)
class _VectorPlan:
    item: _Plan


@dataclass(frozen=True, slots=True)
class _OptionalPlan:
    item: _Plan


@dataclass(frozen=True, slots=True)
class _StructPlan:
    cls: type[Struct]


@dataclass(frozen=True, slots=True)
class _SelectPlan:
    select: Select


_Plan = _IntPlan | _BytesPlan | _VectorPlan | _OptionalPlan | _StructPlan | _SelectPlan


@dataclass(frozen=True, slots=True)
class _FieldPlan:
    name: str
    plan: _Plan
    condition: Callable[[Mapping[str, Any]], bool] | None


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


def _plan_for(hint: Any, owner: str) -> _Plan:
    """
    Read the wire form of one type hint (with its ``Annotated`` forms).
    """
    if typing.get_origin(hint) is Annotated:
        base, *forms = typing.get_args(hint)
        return _plan_for_form(base, [f for f in forms if not isinstance(f, When)], owner)
    if isinstance(hint, type) and issubclass(hint, Struct):
        return _StructPlan(hint)
    raise UsageError(f"{owner}: field type {hint!r} declares no wire form")


def _plan_for_form(base: Any, forms: list[Any], owner: str) -> _Plan:
    if not forms:
        return _plan_for(base, owner)
    form = forms[0]
    if isinstance(form, _Int):
        enum_cls = base if isinstance(base, type) and issubclass(base, enum.IntEnum) else None
        return _IntPlan(form.width, enum_cls)
    if form is Opaque:
        return _BytesPlan(None)
    if isinstance(form, Fixed):
        return _BytesPlan(form.n)
    if isinstance(form, Select):
        return _SelectPlan(form)
    if form is Vector:
        (item_hint, ellipsis) = typing.get_args(base)
        if ellipsis is not Ellipsis:
            raise UsageError(f"{owner}: Vector needs tuple[T, ...]")
        return _VectorPlan(_plan_for_form(item_hint, forms[1:], owner))
    if form is Optional:
        return _OptionalPlan(_plan_for_form(_strip_none(base), forms[1:], owner))
    raise UsageError(f"{owner}: unknown wire form {form!r}")


def _describe(plan: _Plan) -> str:
    """
    A plan in the RFC's presentation language, for comments in generated code.
    """
    if isinstance(plan, _IntPlan):
        name = _UINT_NAME[plan.width]
        return f"{name} {plan.enum_cls.__name__}" if plan.enum_cls is not None else name
    if isinstance(plan, _BytesPlan):
        return "opaque<V>" if plan.fixed is None else f"opaque[{plan.fixed}]"
    if isinstance(plan, _VectorPlan):
        return f"{_describe(plan.item)}<V>"
    if isinstance(plan, _OptionalPlan):
        return f"optional<{_describe(plan.item)}>"
    if isinstance(plan, _StructPlan):
        return plan.cls.__name__
    return f"select {plan.select.name} (uint{8 * plan.select._tag_width} tag)"


def _derive_struct(cls: type[Struct]) -> _StructCodec:
    hints = typing.get_type_hints(cls, include_extras=True)
    plan: list[_FieldPlan] = []
    for f in fields(cls):  # type: ignore[arg-type]  # every Struct is a dataclass
        hint = hints[f.name]
        when = None
        if typing.get_origin(hint) is Annotated:
            when = next((a for a in typing.get_args(hint)[1:] if isinstance(a, When)), None)
            if when is not None:
                base = _strip_none(typing.get_args(hint)[0])
                forms = [a for a in typing.get_args(hint)[1:] if not isinstance(a, When)]
                hint = Annotated[(base, *forms)] if forms else base
        field_plan = _plan_for(hint, f"{cls.__name__}.{f.name}")
        plan.append(_FieldPlan(f.name, field_plan, when.condition if when is not None else None))

    generator = _Generator(cls)
    source = generator.struct_source(plan)
    # The file name is what tracebacks show. Registered with linecache, the
    # generated lines show too wherever tracebacks are formatted by the
    # traceback module (logging, pytest); attrs does the same for its methods.
    filename = f"<townsquare.mls.codec {cls.__module__}.{cls.__qualname__}>"
    linecache.cache[filename] = (len(source), None, source.splitlines(keepends=True), filename)
    namespace = generator.namespace
    # The source is built from this class's type hints by the code above, never
    # from input data.
    exec(compile(source, filename, "exec"), namespace)  # noqa: S102
    return _StructCodec(
        cls,
        namespace[f"encode_{generator.stem}"],
        namespace[f"decode_{generator.stem}"],
        source,
    )


# -- Helpers of the generated code -------------------------------------------------------


def _unknown_enum(value: int, enum_cls: type[enum.IntEnum], offset: int) -> UnknownEnumValue:
    return UnknownEnumValue(f"{value} is not a valid {enum_cls.__name__}", offset)


def _invalid_presence(octet: int, offset: int) -> InvalidOptionalPrefix:
    # RFC 9420 §2.1.1: the presence octet of optional<T> is 0 or 1.
    return InvalidOptionalPrefix(f"optional presence octet {octet}", offset)


def _invalid_value(cls: type, exc: ValueError, offset: int) -> InvalidValue:
    # A struct's __post_init__ rejects values the RFC forbids (for example a
    # wrong key length); that is bad input, not a bug.
    return InvalidValue(f"{cls.__name__}: {exc}", offset)


# Vectors of integers are mostly short (capabilities, unmerged leaves), so
# their unpackers are compiled ahead for up to _SMALL_VECTOR - 1 elements.
_SMALL_VECTOR = 32
_UNPACK_UINT_VECTOR = {
    width: [
        _struct.Struct(f">{count}{_UINT_FORMAT[width]}").unpack_from
        for count in range(_SMALL_VECTOR)
    ]
    for width in (2, 4, 8)
}


def _unpack_uints(width: int, data: bytes, pos: int, count: int) -> tuple[int, ...]:
    return _struct.unpack_from(f">{count}{_UINT_FORMAT[width]}", data, pos)


def _wrong_type(expected: str, value: object) -> UsageError:
    return UsageError(f"expected {expected}, got {type(value).__name__}")


def _does_not_fit(value: int, width: int) -> UsageError:
    return UsageError(f"{value} does not fit {_UINT_NAME[width]}")


def _wrong_length(n: int, value: bytes) -> UsageError:
    return UsageError(f"expected {n} bytes, got {len(value)}")


def _patch_length(buf: bytearray, at: int, length: int) -> None:
    """
    Widen the one-octet length reserved at ``at`` to the varint of ``length`` (64 or more).

    :raises UsageError: if ``length`` exceeds :data:`VARINT_MAX`.
    """
    buf[at : at + 1] = _varint_bytes(length)


def _slot_setters(cls: type[Struct]) -> dict[str, Callable[[object, Any], None]] | None:
    """
    The slot setters that build a ``cls`` exactly as its dataclass ``__init__`` would, if any.

    A frozen dataclass's generated ``__init__`` does nothing but set each
    field through ``object.__setattr__``, which for a slotted field calls its
    member descriptor; calling the descriptors directly builds the same object
    at half the cost. Any doubt returns ``None``, and decoding then calls the
    class: a ``__post_init__`` (whose ``ValueError`` becomes
    :class:`InvalidValue`), an ``__init__`` written by hand (dataclasses writes
    its own with ``exec``, so its code comes from ``"<string>"``), a custom
    ``__new__`` or metaclass, or a field without a slot.
    """
    init_code = getattr(cls.__init__, "__code__", None)
    if (
        hasattr(cls, "__post_init__")
        or init_code is None
        or init_code.co_filename != "<string>"
        or cls.__new__ is not object.__new__
        or type(cls).__call__ is not type.__call__
    ):
        return None
    setters: dict[str, Callable[[object, Any], None]] = {}
    for f in fields(cls):  # type: ignore[arg-type]  # every Struct is a dataclass
        descriptor = getattr(cls, f.name, None)
        if not f.init or not isinstance(descriptor, types.MemberDescriptorType):
            return None
        setters[f.name] = descriptor.__set__
    return setters


def _lazy(namespace: dict[str, Any], name: str, cls: type[Struct], which: str) -> Any:
    """
    Bind ``namespace[name]`` to ``cls``'s encoder or decoder, derived on its first call.

    Deriving a class thus never derives the classes it holds, so classes may
    hold each other and only what is used is ever generated.
    """
    codec = cls._codec_cache
    if codec is not None and codec.owner is cls:
        return getattr(codec, which)

    def first_call(*args: Any) -> Any:
        function = getattr(_codec_of(cls), which)
        namespace[name] = function
        return function(*args)

    return first_call


# The locals of generated code: its parameters, ``value``, ``seen``, ``exc``,
# fields (``f_<name>``) and numbered temporaries. No global may look like one.
_LOCAL_NAME = re.compile(r"buf|data|pos|end|value|seen|exc|f_\w*|[a-z]+\d+")


class _Generator:
    """
    Writes the source of one struct's encoder and decoder from its plan.

    Generated code reads ``data`` from ``pos`` up to a bound (``end``, or the
    end of the enclosing vector) and appends to ``buf``; field values live in
    locals named ``f_<field>``, temporaries in locals numbered by ``_temp``.
    Objects the code needs (classes, selects' tables, enum members, helpers)
    are globals of its namespace.
    """

    def __init__(self, cls: type[Struct]) -> None:
        self.cls = cls
        self.stem = re.sub(r"\W", "_", cls.__name__)
        self.lines: list[str] = []
        self.namespace: dict[str, Any] = {
            "_does_not_fit": _does_not_fit,
            "_invalid_presence": _invalid_presence,
            "_invalid_value": _invalid_value,
            "_patch_length": _patch_length,
            "_new": object.__new__,
            "_read_varint": _read_varint,
            "_truncated": _truncated,
            "_unknown_enum": _unknown_enum,
            "_unpack_uints": _unpack_uints,
            "_unpack_u16": _U16.unpack_from,
            "_unpack_u32": _U32.unpack_from,
            "_unpack_u64": _U64.unpack_from,
            "_unpack_u16_vector": _UNPACK_UINT_VECTOR[2],
            "_unpack_u32_vector": _UNPACK_UINT_VECTOR[4],
            "_unpack_u64_vector": _UNPACK_UINT_VECTOR[8],
            "_pack_u16": _U16.pack,
            "_pack_u32": _U32.pack,
            "_pack_u64": _U64.pack,
            "_varint_bytes": _varint_bytes,
            "_wrong_length": _wrong_length,
            "_wrong_type": _wrong_type,
            "UsageError": UsageError,
        }
        # The two functions' own names, kept from other globals.
        self.namespace[f"encode_{self.stem}"] = None
        self.namespace[f"decode_{self.stem}"] = None
        self._names: dict[tuple[int, str], str] = {}
        self._counter = 0

    # -- Bookkeeping

    def _temp(self, stem: str) -> str:
        self._counter += 1
        return f"{stem}{self._counter}"

    def _unique(self, stem: str) -> str:
        """
        A global name from ``stem`` that no other global or local of the generated code has.
        """
        base = re.sub(r"\W", "_", stem)
        if keyword.iskeyword(base) or base[:1].isdigit() or _LOCAL_NAME.fullmatch(base):
            base = f"_{base}"
        name, n = base, 1
        while name in self.namespace:
            n += 1
            name = f"{base}_{n}"
        return name

    def _global(self, stem: str, value: Any) -> str:
        """
        The name under which the generated code sees ``value``, bound on first request.
        """
        key = (id(value), "")
        name = self._names.get(key)
        if name is None:
            name = self._unique(stem)
            self.namespace[name] = value
            self._names[key] = name
        return name

    def _struct_function(self, cls: type[Struct], which: str) -> str:
        """
        The name of ``cls``'s encoder or decoder (``which``), bound lazily (see :func:`_lazy`).
        """
        if cls is self.cls:
            return f"{which}_{self.stem}"
        key = (id(cls), which)
        name = self._names.get(key)
        if name is None:
            name = self._unique(f"{which}_{cls.__name__}")
            self.namespace[name] = _lazy(self.namespace, name, cls, which)
            self._names[key] = name
        return name

    def _emit(self, depth: int, line: str) -> None:
        self.lines.append("    " * depth + line)

    def _emit_bracketed(self, depth: int, head: str, items: list[str], tail: str) -> None:
        # One line if it fits in 100 columns, else one item per line.
        line = f"{head}{', '.join(items)}{tail}"
        if len(line) + 4 * depth <= 100 or not items:
            self._emit(depth, line)
            return
        self._emit(depth, head)
        for item in items:
            self._emit(depth + 1, f"{item},")
        self._emit(depth, tail)

    # -- Whole functions

    def struct_source(self, plan: list[_FieldPlan]) -> str:
        cls_name = self._global(self.cls.__name__, self.cls)

        # encode_<Class>(buf, value)
        self._emit(0, f"def encode_{self.stem}(buf, value):")
        self._emit(1, f"if type(value) is not {cls_name}:")
        self._emit(2, f"raise _wrong_type({self.cls.__name__!r}, value)")
        for index, field in enumerate(plan):
            var = f"f_{field.name}"
            self._emit(1, f"# {field.name}: {self._comment(field)}")
            self._emit(1, f"{var} = value.{field.name}")
            if field.condition is None:
                self._encode(field.plan, var, 1)
                continue
            # The condition sees the fields up to this one, by name.
            self._emit_seen(plan, index, 1, include_current=True)
            when = self._condition(field)
            where = f"{self.cls.__name__}.{field.name}"
            self._emit(1, f"if not {when}(seen):")
            self._emit(2, f"if {var} is not None:")
            self._emit(3, f"raise UsageError({where + ' must be None here'!r})")
            self._emit(1, f"elif {var} is None:")
            self._emit(2, f"raise UsageError({where + ' is required here'!r})")
            self._emit(1, "else:")
            self._encode(field.plan, var, 2)
        if not plan:
            self._emit(1, "pass")
        self._emit(0, "")
        self._emit(0, "")

        # decode_<Class>(data, pos, end) -> (value, pos)
        self._emit(0, f"def decode_{self.stem}(data, pos, end):")
        for index, field in enumerate(plan):
            var = f"f_{field.name}"
            self._emit(1, f"# {field.name}: {self._comment(field)}")
            if field.condition is None:
                self._decode(field.plan, var, "end", 1)
            else:
                # The condition sees the fields before this one, by name.
                self._emit_seen(plan, index, 1, include_current=False)
                when = self._condition(field)
                self._emit(1, f"if {when}(seen):")
                self._decode(field.plan, var, "end", 2)
                self._emit(1, "else:")
                self._emit(2, f"{var} = None")
        setters = _slot_setters(self.cls)
        if setters is None:
            arguments = [f"{f.name}=f_{f.name}" for f in plan]
            self._emit(1, "try:")
            self._emit_bracketed(2, f"value = {cls_name}(", arguments, ")")
            self._emit(1, "except ValueError as exc:")
            self._emit(2, f"raise _invalid_value({cls_name}, exc, pos) from exc")
        else:
            self._emit(1, "# What the dataclass __init__ does, minus its per-field lookups.")
            self._emit(1, f"value = _new({cls_name})")
            for f in plan:
                setter = self._global(f"set_{f.name}", setters[f.name])
                self._emit(1, f"{setter}(value, f_{f.name})")
        self._emit(1, "return value, pos")
        return "\n".join(self.lines) + "\n"

    def _condition(self, field: _FieldPlan) -> str:
        name = getattr(field.condition, "__name__", "condition").strip("_<>")
        return self._global(f"when_{name}", field.condition)

    def _comment(self, field: _FieldPlan) -> str:
        text = _describe(field.plan)
        if field.condition is not None:
            name = getattr(field.condition, "__name__", "condition")
            text += f", only when {name}(fields)"
        return text

    def _emit_seen(
        self, plan: list[_FieldPlan], index: int, depth: int, *, include_current: bool
    ) -> None:
        # The first condition builds the mapping of fields by name; later ones
        # add the fields that came since the previous condition.
        stop = index + 1 if include_current else index
        previous = next((i for i in range(index - 1, -1, -1) if plan[i].condition), None)
        if previous is None:
            items = [f"{f.name!r}: f_{f.name}" for f in plan[:stop]]
            self._emit_bracketed(depth, "seen = {", items, "}")
            return
        start = previous + 1 if include_current else previous
        for f in plan[start:stop]:
            self._emit(depth, f"seen[{f.name!r}] = f_{f.name}")

    # -- Decoding

    def _decode(self, plan: _Plan, target: str, end: str, depth: int) -> None:
        """
        Emit code that reads one ``plan`` value at ``pos`` (before ``end``) into ``target``.
        """
        emit = self._emit
        if isinstance(plan, _IntPlan):
            self._decode_int(plan, target, end, depth)
        elif isinstance(plan, _BytesPlan):
            if plan.fixed is None:
                size = self._temp("n")
                self._decode_varint(size, end, depth)
            else:
                size = str(plan.fixed)
            stop = self._temp("stop")
            emit(depth, f"{stop} = pos + {size}")
            emit(depth, f"if {stop} > {end}:")
            emit(depth + 1, f"raise _truncated({size}, pos, {end})")
            emit(depth, f"{target} = data[pos:{stop}]")
            emit(depth, f"pos = {stop}")
        elif isinstance(plan, _VectorPlan):
            self._decode_vector(plan, target, end, depth)
        elif isinstance(plan, _OptionalPlan):
            presence = self._temp("presence")
            emit(depth, f"if pos >= {end}:")
            emit(depth + 1, f"raise _truncated(1, pos, {end})")
            emit(depth, f"{presence} = data[pos]")
            emit(depth, f"if {presence} == 1:")
            emit(depth + 1, "pos += 1")
            self._decode(plan.item, target, end, depth + 1)
            emit(depth, f"elif {presence} == 0:")
            emit(depth + 1, "pos += 1")
            emit(depth + 1, f"{target} = None")
            emit(depth, "else:")
            emit(depth + 1, f"raise _invalid_presence({presence}, pos)")
        elif isinstance(plan, _StructPlan):
            decode = self._struct_function(plan.cls, "decode")
            emit(depth, f"{target}, pos = {decode}(data, pos, {end})")
        else:
            select = plan.select
            width = select._tag_width
            tag, decode = self._temp("tag"), self._temp("decode")
            table = self._global(f"{select.name}_decoders", select._decoders)
            self._decode_int(_IntPlan(width, None), tag, end, depth)
            emit(depth, "try:")
            emit(depth + 1, f"{decode} = {table}[{tag}]")
            emit(depth, "except KeyError:")
            selector = self._global(f"{select.name}_select", select)
            emit(depth + 1, f"{decode} = {selector}._decoder_for({tag}, pos - {width})")
            emit(depth, f"{target}, pos = {decode}(data, pos, {end})")

    def _decode_varint(self, target: str, end: str, depth: int) -> None:
        # One-byte varints (values below 64) are read inline; others call
        # _read_varint, which also raises every varint error.
        emit = self._emit
        emit(depth, f"if pos >= {end}:")
        emit(depth + 1, f"raise _truncated(1, pos, {end})")
        emit(depth, f"{target} = data[pos]")
        emit(depth, f"if {target} < 64:")
        emit(depth + 1, "pos += 1")
        emit(depth, "else:")
        emit(depth + 1, f"{target}, pos = _read_varint(data, pos, {end})")

    def _decode_int(self, plan: _IntPlan, target: str, end: str, depth: int) -> None:
        emit = self._emit
        width = plan.width
        if width == 1:
            emit(depth, f"if pos >= {end}:")
            emit(depth + 1, f"raise _truncated(1, pos, {end})")
            read = "data[pos]"
        else:
            emit(depth, f"if {end} - pos < {width}:")
            emit(depth + 1, f"raise _truncated({width}, pos, {end})")
            read = f"_unpack_u{8 * width}(data, pos)[0]"
        if plan.enum_cls is None:
            emit(depth, f"{target} = {read}")
        else:
            members = {int(m): m for m in plan.enum_cls}
            table = self._global(f"{plan.enum_cls.__name__}_members", members)
            enum_name = self._global(plan.enum_cls.__name__, plan.enum_cls)
            raw = self._temp("raw")
            emit(depth, f"{raw} = {read}")
            emit(depth, f"{target} = {table}.get({raw})")
            emit(depth, f"if {target} is None:")
            emit(depth + 1, f"raise _unknown_enum({raw}, {enum_name}, pos)")
        emit(depth, f"pos += {width}")

    def _decode_vector(self, plan: _VectorPlan, target: str, end: str, depth: int) -> None:
        emit = self._emit
        size, stop = self._temp("n"), self._temp("stop")
        self._decode_varint(size, end, depth)
        emit(depth, f"{stop} = pos + {size}")
        emit(depth, f"if {stop} > {end}:")
        emit(depth + 1, f"raise _truncated({size}, pos, {end})")
        item = plan.item
        if isinstance(item, _IntPlan) and item.enum_cls is None:
            # A vector of plain integers is unpacked in one call; a length
            # that is not a whole number of them cuts the last one short.
            if item.width == 1:
                emit(depth, f"{target} = tuple(data[pos:{stop}])")
            else:
                count = self._temp("count")
                emit(depth, f"if {size} % {item.width}:")
                emit(
                    depth + 1,
                    f"raise _truncated({item.width}, {stop} - {size} % {item.width}, {stop})",
                )
                emit(depth, f"{count} = {size} // {item.width}")
                emit(depth, f"if {count} < {_SMALL_VECTOR}:")
                emit(depth + 1, f"{target} = _unpack_u{8 * item.width}_vector[{count}](data, pos)")
                emit(depth, "else:")
                emit(depth + 1, f"{target} = _unpack_uints({item.width}, data, pos, {count})")
            emit(depth, f"pos = {stop}")
            return
        items, element = self._temp("items"), self._temp("item")
        emit(depth, f"{items} = []")
        emit(depth, f"while pos < {stop}:")
        self._decode(item, element, stop, depth + 1)
        emit(depth + 1, f"{items}.append({element})")
        emit(depth, f"{target} = tuple({items})")

    # -- Encoding

    def _encode(self, plan: _Plan, var: str, depth: int) -> None:
        """
        Emit code that appends the ``plan`` value held in local ``var`` to ``buf``.
        """
        emit = self._emit
        if isinstance(plan, _IntPlan):
            width = plan.width
            emit(depth, f"if not 0 <= {var} <= {_UINT_MAX[width]:#x}:")
            emit(depth + 1, f"raise _does_not_fit({var}, {width})")
            if width == 1:
                emit(depth, f"buf.append({var})")
            else:
                emit(depth, f"buf += _pack_u{8 * width}({var})")
        elif isinstance(plan, _BytesPlan):
            if plan.fixed is None:
                emit(depth, f"if not isinstance({var}, bytes):")
                emit(depth + 1, f"raise _wrong_type('bytes', {var})")
                size = self._temp("n")
                emit(depth, f"{size} = len({var})")
                self._encode_length(size, depth)
            else:
                emit(depth, f"if len({var}) != {plan.fixed}:")
                emit(depth + 1, f"raise _wrong_length({plan.fixed}, {var})")
            emit(depth, f"buf += {var}")
        elif isinstance(plan, _VectorPlan):
            emit(depth, f"if not isinstance({var}, tuple):")
            emit(depth + 1, f"raise _wrong_type('a tuple', {var})")
            item = plan.item
            if isinstance(item, _IntPlan):
                # Integers have a fixed width, so the length is known up front.
                size = self._temp("n")
                emit(depth, f"{size} = {item.width} * len({var})")
                self._encode_length(size, depth)
                element = self._temp("item")
                emit(depth, f"for {element} in {var}:")
                self._encode(item, element, depth + 1)
                return
            # Reserve one length octet, write the elements in place, then set
            # the length, widening it if the content reached 64 bytes.
            start, element, size = self._temp("start"), self._temp("item"), self._temp("n")
            emit(depth, f"{start} = len(buf)")
            emit(depth, "buf.append(0)")
            emit(depth, f"for {element} in {var}:")
            self._encode(item, element, depth + 1)
            emit(depth, f"{size} = len(buf) - {start} - 1")
            emit(depth, f"if {size} < 64:")
            emit(depth + 1, f"buf[{start}] = {size}")
            emit(depth, "else:")
            emit(depth + 1, f"_patch_length(buf, {start}, {size})")
        elif isinstance(plan, _OptionalPlan):
            emit(depth, f"if {var} is None:")
            emit(depth + 1, "buf.append(0)")
            emit(depth, "else:")
            emit(depth + 1, "buf.append(1)")
            self._encode(plan.item, var, depth + 1)
        elif isinstance(plan, _StructPlan):
            encode = self._struct_function(plan.cls, "encode")
            emit(depth, f"{encode}(buf, {var})")
        else:
            select = plan.select
            table = self._global(f"{select.name}_encoders", select._encoders)
            prefix, encode = self._temp("tags"), self._temp("encode")
            emit(depth, "try:")
            emit(depth + 1, f"{prefix}, {encode} = {table}[type({var})]")
            emit(depth, "except KeyError:")
            selector = self._global(f"{select.name}_select", select)
            emit(depth + 1, f"{prefix}, {encode} = {selector}._encoder_for({var})")
            emit(depth, f"buf += {prefix}")
            emit(depth, f"{encode}(buf, {var})")

    def _encode_length(self, size: str, depth: int) -> None:
        emit = self._emit
        emit(depth, f"if {size} < 64:")
        emit(depth + 1, f"buf.append({size})")
        emit(depth, "else:")
        emit(depth + 1, f"buf += _varint_bytes({size})")

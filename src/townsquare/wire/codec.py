"""
The envelope and its CBOR encoding: the only module that turns messages into bytes and back.

A message is one CBOR array (RFC 8949), in core deterministic encoding
(RFC 8949 §4.2.1)::

    [version, kind, message_id, sent_at, content]
     uint     uint  bstr .size 16  uint (ms)  { uint => any }

Decoding is a pipeline; each step has its own error, and the steps are
ordered so that everything after the version number belongs to that version::

    bytes ─ size ≤ MAX_MESSAGE_BYTES ────────────────────── MessageTooLarge
      │  one well-formed CBOR item, nesting ≤ 16 ──────── MalformedCBOR, Truncated,
      │                                                    TrailingBytes
      ▼
    an array whose first item is an unsigned integer ─── InvalidEnvelope
      │  version == PROTOCOL_VERSION ───────────────────── UnsupportedVersion
      ▼
    version-1 data model: ints, strings, arrays, maps
      with unsigned keys, booleans; valid UTF-8 ───────── UnsupportedCBOR, InvalidUtf8
      │  re-encoding gives the same bytes ─────────────── NonCanonical
      ▼
    five items: kind, message_id, sent_at, content map ─ InvalidEnvelope, InvalidField
      │  kind is known ─────────────────────────────────── UnknownKind
      ▼
    content map against the kind's field table ───────── MissingField, UnexpectedField,
      │                                                    WrongType, TooLong, InvalidValue
      ▼
    Message

``cbor2`` does the CBOR work. It returns untyped values; they are checked
against the data model here and cast to :data:`~townsquare.wire.fields.CBORValue`
only after that check.
"""

from __future__ import annotations

import io
from typing import cast

import cbor2

from townsquare.wire.errors import (
    InvalidEnvelope,
    InvalidUtf8,
    InvalidValue,
    MalformedCBOR,
    MessageTooLarge,
    NonCanonical,
    TrailingBytes,
    Truncated,
    UnknownKind,
    UnsupportedCBOR,
    UnsupportedVersion,
    UsageError,
    WrongType,
)
from townsquare.wire.fields import (
    MAX_MESSAGE_BYTES,
    CBORValue,
    ContentReader,
    Field,
    FieldProblem,
    UintRule,
)
from townsquare.wire.messages import MESSAGE_CLASSES, MESSAGE_ID, SENT_AT, Message

__all__ = ["MAX_DEPTH", "PROTOCOL_VERSION", "decode", "encode"]

PROTOCOL_VERSION = 1
"""The version this module writes and the only one it reads."""

MAX_DEPTH = 16
"""How deeply arrays and maps may nest (the envelope is depth 1); frozen across versions."""

_ENVELOPE_ITEMS = 5
_KIND = Field(1, "kind", UintRule(0, 2**64 - 1))

# cbor2 decodes these tags itself (found by decoding every tag up to 70,000 with
# cbor2 6.3.0). Overriding them keeps it from building dates, regular
# expressions or shared references out of a peer's bytes; any other tag goes to
# the tag hook. If a later cbor2 decodes a new tag into a plain int or string,
# the re-encoding check still catches it, since the tag does not come back.
_CBOR2_TAGS = (
    0, 1, 2, 3, 4, 5, 25, 28, 29, 30, 35, 36, 37, 52, 54, 100,
    256, 258, 260, 261, 1004, 43000, 55799,
)  # fmt: skip


class _Tagged:
    """
    Stands in for a tagged data item, which the data model refuses.
    """


_TAGGED = _Tagged()


def _tag_semantic(value: object, immutable: bool) -> _Tagged:  # noqa: FBT001 (cbor2's signature)
    return _TAGGED


def _tag_hook(tag: cbor2.CBORTag, immutable: bool) -> _Tagged:  # noqa: FBT001 (cbor2's signature)
    return _TAGGED


_SEMANTIC_DECODERS = dict.fromkeys(_CBOR2_TAGS, _tag_semantic)


def encode(message: Message) -> bytes:
    """
    Encode a message in the current protocol version.

    :param message: a message of a kind this version defines.
    :returns: the deterministic CBOR encoding of its envelope.
    :raises UsageError: if the message's class is not a registered kind (for
        example a subclass of :class:`~townsquare.wire.Text`).
    """
    cls = MESSAGE_CLASSES.get(getattr(message, "KIND", -1))
    if cls is None or type(message) is not cls:
        raise UsageError(f"{type(message).__name__} is not a message kind of this protocol")
    envelope: list[CBORValue] = [
        PROTOCOL_VERSION,
        message.KIND.value,
        MESSAGE_ID.encode(message.message_id),
        SENT_AT.encode(message.sent_at),
        message.content(),
    ]
    # Every kind's fields are bounded so that its largest message stays within
    # MAX_MESSAGE_BYTES (tests/unit/wire checks each kind at its limits).
    return cbor2.dumps(envelope, canonical=True)


def decode(data: bytes) -> Message:
    """
    Decode and check a message received from a member.

    :param data: the plaintext of an MLS application message.
    :returns: the message, one of the kinds in :data:`~townsquare.wire.Kind`.
    :raises UsageError: if ``data`` is not ``bytes``.
    :raises UnsupportedVersion: if the envelope's version is newer than this client's.
    :raises UnknownKind: if the kind is not one this client knows; carries the
        kind, the message id and ``sent_at``.
    :raises MessageTooLarge: if ``data`` is longer than ``MAX_MESSAGE_BYTES``.
    :raises MalformedCBOR: if ``data`` is not one well-formed CBOR item nested
        at most ``MAX_DEPTH`` deep (or its subclasses :class:`Truncated` and
        :class:`TrailingBytes`).
    :raises InvalidUtf8: if a text string is not valid UTF-8.
    :raises UnsupportedCBOR: on floats, tags, ``null``, ``undefined``, other
        simple values, or map keys that are not unsigned integers.
    :raises NonCanonical: if the encoding is not the deterministic one.
    :raises InvalidEnvelope: if the top level is not the five-item envelope.
    :raises InvalidField: (:class:`MissingField`, :class:`UnexpectedField`,
        :class:`WrongType`, :class:`TooLong`, :class:`InvalidValue`) if a
        field of the envelope or the content breaks its rule.
    """
    if not isinstance(data, bytes):
        raise UsageError(f"expected bytes, got {type(data).__name__}")
    if len(data) > MAX_MESSAGE_BYTES:
        raise MessageTooLarge(f"{len(data)} bytes, at most {MAX_MESSAGE_BYTES} allowed")
    raw = _load(data)
    if not isinstance(raw, list) or not raw:
        raise InvalidEnvelope("expected an array starting with the protocol version")
    version: object = raw[0]
    if not isinstance(version, int) or isinstance(version, bool) or version < 0:
        raise InvalidEnvelope("the version must be an unsigned integer")
    if version == 0:
        raise InvalidEnvelope("version 0 is never used")
    if version != PROTOCOL_VERSION:
        raise UnsupportedVersion(version)
    _check_data_model(raw)
    envelope = cast(list[CBORValue], raw)
    if cbor2.dumps(envelope, canonical=True) != data:
        raise NonCanonical("not the deterministic encoding (RFC 8949 §4.2.1)")
    if len(envelope) != _ENVELOPE_ITEMS:
        raise InvalidEnvelope(f"expected {_ENVELOPE_ITEMS} items, got {len(envelope)}")
    _, raw_kind, raw_message_id, raw_sent_at, raw_content = envelope
    try:
        kind = _KIND.decode(raw_kind)
        message_id = MESSAGE_ID.decode(raw_message_id)
        sent_at = SENT_AT.decode(raw_sent_at)
        if not isinstance(raw_content, dict):
            raise FieldProblem(WrongType, "expected a map", "content")
        cls = MESSAGE_CLASSES.get(kind)
        if cls is None:
            raise UnknownKind(kind, message_id, sent_at)
        content = ContentReader(raw_content, cls.FIELDS)
        # Field paths inside the content map are the fields' own names ("body").
        return cls.from_content(content, message_id, sent_at)
    except FieldProblem as problem:
        raise problem.as_decode_error() from None
    except UsageError as error:
        # Each field passed its own rule; what is left is a rule across fields.
        raise InvalidValue("content", str(error)) from None


def _load(data: bytes) -> object:
    """
    Decode one CBOR data item that fills ``data`` exactly.

    :param data: the input.
    :returns: the item, as cbor2 builds it (tags replaced by :class:`_Tagged`).
    :raises MalformedCBOR: on anything that is not one well-formed item.
    """
    stream = io.BytesIO(data)
    # read_size=1 keeps cbor2 from reading ahead, so that stream.tell() is
    # exactly where the item ended.
    decoder = cbor2.CBORDecoder(
        stream,
        read_size=1,
        tag_hook=_tag_hook,
        semantic_decoders=_SEMANTIC_DECODERS,
        # Invalid UTF-8 comes back as lone surrogates, which _check_data_model
        # reports as InvalidUtf8; cbor2's own error would not say which it was.
        str_errors="surrogateescape",
        max_depth=MAX_DEPTH,
    )
    try:
        item: object = decoder.decode()
    except cbor2.CBORDecodeEOF as error:
        raise Truncated(str(error)) from None
    except cbor2.CBORDecodeError as error:
        raise MalformedCBOR(str(error)) from None
    if stream.tell() != len(data):
        raise TrailingBytes(f"{len(data) - stream.tell()} bytes after the message")
    return item


def _check_data_model(value: object) -> None:
    """
    Check that a decoded item uses only the version-1 data model.

    Recursion is bounded: cbor2 has already refused nesting deeper than ``MAX_DEPTH``.

    :param value: the item.
    :raises InvalidUtf8: on a text string that was not valid UTF-8.
    :raises UnsupportedCBOR: on anything outside the data model.
    """
    if isinstance(value, bool | int | bytes):
        return
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidUtf8("a text string is not valid UTF-8") from None
        return
    if isinstance(value, list):
        for item in value:
            _check_data_model(item)
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, int) or isinstance(key, bool) or key < 0:
                raise UnsupportedCBOR("map keys must be unsigned integers")
            _check_data_model(item)
        return
    if isinstance(value, _Tagged):
        raise UnsupportedCBOR("tags are not used")
    if isinstance(value, float):
        raise UnsupportedCBOR("floating-point numbers are not used")
    if value is None:
        raise UnsupportedCBOR("null is not used: an absent field is left out")
    raise UnsupportedCBOR(f"{value!r} is not used")

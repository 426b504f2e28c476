"""
Errors raised by the Townsquare wire protocol.

Every error raised by ``townsquare.wire`` derives from :class:`WireError`. Each
subclass names one cause; catching a parent catches its whole branch::

    WireError
    ├── UsageError                the caller built or used a value wrongly (a bug in the caller)
    └── DecodeError               bytes from a peer are not a message this client can show
        ├── NotUnderstood         possibly valid, but from a newer protocol: show a placeholder
        │   ├── UnsupportedVersion    the envelope's version is newer than this client's
        │   └── UnknownKind           a kind this client does not know (carries id and time)
        └── InvalidMessage        broken or hostile input: never valid in any version
            ├── MessageTooLarge       longer than MAX_MESSAGE_BYTES
            ├── MalformedCBOR         not well-formed CBOR (RFC 8949 §3), or nested too deeply
            │   ├── Truncated             the input ends inside a data item
            │   └── TrailingBytes         bytes follow the top-level data item
            ├── InvalidUtf8           a text string is not valid UTF-8 (RFC 8949 §3.1)
            ├── UnsupportedCBOR       well-formed CBOR outside the data model: floats, tags, ...
            ├── NonCanonical          not the deterministic encoding (RFC 8949 §4.2.1)
            ├── InvalidEnvelope       the top level is not [version, kind, id, sent_at, content]
            └── InvalidField          a field is wrong; ``field`` names it ("body", "avatar.key")
                ├── MissingField          a required field is absent
                ├── UnexpectedField       a key that the kind does not define
                ├── WrongType             e.g. a byte string where a text string belongs
                ├── TooLong               a string or byte string over its limit
                └── InvalidValue          the right type, but a value the field forbids

A client shows :class:`NotUnderstood` messages as "a message from a newer
version of Townsquare" (see ``docs/wire.md``), and drops or flags
:class:`InvalidMessage`. Decoding never raises anything but a
:class:`DecodeError` subclass: no ``cbor2`` exception, ``KeyError`` or
``UnicodeError`` escapes.
"""

from __future__ import annotations

from datetime import datetime


class WireError(Exception):
    """
    Root of every error raised by the wire protocol.
    """


class UsageError(WireError):
    """
    The caller used the API wrongly: a value it built breaks a rule of the protocol.
    """


class DecodeError(WireError):
    """
    Bytes from a peer are not a message this client can show.
    """


# -- Messages from a newer protocol ---------------------------------------------


class NotUnderstood(DecodeError):
    """
    The message may be valid, but for a newer version of the protocol than this one.
    """


class UnsupportedVersion(NotUnderstood):
    """
    The envelope carries a protocol version newer than this client speaks.
    """

    def __init__(self, version: int) -> None:
        """
        Record the version that was found.

        :param version: the envelope's version number.
        """
        super().__init__(f"protocol version {version} is not supported")
        self.version = version


class UnknownKind(NotUnderstood):
    """
    A well-formed envelope of this protocol version carries a kind this client does not know.

    The envelope has been checked, so ``message_id`` and ``sent_at`` are
    trustworthy: a client can place the placeholder in the conversation and
    let later edits, replies or deletes refer to it.
    """

    def __init__(self, kind: int, message_id: bytes, sent_at: datetime) -> None:
        """
        Record what the envelope says about the message.

        :param kind: the kind number from the envelope.
        :param message_id: the message's 16-byte id.
        :param sent_at: when the sender says it was sent (aware, UTC).
        """
        super().__init__(f"unknown message kind {kind} (message {message_id[:4].hex()}…)")
        self.kind = kind
        self.message_id = message_id
        self.sent_at = sent_at


# -- Invalid input ----------------------------------------------------------------


class InvalidMessage(DecodeError):
    """
    The bytes are not a valid message in any version of the protocol.
    """


class MessageTooLarge(InvalidMessage):
    """
    The encoded message is longer than ``MAX_MESSAGE_BYTES``.
    """


class MalformedCBOR(InvalidMessage):
    """
    The bytes are not one well-formed CBOR data item (RFC 8949 §3), or nest too deeply.
    """


class Truncated(MalformedCBOR):
    """
    The input ends inside a data item.
    """


class TrailingBytes(MalformedCBOR):
    """
    Bytes follow the complete top-level data item.
    """


class InvalidUtf8(InvalidMessage):
    """
    A text string is not valid UTF-8 (RFC 8949 §3.1: "a string of Unicode characters that is
    encoded as UTF-8").
    """


class UnsupportedCBOR(InvalidMessage):
    """
    Well-formed CBOR that the protocol's data model excludes.

    The data model allows integers, byte strings, text strings, arrays, maps
    whose keys are unsigned integers, and ``true``/``false``. Floats, tags,
    ``null``, ``undefined`` and other simple values are refused.
    """


class NonCanonical(InvalidMessage):
    """
    The data item is not in RFC 8949 §4.2.1 core deterministic encoding.

    Indefinite lengths, integers or lengths not in their shortest form, map
    keys out of order and duplicate map keys all land here: re-encoding the
    decoded value does not give back the same bytes.
    """


class InvalidEnvelope(InvalidMessage):
    """
    The top level is not the array ``[version, kind, message_id, sent_at, content]``.
    """


class InvalidField(InvalidMessage):
    """
    One field of the envelope or of a message's content is wrong.
    """

    def __init__(self, field: str, detail: str) -> None:
        """
        Name the field and say what is wrong with it.

        :param field: the field's path, e.g. ``"body"`` or ``"avatar.key"``.
        :param detail: what is wrong, for logs and tests.
        """
        super().__init__(f"{field}: {detail}")
        self.field = field
        self.detail = detail


class MissingField(InvalidField):
    """
    A required field is absent.
    """


class UnexpectedField(InvalidField):
    """
    The content map holds a key that the kind does not define.
    """


class WrongType(InvalidField):
    """
    A field holds the wrong CBOR type.
    """


class TooLong(InvalidField):
    """
    A text or byte string is longer than its field allows.
    """


class InvalidValue(InvalidField):
    """
    A field has the right type but a value its rule forbids.
    """

"""
Field rules and limits: the one place that says what each field may hold.

A :class:`Rule` checks one kind of value (a bounded text string, a byte
string of a given length, a timestamp, ...) and converts it to and from its
CBOR form. A :class:`Field` ties a rule to a map key and an attribute name.
The same rule runs when a caller builds a message (a failure becomes
:class:`~townsquare.wire.errors.UsageError`) and when a peer's bytes are
decoded (a failure becomes the :class:`~townsquare.wire.errors.InvalidField`
subclass the rule names), so the two can never disagree.

Lengths are counted as ``docs/wire.md`` says: UTF-8 bytes for message text
(which bounds the payload), Unicode code points for names, titles and emoji
(which is what a person sees as "characters"; in TypeScript,
``[...s].length``, not ``s.length``).
"""

from __future__ import annotations

import re
import secrets
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Generic, NewType, Protocol, TypeAlias, TypeVar

from townsquare.wire.errors import (
    InvalidField,
    InvalidValue,
    MissingField,
    TooLong,
    UnexpectedField,
    UsageError,
    WrongType,
)

__all__ = [
    "KEY_BYTES",
    "MAX_BLOB_ID_BYTES",
    "MAX_BODY_BYTES",
    "MAX_CONTENT_TYPE_CHARS",
    "MAX_DISPLAY_NAME_CHARS",
    "MAX_EMOJI_CHARS",
    "MAX_FILE_NAME_BYTES",
    "MAX_IMAGE_SIDE",
    "MAX_MESSAGE_BYTES",
    "MAX_PREVIEW_BYTES",
    "MAX_SAFE_INTEGER",
    "MAX_SENT_AT",
    "MAX_TITLE_CHARS",
    "MESSAGE_ID_BYTES",
    "SHA256_BYTES",
    "BytesRule",
    "CBORValue",
    "ContentReader",
    "ContentTypeRule",
    "Field",
    "FieldLike",
    "FieldProblem",
    "MessageId",
    "MessageIdRule",
    "Rule",
    "TextRule",
    "TimestampRule",
    "UintRule",
    "check_fields",
    "encode_fields",
    "new_message_id",
]

# -- Limits ----------------------------------------------------------------------------
# Every limit is part of protocol version 1: raising one is a change that older
# clients reject (TooLong), so it needs a new kind or a new version.

MAX_MESSAGE_BYTES = 32 * 1024
"""The largest encoded message a client accepts, whatever its version or kind."""

MAX_BODY_BYTES = 16 * 1024
"""Message text (``body``, ``caption``), in UTF-8 bytes: 16 KiB, about 5,400 Chinese characters."""

MAX_DISPLAY_NAME_CHARS = 64
"""A member's display name, in code points."""

MAX_TITLE_CHARS = 128
"""A group's title, in code points."""

MAX_EMOJI_CHARS = 16
"""A reaction, in code points: room for ZWJ sequences such as a family (7 code points)."""

MAX_FILE_NAME_BYTES = 255
"""An attachment's file name, in UTF-8 bytes: what common file systems allow."""

MAX_CONTENT_TYPE_CHARS = 127
"""A media type ``type/subtype``, in ASCII characters (RFC 6838 §4.2 caps each name at 127)."""

MAX_BLOB_ID_BYTES = 64
"""The relay's id of an encrypted blob, in bytes."""

MAX_PREVIEW_BYTES = 4 * 1024
"""An attachment's inline preview image, in bytes."""

MAX_IMAGE_SIDE = 65535
"""An image's width or height, in pixels."""

MAX_SAFE_INTEGER = 2**53 - 1
"""Integers a JavaScript number holds exactly; sizes and times stay below it for the web client."""

MESSAGE_ID_BYTES = 16
"""A message id is 16 random bytes."""

KEY_BYTES = 32
"""An attachment's symmetric key."""

SHA256_BYTES = 32
"""A SHA-256 digest."""

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS = timedelta(milliseconds=1)

MAX_SENT_AT = (datetime.max.replace(tzinfo=UTC) - _EPOCH) // _ONE_MS
"""The latest ``sent_at`` in milliseconds: 9999-12-31T23:59:59.999Z, the end of Python's range."""

# -- Values ------------------------------------------------------------------------------

CBORValue: TypeAlias = "int | str | bytes | list[CBORValue] | dict[int, CBORValue]"
"""The protocol's data model (``bool`` is a subtype of ``int`` to the type checker)."""

MessageId = NewType("MessageId", bytes)
"""A message's 16-byte id, chosen at random by the sender."""


def new_message_id() -> MessageId:
    """
    Choose a fresh message id.

    :returns: 16 bytes from the operating system's CSPRNG.
    """
    return MessageId(secrets.token_bytes(MESSAGE_ID_BYTES))


T = TypeVar("T")


class FieldProblem(Exception):
    """
    One field broke its rule; internal, turned into a public error at the API's edge.
    """

    def __init__(self, error: type[InvalidField], detail: str, path: str = "") -> None:
        """
        Say what is wrong.

        :param error: the error class a decoder raises for this problem.
        :param detail: what is wrong.
        :param path: the field's path below the current one, if any.
        """
        super().__init__(detail)
        self.error = error
        self.detail = detail
        self.path = path

    def within(self, name: str) -> FieldProblem:
        """
        Prefix the path with the name of the enclosing field.

        :param name: the enclosing field's name.
        :returns: the same problem, one level up.
        """
        return FieldProblem(self.error, self.detail, f"{name}.{self.path}" if self.path else name)

    def as_decode_error(self) -> InvalidField:
        """
        :returns: the public error a decoder raises.
        """
        return self.error(self.path, self.detail)

    def as_usage_error(self, owner: str) -> UsageError:
        """
        :param owner: the class whose construction failed.
        :returns: the public error a constructor raises.
        """
        return UsageError(f"{owner}.{self.path}: {self.detail}")


def _type_name(value: object) -> str:
    # Name CBOR types, not Python ones, so that messages read the same in both clients.
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, str):
        return "a text string"
    if isinstance(value, bytes):
        return "a byte string"
    if isinstance(value, list | tuple):
        return "an array"
    if isinstance(value, dict):
        return "a map"
    return type(value).__name__


class Rule(ABC, Generic[T]):
    """
    What one field may hold, and how it looks in CBOR.
    """

    @abstractmethod
    def check(self, value: object) -> T:
        """
        Check a value a caller supplied.

        :param value: anything.
        :returns: the value, typed (and for timestamps, normalised).
        :raises FieldProblem: if the value breaks the rule.
        """

    @abstractmethod
    def to_cbor(self, value: T) -> CBORValue:
        """
        :param value: a value that passed :meth:`check`.
        :returns: its CBOR form.
        """

    def from_cbor(self, raw: CBORValue) -> T:
        """
        Check a decoded CBOR value and convert it.

        :param raw: the value as decoded.
        :returns: the field's value.
        :raises FieldProblem: if the value breaks the rule.
        """
        return self.check(raw)


@dataclass(frozen=True, slots=True)
class TextRule(Rule[str]):
    """
    A text string, bounded in code points or UTF-8 bytes, never changed.

    Townsquare choice: text is not Unicode-normalised. NFC would replace the
    CJK compatibility ideographs (U+F900–U+FAFF) with their unified
    equivalents, so a name written with one would come back different; and a
    signed message should reach every member exactly as it was written.
    Comparisons that need normalisation (look-alike names) make a normalised
    copy on the device.
    """

    max_bytes: int | None = None
    max_chars: int | None = None
    allow_empty: bool = False
    single_line: bool = False

    def check(self, value: object) -> str:
        """
        :param value: anything.
        :returns: the value as given.
        :raises FieldProblem: on a non-string, a lone surrogate, an empty or blank
            single-line value, a control character in a single-line value, or too long.
        """
        if not isinstance(value, str):
            raise FieldProblem(WrongType, f"expected a text string, got {_type_name(value)}")
        try:
            size = len(value.encode("utf-8"))
        except UnicodeEncodeError:
            # Only a Python caller can get here: a decoder reports a peer's
            # surrogates as InvalidUtf8 before any rule runs.
            raise FieldProblem(InvalidValue, "contains a lone surrogate") from None
        if not self.allow_empty and value == "":
            raise FieldProblem(InvalidValue, "must not be empty")
        if self.single_line:
            if value.isspace():
                raise FieldProblem(InvalidValue, "must not be only white space")
            if any(_is_control(c) for c in value):
                raise FieldProblem(InvalidValue, "must not contain control characters")
        if self.max_bytes is not None and size > self.max_bytes:
            raise FieldProblem(TooLong, f"{size} UTF-8 bytes, at most {self.max_bytes} allowed")
        if self.max_chars is not None and len(value) > self.max_chars:
            raise FieldProblem(
                TooLong, f"{len(value)} code points, at most {self.max_chars} allowed"
            )
        return value

    def to_cbor(self, value: str) -> CBORValue:
        """
        :param value: a checked string.
        :returns: the same string.
        """
        return value


def _is_control(char: str) -> bool:
    # Unicode general category Cc: C0 controls, DEL and C1 controls. Newlines and
    # tabs in a name or title would break one-line layouts, and the rest have no
    # business in a name.
    code = ord(char)
    return code < 0x20 or 0x7F <= code < 0xA0


# RFC 6838 §4.2 restricted-name, lower case only: equal types then have equal
# bytes, and a client can compare them without folding case.
_RESTRICTED_NAME = r"[a-z0-9][a-z0-9!#$&^_.+-]{0,126}"
_CONTENT_TYPE = re.compile(f"{_RESTRICTED_NAME}/{_RESTRICTED_NAME}", re.ASCII)


@dataclass(frozen=True, slots=True)
class ContentTypeRule(Rule[str]):
    """
    A media type ``type/subtype`` (RFC 6838 §4.2), lower case, without parameters.
    """

    def check(self, value: object) -> str:
        """
        :param value: anything.
        :returns: the value as given.
        :raises FieldProblem: on a non-string, too long, or not ``type/subtype``.
        """
        if not isinstance(value, str):
            raise FieldProblem(WrongType, f"expected a text string, got {_type_name(value)}")
        if len(value) > MAX_CONTENT_TYPE_CHARS:
            raise FieldProblem(
                TooLong, f"{len(value)} characters, at most {MAX_CONTENT_TYPE_CHARS} allowed"
            )
        if _CONTENT_TYPE.fullmatch(value) is None:
            raise FieldProblem(InvalidValue, f"{value!r} is not a lower-case type/subtype")
        return value

    def to_cbor(self, value: str) -> CBORValue:
        """
        :param value: a checked media type.
        :returns: the same string.
        """
        return value


@dataclass(frozen=True, slots=True)
class BytesRule(Rule[bytes]):
    """
    A byte string of ``min_len`` to ``max_len`` bytes.
    """

    min_len: int
    max_len: int

    def check(self, value: object) -> bytes:
        """
        :param value: anything.
        :returns: the value as given.
        :raises FieldProblem: on a non-bytes value or a wrong length.
        """
        if not isinstance(value, bytes):
            raise FieldProblem(WrongType, f"expected a byte string, got {_type_name(value)}")
        if self.min_len == self.max_len and len(value) != self.min_len:
            raise FieldProblem(InvalidValue, f"{len(value)} bytes, must be exactly {self.min_len}")
        if len(value) < self.min_len:
            raise FieldProblem(InvalidValue, f"{len(value)} bytes, at least {self.min_len} needed")
        if len(value) > self.max_len:
            raise FieldProblem(TooLong, f"{len(value)} bytes, at most {self.max_len} allowed")
        return value

    def to_cbor(self, value: bytes) -> CBORValue:
        """
        :param value: checked bytes.
        :returns: the same bytes.
        """
        return value


@dataclass(frozen=True, slots=True)
class MessageIdRule(Rule[MessageId]):
    """
    A 16-byte message id.
    """

    def check(self, value: object) -> MessageId:
        """
        :param value: anything.
        :returns: the value as a :data:`MessageId`.
        :raises FieldProblem: on a non-bytes value or a length other than 16.
        """
        return MessageId(BytesRule(MESSAGE_ID_BYTES, MESSAGE_ID_BYTES).check(value))

    def to_cbor(self, value: MessageId) -> CBORValue:
        """
        :param value: a checked id.
        :returns: the same bytes.
        """
        return bytes(value)


@dataclass(frozen=True, slots=True)
class UintRule(Rule[int]):
    """
    An unsigned integer from ``minimum`` to ``maximum``.
    """

    minimum: int
    maximum: int

    def check(self, value: object) -> int:
        """
        :param value: anything.
        :returns: the value as given.
        :raises FieldProblem: on a non-integer (booleans included) or out of range.
        """
        # bool is a subclass of int in Python, but true and false are not integers in CBOR.
        if not isinstance(value, int) or isinstance(value, bool):
            raise FieldProblem(WrongType, f"expected an integer, got {_type_name(value)}")
        if not self.minimum <= value <= self.maximum:
            raise FieldProblem(InvalidValue, f"{value} is outside {self.minimum}..{self.maximum}")
        return value

    def to_cbor(self, value: int) -> CBORValue:
        """
        :param value: a checked integer.
        :returns: the same integer.
        """
        return value


@dataclass(frozen=True, slots=True)
class TimestampRule(Rule[datetime]):
    """
    An instant, carried as unsigned integer milliseconds since 1970-01-01T00:00:00Z.
    """

    def check(self, value: object) -> datetime:
        """
        Check an aware datetime and normalise it to UTC at millisecond precision.

        Sub-millisecond digits are dropped (floored), so that a message equals
        itself after a round trip through the wire.

        :param value: anything.
        :returns: the same instant in UTC, floored to the millisecond.
        :raises FieldProblem: on a non-datetime, a naive datetime, or an instant
            before 1970 or after 9999.
        """
        if not isinstance(value, datetime):
            raise FieldProblem(WrongType, f"expected a datetime, got {_type_name(value)}")
        if value.utcoffset() is None:
            raise FieldProblem(InvalidValue, "must be timezone-aware (UTC)")
        # Subtracting aware datetimes never overflows, unlike astimezone() near year 9999.
        milliseconds = (value - _EPOCH) // _ONE_MS
        return self.from_cbor(milliseconds)

    def to_cbor(self, value: datetime) -> CBORValue:
        """
        :param value: a checked, normalised datetime.
        :returns: milliseconds since the Unix epoch.
        """
        return (value - _EPOCH) // _ONE_MS

    def from_cbor(self, raw: CBORValue) -> datetime:
        """
        :param raw: milliseconds since the Unix epoch.
        :returns: that instant, in UTC.
        :raises FieldProblem: on a non-integer or an instant outside 1970..9999.
        """
        milliseconds = UintRule(0, MAX_SENT_AT).check(raw)
        return _EPOCH + milliseconds * _ONE_MS


class FieldLike(Protocol):
    """
    A field seen without its value type, as a class's field table lists it.
    """

    @property
    def key(self) -> int:
        """
        :returns: the field's key in the content map.
        """

    @property
    def name(self) -> str:
        """
        :returns: the attribute and path name.
        """

    @property
    def optional(self) -> bool:
        """
        :returns: whether the field may be absent (``None`` in Python).
        """

    def check(self, value: object) -> None:
        """
        :param value: the attribute's value.
        :raises FieldProblem: if it breaks the field's rule.
        """

    def encode(self, value: object) -> CBORValue:
        """
        :param value: the attribute's value, not ``None``.
        :returns: its CBOR form.
        :raises FieldProblem: if it breaks the field's rule.
        """


@dataclass(frozen=True, slots=True)
class Field(Generic[T]):
    """
    One entry of a content map: its key, its attribute name and its rule.
    """

    key: int
    name: str
    rule: Rule[T]
    optional: bool = False

    def check(self, value: object) -> None:
        """
        :param value: the attribute's value.
        :raises FieldProblem: if the value is ``None`` for a required field or breaks the rule.
        """
        if value is None:
            if self.optional:
                return
            raise FieldProblem(MissingField, "is required", self.name)
        try:
            self.rule.check(value)
        except FieldProblem as problem:
            raise problem.within(self.name) from None

    def encode(self, value: object) -> CBORValue:
        """
        :param value: the attribute's value, not ``None``.
        :returns: its CBOR form.
        :raises FieldProblem: if the value breaks the rule.
        """
        try:
            return self.rule.to_cbor(self.rule.check(value))
        except FieldProblem as problem:
            raise problem.within(self.name) from None

    def decode(self, raw: CBORValue) -> T:
        """
        :param raw: the value found under this field's key.
        :returns: the field's value.
        :raises FieldProblem: if the value breaks the rule.
        """
        try:
            return self.rule.from_cbor(raw)
        except FieldProblem as problem:
            raise problem.within(self.name) from None


class ContentReader:
    """
    Typed access to a decoded content map, checked against a field table.
    """

    def __init__(self, raw: Mapping[int, CBORValue], fields: Sequence[FieldLike]) -> None:
        """
        Check that the map holds no key the table does not define.

        :param raw: the decoded map.
        :param fields: the kind's field table.
        :raises FieldProblem: (:class:`UnexpectedField`) on an undefined key.
        """
        known = {field.key for field in fields}
        unexpected = sorted(key for key in raw if key not in known)
        if unexpected:
            # Townsquare choice: an unknown key is an error, not ignored. A kind's
            # fields are fixed once released; new fields mean a new kind, so that a
            # client never shows a message missing something its sender meant.
            raise FieldProblem(
                UnexpectedField, f"key {unexpected[0]} is not defined here", str(unexpected[0])
            )
        self._raw = raw

    def required(self, field: Field[T]) -> T:
        """
        :param field: a required field of the table.
        :returns: its value.
        :raises FieldProblem: if the field is absent or breaks its rule.
        """
        if field.key not in self._raw:
            raise FieldProblem(MissingField, f"key {field.key} is required", field.name)
        return field.decode(self._raw[field.key])

    def optional(self, field: Field[T]) -> T | None:
        """
        :param field: an optional field of the table.
        :returns: its value, or ``None`` if absent.
        :raises FieldProblem: if the field breaks its rule.
        """
        if field.key not in self._raw:
            return None
        return field.decode(self._raw[field.key])


def check_fields(owner: object, fields: Sequence[FieldLike]) -> None:
    """
    Check every field of a newly built value against its rule.

    :param owner: the value being built.
    :param fields: its class's field table.
    :raises UsageError: naming the first field that breaks its rule.
    """
    for field in fields:
        try:
            field.check(getattr(owner, field.name))
        except FieldProblem as problem:
            raise problem.as_usage_error(type(owner).__name__) from None


def encode_fields(owner: object, fields: Sequence[FieldLike]) -> dict[int, CBORValue]:
    """
    Build a value's content map; absent optional fields are left out, never ``null``.

    :param owner: a checked value.
    :param fields: its class's field table.
    :returns: the map from field keys to CBOR values.
    :raises UsageError: if a field breaks its rule (only if the value was mutated
        behind the dataclass's back).
    """
    content: dict[int, CBORValue] = {}
    for field in fields:
        value: object = getattr(owner, field.name)
        if value is None:
            continue
        try:
            content[field.key] = field.encode(value)
        except FieldProblem as problem:
            raise problem.as_usage_error(type(owner).__name__) from None
    return content

"""
The messages a member's device sends inside MLS application messages.

Each kind is a frozen dataclass deriving from :class:`Message`, with a kind
number (:class:`Kind`), a field table (``FIELDS``: map key, attribute name and
rule of each field) and a ``from_content`` constructor for the decoder. The
MLS layer authenticates the sender and encrypts the bytes; the relay never
sees what is here.

Rule: adding a kind happens in this module alone. Give it a number in
:class:`Kind` (never reuse one), write its class beside the others, and list
the class in ``_REGISTERED`` at the bottom; :mod:`townsquare.wire.codec` finds
it there. Then add vectors (``tests/vectors/wire/generate.py``) and a section
in ``docs/wire.md``. A kind's fields never change once released: a new field
is a new kind.

Every value is checked when it is built: a value that breaks a rule raises
:class:`~townsquare.wire.errors.UsageError`, so a message that exists can be
encoded.
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import KW_ONLY, dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import ClassVar, Self

from townsquare.wire.errors import UsageError, WrongType
from townsquare.wire.fields import (
    KEY_BYTES,
    MAX_BLOB_ID_BYTES,
    MAX_BODY_BYTES,
    MAX_DISPLAY_NAME_CHARS,
    MAX_EMOJI_CHARS,
    MAX_FILE_NAME_BYTES,
    MAX_IMAGE_SIDE,
    MAX_PREVIEW_BYTES,
    MAX_SAFE_INTEGER,
    MAX_TITLE_CHARS,
    SHA256_BYTES,
    BytesRule,
    CBORValue,
    ContentReader,
    ContentTypeRule,
    Field,
    FieldLike,
    FieldProblem,
    MessageId,
    MessageIdRule,
    Rule,
    TextRule,
    TimestampRule,
    UintRule,
    check_fields,
    encode_fields,
)

__all__ = [
    "MESSAGE_CLASSES",
    "MESSAGE_ID",
    "SENT_AT",
    "Attachment",
    "AttachmentRef",
    "Delete",
    "Edit",
    "GroupTitle",
    "Kind",
    "Message",
    "Profile",
    "Reaction",
    "Reply",
    "Text",
]


class Kind(enum.IntEnum):
    """
    The kind numbers carried in the envelope; small, so each takes one CBOR byte.

    0 is never assigned. Numbers are never reused, even for a withdrawn kind.
    Planned, not built: notices, polls, events, petitions, vouches.
    """

    TEXT = 1
    REPLY = 2
    REACTION = 3
    EDIT = 4
    DELETE = 5
    ATTACHMENT = 6
    PROFILE = 7
    GROUP_TITLE = 8


# Rules shared by several kinds.
_BODY = TextRule(max_bytes=MAX_BODY_BYTES)
_TARGET = MessageIdRule()

# The envelope's own fields; their keys are positions in the envelope array.
MESSAGE_ID = Field(2, "message_id", MessageIdRule())
SENT_AT = Field(3, "sent_at", TimestampRule())


@dataclass(frozen=True, slots=True)
class Message(ABC):
    """
    What every message carries: a sender-chosen id and the time the sender says it was sent.

    :param message_id: 16 random bytes (:func:`~townsquare.wire.new_message_id`);
        how sends are deduplicated and how replies, reactions, edits and deletes
        refer to a message.
    :param sent_at: an aware datetime; stored in UTC, floored to the millisecond.
    """

    KIND: ClassVar[Kind]
    FIELDS: ClassVar[tuple[FieldLike, ...]]

    message_id: MessageId = field(kw_only=True)
    sent_at: datetime = field(kw_only=True)

    def __post_init__(self) -> None:
        """
        Check every field, and normalise ``sent_at``.

        :raises UsageError: naming the first field that breaks its rule.
        """
        check_fields(self, (MESSAGE_ID, *self.FIELDS))
        try:
            sent_at = SENT_AT.rule.check(self.sent_at)
        except FieldProblem as problem:
            raise problem.within(SENT_AT.name).as_usage_error(type(self).__name__) from None
        # The dataclass is frozen; this is its own constructor finishing its work.
        object.__setattr__(self, "sent_at", sent_at)
        self._check_together()

    def _check_together(self) -> None:  # noqa: B027 (an optional hook, empty by default)
        """
        Check rules that span several fields; none by default.

        :raises UsageError: if the fields do not fit together.
        """

    def content(self) -> dict[int, CBORValue]:
        """
        :returns: the kind's content map: field keys to CBOR values, absent fields left out.
        """
        return encode_fields(self, self.FIELDS)

    @classmethod
    @abstractmethod
    def from_content(cls, content: ContentReader, message_id: MessageId, sent_at: datetime) -> Self:
        """
        Build a message of this kind from a decoded content map.

        :param content: the content map, checked against ``FIELDS``.
        :param message_id: the envelope's message id.
        :param sent_at: the envelope's time.
        :returns: the message.
        :raises FieldProblem: if a field breaks its rule.
        :raises UsageError: if fields do not fit together.
        """


# -- Text ---------------------------------------------------------------------------

_TEXT_BODY = Field(0, "body", _BODY)


@dataclass(frozen=True, slots=True)
class Text(Message):
    """
    A text message.

    :param body: the text, 1 to 16,384 UTF-8 bytes, exactly as typed (no normalisation).
    """

    KIND: ClassVar[Kind] = Kind.TEXT
    FIELDS: ClassVar[tuple[FieldLike, ...]] = (_TEXT_BODY,)

    body: str

    @classmethod
    def from_content(cls, content: ContentReader, message_id: MessageId, sent_at: datetime) -> Self:
        """
        :returns: the message built from a decoded content map (see :meth:`Message.from_content`).
        """
        return cls(content.required(_TEXT_BODY), message_id=message_id, sent_at=sent_at)


# -- Reply --------------------------------------------------------------------------

_REPLY_BODY = Field(0, "body", _BODY)
_REPLY_IN_REPLY_TO = Field(1, "in_reply_to", _TARGET)


@dataclass(frozen=True, slots=True)
class Reply(Message):
    """
    A text message that answers an earlier message.

    :param body: as :attr:`Text.body`.
    :param in_reply_to: the id of the message answered.
    """

    KIND: ClassVar[Kind] = Kind.REPLY
    FIELDS: ClassVar[tuple[FieldLike, ...]] = (_REPLY_BODY, _REPLY_IN_REPLY_TO)

    body: str
    in_reply_to: MessageId

    @classmethod
    def from_content(cls, content: ContentReader, message_id: MessageId, sent_at: datetime) -> Self:
        """
        :returns: the message built from a decoded content map (see :meth:`Message.from_content`).
        """
        return cls(
            content.required(_REPLY_BODY),
            content.required(_REPLY_IN_REPLY_TO),
            message_id=message_id,
            sent_at=sent_at,
        )


# -- Reaction -----------------------------------------------------------------------

_REACTION_TARGET = Field(0, "target_id", _TARGET)
_REACTION_EMOJI = Field(
    1, "emoji", TextRule(max_chars=MAX_EMOJI_CHARS, allow_empty=True, single_line=True)
)


@dataclass(frozen=True, slots=True)
class Reaction(Message):
    """
    A member's reaction to a message; it replaces that member's earlier reaction to it.

    :param target_id: the id of the message reacted to.
    :param emoji: up to 16 code points, no control characters; ``""`` removes the reaction.
    """

    KIND: ClassVar[Kind] = Kind.REACTION
    FIELDS: ClassVar[tuple[FieldLike, ...]] = (_REACTION_TARGET, _REACTION_EMOJI)

    target_id: MessageId
    emoji: str

    @classmethod
    def from_content(cls, content: ContentReader, message_id: MessageId, sent_at: datetime) -> Self:
        """
        :returns: the message built from a decoded content map (see :meth:`Message.from_content`).
        """
        return cls(
            content.required(_REACTION_TARGET),
            content.required(_REACTION_EMOJI),
            message_id=message_id,
            sent_at=sent_at,
        )


# -- Edit ---------------------------------------------------------------------------

_EDIT_TARGET = Field(0, "target_id", _TARGET)
_EDIT_BODY = Field(1, "body", _BODY)


@dataclass(frozen=True, slots=True)
class Edit(Message):
    """
    New text for an earlier message of the same sender.

    Receivers apply an edit only to a message from the same member; the wire
    format cannot check that, because the sender is known only to MLS.

    :param target_id: the id of the message edited.
    :param body: its new text, as :attr:`Text.body`.
    """

    KIND: ClassVar[Kind] = Kind.EDIT
    FIELDS: ClassVar[tuple[FieldLike, ...]] = (_EDIT_TARGET, _EDIT_BODY)

    target_id: MessageId
    body: str

    @classmethod
    def from_content(cls, content: ContentReader, message_id: MessageId, sent_at: datetime) -> Self:
        """
        :returns: the message built from a decoded content map (see :meth:`Message.from_content`).
        """
        return cls(
            content.required(_EDIT_TARGET),
            content.required(_EDIT_BODY),
            message_id=message_id,
            sent_at=sent_at,
        )


# -- Delete -------------------------------------------------------------------------

_DELETE_TARGET = Field(0, "target_id", _TARGET)


@dataclass(frozen=True, slots=True)
class Delete(Message):
    """
    Withdraws an earlier message of the same sender (receivers check the sender, as for edits).

    :param target_id: the id of the message withdrawn.
    """

    KIND: ClassVar[Kind] = Kind.DELETE
    FIELDS: ClassVar[tuple[FieldLike, ...]] = (_DELETE_TARGET,)

    target_id: MessageId

    @classmethod
    def from_content(cls, content: ContentReader, message_id: MessageId, sent_at: datetime) -> Self:
        """
        :returns: the message built from a decoded content map (see :meth:`Message.from_content`).
        """
        return cls(content.required(_DELETE_TARGET), message_id=message_id, sent_at=sent_at)


# -- Attachment references ----------------------------------------------------------

_REF_BLOB_ID = Field(0, "blob_id", BytesRule(1, MAX_BLOB_ID_BYTES))
_REF_CONTENT_TYPE = Field(1, "content_type", ContentTypeRule())
_REF_SIZE = Field(2, "size", UintRule(0, MAX_SAFE_INTEGER))
_REF_KEY = Field(3, "key", BytesRule(KEY_BYTES, KEY_BYTES))
_REF_SHA256 = Field(4, "sha256", BytesRule(SHA256_BYTES, SHA256_BYTES))


@dataclass(frozen=True, slots=True)
class AttachmentRef:
    """
    Where an encrypted blob lives on the relay and how to check and decrypt it.

    The device encrypts the file with a fresh key and uploads the ciphertext;
    the relay sees only the ciphertext. A receiver downloads ``blob_id``,
    checks its length against ``size`` and its SHA-256 against ``sha256``
    before decrypting with ``key``.

    :param blob_id: the relay's id of the blob, 1 to 64 bytes.
    :param content_type: the plaintext's media type, lower case ``type/subtype``
        (RFC 6838 §4.2), at most 127 characters.
    :param size: the ciphertext's length in bytes, at most 2**53 - 1.
    :param key: the 32-byte symmetric key (never shown in ``repr``).
    :param sha256: the SHA-256 digest of the ciphertext, 32 bytes.
    """

    FIELDS: ClassVar[tuple[FieldLike, ...]] = (
        _REF_BLOB_ID,
        _REF_CONTENT_TYPE,
        _REF_SIZE,
        _REF_KEY,
        _REF_SHA256,
    )

    blob_id: bytes
    content_type: str
    size: int
    _: KW_ONLY
    key: bytes = field(repr=False)
    sha256: bytes

    def __post_init__(self) -> None:
        """
        Check every field.

        :raises UsageError: naming the first field that breaks its rule.
        """
        check_fields(self, self.FIELDS)

    def content(self) -> dict[int, CBORValue]:
        """
        :returns: the reference's map: field keys to CBOR values.
        """
        return encode_fields(self, self.FIELDS)

    @classmethod
    def from_content(cls, content: ContentReader) -> Self:
        """
        Build a reference from a decoded map.

        :param content: the map, checked against ``FIELDS``.
        :returns: the reference.
        :raises FieldProblem: if a field breaks its rule.
        """
        return cls(
            content.required(_REF_BLOB_ID),
            content.required(_REF_CONTENT_TYPE),
            content.required(_REF_SIZE),
            key=content.required(_REF_KEY),
            sha256=content.required(_REF_SHA256),
        )


@dataclass(frozen=True, slots=True)
class _AttachmentRefRule(Rule[AttachmentRef]):
    """
    A nested map holding an :class:`AttachmentRef`.
    """

    def check(self, value: object) -> AttachmentRef:
        # An AttachmentRef checked its own fields when it was built.
        if not isinstance(value, AttachmentRef):
            raise FieldProblem(WrongType, f"expected an AttachmentRef, got {type(value).__name__}")
        return value

    def to_cbor(self, value: AttachmentRef) -> CBORValue:
        return value.content()

    def from_cbor(self, raw: CBORValue) -> AttachmentRef:
        if not isinstance(raw, dict):
            raise FieldProblem(WrongType, "expected a map")
        return AttachmentRef.from_content(ContentReader(raw, AttachmentRef.FIELDS))


# -- Attachment ---------------------------------------------------------------------

_ATTACHMENT_REF = Field(0, "ref", _AttachmentRefRule())
_ATTACHMENT_FILE_NAME = Field(
    1, "file_name", TextRule(max_bytes=MAX_FILE_NAME_BYTES, single_line=True), optional=True
)
_ATTACHMENT_CAPTION = Field(2, "caption", _BODY, optional=True)
_ATTACHMENT_WIDTH = Field(3, "width", UintRule(1, MAX_IMAGE_SIDE), optional=True)
_ATTACHMENT_HEIGHT = Field(4, "height", UintRule(1, MAX_IMAGE_SIDE), optional=True)
_ATTACHMENT_PREVIEW = Field(5, "preview", BytesRule(1, MAX_PREVIEW_BYTES), optional=True)


@dataclass(frozen=True, slots=True)
class Attachment(Message):
    """
    A file sent to the group: a photo, a voice note, a document.

    :param ref: where the encrypted file is and how to decrypt it.
    :param file_name: the name to offer when saving, at most 255 UTF-8 bytes,
        no control characters; receivers still sanitise it before touching a disk.
    :param caption: text shown with the file, as :attr:`Text.body`.
    :param width: for an image or video, its width in pixels (1 to 65,535); given with ``height``.
    :param height: its height in pixels; given with ``width``.
    :param preview: a tiny JPEG (at most 4 KiB) shown while the file downloads.
    """

    KIND: ClassVar[Kind] = Kind.ATTACHMENT
    FIELDS: ClassVar[tuple[FieldLike, ...]] = (
        _ATTACHMENT_REF,
        _ATTACHMENT_FILE_NAME,
        _ATTACHMENT_CAPTION,
        _ATTACHMENT_WIDTH,
        _ATTACHMENT_HEIGHT,
        _ATTACHMENT_PREVIEW,
    )

    ref: AttachmentRef
    _: KW_ONLY
    file_name: str | None = None
    caption: str | None = None
    width: int | None = None
    height: int | None = None
    # A preview is up to 4 KiB of image: noise in a repr.
    preview: bytes | None = field(default=None, repr=False)

    def _check_together(self) -> None:
        """
        :raises UsageError: if only one of ``width`` and ``height`` is given.
        """
        if (self.width is None) != (self.height is None):
            raise UsageError("Attachment: width and height come together or not at all")

    @classmethod
    def from_content(cls, content: ContentReader, message_id: MessageId, sent_at: datetime) -> Self:
        """
        :returns: the message built from a decoded content map (see :meth:`Message.from_content`).
        """
        return cls(
            content.required(_ATTACHMENT_REF),
            file_name=content.optional(_ATTACHMENT_FILE_NAME),
            caption=content.optional(_ATTACHMENT_CAPTION),
            width=content.optional(_ATTACHMENT_WIDTH),
            height=content.optional(_ATTACHMENT_HEIGHT),
            preview=content.optional(_ATTACHMENT_PREVIEW),
            message_id=message_id,
            sent_at=sent_at,
        )


# -- Profile ------------------------------------------------------------------------

_PROFILE_DISPLAY_NAME = Field(
    0, "display_name", TextRule(max_chars=MAX_DISPLAY_NAME_CHARS, single_line=True)
)
_PROFILE_AVATAR = Field(1, "avatar", _AttachmentRefRule(), optional=True)


@dataclass(frozen=True, slots=True)
class Profile(Message):
    """
    How the sending member wants to be shown in this group; the latest one wins.

    A display name is a claim, not an identity: clients warn when it looks
    like another member's.

    :param display_name: 1 to 64 code points, not only white space, no control characters.
    :param avatar: a picture, stored encrypted on the relay like any attachment.
    """

    KIND: ClassVar[Kind] = Kind.PROFILE
    FIELDS: ClassVar[tuple[FieldLike, ...]] = (_PROFILE_DISPLAY_NAME, _PROFILE_AVATAR)

    display_name: str
    avatar: AttachmentRef | None = None

    @classmethod
    def from_content(cls, content: ContentReader, message_id: MessageId, sent_at: datetime) -> Self:
        """
        :returns: the message built from a decoded content map (see :meth:`Message.from_content`).
        """
        return cls(
            content.required(_PROFILE_DISPLAY_NAME),
            content.optional(_PROFILE_AVATAR),
            message_id=message_id,
            sent_at=sent_at,
        )


# -- GroupTitle ---------------------------------------------------------------------

_GROUP_TITLE_TITLE = Field(0, "title", TextRule(max_chars=MAX_TITLE_CHARS, single_line=True))


@dataclass(frozen=True, slots=True)
class GroupTitle(Message):
    """
    Renames the group; the latest one in log order wins.

    :param title: 1 to 128 code points, not only white space, no control characters.
    """

    KIND: ClassVar[Kind] = Kind.GROUP_TITLE
    FIELDS: ClassVar[tuple[FieldLike, ...]] = (_GROUP_TITLE_TITLE,)

    title: str

    @classmethod
    def from_content(cls, content: ContentReader, message_id: MessageId, sent_at: datetime) -> Self:
        """
        :returns: the message built from a decoded content map (see :meth:`Message.from_content`).
        """
        return cls(content.required(_GROUP_TITLE_TITLE), message_id=message_id, sent_at=sent_at)


# -- Registry -----------------------------------------------------------------------

_REGISTERED: tuple[type[Message], ...] = (
    Text,
    Reply,
    Reaction,
    Edit,
    Delete,
    Attachment,
    Profile,
    GroupTitle,
)

MESSAGE_CLASSES: Mapping[int, type[Message]] = MappingProxyType(
    {cls.KIND.value: cls for cls in _REGISTERED}
)
"""Kind number to class, for every kind this version of Townsquare understands."""

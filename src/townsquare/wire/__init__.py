"""
The application protocol carried inside MLS application messages.

A member's device builds a message (:class:`Text`, :class:`Reply`,
:class:`Reaction`, :class:`Edit`, :class:`Delete`, :class:`Attachment`,
:class:`Profile`, :class:`GroupTitle`), encodes it with :func:`encode` and
hands the bytes to MLS; a receiving device decrypts and calls :func:`decode`.
The format is versioned, deterministic CBOR (RFC 8949 §4.2.1), described in
``docs/wire.md``; ``tests/vectors/wire/`` holds the vectors the web client
checks too.

::

    from townsquare import wire

    message = wire.Text("明天上午九点在村委会开会", message_id=wire.new_message_id(), sent_at=now)
    data = wire.encode(message)
    try:
        received = wire.decode(data)
    except wire.NotUnderstood:
        ...  # "a message from a newer version of Townsquare"
    except wire.InvalidMessage:
        ...  # damaged or hostile: drop it
"""

from __future__ import annotations

from townsquare.wire.codec import MAX_DEPTH, PROTOCOL_VERSION, decode, encode
from townsquare.wire.errors import (
    DecodeError,
    InvalidEnvelope,
    InvalidField,
    InvalidMessage,
    InvalidUtf8,
    InvalidValue,
    MalformedCBOR,
    MessageTooLarge,
    MissingField,
    NonCanonical,
    NotUnderstood,
    TooLong,
    TrailingBytes,
    Truncated,
    UnexpectedField,
    UnknownKind,
    UnsupportedCBOR,
    UnsupportedVersion,
    UsageError,
    WireError,
    WrongType,
)
from townsquare.wire.fields import (
    KEY_BYTES,
    MAX_BLOB_ID_BYTES,
    MAX_BODY_BYTES,
    MAX_CONTENT_TYPE_CHARS,
    MAX_DISPLAY_NAME_CHARS,
    MAX_EMOJI_CHARS,
    MAX_FILE_NAME_BYTES,
    MAX_IMAGE_SIDE,
    MAX_MESSAGE_BYTES,
    MAX_PREVIEW_BYTES,
    MAX_SAFE_INTEGER,
    MAX_SENT_AT,
    MAX_TITLE_CHARS,
    MESSAGE_ID_BYTES,
    SHA256_BYTES,
    MessageId,
    new_message_id,
)
from townsquare.wire.messages import (
    Attachment,
    AttachmentRef,
    Delete,
    Edit,
    GroupTitle,
    Kind,
    Message,
    Profile,
    Reaction,
    Reply,
    Text,
)

__all__ = [
    "KEY_BYTES",
    "MAX_BLOB_ID_BYTES",
    "MAX_BODY_BYTES",
    "MAX_CONTENT_TYPE_CHARS",
    "MAX_DEPTH",
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
    "PROTOCOL_VERSION",
    "SHA256_BYTES",
    "Attachment",
    "AttachmentRef",
    "DecodeError",
    "Delete",
    "Edit",
    "GroupTitle",
    "InvalidEnvelope",
    "InvalidField",
    "InvalidMessage",
    "InvalidUtf8",
    "InvalidValue",
    "Kind",
    "MalformedCBOR",
    "Message",
    "MessageId",
    "MessageTooLarge",
    "MissingField",
    "NonCanonical",
    "NotUnderstood",
    "Profile",
    "Reaction",
    "Reply",
    "Text",
    "TooLong",
    "TrailingBytes",
    "Truncated",
    "UnexpectedField",
    "UnknownKind",
    "UnsupportedCBOR",
    "UnsupportedVersion",
    "UsageError",
    "WireError",
    "WrongType",
    "decode",
    "encode",
    "new_message_id",
]

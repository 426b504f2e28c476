"""
Message framing (RFC 9420 §6): FramedContent, PublicMessage, PrivateMessage and MLSMessage.

The structs here are the wire forms. ``FramedContentAuthData`` depends on the
content type of the FramedContent beside it, so the structs that carry it
(``PublicMessage``, ``AuthenticatedContent``) hold its two fields inline: a
signature, and a confirmation tag present only for commits.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated

from townsquare.mls.codec import (
    U8,
    U16,
    U32,
    U64,
    Fixed,
    Opaque,
    Select,
    Struct,
    When,
    encode_opaque,
)
from townsquare.mls.commit import Commit
from townsquare.mls.errors import UsageError
from townsquare.mls.group_context import GroupContext
from townsquare.mls.key_package import KeyPackage
from townsquare.mls.proposals import PROPOSAL, Proposal
from townsquare.mls.registries import ContentType, ProtocolVersion, SenderType, WireFormat
from townsquare.mls.welcome import GroupInfo, Welcome

__all__ = [
    "CONTENT",
    "MLS_MESSAGE_BODY",
    "SENDER",
    "ApplicationData",
    "AuthenticatedContent",
    "AuthenticatedContentTBM",
    "Content",
    "ExternalSenderRef",
    "FramedContent",
    "FramedContentTBS",
    "MLSMessage",
    "MLSMessageBody",
    "MemberSender",
    "NewMemberCommitSender",
    "NewMemberProposalSender",
    "PrivateContentAAD",
    "PrivateMessage",
    "PublicMessage",
    "Sender",
    "SenderData",
    "SenderDataAAD",
    "content_type_of",
    "encode_authenticated_content_tbm",
    "encode_framed_content_tbs",
    "encode_public_mls_message",
    "public_message_content_bytes",
    "sender_type_of",
]


# -- Sender (RFC 9420 §6) --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MemberSender(Struct):
    """
    RFC 9420 §6: ``case member: LeafIndex leaf_index;``
    """

    leaf_index: Annotated[int, U32]


@dataclass(frozen=True, slots=True)
class ExternalSenderRef(Struct):
    """
    RFC 9420 §6: ``case external: uint32 sender_index;`` (an index into external_senders).
    """

    sender_index: Annotated[int, U32]


@dataclass(frozen=True, slots=True)
class NewMemberProposalSender(Struct):
    """
    RFC 9420 §6: ``case new_member_proposal: struct{};``
    """


@dataclass(frozen=True, slots=True)
class NewMemberCommitSender(Struct):
    """
    RFC 9420 §6: ``case new_member_commit: struct{};``
    """


Sender = MemberSender | ExternalSenderRef | NewMemberProposalSender | NewMemberCommitSender

_SENDER_TYPES: dict[type[Struct], SenderType] = {
    MemberSender: SenderType.MEMBER,
    ExternalSenderRef: SenderType.EXTERNAL,
    NewMemberProposalSender: SenderType.NEW_MEMBER_PROPOSAL,
    NewMemberCommitSender: SenderType.NEW_MEMBER_COMMIT,
}

# RFC 9420 §6:
#   struct {
#       SenderType sender_type;
#       select (Sender.sender_type) {
#           case member:              uint32 leaf_index;
#           case external:            uint32 sender_index;
#           case new_member_commit:
#           case new_member_proposal: struct{};
#       };
#   } Sender;
SENDER = Select("Sender", U8, lambda: {t: cls for cls, t in _SENDER_TYPES.items()})


def sender_type_of(sender: Sender) -> SenderType:
    """
    :returns: the SenderType of ``sender``.
    """
    return _SENDER_TYPES[type(sender)]


# -- FramedContent (RFC 9420 §6) ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ApplicationData(Struct):
    """
    RFC 9420 §6: ``case application: opaque application_data<V>;``
    """

    data: Annotated[bytes, Opaque]


Content = ApplicationData | Proposal | Commit

CONTENT = Select(
    "ContentType",
    U8,
    lambda: {
        ContentType.APPLICATION: ApplicationData,
        ContentType.PROPOSAL: PROPOSAL,
        ContentType.COMMIT: Commit,
    },
)


def content_type_of(content: Content) -> ContentType:
    """
    :returns: the ContentType under which ``content`` is framed.
    """
    return ContentType(CONTENT.tag_of(content))


@dataclass(frozen=True, slots=True, kw_only=True)
class FramedContent(Struct):
    """
    RFC 9420 §6::

        struct {
            opaque group_id<V>;
            uint64 epoch;
            Sender sender;
            opaque authenticated_data<V>;

            ContentType content_type;
            select (FramedContent.content_type) {
                case application:
                  opaque application_data<V>;
                case proposal:
                  Proposal proposal;
                case commit:
                  Commit commit;
            };
        } FramedContent;

    ``content_type`` is not stored: it is the tag of ``content``.
    """

    group_id: Annotated[bytes, Opaque]
    epoch: Annotated[int, U64]
    sender: Annotated[Sender, SENDER]
    authenticated_data: Annotated[bytes, Opaque] = b""
    content: Annotated[Content, CONTENT]

    @property
    def content_type(self) -> ContentType:
        """
        The content type that ``content`` is framed with.
        """
        return content_type_of(self.content)


def _is_commit(fields: Mapping[str, object]) -> bool:
    content = fields["content"]
    return isinstance(content, FramedContent) and isinstance(content.content, Commit)


def _has_member_tag(fields: Mapping[str, object]) -> bool:
    content = fields["content"]
    return isinstance(content, FramedContent) and isinstance(content.sender, MemberSender)


def _has_context(fields: Mapping[str, object]) -> bool:
    content = fields["content"]
    return isinstance(content, FramedContent) and isinstance(
        content.sender, MemberSender | NewMemberCommitSender
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class FramedContentTBS(Struct):
    """
    RFC 9420 §6.1::

        struct {
            ProtocolVersion version = mls10;
            WireFormat wire_format;
            FramedContent content;
            select (FramedContentTBS.content.sender.sender_type) {
                case member:
                case new_member_commit:
                    GroupContext context;
                case external:
                case new_member_proposal:
                    struct{};
            };
        } FramedContentTBS;
    """

    version: Annotated[ProtocolVersion, U16] = ProtocolVersion.MLS10
    wire_format: Annotated[WireFormat, U16]
    content: FramedContent
    context: Annotated[GroupContext | None, When(_has_context)] = None


@dataclass(frozen=True, slots=True, kw_only=True)
class AuthenticatedContent(Struct):
    """
    RFC 9420 §6.1::

        struct {
            WireFormat wire_format;
            FramedContent content;
            FramedContentAuthData auth;
        } AuthenticatedContent;

    with ``FramedContentAuthData`` inline::

        struct {
            /* SignWithLabel(., "FramedContentTBS", FramedContentTBS) */
            opaque signature<V>;
            select (FramedContent.content_type) {
                case commit:
                    MAC confirmation_tag;
                case application:
                case proposal:
                    struct{};
            };
        } FramedContentAuthData;
    """

    wire_format: Annotated[WireFormat, U16]
    content: FramedContent
    signature: Annotated[bytes, Opaque]
    confirmation_tag: Annotated[bytes | None, Opaque, When(_is_commit)] = None


@dataclass(frozen=True, slots=True, kw_only=True)
class PublicMessage(Struct):
    """
    RFC 9420 §6.2::

        struct {
            FramedContent content;
            FramedContentAuthData auth;
            select (PublicMessage.content.sender.sender_type) {
                case member:
                    MAC membership_tag;
                case external:
                case new_member_commit:
                case new_member_proposal:
                    struct{};
            };
        } PublicMessage;

    ``FramedContentAuthData`` is inline (``signature``, ``confirmation_tag``).
    """

    content: FramedContent
    signature: Annotated[bytes, Opaque]
    confirmation_tag: Annotated[bytes | None, Opaque, When(_is_commit)] = None
    membership_tag: Annotated[bytes | None, Opaque, When(_has_member_tag)] = None


@dataclass(frozen=True, slots=True, kw_only=True)
class PrivateMessage(Struct):
    """
    RFC 9420 §6.3::

        struct {
            opaque group_id<V>;
            uint64 epoch;
            ContentType content_type;
            opaque authenticated_data<V>;
            opaque encrypted_sender_data<V>;
            opaque ciphertext<V>;
        } PrivateMessage;
    """

    group_id: Annotated[bytes, Opaque]
    epoch: Annotated[int, U64]
    content_type: Annotated[ContentType, U8]
    authenticated_data: Annotated[bytes, Opaque]
    encrypted_sender_data: Annotated[bytes, Opaque]
    ciphertext: Annotated[bytes, Opaque]


@dataclass(frozen=True, slots=True, kw_only=True)
class PrivateContentAAD(Struct):
    """
    RFC 9420 §6.3.1::

        struct {
            opaque group_id<V>;
            uint64 epoch;
            ContentType content_type;
            opaque authenticated_data<V>;
        } PrivateContentAAD;
    """

    group_id: Annotated[bytes, Opaque]
    epoch: Annotated[int, U64]
    content_type: Annotated[ContentType, U8]
    authenticated_data: Annotated[bytes, Opaque]


@dataclass(frozen=True, slots=True)
class SenderData(Struct):
    """
    RFC 9420 §6.3.2::

        struct {
            uint32 leaf_index;
            uint32 generation;
            opaque reuse_guard[4];
        } SenderData;
    """

    leaf_index: Annotated[int, U32]
    generation: Annotated[int, U32]
    reuse_guard: Annotated[bytes, Fixed(4)]


@dataclass(frozen=True, slots=True)
class SenderDataAAD(Struct):
    """
    RFC 9420 §6.3.2::

        struct {
            opaque group_id<V>;
            uint64 epoch;
            ContentType content_type;
        } SenderDataAAD;
    """

    group_id: Annotated[bytes, Opaque]
    epoch: Annotated[int, U64]
    content_type: Annotated[ContentType, U8]


# -- MLSMessage (RFC 9420 §6) ------------------------------------------------------------

MLSMessageBody = PublicMessage | PrivateMessage | Welcome | GroupInfo | KeyPackage

MLS_MESSAGE_BODY = Select(
    "WireFormat",
    U16,
    lambda: {
        WireFormat.MLS_PUBLIC_MESSAGE: PublicMessage,
        WireFormat.MLS_PRIVATE_MESSAGE: PrivateMessage,
        WireFormat.MLS_WELCOME: Welcome,
        WireFormat.MLS_GROUP_INFO: GroupInfo,
        WireFormat.MLS_KEY_PACKAGE: KeyPackage,
    },
)


@dataclass(frozen=True, slots=True)
class MLSMessage(Struct):
    """
    RFC 9420 §6::

        struct {
            ProtocolVersion version = mls10;
            WireFormat wire_format;
            select (MLSMessage.wire_format) {
                case mls_public_message:
                    PublicMessage public_message;
                case mls_private_message:
                    PrivateMessage private_message;
                case mls_welcome:
                    Welcome welcome;
                case mls_group_info:
                    GroupInfo group_info;
                case mls_key_package:
                    KeyPackage key_package;
            };
        } MLSMessage;
    """

    version: Annotated[ProtocolVersion, U16]
    body: Annotated[MLSMessageBody, MLS_MESSAGE_BODY]

    @property
    def wire_format(self) -> WireFormat:
        """
        The wire format of ``body``.
        """
        return WireFormat(MLS_MESSAGE_BODY.tag_of(self.body))


# -- Membership tag input (RFC 9420 §6.2) ------------------------------------------------


def _tbm_is_commit(fields: Mapping[str, object]) -> bool:
    tbs = fields["content_tbs"]
    return isinstance(tbs, FramedContentTBS) and isinstance(tbs.content.content, Commit)


@dataclass(frozen=True, slots=True, kw_only=True)
class AuthenticatedContentTBM(Struct):
    """
    RFC 9420 §6.2::

        struct {
          FramedContentTBS content_tbs;
          FramedContentAuthData auth;
        } AuthenticatedContentTBM;

    ``FramedContentAuthData`` is inline (``signature``, ``confirmation_tag``).
    """

    content_tbs: FramedContentTBS
    signature: Annotated[bytes, Opaque]
    confirmation_tag: Annotated[bytes | None, Opaque, When(_tbm_is_commit)] = None


# -- Encodings joined from a content's encoding (RFC 9420 §6.1, §6.2) --------------------
#
# A commit's FramedContent (its UpdatePath is some 2 kB at 10,000 members) is
# part of four encodings: the FramedContentTBS its signature covers, the
# AuthenticatedContentTBM its membership tag covers, the MLSMessage that
# carries it and the ConfirmedTranscriptHashInput of RFC 9420 §8.2 (see
# ``transcript.py``). Encoding the content for each cost some 0.1 ms per
# commit created or processed, so these functions join one encoding of the
# content (made once, or sliced from the bytes a received message was decoded
# from) with the encodings of the other fields. The structs stay the
# definition: each function takes the struct value and returns exactly its
# ``encode()``, raising the same ``UsageError`` for a field that its ``When``
# condition forbids or requires, and the unit tests check the bytes against
# the structs'.

_TWO_U16 = struct.Struct(">HH")


def _when(value: bytes | None, name: str, *, present: bool) -> bytes:
    # A ``When`` field of ``opaque<V>``, as the generated encoders write it.
    if not present:
        if value is not None:
            raise UsageError(f"{name} must be None here")
        return b""
    if value is None:
        raise UsageError(f"{name} is required here")
    return encode_opaque(value)


def encode_framed_content_tbs(tbs: FramedContentTBS, content_bytes: bytes) -> bytes:
    """
    Encode a FramedContentTBS (RFC 9420 §6.1) around its content's encoding.

    :param tbs: the struct.
    :param content_bytes: ``tbs.content.encode()``.
    :returns: ``tbs.encode()``.
    :raises UsageError: if ``context`` is missing where required or present where not.
    """
    head = _TWO_U16.pack(tbs.version, tbs.wire_format)
    if _has_context({"content": tbs.content}):
        if tbs.context is None:
            raise UsageError("FramedContentTBS.context is required here")
        return head + content_bytes + tbs.context.encode()
    if tbs.context is not None:
        raise UsageError("FramedContentTBS.context must be None here")
    return head + content_bytes


def encode_authenticated_content_tbm(tbm: AuthenticatedContentTBM, content_bytes: bytes) -> bytes:
    """
    Encode an AuthenticatedContentTBM (RFC 9420 §6.2) around its content's encoding.

    :param tbm: the struct.
    :param content_bytes: ``tbm.content_tbs.content.encode()``.
    :returns: ``tbm.encode()``.
    :raises UsageError: if a field is missing where required or present where not.
    """
    return (
        encode_framed_content_tbs(tbm.content_tbs, content_bytes)
        + encode_opaque(tbm.signature)
        + _when(
            tbm.confirmation_tag,
            "AuthenticatedContentTBM.confirmation_tag",
            present=isinstance(tbm.content_tbs.content.content, Commit),
        )
    )


def _public_message_tail(message: PublicMessage) -> bytes:
    # What follows the content in a PublicMessage (RFC 9420 §6.2).
    return (
        encode_opaque(message.signature)
        + _when(
            message.confirmation_tag,
            "PublicMessage.confirmation_tag",
            present=isinstance(message.content.content, Commit),
        )
        + _when(
            message.membership_tag,
            "PublicMessage.membership_tag",
            present=isinstance(message.content.sender, MemberSender),
        )
    )


def encode_public_mls_message(message: PublicMessage, content_bytes: bytes) -> bytes:
    """
    Encode an MLSMessage (RFC 9420 §6) carrying a PublicMessage, around its content's encoding.

    :param message: the PublicMessage.
    :param content_bytes: ``message.content.encode()``.
    :returns: ``MLSMessage(ProtocolVersion.MLS10, message).encode()``.
    :raises UsageError: if a tag is missing where required or present where not.
    """
    return (
        _TWO_U16.pack(ProtocolVersion.MLS10, WireFormat.MLS_PUBLIC_MESSAGE)
        + content_bytes
        + _public_message_tail(message)
    )


def public_message_content_bytes(message_bytes: bytes, message: PublicMessage) -> bytes:
    """
    Find a received PublicMessage's content within the MLSMessage bytes it was decoded from.

    Decoding is canonical (``encode(decode(b)) == b``, see ``codec.py``), so
    the content's encoding is the part of ``message_bytes`` between the
    MLSMessage header and the fields after the content: the bytes the sender
    signed, found without encoding them again.

    :param message_bytes: an MLSMessage that :meth:`MLSMessage.decode` decoded into ``message``.
    :param message: its PublicMessage.
    :returns: ``message.content.encode()``.
    :raises UsageError: if ``message_bytes`` cannot be the encoding of ``message``.
    """
    tail = _public_message_tail(message)
    end = len(message_bytes) - len(tail)
    if end < _TWO_U16.size or not message_bytes.endswith(tail):
        raise UsageError("these bytes are not the MLSMessage of this PublicMessage")
    return message_bytes[_TWO_U16.size : end]

"""
Message framing (RFC 9420 §6): FramedContent, PublicMessage, PrivateMessage and MLSMessage.

The structs here are the wire forms. ``FramedContentAuthData`` depends on the
content type of the FramedContent beside it, so the structs that carry it
(``PublicMessage``, ``AuthenticatedContent``) hold its two fields inline: a
signature, and a confirmation tag present only for commits.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated

from townsquare.mls.codec import U8, U16, U32, U64, Fixed, Opaque, Select, Struct, When
from townsquare.mls.commit import Commit
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

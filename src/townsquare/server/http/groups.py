"""
Groups and their logs: create a group, post and fetch messages, acknowledge, read GroupInfo.

Every route is signed by a device (``Townsquare-*`` headers); all but group
creation are for the group's member devices only. The relay checks MLS with
its public view of the group and keeps each group's log in one order; see
:mod:`townsquare.server.delivery` and ``docs/protocol.md``.
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Path, Query, Response
from pydantic import BaseModel, ConfigDict, Field

from townsquare.server.auth import VerifiedRequest
from townsquare.server.config import DEFAULT_FETCH_LIMIT, MAX_FETCH_LIMIT
from townsquare.server.delivery import DeliveryService, Post
from townsquare.server.errors import (
    BodyTooLarge,
    CommitConflict,
    CursorAhead,
    ExternalCommitRefused,
    FieldTooLarge,
    GroupExists,
    GroupMismatch,
    InvalidCommit,
    InvalidGroupInfo,
    InvalidNewGroup,
    InvalidProposal,
    InvalidRequest,
    InviteExists,
    InviteExpired,
    InviteNotFound,
    InviteSignatureInvalid,
    InviteUsedUp,
    LogPruned,
    MalformedMLS,
    MessageIdReused,
    NotAMember,
    RateLimited,
    SenderMismatch,
    StaleEpoch,
    Unavailable,
    UnexpectedMessage,
    UnknownGroup,
    UnknownMemberDevice,
    WelcomeMismatch,
)
from townsquare.server.http.fields import (
    GROUP_ID_PATTERN,
    KEY_PATTERN,
    BytesText,
    ClientMessageIdText,
    GroupIdText,
    KeyText,
    MLSMessageText,
    Seq,
    SignatureText,
    UnixTime,
    group_id_from_path,
    key_from_path,
)
from townsquare.server.http.problems import documented_errors
from townsquare.server.http.signing import SIGNED_ERRORS, SIGNED_OPENAPI, Signatures
from townsquare.server.rate_limits import DeviceRateLimits
from townsquare.server.storage import Appended, Device, GroupRecord, InviteRecord, LogEntry

__all__ = [
    "CreateGroupBody",
    "CursorBody",
    "EntryBody",
    "GroupBody",
    "GroupInfoBody",
    "InviteBody",
    "InviteSettingsBody",
    "InvitesResetBody",
    "NewInviteBody",
    "PageBody",
    "PostBody",
    "PostedBody",
    "SealedGroupInfoBody",
    "router",
]

Kind = Literal["commit", "proposal", "application"]

GroupIdPath = Annotated[
    str,
    Path(pattern=GROUP_ID_PATTERN, description="The MLS group id, unpadded base64url."),
]

InviteKeyPath = Annotated[
    str,
    Path(pattern=KEY_PATTERN, description="The invite's Ed25519 public key, unpadded base64url."),
]


class CreateGroupBody(BaseModel):
    """
    A new group: its epoch-0 GroupInfo, whose tree holds one leaf, the creating device's.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: MLSMessage(GroupInfo) of epoch 0 (RFC 9420 §12.4.3).
    group_info: MLSMessageText
    #: The ratchet tree, when the GroupInfo does not carry the ratchet_tree extension.
    ratchet_tree: MLSMessageText | None = None


class GroupBody(BaseModel):
    """
    A group as the relay keeps it.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    group_id: GroupIdText
    epoch: Seq
    #: The sequence number of the last log entry (0 while the log is empty).
    last_seq: Seq
    created_at: UnixTime

    @classmethod
    def of(cls, group: GroupRecord) -> GroupBody:
        """
        :returns: the JSON form of ``group``.
        """
        return cls(
            group_id=group.group_id,
            epoch=group.epoch,
            last_seq=group.last_seq,
            created_at=group.created_at,
        )


class GroupInfoBody(BaseModel):
    """
    A group's current GroupInfo and ratchet tree.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    group_id: GroupIdText
    epoch: Seq
    #: MLSMessage(GroupInfo) of the current epoch, as its committer uploaded it.
    group_info: BytesText
    #: The current ratchet tree (``optional<Node> ratchet_tree<V>``), as the relay computed it.
    ratchet_tree: BytesText


class PostBody(BaseModel):
    """
    A message to append to the group's log.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    client_message_id: ClientMessageIdText
    #: MLSMessage: a PublicMessage (proposal or commit) or a PrivateMessage (application).
    message: MLSMessageText
    #: With a commit that adds members: their MLSMessage(Welcome).
    welcome: MLSMessageText | None = None
    #: With a commit: MLSMessage(GroupInfo) of the epoch it creates.
    group_info: MLSMessageText | None = None
    #: With an external commit joining by invite: the invite's key.
    invite_key: KeyText | None = None
    #: And the invite key's signature over ``message`` (docs/protocol.md, Invites).
    invite_signature: SignatureText | None = None


class PostedBody(BaseModel):
    """
    Where the message is in the log.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    seq: Seq
    #: The epoch the message was sent in.
    epoch: Seq
    kind: Kind
    #: True when the device had sent this client message id before: nothing new was stored.
    duplicate: bool

    @classmethod
    def of(cls, appended: Appended) -> PostedBody:
        """
        :returns: the JSON form of ``appended``.
        """
        entry = appended.entry
        return cls(
            seq=entry.seq, epoch=entry.epoch, kind=entry.kind.value, duplicate=appended.duplicate
        )


class EntryBody(BaseModel):
    """
    One entry of a group's log.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    seq: Seq
    epoch: Seq
    kind: Kind
    #: The MLSMessage as it was posted.
    message: BytesText
    received_at: UnixTime

    @classmethod
    def of(cls, entry: LogEntry) -> EntryBody:
        """
        :returns: the JSON form of ``entry``.
        """
        return cls(
            seq=entry.seq,
            epoch=entry.epoch,
            kind=entry.kind.value,
            message=entry.message,
            received_at=entry.received_at,
        )


class PageBody(BaseModel):
    """
    A run of a group's log.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    group_id: GroupIdText
    #: The group's current epoch.
    epoch: Seq
    #: The sequence number of the group's last entry: fetch again while the last
    #: message's ``seq`` is below it.
    last_seq: Seq
    messages: tuple[EntryBody, ...]


class CursorBody(BaseModel):
    """
    A device's cursor in a group's log: the last sequence number it has processed.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    seq: Seq


class NewInviteBody(BaseModel):
    """
    A new invite: its public key, the sealed GroupInfo, an expiry and a use count.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: The Ed25519 public key the link's secret derives; also the invite's id.
    invite_key: KeyText
    #: nonce || ChaCha20-Poly1305(GroupInfo and tree) under the secret's GroupInfo key.
    sealed_group_info: MLSMessageText
    expires_at: UnixTime
    max_uses: Annotated[int, Field(strict=True, ge=1, le=1_000_000)]


class SealedGroupInfoBody(BaseModel):
    """
    An invite's refreshed sealed GroupInfo.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    sealed_group_info: MLSMessageText


class InviteBody(BaseModel):
    """
    An invite as the relay keeps it.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    group_id: GroupIdText
    invite_key: KeyText
    sealed_group_info: BytesText
    expires_at: UnixTime
    max_uses: Seq
    uses: Seq
    created_at: UnixTime
    updated_at: UnixTime
    #: For a newcomer reading the invite: the group's current epoch and ratchet tree
    #: (the sealed GroupInfo leaves the tree out: it is public to the relay anyway,
    #: and a township's tree would not fit in a request).
    epoch: Seq | None = None
    ratchet_tree: BytesText | None = None

    @classmethod
    def of(
        cls, invite: InviteRecord, *, epoch: int | None = None, ratchet_tree: bytes | None = None
    ) -> InviteBody:
        """
        :returns: the JSON form of ``invite`` (with the group's tree, for a newcomer).
        """
        return cls(
            epoch=epoch,
            ratchet_tree=ratchet_tree,
            group_id=invite.group_id,
            invite_key=invite.invite_key,
            sealed_group_info=invite.sealed_group_info,
            expires_at=invite.expires_at,
            max_uses=invite.max_uses,
            uses=invite.uses,
            created_at=invite.created_at,
            updated_at=invite.updated_at,
        )


class InvitesResetBody(BaseModel):
    """
    How many invites a reset revoked.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    revoked: Seq


class InviteSettingsBody(BaseModel):
    """
    A group's invite settings.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: Whether a commit that removes a member revokes every invite (default true).
    reset_invites_on_remove: bool


_MESSAGE_ERRORS = (
    InvalidRequest,
    MalformedMLS,
    UnexpectedMessage,
    GroupMismatch,
    InvalidCommit,
    InvalidProposal,
    InvalidGroupInfo,
    WelcomeMismatch,
    SIGNED_ERRORS,
    NotAMember,
    SenderMismatch,
    ExternalCommitRefused,
    InviteExpired,
    InviteUsedUp,
    InviteSignatureInvalid,
    UnknownGroup,
    InviteNotFound,
    CommitConflict,
    StaleEpoch,
    MessageIdReused,
    BodyTooLarge,
    FieldTooLarge,
    UnknownMemberDevice,
    RateLimited,
    Unavailable,
)


def router(
    delivery: DeliveryService, signatures: Signatures, *, rate_limits: DeviceRateLimits
) -> APIRouter:
    """
    Build the group routes.

    :param delivery: the delivery service.
    :param signatures: the request-signature dependencies.
    :param rate_limits: the per-device post quota, charged in the append's transaction.
    :returns: the router.
    """
    routes = APIRouter(tags=["groups"])

    @routes.post(
        "/v1/groups",
        status_code=201,
        response_model=GroupBody,
        summary="Create a group",
        description=(
            "From its epoch-0 GroupInfo (with the ratchet tree inside or beside it). The tree's"
            " only leaf must be the signing device's: its signature key is the device key and its"
            " credential a BasicCredential naming that key. Cipher suite 1 only."
        ),
        responses=documented_errors(
            InvalidRequest,
            MalformedMLS,
            UnexpectedMessage,
            InvalidNewGroup,
            InvalidGroupInfo,
            SIGNED_ERRORS,
            GroupExists,
            BodyTooLarge,
            FieldTooLarge,
            UnknownMemberDevice,
            Unavailable,
        ),
        openapi_extra=SIGNED_OPENAPI,
        operation_id="create_group",
    )
    async def create_group(
        body: CreateGroupBody, device: Device = Depends(signatures.device)
    ) -> GroupBody:
        group = await delivery.create_group(
            device, group_info=body.group_info, ratchet_tree=body.ratchet_tree
        )
        return GroupBody.of(group)

    @routes.post(
        "/v1/groups/{group_id}/messages",
        status_code=201,
        response_model=PostedBody,
        summary="Append a message to a group's log",
        description=(
            "An application message (PrivateMessage) for the current epoch; a proposal or a"
            " commit (PublicMessage), which the relay checks. A commit carries the new epoch's"
            " GroupInfo and, if it adds members, their Welcome, and is stored with them"
            " atomically; the first commit for an epoch wins. A retry with the same"
            " `client_message_id` answers 200 with the original entry. Each device may post"
            " a limited number of messages per window (429 `rate-limited`)."
        ),
        responses={
            200: {"description": "A retry: the entry stored before.", "model": PostedBody},
            **documented_errors(*_MESSAGE_ERRORS),
        },
        openapi_extra=SIGNED_OPENAPI,
        operation_id="post_message",
    )
    async def post_message(
        group_id: GroupIdPath,
        body: PostBody,
        response: Response,
        signed: VerifiedRequest = Depends(signatures.device_deferring_nonce),
    ) -> PostedBody:
        # The nonce and the post quota go to the store with the message: an application
        # message costs one transaction, in which a retry is answered uncharged and a
        # new entry is checked and counted (server/rate_limits.py). Delivery records
        # the nonce of a message it refuses; a path refused here must record it too.
        try:
            group = group_id_from_path(group_id)
        except InvalidRequest:
            await signatures.use_nonce(signed.nonce)
            raise
        appended = await delivery.post(
            signed.device,
            group,
            Post(
                client_message_id=body.client_message_id,
                message=body.message,
                welcome=body.welcome,
                group_info=body.group_info,
                invite_key=body.invite_key,
                invite_signature=body.invite_signature,
            ),
            nonce=signed.nonce,
            quota=rate_limits.post_charge(signed.device),
        )
        if appended.duplicate:
            response.status_code = 200
        return PostedBody.of(appended)

    @routes.get(
        "/v1/groups/{group_id}/messages",
        response_model=PageBody,
        summary="Fetch a group's log after a sequence number",
        description=(
            "For member devices; entries from before the device joined are not served."
            f" At most `limit` entries ({DEFAULT_FETCH_LIMIT} by default, {MAX_FETCH_LIMIT}"
            " at most), oldest first. If retention has deleted entries after `after`, the"
            " answer is 410 `log-pruned` with `first_seq`, and the device resyncs."
        ),
        responses=documented_errors(
            InvalidRequest,
            SIGNED_ERRORS,
            NotAMember,
            UnknownGroup,
            LogPruned,
            BodyTooLarge,
            Unavailable,
        ),
        openapi_extra=SIGNED_OPENAPI,
        operation_id="fetch_messages",
    )
    async def fetch_messages(
        group_id: GroupIdPath,
        after: Annotated[int, Query(ge=0, le=(1 << 53) - 1)] = 0,
        limit: Annotated[int, Query(ge=1, le=MAX_FETCH_LIMIT)] = DEFAULT_FETCH_LIMIT,
        device: Device = Depends(signatures.device),
    ) -> PageBody:
        page = await delivery.fetch(device, group_id_from_path(group_id), after=after, limit=limit)
        return PageBody(
            group_id=page.group_id,
            epoch=page.epoch,
            last_seq=page.last_seq,
            messages=tuple(EntryBody.of(entry) for entry in page.entries),
        )

    @routes.post(
        "/v1/groups/{group_id}/cursor",
        response_model=CursorBody,
        summary="Acknowledge the log up to a sequence number",
        description=(
            "The cursor only moves forward; the answer is the cursor after the call. Pending"
            " Welcomes of commits up to it are dropped."
        ),
        responses=documented_errors(
            InvalidRequest,
            SIGNED_ERRORS,
            NotAMember,
            UnknownGroup,
            CursorAhead,
            BodyTooLarge,
            Unavailable,
        ),
        openapi_extra=SIGNED_OPENAPI,
        operation_id="ack_cursor",
    )
    async def ack_cursor(
        group_id: GroupIdPath,
        body: CursorBody,
        device: Device = Depends(signatures.device),
    ) -> CursorBody:
        cursor = await delivery.ack(device, group_id_from_path(group_id), seq=body.seq)
        return CursorBody(seq=cursor)

    @routes.get(
        "/v1/groups/{group_id}/group-info",
        response_model=GroupInfoBody,
        summary="Read a group's current GroupInfo and ratchet tree",
        description="For member devices (newcomers read an invite's sealed GroupInfo).",
        responses=documented_errors(
            InvalidRequest, SIGNED_ERRORS, NotAMember, UnknownGroup, BodyTooLarge, Unavailable
        ),
        openapi_extra=SIGNED_OPENAPI,
        operation_id="get_group_info",
    )
    async def get_group_info(
        group_id: GroupIdPath, device: Device = Depends(signatures.device)
    ) -> GroupInfoBody:
        group = await delivery.group_info(device, group_id_from_path(group_id))
        return GroupInfoBody(
            group_id=group.group_id,
            epoch=group.epoch,
            group_info=group.group_info,
            ratchet_tree=group.ratchet_tree,
        )

    _member_errors = (
        InvalidRequest,
        SIGNED_ERRORS,
        NotAMember,
        UnknownGroup,
        BodyTooLarge,
        FieldTooLarge,
        Unavailable,
    )

    @routes.post(
        "/v1/groups/{group_id}/invites",
        status_code=201,
        response_model=InviteBody,
        summary="Create an invite",
        description=(
            "For member devices: the invite's public key (derived from the link's secret, which"
            " the relay never sees), the GroupInfo sealed under the secret's key, an expiry and"
            " a use count. An external commit signed by the invite key joins the group."
        ),
        responses=documented_errors(*_member_errors, InviteExists),
        openapi_extra=SIGNED_OPENAPI,
        operation_id="create_invite",
    )
    async def create_invite(
        group_id: GroupIdPath, body: NewInviteBody, device: Device = Depends(signatures.device)
    ) -> InviteBody:
        invite = await delivery.create_invite(
            device,
            group_id_from_path(group_id),
            invite_key=body.invite_key,
            sealed_group_info=body.sealed_group_info,
            expires_at=body.expires_at,
            max_uses=body.max_uses,
        )
        return InviteBody.of(invite)

    @routes.put(
        "/v1/groups/{group_id}/invites/{invite_key}",
        response_model=InviteBody,
        summary="Refresh an invite's sealed GroupInfo",
        description="For member devices, after each commit: newcomers join the current epoch.",
        responses=documented_errors(*_member_errors, InviteNotFound),
        openapi_extra=SIGNED_OPENAPI,
        operation_id="update_invite",
    )
    async def update_invite(
        group_id: GroupIdPath,
        invite_key: InviteKeyPath,
        body: SealedGroupInfoBody,
        device: Device = Depends(signatures.device),
    ) -> InviteBody:
        invite = await delivery.update_invite(
            device,
            group_id_from_path(group_id),
            key_from_path(invite_key),
            sealed_group_info=body.sealed_group_info,
        )
        return InviteBody.of(invite)

    @routes.get(
        "/v1/groups/{group_id}/invites/{invite_key}",
        response_model=InviteBody,
        summary="Read an invite's sealed GroupInfo",
        description=(
            "For any registered device: a newcomer registers a device first, then reads the"
            " invite its link names and opens the GroupInfo with the link's secret."
        ),
        responses=documented_errors(
            InvalidRequest,
            SIGNED_ERRORS,
            InviteExpired,
            InviteUsedUp,
            InviteNotFound,
            BodyTooLarge,
            Unavailable,
        ),
        openapi_extra=SIGNED_OPENAPI,
        operation_id="get_invite",
    )
    async def get_invite(
        group_id: GroupIdPath,
        invite_key: InviteKeyPath,
        device: Device = Depends(signatures.device),
    ) -> InviteBody:
        del device
        group = group_id_from_path(group_id)
        invite = await delivery.get_invite(group, key_from_path(invite_key))
        epoch, tree = await delivery.invite_tree(group)
        return InviteBody.of(invite, epoch=epoch, ratchet_tree=tree)

    @routes.delete(
        "/v1/groups/{group_id}/invites",
        response_model=InvitesResetBody,
        summary="Reset (revoke) every invite of a group",
        description="For member devices (admins only, once the admin policy lands).",
        responses=documented_errors(*_member_errors),
        openapi_extra=SIGNED_OPENAPI,
        operation_id="reset_invites",
    )
    async def reset_invites(
        group_id: GroupIdPath, device: Device = Depends(signatures.device)
    ) -> InvitesResetBody:
        revoked = await delivery.reset_invites(device, group_id_from_path(group_id))
        return InvitesResetBody(revoked=revoked)

    @routes.put(
        "/v1/groups/{group_id}/invite-settings",
        response_model=InviteSettingsBody,
        summary="Set whether removing a member revokes the invites",
        description="For member devices; on by default.",
        responses=documented_errors(*_member_errors),
        openapi_extra=SIGNED_OPENAPI,
        operation_id="set_invite_settings",
    )
    async def set_invite_settings(
        group_id: GroupIdPath,
        body: InviteSettingsBody,
        device: Device = Depends(signatures.device),
    ) -> InviteSettingsBody:
        await delivery.set_invite_settings(
            device,
            group_id_from_path(group_id),
            reset_invites_on_remove=body.reset_invites_on_remove,
        )
        return body

    return routes

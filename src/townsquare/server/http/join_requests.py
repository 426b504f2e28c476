"""
Join requests: a newcomer asks to join a group that requires an admin's approval.

The newcomer holds an invite link: it signs its KeyPackage and a note sealed
under the link's key (its name; the relay cannot read it) with the invite key.
An admin's device lists the requests, adds the device by an ordinary commit
with its KeyPackage, and deletes the request (or deletes it to deny). The
newcomer reads its own request to learn that it no longer waits. See
``docs/protocol.md`` (Approval) and :mod:`townsquare.server.delivery`.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path
from pydantic import BaseModel, ConfigDict

from townsquare.server.delivery import DeliveryService
from townsquare.server.errors import (
    ApprovalNotRequired,
    BodyTooLarge,
    FieldTooLarge,
    InvalidKeyPackage,
    InvalidRequest,
    InviteExpired,
    InviteNotFound,
    InviteSignatureInvalid,
    InviteUsedUp,
    JoinRequestNotFound,
    JoinRequestsFull,
    KeyPackageNotOwned,
    NotAMember,
    NotAnAdmin,
    Unavailable,
    UnknownGroup,
)
from townsquare.server.http.fields import (
    GROUP_ID_PATTERN,
    KEY_PATTERN,
    BytesText,
    GroupIdText,
    KeyText,
    MLSMessageText,
    SignatureText,
    UnixTime,
    group_id_from_path,
    key_from_path,
)
from townsquare.server.http.problems import documented_errors
from townsquare.server.http.signing import SIGNED_ERRORS, SIGNED_OPENAPI, Signatures
from townsquare.server.storage import Device, JoinRequest

__all__ = ["JoinRequestBody", "JoinRequestsBody", "NewJoinRequestBody", "router"]

GroupIdPath = Annotated[
    str,
    Path(pattern=GROUP_ID_PATTERN, description="The MLS group id, unpadded base64url."),
]
DeviceKeyPath = Annotated[
    str,
    Path(pattern=KEY_PATTERN, description="The asking device's key, unpadded base64url."),
]


class NewJoinRequestBody(BaseModel):
    """
    A newcomer's request, signed by the invite key its link derives.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    invite_key: KeyText
    #: The asking device's KeyPackage (encoded MLSMessage), which an admin adds.
    key_package: MLSMessageText
    #: nonce || ChaCha20-Poly1305(note) under the link's GroupInfo key; opaque to the relay.
    sealed_note: BytesText
    #: Ed25519 by the invite key over the join request (docs/protocol.md).
    invite_signature: SignatureText


class JoinRequestBody(BaseModel):
    """
    A join request as the relay keeps it.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    group_id: GroupIdText
    device_key: KeyText
    invite_key: KeyText
    key_package: BytesText
    sealed_note: BytesText
    created_at: UnixTime

    @classmethod
    def of(cls, request: JoinRequest) -> JoinRequestBody:
        """
        :returns: the JSON form of ``request``.
        """
        return cls(
            group_id=request.group_id,
            device_key=request.device_key,
            invite_key=request.invite_key,
            key_package=request.key_package,
            sealed_note=request.sealed_note,
            created_at=request.created_at,
        )


class JoinRequestsBody(BaseModel):
    """
    The join requests waiting for a group's admins, oldest first.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    requests: list[JoinRequestBody]


class JoinRequestDeletedBody(BaseModel):
    """
    Whether a join request was there to delete.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    deleted: bool


# What the routes of admins (and of the asking device, for its own request) may answer.
_ADMIN_ERRORS = (
    InvalidRequest,
    SIGNED_ERRORS,
    NotAMember,
    NotAnAdmin,
    UnknownGroup,
    BodyTooLarge,
    Unavailable,
)


def router(delivery: DeliveryService, signatures: Signatures) -> APIRouter:
    """
    Build the join-request routes.
    """
    routes = APIRouter(tags=["groups"])

    @routes.post(
        "/v1/groups/{group_id}/join-requests",
        status_code=201,
        response_model=JoinRequestBody,
        summary="Ask to join a group that requires approval",
        description=(
            "For any registered device holding an invite link: its KeyPackage and a sealed note,"
            " signed by the invite key. A second request from the device replaces the first."
        ),
        responses=documented_errors(
            InvalidRequest,
            InvalidKeyPackage,
            KeyPackageNotOwned,
            SIGNED_ERRORS,
            InviteExpired,
            InviteUsedUp,
            InviteSignatureInvalid,
            InviteNotFound,
            UnknownGroup,
            ApprovalNotRequired,
            JoinRequestsFull,
            BodyTooLarge,
            FieldTooLarge,
            Unavailable,
        ),
        openapi_extra=SIGNED_OPENAPI,
        operation_id="request_to_join",
    )
    async def request_to_join(
        group_id: GroupIdPath,
        body: NewJoinRequestBody,
        device: Device = Depends(signatures.device),
    ) -> JoinRequestBody:
        request = await delivery.request_to_join(
            device,
            group_id_from_path(group_id),
            invite_key=body.invite_key,
            key_package=body.key_package,
            sealed_note=body.sealed_note,
            invite_signature=body.invite_signature,
        )
        return JoinRequestBody.of(request)

    @routes.get(
        "/v1/groups/{group_id}/join-requests",
        response_model=JoinRequestsBody,
        summary="List the join requests waiting for a group's admins",
        description="For admin devices (any member, in a group without admins).",
        responses=documented_errors(*_ADMIN_ERRORS),
        openapi_extra=SIGNED_OPENAPI,
        operation_id="list_join_requests",
    )
    async def list_join_requests(
        group_id: GroupIdPath, device: Device = Depends(signatures.device)
    ) -> JoinRequestsBody:
        requests = await delivery.join_requests(device, group_id_from_path(group_id))
        return JoinRequestsBody(requests=[JoinRequestBody.of(r) for r in requests])

    @routes.get(
        "/v1/groups/{group_id}/join-requests/{device_key}",
        response_model=JoinRequestBody,
        summary="Read one waiting join request (the asking device, to learn whether it waits)",
        description=(
            "For the asking device itself and for admin devices. 404"
            " `join-request-not-found` once no request waits: never made, withdrawn, denied,"
            " or answered by adding the device, whose Welcome is then waiting already"
            " (`GET /v1/welcomes`)."
        ),
        responses=documented_errors(*_ADMIN_ERRORS, JoinRequestNotFound),
        openapi_extra=SIGNED_OPENAPI,
        operation_id="get_join_request",
    )
    async def get_join_request(
        group_id: GroupIdPath,
        device_key: DeviceKeyPath,
        device: Device = Depends(signatures.device),
    ) -> JoinRequestBody:
        request = await delivery.join_request(
            device, group_id_from_path(group_id), key_from_path(device_key)
        )
        return JoinRequestBody.of(request)

    @routes.delete(
        "/v1/groups/{group_id}/join-requests/{device_key}",
        response_model=JoinRequestDeletedBody,
        summary="Delete a join request (deny it, or after adding the device; or withdraw it)",
        description="For admin devices, and for the asking device itself.",
        responses=documented_errors(*_ADMIN_ERRORS),
        openapi_extra=SIGNED_OPENAPI,
        operation_id="delete_join_request",
    )
    async def delete_join_request(
        group_id: GroupIdPath,
        device_key: DeviceKeyPath,
        device: Device = Depends(signatures.device),
    ) -> JoinRequestDeletedBody:
        deleted = await delivery.delete_join_request(
            device, group_id_from_path(group_id), key_from_path(device_key)
        )
        return JoinRequestDeletedBody(deleted=deleted)

    return routes

"""
``GET /v1/welcomes``: the Welcomes waiting for the signing device.

A commit that adds a device stores its Welcome for that device; the device
fetches it here (the WebSocket tells it when one arrives), joins, and
acknowledges a cursor in the group at or past the commit, which drops it.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, ConfigDict

from townsquare.server.config import MAX_WELCOMES_PER_FETCH
from townsquare.server.delivery import DeliveryService
from townsquare.server.errors import BodyTooLarge, InvalidRequest, Unavailable
from townsquare.server.http.fields import BytesText, GroupIdText, Seq, UnixTime
from townsquare.server.http.problems import documented_errors
from townsquare.server.http.signing import SIGNED_ERRORS, SIGNED_OPENAPI, Signatures
from townsquare.server.storage import Device, PendingWelcome

__all__ = ["WelcomeBody", "WelcomeList", "router"]


class WelcomeBody(BaseModel):
    """
    A Welcome into a group, with the ratchet tree of the epoch it joins.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    group_id: GroupIdText
    #: The sequence number of the commit that added the device: fetch the log after it.
    commit_seq: Seq
    #: The epoch the Welcome joins.
    epoch: Seq
    #: MLSMessage(Welcome) (RFC 9420 §12.4.3.1).
    welcome: BytesText
    #: That epoch's ratchet tree, for a Welcome whose GroupInfo does not carry it.
    ratchet_tree: BytesText
    created_at: UnixTime

    @classmethod
    def of(cls, welcome: PendingWelcome) -> WelcomeBody:
        """
        :returns: the JSON form of ``welcome``.
        """
        return cls(
            group_id=welcome.group_id,
            commit_seq=welcome.commit_seq,
            epoch=welcome.epoch,
            welcome=welcome.welcome,
            ratchet_tree=welcome.ratchet_tree,
            created_at=welcome.created_at,
        )


class WelcomeList(BaseModel):
    """
    The Welcomes waiting for a device, oldest first.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    welcomes: tuple[WelcomeBody, ...]


def router(delivery: DeliveryService, signatures: Signatures) -> APIRouter:
    """
    Build the Welcome route.

    :param delivery: the delivery service.
    :param signatures: the request-signature dependencies.
    :returns: the router.
    """
    routes = APIRouter(tags=["groups"])

    @routes.get(
        "/v1/welcomes",
        response_model=WelcomeList,
        summary="Fetch the Welcomes waiting for the signing device",
        description=(
            f"Oldest first, at most `limit` ({MAX_WELCOMES_PER_FETCH} by default and at most)."
            " A Welcome stays until the device acknowledges a cursor at or past its commit."
        ),
        responses=documented_errors(InvalidRequest, SIGNED_ERRORS, BodyTooLarge, Unavailable),
        openapi_extra=SIGNED_OPENAPI,
        operation_id="list_welcomes",
    )
    async def list_welcomes(
        limit: Annotated[int, Query(ge=1, le=MAX_WELCOMES_PER_FETCH)] = MAX_WELCOMES_PER_FETCH,
        device: Device = Depends(signatures.device),
    ) -> WelcomeList:
        welcomes = await delivery.welcomes(device, limit=limit)
        return WelcomeList(welcomes=tuple(WelcomeBody.of(w) for w in welcomes))

    return routes

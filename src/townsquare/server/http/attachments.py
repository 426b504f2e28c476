"""
Attachments: encrypted blobs that devices upload and download by their SHA-256.

A device encrypts a file with a fresh key (``townsquare.client.attachments``)
and uploads the ciphertext here; the key and the hash travel inside an MLS
message (``wire.AttachmentRef``), so the relay holds bytes it cannot read,
addressed by their SHA-256, which it computes itself. The same blob uploaded
twice is stored once. A blob is kept for the retention time from its last
upload, then answers 410 ``attachment-expired`` for as long again, then 404.

Both routes are signed by a registered device. An upload's body is bounded by
``max_attachment_bytes`` (checked by the body-limit middleware before the body
is read, 413 ``attachment-too-large``) and counted against the device's byte
quota (429 ``rate-limited``); a refused upload stores nothing. A download is
streamed from the store in pieces.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import StreamingResponse

from townsquare import auth
from townsquare.server.clock import Clock
from townsquare.server.config import (
    ATTACHMENT_HASH_BYTES,
    ATTACHMENT_READ_CHUNK_BYTES,
    Limits,
)
from townsquare.server.errors import (
    AttachmentExpired,
    AttachmentNotFound,
    AttachmentTooLarge,
    BodyTooLarge,
    InvalidRequest,
    RateLimited,
    Unavailable,
)
from townsquare.server.http.body_limit import BodyLimit
from townsquare.server.http.fields import BytesText, UnixTime
from townsquare.server.http.problems import documented_errors
from townsquare.server.http.signing import SIGNED_ERRORS, SIGNED_OPENAPI, Signatures
from townsquare.server.rate_limits import DeviceRateLimits
from townsquare.server.storage import Device, Storage
from townsquare.server.storage.interface import AttachmentRecord, NewAttachment

__all__ = [
    "ATTACHMENTS_PATH",
    "BLOB_MEDIA_TYPE",
    "AttachmentBody",
    "BlobResponse",
    "body_limit",
    "router",
]

#: Where attachments are uploaded; a blob is at ``ATTACHMENTS_PATH/{hash}``.
ATTACHMENTS_PATH = "/v1/attachments"
#: The media type of a blob, both ways.
BLOB_MEDIA_TYPE = "application/octet-stream"

_HASH_PATTERN = auth.exact_b64u_pattern(ATTACHMENT_HASH_BYTES)

HashPath = Annotated[
    str,
    Path(
        alias="hash",
        pattern=_HASH_PATTERN,
        description="The blob's SHA-256 (32 bytes), unpadded base64url.",
    ),
]


class AttachmentBody(BaseModel):
    """
    A stored attachment: its address, its size and how long it is kept.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: SHA-256 of the blob, as the relay computed it: the blob's address.
    hash: BytesText
    #: The blob's length in bytes.
    size: Annotated[int, Field(strict=True, ge=0)]
    #: When the relay deletes it (a later upload of the same blob moves this on).
    expires_at: UnixTime

    @classmethod
    def of(cls, record: AttachmentRecord) -> AttachmentBody:
        """
        :returns: the JSON form of ``record``.
        """
        return cls(hash=record.sha256, size=record.size, expires_at=record.expires_at)


class BlobResponse(StreamingResponse):
    """
    A blob's bytes, streamed.
    """

    media_type = BLOB_MEDIA_TYPE


def body_limit(limits: Limits) -> dict[tuple[str, str], BodyLimit]:
    """
    The body limit of the upload route, for :class:`BodyLimitMiddleware`.

    :param limits: ``max_attachment_bytes``.
    :returns: the limit, keyed by method and path.
    """
    return {
        ("POST", ATTACHMENTS_PATH): BodyLimit(
            limits.max_attachment_bytes, error=AttachmentTooLarge, what="attachment"
        )
    }


def _upload_openapi(limits: Limits) -> dict[str, Any]:
    return {
        **SIGNED_OPENAPI,
        "requestBody": {
            "required": True,
            "description": "The encrypted blob.",
            "content": {
                BLOB_MEDIA_TYPE: {
                    "schema": {
                        "type": "string",
                        "format": "binary",
                        "maxLength": limits.max_attachment_bytes,
                    }
                }
            },
        },
    }


def _hash_from_path(text: str) -> bytes:
    try:
        return auth.decode_b64u(text, length=ATTACHMENT_HASH_BYTES)
    except auth.MalformedText as exc:
        raise InvalidRequest(f"the hash in the path is malformed: {exc}") from exc


def router(
    storage: Storage,
    clock: Clock,
    limits: Limits,
    rate_limits: DeviceRateLimits,
    signatures: Signatures,
) -> APIRouter:
    """
    Build the attachment routes.

    :param storage: where blobs are kept.
    :param clock: the relay's clock.
    :param limits: ``max_attachment_bytes`` and ``retention_seconds``.
    :param rate_limits: the per-device upload quota.
    :param signatures: the request-signature dependencies.
    :returns: the router.
    """
    routes = APIRouter(tags=["attachments"])

    @routes.post(
        ATTACHMENTS_PATH,
        status_code=201,
        response_model=AttachmentBody,
        summary="Upload an encrypted attachment",
        description=(
            f"The body is the blob (`{BLOB_MEDIA_TYPE}`), at most"
            f" {limits.max_attachment_bytes} bytes. The relay stores it under its SHA-256"
            " and keeps it for the retention time. Uploading a blob that is stored answers"
            " 200 with it (its expiry moves on) and stores nothing new."
        ),
        responses={
            200: {"description": "The blob was stored before.", "model": AttachmentBody},
            **documented_errors(
                InvalidRequest, SIGNED_ERRORS, AttachmentTooLarge, RateLimited, Unavailable
            ),
        },
        openapi_extra=_upload_openapi(limits),
        operation_id="upload_attachment",
    )
    async def upload_attachment(
        request: Request, response: Response, device: Device = Depends(signatures.device)
    ) -> AttachmentBody:
        media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media_type != BLOB_MEDIA_TYPE:
            raise InvalidRequest(f"an attachment is sent as {BLOB_MEDIA_TYPE}")
        blob = await request.body()
        if len(blob) > limits.max_attachment_bytes:
            # The middleware refuses these before reading them; this guards an app
            # mounted without it.
            raise AttachmentTooLarge(
                f"the attachment is larger than {limits.max_attachment_bytes} bytes"
            )
        await rate_limits.check_upload(device, len(blob))
        # Hashing 10 MiB takes a few milliseconds; hashlib releases the GIL for it.
        sha256 = await asyncio.to_thread(lambda: hashlib.sha256(blob).digest())
        now = clock.now()
        stored = await storage.put_attachment(
            NewAttachment(
                sha256=sha256,
                content=blob,
                uploaded_by=device.device_key,
                uploaded_at=now,
                expires_at=now + limits.retention_seconds,
            )
        )
        await rate_limits.count_upload(device, len(blob))
        if stored.duplicate:
            response.status_code = 200
        return AttachmentBody.of(stored.record)

    @routes.get(
        f"{ATTACHMENTS_PATH}/{{hash}}",
        response_class=BlobResponse,
        summary="Download an encrypted attachment",
        description=(
            "The blob's bytes, as uploaded. The receiver checks their SHA-256 against the"
            " hash in its message before decrypting."
        ),
        responses={
            200: {
                "description": "The blob.",
                "content": {BLOB_MEDIA_TYPE: {"schema": {"type": "string", "format": "binary"}}},
            },
            **documented_errors(
                InvalidRequest,
                SIGNED_ERRORS,
                AttachmentNotFound,
                AttachmentExpired,
                BodyTooLarge,
                Unavailable,
            ),
        },
        openapi_extra=SIGNED_OPENAPI,
        operation_id="download_attachment",
    )
    async def download_attachment(
        hash_text: HashPath,
        device: Device = Depends(signatures.device),
    ) -> BlobResponse:
        del device
        sha256 = _hash_from_path(hash_text)
        now = clock.now()
        record = await storage.get_attachment(sha256, now=now)

        async def pieces() -> AsyncIterator[bytes]:
            # Read with the request's ``now``: a download that began before the blob
            # expired finishes unless retention has deleted the bytes meanwhile.
            for offset in range(0, record.size, ATTACHMENT_READ_CHUNK_BYTES):
                yield await storage.read_attachment(
                    sha256, offset=offset, length=ATTACHMENT_READ_CHUNK_BYTES, now=now
                )

        return BlobResponse(pieces(), headers={"Content-Length": str(record.size)})

    return routes

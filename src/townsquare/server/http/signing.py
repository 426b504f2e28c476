"""
Request signatures at the HTTP edge: FastAPI dependencies and their OpenAPI description.

A signed route takes ``device: Annotated[Device, Depends(signed.device)]``;
the dependency hands the request's method, target, body and headers to
:class:`~townsquare.server.auth.Authenticator`. The target is the raw path
and query as received, which is what the client signed.

A route that records the nonce in its own transaction (posting a message)
takes :meth:`Signatures.device_deferring_nonce` instead, and owes the nonce:
it records it with its work, or with :meth:`Signatures.use_nonce` when it
refuses the request before that work, so that a replay is always refused as
one. A body that FastAPI refuses (400, before the route runs) leaves that
nonce unused; the request changed nothing, so its replay is refused alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi import Request

from townsquare import auth
from townsquare.server.auth import SIGNATURE_HEADERS, Authenticator, VerifiedRequest
from townsquare.server.errors import (
    BadSignature,
    MalformedAuthentication,
    MissingAuthentication,
    ReplayedRequest,
    ServerError,
    StaleTimestamp,
    UnknownDevice,
)
from townsquare.server.storage import Device
from townsquare.server.storage.interface import NonceUse

__all__ = [
    "NEW_DEVICE_ERRORS",
    "SIGNED_ERRORS",
    "SIGNED_OPENAPI",
    "Signatures",
    "request_target",
]

#: What a request signed by a registered device may fail with before its route runs.
SIGNED_ERRORS: tuple[type[ServerError], ...] = (
    MissingAuthentication,
    MalformedAuthentication,
    StaleTimestamp,
    UnknownDevice,
    BadSignature,
    ReplayedRequest,
)
#: The same for a registration, which is signed by the device it registers.
NEW_DEVICE_ERRORS: tuple[type[ServerError], ...] = tuple(
    error for error in SIGNED_ERRORS if error is not UnknownDevice
)

_HEADER_SCHEMAS: dict[str, tuple[str, str]] = {
    auth.DEVICE_HEADER: (
        auth.exact_b64u_pattern(auth.PUBLIC_KEY_BYTES),
        "The signing device's Ed25519 public key, unpadded base64url.",
    ),
    auth.TIMESTAMP_HEADER: (
        "^(0|[1-9][0-9]{0,19})$",
        "Unix seconds when the request was signed; within 300 s of the relay's clock.",
    ),
    auth.NONCE_HEADER: (
        auth.exact_b64u_pattern(auth.NONCE_BYTES),
        "16 random bytes, unpadded base64url, never reused by the device.",
    ),
    auth.SIGNATURE_HEADER: (
        auth.exact_b64u_pattern(auth.SIGNATURE_BYTES),
        "Ed25519 signature over the canonical request (docs/protocol.md), unpadded base64url.",
    ),
}

#: ``openapi_extra`` for a signed route: its four signature headers, all required.
SIGNED_OPENAPI: dict[str, Any] = {
    "parameters": [
        {
            "name": name,
            "in": "header",
            "required": True,
            "description": _HEADER_SCHEMAS[name][1],
            "schema": {"type": "string", "pattern": _HEADER_SCHEMAS[name][0]},
        }
        for name in SIGNATURE_HEADERS
    ]
}


def request_target(request: Request) -> str:
    """
    Recover the request target (path and query) exactly as the client sent it.

    :param request: the request.
    :returns: the raw path, then ``?`` and the raw query if there is one.
    """
    raw_path = request.scope.get("raw_path")
    path = raw_path.decode("latin-1") if isinstance(raw_path, bytes) else request.url.path
    query = request.scope.get("query_string", b"")
    if isinstance(query, bytes) and query:
        return f"{path}?{query.decode('latin-1')}"
    return path


def _signature_headers(request: Request) -> dict[str, Sequence[str]]:
    return {name.lower(): request.headers.getlist(name) for name in SIGNATURE_HEADERS}


class Signatures:
    """
    The FastAPI dependencies that authenticate requests.
    """

    def __init__(self, authenticator: Authenticator) -> None:
        """
        :param authenticator: checks signatures, clock windows and nonces.
        """
        self._authenticator = authenticator

    async def device(self, request: Request) -> Device:
        """
        Authenticate a request from a registered device.

        :returns: the signing device.
        :raises AuthenticationFailed: (a subclass) if the request is not validly signed.
        :raises ReplayedRequest: if its nonce was used before.
        """
        return await self._authenticator.authenticate(
            method=request.method,
            target=request_target(request),
            body=await request.body(),
            headers=_signature_headers(request),
        )

    async def device_deferring_nonce(self, request: Request) -> VerifiedRequest:
        """
        Authenticate a request from a registered device, leaving its nonce to the route.

        :returns: the signing device, and the nonce the route must record.
        :raises AuthenticationFailed: (a subclass) if the request is not validly signed.
        """
        return await self._authenticator.authenticate_deferring_nonce(
            method=request.method,
            target=request_target(request),
            body=await request.body(),
            headers=_signature_headers(request),
        )

    async def use_nonce(self, nonce: NonceUse) -> None:
        """
        Record the nonce of a request that :meth:`device_deferring_nonce` let through.

        For a route that refuses the request before the transaction that would record it.

        :raises ReplayedRequest: if the device used this nonce before.
        """
        await self._authenticator.use_nonce(nonce)

    async def new_device(self, request: Request) -> bytes:
        """
        Authenticate a registration, signed by the device it registers.

        :returns: the signing key.
        :raises AuthenticationFailed: (a subclass) if the request is not validly signed.
        :raises ReplayedRequest: if its nonce was used before.
        """
        return await self._authenticator.authenticate_new_device(
            method=request.method,
            target=request_target(request),
            body=await request.body(),
            headers=_signature_headers(request),
        )

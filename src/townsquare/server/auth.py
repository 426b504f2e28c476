"""
Request authentication: checking the device signature on every request.

The device side (the canonical string, the headers) is in
:mod:`townsquare.auth`, which clients import without importing the relay.
Here the relay checks, in this order, so that a request refused for any
reason changes nothing in the store::

    headers ──▶ parse ──▶ clock window ──▶ device lookup ──▶ signature ──▶ nonce
               401          401               401              401         409
      authentication-  stale-timestamp   unknown-device   bad-signature  replayed-
      required /                                                          request
      malformed-authentication

Only a request whose signature verifies gets its nonce recorded, so a forger
cannot use up a device's nonces. A nonce is kept until a request carrying it
would be refused as stale anyway (``timestamp + clock_skew_seconds``).

Registration (:meth:`Authenticator.authenticate_new_device`) skips the
lookup: the device is not registered yet, and the request is verified with
the key named in ``Townsquare-Device``. The route then checks that this key is
the one the body registers.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from townsquare import auth
from townsquare.server.clock import Clock
from townsquare.server.errors import (
    BadSignature,
    MalformedAuthentication,
    MissingAuthentication,
    StaleTimestamp,
    UnknownDevice,
)
from townsquare.server.storage import Device, Storage

__all__ = ["SIGNATURE_HEADERS", "Authenticator", "SignatureHeaders", "parse_signature_headers"]

#: The four headers of a signed request, in the order ``docs/protocol.md`` lists them.
SIGNATURE_HEADERS = (
    auth.DEVICE_HEADER,
    auth.TIMESTAMP_HEADER,
    auth.NONCE_HEADER,
    auth.SIGNATURE_HEADER,
)

# Decimal without leading zeros or sign, at most 20 digits (the range is checked after).
_TIMESTAMP = re.compile(r"0|[1-9][0-9]{0,19}")
_UINT64_LIMIT = 1 << 64


@dataclass(frozen=True, slots=True, kw_only=True)
class SignatureHeaders:
    """
    The parsed ``Townsquare-*`` headers of one request.
    """

    device_key: bytes
    timestamp: int
    nonce: bytes
    signature: bytes


def parse_signature_headers(headers: Mapping[str, Sequence[str]]) -> SignatureHeaders:
    """
    Parse the four signature headers.

    :param headers: every value of each header, keyed by the header's name in lower case.
    :returns: the parsed values.
    :raises MissingAuthentication: if a header is absent.
    :raises MalformedAuthentication: if a header is repeated or malformed.
    """
    values: dict[str, str] = {}
    for name in SIGNATURE_HEADERS:
        found = headers.get(name.lower(), ())
        if not found:
            raise MissingAuthentication(f"the request has no {name} header")
        if len(found) > 1:
            raise MalformedAuthentication(f"the request has {len(found)} {name} headers")
        values[name] = found[0]
    timestamp_text = values[auth.TIMESTAMP_HEADER]
    if not _TIMESTAMP.fullmatch(timestamp_text) or int(timestamp_text) >= _UINT64_LIMIT:
        raise MalformedAuthentication(
            f"{auth.TIMESTAMP_HEADER} must be Unix seconds in decimal, without leading zeros"
        )
    return SignatureHeaders(
        device_key=_decode(values, auth.DEVICE_HEADER, auth.PUBLIC_KEY_BYTES),
        timestamp=int(timestamp_text),
        nonce=_decode(values, auth.NONCE_HEADER, auth.NONCE_BYTES),
        signature=_decode(values, auth.SIGNATURE_HEADER, auth.SIGNATURE_BYTES),
    )


def _decode(values: Mapping[str, str], name: str, length: int) -> bytes:
    try:
        return auth.decode_b64u(values[name], length=length)
    except auth.MalformedText as exc:
        raise MalformedAuthentication(
            f"{name} must be {length} bytes in unpadded base64url: {exc}"
        ) from exc


class Authenticator:
    """
    Checks request signatures against the store's devices and nonces.
    """

    def __init__(self, storage: Storage, clock: Clock, *, clock_skew_seconds: int) -> None:
        """
        :param storage: where devices and used nonces are kept.
        :param clock: the relay's clock.
        :param clock_skew_seconds: how far a timestamp may be from ``clock``.
        """
        self._storage = storage
        self._clock = clock
        self._skew = clock_skew_seconds

    async def authenticate(
        self, *, method: str, target: str, body: bytes, headers: Mapping[str, Sequence[str]]
    ) -> Device:
        """
        Authenticate a request from a registered device and use up its nonce.

        :param method: the HTTP method.
        :param target: the request target as received (raw path, ``?``, query).
        :param body: the body bytes as received.
        :param headers: every value of each header, by lower-case name.
        :returns: the signing device.
        :raises MissingAuthentication: if a signature header is absent.
        :raises MalformedAuthentication: if a header or the target is malformed.
        :raises StaleTimestamp: if the timestamp is outside the clock window.
        :raises UnknownDevice: if the device is not registered.
        :raises BadSignature: if the signature does not verify.
        :raises ReplayedRequest: if the device used this nonce before.
        """
        signed = self._parse_and_check_time(headers)
        device = await self._storage.get_device(signed.device_key)
        if device is None:
            raise UnknownDevice("the device in Townsquare-Device is not registered here")
        await self._verify_and_use_nonce(signed, method=method, target=target, body=body)
        return device

    async def authenticate_new_device(
        self, *, method: str, target: str, body: bytes, headers: Mapping[str, Sequence[str]]
    ) -> bytes:
        """
        Authenticate a request signed by a device that registers itself, and use up its nonce.

        :param method: the HTTP method.
        :param target: the request target as received.
        :param body: the body bytes as received.
        :param headers: every value of each header, by lower-case name.
        :returns: the signing device's key (not yet checked against the body).
        :raises MissingAuthentication: if a signature header is absent.
        :raises MalformedAuthentication: if a header or the target is malformed.
        :raises StaleTimestamp: if the timestamp is outside the clock window.
        :raises BadSignature: if the signature does not verify.
        :raises ReplayedRequest: if this key used this nonce before.
        """
        signed = self._parse_and_check_time(headers)
        await self._verify_and_use_nonce(signed, method=method, target=target, body=body)
        return signed.device_key

    def _parse_and_check_time(self, headers: Mapping[str, Sequence[str]]) -> SignatureHeaders:
        signed = parse_signature_headers(headers)
        now = self._clock.now()
        if abs(now - signed.timestamp) > self._skew:
            raise StaleTimestamp(
                f"the timestamp is {signed.timestamp - now:+d} s from the relay's clock;"
                f" at most ±{self._skew} s is accepted"
            )
        return signed

    async def _verify_and_use_nonce(
        self, signed: SignatureHeaders, *, method: str, target: str, body: bytes
    ) -> None:
        try:
            canonical = auth.canonical_request(
                method=method,
                target=target,
                body=body,
                timestamp=signed.timestamp,
                nonce=signed.nonce,
                device_key=signed.device_key,
            )
        except auth.VerificationError as exc:
            raise MalformedAuthentication(f"the request cannot be signed: {exc}") from exc
        try:
            auth.verify_request_signature(signed.device_key, canonical, signed.signature)
        except auth.VerificationError as exc:
            raise BadSignature("the signature does not verify for this request") from exc
        await self._storage.use_nonce(
            signed.device_key, signed.nonce, expires_at=signed.timestamp + self._skew
        )

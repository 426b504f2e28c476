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

:meth:`Authenticator.authenticate_deferring_nonce` makes every check but the
last and hands the nonce back as a :class:`~townsquare.server.storage.NonceUse`
instead: the route records it in the transaction that does its work (posting a
message), and must record it (:meth:`Authenticator.use_nonce`) on every refusal
before that, so that any replay of the request is refused as one.

Registered devices are cached in memory (an LRU), since every request looks
one up and this relay never changes or deletes a device.

Registration (:meth:`Authenticator.authenticate_new_device`) skips the
lookup: the device is not registered yet, and the request is verified with
the key named in ``Townsquare-Device``. The route then checks that this key is
the one the body registers.
"""

from __future__ import annotations

import collections
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
from townsquare.server.storage.interface import NonceUse

__all__ = [
    "DEFAULT_DEVICE_CACHE_SIZE",
    "SIGNATURE_HEADERS",
    "Authenticator",
    "SignatureHeaders",
    "VerifiedRequest",
    "parse_signature_headers",
]

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

#: How many registered devices an :class:`Authenticator` keeps in memory (a few
#: hundred bytes each).
DEFAULT_DEVICE_CACHE_SIZE = 4096


@dataclass(frozen=True, slots=True, kw_only=True)
class SignatureHeaders:
    """
    The parsed ``Townsquare-*`` headers of one request.
    """

    device_key: bytes
    timestamp: int
    nonce: bytes
    signature: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class VerifiedRequest:
    """
    A request whose signature verified, and its nonce, not yet recorded.
    """

    #: The signing device.
    device: Device
    #: The nonce, to record in the transaction that does the request's work.
    nonce: NonceUse


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

    def __init__(
        self,
        storage: Storage,
        clock: Clock,
        *,
        clock_skew_seconds: int,
        device_cache_size: int = DEFAULT_DEVICE_CACHE_SIZE,
    ) -> None:
        """
        :param storage: where devices and used nonces are kept.
        :param clock: the relay's clock.
        :param clock_skew_seconds: how far a timestamp may be from ``clock``.
        :param device_cache_size: how many registered devices to keep in memory (0: none).
        """
        self._storage = storage
        self._clock = clock
        self._skew = clock_skew_seconds
        # Registered devices by key, least recently used first. Townsquare: the store
        # never changes or deletes a device (no UPDATE or DELETE of the devices table),
        # so a cached record cannot go stale. Revoking a device, when it comes, must
        # evict it here, in every relay process. Unknown keys are not cached: a device
        # registered later (perhaps through another process) must be seen.
        self._devices: collections.OrderedDict[bytes, Device] = collections.OrderedDict()
        self._device_cache_size = max(0, device_cache_size)

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
        verified = await self.authenticate_deferring_nonce(
            method=method, target=target, body=body, headers=headers
        )
        await self.use_nonce(verified.nonce)
        return verified.device

    async def authenticate_deferring_nonce(
        self, *, method: str, target: str, body: bytes, headers: Mapping[str, Sequence[str]]
    ) -> VerifiedRequest:
        """
        Authenticate a request from a registered device, leaving its nonce to the caller.

        The same checks as :meth:`authenticate` but the nonce's: the caller records the
        nonce, in the transaction that does the request's work, or with
        :meth:`use_nonce` if the request is refused before that.

        :param method: the HTTP method.
        :param target: the request target as received (raw path, ``?``, query).
        :param body: the body bytes as received.
        :param headers: every value of each header, by lower-case name.
        :returns: the signing device and the nonce to record.
        :raises MissingAuthentication: if a signature header is absent.
        :raises MalformedAuthentication: if a header or the target is malformed.
        :raises StaleTimestamp: if the timestamp is outside the clock window.
        :raises UnknownDevice: if the device is not registered.
        :raises BadSignature: if the signature does not verify.
        """
        signed = self._parse_and_check_time(headers)
        device = await self._registered_device(signed.device_key)
        self._verify(signed, method=method, target=target, body=body)
        return VerifiedRequest(device=device, nonce=self._nonce_use(signed))

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
        self._verify(signed, method=method, target=target, body=body)
        await self.use_nonce(self._nonce_use(signed))
        return signed.device_key

    async def use_nonce(self, nonce: NonceUse) -> None:
        """
        Record a verified request's nonce.

        :param nonce: the nonce, as :meth:`authenticate_deferring_nonce` handed it back.
        :raises ReplayedRequest: if the device used this nonce before.
        """
        await self._storage.use_nonce(nonce.device_key, nonce.nonce, expires_at=nonce.expires_at)

    def _parse_and_check_time(self, headers: Mapping[str, Sequence[str]]) -> SignatureHeaders:
        signed = parse_signature_headers(headers)
        now = self._clock.now()
        if abs(now - signed.timestamp) > self._skew:
            raise StaleTimestamp(
                f"the timestamp is {signed.timestamp - now:+d} s from the relay's clock;"
                f" at most ±{self._skew} s is accepted"
            )
        return signed

    async def _registered_device(self, device_key: bytes) -> Device:
        device = self._devices.get(device_key)
        if device is not None:
            self._devices.move_to_end(device_key)
            return device
        device = await self._storage.get_device(device_key)
        if device is None:
            raise UnknownDevice("the device in Townsquare-Device is not registered here")
        if self._device_cache_size:
            self._devices[device_key] = device
            while len(self._devices) > self._device_cache_size:
                self._devices.popitem(last=False)
        return device

    def _nonce_use(self, signed: SignatureHeaders) -> NonceUse:
        # Kept until a request carrying it would be refused as stale anyway.
        return NonceUse(
            device_key=signed.device_key,
            nonce=signed.nonce,
            expires_at=signed.timestamp + self._skew,
        )

    @staticmethod
    def _verify(signed: SignatureHeaders, *, method: str, target: str, body: bytes) -> None:
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

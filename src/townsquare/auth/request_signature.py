"""
Request signatures: how a device signs each HTTP request it sends to a relay.

A device signs, with its Ed25519 key, the canonical string of the request:
seven lines joined by a line feed (0x0A), with none after the last::

    townsquare/v1/request
    <METHOD>
    <target>
    <hex(SHA-256(body))>
    <timestamp>
    <nonce>
    <device>

where ``METHOD`` is the upper-case HTTP method, ``target`` the request target
exactly as sent (the path with its percent-encoding, then ``?`` and the query
if there is one), the hash is of the exact body bytes (of the empty string when
there is no body), ``timestamp`` is Unix seconds in decimal without leading
zeros, ``nonce`` is 16 random bytes and ``device`` the device's public key,
both as unpadded base64url. It sends four
headers: :data:`DEVICE_HEADER`, :data:`TIMESTAMP_HEADER`,
:data:`NONCE_HEADER` and :data:`SIGNATURE_HEADER` (the signature, base64url).

This module is sans-I/O: the caller supplies the time and the nonce, so a
client core stays deterministic under test. ``docs/protocol.md`` is the
normative description; the relay's checks (clock window, single-use nonces)
live in ``townsquare.server.auth``.
"""

from __future__ import annotations

import hashlib
import re

from townsquare.auth import keys
from townsquare.auth.encoding import encode_b64u
from townsquare.auth.errors import InvalidKey, InvalidValue, UsageError

__all__ = [
    "DEVICE_HEADER",
    "NONCE_BYTES",
    "NONCE_HEADER",
    "REQUEST_SIGNATURE_LABEL",
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "canonical_request",
    "sign_request",
    "verify_request_signature",
]

#: The first line of every canonical request: a domain separator and version.
REQUEST_SIGNATURE_LABEL = "townsquare/v1/request"
#: The signing device's public key, unpadded base64url.
DEVICE_HEADER = "Townsquare-Device"
#: Unix seconds when the request was signed, decimal.
TIMESTAMP_HEADER = "Townsquare-Timestamp"
#: 16 random bytes, unpadded base64url; never reused by a device.
NONCE_HEADER = "Townsquare-Nonce"
#: The Ed25519 signature over the canonical request, unpadded base64url.
SIGNATURE_HEADER = "Townsquare-Signature"
#: The length of a request nonce.
NONCE_BYTES = 16

_METHOD = re.compile(r"[A-Z]{1,16}")
# A request target in origin form (RFC 9112 §3.2.1): visible ASCII, no spaces,
# so that it cannot smuggle a newline into the canonical string.
_TARGET = re.compile(r"/[\x21-\x7e]*")
_UINT64_LIMIT = 1 << 64


def canonical_request(
    *, method: str, target: str, body: bytes, timestamp: int, nonce: bytes, device_key: bytes
) -> bytes:
    """
    Build the bytes that a device signs for one request.

    :param method: the HTTP method, upper case (``"POST"``).
    :param target: the request target as sent: path and query (``"/v1/x?y=1"``).
    :param body: the request body, ``b""`` if none.
    :param timestamp: Unix seconds.
    :param nonce: 16 random bytes.
    :param device_key: the signing device's 32-byte public key.
    :returns: the canonical request, ASCII.
    :raises InvalidValue: if the method, target, timestamp or nonce has the wrong form.
    :raises InvalidKey: if ``device_key`` is not 32 bytes.
    """
    if not _METHOD.fullmatch(method):
        raise InvalidValue("the method must be an upper-case HTTP method")
    if not _TARGET.fullmatch(target):
        raise InvalidValue("the target must be a path (and query) of visible ASCII")
    if not 0 <= timestamp < _UINT64_LIMIT:
        raise InvalidValue("the timestamp must be a uint64 (Unix seconds)")
    if len(nonce) != NONCE_BYTES:
        raise InvalidValue(f"the nonce must be {NONCE_BYTES} bytes")
    keys.check_public_key(device_key)
    lines = (
        REQUEST_SIGNATURE_LABEL,
        method,
        target,
        hashlib.sha256(body).hexdigest(),
        str(timestamp),
        encode_b64u(nonce),
        encode_b64u(device_key),
    )
    return "\n".join(lines).encode("ascii")


def sign_request(
    *,
    device_private_key: bytes,
    method: str,
    target: str,
    body: bytes,
    timestamp: int,
    nonce: bytes,
) -> dict[str, str]:
    """
    Sign a request and return the headers that carry the signature.

    :param device_private_key: the device's 32-byte Ed25519 seed.
    :param method: the HTTP method, upper case.
    :param target: the request target exactly as it will be sent (path and query).
    :param body: the exact body bytes that will be sent, ``b""`` if none.
    :param timestamp: the current time in Unix seconds (the caller's clock).
    :param nonce: 16 fresh random bytes, never used before by this device.
    :returns: the four ``Townsquare-*`` headers.
    :raises UsageError: if a value is malformed (the caller built it).
    """
    try:
        device_key = keys.public_key(device_private_key)
        message = canonical_request(
            method=method,
            target=target,
            body=body,
            timestamp=timestamp,
            nonce=nonce,
            device_key=device_key,
        )
    except (InvalidValue, InvalidKey) as exc:
        raise UsageError(str(exc)) from exc
    return {
        DEVICE_HEADER: encode_b64u(device_key),
        TIMESTAMP_HEADER: str(timestamp),
        NONCE_HEADER: encode_b64u(nonce),
        SIGNATURE_HEADER: encode_b64u(keys.sign(device_private_key, message)),
    }


def verify_request_signature(device_key: bytes, canonical: bytes, signature: bytes) -> None:
    """
    Check a request's signature.

    :param device_key: the claimed device's 32-byte public key.
    :param canonical: the canonical request, from :func:`canonical_request`.
    :param signature: the signature from :data:`SIGNATURE_HEADER`.
    :raises InvalidKey: if ``device_key`` is not 32 bytes.
    :raises InvalidSignature: if the signature does not verify.
    """
    keys.verify(device_key, canonical, signature)

"""
Who is speaking to a relay: device certificates and request signatures, sans-I/O.

Shared by the relay (which verifies) and the client (which signs); it imports
neither. No clock, socket or global randomness is read here except by
:func:`generate_private_key`: timestamps and nonces are passed in.

::

    from townsquare import auth

    account = auth.generate_private_key()
    device = auth.generate_private_key()
    certificate = auth.certify_device(account, auth.public_key(device), created_at=now)
    headers = auth.sign_request(
        device_private_key=device, method="GET", target="/v1/key-packages/count",
        body=b"", timestamp=now, nonce=secrets.token_bytes(auth.NONCE_BYTES),
    )

``docs/protocol.md`` describes both formats byte for byte.
"""

from __future__ import annotations

from townsquare.auth.certificate import (
    DEVICE_CERTIFICATE_LABEL,
    DeviceCertificate,
    certify_device,
    device_certificate_tbs,
)
from townsquare.auth.encoding import B64U_PATTERN, decode_b64u, encode_b64u, exact_b64u_pattern
from townsquare.auth.errors import (
    AuthError,
    InvalidKey,
    InvalidSignature,
    InvalidValue,
    MalformedText,
    UsageError,
    VerificationError,
)
from townsquare.auth.keys import (
    PRIVATE_KEY_BYTES,
    PUBLIC_KEY_BYTES,
    SIGNATURE_BYTES,
    check_public_key,
    generate_private_key,
    public_key,
    sign,
    verify,
)
from townsquare.auth.request_signature import (
    DEVICE_HEADER,
    NONCE_BYTES,
    NONCE_HEADER,
    REQUEST_SIGNATURE_LABEL,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    canonical_request,
    sign_request,
    verify_request_signature,
)

__all__ = [
    "B64U_PATTERN",
    "DEVICE_CERTIFICATE_LABEL",
    "DEVICE_HEADER",
    "NONCE_BYTES",
    "NONCE_HEADER",
    "PRIVATE_KEY_BYTES",
    "PUBLIC_KEY_BYTES",
    "REQUEST_SIGNATURE_LABEL",
    "SIGNATURE_BYTES",
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "AuthError",
    "DeviceCertificate",
    "InvalidKey",
    "InvalidSignature",
    "InvalidValue",
    "MalformedText",
    "UsageError",
    "VerificationError",
    "canonical_request",
    "certify_device",
    "check_public_key",
    "decode_b64u",
    "device_certificate_tbs",
    "encode_b64u",
    "exact_b64u_pattern",
    "generate_private_key",
    "public_key",
    "sign",
    "sign_request",
    "verify",
    "verify_request_signature",
]

"""
The JSON forms of the API's values: bytes as canonical base64url, times as Unix seconds.

Each type validates on the way in (so a handler only ever sees well-formed
values) and publishes the exact pattern and length limit in
``/openapi.json``. A string over its length limit fails with pydantic's
``string_too_long``, which :mod:`~townsquare.server.http.problems` answers as
413 ``field-too-large``; any other malformed value is 400 ``invalid-request``.
"""

from __future__ import annotations

import math
from typing import Annotated, Any

from pydantic import BeforeValidator, Field, PlainSerializer, WithJsonSchema
from pydantic_core import PydanticCustomError

from townsquare import auth
from townsquare.server.config import (
    CLIENT_MESSAGE_ID_BYTES,
    MAX_GROUP_ID_BYTES,
    MAX_KEY_PACKAGE_BYTES,
    MAX_MLS_MESSAGE_BYTES,
    MIN_GROUP_ID_BYTES,
)
from townsquare.server.errors import InvalidRequest

__all__ = [
    "GROUP_ID_PATTERN",
    "KEY_PATTERN",
    "BytesText",
    "ClientMessageIdText",
    "GroupIdText",
    "KeyPackageText",
    "KeyText",
    "MLSMessageText",
    "Seq",
    "SignatureText",
    "UnixTime",
    "group_id_from_path",
    "key_from_path",
]

#: The pattern of a 32-byte key in base64url: 43 characters.
KEY_PATTERN = auth.exact_b64u_pattern(auth.PUBLIC_KEY_BYTES)


def _b64u(*, length: int | None = None, max_bytes: int | None = None) -> BeforeValidator:
    max_chars = None if max_bytes is None else math.ceil(max_bytes * 4 / 3)

    def decode(value: object) -> bytes:
        if isinstance(value, bytes):
            # Built by the relay itself for a response; JSON input is never bytes.
            return value
        if not isinstance(value, str):
            raise PydanticCustomError("string_type", "Input should be a valid string")
        if max_chars is not None and len(value) > max_chars:
            raise PydanticCustomError(
                "string_too_long",
                "String should have at most {max_length} characters",
                {"max_length": max_chars},
            )
        try:
            return auth.decode_b64u(value, length=length)
        except auth.MalformedText as exc:
            raise PydanticCustomError("base64url", "{error}", {"error": str(exc)}) from exc

    return BeforeValidator(decode)


def _schema(pattern: str, description: str, *, max_length: int | None = None) -> WithJsonSchema:
    schema: dict[str, Any] = {
        "type": "string",
        "pattern": pattern,
        "contentEncoding": "base64url",
        "description": description,
    }
    if max_length is not None:
        schema["maxLength"] = max_length
    return WithJsonSchema(schema)


_ENCODE = PlainSerializer(auth.encode_b64u, return_type=str)

#: A 32-byte Ed25519 public key (an account or a device).
KeyText = Annotated[
    bytes,
    _b64u(length=auth.PUBLIC_KEY_BYTES),
    _ENCODE,
    _schema(KEY_PATTERN, "An Ed25519 public key (32 bytes), unpadded base64url."),
]

#: A 64-byte Ed25519 signature.
SignatureText = Annotated[
    bytes,
    _b64u(length=auth.SIGNATURE_BYTES),
    _ENCODE,
    _schema(
        auth.exact_b64u_pattern(auth.SIGNATURE_BYTES),
        "An Ed25519 signature (64 bytes), unpadded base64url.",
    ),
]

#: An encoded ``MLSMessage`` carrying a KeyPackage, at most MAX_KEY_PACKAGE_BYTES.
KeyPackageText = Annotated[
    bytes,
    _b64u(max_bytes=MAX_KEY_PACKAGE_BYTES),
    _ENCODE,
    _schema(
        auth.B64U_PATTERN,
        "An MLSMessage carrying a KeyPackage (RFC 9420 §6, §10), unpadded base64url,"
        f" at most {MAX_KEY_PACKAGE_BYTES} bytes.",
        max_length=math.ceil(MAX_KEY_PACKAGE_BYTES * 4 / 3),
    ),
]

#: An encoded MLSMessage (or ratchet tree) in a request, at most MAX_MLS_MESSAGE_BYTES.
MLSMessageText = Annotated[
    bytes,
    _b64u(max_bytes=MAX_MLS_MESSAGE_BYTES),
    _ENCODE,
    _schema(
        auth.B64U_PATTERN,
        f"Encoded MLS bytes (RFC 9420 §6), unpadded base64url, at most {MAX_MLS_MESSAGE_BYTES}"
        " bytes.",
        max_length=math.ceil(MAX_MLS_MESSAGE_BYTES * 4 / 3),
    ),
]

#: Bytes in a response (MLS messages, GroupInfos, ratchet trees), of any length.
BytesText = Annotated[
    bytes,
    _b64u(),
    _ENCODE,
    _schema(auth.B64U_PATTERN, "Bytes, unpadded base64url."),
]

#: A device's id for one message, the key of exactly-once delivery.
ClientMessageIdText = Annotated[
    bytes,
    _b64u(length=CLIENT_MESSAGE_ID_BYTES),
    _ENCODE,
    _schema(
        auth.exact_b64u_pattern(CLIENT_MESSAGE_ID_BYTES),
        f"{CLIENT_MESSAGE_ID_BYTES} random bytes chosen by the sending device, unpadded"
        " base64url; a retry uses the same id.",
    ),
]

_B64U_TAILS = {0: "", 1: "[A-Za-z0-9_-][AQgw]", 2: "[A-Za-z0-9_-]{2}[AEIMQUYcgkosw048]"}


def _b64u_range_pattern(min_bytes: int, max_bytes: int) -> str:
    """
    Return the pattern of the canonical base64url text of ``min_bytes`` to ``max_bytes`` bytes.

    A length range of characters alone would also admit texts the relay refuses
    (a 21-character text is no whole number of bytes; a last character with
    nonzero unused bits is not canonical), so ``/openapi.json`` would call them
    valid. Instead: per count of whole 4-character groups, the tails (none, one
    byte, two bytes) that keep the length in range, with runs of counts that
    allow the same tails merged.

    :param min_bytes: the fewest bytes encoded.
    :param max_bytes: the most bytes encoded.
    :returns: an anchored pattern (as in JSON Schema).
    """
    branches: list[tuple[int, int, tuple[int, ...]]] = []
    for groups in range(min_bytes // 3, max_bytes // 3 + 1):
        tails = tuple(t for t in _B64U_TAILS if min_bytes <= 3 * groups + t <= max_bytes)
        if branches and branches[-1][2] == tails and branches[-1][1] == groups - 1:
            branches[-1] = (branches[-1][0], groups, tails)
        elif tails:
            branches.append((groups, groups, tails))
    alternatives = []
    for first, last, tails in branches:
        count = f"{{{first}}}" if first == last else f"{{{first},{last}}}"
        ends = "|".join(_B64U_TAILS[t] for t in tails if t)
        tail = f"(?:{ends})" + ("?" if 0 in tails else "")
        alternatives.append(f"(?:[A-Za-z0-9_-]{{4}}){count}{tail}")
    return f"^(?:{'|'.join(alternatives)})$"


#: The text of a group id: MIN_GROUP_ID_BYTES to MAX_GROUP_ID_BYTES bytes in canonical base64url.
GROUP_ID_PATTERN = _b64u_range_pattern(MIN_GROUP_ID_BYTES, MAX_GROUP_ID_BYTES)

#: A group id (the MLS group_id) in a response.
GroupIdText = Annotated[
    bytes,
    _b64u(),
    _ENCODE,
    _schema(
        GROUP_ID_PATTERN,
        f"An MLS group id ({MIN_GROUP_ID_BYTES} to {MAX_GROUP_ID_BYTES} bytes), unpadded"
        " base64url.",
    ),
]

#: A sequence number in a group's log: 0 before the first entry. At most 2^53 - 1.
Seq = Annotated[int, Field(strict=True, ge=0, le=(1 << 53) - 1)]

#: Whole seconds since the Unix epoch. At most 2^53 - 1, so that the web client holds
#: it in an ordinary JavaScript number (as docs/wire.md does for its integers).
UnixTime = Annotated[int, Field(strict=True, ge=0, le=(1 << 53) - 1)]


def key_from_path(text: str) -> bytes:
    """
    Decode a key from a path parameter that the route's pattern has already checked.

    :param text: the parameter.
    :returns: the 32-byte key.
    :raises InvalidRequest: if it is not a canonical 32-byte key.
    """
    try:
        return auth.decode_b64u(text, length=auth.PUBLIC_KEY_BYTES)
    except auth.MalformedText as exc:
        raise InvalidRequest(f"the key in the path is malformed: {exc}") from exc


def group_id_from_path(text: str) -> bytes:
    """
    Decode a group id from a path parameter that the route's pattern has already checked.

    :param text: the parameter.
    :returns: the group id.
    :raises InvalidRequest: if it is not canonical base64url of an allowed length.
    """
    try:
        group_id = auth.decode_b64u(text)
    except auth.MalformedText as exc:
        raise InvalidRequest(f"the group id in the path is malformed: {exc}") from exc
    if not MIN_GROUP_ID_BYTES <= len(group_id) <= MAX_GROUP_ID_BYTES:
        raise InvalidRequest(
            f"a group id is {MIN_GROUP_ID_BYTES} to {MAX_GROUP_ID_BYTES} bytes, not {len(group_id)}"
        )
    return group_id

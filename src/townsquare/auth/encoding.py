"""
The text form of bytes on the relay API: canonical unpadded base64url (RFC 4648 §5).

Keys, signatures, nonces and MLS messages all travel in JSON and headers in
this one form. Decoding is strict: padding, whitespace, the standard alphabet's
``+`` and ``/`` and non-zero trailing bits are all refused, so every byte
string has exactly one text form and a key can be compared by its text.
"""

from __future__ import annotations

import base64
import binascii
import re

from townsquare.auth.errors import MalformedText

__all__ = ["B64U_PATTERN", "decode_b64u", "encode_b64u", "exact_b64u_pattern"]

# Canonical unpadded base64url of any length: groups of four characters, then
# an optional tail of two or three whose last character leaves the unused low
# bits zero (RFC 4648 §3.5 calls such encodings non-canonical).
B64U_PATTERN = r"^(?:[A-Za-z0-9_-]{4})*(?:[A-Za-z0-9_-][AQgw]|[A-Za-z0-9_-]{2}[AEIMQUYcgkosw048])?$"
_B64U = re.compile(B64U_PATTERN)


def exact_b64u_pattern(length: int) -> str:
    """
    Return the regular expression of the canonical text of exactly ``length`` bytes.

    :param length: the number of bytes encoded.
    :returns: an anchored pattern (as in JSON Schema), e.g. 43 characters for 32 bytes.
    :raises ValueError: if ``length`` is negative.
    """
    if length < 0:
        raise ValueError("length must not be negative")
    groups, tail = divmod(length, 3)
    head = f"(?:[A-Za-z0-9_-]{{4}}){{{groups}}}" if groups else ""
    if tail == 1:
        return f"^{head}[A-Za-z0-9_-][AQgw]$"
    if tail == 2:
        return f"^{head}[A-Za-z0-9_-]{{2}}[AEIMQUYcgkosw048]$"
    return f"^{head}$"


def encode_b64u(data: bytes) -> str:
    """
    Encode bytes as unpadded base64url.

    :param data: the bytes.
    :returns: their canonical text.
    """
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def decode_b64u(text: str, *, length: int | None = None) -> bytes:
    """
    Decode canonical unpadded base64url.

    :param text: the text.
    :param length: the number of bytes required, if fixed.
    :returns: the bytes.
    :raises MalformedText: if ``text`` is not canonical unpadded base64url, or does not
        decode to ``length`` bytes.
    """
    if not _B64U.fullmatch(text):
        raise MalformedText("not canonical unpadded base64url")
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except binascii.Error as exc:  # pragma: no cover - the pattern admits only decodable text
        raise MalformedText("not canonical unpadded base64url") from exc
    if length is not None and len(data) != length:
        raise MalformedText(f"decodes to {len(data)} bytes, not {length}")
    return data

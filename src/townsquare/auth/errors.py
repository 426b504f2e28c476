"""
Errors raised by ``townsquare.auth``: device certificates and request signatures.

Every error derives from :class:`AuthError`. Each subclass names one cause::

    AuthError
    ├── UsageError          the caller passed a value it built wrongly (a bug in the caller)
    └── VerificationError   bytes or text from a peer failed a check
        ├── MalformedText       not canonical unpadded base64url, or not the right length
        ├── InvalidKey          not an Ed25519 public key
        ├── InvalidValue        a number or text outside its allowed range
        └── InvalidSignature    an Ed25519 signature that does not verify

The relay turns each of these into its own HTTP problem type
(``townsquare.server.errors``); a client shows them as a broken or hostile
peer.
"""

from __future__ import annotations

__all__ = [
    "AuthError",
    "InvalidKey",
    "InvalidSignature",
    "InvalidValue",
    "MalformedText",
    "UsageError",
    "VerificationError",
]


class AuthError(Exception):
    """
    Root of every error raised by ``townsquare.auth``.
    """


class UsageError(AuthError):
    """
    The caller used the API wrongly, for example a private key of the wrong length.
    """


class VerificationError(AuthError):
    """
    Input from a peer failed a check.
    """


class MalformedText(VerificationError):
    """
    Text that is not canonical unpadded base64url (RFC 4648 §5), or decodes to the wrong length.
    """


class InvalidKey(VerificationError):
    """
    Bytes that are not an Ed25519 public key (RFC 8032 §5.1.5).
    """


class InvalidValue(VerificationError):
    """
    A number or string outside the range the protocol allows.
    """


class InvalidSignature(VerificationError):
    """
    An Ed25519 signature (RFC 8032 §5.1.7) that does not verify.
    """

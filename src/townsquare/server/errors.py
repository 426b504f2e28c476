"""
Errors raised by the relay, each with its HTTP status and stable problem code.

Every error the relay answers with derives from :class:`ServerError`. Each
class carries ``status`` (the HTTP status), ``code`` (stable, never reused:
clients key their handling on it) and ``title`` (a short, fixed summary);
an instance carries ``detail`` (what happened this time). They become
``application/problem+json`` responses (RFC 9457) in exactly one place,
:mod:`townsquare.server.http.problems`, whose ``type`` is
:data:`PROBLEM_TYPE_PREFIX` followed by the code. A parent catches its whole
branch::

    ServerError                     500 internal-error
    ├── BadRequest                  400 bad-request
    │   └── InvalidRequest          400 invalid-request: fails the schema
    ├── AuthenticationFailed        401 authentication-failed
    │   ├── MissingAuthentication   401 authentication-required: no signature headers
    │   ├── MalformedAuthentication 401 malformed-authentication
    │   ├── StaleTimestamp          401 stale-timestamp: over 300 s from the relay's clock
    │   ├── UnknownDevice           401 unknown-device: the signer is not registered
    │   ├── BadSignature            401 bad-signature
    │   └── SignerMismatch          401 signer-mismatch: registration signed by another key
    ├── NotFound                    404 not-found: no such route
    │   ├── UnknownAccount          404 unknown-account
    │   └── DeviceNotFound          404 device-not-found: a device named in the path
    ├── MethodNotAllowed            405 method-not-allowed
    ├── Conflict                    409 conflict
    │   ├── ReplayedRequest         409 replayed-request: the nonce was used before
    │   ├── AccountExists           409 account-exists
    │   ├── DeviceExists            409 device-exists
    │   ├── DeviceLimitReached      409 device-limit-reached
    │   ├── KeyPackagesExhausted    409 key-packages-exhausted: not even a last-resort one
    │   ├── KeyPackageStoreFull     409 key-package-store-full
    │   └── DuplicateKeyPackage     409 duplicate-key-package
    ├── ContentTooLarge             413 content-too-large
    │   ├── BodyTooLarge            413 body-too-large: the body, in bytes
    │   ├── TooManyItems            413 too-many-items: a list over its limit
    │   └── FieldTooLarge           413 field-too-large: one value over its limit
    ├── UnprocessableContent        422 unprocessable-content
    │   ├── InvalidCertificate      422 invalid-certificate
    │   └── InvalidKeyPackage       422 invalid-key-package
    │       └── KeyPackageNotOwned  422 key-package-not-owned: another device's leaf key
    ├── RateLimited                 429 rate-limited: carries Retry-After
    ├── StorageFailure              500 storage-failure: disk full, corrupt file
    │   └── SchemaError             500 schema-error: a migration missing, a newer schema
    └── Unavailable                 503 unavailable: the store is not open

Storage backends raise these too: they are values, not HTTP responses, and
know nothing of the framework.
"""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "PROBLEM_TYPE_PREFIX",
    "AccountExists",
    "AuthenticationFailed",
    "BadRequest",
    "BadSignature",
    "BodyTooLarge",
    "Conflict",
    "ContentTooLarge",
    "DeviceExists",
    "DeviceLimitReached",
    "DeviceNotFound",
    "DuplicateKeyPackage",
    "FieldTooLarge",
    "InvalidCertificate",
    "InvalidKeyPackage",
    "InvalidRequest",
    "KeyPackageNotOwned",
    "KeyPackageStoreFull",
    "KeyPackagesExhausted",
    "MalformedAuthentication",
    "MethodNotAllowed",
    "MissingAuthentication",
    "NotFound",
    "RateLimited",
    "ReplayedRequest",
    "SchemaError",
    "ServerError",
    "SignerMismatch",
    "StaleTimestamp",
    "StorageFailure",
    "TooManyItems",
    "Unavailable",
    "UnknownAccount",
    "UnknownDevice",
    "UnprocessableContent",
    "all_error_classes",
]

#: Every problem ``type`` is this prefix followed by the error's ``code``.
#: Townsquare choice: a URN, because the project has no domain of its own yet and
#: RFC 9457 §3.1.1 asks consumers to compare types as identifiers, not fetch them.
PROBLEM_TYPE_PREFIX = "urn:townsquare:problem:"


class ServerError(Exception):
    """
    Root of every error the relay answers with.
    """

    status: ClassVar[int] = 500
    code: ClassVar[str] = "internal-error"
    title: ClassVar[str] = "Internal server error"

    def __init__(self, detail: str) -> None:
        """
        :param detail: what went wrong this time, for a person reading the response.
        """
        super().__init__(detail)
        self.detail = detail

    @classmethod
    def problem_type(cls) -> str:
        """
        :returns: the RFC 9457 ``type`` URI of this error.
        """
        return PROBLEM_TYPE_PREFIX + cls.code


# -- 400 -------------------------------------------------------------------------------


class BadRequest(ServerError):
    """
    The request is malformed.
    """

    status = 400
    code = "bad-request"
    title = "Bad request"


class InvalidRequest(BadRequest):
    """
    The request does not match the endpoint's schema (JSON, fields, formats).
    """

    code = "invalid-request"
    title = "The request does not match the schema"


# -- 401 -------------------------------------------------------------------------------


class AuthenticationFailed(ServerError):
    """
    The request's signature headers do not authenticate a device.
    """

    status = 401
    code = "authentication-failed"
    title = "Authentication failed"


class MissingAuthentication(AuthenticationFailed):
    """
    A ``Townsquare-*`` signature header is missing.
    """

    code = "authentication-required"
    title = "The request is not signed"


class MalformedAuthentication(AuthenticationFailed):
    """
    A ``Townsquare-*`` signature header is present but malformed.
    """

    code = "malformed-authentication"
    title = "A signature header is malformed"


class StaleTimestamp(AuthenticationFailed):
    """
    ``Townsquare-Timestamp`` is further from the relay's clock than the allowed skew.
    """

    code = "stale-timestamp"
    title = "The request's timestamp is too far from the relay's clock"


class UnknownDevice(AuthenticationFailed):
    """
    The signing device is not registered on this relay.
    """

    code = "unknown-device"
    title = "The signing device is not registered"


class BadSignature(AuthenticationFailed):
    """
    The request's signature does not verify under the device's key.
    """

    code = "bad-signature"
    title = "The request's signature does not verify"


class SignerMismatch(AuthenticationFailed):
    """
    A registration is signed by a key other than the device key it registers.
    """

    code = "signer-mismatch"
    title = "The request is not signed by the device it registers"


# -- 404, 405 --------------------------------------------------------------------------


class NotFound(ServerError):
    """
    No such resource.
    """

    status = 404
    code = "not-found"
    title = "Not found"


class UnknownAccount(NotFound):
    """
    No account has this key.
    """

    code = "unknown-account"
    title = "No such account"


class DeviceNotFound(NotFound):
    """
    No device has the key named in the path.
    """

    code = "device-not-found"
    title = "No such device"


class MethodNotAllowed(ServerError):
    """
    The resource exists but does not answer this method.
    """

    status = 405
    code = "method-not-allowed"
    title = "Method not allowed"


# -- 409 -------------------------------------------------------------------------------


class Conflict(ServerError):
    """
    The request conflicts with what the relay holds.
    """

    status = 409
    code = "conflict"
    title = "Conflict"


class ReplayedRequest(Conflict):
    """
    The request's nonce was already used by this device.

    Townsquare choice: 409, not 401. The signature is valid, so the device did
    sign this request; what conflicts is the relay's record of nonces. A client
    that sees it after a retry knows its first attempt arrived.
    """

    code = "replayed-request"
    title = "The request's nonce was used before"


class AccountExists(Conflict):
    """
    An account with this key is already registered.
    """

    code = "account-exists"
    title = "The account is already registered"


class DeviceExists(Conflict):
    """
    A device with this key is already registered.
    """

    code = "device-exists"
    title = "The device is already registered"


class DeviceLimitReached(Conflict):
    """
    The account already has as many devices as the relay allows.
    """

    code = "device-limit-reached"
    title = "The account has too many devices"


class KeyPackagesExhausted(Conflict):
    """
    The device has neither a one-time nor a last-resort KeyPackage.
    """

    code = "key-packages-exhausted"
    title = "The device has no KeyPackage left"


class KeyPackageStoreFull(Conflict):
    """
    Storing the upload would take the device over its limit of one-time KeyPackages.
    """

    code = "key-package-store-full"
    title = "The device stores too many KeyPackages"


class DuplicateKeyPackage(Conflict):
    """
    A KeyPackage in the upload is already stored, or appears twice in it.
    """

    code = "duplicate-key-package"
    title = "The KeyPackage was uploaded before"


# -- 413 -------------------------------------------------------------------------------


class ContentTooLarge(ServerError):
    """
    The request is larger than the relay accepts.
    """

    status = 413
    code = "content-too-large"
    title = "Content too large"


class BodyTooLarge(ContentTooLarge):
    """
    The request body is longer than the relay's limit in bytes.
    """

    code = "body-too-large"
    title = "The request body is too large"


class TooManyItems(ContentTooLarge):
    """
    A list in the request has more items than its limit.
    """

    code = "too-many-items"
    title = "A list in the request is too long"


class FieldTooLarge(ContentTooLarge):
    """
    One value in the request is longer than its limit.
    """

    code = "field-too-large"
    title = "A value in the request is too large"


# -- 422 -------------------------------------------------------------------------------


class UnprocessableContent(ServerError):
    """
    The request is well-formed but what it carries is not valid.
    """

    status = 422
    code = "unprocessable-content"
    title = "Unprocessable content"


class InvalidCertificate(UnprocessableContent):
    """
    A device certificate does not verify, or is dated in the future.
    """

    code = "invalid-certificate"
    title = "The device certificate is not valid"


class InvalidKeyPackage(UnprocessableContent):
    """
    Bytes uploaded as a KeyPackage are not an MLSMessage carrying a valid KeyPackage.
    """

    code = "invalid-key-package"
    title = "The KeyPackage is not valid"


class KeyPackageNotOwned(InvalidKeyPackage):
    """
    A KeyPackage's leaf signature key is not the uploading device's key.
    """

    code = "key-package-not-owned"
    title = "The KeyPackage belongs to another device"


# -- 429, 500, 503 -------------------------------------------------------------------


class RateLimited(ServerError):
    """
    The device has used its quota for this action; it may retry after ``retry_after`` seconds.
    """

    status = 429
    code = "rate-limited"
    title = "Too many requests"

    def __init__(self, detail: str, *, retry_after: int) -> None:
        """
        :param detail: which quota was used up.
        :param retry_after: seconds until the quota refills (at least 1).
        """
        super().__init__(detail)
        self.retry_after = max(1, retry_after)


class StorageFailure(ServerError):
    """
    The database failed: a full disk, a corrupt file, a lock held too long.
    """

    status = 500
    code = "storage-failure"
    title = "The relay's store failed"


class SchemaError(StorageFailure):
    """
    The migrations cannot bring the schema up to date: files missing, or a newer schema.
    """

    code = "schema-error"
    title = "The relay's database schema is not one it knows"


class Unavailable(ServerError):
    """
    The relay cannot serve requests now (its store is not open).
    """

    status = 503
    code = "unavailable"
    title = "The relay is not ready"


def all_error_classes() -> tuple[type[ServerError], ...]:
    """
    :returns: :class:`ServerError` and every subclass, parents before children.
    """
    found: list[type[ServerError]] = []
    pending: list[type[ServerError]] = [ServerError]
    while pending:
        cls = pending.pop(0)
        found.append(cls)
        pending.extend(cls.__subclasses__())
    return tuple(found)

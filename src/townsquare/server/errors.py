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
    │   ├── InvalidRequest          400 invalid-request: fails the schema
    │   ├── MalformedMLS            400 malformed-mls: bytes that are not an MLSMessage
    │   ├── UnexpectedMessage       400 unexpected-message: another kind of MLSMessage
    │   ├── GroupMismatch           400 group-mismatch: the message names another group
    │   ├── MLSRejected             400 mls-rejected: an MLS check failed (carries mls_error)
    │   │   ├── InvalidCommit       400 invalid-commit
    │   │   ├── InvalidProposal     400 invalid-proposal
    │   │   └── InvalidGroupInfo    400 invalid-group-info
    │   ├── WelcomeMismatch         400 welcome-mismatch: recipients are not the added members
    │   └── InvalidNewGroup         400 invalid-new-group: not a one-member epoch-0 group
    ├── AuthenticationFailed        401 authentication-failed
    │   ├── MissingAuthentication   401 authentication-required: no signature headers
    │   ├── MalformedAuthentication 401 malformed-authentication
    │   ├── StaleTimestamp          401 stale-timestamp: over 300 s from the relay's clock
    │   ├── UnknownDevice           401 unknown-device: the signer is not registered
    │   ├── BadSignature            401 bad-signature
    │   └── SignerMismatch          401 signer-mismatch: registration signed by another key
    ├── Forbidden                   403 forbidden
    │   ├── NotAMember              403 not-a-member: the device is not in the group
    │   ├── SenderMismatch          403 sender-mismatch: signed by another member's leaf
    │   ├── NotAnAdmin              403 not-an-admin: the group's policy forbids it
    │   ├── ApprovalRequired        403 approval-required: ask to join instead
    │   ├── ExternalCommitRefused   403 external-commit-refused: neither invite nor resync
    │   ├── InviteExpired           403 invite-expired: past the invite's expiry
    │   ├── InviteUsedUp            403 invite-used-up: its uses are all taken
    │   └── InviteSignatureInvalid  403 invite-signature-invalid: not the invite key's
    ├── NotFound                    404 not-found: no such route
    │   ├── UnknownAccount          404 unknown-account
    │   ├── DeviceNotFound          404 device-not-found: a device named in the path
    │   ├── UnknownGroup            404 unknown-group
    │   ├── InviteNotFound          404 invite-not-found: none, or reset
    │   ├── JoinRequestNotFound     404 join-request-not-found: none waits from this device
    │   └── AttachmentNotFound      404 attachment-not-found: no blob has this hash
    ├── MethodNotAllowed            405 method-not-allowed
    ├── Conflict                    409 conflict
    │   ├── ReplayedRequest         409 replayed-request: the nonce was used before
    │   ├── AccountExists           409 account-exists
    │   ├── DeviceExists            409 device-exists
    │   ├── DeviceLimitReached      409 device-limit-reached
    │   ├── KeyPackagesExhausted    409 key-packages-exhausted: not even a last-resort one
    │   ├── KeyPackageStoreFull     409 key-package-store-full
    │   ├── DuplicateKeyPackage     409 duplicate-key-package
    │   ├── GroupExists             409 group-exists
    │   ├── InviteExists            409 invite-exists
    │   ├── JoinRequestsFull        409 join-requests-full: an admin must answer some first
    │   ├── ApprovalNotRequired     409 approval-not-required: join by external commit
    │   ├── CommitConflict          409 commit-conflict: carries the epoch's winning commit
    │   ├── StaleEpoch              409 stale-epoch: not the group's current epoch
    │   ├── MessageIdReused         409 message-id-reused: in another group or kind
    │   └── CursorAhead             409 cursor-ahead: past the end of the log
    ├── Gone                        410 gone
    │   ├── LogPruned               410 log-pruned: entries after the cursor were deleted
    │   └── AttachmentExpired       410 attachment-expired: past its retention time
    ├── ContentTooLarge             413 content-too-large
    │   ├── BodyTooLarge            413 body-too-large: the body, in bytes
    │   ├── TooManyItems            413 too-many-items: a list over its limit
    │   ├── FieldTooLarge           413 field-too-large: one value over its limit
    │   └── AttachmentTooLarge      413 attachment-too-large: a blob over its limit
    ├── UnprocessableContent        422 unprocessable-content
    │   ├── InvalidCertificate      422 invalid-certificate
    │   ├── InvalidKeyPackage       422 invalid-key-package
    │   │   └── KeyPackageNotOwned  422 key-package-not-owned: another device's leaf key
    │   └── UnknownMemberDevice     422 unknown-member-device: a leaf key not registered here
    ├── RateLimited                 429 rate-limited: carries Retry-After
    ├── StorageFailure              500 storage-failure: disk full, corrupt file
    │   └── SchemaError             500 schema-error: a migration missing, a newer schema
    └── Unavailable                 503 unavailable: the store is not open

Storage backends raise these too: they are values, not HTTP responses, and
know nothing of the framework. Some carry data beyond ``detail`` (the
winning commit of a ``commit-conflict``, the MLS error class of an
``mls-rejected``): :meth:`ServerError.extensions` gives it as RFC 9457
extension members, and ``extension_schema`` describes them for
``/openapi.json``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

from townsquare.auth import encode_b64u

__all__ = [
    "PROBLEM_TYPE_PREFIX",
    "AccountExists",
    "ApprovalNotRequired",
    "ApprovalRequired",
    "AttachmentExpired",
    "AttachmentNotFound",
    "AttachmentTooLarge",
    "AuthenticationFailed",
    "BadRequest",
    "BadSignature",
    "BodyTooLarge",
    "CommitConflict",
    "Conflict",
    "ContentTooLarge",
    "CursorAhead",
    "DeviceExists",
    "DeviceLimitReached",
    "DeviceNotFound",
    "DuplicateKeyPackage",
    "ExternalCommitRefused",
    "FieldTooLarge",
    "Forbidden",
    "Gone",
    "GroupExists",
    "GroupMismatch",
    "InvalidCertificate",
    "InvalidCommit",
    "InvalidGroupInfo",
    "InvalidKeyPackage",
    "InvalidNewGroup",
    "InvalidProposal",
    "InvalidRequest",
    "InviteExists",
    "InviteExpired",
    "InviteNotFound",
    "InviteSignatureInvalid",
    "InviteUsedUp",
    "JoinRequestNotFound",
    "JoinRequestsFull",
    "KeyPackageNotOwned",
    "KeyPackageStoreFull",
    "KeyPackagesExhausted",
    "LogPruned",
    "MLSRejected",
    "MalformedAuthentication",
    "MalformedMLS",
    "MessageIdReused",
    "MethodNotAllowed",
    "MissingAuthentication",
    "NotAMember",
    "NotAnAdmin",
    "NotFound",
    "RateLimited",
    "ReplayedRequest",
    "SchemaError",
    "SenderMismatch",
    "ServerError",
    "SignerMismatch",
    "StaleEpoch",
    "StaleTimestamp",
    "StorageFailure",
    "TooManyItems",
    "Unavailable",
    "UnexpectedMessage",
    "UnknownAccount",
    "UnknownDevice",
    "UnknownGroup",
    "UnknownMemberDevice",
    "UnprocessableContent",
    "WelcomeMismatch",
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
    #: JSON Schemas of the extension members this error adds to its problem document.
    extension_schema: ClassVar[Mapping[str, Mapping[str, object]]] = {}

    def __init__(self, detail: str) -> None:
        """
        :param detail: what went wrong this time, for a person reading the response.
        """
        super().__init__(detail)
        self.detail = detail

    def extensions(self) -> dict[str, object]:
        """
        :returns: the RFC 9457 extension members of this error (JSON values), by name.
        """
        return {}

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


class MalformedMLS(BadRequest):
    """
    Bytes sent as an MLS message do not decode as an ``MLSMessage`` (RFC 9420 §6, §2.1).
    """

    code = "malformed-mls"
    title = "The bytes are not an MLSMessage"


class UnexpectedMessage(BadRequest):
    """
    An ``MLSMessage`` of another kind than the field takes.

    For example a Welcome where a group message belongs, a handshake message
    sent as a PrivateMessage (the relay must check handshakes, so they travel
    as PublicMessage) or application data sent as a PublicMessage.
    """

    code = "unexpected-message"
    title = "The MLSMessage is not of the kind expected here"


class GroupMismatch(BadRequest):
    """
    The message's group id is not the group named in the path.
    """

    code = "group-mismatch"
    title = "The message is for another group"


_MLS_ERROR_SCHEMA: dict[str, Mapping[str, object]] = {
    "mls_error": {
        "type": "string",
        "description": "The class name of the MLS check that failed (townsquare.mls.errors).",
    },
    "rfc_section": {"type": "string", "description": "The rule enforced, e.g. RFC 9420 §12.4.2."},
}


class MLSRejected(BadRequest):
    """
    An MLS message failed a check of the relay's public view of the group.

    Carries ``mls_error``, the class name of the MLS error (``InvalidSignature``,
    ``WrongEpoch``, ``DuplicateKey``...), and ``rfc_section``, the rule it enforces.
    """

    code = "mls-rejected"
    title = "An MLS check failed"
    extension_schema = _MLS_ERROR_SCHEMA

    def __init__(self, detail: str, *, mls_error: str, rfc_section: str) -> None:
        """
        :param detail: what failed.
        :param mls_error: the MLS error's class name.
        :param rfc_section: the section it enforces.
        """
        super().__init__(detail)
        self.mls_error = mls_error
        self.rfc_section = rfc_section

    def extensions(self) -> dict[str, object]:
        """
        :returns: ``mls_error`` and ``rfc_section``.
        """
        return {"mls_error": self.mls_error, "rfc_section": self.rfc_section}


class InvalidCommit(MLSRejected):
    """
    A commit failed the public checks: signature, epoch, sender, proposals, leaf nodes, path.
    """

    code = "invalid-commit"
    title = "The commit is not valid"


class InvalidProposal(MLSRejected):
    """
    A proposal failed the public checks (RFC 9420 §12.1).
    """

    code = "invalid-proposal"
    title = "The proposal is not valid"


class InvalidGroupInfo(MLSRejected):
    """
    A GroupInfo is not valid, or does not describe the epoch its commit creates (§12.4.3).
    """

    code = "invalid-group-info"
    title = "The GroupInfo is not valid for this epoch"


class WelcomeMismatch(BadRequest):
    """
    A commit's Welcome is missing, superfluous, or not addressed to exactly its added members.
    """

    code = "welcome-mismatch"
    title = "The Welcome does not match the commit's added members"


class InvalidNewGroup(BadRequest):
    """
    A new group's GroupInfo is valid MLS but not a group the relay creates.

    Townsquare: a new group is at epoch 0, of cipher suite 1, and has exactly
    one member, the creating device (its leaf's signature key).
    """

    code = "invalid-new-group"
    title = "The GroupInfo is not a new group of this device"


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


# -- 403 -------------------------------------------------------------------------------


class Forbidden(ServerError):
    """
    The device is authenticated but may not do this.
    """

    status = 403
    code = "forbidden"
    title = "Forbidden"


class NotAMember(Forbidden):
    """
    The device is not a member of the group (or no longer is).
    """

    code = "not-a-member"
    title = "The device is not a member of the group"


class SenderMismatch(Forbidden):
    """
    A handshake message is signed by another member's leaf than the posting device's.

    Townsquare: each device posts its own handshake messages, so that the log's
    sender is the device that signed.
    """

    code = "sender-mismatch"
    title = "The message's sender is not the posting device"


class NotAnAdmin(Forbidden):
    """
    The group's policy (its admin keys and flags, a GroupContext extension) does not let
    this member make this change: add, remove another member, or change the settings.
    """

    code = "not-an-admin"
    title = "Only an admin of the group may do this"


class ExternalCommitRefused(Forbidden):
    """
    An external commit (RFC 9420 §12.4.3.2) that is neither signed by an invite key nor a
    member's resync of its own leaf, or that removes another member.
    """

    code = "external-commit-refused"
    title = "The external commit is not accepted"


class InviteExpired(Forbidden):
    """
    The invite's expiry has passed.
    """

    code = "invite-expired"
    title = "The invite has expired"


class InviteUsedUp(Forbidden):
    """
    The invite has been used as many times as it allows.
    """

    code = "invite-used-up"
    title = "The invite is used up"


class InviteSignatureInvalid(Forbidden):
    """
    The external commit's invite signature does not verify with the invite key.
    """

    code = "invite-signature-invalid"
    title = "The invite signature is invalid"


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


class UnknownGroup(NotFound):
    """
    No group has the id named in the path.
    """

    code = "unknown-group"
    title = "No such group"


class InviteNotFound(NotFound):
    """
    No current invite of the group has this key (never created, or reset).
    """

    code = "invite-not-found"
    title = "No such invite"


class JoinRequestNotFound(NotFound):
    """
    No request to join waits from this device: never made, withdrawn, denied, or answered
    by adding the device.
    """

    code = "join-request-not-found"
    title = "No such join request"


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


class GroupExists(Conflict):
    """
    A group with this id exists.
    """

    code = "group-exists"
    title = "The group exists"


class JoinRequestsFull(Conflict):
    """
    The group has as many join requests waiting as the relay keeps; an admin must answer some.
    """

    code = "join-requests-full"
    title = "Too many join requests are waiting"


class ApprovalNotRequired(Conflict):
    """
    A join request to a group that does not require approval: join by external commit.
    """

    code = "approval-not-required"
    title = "The group does not require approval; join by external commit"


class ApprovalRequired(Forbidden):
    """
    An external commit by invite to a group that requires an admin's approval: ask instead.
    """

    code = "approval-required"
    title = "The group requires an admin's approval; send a join request"


class InviteExists(Conflict):
    """
    An invite with this key exists.
    """

    code = "invite-exists"
    title = "The invite exists"


class CommitConflict(Conflict):
    """
    Another commit for this epoch was accepted first; it is carried as ``winner``.

    RFC 9420 §14 leaves the choice to the delivery service. Townsquare choice: the
    first valid commit stored for an epoch wins; the loser processes the winner
    (and every commit after it) and retries.
    """

    code = "commit-conflict"
    title = "Another commit for this epoch was accepted first"
    extension_schema: ClassVar[Mapping[str, Mapping[str, object]]] = {
        "epoch": {"type": "integer", "minimum": 0, "description": "The group's current epoch."},
        "winner": {
            "type": "object",
            "description": "The commit that won the epoch.",
            "properties": {
                "seq": {"type": "integer", "minimum": 1},
                "epoch": {"type": "integer", "minimum": 0},
                "message": {"type": "string", "contentEncoding": "base64url"},
            },
            "required": ["seq", "epoch", "message"],
        },
    }

    def __init__(
        self, detail: str, *, epoch: int, winner_seq: int, winner_epoch: int, winner: bytes
    ) -> None:
        """
        :param detail: what happened.
        :param epoch: the group's current epoch.
        :param winner_seq: the winning commit's sequence number.
        :param winner_epoch: the epoch it committed (the one the refused commit was for).
        :param winner: the winning commit, an encoded MLSMessage.
        """
        super().__init__(detail)
        self.epoch = epoch
        self.winner_seq = winner_seq
        self.winner_epoch = winner_epoch
        self.winner = winner

    def extensions(self) -> dict[str, object]:
        """
        :returns: ``epoch`` and ``winner`` (``seq``, ``epoch``, ``message``).
        """
        return {
            "epoch": self.epoch,
            "winner": {
                "seq": self.winner_seq,
                "epoch": self.winner_epoch,
                "message": encode_b64u(self.winner),
            },
        }


class StaleEpoch(Conflict):
    """
    The message is not for the group's current epoch, given as ``epoch``.

    The client catches up (fetches and processes the commits it missed) and
    sends again: an application message re-encrypted under the same client
    message id.
    """

    code = "stale-epoch"
    title = "The message is not for the group's current epoch"
    extension_schema: ClassVar[Mapping[str, Mapping[str, object]]] = {
        "epoch": {"type": "integer", "minimum": 0, "description": "The group's current epoch."},
    }

    def __init__(self, detail: str, *, epoch: int) -> None:
        """
        :param detail: what happened.
        :param epoch: the group's current epoch.
        """
        super().__init__(detail)
        self.epoch = epoch

    def extensions(self) -> dict[str, object]:
        """
        :returns: ``epoch``.
        """
        return {"epoch": self.epoch}


class MessageIdReused(Conflict):
    """
    The device used this client message id before, for a message of another group or kind.
    """

    code = "message-id-reused"
    title = "The client message id was used for another message"


class CursorAhead(Conflict):
    """
    A cursor acknowledges a sequence number past the end of the group's log.
    """

    code = "cursor-ahead"
    title = "The cursor is past the end of the log"


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


class UnknownMemberDevice(UnprocessableContent):
    """
    A member's leaf signature key is not a device registered on this relay.

    Townsquare: a leaf's signature key is its device's key, and the relay
    delivers to registered devices only, so it admits no leaf it could not
    deliver to.
    """

    code = "unknown-member-device"
    title = "A member is not a device registered here"


# -- 429, 500, 503 -------------------------------------------------------------------


class RateLimited(ServerError):
    """
    The device has used its quota for this action; it may retry after ``retry_after`` seconds.
    """

    status = 429
    code = "rate-limited"
    title = "Too many requests"
    extension_schema: ClassVar[Mapping[str, Mapping[str, object]]] = {
        "retry_after": {"type": "integer", "minimum": 1},
    }

    def __init__(self, detail: str, *, retry_after: int) -> None:
        """
        :param detail: which quota was used up.
        :param retry_after: seconds until the quota refills (at least 1).
        """
        super().__init__(detail)
        self.retry_after = max(1, retry_after)

    def extensions(self) -> dict[str, object]:
        """
        :returns: ``retry_after``.
        """
        return {"retry_after": self.retry_after}


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


# -- Retention and attachments ---------------------------------------------------------


class Gone(ServerError):
    """
    What was asked for existed but the relay no longer keeps it (retention).
    """

    status = 410
    code = "gone"
    title = "Gone"


class LogPruned(Gone):
    """
    Log entries after the device's ``after`` were deleted; it resyncs from ``first_seq``.

    Townsquare: the relay deletes a log entry once every member device has
    acknowledged it, or once it is older than the retention time. A device asking
    for entries from before ``first_seq`` cannot be served them; it rejoins the
    current epoch (an external commit) and reads on from there.
    """

    code = "log-pruned"
    title = "The log was pruned past the device's cursor"
    extension_schema: ClassVar[Mapping[str, Mapping[str, object]]] = {
        "first_seq": {
            "type": "integer",
            "minimum": 1,
            "description": "The first sequence number the relay still serves.",
        },
    }

    def __init__(self, detail: str, *, first_seq: int) -> None:
        """
        :param detail: what happened.
        :param first_seq: the first sequence number the relay still serves.
        """
        super().__init__(detail)
        self.first_seq = first_seq

    def extensions(self) -> dict[str, object]:
        """
        :returns: ``first_seq``.
        """
        return {"first_seq": self.first_seq}


class AttachmentExpired(Gone):
    """
    The attachment was stored, but its retention time has passed and its bytes are deleted.
    """

    code = "attachment-expired"
    title = "The attachment has expired"


class AttachmentNotFound(NotFound):
    """
    No attachment has this hash (never uploaded, or expired long ago).
    """

    code = "attachment-not-found"
    title = "No such attachment"


class AttachmentTooLarge(ContentTooLarge):
    """
    An uploaded attachment is longer than the relay's limit in bytes.
    """

    code = "attachment-too-large"
    title = "The attachment is too large"


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

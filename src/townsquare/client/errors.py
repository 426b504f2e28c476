"""
Errors raised by the client SDK (``townsquare.client``).

Every error the SDK raises derives from :class:`ClientError`. Each subclass
names one cause; catching a parent catches its whole branch::

    ClientError
    ├── UsageError                 the application misused the SDK (a bug in the caller)
    │   ├── NotInitialized         no device yet: call ``initialize`` first
    │   ├── AlreadyInitialized     the home already holds a device
    │   ├── UnknownGroup           no group of that id on this device
    │   ├── GroupClosed            we left or were removed: the group is read-only
    │   ├── NotAGroupMember        the device named is not a member of the group
    │   └── InvalidMessage         a wire message that cannot be sent (bad field values)
    ├── ProtocolError              the relay answered something the SDK cannot use
    ├── StoreError                 the device's own store failed
    │   ├── StoreFailed            a write failed; the in-memory state was reloaded from disk
    │   └── StoreCorrupt           the store's records do not decode or do not fit together
    ├── ConnectionFailed           (driver) the relay could not be reached in time
    └── AttachmentError            a downloaded attachment cannot be used
        ├── AttachmentSizeMismatch     its length is not the one its message gives
        ├── AttachmentHashMismatch     its SHA-256 is not the one its message gives
        └── AttachmentDecryptionFailed its key does not open it (AEAD tag)

``InvalidAttachmentKey`` (a ``UsageError``): a key or hash of the wrong length.

The core never raises for a network failure or a relay's refusal: those
become retries (with backoff) or events (``SendFailed``, ``CommitRejected``,
``RelayFailure``…). Messages carry no secrets: ids appear as short hex prefixes.
"""

from __future__ import annotations

__all__ = [
    "AlreadyInitialized",
    "AttachmentDecryptionFailed",
    "AttachmentError",
    "AttachmentHashMismatch",
    "AttachmentSizeMismatch",
    "ClientError",
    "ConnectionFailed",
    "GroupClosed",
    "InvalidAttachmentKey",
    "InvalidInvite",
    "InvalidMessage",
    "NotAGroupMember",
    "NotAnAdmin",
    "NotInitialized",
    "ProtocolError",
    "StoreCorrupt",
    "StoreError",
    "StoreFailed",
    "UnknownGroup",
    "UsageError",
]


class ClientError(Exception):
    """
    The root of every error raised by ``townsquare.client``.
    """


class UsageError(ClientError):
    """
    The application called the SDK in a way it does not support.
    """


class NotAnAdmin(UsageError):
    """
    The group's policy lets only its admins do this (add, remove others, invite, change settings).
    """


class InvalidInvite(UsageError):
    """
    An invite link that does not parse, or names another relay than this device's.
    """


class NotInitialized(UsageError):
    """
    The home holds no device yet; create one with ``initialize``.
    """


class AlreadyInitialized(UsageError):
    """
    The home already holds a device; a device is created once.
    """


class UnknownGroup(UsageError):
    """
    This device holds no group of that id.
    """


class GroupClosed(UsageError):
    """
    This device left the group or was removed from it; the group can be read, not written.
    """


class NotAGroupMember(UsageError):
    """
    The device named is not a member of the group.
    """


class InvalidMessage(UsageError):
    """
    The wire message cannot be built or sent (a field breaks a rule of ``townsquare.wire``).
    """


class ProtocolError(ClientError):
    """
    The relay answered with something the SDK cannot use (malformed JSON, missing fields).
    """


class StoreError(ClientError):
    """
    The device's own store failed.
    """


class StoreFailed(StoreError):
    """
    Writing a batch failed; nothing of it was stored, and the group was reloaded from disk.
    """


class StoreCorrupt(StoreError):
    """
    The store's records do not decode, or do not fit together.
    """


class ConnectionFailed(ClientError):
    """
    The relay could not be reached, or did not answer in time (raised by the driver).
    """


class InvalidAttachmentKey(UsageError):
    """
    An attachment key or hash of the wrong length was given (32 bytes each).
    """


class AttachmentError(ClientError):
    """
    A downloaded attachment cannot be used: its bytes are not the ones its message names.

    Nothing is shown from it. The relay (or the network) changed or swapped the blob,
    or the sender made a mistake; the message itself is still authentic.
    """


class AttachmentSizeMismatch(AttachmentError):
    """
    The blob's length is not the ``size`` given in its message.
    """


class AttachmentHashMismatch(AttachmentError):
    """
    The blob's SHA-256 is not the ``sha256`` given in its message.
    """


class AttachmentDecryptionFailed(AttachmentError):
    """
    The blob's authentication tag does not verify under the key in its message.
    """

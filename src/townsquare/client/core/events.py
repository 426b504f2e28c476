"""
What the client core tells its driver and the application: one frozen dataclass per event.

Events are notifications, not the record: everything they announce is
already in the device's store when the event is queued (events are queued
only after the batch that made them true was written). An application that
crashes between the two loses an event, never a message; it reads the
store (``Client.messages``, ``Client.members``) when it starts.

Drivers and applications ``match`` on the classes below; none of them
carries secrets. Ids are bytes (group ids, device keys, wire message ids).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from townsquare.client.core.messages import StoredMessage

__all__ = [
    "AddFailed",
    "CommitAccepted",
    "CommitRejected",
    "DeviceRegistered",
    "EpochAdvanced",
    "Event",
    "GroupCreated",
    "GroupJoined",
    "GroupResynced",
    "InviteFailed",
    "InviteReady",
    "JoinFailed",
    "JoinRequested",
    "KeyPackagesUploaded",
    "MemberJoined",
    "MemberLeft",
    "MessageReceived",
    "MessageSent",
    "MessageUndecryptable",
    "ProfileChanged",
    "RelayFailure",
    "RemovedFromGroup",
    "ResyncRequired",
    "SendFailed",
    "TitleChanged",
]


@dataclass(frozen=True, slots=True)
class DeviceRegistered:
    """
    The relay registered this device's account (``POST /v1/accounts`` answered 201 or exists).
    """

    device_key: bytes


@dataclass(frozen=True, slots=True)
class KeyPackagesUploaded:
    """
    The relay stored a batch of this device's KeyPackages; its counts after the upload.
    """

    one_time: int
    last_resort: bool


@dataclass(frozen=True, slots=True)
class GroupCreated:
    """
    The relay accepted a group this device created; messages to it now flow.
    """

    group_id: bytes


@dataclass(frozen=True, slots=True)
class GroupJoined:
    """
    This device joined a group, from a Welcome (RFC 9420 §12.4.3.1) or by an invite link's
    external commit (§12.4.3.2).
    """

    group_id: bytes
    epoch: int


@dataclass(frozen=True, slots=True)
class JoinFailed:
    """
    A join by invite link ended without joining (the join record is gone).

    ``code`` is the relay's problem code when it refused the link for good (e.g.
    ``invite-not-found`` for a reset link, ``invite-expired``, ``invite-used-up``), or
    :attr:`NOT_APPROVED` (``"not-approved"``) when a join request to a group that requires
    approval no longer waits and no Welcome came: an admin declined it, or it was
    withdrawn or expired.
    """

    #: The code of a join request that ended without an admin adding us.
    NOT_APPROVED: ClassVar[str] = "not-approved"

    group_id: bytes
    code: str


@dataclass(frozen=True, slots=True)
class JoinRequested:
    """
    The group requires an admin's approval: the relay holds our request; an admin's device
    adds us (a :class:`GroupJoined` follows the Welcome).
    """

    group_id: bytes


@dataclass(frozen=True, slots=True)
class GroupResynced:
    """
    This device rejoined a group it could not follow, by an external commit replacing its
    own leaf (RFC 9420 §12.4.3.2); messages it had stay, those in between are lost to it.
    """

    group_id: bytes
    epoch: int


@dataclass(frozen=True, slots=True)
class InviteReady:
    """
    The relay holds an invite this device made: its link now works.
    """

    group_id: bytes
    invite_key: bytes


@dataclass(frozen=True, slots=True)
class InviteFailed:
    """
    The relay refused or revoked an invite this device holds (``code``: its problem code).
    """

    group_id: bytes
    invite_key: bytes
    code: str


@dataclass(frozen=True, slots=True)
class MessageReceived:
    """
    A member's application message was decrypted, decoded and stored (exactly once).
    """

    group_id: bytes
    message: StoredMessage


@dataclass(frozen=True, slots=True)
class MessageSent:
    """
    The relay acknowledged one of our messages: it left the outbox and has its place ``seq``.
    """

    group_id: bytes
    message_id: bytes
    seq: int


@dataclass(frozen=True, slots=True)
class SendFailed:
    """
    A message left the outbox without being delivered: the group closed, or the relay refused it.

    ``code`` is the relay's problem code when it refused the message, else ``""``.
    """

    group_id: bytes
    message_id: bytes
    reason: str
    code: str = ""


@dataclass(frozen=True, slots=True)
class MessageUndecryptable:
    """
    A log entry could not be read (not for our epochs, damaged, or not a Townsquare message).

    The cursor moved past it; nothing else changed.
    """

    group_id: bytes
    seq: int
    reason: str


@dataclass(frozen=True, slots=True)
class MemberJoined:
    """
    A commit added a member (a device, named by its key).
    """

    group_id: bytes
    device_key: bytes
    leaf_index: int
    epoch: int


@dataclass(frozen=True, slots=True)
class MemberLeft:
    """
    A commit removed a member (it left, or was removed).
    """

    group_id: bytes
    device_key: bytes
    leaf_index: int
    epoch: int


@dataclass(frozen=True, slots=True)
class ProfileChanged:
    """
    A member's signed Profile message set its display name in this group.
    """

    group_id: bytes
    device_key: bytes
    display_name: str


@dataclass(frozen=True, slots=True)
class TitleChanged:
    """
    A member's signed GroupTitle message set the group's title.
    """

    group_id: bytes
    title: str


@dataclass(frozen=True, slots=True)
class EpochAdvanced:
    """
    A commit (ours or another member's) was merged: the group is at ``epoch``.
    """

    group_id: bytes
    epoch: int


@dataclass(frozen=True, slots=True)
class CommitAccepted:
    """
    Our own commit won its epoch and was merged.
    """

    group_id: bytes
    epoch: int


@dataclass(frozen=True, slots=True)
class CommitRejected:
    """
    Our commit was dropped: the relay refused it, or what it would do is no longer possible.

    A commit that merely lost a race is not rejected: it is rebuilt and sent again.
    ``code`` is the relay's problem code when the relay refused it, else ``""``.
    """

    group_id: bytes
    reason: str
    code: str = ""


@dataclass(frozen=True, slots=True)
class AddFailed:
    """
    Adding an account's devices failed before a commit was made (no KeyPackage to claim).
    """

    group_id: bytes
    account_key: bytes
    reason: str


@dataclass(frozen=True, slots=True)
class RemovedFromGroup:
    """
    A commit removed this device from the group; ``left`` is true if we had asked to leave.
    """

    group_id: bytes
    epoch: int
    left: bool


@dataclass(frozen=True, slots=True)
class ResyncRequired:
    """
    A commit that won its epoch cannot be processed here; the group waits for a resync.

    RFC 9420 §12.4.3.2: such a member rejoins by an external commit replacing
    its own leaf. Until then the cursor stays before ``seq``.
    """

    group_id: bytes
    seq: int
    reason: str


@dataclass(frozen=True, slots=True)
class RelayFailure:
    """
    A request failed in a way retrying will not fix (a relay error the core cannot act on).
    """

    path: str
    status: int
    code: str


Event = (
    AddFailed
    | CommitAccepted
    | CommitRejected
    | DeviceRegistered
    | EpochAdvanced
    | GroupCreated
    | GroupJoined
    | GroupResynced
    | InviteFailed
    | InviteReady
    | JoinFailed
    | JoinRequested
    | KeyPackagesUploaded
    | MemberJoined
    | MemberLeft
    | MessageReceived
    | MessageSent
    | MessageUndecryptable
    | ProfileChanged
    | RelayFailure
    | RemovedFromGroup
    | ResyncRequired
    | SendFailed
    | TitleChanged
)
"""Every event the core queues."""

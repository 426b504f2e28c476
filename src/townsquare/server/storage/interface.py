"""
The relay's store: a ``typing.Protocol`` that every backend implements, and its records.

Each method is one database transaction: it happens entirely or not at all,
and every check that decides it (does the account exist, is the nonce new, is
a one-time KeyPackage left) is made inside that transaction, never in process
memory, so that several relay processes on one database agree.
``tests/unit/server/test_storage_contract.py`` is the contract every backend
passes.

Keys are raw bytes (32-byte Ed25519 public keys); times are whole Unix
seconds, given by the caller so that tests control the clock.

Delivery: per group, a record (epoch, current GroupInfo and ratchet tree),
its member devices (by leaf index), an append-only log numbered from 1, the
Welcomes waiting for new devices, and each device's cursor. Appending
decides the sequence number, the epoch check and exactly-once (a device's
client message id) inside one transaction; a commit's whole effect (log row,
next epoch, GroupInfo and tree, members, Welcome) is one transaction too. An
append may also take the request's nonce (:class:`NonceUse`) and the sender's
post quota (:class:`QuotaCharge`) into that transaction, so that posting an
application message costs the relay one transaction, not five.

Retention: :meth:`Storage.apply_retention` deletes the log entries every
member device has acknowledged and everything older than the retention time;
a fetch from before what is left raises ``LogPruned``. Attachments are opaque
blobs stored once per SHA-256, kept until their ``expires_at``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

from townsquare.auth import DeviceCertificate

__all__ = [
    "AccountClaim",
    "Appended",
    "AttachmentRecord",
    "ClaimedKeyPackage",
    "Device",
    "GroupMember",
    "GroupRecord",
    "GroupSnapshot",
    "InviteRecord",
    "JoinRequest",
    "KeyPackageCount",
    "LogEntry",
    "LogPage",
    "Membership",
    "MessageKind",
    "NewAttachment",
    "NewCommit",
    "NewGroup",
    "NewInvite",
    "NewMessage",
    "NonceUse",
    "PendingWelcome",
    "QuotaCharge",
    "RetentionReport",
    "Storage",
    "StoredAttachment",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class Device:
    """
    A registered device: its certificate, and when the relay registered it.
    """

    certificate: DeviceCertificate
    registered_at: int

    @property
    def device_key(self) -> bytes:
        """
        The device's Ed25519 public key, which is also its id.
        """
        return self.certificate.device_key

    @property
    def account_key(self) -> bytes:
        """
        The key of the account that certified the device.
        """
        return self.certificate.account_key


@dataclass(frozen=True, slots=True, kw_only=True)
class NonceUse:
    """
    A signed request's nonce, to record in the transaction that does the request's work.
    """

    #: The signing device.
    device_key: bytes
    nonce: bytes
    #: When the record may be deleted: once a request with this nonce would be refused
    #: as stale anyway.
    expires_at: int


@dataclass(frozen=True, slots=True, kw_only=True)
class QuotaCharge:
    """
    Uses of a rate-limited action, to check and count in the transaction that does it.

    The fields are :meth:`Storage.consume_quota`'s arguments.
    """

    #: Who acts (a device key).
    subject: bytes
    #: What is limited (``"post-message"``).
    action: str
    now: int
    window_seconds: int
    #: The most uses in one window.
    limit: int
    #: How many uses this is; at least 1.
    amount: int = 1


@dataclass(frozen=True, slots=True, kw_only=True)
class KeyPackageCount:
    """
    How many KeyPackages a device has on the relay.
    """

    one_time: int
    last_resort: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class ClaimedKeyPackage:
    """
    A KeyPackage handed out by a claim.
    """

    device_key: bytes
    key_package: bytes
    #: True when this is the device's last-resort package (handed out again, not consumed).
    last_resort: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class AccountClaim:
    """
    The result of claiming a KeyPackage for every device of an account.
    """

    account_key: bytes
    claimed: tuple[ClaimedKeyPackage, ...]
    #: The devices that had no KeyPackage at all, not even a last-resort one.
    exhausted: tuple[bytes, ...]


class MessageKind(StrEnum):
    """
    What a log entry holds, as the relay read it from the MLS framing (RFC 9420 §6).
    """

    #: A PublicMessage carrying a Commit; at most one per epoch.
    COMMIT = "commit"
    #: A PublicMessage carrying a Proposal.
    PROPOSAL = "proposal"
    #: A PrivateMessage carrying application data.
    APPLICATION = "application"


@dataclass(frozen=True, slots=True)
class GroupMember:
    """
    A member device of a group: its key, which is its leaf's signature key, and that leaf.
    """

    device_key: bytes
    leaf_index: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Membership:
    """
    A device's membership of a group, as stored.
    """

    device_key: bytes
    leaf_index: int
    #: The sequence number of the commit that added the device (0 for the creator);
    #: it is served nothing at or before this.
    joined_seq: int


@dataclass(frozen=True, slots=True, kw_only=True)
class NewGroup:
    """
    A group to create, at epoch 0.
    """

    group_id: bytes
    #: The encoded MLSMessage(GroupInfo) of epoch 0, as uploaded.
    group_info: bytes
    #: The encoded ratchet tree of epoch 0.
    ratchet_tree: bytes
    members: tuple[GroupMember, ...]
    created_at: int


@dataclass(frozen=True, slots=True, kw_only=True)
class GroupRecord:
    """
    A group as the relay keeps it.
    """

    group_id: bytes
    epoch: int
    #: The encoded MLSMessage(GroupInfo) of the current epoch, as its committer uploaded it.
    group_info: bytes
    #: The encoded ratchet tree of the current epoch, as the relay computed it.
    ratchet_tree: bytes
    #: The sequence number of the last log entry (0 while the log is empty).
    last_seq: int
    created_at: int


@dataclass(frozen=True, slots=True, kw_only=True)
class LogEntry:
    """
    One entry of a group's log.
    """

    group_id: bytes
    seq: int
    #: The epoch the message was sent in (a commit's is the epoch it ends).
    epoch: int
    kind: MessageKind
    sender_device: bytes
    client_message_id: bytes
    #: The encoded MLSMessage, as received.
    message: bytes
    received_at: int


@dataclass(frozen=True, slots=True, kw_only=True)
class GroupSnapshot:
    """
    What the delivery service needs to check a handshake message, read in one snapshot.
    """

    group: GroupRecord
    #: The asking device's membership, or ``None`` if it is not a member.
    member: Membership | None
    #: The current epoch's proposals after the sequence number asked for, in order.
    proposals: tuple[LogEntry, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class NewMessage:
    """
    An application message or a proposal to append to a group's log.
    """

    group_id: bytes
    #: The epoch the message is for; it must be the group's current epoch.
    epoch: int
    kind: MessageKind
    sender_device: bytes
    client_message_id: bytes
    message: bytes
    received_at: int


@dataclass(frozen=True, slots=True, kw_only=True)
class NewCommit:
    """
    A checked commit and everything that changes with it.
    """

    group_id: bytes
    #: The epoch the commit ends; it must be the group's current epoch.
    epoch: int
    sender_device: bytes
    client_message_id: bytes
    message: bytes
    received_at: int
    #: The encoded MLSMessage(GroupInfo) of the new epoch.
    group_info: bytes
    #: The encoded ratchet tree of the new epoch.
    ratchet_tree: bytes
    #: Every member device of the new epoch.
    members: tuple[GroupMember, ...]
    #: The encoded MLSMessage(Welcome) for the added devices, if the commit adds any.
    welcome: bytes | None = None
    #: The devices the Welcome is for.
    welcome_recipients: tuple[bytes, ...] = ()
    #: For an external commit that joins by invite: the invite's key. The sender need
    #: not be a member; the invite must be the group's, unexpired at ``received_at`` and
    #: not used up, and its use count goes up by one with the commit.
    invite_key: bytes | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class NewInvite:
    """
    An invite to create for a group.
    """

    group_id: bytes
    #: The invite's Ed25519 public key (derived from the link's secret); also its id.
    invite_key: bytes
    #: The member device creating it.
    created_by: bytes
    #: nonce || ChaCha20-Poly1305 ciphertext of the GroupInfo (and tree), opaque here.
    sealed_group_info: bytes
    expires_at: int
    max_uses: int
    created_at: int


@dataclass(frozen=True, slots=True, kw_only=True)
class JoinRequest:
    """
    A newcomer's request to join a group that requires an admin's approval.
    """

    group_id: bytes
    #: The asking device (its KeyPackage's leaf key).
    device_key: bytes
    #: The invite whose key signed the request.
    invite_key: bytes
    #: The encoded MLSMessage(KeyPackage) an admin adds.
    key_package: bytes
    #: nonce || ChaCha20-Poly1305 of the newcomer's note, under the invite's key; opaque here.
    sealed_note: bytes
    created_at: int


@dataclass(frozen=True, slots=True, kw_only=True)
class InviteRecord:
    """
    An invite as the relay keeps it.
    """

    group_id: bytes
    invite_key: bytes
    created_by: bytes
    sealed_group_info: bytes
    expires_at: int
    max_uses: int
    uses: int
    created_at: int
    updated_at: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Appended:
    """
    The result of an append: the entry, and whether it was stored before (a retry).
    """

    entry: LogEntry
    #: True when the device had already sent this client message id: ``entry`` is the
    #: original, and nothing was stored.
    duplicate: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class LogPage:
    """
    A run of a group's log, and where the log ends.
    """

    group_id: bytes
    epoch: int
    #: The sequence number of the group's last entry.
    last_seq: int
    entries: tuple[LogEntry, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class PendingWelcome:
    """
    A Welcome waiting for one device.
    """

    group_id: bytes
    #: The sequence number of the commit that added the device.
    commit_seq: int
    #: The epoch the Welcome joins.
    epoch: int
    #: The encoded MLSMessage(Welcome).
    welcome: bytes
    #: The ratchet tree of that epoch, for a Welcome whose GroupInfo does not carry it.
    ratchet_tree: bytes
    created_at: int


@dataclass(frozen=True, slots=True, kw_only=True)
class NewAttachment:
    """
    An encrypted blob to store under its SHA-256.
    """

    #: SHA-256 of ``content``: the blob's address.
    sha256: bytes
    #: The blob, opaque to the relay (the device encrypted it).
    content: bytes = field(repr=False)
    #: The uploading device.
    uploaded_by: bytes
    uploaded_at: int
    #: When the blob may be deleted (``uploaded_at`` plus the retention time).
    expires_at: int


@dataclass(frozen=True, slots=True, kw_only=True)
class AttachmentRecord:
    """
    An attachment as the relay keeps it, without its bytes.
    """

    sha256: bytes
    size: int
    #: The device that first uploaded it.
    uploaded_by: bytes
    uploaded_at: int
    expires_at: int


@dataclass(frozen=True, slots=True, kw_only=True)
class StoredAttachment:
    """
    The result of an upload: the attachment, and whether it was stored before.
    """

    record: AttachmentRecord
    #: True when the same blob was already stored and unexpired: nothing new was
    #: stored, and its expiry moved to the later of the two.
    duplicate: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class RetentionReport:
    """
    What one round of retention deleted.
    """

    log_entries: int
    welcomes: int
    #: Blobs whose bytes were deleted (their rows stay a while as tombstones).
    attachments: int
    #: Tombstones of expired blobs deleted.
    tombstones: int

    @property
    def total(self) -> int:
        """
        Everything deleted, counted together.
        """
        return self.log_entries + self.welcomes + self.attachments + self.tombstones


class Storage(Protocol):
    """
    Where the relay keeps accounts, devices, nonces, quotas, KeyPackages and group logs.
    """

    async def open(self) -> None:
        """
        Connect and bring the schema up to date by applying every pending migration.

        :raises StorageFailure: if the database cannot be opened, or was written by a
            newer relay (``SchemaTooNew``).
        """
        ...

    async def close(self) -> None:
        """
        Release every connection; calling it twice, or before :meth:`open`, does nothing.
        """
        ...

    async def check_ready(self) -> None:
        """
        Check that the store answers queries.

        :raises Unavailable: if it is not open.
        :raises StorageFailure: if the database fails.
        """
        ...

    # -- Accounts and devices ---------------------------------------------------------

    async def create_account(self, device: Device) -> None:
        """
        Register an account (``device.account_key``) together with its first device.

        :param device: the first device; its ``registered_at`` is also the account's.
        :raises AccountExists: if the account is registered.
        :raises DeviceExists: if the device is registered (under any account).
        """
        ...

    async def add_device(self, device: Device, *, max_devices: int) -> None:
        """
        Register another device of an existing account.

        :param device: the device.
        :param max_devices: the most devices the account may have, this one included.
        :raises UnknownAccount: if the account is not registered.
        :raises DeviceExists: if the device is registered (under any account).
        :raises DeviceLimitReached: if the account already has ``max_devices`` devices.
        """
        ...

    async def get_device(self, device_key: bytes) -> Device | None:
        """
        :returns: the device with this key, or ``None`` if there is none.
        """
        ...

    async def list_devices(self, account_key: bytes) -> tuple[Device, ...]:
        """
        List an account's devices in the order they were registered.

        :param account_key: the account.
        :returns: its devices (at least one).
        :raises UnknownAccount: if the account is not registered.
        """
        ...

    # -- Request nonces and quotas ----------------------------------------------------

    async def use_nonce(self, device_key: bytes, nonce: bytes, *, expires_at: int) -> None:
        """
        Record that a device used a request nonce, refusing one it used before.

        :param device_key: the signing device.
        :param nonce: the request's nonce.
        :param expires_at: when the record may be deleted: once a request with this nonce
            would be refused as stale anyway.
        :raises ReplayedRequest: if this device already used this nonce (and the record
            has not been purged).
        """
        ...

    async def consume_quota(
        self,
        subject: bytes,
        action: str,
        *,
        now: int,
        window_seconds: int,
        limit: int,
        amount: int = 1,
    ) -> None:
        """
        Count uses of a rate-limited action in a fixed window, refusing them over the limit.

        A refused use is not counted.

        :param subject: who acts (a device key).
        :param action: what is limited (``"claim"``).
        :param now: the current time.
        :param window_seconds: the length of a window; a new one starts at the first use
            after the previous one ended.
        :param limit: the most uses in one window.
        :param amount: how many uses this is (bytes, for a byte quota); at least 1.
        :raises RateLimited: if the window has fewer than ``amount`` uses left;
            ``retry_after`` says when it ends.
        :raises ValueError: if ``amount`` is below 1.
        """
        ...

    async def check_quota(
        self,
        subject: bytes,
        action: str,
        *,
        now: int,
        window_seconds: int,
        limit: int,
        amount: int = 1,
    ) -> None:
        """
        Check, without counting, that :meth:`consume_quota` would accept ``amount`` uses now.

        For actions that count only once they have succeeded: check first, do the work,
        then consume.

        :raises RateLimited: if the current window has fewer than ``amount`` uses left.
        :raises ValueError: if ``amount`` is below 1.
        """
        ...

    async def purge_expired(self, now: int) -> int:
        """
        Delete nonces whose ``expires_at`` has passed and quota windows that have ended.

        :param now: the current time.
        :returns: how many records were deleted.
        """
        ...

    # -- KeyPackages ------------------------------------------------------------------

    async def add_key_packages(
        self,
        device_key: bytes,
        *,
        one_time: Sequence[bytes],
        last_resort: bytes | None,
        now: int,
        max_stored: int,
    ) -> KeyPackageCount:
        """
        Store a device's one-time KeyPackages and, if given, replace its last-resort one.

        Nothing is stored unless everything is.

        :param device_key: the owning device.
        :param one_time: encoded KeyPackages, each handed out at most once.
        :param last_resort: an encoded KeyPackage handed out when no one-time one is left.
        :param now: the upload time.
        :param max_stored: the most one-time KeyPackages the device may have stored.
        :returns: the device's counts after the upload.
        :raises DeviceNotFound: if the device is not registered.
        :raises DuplicateKeyPackage: if a package appears twice in the upload, or equals one
            the device has stored (other than the last-resort package it replaces).
        :raises KeyPackageStoreFull: if the device would have more than ``max_stored``.
        """
        ...

    async def count_key_packages(self, device_key: bytes) -> KeyPackageCount:
        """
        :returns: how many KeyPackages the device has stored.
        :raises DeviceNotFound: if the device is not registered.
        """
        ...

    async def claim_key_package(self, device_key: bytes) -> ClaimedKeyPackage:
        """
        Hand out one KeyPackage of a device: the oldest one-time package, which is deleted
        in the same transaction (so no two claims ever get the same one), or, only when
        none is left, the last-resort package, which stays.

        :param device_key: the device.
        :returns: the package.
        :raises DeviceNotFound: if the device is not registered.
        :raises KeyPackagesExhausted: if it has no package at all.
        """
        ...

    async def claim_account_key_packages(self, account_key: bytes) -> AccountClaim:
        """
        Claim one KeyPackage of every device of an account, in one transaction.

        :param account_key: the account.
        :returns: the packages, and the devices that had none.
        :raises UnknownAccount: if the account is not registered.
        """
        ...

    # -- Groups and their logs ----------------------------------------------------------

    async def create_group(self, group: NewGroup) -> GroupRecord:
        """
        Create a group at epoch 0 with its members and an empty log.

        :param group: the group.
        :returns: the stored record.
        :raises GroupExists: if a group has this id.
        :raises UnknownMemberDevice: if a member's key is not a registered device.
        """
        ...

    async def load_group(
        self, group_id: bytes, *, device_key: bytes, proposals_after: int | None
    ) -> GroupSnapshot:
        """
        Read a group, a device's membership of it and the current epoch's proposals.

        :param group_id: the group.
        :param device_key: the device whose membership to read.
        :param proposals_after: read the current epoch's proposals with a greater sequence
            number (``None``: read none).
        :returns: all three, from one snapshot.
        :raises UnknownGroup: if there is no such group.
        """
        ...

    async def find_message(self, sender_device: bytes, client_message_id: bytes) -> LogEntry | None:
        """
        :returns: the entry a device sent with this client message id, in any group, or
            ``None``.
        """
        ...

    async def get_commit(self, group_id: bytes, epoch: int) -> LogEntry | None:
        """
        :returns: the commit that ended ``epoch`` in the group, or ``None`` (the epoch has
            not ended, or retention deleted its commit).
        """
        ...

    async def append_message(
        self,
        message: NewMessage,
        *,
        nonce: NonceUse | None = None,
        quota: QuotaCharge | None = None,
    ) -> Appended:
        """
        Append an application message or a proposal, exactly once, to the current epoch.

        In one durable transaction and in this order: the nonce is recorded (a used one
        refuses the whole request, and nothing is recorded); the group exists; if the
        device sent this client message id before, the original entry is returned and
        nothing is stored or counted (the quota is neither charged nor checked); the
        sender is a member; the epoch is current; the quota has ``quota.amount`` uses
        left; the entry is stored with the next sequence number and the quota is
        charged. A refusal after the nonce keeps the nonce recorded and nothing else,
        so that a replay of the refused request is refused as a replay.

        :param message: the message.
        :param nonce: the request's nonce, to record with the append (``None``: the
            caller recorded it, or the message came without one).
        :param quota: the sender's quota, to check and charge for a new entry.
        :returns: the stored entry (or the original of a retry).
        :raises ReplayedRequest: if ``nonce`` was used before.
        :raises UnknownGroup: if there is no such group.
        :raises MessageIdReused: if the id was used for a message of another group or kind.
        :raises NotAMember: if the sender is not a member.
        :raises StaleEpoch: if ``message.epoch`` is not the current epoch.
        :raises RateLimited: if the quota has fewer than ``quota.amount`` uses left;
            ``retry_after`` says when its window ends.
        :raises ValueError: if ``message.kind`` is a commit (use :meth:`append_commit`),
            or ``quota.amount`` is below 1.
        """
        ...

    async def append_commit(
        self,
        commit: NewCommit,
        *,
        nonce: NonceUse | None = None,
        quota: QuotaCharge | None = None,
    ) -> Appended:
        """
        Append a commit and move the group to the next epoch, all in one transaction.

        The same checks as :meth:`append_message` (the nonce first, a retry answered
        uncharged, the quota checked before storing and charged after), then: store the
        commit; set the epoch to ``commit.epoch + 1``; replace the GroupInfo and tree;
        make the member devices exactly ``commit.members`` (devices that join get
        ``joined_seq`` = the commit's sequence number; devices that leave lose their
        cursor and pending Welcomes); store the Welcome for its recipients. With
        ``commit.invite_key`` (an external commit joining by invite) the sender need not
        be a member; the invite is checked (the group's, unexpired, not used up) and used
        once. If the commit removes a device and the group resets invites on remove,
        every invite is deleted. As with :meth:`append_message`, a refusal after the
        nonce keeps the nonce recorded and nothing else.

        :param commit: the commit.
        :param nonce: the request's nonce, to record with the append.
        :param quota: the sender's quota, to check and charge for a new entry.
        :returns: the stored entry (or the original of a retry).
        :raises ReplayedRequest: if ``nonce`` was used before.
        :raises UnknownGroup: if there is no such group.
        :raises MessageIdReused: if the id was used for a message of another group or kind.
        :raises NotAMember: if the sender is not a member.
        :raises CommitConflict: if another commit ended ``commit.epoch``; it carries that one.
        :raises StaleEpoch: if ``commit.epoch`` is past the current epoch, or ended by a
            commit that retention has deleted.
        :raises RateLimited: if the quota has fewer than ``quota.amount`` uses left.
        :raises InviteNotFound: if ``commit.invite_key`` is not an invite of the group.
        :raises InviteExpired: if the invite has expired.
        :raises InviteUsedUp: if its uses are all taken.
        :raises UnknownMemberDevice: if a member or recipient is not a registered device.
        :raises ValueError: if a device appears twice among the members, or
            ``quota.amount`` is below 1.
        """
        ...

    # -- Invites ------------------------------------------------------------------------

    async def create_invite(self, invite: NewInvite) -> InviteRecord:
        """
        Store a new invite of a group, created by a member device.

        :raises UnknownGroup: if there is no such group.
        :raises NotAMember: if ``created_by`` is not a member.
        :raises InviteExists: if an invite has this key.
        """
        ...

    async def get_invite(self, invite_key: bytes) -> InviteRecord | None:
        """
        :returns: the invite with this key, or ``None`` (never created, or reset).
        """
        ...

    async def update_invite(
        self,
        group_id: bytes,
        invite_key: bytes,
        *,
        device_key: bytes,
        sealed_group_info: bytes,
        now: int,
    ) -> InviteRecord:
        """
        Replace an invite's sealed GroupInfo (members refresh it after each commit).

        :raises UnknownGroup: if there is no such group.
        :raises NotAMember: if the device is not a member.
        :raises InviteNotFound: if the group has no invite with this key.
        """
        ...

    async def reset_invites(self, group_id: bytes, *, device_key: bytes) -> int:
        """
        Delete every invite of a group, for a member device.

        :returns: how many were deleted.
        :raises UnknownGroup: if there is no such group.
        :raises NotAMember: if the device is not a member.
        """
        ...

    async def set_reset_invites_on_remove(
        self, group_id: bytes, *, device_key: bytes, enabled: bool
    ) -> None:
        """
        Set whether a commit that removes a member deletes the group's invites (default on).

        :raises UnknownGroup: if there is no such group.
        :raises NotAMember: if the device is not a member.
        """
        ...

    async def put_join_request(self, request: JoinRequest, *, max_pending: int) -> JoinRequest:
        """
        Store a join request, replacing the same device's earlier one for the group.

        :raises UnknownGroup: if there is no such group.
        :raises JoinRequestsFull: if the group already has ``max_pending`` other requests.
        """
        ...

    async def join_requests(self, group_id: bytes) -> tuple[JoinRequest, ...]:
        """
        :returns: the group's join requests from devices that are not members, oldest first.
        :raises UnknownGroup: if there is no such group.
        """
        ...

    async def get_join_request(self, group_id: bytes, device_key: bytes) -> JoinRequest | None:
        """
        :returns: the device's join request for the group, if one waits (``None`` as well
            when the device is a member, as :meth:`join_requests` leaves those out).
        :raises UnknownGroup: if there is no such group.
        """
        ...

    async def delete_join_request(self, group_id: bytes, device_key: bytes) -> bool:
        """
        :returns: whether there was such a request (now deleted).
        """
        ...

    async def get_reset_invites_on_remove(self, group_id: bytes) -> bool:
        """
        :returns: whether a commit that removes a member deletes the group's invites.
        :raises UnknownGroup: if there is no such group.
        """
        ...

    async def fetch_messages(
        self, group_id: bytes, *, device_key: bytes, after: int, limit: int
    ) -> LogPage:
        """
        Read a member device's part of the log: entries after ``after`` and after it joined.

        :param group_id: the group.
        :param device_key: the reading device.
        :param after: the last sequence number the device has.
        :param limit: the most entries to return.
        :returns: the entries in order, with the group's epoch and last sequence number.
        :raises UnknownGroup: if there is no such group.
        :raises NotAMember: if the device is not a member.
        :raises LogPruned: if entries after ``after`` (and after the device joined) may
            have been deleted by retention, that is if that position is below the group's
            ``pruned_seq``.
        """
        ...

    async def list_welcomes(self, device_key: bytes, *, limit: int) -> tuple[PendingWelcome, ...]:
        """
        :returns: the Welcomes waiting for a device, oldest first, at most ``limit``.
        """
        ...

    async def apply_retention(self, now: int, *, retention_seconds: int) -> RetentionReport:
        """
        Delete what the relay no longer keeps; each group's part is one transaction.

        Per group: ``pruned_seq`` moves up to the lowest position of its member devices
        (a device's position is the later of its cursor and the commit that added it;
        devices that left do not count), and to the last entry received at or before
        ``now - retention_seconds``; it never passes ``last_seq``. Entries up to it are
        deleted, except the current epoch's proposals (the relay replays them to check
        the next commit) and commits whose Welcome still waits for a device. Welcomes
        created at or before that time are deleted. Attachments whose ``expires_at`` has
        come lose their bytes; their records (tombstones) are deleted once another
        ``retention_seconds`` has passed.

        :param now: the current time.
        :param retention_seconds: how long anything is kept, at most.
        :returns: how much was deleted.
        """
        ...

    # -- Attachments ----------------------------------------------------------------------

    async def put_attachment(self, attachment: NewAttachment) -> StoredAttachment:
        """
        Store an encrypted blob under its SHA-256, once.

        If the blob is stored and unexpired, nothing new is stored and its expiry moves
        to the later of the two; if it expired, it is stored again.

        :param attachment: the blob.
        :returns: the stored record, and whether it was there before.
        :raises DeviceNotFound: if the uploader is not a registered device.
        :raises ValueError: if ``attachment.sha256`` is not the SHA-256 of its content.
        """
        ...

    async def get_attachment(self, sha256: bytes, *, now: int) -> AttachmentRecord:
        """
        Read an attachment's record, to serve its bytes.

        :param sha256: the blob's address.
        :param now: the current time.
        :returns: the record.
        :raises AttachmentNotFound: if no blob has this hash.
        :raises AttachmentExpired: if its ``expires_at`` has come (its bytes may be gone).
        """
        ...

    async def read_attachment(self, sha256: bytes, *, offset: int, length: int, now: int) -> bytes:
        """
        Read part of a stored blob.

        :param sha256: the blob's address.
        :param offset: where to start, in bytes.
        :param length: how many bytes to read at most.
        :param now: the current time.
        :returns: the bytes from ``offset``, at most ``length`` (fewer at the end).
        :raises AttachmentNotFound: if no blob has this hash.
        :raises AttachmentExpired: if its ``expires_at`` has come.
        :raises ValueError: if ``offset`` or ``length`` is negative.
        """
        ...

    async def ack_cursor(self, group_id: bytes, *, device_key: bytes, seq: int, now: int) -> int:
        """
        Move a member device's cursor forward to ``seq`` (never back) and drop the Welcomes
        of commits up to it.

        :param group_id: the group.
        :param device_key: the device.
        :param seq: the last sequence number the device has processed.
        :param now: the time of the acknowledgement.
        :returns: the cursor after the call (``seq``, or a greater one acknowledged before).
        :raises UnknownGroup: if there is no such group.
        :raises NotAMember: if the device is not a member.
        :raises CursorAhead: if ``seq`` is past the group's last entry.
        """
        ...

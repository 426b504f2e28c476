"""
The outbox: what this device accepted to send to a group and the relay has not yet acknowledged.

An entry is written in the same atomic batch as the group state that made
its MLS bytes (an encrypted message consumes a ratchet generation; a commit
is the group's pending commit), before the API call that accepted it
returns. It leaves the outbox in the batch that records the relay's answer:
the acknowledgement of a message (with the message moving into the message
store), or the merge of our commit when the log reaches it.

Entries of one group are sent in order, one at a time, so members see a
device's messages in the order it wrote them. Kinds and their lives::

    CREATE    the new group's GroupInfo ─► 201 (or group-exists) ─► gone
    MESSAGE   wire bytes + PrivateMessage ─► seq ─► gone, stored as msg/<seq>
              stale-epoch ─► catch up, re-encrypt under the same client message id
    PROPOSAL  our leave (Remove of our own leaf) ─► seq ─► gone
              the epoch moved on ─► proposed again at the new epoch
    COMMIT    an intent (adds, removes, admins, settings, commit held proposals) and the commit
              built from it;
              accounts to add get their KeyPackages claimed first, one claim per account
              ─► seq ─► merged when the log reaches it ─► gone
              commit-conflict / stale-epoch ─► catch up (merging the winner), rebuild, retry

Record layout (in the group's scope)::

    app/outbox/<number, 20 digits>   one entry (_EntryRecord)
    app/sent/<seq, 20 digits>        a seq the relay gave one of our entries, until the
                                     cursor passes it (so the log entry is skipped)
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace
from typing import Annotated

from townsquare.mls.codec import U8, U64, Opaque, Optional, Struct, Vector

__all__ = [
    "OUTBOX_PREFIX",
    "SENT_PREFIX",
    "CommitIntent",
    "EntryKind",
    "OutboxEntry",
    "decode_entry",
    "encode_entry",
    "outbox_key",
    "sent_key",
]

OUTBOX_PREFIX = "app/outbox/"
SENT_PREFIX = "app/sent/"
_DIGITS = 20


def outbox_key(number: int) -> str:
    """
    :returns: the key of outbox entry ``number``.
    """
    return f"{OUTBOX_PREFIX}{number:0{_DIGITS}d}"


def sent_key(seq: int) -> str:
    """
    :returns: the key marking ``seq`` as one of ours, already accounted for.
    """
    return f"{SENT_PREFIX}{seq:0{_DIGITS}d}"


class EntryKind(enum.IntEnum):
    """
    What an outbox entry sends.
    """

    CREATE = 1
    MESSAGE = 2
    PROPOSAL = 3
    COMMIT = 4


@dataclass(frozen=True, slots=True, kw_only=True)
class CommitIntent(Struct):
    """
    What a commit is for, so that it can be rebuilt at a later epoch after losing a race.

    :param add_accounts: accounts whose devices to add, KeyPackages not yet claimed.
    :param add_key_packages: MLSMessage(KeyPackage) of each device to add, claimed.
    :param remove_devices: the device keys of the members to remove.
    :param commit_held: commit the proposals held from other members (a leave, say).
    :param update: refresh our own leaf's keys (an empty commit with a path).
    :param promote_devices: device keys to make admins (a GroupContextExtensions commit).
    :param demote_devices: device keys that stop being admins.
    :param approval_required: the group policy's "approval required" flag to set (1 on,
        0 off), or ``None`` to leave it (with ``members_can_add``, a GroupContextExtensions
        commit). A value, not a toggle: rebuilt at a later epoch, it changes only what
        another commit has not already changed.
    :param members_can_add: the policy's "members may add" flag to set, likewise.
    """

    add_accounts: Annotated[tuple[Annotated[bytes, Opaque], ...], Vector] = ()
    add_key_packages: Annotated[tuple[Annotated[bytes, Opaque], ...], Vector] = ()
    remove_devices: Annotated[tuple[Annotated[bytes, Opaque], ...], Vector] = ()
    commit_held: Annotated[int, U8] = 0
    update: Annotated[int, U8] = 0
    promote_devices: Annotated[tuple[Annotated[bytes, Opaque], ...], Vector] = ()
    demote_devices: Annotated[tuple[Annotated[bytes, Opaque], ...], Vector] = ()
    approval_required: Annotated[int | None, Optional, U8] = None
    members_can_add: Annotated[int | None, Optional, U8] = None

    @property
    def changes_policy(self) -> bool:
        """
        Whether the commit changes the group policy (a GroupContextExtensions proposal).
        """
        return bool(
            self.promote_devices
            or self.demote_devices
            or self.approval_required is not None
            or self.members_can_add is not None
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class OutboxEntry:
    """
    One entry of a group's outbox.

    :param number: its place in the outbox (entries are sent in this order).
    :param kind: what it sends.
    :param client_message_id: 16 bytes; the relay deduplicates on (device, this id).
        A message keeps its id when re-encrypted; a rebuilt commit or proposal gets a new one.
    :param epoch: the epoch ``message`` was made in (``None`` before it is built).
    :param data: a MESSAGE's wire bytes, to re-encrypt; else ``b""``.
    :param message: the MLS bytes to send (PrivateMessage, PublicMessage), or for
        CREATE the GroupInfo; ``None`` while a COMMIT or PROPOSAL waits to be built.
    :param welcome: a COMMIT's MLSMessage(Welcome), if it adds members.
    :param group_info: a COMMIT's MLSMessage(GroupInfo) of the epoch it creates.
    :param intent: a COMMIT's intent.
    :param sent_digests: the SHA-256 of every ``message`` this entry ever had, so that
        the log entry of any of them is recognised as ours.
    :param accepted_seq: the seq the relay gave a COMMIT (0 until then).
    """

    number: int
    kind: EntryKind
    client_message_id: bytes
    epoch: int | None
    data: bytes = b""
    message: bytes | None = None
    welcome: bytes | None = None
    group_info: bytes | None = None
    intent: CommitIntent | None = None
    sent_digests: tuple[bytes, ...] = ()
    accepted_seq: int = 0

    def built(
        self,
        *,
        epoch: int,
        message: bytes,
        digest: bytes,
        client_message_id: bytes | None = None,
        welcome: bytes | None = None,
        group_info: bytes | None = None,
    ) -> OutboxEntry:
        """
        :returns: this entry with new MLS bytes made in ``epoch`` (``digest`` is their SHA-256).
        """
        return replace(
            self,
            epoch=epoch,
            message=message,
            welcome=welcome,
            group_info=group_info if group_info is not None else self.group_info,
            client_message_id=client_message_id or self.client_message_id,
            sent_digests=(*self.sent_digests, digest),
            accepted_seq=0,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class _EntryRecord(Struct):
    kind: Annotated[int, U8]
    client_message_id: Annotated[bytes, Opaque]
    built: Annotated[int, U8]
    epoch: Annotated[int, U64]
    data: Annotated[bytes, Opaque]
    message: Annotated[bytes | None, Optional, Opaque]
    welcome: Annotated[bytes | None, Optional, Opaque]
    group_info: Annotated[bytes | None, Optional, Opaque]
    intent: Annotated[CommitIntent | None, Optional]
    sent_digests: Annotated[tuple[Annotated[bytes, Opaque], ...], Vector]
    accepted_seq: Annotated[int, U64]


def encode_entry(entry: OutboxEntry) -> bytes:
    """
    :returns: the stored form of ``entry``.
    """
    return _EntryRecord(
        kind=int(entry.kind),
        client_message_id=entry.client_message_id,
        built=int(entry.epoch is not None),
        epoch=entry.epoch or 0,
        data=entry.data,
        message=entry.message,
        welcome=entry.welcome,
        group_info=entry.group_info,
        intent=entry.intent,
        sent_digests=entry.sent_digests,
        accepted_seq=entry.accepted_seq,
    ).encode()


def decode_entry(number: int, record: bytes) -> OutboxEntry:
    """
    Read an outbox entry back.

    :raises townsquare.mls.errors.DecodeError: if the record does not decode.
    :raises ValueError: if its kind is unknown.
    """
    value = _EntryRecord.decode(record)
    return OutboxEntry(
        number=number,
        kind=EntryKind(value.kind),
        client_message_id=value.client_message_id,
        epoch=value.epoch if value.built else None,
        data=value.data,
        message=value.message,
        welcome=value.welcome,
        group_info=value.group_info,
        intent=value.intent,
        sent_digests=value.sent_digests,
        accepted_seq=value.accepted_seq,
    )

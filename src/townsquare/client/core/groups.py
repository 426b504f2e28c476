"""
What the client keeps about each group besides its MLS state: status, cursor, names.

Record layout (in the group's scope, beside the MLS records)::

    app/meta                     the group's status (_MetaRecord)
    app/cursor                   the seq of the last log entry processed (uint64)
    app/profile/<device hex>     a member's display name and the seq that set it
    app/title                    the group's title and the seq that set it
    app/resync                   present while a commit we cannot process (at this seq)
                                 blocks the group (RFC 9420 §12.4.3.2: rejoin to go on)

Status transitions (anything else is a bug, and raises)::

    CREATING ─(relay created it)─► ACTIVE ─(leave)─► LEAVING ─(removed)─► LEFT
       │ (joined by Welcome) ────► ACTIVE ─(removed by a commit)─────────► REMOVED
       └─(the relay refused to create it)────────────────────────────────► REMOVED
                                   LEAVING ─(removed before our proposal)─► LEFT
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Annotated, TypeVar

from townsquare.client.errors import StoreCorrupt
from townsquare.mls.codec import U8, U64, Opaque, Struct
from townsquare.mls.errors import DecodeError

__all__ = [
    "CURSOR_KEY",
    "META_KEY",
    "PROFILE_PREFIX",
    "RESYNC_KEY",
    "TITLE_KEY",
    "GroupSettings",
    "GroupStatus",
    "GroupSummary",
    "MemberInfo",
    "NamedValue",
    "check_transition",
    "decode_cursor",
    "decode_named",
    "decode_status",
    "encode_cursor",
    "encode_named",
    "encode_status",
    "profile_key",
]

META_KEY = "app/meta"
CURSOR_KEY = "app/cursor"
PROFILE_PREFIX = "app/profile/"
TITLE_KEY = "app/title"
RESYNC_KEY = "app/resync"

_S = TypeVar("_S", bound=Struct)


class GroupStatus(enum.IntEnum):
    """
    Where this device stands in a group.
    """

    #: Created here; the relay has not yet confirmed it.
    CREATING = 1
    #: A member.
    ACTIVE = 2
    #: A member that proposed its own removal and waits for someone to commit it.
    LEAVING = 3
    #: Removed by another member (or never created: the relay refused it); read-only here.
    REMOVED = 4
    #: Left: the group is read-only here.
    LEFT = 5

    @property
    def closed(self) -> bool:
        """
        Whether the group is over for this device.
        """
        return self in (GroupStatus.REMOVED, GroupStatus.LEFT)


# Each status and the statuses it may move to (h11's table style).
_TRANSITIONS: dict[GroupStatus, frozenset[GroupStatus]] = {
    GroupStatus.CREATING: frozenset({GroupStatus.ACTIVE, GroupStatus.REMOVED}),
    GroupStatus.ACTIVE: frozenset({GroupStatus.LEAVING, GroupStatus.REMOVED}),
    GroupStatus.LEAVING: frozenset({GroupStatus.LEFT}),
    GroupStatus.REMOVED: frozenset(),
    GroupStatus.LEFT: frozenset(),
}


def check_transition(old: GroupStatus, new: GroupStatus) -> None:
    """
    :raises RuntimeError: if the table above has no arrow from ``old`` to ``new`` (a bug).
    """
    if new not in _TRANSITIONS[old]:
        raise RuntimeError(f"no group status transition from {old.name} to {new.name}")


@dataclass(frozen=True, slots=True)
class _MetaRecord(Struct):
    status: Annotated[int, U8]


@dataclass(frozen=True, slots=True)
class _Cursor(Struct):
    seq: Annotated[int, U64]


@dataclass(frozen=True, slots=True, kw_only=True)
class NamedValue(Struct):
    """
    A display name or title and the seq of the message that set it.
    """

    seq: Annotated[int, U64]
    value: Annotated[bytes, Opaque]

    @property
    def text(self) -> str:
        """
        The value as text.
        """
        return self.value.decode("utf-8")


def _decode(cls: type[_S], key: str, data: bytes) -> _S:
    try:
        return cls.decode(data)
    except DecodeError as exc:
        raise StoreCorrupt(f"record {key!r} does not decode") from exc


def encode_status(status: GroupStatus) -> bytes:
    """
    :returns: the ``app/meta`` record for ``status``.
    """
    return _MetaRecord(int(status)).encode()


def decode_status(data: bytes) -> GroupStatus:
    """
    :raises StoreCorrupt: if the record does not decode.
    """
    value = _decode(_MetaRecord, META_KEY, data).status
    try:
        return GroupStatus(value)
    except ValueError as exc:
        raise StoreCorrupt(f"unknown group status {value}") from exc


def encode_cursor(seq: int) -> bytes:
    """
    :returns: the ``app/cursor`` record.
    """
    return _Cursor(seq).encode()


def decode_cursor(data: bytes) -> int:
    """
    :raises StoreCorrupt: if the record does not decode.
    """
    return _decode(_Cursor, CURSOR_KEY, data).seq


def profile_key(device_key: bytes) -> str:
    """
    :returns: the key of a member's display name.
    """
    return f"{PROFILE_PREFIX}{device_key.hex()}"


def encode_named(seq: int, text: str) -> bytes:
    """
    :returns: a name or title record.
    """
    return NamedValue(seq=seq, value=text.encode("utf-8")).encode()


def decode_named(key: str, data: bytes) -> NamedValue:
    """
    :raises StoreCorrupt: if the record does not decode.
    """
    return _decode(NamedValue, key, data)


@dataclass(frozen=True, slots=True, kw_only=True)
class MemberInfo:
    """
    A member of a group as this device sees it.

    :param device_key: the member's device key (its MLS signature key; its id).
    :param leaf_index: its leaf in the current epoch.
    :param display_name: its latest Profile name in this group, or ``None``.
    :param is_self: whether it is this device.
    """

    device_key: bytes
    leaf_index: int
    display_name: str | None
    is_self: bool


@dataclass(frozen=True, slots=True)
class GroupSettings:
    """
    The flags of a group's policy (:mod:`townsquare.auth.group_policy`) in an epoch.

    :param approval_required: whether newcomers with an invite link ask, and an admin
        adds them, rather than join alone.
    :param members_can_add: whether any member may add members (else only admins).
    """

    approval_required: bool
    members_can_add: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class GroupSummary:
    """
    A group as this device sees it.

    :param group_id: the MLS group id.
    :param status: where this device stands in it.
    :param epoch: the epoch of our state.
    :param title: the latest GroupTitle, or ``None``.
    :param cursor: the seq of the last log entry processed.
    :param members: how many members the current epoch has.
    :param outbox: how many entries wait in the outbox.
    :param needs_resync: whether a commit we cannot process blocks the group.
    """

    group_id: bytes
    status: GroupStatus
    epoch: int
    title: str | None
    cursor: int
    members: int
    outbox: int
    needs_resync: bool

"""
The records of invites: the ones this device keeps sealed for, and the joins it is making.

An invite's secret (``townsquare.auth.invites``) lives in the link and on
the devices that hold it: the one that made it, and each that joined by it.
The relay keeps only the invite's public key and the GroupInfo sealed under
the secret, which goes stale at every commit. Townsquare choice: the
devices holding the secret reseal it after each epoch change (the committer
usually first); every invite record says for which epoch the relay has it.

- ``app/invite/<invite key hex>`` in the group's scope: :class:`InviteRecord`;
- ``join/<group id hex>`` in the device's records: :class:`JoinRecord`, a join by
  link that has not yet been accepted (it survives a restart).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from townsquare.client.errors import StoreCorrupt
from townsquare.mls.codec import U8, U32, U64, Opaque, Struct
from townsquare.mls.errors import DecodeError

__all__ = [
    "INVITE_PREFIX",
    "JOIN_PREFIX",
    "InviteRecord",
    "JoinRecord",
    "decode_invite",
    "decode_join",
    "invite_record_key",
    "join_record_key",
]

INVITE_PREFIX = "app/invite/"
JOIN_PREFIX = "join/"


@dataclass(frozen=True, slots=True, kw_only=True)
class InviteRecord(Struct):
    """
    An invite this device holds the secret of.

    ``sealed_epoch`` is 0 before the relay holds the invite, 1 once it does (for an
    epoch not known here), and ``epoch + 2`` once it holds that epoch's GroupInfo
    sealed; ``mine`` says whether this device made it
    (and so publishes it), rather than joined by it.
    """

    secret: Annotated[bytes, Opaque]
    expires_at: Annotated[int, U64]
    max_uses: Annotated[int, U32]
    sealed_epoch: Annotated[int, U64]
    mine: Annotated[int, U8]


@dataclass(frozen=True, slots=True, kw_only=True)
class JoinRecord(Struct):
    """
    A join by invite link that the relay has not accepted yet.
    """

    secret: Annotated[bytes, Opaque]
    created_at: Annotated[int, U64]
    #: 1 once the relay holds our join request (the group requires approval): we wait
    #: for an admin's Welcome instead of asking again.
    requested: Annotated[int, U8] = 0


def invite_record_key(invite_key: bytes) -> str:
    """
    :returns: the record key of the invite whose public key is ``invite_key``.
    """
    return f"{INVITE_PREFIX}{invite_key.hex()}"


def join_record_key(group_id: bytes) -> str:
    """
    :returns: the device record key of a join to ``group_id``.
    """
    return f"{JOIN_PREFIX}{group_id.hex()}"


def decode_invite(key: str, data: bytes) -> InviteRecord:
    """
    :raises StoreCorrupt: if the record does not decode.
    """
    try:
        return InviteRecord.decode(data)
    except DecodeError as exc:
        raise StoreCorrupt(f"record {key!r} does not decode") from exc


def decode_join(key: str, data: bytes) -> JoinRecord:
    """
    :raises StoreCorrupt: if the record does not decode.
    """
    try:
        return JoinRecord.decode(data)
    except DecodeError as exc:
        raise StoreCorrupt(f"record {key!r} does not decode") from exc

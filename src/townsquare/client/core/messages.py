"""
The message store: the application messages of a group, decoded, in the relay's log order.

A message is stored once, under its place in the group's log (``seq``), in
the same atomic batch as the group state that decrypted it and the cursor
that moved past it (or, for our own messages, the batch that took it out of
the outbox when the relay acknowledged it). A second record per message,
keyed by its sender and wire message id, refuses a copy under another
``seq``: a relay that stored a message twice still shows it once.

Record layout (in the group's scope, under ``app/``)::

    app/msg/<seq, 20 digits>           one message (a _MessageRecord)
    app/mid/<sender hex>/<id hex>      the seq a (sender, message id) was stored at
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Annotated

from townsquare import wire
from townsquare.mls.codec import U8, U32, U64, Opaque, Struct

__all__ = [
    "MESSAGE_PREFIX",
    "StoredMessage",
    "decode_message_record",
    "encode_message_record",
    "message_id_key",
    "message_key",
]

MESSAGE_PREFIX = "app/msg/"
_MESSAGE_ID_PREFIX = "app/mid/"
_SEQ_DIGITS = 20


def message_key(seq: int) -> str:
    """
    :returns: the key of the message stored at ``seq`` (zero-padded, so keys sort as seqs).
    """
    return f"{MESSAGE_PREFIX}{seq:0{_SEQ_DIGITS}d}"


def message_id_key(sender: bytes, message_id: bytes) -> str:
    """
    :returns: the key that records where a sender's message id was stored.
    """
    return f"{_MESSAGE_ID_PREFIX}{sender.hex()}/{message_id.hex()}"


@dataclass(frozen=True, slots=True, kw_only=True)
class StoredMessage:
    """
    One application message of a group, as this device stored it.

    :param group_id: the group.
    :param seq: its place in the group's log (the relay's sequence number).
    :param sender: the sending device's key (its MLS signature key).
    :param sender_leaf: the sender's leaf index in the epoch it was sent in.
    :param epoch: the epoch it was encrypted in.
    :param own: whether this device sent it.
    :param message: the decoded wire message, or ``None`` if it is of a newer
        version of the protocol than this SDK reads (``wire.NotUnderstood``).
    :param data: the wire bytes as received.
    :param sender_name: the sender's display name in this group when it was read
        (from the latest Profile message), or ``None``.
    """

    group_id: bytes
    seq: int
    sender: bytes
    sender_leaf: int
    epoch: int
    own: bool
    message: wire.Message | None
    data: bytes
    sender_name: str | None = None

    @property
    def message_id(self) -> bytes | None:
        """
        The wire message id, or ``None`` for a message not understood.
        """
        return None if self.message is None else self.message.message_id

    @property
    def sent_at(self) -> datetime | None:
        """
        When the sender says it sent the message, or ``None`` for a message not understood.
        """
        return None if self.message is None else self.message.sent_at

    @property
    def kind(self) -> str:
        """
        The message's kind in lower case (``"text"``, ``"profile"``…), or ``"unsupported"``.
        """
        return "unsupported" if self.message is None else self.message.KIND.name.lower()

    @property
    def text(self) -> str | None:
        """
        The body of a text, reply or edit; the caption of an attachment; else ``None``.
        """
        message = self.message
        if isinstance(message, (wire.Text, wire.Reply, wire.Edit)):
            return message.body
        if isinstance(message, wire.Attachment):
            return message.caption
        return None

    def named(self, sender_name: str | None) -> StoredMessage:
        """
        :returns: this message with ``sender_name`` set.
        """
        return replace(self, sender_name=sender_name)


@dataclass(frozen=True, slots=True, kw_only=True)
class _MessageRecord(Struct):
    seq: Annotated[int, U64]
    sender: Annotated[bytes, Opaque]
    sender_leaf: Annotated[int, U32]
    epoch: Annotated[int, U64]
    own: Annotated[int, U8]
    data: Annotated[bytes, Opaque]


def encode_message_record(message: StoredMessage) -> bytes:
    """
    :returns: the stored form of ``message`` (its wire bytes, not the decoded value).
    """
    return _MessageRecord(
        seq=message.seq,
        sender=message.sender,
        sender_leaf=message.sender_leaf,
        epoch=message.epoch,
        own=int(message.own),
        data=message.data,
    ).encode()


def decode_wire(data: bytes) -> wire.Message | None:
    """
    Decode wire bytes that were accepted once (so only ``NotUnderstood`` is expected).

    :returns: the message, or ``None`` if this SDK does not understand it.
    :raises wire.InvalidMessage: if the bytes are not a valid message.
    """
    try:
        return wire.decode(data)
    except wire.NotUnderstood:
        return None


def decode_message_record(group_id: bytes, record: bytes) -> StoredMessage:
    """
    Read a stored message back.

    :param group_id: the group whose scope holds the record.
    :param record: the record's bytes.
    :returns: the message (its ``sender_name`` unset).
    :raises townsquare.mls.errors.DecodeError: if the record does not decode.
    :raises wire.InvalidMessage: if its wire bytes no longer decode.
    """
    value = _MessageRecord.decode(record)
    return StoredMessage(
        group_id=group_id,
        seq=value.seq,
        sender=value.sender,
        sender_leaf=value.sender_leaf,
        epoch=value.epoch,
        own=bool(value.own),
        message=decode_wire(value.data),
        data=value.data,
    )

"""
Checks ``messages.json``: each field decodes as its structure and re-encodes to the same bytes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from townsquare.mls.codec import Struct
from townsquare.mls.commit import Commit
from townsquare.mls.framing import MLSMessage, PrivateMessage, PublicMessage
from townsquare.mls.proposals import (
    Add,
    ExternalInit,
    GroupContextExtensions,
    PreSharedKey,
    ReInit,
    Remove,
    Update,
)
from townsquare.mls.ratchet_tree import RatchetTreeNodes
from townsquare.mls.registries import ContentType, WireFormat
from townsquare.mls.testvectors.fields import VectorMismatch, expect_equal, hex_field
from townsquare.mls.welcome import GroupSecrets

# Each field of a messages.json entry, the structure it holds, and what else
# must be true of the decoded value (FORMAT.md: "MLSMessage.wire_format ==
# mls_welcome" and so on).
_Expectation = Callable[[Struct], None]


def _wire_format(expected: WireFormat) -> _Expectation:
    def check(value: Struct) -> None:
        if not isinstance(value, MLSMessage):
            raise VectorMismatch(f"expected an MLSMessage, got {type(value).__name__}")
        expect_equal("wire_format", value.wire_format, expected)

    return check


def _public(content_type: ContentType) -> _Expectation:
    def check(value: Struct) -> None:
        _wire_format(WireFormat.MLS_PUBLIC_MESSAGE)(value)
        if not isinstance(value, MLSMessage) or not isinstance(value.body, PublicMessage):
            raise VectorMismatch("expected a PublicMessage")
        expect_equal("content_type", value.body.content.content_type, content_type)

    return check


def _private(value: Struct) -> None:
    _wire_format(WireFormat.MLS_PRIVATE_MESSAGE)(value)
    if not isinstance(value, MLSMessage) or not isinstance(value.body, PrivateMessage):
        raise VectorMismatch("expected a PrivateMessage")


def _nothing(value: Struct) -> None:
    del value


_FIELDS: Mapping[str, tuple[type[Struct], _Expectation]] = {
    "mls_welcome": (MLSMessage, _wire_format(WireFormat.MLS_WELCOME)),
    "mls_group_info": (MLSMessage, _wire_format(WireFormat.MLS_GROUP_INFO)),
    "mls_key_package": (MLSMessage, _wire_format(WireFormat.MLS_KEY_PACKAGE)),
    "ratchet_tree": (RatchetTreeNodes, _nothing),
    "group_secrets": (GroupSecrets, _nothing),
    "add_proposal": (Add, _nothing),
    "update_proposal": (Update, _nothing),
    "remove_proposal": (Remove, _nothing),
    "pre_shared_key_proposal": (PreSharedKey, _nothing),
    "re_init_proposal": (ReInit, _nothing),
    "external_init_proposal": (ExternalInit, _nothing),
    "group_context_extensions_proposal": (GroupContextExtensions, _nothing),
    "commit": (Commit, _nothing),
    "public_message_application": (MLSMessage, _public(ContentType.APPLICATION)),
    "public_message_proposal": (MLSMessage, _public(ContentType.PROPOSAL)),
    "public_message_commit": (MLSMessage, _public(ContentType.COMMIT)),
    "private_message": (MLSMessage, _private),
}

FIELDS = tuple(_FIELDS)


def struct_of(field: str) -> type[Struct]:
    """
    :returns: the structure that the ``messages.json`` field ``field`` holds.
    """
    return _FIELDS[field][0]


def check(case: Mapping[str, object]) -> None:
    """
    Decode and re-encode every field of one messages.json entry.

    :raises VectorMismatch: if a field is not of its expected kind or re-encodes differently.
    :raises DecodeError: if a field does not decode.
    """
    for name, (struct, expectation) in _FIELDS.items():
        data = hex_field(case, name)
        value = struct.decode(data)
        expectation(value)
        expect_equal(f"{name} re-encoded", value.encode(), data)

"""
Proposals (RFC 9420 §12.1): the changes a commit can make to a group.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from townsquare.mls.codec import U16, U32, Opaque, Select, Struct, Vector
from townsquare.mls.extensions import Extension
from townsquare.mls.key_package import KeyPackage
from townsquare.mls.leaf_node import LeafNode
from townsquare.mls.psk import PreSharedKeyID
from townsquare.mls.registries import ProposalType, ProtocolVersion

__all__ = [
    "PROPOSAL",
    "Add",
    "ExternalInit",
    "GroupContextExtensions",
    "PreSharedKey",
    "Proposal",
    "ReInit",
    "Remove",
    "Update",
    "proposal_type",
]


@dataclass(frozen=True, slots=True)
class Add(Struct):
    """
    RFC 9420 §12.1.1: ``struct { KeyPackage key_package; } Add;``
    """

    key_package: KeyPackage


@dataclass(frozen=True, slots=True)
class Update(Struct):
    """
    RFC 9420 §12.1.2: ``struct { LeafNode leaf_node; } Update;``
    """

    leaf_node: LeafNode


@dataclass(frozen=True, slots=True)
class Remove(Struct):
    """
    RFC 9420 §12.1.3: ``struct { uint32 removed; } Remove;``
    """

    removed: Annotated[int, U32]


@dataclass(frozen=True, slots=True)
class PreSharedKey(Struct):
    """
    RFC 9420 §12.1.4: ``struct { PreSharedKeyID psk; } PreSharedKey;``
    """

    psk: PreSharedKeyID


@dataclass(frozen=True, slots=True, kw_only=True)
class ReInit(Struct):
    """
    RFC 9420 §12.1.5::

        struct {
            opaque group_id<V>;
            ProtocolVersion version;
            CipherSuite cipher_suite;
            Extension extensions<V>;
        } ReInit;
    """

    group_id: Annotated[bytes, Opaque]
    version: Annotated[ProtocolVersion, U16]
    cipher_suite: Annotated[int, U16]
    extensions: Annotated[tuple[Extension, ...], Vector]


@dataclass(frozen=True, slots=True)
class ExternalInit(Struct):
    """
    RFC 9420 §12.1.6: ``struct { opaque kem_output<V>; } ExternalInit;``
    """

    kem_output: Annotated[bytes, Opaque]


@dataclass(frozen=True, slots=True)
class GroupContextExtensions(Struct):
    """
    RFC 9420 §12.1.7: ``struct { Extension extensions<V>; } GroupContextExtensions;``
    """

    extensions: Annotated[tuple[Extension, ...], Vector]


Proposal = Add | Update | Remove | PreSharedKey | ReInit | ExternalInit | GroupContextExtensions

_TYPES: dict[type[Struct], ProposalType] = {
    Add: ProposalType.ADD,
    Update: ProposalType.UPDATE,
    Remove: ProposalType.REMOVE,
    PreSharedKey: ProposalType.PSK,
    ReInit: ProposalType.REINIT,
    ExternalInit: ProposalType.EXTERNAL_INIT,
    GroupContextExtensions: ProposalType.GROUP_CONTEXT_EXTENSIONS,
}

# RFC 9420 §12.1:
#   struct {
#       ProposalType proposal_type;
#       select (Proposal.proposal_type) {
#           case add:                      Add;
#           case update:                   Update;
#           ...
#       };
#   } Proposal;
PROPOSAL = Select("Proposal", U16, lambda: {t: cls for cls, t in _TYPES.items()})


def proposal_type(proposal: Proposal) -> ProposalType:
    """
    :returns: the registry type of ``proposal``.
    """
    return _TYPES[type(proposal)]

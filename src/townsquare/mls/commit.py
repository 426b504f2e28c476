"""
Commits (RFC 9420 §12.4): a list of proposals, by value or by reference, and an optional path.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from townsquare.mls.codec import U8, Opaque, Optional, Select, Struct, Vector
from townsquare.mls.proposals import PROPOSAL, Proposal
from townsquare.mls.registries import ProposalOrRefType
from townsquare.mls.update_path import UpdatePath

__all__ = ["PROPOSAL_OR_REF", "Commit", "ProposalOrRef", "ProposalRef"]


@dataclass(frozen=True, slots=True)
class ProposalRef(Struct):
    """
    RFC 9420 §5.2: ``opaque HashReference<V>; HashReference ProposalRef;``
    """

    ref: Annotated[bytes, Opaque]


ProposalOrRef = Proposal | ProposalRef

# RFC 9420 §12.4:
#   struct {
#     ProposalOrRefType type;
#     select (ProposalOrRef.type) {
#       case proposal:  Proposal proposal;
#       case reference: ProposalRef reference;
#     };
#   } ProposalOrRef;
PROPOSAL_OR_REF = Select(
    "ProposalOrRef",
    U8,
    lambda: {ProposalOrRefType.PROPOSAL: PROPOSAL, ProposalOrRefType.REFERENCE: ProposalRef},
)


@dataclass(frozen=True, slots=True)
class Commit(Struct):
    """
    RFC 9420 §12.4::

        struct {
            ProposalOrRef proposals<V>;
            optional<UpdatePath> path;
        } Commit;
    """

    proposals: Annotated[tuple[Annotated[ProposalOrRef, PROPOSAL_OR_REF], ...], Vector]
    path: Annotated[UpdatePath | None, Optional] = None

"""
The ratchet tree (RFC 9420 §7): nodes, their encoding, and the public tree of a group.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from townsquare.mls.codec import U8, U32, Opaque, Optional, Select, Struct, Vector
from townsquare.mls.leaf_node import LeafNode
from townsquare.mls.registries import NodeType

__all__ = ["NODE", "Node", "ParentNode", "RatchetTreeNodes"]


@dataclass(frozen=True, slots=True)
class ParentNode(Struct):
    """
    RFC 9420 §7.1::

        struct {
            HPKEPublicKey encryption_key;
            opaque parent_hash<V>;
            uint32 unmerged_leaves<V>;
        } ParentNode;
    """

    encryption_key: Annotated[bytes, Opaque]
    parent_hash: Annotated[bytes, Opaque]
    unmerged_leaves: Annotated[tuple[Annotated[int, U32], ...], Vector]


Node = LeafNode | ParentNode

# RFC 9420 §7.8:
#   struct {
#       NodeType node_type;
#       select (Node.node_type) {
#           case leaf:   LeafNode leaf_node;
#           case parent: ParentNode parent_node;
#       };
#   } Node;
NODE = Select("Node", U8, lambda: {NodeType.LEAF: LeafNode, NodeType.PARENT: ParentNode})


@dataclass(frozen=True, slots=True)
class RatchetTreeNodes(Struct):
    """
    RFC 9420 §12.4.3.3: ``optional<Node> ratchet_tree<V>;`` (the ratchet_tree extension).

    The array representation of the tree (§7.1), trailing blank nodes removed.
    """

    nodes: Annotated[tuple[Annotated[Node | None, Optional, NODE], ...], Vector]

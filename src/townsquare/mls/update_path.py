"""
The UpdatePath that a commit carries (RFC 9420 §7.6); creating and applying one is in ``treekem``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from townsquare.mls.codec import Opaque, Struct, Vector
from townsquare.mls.leaf_node import LeafNode

__all__ = ["HPKECiphertext", "UpdatePath", "UpdatePathNode"]


@dataclass(frozen=True, slots=True)
class HPKECiphertext(Struct):
    """
    RFC 9420 §7.6::

        struct {
            opaque kem_output<V>;
            opaque ciphertext<V>;
        } HPKECiphertext;
    """

    kem_output: Annotated[bytes, Opaque]
    ciphertext: Annotated[bytes, Opaque]


@dataclass(frozen=True, slots=True)
class UpdatePathNode(Struct):
    """
    RFC 9420 §7.6::

        struct {
            HPKEPublicKey encryption_key;
            HPKECiphertext encrypted_path_secret<V>;
        } UpdatePathNode;
    """

    encryption_key: Annotated[bytes, Opaque]
    encrypted_path_secret: Annotated[tuple[HPKECiphertext, ...], Vector]


@dataclass(frozen=True, slots=True)
class UpdatePath(Struct):
    """
    RFC 9420 §7.6::

        struct {
            LeafNode leaf_node;
            UpdatePathNode nodes<V>;
        } UpdatePath;
    """

    leaf_node: LeafNode
    nodes: Annotated[tuple[UpdatePathNode, ...], Vector]

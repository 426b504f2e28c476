"""
Checks ``tree-operations.json``: applying an Add, Update or Remove to a tree (RFC 9420 §12.1).
"""

from __future__ import annotations

from collections.abc import Mapping

from townsquare.mls.ciphersuite import get_cipher_suite
from townsquare.mls.proposals import PROPOSAL, Add, Remove, Update
from townsquare.mls.ratchet_tree import RatchetTree
from townsquare.mls.testvectors.fields import VectorMismatch, expect_equal, hex_field, int_field
from townsquare.mls.tree_math import LeafIndex


def check(case: Mapping[str, object]) -> None:
    """
    Verify one tree-operations vector completely.

    :raises VectorMismatch: on the first difference.
    :raises MLSError: if the tree or proposal does not decode.
    """
    suite = get_cipher_suite(int_field(case, "cipher_suite"))
    tree_before = hex_field(case, "tree_before")
    tree = RatchetTree.decode(suite, tree_before)
    expect_equal("tree_before re-encoded", tree.encode(), tree_before)
    expect_equal("tree_hash_before", tree.root_tree_hash(), hex_field(case, "tree_hash_before"))

    proposal = PROPOSAL.decode(hex_field(case, "proposal"))
    sender = LeafIndex(int_field(case, "proposal_sender"))
    if isinstance(proposal, Add):
        tree.add_leaf(proposal.key_package.leaf_node)
    elif isinstance(proposal, Update):
        tree.update_leaf(sender, proposal.leaf_node)
    elif isinstance(proposal, Remove):
        tree.remove_leaf(LeafIndex(proposal.removed))
    else:
        raise VectorMismatch(f"unexpected proposal {type(proposal).__name__}")

    expect_equal("tree_after", tree.encode(), hex_field(case, "tree_after"))
    expect_equal("tree_hash_after", tree.root_tree_hash(), hex_field(case, "tree_hash_after"))

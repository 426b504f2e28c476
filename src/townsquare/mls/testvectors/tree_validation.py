"""
Checks ``tree-validation.json``: resolutions, tree hashes, parent hashes, leaf signatures.

RFC 9420 §4.1.1 (resolution), §7.8 (tree hash), §7.9.2 (parent hashes) and
§7.3 (leaf signatures), on the trees a joiner would receive.
"""

from __future__ import annotations

from collections.abc import Mapping

from townsquare.mls.ciphersuite import get_cipher_suite
from townsquare.mls.ratchet_tree import RatchetTree
from townsquare.mls.testvectors.fields import (
    VectorMismatch,
    expect_equal,
    hex_field,
    int_field,
    list_field,
)
from townsquare.mls.tree_math import NodeIndex


def check(case: Mapping[str, object]) -> None:
    """
    Verify one tree-validation vector completely.

    :raises VectorMismatch: on the first difference.
    :raises MLSError: if the tree does not decode or a check of it fails.
    """
    suite = get_cipher_suite(int_field(case, "cipher_suite"))
    tree = RatchetTree.decode(suite, hex_field(case, "tree"))
    group_id = hex_field(case, "group_id")

    resolutions = list_field(case, "resolutions")
    tree_hashes = list_field(case, "tree_hashes")
    expect_equal("number of resolutions", len(resolutions), tree.node_width)
    expect_equal("number of tree hashes", len(tree_hashes), tree.node_width)
    for index in range(tree.node_width):
        node = NodeIndex(index)
        expected_resolution = resolutions[index]
        if not isinstance(expected_resolution, list):
            raise VectorMismatch(f"resolutions[{index}] is not an array")
        expect_equal(f"resolution[{index}]", list(tree.resolution(node)), expected_resolution)
        expected_hash = tree_hashes[index]
        if not isinstance(expected_hash, str):
            raise VectorMismatch(f"tree_hashes[{index}] is not a hex string")
        expect_equal(f"tree_hash[{index}]", tree.tree_hash(node), bytes.fromhex(expected_hash))

    tree.verify_parent_hashes()
    tree.verify_leaf_signatures(group_id)
    # Not asked by FORMAT.md, but every tree of the file is a valid group's
    # tree, so the remaining joiner checks must pass too.
    tree.verify_unmerged_leaves()
    tree.verify_unique_keys()
    expect_equal("re-encoded tree", tree.encode(), hex_field(case, "tree"))

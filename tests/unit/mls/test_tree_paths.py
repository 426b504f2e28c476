"""
Direct paths and copaths (RFC 9420 §4.1, Appendix C) from one walk equal the stepwise definitions.

``direct_path``, ``copath`` and ``filtered_direct_path_pairs`` walk to the root
in one loop with ``parent`` and ``sibling`` inlined; this checks them against
``parent`` and ``sibling`` applied step by step, for every node of trees of 1
to 65 leaves (most not a power of two, as Appendix C allows) and of 257.
"""

from __future__ import annotations

from townsquare.mls.tree_math import (
    NodeIndex,
    copath,
    direct_path,
    filtered_direct_path_pairs,
    node_count,
    parent,
    root,
    sibling,
)


def stepwise(x: NodeIndex, n_leaves: int) -> tuple[tuple[NodeIndex, ...], tuple[NodeIndex, ...]]:
    parents: list[NodeIndex] = []
    siblings: list[NodeIndex] = []
    while x != root(n_leaves):
        siblings.append(sibling(x, n_leaves))
        x = parent(x, n_leaves)
        parents.append(x)
    return tuple(parents), tuple(siblings)


def test_paths_from_one_walk_equal_the_stepwise_definitions() -> None:
    for n_leaves in (*range(1, 66), 257):
        for x in range(node_count(n_leaves)):
            parents, siblings = stepwise(NodeIndex(x), n_leaves)
            assert direct_path(NodeIndex(x), n_leaves) == parents, (x, n_leaves)
            assert copath(NodeIndex(x), n_leaves) == siblings, (x, n_leaves)
            assert filtered_direct_path_pairs(NodeIndex(x), n_leaves) == tuple(
                zip(parents, siblings, strict=True)
            )

"""
Checks ``tree-math.json``: node counts, root, left, right, parent, sibling (RFC 9420 App. C).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from townsquare.mls import tree_math
from townsquare.mls.errors import UsageError
from townsquare.mls.testvectors.fields import expect_equal, int_field, list_field
from townsquare.mls.tree_math import NodeIndex


def _or_none(fn: Callable[[NodeIndex], NodeIndex], x: NodeIndex) -> int | None:
    # The vectors give null where the relation is undefined (a leaf's
    # children, the root's parent and sibling); our functions raise there.
    try:
        return fn(x)
    except UsageError:
        return None


def check(case: Mapping[str, object]) -> None:
    """
    Verify one tree-math vector completely.

    :raises VectorMismatch: on the first difference.
    """
    n_leaves = int_field(case, "n_leaves")
    expect_equal("n_nodes", tree_math.node_count(n_leaves), int_field(case, "n_nodes"))
    expect_equal("root", tree_math.root(n_leaves), int_field(case, "root"))

    def parent(x: NodeIndex) -> NodeIndex:
        return tree_math.parent(x, n_leaves)

    def sibling(x: NodeIndex) -> NodeIndex:
        return tree_math.sibling(x, n_leaves)

    relations = {
        "left": tree_math.left,
        "right": tree_math.right,
        "parent": parent,
        "sibling": sibling,
    }
    for name, relation in relations.items():
        expected = list_field(case, name)
        for i in range(tree_math.node_count(n_leaves)):
            expect_equal(f"{name}[{i}]", _or_none(relation, NodeIndex(i)), expected[i])

"""
Array-based tree arithmetic for left-balanced binary trees (RFC 9420 §4, Appendix C).

Leaves sit at even node indices, parents at odd ones; a node's level is the
number of trailing one bits of its index. ``LeafIndex`` and ``NodeIndex`` are
distinct types because mixing them up is the classic ratchet-tree bug.
"""

from __future__ import annotations

from typing import NewType

from townsquare.mls.errors import UsageError

__all__ = [
    "LeafIndex",
    "NodeIndex",
    "copath",
    "direct_path",
    "filtered_direct_path_pairs",
    "is_leaf",
    "leaf_to_node",
    "left",
    "level",
    "node_count",
    "node_to_leaf",
    "parent",
    "right",
    "root",
    "sibling",
]

LeafIndex = NewType("LeafIndex", int)
NodeIndex = NewType("NodeIndex", int)


def node_count(n_leaves: int) -> int:
    """
    :returns: the number of nodes in a tree with ``n_leaves`` leaves (Appendix C ``node_width``).
    """
    return 0 if n_leaves == 0 else 2 * (n_leaves - 1) + 1


def level(x: NodeIndex) -> int:
    """
    :returns: the level of node ``x``: 0 for leaves, one more per step up (Appendix C).
    """
    # The level is the number of trailing one bits (Appendix C counts them in
    # a loop): ``x ^ (x + 1)`` sets exactly those bits and the one above them.
    # Every tree walk calls this, so it is done in O(1).
    return (x ^ (x + 1)).bit_length() - 1


def is_leaf(x: NodeIndex) -> bool:
    """
    :returns: whether ``x`` is a leaf's node index.
    """
    return x & 1 == 0


def leaf_to_node(leaf: LeafIndex) -> NodeIndex:
    """
    :returns: the node index of leaf ``leaf``.
    """
    return NodeIndex(2 * leaf)


def node_to_leaf(x: NodeIndex) -> LeafIndex:
    """
    :returns: the leaf index of node ``x``.
    :raises UsageError: if ``x`` is not a leaf.
    """
    if x & 1:
        raise UsageError(f"node {x} is not a leaf")
    return LeafIndex(x // 2)


def root(n_leaves: int) -> NodeIndex:
    """
    :returns: the root's node index in a tree with ``n_leaves`` leaves (Appendix C).
    :raises UsageError: for an empty tree.
    """
    if n_leaves < 1:
        raise UsageError("an empty tree has no root")
    w = node_count(n_leaves)
    return NodeIndex((1 << (w.bit_length() - 1)) - 1)


def left(x: NodeIndex) -> NodeIndex:
    """
    :returns: the left child of parent ``x`` (Appendix C).
    :raises UsageError: if ``x`` is a leaf.
    """
    k = level(x)
    if k == 0:
        raise UsageError(f"leaf {x} has no children")
    return NodeIndex(x ^ (0x01 << (k - 1)))


def right(x: NodeIndex) -> NodeIndex:
    """
    :returns: the right child of parent ``x`` (Appendix C).
    :raises UsageError: if ``x`` is a leaf.
    """
    k = level(x)
    if k == 0:
        raise UsageError(f"leaf {x} has no children")
    return NodeIndex(x ^ (0x03 << (k - 1)))


def _parent_step(x: NodeIndex) -> NodeIndex:
    # The parent in the infinite complete tree (Appendix C ``parent_step``).
    k = level(x)
    b = (x >> (k + 1)) & 0x01
    return NodeIndex((x | (1 << k)) ^ (b << (k + 1)))


def parent(x: NodeIndex, n_leaves: int) -> NodeIndex:
    """
    :returns: the parent of ``x`` in a tree with ``n_leaves`` leaves (Appendix C).
    :raises UsageError: if ``x`` is the root.
    """
    r = root(n_leaves)
    if x == r:
        raise UsageError("the root has no parent")
    width = node_count(n_leaves)
    p = _parent_step(x)
    while p >= width:
        p = _parent_step(p)
    return p


def sibling(x: NodeIndex, n_leaves: int) -> NodeIndex:
    """
    :returns: the other child of ``x``'s parent (Appendix C).
    :raises UsageError: if ``x`` is the root.
    """
    p = parent(x, n_leaves)
    return right(p) if x < p else left(p)


def _path_pairs(x: NodeIndex, n_leaves: int) -> list[tuple[NodeIndex, NodeIndex]]:
    # One walk from ``x`` to the root: each parent with the child of it that
    # is not on the walk (the copath node). Every commit walks its sender's
    # path several times, so this is parent() and sibling() inlined: the root
    # and width once, each step's level with one bit trick.
    r = root(n_leaves)
    width = node_count(n_leaves)
    pairs: list[tuple[NodeIndex, NodeIndex]] = []
    while x != r:
        p = int(x)
        while True:
            # _parent_step: the parent in the infinite complete tree.
            k = (p ^ (p + 1)).bit_length() - 1
            p = (p | (1 << k)) ^ (((p >> (k + 1)) & 1) << (k + 1))
            if p < width:
                break
        # The children of p (level k) lie at p ^ (1 << (k - 1)) and p ^ (3 << (k - 1)).
        k = (p ^ (p + 1)).bit_length() - 1
        other = p ^ (3 << (k - 1)) if x < p else p ^ (1 << (k - 1))
        pairs.append((NodeIndex(p), NodeIndex(other)))
        x = NodeIndex(p)
    return pairs


def direct_path(x: NodeIndex, n_leaves: int) -> tuple[NodeIndex, ...]:
    """
    :returns: the parents of ``x`` from its parent up to and including the root (§4.1).
    """
    return tuple(p for p, _ in _path_pairs(x, n_leaves))


def copath(x: NodeIndex, n_leaves: int) -> tuple[NodeIndex, ...]:
    """
    :returns: the siblings of ``x`` and of each node on its direct path, below the root (§4.1).
    """
    return tuple(s for _, s in _path_pairs(x, n_leaves))


def filtered_direct_path_pairs(
    x: NodeIndex, n_leaves: int
) -> tuple[tuple[NodeIndex, NodeIndex], ...]:
    """
    :returns: pairs ``(parent, copath child)`` along ``x``'s direct path, bottom up.

    The caller filters out the pairs whose copath child has an empty resolution
    (RFC 9420 §4.1.2, "filtered direct path"); that needs the tree's contents.
    """
    return tuple(_path_pairs(x, n_leaves))

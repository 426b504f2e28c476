"""
Fuzz target ``ratchet_tree``: ``RatchetTree.decode`` (RFC 9420 §7, §12.4.3.3) and a joiner's checks.

The input is the content of a ``ratchet_tree`` extension. The tree is read
under cipher suite 1 (whose hash the tree hashes use); seeds from other suites
still decode, and fail only the hash-dependent checks, as they should.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from fuzz.harness import FEEDBACK, Target, attempt, expect_round_trip
from townsquare.mls.ciphersuite import get_cipher_suite
from townsquare.mls.errors import (
    DecodeError,
    DuplicateKey,
    InvalidKey,
    InvalidSignature,
    InvalidUnmergedLeaves,
    ParentHashMismatch,
    TreeError,
)
from townsquare.mls.ratchet_tree import RatchetTree

if TYPE_CHECKING:
    from fuzz.seeds import SeedSource

__all__ = ["TARGET", "check"]

_SUITE = get_cipher_suite(1)
# Leaves from updates and commits sign the group id (RFC 9420 §7.2); the
# vectors' trees belong to groups we do not know, so their signatures fail
# with InvalidSignature, which still runs the whole verification path.
_GROUP_ID = b"townsquare fuzz"


def check(data: bytes) -> None:
    """
    Decode ``data`` as a ratchet tree, re-encode it, hash it and run each join-time check.

    Each check runs on its own, so a tree failing one still exercises the
    next: the errors its docstring lists are noted and passed over. Any other
    ``TreeError`` ends the input as a rejection; anything else is a finding.

    :param data: the fuzz input.
    :raises DecodeError: if it is not an ``optional<Node> ratchet_tree<V>``.
    :raises TreeError: (a subclass) if the nodes do not form a tree (``InvalidTreeShape``,
        RFC 9420 §7.1, §12.4.3.3), or a check fails in a way its docstring does not list.
    """
    tree = RatchetTree.decode(_SUITE, data)
    expect_round_trip("RatchetTree", tree.encode(), data)
    FEEDBACK.note_value(tree.to_nodes())
    tree.root_tree_hash()
    attempt("unmerged_leaves", tree.verify_unmerged_leaves, (InvalidUnmergedLeaves,))
    attempt("parent_hashes", tree.verify_parent_hashes, (ParentHashMismatch,))
    attempt("unique_keys", tree.verify_unique_keys, (DuplicateKey,))
    attempt(
        "leaf_signatures",
        lambda: tree.verify_leaf_signatures(_GROUP_ID),
        (InvalidSignature, InvalidKey),
    )


def _seeds(source: SeedSource) -> Iterable[bytes]:
    return source.ratchet_trees


TARGET = Target(
    name="ratchet_tree",
    summary="RatchetTree.decode (suite 1), round trip, tree hash, parent hashes, "
    "unmerged leaves, unique keys, leaf signatures",
    check=check,
    seeds=_seeds,
    allowed=(DecodeError, TreeError),
)

"""
What a RatchetTree caches (tree hashes, leaf encodings) and shares with its copies stays right.

A tree keeps each node's tree hash and each leaf's encoding, and shares its
storage with its copies until one of them writes (``mls/copy_on_write.py``).
These tests mutate trees and their copies in every way the protocol does and
check, after each step, every tree against one computed from scratch from its
nodes (RFC 9420 §7.8 tree hashes, §7.2 LeafNodeTBS), and that no write to one
tree shows in another.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

from townsquare.mls.ciphersuite import Rng, get_cipher_suite
from townsquare.mls.errors import MLSError
from townsquare.mls.group import Group, PendingCommit, StagedCommit
from townsquare.mls.key_package import KeyPackageBundle
from townsquare.mls.leaf_node import LeafNode
from townsquare.mls.proposals import Add, Remove
from townsquare.mls.ratchet_tree import RatchetTree, RatchetTreeNodes
from townsquare.mls.registries import LeafNodeSource
from townsquare.mls.tree_math import LeafIndex, NodeIndex

SUITE = get_cipher_suite(1)

MakeBundle = Callable[..., KeyPackageBundle]
MakeGroup = Callable[..., list[Group]]


def seeded_rng(seed: bytes) -> Rng:
    def rng(n: int) -> bytes:
        return hashlib.shake_256(seed).digest(n)

    return rng


@dataclass
class Snapshot:
    tree: RatchetTree
    encoding: bytes
    hashes: list[bytes]


def snapshot(tree: RatchetTree) -> Snapshot:
    return Snapshot(tree, tree.encode(), all_hashes(tree))


def all_hashes(tree: RatchetTree) -> list[bytes]:
    return [tree.tree_hash(NodeIndex(i)) for i in range(tree.node_width)]


def assert_consistent(tree: RatchetTree) -> None:
    """
    Check every cached tree hash and leaf encoding against a tree built afresh from the nodes.
    """
    nodes = list(tree.to_nodes().nodes)
    rebuilt = RatchetTree(SUITE, nodes)
    decoded = RatchetTree.decode(SUITE, RatchetTreeNodes(tuple(nodes)).encode())
    expected = all_hashes(rebuilt)
    assert all_hashes(tree) == expected
    assert all_hashes(decoded) == expected
    for leaf_index, leaf_node in tree.leaves():
        assert tree.leaf_encoding(leaf_index) == leaf_node.encode()
        assert decoded.leaf_encoding(leaf_index) == leaf_node.encode()


def assert_unchanged(kept: list[Snapshot]) -> None:
    for seen in kept:
        assert seen.tree.encode() == seen.encoding
        assert all_hashes(seen.tree) == seen.hashes


def leaf_of(make_bundle: MakeBundle, name: bytes) -> LeafNode:
    return make_bundle(name).key_package.leaf_node


def test_copies_mutated_every_way_keep_their_caches_right_and_apart(
    make_group: MakeGroup, make_bundle: MakeBundle
) -> None:
    # Six members: leaf 0's commit of the Adds left parents on its path.
    tree = make_group(6)[0].tree
    kept = [snapshot(tree)]
    assert_consistent(tree)

    added = tree.copy()
    assert added.add_leaf(leaf_of(make_bundle, b"joiner")) == 6
    assert_consistent(added)
    assert_unchanged(kept)
    kept.append(snapshot(added))

    # Enough Adds to double the tree to 16 leaves (new, cold hashes).
    grown = added.copy()
    for name in (b"j1", b"j2", b"j3"):
        grown.add_leaf(leaf_of(make_bundle, name))
    assert grown.leaf_count == 16
    assert_consistent(grown)
    assert_unchanged(kept)
    kept.append(snapshot(grown))

    updated = grown.copy()
    updated.update_leaf(LeafIndex(2), leaf_of(make_bundle, b"member-2 again"))
    assert_consistent(updated)
    assert_unchanged(kept)
    kept.append(snapshot(updated))

    # Removing the members right of leaf 7 halves the tree again.
    removed = updated.copy()
    for leaf_index in (9, 8, 7, 1):
        removed.remove_leaf(LeafIndex(leaf_index))
    assert removed.leaf_count == 8
    assert_consistent(removed)
    assert_unchanged(kept)
    kept.append(snapshot(removed))

    # An UpdatePath's public half: merge_path then set_leaf, as a commit does.
    merged = removed.copy()
    keys = [
        SUITE.hpke_generate_key_pair(seeded_rng(b"path key %d" % i))[1]
        for i in range(len(merged.filtered_direct_path(LeafIndex(3))))
    ]
    parent_hash = merged.merge_path(LeafIndex(3), keys)
    merged.set_leaf(
        LeafIndex(3),
        LeafNode(
            encryption_key=SUITE.hpke_generate_key_pair(seeded_rng(b"leaf key"))[1],
            signature_key=b"k" * 32,
            credential=leaf_of(make_bundle, b"x").credential,
            capabilities=leaf_of(make_bundle, b"x").capabilities,
            leaf_node_source=LeafNodeSource.COMMIT,
            parent_hash=parent_hash,
            signature=b"s" * 64,
        ),
    )
    assert_consistent(merged)
    assert_unchanged(kept)

    # The source of a copy writes too: its copies do not see it.
    tree_again = kept[0].tree.copy()
    child = tree_again.copy()
    before = snapshot(child)
    tree_again.remove_leaf(LeafIndex(5))
    assert_consistent(tree_again)
    assert_unchanged([before, *kept])


def test_trees_of_every_epoch_stay_as_they_were(
    make_group: MakeGroup, make_bundle: MakeBundle, rng: Rng
) -> None:
    # Real commits: paths, Adds, Removes and an Update, processed by a member;
    # every epoch's tree is kept (as past epochs are) and checked at the end.
    members = make_group(5)
    committer, receiver = members[0], members[1]
    kept: list[Snapshot] = []

    def commit(pending: PendingCommit) -> None:
        staged = receiver.process(pending.commit)
        assert isinstance(staged, StagedCommit)
        kept.extend((snapshot(committer.tree), snapshot(receiver.tree)))
        committer.merge(pending.staged)
        receiver.merge(staged)
        assert committer.tree_hash == receiver.tree_hash
        assert_consistent(committer.tree)
        assert_consistent(receiver.tree)

    commit(committer.commit(rng=rng, force_path=True))
    commit(committer.commit(rng=rng, proposals=[Add(make_bundle(b"late").key_package)]))
    commit(committer.commit(rng=rng, proposals=[Remove(3)]))
    committer.process(receiver.propose_update(rng=rng))
    commit(committer.commit(rng=rng))
    assert_unchanged(kept)


def test_a_decoded_tree_signs_and_hashes_from_the_bytes_it_was_decoded_from(
    make_group: MakeGroup,
) -> None:
    group: Group = make_group(4)[1]
    decoded = RatchetTree.decode(SUITE, group.tree.encode())
    for leaf_index, leaf_node in decoded.leaves():
        encoding = decoded.leaf_encoding(leaf_index)
        assert encoding == leaf_node.encode()
        assert leaf_node.to_be_signed(
            group.group_id, leaf_index, encoding=encoding
        ) == leaf_node.to_be_signed(group.group_id, leaf_index)
    decoded.verify(group.group_id)
    assert decoded.root_tree_hash() == group.tree_hash


def decode_outcome(decode: Callable[[bytes], object], data: bytes) -> tuple[str, int | None]:
    try:
        decode(data)
    except MLSError as exc:
        return type(exc).__name__, getattr(exc, "offset", None)
    return "ok", None


def reference_decode(data: bytes) -> RatchetTree:
    return RatchetTree(SUITE, RatchetTreeNodes.decode(data).nodes)


def test_decoding_a_tree_node_by_node_fails_as_the_struct_decoder_does(
    make_group: MakeGroup,
) -> None:
    # RatchetTree.decode reads node by node (to keep each leaf's bytes); on
    # any input it must fail, or not, exactly as RatchetTreeNodes.decode and
    # the constructor do: same error class, same offset.
    valid = make_group(3)[0].tree.encode()
    inputs = [valid[:n] for n in range(len(valid))]
    for position in range(0, len(valid), 3):
        for octet in (0x00, 0x01, 0x02, 0x40, 0xC0, 0xFF):
            inputs.append(valid[:position] + bytes((octet,)) + valid[position + 1 :])
    inputs.append(valid + b"\x00")
    for data in inputs:
        expected = decode_outcome(reference_decode, data)
        assert decode_outcome(lambda d: RatchetTree.decode(SUITE, d), data) == expected, data.hex()

"""
The public ratchet tree (RFC 9420 §7): shape, hashes, joiner checks, mutations and exact errors.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Callable
from dataclasses import dataclass, replace

import pytest

from townsquare.mls.ciphersuite import get_cipher_suite
from townsquare.mls.credentials import BasicCredential
from townsquare.mls.errors import (
    DuplicateKey,
    InvalidSignature,
    InvalidTreeShape,
    InvalidUnmergedLeaves,
    ParentHashMismatch,
    PathError,
    UsageError,
)
from townsquare.mls.group_context import GroupContext
from townsquare.mls.leaf_node import Capabilities, LeafNode, Lifetime
from townsquare.mls.ratchet_tree import (
    TREE_HASH_INPUT,
    LeafNodeHashInput,
    Node,
    ParentHashInput,
    ParentNode,
    ParentNodeHashInput,
    RatchetTree,
    RatchetTreeNodes,
)
from townsquare.mls.registries import LeafNodeSource
from townsquare.mls.tree_math import LeafIndex, NodeIndex
from townsquare.mls.treekem import TreeKEMPrivate, create_update_path, process_update_path

SUITE = get_cipher_suite(1)
GROUP_ID = b"townsquare ratchet tree tests"
CAPABILITIES = Capabilities(
    versions=(1,), cipher_suites=(1,), extensions=(), proposals=(), credentials=(1,)
)


def seeded_rng(seed: bytes) -> Callable[[int], bytes]:
    counter = itertools.count()

    def rng(n: int) -> bytes:
        out = b""
        while len(out) < n:
            out += hashlib.sha256(seed + next(counter).to_bytes(8, "big")).digest()
        return out[:n]

    return rng


@dataclass
class Member:
    signature_private_key: bytes
    private: TreeKEMPrivate


def key_package_leaf(name: bytes) -> tuple[LeafNode, bytes, bytes]:
    rng = seeded_rng(name)
    signature_private_key, signature_key = SUITE.generate_signature_key_pair(rng)
    encryption_private_key, encryption_key = SUITE.hpke_generate_key_pair(rng)
    unsigned = LeafNode(
        encryption_key=encryption_key,
        signature_key=signature_key,
        credential=BasicCredential(name),
        capabilities=CAPABILITIES,
        leaf_node_source=LeafNodeSource.KEY_PACKAGE,
        lifetime=Lifetime(0, 2**64 - 1),
    )
    signature = SUITE.sign_with_label(
        signature_private_key, b"LeafNodeTBS", unsigned.to_be_signed()
    )
    return replace(unsigned, signature=signature), signature_private_key, encryption_private_key


def context(epoch: int) -> GroupContext:
    return GroupContext(
        cipher_suite=1,
        group_id=GROUP_ID,
        epoch=epoch,
        tree_hash=b"",
        confirmed_transcript_hash=b"",
    )


def build_group(
    size: int, committers: tuple[int, ...]
) -> tuple[RatchetTree, dict[LeafIndex, Member]]:
    """
    Add ``size`` members with Adds, then let each of ``committers`` commit an UpdatePath.
    """
    members: dict[LeafIndex, Member] = {}
    tree: RatchetTree | None = None
    for i in range(size):
        leaf_node, signature_private_key, encryption_private_key = key_package_leaf(b"m%d" % i)
        if tree is None:
            tree = RatchetTree(SUITE, [leaf_node])
            index = LeafIndex(0)
        else:
            index = tree.add_leaf(leaf_node)
        members[index] = Member(
            signature_private_key, TreeKEMPrivate(SUITE, index, encryption_private_key)
        )
    assert tree is not None
    for epoch, committer in enumerate(committers):
        sender = LeafIndex(committer)
        created = create_update_path(
            tree,
            members[sender].private,
            group_context=context(epoch),
            signature_private_key=members[sender].signature_private_key,
            rng=seeded_rng(b"commit %d" % epoch),
        )
        for index, member in members.items():
            if index == sender:
                continue
            processed = process_update_path(
                tree,
                member.private,
                sender=sender,
                update_path=created.update_path,
                group_context=context(epoch),
            )
            assert processed.commit_secret == created.commit_secret
            member.private = processed.private
        members[sender].private = created.private
        tree = created.tree
    return tree, members


@pytest.fixture(scope="module")
def group() -> tuple[RatchetTree, dict[LeafIndex, Member]]:
    # Leaves 0-5 in an 8-leaf tree. Commits by leaves 0, 2 and 4 leave parents 1, 3,
    # 5, 7 and 9 set; 11 is blank (leaf 4's copath child 13 was empty) and so is 13.
    tree, members = build_group(6, committers=(0, 2, 4))
    return tree, members


@pytest.fixture
def tree(group: tuple[RatchetTree, dict[LeafIndex, Member]]) -> RatchetTree:
    return group[0].copy()


def nodes_of(tree: RatchetTree) -> list[Node | None]:
    return list(tree.to_nodes().nodes)


def with_node(tree: RatchetTree, index: int, node: Node | None) -> RatchetTree:
    nodes = nodes_of(tree)
    nodes[index] = node
    return RatchetTree(SUITE, nodes)


def parent_at(tree: RatchetTree, index: int) -> ParentNode:
    node = tree.parent_node(NodeIndex(index))
    assert node is not None
    return node


# -- Shape (RFC 9420 §7.1, §12.4.3.3) -------------------------------------------------------


def test_encoding_round_trips_and_trims_trailing_blanks(tree: RatchetTree) -> None:
    # Six leaves in an eight-leaf tree: leaves 6 and 7 and the parent above them are
    # blank, so the encoding stops at leaf 5 (node 10).
    assert tree.leaf_count == 8
    assert tree.node_width == 15
    assert len(tree.to_nodes().nodes) == 11
    again = RatchetTree.decode(SUITE, tree.encode())
    assert again.encode() == tree.encode()
    assert again.root_tree_hash() == tree.root_tree_hash()


def test_empty_tree_is_rejected() -> None:
    with pytest.raises(InvalidTreeShape):
        RatchetTree(SUITE, [])


def test_trailing_blank_node_is_rejected(tree: RatchetTree) -> None:
    encoded = RatchetTreeNodes((*tree.to_nodes().nodes, None, None)).encode()
    with pytest.raises(InvalidTreeShape, match="blank"):
        RatchetTree.decode(SUITE, encoded)


def test_tree_ending_in_a_parent_is_rejected(tree: RatchetTree) -> None:
    nodes = tree.to_nodes().nodes
    with pytest.raises(InvalidTreeShape, match="parent"):
        RatchetTree(SUITE, [*nodes, parent_at(tree, 1)])


def test_leaf_in_a_parent_slot_is_rejected(tree: RatchetTree) -> None:
    nodes = nodes_of(tree)
    nodes[1] = nodes[0]
    with pytest.raises(InvalidTreeShape, match="node 1"):
        RatchetTree(SUITE, nodes)


def test_parent_in_a_leaf_slot_is_rejected(tree: RatchetTree) -> None:
    nodes = nodes_of(tree)
    nodes[2] = nodes[1]
    with pytest.raises(InvalidTreeShape, match="node 2"):
        RatchetTree(SUITE, nodes)


# -- Resolution and hashes (RFC 9420 §4.1.1, §7.8) -------------------------------------------


def test_resolution_follows_blanks_and_unmerged_leaves(tree: RatchetTree) -> None:
    new_leaf, _, _ = key_package_leaf(b"joiner")
    assert tree.add_leaf(new_leaf) == 6
    # Only node 7 is non-blank on leaf 6's direct path (13, 11, 7).
    assert parent_at(tree, 7).unmerged_leaves == (6,)
    assert tree.resolution(NodeIndex(11)) == (9, 12)
    assert tree.resolution(NodeIndex(13)) == (12,)
    assert tree.resolution(NodeIndex(14)) == ()
    assert tree.resolution(NodeIndex(7)) == (7, 12)
    assert tree.resolution(NodeIndex(9)) == (9,)


def reference_tree_hash(nodes: list[Node | None], node: int, level: int) -> bytes:
    # RFC 9420 §7.8 straight from the structs, recursively, for comparison.
    value = nodes[node]
    if level == 0:
        assert value is None or isinstance(value, LeafNode)
        hash_input = TREE_HASH_INPUT.encode(
            LeafNodeHashInput(leaf_index=node // 2, leaf_node=value)
        )
    else:
        assert value is None or isinstance(value, ParentNode)
        half = 1 << (level - 1)
        hash_input = TREE_HASH_INPUT.encode(
            ParentNodeHashInput(
                parent_node=value,
                left_hash=reference_tree_hash(nodes, node - half, level - 1),
                right_hash=reference_tree_hash(nodes, node + half, level - 1),
            )
        )
    return SUITE.hash(hash_input)


def padded_nodes(tree: RatchetTree) -> list[Node | None]:
    return [tree.node(NodeIndex(i)) for i in range(tree.node_width)]


def node_level(node: int) -> int:
    return (node ^ (node + 1)).bit_length() - 1


def with_joiners(tree: RatchetTree, *names: bytes) -> RatchetTree:
    for name in names:
        tree.add_leaf(key_package_leaf(name)[0])
    return tree


def test_tree_hashes_match_the_hash_input_structs(tree: RatchetTree) -> None:
    # Leaves 6 and 7 join: node 7 lists them as unmerged, nodes 11 and 13 stay blank.
    with_joiners(tree, b"j1", b"j2")
    fresh = RatchetTree.decode(SUITE, tree.encode())
    nodes = padded_nodes(fresh)
    for index in range(fresh.node_width):
        expected = reference_tree_hash(nodes, index, node_level(index))
        assert fresh.tree_hash(NodeIndex(index)) == expected, index
        assert tree.tree_hash(NodeIndex(index)) == expected, index


def test_parent_hashes_match_the_parent_hash_input_struct(tree: RatchetTree) -> None:
    # RFC 9420 §7.9: the original sibling tree hash is the sibling's tree hash
    # with P's unmerged leaves blanked and taken out of every unmerged_leaves.
    with_joiners(tree, b"j1", b"j2")
    for index in range(1, tree.node_width, 2):
        parent_node = tree.parent_node(NodeIndex(index))
        if parent_node is None:
            continue
        removed = set(parent_node.unmerged_leaves)
        original = padded_nodes(tree)
        for i, value in enumerate(original):
            if i % 2 == 0 and i // 2 in removed:
                original[i] = None
            elif isinstance(value, ParentNode):
                kept = tuple(u for u in value.unmerged_leaves if u not in removed)
                original[i] = replace(value, unmerged_leaves=kept)
        half = 1 << (node_level(index) - 1)
        for sibling in (index - half, index + half):
            expected = SUITE.hash(
                ParentHashInput(
                    encryption_key=parent_node.encryption_key,
                    parent_hash=parent_node.parent_hash,
                    original_sibling_tree_hash=reference_tree_hash(
                        original, sibling, node_level(sibling)
                    ),
                ).encode()
            )
            assert tree.parent_hash(NodeIndex(index), NodeIndex(sibling)) == expected


def test_hashes_of_an_extended_tree_match_a_fresh_computation(tree: RatchetTree) -> None:
    # Three joiners fill leaves 6 and 7, then double the tree to 16 leaves.
    tree.root_tree_hash()
    with_joiners(tree, b"j1", b"j2", b"j3")
    assert tree.leaf_count == 16
    fresh = RatchetTree.decode(SUITE, tree.encode())
    for index in range(tree.node_width):
        assert tree.tree_hash(NodeIndex(index)) == fresh.tree_hash(NodeIndex(index)), index


def test_cached_hashes_match_a_fresh_computation_after_each_mutation(tree: RatchetTree) -> None:
    tree.root_tree_hash()
    new_leaf, _, _ = key_package_leaf(b"joiner")
    updated_leaf, _, _ = key_package_leaf(b"m1 again")
    tree.add_leaf(new_leaf)
    assert tree.root_tree_hash() == RatchetTree.decode(SUITE, tree.encode()).root_tree_hash()
    tree.update_leaf(LeafIndex(1), updated_leaf)
    assert tree.root_tree_hash() == RatchetTree.decode(SUITE, tree.encode()).root_tree_hash()
    tree.remove_leaf(LeafIndex(3))
    fresh = RatchetTree.decode(SUITE, tree.encode())
    for index in range(tree.node_width):
        assert tree.tree_hash(NodeIndex(index)) == fresh.tree_hash(NodeIndex(index))


def test_copy_is_independent(tree: RatchetTree) -> None:
    before = tree.encode()
    staged = tree.copy()
    staged.remove_leaf(LeafIndex(5))
    staged.remove_leaf(LeafIndex(4))
    assert staged.leaf_count == 4
    assert tree.encode() == before
    assert tree.leaf_count == 8


# -- Joiner checks (RFC 9420 §7.9.2, §7.3, §12.4.3.1) -----------------------------------------


def test_valid_tree_passes_every_check(tree: RatchetTree) -> None:
    tree.verify(GROUP_ID)


def test_tampered_parent_hash_is_rejected(tree: RatchetTree) -> None:
    parent = parent_at(tree, 3)
    bad = with_node(tree, 3, replace(parent, parent_hash=bytes(len(parent.parent_hash))))
    before = bad.encode()
    with pytest.raises(ParentHashMismatch, match="node"):
        bad.verify_parent_hashes()
    assert bad.encode() == before


def test_tampered_parent_key_breaks_the_chain_below_it(tree: RatchetTree) -> None:
    parent = parent_at(tree, 7)
    bad = with_node(tree, 7, replace(parent, encryption_key=parent_at(tree, 1).encryption_key))
    with pytest.raises(ParentHashMismatch):
        bad.verify_parent_hashes()


def test_unlinked_parent_is_rejected(tree: RatchetTree) -> None:
    # Only leaf 0's parent hash links to node 1; a leaf from a KeyPackage has none.
    bad = with_node(tree, 0, key_package_leaf(b"m0 again")[0])
    with pytest.raises(ParentHashMismatch, match=r"node 1 .*\(0 descendants"):
        bad.verify_parent_hashes()


def test_link_through_a_blank_child_needs_the_rest_of_its_resolution_unmerged(
    tree: RatchetTree,
) -> None:
    # Leaf 4's commit set node 9 and then node 7 through the blank node 11, so
    # node 9 links to node 7. Node 7 now also lists leaf 6, which is under 11
    # but not in its resolution (9): the parent hash still matches (the
    # sibling, 3, holds no leaf 6), but the unmerged leaves do not (§7.9.2).
    tree.verify_parent_hashes()
    bad = with_node(tree, 7, replace(parent_at(tree, 7), unmerged_leaves=(6,)))
    with pytest.raises(ParentHashMismatch, match=r"node 7 .*\(0 descendants"):
        bad.verify_parent_hashes()


def test_tampered_leaf_signature_is_rejected(tree: RatchetTree) -> None:
    leaf = tree.leaf(LeafIndex(2))
    assert leaf is not None
    forged = bytearray(leaf.signature)
    forged[0] ^= 1
    bad = with_node(tree, 4, replace(leaf, signature=bytes(forged)))
    before = bad.encode()
    with pytest.raises(InvalidSignature, match="leaf 2"):
        bad.verify_leaf_signatures(GROUP_ID)
    assert bad.encode() == before


def test_leaf_signature_binds_the_group_id(tree: RatchetTree) -> None:
    # Leaves 0 and 4 committed, so their signatures cover the group id.
    with pytest.raises(InvalidSignature, match="leaf 0"):
        tree.verify_leaf_signatures(b"another group")


def test_unsorted_unmerged_leaves_are_rejected(tree: RatchetTree) -> None:
    for name in (b"j1", b"j2"):
        tree.add_leaf(key_package_leaf(name)[0])
    parent = parent_at(tree, 7)
    assert parent.unmerged_leaves == (6, 7)
    bad = with_node(tree, 7, replace(parent, unmerged_leaves=(7, 6)))
    with pytest.raises(InvalidUnmergedLeaves, match="sorted"):
        bad.verify_unmerged_leaves()


def test_tree_with_unmerged_leaves_passes_every_check(tree: RatchetTree) -> None:
    with_joiners(tree, b"j1", b"j2")
    RatchetTree.decode(SUITE, tree.encode()).verify(GROUP_ID)


@pytest.mark.parametrize("leaf", [8, 0xFFFFFFFF], ids=["first-past-the-end", "uint32-max"])
def test_unmerged_leaf_outside_the_tree_is_rejected_when_decoding(
    tree: RatchetTree, leaf: int
) -> None:
    # Found by fuzzing (fuzz/crashers/ratchet_tree/unmerged-leaf-outside-tree):
    # resolutions and parent hashes indexed the node array with the entry and
    # raised IndexError. The tree has 8 leaves; node 1 now lists one past them.
    nodes = nodes_of(tree)
    nodes[1] = replace(parent_at(tree, 1), unmerged_leaves=(leaf,))
    encoded = RatchetTreeNodes(tuple(nodes)).encode()
    with pytest.raises(InvalidUnmergedLeaves) as raised:
        RatchetTree.decode(SUITE, encoded)
    assert type(raised.value) is InvalidUnmergedLeaves
    assert str(raised.value) == f"unmerged leaf {leaf} of node 1 is outside the tree (8 leaves)"


def test_negative_unmerged_leaf_is_rejected(tree: RatchetTree) -> None:
    # Not encodable, but a list index all the same: -1 would name the last leaf.
    nodes = nodes_of(tree)
    nodes[1] = replace(parent_at(tree, 1), unmerged_leaves=(-1,))
    with pytest.raises(InvalidUnmergedLeaves, match="unmerged leaf -1 of node 1 is outside"):
        RatchetTree(SUITE, nodes)


def test_unmerged_leaf_outside_the_subtree_is_rejected(tree: RatchetTree) -> None:
    bad = with_node(tree, 1, replace(parent_at(tree, 1), unmerged_leaves=(2,)))
    with pytest.raises(InvalidUnmergedLeaves, match="not in its subtree"):
        bad.verify_unmerged_leaves()


def test_blank_unmerged_leaf_is_rejected(tree: RatchetTree) -> None:
    bad = with_node(tree, 7, replace(parent_at(tree, 7), unmerged_leaves=(6,)))
    with pytest.raises(InvalidUnmergedLeaves, match="blank"):
        bad.verify_unmerged_leaves()


def test_unmerged_leaf_missing_from_an_intermediate_node_is_rejected(tree: RatchetTree) -> None:
    # Leaf 5 listed as unmerged at node 7 but not at node 9, which lies between.
    bad = with_node(tree, 7, replace(parent_at(tree, 7), unmerged_leaves=(5,)))
    with pytest.raises(InvalidUnmergedLeaves, match="node 9"):
        bad.verify_unmerged_leaves()


def test_duplicate_encryption_key_is_rejected(tree: RatchetTree) -> None:
    leaf = tree.leaf(LeafIndex(1))
    assert leaf is not None
    bad = with_node(tree, 5, replace(parent_at(tree, 5), encryption_key=leaf.encryption_key))
    with pytest.raises(DuplicateKey, match="encryption key"):
        bad.verify_unique_keys()


def test_duplicate_signature_key_is_rejected(tree: RatchetTree) -> None:
    leaf_1 = tree.leaf(LeafIndex(1))
    leaf_2 = tree.leaf(LeafIndex(2))
    assert leaf_1 is not None
    assert leaf_2 is not None
    bad = with_node(tree, 4, replace(leaf_2, signature_key=leaf_1.signature_key))
    with pytest.raises(DuplicateKey, match="signature key"):
        bad.verify_unique_keys()


# -- Mutations (RFC 9420 §7.7, §12.1) --------------------------------------------------------


def test_add_fills_the_leftmost_blank_leaf_then_extends(tree: RatchetTree) -> None:
    tree.remove_leaf(LeafIndex(1))
    assert tree.add_leaf(key_package_leaf(b"a")[0]) == 1
    assert tree.add_leaf(key_package_leaf(b"b")[0]) == 6
    assert tree.add_leaf(key_package_leaf(b"c")[0]) == 7
    assert tree.leaf_count == 8
    assert tree.add_leaf(key_package_leaf(b"d")[0]) == 8
    assert tree.leaf_count == 16
    assert tree.node(NodeIndex(15)) is None


def test_update_replaces_the_leaf_and_blanks_its_direct_path(tree: RatchetTree) -> None:
    new_leaf = key_package_leaf(b"m4 again")[0]
    tree.update_leaf(LeafIndex(4), new_leaf)
    assert tree.leaf(LeafIndex(4)) == new_leaf
    assert [tree.node(NodeIndex(i)) for i in (9, 11, 7)] == [None, None, None]
    assert tree.node(NodeIndex(3)) is not None


def test_remove_blanks_the_path_and_truncates(tree: RatchetTree) -> None:
    tree.remove_leaf(LeafIndex(5))
    assert tree.leaf_count == 8
    assert tree.node(NodeIndex(7)) is None
    tree.remove_leaf(LeafIndex(4))
    # RFC 9420 §12.1.3: the right subtree has no member left, so the tree halves.
    assert tree.leaf_count == 4
    assert tree.node_width == 7
    assert tree.add_leaf(key_package_leaf(b"e")[0]) == 4
    assert tree.leaf_count == 8


def test_removing_a_blank_leaf_is_a_usage_error(tree: RatchetTree) -> None:
    before = tree.encode()
    with pytest.raises(UsageError):
        tree.remove_leaf(LeafIndex(6))
    with pytest.raises(UsageError):
        tree.update_leaf(LeafIndex(9), key_package_leaf(b"x")[0])
    assert tree.encode() == before


def test_removing_the_last_member_is_a_usage_error() -> None:
    tree = RatchetTree(SUITE, [key_package_leaf(b"alone")[0]])
    with pytest.raises(UsageError):
        tree.remove_leaf(LeafIndex(0))
    assert tree.leaf(LeafIndex(0)) is not None


def test_merge_path_with_wrong_key_count_changes_nothing(tree: RatchetTree) -> None:
    before = tree.encode()
    assert len(tree.filtered_direct_path(LeafIndex(2))) == 3
    with pytest.raises(PathError):
        tree.merge_path(LeafIndex(2), [b"\x02" * 32, b"\x03" * 32])
    assert tree.encode() == before


def test_filtered_direct_path_skips_empty_copath_children(tree: RatchetTree) -> None:
    # Leaf 5's copath: 8 (leaf 4), 13 (blank 6, 7), 3 (leaves 0-3). Node 11 is dropped.
    assert tree.filtered_direct_path(LeafIndex(5)) == ((9, 8), (7, 3))


def test_repr_shows_size_only(tree: RatchetTree) -> None:
    assert repr(tree) == "<RatchetTree 8 leaves, 6 members>"

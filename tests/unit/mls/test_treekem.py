"""
TreeKEM (RFC 9420 §7.4-§7.6): creating and processing UpdatePaths, with exact errors and no changes.
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
    DecryptError,
    DuplicateKey,
    InvalidKey,
    InvalidLeafNode,
    InvalidSignature,
    ParentHashMismatch,
    PathError,
    PrivateKeyMismatch,
    UsageError,
)
from townsquare.mls.group_context import GroupContext
from townsquare.mls.leaf_node import Capabilities, LeafNode, Lifetime
from townsquare.mls.ratchet_tree import RatchetTree
from townsquare.mls.registries import LeafNodeSource
from townsquare.mls.tree_math import LeafIndex, NodeIndex
from townsquare.mls.treekem import (
    CreatedUpdatePath,
    TreeKEMPrivate,
    create_update_path,
    decrypt_update_path,
    derive_node_key_pair,
    merge_update_path,
    process_update_path,
)
from townsquare.mls.update_path import HPKECiphertext, UpdatePath

SUITE = get_cipher_suite(1)
GROUP_ID = b"townsquare treekem tests"
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


def resign(leaf_node: LeafNode, signature_private_key: bytes, leaf_index: LeafIndex) -> LeafNode:
    unsigned = replace(leaf_node, signature=b"")
    tbs = unsigned.to_be_signed(GROUP_ID, leaf_index)
    return replace(
        unsigned, signature=SUITE.sign_with_label(signature_private_key, b"LeafNodeTBS", tbs)
    )


CONTEXT = GroupContext(
    cipher_suite=1, group_id=GROUP_ID, epoch=7, tree_hash=b"", confirmed_transcript_hash=b"th"
)


class Group:
    """
    Members 0-4 of an 8-leaf tree after commits by leaves 0 and 3.
    """

    def __init__(self) -> None:
        self.members: dict[LeafIndex, Member] = {}
        leaf_node, signature_private_key, encryption_private_key = key_package_leaf(b"m0")
        self.tree = RatchetTree(SUITE, [leaf_node])
        self.members[LeafIndex(0)] = Member(
            signature_private_key, TreeKEMPrivate(SUITE, LeafIndex(0), encryption_private_key)
        )
        for i in range(1, 5):
            self.add(b"m%d" % i)
        for committer in (0, 3):
            self.commit(LeafIndex(committer))

    def add(self, name: bytes) -> LeafIndex:
        leaf_node, signature_private_key, encryption_private_key = key_package_leaf(name)
        index = self.tree.add_leaf(leaf_node)
        self.members[index] = Member(
            signature_private_key, TreeKEMPrivate(SUITE, index, encryption_private_key)
        )
        return index

    def create(self, sender: LeafIndex, excluded: tuple[LeafIndex, ...] = ()) -> CreatedUpdatePath:
        return create_update_path(
            self.tree,
            self.members[sender].private,
            group_context=CONTEXT,
            signature_private_key=self.members[sender].signature_private_key,
            # Seeded by the tree too, so that a second path from a sender is fresh.
            rng=seeded_rng(b"path from %d " % sender + self.tree.root_tree_hash()),
            excluded_leaves=excluded,
        )

    def commit(self, sender: LeafIndex) -> None:
        created = self.create(sender)
        for index, member in self.members.items():
            if index != sender:
                member.private = process_update_path(
                    self.tree,
                    member.private,
                    sender=sender,
                    update_path=created.update_path,
                    group_context=CONTEXT,
                ).private
        self.members[sender].private = created.private
        self.tree = created.tree


@pytest.fixture(scope="module")
def shared_group() -> Group:
    return Group()


@pytest.fixture
def group(shared_group: Group) -> Group:
    copy = Group.__new__(Group)
    copy.tree = shared_group.tree.copy()
    copy.members = {i: replace(m) for i, m in shared_group.members.items()}
    return copy


def with_nodes(update_path: UpdatePath, **changes: object) -> UpdatePath:
    return replace(update_path, **changes)  # type: ignore[arg-type]


# -- Round trips ---------------------------------------------------------------------------


def test_every_member_derives_the_committers_commit_secret(group: Group) -> None:
    sender = LeafIndex(1)
    created = group.create(sender)
    # Leaf 1's copath: leaf 0, node 5 (set by leaf 3), node 11 (blank, over leaf 4).
    assert [len(n.encrypted_path_secret) for n in created.update_path.nodes] == [1, 1, 1]
    created.private.check_consistent(created.tree)
    created.tree.verify(GROUP_ID)
    for index, member in group.members.items():
        if index == sender:
            continue
        processed = process_update_path(
            group.tree,
            member.private,
            sender=sender,
            update_path=created.update_path,
            group_context=CONTEXT,
        )
        assert processed.commit_secret == created.commit_secret
        assert processed.tree.encode() == created.tree.encode()
        assert processed.group_context == created.group_context
        assert processed.path_secret == created.path_secret_for(index)
        processed.private.check_consistent(processed.tree)


def test_new_members_in_the_same_commit_get_no_ciphertext(group: Group) -> None:
    joiner = group.add(b"joiner")
    assert joiner == 5
    sender = LeafIndex(0)
    created = group.create(sender, excluded=(joiner,))
    # Leaf 0's copath: leaf 1, node 5, node 11 (blank, over leaf 4 and the joiner).
    assert group.tree.resolution(NodeIndex(11)) == (8, 10)
    assert [len(n.encrypted_path_secret) for n in created.update_path.nodes] == [1, 1, 1]
    processed = process_update_path(
        group.tree,
        group.members[LeafIndex(4)].private,
        sender=sender,
        update_path=created.update_path,
        group_context=CONTEXT,
        excluded_leaves=(joiner,),
    )
    assert processed.commit_secret == created.commit_secret
    # The Welcome's path secret gives the joiner the keys from node 7 up.
    secret = created.path_secret_for(joiner)
    assert derive_node_key_pair(SUITE, secret)[1] == created.tree.encryption_key(NodeIndex(7))
    joined = group.members[joiner].private.with_path_secrets((NodeIndex(7),), secret)
    joined.check_consistent(created.tree)


def test_single_member_path_has_no_nodes() -> None:
    leaf_node, signature_private_key, encryption_private_key = key_package_leaf(b"alone")
    tree = RatchetTree(SUITE, [leaf_node])
    created = create_update_path(
        tree,
        TreeKEMPrivate(SUITE, LeafIndex(0), encryption_private_key),
        group_context=CONTEXT,
        signature_private_key=signature_private_key,
        rng=seeded_rng(b"alone"),
    )
    assert created.update_path.nodes == ()
    assert created.update_path.leaf_node.parent_hash == b""
    assert len(created.commit_secret) == SUITE.hash_length
    merged = merge_update_path(tree, LeafIndex(0), created.update_path, group_id=GROUP_ID)
    assert merged.encode() == created.tree.encode()


# -- Rejected UpdatePaths: exact error, nothing changed ---------------------------------------


def assert_rejected(
    group: Group,
    *,
    receiver: LeafIndex,
    sender: LeafIndex,
    update_path: UpdatePath,
    error: type[Exception],
    match: str | None,
) -> None:
    tree_before = group.tree.encode()
    hash_before = group.tree.root_tree_hash()
    private_before = group.members[receiver].private
    with pytest.raises(error, match=match):
        process_update_path(
            group.tree,
            group.members[receiver].private,
            sender=sender,
            update_path=update_path,
            group_context=CONTEXT,
        )
    assert group.tree.encode() == tree_before
    assert group.tree.root_tree_hash() == hash_before
    assert group.members[receiver].private == private_before


def test_update_path_with_a_missing_node_is_rejected(group: Group) -> None:
    created = group.create(LeafIndex(1))
    short = with_nodes(created.update_path, nodes=created.update_path.nodes[:-1])
    assert_rejected(
        group,
        receiver=LeafIndex(4),
        sender=LeafIndex(1),
        update_path=short,
        error=PathError,
        match="has 2 nodes",
    )
    with pytest.raises(PathError):
        decrypt_update_path(
            created.tree,
            group.members[LeafIndex(4)].private,
            sender=LeafIndex(1),
            update_path=short,
            group_context=created.group_context,
        )


def test_update_path_with_an_extra_node_is_rejected(group: Group) -> None:
    created = group.create(LeafIndex(1))
    nodes = created.update_path.nodes
    extra = replace(nodes[0], encryption_key=SUITE.hpke_generate_key_pair(seeded_rng(b"x"))[1])
    long = with_nodes(created.update_path, nodes=(*nodes, extra))
    assert_rejected(
        group,
        receiver=LeafIndex(4),
        sender=LeafIndex(1),
        update_path=long,
        error=PathError,
        match="has 4 nodes",
    )


def test_public_key_not_matching_the_path_secret_is_rejected(group: Group) -> None:
    created = group.create(LeafIndex(1))
    nodes = list(created.update_path.nodes)
    # Leaf 4 decrypts the root's path secret; a root key not derived from it is refused.
    nodes[2] = replace(nodes[2], encryption_key=nodes[0].encryption_key)
    private = group.members[LeafIndex(4)].private
    with pytest.raises(PathError, match="node 7"):
        decrypt_update_path(
            created.tree,
            private,
            sender=LeafIndex(1),
            update_path=with_nodes(created.update_path, nodes=tuple(nodes)),
            group_context=created.group_context,
        )
    assert group.members[LeafIndex(4)].private == private


def test_tampered_path_ciphertext_is_rejected(group: Group) -> None:
    created = group.create(LeafIndex(1))
    nodes = list(created.update_path.nodes)
    ciphertext = nodes[2].encrypted_path_secret[0]
    flipped = bytes([ciphertext.ciphertext[0] ^ 1]) + ciphertext.ciphertext[1:]
    nodes[2] = replace(
        nodes[2], encrypted_path_secret=(HPKECiphertext(ciphertext.kem_output, flipped),)
    )
    tampered = with_nodes(created.update_path, nodes=tuple(nodes))
    assert_rejected(
        group,
        receiver=LeafIndex(4),
        sender=LeafIndex(1),
        update_path=tampered,
        error=DecryptError,
        match=None,
    )


def test_wrong_number_of_ciphertexts_is_rejected(group: Group) -> None:
    created = group.create(LeafIndex(1))
    nodes = list(created.update_path.nodes)
    nodes[1] = replace(nodes[1], encrypted_path_secret=())
    tampered = with_nodes(created.update_path, nodes=tuple(nodes))
    assert_rejected(
        group,
        receiver=LeafIndex(2),
        sender=LeafIndex(1),
        update_path=tampered,
        error=PathError,
        match="0 ciphertexts",
    )


def test_leaf_parent_hash_not_matching_the_path_is_rejected(group: Group) -> None:
    created = group.create(LeafIndex(1))
    nodes = list(created.update_path.nodes)
    nodes[1] = replace(nodes[1], encryption_key=SUITE.hpke_generate_key_pair(seeded_rng(b"k"))[1])
    tampered = with_nodes(created.update_path, nodes=tuple(nodes))
    assert_rejected(
        group,
        receiver=LeafIndex(4),
        sender=LeafIndex(1),
        update_path=tampered,
        error=ParentHashMismatch,
        match="parent hash",
    )


def test_leaf_not_from_a_commit_is_rejected(group: Group) -> None:
    created = group.create(LeafIndex(1))
    leaf = replace(
        created.update_path.leaf_node, leaf_node_source=LeafNodeSource.UPDATE, parent_hash=None
    )
    leaf = resign(leaf, group.members[LeafIndex(1)].signature_private_key, LeafIndex(1))
    tampered = with_nodes(created.update_path, leaf_node=leaf)
    assert_rejected(
        group,
        receiver=LeafIndex(4),
        sender=LeafIndex(1),
        update_path=tampered,
        error=InvalidLeafNode,
        match="commit",
    )


def test_tampered_leaf_signature_is_rejected(group: Group) -> None:
    created = group.create(LeafIndex(1))
    leaf = created.update_path.leaf_node
    forged = replace(leaf, signature=bytes([leaf.signature[0] ^ 1]) + leaf.signature[1:])
    tampered = with_nodes(created.update_path, leaf_node=forged)
    assert_rejected(
        group,
        receiver=LeafIndex(4),
        sender=LeafIndex(1),
        update_path=tampered,
        error=InvalidSignature,
        match="leaf 1",
    )


def test_reused_encryption_key_is_rejected(group: Group) -> None:
    created = group.create(LeafIndex(1))
    other = group.tree.leaf(LeafIndex(2))
    assert other is not None
    leaf = replace(created.update_path.leaf_node, encryption_key=other.encryption_key)
    leaf = resign(leaf, group.members[LeafIndex(1)].signature_private_key, LeafIndex(1))
    tampered = with_nodes(created.update_path, leaf_node=leaf)
    assert_rejected(
        group,
        receiver=LeafIndex(4),
        sender=LeafIndex(1),
        update_path=tampered,
        error=DuplicateKey,
        match="already in the tree",
    )


def test_key_repeated_within_the_path_is_rejected(group: Group) -> None:
    created = group.create(LeafIndex(1))
    nodes = list(created.update_path.nodes)
    nodes[1] = replace(nodes[1], encryption_key=nodes[0].encryption_key)
    tampered = with_nodes(created.update_path, nodes=tuple(nodes))
    assert_rejected(
        group,
        receiver=LeafIndex(4),
        sender=LeafIndex(1),
        update_path=tampered,
        error=DuplicateKey,
        match="twice",
    )


def test_invalid_path_public_key_is_rejected(group: Group) -> None:
    created = group.create(LeafIndex(1))
    nodes = list(created.update_path.nodes)
    nodes[1] = replace(nodes[1], encryption_key=b"\x05" * 31)
    tampered = with_nodes(created.update_path, nodes=tuple(nodes))
    assert_rejected(
        group,
        receiver=LeafIndex(4),
        sender=LeafIndex(1),
        update_path=tampered,
        error=InvalidKey,
        match=None,
    )


def test_committer_cannot_process_its_own_path(group: Group) -> None:
    created = group.create(LeafIndex(1))
    with pytest.raises(UsageError):
        decrypt_update_path(
            created.tree,
            group.members[LeafIndex(1)].private,
            sender=LeafIndex(1),
            update_path=created.update_path,
            group_context=created.group_context,
        )


# -- Private state ---------------------------------------------------------------------------


def test_private_key_not_matching_the_tree_is_rejected(group: Group) -> None:
    private = group.members[LeafIndex(0)].private
    private.check_consistent(group.tree)
    wrong = private.with_path_secret(NodeIndex(3), b"\x00" * 32)
    with pytest.raises(PrivateKeyMismatch, match="node 3"):
        wrong.check_consistent(group.tree)
    blank = private.with_path_secret(NodeIndex(13), b"\x00" * 32)
    with pytest.raises(PrivateKeyMismatch, match="blank node 13"):
        blank.check_consistent(group.tree)


def test_keys_of_blanked_nodes_are_forgotten(group: Group) -> None:
    private = group.members[LeafIndex(0)].private
    assert private.nodes() == (0, 1, 3, 7)
    tree = group.tree.copy()
    tree.remove_leaf(LeafIndex(3))
    # Leaf 3's direct path (5, 3, 7) is blanked; node 1 is not on it.
    pruned = private.without_blank_nodes(tree)
    assert pruned.nodes() == (0, 1)
    pruned.check_consistent(tree)
    with pytest.raises(PrivateKeyMismatch, match="blank node 3"):
        private.check_consistent(tree)


def test_path_secrets_belong_to_parent_nodes(group: Group) -> None:
    with pytest.raises(UsageError):
        group.members[LeafIndex(0)].private.with_path_secret(NodeIndex(2), b"\x00" * 32)


def test_secrets_never_reach_a_repr(group: Group) -> None:
    created = group.create(LeafIndex(1))
    private = created.private
    shown = repr(private) + repr(created)
    assert private.leaf_private_key.hex() not in shown
    assert created.commit_secret.hex() not in shown
    assert repr(created.commit_secret) not in shown
    for _, secret in created.path_secrets:
        assert repr(secret) not in shown
    assert repr(private) == "<TreeKEMPrivate leaf 1, keys for nodes [1, 2, 3, 7]>"

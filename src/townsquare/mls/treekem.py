"""
TreeKEM (RFC 9420 §7.4-§7.6): path secrets, creating and processing UpdatePaths, commit secrets.

The public tree is a :class:`~townsquare.mls.ratchet_tree.RatchetTree`; what
a member knows privately is a :class:`TreeKEMPrivate`: the private key of its
leaf and of the parent nodes above it whose path secrets it has learnt.

Creating an UpdatePath (the committer, §7.4, §7.5)::

    tree (proposals applied) ──copy──► blank direct path, derive path secrets
      path_secret[0] = rng(Nh); path_secret[n] = DeriveSecret(path_secret[n-1], "path")
      node key pair n = DeriveKeyPair(DeriveSecret(path_secret[n], "node"))
    ──► set keys and parent hashes of the filtered direct path (§7.9)
    ──► new leaf node (source commit, parent hash, fresh key, signed)
    ──► provisional GroupContext (tree hash of the new tree)
    ──► EncryptWithLabel(path_secret[n], "UpdatePathNode", GroupContext) to each node of
        the resolution of each copath child, minus leaves added in the same commit (§7.6)

Processing one (every other member)::

    merge_update_path: leaf checks, keys unique, merge, leaf parent hash == computed (§7.9.2)
    ──► provisional GroupContext (tree hash of the merged tree)
    ──► decrypt_update_path: decrypt the one path secret we can, derive the rest,
        compare each derived public key with the UpdatePath's (§7.5)

The commit secret is ``path_secret[n+1]``, derived from the last path secret
(RFC 9420 §12.4.2); with an empty filtered direct path it is ``path_secret[0]``.

Nothing here mutates its inputs: each function works on a copy of the tree and
returns a new tree and a new :class:`TreeKEMPrivate`, so a failure changes
nothing.
"""

from __future__ import annotations

import hmac
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from townsquare.mls.errors import (
    DuplicateKey,
    InvalidLeafNode,
    ParentHashMismatch,
    PathError,
    PrivateKeyMismatch,
    UsageError,
)
from townsquare.mls.group_context import GroupContext
from townsquare.mls.leaf_node import LeafNode
from townsquare.mls.registries import LeafNodeSource
from townsquare.mls.tree_math import LeafIndex, NodeIndex, direct_path, leaf_to_node, level
from townsquare.mls.update_path import HPKECiphertext, UpdatePath, UpdatePathNode

if TYPE_CHECKING:
    from townsquare.mls.ciphersuite import CipherSuite, Rng
    from townsquare.mls.ratchet_tree import RatchetTree

__all__ = [
    "CreatedUpdatePath",
    "DecryptedUpdatePath",
    "ProcessedUpdatePath",
    "TreeKEMPrivate",
    "create_update_path",
    "decrypt_update_path",
    "derive_node_key_pair",
    "merge_update_path",
    "next_path_secret",
    "process_update_path",
]

# RFC 9420 §7.4 and §7.6: the labels of the path-secret chain, of node
# secrets and of path-secret encryption ("MLS 1.0 " is prepended by the suite).
_PATH_LABEL = b"path"
_NODE_LABEL = b"node"
_UPDATE_PATH_NODE_LABEL = b"UpdatePathNode"
_LEAF_NODE_TBS_LABEL = b"LeafNodeTBS"


def next_path_secret(suite: CipherSuite, path_secret: bytes) -> bytes:
    """
    ``path_secret[n+1] = DeriveSecret(path_secret[n], "path")`` (RFC 9420 §7.4).

    :param suite: the group's cipher suite.
    :param path_secret: ``path_secret[n]``.
    :returns: ``path_secret[n+1]``.
    """
    return suite.derive_secret(path_secret, _PATH_LABEL)


def derive_node_key_pair(suite: CipherSuite, path_secret: bytes) -> tuple[bytes, bytes]:
    """
    Derive a node's HPKE key pair from its path secret (RFC 9420 §7.4).

    ``node_secret = DeriveSecret(path_secret, "node")``, then
    ``node_priv, node_pub = KEM.DeriveKeyPair(node_secret)``.

    :param suite: the group's cipher suite.
    :param path_secret: the node's path secret.
    :returns: ``(private_key, public_key)``, serialised.
    :raises InvalidKey: if no key can be derived (probability about 2^-256).
    """
    return suite.hpke_derive_key_pair(suite.derive_secret(path_secret, _NODE_LABEL))


def _in_subtree(leaf_index: LeafIndex, node: NodeIndex) -> bool:
    half = (1 << level(node)) - 1
    return node - half <= leaf_to_node(leaf_index) <= node + half


class TreeKEMPrivate:
    """
    A member's private view of the ratchet tree: its leaf index and the private keys it holds.

    Immutable: every change returns a new value. Private keys never reach a ``repr``.
    """

    __slots__ = ("_keys", "_suite", "leaf_index")

    _suite: CipherSuite
    _keys: dict[NodeIndex, bytes]
    leaf_index: LeafIndex

    def __init__(
        self,
        suite: CipherSuite,
        leaf_index: LeafIndex,
        leaf_private_key: bytes,
        node_private_keys: Mapping[NodeIndex, bytes] | None = None,
    ) -> None:
        """
        Hold a member's private keys.

        :param suite: the group's cipher suite.
        :param leaf_index: the member's leaf.
        :param leaf_private_key: the HPKE private key of its leaf's ``encryption_key``.
        :param node_private_keys: private keys of parent nodes, by node index.
        :raises UsageError: if ``node_private_keys`` names a leaf's node.
        """
        keys = dict(node_private_keys or {})
        if any(node % 2 == 0 for node in keys):
            raise UsageError("node_private_keys may only hold parent nodes")
        keys[leaf_to_node(leaf_index)] = leaf_private_key
        self._suite = suite
        self._keys = keys
        self.leaf_index = leaf_index

    def _with(self, keys: dict[NodeIndex, bytes]) -> TreeKEMPrivate:
        other = TreeKEMPrivate.__new__(TreeKEMPrivate)
        other._suite = self._suite
        other._keys = keys
        other.leaf_index = self.leaf_index
        return other

    def __repr__(self) -> str:
        """
        :returns: the leaf index and which nodes keys are held for, never the keys.
        """
        return f"<TreeKEMPrivate leaf {self.leaf_index}, keys for nodes {sorted(self._keys)}>"

    def __eq__(self, other: object) -> bool:
        """
        :returns: whether ``other`` holds the same leaf and keys (compared in constant time).
        """
        if not isinstance(other, TreeKEMPrivate):
            return NotImplemented
        return (
            self.leaf_index == other.leaf_index
            and self._suite is other._suite
            and self._keys.keys() == other._keys.keys()
            and all(hmac.compare_digest(v, other._keys[k]) for k, v in self._keys.items())
        )

    # Private keys are secrets: a private state is never a set member or a dict key.
    __hash__ = None  # type: ignore[assignment]

    @property
    def leaf_private_key(self) -> bytes:
        """
        The HPKE private key of this member's leaf.
        """
        return self._keys[leaf_to_node(self.leaf_index)]

    def private_key(self, node: NodeIndex) -> bytes | None:
        """
        :returns: the private key held for ``node``, or ``None``.
        """
        return self._keys.get(node)

    def nodes(self) -> tuple[NodeIndex, ...]:
        """
        :returns: the nodes a private key is held for, in index order.
        """
        return tuple(sorted(self._keys))

    def with_path_secret(self, node: NodeIndex, path_secret: bytes) -> TreeKEMPrivate:
        """
        Learn a parent node's private key from its path secret (RFC 9420 §7.4).

        :param node: a parent node.
        :param path_secret: its path secret.
        :returns: the new private state.
        :raises UsageError: if ``node`` is a leaf.
        """
        return self.with_path_secrets((node,), path_secret)

    def with_path_secrets(self, nodes: Iterable[NodeIndex], path_secret: bytes) -> TreeKEMPrivate:
        """
        Learn the private keys of a chain of nodes from the first one's path secret.

        The first node gets the key derived from ``path_secret``, each later node the key
        from the next path secret of the chain (RFC 9420 §7.4), as a Welcome's path
        secret gives a joiner the keys from the common ancestor up (§12.4.3.1).

        :param nodes: parent nodes, in chain order (bottom up along a filtered direct path).
        :param path_secret: the first node's path secret.
        :returns: the new private state.
        :raises UsageError: if a node is a leaf.
        """
        keys = dict(self._keys)
        for node in nodes:
            if node % 2 == 0:
                raise UsageError(f"node {node} is a leaf; path secrets belong to parents")
            keys[node] = derive_node_key_pair(self._suite, path_secret)[0]
            path_secret = next_path_secret(self._suite, path_secret)
        return self._with(keys)

    def without_nodes(self, nodes: Iterable[NodeIndex]) -> TreeKEMPrivate:
        """
        Forget the private keys of parent nodes (for example a direct path being blanked).

        :param nodes: nodes to forget; the leaf's own key is kept.
        :returns: the new private state.
        """
        keys = dict(self._keys)
        own = leaf_to_node(self.leaf_index)
        for node in nodes:
            if node != own:
                keys.pop(node, None)
        return self._with(keys)

    def replaced(
        self, forget: Iterable[NodeIndex], learn: Mapping[NodeIndex, bytes]
    ) -> TreeKEMPrivate:
        """
        Forget some keys and learn others in one step, as merging a path does.

        :param forget: nodes whose keys become outdated (the leaf's own key may be among
            them only if ``learn`` gives its replacement).
        :param learn: new private keys by node.
        :returns: the new private state.
        :raises UsageError: if the result would hold no key for this member's leaf.
        """
        keys = dict(self._keys)
        for node in forget:
            keys.pop(node, None)
        keys.update(learn)
        if leaf_to_node(self.leaf_index) not in keys:
            raise UsageError("a member's private state needs its leaf's private key")
        return self._with(keys)

    def without_blank_nodes(self, tree: RatchetTree) -> TreeKEMPrivate:
        """
        Forget the keys of parent nodes that ``tree`` has blanked.

        Update and Remove proposals blank direct paths (RFC 9420 §12.1.2,
        §12.1.3); the keys of those nodes are then outdated (§7.5: "each
        recipient MUST delete outdated key material").

        :param tree: the tree after the proposals.
        :returns: the new private state.
        """
        own = leaf_to_node(self.leaf_index)
        return self._with(
            {
                node: key
                for node, key in self._keys.items()
                if node == own or (node < tree.node_width and tree.node(node) is not None)
            }
        )

    def check_consistent(self, tree: RatchetTree) -> None:
        """
        Check that every private key matches the public key of its node in ``tree``.

        :param tree: the group's public tree.
        :raises PrivateKeyMismatch: if a node is blank or holds another public key.
        :raises InvalidKey: if a private key is not valid for the suite.
        """
        for node in self.nodes():
            if node >= tree.node_width or tree.node(node) is None:
                raise PrivateKeyMismatch(f"a private key is held for blank node {node}")
            public_key = self._suite.hpke_public_key(self._keys[node])
            if not hmac.compare_digest(public_key, tree.encryption_key(node)):
                raise PrivateKeyMismatch(
                    f"the private key held for node {node} does not match its public key"
                )


@dataclass(frozen=True, slots=True, kw_only=True)
class CreatedUpdatePath:
    """
    What creating an UpdatePath produces: the path to send and the committer's new state.
    """

    #: The UpdatePath for the Commit's ``path`` field.
    update_path: UpdatePath
    #: The tree with the path merged (the input tree is unchanged).
    tree: RatchetTree
    #: The committer's private state in that tree.
    private: TreeKEMPrivate
    #: The provisional GroupContext the path secrets were encrypted with.
    group_context: GroupContext
    #: ``(node, path_secret)`` for each node of the filtered direct path, bottom up;
    #: a Welcome gives a new member the one of its common ancestor (RFC 9420 §12.4.3.1).
    path_secrets: tuple[tuple[NodeIndex, bytes], ...] = field(repr=False)
    #: ``path_secret[n+1]`` (RFC 9420 §12.4.2).
    commit_secret: bytes = field(repr=False)

    def path_secret_for(self, leaf_index: LeafIndex) -> bytes:
        """
        :param leaf_index: another member's leaf, for example one added by the Commit.
        :returns: the path secret of the lowest node of the committer's filtered direct path
            whose subtree holds that leaf (their common ancestor, RFC 9420 §12.4.3.1).
        :raises UsageError: if no node of the path covers the leaf.
        """
        for node, path_secret in self.path_secrets:
            if _in_subtree(leaf_index, node):
                return path_secret
        raise UsageError(f"leaf {leaf_index} is under no node of the committer's path")


@dataclass(frozen=True, slots=True, kw_only=True)
class DecryptedUpdatePath:
    """
    What a member learns from an UpdatePath: its new private state and the commit secret.
    """

    #: The member's private state after the path (outdated keys deleted, RFC 9420 §7.5).
    private: TreeKEMPrivate
    #: The node whose path secret was decrypted (the lowest common ancestor with the sender).
    node: NodeIndex
    #: That node's path secret.
    path_secret: bytes = field(repr=False)
    #: ``path_secret[n+1]`` (RFC 9420 §12.4.2).
    commit_secret: bytes = field(repr=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class ProcessedUpdatePath:
    """
    A received UpdatePath merged and decrypted: the new tree, context, private state and secret.
    """

    #: The tree with the path merged (the input tree is unchanged).
    tree: RatchetTree
    #: The provisional GroupContext (its ``tree_hash`` is the merged tree's).
    group_context: GroupContext
    #: The member's private state in the merged tree.
    private: TreeKEMPrivate
    #: The decrypted path secret (of the lowest common ancestor with the sender).
    path_secret: bytes = field(repr=False)
    #: ``path_secret[n+1]`` (RFC 9420 §12.4.2).
    commit_secret: bytes = field(repr=False)


def _sender_direct_path(tree: RatchetTree, sender: LeafIndex) -> tuple[NodeIndex, ...]:
    if tree.leaf_count == 1:
        return ()
    return direct_path(leaf_to_node(sender), tree.leaf_count)


def create_update_path(
    tree: RatchetTree,
    private: TreeKEMPrivate,
    *,
    group_context: GroupContext,
    signature_private_key: bytes,
    rng: Rng,
    excluded_leaves: Collection[LeafIndex] = (),
    leaf_node: LeafNode | None = None,
) -> CreatedUpdatePath:
    """
    Refresh the committer's leaf and filtered direct path and encrypt the path secrets.

    Follows RFC 9420 §7.4 (path secrets and key pairs), §7.5 (updating the
    direct path and encrypting to the group), §7.9 (parent hashes) and §7.6
    (``EncryptWithLabel(..., "UpdatePathNode", group_context, path_secret)``).

    :param tree: the tree after the Commit's proposals; it is not changed.
    :param private: the committer's private state (its ``leaf_index`` is the committer).
    :param group_context: the provisional GroupContext of the new epoch; its ``tree_hash``
        is replaced by the hash of the tree with the path merged.
    :param signature_private_key: the committer's signature private key for the new leaf.
    :param rng: the randomness source (the leaf key, ``path_secret[0]``, HPKE encryption).
    :param excluded_leaves: leaves added by the same Commit, which get no ciphertext.
    :param leaf_node: the leaf node to start from, if it should change more than its key
        (credential, capabilities, extensions, signature key); default the current one.
    :returns: the UpdatePath, the new tree and private state, the provisional
        GroupContext, the path secrets and the commit secret.
    :raises UsageError: if the committer's leaf is blank or ``rng`` misbehaves.
    :raises InvalidKey: if a node in the tree holds a key that is not valid for the suite,
        or ``signature_private_key`` is not a valid signature key.
    """
    suite = tree.cipher_suite
    sender = private.leaf_index
    current = tree.leaf(sender)
    if current is None:
        raise UsageError(f"the committer's leaf {sender} is blank")
    new_tree = tree.copy()
    path = new_tree.filtered_direct_path(sender)

    # RFC 9420 §7.4: "Generate a fresh HPKE key pair for the leaf." and
    # "path_secret[0] is sampled at random".
    leaf_private_key, leaf_public_key = suite.hpke_generate_key_pair(rng)
    path_secret = rng(suite.hash_length)
    path_secrets: list[tuple[NodeIndex, bytes]] = []
    node_keys: dict[NodeIndex, bytes] = {}
    public_keys: list[bytes] = []
    for node, _ in path:
        path_secrets.append((node, path_secret))
        node_private_key, node_public_key = derive_node_key_pair(suite, path_secret)
        node_keys[node] = node_private_key
        public_keys.append(node_public_key)
        path_secret = next_path_secret(suite, path_secret)
    commit_secret = path_secret

    parent_hash = new_tree.merge_path(sender, public_keys)
    # RFC 9420 §7.5: "Set the leaf_node_source to commit. Set the
    # encryption_key to the public key of a freshly sampled key pair. Set the
    # parent hash to the parent hash for the leaf. Re-sign the leaf node with
    # its new contents".
    unsigned = replace(
        leaf_node if leaf_node is not None else current,
        encryption_key=leaf_public_key,
        leaf_node_source=LeafNodeSource.COMMIT,
        lifetime=None,
        parent_hash=parent_hash,
        signature=b"",
    )
    signature = suite.sign_with_label(
        signature_private_key,
        _LEAF_NODE_TBS_LABEL,
        unsigned.to_be_signed(group_context.group_id, sender),
    )
    new_leaf = replace(unsigned, signature=signature)
    new_tree.set_leaf(sender, new_leaf)

    context = replace(group_context, tree_hash=new_tree.root_tree_hash())
    context_bytes = context.encode()
    excluded = {leaf_to_node(leaf) for leaf in excluded_leaves}
    update_nodes: list[UpdatePathNode] = []
    for (_, copath_child), (_, secret), public_key in zip(
        path, path_secrets, public_keys, strict=True
    ):
        # RFC 9420 §7.6: "the resolution of the corresponding copath node MUST
        # exclude all new leaf nodes added as part of the current Commit".
        ciphertexts = tuple(
            HPKECiphertext(
                *suite.encrypt_with_label(
                    new_tree.encryption_key(recipient),
                    _UPDATE_PATH_NODE_LABEL,
                    context_bytes,
                    secret,
                    rng,
                )
            )
            for recipient in new_tree.resolution(copath_child)
            if recipient not in excluded
        )
        update_nodes.append(
            UpdatePathNode(encryption_key=public_key, encrypted_path_secret=ciphertexts)
        )

    # The committer's old keys on its direct path are replaced or blanked.
    new_private = private.replaced(
        _sender_direct_path(tree, sender),
        {**node_keys, leaf_to_node(sender): leaf_private_key},
    )
    return CreatedUpdatePath(
        update_path=UpdatePath(leaf_node=new_leaf, nodes=tuple(update_nodes)),
        tree=new_tree,
        private=new_private,
        group_context=context,
        path_secrets=tuple(path_secrets),
        commit_secret=commit_secret,
    )


def merge_update_path(
    tree: RatchetTree,
    sender: LeafIndex,
    update_path: UpdatePath,
    *,
    group_id: bytes,
    leaf_signature_verified: bool = False,
) -> RatchetTree:
    """
    Check a received UpdatePath against the tree and merge its public part (RFC 9420 §7.5).

    Runs the checks of RFC 9420 §12.4.2 that need no application policy: the
    leaf's source is ``commit`` and its signature verifies; no key of the
    path is already in the tree (the committer's current leaf included); the
    path has one node per node of the filtered direct path; and, once merged,
    the leaf's ``parent_hash`` is the one the merged path gives (§7.9.2). The
    caller still applies its credential, capability and lifetime policy to
    the leaf (§7.3).

    :param tree: the tree after the Commit's proposals; it is not changed.
    :param sender: the committer's leaf.
    :param update_path: the Commit's ``path``.
    :param group_id: the group's id (the leaf signature covers it).
    :param leaf_signature_verified: the caller has verified the leaf's signature over the
        same group id and leaf index already (with ``validate_leaf_node``, as RFC 9420
        §12.4.2's "Validate the LeafNode" asks), so it is not verified twice.
    :returns: a new tree with the path merged.
    :raises InvalidLeafNode: if the leaf's source is not ``commit``.
    :raises InvalidSignature: if the leaf's signature does not verify.
    :raises InvalidKey: if the leaf's signature key or a public key of the path is not a
        valid key for the suite.
    :raises DuplicateKey: if a public key of the path is already in the tree or appears
        twice in the path.
    :raises PathError: if the path has the wrong number of nodes.
    :raises ParentHashMismatch: if the leaf's ``parent_hash`` is not the computed one.
    :raises UsageError: if the sender's leaf is blank.
    """
    leaf_node = update_path.leaf_node
    if tree.leaf(sender) is None:
        raise UsageError(f"the committer's leaf {sender} is blank")
    # RFC 9420 §12.4.2: "Validate the LeafNode as specified in Section 7.3.
    # The leaf_node_source field MUST be set to commit."
    if leaf_node.leaf_node_source != LeafNodeSource.COMMIT:
        raise InvalidLeafNode(
            f"an UpdatePath's leaf node has source {leaf_node.leaf_node_source.name}, not commit"
        )
    if not leaf_signature_verified:
        tree.verify_leaf_signature(sender, leaf_node, group_id)

    # RFC 9420 §12.4.2: "Verify that the encryption_key value in the LeafNode
    # is different from the committer's current leaf node." and "Verify that
    # none of the public keys in the UpdatePath appear in any node of the new
    # ratchet tree." The committer's current leaf is one of those nodes.
    path_keys = [leaf_node.encryption_key, *(n.encryption_key for n in update_path.nodes)]
    if len(set(path_keys)) != len(path_keys):
        raise DuplicateKey("a public key appears twice in the UpdatePath")
    for key in path_keys:
        # Townsquare choice: a key that is not a valid HPKE public key is
        # refused now, not left for every later committer to fail on.
        tree.cipher_suite.check_hpke_public_key(key)
        if tree.has_encryption_key(key):
            raise DuplicateKey(f"the UpdatePath's public key {key.hex()} is already in the tree")

    new_tree = tree.copy()
    expected = new_tree.merge_path(sender, [n.encryption_key for n in update_path.nodes])
    # RFC 9420 §7.9.2: "When processing a Commit message that includes an
    # UpdatePath, clients MUST recompute the expected value of parent_hash for
    # the committer's new leaf and verify that it matches the parent_hash
    # value in the supplied leaf_node."
    if leaf_node.parent_hash is None or not hmac.compare_digest(leaf_node.parent_hash, expected):
        raise ParentHashMismatch(
            f"the UpdatePath's leaf node has parent hash "
            f"{(leaf_node.parent_hash or b'').hex()}, the merged path gives {expected.hex()}"
        )
    new_tree.set_leaf(sender, leaf_node)
    return new_tree


def decrypt_update_path(
    tree: RatchetTree,
    private: TreeKEMPrivate,
    *,
    sender: LeafIndex,
    update_path: UpdatePath,
    group_context: GroupContext,
    excluded_leaves: Collection[LeafIndex] = (),
) -> DecryptedUpdatePath:
    """
    Decrypt the path secret meant for us and derive the rest of the path (RFC 9420 §7.5).

    :param tree: the tree the path applies to, merged or not (the filtered direct path and
        the copath resolutions are the same either way).
    :param private: the receiving member's private state.
    :param sender: the committer's leaf.
    :param update_path: the Commit's ``path``.
    :param group_context: the provisional GroupContext (with the merged tree's hash).
    :param excluded_leaves: leaves added by the same Commit (they have no ciphertext).
    :returns: the new private state, the decrypted path secret and the commit secret.
    :raises PathError: if the path has the wrong number of nodes or ciphertexts, we hold no
        key for the copath node's resolution, or a derived public key differs from the
        path's.
    :raises DecryptError: if the ciphertext does not decrypt.
    :raises InvalidKey: if a key is not valid for the suite.
    :raises UsageError: if the receiver is the sender.
    """
    suite = tree.cipher_suite
    receiver = private.leaf_index
    if receiver == sender:
        raise UsageError("a committer does not process its own UpdatePath")
    path = tree.filtered_direct_path(sender)
    if len(update_path.nodes) != len(path):
        raise PathError(
            f"the path has {len(update_path.nodes)} nodes, the filtered direct path of "
            f"leaf {sender} has {len(path)}"
        )
    # RFC 9420 §7.5: "Identify a node in the filtered direct path for which
    # the recipient is in the subtree of the non-updated child."
    position = next(
        (i for i, (_, copath_child) in enumerate(path) if _in_subtree(receiver, copath_child)),
        None,
    )
    if position is None:
        raise PathError(f"leaf {receiver} is under no copath node of leaf {sender}'s path")
    copath_child = path[position][1]
    excluded = {leaf_to_node(leaf) for leaf in excluded_leaves}
    resolution = [node for node in tree.resolution(copath_child) if node not in excluded]
    ciphertexts = update_path.nodes[position].encrypted_path_secret
    # RFC 9420 §7.6: "The length of the encrypted_path_secret vector MUST be
    # equal to the length of the resolution of the copath node (excluding new
    # leaf nodes), with each ciphertext being the encryption to the
    # respective resolution node."
    if len(ciphertexts) != len(resolution):
        raise PathError(
            f"node {path[position][0]} has {len(ciphertexts)} ciphertexts, "
            f"the resolution of its copath child has {len(resolution)} nodes"
        )
    # RFC 9420 §7.5: "Identify a node in the resolution of the copath node for
    # which the recipient has a private key."
    held = next(
        (
            (i, key)
            for i, node in enumerate(resolution)
            if (key := private.private_key(node)) is not None
        ),
        None,
    )
    if held is None:
        raise PathError(f"no private key is held for the resolution of node {copath_child}")
    index, private_key = held
    ciphertext = ciphertexts[index]
    path_secret = suite.decrypt_with_label(
        private_key,
        _UPDATE_PATH_NODE_LABEL,
        group_context.encode(),
        ciphertext.kem_output,
        ciphertext.ciphertext,
    )

    node_keys: dict[NodeIndex, bytes] = {}
    secret = path_secret
    for (node, _), update_node in zip(path[position:], update_path.nodes[position:], strict=True):
        node_private_key, node_public_key = derive_node_key_pair(suite, secret)
        # RFC 9420 §7.5: "Verify that the derived public keys are the same as
        # the corresponding public keys sent in the UpdatePath."
        if not hmac.compare_digest(node_public_key, update_node.encryption_key):
            raise PathError(f"the path secret for node {node} does not give the path's public key")
        node_keys[node] = node_private_key
        secret = next_path_secret(suite, secret)

    # RFC 9420 §7.5: "After processing the update, each recipient MUST delete
    # outdated key material": every key on the sender's direct path is
    # replaced or blanked.
    return DecryptedUpdatePath(
        private=private.replaced(_sender_direct_path(tree, sender), node_keys),
        node=path[position][0],
        path_secret=path_secret,
        commit_secret=secret,
    )


def process_update_path(
    tree: RatchetTree,
    private: TreeKEMPrivate,
    *,
    sender: LeafIndex,
    update_path: UpdatePath,
    group_context: GroupContext,
    excluded_leaves: Collection[LeafIndex] = (),
    leaf_signature_verified: bool = False,
) -> ProcessedUpdatePath:
    """
    Merge a received UpdatePath, build the provisional GroupContext, and decrypt it.

    :func:`merge_update_path` then :func:`decrypt_update_path`, in the order of
    RFC 9420 §12.4.2.

    :param tree: the tree after the Commit's proposals; it is not changed.
    :param private: the receiving member's private state.
    :param sender: the committer's leaf.
    :param update_path: the Commit's ``path``.
    :param group_context: the provisional GroupContext of the new epoch; its ``tree_hash``
        is replaced by the merged tree's.
    :param excluded_leaves: leaves added by the same Commit.
    :param leaf_signature_verified: see :func:`merge_update_path`.
    :returns: the merged tree, the provisional GroupContext, the new private state, the
        decrypted path secret and the commit secret.
    :raises InvalidLeafNode: see :func:`merge_update_path`.
    :raises InvalidSignature: see :func:`merge_update_path`.
    :raises InvalidKey: see :func:`merge_update_path` and :func:`decrypt_update_path`.
    :raises DuplicateKey: see :func:`merge_update_path`.
    :raises ParentHashMismatch: see :func:`merge_update_path`.
    :raises PathError: see :func:`merge_update_path` and :func:`decrypt_update_path`.
    :raises DecryptError: see :func:`decrypt_update_path`.
    :raises UsageError: see :func:`merge_update_path` and :func:`decrypt_update_path`.
    """
    merged = merge_update_path(
        tree,
        sender,
        update_path,
        group_id=group_context.group_id,
        leaf_signature_verified=leaf_signature_verified,
    )
    context = replace(group_context, tree_hash=merged.root_tree_hash())
    decrypted = decrypt_update_path(
        merged,
        private,
        sender=sender,
        update_path=update_path,
        group_context=context,
        excluded_leaves=excluded_leaves,
    )
    return ProcessedUpdatePath(
        tree=merged,
        group_context=context,
        private=decrypted.private,
        path_secret=decrypted.path_secret,
        commit_secret=decrypted.commit_secret,
    )

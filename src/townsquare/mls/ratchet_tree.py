"""
The ratchet tree (RFC 9420 §7): nodes, their encoding, and the public tree of a group.

:class:`RatchetTree` holds the public state of a group's tree: the node array of
RFC 9420 §7.1 / Appendix C (leaves at even indices, parents at odd ones),
padded to ``2**(d+1) - 1`` nodes for ``2**d`` leaves. It computes resolutions
(§4.1.1), filtered direct paths (§4.1.2), tree hashes (§7.8) and parent
hashes (§7.9), checks a tree received when joining (§7.9.2, §12.4.3.1), and
applies the changes of Add, Update and Remove proposals (§12.1) and the public
half of an UpdatePath (§7.5). The private half of TreeKEM is in
:mod:`townsquare.mls.treekem`.

Mutation and cost model:

* The node list is the source of truth. Nodes are immutable values; a
  mutation replaces list entries.
* Trees are mutable, and failure must change nothing (STYLE.md), so changes
  are staged on a copy: :meth:`RatchetTree.copy`, mutate the copy, and keep
  it only if the whole commit succeeds. The node array, the cached hashes
  and the key counts are copy-on-write containers
  (:mod:`townsquare.mls.copy_on_write`), so a copy costs O(n / 256)
  pointers and staging a commit's path copies only the chunks it writes.
  Each mutating method checks its arguments before its first write, so an
  error it raises leaves the tree as it was. The functions of
  :mod:`townsquare.mls.treekem` copy for themselves and never change the
  tree they are given.
* Tree hashes are cached per node. A mutation at a node clears the cache of
  that node and its direct path only, so after a commit the root tree hash
  costs O(log n) hashes. Adds find the leftmost blank leaf through a heap
  (O(log n)); a count of every encryption and signature key makes the reuse
  checks of §7.3 and §12.4.2 O(1) per key; resolutions skip the blank
  subtrees right of the last member. Only extending or truncating the tree
  (§7.7) touches O(n) entries, as the array itself doubles or halves.
* A tree built from its nodes (a joiner's, or one loaded from storage) has
  no cached hash, so its first tree hash is computed level by level over the
  node array (leaves first, then each level of parents), not by recursion.
* Checks that a joiner must run (parent hashes, signatures, unmerged leaves,
  key uniqueness) are O(n) and run once per join, never per commit. Parent
  hashes are checked in one pass over the parents, each non-blank parent
  hashing its ParentHashInput at most once per child (§7.9.2).

Invariant: every entry of a parent's ``unmerged_leaves`` names a leaf of the
tree. The constructor rejects any other tree, before resolutions, tree
hashes or parent hashes index the node array with those entries, and
mutations keep it (an Add lists its leaf only on its own direct path, and
nothing else writes the lists). The rules of RFC 9420 §12.4.3.1 about those
entries (a non-blank descendant of the parent, listed by every non-blank node
in between) and §7.1 (sorted) are checked by
:meth:`RatchetTree.verify_unmerged_leaves`.
"""

from __future__ import annotations

import bisect
import heapq
import hmac
import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Annotated, TypeVar

from townsquare.mls.codec import (
    U8,
    U32,
    Opaque,
    Optional,
    Reader,
    Select,
    Struct,
    Vector,
    encode_opaque,
)
from townsquare.mls.copy_on_write import CowCounter, CowList
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
from townsquare.mls.leaf_node import LeafNode
from townsquare.mls.registries import CredentialType, NodeType
from townsquare.mls.tree_math import (
    LeafIndex,
    NodeIndex,
    direct_path,
    filtered_direct_path_pairs,
    is_leaf,
    leaf_to_node,
    left,
    level,
    node_count,
    right,
    root,
)
from townsquare.mls.tree_math import parent as parent_of

if TYPE_CHECKING:
    from townsquare.mls.ciphersuite import CipherSuite

__all__ = [
    "NODE",
    "TREE_HASH_INPUT",
    "LeafNodeHashInput",
    "Node",
    "ParentHashInput",
    "ParentNode",
    "ParentNodeHashInput",
    "RatchetTree",
    "RatchetTreeNodes",
]


@dataclass(frozen=True, slots=True)
class ParentNode(Struct):
    """
    RFC 9420 §7.1::

        struct {
            HPKEPublicKey encryption_key;
            opaque parent_hash<V>;
            uint32 unmerged_leaves<V>;
        } ParentNode;
    """

    encryption_key: Annotated[bytes, Opaque]
    parent_hash: Annotated[bytes, Opaque]
    unmerged_leaves: Annotated[tuple[Annotated[int, U32], ...], Vector]


Node = LeafNode | ParentNode

# RFC 9420 §7.8:
#   struct {
#       NodeType node_type;
#       select (Node.node_type) {
#           case leaf:   LeafNode leaf_node;
#           case parent: ParentNode parent_node;
#       };
#   } Node;
NODE = Select("Node", U8, lambda: {NodeType.LEAF: LeafNode, NodeType.PARENT: ParentNode})


@dataclass(frozen=True, slots=True)
class RatchetTreeNodes(Struct):
    """
    RFC 9420 §12.4.3.3: ``optional<Node> ratchet_tree<V>;`` (the ratchet_tree extension).

    The array representation of the tree (§7.1), trailing blank nodes removed.
    """

    nodes: Annotated[tuple[Annotated[Node | None, Optional, NODE], ...], Vector]


# -- Hash inputs (RFC 9420 §7.8, §7.9) ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class LeafNodeHashInput(Struct):
    """
    RFC 9420 §7.8::

        struct {
            uint32 leaf_index;
            optional<LeafNode> leaf_node;
        } LeafNodeHashInput;
    """

    leaf_index: Annotated[int, U32]
    leaf_node: Annotated[LeafNode | None, Optional]


@dataclass(frozen=True, slots=True)
class ParentNodeHashInput(Struct):
    """
    RFC 9420 §7.8::

        struct {
            optional<ParentNode> parent_node;
            opaque left_hash<V>;
            opaque right_hash<V>;
        } ParentNodeHashInput;
    """

    parent_node: Annotated[ParentNode | None, Optional]
    left_hash: Annotated[bytes, Opaque]
    right_hash: Annotated[bytes, Opaque]


# RFC 9420 §7.8:
#   struct {
#     NodeType node_type;
#     select (TreeHashInput.node_type) {
#       case leaf:   LeafNodeHashInput leaf_node;
#       case parent: ParentNodeHashInput parent_node;
#     };
#   } TreeHashInput;
TREE_HASH_INPUT = Select(
    "TreeHashInput",
    U8,
    lambda: {NodeType.LEAF: LeafNodeHashInput, NodeType.PARENT: ParentNodeHashInput},
)


@dataclass(frozen=True, slots=True)
class ParentHashInput(Struct):
    """
    RFC 9420 §7.9::

        struct {
            HPKEPublicKey encryption_key;
            opaque parent_hash<V>;
            opaque original_sibling_tree_hash<V>;
        } ParentHashInput;
    """

    encryption_key: Annotated[bytes, Opaque]
    parent_hash: Annotated[bytes, Opaque]
    original_sibling_tree_hash: Annotated[bytes, Opaque]


# RFC 9420 §5.1.2: the label LeafNode signatures are made with (SignWithLabel
# prepends "MLS 1.0 ").
_LEAF_NODE_TBS_LABEL = b"LeafNodeTBS"

# -- Encoding hash inputs (RFC 9420 §7.8, §7.9) ----------------------------------------
#
# A joiner of a 10,000-member group hashes all 32,767 nodes and a
# ParentHashInput for each child of every parent. Building a LeafNodeHashInput,
# ParentNodeHashInput or ParentHashInput value only to encode it costs about
# as much as the encoding itself, so these functions join the codec's own
# encodings of the parts instead: the node (``Struct.encode``), the
# ``opaque<V>`` length prefixes (``encode_opaque``), the NodeType octet and
# the presence octet. The structs above stay the definition; the unit tests
# check these bytes against theirs.

_LEAF_TAG = bytes((NodeType.LEAF,))
_PARENT_TAG = bytes((NodeType.PARENT,))
# RFC 9420 §2.1.1: the presence octet of an optional<T>.
_ABSENT = b"\x00"
_PRESENT = b"\x01"
# RFC 9420 §2.1.2: lengths below 64 take one octet, as those of SHA-256 and
# SHA-384 hashes and X25519 and X448 keys do; longer ones go to the codec.
_SHORT_LENGTHS = tuple(encode_opaque(bytes(n))[:1] for n in range(64))


def _length_prefix(n: int) -> bytes:
    """
    :returns: the varint length that starts an ``opaque x<V>`` of ``n`` bytes (RFC 9420 §2.1.2).
    """
    if n < 64:
        return _SHORT_LENGTHS[n]
    return encode_opaque(bytes(n))[:-n]


def _leaf_hash_input(leaf_index: int, leaf_node_bytes: bytes | None) -> bytes:
    """
    :param leaf_index: the leaf's index.
    :param leaf_node_bytes: the leaf node's encoding, or ``None`` for a blank leaf.
    :returns: the encoded TreeHashInput of a leaf: NodeType ``leaf``, then its LeafNodeHashInput.
    """
    head = _LEAF_TAG + leaf_index.to_bytes(4, "big")
    if leaf_node_bytes is None:
        return head + _ABSENT
    return head + _PRESENT + leaf_node_bytes


def _parent_tree_hash_input(parent_node: Node | None, left_hash: bytes, right_hash: bytes) -> bytes:
    """
    :returns: the encoded TreeHashInput of a parent: NodeType ``parent``, then its
        ParentNodeHashInput.
    """
    body = _ABSENT if parent_node is None else _PRESENT + parent_node.encode()
    return (
        _PARENT_TAG
        + body
        + _length_prefix(len(left_hash))
        + left_hash
        + _length_prefix(len(right_hash))
        + right_hash
    )


def _parent_hash_input(parent_node: ParentNode, original_sibling_tree_hash: bytes) -> bytes:
    """
    :returns: the encoded ParentHashInput of ``parent_node`` (RFC 9420 §7.9).
    """
    key = parent_node.encryption_key
    link = parent_node.parent_hash
    return (
        _length_prefix(len(key))
        + key
        + _length_prefix(len(link))
        + link
        + _length_prefix(len(original_sibling_tree_hash))
        + original_sibling_tree_hash
    )


def _check_unmerged_in_tree(parent: int, parent_node: ParentNode, n_leaves: int) -> None:
    """
    :raises InvalidUnmergedLeaves: if ``parent_node`` at node ``parent`` lists a leaf index
        that is not a leaf of a tree of ``n_leaves`` leaves.
    """
    for u in parent_node.unmerged_leaves:
        # Every use of the entries (resolutions §4.1.1, tree and parent
        # hashes §7.8, §7.9, the checks of §12.4.3.1) indexes the node array
        # with them, so one outside the tree is rejected before the tree
        # exists; verify_unmerged_leaves checks that it is under the parent.
        if not 0 <= u < n_leaves:
            raise InvalidUnmergedLeaves(
                f"unmerged leaf {u} of node {parent} is outside the tree ({n_leaves} leaves)"
            )


def _leaf_span(node: NodeIndex) -> tuple[int, int]:
    """
    :returns: the first and last leaf index under ``node`` (Appendix C: a node at
        level k spans the node indices ``node - (2**k - 1)`` to ``node + (2**k - 1)``).
    """
    half = (1 << level(node)) - 1
    return (node - half) // 2, (node + half) // 2


_K = TypeVar("_K", int, tuple[int, ...])


def _credential_type(leaf: LeafNode) -> int:
    return int(
        CredentialType.BASIC
        if isinstance(leaf.credential, BasicCredential)
        else CredentialType.X509
    )


def _count(counts: dict[_K, int], key: _K, delta: int) -> None:
    remaining = counts.get(key, 0) + delta
    if remaining:
        counts[key] = remaining
    else:
        del counts[key]


def _leaf_width(n_nodes: int) -> int:
    """
    :returns: the smallest power of two of leaves whose tree holds ``n_nodes`` nodes.
    """
    n_leaves = 1
    while node_count(n_leaves) < n_nodes:
        n_leaves *= 2
    return n_leaves


class RatchetTree:
    """
    The public ratchet tree of a group (RFC 9420 §7), with cached tree hashes.

    Mutable: see the module docstring for how to stage changes with :meth:`copy`.
    """

    __slots__ = (
        "_blank_leaves",
        "_blank_leaves_shared",
        "_change_token",
        "_changed",
        "_cold",
        "_credential_lists",
        "_credential_types",
        "_encryption_keys",
        "_hashes",
        "_leaf_encodings",
        "_n_leaves",
        "_nodes",
        "_rightmost",
        "_signature_keys",
        "_suite",
    )

    _suite: CipherSuite
    _nodes: CowList[Node | None]
    _hashes: CowList[bytes | None]
    # Each leaf node's encoding (by leaf index) where known: sliced from the
    # bytes the tree was decoded from, or kept from its first encoding. A
    # joiner of a 10,000-member group needs every leaf's encoding for the
    # tree hash (§7.8), the LeafNodeTBS of its signature (§7.2) and the first
    # save; encoding 10,000 leaves costs some 25 ms each time. Canonical
    # decoding (``codec.py``) makes a slice equal to ``encode()``.
    _leaf_encodings: CowList[bytes | None]
    # Whether many hashes may be missing (a tree just built, or just
    # extended), so the next tree hash fills them level by level.
    _cold: bool
    _n_leaves: int
    # The highest non-blank leaf index. Every parent whose leaves all lie to
    # its right is blank: a decoded tree ends with that leaf (§12.4.3.3), and
    # mutations only set parents on a member's direct path.
    _rightmost: int
    # A min-heap holding every blank leaf index (and perhaps stale entries),
    # and whether a copy shares it (then it is copied before its first change:
    # most commits add and remove nobody).
    _blank_leaves: list[int]
    _blank_leaves_shared: bool
    # How many nodes hold each encryption key, and leaves each signature key,
    # so that a commit checks its new keys for reuse in O(1) each.
    _encryption_keys: CowCounter[bytes]
    _signature_keys: CowCounter[bytes]
    # How many leaves use each credential type, and list each set of
    # supported credential types: what RFC 9420 §7.3's credential checks need,
    # kept up to date by _write so that a commit never scans every leaf.
    _credential_types: dict[int, int]
    _credential_lists: dict[tuple[int, ...], int]
    # Which nodes were written since track_changes() returned _change_token
    # (None: changes are not tracked), so that persistence writes only those.
    _change_token: object | None
    _changed: set[NodeIndex] | None

    def __init__(self, suite: CipherSuite, nodes: Sequence[Node | None]) -> None:
        """
        Build a tree from its array representation, trailing blanks omitted (RFC 9420 §12.4.3.3).

        :param suite: the group's cipher suite, whose hash the tree hashes use.
        :param nodes: the nodes in array order (leaves at even indices).
        :raises InvalidTreeShape: if the array is empty, ends in a blank or a parent node,
            or holds a leaf in a parent's slot or a parent in a leaf's slot.
        :raises InvalidUnmergedLeaves: if a parent lists an unmerged leaf that is not a leaf of
            the tree (the other unmerged-leaf rules are :meth:`verify_unmerged_leaves`'s).
        """
        if not nodes:
            raise InvalidTreeShape("the ratchet tree has no nodes")
        if nodes[-1] is None:
            # RFC 9420 §12.4.3.3: "The receiver MUST check that the last node
            # in ratchet_tree is non-blank".
            raise InvalidTreeShape("the ratchet tree ends with a blank node")
        if len(nodes) % 2 == 0:
            # Townsquare choice: an even count means the last node is a
            # parent whose right subtree is all blank. The protocol never
            # produces one (such a parent is off every filtered direct path,
            # §4.1.2, and removals truncate, §7.7), so a tree ending in one
            # was not built by group members.
            raise InvalidTreeShape("the ratchet tree ends with a parent node")
        n_leaves = _leaf_width(len(nodes))
        # One pass checks each slot and counts the keys (what _write would
        # do node by node).
        encryption_keys: dict[bytes, int] = {}
        signature_keys: dict[bytes, int] = {}
        credential_types: dict[int, int] = {}
        credential_lists: dict[tuple[int, ...], int] = {}
        for index, node in enumerate(nodes):
            if node is None:
                continue
            # RFC 9420 §7.1: leaves sit at even indices and parents at odd ones.
            if index % 2 == 0:
                if not isinstance(node, LeafNode):
                    raise InvalidTreeShape(f"node {index} is a leaf slot but holds a parent node")
                signature_keys[node.signature_key] = signature_keys.get(node.signature_key, 0) + 1
                kind = _credential_type(node)
                credential_types[kind] = credential_types.get(kind, 0) + 1
                listed = node.capabilities.credentials
                credential_lists[listed] = credential_lists.get(listed, 0) + 1
            else:
                if not isinstance(node, ParentNode):
                    raise InvalidTreeShape(f"node {index} is a parent slot but holds a leaf node")
                if node.unmerged_leaves:
                    _check_unmerged_in_tree(index, node, n_leaves)
            encryption_keys[node.encryption_key] = encryption_keys.get(node.encryption_key, 0) + 1
        padded: list[Node | None] = list(nodes)
        # RFC 9420 §12.4.3.3: "extend the tree to the right until it has a
        # length of the form 2^(d+1)-1, adding the minimum number of blank
        # values possible".
        padded.extend([None] * (node_count(n_leaves) - len(nodes)))
        self._suite = suite
        self._nodes = CowList(padded)
        self._hashes = CowList(itertools.repeat(None, len(padded)))
        self._leaf_encodings = CowList(itertools.repeat(None, n_leaves))
        self._cold = True
        self._n_leaves = n_leaves
        self._rightmost = (len(nodes) - 1) // 2
        # Ascending, so already a heap.
        self._blank_leaves = [i for i, leaf in enumerate(padded[0::2]) if leaf is None]
        self._blank_leaves_shared = False
        self._encryption_keys = CowCounter(encryption_keys)
        self._signature_keys = CowCounter(signature_keys)
        self._credential_types = credential_types
        self._credential_lists = credential_lists
        self._change_token = None
        self._changed = None

    @classmethod
    def from_nodes(cls, suite: CipherSuite, nodes: RatchetTreeNodes) -> RatchetTree:
        """
        :param suite: the group's cipher suite.
        :param nodes: a decoded ``ratchet_tree`` extension (RFC 9420 §12.4.3.3).
        :returns: the tree those nodes describe.
        :raises InvalidTreeShape: as :class:`RatchetTree` does.
        :raises InvalidUnmergedLeaves: as :class:`RatchetTree` does.
        """
        return cls(suite, nodes.nodes)

    @classmethod
    def decode(cls, suite: CipherSuite, data: bytes) -> RatchetTree:
        """
        :param suite: the group's cipher suite.
        :param data: an encoded ``optional<Node> ratchet_tree<V>`` (RFC 9420 §12.4.3.3).
        :returns: the tree it encodes.
        :raises DecodeError: if ``data`` is not such an encoding.
        :raises InvalidTreeShape: as :class:`RatchetTree` does.
        :raises InvalidUnmergedLeaves: as :class:`RatchetTree` does.
        """
        # RatchetTreeNodes.decode(data), read node by node with the codec's
        # own readers so that each leaf's encoding is kept as a slice of
        # ``data`` (see _leaf_encodings), as immutable bytes.
        data = bytes(data)
        reader = Reader(data)
        body = reader.vector()
        nodes: list[Node | None] = []
        encodings: dict[int, bytes] = {}
        while body.remaining():
            if not body.presence():
                nodes.append(None)
                continue
            # Past the Node's NodeType octet (RFC 9420 §7.8) starts the node's own encoding.
            start = body.offset + 1
            node = NODE.decode_from(body)
            if isinstance(node, LeafNode) and len(nodes) % 2 == 0:
                encodings[len(nodes) // 2] = data[start : body.offset]
            nodes.append(node)
        reader.finish()
        tree = cls(suite, nodes)
        leaf_encodings: list[bytes | None] = [None] * tree._n_leaves
        for leaf_index, encoding in encodings.items():
            leaf_encodings[leaf_index] = encoding
        tree._leaf_encodings = CowList(leaf_encodings)
        return tree

    def copy(self) -> RatchetTree:
        """
        :returns: an independent tree with the same nodes and cached hashes.

        Nodes are immutable values, so the copy shares them, and the node
        array, hashes and key counts are copy-on-write: copying costs O(n / 256)
        pointers (a few microseconds for 10,000 members, where copying
        them whole cost about 0.4 ms), no hashing and no encoding.
        """
        other = RatchetTree.__new__(RatchetTree)
        other._suite = self._suite
        other._nodes = self._nodes.copy()
        other._hashes = self._hashes.copy()
        other._leaf_encodings = self._leaf_encodings.copy()
        other._cold = self._cold
        other._n_leaves = self._n_leaves
        other._rightmost = self._rightmost
        other._blank_leaves = self._blank_leaves
        other._blank_leaves_shared = self._blank_leaves_shared = True
        other._encryption_keys = self._encryption_keys.copy()
        other._signature_keys = self._signature_keys.copy()
        other._credential_types = self._credential_types.copy()
        other._credential_lists = self._credential_lists.copy()
        other._change_token = self._change_token
        other._changed = None if self._changed is None else self._changed.copy()
        return other

    def track_changes(self) -> object:
        """
        Start recording which nodes this tree, and every copy made of it from now on, writes.

        Persistence calls this once it has stored the tree, then asks a later
        tree of the same lineage for :meth:`changed_nodes` and writes only
        those. Calling it again starts a new record (copies made before keep
        the old one).

        :returns: a token naming this point, for :meth:`changed_nodes`.
        """
        token = object()
        self._change_token = token
        self._changed = set()
        return token

    def changed_nodes(self, since: object) -> frozenset[NodeIndex] | None:
        """
        The nodes written since :meth:`track_changes` returned ``since``.

        Counts writes to this tree and to the trees it was copied from after
        that point. A written node may hold the same value as before, and an
        index may lie past the tree's current width (the tree was truncated).

        :param since: a token returned by :meth:`track_changes`.
        :returns: the node indices, or ``None`` if this tree does not descend from that point.
        """
        if self._changed is None or self._change_token is not since:
            return None
        return frozenset(self._changed)

    def _write(self, index: int, node: Node | None) -> None:
        # Every change of a node goes through here, to keep the key counts.
        old = self._nodes[index]
        if self._changed is not None:
            self._changed.add(NodeIndex(index))
        if not index & 1 and old is not node:
            self._leaf_encodings[index >> 1] = None
        if old is not None:
            self._encryption_keys.add(old.encryption_key, -1)
            if isinstance(old, LeafNode):
                self._signature_keys.add(old.signature_key, -1)
                _count(self._credential_types, _credential_type(old), -1)
                _count(self._credential_lists, old.capabilities.credentials, -1)
        if node is not None:
            self._encryption_keys.add(node.encryption_key, 1)
            if isinstance(node, LeafNode):
                self._signature_keys.add(node.signature_key, 1)
                _count(self._credential_types, _credential_type(node), 1)
                _count(self._credential_lists, node.capabilities.credentials, 1)
        self._nodes[index] = node

    def __repr__(self) -> str:
        """
        :returns: the tree's size; node contents are public but too long to show.
        """
        members = sum(1 for leaf_node in self._nodes.to_list()[0::2] if leaf_node is not None)
        return f"<RatchetTree {self._n_leaves} leaves, {members} members>"

    # -- Encoding ------------------------------------------------------------------------

    def to_nodes(self) -> RatchetTreeNodes:
        """
        :returns: the array representation with trailing blank nodes removed (RFC 9420 §12.4.3.3).
        """
        end = len(self._nodes)
        # RFC 9420 §12.4.3.3: "the sender MUST NOT include blank nodes after
        # the last non-blank node".
        while end > 0 and self._nodes[end - 1] is None:
            end -= 1
        return RatchetTreeNodes(tuple(itertools.islice(self._nodes, end)))

    def encode(self) -> bytes:
        """
        :returns: the encoded ``ratchet_tree`` extension content (RFC 9420 §12.4.3.3).
        """
        return self.to_nodes().encode()

    # -- Access --------------------------------------------------------------------------

    @property
    def cipher_suite(self) -> CipherSuite:
        """
        The cipher suite whose hash this tree's hashes use.
        """
        return self._suite

    @property
    def leaf_count(self) -> int:
        """
        The number of leaves, blank or not: always a power of two (RFC 9420 §7.7).
        """
        return self._n_leaves

    @property
    def node_width(self) -> int:
        """
        The number of nodes, blank or not: ``2 * leaf_count - 1``.
        """
        return len(self._nodes)

    @property
    def root(self) -> NodeIndex:
        """
        The root's node index.
        """
        return root(self._n_leaves)

    def _check_node(self, node: NodeIndex) -> None:
        if not 0 <= node < len(self._nodes):
            raise UsageError(f"node {node} is outside a tree of {len(self._nodes)} nodes")

    def _check_leaf(self, leaf_index: LeafIndex) -> None:
        if not 0 <= leaf_index < self._n_leaves:
            raise UsageError(f"leaf {leaf_index} is outside a tree of {self._n_leaves} leaves")

    def node(self, node: NodeIndex) -> Node | None:
        """
        :returns: the node at ``node``, or ``None`` if it is blank.
        :raises UsageError: if the index is outside the tree.
        """
        self._check_node(node)
        return self._nodes[node]

    def leaf(self, leaf_index: LeafIndex) -> LeafNode | None:
        """
        :returns: the leaf node of leaf ``leaf_index``, or ``None`` if it is blank.
        :raises UsageError: if the index is outside the tree.
        """
        self._check_leaf(leaf_index)
        leaf_node = self._nodes[leaf_to_node(leaf_index)]
        return leaf_node if isinstance(leaf_node, LeafNode) else None

    def leaf_encoding(self, leaf_index: LeafIndex) -> bytes:
        """
        :returns: the encoding of the non-blank leaf ``leaf_index`` (``LeafNode.encode()``),
            kept from when the tree was decoded or the leaf first encoded.
        :raises UsageError: if the leaf is blank or outside the tree.
        """
        leaf_node = self.leaf(leaf_index)
        if leaf_node is None:
            raise UsageError(f"leaf {leaf_index} is blank")
        return self._leaf_bytes(leaf_index, leaf_node)

    def _leaf_bytes(self, leaf_index: int, leaf_node: LeafNode) -> bytes:
        # ``leaf_node`` is the node at ``leaf_index``.
        encoding = self._leaf_encodings[leaf_index]
        if encoding is None:
            encoding = leaf_node.encode()
            self._leaf_encodings[leaf_index] = encoding
        return encoding

    def parent_node(self, node: NodeIndex) -> ParentNode | None:
        """
        :returns: the parent node at ``node``, or ``None`` if it is blank.
        :raises UsageError: if the index is outside the tree or is a leaf's.
        """
        self._check_node(node)
        if is_leaf(node):
            raise UsageError(f"node {node} is a leaf")
        parent_node = self._nodes[node]
        return parent_node if isinstance(parent_node, ParentNode) else None

    def leaves(self) -> Iterator[tuple[LeafIndex, LeafNode]]:
        """
        :returns: every non-blank leaf with its index, left to right.
        """
        for i, leaf_node in enumerate(itertools.islice(self._nodes, 0, None, 2)):
            if isinstance(leaf_node, LeafNode):
                yield LeafIndex(i), leaf_node

    def find_leaf(self, leaf_node: LeafNode) -> LeafIndex | None:
        """
        :returns: the index of a leaf equal to ``leaf_node``, or ``None``.
        """
        signature = leaf_node.signature
        for i, candidate in self.leaves():
            # The signature differs between any two distinct leaves in
            # practice; comparing it first spares building each leaf's field
            # tuple for the dataclass equality.
            if candidate.signature == signature and candidate == leaf_node:
                return i
        return None

    def has_encryption_key(self, encryption_key: bytes) -> bool:
        """
        :returns: whether any node, leaf or parent, holds this HPKE public key (O(1)).
        """
        return encryption_key in self._encryption_keys

    def credential_census(self) -> tuple[frozenset[int], frozenset[int] | None]:
        """
        :returns: the credential types the members use, and those every member supports
            (``None`` for a tree with no member), in O(distinct capability lists).
        """
        in_use = frozenset(self._credential_types)
        supported: set[int] | None = None
        for listed in self._credential_lists:
            supported = set(listed) if supported is None else supported & set(listed)
        return in_use, None if supported is None else frozenset(supported)

    def has_signature_key(self, signature_key: bytes) -> bool:
        """
        :returns: whether any leaf holds this signature public key (O(1)).
        """
        return signature_key in self._signature_keys

    def encryption_key(self, node: NodeIndex) -> bytes:
        """
        :returns: the HPKE public key of the non-blank node ``node``.
        :raises UsageError: if the node is blank or outside the tree.
        """
        value = self.node(node)
        if value is None:
            raise UsageError(f"node {node} is blank")
        return value.encryption_key

    # -- Resolution (RFC 9420 §4.1.1) ----------------------------------------------------

    def resolution(self, node: NodeIndex) -> tuple[NodeIndex, ...]:
        """
        Compute the resolution of a node (RFC 9420 §4.1.1).

        :param node: a node index.
        :returns: the node itself and its unmerged leaves if it is not blank; nothing for a
            blank leaf; else the resolution of its left child then that of its right child.
        :raises UsageError: if the index is outside the tree.
        """
        self._check_node(node)
        out: list[NodeIndex] = []
        self._resolve(node, out)
        return tuple(out)

    def _resolve(self, node: NodeIndex, out: list[NodeIndex]) -> None:
        value = self._nodes[node]
        if value is not None:
            out.append(node)
            if isinstance(value, ParentNode):
                out.extend(leaf_to_node(LeafIndex(u)) for u in value.unmerged_leaves)
        elif not is_leaf(node) and _leaf_span(node)[0] <= self._rightmost:
            # A blank subtree right of the last member is blank throughout, so
            # the walk skips it instead of visiting each of its nodes.
            self._resolve(left(node), out)
            self._resolve(right(node), out)

    def _resolution_is_empty(self, node: NodeIndex) -> bool:
        if self._nodes[node] is not None:
            return False
        if is_leaf(node) or _leaf_span(node)[0] > self._rightmost:
            return True
        return self._resolution_is_empty(left(node)) and self._resolution_is_empty(right(node))

    def filtered_direct_path(
        self, leaf_index: LeafIndex
    ) -> tuple[tuple[NodeIndex, NodeIndex], ...]:
        """
        Compute a leaf's filtered direct path (RFC 9420 §4.1.2) with each node's copath child.

        :param leaf_index: the leaf.
        :returns: pairs ``(parent, copath child)`` from the leaf's parent up to the root,
            leaving out each parent whose copath child has an empty resolution.
        :raises UsageError: if the index is outside the tree.
        """
        self._check_leaf(leaf_index)
        if self._n_leaves == 1:
            return ()
        return tuple(
            (parent_index, copath_child)
            for parent_index, copath_child in filtered_direct_path_pairs(
                leaf_to_node(leaf_index), self._n_leaves
            )
            if not self._resolution_is_empty(copath_child)
        )

    # -- Tree hashes (RFC 9420 §7.8) -----------------------------------------------------

    def tree_hash(self, node: NodeIndex) -> bytes:
        """
        Compute the tree hash of the subtree under ``node`` (RFC 9420 §7.8).

        Hashes are cached per node and only the changed path is recomputed
        after a mutation.

        :param node: a node index.
        :returns: ``Hash(TreeHashInput)`` of that node.
        :raises UsageError: if the index is outside the tree.
        """
        self._check_node(node)
        return self._tree_hash(node)

    def _tree_hash(self, node: NodeIndex) -> bytes:
        if self._cold:
            self._hash_all()
        return self._tree_hash_at(node, level(node))

    def _tree_hash_at(self, node: int, node_level: int) -> bytes:
        # After a mutation only the changed nodes and their direct paths lack
        # a hash, so the walk down stops at once on every other subtree.
        cached = self._hashes[node]
        if cached is not None:
            return cached
        value = self._nodes[node]
        if node_level == 0:
            leaf_bytes = self._leaf_bytes(node >> 1, value) if isinstance(value, LeafNode) else None
            digest = self._suite.hash(_leaf_hash_input(node >> 1, leaf_bytes))
        else:
            half = 1 << (node_level - 1)
            left_hash = self._tree_hash_at(node - half, node_level - 1)
            right_hash = self._tree_hash_at(node + half, node_level - 1)
            digest = self._suite.hash(_parent_tree_hash_input(value, left_hash, right_hash))
        self._hashes[node] = digest
        return digest

    def _hash_all(self) -> None:
        # Fill every missing tree hash, level by level over the node array
        # (Appendix C): the leaves are the even indices; the parents at level
        # k are the indices 2**k - 1 + j * 2**(k+1), whose children lie
        # 2**(k-1) to either side. The array always holds a full tree, so
        # each level's children are two slices of the level below.
        nodes = self._nodes.to_list()
        cached = self._hashes.to_list()
        width = len(nodes)
        hash_ = self._suite.hash
        computed: list[bytes] = [b""] * width
        # Each leaf's encoding, kept for later (see _leaf_encodings).
        leaf_bytes = [
            encoding if encoding is not None or value is None else value.encode()
            for encoding, value in zip(self._leaf_encodings, nodes[0::2], strict=True)
        ]
        self._leaf_encodings.assign(leaf_bytes)
        computed[0::2] = [
            digest if digest is not None else hash_(_leaf_hash_input(leaf_index, encoding))
            for leaf_index, (digest, encoding) in enumerate(
                zip(cached[0::2], leaf_bytes, strict=True)
            )
        ]
        prefix = _length_prefix(self._suite.hash_length)
        half = 1
        while 2 * half - 1 < width:
            first, step = 2 * half - 1, 4 * half
            computed[first::step] = [
                digest
                if digest is not None
                else hash_(
                    _PARENT_TAG
                    + (_ABSENT if value is None else _PRESENT + value.encode())
                    + prefix
                    + left_hash
                    + prefix
                    + right_hash
                )
                for digest, value, left_hash, right_hash in zip(
                    cached[first::step],
                    nodes[first::step],
                    computed[first - half :: step],
                    computed[first + half :: step],
                    strict=True,
                )
            ]
            half *= 2
        self._hashes.assign(computed)
        self._cold = False

    def root_tree_hash(self) -> bytes:
        """
        :returns: the tree hash of the root: the ``tree_hash`` of the GroupContext (RFC 9420 §7.8).
        """
        return self._tree_hash(self.root)

    def _tree_hash_without(self, node: NodeIndex, removed: frozenset[int]) -> bytes:
        """
        The tree hash of ``node`` with the leaves in ``removed`` blanked and taken out of
        every ``unmerged_leaves`` (RFC 9420 §7.9's "original" tree hash).
        """
        first, last = _leaf_span(node)
        if not any(first <= u <= last for u in removed):
            # RFC 9420 §7.9: "if none of the entries in P.unmerged_leaves is
            # in the subtree under S (and thus no leaves were blanked), then
            # the original tree hash at S is the tree hash of S in the
            # current tree."
            return self._tree_hash(node)
        if is_leaf(node):
            return self._suite.hash(_leaf_hash_input(node >> 1, None))
        value = self._nodes[node]
        parent_node = value if isinstance(value, ParentNode) else None
        if parent_node is not None:
            parent_node = replace(
                parent_node,
                unmerged_leaves=tuple(u for u in parent_node.unmerged_leaves if u not in removed),
            )
        return self._suite.hash(
            _parent_tree_hash_input(
                parent_node,
                self._tree_hash_without(left(node), removed),
                self._tree_hash_without(right(node), removed),
            )
        )

    # -- Parent hashes (RFC 9420 §7.9) ---------------------------------------------------

    def parent_hash(self, parent: NodeIndex, copath_child: NodeIndex) -> bytes:
        """
        Compute the "parent hash of P with copath child S" (RFC 9420 §7.9).

        :param parent: P, a non-blank parent node.
        :param copath_child: S, one of P's children.
        :returns: ``Hash(ParentHashInput)`` with P's key and parent hash and the original
            tree hash of S (with P's unmerged leaves removed).
        :raises UsageError: if P is blank or S is not its child.
        """
        parent_node = self.parent_node(parent)
        if parent_node is None:
            raise UsageError(f"node {parent} is blank")
        if copath_child not in (left(parent), right(parent)):
            raise UsageError(f"node {copath_child} is not a child of {parent}")
        return self._parent_hash(parent_node, copath_child)

    def _parent_hash(self, parent_node: ParentNode, copath_child: NodeIndex) -> bytes:
        unmerged = parent_node.unmerged_leaves
        if unmerged:
            sibling_hash = self._tree_hash_without(copath_child, frozenset(unmerged))
        else:
            # Checking a whole tree reads every hash: the cache, when warm.
            sibling_hash = self._hashes[copath_child] or self._tree_hash(copath_child)
        return self._suite.hash(_parent_hash_input(parent_node, sibling_hash))

    def verify_parent_hashes(self) -> None:
        """
        Check that every non-blank parent node is parent-hash valid (RFC 9420 §7.9.2).

        Done "top down": for each non-blank parent P, exactly one descendant D
        must link to P: D is in the resolution of a child C of P, D's
        ``parent_hash`` is the parent hash of P with copath child S (C's
        sibling), and P's unmerged leaves under C are exactly the rest of C's
        resolution. Chains then reach a leaf because every parent on them is
        checked the same way.

        Only the non-blank nodes of C's resolution that have no non-blank node
        between them and P can link (an unmerged leaf D of a non-blank node X
        would leave X, a parent, in "the rest of C's resolution"), so when C is
        not blank, C is the only candidate and no resolution is built. The
        parent hash of P with copath child S is computed only for a candidate
        that passes the unmerged-leaves condition, so at most once per child:
        to tell "exactly one" from "two", a link from each side is tested.

        :raises ParentHashMismatch: naming the first parent that is not parent-hash valid.
        """
        if self._cold:
            self._hash_all()
        nodes = self._nodes.to_list()
        for index in range(1, len(nodes), 2):
            parent_node = nodes[index]
            if not isinstance(parent_node, ParentNode):
                continue
            # Appendix C: the children of a node at level k lie 2**(k-1) to
            # either side, and ``x ^ (x + 1)`` is 2**(k+1) - 1.
            half = ((index ^ (index + 1)) + 1) >> 2
            parent = NodeIndex(index)
            left_child, right_child = NodeIndex(index - half), NodeIndex(index + half)
            left_value, right_value = nodes[left_child], nodes[right_child]
            if (
                left_value is None
                or right_value is None
                or parent_node.unmerged_leaves
                or (isinstance(left_value, ParentNode) and left_value.unmerged_leaves)
                or (isinstance(right_value, ParentNode) and right_value.unmerged_leaves)
            ):
                links = self._count_links(parent_node, left_child, right_child) + self._count_links(
                    parent_node, right_child, left_child
                )
            else:
                # The common case: both children are set and no unmerged
                # leaves are involved, so each child is the only candidate
                # on its side and meets the unmerged-leaves condition.
                links = self._links_to(left_value, parent_node, right_child) + self._links_to(
                    right_value, parent_node, left_child
                )
            # RFC 9420 §7.9.2: "When joining a group, the new member MUST
            # authenticate that each non-blank parent node P is parent-hash
            # valid. This can be done ... "top down" by verifying that there
            # is exactly one descendant of each non-blank parent node for
            # which the parent node is parent-hash valid."
            if links != 1:
                raise ParentHashMismatch(
                    f"parent node {parent} is not parent-hash valid "
                    f"({links} descendants link to it, expected exactly 1)"
                )

    def _count_links(self, parent_node: ParentNode, child: NodeIndex, sibling: NodeIndex) -> int:
        # How many descendants under ``child`` link to ``parent_node`` (0 or 1
        # in any tree; see verify_parent_hashes for why only these are tried).
        unmerged = parent_node.unmerged_leaves
        if unmerged:
            first, last = _leaf_span(child)
            unmerged_below = {u for u in unmerged if first <= u <= last}
        else:
            unmerged_below = set()
        value = self._nodes[child]
        if value is not None:
            # C is not blank: its resolution is C and C's unmerged leaves, so
            # D = C, and the rest is C's unmerged leaves.
            rest = value.unmerged_leaves if isinstance(value, ParentNode) else ()
            if unmerged_below != set(rest):
                return 0
            return self._links_to(value, parent_node, sibling)
        resolution: list[NodeIndex] = []
        self._resolve(child, resolution)
        below = {leaf_to_node(LeafIndex(u)) for u in unmerged_below}
        # RFC 9420 §7.9.2: "D is in the resolution of C, and the intersection
        # of P's unmerged_leaves with the subtree under C is equal to the
        # resolution of C with D removed." So D is the one node of C's
        # resolution that P does not list, if there is exactly one.
        unlisted = set(resolution)
        if not below <= unlisted:
            return 0
        unlisted -= below
        if len(unlisted) != 1:
            return 0
        candidate = self._nodes[unlisted.pop()]
        if candidate is None:  # pragma: no cover - see below
            # A blank leaf is in a resolution only as an unmerged leaf of a
            # non-blank parent that is in it too, and P cannot list a parent.
            return 0
        return self._links_to(candidate, parent_node, sibling)

    def _links_to(self, descendant: Node, parent_node: ParentNode, sibling: NodeIndex) -> int:
        # RFC 9420 §7.9.2: "The parent_hash field of D is equal to the parent
        # hash of P with copath child S". A leaf that is not from a commit has
        # no parent_hash, and no hash is empty.
        link = descendant.parent_hash
        if not link:
            return 0
        return int(hmac.compare_digest(link, self._parent_hash(parent_node, sibling)))

    # -- Structural checks (RFC 9420 §7.3, §12.4.3.1) ------------------------------------

    def verify_leaf_signatures(self, group_id: bytes) -> None:
        """
        Check the signature of every non-blank leaf (RFC 9420 §7.3).

        :param group_id: the group's id, signed by leaves whose source is ``update`` or
            ``commit`` together with their leaf index.
        :raises InvalidSignature: naming the first leaf whose signature does not verify.
        :raises InvalidKey: if a leaf's signature key is not a valid key for the suite.
        """
        for leaf_index, leaf_node in self.leaves():
            self.verify_leaf_signature(leaf_index, leaf_node, group_id)

    def verify_leaf_signature(
        self, leaf_index: LeafIndex, leaf_node: LeafNode, group_id: bytes
    ) -> None:
        """
        Check one leaf node's signature as if it sat at ``leaf_index`` (RFC 9420 §7.2, §7.3).

        :param leaf_index: the leaf's index (part of LeafNodeTBS unless from a KeyPackage).
        :param leaf_node: the leaf node.
        :param group_id: the group's id.
        :raises InvalidSignature: if the signature does not verify.
        :raises InvalidKey: if the leaf's signature key is not a valid key for the suite.
        """
        # RFC 9420 §7.3: "Verify that the signature on the LeafNode is valid
        # using signature_key."
        encoding = (
            self._leaf_bytes(leaf_index, leaf_node)
            if 0 <= leaf_index < self._n_leaves and self._nodes[2 * leaf_index] is leaf_node
            else None
        )
        try:
            self._suite.verify_with_label(
                leaf_node.signature_key,
                _LEAF_NODE_TBS_LABEL,
                leaf_node.to_be_signed(group_id, leaf_index, encoding=encoding),
                leaf_node.signature,
            )
        except InvalidSignature as exc:
            raise InvalidSignature(f"leaf {leaf_index}: {exc}") from exc

    def verify_unmerged_leaves(self) -> None:
        """
        Check every parent's ``unmerged_leaves`` (RFC 9420 §7.1, §12.4.3.1).

        :raises InvalidUnmergedLeaves: if a list is unsorted, names a blank leaf or one outside
            the parent's subtree, or a non-blank node between the leaf and the parent does not
            list it too.
        """
        nodes = self._nodes.to_list()
        # Most parents list no unmerged leaf; the slice skips them in C.
        for position, parent_node in enumerate(nodes[1::2]):
            if not isinstance(parent_node, ParentNode) or not parent_node.unmerged_leaves:
                continue
            parent = NodeIndex(2 * position + 1)
            unmerged = parent_node.unmerged_leaves
            # RFC 9420 §7.1: "The entries in the unmerged_leaves vector MUST
            # be sorted in increasing order."
            if any(a >= b for a, b in itertools.pairwise(unmerged)):
                raise InvalidUnmergedLeaves(f"unmerged_leaves of node {parent} are not sorted")
            first, last = _leaf_span(parent)
            for u in unmerged:
                # RFC 9420 §12.4.3.1: "Verify that the entry represents a
                # non-blank leaf node that is a descendant of the parent node."
                if not first <= u <= last:
                    raise InvalidUnmergedLeaves(
                        f"unmerged leaf {u} of node {parent} is not in its subtree"
                    )
                leaf_node_index = leaf_to_node(LeafIndex(u))
                if nodes[leaf_node_index] is None:
                    raise InvalidUnmergedLeaves(f"unmerged leaf {u} of node {parent} is blank")
                # RFC 9420 §12.4.3.1: "Verify that every non-blank intermediate
                # node between the leaf node and the parent node also has an
                # entry for the leaf node in its unmerged_leaves."
                between = parent_of(leaf_node_index, self._n_leaves)
                while between != parent:
                    value = nodes[between]
                    if isinstance(value, ParentNode) and u not in value.unmerged_leaves:
                        raise InvalidUnmergedLeaves(
                            f"node {between} lies between unmerged leaf {u} and node {parent} "
                            "but does not list it"
                        )
                    between = parent_of(between, self._n_leaves)

    def verify_unique_keys(self) -> None:
        """
        Check that no encryption key appears in two nodes and no signature key in two leaves.

        :raises DuplicateKey: naming the two nodes that share a key.
        """
        # The tree counts every key it holds (see _write): if every count is
        # one, as in any valid tree, there is nothing to find, and only a tree
        # with a duplicate is scanned, to name the first pair.
        if self._encryption_keys.all_once() and self._signature_keys.all_once():
            return
        seen_encryption: dict[bytes, int] = {}
        seen_signature: dict[bytes, int] = {}
        for index, value in enumerate(self._nodes):
            if value is None:
                continue
            # RFC 9420 §12.4.3.1: "Verify that the encryption key in the
            # parent node does not appear in any other node of the tree." and
            # §7.3: "Verify that the following fields are unique among the
            # members of the group: signature_key, encryption_key".
            other = seen_encryption.setdefault(value.encryption_key, index)
            if other != index:
                raise DuplicateKey(f"nodes {other} and {index} share an encryption key")
            if isinstance(value, LeafNode):
                other = seen_signature.setdefault(value.signature_key, index)
                if other != index:
                    raise DuplicateKey(f"nodes {other} and {index} share a signature key")

    def verify(self, group_id: bytes) -> None:
        """
        Run every check of a joined tree that needs no application policy (RFC 9420 §12.4.3.1).

        Parent-hash validity, leaf signatures, unmerged leaves and key
        uniqueness. The caller still compares :meth:`root_tree_hash` with the
        GroupInfo and applies its credential, capability and lifetime policy
        to each leaf (§7.3).

        :param group_id: the group's id, for leaf signatures.
        :raises ParentHashMismatch: see :meth:`verify_parent_hashes`.
        :raises InvalidSignature: see :meth:`verify_leaf_signatures`.
        :raises InvalidKey: see :meth:`verify_leaf_signatures`.
        :raises InvalidUnmergedLeaves: see :meth:`verify_unmerged_leaves`.
        :raises DuplicateKey: see :meth:`verify_unique_keys`.
        """
        self.verify_unmerged_leaves()
        self.verify_unique_keys()
        self.verify_parent_hashes()
        self.verify_leaf_signatures(group_id)

    # -- Mutations (RFC 9420 §7.5, §7.7, §12.1) ------------------------------------------

    def _invalidate(self, node: NodeIndex) -> None:
        # A node's tree hash covers its subtree, so a change at ``node``
        # stales exactly the hashes of ``node`` and of its direct path.
        hashes = self._hashes
        hashes[node] = None
        if self._n_leaves > 1:
            for ancestor in direct_path(node, self._n_leaves):
                hashes[ancestor] = None

    def _blank_direct_path(self, node: NodeIndex) -> None:
        if self._n_leaves == 1:
            return
        for ancestor in direct_path(node, self._n_leaves):
            self._write(ancestor, None)
            self._hashes[ancestor] = None

    def _require_member(self, leaf_index: LeafIndex) -> NodeIndex:
        self._check_leaf(leaf_index)
        node = leaf_to_node(leaf_index)
        if self._nodes[node] is None:
            raise UsageError(f"leaf {leaf_index} is blank")
        return node

    def _own_blank_leaves(self) -> None:
        # Copy the heap before its first change if a copy of the tree shares it.
        if self._blank_leaves_shared:
            self._blank_leaves = self._blank_leaves.copy()
            self._blank_leaves_shared = False

    def _extend(self) -> None:
        # RFC 9420 §7.7: "When the size of the tree needs to be increased, a
        # new blank root node is added, whose left subtree is the existing
        # tree and right subtree is a new all-blank subtree."
        old = self._n_leaves
        self._n_leaves = 2 * old
        grow = node_count(self._n_leaves) - len(self._nodes)
        self._nodes.extend([None] * grow)
        self._hashes.extend([None] * grow)
        self._leaf_encodings.extend([None] * old)
        # The new half has no hash yet: fill it level by level when needed.
        self._cold = True
        self._own_blank_leaves()
        for i in range(old, self._n_leaves):
            heapq.heappush(self._blank_leaves, i)

    def _truncate(self) -> None:
        # RFC 9420 §12.1.3: "Truncate the tree by removing the right subtree
        # until there is at least one non-blank leaf node in the right
        # subtree." Trees produced by the protocol have no non-blank parent
        # above only blank leaves (each removal blanks its direct path), so
        # the leaves decide.
        n_leaves = self._n_leaves
        while n_leaves > 1 and self._rightmost < n_leaves // 2:
            n_leaves //= 2
        if n_leaves == self._n_leaves:
            return
        self._n_leaves = n_leaves
        width = node_count(n_leaves)
        for index in range(width, len(self._nodes)):
            self._write(index, None)
        self._nodes.truncate(width)
        self._hashes.truncate(width)
        self._leaf_encodings.truncate(n_leaves)
        self._blank_leaves = [i for i in self._blank_leaves if i < n_leaves]
        self._blank_leaves_shared = False
        heapq.heapify(self._blank_leaves)

    def add_leaf(self, leaf_node: LeafNode) -> LeafIndex:
        """
        Insert a new member's leaf, as an Add proposal does (RFC 9420 §12.1.1).

        The leaf goes to the leftmost blank leaf, or the tree is extended if
        there is none; every non-blank parent on its direct path records it as
        unmerged.

        :param leaf_node: the new member's leaf node (from its KeyPackage).
        :returns: the leaf index it was placed at.
        """
        leaf_index = self._pop_blank_leaf()
        if leaf_index is None:
            self._extend()
            leaf_index = self._pop_blank_leaf()
            if leaf_index is None:  # pragma: no cover - an extension adds blank leaves
                raise UsageError("extending the tree produced no blank leaf")
        node = leaf_to_node(leaf_index)
        self._write(node, leaf_node)
        self._rightmost = max(self._rightmost, leaf_index)
        self._invalidate(node)
        if self._n_leaves > 1:
            for ancestor in direct_path(node, self._n_leaves):
                value = self._nodes[ancestor]
                # RFC 9420 §12.1.1: "For each non-blank intermediate node
                # along the path from the leaf L to the root, add L's leaf
                # index to the unmerged_leaves list for the node." §7.1 keeps
                # the list sorted.
                if isinstance(value, ParentNode):
                    unmerged = list(value.unmerged_leaves)
                    bisect.insort(unmerged, leaf_index)
                    self._write(ancestor, replace(value, unmerged_leaves=tuple(unmerged)))
        return leaf_index

    def _pop_blank_leaf(self) -> LeafIndex | None:
        # RFC 9420 §12.1.1: "Identify the leftmost blank leaf L". The heap
        # holds every blank leaf (and perhaps stale entries, skipped here), so
        # an Add costs O(log n) instead of a scan.
        self._own_blank_leaves()
        heap = self._blank_leaves
        while heap:
            candidate = heapq.heappop(heap)
            if candidate < self._n_leaves and self._nodes[2 * candidate] is None:
                return LeafIndex(candidate)
        return None

    def update_leaf(self, leaf_index: LeafIndex, leaf_node: LeafNode) -> None:
        """
        Replace a member's leaf and blank its direct path, as an Update does (RFC 9420 §12.1.2).

        :param leaf_index: the member's leaf.
        :param leaf_node: its new leaf node.
        :raises UsageError: if the leaf is blank or outside the tree.
        """
        node = self._require_member(leaf_index)
        self._write(node, leaf_node)
        self._invalidate(node)
        self._blank_direct_path(node)

    def remove_leaf(self, leaf_index: LeafIndex) -> None:
        """
        Blank a member's leaf and direct path, then truncate, as a Remove does (RFC 9420 §12.1.3).

        :param leaf_index: the member to remove.
        :raises UsageError: if the leaf is blank, outside the tree or the last member.
        """
        node = self._require_member(leaf_index)
        rightmost = self._rightmost
        if leaf_index == rightmost:
            rightmost = leaf_index - 1
            while rightmost >= 0 and self._nodes[2 * rightmost] is None:
                rightmost -= 1
            if rightmost < 0:
                raise UsageError("cannot remove the last member of the tree")
        self._write(node, None)
        self._invalidate(node)
        self._blank_direct_path(node)
        self._own_blank_leaves()
        heapq.heappush(self._blank_leaves, leaf_index)
        self._rightmost = rightmost
        self._truncate()

    def merge_path(self, leaf_index: LeafIndex, encryption_keys: Sequence[bytes]) -> bytes:
        """
        Merge the public keys of an UpdatePath into the tree (RFC 9420 §7.5).

        Blanks the leaf's direct path, sets each node of its filtered direct
        path to a parent with the given key and no unmerged leaves, and sets
        their parent hashes from the root down (§7.9). The leaf itself is left
        as it is: :meth:`set_leaf` installs the new leaf node, whose
        ``parent_hash`` must be the value returned.

        :param leaf_index: the committer's leaf.
        :param encryption_keys: one public key per node of the filtered direct path, bottom up.
        :returns: the parent hash the committer's new leaf node must carry.
        :raises PathError: if the number of keys differs from the filtered direct path's length
            (the tree is then unchanged).
        :raises UsageError: if the leaf is blank or outside the tree.
        """
        node = self._require_member(leaf_index)
        path = self.filtered_direct_path(leaf_index)
        # RFC 9420 §7.6: the UpdatePath has a node "for each node in the
        # filtered direct path of the sender's leaf, including the root".
        if len(encryption_keys) != len(path):
            raise PathError(
                f"the path has {len(encryption_keys)} nodes, the filtered direct path of "
                f"leaf {leaf_index} has {len(path)}"
            )
        # RFC 9420 §7.5: the direct path is blanked, then the filtered direct
        # path set; each node is written once, with its final value (a node
        # of the filtered path goes straight from its old value to its new
        # one). A parent hash reads only the copath child's subtree, which
        # none of these writes touches.
        on_path = {parent for parent, _ in path}
        hashes = self._hashes
        hashes[node] = None
        if self._n_leaves > 1:
            for ancestor in direct_path(node, self._n_leaves):
                hashes[ancestor] = None
                if ancestor not in on_path:
                    self._write(ancestor, None)
        # RFC 9420 §7.9: "If P is the root, then the parent_hash field is set
        # to a zero-length octet string. Otherwise, parent_hash is the Parent
        # Hash of the next node after P on the filtered direct path of the
        # leaf L." So hashes are computed from the root down.
        next_hash = b""
        for (parent, copath_child), key in zip(
            reversed(path), reversed(encryption_keys), strict=True
        ):
            parent_node = ParentNode(encryption_key=key, parent_hash=next_hash, unmerged_leaves=())
            self._write(parent, parent_node)
            next_hash = self._parent_hash(parent_node, copath_child)
        return next_hash

    def set_leaf(self, leaf_index: LeafIndex, leaf_node: LeafNode) -> None:
        """
        Install a committer's new leaf node after :meth:`merge_path`, keeping its direct path.

        :param leaf_index: the committer's leaf.
        :param leaf_node: the UpdatePath's leaf node.
        :raises UsageError: if the leaf is blank or outside the tree.
        """
        node = self._require_member(leaf_index)
        self._write(node, leaf_node)
        self._invalidate(node)

"""
A group's state in the device's own store, saved incrementally and loaded back after a restart.

Phones lose power at any moment, so a :class:`~townsquare.mls.group.Group` is
saved after every state transition (a merged commit, a decrypted message, a
sent or received proposal, an encrypted message, a created commit) as one
atomic batch of records, written by :meth:`GroupPersistence.save`;
:meth:`GroupPersistence.load` reads the group back. A crash "between any two
writes" is then a crash between two batches, and the store always holds the
state before or after a transition, never a mix. The store is a seam
(:class:`GroupStore`, a ``typing.Protocol``): :class:`MemoryGroupStore` here
is the fake, ``townsquare.storage.sqlite_group_store.SqliteGroupStore`` the
real one (``sqlite3`` stays out of ``mls/``).

The flow of one transition::

    group.process(message) ─► group.merge(staged) ─► persistence.save(app_puts={cursor})
                                                      │ one GroupStore.apply(puts, deletes)
                                                      ▼
    restart ─► GroupPersistence.load(store, config) ─► the same group, the same epoch
               (no signature is verified: the store is   authenticator, the same keys
               the device's own; the tree hash and our
               private keys are checked against it)

Record layout (keys are printable ASCII; numbers are zero-padded so that keys
sort as the numbers do; ``<e>`` is an epoch, ``<n>`` a node index, ``<l>`` a
leaf index, ``<ref>`` a proposal ref in hex)::

    header                    format version, cipher suite, group id, our signature private key
    epoch                     GroupContext, EpochSecrets, interim transcript hash,
                              confirmation tag, own leaf, leaf count
    tree/<n>                  each non-blank node of the ratchet tree (Node)
    key/<n>                   each HPKE private key we hold (TreeKEMPrivate), leaf included
    psk/<e>                   each resumption PSK kept (RFC 9420 §8.6)
    proposal/<ref>            each held proposal with its sender and its place in the list
    update/<ref>              the new leaf private key of each Update we proposed
    pending                   our commit awaiting the delivery service: the commit and
                              Welcome messages, the next epoch's context, secrets and
                              private keys, and the next tree as the nodes where it
                              differs from tree/ (the GroupInfo, which holds the whole
                              tree, is signed again on load instead of being stored)
    past/<e>                  a past epoch kept for late messages: context, sender data
                              secret, leaf count, and its tree as the nodes where it
                              differs from epoch e+1's (an undo record)
    secret/<e>/node/<n>       secret tree of epoch e: each node secret still held (§9)
    secret/<e>/ratchet/<l>/<kind>
                              each hash ratchet: next generation, secret, retained keys
    app/...                   the application's records, written in the same batches
                              (a delivery cursor, an outbox), never touched otherwise

What a transition writes (at 1,000 members, measured by
``test_commit_at_1000_members_writes_log_n_node_records``):

* merging a commit with a path: ``tree/`` for the committer's leaf and each
  node of its direct path whose value changed (11 records; 12 with one leaf
  added or removed), ``key/`` for the private keys that changed (1 to 11),
  one ``epoch``, one ``past/``, one ``secret/`` root, one ``psk/``, and the
  deletions of what fell out of the windows (the oldest past epoch and its
  secret tree, the oldest PSK, held proposals and updates): 25 to 29 records,
  about 3 kB. Never the whole tree.
* decrypting a message: the one ratchet it advanced (1 record); the first
  message from a sender in an epoch also opens that sender's ratchets,
  replacing one node secret by at most log2(n) siblings (13 records).
* creating a commit: one ``pending`` record, as large as the commit message
  (and Welcome) it holds.

Nothing is recomputed to find what changed: :class:`RatchetTree` records
which nodes it writes (:meth:`RatchetTree.track_changes`), and so does
:class:`SecretTree`; the rest (epoch, private keys, proposals, PSKs) is
compared by identity or in O(log n). A tree that is not of the stored tree's
lineage (say, after two merges between saves) is compared node by node, by
identity: O(n) pointer comparisons, still O(changes) writes.

This module reads and sets the private state of :class:`Group` (and of its
``_Epoch``, ``_PastEpoch`` and ``StagedCommit``), so that ``group.py`` needs
no persistence code; ``test_every_slot_of_group_is_persisted`` fails when
``Group`` gains state that is not saved here.

Restoring a pending commit: :meth:`Group.commit` creates a pending commit; the
driver saves, then sends. If the process dies before the delivery service
answers, the restored group still holds the pending commit, so when the
service hands it back as the winner :meth:`Group.process` recognises it and
:meth:`Group.merge` makes its epoch current. Save before sending anything the
group produced (an encrypted message consumes a ratchet generation; sending
it unsaved risks reusing that generation after a restart).
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Annotated, Protocol, TypeVar

from townsquare.mls.ciphersuite import CipherSuite, get_cipher_suite
from townsquare.mls.codec import U8, U16, U32, U64, Opaque, Optional, Struct, Vector
from townsquare.mls.errors import DecodeError, MLSError, TreeError, UsageError
from townsquare.mls.framing import SENDER, Sender
from townsquare.mls.group import (
    Group,
    GroupConfig,
    PendingCommit,
    StagedCommit,
    _Epoch,
    _mls_message,
    _PastEpoch,
)
from townsquare.mls.group_context import GroupContext
from townsquare.mls.key_schedule import EpochSecrets
from townsquare.mls.leaf_node import LeafNode
from townsquare.mls.proposal_list import SenderProposal
from townsquare.mls.proposals import PROPOSAL, Proposal
from townsquare.mls.ratchet_tree import NODE, Node, RatchetTree
from townsquare.mls.registries import NodeType
from townsquare.mls.secret_tree import RatchetKind, RatchetState, SecretTree, SecretTreeState
from townsquare.mls.tree_math import LeafIndex, NodeIndex, leaf_to_node, node_count
from townsquare.mls.treekem import TreeKEMPrivate

__all__ = [
    "APP_PREFIX",
    "FORMAT_VERSION",
    "GroupNotStored",
    "GroupPersistence",
    "GroupStore",
    "MemoryGroupStore",
    "SavedChanges",
    "StoreCorrupt",
    "check_batch",
    "check_prefix",
]

#: The version of the record layout above, kept in the ``header`` record.
FORMAT_VERSION = 1
#: Keys under this prefix belong to the application (see :meth:`GroupPersistence.save`).
APP_PREFIX = "app/"

_MAX_KEY_LENGTH = 255


# -- Errors ---------------------------------------------------------------------------


class GroupNotStored(UsageError):
    """
    The store holds no group to load.
    """


class StoreCorrupt(MLSError):
    """
    The store's records do not decode, or do not fit together (tree hash, private keys, epochs).
    """


# -- The store seam -------------------------------------------------------------------


class GroupStore(Protocol):
    """
    The records of one group, with atomic batches (the seam between a group and its storage).

    Keys are printable ASCII strings (see :func:`check_batch`); values are bytes.
    """

    def get(self, key: str) -> bytes | None:
        """
        :returns: the value stored under ``key``, or ``None``.
        """
        ...

    def scan(self, prefix: str) -> list[tuple[str, bytes]]:
        """
        :returns: every record whose key starts with ``prefix`` (``""``: all), sorted by key.
        :raises UsageError: if ``prefix`` is not printable ASCII.
        """
        ...

    def apply(self, puts: Mapping[str, bytes], deletes: Collection[str]) -> None:
        """
        Store ``puts`` and remove ``deletes`` (absent keys are ignored), all or nothing.

        :raises UsageError: if the batch breaks :func:`check_batch`; nothing is written.
        """
        ...


def _check_ascii(text: str, what: str) -> None:
    # Printable ASCII without space: keys sort the same as bytes and as text,
    # in every store, and a prefix's upper bound is one character away. Among
    # ASCII characters, isprintable() accepts exactly " " to "~"; a save checks
    # some 30 keys, so this stays in C rather than a loop per character.
    if not (text.isascii() and text.isprintable()) or " " in text:
        raise UsageError(f"{what} {text!r} is not printable ASCII")


def check_prefix(prefix: str) -> None:
    """
    Check a :meth:`GroupStore.scan` prefix: a ``str`` of printable ASCII, perhaps empty.

    :raises UsageError: if it is not.
    """
    if not isinstance(prefix, str):
        raise UsageError("a prefix is a str")
    _check_ascii(prefix, "prefix")


def check_batch(puts: Mapping[str, bytes], deletes: Collection[str]) -> None:
    """
    Check a :meth:`GroupStore.apply` batch before anything is written.

    Keys are ``str`` of 1 to 255 printable ASCII characters (``!`` to ``~``);
    values are ``bytes``; no key is both put and deleted.

    :raises UsageError: naming the first key or value that breaks a rule.
    """
    for key in (*puts, *deletes):
        if not isinstance(key, str) or not 1 <= len(key) <= _MAX_KEY_LENGTH:
            raise UsageError(f"a key is a str of 1 to {_MAX_KEY_LENGTH} characters: {key!r}")
        _check_ascii(key, "key")
    for key, value in puts.items():
        if type(value) is not bytes:
            raise UsageError(f"the value of {key!r} is not bytes")
    both = set(puts).intersection(deletes)
    if both:
        raise UsageError(f"keys both put and deleted: {sorted(both)}")


class MemoryGroupStore:
    """
    A :class:`GroupStore` in a dict: the fake for tests, passing the same contract tests.
    """

    __slots__ = ("_records",)

    def __init__(self) -> None:
        """
        Start empty.
        """
        self._records: dict[str, bytes] = {}

    def get(self, key: str) -> bytes | None:
        """
        :returns: the value stored under ``key``, or ``None``.
        """
        return self._records.get(key)

    def scan(self, prefix: str) -> list[tuple[str, bytes]]:
        """
        :returns: every record whose key starts with ``prefix``, sorted by key.
        :raises UsageError: if ``prefix`` is not printable ASCII.
        """
        check_prefix(prefix)
        return sorted((k, v) for k, v in self._records.items() if k.startswith(prefix))

    def apply(self, puts: Mapping[str, bytes], deletes: Collection[str]) -> None:
        """
        Store ``puts`` and remove ``deletes``, all or nothing.

        :raises UsageError: if the batch breaks :func:`check_batch`; nothing is written.
        """
        check_batch(puts, deletes)
        for key in deletes:
            self._records.pop(key, None)
        self._records.update(puts)


# -- Records ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class _Header(Struct):
    format_version: Annotated[int, U16]
    cipher_suite: Annotated[int, U16]
    group_id: Annotated[bytes, Opaque]
    signature_private_key: Annotated[bytes, Opaque]


@dataclass(frozen=True, slots=True, kw_only=True)
class _Secrets(Struct):
    # The fields of EpochSecrets, in its order.
    joiner_secret: Annotated[bytes, Opaque]
    welcome_secret: Annotated[bytes, Opaque]
    epoch_secret: Annotated[bytes, Opaque]
    sender_data_secret: Annotated[bytes, Opaque]
    encryption_secret: Annotated[bytes, Opaque]
    exporter_secret: Annotated[bytes, Opaque]
    external_secret: Annotated[bytes, Opaque]
    confirmation_key: Annotated[bytes, Opaque]
    membership_key: Annotated[bytes, Opaque]
    resumption_psk: Annotated[bytes, Opaque]
    epoch_authenticator: Annotated[bytes, Opaque]
    init_secret: Annotated[bytes, Opaque]


_SECRET_FIELDS = tuple(f.name for f in fields(EpochSecrets))


def _secrets_record(secrets: EpochSecrets) -> _Secrets:
    values: dict[str, bytes] = {name: getattr(secrets, name) for name in _SECRET_FIELDS}
    return _Secrets(**values)


def _secrets_from(record: _Secrets) -> EpochSecrets:
    values: dict[str, bytes] = {name: getattr(record, name) for name in _SECRET_FIELDS}
    return EpochSecrets(**values)


@dataclass(frozen=True, slots=True, kw_only=True)
class _EpochRecord(Struct):
    context: GroupContext
    secrets: _Secrets
    interim_transcript_hash: Annotated[bytes, Opaque]
    confirmation_tag: Annotated[bytes, Opaque]
    own_leaf: Annotated[int, U32]
    leaf_count: Annotated[int, U32]


@dataclass(frozen=True, slots=True)
class _NodeRecord(Struct):
    node: Annotated[Node, NODE]


@dataclass(frozen=True, slots=True)
class _NodeValue(Struct):
    # A node of a tree that differs from another tree's (None: blank there).
    node_index: Annotated[int, U32]
    node: Annotated[Node | None, Optional, NODE]


@dataclass(frozen=True, slots=True)
class _NodeKey(Struct):
    node_index: Annotated[int, U32]
    private_key: Annotated[bytes, Opaque]


@dataclass(frozen=True, slots=True, kw_only=True)
class _PastRecord(Struct):
    context: GroupContext
    sender_data_secret: Annotated[bytes, Opaque]
    leaf_count: Annotated[int, U32]
    undo: Annotated[tuple[_NodeValue, ...], Vector]


@dataclass(frozen=True, slots=True)
class _RetainedKey(Struct):
    generation: Annotated[int, U32]
    key: Annotated[bytes, Opaque]
    nonce: Annotated[bytes, Opaque]


@dataclass(frozen=True, slots=True)
class _RatchetRecord(Struct):
    next_generation: Annotated[int, U64]
    secret: Annotated[bytes, Opaque]
    retained: Annotated[tuple[_RetainedKey, ...], Vector]


@dataclass(frozen=True, slots=True)
class _SecretRecord(Struct):
    secret: Annotated[bytes, Opaque]


@dataclass(frozen=True, slots=True)
class _HeldProposal(Struct):
    order: Annotated[int, U32]
    sender: Annotated[Sender, SENDER]
    proposal: Annotated[Proposal, PROPOSAL]


@dataclass(frozen=True, slots=True)
class _CoveredProposal(Struct):
    sender: Annotated[Sender, SENDER]
    proposal: Annotated[Proposal, PROPOSAL]


@dataclass(frozen=True, slots=True, kw_only=True)
class _PendingRecord(Struct):
    commit: Annotated[bytes, Opaque]
    welcome: Annotated[bytes | None, Optional, Opaque]
    added: Annotated[tuple[Annotated[int, U32], ...], Vector]
    removed: Annotated[tuple[Annotated[int, U32], ...], Vector]
    updated: Annotated[tuple[Annotated[int, U32], ...], Vector]
    reinit: Annotated[int, U8]
    next_epoch: _EpochRecord
    next_keys: Annotated[tuple[_NodeKey, ...], Vector]
    next_tree: Annotated[tuple[_NodeValue, ...], Vector]
    # What the commit covers, with the proposers: what authority rules judge it by.
    covered: Annotated[tuple[_CoveredProposal, ...], Vector]


# -- Keys -------------------------------------------------------------------------------

_HEADER = "header"
# Present (empty) once a committed ReInit has closed the group for sending.
_REINITIALIZED = "reinitialized"
_EPOCH = "epoch"
_PENDING = "pending"
_TREE = "tree/"
_KEY = "key/"
_PSK = "psk/"
_PROPOSAL = "proposal/"
_UPDATE = "update/"
_PAST = "past/"
_SECRET = "secret/"  # noqa: S105 - a key prefix, not a password
_KINDS = {RatchetKind.HANDSHAKE: "handshake", RatchetKind.APPLICATION: "application"}
_KIND_NAMES = {name: kind for kind, name in _KINDS.items()}


def _tree_key(node: int) -> str:
    return f"{_TREE}{node:010d}"


def _key_key(node: int) -> str:
    return f"{_KEY}{node:010d}"


def _psk_key(epoch: int) -> str:
    return f"{_PSK}{epoch:020d}"


def _past_key(epoch: int) -> str:
    return f"{_PAST}{epoch:020d}"


def _secret_prefix(epoch: int) -> str:
    return f"{_SECRET}{epoch:020d}/"


def _secret_node_key(epoch: int, node: int) -> str:
    return f"{_secret_prefix(epoch)}node/{node:010d}"


def _ratchet_key(epoch: int, leaf: int, kind: RatchetKind) -> str:
    return f"{_secret_prefix(epoch)}ratchet/{leaf:010d}/{_KINDS[kind]}"


_S = TypeVar("_S", bound=Struct)
_K = TypeVar("_K")
_V = TypeVar("_V")


def _decode(cls: type[_S], data: bytes, key: str) -> _S:
    try:
        return cls.decode(data)
    except DecodeError as exc:
        raise StoreCorrupt(f"record {key!r} does not decode: {exc}") from exc


def _number(text: str, key: str) -> int:
    if not text.isdigit():
        raise StoreCorrupt(f"record key {key!r} does not end in a number")
    return int(text)


# -- Values to records and back ---------------------------------------------------------


_LEAF_NODE_TYPE = bytes((NodeType.LEAF,))


def _node_record(tree: RatchetTree, index: int, value: Node) -> bytes:
    """
    :returns: ``_NodeRecord(value).encode()`` for ``value``, the node at ``index`` of ``tree``.
    """
    if isinstance(value, LeafNode):
        # The Node select's type octet (RFC 9420 §7.8), then the leaf's
        # encoding, which the tree keeps (a first save writes every leaf).
        return _LEAF_NODE_TYPE + tree.leaf_encoding(LeafIndex(index // 2))
    return _NodeRecord(value).encode()


def _epoch_record(epoch: _Epoch) -> _EpochRecord:
    return _EpochRecord(
        context=epoch.context,
        secrets=_secrets_record(epoch.secrets),
        interim_transcript_hash=epoch.interim_transcript_hash,
        confirmation_tag=epoch.confirmation_tag,
        own_leaf=epoch.own_leaf,
        leaf_count=epoch.tree.leaf_count,
    )


def _ratchet_record(state: RatchetState) -> bytes:
    return _RatchetRecord(
        state.next_generation,
        state.secret,
        tuple(_RetainedKey(g, k, n) for g, k, n in state.retained),
    ).encode()


def _private_keys(private: TreeKEMPrivate) -> dict[NodeIndex, bytes]:
    keys: dict[NodeIndex, bytes] = {}
    for node in private.nodes():
        key = private.private_key(node)
        if key is not None:  # pragma: no branch - nodes() lists only held keys
            keys[node] = key
    return keys


def _width(leaf_count: int, what: str) -> int:
    # RFC 9420 §7.7: a tree has a power of two of leaves.
    if leaf_count < 1 or leaf_count & (leaf_count - 1):
        raise StoreCorrupt(f"{what}: a tree of {leaf_count} leaves")
    return node_count(leaf_count)


def _patched(
    nodes: Sequence[Node | None], changes: Iterable[_NodeValue], width: int, what: str
) -> list[Node | None]:
    # Another epoch's tree: ``nodes`` with ``changes``, cut or padded to ``width``.
    work = list(nodes) + [None] * max(0, width - len(nodes))
    for change in changes:
        if change.node_index >= len(work):
            raise StoreCorrupt(f"{what}: a node outside the tree")
        work[change.node_index] = change.node
    del work[width:]
    return work


def _tree_from(
    suite: CipherSuite,
    nodes: Sequence[Node | None],
    leaf_count: int,
    tree_hash: bytes | None,
    what: str,
) -> RatchetTree:
    end = len(nodes)
    while end > 0 and nodes[end - 1] is None:
        end -= 1
    try:
        tree = RatchetTree(suite, nodes[:end])
    except TreeError as exc:
        raise StoreCorrupt(f"{what}: the stored ratchet tree is invalid: {exc}") from exc
    if tree.leaf_count != leaf_count:
        raise StoreCorrupt(
            f"{what}: the stored tree has {tree.leaf_count} leaves, not {leaf_count}"
        )
    # The store is our own, so leaf signatures and parent hashes are not
    # checked again (that is what a joiner does once); the tree hash is, so
    # that records of two different states never load as one. Hashing a cold
    # tree costs O(n) hashes, but the next commit needs those hashes anyway.
    if tree_hash is not None and not hmac.compare_digest(tree.root_tree_hash(), tree_hash):
        raise StoreCorrupt(f"{what}: the stored tree does not match the epoch's tree hash")
    return tree


def _private_from(
    suite: CipherSuite,
    own_leaf: LeafIndex,
    keys: Mapping[NodeIndex, bytes],
    tree: RatchetTree,
    what: str,
) -> TreeKEMPrivate:
    leaf_node = leaf_to_node(own_leaf)
    leaf_key = keys.get(leaf_node)
    if leaf_key is None:
        raise StoreCorrupt(f"{what}: no private key for our leaf")
    parents = {node: key for node, key in keys.items() if node != leaf_node}
    try:
        private = TreeKEMPrivate(suite, own_leaf, leaf_key, parents)
        private.check_consistent(tree)
    except MLSError as exc:
        raise StoreCorrupt(f"{what}: the stored private keys do not fit the tree: {exc}") from exc
    return private


def _differences(
    a: RatchetTree, b: RatchetTree, candidates: Iterable[int] | None
) -> list[tuple[int, Node | None]]:
    """
    The nodes where ``a`` differs from ``b`` (compared by identity), with ``a``'s values.
    """
    width_a, width_b = a.node_width, b.node_width
    if candidates is None:
        candidates = range(max(width_a, width_b))
    out: list[tuple[int, Node | None]] = []
    for i in sorted(candidates):
        value_a = a.node(NodeIndex(i)) if i < width_a else None
        value_b = b.node(NodeIndex(i)) if i < width_b else None
        if value_a is not value_b:
            out.append((i, value_a))
    return out


@dataclass(frozen=True, slots=True)
class SavedChanges:
    """
    What one :meth:`GroupPersistence.save` wrote, in one atomic batch.
    """

    put_keys: tuple[str, ...]
    deleted_keys: tuple[str, ...]
    #: The total size of the values written.
    bytes_written: int = 0

    def count(self, prefix: str) -> int:
        """
        :returns: how many keys under ``prefix`` were put or deleted.
        """
        return sum(1 for key in (*self.put_keys, *self.deleted_keys) if key.startswith(prefix))


class _Batch:
    __slots__ = ("deletes", "puts")

    def __init__(self) -> None:
        self.puts: dict[str, bytes] = {}
        self.deletes: set[str] = set()

    def put(self, key: str, value: bytes) -> None:
        self.deletes.discard(key)
        self.puts[key] = value

    def delete(self, key: str) -> None:
        self.puts.pop(key, None)
        self.deletes.add(key)

    def diff(
        self,
        old: Mapping[_K, _V],
        new: Mapping[_K, _V],
        key_of: Callable[[_K], str],
        encode: Callable[[_V], bytes],
    ) -> None:
        # Put each entry of ``new`` that ``old`` lacks or holds otherwise;
        # delete each key only ``old`` has.
        for k, v in new.items():
            if k not in old or old[k] != v:
                self.put(key_of(k), encode(v))
        for k in old.keys() - new.keys():
            self.delete(key_of(k))


# -- Persistence ------------------------------------------------------------------------


class GroupPersistence:
    """
    Saves one :class:`Group`'s changes to a :class:`GroupStore`, and loads a group back.

    Make one with :meth:`load`, or from a group just created or joined; call
    :meth:`save` after each transition of :attr:`group` and before sending
    what it produced.
    """

    __slots__ = (
        "_epoch",
        "_group",
        "_keys",
        "_past",
        "_pending",
        "_private",
        "_proposals",
        "_psks",
        "_reinitialized",
        "_secret_keys",
        "_secret_trees",
        "_signature_private_key",
        "_store",
        "_tree",
        "_tree_nodes",
        "_tree_token",
        "_updates",
    )

    def __init__(self, group: Group, store: GroupStore) -> None:
        """
        Persist ``group`` in ``store``; the first :meth:`save` writes it whole.

        Records of another group in ``store`` are deleted by that first save;
        records under :data:`APP_PREFIX` are kept.

        :param group: the group (created, joined or loaded).
        :param store: its store.
        """
        self._group = group
        self._store = store
        # What the store holds, as of the last successful save. Objects are
        # compared by identity: the group replaces, never mutates, its epoch,
        # private keys, pending commit and current tree.
        self._epoch: _Epoch | None = None
        self._signature_private_key = b""
        self._tree: RatchetTree | None = None
        self._tree_token: object | None = None
        self._tree_nodes: list[Node | None] = []
        self._private: TreeKEMPrivate | None = None
        self._keys: dict[NodeIndex, bytes] = {}
        self._psks: dict[int, bytes] = {}
        self._proposals: dict[bytes, tuple[int, SenderProposal]] = {}
        self._updates: dict[bytes, bytes] = {}
        self._pending: PendingCommit | None = None
        self._reinitialized = False
        self._past: set[int] = set()
        self._secret_trees: dict[int, SecretTree] = {}
        self._secret_keys: dict[int, set[str]] = {}

    @property
    def group(self) -> Group:
        """
        The group this object saves.
        """
        return self._group

    @property
    def store(self) -> GroupStore:
        """
        The store it saves to.
        """
        return self._store

    # -- Saving -------------------------------------------------------------------------

    def save(
        self,
        *,
        app_puts: Mapping[str, bytes] | None = None,
        app_deletes: Collection[str] = (),
    ) -> SavedChanges:
        """
        Write what changed in the group since the last save, as one atomic batch.

        :param app_puts: application records to write in the same batch (keys under
            :data:`APP_PREFIX`), such as the delivery cursor of the message just processed.
        :param app_deletes: application records to delete in the same batch.
        :returns: the keys written and deleted (none, and no batch, if nothing changed).
        :raises UsageError: if an application key is outside :data:`APP_PREFIX`.
        :raises Exception: whatever the store raises; the group's saved state is then
            unchanged, and the next save writes the same changes again.
        """
        app_puts = app_puts or {}
        for key in (*app_puts, *app_deletes):
            if not key.startswith(APP_PREFIX):
                raise UsageError(f"application keys start with {APP_PREFIX!r}: {key!r}")
        group = self._group
        epoch = group._epoch
        batch = _Batch()
        first = self._epoch is None
        if first:
            for key, _ in self._store.scan(""):
                if not key.startswith(APP_PREFIX):
                    batch.delete(key)
        signature_private_key = group._signature_private_key
        if first or signature_private_key != self._signature_private_key:
            batch.put(
                _HEADER,
                _Header(
                    format_version=FORMAT_VERSION,
                    cipher_suite=group.cipher_suite.suite_id,
                    group_id=group.group_id,
                    signature_private_key=signature_private_key,
                ).encode(),
            )
        if epoch is not self._epoch:
            batch.put(_EPOCH, _epoch_record(epoch).encode())
        if group._reinitialized != self._reinitialized:
            if group._reinitialized:
                batch.put(_REINITIALIZED, b"")
            else:
                batch.delete(_REINITIALIZED)

        tree = epoch.tree
        candidates = None if self._tree_token is None else tree.changed_nodes(self._tree_token)
        tree_changes = self._tree_changes(tree, candidates)
        for i, value in tree_changes:
            if value is None:
                batch.delete(_tree_key(i))
            else:
                batch.put(_tree_key(i), _node_record(tree, i, value))

        # Private keys, PSKs, held proposals and pending updates: O(log n)
        # or a handful each, so compared whole with what was stored.
        keys = self._keys
        if epoch.private is not self._private:
            keys = _private_keys(epoch.private)
            batch.diff(self._keys, keys, _key_key, lambda private_key: private_key)
        psks = dict(group._resumption_psks)
        batch.diff(self._psks, psks, _psk_key, lambda psk: psk)
        proposals = {ref: (i, held) for i, (ref, held) in enumerate(group._proposals.items())}
        batch.diff(
            self._proposals,
            proposals,
            lambda ref: _PROPOSAL + ref.hex(),
            lambda item: _HeldProposal(item[0], item[1].sender, item[1].proposal).encode(),
        )
        updates = dict(group._pending_updates)
        batch.diff(self._updates, updates, lambda ref: _UPDATE + ref.hex(), lambda key: key)

        pending = group._pending_commit
        if pending is not self._pending:
            if pending is None:
                batch.delete(_PENDING)
            else:
                batch.put(_PENDING, self._pending_record(pending, tree).encode())

        past_epochs = dict(group._past)
        for past_epoch in sorted(past_epochs.keys() - self._past):
            batch.put(
                _past_key(past_epoch),
                self._past_record(past_epoch, past_epochs, epoch, tree_changes).encode(),
            )
        for past_epoch in self._past - past_epochs.keys():
            batch.delete(_past_key(past_epoch))

        secret_trees = {e: p.secret_tree for e, p in past_epochs.items()}
        secret_trees[epoch.context.epoch] = group._secret_tree
        secret_key_changes = {
            e: self._save_secret_tree(e, secret_tree, batch)
            for e, secret_tree in secret_trees.items()
        }
        dropped_secret_trees = self._secret_keys.keys() - secret_trees.keys()
        for e in dropped_secret_trees:
            for key in self._secret_keys[e]:
                batch.delete(key)

        for app_key, app_value in app_puts.items():
            batch.put(app_key, app_value)
        for app_key in app_deletes:
            batch.delete(app_key)

        if batch.puts or batch.deletes:
            self._store.apply(batch.puts, batch.deletes)

        # The batch is stored: record what the store now holds.
        if tree is not self._tree or tree_changes:
            nodes = self._tree_nodes
            if len(nodes) < tree.node_width:
                nodes.extend([None] * (tree.node_width - len(nodes)))
            for i, value in tree_changes:
                nodes[i] = value
            del nodes[tree.node_width :]
            if candidates is None or tree_changes:
                self._tree_token = tree.track_changes()
            self._tree = tree
        self._epoch = epoch
        self._signature_private_key = signature_private_key
        self._private = epoch.private
        self._keys = keys
        self._psks = psks
        self._proposals = proposals
        self._updates = updates
        self._pending = pending
        self._reinitialized = group._reinitialized
        self._past = set(past_epochs)
        for e in dropped_secret_trees:
            del self._secret_keys[e]
        for e, (replaced, added, removed) in secret_key_changes.items():
            secret_keys = self._secret_keys.setdefault(e, set())
            if replaced:
                secret_keys.clear()
            secret_keys.difference_update(removed)
            secret_keys.update(added)
            secret_trees[e].track_changes()
        self._secret_trees = secret_trees
        return SavedChanges(
            tuple(sorted(batch.puts)),
            tuple(sorted(batch.deletes)),
            sum(len(value) for value in batch.puts.values()),
        )

    def _tree_changes(
        self, tree: RatchetTree, candidates: frozenset[NodeIndex] | None
    ) -> list[tuple[int, Node | None]]:
        # The nodes where ``tree`` differs from the stored tree, by identity:
        # among the nodes it wrote since the stored tree was saved, or among
        # all nodes if it is of another lineage.
        saved = self._tree_nodes
        width = tree.node_width
        out: list[tuple[int, Node | None]] = []
        if candidates is None:
            # Every node: read the tree's array once (what a first save or a
            # joined group's costs), not node by node.
            current = tree.to_nodes().nodes
            for i in range(max(width, len(saved))):
                value = current[i] if i < len(current) else None
                if value is not (saved[i] if i < len(saved) else None):
                    out.append((i, value))
            return out
        for i in sorted(candidates):
            value = tree.node(NodeIndex(i)) if i < width else None
            if value is not (saved[i] if i < len(saved) else None):
                out.append((i, value))
        return out

    def _pending_record(self, pending: PendingCommit, tree: RatchetTree) -> _PendingRecord:
        staged = pending.staged
        next_epoch = staged._next
        next_tree = next_epoch.tree
        token = self._tree_token
        next_candidates = None if token is None else next_tree.changed_nodes(token)
        candidates = None if token is None else tree.changed_nodes(token)
        both = (
            None if next_candidates is None or candidates is None else next_candidates | candidates
        )
        return _PendingRecord(
            commit=pending.commit,
            welcome=pending.welcome,
            added=staged.added,
            removed=staged.removed,
            updated=staged.updated,
            reinit=int(staged.reinit),
            next_epoch=_epoch_record(next_epoch),
            next_keys=tuple(
                _NodeKey(node, key) for node, key in _private_keys(next_epoch.private).items()
            ),
            next_tree=tuple(_NodeValue(i, v) for i, v in _differences(next_tree, tree, both)),
            covered=tuple(_CoveredProposal(c.sender, c.proposal) for c in staged.covered),
        )

    def _past_record(
        self,
        past_epoch: int,
        past_epochs: Mapping[int, _PastEpoch],
        epoch: _Epoch,
        tree_changes: Sequence[tuple[int, Node | None]],
    ) -> _PastRecord:
        past = past_epochs[past_epoch]
        following = past_epoch + 1
        if following == epoch.context.epoch:
            successor = epoch.tree
        elif following in past_epochs:
            successor = past_epochs[following].tree
        else:  # pragma: no cover - Group keeps the past epochs just below the current one
            raise UsageError(f"past epoch {past_epoch} is not followed by a kept epoch")
        if past.tree is self._tree and successor is epoch.tree:
            # The usual case: the stored tree became the past one, and the
            # nodes written for the current tree are exactly where they differ.
            saved = self._tree_nodes
            undo = [(i, saved[i] if i < len(saved) else None) for i, _ in tree_changes]
        else:
            undo = _differences(past.tree, successor, None)
        return _PastRecord(
            context=past.context,
            sender_data_secret=past.sender_data_secret,
            leaf_count=past.tree.leaf_count,
            undo=tuple(_NodeValue(i, v) for i, v in undo),
        )

    def _save_secret_tree(
        self, epoch: int, secret_tree: SecretTree, batch: _Batch
    ) -> tuple[bool, list[str], list[str]]:
        # Returns whether the epoch's stored keys are replaced, and the keys
        # added and removed, for the bookkeeping once the batch is stored.
        node_secrets: Sequence[tuple[NodeIndex, bytes | None]]
        replaced = self._secret_trees.get(epoch) is not secret_tree
        if replaced:
            # A secret tree not saved before (a new epoch): write it whole,
            # replacing whatever the store held for that epoch.
            state = secret_tree.snapshot()
            node_secrets, ratchets = state.node_secrets, state.ratchets
            for key in self._secret_keys.get(epoch, ()):
                batch.delete(key)
        else:
            changes = secret_tree.changes()
            node_secrets, ratchets = changes.node_secrets, changes.ratchets
        added: list[str] = []
        removed: list[str] = []
        for node, secret in node_secrets:
            key = _secret_node_key(epoch, node)
            if secret is None:
                batch.delete(key)
                removed.append(key)
            else:
                batch.put(key, _SecretRecord(secret).encode())
                added.append(key)
        for ratchet in ratchets:
            key = _ratchet_key(epoch, ratchet.leaf_index, ratchet.kind)
            batch.put(key, _ratchet_record(ratchet))
            added.append(key)
        return replaced, added, removed

    # -- Loading ------------------------------------------------------------------------

    @classmethod
    def load(cls, store: GroupStore, *, config: GroupConfig | None = None) -> GroupPersistence:
        """
        Read a group back from its store, as it was at the last save.

        Leaf signatures and parent hashes are not verified again (the store is
        the device's own); each tree is checked against its epoch's tree hash
        and our private keys against the tree, so that a store holding a mix
        of two states is refused.

        :param store: the store.
        :param config: the group's policy (not stored: it holds the application's callbacks).
        :returns: the persistence, whose :attr:`group` is the loaded group.
        :raises GroupNotStored: if the store holds no group.
        :raises StoreCorrupt: if the records do not decode or do not fit together.
        """
        config = config or GroupConfig()
        header_bytes = store.get(_HEADER)
        if header_bytes is None:
            raise GroupNotStored("the store holds no group")
        header = _decode(_Header, header_bytes, _HEADER)
        if header.format_version != FORMAT_VERSION:
            raise StoreCorrupt(f"unknown record format {header.format_version}")
        try:
            suite = get_cipher_suite(header.cipher_suite)
        except MLSError as exc:
            raise StoreCorrupt(f"unknown cipher suite {header.cipher_suite}") from exc
        epoch_bytes = store.get(_EPOCH)
        if epoch_bytes is None:
            raise StoreCorrupt("the store has a header but no epoch")
        record = _decode(_EpochRecord, epoch_bytes, _EPOCH)
        context = record.context
        if context.group_id != header.group_id or context.cipher_suite != header.cipher_suite:
            raise StoreCorrupt("the epoch is of another group")
        current = context.epoch
        own_leaf = LeafIndex(record.own_leaf)

        nodes: list[Node | None] = [None] * _width(record.leaf_count, "current epoch")
        for key, value in store.scan(_TREE):
            index = _number(key[len(_TREE) :], key)
            if index >= len(nodes):
                raise StoreCorrupt(f"record {key!r} lies outside the tree")
            nodes[index] = _decode(_NodeRecord, value, key).node
        tree = _tree_from(suite, nodes, record.leaf_count, context.tree_hash, "current epoch")

        keys: dict[NodeIndex, bytes] = {}
        for key, value in store.scan(_KEY):
            keys[NodeIndex(_number(key[len(_KEY) :], key))] = value
        private = _private_from(suite, own_leaf, keys, tree, "current epoch")
        epoch = _Epoch(
            context=context,
            tree=tree,
            private=private,
            secrets=_secrets_from(record.secrets),
            interim_transcript_hash=record.interim_transcript_hash,
            confirmation_tag=record.confirmation_tag,
            own_leaf=own_leaf,
        )
        psks = {_number(key[len(_PSK) :], key): value for key, value in store.scan(_PSK)}
        group = Group(
            suite=suite,
            epoch=epoch,
            signature_private_key=header.signature_private_key,
            config=config,
            resumption_psks=psks,
        )
        group._reinitialized = store.get(_REINITIALIZED) is not None

        # Past epochs: each tree is the next one's with its undo records.
        past_records = {
            _number(key[len(_PAST) :], key): _decode(_PastRecord, value, key)
            for key, value in store.scan(_PAST)
        }
        if sorted(past_records) != list(range(current - len(past_records), current)):
            raise StoreCorrupt("the past epochs stored are not the ones just before the current")
        past_nodes = {current: nodes}
        past_trees: dict[int, RatchetTree] = {}
        for e in sorted(past_records, reverse=True):
            past_record = past_records[e]
            what = f"past epoch {e}"
            width = _width(past_record.leaf_count, what)
            work = _patched(past_nodes[e + 1], past_record.undo, width, what)
            past_nodes[e] = work
            # Townsquare choice: a past tree only names the signature keys of
            # late messages' senders, and hashing it would cost O(n) hashes
            # that nothing else needs, so it is not checked against its hash.
            past_trees[e] = _tree_from(suite, work, past_record.leaf_count, None, what)

        secret_states = _secret_states(store)
        leaf_counts = {e: r.leaf_count for e, r in past_records.items()}
        leaf_counts[current] = record.leaf_count
        if secret_states.keys() != leaf_counts.keys():
            raise StoreCorrupt("the secret trees stored are not those of the epochs kept")
        secret_trees: dict[int, SecretTree] = {}
        for e, (node_secrets, ratchets, _) in secret_states.items():
            state = SecretTreeState(
                cipher_suite=suite.suite_id,
                n_leaves=leaf_counts[e],
                node_secrets=tuple(sorted(node_secrets.items())),
                ratchets=tuple(ratchets),
            )
            try:
                secret_trees[e] = SecretTree.restore(suite, state)
            except UsageError as exc:
                raise StoreCorrupt(f"epoch {e}: the stored secret tree is invalid") from exc
        group._secret_tree = secret_trees[current]
        for e, past_record in sorted(past_records.items()):
            group._past[e] = _PastEpoch(
                past_record.context,
                past_trees[e],
                secret_trees[e],
                past_record.sender_data_secret,
            )

        held: list[tuple[int, bytes, SenderProposal]] = []
        for key, value in store.scan(_PROPOSAL):
            proposal_record = _decode(_HeldProposal, value, key)
            held.append(
                (
                    proposal_record.order,
                    _ref(key, _PROPOSAL),
                    SenderProposal(proposal_record.proposal, proposal_record.sender),
                )
            )
        for _, ref, sender_proposal in sorted(held, key=lambda item: item[0]):
            group._proposals[ref] = sender_proposal
        for key, value in store.scan(_UPDATE):
            group._pending_updates[_ref(key, _UPDATE)] = value

        pending_bytes = store.get(_PENDING)
        if pending_bytes is not None:
            group._pending_commit = _pending_from(
                group, _decode(_PendingRecord, pending_bytes, _PENDING), nodes
            )

        persistence = cls(group, store)
        persistence._epoch = epoch
        persistence._signature_private_key = header.signature_private_key
        persistence._tree = tree
        persistence._tree_nodes = nodes
        persistence._tree_token = tree.track_changes()
        persistence._private = private
        persistence._keys = _private_keys(private)
        persistence._psks = dict(group._resumption_psks)
        persistence._proposals = {
            ref: (i, p) for i, (ref, p) in enumerate(group._proposals.items())
        }
        persistence._updates = dict(group._pending_updates)
        persistence._pending = group._pending_commit
        persistence._reinitialized = group._reinitialized
        persistence._past = set(group._past)
        for secret_tree in secret_trees.values():
            secret_tree.track_changes()
        persistence._secret_trees = secret_trees
        persistence._secret_keys = {e: keys for e, (_, _, keys) in secret_states.items()}
        return persistence


def _ref(key: str, prefix: str) -> bytes:
    try:
        return bytes.fromhex(key[len(prefix) :])
    except ValueError as exc:
        raise StoreCorrupt(f"record key {key!r} does not end in a hex ref") from exc


def _secret_states(
    store: GroupStore,
) -> dict[int, tuple[dict[NodeIndex, bytes], list[RatchetState], set[str]]]:
    # Each epoch's secret tree records: node secrets, ratchets, and the keys.
    states: dict[int, tuple[dict[NodeIndex, bytes], list[RatchetState], set[str]]] = {}
    for key, value in store.scan(_SECRET):
        parts = key[len(_SECRET) :].split("/")
        e = _number(parts[0], key)
        node_secrets, ratchets, keys = states.setdefault(e, ({}, [], set()))
        keys.add(key)
        if len(parts) == 3 and parts[1] == "node":
            secret = _decode(_SecretRecord, value, key).secret
            node_secrets[NodeIndex(_number(parts[2], key))] = secret
        elif len(parts) == 4 and parts[1] == "ratchet" and parts[3] in _KIND_NAMES:
            ratchet = _decode(_RatchetRecord, value, key)
            ratchets.append(
                RatchetState(
                    leaf_index=LeafIndex(_number(parts[2], key)),
                    kind=_KIND_NAMES[parts[3]],
                    next_generation=ratchet.next_generation,
                    secret=ratchet.secret,
                    retained=tuple((r.generation, r.key, r.nonce) for r in ratchet.retained),
                )
            )
        else:
            raise StoreCorrupt(f"unknown secret tree record {key!r}")
    return states


def _pending_from(
    group: Group, record: _PendingRecord, nodes: Sequence[Node | None]
) -> PendingCommit:
    suite = group.cipher_suite
    epoch = group._epoch
    next_record = record.next_epoch
    context = next_record.context
    if context.epoch != epoch.context.epoch + 1 or context.group_id != epoch.context.group_id:
        raise StoreCorrupt("the pending commit is not for the current epoch")
    width = _width(next_record.leaf_count, "pending commit")
    work = _patched(nodes, record.next_tree, width, "pending commit")
    tree = _tree_from(suite, work, next_record.leaf_count, context.tree_hash, "pending commit")
    own_leaf = LeafIndex(next_record.own_leaf)
    private = _private_from(
        suite,
        own_leaf,
        {NodeIndex(k.node_index): k.private_key for k in record.next_keys},
        tree,
        "pending commit",
    )
    next_epoch = _Epoch(
        context=context,
        tree=tree,
        private=private,
        secrets=_secrets_from(next_record.secrets),
        interim_transcript_hash=next_record.interim_transcript_hash,
        confirmation_tag=next_record.confirmation_tag,
        own_leaf=own_leaf,
    )
    staged = StagedCommit(
        epoch=context.epoch,
        committer=epoch.own_leaf,
        added=tuple(LeafIndex(i) for i in record.added),
        removed=tuple(LeafIndex(i) for i in record.removed),
        updated=tuple(LeafIndex(i) for i in record.updated),
        own=True,
        we_are_removed=False,
        reinit=bool(record.reinit),
        _next=next_epoch,
        _previous_epoch=epoch.context.epoch,
        covered=tuple(SenderProposal(c.proposal, c.sender) for c in record.covered),
    )
    return PendingCommit(
        commit=record.commit,
        welcome=record.welcome,
        # The GroupInfo carries the whole tree, so it is signed again rather
        # than stored (the same bytes with a deterministic signature scheme,
        # Ed25519 or Ed448; an equally valid GroupInfo with ECDSA).
        group_info=_mls_message(group._group_info(next_epoch, with_ratchet_tree=False)),
        staged=staged,
    )

"""
The secret tree and its per-sender hash ratchets (RFC 9420 §9, §9.1, §9.2), and sender-data keys.

The tree is derived lazily from ``encryption_secret`` at its root: asking for a
leaf's key derives only the nodes on the way from the lowest secret still held
down to that leaf, keeps the siblings met on the way and deletes the rest. A
10,000-member group that hears from three members derives a few dozen
secrets, not 20,000. A leaf's secret is replaced by its two ratchets
(handshake and application) as soon as it is derived::

    encryption_secret (root)
      └── ExpandWithLabel(., "tree", "left"/"right", Nh) ... down to leaf L
            ├── ExpandWithLabel(., "handshake", "", Nh)   = handshake ratchet, generation 0
            └── ExpandWithLabel(., "application", "", Nh) = application ratchet, generation 0
                  ratchet_secret[j] → key[j], nonce[j], ratchet_secret[j+1]

Receiving is two-phase so that a message that fails to decrypt or verify
changes nothing: :meth:`SecretTree.key_nonce` looks a key up (deriving what
it needs without storing it) and :meth:`SecretTree.consume` applies the
deletions only once the caller has accepted the message. Sending uses
:meth:`SecretTree.next_key_nonce`, which consumes at once.

Python cannot wipe memory, so "delete" here means dropping every reference
this module holds; nothing secret is copied elsewhere or shown in a ``repr``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from townsquare.mls import tree_math
from townsquare.mls.ciphersuite import CipherSuite
from townsquare.mls.errors import GenerationError, InvalidSender, UsageError
from townsquare.mls.registries import ContentType
from townsquare.mls.tree_math import LeafIndex, NodeIndex

__all__ = [
    "DEFAULT_MAX_FORWARD_DISTANCE",
    "DEFAULT_MAX_RETAINED_KEYS",
    "KeyNonce",
    "RatchetKeyNonce",
    "RatchetKind",
    "RatchetState",
    "SecretTree",
    "SecretTreeChanges",
    "SecretTreeState",
    "ratchet_kind_for",
    "sender_data_key_nonce",
]

# Townsquare choice: RFC 9420 §9.2 lets members "keep unconsumed values around
# for some reasonable amount of time to handle out-of-order message
# delivery" without fixing how much. We accept a generation at most this far
# past the next expected one...
DEFAULT_MAX_FORWARD_DISTANCE = 1024
# ...and keep at most this many skipped keys per ratchet, dropping the oldest
# first. Skipped keys are stored only after a message decrypts and verifies,
# so only a member who holds the ratchet can make us store them.
DEFAULT_MAX_RETAINED_KEYS = 1024

# RFC 9420 §6.3.2: SenderData.generation is a uint32.
_MAX_GENERATION = 0xFFFFFFFF


class RatchetKind(enum.Enum):
    """
    Which of a leaf's two hash ratchets (RFC 9420 §9): its value is the ExpandWithLabel label.
    """

    HANDSHAKE = b"handshake"
    APPLICATION = b"application"


def ratchet_kind_for(content_type: ContentType) -> RatchetKind:
    """
    :returns: the ratchet that protects content of ``content_type`` (RFC 9420 §6.3.1).
    """
    # RFC 9420 §6.3.1: the sender "chooses an unused generation from either
    # the handshake ratchet or the application ratchet, depending on the
    # content type of the message".
    if content_type == ContentType.APPLICATION:
        return RatchetKind.APPLICATION
    return RatchetKind.HANDSHAKE


@dataclass(frozen=True, slots=True)
class KeyNonce:
    """
    An AEAD key and nonce.
    """

    key: bytes = field(repr=False)
    nonce: bytes = field(repr=False)


def sender_data_key_nonce(
    suite: CipherSuite, sender_data_secret: bytes, ciphertext: bytes
) -> KeyNonce:
    """
    Derive the key and nonce that protect a PrivateMessage's SenderData (RFC 9420 §6.3.2).

    :param suite: the group's cipher suite.
    :param sender_data_secret: the epoch's sender_data_secret.
    :param ciphertext: the PrivateMessage's (content) ciphertext.
    :returns: ``sender_data_key`` and ``sender_data_nonce``.
    """
    # RFC 9420 §6.3.2: "The key and nonce provided to the AEAD are computed as
    # the KDF of the first KDF.Nh bytes of the ciphertext generated in the
    # previous section. If the length of the ciphertext is less than KDF.Nh,
    # the whole ciphertext is used."
    sample = ciphertext[: suite.hash_length]
    return KeyNonce(
        key=suite.expand_with_label(sender_data_secret, b"key", sample, suite.aead_key_length),
        nonce=suite.expand_with_label(
            sender_data_secret, b"nonce", sample, suite.aead_nonce_length
        ),
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class RatchetKeyNonce:
    """
    The key and nonce of one generation of one leaf's ratchet (RFC 9420 §9.1).

    Returned by :meth:`SecretTree.key_nonce` before it is consumed; hand it back
    to :meth:`SecretTree.consume` once the message it decrypted is accepted.
    """

    leaf_index: LeafIndex
    kind: RatchetKind
    generation: int
    key: bytes = field(repr=False)
    nonce: bytes = field(repr=False)
    _plan: _Plan | None = field(default=None, repr=False, compare=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class RatchetState:
    """
    One ratchet as a value: the next generation, its secret, and the keys retained for skipped ones.
    """

    leaf_index: LeafIndex
    kind: RatchetKind
    next_generation: int
    secret: bytes = field(repr=False)
    retained: tuple[tuple[int, bytes, bytes], ...] = field(repr=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class SecretTreeState:
    """
    Everything a :class:`SecretTree` holds, as a comparable value (for tests and persistence).
    """

    cipher_suite: int
    n_leaves: int
    node_secrets: tuple[tuple[NodeIndex, bytes], ...] = field(repr=False)
    ratchets: tuple[RatchetState, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class SecretTreeChanges:
    """
    What a :class:`SecretTree` changed since :meth:`SecretTree.track_changes`, as values.

    ``node_secrets`` pairs each changed node with its secret, or ``None`` if it
    was deleted; ``ratchets`` holds the current state of each changed ratchet
    (ratchets are never deleted within an epoch).
    """

    node_secrets: tuple[tuple[NodeIndex, bytes | None], ...] = field(repr=False)
    ratchets: tuple[RatchetState, ...]


# -- Plans: what consuming a key will change ------------------------------------------


@dataclass(frozen=True, slots=True)
class _Opening:
    """
    Deriving a leaf's two ratchets: the held node it starts from, the siblings to keep.
    """

    start: NodeIndex
    siblings: tuple[tuple[NodeIndex, bytes], ...] = field(repr=False)
    handshake: bytes = field(repr=False)
    application: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class _Advance:
    """
    Moving a ratchet past ``generation``: its new secret and the skipped keys to retain.
    """

    next_generation: int
    secret: bytes = field(repr=False)
    skipped: tuple[tuple[int, bytes, bytes], ...] = field(repr=False)


@dataclass(frozen=True, slots=True)
class _Plan:
    """
    The state change that consuming one key makes, valid while the tree's version is unchanged.
    """

    version: int
    opening: _Opening | None
    advance: _Advance | None


class _Ratchet:
    """
    A leaf's hash ratchet: the secret of ``next_generation`` and retained skipped keys.
    """

    __slots__ = ("next_generation", "retained", "secret")

    def __init__(self, secret: bytes) -> None:
        self.next_generation = 0
        self.secret = secret
        # Generation -> (key, nonce), in increasing generation order, so the
        # first entry is always the oldest.
        self.retained: dict[int, tuple[bytes, bytes]] = {}


class SecretTree:
    """
    One epoch's secret tree (RFC 9420 §9): lazily derived, deleting what it consumes (§9.2).
    """

    __slots__ = (
        "_max_forward_distance",
        "_max_retained_keys",
        "_n_leaves",
        "_nodes",
        "_ratchets",
        "_suite",
        "_tracked_nodes",
        "_tracked_ratchets",
        "_version",
    )

    def __init__(
        self,
        suite: CipherSuite,
        encryption_secret: bytes,
        n_leaves: int,
        *,
        max_forward_distance: int = DEFAULT_MAX_FORWARD_DISTANCE,
        max_retained_keys: int = DEFAULT_MAX_RETAINED_KEYS,
    ) -> None:
        """
        Start a secret tree holding only its root.

        :param suite: the group's cipher suite.
        :param encryption_secret: the epoch's encryption_secret (the root secret).
        :param n_leaves: the number of leaves of the group's ratchet tree (a power of two).
        :param max_forward_distance: how far past the next expected generation a
            received generation may be.
        :param max_retained_keys: how many skipped keys each ratchet keeps.
        :raises UsageError: if a size or the secret's length is invalid.
        """
        if n_leaves < 1 or n_leaves & (n_leaves - 1):
            raise UsageError(f"a ratchet tree's leaf count is a power of two, not {n_leaves}")
        if len(encryption_secret) != suite.hash_length:
            raise UsageError(f"encryption_secret must be {suite.hash_length} bytes")
        if max_forward_distance < 0 or max_retained_keys < 0:
            raise UsageError("window sizes must not be negative")
        self._suite = suite
        self._n_leaves = n_leaves
        self._max_forward_distance = max_forward_distance
        self._max_retained_keys = max_retained_keys
        # The frontier: secrets of nodes none of whose descendants has been
        # derived yet. Their subtrees are disjoint, so at most one lies on any
        # root-to-leaf path.
        self._nodes: dict[NodeIndex, bytes] = {tree_math.root(n_leaves): encryption_secret}
        self._ratchets: dict[tuple[LeafIndex, RatchetKind], _Ratchet] = {}
        # Bumped by every change, so that a plan made earlier is not applied
        # to a state it was not made for.
        self._version = 0
        # What changed since track_changes() (None: not tracked), so that
        # persistence writes only the ratchet a message advanced.
        self._tracked_nodes: set[NodeIndex] | None = None
        self._tracked_ratchets: set[tuple[LeafIndex, RatchetKind]] | None = None

    @classmethod
    def restore(
        cls,
        suite: CipherSuite,
        state: SecretTreeState,
        *,
        max_forward_distance: int = DEFAULT_MAX_FORWARD_DISTANCE,
        max_retained_keys: int = DEFAULT_MAX_RETAINED_KEYS,
    ) -> SecretTree:
        """
        Rebuild a secret tree from a :meth:`snapshot` (read back from the device's own store).

        :param suite: the group's cipher suite.
        :param state: the snapshot.
        :param max_forward_distance: as for :class:`SecretTree`.
        :param max_retained_keys: as for :class:`SecretTree`.
        :returns: a tree whose :meth:`snapshot` equals ``state``.
        :raises UsageError: if ``state`` is for another suite, or a size, index or secret
            in it is invalid.
        """
        if state.cipher_suite != suite.suite_id:
            raise UsageError("the snapshot is for another cipher suite")
        # The constructor checks the sizes and windows; its root secret is
        # replaced by the snapshot's nodes below.
        tree = cls(
            suite,
            bytes(suite.hash_length),
            state.n_leaves,
            max_forward_distance=max_forward_distance,
            max_retained_keys=max_retained_keys,
        )
        width = tree_math.node_count(state.n_leaves)
        nodes: dict[NodeIndex, bytes] = {}
        for node, secret in state.node_secrets:
            if not 0 <= node < width or len(secret) != suite.hash_length:
                raise UsageError(f"invalid secret for node {node}")
            nodes[node] = secret
        ratchets: dict[tuple[LeafIndex, RatchetKind], _Ratchet] = {}
        for r in state.ratchets:
            if not 0 <= r.leaf_index < state.n_leaves or len(r.secret) != suite.hash_length:
                raise UsageError(f"invalid ratchet for leaf {r.leaf_index}")
            ratchet = _Ratchet(r.secret)
            ratchet.next_generation = r.next_generation
            ratchet.retained = {g: (k, n) for g, k, n in r.retained}
            ratchets[(r.leaf_index, r.kind)] = ratchet
        tree._nodes = nodes
        tree._ratchets = ratchets
        return tree

    def track_changes(self) -> None:
        """
        Start (or restart) recording which node secrets and ratchets change, for :meth:`changes`.
        """
        self._tracked_nodes = set()
        self._tracked_ratchets = set()

    def changes(self) -> SecretTreeChanges:
        """
        :returns: the node secrets and ratchets changed since :meth:`track_changes`.
        :raises UsageError: if :meth:`track_changes` was never called.
        """
        if self._tracked_nodes is None or self._tracked_ratchets is None:
            raise UsageError("changes are not tracked: call track_changes() first")
        ratchets = []
        for leaf, kind in sorted(self._tracked_ratchets, key=lambda k: (k[0], k[1].value)):
            r = self._ratchets[(leaf, kind)]
            ratchets.append(
                RatchetState(
                    leaf_index=leaf,
                    kind=kind,
                    next_generation=r.next_generation,
                    secret=r.secret,
                    retained=tuple((g, k, n) for g, (k, n) in r.retained.items()),
                )
            )
        return SecretTreeChanges(
            node_secrets=tuple((n, self._nodes.get(n)) for n in sorted(self._tracked_nodes)),
            ratchets=tuple(ratchets),
        )

    @property
    def n_leaves(self) -> int:
        """
        The number of leaves, so the exclusive bound of valid leaf indices.
        """
        return self._n_leaves

    def snapshot(self) -> SecretTreeState:
        """
        :returns: the whole state as a value; equal snapshots derive the same keys.
        """
        return SecretTreeState(
            cipher_suite=int(self._suite.suite_id),
            n_leaves=self._n_leaves,
            node_secrets=tuple(sorted(self._nodes.items())),
            ratchets=tuple(
                RatchetState(
                    leaf_index=leaf,
                    kind=kind,
                    next_generation=r.next_generation,
                    secret=r.secret,
                    retained=tuple((g, k, n) for g, (k, n) in r.retained.items()),
                )
                for (leaf, kind), r in sorted(
                    self._ratchets.items(), key=lambda item: (item[0][0], item[0][1].value)
                )
            ),
        )

    # -- Receiving ------------------------------------------------------------------

    def key_nonce(
        self, leaf_index: LeafIndex, kind: RatchetKind, generation: int
    ) -> RatchetKeyNonce:
        """
        Look up the key and nonce of a received generation without consuming them.

        Nothing changes until :meth:`consume` is called with the result, so a
        message that then fails to decrypt or verify leaves the tree as it was.

        :param leaf_index: the sender's leaf (from the decrypted SenderData).
        :param kind: the ratchet named by the message's content type.
        :param generation: the generation from the SenderData.
        :returns: the key and nonce, carrying what :meth:`consume` will apply.
        :raises InvalidSender: if ``leaf_index`` is not a leaf of this tree.
        :raises GenerationError: if the generation was consumed, is older than
            the keys retained, or is too far ahead.
        """
        if not 0 <= leaf_index < self._n_leaves:
            # RFC 9420 §6.3.2: "the recipient MUST verify that the leaf index
            # indicated in the leaf_index field identifies a non-blank node";
            # an index past the tree identifies no node at all.
            raise InvalidSender(f"leaf {leaf_index} is outside a tree of {self._n_leaves} leaves")
        key, nonce, plan = self._lookup(leaf_index, kind, generation)
        return RatchetKeyNonce(
            leaf_index=leaf_index,
            kind=kind,
            generation=generation,
            key=key,
            nonce=nonce,
            _plan=plan,
        )

    def consume(self, key_nonce: RatchetKeyNonce) -> None:
        """
        Delete a received key once its message is accepted, with everything it was derived from.

        :param key_nonce: a result of :meth:`key_nonce` on this tree.
        :raises GenerationError: if the generation was consumed meanwhile.
        :raises UsageError: if ``key_nonce`` did not come from :meth:`key_nonce`.
        """
        plan = key_nonce._plan
        if plan is None:
            raise UsageError("only a key from SecretTree.key_nonce can be consumed")
        if plan.version != self._version:
            # The tree changed since the lookup (another message was consumed):
            # plan again against the current state, which also catches a
            # generation consumed in between.
            _, _, plan = self._lookup(key_nonce.leaf_index, key_nonce.kind, key_nonce.generation)
        self._apply(key_nonce.leaf_index, key_nonce.kind, key_nonce.generation, plan)

    # -- Sending --------------------------------------------------------------------

    def next_key_nonce(self, leaf_index: LeafIndex, kind: RatchetKind) -> RatchetKeyNonce:
        """
        Take the next unused key and nonce of our own ratchet for sending, consuming it at once.

        :param leaf_index: our own leaf.
        :param kind: the ratchet named by the content type to be sent.
        :returns: the key, nonce and generation to put in the SenderData.
        :raises UsageError: if ``leaf_index`` is not a leaf of this tree.
        :raises GenerationError: if the ratchet is exhausted (2**32 generations).
        """
        if not 0 <= leaf_index < self._n_leaves:
            raise UsageError(f"leaf {leaf_index} is outside a tree of {self._n_leaves} leaves")
        ratchet = self._ratchets.get((leaf_index, kind))
        generation = 0 if ratchet is None else ratchet.next_generation
        # RFC 9420 §9.1: "Each key/nonce pair MUST NOT be used to encrypt more
        # than one message." The next generation has never been handed out,
        # and consuming it now means it never will be again.
        key, nonce, plan = self._lookup(leaf_index, kind, generation)
        self._apply(leaf_index, kind, generation, plan)
        return RatchetKeyNonce(
            leaf_index=leaf_index, kind=kind, generation=generation, key=key, nonce=nonce
        )

    # -- Derivation -----------------------------------------------------------------

    def _lookup(
        self, leaf: LeafIndex, kind: RatchetKind, generation: int
    ) -> tuple[bytes, bytes, _Plan]:
        """
        Derive the key and nonce of a generation, and the plan that consuming them applies.
        """
        if not 0 <= generation <= _MAX_GENERATION:
            raise GenerationError(f"generation {generation} does not fit a uint32")
        ratchet = self._ratchets.get((leaf, kind))
        opening: _Opening | None = None
        if ratchet is None:
            opening = self._open(leaf)
            secret = opening.handshake if kind is RatchetKind.HANDSHAKE else opening.application
            next_generation = 0
        else:
            retained = ratchet.retained.get(generation)
            if retained is not None:
                return (*retained, _Plan(self._version, None, None))
            if generation < ratchet.next_generation:
                # RFC 9420 §9.2: "As soon as a group member consumes a value,
                # they MUST immediately delete (all representations of) that
                # value." A replayed generation finds nothing, as does a
                # skipped one that fell out of the bounded window.
                raise GenerationError(
                    f"generation {generation} of leaf {leaf}'s {kind.name.lower()} ratchet "
                    "was already used or is too old"
                )
            secret = ratchet.secret
            next_generation = ratchet.next_generation

        distance = generation - next_generation
        if distance > self._max_forward_distance:
            raise GenerationError(
                f"generation {generation} is {distance} past the next expected "
                f"({next_generation}); the limit is {self._max_forward_distance}"
            )
        skipped: list[tuple[int, bytes, bytes]] = []
        # Only the newest skipped keys can be retained; older ones are derived
        # on the way and dropped at once.
        keep_from = generation - self._max_retained_keys
        suite = self._suite
        for j in range(next_generation, generation):
            if j >= keep_from:
                skipped.append((j, *self._key_and_nonce(secret, j)))
            secret = suite.derive_tree_secret(secret, b"secret", j, suite.hash_length)
        key, nonce = self._key_and_nonce(secret, generation)
        # After the last generation a uint32 can name, this secret is never
        # used: the next lookup fails the range check above.
        secret = suite.derive_tree_secret(secret, b"secret", generation, suite.hash_length)
        advance = _Advance(generation + 1, secret, tuple(skipped))
        return key, nonce, _Plan(self._version, opening, advance)

    def _key_and_nonce(self, secret: bytes, generation: int) -> tuple[bytes, bytes]:
        # RFC 9420 §9.1: ratchet_key_[N]_[j] = DeriveTreeSecret(., "key", j,
        # AEAD.Nk) and ratchet_nonce_[N]_[j] = DeriveTreeSecret(., "nonce", j, AEAD.Nn).
        suite = self._suite
        return (
            suite.derive_tree_secret(secret, b"key", generation, suite.aead_key_length),
            suite.derive_tree_secret(secret, b"nonce", generation, suite.aead_nonce_length),
        )

    def _open(self, leaf: LeafIndex) -> _Opening:
        """
        Derive (without storing) leaf ``leaf``'s ratchet secrets from the held node above it.
        """
        target = tree_math.leaf_to_node(leaf)
        node = tree_math.root(self._n_leaves)
        while node not in self._nodes:
            if node == target:
                # Invariant: a leaf without ratchets has a held node above it
                # (or is one), because only opening a leaf removes nodes.
                raise UsageError(f"secret tree lost the path to leaf {leaf}")  # pragma: no cover
            node = tree_math.left(node) if target < node else tree_math.right(node)
        start = node
        secret = self._nodes[node]
        suite = self._suite
        siblings: list[tuple[NodeIndex, bytes]] = []
        # RFC 9420 §9: tree_node_[left(N)]_secret = ExpandWithLabel(., "tree",
        # "left", KDF.Nh), and likewise "right".
        while node != target:
            left, right = tree_math.left(node), tree_math.right(node)
            left_secret = suite.expand_with_label(secret, b"tree", b"left", suite.hash_length)
            right_secret = suite.expand_with_label(secret, b"tree", b"right", suite.hash_length)
            if target < node:
                node, secret = left, left_secret
                siblings.append((right, right_secret))
            else:
                node, secret = right, right_secret
                siblings.append((left, left_secret))
        # RFC 9420 §9: handshake_ratchet_secret_[N]_[0] = ExpandWithLabel(.,
        # "handshake", "", KDF.Nh), and likewise "application".
        return _Opening(
            start=start,
            siblings=tuple(siblings),
            handshake=suite.expand_with_label(secret, b"handshake", b"", suite.hash_length),
            application=suite.expand_with_label(secret, b"application", b"", suite.hash_length),
        )

    def _apply(self, leaf: LeafIndex, kind: RatchetKind, generation: int, plan: _Plan) -> None:
        # RFC 9420 §9.2: "As soon as a group member consumes a value, they MUST
        # immediately delete (all representations of) that value." Consuming
        # generation j of leaf L's ratchet consumes the node secrets from the
        # root down to L and the first j ratchet secrets.
        if plan.opening is not None:
            opening = plan.opening
            del self._nodes[opening.start]
            self._nodes.update(opening.siblings)
            # The leaf secret itself was never stored: both ratchets are
            # created from it here, and it is dropped.
            self._ratchets[(leaf, RatchetKind.HANDSHAKE)] = _Ratchet(opening.handshake)
            self._ratchets[(leaf, RatchetKind.APPLICATION)] = _Ratchet(opening.application)
        ratchet = self._ratchets[(leaf, kind)]
        if plan.advance is None:
            # A retained key for a skipped generation: used once, then gone.
            del ratchet.retained[generation]
        else:
            advance = plan.advance
            ratchet.next_generation = advance.next_generation
            ratchet.secret = advance.secret
            for j, key, nonce in advance.skipped:
                ratchet.retained[j] = (key, nonce)
            while len(ratchet.retained) > self._max_retained_keys:
                del ratchet.retained[next(iter(ratchet.retained))]
        self._version += 1
        if self._tracked_nodes is not None and self._tracked_ratchets is not None:
            if plan.opening is not None:
                self._tracked_nodes.add(plan.opening.start)
                self._tracked_nodes.update(node for node, _ in plan.opening.siblings)
                self._tracked_ratchets.add((leaf, RatchetKind.HANDSHAKE))
                self._tracked_ratchets.add((leaf, RatchetKind.APPLICATION))
            self._tracked_ratchets.add((leaf, kind))

"""
Steady-state MLS groups of n members for the group benchmarks (``bench/mls_groups.py``).

A group that has lived a while has every parent node filled: each member has
committed at least once, so each copath node's resolution is one node and a
commit's UpdatePath carries about log2(n) ciphertexts. The tree left by one
commit that adds n members is the opposite (every parent blank, the root's
copath resolution n/2 leaves), so benchmarking that would measure the wrong
group. Running n real ``Group`` members through n commits would take hours at
10,000 members (each commit processed by every member), so the fixture is
built like this:

1. **KeyPackages.** n KeyPackage bundles (suite 1 by default) from a seeded
   rng, cached under ``bench/.cache/`` keyed by suite, size and seed.
2. **Mass Add.** The creator (leaf 0) creates the group and commits one Add per
   other bundle in a single real ``Group.commit`` (KeyPackage validation, the
   tree with n leaves and blank parents), then merges it: epoch 1.
3. **Fill the parents.** For every leaf in order, the public half of what that
   member's commit would do: fresh path secrets from the rng, the node key
   pairs derived from them (``treekem.derive_node_key_pair``,
   ``next_path_secret``), ``RatchetTree.merge_path`` (blank the direct path, set
   the filtered direct path's keys and parent hashes, RFC 9420 §7.5, §7.9) and
   the leaf re-signed with source ``commit`` and its parent hash
   (``RatchetTree.set_leaf``). The HPKE encryption of the path secrets is left
   out: nobody would decrypt it, and on the blank-heavy tree of step 2 it is
   what makes ``treekem.create_update_path`` cost O(n) seals per path (O(n^2)
   in all). Each write records the node's new private key, so that afterwards
   every member's private view is exactly what it would have learnt by
   processing those commits: the private key of every filled node on its
   direct path. The tree is then parent-hash valid (each merge is the
   protocol's own) and is verified once, after building, with
   ``RatchetTree.verify``.
4. **The epoch.** One GroupContext (epoch 2, the filled tree's hash, a random
   confirmed transcript hash) and its ``EpochSecrets`` from the creator's
   ``init_secret`` and a random commit secret; every member's ``Group`` is
   then built with the ``Group`` constructor from a ``group._Epoch`` holding
   that context, those secrets, the shared tree, and its own
   ``TreeKEMPrivate``. Members built this way agree on everything a real
   group's members would (tree hash, epoch authenticator, keys).

Steps 2-3 are cached too (the filled tree, the node private keys and the
epoch's inputs), keyed by suite, size, seed and :data:`FORMAT`; a cached
fixture is checked against its tree hash and the members' private keys when
loaded. Delete ``bench/.cache/`` to rebuild (it must be git-ignored).
"""

from __future__ import annotations

import hashlib
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from townsquare.mls.ciphersuite import CipherSuite, get_cipher_suite
from townsquare.mls.credentials import BasicCredential
from townsquare.mls.group import Group, GroupConfig, _Epoch
from townsquare.mls.group_context import GroupContext
from townsquare.mls.key_package import KeyPackage, KeyPackageBundle, generate_key_package
from townsquare.mls.key_schedule import (
    EpochSecrets,
    confirmation_tag,
    derive_epoch_secrets,
)
from townsquare.mls.leaf_node import Lifetime, sign_leaf_node
from townsquare.mls.proposals import Add
from townsquare.mls.ratchet_tree import RatchetTree
from townsquare.mls.registries import LeafNodeSource
from townsquare.mls.transcript import interim_transcript_hash
from townsquare.mls.tree_math import LeafIndex, NodeIndex, direct_path, leaf_to_node
from townsquare.mls.treekem import TreeKEMPrivate, derive_node_key_pair, next_path_secret

__all__ = [
    "CACHE",
    "FORMAT",
    "SeededRng",
    "SteadyGroup",
    "build_steady_group",
    "key_package_bundles",
    "new_bundle",
]

#: Where generated KeyPackages and fixtures are cached (git-ignored).
CACHE = Path(__file__).parent / ".cache"
#: Bump when the fixture's construction or file layout changes.
FORMAT = 1

Log = Callable[[str], None]


class SeededRng:
    """
    Deterministic bytes: SHAKE-256 over (seed, call counter), so a build replays exactly.
    """

    def __init__(self, seed: str | bytes) -> None:
        raw = seed.encode() if isinstance(seed, str) else seed
        self._seed = hashlib.sha256(raw).digest()
        self._counter = 0

    def __call__(self, n: int) -> bytes:
        self._counter += 1
        return hashlib.shake_256(self._seed + self._counter.to_bytes(8, "big")).digest(n)


def _quiet(message: str) -> None:
    del message


# -- Binary records for the cache -------------------------------------------------------


def _put(out: bytearray, data: bytes) -> None:
    out += struct.pack(">I", len(data))
    out += data


class _Reader:
    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0

    def get(self) -> bytes:
        (length,) = struct.unpack_from(">I", self._data, self._pos)
        start = self._pos + 4
        self._pos = start + length
        if self._pos > len(self._data):
            raise ValueError("truncated cache file")
        return self._data[start : self._pos]

    def done(self) -> bool:
        return self._pos == len(self._data)


def _write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


# -- KeyPackages ----------------------------------------------------------------------


def new_bundle(suite: CipherSuite, name: bytes, rng: SeededRng) -> KeyPackageBundle:
    """
    :returns: a KeyPackage (basic credential ``name``, no expiry) with its private keys.
    """
    signature_private_key, _ = suite.generate_signature_key_pair(rng)
    return generate_key_package(
        suite,
        credential=BasicCredential(name),
        signature_private_key=signature_private_key,
        rng=rng,
        lifetime=Lifetime(not_before=0, not_after=2**64 - 1),
    )


def key_package_bundles(
    n: int, seed: str, *, suite_id: int = 1, use_cache: bool = True, log: Log = _quiet
) -> list[KeyPackageBundle]:
    """
    ``n`` KeyPackage bundles named ``member-<i>``, from a rng seeded by suite, size and seed.

    Cached in ``bench/.cache/keypackages-s<suite>-n<n>-<seed>-v<FORMAT>.bin``.
    """
    suite = get_cipher_suite(suite_id)
    path = CACHE / f"keypackages-s{suite_id}-n{n}-{seed}-v{FORMAT}.bin"
    if use_cache and path.exists():
        reader = _Reader(path.read_bytes())
        bundles = []
        while not reader.done():
            key_package = KeyPackage.decode(reader.get())
            bundles.append(
                KeyPackageBundle(
                    key_package=key_package,
                    init_private_key=reader.get(),
                    encryption_private_key=reader.get(),
                    signature_private_key=reader.get(),
                )
            )
        if len(bundles) == n:
            log(f"  {n:,} KeyPackages from {path.name}")
            return bundles
    start = time.perf_counter()
    rng = SeededRng(f"keypackages/{suite_id}/{n}/{seed}")
    bundles = [new_bundle(suite, b"member-%d" % i, rng) for i in range(n)]
    log(f"  {n:,} KeyPackages generated in {time.perf_counter() - start:.1f} s")
    if use_cache:
        out = bytearray()
        for bundle in bundles:
            _put(out, bundle.key_package.encode())
            _put(out, bundle.init_private_key)
            _put(out, bundle.encryption_private_key)
            _put(out, bundle.signature_private_key)
        _write_atomically(path, bytes(out))
    return bundles


# -- The steady-state group -----------------------------------------------------------


@dataclass(slots=True, kw_only=True)
class SteadyGroup:
    """
    An n-member group with every parent node filled, and the means to build any member.
    """

    suite: CipherSuite
    n: int
    seed: str
    bundles: list[KeyPackageBundle] = field(repr=False)
    tree: RatchetTree = field(repr=False)
    node_keys: dict[NodeIndex, bytes] = field(repr=False)
    context: GroupContext
    secrets: EpochSecrets = field(repr=False)
    confirmation_tag: bytes = field(repr=False)
    interim_transcript_hash: bytes = field(repr=False)
    #: Seconds spent on each build step (or on loading the cache).
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def group_id(self) -> bytes:
        return self.context.group_id

    def private(self, leaf: int) -> TreeKEMPrivate:
        """
        :returns: the private view of the member at ``leaf``: its leaf key and the key of
            every filled node on its direct path.
        """
        own = leaf_to_node(LeafIndex(leaf))
        path = direct_path(own, self.tree.leaf_count) if self.tree.leaf_count > 1 else ()
        return TreeKEMPrivate(
            self.suite,
            LeafIndex(leaf),
            self.bundles[leaf].encryption_private_key,
            {node: self.node_keys[node] for node in path if node in self.node_keys},
        )

    def epoch(self, leaf: int) -> _Epoch:
        """
        :returns: the current epoch as the member at ``leaf`` holds it.
        """
        return _Epoch(
            context=self.context,
            tree=self.tree,
            private=self.private(leaf),
            secrets=self.secrets,
            interim_transcript_hash=self.interim_transcript_hash,
            confirmation_tag=self.confirmation_tag,
            own_leaf=LeafIndex(leaf),
        )

    def member(self, leaf: int, config: GroupConfig | None = None) -> Group:
        """
        :returns: a fresh ``Group`` for the member at ``leaf`` (cheap: O(log n)).
        """
        return Group(
            suite=self.suite,
            epoch=self.epoch(leaf),
            signature_private_key=self.bundles[leaf].signature_private_key,
            config=config or GroupConfig(),
        )


def _fill(
    suite: CipherSuite,
    tree: RatchetTree,
    bundles: list[KeyPackageBundle],
    group_id: bytes,
    rng: SeededRng,
) -> dict[NodeIndex, bytes]:
    # Step 3 of the module docstring: each leaf in turn refreshes its filtered
    # direct path as its commit would (the public half, and the private keys
    # its path secrets give), in place on ``tree``.
    node_keys: dict[NodeIndex, bytes] = {}
    n_leaves = tree.leaf_count
    for leaf_index, leaf_node in list(tree.leaves()):
        path = tree.filtered_direct_path(leaf_index)
        path_secret = rng(suite.hash_length)
        public_keys = []
        for node, _ in path:
            private_key, public_key = derive_node_key_pair(suite, path_secret)
            node_keys[node] = private_key
            public_keys.append(public_key)
            path_secret = next_path_secret(suite, path_secret)
        # merge_path blanks the direct path nodes left out of the filtered path.
        filtered = {node for node, _ in path}
        for node in direct_path(leaf_to_node(leaf_index), n_leaves):
            if node not in filtered:
                node_keys.pop(node, None)
        parent_hash = tree.merge_path(leaf_index, public_keys)
        signed = sign_leaf_node(
            suite,
            replace(
                leaf_node,
                leaf_node_source=LeafNodeSource.COMMIT,
                lifetime=None,
                parent_hash=parent_hash,
                signature=b"",
            ),
            bundles[leaf_index].signature_private_key,
            group_id=group_id,
            leaf_index=leaf_index,
        )
        tree.set_leaf(leaf_index, signed)
    return node_keys


def _epoch_inputs(
    suite: CipherSuite, context: GroupContext, init_secret: bytes, commit_secret: bytes
) -> tuple[EpochSecrets, bytes, bytes]:
    secrets = derive_epoch_secrets(
        suite,
        init_secret=init_secret,
        commit_secret=commit_secret,
        psk_secret=None,
        group_context=context,
    )
    tag = confirmation_tag(suite, secrets.confirmation_key, context.confirmed_transcript_hash)
    interim = interim_transcript_hash(suite, context.confirmed_transcript_hash, tag)
    return secrets, tag, interim


def build_steady_group(
    n: int,
    seed: str = "townsquare-bench",
    *,
    suite_id: int = 1,
    use_cache: bool = True,
    log: Log = _quiet,
) -> SteadyGroup:
    """
    Build (or load from ``bench/.cache/``) an n-member group with every parent node filled.

    See the module docstring for how. ``timings`` reports each step's seconds.
    """
    if n < 2:
        raise ValueError("a steady-state group needs at least two members")
    suite = get_cipher_suite(suite_id)
    timings: dict[str, float] = {}
    start = time.perf_counter()
    bundles = key_package_bundles(n, seed, suite_id=suite_id, use_cache=use_cache, log=log)
    timings["keypackages"] = time.perf_counter() - start

    path = CACHE / f"steady-s{suite_id}-n{n}-{seed}-v{FORMAT}.bin"
    if use_cache and path.exists():
        start = time.perf_counter()
        reader = _Reader(path.read_bytes())
        tree = RatchetTree.decode(suite, reader.get())
        context = GroupContext.decode(reader.get())
        init_secret, commit_secret = reader.get(), reader.get()
        raw = reader.get()
        node_keys = {}
        for offset in range(0, len(raw), 4 + suite.hash_length):
            (node,) = struct.unpack_from(">I", raw, offset)
            node_keys[NodeIndex(node)] = raw[offset + 4 : offset + 4 + suite.hash_length]
        if tree.root_tree_hash() != context.tree_hash:
            raise ValueError(f"{path}: the cached tree does not match its tree hash")
        secrets, tag, interim = _epoch_inputs(suite, context, init_secret, commit_secret)
        timings["load"] = time.perf_counter() - start
        log(f"  steady-state group from {path.name} in {timings['load']:.1f} s")
    else:
        rng = SeededRng(f"steady/{suite_id}/{n}/{seed}")
        group_id = b"townsquare-bench-%d" % n
        # Step 2: one real commit adding everyone.
        start = time.perf_counter()
        creator = Group.create(bundles[0], group_id=group_id, rng=rng)
        pending = creator.commit(
            rng=rng, proposals=[Add(bundle.key_package) for bundle in bundles[1:]]
        )
        creator.merge(pending.staged)
        timings["mass_add"] = time.perf_counter() - start
        log(f"  mass Add of {n - 1:,} members: {timings['mass_add']:.1f} s")
        # Step 3: every member's path.
        start = time.perf_counter()
        tree = creator.tree.copy()
        node_keys = _fill(suite, tree, bundles, group_id, rng)
        timings["fill"] = time.perf_counter() - start
        log(
            f"  filled the parents with {n:,} paths: {timings['fill']:.1f} s "
            f"({timings['fill'] / n * 1e3:.2f} ms per path)"
        )
        start = time.perf_counter()
        tree.verify(group_id)
        timings["verify"] = time.perf_counter() - start
        log(f"  RatchetTree.verify of the filled tree: {timings['verify']:.1f} s")
        # Step 4: the epoch every member shares.
        context = GroupContext(
            cipher_suite=suite.suite_id,
            group_id=group_id,
            epoch=creator.epoch + 1,
            tree_hash=tree.root_tree_hash(),
            confirmed_transcript_hash=rng(suite.hash_length),
            extensions=creator.context.extensions,
        )
        init_secret = creator._epoch.secrets.init_secret
        commit_secret = rng(suite.hash_length)
        secrets, tag, interim = _epoch_inputs(suite, context, init_secret, commit_secret)
        if use_cache:
            out = bytearray()
            _put(out, tree.encode())
            _put(out, context.encode())
            _put(out, init_secret)
            _put(out, commit_secret)
            _put(
                out,
                b"".join(struct.pack(">I", node) + key for node, key in sorted(node_keys.items())),
            )
            _write_atomically(path, bytes(out))

    steady = SteadyGroup(
        suite=suite,
        n=n,
        seed=seed,
        bundles=bundles,
        tree=tree,
        node_keys=node_keys,
        context=context,
        secrets=secrets,
        confirmation_tag=tag,
        interim_transcript_hash=interim,
        timings=timings,
    )
    # Every member's keys must match the tree; check the ends and the middle.
    for leaf in {0, 1, n // 2, n - 1}:
        steady.private(leaf).check_consistent(tree)
    filled = sum(1 for i in range(1, tree.node_width, 2) if tree.node(NodeIndex(i)) is not None)
    log(f"  {n:,} members, {tree.leaf_count:,} leaves, {filled:,} filled parent nodes")
    return steady

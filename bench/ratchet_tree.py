"""
A joiner's ratchet-tree work at 10,000 members: decode, tree hash, each check (RFC 9420 §12.4.3.1).

The tree is the steady-state group of ``bench/group_fixtures.py`` (every parent
filled by one UpdatePath per member) after some churn, so that it also holds
what a group that has lived a while holds: blank parents and unmerged leaves.
Starting from that group's tree (the public half only, as the fixture does):

1. **Removes.** ``--removes`` commits, each by a random member with an
   UpdatePath, removing another random member (``remove_leaf`` blanks its
   direct path, then the committer's ``merge_path`` refills its own filtered
   direct path and its leaf is re-signed with the new parent hash).
2. **Adds.** As many new members as were removed, added by path-less commits
   (``add_leaf``): they fill the blank leaves, and every non-blank parent
   above them (refilled by a later commit of step 1) lists them as unmerged.
3. **Commits.** ``--commits`` more UpdatePaths by random members, which merge
   some of those unmerged leaves again.

The result, still 10,000 members, must pass ``RatchetTree.verify``; it is
cached in ``bench/.cache/ratchet-tree-...bin`` with its root tree hash as
the code that built it computed it, and every run checks that the code under
test computes the same hash (tree and parent hashes must stay byte-identical).

Each figure is one call on a tree decoded afresh, with the setup a joiner
would already have done untimed (a joiner hashes the tree to compare it with
the GroupInfo before checking it, RFC 9420 §12.4.3.1), so no cached hash of a
previous round helps:

=========================  ==========================================  ============================
figure                     setup (untimed)                              timed
=========================  ==========================================  ============================
``decode``                 --                                           ``RatchetTree.decode``
``init``                   ``RatchetTreeNodes.decode``                  ``RatchetTree.from_nodes``
``root_tree_hash``         decode                                       ``root_tree_hash()``
``verify_parent_hashes``   decode, ``root_tree_hash()``                 ``verify_parent_hashes()``
``verify_unmerged_leaves`` decode                                       ``verify_unmerged_leaves()``
``verify_unique_keys``     decode                                       ``verify_unique_keys()``
``verify_leaf_signatures`` decode                                       ``verify_leaf_signatures()``
``verify``                 decode, ``root_tree_hash()``                 ``verify(group_id)``
``join_tree``              --                                           decode, hash, ``verify``
=========================  ==========================================  ============================

Times are CPU time of the process (``time.process_time``; the bench machine
is shared), ``--clock wall`` for wall time; ``gc.collect()`` runs before each
timed call and one warm-up call is discarded. Prints a table and appends one
JSON line per figure to ``bench/results/ratchet_tree.jsonl``.

Run: ``.venv/bin/python bench/ratchet_tree.py`` (the first run builds the
steady-state group if it is not cached, several minutes, then the churn, about
a second); ``--quick`` for fewer rounds; ``--label before`` tags the results.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import struct
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from group_fixtures import CACHE, FORMAT, SeededRng, build_steady_group, new_bundle
from harness import Figure, machine, record
from townsquare.mls.ciphersuite import CipherSuite
from townsquare.mls.key_package import KeyPackageBundle
from townsquare.mls.leaf_node import sign_leaf_node
from townsquare.mls.ratchet_tree import ParentNode, RatchetTree, RatchetTreeNodes
from townsquare.mls.registries import LeafNodeSource
from townsquare.mls.tree_math import LeafIndex, NodeIndex
from townsquare.mls.treekem import derive_node_key_pair, next_path_secret

#: Bump when the churn changes (the steady-state group has its own FORMAT).
CHURN_FORMAT = 2


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- The tree ---------------------------------------------------------------------------


def _commit_path(
    suite: CipherSuite,
    tree: RatchetTree,
    leaf: LeafIndex,
    *,
    signature_private_key: bytes,
    group_id: bytes,
    rng: SeededRng,
) -> None:
    # The public half of an UpdatePath (RFC 9420 §7.5): node keys from a
    # fresh chain of path secrets, merged, and the leaf re-signed with its
    # new parent hash and a fresh encryption key.
    path = tree.filtered_direct_path(leaf)
    path_secret = rng(suite.hash_length)
    keys = []
    for _ in path:
        _, public_key = derive_node_key_pair(suite, path_secret)
        keys.append(public_key)
        path_secret = next_path_secret(suite, path_secret)
    _, leaf_key = derive_node_key_pair(suite, rng(suite.hash_length))
    parent_hash = tree.merge_path(leaf, keys)
    old = tree.leaf(leaf)
    assert old is not None
    signed = sign_leaf_node(
        suite,
        replace(
            old,
            encryption_key=leaf_key,
            leaf_node_source=LeafNodeSource.COMMIT,
            lifetime=None,
            parent_hash=parent_hash,
            signature=b"",
        ),
        signature_private_key,
        group_id=group_id,
        leaf_index=leaf,
    )
    tree.set_leaf(leaf, signed)


def _churn(
    suite: CipherSuite,
    tree: RatchetTree,
    bundles: list[KeyPackageBundle],
    group_id: bytes,
    *,
    removes: int,
    commits: int,
) -> None:
    # Steps 1-3 of the module docstring, in place. ``keys`` maps each leaf to
    # its member's signature private key, as membership changes.
    rng = SeededRng(f"ratchet-tree-churn/{removes}/{commits}")
    keys = {LeafIndex(i): bundle.signature_private_key for i, bundle in enumerate(bundles)}

    def pick() -> LeafIndex:
        members = sorted(keys)
        return members[int.from_bytes(rng(4), "big") % len(members)]

    def commit(committer: LeafIndex) -> None:
        _commit_path(
            suite,
            tree,
            committer,
            signature_private_key=keys[committer],
            group_id=group_id,
            rng=rng,
        )

    for _ in range(removes):
        committer, removed = pick(), pick()
        while removed == committer:
            removed = pick()
        tree.remove_leaf(removed)
        del keys[removed]
        commit(committer)
    for i in range(removes):
        bundle = new_bundle(suite, b"joiner-%d" % i, rng)
        leaf = tree.add_leaf(bundle.key_package.leaf_node)
        keys[leaf] = bundle.signature_private_key
    for _ in range(commits):
        commit(pick())


def _put(out: bytearray, data: bytes) -> None:
    out += struct.pack(">I", len(data))
    out += data


def _get(data: bytes, pos: int) -> tuple[bytes, int]:
    (length,) = struct.unpack_from(">I", data, pos)
    return data[pos + 4 : pos + 4 + length], pos + 4 + length


def joined_tree(n: int, *, removes: int, commits: int) -> tuple[CipherSuite, bytes, bytes, bytes]:
    """
    :returns: the suite, the encoded tree, the group id and the root tree hash its builder computed.
    """
    steady = build_steady_group(n, log=_log)
    path = CACHE / (
        f"ratchet-tree-s{steady.suite.suite_id}-n{n}-r{removes}-c{commits}"
        f"-v{FORMAT}.{CHURN_FORMAT}.bin"
    )
    if path.exists():
        data = path.read_bytes()
        tree_bytes, pos = _get(data, 0)
        group_id, pos = _get(data, pos)
        tree_hash, pos = _get(data, pos)
        _log(f"  churned tree from {path.name}")
        return steady.suite, tree_bytes, group_id, tree_hash
    start = time.perf_counter()
    tree = steady.tree.copy()
    _churn(steady.suite, tree, steady.bundles, steady.group_id, removes=removes, commits=commits)
    tree.verify(steady.group_id)
    tree_bytes = tree.encode()
    tree_hash = RatchetTree.decode(steady.suite, tree_bytes).root_tree_hash()
    _log(f"  churned and verified the tree in {time.perf_counter() - start:.1f} s")
    out = bytearray()
    for part in (tree_bytes, steady.group_id, tree_hash):
        _put(out, part)
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(bytes(out))
    tmp.replace(path)
    return steady.suite, tree_bytes, steady.group_id, tree_hash


def describe(tree: RatchetTree) -> str:
    members = sum(1 for _ in tree.leaves())
    parents = [tree.node(NodeIndex(i)) for i in range(1, tree.node_width, 2)]
    filled = [p for p in parents if isinstance(p, ParentNode)]
    unmerged = sum(len(p.unmerged_leaves) for p in filled)
    listing = sum(1 for p in filled if p.unmerged_leaves)
    return (
        f"{members:,} members, {tree.leaf_count:,} leaves, {len(filled):,} of "
        f"{len(parents):,} parents filled, {unmerged:,} unmerged-leaf entries "
        f"in {listing:,} parents"
    )


# -- Timing -----------------------------------------------------------------------------


def timed(
    name: str,
    setup: Callable[[], Any],
    fn: Callable[[Any], object],
    *,
    rounds: int,
    timer: Callable[[], float],
    **params: object,
) -> Figure:
    """
    Time ``fn(setup())`` over ``rounds`` calls, setup untimed; median and p99 per call.
    """
    fn(setup())
    samples = []
    for _ in range(rounds):
        state = setup()
        gc.collect()
        start = timer()
        fn(state)
        samples.append((timer() - start) * 1e6)
    samples.sort()
    p99 = samples[min(len(samples) - 1, round(0.99 * (len(samples) - 1)))]
    return Figure(name, params, rounds, statistics.median(samples), p99)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 2)[1])
    parser.add_argument("--members", type=int, default=10_000)
    parser.add_argument("--removes", type=int, default=100)
    parser.add_argument("--commits", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--signature-rounds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="5 rounds, 3 for signatures")
    parser.add_argument("--clock", choices=("cpu", "wall"), default="cpu")
    parser.add_argument("--label", default="", help="a tag stored with the results")
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    rounds, signature_rounds = args.rounds, args.signature_rounds
    if args.quick:
        rounds, signature_rounds = 5, 3
    clock = time.process_time if args.clock == "cpu" else time.perf_counter

    suite, data, group_id, expected_hash = joined_tree(
        args.members, removes=args.removes, commits=args.commits
    )
    tree = RatchetTree.decode(suite, data)
    _log(f"  {describe(tree)}; {len(data):,} bytes encoded")
    if tree.root_tree_hash() != expected_hash:
        raise SystemExit("the root tree hash differs from the one the tree was built with")
    tree.verify(group_id)

    def decoded() -> RatchetTree:
        return RatchetTree.decode(suite, data)

    def hashed() -> RatchetTree:
        fresh = RatchetTree.decode(suite, data)
        fresh.root_tree_hash()
        return fresh

    def join_tree(_: object) -> None:
        fresh = RatchetTree.decode(suite, data)
        if fresh.root_tree_hash() != expected_hash:
            raise SystemExit("tree hash mismatch")
        fresh.verify(group_id)

    params: dict[str, object] = {
        "members": args.members,
        "removes": args.removes,
        "commits": args.commits,
        "suite": suite.suite_id,
        "clock": args.clock,
        "label": args.label,
    }
    plan: list[tuple[str, Callable[[], Any], Callable[[Any], object], int]] = [
        ("decode", lambda: None, lambda _: decoded(), rounds),
        (
            "init",
            lambda: RatchetTreeNodes.decode(data),
            lambda nodes: RatchetTree.from_nodes(suite, nodes),
            rounds,
        ),
        ("root_tree_hash", decoded, lambda t: t.root_tree_hash(), rounds),
        ("verify_parent_hashes", hashed, lambda t: t.verify_parent_hashes(), rounds),
        ("verify_unmerged_leaves", decoded, lambda t: t.verify_unmerged_leaves(), rounds),
        ("verify_unique_keys", decoded, lambda t: t.verify_unique_keys(), rounds),
        (
            "verify_leaf_signatures",
            decoded,
            lambda t: t.verify_leaf_signatures(group_id),
            signature_rounds,
        ),
        ("verify", hashed, lambda t: t.verify(group_id), signature_rounds),
        ("join_tree", lambda: None, join_tree, signature_rounds),
    ]
    figures = []
    print(f"ratchet tree, {describe(tree)}, suite {suite.suite_id}, {args.clock} time")
    print(f"{machine()}")
    print(f"{'figure':<24} {'median ms':>10} {'p99 ms':>10} {'n':>4}")
    for name, setup, fn, n_rounds in plan:
        figure = timed(f"ratchet_tree_{name}", setup, fn, rounds=n_rounds, timer=clock, **params)
        figures.append(figure)
        print(
            f"{name:<24} {figure.median_us / 1e3:>10.1f} {figure.p99_us / 1e3:>10.1f} "
            f"{figure.n:>4}",
            flush=True,
        )
    if not args.no_record:
        _log(f"  appended to {record('ratchet_tree', figures)}")


if __name__ == "__main__":
    main()

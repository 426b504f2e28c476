"""
Speed of the RFC 9420 §2.1 codec on what joining a large group costs it.

A joiner of an n-member group (suite 1) decodes the ratchet tree (§12.4.3.3),
re-encodes every node inside a tree-hash input (§7.8) and encodes every
LeafNodeTBS to check leaf signatures (§7.3). This builds such a tree from
seeded pseudo-random bytes (no cryptography: keys and signatures are just
bytes of the right length) and times each of those steps, plus one commit
message and one small struct.

Run: ``.venv/bin/python bench/codec.py [--members N] [--quick] [--no-record]``.
Prints a table and, unless ``--quick`` or ``--no-record``, appends the figures
to ``bench/results/codec.jsonl``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections.abc import Callable
from pathlib import Path

from harness import Figure, machine, measure, record
from townsquare.mls.ciphersuite import get_cipher_suite
from townsquare.mls.credentials import BasicCredential
from townsquare.mls.framing import MLSMessage, SenderData
from townsquare.mls.leaf_node import Capabilities, LeafNode, Lifetime
from townsquare.mls.ratchet_tree import ParentNode, RatchetTree, RatchetTreeNodes
from townsquare.mls.registries import LeafNodeSource

VECTORS = Path(__file__).parent.parent / "tests" / "vectors" / "mls" / "messages.json"
GROUP_ID = b"bench-codec-group-id-0123456789ab"

# The capabilities a Townsquare client advertises for suite 1 (RFC 9420 §7.2):
# MLS 1.0, one suite, no extra extensions or proposals, basic credentials.
CAPABILITIES = Capabilities(
    versions=(1,), cipher_suites=(1,), extensions=(), proposals=(), credentials=(1,)
)


class Stream:
    """
    Deterministic pseudo-random bytes (SHA-512 in counter mode), so runs compare.
    """

    def __init__(self, seed: bytes) -> None:
        self._seed = seed
        self._counter = 0

    def __call__(self, n: int) -> bytes:
        out = b""
        while len(out) < n:
            self._counter += 1
            out += hashlib.sha512(self._seed + self._counter.to_bytes(8, "big")).digest()
        return out[:n]


def build_tree(members: int) -> tuple[RatchetTreeNodes, list[LeafNode]]:
    """
    A tree of ``members`` leaves as a long-lived group has it.

    One leaf in 200 is blank (a removed member), one in three was last set by
    a commit (so it carries a parent hash), the rest still hold the leaf of
    their KeyPackage (with a lifetime). Every parent is set, one in 64 with an
    unmerged leaf.
    """
    rand = Stream(b"bench-codec")
    leaves: list[LeafNode | None] = []
    members_left = members
    while members_left:
        index = len(leaves)
        if index % 200 == 199:
            leaves.append(None)
            continue
        members_left -= 1
        by_commit = index % 3 == 0
        # Drawn in this order so that the tree is the one earlier runs measured.
        encryption_key, signature_key, credential = rand(32), rand(32), rand(32)
        signature = rand(64)
        leaves.append(
            LeafNode(
                encryption_key=encryption_key,
                signature_key=signature_key,
                credential=BasicCredential(credential),
                capabilities=CAPABILITIES,
                leaf_node_source=(
                    LeafNodeSource.COMMIT if by_commit else LeafNodeSource.KEY_PACKAGE
                ),
                parent_hash=rand(32) if by_commit else None,
                lifetime=(
                    None
                    if by_commit
                    else Lifetime(not_before=1_700_000_000, not_after=1_800_000_000)
                ),
                signature=signature,
            )
        )
    nodes: list[LeafNode | ParentNode | None] = []
    for index, leaf in enumerate(leaves):
        if index:
            parent = 2 * index - 1
            # A parent at level k spans leaves [parent - (2^k - 1), ...] / 2;
            # list the leftmost leaf of its span as unmerged, sometimes.
            level = (~parent & (parent + 1)).bit_length() - 1
            first_leaf = (parent - ((1 << level) - 1)) // 2
            unmerged = (first_leaf,) if parent % 128 == 1 and leaves[first_leaf] else ()
            nodes.append(
                ParentNode(encryption_key=rand(32), parent_hash=rand(32), unmerged_leaves=unmerged)
            )
        nodes.append(leaf)
    return RatchetTreeNodes(tuple(nodes)), [leaf for leaf in leaves if leaf is not None]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--members", type=int, default=10_000)
    parser.add_argument("--quick", action="store_true", help="fewer rounds (a smoke run)")
    parser.add_argument("--no-record", action="store_true", help="print only")
    args = parser.parse_args()
    big_rounds = 3 if args.quick else 15
    small_rounds = 5 if args.quick else 30

    tree, leaves = build_tree(args.members)
    tree_bytes = tree.encode()
    if RatchetTreeNodes.decode(tree_bytes) != tree:
        raise SystemExit("the tree does not round-trip")
    suite = get_cipher_suite(1)
    indexed = [
        (2 * i, leaf) for i, leaf in enumerate(tree.nodes[::2]) if isinstance(leaf, LeafNode)
    ]
    commit_bytes = bytes.fromhex(json.loads(VECTORS.read_text())[0]["public_message_commit"])
    sender_data = SenderData(leaf_index=1234, generation=56, reuse_guard=b"\x01\x02\x03\x04")
    sender_data_bytes = sender_data.encode()

    def encode_leaves() -> None:
        for leaf in leaves:
            leaf.encode()

    def encode_leaf_tbs() -> None:
        for node_index, leaf in indexed:
            leaf.to_be_signed(GROUP_ID, node_index // 2)

    def decode_and_hash() -> bytes:
        return RatchetTree.decode(suite, tree_bytes).root_tree_hash()

    def join_codec() -> None:
        # A join minus its signature and parent-hash checks: the tree decoded
        # and hashed, and every LeafNodeTBS encoded for its signature check.
        decode_and_hash()
        encode_leaf_tbs()

    def big(name: str, fn: Callable[[], object]) -> Figure:
        return measure(name, fn, rounds=big_rounds, calls=1, warmup=1, members=args.members)

    def small(name: str, fn: Callable[[], object]) -> Figure:
        return measure(name, fn, rounds=small_rounds, calls=1000)

    figures: list[Figure] = [
        big("tree_encode", tree.encode),
        big("tree_decode", lambda: RatchetTreeNodes.decode(tree_bytes)),
        big("leaf_node_encode_all", encode_leaves),
        big("leaf_node_tbs_encode_all", encode_leaf_tbs),
        big("tree_decode_and_tree_hash", decode_and_hash),
        big("join_codec_total", join_codec),
        small("public_message_commit_decode", lambda: MLSMessage.decode(commit_bytes)),
        small("sender_data_encode", sender_data.encode),
        small("sender_data_decode", lambda: SenderData.decode(sender_data_bytes)),
    ]

    print(f"# codec — {machine()}")
    print(
        f"{args.members} members, tree {len(tree.nodes)} nodes, {len(tree_bytes):,} bytes; "
        f"commit {len(commit_bytes)} bytes\n"
    )
    print("| operation | n | median | p99 |")
    print("|---|---:|---:|---:|")
    for f in figures:
        unit, scale = ("ms", 1e-3) if f.median_us >= 1000 else ("µs", 1.0)
        print(
            f"| {f.name} | {f.n} | {f.median_us * scale:.{1 if unit == 'ms' else 2}f} {unit} "
            f"| {f.p99_us * scale:.{1 if unit == 'ms' else 2}f} {unit} |"
        )
    if not (args.quick or args.no_record):
        print(f"\nappended to {record('codec', figures)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

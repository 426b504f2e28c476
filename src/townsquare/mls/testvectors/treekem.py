"""
Checks ``treekem.json``: private states, processing UpdatePaths, and creating new ones.

RFC 9420 §7.4-§7.6 and §7.9: every step of FORMAT.md's TreeKEM
verification, including a fresh UpdatePath from each sender that every other
member must process to the same commit secret and tree.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Callable, Mapping

from townsquare.mls.ciphersuite import get_cipher_suite
from townsquare.mls.group_context import GroupContext
from townsquare.mls.ratchet_tree import RatchetTree
from townsquare.mls.testvectors.fields import (
    VectorMismatch,
    expect_equal,
    hex_field,
    int_field,
    list_field,
)
from townsquare.mls.tree_math import LeafIndex, NodeIndex
from townsquare.mls.treekem import (
    TreeKEMPrivate,
    create_update_path,
    decrypt_update_path,
    merge_update_path,
)
from townsquare.mls.update_path import UpdatePath


def _seeded_rng(seed: bytes) -> Callable[[int], bytes]:
    # A deterministic rng (SHA-256 in counter mode) so that a failing case
    # replays exactly; the vectors fix no randomness for the new path.
    counter = itertools.count()

    def rng(n: int) -> bytes:
        out = b""
        while len(out) < n:
            out += hashlib.sha256(seed + next(counter).to_bytes(8, "big")).digest()
        return out[:n]

    return rng


def _entries(case: Mapping[str, object], name: str) -> list[Mapping[str, object]]:
    entries = []
    for index, entry in enumerate(list_field(case, name)):
        if not isinstance(entry, Mapping):
            raise VectorMismatch(f"{name}[{index}] is not an object")
        entries.append(entry)
    return entries


def check(case: Mapping[str, object]) -> None:
    """
    Verify one TreeKEM vector completely.

    :raises VectorMismatch: on the first difference.
    :raises MLSError: if a structure does not decode or a check fails.
    """
    suite = get_cipher_suite(int_field(case, "cipher_suite"))
    tree = RatchetTree.decode(suite, hex_field(case, "ratchet_tree"))
    base_context = GroupContext(
        cipher_suite=suite.suite_id,
        group_id=hex_field(case, "group_id"),
        epoch=int_field(case, "epoch"),
        tree_hash=tree.root_tree_hash(),
        confirmed_transcript_hash=hex_field(case, "confirmed_transcript_hash"),
    )

    # Private states, each consistent with the public tree.
    private: dict[LeafIndex, TreeKEMPrivate] = {}
    signature_keys: dict[LeafIndex, bytes] = {}
    for entry in _entries(case, "leaves_private"):
        leaf_index = LeafIndex(int_field(entry, "index"))
        state = TreeKEMPrivate(suite, leaf_index, hex_field(entry, "encryption_priv"))
        for secret in _entries(entry, "path_secrets"):
            state = state.with_path_secret(
                NodeIndex(int_field(secret, "node")), hex_field(secret, "path_secret")
            )
        state.check_consistent(tree)
        private[leaf_index] = state
        signature_keys[leaf_index] = hex_field(entry, "signature_priv")
    members = [leaf_index for leaf_index, _ in tree.leaves()]
    expect_equal("members with private state", sorted(private), members)

    for number, entry in enumerate(_entries(case, "update_paths")):
        sender = LeafIndex(int_field(entry, "sender"))
        update_path = UpdatePath.decode(hex_field(entry, "update_path"))
        expect_equal(
            "update_path re-encoded", update_path.encode(), hex_field(entry, "update_path")
        )

        # The path is parent-hash valid relative to the tree, and merging it
        # gives the expected tree hash.
        merged = merge_update_path(tree, sender, update_path, group_id=base_context.group_id)
        expect_equal(
            f"update_paths[{number}].tree_hash_after",
            merged.root_tree_hash(),
            hex_field(entry, "tree_hash_after"),
        )
        context = GroupContext(
            cipher_suite=base_context.cipher_suite,
            group_id=base_context.group_id,
            epoch=base_context.epoch,
            tree_hash=merged.root_tree_hash(),
            confirmed_transcript_hash=base_context.confirmed_transcript_hash,
        )
        path_secrets = list_field(entry, "path_secrets")
        expect_equal("number of path_secrets", len(path_secrets), tree.leaf_count)
        for receiver in members:
            if receiver == sender:
                continue
            decrypted = decrypt_update_path(
                merged,
                private[receiver],
                sender=sender,
                update_path=update_path,
                group_context=context,
            )
            expected_secret = path_secrets[receiver]
            if not isinstance(expected_secret, str):
                raise VectorMismatch(f"path_secrets[{receiver}] is not a hex string")
            expect_equal(
                f"update_paths[{number}].path_secrets[{receiver}]",
                decrypted.path_secret,
                bytes.fromhex(expected_secret),
            )
            expect_equal(
                f"update_paths[{number}].commit_secret (leaf {receiver})",
                decrypted.commit_secret,
                hex_field(entry, "commit_secret"),
            )

        # A fresh UpdatePath from the same sender, processed by every other member.
        created = create_update_path(
            tree,
            private[sender],
            group_context=base_context,
            signature_private_key=signature_keys[sender],
            rng=_seeded_rng(hex_field(entry, "update_path")),
        )
        created.private.check_consistent(created.tree)
        new_merged = merge_update_path(
            tree, sender, created.update_path, group_id=base_context.group_id
        )
        expect_equal("new path: merged tree", new_merged.encode(), created.tree.encode())
        expect_equal(
            "new path: tree hash", new_merged.root_tree_hash(), created.group_context.tree_hash
        )
        new_merged.verify_parent_hashes()
        for receiver in members:
            if receiver == sender:
                continue
            decrypted = decrypt_update_path(
                new_merged,
                private[receiver],
                sender=sender,
                update_path=created.update_path,
                group_context=created.group_context,
            )
            expect_equal(
                f"new path: commit secret (leaf {receiver})",
                decrypted.commit_secret,
                created.commit_secret,
            )

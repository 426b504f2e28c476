"""
Checks ``secret-tree.json``: sender-data key and nonce, and every leaf's ratchet keys (RFC 9420 §9).
"""

from __future__ import annotations

from collections.abc import Mapping

from townsquare.mls.ciphersuite import get_cipher_suite
from townsquare.mls.secret_tree import RatchetKind, SecretTree, sender_data_key_nonce
from townsquare.mls.testvectors.fields import (
    VectorMismatch,
    expect_equal,
    hex_field,
    int_field,
    list_field,
    obj_field,
)
from townsquare.mls.tree_math import LeafIndex


def check(case: Mapping[str, object]) -> None:
    """
    Verify one secret-tree vector completely.

    :raises VectorMismatch: on the first difference.
    """
    suite = get_cipher_suite(int_field(case, "cipher_suite"))

    sender_data = obj_field(case, "sender_data")
    derived = sender_data_key_nonce(
        suite, hex_field(sender_data, "sender_data_secret"), hex_field(sender_data, "ciphertext")
    )
    expect_equal("sender_data.key", derived.key, hex_field(sender_data, "key"))
    expect_equal("sender_data.nonce", derived.nonce, hex_field(sender_data, "nonce"))

    leaves = list_field(case, "leaves")
    tree = SecretTree(suite, hex_field(case, "encryption_secret"), len(leaves))
    for i, entries in enumerate(leaves):
        if not isinstance(entries, list):
            raise VectorMismatch(f"leaves[{i}] is not an array")
        for entry in entries:
            if not isinstance(entry, Mapping):
                raise VectorMismatch(f"leaves[{i}] holds a non-object")
            generation = int_field(entry, "generation")
            for kind in RatchetKind:
                name = kind.name.lower()
                where = f"leaves[{i}] generation {generation} {name}"
                # Each generation is consumed as a receiver would consume it,
                # so the vector also exercises skipping ahead (0 then 15).
                key_nonce = tree.key_nonce(LeafIndex(i), kind, generation)
                expect_equal(f"{where} key", key_nonce.key, hex_field(entry, f"{name}_key"))
                expect_equal(f"{where} nonce", key_nonce.nonce, hex_field(entry, f"{name}_nonce"))
                tree.consume(key_nonce)

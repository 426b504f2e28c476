"""
Operations per second of the MLS primitives, per cipher suite (RFC 9420 §5, §6.3).

Run: ``.venv/bin/python bench/mls_primitives.py [--quick]``. Prints a table and
appends the figures to ``bench/results/mls_primitives.jsonl``.
"""

from __future__ import annotations

import argparse
import hashlib
import sys

from harness import Figure, machine, measure, record
from townsquare.mls.ciphersuite import get_cipher_suite
from townsquare.mls.framing import ApplicationData, FramedContent, MemberSender
from townsquare.mls.group_context import GroupContext
from townsquare.mls.private_message import protect_private, unprotect_private
from townsquare.mls.public_message import authenticate_content
from townsquare.mls.registries import WireFormat
from townsquare.mls.secret_tree import SecretTree
from townsquare.mls.tree_math import LeafIndex


def seeded_rng(seed: bytes):  # type: ignore[no-untyped-def]
    counter = 0

    def rng(n: int) -> bytes:
        nonlocal counter
        out = b""
        while len(out) < n:
            counter += 1
            out += hashlib.sha512(seed + counter.to_bytes(8, "big")).digest()
        return out[:n]

    return rng


def bench_suite(suite_id: int, rounds: int) -> list[Figure]:
    suite = get_cipher_suite(suite_id)
    rng = seeded_rng(b"bench-%d" % suite_id)
    hpke_priv, hpke_pub = suite.hpke_generate_key_pair(rng)
    sig_priv, sig_pub = suite.generate_signature_key_pair(rng)
    plaintext = bytes(100)
    kem_output, ciphertext = suite.hpke_seal(hpke_pub, b"info", b"aad", plaintext, rng)
    message = b"x" * 100
    signature = suite.sign(sig_priv, message)
    secret = bytes(suite.hash_length)

    figures = [
        measure(
            "hpke_seal",
            lambda: suite.hpke_seal(hpke_pub, b"info", b"aad", plaintext, rng),
            suite=suite_id,
            rounds=rounds,
        ),
        measure(
            "hpke_open",
            lambda: suite.hpke_open(hpke_priv, kem_output, b"info", b"aad", ciphertext),
            suite=suite_id,
            rounds=rounds,
        ),
        measure("sign", lambda: suite.sign(sig_priv, message), suite=suite_id, rounds=rounds),
        measure(
            "verify",
            lambda: suite.verify(sig_pub, message, signature),
            suite=suite_id,
            rounds=rounds,
        ),
        measure(
            "expand_with_label",
            lambda: suite.expand_with_label(secret, b"key", b"", suite.aead_key_length),
            suite=suite_id,
            rounds=rounds,
            calls=200,
        ),
    ]

    # A 100-byte application message from leaf 1 of a 2-member group, signed,
    # encrypted, then decrypted and verified by the other member.
    context = GroupContext(
        cipher_suite=suite_id,
        group_id=b"bench-group",
        epoch=1,
        tree_hash=bytes(suite.hash_length),
        confirmed_transcript_hash=bytes(suite.hash_length),
    )
    encryption_secret = bytes(range(suite.hash_length))
    sender_data_secret = bytes(reversed(range(suite.hash_length)))
    sender_tree = SecretTree(suite, encryption_secret, 2)
    receiver_tree = SecretTree(suite, encryption_secret, 2)
    content = FramedContent(
        group_id=b"bench-group",
        epoch=1,
        sender=MemberSender(1),
        content=ApplicationData(bytes(100)),
    )

    def encrypt() -> object:
        auth = authenticate_content(
            suite,
            content,
            wire_format=WireFormat.MLS_PRIVATE_MESSAGE,
            signature_private_key=sig_priv,
            group_context=context,
        )
        return protect_private(
            suite,
            auth,
            secret_tree=sender_tree,
            sender_data_secret=sender_data_secret,
            rng=rng,
        )

    figures.append(measure("private_message_encrypt", encrypt, suite=suite_id, rounds=rounds))

    # Decrypt a fresh message each time (generations are single-use).
    pending = [encrypt() for _ in range(rounds * 20 + 3)]
    queue = iter(pending)

    def decrypt() -> object:
        return unprotect_private(
            suite,
            next(queue),  # type: ignore[arg-type]
            secret_tree=receiver_tree,
            sender_data_secret=sender_data_secret,
            group_context=context,
            signature_key_for=lambda leaf: sig_pub if leaf == LeafIndex(1) else None,
        )

    figures.append(measure("private_message_decrypt", decrypt, suite=suite_id, rounds=rounds))
    return figures


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="fewer rounds (a smoke run)")
    args = parser.parse_args()
    rounds = 5 if args.quick else 30
    print(f"# MLS primitives — {machine()}")
    print("median µs per call (ops/s), p99 µs over rounds of 20 calls\n")
    names = [
        "hpke_seal",
        "hpke_open",
        "sign",
        "verify",
        "expand_with_label",
        "private_message_encrypt",
        "private_message_decrypt",
    ]
    print("| suite | " + " | ".join(names) + " |")
    print("|---" * (len(names) + 1) + "|")
    figures: list[Figure] = []
    for suite_id in range(1, 8):
        row = {f.name: f for f in bench_suite(suite_id, rounds)}
        figures.extend(row.values())
        cells = [
            f"{row[n].median_us:.0f} ({row[n].ops_per_s:,.0f}) p99 {row[n].p99_us:.0f}"
            for n in names
        ]
        print(f"| {suite_id} | " + " | ".join(cells) + " |")
        sys.stdout.flush()
    if not args.quick:
        print(f"\nappended to {record('mls_primitives', figures)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

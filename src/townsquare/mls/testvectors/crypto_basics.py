"""
Checks ``crypto-basics.json``: the labelled operations of RFC 9420 §5 for one cipher suite.

Each entry gives, for one suite, a known answer for ``RefHash`` (§5.2),
``ExpandWithLabel`` and ``DeriveSecret`` (§5.1), ``DeriveTreeSecret`` (§9),
``SignWithLabel``/``VerifyWithLabel`` (§5.1.2) and
``EncryptWithLabel``/``DecryptWithLabel`` (§5.1.3). Signing and encryption
are also run the other way round (sign, then verify our signature; encrypt,
then decrypt our ciphertext), and the public keys are recomputed from the
private ones.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

from townsquare.mls.ciphersuite import CipherSuite, get_cipher_suite
from townsquare.mls.errors import DecryptError, InvalidSignature
from townsquare.mls.hpke import Rng
from townsquare.mls.testvectors.fields import (
    VectorMismatch,
    expect_equal,
    hex_field,
    int_field,
    obj_field,
    str_field,
)

__all__ = ["check"]


def check(case: Mapping[str, object]) -> None:
    """
    Verify one crypto-basics vector completely.

    :param case: one entry of ``crypto-basics.json``.
    :raises VectorMismatch: on the first difference, or if a signature or ciphertext from
        the vector does not verify or decrypt.
    """
    suite = get_cipher_suite(int_field(case, "cipher_suite"))
    _check_ref_hash(suite, obj_field(case, "ref_hash"))
    _check_expand_with_label(suite, obj_field(case, "expand_with_label"))
    _check_derive_secret(suite, obj_field(case, "derive_secret"))
    _check_derive_tree_secret(suite, obj_field(case, "derive_tree_secret"))
    _check_sign_with_label(suite, obj_field(case, "sign_with_label"))
    _check_encrypt_with_label(suite, obj_field(case, "encrypt_with_label"))


def _label(entry: Mapping[str, object]) -> bytes:
    return str_field(entry, "label").encode("ascii")


def _check_ref_hash(suite: CipherSuite, entry: Mapping[str, object]) -> None:
    # RefHash takes the label as given: RFC 9420 §5.2 adds no prefix.
    got = suite.ref_hash(_label(entry), hex_field(entry, "value"))
    expect_equal("ref_hash.out", got, hex_field(entry, "out"))


def _check_expand_with_label(suite: CipherSuite, entry: Mapping[str, object]) -> None:
    got = suite.expand_with_label(
        hex_field(entry, "secret"),
        _label(entry),
        hex_field(entry, "context"),
        int_field(entry, "length"),
    )
    expect_equal("expand_with_label.out", got, hex_field(entry, "out"))


def _check_derive_secret(suite: CipherSuite, entry: Mapping[str, object]) -> None:
    got = suite.derive_secret(hex_field(entry, "secret"), _label(entry))
    expect_equal("derive_secret.out", got, hex_field(entry, "out"))


def _check_derive_tree_secret(suite: CipherSuite, entry: Mapping[str, object]) -> None:
    got = suite.derive_tree_secret(
        hex_field(entry, "secret"),
        _label(entry),
        int_field(entry, "generation"),
        int_field(entry, "length"),
    )
    expect_equal("derive_tree_secret.out", got, hex_field(entry, "out"))


def _check_sign_with_label(suite: CipherSuite, entry: Mapping[str, object]) -> None:
    private_key = hex_field(entry, "priv")
    public_key = hex_field(entry, "pub")
    label = _label(entry)
    content = hex_field(entry, "content")
    expect_equal("sign_with_label.pub", suite.signature_public_key(private_key), public_key)
    try:
        suite.verify_with_label(public_key, label, content, hex_field(entry, "signature"))
    except InvalidSignature as exc:
        raise VectorMismatch("sign_with_label.signature does not verify") from exc
    ours = suite.sign_with_label(private_key, label, content)
    try:
        suite.verify_with_label(public_key, label, content, ours)
    except InvalidSignature as exc:
        raise VectorMismatch("our SignWithLabel signature does not verify") from exc


def _check_encrypt_with_label(suite: CipherSuite, entry: Mapping[str, object]) -> None:
    private_key = hex_field(entry, "priv")
    public_key = hex_field(entry, "pub")
    label = _label(entry)
    context = hex_field(entry, "context")
    plaintext = hex_field(entry, "plaintext")
    expect_equal("encrypt_with_label.pub", suite.hpke_public_key(private_key), public_key)
    try:
        got = suite.decrypt_with_label(
            private_key,
            label,
            context,
            hex_field(entry, "kem_output"),
            hex_field(entry, "ciphertext"),
        )
    except DecryptError as exc:
        raise VectorMismatch("encrypt_with_label.ciphertext does not decrypt") from exc
    expect_equal("encrypt_with_label.plaintext", got, plaintext)

    # The second check encrypts afresh. The ephemeral key comes from a
    # deterministic rng seeded by the vector, so a failure replays exactly.
    rng = _seeded_rng(b"crypto-basics encrypt_with_label" + private_key + context)
    kem_output, ciphertext = suite.encrypt_with_label(public_key, label, context, plaintext, rng)
    try:
        got = suite.decrypt_with_label(private_key, label, context, kem_output, ciphertext)
    except DecryptError as exc:
        raise VectorMismatch("our EncryptWithLabel ciphertext does not decrypt") from exc
    expect_equal("decrypt_with_label(encrypt_with_label(plaintext))", got, plaintext)


def _seeded_rng(seed: bytes) -> Rng:
    counter = 0

    def rng(n: int) -> bytes:
        nonlocal counter
        counter += 1
        return hashlib.shake_256(counter.to_bytes(4, "big") + seed).digest(n)

    return rng

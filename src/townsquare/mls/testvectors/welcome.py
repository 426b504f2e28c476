"""
Checks ``welcome.json``: opening a Welcome, checking its GroupInfo (RFC 9420 §12.4.3.1).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping

from townsquare.mls.ciphersuite import get_cipher_suite
from townsquare.mls.framing import MLSMessage
from townsquare.mls.key_package import KeyPackage, key_package_ref
from townsquare.mls.key_schedule import (
    derive_epoch_secrets_from_joiner,
    verify_confirmation_tag,
    welcome_secret,
)
from townsquare.mls.testvectors.fields import VectorMismatch, expect_equal, hex_field, int_field
from townsquare.mls.welcome import (
    Welcome,
    decrypt_group_info,
    decrypt_group_secrets,
    encrypt_group_info,
    encrypt_group_secrets,
    verify_group_info_signature,
)


def _seeded_rng(seed: bytes) -> Callable[[int], bytes]:
    # A deterministic rng, so that a failing case replays exactly: SHA-256
    # over the seed and a counter, enough for HPKE's ephemeral keys.
    counter = 0

    def rng(n: int) -> bytes:
        nonlocal counter
        out = b""
        while len(out) < n:
            out += hashlib.sha256(seed + counter.to_bytes(8, "big")).digest()
            counter += 1
        return out[:n]

    return rng


def _message_body(case: Mapping[str, object], name: str) -> object:
    data = hex_field(case, name)
    message = MLSMessage.decode(data)
    expect_equal(f"{name} re-encoded", message.encode(), data)
    return message.body


def check(case: Mapping[str, object]) -> None:
    """
    Verify one welcome vector completely.

    Beyond what FORMAT.md lists, re-encrypting the decrypted GroupInfo must give
    the Welcome's bytes again (the welcome key and nonce are deterministic),
    and GroupSecrets sealed anew to the KeyPackage must open with ``init_priv``.

    :raises VectorMismatch: on a difference.
    :raises MLSError: if decryption, the signature or the confirmation tag fails.
    """
    suite_id = int_field(case, "cipher_suite")
    suite = get_cipher_suite(suite_id)
    key_package = _message_body(case, "key_package")
    welcome = _message_body(case, "welcome")
    if not isinstance(key_package, KeyPackage):
        raise VectorMismatch("key_package is not an MLSMessage(KeyPackage)")
    if not isinstance(welcome, Welcome):
        raise VectorMismatch("welcome is not an MLSMessage(Welcome)")
    expect_equal("key_package.cipher_suite", key_package.cipher_suite, suite_id)
    init_priv = hex_field(case, "init_priv")

    ref = key_package_ref(suite, key_package)
    group_secrets = decrypt_group_secrets(suite, welcome, ref, init_priv)
    # FORMAT.md: "Initialize a key schedule epoch using the decrypted
    # joiner_secret and no PSKs".
    expect_equal("group_secrets.psks", group_secrets.psks, ())
    secret = welcome_secret(suite, group_secrets.joiner_secret, None)
    group_info = decrypt_group_info(suite, secret, welcome.encrypted_group_info)
    verify_group_info_signature(suite, group_info, hex_field(case, "signer_pub"))
    expect_equal("group_info.cipher_suite", group_info.group_context.cipher_suite, suite_id)

    epoch_secrets = derive_epoch_secrets_from_joiner(
        suite,
        joiner_secret=group_secrets.joiner_secret,
        psk_secret=None,
        group_context=group_info.group_context,
    )
    verify_confirmation_tag(
        suite,
        epoch_secrets.confirmation_key,
        group_info.group_context.confirmed_transcript_hash,
        group_info.confirmation_tag,
    )

    # The other way: seal what was opened and compare.
    expect_equal(
        "encrypted_group_info re-encrypted",
        encrypt_group_info(suite, secret, group_info),
        welcome.encrypted_group_info,
    )
    resealed = encrypt_group_secrets(
        suite,
        key_package,
        group_secrets,
        welcome.encrypted_group_info,
        _seeded_rng(ref),
    )
    expect_equal("resealed new_member", resealed.new_member, ref)
    reopened = decrypt_group_secrets(
        suite, Welcome(suite_id, (resealed,), welcome.encrypted_group_info), ref, init_priv
    )
    expect_equal("resealed group_secrets", reopened, group_secrets)

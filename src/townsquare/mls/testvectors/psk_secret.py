"""
Checks ``psk_secret.json``: chaining external PSKs into ``psk_secret`` (RFC 9420 §8.4).
"""

from __future__ import annotations

from collections.abc import Mapping

from townsquare.mls.ciphersuite import get_cipher_suite
from townsquare.mls.psk import PreSharedKeyID, psk_secret
from townsquare.mls.registries import PSKType
from townsquare.mls.testvectors.fields import (
    VectorMismatch,
    expect_equal,
    hex_field,
    int_field,
    list_field,
)


def check(case: Mapping[str, object]) -> None:
    """
    Verify one psk_secret vector completely.

    :raises VectorMismatch: on a difference.
    """
    suite = get_cipher_suite(int_field(case, "cipher_suite"))
    psks: list[tuple[PreSharedKeyID, bytes]] = []
    for index, entry in enumerate(list_field(case, "psks")):
        if not isinstance(entry, Mapping):
            raise VectorMismatch(f"psks[{index}] is not an object")
        psk_id = PreSharedKeyID(
            psktype=PSKType.EXTERNAL,
            psk_id=hex_field(entry, "psk_id"),
            psk_nonce=hex_field(entry, "psk_nonce"),
        )
        psks.append((psk_id, hex_field(entry, "psk")))
    expect_equal("psk_secret", psk_secret(suite, psks), hex_field(case, "psk_secret"))

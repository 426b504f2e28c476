"""
RFC 9420 §8.4: chaining pre-shared keys into ``psk_secret``.
"""

from __future__ import annotations

import pytest

from townsquare.mls.ciphersuite import get_cipher_suite
from townsquare.mls.errors import UsageError
from townsquare.mls.psk import MAX_PSKS, PreSharedKeyID, PSKLabel, psk_secret
from townsquare.mls.registries import PSKType, ResumptionPSKUsage

SUITE = get_cipher_suite(1)

EXTERNAL = PreSharedKeyID(psktype=PSKType.EXTERNAL, psk_id=b"id-0", psk_nonce=b"\x00" * 32)
RESUMPTION = PreSharedKeyID(
    psktype=PSKType.RESUMPTION,
    usage=ResumptionPSKUsage.APPLICATION,
    psk_group_id=b"village",
    psk_epoch=7,
    psk_nonce=b"\x01" * 32,
)


@pytest.mark.parametrize("suite_id", range(1, 8))
def test_no_psks_give_the_zero_vector(suite_id: int) -> None:
    # RFC 9420 §8.4: "if there are no PreSharedKey proposals in a given
    # Commit, then the resulting psk_secret is psk_secret_[0], the all-zero
    # vector."
    suite = get_cipher_suite(suite_id)
    assert psk_secret(suite, []) == bytes(suite.hash_length)


def test_psk_secret_follows_the_rfc_chain() -> None:
    # RFC 9420 §8.4, written out for two PSKs.
    n = SUITE.hash_length
    zero = bytes(n)
    psks = [(EXTERNAL, b"first psk"), (RESUMPTION, b"second psk")]
    secret = zero
    for index, (psk_id, psk) in enumerate(psks):
        extracted = SUITE.kdf_extract(zero, psk)
        label = PSKLabel(psk_id, index, len(psks)).encode()
        psk_input = SUITE.expand_with_label(extracted, b"derived psk", label, n)
        secret = SUITE.kdf_extract(psk_input, secret)
    assert psk_secret(SUITE, psks) == secret


def test_psk_order_matters() -> None:
    first, second = (EXTERNAL, b"a"), (RESUMPTION, b"b")
    assert psk_secret(SUITE, [first, second]) != psk_secret(SUITE, [second, first])


def test_psk_count_is_bound() -> None:
    # The same PSK twice differs from once: PSKLabel carries index and count.
    once = psk_secret(SUITE, [(EXTERNAL, b"a")])
    assert psk_secret(SUITE, [(EXTERNAL, b"a"), (EXTERNAL, b"a")]) != once


def test_psk_nonce_is_bound() -> None:
    other_nonce = PreSharedKeyID(psktype=PSKType.EXTERNAL, psk_id=b"id-0", psk_nonce=b"\x09" * 32)
    assert psk_secret(SUITE, [(EXTERNAL, b"a")]) != psk_secret(SUITE, [(other_nonce, b"a")])


def test_psk_list_longer_than_uint16_is_rejected() -> None:
    psks = [(EXTERNAL, b"k")] * (MAX_PSKS + 1)
    before = list(psks)
    with pytest.raises(UsageError):
        psk_secret(SUITE, psks)
    assert psks == before

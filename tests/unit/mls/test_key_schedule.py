"""
The RFC 9420 §8 key schedule: epoch secrets, exporter, external key pair, confirmation tag.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pytest

from townsquare.mls.ciphersuite import CipherSuite, get_cipher_suite
from townsquare.mls.errors import ConfirmationTagMismatch, UsageError
from townsquare.mls.group_context import GroupContext
from townsquare.mls.key_schedule import (
    EpochSecrets,
    confirmation_tag,
    derive_epoch_secrets,
    derive_epoch_secrets_from_joiner,
    external_key_pair,
    joiner_secret,
    mls_exporter,
    verify_confirmation_tag,
    welcome_secret,
    zero_secret,
)

SUITE = get_cipher_suite(1)


def _context(suite: CipherSuite = SUITE, epoch: int = 1) -> GroupContext:
    return GroupContext(
        cipher_suite=suite.suite_id,
        group_id=b"village",
        epoch=epoch,
        tree_hash=bytes(range(suite.hash_length)),
        confirmed_transcript_hash=bytes(reversed(range(suite.hash_length))),
    )


def _secrets(suite: CipherSuite = SUITE, epoch: int = 1) -> EpochSecrets:
    n = suite.hash_length
    return derive_epoch_secrets(
        suite,
        init_secret=b"\x01" * n,
        commit_secret=b"\x02" * n,
        psk_secret=b"\x03" * n,
        group_context=_context(suite, epoch),
    )


@pytest.mark.parametrize("suite_id", range(1, 8))
def test_zero_secret_is_nh_zero_bytes(suite_id: int) -> None:
    suite = get_cipher_suite(suite_id)
    assert zero_secret(suite) == bytes(suite.hash_length)


def test_secrets_follow_the_rfc_diagram() -> None:
    # RFC 9420 §8, Figure 22, spelled out with the suite's primitives.
    n = SUITE.hash_length
    context = _context().encode()
    joiner = SUITE.expand_with_label(
        SUITE.kdf_extract(b"\x01" * n, b"\x02" * n), b"joiner", context, n
    )
    member = SUITE.kdf_extract(joiner, b"\x03" * n)
    epoch = SUITE.expand_with_label(member, b"epoch", context, n)
    secrets = _secrets()
    assert secrets.joiner_secret == joiner
    assert secrets.welcome_secret == SUITE.derive_secret(member, b"welcome")
    assert secrets.epoch_secret == epoch
    assert secrets.confirmation_key == SUITE.derive_secret(epoch, b"confirm")
    assert secrets.epoch_authenticator == SUITE.derive_secret(epoch, b"authentication")
    assert secrets.init_secret == SUITE.derive_secret(epoch, b"init")


def test_every_epoch_secret_is_distinct() -> None:
    values = [getattr(_secrets(), f.name) for f in dataclasses.fields(EpochSecrets)]
    assert len(set(values)) == len(values)


def _derive(commit_secret: bytes | None, psk_secret: bytes | None) -> EpochSecrets:
    return derive_epoch_secrets(
        SUITE,
        init_secret=b"\x01" * SUITE.hash_length,
        commit_secret=commit_secret,
        psk_secret=psk_secret,
        group_context=_context(),
    )


def test_commit_without_path_uses_zero_commit_secret() -> None:
    # RFC 9420 §12.4.2: "If the path value is not populated, define
    # commit_secret as the all-zero vector of length KDF.Nh".
    assert _derive(None, None) == _derive(bytes(SUITE.hash_length), None)


def test_no_psks_uses_zero_psk_secret() -> None:
    # RFC 9420 §8: "psk_secret (or 0)".
    assert _derive(None, None) == _derive(None, bytes(SUITE.hash_length))


def test_joiner_derives_the_same_secrets_as_members() -> None:
    secrets = _secrets()
    joined = derive_epoch_secrets_from_joiner(
        SUITE,
        joiner_secret=secrets.joiner_secret,
        psk_secret=b"\x03" * SUITE.hash_length,
        group_context=_context(),
    )
    assert joined == secrets
    assert (
        welcome_secret(SUITE, secrets.joiner_secret, b"\x03" * SUITE.hash_length)
        == secrets.welcome_secret
    )


def test_joiner_secret_matches_epoch_secrets() -> None:
    n = SUITE.hash_length
    assert (
        joiner_secret(
            SUITE, init_secret=b"\x01" * n, commit_secret=b"\x02" * n, group_context=_context()
        )
        == _secrets().joiner_secret
    )


def test_group_context_binds_every_secret() -> None:
    before, after = _secrets(epoch=1), _secrets(epoch=2)
    for f in dataclasses.fields(EpochSecrets):
        assert getattr(before, f.name) != getattr(after, f.name), f.name


def test_epoch_secrets_repr_hides_secrets() -> None:
    secrets = _secrets()
    shown = repr(secrets)
    for f in dataclasses.fields(EpochSecrets):
        value: bytes = getattr(secrets, f.name)
        assert value.hex() not in shown
        assert repr(value) not in shown


@pytest.mark.parametrize("suite_id", range(1, 8))
def test_external_key_pair_is_derived_from_external_secret(suite_id: int) -> None:
    suite = get_cipher_suite(suite_id)
    secrets = _secrets(suite)
    priv, pub = external_key_pair(suite, secrets.external_secret)
    assert suite.hpke_public_key(priv) == pub
    assert external_key_pair(suite, secrets.external_secret) == (priv, pub)
    assert external_key_pair(suite, secrets.exporter_secret)[1] != pub


def test_exporter_follows_rfc_definition() -> None:
    exporter_secret = _secrets().exporter_secret
    expected = SUITE.expand_with_label(
        SUITE.derive_secret(exporter_secret, b"townsquare test"),
        b"exported",
        SUITE.hash(b"context"),
        42,
    )
    assert mls_exporter(SUITE, exporter_secret, b"townsquare test", b"context", 42) == expected


def test_exporter_separates_labels_and_contexts() -> None:
    exporter_secret = _secrets().exporter_secret
    base = mls_exporter(SUITE, exporter_secret, b"a", b"c", 32)
    assert mls_exporter(SUITE, exporter_secret, b"b", b"c", 32) != base
    assert mls_exporter(SUITE, exporter_secret, b"a", b"d", 32) != base


def test_exporter_length_beyond_uint16_is_rejected() -> None:
    with pytest.raises(UsageError):
        mls_exporter(SUITE, _secrets().exporter_secret, b"a", b"", 0x10000)


def test_confirmation_tag_is_mac_of_confirmed_transcript_hash() -> None:
    secrets = _secrets()
    transcript = _context().confirmed_transcript_hash
    tag = confirmation_tag(SUITE, secrets.confirmation_key, transcript)
    assert tag == SUITE.mac(secrets.confirmation_key, transcript)
    verify_confirmation_tag(SUITE, secrets.confirmation_key, transcript, tag)


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(lambda tag: bytes([tag[0] ^ 1]) + tag[1:], id="flipped-bit"),
        pytest.param(lambda tag: tag[:-1], id="truncated"),
        pytest.param(lambda tag: b"", id="empty"),
        pytest.param(lambda tag: tag + b"\x00", id="extended"),
    ],
)
def test_wrong_confirmation_tag_is_rejected(tamper: Callable[[bytes], bytes]) -> None:
    secrets = _secrets()
    before = dataclasses.replace(secrets)
    transcript = _context().confirmed_transcript_hash
    tag = confirmation_tag(SUITE, secrets.confirmation_key, transcript)
    with pytest.raises(ConfirmationTagMismatch):
        verify_confirmation_tag(SUITE, secrets.confirmation_key, transcript, tamper(tag))
    assert secrets == before


def test_confirmation_tag_for_another_transcript_is_rejected() -> None:
    secrets = _secrets()
    tag = confirmation_tag(SUITE, secrets.confirmation_key, b"transcript one")
    with pytest.raises(ConfirmationTagMismatch):
        verify_confirmation_tag(SUITE, secrets.confirmation_key, b"transcript two", tag)


def test_confirmation_tag_under_another_key_is_rejected() -> None:
    transcript = _context().confirmed_transcript_hash
    tag = confirmation_tag(SUITE, _secrets(epoch=1).confirmation_key, transcript)
    with pytest.raises(ConfirmationTagMismatch):
        verify_confirmation_tag(SUITE, _secrets(epoch=2).confirmation_key, transcript, tag)

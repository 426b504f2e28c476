"""
The RFC 9420 §9 secret tree: lazy derivation, deletion (§9.2), out-of-order window, staging.
"""

from __future__ import annotations

import pytest

from townsquare.mls.ciphersuite import get_cipher_suite
from townsquare.mls.errors import GenerationError, InvalidSender, UsageError
from townsquare.mls.registries import ContentType
from townsquare.mls.secret_tree import (
    RatchetKeyNonce,
    RatchetKind,
    SecretTree,
    ratchet_kind_for,
    sender_data_key_nonce,
)
from townsquare.mls.tree_math import LeafIndex

SUITE = get_cipher_suite(1)
SECRET = bytes(range(SUITE.hash_length))
APP = RatchetKind.APPLICATION
HS = RatchetKind.HANDSHAKE


def _tree(n_leaves: int = 8, **limits: int) -> SecretTree:
    return SecretTree(SUITE, SECRET, n_leaves, **limits)


def _receive(tree: SecretTree, leaf: int, kind: RatchetKind, generation: int) -> RatchetKeyNonce:
    key_nonce = tree.key_nonce(LeafIndex(leaf), kind, generation)
    tree.consume(key_nonce)
    return key_nonce


def test_ratchet_kind_follows_content_type() -> None:
    assert ratchet_kind_for(ContentType.APPLICATION) is APP
    assert ratchet_kind_for(ContentType.PROPOSAL) is HS
    assert ratchet_kind_for(ContentType.COMMIT) is HS


def test_sending_and_receiving_agree() -> None:
    sender, receiver = _tree(), _tree()
    for generation in range(3):
        sent = sender.next_key_nonce(LeafIndex(5), APP)
        assert sent.generation == generation
        got = _receive(receiver, 5, APP, generation)
        assert (got.key, got.nonce) == (sent.key, sent.nonce)
    assert sender.next_key_nonce(LeafIndex(5), HS).generation == 0


def test_large_tree_derives_only_the_path() -> None:
    # 16,384 leaves (a 10,000-member group's tree): one leaf's keys derive one
    # path, keeping a sibling per level, never the whole tree.
    tree = SecretTree(SUITE, SECRET, 16384)
    _receive(tree, 9999, APP, 0)
    state = tree.snapshot()
    assert len(state.node_secrets) == 14
    assert {(r.leaf_index, r.kind) for r in state.ratchets} == {(9999, APP), (9999, HS)}


def test_consumed_path_secrets_are_deleted() -> None:
    tree = _tree(4)
    root_before = dict(tree.snapshot().node_secrets)
    assert list(root_before) == [3]
    _receive(tree, 3, APP, 0)
    nodes = dict(tree.snapshot().node_secrets)
    # RFC 9420 §9.2 (Figure 27): the root G and D's parent F are consumed; E
    # and C stay for the other senders.
    assert sorted(nodes) == [1, 4]
    assert SECRET not in nodes.values()


def test_consumed_generation_is_rejected_on_replay() -> None:
    tree = _tree()
    _receive(tree, 1, APP, 0)
    before = tree.snapshot()
    with pytest.raises(GenerationError):
        tree.key_nonce(LeafIndex(1), APP, 0)
    assert tree.snapshot() == before


def test_out_of_order_generations_within_window() -> None:
    reference = _tree()
    expected = [_receive(reference, 2, APP, g).key for g in range(6)]
    tree = _tree()
    assert _receive(tree, 2, APP, 5).key == expected[5]
    assert _receive(tree, 2, APP, 1).key == expected[1]
    assert _receive(tree, 2, APP, 3).key == expected[3]
    retained = next(r for r in tree.snapshot().ratchets if r.kind is APP).retained
    assert [g for g, _, _ in retained] == [0, 2, 4]
    with pytest.raises(GenerationError):
        tree.key_nonce(LeafIndex(2), APP, 3)


def test_generation_beyond_window_is_rejected() -> None:
    tree = _tree(max_forward_distance=4)
    before = tree.snapshot()
    with pytest.raises(GenerationError):
        tree.key_nonce(LeafIndex(0), APP, 5)
    assert tree.snapshot() == before
    _receive(tree, 0, APP, 4)
    with pytest.raises(GenerationError):
        tree.key_nonce(LeafIndex(0), APP, 10)


def test_default_window_is_1024_ahead() -> None:
    tree = _tree(max_retained_keys=0)
    with pytest.raises(GenerationError):
        tree.key_nonce(LeafIndex(0), APP, 1025)
    assert tree.key_nonce(LeafIndex(0), APP, 1024).generation == 1024


def test_retained_keys_are_bounded_oldest_dropped() -> None:
    tree = _tree(max_retained_keys=3)
    _receive(tree, 0, APP, 10)
    retained = next(r for r in tree.snapshot().ratchets if r.kind is APP).retained
    assert [g for g, _, _ in retained] == [7, 8, 9]
    with pytest.raises(GenerationError):
        tree.key_nonce(LeafIndex(0), APP, 6)
    _receive(tree, 0, APP, 12)
    retained = next(r for r in tree.snapshot().ratchets if r.kind is APP).retained
    assert [g for g, _, _ in retained] == [8, 9, 11]


def test_lookup_without_consume_changes_nothing() -> None:
    tree = _tree()
    before = tree.snapshot()
    tree.key_nonce(LeafIndex(6), HS, 7)
    assert tree.snapshot() == before


def test_stale_lookup_is_replanned_on_consume() -> None:
    tree = _tree()
    early = tree.key_nonce(LeafIndex(3), APP, 2)
    _receive(tree, 3, APP, 4)
    tree.consume(early)
    with pytest.raises(GenerationError):
        tree.consume(early)


def test_consume_needs_a_looked_up_key() -> None:
    forged = RatchetKeyNonce(leaf_index=LeafIndex(0), kind=APP, generation=0, key=b"", nonce=b"")
    with pytest.raises(UsageError):
        _tree().consume(forged)


def test_leaf_outside_tree() -> None:
    tree = _tree(4)
    with pytest.raises(InvalidSender):
        tree.key_nonce(LeafIndex(4), APP, 0)
    with pytest.raises(UsageError):
        tree.next_key_nonce(LeafIndex(4), APP)


def test_generation_must_fit_uint32() -> None:
    with pytest.raises(GenerationError):
        _tree().key_nonce(LeafIndex(0), APP, 1 << 32)


@pytest.mark.parametrize("n_leaves", [0, 3, 6])
def test_leaf_count_must_be_power_of_two(n_leaves: int) -> None:
    with pytest.raises(UsageError):
        SecretTree(SUITE, SECRET, n_leaves)


def test_bad_construction() -> None:
    with pytest.raises(UsageError):
        SecretTree(SUITE, SECRET[:-1], 2)
    with pytest.raises(UsageError):
        SecretTree(SUITE, SECRET, 2, max_forward_distance=-1)


def test_secrets_stay_out_of_repr() -> None:
    tree = _tree()
    key_nonce = _receive(tree, 0, APP, 3)
    text = repr(key_nonce) + repr(tree.snapshot()) + repr(tree)
    for secret in (SECRET, key_nonce.key, key_nonce.nonce):
        assert secret.hex() not in text
    assert repr(sender_data_key_nonce(SUITE, SECRET, b"x")) == "KeyNonce()"


@pytest.mark.parametrize("length", [0, 5, 32, 100])
def test_sender_data_sample_is_first_nh_bytes(length: int) -> None:
    ciphertext = bytes(range(length))
    derived = sender_data_key_nonce(SUITE, SECRET, ciphertext)
    sample = ciphertext[: SUITE.hash_length]
    assert derived.key == SUITE.expand_with_label(SECRET, b"key", sample, SUITE.aead_key_length)
    assert derived.nonce == SUITE.expand_with_label(
        SECRET, b"nonce", sample, SUITE.aead_nonce_length
    )

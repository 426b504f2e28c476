"""
``crypto-basics.json`` (IETF MLS interop vectors): every entry, and the checker's own failures.
"""

from __future__ import annotations

import copy

import pytest

from townsquare.mls.testvectors import VectorCase, default_vector_dir, load_file
from townsquare.mls.testvectors.crypto_basics import check
from townsquare.mls.testvectors.fields import VectorMismatch

CASES = load_file(default_vector_dir() / "crypto-basics.json")


def test_every_suite_has_an_entry() -> None:
    assert sorted(case.data["cipher_suite"] for case in CASES) == [1, 2, 3, 4, 5, 6, 7]


@pytest.mark.vectors
@pytest.mark.parametrize("case", CASES, ids=[case.case_id for case in CASES])
def test_crypto_basics_vector(case: VectorCase) -> None:
    check(case.data)


def _flip_hex(value: object) -> str:
    assert isinstance(value, str)
    data = bytearray.fromhex(value)
    data[-1] ^= 0x01
    return data.hex()


CORRUPTIONS = [
    ("ref_hash", "out"),
    ("ref_hash", "value"),
    ("expand_with_label", "out"),
    ("expand_with_label", "context"),
    ("derive_secret", "out"),
    ("derive_tree_secret", "out"),
    ("sign_with_label", "signature"),
    ("sign_with_label", "content"),
    ("sign_with_label", "pub"),
    ("encrypt_with_label", "ciphertext"),
    ("encrypt_with_label", "kem_output"),
    ("encrypt_with_label", "plaintext"),
    ("encrypt_with_label", "pub"),
]


@pytest.mark.parametrize(
    ("suite_index", "section", "name"),
    [
        pytest.param(i, section, name, id=f"{CASES[i].case_id}-{section}.{name}")
        for i in (0, 1)
        for section, name in CORRUPTIONS
    ],
)
def test_corrupted_vector_is_reported(suite_index: int, section: str, name: str) -> None:
    data = copy.deepcopy(dict(CASES[suite_index].data))
    entry = data[section]
    assert isinstance(entry, dict)
    entry[name] = _flip_hex(entry[name])
    with pytest.raises(VectorMismatch):
        check(data)


@pytest.mark.parametrize("section", ["derive_secret", "encrypt_with_label"])
def test_missing_section_is_reported(section: str) -> None:
    data = dict(CASES[0].data)
    del data[section]
    with pytest.raises(VectorMismatch):
        check(data)


def test_changed_label_is_reported() -> None:
    data = copy.deepcopy(dict(CASES[0].data))
    entry = data["derive_secret"]
    assert isinstance(entry, dict)
    entry["label"] = "DeriveSecreT"
    with pytest.raises(VectorMismatch):
        check(data)

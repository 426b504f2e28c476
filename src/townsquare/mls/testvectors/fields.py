"""
Typed access to the fields of one JSON test-vector case, and the mismatch error.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

__all__ = [
    "VectorMismatch",
    "expect_equal",
    "hex_field",
    "int_field",
    "list_field",
    "obj_field",
    "optional_hex_field",
    "str_field",
]


class VectorMismatch(AssertionError):
    """
    A computed value differs from the one a known-answer vector gives.
    """


def _get(case: Mapping[str, object], name: str) -> object:
    if name not in case:
        raise VectorMismatch(f"vector has no field {name!r}")
    return case[name]


def hex_field(case: Mapping[str, object], name: str) -> bytes:
    """
    :returns: the bytes of a hex-encoded field.
    :raises VectorMismatch: if the field is missing or not hex.
    """
    value = _get(case, name)
    if not isinstance(value, str):
        raise VectorMismatch(f"field {name!r} is not a hex string")
    return bytes.fromhex(value)


def optional_hex_field(case: Mapping[str, object], name: str) -> bytes | None:
    """
    :returns: the bytes of a hex-encoded field, or ``None`` when it is null or absent.
    """
    value = case.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise VectorMismatch(f"field {name!r} is not a hex string")
    return bytes.fromhex(value)


def int_field(case: Mapping[str, object], name: str) -> int:
    """
    :returns: an integer field.
    :raises VectorMismatch: if the field is missing or not an integer.
    """
    value = _get(case, name)
    if not isinstance(value, int) or isinstance(value, bool):
        raise VectorMismatch(f"field {name!r} is not an integer")
    return value


def str_field(case: Mapping[str, object], name: str) -> str:
    """
    :returns: a string field.
    :raises VectorMismatch: if the field is missing or not a string.
    """
    value = _get(case, name)
    if not isinstance(value, str):
        raise VectorMismatch(f"field {name!r} is not a string")
    return value


def obj_field(case: Mapping[str, object], name: str) -> Mapping[str, object]:
    """
    :returns: an object field.
    :raises VectorMismatch: if the field is missing or not an object.
    """
    value = _get(case, name)
    if not isinstance(value, Mapping):
        raise VectorMismatch(f"field {name!r} is not an object")
    return value


def list_field(case: Mapping[str, object], name: str) -> Sequence[object]:
    """
    :returns: an array field.
    :raises VectorMismatch: if the field is missing or not an array.
    """
    value = _get(case, name)
    if not isinstance(value, list):
        raise VectorMismatch(f"field {name!r} is not an array")
    return value


def expect_equal(what: str, got: object, want: object) -> None:
    """
    :raises VectorMismatch: naming ``what`` if ``got != want`` (bytes shown in hex).
    """
    if got != want:
        shown_got = got.hex() if isinstance(got, bytes) else repr(got)
        shown_want = want.hex() if isinstance(want, bytes) else repr(want)
        raise VectorMismatch(f"{what}: got {shown_got}, want {shown_want}")

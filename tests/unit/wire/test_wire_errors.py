"""
The error hierarchy is the one drawn in ``errors.py``'s docstring, and all of it is exported.
"""

from __future__ import annotations

import re

from townsquare import wire
from townsquare.wire import errors


def _drawn_tree() -> dict[str, str | None]:
    # Each line of the drawing is "<prefix><Name>  comment"; the prefix's
    # length gives the depth, and a name's parent is the last name drawn one
    # level up.
    assert errors.__doc__ is not None
    parents: dict[str, str | None] = {}
    stack: list[tuple[int, str]] = []
    for line in errors.__doc__.splitlines():
        match = re.match(r"^(\s*(?:[│├└─ ]*))([A-Z]\w+)(?:\s|$)", line)
        if match is None or not line.startswith("    "):
            continue
        depth, name = len(match.group(1)), match.group(2)
        while stack and stack[-1][0] >= depth:
            stack.pop()
        parents[name] = stack[-1][1] if stack else None
        stack.append((depth, name))
    return parents


def test_docstring_draws_the_real_hierarchy() -> None:
    classes = {
        name: cls
        for name, cls in vars(errors).items()
        if isinstance(cls, type) and issubclass(cls, errors.WireError)
    }
    drawn = _drawn_tree()
    assert set(drawn) == set(classes)
    for name, parent in drawn.items():
        bases = classes[name].__bases__
        assert bases == ((classes[parent],) if parent else (Exception,)), name


def test_every_error_is_exported() -> None:
    for name, cls in vars(errors).items():
        if isinstance(cls, type) and issubclass(cls, errors.WireError):
            assert getattr(wire, name) is cls
            assert name in wire.__all__


def test_usage_errors_are_not_decode_errors() -> None:
    assert not issubclass(wire.UsageError, wire.DecodeError)
    assert issubclass(wire.UnknownKind, wire.NotUnderstood)
    assert not issubclass(wire.UnknownKind, wire.InvalidMessage)


def test_invalid_field_errors_carry_their_field() -> None:
    error = wire.TooLong("avatar.key", "too long")
    assert error.field == "avatar.key"
    assert error.detail == "too long"
    assert str(error) == "avatar.key: too long"


def test_all_lists_every_public_name() -> None:
    public = {name for name in vars(wire) if not name.startswith("_")}
    modules = {"codec", "errors", "fields", "messages", "annotations"}
    assert set(wire.__all__) == public - modules

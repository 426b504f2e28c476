"""
Regression tests for the inputs the fuzzer found: ``fuzz/crashers/<target>/*.hex``.

Each file is an input that once made a decoder raise something other than
its typed errors (or broke the round trip). Each must now be accepted, or
rejected with one of the target's allowed errors.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

# `fuzz` is a folder at the repository root, not an installed package.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from fuzz.harness import read_input
from fuzz.targets import TARGETS

CRASHERS = Path(__file__).resolve().parents[2] / "fuzz" / "crashers"
CASES = sorted(CRASHERS.glob("*/*.hex"))


def test_every_crasher_names_a_target() -> None:
    assert CRASHERS.is_dir()
    for path in CASES:
        assert path.parent.name in TARGETS, f"{path}: folder is not a target name"
        read_input(path)


@pytest.mark.parametrize("path", CASES, ids=[f"{p.parent.name}/{p.stem}" for p in CASES])
def test_crasher_raises_only_typed_errors(path: Path) -> None:
    # Target.run returns for accepted and typed-rejected inputs; anything
    # else propagates and fails the test with the decoder's own traceback.
    TARGETS[path.parent.name].run(read_input(path))

"""
The bounded fuzzing run: every target of ``fuzz/`` under the coverage-guided fuzzer, briefly.

Each target decodes arbitrary bytes and may raise only its typed errors
(``DecodeError`` subclasses; ``TreeError`` subclasses too for the ratchet tree);
whatever decodes must re-encode to the same bytes. In CI (``CI=true``) the
targets share 45 s of fuzzing (about a minute with each worker's start-up);
elsewhere each gets two seconds.
``TOWNSQUARE_FUZZ_SECONDS`` sets the seconds per target instead. Longer runs:
``python fuzz/run.py`` (see ``fuzz/README.md``).

atheris (libFuzzer) is the engine. Where it has no wheel (anything but
x86-64 Linux on CPython 3.11-3.13) the pure-Python engine of
``fuzz/engine.py`` stands in, except in CI, where atheris is required.
A planted bug (``fuzz/canary.py``) checks that each engine reports what escapes.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

# `fuzz` is a folder at the repository root, not an installed package.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from fuzz.canary import TARGET as CANARY
from fuzz.run import atheris_available, describe, fuzz_target
from fuzz.seeds import SeedSource, load_seed_source, write_corpus
from fuzz.targets import TARGETS

IN_CI = os.environ.get("CI") == "true"
CI_TOTAL_SECONDS = 45.0
LOCAL_SECONDS = 2.0


def _seconds_per_target() -> float:
    override = os.environ.get("TOWNSQUARE_FUZZ_SECONDS")
    if override:
        return float(override)
    return CI_TOTAL_SECONDS / len(TARGETS) if IN_CI else LOCAL_SECONDS


def _engine() -> str:
    if atheris_available():
        return "atheris"
    if IN_CI:
        pytest.fail(
            "atheris is not installed: CI must fuzz with coverage from libFuzzer "
            "(pip install -e '.[test]' installs it on x86-64 Linux, CPython 3.11-3.13)"
        )
    return "python"


@pytest.fixture(scope="module")
def seed_source() -> SeedSource:
    return load_seed_source()


@pytest.mark.slow
@pytest.mark.parametrize("name", list(TARGETS))
def test_fuzzing_target_raises_only_typed_errors(
    name: str, seed_source: SeedSource, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = TARGETS[name]
    seed_dir = tmp_path / "seeds"
    seeds = write_corpus(target.seeds(seed_source), seed_dir)
    assert seeds > 0, f"no seeds for {name}: are tests/vectors/mls/*.json present?"

    result = fuzz_target(
        target,
        engine=_engine(),
        seconds=_seconds_per_target(),
        seed_dir=seed_dir,
        corpus_dir=tmp_path / "corpus",
        artifacts=tmp_path / "artifacts",
        # A fixed seed, as the Hypothesis profiles derandomize: a failure
        # reruns the same way (up to where the time budget ends).
        seed=1,
        timeout=10,
        max_len=0,
        verbose=False,
    )
    with capsys.disabled():
        sys.stdout.write(f"\n[fuzz] {seeds} seeds; {result.summary()}\n")

    assert result.finding is None, describe(result.finding)
    assert result.runs > 0
    assert result.coverage is not None


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["atheris", "python"])
def test_an_escaping_exception_is_reported(engine: str, tmp_path: Path) -> None:
    if engine == "atheris" and not atheris_available():
        if IN_CI:
            pytest.fail("atheris is not installed")
        pytest.skip("atheris has no wheel for this platform")
    seed_dir = tmp_path / "seeds"
    write_corpus([b"\x00"], seed_dir)

    result = fuzz_target(
        CANARY,
        spec="fuzz.canary:TARGET",
        engine=engine,
        seconds=30,
        seed_dir=seed_dir,
        corpus_dir=tmp_path / "corpus",
        artifacts=tmp_path / "artifacts",
        seed=1,
        timeout=10,
        max_len=0,
        verbose=False,
    )

    assert result.finding is not None, result.summary()
    assert result.finding.kind == "crash"
    assert "IndexError: planted: varint 63" in result.finding.details
    assert result.finding.input_hex is not None
    assert result.finding.input_hex.startswith("3f")

"""
Every case of the IETF MLS interop vectors, one test id per entry (``<file>[<index>]-suite<n>``).

The files come from ``tests/vectors/mls/`` or ``$MLS_TEST_VECTORS``: every
kind FORMAT.md describes. ``passive-client-random.json`` is not in the shared
folder; it is kept in ``tests/vectors/mls-extra/`` (see its README), and runs
here too, as it does when dropped into the vector folder.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from townsquare.mls.testvectors import (
    VectorCase,
    default_vector_dir,
    load_checker,
    load_file,
    vector_files,
)

CORE_KINDS = (
    "tree-math",
    "crypto-basics",
    "secret-tree",
    "message-protection",
    "key-schedule",
    "psk_secret",
    "transcript-hashes",
    "welcome",
    "tree-operations",
    "tree-validation",
    "treekem",
    "messages",
    "deserialization",
    "passive-client-welcome",
    "passive-client-handling-commit",
)

EXTRA_DIR = Path(__file__).parent.parent / "vectors" / "mls-extra"

VECTOR_DIR = default_vector_dir()


def _core_cases() -> list[VectorCase]:
    cases: list[VectorCase] = []
    for kind in CORE_KINDS:
        path = VECTOR_DIR / f"{kind}.json"
        cases.extend(load_file(path))
    extra = [VECTOR_DIR / "passive-client-random.json"]
    if EXTRA_DIR.is_dir():
        extra.extend(vector_files(EXTRA_DIR))
    for path in extra:
        if path.exists():
            cases.extend(load_file(path))
    return cases


CASES = _core_cases()


def test_every_core_kind_is_present() -> None:
    present = {p.stem for p in vector_files(VECTOR_DIR)}
    assert set(CORE_KINDS) <= present
    assert CASES, "no vector cases were loaded"


@pytest.mark.vectors
@pytest.mark.parametrize("case", CASES, ids=[c.case_id for c in CASES])
def test_vector(case: VectorCase) -> None:
    load_checker(case.kind)(case.data)


@pytest.mark.vectors
def test_runner_passes_the_core_kinds(tmp_path: Path) -> None:
    """
    The command-line runner on a folder of the vector files: 0 failed, exit 0.
    """
    for kind in CORE_KINDS:
        (tmp_path / f"{kind}.json").symlink_to(VECTOR_DIR / f"{kind}.json")
    result = subprocess.run(
        [sys.executable, "-m", "townsquare.mls.testvectors", str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
    )
    lines = result.stdout.strip().splitlines()
    assert result.returncode == 0, result.stdout
    per_file = [line for line in lines if line.endswith(" failed") and ".json:" in line]
    assert len(per_file) == len(CORE_KINDS)
    assert all(line.endswith(", 0 failed") for line in per_file)
    core = sum(1 for case in CASES if case.file in {f"{kind}.json" for kind in CORE_KINDS})
    assert lines[-1] == f"{core} passed, 0 failed"


def test_runner_recognises_passive_client_files_by_content(tmp_path: Path) -> None:
    """
    A passive-client file under another name (as passive-client-random may be) is run.
    """
    (tmp_path / "tree-math.json").symlink_to(VECTOR_DIR / "tree-math.json")
    (tmp_path / "some-scenarios.json").symlink_to(VECTOR_DIR / "passive-client-welcome.json")
    (tmp_path / "notes.json").write_text('{"not": "vectors"}')
    result = subprocess.run(
        [sys.executable, "-m", "townsquare.mls.testvectors", str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout
    assert "some-scenarios.json: 56 passed, 0 failed" in result.stdout
    assert "tree-math.json: 10 passed, 0 failed" in result.stdout
    assert "notes.json" not in result.stdout


def test_runner_fails_on_an_empty_folder(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "townsquare.mls.testvectors", str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2

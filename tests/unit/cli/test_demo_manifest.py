"""
``county.json``: what ``townsquare demo --data DIR`` seeded, read back to resume it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from townsquare.cli.demo_bots import DemoError, SeededVillage, read_manifest, write_manifest

WANG = SeededVillage(
    key="wang", group_id=b"\x01" * 16, folder="wang-1a2b3c", names=("王建国", "王秀英", "刘大爷")
)
LI = SeededVillage(key="li", group_id=b"\xfe" * 16, folder="li-00ff00", names=("李德明",))


def test_a_manifest_reads_back_as_written(tmp_path: Path) -> None:
    path = tmp_path / "county.json"
    write_manifest(path, {"wang": WANG, "li": LI})
    assert read_manifest(path) == {"wang": WANG, "li": LI}
    assert "王建国" in path.read_text(encoding="utf-8")  # UTF-8 as is, for people who look
    assert not path.with_suffix(".partial").exists()


def test_writing_again_replaces_the_manifest(tmp_path: Path) -> None:
    path = tmp_path / "county.json"
    write_manifest(path, {"wang": WANG})
    write_manifest(path, {"wang": WANG, "li": LI})
    assert set(read_manifest(path)) == {"wang", "li"}


def test_no_manifest_means_nothing_seeded(tmp_path: Path) -> None:
    assert read_manifest(tmp_path / "county.json") == {}


def _entry(**changes: object) -> dict[str, object]:
    entry: dict[str, object] = {
        "group_id": "AQEBAQEBAQEBAQEBAQEBAQ",
        "folder": "wang-1",
        "names": ["a"],
    }
    entry.update(changes)
    return entry


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ("not json", "not a demo manifest"),
        ("[]", "not a demo manifest"),
        (json.dumps({"version": 2, "villages": {}}), "another version"),
        (json.dumps({"version": 1}), "not a demo manifest"),
        (json.dumps({"version": 1, "villages": {"wang": _entry(group_id="!!")}}), "manifest"),
        (json.dumps({"version": 1, "villages": {"wang": _entry(names=[])}}), "has no bots"),
        (json.dumps({"version": 1, "villages": {"wang": _entry(names="王建国")}}), "has no bots"),
        (json.dumps({"version": 1, "villages": {"wang": _entry(names=[3])}}), "has no bots"),
        (json.dumps({"version": 1, "villages": {"wang": _entry(folder="../up")}}), "outside"),
        (json.dumps({"version": 1, "villages": {"wang": _entry(folder="..")}}), "outside"),
        (json.dumps({"version": 1, "villages": {"wang": _entry(folder="")}}), "outside"),
        (json.dumps({"version": 1, "villages": {"wang": _entry(folder=7)}}), "outside"),
        (json.dumps({"version": 1, "villages": {"wang": _entry(group_id=None)}}), "manifest"),
    ],
)
def test_a_bad_manifest_is_refused_and_left_as_it_is(
    tmp_path: Path, document: str, message: str
) -> None:
    path = tmp_path / "county.json"
    path.write_text(document, encoding="utf-8")
    with pytest.raises(DemoError, match=message):
        read_manifest(path)
    assert path.read_text(encoding="utf-8") == document

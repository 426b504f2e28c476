"""
``townsquare demo``'s options: a bad one is a usage error (status 2); nothing starts or is made.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from townsquare.cli import main


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--villages", "0"], "--villages is 1 to 5, not 0"),
        (["--villages", "6"], "--villages is 1 to 5, not 6"),
        (["--post-every", "0.5"], "--post-every is at least 1 s, not 0.5"),
        (["--post-every", "nan"], "--post-every is at least 1 s, not nan"),
        (["--post-every", "inf"], "--post-every is at least 1 s, not inf"),
        (["--port", "-1"], "--port is 0 to 65535, not -1"),
        (["--port", "65536"], "--port is 0 to 65535, not 65536"),
    ],
)
def test_a_bad_option_is_a_usage_error_and_creates_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], options: list[str], message: str
) -> None:
    data = tmp_path / "data"
    assert main(["demo", "--data", str(data), *options]) == 2
    assert capsys.readouterr().err == f"townsquare: error: {message}\n"
    assert not data.exists()


def test_a_data_folder_that_is_a_file_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    data.write_text("not a folder", encoding="utf-8")
    assert main(["demo", "--data", str(data)]) == 2
    assert "is not a folder" in capsys.readouterr().err
    assert data.read_text(encoding="utf-8") == "not a folder"


def test_demo_is_listed_in_the_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "demo" in capsys.readouterr().out

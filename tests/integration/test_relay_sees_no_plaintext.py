"""
Nothing readable on the relay.

Three CLI profiles hold a conversation through the real ``townsquare serve``:
distinctive display names in Chinese and English, a group with a distinctive
title, messages in both languages (one over 100 characters), a remove and a
leave. Then the relay is stopped, so its WAL and log are flushed, and every
file under its data folder, every cell of every SQLite database there, and its
captured output are searched for each word sent, each display name and the
title: as UTF-8, UTF-16, JSON ``\\u`` escapes, and base64/base64url of the
UTF-8 at every alignment. None may be found. Positive controls (the group's id
is found in the database and the log, the group's log holds more rows than
messages sent) keep an empty or unreadable scan from passing.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from townsquare import auth
from townsquare.server.storage import DATABASE_FILE_NAME

pytestmark = pytest.mark.integration

COMMAND_TIMEOUT_SECONDS = 60.0
SQLITE_HEADER = b"SQLite format 3\x00"
FRAGMENT_CHARS = 20

WANG = "王阿姨-7Q4"
LI = "Farmer Li Zk9"
BOB = "Bob Qv8 老刘"
TITLE = "河口村水污染-K2"
LONG_CHINESE = (
    "村民代表会议决定：明天早上七点在河口集合，带上取样瓶、手套和相机，"
    "记录排污口的位置和时间，拍下泡沫和死鱼，然后一起去镇政府环保办反映情况，"
    "请大家互相转告，不要单独行动，也不要和工厂保安发生冲突，有问题先打电话给村主任商量-L3c"
)
LONG_ENGLISH = (
    "The county lab says the samples from the east ditch show ammonia at four times "
    "the limit, so we should ask for a second test before the meeting W7x"
)


class Profile:
    """One home folder, driven through ``python -m townsquare.cli --home DIR ...``."""

    def __init__(self, home: Path) -> None:
        self.home = home

    def run(self, *args: str, status: int = 0) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [sys.executable, "-m", "townsquare.cli", "--home", str(self.home), *args],
            capture_output=True,
            text=True,
            encoding="utf-8",
            timeout=COMMAND_TIMEOUT_SECONDS,
            env={**os.environ, "PYTHONIOENCODING": "utf-8"},
            check=False,
        )
        assert result.returncode == status, (args, result.returncode, result.stdout, result.stderr)
        assert "Traceback" not in result.stderr, result.stderr
        return result

    def json(self, *args: str) -> Any:
        return json.loads(self.run(*args, "--json").stdout)

    def texts(self, group: str) -> list[tuple[str, str]]:
        return [(m["sender_name"], m["text"]) for m in self.json("messages", group)]


def profiles(base: Path, relay: str, *names: str) -> list[Profile]:
    out = []
    for index, name in enumerate(names):
        profile = Profile(base / f"home{index}")
        assert profile.json("init", "--relay", relay, "--name", name)["registered"] is True
        out.append(profile)
    return out


# -- Searching ---------------------------------------------------------------------------


def base64_cores(data: bytes) -> set[bytes]:
    """
    The parts of ``data``'s base64 and base64url that appear whatever surrounds it.

    Encoded inside a longer body, ``data`` may start at any offset modulo 3; for
    each, the characters that mix in neighbouring bytes (the first and last
    quantum) are dropped.
    """
    cores = set()
    for offset in range(3):
        encoded = base64.b64encode(b"\x00" * offset + data).rstrip(b"=")
        core = encoded[4 if offset else 0 :]
        core = core[: len(core) - len(core) % 4]  # A partial last quantum mixes in what follows.
        if len(core) >= 8:
            cores.add(core)
            cores.add(core.replace(b"+", b"-").replace(b"/", b"_"))
    return cores


def encodings(text: str) -> dict[str, bytes]:
    """Every form in which the relay might hold ``text``, by name."""
    utf8 = text.encode("utf-8")
    escaped = json.dumps(text, ensure_ascii=True)[1:-1]
    forms = {
        "utf-8": utf8,
        "utf-16-le": text.encode("utf-16-le"),
        "utf-16-be": text.encode("utf-16-be"),
        "json": escaped.encode("ascii"),
        "JSON": re.sub(r"\\u[0-9a-f]{4}", lambda m: m[0].upper().replace("U", "u"), escaped).encode(
            "ascii"
        ),
    }
    for index, core in enumerate(sorted(base64_cores(utf8))):
        forms[f"base64[{index}]"] = core
    return forms


def secrets_and_fragments(secrets: list[str]) -> list[str]:
    """The secrets, and overlapping fragments of the long ones (a truncated copy leaks too)."""
    out = list(secrets)
    for secret in secrets:
        if len(secret) > 2 * FRAGMENT_CHARS:
            step = FRAGMENT_CHARS // 2
            out += [
                secret[start : start + FRAGMENT_CHARS]
                for start in range(0, len(secret) - FRAGMENT_CHARS + 1, step)
            ]
    return out


def needles(texts: list[str]) -> list[tuple[str, str, bytes]]:
    return [
        (text, form, data)
        for text in secrets_and_fragments(texts)
        for form, data in encodings(text).items()
    ]


def find(
    haystack: bytes, where: str, wanted: list[tuple[str, str, bytes]]
) -> list[tuple[str, str, str, int]]:
    return [
        (where, text, form, haystack.find(data)) for text, form, data in wanted if data in haystack
    ]


def cells(database: Path) -> Iterator[tuple[str, bytes]]:
    """Every TEXT and BLOB cell of every table, with where it is."""
    uri = f"file:{database}?mode=ro"
    with contextlib.closing(sqlite3.connect(uri, uri=True)) as connection:
        tables = [
            row[0]
            for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        ]
        for table in tables:
            # Some tables are WITHOUT ROWID: rows are named by their place in the scan.
            cursor = connection.execute(f'SELECT * FROM "{table}"')  # noqa: S608
            columns = [d[0] for d in cursor.description]
            for number, row in enumerate(cursor):
                for column, value in zip(columns, row, strict=True):
                    where = f"{database.name}:{table}[{number}].{column}"
                    if isinstance(value, str):
                        yield where, value.encode("utf-8")
                    elif isinstance(value, bytes):
                        yield where, value


def scan(
    files: list[Path], databases: list[Path], wanted: list[tuple[str, str, bytes]]
) -> list[tuple[str, str, str, int]]:
    found = []
    for path in files:
        found += find(path.read_bytes(), str(path), wanted)
    for database in databases:
        for where, value in cells(database):
            found += find(value, where, wanted)
    return found


# -- The test ----------------------------------------------------------------------------


def test_nothing_readable_on_the_relay(relay_without_housekeeping: Any, tmp_path: Path) -> None:
    # Retention would delete the read log mid-test, and the positive control below
    # counts its rows: this relay's housekeeping waits.
    relay = relay_without_housekeeping
    homes = tmp_path / "homes"  # Outside the relay's data folder, which is tmp_path / "data".
    wang, li, bob = profiles(homes, relay.url, WANG, LI, BOB)
    group = wang.json("group", "create", TITLE)["group_id"]
    link = wang.json("invite", group)["link"]
    for profile in (li, bob):
        assert profile.json("join", link)["state"] == "joined"
    for profile in (wang, li, bob):
        profile.run("sync")
    assert {m["name"] for m in wang.json("members", group)} == {WANG, LI, BOB}

    said = [
        (wang, "上游工厂又在夜里排污了-M1a"),
        (li, "I saw grey foam near the old mill M2b"),
        (bob, LONG_CHINESE),
        (li, LONG_ENGLISH),
        (wang, "鱼塘里的鱼全死了 dead fish everywhere Q9z"),
    ]
    for profile, text in said:
        assert profile.json("send", group, text)["state"] == "sent"
    for profile in (wang, li, bob):
        profile.run("sync")
    name_of = {wang: WANG, li: LI, bob: BOB}
    expected = [(name_of[p], text) for p, text in said]
    assert wang.texts(group) == expected

    # Remove Bob; then Li leaves.
    bob_id = next(m["id"] for m in wang.json("members", group) if m["name"] == BOB)
    wang.run("remove", group, bob_id)
    after_remove = [(wang, "老刘被移出群了 R4d-hidden"), (li, "understood, carry on T6y")]
    wang.json("send", group, after_remove[0][1])
    li.run("sync")
    li.json("send", group, after_remove[1][1])
    assert "Removed from group" in bob.run("sync").stdout
    assert "Leaving" in li.run("leave", group).stdout
    wang.run("sync")
    assert "Left group" in li.run("sync").stdout
    last = "李走了以后的最后一句 after Farmer Li left V2k"
    wang.json("send", group, last)
    wang.run("sync")
    sent = [*said, *after_remove, (wang, last)]
    assert wang.texts(group) == [*expected, *((name_of[p], t) for p, t in sent[len(said) :])]
    assert [m["name"] for m in wang.json("members", group)] == [WANG]

    # The data folder as it is while the relay runs, WAL frames not yet checkpointed.
    live = {
        f"{path} (while running)": path.read_bytes()
        for path in sorted(relay.data_dir.rglob("*"))
        if path.is_file()
    }
    assert f"{relay.data_dir / DATABASE_FILE_NAME} (while running)" in live, list(live)

    # Stop the relay: the WAL is checkpointed and the log closed before the search.
    # A graceful stop ends with uvicorn re-raising the SIGTERM it caught.
    assert relay.stop() in {0, -signal.SIGTERM}
    assert "Application shutdown complete" in relay.log()

    files = sorted(p for p in relay.data_dir.rglob("*") if p.is_file())
    outputs = sorted(p for p in relay.log_path.parent.glob("*.log") if p.is_file())
    assert relay.log_path in outputs
    databases = [p for p in files if p.read_bytes()[: len(SQLITE_HEADER)] == SQLITE_HEADER]
    database = relay.data_dir / DATABASE_FILE_NAME
    assert database in databases, files

    # The scan reads something real: the group's log is there, and its id is found
    # by the same search, in the database (raw and cell by cell) and in the output.
    group_id = auth.decode_b64u(group)
    uri = f"file:{database}?mode=ro"
    with contextlib.closing(sqlite3.connect(uri, uri=True)) as connection:
        (rows,) = connection.execute(
            "SELECT count(*) FROM group_log WHERE group_id = ?", (group_id,)
        ).fetchone()
    assert rows > len(sent), rows
    control = [("group id", "raw", group_id), ("group id", "b64u", group.encode("ascii"))]
    seen = {where for where, *_ in scan(files + outputs, databases, control)}
    assert str(database) in seen, seen
    assert any(where.startswith(f"{DATABASE_FILE_NAME}:group_log[") for where in seen), seen
    assert str(relay.log_path) in seen, relay.log()

    secrets = [WANG, LI, BOB, TITLE, *(text for _, text in sent)]
    assert len(LONG_CHINESE) > 100
    assert len(LONG_ENGLISH) > 100
    wanted = needles(secrets)
    found = scan(files + outputs, databases, wanted)
    for where, data in live.items():
        found += find(data, where, wanted)
    report = "\n".join(
        f"{where} @ {offset}: {form} of {text!r}" for where, text, form, offset in found
    )
    assert not found, f"plaintext on the relay:\n{report}"

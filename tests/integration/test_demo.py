"""
``townsquare demo`` as a person meets it: a newcomer joins a living village with the CLI.

The demo runs as a subprocess (``python -m townsquare.cli demo``: its own
relay on a free port, two villages of bots posting every second); the test
reads the URL and the invite links it prints, then, as a newcomer with its
own home folder, runs ``init``, ``join LINK``, ``sync`` and ``messages
--json`` exactly as the printed hint says. It checks that the bots are
members with names, that their posts keep coming, that the village head
greets the newcomer by name and that each of the newcomer's messages gets
one answer; then SIGTERM stops the demo, which exits 0 and removes its
temporary folder.

Waiting for the bots is polling with a deadline (they run in another
process); nothing here asserts how long anything takes.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

pytestmark = pytest.mark.integration

START_TIMEOUT_SECONDS = 60.0
WAIT_TIMEOUT_SECONDS = 30.0
STOP_TIMEOUT_SECONDS = 15.0
COMMAND_TIMEOUT_SECONDS = 60.0
READY_LINE = "Ctrl-C stops the demo."
_T = TypeVar("_T")


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONIOENCODING": "utf-8"}


@dataclass
class Demo:
    """The ``townsquare demo`` subprocess and the files its output goes to."""

    process: subprocess.Popen[bytes]
    out_path: Path
    err_path: Path

    def out(self) -> str:
        return self.out_path.read_text(encoding="utf-8", errors="replace")

    def err(self) -> str:
        return self.err_path.read_text(encoding="utf-8", errors="replace")

    def wait_ready(self) -> str:
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while READY_LINE not in (text := self.out()):
            if self.process.poll() is not None:
                pytest.fail(f"the demo exited with {self.process.returncode}:\n{self.err()}")
            if time.monotonic() > deadline:
                pytest.fail(f"the demo did not come up:\n{text}\n{self.err()}")
            time.sleep(0.1)
        return text


@pytest.fixture
def start_demo(tmp_path: Path) -> Iterator[Callable[..., Demo]]:
    """Starts ``townsquare demo --port 0 --post-every 1`` with more options; stops what is left."""
    started: list[Demo] = []

    def start(*options: str) -> Demo:
        run = len(started)
        out_path, err_path = tmp_path / f"demo{run}.out", tmp_path / f"demo{run}.err"
        # Output goes to files, not pipes: the demo prints as its bots post, and a
        # pipe nobody reads would fill up and stall it.
        with out_path.open("wb") as out, err_path.open("wb") as err:
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "townsquare.cli",
                    "demo",
                    "--port",
                    "0",
                    "--post-every",
                    "1",
                    *options,
                ],
                stdout=out,
                stderr=err,
                env=_env(),
                cwd=tmp_path,
            )
        started.append(Demo(process=process, out_path=out_path, err_path=err_path))
        return started[-1]

    try:
        yield start
    finally:
        for demo in started:
            if demo.process.poll() is None:
                # SIGTERM first, so that a failed test leaves no temporary folder behind.
                demo.process.terminate()
                try:
                    demo.process.wait(timeout=STOP_TIMEOUT_SECONDS)
                except subprocess.TimeoutExpired:
                    demo.process.kill()
                    demo.process.wait(timeout=STOP_TIMEOUT_SECONDS)


class Newcomer:
    """A person at the CLI: ``python -m townsquare.cli --home DIR ...``."""

    def __init__(self, home: Path) -> None:
        self.home = home

    def run(self, *args: str) -> str:
        result = subprocess.run(
            [sys.executable, "-m", "townsquare.cli", "--home", str(self.home), *args],
            capture_output=True,
            text=True,
            encoding="utf-8",
            timeout=COMMAND_TIMEOUT_SECONDS,
            env=_env(),
            check=False,
        )
        assert result.returncode == 0, (args, result.stdout, result.stderr)
        assert "Traceback" not in result.stderr, result.stderr
        return result.stdout

    def json(self, *args: str) -> Any:
        return json.loads(self.run(*args, "--json"))

    def synced_messages(self, group: str) -> list[dict[str, Any]]:
        self.run("sync")
        messages: list[dict[str, Any]] = self.json("messages", group)
        return messages


def eventually(probe: Callable[[], _T | None], what: str) -> _T:
    """Ask ``probe`` until it answers (not ``None``), for at most the wait timeout."""
    deadline = time.monotonic() + WAIT_TIMEOUT_SECONDS
    while (answer := probe()) is None:
        if time.monotonic() > deadline:
            pytest.fail(f"never saw {what}")
        time.sleep(0.3)
    return answer


@dataclass(frozen=True)
class Village:
    title: str
    names: tuple[str, ...]
    group: str
    link: str


def parse_banner(text: str) -> tuple[str, Path, list[Village]]:
    url = re.search(r"^Relay: (http://127\.0\.0\.1:\d+)$", text, re.MULTILINE)
    data = re.search(r"data in (.+) \((?:removed at exit|kept)\)\.$", text, re.MULTILINE)
    villages = re.findall(
        r"^(\S+ .+?)  \(\d+ members: (.+)\)\n  group:  (\S+)\n  invite: (\S+)$",
        text,
        re.MULTILINE,
    )
    assert url is not None, text
    assert data is not None, text
    return (
        url[1],
        Path(data[1]),
        [
            Village(title, tuple(names.split(", ")), group, link)
            for title, names, group, link in villages
        ],
    )


def test_a_newcomer_joins_a_living_village_and_is_greeted_and_answered(
    start_demo: Callable[..., Demo], tmp_path: Path
) -> None:
    demo = start_demo("--villages", "2")
    text = demo.wait_ready()
    assert "(removed at exit)" in text
    url, data_dir, villages = parse_banner(text)
    assert data_dir.is_dir()
    assert [v.title for v in villages] == ["王家村 Wang Village", "李庄 Li Hamlet"]
    for village in villages:
        assert village.link.startswith(f"{url}/j/{village.group}#")
        assert 3 <= len(village.names) <= 5
    assert f"--relay {url} --name YOU" in demo.out()
    wang = villages[0]
    group = wang.group

    alice = Newcomer(tmp_path / "alice")
    assert alice.json("init", "--relay", url, "--name", "Alice")["registered"] is True
    assert alice.json("join", wang.link) == {"group_id": group, "state": "joined"}

    # The bots are members, each under its name; the group has its title; the head
    # greets the newcomer by name. All three are messages the members send after
    # the join (the newcomer cannot read what came before it), so one poll waits.
    greeting = "欢迎 Alice 来到王家村！有事在群里说就行。/ Welcome to Wang Village, Alice!"

    def welcomed() -> dict[str, Any] | None:
        messages = alice.synced_messages(group)
        welcome = next((m for m in messages if (m["text"] or "").startswith(greeting)), None)
        names = {m["name"] for m in alice.json("members", group) if not m["self"]}
        if welcome is None or names != set(wang.names):
            return None
        first_seen.extend(messages)
        return welcome

    first_seen: list[dict[str, Any]] = []
    assert eventually(welcomed, "the greeting and the bots' names")["sender_name"] == wang.names[0]
    assert alice.json("groups")[0]["title"] == wang.title

    def bot_texts(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [m for m in messages if not m["own"] and m["type"] == "text"]

    # Each of the newcomer's messages gets one answer: a question, then thanks.
    def answer_to(text: str) -> Callable[[], dict[str, Any] | None]:
        def probe() -> dict[str, Any] | None:
            replies = [m for m in alice.synced_messages(group) if m["type"] == "reply"]
            return next((m for m in replies if text in m["text"]), None)

        return probe

    assert alice.json("send", group, "请问明天几点开会？")["state"] == "sent"
    question = eventually(
        answer_to("Good question, Alice, let's discuss it at Friday's meeting."), "the answer"
    )
    assert question["sender_name"] in wang.names
    assert question["text"].startswith("Alice，好问题")
    assert alice.json("send", group, "谢谢大家")["state"] == "sent"
    thanks = eventually(answer_to("收到，谢谢Alice！/ Got it, thanks Alice!"), "the thanks")
    assert thanks["sender_name"] in wang.names

    # Bots go on posting after the answers; still one greeting and one answer each.
    last = thanks["seq"]

    def three_more_posts() -> list[dict[str, Any]] | None:
        messages = alice.synced_messages(group)
        later = [m for m in bot_texts(messages) if m["seq"] > last]
        return messages if len(later) >= 3 else None

    messages = eventually(three_more_posts, "bot posts after the answers")
    # Posts kept coming: this later sync shows more of them than the first one did.
    assert len(bot_texts(messages)) > len(bot_texts(first_seen))
    assert sum((m["text"] or "").startswith(greeting) for m in messages) == 1
    replies = [m["text"] for m in messages if m["type"] == "reply"]
    assert len(replies) == 2, replies
    assert {m["sender_name"] for m in bot_texts(messages)} <= set(wang.names)

    # SIGTERM: the demo stops cleanly, with status 0, and removes its folder.
    demo.process.send_signal(signal.SIGTERM)
    assert demo.process.wait(timeout=STOP_TIMEOUT_SECONDS) == 0, demo.err()
    assert "Traceback" not in demo.err(), demo.err()
    assert not data_dir.exists()


def test_a_demo_with_a_data_folder_resumes_its_villages(
    start_demo: Callable[..., Demo], tmp_path: Path
) -> None:
    data = tmp_path / "county"
    first = start_demo("--data", str(data), "--villages", "1")
    _, data_dir, (village,) = parse_banner(first.wait_ready())
    assert data_dir == data
    first.process.send_signal(signal.SIGTERM)
    assert first.process.wait(timeout=STOP_TIMEOUT_SECONDS) == 0, first.err()
    assert (data / "demo-bots" / "county.json").is_file()

    # Again on the same folder, with one more village: the first is the same group,
    # with the same bots (no new devices), and a new link; the second is seeded.
    second = start_demo("--data", str(data), "--villages", "2")
    url, _, (again, added) = parse_banner(second.wait_ready())
    assert (again.group, again.names) == (village.group, village.names)
    assert again.link.startswith(f"{url}/j/{village.group}#")
    assert again.link != village.link
    assert added.title == "李庄 Li Hamlet"
    bot_homes = sorted(p.parent.name for p in (data / "demo-bots").glob("*/*/*.sqlite3"))
    assert len(bot_homes) == len(again.names) + len(added.names), bot_homes

    newcomer = Newcomer(tmp_path / "bob")
    newcomer.json("init", "--relay", url, "--name", "Bob")
    assert newcomer.json("join", again.link) == {"group_id": again.group, "state": "joined"}
    # The resumed head hears of the join (its push channel and its events) and greets.
    eventually(
        lambda: next(
            (
                m
                for m in newcomer.synced_messages(again.group)
                if (m["text"] or "").startswith("欢迎 Bob 来到王家村")
            ),
            None,
        ),
        "the resumed head's greeting",
    )
    second.process.send_signal(signal.SIGINT)  # Ctrl-C stops it as cleanly as SIGTERM.
    assert second.process.wait(timeout=STOP_TIMEOUT_SECONDS) == 0, second.err()
    assert "Traceback" not in first.err() + second.err()
    assert data.is_dir()

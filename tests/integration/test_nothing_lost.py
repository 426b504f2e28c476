"""
Nothing lost: SIGKILL the relay, or a client at a failpoint, and every message still arrives once.

Real processes only: the relay is ``townsquare serve`` on SQLite, each
member a home folder driven by ``python -m townsquare.cli`` subprocesses.

- The relay is SIGKILLed while three members send from concurrent processes;
  more is sent while it is down (queued); it restarts on the same data
  folder and port; after ``sync`` every message that ``send`` accepted is in
  every member's store exactly once, in the same order, and in the relay's
  log exactly once.
- A client is SIGKILLed (``TOWNSQUARE_FAILPOINTS``, see
  ``townsquare.client.driver.failpoints``) (a) after ``send`` stored the
  outbox entry, before any request left; (b) after the relay stored the
  message, before the client saw the acknowledgement; (c) while storing a
  fetched page that holds a commit. Each test checks that the kill happened
  at that point (what the relay's log and the client's store hold right
  after it), then runs ``sync`` without the failpoint and checks
  exactly-once delivery everywhere.
- Several ``send`` processes at once over one home take turns (the store's
  lock): each message reaches the other member once.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from townsquare import auth
from townsquare.client.core.client import Client
from townsquare.client.driver import DATABASE_FILE_NAME as CLIENT_DATABASE
from townsquare.client.driver import SqliteClientStore
from townsquare.client.driver.failpoints import (
    AFTER_OUTBOX_SAVED,
    AFTER_SEND_RESPONSE,
    ENVIRONMENT_VARIABLE,
    WHILE_PROCESSING_COMMIT,
)
from townsquare.server.storage import DATABASE_FILE_NAME as RELAY_DATABASE

pytestmark = pytest.mark.integration

COMMAND_TIMEOUT_SECONDS = 90.0
# A send whose relay dies under it gives up after this long (its message stays queued).
SEND_TIMEOUT = "5"
KILLED = -signal.SIGKILL


class Profile:
    """One home folder, driven through ``python -m townsquare.cli --home DIR ...``."""

    def __init__(self, home: Path, name: str) -> None:
        self.home = home
        self.name = name
        self.account_key = ""
        self.device_key = ""

    def start(self, *args: str, failpoints: str | None = None) -> subprocess.Popen[str]:
        env = {**os.environ, "PYTHONIOENCODING": "utf-8"}
        env.pop(ENVIRONMENT_VARIABLE, None)
        if failpoints is not None:
            env[ENVIRONMENT_VARIABLE] = failpoints
        return subprocess.Popen(
            [sys.executable, "-m", "townsquare.cli", "--home", str(self.home), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            env=env,
        )

    @staticmethod
    def finish(process: subprocess.Popen[str], status: int = 0) -> str:
        """Wait for a started command; check its exit status; return its stdout."""
        try:
            stdout, stderr = process.communicate(timeout=COMMAND_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
            raise
        assert process.returncode == status, (process.args, process.returncode, stdout, stderr)
        assert "Traceback" not in stderr, stderr
        return stdout

    def run(self, *args: str, status: int = 0, failpoints: str | None = None) -> str:
        return self.finish(self.start(*args, failpoints=failpoints), status)

    def json(self, *args: str) -> Any:
        return json.loads(self.run(*args, "--json"))

    def killed_at(self, failpoint: str, *args: str) -> None:
        """Run a command that must die by SIGKILL at ``failpoint``, before printing anything."""
        assert self.run(*args, status=KILLED, failpoints=failpoint) == ""

    @contextlib.contextmanager
    def local(self) -> Iterator[Client]:
        """
        The SDK's core over this home's database, read in the test's process.

        It takes the home's lock as a command does (waiting for one that runs).
        """
        store = SqliteClientStore(self.home / CLIENT_DATABASE)
        try:
            yield Client(store, rng=secrets.token_bytes)
        finally:
            store.close()

    def queued(self, group: str) -> list[str]:
        with self.local() as client:
            return [auth.encode_b64u(m) for m in client.queued(auth.decode_b64u(group))]

    def state_of(self, group: str, message_id: str) -> str | None:
        with self.local() as client:
            return client.message_state(auth.decode_b64u(group), auth.decode_b64u(message_id))

    def member_names(self, group: str) -> set[str | None]:
        with self.local() as client:
            return {m.display_name for m in client.members(auth.decode_b64u(group))}

    def group_records(self, group: str) -> list[tuple[str, bytes]]:
        """Every record of the group's scope: its MLS state, cursor, outbox, messages."""
        store = SqliteClientStore(self.home / CLIENT_DATABASE)
        try:
            return store.group_records(auth.decode_b64u(group)).scan("")
        finally:
            store.close()


def in_parallel(*commands: tuple[Profile, tuple[str, ...]]) -> list[Any]:
    """Run each ``(profile, args)`` with ``--json``, all at the same time."""
    running = [profile.start(*args, "--json") for profile, args in commands]
    try:
        return [json.loads(Profile.finish(process)) for process in running]
    finally:
        # After a failure, the others are not left running with their pipes open.
        for process in running:
            if process.returncode is None:
                process.kill()
                process.communicate()


def profiles(base: Path, relay_url: str, *names: str) -> list[Profile]:
    out = [Profile(base / f"home{index}", name) for index, name in enumerate(names)]
    identities = in_parallel(*((p, ("init", "--relay", relay_url, "--name", p.name)) for p in out))
    for profile, identity in zip(out, identities, strict=True):
        assert identity["registered"] is True
        profile.account_key = identity["account_key"]
        profile.device_key = identity["device_key"]
    return out


def new_group(owner: Profile, title: str, *members: Profile) -> str:
    """``owner`` creates a group and adds ``members`` by account key; they join."""
    group: str = owner.json("group", "create", title)["group_id"]
    added = owner.json("add", group, *(m.account_key for m in members))
    assert added["state"] == "done"
    for member in members:
        assert group in member.json("sync")["joined"]
    return group


def relay_copies(relay: Any, message_id: str) -> int:
    """How many entries of the relay's log carry this client message id."""
    uri = f"file:{relay.data_dir / RELAY_DATABASE}?mode=ro"
    with contextlib.closing(sqlite3.connect(uri, uri=True)) as connection:
        row = connection.execute(
            "SELECT count(*) FROM group_log WHERE client_message_id = ?",
            (auth.decode_b64u(message_id),),
        ).fetchone()
    count: int = row[0]
    return count


def sync_all(*members: Profile) -> None:
    for member in members:
        answer = member.json("sync")
        assert answer["synced"] is True, member.name
        assert answer["queued"] == 0, member.name


Log = list[tuple[str, int, str, str]]


def logs_of(group: str, *members: Profile) -> list[Log]:
    """
    Each member's text messages as (id, seq, sender, text), in its order, from ``messages``.

    Each is checked to show once.
    """
    logs = []
    for member, messages in zip(
        members, in_parallel(*((m, ("messages", group)) for m in members)), strict=True
    ):
        ids = [m["id"] for m in messages]
        assert len(ids) == len(set(ids)), f"a message shows twice for {member.name}"
        logs.append([(m["id"], m["seq"], m["sender"], m["text"]) for m in messages])
    return logs


def test_relay_killed_while_clients_send(relay_without_housekeeping: Any, tmp_path: Path) -> None:
    relay = relay_without_housekeeping
    members = profiles(tmp_path, relay.url, "王阿姨", "李叔", "Bob")
    group = new_group(members[0], "停电村", *members[1:])

    # Each member sends three messages, one process after another; the three
    # members send at the same time. The relay is killed once two sends have
    # answered, so later ones meet it dead (before or in the middle of their
    # requests).
    accepted: list[tuple[Profile, str, dict[str, Any]]] = []
    failures: list[tuple[str, int, str, str]] = []
    answered = threading.Condition()

    def send_three(member: Profile) -> None:
        for n in range(3):
            text = f"{member.name} 第{n}条 #{n}"
            process = member.start("send", group, text, "--json", "--timeout", SEND_TIMEOUT)
            stdout, stderr = process.communicate(timeout=COMMAND_TIMEOUT_SECONDS)
            with answered:
                if process.returncode == 0 and "Traceback" not in stderr:
                    accepted.append((member, text, json.loads(stdout)))
                else:
                    failures.append((member.name, process.returncode, stdout, stderr))
                answered.notify_all()

    senders = [threading.Thread(target=send_three, args=(m,)) for m in members]
    for sender in senders:
        sender.start()
    with answered:
        assert answered.wait_for(lambda: len(accepted) + len(failures) >= 2, timeout=120)
        answered_before_kill = len(accepted) + len(failures)
    relay.kill()
    for sender in senders:
        sender.join(timeout=3 * COMMAND_TIMEOUT_SECONDS)
        assert not sender.is_alive()
    assert failures == []
    assert answered_before_kill < len(accepted) == 9
    assert {answer["state"] for _, _, answer in accepted} <= {"sent", "queued"}
    # At most five sends had started when the relay died: the others met it dead.
    assert any(answer["state"] == "queued" for _, _, answer in accepted)

    # More while it is down: accepted into the outbox, exit status 0.
    down = [(member, f"{member.name} 停电时写的") for member in members]
    answers = in_parallel(
        *((m, ("send", group, text, "--timeout", SEND_TIMEOUT)) for m, text in down)
    )
    for (member, text), answer in zip(down, answers, strict=True):
        assert answer["state"] == "queued"
        accepted.append((member, text, answer))

    # The same data folder and port (the port is stored in every home).
    assert relay._start_once()
    for member in members:
        member.run("sync")
    sync_all(*members)

    expected = {answer["message_id"]: (m.device_key, text) for m, text, answer in accepted}
    assert len(expected) == len(accepted) == 12
    logs = logs_of(group, *members)
    assert logs[0] == logs[1] == logs[2]
    shown = [message_id for message_id, _, _, _ in logs[0]]
    assert sorted(shown) == sorted(expected), "every accepted message, each exactly once"
    for message_id, _, sender_key, text in logs[0]:
        assert (sender_key, text) == expected[message_id]
        assert relay_copies(relay, message_id) == 1
    for member in members:
        for message_id in expected:
            if expected[message_id][0] == member.device_key:
                assert member.state_of(group, message_id) == "sent"


def test_client_killed_after_the_outbox_write(quiet_relay_process: Any, tmp_path: Path) -> None:
    wang, li = profiles(tmp_path, quiet_relay_process.url, "王阿姨", "李叔")
    group = new_group(wang, "a", li)
    before = set(li.queued(group))

    li.killed_at(AFTER_OUTBOX_SAVED, "send", group, "断电前写好的")
    # The entry is on disk and nothing of it reached the relay.
    (message_id,) = set(li.queued(group)) - before
    assert li.state_of(group, message_id) == "queued"
    assert relay_copies(quiet_relay_process, message_id) == 0

    sync_all(li, wang)
    assert li.state_of(group, message_id) == "sent"
    assert relay_copies(quiet_relay_process, message_id) == 1
    wang_log, li_log = logs_of(group, wang, li)
    assert [(m_id, text) for m_id, _, _, text in li_log] == [(message_id, "断电前写好的")]
    assert wang_log == li_log


def test_client_killed_before_it_saw_the_acknowledgement(
    quiet_relay_process: Any, tmp_path: Path
) -> None:
    wang, li = profiles(tmp_path, quiet_relay_process.url, "王阿姨", "李叔")
    group = new_group(wang, "b", li)
    # An empty outbox: the first message the next command posts is the text.
    assert wang.queued(group) == []

    wang.killed_at(AFTER_SEND_RESPONSE, "send", group, "已经到了服务器")
    # The relay stored it; the client never heard so and still has it queued.
    (message_id,) = wang.queued(group)
    assert relay_copies(quiet_relay_process, message_id) == 1
    assert wang.state_of(group, message_id) == "queued"

    sync_all(wang, li)
    assert wang.state_of(group, message_id) == "sent"
    assert relay_copies(quiet_relay_process, message_id) == 1
    wang_log, li_log = logs_of(group, wang, li)
    assert [(m_id, text) for m_id, _, _, text in wang_log] == [(message_id, "已经到了服务器")]
    assert li_log == wang_log


def test_client_killed_while_processing_a_commit(quiet_relay_process: Any, tmp_path: Path) -> None:
    wang, li, bob = profiles(tmp_path, quiet_relay_process.url, "王阿姨", "李叔", "Bob")
    group = new_group(wang, "c", li)
    li.json("send", group, "只有我们两个")
    # A commit (Bob's add), then messages of the epoch it starts.
    assert wang.json("add", group, bob.account_key)["state"] == "done"
    assert group in bob.json("sync")["joined"]
    bob_said = bob.json("send", group, "Bob 来了")
    wang_said = wang.json("send", group, "欢迎 Bob")
    assert bob_said["state"] == wang_said["state"] == "sent"

    records = li.group_records(group)
    assert li.member_names(group) == {"王阿姨", "李叔"}
    li.killed_at(WHILE_PROCESSING_COMMIT, "sync")
    # Nothing of the page landed: MLS state, cursor and messages as they were.
    assert li.group_records(group) == records

    sync_all(li)
    assert li.member_names(group) == {"王阿姨", "李叔", "Bob"}
    # Li works in the new epoch: Bob reads what Li says after the restart.
    assert li.json("send", group, "李叔 收到")["state"] == "sent"
    sync_all(wang, bob, li)

    wang_log, li_log, bob_log = logs_of(group, wang, li, bob)
    texts = [text for _, _, _, text in li_log]
    assert texts == ["只有我们两个", "Bob 来了", "欢迎 Bob", "李叔 收到"]
    assert wang_log == li_log
    # Bob cannot read what was said before he joined (RFC 9420 forward secrecy).
    assert bob_log == li_log[1:]


def test_commands_at_once_on_one_home_take_turns(quiet_relay_process: Any, tmp_path: Path) -> None:
    # Two processes over one home must not both load the group and encrypt:
    # they would use the same ratchet generation (the same key and nonce) for
    # different messages, and the receiver could decrypt only one of them.
    wang, li = profiles(tmp_path, quiet_relay_process.url, "王阿姨", "李叔")
    group = new_group(wang, "d", li)
    texts = [f"同时 {n}" for n in range(4)]
    answers = in_parallel(*((wang, ("send", group, text)) for text in texts))
    sent = {answer["message_id"]: text for answer, text in zip(answers, texts, strict=True)}
    sync_all(wang, li)
    wang_log, li_log = logs_of(group, wang, li)
    assert sorted((m_id, text) for m_id, _, _, text in li_log) == sorted(sent.items())
    assert wang_log == li_log

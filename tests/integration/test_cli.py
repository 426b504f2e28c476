"""
The member commands of ``townsquare`` against the real ``townsquare serve``.

Three profiles (home folders) run the CLI as subprocesses, exactly as a
person or a script would: ``init``, ``group create``, ``add`` by account
key, ``send`` in Chinese and English, ``sync``, ``messages --json``,
``members --json``, ``remove``, ``leave``; and ``send`` while the relay is
stopped (queued, exit 0), then ``sync`` after it is back (delivered once).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.integration

COMMAND_TIMEOUT_SECONDS = 60.0


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
        messages = self.json("messages", group)
        for message in messages:
            assert message["type"] == "text"
            assert message["sent_at"].endswith("Z")
            assert message["id"]
            assert message["sender"]
        ids = [m["id"] for m in messages]
        assert len(ids) == len(set(ids)), "a message shows twice"
        return [(m["sender_name"], m["text"]) for m in messages]


def profiles(base: Path, relay: str, *names: str) -> list[Profile]:
    out = []
    for index, name in enumerate(names):
        profile = Profile(base / f"home{index}")
        identity = profile.json("init", "--relay", relay, "--name", name)
        assert identity["name"] == name
        assert identity["registered"] is True
        assert profile.json("whoami")["account_key"] == identity["account_key"]
        out.append(profile)
    return out


def test_three_profiles_talk_remove_and_leave(relay_process: Any, tmp_path: Path) -> None:
    wang, li, bob = profiles(tmp_path, relay_process.url, "王阿姨", "李叔", "Bob")
    group = wang.json("group", "create", "王家村")["group_id"]
    keys = [p.json("whoami")["account_key"] for p in (li, bob)]
    wang.run("add", group, *keys)
    for profile in (li, bob):
        assert "Joined group" in profile.run("sync").stdout
    wang.run("sync")  # The newcomers' names arrive as Profile messages.
    names = {m["name"] for m in wang.json("members", group)}
    assert names == {"王阿姨", "李叔", "Bob"}

    said = [
        (wang, "明天上午九点在村委会开会"),
        (li, "好的，我会带茶叶"),
        (bob, "I'll bring the chairs"),
        (wang, "Thanks, everyone!"),
        (bob, "再见 see you"),
    ]
    for profile, text in said:
        answer = profile.json("send", group, text)
        assert answer["state"] == "sent"
        assert answer["message_id"]
    # Two members send at the same moment, as separate processes.
    together = [(li, "同时发送 one"), (bob, "at the same time two")]
    running = [
        subprocess.Popen(
            [sys.executable, "-m", "townsquare.cli", "--home", str(p.home), "send", group, text],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for p, text in together
    ]
    for process in running:
        assert process.wait(timeout=COMMAND_TIMEOUT_SECONDS) == 0
        assert process.stderr is not None
        process.stderr.close()
    for profile in (wang, li, bob):
        profile.run("sync")
    name_of = {wang: "王阿姨", li: "李叔", bob: "Bob"}
    expected = [(name_of[p], text) for p, text in said]
    concurrent = wang.texts(group)[len(expected) :]
    assert sorted(concurrent) == sorted((name_of[p], text) for p, text in together)
    expected += concurrent
    for profile in (wang, li, bob):
        assert profile.texts(group) == expected
    human = li.run("messages", group).stdout
    assert "王阿姨: 明天上午九点在村委会开会" in human

    # Remove Bob: he sees nothing sent after it.
    bob_id = next(m["id"] for m in wang.json("members", group) if m["name"] == "Bob")
    wang.run("remove", group, bob_id)
    wang.json("send", group, "Bob 不在了")
    li.run("sync")
    li.json("send", group, "收到")
    assert "Removed from group" in bob.run("sync").stdout
    assert bob.texts(group) == expected
    bob.run("send", group, "still here?", status=1)
    expected += [("王阿姨", "Bob 不在了"), ("李叔", "收到")]

    # 李叔 leaves: the proposal is committed by 王阿姨's next sync.
    assert "Leaving" in li.run("leave", group).stdout
    wang.run("sync")
    assert "Left group" in li.run("sync").stdout
    wang.json("send", group, "after 李叔 left")
    li.run("sync")
    assert li.texts(group) == expected
    wang.run("sync")
    assert wang.texts(group) == [*expected, ("王阿姨", "after 李叔 left")]
    assert [m["name"] for m in wang.json("members", group)] == ["王阿姨"]


def _send_together(group: str, sends: list[tuple[Profile, tuple[str, ...]]]) -> None:
    """Run several CLI commands at once, as separate processes; each must succeed."""
    running = [
        subprocess.Popen(
            [sys.executable, "-m", "townsquare.cli", "--home", str(p.home), *args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for p, args in sends
    ]
    for process in running:
        assert process.stderr is not None
        status = process.wait(timeout=COMMAND_TIMEOUT_SECONDS)
        err = process.stderr.read().decode("utf-8", "replace")
        process.stderr.close()
        assert status == 0, err
        assert "Traceback" not in err


def test_invite_join_race_remove_and_leave(relay_process: Any, tmp_path: Path) -> None:
    """Issue 5, Must show 1: a group filled by invite links, with a commit racing messages."""
    wang, li, zhao = profiles(tmp_path, relay_process.url, "王阿姨", "李叔", "Zhao")
    group = wang.json("group", "create", "王家村 Wang Village")["group_id"]
    link = wang.json("invite", group)["link"]
    assert link.startswith(f"{relay_process.url}/j/{group}#")
    secret = link.rsplit("#", 1)[1]
    for profile in (li, zhao):
        assert profile.json("join", link) == {"group_id": group, "state": "joined"}
    for profile in (wang, li, zhao):
        profile.run("sync")
    for profile in (wang, li, zhao):
        names = {m["name"] for m in profile.json("members", group)}
        assert names == {"王阿姨", "李叔", "Zhao"}
        (summary,) = profile.json("groups")
        assert summary["title"] == "王家村 Wang Village"

    name_of = {wang: "王阿姨", li: "李叔", zhao: "Zhao"}
    said = [
        (wang, "明天上午九点在村委会开会"),
        (li, "好的，我会带茶叶"),
        (zhao, "I'll bring the chairs"),
    ]
    for profile, text in said:
        assert profile.json("send", group, text)["state"] == "sent"
    # Two members send at once while the admin commits (new keys): the commit races
    # the messages; a message that lost the race is re-encrypted and sent again.
    together = [(li, "同时发送 one"), (zhao, "at the same time two")]
    _send_together(
        group,
        [(wang, ("rekey", group)), *((p, ("send", group, text)) for p, text in together)],
    )
    for _ in range(2):
        for profile in (wang, li, zhao):
            profile.run("sync")
    expected = [(name_of[p], text) for p, text in said]
    concurrent = wang.texts(group)[len(expected) :]
    assert sorted(concurrent) == sorted((name_of[p], text) for p, text in together)
    expected += concurrent
    for profile in (wang, li, zhao):
        assert profile.texts(group) == expected  # everything, once, in one order

    # Remove Zhao: he sees nothing sent after it, and his old link is refused.
    zhao_id = next(m["id"] for m in wang.json("members", group) if m["name"] == "Zhao")
    wang.run("remove", group, zhao_id)
    wang.json("send", group, "Zhao 不在了")
    assert "Removed from group" in zhao.run("sync").stdout
    assert zhao.texts(group) == expected
    err = zhao.run("join", link, status=1).stderr
    assert "invite was refused: invite-not-found" in err
    expected.append(("王阿姨", "Zhao 不在了"))

    # A new link; 李叔 leaves (committed by 王阿姨's next sync) and sees nothing after.
    second = wang.json("invite", group)["link"]
    assert second.rsplit("#", 1)[1] != secret
    li.run("sync")
    assert "Leaving" in li.run("leave", group).stdout
    wang.run("sync")
    assert "Left group" in li.run("sync").stdout
    wang.json("send", group, "after 李叔 left")
    li.run("sync")
    assert li.texts(group) == expected
    err = li.run("join", second, status=1).stderr
    assert "invite was refused: invite-not-found" in err  # leaving reset the invites too
    wang.run("sync")
    assert wang.texts(group) == [*expected, ("王阿姨", "after 李叔 left")]
    assert [m["name"] for m in wang.json("members", group)] == ["王阿姨"]


def test_send_while_the_relay_is_down_queues(own_relay_process: Any, tmp_path: Path) -> None:
    relay = own_relay_process
    wang, li = profiles(tmp_path, relay.url, "王阿姨", "Li")
    group = wang.json("group", "create", "queue")["group_id"]
    wang.run("add", group, li.json("whoami")["account_key"])
    li.run("sync")

    relay.stop()
    answer = wang.json("send", group, "停电了 offline")
    assert answer["state"] == "queued"
    result = wang.run("sync")  # Unreachable is not an error.
    assert "unreachable" in result.stderr

    # The same port, so the URL stored in the homes stays right.
    assert relay._start_once()
    wang.run("sync")
    li.run("sync")
    li.run("sync")
    for profile in (wang, li):
        assert profile.texts(group) == [("王阿姨", "停电了 offline")]


def test_a_group_that_requires_approval(relay_process: Any, tmp_path: Path) -> None:
    """Newcomers with the link ask; the admin sees their names, approves one, denies one (told)."""
    wang, li, spam = profiles(tmp_path, relay_process.url, "王阿姨", "李叔", "Spammer")
    group = wang.json("group", "create", "村委会 Committee", "--approval")["group_id"]
    link = wang.json("invite", group)["link"]
    for profile in (li, spam):
        assert profile.json("join", link) == {"group_id": group, "state": "requested"}
    # While it waits, a sync says so (it read its request from the relay: still there).
    waiting = spam.json("sync")
    assert (waiting["not_approved"], waiting["pending"]) == ([], [group])
    asked = {r["name"]: r["id"] for r in wang.json("requests", group)}
    assert set(asked) == {"李叔", "Spammer"}
    wang.run("deny", group, asked["Spammer"])
    assert wang.json("approve", group, asked["李叔"])["state"] == "added"
    assert [r["name"] for r in wang.json("requests", group)] == []
    assert "Joined group" in li.run("sync").stdout
    assert li.json("send", group, "谢谢 thanks")["state"] == "sent"
    wang.run("sync")
    assert wang.texts(group) == [("李叔", "谢谢 thanks")]
    assert {m["name"] for m in li.json("members", group)} == {"王阿姨", "李叔"}
    # 王阿姨 names 李叔 an admin too, so the group survives the loss of her phone.
    li_id = next(m["id"] for m in wang.json("members", group) if m["name"] == "李叔")
    assert "Now an admin" in wang.run("admin", group, li_id).stdout
    li.run("sync")
    assert {m["name"]: m["admin"] for m in li.json("members", group)} == {
        "王阿姨": True,
        "李叔": True,
    }
    assert li.json("requests", group) == []
    # The denied newcomer learns it at its next sync, once, and no longer waits.
    denied = spam.json("sync")
    assert (denied["not_approved"], denied["pending"], denied["joined"]) == ([group], [], [])
    assert "not approved" not in spam.run("sync").stdout
    assert spam.json("sync")["pending"] == []
    assert spam.json("groups") == []
    # The admin revokes the link: it no longer works for anyone.
    assert wang.json("invite", group, "--reset") == {"revoked": 1}
    (zhao,) = profiles(tmp_path / "later", relay_process.url, "Zhao")
    assert "invite was refused: invite-not-found" in zhao.run("join", link, status=1).stderr


def test_an_admin_turns_on_approval_after_creation(relay_process: Any, tmp_path: Path) -> None:
    """A group that started open gets spam: its admin makes newcomers ask from then on."""
    wang, li, spam = profiles(tmp_path, relay_process.url, "王阿姨", "李叔", "Spammer")
    group = wang.json("group", "create", "王家村 Wang Village")["group_id"]
    open_group = {
        "group_id": group,
        "approval_required": False,
        "members_can_add": False,
        "admins": 1,
    }
    assert wang.json("group", "settings", group) == open_group
    link = wang.json("invite", group)["link"]
    assert li.json("join", link) == {"group_id": group, "state": "joined"}

    changed = wang.json("group", "settings", group, "--approval", "on")
    assert changed == {**open_group, "approval_required": True, "state": "done"}
    li.run("sync")
    assert li.json("group", "settings", group)["approval_required"] is True
    # The same link now makes a newcomer ask instead of joining.
    assert spam.json("join", link) == {"group_id": group, "state": "requested"}
    assert spam.json("groups") == []
    assert [r["name"] for r in wang.json("requests", group)] == ["Spammer"]

    # 李叔 is a member, not an admin: refused in one clear line, and nothing changes.
    refused = li.run("group", "settings", group, "--approval", "off", status=1)
    assert refused.stderr == (
        "townsquare: error: only an admin of the group may change its settings\n"
    )
    assert li.json("sync")["queued"] == 0
    for profile in (wang, li):
        profile.run("sync")
        assert profile.json("group", "settings", group)["approval_required"] is True
    assert {m["name"] for m in wang.json("members", group)} == {"王阿姨", "李叔"}

"""
The member commands in process, against the SDK's ``FakeRelay`` behind ``httpx.MockTransport``.

``townsquare.cli.session.HTTP_FACTORY`` is the seam: every command's HTTP
client talks to one in-memory relay (which trusts the signing device's
header; the driver's own tests check signatures). Homes are real folders,
so the SQLite store, the outbox and the exit statuses are the real ones.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from townsquare import auth
from townsquare.cli import main, session
from townsquare.client.testing import FakeRelay

RELAY = "http://relay.test"


class FakeNet:
    def __init__(self) -> None:
        self.relay = FakeRelay()
        self.down = False

    def handler(self, request: httpx.Request) -> httpx.Response:
        if self.down:
            raise httpx.ConnectError("offline", request=request)
        target = request.url.raw_path.decode("ascii")
        if target == "/healthz":
            return httpx.Response(200, json={"status": "ok"})
        device = auth.decode_b64u(request.headers[auth.DEVICE_HEADER])
        answer = self.relay.handle(device, request.method, target, request.content)
        return httpx.Response(
            answer.status, content=answer.body, headers={"content-type": answer.content_type}
        )


@pytest.fixture
def net(monkeypatch: pytest.MonkeyPatch) -> FakeNet:
    fake = FakeNet()
    monkeypatch.setattr(
        session,
        "HTTP_FACTORY",
        lambda: httpx.AsyncClient(transport=httpx.MockTransport(fake.handler)),
    )
    monkeypatch.delenv("TOWNSQUARE_HOME", raising=False)
    return fake


class Cli:
    def __init__(self, home: Path, capsys: pytest.CaptureFixture[str]) -> None:
        self.home = home
        self.capsys = capsys

    def run(self, *args: str, status: int = 0) -> tuple[str, str]:
        self.capsys.readouterr()
        assert main(["--home", str(self.home), *args]) == status
        captured = self.capsys.readouterr()
        return captured.out, captured.err

    def json(self, *args: str) -> Any:
        return json.loads(self.run(*args, "--json")[0])


@pytest.fixture
def make(tmp_path: Path, capsys: pytest.CaptureFixture[str], net: FakeNet) -> Any:
    del net

    def make_cli(name: str) -> Cli:
        cli = Cli(tmp_path / name, capsys)
        cli.json("init", "--relay", RELAY, "--name", name)
        return cli

    return make_cli


def test_init_whoami_and_a_conversation(make: Any) -> None:
    wang, bob = make("王阿姨"), make("Bob")
    me = wang.json("whoami")
    assert me["name"] == "王阿姨"
    assert me["registered"] is True
    assert len(auth.decode_b64u(me["account_key"])) == 32

    group = wang.json("group", "create", "王家村")["group_id"]
    assert wang.json("groups") == [
        {"group_id": group, "title": "王家村", "status": "active", "members": 1}
    ]
    wang.run("add", group, bob.json("whoami")["account_key"])
    out, _ = bob.run("sync")
    assert "Joined group" in out
    assert wang.json("send", group, "明天开会")["state"] == "sent"
    assert bob.json("send", group, "OK")["state"] == "sent"
    wang.run("sync")
    bob.run("sync")
    for cli in (wang, bob):
        messages = cli.json("messages", group)
        assert [(m["sender_name"], m["type"], m["text"]) for m in messages] == [
            ("王阿姨", "text", "明天开会"),
            ("Bob", "text", "OK"),
        ]
        assert all(m["sent_at"].endswith("Z") for m in messages)
    out, _ = bob.run("messages", group)
    assert "王阿姨: 明天开会" in out
    assert "Bob (you): OK" in out
    members = {m["name"]: m["id"] for m in wang.json("members", group)}
    assert set(members) == {"王阿姨", "Bob"}

    wang.run("remove", group, members["Bob"])
    wang.json("send", group, "after")
    out, _ = bob.run("sync")
    assert "Removed from group" in out
    assert [m["text"] for m in bob.json("messages", group)] == ["明天开会", "OK"]
    _, err = bob.run("send", group, "x", status=1)
    assert err.count("\n") == 1
    assert "closed" in err


def test_send_with_the_relay_down_queues_then_sync_delivers_once(make: Any, net: FakeNet) -> None:
    wang = make("wang")
    group = wang.json("group", "create", "t")["group_id"]
    net.down = True
    answer = wang.json("send", group, "离线")
    assert answer["state"] == "queued"
    out, err = wang.run("sync")
    assert "unreachable" in err
    assert "wait in the outbox" in out
    net.down = False
    wang.run("sync")
    wang.run("sync")
    assert [m["text"] for m in wang.json("messages", group)] == ["离线"]
    assert wang.json("messages", group)[0]["id"] == answer["message_id"]


def test_leave_as_the_sole_member_closes_the_group(make: Any) -> None:
    wang = make("wang")
    group = wang.json("group", "create", "t")["group_id"]
    out, _ = wang.run("leave", group)
    assert "Left the group" in out
    assert wang.json("groups")[0]["status"] == "left"


def test_expected_failures_are_one_line_without_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], make: Any, net: FakeNet
) -> None:
    fresh = Cli(tmp_path / "fresh", capsys)
    _, err = fresh.run("whoami", status=1)
    assert (
        err
        == f"townsquare: error: no device in {tmp_path / 'fresh'}: run `townsquare init` first\n"
    )
    fresh.run("send", "AAAA", "hi", status=1)

    wang = make("wang")
    _, err = wang.run("init", "--relay", RELAY, "--name", "again", status=1)
    assert "already holds a device" in err
    _, err = wang.run("messages", "not base64!", status=2)
    assert "not a base64url id" in err
    _, err = wang.run("messages", "AAAA", status=1)
    assert "no group" in err
    _, err = wang.run("init", "--relay", "ftp://x", "--name", "n", status=1)
    _, err = wang.run("join", "https://example/#x", status=1)
    assert err.startswith("townsquare: error: not an invite link")
    _, err = wang.run("invite", "AAAA", "--days", "0", status=2)
    assert err == "townsquare: error: --days and --uses are positive\n"

    net.down = True
    _, err = Cli(tmp_path / "new", capsys).run("init", "--relay", RELAY, "--name", "n", status=1)
    assert "cannot reach a relay" in err


def test_home_from_the_environment(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    net: FakeNet,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    del net
    monkeypatch.setenv("TOWNSQUARE_HOME", str(tmp_path / "env-home"))
    assert main(["init", "--relay", RELAY, "--name", "env"]) == 0
    capsys.readouterr()
    assert main(["whoami", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["name"] == "env"
    assert (tmp_path / "env-home" / "client.sqlite3").exists()


def test_serve_still_parses() -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["serve", "--help"])
    assert exit_info.value.code == 0


def test_ids_and_texts_that_start_with_a_dash(make: Any) -> None:
    # One base64url id in 32 starts with "-": argparse must not take it for an option.
    wang = make("wang")
    group = wang.json("group", "create", "-title-")["group_id"]
    _, err = wang.run("messages", "-" + "A" * 21, "--json", status=1)
    assert "no group" in err
    assert wang.json("send", group, "-5 degrees", "--timeout=5")["state"] == "sent"
    out, _ = wang.run("send", "--json", "--", group, "--json")
    assert json.loads(out)["state"] == "sent"
    assert [m["text"] for m in wang.json("messages", group)] == ["-5 degrees", "--json"]
    assert wang.json("groups")[0]["title"] == "-title-"
    wang.run("sync", "--timeout", "5")


def test_a_denied_newcomer_is_told_on_its_next_sync(make: Any) -> None:
    wang, li, spam = make("王阿姨"), make("李叔"), make("Spammer")
    group = wang.json("group", "create", "村委会", "--approval")["group_id"]
    link = wang.json("invite", group)["link"]
    for cli in (li, spam):
        assert cli.json("join", link) == {"group_id": group, "state": "requested"}
    waiting = spam.json("sync")
    assert (waiting["not_approved"], waiting["pending"]) == ([], [group])
    out, _ = spam.run("sync")
    assert f"Waiting for an admin to approve your request to join group {group}." in out
    asked = {r["name"]: r["id"] for r in wang.json("requests", group)}
    wang.run("deny", group, asked["Spammer"])
    assert wang.json("approve", group, asked["李叔"])["state"] == "added"

    denied = spam.json("sync")
    assert (denied["not_approved"], denied["pending"], denied["joined"]) == ([group], [], [])
    out, _ = spam.run("sync")
    assert "not approved" not in out  # told once: the join record is gone
    assert "Waiting" not in out
    assert spam.json("groups") == []

    approved = li.json("sync")
    assert (approved["joined"], approved["not_approved"], approved["pending"]) == ([group], [], [])


def test_sync_says_so_in_words_when_a_request_was_not_approved(make: Any) -> None:
    wang, spam = make("wang"), make("spam")
    group = wang.json("group", "create", "t", "--approval")["group_id"]
    spam.json("join", wang.json("invite", group)["link"])
    wang.run("deny", group, spam.json("whoami")["device_key"])
    out, err = spam.run("sync")
    assert f"Your request to join group {group} was not approved." in out
    assert err == ""


def test_join_again_after_a_denial_says_it_was_not_approved(make: Any) -> None:
    wang, spam = make("wang"), make("spam")
    group = wang.json("group", "create", "t", "--approval")["group_id"]
    link = wang.json("invite", group)["link"]
    spam.json("join", link)
    wang.run("deny", group, spam.json("whoami")["device_key"])
    _, err = spam.run("join", link, status=1)
    assert err == "townsquare: error: your request to join the group was not approved\n"
    # Asking again is a new request, which waits like the first.
    assert spam.json("join", link) == {"group_id": group, "state": "requested"}
    assert spam.json("sync")["pending"] == [group]


def test_group_settings_shows_and_an_admin_changes_them(make: Any) -> None:
    wang, li = make("王阿姨"), make("李叔")
    group = wang.json("group", "create", "村委会")["group_id"]
    wang.run("add", group, li.json("whoami")["account_key"])
    li.run("sync")
    closed = {
        "group_id": group,
        "approval_required": False,
        "members_can_add": False,
        "admins": 1,
    }
    assert wang.json("group", "settings", group) == closed
    out, _ = wang.run("group", "settings", group)
    assert out == "approval:        off\nmembers can add: off\nadmins:          1\n"

    changed = wang.json("group", "settings", group, "--approval", "on", "--members-can-add=on")
    opened = {**closed, "approval_required": True, "members_can_add": True}
    assert changed == {**opened, "state": "done"}
    out, _ = wang.run("group", "settings", group, "--approval", "on")
    assert out.startswith("No change: the group already has these settings.\n")
    out, _ = wang.run("group", "settings", group, "--members-can-add", "off")
    assert out.startswith("Changed.\napproval:        on\nmembers can add: off\n")

    # A member who is not an admin: refused in one line, nothing changes.
    _, err = li.run("group", "settings", group, "--approval", "off", status=1)
    assert err == "townsquare: error: only an admin of the group may change its settings\n"
    assert li.json("group", "settings", group)["approval_required"] is True
    assert li.json("sync")["queued"] == 0
    assert wang.json("group", "settings", group)["approval_required"] is True

    with pytest.raises(SystemExit) as exit_info:
        main(["--home", str(wang.home), "group", "settings", group, "--approval", "maybe"])
    assert exit_info.value.code == 2


def test_group_settings_with_the_relay_down_is_queued(make: Any, net: FakeNet) -> None:
    wang = make("wang")
    group = wang.json("group", "create", "t")["group_id"]
    net.down = True
    queued = wang.json("group", "settings", group, "--approval", "on")
    assert (queued["approval_required"], queued["state"]) == (False, "queued")
    net.down = False
    wang.run("sync")
    assert wang.json("group", "settings", group)["approval_required"] is True


def test_group_settings_of_an_id_that_starts_with_a_dash(make: Any) -> None:
    wang = make("wang")
    _, err = wang.run("group", "settings", "-" + "A" * 21, "--approval", "on", status=1)
    assert "no group" in err
    _, err = wang.run("group", "settings", "--json", "-" + "A" * 21, status=1)
    assert "no group" in err

"""
The member commands: ``init``, ``whoami``, ``group``, ``send``, ``sync``, ``messages``, ...

Each opens the home (``--home``, else ``$TOWNSQUARE_HOME``, else
``~/.townsquare``), does one thing through the client SDK, and, when it
changed something, syncs with the relay. Ids on the command line and in
``--json`` output are unpadded base64url, as the SDK and the relay write
them: a group's id, a member's id (its device key), an account key.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import Any

from townsquare import auth
from townsquare.cli.session import (
    CommandError,
    Session,
    decode_id,
    encode_id,
    error,
    open_local,
    open_online,
    out,
    print_json,
)
from townsquare.client.core import relay_api as api
from townsquare.client.core.client import Client
from townsquare.client.core.events import (
    GroupJoined,
    JoinFailed,
    JoinRequested,
    MessageReceived,
    RemovedFromGroup,
)
from townsquare.client.core.groups import GroupSettings
from townsquare.client.core.messages import StoredMessage

__all__ = ["COMMANDS", "DEFAULT_TIMEOUT_SECONDS", "add_parsers"]

#: The member commands (``group`` has subcommands).
COMMANDS = frozenset(
    {
        "init",
        "whoami",
        "groups",
        "group",
        "add",
        "send",
        "sync",
        "messages",
        "members",
        "remove",
        "leave",
        "invite",
        "join",
        "rekey",
        "admin",
        "requests",
        "approve",
        "deny",
    }
)
#: The most a command waits for the relay to finish a sync, in seconds.
DEFAULT_TIMEOUT_SECONDS = 30.0
# Kinds ``messages`` leaves out unless ``--all``: bookkeeping, not conversation.
_HIDDEN_KINDS = frozenset({"profile", "group_title"})
# The values of ``group settings``'s switches.
_SWITCH = ("on", "off")


def _json_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON for scripts")


def _sync_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT_SECONDS,
        metavar="SECONDS",
        help=f"the most to wait for the relay (default: {DEFAULT_TIMEOUT_SECONDS:g})",
    )


_Command = Callable[[argparse.Namespace], int]


def _online(run: Callable[[argparse.Namespace], Coroutine[Any, Any, int]]) -> _Command:
    def sync_run(args: argparse.Namespace) -> int:
        return asyncio.run(run(args))

    return sync_run


def add_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """
    Register the member commands on the command's subparsers.
    """
    p = commands.add_parser(
        "init", help="create this device's account and register it with a relay"
    )
    p.add_argument("--relay", required=True, metavar="URL", help="http(s)://host[:port]")
    p.add_argument("--name", required=True, help="the display name shown in your groups")
    _json_flag(p)
    _sync_flags(p)
    p.set_defaults(run=_online(_init))

    p = commands.add_parser("whoami", help="show this device's account key, device key and name")
    _json_flag(p)
    p.set_defaults(run=_whoami)

    p = commands.add_parser("groups", help="list the groups on this device")
    _json_flag(p)
    p.set_defaults(run=_groups)

    p = commands.add_parser("group", help="create groups, show or change their settings")
    group_commands = p.add_subparsers(dest="group_command", required=True, metavar="COMMAND")
    p = group_commands.add_parser("create", help="create a group with you as its only member")
    p.add_argument("title", metavar="TITLE")
    p.add_argument(
        "--approval",
        action="store_true",
        help="newcomers with a link ask to join and an admin approves them",
    )
    p.add_argument("--members-can-add", action="store_true", help="let any member add others")
    _json_flag(p)
    _sync_flags(p)
    p.set_defaults(run=_online(_group_create))
    p = group_commands.add_parser(
        "settings", help="show a group's settings, or change them (admins)"
    )
    p.add_argument("group", metavar="GROUP")
    p.add_argument(
        "--approval",
        choices=_SWITCH,
        default=None,
        help="on: newcomers with a link ask to join and an admin approves them",
    )
    p.add_argument(
        "--members-can-add",
        choices=_SWITCH,
        default=None,
        help="on: any member may add others; off: only admins",
    )
    _json_flag(p)
    _sync_flags(p)
    p.set_defaults(run=_group_settings)

    p = commands.add_parser("add", help="add members to a group by their account keys")
    p.add_argument("group", metavar="GROUP")
    p.add_argument("accounts", metavar="ACCOUNT_KEY", nargs="+")
    _json_flag(p)
    _sync_flags(p)
    p.set_defaults(run=_online(_add))

    p = commands.add_parser("send", help="send a text message to a group")
    p.add_argument("group", metavar="GROUP")
    p.add_argument("text", metavar="TEXT")
    _json_flag(p)
    _sync_flags(p)
    p.set_defaults(run=_online(_send))

    p = commands.add_parser("sync", help="send the outbox, fetch and process everything pending")
    _json_flag(p)
    _sync_flags(p)
    p.set_defaults(run=_online(_sync))

    p = commands.add_parser("messages", help="show a group's messages, oldest first")
    p.add_argument("group", metavar="GROUP")
    p.add_argument("--all", action="store_true", help="include profile and title messages")
    _json_flag(p)
    p.set_defaults(run=_messages)

    p = commands.add_parser("members", help="show a group's members")
    p.add_argument("group", metavar="GROUP")
    _json_flag(p)
    p.set_defaults(run=_members)

    p = commands.add_parser("remove", help="remove a member (by member id) from a group")
    p.add_argument("group", metavar="GROUP")
    p.add_argument("member", metavar="MEMBER_ID")
    _sync_flags(p)
    p.set_defaults(run=_online(_remove))

    p = commands.add_parser("leave", help="leave a group")
    p.add_argument("group", metavar="GROUP")
    _sync_flags(p)
    p.set_defaults(run=_online(_leave))

    p = commands.add_parser("admin", help="make a member an admin of a group (admins)")
    p.add_argument("group", metavar="GROUP")
    p.add_argument("member", metavar="MEMBER_ID")
    p.add_argument("--remove", action="store_true", help="stop the member being an admin")
    _sync_flags(p)
    p.set_defaults(run=_online(_admin))

    p = commands.add_parser("rekey", help="refresh this device's keys in a group (a commit)")
    p.add_argument("group", metavar="GROUP")
    _sync_flags(p)
    p.set_defaults(run=_online(_rekey))

    p = commands.add_parser("invite", help="make an invite link for a group (admins)")
    p.add_argument("group", metavar="GROUP")
    p.add_argument(
        "--days", type=int, default=None, help="how many days the link works (default: 30)"
    )
    p.add_argument(
        "--uses", type=int, default=None, help="how many people may join by it (default: 1000)"
    )
    p.add_argument(
        "--reset", action="store_true", help="revoke every invite link of the group instead"
    )
    _json_flag(p)
    _sync_flags(p)
    p.set_defaults(run=_online(_invite))

    p = commands.add_parser("requests", help="list the requests to join a group (admins)")
    p.add_argument("group", metavar="GROUP")
    _json_flag(p)
    _sync_flags(p)
    p.set_defaults(run=_online(_requests))

    p = commands.add_parser("approve", help="add a device that asked to join (admins)")
    p.add_argument("group", metavar="GROUP")
    p.add_argument("device", metavar="DEVICE_ID")
    _json_flag(p)
    _sync_flags(p)
    p.set_defaults(run=_online(_approve))

    p = commands.add_parser("deny", help="refuse a device that asked to join (admins)")
    p.add_argument("group", metavar="GROUP")
    p.add_argument("device", metavar="DEVICE_ID")
    _sync_flags(p)
    p.set_defaults(run=_online(_deny))

    p = commands.add_parser("join", help="join a group by an invite link")
    p.add_argument("link", metavar="LINK")
    _json_flag(p)
    _sync_flags(p)
    p.set_defaults(run=_online(_join))


# -- Commands ------------------------------------------------------------------------------


async def _admin(args: argparse.Namespace) -> int:
    group_id = decode_id(args.group, "GROUP")
    member = decode_id(args.member, "MEMBER_ID")
    async with open_online(args.home, timeout=args.timeout) as s:
        s.driver.set_admin(group_id, member, admin=not args.remove)
        done = await s.sync()
        _fail_on(s)
    if not done:
        out("Queued: the change is sent at the next sync.")
    else:
        out("No longer an admin." if args.remove else "Now an admin.")
    return 0


async def _rekey(args: argparse.Namespace) -> int:
    group_id = decode_id(args.group, "GROUP")
    async with open_online(args.home, timeout=args.timeout) as s:
        s.driver.update_keys(group_id)
        done = await s.sync()
        _fail_on(s)
    out("Keys refreshed." if done else "Queued: the new keys are sent at the next sync.")
    return 0


async def _reset_invites(args: argparse.Namespace, group_id: bytes) -> int:
    async with open_online(args.home, timeout=args.timeout) as s:
        answer = await s.driver.relay_request(api.reset_invites(0, group_id))
    if not answer.ok:
        raise CommandError(f"the relay refused: {api.parse_problem(answer).code}")
    revoked = int(json.loads(answer.body)["revoked"])
    if args.json:
        print_json({"revoked": revoked})
    else:
        out(f"Revoked {revoked} invite link(s): they no longer work.")
    return 0


async def _invite(args: argparse.Namespace) -> int:
    group_id = decode_id(args.group, "GROUP")
    if args.reset:
        return await _reset_invites(args, group_id)
    if (args.days is not None and args.days <= 0) or (args.uses is not None and args.uses <= 0):
        raise CommandError("--days and --uses are positive", status=2)
    async with open_online(args.home, timeout=args.timeout) as s:
        if not await s.reachable():
            raise CommandError(f"cannot reach the relay at {s.relay}: an invite needs it")
        link = s.driver.create_invite(
            group_id,
            lifetime_seconds=None if args.days is None else args.days * 86_400,
            max_uses=args.uses,
        )
        secret = auth.decode_b64u(link.rsplit("#", 1)[1])
        await s.sync()
        _fail_on(s)
        ready = s.client.invite_ready(group_id, secret)
    if not ready:
        raise CommandError("the relay did not take the invite in time; try again")
    if args.json:
        print_json({"link": link})
    else:
        out("Share this link with the people you want in the group:")
        out(f"  {link}")
    return 0


async def _pending_requests(s: Session, group_id: bytes) -> list[api.PendingJoinRequest]:
    answer = await s.driver.relay_request(api.list_join_requests(0, group_id))
    if not answer.ok:
        problem = api.parse_problem(answer)
        raise CommandError(f"the relay refused to list the requests: {problem.code}")
    return api.parse_join_requests(answer)


async def _requests(args: argparse.Namespace) -> int:
    group_id = decode_id(args.group, "GROUP")
    async with open_online(args.home, timeout=args.timeout) as s:
        pending = await _pending_requests(s, group_id)
        rows = [
            {
                "id": encode_id(r.device_key),
                "name": s.client.read_join_note(group_id, r.invite_key, r.sealed_note),
                "requested_at": _iso(datetime.fromtimestamp(r.created_at, UTC)),
            }
            for r in pending
        ]
    if args.json:
        print_json(rows)
    elif not rows:
        out("No requests to join.")
    else:
        for row in rows:
            out(f"{row['name'] or '(no name)'}  {row['id']}  asked {row['requested_at']}")
        out("Approve with `townsquare approve GROUP ID`, refuse with `townsquare deny GROUP ID`.")
    return 0


async def _approve(args: argparse.Namespace) -> int:
    group_id = decode_id(args.group, "GROUP")
    device_key = decode_id(args.device, "DEVICE_ID")
    async with open_online(args.home, timeout=args.timeout) as s:
        request = next(
            (r for r in await _pending_requests(s, group_id) if r.device_key == device_key), None
        )
        if request is None:
            raise CommandError("no such request to join (answered already?)")
        s.driver.add_key_packages(group_id, [request.key_package])
        done = await s.sync()
        _fail_on(s)
        added = any(m.device_key == device_key for m in s.client.members(group_id))
        if added:
            await s.driver.relay_request(api.delete_join_request(0, group_id, device_key))
    state = "added" if added else "queued"
    if args.json:
        print_json({"id": encode_id(device_key), "state": state})
    elif added:
        out("Approved: they are in the group.")
    else:
        out("Queued: they are added at the next sync." if not done else "Not added yet.")
    return 0


async def _deny(args: argparse.Namespace) -> int:
    group_id = decode_id(args.group, "GROUP")
    device_key = decode_id(args.device, "DEVICE_ID")
    async with open_online(args.home, timeout=args.timeout) as s:
        answer = await s.driver.relay_request(api.delete_join_request(0, group_id, device_key))
    if not answer.ok:
        raise CommandError(f"the relay refused: {api.parse_problem(answer).code}")
    out("Refused." if json.loads(answer.body)["deleted"] else "No such request.")
    return 0


async def _join(args: argparse.Namespace) -> int:
    async with open_online(args.home, timeout=args.timeout) as s:
        group_id = s.driver.join(args.link)
        await s.sync()
        s.drain()
        refused = [e for e in s.events if isinstance(e, JoinFailed) and e.group_id == group_id]
        if refused and refused[-1].code == JoinFailed.NOT_APPROVED:
            # `join` again while a request waited, and the admins had declined it meanwhile.
            raise CommandError("your request to join the group was not approved")
        if refused:
            raise CommandError(f"the invite was refused: {refused[-1].code}")
        joined = group_id not in s.client.joining()
        requested = any(isinstance(e, JoinRequested) for e in s.events) or (
            not joined and s.client.join_requested(group_id)
        )
        _fail_on(s)
        title = s.client.group(group_id).title if joined else None
    state = "joined" if joined else "requested" if requested else "queued"
    if args.json:
        print_json({"group_id": encode_id(group_id), "state": state})
    elif joined:
        out(f"Joined {title or 'the group'}: {encode_id(group_id)}")
    elif requested:
        out("Asked to join: an admin of the group approves newcomers; `townsquare sync` later.")
    else:
        out("Queued: `townsquare sync` joins when the relay answers.")
    return 0


def _identity(client: Client) -> dict[str, Any]:
    device = client.device
    if device is None:  # pragma: no cover - open_local and init guarantee one
        raise CommandError("no device")
    return {
        "account_key": encode_id(device.account_key),
        "device_key": encode_id(device.device_key),
        "name": client.display_name,
        "registered": client.registered,
    }


async def _init(args: argparse.Namespace) -> int:
    async with open_online(args.home, timeout=args.timeout, relay=args.relay, create=True) as s:
        s.driver.initialize(display_name=args.name)
        done = await s.sync()
        _fail_on(s)
        identity = {**_identity(s.client), "relay": s.relay}
    if args.json:
        print_json(identity)
    else:
        out(f"Welcome, {args.name}! This device is ready.")
        out(f"  account key: {identity['account_key']}   (others add you with it)")
        out(f"  device key:  {identity['device_key']}")
        out(f"  relay:       {identity['relay']}")
        if not done:
            out("  not registered yet: run `townsquare sync` when the relay answers")
    return 0


def _whoami(args: argparse.Namespace) -> int:
    with open_local(args.home) as client:
        identity = _identity(client)
    if args.json:
        print_json(identity)
    else:
        out(f"name:        {identity['name'] or '(none)'}")
        out(f"account key: {identity['account_key']}")
        out(f"device key:  {identity['device_key']}")
    return 0


def _groups(args: argparse.Namespace) -> int:
    rows = []
    with open_local(args.home) as client:
        for group_id in client.group_ids():
            summary = client.group(group_id)
            rows.append(
                {
                    "group_id": encode_id(group_id),
                    "title": summary.title,
                    "status": summary.status.name.lower(),
                    "members": summary.members,
                }
            )
    if args.json:
        print_json(rows)
    elif not rows:
        out("No groups yet.")
    else:
        for row in rows:
            out(f"{row['title'] or '(untitled)'}  {row['group_id']}  [{row['status']}]")
    return 0


async def _group_create(args: argparse.Namespace) -> int:
    async with open_online(args.home, timeout=args.timeout) as s:
        group_id = s.driver.create_group(
            title=args.title,
            approval_required=args.approval,
            members_can_add=args.members_can_add,
        )
        await s.sync()
        _fail_on(s)
    if args.json:
        print_json({"group_id": encode_id(group_id)})
    else:
        out(f"Created {args.title}: {encode_id(group_id)}")
    return 0


def _group_settings(args: argparse.Namespace) -> int:
    group_id = decode_id(args.group, "GROUP")
    if args.approval is None and args.members_can_add is None:
        # Only reading: the home as last synced, like ``members``.
        with open_local(args.home) as client:
            settings = client.group_settings(group_id)
            admins = client.admins(group_id)
        _print_settings(args, group_id, settings, admins, state=None)
        return 0
    return asyncio.run(_change_settings(args, group_id))


async def _change_settings(args: argparse.Namespace, group_id: bytes) -> int:
    async with open_online(args.home, timeout=args.timeout) as s:
        # Catch up first: the change is judged against the group's settings now (another
        # admin may have made it), and who is an admin may have changed.
        done = await s.sync()
        changed = s.driver.set_group_settings(
            group_id,
            approval_required=None if args.approval is None else args.approval == "on",
            members_can_add=None if args.members_can_add is None else args.members_can_add == "on",
        )
        if changed and done:
            done = await s.sync()
        _fail_on(s)
        settings = s.client.group_settings(group_id)
        admins = s.client.admins(group_id)
    if not args.json:
        if not changed:
            out("No change: the group already has these settings.")
        elif not done:
            out("Queued: the change is sent at the next sync.")
        else:
            out("Changed.")
    _print_settings(args, group_id, settings, admins, state="done" if done else "queued")
    return 0


def _print_settings(
    args: argparse.Namespace,
    group_id: bytes,
    settings: GroupSettings | None,
    admins: frozenset[bytes] | None,
    *,
    state: str | None,
) -> None:
    # A group without a policy (another client made it): any member may add, nobody approves.
    approval = settings is not None and settings.approval_required
    members_can_add = settings is None or settings.members_can_add
    if args.json:
        row: dict[str, Any] = {
            "group_id": encode_id(group_id),
            "approval_required": approval,
            "members_can_add": members_can_add,
            "admins": None if admins is None else len(admins),
        }
        if state is not None:
            row["state"] = state
        print_json(row)
        return
    if settings is None:
        out("This group has no admins or settings (another client made it).")
    out(f"approval:        {'on' if approval else 'off'}")
    out(f"members can add: {'on' if members_can_add else 'off'}")
    if admins is not None:
        out(f"admins:          {len(admins)}")


async def _add(args: argparse.Namespace) -> int:
    group_id = decode_id(args.group, "GROUP")
    accounts = [decode_id(a, "ACCOUNT_KEY") for a in args.accounts]
    async with open_online(args.home, timeout=args.timeout) as s:
        before = {m.device_key for m in s.client.members(group_id)}
        s.driver.add_members(group_id, accounts)
        done = await s.sync()
        _fail_on(s)
        added = [m for m in s.client.members(group_id) if m.device_key not in before]
    if args.json:
        print_json(
            {
                "added": [encode_id(m.device_key) for m in added],
                "state": "done" if done else "queued",
            }
        )
    elif done:
        out(f"Added {len(added)} device(s).")
    else:
        out("Queued: the members are added at the next sync.")
    return 0


async def _send(args: argparse.Namespace) -> int:
    group_id = decode_id(args.group, "GROUP")
    async with open_online(args.home, timeout=args.timeout) as s:
        message_id = s.driver.send_text(group_id, args.text)
        await s.sync()
        _fail_on(s)
        state = s.client.message_state(group_id, message_id) or "queued"
    if args.json:
        print_json({"message_id": encode_id(message_id), "state": state})
    elif state == "sent":
        out("Sent.")
    else:
        out("Queued: `townsquare sync` sends it when the relay answers.")
    return 0


async def _sync(args: argparse.Namespace) -> int:
    async with open_online(args.home, timeout=args.timeout) as s:
        done = await s.sync()
        s.drain()
        received = sum(isinstance(e, MessageReceived) for e in s.events)
        joined = [encode_id(e.group_id) for e in s.events if isinstance(e, GroupJoined)]
        removed = [e for e in s.events if isinstance(e, RemovedFromGroup)]
        not_approved = [
            encode_id(e.group_id)
            for e in s.events
            if isinstance(e, JoinFailed) and e.code == JoinFailed.NOT_APPROVED
        ]
        pending = [encode_id(g) for g in s.client.joining() if s.client.join_requested(g)]
        queued = sum(s.client.group(g).outbox for g in s.client.group_ids())
        failures = s.failures()
    for line in failures:
        error(line)
    if args.json:
        print_json(
            {
                "synced": done,
                "received": received,
                "joined": joined,
                "removed": [encode_id(e.group_id) for e in removed],
                "not_approved": not_approved,
                "pending": pending,
                "queued": queued,
            }
        )
    else:
        for group_id in joined:
            out(f"Joined group {group_id}.")
        for event in removed:
            verb = "Left" if event.left else "Removed from"
            out(f"{verb} group {encode_id(event.group_id)}.")
        for group_id in not_approved:
            out(f"Your request to join group {group_id} was not approved.")
        for group_id in pending:
            out(f"Waiting for an admin to approve your request to join group {group_id}.")
        if done:
            out(f"Synced: {received} new message(s).")
        elif queued:
            out(f"Not synced: {queued} item(s) wait in the outbox.")
    return 1 if failures else 0


def _message_json(message: StoredMessage) -> dict[str, Any]:
    sent_at = message.sent_at
    return {
        "id": None if message.message_id is None else encode_id(message.message_id),
        "seq": message.seq,
        "sender": encode_id(message.sender),
        "sender_name": message.sender_name,
        "own": message.own,
        "type": message.kind,
        "text": message.text,
        "sent_at": None if sent_at is None else _iso(sent_at),
    }


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _messages(args: argparse.Namespace) -> int:
    group_id = decode_id(args.group, "GROUP")
    with open_local(args.home) as client:
        messages = [m for m in client.messages(group_id) if args.all or m.kind not in _HIDDEN_KINDS]
    if args.json:
        print_json([_message_json(m) for m in messages])
        return 0
    if not messages:
        out("No messages yet.")
    for m in messages:
        when = "" if m.sent_at is None else f"{m.sent_at.astimezone(UTC):%Y-%m-%d %H:%M} "
        name = m.sender_name or encode_id(m.sender)[:8]
        body = m.text if m.text is not None else f"({m.kind})"
        out(f"{when}{name}{' (you)' if m.own else ''}: {body}")
    return 0


def _members(args: argparse.Namespace) -> int:
    group_id = decode_id(args.group, "GROUP")
    with open_local(args.home) as client:
        members = client.members(group_id)
        admins = client.admins(group_id)
    rows = [
        {
            "id": encode_id(m.device_key),
            "name": m.display_name,
            "self": m.is_self,
            "admin": admins is None or m.device_key in admins,
        }
        for m in members
    ]
    if args.json:
        print_json(rows)
    else:
        for row in rows:
            you = (" (you)" if row["self"] else "") + (" [admin]" if row["admin"] else "")
            out(f"{row['name'] or '(no name yet)'}{you}  {row['id']}")
    return 0


async def _remove(args: argparse.Namespace) -> int:
    group_id = decode_id(args.group, "GROUP")
    member = decode_id(args.member, "MEMBER_ID")
    async with open_online(args.home, timeout=args.timeout) as s:
        s.driver.remove_member(group_id, member)
        done = await s.sync()
        _fail_on(s)
    out("Removed." if done else "Queued: the removal is sent at the next sync.")
    return 0


async def _leave(args: argparse.Namespace) -> int:
    group_id = decode_id(args.group, "GROUP")
    async with open_online(args.home, timeout=args.timeout) as s:
        s.driver.leave(group_id)
        await s.sync()
        _fail_on(s)
        closed = s.client.group(group_id).status.closed
    if closed:
        out("Left the group.")
    else:
        out("Leaving: the next member online completes it.")
    return 0


# -- Helpers -------------------------------------------------------------------------------


def _fail_on(session: Session) -> None:
    session.drain()
    failures = session.failures()
    if failures:
        raise CommandError("; ".join(failures))

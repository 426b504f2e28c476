"""
The demo county's bots: each a real device, with its own home folder, keys and push channel.

A village is a group that its head bot (the first) creates; the other bots
join it by an invite link, by external commit, exactly as a newcomer does.
Every bot runs a :class:`~townsquare.client.driver.ClientDriver` with push
on, all in the one asyncio loop of ``townsquare demo``. The head's events
feed a :class:`~townsquare.cli.demo_script.Host`, which decides greetings
and answers; a poster makes the next bot post a notice every few seconds.

Each village lives in one task (:func:`run_county`): the task that starts
its drivers is the one that stops them, as their task groups require.
What was seeded is recorded in ``county.json``, so that ``townsquare demo
--data DIR`` run again resumes the same villages instead of seeding more::

    DIR/                                the relay's database (as ``townsquare serve --data DIR``)
    DIR/demo-bots/county.json           the villages seeded: group ids, bot folders and names
    DIR/demo-bots/<village>-<hex>/<n>/  bot n's home (n = 0 is the village head)
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import secrets
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import NoReturn

from townsquare import auth, wire
from townsquare.auth.invites import parse_invite_link
from townsquare.cli.demo_script import Host, Line, Script, VillagePlan, jittered
from townsquare.cli.session import CommandError
from townsquare.client.core.client import Client
from townsquare.client.core.events import Event
from townsquare.client.driver import (
    DATABASE_FILE_NAME,
    ClientDriver,
    DriverConfig,
    SqliteClientStore,
    set_relay_url,
)
from townsquare.client.errors import ClientError

__all__ = [
    "BOTS_FOLDER",
    "MANIFEST_FILE",
    "DemoError",
    "SeededVillage",
    "VillageReady",
    "read_manifest",
    "run_county",
    "write_manifest",
]

#: The folder, inside the data folder, that holds the bots' homes and the manifest.
BOTS_FOLDER = "demo-bots"
#: The manifest of the villages seeded, inside :data:`BOTS_FOLDER`.
MANIFEST_FILE = "county.json"
# The most a bot waits for the relay to finish one step (register, create, join), in seconds.
_SYNC_TIMEOUT_SECONDS = 30.0
# Reactions waiting to be said; past this many, a flood of newcomer messages is not all answered.
_MAX_PENDING_REACTIONS = 64
_MANIFEST_VERSION = 1

_log = logging.getLogger("townsquare.demo")


class DemoError(CommandError):
    """
    The demo county could not be seeded or resumed (a bot could not join, a manifest is bad).
    """


@dataclass(frozen=True, slots=True, kw_only=True)
class SeededVillage:
    """
    A village as ``county.json`` records it.

    :param key: the village's :attr:`~townsquare.cli.demo_script.VillagePlan.key`.
    :param group_id: its group.
    :param folder: the folder of its bots' homes, inside :data:`BOTS_FOLDER`.
    :param names: its bots' display names; bot ``n``'s home is ``folder/n``.
    """

    key: str
    group_id: bytes
    folder: str
    names: tuple[str, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class VillageReady:
    """
    A village that is up: what ``townsquare demo`` prints about it.

    :param title: the group's title.
    :param group_id: the group.
    :param link: an invite link the head made for newcomers.
    :param names: the bots' display names.
    """

    title: str
    group_id: bytes
    link: str
    names: tuple[str, ...]


# -- The manifest --------------------------------------------------------------------------


def read_manifest(path: Path) -> dict[str, SeededVillage]:
    """
    :returns: the villages recorded at ``path``, by key (none if there is no file).
    :raises DemoError: if the file is not a manifest this version wrote.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise DemoError(f"cannot read {path}: {exc}") from exc
    try:
        document = json.loads(text)
        if document["version"] != _MANIFEST_VERSION:
            raise DemoError(f"{path} is of another version: {document['version']!r}")
        villages = {}
        for key, entry in document["villages"].items():
            names = entry["names"]
            if not (isinstance(names, list) and names and all(isinstance(n, str) for n in names)):
                raise DemoError(f"{path}: village {key!r} has no bots")
            folder = entry["folder"]
            if not isinstance(folder, str) or Path(folder).name != folder or folder in ("", ".."):
                raise DemoError(f"{path}: village {key!r} names a folder outside {path.parent}")
            villages[key] = SeededVillage(
                key=key,
                group_id=auth.decode_b64u(entry["group_id"]),
                folder=folder,
                names=tuple(names),
            )
    except (ValueError, KeyError, TypeError, AttributeError, auth.AuthError) as exc:
        # json.JSONDecodeError is a ValueError; a missing or mistyped field is one of the rest.
        raise DemoError(f"{path} is not a demo manifest: {type(exc).__name__}: {exc}") from exc
    return villages


def write_manifest(path: Path, villages: Mapping[str, SeededVillage]) -> None:
    """
    Record the villages at ``path``, atomically (a crash leaves the old file or the new one).

    :raises OSError: if the file cannot be written.
    """
    document = {
        "version": _MANIFEST_VERSION,
        "villages": {
            key: {
                "group_id": auth.encode_b64u(v.group_id),
                "folder": v.folder,
                "names": list(v.names),
            }
            for key, v in villages.items()
        },
    }
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps(document, ensure_ascii=False, indent=2), encoding="utf-8")
    os.replace(partial, path)


# -- Bots ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Bot:
    name: str
    driver: ClientDriver

    @property
    def device_key(self) -> bytes:
        device = self.driver.client.device
        if device is None:  # pragma: no cover - _open_bot initializes every bot
            raise DemoError(f"the bot {self.name} has no device")
        return device.device_key


async def _settle(driver: ClientDriver, failure: str) -> None:
    try:
        await driver.sync(timeout=_SYNC_TIMEOUT_SECONDS)
    except ClientError as exc:
        raise DemoError(failure) from exc


async def _open_bot(
    stack: contextlib.AsyncExitStack,
    home: Path,
    *,
    name: str,
    relay: str,
    first_steps: Callable[[ClientDriver], Awaitable[None]] | None = None,
) -> _Bot:
    """
    Open the bot whose home is ``home`` and start its driver, with push; ``stack`` stops it.

    A new bot is first created, registered and given ``first_steps`` (the head
    founds its village there) by a driver without push, for two reasons. A
    driver starts its push channel only if the device exists when it starts.
    And a push channel subscribes to a group as soon as the group is on the
    device, while it is still being created: the relay refuses that
    subscription (``unknown-group``) and the channel does not ask again, so a
    head that created its group online would never be told of news in it.

    :raises DemoError: if the relay does not register a new bot, or its first steps fail.
    :raises ClientError: if the home's store cannot be read.
    :raises OSError: if the home cannot be created.
    """
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    store = SqliteClientStore(home / DATABASE_FILE_NAME)
    stack.callback(store.close)
    # The relay's port may differ from the last run's; the bots follow this run's.
    set_relay_url(store, relay)
    config = DriverConfig()
    client = Client(store, rng=secrets.token_bytes, config=config.client)
    if client.device is None:
        offline = DriverConfig(push=False)
        async with ClientDriver(client, relay_url=relay, config=offline) as first:
            first.initialize(display_name=name)
            await _settle(first, f"the relay did not register {name}")
            if first_steps is not None:
                await first_steps(first)
        client = Client(store, rng=secrets.token_bytes, config=config.client)
    driver = await stack.enter_async_context(ClientDriver(client, relay_url=relay, config=config))
    return _Bot(name=name, driver=driver)


async def _found(driver: ClientDriver, *, title: str) -> None:
    """
    Create the village's group, with this (the head's) device as its only member and admin.

    :raises DemoError: if the relay did not create it in time.
    """
    group_id = driver.create_group(title=title)
    await _settle(driver, f"the relay did not create {title}")
    if driver.client.group(group_id).status.closed:
        raise DemoError(f"the relay did not create {title}")


def _random_fraction() -> float:
    return secrets.randbelow(1 << 20) / (1 << 20)


class _Village:
    """
    A village group and its bots, running: the poster, and the head's events answered.
    """

    def __init__(
        self,
        *,
        plan: VillagePlan,
        group_id: bytes,
        bots: Sequence[_Bot],
        offset: int,
        say: Callable[[str], None],
    ) -> None:
        self.plan = plan
        self.group_id = group_id
        self.bots = tuple(bots)
        self._say = say
        self._script = Script(speakers=len(self.bots), offset=offset)
        self._host = Host(
            plan=plan, group_id=group_id, bot_keys=tuple(b.device_key for b in self.bots)
        )
        self._reactions: asyncio.Queue[Line] = asyncio.Queue(_MAX_PENDING_REACTIONS)
        self.bots[0].driver.add_listener(self._on_event)

    def _on_event(self, event: Event) -> None:
        line = self._host.handle(event)
        if line is None:
            return
        try:
            self._reactions.put_nowait(line)
        except asyncio.QueueFull:
            _log.warning(
                "%s: too many newcomer messages at once; one goes unanswered", self.plan.key
            )

    async def invite_link(self) -> str:
        """
        :returns: a new invite link made by the head, once the relay holds the invite.
        :raises DemoError: if the relay refused it or did not take it in time.
        """
        head = self.bots[0].driver
        link = head.create_invite(self.group_id)
        secret = parse_invite_link(link).secret
        await _settle(head, f"the relay did not take {self.plan.title}'s invite")
        if head.client.invite_ready(self.group_id, secret) is not True:
            raise DemoError(f"the relay did not take {self.plan.title}'s invite")
        return link

    async def join(self, bot: _Bot, link: str) -> None:
        """
        Have ``bot`` join the group by ``link`` (an external commit), and wait until it has.

        :raises DemoError: if it did not join in time.
        """
        bot.driver.join(link)
        await _settle(bot.driver, f"{bot.name} could not join {self.plan.title}")
        client = bot.driver.client
        if self.group_id in client.joining() or self.group_id not in client.group_ids():
            raise DemoError(f"{bot.name} could not join {self.plan.title}")

    def ready(self, link: str) -> VillageReady:
        """
        :returns: what to print about the village, with ``link`` for newcomers.
        """
        return VillageReady(
            title=self.plan.title,
            group_id=self.group_id,
            link=link,
            names=tuple(b.name for b in self.bots),
        )

    async def run(self, *, period: float) -> NoReturn:
        """
        Post every ``period`` seconds (jittered), and say what the head's events call for.
        """
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self._post(period))
            tasks.create_task(self._react())
        raise AssertionError("unreachable: the village's tasks never return")  # pragma: no cover

    async def _post(self, period: float) -> NoReturn:
        while True:
            await asyncio.sleep(jittered(period, _random_fraction()))
            self._speak(self._script.next())

    async def _react(self) -> NoReturn:
        while True:
            self._speak(await self._reactions.get())

    def _speak(self, line: Line) -> None:
        bot = self.bots[line.speaker]
        try:
            if line.in_reply_to is None:
                bot.driver.send_text(self.group_id, line.text)
            else:
                reply = wire.Reply(
                    line.text,
                    wire.MessageId(line.in_reply_to),
                    message_id=wire.new_message_id(),
                    sent_at=datetime.now(UTC),
                )
                bot.driver.send(self.group_id, reply)
        except ClientError as exc:
            # A bot that cannot speak (its group closed, its store failed) keeps
            # the rest of the county going; the operator sees why.
            _log.warning("%s could not post in %s: %s", bot.name, self.plan.title, exc)
            return
        self._say(f"[{self.plan.name_zh}] {bot.name}: {line.text}")


# -- Seeding and resuming ------------------------------------------------------------------


async def _seed(
    stack: contextlib.AsyncExitStack,
    plan: VillagePlan,
    root: Path,
    *,
    relay: str,
    offset: int,
    say: Callable[[str], None],
) -> tuple[_Village, SeededVillage]:
    # A fresh folder name: what an interrupted seeding left behind is never reused.
    folder = f"{plan.key}-{secrets.token_hex(3)}"
    homes = [root / folder / str(n) for n in range(len(plan.bots))]
    head = await _open_bot(
        stack,
        homes[0],
        name=plan.bots[0],
        relay=relay,
        first_steps=functools.partial(_found, title=plan.title),
    )
    (group_id,) = head.driver.client.group_ids()
    bots = [head]
    for home, name in zip(homes[1:], plan.bots[1:], strict=True):
        bots.append(await _open_bot(stack, home, name=name, relay=relay))
    village = _Village(plan=plan, group_id=group_id, bots=bots, offset=offset, say=say)
    link = await village.invite_link()
    # One after another: each join is a commit, and commits to one group are serial anyway.
    for bot in bots[1:]:
        await village.join(bot, link)
    return village, SeededVillage(
        key=plan.key, group_id=group_id, folder=folder, names=tuple(b.name for b in bots)
    )


async def _resume(
    stack: contextlib.AsyncExitStack,
    plan: VillagePlan,
    seeded: SeededVillage,
    root: Path,
    *,
    relay: str,
    offset: int,
    say: Callable[[str], None],
) -> _Village:
    homes = [root / seeded.folder / str(n) for n in range(len(seeded.names))]
    for home in homes:
        if not (home / DATABASE_FILE_NAME).is_file():
            raise DemoError(f"{home} holds no bot; remove {root / MANIFEST_FILE} to seed anew")
    # The head opens last, and its events are listened to as soon as its driver
    # starts (no await in between): a newcomer who joined or wrote while the demo
    # was down is then greeted or answered as the head catches up.
    others = [
        await _open_bot(stack, home, name=name, relay=relay)
        for home, name in zip(homes[1:], seeded.names[1:], strict=True)
    ]
    head = await _open_bot(stack, homes[0], name=seeded.names[0], relay=relay)
    bots = [head, *others]
    for bot in bots:
        client = bot.driver.client
        if seeded.group_id not in client.group_ids() or client.group(seeded.group_id).status.closed:
            raise DemoError(f"{bot.name} is no longer in {plan.title}; remove the manifest")
    return _Village(plan=plan, group_id=seeded.group_id, bots=bots, offset=offset, say=say)


async def _village_life(
    plan: VillagePlan,
    *,
    index: int,
    root: Path,
    seeded: dict[str, SeededVillage],
    relay: str,
    period: float,
    say: Callable[[str], None],
    ready: asyncio.Future[VillageReady],
) -> NoReturn:
    manifest = root / MANIFEST_FILE
    # Villages start at different notices, spread over the script.
    offset = index * 5
    async with contextlib.AsyncExitStack() as stack:
        record = seeded.get(plan.key)
        if record is None:
            village, record = await _seed(stack, plan, root, relay=relay, offset=offset, say=say)
            # The one thread writes the whole manifest: villages seeded at once
            # each add their entry to the same dictionary.
            seeded[plan.key] = record
            write_manifest(manifest, seeded)
        else:
            village = await _resume(stack, plan, record, root, relay=relay, offset=offset, say=say)
        ready.set_result(village.ready(await village.invite_link()))
        await village.run(period=period)


async def run_county(
    plans: Sequence[VillagePlan],
    *,
    data_dir: Path,
    relay: str,
    period: float,
    say: Callable[[str], None],
    on_ready: Callable[[Sequence[VillageReady]], None],
) -> NoReturn:
    """
    Seed (or resume) the villages, call ``on_ready`` once all are up, then keep them alive.

    Runs until cancelled; cancelling stops every bot and closes its home.

    :param plans: the villages.
    :param data_dir: the data folder (the bots live in its :data:`BOTS_FOLDER`).
    :param relay: the relay's URL.
    :param period: the mean seconds between two posts in a village.
    :param say: prints a line of what the bots do.
    :param on_ready: called with each village's title, group, invite link and bots.
    :raises ExceptionGroup: of a :class:`DemoError`, a ``ClientError`` or an ``OSError``, if a
        village could not be seeded or resumed, or one of its bots failed.
    """
    root = data_dir / BOTS_FOLDER
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    seeded = read_manifest(root / MANIFEST_FILE)
    loop = asyncio.get_running_loop()
    ready: list[asyncio.Future[VillageReady]] = [loop.create_future() for _ in plans]
    async with asyncio.TaskGroup() as tasks:
        for index, (plan, future) in enumerate(zip(plans, ready, strict=True)):
            tasks.create_task(
                _village_life(
                    plan,
                    index=index,
                    root=root,
                    seeded=seeded,
                    relay=relay,
                    period=period,
                    say=say,
                    ready=future,
                ),
                name=f"townsquare-demo-{plan.key}",
            )
        # A village that fails cancels this wait, through the task group.
        on_ready([await future for future in ready])
    raise AssertionError("unreachable: the villages never return")  # pragma: no cover

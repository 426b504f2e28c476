"""
The driver against the real relay: ``townsquare serve`` as a subprocess, real HTTP and WebSocket.

Started as ``tests/integration/conftest.py`` does (a free port, a temporary
data folder, wait for ``/healthz``). Three devices with homes on disk:
create, add, talk in Chinese and English, race a message against a commit,
remove; then kill the relay with SIGKILL while a device sends, send more
while it is down (queued), restart it, and check that every member has every
message exactly once and in the same order.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from townsquare.client.core import ClientConfig, GroupStatus, MessageReceived
from townsquare.client.core.retry import Backoff
from townsquare.client.driver import ClientDriver, DriverConfig, PushConfig, open_home
from townsquare.client.errors import ConnectionFailed

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

START_TIMEOUT_SECONDS = 30.0


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class Relay:
    def __init__(self, base: Path) -> None:
        self.data = base / "data"
        self.log = base / "relay.log"
        self.port = _free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "townsquare.cli",
                    "serve",
                    "--data",
                    str(self.data),
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(self.log.read_text(errors="replace"))
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{self.url}/healthz", timeout=1.0).status_code == 200:
                    return
            time.sleep(0.05)
        raise RuntimeError("the relay did not start")

    def kill(self) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=15)
            self.process = None

    def stop(self) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=15)
            self.process = None


@pytest.fixture
def relay(tmp_path: Path) -> Iterator[Relay]:
    relay = Relay(tmp_path)
    relay.start()
    try:
        yield relay
    finally:
        relay.stop()


def config() -> DriverConfig:
    fast = Backoff(initial_seconds=0.1, max_seconds=1.0)
    return DriverConfig(
        request_timeout_seconds=10.0,
        push_config=PushConfig(backoff=fast),
        client=ClientConfig(retry=fast, commit_delay_seconds=0.2, poll_interval_seconds=2.0),
    )


async def _initialize(home: Path, name: str, relay_url: str) -> None:
    from townsquare.client.core import Client
    from townsquare.client.driver import SqliteClientStore, set_relay_url

    store = SqliteClientStore(home / "client.sqlite3")
    try:
        set_relay_url(store, relay_url)
        import secrets

        Client(store, rng=secrets.token_bytes).initialize(display_name=name, now=time.time())
    finally:
        store.close()


def texts(driver: ClientDriver, group_id: bytes) -> list[tuple[int, str | None, str | None]]:
    return [(m.seq, m.sender_name, m.text) for m in driver.messages(group_id) if m.kind == "text"]


async def test_three_devices_on_the_real_relay(relay: Relay, tmp_path: Path) -> None:
    homes = {name: tmp_path / name for name in ("alice", "bob", "carol", "dave")}
    for name, home in homes.items():
        home.mkdir()
        await _initialize(home, name, relay.url)
    async with (
        open_home(homes["alice"], config=config()) as alice,
        open_home(homes["bob"], config=config()) as bob,
        open_home(homes["carol"], config=config()) as carol,
        open_home(homes["dave"], config=config()) as dave,
    ):
        everyone = (alice, bob, carol, dave)
        for driver in everyone:
            await driver.sync(timeout=20)
        group_id = alice.create_group(title="王家村 village")
        await alice.sync(timeout=20)
        alice.add_members(
            group_id,
            [d.client.device.account_key for d in (bob, carol, dave)],
        )
        await alice.sync(timeout=20)
        for _ in range(2):
            for driver in everyone:
                await driver.sync(timeout=20)
        assert all(group_id in d.client.group_ids() for d in everyone)

        alice.send_text(group_id, "明天上午九点在村委会开会")
        bob.send_text(group_id, "OK, see you at nine")
        # carol's commit races two messages.
        carol.client.update_keys(group_id, now=time.time())
        carol.send_text(group_id, "好的")
        alice.send_text(group_id, "bring the land papers")
        for _ in range(2):
            for driver in everyone:
                await driver.sync(timeout=20)
        views = [texts(d, group_id) for d in everyone]
        assert views[0] == views[1] == views[2] == views[3]
        assert sorted(t for _, _, t in views[0]) == sorted(
            ["明天上午九点在村委会开会", "OK, see you at nine", "好的", "bring the land papers"]
        )
        assert {m.display_name for m in carol.members(group_id)} == {
            "alice",
            "bob",
            "carol",
            "dave",
        }

        # dave leaves: his proposal is committed by the next member online.
        dave.leave(group_id)
        await dave.sync(timeout=20)
        for _ in range(3):
            for driver in everyone:
                await driver.sync(timeout=20)
            if dave.group(group_id).status == GroupStatus.LEFT:
                break
            await asyncio.sleep(0.3)
        assert dave.group(group_id).status == GroupStatus.LEFT
        assert len(alice.members(group_id)) == 3

        # Pushed, not polled: bob hears of alice's message from the WebSocket.
        heard = asyncio.ensure_future(
            bob.wait_for(
                lambda e: isinstance(e, MessageReceived) and e.message.text == "pushed",
                timeout=10,
            )
        )
        alice.send_text(group_id, "pushed")
        await heard

        alice.remove_member(group_id, carol.client.device.device_key)
        await alice.sync(timeout=20)
        await carol.sync(timeout=20)
        assert carol.group(group_id).status == GroupStatus.REMOVED
        alice.send_text(group_id, "after carol left")
        for driver in (alice, bob):
            await driver.sync(timeout=20)
        assert "after carol left" in [t for _, _, t in texts(bob, group_id)]
        assert "after carol left" not in [t for _, _, t in texts(carol, group_id)]
        assert "after carol left" not in [t for _, _, t in texts(dave, group_id)]

        # The relay dies while alice sends; she sends more while it is down.
        alice.send_text(group_id, "just before the crash")
        relay.kill()
        alice.send_text(group_id, "while the relay is down 1")
        alice.send_text(group_id, "while the relay is down 2")
        with pytest.raises(ConnectionFailed):
            await alice.sync(timeout=1.0)
        relay.start()
        for _ in range(2):
            for driver in (alice, bob):
                await driver.sync(timeout=30)
        expected_tail = [
            "just before the crash",
            "while the relay is down 1",
            "while the relay is down 2",
        ]
        for driver in (alice, bob):
            seen = [t for _, _, t in texts(driver, group_id)]
            assert seen[-3:] == expected_tail
            assert len(seen) == len(set(seen))
        assert texts(alice, group_id) == texts(bob, group_id)
        log = relay.log.read_text(errors="replace")
        assert "Traceback" not in log

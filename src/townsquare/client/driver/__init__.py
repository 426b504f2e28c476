"""
The asyncio driver of the client core: HTTP (``httpx``), the push WebSocket, SQLite on disk.

::

    from townsquare.client.driver import open_home

    async with open_home("~/.townsquare", relay="https://relay.example") as driver:
        group_id = driver.create_group(title="王家村")
        driver.send_text(group_id, "明天上午九点开会")
        await driver.sync(timeout=30)
"""

from __future__ import annotations

from townsquare.client.driver.driver import ClientDriver, DriverConfig, open_home
from townsquare.client.driver.home import (
    HOME_ENVIRONMENT_VARIABLE,
    check_relay_url,
    home_folder,
    relay_url,
    set_relay_url,
)
from townsquare.client.driver.push import (
    PushCallbacks,
    PushChannel,
    PushConfig,
    PushConnector,
    PushSocket,
    websocket_connector,
    websocket_url,
)
from townsquare.client.driver.store import DATABASE_FILE_NAME, SqliteClientStore

__all__ = [
    "DATABASE_FILE_NAME",
    "HOME_ENVIRONMENT_VARIABLE",
    "ClientDriver",
    "DriverConfig",
    "PushCallbacks",
    "PushChannel",
    "PushConfig",
    "PushConnector",
    "PushSocket",
    "SqliteClientStore",
    "check_relay_url",
    "home_folder",
    "open_home",
    "relay_url",
    "set_relay_url",
    "websocket_connector",
    "websocket_url",
]

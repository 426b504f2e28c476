"""
The device's home folder: where its database lives, and which relay it talks to.

The home is ``--home DIR`` if given, else ``$TOWNSQUARE_HOME``, else
``~/.townsquare`` (created with mode 0700: it holds the device's private
keys). The relay's URL is kept in the device scope of the database, so that
``townsquare --home H init --relay URL`` is the only place it is given.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlsplit

from townsquare.client.core.store import ClientStore
from townsquare.client.errors import UsageError

__all__ = [
    "HOME_ENVIRONMENT_VARIABLE",
    "check_relay_url",
    "home_folder",
    "relay_url",
    "set_relay_url",
]

#: The environment variable naming the home folder.
HOME_ENVIRONMENT_VARIABLE = "TOWNSQUARE_HOME"
_RELAY_URL_KEY = "relay-url"


def home_folder(explicit: str | os.PathLike[str] | None = None) -> Path:
    """
    Find (and create) the home folder.

    :param explicit: a folder given on the command line, if any.
    :returns: the folder, which exists.
    :raises UsageError: if it cannot be created.
    """
    if explicit is not None:
        path = Path(explicit)
    elif os.environ.get(HOME_ENVIRONMENT_VARIABLE):
        path = Path(os.environ[HOME_ENVIRONMENT_VARIABLE])
    else:
        path = Path.home() / ".townsquare"
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create the home folder {path}: {exc}") from exc
    return path


def check_relay_url(url: str) -> str:
    """
    :returns: ``url`` without a trailing slash.
    :raises UsageError: if it is not an http(s) URL without a path, query or fragment.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise UsageError(f"a relay URL is http(s)://host[:port], not {url!r}")
    if parts.path.strip("/") or parts.query or parts.fragment:
        # Requests are signed over their path as sent; a prefix a proxy strips
        # would make every signature fail.
        raise UsageError(f"a relay URL has no path, query or fragment: {url!r}")
    return f"{parts.scheme}://{parts.netloc}"


def relay_url(store: ClientStore) -> str | None:
    """
    :returns: the relay URL stored in the home, or ``None``.
    """
    value = store.device_records().get(_RELAY_URL_KEY)
    return None if value is None else value.decode("utf-8")


def set_relay_url(store: ClientStore, url: str) -> str:
    """
    Store the relay URL in the home.

    :returns: the URL as stored.
    :raises UsageError: if it is not a relay URL.
    :raises StoreFailed: if the store fails.
    """
    url = check_relay_url(url)
    store.device_records().apply({_RELAY_URL_KEY: url.encode("utf-8")}, ())
    return url
